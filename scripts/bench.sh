#!/usr/bin/env bash
# Benchmarks (not tests): start the same servers as the tests, build release, run `socialnet bench <which>`.
# Usage: scripts/bench.sh write|read|visible [extra flags for that socialnet bench]
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-write}"; shift || true
source scripts/servers.sh
log "building release"
./scripts/release.sh
bin=target/release/socialnet
db_name="bench_$(date +%s)"
psql "$SOCIALNET_TEST_PG_URL" -qc "CREATE DATABASE $db_name"
db_url="${SOCIALNET_TEST_PG_URL%/*}/$db_name"
case "$which" in
  write) "$bin" bench write --database-url "$db_url" --nats-url "$SOCIALNET_TEST_NATS_URL" "$@" ;;
  read) "$bin" bench read --database-url "$db_url" --redis-url "$SOCIALNET_TEST_REDIS_URL" "$@" ;;
  visible) "$bin" bench visible --database-url "$db_url" --nats-url "$SOCIALNET_TEST_NATS_URL" \
             --redis-url "$SOCIALNET_TEST_REDIS_URL" "$@" ;;
  gateway) "$bin" bench gateway --redis-url "$SOCIALNET_TEST_REDIS_URL" "$@" ;;
  *) echo "unknown benchmark $which (known: write, read, visible, gateway)" >&2; exit 2 ;;
esac
