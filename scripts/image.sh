#!/usr/bin/env bash
# The container image (Dockerfile), with docker or podman, whichever runs here.
#
#   scripts/image.sh build [TAG]   the whole multi-stage build, compiling inside (needs the registries)
#   scripts/image.sh smoke [TAG]   the Dockerfile's runtime stage around binaries built on this host, then
#                                  run: `socialnet --version`, `socialnet dev` answering /healthz as uid
#                                  10001, `socialnet-operator crd`. Where images cannot be pulled, the
#                                  Debian base is made with debootstrap and podman is installed with apt.
#
# `make image` runs `build`; `make image-smoke` runs `smoke`. Neither is part of `make test` (both need
# the network: registries, or Debian's mirror for the base and the runtime stage's packages).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-build}"
tag="${2:-socialnet:dev}"
log() { printf '\n== %s\n' "$*" >&2; }
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

engine() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
    return
  fi
  if ! command -v podman >/dev/null 2>&1; then
    log "installing podman (no container engine runs here)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends podman runc >/dev/null
  fi
  echo podman
}

ENGINE="$(engine)"
# podman on these machines: runc (crun fails on this cgroup setup), explicit ulimits, the host network.
run_engine() {
  if [ "$ENGINE" = podman ]; then
    local sub="$1"; shift
    podman --runtime runc "$sub" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network=host "$@"
  else
    docker "$@"
  fi
}

base_image() {
  local base=docker.io/library/debian:bookworm-slim
  if $ENGINE image inspect "$base" >/dev/null 2>&1 || $ENGINE pull -q "$base" >/dev/null 2>&1; then
    return
  fi
  log "no registry: making $base from Debian's packages with debootstrap"
  command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
  local root; root="$(mktemp -d /tmp/socialnet-base.XXXXXX)"
  $SUDO debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  $SUDO tar -C "$root" -c . | $ENGINE import - "$base" >/dev/null
  $SUDO rm -rf "$root"
}

case "$what" in
  build)
    log "building $tag with $ENGINE (compiles inside the build stage)"
    run_engine build -t "$tag" .
    ;;
  smoke)
    log "building the binaries on this host (release)"
    ./scripts/release.sh
    base_image
    ctx="$(mktemp -d /tmp/socialnet-image.XXXXXX)"
    trap 'rm -rf "$ctx"' EXIT
    mkdir "$ctx/bin"
    cp Dockerfile "$ctx/"
    cp target/release/socialnet target/release/socialnet-operator "$ctx/bin/"
    log "building the runtime stage of the Dockerfile as $tag with $ENGINE"
    run_engine build --build-arg BINARIES=prebuilt --target runtime -t "$tag" "$ctx"
    ./scripts/image-smoke.sh "$ENGINE" "$tag"
    ;;
  *) echo "usage: scripts/image.sh build|smoke [TAG]" >&2; exit 2 ;;
esac
