/* bench_api_edge: what the HTTP edge costs (issue 13), each number beside a baseline from the
 * same run, on this machine; no database needed.
 *
 *   1. CPU time (this thread's) per request head: api__head_parse + api__target_parse +
 * api__route_match over typical requests, beside the least any parser does (finding the blank line
 * with memmem and the line ends with memchr).
 *   2. GET /healthz end to end, closed loop, --threads clients for --seconds each:
 *      gridmeter's server (the gate, then libmicrohttpd; one request per connection), beside
 *      a bare libmicrohttpd daemon in this process with the same answer, once with a new
 *      connection per request (the gate's cost) and once with keep-alive (what the server
 *      did before the gate: the cost of one request per connection).
 *   3. GET /nope (through the whole pipeline to a 404 problem+json, no database): the default
 *      server (a connection per request) beside --keep-alive-requests 1000.
 *
 * usage: bench_api_edge [--threads N] [--seconds S] [--iterations N] */
#include "api_edge.h"
#include "gm_api.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *heads[] = {
    "GET /v1/invoices?period=2026-10&limit=50 HTTP/1.1\r\nHost: api.example\r\nAuthorization: "
    "Bearer gmk_k160081f25ce21f61_0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"
    "cdef\r\nAccept: application/json\r\nUser-Agent: finance-sync/1.2\r\n\r\n",
    "GET /v1/tenants/acme/usage?from=2026-10-01T00:00:00Z&to=2026-10-02T00:00:00Z&bucket=hour&"
    "group_by=model,site HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer gmk_k16008"
    "1f25ce21f61_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\nAccept: "
    "application/json\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
    "Sec-Fetch-Mode: cors\r\nReferer: https://api.example/dashboard/\r\n\r\n",
    "POST /v1/invoices/inv_0123456789abcdef0123456789abcdef/credit-notes HTTP/1.1\r\nHost: "
    "api.example\r\nAuthorization: Bearer gmk_k160081f25ce21f61_0123456789abcdef0123456789abc"
    "def0123456789abcdef0123456789abcdef\r\nIdempotency-Key: 6f1c2a9e-credit-2026-10\r\n"
    "Content-Type: application/json\r\nContent-Length: 42\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nUser-Agent: kube-probe/1.29\r\n\r\n",
};
#define N_HEADS (sizeof heads / sizeof heads[0])

static volatile size_t sink;

/* CPU time of this thread (a shared machine's load does not inflate it). */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double parse_ns(long iters)
{
    int64_t t0 = cpu_ns();
    static api_target t;
    for (long i = 0; i < iters; i++) {
        const char *h = heads[i % N_HEADS];
        api_head hd;
        api_refusal why;
        if (api__head_parse(h, strlen(h), 1 << 20, &hd, &why) ||
            api__target_parse(hd.target, hd.target_len, &t, &why)) {
            fprintf(stderr, "bench_api_edge: a sample head is refused: %s\n", why.detail);
            exit(1);
        }
        api_match m;
        api__route_match(hd.method, &t, &m);
        sink += (size_t)m.route + t.n_seg;
    }
    return (double)(cpu_ns() - t0) / (double)iters;
}

static double scan_ns(long iters)
{
    int64_t t0 = cpu_ns();
    for (long i = 0; i < iters; i++) {
        const char *h = heads[i % N_HEADS];
        size_t n = strlen(h);
        const char *end = memmem(h, n, "\r\n\r\n", 4);
        size_t lines = 0;
        for (const char *p = h; p && p < end; p = memchr(p + 1, '\n', (size_t)(end - p - 1)))
            lines++;
        sink += (size_t)(end - h) + lines;
    }
    return (double)(cpu_ns() - t0) / (double)iters;
}

/* ---- Load ---------------------------------------------------------------------------------*/
typedef struct {
    int port;
    bool keep_alive;
    const char *req, *want; /* the request and the answer's status */
    int64_t until_us;
    int64_t *lat;
    size_t n, cap;
    long errors;
} worker;

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One request; 0 when answered with the wanted status. Reads exactly the answer
 * (Content-Length); 1 when the answer closed the connection (Connection: close). */
static int get_once(int fd, const char *req, const char *want)
{
    size_t rl = strlen(req);
    if (send(fd, req, rl, MSG_NOSIGNAL) != (ssize_t)rl)
        return -1;
    char buf[4096];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        buf[got] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t need = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
    bool closes = strcasestr(buf, "\r\nConnection: close") != NULL;
    bool ok = !strncmp(buf + 9, want, 3);
    while (got < need) {
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return ok ? (closes ? 1 : 0) : -1;
}

static void *work(void *arg)
{
    worker *w = arg;
    int fd = -1;
    while (gm_mono_us() < w->until_us) {
        int64_t t0 = gm_mono_us();
        if (fd < 0)
            fd = dial(w->port);
        int rc = fd < 0 ? -1 : get_once(fd, w->req, w->want);
        if (!w->keep_alive || rc) {
            if (fd >= 0)
                close(fd);
            fd = -1;
        }
        if (rc < 0)
            w->errors++;
        if (w->n == w->cap)
            w->lat = realloc(w->lat, (w->cap = w->cap ? 2 * w->cap : 4096) * sizeof *w->lat);
        w->lat[w->n++] = gm_mono_us() - t0;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static const char HEALTHZ[] = "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n";
/* through the whole pipeline (target, route: a 404 problem+json), no database */
static const char NOT_FOUND[] = "GET /nope HTTP/1.1\r\nHost: bench\r\n\r\n";

static void run(const char *name, int port, bool keep_alive, const char *req, const char *want,
                int threads, int seconds)
{
    worker w[64];
    pthread_t th[64];
    int64_t start = gm_mono_us();
    for (int i = 0; i < threads; i++) {
        w[i] =
            (worker){port, keep_alive, req, want, start + seconds * GM_US_PER_SEC, NULL, 0, 0, 0};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    double secs = (double)(gm_mono_us() - start) / 1e6;
    int64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat);
    }
    qsort(all, total, sizeof *all, cmp64);
    printf("%-58s %9.0f req/s   p50 %6lld us   p99 %7lld us   errors %ld\n", name,
           (double)total / secs, total ? (long long)all[total / 2] : 0,
           total ? (long long)all[total * 99 / 100] : 0, errors);
    free(all);
}

/* The bare baseline: libmicrohttpd listening itself, thread per connection, same answer. */
static enum MHD_Result bare(void *cls, struct MHD_Connection *c, const char *url,
                            const char *method, const char *version, const char *upload,
                            size_t *upload_size, void **con_cls)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    if (!*con_cls) {
        *con_cls = (void *)1;
        return MHD_YES;
    }
    static const char body[] = "{\"status\":\"ok\"}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    int threads = 8, seconds = 5;
    long iters = 2000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iters = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_api_edge [--threads N] [--seconds S] "
                            "[--iterations N]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || seconds < 1 || iters < 1) {
        fprintf(stderr, "bench_api_edge: --threads 1..64, --seconds >= 1, --iterations >= 1\n");
        return 2;
    }
    printf("request heads: %zu samples, %ld iterations\n", N_HEADS, iters);
    double base = scan_ns(iters), full = parse_ns(iters);
    printf("  %-56s %8.0f ns/head (CPU)\n", "baseline: find the blank line and the line ends",
           base);
    printf("  %-56s %8.0f ns/head (CPU, %.1fx)\n", "head, framing, target and route rules (edge.c)",
           full, full / base);
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.port = 0;
    cfg.per_ip_connections = 0;
    cfg.max_connections = 1024;
    char err[512];
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench_api_edge: %s\n", err);
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
        NULL, bare, NULL, MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "bench_api_edge: the bare libmicrohttpd daemon did not start\n");
        return 1;
    }
    int bare_port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
    cfg.keep_alive_requests = 1000;
    gm_api_server *ka = gm_api_start(&cfg, err, sizeof err);
    if (!ka) {
        fprintf(stderr, "bench_api_edge: %s\n", err);
        return 1;
    }
    printf("GET /healthz, %d clients, %d s each\n", threads, seconds);
    run("  baseline: bare libmicrohttpd, keep-alive", bare_port, true, HEALTHZ, "200", threads,
        seconds);
    run("  baseline: bare libmicrohttpd, a connection per request", bare_port, false, HEALTHZ,
        "200", threads, seconds);
    run("  gridmeter api: gate + libmicrohttpd, a connection per request", gm_api_port(s), false,
        HEALTHZ, "200", threads, seconds);
    printf("GET /nope (the whole pipeline, a 404 problem+json), %d clients, %d s each\n", threads,
           seconds);
    run("  gridmeter api: a connection per request (default)", gm_api_port(s), false, NOT_FOUND,
        "404", threads, seconds);
    run("  gridmeter api: --keep-alive-requests 1000", gm_api_port(ka), true, NOT_FOUND, "404",
        threads, seconds);
    gm_api_stop(ka);
    MHD_stop_daemon(d);
    gm_api_stop(s);
    return (int)(sink & 0);
}
