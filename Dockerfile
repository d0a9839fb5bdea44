# One image for every socialnet role and the operator: `socialnet <role>` and `socialnet-operator run`.
# Multi-stage: the binaries are compiled in the `build` stage (`docker build -t socialnet:dev .`, needs the
# registries), or taken from the host (`--build-arg BINARIES=prebuilt` with a context that holds `bin/`, as
# scripts/image.sh does where images cannot be pulled); either way they run in the same `runtime` stage,
# a small Debian base, as a non-root user.
ARG BINARIES=build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_INCREMENTAL=0
RUN cargo build --release --locked -p socialnet -p socialnet-operator \
 && mkdir -p /out && cp target/release/socialnet target/release/socialnet-operator /out/

FROM scratch AS prebuilt
COPY bin/socialnet bin/socialnet-operator /out/

FROM ${BINARIES} AS binaries

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home socialnet
COPY --from=binaries /out/socialnet /out/socialnet-operator /usr/local/bin/
USER 10001
WORKDIR /home/socialnet
EXPOSE 8080
ENTRYPOINT ["socialnet"]
