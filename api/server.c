/* The HTTP server: libmicrohttpd with one thread per connection (bounded), the route table,
 * and the request pipeline every route goes through, in this order:
 *   1. body limit (Content-Length checked before reading; 413), route match (404/405);
 *   2. authentication (bearer key -> role, tenant; 401), role (403), per-key rate limit (429),
 *      query parameters (unknown or repeated: 400), tenant scope (another tenant: 404);
 *   3. POST: Content-Type (415), Idempotency-Key (required; replay, 422 on another body,
 *      409 while the first is in progress);
 *   4. the handler, with a pooled PostgreSQL connection (503 when none frees up in time);
 *   5. metrics per route (requests by code class, latency histogram).
 * A handler never sees a request that failed an earlier step. */
#include "api_int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define P             0u
#define A             GM_API_ROLE_ADMIN
#define F             GM_API_ROLE_FINANCE
#define C             GM_API_ROLE_CUSTOMER
#define NO_DB         1u
#define TENANT_SCOPED 2u

static void h_healthz(api_req *r);
static void h_readyz(api_req *r);
static void h_metrics(api_req *r);
static void h_openapi(api_req *r);

typedef struct {
    gm_api_route_info info;
    api_handler fn;
    const char *query; /* allowed query parameters, comma-separated */
    unsigned flags;
} api_route;

static const api_route routes[] = {
    {{"GET", "/healthz", P, false}, h_healthz, "", NO_DB},
    {{"GET", "/readyz", P, false}, h_readyz, "", 0},
    {{"GET", "/metrics", A, false}, h_metrics, "", 0},
    {{"GET", "/v1/openapi.json", P, false}, h_openapi, "", NO_DB},
    {{"GET", "/v1/me", A | F | C, false}, api__h_me, "", 0},
    {{"GET", "/v1/ops/ingest", A | F, false}, api__h_ops_ingest, "", 0},
    {{"GET", "/v1/invoices", F | C, false},
     api__h_invoices_list,
     "period,tenant,status,cursor,limit",
     0},
    {{"GET", "/v1/invoices/{invoice_id}", F | C, false}, api__h_invoice_get, "", 0},
    {{"POST", "/v1/invoices/{invoice_id}/finalize", F, false}, api__h_invoice_finalize, "", 0},
    {{"POST", "/v1/invoices/{invoice_id}/void", F, false}, api__h_invoice_void, "", 0},
    {{"POST", "/v1/invoices/{invoice_id}/credit-notes", F, false},
     api__h_credit_note_create,
     "",
     0},
    {{"GET", "/v1/credit-notes", F, false},
     api__h_credit_notes_list,
     "tenant,invoice_id,cursor,limit",
     0},
    {{"GET", "/v1/revenue", F, false}, api__h_revenue, "period,group_by,from,to,bucket", 0},
    {{"POST", "/v1/rerating-runs", F, false}, api__h_rerating_run, "", 0},
    {{"GET", "/v1/rerating-runs", F, false}, api__h_rerating_runs_list, "period,tenant", 0},
    {{"GET", "/v1/tenants/{tenant}/usage", C | F, true},
     api__h_usage,
     "from,to,bucket,group_by",
     TENANT_SCOPED},
    {{"GET", "/v1/tenants/{tenant}/spend", C | F, true}, api__h_spend, "", TENANT_SCOPED},
    {{"GET", "/v1/tenants/{tenant}/invoices", C | F, true},
     api__h_tenant_invoices,
     "status,cursor,limit",
     TENANT_SCOPED},
    {{"GET", "/v1/tenants", A, false}, api__h_tenants_list, "", 0},
    {{"POST", "/v1/tenants", A, false}, api__h_tenant_create, "", 0},
    {{"GET", "/v1/tenants/{tenant}", A, false}, api__h_tenant_get, "", 0},
    {{"GET", "/v1/contracts", A, false}, api__h_contracts_list, "tenant", 0},
    {{"POST", "/v1/contracts", A, false}, api__h_contract_import, "", 0},
    {{"GET", "/v1/rate-cards", A, false}, api__h_rate_cards_list, "card_id", 0},
    {{"POST", "/v1/rate-cards", A, false}, api__h_rate_card_import, "", 0},
    {{"GET", "/v1/api-keys", A, false}, api__h_keys_list, "", 0},
    {{"POST", "/v1/api-keys", A, false}, api__h_key_create, "", 0},
    {{"DELETE", "/v1/api-keys/{key_id}", A, false}, api__h_key_revoke, "", 0},
};
#define N_ROUTES GM_ARRAY_LEN(routes)

static gm_api_route_info route_infos[N_ROUTES];
static pthread_once_t route_infos_once = PTHREAD_ONCE_INIT;
static void route_infos_init(void)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        route_infos[i] = routes[i].info;
}

const gm_api_route_info *gm_api_routes(size_t *n)
{
    pthread_once(&route_infos_once, route_infos_init);
    *n = N_ROUTES;
    return route_infos;
}

extern const char gm_api_openapi_text[];
const char *gm_api_openapi(void)
{
    return gm_api_openapi_text;
}

/* ---- Metrics -------------------------------------------------------------------------- */
static const int64_t lat_bounds_us[] = {1000, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
#define N_BOUNDS GM_ARRAY_LEN(lat_bounds_us)

typedef struct {
    uint64_t by_class[6]; /* 1xx..5xx at [1..5] */
    uint64_t bucket[N_BOUNDS + 1];
    uint64_t sum_us;
} route_metrics;

/* ---- Rate limiter: a token bucket per key id (micro-tokens, no floating point) --------- */
#define RL_SLOTS 4096
typedef struct {
    char key_id[40];
    int64_t tokens_e6;
    int64_t last_us;
} rl_entry;

struct gm_api_server {
    gm_api_config cfg;
    char *conninfo, *listen, *cert, *key;
    struct MHD_Daemon *d;
    int port;
    api_pool *pool;
    api_auth_cache *auth;
    route_metrics metrics[N_ROUTES + 1];
    pthread_mutex_t rl_mu;
    rl_entry *rl;
    /* the rating book */
    pthread_mutex_t book_mu;
    pthread_rwlock_t book_lock;
    gm_rating_book *book;
    char book_print[64];
    int64_t book_checked_us;
    uint64_t book_gen; /* +1 per load (draft cache key) */
    gm_billing_cache *drafts;
    /* usage responses (usage.c) */
    pthread_mutex_t uc_mu;
    struct api_cached *uc;
};

api_cached *api__usage_cache(api_server *s, pthread_mutex_t **mu)
{
    *mu = &s->uc_mu;
    return s->uc;
}

const gm_api_config *api__config(const api_server *s)
{
    return &s->cfg;
}

void api__auth_forget(api_server *s, const char *key_id)
{
    api__auth_cache_forget(s->auth, key_id);
}

const gm_rating_book *api__book_acquire(api_server *s, PGconn *db, char *err, size_t err_len)
{
    pthread_mutex_lock(&s->book_mu);
    int64_t now = gm_mono_us();
    if (!s->book || now - s->book_checked_us > 2 * GM_US_PER_SEC) {
        PGresult *r = PQexec(db, "SELECT (SELECT count(*) FROM gm.rate_cards)::text || '/' ||"
                                 " (SELECT count(*) FROM gm.contracts)::text");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            gm_pg_fail(db, r, "rating book check", err, err_len);
            PQclear(r);
            pthread_mutex_unlock(&s->book_mu);
            return NULL;
        }
        char print[64];
        snprintf(print, sizeof print, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (!s->book || strcmp(print, s->book_print)) {
            gm_rating_book *nb = NULL;
            if (gm_ledger_load_book(db, &nb, err, err_len)) {
                pthread_mutex_unlock(&s->book_mu);
                return NULL;
            }
            pthread_rwlock_wrlock(&s->book_lock);
            gm_rating_book *old = s->book;
            s->book = nb;
            s->book_gen++;
            pthread_rwlock_unlock(&s->book_lock);
            gm_rating_book_free(old);
            snprintf(s->book_print, sizeof s->book_print, "%s", print);
            gm_info("api", "msg=\"rating book loaded\" cards_contracts=%s", print);
        }
        s->book_checked_us = now;
    }
    pthread_rwlock_rdlock(&s->book_lock);
    pthread_mutex_unlock(&s->book_mu);
    return s->book;
}

uint64_t api__book_generation(api_server *s)
{
    return s->book_gen; /* read under the book's read lock (api__book_acquire) */
}

gm_billing_cache *api__drafts(api_server *s)
{
    return s->drafts;
}

void api__book_release(api_server *s)
{
    pthread_rwlock_unlock(&s->book_lock);
}

void api__book_stale(api_server *s)
{
    pthread_mutex_lock(&s->book_mu);
    s->book_checked_us = 0;
    s->book_print[0] = 0;
    pthread_mutex_unlock(&s->book_mu);
}

static bool rate_allow(api_server *s, const char *key_id, int *retry_s)
{
    if (s->cfg.rate_per_s <= 0)
        return true;
    uint64_t h = 1469598103934665603ull;
    for (const char *p = key_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    int64_t now = gm_mono_us(), cap = (int64_t)s->cfg.rate_burst * 1000000;
    bool ok;
    pthread_mutex_lock(&s->rl_mu);
    rl_entry *e = &s->rl[h % RL_SLOTS];
    if (strcmp(e->key_id, key_id)) { /* new key or a collision: the slot starts full */
        snprintf(e->key_id, sizeof e->key_id, "%s", key_id);
        e->tokens_e6 = cap;
        e->last_us = now;
    }
    int64_t t = e->tokens_e6 + (now - e->last_us) * s->cfg.rate_per_s;
    e->tokens_e6 = t > cap ? cap : t;
    e->last_us = now;
    ok = e->tokens_e6 >= 1000000;
    if (ok)
        e->tokens_e6 -= 1000000;
    else
        *retry_s = (int)((1000000 - e->tokens_e6) / (s->cfg.rate_per_s * 1000000LL) + 1);
    pthread_mutex_unlock(&s->rl_mu);
    return ok;
}

/* ---- Public handlers ------------------------------------------------------------------- */
static void h_healthz(api_req *r)
{
    api__text(r, 200, "application/json", gm_xstrdup("{\"status\":\"ok\"}"), 15);
}

static void h_readyz(api_req *r)
{
    PGresult *res = PQexec(r->db, "SELECT 1");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    if (!ok) {
        /* The reason (host, user) goes to the log, not to an unauthenticated caller. */
        gm_warn("api", "msg=\"not ready\" error=\"%s\"", PQerrorMessage(r->db));
        api__problem(r, 503, "not-ready", NULL, "the database is not available");
        return;
    }
    api__text(r, 200, "application/json",
              gm_xstrdup("{\"status\":\"ready\",\"postgresql\":\"ok\"}"),
              strlen("{\"status\":\"ready\",\"postgresql\":\"ok\"}"));
}

static void h_openapi(api_req *r)
{
    const char *t = gm_api_openapi();
    api__text(r, 200, "application/json", gm_xstrdup(t), strlen(t));
}

static void route_label(size_t i, char *buf, size_t len)
{
    if (i >= N_ROUTES)
        snprintf(buf, len, "unmatched");
    else
        snprintf(buf, len, "%s %s", routes[i].info.method, routes[i].info.pattern);
}

static void h_metrics(api_req *r)
{
    api_server *s = r->srv;
    api_buf b = {0};
    api__buf_str(&b,
                 "# HELP gridmeter_api_requests_total HTTP requests by route and status class.\n"
                 "# TYPE gridmeter_api_requests_total counter\n");
    for (size_t i = 0; i <= N_ROUTES; i++) {
        char l[96];
        route_label(i, l, sizeof l);
        for (int c = 1; c <= 5; c++) {
            uint64_t v = __atomic_load_n(&s->metrics[i].by_class[c], __ATOMIC_RELAXED);
            if (v)
                api__buf_printf(&b,
                                "gridmeter_api_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n",
                                l, c, (unsigned long long)v);
        }
    }
    api__buf_str(&b, "# HELP gridmeter_api_errors_total Responses with status >= 400 by route.\n"
                     "# TYPE gridmeter_api_errors_total counter\n");
    for (size_t i = 0; i <= N_ROUTES; i++) {
        uint64_t v = __atomic_load_n(&s->metrics[i].by_class[4], __ATOMIC_RELAXED) +
                     __atomic_load_n(&s->metrics[i].by_class[5], __ATOMIC_RELAXED);
        char l[96];
        route_label(i, l, sizeof l);
        api__buf_printf(&b, "gridmeter_api_errors_total{route=\"%s\"} %llu\n", l,
                        (unsigned long long)v);
    }
    api__buf_str(&b, "# HELP gridmeter_api_request_duration_seconds Request latency by route.\n"
                     "# TYPE gridmeter_api_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= N_ROUTES; i++) {
        char l[96];
        route_label(i, l, sizeof l);
        uint64_t cum = 0;
        for (size_t k = 0; k <= N_BOUNDS; k++) {
            cum += __atomic_load_n(&s->metrics[i].bucket[k], __ATOMIC_RELAXED);
            if (k < N_BOUNDS)
                api__buf_printf(&b,
                                "gridmeter_api_request_duration_seconds_bucket{route=\"%s\","
                                "le=\"%lld.%06lld\"} %llu\n",
                                l, (long long)(lat_bounds_us[k] / 1000000),
                                (long long)(lat_bounds_us[k] % 1000000), (unsigned long long)cum);
            else
                api__buf_printf(&b,
                                "gridmeter_api_request_duration_seconds_bucket{route=\"%s\","
                                "le=\"+Inf\"} %llu\n",
                                l, (unsigned long long)cum);
        }
        uint64_t sum = __atomic_load_n(&s->metrics[i].sum_us, __ATOMIC_RELAXED);
        api__buf_printf(&b,
                        "gridmeter_api_request_duration_seconds_sum{route=\"%s\"} %llu.%06llu\n", l,
                        (unsigned long long)(sum / 1000000), (unsigned long long)(sum % 1000000));
        api__buf_printf(&b, "gridmeter_api_request_duration_seconds_count{route=\"%s\"} %llu\n", l,
                        (unsigned long long)cum);
    }
    api__text(r, 200, "text/plain; version=0.0.4", b.p, b.len);
}

/* ---- Routing --------------------------------------------------------------------------- */
/* Matches path against pattern; fills params. */
static bool match(const char *pattern, const char *path, api_req *r)
{
    const char *p = pattern, *u = path;
    int np = 0;
    static __thread char pbuf[3][260];
    while (*p && *u) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            const char *ue = strchr(u, '/');
            size_t ul = ue ? (size_t)(ue - u) : strlen(u);
            if (ul == 0 || ul > 256 || np >= 3)
                return false;
            memcpy(pbuf[np], u, ul);
            pbuf[np][ul] = 0;
            np++;
            p = pe + 1;
            u += ul;
        } else if (*p == *u) {
            p++, u++;
        } else {
            return false;
        }
    }
    if (*p || *u)
        return false;
    for (int i = 0; i < np; i++)
        r->param[i] = pbuf[i];
    r->n_param = np;
    return true;
}

typedef struct {
    const char *allowed;
    char bad[80];
    int n;
    bool dup;
    char seen[16][32];
    int n_seen;
    bool not_utf8;
} qcheck;

static enum MHD_Result q_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    (void)kind, (void)value;
    qcheck *q = cls;
    q->n++;
    size_t n = strlen(key);
    bool ok = false;
    for (const char *p = q->allowed; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !memcmp(p, key, n))
            ok = true;
        if (!e)
            break;
        p = e + 1;
    }
    if (ok) {
        for (int i = 0; i < q->n_seen; i++)
            if (!strcmp(q->seen[i], key) && !q->bad[0]) {
                q->dup = true;
                snprintf(q->bad, sizeof q->bad, "%s", key);
            }
        if (q->n_seen < 16)
            snprintf(q->seen[q->n_seen++], sizeof q->seen[0], "%s", key);
    }
    if (!api__utf8_valid(key, strlen(key)) || (value && !api__utf8_valid(value, strlen(value)))) {
        ok = true; /* reported as not UTF-8, below */
        q->not_utf8 = true;
        if (!q->bad[0])
            snprintf(q->bad, sizeof q->bad, "query");
    }
    if (!ok && !q->bad[0]) {
        snprintf(q->bad, sizeof q->bad, "%.64s", key);
        for (char *c = q->bad; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == '"' || *c == '\\')
                *c = '?';
    }
    return MHD_YES;
}

/* ---- Idempotency ----------------------------------------------------------------------- */
typedef enum { IDEM_RUN, IDEM_DONE } idem_verdict;

static idem_verdict idem_begin(api_req *r, const char *ikey, uint8_t hash[32])
{
    const char *params[5] = {r->auth.key_id, ikey, (const char *)hash, r->method, r->path};
    int lens[5] = {0, 0, 32, 0, 0}, fmts[5] = {0, 0, 1, 0, 0};
    PGresult *res = PQexecParams(r->db,
                                 "INSERT INTO gm.idempotency (key_id, idem_key, request_hash,"
                                 " method, path) VALUES ($1, $2, $3, $4, $5)"
                                 " ON CONFLICT DO NOTHING RETURNING 1",
                                 5, NULL, params, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "idempotency");
        PQclear(res);
        return IDEM_DONE;
    }
    bool claimed = PQntuples(res) == 1;
    PQclear(res);
    if (claimed)
        return IDEM_RUN;
    res = PQexecParams(r->db,
                       "SELECT request_hash = $3, status, content_type, body FROM gm.idempotency"
                       " WHERE key_id = $1 AND idem_key = $2",
                       3, NULL, (const char *[]){r->auth.key_id, ikey, (const char *)hash},
                       (int[]){0, 0, 32}, (int[]){0, 0, 1}, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            api__db_problem(r, res, "idempotency");
        else
            api__problem(r, 409, "idempotency-in-progress", "Idempotency-Key",
                         "Idempotency-Key: a request with this key is being processed; retry");
        PQclear(res);
        return IDEM_DONE;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        api__problem(r, 422, "idempotency-key-reused", "Idempotency-Key",
                     "Idempotency-Key: already used with another method, path or body");
    } else if (PQgetisnull(res, 0, 1)) {
        api__problem(r, 409, "idempotency-in-progress", "Idempotency-Key",
                     "Idempotency-Key: the first request with this key is still being processed");
        snprintf(r->header_name, sizeof r->header_name, "Retry-After");
        snprintf(r->header_value, sizeof r->header_value, "1");
    } else {
        r->status = atoi(PQgetvalue(res, 0, 1));
        snprintf(r->header_name, sizeof r->header_name, "Idempotent-Replayed");
        snprintf(r->header_value, sizeof r->header_value, "true");
        const char *ct = PQgetvalue(res, 0, 2);
        r->ctype = !strcmp(ct, "application/problem+json") ? "application/problem+json"
                                                           : "application/json";
        free(r->resp);
        r->resp = gm_xstrdup(PQgetvalue(res, 0, 3));
        r->resp_len = strlen(r->resp);
    }
    PQclear(res);
    return IDEM_DONE;
}

static void idem_end(api_req *r, const char *ikey)
{
    PGresult *res;
    if (r->status >= 500) {
        res = PQexecParams(r->db, "DELETE FROM gm.idempotency WHERE key_id = $1 AND idem_key = $2",
                           2, NULL, (const char *[]){r->auth.key_id, ikey}, NULL, NULL, 0);
    } else {
        char st[16];
        snprintf(st, sizeof st, "%d", r->status);
        res = PQexecParams(r->db,
                           "UPDATE gm.idempotency SET status = $3, content_type = $4, body = $5"
                           " WHERE key_id = $1 AND idem_key = $2",
                           5, NULL,
                           (const char *[]){r->auth.key_id, ikey, st, r->ctype,
                                            r->idem_store ? r->idem_store
                                            : r->resp     ? r->resp
                                                          : ""},
                           NULL, NULL, 0);
    }
    free(r->idem_store);
    r->idem_store = NULL;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        gm_error("api", "msg=\"idempotency record not written\" key_id=%s err=\"%s\"",
                 r->auth.key_id, PQerrorMessage(r->db));
    PQclear(res);
}

static bool idem_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x21 || k[i] > 0x7e)
            return false;
    return true;
}

/* ---- The pipeline ---------------------------------------------------------------------- */
typedef struct {
    int64_t t0_us;
    char *body;
    size_t len;
    bool too_big;
    bool responded;
} conn_state;

static int process(api_server *s, struct MHD_Connection *conn, const char *method, const char *path,
                   conn_state *st, api_req *r)
{
    memset(r, 0, sizeof *r);
    r->srv = s;
    r->conn = conn;
    r->method = method;
    r->path = path;
    r->body = st->body ? st->body : "";
    r->body_len = st->len;
    if (st->too_big) {
        api__problem(r, 413, "body-too-large", NULL, "request body larger than %lld bytes",
                     (long long)s->cfg.max_body_bytes);
        return (int)N_ROUTES;
    }
    if (!api__utf8_valid(path, strlen(path))) {
        api__problem(r, 400, "invalid-path", NULL, "path: not valid UTF-8");
        r->path = "";
        return (int)N_ROUTES;
    }
    if (!api__utf8_valid(r->body, r->body_len)) {
        api__problem(r, 400, "invalid-body", NULL, "body: not valid UTF-8");
        return (int)N_ROUTES;
    }
    int route = -1;
    bool path_hit = false;
    char allow[64] = "";
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(routes[i].info.pattern, path, r))
            continue;
        path_hit = true;
        if (!strcmp(routes[i].info.method, method)) {
            route = (int)i;
            break;
        }
        size_t al = strlen(allow);
        snprintf(allow + al, sizeof allow - al, "%s%s", al ? ", " : "", routes[i].info.method);
    }
    if (route < 0) {
        if (path_hit) {
            api__problem(r, 405, "method-not-allowed", NULL, "%.16s %s: method not allowed", method,
                         path);
            snprintf(r->header_name, sizeof r->header_name, "Allow");
            snprintf(r->header_value, sizeof r->header_value, "%s", allow);
        } else {
            api__problem(r, 404, "not-found", NULL, "no such resource");
        }
        return (int)N_ROUTES;
    }
    const api_route *rt = &routes[route];
    char err[512];
    if (!(rt->flags & NO_DB)) {
        r->db = api__pool_get(s->pool, s->cfg.db_wait_ms, err, sizeof err);
        if (!r->db) {
            gm_warn("api", "msg=\"no database connection\" error=\"%s\"", err);
            api__problem(r, 503, "unavailable", NULL,
                         "the database is not available; retry shortly");
            snprintf(r->header_name, sizeof r->header_name, "Retry-After");
            snprintf(r->header_value, sizeof r->header_value, "1");
            return route;
        }
    }
    if (rt->info.roles) {
        const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        int rc = GM_ENOTFOUND;
        if (!h || strncasecmp(h, "Bearer ", 7))
            snprintf(err, sizeof err, "Authorization: a bearer API key is required");
        else
            rc = api__authenticate(s->auth, r->db, h + 7, &r->auth, err, sizeof err);
        if (rc == GM_EDB) {
            gm_error("api", "msg=\"auth lookup failed\" err=\"%s\"", err);
            api__problem(r, 503, "unavailable", NULL, "authentication backend unavailable");
            return route;
        }
        if (rc) {
            api__problem(r, 401, "unauthorized", "Authorization", "%s", err);
            snprintf(r->header_name, sizeof r->header_name, "WWW-Authenticate");
            snprintf(r->header_value, sizeof r->header_value, "Bearer realm=\"gridmeter\"");
            return route;
        }
        if (!(rt->info.roles & r->auth.role)) {
            api__problem(r, 403, "forbidden", NULL, "role %s may not call %s %s",
                         api__role_name(r->auth.role), rt->info.method, rt->info.pattern);
            return route;
        }
        int retry = 1;
        if (!rate_allow(s, r->auth.key_id, &retry)) {
            api__problem(r, 429, "rate-limited", NULL,
                         "API key %s: more than %d requests/s (burst %d)", r->auth.key_id,
                         s->cfg.rate_per_s, s->cfg.rate_burst);
            snprintf(r->header_name, sizeof r->header_name, "Retry-After");
            snprintf(r->header_value, sizeof r->header_value, "%d", retry);
            return route;
        }
    }
    qcheck q = {.allowed = rt->query};
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, q_iter, &q);
    if (q.not_utf8) {
        api__problem(r, 400, "invalid-parameter", NULL, "query: parameters must be UTF-8");
        return route;
    }
    if (q.dup) {
        api__problem(r, 400, "repeated-parameter", q.bad, "%s: query parameter given twice", q.bad);
        return route;
    }
    if (q.bad[0]) {
        api__problem(r, 400, "unknown-parameter", q.bad,
                     "%s: unknown query parameter (allowed: %s)", q.bad,
                     rt->query[0] ? rt->query : "none");
        return route;
    }
    if (rt->flags & TENANT_SCOPED && r->auth.role == GM_API_ROLE_CUSTOMER &&
        strcmp(r->param[0], r->auth.tenant)) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return route;
    }
    if (!strcmp(method, "POST")) {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        if (r->body_len && (!ct || strncasecmp(ct, "application/json", 16))) {
            api__problem(r, 415, "unsupported-media-type", "Content-Type",
                         "Content-Type: must be application/json");
            return route;
        }
        const char *ik = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
        if (!ik || !idem_key_ok(ik)) {
            api__problem(r, 400, "idempotency-key-required", "Idempotency-Key",
                         "Idempotency-Key: required on POST, 1-255 visible ASCII characters");
            return route;
        }
        api_buf hb = {0};
        api__buf_str(&hb, method);
        api__buf_add(&hb, "\n", 1);
        api__buf_str(&hb, path);
        api__buf_add(&hb, "\n", 1);
        api__buf_add(&hb, r->body, r->body_len);
        uint8_t hash[32];
        gm_api_sha256(hb.p, hb.len, hash);
        free(hb.p);
        if (idem_begin(r, ik, hash) == IDEM_DONE)
            return route;
        rt->fn(r);
        if (!r->resp)
            api__problem(r, 500, "internal", NULL, "handler produced no response");
        idem_end(r, ik);
        return route;
    }
    rt->fn(r);
    if (!r->resp)
        api__problem(r, 500, "internal", NULL, "handler produced no response");
    return route;
}

static void record(api_server *s, int route, int status, int64_t t0)
{
    route_metrics *m = &s->metrics[route];
    int64_t us = gm_mono_us() - t0;
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    __atomic_fetch_add(&m->by_class[cls], 1, __ATOMIC_RELAXED);
    size_t k = 0;
    while (k < N_BOUNDS && us > lat_bounds_us[k])
        k++;
    __atomic_fetch_add(&m->bucket[k], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&m->sum_us, (uint64_t)us, __ATOMIC_RELAXED);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, api_req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(r->resp_len, r->resp, free);
    r->resp = NULL;
    MHD_add_response_header(resp, "Content-Type", r->ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (r->header_name[0])
        MHD_add_response_header(resp, r->header_name, r->header_value);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result api__static_serve(struct MHD_Connection *c, const char *url, const char *method);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    if (!strncmp(url, "/dashboard", 10) && (url[10] == 0 || url[10] == '/'))
        return api__static_serve(conn, url, method); /* static files (static.c, dashboard/) */
    api_server *s = cls;
    conn_state *st = *con_cls;
    if (!st) {
        st = gm_xcalloc(1, sizeof *st);
        st->t0_us = gm_mono_us();
        *con_cls = st;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        uint64_t n = 0;
        if (cl &&
            (gm_parse_u64(cl, strlen(cl), UINT64_MAX, &n) || n > (uint64_t)s->cfg.max_body_bytes)) {
            /* Refused before reading the body; MHD closes the connection after it. */
            st->too_big = true;
            st->responded = true;
            api_req r;
            process(s, conn, method, url, st, &r);
            record(s, (int)N_ROUTES, r.status, st->t0_us);
            return send_resp(conn, &r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!st->too_big && !st->responded) {
            if (st->len + *upload_data_size > (size_t)s->cfg.max_body_bytes) {
                st->too_big = true;
                free(st->body);
                st->body = NULL;
                st->len = 0;
            } else {
                st->body = gm_xrealloc(st->body, st->len + *upload_data_size + 1);
                memcpy(st->body + st->len, upload_data, *upload_data_size);
                st->len += *upload_data_size;
                st->body[st->len] = 0;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (st->responded)
        return MHD_YES;
    st->responded = true;
    api_req r;
    int route = process(s, conn, method, url, st, &r);
    if (r.db)
        api__pool_put(s->pool, r.db);
    record(s, route, r.status, st->t0_us);
    if (r.status >= 500)
        gm_warn("api", "msg=\"request failed\" method=%s path=\"%.200s\" status=%d", method, url,
                r.status);
    return send_resp(conn, &r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    conn_state *st = *con_cls;
    if (st) {
        free(st->body);
        free(st);
    }
    *con_cls = NULL;
}

/* ---- Lifecycle ------------------------------------------------------------------------- */
void gm_api_config_defaults(gm_api_config *c)
{
    memset(c, 0, sizeof *c);
    c->db_conninfo = "";
    c->listen_addr = "127.0.0.1";
    c->port = 8080;
    c->db_pool_size = 8;
    c->db_wait_ms = 2000;
    c->statement_timeout_ms = 10000;
    c->max_connections = 256;
    c->per_ip_connections = 16; /* one host cannot hold every connection (slowloris) */
    c->conn_timeout_s = 30;
    c->max_body_bytes = 1 << 20;
    c->rate_per_s = 50;
    c->rate_burst = 100;
    c->grace_hours = 72;
    c->auth_cache_ms = 2000;
    c->usage_cache_ms = 1000;
    c->rater_metrics_url = "http://127.0.0.1:9464/metrics";
}

static char *slurp(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        gm_fail(err, err_len, GM_ECONFIG, "%s: cannot open", path);
        return NULL;
    }
    api_buf b = {0};
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        api__buf_add(&b, tmp, n);
    fclose(f);
    if (!b.p)
        gm_fail(err, err_len, GM_ECONFIG, "%s: empty", path);
    return b.p;
}

gm_api_server *gm_api_start(const gm_api_config *cfg, char *err, size_t err_len)
{
    gm_api_server *s = gm_xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->conninfo = gm_xstrdup(cfg->db_conninfo ? cfg->db_conninfo : "");
    s->cfg.db_conninfo = s->conninfo;
    s->listen = gm_xstrdup(cfg->listen_addr ? cfg->listen_addr : "127.0.0.1");
    s->cfg.listen_addr = s->listen;
    pthread_mutex_init(&s->rl_mu, NULL);
    pthread_mutex_init(&s->book_mu, NULL);
    pthread_rwlock_init(&s->book_lock, NULL);
    s->rl = gm_xcalloc(RL_SLOTS, sizeof *s->rl);
    pthread_mutex_init(&s->uc_mu, NULL);
    s->uc = gm_xcalloc(API_USAGE_CACHE_SLOTS, sizeof *s->uc);
    s->drafts = gm_billing_cache_new(4096);
    s->pool = api__pool_new(s->conninfo, cfg->db_pool_size, cfg->statement_timeout_ms);
    s->auth = api__auth_cache_new(cfg->auth_cache_ms);
    if (cfg->max_body_bytes < 1 || cfg->rate_per_s < 0 || cfg->rate_burst < 1 ||
        cfg->max_connections < 1) {
        gm_fail(err, err_len, GM_ECONFIG,
                "max_body_bytes, rate_burst and max_connections must be >= 1, rate_per_s >= 0");
        gm_api_stop(s);
        return NULL;
    }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, s->listen, &sa.sin_addr) != 1) {
        gm_fail(err, err_len, GM_ECONFIG, "listen: \"%s\" is not an IPv4 address", s->listen);
        gm_api_stop(s);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL;
    bool tls = cfg->tls_cert_file && *cfg->tls_cert_file;
    if (tls != (cfg->tls_key_file && *cfg->tls_key_file)) {
        gm_fail(err, err_len, GM_ECONFIG, "tls: give both the certificate and the key file");
        gm_api_stop(s);
        return NULL;
    }
    if (tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            gm_fail(err, err_len, GM_ECONFIG, "tls: this libmicrohttpd has no TLS support");
            gm_api_stop(s);
            return NULL;
        }
        if (!(s->cert = slurp(cfg->tls_cert_file, err, err_len)) ||
            !(s->key = slurp(cfg->tls_key_file, err, err_len))) {
            gm_api_stop(s);
            return NULL;
        }
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &sa},
        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->per_ip_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, cfg->conn_timeout_s, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL},
        {tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->cert},
        {tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, s->key},
        {MHD_OPTION_END, 0, NULL}};
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!s->d) {
        gm_fail(err, err_len, GM_EIO, "listen %s:%d: libmicrohttpd could not start (port in use?)",
                s->listen, cfg->port);
        gm_api_stop(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
}

int gm_api_port(const gm_api_server *s)
{
    return s->port;
}

void gm_api_stop(gm_api_server *s)
{
    if (!s)
        return;
    if (s->d)
        MHD_stop_daemon(s->d);
    api__pool_free(s->pool);
    api__auth_cache_free(s->auth);
    gm_rating_book_free(s->book);
    gm_billing_cache_free(s->drafts);
    pthread_rwlock_destroy(&s->book_lock);
    pthread_mutex_destroy(&s->book_mu);
    pthread_mutex_destroy(&s->rl_mu);
    free(s->rl);
    for (size_t i = 0; s->uc && i < API_USAGE_CACHE_SLOTS; i++) {
        free(s->uc[i].key);
        free(s->uc[i].body);
    }
    free(s->uc);
    pthread_mutex_destroy(&s->uc_mu);
    free(s->conninfo);
    free(s->listen);
    free(s->cert);
    free(s->key);
    free(s);
}
