/* End to end through real Kafka and PostgreSQL: usage produced to the broker, `gridmeter rater`
 * prices it, `gridmeter close` finalizes September and October 2026 for a tenant whose
 * contract has a free allowance and a minimum commitment over a term from 16 September to
 * 16 October (docs/rating.md, "Free allowances" and "Commitments over a term"). Hand-computed:
 *   September (30 days = 2,592,000 s): 15 days in the term, 1,000,000.00 x 1296000/2592000 =
 *     500,000.00, so the total is 500,000.00 whatever the usage (it is far below);
 *   October (31 days = 2,678,400 s, no usage): 15 days, 1,000,000.00 x 1296000/2678400 =
 *     483,870.9677... -> 483,870.97;
 *   the allowance line: the first 1,000 input tokens of the first input line with a price,
 *     amount -(1000 x its unit price), stored as kind 'allowance'. */
#include "gm_billing.h"
#include "gm_ledger.h"
#include "rater_harness.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int64_t T(const char *s)
{
    int64_t us;
    char why[128];
    ck_assert(gm_time_parse(s, strlen(s), &us, why, sizeof why) == 0);
    return us;
}

static int run(const char *const *argv, char *out, size_t cap)
{
    return h_run(argv, NULL, out, cap);
}

#define expect_value h_expect_value

static const char *contract =
    "{\"tenant\":\"globex\",\"card_id\":\"list-usd\",\"currency\":\"USD\","
    "\"free_allowances\":{\"input\":\"1000\"},"
    "\"minimum_commitment\":\"1000000.00\","
    "\"commitment_start\":\"2026-09-16T00:00:00Z\","
    "\"commitment_end\":\"2026-10-16T00:00:00Z\"}";

START_TEST(test_allowance_and_pro_rated_commitment_through_rater_and_close)
{
    gm_clock_set_us(T("2026-09-01T00:00:00Z"));
    h_env e;
    h_env_open(&e, "terms", 2);
    setenv("GRIDMETER_DB", e.conninfo, 1);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char msg[512], err[2048];
    ck_assert_msg(
        gm_ledger_import(c, contract, strlen(contract), msg, sizeof msg, err, sizeof err) == 0,
        "%s", err);
    h_expect x = {0};
    h_traffic t = {.sources = 4,
                   .events = 3000,
                   .seed = 15,
                   .start_us = T("2026-09-20T00:00:00Z"),
                   .step_us = 1000000};
    h_produce(&e, &t, &x);
    gm_clock_set_us(T("2026-09-21T00:00:00Z"));
    static const char *const idle[] = {"--exit-idle-ms", "4000", NULL};
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "terms", idle)), 0);
    h_verify(&e, &x);
    expect_value(c,
                 "SELECT count(*) > 0 FROM gm.charges WHERE tenant = 'globex'"
                 " AND dimension = 'input' AND unit_price > 0",
                 "t");

    static char out[1 << 16];
    gm_clock_set_us(T("2026-10-05T00:00:00Z"));
    const char *close9[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", "2026-09", NULL};
    ck_assert_msg(run(close9, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, " 0 failed") != NULL, "%s", out);
    gm_clock_set_us(T("2026-11-05T00:00:00Z"));
    const char *close10[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", "2026-10", NULL};
    ck_assert_msg(run(close10, out, sizeof out) == 0, "%s", out);

    /* September: the pro-rated minimum is the total. */
    expect_value(c,
                 "SELECT status || ' ' || total FROM audit.invoices WHERE tenant = 'globex'"
                 " AND period_start = '2026-09-01Z'",
                 "finalized 500000.00");
    expect_value(c,
                 "SELECT description FROM audit.invoice_lines l JOIN audit.invoices i"
                 " USING (invoice_id) WHERE i.tenant = 'globex' AND i.period_start ="
                 " '2026-09-01Z' AND l.kind = 'commitment'",
                 "minimum commitment 1000000.00 USD x 1296000/2592000 s = 500000.00, shortfall");
    /* One allowance line: 1,000 tokens at the unit price of the first input usage line that
     * has a price, amount exactly -(1000 x that price). */
    expect_value(c,
                 "SELECT count(*) || ' ' || sum(quantity) || ' ' ||"
                 " bool_and(amount_exact = -(quantity * unit_price))"
                 " FROM audit.invoice_lines l JOIN audit.invoices i USING (invoice_id)"
                 " WHERE i.tenant = 'globex' AND i.period_start = '2026-09-01Z'"
                 " AND l.kind = 'allowance' AND l.dimension = 'input'",
                 "1 1000 true");
    expect_value(c,
                 "SELECT (a.unit_price = u.unit_price AND a.model = u.model AND a.site_tier ="
                 " u.site_tier)::text FROM audit.invoice_lines a JOIN audit.invoices i USING"
                 " (invoice_id), LATERAL (SELECT * FROM audit.invoice_lines u WHERE u.invoice_id"
                 " = a.invoice_id AND u.kind = 'usage' AND u.dimension = 'input' AND"
                 " u.unit_price > 0 ORDER BY u.line_no LIMIT 1) u WHERE i.tenant = 'globex'"
                 " AND i.period_start = '2026-09-01Z' AND a.kind = 'allowance'",
                 "true");
    /* October: no usage, 15 of 31 days in the term. */
    expect_value(c,
                 "SELECT status || ' ' || total FROM audit.invoices WHERE tenant = 'globex'"
                 " AND period_start = '2026-10-01Z'",
                 "finalized 483870.97");
    /* The list amounts reconcile (allowances, like discounts, are contract terms). */
    expect_value(c, "SELECT count(*) FILTER (WHERE difference <> 0) FROM audit.reconciliation",
                 "0");
    gm_rating_book *book = NULL;
    ck_assert(gm_ledger_load_book(c, &book, err, sizeof err) == 0);
    gm_billing_ctx ctx = {c, book, 1, T("2026-11-05T00:00:00Z"), 72, NULL};
    ck_assert_msg(gm_billing_check(&ctx, NULL, err, sizeof err) == 0, "%s", err);
    gm_rating_book_free(book);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("billing_terms_e2e");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_allowance_and_pro_rated_commitment_through_rater_and_close);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
