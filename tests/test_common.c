/* Unit tests of common/: strict integers, RFC 3339 time, exact decimals, options. */
#include "support.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S(x) x, strlen(x)

START_TEST(test_u64_accepts_plain_integers_only)
{
    uint64_t v;
    ck_assert_int_eq(gm_parse_u64(S("0"), 10, &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(gm_parse_u64(S("9007199254740991"), (1ULL << 53) - 1, &v), 0);
    ck_assert_uint_eq(v, (1ULL << 53) - 1);
    ck_assert_int_eq(gm_parse_u64(S("9007199254740992"), (1ULL << 53) - 1, &v), GM_ERANGE);
    ck_assert_int_eq(gm_parse_u64(S("18446744073709551616"), UINT64_MAX, &v), GM_ERANGE);
    ck_assert_int_eq(gm_parse_u64(S("-0"), 10, &v), GM_EINVAL);
    ck_assert_int_eq(gm_parse_u64(S("01"), 10, &v), GM_EINVAL);
    ck_assert_int_eq(gm_parse_u64(S("1.5"), 10, &v), GM_EINVAL);
    ck_assert_int_eq(gm_parse_u64(S("1e3"), 10000, &v), GM_EINVAL);
    ck_assert_int_eq(gm_parse_u64(S(""), 10, &v), GM_EINVAL);
    ck_assert_int_eq(gm_parse_u64(S("99999999999999999999x"), UINT64_MAX, &v), GM_EINVAL);
}
END_TEST

START_TEST(test_i64_covers_the_full_range)
{
    int64_t v;
    ck_assert_int_eq(gm_parse_i64(S("-9223372036854775808"), &v), 0);
    ck_assert(v == INT64_MIN);
    ck_assert_int_eq(gm_parse_i64(S("9223372036854775807"), &v), 0);
    ck_assert(v == INT64_MAX);
    ck_assert_int_eq(gm_parse_i64(S("9223372036854775808"), &v), GM_ERANGE);
    ck_assert_int_eq(gm_parse_i64(S("-"), &v), GM_EINVAL);
}
END_TEST

START_TEST(test_time_parses_rfc3339_exactly)
{
    int64_t us;
    char err[128];
    ck_assert_int_eq(gm_time_parse(S("2026-11-27T22:00:00.123456Z"), &us, err, sizeof err), 0);
    ck_assert(us == INT64_C(1795816800123456));
    ck_assert_int_eq(gm_time_parse(S("2026-11-27T23:00:00.123456+01:00"), &us, err, sizeof err), 0);
    ck_assert(us == INT64_C(1795816800123456));
    ck_assert_int_eq(gm_time_parse(S("2026-11-27t22:00:00.123456000z"), &us, err, sizeof err), 0);
    ck_assert(us == INT64_C(1795816800123456));
    char buf[40];
    gm_time_format(us, buf, sizeof buf);
    ck_assert_str_eq(buf, "2026-11-27T22:00:00.123456Z");
}
END_TEST

START_TEST(test_time_refuses_what_it_cannot_keep_exactly)
{
    int64_t us;
    char err[128];
    ck_assert_int_eq(gm_time_parse(S("2026-11-27T22:00:00.1234567Z"), &us, err, sizeof err),
                     GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "sub-microsecond"));
    ck_assert_int_eq(gm_time_parse(S("2026-02-29T00:00:00Z"), &us, err, sizeof err), GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "does not exist"));
    ck_assert_int_eq(gm_time_parse(S("2028-02-29T00:00:00Z"), &us, err, sizeof err), 0);
    ck_assert_int_eq(gm_time_parse(S("2026-11-27T22:00:60Z"), &us, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_time_parse(S("2026-11-27T22:00:00"), &us, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_time_parse(S("2026-11-27 22:00:00Z"), &us, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_time_parse(S("2026-11-27T22:00:00Zjunk"), &us, err, sizeof err), GM_EINVAL);
}
END_TEST

START_TEST(test_month_boundaries)
{
    int64_t us;
    char err[128], buf[40];
    ck_assert_int_eq(gm_time_parse(S("2028-02-15T10:00:00Z"), &us, err, sizeof err), 0);
    gm_time_format(gm_month_start(us), buf, sizeof buf);
    ck_assert_str_eq(buf, "2028-02-01T00:00:00.000000Z");
    gm_time_format(gm_month_next(us), buf, sizeof buf);
    ck_assert_str_eq(buf, "2028-03-01T00:00:00.000000Z");
    ck_assert_int_eq(gm_time_parse(S("2026-12-31T23:59:59.999999Z"), &us, err, sizeof err), 0);
    gm_time_format(gm_month_next(us), buf, sizeof buf);
    ck_assert_str_eq(buf, "2027-01-01T00:00:00.000000Z");
}
END_TEST

START_TEST(test_civil_days_round_trip)
{
    for (int64_t days = -1000; days < 200000; days += 7) {
        int64_t y;
        unsigned m, d;
        gm_civil_from_days(days, &y, &m, &d);
        ck_assert(gm_days_from_civil(y, m, d) == days);
    }
}
END_TEST

START_TEST(test_decimal_parse_and_format_are_exact)
{
    gm_i128 v;
    char err[128], buf[64];
    ck_assert_int_eq(gm_dec_parse(S("0.0375"), 12, &v, err, sizeof err), 0);
    ck_assert(v == (gm_i128)37500000000LL);
    gm_dec_format(v, 12, buf, sizeof buf);
    ck_assert_str_eq(buf, "0.037500000000");
    ck_assert_int_eq(gm_dec_parse(S("-2.50"), 2, &v, err, sizeof err), 0);
    ck_assert(v == -250);
    gm_dec_format(v, 2, buf, sizeof buf);
    ck_assert_str_eq(buf, "-2.50");
    gm_dec_format(-5, 3, buf, sizeof buf);
    ck_assert_str_eq(buf, "-0.005");
    gm_dec_format(42, 0, buf, sizeof buf);
    ck_assert_str_eq(buf, "42");
    ck_assert_int_eq(gm_dec_parse(S("0.0000000000001"), 12, &v, err, sizeof err), GM_ERANGE);
    ck_assert_int_eq(gm_dec_parse(S("0.1000000000000"), 12, &v, err, sizeof err), 0);
    ck_assert_int_eq(gm_dec_parse(S("1e3"), 12, &v, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_dec_parse(S("+1"), 12, &v, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_dec_parse(S(".5"), 12, &v, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_dec_parse(S("1."), 12, &v, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_dec_parse(S("00.5"), 12, &v, err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_dec_parse(S("999999999999999999999999999999"), 12, &v, err, sizeof err),
                     GM_ERANGE);
}
END_TEST

START_TEST(test_i128_extremes_format)
{
    char buf[64];
    gm_i128_format(GM_I128_MIN, buf, sizeof buf);
    ck_assert_str_eq(buf, "-170141183460469231731687303715884105728");
    gm_i128_format(GM_I128_MAX, buf, sizeof buf);
    ck_assert_str_eq(buf, "170141183460469231731687303715884105727");
    gm_i128 out;
    ck_assert_int_eq(gm_i128_add(GM_I128_MAX, 1, &out), GM_ERANGE);
    ck_assert_int_eq(gm_i128_mul(GM_I128_MAX / 2 + 1, 2, &out), GM_ERANGE);
}
END_TEST

START_TEST(test_options_precedence_cli_env_file_default)
{
    char path[] = "/tmp/gmtest_conf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("# comment\n[kafka]\nbrokers = file:9092\n[rater]\nbatch_size = 123\n", f);
    fclose(f);
    setenv("GRIDMETER_CONFIG", path, 1);
    setenv("GMTEST_TOPIC", "from-env", 1);
    gm_cmd_info info = {"t", "test", "t"};
    gm_opt opts[] = {
        {"brokers", "kafka.brokers", "GMTEST_BROKERS", "def:9092", GM_OPT_STR, "b", 0, 0},
        {"batch-size", "rater.batch_size", NULL, "5000", GM_OPT_INT, "n", 0, 0},
        {"topic", "kafka.topic", "GMTEST_TOPIC", "t0", GM_OPT_STR, "t", 0, 0},
        {"group", NULL, NULL, "g0", GM_OPT_STR, "g", 0, 0},
        {"dry-run", NULL, NULL, NULL, GM_OPT_FLAG, "d", 0, 0},
        {0}};
    char *argv[] = {"t", "--group=cli", "pos1", "--dry-run", "pos2", NULL};
    int npos = 0;
    char err[256];
    ck_assert_int_eq(gm_opts_parse(&info, opts, 5, argv, &npos, err, sizeof err), 0);
    ck_assert_str_eq(gm_opt_str(opts, "brokers"), "file:9092");
    ck_assert_int_eq(gm_opt_int(opts, "batch-size"), 123);
    ck_assert_str_eq(gm_opt_str(opts, "topic"), "from-env");
    ck_assert_str_eq(gm_opt_str(opts, "group"), "cli");
    ck_assert(gm_opt_flag(opts, "dry-run"));
    ck_assert_int_eq(npos, 2);
    ck_assert_str_eq(argv[1], "pos1");
    ck_assert_str_eq(argv[2], "pos2");
    char *bad[] = {"t", "--batch-size", "12x", NULL};
    ck_assert_int_eq(gm_opts_parse(&info, opts, 3, bad, &npos, err, sizeof err), GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--batch-size"));
    char *unknown[] = {"t", "--nope", NULL};
    ck_assert_int_eq(gm_opts_parse(&info, opts, 2, unknown, &npos, err, sizeof err), GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--nope"));
    unlink(path);
    unsetenv("GRIDMETER_CONFIG");
}
END_TEST

START_TEST(test_error_names_come_from_one_list)
{
    ck_assert_str_eq(gm_errname(GM_EINVAL), "GM_EINVAL");
    ck_assert_str_eq(gm_strerror(GM_EFULL), "full: back-pressure");
    ck_assert_int_lt(GM_ECORRUPT, 0);
    char err[64];
    ck_assert_int_eq(gm_fail(err, sizeof err, GM_ERANGE, "x=%d", 5), GM_ERANGE);
    ck_assert_str_eq(err, "x=5");
}
END_TEST

START_TEST(test_clock_is_set_frozen_and_runs_on)
{
    /* 2028-02-29T12:00:00Z: the clock runs on from a set instant ... */
    const int64_t leap = INT64_C(1835438400000000);
    gm_clock_set_us(leap);
    ck_assert(gm_clock_is_set());
    int64_t a = gm_now_us();
    ck_assert(a >= leap && a < leap + 60 * GM_US_PER_SEC);
    ck_assert(gm_clock_offset_us() != 0);
    /* ... and stands still when frozen, to the microsecond */
    gm_clock_freeze_us(leap - 1);
    ck_assert(gm_now_us() == leap - 1);
    ck_assert(gm_month_start(gm_now_us()) == INT64_C(1832976000000000)); /* 2028-02-01 */
    ck_assert(gm_month_next(gm_now_us()) == INT64_C(1835481600000000));  /* 2028-03-01 */
    gm_clock_set_us(leap);
    ck_assert(gm_now_us() >= leap);
    char err[128];
    ck_assert_int_eq(gm_clock_check(err, sizeof err), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_u64_accepts_plain_integers_only);
    tcase_add_test(tc, test_i64_covers_the_full_range);
    tcase_add_test(tc, test_time_parses_rfc3339_exactly);
    tcase_add_test(tc, test_time_refuses_what_it_cannot_keep_exactly);
    tcase_add_test(tc, test_month_boundaries);
    tcase_add_test(tc, test_civil_days_round_trip);
    tcase_add_test(tc, test_decimal_parse_and_format_are_exact);
    tcase_add_test(tc, test_i128_extremes_format);
    tcase_add_test(tc, test_options_precedence_cli_env_file_default);
    tcase_add_test(tc, test_error_names_come_from_one_list);
    tcase_add_test(tc, test_clock_is_set_frozen_and_runs_on);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
