#!/usr/bin/env bash
# Run a benchmark on a snapshot of HEAD (a git worktree with its own release target dir), so editing the
# working tree meanwhile cannot break the build. Usage: scripts/bench-snapshot.sh write|read|visible [flags]
set -euo pipefail
cd "$(dirname "$0")/.."
tree="${BENCH_TREE:-/tmp/socialnet-bench-tree}"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-/tmp/socialnet-bench-target}"
git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"
git worktree add --detach "$tree" HEAD >/dev/null
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
cd "$tree"
sed -i "s|^bin=target/release/socialnet|bin=$CARGO_TARGET_DIR/release/socialnet|" scripts/bench.sh
./scripts/bench.sh "$@"
