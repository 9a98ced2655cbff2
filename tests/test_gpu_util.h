/* Test helpers shared by the gpu_accounting suites: results compared field by field (never
 * with memcmp: the structs have padding, whose bytes nothing sets, so two equal results can
 * differ there, and do in optimized builds). */
#ifndef GM_TEST_GPU_UTIL_H
#define GM_TEST_GPU_UTIL_H

#include "gm_gpu.h"
#include "support.h"

#include <stddef.h>

/* Fails the test at the first window (index and field named) where x and y differ. */
static inline void gm_test_assert_windows_eq(const gm_gpu_window *x, const gm_gpu_window *y,
                                             size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const gm_gpu_window *p = &x[i], *q = &y[i];
#define GM_WINDOW_FIELD_EQ(f)                                                                      \
    ck_assert_msg(p->f == q->f, "window %zu: " #f " %lld != %lld", i, (long long)p->f,             \
                  (long long)q->f)
        GM_WINDOW_FIELD_EQ(device);
        GM_WINDOW_FIELD_EQ(resource);
        GM_WINDOW_FIELD_EQ(window_start_ns);
        GM_WINDOW_FIELD_EQ(window_end_ns);
        GM_WINDOW_FIELD_EQ(busy_ns);
        GM_WINDOW_FIELD_EQ(busy_us);
        GM_WINDOW_FIELD_EQ(unattributed_ns);
        GM_WINDOW_FIELD_EQ(unattributed_us);
        GM_WINDOW_FIELD_EQ(pool_ns);
        GM_WINDOW_FIELD_EQ(records);
        GM_WINDOW_FIELD_EQ(unattributed_records);
#undef GM_WINDOW_FIELD_EQ
    }
}

/* The same for the counts of what the engine skipped or could not join. */
static inline void gm_test_assert_counts_eq(const gm_gpu_counts *p, const gm_gpu_counts *q)
{
#define GM_COUNT_EQ(f)                                                                             \
    ck_assert_msg(p->f == q->f, #f " %lld != %lld", (long long)p->f, (long long)q->f)
    GM_COUNT_EQ(records);
    GM_COUNT_EQ(zero_timestamps);
    GM_COUNT_EQ(inverted);
    GM_COUNT_EQ(empty);
    GM_COUNT_EQ(untagged);
    GM_COUNT_EQ(unknown_tenant);
    GM_COUNT_EQ(missing_manifest);
    GM_COUNT_EQ(tag_conflicts);
#undef GM_COUNT_EQ
}

#endif
