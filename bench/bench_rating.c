/* Benchmark of per-event pricing: events priced per second on one core, in memory, with 1,000
 * tenants (a contract each, with price overrides), 50 models, 100 sites in 3 tiers and 2 card
 * versions, against a baseline measured in the same run (the bare loop that sums the same
 * events' quantities), and the cost of also aggregating into invoice periods.
 *
 *   bench_rating [events (default 2000000)] [rounds (default 5)]
 * Build it Release (-O2) in its own build directory for numbers. Rates are per CPU-second
 * of the benchmark thread (CLOCK_THREAD_CPUTIME_ID). */
#include "gm_rating.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_TENANTS 1000
#define N_MODELS  50
#define N_SITES   100
#define NOV1      INT64_C(1793491200000000)

static uint64_t rng = 42;

/* CPU time of this thread in microseconds: on a shared machine, time spent descheduled does
 * not count, so the rates are per busy core. */
static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rnd(void)
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static char tenants[N_TENANTS][32], models[N_MODELS][48], sites[N_SITES][24];

static void add_or_die(int rc, const char *what, const char *err)
{
    if (rc) {
        fprintf(stderr, "bench_rating: %s: %s\n", what, err);
        exit(1);
    }
}

static gm_rating_book *make_book(void)
{
    gm_rating_book *b = gm_rating_book_new();
    size_t cap = 1 << 20, n;
    char *card = malloc(cap), err[512];
    for (int i = 0; i < N_MODELS; i++)
        snprintf(models[i], sizeof models[i], "llama-3.1-%03db-instruct-v%d", 8 + 7 * i, i % 3);
    for (int i = 0; i < N_SITES; i++)
        snprintf(sites[i], sizeof sites[i], "edge-%04d", i);
    for (int i = 0; i < N_TENANTS; i++)
        snprintf(tenants[i], sizeof tenants[i], "tenant-%06d", i);
    for (int v = 1; v <= 2; v++) {
        n = (size_t)snprintf(card, cap,
                             "{\"card_id\":\"list\",\"version\":%d,\"valid_from\":\"%s\","
                             "\"currency\":\"USD\",\"default_card\":true,\"prices\":{",
                             v, v == 1 ? "2026-01-01T00:00:00Z" : "2026-11-15T00:00:00Z");
        for (int m = 0; m <= N_MODELS; m++)
            n += (size_t)snprintf(card + n, cap - n,
                                  "%s\"%s\":{\"input\":{\"per_1m_tokens\":\"0.%02d\"},"
                                  "\"cached\":{\"per_1m_tokens\":\"0.%03d\"},"
                                  "\"output\":{\"per_1m_tokens\":\"%d.%02d\"},"
                                  "\"gpu\":{\"per_gpu_hour\":\"3.60\"}}",
                                  m ? "," : "", m == N_MODELS ? "default" : models[m],
                                  (int)(rnd() % 90 + 10), (int)(rnd() % 900 + 100) / 4 * 4,
                                  (int)(rnd() % 3), (int)(rnd() % 100) / 4 * 4);
        n += (size_t)snprintf(card + n, cap - n, "},\"site_tiers\":{");
        const char *tier[3] = {"metro", "remote", "core"};
        const char *mult[3] = {"1", "1.25", "0.75"};
        for (int t = 0; t < 3; t++) {
            n += (size_t)snprintf(card + n, cap - n, "%s\"%s\":{\"multiplier\":\"%s\",\"sites\":[",
                                  t ? "," : "", tier[t], mult[t]);
            int first = 1;
            for (int s = 0; s < N_SITES; s++)
                if (s % 3 == t) {
                    n +=
                        (size_t)snprintf(card + n, cap - n, "%s\"%s\"", first ? "" : ",", sites[s]);
                    first = 0;
                }
            n += (size_t)snprintf(card + n, cap - n, "]}");
        }
        n += (size_t)snprintf(card + n, cap - n, "},\"default_site_tier\":\"metro\"}");
        add_or_die(gm_rating_book_add_card(b, card, n, err, sizeof err), "card", err);
    }
    for (int i = 0; i < N_TENANTS; i++) {
        n = (size_t)snprintf(card, cap,
                             "{\"tenant\":\"%s\",\"currency\":\"USD\",\"prices\":{"
                             "\"%s\":{\"output\":{\"per_1m_tokens\":\"0.5\"}},"
                             "\"%s\":{\"input\":{\"per_token\":\"0.0000001\"}}},"
                             "\"tiers\":[{\"dimension\":\"output\",\"mode\":\"graduated\","
                             "\"bands\":[{\"up_to\":\"1000000000\",\"price\":{\"per_1m_tokens\":"
                             "\"1\"}},{\"price\":{\"per_1m_tokens\":\"0.8\"}}]}],"
                             "\"minimum_commitment\":\"100.00\"}",
                             tenants[i], models[i % N_MODELS], models[(i + 7) % N_MODELS]);
        add_or_die(gm_rating_book_add_contract(b, card, n, err, sizeof err), "contract", err);
    }
    free(card);
    return b;
}

int main(int argc, char **argv)
{
    size_t n_events = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    printf("bench_rating: %zu events x %d rounds; %d tenants (contract each), %d models, %d "
           "sites, 3 site tiers, 2 card versions\n",
           n_events, rounds, N_TENANTS, N_MODELS, N_SITES);
    gm_rating_book *book = make_book();
    gm_usage *ev = malloc(n_events * sizeof *ev);
    for (size_t i = 0; i < n_events; i++) {
        ev[i].tenant = tenants[rnd() % N_TENANTS];
        ev[i].model = rnd() % 50 == 0 ? "unlisted-model" : models[rnd() % N_MODELS];
        ev[i].site = sites[rnd() % N_SITES];
        ev[i].time_us = NOV1 + (int64_t)(rnd() % (30 * (uint64_t)GM_US_PER_DAY));
        ev[i].qty[GM_DIM_INPUT] = (int64_t)(rnd() % 4096);
        ev[i].qty[GM_DIM_CACHED] = (int64_t)(rnd() % 2048);
        ev[i].qty[GM_DIM_OUTPUT] = (int64_t)(rnd() % 1024);
        ev[i].qty[GM_DIM_GPU] = (int64_t)(rnd() % 200000);
        ev[i].service_tier = GM_RATING_SVC_STANDARD;
    }
    double best_base = 0, best_price = 0, best_agg = 0;
    volatile gm_i128 sink = 0;
    for (int r = 0; r < rounds; r++) {
        /* Baseline: the bare loop over the same events, summing their quantities. */
        int64_t t0 = cpu_us();
        gm_i128 q = 0;
        for (size_t i = 0; i < n_events; i++)
            for (int d = 0; d < GM_DIM_COUNT; d++)
                q += ev[i].qty[d];
        int64_t t1 = cpu_us();
        /* Pricing each event. */
        gm_i128 total = 0;
        char err[256];
        gm_event_price p;
        for (size_t i = 0; i < n_events; i++) {
            if (gm_rating_price_event(book, &ev[i], &p, err, sizeof err)) {
                fprintf(stderr, "bench_rating: %s\n", err);
                return 1;
            }
            total += p.amount_e18[0] + p.amount_e18[1] + p.amount_e18[2] + p.amount_e18[3];
        }
        int64_t t2 = cpu_us();
        /* Pricing and aggregating into per-tenant invoice periods (what a month-end invoice
         * run from raw events does). */
        gm_rating_period **per = calloc(N_TENANTS, sizeof *per);
        for (size_t i = 0; i < n_events; i++) {
            size_t ti = (size_t)atoi(ev[i].tenant + 7);
            if (!per[ti])
                per[ti] = gm_rating_period_new(book, ev[i].tenant, NOV1);
            if (gm_rating_period_add_event(per[ti], &ev[i], NULL, err, sizeof err)) {
                fprintf(stderr, "bench_rating: %s\n", err);
                return 1;
            }
        }
        int64_t t3 = cpu_us();
        for (int i = 0; i < N_TENANTS; i++)
            gm_rating_period_free(per[i]);
        free(per);
        sink += q + total;
        double base = (double)n_events / ((double)(t1 - t0 ? t1 - t0 : 1) / 1e6);
        double price = (double)n_events / ((double)(t2 - t1) / 1e6);
        double agg = (double)n_events / ((double)(t3 - t2) / 1e6);
        printf("round %d: baseline %.1f M events/s | price_event %.2f M events/s (%.0f ns/event) "
               "| price+aggregate %.2f M events/s (%.0f ns/event)\n",
               r + 1, base / 1e6, price / 1e6, 1e9 / price, agg / 1e6, 1e9 / agg);
        fflush(stdout);
        if (base > best_base)
            best_base = base;
        if (price > best_price)
            best_price = price;
        if (agg > best_agg)
            best_agg = agg;
    }
    printf("best: baseline %.1f M events/s, price_event %.2f M events/s/core (%.0f ns/event), "
           "price+aggregate %.2f M events/s/core; target 10 M events/s/core\n",
           best_base / 1e6, best_price / 1e6, 1e9 / best_price, best_agg / 1e6);
    free(ev);
    gm_rating_book_free(book);
    return 0;
}
