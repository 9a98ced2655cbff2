/* Rater benchmark: end-to-end events/s from Kafka to committed ledger rows and charges, and
 * produce-to-commit latency at half that rate, beside the ceiling measured in the same run:
 * binary COPY of the events' contract fields (source, id, seq, time, tenant, site, model,
 * request_id and the four quantities) into an unindexed table on the same server. Also: the
 * ledger's bytes per event on disk with every index, the throughput curve as the ledger grows
 * (bench_rater_growth.csv, drawn by bench/ledger_growth.sh), and the p99 of an auditor's two
 * point queries (one event by source and id; one tenant's hour) on the ledger just written.
 *
 *   bench_rater [events=300000] [partitions=6] [batch=10000]
 * GM_BENCH_BATCH_MS=N runs the rater with --batch-ms N (default 200).
 * GM_BENCH_ROLLUP=off drops the daily-rollup triggers on gm.charges (sql/0008) first: the
 * rater as it was before them, for the before/after comparison of bench/rollup_cost.sh.
 * GM_BENCH_RESEND_PERMILLE=n (default 0): in the throughput phase, n of every 1000 events are
 * also sent a second time, byte for byte (a re-send of one of the last 4096 events): the
 * duplicate path (each re-send compared with the accepted event, issue 12).
 * GM_BENCH_CHAIN=off skips the batch digests (ledger/chain.c), for bench/chain_cost.sh; with
 * them on, the time spent recording them is printed as a share of the rater's time.
 * GM_BENCH_SPEND=off drops the month-spend and budget triggers of sql/0009 likewise.
 * GM_BENCH_PIPELINE=0|1 runs the rater with --pipeline 0 (sequential) or 1 (default: the
 * next batch prepared while the current one commits); bench/pipeline_ab.sh alternates both
 * in one session. GM_BENCH_BATCH_IDLE_MS=N sets --batch-idle-ms (default 5).
 * Needs the local services (eval "$(scripts/services.sh env)") and a Release build. Creates
 * and drops its own database and topic. Prints a table and writes bench_rater.csv (latency
 * percentiles) into the current directory. */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rater.h"
#include "rater_int.h" /* the rater's counters: pipelined batches, time preparing and committing */

#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The 1, 5 and 15 minute load averages ("?" where /proc/loadavg is missing). */
static const char *load_average(void)
{
    static char buf[64];
    char a[16] = "?", b[16] = "", c[16] = "";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%15s %15s %15s", a, b, c) != 3)
            snprintf(a, sizeof a, "?");
        fclose(f);
    }
    snprintf(buf, sizeof buf, "%s %s %s", a, b, c);
    return buf;
}

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
/* Throughput events are this far apart in event time: an hour holds 72,000 of them. */
#define EVENT_SPACING_US 50000

static uint64_t seqs[N_SOURCES];
static uint64_t seq_lo[N_SOURCES]; /* the last seq of each source before the rater's events */

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
static void put_ts(buf_t *b, int64_t us)
{
    put_int8(b, us - INT64_C(946684800000000)); /* PostgreSQL epoch 2000-01-01 */
}

/* Binary COPY of `rows` rows, 5,000 a transaction; rows/s. Two shapes:
 *   "bench_copy": the events' contract fields into an unindexed scratch table (the ceiling);
 *   "gm.ledger_rows": compact rows as the rater writes them (sql/0012), into the real,
 *   partitioned and indexed storage (ids are made up: the table has no foreign keys). */
static double copy_rate(PGconn *c, int64_t rows, const char *table)
{
    bool scratch = !strcmp(table, "bench_copy");
    if (scratch)
        exec_ok(c, "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (source text,"
                   " id text, seq bigint, time timestamptz, tenant text, site text, model text,"
                   " request_id text, input_tokens bigint, cached_tokens bigint,"
                   " output_tokens bigint, gpu_us bigint)");
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
        int64_t t_ingested = gm_now_us();
        for (int64_t i = 0; i < batch; i++) {
            gm_event ev;
            make_event(&ev, INT64_C(1795816800000000) + (done + i) * EVENT_SPACING_US);
            if (scratch) {
                put16(&b, 12);
                put_text(&b, ev.source);
                put_text(&b, ev.id);
                put_int8(&b, (int64_t)ev.seq);
                put_ts(&b, ev.time_us);
                put_text(&b, ev.tenant);
                put_text(&b, ev.site);
                put_text(&b, ev.model);
                put32(&b, 0xffffffffu); /* request_id NULL */
            } else {
                put16(&b, 16);
                put_ts(&b, ev.time_us);
                put_int8(&b, (int64_t)ev.seq);
                put_int8(&b, done + i);
            }
            put_int8(&b, ev.input_tokens);
            put_int8(&b, ev.cached_tokens);
            put_int8(&b, ev.output_tokens);
            put_int8(&b, ev.gpu_us);
            if (!scratch) {
                put_ts(&b, t_ingested);
                int k = atoi(ev.source + strlen(ev.source) - 3); /* node-NNN */
                int32_t ids[6] = {1000 + k, 1 + k % 5, 10 + k % 6, 20 + (int)(ev.input_tokens % 4),
                                  1,        1 + k % 6};
                for (int j = 0; j < 6; j++) {
                    put32(&b, 4);
                    put32(&b, (uint32_t)ids[j]);
                }
                put_text(&b, ev.id);
                put_text(&b, "");
            }
        }
        put16(&b, 0xffff);
        exec_ok(c, "BEGIN");
        char copy_sql[256];
        if (scratch)
            snprintf(copy_sql, sizeof copy_sql, "COPY bench_copy FROM STDIN (FORMAT binary)");
        else
            snprintf(copy_sql, sizeof copy_sql,
                     "COPY gm.ledger_rows (event_time, seq, kafka_offset, input_tokens,"
                     " cached_tokens, output_tokens, gpu_us, ingested_at, source_id, tenant_id,"
                     " site_id,"
                     " model_id, pricing_id, stream_id, event_id, request_id)"
                     " FROM STDIN (FORMAT binary)");
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

/* The ledger's bytes on disk: every partition of gm.ledger_rows with its indexes, TOAST,
 * free space and visibility maps, and the id tables it refers to. */
static double ledger_bytes(PGconn *c)
{
    return value_d(c, "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                      " WHERE inhparent = 'gm.ledger_rows'::regclass") +
           value_d(c, "SELECT pg_total_relation_size('gm.ledger_names')"
                      " + pg_total_relation_size('gm.ledger_streams')"
                      " + pg_total_relation_size('gm.ledger_pricings')");
}

/* p50 and p99 in ms of `n` runs of an auditor's query with one or two parameters. */
static void query_latency(PGconn *c, const char *sql, int n, int64_t n_events, bool by_id,
                          double *p50, double *p99)
{
    double *ms = gm_xmalloc((size_t)n * sizeof *ms);
    for (int i = 0; i < n; i++) {
        char a[96], t[64];
        const char *params[2] = {a, t};
        if (by_id) {
            int k = (int)(rnd() % N_SOURCES);
            uint64_t seq = seq_lo[k] + 1 + rnd() % (seqs[k] > seq_lo[k] ? seqs[k] - seq_lo[k] : 1);
            snprintf(a, sizeof a, "edge/%s/node-%03d", sites[k % 6], k);
            snprintf(t, sizeof t, "n%03d-%012llu", k, (unsigned long long)seq);
        } else {
            snprintf(a, sizeof a, "%s", tenants[rnd() % 5]);
            int64_t hours = n_events * EVENT_SPACING_US / GM_US_PER_HOUR;
            int64_t h = hours > 1 ? (int64_t)(rnd() % (uint64_t)(hours - 1)) : 0;
            gm_time_format(INT64_C(1795816800000000) - INT64_C(1795816800000000) % GM_US_PER_HOUR +
                               (h + 1) * GM_US_PER_HOUR,
                           t, sizeof t);
        }
        int64_t t0 = gm_mono_us();
        PGresult *r = PQexecParams(c, sql, 2, NULL, params, NULL, NULL, 0);
        ms[i] = (double)(gm_mono_us() - t0) / 1000.0;
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
            die(sql, PQerrorMessage(c));
        if (by_id && atol(PQgetvalue(r, 0, 0)) != 1)
            die(sql, "the event was not found exactly once");
        PQclear(r);
    }
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && ms[j - 1] > ms[j]; j--) {
            double x = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = x;
        }
    *p50 = ms[n / 2];
    *p99 = ms[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
    free(ms);
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
    const char *chain = getenv("GM_BENCH_CHAIN");
    gm_chain__bench_off = chain && !strcmp(chain, "off");
    printf("bench_rater: batch digests (tamper evidence): %s\n",
           gm_chain__bench_off ? "off" : "on");

    const char *pl = getenv("GM_BENCH_PIPELINE"), *idle = getenv("GM_BENCH_BATCH_IDLE_MS");
    int pipeline = pl && *pl ? atoi(pl) : 1;
    printf("bench_rater: %lld events, %d partitions, batch %d, batch_ms %s, pipeline %d, "
           "batch_idle_ms %s, PostgreSQL %d, 2-core host, load average %s\n",
           (long long)n_events, partitions, batch,
           getenv("GM_BENCH_BATCH_MS") ? getenv("GM_BENCH_BATCH_MS") : "200", pipeline,
           idle && *idle ? idle : "5", PQserverVersion(c), load_average());
    /* 1. Ceiling. */
    double ceiling = copy_rate(c, n_events, "bench_copy");
    printf("  ceiling: binary COPY into an unindexed table   %10.0f rows/s\n", ceiling);
    double into_ledger = copy_rate(c, n_events, "gm.ledger_rows");
    printf("  binary COPY of compact rows into gm.ledger_rows (indexed) %5.0f rows/s  (%.2f of "
           "the ceiling)\n",
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
    memcpy(seq_lo, seqs, sizeof seqs);
    int64_t t0 = gm_mono_us();
    const char *rs = getenv("GM_BENCH_RESEND_PERMILLE");
    int resend_permille = rs ? atoi(rs) : 0;
    static gm_event recent[4096];
    int64_t n_resent = 0;
    for (int64_t i = 0; i < n_events; i++) {
        gm_event ev;
        make_event(&ev, INT64_C(1795816800000000) + i * EVENT_SPACING_US);
        produce(p, topic, &ev);
        recent[i % 4096] = ev;
        if (resend_permille > 0 && (int)(rnd() % 1000) < resend_permille) {
            int64_t back = (int64_t)(rnd() % (uint64_t)(i < 4096 ? i + 1 : 4096));
            produce(p, topic, &recent[(i - back) % 4096]);
            n_resent++;
        }
    }
    rd_kafka_flush(p, 120000);
    printf("  produced %lld events and %lld re-sends (%d per 1000) in %.1f s\n",
           (long long)n_events, (long long)n_resent, resend_permille,
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
    const char *batch_ms = getenv("GM_BENCH_BATCH_MS"); /* the rater's --batch-ms (default 200) */
    if (batch_ms && atoi(batch_ms) > 0)
        job.cfg.batch_ms = atoi(batch_ms);
    job.cfg.metrics_addr = "";
    job.cfg.gpu_topic = ""; /* usage events only, as before rater/gpu.c */
    job.cfg.pipeline = pipeline;
    if (idle && *idle)
        job.cfg.batch_idle_ms = atoi(idle);
    pthread_t th;
    stop_rater = 0;
    pthread_create(&th, NULL, rater_thread, &job);
    int64_t n_sent = n_events + n_resent;
    wait_for(c, n_sent, "throughput");
    /* Rate between the first and the last commit (start-up and group join excluded). */
    double span = value_d(c, "SELECT extract(epoch FROM max(committed_at) - min(committed_at))"
                             " FROM gm.batches");
    double first = value_d(c, "SELECT messages FROM gm.batches ORDER BY batch_id LIMIT 1");
    double rate = span > 0 ? ((double)n_sent - first) / span : 0;
    printf("  end to end: Kafka -> ledger + charges      %10.0f messages/s  (%.2f of the "
           "ceiling)\n",
           rate, rate / ceiling);
    if ((int64_t)value_d(c, "SELECT count(*) FROM gm.ledger") != n_events)
        die("throughput", "the ledger does not hold each event exactly once");
    {
        /* Where the rater's time went (its own counters, read once it is idle): the commit
         * path (the writer, PostgreSQL's round trips included) and preparing (decode, price). */
        uint64_t nb = __atomic_load_n(&gm_rater_metrics.batches, __ATOMIC_RELAXED);
        uint64_t piped = __atomic_load_n(&gm_rater_metrics.pipelined_batches, __ATOMIC_RELAXED);
        double commit_s =
            (double)__atomic_load_n(&gm_rater_metrics.commit_us_sum, __ATOMIC_RELAXED) / 1e6;
        double prep_s =
            (double)__atomic_load_n(&gm_rater_metrics.prepare_us_sum, __ATOMIC_RELAXED) / 1e6;
        double wait_s =
            (double)__atomic_load_n(&gm_rater_metrics.flight_wait_us_sum, __ATOMIC_RELAXED) / 1e6;
        printf("  batches %llu (%.0f messages each), %llu prepared while the one before "
               "committed; commit path %.1f s (%.0f%% of the span), decode + price %.1f s "
               "(%.0f%%), waiting for the commit thread %.1f s\n",
               (unsigned long long)nb, nb ? (double)n_sent / (double)nb : 0.0,
               (unsigned long long)piped, commit_s, span > 0 ? 100 * commit_s / span : 0, prep_s,
               span > 0 ? 100 * prep_s / span : 0, wait_s);
    }
    if (!gm_chain__bench_off) {
        int64_t busy = __atomic_load_n(&gm_chain__busy_us, __ATOMIC_RELAXED);
        int64_t nb = __atomic_load_n(&gm_chain__batches, __ATOMIC_RELAXED);
        int64_t prep = __atomic_load_n(&gm_chain__prep_us, __ATOMIC_RELAXED);
        printf("  batch digests: %lld batches, on the commit's path %.1f ms in all (%.0f us each,"
               " %.2f%% of the rater's time); prepared during the ledger COPY %.1f ms\n",
               (long long)nb, (double)busy / 1e3, nb ? (double)busy / (double)nb : 0.0,
               span > 0 ? 100.0 * (double)busy / 1e6 / span : 0.0, (double)prep / 1e3);
    }

    /* Growth: the rate of each tenth of the run against the ledger's size when it began. */
    FILE *growth = fopen("bench_rater_growth.csv", "w");
    if (growth)
        fprintf(growth, "ledger_events,events_per_s\n");
    PGresult *g = PQexec(
        c, "WITH b AS (SELECT batch_id, accepted, committed_at,"
           " sum(accepted) OVER (ORDER BY batch_id) - accepted AS before,"
           " lag(committed_at) OVER (ORDER BY batch_id) AS prev FROM gm.batches),"
           " t AS (SELECT *, ntile(10) OVER (ORDER BY batch_id) AS tenth FROM b"
           " WHERE prev IS NOT NULL)"
           " SELECT min(before), sum(accepted) / extract(epoch FROM max(committed_at) - min(prev))"
           " FROM t GROUP BY tenth ORDER BY tenth");
    if (PQresultStatus(g) != PGRES_TUPLES_OK)
        die("growth query", PQerrorMessage(c));
    double g_min = 0, g_max = 0;
    printf("  throughput as the ledger grows (rater, per tenth of the run):\n");
    for (int i = 0; i < PQntuples(g); i++) {
        double at = atof(PQgetvalue(g, i, 0)), v = atof(PQgetvalue(g, i, 1));
        if (i == 0 || v < g_min)
            g_min = v;
        if (i == 0 || v > g_max)
            g_max = v;
        printf("    from %9.0f events: %8.0f events/s  %.*s\n", at, v,
               (int)(v / (rate > 0 ? rate : 1) * 30),
               "##############################################"
               "##############################");
        if (growth)
            fprintf(growth, "%.0f,%.0f\n", at, v);
    }
    PQclear(g);
    if (growth)
        fclose(growth);
    printf("    spread (max - min) / max = %.2f\n", g_max > 0 ? (g_max - g_min) / g_max : 0);
    exec_ok(c, "VACUUM ANALYZE gm.ledger_rows, gm.ledger_names, gm.ledger_pricings,"
               " gm.ledger_streams");
    double ledger_rows = value_d(c, "SELECT count(*) FROM gm.ledger_rows");
    double bytes = ledger_bytes(c);
    printf("  ledger on disk (heap, TOAST and every index): %.0f bytes for %.0f events = %.1f "
           "bytes/event\n",
           bytes, ledger_rows, bytes / ledger_rows);
    double id50, id99, hr50, hr99;
    query_latency(c,
                  "SELECT count(*), min(amount) FROM audit.usage_events"
                  " WHERE source = $1 AND id = $2",
                  200, n_events, true, &id50, &id99);
    query_latency(c,
                  "SELECT count(*), sum(amount) FROM audit.usage_events WHERE tenant = $1"
                  " AND time >= $2::timestamptz AND time < $2::timestamptz + interval '1 hour'",
                  100, n_events, false, &hr50, &hr99);
    printf("  auditor: one event by source and id   p50 %.2f ms, p99 %.2f ms (200 queries)\n", id50,
           id99);
    printf("  auditor: one tenant's hour (~%d events) p50 %.2f ms, p99 %.2f ms (100 queries)\n",
           (int)(GM_US_PER_HOUR / EVENT_SPACING_US / 5), hr50, hr99);

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
    wait_for(c, n_sent + n_lat, "latency");
    PGresult *r = PQexec(
        c,
        "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms), max(ms),"
        " round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),"
        " round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))"
        " FROM (SELECT extract(epoch FROM b.committed_at - l.event_time) * 1000 AS ms"
        " FROM gm.ledger_rows l JOIN gm.batches b ON l.xmin = b.xmin"
        " WHERE b.batch_id > (SELECT last FROM bench_mark)) x");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("latency query", PQerrorMessage(c));
    printf("  latency produce -> commit at %.0f events/s (%lld events):\n", half, (long long)n_lat);
    printf("    p50, p90, p99, p99.9 = %s ms; max %s ms\n", PQgetvalue(r, 0, 0),
           PQgetvalue(r, 0, 1));
    /* One machine-readable line for bench/rater_sweep.sh. */
    printf("RESULT batch=%d ceiling=%.0f ledger_copy=%.0f end_to_end=%.0f p50_ms=%s p99_ms=%s"
           " bytes_per_event=%.1f pipeline=%d\n",
           batch, ceiling, into_ledger, rate, PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
           bytes / ledger_rows, pipeline);
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
