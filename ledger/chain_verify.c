/* Tamper evidence, checking side: `gridmeter audit verify` recomputes every chained digest
 * from the rows PostgreSQL holds and checks links, offsets, state tables and anchors.
 *
 * DESIGN. One snapshot (REPEATABLE READ, read only). The chained batches are loaded, checked
 * link by link per (group, topic, partition), then sorted by (topic, partition, from_offset)
 * and merged with ONE ordered scan of the ledger (a cursor, in chunks): each row's canonical
 * record goes into the SHA-256 of the batch whose offset range holds it. A batch is closed
 * when the scan passes it: its rejected messages and its charge changes follow, and the
 * digest is compared with the stored one; when they differ, the batch's stored counts and
 * totals are compared with the rows found, to say what differs. Documents are rebuilt as
 * canonical JSON from their rows, here in C, independently of gm.chain_doc_json.
 */
#include "chain_int.h"

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct vbatch {
    const char *group, *topic; /* into the result */
    int32_t part;
    int64_t seq, from, next, rows, rejects, dups, conflicts;
    gm_i128 qty[CHAIN_DIMS], amt[CHAIN_DIMS];
    const char *charges, *prev, *digest;
    /* found in the rows */
    int64_t rows_found, rejects_found, conflicts_found, last_offset;
    bool offset_repeats;
    gm_i128 fqty[CHAIN_DIMS], famt[CHAIN_DIMS];
    EVP_MD_CTX *ctx;
} vbatch;

typedef struct verifier {
    PGconn *c;
    const gm_chain_verify_opts *o;
    gm_chain_report *rep;
    bool ranged;
    vbatch *b;
    size_t n;
    size_t *ord;
    PGresult *rj; /* rejected messages, ordered */
    int rj_n, rj_at;
    PGresult *cx; /* conflicting messages (not from a replay), ordered */
    int cx_n, cx_at;
    chain__buf rec;
    size_t at; /* the scan's position in ord */
    int64_t t0, last_progress, total_rows;
    int64_t replayed_rows; /* ledger rows the scan left to verify_replays */
} verifier;

static const char *const sum_names[8] = {"input_tokens",  "cached_tokens", "output_tokens",
                                         "gpu_us",        "amount_input",  "amount_cached",
                                         "amount_output", "amount_gpu"};

GM_PRINTF(2, 3) static void problem(verifier *v, const char *fmt, ...)
{
    v->rep->problems++;
    if (v->rep->first[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->rep->first, sizeof v->rep->first, fmt, ap);
    va_end(ap);
}

static PGresult *query(verifier *v, const char *sql, int n, const char *const *p, char *err,
                       size_t err_len, int *rc)
{
    PGresult *r = PQexecParams(v->c, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        *rc = gm_pg_fail(v->c, r, "audit verify", err, err_len);
        PQclear(r);
        return NULL;
    }
    return r;
}

static void time_bounds(const gm_chain_verify_opts *o, char *from, char *to)
{
    gm_time_format(o->from_us ? o->from_us : INT64_C(-62135596800000000), from, 40);
    gm_time_format(o->to_us ? o->to_us : INT64_C(253402300799000000), to, 40);
}

static int parse_dec(const char *s, int scale, gm_i128 *out)
{
    return gm_dec_parse(s, strlen(s), scale, out, NULL, 0);
}

static void progress(verifier *v, bool force)
{
    if (!v->o->progress)
        return;
    int64_t now = gm_mono_us();
    if (!force && now - v->last_progress < 500000)
        return;
    v->last_progress = now;
    v->o->progress(v->o->arg, v->rep->rows, v->total_rows, (double)(now - v->t0) / 1e6);
}

/* ---- Batches --------------------------------------------------------------------------------*/
static int bcmp_key(const vbatch *a, const char *topic, int32_t part)
{
    int c = strcmp(a->topic, topic);
    if (c)
        return c;
    return (a->part > part) - (a->part < part);
}

static const vbatch *sort_base;
static int ord_cmp(const void *x, const void *y)
{
    const vbatch *a = &sort_base[*(const size_t *)x], *b = &sort_base[*(const size_t *)y];
    int c = bcmp_key(a, b->topic, b->part);
    if (c)
        return c;
    return (a->from > b->from) - (a->from < b->from);
}

static void open_batch(verifier *v, vbatch *b)
{
    (void)v;
    if (b->ctx)
        return;
    b->ctx = EVP_MD_CTX_new(); /* the records' digest; the header comes at close_batch */
    if (!b->ctx || !EVP_DigestInit_ex(b->ctx, EVP_sha256(), NULL))
        abort();
    b->last_offset = -1;
}

static void describe(verifier *v, const vbatch *b, const char *what)
{
    char diff[2048] = "";
    size_t w = 0;
    if (b->rows != b->rows_found)
        w += (size_t)snprintf(diff + w, sizeof diff - w, "; rows: recorded %lld, found %lld",
                              (long long)b->rows, (long long)b->rows_found);
    if (b->conflicts != b->conflicts_found && w < sizeof diff)
        w += (size_t)snprintf(diff + w, sizeof diff - w, "; conflicts: recorded %lld, found %lld",
                              (long long)b->conflicts, (long long)b->conflicts_found);
    if (b->rejects != b->rejects_found && w < sizeof diff)
        w += (size_t)snprintf(diff + w, sizeof diff - w, "; rejects: recorded %lld, found %lld",
                              (long long)b->rejects, (long long)b->rejects_found);
    for (int d = 0; d < 8 && w < sizeof diff; d++) {
        gm_i128 rec = d < 4 ? b->qty[d] : b->amt[d - 4], got = d < 4 ? b->fqty[d] : b->famt[d - 4];
        if (rec != got) {
            char a[64], c[64];
            chain__dec_text(rec, d < 4 ? 0 : 18, a, sizeof a);
            chain__dec_text(got, d < 4 ? 0 : 18, c, sizeof c);
            w += (size_t)snprintf(diff + w, sizeof diff - w, "; %s: recorded %s, found %s",
                                  sum_names[d], a, c);
        }
    }
    if (b->offset_repeats && w < sizeof diff)
        w += (size_t)snprintf(diff + w, sizeof diff - w, "; an offset holds two rows");
    if (!w)
        snprintf(diff, sizeof diff,
                 "; counts and totals agree: a field other than the quantities and amounts "
                 "changed (tenant, time, ids, prices, flags, a reject's payload or reason, a "
                 "charge change) or rows swapped offsets");
    problem(v, "batch %s/%s/%d #%lld (offsets %lld..%lld): %s%s", b->group, b->topic, b->part,
            (long long)b->seq, (long long)b->from, (long long)b->next - 1, what, diff);
}

static void add_reject_records(verifier *v, vbatch *b)
{
    while (v->rj_at < v->rj_n) {
        const char *t = PQgetvalue(v->rj, v->rj_at, 0);
        int32_t p = (int32_t)atol(PQgetvalue(v->rj, v->rj_at, 1));
        int64_t off = atoll(PQgetvalue(v->rj, v->rj_at, 2));
        int c = bcmp_key(b, t, p);
        if (c < 0 || (c == 0 && off >= b->next))
            return; /* belongs to a later batch */
        if (c > 0 || off < b->from) {
            if (!v->ranged)
                problem(v, "rejected message %s/%d@%lld is in no chained batch", t, p,
                        (long long)off);
            v->rj_at++;
            continue;
        }
        v->rec.n = 0;
        chain__put(&v->rec, "R", 1);
        chain__fs(&v->rec, PQgetvalue(v->rj, v->rj_at, 2));
        chain__fs(&v->rec, PQgetisnull(v->rj, v->rj_at, 3) ? NULL : PQgetvalue(v->rj, v->rj_at, 3));
        chain__fs(&v->rec, PQgetvalue(v->rj, v->rj_at, 4));
        chain__fs(&v->rec, PQgetvalue(v->rj, v->rj_at, 5));
        chain__put(&v->rec, "\n", 1);
        EVP_DigestUpdate(b->ctx, v->rec.p, v->rec.n);
        b->rejects_found++;
        v->rep->rejects++;
        v->rj_at++;
    }
}

/* The C records of a stored charges array into ctx; true when it is not an array of arrays
 * of strings and nulls. */
static bool charge_records(verifier *v, EVP_MD_CTX *ctx, const char *charges)
{
    cJSON *arr = cJSON_Parse(charges);
    bool bad = !cJSON_IsArray(arr);
    cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        v->rec.n = 0;
        chain__put(&v->rec, "C", 1);
        cJSON *f;
        cJSON_ArrayForEach(f, e)
        {
            if (cJSON_IsNull(f))
                chain__put(&v->rec, "-", 1);
            else if (cJSON_IsString(f))
                chain__fs(&v->rec, f->valuestring);
            else
                bad = true;
        }
        chain__put(&v->rec, "\n", 1);
        EVP_DigestUpdate(ctx, v->rec.p, v->rec.n);
    }
    cJSON_Delete(arr);
    return bad;
}

/* The batch's conflicting messages, records "X" (cx: topic, partition, offset, key, payload,
 * fingerprint, kind). */
static void add_conflict_records(verifier *v, vbatch *b)
{
    while (v->cx_at < v->cx_n) {
        const char *t = PQgetvalue(v->cx, v->cx_at, 0);
        int32_t p = (int32_t)atol(PQgetvalue(v->cx, v->cx_at, 1));
        int64_t off = atoll(PQgetvalue(v->cx, v->cx_at, 2));
        int c = bcmp_key(b, t, p);
        if (c < 0 || (c == 0 && off >= b->next))
            return;
        if (c > 0 || off < b->from) {
            if (!v->ranged)
                problem(v, "conflicting message %s/%d@%lld is in no chained batch", t, p,
                        (long long)off);
            v->cx_at++;
            continue;
        }
        v->rec.n = 0;
        chain__put(&v->rec, "X", 1);
        for (int k = 2; k <= 6; k++)
            chain__fs(&v->rec,
                      PQgetisnull(v->cx, v->cx_at, k) ? NULL : PQgetvalue(v->cx, v->cx_at, k));
        chain__put(&v->rec, "\n", 1);
        EVP_DigestUpdate(b->ctx, v->rec.p, v->rec.n);
        b->conflicts_found++;
        v->cx_at++;
    }
}

static void close_batch(verifier *v, vbatch *b)
{
    open_batch(v, b);
    add_reject_records(v, b);
    add_conflict_records(v, b);
    bool bad = charge_records(v, b->ctx, b->charges);
    unsigned char md[32];
    char hex[65], records_hex[65];
    EVP_DigestFinal_ex(b->ctx, md, NULL);
    EVP_MD_CTX_free(b->ctx);
    b->ctx = NULL;
    chain__hex(md, records_hex);
    chain__head h = {b->group,   b->topic, b->part,      b->seq, b->from, b->next, b->rows,
                     b->rejects, b->dups,  b->conflicts, {0},    {0},     b->prev, records_hex};
    memcpy(h.qty, b->qty, sizeof h.qty);
    memcpy(h.amount_e18, b->amt, sizeof h.amount_e18);
    v->rec.n = 0;
    chain__header(&v->rec, &h);
    if (!EVP_Digest(v->rec.p, v->rec.n, md, NULL, EVP_sha256(), NULL))
        abort();
    chain__hex(md, hex);
    v->rep->batches++;
    if (bad)
        describe(v, b, "its charge changes are not an array of string arrays");
    else if (strcmp(hex, b->digest)) {
        char what[200];
        snprintf(what, sizeof what, "digest recorded %.16s…, recomputed %.16s…", b->digest, hex);
        describe(v, b, what);
    }
}

/* The L record of a ledger row: columns base+2 .. base+23 of r as in ROW_SQL; adds its
 * quantities and amounts to fqty[0..4) and famt[0..4) (input, cached, output, gpu). */
static void l_record(chain__buf *q, const PGresult *r, int i, int base, int ext, gm_i128 *fqty,
                     gm_i128 *famt)
{
    chain__put(q, "L", 1);
    for (int k = 2; k <= 23; k++) {
        if (PQgetisnull(r, i, base + k)) {
            chain__put(q, "-", 1);
            continue;
        }
        const char *s = PQgetvalue(r, i, base + k);
        if (k >= 19 && k <= 22) { /* amounts: canonical decimal */
            char t[96];
            size_t n = (size_t)snprintf(t, sizeof t, "%s", s);
            n = chain__trim_dec(t, n);
            chain__f(q, t, n);
            gm_i128 a = 0;
            if (parse_dec(s, 18, &a) == 0)
                famt[k - 19] += a;
        } else {
            chain__f(q, s, (size_t)PQgetlength(r, i, base + k));
            if (k >= 11 && k <= 14)
                fqty[k - 11] += atoll(s);
        }
    }
    /* usage revision 1.1: reasoning_tokens, cache_write_tokens, service_tier (columns ext..) */
    for (int k = ext; k < ext + 3; k++) {
        if (PQgetisnull(r, i, k))
            chain__put(q, "-", 1);
        else
            chain__f(q, PQgetvalue(r, i, k), (size_t)PQgetlength(r, i, k));
    }
    /* revision 1.2: the epoch (column ext + 3), a field only when it is not 0 (sql/0015) */
    if (!PQgetisnull(r, i, ext + 3) && strcmp(PQgetvalue(r, i, ext + 3), "0"))
        chain__f(q, PQgetvalue(r, i, ext + 3), (size_t)PQgetlength(r, i, ext + 3));
    chain__put(q, "\n", 1);
}

/* One ledger row of the scan (columns of ROW_SQL). */
static void add_row(verifier *v, const PGresult *r, int i)
{
    const char *topic = PQgetvalue(r, i, 0);
    int32_t part = (int32_t)atol(PQgetvalue(r, i, 1));
    int64_t off = atoll(PQgetvalue(r, i, 2));
    if (!strcmp(PQgetvalue(r, i, 24), "t")) {
        /* written by a replay at its reject's coordinates: verify_replays covers it, through
         * the replay entry that lists the reject (its mark is in the state check) */
        v->rep->rows++;
        v->replayed_rows++;
        return;
    }
    while (v->at < v->n) {
        vbatch *b = &v->b[v->ord[v->at]];
        int c = bcmp_key(b, topic, part);
        if (c < 0 || (c == 0 && b->next <= off)) {
            close_batch(v, b);
            v->at++;
            continue;
        }
        break;
    }
    v->rep->rows++;
    vbatch *b = v->at < v->n ? &v->b[v->ord[v->at]] : NULL;
    if (!b || bcmp_key(b, topic, part) != 0 || off < b->from) {
        if (!v->ranged)
            problem(v, "ledger row %s/%d@%lld (%s#%s) is in no chained batch", topic, part,
                    (long long)off, PQgetvalue(r, i, 5), PQgetvalue(r, i, 6));
        return;
    }
    open_batch(v, b);
    if (off == b->last_offset)
        b->offset_repeats = true;
    b->last_offset = off;
    v->rec.n = 0;
    l_record(&v->rec, r, i, 0, 25, b->fqty, b->famt);
    EVP_DigestUpdate(b->ctx, v->rec.p, v->rec.n);
    b->rows_found++;
}

#define L_COLS                                                                                     \
    "l.kafka_topic, l.kafka_partition, l.kafka_offset, l.tenant,"                                  \
    " (extract(epoch FROM l.event_time) * 1000000)::bigint, l.source, l.event_id, l.seq, l.site,"  \
    " l.model, l.request_id, l.input_tokens, l.cached_tokens, l.output_tokens, l.gpu_us,"          \
    " l.site_tier, l.card_id, l.card_version, l.currency, l.amount_input::text,"                   \
    " l.amount_cached::text, l.amount_output::text, l.amount_gpu::text, l.flags"
/* Column 24: the row was written by a replay (its reject is marked rated at its coordinates). */
#define ROW_SQL                                                                                    \
    "SELECT " L_COLS ", EXISTS (SELECT 1 FROM gm.rejected_events r"                                \
    " WHERE r.kafka_topic = l.kafka_topic AND r.kafka_partition = l.kafka_partition"               \
    " AND r.kafka_offset = l.kafka_offset AND r.replay_outcome = 'rated'"                          \
    " AND r.replayed_kafka_topic = l.kafka_topic AND r.replayed_kafka_partition ="                 \
    " l.kafka_partition AND r.replayed_kafka_offset = l.kafka_offset),"                            \
    " l.reasoning_tokens, l.cache_write_tokens, l.service_tier, l.epoch FROM gm.ledger l"

static int verify_batches(verifier *v, char *err, size_t err_len)
{
    char from[40], to[40];
    time_bounds(v->o, from, to);
    const char *p[2] = {from, to};
    int rc = 0;
    PGresult *r = query(
        v,
        "SELECT group_id, topic, partition, seq, from_offset, next_offset, rows, rejects,"
        " duplicates, input_tokens::text, cached_tokens::text, output_tokens::text, gpu_us::text,"
        " amount_input::text, amount_cached::text, amount_output::text, amount_gpu::text,"
        " charges::text, encode(prev_digest, 'hex'), encode(digest, 'hex'), conflicts"
        " FROM gm.chain_batches WHERE committed_at >= $1 AND committed_at < $2"
        " ORDER BY group_id, topic, partition, seq",
        2, p, err, err_len, &rc);
    if (!r)
        return rc;
    v->n = (size_t)PQntuples(r);
    v->b = gm_xcalloc(v->n ? v->n : 1, sizeof *v->b);
    v->ord = gm_xcalloc(v->n ? v->n : 1, sizeof *v->ord);
    for (size_t i = 0; i < v->n; i++) {
        vbatch *b = &v->b[i];
        int k = (int)i;
        b->group = PQgetvalue(r, k, 0);
        b->topic = PQgetvalue(r, k, 1);
        b->part = (int32_t)atol(PQgetvalue(r, k, 2));
        b->seq = atoll(PQgetvalue(r, k, 3));
        b->from = atoll(PQgetvalue(r, k, 4));
        b->next = atoll(PQgetvalue(r, k, 5));
        b->rows = atoll(PQgetvalue(r, k, 6));
        b->rejects = atoll(PQgetvalue(r, k, 7));
        b->dups = atoll(PQgetvalue(r, k, 8));
        b->conflicts = atoll(PQgetvalue(r, k, 20));
        for (int d = 0; d < 4; d++) {
            if (parse_dec(PQgetvalue(r, k, 9 + d), 0, &b->qty[d]) ||
                parse_dec(PQgetvalue(r, k, 13 + d), 18, &b->amt[d]))
                problem(v, "batch %s/%s/%d #%lld: unreadable total %s", b->group, b->topic, b->part,
                        (long long)b->seq, PQgetvalue(r, k, 9 + d));
        }
        b->charges = PQgetvalue(r, k, 17);
        b->prev = PQgetvalue(r, k, 18);
        b->digest = PQgetvalue(r, k, 19);
        v->ord[i] = i;
        v->total_rows += b->rows;
        /* links */
        const vbatch *a = i ? &v->b[i - 1] : NULL;
        bool same =
            a && !strcmp(a->group, b->group) && !strcmp(a->topic, b->topic) && a->part == b->part;
        if (same) {
            if (b->seq != a->seq + 1)
                problem(v, "batch chain %s/%s/%d: #%lld follows #%lld (batches missing)", b->group,
                        b->topic, b->part, (long long)b->seq, (long long)a->seq);
            else if (strcmp(b->prev, a->digest))
                problem(v, "batch %s/%s/%d #%lld: prev_digest is not the digest of #%lld", b->group,
                        b->topic, b->part, (long long)b->seq, (long long)a->seq);
            else if (b->from != a->next)
                problem(v, "batch %s/%s/%d #%lld: starts at offset %lld, #%lld ended before %lld",
                        b->group, b->topic, b->part, (long long)b->seq, (long long)b->from,
                        (long long)a->seq, (long long)a->next);
        } else {
            v->rep->chains++;
            if (!v->ranged && b->seq != 1)
                problem(v, "batch chain %s/%s/%d starts at #%lld, not #1 (batches missing)",
                        b->group, b->topic, b->part, (long long)b->seq);
            else if (!v->ranged && strspn(b->prev, "0") != 64)
                problem(v,
                        "batch chain %s/%s/%d: #1 names a previous digest (batches before it "
                        "are missing, or batches were reordered)",
                        b->group, b->topic, b->part);
        }
    }
    sort_base = v->b;
    qsort(v->ord, v->n, sizeof *v->ord, ord_cmp);
    for (size_t i = 1; i < v->n; i++) {
        const vbatch *a = &v->b[v->ord[i - 1]], *b = &v->b[v->ord[i]];
        if (!bcmp_key(a, b->topic, b->part) && b->from < a->next)
            problem(v, "batches %s/%s/%d #%lld and %s/%s/%d #%lld overlap in offsets", a->group,
                    a->topic, a->part, (long long)a->seq, b->group, b->topic, b->part,
                    (long long)b->seq);
    }
    /* The scan: everything, or only the ranges of the selected batches. */
    chain__buf sql = {0};
    chain__put(&sql, ROW_SQL, strlen(ROW_SQL));
    chain__buf rsql = {0};
    /* (rejects of the GPU topics are not in batch chains yet: gm.gpu_topics, docs/auditors.md) */
    const char *RJ = "SELECT * FROM (SELECT kafka_topic, kafka_partition, kafka_offset,"
                     " encode(kafka_key, 'hex'), encode(payload, 'hex'), reason FROM"
                     " gm.rejected_events WHERE kafka_topic NOT IN (SELECT topic FROM"
                     " gm.gpu_topics)) AS x(kafka_topic, kafka_partition, kafka_offset, k, p,"
                     " reason)";
    chain__put(&rsql, RJ, strlen(RJ));
    /* conflicting messages, less those a replay kept (its entry covers their marks) */
    chain__buf csql = {0};
    const char *CX =
        "SELECT * FROM (SELECT c.kafka_topic, c.kafka_partition, c.kafka_offset,"
        " encode(c.kafka_key, 'hex'), encode(c.payload, 'hex'), encode(c.fingerprint, 'hex'),"
        " c.kind FROM gm.conflicting_events c WHERE NOT EXISTS (SELECT 1 FROM"
        " gm.rejected_events r WHERE r.kafka_topic = c.kafka_topic AND r.kafka_partition ="
        " c.kafka_partition AND r.kafka_offset = c.kafka_offset AND r.replay_outcome ="
        " 'conflict' AND r.replayed_kafka_topic = c.kafka_topic AND r.replayed_kafka_partition"
        " = c.kafka_partition AND r.replayed_kafka_offset = c.kafka_offset))"
        " AS x(kafka_topic, kafka_partition, kafka_offset, k, p, f, kind)";
    chain__put(&csql, CX, strlen(CX));
    if (v->ranged) {
        chain__buf w = {0};
        chain__put(&w, " WHERE false", 12);
        for (size_t i = 0; i < v->n;) {
            const vbatch *a = &v->b[v->ord[i]];
            int64_t lo = a->from, hi = a->next;
            size_t j = i + 1;
            while (j < v->n && !bcmp_key(&v->b[v->ord[j]], a->topic, a->part))
                hi = v->b[v->ord[j++]].next;
            char *lit = PQescapeLiteral(v->c, a->topic, strlen(a->topic));
            char t[256];
            int n = snprintf(t, sizeof t,
                             " OR (kafka_topic = %.160s AND kafka_partition = %d AND"
                             " kafka_offset >= %lld AND kafka_offset < %lld)",
                             lit ? lit : "''", a->part, (long long)lo, (long long)hi);
            PQfreemem(lit);
            chain__put(&w, t, (size_t)n);
            i = j;
        }
        chain__put(&sql, w.p, w.n);
        chain__put(&rsql, w.p, w.n);
        chain__put(&csql, w.p, w.n);
        free(w.p);
    }
    chain__put(&sql, " ORDER BY 1, 2, 3", 17);
    chain__put(&rsql, " ORDER BY 1, 2, 3", 17);
    chain__put(&csql, " ORDER BY 1, 2, 3", 17);
    v->rj = query(v, rsql.p, 0, NULL, err, err_len, &rc);
    free(rsql.p);
    if (v->rj)
        v->cx = query(v, csql.p, 0, NULL, err, err_len, &rc);
    free(csql.p);
    if (!v->rj || !v->cx) {
        PQclear(v->rj);
        v->rj = NULL;
        free(sql.p);
        PQclear(r);
        return rc;
    }
    v->rj_n = PQntuples(v->rj);
    v->cx_n = PQntuples(v->cx);
    chain__buf decl = {0};
    chain__put(&decl, "DECLARE gm_verify NO SCROLL CURSOR FOR ", 39);
    chain__put(&decl, sql.p, sql.n);
    free(sql.p);
    PGresult *d = query(v, decl.p, 0, NULL, err, err_len, &rc);
    free(decl.p);
    if (!d) {
        PQclear(r);
        return rc;
    }
    PQclear(d);
    v->at = 0;
    for (;;) {
        PGresult *f = query(v, "FETCH 20000 FROM gm_verify", 0, NULL, err, err_len, &rc);
        if (!f)
            break;
        int n = PQntuples(f);
        for (int i = 0; i < n; i++)
            add_row(v, f, i);
        PQclear(f);
        progress(v, false);
        if (n == 0)
            break;
    }
    if (rc == 0) {
        for (size_t i = v->at; i < v->n; i++)
            close_batch(v, &v->b[v->ord[i]]);
        if (!v->ranged)
            for (; v->rj_at < v->rj_n; v->rj_at++)
                problem(v, "rejected message %s/%s@%s is in no chained batch",
                        PQgetvalue(v->rj, v->rj_at, 0), PQgetvalue(v->rj, v->rj_at, 1),
                        PQgetvalue(v->rj, v->rj_at, 2));
        if (!v->ranged)
            for (; v->cx_at < v->cx_n; v->cx_at++)
                problem(v, "conflicting message %s/%s@%s is in no chained batch",
                        PQgetvalue(v->cx, v->cx_at, 0), PQgetvalue(v->cx, v->cx_at, 1),
                        PQgetvalue(v->cx, v->cx_at, 2));
    }
    for (size_t i = 0; i < v->n; i++)
        EVP_MD_CTX_free(v->b[i].ctx);
    PQclear(v->rj);
    v->rj = NULL;
    PQclear(v->cx);
    v->cx = NULL;
    free(v->b);
    free(v->ord);
    v->b = NULL;
    PQclear(r);
    return rc;
}

/* ---- Replays --------------------------------------------------------------------------------*/
/* Every entry of the chain "replay": its link, and its digest recomputed from the marks of the
 * rejects it lists and the ledger rows those marks say were rated (docs/auditors.md, "Replay
 * digest"). That every replay mark is listed by exactly one entry is in the state check. */
static int verify_replays(verifier *v, char *err, size_t err_len)
{
    char from[40], to[40];
    time_bounds(v->o, from, to);
    const char *p[2] = {from, to};
    int rc = 0;
    PGresult *r = query(v,
                        "SELECT seq, topic, partitions::text, offsets::text, rows, duplicates,"
                        " conflicts, charges::text, encode(prev_digest, 'hex'),"
                        " encode(digest, 'hex') FROM gm.chain_replays"
                        " WHERE committed_at >= $1 AND committed_at < $2 ORDER BY seq",
                        2, p, err, err_len, &rc);
    if (!r)
        return rc;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        int64_t seq = atoll(PQgetvalue(r, i, 0));
        const char *topic = PQgetvalue(r, i, 1), *prev = PQgetvalue(r, i, 8);
        const char *dig = PQgetvalue(r, i, 9);
        int64_t rows = atoll(PQgetvalue(r, i, 4));
        if (i == 0) {
            if (!v->ranged && seq != 1)
                problem(v, "replay chain starts at #%lld, not #1 (replays missing)",
                        (long long)seq);
            else if (!v->ranged && strspn(prev, "0") != 64)
                problem(v, "replay chain: #1 names a previous digest (replays missing or "
                           "reordered)");
        } else if (seq != atoll(PQgetvalue(r, i - 1, 0)) + 1) {
            problem(v, "replay chain: #%lld follows #%s (replays missing)", (long long)seq,
                    PQgetvalue(r, i - 1, 0));
        } else if (strcmp(prev, PQgetvalue(r, i - 1, 9))) {
            problem(v, "replay #%lld: prev_digest is not the digest of #%s", (long long)seq,
                    PQgetvalue(r, i - 1, 0));
        }
        const char *mp[3] = {topic, PQgetvalue(r, i, 2), PQgetvalue(r, i, 3)};
        PGresult *m = query(v,
                            "SELECT " L_COLS ", u.part::text, u.off::text, r.replay_outcome,"
                            " r.replayed_kafka_topic, r.replayed_kafka_partition::text,"
                            " r.replayed_kafka_offset::text, x.kafka_offset::text,"
                            " encode(x.kafka_key, 'hex'), encode(x.payload, 'hex'),"
                            " encode(x.fingerprint, 'hex'), x.kind, l.reasoning_tokens,"
                            " l.cache_write_tokens, l.service_tier, l.epoch"
                            " FROM unnest($2::integer[], $3::bigint[]) WITH ORDINALITY"
                            " AS u(part, off, n) LEFT JOIN gm.rejected_events r"
                            " ON r.kafka_topic = $1 AND r.kafka_partition = u.part"
                            " AND r.kafka_offset = u.off LEFT JOIN gm.ledger l"
                            " ON r.replay_outcome = 'rated' AND l.kafka_topic = $1"
                            " AND l.kafka_partition = u.part AND l.kafka_offset = u.off"
                            " LEFT JOIN gm.conflicting_events x ON r.replay_outcome ="
                            " 'conflict' AND x.kafka_topic = $1 AND x.kafka_partition = u.part"
                            " AND x.kafka_offset = u.off ORDER BY u.n",
                            3, mp, err, err_len, &rc);
        if (!m)
            break;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
            abort();
        int64_t found = 0;
        gm_i128 fq[CHAIN_DIMS] = {0}, fa[CHAIN_DIMS] = {0};
        for (int k = 0; k < PQntuples(m); k++) {
            v->rec.n = 0;
            chain__put(&v->rec, "M", 1);
            for (int x = 24; x < 30; x++)
                chain__fs(&v->rec, PQgetisnull(m, k, x) ? NULL : PQgetvalue(m, k, x));
            chain__put(&v->rec, "\n", 1);
            if (!PQgetisnull(m, k, 26) && !strcmp(PQgetvalue(m, k, 26), "rated")) {
                if (PQgetisnull(m, k, 2))
                    problem(v, "replay #%lld: the ledger row %s/%s@%s it rated is gone",
                            (long long)seq, topic, PQgetvalue(m, k, 24), PQgetvalue(m, k, 25));
                else {
                    l_record(&v->rec, m, k, 0, 35, fq, fa);
                    found++;
                }
            } else if (!PQgetisnull(m, k, 26) && !strcmp(PQgetvalue(m, k, 26), "conflict")) {
                if (PQgetisnull(m, k, 30))
                    problem(v, "replay #%lld: the conflicting message %s/%s@%s it kept is gone",
                            (long long)seq, topic, PQgetvalue(m, k, 24), PQgetvalue(m, k, 25));
                else {
                    chain__put(&v->rec, "X", 1);
                    for (int x = 30; x < 35; x++)
                        chain__fs(&v->rec, PQgetisnull(m, k, x) ? NULL : PQgetvalue(m, k, x));
                    chain__put(&v->rec, "\n", 1);
                }
            } else if (PQgetisnull(m, k, 26)) {
                problem(v,
                        "replay #%lld: the reject %s/%s@%s it replayed has no replay mark (or "
                        "is gone)",
                        (long long)seq, topic, PQgetvalue(m, k, 24), PQgetvalue(m, k, 25));
            }
            EVP_DigestUpdate(ctx, v->rec.p, v->rec.n);
        }
        PQclear(m);
        bool bad = charge_records(v, ctx, PQgetvalue(r, i, 7));
        unsigned char md[32];
        char rec_hex[65], hex[65];
        EVP_DigestFinal_ex(ctx, md, NULL);
        EVP_MD_CTX_free(ctx);
        chain__hex(md, rec_hex);
        v->rec.n = 0;
        chain__replay_header(&v->rec, topic, seq, rows, atoll(PQgetvalue(r, i, 5)),
                             atoll(PQgetvalue(r, i, 6)), prev, rec_hex);
        if (!EVP_Digest(v->rec.p, v->rec.n, md, NULL, EVP_sha256(), NULL))
            abort();
        chain__hex(md, hex);
        v->rep->replays++;
        v->rep->replayed_rows += found;
        if (bad)
            problem(v, "replay #%lld: its charge changes are not an array of string arrays",
                    (long long)seq);
        else if (strcmp(hex, dig))
            problem(v,
                    "replay #%lld (%s, %lld rated, %lld found): digest recorded %.16s…, "
                    "recomputed %.16s…: a replayed row, a reject's replay mark or the replay's "
                    "charge changes differ from what the replay wrote",
                    (long long)seq, topic, (long long)rows, (long long)found, dig, hex);
    }
    PQclear(r);
    if (rc == 0 && !v->ranged && v->rep->replayed_rows != v->replayed_rows)
        problem(v,
                "%lld ledger rows carry a replay mark, the replay chain accounts for %lld "
                "(a replay mark added behind the rater's back?)",
                (long long)v->replayed_rows, (long long)v->rep->replayed_rows);
    return rc;
}

/* ---- Documents -------------------------------------------------------------------------------*/
#define US(c) "(extract(epoch FROM " c ") * 1000000)::bigint::text AS " c
static const struct doc_kind {
    const char *kind;
    const char *sql;   /* $1 = doc_id */
    const char *types; /* per column: s text as is, d decimal */
    const char *sub_key, *sub_sql, *sub_types;
} kinds[] = {
    {"invoice",
     "SELECT invoice_id, tenant, issuer, number, number_seq::text AS number_seq, " US(
         "period_start") ", " US("period_end") ", currency::text AS currency,"
                                               " minor_units::text AS minor_units, total::text AS"
                                               " total, total_minor::text AS total_minor,"
                                               " usage_exact::text AS usage_exact,"
                                               " credit_balance_before_minor::text AS"
                                               " credit_balance_before_minor,"
                                               " credit_balance_after_minor::text AS"
                                               " credit_balance_after_minor, ledger_events::text"
                                               " AS ledger_events, ledger_amount::text AS"
                                               " ledger_amount, " US("created_at") ", " US(
                                                   "finalized_at") " FROM gm.invoices WHERE"
                                                                   " invoice_id = $1",
     "sssssssssdddddddss", "lines",
     "SELECT line_no::text AS line_no, kind, adjusted_kind, description, dimension, model,"
     " site_tier, card_version::text AS card_version, band::text AS band, quantity::text AS"
     " quantity, unit_price::text AS unit_price, amount_exact::text AS amount_exact, amount::text"
     " AS amount, amount_minor::text AS amount_minor, discount_minor::text AS discount_minor,"
     /* ORDER BY the table's integer column, not the text alias line_no ("10" < "2"): an
      * invoice of 10 lines or more failed to verify */
     " credit_minor::text AS credit_minor, " US("corrects_period") " FROM gm.invoice_lines"
                                                                   " WHERE invoice_id = $1 ORDER"
                                                                   " BY invoice_lines.line_no",
     "sssssssssddddddds"},
    {"credit_note",
     "SELECT credit_note_id, invoice_id, tenant, number, number_seq::text AS number_seq,"
     " currency::text AS currency, amount::text AS amount, amount_minor::text AS amount_minor,"
     " reason, " US("created_at") " FROM gm.credit_notes WHERE credit_note_id = $1",
     "ssssssddss", NULL, NULL, NULL},
    {"rerating_run",
     "SELECT run_id::text AS run_id, " US("period_start") ", tenant, requested_by, reason, " US(
         "created_at") ", tenants::text AS tenants, lines_changed::text AS lines_changed,"
                       " delta_exact::text AS delta_exact, delta_minor::text AS delta_minor"
                       " FROM gm.rerating_runs WHERE run_id::text = $1",
     "ssssssssds", "corrections",
     "SELECT correction_id::text AS correction_id, tenant, " US(
         "period_start") ", invoice_id, invoice_status, kind, dimension, model, site_tier,"
                         " card_version::text AS card_version, band::text AS band,"
                         " currency::text AS currency, quantity_before::text AS quantity_before,"
                         " quantity_after::text AS quantity_after, unit_price_before::text AS"
                         " unit_price_before, unit_price_after::text AS unit_price_after,"
                         " amount_exact_before::text AS amount_exact_before,"
                         " amount_exact_after::text AS amount_exact_after,"
                         " amount_minor_before::text AS amount_minor_before,"
                         " amount_minor_after::text AS amount_minor_after"
                         " FROM gm.rerating_corrections WHERE run_id::text = $1 ORDER BY"
                         " rerating_corrections.correction_id",
     "ssssssssssssdddddddd"},
};

static void json_fields(chain__buf *q, const PGresult *r, int i, const char *types)
{
    for (int k = 0; k < PQnfields(r); k++) {
        if (k)
            chain__put(q, ",", 1);
        chain__json_str(q, PQfname(r, k));
        chain__put(q, ":", 1);
        if (PQgetisnull(r, i, k)) {
            chain__put(q, "null", 4);
            continue;
        }
        if (types[k] == 'd') {
            size_t n = (size_t)PQgetlength(r, i, k);
            char *t = gm_xmalloc(n + 1);
            memcpy(t, PQgetvalue(r, i, k), n + 1);
            chain__trim_dec(t, n);
            chain__json_str(q, t);
            free(t);
        } else {
            chain__json_str(q, PQgetvalue(r, i, k));
        }
    }
}

/* The canonical JSON of a document into q; 1 when the document is gone. */
static int doc_json(verifier *v, const char *kind, const char *id, chain__buf *q, char *err,
                    size_t err_len, int *rc)
{
    const struct doc_kind *dk = NULL;
    for (size_t i = 0; i < GM_ARRAY_LEN(kinds); i++)
        if (!strcmp(kinds[i].kind, kind))
            dk = &kinds[i];
    if (!dk)
        return 1;
    const char *p[1] = {id};
    PGresult *r = query(v, dk->sql, 1, p, err, err_len, rc);
    if (!r)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return 1;
    }
    chain__put(q, "{", 1);
    json_fields(q, r, 0, dk->types);
    PQclear(r);
    if (dk->sub_key) {
        chain__put(q, ",", 1);
        chain__json_str(q, dk->sub_key);
        chain__put(q, ":[", 2);
        PGresult *s = query(v, dk->sub_sql, 1, p, err, err_len, rc);
        if (!s)
            return -1;
        for (int i = 0; i < PQntuples(s); i++) {
            chain__put(q, i ? ",{" : "{", i ? 2 : 1);
            json_fields(q, s, i, dk->sub_types);
            chain__put(q, "}", 1);
        }
        PQclear(s);
        chain__put(q, "]", 1);
    }
    chain__put(q, "}", 1);
    return 0;
}

static int verify_documents(verifier *v, char *err, size_t err_len)
{
    char from[40], to[40];
    time_bounds(v->o, from, to);
    const char *p[2] = {from, to};
    int rc = 0;
    PGresult *r = query(v,
                        "SELECT chain, seq, kind, doc_id, coalesce(number, ''),"
                        " encode(prev_digest, 'hex'), encode(digest, 'hex') FROM gm.chain_documents"
                        " WHERE recorded_at >= $1 AND recorded_at < $2 ORDER BY chain, seq",
                        2, p, err, err_len, &rc);
    if (!r)
        return rc;
    chain__buf q = {0};
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        const char *chain = PQgetvalue(r, i, 0), *kind = PQgetvalue(r, i, 2);
        const char *id = PQgetvalue(r, i, 3), *number = PQgetvalue(r, i, 4);
        const char *prev = PQgetvalue(r, i, 5), *dig = PQgetvalue(r, i, 6);
        int64_t seq = atoll(PQgetvalue(r, i, 1));
        bool same = i && !strcmp(PQgetvalue(r, i - 1, 0), chain);
        if (same) {
            int64_t pseq = atoll(PQgetvalue(r, i - 1, 1));
            if (seq != pseq + 1)
                problem(v, "document chain %s: #%lld follows #%lld (documents missing)", chain,
                        (long long)seq, (long long)pseq);
            else if (strcmp(prev, PQgetvalue(r, i - 1, 6)))
                problem(v, "document %s #%lld (%s %s): prev_digest is not the digest of #%lld",
                        chain, (long long)seq, kind, id, (long long)pseq);
        } else {
            v->rep->doc_chains++;
            if (!v->ranged && seq != 1)
                problem(v, "document chain %s starts at #%lld, not #1 (documents missing)", chain,
                        (long long)seq);
            else if (!v->ranged && strspn(prev, "0") != 64)
                problem(v,
                        "document chain %s: #1 names a previous digest (documents missing or "
                        "reordered)",
                        chain);
        }
        q.n = 0;
        chain__put(&q, "D", 1);
        chain__fs(&q, "1");
        chain__fs(&q, chain);
        chain__fs(&q, PQgetvalue(r, i, 1));
        chain__fs(&q, kind);
        chain__fs(&q, id);
        chain__fs(&q, prev);
        chain__put(&q, "\n", 1);
        int gone = doc_json(v, kind, id, &q, err, err_len, &rc);
        if (gone < 0)
            break;
        v->rep->documents++;
        if (gone) {
            problem(v, "document %s #%lld: %s %s %s is gone", chain, (long long)seq, kind, id,
                    number);
            continue;
        }
        unsigned char md[32];
        char hex[65];
        if (!EVP_Digest(q.p, q.n, md, NULL, EVP_sha256(), NULL))
            abort();
        chain__hex(md, hex);
        if (strcmp(hex, dig))
            problem(v,
                    "document %s #%lld: %s %s %s: digest recorded %.16s…, recomputed %.16s…: "
                    "its row or lines changed since it was recorded",
                    chain, (long long)seq, kind, id, number, dig, hex);
    }
    free(q.p);
    PQclear(r);
    if (rc || v->ranged)
        return rc;
    /* Documents that should be chained and are not. */
    PGresult *u = query(
        v,
        "SELECT 'invoice', invoice_id, coalesce(number, '') FROM gm.invoices WHERE status <> "
        "'draft'"
        " AND invoice_id NOT IN (SELECT doc_id FROM gm.chain_documents WHERE kind = 'invoice')"
        " UNION ALL SELECT 'credit_note', credit_note_id, coalesce(number, '') FROM gm.credit_notes"
        " WHERE credit_note_id NOT IN (SELECT doc_id FROM gm.chain_documents WHERE kind ="
        " 'credit_note') UNION ALL SELECT 'rerating_run', run_id::text, '' FROM gm.rerating_runs"
        " WHERE run_id::text NOT IN (SELECT doc_id FROM gm.chain_documents WHERE kind ="
        " 'rerating_run') ORDER BY 1, 2",
        0, NULL, err, err_len, &rc);
    if (!u)
        return rc;
    for (int i = 0; i < PQntuples(u); i++)
        problem(v, "%s %s %s is in no document chain", PQgetvalue(u, i, 0), PQgetvalue(u, i, 1),
                PQgetvalue(u, i, 2));
    PQclear(u);
    return 0;
}

/* ---- State tables and anchors
 * ------------------------------------------------------------------*/
static int verify_state(verifier *v, char *err, size_t err_len)
{
    int rc = 0;
    PGresult *r = query(v, "SELECT object, key, stored, chained FROM audit.chain_state_check", 0,
                        NULL, err, err_len, &rc);
    if (!r)
        return rc;
    for (int i = 0; i < PQntuples(r); i++)
        problem(v, "gm.%s %s: the table holds %s, the chain and ledger say %s", PQgetvalue(r, i, 0),
                PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3));
    PQclear(r);
    return 0;
}

static int verify_anchor(verifier *v, char *err, size_t err_len)
{
    FILE *f = fopen(v->o->anchor_path, "r");
    if (!f)
        return gm_fail(err, err_len, GM_EIO, "anchor %s: cannot open", v->o->anchor_path);
    char line[1024];
    int rc = 0, lineno = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *seq = strchr(line, '\t'), *dig = seq ? strchr(seq + 1, '\t') : NULL;
        if (!seq || !dig) {
            problem(v, "anchor %s line %d: not CHAIN<TAB>SEQ<TAB>DIGEST", v->o->anchor_path,
                    lineno);
            continue;
        }
        *seq++ = '\0';
        *dig++ = '\0';
        v->rep->anchors++;
        const char *p[2] = {line, seq};
        PGresult *r = query(
            v,
            "SELECT encode(digest, 'hex'), (SELECT max(seq) FROM gm.chain_batches WHERE 'batch:'"
            " || group_id || '/' || topic || '/' || partition = $1) FROM gm.chain_batches WHERE"
            " 'batch:' || group_id || '/' || topic || '/' || partition = $1 AND seq = $2::bigint"
            " UNION ALL SELECT encode(digest, 'hex'), (SELECT max(seq) FROM gm.chain_documents"
            " WHERE chain = $1) FROM gm.chain_documents WHERE chain = $1 AND seq = $2::bigint"
            " UNION ALL SELECT encode(digest, 'hex'), (SELECT max(seq) FROM gm.chain_replays)"
            " FROM gm.chain_replays WHERE $1 = 'replay' AND seq = $2::bigint",
            2, p, err, err_len, &rc);
        if (!r)
            break;
        if (PQntuples(r) == 0) {
            PGresult *m = query(v,
                                "SELECT coalesce((SELECT max(seq)::text FROM gm.chain_batches"
                                " WHERE 'batch:' || group_id || '/' || topic || '/' || partition"
                                " = $1), (SELECT max(seq)::text FROM gm.chain_documents WHERE"
                                " chain = $1), (SELECT max(seq)::text FROM gm.chain_replays"
                                " WHERE $1 = 'replay'), 'nothing')",
                                1, p, err, err_len, &rc);
            problem(v,
                    "anchor %s: chain %s had #%s (digest %.16s…), the database has no #%s (it "
                    "ends at #%s): rows were removed or an older backup was restored",
                    v->o->anchor_path, line, seq, dig, seq, m ? PQgetvalue(m, 0, 0) : "?");
            PQclear(m);
        } else if (strcmp(PQgetvalue(r, 0, 0), dig)) {
            problem(v,
                    "anchor %s: chain %s #%s was %.16s… when anchored, the database holds "
                    "%.16s…: the chain was rewritten after the anchor",
                    v->o->anchor_path, line, seq, dig, PQgetvalue(r, 0, 0));
        }
        PQclear(r);
    }
    fclose(f);
    return rc;
}

int gm_chain_verify(PGconn *c, const gm_chain_verify_opts *o, gm_chain_report *rep, char *err,
                    size_t err_len)
{
    memset(rep, 0, sizeof *rep);
    verifier v = {.c = c, .o = o, .rep = rep, .ranged = o->from_us || o->to_us};
    v.t0 = v.last_progress = gm_mono_us();
    int rc = gm_pg_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, err_len);
    if (rc)
        return rc;
    if (!rc)
        rc = verify_batches(&v, err, err_len);
    progress(&v, true);
    if (!rc)
        rc = verify_replays(&v, err, err_len);
    if (!rc)
        rc = verify_documents(&v, err, err_len);
    if (!rc && !v.ranged)
        rc = verify_state(&v, err, err_len);
    if (!rc && o->anchor_path)
        rc = verify_anchor(&v, err, err_len);
    free(v.rec.p);
    if (PQstatus(c) == CONNECTION_OK)
        PQclear(PQexec(c, "ROLLBACK"));
    rep->elapsed_s = (double)(gm_mono_us() - v.t0) / 1e6;
    return rc;
}

int gm_chain_anchor(PGconn *c, FILE *out, int64_t now_us, char *err, size_t err_len)
{
    PGresult *r = PQexec(c, "SELECT chain, seq, digest FROM audit.chain_heads UNION ALL"
                            " SELECT chain, seq, digest FROM audit.chain_document_heads"
                            " ORDER BY 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "reading the chain heads", err, err_len);
        PQclear(r);
        return rc;
    }
    char ts[40];
    gm_time_format(now_us, ts, sizeof ts);
    fprintf(out, "# gridmeter chain anchor, scheme 1, %s, %d chains\n", ts, PQntuples(r));
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(out, "%s\t%s\t%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return fflush(out) == 0 ? 0 : gm_fail(err, err_len, GM_EIO, "anchor: write failed");
}
