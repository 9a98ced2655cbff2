/* The node client: record() into the spool, and the pump thread that makes the spool durable,
 * produces it with the idempotent producer and turns delivery reports into acknowledgements.
 *
 * DESIGN. Callers never touch librdkafka: record() encodes the event straight into the spool
 * (under the spool's lock, which also orders seqs) and, when the pump sleeps, wakes it through
 * an eventfd. The pump is the one thread that produces and polls. Its loop:
 *   1. a fatal producer error (error_cb sets a flag) -> purge, destroy, rebuild the producer,
 *      hand every in-flight record out again;
 *   2. sync the spool (fsync policy) -> only durable records are handed out;
 *   3. take records and produce them keyed by source; QUEUE_FULL gives the rest back and
 *      polls until the queue drains (the spool keeps them);
 *   4. poll: delivery reports ack (success) or hand the record out again (any error: it was
 *      not written, or we cannot know; a duplicate is removed downstream);
 *   5. every 100 ms reclaim: fully acknowledged segments are deleted;
 *   6. sleep on the eventfd, which both record() and librdkafka's main queue signal.
 *
 * EPOCHS. The node's epoch is decided once, at open, from the spool's state and the config
 * (gm_node_open in gm_node.h); every usage event recorded after carries it in data.epoch
 * and an id that names it, so a node that lost its state never reuses a seq silently.
 */
#include "gm_node.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define COMP             "node"
#define TAKE_BATCH       2048
#define RECLAIM_EVERY_US (100 * 1000)
#define ERROR_BACKOFF_US (100 * 1000)
#define LOG_EVERY_US     (5 * GM_US_PER_SEC)
#define ACK_BATCH        4096

struct gm_node {
    gm_node_config cfg;
    char *brokers, *topic, *source, *site, *spool_dir;
    char **props;
    gm_spool *sp;
    uint64_t epoch; /* data.epoch of usage events recorded by this process */
    bool new_epoch; /* started by this open */

    pthread_mutex_t rk_mu; /* guards rk swaps against gm_node__inject_fatal */
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *mainq;

    pthread_t pump;
    bool pump_started;
    int wake_fd;
    atomic_int sleeping;
    atomic_bool stop;
    atomic_bool fatal;
    atomic_bool force_sync;
    _Atomic int64_t backoff_until_us;
    int64_t last_err_log_us, last_dr_log_us;
    uint64_t dr_errors_since_log;

    _Atomic uint64_t recorded, acked, delivery_errors, produced, queue_full, rebuilds;
    /* gm_node_sync waiters: the pump broadcasts after each spool sync while there are any */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    atomic_int sync_waiters;
    /* successful delivery reports, applied to the spool under one lock per poll (they are
     * only touched by the thread that polls: the pump, or close after the pump ended) */
    uint64_t acks[ACK_BATCH];
    size_t n_acks;
};

static void acks_flush(gm_node *n)
{
    if (!n->n_acks)
        return;
    atomic_fetch_add_explicit(&n->acked, n->n_acks, memory_order_relaxed);
    gm_spool_ack_many(n->sp, n->acks, n->n_acks);
    n->n_acks = 0;
}

/* rd_kafka_poll, then the acknowledgements it collected go to the spool. */
static void poll_acks(gm_node *n, int timeout_ms)
{
    rd_kafka_poll(n->rk, timeout_ms);
    acks_flush(n);
}

void gm_node_config_init(gm_node_config *c)
{
    memset(c, 0, sizeof *c);
    c->topic = GM_NODE_DEFAULT_TOPIC;
    c->spool_max_bytes = (uint64_t)1 << 30;
    c->fsync = GM_NODE_FSYNC_BATCH;
    c->fsync_interval_ms = 100;
    c->linger_ms = 5;
    c->message_timeout_ms = 300000;
    c->close_timeout_ms = 5000;
}

uint64_t gm_node_next_epoch(uint64_t previous)
{
    int64_t now_s = gm_now_us() / GM_US_PER_SEC;
    uint64_t e = now_s > 0 ? (uint64_t)now_s : 1;
    return previous >= e ? previous + 1 : e;
}

void gm_node_event_id(const char *source, uint64_t seq, char *buf, size_t buf_len)
{
    gm_node_event_id_epoch(source, 0, seq, buf, buf_len);
}

void gm_node_event_id_epoch(const char *source, uint64_t epoch, uint64_t seq, char *buf,
                            size_t buf_len)
{
    const char *slash = strrchr(source, '/');
    const char *name = slash ? slash + 1 : source;
    size_t len = strlen(name);
    /* keep "-<20 digits>" (and "-e<16 digits>" in an epoch) inside the id bound */
    size_t keep = GM_EVENT_ID_MAX - 22 - (epoch ? 18 : 0);
    if (len > keep)
        name += len - keep;
    if (!*name)
        name = "node", len = 4;
    else
        len = strlen(name);
    /* "<name>-<seq, at least 12 digits>" without printf: it is on every record's path */
    char digits[24];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    while (nd < 12)
        digits[nd++] = '0';
    char ep[24];
    size_t ne = 0;
    if (epoch) { /* "-e<epoch>" */
        char t[24];
        int nt = 0;
        do {
            t[nt++] = (char)('0' + epoch % 10);
            epoch /= 10;
        } while (epoch);
        ep[ne++] = '-';
        ep[ne++] = 'e';
        while (nt)
            ep[ne++] = t[--nt];
    }
    if (len + ne + 1 + (size_t)nd + 1 > buf_len) {
        if (buf_len)
            buf[0] = '\0';
        return;
    }
    memcpy(buf, name, len);
    memcpy(buf + len, ep, ne);
    len += ne;
    buf[len] = '-';
    for (int i = 0; i < nd; i++)
        buf[len + 1 + (size_t)i] = digits[nd - 1 - i];
    buf[len + 1 + (size_t)nd] = '\0';
}

/* The epoch of this open (gm_node_open in gm_node.h): the spool's, or a new one. */
static int decide_epoch(gm_node *n, char *err, size_t err_len)
{
    bool had = gm_spool_had_state(n->sp);
    uint64_t cur = gm_spool_epoch(n->sp);
    const char *why = NULL;
    if (n->cfg.new_epoch)
        why = had ? "--new-epoch" : "--new-epoch (the spool held no state)";
    else if (!had && n->cfg.missing_state == GM_NODE_STATE_NEW_EPOCH)
        why = "the spool held no state (--new-epoch-if-lost)";
    else if (!had && n->cfg.missing_state == GM_NODE_STATE_REQUIRE)
        return gm_fail(err, err_len, GM_ENOTFOUND,
                       "node %s: spool %s holds no state (no spool.state, no segment), and "
                       "--require-state is set: the spool was lost or wiped (a re-imaged "
                       "node?), so this node's seqs would start again at 1 and reuse seqs of "
                       "events it sent before. Start a new epoch with --new-epoch (its events "
                       "are data.epoch %" PRIu64 ", seq 1, 2, ...), or restore the spool",
                       n->source, n->spool_dir, gm_node_next_epoch(cur));
    if (why) {
        uint64_t e = gm_node_next_epoch(cur);
        int rc = gm_spool_new_epoch(n->sp, e, err, err_len);
        if (rc)
            return rc;
        n->new_epoch = true;
        gm_warn(COMP,
                "msg=\"node state: a new epoch starts, seqs from 1\" source=%s spool=%s "
                "epoch=%" PRIu64 " previous_epoch=%" PRIu64 " reason=\"%s\"",
                n->source, n->spool_dir, e, cur, why);
        cur = e;
    } else if (!had) {
        int rc = gm_spool_save_state(n->sp, err, err_len); /* the next open finds state */
        if (rc)
            return rc;
        gm_info(COMP,
                "msg=\"node state: new spool, first start of this node (epoch 0); a node that "
                "ran before and lost its spool must run with --require-state or --new-epoch\" "
                "source=%s spool=%s",
                n->source, n->spool_dir);
    }
    n->epoch = cur;
    return 0;
}

static void wake(gm_node *n)
{
    uint64_t one = 1;
    if (write(n->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        gm_warn(COMP, "msg=\"cannot wake the pump\" reason=\"%s\"", strerror(errno));
}

/* ---- producer --------------------------------------------------------------------------*/
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    gm_node *n = opaque;
    uint64_t lsn = (uint64_t)(uintptr_t)m->_private;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n->acks[n->n_acks++] = lsn;
        if (n->n_acks == ACK_BATCH)
            acks_flush(n);
        return;
    }
    gm_spool_ack(n->sp, lsn, false);
    atomic_fetch_add_explicit(&n->delivery_errors, 1, memory_order_relaxed);
    int64_t now = gm_mono_us();
    atomic_store(&n->backoff_until_us, now + ERROR_BACKOFF_US);
    n->dr_errors_since_log++;
    if (now - n->last_dr_log_us >= LOG_EVERY_US) {
        gm_warn(COMP,
                "msg=\"delivery failed: the events stay in the spool and are produced again\" "
                "error=%s reason=\"%s\" failed_since_last_log=%" PRIu64,
                rd_kafka_err2name(m->err), rd_kafka_err2str(m->err), n->dr_errors_since_log);
        n->last_dr_log_us = now;
        n->dr_errors_since_log = 0;
    }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    gm_node *n = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        atomic_store(&n->fatal, true);
        wake(n);
        return;
    }
    int64_t now = gm_mono_us();
    if (now - n->last_err_log_us >= LOG_EVERY_US) {
        gm_warn(COMP, "msg=\"kafka client error (it retries)\" error=%s reason=\"%s\"",
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
        n->last_err_log_us = now;
    }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    gm_log(level <= 4 ? GM_LOG_WARN : GM_LOG_DEBUG, "rdkafka", "msg=\"%s\" facility=%s", buf, fac);
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t err_len)
{
    char e[512];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK)
        return gm_fail(err, err_len, GM_ECONFIG, "kafka setting %s=%s: %s", k, v, e);
    return 0;
}

static int producer_create(gm_node *n, char *err, size_t err_len)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char linger[24], timeout[24];
    snprintf(linger, sizeof linger, "%d", n->cfg.linger_ms);
    snprintf(timeout, sizeof timeout, "%d", n->cfg.message_timeout_ms);
    const char *kv[] = {"bootstrap.servers",
                        n->brokers,
                        "client.id",
                        "gridmeter-node",
                        "enable.idempotence",
                        "true",
                        "compression.type",
                        "lz4",
                        "linger.ms",
                        linger,
                        "message.timeout.ms",
                        timeout,
                        "queue.buffering.max.messages",
                        "1000000",
                        "queue.buffering.max.kbytes",
                        "1048576",
                        "batch.num.messages",
                        "10000",
                        "partitioner",
                        GM_NODE_PARTITIONER,
                        NULL};
    int rc = 0;
    for (size_t i = 0; kv[i] && !rc; i += 2)
        rc = conf_set(conf, kv[i], kv[i + 1], err, err_len);
    for (size_t i = 0; n->props && n->props[i] && n->props[i + 1] && !rc; i += 2)
        if (!strcmp(n->props[i], "partitioner") && strcmp(n->props[i + 1], GM_NODE_PARTITIONER))
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         "kafka setting partitioner=%s: the partitioner is fixed to %s (a "
                         "sharded rater rejects a message in another partition than its "
                         "source's, docs/scaling.md \"Placement\")",
                         n->props[i + 1], GM_NODE_PARTITIONER);
        else
            rc = conf_set(conf, n->props[i], n->props[i + 1], err, err_len);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_conf_set_opaque(conf, n);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return gm_fail(err, err_len, GM_ECONFIG, "kafka producer: %s", e);
    }
    conf = NULL; /* now owned by rk */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, n->topic, NULL);
    if (!rkt) {
        rd_kafka_destroy(rk);
        return gm_fail(err, err_len, GM_ECONFIG, "kafka topic %s: %s", n->topic,
                       rd_kafka_err2str(rd_kafka_last_error()));
    }
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk);
    static const uint64_t one = 1;
    rd_kafka_queue_io_event_enable(q, n->wake_fd, &one, sizeof one);
    pthread_mutex_lock(&n->rk_mu);
    n->rk = rk;
    n->rkt = rkt;
    n->mainq = q;
    pthread_mutex_unlock(&n->rk_mu);
    return 0;
}

static void producer_destroy(gm_node *n)
{
    pthread_mutex_lock(&n->rk_mu);
    rd_kafka_t *rk = n->rk;
    rd_kafka_topic_t *rkt = n->rkt;
    rd_kafka_queue_t *q = n->mainq;
    n->rk = NULL;
    n->rkt = NULL;
    n->mainq = NULL;
    pthread_mutex_unlock(&n->rk_mu);
    if (!rk)
        return;
    rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
    rd_kafka_queue_destroy(q);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
}

/* A fatal error leaves the producer unusable: purge it (the purged messages come back as
 * failed delivery reports), destroy it, build a new one and send again from the spool. */
static void rebuild(gm_node *n)
{
    char reason[512] = "";
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(n->rk, reason, sizeof reason);
    gm_error(COMP,
             "msg=\"fatal producer error: rebuilding the producer; the spool sends again what "
             "Kafka did not acknowledge\" error=%s reason=\"%s\"",
             rd_kafka_err2name(e), reason);
    rd_kafka_purge(n->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    poll_acks(n, 0);
    producer_destroy(n);
    gm_spool_reset_inflight(n->sp);
    atomic_store(&n->fatal, false);
    char err[512];
    while (!atomic_load(&n->stop)) {
        if (producer_create(n, err, sizeof err) == 0) {
            atomic_fetch_add(&n->rebuilds, 1);
            return;
        }
        gm_error(COMP, "msg=\"cannot rebuild the producer; retrying in 1 s\" reason=\"%s\"", err);
        usleep(1000 * 1000);
    }
}

/* ---- pump ------------------------------------------------------------------------------*/
/* Produces what the spool hands out; returns how many, and sets *qfull when the producer
 * queue filled up. */
static size_t produce_some(gm_node *n, bool *qfull)
{
    gm_spool_rec recs[TAKE_BATCH];
    size_t total = 0;
    *qfull = false;
    while (total < 64 * TAKE_BATCH) {
        size_t k = gm_spool_take(n->sp, recs, TAKE_BATCH);
        if (!k)
            break;
        for (size_t i = 0; i < k; i++) {
            rd_kafka_resp_err_t e = rd_kafka_producev(
                n->rk, RD_KAFKA_V_RKT(n->rkt), RD_KAFKA_V_KEY(recs[i].key, recs[i].key_len),
                RD_KAFKA_V_VALUE((void *)recs[i].payload, recs[i].payload_len),
                RD_KAFKA_V_OPAQUE((void *)(uintptr_t)recs[i].lsn), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
                total++;
                continue;
            }
            for (size_t j = i; j < k; j++)
                gm_spool_untake(n->sp, recs[j].lsn);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                atomic_fetch_add(&n->queue_full, 1);
                *qfull = true;
            } else {
                int64_t now = gm_mono_us();
                atomic_store(&n->backoff_until_us, now + ERROR_BACKOFF_US);
                if (now - n->last_err_log_us >= LOG_EVERY_US) {
                    gm_warn(COMP,
                            "msg=\"produce refused: the events stay in the spool\" error=%s "
                            "reason=\"%s\"",
                            rd_kafka_err2name(e), rd_kafka_err2str(e));
                    n->last_err_log_us = now;
                }
            }
            atomic_fetch_add_explicit(&n->produced, total, memory_order_relaxed);
            return total;
        }
        poll_acks(n, 0);
    }
    atomic_fetch_add_explicit(&n->produced, total, memory_order_relaxed);
    return total;
}

static void drain_wake(gm_node *n)
{
    uint64_t v;
    while (read(n->wake_fd, &v, sizeof v) > 0)
        ;
}

static void *pump_main(void *arg)
{
    gm_node *n = arg;
    int64_t last_sync = 0, last_reclaim = 0, last_sync_err = 0;
    const int64_t interval_us = (int64_t)n->cfg.fsync_interval_ms * 1000;
    char err[512];
    while (!atomic_load(&n->stop)) {
        if (atomic_load(&n->fatal))
            rebuild(n);
        if (!n->rk)
            break; /* stopping while rebuilding */
        int64_t now = gm_mono_us();
        bool interval = n->cfg.fsync == GM_NODE_FSYNC_INTERVAL;
        if (n->cfg.fsync != GM_NODE_FSYNC_EVENT &&
            (!interval || atomic_exchange(&n->force_sync, false) ||
             now - last_sync >= interval_us)) {
            if (gm_spool_sync(n->sp, err, sizeof err)) {
                if (now - last_sync_err >= LOG_EVERY_US) {
                    gm_error(COMP,
                             "msg=\"spool sync failed; nothing more is produced until it "
                             "succeeds\" reason=\"%s\"",
                             err);
                    last_sync_err = now;
                }
            }
            last_sync = now;
            if (atomic_load(&n->sync_waiters)) {
                pthread_mutex_lock(&n->sync_mu);
                pthread_cond_broadcast(&n->sync_cv);
                pthread_mutex_unlock(&n->sync_mu);
            }
        }
        size_t produced = 0;
        bool qfull = false;
        if (now >= atomic_load(&n->backoff_until_us))
            produced = produce_some(n, &qfull);
        poll_acks(n, 0);
        if (now - last_reclaim >= RECLAIM_EVERY_US) {
            if (gm_spool_reclaim(n->sp, err, sizeof err))
                gm_error(COMP, "msg=\"spool reclaim failed\" reason=\"%s\"", err);
            last_reclaim = now;
        }
        if (qfull) {
            poll_acks(n, 10); /* delivery reports make room */
            continue;
        }
        if (produced)
            continue;
        /* Sleep until record() or librdkafka signals, or the next timer. */
        int timeout_ms = 100;
        int64_t backoff = atomic_load(&n->backoff_until_us) - gm_mono_us();
        atomic_store(&n->sleeping, 1);
        uint64_t backlog = gm_spool_backlog(n->sp);
        if (backlog && backoff > 0)
            timeout_ms = (int)(backoff / 1000) + 1;
        else if (backlog && interval)
            timeout_ms = (int)((last_sync + interval_us - gm_mono_us()) / 1000) + 1;
        else if (backlog)
            timeout_ms = 0;
        if (timeout_ms > 0) {
            struct pollfd pfd = {.fd = n->wake_fd, .events = POLLIN};
            if (timeout_ms > 100)
                timeout_ms = 100;
            poll(&pfd, 1, timeout_ms);
        }
        atomic_store(&n->sleeping, 0);
        drain_wake(n);
    }
    return NULL;
}

/* ---- open / record / close -------------------------------------------------------------*/
int gm_node_open(const gm_node_config *cfg, gm_node **out, char *err, size_t err_len)
{
    if (!cfg->brokers || !*cfg->brokers)
        return gm_fail(err, err_len, GM_ECONFIG, "node: brokers are not set");
    if (!cfg->source || !*cfg->source)
        return gm_fail(err, err_len, GM_ECONFIG, "node: source is not set");
    if (strlen(cfg->source) > GM_EVENT_SOURCE_MAX)
        return gm_fail(err, err_len, GM_ECONFIG, "node: source must be at most %d bytes",
                       GM_EVENT_SOURCE_MAX);
    if (!cfg->site || !*cfg->site)
        return gm_fail(err, err_len, GM_ECONFIG, "node: site is not set");
    if (strlen(cfg->site) > GM_EVENT_SITE_MAX)
        return gm_fail(err, err_len, GM_ECONFIG, "node: site must be at most %d bytes",
                       GM_EVENT_SITE_MAX);
    if (cfg->fsync == GM_NODE_FSYNC_INTERVAL && cfg->fsync_interval_ms <= 0)
        return gm_fail(err, err_len, GM_ECONFIG,
                       "node: fsync_interval_ms must be positive with the interval policy");
    gm_node *n = gm_xcalloc(1, sizeof *n);
    n->cfg = *cfg;
    n->brokers = gm_xstrdup(cfg->brokers);
    n->topic = gm_xstrdup(cfg->topic && *cfg->topic ? cfg->topic : GM_NODE_DEFAULT_TOPIC);
    n->source = gm_xstrdup(cfg->source);
    n->site = gm_xstrdup(cfg->site);
    n->spool_dir = gm_xstrdup(cfg->spool_dir ? cfg->spool_dir : "");
    size_t np = 0;
    while (cfg->kafka_props && cfg->kafka_props[np])
        np++;
    if (np % 2) {
        free(n->brokers);
        free(n->topic);
        free(n->source);
        free(n->site);
        free(n->spool_dir);
        free(n);
        return gm_fail(err, err_len, GM_ECONFIG, "node: kafka_props must come in key, value pairs");
    }
    n->props = gm_xcalloc(np + 1, sizeof *n->props);
    for (size_t i = 0; i < np; i++)
        n->props[i] = gm_xstrdup(cfg->kafka_props[i]);
    n->cfg.kafka_props = NULL;
    pthread_mutex_init(&n->rk_mu, NULL);
    pthread_mutex_init(&n->sync_mu, NULL);
    pthread_cond_init(&n->sync_cv, NULL);
    n->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc;
    if (n->wake_fd < 0) {
        rc = gm_fail(err, err_len, GM_EIO, "node: eventfd: %s", strerror(errno));
        goto fail;
    }
    gm_spool_config sc = {.dir = n->spool_dir,
                          .max_bytes = cfg->spool_max_bytes,
                          .segment_bytes = cfg->segment_bytes,
                          .sync_each = cfg->fsync == GM_NODE_FSYNC_EVENT};
    rc = gm_spool_open(&sc, &n->sp, err, err_len);
    if (rc)
        goto fail;
    rc = decide_epoch(n, err, err_len);
    if (rc)
        goto fail;
    rc = producer_create(n, err, err_len);
    if (rc)
        goto fail;
    if (pthread_create(&n->pump, NULL, pump_main, n)) {
        rc = gm_fail(err, err_len, GM_EIO, "node: cannot start the pump thread");
        goto fail;
    }
    n->pump_started = true;
    gm_spool_stats ss;
    gm_spool_stats_get(n->sp, &ss);
    gm_info(COMP,
            "msg=\"node client open\" source=%s topic=%s spool=%s epoch=%" PRIu64
            " unacked=%" PRIu64 " spool_bytes=%" PRIu64 " spool_max_bytes=%" PRIu64,
            n->source, n->topic, n->spool_dir, n->epoch, ss.unacked, ss.bytes, ss.max_bytes);
    *out = n;
    return 0;
fail:
    gm_node_close(n);
    return rc;
}

void gm_node_close(gm_node *n)
{
    if (!n)
        return;
    if (n->pump_started) {
        char err[256];
        if (gm_node_flush(n, n->cfg.close_timeout_ms, err, sizeof err))
            gm_warn(COMP, "msg=\"close: %s\"", err);
        atomic_store(&n->stop, true);
        wake(n);
        pthread_join(n->pump, NULL);
        if (n->rk) {
            rd_kafka_flush(n->rk, 1000); /* serves the last delivery reports */
            acks_flush(n);
        }
    }
    producer_destroy(n);
    gm_spool_close(n->sp);
    if (n->wake_fd >= 0)
        close(n->wake_fd);
    pthread_mutex_destroy(&n->rk_mu);
    pthread_mutex_destroy(&n->sync_mu);
    pthread_cond_destroy(&n->sync_cv);
    for (size_t i = 0; n->props && n->props[i]; i++)
        free(n->props[i]);
    free(n->props);
    free(n->brokers);
    free(n->topic);
    free(n->source);
    free(n->site);
    free(n->spool_dir);
    free(n);
}

static size_t encode_cb(void *arg, uint64_t seq, char *buf, size_t buf_len, char *err,
                        size_t err_len)
{
    gm_event *ev = arg;
    ev->seq = seq;
    gm_node_event_id_epoch(ev->source, (uint64_t)ev->epoch, seq, ev->id, sizeof ev->id);
    size_t len = gm_event_encode(ev, buf, buf_len);
    if (!len && gm_event_check(ev, err, err_len) == 0)
        gm_fail(err, err_len, GM_EINVAL, "event %s#%s: does not fit %zu bytes", ev->source, ev->id,
                buf_len);
    return len;
}

static void after_append(gm_node *n)
{
    atomic_fetch_add_explicit(&n->recorded, 1, memory_order_relaxed);
    /* With the interval policy the pump wakes on its timer; waking it per event is waste. */
    if (n->cfg.fsync != GM_NODE_FSYNC_INTERVAL && atomic_load(&n->sleeping))
        wake(n);
}

int gm_node_record_event(gm_node *n, gm_event *ev, char *err, size_t err_len)
{
    if (!ev->source[0])
        snprintf(ev->source, sizeof ev->source, "%s", n->source);
    if (!ev->site[0])
        snprintf(ev->site, sizeof ev->site, "%s", n->site);
    if (!ev->time_us)
        ev->time_us = gm_now_us();
    ev->epoch = ev->type == GM_EVENT_USAGE ? (int64_t)n->epoch : 0;
    uint64_t seq;
    int rc = gm_spool_append(n->sp, ev->source, true, encode_cb, ev, &seq, NULL, err, err_len);
    if (rc)
        return rc;
    after_append(n);
    return 0;
}

static int copy_field(char *dst, size_t cap, const char *src, const char *field, bool optional,
                      char *err, size_t err_len)
{
    if (!src || !*src) {
        if (optional) {
            dst[0] = '\0';
            return 0;
        }
        return gm_fail(err, err_len, GM_EINVAL, "%s: is required", field);
    }
    size_t len = strlen(src);
    if (len >= cap)
        return gm_fail(err, err_len, GM_EINVAL, "%s: must be at most %zu bytes, got %zu", field,
                       cap - 1, len);
    memcpy(dst, src, len + 1);
    return 0;
}

int gm_node_record(gm_node *n, const gm_node_usage *u, uint64_t *seq_out, char *err, size_t err_len)
{
    gm_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = GM_EVENT_USAGE;
    int rc;
    if ((rc = copy_field(ev.tenant, sizeof ev.tenant, u->tenant, "subject", false, err, err_len)) ||
        (rc = copy_field(ev.model, sizeof ev.model, u->model, "data.model", false, err, err_len)) ||
        (rc = copy_field(ev.request_id, sizeof ev.request_id, u->request_id, "data.request_id",
                         true, err, err_len)) ||
        (rc = copy_field(ev.source, sizeof ev.source, u->source ? u->source : n->source, "source",
                         false, err, err_len)) ||
        (rc = copy_field(ev.site, sizeof ev.site, u->site ? u->site : n->site, "data.site", false,
                         err, err_len)))
        return rc;
    ev.time_us = u->time_us ? u->time_us : gm_now_us();
    ev.input_tokens = u->input_tokens;
    ev.cached_tokens = u->cached_tokens;
    ev.output_tokens = u->output_tokens;
    ev.gpu_us = u->gpu_us;
    ev.reasoning_tokens = u->reasoning_tokens;
    ev.cache_write_tokens = u->cache_write_tokens;
    ev.service_tier = u->service_tier;
    ev.epoch = (int64_t)n->epoch;
    rc = gm_spool_append(n->sp, ev.source, true, encode_cb, &ev, seq_out, NULL, err, err_len);
    if (rc)
        return rc;
    after_append(n);
    return 0;
}

int gm_node_send_raw(gm_node *n, const char *key, const void *msg, size_t len, char *err,
                     size_t err_len)
{
    int rc = gm_spool_append_raw(n->sp, key ? key : n->source, msg, len, NULL, err, err_len);
    if (rc)
        return rc;
    after_append(n);
    return 0;
}

int gm_node_flush(gm_node *n, int timeout_ms, char *err, size_t err_len)
{
    gm_spool_stats st;
    gm_spool_stats_get(n->sp, &st);
    uint64_t target = st.next_lsn - 1;
    atomic_store(&n->force_sync, true);
    wake(n);
    if (gm_spool_wait_acked(n->sp, target, timeout_ms))
        return 0;
    gm_spool_stats_get(n->sp, &st);
    return gm_fail(err, err_len, GM_EUNAVAIL,
                   "flush: %" PRIu64 " events not acknowledged by Kafka within %d ms; they stay "
                   "in the spool %s and keep being sent",
                   st.unacked, timeout_ms, n->spool_dir);
}

int gm_node_sync(gm_node *n, int timeout_ms, char *err, size_t err_len)
{
    gm_spool_stats st;
    gm_spool_stats_get(n->sp, &st);
    uint64_t target = st.next_lsn - 1;
    if (st.synced_lsn >= target)
        return 0;
    int64_t deadline = gm_mono_us() + (int64_t)timeout_ms * 1000;
    pthread_mutex_lock(&n->sync_mu);
    atomic_fetch_add(&n->sync_waiters, 1);
    atomic_store(&n->force_sync, true);
    wake(n);
    for (;;) {
        gm_spool_stats_get(n->sp, &st);
        int64_t left = deadline - gm_mono_us();
        if (st.synced_lsn >= target || left <= 0)
            break;
        /* a bounded wait on the real clock: the pump broadcasts after each sync */
        if (left > 20000)
            left = 20000;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + left * 1000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&n->sync_cv, &n->sync_mu, &ts);
    }
    atomic_fetch_sub(&n->sync_waiters, 1);
    pthread_mutex_unlock(&n->sync_mu);
    if (st.synced_lsn >= target)
        return 0;
    return gm_fail(err, err_len, GM_EUNAVAIL,
                   "sync: the spool %s was not synced to disk within %d ms (the events are in "
                   "the spool file and stay there)",
                   n->spool_dir, timeout_ms);
}

void gm_node_stats_get(gm_node *n, gm_node_stats *o)
{
    gm_spool_stats st;
    gm_spool_stats_get(n->sp, &st);
    o->recorded = atomic_load(&n->recorded);
    o->acked = atomic_load(&n->acked);
    o->delivery_errors = atomic_load(&n->delivery_errors);
    o->produced = atomic_load(&n->produced);
    o->queue_full = atomic_load(&n->queue_full);
    o->producer_rebuilds = atomic_load(&n->rebuilds);
    o->recovered = st.recovered;
    o->truncated_bytes = st.truncated_bytes;
    o->unacked = st.unacked;
    o->spool_bytes = st.bytes;
    o->spool_max_bytes = st.max_bytes;
    o->last_lsn = st.next_lsn - 1;
    o->acked_lsn = st.acked_lsn;
    o->epoch = n->epoch;
    o->new_epoch = n->new_epoch;
}

int gm_node__inject_fatal(gm_node *n)
{
    pthread_mutex_lock(&n->rk_mu);
    rd_kafka_resp_err_t e =
        n->rk ? rd_kafka_test_fatal_error(n->rk, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                          "injected by a test")
              : RD_KAFKA_RESP_ERR__STATE;
    pthread_mutex_unlock(&n->rk_mu);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : GM_EKAFKA;
}
