/* The invariants of billing (numbered B1..B11 in billing.c), checked over one invoice in memory
 * (gm_billing_invoice_check) and over the database (gm_billing_check: stored invoices, their
 * order, credit carried, snapshots, credit notes, and every draft computed live). Tests call
 * gm_billing_check after every operation. */
#include "billing_int.h"

#include <stdlib.h>
#include <string.h>

int gm_billing_invoice_check(const gm_billing_invoice *inv, char *err, size_t err_len)
{
    gm_i128 total = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        const gm_billing_line *l = &inv->lines[i];
        if (l->line_no != (int)i + 1)
            return gm_fail(err, err_len, GM_ECORRUPT, "B8: invoice %s line %zu has number %d",
                           inv->invoice_id, i + 1, l->line_no);
        total += l->amount_minor;
        bool list =
            !strcmp(l->kind, "usage") || !strcmp(l->kind, "tier") || !strcmp(l->kind, "allowance");
        if (list && l->amount_minor != gm_rating_round_e18(l->amount_e18, inv->minor_units))
            return gm_fail(err, err_len, GM_ECORRUPT,
                           "B2: invoice %s line %d: amount is not the half-even rounding of its"
                           " exact amount",
                           inv->invoice_id, l->line_no);
        bool adj = !strcmp(l->kind, "adjustment");
        if (adj != (l->corrects_period_us != 0) ||
            (adj && l->corrects_period_us >= inv->period_start_us))
            return gm_fail(err, err_len, GM_ECORRUPT,
                           "B3: invoice %s line %d: an adjustment must name an earlier period (and"
                           " only an adjustment names one)",
                           inv->invoice_id, l->line_no);
    }
    if (total != inv->total_minor)
        return gm_fail(err, err_len, GM_ECORRUPT,
                       "B1: invoice %s: total is not the sum of its rounded lines",
                       inv->invoice_id);
    return 0;
}

/* A query that must return no row; its first row names the broken invariant. */
static int expect_none(PGconn *db, const char *rule, const char *sql, const char *tenant, char *err,
                       size_t err_len)
{
    const char *p[1] = {tenant};
    int rc;
    PGresult *r = billing__q(db, sql, 1, p, PGRES_TUPLES_OK, rule, err, err_len, &rc);
    if (!r)
        return rc;
    if (PQntuples(r)) {
        rc = gm_fail(err, err_len, GM_ECORRUPT, "%s: %s", rule, PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
}

int gm_billing_check(const gm_billing_ctx *ctx, const char *tenant, char *err, size_t err_len)
{
    PGconn *db = ctx->db;
    int rc;
    /* B1 (stored): the total is the sum of the stored rounded lines. */
    if ((rc = expect_none(db, "B1 total = sum of lines",
                          "SELECT i.invoice_id || ' total ' || i.total_minor || ' lines ' ||"
                          " coalesce(sum(l.amount_minor), 0) FROM gm.invoices i LEFT JOIN"
                          " gm.invoice_lines l USING (invoice_id) WHERE i.status <> 'draft'"
                          " AND ($1::text IS NULL OR i.tenant = $1) GROUP BY i.invoice_id"
                          " HAVING i.total_minor <> coalesce(sum(l.amount_minor), 0)",
                          tenant, err, err_len)))
        return rc;
    /* B3 (stored): adjustments name an earlier period. */
    if ((rc = expect_none(db, "B3 adjustments name an earlier period",
                          "SELECT l.invoice_id || ' line ' || l.line_no FROM gm.invoice_lines l"
                          " JOIN gm.invoices i USING (invoice_id) WHERE ($1::text IS NULL OR"
                          " i.tenant = $1) AND l.kind = 'adjustment'"
                          " AND l.corrects_period >= i.period_start",
                          tenant, err, err_len)))
        return rc;
    /* B4: numbers rise with the period within a tenant (finalized in order). */
    if ((rc = expect_none(db, "B4 months finalized in order",
                          "SELECT a.invoice_id || ' (' || a.number || ') after ' || b.invoice_id"
                          " || ' (' || b.number || ')' FROM gm.invoices a JOIN gm.invoices b"
                          " ON a.tenant = b.tenant AND a.issuer = b.issuer"
                          " AND a.period_start < b.period_start"
                          " WHERE a.status <> 'draft' AND b.status <> 'draft'"
                          " AND a.number_seq > b.number_seq AND ($1::text IS NULL OR"
                          " a.tenant = $1)",
                          tenant, err, err_len)))
        return rc;
    /* B5: credit carried from the previous finalized invoice. */
    if ((rc = expect_none(db, "B5 credit carried",
                          "SELECT i.invoice_id || ' starts from ' ||"
                          " coalesce(i.credit_balance_before_minor::text, 'the grant') ||"
                          " ' but ' || p.invoice_id || ' left ' || p.credit_balance_after_minor"
                          " FROM gm.invoices i CROSS JOIN LATERAL (SELECT * FROM gm.invoices q"
                          " WHERE q.tenant = i.tenant AND q.status <> 'draft'"
                          " AND q.period_start < i.period_start ORDER BY q.period_start DESC"
                          " LIMIT 1) p WHERE i.status <> 'draft' AND ($1::text IS NULL OR"
                          " i.tenant = $1) AND i.credit_balance_before_minor IS DISTINCT FROM"
                          " p.credit_balance_after_minor",
                          tenant, err, err_len)))
        return rc;
    /* B6: a billed period whose latest snapshot matches its charges (and which has no
     * unbilled re-rating) is billed exactly once: quantities per dimension add up. */
    if ((rc = expect_none(
             db, "B6 billed exactly once",
             "WITH s AS (SELECT DISTINCT ON (tenant, period_start) tenant, period_start, events,"
             "  amount, rerating_seq FROM gm.period_snapshots WHERE ($1::text IS NULL OR"
             "  tenant = $1) ORDER BY tenant, period_start, taken_at DESC),"
             " c AS (SELECT tenant, gm.month_of(day) AS period_start, dimension,"
             "  sum(quantity) AS q, sum(events) AS e, sum(amount) AS a FROM gm.charges_daily"
             "  WHERE ($1::text IS NULL OR tenant = $1) GROUP BY 1, 2, 3),"
             " ct AS (SELECT tenant, period_start, sum(e) AS e, sum(a) AS a FROM c GROUP BY 1, 2),"
             " b AS (SELECT i.tenant, coalesce(l.corrects_period, i.period_start) AS period_start,"
             "  l.dimension, sum(l.quantity) AS q FROM gm.invoice_lines l JOIN gm.invoices i"
             "  USING (invoice_id) WHERE i.status <> 'draft' AND coalesce(l.adjusted_kind, l.kind)"
             "  IN ('usage', 'tier') GROUP BY 1, 2, 3)"
             " SELECT s.tenant || ' ' || to_char(s.period_start AT TIME ZONE 'UTC', 'YYYY-MM') ||"
             "  ' ' || coalesce(c.dimension, b.dimension) || ': charges ' || coalesce(c.q, 0) ||"
             "  ' billed ' || coalesce(b.q, 0)"
             " FROM s JOIN ct ON ct.tenant = s.tenant AND ct.period_start = s.period_start"
             "  AND ct.e = s.events AND ct.a = s.amount"
             " JOIN c ON c.tenant = s.tenant AND c.period_start = s.period_start"
             " FULL JOIN b ON b.tenant = c.tenant AND b.period_start = c.period_start"
             "  AND b.dimension = c.dimension"
             " WHERE s.tenant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM gm.rerating_corrections r"
             "  WHERE r.tenant = s.tenant AND r.period_start = s.period_start"
             "  AND r.correction_id > s.rerating_seq)"
             " AND NOT EXISTS (SELECT 1 FROM gm.invoices v WHERE v.tenant = s.tenant"
             "  AND v.status = 'void' AND (v.period_start = s.period_start OR v.invoice_id IN"
             "  (SELECT invoice_id FROM gm.period_snapshots x WHERE x.tenant = s.tenant"
             "   AND x.period_start = s.period_start)))"
             " AND coalesce(c.q, 0) <> coalesce(b.q, 0)",
             tenant, err, err_len)))
        return rc;
    /* B7: credit notes within the total; void fully credited. */
    if ((rc = expect_none(db, "B7 credit notes within the total",
                          "SELECT i.invoice_id || ' total ' || i.total || ' credited ' ||"
                          " coalesce(sum(c.amount), 0) FROM gm.invoices i LEFT JOIN"
                          " gm.credit_notes c USING (invoice_id) WHERE ($1::text IS NULL OR"
                          " i.tenant = $1) GROUP BY i.invoice_id HAVING coalesce(sum(c.amount), 0)"
                          " > greatest(coalesce(i.total, 0), 0) OR (i.status = 'void' AND"
                          " coalesce(sum(c.amount), 0) <> greatest(i.total, 0))",
                          tenant, err, err_len)))
        return rc;
    /* B9: snapshots belong to finalized or void invoices of their tenant. */
    if ((rc = expect_none(db, "B9 snapshots of final invoices",
                          "SELECT s.invoice_id || ' ' || s.tenant FROM gm.period_snapshots s"
                          " JOIN gm.invoices i USING (invoice_id) WHERE ($1::text IS NULL OR"
                          " s.tenant = $1) AND (i.status = 'draft' OR i.tenant <> s.tenant)",
                          tenant, err, err_len)))
        return rc;
    /* B11: the daily rollup that drafts read equals the hourly charges (sql/0008 triggers). */
    if ((rc = expect_none(db, "B11 daily rollup = hourly charges",
                          "WITH h AS (SELECT tenant, gm.day_of(hour) AS day, site, model,"
                          " dimension, card_id, card_version, variant, currency,"
                          " sum(quantity) AS q, sum(amount) AS a, sum(events) AS e FROM"
                          " gm.charges WHERE ($1::text IS NULL OR tenant = $1)"
                          " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9),"
                          " d AS (SELECT * FROM gm.charges_daily WHERE ($1::text IS NULL OR"
                          " tenant = $1))"
                          " SELECT coalesce(h.tenant, d.tenant) || ' ' || coalesce(h.day, d.day)"
                          " || ' ' || coalesce(h.model, d.model) || ' ' || coalesce(h.dimension,"
                          " d.dimension) || ' ' || coalesce(h.variant, d.variant) FROM h FULL"
                          " JOIN d USING (tenant, day, site, model, dimension, card_id,"
                          " card_version, variant, currency)"
                          " WHERE h.q IS DISTINCT FROM d.quantity OR h.a IS DISTINCT FROM d.amount"
                          " OR h.e IS DISTINCT FROM d.events",
                          tenant, err, err_len)))
        return rc;
    if ((rc = expect_none(db, "B11 day x model rollup = hourly charges",
                          "WITH h AS (SELECT tenant, gm.day_of(hour) AS day, model, dimension,"
                          " currency, sum(quantity) AS q, sum(amount) AS a, sum(events) AS e"
                          " FROM gm.charges WHERE ($1::text IS NULL OR tenant = $1)"
                          " GROUP BY 1, 2, 3, 4, 5),"
                          " d AS (SELECT * FROM gm.charges_daily_model WHERE ($1::text IS NULL OR"
                          " tenant = $1))"
                          " SELECT coalesce(h.tenant, d.tenant) || ' ' || coalesce(h.day, d.day)"
                          " || ' ' || coalesce(h.model, d.model) FROM h FULL JOIN d USING (tenant,"
                          " day, model, dimension, currency) WHERE h.q IS DISTINCT FROM d.quantity"
                          " OR h.a IS DISTINCT FROM d.amount OR h.e IS DISTINCT FROM d.events",
                          tenant, err, err_len)))
        return rc;
    /* B1-B3, B8 on every stored invoice in memory, and B10: every draft computes. */
    const char *p[1] = {tenant};
    PGresult *r = billing__q(db,
                             "SELECT invoice_id FROM gm.invoices WHERE ($1::text IS NULL OR"
                             " tenant = $1) ORDER BY tenant, period_start",
                             1, p, PGRES_TUPLES_OK, "invoices to check", err, err_len, &rc);
    if (!r)
        return rc;
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        gm_billing_invoice *inv = NULL;
        char why[1024];
        rc = gm_billing_invoice_get(ctx, PQgetvalue(r, i, 0), NULL, &inv, why, sizeof why);
        if (rc)
            rc = gm_fail(err, err_len, GM_ECORRUPT, "B10 invoice %s does not compute: %s",
                         PQgetvalue(r, i, 0), why);
        else
            rc = gm_billing_invoice_check(inv, err, err_len);
        gm_billing_invoice_free(inv);
    }
    PQclear(r);
    return rc;
}
