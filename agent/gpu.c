/* The agent's GPU accounting: the collector (CUPTI in this process, or a feed of the server's
 * steps over the socket), gridmeter.gpu.v1 windows into their own node client, per-request
 * GPU time for usage events without data.gpu_us, and POST /v1/gpu/steps.
 *
 * DESIGN. The collector calls on_windows from its flush thread with each close's result: every
 * row becomes a gridmeter.gpu.v1 event recorded through the GPU node client (seq and id from
 * it; a full GPU spool is waited out, never skipped), and every request row adds its exact ns
 * to a map keyed by (tenant, request_id). A usage event that leaves gpu_us to the agent is
 * answered once the collector's closed_until has passed the instant the event arrived (on the
 * collector's clock): every kernel of its request ran before it arrived, so every window that
 * holds them has been reported. Its gpu_us is then round-half-up(sum of ns / 1000), the rule
 * of docs/gpu-accounting.md for a request over all its windows. Until then the request waits
 * in a list (its HTTP connection suspended): nothing of it is recorded, so a kill -9 in
 * between loses no answered event; the sender gets no answer and sends it again.
 */
#include "agent_internal.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GPU_COMP "agent-gpu"
static char tomb_key;
#define TOMB (&tomb_key)

/* ---- the request map: (tenant, request_id) -> ns ------------------------------------- */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void greq_rehash(gm_agent *a);

/* The slot of key (lock held); NULL when absent and !create. Open addressing with tombstones;
 * the table is rebuilt when entries and tombstones fill 70 % of it. */
static agent__gpu_req *greq_find(gm_agent *a, const char *key, bool create)
{
    if (create && (a->greq_n + a->greq_tombs + 1) * 10 >= a->greq_cap * 7)
        greq_rehash(a);
    if (!a->greq_cap)
        return NULL;
    size_t mask = a->greq_cap - 1, i = hash_str(key) & mask;
    agent__gpu_req *tomb = NULL;
    for (;; i = (i + 1) & mask) {
        agent__gpu_req *g = &a->greq[i];
        if (!g->key) {
            if (!create)
                return NULL;
            if (tomb) {
                g = tomb;
                a->greq_tombs--;
            }
            g->key = gm_xstrdup(key);
            g->gpu_ns = 0;
            a->greq_n++;
            return g;
        }
        if (g->key == TOMB) {
            if (!tomb)
                tomb = g;
            continue;
        }
        if (!strcmp(g->key, key))
            return g;
    }
}

static void greq_rehash(gm_agent *a)
{
    agent__gpu_req *old = a->greq;
    size_t old_cap = a->greq_cap;
    a->greq_cap = !old_cap ? 1024 : (a->greq_n + 1) * 4 > old_cap ? old_cap * 2 : old_cap;
    a->greq = gm_xcalloc(a->greq_cap, sizeof *a->greq);
    a->greq_n = 0;
    a->greq_tombs = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key || old[i].key == TOMB)
            continue;
        agent__gpu_req *g = greq_find(a, old[i].key, true);
        g->gpu_ns = old[i].gpu_ns;
        g->touched_us = old[i].touched_us;
        free(old[i].key);
    }
    free(old);
}

static void greq_remove(gm_agent *a, agent__gpu_req *g)
{
    free(g->key);
    g->key = TOMB;
    a->greq_n--;
    a->greq_tombs++;
}

static void greq_key(char *buf, size_t len, const char *tenant, const char *request_id)
{
    snprintf(buf, len, "%s\n%s", tenant, request_id);
}

/* ---- windows from the collector ------------------------------------------------------ */
static void on_windows(const gm_gpu_result *res, void *arg)
{
    gm_agent *a = arg;
    int64_t give_up_us = 0;
    for (size_t i = 0; i < res->n_rows; i++) {
        gm_event ev;
        char err[512];
        int rc = gm_gpu_row_to_event(res, i, a->gpu_source, NULL, 0, a->site, &ev, err, sizeof err);
        for (int64_t last_log = 0; rc == 0;) {
            rc = a->gpu_node ? gm_node_record_event(a->gpu_node, &ev, err, sizeof err) : GM_EIO;
            if (rc != GM_EFULL)
                break;
            /* a full GPU spool is waited out: the window is billing data */
            int64_t now = gm_mono_us();
            if (atomic_load(&a->closing)) {
                if (!give_up_us)
                    give_up_us = now + (int64_t)a->cfg.node.close_timeout_ms * 1000;
                if (now >= give_up_us)
                    break;
            }
            if (now - last_log >= 5 * GM_US_PER_SEC) {
                gm_warn(GPU_COMP, "msg=\"GPU spool full: the window waits\" error=\"%s\"", err);
                last_log = now;
            }
            usleep(100 * 1000);
        }
        const gm_gpu_row *r = &res->rows[i];
        if (rc == 0) {
            atomic_fetch_add(&a->gpu_events, 1);
            continue;
        }
        atomic_fetch_add(&a->gpu_rows_lost, 1);
        gm_error(GPU_COMP,
                 "msg=\"gpu.v1 window not recorded\" device=%u resource=%u window_start_ns=%" PRId64
                 " window_end_ns=%" PRId64 " tenant=%s gpu_ns=%" PRId64 " gpu_us=%" PRId64
                 " kernels=%" PRId64 " error=\"%s\"",
                 r->device, r->resource, r->window_start_ns, r->window_end_ns, r->tenant, r->gpu_ns,
                 r->gpu_us, r->kernels, err);
    }
    int64_t now = gm_mono_us();
    pthread_mutex_lock(&a->gpu_mu);
    for (size_t i = 0; i < res->n_requests; i++) {
        const gm_gpu_request_row *q = &res->requests[i];
        if (!q->request_id || !*q->request_id)
            continue;
        char key[GM_EVENT_TENANT_MAX + GM_EVENT_REQUEST_ID_MAX + 2];
        greq_key(key, sizeof key, q->tenant, q->request_id);
        agent__gpu_req *g = greq_find(a, key, true);
        g->gpu_ns += q->gpu_ns;
        g->touched_us = now;
    }
    pthread_mutex_unlock(&a->gpu_mu);
}

static int open_gpu_node(gm_agent *a, char *err, size_t err_len)
{
    gm_node_config nc = a->cfg.node;
    nc.topic = a->gpu_topic;
    nc.source = a->gpu_source;
    nc.spool_dir = a->gpu_spool_dir;
    nc.spool_max_bytes = a->cfg.gpu_spool_max_bytes;
    nc.segment_bytes = 0;
    /* gridmeter.gpu.v1 events carry no epoch (docs/events.md "Epochs"): the GPU spool never
     * starts one; --require-state still refuses a GPU spool without state. */
    nc.new_epoch = false;
    if (nc.missing_state == GM_NODE_STATE_NEW_EPOCH)
        nc.missing_state = GM_NODE_STATE_FIRST_START;
    return gm_node_open(&nc, &a->gpu_node, err, err_len);
}

int agent__gpu_open(gm_agent *a, char *err, size_t err_len)
{
    a->next_corr = 1;
    if (a->cfg.gpu == GM_AGENT_GPU_OFF)
        return 0;
    /* the GPU spool first: windows left in it by an earlier run are delivered either way */
    int rc = open_gpu_node(a, err, err_len);
    if (rc)
        return rc;
    gm_gpu_collector_conf conf = a->cfg.gpu_conf;
    conf.on_windows = on_windows;
    conf.arg = a;
    gm_gpu_collector *c = NULL;
    char why[320] = "";
    if (a->cfg.gpu == GM_AGENT_GPU_FEED)
        rc = gm_gpu_feed_start(&conf, &c, why, sizeof why);
    else if (a->cfg.gpu_start)
        rc = a->cfg.gpu_start(&conf, &c, why, sizeof why);
    else
        rc = gm_gpu_collector_start(&conf, &c, why, sizeof why);
    if (rc == GM_EUNAVAIL) {
        snprintf(a->gpu_why, sizeof a->gpu_why, "%s", why);
        gm_warn(GPU_COMP,
                "msg=\"GPU accounting unavailable: usage events are served; those without "
                "data.gpu_us get 0 (unknown)\" reason=\"%s\"",
                why);
        return 0;
    }
    if (rc)
        return gm_fail(err, err_len, rc, "agent: GPU accounting: %s", why);
    pthread_mutex_lock(&a->gpu_mu);
    a->gc = c;
    pthread_mutex_unlock(&a->gpu_mu);
    return 0;
}

uint64_t agent__gpu_now_ns(gm_agent *a)
{
    pthread_mutex_lock(&a->gpu_mu);
    uint64_t t = a->gc ? gm_gpu_collector_now_ns(a->gc) : 0;
    pthread_mutex_unlock(&a->gpu_mu);
    return t;
}

/* ---- waiting requests ---------------------------------------------------------------- */
static void finish(agent__req *r)
{
    agent__events_finish(r);
    if (r->done)
        r->done(r, r->done_arg);
}

void agent__gpu_wait(agent__req *r)
{
    gm_agent *a = r->a;
    pthread_mutex_lock(&a->gpu_mu);
    if (a->gpu_final || (!a->gc && !atomic_load(&a->closing))) {
        pthread_mutex_unlock(&a->gpu_mu);
        finish(r);
        return;
    }
    r->next = NULL;
    const gm_gpu_collector_conf *gc = &a->cfg.gpu_conf;
    uint64_t window_ns = gc->window_ns ? gc->window_ns : GM_GPU_DEFAULT_WINDOW_NS;
    uint64_t grace_ns = gc->grace_ns ? gc->grace_ns : UINT64_C(2000000000);
    uint64_t flush_ms = gc->flush_ms && gc->flush_ms != UINT32_MAX ? gc->flush_ms : 1000;
    r->wait_until_us =
        gm_mono_us() +
        (a->cfg.gpu_max_wait_ms > 0
             ? (int64_t)a->cfg.gpu_max_wait_ms * 1000
             : 30 * GM_US_PER_SEC + 2 * (int64_t)((window_ns + grace_ns) / 1000 + flush_ms * 1000));
    if (a->wait_tail)
        a->wait_tail->next = r;
    else
        a->wait_head = r;
    a->wait_tail = r;
    atomic_fetch_add(&a->gpu_waiting, 1);
    pthread_mutex_unlock(&a->gpu_mu);
    /* the ticker picks it up within a few ms */
    pthread_mutex_lock(&a->tick_mu);
    pthread_cond_broadcast(&a->tick_cv);
    pthread_mutex_unlock(&a->tick_mu);
}

void agent__gpu_tick(gm_agent *a)
{
    agent__req *due = NULL, **due_tail = &due;
    int64_t now = gm_mono_us();
    uint64_t expired = 0;
    pthread_mutex_lock(&a->gpu_mu);
    if (a->wait_head) {
        int64_t closed = INT64_MAX;
        if (!a->gpu_final) {
            gm_gpu_collector_stats gs = {0};
            if (a->gc)
                gm_gpu_collector_stats_get(a->gc, &gs);
            closed = a->gc ? gs.closed_until_ns : -1;
        }
        agent__req **pp = &a->wait_head;
        a->wait_tail = NULL;
        while (*pp) {
            agent__req *r = *pp;
            bool late = now > r->wait_until_us;
            if ((int64_t)r->wait_ns <= closed || late) {
                if (late && (int64_t)r->wait_ns > closed) {
                    atomic_fetch_add(&a->gpu_wait_timeouts, 1);
                    gm_error(GPU_COMP,
                             "msg=\"a request waited longer than its windows can take: answered "
                             "with the GPU time known so far (is the collector closing "
                             "windows?)\" wait_ns=%llu closed_until_ns=%lld",
                             (unsigned long long)r->wait_ns, (long long)closed);
                }
                *pp = r->next;
                r->next = NULL;
                *due_tail = r;
                due_tail = &r->next;
                atomic_fetch_sub(&a->gpu_waiting, 1);
            } else {
                a->wait_tail = r;
                pp = &r->next;
            }
        }
    }
    /* request times no usage event claimed: dropped from memory after the TTL (the windows
     * hold them all the same) */
    if (now - a->greq_expiry_us >= GM_US_PER_SEC && a->greq_n) {
        a->greq_expiry_us = now;
        int64_t ttl = (int64_t)a->cfg.gpu_request_ttl_s * GM_US_PER_SEC;
        for (size_t i = 0; i < a->greq_cap; i++) {
            agent__gpu_req *g = &a->greq[i];
            if (g->key && g->key != TOMB && now - g->touched_us > ttl) {
                greq_remove(a, g);
                expired++;
            }
        }
    }
    pthread_mutex_unlock(&a->gpu_mu);
    if (expired)
        gm_info(GPU_COMP,
                "msg=\"request GPU times not claimed by a usage event within the TTL are "
                "dropped from memory (they are in the gpu.v1 windows)\" count=%" PRIu64,
                expired);
    while (due) {
        agent__req *r = due;
        due = r->next;
        finish(r);
    }
}

void agent__gpu_fill(agent__req *r)
{
    gm_agent *a = r->a;
    pthread_mutex_lock(&a->gpu_mu);
    for (size_t i = 0; i < r->n_items; i++) {
        agent__item *it = &r->items[i];
        if (it->state != ITEM_OK || !(it->filled & GM_EVENT_FILLED_GPU_US))
            continue;
        atomic_fetch_add(&a->gpu_filled, 1);
        agent__gpu_req *g = NULL;
        if (it->ev.request_id[0]) {
            char key[GM_EVENT_TENANT_MAX + GM_EVENT_REQUEST_ID_MAX + 2];
            greq_key(key, sizeof key, it->ev.tenant, it->ev.request_id);
            g = greq_find(a, key, false);
        }
        if (!g) {
            it->ev.gpu_us = 0;
            atomic_fetch_add(&a->gpu_unmatched, 1);
            continue;
        }
        it->ev.gpu_us = (g->gpu_ns + 500) / 1000; /* round half up, per request */
        greq_remove(a, g);
    }
    pthread_mutex_unlock(&a->gpu_mu);
}

void agent__gpu_close(gm_agent *a)
{
    pthread_mutex_lock(&a->gpu_mu);
    gm_gpu_collector *c = a->gc;
    a->gc = NULL;
    pthread_mutex_unlock(&a->gpu_mu);
    gm_gpu_collector_stop(c); /* the last close reports every window (on_windows) */
    pthread_mutex_lock(&a->gpu_mu);
    a->gpu_final = true;
    pthread_mutex_unlock(&a->gpu_mu);
    agent__gpu_tick(a); /* every waiting request is due now */
    pthread_mutex_lock(&a->gpu_mu);
    for (size_t i = 0; i < a->greq_cap; i++)
        if (a->greq[i].key != TOMB)
            free(a->greq[i].key);
    free(a->greq);
    a->greq = NULL;
    a->greq_cap = a->greq_n = a->greq_tombs = 0;
    pthread_mutex_unlock(&a->gpu_mu);
}

/* ---- POST /v1/gpu/steps -------------------------------------------------------------- */
typedef struct step_err {
    char field[96];
    char rule[224];
} step_err;

static bool fail_at(step_err *e, const char *field, const char *fmt, ...) GM_PRINTF(3, 4);
static bool fail_at(step_err *e, const char *field, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->rule, sizeof e->rule, fmt, ap);
    va_end(ap);
    return false;
}

/* A JSON integer 0..2^53-1 (cJSON reads numbers as doubles, exact in that range). */
static bool get_int(const cJSON *o, const char *name, const char *path, bool required, int64_t min,
                    int64_t *out, step_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    char f[96];
    snprintf(f, sizeof f, "%s%s%s", path, *path ? "." : "", name);
    if (!v) {
        if (required)
            return fail_at(e, f, "is required");
        return true;
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < (double)min || d > 9007199254740991.0)
        return fail_at(e, f, "must be an integer between %" PRId64 " and 2^53-1", min);
    *out = (int64_t)d;
    return true;
}

static bool only_fields(const cJSON *o, const char *const *names, const char *path, step_err *e)
{
    for (const cJSON *c = o->child; c; c = c->next) {
        bool known = false;
        for (size_t i = 0; names[i]; i++)
            known |= c->string && !strcmp(c->string, names[i]);
        char f[96];
        snprintf(f, sizeof f, "%s%s%s", path, *path ? "." : "", c->string ? c->string : "?");
        if (!known)
            return fail_at(e, f, "is not a field of a step (unknown fields are refused)");
        for (const cJSON *d = o->child; d != c; d = d->next)
            if (d->string && !strcmp(d->string, c->string))
                return fail_at(e, f, "duplicate key");
    }
    return true;
}

typedef struct step_in {
    int64_t step;
    bool has_step;
    char tenant[GM_EVENT_TENANT_MAX + 1];
    gm_gpu_step_request *reqs;
    size_t n_reqs;
    gm_gpu_record *recs;
    size_t n_recs;
} step_in;

static void step_in_free(step_in *s)
{
    for (size_t i = 0; i < s->n_reqs; i++) {
        free((char *)s->reqs[i].tenant);
        free((char *)s->reqs[i].request_id);
    }
    free(s->reqs);
    free(s->recs);
    memset(s, 0, sizeof *s);
}

/* One kernel: an element of "kernels", or (top) the step's own start_us/end_us/device, whose
 * other fields the step's check has seen. */
static bool parse_kernel(const cJSON *k, const char *path, bool top, gm_gpu_record *rec,
                         step_err *e)
{
    static const char *const names[] = {"device", "start_us", "end_us", "resource", NULL};
    if (!cJSON_IsObject(k))
        return fail_at(e, path, "must be an object");
    if (!top && !only_fields(k, names, path, e))
        return false;
    int64_t dev = 0, s = 0, t = 0;
    if (!get_int(k, "device", path, false, 0, &dev, e) ||
        !get_int(k, "start_us", path, true, 1, &s, e) ||
        !get_int(k, "end_us", path, true, 1, &t, e))
        return false;
    char f[96];
    if (dev > INT32_MAX) {
        snprintf(f, sizeof f, "%s.device", path);
        return fail_at(e, f, "must be at most 2^31-1");
    }
    if (t < s) {
        snprintf(f, sizeof f, "%s.end_us", path);
        return fail_at(e, f, "must not be before start_us");
    }
    if ((uint64_t)t * 1000u >= GM_GPU_MAX_NS) {
        snprintf(f, sizeof f, "%s.end_us", path);
        return fail_at(e, f, "must be before 2116 (2^62 ns)");
    }
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(k, "resource");
    uint8_t resource = GM_GPU_RES_KERNEL;
    if (res) {
        snprintf(f, sizeof f, "%s.resource", path);
        if (!cJSON_IsString(res) ||
            (strcmp(res->valuestring, "kernel") && strcmp(res->valuestring, "copy")))
            return fail_at(e, f, "must be \"kernel\" or \"copy\"");
        resource = !strcmp(res->valuestring, "copy") ? GM_GPU_RES_COPY : GM_GPU_RES_KERNEL;
    }
    *rec = (gm_gpu_record){.start_ns = (uint64_t)s * 1000u,
                           .end_ns = (uint64_t)t * 1000u,
                           .device = (uint32_t)dev,
                           .resource = resource};
    return true;
}

static bool parse_step(gm_agent *a, const cJSON *o, step_in *s, step_err *e)
{
    static const char *const names[] = {"step",     "requests", "kernels",  "tenant", "device",
                                        "start_us", "end_us",   "resource", NULL};
    if (!cJSON_IsObject(o))
        return fail_at(e, "message", "a step must be a JSON object");
    if (!only_fields(o, names, "", e))
        return false;
    int64_t step = 0;
    if (!get_int(o, "step", "", false, 1, &step, e))
        return false;
    s->has_step = cJSON_GetObjectItemCaseSensitive(o, "step") != NULL;
    s->step = step;
    const cJSON *tenant = cJSON_GetObjectItemCaseSensitive(o, "tenant");
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(o, "requests");
    const cJSON *kernels = cJSON_GetObjectItemCaseSensitive(o, "kernels");
    bool shorthand = cJSON_GetObjectItemCaseSensitive(o, "start_us") ||
                     cJSON_GetObjectItemCaseSensitive(o, "end_us") ||
                     cJSON_GetObjectItemCaseSensitive(o, "device") ||
                     cJSON_GetObjectItemCaseSensitive(o, "resource");
    if (s->has_step == (tenant != NULL))
        return fail_at(e, s->has_step ? "tenant" : "step",
                       "give either step (with its requests) or tenant (work of one tenant)");
    if (s->has_step && !reqs)
        return fail_at(e, "requests", "is required with step");
    if (tenant && reqs)
        return fail_at(e, "requests", "belong to a step, not to tenant work");
    if (tenant) {
        if (!cJSON_IsString(tenant) || !gm_ident_valid(GM_IDENT_TENANT, tenant->valuestring))
            return fail_at(e, "tenant", "must be a tenant id (%s)", gm_ident_rule(GM_IDENT_TENANT));
        snprintf(s->tenant, sizeof s->tenant, "%s", tenant->valuestring);
    }
    if (kernels && shorthand)
        return fail_at(e, "kernels", "give kernels or start_us/end_us, not both");
    if (reqs) {
        if (!cJSON_IsArray(reqs) || cJSON_GetArraySize(reqs) < 1)
            return fail_at(e, "requests", "must be a non-empty array");
        size_t n = (size_t)cJSON_GetArraySize(reqs);
        s->reqs = gm_xcalloc(n, sizeof *s->reqs);
        size_t i = 0;
        for (const cJSON *q = reqs->child; q; q = q->next, i++) {
            static const char *const qn[] = {"tenant", "request_id", "prefill_tokens",
                                             "decode_tokens", NULL};
            char path[48];
            snprintf(path, sizeof path, "requests[%zu]", i);
            if (!cJSON_IsObject(q))
                return fail_at(e, path, "must be an object");
            if (!only_fields(q, qn, path, e))
                return false;
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(q, "tenant");
            const cJSON *rid = cJSON_GetObjectItemCaseSensitive(q, "request_id");
            char f[96];
            snprintf(f, sizeof f, "%s.tenant", path);
            if (!t || !cJSON_IsString(t))
                return fail_at(e, f, t ? "must be a string" : "is required");
            snprintf(f, sizeof f, "%s.request_id", path);
            if (rid && !cJSON_IsString(rid))
                return fail_at(e, f, "must be a string");
            int64_t pre = 0, dec = 0;
            if (!get_int(q, "prefill_tokens", path, true, 0, &pre, e) ||
                !get_int(q, "decode_tokens", path, true, 0, &dec, e))
                return false;
            s->reqs[i].tenant = gm_xstrdup(t->valuestring);
            s->reqs[i].request_id = rid && *rid->valuestring ? gm_xstrdup(rid->valuestring) : NULL;
            s->reqs[i].prefill_tokens = pre;
            s->reqs[i].decode_tokens = dec;
            s->n_reqs = i + 1;
        }
    }
    if (kernels || shorthand) {
        if (a->cfg.gpu != GM_AGENT_GPU_FEED)
            return fail_at(e, kernels ? "kernels" : "start_us",
                           "the kernels come from CUPTI on this agent (--gpu cupti): send the "
                           "step's manifest only");
        if (kernels) {
            if (!cJSON_IsArray(kernels) || cJSON_GetArraySize(kernels) < 1)
                return fail_at(e, "kernels", "must be a non-empty array");
            size_t n = (size_t)cJSON_GetArraySize(kernels), i = 0;
            s->recs = gm_xcalloc(n, sizeof *s->recs);
            for (const cJSON *k = kernels->child; k; k = k->next, i++) {
                char path[48];
                snprintf(path, sizeof path, "kernels[%zu]", i);
                if (!parse_kernel(k, path, false, &s->recs[i], e))
                    return false;
                s->n_recs = i + 1;
            }
        } else {
            s->recs = gm_xcalloc(1, sizeof *s->recs);
            if (!parse_kernel(o, "", true, &s->recs[0], e)) {
                /* the fields sit at the top level: drop the leading '.' of the path */
                if (e->field[0] == '.')
                    memmove(e->field, e->field + 1, strlen(e->field));
                return false;
            }
            s->n_recs = 1;
        }
    } else if (tenant) {
        return fail_at(e, "kernels", "tenant work needs its kernels (or start_us and end_us)");
    } else if (a->cfg.gpu == GM_AGENT_GPU_FEED) {
        return fail_at(e, "kernels",
                       "a feed (--gpu feed) needs the step's GPU time: kernels, or start_us and "
                       "end_us");
    }
    return true;
}

/* Gives the step's or tenant's work to the collector. 0 or the reason. */
static int apply_step(gm_agent *a, gm_gpu_collector *c, step_in *s, step_err *e, bool *late)
{
    char why[320];
    if (s->has_step &&
        gm_gpu_step_manifest(c, (uint64_t)s->step, s->reqs, s->n_reqs, why, sizeof why)) {
        fail_at(e, strstr(why, "already given") ? "step" : "requests", "%s", why);
        return GM_EINVAL;
    }
    if (!s->n_recs)
        return 0;
    uint64_t value = (uint64_t)s->step;
    uint8_t kind = GM_GPU_TAG_STEP;
    if (!s->has_step) {
        kind = GM_GPU_TAG_TENANT;
        if (gm_gpu_collector_tenant_tag(c, s->tenant, &value, why, sizeof why)) {
            fail_at(e, "tenant", "%s", why + (strncmp(why, "tenant: ", 8) ? 0 : 8));
            return GM_EINVAL;
        }
    }
    gm_gpu_tag *tags = gm_xmalloc(s->n_recs * sizeof *tags);
    pthread_mutex_lock(&a->gpu_mu);
    for (size_t i = 0; i < s->n_recs; i++) {
        if (!a->next_corr)
            a->next_corr = 1;
        s->recs[i].correlation_id = a->next_corr++;
        tags[i] = (gm_gpu_tag){s->recs[i].correlation_id, kind, value};
    }
    pthread_mutex_unlock(&a->gpu_mu);
    gm_gpu_collector_stats gs;
    gm_gpu_collector_stats_get(c, &gs);
    for (size_t i = 0; i < s->n_recs; i++)
        *late |= (int64_t)s->recs[i].start_ns < gs.closed_until_ns;
    int rc = gm_gpu_collector_add(c, s->recs, s->n_recs, tags, s->n_recs, why, sizeof why);
    free(tags);
    if (rc)
        fail_at(e, "kernels", "%s", why);
    return rc;
}

/* Logs refused steps, at most 10 lines per 5 s, then how many more. */
static void log_step_refusal(size_t index, const step_err *e)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t since;
    static uint64_t shown, more;
    pthread_mutex_lock(&mu);
    int64_t now = gm_mono_us();
    if (now - since >= 5 * GM_US_PER_SEC) {
        if (more)
            gm_warn(GPU_COMP, "msg=\"steps refused (not logged one by one)\" count=%llu",
                    (unsigned long long)more);
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
        char rule[2 * sizeof e->rule];
        size_t o = 0;
        for (const char *p = e->rule; *p && o + 2 < sizeof rule; p++) {
            if (*p == '"' || *p == '\\')
                rule[o++] = '\\';
            rule[o++] = *p;
        }
        rule[o] = '\0';
        gm_warn(GPU_COMP, "msg=\"step refused\" index=%zu field=%s rule=\"%s\"", index, e->field,
                rule);
    }
}

void agent__gpu_steps(agent__req *r, const char *content_type, const char *body, size_t len)
{
    gm_agent *a = r->a;
    if (a->cfg.gpu == GM_AGENT_GPU_OFF) {
        agent__answer_error(r, 404, "path",
                            "GPU accounting is off on this agent (start it with --gpu cupti or "
                            "--gpu feed)");
        return;
    }
    const char *semi = content_type ? strchr(content_type, ';') : NULL;
    size_t ctl = content_type ? (semi ? (size_t)(semi - content_type) : strlen(content_type)) : 0;
    bool lines = (ctl == 20 && !strncasecmp(content_type, "application/x-ndjson", 20)) ||
                 (ctl == 17 && !strncasecmp(content_type, "application/jsonl", 17));
    bool json = ctl == 16 && !strncasecmp(content_type, "application/json", 16);
    if (!lines && !json) {
        agent__answer_error(r, 415, "Content-Type",
                            "must be application/json (a step or an array of steps) or "
                            "application/x-ndjson (one step per line)");
        return;
    }
    pthread_mutex_lock(&a->gpu_mu);
    gm_gpu_collector *c = a->gc;
    pthread_mutex_unlock(&a->gpu_mu);
    if (!c) {
        char rule[400];
        snprintf(rule, sizeof rule, "GPU accounting is unavailable on this agent: %s",
                 a->gpu_why[0] ? a->gpu_why : "stopping");
        agent__answer_error(r, 503, "gpu", rule);
        return;
    }
    /* the objects: one per line, or one JSON value (an object or an array of them) */
    cJSON *root = NULL;
    const cJSON **objs = NULL;
    size_t n = 0, cap = 0;
    cJSON **line_roots = NULL;
    size_t n_lines = 0;
    agent__buf b = {0};
    size_t accepted = 0, rejected = 0;
    bool late = false;
    agent__buf errs = {0};
    if (json) {
        const char *end = NULL;
        root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
        size_t at = end ? (size_t)(end - body) : 0;
        while (root && at < len && strchr(" \t\r\n", body[at]))
            at++;
        if (!root || at != len) {
            char rule[128];
            snprintf(rule, sizeof rule, "invalid JSON at byte %zu",
                     root ? at : (size_t)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - body : 0));
            cJSON_Delete(root);
            agent__answer_error(r, 400, "body", rule);
            return;
        }
        if (cJSON_IsArray(root)) {
            for (const cJSON *o = root->child; o; o = o->next) {
                if (n == cap)
                    objs = gm_xrealloc(objs, (cap = cap ? cap * 2 : 16) * sizeof *objs);
                objs[n++] = o;
            }
        } else {
            objs = gm_xmalloc(sizeof *objs);
            objs[n++] = root;
        }
    } else {
        for (size_t i = 0; i < len;) {
            const char *nl = memchr(body + i, '\n', len - i);
            size_t e = nl ? (size_t)(nl - body) : len, s0 = i;
            i = e + 1;
            while (s0 < e && strchr(" \t\r", body[s0]))
                s0++;
            if (s0 == e)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                objs = gm_xrealloc(objs, cap * sizeof *objs);
                line_roots = gm_xrealloc(line_roots, cap * sizeof *line_roots);
            }
            cJSON *o = cJSON_ParseWithLength(body + s0, e - s0);
            line_roots[n_lines++] = o;
            objs[n++] = o; /* NULL: invalid JSON on that line */
        }
    }
    if (n > a->cfg.max_events) {
        for (size_t i = 0; i < n_lines; i++)
            cJSON_Delete(line_roots[i]);
        free(line_roots);
        free(objs);
        cJSON_Delete(root);
        agent__answer_error(r, 413, "body", "too many steps in one request");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        step_in s = {0};
        step_err e = {"", ""};
        bool ok = objs[i] ? parse_step(a, objs[i], &s, &e)
                          : fail_at(&e, "message", "invalid JSON on this line");
        if (ok && apply_step(a, c, &s, &e, &late) == 0) {
            accepted++;
            if (s.has_step)
                atomic_fetch_add(&a->gpu_steps, 1);
        } else {
            rejected++;
            agent__buf_printf(&errs, "%s{\"index\":%zu,\"field\":", rejected > 1 ? "," : "", i);
            agent__buf_json_str(&errs, e.field);
            agent__buf_lit(&errs, ",\"rule\":");
            agent__buf_json_str(&errs, e.rule);
            agent__buf_lit(&errs, "}");
            log_step_refusal(i, &e);
        }
        step_in_free(&s);
    }
    agent__buf_printf(&b, "{\"accepted\":%zu,\"rejected\":%zu", accepted, rejected);
    if (late)
        agent__buf_lit(&b, ",\"warning\":\"some kernels came after their window had closed: "
                           "they are attributed alone, as an extra row of their window\"");
    if (rejected) {
        agent__buf_lit(&b, ",\"errors\":[");
        agent__buf_put(&b, errs.p, errs.len);
        agent__buf_lit(&b, "]");
    }
    agent__buf_lit(&b, "}\n");
    free(errs.p);
    for (size_t i = 0; i < n_lines; i++)
        cJSON_Delete(line_roots[i]);
    free(line_roots);
    free(objs);
    cJSON_Delete(root);
    r->status = accepted || !n ? 200 : 422;
    free(r->answer);
    r->answer = b.p;
}
