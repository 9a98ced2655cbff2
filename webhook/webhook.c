/* Webhook delivery from the transactional outbox: queue per endpoint, sign (OpenSSL HMAC),
 * POST (libcurl), record the answer and schedule retries with exponential backoff.
 *
 * DESIGN. The fact and its event are written by one transaction (the alert and its outbox row,
 * sql/0009), so an event exists exactly when its fact does. Delivery is a separate loop:
 *   1. queue: one gm.webhook_deliveries row per (event, endpoint) that should receive it
 *      (INSERT ... ON CONFLICT DO NOTHING: any number of deliverers may run it);
 *   2. take one due row FOR UPDATE SKIP LOCKED in a transaction, POST, write the outcome
 *      (and the attempt's row in gm.webhook_attempts, sql/0024), commit. The row lock is held
 * across the POST, so two deliverers never send the same delivery at once; a deliverer that dies
 * mid-POST leaves the row due (its transaction rolls back), and another sends it again: at least
 * once, never lost.
 */
#include "gm_webhook.h"

#include "gm_ledger.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void gm_webhook_signature(const char *secret, int64_t t_s, const char *body, size_t body_len,
                          char hex[65])
{
    char prefix[32];
    int pn = snprintf(prefix, sizeof prefix, "%lld.", (long long)t_s);
    size_t n = (size_t)pn + body_len;
    unsigned char *msg = gm_xmalloc(n + 1);
    memcpy(msg, prefix, (size_t)pn);
    memcpy(msg + pn, body, body_len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, n, mac, &mac_len);
    free(msg);
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[64] = '\0';
}

int64_t gm_webhook_backoff_s(int attempts, int64_t base_s, int64_t max_s)
{
    int64_t d = base_s;
    for (int i = 1; i < attempts && d < max_s; i++)
        d *= 2;
    return d < max_s ? d : max_s;
}

bool gm_webhook_url_ok(const char *url, char *why, size_t why_len)
{
    CURLU *u = curl_url();
    if (!u) {
        snprintf(why, why_len, "url: curl_url failed (out of memory)");
        return false;
    }
    char *scheme = NULL, *host = NULL;
    bool ok = false;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc)
        snprintf(why, why_len,
                 "url: must be an absolute http:// or https:// URL with a host, got \"%.200s\""
                 " (%s)",
                 url, curl_url_strerror(uc));
    else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
             (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")))
        snprintf(why, why_len, "url: the scheme must be http or https, got \"%.200s\"", url);
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) || !host[0] ||
             strstr(url, ":///")) /* libcurl reads http:///x as host x; the authority is empty */
        snprintf(why, why_len, "url: must name a host, got \"%.200s\"", url);
    else
        ok = true;
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

void gm_webhook_opts_init(gm_webhook_opts *o)
{
    o->timeout_ms = 10000;
    o->backoff_base_s = 10;
    o->backoff_max_s = 600;
    o->max_deliveries = 100;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* POSTs body to url; returns the HTTP status, or 0 with the reason in why. */
static long post(const char *url, const char *event_id, const char *type, const char *sig,
                 const char *body, long timeout_ms, char *why, size_t why_len)
{
    pthread_once(&curl_once, curl_init);
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(why, why_len, "curl_easy_init failed");
        return 0;
    }
    char hid[256], htype[128], hsig[512];
    snprintf(hid, sizeof hid, "Gridmeter-Event-Id: %s", event_id);
    snprintf(htype, sizeof htype, "Gridmeter-Event-Type: %s", type);
    snprintf(hsig, sizeof hsig, "Gridmeter-Signature: %s", sig);
    struct curl_slist *hdr = NULL;
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, hid);
    hdr = curl_slist_append(hdr, htype);
    hdr = curl_slist_append(hdr, hsig);
    hdr = curl_slist_append(hdr, "Expect:");
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "gridmeter-webhook/1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(why, why_len, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return status;
}

static int exec_ok(PGconn *c, const char *sql, int n, const char *const *p, ExecStatusType want,
                   const char *what, PGresult **out, char *err, size_t err_len)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        int rc = gm_pg_fail(c, r, what, err, err_len);
        PQclear(r);
        return rc;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* Takes one due delivery, sends it and records the outcome, in one transaction. Returns 1
 * when one was handled, 0 when none is due, or an error. */
static int deliver_one(PGconn *c, const gm_webhook_opts *o, const char *pass_start,
                       gm_webhook_stats *st, char *err, size_t err_len)
{
    PGresult *r = NULL;
    int rc = exec_ok(c, "BEGIN", 0, NULL, PGRES_COMMAND_OK, "BEGIN", NULL, err, err_len);
    if (rc)
        return rc;
    rc =
        exec_ok(c,
                "SELECT d.event_id, d.endpoint_id, e.url, e.secret, e.secret_previous,"
                " o.event_type, o.payload::text, d.attempts,"
                " floor(extract(epoch FROM gm.now()))::bigint"
                " FROM gm.webhook_deliveries d JOIN gm.webhook_endpoints e USING (endpoint_id)"
                " JOIN gm.webhook_outbox o USING (event_id)"
                " WHERE d.delivered_at IS NULL AND d.next_attempt_at <= $1::timestamptz"
                " AND e.disabled_at IS NULL ORDER BY d.next_attempt_at, d.event_id LIMIT 1"
                " FOR UPDATE OF d SKIP LOCKED",
                1, &pass_start, PGRES_TUPLES_OK, "taking a due webhook delivery", &r, err, err_len);
    if (rc) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return exec_ok(c, "COMMIT", 0, NULL, PGRES_COMMAND_OK, "COMMIT", NULL, err, err_len);
    }
    const char *event_id = PQgetvalue(r, 0, 0), *body = PQgetvalue(r, 0, 6);
    int64_t t_s = atoll(PQgetvalue(r, 0, 8));
    int attempts = atoi(PQgetvalue(r, 0, 7)) + 1;
    char sig[256], hex[65];
    gm_webhook_signature(PQgetvalue(r, 0, 3), t_s, body, strlen(body), hex);
    int sn = snprintf(sig, sizeof sig, "t=%lld,v1=%s", (long long)t_s, hex);
    if (!PQgetisnull(r, 0, 4)) {
        gm_webhook_signature(PQgetvalue(r, 0, 4), t_s, body, strlen(body), hex);
        snprintf(sig + sn, sizeof sig - (size_t)sn, ",v1=%s", hex);
    }
    char why[CURL_ERROR_SIZE + 320] = "";
    /* a URL the database let through but libcurl's parser refuses is never sent: the attempt
     * records why, and the delivery waits (backoff) until an admin fixes the endpoint */
    long status = gm_webhook_url_ok(PQgetvalue(r, 0, 2), why, sizeof why)
                      ? post(PQgetvalue(r, 0, 2), event_id, PQgetvalue(r, 0, 5), sig, body,
                             o->timeout_ms, why, sizeof why)
                      : 0;
    st->attempted++;
    bool ok = status >= 200 && status < 300;
    if (ok)
        st->delivered++;
    else
        st->failed++;
    if (!ok && status)
        snprintf(why, sizeof why, "HTTP %ld", status);
    char att[16], stat[16], wait[24];
    snprintf(att, sizeof att, "%d", attempts);
    snprintf(stat, sizeof stat, "%ld", status);
    snprintf(wait, sizeof wait, "%lld",
             (long long)gm_webhook_backoff_s(attempts, o->backoff_base_s, o->backoff_max_s));
    const char *p[7] = {event_id,        PQgetvalue(r, 0, 1), att, status ? stat : NULL,
                        ok ? NULL : why, ok ? "t" : "f",      wait};
    /* the outcome on the delivery (no next attempt once delivered) and, in the same statement,
     * the attempt's own row (sql/0024: every attempt is kept, not only the last) */
    rc =
        exec_ok(c,
                "WITH u AS (UPDATE gm.webhook_deliveries SET attempts = $3::int,"
                " last_status = $4::int, last_error = $5,"
                " delivered_at = CASE WHEN $6::bool THEN gm.now() END,"
                " next_attempt_at = CASE WHEN NOT $6::bool"
                "   THEN gm.now() + $7::bigint * interval '1 second' END"
                " WHERE event_id = $1 AND endpoint_id = $2::bigint RETURNING event_id, endpoint_id)"
                " INSERT INTO gm.webhook_attempts (event_id, endpoint_id, attempt, attempted_at,"
                " status, error, delivered)"
                " SELECT event_id, endpoint_id, $3::int, gm.now(), $4::int, $5, $6::bool FROM u",
                7, p, PGRES_COMMAND_OK, "recording a webhook delivery", NULL, err, err_len);
    PQclear(r);
    if (!rc)
        rc = exec_ok(c, "COMMIT", 0, NULL, PGRES_COMMAND_OK, "COMMIT", NULL, err, err_len);
    else
        PQclear(PQexec(c, "ROLLBACK"));
    return rc ? rc : 1;
}

int gm_webhook_deliver(PGconn *c, const gm_webhook_opts *o, gm_webhook_stats *st, char *err,
                       size_t err_len)
{
    gm_webhook_opts def;
    if (!o) {
        gm_webhook_opts_init(&def);
        o = &def;
    }
    memset(st, 0, sizeof *st);
    PGresult *r = NULL;
    int rc = exec_ok(c,
                     "INSERT INTO gm.webhook_deliveries (event_id, endpoint_id)"
                     " SELECT o.event_id, e.endpoint_id FROM gm.webhook_outbox o"
                     " JOIN gm.webhook_endpoints e ON (e.tenant IS NULL OR e.tenant = o.tenant)"
                     " AND e.created_at <= o.created_at AND e.disabled_at IS NULL"
                     " ORDER BY 1, 2 ON CONFLICT DO NOTHING",
                     0, NULL, PGRES_COMMAND_OK, "queueing webhook deliveries", &r, err, err_len);
    if (rc)
        return rc;
    st->queued = (size_t)atoll(PQcmdTuples(r));
    PQclear(r);
    /* A pass sends what was due when it began: each delivery at most once per pass (a
     * failed one is due again at the earliest after its backoff, from a later instant). */
    if ((rc = exec_ok(c, "SELECT gm.clock_now()::text", 0, NULL, PGRES_TUPLES_OK,
                      "reading the clock", &r, err, err_len)))
        return rc;
    char start[64];
    snprintf(start, sizeof start, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    for (int i = 0; i < o->max_deliveries; i++) {
        rc = deliver_one(c, o, start, st, err, err_len);
        if (rc <= 0)
            return rc;
    }
    return 0;
}
