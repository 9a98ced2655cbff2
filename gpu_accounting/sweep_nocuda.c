/* The CUDA bulk path where gridmeter was built without CUDA: it reports itself unavailable. */
#include "gpu_internal.h"

#include <string.h>

int gm_gpu_cuda_available(char *why, size_t why_len)
{
    gm_fail(why, why_len, GM_EUNAVAIL, "gm_gpu was built without CUDA (nvcc not found)");
    return 0;
}

int gm_gpu_sweep_cuda(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                      gm_gpu_sweep *out, char *err, size_t err_len)
{
    (void)spans;
    (void)n;
    (void)window_ns;
    (void)n_owners;
    memset(out, 0, sizeof *out);
    return gm_fail(err, err_len, GM_EUNAVAIL, "CUDA sweep: gm_gpu was built without CUDA");
}
