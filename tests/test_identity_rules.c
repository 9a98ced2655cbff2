/* Unit tests of issue 12's rules that need no server: the content fingerprint of an event
 * (docs/events.md "Identity"), the time policy's limits (docs/events.md "Time policy") and
 * one rule per identifier (docs/events.md "Identifiers": the decoder, gpu_accounting,
 * contracts and rate cards all apply common/gm_ident.h). */
#include "gm_gpu.h"
#include "gm_ident.h"
#include "gm_ingest.h"
#include "gm_rating.h"
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

/* ---- One rule per identifier ---------------------------------------------------------- */
static char *repeat(char c, size_t n)
{
    char *s = gm_xcalloc(n + 1, 1);
    memset(s, c, n);
    return s;
}

START_TEST(test_ident_rules_lengths_and_sets)
{
    char rule[200];
    char *t64 = repeat('a', 64), *t65 = repeat('a', 65), *m128 = repeat('m', 128),
         *m129 = repeat('m', 129);
    ck_assert(gm_ident_valid(GM_IDENT_TENANT, t64));
    ck_assert_int_eq(gm_ident_check(GM_IDENT_TENANT, t65, 65, rule, sizeof rule), GM_EINVAL);
    ck_assert_str_eq(rule, "must be at most 64 bytes, got 65");
    ck_assert_int_eq(gm_ident_check(GM_IDENT_TENANT, "Acme Corp", 9, rule, sizeof rule), GM_EINVAL);
    ck_assert_str_eq(rule, "must use only A-Z a-z 0-9 . _ - (first a letter or digit), got 0x20 at "
                           "position 4");
    ck_assert(!gm_ident_valid(GM_IDENT_TENANT, ".acme"));
    ck_assert(!gm_ident_valid(GM_IDENT_TENANT, ""));
    ck_assert(!gm_ident_valid(GM_IDENT_TENANT, NULL));
    ck_assert(!gm_ident_valid(GM_IDENT_TENANT, "acme/eu")); /* '/' is for source and model ids */
    ck_assert(gm_ident_valid(GM_IDENT_SITE, "fra1"));
    ck_assert(!gm_ident_valid(GM_IDENT_SITE, "fra 1"));
    ck_assert(gm_ident_valid(GM_IDENT_MODEL, m128));
    ck_assert(!gm_ident_valid(GM_IDENT_MODEL, m129));
    ck_assert(gm_ident_valid(GM_IDENT_MODEL, "meta/llama-3.1:70b@v2+fp8=~"));
    ck_assert(gm_ident_valid(GM_IDENT_SOURCE, "edge/fra1/node-017"));
    ck_assert(gm_ident_valid(GM_IDENT_SOURCE, "-x")); /* no first-character rule for ids */
    ck_assert(!gm_ident_valid(GM_IDENT_SOURCE, "edge/fra1/node 017"));
    ck_assert_int_eq(gm_ident_check(GM_IDENT_SOURCE, "a\0b", 3, rule, sizeof rule), GM_EINVAL);
    ck_assert_str_eq(rule, "must use only A-Z a-z 0-9 . _ - : / @ + = ~, got 0x00 at position 1");
    ck_assert_str_eq(gm_ident_sql_pattern(GM_IDENT_TENANT), "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");
    ck_assert_str_eq(gm_ident_sql_pattern(GM_IDENT_SOURCE), "^[A-Za-z0-9._:/@+=~-]{1,128}$");
    ck_assert_str_eq(gm_ident_rule(GM_IDENT_TENANT),
                     "1 to 64 bytes of A-Z a-z 0-9 . _ - (first a letter or digit)");
    free(t64);
    free(t65);
    free(m128);
    free(m129);
}
END_TEST

/* The migration that holds the CHECK constraints (renumbered when it lands). */
#define GM_IDENT_MIGRATION "0018_identifiers.sql"

/* The migration's CHECK constraints carry the same patterns as C (one rule, two languages). */
START_TEST(test_sql_constraints_use_the_c_patterns)
{
    size_t n = 0;
    char err[256];
    char *sql = gm_read_file(GM_SOURCE_DIR "/sql/" GM_IDENT_MIGRATION, &n, err, sizeof err);
    ck_assert_msg(sql != NULL, "%s", err);
    ck_assert_ptr_nonnull(strstr(sql, gm_ident_sql_pattern(GM_IDENT_TENANT)));
    ck_assert_ptr_nonnull(strstr(sql, gm_ident_sql_pattern(GM_IDENT_SITE)));
    ck_assert_ptr_nonnull(strstr(sql, gm_ident_sql_pattern(GM_IDENT_MODEL)));
    ck_assert_ptr_nonnull(strstr(sql, gm_ident_sql_pattern(GM_IDENT_SOURCE)));
    free(sql);
}
END_TEST

/* A 65-byte subject is refused by the decoder, as by every other door. */
START_TEST(test_decoder_and_gpu_accounting_apply_the_tenant_rule)
{
    char *t65 = repeat('t', 65), msg[1024], err[512];
    snprintf(msg, sizeof msg,
             "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"s\","
             "\"id\":\"e1\",\"time\":\"2026-11-28T10:00:00Z\",\"subject\":\"%s\",\"data\":{"
             "\"seq\":1,\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":1,"
             "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":0}}",
             t65);
    gm_event ev;
    ck_assert_int_eq(gm_event_decode(msg, strlen(msg), &ev, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "subject") && strstr(err, "must be at most 64 bytes, got 65"), "%s",
                  err);
    gm_gpu_attr *a = NULL;
    ck_assert_int_eq(gm_gpu_attr_new(NULL, &a, err, sizeof err), 0);
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 1, t65, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "tenant: must be at most 64 bytes, got 65");
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 2, "Acme Corp", err, sizeof err), GM_EINVAL);
    ck_assert_int_eq(gm_gpu_attr_define_tenant(a, 3, "acme", err, sizeof err), 0);
    gm_gpu_attr_free(a);
    free(t65);
}
END_TEST

/* Contracts and rate cards: a name no event can carry is refused, naming field and rule. */
START_TEST(test_contracts_and_cards_refuse_names_no_event_can_carry)
{
    char err[512];
    gm_rating_contract *k = NULL;
    const char *acme = "{\"tenant\":\"Acme Corp\",\"currency\":\"USD\"}";
    ck_assert_int_eq(gm_rating_contract_parse(acme, strlen(acme), &k, err, sizeof err), GM_EINVAL);
    ck_assert_msg(!strncmp(err,
                           "tenant: must use only A-Z a-z 0-9 . _ - (first a letter or "
                           "digit), got 0x20 at position 4",
                           88),
                  "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "can never match an event"));
    const char *ok = "{\"tenant\":\"acme\",\"currency\":\"USD\"}";
    ck_assert_int_eq(gm_rating_contract_parse(ok, strlen(ok), &k, err, sizeof err), 0);
    gm_rating_contract_free(k);
    const char *over = "{\"tenant\":\"acme\",\"currency\":\"USD\",\"prices\":{\"llama 70b\":"
                       "{\"input\":\"0.000001\"}}}";
    ck_assert_int_eq(gm_rating_contract_parse(over, strlen(over), &k, err, sizeof err), GM_EINVAL);
    ck_assert_msg(!strncmp(err, "prices.llama 70b: must use only", 31), "%s", err);
    gm_rating_card *c = NULL;
    const char *card = "{\"card_id\":\"c\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
                       "\"currency\":\"USD\",\"minor_units\":2,\"unknown_models\":\"reject\","
                       "\"prices\":{\"llama 70b\":{\"input\":"
                       "\"0.000001\",\"cached\":\"0\",\"output\":\"0\",\"gpu\":\"0\"}}}";
    ck_assert_int_eq(gm_rating_card_parse(card, strlen(card), &c, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "prices.llama 70b: must use only"), "%s", err);
}
END_TEST

/* A \u0000 escape would cut a decoded name short ("acme\u0000x" read as "acme"): JSON
 * documents of the API and of the rating module refuse it (docs/events.md "Identifiers"). */
START_TEST(test_json_nul_escape_is_refused_not_cut_short)
{
    const char *t1 = "{\"tenant\":\"acme\\u0000x\"}";
    ck_assert_uint_eq(gm_json_nul_escape(t1, strlen(t1)), 15);
    const char *t2 = "{\"a\\u0000\":1}";
    ck_assert_uint_eq(gm_json_nul_escape(t2, strlen(t2)), 3);
    /* an escaped backslash followed by u0000 is text, not an escape; other escapes pass */
    const char *ok1 = "{\"tenant\":\"a\\\\u0000\",\"b\":\"\\u0061\\\"\\u0001\"}";
    ck_assert_uint_eq(gm_json_nul_escape(ok1, strlen(ok1)), SIZE_MAX);
    const char *ok2 = "{\"n\":\"u0000\"}";
    ck_assert_uint_eq(gm_json_nul_escape(ok2, strlen(ok2)), SIZE_MAX);
    const char *cut = "{\"t\":\"\\u000";
    ck_assert_uint_eq(gm_json_nul_escape(cut, strlen(cut)), SIZE_MAX);
    char err[512];
    gm_rating_contract *k = NULL;
    const char *c = "{\"tenant\":\"acme\\u0000x\",\"currency\":\"USD\"}";
    ck_assert_int_eq(gm_rating_contract_parse(c, strlen(c), &k, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "\\u0000 (NUL) in a JSON string (line 1, column 16)"), "%s", err);
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
    tcase_add_test(tc, test_ident_rules_lengths_and_sets);
    tcase_add_test(tc, test_sql_constraints_use_the_c_patterns);
    tcase_add_test(tc, test_decoder_and_gpu_accounting_apply_the_tenant_rule);
    tcase_add_test(tc, test_contracts_and_cards_refuse_names_no_event_can_carry);
    tcase_add_test(tc, test_json_nul_escape_is_refused_not_cut_short);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
