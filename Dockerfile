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

# 1. The recipe: what cargo needs to build the dependencies, and nothing that changes
#    with the code. Cargo.lock, the workspace's manifests (the root's and every
#    member's, as `cargo metadata` lists them) and .cargo/ if there is one, plus a stub
#    `fn main() {}` at the path of each target cargo must find: every library, binary
#    and build script, and the tests, benches and examples a manifest names (cargo
#    cannot load a manifest whose `[[bench]] name = "ring"` has no benches/ring.rs).
#    Vendored crates (third_party/, the patched chitchat of [patch.crates-io]) are
#    dependencies: they go in whole, and a change to them rebuilds the layer.
#    Test, bench and example files that cargo discovers by itself get no stub, so
#    adding one does not change the recipe. This stage runs on every change to the
#    context; the build stage reuses its dependency layer while the recipe's files
#    are the same (Docker compares their contents, not their times).
FROM ${RUST_IMAGE} AS recipe
WORKDIR /src
COPY . .
RUN set -eu; \
    root=$(pwd); out=/recipe; \
    cargo metadata --no-deps --format-version 1 --offline >/tmp/metadata.json; \
    inside() { case $1 in "$root"/*) ;; *) echo "recipe: $1 is outside $root" >&2; exit 1 ;; esac; }; \
    put() { inside "$1"; mkdir -p "$out/$(dirname "${1#"$root"/}")"; }; \
    { echo "$root/Cargo.toml"; grep -o '"manifest_path":"[^"]*"' /tmp/metadata.json | cut -d'"' -f4; } \
        | sort -u >/tmp/manifests; \
    while read -r manifest; do put "$manifest"; cp "$manifest" "$out/${manifest#"$root"/}"; done </tmp/manifests; \
    while read -r manifest; do cat "$manifest"; done </tmp/manifests >/tmp/manifests.toml; \
    cp Cargo.lock "$out/"; \
    if [ -d .cargo ]; then cp -R .cargo "$out/"; fi; \
    if [ -d third_party ]; then cp -R third_party "$out/"; fi; \
    tr '{' '\n' </tmp/metadata.json | grep '"src_path":"' >/tmp/targets; \
    while read -r target; do \
        kind=$(printf '%s\n' "$target" | sed -n 's/.*"kind":\["\([^"]*\)".*/\1/p'); \
        name=$(printf '%s\n' "$target" | sed -n 's/.*"name":"\([^"]*\)".*/\1/p'); \
        src=$(printf '%s\n' "$target" | sed -n 's/.*"src_path":"\([^"]*\)".*/\1/p'); \
        case $kind in \
            test|bench|example) \
                grep -Eq "name[[:space:]]*=[[:space:]]*[\"']${name}[\"']" /tmp/manifests.toml || continue ;; \
        esac; \
        put "$src"; printf '#![allow(dead_code)]\nfn main() {}\n' >"$out/${src#"$root"/}"; \
    done </tmp/targets; \
    echo "recipe:"; find "$out" -type f | sort
# Last, so as not to touch the cache of the steps above: scripts/build-image.sh keeps
# the newest image of each stage (the layer cache of its next build) and removes older ones.
LABEL io.sessionmesh.stage=recipe

# 2. The build. Dependencies first, on the recipe's stubs: this layer is reused while
#    only the project's own code changes. It builds what the build below builds (same
#    command, same manifests, same features), and it must succeed: a recipe that
#    cargo cannot build fails the image rather than leaving every dependency to the
#    build below. The stubs go; the target directory stays.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY --from=recipe /recipe/ ./
RUN cargo build --release --locked -p sessionmesh --bin sessionmesh \
 && find . -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
COPY . .
# The workspace's own crates were compiled from stubs, and COPY keeps the files' own
# (older) times: cargo would take the stub artifacts for up to date. Touching every
# source makes each workspace crate the stub build compiled (and no dependency: they
# live outside /src) out of date. `--version` guards against a stub binary anyway.
RUN find . -path ./target -prune -o -name '*.rs' -type f -exec touch {} + \
 && cargo build --release --locked -p sessionmesh --bin sessionmesh \
 && mkdir -p /out \
 && strip --strip-debug -o /out/sessionmesh target/release/sessionmesh \
 && /out/sessionmesh --version | grep -q '^sessionmesh '
LABEL io.sessionmesh.stage=build

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
