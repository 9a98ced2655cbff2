/* API keys: creation (random from /dev/urandom, stored as SHA-256), revocation, and request
 * authentication through a small cache (hash -> role, tenant, expiry; ttl auth_cache_ms, so a
 * revocation made by another process takes effect within that time; one made through this
 * server at once). Lookups of keys not in the cache use the authentication pool (two
 * connections of their own), so unauthenticated callers never hold a handler's connection. */
#include "api_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_SLOTS 1024

typedef struct {
    uint8_t hash[32];
    bool used;
    bool revoked;
    int64_t expires_us; /* 0: never */
    int64_t fetched_us;
    api_auth auth;
} cache_entry;

struct api_auth_cache {
    pthread_mutex_t mu;
    int ttl_ms;
    cache_entry e[CACHE_SLOTS];
};

const char *api__role_name(unsigned role)
{
    return role == GM_API_ROLE_ADMIN      ? "admin"
           : role == GM_API_ROLE_FINANCE  ? "finance"
           : role == GM_API_ROLE_CUSTOMER ? "customer"
                                          : "none";
}

unsigned api__role_parse(const char *s)
{
    return !s                       ? 0
           : !strcmp(s, "admin")    ? GM_API_ROLE_ADMIN
           : !strcmp(s, "finance")  ? GM_API_ROLE_FINANCE
           : !strcmp(s, "customer") ? GM_API_ROLE_CUSTOMER
                                    : 0;
}

api_auth_cache *api__auth_cache_new(int ttl_ms)
{
    api_auth_cache *c = gm_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ms = ttl_ms;
    return c;
}

void api__auth_cache_free(api_auth_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void api__auth_cache_forget(api_auth_cache *c, const char *key_id)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (c->e[i].used && !strcmp(c->e[i].auth.key_id, key_id))
            c->e[i].used = false;
    pthread_mutex_unlock(&c->mu);
}

static bool token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < 10 || n > 120 || strncmp(t, "gmk_", 4))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
            return false;
    return true;
}

static int verdict(const cache_entry *e, api_auth *out, char *why, size_t why_len)
{
    if (e->revoked)
        return gm_fail(why, why_len, GM_ENOTFOUND, "API key %s is revoked", e->auth.key_id);
    if (e->expires_us && e->expires_us <= gm_now_us())
        return gm_fail(why, why_len, GM_ENOTFOUND, "API key %s has expired", e->auth.key_id);
    *out = e->auth;
    return 0;
}

int api__authenticate(api_auth_cache *c, api_pool *pool, int wait_ms, bool cache_only,
                      const char *token, api_auth *out, char *why, size_t why_len)
{
    if (!token_ok(token))
        return gm_fail(why, why_len, GM_ENOTFOUND,
                       "Authorization: the bearer token is not a gridmeter API key (gmk_...)");
    cache_entry e = {0};
    gm_api_sha256(token, strlen(token), e.hash);
    size_t slot = ((size_t)e.hash[0] << 8 | e.hash[1]) % CACHE_SLOTS;
    int64_t now = gm_mono_us();
    pthread_mutex_lock(&c->mu);
    if (c->e[slot].used && !memcmp(c->e[slot].hash, e.hash, 32) &&
        now - c->e[slot].fetched_us < (int64_t)c->ttl_ms * 1000) {
        e = c->e[slot];
        pthread_mutex_unlock(&c->mu);
        return verdict(&e, out, why, why_len);
    }
    pthread_mutex_unlock(&c->mu);
    if (cache_only)
        return gm_fail(why, why_len, GM_EFULL, "API key not checked (throttled)");
    PGconn *db = api__pool_get(pool, wait_ms, why, why_len);
    if (!db)
        return GM_EDB;
    const char *params[1] = {(const char *)e.hash};
    int lens[1] = {32}, fmts[1] = {1};
    PGresult *r = PQexecParams(db,
                               "SELECT key_id, role, coalesce(tenant, ''), revoked_at IS NOT NULL,"
                               " coalesce((extract(epoch FROM expires_at) * 1000000)::bigint, 0)"
                               " FROM gm.api_keys WHERE key_hash = $1",
                               1, NULL, params, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        gm_pg_fail(db, r, "api key lookup", why, why_len);
        PQclear(r);
        api__pool_put(pool, db);
        return GM_EDB;
    }
    api__pool_put(pool, db);
    if (PQntuples(r) == 0) {
        PQclear(r);
        return gm_fail(why, why_len, GM_ENOTFOUND, "API key unknown");
    }
    snprintf(e.auth.key_id, sizeof e.auth.key_id, "%s", PQgetvalue(r, 0, 0));
    e.auth.role = api__role_parse(PQgetvalue(r, 0, 1));
    snprintf(e.auth.tenant, sizeof e.auth.tenant, "%s", PQgetvalue(r, 0, 2));
    e.revoked = PQgetvalue(r, 0, 3)[0] == 't';
    if (gm_parse_i64(PQgetvalue(r, 0, 4), strlen(PQgetvalue(r, 0, 4)), &e.expires_us))
        e.expires_us = 1; /* unreadable: treat as expired */
    PQclear(r);
    e.used = true;
    e.fetched_us = now;
    pthread_mutex_lock(&c->mu);
    c->e[slot] = e;
    pthread_mutex_unlock(&c->mu);
    return verdict(&e, out, why, why_len);
}

static int random_hex(char *out, size_t n_bytes, char *err, size_t err_len)
{
    uint8_t buf[64];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || n_bytes > sizeof buf || read(fd, buf, n_bytes) != (ssize_t)n_bytes) {
        if (fd >= 0)
            close(fd);
        return gm_fail(err, err_len, GM_EIO, "/dev/urandom: cannot read %zu bytes", n_bytes);
    }
    close(fd);
    for (size_t i = 0; i < n_bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", buf[i]);
    return 0;
}

int gm_api_key_create(PGconn *db, const char *role, const char *tenant, const char *name,
                      int64_t expires_us, char *token, char *key_id, size_t key_id_len, char *err,
                      size_t err_len)
{
    unsigned rl = api__role_parse(role);
    if (!rl)
        return gm_fail(err, err_len, GM_EINVAL,
                       "role: must be admin, finance or customer, got \"%s\"", role ? role : "");
    if ((rl == GM_API_ROLE_CUSTOMER) != (tenant && *tenant))
        return gm_fail(err, err_len, GM_EINVAL,
                       "tenant: required for role customer and only there");
    if (tenant && *tenant) {
        int rc = gm_ident_check_field(GM_IDENT_TENANT, "tenant", tenant, err, err_len);
        if (rc)
            return rc;
    }
    if (name && strlen(name) > 200)
        return gm_fail(err, err_len, GM_EINVAL, "name: at most 200 characters");
    char id[40] = "k", secret[80];
    int rc = random_hex(id + 1, 8, err, err_len);
    if (rc || (rc = random_hex(secret, 32, err, err_len)))
        return rc;
    snprintf(token, GM_API_TOKEN_MAX, "gmk_%s_%s", id, secret);
    uint8_t hash[32];
    gm_api_sha256(token, strlen(token), hash);
    char exp[40] = "";
    if (expires_us)
        gm_time_format(expires_us, exp, sizeof exp);
    const char *params[6] = {id,
                             (const char *)hash,
                             role,
                             tenant && *tenant ? tenant : NULL,
                             name ? name : "",
                             expires_us ? exp : NULL};
    int lens[6] = {0, 32, 0, 0, 0, 0}, fmts[6] = {0, 1, 0, 0, 0, 0};
    PGresult *r = PQexecParams(db,
                               "INSERT INTO gm.api_keys (key_id, key_hash, role, tenant, name,"
                               " expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                               6, NULL, params, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = gm_pg_fail(db, r, "api key create", err, err_len);
        PQclear(r);
        memset(token, 0, GM_API_TOKEN_MAX);
        return rc;
    }
    PQclear(r);
    snprintf(key_id, key_id_len, "%s", id);
    return 0;
}

int gm_api_key_revoke(PGconn *db, const char *key_id, char *err, size_t err_len)
{
    const char *params[1] = {key_id};
    PGresult *r = PQexecParams(db,
                               "UPDATE gm.api_keys SET revoked_at = gm.now() WHERE key_id = $1"
                               " AND revoked_at IS NULL",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        int rc = gm_pg_fail(db, r, "api key revoke", err, err_len);
        PQclear(r);
        return rc;
    }
    bool hit = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return hit ? 0
               : gm_fail(err, err_len, GM_ENOTFOUND, "API key %.40s: unknown or already revoked",
                         key_id);
}
