/* HTTP handlers for finance and customers' invoices: list, get (JSON or CSV), finalize,
 * void, credit notes, and a period's revenue summary. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#define US(x) "coalesce((extract(epoch FROM " x ") * 1000000)::bigint, 0)"

static void invoice_error(api_req *r, int rc, const char *err)
{
    if (rc == GM_ENOTFOUND)
        api__problem(r, 404, "not-found", NULL, "no such resource");
    else if (rc == GM_ECONFLICT)
        api__problem(r, 409, "invalid-state", NULL, "%s", err);
    else {
        gm_error("api", "msg=\"invoice error\" path=\"%s\" err=\"%s\"", r->path, err);
        api__problem(r, 500, "internal", NULL, "invoice computation failed (logged)");
    }
}

bool api__valid_tenant(const char *t)
{
    size_t n = strlen(t);
    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (i && (c == '.' || c == '_' || c == '-'))))
            return false;
    }
    return true;
}

static bool valid_id(const char *s, const char *prefix)
{
    size_t pl = strlen(prefix), n = strlen(s);
    if (n != pl + 32 || strncmp(s, prefix, pl))
        return false;
    for (size_t i = pl; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return false;
    return true;
}

static void list_common(api_req *r, const char *tenant)
{
    api_invoice_filter f = {0};
    const char *period = api__query(r, "period"), *status = api__query(r, "status");
    const char *cursor = api__query(r, "cursor");
    if (period && !(f.has_period = api__parse_month(period, &f.period_start_us))) {
        api__problem(r, 400, "invalid-parameter", "period",
                     "period: must be a month YYYY-MM (1970-01 or later)");
        return;
    }
    if (status && strcmp(status, "draft") && strcmp(status, "finalized") &&
        strcmp(status, "void")) {
        api__problem(r, 400, "invalid-parameter", "status",
                     "status: must be draft, finalized or void");
        return;
    }
    if (tenant && !api__valid_tenant(tenant)) {
        api__problem(r, 400, "invalid-parameter", "tenant",
                     "tenant: 1-128 characters A-Z a-z 0-9 . _ - (not first)");
        return;
    }
    if (cursor && !api__cursor_parse(r, "inv", cursor, &f.cursor_period_us, f.cursor_tenant,
                                     sizeof f.cursor_tenant))
        return;
    f.has_cursor = cursor != NULL;
    if (!api__parse_limit(r, 50, 200, &f.limit))
        return;
    f.tenant = tenant;
    f.status = status;
    char err[1024];
    int rc = 0;
    /* Drafts exist as rows once a period has charges: create the missing ones first. */
    if (f.has_period)
        rc = api__invoice_ensure_period(r->db, f.period_start_us, tenant, err, sizeof err);
    else {
        int64_t cur = gm_month_start(gm_now_us());
        rc = api__invoice_ensure_period(r->db, cur, tenant, err, sizeof err);
        if (!rc)
            rc =
                api__invoice_ensure_period(r->db, gm_month_start(cur - 1), tenant, err, sizeof err);
    }
    api_invoice **v = NULL;
    size_t n = 0;
    char next[600];
    if (!rc)
        rc = api__invoice_list(r->srv, r->db, &f, &v, &n, next, sizeof next, err, sizeof err);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            api__invoice_free(v[i]);
        free(v);
        invoice_error(r, rc, err);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(items, api__invoice_json(v[i], false));
        api__invoice_free(v[i]);
    }
    free(v);
    if (next[0])
        cJSON_AddStringToObject(o, "next_cursor", next);
    else
        cJSON_AddNullToObject(o, "next_cursor");
    api__json(r, 200, o);
}

void api__h_invoices_list(api_req *r)
{
    const char *tenant = api__query(r, "tenant");
    if (r->auth.role == GM_API_ROLE_CUSTOMER) {
        if (tenant && strcmp(tenant, r->auth.tenant)) {
            api__problem(r, 404, "not-found", NULL, "no such resource");
            return;
        }
        tenant = r->auth.tenant;
    }
    list_common(r, tenant);
}

void api__h_tenant_invoices(api_req *r)
{
    if (!api__valid_tenant(r->param[0])) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    list_common(r, r->param[0]);
}

/* Loads an invoice the caller may see: 404 for a malformed id, a missing invoice, or another
 * tenant's invoice under a customer key (the same answer for all three). */
static api_invoice *visible_invoice(api_req *r)
{
    if (!valid_id(r->param[0], "inv_")) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return NULL;
    }
    api_invoice *inv = NULL;
    char err[1024];
    int rc = api__invoice_get(r->srv, r->db, r->param[0], &inv, err, sizeof err);
    if (rc) {
        invoice_error(r, rc, err);
        return NULL;
    }
    if (r->auth.role == GM_API_ROLE_CUSTOMER && strcmp(inv->tenant, r->auth.tenant)) {
        api__invoice_free(inv);
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return NULL;
    }
    return inv;
}

void api__h_invoice_get(api_req *r)
{
    api_invoice *inv = visible_invoice(r);
    if (!inv)
        return;
    if (api__wants_csv(r)) {
        size_t len;
        char *csv = api__invoice_csv(inv, &len);
        api__text(r, 200, "text/csv; charset=utf-8", csv, len);
    } else {
        api__json(r, 200, api__invoice_json(inv, true));
    }
    api__invoice_free(inv);
}

void api__h_invoice_finalize(api_req *r)
{
    cJSON *b = api__body_object(r, "", true);
    if (!b)
        return;
    cJSON_Delete(b);
    if (!valid_id(r->param[0], "inv_")) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    char err[1024];
    int rc = api__invoice_finalize(r->srv, r->db, r->param[0], err, sizeof err);
    if (rc) {
        invoice_error(r, rc, err);
        return;
    }
    api_invoice *inv = visible_invoice(r);
    if (inv) {
        api__json(r, 200, api__invoice_json(inv, true));
        api__invoice_free(inv);
    }
}

static bool reason_of(api_req *r, cJSON *b, const char **out)
{
    cJSON *reason = cJSON_GetObjectItemCaseSensitive(b, "reason");
    if (!cJSON_IsString(reason) || !reason->valuestring[0] || strlen(reason->valuestring) > 1000) {
        api__problem(r, 400, "invalid-field", "reason",
                     "body.reason: required, a string of 1 to 1000 characters");
        return false;
    }
    *out = reason->valuestring;
    return true;
}

static cJSON *credit_note_json(const PGresult *res, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "credit_note_id", PQgetvalue(res, i, 0));
    cJSON_AddStringToObject(o, "number", PQgetvalue(res, i, 1));
    cJSON_AddStringToObject(o, "invoice_id", PQgetvalue(res, i, 2));
    cJSON_AddStringToObject(o, "tenant", PQgetvalue(res, i, 3));
    cJSON_AddStringToObject(o, "currency", PQgetvalue(res, i, 4));
    cJSON_AddStringToObject(o, "amount", PQgetvalue(res, i, 5));
    cJSON_AddStringToObject(o, "reason", PQgetvalue(res, i, 6));
    int64_t us = 0;
    if (gm_parse_i64(PQgetvalue(res, i, 7), strlen(PQgetvalue(res, i, 7)), &us))
        us = 0;
    api__add_time(o, "created_at", us);
    return o;
}

#define CN_COLS                                                                                    \
    "credit_note_id, number, invoice_id, tenant, currency, amount::text, reason, " US("created_"   \
                                                                                      "at")

void api__h_invoice_void(api_req *r)
{
    cJSON *b = api__body_object(r, "reason", false);
    if (!b)
        return;
    const char *reason;
    if (!reason_of(r, b, &reason)) {
        cJSON_Delete(b);
        return;
    }
    if (!valid_id(r->param[0], "inv_")) {
        cJSON_Delete(b);
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    const char *p[2] = {r->param[0], reason};
    char err[512];
    bool own = false; /* over HTTP: the request's transaction (api/idempotency.c) */
    if (api__tx_begin(r->db, NULL, gm_now_us(), &own, err, sizeof err)) {
        cJSON_Delete(b);
        gm_error("api", "msg=\"void: BEGIN failed\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "database unavailable");
        return;
    }
    PGresult *res =
        PQexecParams(r->db,
                     "SELECT status, coalesce(number, ''), total - (SELECT coalesce(sum(amount),"
                     " 0) FROM gm.credit_notes WHERE invoice_id = $1)"
                     " FROM gm.invoices WHERE invoice_id = $1 FOR UPDATE",
                     1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "void");
        goto fail;
    }
    if (PQntuples(res) != 1) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        goto fail;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "finalized")) {
        api__problem(r, 409, "invalid-state", NULL,
                     "invoice %s is %s: only a finalized invoice can be voided", r->param[0],
                     PQgetvalue(res, 0, 0));
        goto fail;
    }
    bool remaining = PQgetvalue(res, 0, 2)[0] != '-' &&
                     strspn(PQgetvalue(res, 0, 2), "0.") != strlen(PQgetvalue(res, 0, 2));
    PQclear(res);
    res = NULL;
    if (remaining) {
        res = PQexecParams(r->db,
                           "INSERT INTO gm.credit_notes (invoice_id, amount, reason)"
                           " SELECT $1, i.total - (SELECT coalesce(sum(amount), 0)"
                           " FROM gm.credit_notes WHERE invoice_id = $1), $2"
                           " FROM gm.invoices i WHERE invoice_id = $1",
                           2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            api__db_problem(r, res, "void credit note");
            goto fail;
        }
        PQclear(res);
    }
    res = PQexecParams(r->db,
                       "UPDATE gm.invoices SET status = 'void', voided_at = gm.now()"
                       " WHERE invoice_id = $1",
                       1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        api__db_problem(r, res, "void");
        goto fail;
    }
    PQclear(res);
    res = NULL;
    if (api__tx_end(r->db, own, 0, err, sizeof err)) {
        gm_error("api", "msg=\"void: COMMIT failed\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "the void was not saved; retry");
        goto fail;
    }
    cJSON_Delete(b);
    api_invoice *inv = visible_invoice(r);
    if (inv) {
        api__json(r, 200, api__invoice_json(inv, true));
        api__invoice_free(inv);
    }
    return;
fail:
    PQclear(res);
    if (own)
        PQclear(PQexec(r->db, "ROLLBACK")); /* else the request's transaction rolls back */
    cJSON_Delete(b);
}

/* The amount of a credit note has at most the digits of its invoice's currency: "1.234" is
 * refused for USD (2), "1.5" for JPY (0). true when it fits, else a 422 naming amount. An
 * invoice that is not finalized has no currency yet: the insert's trigger refuses it. */
static bool credit_amount_fits(api_req *r, const char *invoice_id, const char *amount)
{
    const char *p[1] = {invoice_id};
    PGresult *res = PQexecParams(r->db,
                                 "SELECT coalesce(currency, ''), minor_units FROM gm.invoices"
                                 " WHERE invoice_id = $1 AND status <> 'draft'",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "credit note");
        PQclear(res);
        return false;
    }
    bool fits = true;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1)) {
        int mu = atoi(PQgetvalue(res, 0, 1));
        gm_i128 v;
        if (gm_dec_parse(amount, strlen(amount), mu, &v, NULL, 0)) {
            api__problem(r, 422, "invalid-field", "amount",
                         "body.amount: \"%.40s\" has more fraction digits than %s has minor "
                         "units (%d)",
                         amount, PQgetvalue(res, 0, 0), mu);
            fits = false;
        }
    }
    PQclear(res);
    return fits;
}

void api__h_credit_note_create(api_req *r)
{
    cJSON *b = api__body_object(r, "amount,reason", false);
    if (!b)
        return;
    const char *reason;
    cJSON *amount = cJSON_GetObjectItemCaseSensitive(b, "amount");
    gm_i128 v;
    if (!cJSON_IsString(amount) ||
        gm_dec_parse(amount->valuestring, strlen(amount->valuestring), 18, &v, NULL, 0) || v <= 0) {
        api__problem(r, 400, "invalid-field", "amount",
                     "body.amount: required, a positive decimal string in currency units with at"
                     " most the currency's minor-unit digits, e.g. \"12.50\"");
        cJSON_Delete(b);
        return;
    }
    if (!reason_of(r, b, &reason)) {
        cJSON_Delete(b);
        return;
    }
    if (!valid_id(r->param[0], "inv_")) {
        cJSON_Delete(b);
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    if (!credit_amount_fits(r, r->param[0], amount->valuestring)) {
        cJSON_Delete(b);
        return;
    }
    const char *p[3] = {r->param[0], amount->valuestring, reason};
    PGresult *res = PQexecParams(r->db,
                                 "INSERT INTO gm.credit_notes (invoice_id, amount, reason)"
                                 " SELECT invoice_id, $2::numeric, $3 FROM gm.invoices"
                                 " WHERE invoice_id = $1 RETURNING " CN_COLS,
                                 3, NULL, p, NULL, NULL, 0);
    cJSON_Delete(b);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "credit note");
        PQclear(res);
        return;
    }
    if (PQntuples(res) != 1)
        api__problem(r, 404, "not-found", NULL, "no such resource");
    else
        api__json(r, 201, credit_note_json(res, 0));
    PQclear(res);
}

void api__h_credit_notes_list(api_req *r)
{
    const char *tenant = api__query(r, "tenant"), *inv = api__query(r, "invoice_id");
    const char *cursor = api__query(r, "cursor");
    if (tenant && !api__valid_tenant(tenant)) {
        api__problem(r, 400, "invalid-parameter", "tenant",
                     "tenant: 1-128 characters A-Z a-z 0-9 . _ - (not first)");
        return;
    }
    if (inv && !valid_id(inv, "inv_")) {
        api__problem(r, 400, "invalid-parameter", "invoice_id",
                     "invoice_id: must be inv_ followed by 32 lowercase hex digits");
        return;
    }
    int64_t c_us = 0;
    char c_id[136] = "";
    if (cursor && !api__cursor_parse(r, "cn", cursor, &c_us, c_id, sizeof c_id))
        return;
    int limit;
    if (!api__parse_limit(r, 50, 200, &limit))
        return;
    char lim[16], cts[40];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    if (cursor)
        api__time_param(c_us, cts);
    const char *p[5] = {tenant, inv, cursor ? cts : NULL, cursor ? c_id : NULL, lim};
    PGresult *res = PQexecParams(r->db,
                                 "SELECT " CN_COLS " FROM gm.credit_notes"
                                 " WHERE ($1::text IS NULL OR tenant = $1)"
                                 " AND ($2::text IS NULL OR invoice_id = $2)"
                                 " AND ($3::timestamptz IS NULL OR created_at > $3"
                                 "      OR (created_at = $3 AND credit_note_id > $4))"
                                 " ORDER BY created_at, credit_note_id LIMIT $5::int",
                                 5, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "credit notes");
        PQclear(res);
        return;
    }
    int n = PQntuples(res);
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (int i = 0; i < n && i < limit; i++)
        cJSON_AddItemToArray(items, credit_note_json(res, i));
    if (n > limit) {
        char next[600];
        int64_t us = 0;
        if (gm_parse_i64(PQgetvalue(res, limit - 1, 7), strlen(PQgetvalue(res, limit - 1, 7)), &us))
            us = 0;
        api__cursor_make(r->srv, "cn", us, PQgetvalue(res, limit - 1, 0), next, sizeof next);
        cJSON_AddStringToObject(o, "next_cursor", next);
    } else {
        cJSON_AddNullToObject(o, "next_cursor");
    }
    PQclear(res);
    api__json(r, 200, o);
}

/* group_by: a comma-separated subset of `allowed`; sets bits in *mask (bit i = allowed[i]). */
bool api__parse_group_by(api_req *r, const char *s, const char *const *allowed, int n,
                         unsigned *mask);
bool api__parse_group_by(api_req *r, const char *s, const char *const *allowed, int n,
                         unsigned *mask)
{
    *mask = 0;
    if (!s)
        return true;
    const char *p = s;
    while (1) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        int hit = -1;
        for (int i = 0; i < n; i++)
            if (strlen(allowed[i]) == l && !memcmp(allowed[i], p, l))
                hit = i;
        if (hit < 0 || (*mask & (1u << hit))) {
            char list[96] = "";
            for (int i = 0; i < n; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         allowed[i]);
            api__problem(r, 400, "invalid-parameter", "group_by",
                         "group_by: a comma-separated list of distinct names from: %s", list);
            return false;
        }
        *mask |= 1u << hit;
        if (!e)
            break;
        p = e + 1;
    }
    return true;
}

void api__h_revenue(api_req *r)
{
    const char *period = api__query(r, "period");
    int64_t start;
    if (!period || !api__parse_month(period, &start)) {
        api__problem(r, 400, "invalid-parameter", "period",
                     "period: required, a month YYYY-MM (1970-01 or later)");
        return;
    }
    static const char *const cols[] = {"tenant", "site", "model"};
    unsigned mask;
    if (!api__parse_group_by(r, api__query(r, "group_by"), cols, 3, &mask))
        return;
    if (!mask)
        mask = 7;
    /* Columns come from the fixed list above, never from the request text. */
    char sql[1024], sel[96] = "", grp[96] = "";
    int ng = 0;
    for (int i = 0; i < 3; i++)
        if (mask & (1u << i)) {
            snprintf(sel + strlen(sel), sizeof sel - strlen(sel), "%s, ", cols[i]);
            snprintf(grp + strlen(grp), sizeof grp - strlen(grp), "%s, ", cols[i]);
            ng++;
        }
    snprintf(sql, sizeof sql,
             "SELECT %scurrency, sum(amount)::text, sum(events)::text FROM gm.charges"
             " WHERE hour >= $1 AND hour < $2 GROUP BY %scurrency ORDER BY %scurrency",
             sel, grp, grp);
    char a[40], b[40];
    api__time_param(start, a);
    api__time_param(gm_month_next(start), b);
    const char *p[2] = {a, b};
    PGresult *res = PQexecParams(r->db, sql, 2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "revenue");
        PQclear(res);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "period", period);
    cJSON *gb = cJSON_AddArrayToObject(o, "group_by");
    for (int i = 0; i < 3; i++)
        if (mask & (1u << i))
            cJSON_AddItemToArray(gb, cJSON_CreateString(cols[i]));
    cJSON *rows = cJSON_AddArrayToObject(o, "rows");
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *row = cJSON_CreateObject();
        int c = 0;
        for (int k = 0; k < 3; k++)
            if (mask & (1u << k))
                cJSON_AddStringToObject(row, cols[k], PQgetvalue(res, i, c++));
        const char *cur = PQgetvalue(res, i, ng);
        cJSON_AddStringToObject(row, "currency", cur);
        gm_i128 e18 = 0;
        if (!api__num_e18(PQgetvalue(res, i, ng + 1), &e18))
            e18 = 0;
        api__add_e18(row, "amount_exact", e18);
        int mu = api__minor_units(cur);
        api__add_minor(row, "amount", gm_rating_round_e18(e18, mu), mu);
        cJSON_AddStringToObject(row, "dimension_events", PQgetvalue(res, i, ng + 2));
        cJSON_AddItemToArray(rows, row);
    }
    PQclear(res);
    cJSON_AddStringToObject(o, "basis",
                            "list amounts of the ledger's charges (before invoice-level tiers,"
                            " discounts, commitments and credits); amount rounded half to even");
    api__json(r, 200, o);
}
