/* Webhooks (webhook/, sql/0009, docs/api.md "Webhooks"): the signature against a reference
 * HMAC-SHA256 written here from RFC 2104 over OpenSSL's SHA-256 (and RFC 4231's test
 * vector), the backoff, and delivery from the outbox of real PostgreSQL to a real local HTTP
 * receiver (libmicrohttpd) that fails, is slow (it keeps the body but answers after the
 * deliverer's timeout) and comes back: every event arrives, receivers deduplicating on the
 * event id see each once, and every signature verifies with either secret of a rotation. */
#include "gm_ledger.h"
#include "gm_webhook.h"
#include "support.h"

#include <microhttpd.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Reference HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || m)) -------------
 * built from plain SHA-256 digests (OpenSSL EVP), not from HMAC(). */
static void sha256(const unsigned char *a, size_t an, const unsigned char *b, size_t bn,
                   unsigned char out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, a, an);
    if (bn)
        EVP_DigestUpdate(c, b, bn);
    EVP_DigestFinal_ex(c, out, &n);
    EVP_MD_CTX_free(c);
}

static void ref_hmac_hex(const char *key, const unsigned char *m, size_t n, char hex[65])
{
    unsigned char k[64] = {0}, ipad[64], opad[64], inner[32], mac[32];
    size_t kl = strlen(key);
    if (kl > 64)
        sha256((const unsigned char *)key, kl, NULL, 0, k);
    else
        memcpy(k, key, kl);
    for (int i = 0; i < 64; i++) {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    sha256(ipad, 64, m, n, inner);
    sha256(opad, 64, inner, 32, mac);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", mac[i]);
}

/* Verifies a Gridmeter-Signature header as a receiver does: some v1 of t=<t>,v1=..,v1=..
 * equals HMAC(secret, "<t>.<body>"). */
static bool verify(const char *header, const char *secret, const char *body)
{
    long long t = 0;
    if (sscanf(header, "t=%lld,", &t) != 1)
        return false;
    char msg[8192];
    int n = snprintf(msg, sizeof msg, "%lld.%s", t, body);
    char want[65];
    ref_hmac_hex(secret, (const unsigned char *)msg, (size_t)n, want);
    for (const char *p = strstr(header, "v1="); p; p = strstr(p + 3, "v1="))
        if (!strncmp(p + 3, want, 64))
            return true;
    return false;
}

START_TEST(test_signature_is_hmac_sha256_of_timestamp_dot_body)
{
    char hex[65];
    /* RFC 4231 test case 2 through the reference */
    ref_hmac_hex("Jefe", (const unsigned char *)"what do ya want for nothing?", 28, hex);
    ck_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    const char *body = "{\"id\":\"budget.acme.2026-11.80\",\"type\":\"budget.threshold_crossed\"}";
    gm_webhook_signature("whsec_0123456789abcdef", 1795000000, body, strlen(body), hex);
    char ref[65], msg[256];
    int n = snprintf(msg, sizeof msg, "1795000000.%s", body);
    ref_hmac_hex("whsec_0123456789abcdef", (const unsigned char *)msg, (size_t)n, ref);
    ck_assert_str_eq(hex, ref);
    /* and as `openssl dgst -sha256 -hmac whsec_0123456789abcdef` computes it */
    ck_assert_str_eq(hex, "771e178da52df500863df4de5732ec418fb49b280adb8ba535fbbd727d5cad8f");
    /* a long key (> 64 bytes) is hashed first, in both */
    const char *longkey = "k123456789012345678901234567890123456789012345678901234567890123456789";
    gm_webhook_signature(longkey, 1, "x", 1, hex);
    ref_hmac_hex(longkey, (const unsigned char *)"1.x", 3, ref);
    ck_assert_str_eq(hex, ref);
    /* the timestamp is signed: another t, another signature */
    gm_webhook_signature("whsec_0123456789abcdef", 1795000001, body, strlen(body), ref);
    ck_assert_str_ne(hex, ref);
}
END_TEST

START_TEST(test_backoff_doubles_up_to_its_maximum)
{
    ck_assert_int_eq(gm_webhook_backoff_s(1, 10, 600), 10);
    ck_assert_int_eq(gm_webhook_backoff_s(2, 10, 600), 20);
    ck_assert_int_eq(gm_webhook_backoff_s(6, 10, 600), 320);
    ck_assert_int_eq(gm_webhook_backoff_s(7, 10, 600), 600);
    ck_assert_int_eq(gm_webhook_backoff_s(1000, 10, 600), 600);
    ck_assert_int_eq(gm_webhook_backoff_s(5, 0, 600), 0);
}
END_TEST

/* ---- A local receiver ------------------------------------------------------------------ */
enum { MODE_DOWN = 0, MODE_FAIL, MODE_SLOW, MODE_OK };
#define MAX_GOT 256

typedef struct {
    char id[96], sig[512], body[2048];
} got;

static struct {
    atomic_int mode;
    pthread_mutex_t mu;
    got got[MAX_GOT];
    int n_got;
} rx = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct {
    char buf[4096];
    size_t n;
} upload;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **state)
{
    (void)cls, (void)url, (void)version;
    if (!*state) {
        *state = calloc(1, sizeof(upload));
        return MHD_YES;
    }
    upload *u = *state;
    if (*data_size) {
        size_t k = *data_size < sizeof u->buf - 1 - u->n ? *data_size : sizeof u->buf - 1 - u->n;
        memcpy(u->buf + u->n, data, k);
        u->n += k;
        *data_size = 0;
        return MHD_YES;
    }
    int mode = atomic_load(&rx.mode);
    if (strcmp(method, "POST") == 0 && mode != MODE_FAIL) {
        /* the slow receiver keeps what it got, then answers too late */
        pthread_mutex_lock(&rx.mu);
        if (rx.n_got < MAX_GOT) {
            got *g = &rx.got[rx.n_got++];
            const char *id =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Gridmeter-Event-Id");
            const char *sig =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Gridmeter-Signature");
            snprintf(g->id, sizeof g->id, "%s", id ? id : "");
            snprintf(g->sig, sizeof g->sig, "%s", sig ? sig : "");
            snprintf(g->body, sizeof g->body, "%.*s", (int)u->n, u->buf);
        }
        pthread_mutex_unlock(&rx.mu);
    }
    if (mode == MODE_SLOW)
        usleep(1500 * 1000);
    int status = mode == MODE_FAIL ? 503 : 200;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void on_done(void *cls, struct MHD_Connection *c, void **state,
                    enum MHD_RequestTerminationCode t)
{
    (void)cls, (void)c, (void)t;
    free(*state);
    *state = NULL;
}

typedef struct fixture {
    char conninfo[256];
    PGconn *c;
} fixture;

static void expect(PGconn *c, const char *sql, const char *want)
{
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(!strcmp(v, want), "%s\n  got:  %s\n  want: %s", sql, v, want);
    free(v);
}

static gm_webhook_stats deliver(PGconn *c)
{
    gm_webhook_opts o;
    gm_webhook_opts_init(&o);
    o.timeout_ms = 500;
    o.backoff_base_s = 0; /* due again at once: the test plays the passing hour */
    gm_webhook_stats st;
    char err[1024];
    ck_assert_msg(gm_webhook_deliver(c, &o, &st, err, sizeof err) == 0, "%s", err);
    return st;
}

/* 3 budget alerts (raised by charges through the triggers) and 2 more events; one tenant
 * endpoint and one global endpoint with a rotated secret. Down (connection refused), then
 * failing (503), then slow (gets the bodies, answers after the timeout), then back: every
 * event reaches each endpoint that should have it, deduplicated by id each exactly once, all
 * signatures verify, and a further pass sends nothing. */
/* Regression (issue 15 review): 'http://' (no host) was accepted while 'HTTP://x' was refused.
 * URLs are parsed with libcurl's URL API: scheme http or https in any case, a host required. */
START_TEST(test_endpoint_urls_need_http_or_https_and_a_host)
{
    const char *good[] = {"http://x", "HTTP://x", "HttpS://hooks.example.com/gridmeter?x=1",
                          "http://user:pw@127.0.0.1:8080/h", "http://[::1]:9/x"};
    const char *bad[] = {"http://", "https://", "http:///x",   "ftp://x",
                         "x",       "",         "http://:80/", "mailto:a@b"};
    char why[512];
    for (size_t i = 0; i < GM_ARRAY_LEN(good); i++)
        ck_assert_msg(gm_webhook_url_ok(good[i], why, sizeof why), "%s: %s", good[i], why);
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++) {
        why[0] = 0;
        ck_assert_msg(!gm_webhook_url_ok(bad[i], why, sizeof why), "%s accepted", bad[i]);
        ck_assert_msg(!strncmp(why, "url: ", 5), "%s: %s", bad[i], why);
    }
}
END_TEST

START_TEST(test_delivery_survives_a_receiver_that_fails_is_slow_and_comes_back)
{
    fixture f;
    snprintf(f.conninfo, sizeof f.conninfo, "%s", gm_test_db_create("webhooks"));
    f.c = gm_test_pg_connect(f.conninfo);
    char err[1024];
    ck_assert_msg(gm_ledger_migrate(f.c, gm_ledger_migrations, gm_ledger_migrations_count,
                                    GM_MIGRATE_APPLY, NULL, err, sizeof err) == 0,
                  "%s", err);
    /* the database's check is the same rule (sql/0026) */
    PGresult *res = PQexec(f.c, "INSERT INTO gm.webhook_endpoints (url, secret) VALUES"
                                " ('http://', 'whsec_0123456789abcdef')");
    ck_assert_int_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    res = PQexec(f.c, "INSERT INTO gm.webhook_endpoints (url, secret, disabled_at) VALUES"
                      " ('HTTP://X.example', 'whsec_0123456789abcdef', '2000-01-01')");
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(f.c));
    PQclear(res);
    int port = gm_test_free_port();
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO gm.webhook_endpoints (tenant, url, secret, created_at) VALUES"
             " ('acme', 'http://127.0.0.1:%d/hooks/acme', 'whsec_acme_0123456789', '2000-01-01'),"
             " (NULL, 'http://127.0.0.1:%d/hooks/all', 'whsec_new_0123456789', '2000-01-01')",
             port, port);
    gm_test_pg_exec(f.c, sql);
    gm_test_pg_exec(f.c, "UPDATE gm.webhook_endpoints SET secret_previous = 'whsec_old_0123456789'"
                         " WHERE tenant IS NULL");
    gm_test_pg_exec(f.c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit) VALUES"
                         " ('acme', 'USD', 1)");
    gm_test_pg_exec(f.c,
                    "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
                    " card_version, site_tier, currency, unit_price, quantity, amount, events)"
                    " VALUES ('acme', '2026-11-05T10:00:00Z', 'fra1', 'm', 'output', 'list', 1,"
                    " 'metro', 'USD', 0.000001, 1, 2, 1)");
    gm_test_pg_exec(f.c, "INSERT INTO gm.webhook_outbox (event_id, event_type, tenant, payload)"
                         " VALUES ('other.1', 'test.event', 'other', '{\"n\":1}'),"
                         " ('acme.2', 'test.event', 'acme', '{\"n\":2,\"s\":\"\\u00e9\"}')");
    /* down: nothing listens */
    atomic_store(&rx.mode, MODE_DOWN);
    gm_webhook_stats st = deliver(f.c);
    /* acme's 4 events x 2 endpoints + other.1 x the global one */
    ck_assert_uint_eq(st.queued, 9);
    ck_assert_uint_eq(st.attempted, 9);
    ck_assert_uint_eq(st.failed, 9);
    expect(f.c,
           "SELECT count(*) FROM audit.webhook_deliveries WHERE last_status IS NULL"
           " AND last_error <> '' AND attempts = 1",
           "9");
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, (uint16_t)port, NULL, NULL,
        on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    ck_assert_ptr_nonnull(d);
    atomic_store(&rx.mode, MODE_FAIL);
    st = deliver(f.c);
    ck_assert_uint_eq(st.queued, 0);
    ck_assert_uint_eq(st.failed, 9);
    expect(f.c, "SELECT count(*) FROM gm.webhook_deliveries WHERE last_status = 503", "9");
    atomic_store(&rx.mode, MODE_SLOW);
    gm_webhook_opts o;
    gm_webhook_opts_init(&o);
    o.timeout_ms = 500;
    o.backoff_base_s = 0;
    o.max_deliveries = 2; /* two slow answers are enough */
    ck_assert_int_eq(gm_webhook_deliver(f.c, &o, &st, err, sizeof err), 0);
    ck_assert_uint_eq(st.failed, 2);
    usleep(1200 * 1000); /* let the slow handlers finish before the mode changes */
    atomic_store(&rx.mode, MODE_OK);
    st = deliver(f.c);
    ck_assert_uint_eq(st.delivered, 9);
    st = deliver(f.c);
    ck_assert_uint_eq(st.attempted, 0);
    MHD_stop_daemon(d);
    expect(f.c,
           "SELECT count(*) || ' ' || min(attempts) || ' ' || max(attempts) FROM"
           " gm.webhook_deliveries WHERE delivered_at IS NOT NULL AND last_status = 200",
           "9 3 4");
    expect(f.c, "SELECT count(*) FROM audit.budget_alerts WHERE delivered_at IS NOT NULL", "3");
    /* regression (issue 15 review): every attempt is kept (audit.webhook_attempts, sql/0024),
     * not only the last; a delivered row has no next attempt (it showed one in the future) */
    expect(f.c,
           "SELECT count(*) FROM gm.webhook_deliveries d WHERE d.attempts <> (SELECT count(*)"
           " FROM audit.webhook_attempts a WHERE a.event_id = d.event_id AND a.endpoint_id ="
           " d.endpoint_id AND a.attempt BETWEEN 1 AND d.attempts)",
           "0");
    expect(f.c,
           "SELECT count(*) FILTER (WHERE attempt = 1 AND status IS NULL AND error <> ''"
           " AND NOT delivered) || ' ' || count(*) FILTER (WHERE attempt = 2 AND status = 503"
           " AND error = 'HTTP 503') || ' ' || count(*) FILTER (WHERE delivered AND status = 200"
           " AND error IS NULL) || ' ' || count(*) FILTER (WHERE url LIKE 'http://127.0.0.1:%')"
           " || ' ' || count(*) FILTER (WHERE attempted_at IS NULL) FROM audit.webhook_attempts",
           "9 9 9 29 0"); /* 9 x (down, 503, 200) + the two slow ones */
    expect(f.c,
           "SELECT count(*) FILTER (WHERE next_attempt_at IS NOT NULL) || ' ' ||"
           " count(*) FILTER (WHERE last_attempt_at IS NULL) FROM audit.webhook_deliveries"
           " WHERE delivered_at IS NOT NULL",
           "0 0");
    /* the receivers' view: by (endpoint path, event id) each once, the slow ones twice */
    pthread_mutex_lock(&rx.mu);
    /* 9 delivered, plus what the slow receiver kept of its two late answers (both, unless the
     * machine was too slow for it to read a body within the 500 ms timeout) */
    ck_assert_msg(rx.n_got >= 9 && rx.n_got <= 11, "%d requests", rx.n_got);
    for (int i = 0; i < rx.n_got; i++) {
        const got *g = &rx.got[i];
        bool acme = verify(g->sig, "whsec_acme_0123456789", g->body);
        bool all_new = verify(g->sig, "whsec_new_0123456789", g->body);
        bool all_old = verify(g->sig, "whsec_old_0123456789", g->body);
        ck_assert_msg(acme != (all_new && all_old), "%s: signed for one endpoint: %s", g->id,
                      g->sig);
        ck_assert_msg(!verify(g->sig, "whsec_wrong_0123456789", g->body), "%s", g->id);
        /* a tampered body does not verify */
        char tampered[2100];
        snprintf(tampered, sizeof tampered, "%s ", g->body);
        ck_assert(
            !verify(g->sig, acme ? "whsec_acme_0123456789" : "whsec_new_0123456789", tampered));
        if (!strcmp(g->id, "acme.2"))
            ck_assert_str_eq(g->body, "{\"n\": 2, \"s\": \"\xc3\xa9\"}");
    }
    /* distinct (event id, endpoint) pairs: the endpoint is told apart by its secret */
    int distinct = 0;
    for (int i = 0; i < rx.n_got; i++) {
        bool seen = false;
        bool ai = verify(rx.got[i].sig, "whsec_acme_0123456789", rx.got[i].body);
        for (int k = 0; k < i && !seen; k++)
            seen = !strcmp(rx.got[k].id, rx.got[i].id) &&
                   ai == verify(rx.got[k].sig, "whsec_acme_0123456789", rx.got[k].body);
        distinct += !seen;
    }
    pthread_mutex_unlock(&rx.mu);
    ck_assert_int_eq(distinct, 9);
    PQfinish(f.c);
    gm_test_db_drop(f.conninfo);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("webhooks");
    TCase *u = tcase_create("unit");
    tcase_add_test(u, test_signature_is_hmac_sha256_of_timestamp_dot_body);
    tcase_add_test(u, test_backoff_doubles_up_to_its_maximum);
    tcase_add_test(u, test_endpoint_urls_need_http_or_https_and_a_host);
    suite_add_tcase(s, u);
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_delivery_survives_a_receiver_that_fails_is_slow_and_comes_back);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
