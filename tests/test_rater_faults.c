/* Integration (issue 12, "no unchecked result on the path of an event"): the rater's Kafka and
 * PostgreSQL calls made to fail on purpose through the test-only seam of rater/faults.h,
 * against the real broker and PostgreSQL, with gm_rater_run in a thread of the test.
 *
 *   - a refused partition assignment (usage and GPU consumer): the rater rejoins its group,
 *     and every event is rated once;
 *   - failing low-watermark queries: an offset hole (a transaction marker) is never accepted
 *     as "gone from the broker" while the broker has not answered; once it answers, the hole
 *     is accepted after three answered seeks and the events behind it are rated;
 *   - ledger partition creation failing at start (the rater refuses to start, naming it)
 *     and while running (counted, retried; events go on being rated);
 *   - the pipeline (issue 19, --pipeline 1): commits that fail in the middle of a pipelined
 *     run (refused, committed but reported lost, the connection killed by PostgreSQL) drop
 *     the prepared batch and rewind, and the ledger equals what was sent exactly; the same
 *     event (and claims on its identity) in batch N and N+1 is a duplicate (or a conflict)
 *     exactly as within one batch; the same in sequential mode (--pipeline 0). */
#include "faults.h"
#include "gm_rater.h"
#include "rater_harness.h"
#include "rater_int.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define H0 INT64_C(1795816800000000) /* 2026-11-27T22:00:00Z */

/* ---- the rater in a thread ------------------------------------------------------------ */
typedef struct rater_thread {
    gm_rater_config cfg;
    volatile sig_atomic_t stop;
    pthread_t th;
    int rc;
    char err[1024];
} rater_thread;

static void *rater_main(void *arg)
{
    rater_thread *t = arg;
    t->rc = gm_rater_run(&t->cfg, &t->stop, t->err, sizeof t->err);
    return NULL;
}

static void rater_config(rater_thread *t, const h_env *e, const char *gpu_topic)
{
    memset(t, 0, sizeof *t);
    gm_rater_config_init(&t->cfg);
    t->cfg.brokers = e->brokers;
    t->cfg.topic = e->topic;
    t->cfg.group_id = e->group;
    t->cfg.db_conninfo = e->conninfo;
    t->cfg.rater_id = "faults";
    t->cfg.batch_max = 2000;
    t->cfg.batch_ms = 100;
    t->cfg.session_timeout_ms = 6000;
    t->cfg.book_reload_s = 0;
    t->cfg.gpu_topic = gpu_topic ? gpu_topic : "";
}

static void rater_start(rater_thread *t)
{
    ck_assert_int_eq(pthread_create(&t->th, NULL, rater_main, t), 0);
}

static int rater_stop(rater_thread *t)
{
    t->stop = 1;
    ck_assert_int_eq(pthread_join(t->th, NULL), 0);
    return t->rc;
}

/* ---- PostgreSQL ------------------------------------------------------------------------ */
static int64_t q_i64(const h_env *e, const char *sql)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(v != NULL, "no value: %s", sql);
    int64_t n = atoll(v);
    free(v);
    PQfinish(c);
    return n;
}

/* Waits up to timeout_s for `sql` to reach `want`; returns the last value. */
static int64_t wait_value(const h_env *e, const char *sql, int64_t want, int timeout_s)
{
    int64_t got = -1;
    for (int i = 0; i < timeout_s * 5; i++) {
        if ((got = q_i64(e, sql)) >= want)
            break;
        usleep(200000);
    }
    return got;
}

/* ---- transactional producer: each commit marker takes an offset (a hole) --------------- */
static rd_kafka_t *txn_producer(const h_env *e, const char *txid)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "transactional.id", txid, err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err) == 0);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    rd_kafka_error_t *ke = rd_kafka_init_transactions(p, 60000);
    ck_assert_msg(ke == NULL, "init_transactions: %s", ke ? rd_kafka_error_string(ke) : "");
    return p;
}

static void send_event(rd_kafka_t *p, const char *topic, const gm_event *ev)
{
    char buf[GM_EVENT_MAX_BYTES + 1];
    size_t len = gm_event_encode(ev, buf, sizeof buf);
    ck_assert_msg(len > 0, "encode %s#%s", ev->source, ev->id);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(ev->source, strlen(ev->source)),
        RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    ck_assert_msg(err == 0, "produce: %s", rd_kafka_err2str(err));
}

static void usage_event(gm_event *ev, uint64_t seq)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/fra1/faults-1");
    snprintf(ev->id, sizeof ev->id, "u-%06llu", (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", h_tenants[0]);
    snprintf(ev->site, sizeof ev->site, "%s", h_sites[0]);
    snprintf(ev->model, sizeof ev->model, "%s", h_models[0]);
    ev->seq = seq;
    ev->time_us = H0 + (int64_t)seq * GM_US_PER_SEC;
    ev->input_tokens = 100;
    ev->output_tokens = 10;
}

static void gpu_event(gm_event *ev, uint64_t seq)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_GPU;
    snprintf(ev->source, sizeof ev->source, "edge/fra1/faults-1/gpu");
    snprintf(ev->id, sizeof ev->id, "w-%06llu", (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "acme");
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->device, sizeof ev->device, "gpu0");
    snprintf(ev->policy, sizeof ev->policy, "kernel-share-v1");
    ev->seq = seq;
    ev->window_start_us = H0 + (int64_t)seq * 10 * GM_US_PER_SEC;
    ev->window_end_us = ev->window_start_us + 10 * GM_US_PER_SEC;
    ev->time_us = ev->window_end_us;
    ev->gpu_us = 1000 + (int64_t)seq;
}

/* Two committed transactions of `per` events each on partition 0 of topic: offsets 0..per-1,
 * a marker at per, then per+1..2per, a marker at 2per+1. */
static void produce_two_transactions(const h_env *e, const char *topic, bool gpu, int per)
{
    char txid[200];
    snprintf(txid, sizeof txid, "%s.txn", topic);
    rd_kafka_t *p = txn_producer(e, txid);
    gm_event ev;
    uint64_t seq = 0;
    for (int t = 0; t < 2; t++) {
        rd_kafka_error_t *ke = rd_kafka_begin_transaction(p);
        ck_assert_msg(ke == NULL, "begin: %s", ke ? rd_kafka_error_string(ke) : "");
        for (int i = 0; i < per; i++) {
            if (gpu)
                gpu_event(&ev, ++seq);
            else
                usage_event(&ev, ++seq);
            send_event(p, topic, &ev);
        }
        ke = rd_kafka_commit_transaction(p, 60000);
        ck_assert_msg(ke == NULL, "commit: %s", ke ? rd_kafka_error_string(ke) : "");
    }
    rd_kafka_destroy(p);
}

/* ---- a plain idempotent producer ------------------------------------------------------ */
static rd_kafka_t *plain_producer(const h_env *e)
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

/* ---- a refused assignment: the rater rejoins, nothing is lost ------------------------- */
START_TEST(test_refused_assignment_rejoins_and_rates_everything)
{
    h_env e;
    h_env_open(&e, "faults_assign", 3);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic tr = {.sources = 6, .events = 600, .dup_permille = 50, .seed = 5};
    h_produce(&e, &tr, &x);
    int64_t messages = x.events + x.duplicates + x.malformed;

    gm_rater_faults_set(GM_RATER_FAULT_ASSIGN, 2); /* the first two assignments fail */
    rater_thread t;
    rater_config(&t, &e, NULL);
    rater_start(&t);
    int64_t got = h_wait_accounted(&e, messages, 120);
    ck_assert_int_eq(rater_stop(&t), 0);
    ck_assert_msg(got == messages, "%lld of %lld messages accounted for after refused assignments",
                  (long long)got, (long long)messages);
    ck_assert_int_eq(gm_rater_faults_injected(GM_RATER_FAULT_ASSIGN), 2);
    ck_assert_uint_eq(gm_rater_metrics.assign_failures, 2);
    h_verify(&e, &x);
    h_env_close(&e);
}
END_TEST

/* ---- watermark query failures: no gap accepted without the broker's answer ------------ */
START_TEST(test_failed_watermark_queries_never_accept_a_gap)
{
    h_env e;
    h_env_open(&e, "faults_wm", 1);
    produce_two_transactions(&e, e.topic, false, 10);

    gm_rater_faults_set(GM_RATER_FAULT_WATERMARK, 1000000); /* the broker never answers */
    rater_thread t;
    rater_config(&t, &e, NULL);
    rater_start(&t);
    /* the first transaction is rated; the hole at offset 10 stops the partition there */
    ck_assert_int_eq(wait_value(&e, "SELECT count(*) FROM gm.ledger", 10, 90), 10);
    for (int i = 0; i < 100 && gm_rater_faults_injected(GM_RATER_FAULT_WATERMARK) < 5; i++)
        usleep(100000);
    ck_assert_int_ge(gm_rater_faults_injected(GM_RATER_FAULT_WATERMARK), 5);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.ledger"), 10);
    ck_assert_uint_eq(gm_rater_metrics.offset_gaps, 0);
    ck_assert_uint_ge(gm_rater_metrics.watermark_failures, 5);
    ck_assert_int_eq(q_i64(&e, "SELECT coalesce(max(next_offset), -1) FROM gm.consumer_offsets"),
                     10);

    /* the broker answers again: the marker's offset is accepted (after three answered
     * seeks) and the second transaction is rated, each event once */
    gm_rater_faults_set(GM_RATER_FAULT_WATERMARK, 0);
    ck_assert_int_eq(wait_value(&e, "SELECT count(*) FROM gm.ledger", 20, 90), 20);
    ck_assert_int_eq(rater_stop(&t), 0);
    ck_assert_uint_eq(gm_rater_metrics.offset_gaps, 1);
    ck_assert_int_eq(q_i64(&e, "SELECT count(DISTINCT (source, seq)) FROM gm.ledger"), 20);
    ck_assert_int_eq(q_i64(&e, "SELECT coalesce(max(next_offset), -1) FROM gm.consumer_offsets"),
                     21);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM audit.source_gaps"), 0);
    h_env_close(&e);
}
END_TEST

/* ---- the GPU window consumer: the same two failures ----------------------------------- */
START_TEST(test_gpu_consumer_checks_assignment_and_watermark)
{
    h_env e;
    h_env_open(&e, "faults_gpu", 1);
    char gpu_topic[160];
    gm_test_topic_name("faults_gpu_w", gpu_topic, sizeof gpu_topic);
    gm_test_topic_create(gpu_topic, 1);
    produce_two_transactions(&e, gpu_topic, true, 5);

    gm_rater_faults_set(GM_RATER_FAULT_GPU_ASSIGN, 1);
    gm_rater_faults_set(GM_RATER_FAULT_GPU_WATERMARK, 1000000);
    rater_thread t;
    rater_config(&t, &e, gpu_topic);
    rater_start(&t);
    ck_assert_int_eq(wait_value(&e, "SELECT count(*) FROM gm.gpu_windows", 5, 120), 5);
    for (int i = 0; i < 100 && gm_rater_faults_injected(GM_RATER_FAULT_GPU_WATERMARK) < 5; i++)
        usleep(100000);
    ck_assert_int_ge(gm_rater_faults_injected(GM_RATER_FAULT_GPU_WATERMARK), 5);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.gpu_windows"), 5);
    ck_assert_uint_eq(gm_rater_metrics.gpu_offset_gaps, 0);
    ck_assert_uint_ge(gm_rater_metrics.gpu_watermark_failures, 5);
    ck_assert_int_eq(gm_rater_faults_injected(GM_RATER_FAULT_GPU_ASSIGN), 1);
    ck_assert_uint_eq(gm_rater_metrics.gpu_assign_failures, 1);

    gm_rater_faults_set(GM_RATER_FAULT_GPU_WATERMARK, 0);
    ck_assert_int_eq(wait_value(&e, "SELECT count(*) FROM gm.gpu_windows", 10, 90), 10);
    ck_assert_int_eq(rater_stop(&t), 0);
    ck_assert_uint_eq(gm_rater_metrics.gpu_offset_gaps, 1);
    ck_assert_int_eq(q_i64(&e, "SELECT count(DISTINCT seq) FROM gm.gpu_windows"), 10);
    ck_assert_int_eq(q_i64(&e, "SELECT coalesce(sum(gpu_us), 0) FROM gm.gpu_windows"),
                     10 * 1000 + 55);
    gm_test_topic_delete(gpu_topic);
    h_env_close(&e);
}
END_TEST

/* ---- ledger partitions: refused start, and failures while running --------------------- */
START_TEST(test_partition_creation_failures_are_checked)
{
    h_env e;
    h_env_open(&e, "faults_parts", 2);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic tr = {.sources = 4, .events = 400, .seed = 7};
    h_produce(&e, &tr, &x);

    /* at start: the rater refuses to start and says why; nothing is consumed */
    gm_rater_faults_set(GM_RATER_FAULT_PARTITIONS, 1);
    rater_thread t;
    rater_config(&t, &e, NULL);
    t.rc = gm_rater_run(&t.cfg, &t.stop, t.err, sizeof t.err);
    ck_assert_int_eq(t.rc, GM_EDB);
    ck_assert_msg(strstr(t.err, "ledger partitions not created, not starting") != NULL, "%s",
                  t.err);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.consumer_offsets"), 0);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.ledger"), 0);

    /* while running: every failure is counted and retried, and rating goes on */
    gm_rater__partitions_every_us = 300000;
    gm_rater__partitions_retry_us = 300000;
    rater_config(&t, &e, NULL);
    rater_start(&t);
    int64_t messages = x.events + x.duplicates + x.malformed;
    ck_assert_int_eq(h_wait_accounted(&e, messages, 120), messages);
    gm_rater_faults_set(GM_RATER_FAULT_PARTITIONS, 3);
    for (int i = 0; i < 100 && gm_rater_faults_injected(GM_RATER_FAULT_PARTITIONS) < 4; i++)
        usleep(100000);
    ck_assert_int_eq(gm_rater_faults_injected(GM_RATER_FAULT_PARTITIONS), 4); /* 1 + 3 */
    h_traffic more = {.sources = 4, .events = 200, .seed = 8, .source_base = 10};
    h_produce(&e, &more, &x);
    messages = x.events + x.duplicates + x.malformed;
    ck_assert_int_eq(h_wait_accounted(&e, messages, 120), messages);
    ck_assert_int_eq(rater_stop(&t), 0);
    ck_assert_uint_eq(gm_rater_metrics.partition_failures, 4);
    h_verify(&e, &x);
    h_env_close(&e);
}
END_TEST

/* ---- the pipeline: failed commits in the middle of a run ------------------------------- */
/* Waits until the rater committed at least n batches (read from its own thread's counter:
 * a relaxed read is enough to act "in the middle of the run"). */
static bool wait_batches(uint64_t n, int timeout_s)
{
    for (int i = 0; i < timeout_s * 100; i++) {
        if (__atomic_load_n(&gm_rater_metrics.batches, __ATOMIC_RELAXED) >= n)
            return true;
        usleep(10000);
    }
    return false;
}

static void commit_faults_mid_run(int pipeline)
{
    h_env e;
    h_env_open(&e, pipeline ? "faults_pipe" : "faults_seq", 3);
    h_expect x;
    memset(&x, 0, sizeof x);
    /* a backlog, so that a batch is always being prepared while another one commits */
    h_traffic tr = {
        .sources = 12, .events = 24000, .dup_permille = 60, .malformed_permille = 5, .seed = 19};
    h_produce(&e, &tr, &x);
    int64_t messages = x.events + x.duplicates + x.malformed;
    memset(&gm_rater_metrics, 0, sizeof gm_rater_metrics);
    rater_thread t;
    rater_config(&t, &e, NULL);
    t.cfg.batch_max = 300;
    t.cfg.pipeline = pipeline;
    rater_start(&t);
    long base_commit = gm_rater_faults_injected(GM_RATER_FAULT_COMMIT);
    long base_lost = gm_rater_faults_injected(GM_RATER_FAULT_COMMIT_LOST);
    ck_assert_msg(wait_batches(5, 120), "no 5 batches committed in 120 s");
    /* refused (rolled back, as a serialization failure would be) */
    gm_rater_faults_set(GM_RATER_FAULT_COMMIT, 2);
    for (int i = 0; i < 3000 && gm_rater_faults_injected(GM_RATER_FAULT_COMMIT) - base_commit < 2;
         i++)
        usleep(10000);
    uint64_t at = __atomic_load_n(&gm_rater_metrics.batches, __ATOMIC_RELAXED);
    ck_assert_msg(wait_batches(at + 3, 120), "no progress after refused commits");
    /* committed, but the rater is told the connection broke: it must not do them again */
    gm_rater_faults_set(GM_RATER_FAULT_COMMIT_LOST, 2);
    for (int i = 0;
         i < 3000 && gm_rater_faults_injected(GM_RATER_FAULT_COMMIT_LOST) - base_lost < 2; i++)
        usleep(10000);
    at = __atomic_load_n(&gm_rater_metrics.batches, __ATOMIC_RELAXED);
    ck_assert_msg(wait_batches(at + 3, 120), "no progress after lost commits");
    /* PostgreSQL ends the rater's session, whatever it is doing (a commit, most likely) */
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char *v = gm_test_pg_value(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE application_name = 'gridmeter-rater'"
                                  " AND datname = current_database()");
    free(v);
    PQfinish(c);
    int64_t got = h_wait_accounted(&e, messages, 240);
    ck_assert_int_eq(rater_stop(&t), 0);
    ck_assert_msg(got == messages, "%lld of %lld messages accounted for", (long long)got,
                  (long long)messages);
    ck_assert_int_eq(gm_rater_faults_injected(GM_RATER_FAULT_COMMIT) - base_commit, 2);
    ck_assert_int_eq(gm_rater_faults_injected(GM_RATER_FAULT_COMMIT_LOST) - base_lost, 2);
    ck_assert_uint_ge(gm_rater_metrics.batch_failures, 4);
    if (pipeline) {
        /* the pipeline ran, and failures dropped what had been prepared behind them */
        ck_assert_uint_gt(gm_rater_metrics.pipelined_batches, 10);
        ck_assert_uint_ge(gm_rater_metrics.pipeline_drops, 1);
    } else {
        ck_assert_uint_eq(gm_rater_metrics.pipelined_batches, 0);
        ck_assert_uint_eq(gm_rater_metrics.pipeline_drops, 0);
    }
    /* the ledger is the manifest exactly: nothing lost, nothing twice, charges == ledger,
     * stored offsets at the high watermarks */
    h_verify(&e, &x);
    /* the messages the lost commits wrote were not counted again */
    ck_assert_int_eq(q_i64(&e, "SELECT coalesce(sum(messages), 0) FROM gm.batches"), messages);
    h_env_close(&e);
}

START_TEST(test_pipelined_commit_faults_lose_and_double_nothing)
{
    commit_faults_mid_run(1);
}
END_TEST

START_TEST(test_sequential_commit_faults_lose_and_double_nothing)
{
    commit_faults_mid_run(0);
}
END_TEST

/* ---- the pipeline: the same event in batch N and N+1 ----------------------------------- */
/* One partition, batches of 4: group k is e(3k+1), e(3k+2), e(3k+3) and then a claim on
 * e(3k), the last event of the group before, which is in the batch before (or the one in
 * flight while this one is prepared). The claim is, by turns, the same event again (a
 * duplicate), its id and seq with other content (content_differs), its seq under a new id
 * (seq_taken), or its id under a new seq (id_reused). */
static void same_event_in_consecutive_batches(int pipeline)
{
    h_env e;
    h_env_open(&e, pipeline ? "faults_nn1" : "faults_nn1_seq", 1);
    rd_kafka_t *p = plain_producer(&e);
    const int groups = 60;
    gm_event ev, claim;
    int64_t input_sum = 0, dups = 0, conflicts[3] = {0, 0, 0};
    uint64_t extra_seq = 100000; /* seqs the id_reused claims use (never accepted) */
    for (int k = 0; k < groups; k++) {
        for (int j = 1; j <= 3; j++) {
            usage_event(&ev, (uint64_t)(3 * k + j));
            ev.input_tokens = 100 + 3 * k + j;
            input_sum += ev.input_tokens;
            send_event(p, e.topic, &ev);
        }
        if (k == 0)
            continue;
        usage_event(&claim, (uint64_t)(3 * k));
        claim.input_tokens = 100 + 3 * k;
        switch (k % 4) {
        case 0:
            dups++;
            break; /* byte for byte the accepted event */
        case 1:
            claim.output_tokens += 1; /* same id and seq, other content */
            conflicts[0]++;
            break;
        case 2:
            snprintf(claim.id, sizeof claim.id, "other-%06d", k); /* its seq, another id */
            conflicts[1]++;
            break;
        case 3:
            claim.seq = ++extra_seq; /* its id, another seq */
            conflicts[2]++;
            break;
        }
        send_event(p, e.topic, &claim);
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);
    int64_t messages = groups * 3 + groups - 1;

    memset(&gm_rater_metrics, 0, sizeof gm_rater_metrics);
    rater_thread t;
    rater_config(&t, &e, NULL);
    t.cfg.batch_max = 4;
    t.cfg.pipeline = pipeline;
    rater_start(&t);
    int64_t got = h_wait_accounted(&e, messages, 180);
    ck_assert_int_eq(rater_stop(&t), 0);
    ck_assert_msg(got == messages, "%lld of %lld messages accounted for", (long long)got,
                  (long long)messages);
    /* every event once, each claim where L5 puts it */
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.ledger"), groups * 3);
    ck_assert_int_eq(q_i64(&e, "SELECT count(DISTINCT event_id) FROM gm.ledger"), groups * 3);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.ledger WHERE event_id LIKE 'other-%'"), 0);
    ck_assert_int_eq(q_i64(&e, "SELECT sum(input_tokens) FROM gm.ledger"), input_sum);
    ck_assert_int_eq(q_i64(&e, "SELECT sum(quantity)::bigint FROM gm.charges"
                               " WHERE dimension = 'input'"),
                     input_sum);
    ck_assert_int_eq(q_i64(&e, "SELECT sum(duplicates) FROM gm.batches"), dups);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM audit.conflicting_events"
                               " WHERE kind = 'content_differs'"),
                     conflicts[0]);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM audit.conflicting_events"
                               " WHERE kind = 'seq_taken'"),
                     conflicts[1]);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM audit.conflicting_events"
                               " WHERE kind = 'id_reused'"),
                     conflicts[2]);
    ck_assert_int_eq(q_i64(&e, "SELECT sum(conflicts) FROM gm.batches"),
                     conflicts[0] + conflicts[1] + conflicts[2]);
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0"),
                     0);
    /* each claim is 4 messages after its accepted event, so with batches of at most 4 it
     * met that event in an earlier batch (another transaction), never in its own: what this
     * test is about */
    ck_assert_int_eq(q_i64(&e, "SELECT count(*) FROM gm.conflicting_events c"
                               " JOIN gm.ledger_rows l ON l.kafka_offset = c.accepted_kafka_offset"
                               " AND l.event_id = c.accepted_event_id"
                               " WHERE l.xmin::text <> c.xmin::text"),
                     conflicts[0] + conflicts[1] + conflicts[2]);
    ck_assert_int_eq(q_i64(&e, "SELECT coalesce(max(next_offset), -1) FROM gm.consumer_offsets"),
                     messages);
    if (pipeline)
        ck_assert_uint_gt(gm_rater_metrics.pipelined_batches, 10);
    h_env_close(&e);
}

START_TEST(test_pipelined_same_event_in_consecutive_batches)
{
    same_event_in_consecutive_batches(1);
}
END_TEST

START_TEST(test_sequential_same_event_in_consecutive_batches)
{
    same_event_in_consecutive_batches(0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rater_faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_refused_assignment_rejoins_and_rates_everything);
    tcase_add_test(tc, test_failed_watermark_queries_never_accept_a_gap);
    tcase_add_test(tc, test_gpu_consumer_checks_assignment_and_watermark);
    tcase_add_test(tc, test_partition_creation_failures_are_checked);
    tcase_add_test(tc, test_pipelined_commit_faults_lose_and_double_nothing);
    tcase_add_test(tc, test_sequential_commit_faults_lose_and_double_nothing);
    tcase_add_test(tc, test_pipelined_same_event_in_consecutive_batches);
    tcase_add_test(tc, test_sequential_same_event_in_consecutive_batches);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
