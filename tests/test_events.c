/* Contract tests of the usage event decoder and encoder: one fixture per rule (valid and
 * invalid, tests/fixtures/events/), reasons that name field and rule, number text bounds,
 * round trips, and seeded random properties. */
#include "gm_ingest.h"
#include "support.h"

#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES GM_SOURCE_DIR "/tests/fixtures/events"

/* ---- Fixtures -------------------------------------------------------------------------
 * A fixture file is `# key: value` header lines (about, and for invalid events field and
 * rule), then the message: the rest of the file without its last newline. */
typedef struct {
    char name[256];
    char about[256], field[128], rule[256];
    char *msg; /* exact-size heap copy, so ASan sees reads past the end */
    size_t len;
} fixture;

static void header(const char *line, size_t n, fixture *fx)
{
    static const struct {
        const char *key;
        size_t off, size;
    } keys[] = {{"# about: ", offsetof(fixture, about), sizeof fx->about},
                {"# field: ", offsetof(fixture, field), sizeof fx->field},
                {"# rule: ", offsetof(fixture, rule), sizeof fx->rule}};
    for (size_t i = 0; i < GM_ARRAY_LEN(keys); i++) {
        size_t kl = strlen(keys[i].key);
        if (n >= kl && !memcmp(line, keys[i].key, kl)) {
            char *dst = (char *)fx + keys[i].off;
            snprintf(dst, keys[i].size, "%.*s", (int)(n - kl), line + kl);
            return;
        }
    }
    ck_abort_msg("%s: unknown header line %.*s", fx->name, (int)n, line);
}

static void load(const char *dir, const char *name, fixture *fx)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    memset(fx, 0, sizeof *fx);
    snprintf(fx->name, sizeof fx->name, "%s", name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t i = 0;
    while (i + 1 < n && buf[i] == '#' && buf[i + 1] == ' ') {
        char *nl = memchr(buf + i, '\n', n - i);
        ck_assert_msg(nl != NULL, "%s: header without newline", name);
        header(buf + i, (size_t)(nl - (buf + i)), fx);
        i = (size_t)(nl - buf) + 1;
    }
    ck_assert_msg(n > i && buf[n - 1] == '\n', "%s: must end with a newline", name);
    fx->len = n - 1 - i;
    fx->msg = gm_xmalloc(fx->len ? fx->len : 1);
    memcpy(fx->msg, buf + i, fx->len);
    ck_assert_msg(fx->about[0], "%s: says what it is about (# about:)", name);
}

/* Sorted list of the *.event files of a fixture directory. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **list(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 6 && !strcmp(de->d_name + l - 6, ".event")) {
            names = gm_xrealloc(names, (n + 1) * sizeof *names);
            names[n++] = gm_xstrdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    *count = n;
    return names;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Round trip: decode(encode(ev)) == ev and the canonical text is a fixed point. */
static void assert_round_trip(const gm_event *ev, const char *what)
{
    char buf[GM_EVENT_MAX_BYTES + 1], buf2[GM_EVENT_MAX_BYTES + 1], err[512];
    gm_event back;
    size_t n = gm_event_encode(ev, buf, sizeof buf);
    ck_assert_msg(n > 0, "%s: encode failed", what);
    ck_assert_uint_eq(strlen(buf), n);
    ck_assert_msg(gm_event_decode(buf, n, &back, err, sizeof err) == 0,
                  "%s: canonical form refused: %s\n%s", what, err, buf);
    ck_assert_msg(gm_event_equal(ev, &back), "%s: decode(encode(ev)) differs\n%s", what, buf);
    size_t n2 = gm_event_encode(&back, buf2, sizeof buf2);
    ck_assert_msg(n2 == n && !memcmp(buf, buf2, n), "%s: encode is not a fixed point", what);
}

START_TEST(test_every_valid_fixture_decodes_and_round_trips)
{
    size_t n;
    char **names = list(FIXTURES "/valid", &n);
    ck_assert_uint_ge(n, 10);
    for (size_t i = 0; i < n; i++) {
        fixture fx;
        load(FIXTURES "/valid", names[i], &fx);
        ck_assert_msg(!fx.field[0] && !fx.rule[0], "%s: a valid fixture states no rule", fx.name);
        gm_event ev;
        char err[512];
        int rc = gm_event_decode(fx.msg, fx.len, &ev, err, sizeof err);
        ck_assert_msg(rc == 0, "%s (%s): refused: %s", fx.name, fx.about, err);
        ck_assert_int_eq(gm_event_check(&ev, err, sizeof err), 0);
        assert_round_trip(&ev, fx.name);
        free(fx.msg);
    }
    free_list(names, n);
}
END_TEST

static bool printable_or_utf8(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

START_TEST(test_every_invalid_fixture_is_refused_naming_its_field_and_rule)
{
    size_t n;
    char **names = list(FIXTURES "/invalid", &n);
    ck_assert_uint_ge(n, 80);
    for (size_t i = 0; i < n; i++) {
        fixture fx;
        load(FIXTURES "/invalid", names[i], &fx);
        ck_assert_msg(fx.field[0] && fx.rule[0], "%s: states # field: and # rule:", fx.name);
        gm_event ev;
        gm_event_error e;
        char err[512];
        ck_assert_msg(gm_event_decode_ex(fx.msg, fx.len, &ev, &e) == GM_EINVAL, "%s (%s): accepted",
                      fx.name, fx.about);
        ck_assert_msg(!strcmp(e.field, fx.field), "%s: field is %s, expected %s (rule: %s)",
                      fx.name, e.field, fx.field, e.rule);
        ck_assert_msg(strstr(e.rule, fx.rule) != NULL, "%s: rule is \"%s\", expected \"%s\"",
                      fx.name, e.rule, fx.rule);
        ck_assert_msg(e.offset <= fx.len, "%s: offset past the message", fx.name);
        ck_assert_msg(printable_or_utf8(e.rule) && printable_or_utf8(e.field),
                      "%s: reason has control characters", fx.name);
        ck_assert_int_eq(gm_event_decode(fx.msg, fx.len, &ev, err, sizeof err), GM_EINVAL);
        char expect[512];
        snprintf(expect, sizeof expect, "%s: %s", e.field, e.rule);
        ck_assert_msg(strstr(err, expect) != NULL, "%s: formatted reason %s", fx.name, err);
        free(fx.msg);
    }
    free_list(names, n);
}
END_TEST

/* ---- Named rules ----------------------------------------------------------------------*/

static const char USAGE[] =
    "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"edge/fra1/n17\","
    "\"id\":\"991\",\"time\":\"2026-11-27T22:00:00.123456Z\",\"subject\":\"acme\","
    "\"datacontenttype\":\"application/json\",\"data\":{\"seq\":123456,\"site\":\"fra1\","
    "\"model\":\"llama-3.1-70b-instruct\",\"request_id\":\"req_8f3a\",\"input_tokens\":512,"
    "\"cached_tokens\":256,\"output_tokens\":128,\"gpu_us\":84200}}";

/* USAGE with the value text of output_tokens replaced. */
static size_t usage_with_output(const char *text, char *buf, size_t buf_len)
{
    const char *at = strstr(USAGE, "\"output_tokens\":128");
    int n = snprintf(buf, buf_len, "%.*s\"output_tokens\":%s%s", (int)(at - USAGE), USAGE, text,
                     at + strlen("\"output_tokens\":128"));
    return (size_t)n;
}

START_TEST(test_identity_of_a_refused_message)
{
    gm_event ev;
    const char *bad_tier = "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                           "\"source\":\"edge/a/n1\",\"id\":\"a3\",\"time\":"
                           "\"2026-11-28T10:00:00Z\",\"subject\":\"acme\",\"data\":{\"seq\":3,"
                           "\"service_tier\":\"BATCH\"}}";
    ck_assert(gm_event_identity_of(bad_tier, strlen(bad_tier), &ev));
    ck_assert_str_eq(ev.source, "edge/a/n1");
    ck_assert_str_eq(ev.id, "a3");
    ck_assert_uint_eq(ev.seq, 3);
    ck_assert_str_eq(ev.tenant, "acme");
    ck_assert(ev.time_us == INT64_C(1795860000000000));
    /* an identifier that breaks its rule, a fractional or missing seq: nothing */
    const char *no[] = {"{\"source\":\"bad source\",\"id\":\"a\",\"data\":{\"seq\":1}}",
                        "{\"source\":\"s\",\"id\":\"a\",\"data\":{\"seq\":1.5}}",
                        "{\"source\":\"s\",\"id\":\"a\",\"data\":{\"seq\":0}}",
                        "{\"source\":\"s\",\"id\":\"a\",\"data\":{}}",
                        "{\"source\":\"s\",\"id\":\"a\"",
                        "[1]"};
    for (size_t i = 0; i < GM_ARRAY_LEN(no); i++) {
        ck_assert_msg(!gm_event_identity_of(no[i], strlen(no[i]), &ev), "%s", no[i]);
        ck_assert_str_eq(ev.source, "");
    }
    /* a valid identity with a bad subject and time: those unknown */
    const char *partial = "{\"source\":\"s\",\"id\":\"a\",\"subject\":\"x y\",\"time\":"
                          "\"yesterday\",\"data\":{\"seq\":9007199254740991}}";
    ck_assert(gm_event_identity_of(partial, strlen(partial), &ev));
    ck_assert_str_eq(ev.tenant, "");
    ck_assert(ev.time_us == INT64_MIN);
    ck_assert_uint_eq(ev.seq, UINT64_C(9007199254740991));
    ck_assert_int_eq(ev.epoch, 0);
    /* data.epoch: kept when valid; one that breaks its rule leaves the seq in no epoch */
    const char *ep = "{\"source\":\"s\",\"id\":\"a\",\"data\":{\"seq\":2,\"epoch\":1796212800}}";
    ck_assert(gm_event_identity_of(ep, strlen(ep), &ev));
    ck_assert_int_eq(ev.epoch, 1796212800);
    const char *bad_ep[] = {"{\"source\":\"s\",\"id\":\"a\",\"data\":{\"seq\":2,\"epoch\":-1}}",
                            "{\"source\":\"s\",\"id\":\"a\",\"data\":{\"seq\":2,\"epoch\":\"1\"}}"};
    for (size_t i = 0; i < GM_ARRAY_LEN(bad_ep); i++)
        ck_assert_msg(!gm_event_identity_of(bad_ep[i], strlen(bad_ep[i]), &ev), "%s", bad_ep[i]);
}
END_TEST

START_TEST(test_design_example_decodes_to_its_fields)
{
    gm_event ev;
    char err[256];
    ck_assert_int_eq(gm_event_decode(USAGE, strlen(USAGE), &ev, err, sizeof err), 0);
    ck_assert_int_eq(ev.type, GM_EVENT_USAGE);
    ck_assert_str_eq(ev.source, "edge/fra1/n17");
    ck_assert_str_eq(ev.id, "991");
    ck_assert_str_eq(ev.tenant, "acme");
    int64_t t;
    ck_assert_int_eq(gm_time_parse("2026-11-27T22:00:00.123456Z", 27, &t, NULL, 0), 0);
    ck_assert_int_eq(ev.time_us, t);
    ck_assert_uint_eq(ev.seq, 123456);
    ck_assert_str_eq(ev.site, "fra1");
    ck_assert_str_eq(ev.model, "llama-3.1-70b-instruct");
    ck_assert_str_eq(ev.request_id, "req_8f3a");
    ck_assert_int_eq(ev.input_tokens, 512);
    ck_assert_int_eq(ev.cached_tokens, 256);
    ck_assert_int_eq(ev.output_tokens, 128);
    ck_assert_int_eq(ev.gpu_us, 84200);
    ck_assert_str_eq(ev.device, "");
    ck_assert_int_eq(ev.kernels, 0);
}
END_TEST

START_TEST(test_reason_names_event_field_rule_and_offending_text)
{
    char msg[1024], err[512];
    gm_event ev;
    size_t n = usage_with_output("1.5", msg, sizeof msg);
    ck_assert_int_eq(gm_event_decode(msg, n, &ev, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "event edge/fra1/n17#991: data.output_tokens: must be an integer "
                          "between 0 and 2^53-1, got 1.5");
}
END_TEST

START_TEST(test_reason_names_event_even_when_source_follows_the_error)
{
    static const char msg[] =
        "{\"specversion\":\"0.3\",\"source\":\"edge/x\",\"data\":{\"a\":[[[]]]},"
        "\"id\":\"7\"}";
    char err[512];
    gm_event ev;
    ck_assert_int_eq(gm_event_decode(msg, strlen(msg), &ev, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "event edge/x#7: specversion: must be \"1.0\", got \"0.3\"");
    /* Without a readable source and id, the reason starts at the field. */
    static const char msg2[] = "{\"specversion\":\"0.3\",\"source\":\"edge x\",\"id\":\"7\"}";
    ck_assert_int_eq(gm_event_decode(msg2, strlen(msg2), &ev, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "specversion: must be \"1.0\", got \"0.3\"");
}
END_TEST

START_TEST(test_reason_shows_message_bytes_as_printable_ascii)
{
    char msg[1024], err[512];
    gm_event ev;
    size_t n = usage_with_output("\"\\u0001\xc3\xa9\"", msg, sizeof msg);
    ck_assert_int_eq(gm_event_decode(msg, n, &ev, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "got \"\\u0001\\xC3\\xA9\"") != NULL, "%s", err);
}
END_TEST

/* Number text: what passes, with its value, and what is refused. */
START_TEST(test_quantities_are_integer_text_up_to_2_pow_53_minus_1)
{
    static const struct {
        const char *text;
        int64_t value; /* -1: refused */
    } cases[] = {
        {"0", 0},
        {"1", 1},
        {"2147483647", 2147483647},
        {"2147483648", 2147483648},
        {"4294967296", 4294967296},
        {"9007199254740991", 9007199254740991},
        {"9007199254740992", -1},
        {"9007199254740993", -1},
        {"99999999999999999", -1},
        {"18446744073709551616", -1},
        {"1e309", -1},
        {"1E2", -1},
        {"1e0", -1},
        {"1.0", -1},
        {"1.5", -1},
        {"-0", -1},
        {"-1", -1},
        {"00", -1},
        {"01", -1},
        {"+1", -1},
        {"\"1\"", -1},
        {"true", -1},
        {"null", -1},
        {"[1]", -1},
        {"{}", -1},
        {"1 ", 1},
        {" 7", 7},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(cases); i++) {
        char msg[1024];
        gm_event ev;
        gm_event_error e;
        size_t n = usage_with_output(cases[i].text, msg, sizeof msg);
        int rc = gm_event_decode_ex(msg, n, &ev, &e);
        if (cases[i].value >= 0) {
            ck_assert_msg(rc == 0, "%s refused: %s", cases[i].text, e.rule);
            ck_assert_int_eq(ev.output_tokens, cases[i].value);
        } else {
            ck_assert_msg(rc == GM_EINVAL, "%s accepted", cases[i].text);
            ck_assert_str_eq(e.field, "data.output_tokens");
            ck_assert_msg(strstr(e.rule, "must be an integer between 0 and 2^53-1, got ") == e.rule,
                          "%s: %s", cases[i].text, e.rule);
        }
    }
}
END_TEST

START_TEST(test_message_of_8192_bytes_passes_and_8193_is_refused)
{
    char msg[GM_EVENT_MAX_BYTES + 2];
    size_t base = strlen(USAGE) - 1; /* without the final '}' */
    for (size_t total = GM_EVENT_MAX_BYTES - 1; total <= GM_EVENT_MAX_BYTES + 1; total++) {
        size_t pad = total - base - strlen(",\"pad\":\"\"}");
        memcpy(msg, USAGE, base);
        size_t n = base;
        n += (size_t)sprintf(msg + n, ",\"pad\":\"");
        memset(msg + n, 'p', pad);
        n += pad;
        n += (size_t)sprintf(msg + n, "\"}");
        ck_assert_uint_eq(n, total);
        gm_event ev;
        gm_event_error e;
        int rc = gm_event_decode_ex(msg, n, &ev, &e);
        if (total <= GM_EVENT_MAX_BYTES) {
            ck_assert_msg(rc == 0, "%zu bytes refused: %s", total, e.rule);
        } else {
            ck_assert_int_eq(rc, GM_EINVAL);
            ck_assert_str_eq(e.field, "message");
            ck_assert_str_eq(e.rule, "must be at most 8192 bytes, got 8193");
        }
    }
}
END_TEST

START_TEST(test_every_truncation_of_an_event_is_refused)
{
    size_t len = strlen(USAGE);
    for (size_t n = 0; n < len; n++) {
        char *msg = gm_xmalloc(n ? n : 1);
        memcpy(msg, USAGE, n);
        gm_event ev;
        gm_event_error e;
        ck_assert_msg(gm_event_decode_ex(msg, n, &ev, &e) == GM_EINVAL, "prefix %zu accepted", n);
        free(msg);
    }
}
END_TEST

START_TEST(test_invalid_utf8_is_refused_with_its_byte_offset)
{
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {{"\xff", 1},
               {"\xc0\xaf", 2},
               {"\xc1\xbf", 2},
               {"\xe0\x80\xaf", 3},
               {"\xed\xa0\x80", 3},
               {"\xf0\x80\x80\xaf", 4},
               {"\xf4\x90\x80\x80", 4},
               {"\xf5\x80\x80\x80", 4},
               {"\x80", 1},
               {"\xe2\x82", 2}};
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++) {
        char msg[256];
        int pre = snprintf(msg, sizeof msg, "{\"specversion\":\"1.0\",\"x\":\"ab");
        memcpy(msg + pre, bad[i].bytes, bad[i].len);
        memcpy(msg + pre + bad[i].len, "\"}", 2);
        gm_event ev;
        gm_event_error e;
        ck_assert_int_eq(gm_event_decode_ex(msg, (size_t)pre + bad[i].len + 2, &ev, &e), GM_EINVAL);
        ck_assert_str_eq(e.field, "message");
        char expect[64];
        snprintf(expect, sizeof expect, "invalid UTF-8 at byte offset %d ", pre);
        ck_assert_msg(strstr(e.rule, expect) == e.rule, "case %zu: %s", i, e.rule);
        ck_assert_uint_eq(e.offset, (size_t)pre);
    }
    /* Valid 2-, 3- and 4-byte sequences in an extension string are fine. */
    char ok[1024];
    int n = snprintf(ok, sizeof ok, "%.*s,\"note\":\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
                     (int)strlen(USAGE) - 1, USAGE);
    gm_event ev;
    char err[256];
    ck_assert_msg(gm_event_decode(ok, (size_t)n, &ev, err, sizeof err) == 0, "%s", err);
}
END_TEST

START_TEST(test_encode_refuses_a_buffer_too_small_and_an_invalid_event)
{
    gm_event ev;
    char err[256], buf[GM_EVENT_MAX_BYTES + 1];
    ck_assert_int_eq(gm_event_decode(USAGE, strlen(USAGE), &ev, err, sizeof err), 0);
    size_t n = gm_event_encode(&ev, buf, sizeof buf);
    ck_assert_uint_gt(n, 0);
    for (size_t cap = 0; cap <= n; cap++)
        ck_assert_uint_eq(gm_event_encode(&ev, buf, cap), 0);
    ck_assert_uint_eq(gm_event_encode(&ev, buf, n + 1), n);

    gm_event bad = ev;
    bad.seq = 0;
    ck_assert_uint_eq(gm_event_encode(&bad, buf, sizeof buf), 0);
    ck_assert_int_eq(gm_event_check(&bad, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "data.seq: must be an integer between 1 and 2^53-1") == err, "%s",
                  err);
    bad = ev;
    snprintf(bad.tenant, sizeof bad.tenant, "ac me");
    ck_assert_int_eq(gm_event_check(&bad, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "subject: ") == err, "%s", err);
    bad = ev;
    bad.output_tokens = GM_EVENT_MAX_QUANTITY + 1;
    ck_assert_int_eq(gm_event_check(&bad, err, sizeof err), GM_EINVAL);
    bad = ev;
    bad.type = GM_EVENT_GPU;
    snprintf(bad.device, sizeof bad.device, "0");
    snprintf(bad.policy, sizeof bad.policy, "equal");
    bad.window_start_us = bad.window_end_us = ev.time_us;
    ck_assert_int_eq(gm_event_check(&bad, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "data.window_end: must be later than data.window_start");
    bad.window_end_us++;
    ck_assert_int_eq(gm_event_check(&bad, err, sizeof err), 0);
    bad.time_us = GM_EVENT_TIME_MAX_US + 1;
    ck_assert_int_eq(gm_event_check(&bad, err, sizeof err), GM_EINVAL);
}
END_TEST

/* Revision 1.1 (docs/events.md "Versions"): an event without the new fields decodes to 0
 * and standard, and its canonical form is byte for byte what it was before the revision. */
START_TEST(test_old_events_keep_their_meaning_and_canonical_bytes)
{
    gm_event ev;
    char err[512], buf[GM_EVENT_MAX_BYTES + 1];
    ck_assert_int_eq(gm_event_decode(USAGE, strlen(USAGE), &ev, err, sizeof err), 0);
    ck_assert_int_eq(ev.reasoning_tokens, 0);
    ck_assert_int_eq(ev.cache_write_tokens, 0);
    ck_assert_int_eq(ev.service_tier, GM_SERVICE_TIER_STANDARD);
    ck_assert_uint_gt(gm_event_encode(&ev, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                          "\"source\":\"edge/fra1/n17\",\"id\":\"991\","
                          "\"time\":\"2026-11-27T22:00:00.123456Z\",\"subject\":\"acme\","
                          "\"datacontenttype\":\"application/json\",\"data\":{\"seq\":123456,"
                          "\"site\":\"fra1\",\"model\":\"llama-3.1-70b-instruct\","
                          "\"request_id\":\"req_8f3a\",\"input_tokens\":512,"
                          "\"cached_tokens\":256,\"output_tokens\":128,\"gpu_us\":84200}}");
    ev.reasoning_tokens = 100;
    ev.cache_write_tokens = 7;
    ev.service_tier = GM_SERVICE_TIER_PRIORITY;
    size_t n = gm_event_encode(&ev, buf, sizeof buf);
    ck_assert_uint_gt(n, 0);
    ck_assert_ptr_nonnull(strstr(buf, "\"cache_write_tokens\":7,\"output_tokens\":128,"
                                      "\"reasoning_tokens\":100,\"gpu_us\":84200,"
                                      "\"service_tier\":\"priority\"}}"));
    gm_event back;
    ck_assert_int_eq(gm_event_decode(buf, n, &back, err, sizeof err), 0);
    ck_assert(gm_event_equal(&ev, &back));
}
END_TEST

/* Usage revision 1.2 (docs/events.md "Epochs"): data.epoch is optional, 0 when absent and
 * left out of the canonical form at 0 (events before 1.2 keep their bytes); another epoch is
 * written right after seq, round-trips, and makes another event (equality, fingerprint). */
START_TEST(test_epoch_is_optional_default_0_and_part_of_the_event)
{
    gm_event ev, back;
    char err[512], buf[GM_EVENT_MAX_BYTES + 1];
    ck_assert_int_eq(gm_event_decode(USAGE, strlen(USAGE), &ev, err, sizeof err), 0);
    ck_assert_int_eq(ev.epoch, 0);
    ck_assert_uint_gt(gm_event_encode(&ev, buf, sizeof buf), 0);
    ck_assert_ptr_null(strstr(buf, "epoch"));
    char msg[1024];
    const char *at = strstr(USAGE, "\"site\"");
    snprintf(msg, sizeof msg, "%.*s\"epoch\":0,%s", (int)(at - USAGE), USAGE, at);
    ck_assert_int_eq(gm_event_decode(msg, strlen(msg), &back, err, sizeof err), 0);
    ck_assert(gm_event_equal(&ev, &back)); /* "epoch":0 is the same event as no epoch */
    gm_event e2 = ev;
    e2.epoch = 1796212800;
    size_t n = gm_event_encode(&e2, buf, sizeof buf);
    ck_assert_uint_gt(n, 0);
    ck_assert_ptr_nonnull(strstr(buf, "\"data\":{\"seq\":123456,\"epoch\":1796212800,\"site\""));
    ck_assert_int_eq(gm_event_decode(buf, n, &back, err, sizeof err), 0);
    ck_assert_int_eq(back.epoch, 1796212800);
    ck_assert(gm_event_equal(&e2, &back));
    ck_assert(!gm_event_equal(&ev, &e2));
    e2.epoch = GM_EVENT_MAX_QUANTITY + 1;
    ck_assert_int_eq(gm_event_check(&e2, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "data.epoch: must be an integer between 0 and 2^53-1, got "
                          "9007199254740992");
    e2.epoch = -1;
    ck_assert_int_eq(gm_event_check(&e2, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "data.epoch: ") == err, "%s", err);
    /* bad type, negative, too large: the reason names data.epoch and the event */
    const char *bad[] = {"\"x\"", "-1", "9007199254740992", "1e3", "true"};
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++) {
        snprintf(msg, sizeof msg, "%.*s\"epoch\":%s,%s", (int)(at - USAGE), USAGE, bad[i], at);
        ck_assert_int_eq(gm_event_decode(msg, strlen(msg), &back, err, sizeof err), GM_EINVAL);
        char want[160];
        snprintf(want, sizeof want,
                 "event edge/fra1/n17#991: data.epoch: must be an integer between 0 and 2^53-1, "
                 "got %s",
                 bad[i]);
        ck_assert_str_eq(err, want);
    }
    /* gpu events have no epoch */
    static const char gpu[] =
        "{\"specversion\":\"1.0\",\"type\":\"gridmeter.gpu.v1\",\"source\":\"edge/fra1/n17/gpu\","
        "\"id\":\"5\",\"time\":\"2026-11-27T22:00:00Z\",\"subject\":\"acme\",\"data\":{\"seq\":5,"
        "\"site\":\"fra1\",\"device\":\"0\",\"window_start\":\"2026-11-27T21:59:59Z\","
        "\"window_end\":\"2026-11-27T22:00:00Z\",\"gpu_us\":1,\"policy\":\"proportional\","
        "\"kernels\":1,\"unattributed_us\":0}}";
    gm_event g;
    ck_assert_int_eq(gm_event_decode(gpu, strlen(gpu), &g, err, sizeof err), 0);
    ck_assert_int_eq(g.epoch, 0);
    g.epoch = 1;
    ck_assert_int_eq(gm_event_check(&g, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "data.epoch: is not a field of gridmeter.gpu.v1 data") == err, "%s",
                  err);
}
END_TEST

/* Parts may not exceed their whole: reasoning tokens are part of the output. The decoder and
 * gm_event_check refuse more reasoning than output tokens, naming both fields; equal is fine. */
START_TEST(test_reasoning_above_output_is_refused_naming_both_fields)
{
    gm_event ev;
    char err[512];
    gm_event_error e;
    ck_assert_int_eq(gm_event_decode(USAGE, strlen(USAGE), &ev, err, sizeof err), 0);
    ev.reasoning_tokens = ev.output_tokens;
    ck_assert_int_eq(gm_event_check(&ev, err, sizeof err), 0);
    ev.reasoning_tokens = ev.output_tokens + 1;
    ck_assert_int_eq(gm_event_check(&ev, err, sizeof err), GM_EINVAL);
    ck_assert_str_eq(err, "data.reasoning_tokens: must not exceed data.output_tokens (reasoning "
                          "tokens are part of the output), got 129 > 128");
    char buf[GM_EVENT_MAX_BYTES + 1];
    ck_assert_uint_eq(gm_event_encode(&ev, buf, sizeof buf), 0);

    char msg[1024];
    const char *at = strstr(USAGE, "\"gpu_us\"");
    snprintf(msg, sizeof msg, "%.*s\"reasoning_tokens\":9007199254740991,%s", (int)(at - USAGE),
             USAGE, at);
    ck_assert_int_eq(gm_event_decode_ex(msg, strlen(msg), &ev, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "data.reasoning_tokens");
    ck_assert_str_eq(e.rule, "must not exceed data.output_tokens (reasoning tokens are part of "
                             "the output), got 9007199254740991 > 128");
    ck_assert_str_eq(e.source, "edge/fra1/n17");
    ev.service_tier = (gm_service_tier)7;
    ev.reasoning_tokens = 0;
    ck_assert_int_eq(gm_event_check(&ev, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "data.service_tier: ") == err, "%s", err);
}
END_TEST

START_TEST(test_empty_and_null_messages_are_refused)
{
    gm_event ev;
    gm_event_error e;
    ck_assert_int_eq(gm_event_decode_ex(NULL, 0, &ev, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "message");
    ck_assert_str_eq(e.rule, "is empty");
    ck_assert_int_eq(gm_event_decode_ex("{}", 2, &ev, &e), GM_EINVAL);
    ck_assert_str_eq(e.field, "specversion");
    ck_assert_str_eq(e.rule, "is required");
    /* The reason buffers are optional. */
    ck_assert_int_eq(gm_event_decode("x", 1, &ev, NULL, 0), GM_EINVAL);
    ck_assert_int_eq(gm_event_decode_ex("x", 1, &ev, NULL), GM_EINVAL);
}
END_TEST

/* ---- Properties -----------------------------------------------------------------------*/

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void rnd_ident(char *dst, size_t max, bool name_set)
{
    static const char name_chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    static const char id_chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:/@+=~";
    const char *set = name_set ? name_chars : id_chars;
    size_t nset = strlen(set);
    size_t len = rnd() % 4 == 0 ? max : 1 + rnd() % max; /* often at the bound */
    for (size_t i = 0; i < len; i++)
        dst[i] = set[rnd() % nset];
    if (name_set)
        dst[0] = set[rnd() % 62]; /* letter or digit first */
    dst[len] = '\0';
}

static int64_t rnd_qty(void)
{
    switch (rnd() % 6) {
    case 0:
        return 0;
    case 1:
        return GM_EVENT_MAX_QUANTITY;
    case 2:
        return (int64_t)(rnd() % 1000);
    case 3:
        return INT64_C(2147483648) + (int64_t)(rnd() % 3) - 1;
    default:
        return (int64_t)(rnd() & (uint64_t)GM_EVENT_MAX_QUANTITY);
    }
}

static int64_t rnd_time(void)
{
    return (int64_t)(rnd() % (uint64_t)(GM_EVENT_TIME_MAX_US - 1));
}

static void rnd_event(gm_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->type = rnd() % 2 ? GM_EVENT_USAGE : GM_EVENT_GPU;
    rnd_ident(ev->source, GM_EVENT_SOURCE_MAX, false);
    rnd_ident(ev->id, GM_EVENT_ID_MAX, false);
    rnd_ident(ev->tenant, GM_EVENT_TENANT_MAX, true);
    ev->time_us = rnd_time();
    ev->seq = 1 + rnd() % (uint64_t)GM_EVENT_MAX_QUANTITY;
    rnd_ident(ev->site, GM_EVENT_SITE_MAX, true);
    ev->gpu_us = rnd_qty();
    if (ev->type == GM_EVENT_USAGE) {
        rnd_ident(ev->model, GM_EVENT_MODEL_MAX, false);
        if (rnd() % 3)
            rnd_ident(ev->request_id, GM_EVENT_REQUEST_ID_MAX, false);
        ev->input_tokens = rnd_qty();
        ev->cached_tokens = rnd_qty();
        ev->output_tokens = rnd_qty();
        if (rnd() % 2)
            ev->reasoning_tokens = (int64_t)(rnd() % ((uint64_t)ev->output_tokens + 1));
        if (rnd() % 2)
            ev->cache_write_tokens = rnd_qty();
        ev->service_tier = (gm_service_tier)(rnd() % GM_SERVICE_TIER_COUNT);
    } else {
        rnd_ident(ev->device, GM_EVENT_DEVICE_MAX, false);
        rnd_ident(ev->policy, GM_EVENT_POLICY_MAX, true);
        ev->window_start_us = rnd_time();
        ev->window_end_us =
            ev->window_start_us + 1 +
            (int64_t)(rnd() % (uint64_t)(GM_EVENT_TIME_MAX_US - ev->window_start_us));
        ev->kernels = rnd_qty();
        ev->unattributed_us = rnd_qty();
    }
}

static uint64_t test_seed(void)
{
    const char *s = getenv("GM_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)gm_now_us();
    fprintf(stderr, "test_events: seed %" PRIu64 " (GM_TEST_SEED to replay)\n", seed);
    return seed;
}

START_TEST(test_random_valid_events_round_trip_through_the_canonical_form)
{
    rng_state = test_seed();
    for (int i = 0; i < 20000; i++) {
        gm_event ev;
        char err[256];
        rnd_event(&ev);
        ck_assert_msg(gm_event_check(&ev, err, sizeof err) == 0, "generated: %s", err);
        assert_round_trip(&ev, "random event");
    }
}
END_TEST

/* Any mutation of a valid message either is refused with a reason, or decodes to an event
 * whose canonical form decodes to the same event. */
START_TEST(test_random_mutations_are_refused_or_decode_consistently)
{
    rng_state = test_seed();
    static const char bytes[] = "{}[]\":,0123456789.-+eE \\u\xff\xc3\xa9tfn";
    int accepted = 0;
    for (int i = 0; i < 50000; i++) {
        gm_event ev;
        char buf[GM_EVENT_MAX_BYTES + 1];
        rnd_event(&ev);
        size_t n = gm_event_encode(&ev, buf, sizeof buf);
        ck_assert_uint_gt(n, 0);
        int edits = 1 + (int)(rnd() % 3);
        for (int k = 0; k < edits && n > 1; k++) {
            size_t at = rnd() % n;
            switch (rnd() % 3) {
            case 0: /* replace */
                buf[at] = bytes[rnd() % (sizeof bytes - 1)];
                break;
            case 1: /* delete */
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
                break;
            default: /* insert */
                if (n < GM_EVENT_MAX_BYTES) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = bytes[rnd() % (sizeof bytes - 1)];
                    n++;
                }
            }
        }
        char *msg = gm_xmalloc(n);
        memcpy(msg, buf, n);
        gm_event got;
        gm_event_error e;
        if (gm_event_decode_ex(msg, n, &got, &e) == 0) {
            accepted++;
            assert_round_trip(&got, "mutated event");
        } else {
            ck_assert_msg(e.field[0] && e.rule[0], "refusal without a reason");
        }
        free(msg);
    }
    /* Some mutations (a digit changed, an identifier letter changed) stay valid. */
    ck_assert_int_gt(accepted, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("events");
    TCase *tc = tcase_create("contract");
    tcase_add_test(tc, test_every_valid_fixture_decodes_and_round_trips);
    tcase_add_test(tc, test_identity_of_a_refused_message);
    tcase_add_test(tc, test_every_invalid_fixture_is_refused_naming_its_field_and_rule);
    tcase_add_test(tc, test_design_example_decodes_to_its_fields);
    tcase_add_test(tc, test_reason_names_event_field_rule_and_offending_text);
    tcase_add_test(tc, test_reason_names_event_even_when_source_follows_the_error);
    tcase_add_test(tc, test_reason_shows_message_bytes_as_printable_ascii);
    tcase_add_test(tc, test_quantities_are_integer_text_up_to_2_pow_53_minus_1);
    tcase_add_test(tc, test_message_of_8192_bytes_passes_and_8193_is_refused);
    tcase_add_test(tc, test_every_truncation_of_an_event_is_refused);
    tcase_add_test(tc, test_invalid_utf8_is_refused_with_its_byte_offset);
    tcase_add_test(tc, test_encode_refuses_a_buffer_too_small_and_an_invalid_event);
    tcase_add_test(tc, test_empty_and_null_messages_are_refused);
    tcase_add_test(tc, test_old_events_keep_their_meaning_and_canonical_bytes);
    tcase_add_test(tc, test_reasoning_above_output_is_refused_naming_both_fields);
    tcase_add_test(tc, test_epoch_is_optional_default_0_and_part_of_the_event);
    suite_add_tcase(s, tc);
    TCase *prop = tcase_create("properties");
    tcase_add_test(prop, test_random_valid_events_round_trip_through_the_canonical_form);
    tcase_add_test(prop, test_random_mutations_are_refused_or_decode_consistently);
    suite_add_tcase(s, prop);
    return gm_test_run(s);
}
