#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, from a fresh clone:
#   scripts/bench.sh                  # full run (about 20 minutes on 2 cores)
#   scripts/bench.sh --smoke          # a quick run
#   scripts/bench.sh --parts memory --sessions 100000
# Arguments go to the harness (`target/release/bench --help`). The ring
# micro-benchmarks (criterion) run first unless BENCH_CRITERION=0.
# Results: target/bench/results.md and results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

# sessionmesh is built on its own, so that the harness's dependencies cannot
# change the features it is compiled with.
cargo build --release --locked -p sessionmesh --bin sessionmesh
cargo build --release --locked -p bench --bins

if [[ "${BENCH_CRITERION:-1}" != 0 ]]; then
    cargo bench --locked -p bench --bench ring
fi

exec target/release/bench "$@"
