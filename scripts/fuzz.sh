#!/usr/bin/env bash
# Fuzzes the parsers that take outside bytes (fuzz/fuzz_targets/) with
# cargo-fuzz: one TARGET or all, SECONDS each (default 60). Uses the
# installed nightly toolchain and installs cargo-fuzz if it is missing;
# without nightly it says so and exits 0. Seeds come from fuzz/seeds/<T>;
# what libFuzzer finds goes to fuzz/corpus/<T> (not committed) and crashes
# to fuzz/artifacts/<T>. Prints runs and time per target; exits 1 on a crash.
#
#   scripts/fuzz.sh                 every target, 60 s each
#   scripts/fuzz.sh coap_engine 600 one target for 10 minutes
#   FUZZ_SANITIZER=address scripts/fuzz.sh ...   with AddressSanitizer (slower)
#   FUZZ_RUNS=10000000 scripts/fuzz.sh bootstrap 3600   stop at 10 M runs
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
secs="${2:-60}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain here (cargo-fuzz needs one: rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
san="${FUZZ_SANITIZER:-none}"
if [ "$which" = all ]; then
    targets=$(cargo +nightly fuzz list)
else
    targets="$which"
fi
cargo +nightly fuzz build -s "$san" $([ "$which" = all ] || echo "$which") >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
printf '%-18s %12s %8s %12s  %s\n' target runs seconds runs/s result
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    if cargo +nightly fuzz run -s "$san" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH: $(ls -t "fuzz/artifacts/$t"/* 2>/dev/null | head -1)"
        failed=1
    fi
    runs=$(awk '/^Done [0-9]+ runs in/ { print $2 }' "$log" | tail -1)
    took=$(awk '/^Done [0-9]+ runs in/ { print $5 }' "$log" | tail -1)
    if [ -z "$runs" ]; then
        runs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
        took=$(awk '/stat::average_exec_per_sec:/ { print "-" }' "$log" | tail -1)
    fi
    rate=$([ -n "${runs:-}" ] && [ -n "${took:-}" ] && [ "$took" != - ] && [ "$took" -gt 0 ] && echo $((runs / took)) || echo -)
    printf '%-18s %12s %8s %12s  %s\n' "$t" "${runs:--}" "${took:--}" "$rate" "$result"
    if [ "$result" != ok ]; then
        grep -m1 -A3 "panicked at" "$log" || tail -20 "$log"
    fi
done
exit $failed
