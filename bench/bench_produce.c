/* Producer benchmark: usage events recorded through the node client library (encode, spool
 * with CRC-32C, fsync per batch, idempotent lz4 producer, delivery reports, spool reclaim)
 * against the raw librdkafka producer with the same settings, measured in the same run on the
 * same broker. Both rates count events from the first call to the last delivery report.
 *
 *   bench_produce [--events N] [--brokers B] [--spool DIR] [--fsync batch|interval|event]
 */
#include "gm_node.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct {
    double wall_s, cpu_s;
} timing;

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void progress(const char *what, uint64_t done, uint64_t total, int64_t t0, int64_t *last)
{
    int64_t now = gm_mono_us();
    if (now - *last < 1000000)
        return;
    *last = now;
    fprintf(stderr, "  %s: %llu/%llu (%.0f/s)\n", what, (unsigned long long)done,
            (unsigned long long)total, (double)done / ((double)(now - t0) / 1e6));
}

static void make_event(gm_event *ev, uint64_t i)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/fra1/node-017");
    snprintf(ev->tenant, sizeof ev->tenant, "tenant-%llu", (unsigned long long)(i % 50));
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->model, sizeof ev->model, "llama-3.1-70b-instruct");
    snprintf(ev->request_id, sizeof ev->request_id, "req-%016llx", (unsigned long long)i);
    ev->time_us = gm_now_us();
    ev->seq = i + 1;
    gm_node_event_id(ev->source, ev->seq, ev->id, sizeof ev->id);
    ev->input_tokens = (int64_t)(i % 4096);
    ev->cached_tokens = (int64_t)(i % 512);
    ev->output_tokens = (int64_t)(i % 700);
    ev->gpu_us = (int64_t)(i * 37 % 200000);
}

static uint64_t raw_acked;
static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (!m->err)
        raw_acked++;
}

static timing run_raw(const char *brokers, const char *topic, uint64_t n)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers",
                        brokers,
                        "enable.idempotence",
                        "true",
                        "compression.type",
                        "lz4",
                        "linger.ms",
                        "5",
                        "queue.buffering.max.messages",
                        "1000000",
                        "batch.num.messages",
                        "10000",
                        NULL};
    for (size_t i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
    rd_kafka_conf_set_dr_msg_cb(conf, raw_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    /* a pool of pre-encoded events: the baseline is librdkafka alone */
    enum { POOL = 1024 };
    static char bufs[POOL][1024];
    static size_t lens[POOL];
    for (uint64_t i = 0; i < POOL; i++) {
        gm_event ev;
        make_event(&ev, i);
        lens[i] = gm_event_encode(&ev, bufs[i], sizeof bufs[i]);
    }
    /* warm up the connection and the producer id */
    rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY("warm", 4),
                      RD_KAFKA_V_VALUE(bufs[0], lens[0]), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                      RD_KAFKA_V_END);
    rd_kafka_flush(rk, 30000);
    raw_acked = 0;
    int64_t t0 = gm_mono_us(), last = t0;
    double c0 = cpu_now();
    const char *key = "edge/fra1/node-017";
    for (uint64_t i = 0; i < n; i++) {
        for (;;) {
            rd_kafka_resp_err_t e =
                rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, strlen(key)),
                                  RD_KAFKA_V_VALUE(bufs[i % POOL], lens[i % POOL]),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            rd_kafka_poll(rk, 10);
        }
        if ((i & 1023) == 0) {
            rd_kafka_poll(rk, 0);
            progress("raw librdkafka", i, n, t0, &last);
        }
    }
    rd_kafka_flush(rk, 120000);
    timing t = {(double)(gm_mono_us() - t0) / 1e6, cpu_now() - c0};
    if (raw_acked != n)
        fprintf(stderr, "raw: only %llu of %llu acknowledged\n", (unsigned long long)raw_acked,
                (unsigned long long)n);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return t;
}

static timing run_node(const char *brokers, const char *topic, const char *spool, uint64_t n,
                       gm_node_fsync fs)
{
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = brokers;
    c.topic = topic;
    c.source = "edge/fra1/node-017";
    c.site = "fra1";
    c.spool_dir = spool;
    c.spool_max_bytes = (uint64_t)2 << 30;
    c.fsync = fs;
    gm_node *node = NULL;
    char err[512];
    if (gm_node_open(&c, &node, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    gm_node_usage u = {.tenant = "acme", .model = "llama-3.1-70b-instruct"};
    char req[40] = "req-warm-up";
    u.request_id = req;
    /* warm up like the baseline */
    u.time_us = gm_now_us();
    if (gm_node_record(node, &u, NULL, err, sizeof err) ||
        gm_node_flush(node, 30000, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    int64_t t0 = gm_mono_us(), last = t0;
    double c0 = cpu_now();
    for (uint64_t i = 0; i < n; i++) {
        /* the application's request id, without printf (the baseline pays nothing here) */
        static const char hex[] = "0123456789abcdef";
        memcpy(req, "req-", 4);
        for (int d = 0; d < 16; d++)
            req[4 + d] = hex[(i >> (60 - 4 * d)) & 15];
        req[20] = '\0';
        u.input_tokens = (int64_t)(i % 4096);
        u.cached_tokens = (int64_t)(i % 512);
        u.output_tokens = (int64_t)(i % 700);
        u.gpu_us = (int64_t)(i * 37 % 200000);
        u.time_us = 0; /* now */
        int rc;
        while ((rc = gm_node_record(node, &u, NULL, err, sizeof err)) == GM_EFULL)
            usleep(1000);
        if (rc) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
        if ((i & 1023) == 0)
            progress("node client", i, n, t0, &last);
    }
    if (gm_node_flush(node, 120000, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    timing t = {(double)(gm_mono_us() - t0) / 1e6, cpu_now() - c0};
    gm_node_stats st;
    gm_node_stats_get(node, &st);
    fprintf(stderr, "  node: acked %llu, delivery errors %llu, queue full %llu\n",
            (unsigned long long)st.acked, (unsigned long long)st.delivery_errors,
            (unsigned long long)st.queue_full);
    gm_node_close(node);
    return t;
}

static void topic_delete(const char *brokers, const char *topic)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        return;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(topic);
    rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_DeleteTopic_destroy(dt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t n = 1000000;
    int rounds = 3;
    const char *brokers = getenv("GRIDMETER_KAFKA_BROKERS");
    const char *spool_base = "/tmp";
    gm_node_fsync fs = GM_NODE_FSYNC_BATCH;
    const char *fs_name = "batch";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--events"))
            n = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--brokers"))
            brokers = argv[i + 1];
        else if (!strcmp(argv[i], "--spool"))
            spool_base = argv[i + 1];
        else if (!strcmp(argv[i], "--fsync")) {
            fs_name = argv[i + 1];
            fs = !strcmp(fs_name, "event")      ? GM_NODE_FSYNC_EVENT
                 : !strcmp(fs_name, "interval") ? GM_NODE_FSYNC_INTERVAL
                                                : GM_NODE_FSYNC_BATCH;
        }
    }
    if (!brokers) {
        fprintf(stderr, "set GRIDMETER_KAFKA_BROKERS or --brokers\n");
        return 2;
    }
    gm_log_set_level(GM_LOG_WARN);
    char topic[128], spool[512];
    snprintf(topic, sizeof topic, "bench.produce.%d", (int)getpid());
    snprintf(spool, sizeof spool, "%s/bench-produce-spool-%d", spool_base, (int)getpid());
    printf("bench_produce: %llu events of ~%d bytes, topic %s (auto-created), brokers %s\n",
           (unsigned long long)n, 380, topic, brokers);
    /* The machine is shared: alternate the two, several rounds, and compare medians. */
    if (rounds < 1 || rounds > 15)
        rounds = 3;
    double raw_rate[15], node_rate[15], raw_cpu[15], node_cpu[15];
    char label[64];
    snprintf(label, sizeof label, "node client, spool fsync=%s", fs_name);
    printf("%-6s %-40s %12s %10s %14s\n", "round", "", "events/s", "cpu s", "events/cpu-s");
    for (int r = 0; r < rounds; r++) {
        char sp[600];
        snprintf(sp, sizeof sp, "%s-%d", spool, r);
        timing raw = run_raw(brokers, topic, n);
        timing node = run_node(brokers, topic, sp, n, fs);
        raw_rate[r] = (double)n / raw.wall_s;
        node_rate[r] = (double)n / node.wall_s;
        raw_cpu[r] = (double)n / raw.cpu_s;
        node_cpu[r] = (double)n / node.cpu_s;
        printf("%-6d %-40s %12.0f %10.2f %14.0f\n", r + 1, "raw librdkafka producer (baseline)",
               raw_rate[r], raw.cpu_s, raw_cpu[r]);
        printf("%-6d %-40s %12.0f %10.2f %14.0f\n", r + 1, label, node_rate[r], node.cpu_s,
               node_cpu[r]);
        fflush(stdout);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", sp);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", sp);
    }
    qsort(raw_rate, (size_t)rounds, sizeof(double), cmp_double);
    qsort(node_rate, (size_t)rounds, sizeof(double), cmp_double);
    qsort(raw_cpu, (size_t)rounds, sizeof(double), cmp_double);
    qsort(node_cpu, (size_t)rounds, sizeof(double), cmp_double);
    int mid = rounds / 2;
    printf("median of %d rounds: raw %.0f events/s (%.0f per cpu-s), node %.0f events/s (%.0f "
           "per cpu-s)\n",
           rounds, raw_rate[mid], raw_cpu[mid], node_rate[mid], node_cpu[mid]);
    printf("node / raw: %.2f wall, %.2f per cpu-second (aim >= 0.5); node %s 300k events/s\n",
           node_rate[mid] / raw_rate[mid], node_cpu[mid] / raw_cpu[mid],
           node_rate[mid] >= 300000 ? ">=" : "<");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", spool);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", spool);
    topic_delete(brokers, topic);
    return 0;
}
