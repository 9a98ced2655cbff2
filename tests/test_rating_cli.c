/* Tests of `gridmeter quote` and `gridmeter ratecard`: the commands run on the example cards
 * and contracts, and their output carries the hand-computed amounts. */
#include "support.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EX  GM_SOURCE_DIR "/examples/ratecards/"
#define BIN GM_BINARY_DIR "/cli/gridmeter"

/* Runs a shell command; returns its exit status and its stdout (malloc'd). */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "cannot run %s", cmd);
    size_t cap = 1 << 16, n = 0, k;
    char *buf = malloc(cap);
    while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_quote_prints_event_amounts_and_invoice_totals)
{
    char *out;
    int rc =
        run(BIN " quote --rate-card " EX "list-usd-v1.json," EX "list-usd-v2.json --contract " EX
                "contract-acme.json < " EX "usage-sample.jsonl",
            &out);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    /* acme, 512 input tokens of llama-3.1-70b at 0.60/1M = 0.0003072 (hand-computed). */
    ck_assert_msg(strstr(out, "\"amounts\":{\"input\":\"0.000307200000000000\""), "%s", out);
    /* acme's contract output price 0.70/1M: 128 tokens = 0.0000896. */
    ck_assert_msg(strstr(out, "\"output\":\"0.000089600000000000\""), "%s", out);
    /* The unknown tenant is priced by the default card and flagged. */
    ck_assert_msg(strstr(out, "\"flags\":[\"unknown_tenant\",\"default_model\"]"), "%s", out);
    /* acme's month: usage rounds to 0.00, commitment 100.00, 50.00 of credit: total 50.00. */
    ck_assert_msg(
        strstr(out, "\"commitment\":\"100.00\",\"credit\":\"-50.00\",\"total\":\"50.00\""), "%s",
        out);
    free(out);
}
END_TEST

/* docs/rating.md, "Free allowances" and "Commitments over a term" through the command: newco's
 * one November event (ams1, metro; default entry: output 1,000 x 0.000002) and
 * examples/ratecards/contract-newco.json: 500 output tokens free, -(500 x 0.000002) = -0.001
 * exact (0.00 rounded); the 20.00 minimum from 16 November is 20.00 x 1296000/2592000 =
 * 10.00 this month, the shortfall tops the month up to a total of 10.00. */
START_TEST(test_quote_shows_allowance_lines_and_the_pro_rated_minimum)
{
    char *out;
    int rc = run(BIN " quote --rate-card " EX "list-usd-v1.json --contract " EX
                     "contract-newco.json < " EX "usage-sample.jsonl",
                 &out);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    const char *inv = strstr(out, "\"tenant\":\"newco\",\"period_start\"");
    ck_assert_msg(inv != NULL, "%s", out);
    ck_assert_msg(strstr(inv, "\"kind\":\"allowance\",\"description\":\"free allowance 500 of "
                              "500 output tokens a month: some-new-model, metro\",\"dimension\":"
                              "\"output\""),
                  "%s", inv);
    ck_assert_msg(strstr(inv, "\"metered_quantity\":\"500\""), "%s", inv);
    ck_assert_msg(strstr(inv, "\"amount_exact\":\"-0.001000000000000000\""), "%s", inv);
    ck_assert_msg(strstr(inv, "\"commitment_minimum\":\"10.00\",\"commitment\":\"10.00\""), "%s",
                  inv);
    ck_assert_msg(strstr(inv, "\"total\":\"10.00\""), "%s", inv);
    free(out);
}
END_TEST

/* docs/rating.md, Token kinds, example 1 through the command: a usage revision 1.1 event on
 * examples/ratecards/kinds-usd-v1.json prices each kind once (output 300 - 200 reasoning) and
 * the request fee; the event total is 0.0021056. */
START_TEST(test_quote_prices_token_kinds_and_the_request_fee)
{
    char *out;
    int rc = run("echo '{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                 "\"source\":\"n1\",\"id\":\"1\",\"time\":\"2026-11-05T10:00:00Z\","
                 "\"subject\":\"acme\",\"data\":{\"seq\":1,\"site\":\"fra1\","
                 "\"model\":\"think-70b\",\"input_tokens\":768,\"cached_tokens\":256,"
                 "\"cache_write_tokens\":1024,\"output_tokens\":300,\"reasoning_tokens\":200,"
                 "\"gpu_us\":0,\"service_tier\":\"batch\"}}' | " BIN " quote --rate-card " EX
                 "kinds-usd-v1.json",
                 &out);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "\"quantities\":{\"input\":768,\"cached\":256,\"output\":100,"
                              "\"gpu\":0,\"cache_write\":1024,\"reasoning\":200,\"request\":1}"),
                  "%s", out);
    ck_assert_msg(strstr(out, "\"service_tier\":\"batch\""), "%s", out);
    /* the card lists no service_tiers: batch at multiplier 1, flagged, keyed as standard */
    ck_assert_msg(strstr(out, "\"variant\":\"\""), "%s", out);
    ck_assert_msg(strstr(out, "\"unlisted_variant\""), "%s", out);
    ck_assert_msg(strstr(out, "\"reasoning\":\"0.000500000000000000\""), "%s", out);
    ck_assert_msg(strstr(out, "\"request\":\"0.000100000000000000\""), "%s", out);
    ck_assert_msg(strstr(out, "\"amount\":\"0.002105600000000000\""), "%s", out);
    free(out);
}
END_TEST

/* Regression (issue 18: `quote` billed duplicate events, same source and id, twice): the
 * sample sent twice gives the same invoices as once, every second copy listed as a duplicate. */
START_TEST(test_quote_drops_duplicate_events_as_the_rater_does)
{
    char *once, *twice;
    const char *q = BIN " quote --no-events --rate-card " EX "list-usd-v1.json," EX
                        "list-usd-v2.json --contract " EX "contract-acme.json";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s < %susage-sample.jsonl", q, EX);
    ck_assert_int_eq(run(cmd, &once), 0);
    snprintf(cmd, sizeof cmd, "cat %susage-sample.jsonl %susage-sample.jsonl | %s", EX, EX, q);
    ck_assert_int_eq(run(cmd, &twice), 0);
    const char *i1 = strstr(once, "\"invoices\""), *i2 = strstr(twice, "\"invoices\"");
    ck_assert_ptr_nonnull(i1);
    ck_assert_ptr_nonnull(i2);
    ck_assert_str_eq(i1, i2); /* the same invoices, line for line */
    ck_assert_msg(strstr(once, "\"duplicates\":[]"), "%s", once);
    ck_assert_msg(strstr(twice, "\"duplicates\":[\n  {\"line\":"), "%s", twice);
    ck_assert_msg(strstr(twice, "\"first_line\":1,"), "%s", twice);
    free(once);
    free(twice);
}
END_TEST

/* Regression (issue 18: GPU lines read microseconds beside a per-GPU-second price): quote's
 * lines are billing's, quantity in GPU-seconds beside the metered microseconds. */
START_TEST(test_quote_gpu_lines_are_in_gpu_seconds)
{
    char *out;
    ck_assert_int_eq(run(BIN " quote --no-events --rate-card " EX "list-usd-v1.json < " EX
                             "usage-sample.jsonl",
                         &out),
                     0);
    ck_assert_msg(strstr(out, "\"unit\":\"gpu_second\""), "%s", out);
    ck_assert_msg(strstr(out, "\"metered_unit\":\"gpu_us\""), "%s", out);
    ck_assert_msg(!strstr(out, "\"unit\":\"gpu_us\""), "%s", out);
    free(out);
}
END_TEST

/* Regression (issue 18: `ratecard validate` accepted a contract whose card does not exist). */
START_TEST(test_ratecard_validate_refuses_a_contract_of_a_missing_card)
{
    char path[128], cmd[512], *out;
    snprintf(path, sizeof path, "/tmp/gmtest-contract-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"tenant\":\"x\",\"card_id\":\"nope\",\"currency\":\"USD\"}", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, BIN " ratecard validate " EX "list-usd-v1.json %s", path);
    ck_assert_int_ne(run(cmd, &out), 0);
    ck_assert_msg(strstr(out, "card nope does not exist"), "%s", out);
    free(out);
    unlink(path);
}
END_TEST

/* Regression (issue 12: a contract for "Acme Corp" validated and then matched no event): the
 * contract's tenant follows the rule of events' subject, named with the field. */
START_TEST(test_ratecard_validate_refuses_a_tenant_no_event_can_carry)
{
    static const char *const tenants[] = {
        "Acme Corp", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "-acme"};
    static const char *const rules[] = {"tenant: must use only A-Z a-z 0-9 . _ - (first a letter "
                                        "or digit), got 0x20 at position 4",
                                        "tenant: must be at most 64 bytes, got 65",
                                        "tenant: must start with a letter or digit, got '-'"};
    for (int i = 0; i < 3; i++) {
        char path[128], cmd[512], *out;
        snprintf(path, sizeof path, "/tmp/gmtest-contract-ident-%d.json", (int)getpid());
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "{\"tenant\":\"%s\",\"currency\":\"USD\"}", tenants[i]);
        fclose(f);
        snprintf(cmd, sizeof cmd, BIN " ratecard validate " EX "list-usd-v1.json %s", path);
        ck_assert_int_ne(run(cmd, &out), 0);
        ck_assert_msg(strstr(out, rules[i]), "%s", out);
        ck_assert_msg(strstr(out, "can never match an event"), "%s", out);
        free(out);
        unlink(path);
    }
}
END_TEST

START_TEST(test_quote_lists_invalid_events_and_exits_1)
{
    char *out;
    int rc = run("printf '{\"specversion\":\"1.0\"}\\n' | " BIN " quote --rate-card " EX
                 "list-usd-v1.json",
                 &out);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "\"rejected\":[\n  {\"line\":1,\"error\":"), "%s", out);
    free(out);
    rc = run(BIN " quote < /dev/null 2>&1", &out);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--rate-card FILE is required"), "%s", out);
    free(out);
}
END_TEST

START_TEST(test_ratecard_validate_reports_each_file)
{
    char *out;
    int rc = run(BIN " ratecard validate " EX "list-usd-v1.json " EX "list-jpy-v1.json " EX
                     "contract-kaiju.json",
                 &out);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "list-usd-v1.json: ok: card list-usd v1 (default card): USD"), "%s",
                  out);
    ck_assert_msg(strstr(out, "contract-kaiju.json: ok: contract of tenant kaiju: JPY"), "%s", out);
    free(out);
    FILE *f = fopen("bad-card.json", "w");
    fputs("{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
          "\"currency\":\"USD\",\"unknown_models\":\"reject\",\"prices\":{\"m\":{"
          "\"input\":{\"per_token\":\"0\"},\"cached\":{\"per_token\":\"0\"},"
          "\"output\":{\"per_token\":\"0\"},\"gpu\":{\"per_gpu_hour\":\"2.50\"}}}}",
          f);
    fclose(f);
    rc = run(BIN " ratecard validate bad-card.json", &out);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "bad-card.json: error: prices.m.gpu.per_gpu_hour: 2.50 per GPU-hour "
                              "is 0.000694444444444444... per GPU-second, not exact"),
                  "%s", out);
    free(out);
    remove("bad-card.json");
}
END_TEST

/* GRIDMETER_NOW sets every gridmeter process's clock; a value that is not an instant stops
 * the command (exit 2) instead of being ignored. */
/* Reviewer Q finding 8: a card and contract that are not exact together (the card's batch 0.5
 * x the contract's 0.000000000001 per token) are refused by quote up front, exit 2, as
 * `ratecard validate` refuses them (each event was rejected without naming the contract). */
START_TEST(test_quote_refuses_a_book_that_does_not_check)
{
    char card[128], con[128], cmd[600], *out;
    snprintf(card, sizeof card, "/tmp/gmtest-vcard-%d.json", (int)getpid());
    snprintf(con, sizeof con, "/tmp/gmtest-vcon-%d.json", (int)getpid());
    FILE *f = fopen(card, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"card_id\":\"variants-usd\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
          "\"currency\":\"USD\",\"unknown_models\":\"reject\",\"prices\":{\"long-70b\":{"
          "\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{\"per_1m_tokens\":\"0.30\"},"
          "\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":{\"per_gpu_hour\":\"0\"}}},"
          "\"service_tiers\":{\"batch\":\"0.5\"}}",
          f);
    fclose(f);
    f = fopen(con, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"tenant\":\"cx2\",\"card_id\":\"variants-usd\",\"currency\":\"USD\",\"prices\":{"
          "\"long-70b\":{\"input\":{\"per_1m_tokens\":\"0.000001\"}}}}",
          f);
    fclose(f);
    snprintf(cmd, sizeof cmd, BIN " quote --rate-card %s --contract %s < /dev/null 2>&1", card,
             con);
    ck_assert_int_eq(run(cmd, &out), 2);
    ck_assert_msg(strstr(out, "gridmeter quote: contract cx2: card variants-usd v1 "
                              "service_tiers.batch: 0.5 x the contract's prices.long-70b.input "
                              "(0.000000000001)"),
                  "%s", out);
    free(out);
    /* show lists the card's multipliers and its variants' prices (reviewer Q finding 7) */
    snprintf(cmd, sizeof cmd, BIN " ratecard show %s", card);
    ck_assert_int_eq(run(cmd, &out), 0);
    ck_assert_msg(strstr(out, "# service_tier\tmultiplier\nbatch\t0.500000\npriority\tnot listed "
                              "(priced as standard)\n"),
                  "%s", out);
    ck_assert_msg(strstr(out, "long-70b\tstandard\tbatch\tinput\t0.000000300000\ttoken\n"), "%s",
                  out);
    free(out);
    unlink(card);
    unlink(con);
}
END_TEST

START_TEST(test_gridmeter_now_moves_the_clock_or_is_refused)
{
    char *out;
    int rc = run("GRIDMETER_NOW=2028-02-29T12:00:00Z GRIDMETER_LOG_LEVEL=info " BIN " version 2>&1",
                 &out);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "clock moved by GRIDMETER_NOW") &&
                      strstr(out, "now=2028-02-29T12:00:0"),
                  "%s", out);
    free(out);
    rc = run("GRIDMETER_NOW=2028-02-30T12:00:00Z " BIN " version 2>&1", &out);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "GRIDMETER_NOW=\"2028-02-30T12:00:00Z\""), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rating cli");
    TCase *tc = tcase_create("cli");
    tcase_add_test(tc, test_quote_prints_event_amounts_and_invoice_totals);
    tcase_add_test(tc, test_quote_prices_token_kinds_and_the_request_fee);
    tcase_add_test(tc, test_quote_shows_allowance_lines_and_the_pro_rated_minimum);
    tcase_add_test(tc, test_quote_lists_invalid_events_and_exits_1);
    tcase_add_test(tc, test_quote_refuses_a_book_that_does_not_check);
    tcase_add_test(tc, test_quote_drops_duplicate_events_as_the_rater_does);
    tcase_add_test(tc, test_quote_gpu_lines_are_in_gpu_seconds);
    tcase_add_test(tc, test_ratecard_validate_refuses_a_contract_of_a_missing_card);
    tcase_add_test(tc, test_ratecard_validate_refuses_a_tenant_no_event_can_carry);
    tcase_add_test(tc, test_ratecard_validate_reports_each_file);
    tcase_add_test(tc, test_gridmeter_now_moves_the_clock_or_is_refused);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
