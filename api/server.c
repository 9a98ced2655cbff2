/* The HTTP server: the gate (gate.c) in front of libmicrohttpd (one thread per connection),
 * the handlers of the route table (routes.c), and the request pipeline every request goes
 * through, in this order; a handler never sees a request that failed an earlier step:
 *   0. the gate, for plain HTTP: request head grammar, framing, target syntax, connection
 *      limits, the whole-request deadline (gate.c; the rules in edge.c);
 *   1. framing again on libmicrohttpd's parse (with TLS the gate cannot read heads), then the
 *      raw request-target (from the URI log callback, before libmicrohttpd unescapes
 *      anything) decoded into validated segments and parameters; /dashboard: static files;
 *   2. the route (HEAD answers as GET); unknown paths outside /v1 and /metrics: 404;
 *   3. unless the route is public: authentication (bearer key, cached; lookups on a pool of
 *      their own; failed attempts throttled per client address, 429) and the per-key rate
 *      limit (429); only then 404 and 405 for /v1 and /metrics, then the role (403);
 *   4. query parameters (unknown or repeated: 400), tenant scope (another tenant: 404), no
 *      body on GET, HEAD and DELETE (400); POST: Content-Type application/json (415) and
 *      Idempotency-Key (400);
 *   5. the body (its length already checked against the limit), UTF-8 (400);
 *   6. a pooled PostgreSQL connection (503 when none frees up in time); a POST runs in one
 *      transaction with its idempotency record (idempotency.c); the handler;
 *   7. metrics per route. By default every answer closes the connection: one request per
 *      connection, so every request passes the gate and no bytes after a body are read as a
 *      request. With keep_alive_requests > 1 later requests on a connection are checked from
 *      step 1 on libmicrohttpd's parse (gate.c says what closes a kept connection).
 * Refusals found before the body is read (steps 2-4) are sent once it has been read (and
 * dropped); framing refusals at once (the body's end is unknown). */
#include "api_int.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void h_healthz(api_req *r);
static void h_readyz(api_req *r);
static void h_metrics(api_req *r);
static void h_openapi(api_req *r);

/* The handler of each route of api__routes (routes.c). */
static const api_handler handlers[API_R_COUNT] = {
    [API_R_HEALTHZ] = h_healthz,
    [API_R_READYZ] = h_readyz,
    [API_R_METRICS] = h_metrics,
    [API_R_OPENAPI] = h_openapi,
    [API_R_ME] = api__h_me,
    [API_R_OPS_INGEST] = api__h_ops_ingest,
    [API_R_INVOICES_LIST] = api__h_invoices_list,
    [API_R_INVOICE_GET] = api__h_invoice_get,
    [API_R_INVOICE_FINALIZE] = api__h_invoice_finalize,
    [API_R_INVOICE_VOID] = api__h_invoice_void,
    [API_R_CREDIT_NOTE_CREATE] = api__h_credit_note_create,
    [API_R_CREDIT_NOTES_LIST] = api__h_credit_notes_list,
    [API_R_REVENUE] = api__h_revenue,
    [API_R_ECONOMICS] = api__h_economics,
    [API_R_COST_CARDS_LIST] = api__h_cost_cards_list,
    [API_R_COST_CARD_CREATE] = api__h_cost_card_create,
    [API_R_RERATING_RUN] = api__h_rerating_run,
    [API_R_RERATING_RUNS_LIST] = api__h_rerating_runs_list,
    [API_R_USAGE] = api__h_usage,
    [API_R_SPEND] = api__h_spend,
    [API_R_TENANT_INVOICES] = api__h_tenant_invoices,
    [API_R_TENANTS_LIST] = api__h_tenants_list,
    [API_R_TENANT_CREATE] = api__h_tenant_create,
    [API_R_TENANT_GET] = api__h_tenant_get,
    [API_R_CONTRACTS_LIST] = api__h_contracts_list,
    [API_R_CONTRACT_IMPORT] = api__h_contract_import,
    [API_R_RATE_CARDS_LIST] = api__h_rate_cards_list,
    [API_R_RATE_CARD_IMPORT] = api__h_rate_card_import,
    [API_R_KEYS_LIST] = api__h_keys_list,
    [API_R_KEY_CREATE] = api__h_key_create,
    [API_R_KEY_REVOKE] = api__h_key_revoke,
    [API_R_ENTITLEMENT] = api__h_entitlement,
    [API_R_BUDGET_SET] = api__h_budget_set,
};

static gm_api_route_info route_infos[API_R_COUNT];
static pthread_once_t route_infos_once = PTHREAD_ONCE_INIT;
static void route_infos_init(void)
{
    for (size_t i = 0; i < API_R_COUNT; i++)
        route_infos[i] = api__routes[i].info;
}

const gm_api_route_info *gm_api_routes(size_t *n)
{
    pthread_once(&route_infos_once, route_infos_init);
    *n = API_R_COUNT;
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

/* ---- Rate limiters: token buckets (micro-tokens, no floating point) -------------------- */
#define RL_SLOTS 4096
typedef struct {
    char key_id[40];
    int64_t tokens_e6;
    int64_t last_us;
} rl_entry;

/* failed authentications per client address */
typedef struct {
    uint32_t ip; /* network order; 0: free */
    int64_t tokens_e6;
    int64_t last_us;
} af_entry;

struct gm_api_server {
    gm_api_config cfg;
    char *conninfo, *listen, *cert, *key, *rater_url;
    struct MHD_Daemon *d;
    api_gate *gate;
    int port;
    bool tls;
    api_pool *pool, *auth_pool;
    api_auth_cache *auth;
    route_metrics metrics[API_R_COUNT + 1];
    uint64_t hash_seed;
    pthread_mutex_t rl_mu;
    rl_entry *rl;
    af_entry *af;
    api_cursor_keys cursor;
    int64_t idem_swept_us;
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
    /* the entitlement mirror (entitlement_mirror.c); NULL when off */
    api_mirror *mirror;
};

api_mirror *api__mirror(api_server *s)
{
    return s->mirror;
}

api_pool *api__pool(api_server *s)
{
    return s->pool;
}

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

const api_cursor_keys *api__cursor_keys(const api_server *s)
{
    return &s->cursor;
}

bool api__idem_sweep_due(api_server *s, int64_t now_us)
{
    int64_t last = __atomic_load_n(&s->idem_swept_us, __ATOMIC_RELAXED);
    if (last && now_us - last < 60 * GM_US_PER_SEC && now_us >= last)
        return false;
    return __atomic_compare_exchange_n(&s->idem_swept_us, &last, now_us, false, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED);
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
    uint64_t h = 1469598103934665603ull ^ s->hash_seed;
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

/* Failed authentications per client address: a bucket of auth_fail_burst that refills
 * auth_fail_per_min a minute. peek: may a key not in the cache be checked now? */
static af_entry *af_slot(api_server *s, uint32_t ip, int64_t now)
{
    uint64_t h = (ip ^ s->hash_seed) * 0x9E3779B97F4A7C15ull;
    af_entry *e = &s->af[(h >> 32) % RL_SLOTS];
    int64_t cap = (int64_t)s->cfg.auth_fail_burst * 1000000;
    if (e->ip != ip) { /* a new address (or a collision under a random seed): full bucket */
        e->ip = ip;
        e->tokens_e6 = cap;
        e->last_us = now;
    }
    int64_t t = e->tokens_e6 + (now - e->last_us) * s->cfg.auth_fail_per_min / 60;
    e->tokens_e6 = t > cap ? cap : t;
    e->last_us = now;
    return e;
}

static bool auth_fail_allowed(api_server *s, uint32_t ip, int *retry_s)
{
    if (s->cfg.auth_fail_burst <= 0 || s->cfg.auth_fail_per_min <= 0)
        return true;
    pthread_mutex_lock(&s->rl_mu);
    af_entry *e = af_slot(s, ip, gm_mono_us());
    bool ok = e->tokens_e6 >= 1000000;
    if (!ok)
        *retry_s =
            (int)((1000000 - e->tokens_e6) * 60 / ((int64_t)s->cfg.auth_fail_per_min * 1000000) +
                  1);
    pthread_mutex_unlock(&s->rl_mu);
    return ok;
}

static void auth_fail_count(api_server *s, uint32_t ip)
{
    if (s->cfg.auth_fail_burst <= 0 || s->cfg.auth_fail_per_min <= 0)
        return;
    pthread_mutex_lock(&s->rl_mu);
    af_entry *e = af_slot(s, ip, gm_mono_us());
    e->tokens_e6 = e->tokens_e6 >= 1000000 ? e->tokens_e6 - 1000000 : 0;
    pthread_mutex_unlock(&s->rl_mu);
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
    if (i >= API_R_COUNT)
        snprintf(buf, len, "unmatched");
    else
        snprintf(buf, len, "%s %s", api__routes[i].info.method, api__routes[i].info.pattern);
}

static void h_metrics(api_req *r)
{
    api_server *s = r->srv;
    api_buf b = {0};
    api__buf_str(&b,
                 "# HELP gridmeter_api_requests_total HTTP requests by route and status class.\n"
                 "# TYPE gridmeter_api_requests_total counter\n");
    for (size_t i = 0; i <= API_R_COUNT; i++) {
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
    for (size_t i = 0; i <= API_R_COUNT; i++) {
        uint64_t v = __atomic_load_n(&s->metrics[i].by_class[4], __ATOMIC_RELAXED) +
                     __atomic_load_n(&s->metrics[i].by_class[5], __ATOMIC_RELAXED);
        char l[96];
        route_label(i, l, sizeof l);
        api__buf_printf(&b, "gridmeter_api_errors_total{route=\"%s\"} %llu\n", l,
                        (unsigned long long)v);
    }
    api__buf_str(&b, "# HELP gridmeter_api_request_duration_seconds Request latency by route.\n"
                     "# TYPE gridmeter_api_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= API_R_COUNT; i++) {
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
    api__mirror_metrics(s->mirror, &b);
    api__text(r, 200, "text/plain; version=0.0.4", b.p, b.len);
}

/* ---- The pipeline ---------------------------------------------------------------------- */
typedef struct {
    int64_t t0_us;
    char raw[API_TARGET_MAX + 2]; /* the request-target as received (URI log callback) */
    size_t raw_len;
    uintptr_t raw_at; /* where libmicrohttpd holds it: the NUL check below */
    bool started;     /* the first call (head complete) happened */
    bool answered;    /* r holds a refusal, sent once the body has been read */
    bool responded;
    bool is_static;
    int route;
    api_framing framing;
    api_target target;
    char instance[API_INSTANCE_MAX + 1];
    char ip[INET_ADDRSTRLEN];
    uint32_t ip_key;
    char ikey[256];
    char *body;
    size_t len;
    api_req r;
} req_state;

/* URI log callback: libmicrohttpd calls it with the raw target before it splits or unescapes
 * it; the result becomes the request's state. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls, (void)c;
    req_state *st = gm_xcalloc(1, sizeof *st);
    st->t0_us = gm_mono_us();
    st->raw_len = strnlen(uri, API_TARGET_MAX + 1);
    memcpy(st->raw, uri, st->raw_len);
    st->raw[st->raw_len] = 0;
    st->raw_at = (uintptr_t)uri;
    st->route = -1;
    return st;
}

/* Unescape callback: nothing is unescaped by libmicrohttpd (edge.c decodes, once). */
static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls, (void)c;
    return strlen(s);
}

typedef struct {
    api_field f[API_FIELDS_MAX + 1];
    size_t n;
} field_list;

static enum MHD_Result collect_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    field_list *l = cls;
    if (l->n <= API_FIELDS_MAX)
        l->f[l->n] = (api_field){key, key_size, value ? value : "", value ? value_size : 0};
    l->n++;
    return MHD_YES;
}

static void refused(api_req *r, const api_refusal *why)
{
    api__problem(r, why->status, why->slug, why->field[0] ? why->field : NULL, "%s", why->detail);
}

static bool media_type_json(const char *ct)
{
    /* application/json, optionally ; charset=utf-8 (case-insensitive, optional spaces) */
    size_t n = strlen("application/json");
    if (!ct || strncasecmp(ct, "application/json", n))
        return false;
    const char *p = ct + n;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return true;
    if (*p++ != ';')
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "charset=", 8))
        return false;
    p += 8;
    if (!strncasecmp(p, "utf-8", 5))
        p += 5;
    else if (!strncasecmp(p, "\"utf-8\"", 7))
        p += 7;
    else
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    return !*p;
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

/* Step 3: authentication. false with the problem set in r. */
static bool authenticate(api_server *s, struct MHD_Connection *conn, req_state *st)
{
    api_req *r = &st->r;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    int retry = 1;
    bool throttled = !auth_fail_allowed(s, st->ip_key, &retry);
    char err[512] = "";
    int rc = GM_ENOTFOUND;
    if (!h || strncasecmp(h, "Bearer ", 7))
        snprintf(err, sizeof err, "Authorization: a bearer API key is required");
    else
        rc = api__authenticate(s->auth, s->auth_pool, s->cfg.db_wait_ms, throttled, h + 7, &r->auth,
                               err, sizeof err);
    if (rc == 0)
        return true;
    if (rc == GM_EDB) {
        gm_error("api", "msg=\"auth lookup failed\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "authentication backend unavailable");
        snprintf(r->header_name, sizeof r->header_name, "Retry-After");
        snprintf(r->header_value, sizeof r->header_value, "1");
        return false;
    }
    if (throttled) {
        api__problem(r, 429, "auth-throttled", "Authorization",
                     "client address %s: more than %d failed authentications (then %d a "
                     "minute); keys not already verified are not checked for %d s",
                     st->ip, s->cfg.auth_fail_burst, s->cfg.auth_fail_per_min, retry);
        snprintf(r->header_name, sizeof r->header_name, "Retry-After");
        snprintf(r->header_value, sizeof r->header_value, "%d", retry);
        return false;
    }
    auth_fail_count(s, st->ip_key);
    api__problem(r, 401, "unauthorized", "Authorization", "%s", err);
    snprintf(r->header_name, sizeof r->header_name, "WWW-Authenticate");
    snprintf(r->header_value, sizeof r->header_value, "Bearer realm=\"gridmeter\"");
    return false;
}

/* Step 4: the query's names against the route's list. */
static bool query_ok(api_req *r, const api_route_spec *rt)
{
    const api_target *t = r->target;
    for (size_t i = 0; i < t->n_param; i++) {
        char shown[API_PARAM_NAME_MAX + 1];
        api__printable(t->pname[i], strlen(t->pname[i]), shown, sizeof shown);
        bool known = false;
        size_t n = strlen(t->pname[i]);
        for (const char *p = rt->query; *p;) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == n && !memcmp(p, t->pname[i], n))
                known = true;
            if (!e)
                break;
            p = e + 1;
        }
        if (!known) {
            api__problem(r, 400, "unknown-parameter", shown,
                         "%s: unknown query parameter (allowed: %s)", shown,
                         rt->query[0] ? rt->query : "none");
            return false;
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(t->pname[k], t->pname[i])) {
                api__problem(r, 400, "repeated-parameter", shown, "%s: query parameter given twice",
                             shown);
                return false;
            }
    }
    return true;
}

enum { B_LATER, B_NOW, B_KILLED };

/* Steps 1-4, when the head is complete. B_NOW: answer before reading the body. */
static int begin(api_server *s, struct MHD_Connection *conn, const char *method,
                 const char *version, req_state *st)
{
    api_req *r = &st->r;
    r->srv = s;
    r->conn = conn;
    r->method = method;
    api__instance_of(st->raw, st->raw_len, st->instance, sizeof st->instance);
    r->path = st->instance;
    r->target = &st->target;
    r->client_ip = st->ip;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ci->client_addr;
        st->ip_key = a->sin_addr.s_addr;
        inet_ntop(AF_INET, &a->sin_addr, st->ip, sizeof st->ip);
    } else {
        snprintf(st->ip, sizeof st->ip, "unknown");
    }
    /* 1. framing, on libmicrohttpd's parse */
    api_refusal why;
    field_list fl = {.n = 0};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, collect_field, &fl);
    if (fl.n > API_FIELDS_MAX) {
        api__problem(r, 431, "header-fields-too-large", "header fields",
                     "header fields: more than %d", API_FIELDS_MAX);
        return B_NOW;
    }
    if (api__framing_decide(fl.f, fl.n, s->cfg.max_body_bytes, &st->framing, &why)) {
        refused(r, &why);
        return B_NOW;
    }
    if (!api__gate_begin(s->gate, conn, st->framing.expect_continue))
        return B_KILLED;
    st->answered = true; /* until every check below has passed */
    /* A NUL byte sent raw inside the target ends libmicrohttpd's string early: the version
     * string follows the target in its buffer, so the distance tells (only with TLS; the
     * gate refuses such a request line before). */
    uintptr_t v = (uintptr_t)version;
    if (v > st->raw_at && v - st->raw_at < API_TARGET_MAX + 2 &&
        v - st->raw_at - 1 != st->raw_len) {
        api__problem(r, 400, "invalid-target", "request-target",
                     "request-target: a raw NUL byte is not allowed");
        return B_LATER;
    }
    if (api__target_parse(st->raw, st->raw_len, &st->target, &why)) {
        refused(r, &why);
        return B_LATER;
    }
    if (!strcmp(st->target.seg[0], "dashboard")) {
        st->is_static = true;
        st->answered = false;
        return B_LATER;
    }
    /* 2. the route */
    api_match m;
    api__route_match(method, &st->target, &m);
    const api_route_spec *rt = m.route >= 0 ? &api__routes[m.route] : NULL;
    st->route = m.route; /* metrics count refusals under the route */
    bool needs_key = rt ? rt->info.roles != 0 : api__path_needs_key(&st->target) && !m.path_public;
    if (!rt && !needs_key) {
        if (m.path_known) {
            api__problem(r, 405, "method-not-allowed", NULL, "%.16s %s: method not allowed", method,
                         st->instance);
            snprintf(r->header_name, sizeof r->header_name, "Allow");
            snprintf(r->header_value, sizeof r->header_value, "%s", m.allow);
        } else {
            api__problem(r, 404, "not-found", NULL, "no such resource");
        }
        return B_LATER;
    }
    /* 3. who is calling */
    if (needs_key) {
        if (!authenticate(s, conn, st))
            return B_LATER;
        int retry = 1;
        if (!rate_allow(s, r->auth.key_id, &retry)) {
            api__problem(r, 429, "rate-limited", NULL,
                         "API key %s: more than %d requests/s (burst %d)", r->auth.key_id,
                         s->cfg.rate_per_s, s->cfg.rate_burst);
            snprintf(r->header_name, sizeof r->header_name, "Retry-After");
            snprintf(r->header_value, sizeof r->header_value, "%d", retry);
            return B_LATER;
        }
    }
    if (!rt) {
        if (m.path_known) {
            api__problem(r, 405, "method-not-allowed", NULL, "%.16s %s: method not allowed", method,
                         st->instance);
            snprintf(r->header_name, sizeof r->header_name, "Allow");
            snprintf(r->header_value, sizeof r->header_value, "%s", m.allow);
        } else {
            api__problem(r, 404, "not-found", NULL, "no such resource");
        }
        return B_LATER;
    }
    if (rt->info.roles && !(rt->info.roles & r->auth.role)) {
        api__problem(r, 403, "forbidden", NULL, "role %s may not call %s %s",
                     api__role_name(r->auth.role), rt->info.method, rt->info.pattern);
        return B_LATER;
    }
    /* 4. parameters, scope, body */
    for (int i = 0; i < m.n_param; i++)
        r->param[i] = m.param[i];
    r->n_param = m.n_param;
    if (!query_ok(r, rt))
        return B_LATER;
    if (rt->flags & API_RF_TENANT_SCOPED && r->auth.role == GM_API_ROLE_CUSTOMER &&
        strcmp(r->param[0], r->auth.tenant)) {
        api__problem(r, 404, "not-found", NULL, "no such resource");
        return B_LATER;
    }
    bool post = !strcmp(rt->info.method, "POST");
    if (!post && st->framing.length) {
        api__problem(r, 400, "invalid-body", "body", "body: %s requests take no body", method);
        return B_LATER;
    }
    if (post) {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        if ((st->framing.length || ct) && !media_type_json(ct)) {
            api__problem(r, 415, "unsupported-media-type", "Content-Type",
                         "Content-Type: must be application/json (optionally with "
                         "charset=utf-8)");
            return B_LATER;
        }
        const char *ik = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
        if (!ik || !idem_key_ok(ik)) {
            api__problem(r, 400, "idempotency-key-required", "Idempotency-Key",
                         "Idempotency-Key: required on POST, 1-255 visible ASCII characters");
            return B_LATER;
        }
        snprintf(st->ikey, sizeof st->ikey, "%s", ik);
    }
    st->answered = false;
    return B_LATER;
}

/* Steps 5-6, once the body has been read. Returns the route for the metrics. */
static int finish(api_server *s, req_state *st)
{
    api_req *r = &st->r;
    r->body = st->body ? st->body : "";
    r->body_len = st->len;
    int route = st->route >= 0 ? st->route : (int)API_R_COUNT;
    if (st->answered)
        return route;
    const api_route_spec *rt = &api__routes[st->route];
    if (!api__utf8_valid(r->body, r->body_len)) {
        api__problem(r, 400, "invalid-body", "body", "body: not valid UTF-8");
        return route;
    }
    r->now_us = gm_now_us();
    char err[512];
    if (!(rt->flags & API_RF_NO_DB)) {
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
    if (!strcmp(rt->info.method, "POST")) {
        if (api__idem_sweep_due(s, r->now_us))
            api__idem_sweep(s, r->db);
        /* a re-rating run takes its month's lock before the transaction's snapshot */
        int64_t month = st->route == API_R_RERATING_RUN ? api__rerating_lock(r) : -1;
        api_idem idem;
        if (api__idem_begin(r, rt, st->ikey, &idem)) {
            handlers[st->route](r);
            if (!r->resp)
                api__problem(r, 500, "internal", NULL, "handler produced no response");
            api__idem_finish(r, &idem);
        }
        api__rerating_unlock(r, month);
        return route;
    }
    handlers[st->route](r);
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

void api__metrics_gate(api_server *s, int status)
{
    record(s, (int)API_R_COUNT, status, gm_mono_us());
}

/* keep: the connection may serve another request (keep-alive, api__gate_keep); the answer
 * then carries no Connection: close and libmicrohttpd keeps it open if the client asked. */
static enum MHD_Result send_resp(struct MHD_Connection *conn, api_req *r, bool keep)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(r->resp_len, r->resp, free);
    r->resp = NULL;
    MHD_add_response_header(resp, "Content-Type", r->ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!keep)
        MHD_add_response_header(resp, "Connection", "close");
    if (r->header_name[0])
        MHD_add_response_header(resp, r->header_name, r->header_value);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The dashboard's file name from the target: "" for /dashboard/, NULL for /dashboard. */
static const char *static_name(const req_state *st, char *buf, size_t len)
{
    const api_target *t = &st->target;
    if (t->n_seg == 1)
        return NULL;
    buf[0] = 0;
    for (size_t i = 1; i < t->n_seg; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s%s", i > 1 ? "/" : "", t->seg[i]);
    }
    return buf;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    api_server *s = cls;
    req_state *st = *con_cls;
    if (!st) /* the URI log callback always runs first; this is a fallback */
        *con_cls = st = on_uri(NULL, url, conn);
    if (!st->started) {
        st->started = true;
        int b = begin(s, conn, method, version, st);
        if (b == B_KILLED)
            return MHD_NO;
        if (b == B_NOW) {
            st->responded = true;
            if (!api__gate_received(s->gate, conn))
                return MHD_NO;
            record(s, (int)API_R_COUNT, st->r.status, st->t0_us);
            return send_resp(conn, &st->r, false); /* the body, if any, was not read */
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Content-Length was checked against the limit (the only framing accepted) */
        if (!st->answered && !st->is_static &&
            st->len + *upload_data_size <= (size_t)s->cfg.max_body_bytes) {
            st->body = gm_xrealloc(st->body, st->len + *upload_data_size + 1);
            memcpy(st->body + st->len, upload_data, *upload_data_size);
            st->len += *upload_data_size;
            st->body[st->len] = 0;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (st->responded)
        return MHD_YES;
    st->responded = true;
    if (!api__gate_received(s->gate, conn))
        return MHD_NO; /* the watchdog closed it: past request_timeout_s */
    if (st->is_static) {
        char name[API_TARGET_MAX + 1];
        return api__static_serve(conn, method, static_name(st, name, sizeof name), st->instance);
    }
    api_req *r = &st->r;
    int route = finish(s, st);
    if (r->db)
        api__pool_put(s->pool, r->db);
    r->db = NULL;
    record(s, route, r->status, st->t0_us);
    if (r->status >= 500)
        gm_warn("api", "msg=\"request failed\" method=%.16s path=\"%.200s\" status=%d", method,
                st->instance, r->status);
    bool keep =
        r->status != 408 && r->status != 413 && r->status < 500 && api__gate_keep(s->gate, conn);
    return send_resp(conn, r, keep);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    api_server *s = cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && s && s->gate)
        api__gate_next(s->gate, conn);
    req_state *st = *con_cls;
    if (st) {
        free(st->body);
        free(st->r.resp);
        free(st->r.idem_store);
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
    c->per_ip_connections = 16; /* one host cannot hold every connection */
    c->health_reserve = 8;
    c->conn_timeout_s = 30;
    c->request_timeout_s = 10;  /* dribbling a head or a body holds nothing for long */
    c->keep_alive_requests = 1; /* every request passes the gate's head check */
    c->answer_timeout_s = 120;  /* nor does reading the answer a few bytes at a time */
    c->max_body_bytes = 1 << 20;
    c->rate_per_s = 50;
    c->rate_burst = 100;
    c->auth_fail_burst = 10;
    c->auth_fail_per_min = 60;
    c->idempotency_retention_hours = 24;
    c->grace_hours = 72;
    c->auth_cache_ms = 2000;
    c->usage_cache_ms = 1000;
    c->entitlement_max_stale_ms = 1000; /* the pushed mirror, never older than 1 s */
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

/* A cursor key from a file: at least 32 bytes of secret, trailing whitespace dropped. */
static int read_key(const char *path, uint8_t *out, size_t *out_len, char *err, size_t err_len)
{
    size_t n = 0;
    char *text = gm_read_file(path, &n, err, err_len);
    if (!text)
        return GM_ECONFIG;
    struct stat st;
    if (!stat(path, &st) && (st.st_mode & 077))
        gm_warn("api",
                "msg=\"cursor key file is readable by others than its owner (chmod 600)\" "
                "file=\"%s\"",
                path);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ' ||
                 text[n - 1] == '\t'))
        n--;
    int rc = 0;
    if (n < 32 || n > API_CURSOR_KEY_MAX)
        rc = gm_fail(err, err_len, GM_ECONFIG, "cursor key %s: %zu bytes, want 32 to %d", path, n,
                     API_CURSOR_KEY_MAX);
    else {
        memcpy(out, text, n);
        *out_len = n;
    }
    memset(text, 0, n);
    free(text);
    return rc;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

gm_api_server *gm_api_start(const gm_api_config *cfg, char *err, size_t err_len)
{
    pthread_once(&curl_once, curl_init);
    gm_api_server *s = gm_xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->conninfo = gm_xstrdup(cfg->db_conninfo ? cfg->db_conninfo : "");
    s->cfg.db_conninfo = s->conninfo;
    s->listen = gm_xstrdup(cfg->listen_addr ? cfg->listen_addr : "127.0.0.1");
    s->cfg.listen_addr = s->listen;
    s->rater_url = gm_xstrdup(cfg->rater_metrics_url ? cfg->rater_metrics_url : "");
    s->cfg.rater_metrics_url = s->rater_url;
    s->cfg.cursor_key_file = s->cfg.cursor_key_previous_file = NULL; /* read below */
    pthread_mutex_init(&s->rl_mu, NULL);
    pthread_mutex_init(&s->book_mu, NULL);
    pthread_rwlock_init(&s->book_lock, NULL);
    s->rl = gm_xcalloc(RL_SLOTS, sizeof *s->rl);
    s->af = gm_xcalloc(RL_SLOTS, sizeof *s->af);
    pthread_mutex_init(&s->uc_mu, NULL);
    s->uc = gm_xcalloc(API_USAGE_CACHE_SLOTS, sizeof *s->uc);
    s->drafts = gm_billing_cache_new(4096);
    s->pool = api__pool_new(s->conninfo, cfg->db_pool_size, cfg->statement_timeout_ms);
    s->auth_pool = api__pool_new(s->conninfo, 2, cfg->statement_timeout_ms);
    s->auth = api__auth_cache_new(cfg->auth_cache_ms);
    if (cfg->max_body_bytes < 1 || cfg->rate_per_s < 0 || cfg->rate_burst < 1 ||
        cfg->max_connections < 1 || cfg->request_timeout_s < 1 || cfg->conn_timeout_s < 1 ||
        cfg->answer_timeout_s < 1 || cfg->health_reserve < 0 || cfg->per_ip_connections < 0 ||
        cfg->auth_fail_burst < 0 || cfg->auth_fail_per_min < 0 ||
        cfg->idempotency_retention_hours < 1 ||
        (cfg->entitlement_max_stale_ms != 0 &&
         (cfg->entitlement_max_stale_ms < 20 || cfg->entitlement_max_stale_ms > 600000))) {
        gm_fail(err, err_len, GM_ECONFIG,
                "max_body_bytes, rate_burst, max_connections, request_timeout_s, "
                "answer_timeout_s, timeout_s and "
                "idempotency_retention_hours must be >= 1; rate_per_s, health_reserve, "
                "per_ip_connections and the auth failure limits >= 0; "
                "entitlement_max_stale_ms 0 (off) or 20 to 600000");
        gm_api_stop(s);
        return NULL;
    }
    if (RAND_bytes((unsigned char *)&s->hash_seed, sizeof s->hash_seed) != 1) {
        gm_fail(err, err_len, GM_EIO, "OpenSSL RAND_bytes failed");
        gm_api_stop(s);
        return NULL;
    }
    if (cfg->cursor_key_file && *cfg->cursor_key_file) {
        if (read_key(cfg->cursor_key_file, s->cursor.key, &s->cursor.key_len, err, err_len)) {
            gm_api_stop(s);
            return NULL;
        }
    } else {
        if (RAND_bytes(s->cursor.key, 32) != 1) {
            gm_fail(err, err_len, GM_EIO, "OpenSSL RAND_bytes failed");
            gm_api_stop(s);
            return NULL;
        }
        s->cursor.key_len = 32;
        gm_info("api", "msg=\"cursor key: random for this process (cursors end with it; set "
                       "--cursor-key-file for restarts and several servers)\"");
    }
    if (cfg->cursor_key_previous_file && *cfg->cursor_key_previous_file &&
        read_key(cfg->cursor_key_previous_file, s->cursor.prev, &s->cursor.prev_len, err,
                 err_len)) {
        gm_api_stop(s);
        return NULL;
    }
    s->tls = cfg->tls_cert_file && *cfg->tls_cert_file;
    if (s->tls != (cfg->tls_key_file && *cfg->tls_key_file)) {
        gm_fail(err, err_len, GM_ECONFIG, "tls: give both the certificate and the key file");
        gm_api_stop(s);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    if (s->tls) {
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
    uint64_t token = 0; /* names this server's heartbeats on the shared channel */
    if (cfg->entitlement_max_stale_ms > 0 &&
        (RAND_bytes((unsigned char *)&token, sizeof token) != 1 ||
         !(s->mirror = api__mirror_start(s->conninfo, cfg->entitlement_max_stale_ms, token, err,
                                         err_len)))) {
        if (!token)
            gm_fail(err, err_len, GM_EIO, "OpenSSL RAND_bytes failed");
        gm_api_stop(s);
        return NULL;
    }
    s->gate = api__gate_new(s, &s->cfg, s->tls, err, err_len);
    if (!s->gate) {
        gm_api_stop(s);
        return NULL;
    }
    s->port = api__gate_port(s->gate);
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections + cfg->health_reserve, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, cfg->conn_timeout_s, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL},
        {MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)api__gate_notify, s->gate},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, s},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape_none, NULL},
        {s->tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->cert},
        {s->tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, s->key},
        {MHD_OPTION_END, 0, NULL}};
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!s->d) {
        gm_fail(err, err_len, GM_EIO, "libmicrohttpd could not start");
        gm_api_stop(s);
        return NULL;
    }
    if (api__gate_run(s->gate, s->d, err, err_len)) {
        gm_api_stop(s);
        return NULL;
    }
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
    api__gate_stop(s->gate); /* no new connections, heads being read are closed */
    if (s->d)
        MHD_stop_daemon(s->d);
    api__gate_free(s->gate);
    api__mirror_stop(s->mirror);
    api__pool_free(s->pool);
    api__pool_free(s->auth_pool);
    api__auth_cache_free(s->auth);
    gm_rating_book_free(s->book);
    gm_billing_cache_free(s->drafts);
    pthread_rwlock_destroy(&s->book_lock);
    pthread_mutex_destroy(&s->book_mu);
    pthread_mutex_destroy(&s->rl_mu);
    free(s->rl);
    free(s->af);
    for (size_t i = 0; s->uc && i < API_USAGE_CACHE_SLOTS; i++) {
        free(s->uc[i].key);
        free(s->uc[i].body);
    }
    free(s->uc);
    pthread_mutex_destroy(&s->uc_mu);
    memset(&s->cursor, 0, sizeof s->cursor);
    free(s->conninfo);
    free(s->listen);
    free(s->rater_url);
    free(s->cert);
    free(s->key);
    free(s);
}
