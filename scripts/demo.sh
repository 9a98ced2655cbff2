#!/usr/bin/env bash
# The main job, end to end on one machine: set-up, a Release build, the local PostgreSQL and
# Kafka, the schema, the sample rate cards, `gridmeter rater` in the background, and
# `gridmeter loadgen` simulating edge sites for a while; then per-tenant usage and charges
# from PostgreSQL, checked against the load generator's manifest, and the REST API with the
# customers' dashboard, with keys to sign in.
#
#   bash scripts/demo.sh [--duration 20s] [--rate 4000] [--sites 12] [--tenants 6]
#   bash scripts/demo.sh stop        # stop the demo's rater and API, and the local services
#
# The rater and the servers keep running afterwards, so that /metrics, the audit views and
# the logs can be looked at. Running it again adds another round of traffic: each run sends
# from its own sources (demo-<run id>/<site>/node-NNN) and checks only those against its
# manifest, so earlier runs' events (even ones dated later) are not counted.
# Ports: GRIDMETER_DEMO_API_PORT (8080), GRIDMETER_DEMO_METRICS_PORT (9464), and the local
# services' GRIDMETER_PG_PORT, GRIDMETER_KAFKA_PORT, … (docs/operations.md).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
cd "$GM_REPO"

duration=20s rate=4000 sites=12 tenants=6
demo=$GM_VAR/demo
rater_pid_file=$demo/rater.pid
api_pid_file=$demo/api.pid
metrics_addr=127.0.0.1:${GRIDMETER_DEMO_METRICS_PORT:-9464}
api_port=${GRIDMETER_DEMO_API_PORT:-8080}

stop_pid() { # pid file, name
    if [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; then
        kill -TERM "$(cat "$1")"
        for _ in $(seq 1 50); do kill -0 "$(cat "$1")" 2>/dev/null || break; sleep 0.2; done
        gm_say "$2 stopped"
    fi
    rm -f "$1"
}
stop_rater() { stop_pid "$rater_pid_file" rater; }

while (($#)); do
    case "$1" in
    stop)
        stop_pid "$api_pid_file" api
        stop_rater
        bash scripts/services.sh stop
        exit 0
        ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --sites) sites=$2; shift 2 ;;
    --tenants) tenants=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) gm_die "unknown argument '$1' (see --help)" ;;
    esac
done

gm_say "1/8 set-up (packages, Kafka broker)"
bash scripts/setup.sh

gm_say "2/8 build (Release)"
build=$GM_REPO/build/release
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$build/cmake.log" 2>&1 || { cat "$build/cmake.log"; gm_die "cmake failed"; }
cmake --build "$build" -j"$(nproc)" --target gridmeter >"$build/build.log" 2>&1 || { tail -n 40 "$build/build.log"; gm_die "build failed (log: $build/build.log)"; }
gm=$build/cli/gridmeter

gm_say "3/8 services"
bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"

gm_say "4/8 schema and rate cards"
"$gm" migrate
"$gm" ratecard import examples/ratecards/list-usd-v1.json examples/ratecards/list-usd-v2.json \
    examples/ratecards/contract-acme.json

gm_say "5/8 rater (background; log $GM_LOG_DIR/rater.log, metrics http://$metrics_addr/metrics)"
mkdir -p "$demo" "$GM_LOG_DIR"
stop_rater
nohup "$gm" rater --metrics "$metrics_addr" >>"$GM_LOG_DIR/rater.log" 2>&1 </dev/null &
echo $! >"$rater_pid_file"
sleep 1
kill -0 "$(cat "$rater_pid_file")" 2>/dev/null || { tail -n 20 "$GM_LOG_DIR/rater.log"; gm_die "the rater exited (log: $GM_LOG_DIR/rater.log)"; }

# This run's id: its sources are demo-<run id>/<site>/node-NNN, and the check below counts
# only them (a time filter would count events of earlier runs dated after this run's start,
# e.g. from a node whose clock is ahead).
run_id=$(date -u +%Y%m%dT%H%M%SZ)-$$
prefix=demo-$run_id
gm_say "6/8 loadgen: $sites sites x 3 nodes, $tenants tenants, $rate events/s for $duration (run $run_id)"
# One spool for every demo run: what an interrupted run left unsent goes with the next one.
"$gm" loadgen --sites "$sites" --nodes-per-site 3 --tenants "$tenants" --models 6 \
    --rate "$rate" --duration "$duration" --duplicates 0.02 --malformed 0.005 \
    --source-prefix "$prefix" --spool-dir "$demo/spool" --manifest "$demo/manifest.json" \
    --seed "$(date +%s)"
this_run="source LIKE '$prefix/%'"

expected=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["valid_distinct"])' "$demo/manifest.json")
gm_say "waiting for the rater to commit the run's $expected events"
psql_q() { psql -X -qtA -v ON_ERROR_STOP=1 -c "$1"; }
t0=$SECONDS progress=0
while :; do
    got=$(psql_q "SELECT count(*) FROM audit.usage_events WHERE $this_run")
    [ "$got" -ge "$expected" ] && break
    if ((SECONDS - t0 >= 120)); then
        ((progress)) && echo >&2
        gm_die "the rater committed $got of $expected events in 120 s (log: $GM_LOG_DIR/rater.log)"
    fi
    printf '\r  %s / %s events committed' "$got" "$expected" >&2
    progress=1
    sleep 1
done
# the progress line ends here, so that the next line starts on its own
((progress)) && printf '\r  %s / %s events committed\n' "$got" "$expected" >&2

gm_say "7/8 report"
echo
echo "Usage and exact charges of this run ($run_id), per tenant (from audit.usage_events):"
psql -X -P pager=off -v ON_ERROR_STOP=1 -c "
SELECT tenant,
       count(*)                                  AS events,
       sum(input_tokens)                         AS input_tokens,
       sum(cached_tokens)                        AS cached_tokens,
       sum(output_tokens)                        AS output_tokens,
       round(sum(gpu_us) / 1e6, 3)               AS gpu_seconds,
       currency,
       round(sum(amount), 6)                     AS amount_6dp,
       bool_or(tenant_unknown)                   AS default_card
FROM audit.usage_events WHERE $this_run
GROUP BY tenant, currency ORDER BY tenant"

# The ledger against the manifest, tenant by tenant.
psql_q "SELECT tenant, count(*), sum(input_tokens), sum(cached_tokens), sum(output_tokens), sum(gpu_us)
        FROM audit.usage_events WHERE $this_run GROUP BY tenant ORDER BY tenant" >"$demo/ledger.txt"
python3 - "$demo/manifest.json" "$demo/ledger.txt" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
ledger = {}
for line in open(sys.argv[2]):
    if line.strip():
        t, n, i, c, o, g = line.strip().split("|")
        ledger[t] = {"events": int(n), "input_tokens": int(i), "cached_tokens": int(c),
                     "output_tokens": int(o), "gpu_us": int(g)}
bad = 0
for tenant, tot in m["by_tenant"].items():
    got = ledger.get(tenant, {})
    for k in ("events", "input_tokens", "cached_tokens", "output_tokens", "gpu_us"):
        if got.get(k, 0) != tot[k]:
            bad += 1
            print(f"  MISMATCH {tenant} {k}: ledger {got.get(k, 0)}, manifest {tot[k]}")
extra = set(ledger) - set(m["by_tenant"])
for t in extra:
    bad += 1
    print(f"  MISMATCH tenant {t} in the ledger, not in the manifest")
print(f"Ledger vs loadgen manifest: {'exact match' if bad == 0 else f'{bad} differences'} "
      f"({m['valid_distinct']} valid distinct events, {m['duplicates_sent']} duplicate re-sends "
      f"dropped, {m['malformed_sent']} malformed messages kept with their reason)")
sys.exit(1 if bad else 0)
PY
echo
echo "Reconciliation (audit.reconciliation, difference must be 0):"
psql -X -P pager=off -c "SELECT tenant, period_start::date, currency, events, round(ledger_amount, 6) AS ledger_amount, round(charged_amount, 6) AS charged_amount, difference FROM audit.reconciliation ORDER BY 1, 2"
echo "Rejected messages so far: $(psql_q 'SELECT count(*) FROM audit.rejected_events'); the latest reasons:"
psql -X -P pager=off -c "SELECT kafka_partition AS p, kafka_offset AS offset, left(reason, 100) AS reason FROM audit.rejected_events ORDER BY received_at DESC LIMIT 5"

gm_say "8/8 REST API and dashboard (log $GM_LOG_DIR/api.log)"
stop_pid "$api_pid_file" api
nohup "$gm" api --db "user=gm_api" --port "$api_port" --rater-metrics "http://$metrics_addr/metrics" >>"$GM_LOG_DIR/api.log" 2>&1 </dev/null &
echo $! >"$api_pid_file"
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null || { tail -n 20 "$GM_LOG_DIR/api.log"; gm_die "the API did not start (log: $GM_LOG_DIR/api.log)"; }
key_of() { "$gm" apikey create "$@" 2>/dev/null | awk '$1 == "key" {print $2}'; }
customer_key=$(key_of --role customer --tenant acme --name "demo customer")
finance_key=$(key_of --role finance --name "demo finance")
[ -n "$customer_key" ] && [ -n "$finance_key" ] || gm_die "could not create the demo API keys"

cat <<NEXT

Dashboard       http://127.0.0.1:$api_port/dashboard/
                sign in as customer acme:  $customer_key
                or as finance:             $finance_key
                (demo keys, shown once; \`gridmeter apikey revoke KEY_ID\` disables one)
REST API        curl -H "Authorization: Bearer $customer_key" http://127.0.0.1:$api_port/v1/tenants/acme/spend
                http://127.0.0.1:$api_port/v1/openapi.json   (docs/api.md)

Where to look next:
  metrics        curl -s http://$metrics_addr/metrics | grep gridmeter_
  auditors       psql "host=127.0.0.1 port=$GM_PG_PORT dbname=$GM_PG_DB user=gm_auditor"   (docs/auditors.md)
                 e.g. SELECT * FROM audit.usage_hourly ORDER BY hour DESC LIMIT 10;
                      SELECT * FROM audit.source_gaps;
  logs           $GM_LOG_DIR/rater.log, $GM_LOG_DIR/postgres.log, $GM_LOG_DIR/kafka.log
  manifest       $demo/manifest.json
  a quote        $gm quote --rate-card examples/ratecards/list-usd-v1.json < examples/ratecards/usage-sample.jsonl
  stop it all    bash scripts/demo.sh stop
NEXT
