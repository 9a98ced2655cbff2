/* Unit tests of the token kinds of usage revision 1.1 and the per-request fee (docs/rating.md,
 * "Token kinds and the request fee"): the worked examples of the doc computed by hand,
 * the defaults that keep old cards billing what they billed, contract and site-tier rules on
 * the new dimensions, invoice lines, validation messages, and seeded properties
 * (GM_TEST_SEED=n replays a run). */
#include "gm_rating.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

#define S(x) x, strlen(x)

#define NOV1 INT64_C(1793491200000000) /* 2026-11-01T00:00:00Z */

/* The card of the worked example in docs/rating.md. */
static const char *card_kinds =
    "{\"card_id\":\"kinds\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
    "\"currency\":\"USD\",\"default_card\":true,\"unknown_models\":\"reject\","
    "\"prices\":{"
    " \"think-70b\":{\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{\"per_1m_tokens\":\"0.30\"}"
    ","
    "   \"cache_write\":{\"per_1m_tokens\":\"0.75\"},\"output\":{\"per_1m_tokens\":\"2.00\"},"
    "   \"reasoning\":{\"per_1m_tokens\":\"2.50\"},\"gpu\":{\"per_gpu_hour\":\"0\"},"
    "   \"request\":{\"per_request\":\"0.0001\"}},"
    " \"plain-8b\":{\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{\"per_1m_tokens\":\"0.30\"},"
    "   \"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":{\"per_gpu_hour\":\"0\"}}},"
    "\"site_tiers\":{\"metro\":{\"sites\":[\"fra1\"]},"
    " \"remote\":{\"multiplier\":\"1.25\",\"sites\":[\"tro1\"]}},"
    "\"default_site_tier\":\"metro\"}";

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

/* One event as the rater builds it: input, cached, cache_write, output (reasoning included),
 * reasoning. */
static gm_usage event(const char *tenant, const char *model, const char *site, int64_t input,
                      int64_t cached, int64_t cache_write, int64_t output, int64_t reasoning)
{
    gm_usage u = {tenant, model, site, NOV1 + 3600000000, {0}, GM_RATING_SVC_STANDARD};
    gm_rating_usage_tokens(u.qty, input, cached, cache_write, output, reasoning, 0);
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

static gm_i128 total_of(const gm_event_price *p)
{
    gm_i128 t;
    ck_assert_int_eq(gm_event_price_total(p, &t), 0);
    return t;
}

/* docs/rating.md, example 1: every kind priced by its own row, and the request fee. */
START_TEST(test_worked_example_every_token_kind_and_the_request_fee)
{
    gm_rating_book *b = book_with(card_kinds, NULL);
    gm_event_price p;
    char err[256];
    gm_usage u = event("acme", "think-70b", "fra1", 768, 256, 1024, 300, 200);
    ck_assert_int_eq(u.qty[GM_DIM_OUTPUT], 100);
    ck_assert_int_eq(u.qty[GM_DIM_REASONING], 200);
    ck_assert_int_eq(u.qty[GM_DIM_REQUEST], 1);
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_INPUT], 18), "0.000460800000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_CACHED], 18), "0.000076800000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_CACHE_WRITE], 18), "0.000768000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_OUTPUT], 18), "0.000200000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_REASONING], 18), "0.000500000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_REQUEST], 18), "0.000100000000000000");
    ck_assert_str_eq(dec(total_of(&p), 18), "0.002105600000000000");
    ck_assert_str_eq(dec(p.unit_price_p[GM_DIM_REQUEST], 12), "0.000100000000");
    /* Remote tier: every dimension x 1.25, the fee too: 0.000125 per request. */
    u.site = "tro1";
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_REQUEST], 18), "0.000125000000000000");
    ck_assert_str_eq(dec(total_of(&p), 18), "0.002632000000000000");
    gm_rating_book_free(b);
}
END_TEST

/* docs/rating.md, example 2: a card that states neither cache_write nor reasoning nor a fee
 * bills cache writes at the input price and reasoning at the output price, so an event of
 * revision 1.1 costs what the same prompt and output cost under 1.0. */
START_TEST(test_card_without_new_prices_bills_what_it_billed_before)
{
    gm_rating_book *b = book_with(card_kinds, NULL);
    gm_event_price p, old;
    char err[256];
    gm_usage u = event("acme", "plain-8b", "fra1", 768, 256, 1024, 300, 200);
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_CACHE_WRITE], 18), "0.000614400000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_OUTPUT], 18), "0.000200000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_REASONING], 18), "0.000400000000000000");
    ck_assert_str_eq(dec(p.amount_e18[GM_DIM_REQUEST], 18), "0.000000000000000000");
    ck_assert_str_eq(dec(total_of(&p), 18), "0.001752000000000000");
    /* the 1.0 event of the same request: the prompt all in input_tokens, no reasoning split */
    gm_usage v = event("acme", "plain-8b", "fra1", 768 + 1024, 256, 0, 300, 0);
    ck_assert_msg(gm_rating_price_event(b, &v, &old, err, sizeof err) == 0, "%s", err);
    ck_assert(total_of(&old) == total_of(&p));
    gm_rating_book_free(b);
}
END_TEST

/* A contract that re-prices output re-prices reasoning with it, unless it states reasoning;
 * the same for input and cache_write. docs/rating.md, example 3. */
START_TEST(test_contract_output_price_carries_to_reasoning_unless_stated)
{
    const char *contract = "{\"tenant\":\"acme\",\"card_id\":\"kinds\",\"currency\":\"USD\","
                           "\"prices\":{\"plain-8b\":{\"output\":{\"per_1m_tokens\":\"1.50\"}},"
                           " \"think-70b\":{\"output\":{\"per_1m_tokens\":\"1.50\"},"
                           "  \"reasoning\":{\"per_1m_tokens\":\"1.80\"}}}}";
    gm_rating_book *b = book_with(card_kinds, contract);
    gm_event_price p;
    char err[256];
    gm_usage u = event("acme", "plain-8b", "tro1", 0, 0, 0, 300, 200);
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(dec(p.unit_price_p[GM_DIM_OUTPUT], 12), "0.000001500000");
    ck_assert_str_eq(dec(p.unit_price_p[GM_DIM_REASONING], 12), "0.000001500000");
    ck_assert_str_eq(dec(total_of(&p), 18), "0.000450000000000000"); /* 300 x 1.50/1M */
    u = event("acme", "think-70b", "fra1", 0, 0, 0, 300, 200);
    ck_assert_msg(gm_rating_price_event(b, &u, &p, err, sizeof err) == 0, "%s", err);
    /* 100 x 1.50/1M + 200 x 1.80/1M + the card's fee 0.0001 */
    ck_assert_str_eq(dec(total_of(&p), 18), "0.000610000000000000");
    gm_rating_book_free(b);
}
END_TEST

/* Invoice lines: a request line counts the month's requests where a fee applies, and only
 * there (a card without a fee adds no line). docs/rating.md, example 4. */
START_TEST(test_request_fee_line_counts_requests_only_where_a_fee_applies)
{
    gm_rating_book *b = book_with(card_kinds, NULL);
    char err[256];
    gm_rating_period *per = gm_rating_period_new(b, "acme", NOV1);
    for (int i = 0; i < 1000; i++) {
        gm_usage u = event("acme", i % 4 ? "think-70b" : "plain-8b", "fra1", 10, 0, 0, 3, 1);
        ck_assert_msg(gm_rating_period_add_event(per, &u, NULL, err, sizeof err) == 0, "%s", err);
    }
    gm_invoice *inv;
    ck_assert_msg(gm_rating_period_invoice(per, NULL, &inv, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(gm_invoice_check(inv, err, sizeof err) == 0, "%s", err);
    int n_req = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        const gm_invoice_line *l = &inv->lines[i];
        ck_assert(!(l->dim == GM_DIM_REQUEST && strcmp(l->model, "think-70b")));
        if (l->dim == GM_DIM_REQUEST) {
            n_req++;
            ck_assert_str_eq(dec(l->qty, 0), "750");
            ck_assert_str_eq(dec(l->amount_minor, 2), "0.08"); /* 0.075 -> half to even */
            ck_assert_str_eq(dec(l->amount_e18, 18), "0.075000000000000000");
            ck_assert_ptr_nonnull(strstr(l->description, "requests, think-70b"));
        }
        if (l->dim == GM_DIM_REASONING)
            ck_assert_str_eq(dec(l->qty, 0), strcmp(l->model, "think-70b") ? "250" : "750");
        if (l->dim == GM_DIM_OUTPUT)
            ck_assert_str_eq(dec(l->qty, 0), strcmp(l->model, "think-70b") ? "500" : "1500");
    }
    ck_assert_int_eq(n_req, 1);
    gm_invoice_free(inv);
    /* the same requests as hourly sums (the billing path) give the same invoice */
    gm_rating_period *sums = gm_rating_period_new(b, "acme", NOV1);
    gm_usage_sum s1 = {
        "think-70b", "fra1", NOV1 + 3600000000, {7500, 0, 1500, 0, 0, 750, 750}, NULL};
    gm_usage_sum s2 = {"plain-8b", "fra1", NOV1 + 3600000000, {2500, 0, 500, 0, 0, 250, 250}, NULL};
    ck_assert_int_eq(gm_rating_period_add_sum(sums, &s1, err, sizeof err), 0);
    ck_assert_int_eq(gm_rating_period_add_sum(sums, &s2, err, sizeof err), 0);
    gm_invoice *a, *c;
    ck_assert_int_eq(gm_rating_period_invoice(per, NULL, &a, err, sizeof err), 0);
    ck_assert_int_eq(gm_rating_period_invoice(sums, NULL, &c, err, sizeof err), 0);
    ck_assert_uint_eq(a->n_lines, c->n_lines);
    ck_assert(a->total_minor == c->total_minor && a->exact_usage_e18 == c->exact_usage_e18);
    gm_invoice_free(a);
    gm_invoice_free(c);
    gm_rating_period_free(sums);
    gm_rating_period_free(per);
    gm_rating_book_free(b);
}
END_TEST

static void refused(const char *card, const char *old, const char *new_, const char *want)
{
    const char *at = strstr(card, old);
    ck_assert_msg(at != NULL, "test bug: %s", old);
    char doc[4096];
    snprintf(doc, sizeof doc, "%.*s%s%s", (int)(at - card), card, new_, at + strlen(old));
    gm_rating_card *c = NULL;
    char err[512];
    ck_assert_int_ne(gm_rating_card_parse(S(doc), &c, err, sizeof err), 0);
    ck_assert_msg(strstr(err, want) == err, "got: %s\nwant: %s", err, want);
}

START_TEST(test_new_dimensions_are_validated_naming_field_and_rule)
{
    const char *fee = "\"request\":{\"per_request\":\"0.0001\"}";
    refused(card_kinds, fee, "\"request\":{\"per_1m_tokens\":\"1\"}",
            "prices.think-70b.request.per_1m_tokens: unknown price unit for requests (allowed: "
            "per_request)");
    refused(card_kinds, fee, "\"request\":{}",
            "prices.think-70b.request: must have exactly \"per_request\"");
    refused(card_kinds, fee, "\"request\":{\"per_request\":\"0.0000000000001\"}",
            "prices.think-70b.request.per_request: ");
    refused(card_kinds, fee, "\"request\":{\"per_request\":0.0001}",
            "prices.think-70b.request.per_request: must be a decimal string");
    refused(card_kinds, "\"reasoning\":{\"per_1m_tokens\":\"2.50\"}",
            "\"reasoning\":{\"per_gpu_hour\":\"2.50\"}",
            "prices.think-70b.reasoning.per_gpu_hour: unknown price unit for tokens (allowed: "
            "per_token, per_1m_tokens)");
    refused(card_kinds, "\"cache_write\"", "\"cache_writes\"",
            "prices.think-70b.cache_writes: unknown field (allowed: input, cached, output, gpu, "
            "cache_write, reasoning, request, context_tiers)");
    /* the four original dimensions stay required; the new ones are not */
    refused(card_kinds, "\"cached\":{\"per_1m_tokens\":\"0.30\"},   \"output\"", "\"output\"",
            "prices.plain-8b.cached: missing: every model states all four dimensions");
}
END_TEST

/* ---- Properties ------------------------------------------------------------------------ */

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t test_seed(void)
{
    const char *e = getenv("GM_TEST_SEED");
    uint64_t seed = e ? strtoull(e, NULL, 10) : 20261202;
    fprintf(stderr, "test_rating_kinds: seed %llu (GM_TEST_SEED to replay)\n",
            (unsigned long long)seed);
    return seed;
}

/* For any split of an output into reasoning and the rest, and any split of a prompt into
 * input and cache writes: on a card that states no reasoning or cache_write price, the total
 * equals the 1.0 event's (no part priced twice, none dropped); on a card that states them,
 * each part costs its own price times its quantity, exactly (hand formula). 10^5 cases. */
START_TEST(test_parts_are_priced_once_for_any_split)
{
    uint64_t s = test_seed();
    gm_rating_book *b = book_with(card_kinds, NULL);
    char err[256];
    for (int i = 0; i < 100000; i++) {
        int64_t big = (int64_t)1 << (rnd(&s) % 40);
        int64_t out = (int64_t)(rnd(&s) % (uint64_t)big), prompt = (int64_t)(rnd(&s) % 1000000);
        int64_t reasoning = (int64_t)(rnd(&s) % (uint64_t)(out + 1));
        int64_t cw = (int64_t)(rnd(&s) % (uint64_t)(prompt + 1)),
                cached = (int64_t)(rnd(&s) % 4096);
        gm_event_price p, q;
        gm_usage u = event("acme", "plain-8b", i % 2 ? "fra1" : "tro1", prompt - cw, cached, cw,
                           out, reasoning);
        gm_usage v = event("acme", "plain-8b", u.site, prompt, cached, 0, out, 0);
        if (gm_rating_price_event(b, &u, &p, err, sizeof err) ||
            gm_rating_price_event(b, &v, &q, err, sizeof err))
            ck_abort_msg("seed case %d: %s", i, err);
        if (total_of(&p) != total_of(&q))
            ck_abort_msg("case %d: out %lld reasoning %lld prompt %lld cw %lld: %s != %s", i,
                         (long long)out, (long long)reasoning, (long long)prompt, (long long)cw,
                         dec(total_of(&p), 18), dec(total_of(&q), 18));
        u.model = "think-70b";
        if (gm_rating_price_event(b, &u, &p, err, sizeof err))
            ck_abort_msg("%s", err);
        /* per 1M: 0.60 input, 0.30 cached, 0.75 cache write, 2.00 output, 2.50 reasoning; a
         * fee of 0.0001 per request; x 1.25 at tro1. In 10^-18: tokens x price_per_1m x 10^12. */
        gm_i128 want =
            ((gm_i128)(prompt - cw) * 600000 + (gm_i128)cached * 300000 + (gm_i128)cw * 750000 +
             (gm_i128)(out - reasoning) * 2000000 + (gm_i128)reasoning * 2500000) *
                1000000 +
            (gm_i128)100000000 * 1000000;
        if (u.site[0] == 't')
            want = want / 4 * 5; /* every price above is a multiple of 4 x 10^-18 */
        if (total_of(&p) != want)
            ck_abort_msg("case %d: %s, expected %s", i, dec(total_of(&p), 18), dec(want, 18));
    }
    gm_rating_book_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rating_kinds");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, test_worked_example_every_token_kind_and_the_request_fee);
    tcase_add_test(tc, test_card_without_new_prices_bills_what_it_billed_before);
    tcase_add_test(tc, test_contract_output_price_carries_to_reasoning_unless_stated);
    tcase_add_test(tc, test_request_fee_line_counts_requests_only_where_a_fee_applies);
    tcase_add_test(tc, test_new_dimensions_are_validated_naming_field_and_rule);
    suite_add_tcase(s, tc);
    TCase *prop = tcase_create("properties");
    tcase_set_timeout(prop, 120);
    tcase_add_test(prop, test_parts_are_priced_once_for_any_split);
    suite_add_tcase(s, prop);
    return gm_test_run(s);
}
