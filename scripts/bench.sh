#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, from a fresh clone:
#   scripts/bench.sh                  # full run (about 25 minutes on 2 cores)
#   scripts/bench.sh --smoke          # a quick run
#   scripts/bench.sh --parts memory --sessions 100000
#   scripts/bench.sh --parts profile  # perf profiles of the read paths
# Arguments go to the harness (`target/release/bench --help`). The ring
# micro-benchmarks (criterion) run first unless BENCH_CRITERION=0.
# Results: target/bench/results.md and results.json.
#
# On a shared machine, other work steals CPU from the servers under test. As root,
# the measurements run at nice -19 (every contender and wrk alike, children
# inherit it); BENCH_NICE=0 turns that off.
set -euo pipefail
cd "$(dirname "$0")/.."

# sessionmesh is built on its own, so that the harness's dependencies cannot
# change the features it is compiled with.
cargo build --release --locked -p sessionmesh --bin sessionmesh
cargo build --release --locked -p bench --bins

nice=()
if [[ "$(id -u)" == 0 && "${BENCH_NICE:--19}" != 0 ]]; then
    nice=(nice -n "${BENCH_NICE:--19}")
fi

if [[ "${BENCH_CRITERION:-1}" != 0 ]]; then
    "${nice[@]}" cargo bench --locked -p bench --bench ring
fi

exec "${nice[@]}" "${CARGO_TARGET_DIR:-target}/release/bench" "$@"
