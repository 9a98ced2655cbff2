/* The rater's GPU window consumer: gridmeter.gpu.v1 events from Kafka into gm.gpu_windows,
 * exactly once, in a thread of the rater's process (docs/rating.md, "GPU windows").
 *
 * DESIGN. The same rules as the usage loop of rater.c: PostgreSQL holds the truth about how
 * far each partition has been read (gm.consumer_offsets under the rater's group and the GPU
 * topic); a batch's rows, rejects and offsets go in one transaction whose offsets are a
 * compare-and-set (a stale consumer is fenced and rolls back whole); after any failure the
 * consumer re-reads PostgreSQL's offsets and seeks there. Messages must follow each other
 * one offset at a time from the stored offset (holes are sought back, or accepted only when
 * the broker says they are gone). Its Kafka group is the rater's group with ".gpu" appended,
 * so that its rebalances do not disturb the usage consumers.
 *
 * Duplicates and conflicts: (source, id) and (source, seq) are each unique in gm.gpu_windows.
 * A message whose key is taken by a row with the same content is a duplicate (counted once,
 * nothing written); one whose key is taken by a row with other content is a conflict and is
 * kept in gm.rejected_events with the reason, as is every message that breaks the event
 * contract or is not a gridmeter.gpu.v1 event. */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rating.h"
#include "faults.h"
#include "gpu_int.h"
#include "rater_int.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GPU_COMP "rater-gpu"
#define MAXP     1024

struct gm_rater_gpu {
    const gm_rater_config *cfg;
    const char *topic;
    char rater_id[160];
    char kafka_group[200];
    rd_kafka_t *rk;
    PGconn *pg;
    bool owned[MAXP];
    int64_t stored[MAXP];
    int64_t gap_at[MAXP];
    int gap_tries[MAXP];
    int64_t cut_at[MAXP];
    volatile bool rebalanced;
    /* an assignment rd_kafka_assign refused, retried from the loop (see rater.c) */
    rd_kafka_topic_partition_list_t *pending_assign;
    int assign_tries;
    int64_t assign_retry_at;
    size_t drop_upto;
    volatile sig_atomic_t *stop;
    volatile int quit; /* 1: stop now; 2: stop when idle */
    pthread_t thread;
    bool started;
    rd_kafka_message_t **msgs;
    size_t n_msgs, cap;
    gm_event *events;
    char (*reasons)[768];
    uint64_t accepted, duplicates, rejected;
    gm_rating_book *book; /* prices the windows' charges (gpu_basis); reloaded like the rater's */
    gm_rater_book_watch book_watch; /* reloads after imports (rater/book_watch.c) */
    bool topic_registered;          /* gm.gpu_topics holds g->topic */
};

static bool stopping(const gm_rater_gpu *g)
{
    return *g->stop || g->quit == 1;
}

/* ---- text buffers for PostgreSQL array literals -------------------------------------- */
typedef struct abuf {
    char *p;
    size_t n, cap;
} abuf;

static void ab_put(abuf *b, const char *s, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + len + 1)
            cap *= 2;
        b->p = gm_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

/* Elements are the decoder's identifiers (no quote, backslash, comma, brace or space in
 * either character set), quoted so that a tenant called NULL stays a string. */
static void ab_str(abuf *b, const char *s)
{
    ab_put(b, b->n > 1 ? ",\"" : "\"", b->n > 1 ? 2 : 1);
    ab_put(b, s, strlen(s));
    ab_put(b, "\"", 1);
}

static void ab_i64(abuf *b, int64_t v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%s%lld", b->n > 1 ? "," : "", (long long)v);
    ab_put(b, t, (size_t)n);
}

enum {
    C_SRC,
    C_ID,
    C_SEQ,
    C_SITE,
    C_DEV,
    C_POL,
    C_WS,
    C_WE,
    C_TEN,
    C_GPU,
    C_KER,
    C_UNA,
    C_TIME,
    C_PART,
    C_OFF,
    C_IDX,
    N_COLS
};

typedef struct cols {
    abuf a[N_COLS];
} cols;

static void cols_reset(cols *c)
{
    for (int i = 0; i < N_COLS; i++) {
        c->a[i].n = 0;
        ab_put(&c->a[i], "{", 1);
    }
}

static void cols_add(cols *c, const gm_event *ev, int32_t p, int64_t off, size_t idx)
{
    ab_str(&c->a[C_SRC], ev->source);
    ab_str(&c->a[C_ID], ev->id);
    ab_i64(&c->a[C_SEQ], (int64_t)ev->seq);
    ab_str(&c->a[C_SITE], ev->site);
    ab_str(&c->a[C_DEV], ev->device);
    ab_str(&c->a[C_POL], ev->policy);
    ab_i64(&c->a[C_WS], ev->window_start_us);
    ab_i64(&c->a[C_WE], ev->window_end_us);
    ab_str(&c->a[C_TEN], ev->tenant);
    ab_i64(&c->a[C_GPU], ev->gpu_us);
    ab_i64(&c->a[C_KER], ev->kernels);
    ab_i64(&c->a[C_UNA], ev->unattributed_us);
    ab_i64(&c->a[C_TIME], ev->time_us);
    ab_i64(&c->a[C_PART], p);
    ab_i64(&c->a[C_OFF], off);
    ab_i64(&c->a[C_IDX], (int64_t)idx);
}

static void ab_null(abuf *b)
{
    ab_put(b, b->n > 1 ? ",NULL" : "NULL", b->n > 1 ? 5 : 4);
}

/* The charge of each window (docs/rating.md, "GPU billing basis"), beside cols: card id,
 * card version, currency, site tier, unit price per GPU-second, exact amount; NULL elements
 * for a window that is not charged. */
enum { K_CARD, K_VER, K_CUR, K_TIER, K_UP, K_AMT, N_KCOLS };

typedef struct kcols {
    abuf a[N_KCOLS];
} kcols;

static void cols_close(cols *c)
{
    for (int i = 0; i < N_COLS; i++)
        ab_put(&c->a[i], "}", 1);
}

static void cols_free(cols *c)
{
    for (int i = 0; i < N_COLS; i++)
        free(c->a[i].p);
}

#define UNNEST                                                                                     \
    "unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[],"   \
    " $8::int8[], $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int4[],"    \
    " $15::int8[], $16::int8[]) AS t(source, event_id, seq, site, device, policy, ws, we,"         \
    " tenant, gpu_us, kernels, unattributed_us, tm, part, off, idx)"
#define US_TS(x) "('epoch'::timestamptz + " x " * interval '1 microsecond')"

/* ---- PostgreSQL ------------------------------------------------------------------------ */
static int pg_reconnect(gm_rater_gpu *g, char *err, size_t err_len)
{
    if (g->pg && PQstatus(g->pg) == CONNECTION_OK)
        return 0;
    PQfinish(g->pg);
    g->pg = NULL;
    int64_t backoff_ms = 100;
    while (!stopping(g)) {
        g->pg = gm_pg_connect(g->cfg->db_conninfo, "gridmeter-rater-gpu", err, err_len);
        if (g->pg && g->cfg->shard && gm_shard_session(g->pg, g->cfg->shard, err, err_len)) {
            PQfinish(g->pg);
            g->pg = NULL;
        }
        if (g->pg)
            return 0;
        gm_warn(GPU_COMP, "msg=\"PostgreSQL unavailable, retrying\" retry_ms=%lld error=\"%s\"",
                (long long)backoff_ms, err);
        usleep((useconds_t)backoff_ms * 1000);
        if (backoff_ms < 5000)
            backoff_ms *= 2;
    }
    return GM_EUNAVAIL;
}

static int read_stored(gm_rater_gpu *g, const rd_kafka_topic_partition_list_t *parts)
{
    int32_t ids[MAXP];
    int64_t next[MAXP];
    size_t n = 0;
    for (int i = 0; i < parts->cnt && n < MAXP; i++)
        if (parts->elems[i].partition >= 0 && parts->elems[i].partition < MAXP)
            ids[n++] = parts->elems[i].partition;
    char err[1024];
    while (!stopping(g)) {
        if (pg_reconnect(g, err, sizeof err))
            return GM_EUNAVAIL;
        if (gm_ledger_read_offsets(g->pg, g->cfg->group_id, g->topic, ids, n, next, err,
                                   sizeof err) == 0) {
            for (size_t i = 0; i < n; i++)
                g->stored[ids[i]] = next[i];
            return 0;
        }
        gm_warn(GPU_COMP, "msg=\"cannot read stored offsets, retrying\" error=\"%s\"", err);
        PQfinish(g->pg);
        g->pg = NULL;
        usleep(500000);
    }
    return GM_EUNAVAIL;
}

/* ---- Kafka ------------------------------------------------------------------------------ */
/* Takes the partitions (offsets set from PostgreSQL). When librdkafka refuses, nothing is
 * consumed from them: logged, counted, none owned, and a copy kept for retry_assign, which
 * tries again with growing pauses until it takes or a revoke comes (as rater.c does). */
static void try_assign(gm_rater_gpu *g, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_resp_err_t ae = gm_rater__fault(GM_RATER_FAULT_GPU_ASSIGN)
                                 ? RD_KAFKA_RESP_ERR__FAIL
                                 : rd_kafka_assign(g->rk, parts);
    if (ae == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p >= 0 && p < MAXP)
                g->owned[p] = true;
        }
        if (g->pending_assign && g->pending_assign != parts)
            rd_kafka_topic_partition_list_destroy(g->pending_assign);
        g->pending_assign = NULL;
        g->assign_tries = 0;
        return;
    }
    g->assign_tries++;
    int64_t pause_ms = g->assign_tries < 7 ? 100LL << (g->assign_tries - 1) : 5000;
    gm_error(GPU_COMP,
             "msg=\"GPU partition assignment failed; nothing is consumed from them until it "
             "succeeds\" count=%d error=\"%s\" tries=%d retry_ms=%lld",
             parts->cnt, rd_kafka_err2str(ae), g->assign_tries, (long long)pause_ms);
    gm_rater_metrics.gpu_assign_failures++;
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < MAXP)
            g->owned[p] = false;
    }
    if (g->pending_assign != parts) {
        if (g->pending_assign)
            rd_kafka_topic_partition_list_destroy(g->pending_assign);
        g->pending_assign = rd_kafka_topic_partition_list_copy(parts);
    }
    g->assign_retry_at = gm_mono_us() + pause_ms * 1000;
}

static void retry_assign(gm_rater_gpu *g)
{
    if (!g->pending_assign || gm_mono_us() < g->assign_retry_at)
        return;
    rd_kafka_topic_partition_list_t *parts = g->pending_assign;
    if (read_stored(g, parts) != 0)
        return; /* stopping */
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < MAXP)
            parts->elems[i].offset = g->stored[p] >= 0 ? g->stored[p] : RD_KAFKA_OFFSET_BEGINNING;
    }
    try_assign(g, parts);
    if (!g->pending_assign) {
        gm_info(GPU_COMP, "msg=\"GPU partition assignment retried and taken\" count=%d",
                parts->cnt);
        rd_kafka_topic_partition_list_destroy(parts);
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    gm_rater_gpu *g = opaque;
    g->rebalanced = true;
    g->drop_upto = g->n_msgs;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (read_stored(g, parts) != 0) {
            /* stopping: take none of them (nothing is consumed, nothing is lost) */
            rd_kafka_resp_err_t ne = rd_kafka_assign(rk, NULL);
            if (ne != RD_KAFKA_RESP_ERR_NO_ERROR)
                gm_warn(GPU_COMP,
                        "msg=\"partition unassignment failed while stopping\" error=\"%s\"",
                        rd_kafka_err2str(ne));
            return;
        }
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p < 0 || p >= MAXP)
                continue;
            parts->elems[i].offset = g->stored[p] >= 0 ? g->stored[p] : RD_KAFKA_OFFSET_BEGINNING;
        }
        gm_info(GPU_COMP, "msg=\"GPU partitions assigned, seeking to PostgreSQL offsets\" count=%d",
                parts->cnt);
        try_assign(g, parts);
    } else {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p >= 0 && p < MAXP)
                g->owned[p] = false;
        }
        if (g->pending_assign) { /* a refused assignment is moot once revoked */
            rd_kafka_topic_partition_list_destroy(g->pending_assign);
            g->pending_assign = NULL;
        }
        gm_info(GPU_COMP, "msg=\"GPU partitions revoked\" count=%d", parts->cnt);
        rd_kafka_resp_err_t ae = rd_kafka_assign(rk, NULL);
        if (ae != RD_KAFKA_RESP_ERR_NO_ERROR) {
            gm_error(GPU_COMP, "msg=\"GPU partition unassignment failed\" error=\"%s\"",
                     rd_kafka_err2str(ae));
            gm_rater_metrics.gpu_assign_failures++;
        }
    }
}

static void seek_to(gm_rater_gpu *g, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_error_t *e = rd_kafka_seek_partitions(g->rk, parts, 10000);
    if (e) {
        gm_warn(GPU_COMP, "msg=\"seek failed\" error=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].err)
            gm_warn(GPU_COMP, "msg=\"seek failed\" partition=%d error=\"%s\"",
                    parts->elems[i].partition, rd_kafka_err2str(parts->elems[i].err));
}

static void rewind_to_stored(gm_rater_gpu *g)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    for (int p = 0; p < MAXP; p++)
        if (g->owned[p])
            rd_kafka_topic_partition_list_add(parts, g->topic, p);
    if (parts->cnt && read_stored(g, parts) == 0) {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            parts->elems[i].offset = g->stored[p] >= 0 ? g->stored[p] : RD_KAFKA_OFFSET_BEGINNING;
        }
        seek_to(g, parts);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Contiguity, as in rater.c: a hole is cut off and sought back; accepted only when the
 * broker's low watermark is past it or it came back after three seeks that each asked the
 * broker successfully. A failed watermark query tells nothing: it never counts as a try. */
static void check_contiguity(gm_rater_gpu *g)
{
    int64_t want[MAXP];
    bool seen[MAXP];
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < g->n_msgs; i++)
        if (g->msgs[i]->partition >= 0 && g->msgs[i]->partition < MAXP)
            g->cut_at[g->msgs[i]->partition] = INT64_MAX;
    for (size_t i = 0; i < g->n_msgs; i++) {
        const rd_kafka_message_t *m = g->msgs[i];
        int32_t p = m->partition;
        if (p < 0 || p >= MAXP || !g->owned[p] || m->offset >= g->cut_at[p])
            continue;
        if (!seen[p]) {
            seen[p] = true;
            want[p] = g->stored[p];
        }
        if (want[p] >= 0 && m->offset < want[p])
            continue;
        if (want[p] < 0 || m->offset == want[p]) {
            want[p] = m->offset + 1;
            continue;
        }
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t qe =
            gm_rater__fault(GM_RATER_FAULT_GPU_WATERMARK)
                ? RD_KAFKA_RESP_ERR__TRANSPORT
                : rd_kafka_query_watermark_offsets(g->rk, g->topic, p, &lo, &hi, 5000);
        if (qe != RD_KAFKA_RESP_ERR_NO_ERROR) {
            gm_warn(GPU_COMP,
                    "msg=\"offset hole: the low watermark query failed, seeking back\" "
                    "partition=%d expected=%lld got=%lld error=\"%s\"",
                    p, (long long)want[p], (long long)m->offset, rd_kafka_err2str(qe));
            gm_rater_metrics.gpu_watermark_failures++;
            g->cut_at[p] = m->offset;
            rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(one, g->topic, p)->offset = want[p];
            seek_to(g, one);
            rd_kafka_topic_partition_list_destroy(one);
            continue;
        }
        if (g->gap_at[p] == want[p])
            g->gap_tries[p]++;
        else {
            g->gap_at[p] = want[p];
            g->gap_tries[p] = 1;
        }
        if (lo > want[p] || g->gap_tries[p] >= 3) {
            gm_warn(GPU_COMP,
                    "msg=\"offset gap accepted: messages in it are gone from the broker\" "
                    "partition=%d from=%lld to=%lld low_watermark=%lld tries=%d",
                    p, (long long)want[p], (long long)m->offset - 1, (long long)lo,
                    g->gap_tries[p]);
            gm_rater_metrics.gpu_offset_gaps++;
            want[p] = m->offset + 1;
            continue;
        }
        g->cut_at[p] = m->offset;
        rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(one, g->topic, p)->offset = want[p];
        seek_to(g, one);
        rd_kafka_topic_partition_list_destroy(one);
    }
}

/* ---- One batch, one transaction ------------------------------------------------------- */
typedef struct cand {
    size_t msg; /* index in g->msgs */
    bool inserted;
    bool classified; /* a duplicate or a conflict */
    bool charged;    /* priced: a kernel-share-v1 window with gpu_us > 0 the book prices */
    bool unpriced;   /* kernel-share-v1 with gpu_us > 0 that no card priced */
    gm_event_price price;
    char reason[768];
} cand;

/* Prices one window's charge: model "*", its gpu_us, at the hour of window_start. The
 * engine prices it at the contract's gpu_window_price under gpu_basis "windows", else 0. */
static void price_window(const gm_rater_gpu *g, const gm_event *ev, cand *c)
{
    c->charged = c->unpriced = false;
    if (!g->book || strcmp(ev->policy, "kernel-share-v1") || ev->gpu_us <= 0)
        return;
    gm_usage u = {ev->tenant, GM_GPU_WINDOW_MODEL,   ev->site, ev->window_start_us,
                  {0},        GM_RATING_SVC_STANDARD};
    u.qty[GM_DIM_GPU] = ev->gpu_us;
    char why[512];
    if (gm_rating_price_event(g->book, &u, &c->price, why, sizeof why) == 0) {
        c->charged = true;
        return;
    }
    c->unpriced = true;
    gm_debug(GPU_COMP, "msg=\"GPU window not charged\" source=%s id=%s error=\"%s\"", ev->source,
             ev->id, why);
}

static void kcols_fill(kcols *k, const cand *cs, size_t n_c)
{
    for (int i = 0; i < N_KCOLS; i++) {
        k->a[i].n = 0;
        ab_put(&k->a[i], "{", 1);
    }
    for (size_t i = 0; i < n_c; i++) {
        if (!cs[i].charged) {
            for (int j = 0; j < N_KCOLS; j++)
                ab_null(&k->a[j]);
            continue;
        }
        const gm_event_price *p = &cs[i].price;
        char t[64];
        ab_str(&k->a[K_CARD], p->card_id);
        ab_i64(&k->a[K_VER], p->card_version);
        ab_str(&k->a[K_CUR], p->currency);
        ab_str(&k->a[K_TIER], p->site_tier);
        gm_dec_format(p->unit_price_p[GM_DIM_GPU], 12, t, sizeof t);
        ab_str(&k->a[K_UP], t);
        gm_dec_format(p->amount_e18[GM_DIM_GPU], 18, t, sizeof t);
        ab_str(&k->a[K_AMT], t);
    }
    for (int i = 0; i < N_KCOLS; i++)
        ab_put(&k->a[i], "}", 1);
}

static int exec_params(gm_rater_gpu *g, const char *sql, int n, const char *const *vals,
                       const char *what, PGresult **out, char *err, size_t err_len)
{
    PGresult *r = PQexecParams(g->pg, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(g->pg, r, what, err, err_len);
        PQclear(r);
        return rc;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

static int write_offsets(gm_rater_gpu *g, const gm_ledger_pos *pos, size_t n_pos, char *err,
                         size_t err_len)
{
    for (size_t k = 0; k < n_pos; k++) {
        char part[16], next[24], expected[24];
        snprintf(part, sizeof part, "%d", pos[k].partition);
        snprintf(next, sizeof next, "%lld", (long long)pos[k].next);
        snprintf(expected, sizeof expected, "%lld", (long long)pos[k].expected);
        const char *vals[] = {g->cfg->group_id, g->topic, part, next, expected};
        PGresult *r = NULL;
        int rc = pos[k].expected < 0
                     ? exec_params(g,
                                   "INSERT INTO gm.consumer_offsets (group_id, topic, partition,"
                                   " next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                                   4, vals, "inserting gm.consumer_offsets", &r, err, err_len)
                     : exec_params(g,
                                   "UPDATE gm.consumer_offsets SET next_offset = $4,"
                                   " updated_at = gm.now() WHERE group_id = $1 AND topic = $2"
                                   " AND partition = $3 AND next_offset = $5",
                                   5, vals, "updating gm.consumer_offsets", &r, err, err_len);
        if (rc)
            return rc;
        bool one = atoi(PQcmdTuples(r)) == 1;
        PQclear(r);
        if (!one)
            return gm_fail(err, err_len, GM_EFENCED,
                           "partition %s/%d: stored offset is no longer %lld (another consumer "
                           "committed): fenced, batch rolled back",
                           g->topic, pos[k].partition, (long long)pos[k].expected);
    }
    return 0;
}

/* rule: NULL (GPU rejects have no rule name but placement's) or "placement". */
static int write_reject(gm_rater_gpu *g, const rd_kafka_message_t *m, const char *reason,
                        const char *rule, char *err, size_t err_len)
{
    char part[16], off[24];
    snprintf(part, sizeof part, "%d", m->partition);
    snprintf(off, sizeof off, "%lld", (long long)m->offset);
    const char *vals[] = {g->topic,
                          part,
                          off,
                          m->key ? (const char *)m->key : NULL,
                          m->payload ? (const char *)m->payload : "",
                          reason,
                          rule};
    int lens[] = {0, 0, 0, (int)m->key_len, m->payload ? (int)m->len : 0, 0, 0};
    int fmts[] = {0, 0, 0, 1, 1, 0, 0};
    PGresult *r = PQexecParams(g->pg,
                               "INSERT INTO gm.rejected_events (kafka_topic, kafka_partition,"
                               " kafka_offset, kafka_key, payload, reason, rule)"
                               " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                               7, NULL, vals, lens, fmts, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = gm_pg_fail(g->pg, r, "inserting gm.rejected_events", err, err_len);
    PQclear(r);
    return rc;
}

static int pos_cmp(const void *a, const void *b)
{
    int32_t x = ((const gm_ledger_pos *)a)->partition, y = ((const gm_ledger_pos *)b)->partition;
    return (x > y) - (x < y);
}

typedef struct coord {
    int32_t partition;
    int64_t offset;
    size_t idx;
} coord;

static int coord_cmp(const void *a, const void *b)
{
    const coord *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Inserts the candidates; classifies the ones the unique keys skipped. */
static int write_windows(gm_rater_gpu *g, cand *cs, size_t n_c, cols *c, char *err, size_t err_len)
{
    cols_reset(c);
    for (size_t i = 0; i < n_c; i++) {
        const rd_kafka_message_t *m = g->msgs[cs[i].msg];
        cols_add(c, &g->events[cs[i].msg], m->partition, m->offset, i);
    }
    cols_close(c);
    kcols kc;
    memset(&kc, 0, sizeof kc);
    kcols_fill(&kc, cs, n_c);
    const char *vals[N_COLS + 1 + N_KCOLS];
    for (int i = 0; i < N_COLS; i++)
        vals[i] = c->a[i].p;
    vals[N_COLS] = g->topic;
    for (int i = 0; i < N_KCOLS; i++)
        vals[N_COLS + 1 + i] = kc.a[i].p;
    PGresult *r = NULL;
    /* The inserted windows (never a duplicate or a conflict: ON CONFLICT skips them) and
     * their charges, in one statement of the batch's transaction: a window is charged
     * exactly when its row is inserted, so exactly once. */
    /* clang-format off */
    static const char insert_sql[] =
        "WITH ins AS (INSERT INTO gm.gpu_windows (source, event_id, seq, site, device, policy,"
        " window_start, window_end, tenant, gpu_us, kernels, unattributed_us, event_time,"
        " kafka_topic, kafka_partition, kafka_offset, charge_card_id, charge_card_version,"
        " charge_currency, charge_unit_price, charge_amount)"
        " SELECT t.source, t.event_id, t.seq, t.site, t.device, t.policy, " US_TS("t.ws") ","
        " " US_TS("t.we") ", t.tenant, t.gpu_us, t.kernels, t.unattributed_us, " US_TS("t.tm") ","
        " $17, t.part, t.off, k.card, k.ver, k.cur, k.up, k.amt"
        " FROM " UNNEST " JOIN unnest($18::text[], $19::int4[], $20::text[], $21::text[],"
        " $22::numeric[], $23::numeric[]) WITH ORDINALITY AS k(card, ver, cur, tier, up, amt, n)"
        " ON k.n = t.idx + 1 ORDER BY t.idx"
        " ON CONFLICT DO NOTHING RETURNING *),"
        " tiers AS (SELECT k.n - 1 AS idx, k.tier FROM unnest($21::text[]) WITH ORDINALITY"
        " AS k(tier, n)),"
        " ch AS (INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
        " card_version, site_tier, currency, unit_price, quantity, amount, events)"
        " SELECT i.tenant, date_trunc('hour', i.window_start AT TIME ZONE 'UTC') AT TIME ZONE"
        " 'UTC', i.site, '*', 'gpu', i.charge_card_id, i.charge_card_version, min(x.tier),"
        " i.charge_currency, i.charge_unit_price, sum(i.gpu_us), sum(i.charge_amount), count(*)"
        " FROM ins i JOIN " UNNEST " ON t.part = i.kafka_partition AND t.off = i.kafka_offset"
        " JOIN tiers x ON x.idx = t.idx"
        " WHERE i.charge_amount IS NOT NULL GROUP BY 1, 2, 3, 6, 7, 9, 10"
        " ON CONFLICT (tenant, hour, site, model, dimension, card_id, card_version, variant,"
        " unit_price)"
        " DO UPDATE SET quantity = gm.charges.quantity + EXCLUDED.quantity,"
        " amount = gm.charges.amount + EXCLUDED.amount,"
        " events = gm.charges.events + EXCLUDED.events)"
        " SELECT kafka_partition, kafka_offset FROM ins";
    /* clang-format on */
    int rc = exec_params(g, insert_sql, N_COLS + 1 + N_KCOLS, vals, "inserting gm.gpu_windows", &r,
                         err, err_len);
    for (int i = 0; i < N_KCOLS; i++)
        free(kc.a[i].p);
    if (rc)
        return rc;
    size_t skipped = n_c - (size_t)PQntuples(r);
    if (!skipped) { /* the usual batch: every candidate inserted */
        for (size_t i = 0; i < n_c; i++)
            cs[i].inserted = true;
        PQclear(r);
        return 0;
    }
    /* Which ones: the returned Kafka coordinates, looked up in the candidates sorted by them. */
    coord *byc = gm_xcalloc(n_c, sizeof *byc);
    for (size_t i = 0; i < n_c; i++)
        byc[i] = (coord){g->msgs[cs[i].msg]->partition, g->msgs[cs[i].msg]->offset, i};
    qsort(byc, n_c, sizeof *byc, coord_cmp);
    for (int k = 0; k < PQntuples(r); k++) {
        coord key = {(int32_t)atol(PQgetvalue(r, k, 0)), atoll(PQgetvalue(r, k, 1)), 0};
        const coord *hit = bsearch(&key, byc, n_c, sizeof *byc, coord_cmp);
        if (hit)
            cs[hit->idx].inserted = true;
    }
    free(byc);
    PQclear(r);
    /* What took the keys of the skipped ones: the same content (a duplicate), or not. */
    cols_reset(c);
    for (size_t i = 0; i < n_c; i++)
        if (!cs[i].inserted) {
            const rd_kafka_message_t *m = g->msgs[cs[i].msg];
            cols_add(c, &g->events[cs[i].msg], m->partition, m->offset, i);
        }
    cols_close(c);
    for (int i = 0; i < N_COLS; i++)
        vals[i] = c->a[i].p;
    /* clang-format off */
    static const char classify_sql[] =
        "SELECT t.idx, e.event_id, e.seq, e.kafka_partition, e.kafka_offset,"
        " (e.event_id = t.event_id AND e.seq = t.seq AND e.site = t.site"
        "  AND e.device = t.device AND e.policy = t.policy"
        "  AND e.window_start = " US_TS("t.ws") " AND e.window_end = " US_TS("t.we")
        "  AND e.tenant = t.tenant AND e.gpu_us = t.gpu_us AND e.kernels = t.kernels"
        "  AND e.unattributed_us = t.unattributed_us"
        "  AND e.event_time = " US_TS("t.tm") ") AS same,"
        " (e.kafka_topic = $17 AND e.kafka_partition = t.part AND e.kafka_offset = t.off) AS self"
        " FROM " UNNEST
        " JOIN gm.gpu_windows e"
        "  ON (e.source = t.source AND (e.event_id = t.event_id OR e.seq = t.seq))"
        "  OR (e.kafka_topic = $17 AND e.kafka_partition = t.part AND e.kafka_offset = t.off)"
        " ORDER BY t.idx, same DESC";
    /* clang-format on */
    rc =
        exec_params(g, classify_sql, N_COLS + 1, vals, "classifying GPU windows", &r, err, err_len);
    if (rc)
        return rc;
    for (int k = 0; k < PQntuples(r); k++) {
        size_t i = (size_t)atoll(PQgetvalue(r, k, 0));
        if (i >= n_c || cs[i].classified)
            continue;
        cs[i].classified = true;
        bool same = PQgetvalue(r, k, 5)[0] == 't';
        if (same) {
            cs[i].reason[0] = '\0'; /* duplicate */
            continue;
        }
        const gm_event *ev = &g->events[cs[i].msg];
        bool self = PQgetvalue(r, k, 6)[0] == 't';
        if (self)
            snprintf(cs[i].reason, sizeof cs[i].reason,
                     "event %s#%s: its Kafka coordinates (%s/%s@%s) already hold another GPU "
                     "window (was the topic re-created?); not counted",
                     ev->source, ev->id, g->topic, PQgetvalue(r, k, 3), PQgetvalue(r, k, 4));
        else
            snprintf(cs[i].reason, sizeof cs[i].reason,
                     "event %s#%s: conflict: %s is already taken by the accepted GPU window "
                     "%s#%s (seq %s, partition %s offset %s) with other content; not counted",
                     ev->source, ev->id,
                     strcmp(PQgetvalue(r, k, 1), ev->id) ? "data.seq" : "(source, id)", ev->source,
                     PQgetvalue(r, k, 1), PQgetvalue(r, k, 2), PQgetvalue(r, k, 3),
                     PQgetvalue(r, k, 4));
    }
    PQclear(r);
    for (size_t i = 0; i < n_c; i++)
        if (!cs[i].inserted && !cs[i].classified)
            return gm_fail(err, err_len, GM_EDB,
                           "GPU window at partition %d offset %lld was neither inserted nor "
                           "matched by a unique key",
                           g->msgs[cs[i].msg]->partition, (long long)g->msgs[cs[i].msg]->offset);
    return 0;
}

static int process_batch(gm_rater_gpu *g, cols *c, cand *cs, gm_ledger_pos *pos)
{
    check_contiguity(g);
    size_t n_pos = 0, n_c = 0;
    size_t n_bad = 0;
    size_t *bad = gm_xcalloc(g->n_msgs + 1, sizeof *bad);
    bool *misplaced = gm_xcalloc(g->n_msgs + 1, sizeof *misplaced); /* by message */
    for (size_t i = 0; i < g->n_msgs; i++) {
        rd_kafka_message_t *m = g->msgs[i];
        int32_t p = m->partition;
        if (p < 0 || p >= MAXP || !g->owned[p] || m->offset >= g->cut_at[p])
            continue;
        if (g->stored[p] >= 0 && m->offset < g->stored[p])
            continue;
        size_t k;
        for (k = 0; k < n_pos && pos[k].partition != p; k++)
            ;
        if (k == n_pos) {
            pos[n_pos].partition = p;
            pos[n_pos].expected = g->stored[p];
            n_pos++;
        }
        pos[k].next = m->offset + 1;
        char *reason = g->reasons[i];
        gm_event *ev = &g->events[i];
        if (m->err)
            snprintf(reason, sizeof g->reasons[0], "kafka: the message could not be read: %s",
                     rd_kafka_err2str(m->err));
        else if (gm_event_decode(m->payload, m->len, ev, reason, sizeof g->reasons[0]) != 0)
            ; /* the reason names the field and the rule */
        else if (ev->type != GM_EVENT_GPU)
            snprintf(reason, sizeof g->reasons[0],
                     "event %s#%s: type: %s is not accepted on topic %s (only gridmeter.gpu.v1)",
                     ev->source, ev->id, gm_event_type_name(ev->type), g->topic);
        else if ((misplaced[i] =
                      gm_rater__misplaced(g->cfg->shard_map, g->topic, m->key, m->key_len, p, ev,
                                          reason, sizeof g->reasons[0])))
            ; /* charged nowhere: its own shard has it (rater/placement.c) */
        else {
            memset(&cs[n_c], 0, sizeof cs[n_c]);
            cs[n_c].msg = i;
            price_window(g, ev, &cs[n_c++]);
            continue;
        }
        bad[n_bad++] = i;
    }
    int rc = 0;
    if (n_pos == 0)
        goto done;
    qsort(pos, n_pos, sizeof *pos, pos_cmp);
    char err[1024];
    size_t dups = 0, conflicts = 0;
    rc = gm_pg_begin(g->pg, NULL, gm_now_us(), err, sizeof err);
    /* offsets first: a fenced consumer stops before it writes anything */
    if (!rc)
        rc = write_offsets(g, pos, n_pos, err, sizeof err);
    if (!rc && !g->topic_registered) {
        const char *tp[1] = {g->topic};
        rc = exec_params(g, "INSERT INTO gm.gpu_topics (topic) VALUES ($1) ON CONFLICT DO NOTHING",
                         1, tp, "registering the GPU topic", NULL, err, sizeof err);
    }
    if (!rc && n_c)
        rc = write_windows(g, cs, n_c, c, err, sizeof err);
    for (size_t i = 0; !rc && i < n_c; i++) {
        if (cs[i].inserted)
            continue;
        if (!cs[i].reason[0]) {
            dups++;
            continue;
        }
        conflicts++;
        rc = write_reject(g, g->msgs[cs[i].msg], cs[i].reason, NULL, err, sizeof err);
    }
    for (size_t i = 0; !rc && i < n_bad; i++)
        rc = write_reject(g, g->msgs[bad[i]], g->reasons[bad[i]],
                          misplaced[bad[i]] ? gm_rater__rule_placement : NULL, err, sizeof err);
    if (!rc)
        rc = gm_pg_exec(g->pg, "COMMIT", err, sizeof err);
    if (rc) {
        if (PQstatus(g->pg) == CONNECTION_OK && PQtransactionStatus(g->pg) != PQTRANS_IDLE)
            PQclear(PQexec(g->pg, "ROLLBACK"));
        gm_warn(GPU_COMP,
                "msg=\"GPU batch not committed, resuming from PostgreSQL offsets\" code=%s "
                "error=\"%s\"",
                gm_errname(rc), err);
        goto done;
    }
    for (size_t k = 0; k < n_pos; k++)
        g->stored[pos[k].partition] = pos[k].next;
    g->topic_registered = true;
    for (size_t i = 0; i < n_c; i++) {
        if (!cs[i].inserted)
            continue; /* a duplicate or a conflict is never charged */
        if (cs[i].charged) {
            int b = cs[i].price.flags & GM_PRICE_F_GPU_WINDOWS ? GM_GPU_BASIS_WINDOWS
                                                               : GM_GPU_BASIS_REQUESTS;
            gm_rater_metrics.gpu_windows_charged[b]++;
            gm_rater_metrics.gpu_window_us_charged[b] += (uint64_t)g->events[cs[i].msg].gpu_us;
        } else if (cs[i].unpriced) {
            gm_rater_metrics.gpu_windows_unpriced++;
        }
    }
    g->accepted += n_c - dups - conflicts;
    g->duplicates += dups;
    g->rejected += conflicts + n_bad;
    for (size_t i = 0; i < n_bad; i++)
        gm_rater_metrics.gpu_misplaced += misplaced[bad[i]];
    gm_debug(GPU_COMP,
             "msg=\"GPU batch committed\" messages=%zu accepted=%zu duplicates=%zu rejected=%zu",
             n_c + n_bad, n_c - dups - conflicts, dups, conflicts + n_bad);
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new((int)n_pos);
    for (size_t k = 0; k < n_pos; k++)
        rd_kafka_topic_partition_list_add(offs, g->topic, pos[k].partition)->offset = pos[k].next;
    rd_kafka_commit(g->rk, offs, 1); /* advisory, for lag tools */
    rd_kafka_topic_partition_list_destroy(offs);
done:
    free(bad);
    free(misplaced);
    return rc;
}

static void free_msgs(gm_rater_gpu *g)
{
    for (size_t i = 0; i < g->n_msgs; i++)
        rd_kafka_message_destroy(g->msgs[i]);
    g->n_msgs = 0;
}

/* The book that prices the windows' charges: loaded on the first batch, then reloaded like
 * the rater's (rater/book_watch.c: after an import's notification, or every book_reload_s); an
 * old book is kept when re-reading fails; without any, the batch waits, so that no window is
 * stored uncharged for want of a book. */
static int ensure_book(gm_rater_gpu *g, char *err, size_t err_len)
{
    int rc = gm_rater__book_refresh(g->pg, &g->book, &g->book_watch, g->cfg->book_reload_s,
                                    GPU_COMP, err, err_len);
    return g->book ? 0 : rc;
}

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

static void *gpu_main(void *arg)
{
    gm_rater_gpu *g = arg;
    cols c;
    memset(&c, 0, sizeof c);
    cand *cs = gm_xcalloc(g->cap, sizeof *cs);
    gm_ledger_pos *pos = gm_xcalloc(g->cap, sizeof *pos);
    int64_t last_activity = gm_mono_us(), last_warn = 0;
    int failures = 0;
    char err[1024];
    while (!stopping(g)) {
        retry_assign(g); /* a refused assignment, tried again */
        int64_t deadline = gm_mono_us() + (int64_t)g->cfg->batch_ms * 1000;
        g->rebalanced = false;
        while (g->n_msgs < g->cap && !stopping(g)) {
            int64_t left_ms = (deadline - gm_mono_us()) / 1000;
            if (left_ms <= 0)
                break;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(g->rk, (int)left_ms);
            if (!m)
                continue;
            if (m->err && !unreadable_message(m)) {
                int64_t now = gm_mono_us();
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && now - last_warn > 60000000) {
                    gm_warn(GPU_COMP, "msg=\"consumer error\" topic=%s error=\"%s\"", g->topic,
                            rd_kafka_message_errstr(m));
                    last_warn = now;
                }
                rd_kafka_message_destroy(m);
                continue;
            }
            g->msgs[g->n_msgs++] = m;
        }
        if (g->rebalanced) {
            for (size_t i = 0; i < g->drop_upto; i++)
                rd_kafka_message_destroy(g->msgs[i]);
            memmove(g->msgs, g->msgs + g->drop_upto, (g->n_msgs - g->drop_upto) * sizeof *g->msgs);
            g->n_msgs -= g->drop_upto;
            g->drop_upto = 0;
            last_activity = gm_mono_us();
        }
        bool owns = false;
        for (int p = 0; p < MAXP && !owns; p++)
            owns = g->owned[p];
        if (g->n_msgs == 0) {
            int64_t idle_ms = (gm_mono_us() - last_activity) / 1000;
            /* idle: nothing polled while owning partitions; with none for 30 s after the
             * usage loop stopped, the GPU topic is not there to wait for */
            if (g->quit == 2 && g->cfg->exit_idle_ms > 0 &&
                ((owns && idle_ms > g->cfg->exit_idle_ms) || idle_ms > 30000))
                break;
            if (!owns && g->quit != 2)
                last_activity = gm_mono_us();
            continue;
        }
        last_activity = gm_mono_us();
        if (pg_reconnect(g, err, sizeof err)) {
            free_msgs(g);
            break;
        }
        int rc = ensure_book(g, err, sizeof err);
        if (rc)
            gm_warn(GPU_COMP, "msg=\"rate cards cannot be loaded, GPU batch waits\" error=\"%s\"",
                    err);
        else
            rc = process_batch(g, &c, cs, pos);
        free_msgs(g);
        if (!rc) {
            failures = 0;
            continue;
        }
        if (rc == GM_EUNKNOWN || PQstatus(g->pg) != CONNECTION_OK) {
            PQfinish(g->pg);
            g->pg = NULL;
            if (pg_reconnect(g, err, sizeof err))
                break;
        }
        rewind_to_stored(g);
        failures++;
        int64_t backoff_ms = failures < 6 ? 100LL << (failures - 1) : 5000;
        if (failures >= 5)
            gm_error(GPU_COMP,
                     "msg=\"GPU batches keep failing; GPU windows are stalled until the cause "
                     "is fixed\" failures_in_row=%d",
                     failures);
        usleep((useconds_t)backoff_ms * 1000);
    }
    gm_info(GPU_COMP, "msg=\"GPU consumer stopping\" accepted=%llu duplicates=%llu rejected=%llu",
            (unsigned long long)g->accepted, (unsigned long long)g->duplicates,
            (unsigned long long)g->rejected);
    free_msgs(g);
    cols_free(&c);
    free(cs);
    free(pos);
    return NULL;
}

int gm_rater_gpu_start(const gm_rater_config *cfg, const char *rater_id,
                       volatile sig_atomic_t *stop, gm_rater_gpu **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!cfg->gpu_topic || !*cfg->gpu_topic)
        return 0;
    gm_rater_gpu *g = gm_xcalloc(1, sizeof *g);
    g->cfg = cfg;
    g->topic = cfg->gpu_topic;
    g->stop = stop;
    snprintf(g->rater_id, sizeof g->rater_id, "%s/gpu", rater_id);
    snprintf(g->kafka_group, sizeof g->kafka_group, "%s.gpu", cfg->group_id);
    for (int p = 0; p < MAXP; p++)
        g->stored[p] = g->gap_at[p] = -1;
    g->cap = (size_t)(cfg->batch_max > 0 ? cfg->batch_max : 5000);
    g->msgs = gm_xcalloc(g->cap, sizeof *g->msgs);
    g->events = gm_xcalloc(g->cap, sizeof *g->events);
    g->reasons = gm_xcalloc(g->cap, sizeof *g->reasons);
    g->pg = gm_pg_connect(cfg->db_conninfo, "gridmeter-rater-gpu", err, err_len);
    if (g->pg && cfg->shard && gm_shard_session(g->pg, cfg->shard, err, err_len)) {
        PQfinish(g->pg);
        g->pg = NULL;
    }
    if (!g->pg) {
        gm_rater_gpu_stop(g, false);
        return GM_EDB;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", cfg->session_timeout_ms);
    const char *kv[][2] = {
        {"bootstrap.servers", cfg->brokers},
        {"group.id", g->kafka_group},
        {"client.id", g->rater_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"session.timeout.ms", timeout},
        {"heartbeat.interval.ms", "1000"},
        {"partition.assignment.strategy", "range"},
        {"fetch.wait.max.ms", "100"},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(kv); i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, err_len) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            gm_rater_gpu_stop(g, false);
            return GM_EKAFKA;
        }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, g);
    g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, err_len);
    if (!g->rk) {
        rd_kafka_conf_destroy(conf);
        gm_rater_gpu_stop(g, false);
        return GM_EKAFKA;
    }
    rd_kafka_poll_set_consumer(g->rk);
    rd_kafka_resp_err_t e = 0;
    if (cfg->shard_map) {
        /* sharded: the shard's partitions of the GPU topic, statically (as rater.c) */
        const gm_shard_topic *t = gm_shard_map_topic(cfg->shard_map, g->topic);
        if (!t) {
            gm_rater_gpu_stop(g, false);
            return gm_fail(err, err_len, GM_ECONFIG,
                           "shard %s: the shard map does not list the GPU topic %s (add it, "
                           "or run with --gpu-topic= for none)",
                           cfg->shard, cfg->gpu_topic);
        }
        int32_t ids[MAXP];
        size_t n =
            gm_shard_map_partitions(t, gm_shard_map_find(cfg->shard_map, cfg->shard), ids, MAXP);
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new((int)n + 1);
        for (size_t i = 0; i < n && i < MAXP; i++)
            rd_kafka_topic_partition_list_add(parts, g->topic, ids[i]);
        rebalance_cb(g->rk, RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, parts, g);
        rd_kafka_topic_partition_list_destroy(parts);
    } else {
        rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(subs, g->topic, RD_KAFKA_PARTITION_UA);
        e = rd_kafka_subscribe(g->rk, subs);
        rd_kafka_topic_partition_list_destroy(subs);
    }
    if (e) {
        gm_fail(err, err_len, GM_EKAFKA, "subscribe %s: %s", g->topic, rd_kafka_err2str(e));
        gm_rater_gpu_stop(g, false);
        return GM_EKAFKA;
    }
    if (pthread_create(&g->thread, NULL, gpu_main, g)) {
        gm_fail(err, err_len, GM_EIO, "cannot start the GPU consumer's thread");
        gm_rater_gpu_stop(g, false);
        return GM_EIO;
    }
    g->started = true;
    *out = g;
    gm_info(GPU_COMP, "msg=\"GPU consumer started\" topic=%s group=%s", g->topic, g->kafka_group);
    return 0;
}

void gm_rater_gpu_stop(gm_rater_gpu *g, bool when_idle)
{
    if (!g)
        return;
    if (g->started) {
        g->quit = when_idle ? 2 : 1;
        pthread_join(g->thread, NULL);
    }
    if (g->rk) {
        rd_kafka_consumer_close(g->rk);
        rd_kafka_destroy(g->rk);
    }
    if (g->pending_assign)
        rd_kafka_topic_partition_list_destroy(g->pending_assign);
    PQfinish(g->pg);
    gm_rating_book_free(g->book);
    free(g->msgs);
    free(g->events);
    free(g->reasons);
    free(g);
}
