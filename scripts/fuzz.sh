#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds each (default 60), with
# AddressSanitizer and debug assertions (so integer overflow panics).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#   scripts/fuzz.sh 60 json_merge replication_batch   # only these targets
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, sancov passes). This
# machine's toolchain is stable, so the script sets RUSTC_BOOTSTRAP=1, which lets
# stable rustc accept them (the usual way to use unstable flags on a stable
# toolchain; set FUZZ_TOOLCHAIN=nightly to use `cargo +nightly` instead where a
# nightly toolchain is installed). The first build compiles every dependency with
# instrumentation: about 15 min on 2 cores; later builds take a minute.
#
# Corpora grow in fuzz/corpus/<target> (not committed); the committed seeds in
# fuzz/seeds/<target> are read too. A crash leaves its input in
# fuzz/artifacts/<target>/: reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> fuzz/artifacts/<target>/crash-...
# and, once fixed, copy it to fuzz/regressions/<target>/ so that `cargo test`
# (tests/fuzz_properties.rs) replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo_fuzz=(cargo)
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    cargo_fuzz+=("+${FUZZ_TOOLCHAIN}")
else
    export RUSTC_BOOTSTRAP=1
fi
cargo_fuzz+=(fuzz)

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo_fuzz[@]}" list)
fi

echo "== building ${targets[*]}"
"${cargo_fuzz[@]}" build -O -a

mkdir -p fuzz/logs
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
    echo "== $target: ${secs}s"
    # Larger inputs for the JSON targets; -timeout: one input may not take 10 s.
    max_len=4096
    case "$target" in replication_batch|json_merge) max_len=65536 ;; esac
    if "${cargo_fuzz[@]}" run -O -a "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 >"fuzz/logs/$target.log" 2>&1; then
        runs=$(grep -m1 '^stat::number_of_executed_units' "fuzz/logs/$target.log" | awk '{print $2}')
        echo "   ok: ${runs:-?} executions, corpus $(ls "fuzz/corpus/$target" | wc -l) inputs"
    else
        echo "   CRASH: see fuzz/logs/$target.log and fuzz/artifacts/$target/"
        grep -E 'panicked|ERROR: AddressSanitizer|SUMMARY' "fuzz/logs/$target.log" | head -5 || true
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== crashes in: ${failed[*]}"
    exit 1
fi
echo "== no crash in ${targets[*]}"
