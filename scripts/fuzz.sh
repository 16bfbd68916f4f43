#!/usr/bin/env bash
# Short fuzz run of every target in fuzz/ (cargo-fuzz + libFuzzer on the stable toolchain).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default 60 s; all targets)
#
# Targets: frame (decode_frame + length-prefixed stream framing), envelope (signature
# verification of messages, presence records, gone notices), state (the protocol state
# machine under arbitrary event sequences). Seeds: fuzz/corpus/<target>/ (read only);
# inputs found during the run go to $FUZZ_WORK/corpus/<target>/ and crashes to
# fuzz/artifacts/<target>/. Exits non-zero on the first crash, printing the reproducer.
#
# libfuzzer-sys compiles libFuzzer with the C++ compiler (g++ or clang++). cargo-fuzz needs
# nightly flags: RUSTC_BOOTSTRAP=1 enables them on stable. No sanitizer (-s none): the
# code under test is safe Rust, and it doubles the speed; debug assertions (and so
# integer-overflow checks) are on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(frame envelope state)

if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --version 0.13.2
fi
if ! command -v c++ >/dev/null; then
    echo "error: a C++ compiler (g++ or clang++) is needed to build libFuzzer" >&2
    exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/fuzz/target}"
work="${FUZZ_WORK:-$CARGO_TARGET_DIR/fuzz-work}"
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -s none -a) >&2
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

printf '%-10s %12s %8s %10s %s\n' target executions seconds exec/s result
status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
    log="$work/$t.log"
    rc=0
    "$bin/$t" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" \
        "$work/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    took="${took:-$secs}"
    result=ok
    if [ "$rc" -ne 0 ]; then
        result="CRASH (rc $rc, log $log)"
        status=1
    fi
    printf '%-10s %12s %8s %10s %s\n' "$t" "${runs:-?}" "$took" \
        "$(( ${runs:-0} / (took > 0 ? took : 1) ))" "$result"
    if [ "$rc" -ne 0 ]; then
        grep -E -A12 'panicked|ERROR' "$log" | head -n 30 >&2
        ls fuzz/artifacts/"$t"/ >&2
        break
    fi
done
exit "$status"
