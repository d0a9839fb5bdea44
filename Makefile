# The two commands of the README: `make dev` runs the whole system in one process; `make test` runs every test.
.PHONY: dev test bench-write fmt crd

dev:
	cargo run --release -p socialnet -- dev

test:
	./scripts/test.sh

# Benchmarks (not tests): start the servers like the tests do and run `socialnet bench write`.
bench-write:
	./scripts/bench.sh write

fmt:
	cargo fmt --all
