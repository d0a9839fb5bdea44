#!/usr/bin/env bash
# The one test command (`make test`; CI's .ci/run calls it). On a fresh machine of this kind it installs what
# is missing, starts two PostgreSQL clusters (primary, backup), two NATS servers with JetStream (primary,
# secondary) and Redis on free loopback ports in a temporary directory, runs formatting and lint checks and
# every test, checks the HTTP contract against dev mode (scripts/contract.sh: Redocly, a generated client,
# schemathesis), checks the Kubernetes manifests with kubernetes-validate and Helm (scripts/manifests.sh),
# and stops the servers however the run ends.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/servers.sh

# --- checks and tests -------------------------------------------------------------------------------------
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if [ -z "${SKIP_CHECKS:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
  log "shellcheck (scripts, the kind e2e)"
  shellcheck -S warning scripts/*.sh e2e/*.sh .ci/run
fi
log "building every binary (the binary-level tests run them)"
cargo build --workspace --bins --quiet
log "tests"
status=0
if [ -z "${NO_NEXTEST:-}" ]; then
  cargo nextest run --workspace --no-fail-fast --failure-output final --test-threads "${TEST_THREADS:-4}" "$@" || status=$?
else
  cargo test --workspace --no-fail-fast -- "$@" || status=$?
fi
if [ -z "${SKIP_CONTRACT:-}" ]; then
  log "the HTTP contract: Redocly lint, a generated client's walk-through, schemathesis (scripts/contract.sh)"
  ./scripts/contract.sh target/debug/socialnet || status=$?
fi
if [ -z "${SKIP_MANIFESTS:-}" ]; then
  log "manifests: the operator's rendered objects and the chart, checked by kubernetes-validate and Helm"
  ./scripts/manifests.sh target/debug/socialnet-operator || status=$?
fi
exit "$status"
