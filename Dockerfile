# syntax=docker/dockerfile:1
# One image for every service: `retail-suite serve <service>` runs one, `retail-suite
# migrate <service>` applies its migrations (the Helm chart's hook Job).
#
#   docker build -t retail-suite:0.1.0 .
#
# Build stage: the workspace as locked in Cargo.lock (the vendored sqlx included);
# protobufs compile with a pure-Rust compiler, so no protoc is needed.
ARG RUST_VERSION=1.94
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p retail-suite \
    && install -D -m 0755 target/release/retail-suite /out/retail-suite

# Run stage: glibc and CA certificates only, no shell, no package manager; a
# non-root user (65532) that owns nothing in the image.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/retail-suite /usr/local/bin/retail-suite
USER 65532:65532
# gRPC; the metrics endpoint when `server.metrics_port` is set.
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/retail-suite"]
CMD ["--help"]
