/* Device check: two tenants launch spin kernels on two streams with deliberate overlap while the
 * real CUPTI collector runs; the attributed times are compared with cudaEvent timings and with
 * the busy time. Each round: tenant alpha runs LONG ns on stream 1 and tenant beta SHORT ns on
 * stream 2 at the same moment, so that alpha ~ LONG - SHORT/2 and beta ~ SHORT/2 per round.
 * Exit 0 when within tolerance, 1 when not, 77 when no GPU/CUPTI. Usage:
 *   bench_gpu_overlap [rounds (default 40)] [long_us (3000)] [short_us (1000)] */
extern "C" {
#include "gm_gpu.h"
}

#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__global__ void spin(unsigned long long ns)
{
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}

static struct totals {
    int64_t alpha_ns, beta_ns, other_ns, busy_ns, unattributed_ns, windows;
} T;

static void on_windows(const gm_gpu_result *res, void *arg)
{
    (void)arg;
    char err[256];
    if (gm_gpu_result_check(res, err, sizeof err))
        fprintf(stderr, "INVARIANT BROKEN: %s\n", err);
    for (size_t i = 0; i < res->n_rows; i++) {
        const gm_gpu_row *r = &res->rows[i];
        if (r->resource != GM_GPU_RES_KERNEL)
            continue;
        if (strcmp(r->tenant, "alpha") == 0)
            T.alpha_ns += r->gpu_ns;
        else if (strcmp(r->tenant, "beta") == 0)
            T.beta_ns += r->gpu_ns;
        else
            T.other_ns += r->gpu_ns;
    }
    for (size_t i = 0; i < res->n_windows; i++) {
        if (res->windows[i].resource != GM_GPU_RES_KERNEL)
            continue;
        T.busy_ns += res->windows[i].busy_ns;
        T.unattributed_ns += res->windows[i].unattributed_ns;
        T.windows++;
    }
}

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));                            \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static double pct(double a, double b)
{
    return b != 0 ? 100.0 * (a - b) / b : 0;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    unsigned long long long_ns = (argc > 2 ? strtoull(argv[2], NULL, 10) : 3000) * 1000ull;
    unsigned long long short_ns = (argc > 3 ? strtoull(argv[3], NULL, 10) : 1000) * 1000ull;
    gm_gpu_collector_conf conf;
    memset(&conf, 0, sizeof conf);
    conf.window_ns = 1000000000ull; /* 1 s windows: rounds cross boundaries */
    conf.flush_ms = 200;
    conf.grace_ns = 500000000ull;
    conf.cupti_path = getenv("GRIDMETER_CUPTI_PATH");
    conf.on_windows = on_windows;
    gm_gpu_collector *c = NULL;
    char err[256];
    int rc = gm_gpu_collector_start(&conf, &c, err, sizeof err);
    if (rc) {
        printf("overlap: SKIP: collector unavailable: %s\n", err);
        return 77;
    }
    cudaStream_t s1, s2;
    CU(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    CU(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    cudaEvent_t a0, a1, b0, b1;
    CU(cudaEventCreate(&a0));
    CU(cudaEventCreate(&a1));
    CU(cudaEventCreate(&b0));
    CU(cudaEventCreate(&b1));
    /* warm up outside any tenant: the context and module load */
    spin<<<1, 1, 0, s1>>>(1000);
    CU(cudaDeviceSynchronize());
    T = totals{};
    double ev_alpha_ms = 0, ev_beta_ms = 0;
    for (int r = 0; r < rounds; r++) {
        CU(cudaEventRecord(a0, s1));
        CU(cudaEventRecord(b0, s2));
        gm_gpu_tenant_push(c, "alpha");
        spin<<<1, 32, 0, s1>>>(long_ns);
        gm_gpu_tenant_pop(c);
        gm_gpu_tenant_push(c, "beta");
        spin<<<1, 32, 0, s2>>>(short_ns);
        gm_gpu_tenant_pop(c);
        CU(cudaEventRecord(a1, s1));
        CU(cudaEventRecord(b1, s2));
        CU(cudaDeviceSynchronize());
        float ma = 0, mb = 0;
        CU(cudaEventElapsedTime(&ma, a0, a1));
        CU(cudaEventElapsedTime(&mb, b0, b1));
        ev_alpha_ms += ma;
        ev_beta_ms += mb;
        usleep(2000); /* idle gap: charged to nobody */
    }
    gm_gpu_collector_stats st;
    gm_gpu_collector_stats_get(c, &st);
    gm_gpu_collector_stop(c); /* closes every window into T */
    /* expected from the events: the union is alpha's span (beta runs inside it) */
    double ev_busy_ns = ev_alpha_ms * 1e6;
    double exp_beta = ev_beta_ms * 1e6 / 2, exp_alpha = ev_busy_ns - exp_beta;
    double busy = (double)T.busy_ns;
    printf("overlap: %d rounds, alpha %llu us on stream 1, beta %llu us on stream 2\n", rounds,
           long_ns / 1000, short_ns / 1000);
    printf("  cudaEvent: alpha span %.3f ms, beta span %.3f ms (sums over rounds)\n", ev_alpha_ms,
           ev_beta_ms);
    printf("  attributed: alpha %.3f ms (expected %.3f, %+.2f%%), beta %.3f ms (expected %.3f, "
           "%+.2f%%)\n",
           T.alpha_ns / 1e6, exp_alpha / 1e6, pct((double)T.alpha_ns, exp_alpha), T.beta_ns / 1e6,
           exp_beta / 1e6, pct((double)T.beta_ns, exp_beta));
    printf("  busy %.3f ms vs cudaEvent union %.3f ms (%+.2f%%); unattributed %.3f ms (warm-up); "
           "other %.3f ms\n",
           busy / 1e6, ev_busy_ns / 1e6, pct(busy, ev_busy_ns), T.unattributed_ns / 1e6,
           T.other_ns / 1e6);
    printf("  sum check: alpha + beta + other + unattributed = %lld ns, busy = %lld ns: %s\n",
           (long long)(T.alpha_ns + T.beta_ns + T.other_ns + T.unattributed_ns),
           (long long)T.busy_ns,
           T.alpha_ns + T.beta_ns + T.other_ns + T.unattributed_ns == T.busy_ns ? "exact"
                                                                                : "MISMATCH");
    printf("  collector: %lld buffers, %lld kernels, %lld tags, %lld api records, dropped %lld, "
           "untagged %lld, zero ts %lld, inverted %lld, late %lld, windows %lld\n",
           (long long)st.buffers, (long long)st.kernels, (long long)st.tags,
           (long long)st.api_records, (long long)st.dropped, (long long)st.untagged_kernels,
           (long long)st.zero_timestamps, (long long)st.inverted, (long long)st.late_records,
           (long long)T.windows);
    int ok = T.alpha_ns + T.beta_ns + T.other_ns + T.unattributed_ns == T.busy_ns &&
             abs((int)pct((double)T.alpha_ns, exp_alpha)) <= 5 &&
             abs((int)pct((double)T.beta_ns, exp_beta)) <= 10 &&
             abs((int)pct(busy - (double)T.unattributed_ns, ev_busy_ns)) <= 5 && T.other_ns == 0;
    printf("overlap: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
