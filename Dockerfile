# syntax=docker/dockerfile:1
# facegate container image: a static-ish Rust binary on distroless, running as uid 10001.
#
#   docker build -t ghcr.io/facegate/facegate:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 -v "$PWD/facegate.toml:/etc/facegate.toml:ro" \
#     ghcr.io/facegate/facegate:0.1.0 --config /etc/facegate.toml serve
#
# The production image is built with --no-default-features: the vendor simulators are not in it, so it answers
# `serve --sandbox` with an error. To try the sandbox, run it from a checkout: `cargo run --release -- serve --sandbox`.
#
# Pure Rust (rustls, protox, SQLite bundled by sqlx) apart from jemalloc, built from C: the build needs no protoc and
# no OpenSSL.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# jemalloc (the global allocator, built from C by tikv-jemalloc-sys) needs make; the slim image has only gcc.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs buf.yaml ./
COPY proto ./proto
COPY src ./src
# BuildKit caches the registry and target/ between builds; the binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin facegate \
    && install -D -m 0755 target/release/facegate /out/usr/local/bin/facegate \
    && install -d -m 0750 /out/var/lib/facegate

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="facegate" \
      org.opencontainers.image.description="One typed gRPC API for face real-name verification" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/local/bin/facegate /usr/local/bin/facegate
# The SQLite store's directory, owned by the runtime user (mount a volume here to keep sessions).
COPY --from=build --chown=10001:10001 /out/var/lib/facegate /var/lib/facegate
# Listen on every interface inside the container; keep the store under /var/lib/facegate. These variables override
# the same keys in a --config file (environment comes last); the Helm chart sets them itself.
ENV FACEGATE__GRPC__LISTEN=0.0.0.0:50051 \
    FACEGATE__HTTP__LISTEN=0.0.0.0:8080 \
    FACEGATE__STORE__SQLITE_PATH=/var/lib/facegate/facegate.db
WORKDIR /var/lib/facegate
USER 10001:10001
# 50051: gRPC (facegate.v1.VerificationService, grpc.health.v1, reflection); 8080: HTTP (/healthz, /metrics,
# vendor callbacks, browser return relay).
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/facegate"]
CMD ["serve"]
