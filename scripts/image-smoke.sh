#!/usr/bin/env bash
# Run an image of the Dockerfile and check it: `socialnet --version`, `socialnet dev` serving /healthz as
# uid 10001, `socialnet-operator crd`. Usage: scripts/image-smoke.sh docker|podman TAG
set -euo pipefail
engine="$1"; tag="$2"
flags=(--network=host)
eng=(docker)
if [ "$engine" = podman ]; then
  eng=(podman --runtime runc)
  flags+=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
fi
fail() { echo "IMAGE SMOKE FAILED: $*" >&2; exit 1; }

version=$("${eng[@]}" run --rm "${flags[@]}" "$tag" --version)
echo "socialnet --version: $version"
[[ "$version" == socialnet* ]] || fail "unexpected version output: $version"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
name="socialnet-smoke-$$"
"${eng[@]}" run -d --name "$name" "${flags[@]}" "$tag" dev --listen "127.0.0.1:$port" --data-dir /home/socialnet/data >/dev/null
trap '"${eng[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
health=$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/healthz") || true
[ "$health" = 200 ] || { "${eng[@]}" logs "$name" >&2 || true; fail "/healthz answered $health"; }
uid=$("${eng[@]}" exec "$name" id -u)
[ "$uid" = 10001 ] || fail "socialnet dev runs as uid $uid, not 10001"
echo "socialnet dev: /healthz 200, running as uid $uid"

crd=$("${eng[@]}" run --rm "${flags[@]}" --entrypoint socialnet-operator "$tag" crd)
grep -q "kind: CustomResourceDefinition" <<<"$crd" || fail "socialnet-operator crd printed no CRD"
grep -q "name: socialclusters.socialnet.io" <<<"$crd" || fail "the CRD is not the SocialCluster's"
echo "socialnet-operator crd: $(wc -l <<<"$crd") lines, CustomResourceDefinition socialclusters.socialnet.io"
echo "IMAGE SMOKE PASSED: $tag"
