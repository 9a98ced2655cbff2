/* The REST API over real HTTP against a real PostgreSQL: OpenAPI completeness, the
 * authorization matrix, tenant isolation, idempotency, the invoice lifecycle (immutability in
 * the database, gapless numbers), credit-note limits, late events, reconciliation with the
 * ledger at contract prices, usage series, limits, and a corpus of bad requests. */
#include "test_api_client.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define SEP_2026 INT64_C(1788220800000000) /* 2026-09-01T00:00:00Z */
#define OCT_2026 INT64_C(1790812800000000) /* 2026-10-01T00:00:00Z */

static cJSON *json_of(const http_resp *r)
{
    cJSON *j = cJSON_Parse(r->body);
    ck_assert_msg(j != NULL, "not JSON (status %d): %.300s", r->status, r->body);
    return j;
}

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static PGconn *db(void)
{
    return gm_test_pg_connect(F.conninfo);
}

static void ev(PGconn *c, const char *tenant, const char *model, const char *site, int64_t t,
               int64_t in, int64_t cached, int64_t out, int64_t gpu_us)
{
    int64_t q[4] = {in, cached, out, gpu_us};
    api_add_event(c, tenant, model, site, t, q);
}

/* The invoice id of (tenant, "YYYY-MM") through the finance list (creates the draft row). */
static char *invoice_id(const char *tenant, const char *period)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/invoices?tenant=%s&period=%s", tenant, period);
    http_resp r;
    http_do(F.port, "GET", path, F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "list: %d %s", r.status, r.body);
    cJSON *j = json_of(&r);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    ck_assert_msg(cJSON_GetArraySize(items) == 1, "one invoice for %s %s: %s", tenant, period,
                  r.body);
    char *id = gm_xstrdup(jstr(cJSON_GetArrayItem(items, 0), "invoice_id"));
    cJSON_Delete(j);
    http_free(&r);
    return id;
}

static cJSON *get_invoice(const char *id, const char *token, int want)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/invoices/%s", id);
    http_resp r;
    http_do(F.port, "GET", path, token, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == want, "GET %s: %d %s", path, r.status, r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    return j;
}

static int post(const char *path, const char *token, const char *idem, const char *body,
                cJSON **out)
{
    http_resp r;
    http_do(F.port, "POST", path, token, idem, body, NULL, &r);
    int st = r.status;
    if (out)
        *out = json_of(&r);
    http_free(&r);
    return st;
}

static int finalize(const char *id, cJSON **out)
{
    char path[128], idem[160];
    snprintf(path, sizeof path, "/v1/invoices/%s/finalize", id);
    static int n;
    snprintf(idem, sizeof idem, "fin-%s-%d-%d", id, (int)getpid(), ++n);
    return post(path, F.finance, idem, "{}", out);
}

/* Minor units of a decimal string with 2 digits ("12.34" -> 1234). */
static gm_i128 cents(const char *s)
{
    gm_i128 v = 0;
    ck_assert_msg(s && gm_dec_parse(s, strlen(s), 2, &v, NULL, 0) == 0, "amount %s", s ? s : "");
    return v;
}

/* ---- OpenAPI -------------------------------------------------------------------------- */
static int count_bad_refs(const cJSON *root, const cJSON *node)
{
    int bad = 0;
    for (const cJSON *c = node ? node->child : NULL; c; c = c->next) {
        if (c->string && !strcmp(c->string, "$ref") && cJSON_IsString(c)) {
            const char *pfx = "#/components/schemas/";
            const cJSON *schemas = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(root, "components"), "schemas");
            if (strncmp(c->valuestring, pfx, strlen(pfx)) ||
                !cJSON_GetObjectItemCaseSensitive(schemas, c->valuestring + strlen(pfx)))
                bad++;
        }
        bad += count_bad_refs(root, c);
    }
    return bad;
}

START_TEST(test_openapi_is_valid_and_lists_every_route)
{
    http_resp r;
    http_do(F.port, "GET", "/v1/openapi.json", NULL, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    cJSON *doc = json_of(&r);
    ck_assert(!strncmp(jstr(doc, "openapi"), "3.1.", 4));
    cJSON *info = cJSON_GetObjectItemCaseSensitive(doc, "info");
    ck_assert(jstr(info, "title") && jstr(info, "version"));
    cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    ck_assert(cJSON_IsObject(paths));
    ck_assert_int_eq(count_bad_refs(doc, doc), 0);
    size_t n;
    const gm_api_route_info *routes = gm_api_routes(&n);
    int ops = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *item = cJSON_GetObjectItemCaseSensitive(paths, routes[i].pattern);
        ck_assert_msg(item != NULL, "route %s missing from OpenAPI", routes[i].pattern);
        char m[8];
        snprintf(m, sizeof m, "%s", routes[i].method);
        for (char *p = m; *p; p++)
            *p = (char)(*p - 'A' + 'a');
        cJSON *op = cJSON_GetObjectItemCaseSensitive(item, m);
        ck_assert_msg(op != NULL, "%s %s missing from OpenAPI", routes[i].method,
                      routes[i].pattern);
        ck_assert(jstr(op, "operationId") != NULL);
        cJSON *resp = cJSON_GetObjectItemCaseSensitive(op, "responses");
        ck_assert_msg(cJSON_IsObject(resp) && resp->child, "%s: responses", routes[i].pattern);
        /* every path parameter of the template is declared */
        for (const char *p = strchr(routes[i].pattern, '{'); p; p = strchr(p + 1, '{')) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(strchr(p, '}') - p - 1), p + 1);
            bool found = false;
            cJSON *params = cJSON_GetObjectItemCaseSensitive(op, "parameters");
            for (cJSON *q = params ? params->child : NULL; q; q = q->next)
                found = found || (!strcmp(jstr(q, "name"), name) && !strcmp(jstr(q, "in"), "path"));
            ck_assert_msg(found, "%s: path parameter %s not declared", routes[i].pattern, name);
        }
        /* POSTs declare the Idempotency-Key header */
        if (!strcmp(routes[i].method, "POST")) {
            char *txt = cJSON_PrintUnformatted(op);
            ck_assert_msg(strstr(txt, "Idempotency-Key") != NULL, "%s: Idempotency-Key",
                          routes[i].pattern);
            free(txt);
        }
    }
    /* and nothing in the document that the server does not answer */
    for (cJSON *item = paths->child; item; item = item->next)
        for (cJSON *op = item->child; op; op = op->next) {
            bool found = false;
            for (size_t i = 0; i < n; i++)
                found = found || (!strcmp(routes[i].pattern, item->string) &&
                                  !strcasecmp(routes[i].method, op->string));
            ck_assert_msg(found, "OpenAPI %s %s: no such route", op->string, item->string);
            ops++;
        }
    ck_assert_int_eq(ops, (int)n);
    cJSON_Delete(doc);
    http_free(&r);
}
END_TEST

START_TEST(test_health_ready_and_metrics)
{
    http_resp r;
    http_do(F.port, "GET", "/healthz", NULL, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    http_do(F.port, "GET", "/readyz", NULL, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    http_do(F.port, "GET", "/metrics", NULL, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    http_free(&r);
    http_do(F.port, "GET", "/metrics", F.admin, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(
        strstr(r.body, "gridmeter_api_requests_total{route=\"GET /healthz\",code=\"2xx\"}"));
    ck_assert_ptr_nonnull(
        strstr(r.body,
               "gridmeter_api_request_duration_seconds_bucket{route=\"GET /readyz\",le=\"+Inf\"}"));
    ck_assert_ptr_nonnull(strstr(r.body, "gridmeter_api_errors_total{route=\"GET /metrics\"} 1"));
    http_free(&r);
}
END_TEST

/* ---- Authorization ---------------------------------------------------------------------- */
START_TEST(test_authorization_matrix_every_endpoint_every_role)
{
    PGconn *c = db();
    ev(c, "acme", "llama-3.1-8b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, 1000, 0, 100, 0);
    PQfinish(c);
    char *acme_inv = invoice_id("acme", "2026-10");
    struct {
        const char *token;
        unsigned role; /* 0: no valid key */
        const char *name;
    } who[] = {{NULL, 0, "no key"},
               {F.admin, GM_API_ROLE_ADMIN, "admin"},
               {F.finance, GM_API_ROLE_FINANCE, "finance"},
               {F.acme, GM_API_ROLE_CUSTOMER, "customer"},
               {F.revoked, 0, "revoked"},
               {F.expired, 0, "expired"},
               {"gmk_k0000000000000000_00", 0, "unknown"}};
    size_t n;
    const gm_api_route_info *routes = gm_api_routes(&n);
    int checked = 0;
    for (size_t i = 0; i < n; i++) {
        /* the concrete path: acme's draft, tenant acme, an unknown key id */
        char path[256] = "";
        for (const char *p = routes[i].pattern; *p; p++) {
            if (*p != '{') {
                size_t l = strlen(path);
                path[l] = *p, path[l + 1] = 0;
                continue;
            }
            const char *e = strchr(p, '}');
            const char *v = !strncmp(p, "{invoice_id}", 12) ? acme_inv
                            : !strncmp(p, "{tenant}", 8)    ? "acme"
                                                            : "k0000000000000000";
            strcat(path, v);
            p = e;
        }
        if (strstr(path, "/usage"))
            strcat(path, "?from=2026-10-01T00:00:00Z&to=2026-10-02T00:00:00Z");
        if (!strcmp(path, "/v1/revenue") || !strcmp(path, "/v1/economics"))
            strcat(path, "?period=2026-10");
        for (size_t k = 0; k < GM_ARRAY_LEN(who); k++) {
            char idem[64];
            snprintf(idem, sizeof idem, "matrix-%zu-%zu", i, k);
            http_resp r;
            bool is_post = !strcmp(routes[i].method, "POST");
            /* POST bodies carry an unknown field: an authorized caller gets 400, nothing
             * changes */
            http_do(F.port, routes[i].method, path, who[k].token, is_post ? idem : NULL,
                    is_post ? "{\"unknown_field\":1}" : NULL, NULL, &r);
            int want; /* 0: any authorized answer (2xx..4xx except 401/403) */
            if (!routes[i].roles)
                want = 200;
            else if (!who[k].role)
                want = 401;
            else if (!(routes[i].roles & who[k].role))
                want = 403;
            else
                want = 0;
            bool ok = want
                          ? r.status == want
                          : r.status >= 200 && r.status < 500 && r.status != 401 && r.status != 403;
            ck_assert_msg(ok, "%s %s as %s: %d (want %d) %.200s", routes[i].method, path,
                          who[k].name, r.status, want, r.body);
            int want_lo = want;
            if (want_lo >= 401)
                ck_assert_ptr_nonnull(strstr(r.headers, "application/problem+json"));
            http_free(&r);
            checked++;
        }
    }
    ck_assert_int_eq(checked, (int)(n * GM_ARRAY_LEN(who)));
    free(acme_inv);
}
END_TEST

START_TEST(test_me_describes_the_calling_key)
{
    struct {
        const char *token, *role, *tenant;
    } k[] = {{F.admin, "admin", NULL},
             {F.finance, "finance", NULL},
             {F.acme, "customer", "acme"},
             {F.gulf, "customer", "gulf"}};
    for (size_t i = 0; i < GM_ARRAY_LEN(k); i++) {
        http_resp r;
        http_do(F.port, "GET", "/v1/me", k[i].token, NULL, NULL, NULL, &r);
        ck_assert_msg(r.status == 200, "me as %s: %d %s", k[i].role, r.status, r.body);
        cJSON *j = json_of(&r);
        ck_assert_str_eq(jstr(j, "role"), k[i].role);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tenant");
        if (k[i].tenant)
            ck_assert_str_eq(cJSON_IsString(t) ? t->valuestring : "", k[i].tenant);
        else
            ck_assert_msg(cJSON_IsNull(t), "tenant of a %s key: %s", k[i].role, r.body);
        /* the key id is the one inside the token: gmk_<id>_<secret> */
        char id[40];
        snprintf(id, sizeof id, "%.17s", k[i].token + 4);
        ck_assert_str_eq(jstr(j, "key_id"), id);
        ck_assert_str_eq(jstr(j, "name"), "test");
        /* the server's clock, which the dashboard reads "now" from */
        const char *st = jstr(j, "server_time");
        ck_assert_msg(st && !strncmp(st, "2026-11-20T12:", 14), "server_time %s", st ? st : "");
        ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "expires_at")));
        ck_assert_ptr_nonnull(jstr(j, "created_at"));
        cJSON_Delete(j);
        http_free(&r);
    }
    /* an expiring key reports its expiry */
    PGconn *c = db();
    char token[GM_API_TOKEN_MAX], id[40], err[512];
    int64_t exp = (gm_now_us() / 1000000 + 86400) * 1000000;
    ck_assert(gm_api_key_create(c, "customer", "acme", "exp", exp, token, id, sizeof id, err,
                                sizeof err) == 0);
    PQfinish(c);
    http_resp r;
    http_do(F.port, "GET", "/v1/me", token, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = json_of(&r);
    char want[40];
    gm_time_format(exp, want, sizeof want);
    ck_assert_str_eq(jstr(j, "expires_at"), want);
    ck_assert_str_eq(jstr(j, "key_id"), id);
    ck_assert_str_eq(jstr(j, "name"), "exp");
    cJSON_Delete(j);
    http_free(&r);
    /* no key, a revoked key: 401 */
    http_do(F.port, "GET", "/v1/me", NULL, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    http_free(&r);
    http_do(F.port, "GET", "/v1/me", F.revoked, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    http_free(&r);
}
END_TEST

START_TEST(test_customer_key_sees_another_tenants_objects_as_missing)
{
    PGconn *c = db();
    ev(c, "acme", "llama-3.1-8b-instruct", "fra1", OCT_2026 + 2 * GM_US_PER_DAY, 500, 0, 50, 0);
    PQfinish(c);
    char *acme_inv = invoice_id("acme", "2026-10");
    cJSON *j = get_invoice(acme_inv, F.acme, 200);
    ck_assert_str_eq(jstr(j, "tenant"), "acme");
    cJSON_Delete(j);
    cJSON *other = get_invoice(acme_inv, F.gulf, 404);
    cJSON *missing = get_invoice("inv_00000000000000000000000000000000", F.gulf, 404);
    ck_assert_str_eq(jstr(other, "detail"), jstr(missing, "detail"));
    ck_assert_str_eq(jstr(other, "type"), jstr(missing, "type"));
    cJSON_Delete(other);
    cJSON_Delete(missing);
    const char *paths[] = {
        "/v1/tenants/acme/usage?from=2026-10-01T00:00:00Z&to=2026-10-02T00:00:00Z",
        "/v1/tenants/acme/spend", "/v1/tenants/acme/invoices", "/v1/invoices?tenant=acme"};
    for (size_t i = 0; i < GM_ARRAY_LEN(paths); i++) {
        http_resp r;
        http_do(F.port, "GET", paths[i], F.gulf, NULL, NULL, NULL, &r);
        ck_assert_msg(r.status == 404, "%s as gulf: %d", paths[i], r.status);
        http_free(&r);
        http_do(F.port, "GET", paths[i], F.acme, NULL, NULL, NULL, &r);
        ck_assert_msg(r.status == 200, "%s as acme: %d %s", paths[i], r.status, r.body);
        http_free(&r);
    }
    /* gulf's own list never shows acme */
    http_resp r;
    http_do(F.port, "GET", "/v1/invoices?period=2026-10", F.gulf, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(strstr(r.body, "\"acme\""));
    http_free(&r);
    free(acme_inv);
}
END_TEST

/* ---- One rule per identifier (issue 12) ------------------------------------------------
 * A tenant created here must be one that events can carry: 1 to 64 bytes (docs/events.md
 * "Identifiers"). Before, the API took 128 and a 65-byte tenant could never receive events. */
START_TEST(test_tenant_ids_follow_the_event_rule)
{
    char t64[65], t65[66], body[200];
    memset(t64, 'a', 64);
    t64[64] = '\0';
    memset(t65, 'b', 65);
    t65[65] = '\0';
    http_resp a;
    snprintf(body, sizeof body, "{\"tenant\":\"%s\"}", t65);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ident-65", body, NULL, &a);
    ck_assert_msg(a.status == 400, "%d %s", a.status, a.body);
    ck_assert_msg(strstr(a.body, "must be at most 64 bytes, got 65"), "%s", a.body);
    ck_assert_msg(strstr(a.body, "\"field\":\"tenant\""), "%s", a.body);
    http_free(&a);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ident-space", "{\"tenant\":\"Acme Corp\"}",
            NULL, &a);
    ck_assert_msg(a.status == 400, "%d %s", a.status, a.body);
    ck_assert_msg(strstr(a.body, "got 0x20 at position 4"), "%s", a.body);
    http_free(&a);
    snprintf(body, sizeof body, "{\"tenant\":\"%s\"}", t64);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ident-64", body, NULL, &a);
    ck_assert_msg(a.status == 201, "%d %s", a.status, a.body);
    http_free(&a);
    /* a path parameter is checked by the same rule */
    char path[200];
    snprintf(path, sizeof path, "/v1/tenants/%s/spend", t65);
    http_do(F.port, "GET", path, F.finance, NULL, NULL, NULL, &a);
    ck_assert_msg(a.status == 400, "%d %s", a.status, a.body);
    ck_assert_msg(strstr(a.body, "must be at most 64 bytes, got 65"), "%s", a.body);
    http_free(&a);
    /* and the database refuses what the API would: CHECK constraints of sql/ */
    PGconn *c = db();
    char sql[300];
    snprintf(sql, sizeof sql, "INSERT INTO gm.tenants (tenant) VALUES ('%s')", t65);
    PGresult *res = PQexec(c, sql);
    ck_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23514");
    PQclear(res);
    res = PQexec(c, "INSERT INTO gm.contracts (tenant, version, currency, document) VALUES "
                    "('Acme Corp', 1, 'USD', '{}')");
    ck_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23514");
    PQclear(res);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM pg_constraint WHERE conname IN "
                                  "('tenants_tenant_ident', 'contracts_tenant_ident', "
                                  "'api_keys_tenant_ident', 'budgets_tenant_ident', "
                                  "'ledger_names_ident', 'gpu_windows_ident') AND convalidated");
    ck_assert_str_eq(v, "6");
    free(v);
    PQfinish(c);
}
END_TEST

/* ---- Idempotency ------------------------------------------------------------------------ */
START_TEST(test_idempotency_replays_refuses_other_body_and_requires_key)
{
    http_resp a, b;
    const char *body = "{\"tenant\":\"idem-one\",\"display_name\":\"Idem One\"}";
    http_do(F.port, "POST", "/v1/tenants", F.admin, "idem-key-1", body, NULL, &a);
    ck_assert_msg(a.status == 201, "%d %s", a.status, a.body);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "idem-key-1", body, NULL, &b);
    ck_assert_int_eq(b.status, 201);
    ck_assert_str_eq(a.body, b.body);
    char h[32];
    ck_assert(http_header(&b, "Idempotent-Replayed", h, sizeof h));
    http_free(&a);
    http_free(&b);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "idem-key-1", "{\"tenant\":\"idem-two\"}", NULL,
            &a);
    ck_assert_int_eq(a.status, 422);
    http_free(&a);
    http_do(F.port, "POST", "/v1/tenants", F.admin, NULL, "{\"tenant\":\"idem-three\"}", NULL, &a);
    ck_assert_int_eq(a.status, 400);
    ck_assert_ptr_nonnull(strstr(a.body, "Idempotency-Key"));
    http_free(&a);
    /* a created key is shown once: the replay carries no key */
    http_do(F.port, "POST", "/v1/api-keys", F.admin, "idem-key-2", "{\"role\":\"finance\"}", NULL,
            &a);
    http_do(F.port, "POST", "/v1/api-keys", F.admin, "idem-key-2", "{\"role\":\"finance\"}", NULL,
            &b);
    ck_assert_int_eq(a.status, 201);
    ck_assert_int_eq(b.status, 201);
    ck_assert_ptr_nonnull(strstr(a.body, "\"key\":\"gmk_"));
    ck_assert_ptr_nonnull(strstr(b.body, "\"key\":null"));
    http_free(&a);
    http_free(&b);
    PGconn *c = db();
    char *n = gm_test_pg_value(c, "SELECT count(*) FROM gm.tenants WHERE tenant LIKE 'idem-%'");
    ck_assert_str_eq(n, "1");
    free(n);
    PQfinish(c);
}
END_TEST

typedef struct {
    int status;
    bool replayed;
} conc_result;

static void *conc_post(void *arg)
{
    conc_result *res = arg;
    http_resp r;
    http_do(F.port, "POST", "/v1/tenants", F.admin, "idem-concurrent", "{\"tenant\":\"conc-one\"}",
            NULL, &r);
    char h[16];
    res->status = r.status;
    res->replayed = http_header(&r, "Idempotent-Replayed", h, sizeof h);
    http_free(&r);
    return NULL;
}

START_TEST(test_idempotency_concurrent_requests_have_one_effect)
{
    enum { N = 8 };
    pthread_t t[N];
    conc_result res[N];
    for (int i = 0; i < N; i++)
        pthread_create(&t[i], NULL, conc_post, &res[i]);
    int fresh = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ck_assert_msg(res[i].status == 201 || res[i].status == 409, "status %d", res[i].status);
        fresh += res[i].status == 201 && !res[i].replayed;
    }
    ck_assert_int_eq(fresh, 1);
    PGconn *c = db();
    char *n = gm_test_pg_value(c, "SELECT count(*) FROM gm.tenants WHERE tenant = 'conc-one'");
    ck_assert_str_eq(n, "1");
    free(n);
    PQfinish(c);
}
END_TEST

/* ---- Invoices --------------------------------------------------------------------------- */
static void expect_sql_error(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR, "must be refused: %s", sql);
    PQclear(r);
}

START_TEST(test_finalized_invoice_is_immutable_in_the_database)
{
    PGconn *c = db();
    ev(c, "tlife", "llama-3.1-70b-instruct", "fra1", SEP_2026 + 3600000000, 10000000, 0, 5000000,
       0);
    ev(c, "tlife", "llama-3.1-70b-instruct", "tro1", SEP_2026 + 7200000000, 1000000, 0, 0,
       3600000000);
    char *id = invoice_id("tlife", "2026-09");
    cJSON *draft = get_invoice(id, F.finance, 200);
    ck_assert_str_eq(jstr(draft, "status"), "draft");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(draft, "number")));
    cJSON *fin = NULL;
    ck_assert_int_eq(finalize(id, &fin), 200);
    ck_assert_str_eq(jstr(fin, "status"), "finalized");
    ck_assert(!strncmp(jstr(fin, "number"), "GM-", 3));
    ck_assert_str_eq(jstr(fin, "total"), jstr(draft, "total"));
    /* N1: the total is the sum of the rounded lines */
    gm_i128 sum = 0;
    cJSON *lines = cJSON_GetObjectItemCaseSensitive(fin, "lines");
    ck_assert_int_gt(cJSON_GetArraySize(lines), 0);
    for (cJSON *l = lines->child; l; l = l->next)
        sum += cents(jstr(l, "amount"));
    ck_assert(sum == cents(jstr(fin, "total")));
    cJSON *again = NULL;
    ck_assert_int_eq(finalize(id, &again), 409);
    cJSON_Delete(again);
    char sql[512];
    const char *stmts[] = {"UPDATE gm.invoices SET total = 0 WHERE invoice_id = '%s'",
                           "UPDATE gm.invoices SET status = 'draft' WHERE invoice_id = '%s'",
                           "DELETE FROM gm.invoices WHERE invoice_id = '%s'",
                           "UPDATE gm.invoice_lines SET amount = 0 WHERE invoice_id = '%s'",
                           "DELETE FROM gm.invoice_lines WHERE invoice_id = '%s'",
                           "INSERT INTO gm.invoice_lines (invoice_id, line_no, kind, description,"
                           " amount_exact, amount, amount_minor) VALUES ('%s', 99, 'usage', 'x',"
                           " 0, 0, 0)"};
    for (size_t i = 0; i < GM_ARRAY_LEN(stmts); i++) {
        snprintf(sql, sizeof sql, stmts[i], id);
        expect_sql_error(c, sql); /* as the superuser: the triggers refuse */
    }
    gm_test_pg_exec(c, "SET ROLE gm_api");
    snprintf(sql, sizeof sql, "DELETE FROM gm.invoice_lines WHERE invoice_id = '%s'", id);
    expect_sql_error(c, sql); /* and gm_api has no such privilege */
    /* nor can it insert an invoice born finalized, numbered, or for a shifted period
     * (security review) */
    expect_sql_error(c, "INSERT INTO gm.invoices (tenant, issuer, period_start, period_end, status,"
                        " number) VALUES ('tlife', 'GM', '2026-10-01', '2026-11-01', 'finalized',"
                        " 'GM-999999')");
    expect_sql_error(c, "INSERT INTO gm.invoices (tenant, issuer, period_start, period_end)"
                        " VALUES ('tlife', 'GM', '2026-09-01 00:00:01+00', '2026-10-01')");
    gm_test_pg_exec(c, "RESET ROLE");
    cJSON *after = get_invoice(id, F.finance, 200);
    ck_assert_str_eq(jstr(after, "total"), jstr(fin, "total"));
    ck_assert_str_eq(jstr(after, "number"), jstr(fin, "number"));
    /* the current month (November 2026 on the suite's clock) is still open */
    ev(c, "tlife", "llama-3.1-70b-instruct", "fra1", gm_now_us() - 1000000, 10, 0, 0, 0);
    char *cur = invoice_id("tlife", "2026-11");
    cJSON *refused = NULL;
    ck_assert_int_eq(finalize(cur, &refused), 409);
    ck_assert_ptr_nonnull(strstr(jstr(refused, "detail"), "open for late events"));
    /* numbers are gapless per issuer */
    char *gaps = gm_test_pg_value(c, "SELECT count(*) FILTER (WHERE number_seq <> rn)"
                                     " FROM (SELECT number_seq, row_number() OVER"
                                     " (PARTITION BY issuer ORDER BY number_seq) rn"
                                     " FROM gm.invoices WHERE number IS NOT NULL) s");
    ck_assert_str_eq(gaps, "0");
    free(gaps);
    cJSON_Delete(refused);
    cJSON_Delete(draft);
    cJSON_Delete(fin);
    cJSON_Delete(after);
    free(cur);
    free(id);
    PQfinish(c);
}
END_TEST

/* Regression (security review): finalizing February before January applied the prepaid
 * credit twice. Months are finalized in order. */
START_TEST(test_months_are_finalized_in_order_so_credit_counts_once)
{
    PGconn *c = db();
    ev(c, "torder", "llama-3.1-70b-instruct", "fra1", SEP_2026 - 20 * GM_US_PER_DAY, 1000000, 0, 0,
       0);
    ev(c, "torder", "llama-3.1-70b-instruct", "fra1", SEP_2026 + 3600000000, 1000000, 0, 0, 0);
    char *aug = invoice_id("torder", "2026-08"), *sep = invoice_id("torder", "2026-09");
    cJSON *refused = NULL;
    ck_assert_int_eq(finalize(sep, &refused), 409);
    ck_assert_ptr_nonnull(strstr(jstr(refused, "detail"), "2026-08"));
    cJSON_Delete(refused);
    cJSON *fin = NULL;
    ck_assert_int_eq(finalize(aug, &fin), 200);
    cJSON_Delete(fin);
    ck_assert_int_eq(finalize(sep, &fin), 200);
    cJSON_Delete(fin);
    /* and never back in time: July usage that arrives now (a backfill) cannot be invoiced
     * before the months already finalized */
    ev(c, "torder", "llama-3.1-70b-instruct", "fra1", SEP_2026 - 50 * GM_US_PER_DAY, 1000000, 0, 0,
       0);
    char *jul = invoice_id("torder", "2026-07");
    ck_assert_int_eq(finalize(jul, &refused), 409);
    ck_assert_ptr_nonnull(strstr(jstr(refused, "detail"), "already finalized"));
    cJSON_Delete(refused);
    free(aug);
    free(sep);
    free(jul);
    PQfinish(c);
}
END_TEST

START_TEST(test_credit_notes_never_exceed_what_is_creditable)
{
    PGconn *c = db();
    /* 10M input tokens at 0.60/M + 5M output at 0.80/M on 70B in a metro site = 10.00 USD */
    ev(c, "tcredit", "llama-3.1-70b-instruct", "fra1", SEP_2026 + 3600000000, 10000000, 0, 5000000,
       0);
    char *id = invoice_id("tcredit", "2026-09");
    cJSON *fin = NULL;
    ck_assert_int_eq(finalize(id, &fin), 200);
    ck_assert_str_eq(jstr(fin, "total"), "10.00");
    char path[128];
    snprintf(path, sizeof path, "/v1/invoices/%s/credit-notes", id);
    cJSON *j = NULL;
    ck_assert_int_eq(
        post(path, F.finance, "cn-1", "{\"amount\":\"4.00\",\"reason\":\"goodwill\"}", &j), 201);
    ck_assert(!strncmp(jstr(j, "number"), "GM-CN-", 6));
    cJSON_Delete(j);
    ck_assert_int_eq(
        post(path, F.finance, "cn-2", "{\"amount\":\"6.01\",\"reason\":\"too much\"}", &j), 422);
    ck_assert_ptr_nonnull(strstr(jstr(j, "detail"), "creditable"));
    cJSON_Delete(j);
    ck_assert_int_eq(
        post(path, F.finance, "cn-3", "{\"amount\":\"1.234\",\"reason\":\"digits\"}", &j), 422);
    cJSON_Delete(j);
    ck_assert_int_eq(post(path, F.finance, "cn-4", "{\"amount\":\"-1.00\",\"reason\":\"neg\"}", &j),
                     400);
    cJSON_Delete(j);
    ck_assert_int_eq(post(path, F.finance, "cn-5", "{\"amount\":\"2.00\",\"reason\":\"more\"}", &j),
                     201);
    cJSON_Delete(j);
    cJSON *inv = get_invoice(id, F.finance, 200);
    ck_assert_str_eq(jstr(inv, "credited"), "6.00");
    /* corrects_period is always present: null on a line that corrects no month (it was left
     * out; docs/api.md shows it on every line) */
    const cJSON *ln;
    int n_lines = 0;
    cJSON_ArrayForEach(ln, cJSON_GetObjectItemCaseSensitive(inv, "lines"))
    {
        ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(ln, "corrects_period")));
        n_lines++;
    }
    ck_assert_int_gt(n_lines, 0);
    ck_assert_str_eq(jstr(inv, "creditable"), "4.00");
    cJSON_Delete(inv);
    /* void credits the rest and closes the invoice */
    snprintf(path, sizeof path, "/v1/invoices/%s/void", id);
    ck_assert_int_eq(post(path, F.finance, "void-1", "{\"reason\":\"wrong customer\"}", &j), 200);
    ck_assert_str_eq(jstr(j, "status"), "void");
    ck_assert_str_eq(jstr(j, "credited"), "10.00");
    cJSON_Delete(j);
    /* regression (issue 15 review): reconciliation showed a void invoice's charges as billed
     * and invoiced; docs/auditors.md: a void invoice's period is unbilled, invoiced_amount is
     * what finalized invoices billed */
    char *rec = gm_test_pg_value(
        c, "SELECT charged_amount::numeric(20,2) || ' ' || billed_amount::numeric(20,2) || ' ' ||"
           " waiting_amount::numeric(20,2) || ' ' || unbilled_amount::numeric(20,2) || ' ' ||"
           " coalesce(invoiced_amount::text, 'null') || ' ' || difference::numeric(20,2)"
           " FROM audit.reconciliation WHERE tenant = 'tcredit' AND period_start = '2026-09-01Z'");
    ck_assert_str_eq(rec, "10.00 0.00 0.00 10.00 null 0.00");
    free(rec);
    snprintf(path, sizeof path, "/v1/invoices/%s/credit-notes", id);
    ck_assert_int_eq(
        post(path, F.finance, "cn-6", "{\"amount\":\"0.01\",\"reason\":\"after\"}", &j), 409);
    cJSON_Delete(j);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT sum(amount)::text FROM gm.credit_notes WHERE invoice_id = '%s'", id);
    char *s = gm_test_pg_value(c, sql);
    ck_assert_str_eq(s, "10.00");
    free(s);
    expect_sql_error(c, "UPDATE gm.credit_notes SET amount = 1");
    expect_sql_error(c, "DELETE FROM gm.credit_notes");
    snprintf(sql, sizeof sql, "UPDATE gm.invoices SET status = 'finalized' WHERE invoice_id = '%s'",
             id);
    expect_sql_error(c, sql);
    /* a draft cannot be credited */
    ev(c, "tcredit", "llama-3.1-70b-instruct", "fra1", OCT_2026 + 3600000000, 10, 0, 0, 0);
    char *oct = invoice_id("tcredit", "2026-10");
    snprintf(path, sizeof path, "/v1/invoices/%s/credit-notes", oct);
    ck_assert_int_eq(
        post(path, F.finance, "cn-7", "{\"amount\":\"0.01\",\"reason\":\"draft\"}", &j), 409);
    cJSON_Delete(j);
    http_resp r;
    http_do(F.port, "GET", "/v1/credit-notes?tenant=tcredit&limit=2", F.finance, NULL, NULL, NULL,
            &r);
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 2);
    const char *next = jstr(j, "next_cursor");
    ck_assert_ptr_nonnull(next);
    char p2[700];
    snprintf(p2, sizeof p2, "/v1/credit-notes?tenant=tcredit&limit=2&cursor=%s", next);
    http_free(&r);
    http_do(F.port, "GET", p2, F.finance, NULL, NULL, NULL, &r);
    cJSON *j2 = json_of(&r);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j2, "items")), 1);
    cJSON_Delete(j2);
    cJSON_Delete(j);
    http_free(&r);
    cJSON_Delete(fin);
    free(oct);
    free(id);
    PQfinish(c);
}
END_TEST

static cJSON *find_adjustment(cJSON *inv, const char *period)
{
    cJSON *lines = cJSON_GetObjectItemCaseSensitive(inv, "lines");
    for (cJSON *l = lines ? lines->child : NULL; l; l = l->next)
        if (!strcmp(jstr(l, "kind"), "adjustment") && jstr(l, "corrects_period") &&
            !strcmp(jstr(l, "corrects_period"), period))
            return l;
    return NULL;
}

START_TEST(test_late_events_become_adjustment_lines_on_the_next_invoice)
{
    PGconn *c = db();
    ev(c, "tlate", "llama-3.1-70b-instruct", "fra1", SEP_2026 + 3600000000, 1000000, 0, 0, 0);
    char *sep = invoice_id("tlate", "2026-09");
    cJSON *fin = NULL;
    ck_assert_int_eq(finalize(sep, &fin), 200);
    ck_assert_str_eq(jstr(fin, "total"), "0.60");
    /* a late event for September arrives after finalization */
    ev(c, "tlate", "llama-3.1-70b-instruct", "fra1", SEP_2026 + 20 * GM_US_PER_DAY, 2000000, 0, 0,
       0);
    cJSON *sep_again = get_invoice(sep, F.finance, 200);
    ck_assert_str_eq(jstr(sep_again, "total"), "0.60");
    char *oct = invoice_id("tlate", "2026-10");
    cJSON *draft = get_invoice(oct, F.finance, 200);
    cJSON *adj = find_adjustment(draft, "2026-09");
    ck_assert_msg(adj != NULL, "no adjustment line: %s", cJSON_PrintUnformatted(draft));
    ck_assert_str_eq(jstr(adj, "amount"), "1.20");
    ck_assert_str_eq(jstr(adj, "quantity"), "2000000");
    ck_assert_str_eq(jstr(adj, "adjusted_kind"), "usage");
    ck_assert_str_eq(jstr(draft, "total"), "1.20");
    cJSON *fin_oct = NULL;
    ck_assert_int_eq(finalize(oct, &fin_oct), 200);
    ck_assert_ptr_nonnull(find_adjustment(fin_oct, "2026-09"));
    /* once billed, the correction does not come back on the invoice after (November 2026,
     * the current month on the suite's clock) */
    char *nov = invoice_id("tlate", "2026-11");
    cJSON *nd = get_invoice(nov, F.finance, 200);
    ck_assert_ptr_null(find_adjustment(nd, "2026-09"));
    /* reconciliation: the period's invoiced exact amount now equals the ledger's */
    char *v = gm_test_pg_value(c, "SELECT (ledger_amount = invoiced_amount)::text"
                                  " FROM audit.reconciliation WHERE tenant = 'tlate'"
                                  " AND period_start = '2026-09-01T00:00:00Z'");
    ck_assert_str_eq(v, "true");
    free(v);
    cJSON_Delete(nd);
    cJSON_Delete(fin_oct);
    cJSON_Delete(draft);
    cJSON_Delete(sep_again);
    cJSON_Delete(fin);
    free(nov);
    free(oct);
    free(sep);
    PQfinish(c);
}
END_TEST

START_TEST(test_invoice_lines_reconcile_with_the_ledger_at_contract_prices)
{
    PGconn *c = db();
    static const char *models[] = {"llama-3.1-8b-instruct", "llama-3.1-70b-instruct", "deepseek-v3",
                                   "some-unknown-model"};
    static const char *sites[] = {"fra1", "tro1", "nowhere9"};
    uint64_t x = 88172645463325252ull;
    const char *tenants[] = {"trecon", "acme"};
    char events_path[] = "/tmp/gm_api_quote_XXXXXX";
    int efd = mkstemp(events_path);
    ck_assert(efd >= 0);
    FILE *events = fdopen(efd, "w");
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < 60; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const char *model = models[x % 4], *site = sites[(x >> 8) % 3];
            int64_t when = SEP_2026 + (int64_t)((x >> 16) % (29 * 24)) * GM_US_PER_HOUR + 1234567;
            int64_t q[4] = {(int64_t)(x % 1000003), (int64_t)((x >> 20) % 50001),
                            (int64_t)((x >> 30) % 70001), (int64_t)((x >> 40) % 9000001)};
            ev(c, tenants[t], model, site, when, q[0], q[1], q[2], q[3]);
            char ts[40];
            gm_time_format(when, ts, sizeof ts);
            fprintf(events,
                    "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                    "\"source\":\"test/q\",\"id\":\"q-%d-%d\",\"time\":\"%s\","
                    "\"subject\":\"%s\",\"datacontenttype\":\"application/json\","
                    "\"data\":{\"seq\":%d,\"site\":\"%s\",\"model\":\"%s\","
                    "\"request_id\":\"r\",\"input_tokens\":%lld,\"cached_tokens\":%lld,"
                    "\"output_tokens\":%lld,\"gpu_us\":%lld}}\n",
                    t, i, ts, tenants[t], t * 100 + i + 1, site, model, (long long)q[0],
                    (long long)q[1], (long long)q[2], (long long)q[3]);
        }
    fclose(events);
    /* the oracle: `gridmeter quote` prices the same events with the same documents */
    char cmd[2048], *quote = NULL;
    snprintf(cmd, sizeof cmd,
             "%s/cli/gridmeter quote --rate-card %s/examples/ratecards/list-usd-v1.json,"
             "%s/examples/ratecards/list-usd-v2.json --contract "
             "%s/examples/ratecards/contract-acme.json < %s",
             GM_BINARY_DIR, GM_SOURCE_DIR, GM_SOURCE_DIR, GM_SOURCE_DIR, events_path);
    FILE *qp = popen(cmd, "r");
    ck_assert(qp != NULL);
    size_t qlen = 0, qcap = 0;
    char qbuf[65536];
    size_t got;
    while ((got = fread(qbuf, 1, sizeof qbuf, qp)) > 0) {
        quote = gm_xrealloc(quote, (qcap = qlen + got + 1));
        memcpy(quote + qlen, qbuf, got);
        qlen += got;
        quote[qlen] = 0;
    }
    ck_assert_msg(pclose(qp) == 0 && quote, "gridmeter quote failed: %s", cmd);
    unlink(events_path);
    cJSON *qdoc = cJSON_Parse(quote);
    ck_assert_msg(qdoc != NULL, "quote output is not JSON");
    free(quote);
    for (int t = 0; t < 2; t++) {
        char *id = invoice_id(tenants[t], "2026-09");
        cJSON *inv = get_invoice(id, F.finance, 200);
        int usage_lines = 0, gpu_lines = 0;
        gm_i128 sum = 0;
        int mu = (int)cJSON_GetObjectItemCaseSensitive(inv, "minor_units")->valuedouble;
        for (cJSON *l = cJSON_GetObjectItemCaseSensitive(inv, "lines")->child; l; l = l->next) {
            gm_i128 amount = 0, exact = 0;
            ck_assert(gm_dec_parse(jstr(l, "amount"), strlen(jstr(l, "amount")), mu, &amount, NULL,
                                   0) == 0);
            ck_assert(gm_dec_parse(jstr(l, "amount_exact"), strlen(jstr(l, "amount_exact")), 18,
                                   &exact, NULL, 0) == 0);
            ck_assert_msg(amount == gm_rating_round_e18(exact, mu),
                          "line %s: one rounding, half even", jstr(l, "description"));
            sum += amount;
            if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(l, "dimension"))) {
                const char *dim = jstr(l, "dimension");
                /* Regression (GPU line a person cannot redo by hand: quantity in microseconds
                 * beside a price per GPU-second): quantity and unit price are in one unit, so
                 * quantity x unit_price is the exact amount, checked in PostgreSQL NUMERIC. */
                const char *u[3] = {jstr(l, "quantity"), jstr(l, "unit_price"),
                                    jstr(l, "amount_exact")};
                ck_assert_str_eq(jstr(l, "unit"), strcmp(dim, "gpu") ? "token" : "gpu_second");
                PGresult *r = PQexecParams(c, "SELECT $1::numeric * $2::numeric = $3::numeric", 3,
                                           NULL, u, NULL, NULL, 0);
                ck_assert(PQresultStatus(r) == PGRES_TUPLES_OK);
                ck_assert_msg(!strcmp(PQgetvalue(r, 0, 0), "t"), "%s: %s x %s != %s",
                              jstr(l, "description"), u[0], u[1], u[2]);
                PQclear(r);
                gpu_lines += !strcmp(dim, "gpu");
            }
            if (strcmp(jstr(l, "kind"), "usage"))
                continue;
            usage_lines++;
            /* the exact amount and quantity of the line are the ledger's, re-summed here */
            char ver[16];
            snprintf(ver, sizeof ver, "%d",
                     (int)cJSON_GetObjectItemCaseSensitive(l, "card_version")->valuedouble);
            const char *dim = jstr(l, "dimension");
            const char *p[5] = {tenants[t], jstr(l, "model"), jstr(l, "site_tier"), ver, dim};
            PGresult *r = PQexecParams(
                c,
                "SELECT sum(CASE $5 WHEN 'input' THEN amount_input WHEN 'cached' THEN amount_cached"
                " WHEN 'output' THEN amount_output ELSE amount_gpu END)::text,"
                " sum(CASE $5 WHEN 'input' THEN input_tokens WHEN 'cached' THEN cached_tokens"
                " WHEN 'output' THEN output_tokens ELSE gpu_us END)::text"
                " FROM audit.usage_events WHERE tenant = $1 AND model = $2 AND site_tier = $3"
                " AND rate_card_version = $4::int AND time >= '2026-09-01Z' AND time < "
                "'2026-10-01Z'",
                5, NULL, p, NULL, NULL, 0);
            ck_assert(PQresultStatus(r) == PGRES_TUPLES_OK);
            ck_assert_msg(!strcmp(PQgetvalue(r, 0, 0), jstr(l, "amount_exact")),
                          "%s: ledger %s, invoice %s", jstr(l, "description"), PQgetvalue(r, 0, 0),
                          jstr(l, "amount_exact"));
            ck_assert_str_eq(PQgetvalue(r, 0, 1), jstr(l, "metered_quantity"));
            PQclear(r);
        }
        ck_assert_int_gt(usage_lines, 0);
        ck_assert_int_gt(gpu_lines, 0);
        ck_assert(sum == cents(jstr(inv, "total")));
        /* and `gridmeter quote` agrees, line by line and in total */
        const cJSON *qinv = NULL;
        for (cJSON *q = cJSON_GetObjectItemCaseSensitive(qdoc, "invoices")->child; q; q = q->next)
            if (!strcmp(jstr(q, "tenant"), tenants[t]))
                qinv = q;
        ck_assert_msg(qinv != NULL, "quote has no invoice for %s", tenants[t]);
        ck_assert_str_eq(jstr(qinv, "total"), jstr(inv, "total"));
        cJSON *ql = cJSON_GetObjectItemCaseSensitive(qinv, "lines");
        cJSON *al = cJSON_GetObjectItemCaseSensitive(inv, "lines");
        ck_assert_int_eq(cJSON_GetArraySize(ql), cJSON_GetArraySize(al));
        for (int k = 0; k < cJSON_GetArraySize(al); k++) {
            ck_assert_str_eq(jstr(cJSON_GetArrayItem(ql, k), "amount_exact"),
                             jstr(cJSON_GetArrayItem(al, k), "amount_exact"));
            ck_assert_str_eq(jstr(cJSON_GetArrayItem(ql, k), "amount"),
                             jstr(cJSON_GetArrayItem(al, k), "amount"));
        }
        cJSON_Delete(inv);
        free(id);
    }
    /* the default-card tenant's exact usage equals the ledger (no contract prices, no tiers) */
    char *id = invoice_id("trecon", "2026-09");
    cJSON *fin = NULL;
    ck_assert_int_eq(finalize(id, &fin), 200);
    char *v =
        gm_test_pg_value(c, "SELECT (ledger_amount = invoiced_amount AND difference = 0)::text"
                            " FROM audit.reconciliation WHERE tenant = 'trecon'"
                            " AND period_start = '2026-09-01Z'");
    ck_assert_str_eq(v, "true");
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.invoice_lines l JOIN audit.invoices i"
                            " USING (invoice_id) WHERE i.tenant = 'trecon'");
    ck_assert_int_eq(atoi(v), cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(fin, "lines")));
    free(v);
    cJSON_Delete(fin);
    cJSON_Delete(qdoc);
    free(id);
    PQfinish(c);
}
END_TEST

START_TEST(test_invoice_csv_and_usage_series)
{
    PGconn *c = db();
    int64_t h10 = OCT_2026 + 4 * GM_US_PER_DAY + 10 * GM_US_PER_HOUR;
    ev(c, "tusage", "llama-3.1-8b-instruct", "fra1", h10 + 15 * 60000000LL, 100, 10, 1, 0);
    ev(c, "tusage", "llama-3.1-8b-instruct", "fra1", h10 + 45 * 60000000LL, 200, 20, 2, 0);
    ev(c, "tusage", "deepseek-v3", "fra1", h10 + 65 * 60000000LL, 300, 30, 3, 1000);
    PQfinish(c);
    char *id = invoice_id("tusage", "2026-10");
    char path[256];
    snprintf(path, sizeof path, "/v1/invoices/%s", id);
    http_resp r;
    http_do(F.port, "GET", path, F.finance, NULL, NULL, "Accept: text/csv\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.headers, "text/csv"));
    ck_assert(!strncmp(r.body, "invoice_id,number,tenant,period", 31));
    ck_assert_ptr_nonnull(strstr(r.body, ",total,"));
    http_free(&r);
    http_do(
        F.port, "GET",
        "/v1/tenants/tusage/usage?from=2026-10-05T10:00:00Z&to=2026-10-05T12:00:00Z&bucket=hour",
        F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    cJSON *j = json_of(&r);
    cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "series");
    ck_assert_int_eq(cJSON_GetArraySize(s), 2);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(s, 0), "input_tokens"), "300");
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(s, 1), "gpu_us"), "1000");
    cJSON_Delete(j);
    http_free(&r);
    http_do(F.port, "GET",
            "/v1/tenants/tusage/usage?from=2026-10-05T10:00:00Z&to=2026-10-05T12:00:00Z"
            "&bucket=minute&group_by=model,dimension",
            F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    j = json_of(&r);
    s = cJSON_GetObjectItemCaseSensitive(j, "series");
    ck_assert_int_eq(cJSON_GetArraySize(s), 12); /* 3 minutes x 4 dimensions */
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(s, 0), "dimension"), "input");
    cJSON_Delete(j);
    http_free(&r);
    http_do(F.port, "GET",
            "/v1/tenants/tusage/usage?from=2026-10-05T10:30:00Z&to=2026-10-05T12:00:00Z", F.finance,
            NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert_ptr_nonnull(strstr(r.body, "\"field\":\"from\""));
    http_free(&r);
    http_do(F.port, "GET", "/v1/revenue?period=2026-10&group_by=tenant", F.finance, NULL, NULL,
            NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"tenant\":\"tusage\""));
    http_free(&r);
    http_do(F.port, "GET", "/v1/tenants/acme/spend", F.acme, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"currency\":\"USD\""));
    http_free(&r);
    free(id);
}
END_TEST

/* Finance re-rates over the API as `gridmeter rerate` does (billing/): a dry run answers the
 * diff and writes nothing; applied with an Idempotency-Key, one run is appended and a replay
 * of the same key answers the same run; the run is listed. Revenue over time by day adds up
 * to the month's revenue. */
START_TEST(test_rerating_over_the_api_is_idempotent_and_listed)
{
    cJSON *j = NULL;
    ck_assert_int_eq(post("/v1/rerating-runs", F.finance, "rr-dry-1",
                          "{\"period\":\"2026-09\",\"dry_run\":true,\"reason\":\"check\"}", &j),
                     200);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "run_id")));
    ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "lines")));
    cJSON_Delete(j);
    PGconn *c = db();
    char *n0 = gm_test_pg_value(c, "SELECT count(*) FROM gm.rerating_runs");
    ck_assert_int_eq(post("/v1/rerating-runs", F.finance, "rr-apply-1",
                          "{\"period\":\"2026-09\",\"reason\":\"audit request\"}", &j),
                     201);
    double run = cJSON_GetObjectItemCaseSensitive(j, "run_id")->valuedouble;
    ck_assert(run > 0);
    cJSON_Delete(j);
    http_resp a;
    http_do(F.port, "POST", "/v1/rerating-runs", F.finance, "rr-apply-1",
            "{\"period\":\"2026-09\",\"reason\":\"audit request\"}", NULL, &a);
    ck_assert_int_eq(a.status, 201);
    char h[16];
    ck_assert(http_header(&a, "Idempotent-Replayed", h, sizeof h));
    http_free(&a);
    char *n1 = gm_test_pg_value(c, "SELECT count(*) FROM gm.rerating_runs");
    ck_assert_int_eq(atoi(n1), atoi(n0) + 1); /* one effect */
    free(n0);
    free(n1);
    ck_assert_int_eq(
        post("/v1/rerating-runs", F.finance, "rr-bad-1", "{\"period\":\"2026-09\"}", &j), 400);
    ck_assert_str_eq(jstr(j, "field"), "reason");
    cJSON_Delete(j);
    http_do(F.port, "GET", "/v1/rerating-runs?period=2026-09", F.finance, NULL, NULL, NULL, &a);
    ck_assert_int_eq(a.status, 200);
    j = cJSON_Parse(a.body);
    ck_assert_int_ge(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 1);
    ck_assert_str_eq(
        jstr(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0), "reason"),
        "audit request");
    cJSON_Delete(j);
    http_free(&a);
    /* revenue over time: the days of September add up exactly to September */
    http_do(F.port, "GET", "/v1/revenue?from=2026-09&to=2026-10&bucket=day", F.finance, NULL, NULL,
            NULL, &a);
    ck_assert_int_eq(a.status, 200);
    cJSON *days = cJSON_Parse(a.body);
    http_free(&a);
    http_do(F.port, "GET", "/v1/revenue?period=2026-09&group_by=tenant", F.finance, NULL, NULL,
            NULL, &a);
    ck_assert_int_eq(a.status, 200);
    cJSON *month = cJSON_Parse(a.body);
    http_free(&a);
    gm_i128 sd = 0, sm = 0, v;
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(days, "series"))
    {
        ck_assert(gm_dec_parse(jstr(r, "amount_exact"), strlen(jstr(r, "amount_exact")), 18, &v,
                               NULL, 0) == 0);
        sd += v;
    }
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(month, "rows"))
    {
        ck_assert(gm_dec_parse(jstr(r, "amount_exact"), strlen(jstr(r, "amount_exact")), 18, &v,
                               NULL, 0) == 0);
        sm += v;
    }
    ck_assert(sd == sm && sd > 0);
    cJSON_Delete(days);
    cJSON_Delete(month);
    http_do(F.port, "GET", "/v1/revenue?period=2026-09&bucket=day", F.finance, NULL, NULL, NULL,
            &a);
    ck_assert_int_eq(a.status, 400);
    http_free(&a);
    PQfinish(c);
}
END_TEST

START_TEST(test_spend_shows_commitment_and_prepaid_credit_of_the_draft)
{
    int64_t now = gm_now_us(), month = gm_month_start(now);
    PGconn *c = db();
    ev(c, "acme", "llama-3.1-8b-instruct", "fra1", month + (now - month) / 2, 1000, 0, 2000, 0);
    PQfinish(c);
    http_resp r;
    http_do(F.port, "GET", "/v1/tenants/acme/spend", F.acme, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(j, "commitment");
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(j, "credit");
    ck_assert(cJSON_IsObject(cm) && cJSON_IsObject(cr));
    /* examples/ratecards/contract-acme.json: 100 USD monthly minimum, 50 USD prepaid */
    ck_assert_str_eq(jstr(cm, "monthly_minimum"), "100.00");
    ck_assert_str_eq(jstr(cm, "currency"), "USD");
    ck_assert_str_eq(jstr(cr, "granted"), "50.00");
    ck_assert_str_eq(jstr(cr, "currency"), "USD");
    gm_i128 start = cents(jstr(cr, "balance_at_month_start")),
            used = cents(jstr(cr, "used_this_month")), left = cents(jstr(cr, "remaining")),
            shortfall = cents(jstr(cm, "shortfall_so_far"));
    ck_assert(used >= 0 && used <= start && left == start - used && start <= 5000);
    /* the same month's draft invoice has exactly these commitment and credit lines */
    char ts[40], period[8];
    gm_time_format(month, ts, sizeof ts);
    snprintf(period, sizeof period, "%.7s", ts);
    char *id = invoice_id("acme", period);
    cJSON *inv = get_invoice(id, F.finance, 200);
    gm_i128 commit_lines = 0, credit_lines = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(inv, "lines"))
    {
        if (!strcmp(jstr(l, "kind"), "commitment"))
            commit_lines += cents(jstr(l, "amount"));
        else if (!strcmp(jstr(l, "kind"), "credit"))
            credit_lines += cents(jstr(l, "amount"));
    }
    ck_assert(shortfall == commit_lines && used == -credit_lines);
    ck_assert_msg(used > 0 && shortfall > 0, "a small month draws credit and falls short: %s",
                  cJSON_PrintUnformatted(j));
    cJSON_Delete(inv);
    cJSON_Delete(j);
    free(id);
    /* a tenant without a contract has neither */
    c = db();
    ev(c, "nocontract", "llama-3.1-8b-instruct", "fra1", month + (now - month) / 2, 10, 0, 10, 0);
    PQfinish(c);
    http_do(F.port, "GET", "/v1/tenants/nocontract/spend", F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    j = json_of(&r);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "commitment")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "credit")));
    cJSON_Delete(j);
    http_free(&r);
}
END_TEST

/* GET /v1/tenants/{t}/entitlement (docs/api.md "Budgets and alerts"): allowed without a
 * budget; within it, the spend equals the month's charges (gm.month_spend, kept in the
 * charging transaction) and the limit is the budget's; at the limit a hard budget answers
 * allowed=false, a soft one stays allowed; crossed thresholds are listed. */
START_TEST(test_entitlement_answers_from_the_budget_and_the_committed_spend)
{
    int64_t now = gm_now_us(), month = gm_month_start(now);
    PGconn *c = db();
    /* this connection stamps gm.month_spend.updated_at: on gridmeter's clock, as a rater's */
    char off[96];
    snprintf(off, sizeof off, "SET gridmeter.clock_offset_us = '%lld'",
             (long long)gm_clock_offset_us());
    gm_test_pg_exec(c, off);
    ev(c, "budgeted", "llama-3.1-8b-instruct", "fra1", month + (now - month) / 2, 1000, 0, 2000, 0);
    http_resp r;
    http_do(F.port, "GET", "/v1/tenants/budgeted/entitlement", F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "allowed")));
    ck_assert_str_eq(jstr(j, "reason"), "no budget");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "limit")));
    cJSON_Delete(j);
    char *spend =
        gm_test_pg_value(c, "SELECT sum(amount)::text FROM gm.charges WHERE tenant = 'budgeted'");
    gm_test_pg_exec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit, thresholds)"
                       " VALUES ('budgeted', 'USD', 1000, '{50,100}')");
    http_do(F.port, "GET", "/v1/tenants/budgeted/entitlement", F.admin, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    j = json_of(&r);
    http_free(&r);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "allowed")));
    ck_assert_str_eq(jstr(j, "reason"), "within budget");
    ck_assert_str_eq(jstr(j, "spend"), spend);
    ck_assert_str_eq(jstr(j, "limit"), "1000.000000000000000000");
    ck_assert_str_eq(jstr(j, "currency"), "USD");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")),
                     0);
    const cJSON *age = cJSON_GetObjectItemCaseSensitive(j, "age_us");
    ck_assert(cJSON_IsNumber(age) && age->valuedouble >= 0);
    cJSON_Delete(j);
    /* a hard limit at exactly the spend: refused; the next charge crosses both thresholds */
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE gm.budgets SET monthly_limit = %s WHERE tenant = 'budgeted'",
             spend);
    gm_test_pg_exec(c, sql);
    ev(c, "budgeted", "llama-3.1-8b-instruct", "fra1", month + (now - month) / 2, 1000, 0, 0, 0);
    http_do(F.port, "GET", "/v1/tenants/budgeted/entitlement", F.finance, NULL, NULL, NULL, &r);
    j = json_of(&r);
    http_free(&r);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "allowed")));
    ck_assert_str_eq(jstr(j, "reason"), "monthly limit reached");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")),
                     2);
    cJSON_Delete(j);
    gm_test_pg_exec(c, "UPDATE gm.budgets SET hard_limit = false WHERE tenant = 'budgeted'");
    http_do(F.port, "GET", "/v1/tenants/budgeted/entitlement", F.finance, NULL, NULL, NULL, &r);
    j = json_of(&r);
    http_free(&r);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "allowed")));
    /* regression (issue 15 review): a soft budget over its limit said "within budget" */
    ck_assert_str_eq(jstr(j, "reason"), "soft limit reached");
    cJSON_Delete(j);
    gm_test_pg_exec(c, "UPDATE gm.budgets SET monthly_limit = monthly_limit * 3"
                       " WHERE tenant = 'budgeted'");
    http_do(F.port, "GET", "/v1/tenants/budgeted/entitlement", F.finance, NULL, NULL, NULL, &r);
    j = json_of(&r);
    http_free(&r);
    ck_assert_str_eq(jstr(j, "reason"), "within budget");
    cJSON_Delete(j);
    /* another tenant's customer key does not see it */
    http_do(F.port, "GET", "/v1/tenants/budgeted/entitlement", F.acme, NULL, NULL, NULL, &r);
    ck_assert_int_ne(r.status, 200);
    http_free(&r);
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'budgeted'");
    free(spend);
    PQfinish(c);
}
END_TEST

/* POST /v1/tenants/{t}/budget: admins set it; a customer key only where the admin allowed it,
 * in the budget's currency and without the flag; bad fields are refused by name. */
START_TEST(test_budget_is_set_by_admins_and_by_customers_only_where_allowed)
{
    http_resp r;
    const char *body = "{\"currency\":\"USD\",\"monthly_limit\":\"250.50\","
                       "\"thresholds_percent\":[75,100]}";
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.acme, "b-1", body, NULL, &r);
    ck_assert_msg(r.status == 403, "no budget yet: %d %s", r.status, r.body);
    http_free(&r);
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.admin, "b-2", body, NULL, &r);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    ck_assert_str_eq(jstr(j, "monthly_limit"), "250.500000000000000000");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_percent")),
                     2);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "customer_may_set")));
    cJSON_Delete(j);
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.acme, "b-3", body, NULL, &r);
    ck_assert_msg(r.status == 403, "not allowed: %d %s", r.status, r.body);
    http_free(&r);
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.admin, "b-4",
            "{\"currency\":\"USD\",\"monthly_limit\":\"100\",\"customer_may_set\":true}", NULL, &r);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    http_free(&r);
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.acme, "b-5", body, NULL, &r);
    ck_assert_msg(r.status == 200, "allowed: %d %s", r.status, r.body);
    http_free(&r);
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.acme, "b-6",
            "{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"customer_may_set\":false}", NULL, &r);
    ck_assert_msg(r.status == 403 && strstr(r.body, "customer_may_set"), "%d %s", r.status, r.body);
    http_free(&r);
    http_do(F.port, "POST", "/v1/tenants/acme/budget", F.acme, "b-7",
            "{\"currency\":\"EUR\",\"monthly_limit\":\"1\"}", NULL, &r);
    /* a customer cannot change the currency: 422 naming it (was a 403 like "not allowed") */
    ck_assert_msg(r.status == 422 && strstr(r.body, "\"field\":\"currency\"") &&
                      strstr(r.body, "USD"),
                  "another currency: %d %s", r.status, r.body);
    http_free(&r);
    struct {
        const char *body, *field;
    } bad[] = {
        {"{\"currency\":\"usd\",\"monthly_limit\":\"1\"}", "currency"},
        {"{\"currency\":\"USD\",\"monthly_limit\":1}", "monthly_limit"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"0\"}", "monthly_limit"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1e2\"}", "monthly_limit"},
        {"{\"currency\":\"USD\",\"monthly_limit\":1e2}", "monthly_limit"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"-5\"}", "monthly_limit"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1.0000000000000000001\"}", "monthly_limit"},
        /* numeric(38,18): 21 integer digits overflowed in PostgreSQL (a 500) */
        {"{\"currency\":\"USD\",\"monthly_limit\":\"100000000000000000000\"}", "monthly_limit"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[80,50]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"hard_limit\":1}", "hard_limit"},
        /* regression (issue 15 review): cast to int, 1e300 undefined behaviour */
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,50.0]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,5e1]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,050]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":"
         "[10, 0.9999999999999999999]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,1e300]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,1001]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,-5]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"thresholds_percent\":[10,\"50\"]}",
         "thresholds_percent"},
        {"{\"currency\":\"USD\",\"monthly_limit\":\"1\",\"limit\":1}", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char idem[16];
        snprintf(idem, sizeof idem, "b-bad-%zu", i);
        http_do(F.port, "POST", "/v1/tenants/acme/budget", F.admin, idem, bad[i].body, NULL, &r);
        ck_assert_msg(r.status == 400, "%s: %d %s", bad[i].body, r.status, r.body);
        if (bad[i].field) {
            char want[64];
            snprintf(want, sizeof want, "\"field\":\"%s\"", bad[i].field);
            ck_assert_msg(strstr(r.body, want), "%s: %s", bad[i].body, r.body);
        }
        if (strstr(bad[i].body, "[10,") || strstr(bad[i].body, "[10, ")) /* the index named */
            ck_assert_msg(strstr(r.body, "thresholds_percent[1]: must be an integer from 1 to"
                                         " 1000"),
                          "%s: %s", bad[i].body, r.body);
        http_free(&r);
    }
    PGconn *c = db();
    char *v = gm_test_pg_value(c, "SELECT monthly_limit::numeric(10,2) || ' ' || thresholds::text"
                                  " FROM gm.budgets WHERE tenant = 'acme'");
    ck_assert_str_eq(v, "250.50 {75,100}");
    free(v);
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'acme'");
    PQfinish(c);
}
END_TEST

/* Runs after the tests that finalize, void and credit invoices (registered last): each of
 * those facts has its webhook event in the outbox (docs/api.md "Webhooks"), written by the
 * same transaction, with the invoice's final number and total. */
START_TEST(test_invoice_and_credit_note_events_are_in_the_outbox)
{
    PGconn *c = db();
    char *v = gm_test_pg_value(
        c, "SELECT (SELECT count(*) FROM gm.invoices WHERE finalized_at IS NOT NULL) || ' ' ||"
           " (SELECT count(*) FROM gm.invoices WHERE status = 'void') || ' ' ||"
           " (SELECT count(*) FROM gm.credit_notes)");
    int fin = 0, vo = 0, cn = 0;
    ck_assert_int_eq(sscanf(v, "%d %d %d", &fin, &vo, &cn), 3);
    ck_assert_msg(fin > 0 && vo > 0 && cn > 0, "the suite made finalized, void and credited: %s",
                  v);
    free(v);
    v = gm_test_pg_value(
        c, "SELECT count(*) FILTER (WHERE event_type = 'invoice.finalized') || ' ' ||"
           " count(*) FILTER (WHERE event_type = 'invoice.voided') || ' ' ||"
           " count(*) FILTER (WHERE event_type = 'credit_note.created') FROM gm.webhook_outbox");
    char want[64];
    snprintf(want, sizeof want, "%d %d %d", fin, vo, cn);
    ck_assert_str_eq(v, want);
    free(v);
    /* the payload carries the invoice as finalized */
    v = gm_test_pg_value(
        c, "SELECT count(*) FROM gm.invoices i JOIN gm.webhook_outbox o ON o.event_id ="
           " 'invoice.' || i.invoice_id || '.finalized' WHERE o.payload->>'number' IS DISTINCT"
           " FROM i.number OR o.payload->>'total' IS DISTINCT FROM i.total::text OR o.tenant <>"
           " i.tenant");
    ck_assert_str_eq(v, "0");
    free(v);
    PQfinish(c);
}
END_TEST

/* The fake rater /metrics of the fixture (tests/test_api_client.c): text to serve, NULL to
 * close connections without an answer. */
void api_fake_rater_set(const char *text);

START_TEST(test_ops_ingest_returns_the_raters_metrics_and_503_without_it)
{
    api_fake_rater_set(
        "# HELP gridmeter_rater_messages_total Kafka messages rated, by outcome.\n"
        "# TYPE gridmeter_rater_messages_total counter\n"
        "gridmeter_rater_messages_total{outcome=\"accepted\"} 123456789012\n"
        "gridmeter_rater_messages_total{outcome=\"duplicate\"} 17\n"
        "gridmeter_rater_messages_total{outcome=\"rejected\"} 3\n"
        "gridmeter_rater_batches_total 4242\n"
        "gridmeter_rater_batch_failures_total 1\n"
        "gridmeter_rater_commit_seconds_bucket{le=\"+Inf\"} 4242\n"
        "gridmeter_rater_commit_seconds_sum 12.345678\n"
        "gridmeter_rater_commit_seconds_count 4242\n"
        "gridmeter_rater_consumer_lag{topic=\"gridmeter.usage.v1\",partition=\"0\"} 5\n"
        "gridmeter_rater_committed_offset{topic=\"gridmeter.usage.v1\",partition=\"0\"} 99\n"
        "gridmeter_rater_consumer_lag{topic=\"gridmeter.usage.v1\",partition=\"1\"} 0\n");
    http_resp r;
    http_do(F.port, "GET", "/v1/ops/ingest", F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "messages");
    ck_assert_str_eq(jstr(m, "accepted"), "123456789012");
    ck_assert_str_eq(jstr(m, "duplicate"), "17");
    ck_assert_str_eq(jstr(m, "rejected"), "3");
    ck_assert_str_eq(jstr(j, "batches"), "4242");
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(j, "commit_seconds");
    ck_assert_str_eq(jstr(cs, "sum"), "12.345678");
    ck_assert_str_eq(jstr(cs, "count"), "4242");
    const cJSON *lag = cJSON_GetObjectItemCaseSensitive(j, "consumer_lag");
    ck_assert_int_eq(cJSON_GetArraySize(lag), 2);
    const cJSON *l0 = cJSON_GetArrayItem(lag, 0), *l1 = cJSON_GetArrayItem(lag, 1);
    ck_assert_str_eq(jstr(l0, "topic"), "gridmeter.usage.v1");
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(l0, "partition")->valueint, 0);
    ck_assert_str_eq(jstr(l0, "lag"), "5");
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(l1, "partition")->valueint, 1);
    ck_assert_str_eq(jstr(l1, "lag"), "0");
    cJSON_Delete(j);
    /* admin may call it; a customer may not */
    http_do(F.port, "GET", "/v1/ops/ingest", F.admin, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    http_do(F.port, "GET", "/v1/ops/ingest", F.acme, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 403);
    http_free(&r);
    /* a listener that is not a rater, and one that never answers: 503 problem+json */
    api_fake_rater_set("some_other_metric 1\n");
    http_do(F.port, "GET", "/v1/ops/ingest", F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 503, "%d %s", r.status, r.body);
    ck_assert_ptr_nonnull(strstr(r.headers, "application/problem+json"));
    http_free(&r);
    api_fake_rater_set(NULL);
    http_do(F.port, "GET", "/v1/ops/ingest", F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 503, "%d %s", r.status, r.body);
    ck_assert_ptr_nonnull(strstr(r.headers, "application/problem+json"));
    ck_assert_ptr_nonnull(strstr(r.body, "rater"));
    http_free(&r);
    api_fake_rater_set("gridmeter_rater_messages_total{outcome=\"accepted\"} 0\n");
}
END_TEST

/* ---- Limits and bad requests ------------------------------------------------------------ */
static char *db_fingerprint(PGconn *c)
{
    return gm_test_pg_value(
        c,
        "SELECT md5(concat_ws('|',"
        " (SELECT string_agg(i::text, ',' ORDER BY invoice_id) FROM gm.invoices i),"
        " (SELECT string_agg(l::text, ',' ORDER BY invoice_id, line_no) FROM gm.invoice_lines l),"
        " (SELECT string_agg(n::text, ',' ORDER BY credit_note_id) FROM gm.credit_notes n),"
        " (SELECT string_agg(t::text, ',' ORDER BY tenant) FROM gm.tenants t),"
        " (SELECT string_agg(k::text, ',' ORDER BY key_id) FROM gm.api_keys k),"
        " (SELECT string_agg(c::text, ',' ORDER BY tenant, version) FROM gm.contracts c),"
        " (SELECT count(*)::text FROM gm.rate_cards), (SELECT count(*)::text FROM gm.ledger),"
        " (SELECT count(*)::text FROM gm.charges)))");
}

static void pct(const char *s, char *out, size_t len)
{
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, len - o, "%%%02X", ch);
    }
    out[o] = 0;
}

START_TEST(test_bad_requests_are_4xx_and_leave_the_database_unchanged)
{
    PGconn *c = db();
    char *before = db_fingerprint(c);
    char longs[3000];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    const char *bad[] = {"' OR 1=1 --",
                         "\"; DROP TABLE gm.ledger; --",
                         "acme' --",
                         "1; SELECT pg_sleep(5)",
                         "$1",
                         "%00",
                         "\xc3\x28",
                         "\xf0\x9f\x98\x80",
                         "../../etc/passwd",
                         "<script>x</script>",
                         "2026-13",
                         "-1",
                         "1e9",
                         "0",
                         "NaN",
                         longs,
                         "acme\r\nX-Evil: 1",
                         "{}",
                         "null"};
    const char *gets[] = {
        "/v1/invoices?period=%s",
        "/v1/invoices?tenant=%s",
        "/v1/invoices?status=%s",
        "/v1/invoices?cursor=%s",
        "/v1/invoices?limit=%s",
        "/v1/invoices/%s",
        "/v1/tenants/%s/usage?from=2026-10-01T00:00:00Z&to=2026-10-02T00:00:00Z",
        "/v1/tenants/acme/usage?from=%s&to=2026-10-02T00:00:00Z",
        "/v1/tenants/acme/usage?from=2026-10-01T00:00:00Z&to=%s",
        "/v1/tenants/acme/usage?from=2026-10-01T00:00:00Z&to=2026-10-02T00:00:00Z&bucket=%s",
        "/v1/tenants/acme/usage?from=2026-10-01T00:00:00Z&to=2026-10-02T00:00:00Z&group_by=%s",
        "/v1/tenants/%s/spend",
        "/v1/tenants/%s/invoices",
        "/v1/revenue?period=%s",
        "/v1/revenue?period=2026-10&group_by=%s",
        "/v1/credit-notes?tenant=%s",
        "/v1/credit-notes?invoice_id=%s",
        "/v1/credit-notes?cursor=%s",
        "/v1/invoices?%s=1"};
    const char *posts[][2] = {
        {"/v1/invoices/%s/finalize", "{}"},
        {"/v1/invoices/%s/credit-notes", "{\"amount\":\"1.00\",\"reason\":\"x\"}"},
        {"/v1/invoices/inv_00000000000000000000000000000000/credit-notes",
         "{\"amount\":\"%s\",\"reason\":\"x\"}"},
        {"/v1/tenants", "{\"tenant\":\"%s\"}"},
        {"/v1/tenants", "{\"tenant\":\"ok-tenant\",\"issuer\":\"%s\"}"},
        {"/v1/api-keys", "{\"role\":\"%s\"}"},
        {"/v1/api-keys", "{\"role\":\"customer\",\"tenant\":\"%s\"}"},
        {"/v1/api-keys", "{\"role\":\"finance\",\"expires_at\":\"%s\"}"}};
    int n = 0;
    for (size_t b = 0; b < GM_ARRAY_LEN(bad); b++) {
        char enc[10000], path[12000], body[12000];
        pct(bad[b], enc, sizeof enc);
        for (size_t g = 0; g < GM_ARRAY_LEN(gets); g++) {
            snprintf(path, sizeof path, gets[g], enc);
            const char *tok = strstr(gets[g], "credit-notes") || strstr(gets[g], "revenue")
                                  ? F.finance
                              : g % 2 ? F.acme
                                      : F.finance;
            http_resp r;
            http_do(F.port, "GET", path, tok, NULL, NULL, NULL, &r);
            /* a value that happens to be well-formed ("2026-13" is a valid tenant id) may be
             * answered; nothing may fail or change */
            ck_assert_msg(r.status >= 200 && r.status < 500, "GET %.200s: %d %.200s", path,
                          r.status, r.body);
            http_free(&r);
            n++;
        }
        bool id_like = strspn(bad[b], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789._-") == strlen(bad[b]) &&
                       bad[b][0] != '-' && bad[b][0] != '.';
        for (size_t p = 0; p < GM_ARRAY_LEN(posts) && !id_like; p++) {
            /* JSON-escape the value for bodies: cJSON does it */
            cJSON *js = cJSON_CreateString(bad[b]);
            char *q = cJSON_PrintUnformatted(js);
            q[strlen(q) - 1] = 0;
            const char *tok = strstr(posts[p][0], "invoices") ? F.finance : F.admin;
            if (strstr(posts[p][0], "%s")) {
                snprintf(path, sizeof path, posts[p][0], enc);
                snprintf(body, sizeof body, "%s", posts[p][1]);
            } else {
                snprintf(path, sizeof path, "%s", posts[p][0]);
                snprintf(body, sizeof body, posts[p][1], q + 1);
            }
            char idem[64];
            snprintf(idem, sizeof idem, "bad-%zu-%zu", b, p);
            http_resp r;
            http_do(F.port, "POST", path, tok, idem, body, NULL, &r);
            bool allowed_ok = !strcmp(bad[b], "finance") && r.status == 201;
            ck_assert_msg((r.status >= 400 && r.status < 500) || allowed_ok,
                          "POST %.200s %.200s: %d %.200s", path, body, r.status, r.body);
            http_free(&r);
            free(q);
            cJSON_Delete(js);
            n++;
        }
    }
    /* malformed bodies, wrong types, unknown and duplicate fields; \u0000 inside a value
     * (cJSON would cut "nul1\u0000evil" short to the tenant "nul1") */
    const char *bodies[] = {"{",
                            "[]",
                            "\"x\"",
                            "{\"tenant\":1}",
                            "{\"tenant\":\"a\",\"tenant\":\"b\"}",
                            "{\"tenant\":\"a\",\"extra\":true}",
                            "{\"tenant\":null}",
                            "{\"tenant\":\"a\"}x",
                            "{\"tenant\":\"\\u0000\"}",
                            "{\"tenant\":\"nul1\\u0000evil\"}",
                            "{\"tenant\":\"nul2\",\"display_name\":\"x\\u0000y\"}",
                            "\xff\xfe",
                            "{\"tenant\":{\"$gt\":\"\"}}"};
    for (size_t i = 0; i < GM_ARRAY_LEN(bodies); i++) {
        char idem[32];
        snprintf(idem, sizeof idem, "body-%zu", i);
        http_resp r;
        http_do(F.port, "POST", "/v1/tenants", F.admin, idem, bodies[i], NULL, &r);
        ck_assert_msg(r.status == 400, "body %s: %d %s", bodies[i], r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.headers, "application/problem+json"));
        http_free(&r);
    }
    /* oversize body (limit 64 KiB): refused before it is read */
    char *big = gm_xmalloc(100 * 1024 + 1);
    memset(big, ' ', 100 * 1024);
    big[100 * 1024] = 0;
    big[0] = '{';
    big[100 * 1024 - 1] = '}';
    http_resp r;
    http_do(F.port, "POST", "/v1/tenants", F.admin, "big-1", big, NULL, &r);
    ck_assert_int_eq(r.status, 413);
    http_free(&r);
    free(big);
    /* wrong content type, unknown method, unknown path */
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ct-1", NULL,
            "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", &r);
    ck_assert_msg(r.status == 415 || r.status == 400, "%d", r.status);
    http_free(&r);
    http_do(F.port, "PUT", "/v1/tenants", F.admin, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    http_free(&r);
    http_do(F.port, "GET", "/v1/nothing", F.admin, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 404);
    http_free(&r);
    const char *raw = "GARBAGE\r\n\r\n";
    http_raw(F.port, raw, strlen(raw), &r);
    ck_assert_msg(r.status == 0 || (r.status >= 400 && r.status < 500), "raw garbage: %d",
                  r.status);
    http_free(&r);
    char *after = db_fingerprint(c);
    ck_assert_str_eq(before, after);
    ck_assert_int_gt(n, 400);
    free(before);
    free(after);
    /* the server is still healthy */
    http_do(F.port, "GET", "/readyz", NULL, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    PQfinish(c);
}
END_TEST

START_TEST(test_per_key_rate_limit_answers_429)
{
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.rate_per_s = 1;
    cfg.rate_burst = 3;
    char err[512];
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    int port = gm_api_port(s), limited = 0;
    for (int i = 0; i < 6; i++) {
        http_resp r;
        http_do(port, "GET", "/v1/tenants", F.admin, NULL, NULL, NULL, &r);
        if (r.status == 429) {
            char h[16];
            ck_assert(http_header(&r, "Retry-After", h, sizeof h));
            limited++;
        } else {
            ck_assert_int_eq(r.status, 200);
        }
        http_free(&r);
    }
    ck_assert_int_ge(limited, 2);
    /* another key has its own bucket */
    http_resp r;
    http_do(port, "GET", "/v1/invoices?tenant=acme", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    gm_api_stop(s);
}
END_TEST

START_TEST(test_revoked_key_is_refused_at_once)
{
    http_resp r;
    cJSON *j = NULL;
    ck_assert_int_eq(
        post("/v1/api-keys", F.admin, "rev-1", "{\"role\":\"customer\",\"tenant\":\"acme\"}", &j),
        201);
    char key[GM_API_TOKEN_MAX], id[40];
    snprintf(key, sizeof key, "%s", jstr(j, "key"));
    snprintf(id, sizeof id, "%s", jstr(j, "key_id"));
    cJSON_Delete(j);
    http_do(F.port, "GET", "/v1/tenants/acme/spend", key, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    char path[96];
    snprintf(path, sizeof path, "/v1/api-keys/%s", id);
    http_do(F.port, "DELETE", path, F.admin, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    http_do(F.port, "GET", "/v1/tenants/acme/spend", key, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    ck_assert_ptr_nonnull(strstr(r.body, "revoked"));
    http_free(&r);
    PGconn *c = db();
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM gm.api_keys WHERE key_id = '%s' AND key_hash ="
             " sha256(convert_to('%s', 'UTF8'))",
             id, key);
    char *v = gm_test_pg_value(c, sql);
    ck_assert_str_eq(v, "1"); /* stored as SHA-256 only */
    free(v);
    PQfinish(c);
}
END_TEST

START_TEST(test_a_stalled_client_does_not_block_others)
{
    /* half a request, then silence: the server keeps serving everyone else */
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)F.port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert(connect(fds[i], (struct sockaddr *)&sa, sizeof sa) == 0);
        const char *part = "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
        ck_assert(send(fds[i], part, strlen(part), 0) > 0);
    }
    for (int i = 0; i < 20; i++) {
        http_resp r;
        http_do(F.port, "GET", "/healthz", NULL, NULL, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        http_free(&r);
    }
    for (int i = 0; i < 4; i++)
        close(fds[i]);
}
END_TEST

START_TEST(test_tls_serves_https_with_the_configured_certificate)
{
    /* scripts/setup.sh installs both; a missing one is a broken set-up, not a pass */
    ck_assert_msg(!access("/usr/bin/openssl", X_OK) && !access("/usr/bin/curl", X_OK),
                  "the TLS test needs /usr/bin/openssl and /usr/bin/curl (scripts/setup.sh)");
    char dir[] = "/tmp/gm_api_tls_XXXXXX";
    ck_assert(mkdtemp(dir) != NULL);
    char cmd[1024], cert[128], keyf[128];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(keyf, sizeof keyf, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1"
             " -subj /CN=localhost >/dev/null 2>&1",
             keyf, cert);
    ck_assert_int_eq(system(cmd), 0);
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.tls_cert_file = cert;
    cfg.tls_key_file = keyf;
    char err[512];
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    snprintf(cmd, sizeof cmd,
             "curl -s --cacert %s -o /dev/null -w '%%{http_code}' https://localhost:%d/readyz",
             cert, gm_api_port(s));
    FILE *p = popen(cmd, "r");
    char out[16] = "";
    ck_assert(fgets(out, sizeof out, p) != NULL);
    pclose(p);
    ck_assert_str_eq(out, "200");
    /* plain HTTP to the TLS port gets no answer */
    snprintf(cmd, sizeof cmd,
             "curl -s -m 3 -o /dev/null -w '%%{http_code}' http://localhost:%d/readyz",
             gm_api_port(s));
    p = popen(cmd, "r");
    out[0] = 0;
    if (!fgets(out, sizeof out, p))
        out[0] = 0;
    pclose(p);
    ck_assert_str_ne(out, "200");
    gm_api_stop(s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- Calendar: one clock, month and year ends, 29 February ---------------------------------
 * The server and these tests share the process clock; each test freezes it at the instants
 * it needs (gm_clock_freeze_us) and the fixture puts it back to API_TEST_NOW after every test.
 * Expected numbers are worked out by hand in the comments. */
#define DEC_2026  INT64_C(1796083200000000) /* 2026-12-01T00:00:00Z */
#define JAN_2027  INT64_C(1798761600000000) /* 2027-01-01T00:00:00Z */
#define FEB_2027  INT64_C(1801440000000000) /* 2027-02-01T00:00:00Z */
#define FEB_2028  INT64_C(1832976000000000) /* 2028-02-01T00:00:00Z */
#define MAR_2028  INT64_C(1835481600000000) /* 2028-03-01T00:00:00Z */
#define LEAP_NOON INT64_C(1835438400000000) /* 2028-02-29T12:00:00Z */

static void clock_back(void)
{
    gm_clock_set_us(API_TEST_NOW);
}

static cJSON *spend(int port, const char *tenant)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tenants/%s/spend", tenant);
    http_resp r;
    http_do(port, "GET", path, F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "spend %s: %d %s", tenant, r.status, r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    return j;
}

static const char *sub(const cJSON *o, const char *obj, const char *name)
{
    return jstr(cJSON_GetObjectItemCaseSensitive(o, obj), name);
}

START_TEST(test_month_to_date_turns_over_at_the_last_microsecond_of_the_year)
{
    PGconn *c = db();
    /* 70B input at 0.60 per 1M in a metro site (list-usd v2 from 2026-12-01): 1M = 0.60 */
    ev(c, "tyear", "llama-3.1-70b-instruct", "fra1", DEC_2026, 1000000, 0, 0, 0);
    ev(c, "tyear", "llama-3.1-70b-instruct", "fra1", JAN_2027 - 1, 2000000, 0, 0, 0);
    PQfinish(c);
    gm_clock_freeze_us(JAN_2027 - 1); /* 2026-12-31T23:59:59.999999Z */
    cJSON *j = spend(F.port, "tyear");
    ck_assert_str_eq(jstr(j, "period"), "2026-12");
    ck_assert_str_eq(jstr(j, "as_of"), "2026-12-31T23:59:59.999999Z");
    ck_assert_str_eq(sub(j, "month_to_date", "list_amount"), "1.80");
    /* elapsed 2,678,399 whole seconds of 2,678,400: 1.80 x 2678400 / 2678399 = 1.8000007 */
    ck_assert_str_eq(sub(j, "projection", "list_amount"), "1.80");
    cJSON_Delete(j);
    /* December is still open: its grace (0 h in this fixture) ends at 2027-01-01T00:00:00Z */
    char *dec = invoice_id("tyear", "2026-12");
    cJSON *refused = NULL;
    ck_assert_int_eq(finalize(dec, &refused), 409);
    ck_assert_ptr_nonnull(strstr(jstr(refused, "detail"), "until 2027-01-01T00:00:00.000000Z"));
    cJSON_Delete(refused);

    gm_clock_freeze_us(JAN_2027); /* the first microsecond of 2027 */
    j = spend(F.port, "tyear");
    ck_assert_str_eq(jstr(j, "period"), "2027-01");
    ck_assert_str_eq(sub(j, "month_to_date", "list_amount"), "0.00");
    ck_assert_str_eq(sub(j, "projection", "list_amount"), "0.00");
    cJSON_Delete(j);
    cJSON *fin = NULL;
    ck_assert_int_eq(finalize(dec, &fin), 200);
    ck_assert_str_eq(jstr(fin, "total"), "1.80");
    ck_assert_str_eq(jstr(fin, "finalized_at"), "2027-01-01T00:00:00.000000Z");
    cJSON_Delete(fin);
    /* the database stamped the same clock: finalized in 2027, not on the real date */
    c = db();
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT to_char(finalized_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM gm.invoices"
             " WHERE invoice_id = '%s'",
             dec);
    char *v = gm_test_pg_value(c, sql);
    ck_assert_str_eq(v, "2027-01");
    free(v);
    PQfinish(c);
    free(dec);
}
END_TEST

/* A total over a term (docs/rating.md "Total over a term"): the spend answer shows progress
 * before the term's last month and the true-up in it. 100.00 over [2029-01-15, 2029-03-15);
 * llama-3.1-70b-instruct input 0.60 per 1M at fra1 (list-usd v2): January 10,000,000 = 6.00,
 * February 2,000,000 = 1.20, March 1,000,000 = 0.60. */
#define JAN_2029 INT64_C(1861920000000000) /* 2029-01-01T00:00:00Z */
#define FEB_2029 INT64_C(1864598400000000) /* 2029-02-01T00:00:00Z */
#define MAR_2029 INT64_C(1867017600000000) /* 2029-03-01T00:00:00Z */
#define APR_2029 INT64_C(1869696000000000) /* 2029-04-01T00:00:00Z */

START_TEST(test_spend_shows_the_progress_and_true_up_of_a_term_total)
{
    static const char contract[] =
        "{\"tenant\":\"tterm\",\"currency\":\"USD\",\"term_commitment\":\"100.00\","
        "\"commitment_start\":\"2029-01-15T00:00:00Z\",\"commitment_end\":\"2029-03-15T00:00:"
        "00Z\"}";
    gm_clock_freeze_us(FEB_2029 + 19 * GM_US_PER_DAY);
    PGconn *c = db();
    char msg[256], err[1024];
    ck_assert_msg(
        gm_ledger_import(c, contract, strlen(contract), msg, sizeof msg, err, sizeof err) == 0,
        "%s", err);
    ev(c, "tterm", "llama-3.1-70b-instruct", "fra1", JAN_2029 + 20 * GM_US_PER_DAY, 10000000, 0, 0,
       0);
    ev(c, "tterm", "llama-3.1-70b-instruct", "fra1", FEB_2029 + 3 * GM_US_PER_DAY, 2000000, 0, 0,
       0);
    /* The server reloads its book when the contracts change (checked every 2 s). */
    cJSON *j = NULL;
    for (int i = 0; i < 100; i++) {
        j = spend(F.port, "tterm");
        if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "commitment")))
            break;
        cJSON_Delete(j);
        j = NULL;
        usleep(100000);
    }
    ck_assert_msg(j != NULL, "the spend answer never showed the contract");
    cJSON_Delete(j); /* that answer's draft may have been computed before the reload */
    j = spend(F.port, "tterm");
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(j, "commitment");
    ck_assert_str_eq(jstr(cm, "kind"), "term_total");
    ck_assert_str_eq(jstr(cm, "term_total"), "100.00");
    ck_assert_str_eq(jstr(cm, "term_start"), "2029-01-15T00:00:00.000000Z");
    ck_assert_str_eq(jstr(cm, "term_end"), "2029-03-15T00:00:00.000000Z");
    ck_assert_str_eq(jstr(cm, "true_up_period"), "2029-03");
    ck_assert_str_eq(jstr(cm, "spent_in_term"), "7.20"); /* January 6.00 + February 1.20 */
    ck_assert_str_eq(jstr(cm, "remaining"), "92.80");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cm, "in_term")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cm, "true_up_this_month")));
    ck_assert_str_eq(jstr(cm, "shortfall_so_far"), "0.00");
    ck_assert_str_eq(sub(j, "month_to_date", "draft_invoice_total"), "1.20");
    cJSON_Delete(j);
    /* The last month: its draft carries the true-up. */
    ev(c, "tterm", "llama-3.1-70b-instruct", "fra1", MAR_2029 + 2 * GM_US_PER_DAY, 1000000, 0, 0,
       0);
    gm_clock_freeze_us(MAR_2029 + 9 * GM_US_PER_DAY);
    j = spend(F.port, "tterm");
    cm = cJSON_GetObjectItemCaseSensitive(j, "commitment");
    ck_assert_str_eq(jstr(cm, "spent_in_term"), "7.80");
    ck_assert_str_eq(jstr(cm, "remaining"), "92.20");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cm, "true_up_this_month")));
    ck_assert_str_eq(jstr(cm, "shortfall_so_far"), "92.20");
    ck_assert_str_eq(sub(j, "month_to_date", "draft_invoice_total"), "92.80");
    cJSON_Delete(j);
    /* After the term: no progress. */
    gm_clock_freeze_us(APR_2029 + 9 * GM_US_PER_DAY);
    j = spend(F.port, "tterm");
    cm = cJSON_GetObjectItemCaseSensitive(j, "commitment");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cm, "in_term")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cm, "spent_in_term")));
    ck_assert_str_eq(jstr(cm, "shortfall_so_far"), "0.00");
    cJSON_Delete(j);
    PQfinish(c);
}
END_TEST

START_TEST(test_february_has_29_days_in_2028_and_28_in_2027)
{
    PGconn *c = db();
    /* 2,850,000 input tokens = 1.71; 2,750,000 = 1.65 */
    ev(c, "tleap", "llama-3.1-70b-instruct", "fra1", FEB_2028, 2850000, 0, 0, 0);
    ev(c, "tfeb", "llama-3.1-70b-instruct", "fra1", FEB_2027, 2750000, 0, 0, 0);
    gm_clock_freeze_us(LEAP_NOON);
    cJSON *j = spend(F.port, "tleap");
    ck_assert_str_eq(jstr(j, "period"), "2028-02");
    ck_assert_str_eq(sub(j, "month_to_date", "list_amount"), "1.71");
    /* 28.5 of 29 days elapsed: 1.71 x 29 / 28.5 = 1.74 exactly */
    ck_assert_str_eq(sub(j, "projection", "list_amount"), "1.74");
    cJSON_Delete(j);
    gm_clock_freeze_us(FEB_2027 + 27 * GM_US_PER_DAY + 12 * GM_US_PER_HOUR); /* 02-28T12:00Z */
    j = spend(F.port, "tfeb");
    ck_assert_str_eq(jstr(j, "period"), "2027-02");
    /* 27.5 of 28 days elapsed: 1.65 x 28 / 27.5 = 1.68 exactly */
    ck_assert_str_eq(sub(j, "projection", "list_amount"), "1.68");
    cJSON_Delete(j);

    /* The last microsecond of 29 February 2028 belongs to February, and the 72 h grace
     * window of February ends at 2028-03-04T00:00:00Z: open one microsecond before. */
    ev(c, "tleap", "llama-3.1-70b-instruct", "fra1", MAR_2028 - 1, 1000000, 0, 0, 0);
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.grace_hours = 72;
    char err[512];
    gm_api_server *g = gm_api_start(&cfg, err, sizeof err);
    ck_assert_msg(g != NULL, "%s", err);
    char *id = invoice_id("tleap", "2028-02");
    char path[128];
    snprintf(path, sizeof path, "/v1/invoices/%s/finalize", id);
    gm_clock_freeze_us(MAR_2028 + 72 * GM_US_PER_HOUR - 1);
    http_resp r;
    http_do(gm_api_port(g), "POST", path, F.finance, "leap-1", "{}", NULL, &r);
    ck_assert_msg(r.status == 409, "%d %s", r.status, r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "until 2028-03-04T00:00:00.000000Z"));
    http_free(&r);
    gm_clock_freeze_us(MAR_2028 + 72 * GM_US_PER_HOUR);
    http_do(gm_api_port(g), "POST", path, F.finance, "leap-2", "{}", NULL, &r);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    cJSON *fin = json_of(&r);
    http_free(&r);
    ck_assert_str_eq(jstr(fin, "total"), "2.31");
    ck_assert_str_eq(jstr(fin, "period_end"), "2028-03-01T00:00:00.000000Z");
    cJSON_Delete(fin);
    gm_api_stop(g);
    free(id);
    PQfinish(c);
}
END_TEST

/* GET /v1/economics against a hand computation: site econ1 earns 1.40 + 3.00 for 2M output
 * tokens and one GPU-hour that costs 2.50 there; econ2 earns 1.00 for two GPU-hours at 2.50
 * and loses 4.00, so it comes first. CSV has the same numbers; customers may not see it. */
START_TEST(test_economics_margin_and_cost_per_token_by_site)
{
    PGconn *c = db();
    gm_test_pg_exec(c, "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
                       " card_version, site_tier, currency, unit_price, quantity, amount, events)"
                       " VALUES ('tecon', '2026-06-03 10:00+00', 'econ1', 'm1', 'output',"
                       " 'list-usd', 1, NULL, 'USD', 0.0000007, 2000000, 1.40, 5),"
                       " ('tecon', '2026-06-03 10:00+00', 'econ1', 'm1', 'gpu', 'list-usd', 1,"
                       " NULL, 'USD', 0.000833333333, 3600000000, 3.00, 5),"
                       " ('tecon', '2026-06-04 11:00+00', 'econ2', 'm1', 'gpu', 'list-usd', 1,"
                       " NULL, 'USD', 0.000138888889, 7200000000, 1.00, 2)");
    gm_test_pg_exec(c, "INSERT INTO gm.cost_cards (site, version, valid_from, currency,"
                       " gpu_hour_cost, reference_per_1m_output) VALUES"
                       " ('econ1', 1, '2026-06-01 00:00+00', 'USD', 2.50, 0.50),"
                       " ('econ2', 1, '2026-06-01 00:00+00', 'USD', 2.50, NULL)");
    PQfinish(c);
    http_resp r;
    http_do(F.port, "GET", "/v1/economics?period=2026-06", F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    cJSON *j = json_of(&r);
    http_free(&r);
    ck_assert_str_eq(jstr(j, "basis"), "requests");
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    ck_assert_int_eq(cJSON_GetArraySize(rows), 2);
    cJSON *lose = cJSON_GetArrayItem(rows, 0), *earn = cJSON_GetArrayItem(rows, 1);
    ck_assert_str_eq(jstr(lose, "site"), "econ2");
    ck_assert_str_eq(jstr(lose, "gpu_cost"), "5.000000000000000000");
    ck_assert_str_eq(jstr(lose, "margin"), "-4.000000000000000000");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(lose, "cost_per_1m_output_tokens")));
    ck_assert_str_eq(jstr(earn, "site"), "econ1");
    ck_assert_str_eq(jstr(earn, "output_tokens"), "2000000");
    ck_assert_str_eq(jstr(earn, "gpu_us"), "3600000000");
    ck_assert_str_eq(jstr(earn, "revenue"), "4.400000000000000000");
    ck_assert_str_eq(jstr(earn, "gpu_cost"), "2.500000000000000000");
    ck_assert_str_eq(jstr(earn, "margin"), "1.900000000000000000");
    ck_assert_str_eq(jstr(earn, "cost_per_1m_output_tokens"), "1.250000000000000000");
    ck_assert_str_eq(jstr(earn, "revenue_per_1m_output_tokens"), "2.200000000000000000");
    ck_assert_str_eq(jstr(earn, "reference_per_1m_output_tokens"), "0.500000000000");
    ck_assert_str_eq(jstr(earn, "hours_without_cost_card"), "0");
    cJSON_Delete(j);
    http_do(F.port, "GET", "/v1/economics?period=2026-06&group_by=site,model", F.finance, NULL,
            NULL, "Accept: text/csv\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "site,model,revenue_currency,cost_currency,input_tokens,") ==
                      r.body,
                  "%s", r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "\r\necon1,m1,USD,USD,0,0,2000000,3600000000,"
                                         "4.400000000000000000,2.500000000000000000,"
                                         "1.900000000000000000,1.250000000000000000,"
                                         "2.200000000000000000,0.500000000000,0\r\n"));
    http_free(&r);
    http_do(F.port, "GET", "/v1/economics?period=2026-06&basis=cupti", F.finance, NULL, NULL, NULL,
            &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert_ptr_nonnull(strstr(r.body, "\"field\":\"basis\""));
    http_free(&r);
    http_do(F.port, "GET", "/v1/economics?period=2026-06", F.acme, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 403);
    http_free(&r);
}
END_TEST

/* Cost cards over the API: an admin adds versions (numbered per site, never rewritten), a
 * second card at the same valid_from is a 409, a bad field a 400 naming it, finance may list
 * but not add; GET /v1/economics then prices an hour with the version in force. */
START_TEST(test_cost_cards_are_versioned_per_site_and_price_economics)
{
    cJSON *j = NULL;
    ck_assert_int_eq(post("/v1/cost-cards", F.admin, "cc-1",
                          "{\"site\":\"cc1\",\"valid_from\":\"2026-05-01T00:00:00Z\","
                          "\"currency\":\"USD\",\"gpu_hour_cost\":\"3.60\",\"note\":\"lease\"}",
                          &j),
                     201);
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(j, "version")->valueint, 1);
    ck_assert_str_eq(jstr(j, "gpu_hour_cost"), "3.600000000000");
    ck_assert_str_eq(jstr(j, "valid_from"), "2026-05-01T00:00:00.000000Z");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "reference_per_1m_output")));
    cJSON_Delete(j);
    ck_assert_int_eq(post("/v1/cost-cards", F.admin, "cc-2",
                          "{\"site\":\"cc1\",\"valid_from\":\"2026-05-15T00:00:00Z\","
                          "\"currency\":\"USD\",\"gpu_hour_cost\":\"1.80\","
                          "\"reference_per_1m_output\":\"0.25\"}",
                          &j),
                     201);
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(j, "version")->valueint, 2);
    cJSON_Delete(j);
    ck_assert_int_eq(post("/v1/cost-cards", F.admin, "cc-3",
                          "{\"site\":\"cc1\",\"valid_from\":\"2026-05-15T00:00:00Z\","
                          "\"currency\":\"USD\",\"gpu_hour_cost\":\"9\"}",
                          &j),
                     409);
    cJSON_Delete(j);
    ck_assert_int_eq(post("/v1/cost-cards", F.admin, "cc-4",
                          "{\"site\":\"cc1\",\"valid_from\":\"2026-06-01T00:00:00Z\","
                          "\"currency\":\"usd\",\"gpu_hour_cost\":\"1\"}",
                          &j),
                     400);
    ck_assert_str_eq(jstr(j, "field"), "currency");
    cJSON_Delete(j);
    ck_assert_int_eq(post("/v1/cost-cards", F.admin, "cc-5",
                          "{\"site\":\"cc1\",\"valid_from\":\"2026-06-01T00:00:00Z\","
                          "\"currency\":\"USD\",\"gpu_hour_cost\":\"0.0000000000001\"}",
                          &j),
                     400);
    ck_assert_str_eq(jstr(j, "field"), "gpu_hour_cost");
    cJSON_Delete(j);
    ck_assert_int_eq(post("/v1/cost-cards", F.finance, "cc-6",
                          "{\"site\":\"cc1\",\"valid_from\":\"2026-06-01T00:00:00Z\","
                          "\"currency\":\"USD\",\"gpu_hour_cost\":\"1\"}",
                          NULL),
                     403);
    http_resp r;
    http_do(F.port, "GET", "/v1/cost-cards?site=cc1", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    http_free(&r);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 2);
    cJSON_Delete(j);
    /* one GPU-hour on 2026-05-10 (version 1: 3.60) and one on 2026-05-20 (version 2: 1.80) */
    PGconn *c = db();
    gm_test_pg_exec(c, "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
                       " card_version, site_tier, currency, unit_price, quantity, amount, events)"
                       " VALUES ('tcc', '2026-05-10 10:00+00', 'cc1', 'm1', 'gpu', 'list-usd', 1,"
                       " NULL, 'USD', 0.001, 3600000000, 3.60, 1),"
                       " ('tcc', '2026-05-20 10:00+00', 'cc1', 'm1', 'gpu', 'list-usd', 1,"
                       " NULL, 'USD', 0.001, 3600000000, 3.60, 1)");
    PQfinish(c);
    http_do(F.port, "GET", "/v1/economics?period=2026-05", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    http_free(&r);
    cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "rows"), 0);
    ck_assert_str_eq(jstr(row, "site"), "cc1");
    ck_assert_str_eq(jstr(row, "gpu_cost"), "5.400000000000000000"); /* 3.60 + 1.80 */
    ck_assert_str_eq(jstr(row, "margin"), "1.800000000000000000");   /* 7.20 - 5.40 */
    ck_assert_str_eq(jstr(row, "reference_per_1m_output_tokens"), "0.250000000000");
    cJSON_Delete(j);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_add_unchecked_fixture(tc, api_fixture_setup, api_fixture_teardown);
    tcase_add_checked_fixture(tc, clock_back, clock_back);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_openapi_is_valid_and_lists_every_route);
    tcase_add_test(tc, test_tenant_ids_follow_the_event_rule);
    tcase_add_test(tc, test_health_ready_and_metrics);
    tcase_add_test(tc, test_authorization_matrix_every_endpoint_every_role);
    tcase_add_test(tc, test_me_describes_the_calling_key);
    tcase_add_test(tc, test_customer_key_sees_another_tenants_objects_as_missing);
    tcase_add_test(tc, test_idempotency_replays_refuses_other_body_and_requires_key);
    tcase_add_test(tc, test_idempotency_concurrent_requests_have_one_effect);
    tcase_add_test(tc, test_finalized_invoice_is_immutable_in_the_database);
    tcase_add_test(tc, test_months_are_finalized_in_order_so_credit_counts_once);
    tcase_add_test(tc, test_credit_notes_never_exceed_what_is_creditable);
    tcase_add_test(tc, test_late_events_become_adjustment_lines_on_the_next_invoice);
    tcase_add_test(tc, test_invoice_lines_reconcile_with_the_ledger_at_contract_prices);
    tcase_add_test(tc, test_invoice_csv_and_usage_series);
    tcase_add_test(tc, test_spend_shows_commitment_and_prepaid_credit_of_the_draft);
    tcase_add_test(tc, test_spend_shows_the_progress_and_true_up_of_a_term_total);
    tcase_add_test(tc, test_rerating_over_the_api_is_idempotent_and_listed);
    tcase_add_test(tc, test_economics_margin_and_cost_per_token_by_site);
    tcase_add_test(tc, test_cost_cards_are_versioned_per_site_and_price_economics);
    tcase_add_test(tc, test_ops_ingest_returns_the_raters_metrics_and_503_without_it);
    tcase_add_test(tc, test_bad_requests_are_4xx_and_leave_the_database_unchanged);
    tcase_add_test(tc, test_per_key_rate_limit_answers_429);
    tcase_add_test(tc, test_revoked_key_is_refused_at_once);
    tcase_add_test(tc, test_a_stalled_client_does_not_block_others);
    tcase_add_test(tc, test_tls_serves_https_with_the_configured_certificate);
    tcase_add_test(tc, test_month_to_date_turns_over_at_the_last_microsecond_of_the_year);
    tcase_add_test(tc, test_february_has_29_days_in_2028_and_28_in_2027);
    tcase_add_test(tc, test_entitlement_answers_from_the_budget_and_the_committed_spend);
    tcase_add_test(tc, test_budget_is_set_by_admins_and_by_customers_only_where_allowed);
    tcase_add_test(tc, test_invoice_and_credit_note_events_are_in_the_outbox);
    suite_add_tcase(s, tc);
    /* No fork: the server's threads live in this process (a child forked from a threaded
     * parent can deadlock on a lock held at fork time). */
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
