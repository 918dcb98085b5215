# syntax=docker/dockerfile:1
# Loom: one `loom` binary for every service (`loom serve control-plane|db|connectors|agent`).
#
#   docker build -t loom:dev .
#
# Stage 1 builds the release binary with the locked dependencies and splits its debug info into
# `loom.debug` (kept in the `debug` stage for symbolising crash reports; not in the runtime
# image). Stage 2 is Debian slim with what the services need at run time: CA certificates (TLS to
# NATS, PostgreSQL, LLM endpoints), git (agents clone, commit, push), bubblewrap (agents run bead
# commands in its sandbox) and tini (PID 1: reaps the sandboxes' children, forwards SIGTERM).
# The image runs as the unprivileged user `loom` (uid 10001).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Protobuf files are compiled by protox (pure Rust): no protoc. binutils brings objcopy and strip.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils pkg-config \
    && rm -rf /var/lib/apt/lists/*
# rust-toolchain.toml is left out: the image's toolchain is the one it names (RUST_VERSION,
# checked by deploy/validate.py), and rustup must not download another.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY personas personas
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin loom \
    && objcopy --only-keep-debug target/release/loom /loom.debug \
    && strip --strip-debug --strip-unneeded target/release/loom -o /loom \
    && objcopy --add-gnu-debuglink=/loom.debug /loom

# The split debug info, for `docker build --target debug` (symbolising crash reports).
FROM scratch AS debug
COPY --from=build /loom.debug /loom.debug

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap ca-certificates curl git tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 loom \
    && useradd --uid 10001 --gid loom --home-dir /var/lib/loom --create-home --shell /usr/sbin/nologin loom
COPY --from=build /loom /usr/local/bin/loom
# The personas are built into the binary; a mounted directory may override them by name.
ENV LOOM_DATA_DIR=/var/lib/loom \
    LOOM_PERSONAS_DIR=/etc/loom/personas \
    LOOM_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/loom
# The control plane's HTTP API, the database service, the connectors service, the metrics/probe
# listeners of db, connectors and agents.
EXPOSE 8080 50051 50052 9464 9465 9466
# Liveness of the control plane on its default port; the other services' probes are set by the
# compose file and the Kubernetes manifests (their probe listeners are on other ports).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/loom"]
CMD ["serve", "control-plane", "--listen", "0.0.0.0:8080"]
