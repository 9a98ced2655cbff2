/* Node agent benchmark: batch POSTs of 100 usage events (JSON lines, without id, seq, source,
 * site or time: what a server sends) over the agent's Unix socket, against the raw node client
 * (gm_node_record of the same events) in the same run, on the same broker. Both rates count
 * events from the first call to the last delivery report. Then the answer time of 100-event
 * batches sent at half the agent's measured rate (paced), p50/p99/max.
 *
 *   bench_agent [--events N] [--clients K] [--brokers B] [--latency-s S] [--durability spool|disk]
 */
#include "gm_agent.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define BATCH 100

static const char *brokers = "127.0.0.1:59092";
static char dir[256];
static char sock[300];

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static const char *TENANTS[] = {"acme", "globex", "initech", "umbrella", "hooli"};

/* A batch body: request ids from `first`. */
static size_t batch_body(char *buf, size_t cap, uint64_t first)
{
    size_t len = 0;
    for (int i = 0; i < BATCH; i++) {
        uint64_t k = first + (uint64_t)i;
        len += (size_t)snprintf(
            buf + len, cap - len,
            "{\"subject\":\"%s\",\"data\":{\"model\":\"llama-3.1-70b-instruct\",\"request_id\":"
            "\"req-%016llx\",\"input_tokens\":%llu,\"cached_tokens\":%llu,\"output_tokens\":%llu,"
            "\"gpu_us\":%llu}}\n",
            TENANTS[k % 5], (unsigned long long)k, (unsigned long long)(k % 4096),
            (unsigned long long)(k % 512), (unsigned long long)(k % 700),
            (unsigned long long)(k * 37 % 200000));
    }
    return len;
}

static size_t sink(char *p, size_t s, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return s * n;
}

static CURL *client(void)
{
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, "http://agent/v1/events");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    static struct curl_slist *h;
    if (!h) {
        h = curl_slist_append(h, "Content-Type: application/x-ndjson");
        h = curl_slist_append(h, "Expect:");
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    return c;
}

static long post(CURL *c, const char *body, size_t len)
{
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (curl_easy_perform(c) != CURLE_OK)
        return 0;
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    return st;
}

/* ---- the raw node client ------------------------------------------------------------ */
static double run_node(uint64_t n, int round)
{
    char spool[320], err[512];
    snprintf(spool, sizeof spool, "%s/node-%d", dir, round);
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = brokers;
    c.source = "bench/fra1/node-raw";
    c.site = "fra1";
    c.spool_dir = spool;
    gm_node *node;
    if (gm_node_open(&c, &node, err, sizeof err)) {
        fprintf(stderr, "bench_agent: %s\n", err);
        exit(1);
    }
    int64_t t0 = gm_mono_us();
    for (uint64_t k = 0; k < n; k++) {
        char rid[32];
        snprintf(rid, sizeof rid, "req-%016llx", (unsigned long long)k);
        gm_node_usage u = {.tenant = TENANTS[k % 5],
                           .model = "llama-3.1-70b-instruct",
                           .request_id = rid,
                           .input_tokens = (int64_t)(k % 4096),
                           .cached_tokens = (int64_t)(k % 512),
                           .output_tokens = (int64_t)(k % 700),
                           .gpu_us = (int64_t)(k * 37 % 200000)};
        int rc;
        while ((rc = gm_node_record(node, &u, NULL, err, sizeof err)) == GM_EFULL)
            usleep(1000);
        if (rc) {
            fprintf(stderr, "bench_agent: %s\n", err);
            exit(1);
        }
    }
    if (gm_node_flush(node, 120000, err, sizeof err)) {
        fprintf(stderr, "bench_agent: %s\n", err);
        exit(1);
    }
    double s = (double)(gm_mono_us() - t0) / 1e6;
    gm_node_close(node);
    return (double)n / s;
}

/* ---- the agent ------------------------------------------------------------------------ */
typedef struct worker {
    uint64_t first, batches;
    uint64_t refused;
} worker;

/* Bodies are made before the clock starts (the server's JSON encoding is its own cost): a pool
 * of POOL different batches, sent in turn. */
#define POOL 64
static char *pool[POOL];
static size_t pool_len[POOL];

static void make_pool(void)
{
    for (int i = 0; i < POOL; i++) {
        pool[i] = malloc(BATCH * 300);
        pool_len[i] = batch_body(pool[i], BATCH * 300, (uint64_t)i * BATCH);
    }
}

static void *work(void *arg)
{
    worker *w = arg;
    CURL *c = client();
    for (uint64_t b = 0; b < w->batches; b++) {
        int k = (int)((w->first / BATCH + b) % POOL);
        const char *body = pool[k];
        size_t len = pool_len[k];
        long st;
        while ((st = post(c, body, len)) == 429)
            usleep(1000);
        if (st != 200)
            w->refused++;
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* One agent run: n events from `clients` threads; returns events/s to the last delivery. */
static double run_agent(uint64_t n, int clients, gm_agent_durability durability, int round,
                        double *cpu_s, double *answered_rate, gm_agent **keep)
{
    char spool[320], err[512];
    snprintf(spool, sizeof spool, "%s/agent-%d", dir, round);
    gm_agent_config cfg;
    gm_agent_config_init(&cfg);
    cfg.node.brokers = brokers;
    cfg.node.source = "bench/fra1/node-agent";
    cfg.node.site = "fra1";
    cfg.node.spool_dir = spool;
    cfg.node.close_timeout_ms = 60000;
    cfg.socket_path = sock;
    cfg.durability = durability;
    gm_agent *a;
    if (gm_agent_open(&cfg, &a, err, sizeof err)) {
        fprintf(stderr, "bench_agent: %s\n", err);
        exit(1);
    }
    worker *w = calloc((size_t)clients, sizeof *w);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    uint64_t per = n / (uint64_t)clients / BATCH;
    double c0 = cpu_now();
    int64_t t0 = gm_mono_us();
    for (int i = 0; i < clients; i++) {
        w[i].first = (uint64_t)i * per * BATCH;
        w[i].batches = per;
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    uint64_t refused = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        refused += w[i].refused;
    }
    double answered_s = (double)(gm_mono_us() - t0) / 1e6;
    gm_agent_stats st;
    for (gm_agent_stats_get(a, &st); st.node.unacked; gm_agent_stats_get(a, &st))
        usleep(1000);
    double agent_s = (double)(gm_mono_us() - t0) / 1e6;
    *cpu_s = cpu_now() - c0;
    *answered_rate = (double)n / answered_s;
    if (refused || st.accepted != n) {
        fprintf(stderr, "bench_agent: %llu batches refused, %llu accepted of %llu\n",
                (unsigned long long)refused, (unsigned long long)st.accepted,
                (unsigned long long)n);
        exit(1);
    }
    free(w);
    free(th);
    if (keep)
        *keep = a;
    else
        gm_agent_close(a);
    return (double)n / agent_s;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t n = 500000;
    int clients = 2, latency_s = 10;
    gm_agent_durability durability = GM_AGENT_DURABLE_SPOOL;
    if (getenv("GRIDMETER_KAFKA_BROKERS"))
        brokers = getenv("GRIDMETER_KAFKA_BROKERS");
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--events"))
            n = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--clients"))
            clients = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--brokers"))
            brokers = argv[i + 1];
        else if (!strcmp(argv[i], "--latency-s"))
            latency_s = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--durability"))
            durability =
                !strcmp(argv[i + 1], "disk") ? GM_AGENT_DURABLE_DISK : GM_AGENT_DURABLE_SPOOL;
        else {
            fprintf(stderr, "usage: bench_agent [--events N] [--clients K] [--brokers B] "
                            "[--latency-s S] [--durability spool|disk]\n");
            return 2;
        }
    }
    if (clients < 1)
        clients = 1;
    n = (n + (uint64_t)clients * BATCH - 1) / ((uint64_t)clients * BATCH) * clients * BATCH;
    gm_log_set_level(GM_LOG_WARN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof dir, "/tmp/bench-agent-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    double load[3] = {0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = -1;
        fclose(la);
    }
    printf("bench_agent: %llu events, batches of %d, %d client threads, %ld cores online, load "
           "average %.2f, broker %s, durability %s\n",
           (unsigned long long)n, BATCH, clients, sysconf(_SC_NPROCESSORS_ONLN), load[0], brokers,
           durability == GM_AGENT_DURABLE_DISK ? "disk" : "spool");

    make_pool();
    /* 1, 2: the node client, raw, and the agent over its Unix socket, in alternating rounds on
     * the same broker (medians: the machine is shared) */
    enum { ROUNDS = 3 };
    double node_r[ROUNDS], node_c[ROUNDS], agent_r[ROUNDS], agent_c[ROUNDS], answered_r[ROUNDS];
    gm_agent *a = NULL;
    for (int r = 0; r < ROUNDS; r++) {
        double c0 = cpu_now();
        node_r[r] = run_node(n, r);
        node_c[r] = cpu_now() - c0;
        agent_r[r] = run_agent(n, clients, durability, r, &agent_c[r], &answered_r[r],
                               r == ROUNDS - 1 ? &a : NULL);
        fprintf(stderr, "  round %d: node client %.0f/s, agent %.0f/s\n", r + 1, node_r[r],
                agent_r[r]);
    }
    double node_rate = node_r[0], agent_rate = agent_r[0];
    qsort(node_r, ROUNDS, sizeof *node_r, cmp_dbl);
    qsort(agent_r, ROUNDS, sizeof *agent_r, cmp_dbl);
    qsort(node_c, ROUNDS, sizeof *node_c, cmp_dbl);
    qsort(agent_c, ROUNDS, sizeof *agent_c, cmp_dbl);
    qsort(answered_r, ROUNDS, sizeof *answered_r, cmp_dbl);
    node_rate = node_r[ROUNDS / 2];
    agent_rate = agent_r[ROUNDS / 2];
    double node_cpu = node_c[ROUNDS / 2], agent_cpu = agent_c[ROUNDS / 2];

    /* 3. answer time at half the agent's rate */
    double half = agent_rate / 2;
    double period_us = 1e6 * BATCH / half;
    size_t max_req = (size_t)((double)latency_s * 1e6 / period_us) + 1;
    int64_t *lat = calloc(max_req, sizeof *lat);
    size_t nl = 0;
    CURL *c = client();
    int64_t start = gm_mono_us();
    while (nl < max_req) {
        int64_t due = start + (int64_t)((double)nl * period_us);
        int64_t now = gm_mono_us();
        if (due > now)
            usleep((useconds_t)(due - now));
        int64_t s0 = gm_mono_us();
        long code = post(c, pool[nl % POOL], pool_len[nl % POOL]);
        lat[nl++] = gm_mono_us() - s0;
        if (code != 200) {
            fprintf(stderr, "bench_agent: answer %ld during the latency run\n", code);
            return 1;
        }
    }
    curl_easy_cleanup(c);
    qsort(lat, nl, sizeof *lat, cmp_i64);
    gm_agent_close(a);

    /* baseline of the same run: 100 gm_node_record calls at the same pace (what the agent's
     * answer time has beneath it: the spool, its lock, the pump) */
    int64_t *base = calloc(max_req, sizeof *base);
    {
        char spool[320], err[512];
        snprintf(spool, sizeof spool, "%s/node-latency", dir);
        gm_node_config nc;
        gm_node_config_init(&nc);
        nc.brokers = brokers;
        nc.source = "bench/fra1/node-raw";
        nc.site = "fra1";
        nc.spool_dir = spool;
        gm_node *node;
        if (gm_node_open(&nc, &node, err, sizeof err)) {
            fprintf(stderr, "bench_agent: %s\n", err);
            return 1;
        }
        int64_t t1 = gm_mono_us();
        for (size_t i = 0; i < max_req; i++) {
            int64_t due = t1 + (int64_t)((double)i * period_us);
            int64_t now = gm_mono_us();
            if (due > now)
                usleep((useconds_t)(due - now));
            int64_t s0 = gm_mono_us();
            for (int k = 0; k < BATCH; k++) {
                gm_node_usage u = {.tenant = TENANTS[k % 5],
                                   .model = "llama-3.1-70b-instruct",
                                   .request_id = "req-0000000000000001",
                                   .input_tokens = k,
                                   .output_tokens = 7};
                if (gm_node_record(node, &u, NULL, err, sizeof err)) {
                    fprintf(stderr, "bench_agent: %s\n", err);
                    return 1;
                }
            }
            base[i] = gm_mono_us() - s0;
        }
        gm_node_close(node);
        qsort(base, max_req, sizeof *base, cmp_i64);
    }

    printf("\n%-52s %12s %10s\n", "", "events/s", "CPU s");
    printf("%-52s %12.0f %10.2f\n", "node client (gm_node_record, record to delivery)", node_rate,
           node_cpu);
    printf("%-52s %12.0f %10.2f\n", "agent, 100-event POSTs over the Unix socket", agent_rate,
           agent_cpu);
    printf("%-52s %12.0f\n", "  of which answered (before delivery ended)", answered_r[ROUNDS / 2]);
    printf("(medians of %d alternating rounds; CPU s: this process, the client threads "
           "included; per event: node %.2f us, agent %.2f us)\n",
           ROUNDS, node_cpu * 1e6 / (double)n, agent_cpu * 1e6 / (double)n);
    printf("agent / node client: %.2f (aim >= 0.5); aim >= 200000 events/s\n",
           agent_rate / node_rate);
    printf("answer time of a 100-event batch at %.0f events/s (half), %zu requests: p50 %.2f ms, "
           "p99 %.2f ms, max %.2f ms (aim p99 < 5 ms)\n",
           half, nl, (double)lat[nl / 2] / 1e3, (double)lat[(nl * 99) / 100] / 1e3,
           (double)lat[nl - 1] / 1e3);
    printf("baseline, 100 gm_node_record calls at the same pace: p50 %.2f ms, p99 %.2f ms, max "
           "%.2f ms\n",
           (double)base[max_req / 2] / 1e3, (double)base[(max_req * 99) / 100] / 1e3,
           (double)base[max_req - 1] / 1e3);
    free(base);
    free(lat);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
