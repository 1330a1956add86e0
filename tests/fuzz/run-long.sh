#!/bin/sh
# Runs every fuzz target (or those named), one after the other on one core at the lowest CPU
# priority (nice 19: the machine may be shared), from the seed corpus plus what earlier runs found
# (build-fuzz/fuzz-work/NAME/corpus, kept between runs). Each runs for SECONDS (-t, default
# 3600), or for RUNS executions (-n; docs/SECURITY.md records runs of 10 million each).
# A crash leaves its input in build-fuzz/fuzz-work/NAME/: fix it, then copy the input into
# tests/fuzz/regressions/NAME/ so that the normal test suite replays it for ever.
#   tests/fuzz/run-long.sh [-t SECONDS | -n RUNS] [request|frame|proto|argv ...]
set -eu
cd "$(dirname "$0")/../.."
limit=-max_total_time=3600
case "${1:-}" in
-t)
        limit=-max_total_time=$2
        shift 2
        ;;
-n)
        limit=-runs=$2
        shift 2
        ;;
esac
targets=${*:-request frame proto argv}
[ -d build-fuzz ] || CC=clang meson setup build-fuzz -Dfuzz=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
status=0
for t in $targets; do
        work=build-fuzz/fuzz-work/$t
        mkdir -p "$work/corpus"
        nice -n 19 ninja -C build-fuzz "tests/fuzz/fuzz-$t" >/dev/null
        # futurectl's parser prints help and usage texts: keep them out of the log.
        quiet=""
        [ "$t" = argv ] && quiet=-close_fd_mask=3
        echo "fuzz-$t: $limit, started $(date -u +%FT%TZ)"
        start=$(date +%s)
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                nice -n 19 "build-fuzz/tests/fuzz/fuzz-$t" "$limit" $quiet -print_final_stats=1 \
                -artifact_prefix="$work/" "$work/corpus" "tests/fuzz/corpus/$t" \
                2>"$work/log" || status=1
        echo "fuzz-$t: $(($(date +%s) - start)) s"
        grep -E "^stat::number_of_executed_units|^SUMMARY|^==.*ERROR" "$work/log" || true
done
exit $status
