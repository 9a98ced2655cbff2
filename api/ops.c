/* Who-am-I (GET /v1/me: the calling key's role, tenant, id, name and expiry) and the
 * operators' view of the rater (GET /v1/ops/ingest: its Prometheus metrics fetched with
 * libcurl and a short timeout, parsed and returned as JSON). */
#include "api_int.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define US(x) "coalesce((extract(epoch FROM " x ") * 1000000)::bigint, 0)"

static int64_t us_of(const char *s)
{
    int64_t us = 0;
    if (gm_parse_i64(s, strlen(s), &us))
        us = 0;
    return us;
}

void api__h_me(api_req *r)
{
    const char *params[1] = {r->auth.key_id};
    PGresult *res = PQexecParams(r->db,
                                 "SELECT name, " US("created_at") ", " US(
                                     "expires_at") " FROM gm.api_keys WHERE key_id = $1",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "api key");
        PQclear(res);
        return;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        api__problem(r, 401, "unauthorized", "Authorization", "API key %s unknown", r->auth.key_id);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key_id", r->auth.key_id);
    cJSON_AddStringToObject(o, "role", api__role_name(r->auth.role));
    if (r->auth.role == GM_API_ROLE_CUSTOMER)
        cJSON_AddStringToObject(o, "tenant", r->auth.tenant);
    else
        cJSON_AddNullToObject(o, "tenant");
    cJSON_AddStringToObject(o, "name", PQgetvalue(res, 0, 0));
    api__add_time(o, "created_at", us_of(PQgetvalue(res, 0, 1)));
    api__add_time(o, "expires_at", us_of(PQgetvalue(res, 0, 2)));
    api__add_time(o, "server_time", gm_now_us());
    PQclear(res);
    api__json(r, 200, o);
}

/* ---- GET /v1/ops/ingest --------------------------------------------------------------- */

#define OPS_TIMEOUT_MS 2000
#define OPS_MAX_BYTES  (4 << 20)

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    api_buf *b = ud;
    size_t len = size * n;
    if (b->len + len > OPS_MAX_BYTES)
        return 0; /* libcurl stops with CURLE_WRITE_ERROR */
    api__buf_add(b, p, len);
    return len;
}

/* GET url (http or https) through libcurl with an overall timeout; the 200 body into out
 * (NUL-terminated). No redirects, no proxy from the environment, at most 4 MiB. */
static int http_get(const char *url, int timeout_ms, api_buf *out, char *err, size_t err_len)
{
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return gm_fail(err, err_len, GM_ECONFIG,
                       "rater metrics URL \"%.100s\": must be http:// or https://", url);
    CURL *h = curl_easy_init();
    if (!h)
        return gm_fail(err, err_len, GM_EUNAVAIL, "libcurl: cannot create a handle");
    char cerr[CURL_ERROR_SIZE] = "";
    api_buf b = {0};
    struct curl_slist *hdr = curl_slist_append(NULL, "Accept: text/plain");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)OPS_MAX_BYTES);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "gridmeter-api");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK || code != 200) {
        free(b.p);
        if (rc != CURLE_OK)
            return gm_fail(err, err_len, GM_EUNAVAIL, "%s: %s", url,
                           cerr[0] ? cerr : curl_easy_strerror(rc));
        return gm_fail(err, err_len, GM_EUNAVAIL, "%s: answered %ld, want 200", url, code);
    }
    api__buf_add(&b, "", 0); /* NUL-terminated even when empty */
    *out = b;
    return 0;
}

/* A sample value: digits with an optional fraction (what the rater writes); false otherwise. */
static bool plain_number(const char *s, size_t n)
{
    size_t i = 0, dots = 0;
    for (; i < n; i++) {
        if (s[i] == '.' && i && i + 1 < n && !dots++)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return n > 0;
}

/* The value of label `name` in "{a="x",b="y"}" into out; false when absent. */
static bool label(const char *l, size_t n, const char *name, char *out, size_t out_len)
{
    size_t nl = strlen(name);
    for (size_t i = 1; i + nl + 2 < n; i++) { /* l[0] is '{' */
        if ((i == 1 || l[i - 1] == ',') && !strncmp(l + i, name, nl) && l[i + nl] == '=' &&
            l[i + nl + 1] == '"') {
            const char *v = l + i + nl + 2, *e = memchr(v, '"', n - (size_t)(v - l));
            if (!e || (size_t)(e - v) >= out_len)
                return false;
            memcpy(out, v, (size_t)(e - v));
            out[e - v] = 0;
            return true;
        }
    }
    return false;
}

void api__h_ops_ingest(api_req *r)
{
    const char *url = api__config(r->srv)->rater_metrics_url;
    if (!url || !*url)
        url = "http://127.0.0.1:9464/metrics";
    api_buf b = {0};
    char err[512];
    if (http_get(url, OPS_TIMEOUT_MS, &b, err, sizeof err)) {
        gm_warn("api", "msg=\"rater metrics unavailable\" err=\"%s\"", err);
        api__problem(r, 503, "rater-unavailable", NULL, "the rater's metrics are unavailable: %s",
                     err);
        snprintf(r->header_name, sizeof r->header_name, "Retry-After");
        snprintf(r->header_value, sizeof r->header_value, "5");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "source", url);
    api__add_time(o, "fetched_at", gm_now_us());
    cJSON *msgs = cJSON_AddObjectToObject(o, "messages");
    cJSON *lag = cJSON_AddArrayToObject(o, "consumer_lag");
    cJSON *batches = NULL, *csum = NULL, *ccount = NULL;
    bool seen = false;
    for (char *line = b.p, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        if (next)
            next++;
        if (!ll || line[0] == '#')
            continue;
        const char *sp = memchr(line, ' ', ll);
        if (!sp)
            continue;
        const char *lb = memchr(line, '{', (size_t)(sp - line));
        const char *rb = lb ? memchr(lb, '}', ll - (size_t)(lb - line)) : NULL;
        if (lb && rb)
            sp = memchr(rb, ' ', ll - (size_t)(rb - line));
        if (!sp)
            continue;
        size_t name_len = (size_t)((lb && rb ? lb : sp) - line);
        const char *val = sp + 1;
        size_t vl = ll - (size_t)(val - line);
        while (vl && (val[vl - 1] == '\r' || val[vl - 1] == ' '))
            vl--;
        const char *vsp = memchr(val, ' ', vl); /* an optional timestamp follows */
        if (vsp)
            vl = (size_t)(vsp - val);
        if (!plain_number(val, vl))
            continue;
        char v[64];
        snprintf(v, sizeof v, "%.*s", (int)(vl < 63 ? vl : 63), val);
        size_t lbl_len = lb && rb ? (size_t)(rb - lb + 1) : 0;
#define IS(n) (name_len == strlen(n) && !strncmp(line, n, name_len))
        char a[160], p[32];
        if (IS("gridmeter_rater_messages_total") && label(lb, lbl_len, "outcome", a, sizeof a)) {
            seen = true;
            cJSON_DeleteItemFromObjectCaseSensitive(msgs, a);
            cJSON_AddStringToObject(msgs, a, v);
        } else if (IS("gridmeter_rater_consumer_lag") && label(lb, lbl_len, "topic", a, sizeof a) &&
                   label(lb, lbl_len, "partition", p, sizeof p)) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "topic", a);
            cJSON_AddNumberToObject(e, "partition", atoi(p));
            cJSON_AddStringToObject(e, "lag", v);
            cJSON_AddItemToArray(lag, e);
        } else if (IS("gridmeter_rater_batches_total") && !batches) {
            batches = cJSON_CreateString(v);
        } else if (IS("gridmeter_rater_commit_seconds_sum") && !csum) {
            csum = cJSON_CreateString(v);
        } else if (IS("gridmeter_rater_commit_seconds_count") && !ccount) {
            ccount = cJSON_CreateString(v);
        }
#undef IS
    }
    free(b.p);
    if (!seen) {
        cJSON_Delete(o);
        cJSON_Delete(batches);
        cJSON_Delete(csum);
        cJSON_Delete(ccount);
        api__problem(r, 503, "rater-unavailable", NULL,
                     "%s: no gridmeter_rater_messages_total in the answer (not a rater?)", url);
        return;
    }
    cJSON_AddItemToObject(o, "batches", batches ? batches : cJSON_CreateNull());
    cJSON *cs = cJSON_AddObjectToObject(o, "commit_seconds");
    cJSON_AddItemToObject(cs, "sum", csum ? csum : cJSON_CreateNull());
    cJSON_AddItemToObject(cs, "count", ccount ? ccount : cJSON_CreateNull());
    api__json(r, 200, o);
}
