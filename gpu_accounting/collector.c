/* The collector's core, without CUPTI: pending records and tags, step manifests, tenant tags,
 * window closing into attribution results, the flush thread, counters. Its records come from
 * a source behind a small table of operations (gpu__backend): the CUPTI source of
 * cupti_collector.c, or the caller itself (gm_gpu_feed_start, gm_gpu_collector_add: a node
 * agent that receives the server's GPU records over its socket).
 *
 * DESIGN. Records and tags are appended to the pending lists under `mu`. A close (the flush
 * thread every flush_ms, or gm_gpu_collector_flush) closes every window that ended at least
 * grace_ns ago on the source's clock: records are cut at the close limit (a window boundary),
 * the part before it goes into a fresh gm_gpu_attr with all known tenants, tags and manifests,
 * the part after it stays pending. Because the rule is local in time, closing window by window
 * gives the same numbers as one run over everything. A record that comes after its window has
 * closed is counted (late_records) and attributed alone in the next close, as an additional
 * row for its old window. Tags and manifests are kept for two closes, or as long as a pending
 * record needs them, so that tags that arrive in a later buffer than their kernels still join.
 * stats.closed_until_ns moves only after on_windows returned, so that a reader who sees it at
 * t knows every window ending at or before t has been reported.
 */
#include "gpu_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct kept_tag {
    gm_gpu_tag t;
    uint64_t gen;
} kept_tag;

typedef struct kept_step {
    uint64_t id;
    uint64_t gen;
    gm_gpu_step_request *reqs; /* strings owned */
    size_t n;
} kept_step;

struct gm_gpu_collector {
    gpu__backend be;
    gm_gpu_collector_conf conf;
    pthread_mutex_t mu;       /* the pending lists, tenants, stats */
    pthread_mutex_t close_mu; /* one close at a time, in order */
    pthread_cond_t cv;
    pthread_t thread;
    int has_thread, stopping;
    gm_gpu_record *recs;
    size_t n_recs, cap_recs;
    kept_tag *tags;
    size_t n_tags, cap_tags;
    kept_step *steps;
    size_t n_steps, cap_steps;
    gpu__strtab tenants; /* tenant tag = index + 1 */
    uint64_t closed_until_ns;
    uint64_t gen;
    gm_gpu_collector_stats stats;
};

int gpu__collector_conf_defaults(gm_gpu_collector_conf *cf, char *err, size_t err_len)
{
    if (!cf->window_ns)
        cf->window_ns = GM_GPU_DEFAULT_WINDOW_NS;
    if (!cf->flush_ms)
        cf->flush_ms = 1000;
    if (!cf->grace_ns)
        cf->grace_ns = UINT64_C(2000000000);
    if (!cf->buffer_bytes)
        cf->buffer_bytes = (size_t)4 << 20;
    cf->buffer_bytes = (cf->buffer_bytes + 7) & ~(size_t)7;
    if (cf->prefill_weight == 0 && cf->decode_weight == 0)
        cf->prefill_weight = cf->decode_weight = 1;
    if (cf->window_ns >= GM_GPU_MAX_NS)
        return gm_fail(err, err_len, GM_EINVAL, "gpu collector: window_ns: must be below 2^62");
    return 0;
}

static void *flush_thread(void *arg);

gm_gpu_collector *gpu__collector_new(const gpu__backend *be, const gm_gpu_collector_conf *conf)
{
    gm_gpu_collector *c = gm_xcalloc(1, sizeof *c);
    c->be = *be;
    c->conf = *conf;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->close_mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

void gpu__collector_start_thread(gm_gpu_collector *c)
{
    if (c->conf.flush_ms == UINT32_MAX)
        return;
    if (pthread_create(&c->thread, NULL, flush_thread, c) == 0)
        c->has_thread = 1;
    else
        gm_warn("gpu", "msg=\"flush thread not started: call gm_gpu_collector_flush\"");
}

static void free_step(kept_step *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free((char *)s->reqs[i].tenant);
        free((char *)s->reqs[i].request_id);
    }
    free(s->reqs);
}

/* Frees a collector that was never started (no thread) or that has been stopped. */
void gpu__collector_free(gm_gpu_collector *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_steps; i++)
        free_step(&c->steps[i]);
    free(c->steps);
    free(c->tags);
    free(c->recs);
    gpu__strtab_free(&c->tenants);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->close_mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Lock held. */
static void add_locked(gm_gpu_collector *c, const gm_gpu_record *recs, size_t n_recs,
                       const gm_gpu_tag *tags, size_t n_tags)
{
    if (c->n_recs + n_recs > c->cap_recs) {
        c->cap_recs = (c->n_recs + n_recs) * 2;
        c->recs = gm_xrealloc(c->recs, c->cap_recs * sizeof *c->recs);
    }
    if (n_recs)
        memcpy(c->recs + c->n_recs, recs, n_recs * sizeof *recs);
    c->n_recs += n_recs;
    if (c->n_tags + n_tags > c->cap_tags) {
        c->cap_tags = (c->n_tags + n_tags) * 2;
        c->tags = gm_xrealloc(c->tags, c->cap_tags * sizeof *c->tags);
    }
    for (size_t i = 0; i < n_tags; i++)
        c->tags[c->n_tags++] = (kept_tag){.t = tags[i], .gen = c->gen};
}

void gpu__collector_add_buffer(gm_gpu_collector *c, const gm_gpu_record *recs, size_t n_recs,
                               const gm_gpu_tag *tags, size_t n_tags,
                               const gm_gpu_collector_stats *counts, int64_t dropped)
{
    pthread_mutex_lock(&c->mu);
    add_locked(c, recs, n_recs, tags, n_tags);
    gm_gpu_collector_stats *s = &c->stats;
    s->buffers++;
    s->kernels += counts->kernels;
    s->copies += counts->copies;
    s->tags += counts->tags;
    s->api_records += counts->api_records;
    s->other_records += counts->other_records;
    s->zero_timestamps += counts->zero_timestamps;
    s->inverted += counts->inverted;
    s->bad_buffers += counts->bad_buffers;
    s->dropped += dropped;
    pthread_mutex_unlock(&c->mu);
}

/* Closes the windows that end at or before `limit` (a window boundary); final: everything. */
static int close_upto(gm_gpu_collector *c, uint64_t limit, int final, char *err, size_t err_len)
{
    pthread_mutex_lock(&c->close_mu);
    pthread_mutex_lock(&c->mu);
    if (!final && limit <= c->closed_until_ns) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->close_mu);
        return 0;
    }
    gm_gpu_attr_conf ac = {.window_ns = c->conf.window_ns,
                           .prefill_weight = c->conf.prefill_weight,
                           .decode_weight = c->conf.decode_weight};
    gm_gpu_attr *a = NULL;
    int rc = gm_gpu_attr_new(&ac, &a, err, err_len);
    for (size_t i = 0; rc == 0 && i < c->tenants.n; i++)
        rc = gm_gpu_attr_define_tenant(a, i + 1, c->tenants.s[i], err, err_len);
    for (size_t i = 0; rc == 0 && i < c->n_steps; i++)
        rc = gm_gpu_attr_add_step(a, c->steps[i].id, c->steps[i].reqs, c->steps[i].n, err, err_len);
    if (rc) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->close_mu);
        gm_gpu_attr_free(a);
        return rc;
    }
    for (size_t i = 0; i < c->n_tags; i++)
        gm_gpu_attr_add_tag(a, c->tags[i].t.correlation_id, c->tags[i].t.kind, c->tags[i].t.value);
    /* cut the records at the limit; keep what lies after it */
    gpu__map needed = {0}; /* correlation ids of kept records */
    size_t kept = 0;
    for (size_t i = 0; i < c->n_recs; i++) {
        gm_gpu_record r = c->recs[i];
        if (r.start_ns < c->closed_until_ns)
            c->stats.late_records++;
        if (final || r.end_ns <= limit) {
            gm_gpu_attr_add_records(a, &r, 1);
        } else if (r.start_ns < limit) {
            gm_gpu_record head = r;
            head.end_ns = limit;
            gm_gpu_attr_add_records(a, &head, 1);
            r.start_ns = limit;
            c->recs[kept++] = r;
            gpu__map_put(&needed, r.correlation_id, NULL);
        } else {
            c->recs[kept++] = r;
            gpu__map_put(&needed, r.correlation_id, NULL);
        }
    }
    c->n_recs = kept;
    /* prune tags and manifests: kept for two closes or while a pending record needs them */
    gpu__map steps_needed = {0};
    size_t kt = 0;
    for (size_t i = 0; i < c->n_tags; i++) {
        kept_tag t = c->tags[i];
        if (!final && (t.gen >= c->gen || gpu__map_get(&needed, t.t.correlation_id))) {
            c->tags[kt++] = t;
            if (t.t.kind == GM_GPU_TAG_STEP)
                gpu__map_put(&steps_needed, t.t.value, NULL);
        }
    }
    c->n_tags = kt;
    size_t ks = 0;
    for (size_t i = 0; i < c->n_steps; i++) {
        kept_step s = c->steps[i];
        if (!final && (s.gen >= c->gen || gpu__map_get(&steps_needed, s.id)))
            c->steps[ks++] = s;
        else
            free_step(&s);
    }
    c->n_steps = ks;
    gpu__map_free(&needed);
    gpu__map_free(&steps_needed);
    c->gen++;
    if (limit > c->closed_until_ns)
        c->closed_until_ns = limit;
    uint64_t reported = c->closed_until_ns;
    pthread_mutex_unlock(&c->mu);

    gm_gpu_result res;
    rc = gm_gpu_attr_run(a, &res, err, err_len);
    gm_gpu_attr_free(a);
    if (rc == 0) {
        pthread_mutex_lock(&c->mu);
        c->stats.untagged_kernels += res.counts.untagged + res.counts.unknown_tenant;
        c->stats.windows_closed += (int64_t)res.n_windows;
        pthread_mutex_unlock(&c->mu);
        if (c->conf.on_windows && res.n_windows > 0)
            c->conf.on_windows(&res, c->conf.arg);
        gm_gpu_result_free(&res);
    }
    /* the windows up to `reported` are in the callback's hands now (also when the run
     * failed: they will never be reported) */
    pthread_mutex_lock(&c->mu);
    if ((int64_t)reported > c->stats.closed_until_ns)
        c->stats.closed_until_ns = reported > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)reported;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&c->close_mu);
    return rc;
}

uint64_t gm_gpu_collector_now_ns(gm_gpu_collector *c)
{
    return c ? c->be.now_ns(c->be.ctx) : 0;
}

int gm_gpu_collector_flush(gm_gpu_collector *c, char *err, size_t err_len)
{
    if (!c)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not running");
    if (c->be.flush)
        c->be.flush(c->be.ctx, 0);
    uint64_t now = c->be.now_ns(c->be.ctx), W = c->conf.window_ns;
    if (now <= c->conf.grace_ns)
        return 0;
    uint64_t limit = (now - c->conf.grace_ns) / W * W;
    return close_upto(c, limit, 0, err, err_len);
}

static void *flush_thread(void *arg)
{
    gm_gpu_collector *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        /* a wake-up period, not an instant: the condition variable waits on the real clock */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)c->conf.flush_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        if (c->stopping)
            break;
        pthread_mutex_unlock(&c->mu);
        char err[256];
        if (gm_gpu_collector_flush(c, err, sizeof err))
            gm_warn("gpu", "msg=\"window close failed\" error=\"%s\"", err);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

void gm_gpu_collector_stop(gm_gpu_collector *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->has_thread)
        pthread_join(c->thread, NULL);
    if (c->be.flush)
        c->be.flush(c->be.ctx, 1);
    if (c->be.stop)
        c->be.stop(c->be.ctx); /* no more records from the source after this */
    char err[256];
    if (close_upto(c, UINT64_MAX, 1, err, sizeof err))
        gm_warn("gpu", "msg=\"last window close failed\" error=\"%s\"", err);
    gpu__collector_free(c);
}

void gm_gpu_collector_stats_get(gm_gpu_collector *c, gm_gpu_collector_stats *out)
{
    if (!c) {
        *out = (gm_gpu_collector_stats){0};
        return;
    }
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

/* ---- tags ---------------------------------------------------------------------------- */

int gm_gpu_collector_tenant_tag(gm_gpu_collector *c, const char *tenant, uint64_t *tag, char *err,
                                size_t err_len)
{
    if (!c)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not running");
    char why[160];
    if (gpu__tenant_check(tenant, why, sizeof why))
        return gm_fail(err, err_len, GM_EINVAL, "tenant: %s", why);
    pthread_mutex_lock(&c->mu);
    *tag = (uint64_t)gpu__strtab_intern(&c->tenants, tenant) + 1;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int gm_gpu_tenant_push(gm_gpu_collector *c, const char *tenant)
{
    if (!c || !c->be.push)
        return GM_EUNAVAIL;
    uint64_t tag;
    if (gm_gpu_collector_tenant_tag(c, tenant, &tag, NULL, 0))
        return GM_EINVAL;
    return c->be.push(c->be.ctx, GM_GPU_TAG_TENANT, tag);
}

int gm_gpu_tenant_pop(gm_gpu_collector *c)
{
    if (!c || !c->be.pop)
        return GM_EUNAVAIL;
    return c->be.pop(c->be.ctx, GM_GPU_TAG_TENANT);
}

int gm_gpu_step_push(gm_gpu_collector *c, uint64_t step_id)
{
    if (!c || !c->be.push)
        return GM_EUNAVAIL;
    return c->be.push(c->be.ctx, GM_GPU_TAG_STEP, step_id);
}

int gm_gpu_step_pop(gm_gpu_collector *c)
{
    if (!c || !c->be.pop)
        return GM_EUNAVAIL;
    return c->be.pop(c->be.ctx, GM_GPU_TAG_STEP);
}

int gm_gpu_step_manifest(gm_gpu_collector *c, uint64_t step_id, const gm_gpu_step_request *reqs,
                         size_t n, char *err, size_t err_len)
{
    if (!c)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not running");
    if (n == 0)
        return gm_fail(err, err_len, GM_EINVAL, "step %llu: manifest: must list a request",
                       (unsigned long long)step_id);
    for (size_t i = 0; i < n; i++) {
        char why[160];
        if (gpu__tenant_check(reqs[i].tenant, why, sizeof why) ||
            (reqs[i].request_id && gpu__request_id_check(reqs[i].request_id, why, sizeof why)))
            return gm_fail(err, err_len, GM_EINVAL, "step %llu: request %zu: %s",
                           (unsigned long long)step_id, i, why);
        if (reqs[i].prefill_tokens < 0 || reqs[i].decode_tokens < 0 ||
            reqs[i].prefill_tokens > (INT64_C(1) << 53) ||
            reqs[i].decode_tokens > (INT64_C(1) << 53))
            return gm_fail(err, err_len, GM_EINVAL,
                           "step %llu: request %zu: token counts must be 0..2^53",
                           (unsigned long long)step_id, i);
        if ((gm_i128)c->conf.prefill_weight * reqs[i].prefill_tokens +
                (gm_i128)c->conf.decode_weight * reqs[i].decode_tokens >=
            ((gm_i128)1 << 62))
            return gm_fail(err, err_len, GM_ERANGE,
                           "step %llu: request %zu: weight must be below 2^62",
                           (unsigned long long)step_id, i);
    }
    kept_step s = {.id = step_id, .n = n, .reqs = gm_xmalloc(n * sizeof *s.reqs)};
    for (size_t i = 0; i < n; i++) {
        s.reqs[i] = reqs[i];
        s.reqs[i].tenant = gm_xstrdup(reqs[i].tenant);
        s.reqs[i].request_id = reqs[i].request_id ? gm_xstrdup(reqs[i].request_id) : NULL;
    }
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_steps; i++) {
        if (c->steps[i].id == step_id) {
            pthread_mutex_unlock(&c->mu);
            free_step(&s);
            return gm_fail(err, err_len, GM_ECONFLICT, "step %llu: manifest: already given",
                           (unsigned long long)step_id);
        }
    }
    s.gen = c->gen;
    if (c->n_steps == c->cap_steps) {
        c->cap_steps = c->cap_steps ? c->cap_steps * 2 : 64;
        c->steps = gm_xrealloc(c->steps, c->cap_steps * sizeof *c->steps);
    }
    c->steps[c->n_steps++] = s;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* ---- the feed: records from the caller ------------------------------------------------ */

static uint64_t feed_now(void *ctx)
{
    (void)ctx;
    int64_t us = gm_now_us();
    return us > 0 ? (uint64_t)us * 1000u : 0;
}

int gm_gpu_feed_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                      size_t err_len)
{
    *out = NULL;
    gm_gpu_collector_conf cf = conf ? *conf : (gm_gpu_collector_conf){0};
    int rc = gpu__collector_conf_defaults(&cf, err, err_len);
    if (rc)
        return rc;
    gpu__backend be = {.now_ns = feed_now, .feed = 1};
    gm_gpu_collector *c = gpu__collector_new(&be, &cf);
    gpu__collector_start_thread(c);
    gm_info("gpu", "msg=\"feed collector started\" window_ns=%llu grace_ns=%llu",
            (unsigned long long)cf.window_ns, (unsigned long long)cf.grace_ns);
    *out = c;
    return 0;
}

int gm_gpu_collector_add(gm_gpu_collector *c, const gm_gpu_record *recs, size_t n_recs,
                         const gm_gpu_tag *tags, size_t n_tags, char *err, size_t err_len)
{
    if (!c)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not running");
    if (!c->be.feed)
        return gm_fail(err, err_len, GM_EINVAL,
                       "gpu collector: records come from CUPTI here; records given by the caller "
                       "would mix their correlation ids with CUPTI's");
    for (size_t i = 0; i < n_tags; i++)
        if (tags[i].kind != GM_GPU_TAG_TENANT && tags[i].kind != GM_GPU_TAG_STEP)
            return gm_fail(err, err_len, GM_EINVAL, "tag %zu: kind must be tenant or step", i);
    gm_gpu_collector_stats counts = {0};
    gm_gpu_record *keep = gm_xmalloc((n_recs ? n_recs : 1) * sizeof *keep);
    size_t n_keep = 0;
    for (size_t i = 0; i < n_recs; i++) {
        if (recs[i].resource == GM_GPU_RES_COPY)
            counts.copies++;
        else
            counts.kernels++;
        if (recs[i].start_ns == 0 && recs[i].end_ns == 0)
            counts.zero_timestamps++;
        else if (recs[i].end_ns < recs[i].start_ns)
            counts.inverted++;
        else
            keep[n_keep++] = recs[i];
    }
    counts.tags = (int64_t)n_tags;
    gpu__collector_add_buffer(c, keep, n_keep, tags, n_tags, &counts, 0);
    free(keep);
    return 0;
}
