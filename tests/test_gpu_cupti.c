/* The CUPTI record parser and the collector, over hand-built activity buffers made of the real
 * CUDA 13 record structs (CUpti_ActivityKernel10, Memcpy6, MemcpyPtoP4, Memset4,
 * ExternalCorrelation, API), through a fake CUPTI function table. No GPU needed. */
#include "gpu_cupti.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- a fake CUPTI ---------------------------------------------------------------------- */

static struct {
    CUpti_BuffersCallbackRequestFunc requested;
    CUpti_BuffersCallbackCompleteFunc completed;
    uint64_t now_ns;
    int devices;
    uint32_t version;
    size_t dropped_per_buffer;
    int enabled[CUPTI_ACTIVITY_KIND_COUNT];
    int driver_cbids_enabled, runtime_cbids_enabled;
    uint64_t stack[8][16];
    int depth[8];
    int pushes, pops, flushes, forced_flushes;
} F;

static size_t record_size(CUpti_ActivityKind kind)
{
    switch (kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
        return sizeof(CUpti_ActivityKernel10);
    case CUPTI_ACTIVITY_KIND_MEMCPY:
        return sizeof(CUpti_ActivityMemcpy6);
    case CUPTI_ACTIVITY_KIND_MEMCPY2:
        return sizeof(CUpti_ActivityMemcpyPtoP4);
    case CUPTI_ACTIVITY_KIND_MEMSET:
        return sizeof(CUpti_ActivityMemset4);
    case CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION:
        return sizeof(CUpti_ActivityExternalCorrelation);
    case CUPTI_ACTIVITY_KIND_DRIVER:
    case CUPTI_ACTIVITY_KIND_RUNTIME:
        return sizeof(CUpti_ActivityAPI);
    case CUPTI_ACTIVITY_KIND_OVERHEAD:
        return sizeof(CUpti_ActivityOverhead3);
    default:
        return 0;
    }
}

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* Walks records laid out back to back at 8-byte alignment, as the tests build them. */
static CUptiResult fake_next(uint8_t *buf, size_t valid, CUpti_Activity **rec)
{
    size_t off = 0;
    if (*rec)
        off = (size_t)((uint8_t *)*rec - buf) + align8(record_size((*rec)->kind));
    if (off >= valid)
        return CUPTI_ERROR_MAX_LIMIT_REACHED;
    if (off + sizeof(CUpti_Activity) > valid)
        return CUPTI_ERROR_INVALID_KIND;
    CUpti_Activity *r = (CUpti_Activity *)(buf + off);
    size_t size = record_size(r->kind);
    if (size == 0 || off + size > valid)
        return CUPTI_ERROR_INVALID_KIND;
    *rec = r;
    return CUPTI_SUCCESS;
}

static int fake_cu_init(unsigned flags)
{
    (void)flags;
    return 0;
}
static int fake_count(int *n)
{
    *n = F.devices;
    return 0;
}
static CUptiResult fake_version(uint32_t *v)
{
    *v = F.version;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_timestamp(uint64_t *t)
{
    *t = F.now_ns;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_register(CUpti_BuffersCallbackRequestFunc r,
                                 CUpti_BuffersCallbackCompleteFunc c)
{
    F.requested = r;
    F.completed = c;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_enable(CUpti_ActivityKind k)
{
    F.enabled[k] = 1;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_disable(CUpti_ActivityKind k)
{
    F.enabled[k] = 0;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_flush(uint32_t flag)
{
    F.flushes++;
    F.forced_flushes += flag == CUPTI_ACTIVITY_FLAG_FLUSH_FORCED;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_dropped(CUcontext ctx, uint32_t stream, size_t *d)
{
    (void)ctx;
    (void)stream;
    *d = F.dropped_per_buffer;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_push(CUpti_ExternalCorrelationKind k, uint64_t id)
{
    F.pushes++;
    F.stack[k][F.depth[k]++] = id;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_pop(CUpti_ExternalCorrelationKind k, uint64_t *last)
{
    F.pops++;
    if (F.depth[k] == 0)
        return CUPTI_ERROR_INVALID_OPERATION;
    *last = F.stack[k][--F.depth[k]];
    return CUPTI_SUCCESS;
}
static CUptiResult fake_enable_driver(CUpti_CallbackId id, uint8_t on)
{
    (void)id;
    F.driver_cbids_enabled += on;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_enable_runtime(CUpti_CallbackId id, uint8_t on)
{
    (void)id;
    F.runtime_cbids_enabled += on;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_cb_name(CUpti_CallbackDomain d, uint32_t id, const char **name)
{
    if (d == CUPTI_CB_DOMAIN_DRIVER_API)
        *name = id == CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel    ? "cuLaunchKernel"
                : id == CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoD_v2 ? "cuMemcpyHtoD_v2"
                                                                : "cuCtxSynchronize";
    else
        *name = id == CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000 ? "cudaLaunchKernel_v7000"
                                                                      : "cudaMalloc_v3020";
    return CUPTI_SUCCESS;
}

static gpu__cupti_api fake_api(void)
{
    memset(&F, 0, sizeof F);
    F.devices = 1;
    F.version = CUPTI_API_VERSION;
    gpu__cupti_api api = {0};
    api.cuInit = fake_cu_init;
    api.cuDeviceGetCount = fake_count;
    api.GetVersion = fake_version;
    api.GetTimestamp = fake_timestamp;
    api.ActivityRegisterCallbacks = fake_register;
    api.ActivityEnable = fake_enable;
    api.ActivityDisable = fake_disable;
    api.ActivityFlushAll = fake_flush;
    api.ActivityGetNextRecord = fake_next;
    api.ActivityGetNumDroppedRecords = fake_dropped;
    api.ActivityPushExternalCorrelationId = fake_push;
    api.ActivityPopExternalCorrelationId = fake_pop;
    api.ActivityEnableDriverApi = fake_enable_driver;
    api.ActivityEnableRuntimeApi = fake_enable_runtime;
    api.GetCallbackName = fake_cb_name;
    return api;
}

/* ---- hand-built buffers ---------------------------------------------------------------- */

typedef struct hbuf {
    uint8_t *p;
    size_t len, cap;
} hbuf;

static void put(hbuf *b, const void *rec, size_t size)
{
    size_t off = align8(b->len);
    if (off + size > b->cap) {
        b->cap = (off + size) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memset(b->p + b->len, 0, off - b->len);
    memcpy(b->p + off, rec, size);
    b->len = off + size;
}

/* Every field set to junk first, so that a parser reading the wrong offset is caught. */
static void put_kernel(hbuf *b, uint64_t s, uint64_t e, uint32_t dev, uint32_t corr)
{
    CUpti_ActivityKernel10 k;
    memset(&k, 0xA5, sizeof k);
    k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    k.start = s;
    k.end = e;
    k.deviceId = dev;
    k.correlationId = corr;
    k.name = "gemm_kernel";
    put(b, &k, sizeof k);
}

static void put_memcpy(hbuf *b, uint64_t s, uint64_t e, uint32_t dev, uint32_t corr)
{
    CUpti_ActivityMemcpy6 m;
    memset(&m, 0x5A, sizeof m);
    m.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
    m.start = s;
    m.end = e;
    m.deviceId = dev;
    m.correlationId = corr;
    put(b, &m, sizeof m);
}

static void put_memset(hbuf *b, uint64_t s, uint64_t e, uint32_t dev, uint32_t corr)
{
    CUpti_ActivityMemset4 m;
    memset(&m, 0x3C, sizeof m);
    m.kind = CUPTI_ACTIVITY_KIND_MEMSET;
    m.start = s;
    m.end = e;
    m.deviceId = dev;
    m.correlationId = corr;
    put(b, &m, sizeof m);
}

static void put_p2p(hbuf *b, uint64_t s, uint64_t e, uint32_t dev, uint32_t corr)
{
    CUpti_ActivityMemcpyPtoP4 m;
    memset(&m, 0x77, sizeof m);
    m.kind = CUPTI_ACTIVITY_KIND_MEMCPY2;
    m.start = s;
    m.end = e;
    m.deviceId = dev;
    m.correlationId = corr;
    put(b, &m, sizeof m);
}

static void put_ext(hbuf *b, CUpti_ExternalCorrelationKind kind, uint64_t id, uint32_t corr)
{
    CUpti_ActivityExternalCorrelation x;
    memset(&x, 0x11, sizeof x);
    x.kind = CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION;
    x.externalKind = kind;
    x.externalId = id;
    x.correlationId = corr;
    put(b, &x, sizeof x);
}

static void put_api(hbuf *b, CUpti_ActivityKind kind, uint32_t corr)
{
    CUpti_ActivityAPI a;
    memset(&a, 0x22, sizeof a);
    a.kind = kind;
    a.correlationId = corr;
    put(b, &a, sizeof a);
}

/* Hands a hand-built buffer to the collector the way CUPTI does. */
static void deliver(const hbuf *b)
{
    uint8_t *buf = NULL;
    size_t size = 0, max = 0;
    F.requested(&buf, &size, &max);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_ge(size, b->len);
    ck_assert_uint_eq((uintptr_t)buf % 8, 0);
    memcpy(buf, b->p, b->len);
    F.completed(NULL, 0, buf, size, b->len);
}

/* ---- parser ---------------------------------------------------------------------------- */

START_TEST(test_parser_reads_cuda13_kernel_copy_set_and_correlation_records)
{
    gpu__cupti_api api = fake_api();
    hbuf b = {0};
    put_api(&b, CUPTI_ACTIVITY_KIND_DRIVER, 5);
    put_ext(&b, GPU__EXT_TENANT, 3, 5);
    put_ext(&b, GPU__EXT_STEP, 77, 5);
    put_ext(&b, CUPTI_EXTERNAL_CORRELATION_KIND_OPENACC, 9, 5);
    put_kernel(&b, 1000, 2000, 1, 5);
    put_memcpy(&b, 3000, 3500, 0, 6);
    put_memset(&b, 4000, 4100, 2, 7);
    put_p2p(&b, 5000, 5100, 3, 8);
    put_kernel(&b, 0, 0, 0, 9);       /* no timestamps */
    put_kernel(&b, 7000, 6000, 0, 9); /* inverted */
    put_api(&b, CUPTI_ACTIVITY_KIND_RUNTIME, 5);
    CUpti_ActivityOverhead3 oh;
    memset(&oh, 0, sizeof oh);
    oh.kind = CUPTI_ACTIVITY_KIND_OVERHEAD;
    put(&b, &oh, sizeof oh);
    gpu__parsed p = {0};
    gpu__cupti_parse(&api, b.p, b.len, &p);
    ck_assert_uint_eq(p.n_recs, 4);
    ck_assert(p.recs[0].start_ns == 1000 && p.recs[0].end_ns == 2000 && p.recs[0].device == 1 &&
              p.recs[0].correlation_id == 5 && p.recs[0].resource == GM_GPU_RES_KERNEL);
    ck_assert(p.recs[1].start_ns == 3000 && p.recs[1].end_ns == 3500 && p.recs[1].device == 0 &&
              p.recs[1].correlation_id == 6 && p.recs[1].resource == GM_GPU_RES_COPY);
    ck_assert(p.recs[2].start_ns == 4000 && p.recs[2].device == 2 &&
              p.recs[2].correlation_id == 7 && p.recs[2].resource == GM_GPU_RES_COPY);
    ck_assert(p.recs[3].start_ns == 5000 && p.recs[3].device == 3 &&
              p.recs[3].resource == GM_GPU_RES_COPY);
    ck_assert_uint_eq(p.n_tags, 2);
    ck_assert(p.tags[0].correlation_id == 5 && p.tags[0].kind == GM_GPU_TAG_TENANT &&
              p.tags[0].value == 3);
    ck_assert(p.tags[1].kind == GM_GPU_TAG_STEP && p.tags[1].value == 77);
    ck_assert_int_eq(p.stats.kernels, 3);
    ck_assert_int_eq(p.stats.copies, 3);
    ck_assert_int_eq(p.stats.tags, 2);
    ck_assert_int_eq(p.stats.api_records, 2);
    ck_assert_int_eq(p.stats.other_records, 2); /* OpenACC correlation, overhead */
    ck_assert_int_eq(p.stats.zero_timestamps, 1);
    ck_assert_int_eq(p.stats.inverted, 1);
    ck_assert_int_eq(p.stats.bad_buffers, 0);
    gpu__parsed_free(&p);
    free(b.p);
}
END_TEST

START_TEST(test_parser_keeps_the_records_before_a_cut_record_and_counts_the_buffer)
{
    gpu__cupti_api api = fake_api();
    hbuf b = {0};
    put_kernel(&b, 10, 20, 0, 1);
    size_t whole = b.len;
    put_kernel(&b, 30, 40, 0, 2);
    gpu__parsed p = {0};
    gpu__cupti_parse(&api, b.p, whole + 24, &p); /* second record cut short */
    ck_assert_uint_eq(p.n_recs, 1);
    ck_assert_int_eq(p.stats.bad_buffers, 1);
    gpu__parsed_free(&p);
    free(b.p);
}
END_TEST

START_TEST(test_kernel_record_layout_is_the_cuda13_one)
{
    /* the fields the parser reads sit where CUDA 13's cupti_activity.h puts them */
    ck_assert_uint_eq(offsetof(CUpti_ActivityKernel10, start), 16);
    ck_assert_uint_eq(offsetof(CUpti_ActivityKernel10, end), 24);
    ck_assert_uint_eq(offsetof(CUpti_ActivityExternalCorrelation, externalId), 8);
    ck_assert_uint_eq(offsetof(CUpti_ActivityExternalCorrelation, correlationId), 16);
    ck_assert_int_eq(CUPTI_API_VERSION / 10000, 13);
}
END_TEST

/* ---- collector ------------------------------------------------------------------------- */

typedef struct seen_row {
    char tenant[64];
    uint32_t device;
    uint8_t resource;
    int64_t ws, ns, kernels;
} seen_row;

static struct {
    seen_row rows[256];
    size_t n_rows;
    int64_t busy_ns, unattributed_ns;
    int calls;
} S;

static void on_windows(const gm_gpu_result *res, void *arg)
{
    (void)arg;
    char err[256];
    ck_assert_msg(gm_gpu_result_check(res, err, sizeof err) == 0, "%s", err);
    S.calls++;
    for (size_t i = 0; i < res->n_rows && S.n_rows < 256; i++) {
        seen_row *r = &S.rows[S.n_rows++];
        snprintf(r->tenant, sizeof r->tenant, "%s", res->rows[i].tenant);
        r->device = res->rows[i].device;
        r->resource = res->rows[i].resource;
        r->ws = res->rows[i].window_start_ns;
        r->ns = res->rows[i].gpu_ns;
        r->kernels = res->rows[i].kernels;
    }
    for (size_t i = 0; i < res->n_windows; i++) {
        S.busy_ns += res->windows[i].busy_ns;
        S.unattributed_ns += res->windows[i].unattributed_ns;
    }
}

static int64_t seen_ns(const char *tenant, int64_t ws, uint8_t resource)
{
    int64_t sum = 0;
    int found = 0;
    for (size_t i = 0; i < S.n_rows; i++) {
        if (strcmp(S.rows[i].tenant, tenant) == 0 && S.rows[i].ws == ws &&
            S.rows[i].resource == resource) {
            sum += S.rows[i].ns;
            found = 1;
        }
    }
    return found ? sum : -1;
}

static gm_gpu_collector *start(gpu__cupti_api *api, uint64_t window_ns)
{
    memset(&S, 0, sizeof S);
    gm_gpu_collector_conf conf = {.window_ns = window_ns,
                                  .flush_ms = UINT32_MAX,
                                  .grace_ns = 100,
                                  .buffer_bytes = 64 * 1024,
                                  .on_windows = on_windows};
    gm_gpu_collector *c = NULL;
    char err[256];
    ck_assert_msg(gpu__collector_start_with(api, &conf, &c, err, sizeof err) == 0, "%s", err);
    return c;
}

START_TEST(test_collector_attributes_two_overlapping_tenants_with_a_late_tag)
{
    gpu__cupti_api api = fake_api();
    gm_gpu_collector *c = start(&api, 1000);
    F.dropped_per_buffer = 2;
    /* tagging pushes CUSTOM0 ids: acme = 1, globex = 2 */
    ck_assert_int_eq(gm_gpu_tenant_push(c, "acme"), 0);
    ck_assert_uint_eq(F.stack[GPU__EXT_TENANT][0], 1);
    ck_assert_int_eq(gm_gpu_tenant_pop(c), 0);
    ck_assert_int_eq(gm_gpu_tenant_push(c, "globex"), 0);
    ck_assert_uint_eq(F.stack[GPU__EXT_TENANT][0], 2);
    ck_assert_int_eq(gm_gpu_tenant_pop(c), 0);
    ck_assert_int_eq(gm_gpu_tenant_pop(c), GM_EINVAL); /* nothing pushed */
    ck_assert_int_eq(gm_gpu_tenant_push(c, "not a tenant"), GM_EINVAL);

    hbuf b1 = {0}, b2 = {0}, b3 = {0};
    put_ext(&b1, GPU__EXT_TENANT, 1, 10);
    put_api(&b1, CUPTI_ACTIVITY_KIND_DRIVER, 10);
    put_kernel(&b1, 5000, 5100, 0, 10); /* acme */
    put_kernel(&b2, 5050, 5150, 0, 11); /* globex: its tag comes in the next buffer */
    put_ext(&b3, GPU__EXT_TENANT, 2, 11);
    deliver(&b1);
    deliver(&b2);
    deliver(&b3);
    F.now_ns = 6000 + 100; /* window [5000,6000) ended grace ago */
    char err[256];
    ck_assert_msg(gm_gpu_collector_flush(c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(S.calls, 1);
    ck_assert_int_eq(seen_ns("acme", 5000, GM_GPU_RES_KERNEL), 75);
    ck_assert_int_eq(seen_ns("globex", 5000, GM_GPU_RES_KERNEL), 75);
    ck_assert_int_eq(S.busy_ns, 150);
    gm_gpu_collector_stats st;
    gm_gpu_collector_stats_get(c, &st);
    ck_assert_int_eq(st.buffers, 3);
    ck_assert_int_eq(st.dropped, 6);
    ck_assert_int_eq(st.kernels, 2);
    ck_assert_int_eq(st.tags, 2);
    ck_assert_int_eq(st.api_records, 1);
    ck_assert_int_eq(st.untagged_kernels, 0);
    ck_assert_int_eq(st.windows_closed, 1);
    ck_assert_int_eq(F.flushes, 1);
    gm_gpu_collector_stop(c);
    ck_assert_int_eq(F.forced_flushes, 1);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL], 0);
    free(b1.p);
    free(b2.p);
    free(b3.p);
}
END_TEST

START_TEST(test_collector_enables_the_records_it_needs_and_only_launch_api_records)
{
    gpu__cupti_api api = fake_api();
    gm_gpu_collector *c = start(&api, 1000);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL], 1);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_MEMCPY], 1);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_MEMSET], 1);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION], 1);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_DRIVER], 0); /* not all driver calls */
    ck_assert_int_eq(F.driver_cbids_enabled, 2);  /* cuLaunchKernel, cuMemcpyHtoD_v2 */
    ck_assert_int_eq(F.runtime_cbids_enabled, 1); /* cudaLaunchKernel */
    gm_gpu_collector_stop(c);

    /* without fine-grained control it traces all driver and runtime calls */
    api = fake_api();
    api.ActivityEnableDriverApi = NULL;
    c = start(&api, 1000);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_DRIVER], 1);
    ck_assert_int_eq(F.enabled[CUPTI_ACTIVITY_KIND_RUNTIME], 1);
    gm_gpu_collector_stop(c);
}
END_TEST

START_TEST(test_collector_cuts_a_running_kernel_at_the_close_and_keeps_the_rest)
{
    gpu__cupti_api api = fake_api();
    gm_gpu_collector *c = start(&api, 1000);
    hbuf b = {0};
    put_ext(&b, GPU__EXT_TENANT, 1, 20);
    put_kernel(&b, 1500, 3200, 0, 20);
    ck_assert_int_eq(gm_gpu_tenant_push(c, "acme"), 0); /* interns acme as tag 1 */
    deliver(&b);
    char err[256];
    F.now_ns = 3000 + 100; /* closes [1000,2000) and [2000,3000) */
    ck_assert(gm_gpu_collector_flush(c, err, sizeof err) == 0);
    ck_assert_int_eq(seen_ns("acme", 1000, GM_GPU_RES_KERNEL), 500);
    ck_assert_int_eq(seen_ns("acme", 2000, GM_GPU_RES_KERNEL), 1000);
    ck_assert_int_eq(seen_ns("acme", 3000, GM_GPU_RES_KERNEL), -1);
    /* two more closes: the tag is still known because a pending piece needs it */
    F.now_ns = 3500;
    ck_assert(gm_gpu_collector_flush(c, err, sizeof err) == 0);
    gm_gpu_collector_stop(c); /* closes the rest */
    ck_assert_int_eq(seen_ns("acme", 3000, GM_GPU_RES_KERNEL), 200);
    ck_assert_int_eq(S.unattributed_ns, 0);
    free(b.p);
}
END_TEST

START_TEST(test_collector_splits_a_step_by_its_manifest)
{
    gpu__cupti_api api = fake_api();
    gm_gpu_collector *c = start(&api, 1000);
    char err[256];
    ck_assert_int_eq(gm_gpu_step_push(c, 900), 0);
    ck_assert_uint_eq(F.stack[GPU__EXT_STEP][0], 900);
    ck_assert_int_eq(gm_gpu_step_pop(c), 0);
    gm_gpu_step_request q[] = {{"acme", "r1", 300, 0}, {"globex", "r2", 0, 100}};
    ck_assert(gm_gpu_step_manifest(c, 900, q, 2, err, sizeof err) == 0);
    ck_assert_int_eq(gm_gpu_step_manifest(c, 900, q, 2, err, sizeof err), GM_ECONFLICT);
    gm_gpu_step_request bad[] = {{"", NULL, 1, 1}};
    ck_assert_int_eq(gm_gpu_step_manifest(c, 901, bad, 1, err, sizeof err), GM_EINVAL);
    hbuf b = {0};
    put_ext(&b, GPU__EXT_STEP, 900, 30);
    put_kernel(&b, 100, 500, 0, 30);
    put_memcpy(&b, 100, 200, 0, 31); /* untagged copy */
    deliver(&b);
    gm_gpu_collector_stop(c);
    ck_assert_int_eq(seen_ns("acme", 0, GM_GPU_RES_KERNEL), 300);
    ck_assert_int_eq(seen_ns("globex", 0, GM_GPU_RES_KERNEL), 100);
    ck_assert_int_eq(S.unattributed_ns, 100);
    free(b.p);
}
END_TEST

START_TEST(test_collector_counts_records_that_come_after_their_window_closed)
{
    gpu__cupti_api api = fake_api();
    gm_gpu_collector *c = start(&api, 1000);
    char err[256];
    F.now_ns = 5000;
    ck_assert(gm_gpu_collector_flush(c, err, sizeof err) == 0); /* closes up to 4000 */
    hbuf b = {0};
    put_kernel(&b, 3000, 3100, 0, 40);
    put_kernel(&b, 0, 0, 0, 41);
    put_kernel(&b, 3300, 3200, 0, 42);
    deliver(&b);
    F.now_ns = 6000;
    ck_assert(gm_gpu_collector_flush(c, err, sizeof err) == 0);
    gm_gpu_collector_stats st;
    gm_gpu_collector_stats_get(c, &st);
    ck_assert_int_eq(st.late_records, 1);
    ck_assert_int_eq(st.untagged_kernels, 1);
    ck_assert_int_eq(st.zero_timestamps, 1);
    ck_assert_int_eq(st.inverted, 1);
    ck_assert_int_eq(S.unattributed_ns, 100); /* still attributed (to nobody), not lost */
    gm_gpu_collector_stop(c);
    free(b.p);
}
END_TEST

START_TEST(test_collector_is_unavailable_without_a_gpu_and_the_host_keeps_running)
{
    char err[256];
    gm_gpu_collector *c = NULL;
    gpu__cupti_api api = fake_api();
    F.devices = 0;
    gm_gpu_collector_conf conf = {.flush_ms = UINT32_MAX};
    ck_assert_int_eq(gpu__collector_start_with(&api, &conf, &c, err, sizeof err), GM_EUNAVAIL);
    ck_assert_ptr_null(c);
    api = fake_api();
    F.version = 120000; /* a CUPTI with other record layouts */
    ck_assert_int_eq(gpu__collector_start_with(&api, &conf, &c, err, sizeof err), GM_EUNAVAIL);
    ck_assert_ptr_nonnull(strstr(err, "version"));
    /* the real loader on this machine: no driver or no GPU -> unavailable, no crash */
    int rc = gm_gpu_collector_start(&conf, &c, err, sizeof err);
    if (rc == 0) {
        gm_gpu_collector_stop(c); /* a GPU machine: fine too */
    } else {
        ck_assert_int_eq(rc, GM_EUNAVAIL);
        ck_assert_ptr_null(c);
    }
    /* tagging without a collector does nothing and says so */
    ck_assert_int_eq(gm_gpu_tenant_push(NULL, "acme"), GM_EUNAVAIL);
    ck_assert_int_eq(gm_gpu_tenant_pop(NULL), GM_EUNAVAIL);
    ck_assert_int_eq(gm_gpu_step_push(NULL, 1), GM_EUNAVAIL);
    ck_assert_int_eq(gm_gpu_step_pop(NULL), GM_EUNAVAIL);
    ck_assert_int_eq(gm_gpu_collector_flush(NULL, err, sizeof err), GM_EUNAVAIL);
    gm_gpu_collector_stop(NULL);
}
END_TEST

START_TEST(test_only_one_collector_runs_per_process)
{
    gpu__cupti_api api = fake_api();
    gm_gpu_collector *c = start(&api, 1000), *d = NULL;
    char err[256];
    gm_gpu_collector_conf conf = {.flush_ms = UINT32_MAX};
    ck_assert_int_eq(gpu__collector_start_with(&api, &conf, &d, err, sizeof err), GM_ECONFLICT);
    gm_gpu_collector_stop(c);
}
END_TEST

START_TEST(test_collector_flush_thread_closes_windows_on_its_own)
{
    gpu__cupti_api api = fake_api();
    memset(&S, 0, sizeof S);
    gm_gpu_collector_conf conf = {
        .window_ns = 1000, .flush_ms = 10, .grace_ns = 100, .on_windows = on_windows};
    gm_gpu_collector *c = NULL;
    char err[256];
    ck_assert(gpu__collector_start_with(&api, &conf, &c, err, sizeof err) == 0);
    hbuf b = {0};
    put_kernel(&b, 100, 200, 0, 1);
    deliver(&b);
    F.now_ns = 5000;
    gm_gpu_collector_stats st = {0};
    for (int i = 0; i < 5000 && st.windows_closed == 0; i++) { /* up to 10 s */
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        gm_gpu_collector_stats_get(c, &st);
    }
    ck_assert_int_eq(st.windows_closed, 1);
    gm_gpu_collector_stop(c);
    free(b.p);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gpu_cupti");
    TCase *t = tcase_create("parser");
    tcase_add_test(t, test_parser_reads_cuda13_kernel_copy_set_and_correlation_records);
    tcase_add_test(t, test_parser_keeps_the_records_before_a_cut_record_and_counts_the_buffer);
    tcase_add_test(t, test_kernel_record_layout_is_the_cuda13_one);
    suite_add_tcase(s, t);
    TCase *c = tcase_create("collector");
    tcase_add_test(c, test_collector_attributes_two_overlapping_tenants_with_a_late_tag);
    tcase_add_test(c, test_collector_enables_the_records_it_needs_and_only_launch_api_records);
    tcase_add_test(c, test_collector_cuts_a_running_kernel_at_the_close_and_keeps_the_rest);
    tcase_add_test(c, test_collector_splits_a_step_by_its_manifest);
    tcase_add_test(c, test_collector_counts_records_that_come_after_their_window_closed);
    tcase_add_test(c, test_collector_is_unavailable_without_a_gpu_and_the_host_keeps_running);
    tcase_add_test(c, test_only_one_collector_runs_per_process);
    tcase_add_test(c, test_collector_flush_thread_closes_windows_on_its_own);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    return gm_test_run(suite());
}
