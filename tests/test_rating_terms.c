/* Unit tests of the contract terms applied at invoice time (docs/rating.md, "Free allowances"
 * and "Commitments over a term"): hand-computed allowance lines, the pro-rated minimum of
 * partial months (month ends, 29 February, half-even ties) and the validator's messages. */
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
    gm_usage u = {"acme", model, site, t, {in, 0, out, gpu_us, 0, 0, 1}};
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
                   "commitment_start: bounds the term of minimum_commitment, which the contract "
                   "does not state (add \"minimum_commitment\": the monthly minimum)");
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
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
