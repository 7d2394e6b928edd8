#!/usr/bin/env bash
# Builds the sessionmesh image (default tag sessionmesh:latest) from the top-level
# Dockerfile on a machine that reaches Debian's package archive and crates.io but no
# container registry, so that no base image can be pulled.
#
# It makes local stand-ins for the Dockerfile's two base images and passes them in
# with --build-arg; the Dockerfile itself is the ordinary one (`docker build .`):
#
#   RUNTIME_IMAGE  sessionmesh-local/debian:bookworm-slim
#                  a minimal Debian bookworm (debootstrap --variant=minbase), without
#                  apt lists, docs, man pages and locales: what debian:bookworm-slim is.
#   RUST_IMAGE     sessionmesh-local/rust:<version>-slim-bookworm
#                  bookworm + gcc/libc6-dev + this machine's Rust toolchain (the one
#                  `rustc` here runs; Debian's rustc is too old), and the project's
#                  dependencies vendored by `cargo vendor` with a $CARGO_HOME config
#                  that uses them: containers here cannot verify crates.io's TLS
#                  certificate, so the build inside Docker must not need the network.
#
# Each base is rebuilt only when missing (the toolchain base per rustc version, the
# vendored layer per Cargo.lock); the final build reuses Docker's layer cache. Running
# it twice is cheap. Installs debootstrap with apt-get when it is missing. Fails when
# the Dockerfile's build after `COPY . .` compiled a dependency (its dependency layer
# should have), and says what the dependency layer and that build compiled.
#
# It then builds the two other images the compose files use, the same way (a local
# stand-in for the base, the ordinary Dockerfile):
#
#   sessionmesh-haproxy:latest        deploy/haproxy/Dockerfile, the load balancer of
#                                     compose.yaml and compose.gateway.yaml; its base
#                                     sessionmesh-local/haproxy:bookworm is bookworm +
#                                     Debian's haproxy.
#   sessionmesh-example-flask:latest  examples/gateway/flask/Dockerfile, the Flask
#                                     application of compose.gateway.yaml; its base
#                                     sessionmesh-local/python3-flask:bookworm is
#                                     bookworm + Debian's python3-flask and gunicorn.
#
# --sessionmesh-only skips those two.
#
# Usage: scripts/build-image.sh [--tag NAME] [--rebuild-bases] [--sessionmesh-only]
# Environment: SESSIONMESH_BUILD_DIR (scratch and .deb cache, default
# /var/tmp/sessionmesh-image-build), DEBIAN_MIRROR (default: debootstrap's own).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=sessionmesh:latest
rebuild_bases=false
extras=true
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=$2; shift 2 ;;
        --rebuild-bases) rebuild_bases=true; shift ;;
        --sessionmesh-only) extras=false; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

started=$(date +%s)
say() { printf '== [%4ss] %s\n' "$(($(date +%s) - started))" "$*" >&2; }
work=${SESSIONMESH_BUILD_DIR:-/var/tmp/sessionmesh-image-build}
suite=bookworm
mirror=${DEBIAN_MIRROR:-}
mkdir -p "$work/debs"

# What the script needs on the host: docker, cargo, and debootstrap (from apt).
command -v docker >/dev/null || { echo "build-image.sh: docker is not installed" >&2; exit 1; }
command -v cargo >/dev/null || { echo "build-image.sh: cargo is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build-image.sh: no Docker engine answers" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    if [ "$(id -u)" -ne 0 ]; then echo "build-image.sh: run as root to install debootstrap" >&2; exit 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# A minimal bookworm root file system in $1, with extra packages $2 (comma separated).
bootstrap() {
    local dir=$1 include=$2
    # A debootstrap that was killed can leave /proc (and more) mounted inside
    # its target: unmount those first, deepest first, or rm cannot remove it.
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r mounted; do umount -l "$mounted"; done
    rm -rf "$dir"
    # shellcheck disable=SC2086 # $mirror is empty (debootstrap's default) or one URL
    debootstrap --variant=minbase ${include:+--include="$include"} \
        --cache-dir="$work/debs" "$suite" "$dir" $mirror >"$dir.log" 2>&1 \
        || { tail -n 30 "$dir.log" >&2; echo "build-image.sh: debootstrap failed" >&2; exit 1; }
    # What the slim images leave out: package lists, caches, docs, man pages, locales.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
        "$dir"/usr/share/locale/* "$dir"/var/log/*.log "$dir"/var/log/apt/*
}

import() {
    local dir=$1 name=$2
    shift 2
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$name" >/dev/null
    rm -rf "$dir" "$dir.log"
}

# 1. The runtime base.
runtime_image=sessionmesh-local/debian:$suite-slim
if $rebuild_bases || ! have_image "$runtime_image"; then
    say "bootstrapping $runtime_image"
    bootstrap "$work/runtime-rootfs" ""
    import "$work/runtime-rootfs" "$runtime_image" 'CMD ["bash"]'
fi

# 2. The toolchain base: Debian + the C toolchain the linker needs + this machine's Rust.
sysroot=$(rustc --print sysroot)
rust_version=$(rustc --version | awk '{print $2}')
rust_minor=$(echo "$rust_version" | cut -d. -f1,2)
toolchain_image=sessionmesh-local/rust-toolchain:$rust_version
if $rebuild_bases || ! have_image "$toolchain_image"; then
    say "bootstrapping $toolchain_image (rustc $rust_version from $sysroot)"
    dir="$work/rust-rootfs"
    bootstrap "$dir" "gcc,libc6-dev,ca-certificates"
    mkdir -p "$dir/usr/local/rustup/toolchains/$rust_version" "$dir/usr/local/cargo/bin"
    # Only the toolchain's binaries and libraries: no docs.
    tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$dir/usr/local/rustup/toolchains/$rust_version" -x
    for tool in cargo rustc rustdoc; do
        ln -s "/usr/local/rustup/toolchains/$rust_version/bin/$tool" "$dir/usr/local/cargo/bin/$tool"
    done
    import "$dir" "$toolchain_image" \
        'ENV RUSTUP_HOME=/usr/local/rustup' 'ENV CARGO_HOME=/usr/local/cargo' \
        'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'CMD ["bash"]'
fi

# 3. The builder base: the toolchain plus the project's vendored dependencies.
lock_hash=$(sha256sum Cargo.lock | cut -c1-16)
rust_image=sessionmesh-local/rust:$rust_minor-slim-$suite
current=$(docker image inspect -f '{{ index .Config.Labels "io.sessionmesh.cargo-lock" }}' "$rust_image" 2>/dev/null || true)
if $rebuild_bases || [ "$current" != "$lock_hash" ]; then
    say "vendoring dependencies into $rust_image (Cargo.lock $lock_hash)"
    ctx="$work/vendor-context"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cargo vendor --quiet --locked --versioned-dirs --manifest-path Cargo.toml "$ctx/vendor" >/dev/null
    cat >"$ctx/config.toml" <<'TOML'
# Dependencies come from the vendored copies: no network needed in the build.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "/usr/local/cargo/vendor"
TOML
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $toolchain_image
COPY vendor /usr/local/cargo/vendor
COPY config.toml /usr/local/cargo/config.toml
LABEL io.sessionmesh.cargo-lock=$lock_hash
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build -q -t "$rust_image" "$ctx" >"$work/vendor-build.log" 2>&1 \
        || { cat "$work/vendor-build.log" >&2; echo "build-image.sh: building $rust_image failed" >&2; exit 1; }
    rm -rf "$ctx"
fi

# 4. The image itself, from the ordinary Dockerfile.
say "building $tag"
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DOCKER_BUILDKIT=0 docker build \
    --build-arg RUST_IMAGE="$rust_image" \
    --build-arg RUNTIME_IMAGE="$runtime_image" \
    --label io.sessionmesh.built-by=build-image.sh \
    --label org.opencontainers.image.revision="$revision" \
    -t "$tag" . >"$work/docker-build.log" 2>&1 \
    || { tail -n 40 "$work/docker-build.log" >&2; echo "build-image.sh: docker build failed (log: $work/docker-build.log)" >&2; exit 1; }
# The Dockerfile's dependency layer did its job: once the sources are in (its last
# `COPY . .`), cargo compiles the workspace's own crates and no dependency. Cargo
# names a crate of the workspace with its directory ("Compiling sessionmesh v0.1.0
# (/src)"), a dependency without one. A dependency compiled there means the stub
# build missed it (other features, flags or targets than the real build), and every
# code change would compile it again.
log=$work/docker-build.log
# The legacy builder colours a step's stderr (cargo's output) with escape sequences.
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
sources_at=$(awk '/^Step [0-9]+\/[0-9]+ : COPY \. \.$/ { at = NR } END { print at + 0 }' <<<"$plain")
[ "$sources_at" -gt 0 ] || { echo "build-image.sh: no 'COPY . .' step in $log" >&2; exit 1; }
compiled_before=$(head -n "$sources_at" <<<"$plain" | grep -cE '^ +Compiling ' || true)
compiled_after=$(tail -n +"$sources_at" <<<"$plain" | grep -E '^ +Compiling ' | awk '{ print $2 }' | paste -sd' ' - || true)
late_deps=$(tail -n +"$sources_at" <<<"$plain" | grep -E '^ +Compiling ' | grep -v ' (/' || true)
if [ -n "$late_deps" ]; then
    head -n 10 <<<"$late_deps" >&2
    echo "build-image.sh: the build after COPY . . compiled dependencies; the Dockerfile's dependency layer does not cover them (log: $log)" >&2
    exit 1
fi
if [ "$compiled_before" -gt 0 ]; then
    say "dependency layer: compiled $compiled_before crates"
else
    say "dependency layer: reused"
fi
say "compiled with the sources: ${compiled_after:-nothing (reused)}"
# Earlier builds of the tag, now untagged, and the stages of earlier builds: the
# newest image of each stage (labelled io.sessionmesh.stage) stays, because it holds
# the layer cache of the next build (the build stage's holds the dependency layer).
docker image prune -f --filter label=io.sessionmesh.built-by=build-image.sh >/dev/null
keep=$(for stage in recipe build; do
    docker images -q --filter dangling=true --filter "label=io.sessionmesh.stage=$stage" | sed -n 1p
done)
stale=$(docker images -q --filter dangling=true --filter label=io.sessionmesh.cargo-lock \
    | grep -vxF -e "${keep:-none}" || true)
if [ -n "$stale" ]; then
    # shellcheck disable=SC2086 # a list of image ids
    docker rmi $stale >/dev/null 2>&1 || true
fi

size=$(docker image inspect -f '{{ .Size }}' "$tag")
say "built $tag: $((size / 1000 / 1000)) MB, in $(($(date +%s) - started)) s"

# 5. The load balancer and the gateway example's application, for the compose files.
# extra_image NAME BASE PACKAGES BUILD_ARG CONTEXT: BASE is bookworm with PACKAGES
# (built when missing), passed to CONTEXT's Dockerfile as BUILD_ARG.
extra_image() {
    local name=$1 base=$2 packages=$3 build_arg=$4 context=$5
    if $rebuild_bases || ! have_image "$base"; then
        say "bootstrapping $base ($packages)"
        bootstrap "$work/$(basename "${base%%:*}")-rootfs" "$packages"
        import "$work/$(basename "${base%%:*}")-rootfs" "$base" 'CMD ["bash"]'
    fi
    say "building $name"
    DOCKER_BUILDKIT=0 docker build --build-arg "$build_arg=$base" \
        --label io.sessionmesh.built-by=build-image.sh \
        -t "$name" "$context" >"$work/$(basename "${name%%:*}")-build.log" 2>&1 \
        || { tail -n 40 "$work/$(basename "${name%%:*}")-build.log" >&2; echo "build-image.sh: building $name failed" >&2; exit 1; }
}
if $extras; then
    extra_image sessionmesh-haproxy:latest "sessionmesh-local/haproxy:$suite" haproxy \
        HAPROXY_IMAGE deploy/haproxy
    # The configuration must parse (haproxy -c) with the environment the compose files give.
    docker run --rm -e READY_PATH=/readyz sessionmesh-haproxy:latest \
        haproxy -c -q -f /usr/local/etc/haproxy/haproxy.cfg \
        || { echo "build-image.sh: deploy/haproxy/haproxy.cfg does not parse" >&2; exit 1; }
    extra_image sessionmesh-example-flask:latest "sessionmesh-local/python3-flask:$suite" \
        python3-flask,gunicorn PYTHON_IMAGE examples/gateway/flask
    docker image prune -f --filter label=io.sessionmesh.built-by=build-image.sh >/dev/null
    say "built sessionmesh-haproxy:latest and sessionmesh-example-flask:latest in $(($(date +%s) - started)) s"
fi
