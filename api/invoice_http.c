/* HTTP handlers for finance and customers' invoices: list, get (JSON or CSV), finalize,
 * void, credit notes, re-rating runs, and revenue (a month's summary, or a day or month
 * series). Parsing and answers only: the work is billing/'s (gm_billing.h). */
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
    else if (rc == GM_EINVAL)
        api__problem(r, 422, "rule-violated", NULL, "%s", err);
    else {
        gm_error("api", "msg=\"invoice error\" path=\"%s\" err=\"%s\"", r->path, err);
        api__problem(r, 500, "internal", NULL, "invoice computation failed (logged)");
    }
}

bool api__valid_tenant(const char *t)
{
    return gm_ident_valid(GM_IDENT_TENANT, t);
}

const char *api__tenant_rule(const char *t)
{
    static __thread char rule[200];
    if (gm_ident_check(GM_IDENT_TENANT, t, t ? strlen(t) : 0, rule, sizeof rule) == 0)
        return gm_ident_rule(GM_IDENT_TENANT);
    return rule;
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
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s", api__tenant_rule(tenant));
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
        rc = api__invoice_ensure_period(r->srv, r->db, f.period_start_us, tenant, err, sizeof err);
    else {
        int64_t cur = gm_month_start(gm_now_us());
        rc = api__invoice_ensure_period(r->srv, r->db, cur, tenant, err, sizeof err);
        if (!rc)
            rc = api__invoice_ensure_period(r->srv, r->db, gm_month_start(cur - 1), tenant, err,
                                            sizeof err);
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
 * tenant's invoice under a customer key (the same answer for all three; the tenant is checked
 * before another tenant's draft would be computed). */
static api_invoice *visible_invoice(api_req *r)
{
    if (!valid_id(r->param[0], "inv_")) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return NULL;
    }
    api_invoice *inv = NULL;
    char err[1024];
    int rc = api__invoice_get(r->srv, r->db, r->param[0],
                              r->auth.role == GM_API_ROLE_CUSTOMER ? r->auth.tenant : NULL, &inv,
                              err, sizeof err);
    if (rc) {
        invoice_error(r, rc, err);
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
    char err[1024];
    gm_billing_ctx ctx = {r->db, NULL, 0, gm_now_us(), api__config(r->srv)->grace_hours, NULL};
    int rc = gm_billing_void(&ctx, r->param[0], reason, err, sizeof err);
    cJSON_Delete(b);
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
    char err[1024];
    gm_billing_ctx ctx = {r->db, NULL, 0, gm_now_us(), api__config(r->srv)->grace_hours, NULL};
    gm_billing_credit_note cn;
    int rc = gm_billing_credit_note_create(&ctx, r->param[0], amount->valuestring, reason, &cn, err,
                                           sizeof err);
    cJSON_Delete(b);
    if (rc)
        invoice_error(r, rc, err);
    else
        api__json(r, 201, gm_billing_credit_note_json(&cn));
}

void api__h_credit_notes_list(api_req *r)
{
    const char *tenant = api__query(r, "tenant"), *inv = api__query(r, "invoice_id");
    const char *cursor = api__query(r, "cursor");
    if (tenant && !api__valid_tenant(tenant)) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s", api__tenant_rule(tenant));
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

/* Minor digits of a currency: the ISO table, else what the book's cards declare (a card in a
 * currency outside the table states "minor_units"; assuming 2 rounded such revenue wrongly). */
static int minor_units_of(api_req *r, const char *currency)
{
    char err[256];
    const gm_rating_book *book = api__book_acquire(r->srv, r->db, err, sizeof err);
    int mu = book ? gm_rating_book_minor_units(book, currency) : -1;
    if (book)
        api__book_release(r->srv);
    return mu < 0 ? api__minor_units(currency) : mu;
}

/* GET /v1/revenue?from=YYYY-MM&to=YYYY-MM&bucket=day|month: list amounts per bucket and
 * currency over [from, to) (to exclusive; at most 366 days by day, 120 months by month). */
static void revenue_series(api_req *r, const char *from, const char *to, const char *bucket)
{
    int64_t a_us, b_us;
    if (!from || !api__parse_month(from, &a_us)) {
        api__problem(r, 400, "invalid-parameter", "from",
                     "from: required with bucket, a month YYYY-MM (1970-01 or later)");
        return;
    }
    if (!to || !api__parse_month(to, &b_us) || b_us <= a_us) {
        api__problem(r, 400, "invalid-parameter", "to",
                     "to: required with bucket, a month YYYY-MM after from (exclusive)");
        return;
    }
    bool day = !strcmp(bucket, "day");
    if (!day && strcmp(bucket, "month")) {
        api__problem(r, 400, "invalid-parameter", "bucket", "bucket: must be day or month");
        return;
    }
    if ((day && b_us - a_us > 366 * GM_US_PER_DAY) ||
        (!day && b_us - a_us > 3660 * GM_US_PER_DAY)) {
        api__problem(r, 400, "invalid-parameter", "to",
                     "to: at most 366 days after from for bucket=day, 120 months for month");
        return;
    }
    char a[40], b[40];
    api__time_param(a_us, a);
    api__time_param(b_us, b);
    const char *p[2] = {a, b};
    PGresult *res = PQexecParams(
        r->db,
        day ? "SELECT " US("day") ", currency, sum(amount)::text, sum(events)::text"
                                  " FROM gm.charges_daily WHERE day >= $1 AND day < $2 GROUP BY "
                                  "day, currency"
                                  " ORDER BY 1, 2"
            : "SELECT " US("gm.month_of(day)") ", currency, sum(amount)::text, sum(events)::text"
                                               " FROM gm.charges_daily WHERE day >= $1 AND day < $2"
                                               " GROUP BY gm.month_of(day), currency ORDER BY 1, 2",
        2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "revenue series");
        PQclear(res);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "from", from);
    cJSON_AddStringToObject(o, "to", to);
    cJSON_AddStringToObject(o, "bucket", bucket);
    cJSON *rows = cJSON_AddArrayToObject(o, "series");
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t us = 0;
        gm_i128 e18 = 0;
        if (gm_parse_i64(PQgetvalue(res, i, 0), strlen(PQgetvalue(res, i, 0)), &us) ||
            !api__num_e18(PQgetvalue(res, i, 2), &e18)) {
            cJSON_Delete(o);
            PQclear(res);
            gm_error("api", "msg=\"revenue series: unreadable row\"");
            api__problem(r, 500, "internal", NULL, "revenue series: unreadable row (logged)");
            return;
        }
        cJSON *row = cJSON_CreateObject();
        api__add_time(row, "bucket_start", us);
        const char *cur = PQgetvalue(res, i, 1);
        cJSON_AddStringToObject(row, "currency", cur);
        api__add_e18(row, "amount_exact", e18);
        int mu = minor_units_of(r, cur);
        api__add_minor(row, "amount", gm_rating_round_e18(e18, mu), mu);
        cJSON_AddStringToObject(row, "dimension_events", PQgetvalue(res, i, 3));
        cJSON_AddItemToArray(rows, row);
    }
    PQclear(res);
    cJSON_AddStringToObject(o, "basis",
                            "list amounts of the ledger's charges per UTC day or month (before"
                            " invoice-level tiers, discounts, commitments and credits); amount"
                            " rounded half to even");
    api__json(r, 200, o);
}

void api__h_revenue(api_req *r)
{
    const char *period = api__query(r, "period"), *bucket = api__query(r, "bucket");
    if (bucket || api__query(r, "from") || api__query(r, "to")) {
        if (period || api__query(r, "group_by")) {
            api__problem(r, 400, "invalid-parameter", period ? "period" : "group_by",
                         "%s: not with from/to/bucket (a series is per bucket and currency)",
                         period ? "period" : "group_by");
            return;
        }
        revenue_series(r, api__query(r, "from"), api__query(r, "to"), bucket ? bucket : "month");
        return;
    }
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
             "SELECT %scurrency, sum(amount)::text, sum(events)::text FROM gm.charges_daily"
             " WHERE day >= $1 AND day < $2 GROUP BY %scurrency ORDER BY %scurrency",
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
        gm_i128 e18 = 0;
        if (!api__num_e18(PQgetvalue(res, i, ng + 1), &e18)) {
            cJSON_Delete(o);
            PQclear(res);
            gm_error("api", "msg=\"revenue: unreadable amount\"");
            api__problem(r, 500, "internal", NULL, "revenue: unreadable amount (logged)");
            return;
        }
        cJSON *row = cJSON_CreateObject();
        int c = 0;
        for (int k = 0; k < 3; k++)
            if (mask & (1u << k))
                cJSON_AddStringToObject(row, cols[k], PQgetvalue(res, i, c++));
        const char *cur = PQgetvalue(res, i, ng);
        cJSON_AddStringToObject(row, "currency", cur);
        api__add_e18(row, "amount_exact", e18);
        int mu = minor_units_of(r, cur);
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

/* POST /v1/rerating-runs {"period": "YYYY-MM", "tenant"?: "...", "dry_run"?: bool,
 * "reason": "..."} (finance; Idempotency-Key as every POST). */
void api__h_rerating_run(api_req *r)
{
    cJSON *b = api__body_object(r, "period,tenant,dry_run,reason", false);
    if (!b)
        return;
    cJSON *period = cJSON_GetObjectItemCaseSensitive(b, "period");
    cJSON *tenant = cJSON_GetObjectItemCaseSensitive(b, "tenant");
    cJSON *dry = cJSON_GetObjectItemCaseSensitive(b, "dry_run");
    int64_t start;
    const char *reason = NULL;
    if (!cJSON_IsString(period) || !api__parse_month(period->valuestring, &start)) {
        api__problem(r, 400, "invalid-field", "period",
                     "body.period: required, a month YYYY-MM (1970-01 or later)");
        goto out;
    }
    if (tenant && !cJSON_IsNull(tenant) &&
        (!cJSON_IsString(tenant) || !api__valid_tenant(tenant->valuestring))) {
        api__problem(r, 400, "invalid-field", "tenant",
                     "body.tenant: a tenant id or null for all: %s",
                     cJSON_IsString(tenant) ? api__tenant_rule(tenant->valuestring)
                                            : "must be a string or null");
        goto out;
    }
    if (dry && !cJSON_IsBool(dry)) {
        api__problem(r, 400, "invalid-field", "dry_run", "body.dry_run: a boolean");
        goto out;
    }
    bool dry_run = dry && cJSON_IsTrue(dry);
    if (!reason_of(r, b, &reason))
        goto out;
    char err[1024], by[256];
    snprintf(by, sizeof by, "api key %s", r->auth.key_id);
    gm_billing_ctx ctx;
    if (!api__billing_begin(r->srv, r->db, &ctx, err, sizeof err)) {
        gm_error("api", "msg=\"re-rating: no rating book\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "rating book unavailable");
        goto out;
    }
    gm_billing_rerate_result *res = NULL;
    int rc = gm_billing_rerate(&ctx, start, cJSON_IsString(tenant) ? tenant->valuestring : NULL,
                               dry_run, by, reason, &res, err, sizeof err);
    api__billing_end(r->srv);
    if (rc)
        invoice_error(r, rc, err);
    else {
        cJSON *o = gm_billing_rerate_json(res, dry_run);
        cJSON_AddStringToObject(o, "period", period->valuestring);
        api__json(r, dry_run ? 200 : 201, o);
    }
    gm_billing_rerate_result_free(res);
out:
    cJSON_Delete(b);
}

/* Before the POST's transaction begins (api/server.c): an applied run of a valid month takes
 * that month's lock first, so that its snapshot sees the runs before it (billing's rule,
 * gm_billing_rerate_lock). Returns the month locked, or -1 (a dry run, or a body the handler
 * refuses). */
int64_t api__rerating_lock(api_req *r)
{
    cJSON *b = cJSON_ParseWithLength(r->body, r->body_len);
    cJSON *period = cJSON_GetObjectItemCaseSensitive(b, "period");
    cJSON *dry = cJSON_GetObjectItemCaseSensitive(b, "dry_run");
    int64_t start = -1;
    bool applied = cJSON_IsObject(b) && cJSON_IsString(period) &&
                   api__parse_month(period->valuestring, &start) && !cJSON_IsTrue(dry);
    char err[512];
    if (!applied)
        start = -1;
    else if (gm_billing_rerate_lock(r->db, start, true, err, sizeof err)) {
        gm_warn("api", "msg=\"re-rating lock failed\" err=\"%s\"", err);
        start = -1; /* the database fails the run as well */
    }
    cJSON_Delete(b);
    return start;
}

void api__rerating_unlock(api_req *r, int64_t month_us)
{
    char err[512];
    if (month_us >= 0 && gm_billing_rerate_lock(r->db, month_us, false, err, sizeof err))
        gm_warn("api", "msg=\"re-rating unlock failed\" err=\"%s\"", err);
}

/* GET /v1/rerating-runs?period=&tenant= (finance): applied runs, newest first (at most 200). */
void api__h_rerating_runs_list(api_req *r)
{
    const char *period = api__query(r, "period"), *tenant = api__query(r, "tenant");
    int64_t start = 0;
    if (period && !api__parse_month(period, &start)) {
        api__problem(r, 400, "invalid-parameter", "period",
                     "period: a month YYYY-MM (1970-01 or later)");
        return;
    }
    if (tenant && !api__valid_tenant(tenant)) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s", api__tenant_rule(tenant));
        return;
    }
    char ps[40];
    if (period)
        api__time_param(start, ps);
    const char *p[2] = {period ? ps : NULL, tenant};
    PGresult *res = PQexecParams(
        r->db,
        "SELECT run_id, to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM'), tenant,"
        " requested_by, reason, " US(
            "created_at") ", tenants, lines_changed,"
                          " delta_exact::text, delta_minor::text FROM gm.rerating_runs"
                          " WHERE ($1::timestamptz IS NULL OR period_start = $1)"
                          " AND ($2::text IS NULL OR tenant = $2) ORDER BY run_id DESC LIMIT 200",
        2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "re-rating runs");
        PQclear(res);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "run_id", atof(PQgetvalue(res, i, 0)));
        cJSON_AddStringToObject(j, "period", PQgetvalue(res, i, 1));
        if (PQgetisnull(res, i, 2))
            cJSON_AddNullToObject(j, "tenant");
        else
            cJSON_AddStringToObject(j, "tenant", PQgetvalue(res, i, 2));
        cJSON_AddStringToObject(j, "requested_by", PQgetvalue(res, i, 3));
        cJSON_AddStringToObject(j, "reason", PQgetvalue(res, i, 4));
        int64_t us = 0;
        if (gm_parse_i64(PQgetvalue(res, i, 5), strlen(PQgetvalue(res, i, 5)), &us))
            us = 0;
        api__add_time(j, "created_at", us);
        cJSON_AddNumberToObject(j, "tenants_changed", atoi(PQgetvalue(res, i, 6)));
        cJSON_AddNumberToObject(j, "lines_changed", atoi(PQgetvalue(res, i, 7)));
        cJSON_AddStringToObject(j, "delta_exact", PQgetvalue(res, i, 8));
        cJSON_AddItemToObject(j, "delta_minor", cJSON_Parse(PQgetvalue(res, i, 9)));
        cJSON_AddItemToArray(items, j);
    }
    PQclear(res);
    api__json(r, 200, o);
}
