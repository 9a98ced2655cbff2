#!/usr/bin/env bash
# The rater's cost of the daily rollup (sql/0008: statement-level triggers on gm.charges):
# bench_rater with the triggers dropped (before) and present (after), alternated ROUNDS times
# in one session on the same services, so that both see the same machine load.
#   bash bench/rollup_cost.sh BUILD_DIR [events=300000] [rounds=2]
set -euo pipefail
build=${1:?usage: rollup_cost.sh BUILD_DIR [events] [rounds]}
events=${2:-300000}
rounds=${3:-2}
for r in $(seq 1 "$rounds"); do
    for mode in off on; do
        echo "== round $r, rollup $mode"
        GM_BENCH_ROLLUP=$mode "$build/bench/bench_rater" "$events" 6 10000 | grep -E "rollup|end to end|p50|RESULT"
    done
done
