/* The CUPTI source where gridmeter was built without the CUPTI headers: always unavailable.
 * The rest of the collector (collector.c: feeds, tagging calls that then return GM_EUNAVAIL)
 * is the same either way, so that a server links and runs the same. */
#include "gpu_internal.h"

int gm_gpu_collector_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                           size_t err_len)
{
    (void)conf;
    *out = NULL;
    return gm_fail(err, err_len, GM_EUNAVAIL,
                   "gpu collector: built without CUPTI headers (CUDA toolkit not found)");
}
