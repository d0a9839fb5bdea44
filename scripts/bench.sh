#!/usr/bin/env bash
# Benchmarks (not tests): start the same servers as the tests, build release, run `socialnet bench <which>`.
# Usage: scripts/bench.sh write [extra flags for socialnet bench write]
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-write}"; shift || true
source scripts/servers.sh
log "building release"
cargo build --release -p socialnet --quiet
bin=target/release/socialnet
case "$which" in
  write)
    db_name="bench_$(date +%s)"
    psql "$SOCIALNET_TEST_PG_URL" -qc "CREATE DATABASE $db_name"
    "$bin" bench write --database-url "${SOCIALNET_TEST_PG_URL%/*}/$db_name" --nats-url "$SOCIALNET_TEST_NATS_URL" "$@"
    ;;
  *) echo "unknown benchmark $which (known: write)" >&2; exit 2 ;;
esac
