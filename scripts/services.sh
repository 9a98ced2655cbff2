#!/usr/bin/env bash
# Local services for development, tests and the demo: a private PostgreSQL cluster and a
# single-node KRaft Apache Kafka broker, both on 127.0.0.1 with their own ports, data and
# logs under .var/ (GRIDMETER_VAR). Production runs the same binaries against real servers
# through PGHOST/PGPORT/... and GRIDMETER_KAFKA_BROKERS instead.
#
#   scripts/services.sh start [pg|kafka]     start (and initialise on first use); waits until ready
#   scripts/services.sh stop [pg|kafka]      stop; leaves no process behind
#   scripts/services.sh restart [pg|kafka]
#   scripts/services.sh status               both servers; exit 0 only when both run
#   scripts/services.sh env                  `export …` lines for clients (eval "$(… env)")
#   scripts/services.sh reset                stop and delete all local data
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

PG_DATA=$GM_VAR/pg/data
PG_RUN=$GM_VAR/pg/run
PG_LOG=$GM_LOG_DIR/postgres.log
KAFKA_DIR=$GM_VAR/kafka
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_LOG=$GM_LOG_DIR/kafka.log

# PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || gm_die "postgresql: no 'postgres' user (is postgresql-15 installed? run scripts/setup.sh)"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_running() {
    local bindir
    bindir=$(gm_pg_bindir) || return 1
    [ -f "$PG_DATA/PG_VERSION" ] && as_pg "$bindir/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# The port of the running server (line 4 of postmaster.pid).
pg_running_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null; }

pg_start() {
    local bindir
    bindir=$(gm_pg_bindir) || gm_die "postgresql: server binaries not found under /usr/lib/postgresql (run scripts/setup.sh)"
    mkdir -p "$GM_LOG_DIR" "$GM_VAR/pg" "$PG_RUN"
    touch "$PG_LOG"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$GM_VAR/pg" "$PG_RUN" "$PG_LOG"; fi
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        gm_say "postgresql: initdb in $PG_DATA"
        as_pg "$bindir/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            >"$GM_VAR/pg/initdb.log" 2>&1 || { cat "$GM_VAR/pg/initdb.log" >&2; gm_die "postgresql: initdb failed (log: $GM_VAR/pg/initdb.log)"; }
        cat >>"$PG_DATA/postgresql.conf" <<CONF

# --- gridmeter local cluster (scripts/services.sh) ---
# address, port and socket folder are given at each start (GRIDMETER_PG_PORT may change)
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
CONF
    fi
    if pg_running; then
        local port
        port=$(pg_running_port)
        [ "$port" = "$GM_PG_PORT" ] \
            || gm_die "postgresql: already running on 127.0.0.1:$port, not on $GM_PG_PORT: stop it first (scripts/services.sh stop pg) to move it"
        gm_say "postgresql: already running on 127.0.0.1:$GM_PG_PORT"
    else
        if gm_port_open "$GM_PG_PORT"; then
            gm_die "postgresql: port $GM_PG_PORT is taken by another process (set GRIDMETER_PG_PORT)"
        fi
        gm_say "postgresql: starting on 127.0.0.1:$GM_PG_PORT"
        if ! as_pg "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $GM_PG_PORT -c unix_socket_directories=$PG_RUN" \
            start >/dev/null 2>&1; then
            tail -n 20 "$PG_LOG" >&2 || true
            gm_die "postgresql: did not start within 60 s (log: $PG_LOG)"
        fi
    fi
    local psql=("$bindir/psql" -h 127.0.0.1 -p "$GM_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
    if [ -z "$("${psql[@]}" -c "select 1 from pg_database where datname = '$GM_PG_DB'")" ]; then
        "${psql[@]}" -c "create database \"$GM_PG_DB\"" >/dev/null
        gm_say "postgresql: created database $GM_PG_DB"
    fi
    gm_say "postgresql: ready (log: $PG_LOG)"
}

pg_stop() {
    local bindir
    bindir=$(gm_pg_bindir) || return 0
    if pg_running; then
        gm_say "postgresql: stopping (fast)"
        as_pg "$bindir/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    fi
}

kafka_pid() {
    [ -f "$KAFKA_PID" ] || return 1
    local pid
    pid=$(cat "$KAFKA_PID")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

kafka_jvm=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j.configuration=file:$KAFKA_DIR/log4j.properties" -cp "$GM_KAFKA_LIB/*")
kafka_java() { "${kafka_jvm[@]}" "$@"; }

# server.properties is written at each start from the current settings (ports, data folder),
# so that a later GRIDMETER_KAFKA_PORT / GRIDMETER_KAFKA_CONTROLLER_PORT / GRIDMETER_VAR is
# honoured. What the data folder keeps (data/meta.properties: cluster id and node id) does not
# depend on them: node.id stays 1, and the single voter of the static controller quorum is
# named by that id, so a restart on other ports keeps the same cluster and its topics.
kafka_write_config() {
    cat >"$KAFKA_DIR/server.properties.tmp" <<CONF
# gridmeter local single-node KRaft broker: written by scripts/services.sh at each start
# (edit the script, not this file)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$GM_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$GM_KAFKA_PORT,CONTROLLER://127.0.0.1:$GM_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$GM_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=$GM_KAFKA_PARTITIONS
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# Raters may ask for short sessions (fast fail-over; the chaos tests use 2 s).
group.min.session.timeout.ms=1000
auto.create.topics.enable=true
log.retention.hours=168
CONF
    mv "$KAFKA_DIR/server.properties.tmp" "$KAFKA_DIR/server.properties"
    cat >"$KAFKA_DIR/log4j.properties" <<CONF
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
CONF
}

# The client port of the running broker: from the server.properties it was started with.
kafka_running_port() {
    sed -n 's/^listeners=PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$KAFKA_DIR/server.properties" 2>/dev/null
}

kafka_start() {
    command -v java >/dev/null || gm_die "kafka: java not found (run scripts/setup.sh)"
    ls "$GM_KAFKA_LIB"/kafka_2.13-*.jar >/dev/null 2>&1 || gm_fetch_kafka
    mkdir -p "$KAFKA_DIR/data" "$GM_LOG_DIR"
    local pid
    if pid=$(kafka_pid); then
        local port
        port=$(kafka_running_port)
        [ "$port" = "$GM_KAFKA_PORT" ] \
            || gm_die "kafka: already running on 127.0.0.1:$port (pid $pid), not on $GM_KAFKA_PORT: stop it first (scripts/services.sh stop kafka) to move it"
    else
        kafka_write_config
    fi
    if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
        local cluster_id
        cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        gm_say "kafka: formatting KRaft storage (cluster $cluster_id)"
        kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
            >"$KAFKA_DIR/format.log" 2>&1 || { cat "$KAFKA_DIR/format.log" >&2; gm_die "kafka: storage format failed (log: $KAFKA_DIR/format.log)"; }
    fi
    if pid=$(kafka_pid); then
        gm_say "kafka: already running on 127.0.0.1:$GM_KAFKA_PORT (pid $pid)"
    else
        for p in "$GM_KAFKA_PORT" "$GM_KAFKA_CONTROLLER_PORT"; do
            gm_port_open "$p" && gm_die "kafka: port $p is taken by another process (set GRIDMETER_KAFKA_PORT / GRIDMETER_KAFKA_CONTROLLER_PORT)"
        done
        gm_say "kafka: starting KRaft broker on 127.0.0.1:$GM_KAFKA_PORT"
        echo "--- start $(date -u +%FT%TZ)" >>"$KAFKA_LOG"
        setsid nohup "${kafka_jvm[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" \
            >>"$KAFKA_LOG" 2>&1 </dev/null &
        echo $! >"$KAFKA_PID"
        local waited=0
        until gm_port_open "$GM_KAFKA_PORT"; do
            if ! kafka_pid >/dev/null; then
                tail -n 30 "$KAFKA_LOG" >&2
                gm_die "kafka: the broker exited during start-up (log: $KAFKA_LOG)"
            fi
            ((waited++ < 120)) || gm_die "kafka: not listening after 60 s (log: $KAFKA_LOG)"
            sleep 0.5
        done
    fi
    local t
    for t in $GM_KAFKA_TOPICS; do
        kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$GM_KAFKA_PORT" \
            --create --if-not-exists --topic "$t" --partitions "$GM_KAFKA_PARTITIONS" --replication-factor 1 \
            >>"$KAFKA_DIR/topics.log" 2>&1 || { tail -n 20 "$KAFKA_DIR/topics.log" >&2; gm_die "kafka: could not create topic $t (log: $KAFKA_DIR/topics.log)"; }
    done
    gm_say "kafka: ready, topics: $GM_KAFKA_TOPICS ($GM_KAFKA_PARTITIONS partitions; log: $KAFKA_LOG)"
}

kafka_stop() {
    local pid
    pid=$(kafka_pid) || { rm -f "$KAFKA_PID"; return 0; }
    gm_say "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        gm_say "kafka: still running after 30 s, killing"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$KAFKA_PID"
}

status() {
    local rc=0 port pid
    if pg_running; then
        port=$(pg_running_port)
        echo "postgresql: running  127.0.0.1:$port  db=$GM_PG_DB  data=$PG_DATA  log=$PG_LOG"
        [ "$port" = "$GM_PG_PORT" ] || { echo "            (not on GRIDMETER_PG_PORT=$GM_PG_PORT)"; rc=3; }
    else
        echo "postgresql: stopped  (data=$PG_DATA  log=$PG_LOG)"
        rc=3
    fi
    if pid=$(kafka_pid); then
        port=$(kafka_running_port)
        if gm_port_open "$port"; then
            echo "kafka:      running  127.0.0.1:$port  pid=$pid  data=$KAFKA_DIR/data  log=$KAFKA_LOG"
            [ "$port" = "$GM_KAFKA_PORT" ] || { echo "            (not on GRIDMETER_KAFKA_PORT=$GM_KAFKA_PORT)"; rc=3; }
        else
            echo "kafka:      starting pid=$pid (not listening yet)  log=$KAFKA_LOG"
            rc=3
        fi
    else
        echo "kafka:      stopped  (data=$KAFKA_DIR/data  log=$KAFKA_LOG)"
        rc=3
    fi
    return $rc
}

cmd=${1:-status}
what=${2:-all}
case "$what" in pg | postgres | postgresql) what=pg ;; kafka | all) ;; *) gm_die "unknown service '$what' (pg, kafka)" ;; esac
case "$cmd" in
start)
    [ "$what" = kafka ] || pg_start
    [ "$what" = pg ] || kafka_start
    ;;
stop)
    [ "$what" = pg ] || kafka_stop
    [ "$what" = kafka ] || pg_stop
    ;;
restart)
    [ "$what" = pg ] || { kafka_stop; kafka_start; }
    [ "$what" = kafka ] || { pg_stop; pg_start; }
    ;;
status) status ;;
env) gm_client_env ;;
reset)
    kafka_stop
    pg_stop
    rm -rf "$GM_VAR"
    gm_say "local service data deleted ($GM_VAR)"
    ;;
*) gm_die "usage: services.sh start|stop|restart|status|env|reset [pg|kafka]" ;;
esac
