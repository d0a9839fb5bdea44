#!/usr/bin/env bash
# Benchmarks (not tests): start the same servers as the tests, build release, run `socialnet bench <which>`.
# Usage: scripts/bench.sh write|read|visible [extra flags for that socialnet bench]
# PIN_QUEUE=1: NATS on the last core, everything else (benchmark, PostgreSQL, Redis) on the others, as a queue
# server on a node of its own (needs taskset and at least 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-write}"; shift || true
source scripts/servers.sh
log "building release"
./scripts/release.sh
bin=target/release/socialnet
run=()
if [ -n "${PIN_QUEUE:-}" ]; then
  last=$(( $(nproc) - 1 ))
  for p in $(pgrep -f nats-server); do taskset -apc "$last" "$p" >/dev/null; done
  for p in $(pgrep -f 'postgres|redis-server'); do taskset -apc "0-$(( last - 1 ))" "$p" >/dev/null 2>&1 || true; done
  run=(taskset -c "0-$(( last - 1 ))")
  log "NATS pinned to core $last, the rest to cores 0-$(( last - 1 ))"
fi
db_name="bench_$(date +%s)"
psql "$SOCIALNET_TEST_PG_URL" -qc "CREATE DATABASE $db_name"
db_url="${SOCIALNET_TEST_PG_URL%/*}/$db_name"
case "$which" in
  write) "${run[@]}" "$bin" bench write --database-url "$db_url" --nats-url "$SOCIALNET_TEST_NATS_URL" "$@" ;;
  read) "${run[@]}" "$bin" bench read --database-url "$db_url" --redis-url "$SOCIALNET_TEST_REDIS_URL" \
          --cluster-urls "$SOCIALNET_TEST_REDIS_CLUSTER_URLS" "$@" ;;
  visible) "${run[@]}" "$bin" bench visible --database-url "$db_url" --nats-url "$SOCIALNET_TEST_NATS_URL" \
             --redis-url "$SOCIALNET_TEST_REDIS_URL" "$@" ;;
  gateway) "${run[@]}" "$bin" bench gateway --redis-url "$SOCIALNET_TEST_REDIS_URL" "$@" ;;
  *) echo "unknown benchmark $which (known: write, read, visible, gateway)" >&2; exit 2 ;;
esac
