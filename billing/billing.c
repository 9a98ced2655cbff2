/* Billing core: drafts computed from the rolled-up charges through the rating engine, late-event
 * and backfill adjustments, the draft rows (with commitments of active contracts), reading and
 * listing invoices, and finalization (one REPEATABLE READ transaction at the caller's instant).
 *
 * DESIGN. A draft is never stored with lines: every read sums the tenant's charges of the month
 * per (model, site, card version) from gm.charges_daily and feeds the sums into a
 * gm_rating_period priced by the book in ctx, so a draft is always current with the ledger and
 * with the book (a backdated card version shows at once). A group whose hours span a change of
 * the tenant's card version in the book is priced hour by hour from gm.charges. With a cache in
 * ctx, a computed draft is kept under the tenant's change marker (gm.period_changes, moved by
 * triggers on charges, invoices and re-rating corrections) and the book generation.
 *
 * Late events, backfills and re-rating: a finalized period Q is billed by its own lines plus
 * the adjustment lines of later finalized invoices that name Q. A month that has charges but
 * no finalized invoice while a later month is finalized (a backfill) is billed by adjustment
 * lines only. When Q's charges differ from its latest snapshot, when it has never been
 * snapshotted (a backfill), or when a re-rating correction of Q is newer than the snapshot,
 * the next draft after Q recomputes Q and adds one adjustment line per line key whose
 * quantity or amount changed, naming Q; finalizing that draft snapshots Q again (with the
 * corrections it billed), so each correction is billed once.
 *
 * Invariants (checked by gm_billing_invoice_check and gm_billing_check, check.c):
 *   B1 total = sum of the lines' rounded amounts;
 *   B2 a usage/tier/allowance line's amount is its exact amount rounded half to even (rating I3);
 *   B3 every adjustment line names a period before the invoice's own;
 *   B4 a tenant's months are finalized in period order (numbers rise with the period);
 *   B5 the credit balance an invoice starts from is what the previous finalized one left;
 *   B6 a finalized period whose snapshot matches its charges is billed exactly: the usage and
 *      tier quantities of its own and adjustment lines add up to its charges per dimension;
 *   B7 credit notes never exceed the total; a void invoice is fully credited;
 *   B8 line numbers run 1..n;
 *   B9 every snapshot belongs to a finalized or void invoice of the same tenant;
 *   B10 every draft computes (its book prices all its usage) and passes B1-B3, B8;
 *   B11 the daily rollup that drafts read equals the hourly charges, row for row. */
#include "billing_int.h"
#include "gm_ident.h"

#include <stdlib.h>
#include <string.h>

/* ---- Helpers ------------------------------------------------------------------------------ */
static void rd_bad(billing__rd *rd, const PGresult *r, int row, int col, const char *rule)
{
    if (rd->bad)
        return;
    rd->bad = true;
    snprintf(rd->why, sizeof rd->why, "column %s of row %d is %.40s'%.60s': not %s",
             PQfname(r, col) ? PQfname(r, col) : "?", row, PQgetisnull(r, row, col) ? "NULL " : "",
             PQgetvalue(r, row, col), rule);
}

int64_t billing__i64(billing__rd *rd, const PGresult *r, int row, int col)
{
    int64_t v = 0;
    const char *s = PQgetvalue(r, row, col);
    if (PQgetisnull(r, row, col) || gm_parse_i64(s, strlen(s), &v)) {
        rd_bad(rd, r, row, col, "an int64");
        return 0;
    }
    return v;
}

gm_i128 billing__int(billing__rd *rd, const PGresult *r, int row, int col)
{
    gm_i128 v = 0;
    if (PQgetisnull(r, row, col))
        return 0;
    const char *s = PQgetvalue(r, row, col);
    if (gm_dec_parse(s, strlen(s), 0, &v, NULL, 0)) {
        rd_bad(rd, r, row, col, "an integer");
        return 0;
    }
    return v;
}

gm_i128 billing__e18(billing__rd *rd, const PGresult *r, int row, int col)
{
    gm_i128 v = 0;
    if (PQgetisnull(r, row, col))
        return 0;
    const char *s = PQgetvalue(r, row, col);
    if (gm_dec_parse(s, strlen(s), 18, &v, NULL, 0)) {
        rd_bad(rd, r, row, col, "a decimal with at most 18 fraction digits");
        return 0;
    }
    return v;
}

int64_t billing__price(billing__rd *rd, const PGresult *r, int row, int col)
{
    gm_i128 v = 0;
    if (PQgetisnull(r, row, col))
        return 0;
    const char *s = PQgetvalue(r, row, col);
    if (gm_dec_parse(s, strlen(s), 12, &v, NULL, 0) || v > INT64_MAX || v < INT64_MIN) {
        rd_bad(rd, r, row, col, "a price with at most 12 fraction digits");
        return 0;
    }
    return (int64_t)v;
}

int billing__rd_fail(const billing__rd *rd, const char *what, char *err, size_t err_len)
{
    if (!rd->bad)
        return 0;
    return gm_fail(err, err_len, GM_ECORRUPT, "%s: %s", what, rd->why);
}

int billing__dbfail(PGconn *db, const PGresult *r, const char *what, char *err, size_t err_len)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int rc = gm_pg_fail(db, r, what, err, err_len);
    if (st && (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55000") ||
               !strcmp(st, "42501")))
        return GM_ECONFLICT;
    if (st && !strcmp(st, "23514"))
        return GM_EINVAL;
    return rc;
}

PGresult *billing__q(PGconn *db, const char *sql, int n, const char *const *params, int want,
                     const char *what, char *err, size_t err_len, int *rc)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != (ExecStatusType)want) {
        *rc = billing__dbfail(db, r, what, err, err_len);
        PQclear(r);
        return NULL;
    }
    *rc = 0;
    return r;
}

int billing__exec(PGconn *db, const char *sql, int n, const char *const *p, const char *what,
                  char *err, size_t err_len)
{
    int rc;
    PGresult *r = billing__q(db, sql, n, p, PGRES_COMMAND_OK, what, err, err_len, &rc);
    PQclear(r);
    return rc;
}

void billing__time(int64_t us, char buf[40])
{
    gm_time_format(us, buf, 40);
}

bool gm_billing_parse_month(const char *s, int64_t *start_us)
{
    if (!s || strlen(s) != 7 || s[4] != '-')
        return false;
    uint64_t y, m;
    if (gm_parse_u64(s, 4, 9999, &y) || y < 1970 || s[5] < '0' || s[5] > '1' ||
        gm_parse_u64(s + 5 + (s[5] == '0'), s[5] == '0' ? 1 : 2, 12, &m) || m < 1)
        return false;
    *start_us = gm_days_from_civil((int64_t)y, (unsigned)m, 1) * GM_US_PER_DAY;
    return true;
}

void gm_billing_format_month(int64_t us, char out[8])
{
    int64_t y;
    unsigned m, d;
    gm_civil_from_days(us / GM_US_PER_DAY, &y, &m, &d);
    snprintf(out, 8, "%04d-%02u", (int)y, m);
}

bool gm_billing_valid_tenant(const char *t)
{
    return gm_ident_valid(GM_IDENT_TENANT, t); /* the one rule: common/gm_ident.h */
}

bool gm_billing_valid_invoice_id(const char *s)
{
    size_t n = strlen(s);
    if (n != 36 || strncmp(s, "inv_", 4))
        return false;
    for (size_t i = 4; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return false;
    return true;
}

/* ---- The invoice model -------------------------------------------------------------------- */
void gm_billing_invoice_free(gm_billing_invoice *inv)
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

gm_billing_line *billing__line_push(gm_billing_invoice *inv, size_t *cap)
{
    if (inv->n_lines == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        inv->lines = gm_xrealloc(inv->lines, *cap * sizeof *inv->lines);
    }
    gm_billing_line *l = &inv->lines[inv->n_lines++];
    memset(l, 0, sizeof *l);
    return l;
}

static void line_from_rating(gm_billing_line *l, const gm_invoice_line *g)
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
    snprintf(l->variant, sizeof l->variant, "%s", g->variant ? g->variant : "");
    if (g->dim == GM_DIM_GPU)
        snprintf(l->gpu_basis, sizeof l->gpu_basis, "%s",
                 gm_gpu_basis_name(g->flags & GM_PRICE_F_GPU_WINDOWS ? GM_GPU_BASIS_WINDOWS
                                                                     : GM_GPU_BASIS_REQUESTS));
}

gm_billing_invoice *gm_billing_from_rating(const gm_invoice *g)
{
    gm_billing_invoice *inv = gm_xcalloc(1, sizeof *inv);
    snprintf(inv->tenant, sizeof inv->tenant, "%s", g->tenant ? g->tenant : "");
    snprintf(inv->status, sizeof inv->status, "draft");
    inv->period_start_us = g->period_start_us;
    inv->period_end_us = g->period_end_us;
    snprintf(inv->currency, sizeof inv->currency, "%s", g->currency);
    inv->minor_units = g->minor_units;
    inv->usage_exact_e18 = g->exact_usage_e18;
    inv->credit_after_minor = g->credit_balance_after_minor;
    size_t cap = 0;
    for (size_t i = 0; i < g->n_lines; i++)
        line_from_rating(billing__line_push(inv, &cap), &g->lines[i]);
    inv->total_minor = g->total_minor;
    inv->live = true;
    return inv;
}

const char *gm_billing_line_unit(const gm_billing_line *l)
{
    if (!l->dimension[0])
        return NULL;
    return !strcmp(l->dimension, "gpu")       ? "gpu_second"
           : !strcmp(l->dimension, "request") ? "request"
                                              : "token";
}

void gm_billing_line_quantity(const gm_billing_line *l, char *buf, size_t len)
{
    if (!l->dimension[0])
        snprintf(buf, len, "%s", "");
    else if (!strcmp(l->dimension, "gpu"))
        gm_dec_format(l->qty, 6, buf, len); /* GPU-microseconds as GPU-seconds, exactly */
    else
        gm_i128_format(l->qty, buf, len);
}

/* ---- Charges -> rating period ----------------------------------------------------------- */
int gm_billing_fingerprint(PGconn *db, const char *tenant, int64_t start_us, int64_t end_us,
                           gm_i128 *events, gm_i128 *amount_e18, char *err, size_t err_len)
{
    char a[40], b[40];
    billing__time(start_us, a);
    billing__time(end_us, b);
    const char *p[3] = {tenant, a, b};
    int rc;
    PGresult *r = billing__q(db,
                             "SELECT coalesce(sum(events), 0), coalesce(sum(amount), 0)"
                             " FROM gm.charges_daily WHERE tenant = $1 AND day >= $2 AND day < $3",
                             3, p, PGRES_TUPLES_OK, "period fingerprint", err, err_len, &rc);
    if (!r)
        return rc;
    billing__rd rd = {0};
    *events = billing__int(&rd, r, 0, 0);
    *amount_e18 = billing__e18(&rd, r, 0, 1);
    PQclear(r);
    return billing__rd_fail(&rd, "period fingerprint", err, err_len);
}

#define DIM_SUMS                                                                                   \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'input'), 0),"                              \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'cached'), 0),"                             \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'output'), 0),"                             \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'gpu'), 0),"                                \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'cache_write'), 0),"                        \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'reasoning'), 0),"                          \
    " coalesce(sum(quantity) FILTER (WHERE dimension = 'request'), 0)" /* gm_dim order */

/* The hours of one (model, site, card, variant) group, each priced at its own hour. */
static int add_hours(const gm_billing_ctx *ctx, gm_rating_period *per, const char *tenant,
                     const char *a, const char *b, const PGresult *g, int row, char *err,
                     size_t err_len)
{
    const char *p[8] = {tenant,
                        a,
                        b,
                        PQgetvalue(g, row, 0),
                        PQgetvalue(g, row, 1),
                        PQgetvalue(g, row, 2),
                        PQgetvalue(g, row, 3),
                        PQgetvalue(g, row, 4)};
    int rc;
    PGresult *r = billing__q(
        ctx->db,
        "SELECT " BILLING_US(
            "hour") "," DIM_SUMS " FROM gm.charges WHERE tenant = $1 AND hour >= $2 AND hour < $3"
                    " AND model = $4 AND site = $5 AND card_id = $6"
                    " AND card_version = $7::int AND variant = $8 GROUP BY hour ORDER BY hour",
        8, p, PGRES_TUPLES_OK, "hourly charges", err, err_len, &rc);
    if (!r)
        return rc;
    billing__rd rd = {0};
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        gm_usage_sum s = {PQgetvalue(g, row, 0),
                          PQgetvalue(g, row, 1),
                          billing__i64(&rd, r, i, 0),
                          {0},
                          PQgetvalue(g, row, 4)};
        for (int d = 0; d < GM_DIM_COUNT; d++)
            s.qty[d] = billing__int(&rd, r, i, 1 + d);
        if (!(rc = billing__rd_fail(&rd, "hourly charges", err, err_len)))
            rc = gm_rating_period_add_sum(per, &s, err, err_len);
    }
    PQclear(r);
    return rc;
}

static int rate_period(const gm_billing_ctx *ctx, const char *tenant, int64_t start_us,
                       const gm_invoice_opts *opts, gm_invoice **out, char *err, size_t err_len)
{
    char a[40], b[40];
    billing__time(start_us, a);
    billing__time(gm_month_next(start_us), b);
    const char *p[3] = {tenant, a, b};
    int rc;
    PGresult *r = billing__q(
        ctx->db,
        "SELECT model, site, card_id, card_version, variant, " BILLING_US(
            "min(first_hour)") ", " BILLING_US("max(last_hour)") "," DIM_SUMS
                                                                 " FROM gm.charges_daily WHERE"
                                                                 " tenant = $1 AND day >= $2 AND"
                                                                 " day < $3 GROUP BY model, site,"
                                                                 " card_id, card_version, variant"
                                                                 " ORDER BY 1, 2, 3, 4, 5",
        3, p, PGRES_TUPLES_OK, "invoice usage", err, err_len, &rc);
    if (!r)
        return rc;
    gm_rating_period *per = gm_rating_period_new(ctx->book, tenant, start_us);
    billing__rd rd = {0};
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        int64_t first = billing__i64(&rd, r, i, 5), last = billing__i64(&rd, r, i, 6);
        /* the variant's prices, as the rater priced it (gm_rating_price_charge) */
        gm_usage_sum s = {
            PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), first, {0}, PQgetvalue(r, i, 4)};
        for (int d = 0; d < GM_DIM_COUNT; d++)
            s.qty[d] = billing__int(&rd, r, i, 7 + d);
        if ((rc = billing__rd_fail(&rd, "invoice usage", err, err_len)))
            break;
        /* One version prices the whole group only when the book changes nothing between its
         * first and last hour; otherwise (a backdated version inside the month) hour by hour. */
        if (gm_rating_book_next_change_us(ctx->book, tenant, first) > last)
            rc = gm_rating_period_add_sum(per, &s, err, err_len);
        else
            rc = add_hours(ctx, per, tenant, a, b, r, i, err, err_len);
    }
    PQclear(r);
    if (!rc)
        rc = gm_rating_period_invoice(per, opts, out, err, err_len);
    gm_rating_period_free(per);
    return rc;
}

/* A month inside a total-over-term commitment counts the spend of the term's earlier months:
 * each recomputed from its charges now (usage + allowance + discount, docs/rating.md "Total over
 * a term"), so a re-issued or adjusted true-up follows the then-current spend. The caller's
 * has_term_spent, when set, wins (nothing is recomputed). */
int billing__rate_period(const gm_billing_ctx *ctx, const char *tenant, int64_t start_us,
                         const gm_invoice_opts *opts, gm_invoice **out, char *err, size_t err_len)
{
    gm_invoice_opts o = {0};
    if (opts)
        o = *opts;
    int64_t first = 0, last = 0;
    const gm_rating_contract *k = gm_rating_book_contract_at(ctx->book, tenant, start_us);
    if (!o.has_term_spent && gm_rating_contract_term_months(k, &first, &last) &&
        start_us >= first && start_us <= last) {
        gm_i128 spent = 0;
        for (int64_t m = first; m < start_us; m = gm_month_next(m)) {
            gm_invoice_opts mo = {.has_credit_balance = true, .has_term_spent = true};
            gm_invoice *g = NULL;
            int rc = rate_period(ctx, tenant, m, &mo, &g, err, err_len);
            if (rc)
                return rc;
            /* the month's spend, priced by the contract version in force in it */
            spent += g->usage_minor + g->allowance_minor + g->discount_minor;
            gm_invoice_free(g);
        }
        o.has_term_spent = true;
        o.term_spent_before_minor = spent;
    }
    return rate_period(ctx, tenant, start_us, &o, out, err, err_len);
}

/* ---- Adjustments ------------------------------------------------------------------------- */
static bool same_key(const char *k1, const char *d1, const char *m1, const char *t1, int64_t v1,
                     int b1, const char *var1, const gm_billing_line *l)
{
    const char *lk = l->adjusted_kind[0] ? l->adjusted_kind : l->kind;
    return !strcmp(k1, lk) && !strcmp(d1, l->dimension) && !strcmp(m1, l->model) &&
           !strcmp(t1, l->site_tier) && v1 == l->card_version && b1 == l->band &&
           !strcmp(var1, l->variant);
}

PGresult *billing__billed_lines(PGconn *db, const char *tenant, const char *qid, int64_t q_us,
                                char *err, size_t err_len, int *rc)
{
    char qs[40];
    billing__time(q_us, qs);
    const char *bp[3] = {tenant, qid, qs};
    return billing__q(
        db,
        "SELECT coalesce(l.adjusted_kind, l.kind), coalesce(l.dimension, ''),"
        " coalesce(l.model, ''), coalesce(l.site_tier, ''), coalesce(l.card_version, 0),"
        " coalesce(l.band, 0), coalesce(sum(l.quantity), 0), sum(l.amount_exact),"
        " sum(l.amount_minor), max(l.unit_price), coalesce(max(l.gpu_basis), ''), l.variant"
        " FROM gm.invoice_lines l JOIN gm.invoices i USING (invoice_id)"
        " WHERE i.tenant = $1 AND i.status <> 'draft'"
        " AND ((l.invoice_id = $2 AND l.kind <> 'adjustment') OR l.corrects_period = $3)"
        " GROUP BY 1, 2, 3, 4, 5, 6, 12 ORDER BY 1, 2, 3, 4, 5, 6, 12",
        3, bp, PGRES_TUPLES_OK, "billed lines", err, err_len, rc);
}

/* Adjustment lines of one period q: its recomputation against what was billed for it. */
static int adjust_period(const gm_billing_ctx *ctx, gm_billing_invoice *inv, size_t *cap,
                         const char *qid, int64_t qstart, const gm_invoice_opts *o, char *err,
                         size_t err_len)
{
    gm_invoice *now = NULL;
    int rc = billing__rate_period(ctx, inv->tenant, qstart, o, &now, err, err_len);
    if (rc)
        return rc;
    PGresult *billed = billing__billed_lines(ctx->db, inv->tenant, qid, qstart, err, err_len, &rc);
    if (!billed) {
        gm_invoice_free(now);
        return rc;
    }
    int nb = PQntuples(billed);
    bool *matched = gm_xcalloc((size_t)nb + 1, sizeof *matched);
    char month[8];
    gm_billing_format_month(qstart, month);
    billing__rd rd = {0};
    for (size_t k = 0; k < now->n_lines; k++) {
        gm_billing_line cur;
        memset(&cur, 0, sizeof cur);
        line_from_rating(&cur, &now->lines[k]);
        gm_i128 bq = 0, be = 0, bm = 0;
        for (int j = 0; j < nb; j++)
            if (!matched[j] &&
                same_key(PQgetvalue(billed, j, 0), PQgetvalue(billed, j, 1),
                         PQgetvalue(billed, j, 2), PQgetvalue(billed, j, 3),
                         billing__i64(&rd, billed, j, 4), (int)billing__i64(&rd, billed, j, 5),
                         PQgetvalue(billed, j, 11), &cur)) {
                matched[j] = true;
                bq = billing__int(&rd, billed, j, 6);
                be = billing__e18(&rd, billed, j, 7);
                bm = billing__int(&rd, billed, j, 8);
                break;
            }
        if (cur.qty != bq || cur.amount_e18 != be || cur.amount_minor != bm) {
            gm_billing_line *l = billing__line_push(inv, cap);
            *l = cur;
            snprintf(l->adjusted_kind, sizeof l->adjusted_kind, "%s", cur.kind);
            snprintf(l->kind, sizeof l->kind, "adjustment");
            snprintf(l->description, sizeof l->description, "Adjustment for %s: %.150s", month,
                     cur.description);
            gm_utf8_trim_partial(l->description);
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
        gm_i128 bq = billing__int(&rd, billed, j, 6), be = billing__e18(&rd, billed, j, 7),
                bm = billing__int(&rd, billed, j, 8);
        if (!bq && !be && !bm)
            continue;
        gm_billing_line *l = billing__line_push(inv, cap);
        snprintf(l->kind, sizeof l->kind, "adjustment");
        snprintf(l->adjusted_kind, sizeof l->adjusted_kind, "%s", PQgetvalue(billed, j, 0));
        snprintf(l->dimension, sizeof l->dimension, "%s", PQgetvalue(billed, j, 1));
        l->model = gm_xstrdup(PQgetvalue(billed, j, 2));
        l->site_tier = gm_xstrdup(PQgetvalue(billed, j, 3));
        l->card_version = billing__i64(&rd, billed, j, 4);
        l->band = (int)billing__i64(&rd, billed, j, 5);
        snprintf(l->description, sizeof l->description,
                 "Adjustment for %s: %s %s %.100s no longer billed", month, l->adjusted_kind,
                 l->dimension, l->model);
        gm_utf8_trim_partial(l->description);
        l->unit_price_p = billing__price(&rd, billed, j, 9);
        snprintf(l->gpu_basis, sizeof l->gpu_basis, "%s", PQgetvalue(billed, j, 10));
        snprintf(l->variant, sizeof l->variant, "%s", PQgetvalue(billed, j, 11));
        l->qty = -bq;
        l->amount_e18 = -be;
        l->amount_minor = -bm;
        l->corrects_period_us = qstart;
    }
    free(matched);
    PQclear(billed);
    gm_invoice_free(now);
    return billing__rd_fail(&rd, "billed lines", err, err_len);
}

/* Adjustment lines for the periods before `inv` that need them (see DESIGN). */
static int add_adjustments(const gm_billing_ctx *ctx, gm_billing_invoice *inv, size_t *cap,
                           billing__period **adj, size_t *n_adj, char *err, size_t err_len)
{
    char ps[40];
    billing__time(inv->period_start_us, ps);
    const char *p[2] = {inv->tenant, ps};
    int rc;
    PGresult *qs = billing__q(
        ctx->db,
        "WITH q AS ("
        "  SELECT i.invoice_id, i.period_start, i.credit_balance_before_minor AS cb"
        "  FROM gm.invoices i WHERE i.tenant = $1 AND i.status = 'finalized'"
        "  AND i.period_start < $2"
        "  AND NOT EXISTS (SELECT 1 FROM gm.invoices d WHERE d.tenant = $1 AND d.status = 'draft'"
        "      AND d.period_start > i.period_start AND d.period_start < $2)"
        "  UNION ALL"
        "  SELECT NULL, m.period_start, 0 FROM gm.period_changes m"
        "  WHERE m.tenant = $1 AND m.period_start < $2"
        "  AND NOT EXISTS (SELECT 1 FROM gm.invoices f WHERE f.tenant = $1"
        "      AND f.period_start = m.period_start AND f.status <> 'draft')"
        "  AND EXISTS (SELECT 1 FROM gm.invoices f WHERE f.tenant = $1 AND f.status <> 'draft'"
        "      AND f.period_start > m.period_start AND f.period_start < $2)"
        "  AND NOT EXISTS (SELECT 1 FROM gm.invoices d WHERE d.tenant = $1 AND d.status = 'draft'"
        "      AND d.period_start > m.period_start AND d.period_start < $2))"
        " SELECT q.invoice_id, " BILLING_US(
            "q.period_start") ", q.cb,"
                              "  (SELECT s.events FROM gm.period_snapshots s WHERE s.tenant = $1"
                              "    AND s.period_start = q.period_start ORDER BY s.taken_at DESC "
                              "LIMIT 1),"
                              "  (SELECT s.amount FROM gm.period_snapshots s WHERE s.tenant = $1"
                              "    AND s.period_start = q.period_start ORDER BY s.taken_at DESC "
                              "LIMIT 1),"
                              "  (SELECT max(s.rerating_seq) FROM gm.period_snapshots s WHERE "
                              "s.tenant = $1"
                              "    AND s.period_start = q.period_start),"
                              "  (SELECT coalesce(max(c.correction_id), 0) FROM "
                              "gm.rerating_corrections c"
                              "    WHERE c.tenant = $1 AND c.period_start = q.period_start),"
                              "  (SELECT coalesce(sum(events), 0) FROM gm.charges_daily c WHERE "
                              "c.tenant = $1"
                              "    AND c.day >= q.period_start AND c.day < q.period_start + "
                              "interval '1 month'),"
                              "  (SELECT coalesce(sum(amount), 0) FROM gm.charges_daily c WHERE "
                              "c.tenant = $1"
                              "    AND c.day >= q.period_start AND c.day < q.period_start + "
                              "interval '1 month')"
                              " FROM q ORDER BY q.period_start",
        2, p, PGRES_TUPLES_OK, "adjustable periods", err, err_len, &rc);
    if (!qs)
        return rc;
    billing__rd rd = {0};
    /* Under a total over a term whose last month is billed already, a correction of an earlier
     * month of the term moves the spend, so the last month is recomputed too: its true-up
     * follows (an adjustment line of kind commitment). The term is that of the contract
     * version in force in the corrected month. */
    int64_t term_moved_last = INT64_MIN;
    for (int i = 0; i < PQntuples(qs) && !rc; i++) {
        bool backfill = PQgetisnull(qs, i, 0);
        int64_t qstart = billing__i64(&rd, qs, i, 1);
        bool has_snap = !PQgetisnull(qs, i, 3);
        gm_i128 sev = billing__int(&rd, qs, i, 3), samt = billing__e18(&rd, qs, i, 4);
        int64_t sseq = PQgetisnull(qs, i, 5) ? 0 : billing__i64(&rd, qs, i, 5);
        int64_t cseq = billing__i64(&rd, qs, i, 6);
        gm_i128 ev = billing__int(&rd, qs, i, 7), amt = billing__e18(&rd, qs, i, 8);
        if ((rc = billing__rd_fail(&rd, "adjustable periods", err, err_len)))
            break;
        if (backfill && !has_snap && ev == 0 && cseq == 0)
            continue; /* a month with an invoice row change only: nothing to bill */
        int64_t t_first = 0, t_last = 0;
        bool in_term =
            gm_rating_contract_term_months(
                gm_rating_book_contract_at(ctx->book, inv->tenant, qstart), &t_first, &t_last) &&
            qstart >= t_first && qstart < t_last;
        if (has_snap && sev == ev && samt == amt && sseq >= cseq && qstart != term_moved_last)
            continue;
        if (in_term)
            term_moved_last = t_last;
        *adj = gm_xrealloc(*adj, (*n_adj + 1) * sizeof **adj);
        (*adj)[(*n_adj)++] = (billing__period){qstart, ev, amt, cseq};
        gm_invoice_opts o = {0};
        if (backfill) {
            /* Prepaid credit was carried past this month already: it draws none. */
            o.has_credit_balance = true;
            o.credit_balance_minor = 0;
        } else if (!PQgetisnull(qs, i, 2)) {
            o.has_credit_balance = true;
            o.credit_balance_minor = billing__int(&rd, qs, i, 2);
        }
        rc = adjust_period(ctx, inv, cap, backfill ? NULL : PQgetvalue(qs, i, 0), qstart, &o, err,
                           err_len);
    }
    PQclear(qs);
    return rc ? rc : billing__rd_fail(&rd, "adjustable periods", err, err_len);
}

int billing__compute_live(const gm_billing_ctx *ctx, gm_billing_invoice *inv, billing__period **adj,
                          size_t *n_adj, char *err, size_t err_len)
{
    char ps[40];
    billing__time(inv->period_start_us, ps);
    const char *p[2] = {inv->tenant, ps};
    int rc;
    gm_invoice_opts o = {0};
    PGresult *r = billing__q(ctx->db,
                             "SELECT credit_balance_after_minor FROM gm.invoices WHERE tenant = $1"
                             " AND status <> 'draft' AND period_start < $2"
                             " AND credit_balance_after_minor IS NOT NULL"
                             " ORDER BY period_start DESC LIMIT 1",
                             2, p, PGRES_TUPLES_OK, "credit balance", err, err_len, &rc);
    if (!r)
        return rc;
    billing__rd rd = {0};
    if (PQntuples(r) == 1) {
        o.has_credit_balance = true;
        o.credit_balance_minor = billing__int(&rd, r, 0, 0);
    }
    PQclear(r);
    if ((rc = billing__rd_fail(&rd, "credit balance", err, err_len)))
        return rc;
    inv->has_credit_before = o.has_credit_balance;
    inv->credit_before_minor = o.credit_balance_minor;
    gm_invoice *g = NULL;
    rc = billing__rate_period(ctx, inv->tenant, inv->period_start_us, &o, &g, err, err_len);
    size_t cap = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        free(inv->lines[i].model);
        free(inv->lines[i].site_tier);
    }
    inv->n_lines = 0;
    if (!rc) {
        snprintf(inv->currency, sizeof inv->currency, "%s", g->currency);
        inv->minor_units = g->minor_units;
        inv->usage_exact_e18 = g->exact_usage_e18;
        inv->credit_after_minor = g->credit_balance_after_minor;
        inv->has_term = g->has_term;
        inv->term_last_month = g->term_last_month;
        inv->term_total_minor = g->term_total_minor;
        inv->term_spent_minor = g->term_spent_minor;
        inv->term_remaining_minor = g->term_remaining_minor;
        free(inv->lines);
        inv->lines = NULL;
        for (size_t i = 0; i < g->n_lines; i++)
            line_from_rating(billing__line_push(inv, &cap), &g->lines[i]);
        gm_invoice_free(g);
        rc = add_adjustments(ctx, inv, &cap, adj, n_adj, err, err_len);
    }
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

/* ---- Rows ------------------------------------------------------------------------------------ */
const char billing__invoice_cols[] =
    "invoice_id, tenant, issuer, " BILLING_US("period_start") ", " BILLING_US(
        "period_end") ", status, coalesce(number, ''), "
                      "coalesce(currency, ''),"
                      " coalesce(minor_units, 0), "
                      "coalesce(total_minor, 0),"
                      " coalesce(usage_exact, 0), "
                      "credit_balance_before_minor,"
                      " coalesce(credit_balance_after_minor, "
                      "0), " BILLING_US("finalized_at") ", " BILLING_US(
                          "voided_at") ", " BILLING_US("created_at") ","
                                                                     " "
                                                                     "c"
                                                                     "o"
                                                                     "a"
                                                                     "l"
                                                                     "e"
                                                                     "s"
                                                                     "c"
                                                                     "e"
                                                                     "("
                                                                     "l"
                                                                     "e"
                                                                     "d"
                                                                     "g"
                                                                     "e"
                                                                     "r"
                                                                     "_"
                                                                     "e"
                                                                     "v"
                                                                     "e"
                                                                     "n"
                                                                     "t"
                                                                     "s"
                                                                     ","
                                                                     " "
                                                                     "0"
                                                                     ")"
                                                                     ","
                                                                     " "
                                                                     "c"
                                                                     "o"
                                                                     "a"
                                                                     "l"
                                                                     "e"
                                                                     "s"
                                                                     "c"
                                                                     "e"
                                                                     "("
                                                                     "l"
                                                                     "e"
                                                                     "d"
                                                                     "g"
                                                                     "e"
                                                                     "r"
                                                                     "_"
                                                                     "a"
                                                                     "m"
                                                                     "o"
                                                                     "u"
                                                                     "n"
                                                                     "t"
                                                                     ","
                                                                     " "
                                                                     "0"
                                                                     ")"
                                                                     ","
                                                                     " "
                                                                     "("
                                                                     "S"
                                                                     "E"
                                                                     "L"
                                                                     "E"
                                                                     "C"
                                                                     "T"
                                                                     " "
                                                                     "c"
                                                                     "o"
                                                                     "a"
                                                                     "l"
                                                                     "e"
                                                                     "s"
                                                                     "c"
                                                                     "e"
                                                                     "("
                                                                     "s"
                                                                     "u"
                                                                     "m"
                                                                     "("
                                                                     "a"
                                                                     "m"
                                                                     "o"
                                                                     "u"
                                                                     "n"
                                                                     "t"
                                                                     "_"
                                                                     "m"
                                                                     "i"
                                                                     "n"
                                                                     "o"
                                                                     "r"
                                                                     ")"
                                                                     ","
                                                                     " "
                                                                     "0"
                                                                     ")"
                                                                     " "
                                                                     "F"
                                                                     "R"
                                                                     "O"
                                                                     "M"
                                                                     " "
                                                                     "g"
                                                                     "m"
                                                                     "."
                                                                     "c"
                                                                     "r"
                                                                     "e"
                                                                     "d"
                                                                     "i"
                                                                     "t"
                                                                     "_"
                                                                     "n"
                                                                     "o"
                                                                     "t"
                                                                     "e"
                                                                     "s"
                                                                     " "
                                                                     "c"
                                                                     "n"
                                                                     " "
                                                                     " "
                                                                     "W"
                                                                     "H"
                                                                     "E"
                                                                     "R"
                                                                     "E"
                                                                     " "
                                                                     "c"
                                                                     "n"
                                                                     "."
                                                                     "i"
                                                                     "n"
                                                                     "v"
                                                                     "o"
                                                                     "i"
                                                                     "c"
                                                                     "e"
                                                                     "_"
                                                                     "i"
                                                                     "d"
                                                                     " "
                                                                     "="
                                                                     " "
                                                                     "i"
                                                                     "."
                                                                     "i"
                                                                     "n"
                                                                     "v"
                                                                     "o"
                                                                     "i"
                                                                     "c"
                                                                     "e"
                                                                     "_"
                                                                     "i"
                                                                     "d"
                                                                     ")";

int billing__row_to_invoice(const PGresult *r, int i, gm_billing_invoice *inv, char *err,
                            size_t err_len)
{
    billing__rd rd = {0};
    snprintf(inv->invoice_id, sizeof inv->invoice_id, "%s", PQgetvalue(r, i, 0));
    snprintf(inv->tenant, sizeof inv->tenant, "%s", PQgetvalue(r, i, 1));
    snprintf(inv->issuer, sizeof inv->issuer, "%s", PQgetvalue(r, i, 2));
    inv->period_start_us = billing__i64(&rd, r, i, 3);
    inv->period_end_us = billing__i64(&rd, r, i, 4);
    snprintf(inv->status, sizeof inv->status, "%s", PQgetvalue(r, i, 5));
    snprintf(inv->number, sizeof inv->number, "%s", PQgetvalue(r, i, 6));
    snprintf(inv->currency, sizeof inv->currency, "%s", PQgetvalue(r, i, 7));
    inv->minor_units = (int)billing__i64(&rd, r, i, 8);
    inv->total_minor = billing__int(&rd, r, i, 9);
    inv->usage_exact_e18 = billing__e18(&rd, r, i, 10);
    inv->has_credit_before = !PQgetisnull(r, i, 11);
    inv->credit_before_minor = billing__int(&rd, r, i, 11);
    inv->credit_after_minor = billing__int(&rd, r, i, 12);
    inv->finalized_at_us = billing__i64(&rd, r, i, 13);
    inv->voided_at_us = billing__i64(&rd, r, i, 14);
    inv->created_at_us = billing__i64(&rd, r, i, 15);
    inv->ledger_events = billing__int(&rd, r, i, 16);
    inv->ledger_amount_e18 = billing__e18(&rd, r, i, 17);
    inv->credited_minor = billing__int(&rd, r, i, 18);
    return billing__rd_fail(&rd, "invoice row", err, err_len);
}

int billing__load_lines(PGconn *db, gm_billing_invoice *inv, char *err, size_t err_len)
{
    const char *p[1] = {inv->invoice_id};
    int rc;
    PGresult *r = billing__q(db,
                             "SELECT line_no, kind, coalesce(adjusted_kind, ''), description,"
                             " coalesce(dimension, ''), coalesce(model, ''),"
                             " coalesce(site_tier, ''), coalesce(card_version, 0),"
                             " coalesce(band, 0), coalesce(quantity, 0), unit_price, amount_exact,"
                             " amount_minor, discount_minor, credit_minor, " BILLING_US(
                                 "corrects_period") ", coalesce(gpu_basis, ''), variant"
                                                    " FROM gm.invoice_lines"
                                                    " WHERE invoice_id = $1 ORDER BY line_no",
                             1, p, PGRES_TUPLES_OK, "invoice lines", err, err_len, &rc);
    if (!r)
        return rc;
    size_t cap = 0;
    billing__rd rd = {0};
    for (int i = 0; i < PQntuples(r); i++) {
        gm_billing_line *l = billing__line_push(inv, &cap);
        l->line_no = (int)billing__i64(&rd, r, i, 0);
        snprintf(l->kind, sizeof l->kind, "%s", PQgetvalue(r, i, 1));
        snprintf(l->adjusted_kind, sizeof l->adjusted_kind, "%s", PQgetvalue(r, i, 2));
        snprintf(l->description, sizeof l->description, "%s", PQgetvalue(r, i, 3));
        snprintf(l->dimension, sizeof l->dimension, "%s", PQgetvalue(r, i, 4));
        l->model = gm_xstrdup(PQgetvalue(r, i, 5));
        l->site_tier = gm_xstrdup(PQgetvalue(r, i, 6));
        l->card_version = billing__i64(&rd, r, i, 7);
        l->band = (int)billing__i64(&rd, r, i, 8);
        l->qty = billing__int(&rd, r, i, 9);
        l->unit_price_p = billing__price(&rd, r, i, 10);
        l->amount_e18 = billing__e18(&rd, r, i, 11);
        l->amount_minor = billing__int(&rd, r, i, 12);
        l->discount_minor = billing__int(&rd, r, i, 13);
        l->credit_minor = billing__int(&rd, r, i, 14);
        l->corrects_period_us = billing__i64(&rd, r, i, 15);
        snprintf(l->gpu_basis, sizeof l->gpu_basis, "%s", PQgetvalue(r, i, 16));
        snprintf(l->variant, sizeof l->variant, "%s", PQgetvalue(r, i, 17));
    }
    PQclear(r);
    return billing__rd_fail(&rd, "invoice lines", err, err_len);
}

int billing__load_row(PGconn *db, const char *invoice_id, bool lock, gm_billing_invoice **out,
                      char *err, size_t err_len)
{
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT %s FROM gm.invoices i WHERE invoice_id = $1%s",
             billing__invoice_cols, lock ? " FOR UPDATE" : "");
    const char *p[1] = {invoice_id};
    int rc;
    PGresult *r = billing__q(db, sql, 1, p, PGRES_TUPLES_OK, "invoice", err, err_len, &rc);
    if (!r)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not found", invoice_id);
    }
    gm_billing_invoice *inv = gm_xcalloc(1, sizeof *inv);
    rc = billing__row_to_invoice(r, 0, inv, err, err_len);
    PQclear(r);
    if (rc) {
        gm_billing_invoice_free(inv);
        return rc;
    }
    *out = inv;
    return 0;
}

/* The tenant's change marker for drafts of months up to `start`. */
static int marker_of(PGconn *db, const char *tenant, int64_t start_us, int64_t *marker, char *err,
                     size_t err_len)
{
    char ps[40];
    billing__time(start_us, ps);
    const char *p[2] = {tenant, ps};
    int rc;
    PGresult *r = billing__q(db,
                             "SELECT coalesce(max(seq), 0) FROM gm.period_changes"
                             " WHERE tenant = $1 AND period_start <= $2",
                             2, p, PGRES_TUPLES_OK, "change marker", err, err_len, &rc);
    if (!r)
        return rc;
    billing__rd rd = {0};
    *marker = billing__i64(&rd, r, 0, 0);
    PQclear(r);
    return billing__rd_fail(&rd, "change marker", err, err_len);
}

/* A draft computed in one snapshot (its own read-only transaction unless the caller is in
 * one), through the cache when ctx has one. */
static int compute_draft(const gm_billing_ctx *ctx, gm_billing_invoice *inv, char *err,
                         size_t err_len)
{
    bool own_tx = PQtransactionStatus(ctx->db) == PQTRANS_IDLE;
    int rc = 0;
    int64_t marker = 0;
    /* A hit needs no transaction: an entry is stored under the marker its computation saw. */
    if (own_tx && ctx->cache && inv->invoice_id[0]) {
        if ((rc = marker_of(ctx->db, inv->tenant, inv->period_start_us, &marker, err, err_len)))
            return rc;
        if (billing__cache_get(ctx->cache, inv->invoice_id, marker, ctx->book_generation, inv))
            return 0;
    }
    if (own_tx && (rc = gm_pg_begin(ctx->db, "ISOLATION LEVEL REPEATABLE READ READ ONLY",
                                    ctx->now_us, err, err_len)))
        return rc;
    bool cached = false;
    if (ctx->cache && inv->invoice_id[0]) {
        rc = marker_of(ctx->db, inv->tenant, inv->period_start_us, &marker, err, err_len);
        if (!rc)
            cached =
                billing__cache_get(ctx->cache, inv->invoice_id, marker, ctx->book_generation, inv);
    }
    if (!rc && !cached) {
        billing__period *adj = NULL;
        size_t n_adj = 0;
        rc = billing__compute_live(ctx, inv, &adj, &n_adj, err, err_len);
        free(adj);
        if (!rc && ctx->cache && inv->invoice_id[0])
            billing__cache_put(ctx->cache, inv->invoice_id, marker, ctx->book_generation, inv);
    }
    if (own_tx)
        PQclear(PQexec(ctx->db, rc ? "ROLLBACK" : "COMMIT"));
    return rc;
}

int gm_billing_invoice_get(const gm_billing_ctx *ctx, const char *invoice_id,
                           const char *visible_to, gm_billing_invoice **out, char *err,
                           size_t err_len)
{
    *out = NULL;
    if (!gm_billing_valid_invoice_id(invoice_id))
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not an invoice id", invoice_id);
    gm_billing_invoice *inv = NULL;
    int rc = billing__load_row(ctx->db, invoice_id, false, &inv, err, err_len);
    if (rc)
        return rc;
    /* Visibility first: another tenant's draft is never computed for a customer's probe. */
    if (visible_to && strcmp(inv->tenant, visible_to)) {
        gm_billing_invoice_free(inv);
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not found", invoice_id);
    }
    if (!strcmp(inv->status, "draft"))
        rc = compute_draft(ctx, inv, err, err_len);
    else
        rc = billing__load_lines(ctx->db, inv, err, err_len);
    if (rc) {
        gm_billing_invoice_free(inv);
        return rc;
    }
    *out = inv;
    return 0;
}

int gm_billing_compute(const gm_billing_ctx *ctx, const char *tenant, int64_t month_us,
                       gm_billing_invoice **out, char *err, size_t err_len)
{
    gm_billing_invoice *inv = gm_xcalloc(1, sizeof *inv);
    snprintf(inv->tenant, sizeof inv->tenant, "%s", tenant);
    snprintf(inv->status, sizeof inv->status, "draft");
    inv->period_start_us = gm_month_start(month_us);
    inv->period_end_us = gm_month_next(month_us);
    int rc = compute_draft(ctx, inv, err, err_len);
    if (rc) {
        gm_billing_invoice_free(inv);
        return rc;
    }
    *out = inv;
    return 0;
}

int gm_billing_draft_ensure(const gm_billing_ctx *ctx, const char *tenant, int64_t month_us,
                            char *id_out, size_t id_len, char *err, size_t err_len)
{
    char a[40], b[40];
    billing__time(gm_month_start(month_us), a);
    billing__time(gm_month_next(month_us), b);
    const char *p[3] = {tenant, a, b};
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc;
        PGresult *r = billing__q(ctx->db,
                                 "WITH ins AS (INSERT INTO gm.invoices (tenant, issuer,"
                                 " period_start, period_end) SELECT $1, coalesce((SELECT issuer"
                                 " FROM gm.tenants WHERE tenant = $1), 'GM'), $2, $3"
                                 " ON CONFLICT (tenant, period_start) DO NOTHING"
                                 " RETURNING invoice_id)"
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

int gm_billing_drafts_ensure(const gm_billing_ctx *ctx, int64_t month_us, const char *tenant,
                             int *created, char *err, size_t err_len)
{
    char a[40], b[40], now[40];
    billing__time(gm_month_start(month_us), a);
    billing__time(gm_month_next(month_us), b);
    billing__time(ctx->now_us, now);
    const char *p[4] = {a, b, tenant, now};
    int rc;
    /* Tenants with charges in the month, and tenants whose contract was imported before the
     * month's end (a monthly commitment is owed also without usage) once the month has begun:
     * listing a future month creates no commitment drafts. */
    PGresult *r = billing__q(
        ctx->db,
        "INSERT INTO gm.invoices (tenant, issuer, period_start, period_end)"
        " SELECT x.tenant, coalesce((SELECT issuer FROM gm.tenants t WHERE t.tenant = x.tenant),"
        " 'GM'), $1, $2 FROM ("
        "  SELECT DISTINCT tenant FROM gm.charges_daily WHERE day >= $1 AND day < $2"
        "  UNION SELECT tenant FROM gm.contracts WHERE $1::timestamptz <= $4::timestamptz"
        "  GROUP BY tenant HAVING min(imported_at) < $2) x"
        " WHERE ($3::text IS NULL OR x.tenant = $3) ORDER BY x.tenant"
        " ON CONFLICT (tenant, period_start) DO NOTHING",
        4, p, PGRES_COMMAND_OK, "invoice drafts", err, err_len, &rc);
    if (r && created)
        *created = atoi(PQcmdTuples(r));
    PQclear(r);
    return rc;
}

int gm_billing_list(const gm_billing_ctx *ctx, const gm_billing_filter *f,
                    gm_billing_invoice ***out, size_t *n_out, bool *more, char *err, size_t err_len)
{
    *out = NULL;
    *n_out = 0;
    *more = false;
    char ps[40], cps[40], lim[16];
    bool by_period = f->has_period || f->period_start_us; /* 1970-01 is 0 */
    if (by_period)
        billing__time(f->period_start_us, ps);
    if (f->has_cursor)
        billing__time(f->cursor_period_us, cps);
    snprintf(lim, sizeof lim, "%d", f->limit + 1);
    const char *p[6] = {by_period ? ps : NULL,
                        f->tenant,
                        f->status,
                        f->has_cursor ? cps : NULL,
                        f->has_cursor ? f->cursor_tenant : NULL,
                        lim};
    char sql[3072];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM gm.invoices i"
             " WHERE ($1::timestamptz IS NULL OR period_start = $1)"
             " AND ($2::text IS NULL OR tenant = $2) AND ($3::text IS NULL OR status = $3)"
             " AND ($4::timestamptz IS NULL OR period_start < $4"
             "      OR (period_start = $4 AND tenant > $5))"
             " ORDER BY period_start DESC, tenant LIMIT $6::int",
             billing__invoice_cols);
    int rc;
    PGresult *r =
        billing__q(ctx->db, sql, 6, p, PGRES_TUPLES_OK, "invoice list", err, err_len, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    if (n > f->limit) {
        *more = true;
        n = f->limit;
    }
    gm_billing_invoice **v = gm_xcalloc((size_t)n + 1, sizeof *v);
    for (int i = 0; i < n && !rc; i++) {
        v[i] = gm_xcalloc(1, sizeof **v);
        *n_out = (size_t)i + 1;
        rc = billing__row_to_invoice(r, i, v[i], err, err_len);
        if (!rc && !strcmp(v[i]->status, "draft"))
            rc = compute_draft(ctx, v[i], err, err_len);
    }
    PQclear(r);
    *out = v;
    return rc;
}

/* ---- Finalization -------------------------------------------------------------------------- */
/* B4: months are finalized in order. Prepaid credit runs from one finalized month to the next,
 * so finalizing a month after a later one, or while an earlier one since the last finalized
 * month still has usage or a draft row (a commitment is owed), would count credit twice or
 * skip a month. A month before the last finalized one that was never invoiced (a backfill) is
 * billed by adjustment lines on the next draft and does not block. */
static int check_order(PGconn *db, const gm_billing_invoice *inv, char *err, size_t err_len)
{
    char ps[40];
    billing__time(inv->period_start_us, ps);
    const char *p[2] = {inv->tenant, ps};
    int rc;
    PGresult *r = billing__q(db, "SELECT 1 FROM gm.invoices WHERE tenant = $1 FOR UPDATE", 1, p,
                             PGRES_TUPLES_OK, "locking the tenant's invoices", err, err_len, &rc);
    PQclear(r);
    if (rc)
        return rc;
    r = billing__q(
        db,
        "SELECT (SELECT to_char(max(period_start) AT TIME ZONE 'UTC', 'YYYY-MM')"
        "        FROM gm.invoices WHERE tenant = $1 AND status <> 'draft'"
        "        AND period_start > $2::timestamptz),"
        "       (SELECT to_char(min(c.period_start) AT TIME ZONE 'UTC', 'YYYY-MM')"
        "        FROM gm.period_changes c WHERE c.tenant = $1 AND c.period_start < $2::timestamptz"
        "        AND c.period_start > coalesce((SELECT max(period_start) FROM gm.invoices"
        "                 WHERE tenant = $1 AND status <> 'draft'"
        "                 AND period_start < $2::timestamptz), '-infinity')"
        "        AND NOT EXISTS (SELECT 1 FROM gm.invoices i WHERE i.tenant = $1"
        "         AND i.period_start = c.period_start AND i.status <> 'draft')"
        "        AND (EXISTS (SELECT 1 FROM gm.charges_daily d WHERE d.tenant = $1"
        "              AND d.day >= c.period_start AND d.day < c.period_start + interval '1 month')"
        "             OR EXISTS (SELECT 1 FROM gm.invoices i WHERE i.tenant = $1"
        "              AND i.period_start = c.period_start AND i.status = 'draft')))",
        2, p, PGRES_TUPLES_OK, "checking the order of finalization", err, err_len, &rc);
    if (!r)
        return rc;
    if (!PQgetisnull(r, 0, 0))
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s: %s is already finalized; months are finalized in order "
                     "(prepaid credit carries from one to the next)",
                     inv->invoice_id, PQgetvalue(r, 0, 0));
    else if (!PQgetisnull(r, 0, 1))
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s: the earlier month %s has usage or a draft and is not finalized "
                     "yet; months are finalized in order (prepaid credit carries from one to the "
                     "next)",
                     inv->invoice_id, PQgetvalue(r, 0, 1));
    PQclear(r);
    return rc;
}

static int store_line(PGconn *db, const gm_billing_invoice *inv, const gm_billing_line *l,
                      char *err, size_t err_len)
{
    char no[16], ver[24], band[16], qty[48], up[48], ex[64], am[64], mi[48], di[48], cr[48], cp[40];
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
        billing__time(l->corrects_period_us, cp);
    bool usage = l->dimension[0] != 0;
    const char *p[20] = {inv->invoice_id,
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
                         l->corrects_period_us ? cp : NULL,
                         l->gpu_basis[0] ? l->gpu_basis : NULL,
                         l->variant};
    return billing__exec(db,
                         "INSERT INTO gm.invoice_lines (invoice_id, line_no, kind, adjusted_kind,"
                         " description, dimension, model, site_tier, card_version, band, quantity,"
                         " unit_price, amount_exact, amount, amount_minor, discount_minor,"
                         " credit_minor, corrects_period, gpu_basis, variant) VALUES ($1, $2, $3,"
                         " $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
                         " $19, $20)",
                         20, p, "invoice line", err, err_len);
}

static int snapshot(PGconn *db, const gm_billing_invoice *inv, int64_t start_us, gm_i128 events,
                    gm_i128 amount_e18, int64_t rerating_seq, char *err, size_t err_len)
{
    char ps[40], ev[48], am[64], sq[24];
    billing__time(start_us, ps);
    gm_i128_format(events, ev, sizeof ev);
    gm_dec_format(amount_e18, 18, am, sizeof am);
    snprintf(sq, sizeof sq, "%lld", (long long)rerating_seq);
    const char *p[6] = {inv->tenant, ps, inv->invoice_id, ev, am, sq};
    return billing__exec(db,
                         "INSERT INTO gm.period_snapshots (tenant, period_start, invoice_id,"
                         " events, amount, rerating_seq) VALUES ($1, $2, $3, $4, $5, $6)",
                         6, p, "period snapshot", err, err_len);
}

static int finalize_tx(const gm_billing_ctx *ctx, const char *invoice_id, char *err, size_t err_len)
{
    gm_billing_invoice *inv = NULL;
    int rc = billing__load_row(ctx->db, invoice_id, true, &inv, err, err_len);
    if (rc)
        return rc;
    billing__period *adj = NULL;
    size_t n_adj = 0;
    int64_t open_until = inv->period_end_us + (int64_t)ctx->grace_hours * GM_US_PER_HOUR;
    if (strcmp(inv->status, "draft")) {
        rc = gm_fail(err, err_len, GM_ECONFLICT, "invoice %s is %s (%s): only a draft is finalized",
                     inv->invoice_id, inv->status, inv->number);
        goto out;
    }
    if (ctx->now_us < open_until) {
        char t[40];
        gm_time_format(open_until, t, sizeof t);
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s: the period is open for late events until %s (period end + %d h"
                     " grace)",
                     inv->invoice_id, t, ctx->grace_hours);
        goto out;
    }
    if ((rc = check_order(ctx->db, inv, err, err_len)))
        goto out;
    if ((rc = billing__compute_live(ctx, inv, &adj, &n_adj, err, err_len)))
        goto out;
    if (!inv->currency[0]) {
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s: no currency (tenant %s has no contract and there is no default"
                     " card)",
                     inv->invoice_id, inv->tenant);
        goto out;
    }
    if ((rc = gm_billing_invoice_check(inv, err, err_len)))
        goto out;
    gm_i128 ev = 0, amt = 0;
    if ((rc = gm_billing_fingerprint(ctx->db, inv->tenant, inv->period_start_us, inv->period_end_us,
                                     &ev, &amt, err, err_len)))
        goto out;
    for (size_t i = 0; i < inv->n_lines && !rc; i++)
        rc = store_line(ctx->db, inv, &inv->lines[i], err, err_len);
    if (rc)
        goto out;
    /* The month's own re-rating corrections are billed by this invoice (drafts price from
     * the book). */
    int64_t own_seq = 0;
    {
        char ps[40];
        billing__time(inv->period_start_us, ps);
        const char *p[2] = {inv->tenant, ps};
        PGresult *r = billing__q(ctx->db,
                                 "SELECT coalesce(max(correction_id), 0) FROM"
                                 " gm.rerating_corrections WHERE tenant = $1 AND period_start = $2",
                                 2, p, PGRES_TUPLES_OK, "re-rating corrections", err, err_len, &rc);
        if (!r)
            goto out;
        billing__rd rd = {0};
        own_seq = billing__i64(&rd, r, 0, 0);
        PQclear(r);
        if ((rc = billing__rd_fail(&rd, "re-rating corrections", err, err_len)))
            goto out;
    }
    if ((rc = snapshot(ctx->db, inv, inv->period_start_us, ev, amt, own_seq, err, err_len)))
        goto out;
    for (size_t i = 0; i < n_adj && !rc; i++)
        rc = snapshot(ctx->db, inv, adj[i].start_us, adj[i].events, adj[i].amount_e18,
                      adj[i].rerating_seq, err, err_len);
    if (rc)
        goto out;
    char mu[8], tot[64], totm[48], ue[64], cb[48], ca[48], evs[48], amts[64];
    snprintf(mu, sizeof mu, "%d", inv->minor_units);
    gm_rating_format_minor(inv->total_minor, inv->minor_units, tot, sizeof tot);
    gm_i128_format(inv->total_minor, totm, sizeof totm);
    gm_dec_format(inv->usage_exact_e18, 18, ue, sizeof ue);
    gm_i128_format(inv->credit_before_minor, cb, sizeof cb);
    gm_i128_format(inv->credit_after_minor, ca, sizeof ca);
    gm_i128_format(ev, evs, sizeof evs);
    gm_dec_format(amt, 18, amts, sizeof amts);
    const char *up[10] = {inv->invoice_id,
                          inv->currency,
                          mu,
                          tot,
                          totm,
                          ue,
                          inv->has_credit_before ? cb : NULL,
                          ca,
                          evs,
                          amts};
    if ((rc = billing__exec(ctx->db,
                            "UPDATE gm.invoices SET status = 'finalized', currency = $2,"
                            " minor_units = $3, total = $4, total_minor = $5, usage_exact = $6,"
                            " credit_balance_before_minor = $7, credit_balance_after_minor = $8,"
                            " ledger_events = $9, ledger_amount = $10 WHERE invoice_id = $1",
                            10, up, "finalize", err, err_len)))
        goto out;
    char next_id[64];
    rc = gm_billing_draft_ensure(ctx, inv->tenant, inv->period_end_us, next_id, sizeof next_id, err,
                                 err_len);
out:
    free(adj);
    gm_billing_invoice_free(inv);
    return rc;
}

int gm_billing_finalize(const gm_billing_ctx *ctx, const char *invoice_id, char *err,
                        size_t err_len)
{
    if (!gm_billing_valid_invoice_id(invoice_id))
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not an invoice id", invoice_id);
    /* One instant decides the grace window and stamps finalized_at (gm.now()). In a caller's
     * transaction (the API's POST, REPEATABLE READ too) it joins and the caller commits. */
    bool own;
    int rc = gm_pg_begin_or_join(ctx->db, "ISOLATION LEVEL REPEATABLE READ", ctx->now_us, &own, err,
                                 err_len);
    if (rc)
        return rc;
    rc = finalize_tx(ctx, invoice_id, err, err_len);
    return gm_pg_end(ctx->db, own, rc, "finalize commit", err, err_len);
}
