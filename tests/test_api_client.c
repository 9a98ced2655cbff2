/* Test support for the api suites: HTTP client over sockets, fixture, ledger filler. */
#include "test_api_client.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

api_fixture F;

static void read_all(int fd, http_resp *out, bool may_be_empty)
{
    size_t cap = 8192, len = 0;
    char *buf = gm_xmalloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            buf = gm_xrealloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fd);
    memset(out, 0, sizeof *out);
    char *sep = strstr(buf, "\r\n\r\n");
    if (may_be_empty && !sep) {
        out->headers = gm_xstrdup("");
        out->body = buf;
        return; /* status 0: the server closed without an answer */
    }
    ck_assert_msg(sep != NULL && len > 12, "no HTTP response (%zu bytes)", len);
    out->status = atoi(buf + 9);
    *sep = 0;
    out->headers = gm_xstrdup(buf);
    out->len = len - (size_t)(sep + 4 - buf);
    out->body = gm_xmalloc(out->len + 1);
    memcpy(out->body, sep + 4, out->len);
    out->body[out->len] = 0;
    free(buf);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to port %d", port);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may answer early (413) and close */
        p += w;
        n -= (size_t)w;
    }
}

void http_raw(int port, const char *raw, size_t len, http_resp *out)
{
    int fd = connect_to(port);
    send_all(fd, raw, len);
    shutdown(fd, SHUT_WR);
    read_all(fd, out, true);
}

void http_do(int port, const char *method, const char *path, const char *token, const char *idem,
             const char *body, const char *extra, http_resp *out)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = 2048 + strlen(path) + blen + (extra ? strlen(extra) : 0);
    char *req = gm_xmalloc(cap);
    int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", method,
                     path);
    if (token)
        n += snprintf(req + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", token);
    if (idem)
        n += snprintf(req + n, cap - (size_t)n, "Idempotency-Key: %s\r\n", idem);
    if (body)
        n += snprintf(req + n, cap - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    if (extra)
        n += snprintf(req + n, cap - (size_t)n, "%s", extra);
    n += snprintf(req + n, cap - (size_t)n, "\r\n");
    if (body) {
        memcpy(req + n, body, blen);
        n += (int)blen;
    }
    int fd = connect_to(F.port && port == 0 ? F.port : port);
    send_all(fd, req, (size_t)n);
    free(req);
    read_all(fd, out, false);
}

void http_free(http_resp *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

bool http_header(const http_resp *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *e = strstr(p, "\r\n");
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            snprintf(buf, len, "%.*s", (int)vl, v);
            return true;
        }
        p = e ? e + 2 : NULL;
    }
    return false;
}

static void import_file(PGconn *c, const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/ratecards/%s", GM_SOURCE_DIR, file);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s", path);
    char *json = gm_xmalloc(1 << 20);
    size_t len = fread(json, 1, (1 << 20) - 1, f);
    fclose(f);
    json[len] = 0;
    char msg[512], err[1024];
    int rc = gm_ledger_import(c, json, len, msg, sizeof msg, err, sizeof err);
    ck_assert_msg(rc == 0, "import %s: %s", file, err);
    free(json);
}

static void key(PGconn *c, const char *role, const char *tenant, int64_t exp, char *out)
{
    char id[40], err[512];
    int rc = gm_api_key_create(c, role, tenant, "test", exp, out, id, sizeof id, err, sizeof err);
    ck_assert_msg(rc == 0, "key: %s", err);
}

/* A stand-in for the rater's /metrics: a listener on an ephemeral port that answers every
 * request with api_fake_rater_text (HTTP 200), or closes without an answer when it is NULL. */
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static char *fake_text;
static int fake_fd = -1;
static pthread_t fake_thread;
static char fake_url[64];

void api_fake_rater_set(const char *text);
void api_fake_rater_set(const char *text)
{
    pthread_mutex_lock(&fake_mu);
    free(fake_text);
    fake_text = text ? gm_xstrdup(text) : NULL;
    pthread_mutex_unlock(&fake_mu);
}

static void *fake_main(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(fake_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char req[4096];
        size_t got = 0;
        while (got + 1 < sizeof req) {
            ssize_t n = recv(c, req + got, sizeof req - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        pthread_mutex_lock(&fake_mu);
        char *text = fake_text ? gm_xstrdup(fake_text) : NULL;
        pthread_mutex_unlock(&fake_mu);
        if (text) {
            char head[256];
            int hl = snprintf(head, sizeof head,
                              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                              strlen(text));
            if (send(c, head, (size_t)hl, MSG_NOSIGNAL) < 0 ||
                send(c, text, strlen(text), MSG_NOSIGNAL) < 0)
                perror("fake rater: send");
            free(text);
        }
        close(c);
    }
}

static void fake_start(void)
{
    fake_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ck_assert(fake_fd >= 0 && bind(fake_fd, (struct sockaddr *)&a, sizeof a) == 0 &&
              listen(fake_fd, 16) == 0 && getsockname(fake_fd, (struct sockaddr *)&a, &al) == 0);
    snprintf(fake_url, sizeof fake_url, "http://127.0.0.1:%d/metrics", ntohs(a.sin_port));
    api_fake_rater_set("gridmeter_rater_messages_total{outcome=\"accepted\"} 0\n");
    ck_assert(pthread_create(&fake_thread, NULL, fake_main, NULL) == 0);
}

static void fake_stop(void)
{
    shutdown(fake_fd, SHUT_RDWR);
    close(fake_fd);
    pthread_join(fake_thread, NULL);
    fake_fd = -1;
    api_fake_rater_set(NULL);
}

void api_fixture_setup(void)
{
    gm_clock_set_us(API_TEST_NOW);
    snprintf(F.conninfo, sizeof F.conninfo, "%s", gm_test_db_create("api"));
    snprintf(F.api_conninfo, sizeof F.api_conninfo, "%s user=gm_api", F.conninfo);
    PGconn *c = gm_test_pg_connect(F.conninfo);
    char err[2048];
    ck_assert_msg(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                    GM_MIGRATE_APPLY, NULL, err, sizeof err) == 0,
                  "migrate: %s", err);
    import_file(c, "list-usd-v1.json");
    import_file(c, "list-usd-v2.json");
    import_file(c, "list-kwd-v1.json");
    import_file(c, "contract-acme.json");
    import_file(c, "contract-gulf.json");
    key(c, "admin", NULL, 0, F.admin);
    key(c, "finance", NULL, 0, F.finance);
    key(c, "customer", "acme", 0, F.acme);
    key(c, "customer", "gulf", 0, F.gulf);
    key(c, "finance", NULL, 0, F.revoked);
    key(c, "finance", NULL, gm_now_us() - GM_US_PER_HOUR, F.expired);
    char rid[40];
    snprintf(rid, sizeof rid, "%.17s", F.revoked + 4);
    ck_assert(gm_api_key_revoke(c, rid, err, sizeof err) == 0);
    PQfinish(c);
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.grace_hours = 0;
    cfg.rate_per_s = 100000;
    cfg.rate_burst = 100000;
    cfg.auth_fail_burst = 100000; /* the suites send many bad keys on purpose */
    cfg.max_body_bytes = 64 * 1024;
    cfg.db_pool_size = 4;
    /* Every answer from PostgreSQL: this server lives in the parent of forked tests, where a
     * listener thread's libpq/krb5 thread-specific data would look leaked to each child's
     * LeakSanitizer. The pushed mirror (the default) is tested by test_entitlement, whose
     * servers start and stop inside each test. */
    cfg.entitlement_max_stale_ms = 0;
    fake_start();
    cfg.rater_metrics_url = fake_url;
    F.server = gm_api_start(&cfg, err, sizeof err);
    ck_assert_msg(F.server != NULL, "api start: %s", err);
    F.port = gm_api_port(F.server);
}

void api_fixture_teardown(void)
{
    gm_api_stop(F.server);
    F.server = NULL;
    fake_stop();
    gm_test_db_drop(F.conninfo);
}

static gm_rating_book *test_book(PGconn *c)
{
    gm_rating_book *b = NULL;
    char err[1024];
    ck_assert_msg(gm_ledger_load_book(c, &b, err, sizeof err) == 0, "book: %s", err);
    return b;
}

void api_add_event(PGconn *c, const char *tenant, const char *model, const char *site,
                   int64_t time_us, const int64_t qty[4])
{
    static int64_t seq;
    gm_rating_book *book = test_book(c);
    gm_usage u = {
        tenant, model, site, time_us, {qty[0], qty[1], qty[2], qty[3]}, GM_RATING_SVC_STANDARD};
    gm_event_price pr;
    char err[512];
    ck_assert_msg(gm_rating_price_event(book, &u, &pr, err, sizeof err) == 0, "price: %s", err);
    char t[40], hour[40], src[64], id[64], sq[24], q[4][24], a[4][64], up[4][48], ver[16], flags[8];
    gm_time_format(time_us, t, sizeof t);
    gm_time_format(time_us - time_us % GM_US_PER_HOUR, hour, sizeof hour);
    seq++;
    snprintf(src, sizeof src, "test/%s/%d", site, (int)getpid());
    snprintf(id, sizeof id, "ev-%lld-%lld", (long long)time_us, (long long)seq);
    snprintf(sq, sizeof sq, "%lld", (long long)seq);
    snprintf(ver, sizeof ver, "%lld", (long long)pr.card_version);
    snprintf(flags, sizeof flags, "%u", pr.flags & 15u);
    for (int d = 0; d < 4; d++) {
        snprintf(q[d], sizeof q[d], "%lld", (long long)qty[d]);
        gm_dec_format(pr.amount_e18[d], 18, a[d], sizeof a[d]);
        gm_dec_format(pr.unit_price_p[d], 12, up[d], sizeof up[d]);
    }
    const char *lp[20] = {tenant,      t,    src,  id,   sq,           site,       model,
                          q[0],        q[1], q[2], q[3], pr.site_tier, pr.card_id, ver,
                          pr.currency, a[0], a[1], a[2], a[3],         flags};
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO gm.ledger (tenant, event_time, source, event_id, seq, site, model,"
        " input_tokens, cached_tokens, output_tokens, gpu_us, site_tier, card_id, card_version,"
        " currency, amount_input, amount_cached, amount_output, amount_gpu, flags, kafka_topic,"
        " kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        " $12, $13, $14, $15, $16, $17, $18, $19, $20, 'test', 0, $5)",
        20, NULL, lp, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "ledger: %s", PQerrorMessage(c));
    PQclear(r);
    static const char *dims[4] = {"input", "cached", "output", "gpu"};
    for (int d = 0; d < 4; d++) {
        if (!qty[d])
            continue;
        const char *cp[11] = {tenant, hour,         site,        model, dims[d], pr.card_id,
                              ver,    pr.site_tier, pr.currency, up[d], q[d]};
        const char *cp2[12] = {cp[0], cp[1], cp[2], cp[3], cp[4],  cp[5],
                               cp[6], cp[7], cp[8], cp[9], cp[10], a[d]};
        r = PQexecParams(c,
                         "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
                         " card_version, site_tier, currency, unit_price, quantity, amount, events)"
                         " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1)"
                         " ON CONFLICT (tenant, hour, site, model, dimension, card_id,"
                         " card_version, variant, unit_price) DO UPDATE SET"
                         " quantity = gm.charges.quantity + EXCLUDED.quantity,"
                         " amount = gm.charges.amount + EXCLUDED.amount,"
                         " events = gm.charges.events + 1",
                         12, NULL, cp2, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "charges: %s", PQerrorMessage(c));
        PQclear(r);
    }
    gm_rating_book_free(book);
}
