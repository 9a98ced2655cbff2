/* The load generator's model: what a fleet of edge inference nodes sends, deterministic from a
 * seed, and the exact totals of it that reconciliation compares against (the manifest).
 *
 * Quantities are sampled with floating point (lognormal prompt and output lengths, a cache-hit
 * share, GPU time from per-model prefill and decode costs) and rounded once to integers; from
 * there on everything is integer: the events carry integers, and the manifest's totals are
 * exact integer sums of exactly the events that were reported recorded.
 */
#include "gm_node.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HISTORY 1024

typedef struct totals {
    uint64_t events;
    int64_t input, cached, output, gpu_us;
} totals;

typedef struct lg_source {
    char name[64];
    int site;
    uint64_t first_seq, max_seq, events;
    int64_t epoch;    /* data.epoch of its recorded events (one node, one epoch) */
    uint64_t bad_seq; /* seq counter of its malformed twin source */
} lg_source;

typedef struct model_info {
    const char *name;
    int prefill_ns_per_token; /* GPU time per uncached prompt token */
    int decode_us_per_token;  /* GPU time per generated token */
} model_info;

static const model_info models_all[] = {
    {"llama-3.1-8b-instruct", 60, 9},       {"llama-3.1-70b-instruct", 400, 38},
    {"mistral-7b-instruct", 55, 8},         {"mixtral-8x7b-instruct", 180, 20},
    {"qwen2.5-32b-instruct", 220, 24},      {"gemma-2-27b-it", 200, 22},
    {"llama-3.1-405b-instruct", 1900, 150}, {"phi-3-mini-4k-instruct", 25, 5},
};
static const char *const site_codes[] = {"fra", "ams", "lon", "par", "mad", "waw",
                                         "nyc", "iad", "ord", "dfw", "sfo", "sea",
                                         "gru", "sin", "tyo", "syd", "bom", "jnb"};
static const char *const tenant_names[] = {"acme",  "globex", "initech", "umbrella",
                                           "hooli", "stark",  "wayne",   "wonka"};

/* Totals per (tenant, model, site, month): the finest cut, in a hash table. */
typedef struct cell {
    int tenant, model, site;
    int64_t month_us; /* 0: free slot */
    totals t;
} cell;

struct gm_loadgen {
    gm_loadgen_config cfg;
    cell *cells;
    size_t cells_cap, cells_n;
    uint64_t rng[4];
    uint64_t items;
    int n_sources;
    lg_source *sources;
    char (*sites)[GM_EVENT_SITE_MAX + 1];
    char (*tenants)[GM_EVENT_TENANT_MAX + 1];
    uint32_t *tenant_cum, *model_cum; /* cumulative Zipf weights, scaled to 2^32 */
    totals all, *by_tenant, *by_model, *by_site;
    gm_event *history;
    size_t hist_n;
    uint64_t duplicates, malformed[GM_LOADGEN_BAD_KINDS];
    int64_t time_min_us, time_max_us;
    char *raw;
    size_t raw_cap;
};

/* ---- random numbers: xoshiro256** seeded by splitmix64 ---------------------------------*/
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(gm_loadgen *lg)
{
    uint64_t *s = lg->rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static uint64_t below(gm_loadgen *lg, uint64_t n)
{
    return n ? (uint64_t)(((unsigned __int128)next_u64(lg) * n) >> 64) : 0;
}

static double unit(gm_loadgen *lg)
{
    return (double)(next_u64(lg) >> 11) * 0x1.0p-53;
}

static double normal(gm_loadgen *lg)
{
    double u1 = unit(lg), u2 = unit(lg);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A lognormal sample with the given median, rounded to an integer in [lo, hi]. */
static int64_t lognormal(gm_loadgen *lg, double median, double sigma, int64_t lo, int64_t hi)
{
    double v = median * exp(sigma * normal(lg));
    if (v < (double)lo)
        return lo;
    if (v > (double)hi)
        return hi;
    return (int64_t)llround(v);
}

static uint32_t *zipf_table(int n)
{
    uint32_t *cum = gm_xcalloc((size_t)n, sizeof *cum);
    double sum = 0, acc = 0;
    for (int i = 0; i < n; i++)
        sum += 1.0 / (i + 1);
    for (int i = 0; i < n; i++) {
        acc += 1.0 / (i + 1) / sum;
        cum[i] = i + 1 == n ? UINT32_MAX : (uint32_t)(acc * 4294967295.0);
    }
    return cum;
}

static int pick(gm_loadgen *lg, const uint32_t *cum, int n)
{
    uint32_t u = (uint32_t)(next_u64(lg) >> 32);
    for (int i = 0; i < n; i++)
        if (u <= cum[i])
            return i;
    return n - 1;
}

/* ---- lifecycle -------------------------------------------------------------------------*/
void gm_loadgen_config_init(gm_loadgen_config *c)
{
    memset(c, 0, sizeof *c);
    c->sites = 4;
    c->nodes_per_site = 2;
    c->tenants = 5;
    c->models = 3;
    c->seed = 1;
    c->rate = 1000;
}

int gm_loadgen_new(const gm_loadgen_config *cfg, gm_loadgen **out, char *err, size_t err_len)
{
    if (cfg->sites < 1 || cfg->sites > 100000)
        return gm_fail(err, err_len, GM_EINVAL, "loadgen: sites must be 1..100000, got %d",
                       cfg->sites);
    if (cfg->nodes_per_site < 1 || cfg->nodes_per_site > 1000)
        return gm_fail(err, err_len, GM_EINVAL, "loadgen: nodes per site must be 1..1000, got %d",
                       cfg->nodes_per_site);
    if ((int64_t)cfg->sites * cfg->nodes_per_site > 1000000)
        return gm_fail(err, err_len, GM_EINVAL, "loadgen: at most 1000000 nodes in all");
    if (cfg->tenants < 1 || cfg->tenants > 100000)
        return gm_fail(err, err_len, GM_EINVAL, "loadgen: tenants must be 1..100000, got %d",
                       cfg->tenants);
    if (cfg->models < 1 || cfg->models > (int)GM_ARRAY_LEN(models_all))
        return gm_fail(err, err_len, GM_EINVAL, "loadgen: models must be 1..%zu, got %d",
                       GM_ARRAY_LEN(models_all), cfg->models);
    if (cfg->duplicate_ppm + (uint64_t)cfg->malformed_ppm > 1000000)
        return gm_fail(err, err_len, GM_EINVAL,
                       "loadgen: duplicate and malformed shares add up to more than 1");
    if (cfg->rate < 1)
        return gm_fail(err, err_len, GM_EINVAL, "loadgen: rate must be at least 1 event/s");
    const char *prefix = cfg->source_prefix ? cfg->source_prefix : "edge";
    size_t prefix_len = strlen(prefix);
    if (prefix_len < 1 || prefix_len > GM_LOADGEN_PREFIX_MAX ||
        strspn(prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:/@+=~") !=
            prefix_len)
        return gm_fail(err, err_len, GM_EINVAL,
                       "loadgen: source prefix must be 1..%d characters of A-Z a-z 0-9 . _ - : / "
                       "@ + = ~, got \"%s\"",
                       GM_LOADGEN_PREFIX_MAX, prefix);
    gm_loadgen *lg = gm_xcalloc(1, sizeof *lg);
    lg->cfg = *cfg;
    uint64_t x = cfg->seed;
    for (int i = 0; i < 4; i++)
        lg->rng[i] = splitmix64(&x);
    lg->sites = gm_xcalloc((size_t)cfg->sites, sizeof *lg->sites);
    for (int s = 0; s < cfg->sites; s++)
        snprintf(lg->sites[s], sizeof lg->sites[s], "%s%d",
                 site_codes[s % GM_ARRAY_LEN(site_codes)], s / (int)GM_ARRAY_LEN(site_codes) + 1);
    lg->n_sources = cfg->sites * cfg->nodes_per_site;
    lg->sources = gm_xcalloc((size_t)lg->n_sources, sizeof *lg->sources);
    for (int i = 0; i < lg->n_sources; i++) {
        lg->sources[i].site = i / cfg->nodes_per_site;
        snprintf(lg->sources[i].name, sizeof lg->sources[i].name, "%s/%s/node-%03d", prefix,
                 lg->sites[lg->sources[i].site], i % cfg->nodes_per_site + 1);
    }
    lg->tenants = gm_xcalloc((size_t)cfg->tenants, sizeof *lg->tenants);
    for (int t = 0; t < cfg->tenants; t++) {
        if (t < (int)GM_ARRAY_LEN(tenant_names))
            snprintf(lg->tenants[t], sizeof lg->tenants[t], "%s", tenant_names[t]);
        else
            snprintf(lg->tenants[t], sizeof lg->tenants[t], "tenant-%05d", t + 1);
    }
    lg->tenant_cum = zipf_table(cfg->tenants);
    lg->model_cum = zipf_table(cfg->models);
    lg->by_tenant = gm_xcalloc((size_t)cfg->tenants, sizeof *lg->by_tenant);
    lg->by_model = gm_xcalloc((size_t)cfg->models, sizeof *lg->by_model);
    lg->by_site = gm_xcalloc((size_t)cfg->sites, sizeof *lg->by_site);
    lg->history = gm_xcalloc(HISTORY, sizeof *lg->history);
    lg->raw_cap = GM_EVENT_MAX_BYTES * 2;
    lg->raw = gm_xmalloc(lg->raw_cap);
    lg->time_min_us = INT64_MAX;
    lg->time_max_us = INT64_MIN;
    *out = lg;
    return 0;
}

void gm_loadgen_free(gm_loadgen *lg)
{
    if (!lg)
        return;
    free(lg->sources);
    free(lg->sites);
    free(lg->tenants);
    free(lg->tenant_cum);
    free(lg->model_cum);
    free(lg->by_tenant);
    free(lg->by_model);
    free(lg->by_site);
    free(lg->history);
    free(lg->raw);
    free(lg->cells);
    free(lg);
}

int gm_loadgen_sources(const gm_loadgen *lg)
{
    return lg->n_sources;
}

const char *gm_loadgen_source(const gm_loadgen *lg, int i)
{
    return i >= 0 && i < lg->n_sources ? lg->sources[i].name : NULL;
}

const char *gm_loadgen_bad_name(gm_loadgen_bad bad)
{
    static const char *const names[] = {"fractional_token", "negative_token", "missing_field",
                                        "bad_time",         "oversize",       "invalid_utf8"};
    return (unsigned)bad < GM_ARRAY_LEN(names) ? names[bad] : "unknown";
}

/* ---- generation ------------------------------------------------------------------------*/
static void make_valid(gm_loadgen *lg, int64_t time_us, int src_i, gm_event *ev)
{
    const lg_source *src = &lg->sources[src_i];
    int t = pick(lg, lg->tenant_cum, lg->cfg.tenants);
    int m = pick(lg, lg->model_cum, lg->cfg.models);
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "%s", src->name);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", lg->tenants[t]);
    snprintf(ev->site, sizeof ev->site, "%s", lg->sites[src->site]);
    snprintf(ev->model, sizeof ev->model, "%s", models_all[m].name);
    snprintf(ev->request_id, sizeof ev->request_id, "req-%016" PRIx64, next_u64(lg));
    ev->time_us = time_us;
    /* Prompts: long-tailed (median 600 tokens, p99 around 8k, capped at 128k). About 55% hit
     * the prompt cache for 30-95% of the prompt. Outputs: median 180, capped at 16k. */
    int64_t prompt = lognormal(lg, 600, 1.1, 1, 131072);
    int64_t cached = 0;
    if (unit(lg) < 0.55)
        cached = (int64_t)((double)prompt * (0.30 + 0.65 * unit(lg)));
    ev->cached_tokens = cached;
    ev->input_tokens = prompt - cached;
    ev->output_tokens = lognormal(lg, 180, 0.9, 1, 16384);
    const model_info *mi = &models_all[m];
    double gpu = (double)ev->input_tokens * mi->prefill_ns_per_token / 1000.0 +
                 (double)cached * mi->prefill_ns_per_token / 10000.0 +
                 (double)ev->output_tokens * mi->decode_us_per_token;
    ev->gpu_us = (int64_t)llround(gpu * (0.8 + 0.4 * unit(lg))) + 300;
}

static int64_t item_time(gm_loadgen *lg, int64_t now_us)
{
    if (!lg->cfg.start_us)
        return now_us;
    return lg->cfg.start_us +
           (int64_t)((unsigned __int128)lg->items * GM_US_PER_SEC / lg->cfg.rate);
}

/* raw = base with [from, to) replaced by ins. */
static void splice(gm_loadgen *lg, const char *base, size_t base_len, size_t from, size_t to,
                   const char *ins, size_t ins_len)
{
    size_t need = base_len - (to - from) + ins_len + 1;
    if (need > lg->raw_cap) {
        lg->raw_cap = need * 2;
        lg->raw = gm_xrealloc(lg->raw, lg->raw_cap);
    }
    memcpy(lg->raw, base, from);
    memcpy(lg->raw + from, ins, ins_len);
    memcpy(lg->raw + from + ins_len, base + to, base_len - to);
    lg->raw[need - 1] = '\0';
}

/* The span of the value of "key": a number, or a string without its quotes. */
static bool value_span(const char *base, const char *key, size_t *from, size_t *to)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(base, pat);
    if (!p)
        return false;
    p += strlen(pat);
    if (*p == '"') {
        const char *e = strchr(p + 1, '"');
        *from = (size_t)(p + 1 - base);
        *to = (size_t)(e - base);
    } else {
        const char *e = p;
        while (*e && *e != ',' && *e != '}')
            e++;
        *from = (size_t)(p - base);
        *to = (size_t)(e - base);
    }
    return true;
}

static void make_malformed(gm_loadgen *lg, int64_t time_us, int src_i, gm_loadgen_item *it)
{
    lg_source *src = &lg->sources[src_i];
    make_valid(lg, time_us, src_i, &it->ev);
    /* source names are short ("edge/fra1/node-001", a prefix of at most 40); the suffix fits */
    size_t nl = strlen(src->name);
    memcpy(it->ev.source, src->name, nl);
    memcpy(it->ev.source + nl, "/malformed", sizeof "/malformed");
    it->ev.seq = ++src->bad_seq;
    gm_node_event_id(it->ev.source, it->ev.seq, it->ev.id, sizeof it->ev.id);
    char base[GM_EVENT_MAX_BYTES + 1];
    size_t len = gm_event_encode(&it->ev, base, sizeof base);
    it->bad = (gm_loadgen_bad)below(lg, GM_LOADGEN_BAD_KINDS);
    size_t from = 0, to = 0;
    char ins[64];
    switch (it->bad) {
    case GM_LOADGEN_BAD_FRACTION:
        value_span(base, "output_tokens", &from, &to);
        snprintf(ins, sizeof ins, "%" PRId64 ".5", it->ev.output_tokens);
        splice(lg, base, len, from, to, ins, strlen(ins));
        break;
    case GM_LOADGEN_BAD_NEGATIVE:
        value_span(base, "input_tokens", &from, &to);
        snprintf(ins, sizeof ins, "-%" PRId64, it->ev.input_tokens + 1);
        splice(lg, base, len, from, to, ins, strlen(ins));
        break;
    case GM_LOADGEN_BAD_MISSING:
        value_span(base, "model", &from, &to);
        /* from the comma before "model": to the closing quote */
        splice(lg, base, len, from - strlen(",\"model\":\""), to + 1, "", 0);
        break;
    case GM_LOADGEN_BAD_TIME:
        value_span(base, "time", &from, &to);
        splice(lg, base, len, from, to, "2026-13-01T00:00:00Z", 20);
        break;
    case GM_LOADGEN_BAD_OVERSIZE: {
        value_span(base, "request_id", &from, &to);
        size_t pad = GM_EVENT_MAX_BYTES + 64;
        char *x = gm_xmalloc(pad);
        memset(x, 'x', pad);
        splice(lg, base, len, from, to, x, pad);
        free(x);
        break;
    }
    case GM_LOADGEN_BAD_UTF8:
    default:
        value_span(base, "request_id", &from, &to);
        splice(lg, base, len, from, to, "req-\xff\xfe\xc0\x80", 8);
        break;
    }
    it->raw = lg->raw;
    it->raw_len = strlen(lg->raw);
}

void gm_loadgen_next(gm_loadgen *lg, int64_t now_us, gm_loadgen_item *it)
{
    int64_t t = item_time(lg, now_us);
    lg->items++;
    uint64_t u = below(lg, 1000000);
    int src_i = (int)below(lg, (uint64_t)lg->n_sources);
    it->raw = NULL;
    it->raw_len = 0;
    it->bad = GM_LOADGEN_BAD_KINDS;
    if (u < lg->cfg.malformed_ppm) {
        it->kind = GM_LOADGEN_MALFORMED;
        make_malformed(lg, t, src_i, it);
    } else if (u < (uint64_t)lg->cfg.malformed_ppm + lg->cfg.duplicate_ppm && lg->hist_n) {
        it->kind = GM_LOADGEN_DUPLICATE;
        size_t n = lg->hist_n < HISTORY ? lg->hist_n : HISTORY;
        it->ev = lg->history[below(lg, n)];
        if (lg->raw_cap < GM_EVENT_MAX_BYTES + 1) {
            lg->raw_cap = GM_EVENT_MAX_BYTES * 2;
            lg->raw = gm_xrealloc(lg->raw, lg->raw_cap);
        }
        it->raw_len = gm_event_encode(&it->ev, lg->raw, lg->raw_cap);
        it->raw = lg->raw;
    } else {
        it->kind = GM_LOADGEN_VALID;
        make_valid(lg, t, src_i, &it->ev);
    }
}

static void add(totals *t, const gm_event *ev)
{
    t->events++;
    t->input += ev->input_tokens;
    t->cached += ev->cached_tokens;
    t->output += ev->output_tokens;
    t->gpu_us += ev->gpu_us;
}

static int index_of(const char *name, const void *arr, size_t stride, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(name, (const char *)arr + (size_t)i * stride))
            return i;
    return -1;
}

static cell *cell_get(gm_loadgen *lg, int t, int m, int s, int64_t month)
{
    if ((lg->cells_n + 1) * 2 > lg->cells_cap) {
        size_t ncap = lg->cells_cap ? lg->cells_cap * 2 : 1024;
        cell *nc = gm_xcalloc(ncap, sizeof *nc);
        for (size_t i = 0; i < lg->cells_cap; i++) {
            cell *c = &lg->cells[i];
            if (!c->month_us)
                continue;
            uint64_t h = ((uint64_t)c->tenant * 1000003u + (uint64_t)c->model * 7919u +
                          (uint64_t)c->site * 104729u + (uint64_t)c->month_us) *
                         0x9E3779B97F4A7C15ull;
            size_t j = (size_t)(h >> 20) & (ncap - 1);
            while (nc[j].month_us)
                j = (j + 1) & (ncap - 1);
            nc[j] = *c;
        }
        free(lg->cells);
        lg->cells = nc;
        lg->cells_cap = ncap;
    }
    uint64_t h =
        ((uint64_t)t * 1000003u + (uint64_t)m * 7919u + (uint64_t)s * 104729u + (uint64_t)month) *
        0x9E3779B97F4A7C15ull;
    size_t j = (size_t)(h >> 20) & (lg->cells_cap - 1);
    while (lg->cells[j].month_us) {
        cell *c = &lg->cells[j];
        if (c->tenant == t && c->model == m && c->site == s && c->month_us == month)
            return c;
        j = (j + 1) & (lg->cells_cap - 1);
    }
    cell *c = &lg->cells[j];
    c->tenant = t;
    c->model = m;
    c->site = s;
    c->month_us = month;
    lg->cells_n++;
    return c;
}

static int cmp_cell(const void *a, const void *b)
{
    const cell *x = a, *y = b;
    if (x->month_us != y->month_us)
        return x->month_us < y->month_us ? -1 : 1;
    if (x->tenant != y->tenant)
        return x->tenant - y->tenant;
    if (x->model != y->model)
        return x->model - y->model;
    return x->site - y->site;
}

void gm_loadgen_recorded(gm_loadgen *lg, const gm_event *ev)
{
    add(&lg->all, ev);
    int t = index_of(ev->tenant, lg->tenants, sizeof *lg->tenants, lg->cfg.tenants);
    if (t >= 0)
        add(&lg->by_tenant[t], ev);
    for (int m = 0; m < lg->cfg.models; m++)
        if (!strcmp(ev->model, models_all[m].name))
            add(&lg->by_model[m], ev);
    int s = index_of(ev->site, lg->sites, sizeof *lg->sites, lg->cfg.sites);
    if (s >= 0)
        add(&lg->by_site[s], ev);
    int m_i = -1;
    for (int m = 0; m < lg->cfg.models && m_i < 0; m++)
        if (!strcmp(ev->model, models_all[m].name))
            m_i = m;
    /* month_us of 1970-01 is 0, the free-slot mark: shift every month by one microsecond */
    if (t >= 0 && m_i >= 0 && s >= 0)
        add(&cell_get(lg, t, m_i, s, gm_month_start(ev->time_us) + 1)->t, ev);
    for (int i = s >= 0 ? s * lg->cfg.nodes_per_site : 0; i < lg->n_sources; i++) {
        lg_source *so = &lg->sources[i];
        if (strcmp(so->name, ev->source))
            continue;
        if (!so->first_seq || ev->seq < so->first_seq)
            so->first_seq = ev->seq;
        if (ev->seq > so->max_seq)
            so->max_seq = ev->seq;
        so->epoch = ev->epoch;
        so->events++;
        break;
    }
    if (ev->time_us < lg->time_min_us)
        lg->time_min_us = ev->time_us;
    if (ev->time_us > lg->time_max_us)
        lg->time_max_us = ev->time_us;
    lg->history[lg->hist_n++ % HISTORY] = *ev;
}

void gm_loadgen_sent(gm_loadgen *lg, const gm_loadgen_item *it)
{
    if (it->kind == GM_LOADGEN_DUPLICATE)
        lg->duplicates++;
    else if (it->kind == GM_LOADGEN_MALFORMED && it->bad < GM_LOADGEN_BAD_KINDS)
        lg->malformed[it->bad]++;
}

/* ---- manifest --------------------------------------------------------------------------*/
static void put_totals(FILE *f, const totals *t)
{
    fprintf(f,
            "{\"events\":%" PRIu64 ",\"input_tokens\":%" PRId64 ",\"cached_tokens\":%" PRId64
            ",\"output_tokens\":%" PRId64 ",\"gpu_us\":%" PRId64 "}",
            t->events, t->input, t->cached, t->output, t->gpu_us);
}

int gm_loadgen_manifest_write(const gm_loadgen *lg, FILE *f, const char *extra_json, char *err,
                              size_t err_len)
{
    char t0[40] = "", t1[40] = "";
    if (lg->all.events) {
        gm_time_format(lg->time_min_us, t0, sizeof t0);
        gm_time_format(lg->time_max_us, t1, sizeof t1);
    }
    uint64_t malformed = 0;
    for (int k = 0; k < GM_LOADGEN_BAD_KINDS; k++)
        malformed += lg->malformed[k];
    fprintf(f, "{\n  \"manifest\": \"gridmeter.loadgen.v1\",\n  \"seed\": %" PRIu64 ",\n",
            lg->cfg.seed);
    if (extra_json && *extra_json)
        fprintf(f, "  %s,\n", extra_json);
    fprintf(f,
            "  \"valid_distinct\": %" PRIu64 ",\n  \"duplicates_sent\": %" PRIu64
            ",\n  \"malformed_sent\": %" PRIu64 ",\n",
            lg->all.events, lg->duplicates, malformed);
    fprintf(f, "  \"malformed_by_kind\": {");
    for (int k = 0; k < GM_LOADGEN_BAD_KINDS; k++)
        fprintf(f, "%s\"%s\": %" PRIu64, k ? ", " : "", gm_loadgen_bad_name((gm_loadgen_bad)k),
                lg->malformed[k]);
    fprintf(f, "},\n  \"time_first\": %s%s%s,\n  \"time_last\": %s%s%s,\n  \"totals\": ",
            *t0 ? "\"" : "", *t0 ? t0 : "null", *t0 ? "\"" : "", *t1 ? "\"" : "", *t1 ? t1 : "null",
            *t1 ? "\"" : "");
    put_totals(f, &lg->all);
    fprintf(f, ",\n  \"by_tenant\": {");
    for (int i = 0, n = 0; i < lg->cfg.tenants; i++) {
        if (!lg->by_tenant[i].events)
            continue;
        fprintf(f, "%s\n    \"%s\": ", n++ ? "," : "", lg->tenants[i]);
        put_totals(f, &lg->by_tenant[i]);
    }
    fprintf(f, "\n  },\n  \"by_model\": {");
    for (int i = 0, n = 0; i < lg->cfg.models; i++) {
        if (!lg->by_model[i].events)
            continue;
        fprintf(f, "%s\n    \"%s\": ", n++ ? "," : "", models_all[i].name);
        put_totals(f, &lg->by_model[i]);
    }
    fprintf(f, "\n  },\n  \"by_site\": {");
    for (int i = 0, n = 0; i < lg->cfg.sites; i++) {
        if (!lg->by_site[i].events)
            continue;
        fprintf(f, "%s\n    \"%s\": ", n++ ? "," : "", lg->sites[i]);
        put_totals(f, &lg->by_site[i]);
    }
    fprintf(f, "\n  },\n  \"by_month_tenant_model_site\": [");
    cell *cs = gm_xcalloc(lg->cells_n + 1, sizeof *cs);
    size_t nc = 0;
    for (size_t i = 0; i < lg->cells_cap; i++)
        if (lg->cells[i].month_us)
            cs[nc++] = lg->cells[i];
    qsort(cs, nc, sizeof *cs, cmp_cell);
    for (size_t i = 0; i < nc; i++) {
        char month[40];
        gm_time_format(cs[i].month_us - 1, month, sizeof month);
        month[7] = '\0';
        fprintf(f,
                "%s\n    {\"month\": \"%s\", \"tenant\": \"%s\", \"model\": \"%s\", \"site\": "
                "\"%s\", \"totals\": ",
                i ? "," : "", month, lg->tenants[cs[i].tenant], models_all[cs[i].model].name,
                lg->sites[cs[i].site]);
        put_totals(f, &cs[i].t);
        fprintf(f, "}");
    }
    free(cs);
    fprintf(f, "\n  ],\n  \"sources\": {");
    for (int i = 0, n = 0; i < lg->n_sources; i++) {
        const lg_source *so = &lg->sources[i];
        if (!so->events)
            continue;
        fprintf(f,
                "%s\n    \"%s\": {\"events\": %" PRIu64 ", \"first_seq\": %" PRIu64
                ", \"max_seq\": %" PRIu64 ", \"epoch\": %" PRId64 "}",
                n++ ? "," : "", so->name, so->events, so->first_seq, so->max_seq, so->epoch);
    }
    fprintf(f, "\n  }\n}\n");
    if (fflush(f) || ferror(f))
        return gm_fail(err, err_len, GM_EIO, "loadgen: cannot write the manifest");
    return 0;
}
