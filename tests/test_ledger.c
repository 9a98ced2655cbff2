/* Unit tests of ledger/ that need no server: seq ranges and migration embedding. */
#include "gm_ledger.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

START_TEST(test_seqset_merges_and_detects_duplicates)
{
    gm_seqset s = {0};
    ck_assert(gm_seqset_add(&s, 1));
    ck_assert(gm_seqset_add(&s, 2));
    ck_assert(gm_seqset_add(&s, 5));
    ck_assert(!gm_seqset_add(&s, 2));
    ck_assert(!gm_seqset_contains(&s, 3));
    ck_assert(gm_seqset_contains(&s, 5));
    ck_assert_uint_eq(s.n, 2);
    ck_assert(gm_seqset_add(&s, 4));
    ck_assert(gm_seqset_add(&s, 3)); /* fills the hole: one range again */
    ck_assert_uint_eq(s.n, 1);
    char *buf = NULL;
    size_t cap = 0;
    gm_seqset_format(&s, &buf, &cap);
    ck_assert_str_eq(buf, "{[1,6)}");
    gm_seqset_clear(&s);
    free(buf);
}
END_TEST

START_TEST(test_seqset_round_trips_postgres_multirange_text)
{
    gm_seqset s = {0};
    ck_assert_int_eq(gm_seqset_parse(&s, "{[1,5),[7,8),[10,100)}"), 0);
    ck_assert_uint_eq(s.n, 3);
    ck_assert(gm_seqset_contains(&s, 4) && !gm_seqset_contains(&s, 5) && gm_seqset_contains(&s, 7));
    ck_assert(gm_seqset_contains(&s, 99) && !gm_seqset_contains(&s, 100));
    char *buf = NULL;
    size_t cap = 0;
    gm_seqset_format(&s, &buf, &cap);
    ck_assert_str_eq(buf, "{[1,5),[7,8),[10,100)}");
    ck_assert_int_eq(gm_seqset_parse(&s, "{}"), 0);
    ck_assert_uint_eq(s.n, 0);
    ck_assert_int_ne(gm_seqset_parse(&s, "{[5,1)}"), 0);
    ck_assert_int_ne(gm_seqset_parse(&s, "{[1,5),[3,8)}"), 0);
    ck_assert_int_ne(gm_seqset_parse(&s, "[1,5)"), 0);
    gm_seqset_clear(&s);
    free(buf);
}
END_TEST

START_TEST(test_seqset_random_against_bitmap)
{
    gm_seqset s = {0};
    unsigned char seen[5000] = {0};
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t q = 1 + (int64_t)(x % 4999);
        bool added = gm_seqset_add(&s, q);
        ck_assert(added == !seen[q]);
        seen[q] = 1;
    }
    for (int64_t q = 1; q < 5000; q++)
        ck_assert(gm_seqset_contains(&s, q) == (bool)seen[q]);
    for (size_t i = 1; i < s.n; i++) /* sorted, disjoint, never adjacent */
        ck_assert(s.r[i][0] > s.r[i - 1][1] + 1);
    gm_seqset_clear(&s);
}
END_TEST

START_TEST(test_migrations_are_embedded_in_order)
{
    ck_assert_uint_ge(gm_ledger_migrations_count, 2);
    /* Numbers rise; a gap is allowed (numbers are handed out per branch, so 0008 can land
     * before 0006 and 0007; migrate applies each missing version by number). */
    ck_assert_int_eq(gm_ledger_migrations[0].version, 1);
    for (size_t i = 0; i < gm_ledger_migrations_count; i++) {
        if (i)
            ck_assert_int_gt(gm_ledger_migrations[i].version, gm_ledger_migrations[i - 1].version);
        ck_assert_ptr_nonnull(strstr(gm_ledger_migrations[i].sql, "SET ROLE gm_owner"));
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ledger");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, test_seqset_merges_and_detects_duplicates);
    tcase_add_test(tc, test_seqset_round_trips_postgres_multirange_text);
    tcase_add_test(tc, test_seqset_random_against_bitmap);
    tcase_add_test(tc, test_migrations_are_embedded_in_order);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
