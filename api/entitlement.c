/* GET /v1/tenants/{t}/entitlement: the hard-limit answer a node asks before it serves a
 * request, and POST /v1/tenants/{t}/budget.
 *
 * The answer comes from the server's mirror (entitlement_mirror.c: gm.budgets,
 * gm.month_spend and gm.budget_alerts in memory, pushed by NOTIFY at each commit, proven
 * fresh by heartbeats) while the mirror can vouch for a figure at most
 * entitlement_max_stale_ms old; otherwise (starting, listener reconnecting or loading, a
 * month before the loaded ones, or the mirror off) from one indexed query of the same
 * tables, on a pooled connection taken only then. Either way the answer says its source and
 * how stale it is (as_of, stale_us). docs/api.md, "Budgets and alerts". */
#include "api_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static void list_ints(int *out, int *n, int max, const char *list)
{
    *n = 0;
    for (const char *t = list; *t && *n < max;) {
        out[(*n)++] = atoi(t);
        t += strcspn(t, ",");
        t += *t == ',';
    }
}

/* The same answer from PostgreSQL (exact as of the query's gm.now()). false: problem set. */
static bool from_database(api_req *r, api_ent_view *v)
{
    /* Exact decimals stay text from PostgreSQL to the JSON answer. The budget's currency
     * picks the spend row; without a budget the tenant is always allowed. */
    static const char sql[] =
        "WITH p AS (SELECT gm.month_of(gm.now()) AS m, gm.now() AS now)"
        " SELECT (extract(epoch FROM p.m) * 1000000)::bigint, b.currency, b.monthly_limit::text,"
        " b.hard_limit, coalesce(s.amount, 0)::text,"
        " coalesce((extract(epoch FROM s.updated_at) * 1000000)::bigint, -1),"
        " (extract(epoch FROM p.now) * 1000000)::bigint,"
        " b.tenant IS NULL OR NOT b.hard_limit OR coalesce(s.amount, 0) < b.monthly_limit,"
        " (SELECT string_agg(a.threshold_percent::text, ',' ORDER BY a.threshold_percent)"
        "  FROM gm.budget_alerts a WHERE a.tenant = $1 AND a.period_start = p.m"
        "  AND a.monthly_limit = b.monthly_limit AND a.currency = b.currency),"
        " array_to_string(b.thresholds, ',')"
        " FROM p LEFT JOIN gm.budgets b ON b.tenant = $1"
        " LEFT JOIN gm.month_spend s ON s.tenant = $1 AND s.period_start = p.m"
        " AND s.currency = b.currency";
    char err[512];
    PGconn *db = r->db;
    if (!db && !(db = api__pool_get(api__pool(r->srv), api__config(r->srv)->db_wait_ms, err,
                                    sizeof err))) {
        gm_warn("api", "msg=\"no database connection\" error=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "the database is not available; retry shortly");
        snprintf(r->header_name, sizeof r->header_name, "Retry-After");
        snprintf(r->header_value, sizeof r->header_value, "1");
        return false;
    }
    const char *params[1] = {r->param[0]};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (!ok) {
        api__db_problem(r, res, "entitlement");
    } else {
        memset(v, 0, sizeof *v);
        v->period_us = atoll(PQgetvalue(res, 0, 0));
        v->has_budget = !PQgetisnull(res, 0, 1);
        v->allowed = !strcmp(PQgetvalue(res, 0, 7), "t");
        v->now_us = v->as_of_us = atoll(PQgetvalue(res, 0, 6));
        v->spend_updated_us = atoll(PQgetvalue(res, 0, 5));
        if (v->has_budget) {
            snprintf(v->currency, sizeof v->currency, "%s", PQgetvalue(res, 0, 1));
            snprintf(v->limit, sizeof v->limit, "%s", PQgetvalue(res, 0, 2));
            snprintf(v->spend, sizeof v->spend, "%s", PQgetvalue(res, 0, 4));
            v->hard = !strcmp(PQgetvalue(res, 0, 3), "t");
            list_ints(v->thr, &v->n_thr, 16, PQgetvalue(res, 0, 9));
            list_ints(v->crossed, &v->n_crossed, 32, PQgetvalue(res, 0, 8));
        }
        snprintf(v->source, sizeof v->source, "database");
    }
    PQclear(res);
    if (db != r->db)
        api__pool_put(api__pool(r->srv), db);
    return ok;
}

/* The reasons (docs/api.md, "Budgets and alerts"): no budget; within budget (spend < limit);
 * monthly limit reached (a hard budget at or over its limit: not allowed); soft limit
 * reached (a soft budget at or over its limit: still allowed). Exact decimals. */
static const char *entitlement_reason(const api_ent_view *v)
{
    if (!v->has_budget)
        return "no budget";
    if (!v->allowed)
        return "monthly limit reached";
    gm_i128 spend = 0, limit = 0;
    char why[128];
    if (!v->hard && !gm_dec_parse(v->spend, strlen(v->spend), 18, &spend, why, sizeof why) &&
        !gm_dec_parse(v->limit, strlen(v->limit), 18, &limit, why, sizeof why) && spend >= limit)
        return "soft limit reached";
    return "within budget";
}

void api__h_entitlement(api_req *r)
{
    if (!api__valid_tenant(r->param[0])) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s",
                     api__tenant_rule(r->param[0]));
        return;
    }
    api_ent_view v;
    api_mirror *m = api__mirror(r->srv);
    if (!api__mirror_answer(m, r->param[0], gm_now_us(), &v)) {
        if (!from_database(r, &v))
            return;
        api__mirror_count_db(m);
    }
    cJSON *o = cJSON_CreateObject();
    char period[8];
    api__format_month(v.period_us, period);
    cJSON_AddStringToObject(o, "tenant", r->param[0]);
    cJSON_AddStringToObject(o, "period", period);
    cJSON_AddBoolToObject(o, "allowed", v.allowed);
    cJSON_AddStringToObject(o, "reason", entitlement_reason(&v));
    if (v.has_budget) {
        cJSON_AddStringToObject(o, "currency", v.currency);
        cJSON_AddStringToObject(o, "limit", v.limit);
        cJSON_AddStringToObject(o, "spend", v.spend);
        cJSON_AddBoolToObject(o, "hard_limit", v.hard);
        cJSON *th = cJSON_AddArrayToObject(o, "thresholds_percent");
        for (int i = 0; i < v.n_thr; i++)
            cJSON_AddItemToArray(th, cJSON_CreateNumber(v.thr[i]));
        cJSON *cr = cJSON_AddArrayToObject(o, "thresholds_crossed");
        for (int i = 0; i < v.n_crossed; i++)
            cJSON_AddItemToArray(cr, cJSON_CreateNumber(v.crossed[i]));
    } else {
        cJSON_AddNullToObject(o, "currency");
        cJSON_AddNullToObject(o, "limit");
        cJSON_AddNullToObject(o, "spend");
    }
    /* spend_as_of: the gm.now() of the last charging transaction that moved this month's
     * spend; age_us: how long before the answer that was. */
    if (v.has_budget && v.spend_updated_us >= 0) {
        api__add_time(o, "spend_as_of", v.spend_updated_us);
        cJSON_AddNumberToObject(o, "age_us", (double)(v.now_us - v.spend_updated_us));
    } else {
        cJSON_AddNullToObject(o, "spend_as_of");
        cJSON_AddNullToObject(o, "age_us");
    }
    /* as_of: every charge committed before it is in spend; stale_us = answer time - as_of,
     * never more than entitlement_max_stale_ms from memory. */
    api__add_time(o, "as_of", v.as_of_us);
    cJSON_AddNumberToObject(o, "stale_us", (double)v.stale_us);
    cJSON_AddStringToObject(o, "source", v.source);
    api__json(r, 200, o);
}

/* The raw text of each item of the top-level array member `key` of the JSON object text s
 * (valid JSON: cJSON parsed it): the count of items (those past max not stored), or -1 when
 * the member is not found written plainly (a key with escapes) or is not an array. */
static int raw_array_items(const char *s, size_t len, const char *key, const char **it, size_t *il,
                           int max)
{
    size_t klen = strlen(key), i = 0;
    int depth = 0;
#define SKIP_WS(j)                                                                                 \
    while ((j) < len && isspace((unsigned char)s[j]))                                              \
    (j)++
    for (; i < len; i++) {
        char ch = s[i];
        if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            depth--;
        } else if (ch == '"') {
            size_t st = ++i;
            while (i < len && s[i] != '"')
                i += s[i] == '\\' ? 2 : 1;
            size_t j = i + 1;
            SKIP_WS(j);
            if (depth != 1 || i - st != klen || memcmp(s + st, key, klen) || j >= len ||
                s[j] != ':')
                continue;
            j++;
            SKIP_WS(j);
            if (j >= len || s[j] != '[')
                return -1;
            j++;
            SKIP_WS(j);
            int n = 0;
            if (j < len && s[j] == ']')
                return 0;
            while (j < len) {
                size_t b = j;
                int d = 0;
                for (; j < len; j++) {
                    char c = s[j];
                    if (c == '"') {
                        for (j++; j < len && s[j] != '"'; j += s[j] == '\\' ? 2 : 1)
                            ;
                    } else if (c == '[' || c == '{') {
                        d++;
                    } else if ((c == ']' || c == '}') && d-- == 0) {
                        break;
                    } else if (c == ',' && d == 0) {
                        break;
                    }
                }
                size_t e = j;
                while (e > b && isspace((unsigned char)s[e - 1]))
                    e--;
                if (n < max) {
                    it[n] = s + b;
                    il[n] = e - b;
                }
                n++;
                if (j >= len || s[j] != ',')
                    return n;
                j++;
                SKIP_WS(j);
            }
            return n;
        }
    }
#undef SKIP_WS
    return -1;
}

/* thresholds_percent: 1 to 16 JSON integers 1..1000 written as plain digits (no fraction,
 * exponent, sign or leading zero: 50.0, 5e1, 050 and 1e300 are refused; before, they were cast
 * to int, 1e300 undefined), strictly increasing. Writes "{50,80,100}" into thr. */
static bool thresholds_ok(api_req *r, const cJSON *th, char *thr, size_t thr_len)
{
    const char *it[17];
    size_t il[17];
    int n = cJSON_IsArray(th) ? cJSON_GetArraySize(th) : -1;
    if (n < 1 || n > 16) {
        if (n < 0)
            api__problem(r, 400, "invalid-field", "thresholds_percent",
                         "body.thresholds_percent: must be an array of 1 to 16 integers from 1 "
                         "to 1000, strictly increasing, e.g. [50, 80, 100]");
        else
            api__problem(r, 400, "invalid-field", "thresholds_percent",
                         "body.thresholds_percent: must have 1 to 16 thresholds, got %d", n);
        return false;
    }
    int raw = raw_array_items(r->body, r->body_len, "thresholds_percent", it, il, 17);
    int prev = 0;
    snprintf(thr, thr_len, "{");
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(th, i);
        int x = 0;
        bool plain = cJSON_IsNumber(v);
        if (plain && raw == n) { /* the text as written: 1 to 4 digits, no leading zero */
            plain = il[i] >= 1 && il[i] <= 4 && it[i][0] >= '1' && it[i][0] <= '9';
            for (size_t k = 0; plain && k < il[i]; k++)
                plain = isdigit((unsigned char)it[i][k]);
            if (plain)
                x = atoi(it[i]);
        } else if (plain) { /* not found as plain text (an escaped key): the value, checked */
            plain = v->valuedouble >= 1 && v->valuedouble <= 1000 &&
                    v->valuedouble == (double)(int)v->valuedouble;
            if (plain)
                x = (int)v->valuedouble;
        }
        if (!plain || x < 1 || x > 1000) {
            char got[48];
            if (raw == n)
                snprintf(got, sizeof got, "%.*s%s", (int)(il[i] > 40 ? 40 : il[i]), it[i],
                         il[i] > 40 ? "..." : "");
            else
                snprintf(got, sizeof got, "%s", cJSON_IsNumber(v) ? "a number" : "not a number");
            api__problem(r, 400, "invalid-field", "thresholds_percent",
                         "body.thresholds_percent[%d]: must be an integer from 1 to 1000 written "
                         "as plain digits (no fraction, exponent, sign or leading zero), got %s",
                         i, got);
            return false;
        }
        if (x <= prev) {
            api__problem(r, 400, "invalid-field", "thresholds_percent",
                         "body.thresholds_percent[%d]: must be greater than the one before it "
                         "(%d): thresholds are strictly increasing, got %d",
                         i, prev, x);
            return false;
        }
        prev = x;
        snprintf(thr + strlen(thr), thr_len - strlen(thr), "%s%d", i ? "," : "", x);
    }
    snprintf(thr + strlen(thr), thr_len - strlen(thr), "}");
    return true;
}

/* POST /v1/tenants/{t}/budget: sets the tenant's monthly budget (replaces it). Admins always;
 * the tenant's customer key only when an admin set customer_may_set, and then without
 * changing the currency or that flag. Body: {"currency": "USD", "monthly_limit": "1000.00",
 * "thresholds_percent": [50, 80, 100], "hard_limit": true, "customer_may_set": false}. */
void api__h_budget_set(api_req *r)
{
    const char *t = r->param[0];
    if (!api__valid_tenant(t)) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s", api__tenant_rule(t));
        return;
    }
    cJSON *b = api__body_object(
        r, "currency,monthly_limit,thresholds_percent,hard_limit,customer_may_set", false);
    if (!b)
        return;
    bool admin = r->auth.role == GM_API_ROLE_ADMIN;
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(b, "currency");
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(b, "monthly_limit");
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(b, "thresholds_percent");
    const cJSON *hard = cJSON_GetObjectItemCaseSensitive(b, "hard_limit");
    const cJSON *may = cJSON_GetObjectItemCaseSensitive(b, "customer_may_set");
    char thr[16 * 8 + 4] = "{";
    gm_i128 limit_e18 = 0;
    char why[160];
    bool cur_ok = cJSON_IsString(cur) && strlen(cur->valuestring) == 3;
    for (int i = 0; cur_ok && i < 3; i++)
        cur_ok = cur->valuestring[i] >= 'A' && cur->valuestring[i] <= 'Z';
    if (!cur_ok) {
        api__problem(r, 400, "invalid-field", "currency",
                     "body.currency: required, an ISO 4217 code of 3 letters A-Z, e.g. \"USD\"");
        goto out;
    }
    if (!cJSON_IsString(lim) ||
        gm_dec_parse(lim->valuestring, strlen(lim->valuestring), 18, &limit_e18, why, sizeof why) ||
        limit_e18 <= 0 || limit_e18 >= (gm_i128)10000000000000000000u * 10000000000000000000u) {
        /* gm.budgets.monthly_limit is numeric(38,18): at most 20 integer digits (a larger
         * value would be PostgreSQL's numeric overflow, a 500) */
        api__problem(r, 400, "invalid-field", "monthly_limit",
                     "body.monthly_limit: required, a decimal string > 0 and < 10^20 with at "
                     "most 18 fraction digits, e.g. \"1000.00\" (not a JSON number)");
        goto out;
    }
    if (th) {
        if (!thresholds_ok(r, th, thr, sizeof thr))
            goto out;
    } else {
        snprintf(thr, sizeof thr, "{50,80,100}");
    }
    if ((hard && !cJSON_IsBool(hard)) || (may && !cJSON_IsBool(may))) {
        api__problem(r, 400, "invalid-field",
                     hard && !cJSON_IsBool(hard) ? "hard_limit" : "customer_may_set",
                     "body.%s: true or false",
                     hard && !cJSON_IsBool(hard) ? "hard_limit" : "customer_may_set");
        goto out;
    }
    if (!admin && may) {
        api__problem(r, 403, "forbidden", "customer_may_set",
                     "body.customer_may_set: only an admin may set it");
        goto out;
    }
    if (!admin) {
        /* a customer keeps the budget's currency: another one is 422 naming it (before, a 403
         * that read like "not allowed") */
        const char *q[1] = {t};
        PGresult *cr = PQexecParams(r->db,
                                    "SELECT currency FROM gm.budgets WHERE tenant = $1"
                                    " AND customer_may_set",
                                    1, NULL, q, NULL, NULL, 0);
        if (PQresultStatus(cr) != PGRES_TUPLES_OK) {
            api__db_problem(r, cr, "budget");
            PQclear(cr);
            goto out;
        }
        if (PQntuples(cr) == 1 && strcmp(PQgetvalue(cr, 0, 0), cur->valuestring)) {
            api__problem(r, 422, "invalid-field", "currency",
                         "body.currency: must be the budget's currency %s (a customer key cannot "
                         "change it; an admin can), got %s",
                         PQgetvalue(cr, 0, 0), cur->valuestring);
            PQclear(cr);
            goto out;
        }
        PQclear(cr);
    }
    const char *p[6] = {t,
                        cur->valuestring,
                        lim->valuestring,
                        thr,
                        hard && cJSON_IsFalse(hard) ? "f" : "t",
                        may && cJSON_IsTrue(may) ? "t" : "f"};
    /* A customer changes an existing budget that allows it, in its currency; an admin
     * inserts or replaces. */
    const char *sql =
        admin ? "INSERT INTO gm.budgets AS g (tenant, currency, monthly_limit, thresholds,"
                " hard_limit, customer_may_set) VALUES ($1, $2, $3::numeric, $4::int[],"
                " $5::bool, $6::bool) ON CONFLICT (tenant) DO UPDATE SET currency ="
                " EXCLUDED.currency, monthly_limit = EXCLUDED.monthly_limit, thresholds ="
                " EXCLUDED.thresholds, hard_limit = EXCLUDED.hard_limit, customer_may_set ="
                " EXCLUDED.customer_may_set, updated_at = gm.now()"
                " RETURNING monthly_limit::text, array_to_string(thresholds, ','), hard_limit,"
                " customer_may_set"
              : "UPDATE gm.budgets SET monthly_limit = $3::numeric, thresholds = $4::int[],"
                " hard_limit = $5::bool, updated_at = gm.now() WHERE tenant = $1 AND"
                " currency = $2 AND customer_may_set AND $6::bool IS NOT NULL"
                " RETURNING monthly_limit::text, array_to_string(thresholds, ','), hard_limit,"
                " customer_may_set";
    PGresult *res = PQexecParams(r->db, sql, 6, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "budget");
    } else if (PQntuples(res) != 1) {
        api__problem(r, 403, "forbidden", "tenant",
                     "budget of %s: an admin has not allowed this tenant to set its budget "
                     "(customer_may_set)",
                     t);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tenant", t);
        cJSON_AddStringToObject(o, "currency", cur->valuestring);
        cJSON_AddStringToObject(o, "monthly_limit", PQgetvalue(res, 0, 0));
        cJSON *arr = cJSON_AddArrayToObject(o, "thresholds_percent");
        for (char *s = PQgetvalue(res, 0, 1); *s;) {
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(atoi(s)));
            s += strcspn(s, ",");
            s += *s == ',';
        }
        cJSON_AddBoolToObject(o, "hard_limit", !strcmp(PQgetvalue(res, 0, 2), "t"));
        cJSON_AddBoolToObject(o, "customer_may_set", !strcmp(PQgetvalue(res, 0, 3), "t"));
        api__json(r, 200, o);
    }
    PQclear(res);
out:
    cJSON_Delete(b);
}
