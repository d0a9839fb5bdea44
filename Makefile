# The two commands of the README: `make dev` runs the whole system in one process; `make test` runs every test.
.PHONY: dev token test image image-smoke bench-write bench-read bench-visible bench-gateway fmt

# Dev mode's data directory (event store, token secret).
DATA_DIR ?= ./data
# `make token USER=carol`; without USER on the command line, alice (not the login name from the environment).
TOKEN_USER = $(if $(filter command line,$(origin USER)),$(USER),alice)

dev:
	./scripts/release.sh
	./target/release/socialnet dev --data-dir $(DATA_DIR)

# A token for USER signed with dev mode's secret, from the same release build as `make dev`.
token:
	@./scripts/release.sh
	@./target/release/socialnet token --sub $(TOKEN_USER) --ttl 24h --data-dir $(DATA_DIR)

test:
	./scripts/test.sh

# The container image with docker or podman, whichever runs here (not part of `make test`: needs the network).
image:
	./scripts/image.sh build

# The Dockerfile's runtime stage around binaries built here, then run and checked (scripts/image-smoke.sh).
image-smoke:
	./scripts/image.sh smoke

# Benchmarks (not tests): start the servers like the tests do and run `socialnet bench <which>`. Flags for the
# benchmark go in ARGS, e.g. `make bench-read ARGS='--events 200000 --seconds 2'`.
ARGS ?=

bench-write:
	./scripts/bench.sh write --clients 256 $(ARGS)

bench-read:
	./scripts/bench.sh read $(ARGS)

bench-visible:
	./scripts/bench.sh visible $(ARGS)

bench-gateway:
	./scripts/bench.sh gateway $(ARGS)

fmt:
	cargo fmt --all
