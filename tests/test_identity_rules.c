/* Unit tests of issue 12's rules that need no server: the content fingerprint of an event
 * (docs/events.md "Identity") and the time policy's limits (docs/events.md "Time policy"). */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "gm_rater.h"
#include "support.h"

#include <openssl/evp.h>
#include <string.h>

static const char msg_a[] =
    "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"edge/fra1/n1\","
    "\"id\":\"e1\",\"time\":\"2026-11-28T10:00:00Z\",\"subject\":\"acme\",\"data\":{\"seq\":1,"
    "\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":100,\"cached_tokens\":0,"
    "\"output_tokens\":10,\"gpu_us\":0}}";
/* The same event: other member order, whitespace, an escape, an extension, request_id "". */
static const char msg_a_again[] =
    "{ \"data\": {\"gpu_us\":0, \"output_tokens\":10, \"cached_tokens\":0, \"input_tokens\":100,"
    " \"model\":\"\\u006d\", \"site\":\"fra1\", \"seq\":1, \"request_id\":\"\"},"
    " \"subject\":\"acme\", \"time\":\"2026-11-28T11:00:00+01:00\", \"id\":\"e1\","
    " \"source\":\"edge/fra1/n1\", \"type\":\"gridmeter.usage.v1\", \"specversion\":\"1.0\","
    " \"traceparent\":\"00-abc\" }";
static const char msg_b[] =
    "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"edge/fra1/n1\","
    "\"id\":\"e1\",\"time\":\"2026-11-28T10:00:00Z\",\"subject\":\"acme\",\"data\":{\"seq\":1,"
    "\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":999,\"cached_tokens\":0,"
    "\"output_tokens\":10,\"gpu_us\":0}}";

static void decode(const char *m, gm_event *ev)
{
    char err[512];
    ck_assert_msg(gm_event_decode(m, strlen(m), ev, err, sizeof err) == 0, "%s", err);
}

START_TEST(test_fingerprint_is_sha256_of_the_canonical_form)
{
    gm_event a;
    decode(msg_a, &a);
    unsigned char fp[32], want[32];
    ck_assert_int_eq(gm_event_fingerprint(&a, fp), 0);
    char canon[GM_EVENT_MAX_BYTES + 1];
    size_t n = gm_event_encode(&a, canon, sizeof canon);
    ck_assert_uint_gt(n, 0);
    unsigned int len = 0;
    ck_assert(EVP_Digest(canon, n, want, &len, EVP_sha256(), NULL) == 1 && len == 32);
    ck_assert_mem_eq(fp, want, 32);
}
END_TEST

START_TEST(test_fingerprint_same_event_equal_other_content_differs)
{
    gm_event a, a2, b;
    decode(msg_a, &a);
    decode(msg_a_again, &a2);
    decode(msg_b, &b);
    unsigned char fa[32], fa2[32], fb[32];
    ck_assert_int_eq(gm_event_fingerprint(&a, fa), 0);
    ck_assert_int_eq(gm_event_fingerprint(&a2, fa2), 0);
    ck_assert_int_eq(gm_event_fingerprint(&b, fb), 0);
    ck_assert(gm_event_equal(&a, &a2));
    ck_assert_mem_eq(fa, fa2, 32);
    ck_assert(!gm_event_equal(&a, &b));
    ck_assert(memcmp(fa, fb, 32) != 0);
}
END_TEST

/* A re-send under another data.epoch is another event: its fingerprint differs, so it is
 * never a quiet duplicate (docs/events.md "Epochs"). */
START_TEST(test_fingerprint_covers_the_epoch)
{
    gm_event a, e;
    decode(msg_a, &a);
    e = a;
    e.epoch = 1796212800;
    unsigned char fa[32], fe[32];
    ck_assert_int_eq(gm_event_fingerprint(&a, fa), 0);
    ck_assert_int_eq(gm_event_fingerprint(&e, fe), 0);
    ck_assert(!gm_event_equal(&a, &e));
    ck_assert(memcmp(fa, fe, 32) != 0);
}
END_TEST

START_TEST(test_time_policy_limits_are_inclusive_and_zero_turns_them_off)
{
    gm_rater_config cfg;
    gm_rater_config_init(&cfg);
    ck_assert_int_eq(cfg.max_future_s, 300);
    ck_assert_int_eq(cfg.max_age_days, 0); /* off by default (docs/events.md) */
    cfg.max_age_days = 400;
    gm_event ev;
    decode(msg_a, &ev);
    int64_t now = ev.time_us; /* the event's own instant */
    char err[512];
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, now, err, sizeof err), 0);
    /* exactly 300 s ahead: accepted; 1 us more: refused, naming field, rule and limit */
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, now - 300 * GM_US_PER_SEC, err, sizeof err), 0);
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, now - 300 * GM_US_PER_SEC - 1, err, sizeof err),
                     GM_EINVAL);
    ck_assert_str_eq(err, "event edge/fra1/n1#e1: time: must be at most 300 s after gridmeter's "
                          "clock (rater.max_future_s=300), got 2026-11-28T10:00:00.000000Z at "
                          "2026-11-28T09:54:59.999999Z");
    /* exactly 400 days old: accepted; 1 us more: refused */
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, now + 400 * GM_US_PER_DAY, err, sizeof err), 0);
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, now + 400 * GM_US_PER_DAY + 1, err, sizeof err),
                     GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "event edge/fra1/n1#e1: time: must be at most 400 days "
                                      "before gridmeter's clock (rater.max_age_days=400), got "
                                      "2026-11-28T10:00:00.000000Z at "));
    cfg.max_future_s = 0;
    cfg.max_age_days = 0;
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, 0, err, sizeof err), 0);
    ck_assert_int_eq(gm_rater_check_time(&cfg, &ev, GM_EVENT_TIME_MAX_US, err, sizeof err), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("identity_rules");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, test_fingerprint_is_sha256_of_the_canonical_form);
    tcase_add_test(tc, test_fingerprint_same_event_equal_other_content_differs);
    tcase_add_test(tc, test_fingerprint_covers_the_epoch);
    tcase_add_test(tc, test_time_policy_limits_are_inclusive_and_zero_turns_them_off);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
