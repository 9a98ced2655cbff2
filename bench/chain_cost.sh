#!/usr/bin/env bash
# The rater's cost of the batch digests (tamper evidence, ledger/chain.c): bench_rater with the
# digests skipped (GM_BENCH_CHAIN=off, before) and recorded (after), alternated ROUNDS times in
# one session on the same services, so that both see the same machine load.
#   bash bench/chain_cost.sh BUILD_DIR [events=300000] [rounds=2]
set -euo pipefail
build=${1:?usage: chain_cost.sh BUILD_DIR [events] [rounds]}
events=${2:-300000}
rounds=${3:-2}
for r in $(seq 1 "$rounds"); do
    for mode in off on; do
        echo "== round $r, digests $mode"
        GM_BENCH_CHAIN=$mode "$build/bench/bench_rater" "$events" 6 10000 | grep -E "digests|end to end|p50|RESULT"
    done
done
