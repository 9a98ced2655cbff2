/* The CUPTI source of the collector: loads libcupti at run time, records kernels, copies, sets
 * and external correlation (tenant and step tags) through asynchronous activity buffers, and
 * hands every completed buffer to the collector's core (collector.c), which closes windows
 * into attribution results.
 *
 * DESIGN. CUPTI calls buffer_requested/buffer_completed on its own threads; completed
 * buffers are parsed at once (gpu__cupti_parse) and their records and tags appended to the
 * collector's pending lists. Before each close the core asks CUPTI to hand over the buffers it
 * has completed (cuptiActivityFlushAll(0); forced at stop). Tagging pushes CUSTOM0 (tenant
 * tag) and CUSTOM1 (step id) external correlation ids on the calling thread. The clock of the
 * windows is CUPTI's timestamp (CLOCK_REALTIME on Linux), the clock the records are timed in.
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

/* ---- the CUPTI source of a collector ------------------------------------------------ */

typedef struct cupti_src {
    gpu__cupti_api api;
    size_t buffer_bytes;
    gm_gpu_collector *c;
} cupti_src;

/* CUPTI's buffer callbacks are process-wide: one CUPTI collector per process. */
static _Atomic(cupti_src *) g_src;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    cupti_src *src = atomic_load(&g_src);
    size_t bytes = src ? src->buffer_bytes : (size_t)4 << 20;
    *buffer = aligned_alloc(8, bytes);
    *size = *buffer ? bytes : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream_id, uint8_t *buffer,
                                      size_t size, size_t valid)
{
    (void)size;
    cupti_src *src = atomic_load(&g_src);
    if (src && src->c && buffer && valid > 0) {
        gpu__parsed p = {0};
        gpu__cupti_parse(&src->api, buffer, valid, &p);
        size_t dropped = 0;
        if (src->api.ActivityGetNumDroppedRecords(ctx, stream_id, &dropped) != CUPTI_SUCCESS)
            dropped = 0;
        gpu__collector_add_buffer(src->c, p.recs, p.n_recs, p.tags, p.n_tags, &p.stats,
                                  (int64_t)dropped);
        gpu__parsed_free(&p);
    }
    free(buffer);
}

static uint64_t cupti_now(void *ctx)
{
    cupti_src *src = ctx;
    uint64_t t = 0;
    if (src->api.GetTimestamp(&t) != CUPTI_SUCCESS || t == 0) {
        /* CUPTI's own clock is CLOCK_REALTIME on Linux: the records are timed in it */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    return t;
}

static void cupti_flush(void *ctx, int forced)
{
    cupti_src *src = ctx;
    CUptiResult st = src->api.ActivityFlushAll(forced ? CUPTI_ACTIVITY_FLAG_FLUSH_FORCED : 0);
    if (st != CUPTI_SUCCESS)
        gm_warn("gpu", "msg=\"cuptiActivityFlushAll failed\" error=\"%s\"",
                cupti_str(&src->api, st));
}

static CUpti_ExternalCorrelationKind ext_kind(gm_gpu_tag_kind kind)
{
    return kind == GM_GPU_TAG_STEP ? GPU__EXT_STEP : GPU__EXT_TENANT;
}

static int cupti_push(void *ctx, gm_gpu_tag_kind kind, uint64_t id)
{
    cupti_src *src = ctx;
    return src->api.ActivityPushExternalCorrelationId(ext_kind(kind), id) == CUPTI_SUCCESS
               ? 0
               : GM_EUNAVAIL;
}

static int cupti_pop(void *ctx, gm_gpu_tag_kind kind)
{
    cupti_src *src = ctx;
    uint64_t last = 0;
    return src->api.ActivityPopExternalCorrelationId(ext_kind(kind), &last) == CUPTI_SUCCESS
               ? 0
               : GM_EINVAL;
}

static void disable_all(const gpu__cupti_api *api);

static void cupti_stop(void *ctx)
{
    cupti_src *src = ctx;
    disable_all(&src->api);
    atomic_store(&g_src, NULL);
    free(src);
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
    int rc = gpu__collector_conf_defaults(&cf, err, err_len);
    if (rc)
        return rc;
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
    cupti_src *src = gm_xcalloc(1, sizeof *src);
    src->api = *api;
    src->buffer_bytes = cf.buffer_bytes;
    gpu__backend be = {.ctx = src,
                       .flush = cupti_flush,
                       .now_ns = cupti_now,
                       .push = cupti_push,
                       .pop = cupti_pop,
                       .stop = cupti_stop};
    gm_gpu_collector *c = gpu__collector_new(&be, &cf);
    src->c = c;
    cupti_src *expect = NULL;
    if (!atomic_compare_exchange_strong(&g_src, &expect, src)) {
        free(src);
        gpu__collector_free(c);
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "gpu collector: one is already running in this process");
    }
    st = api->ActivityRegisterCallbacks(buffer_requested, buffer_completed);
    for (size_t i = 0; st == CUPTI_SUCCESS && i < GM_ARRAY_LEN(activity_kinds); i++)
        st = api->ActivityEnable(activity_kinds[i]);
    if (st == CUPTI_SUCCESS)
        st = enable_api_records(api);
    if (st != CUPTI_SUCCESS) {
        rc = gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: CUPTI: %s", cupti_str(api, st));
        cupti_stop(src);
        gpu__collector_free(c);
        return rc;
    }
    gpu__collector_start_thread(c);
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
