/* The gate: the server's own listening socket in front of libmicrohttpd. One thread accepts
 * connections and, for plain HTTP, reads each request head with MSG_PEEK (the bytes stay in
 * the socket for libmicrohttpd), checks it with api__head_parse (request line, header fields,
 * framing, target) and only then hands the socket to libmicrohttpd (MHD_add_connection). So
 * every malformed head, smuggling precondition, over-long line or head, unsupported version
 * gets the server's own problem+json answer, never libmicrohttpd's HTML, and libmicrohttpd
 * only ever parses heads that passed the strict grammar.
 *
 * Deadlines and limits (docs/api.md, "Connections"):
 *   - a whole request (head and body) must arrive within request_timeout_s of the accept:
 *     heads still incomplete get 408 here; bodies still incomplete get 408 from the
 *     watchdog, which then closes the socket (so dribbling one header line every few
 *     seconds holds nothing for long); the answer must then be delivered within
 *     answer_timeout_s (a client reading it a few bytes at a time is cut off);
 *   - heads being read cost no thread: at most 4 x per_ip_connections per client address
 *     and 4 x max_connections + 64 in all, fewer when the descriptor limit is lower (503);
 *     a head is peeked at most every 20 ms, so sending it a byte per packet costs little;
 *   - connections handed to libmicrohttpd (one thread each) are limited to max_connections
 *     and per_ip_connections per address (503 problem+json with Retry-After above), except
 *     GET/HEAD /healthz and /readyz, which may use health_reserve more, so health checks
 *     are answered while one address holds its whole share.
 *   - keep-alive (keep_alive_requests > 1; off by default): only the FIRST request of a
 *     connection passes the gate's head check. Later ones are parsed by libmicrohttpd alone
 *     and checked by the pipeline on its parse (framing, target, parameters: the same rules,
 *     as with TLS); an answer before the body is read, a 408, 413, 5xx, a health check's
 *     connection and the keep_alive_requests-th answer all close. Each next request must
 *     arrive whole within request_timeout_s of the previous answer's end, or the connection
 *     is closed without an answer.
 * Refusals are sent whole, then the write side is shut and the rest read and dropped for up
 * to a second (a close with unread data would reset the connection and lose the answer).
 * With TLS (inside libmicrohttpd), the gate cannot read heads: it applies the connection
 * limits and the watchdog only, and the pipeline's checks on libmicrohttpd's parse remain.
 *
 * Locking: the served list and the state of served connections are guarded by mu (the gate
 * thread, libmicrohttpd's connection threads through the pipeline's marks, and its cleanup
 * through the notification); the head and drain lists belong to the gate thread. */
#include "api_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { PH_HEAD, PH_DRAIN, PH_SERVED };

typedef struct gate_conn gate_conn;
struct gate_conn {
    int fd;
    int phase;
    struct sockaddr_in addr;
    char ip[INET_ADDRSTRLEN];
    int64_t accepted_us; /* monotonic */
    /* PH_HEAD */
    size_t peeked;
    int64_t next_peek_us;
    bool peek_wanted, peer_closed;
    /* PH_DRAIN */
    int64_t drain_until_us;
    size_t drained;
    /* PH_SERVED, under mu */
    int64_t handed_us, received_us;
    bool health, started, received, killed, mhd_writes;
    bool between;   /* keep-alive: waiting for the next request (its deadline kills silently) */
    bool pipelined; /* bytes after the first request were there at the peek: never kept */
    int requests;   /* requests received whole on this connection */
    int kill_stage;
    int64_t killed_us;
    gate_conn *prev, *next;
};

typedef struct {
    gate_conn *first;
    size_t n;
} conn_list;

struct api_gate {
    api_server *srv;
    int listen_fd, ep, wake_fd;
    int port;
    bool tls;
    int64_t max_body;
    int64_t timeout_us, answer_us;
    int keep_alive;      /* requests per connection (1: every answer closes) */
    size_t peeks_wanted; /* heads waiting for their next peek (the loop then wakes sooner) */
    int max_conn, per_ip, reserve, per_ip_heads, max_heads;
    struct MHD_Daemon *d;
    pthread_t th;
    bool running;
    int64_t accept_paused_until;
    pthread_mutex_t mu;
    conn_list heads, drains, served;
    char buf[API_HEAD_MAX + 1];
};

#define PEEK_INTERVAL_US 20000
#define DRAIN_US         1000000
#define DRAIN_MAX        (1 << 20)
#define HARD_KILL_US     1000000

static void list_add(conn_list *l, gate_conn *c)
{
    c->prev = NULL;
    c->next = l->first;
    if (l->first)
        l->first->prev = c;
    l->first = c;
    l->n++;
}

static void list_del(conn_list *l, gate_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

/* Connections of c's address in l (health checks excepted: they use the reserve). */
static size_t count_ip(const conn_list *l, const gate_conn *c)
{
    size_t n = 0;
    for (const gate_conn *x = l->first; x; x = x->next)
        n += x != c && !x->health && x->addr.sin_addr.s_addr == c->addr.sin_addr.s_addr;
    return n;
}

static size_t count_ordinary(const conn_list *l)
{
    size_t n = 0;
    for (const gate_conn *x = l->first; x; x = x->next)
        n += !x->health;
    return n;
}

/* IMF-fixdate of the server's clock (RFC 9110 §5.6.7). */
static void http_date(char *out, size_t len)
{
    time_t t = (time_t)(gm_now_us() / GM_US_PER_SEC);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Writes a whole problem+json answer (body omitted for HEAD) without blocking. */
static void answer(api_gate *g, int fd, int status, const char *slug, const char *field,
                   const char *detail, const char *instance, bool head, const char *extra)
{
    size_t bl;
    char *body = api__problem_render(status, slug, field, detail, instance, &bl);
    char date[64], hdr[640];
    http_date(date, sizeof date);
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/problem+json\r\n"
                      "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                      "X-Content-Type-Options: nosniff\r\nConnection: close\r\n%s\r\n",
                      status, api__status_title(status), date, bl, extra ? extra : "");
    struct iovec iov[2] = {{hdr, (size_t)hl}, {body, head ? 0 : bl}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    if (sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        gm_debug("api", "msg=\"gate answer not sent\" status=%d errno=%d", status, errno);
    free(body);
    api__metrics_gate(g->srv, status);
}

static void conn_close(api_gate *g, gate_conn *c)
{
    if (c->peek_wanted)
        g->peeks_wanted--;
    list_del(c->phase == PH_HEAD ? &g->heads : &g->drains, c);
    close(c->fd); /* also leaves the epoll set */
    free(c);
}

/* Answers and moves the connection to the drain list (read and drop, then close). */
static void refuse(api_gate *g, gate_conn *c, bool listed, int status, const char *slug,
                   const char *field, const char *detail, const char *instance, bool head,
                   const char *extra)
{
    answer(g, c->fd, status, slug, field, detail, instance, head, extra);
    shutdown(c->fd, SHUT_WR);
    if (listed && c->phase == PH_HEAD)
        list_del(&g->heads, c);
    if (c->peek_wanted)
        g->peeks_wanted--;
    c->peek_wanted = false;
    c->phase = PH_DRAIN;
    c->drain_until_us = gm_mono_us() + DRAIN_US;
    list_add(&g->drains, c);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g->ep, listed ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev))
        c->drain_until_us = 0; /* not watched: closed at the next tick */
}

static bool is_health(const api_head *h)
{
    if (strcmp(h->method, "GET") && strcmp(h->method, "HEAD"))
        return false;
    const char *q = memchr(h->target, '?', h->target_len);
    size_t pl = q ? (size_t)(q - h->target) : h->target_len;
    return (pl == 8 && !memcmp(h->target, "/healthz", 8)) ||
           (pl == 7 && !memcmp(h->target, "/readyz", 7));
}

/* Hands a connection to libmicrohttpd if the limits allow (head: NULL with TLS). */
static void hand_over(api_gate *g, gate_conn *c, const api_head *h, bool listed)
{
    bool health = h && is_health(h);
    bool head_req = h && !strcmp(h->method, "HEAD");
    char detail[200], inst[API_TARGET_MAX + 1] = "";
    if (h)
        snprintf(inst, sizeof inst, "%.*s", (int)h->target_len, h->target);
    pthread_mutex_lock(&g->mu);
    size_t mine = count_ip(&g->served, c), all = health ? g->served.n : count_ordinary(&g->served);
    pthread_mutex_unlock(&g->mu);
    const char *why = NULL;
    if (!health && g->per_ip > 0 && mine >= (size_t)g->per_ip) {
        snprintf(detail, sizeof detail,
                 "client address %s: %zu requests in progress, at most %d "
                 "(per_ip_connections); retry shortly",
                 c->ip, mine, g->per_ip);
        why = "too-many-connections";
    } else if (all >= (size_t)g->max_conn + (health ? (size_t)g->reserve : 0)) {
        snprintf(detail, sizeof detail, "the server has %zu requests in progress (%s); retry", all,
                 health ? "max_connections and the health reserve" : "max_connections");
        why = "busy";
    }
    if (why && g->tls) { /* no plain-text answer inside TLS */
        api__metrics_gate(g->srv, 503);
        close(c->fd);
        free(c);
        return;
    }
    if (why) {
        if (!listed)
            c->phase = PH_HEAD; /* refuse() moves it to the drain list */
        refuse(g, c, listed, 503, why, NULL, detail, h ? inst : NULL, head_req,
               "Retry-After: 1\r\n");
        return;
    }
    if (listed) {
        epoll_ctl(g->ep, EPOLL_CTL_DEL, c->fd, NULL);
        list_del(&g->heads, c);
        if (c->peek_wanted)
            g->peeks_wanted--;
        c->peek_wanted = false;
    }
    pthread_mutex_lock(&g->mu);
    c->phase = PH_SERVED;
    c->health = health;
    c->handed_us = gm_mono_us();
    list_add(&g->served, c); /* from here on the entry belongs to the served list */
    pthread_mutex_unlock(&g->mu);
    char ip[INET_ADDRSTRLEN];
    memcpy(ip, c->ip, sizeof ip);
    int fd = c->fd;
    /* libmicrohttpd queues the socket for its own thread, which notifies STARTED (matched by
     * descriptor) and, at the end, CLOSED; c may be gone once this returns. */
    if (MHD_add_connection(g->d, fd, (const struct sockaddr *)&c->addr, sizeof c->addr) !=
        MHD_YES) {
        gm_warn("api", "msg=\"libmicrohttpd refused a connection\" client=%s errno=%d", ip, errno);
        pthread_mutex_lock(&g->mu);
        for (gate_conn *x = g->served.first; x; x = x->next)
            if (x == c && !x->started) { /* never queued: the socket is closed */
                list_del(&g->served, c);
                free(c);
                break;
            }
        pthread_mutex_unlock(&g->mu);
    }
}

/* Peeks at the head of a connection and decides. */
static void try_head(api_gate *g, gate_conn *c)
{
    ssize_t n = recv(c->fd, g->buf, API_HEAD_MAX, MSG_PEEK);
    if (n == 0 && c->peeked == 0) {
        conn_close(g, c); /* connected and left */
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(g, c);
        return;
    }
    c->peeked = (size_t)n;
    if (c->peek_wanted)
        g->peeks_wanted--;
    c->peek_wanted = false;
    c->next_peek_us = gm_mono_us() + PEEK_INTERVAL_US;
    api_head h;
    api_refusal why;
    int rc = api__head_parse(g->buf, (size_t)n, g->max_body, &h, &why);
    char inst[API_TARGET_MAX + 1];
    const char *instance = NULL;
    if (h.target_len) {
        snprintf(inst, sizeof inst, "%.*s", (int)h.target_len, h.target);
        instance = inst;
    }
    bool head_req = !strcmp(h.method, "HEAD");
    if (rc == 1) {
        if (c->peer_closed || n == 0)
            refuse(g, c, true, 400, "incomplete-request", "request head",
                   "request head: the connection was closed before the blank line that ends "
                   "the header fields",
                   instance, head_req, NULL);
        return;
    }
    if (rc) {
        refuse(g, c, true, why.status, why.slug, why.field[0] ? why.field : NULL, why.detail,
               instance, head_req, NULL);
        return;
    }
    /* a request sent before this one's answer (pipelining): libmicrohttpd would read it into
     * its buffer and wait for the socket, so this answer closes instead (keep-alive) */
    c->pipelined = (uint64_t)n > (uint64_t)h.head_len + h.framing.length;
    hand_over(g, c, &h, true);
}

static void drain(api_gate *g, gate_conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, g->buf, sizeof g->buf, 0);
        if (n > 0) {
            c->drained += (size_t)n;
            if (c->drained > DRAIN_MAX) {
                conn_close(g, c);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_close(g, c); /* end of stream or an error */
        return;
    }
}

static void on_accept(api_gate *g)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_in a;
        socklen_t al = sizeof a;
        int fd = accept4(g->listen_fd, (struct sockaddr *)&a, &al, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                gm_warn("api", "msg=\"accept paused: out of descriptors or memory\" errno=%d",
                        errno);
                epoll_ctl(g->ep, EPOLL_CTL_DEL, g->listen_fd, NULL);
                g->accept_paused_until = gm_mono_us() + 100000;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        gate_conn *c = gm_xcalloc(1, sizeof *c);
        c->fd = fd;
        c->addr = a;
        c->accepted_us = gm_mono_us();
        inet_ntop(AF_INET, &a.sin_addr, c->ip, sizeof c->ip);
        if (g->tls) {
            hand_over(g, c, NULL, false);
            continue;
        }
        char detail[200];
        if (g->heads.n + g->drains.n >= (size_t)g->max_heads) {
            snprintf(detail, sizeof detail,
                     "the server is reading %zu request heads, at most %d; retry", g->heads.n,
                     g->max_heads);
            c->phase = PH_HEAD;
            refuse(g, c, false, 503, "busy", NULL, detail, NULL, false, "Retry-After: 1\r\n");
            continue;
        }
        if (g->per_ip_heads > 0 && count_ip(&g->heads, c) >= (size_t)g->per_ip_heads) {
            snprintf(detail, sizeof detail,
                     "client address %s: %d connections still sending their request head, at "
                     "most %d; finish or close them",
                     c->ip, g->per_ip_heads, g->per_ip_heads);
            c->phase = PH_HEAD;
            refuse(g, c, false, 503, "too-many-connections", NULL, detail, NULL, false,
                   "Retry-After: 1\r\n");
            continue;
        }
        c->phase = PH_HEAD;
        list_add(&g->heads, c);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev)) {
            conn_close(g, c);
            continue;
        }
        try_head(g, c);
    }
}

/* The deadline of requests in libmicrohttpd's hands (not yet received whole). */
static void watchdog(api_gate *g, int64_t now)
{
    pthread_mutex_lock(&g->mu);
    for (gate_conn *c = g->served.first, *nx; c; c = nx) {
        nx = c->next;
        if (!c->started && now - c->handed_us > 5 * GM_US_PER_SEC) {
            /* libmicrohttpd dropped it without a notification (out of memory): forget it */
            list_del(&g->served, c);
            free(c);
            continue;
        }
        if (c->received && !c->killed && now >= c->received_us + g->answer_us) {
            /* the answer is not delivered within answer_timeout_s: a client that reads it
             * slowly (a few bytes every timeout_s) holds its thread no longer */
            c->killed = true;
            shutdown(c->fd, SHUT_RDWR);
            continue;
        }
        if (c->received || !c->started)
            continue; /* received whole, or still being handed over */
        if (c->kill_stage == 0 && now >= c->accepted_us + g->timeout_us) {
            c->killed = true;
            c->killed_us = now;
            if (c->between) {
                /* kept alive, and no next request whole within request_timeout_s of the
                 * last answer: closed without an answer (none may have begun) */
                shutdown(c->fd, SHUT_RDWR);
                c->kill_stage = 2;
            } else if (!g->tls && !c->mhd_writes) {
                char d[160];
                snprintf(d, sizeof d,
                         "request: not received whole within %lld s of connecting "
                         "(request_timeout_s)",
                         (long long)(g->timeout_us / GM_US_PER_SEC));
                answer(g, c->fd, 408, "request-timeout", NULL, d, NULL, false, NULL);
                shutdown(c->fd, SHUT_WR);
                c->kill_stage = 1;
            } else {
                api__metrics_gate(g->srv, 408);
                shutdown(c->fd, SHUT_RDWR);
                c->kill_stage = 2;
            }
        } else if (c->kill_stage == 1 && now >= c->killed_us + HARD_KILL_US) {
            shutdown(c->fd, SHUT_RDWR);
            c->kill_stage = 2;
        }
    }
    pthread_mutex_unlock(&g->mu);
}

static void tick(api_gate *g)
{
    int64_t now = gm_mono_us();
    for (gate_conn *c = g->heads.first, *nx; c; c = nx) {
        nx = c->next;
        if (now >= c->accepted_us + g->timeout_us) {
            char d[160], inst[API_TARGET_MAX + 1];
            api_head h;
            api_refusal why;
            const char *instance = NULL;
            ssize_t n = recv(c->fd, g->buf, API_HEAD_MAX, MSG_PEEK);
            if (n > 0 && api__head_parse(g->buf, (size_t)n, g->max_body, &h, &why) >= 0 &&
                h.target_len) {
                snprintf(inst, sizeof inst, "%.*s", (int)h.target_len, h.target);
                instance = inst;
            }
            snprintf(d, sizeof d,
                     "request head: not complete within %lld s of connecting (request_timeout_s)",
                     (long long)(g->timeout_us / GM_US_PER_SEC));
            refuse(g, c, true, 408, "request-timeout", NULL, d, instance, false, NULL);
        } else if (c->peek_wanted && now >= c->next_peek_us) {
            try_head(g, c);
        }
    }
    for (gate_conn *c = g->drains.first, *nx; c; c = nx) {
        nx = c->next;
        if (now >= c->drain_until_us)
            conn_close(g, c);
    }
    watchdog(g, now);
    if (g->accept_paused_until && now >= g->accept_paused_until) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
        if (!epoll_ctl(g->ep, EPOLL_CTL_ADD, g->listen_fd, &ev))
            g->accept_paused_until = 0;
    }
}

static void *gate_main(void *arg)
{
    api_gate *g = arg;
    struct epoll_event evs[64];
    int64_t next_tick = gm_mono_us();
    for (;;) {
        int n = epoll_wait(g->ep, evs, 64, g->peeks_wanted ? PEEK_INTERVAL_US / 1000 : 50);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &g->wake_fd)
                return NULL;
            if (p == &g->listen_fd) {
                on_accept(g);
                continue;
            }
            gate_conn *c = p;
            if (c->phase == PH_DRAIN) {
                drain(g, c);
                continue;
            }
            if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->peer_closed = true;
            if (gm_mono_us() >= c->next_peek_us || c->peer_closed) {
                try_head(g, c);
            } else if (!c->peek_wanted) {
                c->peek_wanted = true; /* at most one peek per PEEK_INTERVAL_US */
                g->peeks_wanted++;
            }
        }
        int64_t now = gm_mono_us();
        if (now >= next_tick || g->peeks_wanted) {
            tick(g);
            next_tick = now + 50000;
        }
    }
}

api_gate *api__gate_new(api_server *s, const gm_api_config *cfg, bool tls, char *err,
                        size_t err_len)
{
    api_gate *g = gm_xcalloc(1, sizeof *g);
    g->srv = s;
    g->listen_fd = g->ep = g->wake_fd = -1;
    g->tls = tls;
    g->max_body = cfg->max_body_bytes;
    g->timeout_us = (int64_t)cfg->request_timeout_s * GM_US_PER_SEC;
    g->answer_us = (int64_t)cfg->answer_timeout_s * GM_US_PER_SEC;
    g->keep_alive = cfg->keep_alive_requests > 1 ? cfg->keep_alive_requests : 1;
    g->max_conn = cfg->max_connections;
    g->per_ip = cfg->per_ip_connections;
    g->reserve = cfg->health_reserve;
    g->per_ip_heads = cfg->per_ip_connections > 0
                          ? (cfg->per_ip_connections * 4 > 16 ? cfg->per_ip_connections * 4 : 16)
                          : 0;
    g->max_heads = cfg->max_connections * 4 + 64;
    /* every connection is a descriptor: keep the heads within what the process may open,
     * beside the served connections, PostgreSQL's and some for the rest */
    struct rlimit nofile;
    if (!getrlimit(RLIMIT_NOFILE, &nofile) && nofile.rlim_cur != RLIM_INFINITY) {
        long room = (long)nofile.rlim_cur - cfg->max_connections - cfg->health_reserve -
                    cfg->db_pool_size - 64;
        if (room < g->max_heads) {
            g->max_heads = room > 16 ? (int)room : 16;
            gm_warn("api",
                    "msg=\"request heads being read limited by the descriptor limit\" "
                    "max_heads=%d nofile=%lld (raise ulimit -n)",
                    g->max_heads, (long long)nofile.rlim_cur);
        }
    }
    pthread_mutex_init(&g->mu, NULL);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->listen_addr, &sa.sin_addr) != 1) {
        gm_fail(err, err_len, GM_ECONFIG, "listen: \"%s\" is not an IPv4 address",
                cfg->listen_addr);
        api__gate_free(g);
        return NULL;
    }
    int one = 1;
    g->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t sl = sizeof sa;
    if (g->listen_fd < 0 || setsockopt(g->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(g->listen_fd, (struct sockaddr *)&sa, sizeof sa) || listen(g->listen_fd, 512) ||
        getsockname(g->listen_fd, (struct sockaddr *)&sa, &sl)) {
        gm_fail(err, err_len, GM_EIO, "listen %s:%d: %s", cfg->listen_addr, cfg->port,
                strerror(errno));
        api__gate_free(g);
        return NULL;
    }
    g->port = ntohs(sa.sin_port);
    g->ep = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &g->wake_fd};
    if (g->ep < 0 || g->wake_fd < 0 || epoll_ctl(g->ep, EPOLL_CTL_ADD, g->listen_fd, &lev) ||
        epoll_ctl(g->ep, EPOLL_CTL_ADD, g->wake_fd, &wev)) {
        gm_fail(err, err_len, GM_EIO, "gate: epoll: %s", strerror(errno));
        api__gate_free(g);
        return NULL;
    }
    return g;
}

int api__gate_port(const api_gate *g)
{
    return g->port;
}

int api__gate_run(api_gate *g, struct MHD_Daemon *d, char *err, size_t err_len)
{
    g->d = d;
    if (pthread_create(&g->th, NULL, gate_main, g))
        return gm_fail(err, err_len, GM_EIO, "gate: cannot start its thread");
    g->running = true;
    return 0;
}

void api__gate_stop(api_gate *g)
{
    if (!g || !g->running)
        return;
    uint64_t one = 1;
    if (write(g->wake_fd, &one, sizeof one) != (ssize_t)sizeof one)
        gm_warn("api", "msg=\"gate: wake-up not written\" errno=%d", errno);
    pthread_join(g->th, NULL);
    g->running = false;
    while (g->heads.first)
        conn_close(g, g->heads.first);
    while (g->drains.first)
        conn_close(g, g->drains.first);
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    g->listen_fd = -1;
}

void api__gate_free(api_gate *g)
{
    if (!g)
        return;
    api__gate_stop(g);
    while (g->heads.first)
        conn_close(g, g->heads.first);
    while (g->drains.first)
        conn_close(g, g->drains.first);
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    if (g->ep >= 0)
        close(g->ep);
    if (g->wake_fd >= 0)
        close(g->wake_fd);
    while (g->served.first) { /* queued but never started when libmicrohttpd stopped */
        gate_conn *c = g->served.first;
        list_del(&g->served, c);
        free(c);
    }
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void api__gate_notify(void *cls, struct MHD_Connection *mc, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    api_gate *g = cls;
    pthread_mutex_lock(&g->mu);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        gate_conn *c = NULL;
        for (gate_conn *x = g->served.first; ci && x && !c; x = x->next) /* newest first */
            if (x->fd == ci->connect_fd && !x->started)
                c = x;
        if (c)
            c->started = true;
        *socket_context = c; /* NULL: not tracked (see the watchdog), still served */
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        gate_conn *c = *socket_context;
        *socket_context = NULL;
        if (c) {
            list_del(&g->served, c);
            free(c);
        }
    }
    pthread_mutex_unlock(&g->mu);
}

static gate_conn *conn_of(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

bool api__gate_begin(api_gate *g, struct MHD_Connection *mc, bool expect_continue)
{
    gate_conn *c = conn_of(mc);
    if (!c)
        return true;
    pthread_mutex_lock(&g->mu);
    bool ok = !c->killed;
    if (ok && expect_continue)
        c->mhd_writes = true; /* libmicrohttpd answers 100 Continue itself */
    pthread_mutex_unlock(&g->mu);
    return ok;
}

bool api__gate_received(api_gate *g, struct MHD_Connection *mc)
{
    gate_conn *c = conn_of(mc);
    if (!c)
        return true;
    pthread_mutex_lock(&g->mu);
    bool ok = !c->killed;
    c->received = true;
    c->received_us = gm_mono_us();
    c->between = false;
    c->requests++;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

bool api__gate_keep(api_gate *g, struct MHD_Connection *mc)
{
    if (g->keep_alive <= 1)
        return false;
    gate_conn *c = conn_of(mc);
    if (!c)
        return false; /* not tracked: no deadline could be kept for a next request */
    pthread_mutex_lock(&g->mu);
    /* a health check's connection used the reserve: it serves nothing else */
    bool keep =
        !c->killed && !c->health && !c->pipelined && c->received && c->requests < g->keep_alive;
    pthread_mutex_unlock(&g->mu);
    return keep;
}

void api__gate_next(api_gate *g, struct MHD_Connection *mc)
{
    gate_conn *c = conn_of(mc);
    if (!c || g->keep_alive <= 1)
        return;
    pthread_mutex_lock(&g->mu);
    if (!c->killed) { /* the next request's deadline counts from this answer's end */
        c->accepted_us = gm_mono_us();
        c->received = false;
        c->mhd_writes = false;
        c->between = true;
    }
    pthread_mutex_unlock(&g->mu);
}
