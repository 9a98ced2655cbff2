/* Re-rating a month: re-prices each tenant's month with the book in ctx, diffs it line by line
 * against what stands (billed lines of a finalized month; the rater's priced charges of a
 * draft month; newer unbilled corrections over either), and, applied, appends the run and
 * its corrections in one transaction. See gm_billing.h for the contract. */
#include "billing_int.h"
#include "gm_ident.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char kind[16], dimension[16], model[160], site_tier[64];
    char variant[GM_RATING_VARIANT_MAX];
    int64_t card_version;
    int band;
    bool has_before, has_after;
    gm_i128 qb, qa, eb, ea, mb, ma;
    int64_t pb, pa;
} key_row;

typedef struct {
    key_row *v;
    size_t n, cap;
} key_set;

static key_row *key_get(key_set *s, const char *kind, const char *dim, const char *model,
                        const char *tier, int64_t ver, int band, const char *variant)
{
    for (size_t i = 0; i < s->n; i++) {
        key_row *k = &s->v[i];
        if (!strcmp(k->kind, kind) && !strcmp(k->dimension, dim) && !strcmp(k->model, model) &&
            !strcmp(k->site_tier, tier) && k->card_version == ver && k->band == band &&
            !strcmp(k->variant, variant))
            return k;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        s->v = gm_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    key_row *k = &s->v[s->n++];
    memset(k, 0, sizeof *k);
    snprintf(k->kind, sizeof k->kind, "%s", kind);
    snprintf(k->dimension, sizeof k->dimension, "%s", dim);
    snprintf(k->model, sizeof k->model, "%s", model);
    snprintf(k->site_tier, sizeof k->site_tier, "%s", tier);
    k->card_version = ver;
    k->band = band;
    snprintf(k->variant, sizeof k->variant, "%s", variant);
    return k;
}

/* List-level prices of a draft month's charges under ctx->book, per (dimension, model, site
 * tier, card version, variant): what the rater would price now (gm_rating_price_charge, the
 * rater's own pricing path, with each charge's variant). */
static int reprice_list(const gm_billing_ctx *ctx, const char *tenant, int64_t start_us,
                        key_set *ks, int minor_units, char *err, size_t err_len)
{
    char a[40], b[40];
    billing__time(start_us, a);
    billing__time(gm_month_next(start_us), b);
    const char *p[3] = {tenant, a, b};
    int rc;
    PGresult *r =
        billing__q(ctx->db,
                   "SELECT model, site, " BILLING_US(
                       "hour") ", dimension, sum(quantity), variant"
                               " FROM gm.charges WHERE tenant = $1 AND hour >= $2 AND hour < $3"
                               " GROUP BY model, site, hour, dimension, variant"
                               " ORDER BY 1, 2, 3, 4, 6",
                   3, p, PGRES_TUPLES_OK, "charges to re-price", err, err_len, &rc);
    if (!r)
        return rc;
    billing__rd rd = {0};
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        const char *model = PQgetvalue(r, i, 0);
        int64_t hour = billing__i64(&rd, r, i, 2);
        const char *dim = PQgetvalue(r, i, 3);
        gm_i128 q = billing__int(&rd, r, i, 4);
        if ((rc = billing__rd_fail(&rd, "charges to re-price", err, err_len)))
            break;
        gm_event_price pr;
        if ((rc = gm_rating_price_charge(ctx->book, tenant, model, PQgetvalue(r, i, 1), hour,
                                         PQgetvalue(r, i, 5), &pr, err, err_len)))
            break;
        int d = 0;
        while (d < GM_DIM_COUNT && strcmp(gm_dim_name((gm_dim)d), dim))
            d++;
        if (d == GM_DIM_COUNT) {
            rc = gm_fail(err, err_len, GM_ECORRUPT, "gm.charges: unknown dimension %.20s", dim);
            break;
        }
        gm_i128 amt = 0;
        if ((rc = gm_rating_amount_e18((gm_dim)d, q, pr.unit_price_p[d], &amt))) {
            gm_fail(err, err_len, rc, "re-pricing %s %s: amount out of range", tenant, dim);
            break;
        }
        key_row *k = key_get(ks, "usage", dim, model, pr.site_tier ? pr.site_tier : "",
                             pr.card_version, 0, pr.variant);
        k->has_after = true;
        k->qa += q;
        k->ea += amt;
        k->pa = pr.unit_price_p[d];
    }
    PQclear(r);
    for (size_t i = 0; i < ks->n; i++)
        if (ks->v[i].has_after)
            ks->v[i].ma = gm_rating_round_e18(ks->v[i].ea, minor_units);
    return rc;
}

/* Rows of (kind, dimension, model, site tier, card version, band, quantity, exact amount,
 * rounded amount, unit price), their variant in column var_col. */
static int standing_rows(PGconn *db, const PGresult *r, int var_col, key_set *ks, bool overwrite,
                         char *err, size_t err_len, const char *what)
{
    billing__rd rd = {0};
    for (int i = 0; i < PQntuples(r); i++) {
        key_row *k = key_get(ks, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                             PQgetvalue(r, i, 3), billing__i64(&rd, r, i, 4),
                             (int)billing__i64(&rd, r, i, 5), PQgetvalue(r, i, var_col));
        if (k->has_before && !overwrite)
            continue;
        k->has_before = true;
        k->qb = billing__int(&rd, r, i, 6);
        k->eb = billing__e18(&rd, r, i, 7);
        k->mb = billing__int(&rd, r, i, 8);
        k->pb = billing__price(&rd, r, i, 9);
    }
    (void)db;
    return billing__rd_fail(&rd, what, err, err_len);
}

/* One tenant's month: fills ks with before (standing) and after (re-priced). */
static int diff_tenant(const gm_billing_ctx *ctx, const char *tenant, const char *invoice_id,
                       const char *status, int64_t start_us, key_set *ks, char cur[4], int *mu,
                       char *err, size_t err_len)
{
    int rc = 0;
    char ps[40];
    billing__time(start_us, ps);
    bool finalized = !strcmp(status, "finalized");
    if (finalized) {
        gm_billing_invoice *inv = NULL;
        if ((rc = billing__load_row(ctx->db, invoice_id, false, &inv, err, err_len)))
            return rc;
        gm_invoice_opts o = {.has_credit_balance = inv->has_credit_before,
                             .credit_balance_minor = inv->credit_before_minor};
        snprintf(cur, 4, "%s", inv->currency);
        *mu = inv->minor_units;
        gm_billing_invoice_free(inv);
        PGresult *b =
            billing__billed_lines(ctx->db, tenant, invoice_id, start_us, err, err_len, &rc);
        if (!b)
            return rc;
        rc = standing_rows(ctx->db, b, 11, ks, false, err, err_len, "billed lines");
        PQclear(b);
        gm_invoice *g = NULL;
        if (!rc)
            rc = billing__rate_period(ctx, tenant, start_us, &o, &g, err, err_len);
        for (size_t i = 0; !rc && i < g->n_lines; i++) {
            const gm_invoice_line *l = &g->lines[i];
            key_row *k = key_get(ks, gm_line_kind_name(l->kind),
                                 l->dim < GM_DIM_COUNT ? gm_dim_name(l->dim) : "",
                                 l->model ? l->model : "", l->site_tier ? l->site_tier : "",
                                 l->card_version, l->band, l->variant ? l->variant : "");
            k->has_after = true;
            k->qa += l->qty;
            k->ea += l->amount_e18;
            k->ma += l->amount_minor;
            k->pa = l->unit_price_p;
        }
        gm_invoice_free(g);
    } else {
        const char *p[3] = {tenant, ps, NULL};
        PGresult *b =
            billing__q(ctx->db,
                       "SELECT 'usage', dimension, model, coalesce(site_tier, ''), card_version, 0,"
                       " sum(quantity), sum(amount), 0, max(unit_price), min(currency), variant"
                       " FROM gm.charges WHERE tenant = $1 AND hour >= $2"
                       " AND hour < $2::timestamptz + interval '1 month'"
                       " GROUP BY 2, 3, 4, 5, 12 ORDER BY 2, 3, 4, 5, 12",
                       2, p, PGRES_TUPLES_OK, "rated charges", err, err_len, &rc);
        if (!b)
            return rc;
        if (PQntuples(b)) {
            snprintf(cur, 4, "%s", PQgetvalue(b, 0, 10));
            *mu = gm_rating_book_minor_units(ctx->book, cur);
            if (*mu < 0)
                *mu = 2;
        }
        rc = standing_rows(ctx->db, b, 11, ks, false, err, err_len, "rated charges");
        PQclear(b);
        for (size_t i = 0; i < ks->n; i++)
            ks->v[i].mb = gm_rating_round_e18(ks->v[i].eb, *mu);
        if (!rc)
            rc = reprice_list(ctx, tenant, start_us, ks, *mu, err, err_len);
    }
    if (rc)
        return rc;
    /* Corrections that no invoice billed yet stand over the rest. */
    const char *p[2] = {tenant, ps};
    PGresult *c = billing__q(
        ctx->db,
        "SELECT DISTINCT ON (kind, dimension, model, site_tier, card_version, band, variant) kind,"
        " coalesce(dimension, ''), coalesce(model, ''), coalesce(site_tier, ''),"
        " coalesce(card_version, 0), coalesce(band, 0), quantity_after, amount_exact_after,"
        " amount_minor_after, unit_price_after, variant FROM gm.rerating_corrections"
        " WHERE tenant = $1 AND period_start = $2 AND correction_id > coalesce((SELECT"
        " max(rerating_seq) FROM gm.period_snapshots s WHERE s.tenant = $1"
        " AND s.period_start = $2), 0)"
        " ORDER BY kind, dimension, model, site_tier, card_version, band, variant,"
        " correction_id DESC",
        2, p, PGRES_TUPLES_OK, "unbilled corrections", err, err_len, &rc);
    if (!c)
        return rc;
    rc = standing_rows(ctx->db, c, 10, ks, true, err, err_len, "unbilled corrections");
    PQclear(c);
    return rc;
}

static int insert_run(const gm_billing_ctx *ctx, int64_t start_us, const char *tenant,
                      const char *by, const char *reason, const gm_billing_rerate_result *res,
                      int64_t *run_id, char *err, size_t err_len)
{
    /* rounded delta per currency, as a JSON object of minor-unit integers */
    cJSON *dm = cJSON_CreateObject();
    for (size_t i = 0; i < res->n_lines; i++) {
        const gm_billing_rerate_line *l = &res->lines[i];
        cJSON *cur = cJSON_GetObjectItemCaseSensitive(dm, l->currency);
        gm_i128 v = 0;
        if (cur && gm_dec_parse(cur->valuestring, strlen(cur->valuestring), 0, &v, NULL, 0))
            v = 0; /* our own integer text: cannot fail */
        v += l->amount_minor_after - l->amount_minor_before;
        char b[48];
        gm_i128_format(v, b, sizeof b);
        if (cur)
            cJSON_ReplaceItemInObjectCaseSensitive(dm, l->currency, cJSON_CreateString(b));
        else
            cJSON_AddStringToObject(dm, l->currency, b);
    }
    char *dmj = cJSON_PrintUnformatted(dm);
    cJSON_Delete(dm);
    char ps[40], nt[16], nl[16], de[64];
    billing__time(start_us, ps);
    snprintf(nt, sizeof nt, "%d", res->tenants);
    snprintf(nl, sizeof nl, "%zu", res->n_lines);
    gm_dec_format(res->delta_e18, 18, de, sizeof de);
    const char *p[8] = {ps, tenant, by, reason, nt, nl, de, dmj};
    int rc;
    PGresult *r = billing__q(ctx->db,
                             "INSERT INTO gm.rerating_runs (period_start, tenant, requested_by,"
                             " reason, tenants, lines_changed, delta_exact, delta_minor)"
                             " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) RETURNING run_id",
                             8, p, PGRES_TUPLES_OK, "re-rating run", err, err_len, &rc);
    free(dmj);
    if (!r)
        return rc;
    billing__rd rd = {0};
    *run_id = billing__i64(&rd, r, 0, 0);
    PQclear(r);
    if ((rc = billing__rd_fail(&rd, "re-rating run", err, err_len)))
        return rc;
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", (long long)*run_id);
    for (size_t i = 0; i < res->n_lines && !rc; i++) {
        const gm_billing_rerate_line *l = &res->lines[i];
        char lps[40], ver[24], band[16], qb[48], qa[48], pb[48], pa[48], eb[64], ea[64], mb[48],
            ma[48];
        billing__time(l->period_start_us, lps);
        snprintf(ver, sizeof ver, "%lld", (long long)l->card_version);
        snprintf(band, sizeof band, "%d", l->band);
        gm_i128_format(l->qty_before, qb, sizeof qb);
        gm_i128_format(l->qty_after, qa, sizeof qa);
        gm_dec_format(l->unit_price_p_before, 12, pb, sizeof pb);
        gm_dec_format(l->unit_price_p_after, 12, pa, sizeof pa);
        gm_dec_format(l->amount_e18_before, 18, eb, sizeof eb);
        gm_dec_format(l->amount_e18_after, 18, ea, sizeof ea);
        gm_i128_format(l->amount_minor_before, mb, sizeof mb);
        gm_i128_format(l->amount_minor_after, ma, sizeof ma);
        bool usage = l->dimension[0] != 0;
        const char *q[21] = {rid,
                             l->tenant,
                             lps,
                             l->invoice_id[0] ? l->invoice_id : NULL,
                             l->invoice_status,
                             l->kind,
                             usage ? l->dimension : NULL,
                             l->model[0] ? l->model : NULL,
                             l->site_tier[0] ? l->site_tier : NULL,
                             l->card_version ? ver : NULL,
                             l->band ? band : NULL,
                             l->currency,
                             qb,
                             qa,
                             usage ? pb : NULL,
                             usage ? pa : NULL,
                             eb,
                             ea,
                             mb,
                             ma,
                             l->variant};
        rc = billing__exec(ctx->db,
                           "INSERT INTO gm.rerating_corrections (run_id, tenant, period_start,"
                           " invoice_id, invoice_status, kind, dimension, model, site_tier,"
                           " card_version, band, currency, quantity_before, quantity_after,"
                           " unit_price_before, unit_price_after, amount_exact_before,"
                           " amount_exact_after, amount_minor_before, amount_minor_after,"
                           " variant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
                           " $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                           21, q, "re-rating correction", err, err_len);
    }
    return rc;
}

void gm_billing_rerate_result_free(gm_billing_rerate_result *r)
{
    if (!r)
        return;
    free(r->lines);
    free(r);
}

int gm_billing_rerate(const gm_billing_ctx *ctx, int64_t month_us, const char *tenant, bool dry_run,
                      const char *requested_by, const char *reason, gm_billing_rerate_result **out,
                      char *err, size_t err_len)
{
    *out = NULL;
    int64_t start = gm_month_start(month_us);
    if (tenant && !gm_billing_valid_tenant(tenant))
        return gm_ident_check_field(GM_IDENT_TENANT, "tenant", tenant, err, err_len);
    if (!dry_run && (!requested_by || !requested_by[0] || strlen(requested_by) > 200))
        return gm_fail(err, err_len, GM_EINVAL, "requested_by: required, 1 to 200 characters");
    if (!dry_run && (!reason || !reason[0] || strlen(reason) > 1000))
        return gm_fail(err, err_len, GM_EINVAL, "reason: required, 1 to 1000 characters");
    char ps[40];
    billing__time(start, ps);
    const char *p[2] = {ps, tenant};
    int rc = 0;
    /* Runs of one month apply one at a time, and the second one's snapshot is taken after the
     * first committed (a session lock held across the transaction): it sees its corrections.
     * In a caller's transaction the caller took that lock before beginning it
     * (gm_billing_rerate_lock) and commits. */
    bool joined = PQtransactionStatus(ctx->db) == PQTRANS_INTRANS, own = false;
    bool locked = !dry_run && !joined;
    if (locked && (rc = gm_billing_rerate_lock(ctx->db, start, true, err, err_len)))
        return rc;
    rc = gm_pg_begin_or_join(ctx->db,
                             dry_run ? "ISOLATION LEVEL REPEATABLE READ READ ONLY"
                                     : "ISOLATION LEVEL REPEATABLE READ",
                             ctx->now_us, &own, err, err_len);
    if (rc)
        goto unlock;
    PGresult *t =
        billing__q(ctx->db,
                   "SELECT x.tenant, coalesce(i.invoice_id, ''), coalesce(i.status, 'draft') FROM ("
                   "  SELECT tenant FROM gm.invoices WHERE period_start = $1"
                   "  UNION SELECT DISTINCT tenant FROM gm.charges_daily WHERE day >= $1"
                   "  AND day < $1::timestamptz + interval '1 month') x"
                   " LEFT JOIN gm.invoices i ON i.tenant = x.tenant AND i.period_start = $1"
                   " WHERE ($2::text IS NULL OR x.tenant = $2) ORDER BY x.tenant",
                   2, p, PGRES_TUPLES_OK, "tenants to re-rate", err, err_len, &rc);
    if (!t)
        goto fail;
    gm_billing_rerate_result *res = gm_xcalloc(1, sizeof *res);
    size_t cap = 0;
    for (int i = 0; i < PQntuples(t) && !rc; i++) {
        const char *tn = PQgetvalue(t, i, 0), *iid = PQgetvalue(t, i, 1), *st = PQgetvalue(t, i, 2);
        if (!strcmp(st, "void"))
            continue; /* void invoices are not adjusted */
        key_set ks = {0};
        char cur[4] = "";
        int mu = 2;
        rc = diff_tenant(ctx, tn, iid, st, start, &ks, cur, &mu, err, err_len);
        bool any = false;
        for (size_t k = 0; !rc && k < ks.n; k++) {
            key_row *kr = &ks.v[k];
            if (kr->qb == kr->qa && kr->eb == kr->ea && kr->mb == kr->ma)
                continue;
            if (res->n_lines == cap) {
                cap = cap ? 2 * cap : 32;
                res->lines = gm_xrealloc(res->lines, cap * sizeof *res->lines);
            }
            gm_billing_rerate_line *l = &res->lines[res->n_lines++];
            memset(l, 0, sizeof *l);
            snprintf(l->tenant, sizeof l->tenant, "%s", tn);
            l->period_start_us = start;
            snprintf(l->invoice_id, sizeof l->invoice_id, "%s", iid);
            snprintf(l->invoice_status, sizeof l->invoice_status, "%s", st);
            snprintf(l->currency, sizeof l->currency, "%s", cur);
            l->minor_units = mu;
            snprintf(l->kind, sizeof l->kind, "%s", kr->kind);
            snprintf(l->dimension, sizeof l->dimension, "%s", kr->dimension);
            snprintf(l->model, sizeof l->model, "%s", kr->model);
            snprintf(l->site_tier, sizeof l->site_tier, "%s", kr->site_tier);
            l->card_version = kr->card_version;
            l->band = kr->band;
            snprintf(l->variant, sizeof l->variant, "%s", kr->variant);
            l->qty_before = kr->qb;
            l->qty_after = kr->qa;
            l->unit_price_p_before = kr->pb;
            l->unit_price_p_after = kr->pa;
            l->amount_e18_before = kr->eb;
            l->amount_e18_after = kr->ea;
            l->amount_minor_before = kr->mb;
            l->amount_minor_after = kr->ma;
            res->delta_e18 += kr->ea - kr->eb;
            any = true;
        }
        if (any)
            res->tenants++;
        free(ks.v);
    }
    PQclear(t);
    if (!rc && !dry_run)
        rc = insert_run(ctx, start, tenant, requested_by, reason, res, &res->run_id, err, err_len);
    if (rc) {
        gm_billing_rerate_result_free(res);
        goto fail;
    }
    rc = gm_pg_end(ctx->db, own, 0, "re-rating commit", err, err_len);
    if (rc)
        gm_billing_rerate_result_free(res);
    else
        *out = res;
    goto unlock;
fail:
    rc = gm_pg_end(ctx->db, own, rc, "re-rating", err, err_len);
unlock:
    if (locked) {
        char uerr[256];
        if (gm_billing_rerate_lock(ctx->db, start, false, uerr, sizeof uerr))
            gm_warn("billing", "msg=\"re-rating unlock failed\" err=\"%s\"", uerr);
    }
    return rc;
}

int gm_billing_rerate_lock(PGconn *db, int64_t month_us, bool take, char *err, size_t err_len)
{
    char ps[40];
    billing__time(gm_month_start(month_us), ps);
    const char *p[1] = {ps};
    int rc = 0;
    PQclear(billing__q(db,
                       take ? "SELECT pg_advisory_lock(2911332140600000000 + (extract(epoch"
                              " FROM $1::timestamptz) / 86400)::bigint)"
                            : "SELECT pg_advisory_unlock(2911332140600000000 + (extract(epoch"
                              " FROM $1::timestamptz) / 86400)::bigint)",
                       1, p, PGRES_TUPLES_OK, take ? "re-rating lock" : "re-rating unlock", err,
                       err_len, &rc));
    return rc;
}
