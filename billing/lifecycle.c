/* After finalization: void (a credit note for what is still creditable, then status void, in
 * one checked transaction), credit notes, and the month close that finalizes every draft due
 * (tenant by tenant, months in order, idempotent, safe to run twice at once). */
#include "billing_int.h"

#include <stdlib.h>
#include <string.h>

int gm_billing_void(const gm_billing_ctx *ctx, const char *invoice_id, const char *reason,
                    char *err, size_t err_len)
{
    if (!gm_billing_valid_invoice_id(invoice_id))
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not an invoice id", invoice_id);
    if (!reason || !reason[0] || strlen(reason) > 1000)
        return gm_fail(err, err_len, GM_EINVAL, "reason: required, 1 to 1000 characters");
    const char *p[2] = {invoice_id, reason};
    /* BEGIN is checked: without it each statement would commit alone (found in review). */
    int rc = gm_pg_begin(ctx->db, NULL, ctx->now_us, err, err_len);
    if (rc)
        return rc;
    PGresult *r = billing__q(ctx->db,
                             "SELECT status, coalesce(number, ''), total - (SELECT"
                             " coalesce(sum(amount), 0) FROM gm.credit_notes WHERE invoice_id = $1)"
                             " > 0 FROM gm.invoices WHERE invoice_id = $1 FOR UPDATE",
                             1, p, PGRES_TUPLES_OK, "void", err, err_len, &rc);
    if (!r)
        goto fail;
    if (PQntuples(r) != 1) {
        PQclear(r);
        rc = gm_fail(err, err_len, GM_ENOTFOUND, "invoice %s: not found", invoice_id);
        goto fail;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "finalized")) {
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "invoice %s is %s: only a finalized invoice can be voided", invoice_id,
                     PQgetvalue(r, 0, 0));
        PQclear(r);
        goto fail;
    }
    bool remaining = !strcmp(PQgetvalue(r, 0, 2), "t");
    PQclear(r);
    if (remaining && (rc = billing__exec(ctx->db,
                                         "INSERT INTO gm.credit_notes (invoice_id, amount, reason)"
                                         " SELECT $1, i.total - (SELECT coalesce(sum(amount), 0)"
                                         " FROM gm.credit_notes WHERE invoice_id = $1), $2"
                                         " FROM gm.invoices i WHERE invoice_id = $1",
                                         2, p, "void credit note", err, err_len)))
        goto fail;
    if ((rc = billing__exec(ctx->db,
                            "UPDATE gm.invoices SET status = 'void', voided_at = gm.now()"
                            " WHERE invoice_id = $1",
                            1, p, "void", err, err_len)))
        goto fail;
    r = PQexec(ctx->db, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = billing__dbfail(ctx->db, r, "void commit", err, err_len);
    PQclear(r);
    return rc;
fail:
    PQclear(PQexec(ctx->db, "ROLLBACK"));
    return rc;
}

#define CN_COLS                                                                                    \
    "credit_note_id, number, invoice_id, tenant, currency, amount::text, reason, " BILLING_US(     \
        "created_at")

static int cn_from_row(const PGresult *r, int i, gm_billing_credit_note *cn, char *err,
                       size_t err_len)
{
    memset(cn, 0, sizeof *cn);
    snprintf(cn->credit_note_id, sizeof cn->credit_note_id, "%s", PQgetvalue(r, i, 0));
    snprintf(cn->number, sizeof cn->number, "%s", PQgetvalue(r, i, 1));
    snprintf(cn->invoice_id, sizeof cn->invoice_id, "%s", PQgetvalue(r, i, 2));
    snprintf(cn->tenant, sizeof cn->tenant, "%s", PQgetvalue(r, i, 3));
    snprintf(cn->currency, sizeof cn->currency, "%s", PQgetvalue(r, i, 4));
    snprintf(cn->amount, sizeof cn->amount, "%s", PQgetvalue(r, i, 5));
    snprintf(cn->reason, sizeof cn->reason, "%s", PQgetvalue(r, i, 6));
    billing__rd rd = {0};
    cn->created_at_us = billing__i64(&rd, r, i, 7);
    return billing__rd_fail(&rd, "credit note", err, err_len);
}

int gm_billing_credit_note_create(const gm_billing_ctx *ctx, const char *invoice_id,
                                  const char *amount, const char *reason,
                                  gm_billing_credit_note *out, char *err, size_t err_len)
{
    gm_i128 v;
    if (!amount || gm_dec_parse(amount, strlen(amount), 4, &v, NULL, 0) || v <= 0)
        return gm_fail(err, err_len, GM_EINVAL,
                       "amount: required, a positive decimal string in currency units with at most"
                       " the currency's minor-unit digits, e.g. \"12.50\"");
    if (!reason || !reason[0] || strlen(reason) > 1000)
        return gm_fail(err, err_len, GM_EINVAL, "reason: required, 1 to 1000 characters");
    if (!gm_billing_valid_invoice_id(invoice_id))
        return gm_fail(err, err_len, GM_ENOTFOUND, "invoice %.64s: not an invoice id", invoice_id);
    int rc = gm_pg_begin(ctx->db, NULL, ctx->now_us, err, err_len);
    if (rc)
        return rc;
    const char *p[3] = {invoice_id, amount, reason};
    PGresult *r = billing__q(ctx->db,
                             "INSERT INTO gm.credit_notes (invoice_id, amount, reason)"
                             " SELECT invoice_id, $2::numeric, $3 FROM gm.invoices"
                             " WHERE invoice_id = $1 RETURNING " CN_COLS,
                             3, p, PGRES_TUPLES_OK, "credit note", err, err_len, &rc);
    if (r && PQntuples(r) != 1)
        rc = gm_fail(err, err_len, GM_ENOTFOUND, "invoice %s: not found", invoice_id);
    else if (r)
        rc = cn_from_row(r, 0, out, err, err_len);
    PQclear(r);
    if (!rc) {
        r = PQexec(ctx->db, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = billing__dbfail(ctx->db, r, "credit note commit", err, err_len);
        PQclear(r);
    } else {
        PQclear(PQexec(ctx->db, "ROLLBACK"));
        /* the guard's check_violation (digits, creditable) and a non-finalized invoice */
        if (rc == GM_EDB && strstr(err, "only for finalized"))
            rc = GM_ECONFLICT;
    }
    return rc;
}

/* ---- The month close ------------------------------------------------------------------------ */
int gm_billing_close(const gm_billing_ctx *ctx, int64_t month_us, gm_billing_progress progress,
                     void *arg, gm_billing_close_summary *sum, char *err, size_t err_len)
{
    memset(sum, 0, sizeof *sum);
    int64_t month = gm_month_start(month_us);
    if (month > ctx->now_us) {
        char m[8];
        gm_billing_format_month(month, m);
        return gm_fail(err, err_len, GM_EINVAL, "close: %s has not begun yet", m);
    }
    char a[40];
    billing__time(month, a);
    /* Every month of an active contract up to this one gets its draft (its commitment is owed
     * also without usage), then this month's tenants with charges. */
    {
        const char *p[1] = {a};
        int rc;
        PGresult *r = billing__q(
            ctx->db,
            "INSERT INTO gm.invoices (tenant, issuer, period_start, period_end)"
            " SELECT c.tenant, coalesce((SELECT issuer FROM gm.tenants t WHERE t.tenant ="
            " c.tenant), 'GM'), m.m, m.m + interval '1 month'"
            " FROM (SELECT tenant, gm.month_of(min(imported_at)) AS first FROM gm.contracts"
            "       GROUP BY tenant) c"
            " CROSS JOIN LATERAL (SELECT (g AT TIME ZONE 'UTC') AS m FROM generate_series("
            "   c.first AT TIME ZONE 'UTC', $1::timestamptz AT TIME ZONE 'UTC',"
            "   interval '1 month') g) m"
            " WHERE m.m <= $1::timestamptz ORDER BY 1, 3"
            " ON CONFLICT (tenant, period_start) DO NOTHING",
            1, p, PGRES_COMMAND_OK, "contract drafts", err, err_len, &rc);
        if (!r)
            return rc;
        sum->drafts_created += atoi(PQcmdTuples(r));
        PQclear(r);
        int created = 0;
        if ((rc = gm_billing_drafts_ensure(ctx, month, NULL, &created, err, err_len)))
            return rc;
        sum->drafts_created += created;
    }
    /* The drafts due: this month and earlier ones (in order), tenant by tenant. */
    const char *p[1] = {a};
    int rc;
    PGresult *r = billing__q(ctx->db,
                             "SELECT invoice_id, tenant, status FROM gm.invoices i"
                             " WHERE period_start <= $1 AND (status = 'draft' OR period_start = $1)"
                             /* a draft before a finalized month is a backfill: the next draft
                              * bills it through adjustment lines */
                             " AND NOT (status = 'draft' AND EXISTS (SELECT 1 FROM gm.invoices f"
                             "   WHERE f.tenant = i.tenant AND f.status <> 'draft'"
                             "   AND f.period_start > i.period_start))"
                             " ORDER BY tenant, period_start",
                             1, p, PGRES_TUPLES_OK, "drafts due", err, err_len, &rc);
    if (!r)
        return rc;
    int n = PQntuples(r);
    char failed_tenant[136] = "";
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(r, i, 0), *tenant = PQgetvalue(r, i, 1);
        const char *outcome;
        if (strcmp(PQgetvalue(r, i, 2), "draft")) {
            sum->already_final++;
            outcome = "already final";
        } else if (!strcmp(failed_tenant, tenant)) {
            sum->failed++;
            outcome = "skipped: an earlier month of this tenant was not finalized";
        } else {
            char why[1024];
            int frc = gm_billing_finalize(ctx, id, why, sizeof why);
            if (!frc) {
                sum->finalized++;
                outcome = "finalized";
            } else if (frc == GM_ECONFLICT && strstr(why, "only a draft is finalized")) {
                sum->already_final++; /* a concurrent close finalized it first */
                outcome = "already final";
            } else if (frc == GM_ECONFLICT && strstr(why, "open for late events")) {
                sum->not_due++;
                outcome = "not due: grace window open";
                snprintf(failed_tenant, sizeof failed_tenant, "%s", tenant);
            } else if (frc == GM_ECONFLICT && strstr(why, "could not serialize")) {
                /* a concurrent close took this tenant's rows first: look again */
                gm_billing_invoice *inv = NULL;
                if (!billing__load_row(ctx->db, id, false, &inv, why, sizeof why) &&
                    strcmp(inv->status, "draft")) {
                    sum->already_final++;
                    outcome = "already final";
                } else {
                    sum->failed++;
                    outcome = "failed: concurrent update";
                    snprintf(failed_tenant, sizeof failed_tenant, "%s", tenant);
                }
                gm_billing_invoice_free(inv);
            } else {
                sum->failed++;
                gm_error("billing",
                         "msg=\"close: finalize failed\" invoice=%s tenant=%s err=\"%s\"", id,
                         tenant, why);
                outcome = "failed (logged)";
                snprintf(failed_tenant, sizeof failed_tenant, "%s", tenant);
            }
        }
        if (progress)
            progress(arg, i + 1, n, id, tenant, outcome);
    }
    PQclear(r);
    if (sum->failed)
        return gm_fail(err, err_len, GM_ECONFLICT, "close: %d invoice(s) could not be finalized",
                       sum->failed);
    return 0;
}
