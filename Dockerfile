# sessionmesh container image: a multi-stage release build.
#
#   docker build -t sessionmesh .
#
# On a machine without access to a container registry, scripts/build-image.sh builds
# local stand-ins for the two base images from Debian packages and passes them in
# through RUST_IMAGE and RUNTIME_IMAGE.
#
# Run-time configuration is entirely SESSIONMESH_* environment variables (see the
# README's configuration table) or a mounted TOML file named by SESSIONMESH_CONFIG.
# The image binds every listener to 0.0.0.0; peers dial the container's host name
# unless SESSIONMESH_ADVERTISE_HOST says otherwise.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, on stub sources, so that this layer is reused while only the
# project's own code changes. If the manifest names targets the stubs do not cover,
# the stub build is skipped and the full build below compiles everything.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && (cargo build --release --locked --bin sessionmesh \
     || echo "stub build failed: dependencies will be built with the sources") \
 && rm -rf src
COPY . .
# `touch`: the stub build left artifacts newer than the copied sources.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin sessionmesh \
 && mkdir -p /out \
 && strip --strip-debug -o /out/sessionmesh target/release/sessionmesh

FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin sessionmesh
COPY --from=build /out/sessionmesh /usr/local/bin/sessionmesh
ENV SESSIONMESH_PUBLIC_ADDR=0.0.0.0:8080 \
    SESSIONMESH_INTERNAL_ADDR=0.0.0.0:8081 \
    SESSIONMESH_GOSSIP_ADDR=0.0.0.0:7280
USER sessionmesh:sessionmesh
# 8080 public HTTP; 8081 internal HTTP and 7280/udp gossip belong on a private network.
EXPOSE 8080 8081 7280/udp
# The binary is PID 1: SIGTERM starts the graceful leave (gossip `leaving`, hand
# sessions off, drain, exit 0). Give `docker stop -t` more than shutdown_grace.
STOPSIGNAL SIGTERM
# Healthy = ready in its own ring (/readyz); a joining or leaving node is unhealthy.
# With public TLS on (SESSIONMESH_PUBLIC_TLS_CERT_FILE), override it with an https
# --node that the certificate names and --ca-file (see the README, Security).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["sessionmesh", "healthcheck", "--ready"]
ENTRYPOINT ["sessionmesh"]
