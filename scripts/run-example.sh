#!/usr/bin/env bash
# Runs an example of examples/ as a cluster of nodes on loopback, one process
# each, and stops them all on Ctrl-C.
#
#   scripts/run-example.sh <example> [nodes] [-- extra flags for every node]
#   scripts/run-example.sh cart             # 3 nodes: 127.0.0.1:8080, :8180, :8280
#
# It builds the example (release, with the cargo features it requires),
# generates throwaway secrets shared by the nodes, starts node1..nodeN (node k
# on public port 8080+100(k-1), internal 8081+100(k-1), gossip 7280+100(k-1);
# each seeded with the gossip addresses of the nodes before it), prefixes
# every log line with its node, waits until each answers /readyz, and prints
# what to try. Ctrl-C (or SIGTERM) makes every node leave gracefully; a
# second Ctrl-C kills them.
#
# Any SESSIONMESH_* variable in the environment reaches every node (for
# example SESSIONMESH_REPLICATION_FACTOR=3); flags after `--` too.
#
# An example binary works here when it takes the flags of `sessionmesh`
# (sessionmesh::config::ServeArgs), serves /readyz (sessionmesh::web::
# operator_routes), and leaves the cluster on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 <example> [nodes] [-- flags for every node]" >&2
    echo "examples: $(cd examples && ls -- *.rs */main.rs 2>/dev/null | sed 's#/main.rs##; s#\.rs$##' | tr '\n' ' ')" >&2
    exit 2
}

[ $# -ge 1 ] || usage
example=$1
shift
nodes=3
if [ $# -ge 1 ] && [ "$1" != "--" ]; then
    nodes=$1
    shift
fi
[ $# -ge 1 ] && [ "$1" = "--" ] && shift
extra=("$@")
case $nodes in
    '' | *[!0-9]*) echo "nodes must be a number, not '$nodes'" >&2; usage ;;
esac
if [ "$nodes" -lt 1 ] || [ "$nodes" -gt 9 ]; then
    echo "nodes must be between 1 and 9" >&2
    exit 2
fi
if [ ! -e "examples/$example.rs" ] && [ ! -e "examples/$example/main.rs" ]; then
    echo "no example '$example' in examples/" >&2
    usage
fi
for tool in cargo curl; do
    command -v "$tool" >/dev/null || { echo "$0 needs $tool" >&2; exit 1; }
done

# The cargo features the example requires ([[example]] required-features).
features=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
    python3 -c '
import json, sys
name = sys.argv[1]
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if target["name"] == name and "example" in target["kind"]:
            print(",".join(target.get("required-features", [])))
' "$example" 2>/dev/null || true)

echo "== building examples/$example (release${features:+, features $features})"
cargo build --release --example "$example" ${features:+--features "$features"}
target_dir=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
binary=${target_dir:-target}/release/examples/$example
[ -x "$binary" ] || { echo "built, but $binary is not there" >&2; exit 1; }

# Throwaway secrets: every node of one cluster must share them.
secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
export SESSIONMESH_COOKIE_SECRET=${SESSIONMESH_COOKIE_SECRET:-$(secret)}
export SESSIONMESH_CLUSTER_SECRET=${SESSIONMESH_CLUSTER_SECRET:-$(secret)}

public() { echo "127.0.0.1:$((8080 + 100 * ($1 - 1)))"; }
internal() { echo "127.0.0.1:$((8081 + 100 * ($1 - 1)))"; }
gossip() { echo "127.0.0.1:$((7280 + 100 * ($1 - 1)))"; }

pids=()
stop_all() {
    local status=${1:-0}
    trap - INT TERM
    trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' INT TERM
    echo "== stopping: every node leaves the cluster (Ctrl-C again to kill them)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "== all nodes stopped"
    exit "$status"
}
trap stop_all INT TERM
trap 'kill -KILL "${pids[@]}" 2>/dev/null || true' EXIT

echo "== starting $nodes nodes of $example"
# Each node in its own process group (job control on while they start), so
# that Ctrl-C reaches this script only, which then stops the nodes in order.
set -m
for k in $(seq 1 "$nodes"); do
    seeds=()
    for j in $(seq 1 $((k - 1))); do
        seeds+=(--seed "$(gossip "$j")")
    done
    # The log prefixer ignores Ctrl-C and ends when its node does, so that the
    # nodes' last lines (the leave) still show.
    "$binary" --node-id "node$k" --cluster-id "example-$example" \
        --public-addr "$(public "$k")" --internal-addr "$(internal "$k")" \
        --gossip-addr "$(gossip "$k")" ${seeds[@]+"${seeds[@]}"} ${extra[@]+"${extra[@]}"} \
        > >(trap '' INT TERM; exec sed -u "s/^/node$k | /") 2>&1 &
    pids+=($!)
done
set +m

# Waits until every node answers /readyz (or one of them exits)...
deadline=$((SECONDS + 60))
for k in $(seq 1 "$nodes"); do
    until curl -fsS -o /dev/null "http://$(public "$k")/readyz" 2>/dev/null; do
        if ! kill -0 "${pids[k - 1]}" 2>/dev/null; then
            echo "== node$k exited during start-up (see its lines above); stopping" >&2
            stop_all 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "== node$k not ready after 60 s; stopping" >&2
            stop_all 1
        fi
        sleep 0.2
    done
done

# ... and until they agree on the ring (the same fingerprint everywhere).
fingerprint() {
    curl -fsS "http://$(public "$1")/api/cluster" 2>/dev/null |
        grep -o '"fingerprint":"[^"]*"' | head -n 1
}
agreed() {
    local first
    first=$(fingerprint 1) && [ -n "$first" ] || return 1
    for k in $(seq 2 "$nodes"); do
        [ "$(fingerprint "$k")" = "$first" ] || return 1
    done
}
until agreed; do
    if [ $SECONDS -ge $deadline ]; then
        echo "== the nodes do not agree on the ring after 60 s; stopping" >&2
        stop_all 1
    fi
    sleep 0.2
done

one=http://$(public 1)
two=http://$(public $((nodes > 1 ? 2 : 1)))
cat <<EOF

== $nodes nodes of $example are ready:
$(for k in $(seq 1 "$nodes"); do echo "   node$k  http://$(public "$k")/   dashboard http://$(public "$k")/dashboard"; done)
EOF
# What to try, per example (add yours).
case $example in
    cart)
        cat <<EOF

   Try it (the cookie jar carries the session from one node to the other):
   curl -s -c jar -b jar $one/cart/items -H 'content-type: application/json' -d '{"sku":"tea","quantity":2}'
   curl -s -c jar -b jar $two/login -H 'content-type: application/json' -d '{"user":"ada","password":"lovelace"}'
   curl -s -c jar -b jar $one/cart
   curl -s -c jar -b jar $two/checkout -X POST
   curl -s $one/api/cluster/whereis/\$(awk '\$6=="SESSION"{print \$7}' jar)
EOF
        ;;
    actix_session_from_redis | axum_tower_sessions)
        cat <<EOF

   Try it (the cookie jar carries the session from one node to the other):
   curl -s -c jar -b jar $one/count -X POST
   curl -s -c jar -b jar $two/login -H 'content-type: application/json' -d '{"user":"ada","password":"lovelace"}'
   curl -s -c jar -b jar $one/count -X POST
   curl -s -c jar -b jar $two/
   curl -s $one/api/cluster | grep -o '"sessions":{[^}]*}'    # the sessions node1 owns and holds copies of
EOF
        ;;
esac
cat <<EOF

   Ctrl-C stops all nodes.

EOF
wait "${pids[@]}" 2>/dev/null || true
echo "== the nodes exited by themselves"
