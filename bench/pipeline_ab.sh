#!/usr/bin/env bash
# What pipelining the rater buys (issue 19): bench_rater with --pipeline 0 (sequential: poll,
# decode, price, commit, one after the other) and --pipeline 1 (the next batch prepared while
# a commit thread writes this one), alternated ROUNDS times in one session on the same
# services, so that both see the same machine load; the order is swapped every round. Prints
# each run's lines of interest and, at the end, one table row per run.
#   bash bench/pipeline_ab.sh BUILD_DIR [events=200000] [rounds=2] [batch=10000]
set -euo pipefail
build=${1:?usage: pipeline_ab.sh BUILD_DIR [events] [rounds] [batch]}
events=${2:-200000}
rounds=${3:-2}
batch=${4:-10000}
rows=()
for r in $(seq 1 "$rounds"); do
    order="0 1"
    [ $((r % 2)) = 0 ] && order="1 0"
    for mode in $order; do
        echo "== round $r, pipeline $mode, load $(cut -d' ' -f1-3 /proc/loadavg)"
        err=$(mktemp)
        if ! out=$(GM_BENCH_PIPELINE=$mode "$build/bench/bench_rater" "$events" 6 "$batch" 2>"$err"); then
            echo "$out"
            cat "$err" >&2
            rm -f "$err"
            exit 1
        fi
        rm -f "$err"
        echo "$out" | grep -E "load average|ceiling:|end to end|batches|bytes/event|p50, p90|RESULT"
        load=$(echo "$out" | sed -nE 's/.*load average ([0-9.]+).*/\1/p' | head -n 1)
        res=$(echo "$out" | grep '^RESULT')
        ceil=$(echo "$res" | sed -E 's/.* ceiling=([0-9]+).*/\1/')
        e2e=$(echo "$res" | sed -E 's/.* end_to_end=([0-9]+).*/\1/')
        p99=$(echo "$res" | sed -E 's/.* p99_ms=([0-9.]+).*/\1/')
        bpe=$(echo "$res" | sed -E 's/.* bytes_per_event=([0-9.]+).*/\1/')
        ratio=$(awk -v a="$e2e" -v b="$ceil" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        rows+=("| $r | $mode | $load | $ceil | $e2e | $ratio | $p99 | $bpe |")
    done
done
echo
echo "| round | pipeline | load (1 min) | ceiling rows/s | end to end events/s | ratio | p99 ms at half load | bytes/event |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
