/* Completing a node's event text (gm_event_complete, used by `gridmeter emit` and the node
 * agent): what is filled in and what is not, the id/seq pairing rule, and refusals of the
 * message as a whole reported against the text as sent. */
#include "gm_ingest.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

#define T0 INT64_C(1795000000123456) /* 2026-11-18T…Z, pinned */

static const gm_event_fill FILL = {
    .source = "edge/fra1/node-017", .site = "fra1", .time_us = T0, .gpu_us = false};

static int complete(const char *msg, const gm_event_fill *f, gm_event *ev, unsigned *filled,
                    gm_event_error *e)
{
    return gm_event_complete_decode(msg, strlen(msg), f, ev, filled, e);
}

START_TEST(test_minimal_line_gets_envelope_site_time_and_number_placeholders)
{
    gm_event ev;
    gm_event_error e;
    unsigned filled;
    const char *m = "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":5,"
                    "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}";
    ck_assert_msg(complete(m, &FILL, &ev, &filled, &e) == 0, "%s: %s", e.field, e.rule);
    ck_assert_uint_eq(filled, GM_EVENT_FILLED_NUMBERS);
    ck_assert_str_eq(ev.source, "edge/fra1/node-017");
    ck_assert_str_eq(ev.site, "fra1");
    ck_assert_int_eq(ev.time_us, T0);
    ck_assert_int_eq(ev.type, GM_EVENT_USAGE);
    ck_assert_int_eq(ev.output_tokens, 7);
    ck_assert_int_eq(ev.gpu_us, 9);
}
END_TEST

START_TEST(test_what_the_event_has_is_kept)
{
    gm_event ev;
    gm_event_error e;
    unsigned filled;
    const char *m = "{ \"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"gw/x\","
                    "\"id\":\"x-1\",\"time\":\"2026-11-27T22:00:00Z\",\"subject\":\"acme\","
                    "\"data\":{\"seq\":41,\"site\":\"ams1\",\"model\":\"m\",\"input_tokens\":1,"
                    "\"cached_tokens\":0,\"output_tokens\":2,\"gpu_us\":3}}";
    ck_assert_msg(complete(m, &FILL, &ev, &filled, &e) == 0, "%s: %s", e.field, e.rule);
    ck_assert_uint_eq(filled, 0); /* the caller's own numbering */
    ck_assert_str_eq(ev.source, "gw/x");
    ck_assert_str_eq(ev.id, "x-1");
    ck_assert_uint_eq(ev.seq, 41);
    ck_assert_str_eq(ev.site, "ams1");
}
END_TEST

START_TEST(test_id_without_seq_and_seq_without_id_are_refused_by_name)
{
    gm_event ev;
    gm_event_error e;
    unsigned filled;
    ck_assert_int_eq(
        complete("{\"id\":\"a\",\"subject\":\"acme\",\"data\":{}}", &FILL, &ev, &filled, &e),
        GM_EINVAL);
    ck_assert_str_eq(e.field, "data.seq");
    ck_assert(strstr(e.rule, "give id and data.seq together") != NULL);
    ck_assert_int_eq(
        complete("{\"subject\":\"acme\",\"data\":{\"seq\":3}}", &FILL, &ev, &filled, &e),
        GM_EINVAL);
    ck_assert_str_eq(e.field, "id");
}
END_TEST

START_TEST(test_gpu_us_is_filled_only_when_asked_and_only_for_usage_events)
{
    gm_event ev;
    gm_event_error e;
    unsigned filled;
    const char *m = "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":5,"
                    "\"cached_tokens\":0,\"output_tokens\":7}}";
    ck_assert_int_eq(complete(m, &FILL, &ev, &filled, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "data.gpu_us");
    ck_assert_str_eq(e.rule, "is required");
    gm_event_fill f = FILL;
    f.gpu_us = true;
    ck_assert_msg(complete(m, &f, &ev, &filled, &e) == 0, "%s: %s", e.field, e.rule);
    ck_assert_uint_eq(filled, GM_EVENT_FILLED_NUMBERS | GM_EVENT_FILLED_GPU_US);
    ck_assert_int_eq(ev.gpu_us, 0);
    /* given: kept, not flagged */
    const char *given = "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":5,"
                        "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":12}}";
    ck_assert_int_eq(complete(given, &f, &ev, &filled, &e), 0);
    ck_assert_uint_eq(filled, GM_EVENT_FILLED_NUMBERS);
    ck_assert_int_eq(ev.gpu_us, 12);
    /* a gpu.v1 window without gpu_us is not completed: the decoder names the field */
    const char *gpu = "{\"type\":\"gridmeter.gpu.v1\",\"subject\":\"acme\",\"data\":{\"device\":"
                      "\"gpu0\",\"window_start\":\"2026-11-27T22:00:00Z\",\"window_end\":"
                      "\"2026-11-27T22:00:10Z\",\"policy\":\"kernel-share-v1\",\"kernels\":1,"
                      "\"unattributed_us\":0}}";
    ck_assert_int_eq(complete(gpu, &f, &ev, &filled, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "data.gpu_us");
}
END_TEST

START_TEST(test_empty_objects_are_completed_without_a_stray_comma)
{
    gm_event ev;
    gm_event_error e;
    unsigned filled;
    ck_assert_int_eq(complete("{}", &FILL, &ev, &filled, &e), GM_EINVAL);
    ck_assert_str_ne(e.field, "message"); /* valid JSON: a missing member is named */
    ck_assert_int_eq(complete("{\"subject\":\"acme\",\"data\":{}}", &FILL, &ev, &filled, &e),
                     GM_EINVAL);
    ck_assert_str_eq(e.field, "data.model");
}
END_TEST

START_TEST(test_syntax_errors_are_reported_against_the_text_as_sent)
{
    const char *bad[] = {
        "{\"subject\":\"acme\",,\"data\":{}}",
        "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",}}",
        "{\"subject\":\"ac\xff\",\"data\":{}}",
        "[1,2]",
        "{\"subject\":\"acme\"",
        "",
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++) {
        gm_event ev;
        gm_event_error e, direct;
        unsigned filled;
        ck_assert_int_eq(complete(bad[i], &FILL, &ev, &filled, &e), GM_EINVAL);
        ck_assert_int_eq(gm_event_decode_ex(bad[i], strlen(bad[i]), &ev, &direct), GM_EINVAL);
        ck_assert_msg(!strcmp(e.field, "message"), "case %zu: %s: %s", i, e.field, e.rule);
        ck_assert_msg(!strcmp(e.rule, direct.rule) && e.offset == direct.offset,
                      "case %zu: completed says '%s', as sent '%s'", i, e.rule, direct.rule);
    }
}
END_TEST

START_TEST(test_an_event_that_only_the_filled_members_take_over_8192_bytes_says_so)
{
    /* request_id cannot be long enough; pad with an extension attribute string */
    char m[GM_EVENT_MAX_BYTES + 1];
    const char *head = "{\"subject\":\"acme\",\"pad\":\"";
    const char *tail = "\",\"data\":{\"model\":\"m\",\"input_tokens\":5,\"cached_tokens\":0,"
                       "\"output_tokens\":7,\"gpu_us\":9}}";
    size_t hl = strlen(head), tl = strlen(tail), pad = GM_EVENT_MAX_BYTES - 20 - hl - tl;
    memcpy(m, head, hl);
    memset(m + hl, 'x', pad);
    memcpy(m + hl + pad, tail, tl + 1);
    ck_assert_uint_le(strlen(m), GM_EVENT_MAX_BYTES);
    gm_event ev;
    gm_event_error e;
    unsigned filled;
    ck_assert_int_eq(complete(m, &FILL, &ev, &filled, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "message");
    ck_assert_msg(strstr(e.rule, "with the members the node fills in") && strstr(e.rule, "as sent"),
                  "%s", e.rule);
    /* over the bound as sent: the decoder's own words */
    char big[GM_EVENT_MAX_BYTES + 200];
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(complete(big, &FILL, &ev, &filled, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "message");
    ck_assert(strstr(e.rule, "must be at most 8192 bytes, got") != NULL);
}
END_TEST

START_TEST(test_completion_never_overruns_a_small_buffer)
{
    char out[32];
    size_t n;
    unsigned filled;
    gm_event_error e;
    const char *m = "{\"subject\":\"acme\",\"data\":{}}";
    ck_assert_int_eq(gm_event_complete(m, strlen(m), &FILL, out, sizeof out, &n, &filled, &e),
                     GM_EINVAL);
    ck_assert_str_eq(e.field, "message");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event_complete");
    TCase *t = tcase_create("complete");
    tcase_add_test(t, test_minimal_line_gets_envelope_site_time_and_number_placeholders);
    tcase_add_test(t, test_what_the_event_has_is_kept);
    tcase_add_test(t, test_id_without_seq_and_seq_without_id_are_refused_by_name);
    tcase_add_test(t, test_gpu_us_is_filled_only_when_asked_and_only_for_usage_events);
    tcase_add_test(t, test_empty_objects_are_completed_without_a_stray_comma);
    tcase_add_test(t, test_syntax_errors_are_reported_against_the_text_as_sent);
    tcase_add_test(t, test_an_event_that_only_the_filled_members_take_over_8192_bytes_says_so);
    tcase_add_test(t, test_completion_never_overruns_a_small_buffer);
    suite_add_tcase(s, t);
    return gm_test_run(s);
}
