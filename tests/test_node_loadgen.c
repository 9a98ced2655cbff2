/* Unit tests of the load generator's model: determinism, every valid event meets the contract
 * and every malformed one is refused by the strict decoder, duplicates are byte-identical
 * re-sends, and the manifest's totals are exact sums. No servers. */
#include "gm_node.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static gm_loadgen *make(uint64_t seed, uint32_t dup_ppm, uint32_t bad_ppm)
{
    gm_loadgen_config c;
    gm_loadgen_config_init(&c);
    c.seed = seed;
    c.sites = 3;
    c.nodes_per_site = 2;
    c.tenants = 4;
    c.models = 3;
    c.duplicate_ppm = dup_ppm;
    c.malformed_ppm = bad_ppm;
    c.start_us = INT64_C(1790000000) * GM_US_PER_SEC; /* 2026-09-21 */
    c.rate = 10;
    gm_loadgen *lg = NULL;
    char err[256];
    ck_assert_msg(gm_loadgen_new(&c, &lg, err, sizeof err) == 0, "%s", err);
    return lg;
}

/* Plays the node: gives each source its next seq and id. */
static void assign(uint64_t *seqs, gm_loadgen *lg, gm_event *ev)
{
    int i = 0;
    while (strcmp(gm_loadgen_source(lg, i), ev->source))
        i++;
    ev->seq = ++seqs[i];
    gm_node_event_id(ev->source, ev->seq, ev->id, sizeof ev->id);
}

START_TEST(test_same_seed_gives_the_same_stream)
{
    gm_loadgen *a = make(7, 50000, 50000), *b = make(7, 50000, 50000);
    uint64_t sa[6] = {0}, sb[6] = {0};
    for (int i = 0; i < 2000; i++) {
        gm_loadgen_item x, y;
        gm_loadgen_next(a, 0, &x);
        gm_loadgen_next(b, 0, &y);
        ck_assert_int_eq(x.kind, y.kind);
        ck_assert_uint_eq(x.raw_len, y.raw_len);
        if (x.raw_len)
            ck_assert(memcmp(x.raw, y.raw, x.raw_len) == 0);
        if (x.kind == GM_LOADGEN_VALID) {
            assign(sa, a, &x.ev);
            assign(sb, b, &y.ev);
            ck_assert(gm_event_equal(&x.ev, &y.ev));
            gm_loadgen_recorded(a, &x.ev);
            gm_loadgen_recorded(b, &y.ev);
        }
    }
    gm_loadgen_free(a);
    gm_loadgen_free(b);
}
END_TEST

START_TEST(test_valid_events_meet_the_contract_and_malformed_ones_are_refused)
{
    gm_loadgen *lg = make(3, 50000, 60000);
    uint64_t seqs[6] = {0}, kinds[GM_LOADGEN_BAD_KINDS] = {0}, valid = 0, dups = 0;
    gm_event *recorded = gm_xcalloc(20000, sizeof *recorded);
    for (int i = 0; i < 20000; i++) {
        gm_loadgen_item it;
        gm_loadgen_next(lg, 0, &it);
        char err[512], buf[GM_EVENT_MAX_BYTES + 1];
        gm_event back;
        if (it.kind == GM_LOADGEN_VALID) {
            assign(seqs, lg, &it.ev);
            ck_assert_msg(gm_event_check(&it.ev, err, sizeof err) == 0, "%s", err);
            size_t len = gm_event_encode(&it.ev, buf, sizeof buf);
            ck_assert_uint_gt(len, 0);
            ck_assert_int_eq(gm_event_decode(buf, len, &back, err, sizeof err), 0);
            ck_assert(gm_event_equal(&back, &it.ev));
            ck_assert_int_ge(it.ev.input_tokens + it.ev.cached_tokens, 1);
            ck_assert_int_ge(it.ev.output_tokens, 1);
            gm_loadgen_recorded(lg, &it.ev);
            recorded[valid++] = it.ev;
        } else if (it.kind == GM_LOADGEN_DUPLICATE) {
            ck_assert_int_eq(gm_event_decode(it.raw, it.raw_len, &back, err, sizeof err), 0);
            bool found = false;
            for (uint64_t k = 0; k < valid && !found; k++)
                found = gm_event_equal(&recorded[k], &back);
            ck_assert_msg(found, "duplicate %s#%s is not an earlier event", back.source, back.id);
            gm_loadgen_sent(lg, &it);
            dups++;
        } else {
            ck_assert_msg(gm_event_decode(it.raw, it.raw_len, &back, err, sizeof err) != 0,
                          "malformed (%s) was accepted: %.*s", gm_loadgen_bad_name(it.bad),
                          (int)(it.raw_len > 300 ? 300 : it.raw_len), it.raw);
            kinds[it.bad]++;
            gm_loadgen_sent(lg, &it);
        }
    }
    for (int k = 0; k < GM_LOADGEN_BAD_KINDS; k++)
        ck_assert_msg(kinds[k] > 50, "malformed kind %s: %llu", gm_loadgen_bad_name(k),
                      (unsigned long long)kinds[k]);
    ck_assert_uint_gt(dups, 500);
    free(recorded);
    gm_loadgen_free(lg);
}
END_TEST

static int64_t num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "manifest: %s is not a number", k);
    return (int64_t)v->valuedouble; /* exact: every total here is far below 2^53 */
}

START_TEST(test_manifest_totals_are_exact_sums_of_the_recorded_events)
{
    gm_loadgen *lg = make(11, 30000, 20000);
    uint64_t seqs[6] = {0};
    int64_t in = 0, cached = 0, out = 0, gpu = 0, acme_out = 0, n = 0;
    int64_t prompts[20000];
    int n_prompts = 0, cache_hits = 0;
    for (int i = 0; i < 20000; i++) {
        gm_loadgen_item it;
        gm_loadgen_next(lg, 0, &it);
        if (it.kind != GM_LOADGEN_VALID) {
            gm_loadgen_sent(lg, &it);
            continue;
        }
        assign(seqs, lg, &it.ev);
        gm_loadgen_recorded(lg, &it.ev);
        n++;
        in += it.ev.input_tokens;
        cached += it.ev.cached_tokens;
        out += it.ev.output_tokens;
        gpu += it.ev.gpu_us;
        if (!strcmp(it.ev.tenant, "acme"))
            acme_out += it.ev.output_tokens;
        prompts[n_prompts++] = it.ev.input_tokens + it.ev.cached_tokens;
        cache_hits += it.ev.cached_tokens > 0;
    }
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    char err[256];
    ck_assert_int_eq(gm_loadgen_manifest_write(lg, f, "\"run\": \"test\"", err, sizeof err), 0);
    fclose(f);
    cJSON *m = cJSON_Parse(text);
    ck_assert_msg(m != NULL, "manifest is not JSON:\n%s", text);
    ck_assert_int_eq(num(m, "valid_distinct"), n);
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(m, "totals");
    ck_assert_int_eq(num(tot, "events"), n);
    ck_assert_int_eq(num(tot, "input_tokens"), in);
    ck_assert_int_eq(num(tot, "cached_tokens"), cached);
    ck_assert_int_eq(num(tot, "output_tokens"), out);
    ck_assert_int_eq(num(tot, "gpu_us"), gpu);
    const cJSON *acme =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "by_tenant"), "acme");
    ck_assert_int_eq(num(acme, "output_tokens"), acme_out);
    /* every cut adds up to the totals */
    const char *cuts[] = {"by_tenant", "by_model", "by_site"};
    for (size_t c = 0; c < 3; c++) {
        int64_t sum = 0;
        const cJSON *o;
        cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(m, cuts[c])) sum += num(o, "gpu_us");
        ck_assert_int_eq(sum, gpu);
    }
    int64_t sum_in = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(m, "by_month_tenant_model_site"))
        sum_in += num(cJSON_GetObjectItemCaseSensitive(row, "totals"), "input_tokens");
    ck_assert_int_eq(sum_in, in);
    /* per-source seq ranges: 1..max with events == max */
    const cJSON *src;
    int64_t events = 0;
    cJSON_ArrayForEach(src, cJSON_GetObjectItemCaseSensitive(m, "sources"))
    {
        ck_assert_int_eq(num(src, "first_seq"), 1);
        ck_assert_int_eq(num(src, "max_seq"), num(src, "events"));
        events += num(src, "events");
    }
    ck_assert_int_eq(events, n);
    ck_assert_int_eq(num(m, "malformed_sent") + num(m, "duplicates_sent") + n, 20000);
    /* realistic shapes: long-tailed prompts, about half with cache hits */
    int above_5k = 0, below_600 = 0;
    for (int i = 0; i < n_prompts; i++) {
        above_5k += prompts[i] > 5000;
        below_600 += prompts[i] < 600;
    }
    ck_assert_int_gt(above_5k, n_prompts / 200); /* a real tail */
    ck_assert_int_gt(below_600, n_prompts * 4 / 10);
    ck_assert_int_gt(cache_hits, n_prompts * 4 / 10);
    ck_assert_int_lt(cache_hits, n_prompts * 7 / 10);
    cJSON_Delete(m);
    free(text);
    gm_loadgen_free(lg);
}
END_TEST

START_TEST(test_source_prefix_names_every_source_and_bad_prefixes_are_refused)
{
    gm_loadgen_config c;
    gm_loadgen_config_init(&c);
    c.sites = 20; /* site codes wrap around: "fra2" */
    c.nodes_per_site = 1000;
    c.malformed_ppm = 500000;
    c.start_us = INT64_C(1790000000) * GM_US_PER_SEC;
    c.source_prefix = "demo-20261231T235930Z-4242/run:1";
    gm_loadgen *lg = NULL;
    char err[256];
    ck_assert_msg(gm_loadgen_new(&c, &lg, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(gm_loadgen_source(lg, 0), "demo-20261231T235930Z-4242/run:1/fra1/node-001");
    ck_assert_str_eq(gm_loadgen_source(lg, 19999),
                     "demo-20261231T235930Z-4242/run:1/ams2/node-1000");
    for (int i = 0; i < 2000; i++) {
        gm_loadgen_item it;
        gm_loadgen_next(lg, 0, &it);
        ck_assert_msg(!strncmp(it.ev.source, c.source_prefix, strlen(c.source_prefix)) &&
                          it.ev.source[strlen(c.source_prefix)] == '/',
                      "%s", it.ev.source);
    }
    gm_loadgen_free(lg);

    /* NULL is the default, "edge" */
    c.source_prefix = NULL;
    ck_assert_msg(gm_loadgen_new(&c, &lg, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(gm_loadgen_source(lg, 0), "edge/fra1/node-001");
    gm_loadgen_free(lg);

    static const char *const bad[] = {"", "has space", "caf\xc3\xa9", "a\"b",
                                      "0123456789012345678901234567890123456789x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.source_prefix = bad[i];
        lg = NULL;
        ck_assert_msg(gm_loadgen_new(&c, &lg, err, sizeof err) == GM_EINVAL, "\"%s\" accepted",
                      bad[i]);
        ck_assert_ptr_null(lg);
        ck_assert_msg(strstr(err, "source prefix") != NULL, "%s", err);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("node_loadgen");
    TCase *tc = tcase_create("loadgen");
    tcase_add_test(tc, test_same_seed_gives_the_same_stream);
    tcase_add_test(tc, test_valid_events_meet_the_contract_and_malformed_ones_are_refused);
    tcase_add_test(tc, test_manifest_totals_are_exact_sums_of_the_recorded_events);
    tcase_add_test(tc, test_source_prefix_names_every_source_and_bad_prefixes_are_refused);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
