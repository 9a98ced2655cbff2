/* The node agent's core: configuration, the node clients, requests of POST /v1/events (split,
 * completed and strictly decoded event by event, recorded, answered), /healthz, /metrics, the
 * ticker thread (delivery latency, GPU waits, spool-full transitions, progress), stats and
 * invariants.
 *
 * DESIGN. A request is checked in the HTTP worker that received it, without any side effect:
 * the body is split into events (JSON lines, a CloudEvents batch array, or one event), each is
 * completed (gm_event_complete: what the agent knows better than the server) and decoded by
 * the strict decoder. Then, under rec_mu (one request records at a time, so that its seqs per
 * source are contiguous and the answer can give them as ranges), the agent checks that the
 * spool has room for the whole request (else 429, nothing recorded) and records the accepted
 * events in order through the node client: gm_node_record_event assigns seq and id, events
 * with their own id and seq go in as their canonical JSON. The answer is built only after the
 * last event is in the spool (DURABLE_DISK: after gm_node_sync covered it). A request whose
 * events wait for their GPU time is queued (gpu.c) and recorded when the collector has closed
 * every window up to its arrival.
 */
#include "agent_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A spool record's most bytes for one event: the frame of gm_node.h (32-byte header, key,
 * payload, padding to 8), with the room the spool keeps free for an encoded event. */
#define REC_HDR_BYTES 32u
#define LOG_EVERY_US  (5 * GM_US_PER_SEC)

const double agent__hist_le_s[AGENT_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

void agent__hist_observe(agent__hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    size_t i = 0;
    while (i < AGENT_HIST_BUCKETS && (double)us > agent__hist_le_s[i] * 1e6)
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
}

/* ---- text buffers --------------------------------------------------------------------- */
void agent__buf_put(agent__buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2 + 256;
        b->p = gm_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void agent__buf_printf(agent__buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        agent__buf_put(b, tmp, (size_t)n);
        return;
    }
    char *big = gm_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    agent__buf_put(b, big, (size_t)n);
    free(big);
}

/* A JSON string; the texts put here are the decoder's reasons (printable ASCII) and
 * identifiers, but anything is escaped. */
void agent__buf_json_str(agent__buf *b, const char *s)
{
    agent__buf_lit(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            agent__buf_put(b, e, 2);
        } else if (*p < 0x20 || *p >= 0x7f) {
            agent__buf_printf(b, "\\u%04x", *p);
        } else {
            agent__buf_put(b, (const char *)p, 1);
        }
    }
    agent__buf_lit(b, "\"");
}

/* ---- configuration -------------------------------------------------------------------- */
void gm_agent_config_init(gm_agent_config *c)
{
    memset(c, 0, sizeof *c);
    gm_node_config_init(&c->node);
    c->socket_mode = 0660;
    c->threads = 2;
    c->max_connections = 256;
    c->sync_timeout_ms = 5000;
    c->max_body_bytes = (size_t)4 << 20;
    c->max_events = 10000;
    c->retry_after_s = 1;
    c->gpu_topic = "gridmeter.gpu.v1";
    c->gpu_spool_max_bytes = (uint64_t)256 << 20;
    c->gpu_request_ttl_s = 600;
}

static bool id_charset(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("._-:/@+=~", *s)))
            return false;
    return true;
}

static uint64_t segment_default(uint64_t max)
{
    uint64_t seg = max / 8;
    if (seg > (64u << 20))
        seg = 64u << 20;
    if (seg < (64u << 10))
        seg = 64u << 10;
    return seg;
}

/* ---- requests ------------------------------------------------------------------------- */
agent__req *agent__req_new(gm_agent *a, int route)
{
    agent__req *r = gm_xcalloc(1, sizeof *r);
    r->a = a;
    r->route = route;
    r->t0_us = gm_mono_us();
    return r;
}

void agent__req_free(agent__req *r)
{
    if (!r)
        return;
    free(r->items);
    free(r->errors);
    free(r->answer);
    free(r);
}

static agent__error *add_error(agent__req *r, size_t index, uint32_t line)
{
    if (r->n_errors == r->cap_errors) {
        r->cap_errors = r->cap_errors ? r->cap_errors * 2 : 8;
        r->errors = gm_xrealloc(r->errors, r->cap_errors * sizeof *r->errors);
    }
    agent__error *e = &r->errors[r->n_errors++];
    memset(e, 0, sizeof *e);
    e->index = index;
    e->line = line;
    return e;
}

static void set_rule(gm_event_error *e, const char *field, const char *fmt, ...) GM_PRINTF(3, 4);
static void set_rule(gm_event_error *e, const char *field, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->rule, sizeof e->rule, fmt, ap);
    va_end(ap);
}

void agent__count(agent__req *r)
{
    gm_agent *a = r->a;
    int cls = r->status / 100;
    atomic_fetch_add(&a->requests, 1);
    atomic_fetch_add(&a->route_status[r->route][cls >= 2 && cls <= 5 ? cls : 0], 1);
    agent__hist_observe(&a->request_s, gm_mono_us() - r->t0_us);
}

static void answer_take(agent__req *r, int status, agent__buf *b)
{
    r->status = status;
    free(r->answer);
    r->answer = b->p ? b->p : gm_xstrdup("{}");
    b->p = NULL;
}

void agent__answer_error(agent__req *r, int status, const char *field, const char *rule)
{
    agent__buf b = {0};
    agent__buf_lit(&b, "{\"accepted\":0,\"error\":{\"field\":");
    agent__buf_json_str(&b, field);
    agent__buf_lit(&b, ",\"rule\":");
    agent__buf_json_str(&b, rule);
    agent__buf_lit(&b, "}}\n");
    answer_take(r, status, &b);
}

/* Logs refused events, at most 10 lines per 5 s, then how many more. */
static void log_refusal(gm_agent *a, const agent__error *e)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t since;
    static uint64_t shown, more;
    pthread_mutex_lock(&mu);
    int64_t now = gm_mono_us();
    if (now - since >= LOG_EVERY_US) {
        if (more)
            gm_warn(AGENT_COMP, "msg=\"events refused (not logged one by one)\" count=%" PRIu64,
                    more);
        since = now;
        shown = more = 0;
    }
    bool show = shown < 10;
    if (show)
        shown++;
    else
        more++;
    pthread_mutex_unlock(&mu);
    if (show) {
        char rule[2 * sizeof e->e.rule];
        size_t o = 0;
        for (const char *p = e->e.rule; *p && o + 2 < sizeof rule; p++) {
            if (*p == '"' || *p == '\\')
                rule[o++] = '\\';
            rule[o++] = *p;
        }
        rule[o] = '\0';
        gm_warn(AGENT_COMP,
                "msg=\"event refused\" index=%zu line=%u field=%s rule=\"%s\" source=%s id=%s "
                "agent=%s",
                e->index, e->line, e->e.field, rule, e->e.source[0] ? e->e.source : "-",
                e->e.id[0] ? e->e.id : "-", a->source);
    }
}

/* ---- splitting a body into events ----------------------------------------------------- */
static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

typedef struct span {
    size_t off, len;
    uint32_t line;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static void spans_add(spans *s, size_t off, size_t len, uint32_t line)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 128;
        s->v = gm_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = (span){off, len, line};
}

/* The end of the JSON value that starts at s[i] (strings aware of escapes, brackets counted),
 * or 0 when it does not end inside the body. */
static size_t value_end(const char *s, size_t i, size_t n)
{
    int depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            if (i >= n)
                return 0;
            i++;
            if (!depth)
                return i;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (!depth)
                return i;
            if (!--depth)
                return i + 1;
        } else if (!depth && (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n')) {
            return i;
        }
        i++;
    }
    return depth ? 0 : i;
}

/* A CloudEvents batch: a JSON array of events. Returns 0 or fills rule. */
static int split_array(const char *s, size_t n, spans *out, size_t max, char *rule, size_t rule_len,
                       int *status)
{
    *status = 400;
    size_t i = skip_ws(s, 0, n);
    if (i >= n || s[i] != '[') {
        snprintf(rule, rule_len,
                 "a CloudEvents batch must be a JSON array of events, got %s at byte %zu",
                 i >= n ? "nothing" : "another value", i);
        return GM_EINVAL;
    }
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == ']') {
        i = skip_ws(s, i + 1, n);
        if (i != n) {
            snprintf(rule, rule_len, "invalid JSON at byte %zu: text after the array", i);
            return GM_EINVAL;
        }
        return 0;
    }
    for (;;) {
        size_t e = i < n ? value_end(s, i, n) : 0;
        if (!e || e == i) {
            snprintf(rule, rule_len, "invalid JSON at byte %zu: %s", i,
                     i >= n   ? "the array is not closed"
                     : e == i ? "expected an event"
                              : "the event that starts here does not end before the body does");
            return GM_EINVAL;
        }
        if (out->n == max) {
            *status = 413;
            snprintf(rule, rule_len, "must hold at most %zu events, got more", max);
            return GM_EINVAL;
        }
        spans_add(out, i, e - i, 0);
        i = skip_ws(s, e, n);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, i + 1, n);
            continue;
        }
        if (i < n && s[i] == ']') {
            i = skip_ws(s, i + 1, n);
            if (i != n) {
                snprintf(rule, rule_len, "invalid JSON at byte %zu: text after the array", i);
                return GM_EINVAL;
            }
            return 0;
        }
        snprintf(rule, rule_len, "invalid JSON at byte %zu: %s", i,
                 i >= n ? "the array is not closed" : "expected ',' or ']' after an event");
        return GM_EINVAL;
    }
}

/* JSON lines: one event per line, blank lines skipped. */
static int split_lines(const char *s, size_t n, spans *out, size_t max, char *rule, size_t rule_len,
                       int *status)
{
    uint32_t line = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - s) : n;
        line++;
        size_t b = skip_ws(s, i, e), t = e;
        while (t > b && (s[t - 1] == ' ' || s[t - 1] == '\t' || s[t - 1] == '\r'))
            t--;
        if (t > b) {
            if (out->n == max) {
                *status = 413;
                snprintf(rule, rule_len, "must hold at most %zu events, got more", max);
                return GM_EINVAL;
            }
            spans_add(out, b, t - b, line);
        }
        i = e + 1;
    }
    return 0;
}

typedef enum { CT_NONE = 0, CT_SINGLE, CT_LINES, CT_BATCH } body_kind;

/* The media type of a Content-Type header; charset, when given, must be UTF-8. */
static body_kind content_kind(const char *ct, char *rule, size_t rule_len)
{
    if (!ct || !*ct) {
        snprintf(rule, rule_len, "Content-Type is required");
        return CT_NONE;
    }
    const char *semi = strchr(ct, ';');
    size_t n = semi ? (size_t)(semi - ct) : strlen(ct);
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    static const struct {
        const char *type;
        body_kind kind;
    } types[] = {{"application/cloudevents-batch+json", CT_BATCH},
                 {"application/x-ndjson", CT_LINES},
                 {"application/jsonl", CT_LINES},
                 {"application/json-lines", CT_LINES},
                 {"application/cloudevents+json", CT_SINGLE},
                 {"application/json", CT_SINGLE}};
    body_kind kind = CT_NONE;
    for (size_t i = 0; i < GM_ARRAY_LEN(types) && !kind; i++)
        if (strlen(types[i].type) == n && !strncasecmp(ct, types[i].type, n))
            kind = types[i].kind;
    if (!kind) {
        snprintf(rule, rule_len,
                 "must be application/x-ndjson (JSON lines), application/cloudevents-batch+json "
                 "(a JSON array of events) or application/json (one event), got \"%.60s\"",
                 ct);
        return CT_NONE;
    }
    for (const char *p = semi; p && *p;) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!strncasecmp(p, "charset=", 8)) {
            const char *v = p + 8;
            if (*v == '"')
                v++;
            if (strncasecmp(v, "utf-8", 5) || (v[5] && v[5] != ';' && v[5] != '"' && v[5] != ' ')) {
                snprintf(rule, rule_len, "charset must be utf-8, got \"%.40s\"", p + 8);
                return CT_NONE;
            }
        }
        p = strchr(p, ';');
    }
    return kind;
}

static bool query_flag(const char *query, const char *name)
{
    if (!query)
        return false;
    size_t nl = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (!strncmp(p, name, nl) && p[nl] == '=') {
            const char *v = p + nl + 1;
            return !strncmp(v, "true", 4) || !strncmp(v, "1", 1) || !strncmp(v, "yes", 3);
        }
    }
    return false;
}

/* ---- POST /v1/events: check --------------------------------------------------------- */
static bool gpu_running(gm_agent *a)
{
    pthread_mutex_lock(&a->gpu_mu);
    bool on = a->gc != NULL && !a->gpu_final;
    pthread_mutex_unlock(&a->gpu_mu);
    return on;
}

bool agent__events_begin(agent__req *r, const char *content_type, const char *query,
                         const char *body, size_t len)
{
    gm_agent *a = r->a;
    char rule[256];
    if (atomic_load(&a->closing)) {
        agent__answer_error(r, 503, "agent", "is shutting down: send the request again later");
        return true;
    }
    body_kind kind = content_kind(content_type, rule, sizeof rule);
    if (!kind) {
        atomic_fetch_add(&a->requests_bad, 1);
        agent__answer_error(r, 415, "Content-Type", rule);
        return true;
    }
    r->atomic = query_flag(query, "atomic");
    spans sp = {0};
    int status = 400, rc = 0;
    if (kind == CT_BATCH) {
        rc = split_array(body, len, &sp, a->cfg.max_events, rule, sizeof rule, &status);
    } else if (kind == CT_LINES) {
        rc = split_lines(body, len, &sp, a->cfg.max_events, rule, sizeof rule, &status);
    } else {
        size_t b = skip_ws(body, 0, len), e = len;
        while (e > b && (body[e - 1] == ' ' || body[e - 1] == '\t' || body[e - 1] == '\r' ||
                         body[e - 1] == '\n'))
            e--;
        if (b < e && body[b] == '[') {
            snprintf(rule, sizeof rule,
                     "%s carries one event; send several as application/cloudevents-batch+json "
                     "(a JSON array) or application/x-ndjson (JSON lines)",
                     "application/json");
            rc = GM_EINVAL;
        } else if (b == e) {
            snprintf(rule, sizeof rule, "is empty: expected one event");
            rc = GM_EINVAL;
        } else {
            spans_add(&sp, b, e - b, 0);
        }
    }
    if (rc) {
        free(sp.v);
        atomic_fetch_add(&a->requests_bad, 1);
        agent__answer_error(r, status, "body", rule);
        return true;
    }
    bool gpu_fill = a->cfg.gpu != GM_AGENT_GPU_OFF;
    r->n_items = sp.n;
    r->items = gm_xmalloc((sp.n ? sp.n : 1) * sizeof *r->items);
    int64_t now = gm_now_us();
    gm_event_fill fill = {.source = a->source, .site = a->site, .time_us = now, .gpu_us = gpu_fill};
    for (size_t i = 0; i < sp.n; i++) {
        agent__item *it = &r->items[i];
        it->state = ITEM_OK;
        it->line = sp.v[i].line;
        it->err = -1;
        gm_event_error e;
        memset(&e, 0, sizeof e);
        int drc = gm_event_complete_decode(body + sp.v[i].off, sp.v[i].len, &fill, &it->ev,
                                           &it->filled, &e);
        bool agent_rule = drc == 0;
        if (!drc && it->ev.type != GM_EVENT_USAGE) {
            set_rule(&e, "type",
                     "must be \"gridmeter.usage.v1\" here: gridmeter.gpu.v1 windows come from the "
                     "agent's GPU accounting");
            drc = GM_EINVAL;
        } else if (!drc && !a->cfg.allow_other_sources && strcmp(it->ev.source, a->source)) {
            set_rule(&e, "source",
                     "must be this agent's source %s (an agent that records for several sources "
                     "runs with --allow-other-sources)",
                     a->source);
            drc = GM_EINVAL;
        } else if (!drc && !(it->filled & GM_EVENT_FILLED_NUMBERS) &&
                   !strcmp(it->ev.source, a->source)) {
            set_rule(&e, "data.seq",
                     "the agent numbers source %s itself: give neither id nor data.seq", a->source);
            drc = GM_EINVAL;
        }
        if (drc && (it->filled & GM_EVENT_FILLED_NUMBERS))
            e.id[0] = '\0'; /* the placeholder, not an id of the sender's */
        if (drc) {
            if (agent_rule) { /* the event decoded: name it */
                snprintf(e.source, sizeof e.source, "%s", it->ev.source);
                if (!(it->filled & GM_EVENT_FILLED_NUMBERS))
                    snprintf(e.id, sizeof e.id, "%s", it->ev.id);
            }
            it->state = ITEM_BAD;
            it->err = (int)r->n_errors;
            agent__error *ae = add_error(r, i, it->line);
            ae->e = e;
            r->n_bad++;
            log_refusal(a, ae);
            continue;
        }
        if (it->filled & GM_EVENT_FILLED_GPU_US)
            r->n_gpu++;
    }
    free(sp.v);
    if (r->atomic && r->n_bad) {
        agent__events_finish(r); /* answers without recording */
        return true;
    }
    if (r->n_gpu && r->n_bad < r->n_items && gpu_running(a)) {
        r->wait_ns = agent__gpu_now_ns(a);
        return false;
    }
    agent__events_finish(r);
    return true;
}

/* ---- POST /v1/events: record and answer --------------------------------------------- */
typedef struct seq_range {
    const char *source;
    uint64_t first, last;
} seq_range;

/* Invariant 3: per source, each range starts right after the last one given in this run. */
static void seq_note(gm_agent *a, const seq_range *g)
{
    for (size_t i = 0; i < a->n_seqs; i++) {
        if (!strcmp(a->seqs[i].source, g->source)) {
            if (g->first != a->seqs[i].last + 1) {
                a->seq_violations++;
                gm_error(AGENT_COMP,
                         "msg=\"seq range does not follow the last one\" source=%s last=%" PRIu64
                         " first=%" PRIu64,
                         g->source, a->seqs[i].last, g->first);
            }
            a->seqs[i].last = g->last;
            return;
        }
    }
    if (a->n_seqs == a->cap_seqs) {
        a->cap_seqs = a->cap_seqs ? a->cap_seqs * 2 : 8;
        a->seqs = gm_xrealloc(a->seqs, a->cap_seqs * sizeof *a->seqs);
    }
    a->seqs[a->n_seqs++] = (agent__src_seq){gm_xstrdup(g->source), g->last};
}

/* Does the spool have room for the whole request? The spool allocates whole segments of
 * segment_bytes and seals the active one when its free room is less than the largest record
 * (rec_max), so the request's records (at most `bytes` together) need at most
 * ceil(bytes / (segment - rec_max)) new segments. Refusing when those cannot be had keeps a
 * request all or nothing (429 before the node client's own GM_EFULL could cut it). */
static bool room_for(gm_agent *a, const agent__req *r)
{
    gm_node_stats st;
    gm_node_stats_get(a->node, &st);
    uint64_t seg = a->cfg.node.segment_bytes;
    uint64_t rec_max = (REC_HDR_BYTES + GM_EVENT_SOURCE_MAX + GM_EVENT_MAX_BYTES + 1 + 7) & ~7u;
    uint64_t bytes = 0;
    for (size_t i = 0; i < r->n_items; i++) {
        const gm_event *ev = &r->items[i].ev;
        if (r->items[i].state != ITEM_OK)
            continue;
        /* the canonical text: under 400 bytes of names and punctuation, the identifiers, at
         * most 16 digits for each of the six numbers */
        size_t canon = 400 + strlen(ev->source) + GM_EVENT_ID_MAX + strlen(ev->tenant) +
                       strlen(ev->site) + strlen(ev->model) + strlen(ev->request_id) + 6 * 16;
        if (canon > GM_EVENT_MAX_BYTES)
            canon = GM_EVENT_MAX_BYTES;
        bytes += (REC_HDR_BYTES + strlen(ev->source) + canon + 7) & ~(size_t)7;
    }
    if (!bytes)
        return true;
    uint64_t segs = (bytes + (seg - rec_max) - 1) / (seg - rec_max);
    return st.spool_bytes + segs * seg <= st.spool_max_bytes;
}

static void record_all(agent__req *r, size_t *accepted, seq_range *ranges, size_t *n_ranges,
                       size_t max_ranges, size_t *own)
{
    gm_agent *a = r->a;
    char err[512];
    bool stop = false;
    int stop_state = ITEM_OK;
    char stop_rule[224] = "";
    for (size_t i = 0; i < r->n_items; i++) {
        agent__item *it = &r->items[i];
        if (it->state != ITEM_OK)
            continue;
        int rc;
        if (stop) {
            rc = stop_state == ITEM_FULL ? GM_EFULL : GM_EIO;
        } else if (it->filled & GM_EVENT_FILLED_NUMBERS) {
            rc = gm_node_record_event(a->node, &it->ev, err, sizeof err);
        } else {
            char canon[GM_EVENT_MAX_BYTES + 1];
            size_t cl = gm_event_encode(&it->ev, canon, sizeof canon);
            rc = cl ? gm_node_send_raw(a->node, it->ev.source, canon, cl, err, sizeof err)
                    : gm_fail(err, sizeof err, GM_EINVAL, "does not encode");
        }
        if (rc == 0) {
            (*accepted)++;
            if (!(it->filled & GM_EVENT_FILLED_NUMBERS)) {
                (*own)++;
                continue;
            }
            size_t k = 0;
            while (k < *n_ranges && strcmp(ranges[k].source, it->ev.source))
                k++;
            if (k == *n_ranges && k < max_ranges) {
                ranges[k] = (seq_range){it->ev.source, it->ev.seq, it->ev.seq};
                (*n_ranges)++;
            } else if (k < *n_ranges) {
                ranges[k].last = it->ev.seq;
            }
            continue;
        }
        if (!stop) {
            stop = true;
            stop_state = rc == GM_EFULL ? ITEM_FULL : ITEM_IO;
            snprintf(stop_rule, sizeof stop_rule, "%.200s", err);
            if (rc != GM_EFULL)
                gm_error(AGENT_COMP,
                         "msg=\"spool append failed; the rest of the request is not "
                         "recorded\" error=\"%s\"",
                         err);
        }
        it->state = (uint8_t)stop_state;
        it->err = (int)r->n_errors;
        agent__error *ae = add_error(r, i, it->line);
        ae->retry = true;
        snprintf(ae->e.source, sizeof ae->e.source, "%s", it->ev.source);
        if (stop_state == ITEM_FULL)
            set_rule(&ae->e, "spool", "full: not recorded (%.150s); send this event again later",
                     stop_rule);
        else
            set_rule(&ae->e, "spool", "I/O error: not recorded (%.150s); send this event again",
                     stop_rule);
        if (stop_state == ITEM_FULL)
            atomic_fetch_add(&a->rejected_full, 1);
    }
}

static void note_latency(gm_agent *a, uint64_t lsn)
{
    pthread_mutex_lock(&a->lat_mu);
    if (a->lat_len == a->lat_cap) {
        if (a->lat_cap >= ((size_t)1 << 20)) {
            a->lat_unsampled++;
            pthread_mutex_unlock(&a->lat_mu);
            return;
        }
        size_t cap = a->lat_cap ? a->lat_cap * 2 : 1024;
        agent__lat *v = gm_xmalloc(cap * sizeof *v);
        for (size_t i = 0; i < a->lat_len; i++)
            v[i] = a->lat[(a->lat_head + i) % a->lat_cap];
        free(a->lat);
        a->lat = v;
        a->lat_cap = cap;
        a->lat_head = 0;
    }
    a->lat[(a->lat_head + a->lat_len) % a->lat_cap] = (agent__lat){lsn, gm_mono_us()};
    a->lat_len++;
    pthread_mutex_unlock(&a->lat_mu);
}

/* The counters of invariants 1 and 2 move together, under rec_mu (gm_agent_check takes it). */
static void count_events(gm_agent *a, size_t accepted, size_t n_items)
{
    atomic_fetch_add(&a->accepted, accepted);
    atomic_fetch_add(&a->rejected, n_items - accepted);
    atomic_fetch_add(&a->events_seen, n_items);
}

void agent__events_finish(agent__req *r)
{
    gm_agent *a = r->a;
    size_t accepted = 0, own = 0, n_ranges = 0;
    seq_range ranges[16];
    bool refused_atomic = r->atomic && r->n_bad;
    bool full = false;
    const char *durable = a->cfg.durability == GM_AGENT_DURABLE_DISK ? "disk" : "spool";
    char sync_err[256] = "";
    size_t n_ok = r->n_items - r->n_bad;
    if (!refused_atomic && n_ok) {
        pthread_mutex_lock(&a->rec_mu);
        if (!room_for(a, r)) {
            full = true;
        } else {
            if (r->n_gpu)
                agent__gpu_fill(r);
            record_all(r, &accepted, ranges, &n_ranges, GM_ARRAY_LEN(ranges), &own);
            for (size_t k = 0; k < n_ranges; k++)
                seq_note(a, &ranges[k]);
        }
        gm_node_stats st;
        gm_node_stats_get(a->node, &st);
        count_events(a, accepted, r->n_items);
        pthread_mutex_unlock(&a->rec_mu);
        if (accepted) {
            note_latency(a, st.last_lsn);
            if (a->cfg.durability == GM_AGENT_DURABLE_DISK &&
                gm_node_sync(a->node, a->cfg.sync_timeout_ms, sync_err, sizeof sync_err)) {
                durable = "spool";
                gm_warn(AGENT_COMP, "msg=\"answer before the fsync\" reason=\"%s\"", sync_err);
            }
        }
    } else {
        pthread_mutex_lock(&a->rec_mu);
        count_events(a, 0, r->n_items);
        pthread_mutex_unlock(&a->rec_mu);
    }
    if (full) {
        for (size_t i = 0; i < r->n_items; i++) {
            agent__item *it = &r->items[i];
            if (it->state != ITEM_OK)
                continue;
            it->state = ITEM_FULL;
        }
        atomic_fetch_add(&a->rejected_full, n_ok);
        atomic_fetch_add(&a->requests_full, 1);
    }
    size_t rejected = r->n_items - accepted;

    agent__buf b = {0};
    agent__buf_printf(&b, "{\"accepted\":%zu,\"rejected\":%zu", accepted, rejected);
    if (accepted)
        agent__buf_printf(&b, ",\"durable\":\"%s\"", durable);
    if (sync_err[0]) {
        agent__buf_lit(&b, ",\"warning\":");
        agent__buf_json_str(&b, sync_err);
    }
    if (n_ranges) {
        agent__buf_lit(&b, ",\"seqs\":[");
        for (size_t k = 0; k < n_ranges; k++) {
            agent__buf_printf(&b, "%s{\"source\":", k ? "," : "");
            agent__buf_json_str(&b, ranges[k].source);
            agent__buf_printf(&b, ",\"first\":%" PRIu64 ",\"last\":%" PRIu64 "}", ranges[k].first,
                              ranges[k].last);
        }
        agent__buf_lit(&b, "]");
    }
    if (own)
        agent__buf_printf(&b, ",\"numbered_by_caller\":%zu", own);
    if (r->n_gpu && accepted)
        agent__buf_printf(&b, ",\"gpu_filled\":%zu", r->n_gpu);
    if (refused_atomic)
        agent__buf_lit(&b, ",\"atomic\":true");
    if (full)
        agent__buf_printf(&b,
                          ",\"error\":{\"field\":\"spool\",\"rule\":\"full: the spool cannot take "
                          "these %zu events until Kafka acknowledges what it holds; nothing of "
                          "this request was recorded, send it again\"}",
                          n_ok);
    if (r->n_errors) {
        agent__buf_lit(&b, ",\"errors\":[");
        for (size_t k = 0; k < r->n_errors; k++) {
            const agent__error *e = &r->errors[k];
            agent__buf_printf(&b, "%s{\"index\":%zu", k ? "," : "", e->index);
            if (e->line)
                agent__buf_printf(&b, ",\"line\":%u", e->line);
            agent__buf_lit(&b, ",\"field\":");
            agent__buf_json_str(&b, e->e.field);
            agent__buf_lit(&b, ",\"rule\":");
            agent__buf_json_str(&b, e->e.rule);
            if (e->e.source[0]) {
                agent__buf_lit(&b, ",\"source\":");
                agent__buf_json_str(&b, e->e.source);
            }
            if (e->e.id[0]) {
                agent__buf_lit(&b, ",\"id\":");
                agent__buf_json_str(&b, e->e.id);
            }
            if (e->retry)
                agent__buf_lit(&b, ",\"retry\":true");
            agent__buf_lit(&b, "}");
        }
        agent__buf_lit(&b, "]");
    }
    agent__buf_lit(&b, "}\n");
    int status = 200;
    bool io = false;
    for (size_t i = 0; i < r->n_items; i++)
        io |= r->items[i].state == ITEM_IO;
    if (!accepted && r->n_items) {
        if (full || (n_ok && !io && !refused_atomic))
            status = 429;
        else if (io)
            status = 500;
        else
            status = 422;
    }
    if (status == 429)
        r->retry_after_s = a->cfg.retry_after_s;
    answer_take(r, status, &b);
}

/* ---- /healthz and /metrics ------------------------------------------------------------ */
static bool spool_full(gm_agent *a, const gm_node_stats *st)
{
    (void)a;
    return st->spool_bytes + a->cfg.node.segment_bytes > st->spool_max_bytes;
}

static const char *gpu_state(gm_agent *a, char *buf, size_t len)
{
    if (a->cfg.gpu == GM_AGENT_GPU_OFF)
        return "off";
    pthread_mutex_lock(&a->gpu_mu);
    if (a->gc)
        snprintf(buf, len, "%s", a->cfg.gpu == GM_AGENT_GPU_CUPTI ? "cupti" : "feed");
    else
        snprintf(buf, len, "unavailable: %s", a->gpu_why);
    pthread_mutex_unlock(&a->gpu_mu);
    return buf;
}

void agent__healthz(gm_agent *a, agent__req *r)
{
    gm_node_stats st;
    gm_node_stats_get(a->node, &st);
    bool closing = atomic_load(&a->closing), full = spool_full(a, &st);
    char g[400];
    agent__buf b = {0};
    agent__buf_printf(&b, "{\"status\":\"%s\",\"source\":",
                      closing ? "closing"
                      : full  ? "full"
                              : "ok");
    agent__buf_json_str(&b, a->source);
    agent__buf_printf(&b,
                      ",\"spool_bytes\":%" PRIu64 ",\"spool_max_bytes\":%" PRIu64
                      ",\"unacked\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"gpu\":",
                      st.spool_bytes, st.spool_max_bytes, st.unacked,
                      (uint64_t)atomic_load(&a->accepted));
    agent__buf_json_str(&b, gpu_state(a, g, sizeof g));
    agent__buf_printf(&b, ",\"gpu_waiting\":%" PRIu64 "}\n",
                      (uint64_t)atomic_load(&a->gpu_waiting));
    answer_take(r, closing || full ? 503 : 200, &b);
}

static void metric(agent__buf *b, const char *name, const char *type, const char *help)
{
    agent__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_out(agent__buf *b, const char *name, const char *help, agent__hist *h)
{
    metric(b, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i <= AGENT_HIST_BUCKETS; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < AGENT_HIST_BUCKETS)
            agent__buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, agent__hist_le_s[i],
                              cum);
        else
            agent__buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    }
    agent__buf_printf(b, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
                      (double)atomic_load(&h->sum_us) / 1e6, name,
                      (uint64_t)atomic_load(&h->count));
}

void agent__metrics(gm_agent *a, agent__req *r)
{
    gm_agent_stats s;
    gm_agent_stats_get(a, &s);
    agent__buf b = {0};
    static const char *routes[N_ROUTES] = {"events", "gpu_steps", "healthz", "metrics", "other"};
    static const char *cls[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    metric(&b, "gridmeter_agent_requests_total", "counter",
           "answered requests by path and status class");
    for (int i = 0; i < N_ROUTES; i++)
        for (int c = 0; c < 6; c++) {
            uint64_t v = atomic_load(&a->route_status[i][c]);
            if (v || (c == 2 && i == ROUTE_EVENTS))
                agent__buf_printf(
                    &b, "gridmeter_agent_requests_total{path=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                    routes[i], cls[c], v);
        }
#define COUNTER(name, help, v)                                                                     \
    do {                                                                                           \
        metric(&b, name, "counter", help);                                                         \
        agent__buf_printf(&b, "%s %" PRIu64 "\n", name, (uint64_t)(v));                            \
    } while (0)
#define GAUGE(name, help, v)                                                                       \
    do {                                                                                           \
        metric(&b, name, "gauge", help);                                                           \
        agent__buf_printf(&b, "%s %" PRIu64 "\n", name, (uint64_t)(v));                            \
    } while (0)
    COUNTER("gridmeter_agent_events_accepted_total",
            "events recorded in the spool and answered as accepted", s.accepted);
    COUNTER("gridmeter_agent_events_rejected_total",
            "events answered as not recorded (invalid, or no room)", s.rejected);
    COUNTER("gridmeter_agent_events_rejected_full_total",
            "of the rejected events, those refused because the spool was full", s.rejected_full);
    COUNTER("gridmeter_agent_backpressure_total", "requests answered 429 (spool full)",
            s.requests_full);
    COUNTER("gridmeter_agent_requests_refused_total", "requests refused as a whole (400, 413, 415)",
            s.requests_bad);
    GAUGE("gridmeter_agent_spool_bytes", "size of the usage spool's files", s.node.spool_bytes);
    GAUGE("gridmeter_agent_spool_max_bytes", "bound on the usage spool", s.node.spool_max_bytes);
    GAUGE("gridmeter_agent_unacked_events",
          "usage events in the spool that Kafka has not acknowledged", s.node.unacked);
    COUNTER("gridmeter_agent_delivered_total", "successful delivery reports from Kafka (usage)",
            s.node.acked);
    COUNTER("gridmeter_agent_delivery_errors_total",
            "delivery reports with an error (each event is produced again)",
            s.node.delivery_errors);
    COUNTER("gridmeter_agent_producer_rebuilds_total", "producers rebuilt after a fatal error",
            s.node.producer_rebuilds);
    GAUGE("gridmeter_agent_recovered_events", "unacknowledged events found in the spool at start",
          s.node.recovered);
    hist_out(&b, "gridmeter_agent_delivery_seconds",
             "per request: from the answer until Kafka acknowledged its last event and every event "
             "before it",
             &a->delivery_s);
    hist_out(&b, "gridmeter_agent_request_seconds", "answer time of requests (every path)",
             &a->request_s);
    GAUGE("gridmeter_agent_gpu_up", "1 when a GPU collector runs", s.gpu_running);
    COUNTER("gridmeter_agent_gpu_events_total", "gridmeter.gpu.v1 events recorded", s.gpu_events);
    COUNTER("gridmeter_agent_gpu_rows_lost_total",
            "gpu.v1 rows not recorded at shutdown (logged one by one)",
            atomic_load(&a->gpu_rows_lost));
    COUNTER("gridmeter_agent_gpu_steps_total", "step manifests accepted", s.gpu_steps);
    COUNTER("gridmeter_agent_gpu_filled_total", "usage events whose gpu_us the agent filled",
            s.gpu_filled);
    COUNTER("gridmeter_agent_gpu_unmatched_total",
            "of those, with no GPU time for their request (gpu_us 0)", s.gpu_unmatched);
    COUNTER("gridmeter_agent_gpu_wait_timeouts_total",
            "requests answered after the longest GPU wait (the collector did not close windows)",
            s.gpu_wait_timeouts);
    GAUGE("gridmeter_agent_gpu_waiting_requests", "requests waiting for their windows to close",
          s.gpu_waiting);
    GAUGE("gridmeter_agent_gpu_spool_bytes", "size of the GPU spool's files",
          s.gpu_node.spool_bytes);
    GAUGE("gridmeter_agent_gpu_unacked_events", "gpu.v1 events that Kafka has not acknowledged",
          s.gpu_node.unacked);
    if (a->gc) {
        gm_gpu_collector_stats gs;
        pthread_mutex_lock(&a->gpu_mu);
        gm_gpu_collector_stats_get(a->gc, &gs);
        pthread_mutex_unlock(&a->gpu_mu);
        COUNTER("gridmeter_agent_gpu_windows_closed_total", "device-windows closed",
                gs.windows_closed);
        COUNTER("gridmeter_agent_gpu_kernels_total", "kernel records", gs.kernels);
        COUNTER("gridmeter_agent_gpu_untagged_kernels_total", "kernels without a usable tag",
                gs.untagged_kernels);
        COUNTER("gridmeter_agent_gpu_late_records_total",
                "records that came after their window closed", gs.late_records);
        COUNTER("gridmeter_agent_gpu_dropped_records_total", "records CUPTI dropped", gs.dropped);
    }
#undef COUNTER
#undef GAUGE
    r->status = 200;
    free(r->answer);
    r->answer = b.p;
}

/* ---- the ticker ---------------------------------------------------------------------- */
static void tick_latency(gm_agent *a)
{
    gm_node_stats st;
    gm_node_stats_get(a->node, &st);
    int64_t now = gm_mono_us();
    pthread_mutex_lock(&a->lat_mu);
    while (a->lat_len && a->lat[a->lat_head].lsn <= st.acked_lsn) {
        agent__hist_observe(&a->delivery_s, now - a->lat[a->lat_head].t_us);
        a->lat_head = (a->lat_head + 1) % a->lat_cap;
        a->lat_len--;
    }
    pthread_mutex_unlock(&a->lat_mu);
    bool full = spool_full(a, &st);
    if (full != a->was_full) {
        if (full)
            gm_warn(AGENT_COMP,
                    "msg=\"spool full: requests are answered 429 until Kafka acknowledges\" "
                    "spool_bytes=%" PRIu64 " spool_max_bytes=%" PRIu64 " unacked=%" PRIu64,
                    st.spool_bytes, st.spool_max_bytes, st.unacked);
        else
            gm_info(AGENT_COMP,
                    "msg=\"spool has room again\" spool_bytes=%" PRIu64 " unacked=%" PRIu64,
                    st.spool_bytes, st.unacked);
        a->was_full = full;
    }
    if (a->progress && now - a->last_progress_us >= GM_US_PER_SEC) {
        a->last_progress_us = now;
        fprintf(stderr,
                "\ragent: %" PRIu64 " accepted, %" PRIu64 " refused, %" PRIu64
                " not yet in Kafka, spool %.1f of %.1f MiB   ",
                (uint64_t)atomic_load(&a->accepted), (uint64_t)atomic_load(&a->rejected),
                st.unacked, (double)st.spool_bytes / 1048576.0,
                (double)st.spool_max_bytes / 1048576.0);
    }
}

static void *ticker_main(void *arg)
{
    gm_agent *a = arg;
    pthread_mutex_lock(&a->tick_mu);
    while (!a->tick_stop) {
        pthread_mutex_unlock(&a->tick_mu);
        tick_latency(a);
        agent__gpu_tick(a);
        pthread_mutex_lock(&a->lat_mu);
        bool busy = a->lat_len > 0;
        pthread_mutex_unlock(&a->lat_mu);
        busy |= atomic_load(&a->gpu_waiting) > 0;
        pthread_mutex_lock(&a->tick_mu);
        if (a->tick_stop)
            break;
        /* a period, not an instant: the condition variable waits on the real clock */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long add_ns = busy ? 2000000L : 50000000L;
        ts.tv_nsec += add_ns;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&a->tick_cv, &a->tick_mu, &ts);
    }
    pthread_mutex_unlock(&a->tick_mu);
    return NULL;
}

/* ---- open / close -------------------------------------------------------------------- */
int gm_agent_open(const gm_agent_config *cfg, gm_agent **out, char *err, size_t err_len)
{
    const gm_node_config *nc = &cfg->node;
    if (!nc->source || !*nc->source || strlen(nc->source) > GM_EVENT_SOURCE_MAX - 4 ||
        !id_charset(nc->source))
        return gm_fail(err, err_len, GM_ECONFIG,
                       "agent: source must be 1..%d bytes of %s, got \"%.60s\"",
                       GM_EVENT_SOURCE_MAX - 4, GM_EVENT_CHARSET_ID, nc->source ? nc->source : "");
    if (!nc->site || !*nc->site || strlen(nc->site) > GM_EVENT_SITE_MAX || !id_charset(nc->site) ||
        strchr(":/@+=~", nc->site[0]) || strpbrk(nc->site, ":/@+=~"))
        return gm_fail(err, err_len, GM_ECONFIG, "agent: site must be 1..%d bytes of %s",
                       GM_EVENT_SITE_MAX, GM_EVENT_CHARSET_NAME);
    if (!nc->spool_dir || !*nc->spool_dir)
        return gm_fail(err, err_len, GM_ECONFIG, "agent: spool_dir is not set");
    if ((!cfg->socket_path || !*cfg->socket_path) && (!cfg->listen_addr || !*cfg->listen_addr))
        return gm_fail(err, err_len, GM_ECONFIG,
                       "agent: give a Unix socket path, a loopback listen address, or both");
    if (cfg->gpu < GM_AGENT_GPU_OFF || cfg->gpu > GM_AGENT_GPU_FEED)
        return gm_fail(err, err_len, GM_ECONFIG, "agent: gpu mode must be off, cupti or feed");
    if (cfg->threads < 0 || cfg->threads > 64 || cfg->max_connections < 0)
        return gm_fail(err, err_len, GM_ECONFIG, "agent: threads must be 0..64");
    gm_agent *a = gm_xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    if (!a->cfg.threads)
        a->cfg.threads = 2;
    if (!a->cfg.max_connections)
        a->cfg.max_connections = 256;
    if (!a->cfg.sync_timeout_ms)
        a->cfg.sync_timeout_ms = 5000;
    if (!a->cfg.max_body_bytes)
        a->cfg.max_body_bytes = (size_t)4 << 20;
    if (!a->cfg.max_events)
        a->cfg.max_events = 10000;
    if (a->cfg.retry_after_s <= 0)
        a->cfg.retry_after_s = 1;
    if (!a->cfg.socket_mode)
        a->cfg.socket_mode = 0660;
    if (!a->cfg.gpu_spool_max_bytes)
        a->cfg.gpu_spool_max_bytes = (uint64_t)256 << 20;
    if (a->cfg.gpu_request_ttl_s <= 0)
        a->cfg.gpu_request_ttl_s = 600;
    a->source = gm_xstrdup(nc->source);
    a->site = gm_xstrdup(nc->site);
    a->spool_dir = gm_xstrdup(nc->spool_dir);
    a->gpu_topic =
        gm_xstrdup(cfg->gpu_topic && *cfg->gpu_topic ? cfg->gpu_topic : "gridmeter.gpu.v1");
    char buf[4096];
    if (cfg->gpu_source && *cfg->gpu_source) {
        a->gpu_source = gm_xstrdup(cfg->gpu_source);
    } else {
        snprintf(buf, sizeof buf, "%s/gpu", nc->source);
        a->gpu_source = gm_xstrdup(buf);
    }
    if (cfg->gpu_spool_dir && *cfg->gpu_spool_dir) {
        a->gpu_spool_dir = gm_xstrdup(cfg->gpu_spool_dir);
    } else {
        snprintf(buf, sizeof buf, "%s/gpu", nc->spool_dir);
        a->gpu_spool_dir = gm_xstrdup(buf);
    }
    a->socket_path = cfg->socket_path && *cfg->socket_path ? gm_xstrdup(cfg->socket_path) : NULL;
    a->listen_addr = cfg->listen_addr && *cfg->listen_addr ? gm_xstrdup(cfg->listen_addr) : NULL;
    a->cfg.socket_path = a->socket_path;
    a->cfg.listen_addr = a->listen_addr;
    a->cfg.gpu_topic = a->gpu_topic;
    a->cfg.gpu_source = a->gpu_source;
    a->cfg.gpu_spool_dir = a->gpu_spool_dir;
    a->cfg.node.source = a->source;
    a->cfg.node.site = a->site;
    a->cfg.node.spool_dir = a->spool_dir;
    a->cfg.node.fsync = GM_NODE_FSYNC_BATCH;
    if (!a->cfg.node.spool_max_bytes)
        a->cfg.node.spool_max_bytes = (uint64_t)1 << 30;
    if (!a->cfg.node.segment_bytes)
        a->cfg.node.segment_bytes = segment_default(a->cfg.node.spool_max_bytes);
    pthread_mutex_init(&a->rec_mu, NULL);
    pthread_mutex_init(&a->tick_mu, NULL);
    pthread_cond_init(&a->tick_cv, NULL);
    pthread_mutex_init(&a->lat_mu, NULL);
    pthread_mutex_init(&a->gpu_mu, NULL);
    a->progress = cfg->progress;
    int rc = 0;
    /* the usage spool is spool_dir itself; the GPU spool a directory inside it by default
     * (the node client keeps only its own files at the top of its directory) */
    if (mkdir(a->spool_dir, 0750) && errno != EEXIST) {
        rc = gm_fail(err, err_len, GM_EIO, "agent: spool directory %s: %s", a->spool_dir,
                     strerror(errno));
        goto fail;
    }
    rc = gm_node_open(&a->cfg.node, &a->node, err, err_len);
    if (rc)
        goto fail;
    rc = agent__gpu_open(a, err, err_len);
    if (rc)
        goto fail;
    if (pthread_create(&a->ticker, NULL, ticker_main, a)) {
        rc = gm_fail(err, err_len, GM_EIO, "agent: cannot start the ticker thread");
        goto fail;
    }
    a->ticker_started = true;
    rc = agent__http_start(a, err, err_len);
    if (rc)
        goto fail;
    char g[400];
    gm_info(AGENT_COMP,
            "msg=\"agent listening\" source=%s site=%s socket=%s listen=%s port=%d durability=%s "
            "spool=%s spool_max_bytes=%" PRIu64 " gpu=\"%s\"",
            a->source, a->site, a->socket_path ? a->socket_path : "-",
            a->listen_addr ? a->listen_addr : "-", a->port,
            a->cfg.durability == GM_AGENT_DURABLE_DISK ? "disk" : "spool", a->spool_dir,
            a->cfg.node.spool_max_bytes, gpu_state(a, g, sizeof g));
    *out = a;
    return 0;
fail:
    gm_agent_close(a);
    return rc;
}

void gm_agent_close(gm_agent *a)
{
    if (!a)
        return;
    atomic_store(&a->closing, true);
    /* GPU first: its last close reports every window and finishes the waiting requests, whose
     * answers the HTTP layer still sends */
    agent__gpu_close(a);
    agent__http_stop(a);
    if (a->ticker_started) {
        pthread_mutex_lock(&a->tick_mu);
        a->tick_stop = true;
        pthread_cond_broadcast(&a->tick_cv);
        pthread_mutex_unlock(&a->tick_mu);
        pthread_join(a->ticker, NULL);
    }
    if (a->progress)
        fputc('\n', stderr);
    if (a->node) {
        gm_node_stats st;
        gm_node_stats_get(a->node, &st);
        gm_info(AGENT_COMP,
                "msg=\"agent stopping\" accepted=%" PRIu64 " rejected=%" PRIu64 " requests=%" PRIu64
                " unacked=%" PRIu64,
                (uint64_t)atomic_load(&a->accepted), (uint64_t)atomic_load(&a->rejected),
                (uint64_t)atomic_load(&a->requests), st.unacked);
    }
    gm_node_close(a->gpu_node);
    gm_node_close(a->node);
    for (size_t i = 0; i < a->n_seqs; i++)
        free(a->seqs[i].source);
    free(a->seqs);
    free(a->lat);
    pthread_mutex_destroy(&a->rec_mu);
    pthread_mutex_destroy(&a->tick_mu);
    pthread_cond_destroy(&a->tick_cv);
    pthread_mutex_destroy(&a->lat_mu);
    pthread_mutex_destroy(&a->gpu_mu);
    free(a->source);
    free(a->site);
    free(a->spool_dir);
    free(a->gpu_source);
    free(a->gpu_spool_dir);
    free(a->gpu_topic);
    free(a->socket_path);
    free(a->listen_addr);
    free(a);
}

int gm_agent_port(const gm_agent *a)
{
    return a ? a->port : 0;
}

gm_gpu_collector *gm_agent_gpu_collector(gm_agent *a)
{
    pthread_mutex_lock(&a->gpu_mu);
    gm_gpu_collector *c = a->gpu_final ? NULL : a->gc;
    pthread_mutex_unlock(&a->gpu_mu);
    return c;
}

/* ---- in-process requests ------------------------------------------------------------- */
typedef struct sync_done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} sync_done;

static void on_done(agent__req *r, void *arg)
{
    (void)r;
    sync_done *d = arg;
    pthread_mutex_lock(&d->mu);
    d->done = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

void gm_agent_submit(gm_agent *a, const char *path, const char *content_type, const char *query,
                     const char *body, size_t len, int *status, char **answer, int *retry_after_s)
{
    int route = !strcmp(path, "/v1/events")      ? ROUTE_EVENTS
                : !strcmp(path, "/v1/gpu/steps") ? ROUTE_GPU_STEPS
                : !strcmp(path, "/healthz")      ? ROUTE_HEALTHZ
                : !strcmp(path, "/metrics")      ? ROUTE_METRICS
                                                 : ROUTE_OTHER;
    agent__req *r = agent__req_new(a, route);
    if (route == ROUTE_EVENTS) {
        if (!agent__events_begin(r, content_type, query, body ? body : "", len)) {
            sync_done d = {.done = false};
            pthread_mutex_init(&d.mu, NULL);
            pthread_cond_init(&d.cv, NULL);
            r->done = on_done;
            r->done_arg = &d;
            agent__gpu_wait(r);
            pthread_mutex_lock(&d.mu);
            while (!d.done)
                pthread_cond_wait(&d.cv, &d.mu);
            pthread_mutex_unlock(&d.mu);
            pthread_mutex_destroy(&d.mu);
            pthread_cond_destroy(&d.cv);
        }
    } else if (route == ROUTE_GPU_STEPS) {
        agent__gpu_steps(r, content_type, body ? body : "", len);
    } else if (route == ROUTE_HEALTHZ) {
        agent__healthz(a, r);
    } else if (route == ROUTE_METRICS) {
        agent__metrics(a, r);
    } else {
        agent__answer_error(r, 404, "path",
                            "no such path: POST /v1/events, POST /v1/gpu/steps, "
                            "GET /healthz, GET /metrics");
    }
    agent__count(r);
    *status = r->status;
    *retry_after_s = r->retry_after_s;
    *answer = r->answer;
    r->answer = NULL;
    agent__req_free(r);
}

/* ---- stats and invariants ------------------------------------------------------------ */
void gm_agent_stats_get(gm_agent *a, gm_agent_stats *o)
{
    memset(o, 0, sizeof *o);
    o->requests = atomic_load(&a->requests);
    o->accepted = atomic_load(&a->accepted);
    o->rejected = atomic_load(&a->rejected);
    o->rejected_full = atomic_load(&a->rejected_full);
    o->requests_full = atomic_load(&a->requests_full);
    o->requests_bad = atomic_load(&a->requests_bad);
    o->gpu_filled = atomic_load(&a->gpu_filled);
    o->gpu_unmatched = atomic_load(&a->gpu_unmatched);
    o->gpu_events = atomic_load(&a->gpu_events);
    o->gpu_steps = atomic_load(&a->gpu_steps);
    o->gpu_waiting = atomic_load(&a->gpu_waiting);
    o->gpu_wait_timeouts = atomic_load(&a->gpu_wait_timeouts);
    pthread_mutex_lock(&a->gpu_mu);
    o->gpu_running = a->gc != NULL && !a->gpu_final;
    pthread_mutex_unlock(&a->gpu_mu);
    gm_node_stats_get(a->node, &o->node);
    if (a->gpu_node)
        gm_node_stats_get(a->gpu_node, &o->gpu_node);
}

int gm_agent_check(gm_agent *a, char *err, size_t err_len)
{
    pthread_mutex_lock(&a->rec_mu);
    uint64_t acc = atomic_load(&a->accepted), rej = atomic_load(&a->rejected),
             seen = atomic_load(&a->events_seen), viol = a->seq_violations;
    gm_node_stats st;
    gm_node_stats_get(a->node, &st);
    pthread_mutex_unlock(&a->rec_mu);
    if (acc + rej != seen)
        return gm_fail(err, err_len, GM_ECORRUPT,
                       "agent invariant 1: accepted %" PRIu64 " + rejected %" PRIu64
                       " != events answered %" PRIu64,
                       acc, rej, seen);
    if (st.recorded != acc)
        return gm_fail(err, err_len, GM_ECORRUPT,
                       "agent invariant 2: %" PRIu64 " events recorded, %" PRIu64 " accepted",
                       st.recorded, acc);
    if (viol)
        return gm_fail(err, err_len, GM_ECORRUPT,
                       "agent invariant 3: %" PRIu64 " seq ranges did not follow the last one",
                       viol);
    /* invariant 4: after a tick, nothing waits whose windows had closed before it */
    int64_t closed = 0;
    pthread_mutex_lock(&a->gpu_mu);
    if (a->gc && !a->gpu_final) {
        gm_gpu_collector_stats gs;
        gm_gpu_collector_stats_get(a->gc, &gs);
        closed = gs.closed_until_ns;
    }
    pthread_mutex_unlock(&a->gpu_mu);
    agent__gpu_tick(a);
    int late = 0;
    pthread_mutex_lock(&a->gpu_mu);
    for (agent__req *r = a->wait_head; r; r = r->next)
        late += (int64_t)r->wait_ns <= closed;
    pthread_mutex_unlock(&a->gpu_mu);
    if (late)
        return gm_fail(err, err_len, GM_ECORRUPT,
                       "agent invariant 4: %d requests wait for GPU time after their windows "
                       "closed",
                       late);
    return 0;
}
