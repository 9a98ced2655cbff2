/* GPU window consumer benchmark (rater/gpu.c): gridmeter.gpu.v1 events/s from Kafka into
 * gm.gpu_windows, beside the usage loop of the same rater on the same number of usage events
 * in the same run (the baseline), both measured the same way: from the first to the last
 * change of the offsets stored in PostgreSQL (start-up and group join excluded).
 *
 *   bench_rater_gpu [events=100000] [partitions=6] [batch=10000]
 * Needs the local services (eval "$(scripts/services.sh env)") and a Release build. Creates
 * and drops its own database and topics. Prints progress on a terminal and the two rates. */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rater.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_rater_gpu: %s: %s\n", what, err);
    exit(1);
}

static PGconn *connect_db(const char *db)
{
    char err[512], ci[256];
    snprintf(ci, sizeof ci, "dbname=%s", db);
    PGconn *c = gm_pg_connect(ci, "bench_rater_gpu", err, sizeof err);
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

static int64_t value_i(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    int64_t v = PQgetisnull(r, 0, 0) ? 0 : atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

#define N_SOURCES 200
static const char *const tenants[] = {"acme", "globex", "initech", "umbrella", "newco"};
static const char *const sites[] = {"fra1", "ams1", "tro1", "core-fra", "sin1", "lhr1"};

static void make_event(gm_event *ev, bool gpu, int64_t i)
{
    static uint64_t seqs[2][N_SOURCES];
    int k = (int)(i % N_SOURCES);
    memset(ev, 0, sizeof *ev);
    ev->type = gpu ? GM_EVENT_GPU : GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/%s/node-%03d%s", sites[k % 6], k,
             gpu ? "/gpu" : "");
    ev->seq = ++seqs[gpu][k];
    snprintf(ev->id, sizeof ev->id, "n%03d-%012llu", k, (unsigned long long)ev->seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenants[(i / N_SOURCES) % 5]);
    snprintf(ev->site, sizeof ev->site, "%s", sites[k % 6]);
    int64_t t = INT64_C(1795816800000000) + (int64_t)ev->seq * 10 * GM_US_PER_SEC;
    ev->time_us = t;
    ev->gpu_us = (i * 7919) % 10000000;
    if (gpu) {
        snprintf(ev->device, sizeof ev->device, "gpu%d", (int)(i % 8));
        snprintf(ev->policy, sizeof ev->policy, "kernel-share-v1");
        ev->window_start_us = t - 10 * GM_US_PER_SEC;
        ev->window_end_us = t;
        ev->kernels = i % 500;
        ev->unattributed_us = i % 1000;
    } else {
        snprintf(ev->model, sizeof ev->model, "llama-3.1-70b-instruct");
        ev->input_tokens = i % 4000;
        ev->output_tokens = i % 1000;
    }
}

static void produce_all(const char *brokers, const char *topic, bool gpu, int64_t n)
{
    char err[512], buf[GM_EVENT_MAX_BYTES + 1];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err);
    rd_kafka_conf_set(conf, "compression.codec", "lz4", err, sizeof err);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!p)
        die("producer", err);
    for (int64_t i = 0; i < n; i++) {
        gm_event ev;
        make_event(&ev, gpu, i);
        size_t len = gm_event_encode(&ev, buf, sizeof buf);
        while (rd_kafka_producev(
                   p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(ev.source, strlen(ev.source)),
                   RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                   RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 10);
        rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 120000);
    rd_kafka_destroy(p);
}

static void make_topic(const char *brokers, const char *topic, int partitions)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "java -cp '%s/.cache/kafka/lib/*' org.apache.kafka.tools.TopicCommand"
             " --bootstrap-server %s --create --topic %s --partitions %d"
             " --replication-factor 1 >/dev/null 2>&1",
             GM_SOURCE_DIR, brokers, topic, partitions);
    if (system(cmd) != 0)
        die("topic", cmd);
}

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

/* Runs a rater on (usage, gpu) until `topic` has n messages stored; the rate between the
 * first and the last change of the stored offsets (progress on a terminal). */
static double run(const char *db, const char *brokers, const char *group, const char *usage,
                  const char *gpu, const char *topic, int64_t n, int batch)
{
    PGconn *c = connect_db(db);
    rater_job job;
    gm_rater_config_init(&job.cfg);
    char ci[128];
    snprintf(ci, sizeof ci, "dbname=%s", db);
    job.cfg.brokers = brokers;
    job.cfg.topic = usage;
    job.cfg.gpu_topic = gpu;
    job.cfg.group_id = group;
    job.cfg.db_conninfo = ci;
    job.cfg.batch_max = batch;
    job.cfg.metrics_addr = "";
    pthread_t th;
    stop_rater = 0;
    pthread_create(&th, NULL, rater_thread, &job);
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(next_offset), 0) FROM gm.consumer_offsets WHERE topic = '%s'"
             " AND group_id = '%s'",
             topic, group);
    int64_t first_us = 0, first_n = 0, last_us = 0, got = 0, prev = -1;
    while (got < n) {
        usleep(20000);
        got = value_i(c, sql);
        if (got != prev) {
            int64_t now = gm_mono_us();
            if (!first_us && got > 0) {
                first_us = now;
                first_n = got;
            }
            last_us = now;
            prev = got;
            if (isatty(2))
                fprintf(stderr, "\r  %s: %lld / %lld stored", topic, (long long)got, (long long)n);
        }
    }
    if (isatty(2))
        fputc('\n', stderr);
    stop_rater = 1;
    pthread_join(th, NULL);
    if (job.rc)
        die("rater", job.err);
    PQfinish(c);
    return last_us > first_us ? (double)(n - first_n) * 1e6 / (double)(last_us - first_us) : 0;
}

int main(int argc, char **argv)
{
    int64_t n = argc > 1 ? atoll(argv[1]) : 100000;
    int partitions = argc > 2 ? atoi(argv[2]) : 6;
    int batch = argc > 3 ? atoi(argv[3]) : 10000;
    const char *brokers = getenv("GRIDMETER_KAFKA_BROKERS");
    if (!brokers)
        die("environment",
            "GRIDMETER_KAFKA_BROKERS is not set (eval \"$(scripts/services.sh env)\")");
    if (!getenv("GRIDMETER_LOG_LEVEL"))
        gm_log_set_level(GM_LOG_WARN);
    char db[64], usage[64], gpu[64], empty[64], err[1024], msg[256], sql[256];
    snprintf(db, sizeof db, "gmbench_gpu_%d", (int)getpid());
    snprintf(usage, sizeof usage, "gmbench.usage.%d", (int)getpid());
    snprintf(gpu, sizeof gpu, "gmbench.gpu.%d", (int)getpid());
    snprintf(empty, sizeof empty, "gmbench.empty.%d", (int)getpid());
    PGconn *admin = connect_db("postgres");
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
    if (gm_ledger_import(c, card, card_len, msg, sizeof msg, err, sizeof err))
        die("import", err);
    printf("bench_rater_gpu: %lld events per topic, %d partitions, batch %d, PostgreSQL %d\n",
           (long long)n, partitions, batch, PQserverVersion(c));
    make_topic(brokers, usage, partitions);
    make_topic(brokers, gpu, partitions);
    make_topic(brokers, empty, 1);
    int64_t t0 = gm_mono_us();
    produce_all(brokers, usage, false, n);
    produce_all(brokers, gpu, true, n);
    printf("  produced 2 x %lld events in %.1f s\n", (long long)n,
           (double)(gm_mono_us() - t0) / 1e6);
    double u = run(db, brokers, "bench-usage", usage, "", usage, n, batch);
    printf("  baseline: usage events -> gm.ledger + charges   %10.0f events/s\n", u);
    double g = run(db, brokers, "bench-gpu", empty, gpu, gpu, n, batch);
    printf("  GPU windows -> gm.gpu_windows                  %10.0f events/s  (%.2f of the "
           "baseline)\n",
           g, u > 0 ? g / u : 0);
    int64_t rows = value_i(c, "SELECT count(*) FROM gm.gpu_windows");
    if (rows != n)
        die("check", "gm.gpu_windows does not hold every window once");
    PQfinish(c);
    snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
    exec_ok(admin, sql);
    PQfinish(admin);
    const char *topics[] = {usage, gpu, empty};
    for (int i = 0; i < 3; i++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd,
                 "java -cp '%s/.cache/kafka/lib/*' org.apache.kafka.tools.TopicCommand"
                 " --bootstrap-server %s --delete --topic %s >/dev/null 2>&1",
                 GM_SOURCE_DIR, brokers, topics[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_rater_gpu: topic %s not deleted\n", topics[i]);
    }
    return 0;
}
