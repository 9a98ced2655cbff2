/* Internals of the api module shared between its files: request state, responses, the
 * connection pool, auth cache, the rating book holder and the invoice model. */
#ifndef GM_API_INT_H
#define GM_API_INT_H

#include "api_edge.h"
#include "gm_api.h"
#include "gm_ident.h"
#include "gm_billing.h"
#include "gm_ledger.h"
#include "gm_rating.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <pthread.h>

/* ---- Connection pool -------------------------------------------------------------------- */
typedef struct api_pool api_pool;
api_pool *api__pool_new(const char *conninfo, int size, int statement_timeout_ms);
void api__pool_free(api_pool *p);
/* A connection, or NULL after wait_ms (err says why). Return it with api__pool_put; a
 * connection whose transaction state is not idle is rolled back on return. */
PGconn *api__pool_get(api_pool *p, int wait_ms, char *err, size_t err_len);
void api__pool_put(api_pool *p, PGconn *c);

/* ---- Growable text buffer ---------------------------------------------------------------- */
typedef struct {
    char *p;
    size_t len, cap;
} api_buf;
void api__buf_add(api_buf *b, const char *s, size_t n);
void api__buf_str(api_buf *b, const char *s);
void api__buf_printf(api_buf *b, const char *fmt, ...) GM_PRINTF(2, 3);
/* CSV field (quoted when needed, formula-leading characters neutralized). */
void api__buf_csv(api_buf *b, const char *s);

/* ---- Requests and responses -------------------------------------------------------------- */
typedef struct gm_api_server api_server;

typedef struct {
    char key_id[40];
    unsigned role; /* one GM_API_ROLE_* bit; 0 when unauthenticated */
    char tenant[136];
} api_auth;

typedef struct api_req {
    api_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    const char *path; /* the raw path, as printable ASCII (problem instance, logs) */
    const api_target *target;
    const char *client_ip;
    const char *body; /* NUL-terminated */
    size_t body_len;
    api_auth auth;
    const char *param[3]; /* path parameters in pattern order (decoded) */
    int n_param;
    PGconn *db;     /* from the pool, for the handler; POST: inside the request's transaction */
    int64_t now_us; /* the instant the pipeline decided on (POST: its transaction's gm.now()) */
    /* the response */
    int status;
    char *resp;
    size_t resp_len;
    const char *ctype;
    char header_name[32], header_value[160]; /* one optional extra header */
    char *idem_store; /* when set: the body kept for Idempotency-Key replays (redacted) */
} api_req;

typedef void (*api_handler)(api_req *r);

/* Sets a JSON response and frees obj. */
void api__json(api_req *r, int status, cJSON *obj);
/* Sets an owned text body. */
void api__text(api_req *r, int status, const char *ctype, char *body, size_t len);
/* RFC 9457 problem: type .../problems/<slug>, title, status, detail, instance; field when
 * not NULL. */
void api__problem(api_req *r, int status, const char *slug, const char *field, const char *fmt, ...)
    GM_PRINTF(5, 6);
/* Maps a failed PGresult to a problem (SQLSTATE -> status); logs 5xx with the detail. */
void api__db_problem(api_req *r, const PGresult *res, const char *what);
/* Query parameter value (decoded, validated by api__target_parse) or NULL. */
const char *api__query(api_req *r, const char *name);
/* Parses the body as a JSON object whose members are all in `allowed` (comma-separated);
 * NULL with the problem set otherwise. An empty body is {} when empty_ok. */
cJSON *api__body_object(api_req *r, const char *allowed, bool empty_ok);
/* Accept header asks for CSV. */
bool api__wants_csv(api_req *r);

/* Parses "YYYY-MM" into the month's first instant; false when malformed. */
bool api__parse_month(const char *s, int64_t *start_us);
void api__format_month(int64_t us, char out[8]);
/* limit parameter (1..max, default def); false with problem set. */
bool api__parse_limit(api_req *r, int def, int max, int *out);
/* Opaque cursors of a list (kind "inv", "cn"), signed with the server's cursor key
 * (cursor.c); api__cursor_parse sets a 400 naming `cursor` when it fails. */
void api__cursor_make(api_server *s, const char *kind, int64_t a, const char *b, char *out,
                      size_t out_len);
bool api__cursor_parse(api_req *r, const char *kind, const char *s, int64_t *a, char *b,
                       size_t b_len);

/* Minor units of a currency (2 when the table does not know it). */
int api__minor_units(const char *currency);
/* Numeric text ("-12.5") -> exact 10^-18 units; false when not a plain decimal. */
bool api__num_e18(const char *s, gm_i128 *out);
bool api__num_int(const char *s, gm_i128 *out);
/* Formats helpers into cJSON strings. */
void api__add_e18(cJSON *o, const char *name, gm_i128 v);
void api__add_minor(cJSON *o, const char *name, gm_i128 minor, int minor_units);
void api__add_i128(cJSON *o, const char *name, gm_i128 v);
void api__add_time(cJSON *o, const char *name, int64_t us);
/* timestamptz text from PostgreSQL (UTC, "2026-11-01 00:00:00+00") -> us. */
bool api__pg_time(const char *s, int64_t *us);
/* Instant as a parameter: "2026-11-01T00:00:00.000000Z". */
void api__time_param(int64_t us, char buf[40]);

/* ---- Server-wide state handlers use ------------------------------------------------------ */
const gm_api_config *api__config(const api_server *s);
/* The current rating book, held for reading until api__book_release (reloaded when the
 * stored cards or contracts changed). NULL with err on failure. */
const gm_rating_book *api__book_acquire(api_server *s, PGconn *db, char *err, size_t err_len);
void api__book_release(api_server *s);
/* Forgets cached auth for a key (after a revocation through this server). */
void api__auth_forget(api_server *s, const char *key_id);
const api_cursor_keys *api__cursor_keys(const api_server *s);
/* Counts an answer the gate gave itself (route "unmatched"). */
void api__metrics_gate(api_server *s, int status);

/* ---- Transactions ------------------------------------------------------------------------
 * Every POST runs in one transaction with its idempotency record (idempotency.c); code that
 * needs a transaction starts it with gm_pg_begin_or_join (ledger/), which joins it. */

/* ---- Idempotency (idempotency.c) ---------------------------------------------------------*/
typedef struct {
    char key[256];
    uint8_t hash[32];
    bool open; /* the transaction is open and the handler may run */
} api_idem;
/* Opens the POST's transaction (isolation by route), takes the key's lock, and answers from a
 * stored record (replay, or 422 when the method, path or body differ) or with 409 while
 * another request holds the key. true: the handler may run inside the transaction. */
bool api__idem_begin(api_req *r, const api_route_spec *rt, const char *ikey, api_idem *st);
/* After the handler: a final answer (2xx, or 4xx other than 408, 409, 423, 425, 429) is
 * stored with the effect and committed; anything else rolls the effect back. A failed
 * COMMIT replaces the answer (409 or 503: retry with the same key). */
void api__idem_finish(api_req *r, api_idem *st);
bool api__idem_final(int status);
/* Deletes records older than the retention, at most once a minute of the server's clock. */
void api__idem_sweep(api_server *s, PGconn *db);
bool api__idem_sweep_due(api_server *s, int64_t now_us);

/* Usage responses kept for usage_cache_ms (dashboards poll the same ranges). */
#define API_USAGE_CACHE_SLOTS 1024
typedef struct api_cached {
    char *key;
    char *body;
    size_t len;
    int64_t expires_us;
} api_cached;
api_cached *api__usage_cache(api_server *s, pthread_mutex_t **mu);

/* ---- The entitlement mirror (entitlement_mirror.c) ---------------------------------------
 * What GET /v1/tenants/{t}/entitlement answers, in memory, kept current by NOTIFY (sql/0021)
 * on a dedicated connection; proven fresh by heartbeats. */
typedef struct {
    bool has_budget, hard, allowed;
    char currency[4], limit[64], spend[64];
    int thr[16], n_thr, crossed[32], n_crossed;
    int64_t period_us;        /* the month asked about (gridmeter's clock) */
    int64_t now_us;           /* when the answer was made */
    int64_t as_of_us;         /* every charge committed before this instant is in spend */
    int64_t stale_us;         /* now_us - as_of_us */
    int64_t spend_updated_us; /* gm.month_spend.updated_at of the row, -1 without one */
    char source[12];          /* "memory" or "database" */
} api_ent_view;
typedef struct api_mirror api_mirror;
/* Starts the listener thread (it connects and loads in the background; until then, and
 * whenever its proof of freshness is older than max_stale_ms, api__mirror_answer says no). */
api_mirror *api__mirror_start(const char *conninfo, int max_stale_ms, uint64_t seed, char *err,
                              size_t err_len);
void api__mirror_stop(api_mirror *m); /* NULL is fine */
/* The answer for tenant at now_us from memory; false when the mirror cannot vouch for it. */
bool api__mirror_answer(api_mirror *m, const char *tenant, int64_t now_us, api_ent_view *v);
void api__mirror_count_db(api_mirror *m);
void api__mirror_metrics(api_mirror *m, api_buf *b);
api_mirror *api__mirror(api_server *s);
api_pool *api__pool(api_server *s);

/* ---- The gate (gate.c): the listening socket, request heads, deadlines, limits ----------- */
typedef struct api_gate api_gate;
/* Binds and listens (cfg->listen_addr, cfg->port); NULL with err on failure. */
api_gate *api__gate_new(api_server *s, const gm_api_config *cfg, bool tls, char *err,
                        size_t err_len);
int api__gate_port(const api_gate *g);
/* Starts accepting and handing heads that pass to d. */
int api__gate_run(api_gate *g, struct MHD_Daemon *d, char *err, size_t err_len) GM_MUSTCHECK;
/* Stops accepting and closes the connections it still holds (not libmicrohttpd's). */
void api__gate_stop(api_gate *g);
/* After MHD_stop_daemon. NULL is fine. */
void api__gate_free(api_gate *g);
/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION (cls: the gate). */
void api__gate_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
/* The pipeline's marks for the watchdog: the head was read (false: the deadline passed and
 * the connection is being closed), the request arrived whole (false: likewise). */
bool api__gate_begin(api_gate *g, struct MHD_Connection *c, bool expect_continue);
bool api__gate_received(api_gate *g, struct MHD_Connection *c);
/* Whether the answer being queued may leave the connection open (keep_alive_requests). */
bool api__gate_keep(api_gate *g, struct MHD_Connection *c);
/* A request's answer was delivered: the next request's deadline starts now. */
void api__gate_next(api_gate *g, struct MHD_Connection *c);

/* ---- Auth -------------------------------------------------------------------------------- */
typedef struct api_auth_cache api_auth_cache;
api_auth_cache *api__auth_cache_new(int ttl_ms);
void api__auth_cache_free(api_auth_cache *c);
/* 0 and *out on success; 401-worthy reason in why otherwise (GM_ENOTFOUND), or GM_EDB. A
 * key not in the cache is looked up on a connection of `pool` (the authentication pool, not
 * the handlers'); with cache_only, GM_EFULL instead of a lookup. */
int api__authenticate(api_auth_cache *c, api_pool *pool, int wait_ms, bool cache_only,
                      const char *token, api_auth *out, char *why, size_t why_len);
void api__auth_cache_forget(api_auth_cache *c, const char *key_id);
const char *api__role_name(unsigned role);
unsigned api__role_parse(const char *s);

/* ---- Invoices (invoice.c: thin adapters over billing/, gm_billing.h) -------------------- */
typedef gm_billing_line api_line;
typedef gm_billing_invoice api_invoice;

/* The billing context of a request: its connection, the server's book (held until
 * api__billing_end), the grace window, the draft cache and the instant gm_now_us(). NULL with
 * err when the book cannot be loaded. */
const gm_billing_ctx *api__billing_begin(api_server *s, PGconn *db, gm_billing_ctx *ctx, char *err,
                                         size_t err_len);
void api__billing_end(api_server *s);
uint64_t api__book_generation(api_server *s);
gm_billing_cache *api__drafts(api_server *s);

void api__invoice_free(api_invoice *inv);
/* Loads an invoice visible to `visible_to` (NULL: any tenant); GM_ENOTFOUND when there is
 * none, or it is another tenant's (checked before a draft is computed). */
int api__invoice_get(api_server *s, PGconn *db, const char *invoice_id, const char *visible_to,
                     api_invoice **out, char *err, size_t err_len);
/* Drafts for every tenant with charges in the month or an active contract. */
int api__invoice_ensure_period(api_server *s, PGconn *db, int64_t period_start_us,
                               const char *tenant, char *err, size_t err_len);
/* JSON (with lines when with_lines) and CSV renderings. */
cJSON *api__invoice_json(const api_invoice *inv, bool with_lines);
char *api__invoice_csv(const api_invoice *inv, size_t *len);
typedef gm_billing_filter api_invoice_filter;
/* One page of invoices (drafts computed live), newest period first, then tenant. */
int api__invoice_list(api_server *s, PGconn *db, const api_invoice_filter *f, api_invoice ***out,
                      size_t *n_out, char *next_cursor, size_t cursor_len, char *err,
                      size_t err_len);
/* A tenant's month computed like a draft, without touching any row (spend). */
int api__invoice_compute(api_server *s, PGconn *db, const char *tenant, int64_t period_start_us,
                         api_invoice **out, char *err, size_t err_len);
/* The one tenant rule (common/gm_ident.h): valid or not, and the rule a value breaks ("must
 * be at most 64 bytes, got 65"; a thread's own buffer, valid until its next call). */
bool api__valid_tenant(const char *t);
const char *api__tenant_rule(const char *t);
/* Marks the rating book stale (after an import through this server). */
void api__book_stale(api_server *s);
/* Finalizes at gm_now_us(). Returns 0, GM_ENOTFOUND, GM_ECONFLICT (not a draft / grace
 * window open: reason in err), GM_EDB. */
int api__invoice_finalize(api_server *s, PGconn *db, const char *invoice_id, char *err,
                          size_t err_len);
/* Period exact charges (events, amount) of a tenant. */
int api__period_fingerprint(PGconn *db, const char *tenant, int64_t start_us, int64_t end_us,
                            gm_i128 *events, gm_i128 *amount_e18, char *err, size_t err_len);

/* ---- Handlers ---------------------------------------------------------------------------- */
/* The dashboard's static files (static.c): name "" is index.html, NULL is /dashboard itself
 * (redirected to /dashboard/); errors are problem+json with instance. */
enum MHD_Result api__static_serve(struct MHD_Connection *c, const char *method, const char *name,
                                  const char *instance);
void api__h_invoices_list(api_req *r);
void api__h_invoice_get(api_req *r);
void api__h_invoice_finalize(api_req *r);
void api__h_invoice_void(api_req *r);
void api__h_credit_note_create(api_req *r);
void api__h_credit_notes_list(api_req *r);
void api__h_revenue(api_req *r);
void api__h_economics(api_req *r); /* economics.c */
void api__h_cost_cards_list(api_req *r);
void api__h_cost_card_create(api_req *r);
void api__h_rerating_run(api_req *r);
/* Around a re-rating POST's transaction (see invoice_http.c). */
int64_t api__rerating_lock(api_req *r);
void api__rerating_unlock(api_req *r, int64_t month_us);
void api__h_rerating_runs_list(api_req *r);
void api__h_tenant_invoices(api_req *r);
void api__h_usage(api_req *r);
void api__h_spend(api_req *r);
void api__h_entitlement(api_req *r); /* entitlement.c */
void api__h_budget_set(api_req *r);  /* entitlement.c */
void api__h_tenants_list(api_req *r);
void api__h_tenant_create(api_req *r);
void api__h_tenant_get(api_req *r);
void api__h_contracts_list(api_req *r);
void api__h_contract_import(api_req *r);
void api__h_rate_cards_list(api_req *r);
void api__h_rate_card_import(api_req *r);
void api__h_keys_list(api_req *r);
void api__h_key_create(api_req *r);
void api__h_key_revoke(api_req *r);
void api__h_me(api_req *r);
void api__h_ops_ingest(api_req *r);

#endif /* GM_API_INT_H */
