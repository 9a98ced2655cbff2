/* The agent's HTTP layer (libmicrohttpd): a Unix domain socket and a loopback TCP port, both
 * bound here and handed to MHD as listen sockets; routes, bodies, answers; requests that wait
 * for GPU time are suspended and resumed by the thread that finishes them.
 *
 * DESIGN. Each listener is one MHD daemon with an internal thread pool (epoll), so a waiting
 * request holds no thread. A body is gathered in the connection's state up to max_body_bytes
 * (a larger Content-Length is refused before it is read) and handed to agent.c whole. The
 * Unix socket is created with the configured mode; a stale socket file is replaced, a live one
 * (another agent answers on it) is refused.
 */
#include "agent_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct agent__http {
    gm_agent *a;
    struct MHD_Daemon *d[2]; /* unix, tcp */
    int fd[2];
    dev_t sock_dev;
    ino_t sock_ino;
    atomic_int inflight; /* requests begun and not completed */
};

enum { ST_READING = 0, ST_WAITING, ST_READY, ST_SENT };

typedef struct conn_st {
    agent__http *h;
    struct MHD_Connection *conn;
    int route;
    int state;
    bool too_big, method_ok;
    char *body;
    size_t len, cap;
    agent__req *r;
} conn_st;

static int route_of(const char *url)
{
    if (!strcmp(url, "/v1/events"))
        return ROUTE_EVENTS;
    if (!strcmp(url, "/v1/gpu/steps"))
        return ROUTE_GPU_STEPS;
    if (!strcmp(url, "/healthz"))
        return ROUTE_HEALTHZ;
    if (!strcmp(url, "/metrics"))
        return ROUTE_METRICS;
    return ROUTE_OTHER;
}

static enum MHD_Result send_answer(conn_st *st)
{
    agent__req *r = st->r;
    const char *ctype =
        r->route == ROUTE_METRICS ? "text/plain; version=0.0.4; charset=utf-8" : "application/json";
    char *text = r->answer ? r->answer : gm_xstrdup("{}\n");
    r->answer = NULL;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(strlen(text), text, free);
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->status == 405)
        MHD_add_response_header(
            resp, "Allow", r->route == ROUTE_HEALTHZ || r->route == ROUTE_METRICS ? "GET" : "POST");
    if (r->retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after_s);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(st->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    agent__count(r);
    st->state = ST_SENT;
    return ret;
}

static void resume(agent__req *r, void *arg)
{
    (void)r;
    conn_st *st = arg;
    st->state = ST_READY;
    MHD_resume_connection(st->conn);
}

static const char *query_of(struct MHD_Connection *conn, char *buf, size_t len)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "atomic");
    if (!v)
        return NULL;
    snprintf(buf, len, "atomic=%s", v);
    return buf;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    agent__http *h = cls;
    gm_agent *a = h->a;
    conn_st *st = *con_cls;
    if (!st) {
        st = gm_xcalloc(1, sizeof *st);
        st->h = h;
        st->conn = conn;
        st->route = route_of(url);
        *con_cls = st;
        atomic_fetch_add(&h->inflight, 1);
        st->r = agent__req_new(a, st->route);
        bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
        st->method_ok = st->route == ROUTE_OTHER ||
                        ((st->route == ROUTE_EVENTS || st->route == ROUTE_GPU_STEPS) ? post : get);
        if (!st->method_ok) {
            agent__answer_error(st->r, 405, "method", "not allowed on this path");
            return send_answer(st);
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        uint64_t n = 0;
        if (cl && (gm_parse_u64(cl, strlen(cl), UINT64_MAX, &n) || n > a->cfg.max_body_bytes)) {
            char rule[128];
            snprintf(rule, sizeof rule, "must be at most %zu bytes, got %.30s",
                     a->cfg.max_body_bytes, cl);
            atomic_fetch_add(&a->requests_bad, 1);
            agent__answer_error(st->r, 413, "body", rule);
            return send_answer(st); /* before the body is read: MHD closes the connection */
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (st->state == ST_READING && !st->too_big) {
            if (st->len + *upload_data_size > a->cfg.max_body_bytes) {
                st->too_big = true;
                free(st->body);
                st->body = NULL;
                st->len = st->cap = 0;
            } else {
                if (st->len + *upload_data_size + 1 > st->cap) {
                    st->cap = (st->len + *upload_data_size + 1) * 2;
                    st->body = gm_xrealloc(st->body, st->cap);
                }
                memcpy(st->body + st->len, upload_data, *upload_data_size);
                st->len += *upload_data_size;
                st->body[st->len] = '\0';
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (st->state == ST_READY)
        return send_answer(st);
    if (st->state != ST_READING)
        return MHD_YES;
    agent__req *r = st->r;
    if (st->too_big) {
        char rule[96];
        snprintf(rule, sizeof rule, "must be at most %zu bytes", a->cfg.max_body_bytes);
        atomic_fetch_add(&a->requests_bad, 1);
        agent__answer_error(r, 413, "body", rule);
        return send_answer(st);
    }
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    switch (st->route) {
    case ROUTE_EVENTS: {
        char q[64];
        if (!agent__events_begin(r, ct, query_of(conn, q, sizeof q), st->body ? st->body : "",
                                 st->len)) {
            st->state = ST_WAITING;
            r->done = resume;
            r->done_arg = st;
            MHD_suspend_connection(conn);
            agent__gpu_wait(r); /* may finish (and resume) at once */
            return MHD_YES;
        }
        break;
    }
    case ROUTE_GPU_STEPS:
        agent__gpu_steps(r, ct, st->body ? st->body : "", st->len);
        break;
    case ROUTE_HEALTHZ:
        agent__healthz(a, r);
        break;
    case ROUTE_METRICS:
        agent__metrics(a, r);
        break;
    default:
        agent__answer_error(r, 404, "path",
                            "no such path: POST /v1/events, POST /v1/gpu/steps, GET /healthz, "
                            "GET /metrics");
        break;
    }
    return send_answer(st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    agent__http *h = cls;
    conn_st *st = *con_cls;
    if (!st)
        return;
    agent__req_free(st->r);
    free(st->body);
    free(st);
    *con_cls = NULL;
    atomic_fetch_sub(&h->inflight, 1);
}

/* ---- listeners ----------------------------------------------------------------------- */
static int unix_listener(agent__http *h, const char *path, int mode, char *err, size_t err_len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return gm_fail(err, err_len, GM_ECONFIG, "agent: socket path %s: longer than %zu bytes",
                       path, sizeof sa.sun_path - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode))
            return gm_fail(err, err_len, GM_ECONFIG,
                           "agent: socket path %s exists and is not a socket", path);
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0)
            close(probe);
        if (live)
            return gm_fail(err, err_len, GM_ECONFLICT,
                           "agent: another process answers on %s (one agent per socket)", path);
        unlink(path); /* a stale socket of an agent that was killed */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gm_fail(err, err_len, GM_EIO, "agent: socket: %s", strerror(errno));
    /* the mode is set before listen(): nobody connects before it is right (umask is the
     * process's, not touched here: other threads create files) */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || chmod(path, (mode_t)mode) ||
        listen(fd, SOMAXCONN)) {
        int e = errno;
        close(fd);
        return gm_fail(err, err_len, GM_EIO, "agent: socket %s: %s", path, strerror(e));
    }
    if (stat(path, &sb) == 0) {
        h->sock_dev = sb.st_dev;
        h->sock_ino = sb.st_ino;
    }
    h->fd[0] = fd;
    return 0;
}

static int tcp_listener(agent__http *h, const char *addr, int port, int *bound, char *err,
                        size_t err_len)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (port < 0 || port > 65535)
        return gm_fail(err, err_len, GM_ECONFIG, "agent: listen port %d: must be 0..65535", port);
    if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
        if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127)
            return gm_fail(err, err_len, GM_ECONFIG,
                           "agent: listen address %s: must be a loopback address (127.0.0.0/8 or "
                           "::1): the agent has no authentication, its clients are local",
                           addr);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
            return gm_fail(err, err_len, GM_ECONFIG,
                           "agent: listen address %s: must be a loopback address (127.0.0.0/8 or "
                           "::1): the agent has no authentication, its clients are local",
                           addr);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof *s6;
    } else {
        return gm_fail(err, err_len, GM_ECONFIG,
                       "agent: listen address \"%s\" is not an IPv4 or IPv6 address", addr);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, SOMAXCONN)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return gm_fail(err, err_len, GM_EIO, "agent: listen %s:%d: %s", addr, port, strerror(e));
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    h->fd[1] = fd;
    return 0;
}

static struct MHD_Daemon *daemon_on(agent__http *h, int fd)
{
    gm_agent *a = h->a;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    struct MHD_OptionItem opts[] = {{MHD_OPTION_LISTEN_SOCKET, fd, NULL},
                                    {MHD_OPTION_THREAD_POOL_SIZE, a->cfg.threads, NULL},
                                    {MHD_OPTION_CONNECTION_LIMIT, a->cfg.max_connections, NULL},
                                    {MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL},
                                    {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL},
                                    {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h},
                                    {MHD_OPTION_END, 0, NULL}};
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
}

int agent__http_start(gm_agent *a, char *err, size_t err_len)
{
    agent__http *h = gm_xcalloc(1, sizeof *h);
    h->a = a;
    h->fd[0] = h->fd[1] = -1;
    a->http = h;
    int rc = 0;
    if (a->socket_path)
        rc = unix_listener(h, a->socket_path, a->cfg.socket_mode, err, err_len);
    if (!rc && a->listen_addr)
        rc = tcp_listener(h, a->listen_addr, a->cfg.listen_port, &a->port, err, err_len);
    for (int i = 0; !rc && i < 2; i++) {
        if (h->fd[i] < 0)
            continue;
        h->d[i] = daemon_on(h, h->fd[i]);
        if (!h->d[i])
            rc = gm_fail(err, err_len, GM_EIO, "agent: libmicrohttpd could not start on %s",
                         i == 0 ? a->socket_path : a->listen_addr);
    }
    return rc;
}

int agent__http_port(const gm_agent *a)
{
    return a->port;
}

void agent__http_stop(gm_agent *a)
{
    agent__http *h = a->http;
    if (!h)
        return;
    /* no new connections; the requests in progress are answered (bounded wait) */
    for (int i = 0; i < 2; i++) {
        if (h->d[i]) {
            MHD_socket s = MHD_quiesce_daemon(h->d[i]);
            if (s != MHD_INVALID_SOCKET && s == h->fd[i]) {
                close(s);
                h->fd[i] = -1;
            }
        }
    }
    int64_t until = gm_mono_us() + 5 * GM_US_PER_SEC;
    while (atomic_load(&h->inflight) > 0 && gm_mono_us() < until)
        usleep(10 * 1000);
    for (int i = 0; i < 2; i++) {
        if (h->d[i])
            MHD_stop_daemon(h->d[i]);
        if (h->fd[i] >= 0)
            close(h->fd[i]);
    }
    struct stat sb;
    if (a->socket_path && stat(a->socket_path, &sb) == 0 && sb.st_dev == h->sock_dev &&
        sb.st_ino == h->sock_ino)
        unlink(a->socket_path);
    free(h);
    a->http = NULL;
}
