/* The rater's main loop: poll a batch, decode, price, commit it exactly once, repeat.
 *
 * DESIGN. PostgreSQL, not Kafka, holds the truth about how far each partition has been
 * rated: on assignment the consumer seeks to gm.consumer_offsets; after every commit the
 * stored offsets move forward in the same transaction as the rows (compare-and-set). Any
 * failure (database error, outcome unknown, fenced by another rater) rolls back or is
 * treated as unknown, and the rater re-reads PostgreSQL's offsets and seeks there: what
 * was committed is skipped, what was not is done again. Nothing is retried blindly.
 * Kafka's committed offsets are written afterwards, for lag tools only.
 *
 * Sharded (cfg->shard_map, rater/shard.c): the rater is assigned its shard's partitions
 * statically (the same assignment path, without a group), checks at start that the database
 * is that shard, and marks its sessions with the shard's name so that the database's fence
 * (SQLSTATE GMS01) refuses a batch written to the wrong one; that refusal stops the rater.
 *
 * PIPELINE (--pipeline 1, the default; docs/operations.md "Pipelining"). The rater thread
 * polls, decodes and prices batch N+1 while a commit thread writes batch N; with 0 it does
 * one after the other. What stays true:
 *   - batches commit one at a time, in order: N+1 is handed over only after N committed, and
 *     its offsets' compare-and-set expects exactly where N left each partition (r->next);
 *   - nothing prepared depends on N's uncommitted outcome: duplicates and conflicts (the
 *     same event in N and N+1) are decided inside N+1's commit, against the seq ranges and
 *     the ledger N committed, never while preparing;
 *   - N fails: N+1 is dropped and the consumer seeks back to PostgreSQL's offsets (a
 *     failure tied to a message is bisected first, as in sequential mode);
 *   - the connection, the writer and the rate book (which prepared rows point into) are the
 *     commit thread's while a batch is in flight: a rebalance (before partitions are given
 *     up or taken), partition upkeep and stopping first wait for it (drain); the book is
 *     refreshed (rater/book_watch.c) between the settling of one batch and the hand-over of
 *     the next, which is priced again when the book was reloaded.
 */
#include "gm_rater.h"
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rating.h"
#include "faults.h"
#include "rater_int.h"
#include "gpu_int.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PARTITIONS 4096
/* flight_finish: the failed batch in flight was committed again in parts (a poison message
 * isolated); what was prepared after it is dropped and the consumer rewinds, without backoff */
#define FLIGHT_REDONE 1

void gm_rater_config_init(gm_rater_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->brokers = GM_DEFAULT_KAFKA_BROKERS;
    cfg->topic = "gridmeter.usage.v1";
    cfg->gpu_topic = "gridmeter.gpu.v1";
    cfg->group_id = "gridmeter-rater";
    cfg->db_conninfo = "";
    cfg->batch_max = 10000; /* bench_rater: faster and lower p99 than 5,000 on 2 cores */
    cfg->batch_ms = 200;
    cfg->pipeline = 1;
    cfg->batch_idle_ms = 5;
    cfg->session_timeout_ms = 10000;
    cfg->book_reload_s = 30;
    cfg->max_future_s = 300;
    cfg->max_age_days = 0; /* off: an old event is priced only where a card was in force */
}

int gm_rater_check_time(const gm_rater_config *cfg, const gm_event *ev, int64_t now_us, char *err,
                        size_t err_len)
{
    char t[40], now[40];
    if (cfg->max_future_s > 0 && ev->time_us > now_us &&
        ev->time_us - now_us > cfg->max_future_s * GM_US_PER_SEC) {
        gm_time_format(ev->time_us, t, sizeof t);
        gm_time_format(now_us, now, sizeof now);
        return gm_fail(err, err_len, GM_EINVAL,
                       "event %s#%s: time: must be at most %lld s after gridmeter's clock "
                       "(rater.max_future_s=%lld), got %s at %s",
                       ev->source, ev->id, (long long)cfg->max_future_s,
                       (long long)cfg->max_future_s, t, now);
    }
    if (cfg->max_age_days > 0 && ev->time_us < now_us &&
        now_us - ev->time_us > cfg->max_age_days * GM_US_PER_DAY) {
        gm_time_format(ev->time_us, t, sizeof t);
        gm_time_format(now_us, now, sizeof now);
        return gm_fail(err, err_len, GM_EINVAL,
                       "event %s#%s: time: must be at most %lld days before gridmeter's clock "
                       "(rater.max_age_days=%lld), got %s at %s",
                       ev->source, ev->id, (long long)cfg->max_age_days,
                       (long long)cfg->max_age_days, t, now);
    }
    return 0;
}

/* One batch: the polled messages and what they became. Two of them: one being filled and
 * prepared by the rater thread while the other is committed by the commit thread. */
typedef struct batch_slot {
    rd_kafka_message_t **msgs;
    gm_event *events; /* by message index */
    gm_ledger_row *rows;
    gm_ledger_reject *rejects;
    char (*reasons)[768];
    gm_ledger_pos *pos;
    int64_t *cut_at; /* [MAX_PARTITIONS]: messages from here on are not rated (contiguity) */
    size_t n_msgs;
    /* what prepare_range made of the messages */
    size_t n_rows, n_rej, n_pos;
    int64_t now_us; /* gridmeter's clock for the batch (time policy) */
    bool poison;    /* prepared as one poison reject (commit_bisect) */
    /* the commit's outcome: written by whichever thread committed it, read after */
    int rc;
    gm_ledger_result res;
    int64_t took_us;
    char err[1024];
} batch_slot;

/* The commit thread (--pipeline 1): it commits one handed-over batch at a time with the
 * rater's connection and writer, which the rater thread leaves alone while `busy`. */
typedef struct committer {
    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    batch_slot *job; /* handed over, not done yet */
    bool quit;
    atomic_bool busy;
} committer;

typedef struct rater {
    const gm_rater_config *cfg;
    char rater_id[128];
    rd_kafka_t *rk;
    PGconn *pg;
    gm_ledger_writer *writer;
    gm_rating_book *book;
    gm_rater_book_watch book_watch; /* reloads after imports (rater/book_watch.c) */
    /* Partitions we own and the next offset PostgreSQL holds for each (-1: no row). */
    bool owned[MAX_PARTITIONS];
    int64_t stored[MAX_PARTITIONS];
    /* Where each partition will stand once the batch in flight commits: what the next batch
     * is prepared from (its contiguity check and its offsets' compare-and-set). Equal to
     * stored[] whenever nothing is in flight. */
    int64_t next[MAX_PARTITIONS];
    /* Offset gaps (see check_contiguity): where the last one was seen, and how often. */
    int64_t gap_at[MAX_PARTITIONS];
    int gap_tries[MAX_PARTITIONS];
    volatile bool rebalanced; /* set by the rebalance callback during a poll */
    /* An assignment rd_kafka_assign refused: the group gave us these partitions but nothing
     * consumes them. Retried from the loop (with PostgreSQL's offsets read again) until it
     * takes or the partitions are revoked. */
    rd_kafka_topic_partition_list_t *pending_assign;
    int assign_tries;
    int64_t assign_retry_at;
    size_t drop_upto; /* messages polled before the last rebalance: stale */
    volatile sig_atomic_t *stop;
    char fatal[1024]; /* the shard fence refused a batch: stop with this reason */
    batch_slot slots[2];
    batch_slot *fill;   /* being polled into and prepared (rater thread) */
    batch_slot *flight; /* handed to the commit thread, not settled yet; NULL: none */
    committer com;
    int pending_failure; /* a batch in flight failed where it could not be handled at once */
    size_t committed;    /* messages committed */
    int failures_in_row;
    int64_t last_activity;
} rater;

static int flight_finish(rater *r, bool may_bisect);

/* Settles the batch in flight before the rater thread uses the connection, the writer or
 * the book (which the batch's rows point into), or changes which partitions it owns. A
 * failure is left in pending_failure for the loop (rewind to PostgreSQL's offsets). */
static void drain(rater *r)
{
    if (!r->flight)
        return;
    int rc = flight_finish(r, false);
    if (rc && !r->pending_failure)
        r->pending_failure = rc;
}

static int pg_reconnect(rater *r, char *err, size_t err_len)
{
    if (r->pg && PQstatus(r->pg) == CONNECTION_OK)
        return 0;
    gm_ledger_writer_free(r->writer);
    r->writer = NULL;
    PQfinish(r->pg);
    r->pg = NULL;
    int64_t backoff_ms = 100;
    while (!*r->stop) {
        r->pg = gm_pg_connect(r->cfg->db_conninfo, "gridmeter-rater", err, err_len);
        if (r->pg)
            break;
        gm_warn("rater", "msg=\"PostgreSQL unavailable, retrying\" retry_ms=%lld error=\"%s\"",
                (long long)backoff_ms, err);
        usleep((useconds_t)backoff_ms * 1000);
        backoff_ms = backoff_ms * 2 < 5000 ? backoff_ms * 2 : 5000; /* 100 ms doubling to 5 s */
    }
    if (!r->pg)
        return GM_EUNAVAIL;
    if (r->cfg->shard && gm_shard_session(r->pg, r->cfg->shard, err, err_len) != 0) {
        PQfinish(r->pg); /* retried at the next batch, like any connection failure */
        r->pg = NULL;
        return GM_EUNAVAIL;
    }
    r->writer = gm_ledger_writer_new(r->pg);
    gm_rater_metrics.pg_reconnects++;
    return 0;
}

int gm_rater__rate_event(const gm_rater_config *cfg, const gm_rating_book *book, const gm_event *ev,
                         int64_t now_us, gm_ledger_row *row, char *reason, size_t reason_len,
                         const char **rule)
{
    if (gm_rater_check_time(cfg, ev, now_us, reason, reason_len) != 0) {
        *rule = "time";
        return GM_EINVAL;
    }
    /* gm_service_tier and gm_rating_svc share one order (standard, batch, priority). */
    gm_usage u = {ev->tenant,  ev->model, ev->site,
                  ev->time_us, {0},       (gm_rating_svc)ev->service_tier};
    gm_rating_usage_tokens(u.qty, ev->input_tokens, ev->cached_tokens, ev->cache_write_tokens,
                           ev->output_tokens, ev->reasoning_tokens, ev->gpu_us);
    gm_event_price price;
    char why[400];
    if (gm_rating_price_event(book, &u, &price, why, sizeof why) != 0) {
        *rule = "rating";
        gm_fail(reason, reason_len, GM_EINVAL, "event %s#%s: rating: %s", ev->source, ev->id, why);
        return GM_EINVAL;
    }
    memset(row, 0, sizeof *row);
    row->ev = ev;
    row->card_id = price.card_id;
    row->card_version = price.card_version;
    memcpy(row->currency, price.currency, sizeof row->currency);
    row->site_tier = price.site_tier;
    for (int d = 0; d < GM_LEDGER_DIMS; d++) {
        row->unit_price_p[d] = price.unit_price_p[d];
        row->amount_e18[d] = price.amount_e18[d];
    }
    row->flags = price.flags;
    row->variant = price.variant;
    return 0;
}

/* Reads PostgreSQL's offsets for the given partitions into r->stored (retrying through
 * outages until stop). */
static int read_stored(rater *r, const rd_kafka_topic_partition_list_t *parts)
{
    int32_t ids[MAX_PARTITIONS];
    int64_t next[MAX_PARTITIONS];
    size_t n = 0;
    for (int i = 0; i < parts->cnt && n < MAX_PARTITIONS; i++)
        ids[n++] = parts->elems[i].partition;
    char err[1024];
    while (!*r->stop) {
        if (pg_reconnect(r, err, sizeof err))
            return GM_EUNAVAIL;
        if (gm_ledger_read_offsets(r->pg, r->cfg->group_id, r->cfg->topic, ids, n, next, err,
                                   sizeof err) == 0) {
            for (size_t i = 0; i < n; i++)
                r->stored[ids[i]] = r->next[ids[i]] = next[i];
            return 0;
        }
        gm_warn("rater", "msg=\"cannot read stored offsets, retrying\" error=\"%s\"", err);
        usleep(500000);
    }
    return GM_EUNAVAIL;
}

/* Takes the partitions (offsets already set from PostgreSQL). When librdkafka refuses,
 * nothing is consumed from them: say so, count it, own none of them, and keep a copy for
 * retry_assign, which tries again with growing pauses until it takes or a revoke comes. */
static void try_assign(rater *r, rd_kafka_topic_partition_list_t *parts, const char *list)
{
    rd_kafka_resp_err_t ae = gm_rater__fault(GM_RATER_FAULT_ASSIGN) ? RD_KAFKA_RESP_ERR__FAIL
                                                                    : rd_kafka_assign(r->rk, parts);
    if (ae == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p >= 0 && p < MAX_PARTITIONS)
                r->owned[p] = true;
        }
        if (r->pending_assign != parts && r->pending_assign)
            rd_kafka_topic_partition_list_destroy(r->pending_assign);
        r->pending_assign = NULL;
        r->assign_tries = 0;
        return;
    }
    r->assign_tries++;
    int64_t pause_ms = r->assign_tries < 7 ? 100LL << (r->assign_tries - 1) : 5000;
    gm_error("rater",
             "msg=\"partition assignment failed; nothing is consumed from them until it "
             "succeeds\" partitions=%s error=\"%s\" tries=%d retry_ms=%lld",
             list, rd_kafka_err2str(ae), r->assign_tries, (long long)pause_ms);
    gm_rater_metrics.assign_failures++;
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < MAX_PARTITIONS)
            r->owned[p] = false;
    }
    if (r->pending_assign != parts) {
        if (r->pending_assign)
            rd_kafka_topic_partition_list_destroy(r->pending_assign);
        r->pending_assign = rd_kafka_topic_partition_list_copy(parts);
    }
    r->assign_retry_at = gm_mono_us() + pause_ms * 1000;
}

/* The loop's half of try_assign: PostgreSQL's offsets are read again (another rater may have
 * committed meanwhile), then the assignment is tried again. */
static void retry_assign(rater *r)
{
    if (!r->pending_assign || gm_mono_us() < r->assign_retry_at)
        return;
    rd_kafka_topic_partition_list_t *parts = r->pending_assign;
    drain(r);
    if (read_stored(r, parts) != 0)
        return; /* stopping */
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < MAX_PARTITIONS)
            parts->elems[i].offset = r->stored[p] >= 0 ? r->stored[p] : RD_KAFKA_OFFSET_BEGINNING;
    }
    gm_ledger_writer_reset(r->writer);
    try_assign(r, parts, "(retry)");
    if (!r->pending_assign) {
        gm_info("rater", "msg=\"partition assignment retried and taken\" count=%d", parts->cnt);
        rd_kafka_topic_partition_list_destroy(parts);
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    rater *r = opaque;
    /* Revoked or not, the batch in flight is committed (or fails) before anything changes:
     * partitions are given up only after their last batch settled. */
    drain(r);
    r->rebalanced = true;
    r->drop_upto = r->fill ? r->fill->n_msgs : 0;
    gm_ledger_writer_reset(r->writer);
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (read_stored(r, parts) != 0) {
            /* stopping: take none of them (nothing is consumed, nothing is lost) */
            rd_kafka_resp_err_t ne = rd_kafka_assign(rk, NULL);
            if (ne != RD_KAFKA_RESP_ERR_NO_ERROR)
                gm_warn("rater",
                        "msg=\"partition unassignment failed while stopping\" error=\"%s\"",
                        rd_kafka_err2str(ne));
            return;
        }
        char list[512] = "";
        size_t w = 0;
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p < 0 || p >= MAX_PARTITIONS)
                continue;
            parts->elems[i].offset = r->stored[p] >= 0 ? r->stored[p] : RD_KAFKA_OFFSET_BEGINNING;
            if (w < sizeof list - 32)
                w += (size_t)snprintf(list + w, sizeof list - w, "%s%d@%lld", i ? "," : "", p,
                                      (long long)r->stored[p]);
        }
        gm_info("rater",
                "msg=\"partitions assigned, seeking to PostgreSQL offsets\" "
                "partitions=%s",
                list);
        try_assign(r, parts, list);
    } else {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p >= 0 && p < MAX_PARTITIONS)
                r->owned[p] = false;
        }
        if (r->pending_assign) { /* a refused assignment is moot once revoked */
            rd_kafka_topic_partition_list_destroy(r->pending_assign);
            r->pending_assign = NULL;
        }
        gm_info("rater", "msg=\"partitions revoked\" count=%d", parts->cnt);
        rd_kafka_resp_err_t ae = rd_kafka_assign(rk, NULL);
        if (ae != RD_KAFKA_RESP_ERR_NO_ERROR) {
            gm_error("rater", "msg=\"partition unassignment failed\" error=\"%s\"",
                     rd_kafka_err2str(ae));
            gm_rater_metrics.assign_failures++;
        }
    }
    gm_rater_metrics.rebalances++;
}

/* After a failed batch: back to PostgreSQL's offsets for every partition we own. */
static void rewind_to_stored(rater *r)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    for (int p = 0; p < MAX_PARTITIONS; p++)
        if (r->owned[p])
            rd_kafka_topic_partition_list_add(parts, r->cfg->topic, p);
    if (parts->cnt && read_stored(r, parts) == 0) {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            parts->elems[i].offset = r->stored[p] >= 0 ? r->stored[p] : RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_error_t *e = rd_kafka_seek_partitions(r->rk, parts, 10000);
        if (e) {
            gm_warn("rater", "msg=\"seek failed\" error=\"%s\"", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].err)
                gm_warn("rater", "msg=\"seek failed\" partition=%d error=\"%s\"",
                        parts->elems[i].partition, rd_kafka_err2str(parts->elems[i].err));
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Keeps monthly ledger partitions ahead (gm.ensure_ledger_partitions); its result is always
 * checked by the caller. */
static int ensure_partitions(rater *r, int64_t from_us, int months, int *made, char *err,
                             size_t err_len)
{
    drain(r); /* the connection is the commit thread's while a batch is in flight */
    if (gm_rater__fault(GM_RATER_FAULT_PARTITIONS))
        return gm_fail(err, err_len, GM_EDB, "gm.ensure_ledger_partitions: injected failure");
    return gm_ledger_ensure_partitions(r->pg, from_us, months, made, err, err_len);
}

static rd_kafka_t *make_consumer(rater *r, char *err, size_t err_len)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", r->cfg->session_timeout_ms);
    const char *kv[][2] = {
        {"bootstrap.servers", r->cfg->brokers},
        {"group.id", r->cfg->group_id},
        {"client.id", r->rater_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"}, /* explicit: the default skips to the end */
        {"session.timeout.ms", timeout},
        {"heartbeat.interval.ms", "1000"},
        {"partition.assignment.strategy", "range"},
        {"fetch.wait.max.ms", "100"},
        {"queued.max.messages.kbytes", "262144"},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(kv); i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, err_len) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, err_len);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    conf = NULL; /* now owned by rk */
    rd_kafka_poll_set_consumer(rk);
    if (r->cfg->shard_map) {
        /* the shard's partitions, assigned as a group would (rebalance_cb: PostgreSQL's
         * offsets, owned[]), but never revoked: no other shard's rater takes them */
        const gm_shard_topic *t = gm_shard_map_topic(r->cfg->shard_map, r->cfg->topic);
        int32_t ids[MAX_PARTITIONS];
        size_t n = gm_shard_map_partitions(t, gm_shard_map_find(r->cfg->shard_map, r->cfg->shard),
                                           ids, MAX_PARTITIONS);
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new((int)n + 1);
        for (size_t i = 0; i < n; i++)
            rd_kafka_topic_partition_list_add(parts, r->cfg->topic, ids[i]);
        r->rk = rk;
        rebalance_cb(rk, RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, parts, r);
        rd_kafka_topic_partition_list_destroy(parts);
        if (r->pending_assign || (n && !r->owned[ids[0]])) {
            gm_fail(err, err_len, GM_EKAFKA, "shard %s: assigning its %zu partitions of %s failed",
                    r->cfg->shard, n, r->cfg->topic);
            rd_kafka_destroy(rk);
            r->rk = NULL;
            return NULL;
        }
        return rk;
    }
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, r->cfg->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        gm_fail(err, err_len, GM_EKAFKA, "subscribe %s: %s", r->cfg->topic, rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

static void free_msgs(batch_slot *b)
{
    for (size_t i = 0; i < b->n_msgs; i++)
        rd_kafka_message_destroy(b->msgs[i]);
    b->n_msgs = 0;
}

static void slot_init(batch_slot *b, size_t cap)
{
    b->msgs = gm_xcalloc(cap, sizeof *b->msgs);
    b->events = gm_xcalloc(cap, sizeof *b->events);
    b->rows = gm_xcalloc(cap, sizeof *b->rows);
    b->rejects = gm_xcalloc(cap, sizeof *b->rejects);
    b->reasons = gm_xcalloc(cap, sizeof *b->reasons);
    b->pos = gm_xcalloc(cap, sizeof *b->pos);
    b->cut_at = gm_xcalloc(MAX_PARTITIONS, sizeof *b->cut_at);
}

static void slot_free(batch_slot *b)
{
    free_msgs(b);
    free(b->msgs);
    free(b->events);
    free(b->rows);
    free(b->rejects);
    free(b->reasons);
    free(b->pos);
    free(b->cut_at);
}

/* A message librdkafka could not read (corrupt, undecompressable) but can place: it is kept
 * as a rejected message with the reason, never skipped silently. */
static bool unreadable_message(const rd_kafka_message_t *m)
{
    switch (m->err) {
    case RD_KAFKA_RESP_ERR__BAD_MSG:
    case RD_KAFKA_RESP_ERR__BAD_COMPRESSION:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR__KEY_DESERIALIZATION:
    case RD_KAFKA_RESP_ERR__VALUE_DESERIALIZATION:
        return m->rkt != NULL && m->partition >= 0 && m->offset >= 0;
    default:
        return false;
    }
}

static int pos_cmp(const void *a, const void *b)
{
    int32_t x = ((const gm_ledger_pos *)a)->partition, y = ((const gm_ledger_pos *)b)->partition;
    return (x > y) - (x < y);
}

static void seek_partition(rater *r, int32_t p, int64_t offset)
{
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, r->cfg->topic, p)->offset = offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(r->rk, one, 10000);
    if (e || one->elems[0].err)
        gm_warn("rater",
                "msg=\"seek failed; the partition is not rated until it succeeds\" "
                "partition=%d offset=%lld error=\"%s\"",
                p, (long long)offset,
                e ? rd_kafka_error_string(e) : rd_kafka_err2str(one->elems[0].err));
    if (e)
        rd_kafka_error_destroy(e);
    rd_kafka_topic_partition_list_destroy(one);
}

/* Contiguity. A partition's messages must follow each other from PostgreSQL's offset on,
 * one offset at a time (our producers are idempotent, not transactional). A hole means
 * messages were fetched and not kept (a stale prefetch after a rebalance, a seek that did
 * not take): the partition is cut at the hole for this batch (what comes before it is
 * rated) and sought back to it. A hole is accepted as real only when the broker says so:
 * retention deleted the messages (the low watermark is past them), or the same hole came
 * back after three seeks (control records); then it is logged and counted, never silent.
 * Sets b->cut_at[p] for every partition of the batch; expects each partition to go on from
 * r->next (where the batch in flight, if any, leaves it). */
static void check_contiguity(rater *r, batch_slot *b)
{
    for (size_t i = 0; i < b->n_msgs; i++)
        if (b->msgs[i]->partition >= 0 && b->msgs[i]->partition < MAX_PARTITIONS)
            b->cut_at[b->msgs[i]->partition] = INT64_MAX;
    int64_t expect[MAX_PARTITIONS / 64 + 1][64];
    bool seen[MAX_PARTITIONS];
    memset(seen, 0, sizeof seen);
    uint64_t below = 0;
    for (size_t i = 0; i < b->n_msgs; i++) {
        const rd_kafka_message_t *m = b->msgs[i];
        int32_t p = m->partition;
        if (p < 0 || p >= MAX_PARTITIONS || !r->owned[p] || m->offset >= b->cut_at[p])
            continue;
        int64_t *want = &expect[p / 64][p % 64];
        if (!seen[p]) {
            seen[p] = true;
            /* -1: no row yet, the log's start is fine; pipelined, where the batch in
             * flight leaves the partition */
            *want = r->next[p];
        }
        if (*want >= 0 && m->offset < *want) {
            below++; /* already rated: librdkafka hands these out only around a seek */
            continue;
        }
        if (*want < 0 || m->offset == *want) {
            *want = m->offset + 1;
            continue;
        }
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t qe =
            gm_rater__fault(GM_RATER_FAULT_WATERMARK)
                ? RD_KAFKA_RESP_ERR__TRANSPORT
                : rd_kafka_query_watermark_offsets(r->rk, r->cfg->topic, p, &lo, &hi, 5000);
        if (qe != RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* the broker was not asked successfully: nothing is known about the hole, so it
             * is never accepted on this try (no try is counted); rate up to it, seek back */
            gm_warn("rater",
                    "msg=\"offset hole: the low watermark query failed, seeking back\" "
                    "partition=%d expected=%lld got=%lld error=\"%s\"",
                    p, (long long)*want, (long long)m->offset, rd_kafka_err2str(qe));
            gm_rater_metrics.watermark_failures++;
            b->cut_at[p] = m->offset;
            seek_partition(r, p, *want);
            continue;
        }
        if (r->gap_at[p] == *want)
            r->gap_tries[p]++;
        else {
            r->gap_at[p] = *want;
            r->gap_tries[p] = 1;
        }
        /* accepted only when the broker says the messages are gone (below its low
         * watermark), or after three seeks back that each asked it successfully and still
         * found no message at these offsets (transaction markers, compaction) */
        if (lo > *want || r->gap_tries[p] >= 3) {
            gm_warn("rater",
                    "msg=\"offset gap accepted: messages in it are gone from the "
                    "broker\" partition=%d from=%lld to=%lld low_watermark=%lld tries=%d",
                    p, (long long)*want, (long long)m->offset - 1, (long long)lo, r->gap_tries[p]);
            gm_rater_metrics.offset_gaps++;
            *want = m->offset + 1;
            continue;
        }
        gm_info("rater",
                "msg=\"offset hole: rating up to it and seeking back\" partition=%d "
                "expected=%lld got=%lld",
                p, (long long)*want, (long long)m->offset);
        b->cut_at[p] = m->offset;
        seek_partition(r, p, *want);
    }
    if (below)
        gm_debug("rater", "msg=\"messages below the stored offsets skipped\" count=%llu",
                 (unsigned long long)below);
}

/* PREPARE. Decodes and prices messages [lo, hi) of the batch into rows and rejects, and
 * says where each partition goes: no database access, nothing that depends on the batch in
 * flight but where its partitions will stand (r->next). Duplicates and conflicts are NOT
 * decided here: the writer decides them inside the commit, against the seq ranges and the
 * ledger as the batch before left them (committed, since a batch is handed over only after
 * the one before it committed), so the same event in two consecutive batches is found
 * exactly as within one. `poison` (NULL normally): the one message of the range is kept as
 * a reject with this reason instead (rule poison), see commit_bisect. */
static void prepare_range(rater *r, batch_slot *b, size_t lo, size_t hi, int64_t now_us,
                          const char *poison)
{
    int64_t t_prep = gm_mono_us();
    size_t n_rows = 0, n_rej = 0;
    gm_ledger_pos *pos = b->pos; /* n_pos <= n_msgs: room for all */
    size_t n_pos = 0;
    for (size_t i = lo; i < hi; i++) {
        rd_kafka_message_t *m = b->msgs[i];
        int32_t p = m->partition;
        if (p < 0 || p >= MAX_PARTITIONS || !r->owned[p] || m->offset >= b->cut_at[p])
            continue;
        if (r->next[p] >= 0 && m->offset < r->next[p])
            continue; /* below PostgreSQL's offset (or the batch in flight's): already rated */
        size_t k;
        for (k = 0; k < n_pos && pos[k].partition != p; k++)
            ;
        if (k == n_pos) {
            pos[n_pos].partition = p;
            pos[n_pos].expected = r->next[p];
            n_pos++;
        }
        pos[k].next = m->offset + 1;

        char *reason = b->reasons[n_rej];
        /* events[] holds rows' and rejects' events alike: index by message */
        gm_event *ev = &b->events[i];
        bool ok = false;
        const char *rule = "contract";
        bool decoded = false, identified = false;
        if (m->err) {
            rule = "kafka";
            snprintf(reason, sizeof b->reasons[0], "kafka: the message could not be read: %s (%s)",
                     rd_kafka_err2str(m->err), rd_kafka_message_errstr(m));
        } else if (gm_event_decode(m->payload, m->len, ev, reason, sizeof b->reasons[0]) != 0) {
            /* reason says which field broke which rule; what the message still says of its
             * identity goes with the reject (an arrived seq is no gap) */
            identified = gm_event_identity_of(m->payload, m->len, ev);
        } else if ((decoded = true, ev->type != GM_EVENT_USAGE)) {
            rule = "type";
            snprintf(reason, sizeof b->reasons[0],
                     "event %s#%s: type: %s is not accepted on topic %s (only gridmeter.usage.v1)",
                     ev->source, ev->id, gm_event_type_name(ev->type), r->cfg->topic);
        } else if (gm_rater__misplaced(r->cfg->shard_map, r->cfg->topic, m->key, m->key_len, p, ev,
                                       reason, sizeof b->reasons[0])) {
            rule = gm_rater__rule_placement; /* charged nowhere: its own shard has it */
        } else if (poison) {
            rule = "poison";
            snprintf(reason, sizeof b->reasons[0],
                     "event %s#%s: poison: PostgreSQL refuses this event's rows (alone, after "
                     "bisecting the batch): %s",
                     ev->source, ev->id, poison);
        } else if (gm_rater__rate_event(r->cfg, r->book, ev, now_us, &b->rows[n_rows], reason,
                                        sizeof b->reasons[0], &rule) == 0) {
            gm_ledger_row *row = &b->rows[n_rows++];
            row->partition = p;
            row->offset = m->offset;
            row->key = m->key;
            row->key_len = m->key_len;
            row->payload = m->payload;
            row->payload_len = m->len;
            ok = true;
        }
        if (!ok) {
            gm_ledger_reject *rj = &b->rejects[n_rej++];
            rj->partition = p;
            rj->offset = m->offset;
            rj->key = m->key;
            rj->key_len = m->key_len;
            rj->payload = m->payload;
            rj->payload_len = m->len;
            rj->reason = reason;
            rj->ev = decoded || identified ? ev : NULL;
            rj->rule = rule;
        }
    }
    b->n_rows = n_rows;
    b->n_rej = n_rej;
    b->n_pos = n_pos;
    b->now_us = now_us;
    b->poison = poison != NULL;
    if (n_pos == 0)
        return;
    /* Offsets in partition order: two raters that overlap for a moment (one of them about
     * to be fenced) then lock the offset rows in the same order. */
    qsort(pos, n_pos, sizeof *pos, pos_cmp);
    int64_t took = gm_mono_us() - t_prep;
    gm_rater_metrics.prepare_us_sum += (uint64_t)took;
    gm_debug("rater", "msg=\"batch decoded and priced\" messages=%zu prepare_us=%lld", hi - lo,
             (long long)took);
}

/* COMMIT. Writes the prepared batch in one transaction (ledger/batch.c), on the rater thread
 * (--pipeline 0, bisecting) or the commit thread; the outcome goes into the slot. Uses only
 * the connection, the writer and the slot. */
static void slot_commit(rater *r, batch_slot *b)
{
    gm_ledger_batch lb = {r->cfg->group_id, r->cfg->topic, r->rater_id, b->rows, b->n_rows,
                          b->rejects,       b->n_rej,      b->pos,      b->n_pos};
    int64_t t0 = gm_mono_us();
    b->err[0] = '\0';
    if (gm_rater__fault(GM_RATER_FAULT_COMMIT)) {
        b->rc = gm_fail(b->err, sizeof b->err, GM_EDB,
                        "COMMIT: injected failure (as a serialization failure): rolled back");
    } else {
        b->rc = gm_ledger_writer_commit(r->writer, &lb, &b->res, b->err, sizeof b->err);
        if (b->rc == 0 && gm_rater__fault(GM_RATER_FAULT_COMMIT_LOST))
            b->rc = gm_fail(b->err, sizeof b->err, GM_EUNKNOWN,
                            "COMMIT: injected loss of the connection after COMMIT: outcome "
                            "unknown");
    }
    b->took_us = gm_mono_us() - t0;
}

/* After a commit: PostgreSQL's offsets, metrics, and Kafka's advisory offsets (rater
 * thread only). */
static void apply_committed(rater *r, batch_slot *b)
{
    const gm_ledger_result *res = &b->res;
    if (b->poison)
        gm_rater_metrics.poison += b->n_rej;
    for (size_t j = 0; j < b->n_rej; j++)
        gm_rater_metrics.misplaced += b->rejects[j].rule == gm_rater__rule_placement;
    for (size_t k = 0; k < b->n_pos; k++)
        r->stored[b->pos[k].partition] = r->next[b->pos[k].partition] = b->pos[k].next;
    gm_rater_metrics_batch(res, b->n_rows + b->n_rej, b->took_us);
    r->committed += b->n_rows + b->n_rej;
    r->failures_in_row = 0;
    gm_debug("rater",
             "msg=\"batch committed\" messages=%zu accepted=%zu duplicates=%zu "
             "conflicts=%zu rejected=%zu charge_rows=%zu commit_ms=%lld",
             b->n_rows + b->n_rej, res->accepted, res->duplicates, res->conflicts, res->rejected,
             res->charge_rows, (long long)(b->took_us / 1000));
    if (res->conflicts)
        gm_warn("rater",
                "msg=\"messages claimed an accepted event's identity with other content: kept "
                "in audit.conflicting_events, not charged\" conflicts=%zu",
                res->conflicts);
    /* Advisory only: lag tools read Kafka's committed offsets. */
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new((int)b->n_pos);
    for (size_t k = 0; k < b->n_pos; k++)
        rd_kafka_topic_partition_list_add(offs, r->cfg->topic, b->pos[k].partition)->offset =
            b->pos[k].next;
    rd_kafka_commit(r->rk, offs, 1);
    rd_kafka_topic_partition_list_destroy(offs);
}

/* Prepares and commits messages [lo, hi) on the rater thread. */
static int commit_range(rater *r, batch_slot *b, size_t lo, size_t hi, int64_t now_us,
                        const char *poison, char *err, size_t err_len)
{
    prepare_range(r, b, lo, hi, now_us, poison);
    if (b->n_pos == 0)
        return 0;
    slot_commit(r, b);
    if (b->rc) {
        gm_rater_metrics.batch_failures++;
        snprintf(err, err_len, "%s", b->err);
        return b->rc;
    }
    apply_committed(r, b);
    return 0;
}

/* A failure that the same messages would meet again on every retry, and that one message
 * can cause: PostgreSQL refused a value or a constraint (SQLSTATE classes 22 data exception,
 * 23 integrity constraint, 54 program limit), or a sum overflowed (GM_ERANGE). Outages,
 * fencing, concurrent writers and unknown commit outcomes are not: they stop and retry. */
static bool tied_to_a_message(rater *r, int rc, const char *err)
{
    if (rc == GM_ERANGE)
        return true;
    if (rc != GM_EDB || !r->pg || PQstatus(r->pg) != CONNECTION_OK)
        return false;
    return strstr(err, "SQLSTATE 22") || strstr(err, "SQLSTATE 23") || strstr(err, "SQLSTATE 54");
}

static int commit_bisect(rater *r, batch_slot *b, size_t lo, size_t hi, int64_t now_us, int depth);

/* What follows a failed commit of [lo, hi) (rc, err), see commit_bisect. */
static int after_failure(rater *r, batch_slot *b, size_t lo, size_t hi, int64_t now_us, int rc,
                         const char *why_failed, int depth)
{
    char err[1024];
    snprintf(err, sizeof err, "%s", why_failed); /* the slot's own err is reused below */
    if (strstr(err, "SQLSTATE GMS01")) {         /* the shard fence: a wrong map, never retried */
        snprintf(r->fatal, sizeof r->fatal, "%s", err);
        return rc;
    }
    if (!tied_to_a_message(r, rc, err)) {
        gm_warn("rater",
                "msg=\"batch not committed, resuming from PostgreSQL offsets\" code=%s "
                "error=\"%s\"",
                gm_errname(rc), err);
        return rc;
    }
    gm_ledger_writer_reset(r->writer);
    if (hi - lo == 1) {
        const rd_kafka_message_t *m = b->msgs[lo];
        gm_error("rater",
                 "msg=\"poison message kept as a reject, the partition goes on\" partition=%d "
                 "offset=%lld error=\"%s\"",
                 m->partition, (long long)m->offset, err);
        char why[1024];
        rc = commit_range(r, b, lo, hi, now_us, err, why, sizeof why);
        if (rc)
            gm_warn("rater", "msg=\"poison message not kept, retrying\" code=%s error=\"%s\"",
                    gm_errname(rc), why);
        return rc;
    }
    if (depth == 0)
        gm_warn("rater",
                "msg=\"batch refused for a reason tied to a message: bisecting to find it\" "
                "messages=%zu code=%s error=\"%s\"",
                hi - lo, gm_errname(rc), err);
    size_t mid = lo + (hi - lo) / 2;
    if ((rc = commit_bisect(r, b, lo, mid, now_us, depth + 1)))
        return rc;
    return commit_bisect(r, b, mid, hi, now_us, depth + 1);
}

/* POISON. Commits [lo, hi); when that fails for a reason tied to a message, commits each half
 * (what comes before the bad message is committed first, so offsets stay in order), down to
 * the one message that fails alone: it is kept as a reject (rule poison) with PostgreSQL's
 * reason, and the partition goes on. Transient failures return at once (the caller rewinds
 * and retries, rejecting nothing). */
static int commit_bisect(rater *r, batch_slot *b, size_t lo, size_t hi, int64_t now_us, int depth)
{
    char err[1024];
    int rc = commit_range(r, b, lo, hi, now_us, NULL, err, sizeof err);
    if (rc == 0)
        return 0;
    return after_failure(r, b, lo, hi, now_us, rc, err, depth);
}

/* --pipeline 0: decodes, prices and commits the polled messages (one transaction, or more
 * when a poison message has to be found). */
static int process_batch(rater *r, batch_slot *b)
{
    check_contiguity(r, b);
    return commit_bisect(r, b, 0, b->n_msgs, gm_now_us(), 0);
}

/* ---- The commit thread (--pipeline 1) -------------------------------------------------- */
static void *committer_main(void *arg)
{
    rater *r = arg;
    committer *c = &r->com;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->job && !c->quit)
            pthread_cond_wait(&c->cv, &c->mu);
        if (!c->job)
            break;
        batch_slot *b = c->job;
        pthread_mutex_unlock(&c->mu);
        slot_commit(r, b);
        pthread_mutex_lock(&c->mu);
        c->job = NULL;
        atomic_store(&c->busy, false);
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void committer_submit(committer *c, batch_slot *b)
{
    pthread_mutex_lock(&c->mu);
    c->job = b;
    atomic_store(&c->busy, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void committer_wait(committer *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->job)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

/* Waits for the batch in flight (if any) and settles it: 0 (none, or committed: applied);
 * else the batch was not committed (its error code; or FLIGHT_REDONE: it failed for a
 * reason tied to a message and, with may_bisect, was committed again in parts). Either way
 * the caller drops what it prepared after it and rewinds to PostgreSQL's offsets. */
static int flight_finish(rater *r, bool may_bisect)
{
    batch_slot *b = r->flight;
    if (!b)
        return 0;
    int64_t t0 = gm_mono_us();
    committer_wait(&r->com);
    r->flight = NULL;
    r->last_activity = gm_mono_us();
    gm_rater_metrics.flight_wait_us_sum += (uint64_t)(r->last_activity - t0);
    int rc = b->rc;
    if (rc == 0) {
        apply_committed(r, b);
        free_msgs(b);
        return 0;
    }
    gm_rater_metrics.batch_failures++;
    /* nothing after the failed batch is committed: prepare from PostgreSQL's offsets again */
    memcpy(r->next, r->stored, sizeof r->next);
    if (may_bisect && tied_to_a_message(r, rc, b->err)) {
        rc = after_failure(r, b, 0, b->n_msgs, b->now_us, rc, b->err, 0);
        if (rc == 0)
            rc = FLIGHT_REDONE;
    } else if (strstr(b->err, "SQLSTATE GMS01")) {
        snprintf(r->fatal, sizeof r->fatal, "%s", b->err);
    } else {
        gm_warn("rater",
                "msg=\"batch not committed, resuming from PostgreSQL offsets\" code=%s "
                "error=\"%s\" pipelined=1",
                gm_errname(rc), b->err);
    }
    free_msgs(b);
    return rc;
}

/* Drops the batch being filled (what the commit thread's failure made stale). */
static void drop_fill(rater *r)
{
    if (r->fill->n_msgs)
        gm_rater_metrics.pipeline_drops++;
    free_msgs(r->fill);
    r->drop_upto = 0;
}

/* After a failed batch: the writer forgets its cached state, a broken or doubtful connection
 * is made again, and every owned partition seeks back to PostgreSQL's offsets. Backs off
 * 100 ms, doubling to 5 s while batches keep failing. Non-zero: stopping. */
static int recover(rater *r, int brc, char *err, size_t err_len)
{
    gm_ledger_writer_reset(r->writer);
    if (brc != FLIGHT_REDONE &&
        (brc == GM_EUNKNOWN || !r->pg || PQstatus(r->pg) != CONNECTION_OK)) {
        PQfinish(r->pg);
        r->pg = NULL;
        if (pg_reconnect(r, err, err_len) != 0)
            return GM_EUNAVAIL;
    }
    rewind_to_stored(r);
    memcpy(r->next, r->stored, sizeof r->next);
    r->last_activity = gm_mono_us();
    if (brc == FLIGHT_REDONE) {
        r->failures_in_row = 0;
        return 0;
    }
    /* A failure that repeats (a constraint, an overflow) is an operator's matter: say so
     * loudly rather than spin quietly. */
    r->failures_in_row++;
    int64_t backoff_ms = r->failures_in_row < 6 ? 100LL << (r->failures_in_row - 1) : 5000;
    if (r->failures_in_row >= 5)
        gm_error("rater",
                 "msg=\"batches keep failing; rating is stalled until the cause is fixed\" "
                 "failures_in_row=%d retry_ms=%lld",
                 r->failures_in_row, (long long)backoff_ms);
    usleep((useconds_t)backoff_ms * 1000);
    return 0;
}

/* FILL. Polls into r->fill: up to cap messages, or batch_ms; pipelined, the batch keeps
 * filling while the commit thread is busy (up to cap), and once it is free a partial batch
 * waits at most batch_idle_ms more (counted from the later of the commit thread's release
 * and the batch's first message). The batch in flight is settled as soon as it is done.
 * Returns 0, or a failure of the batch in flight (the caller drops this batch). */
static int fill_batch(rater *r, size_t cap)
{
    const gm_rater_config *cfg = r->cfg;
    batch_slot *b = r->fill;
    bool piped = cfg->pipeline != 0;
    int64_t now = gm_mono_us();
    int64_t deadline = now + (int64_t)cfg->batch_ms * 1000;
    int64_t free_since = r->flight ? INT64_MAX : now, first_at = INT64_MAX;
    r->rebalanced = false;
    while (b->n_msgs < cap && !*r->stop) {
        if (r->flight && !atomic_load(&r->com.busy)) {
            int rc = flight_finish(r, true);
            if (rc)
                return rc;
        }
        now = gm_mono_us();
        if (!r->flight && free_since == INT64_MAX)
            free_since = now;
        int64_t left_us;
        if (r->flight) {
            left_us = 1000; /* short polls, to see the commit finish */
        } else {
            left_us = deadline - now;
            if (piped && cfg->batch_idle_ms > 0 && b->n_msgs > 0) {
                int64_t idle_end = (first_at > free_since ? first_at : free_since) +
                                   (int64_t)cfg->batch_idle_ms * 1000;
                if (idle_end - now < left_us)
                    left_us = idle_end - now;
            }
            if (left_us < (piped ? 1 : 1000))
                break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, (int)((left_us + 999) / 1000));
        if (r->pending_failure) { /* settled by the rebalance callback, and failed */
            if (m)
                rd_kafka_message_destroy(m);
            int rc = r->pending_failure;
            r->pending_failure = 0;
            return rc;
        }
        if (!m)
            continue;
        if (m->err && !unreadable_message(m)) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                gm_warn("rater", "msg=\"consumer error\" error=\"%s\"", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (b->n_msgs == 0)
            first_at = gm_mono_us();
        b->msgs[b->n_msgs++] = m; /* an unreadable message is rejected with its reason */
    }
    return 0;
}

int gm_rater_run(const gm_rater_config *cfg, volatile sig_atomic_t *stop, char *err, size_t err_len)
{
    rater *r = gm_xcalloc(1, sizeof *r);
    gm_rater_gpu *gpu = NULL; /* the GPU window consumer (rater/gpu.c) */
    bool idle_exit = false;
    r->cfg = cfg;
    r->stop = stop;
    for (int p = 0; p < MAX_PARTITIONS; p++)
        r->stored[p] = r->next[p] = r->gap_at[p] = -1;
    if (cfg->rater_id && *cfg->rater_id) {
        snprintf(r->rater_id, sizeof r->rater_id, "%s", cfg->rater_id);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(r->rater_id, sizeof r->rater_id, "%s:%d", host, (int)getpid());
    }
    size_t cap = (size_t)(cfg->batch_max > 0 ? cfg->batch_max : 5000);
    slot_init(&r->slots[0], cap);
    if (cfg->pipeline)
        slot_init(&r->slots[1], cap);
    r->fill = &r->slots[0];
    pthread_mutex_init(&r->com.mu, NULL);
    pthread_cond_init(&r->com.cv, NULL);
    int rc = 0;
    gm_rater_metrics_set_rk(NULL, cfg->topic, r->stored, r->owned, MAX_PARTITIONS);

    r->pg = gm_pg_connect(cfg->db_conninfo, "gridmeter-rater", err, err_len);
    if (!r->pg) {
        rc = GM_EDB;
        goto out;
    }
    if (cfg->shard_map) {
        int si = gm_shard_map_find(cfg->shard_map, cfg->shard ? cfg->shard : "");
        if (si < 0 || !gm_shard_map_topic(cfg->shard_map, cfg->topic)) {
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         si < 0 ? "shard %s: not in the shard map"
                                : "shard %s: the shard map does not list topic %s",
                         cfg->shard ? cfg->shard : "", cfg->topic);
            goto out;
        }
        if ((rc = gm_shard_check_db(r->pg, cfg->shard_map, si, err, err_len)) ||
            (rc = gm_shard_session(r->pg, cfg->shard, err, err_len)))
            goto out;
    }
    r->writer = gm_ledger_writer_new(r->pg);
    if ((rc = gm_rater__book_refresh(r->pg, &r->book, &r->book_watch, cfg->book_reload_s, "rater",
                                     err, err_len)))
        goto out;
    {
        PGresult *res = PQexec(r->pg, "SELECT count(*) FROM gm.rate_cards");
        bool none = PQresultStatus(res) == PGRES_TUPLES_OK && atol(PQgetvalue(res, 0, 0)) == 0;
        PQclear(res);
        if (none) {
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         "no rate card in gm.rate_cards: import one first "
                         "(gridmeter ratecard import FILE)");
            goto out;
        }
    }
    /* Partitions from last month to three months ahead, on gridmeter's clock. A failure
     * here is a misconfigured database: refuse to start rather than hide it. */
    {
        char why[512];
        if ((rc = ensure_partitions(r, gm_month_start(gm_now_us()) - GM_US_PER_DAY, 4, NULL, why,
                                    sizeof why))) {
            gm_rater_metrics.partition_failures++;
            gm_fail(err, err_len, rc, "ledger partitions not created, not starting: %s", why);
            goto out;
        }
    }
    if (!(r->rk = make_consumer(r, err, err_len))) {
        rc = GM_EKAFKA;
        goto out;
    }
    gm_rater_metrics_set_rk(r->rk, cfg->topic, r->stored, r->owned, MAX_PARTITIONS);
    if ((rc = gm_rater_gpu_start(cfg, r->rater_id, stop, &gpu, err, err_len)))
        goto out;
    if (cfg->metrics_addr && *cfg->metrics_addr &&
        (rc = gm_rater_metrics_start(cfg->metrics_addr, err, err_len)))
        goto out;
    if (cfg->pipeline) {
        if (pthread_create(&r->com.th, NULL, committer_main, r) != 0) {
            rc = gm_fail(err, err_len, GM_ENOMEM, "rater: the commit thread could not start");
            goto out;
        }
        r->com.started = true;
    }
    gm_info("rater",
            "msg=\"rater started\" rater=%s group=%s topic=%s brokers=%s batch_max=%d "
            "batch_ms=%d pipeline=%d batch_idle_ms=%d",
            r->rater_id, cfg->group_id, cfg->topic, cfg->brokers, cfg->batch_max, cfg->batch_ms,
            cfg->pipeline, cfg->batch_idle_ms);

    r->last_activity = gm_mono_us();
    int64_t next_partitions = gm_mono_us() + gm_rater__partitions_every_us;
    while (!*stop) {
        retry_assign(r); /* a refused assignment, tried again */
        /* Housekeeping first (it settles the batch in flight: the connection is the commit
         * thread's meanwhile), so that nothing comes between a batch's preparation and its
         * hand-over but the book's refresh (below). */
        int64_t now = gm_mono_us();
        if (now >= next_partitions) {
            drain(r);
            if (r->pg && PQstatus(r->pg) == CONNECTION_OK) {
                char why[512];
                int made = 0;
                if (ensure_partitions(r, gm_now_us(), 3, &made, why, sizeof why)) {
                    /* rows still land in the default partition: nothing is lost, but say so
                     * loudly and try again in a minute */
                    gm_error("rater", "msg=\"ledger partitions not created\" error=\"%s\"", why);
                    gm_rater_metrics.partition_failures++;
                    next_partitions = now + gm_rater__partitions_retry_us;
                } else {
                    if (made)
                        gm_info("rater", "msg=\"ledger partitions created\" created=%d", made);
                    next_partitions = now + gm_rater__partitions_every_us;
                }
            }
        }
        int frc = r->pending_failure;
        r->pending_failure = 0;
        if (!frc)
            frc = fill_batch(r, cap);
        if (frc) {
            /* the batch in flight failed: what was polled after it is dropped, the
             * consumer goes back to PostgreSQL's offsets */
            drop_fill(r);
            if (r->fatal[0]) {
                rc = gm_fail(err, err_len, GM_EFENCED, "%s", r->fatal);
                goto out;
            }
            if (recover(r, frc, err, err_len) != 0)
                break;
            continue;
        }
        batch_slot *b = r->fill;
        if (r->rebalanced) {
            /* Ownership changed while the batch filled: what was polled before the change
             * may belong to another rater now; drop it (positions came from PostgreSQL at
             * the assignment). What was polled after it was fetched from those positions
             * and is kept. */
            size_t d = r->drop_upto < b->n_msgs ? r->drop_upto : b->n_msgs;
            for (size_t i = 0; i < d; i++)
                rd_kafka_message_destroy(b->msgs[i]);
            memmove(b->msgs, b->msgs + d, (b->n_msgs - d) * sizeof *b->msgs);
            b->n_msgs -= d;
            r->drop_upto = 0;
            r->last_activity = gm_mono_us();
        }
        if (*stop && cfg->pipeline) {
            free_msgs(b); /* stopping: not prepared, not committed; rated by the next owner */
            break;
        }
        bool owns_any = false;
        for (int p = 0; p < MAX_PARTITIONS && !owns_any; p++)
            owns_any = r->owned[p];
        if (!owns_any || r->flight)
            r->last_activity = gm_mono_us(); /* waiting for an assignment is not idle */
        if (b->n_msgs == 0) {
            if (cfg->exit_idle_ms > 0 &&
                gm_mono_us() - r->last_activity > cfg->exit_idle_ms * 1000) {
                gm_info("rater", "msg=\"idle, exiting\" committed=%zu", r->committed);
                idle_exit = true;
                break;
            }
            continue;
        }
        r->last_activity = gm_mono_us();
        if (cfg->pipeline) {
            /* PIPELINE. Prepare this batch while the one before commits, then hand it over
             * once that one committed; if it failed, this one is dropped (above, or here). */
            check_contiguity(r, b);
            prepare_range(r, b, 0, b->n_msgs, gm_now_us(), NULL);
            bool overlapped = r->flight != NULL;
            if ((frc = flight_finish(r, true)) != 0) {
                drop_fill(r);
                if (r->fatal[0]) {
                    rc = gm_fail(err, err_len, GM_EFENCED, "%s", r->fatal);
                    goto out;
                }
                if (recover(r, frc, err, err_len) != 0)
                    break;
                continue;
            }
            if (b->n_pos == 0) {
                free_msgs(b); /* nothing of ours in it (all below the stored offsets) */
                continue;
            }
            if (pg_reconnect(r, err, err_len) != 0)
                break;
            /* The book follows imports (rater/book_watch.c), checked now that the connection
             * is free and the batch before has settled (its rows pointed into the book in
             * use): after a reload this batch is priced again with the new book, so a batch
             * handed over after an import's notification arrived uses its terms. */
            uint64_t reloads = r->book_watch.reloads;
            char why[512]; /* a failed reload keeps the loaded book (logged) */
            (void)gm_rater__book_refresh(r->pg, &r->book, &r->book_watch, cfg->book_reload_s,
                                         "rater", why, sizeof why);
            if (r->book_watch.reloads != reloads)
                prepare_range(r, b, 0, b->n_msgs, gm_now_us(), NULL);
            if (overlapped)
                gm_rater_metrics.pipelined_batches++;
            for (size_t k = 0; k < b->n_pos; k++)
                r->next[b->pos[k].partition] = b->pos[k].next;
            r->flight = b;
            committer_submit(&r->com, b);
            r->fill = b == &r->slots[0] ? &r->slots[1] : &r->slots[0];
        } else {
            if (pg_reconnect(r, err, err_len) != 0)
                break;
            char why[512]; /* a failed reload keeps the loaded book (logged) */
            (void)gm_rater__book_refresh(r->pg, &r->book, &r->book_watch, cfg->book_reload_s,
                                         "rater", why, sizeof why);
            int brc = process_batch(r, b);
            free_msgs(b);
            /* the batch's time (a long PostgreSQL outage included) is not idle time: counted
             * from before it, an idle exit could follow a failed batch at once, before the
             * seek back to PostgreSQL's offsets had fetched it again, leaving it unrated */
            r->last_activity = gm_mono_us();
            if (r->fatal[0]) {
                rc = gm_fail(err, err_len, GM_EFENCED, "%s", r->fatal);
                goto out;
            }
            if (brc && recover(r, brc, err, err_len) != 0)
                break;
        }
        if (cfg->max_messages > 0 && (int64_t)r->committed >= cfg->max_messages)
            break;
    }
    /* Leaving: the batch in flight is one transaction already on its way; it is finished
     * (committed, or rolled back by its failure) before anything is closed. */
    drain(r);
    r->pending_failure = 0;
    if (r->fatal[0]) {
        rc = gm_fail(err, err_len, GM_EFENCED, "%s", r->fatal);
        goto out;
    }
    gm_info("rater", "msg=\"rater stopping\" committed=%zu", r->committed);
    rc = 0;
out:
    if (r->flight) { /* an error path: settled all the same, before the writer goes */
        committer_wait(&r->com);
        r->flight = NULL;
    }
    if (r->com.started) {
        pthread_mutex_lock(&r->com.mu);
        r->com.quit = true;
        pthread_cond_broadcast(&r->com.cv);
        pthread_mutex_unlock(&r->com.mu);
        pthread_join(r->com.th, NULL);
    }
    free_msgs(&r->slots[0]); /* before the consumer is closed */
    free_msgs(&r->slots[1]);
    gm_rater_gpu_stop(gpu, idle_exit);
    if (r->pending_assign)
        rd_kafka_topic_partition_list_destroy(r->pending_assign);
    gm_rater_metrics_stop();
    gm_rater_metrics_set_rk(NULL, cfg->topic, NULL, NULL, 0);
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    gm_ledger_writer_free(r->writer);
    PQfinish(r->pg);
    gm_rating_book_free(r->book);
    slot_free(&r->slots[0]);
    slot_free(&r->slots[1]);
    pthread_mutex_destroy(&r->com.mu);
    pthread_cond_destroy(&r->com.cv);
    free(r);
    return rc;
}
