#!/usr/bin/env bash
# End-to-end test of the dashboard (issue 8), run by CTest (tests/dashboard.cmake): a throw-away
# PostgreSQL database filled by `gridmeter loadgen` + `gridmeter rater` (a unique Kafka topic on
# the running broker), API keys from `gridmeter apikey`, `gridmeter api` on an ephemeral port,
# then tests/e2e/dashboard.test.mjs drives Debian's headless Chromium through playwright-core.
#
#   bash tests/e2e/run.sh GRIDMETER_BINARY ARTIFACT_DIR
#
# Needs: the services of scripts/services.sh, and chromium, node and npm (scripts/setup.sh
# installs them). Missing tools are a failure, never a skip. Screenshots and downloads go to
# ARTIFACT_DIR. GM_E2E_KEEP=1 keeps the database and prints the server's address at the end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
gm=${1:?usage: run.sh GRIDMETER_BINARY ARTIFACT_DIR}
art=${2:?usage: run.sh GRIDMETER_BINARY ARTIFACT_DIR}
gm=$(cd "$(dirname "$gm")" && pwd)/$(basename "$gm")
mkdir -p "$art"
art=$(cd "$art" && pwd)
rm -f "$art"/*.png "$art"/*.csv "$art"/*.json "$art"/*.log # this run's artifacts only

fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
say() { echo "e2e: $*" >&2; }

chromium=${GM_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || fail "no Chromium at $chromium: run scripts/setup.sh (Debian package chromium), or set GM_CHROMIUM"
command -v node >/dev/null || fail "no node: run scripts/setup.sh (Debian package nodejs)"
command -v npm >/dev/null || fail "no npm: run scripts/setup.sh (Debian package npm, or the npm that comes with nodejs)"
[ -x "$gm" ] || fail "no gridmeter binary at $gm"

# playwright-core, pinned by tests/e2e/package-lock.json, installed with `npm ci` into the build
# tree (beside ARTIFACT_DIR; GM_E2E_NODE_DIR overrides), never into the sources, so that build
# trees do not share it. Again only when the lock file changed (npm keeps a copy of it in
# node_modules/.package-lock.json); flock keeps two runs of one build tree apart.
node_dir=${GM_E2E_NODE_DIR:-$(dirname "$art")/e2e-node}
mkdir -p "$node_dir"
(
    flock 9
    if [ ! -f "$node_dir/node_modules/.package-lock.json" ] || [ ! -d "$node_dir/node_modules/playwright-core" ] ||
        ! cmp -s "$here/package-lock.json" "$node_dir/package-lock.json"; then
        say "npm ci (tests/e2e -> $node_dir)"
        cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$art/npm.log" 2>&1 ||
            { tail -n 20 "$art/npm.log" >&2; fail "npm ci failed (log: $art/npm.log)"; }
    fi
) 9>"$node_dir/.lock"

eval "$(bash "$repo/scripts/services.sh" env)"
. "$repo/scripts/lib.sh" # GM_KAFKA_LIB (the broker's jars: topic deletion at the end)
psql -X -qtA -d postgres -c "SELECT 1" >/dev/null 2>&1 ||
    fail "PostgreSQL is not answering at $PGHOST:$PGPORT: start it with scripts/services.sh start"

id="e2e_$(date +%s)_$$"
db="gm_$id"
topic="gridmeter.e2e.$id"
work=$(mktemp -d /tmp/gm-e2e.XXXXXX)
api_pid="" rater_pid="" topic_made=""
cleanup() {
    local rc=$?
    set +e
    [ -n "$api_pid" ] && kill -TERM "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
    [ -n "$rater_pid" ] && kill -TERM "$rater_pid" 2>/dev/null && wait "$rater_pid" 2>/dev/null
    if [ -z "${GM_E2E_KEEP:-}" ]; then
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        # The run's topic, with Kafka's own tool from the broker's jars (best effort).
        if [ -n "$topic_made" ] && command -v java >/dev/null && ls "$GM_KAFKA_LIB"/kafka-tools-*.jar >/dev/null 2>&1; then
            java -Xmx256m -cp "$GM_KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand \
                --bootstrap-server "$GRIDMETER_KAFKA_BROKERS" --delete --topic "$topic" \
                >"$art/topic-delete.log" 2>&1 || say "could not delete topic $topic (log: $art/topic-delete.log)"
        fi
        rm -rf "$work"
    else
        say "kept database $db and $work"
    fi
    exit $rc
}
trap cleanup EXIT INT TERM

say "database $db, topic $topic"
createdb "$db"
"$gm" migrate --db "dbname=$db" >"$art/migrate.log" 2>&1 || { cat "$art/migrate.log" >&2; fail "migrate"; }
"$gm" ratecard import --db "dbname=$db" "$repo"/examples/ratecards/list-usd-v1.json \
    "$repo"/examples/ratecards/list-usd-v2.json "$repo"/examples/ratecards/contract-acme.json \
    >"$art/ratecard.log" 2>&1 || { cat "$art/ratecard.log" >&2; fail "ratecard import"; }

# Loadgen data over the last three days (backfilled with a simulated clock) and the last hour,
# one spool so that each node's seq continues across the runs.
# "Now" is gridmeter's clock: GRIDMETER_NOW when the suite runs on a moved clock.
now=$(date -u ${GRIDMETER_NOW:+-d "$GRIDMETER_NOW"} +%s)
topic_made=1 # auto-created by the first loadgen run
i=0
for back_h in 70 52 45 30 26 20 14 9 5 3 1; do
    start=$(date -u -d "@$((now - back_h * 3600))" +%Y-%m-%dT%H:%M:%SZ)
    "$gm" loadgen --topic "$topic" --spool-dir "$work/spool" --sites 3 --nodes-per-site 2 \
        --tenants 3 --models 3 --start "$start" --rate 2 --count 150 --seed $((i + 7)) \
        --manifest "$work/manifest-$i.json" >>"$art/loadgen.log" 2>&1 ||
        { tail -n 20 "$art/loadgen.log" >&2; fail "loadgen"; }
    i=$((i + 1))
done
# Two months back (a month past its grace window: the test finalizes acme's invoice of it).
old=$((now - 62 * 86400))
"$gm" loadgen --topic "$topic" --spool-dir "$work/spool" --sites 3 --nodes-per-site 2 --tenants 3 \
    --models 3 --start "$(date -u -d "@$old" +%Y-%m-%dT%H:%M:%SZ)" --rate 2 --count 150 --seed 98 \
    --manifest "$work/manifest-old.json" >>"$art/loadgen.log" 2>&1 || { tail -n 20 "$art/loadgen.log" >&2; fail "loadgen"; }
export GM_E2E_OLD_PERIOD
GM_E2E_OLD_PERIOD=$(date -u -d "@$old" +%Y-%m)
# And the last ten minutes (never before this month's first instant), so that the month to
# date has usage whatever the day.
month0=$(date -u -d "$(date -u -d "@$now" +%Y-%m-01T00:00:00Z)" +%s)
recent=$((now - 600 > month0 ? now - 600 : month0))
"$gm" loadgen --topic "$topic" --spool-dir "$work/spool" --sites 3 --nodes-per-site 2 --tenants 3 \
    --models 3 --start "$(date -u -d "@$recent" +%Y-%m-%dT%H:%M:%SZ)" --rate 2 --count 150 --seed 99 \
    --manifest "$work/manifest-recent.json" >>"$art/loadgen.log" 2>&1 || { tail -n 20 "$art/loadgen.log" >&2; fail "loadgen"; }
"$gm" rater --topic "$topic" --gpu-topic "" --group "$id" --db "dbname=$db" --metrics "" --exit-idle-ms 4000 \
    >"$art/rater.log" 2>&1 || { tail -n 20 "$art/rater.log" >&2; fail "rater"; }
events=$(psql -X -qtA -d "$db" -c "SELECT count(*) FROM gm.ledger")
[ "$events" -gt 0 ] || fail "the rater wrote no ledger rows (log: $art/rater.log)"
say "$events events rated"
# A fleet-wide cost card, for the finance view's unit economics (docs/api.md).
psql -X -q -d "$db" -c "INSERT INTO gm.cost_cards (site, version, valid_from, currency, gpu_hour_cost,
    reference_per_1m_output) VALUES ('*', 1, '2000-01-01 00:00+00', 'USD', 2.50, 0.60)" >/dev/null ||
    fail "cost card insert"
# A rater that stays up (same group: nothing left to rate) with its /metrics on a free port,
# for the operator view's ingest numbers (GET /v1/ops/ingest reads them through the API).
mport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$gm" rater --topic "$topic" --gpu-topic "" --group "$id" --db "dbname=$db" --metrics "127.0.0.1:$mport" \
    >"$art/rater-live.log" 2>&1 &
rater_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break
    kill -0 "$rater_pid" 2>/dev/null || { tail -n 20 "$art/rater-live.log" >&2; fail "the live rater exited"; }
    sleep 0.1
done

key() { "$gm" apikey create --db "dbname=$db" "$@" 2>>"$art/apikey.log" | grep -o 'gmk_[A-Za-z0-9_]*' | head -n1; }
export GM_E2E_CUSTOMER_KEY GM_E2E_OTHER_KEY GM_E2E_FINANCE_KEY GM_E2E_ADMIN_KEY GM_E2E_EMPTY_KEY
GM_E2E_EMPTY_KEY=$(key --role customer --tenant umbrella --name e2e-no-usage)
GM_E2E_CUSTOMER_KEY=$(key --role customer --tenant acme --name e2e-acme)
GM_E2E_OTHER_KEY=$(key --role customer --tenant globex --name e2e-globex)
GM_E2E_FINANCE_KEY=$(key --role finance --name e2e-finance)
GM_E2E_ADMIN_KEY=$(key --role admin --name e2e-admin)
[ -n "$GM_E2E_CUSTOMER_KEY" ] && [ -n "$GM_E2E_OTHER_KEY" ] && [ -n "$GM_E2E_FINANCE_KEY" ] &&
    [ -n "$GM_E2E_ADMIN_KEY" ] && [ -n "$GM_E2E_EMPTY_KEY" ] || fail "apikey create (log: $art/apikey.log)"

# From an empty directory: the dashboard's files come from the binary, not the source tree.
mkdir -p "$work/cwd"
(cd "$work/cwd" && exec "$gm" api --db "dbname=$db user=gm_api" --port 0 --rate-limit 0 \
    --rater-metrics "http://127.0.0.1:$mport/metrics") >"$work/api.out" 2>"$art/api.log" &
api_pid=$!
port=""
for _ in $(seq 1 100); do
    port=$(grep -o 'listening on [0-9.]*:[0-9]*' "$work/api.out" "$art/api.log" 2>/dev/null | head -n1 | sed 's/.*://' || true)
    [ -n "$port" ] && break
    kill -0 "$api_pid" 2>/dev/null || { cat "$art/api.log" >&2; fail "gridmeter api exited"; }
    sleep 0.1
done
[ -n "$port" ] || fail "gridmeter api did not say where it listens (log: $art/api.log)"
say "gridmeter api on 127.0.0.1:$port"

export GM_E2E_BASE="http://127.0.0.1:$port" GM_E2E_ARTIFACTS="$art" GM_CHROMIUM="$chromium"
export GM_E2E_TENANT=acme GM_E2E_OTHER_TENANT=globex GM_E2E_EMPTY_TENANT=umbrella GM_E2E_NODE_DIR="$node_dir"
node "$here/dashboard.test.mjs"
if [ -n "${GM_E2E_KEEP:-}" ]; then
    say "server kept at $GM_E2E_BASE/dashboard/ (customer key $GM_E2E_CUSTOMER_KEY); Ctrl-C ends"
    wait "$api_pid"
fi
