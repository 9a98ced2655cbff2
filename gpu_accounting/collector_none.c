/* The collector where gridmeter was built without the CUPTI headers: always unavailable; the
 * tagging calls do nothing, so that a server links and runs the same either way. */
#include "gpu_internal.h"

int gm_gpu_collector_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                           size_t err_len)
{
    (void)conf;
    *out = NULL;
    return gm_fail(err, err_len, GM_EUNAVAIL,
                   "gpu collector: built without CUPTI headers (CUDA toolkit not found)");
}

void gm_gpu_collector_stop(gm_gpu_collector *c)
{
    (void)c;
}

int gm_gpu_collector_flush(gm_gpu_collector *c, char *err, size_t err_len)
{
    (void)c;
    return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not available");
}

void gm_gpu_collector_stats_get(gm_gpu_collector *c, gm_gpu_collector_stats *out)
{
    (void)c;
    *out = (gm_gpu_collector_stats){0};
}

int gm_gpu_tenant_push(gm_gpu_collector *c, const char *tenant)
{
    (void)c;
    (void)tenant;
    return GM_EUNAVAIL;
}

int gm_gpu_tenant_pop(gm_gpu_collector *c)
{
    (void)c;
    return GM_EUNAVAIL;
}

int gm_gpu_step_push(gm_gpu_collector *c, uint64_t step_id)
{
    (void)c;
    (void)step_id;
    return GM_EUNAVAIL;
}

int gm_gpu_step_pop(gm_gpu_collector *c)
{
    (void)c;
    return GM_EUNAVAIL;
}

int gm_gpu_step_manifest(gm_gpu_collector *c, uint64_t step_id, const gm_gpu_step_request *reqs,
                         size_t n, char *err, size_t err_len)
{
    (void)c;
    (void)step_id;
    (void)reqs;
    (void)n;
    return gm_fail(err, err_len, GM_EUNAVAIL, "gpu collector: not available");
}
