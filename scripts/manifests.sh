#!/usr/bin/env bash
# Check the manifests with tools nobody here wrote (scripts/check_manifests.py says which): installs them
# into a throwaway virtualenv, as the test command installs servers. Needs the built socialnet-operator.
# Usage: scripts/manifests.sh [path/to/socialnet-operator]
set -euo pipefail
cd "$(dirname "$0")/.."
operator="${1:-target/debug/socialnet-operator}"
dir="$(mktemp -d /tmp/socialnet-manifests.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
  'kubernetes-validate==1.37.0' 'helm-python-sdk==0.2.2' 'PyYAML>=6,<7'
PATH="$dir/venv/bin:$PATH" "$dir/venv/bin/python" scripts/check_manifests.py --operator "$operator" --k8s 1.32.0
