#!/usr/bin/env bash
# make fuzz: builds every cargo-fuzz target in fuzz/ and runs each for a bounded time, from the committed seeds
# in fuzz/corpus/<target>. Exits non-zero, naming the target and the crashing input, on any crash, timeout, leak
# or out-of-memory; prints per target libFuzzer's count of executions and the time it took.
#
# Settings (environment):
#   FUZZ_SECONDS    seconds per target (default 45: 8 targets, 2 at a time, about 3 minutes)
#   FUZZ_JOBS       targets run at once (default 2)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_MB     memory limit of one target in MiB (default 2048)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_TARGETS    the targets to run (default: all, as `cargo fuzz list` gives them)
#
# The machine needs only stable Rust: cargo-fuzz passes nightly-only -Z flags, which stable rustc takes with
# RUSTC_BOOTSTRAP=1. New inputs libFuzzer finds go to fuzz/target/corpus/<target> (not committed); to keep one
# (say a crash, once fixed), copy it into fuzz/corpus/<target>.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-45}
jobs=${FUZZ_JOBS:-2}
timeout=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "fuzz: building the targets (sanitizer: $sanitizer)"
start=$(date +%s)
# -a: debug assertions and overflow checks, so arithmetic overflow is a crash too.
cargo fuzz build -a -s "$sanitizer"
echo "fuzz: built in $(($(date +%s) - start)) s"

# shellcheck disable=SC2207
targets=(${FUZZ_TARGETS:-$(cargo fuzz list)})
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=fuzz/target/$triple/release
out=fuzz/target/fuzz-runs
rm -rf "$out"
mkdir -p "$out"

run_one() {
    local target=$1
    local corpus=fuzz/target/corpus/$target artifacts=fuzz/artifacts/$target/
    mkdir -p "$corpus" "$artifacts"
    local rc=0
    "$bin_dir/$target" "$corpus" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss_mb" \
        -artifact_prefix="$artifacts" -print_final_stats=1 >"$out/$target.log" 2>&1 || rc=$?
    echo "$rc" >"$out/$target.rc"
}

echo "fuzz: running ${#targets[@]} targets for $seconds s each, $jobs at a time"
for target in "${targets[@]}"; do
    if [ ! -x "$bin_dir/$target" ]; then
        echo "fuzz: $bin_dir/$target was not built" >&2
        exit 1
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    run_one "$target" &
done
wait

failed=0
printf '%-18s %12s %8s %10s\n' target executions seconds "execs/s"
for target in "${targets[@]}"; do
    log=$out/$target.log
    rc=$(cat "$out/$target.rc" 2>/dev/null || echo missing)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    if [ "$rc" = 0 ] && [ -n "$runs" ] && [ -n "$secs" ]; then
        printf '%-18s %12s %8s %10s\n' "$target" "$runs" "$secs" "$((runs / (secs > 0 ? secs : 1)))"
    else
        failed=1
        echo "FUZZ FAILURE: $target (exit status $rc; executed ${runs:-?} inputs), the end of $log:" >&2
        # The panic or sanitizer report without its stack frames, then libFuzzer's last words.
        grep -a -v -E '^ *(#[0-9]+ 0x|[0-9]+: |at /)' "$log" | tail -n 30 | cut -c1-400 | sed 's/^/    /' >&2
        for input in "fuzz/artifacts/$target"/*; do
            [ -e "$input" ] || continue
            echo "    input: $input (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -a $target $input)" >&2
        done
    fi
done
if [ "$failed" != 0 ]; then
    echo "fuzz: FAILED" >&2
    exit 1
fi
echo "fuzz: all targets ran without a crash"
