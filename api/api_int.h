/* Internals of the api module shared between its files: request state, responses, the
 * connection pool, auth cache, the rating book holder and the invoice model. */
#ifndef GM_API_INT_H
#define GM_API_INT_H

#include "gm_api.h"
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
 * connection whose transaction state is not idle is reset on return. */
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
    const char *path;
    const char *body; /* NUL-terminated */
    size_t body_len;
    api_auth auth;
    const char *param[3]; /* path parameters in pattern order */
    int n_param;
    PGconn *db; /* from the pool, for the handler */
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
/* Query parameter value or NULL. */
const char *api__query(api_req *r, const char *name);
/* Parses the body as a JSON object whose members are all in `allowed` (comma-separated);
 * NULL with the problem set otherwise. An empty body is {} when empty_ok. */
cJSON *api__body_object(api_req *r, const char *allowed, bool empty_ok);
/* Strict UTF-8 (no overlongs, no surrogates). */
bool api__utf8_valid(const char *s, size_t n);
/* Accept header asks for CSV. */
bool api__wants_csv(api_req *r);

/* Parses "YYYY-MM" into the month's first instant; false when malformed. */
bool api__parse_month(const char *s, int64_t *start_us);
void api__format_month(int64_t us, char out[8]);
/* limit parameter (1..max, default def); false with problem set. */
bool api__parse_limit(api_req *r, int def, int max, int *out);
/* Opaque cursors: hex of "<int64>|<text>". */
void api__cursor_make(int64_t a, const char *b, char *out, size_t out_len);
bool api__cursor_parse(const char *s, int64_t *a, char *b, size_t b_len);

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

/* Usage responses kept for usage_cache_ms (dashboards poll the same ranges). */
#define API_USAGE_CACHE_SLOTS 1024
typedef struct api_cached {
    char *key;
    char *body;
    size_t len;
    int64_t expires_us;
} api_cached;
api_cached *api__usage_cache(api_server *s, pthread_mutex_t **mu);

/* ---- Auth -------------------------------------------------------------------------------- */
typedef struct api_auth_cache api_auth_cache;
api_auth_cache *api__auth_cache_new(int ttl_ms);
void api__auth_cache_free(api_auth_cache *c);
/* 0 and *out on success; 401-worthy reason in why otherwise (GM_ENOTFOUND), or GM_EDB. */
int api__authenticate(api_auth_cache *c, PGconn *db, const char *token, api_auth *out, char *why,
                      size_t why_len);
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
bool api__valid_tenant(const char *t);
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
void api__h_invoices_list(api_req *r);
void api__h_invoice_get(api_req *r);
void api__h_invoice_finalize(api_req *r);
void api__h_invoice_void(api_req *r);
void api__h_credit_note_create(api_req *r);
void api__h_credit_notes_list(api_req *r);
void api__h_revenue(api_req *r);
void api__h_rerating_run(api_req *r);
void api__h_rerating_runs_list(api_req *r);
void api__h_tenant_invoices(api_req *r);
void api__h_usage(api_req *r);
void api__h_spend(api_req *r);
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
