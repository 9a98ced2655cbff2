/* Integration: the rater's GPU window consumer (rater/gpu.c) against real PostgreSQL and
 * Kafka. gridmeter.gpu.v1 events into gm.gpu_windows exactly once while raters are killed
 * with SIGKILL mid-run; duplicates counted once, conflicts and malformed messages kept in
 * gm.rejected_events with their reason; audit.gpu_reconciliation with a node that
 * under-reports its per-request gpu_us on purpose, checked against a hand computation. */
#include "rater_harness.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define H0 INT64_C(1795816800000000) /* 2026-11-27T22:00:00Z */

static rd_kafka_t *producer(const h_env *e)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err) == 0);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    return p;
}

static void send_raw(rd_kafka_t *p, const char *topic, const char *key, const char *val, size_t len)
{
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p, 50);
            continue;
        }
        ck_assert_msg(err == 0, "produce: %s", rd_kafka_err2str(err));
        return;
    }
}

static void send_event(rd_kafka_t *p, const char *topic, const gm_event *ev)
{
    char buf[GM_EVENT_MAX_BYTES + 1];
    size_t len = gm_event_encode(ev, buf, sizeof buf);
    ck_assert_msg(len > 0, "encode %s#%s", ev->source, ev->id);
    send_raw(p, topic, ev->source, buf, len);
}

static void gpu_event(gm_event *ev, const char *source, uint64_t seq, const char *tenant,
                      const char *device, const char *policy, int64_t ws, int64_t we,
                      int64_t gpu_us, int64_t kernels, int64_t unattributed_us)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_GPU;
    snprintf(ev->source, sizeof ev->source, "%s", source);
    snprintf(ev->id, sizeof ev->id, "w-%012llu", (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenant);
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->device, sizeof ev->device, "%s", device);
    snprintf(ev->policy, sizeof ev->policy, "%s", policy);
    ev->seq = seq;
    ev->time_us = we;
    ev->window_start_us = ws;
    ev->window_end_us = we;
    ev->gpu_us = gpu_us;
    ev->kernels = kernels;
    ev->unattributed_us = unattributed_us;
}

static void usage_event(gm_event *ev, const char *source, uint64_t seq, const char *tenant,
                        int64_t time_us, int64_t gpu_us)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "%s", source);
    snprintf(ev->id, sizeof ev->id, "u-%012llu", (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenant);
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->model, sizeof ev->model, "llama-3.1-70b-instruct");
    ev->seq = seq;
    ev->time_us = time_us;
    ev->input_tokens = 100;
    ev->output_tokens = 10;
    ev->gpu_us = gpu_us;
}

static int64_t q_i64(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(v != NULL, "no value: %s", sql);
    int64_t n = atoll(v);
    free(v);
    return n;
}

/* Sum of the stored next offsets of a topic (its message count once all are read). */
static int64_t stored_total(PGconn *c, const char *topic)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(next_offset), 0) FROM gm.consumer_offsets WHERE topic = '%s'",
             topic);
    return q_i64(c, sql);
}

static void wait_stored(const h_env *e, const char *topic, int64_t messages, int timeout_s)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    int64_t got = 0;
    for (int i = 0; i < timeout_s * 5 && (got = stored_total(c, topic)) < messages; i++)
        usleep(200000);
    PQfinish(c);
    ck_assert_msg(got == messages, "%s: %lld of %lld messages accounted for", topic, (long long)got,
                  (long long)messages);
}

/* ---- exactly once under SIGKILL ------------------------------------------------------ */
#define K_SOURCES 4
#define K_EVENTS  1200 /* per source */

typedef struct kill_traffic {
    const h_env *e;
    const char *topic;
    int64_t messages, accepted, duplicates, conflicts, malformed, gpu_us;
    int64_t gpu_us_tenant[3];
} kill_traffic;

static const char *const k_tenants[3] = {"acme", "globex", "initech"};

static void *produce_kill_traffic(void *arg)
{
    kill_traffic *t = arg;
    rd_kafka_t *p = producer(t->e);
    char source[64];
    gm_event ev;
    for (int n = 1; n <= K_EVENTS; n++) {
        for (int k = 0; k < K_SOURCES; k++) {
            snprintf(source, sizeof source, "edge/fra1/node-%02d/gpu", k);
            int ti = (k + n) % 3;
            int64_t ws = H0 + (int64_t)n * 10 * GM_US_PER_SEC;
            int64_t us = ((int64_t)n * 7919 + k * 13) % 10000000;
            gpu_event(&ev, source, (uint64_t)n, k_tenants[ti], n % 2 ? "gpu1" : "gpu0",
                      "kernel-share-v1", ws, ws + 10 * GM_US_PER_SEC, us, n % 50, 100 * k);
            send_event(p, t->topic, &ev);
            t->messages++;
            t->accepted++;
            t->gpu_us += us;
            t->gpu_us_tenant[ti] += us;
            if (n % 37 == 0) { /* the node re-sends after a timeout: the same bytes */
                send_event(p, t->topic, &ev);
                t->messages++;
                t->duplicates++;
            }
            if (n % 101 == 0) { /* the same (source, id) and seq with other content */
                ev.gpu_us += 1;
                send_event(p, t->topic, &ev);
                t->messages++;
                t->conflicts++;
            }
            if (n % 211 == 0) { /* a new id on a seq already taken */
                snprintf(ev.id, sizeof ev.id, "other-%d", n);
                send_event(p, t->topic, &ev);
                t->messages++;
                t->conflicts++;
            }
            if (n % 450 == 0) { /* a usage event on the GPU topic */
                usage_event(&ev, source, 900000 + (uint64_t)n, "acme", ws, 5);
                send_event(p, t->topic, &ev);
                t->messages++;
                t->malformed++;
            }
            if (n % 500 == 0) {
                send_raw(p, t->topic, source, "not json", 8);
                t->messages++;
                t->malformed++;
            }
        }
        rd_kafka_poll(p, 0);
        if (n % 100 == 0)
            usleep(1500000); /* ~18 s of traffic: raters die while it arrives */
    }
    ck_assert_int_eq(rd_kafka_flush(p, 60000), 0);
    rd_kafka_destroy(p);
    return NULL;
}

/* Every valid window once, nothing doubled, the sums exact; conflicts and malformed messages
 * kept with their reason; duplicates counted once. */
static void verify_kill_traffic(PGconn *c, const kill_traffic *tp, const char *gpu_topic)
{
    const kill_traffic t = *tp;
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM gm.gpu_windows"), t.accepted);
    ck_assert_int_eq(q_i64(c, "SELECT coalesce(sum(gpu_us), 0) FROM audit.gpu_windows"), t.gpu_us);
    for (int ti = 0; ti < 3; ti++) {
        char sql[200];
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(sum(gpu_us), 0) FROM audit.gpu_windows WHERE tenant = '%s'",
                 k_tenants[ti]);
        ck_assert_int_eq(q_i64(c, sql), t.gpu_us_tenant[ti]);
    }
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM (SELECT source, seq FROM gm.gpu_windows"
                              " GROUP BY 1, 2 HAVING count(*) > 1) d"),
                     0);
    /* the conflicting versions never replaced the first ones */
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_windows WHERE id LIKE 'other-%'"), 0);
    /* conflicts and malformed messages kept with their reason; duplicates counted once */
    char sql[600];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.rejected_events WHERE kafka_topic = '%s'",
             gpu_topic);
    ck_assert_int_eq(q_i64(c, sql), t.conflicts + t.malformed);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit.rejected_events WHERE kafka_topic = '%s' AND reason"
             " LIKE '%%: conflict: (source, id) is already taken by the accepted GPU window %%'",
             gpu_topic);
    ck_assert_int_eq(q_i64(c, sql), (int64_t)K_SOURCES * (K_EVENTS / 101));
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit.rejected_events WHERE kafka_topic = '%s' AND reason"
             " LIKE '%%: conflict: data.seq is already taken by the accepted GPU window %%'",
             gpu_topic);
    ck_assert_int_eq(q_i64(c, sql), (int64_t)K_SOURCES * (K_EVENTS / 211));
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit.rejected_events WHERE kafka_topic = '%s' AND reason"
             " LIKE '%%type: gridmeter.usage.v1 is not accepted on topic %%'",
             gpu_topic);
    ck_assert_int_eq(q_i64(c, sql), (int64_t)K_SOURCES * (K_EVENTS / 450));
    /* the usage topic saw nothing; the ledger is empty */
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM gm.ledger"), 0);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_source_gaps"), 0);
    ck_assert_int_eq(stored_total(c, gpu_topic), t.messages);
    ck_assert_int_eq(t.messages, t.accepted + t.duplicates + t.conflicts + t.malformed);
}

START_TEST(test_gpu_windows_exactly_once_through_kill9)
{
    h_env e;
    h_env_open(&e, "gpukill", 2);
    char gpu_topic[160], arg[200];
    snprintf(gpu_topic, sizeof gpu_topic, "%s.gpu", e.topic);
    gm_test_topic_create(gpu_topic, 3);
    snprintf(arg, sizeof arg, "--gpu-topic=%s", gpu_topic);
    const char *extra[] = {arg, "--batch-size", "150", NULL};

    kill_traffic t = {.e = &e, .topic = gpu_topic};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, produce_kill_traffic, &t), 0);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    int kills_with_progress = 0;
    for (int round = 0; round < 4; round++) {
        char id[32];
        snprintf(id, sizeof id, "gpu-kill-%d", round);
        int64_t before = q_i64(c, "SELECT count(*) FROM gm.gpu_windows");
        pid_t pid = h_rater_start(&e, id, extra);
        /* killed once it has committed something (whatever the machine's load), then a
         * moment later, in whatever it is doing */
        for (int i = 0; i < 200 && q_i64(c, "SELECT count(*) FROM gm.gpu_windows") == before; i++)
            usleep(100000);
        usleep((useconds_t)(150000 + 170000 * round));
        kill(pid, SIGKILL);
        h_rater_wait(pid);
        kills_with_progress += q_i64(c, "SELECT count(*) FROM gm.gpu_windows") > before;
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    fprintf(stderr,
            "gpu kill test: %d of 4 raters killed after committing windows; %lld of %lld"
            " messages stored before the last rater\n",
            kills_with_progress, (long long)stored_total(c, gpu_topic), (long long)t.messages);
    /* the last one finishes the work and exits when idle (its GPU consumer with it) */
    const char *last_extra[] = {arg, "--batch-size", "150", "--exit-idle-ms", "3000", NULL};
    pid_t last = h_rater_start(&e, "gpu-last", last_extra);
    wait_stored(&e, gpu_topic, t.messages, 180);
    ck_assert_int_eq(h_rater_wait(last), 0);

    verify_kill_traffic(c, &t, gpu_topic);
    /* most kills landed while the rater was writing windows, not after the work was done */
    ck_assert_int_ge(kills_with_progress, 2);
    PQfinish(c);
    gm_test_topic_delete(gpu_topic);
    h_env_close(&e);
}
END_TEST

/* Two raters share the GPU partitions; one freezes (SIGSTOP) past the session timeout while it
 * holds partitions, the other takes them over, and when the first wakes up whatever it still
 * commits is fenced by the offsets' compare-and-set: still every window exactly once. */
START_TEST(test_gpu_windows_exactly_once_when_a_frozen_rater_wakes_up)
{
    h_env e;
    h_env_open(&e, "gpustop", 2);
    char gpu_topic[160], arg[200];
    snprintf(gpu_topic, sizeof gpu_topic, "%s.gpu", e.topic);
    gm_test_topic_create(gpu_topic, 3);
    snprintf(arg, sizeof arg, "--gpu-topic=%s", gpu_topic);
    const char *extra[] = {arg, "--batch-size", "150", NULL};
    kill_traffic t = {.e = &e, .topic = gpu_topic};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, produce_kill_traffic, &t), 0);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    pid_t a = h_rater_start(&e, "gpu-a", extra);
    pid_t b = h_rater_start(&e, "gpu-b", extra);
    for (int i = 0; i < 300 && q_i64(c, "SELECT count(*) FROM gm.gpu_windows") == 0; i++)
        usleep(100000);
    usleep(1000000);
    kill(a, SIGSTOP); /* frozen with its partitions, maybe in a batch */
    usleep(9000000);  /* past the 6 s session timeout: b owns everything */
    kill(a, SIGCONT);
    usleep(2000000);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    wait_stored(&e, gpu_topic, t.messages, 180);
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    ck_assert_int_eq(h_rater_wait(a), 0);
    ck_assert_int_eq(h_rater_wait(b), 0);
    verify_kill_traffic(c, &t, gpu_topic);
    PQfinish(c);
    gm_test_topic_delete(gpu_topic);
    h_env_close(&e);
}
END_TEST

/* Fencing, made to happen: rater a is held inside its first batch's transaction (the test
 * locks gm.gpu_windows) and frozen past the session timeout; rater b gets the partition and
 * blocks on the offset row a has written but not committed. When a wakes up and commits, b's
 * compare-and-set finds the row taken: b's batch is rolled back whole, b resumes from a's
 * offset, and every window is there exactly once. */
START_TEST(test_gpu_batch_of_a_rater_that_lost_the_race_is_fenced)
{
    h_env e;
    h_env_open(&e, "gpufence", 1);
    char gpu_topic[160], arg[200];
    snprintf(gpu_topic, sizeof gpu_topic, "%s.gpu", e.topic);
    gm_test_topic_create(gpu_topic, 1);
    snprintf(arg, sizeof arg, "--gpu-topic=%s", gpu_topic);
    const char *extra[] = {arg, "--batch-size", "100", NULL};
    rd_kafka_t *p = producer(&e);
    gm_event ev;
    int64_t sum = 0;
    for (int n = 1; n <= 300; n++) {
        gpu_event(&ev, "edge/fra1/node-f/gpu", (uint64_t)n, "acme", "gpu0", "kernel-share-v1",
                  H0 + n * GM_US_PER_SEC, H0 + (n + 1) * GM_US_PER_SEC, n, 1, 0);
        send_event(p, gpu_topic, &ev);
        sum += n;
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);
    PGconn *c = gm_test_pg_connect(e.conninfo), *lk = gm_test_pg_connect(e.conninfo);
    gm_test_pg_exec(lk, "BEGIN");
    gm_test_pg_exec(lk, "LOCK TABLE gm.gpu_windows IN SHARE MODE");
    const char *waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                          " 'gridmeter-rater-gpu' AND wait_event_type = 'Lock'";
    pid_t a = h_rater_start(&e, "gpu-fence-a", extra);
    int i;
    for (i = 0; i < 600 && q_i64(c, waiting) < 1; i++)
        usleep(100000);
    ck_assert_msg(i < 600, "rater a never reached its first batch");
    kill(a, SIGSTOP); /* inside its transaction, offset row written, not committed */
    usleep(8000000);  /* past the 6 s session timeout */
    pid_t b = h_rater_start(&e, "gpu-fence-b", extra);
    for (i = 0; i < 600 && q_i64(c, waiting) < 2; i++)
        usleep(100000);
    ck_assert_msg(i < 600, "rater b never blocked on a's offset row");
    gm_test_pg_exec(lk, "COMMIT"); /* a's insert goes through; a itself is still frozen */
    usleep(500000);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM gm.gpu_windows"), 0); /* nothing yet */
    kill(a, SIGCONT); /* a commits its batch: b's compare-and-set fails */
    wait_stored(&e, gpu_topic, 300, 180);
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    ck_assert_int_eq(h_rater_wait(a), 0);
    ck_assert_int_eq(h_rater_wait(b), 0);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM gm.gpu_windows"), 300);
    ck_assert_int_eq(q_i64(c, "SELECT count(DISTINCT seq) FROM gm.gpu_windows"), 300);
    ck_assert_int_eq(q_i64(c, "SELECT sum(gpu_us) FROM gm.gpu_windows"), sum);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM gm.rejected_events"), 0);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_source_gaps"), 0);
    PQfinish(lk);
    PQfinish(c);
    gm_test_topic_delete(gpu_topic);
    h_env_close(&e);
}
END_TEST

/* ---- reconciliation ----------------------------------------------------------------- */
START_TEST(test_gpu_reconciliation_shows_the_node_that_under_reports)
{
    h_env e;
    h_env_open(&e, "gpurecon", 1);
    char gpu_topic[160], arg[200];
    snprintf(gpu_topic, sizeof gpu_topic, "%s.gpu", e.topic);
    gm_test_topic_create(gpu_topic, 1);
    snprintf(arg, sizeof arg, "--gpu-topic=%s", gpu_topic);
    const char *extra[] = {arg, NULL};

    rd_kafka_t *p = producer(&e);
    gm_event ev;
    int64_t h = H0 + 3600 * GM_US_PER_SEC, w = 10 * GM_US_PER_SEC;
    /* node a reports per request what CUPTI attributed: 1000 + 2000 + 3000 = 2500 + 3500 */
    usage_event(&ev, "edge/fra1/node-a", 1, "acme", h + 1000, 1000);
    send_event(p, e.topic, &ev);
    usage_event(&ev, "edge/fra1/node-a", 2, "acme", h + 2000, 2000);
    send_event(p, e.topic, &ev);
    usage_event(&ev, "edge/fra1/node-a", 3, "acme", h + 15 * GM_US_PER_SEC, 3000);
    send_event(p, e.topic, &ev);
    /* node b under-reports on purpose: 100 per request, CUPTI saw 5000 */
    usage_event(&ev, "edge/fra1/node-b", 1, "acme", h + 3000, 100);
    send_event(p, e.topic, &ev);
    /* the hour before: reported, no windows */
    usage_event(&ev, "edge/fra1/node-a", 4, "acme", h - 60 * GM_US_PER_SEC, 700);
    send_event(p, e.topic, &ev);

    /* window 1 on gpu0 of node a: acme 2500, globex 1000, 400 unattributed (on both rows) */
    gpu_event(&ev, "edge/fra1/node-a/gpu", 1, "acme", "gpu0", "kernel-share-v1", h, h + w, 2500, 3,
              400);
    send_event(p, gpu_topic, &ev);
    gpu_event(&ev, "edge/fra1/node-a/gpu", 2, "globex", "gpu0", "kernel-share-v1", h, h + w, 1000,
              1, 400);
    send_event(p, gpu_topic, &ev);
    /* window 2: acme 3500, nothing unattributed */
    gpu_event(&ev, "edge/fra1/node-a/gpu", 3, "acme", "gpu0", "kernel-share-v1", h + w, h + 2 * w,
              3500, 2, 0);
    send_event(p, gpu_topic, &ev);
    /* copy-engine time is not kernel time: not in the reconciliation */
    gpu_event(&ev, "edge/fra1/node-a/gpu", 4, "acme", "gpu0", "copy-share-v1", h, h + w, 777, 1, 0);
    send_event(p, gpu_topic, &ev);
    /* node b: acme 5000 on gpu1, 0 unattributed */
    gpu_event(&ev, "edge/fra1/node-b/gpu", 1, "acme", "gpu1", "kernel-share-v1", h, h + w, 5000, 9,
              0);
    send_event(p, gpu_topic, &ev);
    /* node b's seqs 2 and 3 never arrive (audit.gpu_source_gaps); seq 4 is a window of 0 us */
    gpu_event(&ev, "edge/fra1/node-b/gpu", 4, "acme", "gpu1", "kernel-share-v1", h + w, h + 2 * w,
              0, 0, 0);
    send_event(p, gpu_topic, &ev);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);

    pid_t pid = h_rater_start(&e, "gpu-recon", extra);
    wait_stored(&e, gpu_topic, 6, 120);
    wait_stored(&e, e.topic, 5, 120);
    kill(pid, SIGTERM);
    ck_assert_int_eq(h_rater_wait(pid), 0);

    PGconn *c = gm_test_pg_connect(e.conninfo);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM gm.ledger"), 5);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_windows WHERE node ="
                              " 'edge/fra1/node-a'"),
                     4);
    PGresult *r =
        PQexec(c, "SELECT node, tenant, to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24'),"
                  " reported_gpu_us, attributed_gpu_us, difference_us, usage_events, gpu_windows,"
                  " node_unattributed_us, node_attributed_us, coalesce(unattributed_share::text,"
                  " 'null') FROM audit.gpu_reconciliation ORDER BY 1, 3, 2");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    /* by hand: node a 22h: share 400 / (2500 + 1000 + 3500 + 400) = 0.054054 (6 decimals) */
    static const char *const want[][11] = {
        {"edge/fra1/node-a", "acme", "2026-11-27 22", "700", "0", "700", "1", "0", "0", "0",
         "null"},
        {"edge/fra1/node-a", "acme", "2026-11-27 23", "6000", "6000", "0", "3", "2", "400", "7000",
         "0.054054"},
        {"edge/fra1/node-a", "globex", "2026-11-27 23", "0", "1000", "-1000", "0", "1", "400",
         "7000", "0.054054"},
        {"edge/fra1/node-b", "acme", "2026-11-27 23", "100", "5000", "-4900", "1", "2", "0", "5000",
         "0.000000"},
    };
    ck_assert_int_eq(PQntuples(r), (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < PQntuples(r); i++)
        for (int k = 0; k < 11; k++)
            ck_assert_msg(!strcmp(PQgetvalue(r, i, k), want[i][k]),
                          "row %d column %d: got %s, want %s", i, k, PQgetvalue(r, i, k),
                          want[i][k]);
    PQclear(r);
    /* unit economics by hand: the fleet default costs 9.00 per GPU-hour from 22:00, fra1 its
     * own 2.50 from 23:00 */
    gm_test_pg_exec(c, "INSERT INTO gm.cost_cards (site, version, valid_from, currency,"
                       " gpu_hour_cost, reference_per_1m_output) VALUES"
                       " ('*', 1, '2026-11-27 22:00+00', 'USD', 9.00, NULL),"
                       " ('fra1', 1, '2026-11-27 23:00+00', 'USD', 2.50, 0.60)");
    r = PQexec(c, "SELECT basis, tenant, model, to_char(hour AT TIME ZONE 'UTC', 'HH24'), gpu_us,"
                  " output_tokens, cost_card_site, gpu_cost, coalesce(cost_per_1m_output_tokens"
                  "::text, 'null'), coalesce(reference_per_1m_output_tokens::text, 'null'),"
                  " (margin = revenue - gpu_cost)::text, coalesce(revenue_currency, 'null')"
                  " FROM audit.gpu_economics ORDER BY 1, 4, 2");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    /* requests, 22h: 700 us x 9 / 3.6e9 = 0.00000175; 23h: (6000 + 100) us x 2.5 / 3.6e9 =
     * 0.0000042361111…, 18 decimals ...111111; per 1M of 40 output tokens: 4.236111111111 / 40.
     * windows, 23h: acme 2500 + 3500 + 5000 = 11000 us -> 0.00000763888…89; globex 1000 us,
     * no usage, no revenue: 0.000000694444444444. */
    static const char *const econ[][12] = {
        {"requests", "acme", "llama-3.1-70b-instruct", "22", "700", "10", "*",
         "0.000001750000000000", "0.175000000000000000", "null", "true", "USD"},
        {"requests", "acme", "llama-3.1-70b-instruct", "23", "6100", "40", "fra1",
         "0.000004236111111111", "0.105902777777775000", "0.600000000000", "true", "USD"},
        {"windows", "acme", "*", "22", "0", "10", "*", "0.000000000000000000",
         "0.000000000000000000", "null", "true", "USD"},
        {"windows", "acme", "*", "23", "11000", "40", "fra1", "0.000007638888888889",
         "0.190972222222225000", "0.600000000000", "true", "USD"},
        {"windows", "globex", "*", "23", "1000", "0", "fra1", "0.000000694444444444", "null",
         "0.600000000000", "true", "null"},
    };
    ck_assert_int_eq(PQntuples(r), (int)(sizeof econ / sizeof econ[0]));
    for (int i = 0; i < PQntuples(r); i++)
        for (int k = 0; k < 12; k++)
            ck_assert_msg(!strcmp(PQgetvalue(r, i, k), econ[i][k]),
                          "economics row %d column %d: got %s, want %s", i, k, PQgetvalue(r, i, k),
                          econ[i][k]);
    PQclear(r);
    /* revenue is the ledger's list amount */
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_economics g WHERE basis = 'requests'"
                              " AND revenue <> (SELECT sum(amount) FROM audit.usage_events u"
                              " WHERE u.tenant = g.tenant AND u.site = g.site AND u.model = g.model"
                              " AND date_trunc('hour', u.time) = g.hour)"),
                     0);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_economics WHERE revenue = 0 AND"
                              " tenant = 'acme'"),
                     0);
    /* the auditor reads both views */
    gm_test_pg_exec(c, "SET ROLE gm_auditor");
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_reconciliation"), 4);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_windows"), 6);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_source_gaps WHERE source ="
                              " 'edge/fra1/node-b/gpu' AND first_missing = 2 AND last_missing = 3"),
                     1);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_source_gaps"), 1);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_economics"), 5);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.cost_cards"), 2);
    gm_test_pg_exec(c, "RESET ROLE");
    PQfinish(c);
    gm_test_topic_delete(gpu_topic);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rater_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_gpu_windows_exactly_once_through_kill9);
    tcase_add_test(tc, test_gpu_windows_exactly_once_when_a_frozen_rater_wakes_up);
    tcase_add_test(tc, test_gpu_batch_of_a_rater_that_lost_the_race_is_fenced);
    tcase_add_test(tc, test_gpu_reconciliation_shows_the_node_that_under_reports);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
