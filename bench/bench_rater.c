/* Rater benchmark: end-to-end events/s from Kafka to committed ledger rows and charges, and
 * produce-to-commit latency at half that rate, beside the ceiling measured in the same run:
 * binary COPY of the same rows into an unindexed table on the same server.
 *
 *   bench_rater [events=300000] [partitions=6] [batch=10000]
 * GM_BENCH_ROLLUP=off drops the daily-rollup triggers on gm.charges (sql/0008) first: the
 * rater as it was before them, for the before/after comparison of bench/rollup_cost.sh;
 * GM_BENCH_SPEND=off drops the month-spend and budget triggers of sql/0009 likewise.
 * Needs the local services (eval "$(scripts/services.sh env)") and a Release build. Creates
 * and drops its own database and topic. Prints a table and writes bench_rater.csv (latency
 * percentiles) into the current directory. */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rater.h"

#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_rater: %s: %s\n", what, err);
    exit(1);
}

static PGconn *connect_db(const char *db)
{
    char err[512], ci[256];
    snprintf(ci, sizeof ci, "dbname=%s", db);
    PGconn *c = gm_pg_connect(ci, "bench_rater", err, sizeof err);
    if (!c)
        die("connect", err);
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    char err[1024];
    if (gm_pg_exec(c, sql, err, sizeof err))
        die(sql, err);
}

static double value_d(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    double v = PQgetisnull(r, 0, 0) ? 0 : atof(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static const char *const models[] = {"llama-3.1-70b-instruct", "llama-3.1-8b-instruct",
                                     "deepseek-v3", "qwen2.5-72b-instruct"};
static const char *const sites[] = {"fra1", "ams1", "tro1", "core-fra", "sin1", "lhr1"};
static const char *const tenants[] = {"acme", "globex", "initech", "umbrella", "newco"};
#define N_SOURCES 200

static uint64_t seqs[N_SOURCES];

static void make_event(gm_event *ev, int64_t time_us)
{
    int k = (int)(rnd() % N_SOURCES);
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/%s/node-%03d", sites[k % 6], k);
    ev->seq = ++seqs[k];
    snprintf(ev->id, sizeof ev->id, "n%03d-%012llu", k, (unsigned long long)ev->seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenants[k % 5]);
    snprintf(ev->site, sizeof ev->site, "%s", sites[k % 6]);
    snprintf(ev->model, sizeof ev->model, "%s", models[rnd() % 4]);
    ev->time_us = time_us;
    ev->input_tokens = (int64_t)(rnd() % 4000);
    ev->cached_tokens = (int64_t)(rnd() % 2000);
    ev->output_tokens = (int64_t)(rnd() % 1000);
    ev->gpu_us = (int64_t)(rnd() % 200000);
}

static rd_kafka_t *producer(const char *brokers)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err);
    rd_kafka_conf_set(conf, "compression.codec", "lz4", err, sizeof err);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!p)
        die("producer", err);
    return p;
}

static void produce(rd_kafka_t *p, const char *topic, const gm_event *ev)
{
    char buf[GM_EVENT_MAX_BYTES + 1];
    size_t len = gm_event_encode(ev, buf, sizeof buf);
    while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_KEY(ev->source, strlen(ev->source)),
                             RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(p, 10);
    rd_kafka_poll(p, 0);
}

/* ---- The ceiling: binary COPY of ledger-shaped rows into an unindexed table ------------ */
typedef struct {
    char *p;
    size_t n, cap;
} buf_t;
static void put(buf_t *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->cap + n) * 2;
        b->p = gm_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put16(buf_t *b, uint16_t v)
{
    v = htons(v);
    put(b, &v, 2);
}
static void put32(buf_t *b, uint32_t v)
{
    v = htonl(v);
    put(b, &v, 4);
}
static void put64(buf_t *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}
static void put_text(buf_t *b, const char *s)
{
    put32(b, (uint32_t)strlen(s));
    put(b, s, strlen(s));
}
static void put_int8(buf_t *b, int64_t v)
{
    put32(b, 8);
    put64(b, (uint64_t)v);
}
/* numeric in binary: base-10000 digits, weight, sign, dscale. */
static void put_numeric(buf_t *b, gm_i128 v, int scale)
{
    unsigned __int128 u = v < 0 ? (unsigned __int128)(-v) : (unsigned __int128)v;
    /* Align the fraction to a multiple of 4 digits. */
    int pad = (4 - scale % 4) % 4;
    for (int i = 0; i < pad; i++)
        u *= 10;
    uint16_t d[16];
    int n = 0;
    while (u) {
        d[n++] = (uint16_t)(u % 10000);
        u /= 10000;
    }
    int frac_groups = (scale + pad) / 4;
    int weight = n - frac_groups - 1;
    /* Strip trailing zero groups. */
    int lo = 0;
    while (lo < n && d[lo] == 0)
        lo++;
    int ndigits = n - lo;
    put32(b, (uint32_t)(8 + 2 * ndigits));
    put16(b, (uint16_t)ndigits);
    put16(b, (uint16_t)(int16_t)(ndigits ? weight : 0));
    put16(b, v < 0 ? 0x4000 : 0);
    put16(b, (uint16_t)scale);
    for (int i = n - 1; i >= lo; i--)
        put16(b, d[i]);
}
static void put_ts(buf_t *b, int64_t us)
{
    put_int8(b, us - INT64_C(946684800000000)); /* PostgreSQL epoch 2000-01-01 */
}

/* Binary COPY of `rows` ledger-shaped rows into `table` (created as an unindexed copy of
 * gm.ledger when it is "bench_copy"), 5,000 rows a transaction; rows/s. */
static double copy_rate(PGconn *c, int64_t rows, const char *table)
{
    bool scratch = !strcmp(table, "bench_copy");
    if (scratch)
        exec_ok(c, "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE gm.ledger)");
    buf_t b = {0};
    const char sig[] = "PGCOPY\n\377\r\n";
    int64_t t0 = gm_mono_us();
    int64_t done = 0;
    while (done < rows) {
        b.n = 0;
        put(&b, sig, 11);
        put32(&b, 0);
        put32(&b, 0);
        int64_t batch = rows - done < 5000 ? rows - done : 5000;
        for (int64_t i = 0; i < batch; i++) {
            gm_event ev;
            make_event(&ev, INT64_C(1795816800000000) + done + i);
            put16(&b, 31); /* every column of gm.ledger, as the rater writes them */
            put_text(&b, ev.tenant);
            put_ts(&b, ev.time_us);
            put_text(&b, ev.source);
            put_text(&b, ev.id);
            put_int8(&b, (int64_t)ev.seq);
            put_text(&b, ev.site);
            put_text(&b, ev.model);
            put32(&b, 0xffffffffu); /* request_id NULL */
            put_int8(&b, ev.input_tokens);
            put_int8(&b, ev.cached_tokens);
            put_int8(&b, ev.output_tokens);
            put_int8(&b, ev.gpu_us);
            put_text(&b, "metro");
            put_text(&b, "list-usd");
            put32(&b, 4);
            put32(&b, 1);
            put_text(&b, "USD");
            for (int d = 0; d < 4; d++)
                put_numeric(&b, (gm_i128)ev.input_tokens * 600000000000LL, 18);
            put32(&b, 2);
            put16(&b, 0);
            put_text(&b, "gridmeter.usage.v1");
            put32(&b, 4);
            put32(&b, 0);
            put_int8(&b, done + i);
            put_ts(&b, gm_now_us());
            put_int8(&b, 0); /* sql/0009: reasoning_tokens, cache_write_tokens, service_tier */
            put_int8(&b, 0);
            put_text(&b, "standard");
            for (int d = 0; d < 3; d++) /* amount_cache_write, _reasoning, _request */
                put_numeric(&b, 0, 18);
        }
        put16(&b, 0xffff);
        exec_ok(c, "BEGIN");
        char copy_sql[128];
        snprintf(copy_sql, sizeof copy_sql, "COPY %s FROM STDIN (FORMAT binary)", table);
        PGresult *r = PQexec(c, copy_sql);
        if (PQresultStatus(r) != PGRES_COPY_IN)
            die("COPY binary", PQerrorMessage(c));
        PQclear(r);
        PQputCopyData(c, b.p, (int)b.n);
        PQputCopyEnd(c, NULL);
        while ((r = PQgetResult(c))) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                die("COPY binary", PQresultErrorMessage(r));
            PQclear(r);
        }
        exec_ok(c, "COMMIT");
        done += batch;
    }
    double secs = (double)(gm_mono_us() - t0) / 1e6;
    char count_sql[128];
    snprintf(count_sql, sizeof count_sql, "SELECT count(*) FROM %s", table);
    double n = value_d(c, count_sql);
    if ((int64_t)n != rows)
        die("COPY baseline", "row count differs");
    free(b.p);
    snprintf(count_sql, sizeof count_sql, "%s %s", scratch ? "DROP TABLE" : "TRUNCATE", table);
    exec_ok(c, count_sql);
    return (double)rows / secs;
}

/* ---- The rater, in a thread ------------------------------------------------------------- */
static volatile sig_atomic_t stop_rater;
typedef struct {
    gm_rater_config cfg;
    int rc;
    char err[1024];
} rater_job;

static void *rater_thread(void *arg)
{
    rater_job *j = arg;
    j->rc = gm_rater_run(&j->cfg, &stop_rater, j->err, sizeof j->err);
    return NULL;
}

static void wait_for(PGconn *c, int64_t messages, const char *phase)
{
    int64_t t0 = gm_mono_us(), last = -1;
    for (;;) {
        int64_t got = (int64_t)value_d(c, "SELECT coalesce(sum(messages), 0) FROM gm.batches");
        if (got != last && isatty(2)) {
            double el = (double)(gm_mono_us() - t0) / 1e6;
            fprintf(stderr, "\r  %s: %lld / %lld committed, %.0f/s, %.0f s", phase, (long long)got,
                    (long long)messages, el > 0 ? (double)got / el : 0.0, el);
        }
        last = got;
        if (got >= messages)
            break;
        usleep(200000);
    }
    if (isatty(2))
        fputc('\n', stderr);
}

int main(int argc, char **argv)
{
    int64_t n_events = argc > 1 ? atoll(argv[1]) : 300000;
    int partitions = argc > 2 ? atoi(argv[2]) : 6;
    int batch = argc > 3 ? atoi(argv[3]) : 10000;
    const char *brokers = getenv("GRIDMETER_KAFKA_BROKERS");
    if (!brokers)
        die("environment",
            "GRIDMETER_KAFKA_BROKERS is not set (eval \"$(scripts/services.sh env)\")");
    if (!getenv("GRIDMETER_LOG_LEVEL"))
        gm_log_set_level(GM_LOG_WARN);
    char db[64], topic[64], err[1024];
    snprintf(db, sizeof db, "gmbench_rater_%d", (int)getpid());
    snprintf(topic, sizeof topic, "gmbench.rater.%d", (int)getpid());
    PGconn *admin = connect_db("postgres");
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    exec_ok(admin, sql);
    PGconn *c = connect_db(db);
    if (gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count, GM_MIGRATE_APPLY,
                          NULL, err, sizeof err))
        die("migrate", err);
    FILE *f = fopen(GM_SOURCE_DIR "/examples/ratecards/list-usd-v1.json", "r");
    if (!f)
        die("rate card", GM_SOURCE_DIR "/examples/ratecards/list-usd-v1.json");
    static char card[65536];
    size_t card_len = fread(card, 1, sizeof card, f);
    fclose(f);
    char msg[256];
    if (gm_ledger_import(c, card, card_len, msg, sizeof msg, err, sizeof err))
        die("import", err);
    const char *rollup = getenv("GM_BENCH_ROLLUP");
    bool rollup_off = rollup && !strcmp(rollup, "off");
    if (rollup_off)
        exec_ok(c, "DROP TRIGGER charges_rollup_ins ON gm.charges;"
                   " DROP TRIGGER charges_rollup_upd ON gm.charges");
    printf("bench_rater: daily rollup triggers on gm.charges: %s\n", rollup_off ? "off" : "on");
    /* GM_BENCH_SPEND=off drops the month-spend and budget triggers (sql/0009) the same way. */
    const char *spend = getenv("GM_BENCH_SPEND");
    bool spend_off = spend && !strcmp(spend, "off");
    if (spend_off)
        exec_ok(c, "DROP TRIGGER charges_spend_ins ON gm.charges;"
                   " DROP TRIGGER charges_spend_upd ON gm.charges");
    printf("bench_rater: month-spend triggers on gm.charges: %s\n", spend_off ? "off" : "on");

    printf("bench_rater: %lld events, %d partitions, batch %d, PostgreSQL %d, 2-core host\n",
           (long long)n_events, partitions, batch, PQserverVersion(c));
    /* 1. Ceiling. */
    double ceiling = copy_rate(c, n_events, "bench_copy");
    printf("  ceiling: binary COPY into an unindexed table   %10.0f rows/s\n", ceiling);
    double into_ledger = copy_rate(c, n_events, "gm.ledger");
    printf("  binary COPY into gm.ledger (partitioned, 2 indexes) %5.0f rows/s  (%.2f of the "
           "ceiling)\n",
           into_ledger, into_ledger / ceiling);

    /* 2. Throughput: the topic holds every event before the rater starts. */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "java -cp '%s/.cache/kafka/lib/*' "
             "org.apache.kafka.tools.TopicCommand --bootstrap-server %s --create --topic %s "
             "--partitions %d --replication-factor 1 >/dev/null 2>&1",
             GM_SOURCE_DIR, brokers, topic, partitions);
    if (system(cmd) != 0)
        die("topic", cmd);
    rd_kafka_t *p = producer(brokers);
    int64_t t0 = gm_mono_us();
    for (int64_t i = 0; i < n_events; i++) {
        gm_event ev;
        make_event(&ev, INT64_C(1795816800000000) + i);
        produce(p, topic, &ev);
    }
    rd_kafka_flush(p, 120000);
    printf("  produced %lld events in %.1f s\n", (long long)n_events,
           (double)(gm_mono_us() - t0) / 1e6);
    rater_job job;
    gm_rater_config_init(&job.cfg);
    char ci[128];
    snprintf(ci, sizeof ci, "dbname=%s", db);
    job.cfg.brokers = brokers;
    job.cfg.topic = topic;
    job.cfg.group_id = "bench";
    job.cfg.db_conninfo = ci;
    job.cfg.batch_max = batch;
    job.cfg.metrics_addr = "";
    pthread_t th;
    stop_rater = 0;
    pthread_create(&th, NULL, rater_thread, &job);
    wait_for(c, n_events, "throughput");
    /* Rate between the first and the last commit (start-up and group join excluded). */
    double span = value_d(c, "SELECT extract(epoch FROM max(committed_at) - min(committed_at))"
                             " FROM gm.batches");
    double first = value_d(c, "SELECT messages FROM gm.batches ORDER BY batch_id LIMIT 1");
    double rate = span > 0 ? ((double)n_events - first) / span : 0;
    printf("  end to end: Kafka -> ledger + charges      %10.0f events/s  (%.2f of the ceiling)\n",
           rate, rate / ceiling);

    /* 3. Latency at half that rate, for ~10 s. */
    double half = rate / 2;
    int64_t n_lat = (int64_t)(half * 10);
    exec_ok(c,
            "CREATE TABLE bench_mark AS SELECT coalesce(max(batch_id), 0) AS last FROM gm.batches");
    int64_t start = gm_mono_us();
    for (int64_t i = 0; i < n_lat; i++) {
        int64_t due = start + (int64_t)((double)i / half * 1e6);
        int64_t now = gm_mono_us();
        if (due > now)
            usleep((useconds_t)(due - now));
        gm_event ev;
        make_event(&ev, gm_now_us());
        produce(p, topic, &ev);
    }
    rd_kafka_flush(p, 60000);
    wait_for(c, n_events + n_lat, "latency");
    PGresult *r = PQexec(
        c,
        "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms), max(ms),"
        " round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),"
        " round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))"
        " FROM (SELECT extract(epoch FROM b.committed_at - l.event_time) * 1000 AS ms"
        " FROM gm.ledger l JOIN gm.batches b ON l.xmin = b.xmin"
        " WHERE b.batch_id > (SELECT last FROM bench_mark)) x");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("latency query", PQerrorMessage(c));
    printf("  latency produce -> commit at %.0f events/s (%lld events):\n", half, (long long)n_lat);
    printf("    p50, p90, p99, p99.9 = %s ms; max %s ms\n", PQgetvalue(r, 0, 0),
           PQgetvalue(r, 0, 1));
    /* One machine-readable line for bench/rater_sweep.sh. */
    printf("RESULT batch=%d ceiling=%.0f ledger_copy=%.0f end_to_end=%.0f p50_ms=%s p99_ms=%s\n",
           batch, ceiling, into_ledger, rate, PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
    PQclear(r);
    FILE *csv = fopen("bench_rater.csv", "w");
    if (csv) {
        fprintf(csv,
                "metric,value\nceiling_rows_per_s,%.0f\nend_to_end_events_per_s,%.0f\n"
                "ratio,%.3f\n",
                ceiling, rate, rate / ceiling);
        fclose(csv);
    }
    stop_rater = 1;
    pthread_join(th, NULL);
    if (job.rc)
        die("rater", job.err);
    rd_kafka_destroy(p);
    PQfinish(c);
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db);
    exec_ok(admin, sql);
    PQfinish(admin);
    return 0;
}
