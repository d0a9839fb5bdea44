#!/usr/bin/env bash
# The one release build every make target and script uses (dev, token, benchmarks, image): always the same
# package set, so no target rebuilds what another already built.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p socialnet -p socialnet-operator "$@"
