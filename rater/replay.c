/* Replaying rejects: the stored payload of a rejected message is decoded, checked and priced
 * again with the rate cards, contracts and limits of now, and written through the rater's
 * exactly-once writer in replay mode (ledger/batch.c): the ledger row, the seq, the charges
 * and the reject's mark (replayed_at, outcome, the row that accounts for it) commit together,
 * and a reject already marked is never replayed again (two replays at once: one wins, the
 * other finds nothing left). docs/operations.md "Rejects". */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rater.h"
#include "gm_rating.h"
#include "rater_int.h"

#include <stdlib.h>
#include <string.h>

#define REPLAY_CHUNK 1000

int gm_rejects_where(const gm_rejects_filter *f, bool only_pending, gm_rejects_where_t *w,
                     char *err, size_t err_len)
{
    memset(w, 0, sizeof *w);
    size_t n = 0;
    n += (size_t)snprintf(w->sql + n, sizeof w->sql - n, " WHERE true");
#define COND(fmt, value)                                                                           \
    do {                                                                                           \
        if (w->n >= (int)GM_ARRAY_LEN(w->v))                                                       \
            return gm_fail(err, err_len, GM_EINVAL, "too many filters");                           \
        snprintf(w->store[w->n], sizeof w->store[0], "%s", value);                                 \
        w->v[w->n] = w->store[w->n];                                                               \
        w->n++;                                                                                    \
        n += (size_t)snprintf(w->sql + n, sizeof w->sql - n, fmt, w->n);                           \
    } while (0)
    if (only_pending || !f->include_replayed)
        n += (size_t)snprintf(w->sql + n, sizeof w->sql - n, " AND replayed_at IS NULL");
    if (only_pending) /* a misplaced message is charged by its own shard, never here */
        n += (size_t)snprintf(w->sql + n, sizeof w->sql - n,
                              " AND rule IS DISTINCT FROM 'placement'");
    if (f->rule && *f->rule)
        COND(" AND rule = $%d", f->rule);
    if (f->reason && *f->reason)
        COND(" AND strpos(reason, $%d) > 0", f->reason);
    if (f->source && *f->source)
        COND(" AND source = $%d", f->source);
    if (f->tenant && *f->tenant)
        COND(" AND tenant = $%d", f->tenant);
    if (f->topic && *f->topic)
        COND(" AND kafka_topic = $%d", f->topic);
    char num[32], ts[40];
    if (f->partition >= 0) {
        snprintf(num, sizeof num, "%d", f->partition);
        COND(" AND kafka_partition = $%d", num);
    }
    if (f->offset >= 0) {
        snprintf(num, sizeof num, "%lld", (long long)f->offset);
        COND(" AND kafka_offset = $%d", num);
    }
    if (f->since_us) {
        gm_time_format(f->since_us, ts, sizeof ts);
        COND(" AND received_at >= $%d::timestamptz", ts);
    }
    if (f->until_us) {
        gm_time_format(f->until_us, ts, sizeof ts);
        COND(" AND received_at < $%d::timestamptz", ts);
    }
    if (f->time_from_us) {
        gm_time_format(f->time_from_us, ts, sizeof ts);
        COND(" AND event_time >= $%d::timestamptz", ts);
    }
    if (f->time_to_us) {
        gm_time_format(f->time_to_us, ts, sizeof ts);
        COND(" AND event_time < $%d::timestamptz", ts);
    }
#undef COND
    n += (size_t)snprintf(w->sql + n, sizeof w->sql - n,
                          " ORDER BY kafka_topic, kafka_partition, kafka_offset");
    if (f->limit > 0)
        snprintf(w->sql + n, sizeof w->sql - n, " LIMIT %lld", (long long)f->limit);
    return 0;
}

typedef struct pending {
    char topic[256];
    int32_t partition;
    int64_t offset;
    unsigned char *key, *payload; /* PQunescapeBytea: PQfreemem */
    size_t key_len, payload_len;
} pending;

static void pending_free(pending *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQfreemem(p[i].key);
        PQfreemem(p[i].payload);
    }
    free(p);
}

static void progress(FILE *out, const gm_replay_result *r, size_t total, int64_t t0_us)
{
    if (!out)
        return;
    size_t done = r->rated + r->duplicates + r->conflicts + r->still_rejected;
    double s = (double)(gm_mono_us() - t0_us) / 1e6;
    double rate = s > 0 ? (double)done / s : 0;
    fprintf(out, "\rreplay: %zu/%zu rejects (%.0f/s, ETA %.0f s)   ", done, total, rate,
            rate > 0 ? (double)(total - done) / rate : 0.0);
    fflush(out);
}

/* Rates one chunk of rejects of one topic again and commits it. */
static int replay_chunk(gm_ledger_writer *w, const gm_rater_config *cfg, const gm_rating_book *book,
                        pending *p, size_t n, int64_t now_us, FILE *out, gm_replay_result *res,
                        char *err, size_t err_len)
{
    gm_event *evs = gm_xcalloc(n, sizeof *evs);
    gm_ledger_row *rows = gm_xcalloc(n, sizeof *rows);
    size_t n_rows = 0, still = 0;
    char reason[768];
    for (size_t i = 0; i < n; i++) {
        const char *rule = "contract";
        gm_event *ev = &evs[n_rows];
        int rc = gm_event_decode((const char *)p[i].payload, p[i].payload_len, ev, reason,
                                 sizeof reason);
        if (rc == 0 && ev->type != GM_EVENT_USAGE) {
            rule = "type";
            snprintf(reason, sizeof reason, "event %s#%s: type: %s is not rated (only %s)",
                     ev->source, ev->id, gm_event_type_name(ev->type), "gridmeter.usage.v1");
            rc = GM_EINVAL;
        }
        if (rc == 0)
            rc = gm_rater__rate_event(cfg, book, ev, now_us, &rows[n_rows], reason, sizeof reason,
                                      &rule);
        if (rc) {
            still++;
            if (out)
                fprintf(out, "still rejected %s/%d/%lld (%s): %s\n", p[i].topic, p[i].partition,
                        (long long)p[i].offset, rule, reason);
            continue;
        }
        gm_ledger_row *row = &rows[n_rows++];
        row->partition = p[i].partition;
        row->offset = p[i].offset;
        row->key = p[i].key;
        row->key_len = p[i].key_len;
        row->payload = p[i].payload;
        row->payload_len = p[i].payload_len;
    }
    int rc = 0;
    if (n_rows) {
        gm_ledger_batch b = {"gridmeter-rejects-replay",
                             p[0].topic,
                             "gridmeter rejects replay",
                             rows,
                             n_rows,
                             NULL,
                             0,
                             NULL,
                             0};
        gm_ledger_result r;
        rc = gm_ledger_writer_commit(w, &b, &r, err, err_len);
        if (rc == 0) {
            res->rated += r.accepted;
            res->duplicates += r.duplicates;
            res->conflicts += r.conflicts;
        }
    }
    if (rc == 0)
        res->still_rejected += still;
    free(rows);
    free(evs);
    return rc;
}

int gm_rater_replay(PGconn *c, const gm_rater_config *cfg, const gm_rejects_filter *f, bool dry_run,
                    FILE *prog, FILE *out, gm_replay_result *res, char *err, size_t err_len)
{
    memset(res, 0, sizeof *res);
    gm_rating_book *book = NULL;
    int rc = gm_ledger_load_book(c, &book, err, err_len);
    if (rc)
        return rc;
    gm_rejects_where_t wh;
    if ((rc = gm_rejects_where(f, true, &wh, err, err_len))) {
        gm_rating_book_free(book);
        return rc;
    }
    char sql[1400];
    snprintf(sql, sizeof sql,
             "SELECT kafka_topic, kafka_partition, kafka_offset, kafka_key, payload"
             " FROM gm.rejected_events%s",
             wh.sql);
    gm_ledger_writer *w = gm_ledger_writer_new(c);
    gm_ledger_writer_set_replay(w, true, dry_run);
    int64_t t0 = gm_mono_us(), now_us = gm_now_us();
    /* Another replay (or a rater on the same source) may commit between our read and our
     * write: the writer then refuses (GM_ECONFLICT) and we read again what is left. */
    for (int attempt = 0;; attempt++) {
        PGresult *r = PQexecParams(c, sql, wh.n, NULL, wh.v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = gm_pg_fail(c, r, "reading gm.rejected_events", err, err_len);
            PQclear(r);
            break;
        }
        size_t n = (size_t)PQntuples(r);
        if (attempt == 0)
            res->selected = n;
        pending *p = gm_xcalloc(n ? n : 1, sizeof *p);
        for (size_t i = 0; i < n; i++) {
            snprintf(p[i].topic, sizeof p[i].topic, "%s", PQgetvalue(r, (int)i, 0));
            p[i].partition = (int32_t)atol(PQgetvalue(r, (int)i, 1));
            p[i].offset = atoll(PQgetvalue(r, (int)i, 2));
            if (!PQgetisnull(r, (int)i, 3))
                p[i].key =
                    PQunescapeBytea((const unsigned char *)PQgetvalue(r, (int)i, 3), &p[i].key_len);
            p[i].payload =
                PQunescapeBytea((const unsigned char *)PQgetvalue(r, (int)i, 4), &p[i].payload_len);
        }
        PQclear(r);
        rc = 0;
        res->still_rejected = 0; /* those stay unmarked: read (and counted) again */
        for (size_t lo = 0; lo < n && rc == 0;) {
            size_t hi = lo + 1;
            while (hi < n && hi - lo < REPLAY_CHUNK && !strcmp(p[hi].topic, p[lo].topic))
                hi++;
            rc = replay_chunk(w, cfg, book, p + lo, hi - lo, now_us, out, res, err, err_len);
            progress(prog, res, res->selected, t0);
            lo = hi;
        }
        pending_free(p, n);
        if (rc != GM_ECONFLICT || attempt >= 20)
            break;
        gm_ledger_writer_reset(w);
    }
    if (prog && res->selected)
        fputc('\n', prog);
    gm_ledger_writer_free(w);
    gm_rating_book_free(book);
    return rc;
}
