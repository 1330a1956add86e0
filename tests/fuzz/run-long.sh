#!/bin/sh
# Runs every fuzz target (or those named) for SECONDS each (default 3600) on one core, from the
# seed corpus plus what earlier runs found (build-fuzz/fuzz-work/NAME/corpus, kept between runs).
# A crash leaves its input in build-fuzz/fuzz-work/NAME/: fix it, then copy the input into
# tests/fuzz/regressions/NAME/ so that the normal test suite replays it for ever.
#   tests/fuzz/run-long.sh [-t SECONDS] [request|frame|proto ...]
set -eu
cd "$(dirname "$0")/../.."
seconds=3600
if [ "${1:-}" = "-t" ]; then
        seconds=$2
        shift 2
fi
targets=${*:-request frame proto}
[ -d build-fuzz ] || CC=clang meson setup build-fuzz -Dfuzz=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
status=0
for t in $targets; do
        work=build-fuzz/fuzz-work/$t
        mkdir -p "$work/corpus"
        ninja -C build-fuzz "tests/fuzz/fuzz-$t" >/dev/null
        echo "fuzz-$t: $seconds s"
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                "build-fuzz/tests/fuzz/fuzz-$t" -max_total_time="$seconds" -print_final_stats=1 \
                -artifact_prefix="$work/" "$work/corpus" "tests/fuzz/corpus/$t" \
                2>"$work/log" || status=1
        grep -E "^stat::number_of_executed_units|^SUMMARY|^==.*ERROR" "$work/log" || true
done
exit $status
