/* Unit tests of the contract terms applied at invoice time (docs/rating.md, "Free allowances"
 * and "Commitments over a term"): hand-computed allowance lines, the pro-rated minimum of
 * partial months (month ends, 29 February, half-even ties), a total over a term trued up in its
 * last month ("Total over a term": spend after allowances and discount, credits after the
 * true-up, the 36-month limit on the leap-day calendar) and the validator's messages. */
#include "gm_rating.h"
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(x) x, strlen(x)

#define NOV1_2026 INT64_C(1793491200000000) /* 2026-11-01T00:00:00Z */
#define FEB1_2028 INT64_C(1832976000000000) /* 2028-02-01T00:00:00Z */
#define DAY       GM_US_PER_DAY

/* m5: input 0.05 per 1M (0.00000005 a token), output 1.00 per 1M, gpu 0.001 per second;
 * free: everything 0; sites fra1 (metro, x1) and tro1 (remote, x1.25). */
static const char *card =
    "{\"card_id\":\"list\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
    "\"currency\":\"USD\",\"default_card\":true,\"unknown_models\":\"reject\","
    "\"prices\":{"
    " \"m5\":{\"input\":{\"per_1m_tokens\":\"0.05\"},\"cached\":{\"per_1m_tokens\":\"0.025\"},"
    "   \"output\":{\"per_1m_tokens\":\"1.00\"},\"gpu\":{\"per_gpu_second\":\"0.001\"}},"
    " \"free\":{\"input\":{\"per_1m_tokens\":\"0\"},\"cached\":{\"per_1m_tokens\":\"0\"},"
    "   \"output\":{\"per_1m_tokens\":\"0\"},\"gpu\":{\"per_gpu_second\":\"0\"}}},"
    "\"site_tiers\":{\"metro\":{\"sites\":[\"fra1\"]},"
    " \"remote\":{\"multiplier\":\"1.25\",\"sites\":[\"tro1\"]}},"
    "\"default_site_tier\":\"metro\"}";

static const char *dec(gm_i128 v, int scale)
{
    static char buf[8][64];
    static int k;
    char *b = buf[k++ % 8];
    gm_dec_format(v, scale, b, 64);
    return b;
}

static gm_rating_book *book_with(const char *contract)
{
    gm_rating_book *b = gm_rating_book_new();
    char err[512];
    ck_assert_msg(gm_rating_book_add_card(b, S(card), err, sizeof err) == 0, "card: %s", err);
    ck_assert_msg(gm_rating_book_add_contract(b, S(contract), err, sizeof err) == 0, "contract: %s",
                  err);
    return b;
}

static gm_usage use(const char *model, const char *site, int64_t t, int64_t in, int64_t out,
                    int64_t gpu_us)
{
    gm_usage u = {"acme", model, site, t, {in, 0, out, gpu_us, 0, 0, 1}, GM_RATING_SVC_STANDARD};
    return u;
}

static gm_invoice *invoice_of(gm_rating_book *b, int64_t month_us, const gm_usage *ev, size_t n)
{
    char err[512];
    gm_rating_period *p = gm_rating_period_new(b, "acme", month_us);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(gm_rating_period_add_event(p, &ev[i], NULL, err, sizeof err) == 0, "%s", err);
    gm_invoice *inv;
    ck_assert_msg(gm_rating_period_invoice(p, NULL, &inv, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_invoice_check(inv, err, sizeof err) == 0, "%s", err);
    gm_rating_period_free(p);
    return inv;
}

/* A contract of acme with `extra` members (JSON text after the currency). */
static char *contract(const char *extra)
{
    static const char *head = "{\"tenant\":\"acme\",\"currency\":\"USD\"";
    char *s = malloc(strlen(head) + strlen(extra) + 4);
    sprintf(s, "%s%s%s}", head, *extra ? "," : "", extra);
    return s;
}

static void expect_refused(const char *extra, const char *needle)
{
    char *k = contract(extra);
    gm_rating_contract *c = NULL;
    char err[600];
    int rc = gm_rating_contract_parse(S(k), &c, err, sizeof err);
    ck_assert_msg(rc == GM_EINVAL, "accepted (%d): %s", rc, k);
    ck_assert_msg(strstr(err, needle) != NULL, "for %s:\n got: %s\n want: %s", k, err, needle);
    free(k);
}

/* ---- Free allowances -------------------------------------------------------------------- */

START_TEST(test_allowance_falls_on_usage_lines_in_line_order)
{
    /* input: 3,000,000 at fra1 (metro, 0.00000005) = 0.15 and 2,000,000 at tro1 (remote,
     * 0.0000000625) = 0.125 -> 0.12 (half even). 1,000,000 free falls on line 1 (metro sorts
     * before remote): -1,000,000 x 0.00000005 = -0.05. Total 0.15 + 0.12 - 0.05 = 0.22. */
    char *k = contract("\"free_allowances\":{\"input\":\"1000000\"}");
    gm_rating_book *b = book_with(k);
    gm_usage ev[2] = {use("m5", "fra1", NOV1_2026, 3000000, 0, 0),
                      use("m5", "tro1", NOV1_2026 + DAY, 2000000, 0, 0)};
    gm_invoice *inv = invoice_of(b, NOV1_2026, ev, 2);
    ck_assert_uint_eq(inv->n_lines, 3);
    ck_assert_str_eq(inv->lines[0].site_tier, "metro");
    ck_assert_str_eq(dec(inv->lines[0].amount_minor, 2), "0.15");
    ck_assert_str_eq(dec(inv->lines[1].amount_minor, 2), "0.12");
    const gm_invoice_line *a = &inv->lines[2];
    ck_assert_int_eq(a->kind, GM_LINE_ALLOWANCE);
    ck_assert_str_eq(gm_line_kind_name(a->kind), "allowance");
    ck_assert_int_eq(a->dim, GM_DIM_INPUT);
    ck_assert_str_eq(a->model, "m5");
    ck_assert_str_eq(a->site_tier, "metro");
    ck_assert_int_eq(a->card_version, 1);
    ck_assert_str_eq(dec(a->qty, 0), "1000000");
    ck_assert_int_eq(a->unit_price_p, 50000);
    ck_assert_str_eq(dec(a->amount_e18, 18), "-0.050000000000000000");
    ck_assert_str_eq(dec(a->amount_minor, 2), "-0.05");
    ck_assert_msg(strstr(a->description, "free allowance 1000000 of 1000000 input tokens"), "%s",
                  a->description);
    ck_assert_str_eq(dec(inv->usage_minor, 2), "0.27");
    ck_assert_str_eq(dec(inv->allowance_minor, 2), "-0.05");
    ck_assert_str_eq(dec(inv->total_minor, 2), "0.22");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_allowance_spills_to_the_next_line_and_never_below_zero)
{
    /* 4,000,000 free: line 1 all 3,000,000 (-0.15), line 2 1,000,000 x 0.0000000625 =
     * -0.0625 -> -0.06. Total 0.15 + 0.12 - 0.15 - 0.06 = 0.06. */
    char *k = contract("\"free_allowances\":{\"input\":\"4000000\"}");
    gm_rating_book *b = book_with(k);
    gm_usage ev[2] = {use("m5", "fra1", NOV1_2026, 3000000, 0, 0),
                      use("m5", "tro1", NOV1_2026 + DAY, 2000000, 0, 0)};
    gm_invoice *inv = invoice_of(b, NOV1_2026, ev, 2);
    ck_assert_uint_eq(inv->n_lines, 4);
    ck_assert_str_eq(dec(inv->lines[2].qty, 0), "3000000");
    ck_assert_str_eq(dec(inv->lines[2].amount_minor, 2), "-0.15");
    ck_assert_str_eq(inv->lines[3].site_tier, "remote");
    ck_assert_str_eq(dec(inv->lines[3].qty, 0), "1000000");
    ck_assert_str_eq(dec(inv->lines[3].amount_e18, 18), "-0.062500000000000000");
    ck_assert_str_eq(dec(inv->lines[3].amount_minor, 2), "-0.06");
    ck_assert_str_eq(dec(inv->total_minor, 2), "0.06");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
    /* 10,000,000 free covers everything: -0.15 and -0.125 -> -0.12 (half even is symmetric),
     * total 0.00, never negative; 5,000,000 of the allowance is unused (not carried over). */
    k = contract("\"free_allowances\":{\"input\":\"10000000\"}");
    b = book_with(k);
    inv = invoice_of(b, NOV1_2026, ev, 2);
    ck_assert_uint_eq(inv->n_lines, 4);
    ck_assert_str_eq(dec(inv->lines[3].qty, 0), "2000000");
    ck_assert_str_eq(dec(inv->lines[3].amount_minor, 2), "-0.12");
    ck_assert_str_eq(dec(inv->total_minor, 2), "0.00");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_allowance_skips_free_lines_and_counts_gpu_in_microseconds)
{
    /* Model "free" sorts before "m5" but costs 0: the free units go to m5. gpu: 7,200 s at
     * 0.001 = 7.20; 3,600,000,000 us (one GPU-hour) free = -3.60. */
    char *k = contract("\"free_allowances\":{\"input\":\"1000000\",\"gpu\":\"3600000000\"}");
    gm_rating_book *b = book_with(k);
    gm_usage ev[2] = {use("free", "fra1", NOV1_2026, 500000, 0, 0),
                      use("m5", "fra1", NOV1_2026, 3000000, 0, INT64_C(7200000000))};
    gm_invoice *inv = invoice_of(b, NOV1_2026, ev, 2);
    /* usage: input free, input m5, gpu m5; allowances: input m5, gpu m5 */
    ck_assert_uint_eq(inv->n_lines, 5);
    ck_assert_int_eq(inv->lines[3].kind, GM_LINE_ALLOWANCE);
    ck_assert_str_eq(inv->lines[3].model, "m5");
    ck_assert_str_eq(dec(inv->lines[3].amount_minor, 2), "-0.05");
    ck_assert_int_eq(inv->lines[4].dim, GM_DIM_GPU);
    ck_assert_str_eq(dec(inv->lines[4].amount_minor, 2), "-3.60");
    ck_assert_str_eq(dec(inv->total_minor, 2), "3.70"); /* 0 + 0.15 + 7.20 - 0.05 - 3.60 */
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_allowance_before_discount_commitment_and_credit)
{
    /* Usage 0.15 + 0.12 = 0.27, allowance -0.05: net 0.22. Discount 10 % of 0.22 = 0.022 ->
     * -0.02, split over the net amounts 0.10 : 0.12 (the allowance line weighs 0): in cents
     * 2 x 10/22 = 0 r 20, 2 x 12/22 = 1 r 2, the cent left goes to line 1: 1 and 1.
     * Minimum 1.00: shortfall 1.00 - 0.20 = 0.80. Credit 0.50 of 1.00 due. Total 0.50. */
    char *k = contract("\"free_allowances\":{\"input\":\"1000000\"},\"discount_percent\":\"10\","
                       "\"minimum_commitment\":\"1.00\",\"prepaid_credits\":\"0.50\"");
    gm_rating_book *b = book_with(k);
    gm_usage ev[2] = {use("m5", "fra1", NOV1_2026, 3000000, 0, 0),
                      use("m5", "tro1", NOV1_2026 + DAY, 2000000, 0, 0)};
    gm_invoice *inv = invoice_of(b, NOV1_2026, ev, 2);
    ck_assert_uint_eq(inv->n_lines, 6);
    ck_assert_int_eq(inv->lines[3].kind, GM_LINE_DISCOUNT);
    ck_assert_str_eq(dec(inv->lines[3].amount_minor, 2), "-0.02");
    ck_assert_str_eq(dec(inv->lines[0].discount_minor, 2), "-0.01");
    ck_assert_str_eq(dec(inv->lines[1].discount_minor, 2), "-0.01");
    ck_assert_str_eq(dec(inv->lines[2].discount_minor, 2), "0.00");
    ck_assert_int_eq(inv->lines[4].kind, GM_LINE_COMMITMENT);
    ck_assert_str_eq(dec(inv->lines[4].amount_minor, 2), "0.80");
    ck_assert_int_eq(inv->lines[5].kind, GM_LINE_CREDIT);
    ck_assert_str_eq(dec(inv->lines[5].amount_minor, 2), "-0.50");
    ck_assert_str_eq(dec(inv->lines[2].credit_minor, 2), "0.00");
    ck_assert_str_eq(dec(inv->total_minor, 2), "0.50");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_allowance_validation_names_the_field_and_the_rule)
{
    expect_refused("\"free_allowances\":{\"inputs\":\"1\"}",
                   "free_allowances.inputs: unknown field (allowed: input, cached, output, gpu, "
                   "cache_write, reasoning, request)");
    expect_refused("\"free_allowances\":{\"input\":1000}",
                   "free_allowances.input: must be a positive integer string in tokens (the "
                   "free units per month, e.g. \"1000000\"), got the number 1000");
    expect_refused("\"free_allowances\":{\"gpu\":\"0\"}",
                   "free_allowances.gpu: must be a positive integer string in GPU-microseconds");
    expect_refused("\"free_allowances\":{\"request\":\"1.5\"}",
                   "free_allowances.request: must be a positive integer string in requests");
    expect_refused("\"free_allowances\":[]", "free_allowances: must be an object");
    expect_refused("\"tiers\":[{\"dimension\":\"output\",\"mode\":\"graduated\",\"bands\":["
                   "{\"up_to\":null,\"price\":{\"per_1m_tokens\":\"1\"}}]}],"
                   "\"free_allowances\":{\"output\":\"500\"}",
                   "free_allowances.output: tiers[0] prices every model's output usage, so the "
                   "allowance would never apply (allowances apply to usage lines; give the rule "
                   "a first band at price \"0\" instead: {\"up_to\": \"500\", \"price\": "
                   "{\"per_token\": \"0\"}})");
    /* Accepted, and shown by get_info. */
    char *k = contract("\"free_allowances\":{\"input\":\"1000000\",\"request\":\"100\"}");
    gm_rating_contract *c;
    char err[256];
    ck_assert_int_eq(gm_rating_contract_parse(S(k), &c, err, sizeof err), 0);
    gm_rating_contract_info info;
    gm_rating_contract_get_info(c, &info);
    ck_assert_str_eq(dec(info.free_allowance[GM_DIM_INPUT], 0), "1000000");
    ck_assert_str_eq(dec(info.free_allowance[GM_DIM_REQUEST], 0), "100");
    ck_assert_str_eq(dec(info.free_allowance[GM_DIM_OUTPUT], 0), "0");
    gm_rating_contract_free(c);
    free(k);
}
END_TEST

/* ---- Commitments over a term ----------------------------------------------------------- */

/* The commitment line of acme's month (no usage), or "none". */
static const char *commitment_of(const char *extra, int64_t month_us)
{
    static char buf[64];
    char *k = contract(extra);
    gm_rating_book *b = book_with(k);
    gm_invoice *inv = invoice_of(b, month_us, NULL, 0);
    snprintf(buf, sizeof buf, "none");
    for (size_t i = 0; i < inv->n_lines; i++)
        if (inv->lines[i].kind == GM_LINE_COMMITMENT)
            gm_dec_format(inv->lines[i].amount_minor, 2, buf, sizeof buf);
    ck_assert_str_eq(dec(inv->commitment_due_minor, 2),
                     strcmp(buf, "none") ? buf : "0.00"); /* no usage: shortfall = minimum */
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
    return buf;
}

START_TEST(test_commitment_is_pro_rated_by_seconds_in_partial_months)
{
    /* November 2026: 30 days = 2,592,000 s. From the 16th: 15 days = 1,296,000 s,
     * 100.00 x 1296000/2592000 = 50.00. From the 11th: 20 days, 66.666... -> 66.67. */
    const char *t = "\"minimum_commitment\":\"100.00\",\"commitment_start\":";
    char x[200];
    snprintf(x, sizeof x, "%s\"2026-11-16T00:00:00Z\"", t);
    ck_assert_str_eq(commitment_of(x, NOV1_2026), "50.00");
    /* The same instant with an offset. */
    snprintf(x, sizeof x, "%s\"2026-11-16T01:00:00+01:00\"", t);
    ck_assert_str_eq(commitment_of(x, NOV1_2026), "50.00");
    snprintf(x, sizeof x, "%s\"2026-11-11T00:00:00Z\"", t);
    ck_assert_str_eq(commitment_of(x, NOV1_2026), "66.67");
    /* The month before the term: none; the month after the start: all of it. */
    ck_assert_str_eq(commitment_of(x, NOV1_2026 - DAY), "none");
    ck_assert_str_eq(commitment_of(x, NOV1_2026 + 30 * DAY), "100.00");
    /* The description shows the seconds. */
    char *k = contract("\"minimum_commitment\":\"100.00\","
                       "\"commitment_start\":\"2026-11-16T00:00:00Z\"");
    gm_rating_book *b = book_with(k);
    gm_invoice *inv = invoice_of(b, NOV1_2026, NULL, 0);
    ck_assert_uint_eq(inv->n_lines, 1);
    ck_assert_str_eq(inv->lines[0].description,
                     "minimum commitment 100.00 USD x 1296000/2592000 s = 50.00, shortfall");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_commitment_ties_round_half_to_even)
{
    /* Half of November: 0.01 x 1/2 = 0.005 -> 0.00 (no line); 0.03 x 1/2 = 0.015 -> 0.02. */
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"0.01\","
                                   "\"commitment_start\":\"2026-11-16T00:00:00Z\"",
                                   NOV1_2026),
                     "none");
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"0.03\","
                                   "\"commitment_start\":\"2026-11-16T00:00:00Z\"",
                                   NOV1_2026),
                     "0.02");
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"0.05\","
                                   "\"commitment_start\":\"2026-11-16T00:00:00Z\"",
                                   NOV1_2026),
                     "0.02"); /* 0.025 -> 0.02 */
}
END_TEST

START_TEST(test_commitment_on_29_february_and_month_ends)
{
    /* February 2028 has 29 days = 2,505,600 s. End (exclusive) 2028-02-15: 14 days =
     * 1,209,600 s: 100.00 x 1209600/2505600 = 48.2758... -> 48.28. Start 2028-02-29: one day,
     * 86,400 s: 3.4482... -> 3.45. */
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"100.00\","
                                   "\"commitment_end\":\"2028-02-15T00:00:00Z\"",
                                   FEB1_2028),
                     "48.28");
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"100.00\","
                                   "\"commitment_end\":\"2028-02-15T00:00:00Z\"",
                                   FEB1_2028 + 29 * DAY),
                     "none"); /* March 2028: after the term */
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"100.00\","
                                   "\"commitment_start\":\"2028-02-29T00:00:00Z\"",
                                   FEB1_2028),
                     "3.45");
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"100.00\","
                                   "\"commitment_start\":\"2028-02-29T00:00:00Z\"",
                                   FEB1_2028 + 29 * DAY),
                     "100.00");
    /* An end at midnight of the 1st covers the month before whole, the next not at all. */
    const char *end_jan1 = "\"minimum_commitment\":\"100.00\","
                           "\"commitment_start\":\"2026-11-01T00:00:00Z\","
                           "\"commitment_end\":\"2027-01-01T00:00:00Z\"";
    int64_t dec1 = NOV1_2026 + 30 * DAY, jan1 = dec1 + 31 * DAY;
    ck_assert_str_eq(commitment_of(end_jan1, dec1), "100.00");
    ck_assert_str_eq(commitment_of(end_jan1, jan1), "none");
    /* One second short of the month: 10,000,000.00 x 2678399/2678400 = 9999996.2664... */
    ck_assert_str_eq(commitment_of("\"minimum_commitment\":\"10000000.00\","
                                   "\"commitment_end\":\"2026-12-31T23:59:59Z\"",
                                   dec1),
                     "9999996.27");
    /* A year from 16 November 2026: 50.00 in November 2026 and in November 2027, 100.00
     * in between. */
    const char *year = "\"minimum_commitment\":\"100.00\","
                       "\"commitment_start\":\"2026-11-16T00:00:00Z\","
                       "\"commitment_end\":\"2027-11-16T00:00:00Z\"";
    ck_assert_str_eq(commitment_of(year, NOV1_2026), "50.00");
    ck_assert_str_eq(commitment_of(year, jan1 + 40 * DAY), "100.00"); /* February 2027 */
    int64_t nov1_2027 = INT64_C(1825027200000000) /* 2027-11-01 */;
    ck_assert_str_eq(commitment_of(year, nov1_2027), "50.00");
    ck_assert_str_eq(commitment_of(year, nov1_2027 + 30 * DAY), "none");
}
END_TEST

START_TEST(test_commitment_shortfall_uses_the_pro_rated_minimum)
{
    /* Term from 16 November: minimum 50.00 this month; usage 0.15 + 7.20 = 7.35: shortfall
     * 42.65, total 50.00. */
    char *k = contract("\"minimum_commitment\":\"100.00\","
                       "\"commitment_start\":\"2026-11-16T00:00:00Z\"");
    gm_rating_book *b = book_with(k);
    gm_usage ev[1] = {use("m5", "fra1", NOV1_2026 + 20 * DAY, 3000000, 0, INT64_C(7200000000))};
    gm_invoice *inv = invoice_of(b, NOV1_2026, ev, 1);
    ck_assert_uint_eq(inv->n_lines, 3);
    ck_assert_str_eq(dec(inv->lines[2].amount_minor, 2), "42.65");
    ck_assert_str_eq(dec(inv->commitment_due_minor, 2), "50.00");
    ck_assert_str_eq(dec(inv->total_minor, 2), "50.00");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_commitment_term_validation)
{
    expect_refused("\"commitment_start\":\"2026-11-16T00:00:00Z\"",
                   "commitment_start: bounds the term of minimum_commitment or term_commitment, "
                   "which the contract does not state (add \"minimum_commitment\": the monthly "
                   "minimum, or \"term_commitment\": the total over the term)");
    expect_refused("\"commitment_end\":\"2026-11-16T00:00:00Z\"",
                   "commitment_end: bounds the term");
    expect_refused(
        "\"minimum_commitment\":\"1.00\",\"commitment_start\":\"2026-11-16T00:00:00.5Z\"",
        "commitment_start: must be a whole second (partial months are pro-rated by "
        "seconds), got \"2026-11-16T00:00:00.5Z\"");
    expect_refused("\"minimum_commitment\":\"1.00\",\"commitment_start\":\"16 Nov 2026\"",
                   "commitment_start: must be an RFC 3339 time, got \"16 Nov 2026\"");
    expect_refused("\"minimum_commitment\":\"1.00\",\"commitment_end\":1793491200",
                   "commitment_end: must be a non-empty string, got the number 1793491200");
    expect_refused("\"minimum_commitment\":\"1.00\",\"commitment_start\":\"2026-12-01T00:00:00Z\","
                   "\"commitment_end\":\"2026-12-01T00:00:00Z\"",
                   "commitment_end: must be after commitment_start (the term is [start, end), "
                   "end exclusive), got \"2026-12-01T00:00:00Z\" <= \"2026-12-01T00:00:00Z\"");
    /* Accepted: the info carries the term; null is no bound. */
    char *k = contract("\"minimum_commitment\":\"1.00\",\"commitment_start\":"
                       "\"2026-11-16T00:00:00Z\",\"commitment_end\":null");
    gm_rating_contract *c;
    char err[256];
    ck_assert_msg(gm_rating_contract_parse(S(k), &c, err, sizeof err) == 0, "%s", err);
    gm_rating_contract_info info;
    gm_rating_contract_get_info(c, &info);
    ck_assert(info.commitment_start_us == NOV1_2026 + 15 * DAY);
    ck_assert(info.commitment_end_us == GM_RATING_NO_END);
    gm_rating_contract_free(c);
    free(k);
}
END_TEST

/* ---- Total over a term ------------------------------------------------------------------ */

#define MAR1_2027 INT64_C(1803859200000000) /* 2027-03-01T00:00:00Z */

/* Invoices of consecutive months from `month_us`, the term spend carried from one to the next
 * as billing and quote carry it; out[i] is month i's invoice (caller frees). */
static void term_months(gm_rating_book *b, int64_t month_us, const int64_t *out_tokens, size_t n,
                        gm_invoice **out)
{
    char err[512];
    gm_invoice_opts o = {.has_term_spent = true};
    for (size_t i = 0; i < n; i++, month_us = gm_month_next(month_us)) {
        gm_rating_period *p = gm_rating_period_new(b, "acme", month_us);
        if (out_tokens[i]) {
            gm_usage u = use("m5", "fra1", month_us + 3 * DAY, 0, out_tokens[i], 0);
            ck_assert_msg(gm_rating_period_add_event(p, &u, NULL, err, sizeof err) == 0, "%s", err);
        }
        ck_assert_msg(gm_rating_period_invoice(p, &o, &out[i], err, sizeof err) == 0, "%s", err);
        ck_assert_msg(gm_invoice_check(out[i], err, sizeof err) == 0, "%s", err);
        gm_rating_period_free(p);
        if (out[i]->has_term)
            o.term_spent_before_minor = out[i]->term_spent_minor;
        o.has_credit_balance = true;
        o.credit_balance_minor = out[i]->credit_balance_after_minor;
    }
}

START_TEST(test_term_total_true_up_in_the_last_month)
{
    /* 100.00 over [2027-03-15, 2027-06-15): months March..June, the true-up in June. Output
     * 1.00 per 1M tokens: March 10,000,000 = 10.00, April 20,000,000 = 20.00, May none,
     * June 5,000,000 = 5.00; July is after the term. Spend 35.00: June's true-up 65.00. */
    char *k = contract("\"term_commitment\":\"100.00\","
                       "\"commitment_start\":\"2027-03-15T00:00:00Z\","
                       "\"commitment_end\":\"2027-06-15T00:00:00Z\"");
    gm_rating_book *b = book_with(k);
    int64_t tok[5] = {10000000, 20000000, 0, 5000000, 7000000};
    gm_invoice *m[5];
    term_months(b, MAR1_2027, tok, 5, m);
    static const char *spent[4] = {"10.00", "30.00", "30.00", "35.00"};
    static const char *left[4] = {"90.00", "70.00", "70.00", "65.00"};
    static const char *total[5] = {"10.00", "20.00", "0.00", "70.00", "7.00"};
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(dec(m[i]->total_minor, 2), total[i]);
        ck_assert_uint_eq(m[i]->has_term, i < 4);
        ck_assert_uint_eq(m[i]->term_last_month, i == 3);
        ck_assert(m[i]->commitment_due_minor == 0); /* no monthly minimum */
        if (i < 4) {
            ck_assert_str_eq(dec(m[i]->term_total_minor, 2), "100.00");
            ck_assert_str_eq(dec(m[i]->term_spent_minor, 2), spent[i]);
            ck_assert_str_eq(dec(m[i]->term_remaining_minor, 2), left[i]);
        }
        if (i != 3)
            ck_assert(m[i]->commitment_minor == 0);
    }
    const gm_invoice_line *l = &m[3]->lines[m[3]->n_lines - 1];
    ck_assert_int_eq(l->kind, GM_LINE_COMMITMENT);
    ck_assert_str_eq(dec(l->amount_minor, 2), "65.00");
    ck_assert_str_eq(dec(l->amount_e18, 18), "65.000000000000000000");
    ck_assert_str_eq(l->description,
                     "term commitment 100.00 USD [2027-03-15, 2027-06-15), spent 35.00, true-up");
    /* Spend past the total: no true-up line, nothing remains. */
    char *k2 = contract("\"term_commitment\":\"30.00\","
                        "\"commitment_start\":\"2027-03-15T00:00:00Z\","
                        "\"commitment_end\":\"2027-06-15T00:00:00Z\"");
    gm_rating_book *b2 = book_with(k2);
    gm_invoice *n[5];
    term_months(b2, MAR1_2027, tok, 5, n);
    ck_assert_str_eq(dec(n[3]->total_minor, 2), "5.00");
    ck_assert(n[3]->commitment_minor == 0 && n[3]->term_remaining_minor == 0);
    ck_assert_str_eq(dec(n[3]->term_spent_minor, 2), "35.00");
    for (int i = 0; i < 5; i++) {
        gm_invoice_free(m[i]);
        gm_invoice_free(n[i]);
    }
    gm_rating_book_free(b);
    gm_rating_book_free(b2);
    free(k);
    free(k2);
}
END_TEST

START_TEST(test_term_total_annual_example_7)
{
    /* docs/rating.md Example 7: 1,200,000.00 over [2027-03-15, 2028-03-15), discount 5 %;
     * 100,000.00 of usage (10^11 output tokens at 1.00 per 1M) in each month March 2027 ..
     * February 2028 (29 days, counted whole like every month), 40,000.00 in March 2028. */
    char *k = contract("\"term_commitment\":\"1200000.00\",\"discount_percent\":\"5\","
                       "\"commitment_start\":\"2027-03-15T00:00:00Z\","
                       "\"commitment_end\":\"2028-03-15T00:00:00Z\"");
    gm_rating_book *b = book_with(k);
    int64_t tok[14];
    for (int i = 0; i < 14; i++)
        tok[i] = INT64_C(100000000000);
    tok[12] = INT64_C(40000000000);
    gm_invoice *m[14];
    term_months(b, MAR1_2027, tok, 14, m);
    gm_i128 paid = 0;
    for (int i = 0; i < 13; i++) {
        ck_assert(m[i]->has_term);
        ck_assert_uint_eq(m[i]->term_last_month, i == 12);
        if (i < 12) {
            ck_assert_str_eq(dec(m[i]->total_minor, 2), "95000.00");
            ck_assert(m[i]->commitment_minor == 0);
        }
        paid += m[i]->total_minor;
    }
    ck_assert_str_eq(dec(m[1]->term_spent_minor, 2), "190000.00");
    ck_assert_str_eq(dec(m[11]->term_spent_minor, 2), "1140000.00");
    ck_assert_str_eq(dec(m[11]->term_remaining_minor, 2), "60000.00");
    ck_assert_str_eq(dec(m[12]->term_spent_minor, 2), "1178000.00");
    ck_assert_str_eq(dec(m[12]->commitment_minor, 2), "22000.00");
    ck_assert_str_eq(dec(m[12]->total_minor, 2), "60000.00");
    ck_assert_str_eq(m[12]->lines[m[12]->n_lines - 1].description,
                     "term commitment 1200000.00 USD [2027-03-15, 2028-03-15), spent 1178000.00, "
                     "true-up");
    ck_assert_str_eq(dec(paid, 2), "1200000.00");
    ck_assert(!m[13]->has_term && m[13]->commitment_minor == 0); /* April 2028: after */
    for (int i = 0; i < 14; i++)
        gm_invoice_free(m[i]);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_term_total_counts_spend_after_allowance_and_discount_before_credit)
{
    /* One-month term [2027-02-10, 2027-02-20), total 10.00; discount 10 %, 1,000,000 free
     * input tokens, prepaid credit 5.00. February: input 3,000,000 = 0.15, output 10,000,000 =
     * 10.00; allowance -0.05; discount 10 % of 10.10 = 1.01; spend 10.10 - 1.01 = 9.09;
     * true-up 10.00 - 9.09 = 0.91; credit min(5.00, 9.09 + 0.91) = 5.00; total 5.00. */
    char *k = contract("\"term_commitment\":\"10.00\",\"discount_percent\":\"10\","
                       "\"free_allowances\":{\"input\":\"1000000\"},\"prepaid_credits\":\"5.00\","
                       "\"commitment_start\":\"2027-02-10T00:00:00Z\","
                       "\"commitment_end\":\"2027-02-20T00:00:00Z\"");
    gm_rating_book *b = book_with(k);
    int64_t feb = gm_month_start(MAR1_2027 - DAY); /* 2027-02-01 */
    gm_usage ev[1] = {use("m5", "fra1", feb + 12 * DAY, 3000000, 10000000, 0)};
    gm_invoice *inv = invoice_of(b, feb, ev, 1);
    ck_assert(inv->has_term && inv->term_last_month);
    ck_assert_uint_eq(inv->n_lines, 6);
    static const char *amt[6] = {"0.15", "10.00", "-0.05", "-1.01", "0.91", "-5.00"};
    static const gm_line_kind kind[6] = {GM_LINE_USAGE,    GM_LINE_USAGE,      GM_LINE_ALLOWANCE,
                                         GM_LINE_DISCOUNT, GM_LINE_COMMITMENT, GM_LINE_CREDIT};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(inv->lines[i].kind, kind[i]);
        ck_assert_str_eq(dec(inv->lines[i].amount_minor, 2), amt[i]);
    }
    ck_assert_str_eq(dec(inv->term_spent_minor, 2), "9.09");
    ck_assert_str_eq(dec(inv->term_remaining_minor, 2), "0.91");
    ck_assert_str_eq(dec(inv->total_minor, 2), "5.00");
    /* The true-up line takes its share of the credit like any amount due: 0.91 of 10.00. */
    ck_assert(inv->lines[4].credit_minor < 0);
    gm_invoice_free(inv);
    gm_rating_book_free(b);
    free(k);
}
END_TEST

START_TEST(test_term_total_months_and_validation)
{
    expect_refused("\"term_commitment\":\"100.00\",\"minimum_commitment\":\"10.00\","
                   "\"commitment_start\":\"2027-03-15T00:00:00Z\","
                   "\"commitment_end\":\"2028-03-15T00:00:00Z\"",
                   "term_commitment: cannot be combined with minimum_commitment (a contract "
                   "commits either a monthly minimum or one total over its term; state one of "
                   "them)");
    expect_refused("\"term_commitment\":\"100.00\",\"commitment_start\":\"2027-03-15T00:00:00Z\"",
                   "commitment_end: required with term_commitment (a total is committed over a "
                   "bounded term [commitment_start, commitment_end))");
    expect_refused("\"term_commitment\":\"100.00\",\"commitment_end\":\"2027-03-15T00:00:00Z\","
                   "\"commitment_start\":null",
                   "commitment_start: required with term_commitment");
    expect_refused("\"term_commitment\":\"0.00\",\"commitment_start\":\"2027-03-15T00:00:00Z\","
                   "\"commitment_end\":\"2028-03-15T00:00:00Z\"",
                   "term_commitment: must be positive (the total committed over the term), got "
                   "\"0.00\"");
    expect_refused("\"term_commitment\":\"100.001\",\"commitment_start\":\"2027-03-15T00:00:00Z\","
                   "\"commitment_end\":\"2028-03-15T00:00:00Z\"",
                   "term_commitment: USD amounts have at most 2 fraction digits (its minor unit), "
                   "got \"100.001\"");
    expect_refused("\"term_commitment\":1200000,\"commitment_start\":\"2027-03-15T00:00:00Z\","
                   "\"commitment_end\":\"2028-03-15T00:00:00Z\"",
                   "term_commitment: must be a decimal string like \"100.00\"");
    /* 36 calendar months from 2027-03-15: 2030-03-15, one second more is refused. */
    expect_refused("\"term_commitment\":\"100.00\",\"commitment_start\":\"2027-03-15T00:00:00Z\","
                   "\"commitment_end\":\"2030-03-15T00:00:01Z\"",
                   "commitment_end: a term_commitment term may last at most 36 months "
                   "(commitment_start + 36 calendar months = 2030-03-15T00:00:00.000000Z), got "
                   "\"2030-03-15T00:00:01Z\"");
    /* From 29 February 2028, 36 months end on 28 February 2031 (no 29th): clamped. */
    expect_refused("\"term_commitment\":\"100.00\",\"commitment_start\":\"2028-02-29T12:00:00Z\","
                   "\"commitment_end\":\"2031-03-01T00:00:00Z\"",
                   "(commitment_start + 36 calendar months = 2031-02-28T12:00:00.000000Z)");
    struct {
        const char *start, *end, *first, *last;
    } ok[] = {
        {"2027-03-15T00:00:00Z", "2030-03-15T00:00:00Z", "2027-03-01", "2030-03-01"},
        {"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2027-01-01", "2027-12-01"},
        {"2027-03-15T00:00:00Z", "2028-03-15T00:00:00Z", "2027-03-01", "2028-03-01"},
        {"2028-02-29T12:00:00Z", "2031-02-28T12:00:00Z", "2028-02-01", "2031-02-01"},
        {"2027-12-31T23:59:59Z", "2028-01-01T00:00:00Z", "2027-12-01", "2027-12-01"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char extra[256];
        snprintf(extra, sizeof extra,
                 "\"term_commitment\":\"1200000.00\",\"commitment_start\":\"%s\","
                 "\"commitment_end\":\"%s\"",
                 ok[i].start, ok[i].end);
        char *k = contract(extra);
        gm_rating_contract *c;
        char err[512];
        ck_assert_msg(gm_rating_contract_parse(S(k), &c, err, sizeof err) == 0, "%s", err);
        gm_rating_contract_info info;
        gm_rating_contract_get_info(c, &info);
        ck_assert_str_eq(dec(info.term_commitment_minor, 2), "1200000.00");
        ck_assert(info.minimum_commitment_minor == 0);
        int64_t f = 0, l = 0;
        ck_assert(gm_rating_contract_term_months(c, &f, &l));
        char fb[40], lb[40];
        gm_time_format(f, fb, sizeof fb);
        gm_time_format(l, lb, sizeof lb);
        fb[10] = lb[10] = 0;
        ck_assert_str_eq(fb, ok[i].first);
        ck_assert_str_eq(lb, ok[i].last);
        /* No monthly minimum in any month of the term. */
        ck_assert(gm_rating_contract_commitment(c, f, NULL, NULL) == 0);
        gm_rating_contract_free(c);
        free(k);
    }
}
END_TEST

/* ---- Effective-dated contracts ---------------------------------------------------------- */

#define MAY1_2027 INT64_C(1809129600000000) /* 2027-05-01T00:00:00Z */

static gm_rating_book *book_with_versions(const char *const *contracts, size_t n)
{
    gm_rating_book *b = gm_rating_book_new();
    char err[512];
    ck_assert_msg(gm_rating_book_add_card(b, S(card), err, sizeof err) == 0, "card: %s", err);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(gm_rating_book_add_contract(b, S(contracts[i]), err, sizeof err) == 0,
                      "contract %zu: %s", i, err);
    return b;
}

START_TEST(test_contract_versions_apply_from_their_effective_month)
{
    /* v1: 1,000,000 free input tokens a month; v2 from 2027-03: output of m5 at 2.00 per 1M
     * and a 10 % discount. One event a month: 3,000,000 input (0.15) and 1,000,000 output. */
    const char *v[2] = {
        "{\"tenant\":\"acme\",\"currency\":\"USD\",\"free_allowances\":{\"input\":\"1000000\"}}",
        "{\"tenant\":\"acme\",\"currency\":\"USD\",\"effective_from\":\"2027-03\","
        "\"discount_percent\":\"10\","
        "\"prices\":{\"m5\":{\"output\":{\"per_1m_tokens\":\"2.00\"}}}}"};
    gm_rating_book *b = book_with_versions(v, 2);
    int64_t feb = gm_month_start(MAR1_2027 - DAY);
    gm_rating_contract_info i1, i2;
    gm_rating_contract_get_info(gm_rating_book_contract_at(b, "acme", MAR1_2027 - 1), &i1);
    gm_rating_contract_get_info(gm_rating_book_contract_at(b, "acme", MAR1_2027), &i2);
    ck_assert(i1.effective_from_us == INT64_MIN && i2.effective_from_us == MAR1_2027);
    ck_assert(gm_rating_book_contract(b, "acme") ==
              gm_rating_book_contract_at(b, "acme", MAR1_2027));
    /* February by v1: 0.15 + 1.00 - 0.05 = 1.10. March by v2: 0.15 + 2.00 = 2.15, discount
     * 10 % = 0.215 -> 0.22 (half to even: 21.5 cents to 22), total 1.93. */
    gm_usage e1[1] = {use("m5", "fra1", feb + 5 * DAY, 3000000, 1000000, 0)};
    gm_invoice *f = invoice_of(b, feb, e1, 1);
    ck_assert_str_eq(dec(f->total_minor, 2), "1.10");
    ck_assert_str_eq(dec(f->allowance_minor, 2), "-0.05");
    gm_usage e2[1] = {use("m5", "fra1", MAR1_2027 + 5 * DAY, 3000000, 1000000, 0)};
    gm_invoice *m = invoice_of(b, MAR1_2027, e2, 1);
    ck_assert_str_eq(dec(m->allowance_minor, 2), "0.00");
    ck_assert_str_eq(dec(m->discount_minor, 2), "-0.22");
    ck_assert_str_eq(dec(m->total_minor, 2), "1.93");
    /* The per-event list price follows the event's time too. */
    gm_event_price pr;
    char err[512];
    ck_assert(gm_rating_price_event(b, &e1[0], &pr, err, sizeof err) == 0);
    ck_assert_str_eq(dec(pr.amount_e18[GM_DIM_OUTPUT], 18), "1.000000000000000000");
    ck_assert(gm_rating_price_event(b, &e2[0], &pr, err, sizeof err) == 0);
    ck_assert_str_eq(dec(pr.amount_e18[GM_DIM_OUTPUT], 18), "2.000000000000000000");
    ck_assert(pr.flags & GM_PRICE_F_CONTRACT_PRICE);
    /* A card-version boundary query sees the contract change at 2027-03-01. */
    ck_assert(gm_rating_book_next_change_us(b, "acme", feb) == MAR1_2027);
    /* A later version without effective_from is refused: it would rewrite every month. */
    ck_assert_int_eq(gm_rating_book_add_contract(b, S("{\"tenant\":\"acme\",\"currency\":\"USD\"}"),
                                                 err, sizeof err),
                     GM_ECONFLICT);
    ck_assert_str_eq(err, "contract of tenant acme: the book already has one (one contract per "
                          "tenant; a later version must state effective_from, the month from "
                          "which it applies)");
    gm_invoice_free(f);
    gm_invoice_free(m);
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_future_and_backdated_contract_versions)
{
    /* Only a contract from 2027-05: April is priced as a tenant without one (default card,
     * flagged unknown_tenant), May by the contract. */
    const char *v[1] = {"{\"tenant\":\"acme\",\"currency\":\"USD\",\"effective_from\":\"2027-05\","
                        "\"minimum_commitment\":\"5.00\"}"};
    gm_rating_book *b = book_with_versions(v, 1);
    int64_t apr = gm_month_start(MAY1_2027 - DAY);
    gm_usage e[1] = {use("m5", "fra1", apr + DAY, 0, 1000000, 0)};
    gm_invoice *a = invoice_of(b, apr, e, 1);
    ck_assert(a->flags & GM_PRICE_F_UNKNOWN_TENANT);
    ck_assert_str_eq(dec(a->total_minor, 2), "1.00"); /* no minimum in April */
    gm_invoice *m = invoice_of(b, MAY1_2027, NULL, 0);
    ck_assert_str_eq(dec(m->total_minor, 2), "5.00");
    gm_invoice_free(a);
    gm_invoice_free(m);
    gm_rating_book_free(b);
    /* v1 always, v2 from 2027-06, v3 from 2027-03 (a backdated correction): from March on the
     * newest version in force is v3, also in July (v2 is shadowed); February keeps v1. */
    const char *w[3] = {
        "{\"tenant\":\"acme\",\"currency\":\"USD\",\"minimum_commitment\":\"1.00\"}",
        "{\"tenant\":\"acme\",\"currency\":\"USD\",\"effective_from\":\"2027-06\","
        "\"minimum_commitment\":\"2.00\"}",
        "{\"tenant\":\"acme\",\"currency\":\"USD\",\"effective_from\":\"2027-03\","
        "\"minimum_commitment\":\"3.00\"}"};
    b = book_with_versions(w, 3);
    static const char *want[6] = {"1.00", "3.00", "3.00", "3.00", "3.00", "3.00"};
    int64_t month = gm_month_start(MAR1_2027 - DAY);
    for (int i = 0; i < 6; i++, month = gm_month_next(month)) {
        gm_invoice *inv = invoice_of(b, month, NULL, 0);
        ck_assert_str_eq(dec(inv->total_minor, 2), want[i]);
        gm_invoice_free(inv);
    }
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_effective_from_validation)
{
    expect_refused("\"effective_from\":\"2027-3\"",
                   "effective_from: must be a month \"YYYY-MM\" (UTC; the version applies from the "
                   "first instant of that month), got \"2027-3\"");
    expect_refused("\"effective_from\":\"2027-13\"", "effective_from: must be a month \"YYYY-MM\"");
    expect_refused("\"effective_from\":\"2027-03-01\"",
                   "effective_from: must be a month \"YYYY-MM\"");
    expect_refused("\"effective_from\":202703", "effective_from: must be a non-empty string");
    char *k = contract("\"effective_from\":\"2028-02\"");
    gm_rating_contract *c;
    char err[256];
    ck_assert_msg(gm_rating_contract_parse(S(k), &c, err, sizeof err) == 0, "%s", err);
    gm_rating_contract_info info;
    gm_rating_contract_get_info(c, &info);
    ck_assert(info.effective_from_us == FEB1_2028);
    gm_rating_contract_free(c);
    free(k);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rating_terms");
    TCase *tc = tcase_create("terms");
    tcase_add_test(tc, test_allowance_falls_on_usage_lines_in_line_order);
    tcase_add_test(tc, test_allowance_spills_to_the_next_line_and_never_below_zero);
    tcase_add_test(tc, test_allowance_skips_free_lines_and_counts_gpu_in_microseconds);
    tcase_add_test(tc, test_allowance_before_discount_commitment_and_credit);
    tcase_add_test(tc, test_allowance_validation_names_the_field_and_the_rule);
    tcase_add_test(tc, test_commitment_is_pro_rated_by_seconds_in_partial_months);
    tcase_add_test(tc, test_commitment_ties_round_half_to_even);
    tcase_add_test(tc, test_commitment_on_29_february_and_month_ends);
    tcase_add_test(tc, test_commitment_shortfall_uses_the_pro_rated_minimum);
    tcase_add_test(tc, test_commitment_term_validation);
    tcase_add_test(tc, test_term_total_true_up_in_the_last_month);
    tcase_add_test(tc, test_term_total_annual_example_7);
    tcase_add_test(tc, test_term_total_counts_spend_after_allowance_and_discount_before_credit);
    tcase_add_test(tc, test_term_total_months_and_validation);
    tcase_add_test(tc, test_contract_versions_apply_from_their_effective_month);
    tcase_add_test(tc, test_future_and_backdated_contract_versions);
    tcase_add_test(tc, test_effective_from_validation);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
