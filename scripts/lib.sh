# Shared by the scripts: paths, ports and the environment the binaries and tests read.
# Sourced, not run. Every setting has an environment override (docs/operations.md).
GM_REPO=${GM_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
GM_VAR=${GRIDMETER_VAR:-$GM_REPO/.var}            # data and logs of the local services
GM_CACHE=${GRIDMETER_CACHE:-$GM_REPO/.cache}      # downloaded Kafka broker
GM_LOG_DIR=$GM_VAR/log
GM_PG_PORT=${GRIDMETER_PG_PORT:-55432}
GM_PG_DB=${GRIDMETER_PG_DB:-gridmeter}
GM_KAFKA_PORT=${GRIDMETER_KAFKA_PORT:-59092}
GM_KAFKA_CONTROLLER_PORT=${GRIDMETER_KAFKA_CONTROLLER_PORT:-59093}
GM_KAFKA_PARTITIONS=${GRIDMETER_KAFKA_PARTITIONS:-6}
GM_KAFKA_TOPICS=${GRIDMETER_KAFKA_TOPICS:-gridmeter.usage.v1 gridmeter.gpu.v1}
GM_KAFKA_LIB=$GM_CACHE/kafka/lib

gm_say() { printf '[gridmeter %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
gm_die() { printf '[gridmeter %s] error: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# The PostgreSQL server binaries: the newest installed major version.
gm_pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] || return 1
    echo "$d"
}

# Fetches kafka_2.13 (+ kafka-tools, + slf4j-reload4j) with Maven into $GM_KAFKA_LIB, once
# per version of scripts/kafka/pom.xml.
gm_fetch_kafka() {
    local pom=$GM_REPO/scripts/kafka/pom.xml stamp
    stamp=$(sha256sum "$pom" | cut -c1-16)
    if [ -f "$GM_KAFKA_LIB/.stamp" ] && [ "$(cat "$GM_KAFKA_LIB/.stamp")" = "$stamp" ]; then
        gm_say "Kafka broker: cached in $GM_KAFKA_LIB"
        return 0
    fi
    command -v mvn >/dev/null || gm_die "mvn not found: run scripts/setup.sh as root first"
    gm_say "Kafka broker: resolving org.apache.kafka:kafka_2.13 from Maven Central"
    local t0=$SECONDS tmp=$GM_KAFKA_LIB.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp" "$GM_CACHE"
    mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$GM_CACHE/mvn.log" 2>&1 \
        || { tail -n 30 "$GM_CACHE/mvn.log" >&2; gm_die "Maven could not fetch Kafka (log: $GM_CACHE/mvn.log)"; }
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || gm_die "Maven ran but no kafka_2.13 jar arrived in $tmp"
    echo "$stamp" >"$tmp/.stamp"
    rm -rf "$GM_KAFKA_LIB"
    mv "$tmp" "$GM_KAFKA_LIB"
    gm_say "Kafka broker: $(ls "$GM_KAFKA_LIB" | wc -l) jars in $((SECONDS - t0)) s"
}

# The client environment for the local services (what `services.sh env` prints).
gm_client_env() {
    cat <<ENV
export PGHOST=127.0.0.1
export PGPORT=$GM_PG_PORT
export PGUSER=postgres
export PGDATABASE=$GM_PG_DB
export GRIDMETER_KAFKA_BROKERS=127.0.0.1:$GM_KAFKA_PORT
ENV
}

gm_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
