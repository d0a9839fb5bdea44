# The two commands of the README: `make dev` runs the whole system in one process; `make test` runs every test.
.PHONY: dev test image image-smoke bench-write bench-read bench-visible bench-gateway fmt

dev:
	cargo run --release -p socialnet -- dev

test:
	./scripts/test.sh

# The container image with docker or podman, whichever runs here (not part of `make test`: needs the network).
image:
	./scripts/image.sh build

# The Dockerfile's runtime stage around binaries built here, then run and checked (scripts/image-smoke.sh).
image-smoke:
	./scripts/image.sh smoke

# Benchmarks (not tests): start the servers like the tests do and run `socialnet bench write`.
bench-write:
	./scripts/bench.sh write --clients 256

bench-read:
	./scripts/bench.sh read

bench-visible:
	./scripts/bench.sh visible

bench-gateway:
	./scripts/bench.sh gateway

fmt:
	cargo fmt --all
