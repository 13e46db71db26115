#!/usr/bin/env bash
# Builds every fuzz target and runs each for N seconds (default 300), one after another.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs `cargo install cargo-fuzz`. Runs on the stable toolchain: cargo-fuzz passes nightly
# flags (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1 allows. Crashes land in
# tests/fuzz/artifacts/<target>/; the corpus grows in tests/fuzz/corpus/<target>/ (seeded from
# tests/fuzz/seeds/<target>/). Each run's libFuzzer output is kept in
# tests/fuzz/logs/<target>.log and its last stats line is printed.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(grammar git_ref app_json webhook)
fi
export RUSTC_BOOTSTRAP=1
# Resolve dependencies as the workspace does (the fuzz crate keeps no lock file of its own).
[ -f Cargo.lock ] || cp ../../Cargo.lock Cargo.lock
cargo fuzz build
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "== $t for ${seconds}s"
    status=0
    cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 \
        >"logs/$t.log" 2>&1 || status=$?
    grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "logs/$t.log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "logs/$t.log" || true
    if [ "$status" -ne 0 ]; then
        echo "!! $t failed (exit $status); see tests/fuzz/logs/$t.log and artifacts/$t/"
        exit "$status"
    fi
done
