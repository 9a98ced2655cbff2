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
        api__problem(r, 400, "invalid-parameter", "tenant",
                     "tenant: 1-128 characters A-Z a-z 0-9 . _ - (not first)");
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
    api__json(r, 200, o);
}
