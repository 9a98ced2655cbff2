/* The CUPTI collector: loads libcupti at run time, records kernels, copies, sets and external
 * correlation (tenant and step tags) through asynchronous activity buffers, and closes
 * windows into attribution results on a periodic flush.
 *
 * DESIGN. CUPTI calls buffer_requested/buffer_completed on its own threads; completed
 * buffers are parsed at once (gpu__cupti_parse) and their records and tags appended to the
 * collector's pending lists under `mu`. The flush thread wakes every flush_ms, asks CUPTI to
 * hand over the buffers it has completed (cuptiActivityFlushAll(0)), and closes every window
 * that ended at least grace_ns ago: records are cut at the close limit (a window boundary),
 * the part before it goes into a fresh gm_gpu_attr with all known tenants, tags and
 * manifests, the part after it stays pending. Because the rule is local in time, closing
 * window by window gives the same numbers as one run over everything. A record that comes
 * after its window has closed is counted (late_records) and attributed alone in the next
 * close, as an additional row for its old window. Tags and manifests are kept for two closes,
 * or as long as a pending record needs them, so that tags that arrive in a later buffer
 * than their kernels still join.
 *
 * Only this file (and the tests of the parser) sees the CUPTI headers.
 */
#include "gpu_cupti.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- loading ------------------------------------------------------------------------- */

#define LOAD(lib, name, sym, required)                                                             \
    do {                                                                                           \
        *(void **)&api->name = dlsym(lib, sym);                                                    \
        if (!api->name && (required))                                                              \
            return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: %s: symbol %s missing",      \
                           #lib, sym);                                                             \
    } while (0)

int gpu__cupti_load(gpu__cupti_api *api, const char *path, char *err, size_t err_len)
{
    memset(api, 0, sizeof *api);
    void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: no CUDA driver: %s", dlerror());
    api->driver_lib = drv;
    LOAD(drv, cuInit, "cuInit", 1);
    LOAD(drv, cuDeviceGetCount, "cuDeviceGetCount", 1);
    const char *names[] = {path, "libcupti.so.13", "libcupti.so"};
    void *lib = NULL;
    const char *why = "";
    for (size_t i = path ? 0 : 1; i < GM_ARRAY_LEN(names) && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib)
            why = dlerror();
        if (path)
            break; /* an explicit path is not second-guessed */
    }
    if (!lib)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: libcupti not loadable: %s", why);
    api->lib = lib;
    LOAD(lib, GetVersion, "cuptiGetVersion", 1);
    LOAD(lib, GetResultString, "cuptiGetResultString", 0);
    LOAD(lib, GetTimestamp, "cuptiGetTimestamp", 1);
    LOAD(lib, ActivityRegisterCallbacks, "cuptiActivityRegisterCallbacks", 1);
    LOAD(lib, ActivityEnable, "cuptiActivityEnable", 1);
    LOAD(lib, ActivityDisable, "cuptiActivityDisable", 1);
    LOAD(lib, ActivityFlushAll, "cuptiActivityFlushAll", 1);
    LOAD(lib, ActivityGetNextRecord, "cuptiActivityGetNextRecord", 1);
    LOAD(lib, ActivityGetNumDroppedRecords, "cuptiActivityGetNumDroppedRecords", 1);
    LOAD(lib, ActivityPushExternalCorrelationId, "cuptiActivityPushExternalCorrelationId", 1);
    LOAD(lib, ActivityPopExternalCorrelationId, "cuptiActivityPopExternalCorrelationId", 1);
    LOAD(lib, ActivityEnableDriverApi, "cuptiActivityEnableDriverApi", 0);
    LOAD(lib, ActivityEnableRuntimeApi, "cuptiActivityEnableRuntimeApi", 0);
    LOAD(lib, GetCallbackName, "cuptiGetCallbackName", 0);
    return 0;
}

static const char *cupti_str(const gpu__cupti_api *api, CUptiResult r)
{
    const char *s = NULL;
    if (api->GetResultString && api->GetResultString(r, &s) == CUPTI_SUCCESS && s)
        return s;
    return "CUPTI error";
}

/* ---- the parser ---------------------------------------------------------------------- */

void gpu__parsed_free(gpu__parsed *p)
{
    free(p->recs);
    free(p->tags);
    memset(p, 0, sizeof *p);
}

static void parsed_record(gpu__parsed *p, uint64_t start, uint64_t end, uint32_t device,
                          uint32_t corr, gm_gpu_resource res)
{
    if (start == 0 && end == 0) {
        p->stats.zero_timestamps++;
        return;
    }
    if (end < start) {
        p->stats.inverted++;
        return;
    }
    if (p->n_recs == p->cap_recs) {
        p->cap_recs = p->cap_recs ? p->cap_recs * 2 : 256;
        p->recs = gm_xrealloc(p->recs, p->cap_recs * sizeof *p->recs);
    }
    p->recs[p->n_recs++] = (gm_gpu_record){.start_ns = start,
                                           .end_ns = end,
                                           .device = device,
                                           .correlation_id = corr,
                                           .resource = (uint8_t)res};
}

void gpu__cupti_parse(const gpu__cupti_api *api, uint8_t *buf, size_t valid, gpu__parsed *out)
{
    CUpti_Activity *rec = NULL;
    for (;;) {
        CUptiResult st = api->ActivityGetNextRecord(buf, valid, &rec);
        if (st == CUPTI_ERROR_MAX_LIMIT_REACHED)
            break;
        if (st != CUPTI_SUCCESS || !rec) {
            out->stats.bad_buffers++;
            break;
        }
        switch (rec->kind) {
        case CUPTI_ACTIVITY_KIND_KERNEL:
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
            out->stats.kernels++;
            parsed_record(out, k->start, k->end, k->deviceId, k->correlationId, GM_GPU_RES_KERNEL);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
            const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)rec;
            out->stats.copies++;
            parsed_record(out, m->start, m->end, m->deviceId,
                          m->correlationId ? m->correlationId : m->runtimeCorrelationId,
                          GM_GPU_RES_COPY);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY2: {
            const CUpti_ActivityMemcpyPtoP4 *m = (const CUpti_ActivityMemcpyPtoP4 *)rec;
            out->stats.copies++;
            parsed_record(out, m->start, m->end, m->deviceId, m->correlationId, GM_GPU_RES_COPY);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
            const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)rec;
            out->stats.copies++;
            parsed_record(out, m->start, m->end, m->deviceId, m->correlationId, GM_GPU_RES_COPY);
            break;
        }
        case CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION: {
            const CUpti_ActivityExternalCorrelation *x =
                (const CUpti_ActivityExternalCorrelation *)rec;
            uint8_t kind = x->externalKind == GPU__EXT_TENANT ? GM_GPU_TAG_TENANT
                           : x->externalKind == GPU__EXT_STEP ? GM_GPU_TAG_STEP
                                                              : 0;
            if (!kind) {
                out->stats.other_records++;
                break;
            }
            out->stats.tags++;
            if (out->n_tags == out->cap_tags) {
                out->cap_tags = out->cap_tags ? out->cap_tags * 2 : 256;
                out->tags = gm_xrealloc(out->tags, out->cap_tags * sizeof *out->tags);
            }
            out->tags[out->n_tags++] = (gpu__tag){
                .correlation_id = x->correlationId, .kind = kind, .value = x->externalId};
            break;
        }
        case CUPTI_ACTIVITY_KIND_DRIVER:
        case CUPTI_ACTIVITY_KIND_RUNTIME:
            out->stats.api_records++;
            break;
        default:
            out->stats.other_records++;
            break;
        }
    }
}

/* ---- the collector ------------------------------------------------------------------- */

typedef struct kept_tag {
    gpu__tag t;
    uint64_t gen;
} kept_tag;

typedef struct kept_step {
    uint64_t id;
    uint64_t gen;
    gm_gpu_step_request *reqs; /* strings owned */
    size_t n;
} kept_step;

struct gm_gpu_collector {
    gpu__cupti_api api;
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

static _Atomic(gm_gpu_collector *) g_collector;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    gm_gpu_collector *c = atomic_load(&g_collector);
    size_t bytes = c ? c->conf.buffer_bytes : (size_t)4 << 20;
    *buffer = aligned_alloc(8, bytes);
    *size = *buffer ? bytes : 0;
    *max_records = 0;
}

static void add_parsed(gm_gpu_collector *c, const gpu__parsed *p)
{
    if (c->n_recs + p->n_recs > c->cap_recs) {
        c->cap_recs = (c->n_recs + p->n_recs) * 2;
        c->recs = gm_xrealloc(c->recs, c->cap_recs * sizeof *c->recs);
    }
    if (p->n_recs)
        memcpy(c->recs + c->n_recs, p->recs, p->n_recs * sizeof *p->recs);
    c->n_recs += p->n_recs;
    if (c->n_tags + p->n_tags > c->cap_tags) {
        c->cap_tags = (c->n_tags + p->n_tags) * 2;
        c->tags = gm_xrealloc(c->tags, c->cap_tags * sizeof *c->tags);
    }
    for (size_t i = 0; i < p->n_tags; i++)
        c->tags[c->n_tags++] = (kept_tag){.t = p->tags[i], .gen = c->gen};
    gm_gpu_collector_stats *s = &c->stats;
    s->buffers++;
    s->kernels += p->stats.kernels;
    s->copies += p->stats.copies;
    s->tags += p->stats.tags;
    s->api_records += p->stats.api_records;
    s->other_records += p->stats.other_records;
    s->zero_timestamps += p->stats.zero_timestamps;
    s->inverted += p->stats.inverted;
    s->bad_buffers += p->stats.bad_buffers;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream_id, uint8_t *buffer,
                                      size_t size, size_t valid)
{
    (void)size;
    gm_gpu_collector *c = atomic_load(&g_collector);
    if (c && buffer && valid > 0) {
        gpu__parsed p = {0};
        gpu__cupti_parse(&c->api, buffer, valid, &p);
        size_t dropped = 0;
        if (c->api.ActivityGetNumDroppedRecords(ctx, stream_id, &dropped) != CUPTI_SUCCESS)
            dropped = 0;
        pthread_mutex_lock(&c->mu);
        add_parsed(c, &p);
        c->stats.dropped += (int64_t)dropped;
        pthread_mutex_unlock(&c->mu);
        gpu__parsed_free(&p);
    }
    free(buffer);
}

static void free_step(kept_step *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free((char *)s->reqs[i].tenant);
        free((char *)s->reqs[i].request_id);
    }
    free(s->reqs);
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
    pthread_mutex_unlock(&c->close_mu);
    return rc;
}

static uint64_t cupti_now(gm_gpu_collector *c)
{
    uint64_t t = 0;
    if (c->api.GetTimestamp(&t) != CUPTI_SUCCESS || t == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    return t;
}

int gm_gpu_collector_flush(gm_gpu_collector *c, char *err, size_t err_len)
{
    if (!c)
        return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not running");
    CUptiResult st = c->api.ActivityFlushAll(0);
    if (st != CUPTI_SUCCESS)
        gm_warn("gpu", "msg=\"cuptiActivityFlushAll failed\" error=\"%s\"", cupti_str(&c->api, st));
    uint64_t now = cupti_now(c), W = c->conf.window_ns;
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

static const char *const trace_prefixes[] = {"cuLaunch",   "cuGraphLaunch", "cuMemcpy",
                                             "cuMemset",   "cudaLaunch",    "cudaGraphLaunch",
                                             "cudaMemcpy", "cudaMemset"};

static int wanted_api(const char *name)
{
    for (size_t i = 0; name && i < GM_ARRAY_LEN(trace_prefixes); i++) {
        if (strncmp(name, trace_prefixes[i], strlen(trace_prefixes[i])) == 0)
            return 1;
    }
    return 0;
}

/* External correlation records are emitted for the API calls that are traced; trace only the
 * launch, copy and set calls where CUPTI lets us choose, all calls otherwise. */
static CUptiResult enable_api_records(const gpu__cupti_api *api)
{
    if (api->ActivityEnableDriverApi && api->ActivityEnableRuntimeApi && api->GetCallbackName) {
        CUptiResult st = CUPTI_SUCCESS;
        for (uint32_t id = 1; id < CUPTI_DRIVER_TRACE_CBID_SIZE && st == CUPTI_SUCCESS; id++) {
            const char *name = NULL;
            if (api->GetCallbackName(CUPTI_CB_DOMAIN_DRIVER_API, id, &name) == CUPTI_SUCCESS &&
                wanted_api(name))
                st = api->ActivityEnableDriverApi(id, 1);
        }
        for (uint32_t id = 1; id < CUPTI_RUNTIME_TRACE_CBID_SIZE && st == CUPTI_SUCCESS; id++) {
            const char *name = NULL;
            if (api->GetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, id, &name) == CUPTI_SUCCESS &&
                wanted_api(name))
                st = api->ActivityEnableRuntimeApi(id, 1);
        }
        if (st == CUPTI_SUCCESS)
            return st;
    }
    CUptiResult st = api->ActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER);
    if (st == CUPTI_SUCCESS)
        st = api->ActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME);
    return st;
}

static const CUpti_ActivityKind activity_kinds[] = {
    CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET,
    CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION};

static void disable_all(const gpu__cupti_api *api)
{
    for (size_t i = 0; i < GM_ARRAY_LEN(activity_kinds); i++)
        api->ActivityDisable(activity_kinds[i]);
    api->ActivityDisable(CUPTI_ACTIVITY_KIND_DRIVER);
    api->ActivityDisable(CUPTI_ACTIVITY_KIND_RUNTIME);
}

int gpu__collector_start_with(const gpu__cupti_api *api, const gm_gpu_collector_conf *conf,
                              gm_gpu_collector **out, char *err, size_t err_len)
{
    *out = NULL;
    gm_gpu_collector_conf cf = conf ? *conf : (gm_gpu_collector_conf){0};
    if (!cf.window_ns)
        cf.window_ns = GM_GPU_DEFAULT_WINDOW_NS;
    if (!cf.flush_ms)
        cf.flush_ms = 1000;
    if (!cf.grace_ns)
        cf.grace_ns = UINT64_C(2000000000);
    if (!cf.buffer_bytes)
        cf.buffer_bytes = (size_t)4 << 20;
    cf.buffer_bytes = (cf.buffer_bytes + 7) & ~(size_t)7;
    if (cf.prefill_weight == 0 && cf.decode_weight == 0)
        cf.prefill_weight = cf.decode_weight = 1;
    if (cf.window_ns >= GM_GPU_MAX_NS)
        return gm_fail(err, err_len, GM_EINVAL, "gpu collector: window_ns: must be below 2^62");
    int n_dev = 0, drc = api->cuInit(0);
    if (drc != 0 || api->cuDeviceGetCount(&n_dev) != 0 || n_dev <= 0)
        return gm_fail(err, err_len, GM_EUNAVAIL,
                       "gpu collector: no usable GPU (cuInit %d, %d devices)", drc, n_dev);
    uint32_t version = 0;
    CUptiResult st = api->GetVersion(&version);
    if (st != CUPTI_SUCCESS || version / 10000 != CUPTI_API_VERSION / 10000)
        return gm_fail(err, err_len, GM_EUNAVAIL,
                       "gpu collector: libcupti API version %u, built for %u: record layouts "
                       "would differ",
                       version, (unsigned)CUPTI_API_VERSION);
    gm_gpu_collector *c = gm_xcalloc(1, sizeof *c);
    c->api = *api;
    c->conf = cf;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->close_mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    gm_gpu_collector *expect = NULL;
    if (!atomic_compare_exchange_strong(&g_collector, &expect, c)) {
        free(c);
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "gpu collector: one is already running in this process");
    }
    st = api->ActivityRegisterCallbacks(buffer_requested, buffer_completed);
    for (size_t i = 0; st == CUPTI_SUCCESS && i < GM_ARRAY_LEN(activity_kinds); i++)
        st = api->ActivityEnable(activity_kinds[i]);
    if (st == CUPTI_SUCCESS)
        st = enable_api_records(api);
    if (st != CUPTI_SUCCESS) {
        disable_all(api);
        atomic_store(&g_collector, NULL);
        int rc = gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: CUPTI: %s", cupti_str(api, st));
        pthread_mutex_destroy(&c->mu);
        pthread_mutex_destroy(&c->close_mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        return rc;
    }
    if (cf.flush_ms != UINT32_MAX) {
        if (pthread_create(&c->thread, NULL, flush_thread, c) == 0)
            c->has_thread = 1;
        else
            gm_warn("gpu", "msg=\"flush thread not started: call gm_gpu_collector_flush\"");
    }
    gm_info("gpu", "msg=\"collector started\" cupti_version=%u devices=%d window_ns=%llu", version,
            n_dev, (unsigned long long)cf.window_ns);
    *out = c;
    return 0;
}

int gm_gpu_collector_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                           size_t err_len)
{
    gpu__cupti_api api;
    *out = NULL;
    int rc = gpu__cupti_load(&api, conf ? conf->cupti_path : NULL, err, err_len);
    if (rc == 0)
        rc = gpu__collector_start_with(&api, conf, out, err, err_len);
    if (rc && api.driver_lib && !api.lib)
        dlclose(api.driver_lib);
    return rc;
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
    c->api.ActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    disable_all(&c->api);
    char err[256];
    if (close_upto(c, UINT64_MAX, 1, err, sizeof err))
        gm_warn("gpu", "msg=\"last window close failed\" error=\"%s\"", err);
    atomic_store(&g_collector, NULL);
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

/* ---- tagging ------------------------------------------------------------------------- */

int gm_gpu_tenant_push(gm_gpu_collector *c, const char *tenant)
{
    if (!c)
        return GM_EUNAVAIL;
    if (gpu__tenant_check(tenant, NULL, 0))
        return GM_EINVAL;
    pthread_mutex_lock(&c->mu);
    uint64_t tag = (uint64_t)gpu__strtab_intern(&c->tenants, tenant) + 1;
    pthread_mutex_unlock(&c->mu);
    return c->api.ActivityPushExternalCorrelationId(GPU__EXT_TENANT, tag) == CUPTI_SUCCESS
               ? 0
               : GM_EUNAVAIL;
}

int gm_gpu_tenant_pop(gm_gpu_collector *c)
{
    if (!c)
        return GM_EUNAVAIL;
    uint64_t last = 0;
    return c->api.ActivityPopExternalCorrelationId(GPU__EXT_TENANT, &last) == CUPTI_SUCCESS
               ? 0
               : GM_EINVAL;
}

int gm_gpu_step_push(gm_gpu_collector *c, uint64_t step_id)
{
    if (!c)
        return GM_EUNAVAIL;
    return c->api.ActivityPushExternalCorrelationId(GPU__EXT_STEP, step_id) == CUPTI_SUCCESS
               ? 0
               : GM_EUNAVAIL;
}

int gm_gpu_step_pop(gm_gpu_collector *c)
{
    if (!c)
        return GM_EUNAVAIL;
    uint64_t last = 0;
    return c->api.ActivityPopExternalCorrelationId(GPU__EXT_STEP, &last) == CUPTI_SUCCESS
               ? 0
               : GM_EINVAL;
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
