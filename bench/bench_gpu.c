/* Attribution throughput: records/s of the C attribution on one core (end to end: add records
 * and tags, join, sweep, splits) and of the bare C sweep, beside a baseline measured in the same
 * run (qsort of the same records by start time); then the CUDA sweep, with transfers, when a GPU
 * answers. Usage: bench_gpu [records (default 5000000)] [tenants (default 100)] */
#include "gm_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state = 12345;
static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rng_state >> 33;
}

static int cmp_start(const void *a, const void *b)
{
    const gm_gpu_record *x = a, *y = b;
    return (x->start_ns > y->start_ns) - (x->start_ns < y->start_ns);
}

static double secs(int64_t us)
{
    return (double)us / 1e6; /* display only */
}

/* CPU time of this thread: on a shared machine, the fair measure of "one core" */
static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 5000000;
    uint32_t tenants = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 100;
    if (n == 0 || tenants == 0) {
        fprintf(stderr, "usage: bench_gpu [records] [tenants]\n");
        return 2;
    }
    /* A serving GPU: 8 streams back to back with small gaps, kernels 5..200 us, so 1..8 run
     * at once; 2 devices; 70% tenant-tagged, 25% engine-step tagged, 5% untagged; 1 in 8 is a
     * copy. 10 s windows. */
    printf("bench_gpu: %zu records, %u tenants, 2 devices, 10 s windows\n", n, tenants);
    gm_gpu_record *recs = malloc(n * sizeof *recs);
    uint64_t t0 = UINT64_C(1795730400) * 1000000000u, stream_t[2][8];
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 8; s++)
            stream_t[d][s] = t0 + rnd() % 100000;
    for (size_t i = 0; i < n; i++) {
        int d = (int)(rnd() % 2), s = (int)(rnd() % 8);
        uint64_t st = stream_t[d][s] + rnd() % 3000;
        uint64_t len = 5000 + rnd() % 195000;
        stream_t[d][s] = st + len;
        recs[i] = (gm_gpu_record){.start_ns = st,
                                  .end_ns = st + len,
                                  .device = (uint32_t)d,
                                  .correlation_id = (uint32_t)i,
                                  .resource = (uint8_t)(rnd() % 8 == 0)};
    }
    char err[256];

    /* baseline: sort the records by start time */
    gm_gpu_record *copy = malloc(n * sizeof *copy);
    memcpy(copy, recs, n * sizeof *copy);
    int64_t b0 = gm_mono_us(), bc0 = cpu_us();
    qsort(copy, n, sizeof *copy, cmp_start);
    int64_t base_us = gm_mono_us() - b0, base_cpu = cpu_us() - bc0;
    free(copy);
    printf("  baseline qsort by start:        wall %7.3f s  cpu %7.3f s  %11.0f records/s (cpu)\n",
           secs(base_us), secs(base_cpu), (double)n / secs(base_cpu));

    /* the C attribution, end to end */
    for (int use_cuda = 0; use_cuda < 2; use_cuda++) {
        if (use_cuda && !gm_gpu_cuda_available(err, sizeof err)) {
            printf("  CUDA attribution:               skipped (%s)\n", err);
            break;
        }
        gm_gpu_attr_conf conf = {.window_ns = GM_GPU_DEFAULT_WINDOW_NS, .use_cuda = use_cuda};
        gm_gpu_attr *a = NULL;
        if (gm_gpu_attr_new(&conf, &a, err, sizeof err))
            return fprintf(stderr, "%s\n", err), 1;
        int64_t s0 = gm_mono_us(), sc0 = cpu_us();
        for (uint32_t t = 0; t < tenants; t++) {
            char name[32];
            snprintf(name, sizeof name, "tenant-%u", t);
            if (gm_gpu_attr_define_tenant(a, t + 1, name, err, sizeof err))
                return fprintf(stderr, "%s\n", err), 1;
        }
        for (uint64_t st = 0; st < 1000; st++) {
            char t1[32], t2[32];
            snprintf(t1, sizeof t1, "tenant-%u", (uint32_t)(st % tenants));
            snprintf(t2, sizeof t2, "tenant-%u", (uint32_t)((st * 7 + 3) % tenants));
            gm_gpu_step_request q[] = {{t1, NULL, (int64_t)(st % 500), 1},
                                       {t2, NULL, 0, (int64_t)(st % 17)}};
            if (gm_gpu_attr_add_step(a, st, q, 2, err, sizeof err))
                return fprintf(stderr, "%s\n", err), 1;
        }
        rng_state = 777;
        for (size_t i = 0; i < n; i += 65536) {
            size_t m = n - i < 65536 ? n - i : 65536;
            gm_gpu_attr_add_records(a, recs + i, m);
            for (size_t j = i; j < i + m; j++) {
                uint64_t r = rnd() % 100;
                if (r < 70)
                    gm_gpu_attr_add_tag(a, (uint32_t)j, GM_GPU_TAG_TENANT, 1 + rnd() % tenants);
                else if (r < 95)
                    gm_gpu_attr_add_tag(a, (uint32_t)j, GM_GPU_TAG_STEP, rnd() % 1000);
            }
            if ((i / 65536) % 32 == 0) {
                fprintf(stderr, "\r  loading %zu/%zu", i + m, n);
                fflush(stderr);
            }
        }
        fprintf(stderr, "\r                                        \r");
        int64_t s1 = gm_mono_us(), sc1 = cpu_us();
        gm_gpu_result res;
        if (gm_gpu_attr_run(a, &res, err, sizeof err))
            return fprintf(stderr, "%s\n", err), 1;
        int64_t s2 = gm_mono_us(), sc2 = cpu_us();
        if (gm_gpu_result_check(&res, err, sizeof err))
            return fprintf(stderr, "invariant broken: %s\n", err), 1;
        int64_t busy = 0;
        for (size_t i = 0; i < res.n_windows; i++)
            busy += res.windows[i].busy_ns;
        printf("  %s attribution, end to end:  wall %7.3f s  cpu %7.3f s  %11.0f records/s (cpu)"
               "\n      of which run: wall %.3f s, cpu %.3f s (%.0f records/s); %zu rows, %zu "
               "windows, busy %lld ns\n",
               use_cuda ? "CUDA" : "C   ", secs(s2 - s0), secs(sc2 - sc0),
               (double)n / secs(sc2 - sc0), secs(s2 - s1), secs(sc2 - sc1),
               (double)n / secs(sc2 - sc1), res.n_rows, res.n_windows, (long long)busy);
        gm_gpu_result_free(&res);
        gm_gpu_attr_free(a);
    }

    /* the bare sweep: C reference, then CUDA with transfers */
    gm_gpu_span *sp = malloc(n * sizeof *sp);
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].device == 0 && recs[i].resource == 0)
            sp[ns++] = (gm_gpu_span){recs[i].start_ns, recs[i].end_ns,
                                     (uint32_t)(recs[i].correlation_id % tenants)};
    }
    gm_gpu_sweep c, g;
    int64_t c0 = gm_mono_us(), cc0 = cpu_us();
    if (gm_gpu_sweep_cpu(sp, ns, GM_GPU_DEFAULT_WINDOW_NS, tenants, &c, err, sizeof err))
        return fprintf(stderr, "%s\n", err), 1;
    int64_t c_us = gm_mono_us() - c0, c_cpu = cpu_us() - cc0;
    printf("  C sweep (one device):           wall %7.3f s  cpu %7.3f s  %11.0f spans/s (cpu) "
           "(%zu spans)\n",
           secs(c_us), secs(c_cpu), (double)ns / secs(c_cpu), ns);
    if (gm_gpu_cuda_available(err, sizeof err)) {
        /* first call pays the CUDA context start; time the second */
        if (gm_gpu_sweep_cuda(sp, ns, GM_GPU_DEFAULT_WINDOW_NS, tenants, &g, err, sizeof err))
            return fprintf(stderr, "%s\n", err), 1;
        gm_gpu_sweep_free(&g);
        int64_t g0 = gm_mono_us();
        if (gm_gpu_sweep_cuda(sp, ns, GM_GPU_DEFAULT_WINDOW_NS, tenants, &g, err, sizeof err))
            return fprintf(stderr, "%s\n", err), 1;
        int64_t g_us = gm_mono_us() - g0;
        int same = g.n_cells == c.n_cells && g.n_wins == c.n_wins &&
                   memcmp(g.cells, c.cells, c.n_cells * sizeof *c.cells) == 0 &&
                   memcmp(g.wins, c.wins, c.n_wins * sizeof *c.wins) == 0;
        printf(
            "  CUDA sweep incl. transfers:     wall %7.3f s  %11.0f spans/s  bit-identical: %s\n",
            secs(g_us), (double)ns / secs(g_us), same ? "yes" : "NO");
        gm_gpu_sweep_free(&g);
        if (!same)
            return 1;
    } else {
        printf("  CUDA sweep:                     skipped (%s)\n", err);
    }
    gm_gpu_sweep_free(&c);
    free(sp);
    free(recs);
    return 0;
}
