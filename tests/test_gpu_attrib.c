/* gpu_accounting attribution rules: hand-computed overlap cases, windows, devices, copy engine,
 * steps, late tags, and properties (sums exact, order and chunking independence, the sweep
 * against a brute-force reference). */
#include "gpu_internal.h"
#include "support.h"
#include "test_gpu_util.h"

#include <stdlib.h>
#include <string.h>

#define KER GM_GPU_RES_KERNEL
#define CPY GM_GPU_RES_COPY

static gm_gpu_attr *new_attr(uint64_t window_ns)
{
    gm_gpu_attr_conf conf = {.window_ns = window_ns};
    gm_gpu_attr *a = NULL;
    char err[256];
    ck_assert_int_eq(gm_gpu_attr_new(&conf, &a, err, sizeof err), 0);
    return a;
}

static void tenant(gm_gpu_attr *a, uint64_t tag, const char *name)
{
    char err[256];
    ck_assert_msg(gm_gpu_attr_define_tenant(a, tag, name, err, sizeof err) == 0, "%s", err);
}

static void rec(gm_gpu_attr *a, uint32_t dev, uint8_t res, uint64_t s, uint64_t e, uint32_t corr)
{
    gm_gpu_record r = {
        .start_ns = s, .end_ns = e, .device = dev, .correlation_id = corr, .resource = res};
    gm_gpu_attr_add_records(a, &r, 1);
}

static void run(gm_gpu_attr *a, gm_gpu_result *res)
{
    char err[256];
    ck_assert_msg(gm_gpu_attr_run(a, res, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_gpu_result_check(res, err, sizeof err) == 0, "%s", err);
}

/* ns of `tenant` in (device, resource, window_start); -1 when there is no row */
static int64_t ns_of(const gm_gpu_result *r, uint32_t dev, uint8_t res, int64_t ws,
                     const char *tenant_name)
{
    for (size_t i = 0; i < r->n_rows; i++) {
        const gm_gpu_row *x = &r->rows[i];
        if (x->device == dev && x->resource == res && x->window_start_ns == ws &&
            strcmp(x->tenant, tenant_name) == 0)
            return x->gpu_ns;
    }
    return -1;
}

static const gm_gpu_window *win_of(const gm_gpu_result *r, uint32_t dev, uint8_t res, int64_t ws)
{
    for (size_t i = 0; i < r->n_windows; i++) {
        const gm_gpu_window *w = &r->windows[i];
        if (w->device == dev && w->resource == res && w->window_start_ns == ws)
            return w;
    }
    return NULL;
}

START_TEST(test_single_kernel_gets_its_whole_duration)
{
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "acme");
    rec(a, 0, KER, 100, 400, 7);
    gm_gpu_attr_add_tag(a, 7, GM_GPU_TAG_TENANT, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_uint_eq(r.n_rows, 1);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "acme"), 300);
    ck_assert_int_eq(r.windows[0].busy_ns, 300);
    ck_assert_int_eq(r.windows[0].unattributed_ns, 0);
    ck_assert_int_eq(r.rows[0].kernels, 1);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_two_overlapping_kernels_split_the_overlap_equally)
{
    /* [0,50) A alone, [50,100) A and B: 25 each, [100,150) B alone */
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "a");
    tenant(a, 2, "b");
    rec(a, 0, KER, 0, 100, 1);
    rec(a, 0, KER, 50, 150, 2);
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_attr_add_tag(a, 2, GM_GPU_TAG_TENANT, 2);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 75);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "b"), 75);
    ck_assert_int_eq(r.windows[0].busy_ns, 150);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_interval_remainder_goes_to_the_pool_and_the_pool_by_largest_remainder)
{
    /* 10 ns, 3 kernels: 3 each, 1 ns pool; weights 3:3:3 tie, first tenant by name wins */
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 3, "c");
    tenant(a, 1, "a");
    tenant(a, 2, "b");
    for (uint32_t i = 1; i <= 3; i++) {
        rec(a, 0, KER, 0, 10, i);
        gm_gpu_attr_add_tag(a, i, GM_GPU_TAG_TENANT, i);
    }
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 4);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "b"), 3);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "c"), 3);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

/* The worked example of docs/gpu-accounting.md, number for number. */
static void worked_example(gm_gpu_attr *a, int reverse)
{
    char err[256];
    gm_gpu_step_request step7[] = {{"acme", "req-1", 30, 0}, {"initech", "req-2", 0, 10}};
    if (!reverse) {
        tenant(a, 1, "acme");
        tenant(a, 2, "globex");
        ck_assert(gm_gpu_attr_add_step(a, 7, step7, 2, err, sizeof err) == 0);
    }
    gm_gpu_record k[] = {
        {0, 700, 0, 101, KER},     /* K1 acme */
        {200, 500, 0, 102, KER},   /* K2 globex */
        {400, 1300, 0, 103, KER},  /* K3 step 7 */
        {1100, 1250, 0, 104, KER}, /* K4 no tag */
    };
    if (reverse) {
        for (int i = 3; i >= 0; i--)
            gm_gpu_attr_add_records(a, &k[i], 1);
    } else {
        gm_gpu_attr_add_records(a, k, 4);
    }
    gm_gpu_attr_add_tag(a, 103, GM_GPU_TAG_STEP, 7);
    gm_gpu_attr_add_tag(a, 101, GM_GPU_TAG_TENANT, 1);
    gm_gpu_attr_add_tag(a, 102, GM_GPU_TAG_TENANT, 2);
    if (reverse) {
        ck_assert(gm_gpu_attr_add_step(a, 7, step7, 2, err, sizeof err) == 0);
        tenant(a, 2, "globex");
        tenant(a, 1, "acme");
    }
}

static void check_worked_example(const gm_gpu_result *r)
{
    /* window [0,1000): acme 434 + 325, globex 133, initech 108 */
    ck_assert_int_eq(ns_of(r, 0, KER, 0, "acme"), 759);
    ck_assert_int_eq(ns_of(r, 0, KER, 0, "globex"), 133);
    ck_assert_int_eq(ns_of(r, 0, KER, 0, "initech"), 108);
    const gm_gpu_window *w0 = win_of(r, 0, KER, 0);
    ck_assert_ptr_nonnull(w0);
    ck_assert_int_eq(w0->busy_ns, 1000);
    ck_assert_int_eq(w0->unattributed_ns, 0);
    /* window [1000,2000): step 7 gets 225 (acme 169, initech 56), K4 75 unattributed */
    ck_assert_int_eq(ns_of(r, 0, KER, 1000, "acme"), 169);
    ck_assert_int_eq(ns_of(r, 0, KER, 1000, "initech"), 56);
    ck_assert_int_eq(ns_of(r, 0, KER, 1000, "globex"), -1);
    const gm_gpu_window *w1 = win_of(r, 0, KER, 1000);
    ck_assert_ptr_nonnull(w1);
    ck_assert_int_eq(w1->busy_ns, 300);
    ck_assert_int_eq(w1->unattributed_ns, 75);
    ck_assert_int_eq(w1->unattributed_records, 1);
    ck_assert_int_eq(r->counts.untagged, 1);
    /* per request: req-1 325 + 169, req-2 108 + 56 */
    ck_assert_uint_eq(r->n_requests, 2);
    ck_assert_str_eq(r->requests[0].request_id, "req-1");
    ck_assert_int_eq(r->requests[0].gpu_ns, 494);
    ck_assert_str_eq(r->requests[1].request_id, "req-2");
    ck_assert_int_eq(r->requests[1].gpu_ns, 164);
}

START_TEST(test_worked_example_of_the_doc)
{
    gm_gpu_attr *a = new_attr(1000);
    worked_example(a, 0);
    gm_gpu_result r;
    run(a, &r);
    check_worked_example(&r);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_tags_and_manifests_arriving_after_their_records_still_join)
{
    gm_gpu_attr *a = new_attr(1000);
    worked_example(a, 1);
    gm_gpu_result r;
    run(a, &r);
    check_worked_example(&r);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_archive_of_the_worked_example_gives_the_doc_numbers)
{
    gm_gpu_attr *a = new_attr(1000);
    char err[512];
    FILE *f = fopen(GM_SOURCE_DIR "/gpu_accounting/example-archive.txt", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_msg(gm_gpu_archive_load(a, f, "example-archive.txt", err, sizeof err) == 0, "%s",
                  err);
    fclose(f);
    gm_gpu_result r;
    run(a, &r);
    check_worked_example(&r);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_archive_errors_name_the_line_and_the_rule)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"kernel 0 10 20\n", ":1: kernel: expected"},
        {"# c\n\nkernel 0 10 x 1\n", ":3: kernel"},
        {"kernel 4294967296 1 2 3\n", "kernel"},
        {"tag owner 1 2\n", "tag: expected"},
        {"tenant 1 -bad\n", "tenant: must start"},
        {"step 1 acme:r1:5\n", "step 1: request 0"},
        {"step 1\n", "step: expected"},
        {"frobnicate 1\n", "unknown item \"frobnicate\""},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(cases); i++) {
        gm_gpu_attr *a = new_attr(1000);
        FILE *f = fmemopen((void *)cases[i].text, strlen(cases[i].text), "r");
        char err[512] = "";
        ck_assert_int_eq(gm_gpu_archive_load(a, f, "t.txt", err, sizeof err), GM_EINVAL);
        ck_assert_msg(strstr(err, cases[i].want) != NULL, "case %zu: %s", i, err);
        fclose(f);
        gm_gpu_attr_free(a);
    }
    /* a step line with 63 requests is refused, not cut short */
    char line[4096] = "step 9";
    for (int i = 0; i < 63; i++)
        strcat(line, " a:-:1:1");
    gm_gpu_attr *a = new_attr(1000);
    char err[512];
    ck_assert_int_eq(gm_gpu_archive_line(a, line, err, sizeof err), GM_EINVAL);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_idle_time_is_charged_to_nobody)
{
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "a");
    rec(a, 0, KER, 0, 100, 1);
    rec(a, 0, KER, 300, 400, 1);
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(r.windows[0].busy_ns, 200);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 200);
    ck_assert_int_eq(r.rows[0].kernels, 2);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_kernel_spanning_a_window_boundary_is_split_at_it)
{
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "a");
    rec(a, 0, KER, 900, 2100, 1);
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_uint_eq(r.n_windows, 3);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 100);
    ck_assert_int_eq(ns_of(&r, 0, KER, 1000, "a"), 1000);
    ck_assert_int_eq(ns_of(&r, 0, KER, 2000, "a"), 100);
    ck_assert_int_eq(r.windows[1].window_end_ns, 2000);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_copy_engine_time_is_a_separate_resource)
{
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "a");
    tenant(a, 2, "b");
    rec(a, 0, KER, 0, 100, 1);
    rec(a, 0, CPY, 0, 100, 2);
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_attr_add_tag(a, 2, GM_GPU_TAG_TENANT, 2);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 100); /* not halved by the copy */
    ck_assert_int_eq(ns_of(&r, 0, CPY, 0, "b"), 100);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "b"), -1);
    ck_assert_uint_eq(r.n_windows, 2);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_devices_are_attributed_independently)
{
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "a");
    tenant(a, 2, "b");
    rec(a, 0, KER, 0, 100, 1);
    rec(a, 1, KER, 0, 100, 2); /* same time, other GPU: no sharing */
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_attr_add_tag(a, 2, GM_GPU_TAG_TENANT, 2);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 100);
    ck_assert_int_eq(ns_of(&r, 1, KER, 0, "b"), 100);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_untagged_and_unknown_tenant_records_are_unattributed_and_counted)
{
    gm_gpu_attr *a = new_attr(1000);
    tenant(a, 1, "a");
    rec(a, 0, KER, 0, 100, 1);
    rec(a, 0, KER, 0, 100, 2);   /* no tag */
    rec(a, 0, KER, 200, 300, 3); /* tag 99 never defined */
    rec(a, 0, KER, 400, 500, 4); /* step 5 without manifest, and tenant 1 */
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_attr_add_tag(a, 3, GM_GPU_TAG_TENANT, 99);
    gm_gpu_attr_add_tag(a, 4, GM_GPU_TAG_STEP, 5);
    gm_gpu_attr_add_tag(a, 4, GM_GPU_TAG_TENANT, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 150);
    ck_assert_int_eq(r.windows[0].unattributed_ns, 150);
    ck_assert_int_eq(r.windows[0].unattributed_records, 2);
    ck_assert_int_eq(r.counts.untagged, 1);
    ck_assert_int_eq(r.counts.unknown_tenant, 1);
    ck_assert_int_eq(r.counts.missing_manifest, 1);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_zero_inverted_and_empty_records_are_counted_and_skipped)
{
    gm_gpu_attr *a = new_attr(1000);
    rec(a, 0, KER, 0, 0, 1);
    rec(a, 0, KER, 500, 400, 1);
    rec(a, 0, KER, 300, 300, 1);
    rec(a, 0, KER, 1, GM_GPU_MAX_NS, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(r.counts.records, 4);
    ck_assert_int_eq(r.counts.zero_timestamps, 1);
    ck_assert_int_eq(r.counts.inverted, 2);
    ck_assert_int_eq(r.counts.empty, 1);
    ck_assert_uint_eq(r.n_windows, 0);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_conflicting_tags_use_the_smallest_value_whatever_the_order)
{
    for (int order = 0; order < 2; order++) {
        gm_gpu_attr *a = new_attr(1000);
        tenant(a, 1, "a");
        tenant(a, 2, "b");
        rec(a, 0, KER, 0, 100, 1);
        gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, order ? 2 : 1);
        gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, order ? 1 : 2);
        gm_gpu_result r;
        run(a, &r);
        ck_assert_int_eq(ns_of(&r, 0, KER, 0, "a"), 100);
        ck_assert_int_eq(r.counts.tag_conflicts, 1);
        gm_gpu_result_free(&r);
        gm_gpu_attr_free(a);
    }
}
END_TEST

START_TEST(test_step_split_by_token_weight_with_largest_remainder)
{
    /* 100 ns over weights 1:1:1 -> 34, 33, 33 (tie to the first request) */
    gm_gpu_attr *a = new_attr(1000);
    char err[256];
    gm_gpu_step_request q[] = {{"x", NULL, 1, 0}, {"y", NULL, 0, 1}, {"z", NULL, 1, 0}};
    ck_assert(gm_gpu_attr_add_step(a, 42, q, 3, err, sizeof err) == 0);
    rec(a, 0, KER, 0, 100, 9);
    gm_gpu_attr_add_tag(a, 9, GM_GPU_TAG_STEP, 42);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "x"), 34);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "y"), 33);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "z"), 33);
    ck_assert_int_eq(r.rows[0].kernels, 1);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_step_weights_are_configurable)
{
    /* prefill weight 1, decode weight 3: 10 prefill vs 10 decode = 10:30 of 400 ns */
    gm_gpu_attr_conf conf = {.window_ns = 1000, .prefill_weight = 1, .decode_weight = 3};
    gm_gpu_attr *a = NULL;
    char err[256];
    ck_assert(gm_gpu_attr_new(&conf, &a, err, sizeof err) == 0);
    gm_gpu_step_request q[] = {{"p", NULL, 10, 0}, {"d", NULL, 0, 10}};
    ck_assert(gm_gpu_attr_add_step(a, 1, q, 2, err, sizeof err) == 0);
    rec(a, 0, KER, 0, 400, 9);
    gm_gpu_attr_add_tag(a, 9, GM_GPU_TAG_STEP, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "p"), 100);
    ck_assert_int_eq(ns_of(&r, 0, KER, 0, "d"), 300);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

START_TEST(test_bad_inputs_are_refused_with_a_reason)
{
    gm_gpu_attr *a = new_attr(1000);
    char err[256];
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, "", err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, "-x", err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, "a b", err, sizeof err), GM_EINVAL);
    ck_assert(strstr(err, "tenant: must use only") && strstr(err, "at position 1"));
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, "ok", err, sizeof err), 0);
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, "other", err, sizeof err), GM_ECONFLICT);
    gm_gpu_step_request q[] = {{"ok", "r 1", 1, 1}};
    ck_assert_int_eq(gm_gpu_attr_add_step(a, 1, q, 1, err, sizeof err), GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "request_id"));
    gm_gpu_step_request neg[] = {{"ok", NULL, -1, 1}};
    ck_assert_int_eq(gm_gpu_attr_add_step(a, 1, neg, 1, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_attr_add_step(a, 1, neg, 0, err, sizeof err), GM_EINVAL);
    gm_gpu_step_request good[] = {{"ok", NULL, 1, 1}};
    ck_assert_int_eq(gm_gpu_attr_add_step(a, 1, good, 1, err, sizeof err), 0);
    ck_assert_int_eq(gm_gpu_attr_add_step(a, 1, good, 1, err, sizeof err), GM_ECONFLICT);
    gm_gpu_attr_free(a);
    gm_gpu_attr_free(NULL);
}
END_TEST

START_TEST(test_lr_split_adds_up_and_breaks_ties_to_the_lower_index)
{
    int64_t w[] = {1, 1, 1}, out[3];
    gpu__lr_split(10, w, 3, out);
    ck_assert_int_eq(out[0], 4);
    ck_assert_int_eq(out[1], 3);
    ck_assert_int_eq(out[2], 3);
    int64_t w2[] = {0, 0}, o2[2];
    gpu__lr_split(3, w2, 2, o2);
    ck_assert_int_eq(o2[0], 2);
    ck_assert_int_eq(o2[1], 1);
    int64_t w3[] = {1, 2, 7}, o3[3];
    gpu__lr_split(7, w3, 3, o3); /* 0.7, 1.4, 4.9 -> 0+1=1? floors 0,1,4; 2 left: .9 .7 */
    ck_assert_int_eq(o3[0], 1);
    ck_assert_int_eq(o3[1], 1);
    ck_assert_int_eq(o3[2], 5);
    int64_t big[] = {INT64_C(1) << 61, INT64_C(1) << 61, 1}, ob[3];
    gpu__lr_split(INT64_C(1) << 61, big, 3, ob);
    ck_assert_int_eq(ob[0] + ob[1] + ob[2], INT64_C(1) << 61);
}
END_TEST

/* ---- properties ------------------------------------------------------------------------ */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rng_state >> 33;
}

typedef struct scenario {
    gm_gpu_record *recs;
    size_t n;
    uint32_t *tag_corr;
    uint8_t *tag_kind;
    uint64_t *tag_val;
    size_t n_tags;
} scenario;

static const char *const NAMES[] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6"};

static scenario make_scenario(uint64_t seed, size_t n)
{
    rng_state = seed;
    scenario s = {0};
    s.recs = calloc(n, sizeof *s.recs);
    s.tag_corr = calloc(2 * n, sizeof *s.tag_corr);
    s.tag_kind = calloc(2 * n, 1);
    s.tag_val = calloc(2 * n, sizeof *s.tag_val);
    s.n = n;
    for (size_t i = 0; i < n; i++) {
        uint64_t st = 1000000 + rnd() % 50000;
        uint64_t len = 1 + rnd() % (rnd() % 8 == 0 ? 20000 : 700);
        s.recs[i] = (gm_gpu_record){.start_ns = st,
                                    .end_ns = st + len,
                                    .device = (uint32_t)(rnd() % 2),
                                    .correlation_id = (uint32_t)i,
                                    .resource = (uint8_t)(rnd() % 5 == 0)};
        uint64_t t = rnd() % 10;
        if (t < 7) {
            s.tag_corr[s.n_tags] = (uint32_t)i;
            s.tag_kind[s.n_tags] = GM_GPU_TAG_TENANT;
            s.tag_val[s.n_tags++] = t + 1; /* tag 7 is never defined */
        } else if (t < 9) {
            s.tag_corr[s.n_tags] = (uint32_t)i;
            s.tag_kind[s.n_tags] = GM_GPU_TAG_STEP;
            s.tag_val[s.n_tags++] = 100 + rnd() % 6; /* step 105 has no manifest */
        }
    }
    return s;
}

static void scenario_free(scenario *s)
{
    free(s->recs);
    free(s->tag_corr);
    free(s->tag_kind);
    free(s->tag_val);
}

/* Feeds the scenario in a permuted order and in chunks of random size. */
static void feed(gm_gpu_attr *a, const scenario *s, uint64_t seed)
{
    char err[256];
    size_t *perm = malloc(s->n * sizeof *perm);
    for (size_t i = 0; i < s->n; i++)
        perm[i] = i;
    rng_state = seed;
    for (size_t i = s->n; seed && i > 1; i--) {
        size_t j = rnd() % i, t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    gm_gpu_record *chunk = malloc(s->n * sizeof *chunk);
    size_t i = 0, tags_done = 0;
    while (i < s->n) {
        size_t len = seed ? 1 + rnd() % 97 : s->n;
        size_t m = 0;
        for (; m < len && i < s->n; m++, i++)
            chunk[m] = s->recs[perm[i]];
        gm_gpu_attr_add_records(a, chunk, m);
        /* tags trail the records by a chunk (late tags), in reverse when seeded */
        size_t upto = s->n_tags * i / s->n;
        for (; tags_done < upto; tags_done++) {
            size_t t = seed ? s->n_tags - 1 - tags_done : tags_done;
            gm_gpu_attr_add_tag(a, s->tag_corr[t], s->tag_kind[t], s->tag_val[t]);
        }
    }
    for (size_t k = 0; k < 7; k++) {
        size_t t = seed ? 6 - k : k;
        ck_assert(gm_gpu_attr_define_tenant(a, t + 1, NAMES[t], err, sizeof err) == 0);
    }
    for (uint64_t st = 100; st < 105; st++) {
        uint64_t id = seed ? 204 - st : st;
        gm_gpu_step_request q[] = {{NAMES[id % 7], "r-a", (int64_t)id % 5, 3},
                                   {NAMES[(id + 3) % 7], "r-b", 7, (int64_t)id % 4}};
        ck_assert(gm_gpu_attr_add_step(a, id, q, 2, err, sizeof err) == 0);
    }
    free(chunk);
    free(perm);
}

static void assert_same_result(const gm_gpu_result *x, const gm_gpu_result *y)
{
    ck_assert_uint_eq(x->n_rows, y->n_rows);
    ck_assert_uint_eq(x->n_windows, y->n_windows);
    ck_assert_uint_eq(x->n_requests, y->n_requests);
    for (size_t i = 0; i < x->n_rows; i++) {
        const gm_gpu_row *p = &x->rows[i], *q = &y->rows[i];
        ck_assert_str_eq(p->tenant, q->tenant);
        ck_assert(p->device == q->device && p->resource == q->resource &&
                  p->window_start_ns == q->window_start_ns && p->gpu_ns == q->gpu_ns &&
                  p->gpu_us == q->gpu_us && p->kernels == q->kernels);
    }
    gm_test_assert_windows_eq(x->windows, y->windows, x->n_windows);
    for (size_t i = 0; i < x->n_requests; i++)
        ck_assert_int_eq(x->requests[i].gpu_ns, y->requests[i].gpu_ns);
    gm_test_assert_counts_eq(&x->counts, &y->counts);
}

START_TEST(test_result_is_independent_of_record_order_and_chunking)
{
    scenario s = make_scenario(12345 + (uint64_t)_i, 3000);
    gm_gpu_attr *a = new_attr(10000), *b = new_attr(10000);
    feed(a, &s, 0);
    feed(b, &s, 99 + (uint64_t)_i);
    gm_gpu_result ra, rb;
    run(a, &ra);
    run(b, &rb);
    ck_assert_uint_gt(ra.n_rows, 10);
    assert_same_result(&ra, &rb);
    gm_gpu_result_free(&ra);
    gm_gpu_result_free(&rb);
    gm_gpu_attr_free(a);
    gm_gpu_attr_free(b);
    scenario_free(&s);
}
END_TEST

START_TEST(test_totals_equal_busy_time_which_is_the_union_of_the_records)
{
    scenario s = make_scenario(777 + (uint64_t)_i, 2000);
    gm_gpu_attr *a = new_attr(10000);
    feed(a, &s, 0);
    gm_gpu_result r;
    run(a, &r); /* R3/R4: rows + unattributed == busy, in ns and us */
    /* busy time == length of the union of the records, per device, resource and window */
    for (size_t wi = 0; wi < r.n_windows; wi++) {
        const gm_gpu_window *w = &r.windows[wi];
        size_t len = (size_t)(w->window_end_ns - w->window_start_ns);
        uint8_t *cover = calloc(len, 1);
        for (size_t i = 0; i < s.n; i++) {
            const gm_gpu_record *x = &s.recs[i];
            if (x->device != w->device || x->resource != w->resource)
                continue;
            int64_t lo = (int64_t)x->start_ns > w->window_start_ns ? (int64_t)x->start_ns
                                                                   : w->window_start_ns;
            int64_t hi =
                (int64_t)x->end_ns < w->window_end_ns ? (int64_t)x->end_ns : w->window_end_ns;
            for (int64_t t = lo; t < hi; t++)
                cover[t - w->window_start_ns] = 1;
        }
        int64_t busy = 0;
        for (size_t t = 0; t < len; t++)
            busy += cover[t];
        free(cover);
        ck_assert_int_eq(busy, w->busy_ns);
    }
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
    scenario_free(&s);
}
END_TEST

START_TEST(test_sweep_matches_a_brute_force_reference)
{
    rng_state = 4242 + (uint64_t)_i;
    size_t n = 400;
    uint32_t n_owners = 5;
    uint64_t W = 700;
    gm_gpu_span *sp = calloc(n, sizeof *sp);
    for (size_t i = 0; i < n; i++) {
        uint64_t st = 5000 + rnd() % 3000;
        sp[i] = (gm_gpu_span){st, st + 1 + rnd() % 400, (uint32_t)(rnd() % n_owners)};
    }
    gm_gpu_sweep sw;
    char err[256];
    ck_assert_msg(gm_gpu_sweep_cpu(sp, n, W, n_owners, &sw, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gpu__sweep_check(&sw, W, err, sizeof err) == 0, "%s", err);
    /* brute force: every ns boundary in time order, active set by scan */
    int64_t base[64][5] = {{0}}, pool[64] = {0}, busy[64] = {0}, pieces[64][5] = {{0}};
    /* collect distinct boundaries (starts, ends, window edges) */
    size_t nb = 0;
    uint64_t *bd = malloc((2 * n + 64) * sizeof *bd);
    for (size_t i = 0; i < n; i++) {
        bd[nb++] = sp[i].start_ns;
        bd[nb++] = sp[i].end_ns;
    }
    for (uint64_t w = 7; w < 14; w++)
        bd[nb++] = w * W;
    for (size_t i = 1; i < nb; i++) /* insertion sort */
        for (size_t j = i; j > 0 && bd[j - 1] > bd[j]; j--) {
            uint64_t t = bd[j];
            bd[j] = bd[j - 1];
            bd[j - 1] = t;
        }
    for (size_t b = 0; b + 1 < nb; b++) {
        uint64_t lo = bd[b], hi = bd[b + 1];
        if (lo == hi)
            continue;
        int64_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += sp[i].start_ns <= lo && sp[i].end_ns >= hi;
        if (!k)
            continue;
        size_t w = (size_t)(lo / W);
        for (size_t i = 0; i < n; i++) {
            if (sp[i].start_ns <= lo && sp[i].end_ns >= hi)
                base[w][sp[i].owner] += (int64_t)(hi - lo) / k;
        }
        pool[w] += (int64_t)(hi - lo) % k;
        busy[w] += (int64_t)(hi - lo);
    }
    for (size_t i = 0; i < n; i++)
        for (uint64_t w = sp[i].start_ns / W; w <= (sp[i].end_ns - 1) / W; w++)
            pieces[w][sp[i].owner]++;
    size_t c = 0, nw = 0;
    for (size_t w = 0; w < 64; w++) {
        if (busy[w]) {
            ck_assert_uint_lt(nw, sw.n_wins);
            ck_assert_int_eq(sw.wins[nw].window, (int64_t)w);
            ck_assert_int_eq(sw.wins[nw].busy_ns, busy[w]);
            ck_assert_int_eq(sw.wins[nw].pool_ns, pool[w]);
            nw++;
        }
        for (uint32_t o = 0; o < n_owners; o++) {
            if (!pieces[w][o])
                continue;
            ck_assert_uint_lt(c, sw.n_cells);
            ck_assert_int_eq(sw.cells[c].window, (int64_t)w);
            ck_assert_uint_eq(sw.cells[c].owner, o);
            ck_assert_int_eq(sw.cells[c].base_ns, base[w][o]);
            ck_assert_int_eq(sw.cells[c].pieces, pieces[w][o]);
            c++;
        }
    }
    ck_assert_uint_eq(c, sw.n_cells);
    ck_assert_uint_eq(nw, sw.n_wins);
    free(bd);
    free(sp);
    gm_gpu_sweep_free(&sw);
}
END_TEST

START_TEST(test_sweep_refuses_invalid_spans)
{
    gm_gpu_span bad[] = {{10, 10, 0}};
    gm_gpu_sweep sw;
    char err[256];
    ck_assert_int_eq(gm_gpu_sweep_cpu(bad, 1, 100, 1, &sw, err, sizeof err), GM_EINVAL);
    gm_gpu_span owner[] = {{10, 20, 3}};
    ck_assert_int_eq(gm_gpu_sweep_cpu(owner, 1, 100, 2, &sw, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_sweep_cpu(owner, 1, 0, 4, &sw, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_sweep_cpu(NULL, 0, 100, 1, &sw, err, sizeof err), 0);
    ck_assert_uint_eq(sw.n_cells, 0);
}
END_TEST

START_TEST(test_microseconds_add_up_to_rounded_busy_time)
{
    /* three tenants with 1500 ns each in one window: 4500 ns -> 5 us (half up): 2, 2, 1 */
    gm_gpu_attr *a = new_attr(1000000);
    tenant(a, 1, "a");
    tenant(a, 2, "b");
    tenant(a, 3, "c");
    for (uint32_t i = 1; i <= 3; i++) {
        rec(a, 0, KER, i * 10000, i * 10000 + 1500, i);
        gm_gpu_attr_add_tag(a, i, GM_GPU_TAG_TENANT, i);
    }
    gm_gpu_result r;
    run(a, &r);
    ck_assert_int_eq(r.windows[0].busy_us, 5);
    ck_assert_int_eq(r.rows[0].gpu_us, 2);
    ck_assert_int_eq(r.rows[1].gpu_us, 2);
    ck_assert_int_eq(r.rows[2].gpu_us, 1);
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST

#ifdef GM_GPU_HAVE_INGEST
#include "gm_ingest.h"
START_TEST(test_rows_become_gpu_v1_events)
{
    gm_gpu_attr *a = new_attr(GM_GPU_DEFAULT_WINDOW_NS);
    tenant(a, 1, "acme");
    uint64_t t0 = UINT64_C(1795730400) * 1000000000u; /* 2026-11-27T22:00:00Z */
    rec(a, 0, KER, t0 + 1000, t0 + 85201000, 1);
    rec(a, 0, KER, t0 + 2000, t0 + 3000, 2); /* untagged */
    gm_gpu_attr_add_tag(a, 1, GM_GPU_TAG_TENANT, 1);
    gm_gpu_result r;
    run(a, &r);
    ck_assert_uint_eq(r.n_rows, 1);
    gm_event ev;
    char err[256];
    ck_assert_msg(gm_gpu_row_to_event(&r, 0, "edge/fra1/node-017", "node-017-000000000001", 1,
                                      "fra1", &ev, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(ev.type, GM_EVENT_GPU);
    ck_assert_str_eq(ev.tenant, "acme");
    ck_assert_str_eq(ev.device, "gpu0");
    ck_assert_str_eq(ev.policy, GM_GPU_POLICY_KERNEL);
    ck_assert_int_eq(ev.window_start_us, (int64_t)(t0 / 1000));
    ck_assert_int_eq(ev.window_end_us, (int64_t)(t0 / 1000) + 10000000);
    ck_assert_int_eq(ev.gpu_us + ev.unattributed_us, r.windows[0].busy_us);
    ck_assert_int_eq(ev.kernels, 1);
    ck_assert_msg(gm_event_check(&ev, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gm_gpu_row_to_event(&r, 5, "s", "i", 1, "fra1", &ev, err, sizeof err),
                     GM_EINVAL);
    /* for gm_node_record_event: source, id, seq and site left for the node client */
    ck_assert_int_eq(gm_gpu_row_to_event(&r, 0, NULL, NULL, 0, NULL, &ev, err, sizeof err), 0);
    ck_assert_str_eq(ev.source, "");
    ck_assert_str_eq(ev.site, "");
    ck_assert_str_eq(ev.tenant, "acme");
    gm_gpu_result_free(&r);
    gm_gpu_attr_free(a);
}
END_TEST
#endif

/* ---- the feed collector (records from the caller, no CUPTI) ---------------------------- */

static struct {
    int calls;
    int64_t ns[3][2]; /* acme, globex, initech x window 0, 1 */
    int64_t req_ns[2];
    int64_t closed_until_seen; /* the stat as seen inside the callback */
    gm_gpu_collector *c;
} FEED;

static void feed_on_windows(const gm_gpu_result *res, void *arg)
{
    (void)arg;
    char err[256];
    ck_assert_msg(gm_gpu_result_check(res, err, sizeof err) == 0, "%s", err);
    FEED.calls++;
    static const char *names[] = {"acme", "globex", "initech"};
    for (size_t i = 0; i < res->n_rows; i++)
        for (int t = 0; t < 3; t++)
            if (!strcmp(res->rows[i].tenant, names[t]))
                FEED.ns[t][res->rows[i].window_start_ns / 1000] += res->rows[i].gpu_ns;
    for (size_t i = 0; i < res->n_requests; i++)
        FEED.req_ns[!strcmp(res->requests[i].request_id, "req-2")] += res->requests[i].gpu_ns;
    gm_gpu_collector_stats st;
    gm_gpu_collector_stats_get(FEED.c, &st);
    FEED.closed_until_seen = st.closed_until_ns;
}

START_TEST(test_feed_collector_gives_the_worked_example_window_by_window)
{
    memset(&FEED, 0, sizeof FEED);
    gm_clock_freeze_us(1); /* the feed's clock: 1000 ns */
    gm_gpu_collector_conf conf = {
        .window_ns = 1000, .grace_ns = 100, .flush_ms = UINT32_MAX, .on_windows = feed_on_windows};
    gm_gpu_collector *c = NULL;
    char err[256];
    ck_assert_msg(gm_gpu_feed_start(&conf, &c, err, sizeof err) == 0, "%s", err);
    FEED.c = c;
    ck_assert_uint_eq(gm_gpu_collector_now_ns(c), 1000);
    uint64_t acme, globex;
    ck_assert_int_eq(gm_gpu_collector_tenant_tag(c, "acme", &acme, err, sizeof err), 0);
    ck_assert_int_eq(gm_gpu_collector_tenant_tag(c, "globex", &globex, err, sizeof err), 0);
    ck_assert_uint_eq(acme, 1);
    ck_assert_uint_eq(globex, 2);
    ck_assert_int_eq(gm_gpu_collector_tenant_tag(c, "not a tenant", &acme, err, sizeof err),
                     GM_EINVAL);
    ck_assert_int_eq(gm_gpu_tenant_push(c, "acme"), GM_EUNAVAIL); /* tags come with records */
    gm_gpu_step_request step7[] = {{"acme", "req-1", 30, 0}, {"initech", "req-2", 0, 10}};
    ck_assert(gm_gpu_step_manifest(c, 7, step7, 2, err, sizeof err) == 0);
    /* the worked example in two calls; K4's record comes first, its tags later */
    gm_gpu_record k1[] = {{1100, 1250, 0, 104, KER}, {0, 0, 0, 105, KER}, {9, 3, 0, 106, KER}};
    gm_gpu_record k2[] = {{0, 700, 0, 101, KER}, {200, 500, 0, 102, KER}, {400, 1300, 0, 103, KER}};
    gm_gpu_tag t[] = {
        {103, GM_GPU_TAG_STEP, 7}, {101, GM_GPU_TAG_TENANT, 1}, {102, GM_GPU_TAG_TENANT, 2}};
    ck_assert_int_eq(gm_gpu_collector_add(c, k1, 3, NULL, 0, err, sizeof err), 0);
    gm_gpu_tag bad = {1, 9, 1};
    ck_assert_int_eq(gm_gpu_collector_add(c, NULL, 0, &bad, 1, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_collector_add(c, k2, 3, t, 3, err, sizeof err), 0);
    /* at 1000 ns nothing has ended grace ago */
    ck_assert_int_eq(gm_gpu_collector_flush(c, err, sizeof err), 0);
    ck_assert_int_eq(FEED.calls, 0);
    gm_clock_freeze_us(2); /* 2000 ns: window 0 closes (K3 is cut at 1000) */
    ck_assert_int_eq(gm_gpu_collector_flush(c, err, sizeof err), 0);
    ck_assert_int_eq(FEED.calls, 1);
    ck_assert_int_eq(FEED.ns[0][0], 759);
    ck_assert_int_eq(FEED.ns[1][0], 133);
    ck_assert_int_eq(FEED.ns[2][0], 108);
    ck_assert_int_eq(FEED.ns[0][1], 0);
    /* closed_until moves only after the callback returned */
    ck_assert_int_eq(FEED.closed_until_seen, 0);
    gm_gpu_collector_stats st;
    gm_gpu_collector_stats_get(c, &st);
    ck_assert_int_eq(st.closed_until_ns, 1000);
    ck_assert_int_eq(st.kernels, 6);
    ck_assert_int_eq(st.zero_timestamps, 1);
    ck_assert_int_eq(st.inverted, 1);
    ck_assert_int_eq(st.tags, 3);
    gm_clock_freeze_us(3);
    ck_assert_int_eq(gm_gpu_collector_flush(c, err, sizeof err), 0);
    ck_assert_int_eq(FEED.ns[0][1], 169);
    ck_assert_int_eq(FEED.ns[2][1], 56);
    ck_assert_int_eq(FEED.req_ns[0], 494);
    ck_assert_int_eq(FEED.req_ns[1], 164);
    gm_gpu_collector_stats_get(c, &st);
    ck_assert_int_eq(st.closed_until_ns, 2000);
    ck_assert_int_eq(st.untagged_kernels, 1);
    gm_gpu_collector_stop(c);
    /* no collector: unavailable, nothing done */
    ck_assert_int_eq(gm_gpu_collector_add(NULL, k1, 1, NULL, 0, err, sizeof err), GM_EUNAVAIL);
    ck_assert_uint_eq(gm_gpu_collector_now_ns(NULL), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gpu_attrib");
    TCase *t = tcase_create("rules");
    tcase_add_test(t, test_single_kernel_gets_its_whole_duration);
    tcase_add_test(t, test_two_overlapping_kernels_split_the_overlap_equally);
    tcase_add_test(t, test_interval_remainder_goes_to_the_pool_and_the_pool_by_largest_remainder);
    tcase_add_test(t, test_worked_example_of_the_doc);
    tcase_add_test(t, test_feed_collector_gives_the_worked_example_window_by_window);
    tcase_add_test(t, test_tags_and_manifests_arriving_after_their_records_still_join);
    tcase_add_test(t, test_archive_of_the_worked_example_gives_the_doc_numbers);
    tcase_add_test(t, test_archive_errors_name_the_line_and_the_rule);
    tcase_add_test(t, test_idle_time_is_charged_to_nobody);
    tcase_add_test(t, test_kernel_spanning_a_window_boundary_is_split_at_it);
    tcase_add_test(t, test_copy_engine_time_is_a_separate_resource);
    tcase_add_test(t, test_devices_are_attributed_independently);
    tcase_add_test(t, test_untagged_and_unknown_tenant_records_are_unattributed_and_counted);
    tcase_add_test(t, test_zero_inverted_and_empty_records_are_counted_and_skipped);
    tcase_add_test(t, test_conflicting_tags_use_the_smallest_value_whatever_the_order);
    tcase_add_test(t, test_step_split_by_token_weight_with_largest_remainder);
    tcase_add_test(t, test_step_weights_are_configurable);
    tcase_add_test(t, test_bad_inputs_are_refused_with_a_reason);
    tcase_add_test(t, test_lr_split_adds_up_and_breaks_ties_to_the_lower_index);
    tcase_add_test(t, test_microseconds_add_up_to_rounded_busy_time);
    tcase_add_test(t, test_sweep_refuses_invalid_spans);
#ifdef GM_GPU_HAVE_INGEST
    tcase_add_test(t, test_rows_become_gpu_v1_events);
#endif
    suite_add_tcase(s, t);
    TCase *p = tcase_create("properties");
    tcase_set_timeout(p, 120);
    tcase_add_loop_test(p, test_result_is_independent_of_record_order_and_chunking, 0, 4);
    tcase_add_loop_test(p, test_totals_equal_busy_time_which_is_the_union_of_the_records, 0, 3);
    tcase_add_loop_test(p, test_sweep_matches_a_brute_force_reference, 0, 8);
    suite_add_tcase(s, p);
    return s;
}

int main(void)
{
    return gm_test_run(suite());
}
