/* A simulated inference engine for the node agent's GPU tests (header-only, included by each
 * test that uses it): batched steps on two GPUs that overlap in time, requests of three tenants
 * that run through a prefill step and several decode steps, and one tenant's work outside any
 * step; the bodies the server would send the agent; and what the attribution engine
 * (gm_gpu_attr, the rules of docs/gpu-accounting.md) says about the same work, which the
 * agent's output must equal. */
#ifndef GM_TEST_AGENT_GPU_SIM_H
#define GM_TEST_AGENT_GPU_SIM_H

#include "gm_gpu.h"
#include "gm_ingest.h"
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_REQS  12
#define SIM_STEPS 48

typedef struct sim_req {
    const char *tenant;
    char rid[32];
    int64_t prefill;
    int first_step, steps; /* its steps: first_step .. first_step + steps - 1 */
} sim_req;

typedef struct sim_step {
    uint64_t id;
    uint32_t device;
    int64_t start_us, end_us;
} sim_step;

typedef struct sim {
    sim_req req[SIM_REQS];
    sim_step step[SIM_STEPS];
    /* acme's work outside any step (tenant-tagged) */
    uint32_t tw_device;
    int64_t tw_start_us, tw_end_us;
    int64_t base_us, end_us;
} sim;

static const char *const SIM_TENANTS[] = {"acme", "globex", "initech"};

/* Everything happens in [base_us, base_us + 3 s). */
static inline void sim_make(sim *s, int64_t base_us)
{
    memset(s, 0, sizeof *s);
    s->base_us = base_us;
    uint64_t x = 12345;
    for (int j = 0; j < SIM_REQS; j++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        sim_req *r = &s->req[j];
        r->tenant = SIM_TENANTS[(x >> 40) % 3];
        snprintf(r->rid, sizeof r->rid, "req-%02d", j);
        r->prefill = 100 + (int64_t)((x >> 20) % 900);
        r->first_step = (int)((x >> 30) % (SIM_STEPS - 10));
        r->steps = 3 + (int)((x >> 50) % 8);
    }
    for (int k = 0; k < SIM_STEPS; k++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        sim_step *st = &s->step[k];
        st->id = 1000 + (uint64_t)k;
        st->device = (uint32_t)(k % 2);
        /* two streams per device: steps overlap on a device now and then */
        st->start_us = base_us + (int64_t)k * 55000 + (int64_t)((x >> 33) % 30000);
        st->end_us = st->start_us + 20000 + (int64_t)((x >> 45) % 90000);
        if (st->end_us > s->end_us)
            s->end_us = st->end_us;
    }
    s->tw_device = 1;
    s->tw_start_us = base_us + 400000;
    s->tw_end_us = base_us + 1650000; /* crosses a window boundary */
}

/* The requests of step k (prefill in a request's first step, one decode token after). */
static inline int sim_step_reqs(const sim *s, int k, gm_gpu_step_request *out)
{
    int n = 0;
    for (int j = 0; j < SIM_REQS; j++) {
        const sim_req *r = &s->req[j];
        if (k < r->first_step || k >= r->first_step + r->steps)
            continue;
        out[n].tenant = r->tenant;
        out[n].request_id = r->rid;
        out[n].prefill_tokens = k == r->first_step ? r->prefill : 0;
        out[n].decode_tokens = k == r->first_step ? 0 : 1;
        n++;
    }
    return n;
}

/* Appends to a growable string. */
static inline void sim_cat(char **b, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2 + 1024;
        *b = gm_xrealloc(*b, *cap);
    }
    memcpy(*b + *len, s, n + 1);
    *len += n;
}

/* POST /v1/gpu/steps as JSON lines: each step with its requests, and with its GPU time
 * (with_time: a feed) or without (the CUPTI collector sees the kernels). Steps without a
 * request are skipped (an engine does not run them). */
static inline char *sim_steps_body(const sim *s, bool with_time)
{
    char *b = NULL, line[4096];
    size_t len = 0, cap = 0;
    sim_cat(&b, &len, &cap, "");
    for (int k = 0; k < SIM_STEPS; k++) {
        gm_gpu_step_request q[SIM_REQS];
        int n = sim_step_reqs(s, k, q);
        if (!n)
            continue;
        int o = snprintf(line, sizeof line, "{\"step\":%llu,\"requests\":[",
                         (unsigned long long)s->step[k].id);
        for (int i = 0; i < n; i++)
            o += snprintf(line + o, sizeof line - (size_t)o,
                          "%s{\"tenant\":\"%s\",\"request_id\":\"%s\",\"prefill_tokens\":%lld,"
                          "\"decode_tokens\":%lld}",
                          i ? "," : "", q[i].tenant, q[i].request_id,
                          (long long)q[i].prefill_tokens, (long long)q[i].decode_tokens);
        o += snprintf(line + o, sizeof line - (size_t)o, "]");
        if (with_time)
            o += snprintf(line + o, sizeof line - (size_t)o,
                          ",\"device\":%u,\"start_us\":%lld,\"end_us\":%lld", s->step[k].device,
                          (long long)s->step[k].start_us, (long long)s->step[k].end_us);
        snprintf(line + o, sizeof line - (size_t)o, "}\n");
        sim_cat(&b, &len, &cap, line);
    }
    if (with_time) {
        snprintf(line, sizeof line,
                 "{\"tenant\":\"acme\",\"kernels\":[{\"device\":%u,\"start_us\":%lld,\"end_us\":"
                 "%lld}]}\n",
                 s->tw_device, (long long)s->tw_start_us, (long long)s->tw_end_us);
        sim_cat(&b, &len, &cap, line);
    }
    return b;
}

/* The usage events the server sends once its requests are done: without gpu_us. */
static inline char *sim_usage_body(const sim *s)
{
    char *b = NULL, line[512];
    size_t len = 0, cap = 0;
    sim_cat(&b, &len, &cap, "");
    for (int j = 0; j < SIM_REQS; j++) {
        snprintf(line, sizeof line,
                 "{\"subject\":\"%s\",\"data\":{\"model\":\"llama-3.1-8b-instruct\","
                 "\"request_id\":\"%s\",\"input_tokens\":%lld,\"cached_tokens\":0,"
                 "\"output_tokens\":%d}}\n",
                 s->req[j].tenant, s->req[j].rid, (long long)s->req[j].prefill,
                 s->req[j].steps - 1);
        sim_cat(&b, &len, &cap, line);
    }
    /* one request the engine never ran: gpu_us 0 */
    sim_cat(&b, &len, &cap,
            "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"request_id\":\"req-never\","
            "\"input_tokens\":1,\"cached_tokens\":0,\"output_tokens\":1}}\n");
    return b;
}

/* What the rules say: one engine run over all of it (the same as window by window). */
static inline void sim_expect(const sim *s, uint64_t window_ns, gm_gpu_result *res)
{
    gm_gpu_attr_conf conf = {.window_ns = window_ns};
    gm_gpu_attr *a = NULL;
    char err[256];
    ck_assert_int_eq(gm_gpu_attr_new(&conf, &a, err, sizeof err), 0);
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, "acme", err, sizeof err), 0);
    uint32_t corr = 1;
    for (int k = 0; k < SIM_STEPS; k++) {
        gm_gpu_step_request q[SIM_REQS];
        int n = sim_step_reqs(s, k, q);
        if (!n)
            continue;
        ck_assert_int_eq(gm_gpu_attr_add_step(a, s->step[k].id, q, (size_t)n, err, sizeof err), 0);
        gm_gpu_record r = {.start_ns = (uint64_t)s->step[k].start_us * 1000u,
                           .end_ns = (uint64_t)s->step[k].end_us * 1000u,
                           .device = s->step[k].device,
                           .correlation_id = corr,
                           .resource = GM_GPU_RES_KERNEL};
        gm_gpu_attr_add_records(a, &r, 1);
        gm_gpu_attr_add_tag(a, corr++, GM_GPU_TAG_STEP, s->step[k].id);
    }
    gm_gpu_record r = {.start_ns = (uint64_t)s->tw_start_us * 1000u,
                       .end_ns = (uint64_t)s->tw_end_us * 1000u,
                       .device = s->tw_device,
                       .correlation_id = corr,
                       .resource = GM_GPU_RES_KERNEL};
    gm_gpu_attr_add_records(a, &r, 1);
    gm_gpu_attr_add_tag(a, corr, GM_GPU_TAG_TENANT, 1);
    ck_assert_int_eq(gm_gpu_attr_run(a, res, err, sizeof err), 0);
    ck_assert_int_eq(gm_gpu_result_check(res, err, sizeof err), 0);
    gm_gpu_attr_free(a);
}

/* The expected gpu_us of a request (round half up of its ns over all windows), -1 if none. */
static inline int64_t sim_request_us(const gm_gpu_result *res, const char *tenant, const char *rid)
{
    for (size_t i = 0; i < res->n_requests; i++)
        if (!strcmp(res->requests[i].tenant, tenant) && res->requests[i].request_id &&
            !strcmp(res->requests[i].request_id, rid))
            return (res->requests[i].gpu_ns + 500) / 1000;
    return -1;
}

/* The agent's gridmeter.gpu.v1 events equal the rows: per (device, window, tenant) the same
 * gpu_us and kernels, the window's unattributed_us, one event per row, and nothing else. */
static inline void sim_check_windows(const gm_gpu_result *res, const gm_event *ev, size_t n,
                                     const char *source, const char *site)
{
    ck_assert_uint_eq(n, res->n_rows);
    uint8_t *used = gm_xcalloc(n ? n : 1, 1);
    for (size_t i = 0; i < res->n_rows; i++) {
        const gm_gpu_row *row = &res->rows[i];
        char dev[16];
        snprintf(dev, sizeof dev, "gpu%u", row->device);
        size_t k = 0;
        while (k < n && (used[k] || strcmp(ev[k].device, dev) ||
                         ev[k].window_start_us != row->window_start_ns / 1000 ||
                         strcmp(ev[k].tenant, row->tenant)))
            k++;
        ck_assert_msg(k < n, "no gpu.v1 event for %s %s window %lld", dev, row->tenant,
                      (long long)row->window_start_ns);
        used[k] = 1;
        ck_assert_int_eq(ev[k].type, GM_EVENT_GPU);
        ck_assert_str_eq(ev[k].source, source);
        ck_assert_str_eq(ev[k].site, site);
        ck_assert_int_eq(ev[k].window_end_us, row->window_end_ns / 1000);
        ck_assert_msg(ev[k].gpu_us == row->gpu_us, "%s %s window %lld: gpu_us %lld, expected %lld",
                      dev, row->tenant, (long long)row->window_start_ns, (long long)ev[k].gpu_us,
                      (long long)row->gpu_us);
        ck_assert_int_eq(ev[k].kernels, row->kernels);
        ck_assert_str_eq(ev[k].policy, GM_GPU_POLICY_KERNEL);
        for (size_t w = 0; w < res->n_windows; w++)
            if (res->windows[w].device == row->device &&
                res->windows[w].window_start_ns == row->window_start_ns)
                ck_assert_int_eq(ev[k].unattributed_us, res->windows[w].unattributed_us);
    }
    free(used);
}

#endif
