/* The CUDA bulk path against the C reference: bit-identical sweeps and attribution results.
 * Exits 77 (skipped) without a usable GPU. */
#include "gpu_internal.h"
#include "support.h"
#include "test_gpu_util.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rng_state >> 33;
}

static void assert_same_sweep(const gm_gpu_sweep *x, const gm_gpu_sweep *y)
{
    ck_assert_uint_eq(x->n_cells, y->n_cells);
    ck_assert_uint_eq(x->n_wins, y->n_wins);
    for (size_t i = 0; i < x->n_cells; i++) {
        ck_assert_int_eq(x->cells[i].window, y->cells[i].window);
        ck_assert_uint_eq(x->cells[i].owner, y->cells[i].owner);
        ck_assert_int_eq(x->cells[i].base_ns, y->cells[i].base_ns);
        ck_assert_int_eq(x->cells[i].pieces, y->cells[i].pieces);
    }
    for (size_t i = 0; i < x->n_wins; i++) {
        ck_assert_int_eq(x->wins[i].window, y->wins[i].window);
        ck_assert_int_eq(x->wins[i].busy_ns, y->wins[i].busy_ns);
        ck_assert_int_eq(x->wins[i].pool_ns, y->wins[i].pool_ns);
    }
}

START_TEST(test_cuda_sweep_is_bit_identical_to_the_c_reference)
{
    static const size_t sizes[] = {1, 2, 17, 1000, 100000, 2000000};
    size_t n = sizes[_i];
    rng_state = 99 + (uint64_t)_i;
    uint32_t n_owners = 1 + (uint32_t)(rnd() % 300);
    uint64_t W = _i % 2 ? 10000000000ULL : 1000000ULL;
    gm_gpu_span *sp = malloc(n * sizeof *sp);
    uint64_t t0 = UINT64_C(1795730400) * 1000000000u;
    for (size_t i = 0; i < n; i++) {
        uint64_t st = t0 + rnd() % (n * 2000 + 1);
        uint64_t len = 1 + rnd() % (rnd() % 50 == 0 ? 30000000 : 20000);
        sp[i] = (gm_gpu_span){st, st + len, (uint32_t)(rnd() % n_owners)};
    }
    gm_gpu_sweep c, g;
    char err[256];
    ck_assert_msg(gm_gpu_sweep_cpu(sp, n, W, n_owners, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_gpu_sweep_cuda(sp, n, W, n_owners, &g, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gpu__sweep_check(&g, W, err, sizeof err) == 0, "%s", err);
    assert_same_sweep(&c, &g);
    gm_gpu_sweep_free(&c);
    gm_gpu_sweep_free(&g);
    free(sp);
}
END_TEST

START_TEST(test_cuda_attribution_equals_the_c_attribution)
{
    gm_gpu_attr *a[2];
    gm_gpu_result r[2];
    char err[256];
    for (int k = 0; k < 2; k++) {
        gm_gpu_attr_conf conf = {.window_ns = 100000, .use_cuda = k};
        ck_assert(gm_gpu_attr_new(&conf, &a[k], err, sizeof err) == 0);
        rng_state = 5;
        ck_assert(gm_gpu_attr_define_tenant(a[k], 1, "acme", err, sizeof err) == 0);
        ck_assert(gm_gpu_attr_define_tenant(a[k], 2, "globex", err, sizeof err) == 0);
        gm_gpu_step_request q[] = {{"acme", "r1", 100, 3}, {"initech", "r2", 0, 9}};
        ck_assert(gm_gpu_attr_add_step(a[k], 9, q, 2, err, sizeof err) == 0);
        for (uint32_t i = 0; i < 50000; i++) {
            uint64_t st = 1000000 + rnd() % 5000000;
            gm_gpu_record rec = {st, st + 1 + rnd() % 9000, (uint32_t)(rnd() % 2), i,
                                 (uint8_t)(rnd() % 4 == 0)};
            gm_gpu_attr_add_records(a[k], &rec, 1);
            uint64_t t = rnd() % 4;
            if (t < 2)
                gm_gpu_attr_add_tag(a[k], i, GM_GPU_TAG_TENANT, t + 1);
            else if (t == 2)
                gm_gpu_attr_add_tag(a[k], i, GM_GPU_TAG_STEP, 9);
        }
        ck_assert_msg(gm_gpu_attr_run(a[k], &r[k], err, sizeof err) == 0, "%s", err);
        ck_assert_msg(gm_gpu_result_check(&r[k], err, sizeof err) == 0, "%s", err);
    }
    ck_assert_uint_eq(r[0].n_rows, r[1].n_rows);
    for (size_t i = 0; i < r[0].n_rows; i++) {
        ck_assert_str_eq(r[0].rows[i].tenant, r[1].rows[i].tenant);
        ck_assert_int_eq(r[0].rows[i].gpu_ns, r[1].rows[i].gpu_ns);
        ck_assert_int_eq(r[0].rows[i].gpu_us, r[1].rows[i].gpu_us);
        ck_assert_int_eq(r[0].rows[i].kernels, r[1].rows[i].kernels);
    }
    ck_assert_uint_eq(r[0].n_windows, r[1].n_windows);
    gm_test_assert_windows_eq(r[0].windows, r[1].windows, r[0].n_windows);
    for (int k = 0; k < 2; k++) {
        gm_gpu_result_free(&r[k]);
        gm_gpu_attr_free(a[k]);
    }
}
END_TEST

START_TEST(test_cuda_sweep_refuses_invalid_spans_like_the_c_sweep)
{
    gm_gpu_span sp[] = {{10, 20, 0}, {30, 30, 0}, {40, 50, 1}};
    gm_gpu_sweep s;
    char e1[256] = "", e2[256] = "";
    ck_assert_int_eq(gm_gpu_sweep_cpu(sp, 3, 100, 2, &s, e1, sizeof e1), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_sweep_cuda(sp, 3, 100, 2, &s, e2, sizeof e2), GM_EINVAL);
    ck_assert_str_eq(e1, e2);
    sp[1].end_ns = 35;
    ck_assert_int_eq(gm_gpu_sweep_cuda(sp, 3, 100, 1, &s, e2, sizeof e2), GM_EINVAL); /* owner */
    ck_assert_int_eq(gm_gpu_sweep_cuda(sp, 3, 0, 2, &s, e2, sizeof e2), GM_EINVAL);   /* window */
    ck_assert_int_eq(gm_gpu_sweep_cuda(sp, 0, 100, 2, &s, e2, sizeof e2), 0);
    ck_assert_uint_eq(s.n_cells, 0);
    ck_assert_int_eq(gm_gpu_sweep_cuda(sp, 3, 100, 2, &s, e2, sizeof e2), 0);
    ck_assert_uint_eq(s.n_wins, 1);
    ck_assert_int_eq(s.wins[0].busy_ns, 25);
    gm_gpu_sweep_free(&s);
}
END_TEST

int main(void)
{
    char why[256];
    if (!gm_gpu_cuda_available(why, sizeof why)) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    Suite *s = suite_create("gpu_cuda");
    TCase *t = tcase_create("bulk");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, test_cuda_sweep_is_bit_identical_to_the_c_reference, 0, 6);
    tcase_add_test(t, test_cuda_attribution_equals_the_c_attribution);
    tcase_add_test(t, test_cuda_sweep_refuses_invalid_spans_like_the_c_sweep);
    suite_add_tcase(s, t);
    return gm_test_run(s);
}
