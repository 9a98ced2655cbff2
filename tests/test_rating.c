/* Unit tests of rating/: hand-computed prices, the exactness rules, currencies with 0, 2 and 3
 * minor digits, tier boundaries, price changes mid-month, contracts, re-rating, validation. */
#include "gm_rating.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

#define S(x) x, strlen(x)

/* 2026-11-01T00:00:00Z and friends. */
#define NOV1 INT64_C(1793491200000000)
#define DAY  GM_US_PER_DAY

static const char *card_basic =
    "{\"card_id\":\"list\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
    "\"currency\":\"USD\",\"default_card\":true,"
    "\"prices\":{"
    " \"embed\":{\"input\":{\"per_1m_tokens\":\"0.0375\"},\"cached\":{\"per_1m_tokens\":\"0\"},"
    "   \"output\":{\"per_1m_tokens\":\"0\"},\"gpu\":{\"per_gpu_hour\":\"3.60\"}},"
    " \"m5\":{\"input\":{\"per_1m_tokens\":\"0.05\"},\"cached\":{\"per_token\":\"0.000000025\"},"
    "   \"output\":{\"per_1m_tokens\":\"1.00\"},\"gpu\":{\"per_gpu_second\":\"0.001\"}},"
    " \"default\":{\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{\"per_1m_tokens\":\"1\"},"
    "   \"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{\"per_gpu_hour\":\"7.20\"}}},"
    "\"site_tiers\":{\"metro\":{\"sites\":[\"fra1\"]},"
    " \"remote\":{\"multiplier\":\"1.25\",\"sites\":[\"tro1\"]},"
    " \"core\":{\"prices\":{\"m5\":{\"gpu\":{\"per_gpu_hour\":\"2.88\"}}},\"sites\":[\"dc1\"]}},"
    "\"default_site_tier\":\"metro\"}";

/* A copy of src with the first `old` replaced by `new_` (caller frees). */
static char *subst(const char *src, const char *old, const char *new_)
{
    const char *at = strstr(src, old);
    ck_assert_msg(at != NULL, "test bug: \"%s\" not found", old);
    size_t n = strlen(src) - strlen(old) + strlen(new_);
    char *out = malloc(n + 1);
    size_t pre = (size_t)(at - src);
    memcpy(out, src, pre);
    strcpy(out + pre, new_);
    strcat(out, at + strlen(old));
    return out;
}

static gm_rating_book *book_with(const char *card, const char *contract)
{
    gm_rating_book *b = gm_rating_book_new();
    char err[512];
    ck_assert_msg(gm_rating_book_add_card(b, S(card), err, sizeof err) == 0, "card: %s", err);
    if (contract)
        ck_assert_msg(gm_rating_book_add_contract(b, S(contract), err, sizeof err) == 0,
                      "contract: %s", err);
    return b;
}

static gm_usage usage(const char *tenant, const char *model, const char *site, int64_t t,
                      int64_t in, int64_t cached, int64_t out, int64_t gpu_us)
{
    gm_usage u = {tenant, model, site, t, {in, cached, out, gpu_us}, GM_RATING_SVC_STANDARD};
    return u;
}

static const char *dec(gm_i128 v, int scale)
{
    static char buf[8][64];
    static int k;
    char *b = buf[k++ % 8];
    gm_dec_format(v, scale, b, 64);
    return b;
}

static gm_invoice *invoice_of(gm_rating_book *b, const char *tenant, const gm_usage *ev, size_t n,
                              const gm_invoice_opts *opts)
{
    char err[512];
    gm_rating_period *p = gm_rating_period_new(b, tenant, ev ? ev[0].time_us : NOV1);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(gm_rating_period_add_event(p, &ev[i], NULL, err, sizeof err) == 0, "%s", err);
    gm_invoice *inv;
    ck_assert_msg(gm_rating_period_invoice(p, opts, &inv, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_invoice_check(inv, err, sizeof err) == 0, "%s", err);
    gm_rating_period_free(p);
    return inv;
}

START_TEST(test_price_0_0375_per_1m_tokens_is_exact)
{
    gm_rating_book *b = book_with(card_basic, NULL);
    gm_event_price p;
    char err[256];
    gm_usage u = usage("acme", "embed", "fra1", NOV1, 1, 0, 0, 0);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], 37500); /* 0.0000000375 per token */
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_INPUT], 18), "0.000000037500000000");
    u.qty[GM_DIM_INPUT] = 1000000;
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_INPUT], 18), "0.037500000000000000");
    u.qty[GM_DIM_INPUT] = 333333;
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_INPUT], 18), "0.012499987500000000");
    /* Remote tier: 0.0375 x 1.25 = 0.046875 per 1M, still exact. */
    u.site = "tro1";
    u.qty[GM_DIM_INPUT] = 1000000;
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], 46875);
    ck_assert_str_eq(p.site_tier, "remote");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_INPUT], 18), "0.046875000000000000");
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_gpu_per_hour_converts_only_when_exact)
{
    int64_t pp;
    char err[512];
    /* 3.60 per GPU-hour = 0.001 per GPU-second. */
    ck_assert_int_eq(gm_rating_price_convert("per_gpu_hour", S("3.60"), &pp, err, sizeof err), 0);
    ck_assert_int_eq(pp, 1000000000);
    /* 2.50 per GPU-hour = 0.000694444... per GPU-second: refused, with the reason and the
     * nearest exact alternatives (hand-computed: floor(2.5e12/3600) = 694444444). */
    ck_assert_int_eq(gm_rating_price_convert("per_gpu_hour", S("2.50"), &pp, err, sizeof err),
                     GM_ERANGE);
    ck_assert_msg(strstr(err, "0.000694444444444444...") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "not exact in 12 fraction digits") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "\"0.000694444444\" (= 2.4999999984 per GPU-hour)") != NULL, "%s",
                  err);
    ck_assert_msg(strstr(err, "\"0.000694444445\" (= 2.500000002 per GPU-hour)") != NULL, "%s",
                  err);
    ck_assert_msg(strstr(err, "multiple of 0.0000000036") != NULL, "%s", err);
    /* 2.4999999984 is exact (694444444 x 3600 = 2499999998400 e-12). */
    ck_assert_int_eq(
        gm_rating_price_convert("per_gpu_hour", S("2.4999999984"), &pp, err, sizeof err), 0);
    ck_assert_int_eq(pp, 694444444);
    /* 84,200 us at 0.001/s = 0.0000842 exactly. */
    gm_rating_book *b = book_with(card_basic, NULL);
    gm_event_price p;
    gm_usage u = usage("acme", "embed", "fra1", NOV1, 0, 0, 0, 84200);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_GPU], 18), "0.000084200000000000");
    /* Core tier: m5 at 2.88/h = 0.0008/s. */
    u.model = "m5";
    u.site = "dc1";
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_GPU], 800000000);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_GPU], 18), "0.000067360000000000");
    gm_rating_book_free(b);
    /* A card that states 2.50 per GPU-hour is refused with the field path. */
    char *card = subst(card_basic, "\"7.20\"", "\"2.50\"");
    gm_rating_card *c;
    ck_assert_int_eq(gm_rating_card_parse(S(card), &c, err, sizeof err), GM_ERANGE);
    free(card);
    ck_assert_msg(strncmp(err, "prices.default.gpu.per_gpu_hour: 2.50 per GPU-hour is", 52) == 0,
                  "%s", err);
}
END_TEST

START_TEST(test_price_with_too_many_digits_is_refused_naming_the_field)
{
    char err[512];
    char *card = subst(card_basic, "\"0.0375\"", "\"0.1234567890123\"");
    gm_rating_card *c;
    ck_assert_int_eq(gm_rating_card_parse(S(card), &c, err, sizeof err), GM_ERANGE);
    free(card);
    ck_assert_str_eq(err, "prices.embed.input.per_1m_tokens: must be a decimal string with at most "
                          "12 fraction digits per token (6 per 1M tokens), got "
                          "\"0.1234567890123\"; nearest exact: \"0.123456\" or \"0.123457\"");
    /* A JSON number for a price is refused with the reason. */
    card = subst(card_basic, "\"0.0375\"", "0.0375");
    ck_assert_int_eq(gm_rating_card_parse(S(card), &c, err, sizeof err), GM_EINVAL);
    free(card);
    ck_assert_msg(strstr(err, "prices.embed.input.per_1m_tokens: must be a decimal string like "
                              "\"0.60\", not the number 0.0375") == err,
                  "%s", err);
    /* per_token: 12 digits accepted, 13 refused. */
    int64_t pp;
    ck_assert_int_eq(
        gm_rating_price_convert("per_token", S("0.000000000001"), &pp, err, sizeof err), 0);
    ck_assert_int_eq(pp, 1);
    ck_assert_int_eq(
        gm_rating_price_convert("per_token", S("0.0000000000015"), &pp, err, sizeof err),
        GM_ERANGE);
    ck_assert_int_eq(gm_rating_price_convert("per_token", S("-1"), &pp, err, sizeof err),
                     GM_EINVAL);
    ck_assert_int_eq(gm_rating_price_convert("per_token", S("1e-6"), &pp, err, sizeof err),
                     GM_EINVAL);
}
END_TEST

/* A model entry with every dimension free. */
#define FREE                                                                                       \
    "{\"input\":{\"per_token\":\"0\"},\"cached\":{\"per_token\":\"0\"},\"output\":{\"per_"         \
    "token\":\"0\"},\"gpu\":{\"per_gpu_second\":\"0\"}}"

START_TEST(test_validator_names_field_and_rule)
{
    char err[512];
    gm_rating_card *c;
    struct {
        const char *json, *want;
    } cases[] = {
        {"{\"card_id\":\"x\",\"version\":1.0}", "version: must be a JSON integer"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:30:00Z\"}",
         "valid_from: must be a whole UTC hour"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
         "\"currency\":\"usd\"}",
         "currency: must be an ISO 4217 code"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
         "\"currency\":\"XTS\"}",
         "currency: \"XTS\" is not in the built-in ISO 4217 table"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
         "\"currency\":\"USD\",\"prices\":{\"m\":{\"input\":{\"per_token\":\"0\"}}}}",
         "prices: must have a \"default\" entry"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
         "\"currency\":\"USD\",\"unknown_models\":\"reject\","
         "\"prices\":{\"m\":{\"input\":{\"per_token\":\"0\"}}}}",
         "prices.m.cached: missing"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
         "\"currency\":\"USD\",\"unknown_models\":\"reject\",\"prices\":{\"m\":{"
         "\"input\":{\"per_gpu_hour\":\"0\"}}}}",
         "prices.m.input.per_gpu_hour: unknown price unit for tokens"},
        {"{\"card_id\":\"x\",\"versoin\":1}", "versoin: unknown field"},
        {"{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
         "\"currency\":\"USD\",\"prices\":{\"default\":" FREE ",\"default\":" FREE "}}",
         "prices.default: model appears twice"},
        {"{\"card_id\":\"x\",", "not valid JSON (line 1, column"},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(cases); i++) {
        int rc = gm_rating_card_parse(S(cases[i].json), &c, err, sizeof err);
        ck_assert_msg(rc != 0, "case %zu accepted", i);
        ck_assert_msg(strstr(err, cases[i].want) == err, "case %zu: got \"%s\", want \"%s...\"", i,
                      err, cases[i].want);
    }
    /* Site-tier multiplier that makes a price inexact. */
    char *card = subst(card_basic, "\"1.25\"", "\"1.333333\"");
    ck_assert_int_eq(gm_rating_card_parse(S(card), &c, err, sizeof err), GM_ERANGE);
    free(card);
    ck_assert_msg(strstr(err, "site_tiers.remote.multiplier: 1.333333 x prices.embed.input") == err,
                  "%s", err);
    /* Contracts. */
    gm_rating_contract *k;
    ck_assert_int_eq(gm_rating_contract_parse(S("{\"tenant\":\"a\",\"currency\":\"USD\","
                                                "\"minimum_commitment\":\"10.005\"}"),
                                              &k, err, sizeof err),
                     GM_EINVAL);
    ck_assert_str_eq(err, "minimum_commitment: USD amounts have at most 2 fraction digits (its "
                          "minor unit), got \"10.005\"");
    ck_assert_int_eq(gm_rating_contract_parse(S("{\"tenant\":\"a\",\"currency\":\"JPY\","
                                                "\"minor_units\":2}"),
                                              &k, err, sizeof err),
                     GM_EINVAL);
    ck_assert_str_eq(err, "minor_units: JPY has 0 minor digits (ISO 4217), got 2");
    ck_assert_int_eq(
        gm_rating_contract_parse(
            S("{\"tenant\":\"a\",\"currency\":\"USD\",\"tiers\":[{\"dimension\":\"output\","
              "\"mode\":\"graduated\",\"bands\":[{\"up_to\":\"10\",\"price\":{\"per_token\":\"1\"}}"
              ","
              "{\"up_to\":\"5\",\"price\":{\"per_token\":\"1\"}},{\"price\":{\"per_token\":\"1\"}}]"
              "}]}"),
            &k, err, sizeof err),
        GM_EINVAL);
    ck_assert_str_eq(err, "tiers[0].bands[1].up_to: must be greater than the previous band's");
    ck_assert_int_eq(
        gm_rating_contract_parse(
            S("{\"tenant\":\"a\",\"currency\":\"USD\",\"tiers\":[{\"dimension\":\"output\","
              "\"mode\":\"graduated\",\"bands\":[{\"up_to\":\"10\",\"price\":{\"per_token\":\"1\"}}"
              "]}]}"),
            &k, err, sizeof err),
        GM_EINVAL);
    ck_assert_msg(strstr(err, "tiers[0].bands[0].up_to: the last band must be unbounded") == err,
                  "%s", err);
}
END_TEST

START_TEST(test_rounds_half_to_even_once_per_line)
{
    /* m5 input is 0.05 per 1M tokens: 100,000 tokens = 0.005 USD (a tie: 0 cents, even),
     * 300,000 = 0.015 (a tie: 2 cents), 200,000 = 0.01, 333,333 = 0.01666665 (2 cents). */
    gm_rating_book *b = book_with(card_basic, NULL);
    int64_t qty[] = {100000, 300000, 200000, 333333};
    const char *want[] = {"0.00", "0.02", "0.01", "0.02"};
    for (size_t i = 0; i < GM_ARRAY_LEN(qty); i++) {
        gm_usage u = usage("acme", "m5", "fra1", NOV1, qty[i], 0, 0, 0);
        gm_invoice *inv = invoice_of(b, "acme", &u, 1, NULL);
        ck_assert_uint_eq(inv->n_lines, 1);
        ck_assert_str_eq(dec(inv->lines[0].amount_minor, 2), want[i]);
        ck_assert_str_eq(dec(inv->total_minor, 2), want[i]);
        gm_invoice_free(inv);
    }
    /* Ten events of 100,000 tokens: one line of 1,000,000 = 0.05, not 10 x 0.00. */
    gm_usage ev[10];
    for (int i = 0; i < 10; i++)
        ev[i] = usage("acme", "m5", "fra1", NOV1 + i, 100000, 0, 0, 0);
    gm_invoice *inv = invoice_of(b, "acme", ev, 10, NULL);
    ck_assert_uint_eq(inv->n_lines, 1);
    ck_assert_str_eq(dec(inv->lines[0].amount_e18, 18), "0.050000000000000000");
    ck_assert_str_eq(dec(inv->total_minor, 2), "0.05");
    gm_invoice_free(inv);
    /* The helper on negative ties too. */
    ck_assert(gm_rating_round_e18(-(gm_i128)5000000000000000, 2) == 0);
    ck_assert(gm_rating_round_e18(-(gm_i128)15000000000000000, 2) == -2);
    ck_assert(gm_rating_round_e18((gm_i128)25000000000000000, 2) == 2);
    ck_assert(gm_rating_round_e18((gm_i128)25000000000000001, 2) == 3);
    gm_rating_book_free(b);
}
END_TEST

static const char *card_jpy =
    "{\"card_id\":\"jpy\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
    "\"currency\":\"JPY\",\"unknown_models\":\"reject\",\"prices\":{\"m\":{"
    "\"input\":{\"per_1m_tokens\":\"90\"},\"cached\":{\"per_1m_tokens\":\"45\"},"
    "\"output\":{\"per_1m_tokens\":\"120\"},\"gpu\":{\"per_gpu_hour\":\"540\"}}}}";
static const char *card_kwd =
    "{\"card_id\":\"kwd\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
    "\"currency\":\"KWD\",\"unknown_models\":\"reject\",\"prices\":{\"m\":{"
    "\"input\":{\"per_1m_tokens\":\"0.185\"},\"cached\":{\"per_1m_tokens\":\"0.0925\"},"
    "\"output\":{\"per_1m_tokens\":\"0.245\"},\"gpu\":{\"per_gpu_hour\":\"1.08\"}}}}";

START_TEST(test_currencies_with_0_2_and_3_minor_digits)
{
    char err[256];
    ck_assert_int_eq(gm_rating_currency_minor_units("JPY"), 0);
    ck_assert_int_eq(gm_rating_currency_minor_units("USD"), 2);
    ck_assert_int_eq(gm_rating_currency_minor_units("EUR"), 2);
    ck_assert_int_eq(gm_rating_currency_minor_units("KWD"), 3);
    ck_assert_int_eq(gm_rating_currency_minor_units("BHD"), 3);
    /* JPY: 90 per 1M input: 125,000 tokens = 11.25 JPY -> 11; 150,000 = 13.5 -> 14 and
     * 250,000 = 22.5 -> 22 (ties, to even); 138,889 = 12.50001 -> 13. */
    gm_rating_book *b = book_with(card_jpy, "{\"tenant\":\"kaiju\",\"card_id\":\"jpy\","
                                            "\"currency\":\"JPY\"}");
    struct {
        int64_t in;
        const char *exact, *rounded;
    } jp[] = {{125000, "11.250000000000000000", "11"},
              {150000, "13.500000000000000000", "14"},
              {138889, "12.500010000000000000", "13"},
              {250000, "22.500000000000000000", "22"}};
    for (size_t i = 0; i < GM_ARRAY_LEN(jp); i++) {
        gm_usage u = usage("kaiju", "m", "x", NOV1, jp[i].in, 0, 0, 0);
        gm_invoice *inv = invoice_of(b, "kaiju", &u, 1, NULL);
        ck_assert_str_eq(inv->currency, "JPY");
        ck_assert_int_eq(inv->minor_units, 0);
        ck_assert_str_eq(dec(inv->lines[0].amount_e18, 18), jp[i].exact);
        ck_assert_str_eq(dec(inv->total_minor, 0), jp[i].rounded);
        gm_invoice_free(inv);
    }
    /* An unknown model is refused by this card. */
    gm_event_price p;
    gm_usage u = usage("kaiju", "other", "x", NOV1, 1, 0, 0, 0);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), GM_ENOTFOUND);
    ck_assert_msg(strstr(err, "model other: not on card jpy v1, which rejects unknown models"),
                  "%s", err);
    gm_rating_book_free(b);
    /* KWD: 0.245 per 1M output; 10,000 tokens = 0.00245 KWD -> 0.002; 30,000 = 0.00735 ->
     * 0.007; 50,000 = 0.01225 -> 0.012; gpu 1.08/h = 0.0003/s: 5 s = 0.0015 -> 0.002 and
     * 15 s = 0.0045 -> 0.004 (ties, to even). */
    b = book_with(card_kwd, "{\"tenant\":\"gulf\",\"card_id\":\"kwd\",\"currency\":\"KWD\"}");
    struct {
        int64_t out, gpu;
        const char *rounded;
    } kw[] = {{10000, 0, "0.002"},
              {30000, 0, "0.007"},
              {50000, 0, "0.012"},
              {0, 5000000, "0.002"},
              {0, 15000000, "0.004"}};
    for (size_t i = 0; i < GM_ARRAY_LEN(kw); i++) {
        u = usage("gulf", "m", "x", NOV1, 0, 0, kw[i].out, kw[i].gpu);
        gm_invoice *inv = invoice_of(b, "gulf", &u, 1, NULL);
        ck_assert_int_eq(inv->minor_units, 3);
        ck_assert_str_eq(dec(inv->total_minor, 3), kw[i].rounded);
        gm_invoice_free(inv);
    }
    gm_rating_book_free(b);
    /* A contract in EUR cannot name a USD card. */
    b = book_with(card_basic, NULL);
    ck_assert_int_eq(
        gm_rating_book_add_contract(
            b, S("{\"tenant\":\"e\",\"card_id\":\"list\",\"currency\":\"EUR\"}"), err, sizeof err),
        GM_ECONFLICT);
    ck_assert_str_eq(err, "contract of tenant e: currency EUR, but its card list is in USD");
    ck_assert_int_eq(gm_rating_book_add_contract(b, S("{\"tenant\":\"e\",\"currency\":\"EUR\"}"),
                                                 err, sizeof err),
                     GM_ECONFLICT);
    ck_assert_str_eq(err,
                     "contract of tenant e: currency EUR, but the default card list is in USD");
    gm_rating_book_free(b);
    /* The same, contract first: the card that would price it is refused. */
    b = gm_rating_book_new();
    ck_assert_int_eq(gm_rating_book_add_contract(b, S("{\"tenant\":\"e\",\"currency\":\"EUR\"}"),
                                                 err, sizeof err),
                     0);
    ck_assert_int_eq(gm_rating_book_add_card(b, S(card_basic), err, sizeof err), GM_ECONFLICT);
    ck_assert_str_eq(err, "card list v1: currency USD, but the contract of tenant e, which it "
                          "prices, is in EUR");
    gm_rating_book_free(b);
}
END_TEST

static const char *contract_tiers =
    "{\"tenant\":\"acme\",\"card_id\":\"list\",\"currency\":\"USD\",\"tiers\":["
    "{\"dimension\":\"output\",\"models\":[\"m5\"],\"mode\":\"graduated\",\"bands\":["
    " {\"up_to\":\"1000000\",\"price\":{\"per_1m_tokens\":\"1.00\"}},"
    " {\"up_to\":\"2000000\",\"price\":{\"per_1m_tokens\":\"0.50\"}},"
    " {\"up_to\":null,\"price\":{\"per_1m_tokens\":\"0.25\"}}]},"
    "{\"dimension\":\"input\",\"mode\":\"volume\",\"bands\":["
    " {\"up_to\":\"1000000\",\"price\":{\"per_1m_tokens\":\"1.00\"}},"
    " {\"price\":{\"per_1m_tokens\":\"0.50\"}}]}]}";

/* gpu_basis (docs/rating.md, "GPU billing basis"): validation names the field and the rule;
 * under "windows" a usage event's gpu is 0 (flagged) and windows (model "*") are priced at
 * gpu_window_price; under "requests" the windows are 0 and no tier rule claims them. */
static const char *contract_windows =
    "{\"tenant\":\"acme\",\"card_id\":\"list\",\"currency\":\"USD\",\"gpu_basis\":\"windows\","
    "\"gpu_window_price\":{\"per_gpu_hour\":\"2.16\"}}";

START_TEST(test_gpu_basis_bills_windows_or_requests_never_both)
{
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":\"window\"}",
         "gpu_basis: must be \"requests\" or \"windows\", got"},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":1}",
         "gpu_basis: must be \"requests\" or \"windows\", got"},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":\"windows\"}",
         "gpu_window_price: required when gpu_basis is \"windows\""},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_window_price\":{\"per_gpu_hour\":\"1\"}}",
         "gpu_window_price: only allowed with gpu_basis \"windows\""},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":\"windows\","
         "\"gpu_window_price\":{\"per_1m_tokens\":\"1\"}}",
         "gpu_window_price.per_1m_tokens: unknown price unit for GPU time"},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":\"windows\","
         "\"gpu_window_price\":{\"per_gpu_hour\":\"0.0000000000001\"}}",
         "gpu_window_price.per_gpu_hour:"},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":\"windows\","
         "\"gpu_window_price\":{\"per_gpu_hour\":\"3.60\"},\"tiers\":[{\"dimension\":\"gpu\","
         "\"mode\":\"volume\",\"bands\":[{\"up_to\":null,\"price\":{\"per_gpu_hour\":\"3.60\"}}]}]"
         "}",
         "tiers[0]: a gpu tier rule cannot be combined with gpu_basis \"windows\""},
        {"{\"tenant\":\"a\",\"currency\":\"USD\",\"gpu_basis\":\"windows\","
         "\"gpu_window_price\":{\"per_gpu_hour\":\"3.60\"},\"minimum_commitment\":\"1.00\","
         "\"free_allowances\":{\"gpu\":\"1000\"}}",
         "free_allowances.gpu: cannot be combined with gpu_basis \"windows\""},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++) {
        gm_rating_contract *k = NULL;
        char err[512] = "";
        ck_assert_int_ne(gm_rating_contract_parse(S(bad[i].json), &k, err, sizeof err), 0);
        ck_assert_msg(strstr(err, bad[i].want) != NULL, "case %zu: %s", i, err);
    }
    gm_rating_contract *k = NULL;
    char err[512];
    ck_assert_msg(gm_rating_contract_parse(S(contract_windows), &k, err, sizeof err) == 0, "%s",
                  err);
    gm_rating_contract_info ci;
    gm_rating_contract_get_info(k, &ci);
    ck_assert_int_eq(ci.gpu_basis, GM_GPU_BASIS_WINDOWS);
    ck_assert_int_eq(ci.gpu_window_price_p, INT64_C(600000000)); /* 0.0006 per GPU-second */
    gm_rating_contract_free(k);

    /* windows: m5 at fra1 lists gpu at 0.001/s; the event's 5 s are 0, flagged; the window's
     * 2,700 s cost 2,700 x 0.0006 = 1.62 */
    gm_rating_book *b = book_with(card_basic, contract_windows);
    gm_event_price p;
    gm_usage u = usage("acme", "m5", "fra1", NOV1, 1000, 0, 0, 5000000);
    ck_assert(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0);
    ck_assert(p.amount_e18[GM_DIM_GPU] == 0 && p.unit_price_p[GM_DIM_GPU] == 0);
    ck_assert(p.flags & GM_PRICE_F_GPU_WINDOWS);
    ck_assert(p.amount_e18[GM_DIM_INPUT] != 0);
    gm_usage w = usage("acme", GM_GPU_WINDOW_MODEL, "fra1", NOV1 + 1, 0, 0, 0, 2700000000);
    ck_assert(gm_rating_price_event(b, &w, &p, err, sizeof err) == 0);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_GPU], 18), "1.620000000000000000");
    ck_assert(p.flags & GM_PRICE_F_GPU_WINDOWS);
    gm_usage ev[2] = {u, w};
    gm_invoice *inv = invoice_of(b, "acme", ev, 2, NULL);
    /* input m5 (0.00005), gpu * (1.62), gpu m5 (0, not billed) */
    ck_assert_uint_eq(inv->n_lines, 3);
    ck_assert_str_eq(inv->lines[1].model, "*");
    ck_assert_str_eq(dec(inv->lines[1].amount_minor, 2), "1.62");
    ck_assert_msg(strstr(inv->lines[1].description, "gpu_basis windows") != NULL, "%s",
                  inv->lines[1].description);
    ck_assert_str_eq(dec(inv->lines[2].amount_e18, 18), "0.000000000000000000");
    ck_assert_msg(strstr(inv->lines[2].description, "not billed: gpu_basis windows") != NULL, "%s",
                  inv->lines[2].description);
    ck_assert_str_eq(dec(inv->total_minor, 2), "1.62");
    gm_invoice_free(inv);
    gm_rating_book_free(b);

    /* requests, with a gpu tier rule over every model: the event's 5 s at the rule's price,
     * the window at 0 and outside the rule */
    b = book_with(card_basic,
                  "{\"tenant\":\"acme\",\"card_id\":\"list\",\"currency\":\"USD\",\"tiers\":["
                  "{\"dimension\":\"gpu\",\"mode\":\"volume\",\"bands\":[{\"up_to\":null,"
                  "\"price\":{\"per_gpu_hour\":\"36\"}}]}]}");
    inv = invoice_of(b, "acme", ev, 2, NULL);
    ck_assert_uint_eq(inv->n_lines, 3); /* input m5, gpu * (usage, 0), tier gpu (5 s x 0.01) */
    ck_assert_int_eq(inv->lines[1].kind, GM_LINE_USAGE);
    ck_assert_str_eq(inv->lines[1].model, "*");
    ck_assert(inv->lines[1].amount_e18 == 0 && inv->lines[1].qty == 2700000000);
    ck_assert(!(inv->lines[1].flags & GM_PRICE_F_GPU_WINDOWS));
    ck_assert_int_eq(inv->lines[2].kind, GM_LINE_TIER);
    ck_assert(inv->lines[2].qty == 5000000);
    ck_assert_str_eq(dec(inv->lines[2].amount_e18, 18), "0.050000000000000000");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_tier_boundaries_hit_exactly)
{
    gm_rating_book *b = book_with(card_basic, contract_tiers);
    struct {
        int64_t out;
        size_t n_lines;
        const char *total;
    } g[] = {
        {1000000, 1, "1.00"}, /* exactly the first bound: band 1 only */
        {1000001, 2, "1.00"}, /* 1.00 + 1 x 0.0000005 = 1.0000005 -> 1.00 */
        {2000000, 2, "1.50"}, /* 1.00 + 0.50 */
        {2000001, 3, "1.50"}, /* + 0.00000025 */
        {6000000, 3, "2.50"}, /* 1.00 + 0.50 + 4 x 0.25 */
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(g); i++) {
        gm_usage u = usage("acme", "m5", "fra1", NOV1, 0, 0, g[i].out, 0);
        gm_invoice *inv = invoice_of(b, "acme", &u, 1, NULL);
        ck_assert_msg(inv->n_lines == g[i].n_lines, "case %zu: %zu lines", i, inv->n_lines);
        ck_assert_str_eq(dec(inv->total_minor, 2), g[i].total);
        for (size_t l = 0; l < inv->n_lines; l++) {
            ck_assert_int_eq(inv->lines[l].kind, GM_LINE_TIER);
            ck_assert_int_eq(inv->lines[l].band, (int)l + 1);
        }
        if (g[i].out == 1000001) {
            ck_assert(inv->lines[0].qty == 1000000);
            ck_assert(inv->lines[1].qty == 1);
            ck_assert_str_eq(dec(inv->exact_usage_e18, 18), "1.000000500000000000");
        }
        gm_invoice_free(inv);
    }
    /* Volume: the band of the month's total prices every unit; 1,000,000 is band 1. Two
     * models of the rule's scope add up. */
    struct {
        int64_t a, b;
        const char *total;
        int band;
    } v[] = {{600000, 400000, "1.00", 1}, {600000, 400001, "0.50", 2}, {0, 3000000, "1.50", 2}};
    for (size_t i = 0; i < GM_ARRAY_LEN(v); i++) {
        gm_usage ev[2] = {usage("acme", "m5", "fra1", NOV1, v[i].a, 0, 0, 0),
                          usage("acme", "embed", "tro1", NOV1 + 1, v[i].b, 0, 0, 0)};
        gm_invoice *inv = invoice_of(b, "acme", ev, 2, NULL);
        ck_assert_uint_eq(inv->n_lines, 1);
        ck_assert_int_eq(inv->lines[0].band, v[i].band);
        ck_assert_str_eq(inv->lines[0].model, "*");
        ck_assert_str_eq(dec(inv->total_minor, 2), v[i].total);
        gm_invoice_free(inv);
    }
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_price_change_mid_month_splits_lines_by_version)
{
    char err[512];
    gm_rating_book *b = book_with(card_basic, NULL);
    /* v2 from 2026-11-15: m5 output 1.00 -> 0.80 per 1M. */
    char *t1 = subst(card_basic, "\"version\":1", "\"version\":2");
    char *t2 = subst(t1, "2026-01-01T00", "2026-11-15T00");
    char *v2 = subst(t2, "\"output\":{\"per_1m_tokens\":\"1.00\"}",
                     "\"output\":{\"per_1m_tokens\":\"0.80\"}");
    ck_assert_msg(gm_rating_book_add_card(b, S(v2), err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gm_rating_book_add_card(b, S(v2), err, sizeof err), GM_ECONFLICT);
    free(t1);
    free(t2);
    free(v2);
    gm_usage ev[3] = {usage("acme", "m5", "fra1", NOV1 + 9 * DAY, 0, 0, 1000000, 0),
                      usage("acme", "m5", "fra1", NOV1 + 14 * DAY - 1, 0, 0, 1000000, 0),
                      usage("acme", "m5", "fra1", NOV1 + 14 * DAY, 0, 0, 1000000, 0)};
    gm_invoice *inv = invoice_of(b, "acme", ev, 3, NULL);
    ck_assert_uint_eq(inv->n_lines, 2);
    ck_assert_int_eq(inv->lines[0].card_version, 1);
    ck_assert(inv->lines[0].qty == 2000000);
    ck_assert_str_eq(dec(inv->lines[0].amount_minor, 2), "2.00");
    ck_assert_int_eq(inv->lines[1].card_version, 2);
    ck_assert(inv->lines[1].qty == 1000000);
    ck_assert_str_eq(dec(inv->lines[1].amount_minor, 2), "0.80");
    ck_assert_str_eq(dec(inv->total_minor, 2), "2.80");
    ck_assert(inv->flags & GM_PRICE_F_UNKNOWN_TENANT);
    gm_invoice_free(inv);
    gm_rating_card_info info;
    gm_rating_card_get_info(gm_rating_book_card_at(b, "list", NOV1 + 14 * DAY - 1), &info);
    ck_assert_int_eq(info.version, 1);
    gm_rating_card_get_info(gm_rating_book_card_at(b, NULL, NOV1 + 14 * DAY), &info);
    ck_assert_int_eq(info.version, 2);
    ck_assert_ptr_null(gm_rating_book_card_at(b, "list", NOV1 - 400 * DAY));
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_unknown_tenant_model_and_site_are_priced_and_flagged)
{
    char err[256];
    gm_rating_book *b = book_with(card_basic, "{\"tenant\":\"acme\",\"currency\":\"USD\","
                                              "\"prices\":{\"m5\":{\"output\":{\"per_token\":"
                                              "\"0.0000007\"}}}}");
    gm_event_price p;
    gm_usage u = usage("newco", "brand-new", "nowhere", NOV1, 1000, 0, 1000, 1000000);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_uint_eq(p.flags, GM_PRICE_F_UNKNOWN_TENANT | GM_PRICE_F_DEFAULT_MODEL |
                                   GM_PRICE_F_DEFAULT_SITE);
    ck_assert_str_eq(p.card_id, "list");
    ck_assert_str_eq(p.site_tier, "metro");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_INPUT], 18), "0.001000000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_OUTPUT], 18), "0.002000000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_GPU], 18), "0.002000000000000000");
    /* A contract price overrides one dimension. */
    u = usage("acme", "m5", "fra1", NOV1, 0, 0, 1000000, 0);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_uint_eq(p.flags, GM_PRICE_F_CONTRACT_PRICE);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_OUTPUT], 700000);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], 50000);
    gm_rating_book_free(b);
    /* A contract can re-price the card's default entry for its tenant. */
    b = book_with(card_basic, "{\"tenant\":\"acme\",\"currency\":\"USD\","
                              "\"prices\":{\"default\":{\"input\":{\"per_1m_tokens\":\"0.5\"}}}}");
    u = usage("acme", "brand-new", "fra1", NOV1, 1000, 0, 1000, 0);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_uint_eq(p.flags, GM_PRICE_F_DEFAULT_MODEL | GM_PRICE_F_CONTRACT_PRICE);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], 500000);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_OUTPUT], 2000000);
    u = usage("acme", "m5", "fra1", NOV1, 0, 0, 1000000, 0);
    /* Quantities outside 0..2^53-1 are refused, not clamped. */
    u.qty[GM_DIM_OUTPUT] = GM_RATING_QTY_MAX + 1;
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), GM_EINVAL);
    u.qty[GM_DIM_OUTPUT] = -1;
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), GM_EINVAL);
    /* No card in force. */
    u = usage("acme", "m5", "fra1", NOV1 - 365 * DAY, 1, 0, 0, 0);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), GM_ENOTFOUND);
    ck_assert_msg(strstr(err, "no version of card list in force at 2025-"), "%s", err);
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_month_of_huge_quantities_stays_exact_or_fails_loudly)
{
    /* 10^12 events of 2^53-1 tokens at 0.000000000001 per token: summed exactly. */
    char err[256];
    gm_rating_book *b =
        book_with("{\"card_id\":\"c\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
                  "\"currency\":\"USD\",\"unknown_models\":\"reject\",\"prices\":{\"m\":{"
                  "\"input\":{\"per_token\":\"0.000000000001\"},\"cached\":{\"per_token\":\"0\"},"
                  "\"output\":{\"per_token\":\"1\"},\"gpu\":{\"per_gpu_second\":\"1\"}}}}",
                  NULL);
    gm_rating_period *p = gm_rating_period_new(b, "t", NOV1);
    gm_i128 month = (gm_i128)1000000000000 * GM_RATING_QTY_MAX; /* ~9.007e27 */
    gm_usage_sum s = {"m", "s", NOV1, {month / 2, 0, 0, 0}, NULL};
    ck_assert_int_eq(gm_rating_period_add_sum(p, &s, err, sizeof err), 0);
    s.qty[GM_DIM_INPUT] = month - month / 2;
    ck_assert_int_eq(gm_rating_period_add_sum(p, &s, err, sizeof err), 0);
    gm_invoice *inv;
    ck_assert_int_eq(gm_rating_period_invoice(p, NULL, &inv, err, sizeof err), 0);
    ck_assert(inv->lines[0].qty == month);
    /* 9007199254740991 * 10^12 tokens * 10^-12 = 9007199254740991 USD exactly. */
    ck_assert_str_eq(dec(inv->lines[0].amount_e18, 18), "9007199254740991.000000000000000000");
    ck_assert_str_eq(dec(inv->total_minor, 2), "9007199254740991.00");
    gm_invoice_free(inv);
    /* The same quantity at 1 per output token is 9e27 USD: past int128 at 10^-18, refused. */
    gm_usage_sum s2 = {"m", "s", NOV1, {0, 0, month, 0}, NULL};
    ck_assert_int_eq(gm_rating_period_add_sum(p, &s2, err, sizeof err), 0);
    ck_assert_int_eq(gm_rating_period_invoice(p, NULL, &inv, err, sizeof err), GM_ERANGE);
    ck_assert_msg(strstr(err, "amount exceeds int128"), "%s", err);
    /* Quantity sums themselves overflow only past int128. */
    gm_usage_sum s3 = {"m", "s", NOV1, {GM_I128_MAX, 0, 0, 0}, NULL};
    ck_assert_int_eq(gm_rating_period_add_sum(p, &s3, err, sizeof err), GM_ERANGE);
    gm_rating_period_free(p);
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_discount_commitment_and_credits_add_up)
{
    /* Two lines: m5 input 3,000,000 (0.15) and m5 output 1,000,000 (1.00) = 1.15.
     * Discount 10 % of 1.15 = 0.115 -> 0.12 (tie, even); split 0.12 over 0.15 : 1.00 by
     * largest remainder: 0.12*15/115 = 0.01565.. -> 1 (+0 ), 0.12*100/115 = 0.1043 -> 10;
     * remainder 1 cent goes to the larger fraction (line 1: .565 > .435) -> 2 and 10.
     * Commitment 5.00: shortfall 5.00 - 1.03 = 3.97. Credits 4.00 of 5.00 due. Total 1.00. */
    gm_rating_book *b =
        book_with(card_basic, "{\"tenant\":\"acme\",\"currency\":\"USD\","
                              "\"discount_percent\":\"10\",\"minimum_commitment\":\"5.00\","
                              "\"prepaid_credits\":\"4.00\"}");
    gm_usage ev[2] = {usage("acme", "m5", "fra1", NOV1, 3000000, 0, 0, 0),
                      usage("acme", "m5", "fra1", NOV1 + 1, 0, 0, 1000000, 0)};
    gm_invoice *inv = invoice_of(b, "acme", ev, 2, NULL);
    ck_assert_uint_eq(inv->n_lines, 5);
    ck_assert_int_eq(inv->lines[0].dim, GM_DIM_INPUT);
    ck_assert_str_eq(dec(inv->lines[0].amount_minor, 2), "0.15");
    ck_assert_str_eq(dec(inv->lines[1].amount_minor, 2), "1.00");
    ck_assert_int_eq(inv->lines[2].kind, GM_LINE_DISCOUNT);
    ck_assert_str_eq(dec(inv->lines[2].amount_e18, 18), "-0.115000000000000000");
    ck_assert_str_eq(dec(inv->lines[2].amount_minor, 2), "-0.12");
    ck_assert_str_eq(dec(inv->lines[0].discount_minor, 2), "-0.02");
    ck_assert_str_eq(dec(inv->lines[1].discount_minor, 2), "-0.10");
    ck_assert_int_eq(inv->lines[3].kind, GM_LINE_COMMITMENT);
    ck_assert_str_eq(dec(inv->lines[3].amount_minor, 2), "3.97");
    ck_assert_int_eq(inv->lines[4].kind, GM_LINE_CREDIT);
    ck_assert_str_eq(dec(inv->lines[4].amount_minor, 2), "-4.00");
    ck_assert_str_eq(dec(inv->total_minor, 2), "1.00");
    ck_assert_str_eq(dec(inv->credit_balance_after_minor, 2), "0.00");
    gm_i128 credit = 0;
    for (size_t i = 0; i < inv->n_lines; i++)
        credit += inv->lines[i].credit_minor;
    ck_assert_str_eq(dec(credit, 2), "-4.00");
    gm_invoice_free(inv);
    /* With 10.00 of credit left, it pays the whole 5.00 and 5.00 is left. */
    gm_invoice_opts o = {.has_credit_balance = true, .credit_balance_minor = 1000};
    inv = invoice_of(b, "acme", ev, 2, &o);
    ck_assert_str_eq(dec(inv->total_minor, 2), "0.00");
    ck_assert_str_eq(dec(inv->credit_balance_after_minor, 2), "5.00");
    gm_invoice_free(inv);
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_largest_remainder_breaks_ties_to_the_lower_line)
{
    gm_i128 w[3] = {1, 1, 1}, s[3];
    ck_assert_int_eq(gm_rating_allocate(2, w, 3, s), 0);
    ck_assert(s[0] == 1 && s[1] == 1 && s[2] == 0);
    gm_i128 w2[3] = {0, 5, 5};
    ck_assert_int_eq(gm_rating_allocate(3, w2, 3, s), 0);
    ck_assert(s[0] == 0 && s[1] == 2 && s[2] == 1);
    gm_i128 w3[2] = {0, 0};
    ck_assert_int_eq(gm_rating_allocate(1, w3, 2, s), GM_EINVAL);
    ck_assert_int_eq(gm_rating_allocate(0, w3, 2, s), 0);
}
END_TEST

START_TEST(test_rerating_after_backdated_change_diffs_line_by_line)
{
    char err[512];
    gm_rating_book *before = book_with(card_basic, NULL);
    gm_rating_book *after = book_with(card_basic, NULL);
    /* A backdated v2 from Nov 15 raises the m5 input price 0.05 -> 0.06 per 1M. */
    char *t1 = subst(card_basic, "\"version\":1", "\"version\":2");
    char *t2 = subst(t1, "2026-01-01T00", "2026-11-15T00");
    char *v2 = subst(t2, "\"0.05\"", "\"0.06\"");
    ck_assert_msg(gm_rating_book_add_card(after, S(v2), err, sizeof err) == 0, "%s", err);
    free(t1);
    free(t2);
    free(v2);
    gm_usage ev[3] = {usage("acme", "m5", "fra1", NOV1 + 20 * DAY, 1000000, 0, 0, 0),
                      usage("acme", "m5", "fra1", NOV1 + 2 * DAY, 1000000, 0, 0, 0),
                      usage("acme", "embed", "fra1", NOV1 + 20 * DAY, 1000000, 0, 0, 0)};
    gm_invoice_diff *d;
    ck_assert_msg(gm_rating_rerate(before, after, "acme", NOV1, ev, 3, NULL, &d, NULL, NULL, err,
                                   sizeof err) == 0,
                  "%s", err);
    /* before: embed v1 0.0375 (0.04), m5 v1 2,000,000 = 0.10; after: embed v2 (same price, new
     * version), m5 v1 1,000,000 = 0.05, m5 v2 1,000,000 = 0.06. */
    ck_assert_uint_eq(d->n_lines, 4);
    ck_assert_str_eq(dec(d->total_before_minor, 2), "0.14");
    ck_assert_str_eq(dec(d->total_after_minor, 2), "0.15");
    ck_assert_str_eq(dec(d->delta_minor, 2), "0.01");
    ck_assert_str_eq(d->lines[2].model, "m5");
    ck_assert_int_eq(d->lines[2].card_version, 1);
    ck_assert(d->lines[2].qty_before == 2000000 && d->lines[2].qty_after == 1000000);
    ck_assert_str_eq(dec(d->lines[2].delta_minor, 2), "-0.05");
    ck_assert_int_eq(d->lines[3].card_version, 2);
    ck_assert(d->lines[3].qty_before == 0 && d->lines[3].unit_price_p_after == 60000);
    ck_assert_uint_eq(d->n_changed, 4);
    /* Deterministic: event order does not matter. */
    gm_usage rev[3] = {ev[2], ev[1], ev[0]};
    gm_invoice_diff *d2;
    ck_assert_int_eq(gm_rating_rerate(before, after, "acme", NOV1, rev, 3, NULL, &d2, NULL, NULL,
                                      err, sizeof err),
                     0);
    ck_assert_uint_eq(d2->n_lines, d->n_lines);
    for (size_t i = 0; i < d->n_lines; i++) {
        ck_assert_str_eq(d->lines[i].model, d2->lines[i].model);
        ck_assert(d->lines[i].delta_minor == d2->lines[i].delta_minor);
        ck_assert(d->lines[i].amount_e18_after == d2->lines[i].amount_e18_after);
    }
    gm_invoice_diff_free(d);
    gm_invoice_diff_free(d2);
    gm_rating_book_free(before);
    gm_rating_book_free(after);
}
END_TEST

static char *slurp(const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", GM_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

START_TEST(test_example_cards_and_contracts_validate)
{
    const char *cards[] = {"list-usd-v1.json", "list-usd-v2.json", "list-jpy-v1.json",
                           "list-kwd-v1.json"};
    const char *contracts[] = {"contract-acme.json", "contract-kaiju.json", "contract-gulf.json",
                               "contract-newco.json"};
    gm_rating_book *b = gm_rating_book_new();
    char err[512], rel[256];
    for (size_t i = 0; i < GM_ARRAY_LEN(cards); i++) {
        size_t n;
        snprintf(rel, sizeof rel, "examples/ratecards/%s", cards[i]);
        char *t = slurp(rel, &n);
        ck_assert_msg(gm_rating_book_add_card(b, t, n, err, sizeof err) == 0, "%s: %s", rel, err);
        free(t);
    }
    for (size_t i = 0; i < GM_ARRAY_LEN(contracts); i++) {
        size_t n;
        snprintf(rel, sizeof rel, "examples/ratecards/%s", contracts[i]);
        char *t = slurp(rel, &n);
        ck_assert_msg(gm_rating_book_add_contract(b, t, n, err, sizeof err) == 0, "%s: %s", rel,
                      err);
        free(t);
    }
    const gm_rating_card *c = gm_rating_book_card_at(b, NULL, NOV1);
    gm_rating_card_info info;
    gm_rating_card_get_info(c, &info);
    ck_assert_str_eq(info.card_id, "list-usd");
    ck_assert_int_eq(info.version, 1);
    ck_assert(info.is_default_card);
    const gm_rating_price_row *rows;
    size_t n = gm_rating_card_prices(c, &rows);
    ck_assert_uint_eq(n, (info.n_models + 1) * info.n_site_tiers * GM_DIM_COUNT);
    /* acme's negotiated 70B output price applies; the site tier does not touch it. */
    gm_event_price p;
    gm_usage u = usage("acme", "llama-3.1-70b-instruct", "tro1", NOV1, 0, 0, 1000000, 3600000000);
    ck_assert_int_eq(gm_rating_price_event(b, &u, &p, err, sizeof err), 0);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_OUTPUT], 700000);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_GPU], 18), "4.500000000000000000"); /* 3.60 x 1.25 */
    gm_rating_book_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rating");
    TCase *tc = tcase_create("hand-computed");
    tcase_add_test(tc, test_price_0_0375_per_1m_tokens_is_exact);
    tcase_add_test(tc, test_gpu_per_hour_converts_only_when_exact);
    tcase_add_test(tc, test_price_with_too_many_digits_is_refused_naming_the_field);
    tcase_add_test(tc, test_validator_names_field_and_rule);
    tcase_add_test(tc, test_rounds_half_to_even_once_per_line);
    tcase_add_test(tc, test_currencies_with_0_2_and_3_minor_digits);
    tcase_add_test(tc, test_tier_boundaries_hit_exactly);
    tcase_add_test(tc, test_gpu_basis_bills_windows_or_requests_never_both);
    tcase_add_test(tc, test_price_change_mid_month_splits_lines_by_version);
    tcase_add_test(tc, test_unknown_tenant_model_and_site_are_priced_and_flagged);
    tcase_add_test(tc, test_month_of_huge_quantities_stays_exact_or_fails_loudly);
    tcase_add_test(tc, test_discount_commitment_and_credits_add_up);
    tcase_add_test(tc, test_largest_remainder_breaks_ties_to_the_lower_line);
    tcase_add_test(tc, test_rerating_after_backdated_change_diffs_line_by_line);
    tcase_add_test(tc, test_example_cards_and_contracts_validate);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
