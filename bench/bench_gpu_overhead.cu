/* Device check: CUPTI collector overhead on a kernel-heavy loop. Launches many tiny kernels
 * (with a tenant pushed around every batch) and prints launches/s; run it once with "off" and
 * once with "on" (separate processes: CUPTI stays attached once loaded) and compare.
 * Usage: bench_gpu_overhead on|off [kernels (default 200000)] */
extern "C" {
#include "gm_gpu.h"
}

#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__global__ void tiny(int *p)
{
    if (threadIdx.x == 0 && p)
        atomicAdd(p, 1);
}

static int64_t kernels_seen;
static void on_windows(const gm_gpu_result *res, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < res->n_windows; i++)
        if (res->windows[i].resource == GM_GPU_RES_KERNEL)
            kernels_seen += res->windows[i].records;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int on = argc > 1 && strcmp(argv[1], "on") == 0;
    long n = argc > 2 ? atol(argv[2]) : 200000;
    gm_gpu_collector *c = NULL;
    char err[256];
    if (on) {
        gm_gpu_collector_conf conf;
        memset(&conf, 0, sizeof conf);
        conf.window_ns = 1000000000ull;
        conf.flush_ms = 500;
        conf.grace_ns = 1000000000ull;
        conf.buffer_bytes = 32u << 20;
        conf.cupti_path = getenv("GRIDMETER_CUPTI_PATH");
        conf.on_windows = on_windows;
        if (gm_gpu_collector_start(&conf, &c, err, sizeof err)) {
            printf("overhead: SKIP: collector unavailable: %s\n", err);
            return 77;
        }
    }
    int *d = NULL;
    if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) {
        printf("overhead: SKIP: no GPU\n");
        return 77;
    }
    for (int i = 0; i < 1000; i++) /* warm up */
        tiny<<<1, 32>>>(d);
    cudaDeviceSynchronize();
    double t0 = now_s();
    for (long i = 0; i < n; i += 100) {
        gm_gpu_tenant_push(c, (i / 100) % 2 ? "alpha" : "beta");
        for (long j = i; j < i + 100 && j < n; j++)
            tiny<<<1, 32>>>(d);
        gm_gpu_tenant_pop(c);
    }
    cudaDeviceSynchronize();
    double dt = now_s() - t0;
    gm_gpu_collector_stats st;
    memset(&st, 0, sizeof st);
    gm_gpu_collector_stats_get(c, &st);
    gm_gpu_collector_stop(c);
    printf("overhead: collector %s: %ld kernels in %.3f s = %.0f launches/s", on ? "on " : "off", n,
           dt, n / dt);
    if (on)
        printf(" (records %lld, attributed pieces %lld, dropped %lld, untagged %lld)",
               (long long)st.kernels, (long long)kernels_seen, (long long)st.dropped,
               (long long)st.untagged_kernels);
    printf("\nRESULT %s %.6f\n", on ? "on" : "off", dt);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : 1;
}
