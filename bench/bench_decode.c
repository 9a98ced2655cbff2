/* Decoder throughput: events/s on one core for gm_event_decode, against baselines measured
 * in the same run over the same messages: cJSON_Parse+cJSON_Delete (a tree, no validation,
 * numbers as doubles) and memchr over every byte (the floor: touching the bytes once).
 *
 * usage: bench_decode [seconds per measurement, default 2] [distinct messages, default 10000]
 *                     [decode-only: any third argument measures gm_event_decode alone, for
 *                      profiling]
 */
#include "gm_ingest.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char **msg;
    size_t *len;
    size_t n, bytes;
} corpus;

static uint64_t rng = 0x1234567;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Realistic events: 90% usage (long-tailed prompt lengths, cache hits), 10% gpu windows. */
static void build(corpus *c, size_t n)
{
    c->msg = gm_xcalloc(n, sizeof *c->msg);
    c->len = gm_xcalloc(n, sizeof *c->len);
    c->n = n;
    c->bytes = 0;
    static const char *models[] = {"llama-3.1-70b-instruct", "llama-3.1-8b-instruct",
                                   "mistral-large-2", "qwen2.5-72b-instruct"};
    for (size_t i = 0; i < n; i++) {
        gm_event ev;
        memset(&ev, 0, sizeof ev);
        unsigned site = (unsigned)(rnd() % 4400), node = (unsigned)(rnd() % 32);
        snprintf(ev.source, sizeof ev.source, "edge/s%04u/node-%03u", site, node);
        snprintf(ev.id, sizeof ev.id, "node-%03u-%012zu", node, i + 1);
        snprintf(ev.tenant, sizeof ev.tenant, "tenant-%03u", (unsigned)(rnd() % 500));
        ev.time_us = INT64_C(1795816800000000) + (int64_t)(rnd() % 3600000000u);
        ev.seq = i + 1;
        snprintf(ev.site, sizeof ev.site, "s%04u", site);
        if (rnd() % 10) {
            ev.type = GM_EVENT_USAGE;
            snprintf(ev.model, sizeof ev.model, "%s", models[rnd() % 4]);
            snprintf(ev.request_id, sizeof ev.request_id, "req_%016" PRIx64, rnd());
            int64_t prompt = (int64_t)(1 << (rnd() % 15)) + (int64_t)(rnd() % 512);
            ev.cached_tokens = rnd() % 3 ? 0 : prompt / 2;
            ev.input_tokens = prompt - ev.cached_tokens;
            ev.output_tokens = (int64_t)(rnd() % 2048);
            ev.gpu_us = (int64_t)(rnd() % 2000000);
        } else {
            ev.type = GM_EVENT_GPU;
            snprintf(ev.device, sizeof ev.device, "GPU-%08" PRIx64, rnd() & 0xffffffff);
            ev.window_start_us = ev.time_us - 10000000;
            ev.window_end_us = ev.time_us;
            ev.gpu_us = (int64_t)(rnd() % 10000000);
            snprintf(ev.policy, sizeof ev.policy, "proportional");
            ev.kernels = (int64_t)(rnd() % 100000);
            ev.unattributed_us = (int64_t)(rnd() % 100000);
        }
        char buf[GM_EVENT_MAX_BYTES + 1];
        size_t len = gm_event_encode(&ev, buf, sizeof buf);
        if (!len) {
            fprintf(stderr, "bench_decode: could not encode event %zu\n", i);
            exit(1);
        }
        c->msg[i] = gm_xmalloc(len + 1);
        memcpy(c->msg[i], buf, len + 1);
        c->len[i] = len;
        c->bytes += len;
    }
}

typedef size_t (*method)(const corpus *c, size_t i);

static size_t m_decode(const corpus *c, size_t i)
{
    gm_event ev;
    if (gm_event_decode(c->msg[i], c->len[i], &ev, NULL, 0)) {
        fprintf(stderr, "bench_decode: message %zu refused\n", i);
        exit(1);
    }
    return (size_t)ev.output_tokens;
}

static size_t m_cjson(const corpus *c, size_t i)
{
    cJSON *j = cJSON_ParseWithLength(c->msg[i], c->len[i]);
    if (!j)
        exit(1);
    size_t r = (size_t)j->type;
    cJSON_Delete(j);
    return r;
}

static size_t m_cjson_fields(const corpus *c, size_t i)
{
    /* cJSON plus reading the fields a rater needs (what a cJSON-based decoder would do at
     * the least, still without the contract's checks). */
    cJSON *j = cJSON_ParseWithLength(c->msg[i], c->len[i]);
    if (!j)
        exit(1);
    size_t r = 0;
    static const char *top[] = {"specversion", "type", "source", "id", "time", "subject"};
    for (size_t k = 0; k < GM_ARRAY_LEN(top); k++)
        r += cJSON_GetObjectItemCaseSensitive(j, top[k]) != NULL;
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    for (cJSON *f = data ? data->child : NULL; f; f = f->next)
        r += (size_t)f->valuedouble;
    cJSON_Delete(j);
    return r;
}

static size_t m_memchr(const corpus *c, size_t i)
{
    return memchr(c->msg[i], '\x01', c->len[i]) != NULL;
}

static volatile size_t sink;

/* Runs `m` over the corpus, round after round, for about `seconds`; returns events/s. */
static double measure(const char *name, method m, const corpus *c, double seconds, double base_rate)
{
    size_t events = 0, acc = 0;
    int64_t t0 = gm_mono_us(), limit_us = (int64_t)(seconds * 1e6), t;
    do {
        for (size_t i = 0; i < c->n; i++)
            acc += m(c, i);
        events += c->n;
        t = gm_mono_us();
    } while (t - t0 < limit_us);
    sink = acc;
    double s = (double)(t - t0) / 1e6;
    double rate = (double)events / s;
    double mbs = (double)c->bytes * ((double)events / (double)c->n) / s / 1e6;
    printf("%-34s %12.0f events/s  %8.1f ns/event  %8.1f MB/s", name, rate, 1e9 / rate, mbs);
    if (base_rate > 0)
        printf("  %5.2fx gm_event_decode", rate / base_rate);
    printf("\n");
    fflush(stdout);
    return rate;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    size_t n = argc > 2 ? (size_t)atol(argv[2]) : 10000;
    if (seconds <= 0 || n == 0) {
        fprintf(stderr, "usage: bench_decode [seconds per measurement] [distinct messages]\n");
        return 2;
    }
    corpus c;
    build(&c, n);
    printf("bench_decode: %zu distinct events (90%% usage.v1, 10%% gpu.v1), %.0f bytes on "
           "average, %.1f s per measurement, one thread\n",
           c.n, (double)c.bytes / (double)c.n, seconds);
    double dec = measure("gm_event_decode (strict, full)", m_decode, &c, seconds, 0);
    if (argc > 3)
        return 0;
    measure("cJSON_Parse + cJSON_Delete", m_cjson, &c, seconds, dec);
    measure("cJSON_Parse + field reads", m_cjson_fields, &c, seconds, dec);
    measure("memchr over the bytes (floor)", m_memchr, &c, seconds, dec);
    for (size_t i = 0; i < c.n; i++)
        free(c.msg[i]);
    free(c.msg);
    free(c.len);
    return 0;
}
