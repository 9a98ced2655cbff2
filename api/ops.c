/* Who-am-I (GET /v1/me: the calling key's role, tenant, id, name and expiry) and the
 * operators' view of the rater (GET /v1/ops/ingest: its Prometheus metrics fetched over plain
 * HTTP/1.1 with a short timeout, parsed and returned as JSON). */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#define US(x) "coalesce((extract(epoch FROM " x ") * 1000000)::bigint, 0)"

static int64_t us_of(const char *s)
{
    int64_t us = 0;
    if (gm_parse_i64(s, strlen(s), &us))
        us = 0;
    return us;
}

void api__h_me(api_req *r)
{
    const char *params[1] = {r->auth.key_id};
    PGresult *res = PQexecParams(r->db,
                                 "SELECT name, " US("created_at") ", " US(
                                     "expires_at") " FROM gm.api_keys WHERE key_id = $1",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "api key");
        PQclear(res);
        return;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        api__problem(r, 401, "unauthorized", "Authorization", "API key %s unknown", r->auth.key_id);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key_id", r->auth.key_id);
    cJSON_AddStringToObject(o, "role", api__role_name(r->auth.role));
    if (r->auth.role == GM_API_ROLE_CUSTOMER)
        cJSON_AddStringToObject(o, "tenant", r->auth.tenant);
    else
        cJSON_AddNullToObject(o, "tenant");
    cJSON_AddStringToObject(o, "name", PQgetvalue(res, 0, 0));
    api__add_time(o, "created_at", us_of(PQgetvalue(res, 0, 1)));
    api__add_time(o, "expires_at", us_of(PQgetvalue(res, 0, 2)));
    PQclear(res);
    api__json(r, 200, o);
}
