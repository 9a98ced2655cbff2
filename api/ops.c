/* Who-am-I (GET /v1/me: the calling key's role, tenant, id, name and expiry) and the
 * operators' view of the rater (GET /v1/ops/ingest: its Prometheus metrics fetched over plain
 * HTTP/1.1 with a short timeout, parsed and returned as JSON). */
#include "api_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* Splits "http://host[:port]/path" (plain HTTP only). */
static int parse_url(const char *url, char *host, size_t host_len, char *port, size_t port_len,
                     const char **path, char *err, size_t err_len)
{
    if (strncmp(url, "http://", 7))
        return gm_fail(err, err_len, GM_ECONFIG, "rater metrics URL \"%.100s\": must be http://",
                       url);
    const char *h = url + 7, *slash = strchr(h, '/');
    const char *end = slash ? slash : h + strlen(h);
    const char *colon = memchr(h, ':', (size_t)(end - h));
    size_t hl = (size_t)((colon ? colon : end) - h);
    if (!hl || hl >= host_len)
        return gm_fail(err, err_len, GM_ECONFIG, "rater metrics URL \"%.100s\": bad host", url);
    memcpy(host, h, hl);
    host[hl] = 0;
    snprintf(port, port_len, "%.*s", colon ? (int)(end - colon - 1) : 2, colon ? colon + 1 : "80");
    *path = slash ? slash : "/";
    return 0;
}

static int wait_fd(int fd, short ev, int64_t deadline_us)
{
    int64_t left = (deadline_us - gm_mono_us()) / 1000;
    if (left <= 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = ev};
    int n;
    while ((n = poll(&p, 1, (int)left)) < 0 && errno == EINTR)
        ;
    return n;
}

/* Decodes a chunked body in place; false when malformed. */
static bool dechunk(char *b, size_t *len)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *e = NULL;
        unsigned long n = strtoul(b + in, &e, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (!crlf || e == b + in)
            return false;
        in = (size_t)(crlf - b) + 2;
        if (!n)
            break;
        if (n > *len - in) /* never `in + n`: a huge chunk size would wrap (review) */
            return false;
        memmove(b + out, b + in, n);
        out += n, in += n + 2;
        if (in > *len)
            return false;
    }
    *len = out;
    b[out] = 0;
    return true;
}

/* GET url with an overall timeout; the 200 body into out (NUL-terminated). */
static int http_get(const char *url, int timeout_ms, api_buf *out, char *err, size_t err_len)
{
    char host[256], port[16];
    const char *path = NULL;
    int rc = parse_url(url, host, sizeof host, port, sizeof port, &path, err, err_len);
    if (rc)
        return rc;
    int64_t deadline = gm_mono_us() + (int64_t)timeout_ms * 1000;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) || !ai)
        return gm_fail(err, err_len, GM_EUNAVAIL, "%s: cannot resolve %s", url, host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return gm_fail(err, err_len, GM_EUNAVAIL, "%s: socket: %s", url, strerror(errno));
    }
    int c = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (c && errno != EINPROGRESS)
        soerr = errno;
    else if (c && (wait_fd(fd, POLLOUT, deadline) <= 0 ||
                   getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr))
        soerr = soerr ? soerr : ETIMEDOUT;
    if (soerr) {
        close(fd);
        return gm_fail(err, err_len, GM_EUNAVAIL, "%s: connect: %s", url, strerror(soerr));
    }
    char req[600];
    int rl = snprintf(req, sizeof req,
                      "GET %.300s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/plain\r\n"
                      "Connection: close\r\n\r\n",
                      path, host, port);
    for (int sent = 0; sent < rl;) {
        ssize_t n = send(fd, req + sent, (size_t)(rl - sent), MSG_NOSIGNAL);
        if (n > 0) {
            sent += (int)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR) &&
                   wait_fd(fd, POLLOUT, deadline) > 0) {
            continue;
        } else {
            close(fd);
            return gm_fail(err, err_len, GM_EUNAVAIL, "%s: send failed or timed out", url);
        }
    }
    api_buf b = {0};
    for (;;) {
        char tmp[8192];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            api__buf_add(&b, tmp, (size_t)n);
            if (b.len > OPS_MAX_BYTES)
                break;
        } else if (n == 0) {
            break;
        } else if ((errno == EAGAIN || errno == EINTR) && wait_fd(fd, POLLIN, deadline) > 0) {
            continue;
        } else {
            free(b.p);
            close(fd);
            return gm_fail(err, err_len, GM_EUNAVAIL, "%s: no complete answer within %d ms", url,
                           timeout_ms);
        }
    }
    close(fd);
    api__buf_add(&b, "", 1);
    b.len--;
    int status = 0;
    char *body = b.p ? strstr(b.p, "\r\n\r\n") : NULL;
    if (!body || sscanf(b.p, "HTTP/1.%*d %d", &status) != 1 || status != 200 ||
        b.len > OPS_MAX_BYTES) {
        free(b.p);
        return gm_fail(err, err_len, GM_EUNAVAIL, "%s: answered %d, want 200", url, status);
    }
    *body = 0;
    bool chunked = strcasestr(b.p, "\r\nTransfer-Encoding: chunked") != NULL;
    body += 4;
    size_t blen = b.len - (size_t)(body - b.p);
    memmove(b.p, body, blen + 1);
    if (chunked && !dechunk(b.p, &blen)) {
        free(b.p);
        return gm_fail(err, err_len, GM_EUNAVAIL, "%s: malformed chunked body", url);
    }
    out->p = b.p;
    out->len = blen;
    out->cap = b.cap;
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
