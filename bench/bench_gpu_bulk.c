/* Device check and benchmark of the CUDA bulk path: N synthetic kernel spans of one device
 * (1000 owners, 10 s windows, 1..16 kernels at once), swept by the C reference and by CUDA
 * (transfers included), compared bit for bit. Exit 0 identical, 1 different, 77 no GPU (after
 * the C part). Usage: bench_gpu_bulk [spans (default 10000000)] */
#include "gpu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state = 2026;
static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rng_state >> 33;
}

static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    const uint32_t owners = 1000;
    printf("bulk: %zu spans, %u owners, 10 s windows\n", n, owners);
    gm_gpu_span *sp = malloc(n * sizeof *sp);
    if (!sp)
        return fprintf(stderr, "out of memory\n"), 1;
    uint64_t stream_t[16], t0 = UINT64_C(1795730400) * 1000000000u;
    for (int s = 0; s < 16; s++)
        stream_t[s] = t0 + rnd() % 100000;
    for (size_t i = 0; i < n; i++) {
        int s = (int)(rnd() % 16);
        uint64_t st = stream_t[s] + rnd() % 2000;
        uint64_t len = 2000 + rnd() % 98000;
        stream_t[s] = st + len;
        sp[i] = (gm_gpu_span){st, st + len, (uint32_t)(rnd() % owners)};
        if (i % 10000000 == 0 && i) {
            fprintf(stderr, "\r  generated %zu", i);
            fflush(stderr);
        }
    }
    fprintf(stderr, "\r                          \r");
    char err[256];
    gm_gpu_sweep c, g;
    int64_t w0 = gm_mono_us(), c0 = cpu_us();
    if (gm_gpu_sweep_cpu(sp, n, GM_GPU_DEFAULT_WINDOW_NS, owners, &c, err, sizeof err))
        return fprintf(stderr, "%s\n", err), 1;
    int64_t w_us = gm_mono_us() - w0, c_us = cpu_us() - c0;
    if (gpu__sweep_check(&c, GM_GPU_DEFAULT_WINDOW_NS, err, sizeof err))
        return fprintf(stderr, "C sweep invariant: %s\n", err), 1;
    printf("  C sweep, one core:          wall %7.3f s  cpu %7.3f s  %12.0f spans/s (cpu); "
           "%zu cells, %zu windows\n",
           w_us / 1e6, c_us / 1e6, n / (c_us / 1e6), c.n_cells, c.n_wins);
    if (!gm_gpu_cuda_available(err, sizeof err)) {
        printf("  CUDA sweep: SKIP (%s)\n", err);
        gm_gpu_sweep_free(&c);
        free(sp);
        return 77;
    }
    /* the first call pays for the context; time the second */
    if (gm_gpu_sweep_cuda(sp, n < 1000 ? n : 1000, GM_GPU_DEFAULT_WINDOW_NS, owners, &g, err,
                          sizeof err))
        return fprintf(stderr, "%s\n", err), 1;
    gm_gpu_sweep_free(&g);
    int64_t g0 = gm_mono_us();
    if (gm_gpu_sweep_cuda(sp, n, GM_GPU_DEFAULT_WINDOW_NS, owners, &g, err, sizeof err))
        return fprintf(stderr, "%s\n", err), 1;
    int64_t g_us = gm_mono_us() - g0;
    int same = g.n_cells == c.n_cells && g.n_wins == c.n_wins &&
               memcmp(g.cells, c.cells, c.n_cells * sizeof *c.cells) == 0 &&
               memcmp(g.wins, c.wins, c.n_wins * sizeof *c.wins) == 0;
    printf("  CUDA sweep incl. transfers: wall %7.3f s  %12.0f spans/s  (%.1fx the C core)\n",
           g_us / 1e6, n / (g_us / 1e6), (double)c_us / (double)g_us);
    printf("bulk: CUDA vs C reference on %zu spans: %s\n", n, same ? "bit-identical" : "DIFFERENT");
    gm_gpu_sweep_free(&c);
    gm_gpu_sweep_free(&g);
    free(sp);
    return same ? 0 : 1;
}
