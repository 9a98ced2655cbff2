/* Invoices: drafts computed on read from gm.charges through the rating engine, finalization
 * (one REPEATABLE READ transaction: lines, snapshots, status; the number comes from the
 * trigger), late-event adjustments, and the JSON/CSV renderings.
 *
 * DESIGN. A draft is never stored with lines: every read aggregates the tenant's charges of
 * the month per (model, site, card version) and feeds the sums into a gm_rating_period, so a
 * draft is always current with the ledger (the rater writes charges in the same transaction
 * as the ledger rows). Finalizing runs the same computation inside a REPEATABLE READ
 * transaction, so that the lines, the period snapshot (events, exact amount) and the total
 * all describe one snapshot of the ledger, then stores them and flips the status; the
 * triggers of sql/0003 make the result immutable.
 *
 * Late events: a finalized period Q is "billed" by its own lines plus the adjustment lines of
 * later finalized invoices that name Q. When the charges of Q differ from Q's latest snapshot,
 * the next draft after Q (the first draft row of the tenant with a later period; finalizing Q
 * creates the row of Q+1) recomputes Q and adds one adjustment line per line key whose
 * quantity or amount changed, naming Q; finalizing that draft snapshots Q again.
 *
 * Invariants (checked by api__invoice_check, which the tests call through the API's output):
 *   N1 total = sum of the lines' rounded amounts;
 *   N2 a usage/tier line's amount is its exact amount rounded half to even (rating I3);
 *   N3 every adjustment line names a period before the invoice's own. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#define US(x) "coalesce((extract(epoch FROM " x ") * 1000000)::bigint, 0)"

static int dbfail(PGconn *db, const PGresult *r, const char *what, char *err, size_t err_len)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int rc = gm_pg_fail(db, r, what, err, err_len);
    if (st && (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55000") ||
               !strcmp(st, "42501") || !strcmp(st, "23514")))
        return GM_ECONFLICT;
    return rc;
}

static PGresult *qp(PGconn *db, const char *sql, int n, const char *const *params, int want,
                    const char *what, char *err, size_t err_len, int *rc)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != (ExecStatusType)want) {
        *rc = dbfail(db, r, what, err, err_len);
        PQclear(r);
        return NULL;
    }
    *rc = 0;
    return r;
}

static int64_t i64_at(const PGresult *r, int row, int col)
{
    int64_t v = 0;
    const char *s = PQgetvalue(r, row, col);
    if (gm_parse_i64(s, strlen(s), &v))
        v = 0;
    return v;
}

static gm_i128 e18_at(const PGresult *r, int row, int col)
{
    gm_i128 v = 0;
    if (!PQgetisnull(r, row, col) && !api__num_e18(PQgetvalue(r, row, col), &v))
        v = 0;
    return v;
}

static gm_i128 int_at(const PGresult *r, int row, int col)
{
    gm_i128 v = 0;
    if (!PQgetisnull(r, row, col) && !api__num_int(PQgetvalue(r, row, col), &v))
        v = 0;
    return v;
}

void api__invoice_free(api_invoice *inv)
{
    if (!inv)
        return;
    for (size_t i = 0; i < inv->n_lines; i++) {
        free(inv->lines[i].model);
        free(inv->lines[i].site_tier);
    }
    free(inv->lines);
    free(inv);
}

static api_line *line_push(api_invoice *inv, size_t *cap)
{
    if (inv->n_lines == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        inv->lines = gm_xrealloc(inv->lines, *cap * sizeof *inv->lines);
    }
    api_line *l = &inv->lines[inv->n_lines++];
    memset(l, 0, sizeof *l);
    return l;
}

int api__period_fingerprint(PGconn *db, const char *tenant, int64_t start_us, int64_t end_us,
                            gm_i128 *events, gm_i128 *amount_e18, char *err, size_t err_len)
{
    char a[40], b[40];
    api__time_param(start_us, a);
    api__time_param(end_us, b);
    const char *p[3] = {tenant, a, b};
    int rc;
    PGresult *r = qp(db,
                     "SELECT coalesce(sum(events), 0), coalesce(sum(amount), 0) FROM gm.charges"
                     " WHERE tenant = $1 AND hour >= $2 AND hour < $3",
                     3, p, PGRES_TUPLES_OK, "period fingerprint", err, err_len, &rc);
    if (!r)
        return rc;
    *events = int_at(r, 0, 0);
    *amount_e18 = e18_at(r, 0, 1);
    PQclear(r);
    return 0;
}

/* The rating invoice of a tenant's month from its charges. */
static int rate_period(const gm_rating_book *book, PGconn *db, const char *tenant, int64_t start_us,
                       const gm_invoice_opts *opts, gm_invoice **out, char *err, size_t err_len)
{
    char a[40], b[40];
    api__time_param(start_us, a);
    api__time_param(gm_month_next(start_us), b);
    const char *p[3] = {tenant, a, b};
    int rc;
    PGresult *r =
        qp(db,
           "SELECT model, site, " US(
               "min(hour)") ","
                            " coalesce(sum(quantity) FILTER (WHERE dimension = 'input'), 0),"
                            " coalesce(sum(quantity) FILTER (WHERE dimension = 'cached'), 0),"
                            " coalesce(sum(quantity) FILTER (WHERE dimension = 'output'), 0),"
                            " coalesce(sum(quantity) FILTER (WHERE dimension = 'gpu'), 0)"
                            " FROM gm.charges WHERE tenant = $1 AND hour >= $2 AND hour < $3"
                            " GROUP BY model, site, card_id, card_version ORDER BY 1, 2, 3",
           3, p, PGRES_TUPLES_OK, "invoice usage", err, err_len, &rc);
    if (!r)
        return rc;
    gm_rating_period *per = gm_rating_period_new(book, tenant, start_us);
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        gm_usage_sum s = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), i64_at(r, i, 2), {0}};
        for (int d = 0; d < GM_DIM_COUNT; d++)
            s.qty[d] = int_at(r, i, 3 + d);
        rc = gm_rating_period_add_sum(per, &s, err, err_len);
    }
    PQclear(r);
    if (!rc)
        rc = gm_rating_period_invoice(per, opts, out, err, err_len);
    gm_rating_period_free(per);
    return rc;
}

static void line_from_rating(api_line *l, const gm_invoice_line *g)
{
    l->line_no = g->line_no;
    snprintf(l->kind, sizeof l->kind, "%s", gm_line_kind_name(g->kind));
    snprintf(l->description, sizeof l->description, "%s", g->description);
    snprintf(l->dimension, sizeof l->dimension, "%s",
             g->dim < GM_DIM_COUNT ? gm_dim_name(g->dim) : "");
    l->model = gm_xstrdup(g->model ? g->model : "");
    l->site_tier = gm_xstrdup(g->site_tier ? g->site_tier : "");
    l->card_version = g->card_version;
    l->band = g->band;
    l->qty = g->qty;
    l->unit_price_p = g->unit_price_p;
    l->amount_e18 = g->amount_e18;
    l->amount_minor = g->amount_minor;
    l->discount_minor = g->discount_minor;
    l->credit_minor = g->credit_minor;
}

/* A line key: kind (of the corrected line), dimension, model, site tier, card version, band. */
static bool same_key(const char *k1, const char *d1, const char *m1, const char *t1, int64_t v1,
                     int b1, const api_line *l)
{
    const char *lk = l->adjusted_kind[0] ? l->adjusted_kind : l->kind;
    return !strcmp(k1, lk) && !strcmp(d1, l->dimension) && !strcmp(m1, l->model) &&
           !strcmp(t1, l->site_tier) && v1 == l->card_version && b1 == l->band;
}

typedef struct {
    int64_t start_us;
    gm_i128 events, amount_e18;
} adjusted_period;

/* Adjustment lines for finalized periods before `inv` whose charges moved since they were
 * last billed. Appends to inv->lines; fills *adj with every such period (for snapshots). */
static int add_adjustments(const gm_rating_book *book, PGconn *db, api_invoice *inv, size_t *cap,
                           adjusted_period **adj, size_t *n_adj, char *err, size_t err_len)
{
    char ps[40];
    api__time_param(inv->period_start_us, ps);
    const char *p[2] = {inv->tenant, ps};
    int rc;
    PGresult *qs =
        qp(db,
           "SELECT q.invoice_id, " US(
               "q.period_start") ","
                                 " q.credit_balance_before_minor FROM gm.invoices q"
                                 " WHERE q.tenant = $1 AND q.status = 'finalized' AND "
                                 "q.period_start < $2"
                                 " AND NOT EXISTS (SELECT 1 FROM gm.invoices d WHERE d.tenant = $1"
                                 "   AND d.status = 'draft' AND d.period_start > q.period_start"
                                 "   AND d.period_start < $2)"
                                 " ORDER BY q.period_start",
           2, p, PGRES_TUPLES_OK, "adjustable periods", err, err_len, &rc);
    if (!qs)
        return rc;
    for (int i = 0; i < PQntuples(qs) && !rc; i++) {
        const char *qid = PQgetvalue(qs, i, 0);
        int64_t qstart = i64_at(qs, i, 1);
        gm_i128 ev = 0, amt = 0;
        if ((rc = api__period_fingerprint(db, inv->tenant, qstart, gm_month_next(qstart), &ev, &amt,
                                          err, err_len)))
            break;
        char qs_txt[40];
        api__time_param(qstart, qs_txt);
        const char *sp[2] = {inv->tenant, qs_txt};
        PGresult *snap = qp(db,
                            "SELECT events, amount FROM gm.period_snapshots WHERE tenant = $1"
                            " AND period_start = $2 ORDER BY taken_at DESC LIMIT 1",
                            2, sp, PGRES_TUPLES_OK, "period snapshot", err, err_len, &rc);
        if (!snap)
            break;
        bool same = PQntuples(snap) == 1 && int_at(snap, 0, 0) == ev && e18_at(snap, 0, 1) == amt;
        PQclear(snap);
        if (same)
            continue;
        *adj = gm_xrealloc(*adj, (*n_adj + 1) * sizeof **adj);
        (*adj)[(*n_adj)++] = (adjusted_period){qstart, ev, amt};
        gm_invoice_opts o = {0};
        if (!PQgetisnull(qs, i, 2)) {
            o.has_credit_balance = true;
            o.credit_balance_minor = int_at(qs, i, 2);
        }
        gm_invoice *now = NULL;
        if ((rc = rate_period(book, db, inv->tenant, qstart, &o, &now, err, err_len)))
            break;
        const char *bp[3] = {inv->tenant, qid, qs_txt};
        PGresult *billed =
            qp(db,
               "SELECT coalesce(l.adjusted_kind, l.kind), coalesce(l.dimension, ''),"
               " coalesce(l.model, ''), coalesce(l.site_tier, ''), coalesce(l.card_version, 0),"
               " coalesce(l.band, 0), coalesce(sum(l.quantity), 0), sum(l.amount_exact),"
               " sum(l.amount_minor), max(l.unit_price)"
               " FROM gm.invoice_lines l JOIN gm.invoices i USING (invoice_id)"
               " WHERE i.tenant = $1 AND i.status <> 'draft'"
               " AND ((l.invoice_id = $2 AND l.kind <> 'adjustment') OR l.corrects_period = $3)"
               " GROUP BY 1, 2, 3, 4, 5, 6",
               3, bp, PGRES_TUPLES_OK, "billed lines", err, err_len, &rc);
        if (!billed) {
            gm_invoice_free(now);
            break;
        }
        int nb = PQntuples(billed);
        bool *matched = gm_xcalloc((size_t)nb + 1, sizeof *matched);
        char month[8];
        api__format_month(qstart, month);
        /* lines of the recomputed period, against what was billed for their key */
        for (size_t k = 0; k < now->n_lines; k++) {
            api_line cur;
            memset(&cur, 0, sizeof cur);
            line_from_rating(&cur, &now->lines[k]);
            gm_i128 bq = 0, be = 0, bm = 0;
            for (int j = 0; j < nb; j++)
                if (!matched[j] &&
                    same_key(PQgetvalue(billed, j, 0), PQgetvalue(billed, j, 1),
                             PQgetvalue(billed, j, 2), PQgetvalue(billed, j, 3),
                             i64_at(billed, j, 4), (int)i64_at(billed, j, 5), &cur)) {
                    matched[j] = true;
                    bq = int_at(billed, j, 6);
                    be = e18_at(billed, j, 7);
                    bm = int_at(billed, j, 8);
                    break;
                }
            if (cur.qty != bq || cur.amount_e18 != be || cur.amount_minor != bm) {
                api_line *l = line_push(inv, cap);
                *l = cur;
                snprintf(l->adjusted_kind, sizeof l->adjusted_kind, "%s", cur.kind);
                snprintf(l->kind, sizeof l->kind, "adjustment");
                snprintf(l->description, sizeof l->description, "Adjustment for %s: %.150s", month,
                         cur.description);
                l->qty = cur.qty - bq;
                l->amount_e18 = cur.amount_e18 - be;
                l->amount_minor = cur.amount_minor - bm;
                l->discount_minor = l->credit_minor = 0;
                l->corrects_period_us = qstart;
            } else {
                free(cur.model);
                free(cur.site_tier);
            }
        }
        for (int j = 0; j < nb; j++) {
            if (matched[j])
                continue;
            gm_i128 bq = int_at(billed, j, 6), be = e18_at(billed, j, 7), bm = int_at(billed, j, 8);
            if (!bq && !be && !bm)
                continue;
            api_line *l = line_push(inv, cap);
            snprintf(l->kind, sizeof l->kind, "adjustment");
            snprintf(l->adjusted_kind, sizeof l->adjusted_kind, "%s", PQgetvalue(billed, j, 0));
            snprintf(l->dimension, sizeof l->dimension, "%s", PQgetvalue(billed, j, 1));
            l->model = gm_xstrdup(PQgetvalue(billed, j, 2));
            l->site_tier = gm_xstrdup(PQgetvalue(billed, j, 3));
            l->card_version = i64_at(billed, j, 4);
            l->band = (int)i64_at(billed, j, 5);
            snprintf(l->description, sizeof l->description,
                     "Adjustment for %s: %s %s %s no longer billed", month, l->adjusted_kind,
                     l->dimension, l->model);
            gm_i128 up = 0;
            if (!PQgetisnull(billed, j, 9) &&
                gm_dec_parse(PQgetvalue(billed, j, 9), strlen(PQgetvalue(billed, j, 9)), 12, &up,
                             NULL, 0) == 0)
                l->unit_price_p = (int64_t)up;
            l->qty = -bq;
            l->amount_e18 = -be;
            l->amount_minor = -bm;
            l->corrects_period_us = qstart;
        }
        free(matched);
        PQclear(billed);
        gm_invoice_free(now);
    }
    PQclear(qs);
    return rc;
}

/* Computes a draft's lines and totals into inv (row fields already loaded). */
static int compute_live(api_server *s, PGconn *db, api_invoice *inv, adjusted_period **adj,
                        size_t *n_adj, char *err, size_t err_len)
{
    const gm_rating_book *book = api__book_acquire(s, db, err, err_len);
    if (!book)
        return GM_EDB;
    char ps[40];
    api__time_param(inv->period_start_us, ps);
    const char *p[2] = {inv->tenant, ps};
    int rc;
    gm_invoice_opts o = {0};
    PGresult *r = qp(db,
                     "SELECT credit_balance_after_minor FROM gm.invoices WHERE tenant = $1"
                     " AND status <> 'draft' AND period_start < $2"
                     " AND credit_balance_after_minor IS NOT NULL"
                     " ORDER BY period_start DESC LIMIT 1",
                     2, p, PGRES_TUPLES_OK, "credit balance", err, err_len, &rc);
    if (!r) {
        api__book_release(s);
        return rc;
    }
    if (PQntuples(r) == 1) {
        o.has_credit_balance = true;
        o.credit_balance_minor = int_at(r, 0, 0);
    }
    PQclear(r);
    inv->has_credit_before = o.has_credit_balance;
    inv->credit_before_minor = o.credit_balance_minor;
    gm_invoice *g = NULL;
    rc = rate_period(book, db, inv->tenant, inv->period_start_us, &o, &g, err, err_len);
    size_t cap = 0;
    if (!rc) {
        snprintf(inv->currency, sizeof inv->currency, "%s", g->currency);
        inv->minor_units = g->minor_units;
        inv->usage_exact_e18 = g->exact_usage_e18;
        inv->credit_after_minor = g->credit_balance_after_minor;
        for (size_t i = 0; i < g->n_lines; i++)
            line_from_rating(line_push(inv, &cap), &g->lines[i]);
        gm_invoice_free(g);
        rc = add_adjustments(book, db, inv, &cap, adj, n_adj, err, err_len);
    }
    api__book_release(s);
    if (rc)
        return rc;
    inv->total_minor = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        inv->lines[i].line_no = (int)i + 1;
        inv->total_minor += inv->lines[i].amount_minor;
    }
    inv->live = true;
    return 0;
}

#define INVOICE_COLS                                                                               \
    "invoice_id, tenant, issuer, " US("period_start") ", " US(                                     \
        "period_end") ", status,"                                                                  \
                      " coalesce(number, ''), coalesce(currency, ''), coalesce(minor_units, 0),"   \
                      " coalesce(total_minor, 0), coalesce(usage_exact, 0), "                      \
                      "credit_balance_before_minor,"                                               \
                      " coalesce(credit_balance_after_minor, 0), " US("finalized_at") ", " US(     \
                          "voided_at") ","                                                         \
                                       " " US(                                                     \
                                           "created_at") ", coalesce(ledger_events, 0), "          \
                                                         "coalesce(ledger_amount, 0),"             \
                                                         " (SELECT coalesce(sum(amount_minor), "   \
                                                         "0) FROM gm.credit_notes cn"              \
                                                         "  WHERE cn.invoice_id = i.invoice_id)"

static void row_to_invoice(const PGresult *r, int i, api_invoice *inv)
{
    snprintf(inv->invoice_id, sizeof inv->invoice_id, "%s", PQgetvalue(r, i, 0));
    snprintf(inv->tenant, sizeof inv->tenant, "%s", PQgetvalue(r, i, 1));
    snprintf(inv->issuer, sizeof inv->issuer, "%s", PQgetvalue(r, i, 2));
    inv->period_start_us = i64_at(r, i, 3);
    inv->period_end_us = i64_at(r, i, 4);
    snprintf(inv->status, sizeof inv->status, "%s", PQgetvalue(r, i, 5));
    snprintf(inv->number, sizeof inv->number, "%s", PQgetvalue(r, i, 6));
    snprintf(inv->currency, sizeof inv->currency, "%s", PQgetvalue(r, i, 7));
    inv->minor_units = (int)i64_at(r, i, 8);
    inv->total_minor = int_at(r, i, 9);
    inv->usage_exact_e18 = e18_at(r, i, 10);
    inv->has_credit_before = !PQgetisnull(r, i, 11);
    inv->credit_before_minor = int_at(r, i, 11);
    inv->credit_after_minor = int_at(r, i, 12);
    inv->finalized_at_us = i64_at(r, i, 13);
    inv->voided_at_us = i64_at(r, i, 14);
    inv->created_at_us = i64_at(r, i, 15);
    inv->ledger_events = int_at(r, i, 16);
    inv->ledger_amount_e18 = e18_at(r, i, 17);
    inv->credited_minor = int_at(r, i, 18);
}

static int load_lines(PGconn *db, api_invoice *inv, char *err, size_t err_len)
{
    const char *p[1] = {inv->invoice_id};
    int rc;
    PGresult *r =
        qp(db,
           "SELECT line_no, kind, coalesce(adjusted_kind, ''), description,"
           " coalesce(dimension, ''), coalesce(model, ''), coalesce(site_tier, ''),"
           " coalesce(card_version, 0), coalesce(band, 0), coalesce(quantity, 0),"
           " coalesce(unit_price, 0), amount_exact, amount_minor, discount_minor,"
           " credit_minor, " US("corrects_period") " FROM gm.invoice_lines"
                                                   " WHERE invoice_id = $1 ORDER BY line_no",
           1, p, PGRES_TUPLES_OK, "invoice lines", err, err_len, &rc);
    if (!r)
        return rc;
    size_t cap = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        api_line *l = line_push(inv, &cap);
        l->line_no = (int)i64_at(r, i, 0);
        snprintf(l->kind, sizeof l->kind, "%s", PQgetvalue(r, i, 1));
        snprintf(l->adjusted_kind, sizeof l->adjusted_kind, "%s", PQgetvalue(r, i, 2));
        snprintf(l->description, sizeof l->description, "%s", PQgetvalue(r, i, 3));
        snprintf(l->dimension, sizeof l->dimension, "%s", PQgetvalue(r, i, 4));
        l->model = gm_xstrdup(PQgetvalue(r, i, 5));
        l->site_tier = gm_xstrdup(PQgetvalue(r, i, 6));
        l->card_version = i64_at(r, i, 7);
        l->band = (int)i64_at(r, i, 8);
        l->qty = int_at(r, i, 9);
        gm_i128 up = 0;
        if (gm_dec_parse(PQgetvalue(r, i, 10), strlen(PQgetvalue(r, i, 10)), 12, &up, NULL, 0))
            up = 0;
        l->unit_price_p = (int64_t)up;
        l->amount_e18 = e18_at(r, i, 11);
        l->amount_minor = int_at(r, i, 12);
        l->discount_minor = int_at(r, i, 13);
        l->credit_minor = int_at(r, i, 14);
        l->corrects_period_us = i64_at(r, i, 15);
    }
    PQclear(r);
    return 0;
}

static int load_row(PGconn *db, const char *invoice_id, bool lock, api_invoice **out, char *err,
                    size_t err_len)
{
    const char *p[1] = {invoice_id};
    int rc;
    PGresult *r = qp(db,
                     lock ? "SELECT " INVOICE_COLS " FROM gm.invoices i WHERE invoice_id = $1"
                            " FOR UPDATE"
                          : "SELECT " INVOICE_COLS " FROM gm.invoices i WHERE invoice_id = $1",
                     1, p, PGRES_TUPLES_OK, "invoice", err, err_len, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not found", invoice_id);
    }
    api_invoice *inv = gm_xcalloc(1, sizeof *inv);
    row_to_invoice(r, 0, inv);
    PQclear(r);
    *out = inv;
    return 0;
}

int api__invoice_get(api_server *s, PGconn *db, const char *invoice_id, api_invoice **out,
                     char *err, size_t err_len)
{
    *out = NULL;
    api_invoice *inv = NULL;
    int rc = load_row(db, invoice_id, false, &inv, err, err_len);
    if (rc)
        return rc;
    if (!strcmp(inv->status, "draft")) {
        adjusted_period *adj = NULL;
        size_t n_adj = 0;
        rc = compute_live(s, db, inv, &adj, &n_adj, err, err_len);
        free(adj);
    } else {
        rc = load_lines(db, inv, err, err_len);
    }
    if (rc) {
        api__invoice_free(inv);
        return rc;
    }
    *out = inv;
    return 0;
}

int api__invoice_ensure(PGconn *db, const char *tenant, int64_t period_start_us, char *id_out,
                        size_t id_len, char *err, size_t err_len)
{
    char a[40], b[40];
    api__time_param(period_start_us, a);
    api__time_param(gm_month_next(period_start_us), b);
    const char *p[3] = {tenant, a, b};
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc;
        PGresult *r = qp(db,
                         "WITH ins AS (INSERT INTO gm.invoices (tenant, issuer, period_start,"
                         " period_end) SELECT $1, coalesce((SELECT issuer FROM gm.tenants"
                         " WHERE tenant = $1), 'GM'), $2, $3"
                         " ON CONFLICT (tenant, period_start) DO NOTHING RETURNING invoice_id)"
                         " SELECT invoice_id FROM ins UNION ALL SELECT invoice_id"
                         " FROM gm.invoices WHERE tenant = $1 AND period_start = $2",
                         3, p, PGRES_TUPLES_OK, "invoice draft", err, err_len, &rc);
        if (!r)
            return rc;
        if (PQntuples(r) >= 1) {
            snprintf(id_out, id_len, "%s", PQgetvalue(r, 0, 0));
            PQclear(r);
            return 0;
        }
        PQclear(r);
    }
    return gm_fail(err, err_len, GM_ECONFLICT, "invoice draft of %.64s: concurrent creation",
                   tenant);
}

int api__invoice_ensure_period(PGconn *db, int64_t period_start_us, const char *tenant, char *err,
                               size_t err_len)
{
    char a[40], b[40];
    api__time_param(period_start_us, a);
    api__time_param(gm_month_next(period_start_us), b);
    const char *p[3] = {a, b, tenant};
    int rc;
    PGresult *r = qp(db,
                     "INSERT INTO gm.invoices (tenant, issuer, period_start, period_end)"
                     " SELECT c.tenant, coalesce(min(t.issuer), 'GM'), $1, $2"
                     " FROM gm.charges c LEFT JOIN gm.tenants t USING (tenant)"
                     " WHERE c.hour >= $1 AND c.hour < $2 AND ($3::text IS NULL OR c.tenant = $3)"
                     " GROUP BY c.tenant ON CONFLICT (tenant, period_start) DO NOTHING",
                     3, p, PGRES_COMMAND_OK, "invoice drafts", err, err_len, &rc);
    PQclear(r);
    return rc;
}

static int exec_ok(PGconn *db, const char *sql, int n, const char *const *p, const char *what,
                   char *err, size_t err_len)
{
    int rc;
    PGresult *r = qp(db, sql, n, p, PGRES_COMMAND_OK, what, err, err_len, &rc);
    PQclear(r);
    return rc;
}

static int finalize_tx(api_server *s, PGconn *db, const char *invoice_id, int64_t now_us, char *err,
                       size_t err_len)
{
    api_invoice *inv = NULL;
    int rc = load_row(db, invoice_id, true, &inv, err, err_len);
    if (rc)
        return rc;
    adjusted_period *adj = NULL;
    size_t n_adj = 0;
    int64_t open_until = inv->period_end_us + (int64_t)api__config(s)->grace_hours * GM_US_PER_HOUR;
    if (strcmp(inv->status, "draft")) {
        rc = gm_fail(err, err_len, GM_ECONFLICT, "invoice %s is %s (%s): only a draft is finalized",
                     inv->invoice_id, inv->status, inv->number);
        goto out;
    }
    if (now_us < open_until) {
        char t[40];
        gm_time_format(open_until, t, sizeof t);
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s: the period is open for late events until %s (period end + %d h"
                     " grace)",
                     inv->invoice_id, t, api__config(s)->grace_hours);
        goto out;
    }
    /* Months are finalized in order. Prepaid credit runs from one finalized month to the
     * next, so finalizing a month after a later one, or while an earlier one with usage
     * since the last finalized month is still a draft, would count the same credit twice
     * (found in review). Usage of a month before the last finalized one that was never
     * invoiced (a backfill) does not block the months after it. The tenant's invoice rows
     * are locked first, so two finalizations of one tenant serialize. */
    {
        char ps[40];
        gm_time_format(inv->period_start_us, ps, sizeof ps);
        const char *p[2] = {inv->tenant, ps};
        PGresult *r = qp(db, "SELECT 1 FROM gm.invoices WHERE tenant = $1 FOR UPDATE", 1, p,
                         PGRES_TUPLES_OK, "locking the tenant's invoices", err, err_len, &rc);
        PQclear(r);
        if (rc)
            goto out;
        r = qp(db,
               "SELECT (SELECT to_char(max(period_start) AT TIME ZONE 'UTC', 'YYYY-MM')"
               "        FROM gm.invoices WHERE tenant = $1 AND status <> 'draft'"
               "        AND period_start > $2::timestamptz),"
               "       (SELECT to_char(min(m) AT TIME ZONE 'UTC', 'YYYY-MM') FROM"
               "        (SELECT DISTINCT date_trunc('month', hour AT TIME ZONE 'UTC') AT TIME ZONE"
               "         'UTC' AS m FROM gm.charges WHERE tenant = $1 AND hour < $2::timestamptz) c"
               "        WHERE c.m > coalesce((SELECT max(period_start) FROM gm.invoices"
               "                 WHERE tenant = $1 AND status <> 'draft'"
               "                 AND period_start < $2::timestamptz), '-infinity')"
               "        AND NOT EXISTS (SELECT 1 FROM gm.invoices i WHERE i.tenant = $1"
               "         AND i.period_start = c.m AND i.status <> 'draft'))",
               2, p, PGRES_TUPLES_OK, "checking the order of finalization", err, err_len, &rc);
        if (!rc && !PQgetisnull(r, 0, 0))
            rc = gm_fail(err, err_len, GM_ECONFLICT,
                         "invoice %s: %s is already finalized; months are finalized in order "
                         "(prepaid credit carries from one to the next)",
                         inv->invoice_id, PQgetvalue(r, 0, 0));
        else if (!rc && !PQgetisnull(r, 0, 1))
            rc = gm_fail(err, err_len, GM_ECONFLICT,
                         "invoice %s: the earlier month %s has usage and is not finalized yet; "
                         "months are finalized in order (prepaid credit carries from one to the "
                         "next)",
                         inv->invoice_id, PQgetvalue(r, 0, 1));
        PQclear(r);
        if (rc)
            goto out;
    }
    if ((rc = compute_live(s, db, inv, &adj, &n_adj, err, err_len)))
        goto out;
    if (!inv->currency[0]) {
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s: no currency (tenant %s has no contract and there is no default"
                     " card)",
                     inv->invoice_id, inv->tenant);
        goto out;
    }
    gm_i128 ev = 0, amt = 0;
    if ((rc = api__period_fingerprint(db, inv->tenant, inv->period_start_us, inv->period_end_us,
                                      &ev, &amt, err, err_len)))
        goto out;
    for (size_t i = 0; i < inv->n_lines && !rc; i++) {
        const api_line *l = &inv->lines[i];
        char no[16], ver[24], band[16], qty[48], up[48], ex[64], am[64], mi[48], di[48], cr[48],
            cp[40];
        snprintf(no, sizeof no, "%d", l->line_no);
        snprintf(ver, sizeof ver, "%lld", (long long)l->card_version);
        snprintf(band, sizeof band, "%d", l->band);
        gm_i128_format(l->qty, qty, sizeof qty);
        gm_dec_format(l->unit_price_p, 12, up, sizeof up);
        gm_dec_format(l->amount_e18, 18, ex, sizeof ex);
        gm_rating_format_minor(l->amount_minor, inv->minor_units, am, sizeof am);
        gm_i128_format(l->amount_minor, mi, sizeof mi);
        gm_i128_format(l->discount_minor, di, sizeof di);
        gm_i128_format(l->credit_minor, cr, sizeof cr);
        if (l->corrects_period_us)
            api__time_param(l->corrects_period_us, cp);
        bool usage = l->dimension[0] != 0;
        const char *p[18] = {inv->invoice_id,
                             no,
                             l->kind,
                             l->adjusted_kind[0] ? l->adjusted_kind : NULL,
                             l->description,
                             usage ? l->dimension : NULL,
                             l->model[0] ? l->model : NULL,
                             l->site_tier[0] ? l->site_tier : NULL,
                             l->card_version ? ver : NULL,
                             l->band ? band : NULL,
                             usage ? qty : NULL,
                             usage ? up : NULL,
                             ex,
                             am,
                             mi,
                             di,
                             cr,
                             l->corrects_period_us ? cp : NULL};
        rc = exec_ok(db,
                     "INSERT INTO gm.invoice_lines (invoice_id, line_no, kind, adjusted_kind,"
                     " description, dimension, model, site_tier, card_version, band, quantity,"
                     " unit_price, amount_exact, amount, amount_minor, discount_minor,"
                     " credit_minor, corrects_period) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                     " $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                     18, p, "invoice line", err, err_len);
    }
    if (rc)
        goto out;
    char ps[40], evs[48], amts[64];
    api__time_param(inv->period_start_us, ps);
    gm_i128_format(ev, evs, sizeof evs);
    gm_dec_format(amt, 18, amts, sizeof amts);
    const char *sp[5] = {inv->tenant, ps, inv->invoice_id, evs, amts};
    const char *snap_sql = "INSERT INTO gm.period_snapshots (tenant, period_start, invoice_id,"
                           " events, amount) VALUES ($1, $2, $3, $4, $5)";
    if ((rc = exec_ok(db, snap_sql, 5, sp, "period snapshot", err, err_len)))
        goto out;
    for (size_t i = 0; i < n_adj && !rc; i++) {
        char qps[40], qev[48], qam[64];
        api__time_param(adj[i].start_us, qps);
        gm_i128_format(adj[i].events, qev, sizeof qev);
        gm_dec_format(adj[i].amount_e18, 18, qam, sizeof qam);
        const char *qp5[5] = {inv->tenant, qps, inv->invoice_id, qev, qam};
        rc = exec_ok(db, snap_sql, 5, qp5, "period snapshot", err, err_len);
    }
    if (rc)
        goto out;
    char mu[8], tot[64], totm[48], ue[64], cb[48], ca[48];
    snprintf(mu, sizeof mu, "%d", inv->minor_units);
    gm_rating_format_minor(inv->total_minor, inv->minor_units, tot, sizeof tot);
    gm_i128_format(inv->total_minor, totm, sizeof totm);
    gm_dec_format(inv->usage_exact_e18, 18, ue, sizeof ue);
    gm_i128_format(inv->credit_before_minor, cb, sizeof cb);
    gm_i128_format(inv->credit_after_minor, ca, sizeof ca);
    const char *up[11] = {inv->invoice_id,
                          inv->currency,
                          mu,
                          tot,
                          totm,
                          ue,
                          inv->has_credit_before ? cb : NULL,
                          ca,
                          evs,
                          amts,
                          NULL};
    if ((rc = exec_ok(db,
                      "UPDATE gm.invoices SET status = 'finalized', currency = $2,"
                      " minor_units = $3, total = $4, total_minor = $5, usage_exact = $6,"
                      " credit_balance_before_minor = $7, credit_balance_after_minor = $8,"
                      " ledger_events = $9, ledger_amount = $10 WHERE invoice_id = $1",
                      10, up, "finalize", err, err_len)))
        goto out;
    char next_id[64];
    rc = api__invoice_ensure(db, inv->tenant, inv->period_end_us, next_id, sizeof next_id, err,
                             err_len);
out:
    free(adj);
    api__invoice_free(inv);
    return rc;
}

int api__invoice_finalize(api_server *s, PGconn *db, const char *invoice_id, char *err,
                          size_t err_len)
{
    /* One instant decides the grace window and stamps finalized_at (gm.now()). Over HTTP the
     * request's REPEATABLE READ transaction is joined (it commits with the idempotency
     * record, api/idempotency.c). */
    int64_t now_us = gm_now_us();
    bool own;
    int rc = api__tx_begin(db, "ISOLATION LEVEL REPEATABLE READ", now_us, &own, err, err_len);
    if (rc)
        return rc;
    rc = finalize_tx(s, db, invoice_id, now_us, err, err_len);
    return api__tx_end(db, own, rc, err, err_len);
}

/* ---- Renderings -------------------------------------------------------------------------- */
static void add_str_or_null(cJSON *o, const char *name, const char *v)
{
    if (v && *v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

cJSON *api__invoice_json(const api_invoice *inv, bool with_lines)
{
    cJSON *o = cJSON_CreateObject();
    char month[8];
    api__format_month(inv->period_start_us, month);
    cJSON_AddStringToObject(o, "invoice_id", inv->invoice_id);
    cJSON_AddStringToObject(o, "tenant", inv->tenant);
    cJSON_AddStringToObject(o, "issuer", inv->issuer);
    cJSON_AddStringToObject(o, "period", month);
    api__add_time(o, "period_start", inv->period_start_us);
    api__add_time(o, "period_end", inv->period_end_us);
    cJSON_AddStringToObject(o, "status", inv->status);
    add_str_or_null(o, "number", inv->number);
    add_str_or_null(o, "currency", inv->currency);
    cJSON_AddNumberToObject(o, "minor_units", inv->minor_units);
    bool have_total = inv->live || strcmp(inv->status, "draft");
    if (have_total) {
        api__add_minor(o, "total", inv->total_minor, inv->minor_units);
        api__add_e18(o, "usage_exact", inv->usage_exact_e18);
        api__add_minor(o, "credited", inv->credited_minor, inv->minor_units);
        gm_i128 creditable = strcmp(inv->status, "finalized") ? 0
                             : inv->total_minor > inv->credited_minor
                                 ? inv->total_minor - inv->credited_minor
                                 : 0;
        api__add_minor(o, "creditable", creditable, inv->minor_units);
    } else {
        cJSON_AddNullToObject(o, "total");
    }
    cJSON_AddBoolToObject(o, "live", inv->live);
    api__add_time(o, "created_at", inv->created_at_us);
    api__add_time(o, "finalized_at", inv->finalized_at_us);
    api__add_time(o, "voided_at", inv->voided_at_us);
    if (!with_lines)
        return o;
    cJSON *lines = cJSON_AddArrayToObject(o, "lines");
    for (size_t i = 0; i < inv->n_lines; i++) {
        const api_line *l = &inv->lines[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "line_no", l->line_no);
        cJSON_AddStringToObject(j, "kind", l->kind);
        if (l->adjusted_kind[0])
            cJSON_AddStringToObject(j, "adjusted_kind", l->adjusted_kind);
        cJSON_AddStringToObject(j, "description", l->description);
        add_str_or_null(j, "dimension", l->dimension);
        add_str_or_null(j, "model", l->model);
        add_str_or_null(j, "site_tier", l->site_tier);
        cJSON_AddNumberToObject(j, "card_version", (double)l->card_version);
        cJSON_AddNumberToObject(j, "band", l->band);
        if (l->dimension[0]) {
            api__add_i128(j, "quantity", l->qty);
            cJSON_AddStringToObject(j, "unit", strcmp(l->dimension, "gpu") ? "token" : "gpu_us");
            char up[48];
            gm_dec_format(l->unit_price_p, 12, up, sizeof up);
            cJSON_AddStringToObject(j, "unit_price", up);
        }
        api__add_e18(j, "amount_exact", l->amount_e18);
        api__add_minor(j, "amount", l->amount_minor, inv->minor_units);
        api__add_minor(j, "discount_share", l->discount_minor, inv->minor_units);
        api__add_minor(j, "credit_share", l->credit_minor, inv->minor_units);
        if (l->corrects_period_us) {
            char m[8];
            api__format_month(l->corrects_period_us, m);
            cJSON_AddStringToObject(j, "corrects_period", m);
        }
        cJSON_AddItemToArray(lines, j);
    }
    return o;
}

char *api__invoice_csv(const api_invoice *inv, size_t *len)
{
    api_buf b = {0};
    api__buf_str(&b, "invoice_id,number,tenant,period,status,currency,line_no,kind,description,"
                     "dimension,model,site_tier,card_version,band,quantity,unit_price,"
                     "amount_exact,amount,corrects_period\r\n");
    char month[8];
    api__format_month(inv->period_start_us, month);
    for (size_t i = 0; i <= inv->n_lines; i++) {
        const api_line *l = i < inv->n_lines ? &inv->lines[i] : NULL;
        char no[16] = "", ver[24] = "", band[16] = "", qty[48] = "", up[48] = "", ex[64] = "",
             am[64] = "", cp[8] = "";
        if (l) {
            snprintf(no, sizeof no, "%d", l->line_no);
            if (l->card_version)
                snprintf(ver, sizeof ver, "%lld", (long long)l->card_version);
            if (l->band)
                snprintf(band, sizeof band, "%d", l->band);
            if (l->dimension[0]) {
                gm_i128_format(l->qty, qty, sizeof qty);
                gm_dec_format(l->unit_price_p, 12, up, sizeof up);
            }
            gm_dec_format(l->amount_e18, 18, ex, sizeof ex);
            gm_rating_format_minor(l->amount_minor, inv->minor_units, am, sizeof am);
            if (l->corrects_period_us)
                api__format_month(l->corrects_period_us, cp);
        } else {
            gm_rating_format_minor(inv->total_minor, inv->minor_units, am, sizeof am);
        }
        const char *f[] = {inv->invoice_id,
                           inv->number,
                           inv->tenant,
                           month,
                           inv->status,
                           inv->currency,
                           no,
                           l ? l->kind : "total",
                           l ? l->description : "Invoice total",
                           l ? l->dimension : "",
                           l ? l->model : "",
                           l ? l->site_tier : "",
                           ver,
                           band,
                           qty,
                           up,
                           ex,
                           am,
                           cp};
        for (size_t k = 0; k < GM_ARRAY_LEN(f); k++) {
            if (k)
                api__buf_add(&b, ",", 1);
            api__buf_csv(&b, f[k]);
        }
        api__buf_add(&b, "\r\n", 2);
    }
    *len = b.len;
    return b.p;
}

int api__invoice_list(api_server *s, PGconn *db, const api_invoice_filter *f, api_invoice ***out,
                      size_t *n_out, char *next_cursor, size_t cursor_len, char *err,
                      size_t err_len)
{
    *out = NULL;
    *n_out = 0;
    next_cursor[0] = 0;
    char ps[40], cps[40], lim[16];
    if (f->has_period)
        api__time_param(f->period_start_us, ps);
    if (f->has_cursor)
        api__time_param(f->cursor_period_us, cps);
    snprintf(lim, sizeof lim, "%d", f->limit + 1);
    const char *p[6] = {f->has_period ? ps : NULL,
                        f->tenant,
                        f->status,
                        f->has_cursor ? cps : NULL,
                        f->has_cursor ? f->cursor_tenant : NULL,
                        lim};
    int rc;
    PGresult *r = qp(db,
                     "SELECT " INVOICE_COLS " FROM gm.invoices i"
                     " WHERE ($1::timestamptz IS NULL OR period_start = $1)"
                     " AND ($2::text IS NULL OR tenant = $2) AND ($3::text IS NULL OR status = $3)"
                     " AND ($4::timestamptz IS NULL OR period_start < $4"
                     "      OR (period_start = $4 AND tenant > $5))"
                     " ORDER BY period_start DESC, tenant LIMIT $6::int",
                     6, p, PGRES_TUPLES_OK, "invoice list", err, err_len, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    bool more = n > f->limit;
    if (more)
        n = f->limit;
    api_invoice **v = gm_xcalloc((size_t)n + 1, sizeof *v);
    for (int i = 0; i < n && !rc; i++) {
        v[i] = gm_xcalloc(1, sizeof **v);
        row_to_invoice(r, i, v[i]);
        if (!strcmp(v[i]->status, "draft")) {
            adjusted_period *adj = NULL;
            size_t n_adj = 0;
            rc = compute_live(s, db, v[i], &adj, &n_adj, err, err_len);
            free(adj);
        }
        *n_out = (size_t)i + 1;
    }
    PQclear(r);
    if (more && !rc)
        api__cursor_make(s, "inv", v[n - 1]->period_start_us, v[n - 1]->tenant, next_cursor,
                         cursor_len);
    *out = v;
    return rc;
}

int api__invoice_compute(api_server *s, PGconn *db, const char *tenant, int64_t period_start_us,
                         api_invoice **out, char *err, size_t err_len)
{
    api_invoice *inv = gm_xcalloc(1, sizeof *inv);
    snprintf(inv->tenant, sizeof inv->tenant, "%s", tenant);
    snprintf(inv->status, sizeof inv->status, "draft");
    inv->period_start_us = gm_month_start(period_start_us);
    inv->period_end_us = gm_month_next(period_start_us);
    adjusted_period *adj = NULL;
    size_t n_adj = 0;
    int rc = compute_live(s, db, inv, &adj, &n_adj, err, err_len);
    free(adj);
    if (rc) {
        api__invoice_free(inv);
        return rc;
    }
    *out = inv;
    return 0;
}
