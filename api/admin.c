/* Admin endpoints: tenants, contracts and rate-card versions (imported through the ledger
 * module, validated by the rating engine), and API keys (created once and shown once,
 * revocable, with an expiry). */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#define US(x) "coalesce((extract(epoch FROM " x ") * 1000000)::bigint, 0)"

static void add_time_text(cJSON *o, const char *name, const char *us_text)
{
    int64_t us = 0;
    if (gm_parse_i64(us_text, strlen(us_text), &us))
        us = 0;
    api__add_time(o, name, us);
}

static PGresult *query(api_req *r, const char *sql, int n, const char *const *p, const char *what)
{
    PGresult *res = PQexecParams(r->db, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, what);
        PQclear(res);
        return NULL;
    }
    return res;
}

#define TENANT_SQL                                                                                 \
    "SELECT t.tenant, coalesce(tt.display_name, ''), coalesce(tt.issuer, 'GM'),"                   \
    " " US("tt.created_at") ", (SELECT max(version) FROM gm.contracts c"                           \
                            "  WHERE c.tenant = t.tenant)::text"                                   \
                            " FROM (SELECT tenant FROM gm.tenants UNION SELECT tenant FROM "       \
                            "gm.contracts) t"                                                      \
                            " LEFT JOIN gm.tenants tt USING (tenant)"

static cJSON *tenant_json(const PGresult *res, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", PQgetvalue(res, i, 0));
    cJSON_AddStringToObject(o, "display_name", PQgetvalue(res, i, 1));
    cJSON_AddStringToObject(o, "issuer", PQgetvalue(res, i, 2));
    add_time_text(o, "created_at", PQgetvalue(res, i, 3));
    if (PQgetisnull(res, i, 4))
        cJSON_AddNullToObject(o, "contract_version");
    else
        cJSON_AddNumberToObject(o, "contract_version", atoi(PQgetvalue(res, i, 4)));
    return o;
}

void api__h_tenants_list(api_req *r)
{
    PGresult *res = query(r, TENANT_SQL " ORDER BY 1", 0, NULL, "tenants");
    if (!res)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (int i = 0; i < PQntuples(res); i++)
        cJSON_AddItemToArray(items, tenant_json(res, i));
    PQclear(res);
    api__json(r, 200, o);
}

void api__h_tenant_get(api_req *r)
{
    if (!api__valid_tenant(r->param[0])) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    const char *p[1] = {r->param[0]};
    PGresult *res = query(r, TENANT_SQL " WHERE t.tenant = $1", 1, p, "tenant");
    if (!res)
        return;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    cJSON *o = tenant_json(res, 0);
    PQclear(res);
    api__json(r, 200, o);
}

void api__h_tenant_create(api_req *r)
{
    cJSON *b = api__body_object(r, "tenant,display_name,issuer", false);
    if (!b)
        return;
    cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "tenant");
    cJSON *dn = cJSON_GetObjectItemCaseSensitive(b, "display_name");
    cJSON *is = cJSON_GetObjectItemCaseSensitive(b, "issuer");
    const char *issuer = cJSON_IsString(is) ? is->valuestring : "GM";
    bool issuer_ok = strlen(issuer) >= 1 && strlen(issuer) <= 16;
    for (const char *c = issuer; *c; c++)
        issuer_ok = issuer_ok && ((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'));
    if (!cJSON_IsString(t) || !api__valid_tenant(t->valuestring))
        api__problem(r, 400, "invalid-field", "tenant", "body.tenant: %s",
                     cJSON_IsString(t) ? api__tenant_rule(t->valuestring) : "required, a string");
    else if (dn && (!cJSON_IsString(dn) || strlen(dn->valuestring) > 200))
        api__problem(r, 400, "invalid-field", "display_name",
                     "body.display_name: a string of at most 200 characters");
    else if ((is && !cJSON_IsString(is)) || !issuer_ok)
        api__problem(r, 400, "invalid-field", "issuer",
                     "body.issuer: 1-16 characters A-Z 0-9 (the invoice number series)");
    else {
        const char *p[3] = {t->valuestring, cJSON_IsString(dn) ? dn->valuestring : "", issuer};
        PGresult *res = PQexecParams(r->db,
                                     "INSERT INTO gm.tenants (tenant, display_name, issuer)"
                                     " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                                     3, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            api__db_problem(r, res, "tenant");
        else if (PQntuples(res) != 1)
            api__problem(r, 409, "exists", "tenant", "tenant %s: already exists", t->valuestring);
        else {
            PQclear(res);
            res = query(r, TENANT_SQL " WHERE t.tenant = $1", 1, p, "tenant");
            if (res && PQntuples(res) == 1)
                api__json(r, 201, tenant_json(res, 0));
        }
        PQclear(res);
    }
    cJSON_Delete(b);
}

static void docs_list(api_req *r, const char *sql, const char *param, const char *what)
{
    const char *v = param ? api__query(r, param) : NULL;
    if (v && !strcmp(param, "tenant") && !api__valid_tenant(v)) {
        api__problem(r, 400, "invalid-parameter", param, "tenant: %s", api__tenant_rule(v));
        return;
    }
    if (v && strlen(v) > 128) {
        api__problem(r, 400, "invalid-parameter", param, "%s: at most 128 characters", param);
        return;
    }
    const char *p[1] = {v};
    PGresult *res = query(r, sql, 1, p, what);
    if (!res)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, PQfname(res, 0), PQgetvalue(res, i, 0));
        cJSON_AddNumberToObject(it, "version", atoi(PQgetvalue(res, i, 1)));
        cJSON_AddStringToObject(it, "currency", PQgetvalue(res, i, 2));
        add_time_text(it, "imported_at", PQgetvalue(res, i, 3));
        cJSON *doc = cJSON_Parse(PQgetvalue(res, i, 4));
        if (doc)
            cJSON_AddItemToObject(it, "document", doc);
        cJSON_AddItemToArray(items, it);
    }
    PQclear(res);
    api__json(r, 200, o);
}

void api__h_contracts_list(api_req *r)
{
    docs_list(r,
              "SELECT tenant, version, currency, " US(
                  "imported_at") ", document::text"
                                 " FROM gm.contracts WHERE ($1::text IS NULL OR tenant = $1) ORDER "
                                 "BY 1, 2",
              "tenant", "contracts");
}

void api__h_rate_cards_list(api_req *r)
{
    docs_list(r,
              "SELECT card_id, version, currency, " US(
                  "imported_at") ", document::text"
                                 " FROM gm.rate_cards WHERE ($1::text IS NULL OR card_id = $1) "
                                 "ORDER BY 1, 2",
              "card_id", "rate cards");
}

static void import_doc(api_req *r, bool contract)
{
    if (!r->body_len) {
        api__problem(r, 400, "invalid-body", NULL, "body: the %s JSON document is required",
                     contract ? "contract" : "rate card");
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(r->body, r->body_len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        api__problem(r, 400, "invalid-json", NULL, "body: must be a JSON object");
        return;
    }
    bool has_tenant = cJSON_GetObjectItemCaseSensitive(doc, "tenant") != NULL;
    cJSON_Delete(doc);
    if (has_tenant != contract) {
        api__problem(r, 400, "invalid-body", "tenant",
                     contract ? "body.tenant: a contract names its tenant"
                              : "body.tenant: a rate card has no tenant (POST contracts to "
                                "/v1/contracts)");
        return;
    }
    char msg[512] = "", err[1024] = "";
    int rc = gm_ledger_import(r->db, r->body, r->body_len, msg, sizeof msg, err, sizeof err);
    if (rc == GM_EINVAL || rc == GM_ERANGE || rc == GM_ENOTFOUND)
        api__problem(r, 400, "invalid-document", NULL, "%s", err);
    else if (rc == GM_ECONFLICT)
        /* a contract naming a card that is not stored: field card_id (docs/api.md, Admin) */
        api__problem(r, 409, "conflict", contract && strstr(err, ": card_id: ") ? "card_id" : NULL,
                     "%s", err);
    else if (rc) {
        gm_error("api", "msg=\"import failed\" err=\"%s\"", err);
        api__problem(r, 500, "internal", NULL, "import failed (logged)");
    } else {
        api__book_stale(r->srv);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "message", msg);
        api__json(r, 201, o);
    }
}

void api__h_contract_import(api_req *r)
{
    import_doc(r, true);
}

void api__h_rate_card_import(api_req *r)
{
    import_doc(r, false);
}

void api__h_keys_list(api_req *r)
{
    PGresult *res =
        query(r,
              "SELECT key_id, role, tenant, name, " US(
                  "created_at") ","
                                " " US("expires_at") ", " US(
                                    "revoked_at") " FROM gm.api_keys ORDER BY created_at, key_id",
              0, NULL, "api keys");
    if (!res)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *k = cJSON_CreateObject();
        cJSON_AddStringToObject(k, "key_id", PQgetvalue(res, i, 0));
        cJSON_AddStringToObject(k, "role", PQgetvalue(res, i, 1));
        if (PQgetisnull(res, i, 2))
            cJSON_AddNullToObject(k, "tenant");
        else
            cJSON_AddStringToObject(k, "tenant", PQgetvalue(res, i, 2));
        cJSON_AddStringToObject(k, "name", PQgetvalue(res, i, 3));
        add_time_text(k, "created_at", PQgetvalue(res, i, 4));
        add_time_text(k, "expires_at", PQgetvalue(res, i, 5));
        add_time_text(k, "revoked_at", PQgetvalue(res, i, 6));
        cJSON_AddItemToArray(items, k);
    }
    PQclear(res);
    api__json(r, 200, o);
}

void api__h_key_create(api_req *r)
{
    cJSON *b = api__body_object(r, "role,tenant,name,expires_at", false);
    if (!b)
        return;
    cJSON *role = cJSON_GetObjectItemCaseSensitive(b, "role");
    cJSON *tenant = cJSON_GetObjectItemCaseSensitive(b, "tenant");
    cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
    cJSON *exp = cJSON_GetObjectItemCaseSensitive(b, "expires_at");
    int64_t exp_us = 0;
    char why[256];
    if (!cJSON_IsString(role) || !api__role_parse(role->valuestring)) {
        api__problem(r, 400, "invalid-field", "role",
                     "body.role: required, one of admin, finance, customer");
    } else if (tenant && !cJSON_IsNull(tenant) && !cJSON_IsString(tenant)) {
        api__problem(r, 400, "invalid-field", "tenant", "body.tenant: must be a string");
    } else if (name && !cJSON_IsString(name)) {
        api__problem(r, 400, "invalid-field", "name", "body.name: must be a string");
    } else if (exp && !cJSON_IsNull(exp) &&
               (!cJSON_IsString(exp) || gm_time_parse(exp->valuestring, strlen(exp->valuestring),
                                                      &exp_us, why, sizeof why))) {
        api__problem(r, 400, "invalid-field", "expires_at",
                     "body.expires_at: must be an RFC 3339 date-time");
    } else if (exp_us && exp_us <= gm_now_us()) {
        api__problem(r, 400, "invalid-field", "expires_at",
                     "body.expires_at: must be in the future");
    } else {
        char token[GM_API_TOKEN_MAX], id[40], err[512];
        const char *t = cJSON_IsString(tenant) ? tenant->valuestring : NULL;
        int rc = gm_api_key_create(r->db, role->valuestring, t,
                                   cJSON_IsString(name) ? name->valuestring : "", exp_us, token, id,
                                   sizeof id, err, sizeof err);
        if (rc == GM_EINVAL) {
            api__problem(r, 400, "invalid-field", strncmp(err, "tenant", 6) ? "name" : "tenant",
                         "body.%s", err);
        } else if (rc) {
            gm_error("api", "msg=\"key create failed\" err=\"%s\"", err);
            api__problem(r, 500, "internal", NULL, "key creation failed (logged)");
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "key_id", id);
            cJSON_AddStringToObject(o, "role", role->valuestring);
            if (t)
                cJSON_AddStringToObject(o, "tenant", t);
            else
                cJSON_AddNullToObject(o, "tenant");
            api__add_time(o, "expires_at", exp_us);
            cJSON_AddNullToObject(o, "key");
            cJSON_AddStringToObject(o, "note", "the key is shown once, in the first response only");
            char *redacted = cJSON_PrintUnformatted(o);
            cJSON_ReplaceItemInObjectCaseSensitive(o, "key", cJSON_CreateString(token));
            memset(token, 0, sizeof token);
            api__json(r, 201, o);
            r->idem_store = redacted; /* a replay never shows the key again */
        }
    }
    cJSON_Delete(b);
}

void api__h_key_revoke(api_req *r)
{
    char err[256];
    if (strlen(r->param[0]) > 40) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return;
    }
    int rc = gm_api_key_revoke(r->db, r->param[0], err, sizeof err);
    if (rc == GM_ENOTFOUND) {
        api__problem(r, 404, "not-found", NULL, "API key %s: unknown or already revoked",
                     r->param[0]);
        return;
    }
    if (rc) {
        gm_error("api", "msg=\"key revoke failed\" err=\"%s\"", err);
        api__problem(r, 500, "internal", NULL, "revocation failed (logged)");
        return;
    }
    api__auth_forget(r->srv, r->param[0]);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key_id", r->param[0]);
    cJSON_AddBoolToObject(o, "revoked", true);
    api__json(r, 200, o);
}
