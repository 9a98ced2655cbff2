/* Unit tests of price variants (docs/rating.md, "Price variants"): service-tier multipliers
 * and context-length rows computed by hand (the worked examples of the doc), contract rules
 * (service_tiers replaces the card's, prices do not override a card's context rows, a
 * contract's own rows), the variant in invoice lines (tier rules, allowances), the one pricing
 * path (events and charge sums by variant give one invoice), and the validator's refusals. */
#include "gm_rating.h"
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(x) x, strlen(x)

#define NOV1 INT64_C(1793491200000000) /* 2026-11-01T00:00:00Z */
#define HOUR INT64_C(3600000000)

/* The card of docs/rating.md, Example 11: long-70b at 0.60 input, 0.30 cached, 2.00 output per
 * 1M tokens; above 128,000 prompt tokens input 1.20 and output 3.00 (cached stays 0.30); batch
 * x 0.5, priority x 1.5; site tier remote x 1.25. */
#define CARD_HEAD                                                                                  \
    "{\"card_id\":\"list-usd\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","             \
    "\"currency\":\"USD\",\"default_card\":true,\"unknown_models\":\"reject\","
#define LONG_70B                                                                                   \
    "\"long-70b\":{\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{\"per_1m_tokens\":\"0.30\"}" \
    ","                                                                                            \
    "\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":{\"per_gpu_hour\":\"0\"},"                    \
    "\"context_tiers\":[{\"above_tokens\":128000,\"prices\":{\"input\":{\"per_1m_tokens\":\"1."    \
    "20\"},"                                                                                       \
    "\"output\":{\"per_1m_tokens\":\"3.00\"}}}]}"
#define CARD_TAIL                                                                                  \
    "\"site_tiers\":{\"metro\":{\"sites\":[\"fra1\"]},"                                            \
    "\"remote\":{\"multiplier\":\"1.25\",\"sites\":[\"tro1\"]}},\"default_site_tier\":\"metro\"}"

static const char *card =
    CARD_HEAD "\"prices\":{" LONG_70B
              "},\"service_tiers\":{\"batch\":\"0.5\",\"priority\":\"1.5\"}," CARD_TAIL;

static gm_rating_book *book_with(const char *c, const char *contract)
{
    gm_rating_book *b = gm_rating_book_new();
    char err[768];
    ck_assert_msg(gm_rating_book_add_card(b, S(c), err, sizeof err) == 0, "card: %s", err);
    if (contract)
        ck_assert_msg(gm_rating_book_add_contract(b, S(contract), err, sizeof err) == 0,
                      "contract: %s", err);
    ck_assert_msg(gm_rating_book_check_contracts(b, err, sizeof err) == 0, "%s", err);
    return b;
}

static gm_usage req(const char *tenant, const char *site, int64_t input, int64_t cached,
                    int64_t output, gm_rating_svc svc)
{
    gm_usage u = {tenant, "long-70b", site, NOV1 + HOUR, {0}, svc};
    gm_rating_usage_tokens(u.qty, input, cached, 0, output, 0, 0);
    return u;
}

static const char *dec(gm_i128 v, int scale)
{
    static char buf[16][64];
    static int k;
    char *b = buf[k++ % 16];
    gm_dec_format(v, scale, b, 64);
    return b;
}

/* The event's total amount, exact, and its variant. */
static const char *priced(const gm_rating_book *b, gm_usage u, const char **variant,
                          unsigned *flags)
{
    gm_event_price p;
    char err[512];
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    gm_i128 t;
    ck_assert_int_eq(gm_event_price_total(&p, &t), 0);
    if (variant)
        *variant = p.variant;
    if (flags)
        *flags = p.flags;
    return dec(t, 18);
}

START_TEST(test_service_tier_multipliers_by_hand)
{
    gm_rating_book *b = book_with(card, NULL);
    const char *v;
    unsigned f;
    /* 5,000 input x 0.0000006 = 0.003 + 1,050 output x 0.000002 = 0.0021: 0.0051 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, 0), &v, &f),
                     "0.005100000000000000");
    ck_assert_str_eq(v, "");
    /* batch x 0.5: 5,000 x 0.0000003 = 0.0015 + 1,050 x 0.000001 = 0.00105: 0.00255 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH), &v, &f),
                     "0.002550000000000000");
    ck_assert_str_eq(v, "batch");
    ck_assert(!(f & GM_PRICE_F_UNLISTED_VARIANT));
    /* priority x 1.5: 5,000 x 0.0000009 = 0.0045 + 1,050 x 0.000003 = 0.00315: 0.00765 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_PRIORITY), &v, &f),
                     "0.007650000000000000");
    ck_assert_str_eq(v, "priority");
    /* unit prices: multiplied one by one, exact */
    gm_event_price p;
    char err[256];
    gm_usage u = req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH);
    ck_assert(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0);
    ck_assert_str_eq(dec(p.unit_price_p[GM_DIM_INPUT], 12), "0.000000300000");
    ck_assert_str_eq(dec(p.unit_price_p[GM_DIM_CACHED], 12), "0.000000150000");
    ck_assert_str_eq(dec(p.unit_price_p[GM_DIM_OUTPUT], 12), "0.000001000000");
    gm_rating_book_free(b);
}
END_TEST

START_TEST(test_context_rows_at_the_boundary_by_hand)
{
    gm_rating_book *b = book_with(card, NULL);
    const char *v;
    unsigned f;
    /* prompt 120,000 + 8,000 = 128,000: not above 128,000, base prices:
     * 120,000 x 0.0000006 = 0.072 + 8,000 x 0.0000003 = 0.0024 + 1,000 x 0.000002 = 0.002 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 120000, 8000, 1000, 0), &v, &f),
                     "0.076400000000000000");
    ck_assert_str_eq(v, "");
    /* prompt 128,001: the row above 128,000: input 120,001 x 0.0000012 = 0.1440012, cached not
     * stated by the row: 8,000 x 0.0000003 = 0.0024, output 1,000 x 0.000003 = 0.003 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 120001, 8000, 1000, 0), &v, &f),
                     "0.149401200000000000");
    ck_assert_str_eq(v, "ctx>128000");
    /* batch + the row: every price of the row x 0.5: 120,001 x 0.0000006 = 0.0720006 +
     * 8,000 x 0.00000015 = 0.0012 + 1,000 x 0.0000015 = 0.0015 */
    ck_assert_str_eq(
        priced(b, req("acme", "fra1", 120001, 8000, 1000, GM_RATING_SVC_BATCH), &v, &f),
        "0.074700600000000000");
    ck_assert_str_eq(v, "batch/ctx>128000");
    /* remote (x 1.25) + the row: input 1.50, cached 0.375, output 3.75 per 1M:
     * 0.1800015 + 0.003 + 0.00375 */
    ck_assert_str_eq(priced(b, req("acme", "tro1", 120001, 8000, 1000, 0), &v, &f),
                     "0.186751500000000000");
    /* remote + priority + the row: x 1.25 x 1.5: input 2.25, cached 0.5625, output 5.625:
     * 120,001 x 0.00000225 = 0.27000225 + 8,000 x 0.0000005625 = 0.0045 + 0.005625 */
    ck_assert_str_eq(
        priced(b, req("acme", "tro1", 120001, 8000, 1000, GM_RATING_SVC_PRIORITY), &v, &f),
        "0.280127250000000000");
    ck_assert_str_eq(v, "priority/ctx>128000");
    /* cache writes count in the prompt: 127,000 input + 1,001 cache writes */
    gm_usage u = {"acme", "long-70b", "fra1", NOV1 + HOUR, {0}, GM_RATING_SVC_STANDARD};
    gm_rating_usage_tokens(u.qty, 127000, 0, 1001, 0, 0, 0);
    gm_event_price p;
    char err[256];
    ck_assert(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0);
    ck_assert_str_eq(p.variant, "ctx>128000");
    gm_rating_book_free(b);
}
END_TEST

/* Several rows: the highest row exceeded wins; a dimension no row states keeps the base. */
START_TEST(test_highest_row_exceeded_wins)
{
    const char *c = CARD_HEAD
        "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{\"per_1m_tokens\":"
        "\"0\"},\"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{\"per_gpu_hour\":\"0\"},"
        "\"context_tiers\":[{\"above_tokens\":1000,\"prices\":{\"input\":{\"per_1m_tokens\":\"2\"}}"
        "},"
        "{\"above_tokens\":2000,\"prices\":{\"input\":{\"per_1m_tokens\":\"3\"}}}]}}}";
    gm_rating_book *b = book_with(c, NULL);
    int64_t prompts[] = {1000, 1001, 2000, 2001};
    const char *want[] = {"", "ctx>1000", "ctx>1000", "ctx>2000"};
    int64_t price[] = {1000000, 2000000, 2000000, 3000000};
    for (int i = 0; i < 4; i++) {
        gm_usage u = {"t", "m", "s", NOV1, {prompts[i], 0, 10}, GM_RATING_SVC_STANDARD};
        gm_event_price p;
        char err[256];
        ck_assert(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0);
        ck_assert_str_eq(p.variant, want[i]);
        ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], price[i]);
        ck_assert_int_eq(p.unit_price_p[GM_DIM_OUTPUT], 2000000);
        /* a charge of the variant is priced alike (one path) */
        ck_assert(gm_rating_price_charge(b, "t", "m", "s", NOV1, want[i], &p, err, sizeof err) ==
                  0);
        ck_assert_str_eq(p.variant, want[i]);
        ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], price[i]);
    }
    /* a charge of a row the card no longer has: the highest row at or below it */
    gm_event_price p;
    char err[256];
    ck_assert(
        gm_rating_price_charge(b, "t", "m", "s", NOV1, "batch/ctx>1500", &p, err, sizeof err) == 0);
    ck_assert_str_eq(p.variant, "ctx>1000"); /* batch is not listed: keyed as standard */
    ck_assert_int_eq(p.flags & GM_PRICE_F_UNLISTED_VARIANT, GM_PRICE_F_UNLISTED_VARIANT);
    ck_assert_int_eq(p.unit_price_p[GM_DIM_INPUT], 2000000); /* no service_tiers: x 1 */
    gm_rating_book_free(b);
}
END_TEST

/* A contract's service_tiers replaces the card's; unlisted tiers are x 1 and flagged; contract
 * prices do not override a card's context row; a contract's own rows replace the card's. */
START_TEST(test_contract_rules_by_hand)
{
    const char *acme =
        "{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{\"batch\":"
        "\"0.6\"},\"prices\":{\"long-70b\":{\"input\":{\"per_1m_tokens\":\"0.50\"}}}}";
    gm_rating_book *b = book_with(card, acme);
    const char *v;
    unsigned f;
    /* 5,000 x 0.0000005 = 0.0025 + 1,050 x 0.000002 = 0.0021 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, 0), &v, &f),
                     "0.004600000000000000");
    /* batch x 0.6 (the contract's): 5,000 x 0.0000003 = 0.0015 + 1,050 x 0.0000012 = 0.00126 */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH), &v, &f),
                     "0.002760000000000000");
    /* priority: the contract lists none (its object replaces the card's): x 1, flagged */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_PRIORITY), &v, &f),
                     "0.004600000000000000");
    ck_assert_str_eq(v, ""); /* priced and keyed as standard */
    ck_assert(f & GM_PRICE_F_UNLISTED_VARIANT);
    /* above 128,000: the card's row prices input 1.20 (the contract's 0.50 does not override
     * it): 0.1440012 + 0.0024 + 0.003, as for a tenant without a contract */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 120001, 8000, 1000, 0), &v, &f),
                     "0.149401200000000000");
    /* no unit price of it is the contract's (input and output the card's row, cached, gpu
     * and the fee the card's, cache_write and reasoning following the row): no contract_price */
    ck_assert(!(f & GM_PRICE_F_CONTRACT_PRICE));
    gm_rating_book_free(b);

    const char *globex = "{\"tenant\":\"globex\",\"currency\":\"USD\",\"prices\":{\"long-70b\":{"
                         "\"context_tiers\":[{\"above_tokens\":64000,\"prices\":{\"input\":{"
                         "\"per_1m_tokens\":\"1.00\"}}}]}}}";
    b = book_with(card, globex);
    /* globex's own row replaces the card's: above 64,000 input 1.00 flat, the rest base:
     * 120,001 x 0.000001 = 0.120001 + 0.0024 + 1,000 x 0.000002 = 0.002 */
    ck_assert_str_eq(priced(b, req("globex", "fra1", 120001, 8000, 1000, 0), &v, &f),
                     "0.124401000000000000");
    ck_assert_str_eq(v, "ctx>64000");
    /* at remote the contract's row stays flat, the base prices are x 1.25:
     * 0.120001 + 8,000 x 0.000000375 = 0.003 + 1,000 x 0.0000025 = 0.0025 */
    ck_assert_str_eq(priced(b, req("globex", "tro1", 120001, 8000, 1000, 0), &v, &f),
                     "0.125501000000000000");
    /* a prompt of 64,000 is not above 64,000 */
    ck_assert_str_eq(priced(b, req("globex", "fra1", 60000, 4000, 1000, 0), &v, &f),
                     "0.039200000000000000");
    ck_assert_str_eq(v, "");
    gm_rating_book_free(b);
}
END_TEST

static gm_invoice *invoice_of(const gm_rating_book *b, const gm_usage *ev, size_t n)
{
    gm_rating_period *p = gm_rating_period_new(b, ev[0].tenant, NOV1);
    char err[512];
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(gm_rating_period_add_event(p, &ev[i], NULL, err, sizeof err) == 0, "%s", err);
    gm_invoice *inv = NULL;
    ck_assert_msg(gm_rating_period_invoice(p, NULL, &inv, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_invoice_check(inv, err, sizeof err) == 0, "%s", err);
    gm_rating_period_free(p);
    return inv;
}

/* Invoice lines per variant ("" first); a tier rule covers the base variant only; a free
 * allowance falls on the lines in line order. */
START_TEST(test_invoice_lines_per_variant)
{
    const char *k = "{\"tenant\":\"acme\",\"currency\":\"USD\",\"free_allowances\":{\"input\":"
                    "\"6000\"},\"tiers\":[{\"dimension\":\"output\",\"mode\":\"volume\",\"bands\":"
                    "[{\"up_to\":null,\"price\":{\"per_1m_tokens\":\"1.00\"}}]}]}";
    gm_rating_book *b = book_with(card, k);
    gm_usage ev[] = {req("acme", "fra1", 5000, 0, 1050, 0),
                     req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH),
                     req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH),
                     req("acme", "fra1", 120001, 8000, 1000, 0)};
    gm_invoice *inv = invoice_of(b, ev, 4);
    /* usage lines sorted by (dimension, model, tier, version, variant): */
    struct {
        const char *dim, *variant, *qty, *amount;
    } want[] = {
        {"input", "", "5000", "0.003000000000000000"},
        {"input", "batch", "10000", "0.003000000000000000"},
        {"input", "ctx>128000", "120001", "0.144001200000000000"},
        {"cached", "ctx>128000", "8000", "0.002400000000000000"},
        {"output", "batch", "2100", "0.002100000000000000"},
        {"output", "ctx>128000", "1000", "0.003000000000000000"},
    };
    size_t i = 0;
    for (; i < inv->n_lines && inv->lines[i].kind == GM_LINE_USAGE; i++) {
        ck_assert_msg(i < GM_ARRAY_LEN(want), "line %zu: %s", i, inv->lines[i].description);
        const gm_invoice_line *l = &inv->lines[i];
        ck_assert_str_eq(gm_dim_name(l->dim), want[i].dim);
        ck_assert_str_eq(l->variant, want[i].variant);
        char q[48];
        gm_i128_format(l->qty, q, sizeof q);
        ck_assert_str_eq(q, want[i].qty);
        ck_assert_str_eq(dec(l->amount_e18, 18), want[i].amount);
    }
    ck_assert_int_eq(i, GM_ARRAY_LEN(want));
    /* the tier rule on output took the base variant's 1,050 only: 1,050 x 0.000001 */
    ck_assert_int_eq(inv->lines[i].kind, GM_LINE_TIER);
    ck_assert_str_eq(dec(inv->lines[i].amount_e18, 18), "0.001050000000000000");
    ck_assert_int_eq((int)inv->lines[i].qty, 1050);
    /* 6,000 free input: 5,000 on the "" line, then 1,000 on the batch line */
    i++;
    ck_assert_int_eq(inv->lines[i].kind, GM_LINE_ALLOWANCE);
    ck_assert_str_eq(inv->lines[i].variant, "");
    ck_assert_int_eq((int)inv->lines[i].qty, 5000);
    ck_assert_int_eq(inv->lines[i + 1].kind, GM_LINE_ALLOWANCE);
    ck_assert_str_eq(inv->lines[i + 1].variant, "batch");
    ck_assert_int_eq((int)inv->lines[i + 1].qty, 1000);
    gm_invoice_free(inv);
    gm_rating_book_free(b);
}
END_TEST

/* The one pricing path: random events priced one by one, and the same events summed per
 * (model, site, hour, variant) as charges are, then priced by variant, give equal invoices. */
START_TEST(test_events_and_charge_sums_agree)
{
    gm_rating_book *b = book_with(card, NULL);
    gm_rating_period *pe = gm_rating_period_new(b, "acme", NOV1);
    gm_rating_period *ps = gm_rating_period_new(b, "acme", NOV1);
    char err[512];
    uint64_t seed = 20261203;
    const char *sites[] = {"fra1", "tro1", "x9"};
    for (int i = 0; i < 20000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t r = seed >> 11;
        gm_usage u =
            req("acme", sites[r % 3], 127000 + (int64_t)(r >> 3) % 2000, (int64_t)(r >> 15) % 3,
                (int64_t)(r >> 20) % 500, (gm_rating_svc)((r >> 30) % 3));
        u.time_us = NOV1 + (int64_t)((r >> 33) % 4) * HOUR;
        gm_event_price p;
        ck_assert_msg(gm_rating_period_add_event(pe, &u, &p, err, sizeof err) == 0, "%s", err);
        gm_usage_sum s = {u.model, u.site, u.time_us, {0}, p.variant};
        for (int d = 0; d < GM_DIM_COUNT; d++)
            s.qty[d] = u.qty[d];
        ck_assert_msg(gm_rating_period_add_sum(ps, &s, err, sizeof err) == 0, "%s", err);
    }
    gm_invoice *a = NULL, *c = NULL;
    ck_assert(gm_rating_period_invoice(pe, NULL, &a, err, sizeof err) == 0);
    ck_assert(gm_rating_period_invoice(ps, NULL, &c, err, sizeof err) == 0);
    ck_assert_int_eq(a->n_lines, c->n_lines);
    ck_assert(a->n_lines >= 18); /* 3 dims x 2 contexts x 3 service tiers at least */
    for (size_t i = 0; i < a->n_lines; i++) {
        ck_assert_str_eq(a->lines[i].variant, c->lines[i].variant);
        ck_assert(a->lines[i].qty == c->lines[i].qty);
        ck_assert(a->lines[i].amount_e18 == c->lines[i].amount_e18);
    }
    ck_assert(a->total_minor == c->total_minor);
    gm_invoice_free(a);
    gm_invoice_free(c);
    gm_rating_period_free(pe);
    gm_rating_period_free(ps);
    gm_rating_book_free(b);
}
END_TEST

static void refused_card(const char *doc, const char *want)
{
    gm_rating_card *c = NULL;
    char err[1024];
    int rc = gm_rating_card_parse(S(doc), &c, err, sizeof err);
    ck_assert_msg(rc != 0, "accepted, expected: %s", want);
    ck_assert_msg(strstr(err, want), "got: %s\nwant: %s", err, want);
}

static void refused_contract(const char *doc, const char *want)
{
    gm_rating_contract *k = NULL;
    char err[1024];
    int rc = gm_rating_contract_parse(S(doc), &k, err, sizeof err);
    ck_assert_msg(rc != 0, "accepted, expected: %s", want);
    ck_assert_msg(strstr(err, want), "got: %s\nwant: %s", err, want);
}

START_TEST(test_refusals_name_field_and_rule)
{
    /* Every price of the card x the multiplier must be exact in 12 digits. The card's prices
     * (10^-12: 600000, 300000, 2000000, 1200000, 3000000 and, at remote, x 1.25: 750000,
     * 375000, 2500000, 1500000, 3750000) keep a multiplier exact when it is a multiple of
     * 10^6 / gcd(price, 10^6): 5, 10, 1, 5, 1, 4, 8, 2, 2, 4; lcm 40, i.e. 0.00004. So
     * 0.333333 is refused at the first price (0.0000006 x 0.333333 = 0.0000001999998), with
     * 0.33332 and 0.33336, the nearest multiples of 0.00004. */
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0.333333\"}," CARD_TAIL,
                 "service_tiers.batch: 0.333333 x prices.long-70b.input at site tier metro "
                 "(0.000000600000) = 0.000000199999800000 is not exact in 12 fraction digits");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0.333333\"}," CARD_TAIL,
                 "nearest exact multipliers: \"0.33332\" or \"0.33336\"");
    /* below the first step: the two smallest exact ones */
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0.00001\"}," CARD_TAIL,
                 "nearest exact multipliers: \"0.00004\" or \"0.00008\"");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"flex\":\"0.8\"}," CARD_TAIL,
                 "service_tiers.flex: unknown service tier (allowed: batch, priority");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"standard\":\"1\"}," CARD_TAIL,
                 "service_tiers.standard: the standard tier is priced by the card's prices "
                 "themselves (multiplier 1) and cannot be listed");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0\"}," CARD_TAIL,
                 "service_tiers.batch: must be a decimal string greater than 0");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B "},\"service_tiers\":{\"batch\":0.5}," CARD_TAIL,
                 "service_tiers.batch: must be a decimal string like \"0.5\"");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0.1234567\"}," CARD_TAIL,
                 "service_tiers.batch: must be a decimal string greater than 0 and at most "
                 "1000000 with at most 6 fraction digits, got \"0.1234567\"");
#define M_ROWS(rows)                                                                               \
    CARD_HEAD "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{"                \
              "\"per_1m_tokens\":\"0\"},\"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{"            \
              "\"per_gpu_hour\":\"0\"},\"context_tiers\":" rows "}}}"
#define ROW(n) "{\"above_tokens\":" #n ",\"prices\":{\"input\":{\"per_1m_tokens\":\"2\"}}}"
    refused_card(M_ROWS("[" ROW(128000) "," ROW(64000) "]"),
                 "prices.m.context_tiers[1].above_tokens: rows must be strictly ascending by "
                 "above_tokens, got 64000 after 128000");
    refused_card(M_ROWS("[" ROW(1000) "," ROW(1000) "]"),
                 "prices.m.context_tiers[1].above_tokens: rows must be strictly ascending");
    refused_card(
        M_ROWS("[" ROW(1) "," ROW(2) "," ROW(3) "," ROW(4) "," ROW(5) "," ROW(6) "," ROW(7) "," ROW(8) "," ROW(
            9) "," ROW(10) "," ROW(11) "," ROW(12) "," ROW(13) "," ROW(14) "," ROW(15) "," ROW(16) "," ROW(17) "]"),
        "prices.m.context_tiers: at most 16 rows, got 17");
    refused_card(M_ROWS("[" ROW(0) "]"),
                 "prices.m.context_tiers[0].above_tokens: must be a JSON integer from 1");
    refused_card(M_ROWS("[{\"above_tokens\":\"128000\",\"prices\":{}}]"),
                 "prices.m.context_tiers[0].above_tokens: must be a JSON integer");
    refused_card(M_ROWS("[{\"above_tokens\":5,\"prices\":{}}]"),
                 "prices.m.context_tiers[0].prices: must state at least one dimension");
    refused_card(M_ROWS("[{\"above_tokens\":5,\"price\":{}}]"),
                 "prices.m.context_tiers[0].price: unknown field (allowed: above_tokens, prices");
    refused_card(M_ROWS("[]"), "prices.m.context_tiers: must be a non-empty array");
    /* a site tier's multiplier must keep a row's price exact too: 1.25 x 0.0000000000001 */
    refused_card(CARD_HEAD
                 "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{"
                 "\"per_1m_tokens\":\"0\"},\"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{"
                 "\"per_gpu_hour\":\"0\"},\"context_tiers\":[{\"above_tokens\":5,\"prices\":{"
                 "\"input\":{\"per_token\":\"0.000000000001\"}}}]}}," CARD_TAIL,
                 "site_tiers.remote.multiplier: 1.25 x prices.m.context_tiers[0].prices.input");
    /* no context_tiers in a site tier's prices */
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B "},\"site_tiers\":{\"metro\":{\"sites\":["
                           "\"fra1\"],\"prices\":{\"long-70b\":{\"context_tiers\":[]}}}},"
                           "\"default_site_tier\":\"metro\"}",
                 "site_tiers.metro.prices.long-70b.context_tiers: not allowed in a site tier's "
                 "prices (a model's context rows are prices.long-70b.context_tiers, and each site "
                 "tier's multiplier applies to them)");
    /* contracts: their own prices x their own multipliers (0.0000005 x 0.333333) */
    refused_contract("{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{\"batch\":"
                     "\"0.333333\"},\"prices\":{\"long-70b\":{\"input\":{\"per_1m_tokens\":"
                     "\"0.50\"}}}}",
                     "service_tiers.batch: 0.333333 x prices.long-70b.input (0.000000500000) = "
                     "0.000000166666500000 is not exact in 12 fraction digits");
    refused_contract("{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{\"priority\":"
                     "\"1.5\",\"standard\":\"1\"}}",
                     "service_tiers.standard:");
    /* the card's prices x the contract's multiplier: 0.000000375 (remote cached) x 0.33334 */
    gm_rating_book *b = gm_rating_book_new();
    char err[1024];
    ck_assert(gm_rating_book_add_card(b, S(card), err, sizeof err) == 0);
    ck_assert(gm_rating_book_add_contract(b,
                                          S("{\"tenant\":\"acme\",\"currency\":\"USD\","
                                            "\"service_tiers\":{\"batch\":\"0.33334\"}}"),
                                          err, sizeof err) == 0);
    ck_assert_int_eq(gm_rating_book_check_contracts(b, err, sizeof err), GM_ERANGE);
    ck_assert_msg(strstr(err, "contract acme: service_tiers.batch: 0.33334 x card list-usd v1 "
                              "prices.long-70b.cached at site tier remote (0.000000375000)"),
                  "%s", err);
    ck_assert_msg(strstr(err, "nearest exact multipliers: \"0.33332\" or \"0.33336\""), "%s", err);
    gm_rating_book_free(b);
    /* variants that are not canonical text */
    gm_rating_svc s;
    int64_t n;
    const char *bad[] = {"standard", "ctx>0",   "ctx>012",
                         "batch/",   "ctx>12x", "batch/batch",
                         "ctx>",     "Batch",   "priority/ctx>99999999999999999999"};
    for (size_t i = 0; i < GM_ARRAY_LEN(bad); i++)
        ck_assert_msg(gm_rating_variant_parse(bad[i], &s, &n, err, sizeof err) == GM_EINVAL, "%s",
                      bad[i]);
    ck_assert(gm_rating_variant_parse("priority/ctx>128000", &s, &n, err, sizeof err) == 0);
    ck_assert_int_eq(s, GM_RATING_SVC_PRIORITY);
    ck_assert_int_eq(n, 128000);
}
END_TEST

/* A context row's object may not repeat a field: a first-wins reading would bill another
 * price than the one other JSON readers (and the card's author) see. */
START_TEST(test_repeated_row_fields_refused)
{
#define M_CARD(rows)                                                                               \
    CARD_HEAD "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{"             \
              "\"per_1m_tokens\":\"0.30\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":{"      \
              "\"per_gpu_hour\":\"0\"},\"context_tiers\":" rows "}}}"
    refused_card(M_CARD("[{\"above_tokens\":7,\"prices\":{\"input\":{\"per_1m_tokens\":\"1.00\"}},"
                        "\"prices\":{\"input\":{\"per_1m_tokens\":\"0.01\"}}}]"),
                 "prices.m.context_tiers[0].prices: field appears twice");
    refused_card(M_CARD("[{\"above_tokens\":7,\"above_tokens\":9,\"prices\":{\"input\":{"
                        "\"per_1m_tokens\":\"1.00\"}}}]"),
                 "prices.m.context_tiers[0].above_tokens: field appears twice");
    refused_card(M_CARD("[{\"above_tokens\":7,\"prices\":{\"input\":{\"per_1m_tokens\":\"1.00\"}}},"
                        "{\"above_tokens\":9,\"description\":\"a\",\"description\":\"b\","
                        "\"prices\":{\"input\":{\"per_1m_tokens\":\"1.00\"}}}]"),
                 "prices.m.context_tiers[1].description: field appears twice");
    refused_card(M_CARD("[{\"above_tokens\":7,\"prices\":{\"input\":{\"per_1m_tokens\":\"1.00\"},"
                        "\"input\":{\"per_1m_tokens\":\"0.01\"}}}]"),
                 "prices.m.context_tiers[0].prices.input: field appears twice");
    refused_contract("{\"tenant\":\"dd\",\"currency\":\"USD\",\"prices\":{\"m\":{"
                     "\"context_tiers\":[{\"above_tokens\":5,\"above_tokens\":500,\"prices\":{"
                     "\"input\":{\"per_1m_tokens\":\"9.00\"}}}]}}}",
                     "prices.m.context_tiers[0].above_tokens: field appears twice");
    refused_contract("{\"tenant\":\"dd\",\"currency\":\"USD\",\"prices\":{\"m\":{"
                     "\"context_tiers\":[{\"above_tokens\":5,\"prices\":{\"input\":{"
                     "\"per_1m_tokens\":\"9.00\"}},\"prices\":{\"input\":{\"per_1m_tokens\":"
                     "\"0.01\"}}}]}}}",
                     "prices.m.context_tiers[0].prices: field appears twice");
    /* a row's description (free text) once is fine */
    gm_rating_card *c = NULL;
    char err[512];
    const char *ok = M_CARD("[{\"above_tokens\":7,\"description\":\"long prompts\",\"prices\":{"
                            "\"input\":{\"per_1m_tokens\":\"1.00\"}}}]");
    ck_assert_msg(gm_rating_card_parse(S(ok), &c, err, sizeof err) == 0, "%s", err);
    gm_rating_card_free(c);
}
END_TEST

static void unit_prices(const gm_rating_book *b, const char *tenant, const char *site,
                        int64_t prompt, const char *want_variant, const int64_t want[GM_DIM_COUNT])
{
    gm_usage u = {tenant, "m", site, NOV1 + HOUR, {0}, GM_RATING_SVC_STANDARD};
    gm_rating_usage_tokens(u.qty, prompt, 0, 0, 10, 0, 0);
    gm_event_price p;
    char err[512];
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(p.variant, want_variant);
    for (int d = 0; d < GM_DIM_COUNT; d++)
        ck_assert_msg(p.unit_price_p[d] == want[d], "prompt %lld %s: %lld, want %lld",
                      (long long)prompt, gm_dim_name((gm_dim)d), (long long)p.unit_price_p[d],
                      (long long)want[d]);
    /* a charge of the variant is priced alike (one path) */
    ck_assert_msg(gm_rating_price_charge(b, tenant, "m", site, NOV1 + HOUR, want_variant, &p, err,
                                         sizeof err) == 0,
                  "%s", err);
    for (int d = 0; d < GM_DIM_COUNT; d++)
        ck_assert_int_eq(p.unit_price_p[d], want[d]);
}

/* Rows are cumulative: row k prices what row k-1 priced, with the dimensions it states
 * replaced; cache_write and reasoning follow the resulting input and output unless a level
 * states them. So a longer prompt never loses a price a lower row set. */
START_TEST(test_rows_are_cumulative)
{
    /* m: input 0.60, cached 0.30, output 2.00; above 1000 input 1.00, above 2000 output 4.00 */
    const char *rows = "[{\"above_tokens\":1000,\"prices\":{\"input\":{\"per_1m_tokens\":\"1.00\"}}"
                       "},{\"above_tokens\":2000,\"prices\":{\"output\":{\"per_1m_tokens\":\"4."
                       "00\"}}}]";
    char doc[2048]; /* with the site tiers (metro fra1, remote tro1 x 1.25) */
    snprintf(doc, sizeof doc,
             CARD_HEAD "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{"
                       "\"per_1m_tokens\":\"0.30\"},\"output\":{\"per_1m_tokens\":\"2.00\"},"
                       "\"gpu\":{\"per_gpu_hour\":\"0\"},\"context_tiers\":%s}}," CARD_TAIL,
             rows);
    gm_rating_book *b = book_with(doc, NULL);
    /* by hand: prompt 1,900 and 10 output tokens: 1,900 x 0.000001 + 10 x 0.000002 = 0.00192;
     * prompt 2,001: 2,001 x 0.000001 (row 0's input, kept) + 10 x 0.000004 = 0.002041 (before:
     * 0.0012406, input back at 0.60) */
    gm_usage u = {"t", "m", "fra1", NOV1 + HOUR, {0}, GM_RATING_SVC_STANDARD};
    gm_rating_usage_tokens(u.qty, 1900, 0, 0, 10, 0, 0);
    ck_assert_str_eq(priced(b, u, NULL, NULL), "0.001920000000000000");
    gm_rating_usage_tokens(u.qty, 2001, 0, 0, 10, 0, 0);
    ck_assert_str_eq(priced(b, u, NULL, NULL), "0.002041000000000000");
    /* unit prices (10^-12 per token): input, cached, output, gpu, cache_write (follows the
     * resulting input), reasoning (follows the resulting output), request */
    unit_prices(b, "t", "fra1", 1000, "",
                (int64_t[]){600000, 300000, 2000000, 0, 600000, 2000000, 0});
    unit_prices(b, "t", "fra1", 1001, "ctx>1000",
                (int64_t[]){1000000, 300000, 2000000, 0, 1000000, 2000000, 0});
    unit_prices(b, "t", "fra1", 2001, "ctx>2000",
                (int64_t[]){1000000, 300000, 4000000, 0, 1000000, 4000000, 0});
    /* at remote (x 1.25): every price of row 1, the inherited ones too, x 1.25 */
    unit_prices(b, "t", "tro1", 2001, "ctx>2000",
                (int64_t[]){1250000, 375000, 5000000, 0, 1250000, 5000000, 0});
    gm_rating_book_free(b);

    /* a contract's own rows are cumulative alike (flat at every site tier) */
    b = book_with(doc, "{\"tenant\":\"k\",\"currency\":\"USD\",\"prices\":{\"m\":{"
                       "\"context_tiers\":[{\"above_tokens\":500,\"prices\":{\"input\":{"
                       "\"per_1m_tokens\":\"0.80\"}}},{\"above_tokens\":3000,\"prices\":{"
                       "\"output\":{\"per_1m_tokens\":\"5.00\"}}}]}}}");
    unit_prices(b, "k", "tro1", 3001, "ctx>3000",
                (int64_t[]){800000, 375000, 5000000, 0, 800000, 5000000, 0});
    gm_rating_book_free(b);

    /* cache_write and reasoning stated by the model entry stay stated above a row that
     * re-prices input and output (by hand, the reviewer's case: cache_write 1,000, output
     * 100 of which reasoning 50; prompt 1,000: 0.005 + 50 x 0.000002 + 50 x 0.000009 =
     * 0.00555; one input token more, prompt 1,001: 0.0000012 + 0.005 + 50 x 0.000003 +
     * 0.00045 = 0.0056012, before 0.0015012 with cache_write and reasoning at the row's
     * input and output) */
    b = book_with(CARD_HEAD "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{"
                            "\"per_1m_tokens\":\"0.30\"},\"output\":{\"per_1m_tokens\":\"2.00\"},"
                            "\"gpu\":{\"per_gpu_hour\":\"0\"},\"cache_write\":{\"per_1m_tokens\":"
                            "\"5.00\"},\"reasoning\":{\"per_1m_tokens\":\"9.00\"},"
                            "\"context_tiers\":[{\"above_tokens\":1000,\"prices\":{\"input\":{"
                            "\"per_1m_tokens\":\"1.20\"},\"output\":{\"per_1m_tokens\":\"3.00\"}}},"
                            "{\"above_tokens\":2000,\"prices\":{\"cache_write\":{\"per_1m_tokens\":"
                            "\"6.00\"}}}]}}}",
                  NULL);
    gm_rating_usage_tokens(u.qty, 0, 0, 1000, 100, 50, 0);
    ck_assert_str_eq(priced(b, u, NULL, NULL), "0.005550000000000000");
    gm_rating_usage_tokens(u.qty, 1, 0, 1000, 100, 50, 0);
    ck_assert_str_eq(priced(b, u, NULL, NULL), "0.005601200000000000");
    unit_prices(b, "t", "fra1", 1001, "ctx>1000",
                (int64_t[]){1200000, 300000, 3000000, 0, 5000000, 9000000, 0});
    /* row 1 states cache_write: it replaces the base's; input and output stay row 0's */
    unit_prices(b, "t", "fra1", 2001, "ctx>2000",
                (int64_t[]){1200000, 300000, 3000000, 0, 6000000, 9000000, 0});
    gm_rating_book_free(b);

    /* a row may be cheaper than the base, even free (the card's author decides) */
    b = book_with(M_CARD("[{\"above_tokens\":1000,\"prices\":{\"input\":{\"per_token\":\"0\"}}}]"),
                  NULL);
    unit_prices(b, "t", "s", 1001, "ctx>1000", (int64_t[]){0, 300000, 2000000, 0, 0, 2000000, 0});
    gm_rating_book_free(b);
}
END_TEST

/* contract_price: at least one unit price of the request is the contract's. */
START_TEST(test_contract_price_flag)
{
    unsigned f;
    /* only the contract's own rows: below them every price is the card's */
    gm_rating_book *b =
        book_with(card, "{\"tenant\":\"acme\",\"currency\":\"USD\",\"prices\":{\"long-70b\":{"
                        "\"context_tiers\":[{\"above_tokens\":64000,\"prices\":{\"input\":{"
                        "\"per_1m_tokens\":\"1.00\"}}}]}}}");
    priced(b, req("acme", "fra1", 60000, 4000, 10, 0), NULL, &f);
    ck_assert(!(f & GM_PRICE_F_CONTRACT_PRICE));
    priced(b, req("acme", "fra1", 60000, 4001, 10, 0), NULL, &f);
    ck_assert(f & GM_PRICE_F_CONTRACT_PRICE); /* the contract's row prices input */
    gm_rating_book_free(b);
    /* a contract input price: flagged at the base; above the card's row (input, output) the
     * others are the card's too */
    b = book_with(card, "{\"tenant\":\"acme\",\"currency\":\"USD\",\"prices\":{\"long-70b\":{"
                        "\"input\":{\"per_1m_tokens\":\"0.50\"}}}}");
    priced(b, req("acme", "fra1", 5000, 0, 10, 0), NULL, &f);
    ck_assert(f & GM_PRICE_F_CONTRACT_PRICE);
    priced(b, req("acme", "fra1", 120001, 8000, 10, 0), NULL, &f);
    ck_assert(!(f & GM_PRICE_F_CONTRACT_PRICE));
    gm_rating_book_free(b);
    /* a contract cached price stays in force above the card's row (the row does not state it) */
    b = book_with(card, "{\"tenant\":\"acme\",\"currency\":\"USD\",\"prices\":{\"long-70b\":{"
                        "\"cached\":{\"per_1m_tokens\":\"0.20\"}}}}");
    priced(b, req("acme", "fra1", 120001, 8000, 10, 0), NULL, &f);
    ck_assert(f & GM_PRICE_F_CONTRACT_PRICE);
    gm_rating_book_free(b);
    /* a contract that names no price (service_tiers only): never flagged */
    b = book_with(card, "{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{\"batch\":"
                        "\"0.6\"}}");
    priced(b, req("acme", "fra1", 5000, 0, 10, GM_RATING_SVC_BATCH), NULL, &f);
    ck_assert(!(f & GM_PRICE_F_CONTRACT_PRICE));
    gm_rating_book_free(b);
}
END_TEST

/* The example card of docs/rating.md, "Price variants" (its first JSON block), as printed:
 * it validates, and it prices Example 11 and 12 as the doc says. */
START_TEST(test_doc_example_card_validates)
{
    char path[512];
    snprintf(path, sizeof path, "%s/docs/rating.md", GM_SOURCE_DIR);
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "%s", path);
    static char doc[1 << 20];
    size_t n = fread(doc, 1, sizeof doc - 1, fp);
    fclose(fp);
    doc[n] = '\0';
    char *sec = strstr(doc, "\n## Price variants\n");
    ck_assert(sec != NULL);
    char *start = strstr(sec, "```json\n");
    ck_assert(start != NULL);
    start += strlen("```json\n");
    char *end = strstr(start, "```");
    ck_assert(end != NULL);
    *end = '\0';
    gm_rating_book *b = gm_rating_book_new();
    char err[768];
    ck_assert_msg(gm_rating_book_add_card(b, start, strlen(start), err, sizeof err) == 0,
                  "the doc's example card: %s", err);
    ck_assert_msg(gm_rating_book_check_contracts(b, err, sizeof err) == 0, "%s", err);
    const char *v;
    /* Example 11 (fra1, metro) and 12 (128,001 prompt tokens) */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH), &v, NULL),
                     "0.002550000000000000");
    ck_assert_str_eq(priced(b, req("acme", "fra1", 120001, 8000, 1000, 0), &v, NULL),
                     "0.149401200000000000");
    ck_assert_str_eq(v, "ctx>128000");
    gm_rating_book_free(b);
}
END_TEST

static void refused_card_not(const char *doc, const char *want, const char *not_want)
{
    gm_rating_card *c = NULL;
    char err[1024];
    ck_assert_msg(gm_rating_card_parse(S(doc), &c, err, sizeof err) != 0, "accepted: %s", want);
    ck_assert_msg(strstr(err, want), "got: %s\nwant: %s", err, want);
    ck_assert_msg(!strstr(err, not_want), "got: %s\nunwanted: %s", err, not_want);
}

/* A price x multiplier past the largest price (int64 at 10^-12) is refused as such, with no
 * multiplier offered (none of the same size can help); an offered multiplier never exceeds
 * 1000000 nor takes a price of the card past the largest price. */
START_TEST(test_price_past_the_largest_refused_as_such)
{
#define BIG_CARD(input, svc, tiers)                                                                \
    CARD_HEAD "\"prices\":{\"m\":{\"input\":{\"per_token\":\"" input "\"},\"cached\":{"            \
              "\"per_1m_tokens\":\"0.30\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":{"      \
              "\"per_gpu_hour\":\"0\"}}},\"service_tiers\":" svc tiers "}"
    /* 9223372 x 1.5 = 13835058 per token */
    refused_card_not(BIG_CARD("9223372", "{\"priority\":\"1.5\"}", ""),
                     "service_tiers.priority: 1.5 x prices.m.input at site tier standard "
                     "(9223372.000000000000) = 13835058.000000000000000000 exceeds the largest "
                     "price (9223372.036854775807 per token)",
                     "nearest");
    /* 10000 x 1000000 (the largest multiplier): before, "1000000.00004" was offered */
    refused_card_not(BIG_CARD("10000", "{\"priority\":\"1000000\"}", ""),
                     "= 10000000000.000000000000000000 exceeds the largest price "
                     "(9223372.036854775807 per token)",
                     "1000000.");
    /* a site tier's multiplier */
    refused_card_not(BIG_CARD("100000", "{\"batch\":\"0.5\"}",
                              ",\"site_tiers\":{\"metro\":{\"sites\":[\"fra1\"]},\"remote\":{"
                              "\"multiplier\":\"1000000\",\"sites\":[\"tro1\"]}},"
                              "\"default_site_tier\":\"metro\""),
                     "site_tiers.remote.multiplier: 1000000 x prices.m.input (100000.000000000000 "
                     "per token) = 100000000000.000000000000000000 exceeds the largest price "
                     "(9223372.036854775807 per token); give the tier its own price for it "
                     "(site_tiers.remote.prices.m.input) or pick a smaller multiplier",
                     "not exact");
    /* a context row's price x a site tier's multiplier, and x a service tier's */
#define ROW_CARD(tail)                                                                             \
    CARD_HEAD "\"prices\":{\"m\":{\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{"                \
              "\"per_1m_tokens\":\"0\"},\"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{"            \
              "\"per_gpu_hour\":\"0\"},\"context_tiers\":[{\"above_tokens\":5,\"prices\":{"        \
              "\"input\":{\"per_token\":\"100000\"}}}]}}" tail "}"
    refused_card_not(ROW_CARD(",\"site_tiers\":{\"remote\":{\"multiplier\":\"1000\"}},"
                              "\"default_site_tier\":\"remote\""),
                     "site_tiers.remote.multiplier: 1000 x prices.m.context_tiers[0].prices.input "
                     "(100000.000000000000 per token) = 100000000.000000000000000000 exceeds the "
                     "largest price (9223372.036854775807 per token)",
                     "not exact");
    refused_card_not(ROW_CARD(",\"service_tiers\":{\"priority\":\"1000000\"}"),
                     "service_tiers.priority: 1000000 x prices.m.context_tiers[0].prices.input at "
                     "site tier standard (100000.000000000000) = 100000000000.000000000000000000 "
                     "exceeds the largest price (9223372.036854775807 per token)",
                     "nearest");
    /* not exact, and the next exact multiplier up would take the 9000000 input past the
     * largest price (9000000 x 1.02482 = 9223380): only the one below is offered. cached
     * 0.0000003 x 1.024815 = 0.0000003074445; the step of this card's prices is 0.00001 */
    refused_card_not(BIG_CARD("9000000", "{\"priority\":\"1.024815\"}", ""),
                     "service_tiers.priority: 1.024815 x prices.m.cached at site tier standard "
                     "(0.000000300000) = 0.000000307444500000 is not exact in 12 fraction digits "
                     "(a multiplier must keep every price exact, as site-tier multipliers do); "
                     "nearest exact multiplier: \"1.02481\"",
                     "1.02482");
}
END_TEST

static void refused_book(const char *c, const char *contract, const char *want)
{
    gm_rating_book *b = gm_rating_book_new();
    char err[1024];
    ck_assert_msg(gm_rating_book_add_card(b, S(c), err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_rating_book_add_contract(b, S(contract), err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gm_rating_book_check_contracts(b, err, sizeof err), GM_ERANGE);
    ck_assert_msg(strstr(err, want), "got: %s\nwant: %s", err, want);
    gm_rating_book_free(b);
}

/* A contract-and-card refusal names the context row's field path, on both sides. */
START_TEST(test_contract_card_refusal_names_the_row)
{
    /* the card's batch 0.5 x the contract's row price 0.000000000003: only whole multipliers
     * keep 3 x 10^-12 exact */
    refused_book(card,
                 "{\"tenant\":\"acme3\",\"currency\":\"USD\",\"prices\":{\"long-70b\":{"
                 "\"context_tiers\":[{\"above_tokens\":5,\"prices\":{\"output\":{"
                 "\"per_1m_tokens\":\"0.000003\"}}}]}}}",
                 "contract acme3: card list-usd v1 service_tiers.batch: 0.5 x the contract's "
                 "prices.long-70b.context_tiers[0].prices.output (0.000000000003) = "
                 "0.000000000001500000 is not exact in 12 fraction digits (a multiplier must keep "
                 "every price exact, as site-tier multipliers do); nearest exact multipliers: "
                 "\"1\" or \"2\"");
    /* the card's base price */
    refused_book(card,
                 "{\"tenant\":\"acme3\",\"currency\":\"USD\",\"prices\":{\"long-70b\":{"
                 "\"cached\":{\"per_1m_tokens\":\"0.000003\"}}}}",
                 "contract acme3: card list-usd v1 service_tiers.batch: 0.5 x the contract's "
                 "prices.long-70b.cached (0.000000000003)");
    /* the contract's batch 0.5 x the card's row price 0.000000000003 */
    refused_book(M_ROWS("[{\"above_tokens\":5,\"prices\":{\"input\":{\"per_token\":"
                        "\"0.000000000003\"}}}]"),
                 "{\"tenant\":\"k\",\"currency\":\"USD\",\"service_tiers\":{\"batch\":\"0.5\"}}",
                 "contract k: service_tiers.batch: 0.5 x card list-usd v1 "
                 "prices.m.context_tiers[0].prices.input at site tier standard (0.000000000003)");
}
END_TEST

/* Free allowances fall on a dimension's usage lines in line order: model, site tier, card
 * version, then variant; so a metro priority line comes before a remote base line. */
START_TEST(test_allowance_line_order)
{
    gm_rating_book *b = book_with(card, "{\"tenant\":\"al\",\"currency\":\"USD\","
                                        "\"free_allowances\":{\"input\":\"150\"}}");
    gm_usage ev[] = {req("al", "tro1", 100, 0, 0, GM_RATING_SVC_STANDARD),
                     req("al", "fra1", 100, 0, 0, GM_RATING_SVC_PRIORITY)};
    gm_invoice *inv = invoice_of(b, ev, 2);
    size_t a = 0;
    const char *tier[2], *variant[2];
    int qty[2];
    for (size_t i = 0; i < inv->n_lines; i++)
        if (inv->lines[i].kind == GM_LINE_ALLOWANCE) {
            ck_assert(a < 2);
            tier[a] = inv->lines[i].site_tier;
            variant[a] = inv->lines[i].variant;
            qty[a++] = (int)inv->lines[i].qty;
        }
    ck_assert_int_eq(a, 2);
    /* "metro" < "remote": the metro priority line first (100), then the remote "" line (50) */
    ck_assert_str_eq(tier[0], "metro");
    ck_assert_str_eq(variant[0], "priority");
    ck_assert_int_eq(qty[0], 100);
    ck_assert_str_eq(tier[1], "remote");
    ck_assert_str_eq(variant[1], "");
    ck_assert_int_eq(qty[1], 50);
    gm_invoice_free(inv);
    gm_rating_book_free(b);
}
END_TEST

/* A multiplier has at most 6 fraction digits; trailing zeros past them do not count; a
 * seventh non-zero digit is refused with the nearest multipliers of 6 digits. */
START_TEST(test_multiplier_fraction_digits)
{
    gm_rating_book *b =
        book_with(CARD_HEAD "\"prices\":{" LONG_70B "},\"service_tiers\":{\"batch\":"
                            "\"0.5000000000000000000000000000000\"}," CARD_TAIL,
                  NULL);
    /* x 0.5 exactly: Example 11's batch request */
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH), NULL, NULL),
                     "0.002550000000000000");
    gm_rating_book_free(b);
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0.5000001\"}," CARD_TAIL,
                 "service_tiers.batch: must be a decimal string greater than 0 and at most "
                 "1000000 with at most 6 fraction digits, got \"0.5000001\"; nearest: \"0.5\" or "
                 "\"0.500001\"");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"priority\":\"1.2345678\"}," CARD_TAIL,
                 "got \"1.2345678\"; nearest: \"1.234567\" or \"1.234568\"");
    /* below the smallest: the smallest only */
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B
                           "},\"service_tiers\":{\"batch\":\"0.0000001\"}," CARD_TAIL,
                 "got \"0.0000001\"; nearest: \"0.000001\"");
    /* past the largest: nothing near to offer */
    refused_contract("{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{\"batch\":"
                     "\"1000000.0000001\"}}",
                     "service_tiers.batch: must be a decimal string greater than 0 and at most "
                     "1000000 with at most 6 fraction digits, got \"1000000.0000001\"");
}
END_TEST

/* service_tiers {} is refused (in a contract it would silently drop the card's multipliers);
 * a contract's standard is named as the tenant's prices. */
START_TEST(test_empty_service_tiers_refused)
{
    refused_contract("{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{}}",
                     "service_tiers: must list batch, priority or both (a contract's "
                     "service_tiers replaces the card's as a whole, so {} would drop the card's "
                     "multipliers; leave service_tiers out to keep them, or write {\"batch\": "
                     "\"1\", \"priority\": \"1\"} to bill every tier at the standard prices)");
    refused_card(CARD_HEAD "\"prices\":{" LONG_70B "},\"service_tiers\":{}," CARD_TAIL,
                 "service_tiers: must list batch, priority or both (leave service_tiers out for "
                 "a card without multipliers)");
    refused_contract("{\"tenant\":\"acme\",\"currency\":\"USD\",\"service_tiers\":{\"standard\":"
                     "\"1\"}}",
                     "service_tiers.standard: the standard tier is priced by the tenant's prices "
                     "(the contract's and the card's) themselves (multiplier 1) and cannot be "
                     "listed (allowed: batch, priority)");
    /* what {} meant, written out: every tier at the standard prices, not flagged */
    gm_rating_book *b = book_with(card, "{\"tenant\":\"acme\",\"currency\":\"USD\","
                                        "\"service_tiers\":{\"batch\":\"1\",\"priority\":\"1\"}}");
    const char *v;
    unsigned f;
    ck_assert_str_eq(priced(b, req("acme", "fra1", 5000, 0, 1050, GM_RATING_SVC_BATCH), &v, &f),
                     "0.005100000000000000");
    ck_assert_str_eq(v, "batch");
    ck_assert(!(f & GM_PRICE_F_UNLISTED_VARIANT));
    gm_rating_book_free(b);
}
END_TEST

static int book_check(const char *c, const char *contract, char *err, size_t err_len)
{
    gm_rating_book *b = gm_rating_book_new();
    ck_assert_msg(gm_rating_book_add_card(b, S(c), err, err_len) == 0, "%s", err);
    ck_assert_msg(gm_rating_book_add_contract(b, S(contract), err, err_len) == 0, "%s", err);
    int rc = gm_rating_book_check_contracts(b, err, err_len);
    char err2[1024]; /* the import's check (the stored documents) gives the same verdict */
    int rc2 = gm_rating_book_check_service_tiers(b, err2, sizeof err2);
    ck_assert_int_eq(rc != 0, rc2 != 0);
    gm_rating_book_free(b);
    return rc;
}

/* A contract's prices or rows of a model that no version of the card prices (it rejects
 * unknown models), not priced by the contract in all four dimensions: every request of it
 * would be rejected, so the book check refuses the contract. */
START_TEST(test_contract_prices_of_an_unpriced_model_refused)
{
    char err[1024];
    ck_assert_int_eq(book_check(card,
                                "{\"tenant\":\"cc\",\"currency\":\"USD\",\"prices\":{\"ghost\":{"
                                "\"context_tiers\":[{\"above_tokens\":5,\"prices\":{\"input\":{"
                                "\"per_1m_tokens\":\"1\"}}}]}}}",
                                err, sizeof err),
                     GM_EINVAL);
    ck_assert_msg(strstr(err, "contract cc: prices.ghost: model ghost is on no version of card "
                              "list-usd, which rejects unknown models, and the contract does not "
                              "price all four dimensions (input, cached, output, gpu)"),
                  "%s", err);
    ck_assert_int_eq(book_check(card,
                                "{\"tenant\":\"cx4\",\"currency\":\"USD\",\"prices\":{\"ghost\":{"
                                "\"input\":{\"per_1m_tokens\":\"1\"}}}}",
                                err, sizeof err),
                     GM_EINVAL);
    ck_assert_msg(strstr(err, "contract cx4: prices.ghost: model ghost is on no version"), "%s",
                  err);
    ck_assert_int_eq(book_check(card,
                                "{\"tenant\":\"d\",\"currency\":\"USD\",\"prices\":{\"default\":{"
                                "\"input\":{\"per_1m_tokens\":\"1\"}}}}",
                                err, sizeof err),
                     GM_EINVAL);
    ck_assert_msg(strstr(err, "contract d: prices.default: no version of card list-usd has a "
                              "default entry"),
                  "%s", err);
    /* priced whole by the contract: known for the tenant, with its own rows */
    ck_assert_int_eq(book_check(card,
                                "{\"tenant\":\"w\",\"currency\":\"USD\",\"prices\":{\"ghost\":{"
                                "\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{\"per_1m_tokens\":"
                                "\"0\"},\"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{"
                                "\"per_gpu_hour\":\"0\"},\"context_tiers\":[{\"above_tokens\":5,"
                                "\"prices\":{\"input\":{\"per_1m_tokens\":\"2\"}}}]}}}",
                                err, sizeof err),
                     0);
    /* a card with a default entry prices any model: a partial override applies to it */
    const char *with_default =
        "{\"card_id\":\"d\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\",\"currency\":"
        "\"USD\",\"prices\":{\"default\":{\"input\":{\"per_1m_tokens\":\"1\"},\"cached\":{"
        "\"per_1m_tokens\":\"0\"},\"output\":{\"per_1m_tokens\":\"2\"},\"gpu\":{\"per_gpu_hour\":"
        "\"0\"}}}}";
    ck_assert_int_eq(book_check(with_default,
                                "{\"tenant\":\"cx4\",\"currency\":\"USD\",\"prices\":{\"ghost\":{"
                                "\"input\":{\"per_1m_tokens\":\"0.5\"}}}}",
                                err, sizeof err),
                     0);
}
END_TEST

/* What `ratecard show` lists of the variants: every variant but the base one, priced by the
 * path of events (Examples 11 to 13). */
START_TEST(test_card_variant_prices_listed)
{
    gm_rating_card *c = NULL;
    char err[512];
    ck_assert_msg(gm_rating_card_parse(S(card), &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gm_rating_card_service_multiplier(c, GM_RATING_SVC_BATCH), 500000);
    ck_assert_int_eq(gm_rating_card_service_multiplier(c, GM_RATING_SVC_PRIORITY), 1500000);
    gm_rating_variant_row *r = NULL;
    size_t n = 0;
    ck_assert_msg(gm_rating_card_variant_prices(c, &r, &n, err, sizeof err) == 0, "%s", err);
    /* 1 model x 2 site tiers x 5 variants (ctx>128000, batch, batch/ctx>128000, priority,
     * priority/ctx>128000) x 7 dimensions */
    ck_assert_int_eq(n, 70);
    struct {
        const char *tier, *variant;
        gm_dim dim;
        int64_t price_p;
    } want[] = {
        {"metro", "ctx>128000", GM_DIM_INPUT, 1200000},
        {"metro", "ctx>128000", GM_DIM_CACHED, 300000},
        {"metro", "ctx>128000", GM_DIM_CACHE_WRITE, 1200000}, /* follows the row's input */
        {"metro", "batch", GM_DIM_OUTPUT, 1000000},
        {"metro", "batch/ctx>128000", GM_DIM_INPUT, 600000},
        {"remote", "priority/ctx>128000", GM_DIM_INPUT, 2250000},
        {"remote", "priority/ctx>128000", GM_DIM_CACHED, 562500},
        {"remote", "priority/ctx>128000", GM_DIM_OUTPUT, 5625000},
    };
    for (size_t w = 0; w < GM_ARRAY_LEN(want); w++) {
        size_t i = 0;
        while (i < n && (strcmp(r[i].site_tier, want[w].tier) ||
                         strcmp(r[i].variant, want[w].variant) || r[i].dim != want[w].dim))
            i++;
        ck_assert_msg(i < n, "%s %s %s missing", want[w].tier, want[w].variant,
                      gm_dim_name(want[w].dim));
        ck_assert_str_eq(r[i].model, "long-70b");
        ck_assert_int_eq(r[i].price_p, want[w].price_p);
    }
    for (size_t i = 0; i < n; i++)
        ck_assert(r[i].variant[0]); /* never the base variant */
    free(r);
    gm_rating_card_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rating_variants");
    TCase *tc = tcase_create("unit");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_service_tier_multipliers_by_hand);
    tcase_add_test(tc, test_context_rows_at_the_boundary_by_hand);
    tcase_add_test(tc, test_highest_row_exceeded_wins);
    tcase_add_test(tc, test_contract_rules_by_hand);
    tcase_add_test(tc, test_invoice_lines_per_variant);
    tcase_add_test(tc, test_events_and_charge_sums_agree);
    tcase_add_test(tc, test_refusals_name_field_and_rule);
    tcase_add_test(tc, test_repeated_row_fields_refused);
    tcase_add_test(tc, test_rows_are_cumulative);
    tcase_add_test(tc, test_contract_price_flag);
    tcase_add_test(tc, test_doc_example_card_validates);
    tcase_add_test(tc, test_price_past_the_largest_refused_as_such);
    tcase_add_test(tc, test_contract_card_refusal_names_the_row);
    tcase_add_test(tc, test_allowance_line_order);
    tcase_add_test(tc, test_multiplier_fraction_digits);
    tcase_add_test(tc, test_empty_service_tiers_refused);
    tcase_add_test(tc, test_contract_prices_of_an_unpriced_model_refused);
    tcase_add_test(tc, test_card_variant_prices_listed);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
