/* The exactly-once batch writer: one PostgreSQL transaction per rater batch.
 *
 * DESIGN. Duplicates are found in C, by each source's accepted seq ranges (gm.sources,
 * loaded once per source and cached while this writer owns it), so that the accepted rows
 * can be COPYed straight into the ledger's compact storage gm.ledger_rows (sql/0012: ids for
 * the repeated strings, resolved before the transaction by ids.c, and no per-event amounts).
 * Its unique index (source_id, event_id) in each monthly partition stays as the safety net:
 * when it fires, the whole batch is rolled back and
 * written again down the slow path (INSERT … ON CONFLICT DO NOTHING RETURNING), and only
 * the rows actually inserted are charged. Charges are summed per batch in memory and
 * upserted in key order (so that two raters never deadlock on them). The sources' ranges
 * and the partitions' offsets are written with a compare-and-set: if another rater moved
 * either, this batch rolls back whole and the caller resumes from PostgreSQL's offsets.
 *
 * EPOCHS. Seqs count per (source, epoch) (data.epoch, docs/events.md "Epochs"): the seq
 * ranges, gm.sources rows and the lookup by seq are keyed by both; (source, id) stays the
 * idempotency key across epochs. Epoch 0 (every event without data.epoch) costs nothing more.
 *
 * IDENTITY. A seq already taken is a quiet duplicate only when it is the same event (L5):
 * for the rows the seq ranges flag (the rare path: re-sends), the accepted event is found
 * in this batch or in the ledger (by (source, id, time), then (source, id), then
 * (source, seq)) and compared field by field; anything else is a conflict, kept in
 * gm.conflicting_events with both SHA-256 fingerprints. Rows the seq ranges accept cost
 * nothing more than before.
 *
 * Order: 0 intern new ids (before BEGIN; each commits on its own), then inside the transaction:
 *   1 load uncached sources   2 dedupe by seq   2b classify seq collisions   3 ledger rows
 *   4 charges   5 sources (CAS)   6 rejected and conflicting   7 offsets (CAS)
 *   7b chain digest (chain.c)   8 batch record   9 COMMIT
 */
#include "gm_ingest.h"
#include "ledger_int.h"
#include "chain_int.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const char *const dim_names[GM_LEDGER_DIMS] = {"input",       "cached",    "output", "gpu",
                                                      "cache_write", "reasoning", "request"};

/* ---- A growable text buffer for COPY data ------------------------------------------------*/
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->n + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + extra + 1)
            cap *= 2;
        b->p = gm_xrealloc(b->p, cap);
        b->cap = cap;
    }
}

static void sb_put(sbuf *b, const char *s, size_t len)
{
    sb_reserve(b, len);
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_ch(sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

static void sb_i64(sbuf *b, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    sb_put(b, t, (size_t)n);
}

static void sb_dec(sbuf *b, gm_i128 v, int scale)
{
    char t[64];
    size_t n = gm_dec_format(v, scale, t, sizeof t);
    sb_put(b, t, n);
}

/* COPY text format: escape backslash, tab, newline, carriage return. */
static void sb_text(sbuf *b, const char *s, size_t len)
{
    sb_reserve(b, len * 2);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        switch (c) {
        case '\\':
            b->p[b->n++] = '\\';
            b->p[b->n++] = '\\';
            break;
        case '\t':
            b->p[b->n++] = '\\';
            b->p[b->n++] = 't';
            break;
        case '\n':
            b->p[b->n++] = '\\';
            b->p[b->n++] = 'n';
            break;
        case '\r':
            b->p[b->n++] = '\\';
            b->p[b->n++] = 'r';
            break;
        default:
            b->p[b->n++] = c;
        }
    }
    b->p[b->n] = '\0';
}

/* bytea in COPY text format: \\x followed by hex. */
static void sb_bytea(sbuf *b, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    sb_reserve(b, 3 + len * 2);
    b->p[b->n++] = '\\';
    b->p[b->n++] = '\\';
    b->p[b->n++] = 'x';
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i++) {
        b->p[b->n++] = hex[d[i] >> 4];
        b->p[b->n++] = hex[d[i] & 15];
    }
    b->p[b->n] = '\0';
}

/* ---- COPY binary format ------------------------------------------------------------------
 * The ledger rows go in binary: PostgreSQL then parses no text (four numerics and two
 * timestamps a row), which is most of the cost of a text COPY. */
static void bin_u16(sbuf *b, uint16_t v)
{
    unsigned char t[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    sb_put(b, (const char *)t, 2);
}

static void bin_u32(sbuf *b, uint32_t v)
{
    unsigned char t[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    sb_put(b, (const char *)t, 4);
}

static void bin_i64(sbuf *b, int64_t v)
{
    bin_u32(b, 8);
    bin_u32(b, (uint32_t)((uint64_t)v >> 32));
    bin_u32(b, (uint32_t)(uint64_t)v);
}

static void bin_i32(sbuf *b, int32_t v)
{
    bin_u32(b, 4);
    bin_u32(b, (uint32_t)v);
}

static void bin_text(sbuf *b, const char *s)
{
    size_t n = strlen(s);
    bin_u32(b, (uint32_t)n);
    sb_put(b, s, n);
}

/* timestamptz: microseconds since 2000-01-01T00:00:00Z. */
static void bin_ts(sbuf *b, int64_t us)
{
    bin_i64(b, us - INT64_C(946684800000000));
}

static void bin_header(sbuf *b)
{
    sb_put(b, "PGCOPY\n\377\r\n", 11);
    bin_u32(b, 0); /* flags */
    bin_u32(b, 0); /* header extension */
}

/* ---- Hash maps ----------------------------------------------------------------------------*/
static uint64_t fnv1a(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
#define FNV_SEED 14695981039346656037ULL

typedef struct source_state {
    char *source;  /* NULL: empty slot */
    int64_t epoch; /* data.epoch: the state is per (source, epoch) */
    char tenant[GM_EVENT_TENANT_MAX + 1];
    gm_seqset seqs;
    char *db_text;              /* gm.sources.seqs as PostgreSQL holds it; NULL: no row */
    int64_t n_added;            /* events accepted in the current batch */
    int64_t n_dups;             /* quiet duplicates in the current batch */
    int64_t t_min_us, t_max_us; /* event times of the events accepted in the current batch */
    bool touched;               /* part of the current batch */
    bool loaded;                /* looked up in PostgreSQL */
} source_state;

typedef struct charge {
    bool used;
    uint64_t hash;
    const gm_ledger_row *row; /* a row with this key (for the strings) */
    int dim;
    int64_t hour_us;
    int64_t unit_price_p;
    gm_i128 quantity;
    gm_i128 amount_e18;
    int64_t events;
} charge;

/* What a row is after dedupe and classification (w->dup). */
enum { ROW_NEW = 0, ROW_DUP = 1, ROW_CONFLICT = 2 };

/* Why a row is a conflict, and the accepted event that holds its identity. */
typedef struct conflict_info {
    const char *kind; /* content_differs, seq_taken, id_reused */
    unsigned char fp[32];
    bool have_accepted;
    char accepted_id[GM_EVENT_ID_MAX + 1];
    int64_t accepted_seq;
    int64_t accepted_epoch;
    unsigned char accepted_fp[32];
    char accepted_topic[256];
    int32_t accepted_partition;
    int64_t accepted_offset;
} conflict_info;

struct gm_ledger_writer {
    PGconn *conn;
    bool temp_ready;
    source_state *src; /* open addressing, power of two */
    size_t src_cap, src_n;
    source_state **touched; /* this batch's sources, in first-seen order */
    size_t n_touched, touched_cap;
    charge *ch;
    size_t ch_cap, ch_n;
    unsigned char *dup; /* per row: ROW_… (not written to the ledger unless ROW_NEW) */
    size_t dup_cap;
    struct conflict_info *cf; /* per row, for ROW_CONFLICT rows */
    size_t cf_cap;
    size_t *seen; /* (source, seq) -> row + 1 of this batch's new rows (open addressing) */
    size_t seen_cap;
    sbuf buf;
    char *fmt;
    size_t fmt_cap;
    bool replay, dry_run;              /* gm_ledger_writer_set_replay */
    gm_chain *chain;                   /* tamper evidence (ledger/chain.c) */
    const gm_ledger_batch *chain_prep; /* digests to prepare during the next COPY */
    ledger__ids *ids;                  /* interned ids, kept across batches and resets */
    ledger__row_ids *rid;              /* per row of the current batch */
    size_t rid_cap;
};

/* For the chain hook: what gm.conflicting_events keeps of conflicting row i. */
static void conflict_of(const void *arg, size_t i, const char **kind, const unsigned char **fp)
{
    const gm_ledger_writer *w = arg;
    *kind = w->cf[i].kind;
    *fp = w->cf[i].fp;
}

void gm_ledger_writer_set_replay(gm_ledger_writer *w, bool replay, bool dry_run)
{
    w->replay = replay;
    w->dry_run = replay && dry_run;
}

gm_ledger_writer *gm_ledger_writer_new(PGconn *c)
{
    gm_ledger_writer *w = gm_xcalloc(1, sizeof *w);
    w->conn = c;
    w->src_cap = 1024;
    w->src = gm_xcalloc(w->src_cap, sizeof *w->src);
    w->chain = gm_chain_new();
    w->ids = ledger__ids_new();
    gm_chain__on_conflicts(w->chain, conflict_of, w);
    return w;
}

static void free_sources(gm_ledger_writer *w)
{
    for (size_t i = 0; i < w->src_cap; i++) {
        if (w->src[i].source) {
            free(w->src[i].source);
            free(w->src[i].db_text);
            gm_seqset_clear(&w->src[i].seqs);
        }
    }
    memset(w->src, 0, w->src_cap * sizeof *w->src);
    w->src_n = 0;
    w->n_touched = 0;
}

void gm_ledger_writer_reset(gm_ledger_writer *w)
{
    if (w)
        free_sources(w);
}

void gm_ledger_writer_free(gm_ledger_writer *w)
{
    if (!w)
        return;
    free_sources(w);
    free(w->src);
    free(w->touched);
    free(w->ch);
    free(w->dup);
    free(w->cf);
    free(w->seen);
    free(w->buf.p);
    free(w->fmt);
    gm_chain_free(w->chain);
    ledger__ids_free(w->ids);
    free(w->rid);
    free(w);
}

static uint64_t source_hash(const char *source, int64_t epoch)
{
    uint64_t h = fnv1a(source, strlen(source), FNV_SEED);
    return epoch ? fnv1a(&epoch, sizeof epoch, h) : h;
}

static source_state *source_get(gm_ledger_writer *w, const char *source, int64_t epoch)
{
    if ((w->src_n + 1) * 2 > w->src_cap) { /* grow at half full */
        size_t old_cap = w->src_cap;
        source_state *old = w->src;
        w->src_cap *= 2;
        w->src = gm_xcalloc(w->src_cap, sizeof *w->src);
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].source)
                continue;
            size_t j = source_hash(old[i].source, old[i].epoch) & (w->src_cap - 1);
            while (w->src[j].source)
                j = (j + 1) & (w->src_cap - 1);
            w->src[j] = old[i];
        }
        free(old);
        /* touched pointers are rebuilt by the caller: growth happens only before dedupe */
    }
    size_t j = source_hash(source, epoch) & (w->src_cap - 1);
    while (w->src[j].source) {
        if (w->src[j].epoch == epoch && !strcmp(w->src[j].source, source))
            return &w->src[j];
        j = (j + 1) & (w->src_cap - 1);
    }
    w->src[j].source = gm_xstrdup(source);
    w->src[j].epoch = epoch;
    w->src_n++;
    return &w->src[j];
}

static source_state *source_find(gm_ledger_writer *w, const char *source, int64_t epoch)
{
    size_t j = source_hash(source, epoch) & (w->src_cap - 1);
    while (w->src[j].source) {
        if (w->src[j].epoch == epoch && !strcmp(w->src[j].source, source))
            return &w->src[j];
        j = (j + 1) & (w->src_cap - 1);
    }
    return NULL;
}

/* ---- Steps --------------------------------------------------------------------------------*/
static int ensure_temp_tables(gm_ledger_writer *w, char *err, size_t err_len)
{
    if (w->temp_ready)
        return 0;
    int rc = gm_pg_exec(
        w->conn,
        "CREATE TEMP TABLE IF NOT EXISTS gm_tmp_charges (LIKE gm.charges) ON COMMIT DELETE ROWS;"
        "CREATE TEMP TABLE IF NOT EXISTS gm_tmp_sources (source text, tenant text,"
        " old_seqs int8multirange, new_seqs int8multirange, n bigint, is_new boolean,"
        " d bigint, epoch bigint, t_min timestamptz, t_max timestamptz)"
        " ON COMMIT DELETE ROWS;"
        "CREATE TEMP TABLE IF NOT EXISTS gm_tmp_ledger (LIKE gm.ledger_rows INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS",
        err, err_len);
    if (rc == 0)
        w->temp_ready = true;
    return rc;
}

static int copy_in(gm_ledger_writer *w, const char *sql, const char *what, char *err,
                   size_t err_len)
{
    PGresult *r = PQexec(w->conn, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        int rc = gm_pg_fail(w->conn, r, what, err, err_len);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    if (PQputCopyData(w->conn, w->buf.p, (int)w->buf.n) != 1 || PQputCopyEnd(w->conn, NULL) != 1)
        return gm_pg_fail(w->conn, NULL, what, err, err_len);
    int rc = 0;
    if (w->chain_prep) { /* while the server works: the batch digests' record part */
        rc = gm_chain_prepare(w->chain, w->chain_prep, w->dup, err, err_len);
        w->chain_prep = NULL;
    }
    while ((r = PQgetResult(w->conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0)
            rc = gm_pg_fail(w->conn, r, what, err, err_len);
        PQclear(r);
    }
    return rc;
}

/* Runs a command and returns its affected-row count in *n. */
static int exec_count(gm_ledger_writer *w, const char *sql, int nparams, const char *const *params,
                      long *n, const char *what, char *err, size_t err_len)
{
    PGresult *r = PQexecParams(w->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(w->conn, r, what, err, err_len);
        PQclear(r);
        return rc;
    }
    if (n)
        *n = atol(PQcmdTuples(r));
    PQclear(r);
    return 0;
}

/* Step 1: load the seq ranges of this batch's sources that are not cached yet. */
static int load_sources(gm_ledger_writer *w, const gm_ledger_batch *b, char *err, size_t err_len)
{
    sbuf *q = &w->buf, ep = {0};
    q->n = 0;
    sb_str(q, "{");
    sb_ch(&ep, '{');
    size_t n_missing = 0;
    for (size_t i = 0; i < b->n_rows; i++) {
        source_state *s = source_get(w, b->rows[i].ev->source, b->rows[i].ev->epoch);
        if (s->loaded || s->touched)
            continue;
        s->touched = true; /* marks "queued" for this lookup */
        if (n_missing++) {
            sb_ch(q, ',');
            sb_ch(&ep, ',');
        }
        sb_ch(q, '"');
        sb_str(q, s->source); /* source charset has no quotes or backslashes */
        sb_ch(q, '"');
        sb_i64(&ep, s->epoch);
    }
    sb_str(q, "}");
    sb_ch(&ep, '}');
    if (n_missing == 0) {
        free(ep.p);
        return 0;
    }
    const char *params[2] = {q->p, ep.p};
    PGresult *r = PQexecParams(w->conn,
                               "SELECT s.source, s.seqs::text, s.epoch FROM gm.sources s"
                               " JOIN unnest($1::text[], $2::bigint[]) AS u(source, epoch)"
                               " ON s.source = u.source AND s.epoch = u.epoch",
                               2, NULL, params, NULL, NULL, 0);
    free(ep.p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(w->conn, r, "loading gm.sources", err, err_len);
        PQclear(r);
        return rc;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        source_state *s = source_find(w, PQgetvalue(r, i, 0), atoll(PQgetvalue(r, i, 2)));
        if (!s)
            continue;
        if (gm_seqset_parse(&s->seqs, PQgetvalue(r, i, 1)) != 0) {
            int rc =
                gm_fail(err, err_len, GM_ECORRUPT, "gm.sources %s epoch %lld: unreadable seqs %s",
                        s->source, (long long)s->epoch, PQgetvalue(r, i, 1));
            PQclear(r);
            return rc;
        }
        s->db_text = gm_xstrdup(PQgetvalue(r, i, 1));
    }
    PQclear(r);
    for (size_t i = 0; i < w->src_cap; i++)
        if (w->src[i].source && w->src[i].touched && !w->src[i].loaded) {
            w->src[i].loaded = true;
            w->src[i].touched = false;
        }
    return 0;
}

/* Step 2: mark duplicates by seq, add accepted seqs, and list this batch's sources. */
static size_t dedupe(gm_ledger_writer *w, const gm_ledger_batch *b)
{
    size_t dups = 0;
    w->n_touched = 0;
    for (size_t i = 0; i < b->n_rows; i++) {
        const gm_event *ev = b->rows[i].ev;
        source_state *s = source_find(w, ev->source, ev->epoch);
        if (!s->touched) {
            s->touched = true;
            s->n_added = 0;
            s->n_dups = 0;
            s->t_min_us = INT64_MAX;
            s->t_max_us = INT64_MIN;
            if (w->n_touched == w->touched_cap) {
                w->touched_cap = w->touched_cap ? w->touched_cap * 2 : 64;
                w->touched = gm_xrealloc(w->touched, w->touched_cap * sizeof *w->touched);
            }
            w->touched[w->n_touched++] = s;
            snprintf(s->tenant, sizeof s->tenant, "%s", ev->tenant);
        }
        if (gm_seqset_add(&s->seqs, (int64_t)ev->seq)) {
            w->dup[i] = ROW_NEW;
            s->n_added++;
            if (ev->time_us < s->t_min_us)
                s->t_min_us = ev->time_us;
            if (ev->time_us > s->t_max_us)
                s->t_max_us = ev->time_us;
        } else {
            w->dup[i] = ROW_DUP; /* the seq is taken: classify() says by what */
            dups++;
        }
    }
    return dups;
}

int gm_event_fingerprint(const gm_event *ev, unsigned char out[32])
{
    char buf[GM_EVENT_MAX_BYTES + 1];
    size_t n = gm_event_encode(ev, buf, sizeof buf);
    unsigned int out_len = 0;
    if (n == 0 || EVP_Digest(buf, n, out, &out_len, EVP_sha256(), NULL) != 1 || out_len != 32) {
        memset(out, 0, 32);
        return GM_EINVAL;
    }
    return 0;
}

static void hex_prefix(const unsigned char *fp, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[fp[i] >> 4];
        out[2 * i + 1] = hex[fp[i] & 15];
    }
    out[16] = '\0';
}

/* Decides what row i is, given the accepted event `a` that holds its (source, seq) or
 * (source, id) (NULL: none could be found) at Kafka coordinates topic/partition/offset. */
static void classify_against(gm_ledger_writer *w, const gm_ledger_batch *b, size_t i,
                             const gm_event *a, const char *topic, int32_t partition,
                             int64_t offset)
{
    const gm_event *ev = b->rows[i].ev;
    conflict_info *cf = &w->cf[i];
    memset(cf, 0, sizeof *cf);
    if (a && !strcmp(a->id, ev->id) && a->seq == ev->seq && a->epoch == ev->epoch &&
        gm_event_equal(a, ev)) {
        w->dup[i] = ROW_DUP; /* where the accepted event is, for a replay's mark */
        snprintf(cf->accepted_topic, sizeof cf->accepted_topic, "%s", topic);
        cf->accepted_partition = partition;
        cf->accepted_offset = offset;
        cf->have_accepted = true;
        return;
    }
    w->dup[i] = ROW_CONFLICT;
    if (gm_event_fingerprint(ev, cf->fp) != 0)
        memset(cf->fp, 0, sizeof cf->fp);
    if (!a) {
        cf->kind = "seq_taken";
        return;
    }
    /* the same id under another (epoch, seq) is a reused id */
    cf->kind = strcmp(a->id, ev->id)                        ? "seq_taken"
               : a->seq != ev->seq || a->epoch != ev->epoch ? "id_reused"
                                                            : "content_differs";
    cf->have_accepted = true;
    snprintf(cf->accepted_id, sizeof cf->accepted_id, "%s", a->id);
    cf->accepted_seq = (int64_t)a->seq;
    cf->accepted_epoch = a->epoch;
    if (gm_event_fingerprint(a, cf->accepted_fp) != 0)
        memset(cf->accepted_fp, 0, sizeof cf->accepted_fp);
    snprintf(cf->accepted_topic, sizeof cf->accepted_topic, "%s", topic);
    cf->accepted_partition = partition;
    cf->accepted_offset = offset;
}

static uint64_t seen_hash(const char *source, int64_t epoch, uint64_t seq)
{
    return fnv1a(&seq, sizeof seq, source_hash(source, epoch));
}

/* Step 2b: the rows listed in idx[0..n) claim a (source, seq) or (source, id) that is taken;
 * each becomes ROW_DUP (the same event again) or ROW_CONFLICT (L5). The accepted event is
 * looked for among this batch's new rows first, then in the ledger. */
static int classify(gm_ledger_writer *w, const gm_ledger_batch *b, const size_t *idx, size_t n,
                    char *err, size_t err_len)
{
    if (n == 0)
        return 0;
    if (w->cf_cap < b->n_rows) {
        free(w->cf);
        w->cf_cap = b->n_rows;
        w->cf = gm_xcalloc(w->cf_cap, sizeof *w->cf);
    }
    /* This batch's new rows by (source, seq). */
    size_t cap = 64;
    while (cap < b->n_rows * 2)
        cap *= 2;
    if (w->seen_cap < cap) {
        free(w->seen);
        w->seen = gm_xcalloc(cap, sizeof *w->seen);
        w->seen_cap = cap;
    } else {
        memset(w->seen, 0, w->seen_cap * sizeof *w->seen);
    }
    size_t mask = w->seen_cap - 1;
    for (size_t i = 0; i < b->n_rows; i++) {
        if (w->dup[i] != ROW_NEW)
            continue;
        const gm_event *ev = b->rows[i].ev;
        size_t j = seen_hash(ev->source, ev->epoch, ev->seq) & mask;
        while (w->seen[j])
            j = (j + 1) & mask;
        w->seen[j] = i + 1;
    }
    /* rows whose accepted event is not in this batch: looked up in the ledger, one query */
    size_t *in_ledger = gm_xmalloc(n * sizeof *in_ledger);
    size_t n_in_ledger = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = idx[k];
        const gm_event *ev = b->rows[i].ev;
        size_t found = 0;
        for (size_t j = seen_hash(ev->source, ev->epoch, ev->seq) & mask; w->seen[j];
             j = (j + 1) & mask) {
            const gm_event *o = b->rows[w->seen[j] - 1].ev;
            if (o->seq == ev->seq && o->epoch == ev->epoch && !strcmp(o->source, ev->source)) {
                found = w->seen[j];
                break;
            }
        }
        if (found)
            classify_against(w, b, i, b->rows[found - 1].ev, b->topic, b->rows[found - 1].partition,
                             b->rows[found - 1].offset);
        else
            in_ledger[n_in_ledger++] = i;
    }
    int rc = 0;
    if (n_in_ledger) {
        /* One query for the rest: by (source, id, time) (one partition), by (source, id),
         * then by (source, epoch, seq); the first that finds a row answers. */
        sbuf a_src = {0}, a_id = {0}, a_seq = {0}, a_time = {0}, a_ep = {0};
        sb_ch(&a_ep, '{');
        sb_ch(&a_src, '{');
        sb_ch(&a_id, '{');
        sb_ch(&a_seq, '{');
        sb_ch(&a_time, '{');
        for (size_t k = 0; k < n_in_ledger; k++) {
            const gm_event *ev = b->rows[in_ledger[k]].ev;
            const char *sep = k ? "," : "";
            char ts[40];
            gm_time_format(ev->time_us, ts, sizeof ts);
            /* the id character set has no quotes, backslashes, commas or braces */
            sb_str(&a_src, sep);
            sb_ch(&a_src, '"');
            sb_str(&a_src, ev->source);
            sb_ch(&a_src, '"');
            sb_str(&a_id, sep);
            sb_ch(&a_id, '"');
            sb_str(&a_id, ev->id);
            sb_ch(&a_id, '"');
            sb_str(&a_seq, sep);
            sb_i64(&a_seq, (int64_t)ev->seq);
            sb_str(&a_time, sep);
            sb_str(&a_time, ts);
            sb_str(&a_ep, sep);
            sb_i64(&a_ep, ev->epoch);
        }
        sb_ch(&a_ep, '}');
        sb_ch(&a_src, '}');
        sb_ch(&a_id, '}');
        sb_ch(&a_seq, '}');
        sb_ch(&a_time, '}');
        const char *params[5] = {a_src.p, a_id.p, a_seq.p, a_time.p, a_ep.p};
        PGresult *r = PQexecParams(
            w->conn,
            "SELECT u.i, x.event_id, x.seq, x.tenant,"
            " (extract(epoch FROM x.event_time) * 1000000)::bigint, x.site, x.model,"
            " coalesce(x.request_id, ''), x.input_tokens, x.cached_tokens, x.output_tokens,"
            " x.gpu_us, x.kafka_topic, x.kafka_partition, x.kafka_offset,"
            " x.reasoning_tokens, x.cache_write_tokens, x.service_tier, x.epoch"
            " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[])"
            "  WITH ORDINALITY AS u(source, id, seq, t, e, i)"
            " CROSS JOIN LATERAL ("
            "  (SELECT * FROM gm.ledger l WHERE l.source = u.source AND l.event_id = u.id"
            "    AND l.event_time = u.t)"
            "  UNION ALL (SELECT * FROM gm.ledger l WHERE l.source = u.source AND l.event_id = "
            "u.id)"
            "  UNION ALL (SELECT * FROM gm.ledger l WHERE l.source = u.source AND l.seq = u.seq"
            "    AND l.epoch = u.e)"
            "  LIMIT 1) x",
            5, NULL, params, NULL, NULL, 0);
        free(a_ep.p);
        free(a_src.p);
        free(a_id.p);
        free(a_seq.p);
        free(a_time.p);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = gm_pg_fail(w->conn, r, "looking up the accepted events of re-sent seqs", err,
                            err_len);
        } else {
            unsigned char *done = gm_xcalloc(n_in_ledger, 1);
            for (int k = 0; k < PQntuples(r); k++) {
                long u = atol(PQgetvalue(r, k, 0)) - 1;
                if (u < 0 || (size_t)u >= n_in_ledger || done[u])
                    continue;
                done[u] = 1;
                const gm_event *ev = b->rows[in_ledger[u]].ev;
                /* The accepted event, rebuilt from its ledger row. Every field of gm_event that
                 * a usage event carries must be read back here (a new token field included):
                 * one left out makes every re-send of an event with it a conflict. */
                gm_event a;
                memset(&a, 0, sizeof a);
                a.type = GM_EVENT_USAGE;
                snprintf(a.source, sizeof a.source, "%s", ev->source);
                snprintf(a.id, sizeof a.id, "%s", PQgetvalue(r, k, 1));
                a.seq = (uint64_t)atoll(PQgetvalue(r, k, 2));
                a.epoch = atoll(PQgetvalue(r, k, 18)); /* usage revision 1.2 */
                snprintf(a.tenant, sizeof a.tenant, "%s", PQgetvalue(r, k, 3));
                a.time_us = atoll(PQgetvalue(r, k, 4));
                snprintf(a.site, sizeof a.site, "%s", PQgetvalue(r, k, 5));
                snprintf(a.model, sizeof a.model, "%s", PQgetvalue(r, k, 6));
                snprintf(a.request_id, sizeof a.request_id, "%s", PQgetvalue(r, k, 7));
                a.input_tokens = atoll(PQgetvalue(r, k, 8));
                a.cached_tokens = atoll(PQgetvalue(r, k, 9));
                a.output_tokens = atoll(PQgetvalue(r, k, 10));
                a.gpu_us = atoll(PQgetvalue(r, k, 11));
                a.reasoning_tokens = atoll(PQgetvalue(r, k, 15)); /* usage revision 1.1 */
                a.cache_write_tokens = atoll(PQgetvalue(r, k, 16));
                if (gm_service_tier_parse(PQgetvalue(r, k, 17), (size_t)PQgetlength(r, k, 17),
                                          &a.service_tier))
                    a.service_tier = GM_SERVICE_TIER_COUNT; /* never equal to a decoded one */
                classify_against(w, b, in_ledger[u], &a, PQgetvalue(r, k, 12),
                                 (int32_t)atol(PQgetvalue(r, k, 13)), atoll(PQgetvalue(r, k, 14)));
            }
            for (size_t u = 0; u < n_in_ledger; u++)
                if (!done[u]) /* its seq was received, but no accepted event holds it */
                    classify_against(w, b, in_ledger[u], NULL, NULL, 0, 0);
            free(done);
        }
        PQclear(r);
    }
    free(in_ledger);
    return rc;
}

/* One compact ledger row (gm.ledger_rows, sql/0012) in COPY binary format, columns in
 * LEDGER_COLUMNS order: no text but the two ids, no numerics. */
static void ledger_copy_row(sbuf *q, const gm_ledger_row *row, const ledger__row_ids *id,
                            int64_t ingested_us)
{
    const gm_event *ev = row->ev;
    bin_u16(q, 20);
    bin_ts(q, ev->time_us);
    bin_i64(q, (int64_t)ev->seq);
    bin_i64(q, row->offset);
    bin_i64(q, ev->input_tokens);
    bin_i64(q, ev->cached_tokens);
    bin_i64(q, ev->output_tokens);
    bin_i64(q, ev->gpu_us);
    bin_i64(q, ev->reasoning_tokens); /* usage revision 1.1 (sql/0009) */
    bin_i64(q, ev->cache_write_tokens);
    bin_ts(q, ingested_us);
    bin_i32(q, id->source);
    bin_i32(q, id->tenant);
    bin_i32(q, id->site);
    bin_i32(q, id->model);
    bin_i32(q, id->pricing);
    bin_i32(q, id->stream);
    bin_u32(q, 2);
    bin_u16(q, (uint16_t)ev->service_tier); /* 0 standard, 1 batch, 2 priority */
    bin_text(q, ev->id);
    bin_text(q, ev->request_id); /* '' when none */
    bin_i64(q, ev->epoch);       /* usage revision 1.2 (sql/0015) */
}

#define LEDGER_COLUMNS                                                                             \
    "event_time, seq, kafka_offset, input_tokens, cached_tokens, output_tokens, gpu_us,"           \
    " reasoning_tokens, cache_write_tokens, ingested_at, source_id, tenant_id, site_id, model_id," \
    " pricing_id, stream_id, service_tier, event_id, request_id, epoch"

/* The compact ledger keeps unit prices, not amounts (sql/0012: amount = quantity x unit
 * price): a row whose amounts are not exactly that would read back other amounts than its
 * charges hold. Refused (GM_ERANGE: tied to this message, so the rater isolates it as
 * poison) instead of stored. Scales: 10^-18 amounts, 10^-12 prices per token or request,
 * per GPU-second for gpu_us (microseconds). */
static int check_amounts(const gm_ledger_row *row, char *err, size_t err_len)
{
    const gm_event *ev = row->ev;
    int64_t qty[GM_LEDGER_DIMS];
    ledger__charge_qty(row, qty);
    for (int d = 0; d < GM_LEDGER_DIMS; d++) {
        gm_i128 want = (gm_i128)qty[d] * row->unit_price_p[d] * (d == LEDGER_DIM_GPU ? 1 : 1000000);
        if (row->amount_e18[d] != want)
            return gm_fail(err, err_len, GM_ERANGE,
                           "event %s#%s: amount of %s is not its quantity x unit price (the "
                           "ledger stores prices, not amounts)",
                           ev->source, ev->id, ledger__dim_names[d]);
    }
    return 0;
}

/* Step 3: the ledger rows. Fast: COPY straight in. Slow: COPY into a temp table, then
 * INSERT … ON CONFLICT DO NOTHING RETURNING, and mark the rows it skipped as duplicates. */
static int write_ledger(gm_ledger_writer *w, const gm_ledger_batch *b, bool slow, int64_t now_us,
                        size_t *dups, char *err, size_t err_len)
{
    sbuf *q = &w->buf;
    q->n = 0;
    bin_header(q);
    size_t n = 0;
    for (size_t i = 0; i < b->n_rows; i++)
        if (!w->dup[i]) {
            int rc = check_amounts(&b->rows[i], err, err_len);
            if (rc)
                return rc;
            ledger_copy_row(q, &b->rows[i], &w->rid[i], now_us);
            n++;
        }
    bin_u16(q, 0xffff); /* trailer */
    if (n == 0)
        return 0;
    if (!slow) {
        w->chain_prep = b;
        return copy_in(w, "COPY gm.ledger_rows (" LEDGER_COLUMNS ") FROM STDIN (FORMAT binary)",
                       "COPY into gm.ledger_rows", err, err_len);
    }
    int rc = copy_in(w, "COPY gm_tmp_ledger (" LEDGER_COLUMNS ") FROM STDIN (FORMAT binary)",
                     "COPY into the ledger staging table", err, err_len);
    if (rc)
        return rc;
    PGresult *r =
        PQexec(w->conn, "INSERT INTO gm.ledger_rows (" LEDGER_COLUMNS ") SELECT " LEDGER_COLUMNS
                        " FROM gm_tmp_ledger ON CONFLICT DO NOTHING"
                        " RETURNING stream_id, kafka_offset");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = gm_pg_fail(w->conn, r, "INSERT into gm.ledger (slow path)", err, err_len);
        PQclear(r);
        return rc;
    }
    /* Rows not returned were duplicates by the unique key. Kafka coordinates (the stream id
     * of topic and partition, and the offset) identify rows. */
    unsigned char *inserted = gm_xcalloc(b->n_rows, 1);
    for (int k = 0; k < PQntuples(r); k++) {
        int32_t stream = (int32_t)atol(PQgetvalue(r, k, 0));
        int64_t off = atoll(PQgetvalue(r, k, 1));
        for (size_t i = 0; i < b->n_rows; i++)
            if (w->rid[i].stream == stream && b->rows[i].offset == off) {
                inserted[i] = 1;
                break;
            }
    }
    PQclear(r);
    /* Rows the unique key refused: (source, id) is taken in the event's month (sql/0012),
     * under another seq or with the same one (lost source state). Classified like seq
     * collisions (L5). */
    size_t *idx = gm_xmalloc((b->n_rows ? b->n_rows : 1) * sizeof *idx);
    size_t n_idx = 0;
    for (size_t i = 0; i < b->n_rows; i++)
        if (!w->dup[i] && !inserted[i]) {
            w->dup[i] = ROW_DUP;
            (*dups)++;
            /* Its seq stays received (no gap), but it is no accepted event. */
            source_find(w, b->rows[i].ev->source, b->rows[i].ev->epoch)->n_added--;
            idx[n_idx++] = i;
        }
    free(inserted);
    rc = classify(w, b, idx, n_idx, err, err_len);
    free(idx);
    return rc;
}

static uint64_t charge_hash(const gm_ledger_row *row, int dim, int64_t hour_us, int64_t price)
{
    const gm_event *ev = row->ev;
    uint64_t h = FNV_SEED;
    h = fnv1a(ev->tenant, strlen(ev->tenant) + 1, h);
    h = fnv1a(ev->site, strlen(ev->site) + 1, h);
    h = fnv1a(ev->model, strlen(ev->model) + 1, h);
    h = fnv1a(row->card_id, strlen(row->card_id) + 1, h);
    h = fnv1a(&row->card_version, sizeof row->card_version, h);
    h = fnv1a(&dim, sizeof dim, h);
    h = fnv1a(&hour_us, sizeof hour_us, h);
    h = fnv1a(&price, sizeof price, h);
    const char *variant = ledger__variant(row);
    if (variant[0])
        h = fnv1a(variant, strlen(variant) + 1, h);
    return h;
}

static bool charge_same(const charge *c, const gm_ledger_row *row, int dim, int64_t hour_us,
                        int64_t price)
{
    const gm_event *a = c->row->ev, *e = row->ev;
    return c->dim == dim && c->hour_us == hour_us && c->unit_price_p == price &&
           c->row->card_version == row->card_version && !strcmp(a->tenant, e->tenant) &&
           !strcmp(a->site, e->site) && !strcmp(a->model, e->model) &&
           !strcmp(c->row->card_id, row->card_id) &&
           !strcmp(ledger__variant(c->row), ledger__variant(row));
}

static int charge_cmp(const void *pa, const void *pb)
{
    const charge *a = pa, *b = pb;
    const gm_event *x = a->row->ev, *y = b->row->ev;
    int c;
    if ((c = strcmp(x->tenant, y->tenant)))
        return c;
    if (a->hour_us != b->hour_us)
        return a->hour_us < b->hour_us ? -1 : 1;
    if ((c = strcmp(x->site, y->site)))
        return c;
    if ((c = strcmp(x->model, y->model)))
        return c;
    if ((c = strcmp(dim_names[a->dim], dim_names[b->dim])))
        return c;
    if ((c = strcmp(a->row->card_id, b->row->card_id)))
        return c;
    if (a->row->card_version != b->row->card_version)
        return a->row->card_version < b->row->card_version ? -1 : 1;
    if ((c = strcmp(ledger__variant(a->row), ledger__variant(b->row))))
        return c;
    if (a->unit_price_p != b->unit_price_p)
        return a->unit_price_p < b->unit_price_p ? -1 : 1;
    return 0;
}

/* Step 4: charges, summed in memory from the inserted rows and upserted in key order. */
static int write_charges(gm_ledger_writer *w, const gm_ledger_batch *b, size_t *n_out, char *err,
                         size_t err_len)
{
    size_t need = 64;
    while (need < b->n_rows * GM_LEDGER_DIMS * 2)
        need *= 2;
    if (w->ch_cap < need) {
        free(w->ch);
        w->ch = gm_xcalloc(need, sizeof *w->ch);
        w->ch_cap = need;
    } else {
        memset(w->ch, 0, w->ch_cap * sizeof *w->ch);
    }
    w->ch_n = 0;
    for (size_t i = 0; i < b->n_rows; i++) {
        if (w->dup[i])
            continue;
        const gm_ledger_row *row = &b->rows[i];
        const gm_event *ev = row->ev;
        int64_t qty[GM_LEDGER_DIMS];
        ledger__charge_qty(row, qty);
        int64_t hour_us = ev->time_us - ev->time_us % GM_US_PER_HOUR;
        for (int d = 0; d < GM_LEDGER_DIMS; d++) {
            if (qty[d] == 0 && row->amount_e18[d] == 0)
                continue;
            int64_t price = row->unit_price_p[d];
            uint64_t h = charge_hash(row, d, hour_us, price);
            size_t j = h & (w->ch_cap - 1);
            while (w->ch[j].used &&
                   !(w->ch[j].hash == h && charge_same(&w->ch[j], row, d, hour_us, price)))
                j = (j + 1) & (w->ch_cap - 1);
            charge *c = &w->ch[j];
            if (!c->used) {
                c->used = true;
                c->hash = h;
                c->row = row;
                c->dim = d;
                c->hour_us = hour_us;
                c->unit_price_p = price;
                w->ch_n++;
            }
            if (gm_i128_add(c->quantity, qty[d], &c->quantity) ||
                gm_i128_add(c->amount_e18, row->amount_e18[d], &c->amount_e18))
                return gm_fail(err, err_len, GM_ERANGE,
                               "charges: sum overflows for tenant %s model %s", ev->tenant,
                               ev->model);
            c->events++;
        }
    }
    *n_out = w->ch_n;
    if (w->ch_n == 0)
        return 0;
    /* Compact and sort by key: every rater takes row locks in the same order. */
    size_t k = 0;
    for (size_t j = 0; j < w->ch_cap; j++)
        if (w->ch[j].used)
            w->ch[k++] = w->ch[j];
    qsort(w->ch, k, sizeof *w->ch, charge_cmp);
    sbuf *q = &w->buf;
    q->n = 0;
    for (size_t j = 0; j < k; j++) {
        const charge *c = &w->ch[j];
        const gm_event *ev = c->row->ev;
        char ts[40];
        gm_time_format(c->hour_us, ts, sizeof ts);
        sb_str(q, ev->tenant);
        sb_ch(q, '\t');
        sb_str(q, ts);
        sb_ch(q, '\t');
        sb_str(q, ev->site);
        sb_ch(q, '\t');
        sb_str(q, ev->model);
        sb_ch(q, '\t');
        sb_str(q, dim_names[c->dim]);
        sb_ch(q, '\t');
        sb_text(q, c->row->card_id, strlen(c->row->card_id));
        sb_ch(q, '\t');
        sb_i64(q, c->row->card_version);
        sb_ch(q, '\t');
        if (c->row->site_tier)
            sb_text(q, c->row->site_tier, strlen(c->row->site_tier));
        else
            sb_str(q, "\\N");
        sb_ch(q, '\t');
        sb_str(q, c->row->currency);
        sb_ch(q, '\t');
        sb_dec(q, c->unit_price_p, 12);
        sb_ch(q, '\t');
        sb_dec(q, c->quantity, 0);
        sb_ch(q, '\t');
        sb_dec(q, c->amount_e18, 18);
        sb_ch(q, '\t');
        sb_i64(q, c->events);
        sb_ch(q, '\t');
        const char *variant = ledger__variant(c->row);
        sb_text(q, variant, strlen(variant));
        sb_ch(q, '\n');
    }
    int rc = copy_in(w,
                     "COPY gm_tmp_charges (tenant, hour, site, model, dimension, card_id,"
                     " card_version, site_tier, currency, unit_price, quantity, amount, events,"
                     " variant) FROM STDIN",
                     "COPY into the charges staging table", err, err_len);
    if (rc)
        return rc;
    return exec_count(
        w,
        "INSERT INTO gm.charges SELECT * FROM gm_tmp_charges"
        " ORDER BY tenant, hour, site, model, dimension, card_id, card_version, variant,"
        " unit_price"
        " ON CONFLICT (tenant, hour, site, model, dimension, card_id, card_version, variant,"
        " unit_price) DO UPDATE SET quantity = gm.charges.quantity + EXCLUDED.quantity,"
        " amount = gm.charges.amount + EXCLUDED.amount,"
        " events = gm.charges.events + EXCLUDED.events",
        0, NULL, NULL, "upserting gm.charges", err, err_len);
}

/* Step 5: the sources' seq ranges, compare-and-set against what this writer last saw. */
static int write_sources(gm_ledger_writer *w, char *err, size_t err_len)
{
    if (w->n_touched == 0)
        return 0;
    sbuf *q = &w->buf;
    q->n = 0;
    long n_new = 0, n_old = 0;
    for (size_t i = 0; i < w->n_touched; i++) {
        source_state *s = w->touched[i];
        sb_str(q, s->source);
        sb_ch(q, '\t');
        sb_str(q, s->tenant);
        sb_ch(q, '\t');
        sb_str(q, s->db_text ? s->db_text : "\\N");
        sb_ch(q, '\t');
        gm_seqset_format(&s->seqs, &w->fmt, &w->fmt_cap);
        sb_str(q, w->fmt);
        sb_ch(q, '\t');
        sb_i64(q, s->n_added);
        sb_str(q, s->db_text ? "\tf\t" : "\tt\t");
        sb_i64(q, s->n_dups);
        sb_ch(q, '\t');
        sb_i64(q, s->epoch);
        if (s->t_min_us <= s->t_max_us) {
            char ts[40];
            gm_time_format(s->t_min_us, ts, sizeof ts);
            sb_ch(q, '\t');
            sb_str(q, ts);
            gm_time_format(s->t_max_us, ts, sizeof ts);
            sb_ch(q, '\t');
            sb_str(q, ts);
        } else {
            sb_str(q, "\t\\N\t\\N");
        }
        sb_ch(q, '\n');
        if (s->db_text)
            n_old++;
        else
            n_new++;
    }
    int rc = copy_in(w, "COPY gm_tmp_sources FROM STDIN", "COPY into the sources staging table",
                     err, err_len);
    if (rc)
        return rc;
    long n = 0;
    if (n_old) {
        rc = exec_count(w,
                        "UPDATE gm.sources s SET seqs = t.new_seqs, events = s.events + t.n,"
                        " duplicates = s.duplicates + t.d,"
                        " first_time = least(s.first_time, t.t_min),"
                        " last_time = greatest(s.last_time, t.t_max),"
                        " last_seen = gm.now() FROM gm_tmp_sources t"
                        " WHERE NOT t.is_new AND s.source = t.source AND s.epoch = t.epoch"
                        " AND s.seqs = t.old_seqs",
                        0, NULL, &n, "updating gm.sources", err, err_len);
        if (rc)
            return rc;
        if (n != n_old)
            return gm_fail(err, err_len, GM_ECONFLICT,
                           "gm.sources: %ld of %ld sources changed under this rater (another "
                           "rater wrote them): batch rolled back",
                           n_old - n, n_old);
    }
    if (n_new) {
        rc = exec_count(w,
                        "INSERT INTO gm.sources (source, tenant, seqs, events, duplicates, epoch,"
                        " first_time, last_time)"
                        " SELECT source, tenant, new_seqs, n, d, epoch, t_min, t_max"
                        " FROM gm_tmp_sources WHERE is_new"
                        " ON CONFLICT (source, epoch) DO NOTHING",
                        0, NULL, &n, "inserting gm.sources", err, err_len);
        if (rc)
            return rc;
        if (n != n_new)
            return gm_fail(err, err_len, GM_ECONFLICT,
                           "gm.sources: %ld new sources were created meanwhile by another "
                           "rater: batch rolled back",
                           n_new - n);
    }
    return 0;
}

/* Step 6: rejected messages, with their coordinates and reason. */
static int write_rejects(gm_ledger_writer *w, const gm_ledger_batch *b, char *err, size_t err_len)
{
    if (b->n_rejects == 0)
        return 0;
    sbuf *q = &w->buf;
    q->n = 0;
    for (size_t i = 0; i < b->n_rejects; i++) {
        const gm_ledger_reject *r = &b->rejects[i];
        sb_text(q, b->topic, strlen(b->topic));
        sb_ch(q, '\t');
        sb_i64(q, r->partition);
        sb_ch(q, '\t');
        sb_i64(q, r->offset);
        sb_ch(q, '\t');
        if (r->key)
            sb_bytea(q, r->key, r->key_len);
        else
            sb_str(q, "\\N");
        sb_ch(q, '\t');
        sb_bytea(q, r->payload ? r->payload : "", r->payload_len);
        sb_ch(q, '\t');
        sb_text(q, r->reason, strlen(r->reason));
        sb_ch(q, '\t');
        if (r->ev) { /* identifiers are checked: nothing to escape */
            char ts[40] = "";
            if (r->ev->time_us != INT64_MIN)
                gm_time_format(r->ev->time_us, ts, sizeof ts);
            sb_str(q, r->ev->source);
            sb_ch(q, '\t');
            sb_str(q, r->ev->id);
            sb_ch(q, '\t');
            sb_i64(q, (int64_t)r->ev->seq);
            sb_ch(q, '\t');
            /* a refused message's tenant and time may be unknown (gm_event_identity_of) */
            sb_str(q, r->ev->tenant[0] ? r->ev->tenant : "\\N");
            sb_ch(q, '\t');
            sb_str(q, r->ev->time_us == INT64_MIN ? "\\N" : ts);
        } else {
            sb_str(q, "\\N\t\\N\t\\N\t\\N\t\\N");
        }
        sb_ch(q, '\t');
        sb_str(q, r->rule ? r->rule : "\\N");
        sb_ch(q, '\t');
        if (r->ev)
            sb_i64(q, r->ev->epoch);
        else
            sb_str(q, "\\N");
        sb_ch(q, '\n');
    }
    return copy_in(w,
                   "COPY gm.rejected_events (kafka_topic, kafka_partition, kafka_offset,"
                   " kafka_key, payload, reason, source, event_id, seq, tenant, event_time, rule,"
                   " epoch) FROM STDIN",
                   "COPY into gm.rejected_events", err, err_len);
}

static void sb_fp(sbuf *q, const unsigned char *fp)
{
    sb_bytea(q, fp, 32);
}

/* Step 6b: conflicting messages (L5), with both fingerprints and the accepted event. */
static int write_conflicts(gm_ledger_writer *w, const gm_ledger_batch *b, char *err, size_t err_len)
{
    sbuf *q = &w->buf;
    q->n = 0;
    char canon[GM_EVENT_MAX_BYTES + 1];
    for (size_t i = 0; i < b->n_rows; i++) {
        if (w->dup[i] != ROW_CONFLICT)
            continue;
        const gm_ledger_row *row = &b->rows[i];
        const gm_event *ev = row->ev;
        const conflict_info *cf = &w->cf[i];
        char ts[40], fp[17], afp[17], reason[768];
        gm_time_format(ev->time_us, ts, sizeof ts);
        hex_prefix(cf->fp, fp);
        hex_prefix(cf->accepted_fp, afp);
        if (!cf->have_accepted)
            snprintf(reason, sizeof reason,
                     "event %s#%s: data.seq: %llu was received before and no accepted event "
                     "holds it: kept as a conflict, not charged",
                     ev->source, ev->id, (unsigned long long)ev->seq);
        else if (!strcmp(cf->kind, "seq_taken") && ev->epoch)
            snprintf(reason, sizeof reason,
                     "event %s#%s: data.seq: %llu of data.epoch %lld belongs to the accepted "
                     "event %s#%s (another id): kept as a conflict, not charged",
                     ev->source, ev->id, (unsigned long long)ev->seq, (long long)ev->epoch,
                     ev->source, cf->accepted_id);
        else if (!strcmp(cf->kind, "seq_taken"))
            snprintf(reason, sizeof reason,
                     "event %s#%s: data.seq: %llu belongs to the accepted event %s#%s (another "
                     "id; a node that lost its state?): kept as a conflict, not charged",
                     ev->source, ev->id, (unsigned long long)ev->seq, ev->source, cf->accepted_id);
        else if (!strcmp(cf->kind, "id_reused") && cf->accepted_epoch != ev->epoch)
            snprintf(reason, sizeof reason,
                     "event %s#%s: id: belongs to the accepted event with data.epoch %lld and "
                     "data.seq %lld, this message has data.epoch %lld and data.seq %llu: kept "
                     "as a conflict, not charged",
                     ev->source, ev->id, (long long)cf->accepted_epoch, (long long)cf->accepted_seq,
                     (long long)ev->epoch, (unsigned long long)ev->seq);
        else if (!strcmp(cf->kind, "id_reused"))
            snprintf(reason, sizeof reason,
                     "event %s#%s: id: belongs to the accepted event with data.seq %lld, this "
                     "message has data.seq %llu: kept as a conflict, not charged",
                     ev->source, ev->id, (long long)cf->accepted_seq, (unsigned long long)ev->seq);
        else
            snprintf(reason, sizeof reason,
                     "event %s#%s: content differs from the accepted event with the same "
                     "source, id and data.seq %llu (fingerprint %s… against %s…): kept as a "
                     "conflict, not charged",
                     ev->source, ev->id, (unsigned long long)ev->seq, fp, afp);
        sb_text(q, b->topic, strlen(b->topic));
        sb_ch(q, '\t');
        sb_i64(q, row->partition);
        sb_ch(q, '\t');
        sb_i64(q, row->offset);
        sb_ch(q, '\t');
        if (row->key)
            sb_bytea(q, row->key, row->key_len);
        else
            sb_str(q, "\\N");
        sb_ch(q, '\t');
        if (row->payload) {
            sb_bytea(q, row->payload, row->payload_len);
        } else {
            size_t n = gm_event_encode(ev, canon, sizeof canon);
            sb_bytea(q, canon, n);
        }
        sb_ch(q, '\t');
        sb_str(q, ev->source);
        sb_ch(q, '\t');
        sb_str(q, ev->id);
        sb_ch(q, '\t');
        sb_i64(q, (int64_t)ev->seq);
        sb_ch(q, '\t');
        sb_str(q, ev->tenant);
        sb_ch(q, '\t');
        sb_str(q, ts);
        sb_ch(q, '\t');
        sb_fp(q, cf->fp);
        sb_ch(q, '\t');
        sb_str(q, cf->kind);
        sb_ch(q, '\t');
        sb_text(q, reason, strlen(reason));
        if (cf->have_accepted) {
            sb_ch(q, '\t');
            sb_str(q, cf->accepted_id);
            sb_ch(q, '\t');
            sb_i64(q, cf->accepted_seq);
            sb_ch(q, '\t');
            sb_fp(q, cf->accepted_fp);
            sb_ch(q, '\t');
            sb_text(q, cf->accepted_topic, strlen(cf->accepted_topic));
            sb_ch(q, '\t');
            sb_i64(q, cf->accepted_partition);
            sb_ch(q, '\t');
            sb_i64(q, cf->accepted_offset);
            sb_ch(q, '\t');
            sb_i64(q, cf->accepted_epoch);
        } else {
            sb_str(q, "\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N");
        }
        sb_ch(q, '\t');
        sb_i64(q, ev->epoch);
        sb_ch(q, '\n');
    }
    return copy_in(w,
                   "COPY gm.conflicting_events (kafka_topic, kafka_partition, kafka_offset,"
                   " kafka_key, payload, source, event_id, seq, tenant, event_time, fingerprint,"
                   " kind, reason, accepted_event_id, accepted_seq, accepted_fingerprint,"
                   " accepted_kafka_topic, accepted_kafka_partition, accepted_kafka_offset,"
                   " accepted_epoch, epoch) FROM STDIN",
                   "COPY into gm.conflicting_events", err, err_len);
}

/* Step 7: offsets, compare-and-set per partition. */
static int write_offsets(gm_ledger_writer *w, const gm_ledger_batch *b, char *err, size_t err_len)
{
    for (size_t i = 0; i < b->n_pos; i++) {
        const gm_ledger_pos *p = &b->pos[i];
        char part[16], next[24], expected[24];
        snprintf(part, sizeof part, "%d", p->partition);
        snprintf(next, sizeof next, "%lld", (long long)p->next);
        snprintf(expected, sizeof expected, "%lld", (long long)p->expected);
        const char *params[5] = {b->group_id, b->topic, part, next, expected};
        long n = 0;
        int rc;
        if (p->expected < 0)
            rc = exec_count(w,
                            "INSERT INTO gm.consumer_offsets (group_id, topic, partition,"
                            " next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            4, params, &n, "inserting gm.consumer_offsets", err, err_len);
        else
            rc = exec_count(w,
                            "UPDATE gm.consumer_offsets SET next_offset = $4, updated_at = gm.now()"
                            " WHERE group_id = $1 AND topic = $2 AND partition = $3"
                            " AND next_offset = $5",
                            5, params, &n, "updating gm.consumer_offsets", err, err_len);
        if (rc)
            return rc;
        if (n != 1)
            return gm_fail(err, err_len, GM_EFENCED,
                           "partition %s/%d: stored offset is no longer %lld (another consumer "
                           "committed): this rater is fenced, batch rolled back",
                           b->topic, p->partition, (long long)p->expected);
    }
    return 0;
}

static int write_batch_record(gm_ledger_writer *w, const gm_ledger_batch *b,
                              const gm_ledger_result *res, char *err, size_t err_len)
{
    char msgs[24], acc[24], dup[24], rej[24], cfl[24];
    snprintf(msgs, sizeof msgs, "%zu", b->n_rows + b->n_rejects);
    snprintf(acc, sizeof acc, "%zu", res->accepted);
    snprintf(dup, sizeof dup, "%zu", res->duplicates);
    snprintf(rej, sizeof rej, "%zu", res->rejected);
    snprintf(cfl, sizeof cfl, "%zu", res->conflicts);
    const char *params[7] = {b->group_id, b->rater_id ? b->rater_id : "", msgs, acc, dup, rej, cfl};
    return exec_count(w,
                      "INSERT INTO gm.batches (group_id, rater, messages, accepted, duplicates,"
                      " rejected, conflicts) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                      7, params, NULL, "recording the batch", err, err_len);
}

/* Step 6c (replay mode): marks the rejects this batch rates again, once (L4: a message is
 * accounted for by one of ledger, duplicate, conflict or reject; a replayed reject points at
 * the row that accounts for it now). */
static int mark_replayed(gm_ledger_writer *w, const gm_ledger_batch *b, char *err, size_t err_len)
{
    if (b->n_rows == 0)
        return 0;
    sbuf parts = {0}, offs = {0}, outcome = {0}, r_topic = {0}, r_part = {0}, r_off = {0};
    const char *sep = "";
    sb_ch(&parts, '{');
    sb_ch(&offs, '{');
    sb_ch(&outcome, '{');
    sb_ch(&r_topic, '{');
    sb_ch(&r_part, '{');
    sb_ch(&r_off, '{');
    for (size_t i = 0; i < b->n_rows; i++) {
        const gm_ledger_row *row = &b->rows[i];
        const conflict_info *cf = w->dup[i] == ROW_DUP ? &w->cf[i] : NULL;
        sb_str(&parts, sep);
        sb_i64(&parts, row->partition);
        sb_str(&offs, sep);
        sb_i64(&offs, row->offset);
        sb_str(&outcome, sep);
        sb_str(&outcome, w->dup[i] == ROW_NEW ? "rated" : cf ? "duplicate" : "conflict");
        /* rated: its own ledger row; conflict: its own audit.conflicting_events row */
        sb_str(&r_topic, sep);
        sb_ch(&r_topic, '"');
        sb_str(&r_topic, cf ? cf->accepted_topic : b->topic); /* topic names: [a-zA-Z0-9._-] */
        sb_ch(&r_topic, '"');
        sb_str(&r_part, sep);
        sb_i64(&r_part, cf ? cf->accepted_partition : row->partition);
        sb_str(&r_off, sep);
        sb_i64(&r_off, cf ? cf->accepted_offset : row->offset);
        sep = ",";
    }
    sb_ch(&parts, '}');
    sb_ch(&offs, '}');
    sb_ch(&outcome, '}');
    sb_ch(&r_topic, '}');
    sb_ch(&r_part, '}');
    sb_ch(&r_off, '}');
    const char *params[7] = {b->topic, parts.p, offs.p, outcome.p, r_topic.p, r_part.p, r_off.p};
    long n = 0;
    int rc = exec_count(
        w,
        "UPDATE gm.rejected_events r SET replayed_at = gm.now(), replay_outcome = u.outcome,"
        " replayed_kafka_topic = u.r_topic, replayed_kafka_partition = u.r_part,"
        " replayed_kafka_offset = u.r_off"
        " FROM unnest($2::integer[], $3::bigint[], $4::text[], $5::text[], $6::integer[],"
        "  $7::bigint[]) AS u(part, off, outcome, r_topic, r_part, r_off)"
        " WHERE r.kafka_topic = $1 AND r.kafka_partition = u.part AND r.kafka_offset = u.off"
        " AND r.replayed_at IS NULL",
        7, params, &n, "marking the replayed rejects", err, err_len);
    free(parts.p);
    free(offs.p);
    free(outcome.p);
    free(r_topic.p);
    free(r_part.p);
    free(r_off.p);
    if (rc == 0 && n != (long)b->n_rows)
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "gm.rejected_events: %ld of %zu rejects were replayed meanwhile (another "
                     "replay): batch rolled back",
                     (long)b->n_rows - n, b->n_rows);
    return rc;
}

static int commit_once(gm_ledger_writer *w, const gm_ledger_batch *b, bool slow,
                       gm_ledger_result *res, char *err, size_t err_len)
{
    memset(res, 0, sizeof *res);
    res->slow_path = slow;
    gm_chain_forget(w->chain); /* digests: prepared during this attempt's COPY, or at the end */
    w->chain_prep = NULL;
    int rc = ensure_temp_tables(w, err, err_len);
    if (rc)
        return rc;
    if (w->rid_cap < b->n_rows) {
        free(w->rid);
        w->rid_cap = b->n_rows;
        w->rid = gm_xmalloc(w->rid_cap * sizeof *w->rid);
    }
    /* Step 0, before the transaction: the ids of new names, partitions and pricings. */
    int64_t t_ids = gm_mono_us();
    if ((rc = ledger__ids_resolve(w->ids, w->conn, b->topic, b->rows, b->n_rows, w->rid, err,
                                  err_len)))
        return rc;
    t_ids = gm_mono_us() - t_ids;
    /* BEGIN, and the transaction's gm.now() in the same round trip: every row's ingested_at
     * is that instant (what the column's default would give), sent in the COPY rather than
     * computed by PostgreSQL once per row (about 0.6 us a row). */
    int64_t now_us = 0;
    {
        PGresult *r =
            PQexec(w->conn, "BEGIN; SELECT (extract(epoch FROM gm.now()) * 1000000)::int8");
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            rc = gm_pg_fail(w->conn, r, "BEGIN", err, err_len);
            PQclear(r);
            if (PQstatus(w->conn) == CONNECTION_OK)
                PQclear(PQexec(w->conn, "ROLLBACK"));
            return rc;
        }
        now_us = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (w->dup_cap < b->n_rows) {
        free(w->dup);
        w->dup_cap = b->n_rows;
        w->dup = gm_xmalloc(w->dup_cap);
    }
    for (size_t i = 0; i < w->src_cap; i++)
        w->src[i].touched = false;
    size_t dups = 0;
    size_t charge_rows = 0;
    int64_t t[8];
    t[0] = gm_mono_us();
    if ((rc = load_sources(w, b, err, err_len)))
        goto fail;
    dups = dedupe(w, b);
    if (dups) {
        size_t *idx = gm_xmalloc(dups * sizeof *idx), n_idx = 0;
        for (size_t i = 0; i < b->n_rows; i++)
            if (w->dup[i] == ROW_DUP)
                idx[n_idx++] = i;
        rc = classify(w, b, idx, n_idx, err, err_len);
        free(idx);
        if (rc)
            goto fail;
    }
    t[1] = gm_mono_us();
    if ((rc = write_ledger(w, b, slow, now_us, &dups, err, err_len)))
        goto fail;
    size_t conflicts = 0;
    for (size_t i = 0; i < b->n_rows; i++) {
        if (w->dup[i] == ROW_DUP)
            source_find(w, b->rows[i].ev->source, b->rows[i].ev->epoch)->n_dups++;
        else if (w->dup[i] == ROW_CONFLICT)
            conflicts++;
    }
    t[2] = gm_mono_us();
    if ((rc = write_charges(w, b, &charge_rows, err, err_len)))
        goto fail;
    t[3] = gm_mono_us();
    if ((rc = write_sources(w, err, err_len)))
        goto fail;
    t[4] = gm_mono_us();
    if ((rc = write_rejects(w, b, err, err_len)))
        goto fail;
    if (conflicts && (rc = write_conflicts(w, b, err, err_len)))
        goto fail;
    if (w->replay && (rc = mark_replayed(w, b, err, err_len)))
        goto fail;
    if (w->replay && (rc = gm_chain_record_replay(w->chain, w->conn, b, w->dup, err, err_len)))
        goto fail; /* the replay's entry in the chain "replay" (after its marks) */
    if ((rc = write_offsets(w, b, err, err_len)))
        goto fail;
    if ((rc = gm_chain_record_batch(w->chain, w->conn, b, w->dup, err, err_len)))
        goto fail; /* the batch's digest, chained per partition (after the offsets' lock) */
    t[5] = gm_mono_us();
    gm_debug("ledger",
             "msg=\"batch steps\" rows=%zu ids_us=%lld sources_us=%lld ledger_us=%lld "
             "charges_us=%lld seqs_us=%lld rest_us=%lld",
             b->n_rows, (long long)t_ids, (long long)(t[1] - t[0]), (long long)(t[2] - t[1]),
             (long long)(t[3] - t[2]), (long long)(t[4] - t[3]), (long long)(t[5] - t[4]));
    res->accepted = b->n_rows - dups;
    res->duplicates = dups - conflicts;
    res->conflicts = conflicts;
    res->rejected = b->n_rejects;
    res->charge_rows = charge_rows;
    if (!w->replay && (rc = write_batch_record(w, b, res, err, err_len)))
        goto fail;
    if (w->dry_run) {
        /* what would happen is in res; nothing stays */
        PQclear(PQexec(w->conn, "ROLLBACK"));
        gm_ledger_writer_reset(w);
        return 0;
    }
    {
        PGresult *r = PQexec(w->conn, "COMMIT");
        if (PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
            /* COMMIT of an aborted transaction answers ROLLBACK: nothing was written. */
            PQclear(r);
            gm_ledger_writer_reset(w);
            return gm_fail(err, err_len, GM_EDB, "COMMIT: the transaction had failed, rolled back");
        }
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            /* A COMMIT that fails on a live connection rolled back; one whose connection
             * broke may or may not have committed: GM_EUNKNOWN. */
            rc = gm_pg_fail(w->conn, r, "COMMIT", err, err_len);
            PQclear(r);
            gm_ledger_writer_reset(w);
            return rc;
        }
        PQclear(r);
    }
    /* Committed: the cache now mirrors PostgreSQL. */
    for (size_t i = 0; i < w->n_touched; i++) {
        source_state *s = w->touched[i];
        gm_seqset_format(&s->seqs, &w->fmt, &w->fmt_cap);
        free(s->db_text);
        s->db_text = gm_xstrdup(w->fmt);
        s->touched = false;
    }
    return 0;
fail:
    if (PQstatus(w->conn) == CONNECTION_OK)
        PQclear(PQexec(w->conn, "ROLLBACK"));
    /* Seq ranges were changed in memory: forget them, they reload from PostgreSQL. */
    gm_ledger_writer_reset(w);
    return rc;
}

int gm_ledger_writer_commit(gm_ledger_writer *w, const gm_ledger_batch *b, gm_ledger_result *res,
                            char *err, size_t err_len)
{
    int rc = commit_once(w, b, false, res, err, err_len);
    if (rc == GM_EDB && strstr(err, "SQLSTATE 23505") && strstr(err, "ledger")) {
        /* The unique key caught what seq ranges did not (an id reused with another seq, or
         * lost source state): write the batch again, skipping rows already in the ledger. */
        gm_warn("ledger",
                "msg=\"unique key caught a duplicate, batch goes the slow path\" "
                "detail=\"%s\"",
                err);
        rc = commit_once(w, b, true, res, err, err_len);
    }
    return rc;
}

int gm_ledger_read_offsets(PGconn *c, const char *group_id, const char *topic,
                           const int32_t *partitions, size_t n, int64_t *next_out, char *err,
                           size_t err_len)
{
    for (size_t i = 0; i < n; i++)
        next_out[i] = -1;
    const char *params[2] = {group_id, topic};
    PGresult *r = PQexecParams(c,
                               "SELECT partition, next_offset FROM gm.consumer_offsets"
                               " WHERE group_id = $1 AND topic = $2",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "reading gm.consumer_offsets", err, err_len);
        PQclear(r);
        return rc;
    }
    for (int k = 0; k < PQntuples(r); k++) {
        int32_t part = (int32_t)atol(PQgetvalue(r, k, 0));
        for (size_t i = 0; i < n; i++)
            if (partitions[i] == part)
                next_out[i] = atoll(PQgetvalue(r, k, 1));
    }
    PQclear(r);
    return 0;
}
