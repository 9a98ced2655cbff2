/* The HTTP edge over raw sockets (docs/api.md "Security"): every finding of the outside review
 * (issue 13) sends its exact bytes and checks the whole answer (status, a problem+json body
 * that parses, Connection: close, no second answer) and that nothing changed; then the rules
 * that make each class impossible: one target decoder, one framing decision, the gate's own
 * answers for every malformed head, deadlines, limits with room for health checks, HEAD,
 * authentication first, throttled failures, strict parameters and media types, signed
 * cursors, and idempotency records that commit with their effect and only for final answers.
 * Tests named test_regression_* pin a finding; the others pin a rule. */
#include "api_edge.h"
#include "test_api_client.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define OCT_2026 INT64_C(1790812800000000) /* 2026-10-01T00:00:00Z */
#define NOV_2026 INT64_C(1793491200000000) /* 2026-11-01T00:00:00Z */

static void clock_back(void)
{
    gm_clock_set_us(API_TEST_NOW);
}

/* ---- A raw HTTP exchange ----------------------------------------------------------------*/
typedef struct {
    int status; /* 0: closed without an answer */
    char *head; /* the status line and header fields */
    char *body;
    size_t body_len;
    size_t extra; /* bytes after the first answer (a second answer would be here) */
} raw_resp;

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to %d",
                  port);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may answer early and close */
        p += w;
        n -= (size_t)w;
    }
}

/* Reads to the end of the stream and splits off the first answer. */
static void read_answer(int fd, raw_resp *out, bool head_request)
{
    size_t cap = 1 << 16, len = 0;
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
    if (!sep || len < 12 || strncmp(buf, "HTTP/1.", 7)) {
        out->head = gm_xstrdup("");
        out->body = buf;
        out->body_len = len;
        return;
    }
    out->status = atoi(buf + 9);
    *sep = 0;
    out->head = gm_xstrdup(buf);
    const char *cl = strcasestr(out->head, "\r\nContent-Length:");
    size_t after = len - (size_t)(sep + 4 - buf);
    size_t blen = cl && !head_request ? strtoul(cl + 17, NULL, 10) : 0;
    if (blen > after)
        blen = after;
    out->body = gm_xmalloc(blen + 1);
    memcpy(out->body, sep + 4, blen);
    out->body[blen] = 0;
    out->body_len = blen;
    out->extra = after - blen;
    free(buf);
}

static void raw_n(int port, const char *bytes, size_t n, raw_resp *out)
{
    int fd = dial(port);
    send_all(fd, bytes, n);
    shutdown(fd, SHUT_WR);
    read_answer(fd, out, !strncmp(bytes, "HEAD ", 5));
}

static void raw(int port, const char *bytes, raw_resp *out)
{
    raw_n(port, bytes, strlen(bytes), out);
}

static void raw_free(raw_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static bool header_of(const raw_resp *r, const char *name, char *buf, size_t len)
{
    http_resp h = {.headers = r->head};
    return http_header(&h, name, buf, len);
}

static cJSON *problem_json(const raw_resp *r)
{
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    ck_assert_msg(j != NULL, "not JSON: %.300s", r->body);
    return j;
}

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A refusal as every refusal must look: the status, problem+json that parses (edge E4),
 * the connection closed after exactly one answer; field and a piece of detail when given. */
static void expect_problem(const raw_resp *r, int status, const char *field, const char *detail,
                           const char *what)
{
    ck_assert_msg(r->status == status, "%s: status %d, want %d: %.300s", what, r->status, status,
                  r->body);
    char v[128];
    ck_assert_msg(header_of(r, "Content-Type", v, sizeof v) &&
                      !strcmp(v, "application/problem+json"),
                  "%s: Content-Type", what);
    ck_assert_msg(header_of(r, "Connection", v, sizeof v) && !strcasecmp(v, "close"),
                  "%s: Connection: close", what);
    const char *bad = api__edge_check_problem(r->body, r->body_len, status);
    ck_assert_msg(bad == NULL, "%s: %s: %.300s", what, bad, r->body);
    ck_assert_msg(!strstr(r->body, "<html"), "%s: HTML", what);
    ck_assert_msg(r->extra == 0, "%s: %zu bytes after the answer", what, r->extra);
    cJSON *j = problem_json(r);
    if (field)
        ck_assert_msg(jstr(j, "field") && !strcmp(jstr(j, "field"), field), "%s: field %s, want %s",
                      what, jstr(j, "field") ? jstr(j, "field") : "(none)", field);
    if (detail)
        ck_assert_msg(strstr(jstr(j, "detail"), detail), "%s: detail \"%s\" lacks \"%s\"", what,
                      jstr(j, "detail"), detail);
    cJSON_Delete(j);
}

/* "METHOD target" with Host, the token and extra header lines (each ending in CRLF). */
static char *req(const char *method, const char *target, const char *token, const char *extra)
{
    size_t n = strlen(target) + (extra ? strlen(extra) : 0) + 512;
    char *s = gm_xmalloc(n);
    snprintf(s, n, "%s %s HTTP/1.1\r\nHost: test\r\n%s%s%s%s\r\n", method, target,
             token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
             extra ? extra : "");
    return s;
}

static void exchange(int port, const char *method, const char *target, const char *token,
                     const char *extra, raw_resp *out)
{
    char *s = req(method, target, token, extra);
    raw(port, s, out);
    free(s);
}

static PGconn *db(void)
{
    return gm_test_pg_connect(F.conninfo);
}

static char *sql1(const char *fmt, const char *arg)
{
    char q[1024];
    snprintf(q, sizeof q, fmt, arg);
    PGconn *c = db();
    char *v = gm_test_pg_value(c, q);
    PQfinish(c);
    return v;
}

static gm_api_server *server_with(void (*tune)(gm_api_config *), int *port)
{
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.grace_hours = 0;
    cfg.rate_per_s = 100000;
    cfg.rate_burst = 100000;
    cfg.auth_fail_burst = 100000;
    cfg.db_pool_size = 2;
    if (tune)
        tune(&cfg);
    char err[512];
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    ck_assert_msg(s != NULL, "start: %s", err);
    *port = gm_api_port(s);
    return s;
}

/* ---- Finding 1: a decoded NUL acted on another resource ----------------------------------*/
START_TEST(test_regression_nul_in_a_path_segment_acts_on_no_resource)
{
    PGconn *c = db();
    char token[GM_API_TOKEN_MAX], id[40], err[512];
    ck_assert(gm_api_key_create(c, "customer", "acme", "nul", 0, token, id, sizeof id, err,
                                sizeof err) == 0);
    PQfinish(c);
    char target[128];
    raw_resp r;
    /* DELETE /v1/api-keys/<id>%00x revoked <id> */
    snprintf(target, sizeof target, "/v1/api-keys/%s%%00x", id);
    exchange(F.port, "DELETE", target, F.admin, NULL, &r);
    expect_problem(&r, 400, "path", "control character U+0000", "DELETE key%00x");
    raw_free(&r);
    char *revoked = sql1("SELECT count(*) FROM gm.api_keys WHERE key_id = '%s' AND revoked_at IS "
                         "NULL",
                         id);
    ck_assert_str_eq(revoked, "1");
    free(revoked);
    exchange(F.port, "GET", "/v1/me", token, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    /* /v1/tenants/acme%00/spend was routed to the admin route /v1/tenants/{tenant} */
    exchange(F.port, "GET", "/v1/tenants/acme%00/spend", F.admin, NULL, &r);
    expect_problem(&r, 400, "path", "path segment 3", "tenants/acme%00/spend as admin");
    raw_free(&r);
    exchange(F.port, "GET", "/v1/tenants/acme%00/spend", F.finance, NULL, &r);
    expect_problem(&r, 400, "path", NULL, "tenants/acme%00/spend as finance");
    raw_free(&r);
    /* /v1/me%00/anything answered 200 */
    exchange(F.port, "GET", "/v1/me%00/anything", F.admin, NULL, &r);
    expect_problem(&r, 400, "path", NULL, "me%00/anything");
    raw_free(&r);
    /* ?tenant=acme%00globex was read as acme */
    exchange(F.port, "GET", "/v1/invoices?tenant=acme%00globex", F.finance, NULL, &r);
    expect_problem(&r, 400, "tenant", "control character U+0000", "tenant=acme%00globex");
    raw_free(&r);
    exchange(F.port, "GET", "/v1/invoices?tenant%00=globex", F.finance, NULL, &r);
    expect_problem(&r, 400, NULL, "control character U+0000", "tenant%00=globex");
    raw_free(&r);
}
END_TEST

START_TEST(test_targets_with_controls_bad_utf8_or_dot_segments_are_400)
{
    static const char *const bad[] = {"/v1/tenants/acme%01/spend",
                                      "/v1/tenants/acme%1F/spend",
                                      "/v1/tenants/acme%7f/spend",
                                      "/v1/tenants/acme%C2%80/spend", /* U+0080, a C1 control */
                                      "/v1/tenants/acme%ff/spend",
                                      "/v1/tenants/acme%C0%AF/spend",    /* overlong '/' */
                                      "/v1/tenants/acme%ED%A0%80/spend", /* a surrogate */
                                      "/v1/tenants/acme%2Fx/spend",
                                      "/v1/tenants/%2e%2e/spend",
                                      "/v1/tenants/../v1/me",
                                      "/v1/tenants/./spend",
                                      "/v1/tenants/acme%zz/spend",
                                      "/v1/tenants/acme%4/spend",
                                      "/v1/me#fragment",
                                      "/v1/me\\x",
                                      "/v1/invoices?tenant=%ff",
                                      "/v1/invoices?tenant=a%0a",
                                      "/v1/invoices?tenant=a%C2%85"};
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++) {
        raw_resp r;
        exchange(F.port, "GET", bad[i], F.finance, NULL, &r);
        expect_problem(&r, 400, NULL, NULL, bad[i]);
        raw_free(&r);
    }
    /* raw bytes outside ASCII in the request line: refused by the gate */
    raw_resp r;
    raw(F.port, "GET /v1/tenants/acme\xff/spend HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_problem(&r, 400, "request line", "byte 0xFF", "raw 0xff");
    raw_free(&r);
    /* a decoded space and UTF-8 letters are fine where the route allows them */
    exchange(F.port, "GET", "/v1/tenants/%C3%A9t%C3%A9/spend", F.finance, NULL, &r);
    ck_assert_msg(r.status == 400 || r.status == 404 || r.status == 200, "%d", r.status);
    raw_free(&r);
}
END_TEST

/* ---- Finding 5b: instance carried raw invalid UTF-8 ---------------------------------------*/
START_TEST(test_regression_problem_instance_is_valid_json_for_invalid_utf8)
{
    raw_resp r;
    exchange(F.port, "GET", "/v1/tenants/acme%ff/spend", F.finance, NULL, &r);
    expect_problem(&r, 400, "path", "not valid UTF-8", "acme%ff");
    cJSON *j = problem_json(&r);
    ck_assert_str_eq(jstr(j, "instance"), "/v1/tenants/acme%ff/spend");
    cJSON_Delete(j);
    raw_free(&r);
    /* a 404 of a well-formed path carries its instance too */
    exchange(F.port, "GET", "/v1/invoices/inv_00000000000000000000000000000000", F.finance, NULL,
             &r);
    expect_problem(&r, 404, NULL, NULL, "missing invoice");
    j = problem_json(&r);
    ck_assert_str_eq(jstr(j, "instance"), "/v1/invoices/inv_00000000000000000000000000000000");
    cJSON_Delete(j);
    raw_free(&r);
}
END_TEST

/* ---- Finding 2: a cursor before year 1 gave 500 / SQLSTATE 22008 -------------------------*/
static void hex_of(const char *s, char *out)
{
    for (; *s; s++, out += 2)
        sprintf(out, "%02x", (unsigned char)*s);
    *out = 0;
}

START_TEST(test_regression_cursor_before_year_1_is_400_on_every_list)
{
    char old_style[256], signed_shape[300], path[512];
    hex_of("-62135596800000001|acme", old_style); /* the cursor format the review forged */
    char payload[128];
    hex_of("inv|-62135596800000001|acme", payload);
    snprintf(signed_shape, sizeof signed_shape, "%s.00112233445566778899aabbccddeeff", payload);
    const char *cursors[] = {old_style, signed_shape};
    const char *lists[] = {"/v1/invoices?cursor=%s", "/v1/tenants/acme/invoices?cursor=%s",
                           "/v1/credit-notes?cursor=%s"};
    for (size_t i = 0; i < GM_ARRAY_LEN(lists); i++)
        for (size_t k = 0; k < GM_ARRAY_LEN(cursors); k++) {
            snprintf(path, sizeof path, lists[i], cursors[k]);
            raw_resp r;
            exchange(F.port, "GET", path, F.finance, NULL, &r);
            expect_problem(&r, 400, "cursor", "cursor:", path);
            ck_assert_msg(!strstr(r.body, "SQLSTATE") && !strstr(r.body, "internal"), "%s: %s",
                          path, r.body);
            raw_free(&r);
        }
}
END_TEST

static void write_key(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    fputs(text, f);
    fclose(f);
}

static char key_a[64], key_b[64];
static void tune_key_a(gm_api_config *c)
{
    c->cursor_key_file = key_a;
}
static void tune_key_b(gm_api_config *c)
{
    c->cursor_key_file = key_b;
}
static void tune_key_b_after_a(gm_api_config *c)
{
    c->cursor_key_file = key_b;
    c->cursor_key_previous_file = key_a;
}

/* next_cursor of GET path (limit=1) on port */
static char *first_cursor(int port, const char *path)
{
    http_resp r;
    http_do(port, "GET", path, F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "%s: %d %s", path, r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *nc = cJSON_GetObjectItemCaseSensitive(j, "next_cursor");
    ck_assert_msg(cJSON_IsString(nc), "%s: no next_cursor: %s", path, r.body);
    char *c = gm_xstrdup(nc->valuestring);
    cJSON_Delete(j);
    http_free(&r);
    return c;
}

static int get_status(int port, const char *path)
{
    http_resp r;
    http_do(port, "GET", path, F.finance, NULL, NULL, NULL, &r);
    int st = r.status;
    http_free(&r);
    return st;
}

START_TEST(test_cursors_are_signed_checked_and_survive_rotation_with_the_previous_key)
{
    PGconn *c = db();
    int64_t q[4] = {100, 0, 10, 0};
    api_add_event(c, "curs-a", "llama-3.1-8b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, q);
    api_add_event(c, "curs-b", "llama-3.1-8b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, q);
    api_add_event(c, "curs-c", "llama-3.1-8b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, q);
    PQfinish(c);
    const char *list = "/v1/invoices?period=2026-10&limit=1";
    char *cur = first_cursor(F.port, list), path[1024];
    snprintf(path, sizeof path, "%s&cursor=%s", list, cur);
    ck_assert_int_eq(get_status(F.port, path), 200);
    /* altered: one hex digit of the position changed */
    char *alt = gm_xstrdup(cur);
    alt[4] = alt[4] == '0' ? '1' : '0';
    snprintf(path, sizeof path, "%s&cursor=%s", list, alt);
    raw_resp r;
    exchange(F.port, "GET", path, F.finance, NULL, &r);
    expect_problem(&r, 400, "cursor", "not issued by this server", "altered cursor");
    raw_free(&r);
    /* another list's cursor */
    snprintf(path, sizeof path, "/v1/credit-notes?cursor=%s", cur);
    exchange(F.port, "GET", path, F.finance, NULL, &r);
    expect_problem(&r, 400, "cursor", "another list", "invoice cursor on credit notes");
    raw_free(&r);
    free(alt);
    free(cur);
    /* rotation: A's cursor is refused by a server with only B, accepted with B after A */
    snprintf(key_a, sizeof key_a, "/tmp/gm_cursor_a_%d", (int)getpid());
    snprintf(key_b, sizeof key_b, "/tmp/gm_cursor_b_%d", (int)getpid());
    write_key(key_a, "0123456789abcdef0123456789abcdef-key-A\n");
    write_key(key_b, "fedcba9876543210fedcba9876543210-key-B\n");
    int pa, pb, pba;
    gm_api_server *sa = server_with(tune_key_a, &pa);
    gm_api_server *sb = server_with(tune_key_b, &pb);
    gm_api_server *sba = server_with(tune_key_b_after_a, &pba);
    cur = first_cursor(pa, list);
    snprintf(path, sizeof path, "%s&cursor=%s", list, cur);
    ck_assert_int_eq(get_status(pa, path), 200);
    ck_assert_int_eq(get_status(pb, path), 400);
    ck_assert_int_eq(get_status(pba, path), 200);
    free(cur);
    gm_api_stop(sa);
    gm_api_stop(sb);
    gm_api_stop(sba);
    /* a key shorter than 32 bytes is refused at start */
    write_key(key_a, "short\n");
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.cursor_key_file = key_a;
    char err[512];
    ck_assert(gm_api_start(&cfg, err, sizeof err) == NULL);
    ck_assert_msg(strstr(err, "want 32"), "%s", err);
    unlink(key_a);
    unlink(key_b);
}
END_TEST

/* ---- Finding 3: dribbling headers locked every connection out ----------------------------*/
typedef struct {
    int port;
    bool body; /* dribble the body instead of header lines */
    int status;
    const char *bad; /* what is wrong with the answer (checked in the main thread) */
    char detail[400];
} dribbler;

/* No ck_assert here: a failed check cannot leave another thread (the tests do not fork). */
static void *dribble(void *arg)
{
    dribbler *d = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        d->bad = "connect failed";
        return NULL;
    }
    const char *start = d->body ? "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nContent-Type: "
                                  "application/json\r\nContent-Length: 1000\r\n\r\n{"
                                : "GET /v1/me HTTP/1.1\r\nHost: t\r\n";
    send_all(fd, start, strlen(start));
    for (int i = 0; i < 400; i++) { /* at most 400 x 250 ms; the server ends it far sooner */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 250) > 0)
            break; /* the server answered or closed */
        const char *line = d->body ? " " : "X-Drip: 1\r\n";
        if (send(fd, line, strlen(line), MSG_NOSIGNAL) < 0)
            break;
    }
    raw_resp r;
    read_answer(fd, &r, false);
    d->status = r.status;
    if (r.status) {
        d->bad = api__edge_check_problem(r.body, r.body_len, 408);
        if (!d->bad && (r.extra || !strstr(r.body, "request_timeout_s")))
            d->bad = "a second answer, or no request_timeout_s in the detail";
        snprintf(d->detail, sizeof d->detail, "%.300s", r.body);
    }
    raw_free(&r);
    return NULL;
}

static void tune_short_deadline(gm_api_config *c)
{
    c->request_timeout_s = 2;
    c->per_ip_connections = 4;
}

START_TEST(test_regression_dribbled_requests_get_408_and_health_checks_stay_answered)
{
    int port;
    gm_api_server *s = server_with(tune_short_deadline, &port);
    enum { N = 12 };
    dribbler d[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        d[i] = (dribbler){port, i >= 8, -1, NULL, ""};
        ck_assert(pthread_create(&t[i], NULL, dribble, &d[i]) == 0);
    }
    /* while they dribble: health checks from the same address are answered */
    for (int i = 0; i < 10; i++) {
        raw_resp r;
        exchange(port, "GET", "/healthz", NULL, NULL, &r);
        ck_assert_msg(r.status == 200, "healthz during the dribble: %d %s", r.status, r.body);
        raw_free(&r);
    }
    int answered = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        answered += d[i].status == 408;
        ck_assert_msg(d[i].status == 408 || d[i].status == 0, "dribbler %d: %d", i, d[i].status);
        ck_assert_msg(!d[i].bad, "dribbler %d: %s: %s", i, d[i].bad, d[i].detail);
    }
    ck_assert_int_ge(answered, 8); /* every head dribbler is told why */
    raw_resp r;
    exchange(port, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    gm_api_stop(s);
}
END_TEST

static void tune_two_per_ip(gm_api_config *c)
{
    c->per_ip_connections = 2;
    c->request_timeout_s = 120;
}

START_TEST(test_per_address_limit_answers_503_and_keeps_room_for_health_checks)
{
    int port;
    gm_api_server *s = server_with(tune_two_per_ip, &port);
    /* two requests in progress (head sent, body pending) fill this address's share */
    int hold[2];
    for (int i = 0; i < 2; i++) {
        hold[i] = dial(port);
        const char *p = "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nContent-Type: "
                        "application/json\r\nContent-Length: 50\r\n\r\n{";
        send_all(hold[i], p, strlen(p));
    }
    raw_resp r;
    for (int tries = 0;; tries++) { /* until the gate has handed both over */
        exchange(port, "GET", "/v1/me", F.admin, NULL, &r);
        if (r.status == 503 || tries > 200)
            break;
        raw_free(&r);
        usleep(20000);
    }
    expect_problem(&r, 503, NULL, "per_ip_connections", "third request");
    char v[16];
    ck_assert(header_of(&r, "Retry-After", v, sizeof v));
    raw_free(&r);
    exchange(port, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    exchange(port, "HEAD", "/readyz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    close(hold[0]);
    close(hold[1]);
    for (int tries = 0;; tries++) { /* their threads end and free the share */
        exchange(port, "GET", "/v1/me", F.admin, NULL, &r);
        if (r.status == 200 || tries > 200)
            break;
        raw_free(&r);
        usleep(20000);
    }
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    gm_api_stop(s);
}
END_TEST

/* The deadline counts from the request: the ~6 MB answer must be computed within it on a
 * loaded machine under ASan (2 s was too short there: the fast reader itself got nothing). */
static void tune_short_answer(gm_api_config *c)
{
    c->answer_timeout_s = 6;
}

START_TEST(test_a_slow_reader_is_cut_off_after_the_answer_timeout)
{
    /* an answer larger than the kernel's socket buffers (4 MiB): 93 days x 24 hours x 12
     * sites of hourly usage, about 6 MB of JSON */
    PGconn *c = db();
    gm_test_pg_exec(c, "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
                       " card_version, site_tier, currency, unit_price, quantity, amount, events)"
                       " SELECT 'slowread', h, 's' || lpad(k::text, 2, '0'),"
                       " 'llama-3.1-8b-instruct', 'input', 'list-usd', 1, 'metro', 'USD',"
                       " 0.000000100000, 1000, 0.0001, 1"
                       " FROM generate_series(timestamptz '2026-08-01Z', timestamptz"
                       " '2026-11-01Z' - interval '1 hour', interval '1 hour') h,"
                       " generate_series(1, 12) k");
    PQfinish(c);
    int port;
    gm_api_server *s = server_with(tune_short_answer, &port);
    const char *path = "/v1/tenants/slowread/usage?from=2026-08-01T00:00:00Z&to=2026-11-01T00:00:"
                       "00Z&bucket=hour&group_by=site";
    raw_resp full;
    exchange(port, "GET", path, F.finance, NULL, &full);
    ck_assert_msg(full.status == 200 && full.body_len > (6u << 20) * 3 / 4, "%d, %zu bytes",
                  full.status, full.body_len);
    size_t total = full.body_len;
    raw_free(&full);
    /* a 2 KiB receive window and 256 bytes every 100 ms for 15 s (2.5 x the deadline), then as
     * fast as it comes: what arrives is what the kernel held when the server cut it off */
    int fd = socket(AF_INET, SOCK_STREAM, 0), small = 2048;
    ck_assert(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    char *q = req("GET", path, F.finance, NULL);
    send_all(fd, q, strlen(q));
    free(q);
    size_t got = 0;
    static char buf[1 << 16];
    for (int i = 0;; i++) {
        ssize_t n = recv(fd, buf, i < 150 ? 256 : sizeof buf, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (i < 150)
            usleep(100000);
    }
    close(fd);
    ck_assert_msg(got > 0 && got < total, "the slow reader got %zu bytes of a %zu-byte body", got,
                  total);
    raw_resp r;
    exchange(port, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    gm_api_stop(s);
}
END_TEST

/* ---- Finding 4: request-smuggling preconditions ------------------------------------------*/
START_TEST(test_regression_two_content_lengths_are_400_and_nothing_after_is_read)
{
    char bytes[1024];
    snprintf(bytes, sizeof bytes,
             "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
             "Idempotency-Key: smuggle-1\r\nContent-Type: application/json\r\n"
             "Content-Length: 22\r\nContent-Length: 5\r\n\r\n{\"tenant\":\"smuggle-a\"}"
             "GET /v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n",
             F.admin, F.admin);
    raw_resp r;
    raw(F.port, bytes, &r);
    expect_problem(&r, 400, "Content-Length", "more than once", "two Content-Length");
    raw_free(&r);
    /* the same value twice is refused as well */
    snprintf(bytes, sizeof bytes,
             "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
             "Idempotency-Key: smuggle-2\r\nContent-Type: application/json\r\n"
             "Content-Length: 22\r\nContent-Length: 22\r\n\r\n{\"tenant\":\"smuggle-a\"}",
             F.admin);
    raw(F.port, bytes, &r);
    expect_problem(&r, 400, "Content-Length", NULL, "the same Content-Length twice");
    raw_free(&r);
    char *n = sql1("SELECT count(*) FROM gm.tenants WHERE tenant LIKE '%s'", "smuggle%");
    ck_assert_str_eq(n, "0");
    free(n);
    /* a valid request followed by a second one: only the first is answered */
    raw(F.port,
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n",
        &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(r.extra == 0, "a pipelined request was answered (%zu bytes)", r.extra);
    raw_free(&r);
}
END_TEST

/* ---- Keep-alive (keep_alive_requests > 1): what a kept connection may and may not do -----*/
/* Reads one answer (head, and a body of its Content-Length) from a connection left open:
 * status 0 when the server closed it or sent nothing within 5 s. */
static void read_one(int fd, raw_resp *out)
{
    memset(out, 0, sizeof *out);
    char buf[65536];
    size_t len = 0, need = 0;
    char *sep = NULL;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, sizeof buf - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        if (!sep && (sep = strstr(buf, "\r\n\r\n"))) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            need = (size_t)(sep + 4 - buf) + (cl && cl < sep ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (sep && len >= need)
            break;
    }
    if (!sep || strncmp(buf, "HTTP/1.", 7)) {
        out->head = gm_xstrdup("");
        out->body = gm_xstrdup("");
        return;
    }
    out->status = atoi(buf + 9);
    *sep = 0;
    out->head = gm_xstrdup(buf);
    size_t off = (size_t)(sep + 4 - buf);
    out->body_len = len > off ? (need > len ? len : need) - off : 0;
    out->body = gm_xmalloc(out->body_len + 1);
    memcpy(out->body, sep + 4, out->body_len);
    out->body[out->body_len] = 0;
    out->extra = len > need ? len - need : 0;
}

/* true when the server closed the connection (end of stream or reset) within 5 s */
static bool closed_by_server(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 5000) <= 0)
        return false;
    char c;
    return recv(fd, &c, 1, 0) <= 0;
}

static bool says_close(const raw_resp *r)
{
    char v[64];
    return header_of(r, "Connection", v, sizeof v) && !strcasecmp(v, "close");
}

static void tune_keep_alive_3(gm_api_config *c)
{
    c->keep_alive_requests = 3;
    c->request_timeout_s = 2;
}

START_TEST(test_keep_alive_serves_n_requests_then_closes_and_checks_each_request)
{
    int port;
    gm_api_server *s = server_with(tune_keep_alive_3, &port);
    char *get = req("GET", "/v1/me", F.admin, NULL);
    /* 1. three requests on one connection; the third answer closes it */
    int fd = dial(port);
    for (int i = 1; i <= 3; i++) {
        send_all(fd, get, strlen(get));
        raw_resp r;
        read_one(fd, &r);
        ck_assert_msg(r.status == 200, "request %d on the kept connection: %d", i, r.status);
        ck_assert_msg(says_close(&r) == (i == 3), "request %d: Connection: close %s", i,
                      i == 3 ? "missing on the last" : "on a kept one");
        raw_free(&r);
    }
    ck_assert_msg(closed_by_server(fd), "the connection stays open after keep_alive_requests");
    close(fd);
    /* 2. a second request with two Content-Lengths (libmicrohttpd's parse, not the gate's):
     *    400 naming the field, the connection closed, the request after it never run */
    fd = dial(port);
    send_all(fd, get, strlen(get));
    raw_resp r;
    read_one(fd, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(!says_close(&r));
    raw_free(&r);
    char bytes[1024];
    snprintf(bytes, sizeof bytes,
             "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
             "Idempotency-Key: ka-smuggle-1\r\nContent-Type: application/json\r\n"
             "Content-Length: 25\r\nContent-Length: 5\r\n\r\n{\"tenant\":\"ka-smuggle-a\"}"
             "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
             "Idempotency-Key: ka-smuggle-2\r\nContent-Type: application/json\r\n"
             "Content-Length: 25\r\n\r\n{\"tenant\":\"ka-smuggle-b\"}",
             F.admin, F.admin);
    send_all(fd, bytes, strlen(bytes));
    read_one(fd, &r);
    ck_assert_msg(r.status == 400, "two Content-Lengths on a kept connection: %d %.200s", r.status,
                  r.body);
    ck_assert(says_close(&r));
    cJSON *j = problem_json(&r);
    ck_assert_msg(jstr(j, "field") && !strcmp(jstr(j, "field"), "Content-Length"), "field");
    cJSON_Delete(j);
    ck_assert_msg(r.extra == 0, "a second answer followed (%zu bytes)", r.extra);
    raw_free(&r);
    ck_assert(closed_by_server(fd));
    close(fd);
    /* 3. Content-Length with Transfer-Encoding on a kept connection: 400 and closed */
    fd = dial(port);
    send_all(fd, get, strlen(get));
    read_one(fd, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    snprintf(bytes, sizeof bytes,
             "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
             "Idempotency-Key: ka-smuggle-3\r\nContent-Type: application/json\r\n"
             "Content-Length: 25\r\nTransfer-Encoding: chunked\r\n\r\n"
             "19\r\n{\"tenant\":\"ka-smuggle-c\"}\r\n0\r\n\r\n",
             F.admin);
    send_all(fd, bytes, strlen(bytes));
    read_one(fd, &r);
    ck_assert_msg(r.status == 400, "Content-Length with Transfer-Encoding, kept: %d", r.status);
    ck_assert(says_close(&r));
    raw_free(&r);
    ck_assert(closed_by_server(fd));
    close(fd);
    char *n = sql1("SELECT count(*) FROM gm.tenants WHERE tenant LIKE '%s'", "ka-smuggle%");
    ck_assert_str_eq(n, "0");
    free(n);
    /* 4. a NUL in a later request's target is refused as in the first */
    fd = dial(port);
    send_all(fd, get, strlen(get));
    read_one(fd, &r);
    raw_free(&r);
    char *nul = req("GET", "/v1/me%00/x", F.admin, NULL);
    send_all(fd, nul, strlen(nul));
    free(nul);
    read_one(fd, &r);
    ck_assert_msg(r.status == 400, "NUL in a kept connection's target: %d", r.status);
    raw_free(&r);
    close(fd);
    /* 5. a health check's connection is never kept (it used the reserve) */
    fd = dial(port);
    const char *hz = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(fd, hz, strlen(hz));
    read_one(fd, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(says_close(&r), "a health check's connection was kept");
    raw_free(&r);
    close(fd);
    /* 6. idle past request_timeout_s after an answer: closed without an answer */
    fd = dial(port);
    send_all(fd, get, strlen(get));
    read_one(fd, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(!says_close(&r));
    raw_free(&r);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 6000) == 1, "an idle kept connection outlived request_timeout_s");
    char c;
    ck_assert_msg(recv(fd, &c, 1, 0) <= 0, "an idle kept connection got bytes");
    close(fd);
    /* 7. pipelining (a second request sent before the first answer): the first answer
     *    closes the connection at once, the second request is not run (the client resends) */
    fd = dial(port);
    char two[1024];
    snprintf(two, sizeof two, "%s%s", get, get);
    send_all(fd, two, strlen(two));
    int64_t t0 = gm_mono_us();
    read_one(fd, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(says_close(&r), "a pipelined connection was kept");
    raw_free(&r);
    ck_assert(closed_by_server(fd));
    ck_assert_msg(gm_mono_us() - t0 < 1500 * 1000,
                  "the pipelined connection waited for a deadline");
    close(fd);
    free(get);
    gm_api_stop(s);
}
END_TEST

START_TEST(test_by_default_every_answer_closes_the_connection)
{
    char *get = req("GET", "/v1/me", F.admin, NULL);
    int fd = dial(F.port);
    send_all(fd, get, strlen(get));
    raw_resp r;
    read_one(fd, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(says_close(&r), "keep-alive offered without keep_alive_requests");
    raw_free(&r);
    ck_assert(closed_by_server(fd));
    close(fd);
    free(get);
}
END_TEST

START_TEST(test_regression_transfer_encoding_is_refused_with_or_without_content_length)
{
    struct {
        const char *fields;
        int status;
    } c[] = {{"Content-Length: 22\r\nTransfer-Encoding: chunked\r\n", 400},
             {"Transfer-Encoding: chunked\r\nContent-Length: 22\r\n", 400},
             {"Transfer-Encoding: chunked\r\n", 411},
             {"Transfer-Encoding: gzip, chunked\r\n", 501},
             {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400}};
    for (size_t i = 0; i < GM_ARRAY_LEN(c); i++) {
        char bytes[1024];
        snprintf(bytes, sizeof bytes,
                 "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                 "Idempotency-Key: te-%zu\r\nContent-Type: application/json\r\n%s\r\n"
                 "16\r\n{\"tenant\":\"smuggle-b\"}\r\n0\r\n\r\n",
                 F.admin, i, c[i].fields);
        raw_resp r;
        raw(F.port, bytes, &r);
        expect_problem(&r, c[i].status, "Transfer-Encoding", NULL, c[i].fields);
        raw_free(&r);
    }
    char *n = sql1("SELECT count(*) FROM gm.tenants WHERE tenant = '%s'", "smuggle-b");
    ck_assert_str_eq(n, "0");
    free(n);
}
END_TEST

/* ---- Finding 5: libmicrohttpd's HTML pages, and no answer at all -------------------------*/
START_TEST(test_regression_malformed_heads_get_problem_json_not_html)
{
    char *long_target = gm_xmalloc(9100), *big_field = gm_xmalloc(66000);
    snprintf(long_target, 9100, "GET /v1/me?x=");
    memset(long_target + 13, 'a', 9000);
    snprintf(long_target + 9013, 87, " HTTP/1.1\r\nHost: t\r\n\r\n");
    snprintf(big_field, 66000, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    size_t bl = strlen(big_field);
    memset(big_field + bl, 'a', 65000);
    snprintf(big_field + bl + 65000, 66000 - bl - 65000, "\r\n\r\n");
    struct {
        const char *bytes;
        int status;
        const char *field;
    } c[] = {
        {"POST /v1/tenants HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400,
         "Content-Length"},
        {"POST /v1/tenants HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400,
         "Content-Length"},
        {"POST /v1/tenants HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
         400, "Content-Length"},
        {"POST /v1/tenants HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413,
         "Content-Length"},
        {long_target, 414, NULL},
        {big_field, 431, NULL},
        {"GET /v1/me\r\n\r\n", 400, "HTTP-version"},
        {"GET /v1/me HTTP/2.0\r\nHost: t\r\n\r\n", 505, "HTTP-version"},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP-version"},
        {"GET /v1/me HTTP/0.9\r\n\r\n", 505, "HTTP-version"},
        {"GET /v1/me HTTP/1.x\r\nHost: t\r\n\r\n", 400, "HTTP-version"},
        {"GET /healthz HTTP/1.1\nHost: t\n\n", 400, NULL},
        {"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "request line"},
        {"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n", 400, NULL},
        {"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400, NULL},
        {"GET /healthz HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n", 400, NULL},
        {"GET /healthz HTTP/1.1\r\nX-A: a\x01z\r\nHost: t\r\n\r\n", 400, NULL},
        {"GET /healthz HTTP/1.1\r\n\r\n", 400, "Host"},
        {"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host"},
        {"GET http://test/healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "request-target"},
        {"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 400, "request-target"},
        {"\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "request line"},
        {"GARBAGE\r\n\r\n", 400, NULL},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "request line"},
        {"GET /healthz HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n", 417, "Expect"},
        {"GET /healthz HTTP/1.1\r\nHost: t\r\n", 400, "request head"}, /* then the client's
                                                                           FIN */
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(c); i++) {
        raw_resp r;
        raw(F.port, c[i].bytes, &r);
        char what[80];
        snprintf(what, sizeof what, "case %zu (%.40s)", i, c[i].bytes);
        for (char *p = what; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                *p = '.';
        expect_problem(&r, c[i].status, c[i].field, NULL, what);
        raw_free(&r);
    }
    free(long_target);
    free(big_field);
    /* a method that is a valid token but not ours, on a public path: 405 with Allow */
    raw_resp r;
    raw(F.port, "get /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_problem(&r, 405, NULL, NULL, "lower-case get");
    char allow[64];
    ck_assert(header_of(&r, "Allow", allow, sizeof allow));
    ck_assert_str_eq(allow, "GET, HEAD");
    raw_free(&r);
    /* the server is still healthy */
    exchange(F.port, "GET", "/readyz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
}
END_TEST

/* ---- Finding 6: the smaller ones --------------------------------------------------------*/
START_TEST(test_regression_head_answers_get_routes_health_included)
{
    const char *paths[] = {"/healthz", "/readyz", "/v1/openapi.json"};
    for (size_t i = 0; i < GM_ARRAY_LEN(paths); i++) {
        raw_resp g, h;
        exchange(F.port, "GET", paths[i], NULL, NULL, &g);
        exchange(F.port, "HEAD", paths[i], NULL, NULL, &h);
        ck_assert_msg(g.status == 200 && h.status == 200, "%s: GET %d HEAD %d", paths[i], g.status,
                      h.status);
        char cl[32];
        ck_assert(header_of(&h, "Content-Length", cl, sizeof cl));
        ck_assert_msg((size_t)atol(cl) == g.body_len, "%s: HEAD Content-Length %s, GET body %zu",
                      paths[i], cl, g.body_len);
        ck_assert_msg(h.body_len == 0 && h.extra == 0, "%s: HEAD carried a body", paths[i]);
        raw_free(&g);
        raw_free(&h);
    }
    raw_resp r;
    exchange(F.port, "HEAD", "/v1/me", F.admin, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(r.body_len == 0 && r.extra == 0);
    raw_free(&r);
    exchange(F.port, "HEAD", "/v1/me", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    ck_assert(r.extra == 0);
    raw_free(&r);
}
END_TEST

START_TEST(test_regression_authentication_comes_before_the_method_and_route_checks)
{
    raw_resp r;
    exchange(F.port, "PUT", "/v1/tenants", NULL, NULL, &r);
    expect_problem(&r, 401, "Authorization", NULL, "PUT /v1/tenants without a key");
    raw_free(&r);
    exchange(F.port, "PUT", "/v1/tenants", F.admin, NULL, &r);
    expect_problem(&r, 405, NULL, NULL, "PUT /v1/tenants as admin");
    char allow[64];
    ck_assert(header_of(&r, "Allow", allow, sizeof allow));
    ck_assert_str_eq(allow, "GET, HEAD, POST");
    raw_free(&r);
    exchange(F.port, "DELETE", "/v1/invoices", NULL, NULL, &r);
    expect_problem(&r, 401, NULL, NULL, "DELETE /v1/invoices without a key");
    raw_free(&r);
    exchange(F.port, "GET", "/v1/no-such-thing", NULL, NULL, &r);
    expect_problem(&r, 401, NULL, NULL, "unknown /v1 path without a key");
    raw_free(&r);
    exchange(F.port, "GET", "/v1/no-such-thing", F.admin, NULL, &r);
    expect_problem(&r, 404, NULL, NULL, "unknown /v1 path as admin");
    raw_free(&r);
    exchange(F.port, "POST", "/healthz", NULL, NULL, &r);
    expect_problem(&r, 405, NULL, NULL, "POST /healthz (public)");
    raw_free(&r);
    exchange(F.port, "GET", "/favicon.ico", NULL, NULL, &r);
    expect_problem(&r, 404, NULL, NULL, "outside /v1");
    raw_free(&r);
}
END_TEST

static void tune_auth_throttle(gm_api_config *c)
{
    c->auth_fail_burst = 3;
    c->auth_fail_per_min = 1;
    c->auth_cache_ms = 3600 * 1000; /* the admin key stays verified through the test */
}

START_TEST(test_regression_failed_authentications_are_throttled_per_address)
{
    int port;
    gm_api_server *s = server_with(tune_auth_throttle, &port);
    raw_resp r;
    exchange(port, "GET", "/v1/me", F.admin, NULL, &r); /* verified before the attack */
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    for (int i = 0; i < 3; i++) {
        char tok[128];
        snprintf(tok, sizeof tok, "gmk_k%016d_%064d", i, i);
        exchange(port, "GET", "/v1/me", tok, NULL, &r);
        expect_problem(&r, 401, "Authorization", NULL, "a random key");
        raw_free(&r);
    }
    exchange(port, "GET", "/v1/me", "gmk_k0000000000000009_0000", NULL, &r);
    expect_problem(&r, 429, "Authorization", "failed authentications", "fourth random key");
    char v[16];
    ck_assert(header_of(&r, "Retry-After", v, sizeof v) && atoi(v) >= 1);
    raw_free(&r);
    exchange(port, "GET", "/v1/me", NULL, NULL, &r);
    expect_problem(&r, 429, NULL, NULL, "no key while throttled");
    raw_free(&r);
    /* a valid key not yet verified is not checked either; one already verified still works */
    exchange(port, "GET", "/v1/me", F.finance, NULL, &r);
    expect_problem(&r, 429, NULL, NULL, "an unverified valid key while throttled");
    raw_free(&r);
    exchange(port, "GET", "/v1/me", F.admin, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    /* public routes are not affected */
    exchange(port, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    gm_api_stop(s);
}
END_TEST

START_TEST(test_regression_unknown_and_malformed_parameters_are_400)
{
    struct {
        const char *target, *field;
    } c[] = {{"/v1/invoices?=1", "query"},
             {"/v1/invoices?limit", "limit"},
             {"/v1/invoices?tenant%00=globex", NULL},
             {"/v1/invoices?limit=1&&status=draft", "query"},
             {"/v1/invoices?limit=1&", "query"},
             {"/v1/invoices?&limit=1", "query"},
             {"/v1/invoices?limit=5&limit=6", "limit"},
             {"/v1/invoices?foo=1", "foo"},
             {"/v1/me?x=1", "x"},
             {"/healthz?verbose=1", "verbose"}};
    for (size_t i = 0; i < GM_ARRAY_LEN(c); i++) {
        raw_resp r;
        exchange(F.port, "GET", c[i].target, F.finance, NULL, &r);
        expect_problem(&r, 400, c[i].field, NULL, c[i].target);
        raw_free(&r);
    }
    raw_resp r;
    exchange(F.port, "GET", "/v1/invoices?", F.finance, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    char bytes[512];
    snprintf(bytes, sizeof bytes,
             "GET /v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nContent-Length: "
             "2\r\n\r\n{}",
             F.admin);
    raw(F.port, bytes, &r);
    expect_problem(&r, 400, "body", "take no body", "GET with a body");
    raw_free(&r);
}
END_TEST

START_TEST(test_regression_content_type_must_be_application_json)
{
    struct {
        const char *ct;
        int status;
    } c[] = {{"application/jsonx", 415},
             {"application/json; charset=latin1", 415},
             {"text/json", 415},
             {NULL, 415},
             {"application/json; charset=utf-8", 201},
             {"Application/JSON", 201}};
    for (size_t i = 0; i < GM_ARRAY_LEN(c); i++) {
        char bytes[1024], body[64];
        int bl = snprintf(body, sizeof body, "{\"tenant\":\"ctype-%zu\"}", i);
        snprintf(bytes, sizeof bytes,
                 "POST /v1/tenants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                 "Idempotency-Key: ctype-%zu\r\n%s%s%sContent-Length: %d\r\n\r\n%s",
                 F.admin, i, c[i].ct ? "Content-Type: " : "", c[i].ct ? c[i].ct : "",
                 c[i].ct ? "\r\n" : "", bl, body);
        raw_resp r;
        raw(F.port, bytes, &r);
        if (c[i].status == 201)
            ck_assert_msg(r.status == 201, "%s: %d %s", c[i].ct, r.status, r.body);
        else
            expect_problem(&r, 415, "Content-Type", NULL, c[i].ct ? c[i].ct : "no Content-Type");
        raw_free(&r);
    }
    char *n = sql1("SELECT count(*) FROM gm.tenants WHERE tenant LIKE '%s'", "ctype-%");
    ck_assert_str_eq(n, "2");
    free(n);
}
END_TEST

START_TEST(test_regression_period_1970_01_filters_invoices)
{
    PGconn *c = db();
    int64_t q[4] = {100, 0, 10, 0};
    api_add_event(c, "p1970", "llama-3.1-8b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, q);
    PQfinish(c);
    http_resp r;
    http_do(F.port, "GET", "/v1/invoices?period=2026-10", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"p1970\""));
    http_free(&r);
    http_do(F.port, "GET", "/v1/invoices?period=1970-01", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"items\":[]") != NULL, "1970-01 lists invoices: %.300s", r.body);
    http_free(&r);
    http_do(F.port, "GET", "/v1/invoices?period=1969-12", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 400);
    http_free(&r);
}
END_TEST

static char *draft_id(int port, const char *tenant, const char *period)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/invoices?tenant=%s&period=%s", tenant, period);
    http_resp r;
    http_do(port, "GET", path, F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "list: %d %s", r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0);
    ck_assert_msg(it != NULL, "no invoice for %s %s", tenant, period);
    char *id = gm_xstrdup(jstr(it, "invoice_id"));
    cJSON_Delete(j);
    http_free(&r);
    return id;
}

static int post_on(int port, const char *path, const char *idem, const char *body, http_resp *out)
{
    http_do(port, "POST", path, F.finance, idem, body, NULL, out);
    return out->status;
}

START_TEST(test_regression_credit_note_amount_has_at_most_the_currency_digits)
{
    PGconn *c = db();
    int64_t q[4] = {2000000, 0, 1000000, 0}, big[4] = {2000000000, 0, 1000000000, 0};
    api_add_event(c, "cn-usd", "llama-3.1-70b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, q);
    /* gulf (KWD, 3 digits) has 25.500 of prepaid credit: bill more than that */
    api_add_event(c, "gulf", "llama-3.1-70b-instruct", "fra1", OCT_2026 + 2 * GM_US_PER_DAY, big);
    PQfinish(c);
    struct {
        const char *tenant, *bad, *good;
    } t[] = {{"cn-usd", "0.011", "0.01"}, {"gulf", "0.0011", "0.001"}};
    for (size_t i = 0; i < GM_ARRAY_LEN(t); i++) {
        char *id = draft_id(F.port, t[i].tenant, "2026-10"), path[160], idem[64], body[128];
        http_resp r;
        snprintf(path, sizeof path, "/v1/invoices/%s/finalize", id);
        snprintf(idem, sizeof idem, "cn-fin-%zu", i);
        ck_assert_msg(post_on(F.port, path, idem, "{}", &r) == 200, "finalize %s: %d %s",
                      t[i].tenant, r.status, r.body);
        http_free(&r);
        snprintf(path, sizeof path, "/v1/invoices/%s/credit-notes", id);
        snprintf(body, sizeof body, "{\"amount\":\"%s\",\"reason\":\"digits\"}", t[i].bad);
        snprintf(idem, sizeof idem, "cn-bad-%zu", i);
        post_on(F.port, path, idem, body, &r);
        ck_assert_msg(r.status == 422 && strstr(r.body, "\"field\":\"amount\"") &&
                          strstr(r.body, "minor units"),
                      "%s %s: %d %s", t[i].tenant, t[i].bad, r.status, r.body);
        http_free(&r);
        snprintf(body, sizeof body, "{\"amount\":\"%s\",\"reason\":\"digits\"}", t[i].good);
        snprintf(idem, sizeof idem, "cn-good-%zu", i);
        ck_assert_msg(post_on(F.port, path, idem, body, &r) == 201, "%s %s: %d %s", t[i].tenant,
                      t[i].good, r.status, r.body);
        http_free(&r);
        free(id);
    }
    char *n = sql1("SELECT count(*) FROM gm.credit_notes WHERE reason = '%s'", "digits");
    ck_assert_str_eq(n, "2");
    free(n);
}
END_TEST

/* ---- Idempotency: final answers only, in the effect's transaction, with a retention ------*/
static void tune_grace_72(gm_api_config *c)
{
    c->grace_hours = 72;
}

START_TEST(test_regression_a_refused_post_is_not_replayed_after_the_window_opens)
{
    PGconn *c = db();
    int64_t q[4] = {1000, 0, 100, 0};
    api_add_event(c, "grace-idem", "llama-3.1-8b-instruct", "fra1", OCT_2026 + GM_US_PER_DAY, q);
    PQfinish(c);
    int port;
    gm_api_server *s = server_with(tune_grace_72, &port);
    char *id = draft_id(port, "grace-idem", "2026-10"), path[160];
    snprintf(path, sizeof path, "/v1/invoices/%s/finalize", id);
    gm_clock_set_us(NOV_2026 + 24 * GM_US_PER_HOUR); /* inside the 72 h window */
    http_resp r;
    ck_assert_int_eq(post_on(port, path, "grace-key", "{}", &r), 409);
    ck_assert_ptr_nonnull(strstr(r.body, "open for late events"));
    http_free(&r);
    char *n = sql1("SELECT count(*) FROM gm.idempotency WHERE idem_key = '%s'", "grace-key");
    ck_assert_str_eq(n, "0"); /* a refusal a retry can change is not stored */
    free(n);
    gm_clock_set_us(NOV_2026 + 73 * GM_US_PER_HOUR); /* the window has closed */
    ck_assert_int_eq(post_on(port, path, "grace-key", "{}", &r), 200);
    char h[16];
    ck_assert(!http_header(&r, "Idempotent-Replayed", h, sizeof h));
    ck_assert_ptr_nonnull(strstr(r.body, "\"status\":\"finalized\""));
    http_free(&r);
    ck_assert_int_eq(post_on(port, path, "grace-key", "{}", &r), 200);
    ck_assert(http_header(&r, "Idempotent-Replayed", h, sizeof h));
    http_free(&r);
    free(id);
    gm_api_stop(s);
}
END_TEST

START_TEST(test_the_effect_and_its_idempotency_record_commit_together)
{
    PGconn *c = db();
    /* test-only: make COMMIT fail after the handler's effect and the record are written */
    gm_test_pg_exec(c, "CREATE FUNCTION public.gm_test_fail_commit() RETURNS trigger LANGUAGE "
                       "plpgsql AS $$ BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$");
    gm_test_pg_exec(c, "CREATE CONSTRAINT TRIGGER gm_test_fail_commit AFTER INSERT ON "
                       "gm.idempotency DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE "
                       "FUNCTION public.gm_test_fail_commit()");
    http_resp r;
    http_do(F.port, "POST", "/v1/tenants", F.admin, "atomic-1", "{\"tenant\":\"atomic-one\"}", NULL,
            &r);
    ck_assert_msg(r.status == 503, "%d %s", r.status, r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "not saved"));
    http_free(&r);
    char *n = gm_test_pg_value(c, "SELECT (SELECT count(*) FROM gm.tenants WHERE tenant ="
                                  " 'atomic-one') || '/' || (SELECT count(*) FROM"
                                  " gm.idempotency WHERE idem_key = 'atomic-1')");
    ck_assert_str_eq(n, "0/0"); /* neither the effect nor the record */
    free(n);
    gm_test_pg_exec(c, "DROP TRIGGER gm_test_fail_commit ON gm.idempotency");
    gm_test_pg_exec(c, "DROP FUNCTION public.gm_test_fail_commit()");
    /* the retry with the same key runs again, once */
    http_do(F.port, "POST", "/v1/tenants", F.admin, "atomic-1", "{\"tenant\":\"atomic-one\"}", NULL,
            &r);
    ck_assert_int_eq(r.status, 201);
    char h[16];
    ck_assert(!http_header(&r, "Idempotent-Replayed", h, sizeof h));
    http_free(&r);
    n = gm_test_pg_value(c, "SELECT (SELECT count(*) FROM gm.tenants WHERE tenant ="
                            " 'atomic-one') || '/' || (SELECT status FROM gm.idempotency"
                            " WHERE idem_key = 'atomic-1')");
    ck_assert_str_eq(n, "1/201");
    free(n);
    /* PostgreSQL refuses a stored answer that is not final (sql/0007) */
    PGresult *res =
        PQexec(c, "INSERT INTO gm.idempotency (key_id, idem_key, request_hash, method, path,"
                  " status, content_type, body) VALUES ('k', 'x', '\\x00', 'POST', '/', 409,"
                  " 'application/problem+json', '{}')");
    ck_assert_msg(PQresultStatus(res) == PGRES_FATAL_ERROR, "a 409 record was accepted");
    PQclear(res);
    PQfinish(c);
}
END_TEST

/* Regression (issue 15 review): POST /v1/contracts naming a card that is not stored was 201,
 * and then every event of the tenant was rejected. 409 with field card_id, nothing stored, no
 * idempotency record (the card may be imported, then the same key retried). */
START_TEST(test_regression_a_contract_naming_a_missing_card_is_409)
{
    PGconn *c = db();
    http_resp r;
    const char *body = "{\"tenant\":\"ghost-card\",\"card_id\":\"no-such-card\","
                       "\"currency\":\"USD\"}";
    http_do(F.port, "POST", "/v1/contracts", F.admin, "ghost-card-1", body, NULL, &r);
    ck_assert_msg(r.status == 409, "%d %s", r.status, r.body);
    ck_assert_msg(strstr(r.body, "\"field\":\"card_id\"") ||
                      strstr(r.body, "\"field\": \"card_id\""),
                  "%s", r.body);
    ck_assert_msg(strstr(r.body, "card no-such-card does not exist"), "%s", r.body);
    http_free(&r);
    char *n = gm_test_pg_value(c, "SELECT (SELECT count(*) FROM gm.contracts WHERE tenant ="
                                  " 'ghost-card') || '/' || (SELECT count(*) FROM"
                                  " gm.idempotency WHERE idem_key = 'ghost-card-1')");
    ck_assert_str_eq(n, "0/0");
    free(n);
    PQfinish(c);
}
END_TEST

START_TEST(test_idempotency_records_expire_after_the_retention_and_are_deleted)
{
    http_resp r;
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ret-1", "{\"tenant\":\"ret-one\"}", NULL, &r);
    ck_assert_int_eq(r.status, 201);
    http_free(&r);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ret-2", "{\"tenant\":\"ret-two\"}", NULL, &r);
    ck_assert_int_eq(r.status, 201);
    http_free(&r);
    /* within the retention: a replay */
    gm_clock_set_us(API_TEST_NOW + 23 * GM_US_PER_HOUR);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ret-1", "{\"tenant\":\"ret-one\"}", NULL, &r);
    char h[16];
    ck_assert_int_eq(r.status, 201);
    ck_assert(http_header(&r, "Idempotent-Replayed", h, sizeof h));
    http_free(&r);
    /* past it: the request runs again (the tenant exists now: 409, not the old 201) */
    gm_clock_set_us(API_TEST_NOW + 25 * GM_US_PER_HOUR);
    http_do(F.port, "POST", "/v1/tenants", F.admin, "ret-1", "{\"tenant\":\"ret-one\"}", NULL, &r);
    ck_assert_msg(r.status == 409 && !http_header(&r, "Idempotent-Replayed", h, sizeof h), "%d %s",
                  r.status, r.body);
    http_free(&r);
    /* and the server deleted what is past the retention, ret-2 included */
    char *n =
        sql1("SELECT count(*) FROM gm.idempotency WHERE idem_key IN ('ret-1', '%s')", "ret-2");
    ck_assert_str_eq(n, "0");
    free(n);
}
END_TEST

/* ---- Re-rating runs keep their order inside the POST's transaction -----------------------*/
#define RR_CARD(v, from, out)                                                                      \
    "{\"card_id\":\"rr-card\",\"version\":" #v ",\"valid_from\":\"" from "\",\"currency\":"        \
    "\"USD\",\"prices\":{\"m-rr\":{\"input\":{\"per_1m_tokens\":\"1.00\"},\"cached\":"             \
    "{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"" out "\"},\"gpu\":"             \
    "{\"per_gpu_second\":\"0.001\"}},\"default\":{\"input\":{\"per_1m_tokens\":\"1.00\"},"         \
    "\"cached\":{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":"     \
    "{\"per_gpu_second\":\"0.001\"}}}}"

typedef struct {
    int port;
    const char *idem;
    int status;
} rr_req;

static void *rr_post(void *arg) /* no ck_assert in threads */
{
    rr_req *q = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)q->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
        return NULL;
    const char *body = "{\"period\":\"2026-09\",\"tenant\":\"rr-conc\",\"reason\":\"backdated\"}";
    char extra[256];
    snprintf(extra, sizeof extra,
             "Idempotency-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
             q->idem, strlen(body));
    char *h = req("POST", "/v1/rerating-runs", F.finance, extra);
    send_all(fd, h, strlen(h));
    send_all(fd, body, strlen(body));
    free(h);
    char buf[64] = "";
    if (recv(fd, buf, sizeof buf - 1, MSG_WAITALL) > 12)
        q->status = atoi(buf + 9);
    close(fd);
    return NULL;
}

START_TEST(test_two_rerating_runs_at_once_apply_the_correction_once)
{
    PGconn *c = db();
    char msg[256], err[1024];
    const char *v1 = RR_CARD(1, "2026-01-01T00:00:00Z", "2.00");
    const char *contract = "{\"tenant\":\"rr-conc\",\"card_id\":\"rr-card\",\"currency\":\"USD\"}";
    ck_assert_msg(gm_ledger_import(c, v1, strlen(v1), msg, sizeof msg, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_msg(
        gm_ledger_import(c, contract, strlen(contract), msg, sizeof msg, err, sizeof err) == 0,
        "%s", err);
    int64_t q[4] = {0, 0, 50000000, 0};
    api_add_event(c, "rr-conc", "m-rr", "fra1", OCT_2026 - 10 * GM_US_PER_DAY, q);
    char *id = draft_id(F.port, "rr-conc", "2026-09"), path[160];
    snprintf(path, sizeof path, "/v1/invoices/%s/finalize", id);
    http_resp r;
    ck_assert_msg(post_on(F.port, path, "rr-fin", "{}", &r) == 200, "%d %s", r.status, r.body);
    http_free(&r);
    free(id);
    /* the backdated correction: from 2026-09-15 output costs 3.00 */
    const char *v2 = RR_CARD(2, "2026-09-15T00:00:00Z", "3.00");
    http_do(F.port, "POST", "/v1/rate-cards", F.admin, "rr-card-v2", v2, NULL, &r); /* the
                                                         server reloads its book at once */
    ck_assert_msg(r.status == 201 || r.status == 200, "import: %d %s", r.status, r.body);
    http_free(&r);
    /* hold September's re-rating lock so that both requests wait for it, then let them go */
    PGconn *lock = db();
    const char *key = "SELECT pg_advisory_lock(2911332140600000000 + (extract(epoch FROM"
                      " timestamptz '2026-09-01Z') / 86400)::bigint)";
    gm_test_pg_exec(lock, key);
    rr_req a = {F.port, "rr-run-a", 0}, b = {F.port, "rr-run-b", 0};
    pthread_t ta, tb;
    ck_assert(pthread_create(&ta, NULL, rr_post, &a) == 0);
    ck_assert(pthread_create(&tb, NULL, rr_post, &b) == 0);
    for (int tries = 0;; tries++) { /* both wait on the lock, before their transactions */
        char *w = gm_test_pg_value(c, "SELECT count(*) FROM pg_stat_activity WHERE"
                                      " application_name = 'gridmeter-api' AND wait_event ="
                                      " 'advisory' AND state = 'active'"
                                      " AND backend_xid IS NULL");
        bool both = !strcmp(w, "2");
        free(w);
        if (both)
            break;
        ck_assert_msg(tries < 2000, "the two runs never waited for the month's lock");
        usleep(10000);
    }
    gm_test_pg_exec(lock, "SELECT pg_advisory_unlock_all()");
    PQfinish(lock);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_msg(a.status == 201 && b.status == 201, "runs: %d %d", a.status, b.status);
    /* one run moved the output to v2, the other found nothing left to change */
    char *n = gm_test_pg_value(c, "SELECT string_agg(lines_changed::text, ',' ORDER BY"
                                  " lines_changed) FROM gm.rerating_runs WHERE tenant ="
                                  " 'rr-conc'");
    ck_assert_msg(n[0] == '0' && n[1] == ',' && atoi(n + 2) > 0, "lines changed per run: %s", n);
    free(n);
    PQfinish(c);
}
END_TEST

/* ---- The pool is taken after authentication ----------------------------------------------*/
static void tune_one_connection(gm_api_config *c)
{
    c->db_pool_size = 1;
    c->db_wait_ms = 300;
}

typedef struct {
    int port;
    int status;
} blocked_req;

static void *blocked_get(void *arg) /* no ck_assert in threads: plain sockets */
{
    blocked_req *b = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
        return NULL;
    char *s = req("GET", "/v1/tenants", F.admin, NULL);
    send_all(fd, s, strlen(s));
    free(s);
    char buf[64] = "";
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_WAITALL);
    if (n > 12)
        b->status = atoi(buf + 9);
    close(fd);
    return NULL;
}

START_TEST(test_regression_unauthenticated_requests_never_take_a_pool_connection)
{
    int port;
    gm_api_server *s = server_with(tune_one_connection, &port);
    raw_resp r;
    exchange(port, "GET", "/v1/me", F.admin, NULL, &r); /* the admin key is verified */
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
    PGconn *lock = db();
    gm_test_pg_exec(lock, "BEGIN");
    gm_test_pg_exec(lock, "LOCK TABLE gm.tenants IN ACCESS EXCLUSIVE MODE");
    blocked_req b = {port, 0};
    pthread_t t;
    ck_assert(pthread_create(&t, NULL, blocked_get, &b) == 0);
    PGconn *c = db();
    for (int tries = 0;; tries++) { /* the pool's only connection waits on the lock */
        char *w = gm_test_pg_value(c, "SELECT count(*) FROM pg_stat_activity WHERE"
                                      " application_name = 'gridmeter-api' AND wait_event_type"
                                      " = 'Lock'");
        bool waiting = !strcmp(w, "1");
        free(w);
        if (waiting)
            break;
        ck_assert_msg(tries < 1000, "the blocked request never reached the database");
        usleep(10000);
    }
    /* well-formed keys nobody has: 401 from the authentication pool, not 503 */
    for (int i = 0; i < 5; i++) {
        char tok[128];
        snprintf(tok, sizeof tok, "gmk_k%016d_%064d", 7 + i, i);
        exchange(port, "GET", "/v1/me", tok, NULL, &r);
        expect_problem(&r, 401, "Authorization", "unknown", "a random key with the pool busy");
        raw_free(&r);
    }
    /* an authenticated request waits for the pool, then 503 */
    exchange(port, "GET", "/v1/me", F.admin, NULL, &r);
    expect_problem(&r, 503, NULL, NULL, "admin with the pool busy");
    raw_free(&r);
    gm_test_pg_exec(lock, "ROLLBACK");
    PQfinish(lock);
    pthread_join(t, NULL);
    ck_assert_int_eq(b.status, 200);
    PQfinish(c);
    gm_api_stop(s);
}
END_TEST

/* ---- The dashboard's errors -------------------------------------------------------------*/
START_TEST(test_dashboard_errors_are_problem_json)
{
    raw_resp r;
    exchange(F.port, "GET", "/dashboard/no-such-file.js", NULL, NULL, &r);
    expect_problem(&r, 404, NULL, NULL, "missing dashboard file");
    raw_free(&r);
    exchange(F.port, "POST", "/dashboard/", NULL, NULL, &r);
    expect_problem(&r, 405, NULL, NULL, "POST to the dashboard");
    raw_free(&r);
    exchange(F.port, "GET", "/dashboard/%2e%2e/v1/me", NULL, NULL, &r);
    expect_problem(&r, 400, "path", NULL, "dot segment under the dashboard");
    raw_free(&r);
    exchange(F.port, "GET", "/dashboard/", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    raw_free(&r);
}
END_TEST

/* ---- TLS: libmicrohttpd parses, the pipeline's rules still hold --------------------------*/
static char *tls_exchange(int port, const char *printf_bytes)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "printf '%s' | timeout 20 openssl s_client -quiet -connect 127.0.0.1:%d 2>/dev/null",
             printf_bytes, port);
    FILE *p = popen(cmd, "r");
    ck_assert(p != NULL);
    size_t cap = 1 << 16, len = 0, n;
    char *out = gm_xmalloc(cap);
    while (len + 1 < cap && (n = fread(out + len, 1, cap - len - 1, p)) > 0)
        len += n;
    out[len] = 0;
    pclose(p);
    return out;
}

static char tls_cert[128], tls_key[128];
static void tune_tls(gm_api_config *c)
{
    c->tls_cert_file = tls_cert;
    c->tls_key_file = tls_key;
}

START_TEST(test_tls_requests_keep_the_target_and_framing_rules)
{
    ck_assert_msg(!access("/usr/bin/openssl", X_OK), "needs /usr/bin/openssl (scripts/setup.sh)");
    char dir[] = "/tmp/gm_api_http_tls_XXXXXX", cmd[1024];
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(tls_cert, sizeof tls_cert, "%s/cert.pem", dir);
    snprintf(tls_key, sizeof tls_key, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1"
             " -subj /CN=localhost >/dev/null 2>&1",
             tls_key, tls_cert);
    ck_assert_int_eq(system(cmd), 0);
    int port;
    gm_api_server *s = server_with(tune_tls, &port);
    struct {
        const char *bytes, *want;
    } c[] = {
        {"GET /v1/tenants/acme%%00/spend HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n", "HTTP/1.1 4"},
        {"GET /v1/me\\000x HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n", "HTTP/1.1 400"},
        {"POST /v1/tenants HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 2\\r\\nContent-Length: "
         "3\\r\\n\\r\\n{}",
         "HTTP/1.1 400"},
        {"POST /v1/tenants HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 2\\r\\nTransfer-Encoding: "
         "chunked\\r\\n\\r\\n{}",
         "HTTP/1.1 400"},
        {"HEAD /healthz HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n", "HTTP/1.1 200"},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(c); i++) {
        char *out = tls_exchange(port, c[i].bytes);
        ck_assert_msg(!strncmp(out, c[i].want, strlen(c[i].want)), "TLS case %zu: %.300s", i, out);
        if (strncmp(c[i].want, "HTTP/1.1 200", 12))
            ck_assert_msg(strstr(out, "application/problem+json") && strstr(out, "\"status\":4"),
                          "TLS case %zu: not problem+json: %.300s", i, out);
        free(out);
    }
    /* the acme%00 case must not have been routed anywhere: a 400, not 401/404 */
    char *out = tls_exchange(port, c[0].bytes);
    ck_assert_msg(!strncmp(out, "HTTP/1.1 400", 12), "%.200s", out);
    free(out);
    gm_api_stop(s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api_http");
    TCase *tc = tcase_create("api_http");
    tcase_add_unchecked_fixture(tc, api_fixture_setup, api_fixture_teardown);
    tcase_add_checked_fixture(tc, clock_back, clock_back);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_regression_nul_in_a_path_segment_acts_on_no_resource);
    tcase_add_test(tc, test_targets_with_controls_bad_utf8_or_dot_segments_are_400);
    tcase_add_test(tc, test_regression_problem_instance_is_valid_json_for_invalid_utf8);
    tcase_add_test(tc, test_regression_cursor_before_year_1_is_400_on_every_list);
    tcase_add_test(tc, test_cursors_are_signed_checked_and_survive_rotation_with_the_previous_key);
    tcase_add_test(tc, test_regression_dribbled_requests_get_408_and_health_checks_stay_answered);
    tcase_add_test(tc, test_per_address_limit_answers_503_and_keeps_room_for_health_checks);
    tcase_add_test(tc, test_a_slow_reader_is_cut_off_after_the_answer_timeout);
    tcase_add_test(tc, test_regression_two_content_lengths_are_400_and_nothing_after_is_read);
    tcase_add_test(tc, test_regression_transfer_encoding_is_refused_with_or_without_content_length);
    tcase_add_test(tc, test_regression_malformed_heads_get_problem_json_not_html);
    tcase_add_test(tc, test_regression_head_answers_get_routes_health_included);
    tcase_add_test(tc, test_regression_authentication_comes_before_the_method_and_route_checks);
    tcase_add_test(tc, test_regression_failed_authentications_are_throttled_per_address);
    tcase_add_test(tc, test_regression_unknown_and_malformed_parameters_are_400);
    tcase_add_test(tc, test_regression_content_type_must_be_application_json);
    tcase_add_test(tc, test_regression_period_1970_01_filters_invoices);
    tcase_add_test(tc, test_regression_credit_note_amount_has_at_most_the_currency_digits);
    tcase_add_test(tc, test_regression_a_refused_post_is_not_replayed_after_the_window_opens);
    tcase_add_test(tc, test_the_effect_and_its_idempotency_record_commit_together);
    tcase_add_test(tc, test_idempotency_records_expire_after_the_retention_and_are_deleted);
    tcase_add_test(tc, test_regression_unauthenticated_requests_never_take_a_pool_connection);
    tcase_add_test(tc, test_two_rerating_runs_at_once_apply_the_correction_once);
    tcase_add_test(tc, test_dashboard_errors_are_problem_json);
    tcase_add_test(tc, test_regression_a_contract_naming_a_missing_card_is_409);
    tcase_add_test(tc, test_keep_alive_serves_n_requests_then_closes_and_checks_each_request);
    tcase_add_test(tc, test_by_default_every_answer_closes_the_connection);
    tcase_add_test(tc, test_tls_requests_keep_the_target_and_framing_rules);
    suite_add_tcase(s, tc);
    /* No fork: the servers' threads live in this process. */
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
