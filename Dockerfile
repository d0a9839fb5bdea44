# One image for every socialnet role and the operator: `socialnet <role>` and `socialnet-operator run`.
# Multi-stage: build with the Rust toolchain, run on a small Debian base as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_INCREMENTAL=0
RUN cargo build --release --locked -p socialnet -p socialnet-operator \
 && cp target/release/socialnet target/release/socialnet-operator /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home socialnet
COPY --from=build /usr/local/bin/socialnet /usr/local/bin/socialnet-operator /usr/local/bin/
USER 10001
EXPOSE 8080
ENTRYPOINT ["socialnet"]
