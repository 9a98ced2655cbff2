/* api: gridmeter's REST API (`gridmeter api`): JSON under /v1 for finance, customers and
 * admins, bearer API keys stored as SHA-256, RFC 9457 problem+json errors, idempotent POSTs,
 * invoices (draft computed on read -> finalized, immutable, gapless number -> void through a
 * credit note), /v1/openapi.json, /healthz, /readyz, /metrics. See docs/api.md.
 *
 * Threads: a gate thread accepts connections and checks each request head before
 * libmicrohttpd (one thread per connection, bounded by max_connections) parses it; handlers
 * use a bounded pool of PostgreSQL connections, authentication a separate pool of two. */
#ifndef GM_API_H
#define GM_API_H

#include "gm_common.h"

#include <libpq-fe.h>

typedef struct gm_api_config {
    const char *db_conninfo;         /* libpq conninfo ("" = PG* environment); role gm_api */
    const char *listen_addr;         /* IPv4 address to bind, "127.0.0.1" */
    int port;                        /* 0: an ephemeral port (see gm_api_port) */
    int db_pool_size;                /* PostgreSQL connections */
    int db_wait_ms;                  /* wait for a free connection before 503 */
    int statement_timeout_ms;        /* per SQL statement */
    int max_connections;             /* HTTP connections at once */
    int per_ip_connections;          /* requests in progress per client address (0: no limit) */
    int health_reserve;              /* more connections for GET/HEAD /healthz and /readyz */
    int conn_timeout_s;              /* idle connection timeout (response phase included) */
    int request_timeout_s;           /* a whole request (head and body) within this of connecting */
    int answer_timeout_s;            /* then its answer delivered within this (slow readers) */
    int keep_alive_requests;         /* requests per connection; 1 (default): every answer closes */
    int64_t max_body_bytes;          /* request body limit (413 above) */
    int rate_per_s;                  /* per API key: sustained requests per second (429 above) */
    int rate_burst;                  /* per API key: burst */
    int auth_fail_burst;             /* per client address: failed authentications in a burst */
    int auth_fail_per_min;           /* per client address: failed authentications per minute */
    int idempotency_retention_hours; /* Idempotency-Key records are kept this long */
    int grace_hours;                 /* finalization allowed grace_hours after the period end */
    int auth_cache_ms;            /* how long a key lookup is cached (revocation delay elsewhere) */
    int usage_cache_ms;           /* usage responses served from memory this long (0: off) */
    int entitlement_max_stale_ms; /* entitlement from the pushed in-memory mirror while its
                                   * freshness proof is at most this old, else from PostgreSQL
                                   * (0: always PostgreSQL, no listener) */
    const char *tls_cert_file;    /* PEM; both set: HTTPS only */
    const char *tls_key_file;
    const char *rater_metrics_url; /* the rater's Prometheus text, for GET /v1/ops/ingest */
    const char *cursor_key_file;   /* the secret (>= 32 bytes) list cursors are signed with */
    const char *cursor_key_previous_file; /* the one before it: its cursors stay valid */
} gm_api_config;

/* Fills the defaults (documented in docs/api.md). */
void gm_api_config_defaults(gm_api_config *cfg);

typedef struct gm_api_server gm_api_server;

/* Starts the server (listening when it returns). NULL on failure with the reason in err. */
gm_api_server *gm_api_start(const gm_api_config *cfg, char *err, size_t err_len);
/* The bound TCP port. */
int gm_api_port(const gm_api_server *s);
/* Stops accepting, waits for the connection threads and frees everything. NULL is fine. */
void gm_api_stop(gm_api_server *s);

/* ---- Keys (also used by `gridmeter apikey`) -----------------------------------------------
 * A key is "gmk_<key id>_<64 hex secret>" (32 random bytes from /dev/urandom); only its
 * SHA-256 is stored. role: "admin", "finance" or "customer" (tenant required, and only
 * there). expires_us 0: no expiry. token (>= 128 bytes) receives the key, shown once. */
#define GM_API_TOKEN_MAX 128
int gm_api_key_create(PGconn *db, const char *role, const char *tenant, const char *name,
                      int64_t expires_us, char *token, char *key_id, size_t key_id_len, char *err,
                      size_t err_len) GM_MUSTCHECK;
/* Revokes a key for good (GM_ENOTFOUND when unknown or already revoked). */
int gm_api_key_revoke(PGconn *db, const char *key_id, char *err, size_t err_len) GM_MUSTCHECK;

/* ---- Self-description (tests) ---------------------------------------------------------- */
#define GM_API_ROLE_ADMIN    1u
#define GM_API_ROLE_FINANCE  2u
#define GM_API_ROLE_CUSTOMER 4u
typedef struct gm_api_route_info {
    const char *method;  /* "GET", "POST", "DELETE" */
    const char *pattern; /* "/v1/invoices/{invoice_id}" (OpenAPI path template) */
    unsigned roles;      /* GM_API_ROLE_* bits; 0: public (no key) */
    bool tenant_scoped;  /* the first path parameter is the tenant */
} gm_api_route_info;
/* Every route the server answers, in table order; *n gets the count. */
const gm_api_route_info *gm_api_routes(size_t *n);
/* The OpenAPI 3.1 document served at /v1/openapi.json (NUL-terminated JSON). */
const char *gm_api_openapi(void);

/* SHA-256 (FIPS 180-4) of len bytes (OpenSSL libcrypto). */
void gm_api_sha256(const void *data, size_t len, uint8_t out[32]);

#endif /* GM_API_H */
