/* GPU accounting with the CUPTI collector inside the agent's process (--gpu cupti; the agent
 * embedded in a server), on a fake CUPTI table (the collector's test seam, as in
 * test_gpu_cupti.c: no GPU needed): the simulated engine's kernels arrive in CUDA 13 activity
 * buffers tagged with their step (external correlation CUSTOM1) or their tenant (CUSTOM0,
 * pushed through the agent's collector), the step manifests and the usage events come over
 * the Unix socket. Both topics are read back from the real broker: each request's gpu_us and
 * the gridmeter.gpu.v1 windows equal the rules over the same work. */
#include "gm_agent.h"
#include "gpu_cupti.h"
#include "support.h"
#include "test_agent_gpu_sim.h"
#include "test_agent_util.h"
#include "test_node_util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a fake CUPTI: buffers handed over by the test, a clock the test moves ------------ */
static struct {
    CUpti_BuffersCallbackRequestFunc requested;
    CUpti_BuffersCallbackCompleteFunc completed;
    uint64_t now_ns; /* atomic: the collector's flush thread reads it */
    uint64_t stack[8][16];
    int depth[8];
} F;

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static size_t rec_size(CUpti_ActivityKind k)
{
    return k == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL ? sizeof(CUpti_ActivityKernel10)
           : k == CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION
               ? sizeof(CUpti_ActivityExternalCorrelation)
               : 0;
}

static CUptiResult fake_next(uint8_t *buf, size_t valid, CUpti_Activity **rec)
{
    size_t off = *rec ? (size_t)((uint8_t *)*rec - buf) + align8(rec_size((*rec)->kind)) : 0;
    if (off >= valid)
        return CUPTI_ERROR_MAX_LIMIT_REACHED;
    CUpti_Activity *r = (CUpti_Activity *)(buf + off);
    if (!rec_size(r->kind) || off + rec_size(r->kind) > valid)
        return CUPTI_ERROR_INVALID_KIND;
    *rec = r;
    return CUPTI_SUCCESS;
}
static int fake_cu_init(unsigned f)
{
    (void)f;
    return 0;
}
static int fake_count(int *n)
{
    *n = 2;
    return 0;
}
static CUptiResult fake_version(uint32_t *v)
{
    *v = CUPTI_API_VERSION;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_timestamp(uint64_t *t)
{
    *t = __atomic_load_n(&F.now_ns, __ATOMIC_SEQ_CST);
    return CUPTI_SUCCESS;
}
static CUptiResult fake_register(CUpti_BuffersCallbackRequestFunc r,
                                 CUpti_BuffersCallbackCompleteFunc c)
{
    F.requested = r;
    F.completed = c;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_kind(CUpti_ActivityKind k)
{
    (void)k;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_flush(uint32_t f)
{
    (void)f;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_dropped(CUcontext c, uint32_t s, size_t *d)
{
    (void)c;
    (void)s;
    *d = 0;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_push(CUpti_ExternalCorrelationKind k, uint64_t id)
{
    F.stack[k][F.depth[k]++] = id;
    return CUPTI_SUCCESS;
}
static CUptiResult fake_pop(CUpti_ExternalCorrelationKind k, uint64_t *last)
{
    if (!F.depth[k])
        return CUPTI_ERROR_INVALID_OPERATION;
    *last = F.stack[k][--F.depth[k]];
    return CUPTI_SUCCESS;
}

static int fake_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                      size_t err_len)
{
    gpu__cupti_api api = {0};
    api.cuInit = fake_cu_init;
    api.cuDeviceGetCount = fake_count;
    api.GetVersion = fake_version;
    api.GetTimestamp = fake_timestamp;
    api.ActivityRegisterCallbacks = fake_register;
    api.ActivityEnable = fake_kind;
    api.ActivityDisable = fake_kind;
    api.ActivityFlushAll = fake_flush;
    api.ActivityGetNextRecord = fake_next;
    api.ActivityGetNumDroppedRecords = fake_dropped;
    api.ActivityPushExternalCorrelationId = fake_push;
    api.ActivityPopExternalCorrelationId = fake_pop;
    return gpu__collector_start_with(&api, conf, out, err, err_len);
}

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

static void put_kernel(hbuf *b, uint64_t s, uint64_t e, uint32_t dev, uint32_t corr)
{
    CUpti_ActivityKernel10 k;
    memset(&k, 0xA5, sizeof k);
    k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    k.start = s;
    k.end = e;
    k.deviceId = dev;
    k.correlationId = corr;
    k.name = "decode_step";
    put(b, &k, sizeof k);
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

static void deliver(const hbuf *b)
{
    uint8_t *buf = NULL;
    size_t size = 0, max = 0;
    F.requested(&buf, &size, &max);
    ck_assert_uint_ge(size, b->len);
    memcpy(buf, b->p, b->len);
    F.completed(NULL, 0, buf, size, b->len);
}

/* ---- the test ------------------------------------------------------------------------- */
static char sock[300];

typedef struct poster {
    const char *body;
    ta_resp r;
} poster;

static void *post_usage(void *arg)
{
    poster *p = arg;
    ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", p->body, strlen(p->body),
               &p->r);
    ta_close();
    return NULL;
}

START_TEST(test_cupti_kernels_and_socket_manifests_give_gpu_us_and_windows_in_kafka)
{
    char dir[256], spool[300], usage_t[128], gpu_t[128];
    tn_tmpdir(dir, sizeof dir, "agent-cupti");
    snprintf(spool, sizeof spool, "%s/spool", dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    gm_test_topic_name("agent-cupti-usage", usage_t, sizeof usage_t);
    gm_test_topic_name("agent-cupti-gpu", gpu_t, sizeof gpu_t);
    gm_test_topic_create(usage_t, 2);
    gm_test_topic_create(gpu_t, 2);
    const uint64_t W = 1000000000u, GRACE = 200000000u;
    const int64_t base = INT64_C(1795000000000000); /* CUPTI's clock is the fake's: pinned */
    __atomic_store_n(&F.now_ns, (uint64_t)(base - 10 * GM_US_PER_SEC) * 1000u, __ATOMIC_SEQ_CST);
    gm_agent_config c;
    gm_agent_config_init(&c);
    c.node.brokers = gm_test_brokers();
    c.node.topic = usage_t;
    c.node.source = "edge/fra1/cupti-node";
    c.node.site = "fra1";
    c.node.spool_dir = spool;
    c.node.close_timeout_ms = 30000;
    c.socket_path = sock;
    c.gpu = GM_AGENT_GPU_CUPTI;
    c.gpu_topic = gpu_t;
    c.gpu_conf.window_ns = W;
    c.gpu_conf.grace_ns = GRACE;
    c.gpu_conf.flush_ms = 10;
    c.gpu_start = fake_start;
    gm_agent *a = NULL;
    char err[512];
    ck_assert_msg(gm_agent_open(&c, &a, err, sizeof err) == 0, "%s", err);
    gm_gpu_collector *gc = gm_agent_gpu_collector(a);
    ck_assert_ptr_nonnull(gc);
    /* the server tags its own work in its process: acme's tag value is the collector's */
    ck_assert_int_eq(gm_gpu_tenant_push(gc, "acme"), 0);
    uint64_t acme = F.stack[CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0][0];
    ck_assert_int_eq(gm_gpu_tenant_pop(gc), 0);

    sim sm;
    sim_make(&sm, base);
    /* manifests over the socket; the kernels come from CUPTI (kernels here are refused) */
    char *steps = sim_steps_body(&sm, false);
    ta_resp r;
    ta_request(sock, 0, NULL, "/v1/gpu/steps", "application/x-ndjson", steps, strlen(steps), &r);
    ck_assert_msg(r.status == 200 && ta_json_int(r.body, "rejected") == 0, "%s", r.body);
    ta_resp_free(&r);
    free(steps);
    steps = sim_steps_body(&sm, true);
    ta_request(sock, 0, NULL, "/v1/gpu/steps", "application/x-ndjson", steps, strlen(steps), &r);
    ck_assert_msg(strstr(r.body, "the kernels come from CUPTI on this agent"), "%s", r.body);
    ta_resp_free(&r);
    free(steps);
    /* the kernels, in three buffers; a step's tag comes in a later buffer than its kernel */
    hbuf b[3] = {{0}};
    uint32_t corr = 1;
    for (int k = 0; k < SIM_STEPS; k++) {
        gm_gpu_step_request q[SIM_REQS];
        if (!sim_step_reqs(&sm, k, q))
            continue;
        put_kernel(&b[k % 2], (uint64_t)sm.step[k].start_us * 1000u,
                   (uint64_t)sm.step[k].end_us * 1000u, sm.step[k].device, corr);
        put_ext(&b[(k % 2) + (k % 3 == 0)], CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM1, sm.step[k].id,
                corr);
        corr++;
    }
    put_ext(&b[2], CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, acme, corr);
    put_kernel(&b[2], (uint64_t)sm.tw_start_us * 1000u, (uint64_t)sm.tw_end_us * 1000u,
               sm.tw_device, corr);
    for (int i = 0; i < 3; i++) {
        deliver(&b[i]);
        free(b[i].p);
    }
    /* the engine ran everything; the usage events wait for their windows */
    int64_t arrival_us = sm.end_us + 1000;
    __atomic_store_n(&F.now_ns, (uint64_t)arrival_us * 1000u, __ATOMIC_SEQ_CST);
    char *usage = sim_usage_body(&sm);
    poster p = {.body = usage};
    pthread_t th;
    pthread_create(&th, NULL, post_usage, &p);
    int64_t until = gm_mono_us() + 30 * GM_US_PER_SEC;
    gm_agent_stats st;
    for (gm_agent_stats_get(a, &st); st.gpu_waiting != 1; gm_agent_stats_get(a, &st)) {
        ck_assert_msg(gm_mono_us() < until, "the usage request did not wait for GPU time");
        usleep(5000);
    }
    uint64_t close_at = ((uint64_t)arrival_us * 1000u / W + 1) * W + GRACE + 1000000u;
    __atomic_store_n(&F.now_ns, close_at, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    ck_assert_msg(p.r.status == 200, "%ld %s", p.r.status, p.r.body);
    ck_assert_int_eq(ta_json_int(p.r.body, "gpu_filled"), SIM_REQS + 1);
    ta_resp_free(&p.r);
    free(usage);
    ck_assert_msg(gm_agent_check(a, err, sizeof err) == 0, "%s", err);
    gm_agent_close(a);

    gm_gpu_result want;
    sim_expect(&sm, W, &want);
    tn_msg *m;
    uint64_t dups, max_seq;
    size_t got = tn_consume(gm_test_brokers(), usage_t, SIM_REQS + 1, 60000, &m);
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), SIM_REQS + 1);
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        ck_assert(gm_event_decode(m[i].payload, m[i].len, &ev, NULL, 0) == 0);
        int64_t us = sim_request_us(&want, ev.tenant, ev.request_id);
        ck_assert_msg(ev.gpu_us == (us < 0 ? 0 : us), "%s %s: gpu_us %lld, the rules say %lld",
                      ev.tenant, ev.request_id, (long long)ev.gpu_us, (long long)us);
    }
    tn_free(m, got);
    got = tn_consume(gm_test_brokers(), gpu_t, want.n_rows, 60000, &m);
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), want.n_rows);
    gm_event *ev = gm_xmalloc((got ? got : 1) * sizeof *ev);
    size_t n = 0;
    for (size_t i = 0; i < got; i++) {
        ck_assert(gm_event_decode(m[i].payload, m[i].len, &ev[n], NULL, 0) == 0);
        bool again = false;
        for (size_t k = 0; k < n && !again; k++)
            again = !strcmp(ev[k].id, ev[n].id);
        if (!again)
            n++;
    }
    sim_check_windows(&want, ev, n, "edge/fra1/cupti-node/gpu", "fra1");
    free(ev);
    tn_free(m, got);
    gm_gpu_result_free(&want);
    gm_test_topic_delete(usage_t);
    gm_test_topic_delete(gpu_t);
    tn_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_gpu_cupti");
    TCase *t = tcase_create("cupti");
    tcase_set_timeout(t, 240);
    tcase_add_test(t, test_cupti_kernels_and_socket_manifests_give_gpu_us_and_windows_in_kafka);
    suite_add_tcase(s, t);
    return gm_test_run(s);
}
