# syntax=docker/dockerfile:1
#
# One image for every role of the service: `serve`, `migrate`, `seed` (and `config`), plus the
# load generator for docker-compose's `loadtest` profile. Two stages: a Rust toolchain that
# builds, and a slim Debian that only runs what it built.
#
#   docker build -t scalable-api .
#   docker run --rm scalable-api config        # the effective configuration, secrets masked

# ---------------------------------------------------------------------------- build
# bookworm on both sides: the binary links glibc dynamically, and the runtime's glibc must be
# at least the builder's.
FROM rust:1-bookworm AS builder
WORKDIR /src
# The checked SQL is described by the committed `.sqlx/`: no database at build time.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# Dependencies first, in a layer of their own: only the manifests and stub sources are copied,
# so this layer (most of the build time) is reused until Cargo.toml or Cargo.lock changes,
# whatever happens to the project's own code.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY loadtest/Cargo.toml loadtest/Cargo.toml
# (tests/crash/main.rs: Cargo.toml declares that test target, and Cargo refuses a manifest
# whose declared target has no file, even when building something else.)
RUN mkdir -p src loadtest/src tests/crash \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > tests/crash/main.rs \
    && touch src/lib.rs loadtest/src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked --workspace --bins \
    && rm -rf src loadtest/src

# Then the project. Cargo decides freshness by mtime: `touch` makes sure the real sources are
# newer than the stubs whose build artefacts are cached.
COPY .sqlx .sqlx
COPY migrations migrations
COPY assets assets
COPY src src
COPY loadtest/src loadtest/src
RUN touch src/main.rs src/lib.rs loadtest/src/main.rs loadtest/src/lib.rs \
    && cargo build --release --locked --workspace --bins \
    && install -D -m 0755 target/release/scalable-api /out/scalable-api \
    && install -D -m 0755 target/release/loadtest /out/loadtest

# ---------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim
# ca-certificates for TLS to managed databases and collectors; curl for the container health
# check on /readyz (docker-compose); nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 scalable-api \
    && useradd --system --uid 10001 --gid scalable-api --home-dir /app --shell /usr/sbin/nologin scalable-api
COPY --from=builder /out/scalable-api /out/loadtest /usr/local/bin/
# The only place the process writes to: `loadtest compare` reports (a volume in
# docker-compose). The service itself writes nothing, so Kubernetes mounts the root read-only.
RUN install -d -o 10001 -g 10001 /app /app/reports
WORKDIR /app
USER 10001:10001
# Listen on every interface inside the container (the default is loopback, for a laptop);
# production profile and secrets come from the orchestrator.
ENV SCALABLE_API_HTTP__ADDR=0.0.0.0:8080
EXPOSE 8080
# The process gets SIGTERM directly (no shell in between) and drains for http.shutdown_grace.
ENTRYPOINT ["/usr/local/bin/scalable-api"]
CMD ["serve"]
