#!/usr/bin/env bash
# Check the manifests with tools nobody here wrote (scripts/check_manifests.py says which): installs them
# into a throwaway virtualenv, as the test command installs servers. Needs the built socialnet-operator.
# Usage: scripts/manifests.sh [path/to/socialnet-operator]
set -euo pipefail
cd "$(dirname "$0")/.."
operator="${1:-target/debug/socialnet-operator}"
dir="$(mktemp -d /tmp/socialnet-manifests.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
packages=('kubernetes-validate==1.37.0' 'helm-python-sdk==0.2.2' 'PyYAML>=6,<7')
if python3 -m venv "$dir/venv" >/dev/null 2>&1; then
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
  export PATH="$dir/venv/bin:$PATH"
  python="$dir/venv/bin/python"
else
  # A Python without venv (Debian's, without python3-venv): install into a plain directory instead.
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir/lib" "${packages[@]}"
  export PYTHONPATH="$dir/lib" PATH="$dir/lib/bin:$PATH"
  python=python3
fi
"$python" scripts/check_manifests.py --operator "$operator" --k8s 1.32.0
