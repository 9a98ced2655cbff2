/* GET /v1/tenants/{t}/entitlement: the hard-limit answer a node asks before it serves a
 * request. One indexed read of gm.budgets and gm.month_spend (both kept in the charging
 * transaction, sql/0009); the answer says how old the spend figure is. docs/api.md,
 * "Budgets and alerts". */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

void api__h_entitlement(api_req *r)
{
    if (!api__valid_tenant(r->param[0])) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s",
                     api__tenant_rule(r->param[0]));
        return;
    }
    /* Exact decimals stay text from PostgreSQL to the JSON answer. The budget's currency
     * picks the spend row; without a budget the tenant is always allowed. */
    static const char sql[] =
        "WITH p AS (SELECT gm.month_of(gm.now()) AS m, gm.now() AS now)"
        " SELECT to_char(p.m AT TIME ZONE 'UTC', 'YYYY-MM'), b.currency, b.monthly_limit::text,"
        " b.hard_limit, coalesce(s.amount, 0)::text,"
        " coalesce((extract(epoch FROM s.updated_at) * 1000000)::bigint, -1),"
        " (extract(epoch FROM p.now) * 1000000)::bigint,"
        " b.tenant IS NULL OR NOT b.hard_limit OR coalesce(s.amount, 0) < b.monthly_limit,"
        " (SELECT string_agg(a.threshold_percent::text, ',' ORDER BY a.threshold_percent)"
        "  FROM gm.budget_alerts a WHERE a.tenant = $1 AND a.period_start = p.m),"
        " array_to_string(b.thresholds, ',')"
        " FROM p LEFT JOIN gm.budgets b ON b.tenant = $1"
        " LEFT JOIN gm.month_spend s ON s.tenant = $1 AND s.period_start = p.m"
        " AND s.currency = b.currency";
    /* Optionally from memory (entitlement_cache_ms): the answer as computed, its as_of says
     * when; slots shared with the usage cache, keys prefixed "entitlement|". */
    char ckey[160];
    snprintf(ckey, sizeof ckey, "entitlement|%s", r->param[0]);
    int ttl_ms = api__config(r->srv)->entitlement_cache_ms;
    uint64_t h = 1469598103934665603ull;
    for (const char *c = ckey; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    pthread_mutex_t *cache_mu;
    api_cached *slot = &api__usage_cache(r->srv, &cache_mu)[h % API_USAGE_CACHE_SLOTS];
    if (ttl_ms > 0) {
        pthread_mutex_lock(cache_mu);
        if (slot->key && !strcmp(slot->key, ckey) && slot->expires_us > gm_mono_us()) {
            char *copy = gm_xmalloc(slot->len + 1);
            memcpy(copy, slot->body, slot->len + 1);
            size_t len = slot->len;
            pthread_mutex_unlock(cache_mu);
            api__text(r, 200, "application/json", copy, len);
            return;
        }
        pthread_mutex_unlock(cache_mu);
    }
    const char *params[1] = {r->param[0]};
    PGresult *res = PQexecParams(r->db, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        api__db_problem(r, res, "entitlement");
        PQclear(res);
        return;
    }
    bool has_budget = !PQgetisnull(res, 0, 1);
    bool allowed = !strcmp(PQgetvalue(res, 0, 7), "t");
    int64_t updated = atoll(PQgetvalue(res, 0, 5)), now = atoll(PQgetvalue(res, 0, 6));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", r->param[0]);
    cJSON_AddStringToObject(o, "period", PQgetvalue(res, 0, 0));
    cJSON_AddBoolToObject(o, "allowed", allowed);
    cJSON_AddStringToObject(o, "reason",
                            !has_budget ? "no budget"
                            : allowed   ? "within budget"
                                        : "monthly limit reached");
    if (has_budget) {
        cJSON_AddStringToObject(o, "currency", PQgetvalue(res, 0, 1));
        cJSON_AddStringToObject(o, "limit", PQgetvalue(res, 0, 2));
        cJSON_AddStringToObject(o, "spend", PQgetvalue(res, 0, 4));
        cJSON_AddBoolToObject(o, "hard_limit", !strcmp(PQgetvalue(res, 0, 3), "t"));
        cJSON *th = cJSON_AddArrayToObject(o, "thresholds_percent");
        cJSON *cr = cJSON_AddArrayToObject(o, "thresholds_crossed");
        for (int k = 0; k < 2; k++) {
            char *list = PQgetvalue(res, 0, k ? 8 : 9);
            for (char *t = list; *t;) {
                cJSON_AddItemToArray(k ? cr : th, cJSON_CreateNumber(atoi(t)));
                t += strcspn(t, ",");
                t += *t == ',';
            }
        }
    } else {
        cJSON_AddNullToObject(o, "currency");
        cJSON_AddNullToObject(o, "limit");
        cJSON_AddNullToObject(o, "spend");
    }
    /* The spend includes every charge committed up to spend_as_of (the last charging
     * transaction of the month); age_us says how long ago that was. */
    if (has_budget && updated >= 0) {
        api__add_time(o, "spend_as_of", updated);
        cJSON_AddNumberToObject(o, "age_us", (double)(now - updated));
    } else {
        cJSON_AddNullToObject(o, "spend_as_of");
        cJSON_AddNullToObject(o, "age_us");
    }
    api__add_time(o, "as_of", now);
    PQclear(res);
    if (ttl_ms > 0) {
        char *body = cJSON_PrintUnformatted(o);
        size_t len = strlen(body);
        pthread_mutex_lock(cache_mu);
        free(slot->key);
        free(slot->body);
        slot->key = gm_xstrdup(ckey);
        slot->body = gm_xmalloc(len + 1);
        memcpy(slot->body, body, len + 1);
        slot->len = len;
        slot->expires_us = gm_mono_us() + (int64_t)ttl_ms * 1000;
        pthread_mutex_unlock(cache_mu);
        cJSON_Delete(o);
        api__text(r, 200, "application/json", body, len);
        return;
    }
    api__json(r, 200, o);
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
        int n = cJSON_IsArray(th) ? cJSON_GetArraySize(th) : -1, prev = 0;
        bool ok = n >= 1 && n <= 16;
        for (int i = 0; ok && i < n; i++) {
            const cJSON *v = cJSON_GetArrayItem(th, i);
            ok = cJSON_IsNumber(v) && v->valuedouble == (double)(int)v->valuedouble &&
                 v->valueint > prev && v->valueint <= 1000;
            if (ok) {
                prev = v->valueint;
                snprintf(thr + strlen(thr), sizeof thr - strlen(thr), "%s%d", i ? "," : "",
                         v->valueint);
            }
        }
        if (!ok) {
            api__problem(r, 400, "invalid-field", "thresholds_percent",
                         "body.thresholds_percent: 1 to 16 integers from 1 to 1000, strictly "
                         "increasing, e.g. [50, 80, 100]");
            goto out;
        }
        strcat(thr, "}");
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
                     "(customer_may_set), or the currency is not the budget's",
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
