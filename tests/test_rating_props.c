/* Property tests of rating/ over >= 10^6 random cases each: rounding moves a line by at most
 * half a minor unit (ties to even), allocations add up exactly, a graduated tier never
 * charges more for less, pricing is idempotent, and an invoice depends neither on event order
 * nor on batching. The seed is fixed (GM_TEST_SEED overrides it) and printed on failure. */
#include "rating_int.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

#define S(x) x, strlen(x)
#define NOV1 INT64_C(1793491200000000)

static uint64_t seed;

/* Check's ck_assert records its location on every call; in loops of 10^6 that is most of
 * the time, so the hot loops test with CHECK and abort only on failure. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

static uint64_t rnd(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static void init_seed(void)
{
    const char *e = getenv("GM_TEST_SEED");
    seed = e ? strtoull(e, NULL, 10) : 20261127;
}

START_TEST(test_rounding_moves_each_line_by_at_most_half_a_minor_unit)
{
    int64_t t0 = gm_mono_us();
    uint64_t s = seed ^ 1;
    const int mus[] = {0, 2, 3, 4};
    for (long i = 0; i < 1000000; i++) {
        int mu = mus[below(&s, 4)];
        gm_i128 d = gm_pow10_i128(18 - mu);
        gm_i128 a = (gm_i128)(rnd(&s) >> below(&s, 64)) << below(&s, 36); /* up to 2^100 */
        if (i % 3 == 0)                                                   /* exact ties */
            a = ((gm_i128)(rnd(&s) >> 20) * d) + d / 2;
        if (rnd(&s) & 1)
            a = -a;
        gm_i128 r = gm_rating_round_e18(a, mu);
        gm_i128 diff = r * d - a, half = d / 2;
        if (diff < 0)
            diff = -diff;
        CHECK(diff <= half, "seed %llu case %ld: rounding moved by more than half a unit",
              (unsigned long long)seed, i);
        if (diff == half)
            CHECK((r & 1) == 0, "seed %llu case %ld: a tie went to an odd unit",
                  (unsigned long long)seed, i);
    }
    fprintf(stderr, "rounding: 10^6 cases in %lld ms\n", (long long)(gm_mono_us() - t0) / 1000);
}
END_TEST

START_TEST(test_allocations_add_up_exactly)
{
    int64_t t0 = gm_mono_us();
    uint64_t s = seed ^ 2;
    gm_i128 w[12], sh[12];
    for (long i = 0; i < 1000000; i++) {
        size_t n = 1 + below(&s, 12);
        gm_i128 sum = 0;
        for (size_t k = 0; k < n; k++) {
            w[k] = below(&s, 4) == 0 ? 0 : (gm_i128)below(&s, (uint64_t)1 << below(&s, 48));
            sum += w[k];
        }
        gm_i128 total = sum ? (gm_i128)below(&s, (uint64_t)sum + 1) : 0;
        CHECK(gm_rating_allocate(total, w, n, sh) == 0, "allocate failed");
        gm_i128 got = 0;
        for (size_t k = 0; k < n; k++) {
            gm_i128 fl = sum ? total * w[k] / sum : 0;
            CHECK(sh[k] == fl || sh[k] == fl + 1,
                  "seed %llu case %ld: share %zu is not floor or floor+1", (unsigned long long)seed,
                  i, k);
            CHECK(sh[k] <= w[k], "seed %llu case %ld: share above its weight",
                  (unsigned long long)seed, i);
            got += sh[k];
        }
        CHECK(got == total, "seed %llu case %ld: shares do not add up", (unsigned long long)seed,
              i);
    }
    fprintf(stderr, "allocation: 10^6 cases in %lld ms\n", (long long)(gm_mono_us() - t0) / 1000);
}
END_TEST

START_TEST(test_graduated_tier_never_charges_more_for_less)
{
    int64_t t0 = gm_mono_us();
    uint64_t s = seed ^ 3;
    gm_i128 up[6];
    int64_t price[6];
    rating__tier_rule r = {0};
    r.up_to = up;
    r.price_p = price;
    for (long i = 0; i < 1000000; i++) {
        r.dim = (gm_dim)below(&s, GM_DIM_COUNT);
        r.mode = GM_TIER_GRADUATED;
        r.n_bands = 1 + below(&s, 6);
        gm_i128 b = 0;
        for (size_t k = 0; k < r.n_bands; k++) {
            b += 1 + (gm_i128)below(&s, 1000000);
            up[k] = k + 1 == r.n_bands ? -1 : b;
            price[k] = (int64_t)below(&s, 10000000); /* any order: also rising prices */
        }
        gm_i128 q1 = (gm_i128)below(&s, (uint64_t)b * 2 + 2);
        gm_i128 q2 = q1 + (gm_i128)(below(&s, 3) == 0 ? 1 : below(&s, 2000000));
        gm_i128 a1, a2;
        CHECK(rating__tier_amount(&r, q1, &a1) == 0, "tier amount failed");
        CHECK(rating__tier_amount(&r, q2, &a2) == 0, "tier amount failed");
        CHECK(a1 <= a2, "seed %llu case %ld: more quantity charged less", (unsigned long long)seed,
              i);
        /* and the bands add up to the quantity: the amount equals band-by-band pricing */
        gm_i128 lower = 0, want = 0;
        for (size_t k = 0; k < r.n_bands; k++) {
            gm_i128 top = up[k] < 0 || q2 < up[k] ? q2 : up[k];
            gm_i128 in = top > lower ? top - lower : 0, a;
            CHECK(gm_rating_amount_e18(r.dim, in, price[k], &a) == 0, "amount failed");
            want += a;
            lower = up[k];
        }
        CHECK(want == a2, "seed %llu case %ld: graduated amount is not band by band",
              (unsigned long long)seed, i);
    }
    fprintf(stderr, "graduated: 10^6 cases in %lld ms\n", (long long)(gm_mono_us() - t0) / 1000);
}
END_TEST

/* ---- Random usage against one book ----------------------------------------------------- */

#define N_MODELS 8
#define N_SITES  10

static char models[N_MODELS + 2][24], sites[N_SITES + 2][16];

static gm_rating_book *random_book(uint64_t *s)
{
    char card[16384], contract[4096];
    gm_rating_book *b = gm_rating_book_new();
    char err[512];
    for (int i = 0; i < N_MODELS; i++)
        snprintf(models[i], sizeof models[i], "model-%d", i);
    snprintf(models[N_MODELS], sizeof models[0], "unlisted-a");
    snprintf(models[N_MODELS + 1], sizeof models[0], "unlisted-b");
    for (int i = 0; i < N_SITES; i++)
        snprintf(sites[i], sizeof sites[i], "site%d", i);
    snprintf(sites[N_SITES], sizeof sites[0], "nosite-a");
    snprintf(sites[N_SITES + 1], sizeof sites[0], "nosite-b");
    for (int v = 1; v <= 2; v++) {
        size_t n = (size_t)snprintf(card, sizeof card,
                                    "{\"card_id\":\"c\",\"version\":%d,\"valid_from\":\"%s\","
                                    "\"currency\":\"EUR\",\"prices\":{",
                                    v, v == 1 ? "2026-01-01T00:00:00Z" : "2026-11-13T07:00:00Z");
        for (int m = 0; m <= N_MODELS; m++) {
            n += (size_t)snprintf(card + n, sizeof card - n,
                                  "%s\"%s\":{\"input\":{\"per_token\":\"0.%012llu\"},"
                                  "\"cached\":{\"per_1m_tokens\":\"0.%06llu\"},"
                                  "\"output\":{\"per_token\":\"0.%012llu\"},"
                                  "\"gpu\":{\"per_gpu_second\":\"0.%012llu\"}}",
                                  m ? "," : "", m == N_MODELS ? "default" : models[m],
                                  /* even: exact under the 1.5 and 0.5 multipliers */
                                  (unsigned long long)below(s, 50000000) * 2,
                                  (unsigned long long)below(s, 500000) * 2,
                                  (unsigned long long)below(s, 500000000) * 2,
                                  (unsigned long long)below(s, 5000000000ull) * 2);
        }
        n += (size_t)snprintf(card + n, sizeof card - n,
                              "},\"site_tiers\":{\"a\":{\"sites\":[\"site0\",\"site1\",\"site2\"]},"
                              "\"b\":{\"multiplier\":\"1.5\",\"sites\":[\"site3\",\"site4\"]},"
                              "\"c\":{\"multiplier\":\"0.5\",\"sites\":[\"site5\"]}},"
                              "\"default_site_tier\":\"a\"}");
        CHECK(gm_rating_book_add_card(b, card, n, err, sizeof err) == 0, "%s", err);
    }
    snprintf(
        contract, sizeof contract,
        "{\"tenant\":\"t\",\"currency\":\"EUR\",\"prices\":{\"model-1\":{\"output\":"
        "{\"per_token\":\"0.000000123456\"}},\"unlisted-b\":{\"input\":{\"per_token\":\"0.1\"},"
        "\"cached\":{\"per_token\":\"0.01\"},\"output\":{\"per_token\":\"0.2\"},\"gpu\":"
        "{\"per_gpu_second\":\"0.003\"}}},\"tiers\":[{\"dimension\":\"output\",\"models\":"
        "[\"model-2\",\"model-3\"],\"mode\":\"graduated\",\"bands\":[{\"up_to\":\"50000\","
        "\"price\":{\"per_1m_tokens\":\"2.5\"}},{\"up_to\":\"200000\",\"price\":"
        "{\"per_1m_tokens\":\"1.75\"}},{\"price\":{\"per_1m_tokens\":\"0.9\"}}]},"
        "{\"dimension\":\"gpu\",\"mode\":\"volume\",\"bands\":[{\"up_to\":\"100000000\","
        "\"price\":{\"per_gpu_second\":\"0.002\"}},{\"price\":{\"per_gpu_second\":"
        "\"0.0015\"}}]}],\"discount_percent\":\"3.75\",\"minimum_commitment\":\"40.00\","
        "\"prepaid_credits\":\"12.34\"}");
    CHECK(gm_rating_book_add_contract(b, S(contract), err, sizeof err) == 0, "%s", err);
    return b;
}

static void invoices_equal(const gm_invoice *a, const gm_invoice *b, long c, const char *what)
{
#define EQ(x) CHECK((x), "seed %llu invoice %ld: %s: %s", (unsigned long long)seed, c, what, #x)
    EQ(a->n_lines == b->n_lines);
    EQ(a->total_minor == b->total_minor);
    EQ(a->usage_minor == b->usage_minor);
    EQ(a->discount_minor == b->discount_minor);
    EQ(a->commitment_minor == b->commitment_minor);
    EQ(a->credit_minor == b->credit_minor);
    EQ(a->exact_usage_e18 == b->exact_usage_e18);
    EQ(a->flags == b->flags);
    for (size_t i = 0; i < a->n_lines; i++) {
        const gm_invoice_line *x = &a->lines[i], *y = &b->lines[i];
        EQ(x->kind == y->kind && x->dim == y->dim && x->band == y->band);
        EQ(!strcmp(x->model, y->model) && !strcmp(x->site_tier, y->site_tier));
        EQ(x->card_version == y->card_version && x->qty == y->qty);
        EQ(x->unit_price_p == y->unit_price_p && x->amount_e18 == y->amount_e18);
        EQ(x->amount_minor == y->amount_minor && x->discount_minor == y->discount_minor);
        EQ(x->credit_minor == y->credit_minor && x->flags == y->flags);
        EQ(!strcmp(x->description, y->description));
    }
#undef EQ
}

static gm_invoice *build(gm_rating_period *p, long c)
{
    gm_invoice *inv;
    char err[512];
    CHECK(gm_rating_period_invoice(p, NULL, &inv, err, sizeof err) == 0,
          "seed %llu invoice %ld: %s", (unsigned long long)seed, c, err);
    CHECK(gm_invoice_check(inv, err, sizeof err) == 0, "seed %llu invoice %ld: %s",
          (unsigned long long)seed, c, err);
    return inv;
}

/* Orders events by (model, site, hour) so that a batch is a run; strings are interned. */
static int cmp_batch(const void *a, const void *b)
{
    const gm_usage *x = a, *y = b;
    if (x->model != y->model)
        return x->model < y->model ? -1 : 1;
    if (x->site != y->site)
        return x->site < y->site ? -1 : 1;
    int64_t hx = x->time_us / GM_US_PER_HOUR, hy = y->time_us / GM_US_PER_HOUR;
    return hx < hy ? -1 : hx > hy;
}

START_TEST(test_invoice_depends_neither_on_event_order_nor_on_batching)
{
    int64_t t0 = gm_mono_us();
    uint64_t s = seed ^ 4;
    gm_rating_book *b = random_book(&s);
    enum { MAX_EV = 400 };
    gm_usage ev[MAX_EV], sh[MAX_EV];
    gm_event_price p1, p2;
    char err[512];
    long events = 0, invoices = 0;
    const char *tenants[] = {"t", "stranger"};
    for (long c = 0; events < 1000000; c++, invoices++) {
        const char *tenant = tenants[below(&s, 4) == 0];
        size_t n = 1 + below(&s, MAX_EV);
        /* Small and huge quantities: typical requests, and some near 2^53. */
        for (size_t i = 0; i < n; i++) {
            gm_usage *u = &ev[i];
            u->tenant = tenant;
            u->model = models[below(&s, N_MODELS + 2)];
            u->site = sites[below(&s, N_SITES + 2)];
            u->time_us = NOV1 + (int64_t)below(&s, 30 * (uint64_t)GM_US_PER_DAY);
            u->service_tier = GM_RATING_SVC_STANDARD; /* (was left uninitialized: a -O2 build
                                                       * read stack garbage, "service tier
                                                       * 2105352758 is not one of ...") */
            for (int d = 0; d < GM_DIM_COUNT; d++)
                u->qty[d] = below(&s, 50) == 0 ? (int64_t)below(&s, GM_RATING_QTY_MAX + 1ull)
                                               : (int64_t)below(&s, 1u << below(&s, 20));
        }
        events += (long)n;
        /* A: in order; also rating each event twice gives the same price (idempotence). */
        gm_rating_period *pa = gm_rating_period_new(b, tenant, NOV1);
        for (size_t i = 0; i < n; i++) {
            CHECK(gm_rating_period_add_event(pa, &ev[i], &p1, err, sizeof err) == 0,
                  "seed %llu invoice %ld: %s", (unsigned long long)seed, c, err);
            CHECK(gm_rating_price_event(b, &ev[i], &p2, err, sizeof err) == 0, "%s", err);
            CHECK(!memcmp(p1.amount_e18, p2.amount_e18, sizeof p1.amount_e18) &&
                      p1.flags == p2.flags && p1.card_version == p2.card_version,
                  "seed %llu invoice %ld: pricing twice differs", (unsigned long long)seed, c);
        }
        gm_invoice *ia = build(pa, c);
        if (c % 16 == 0) {
            gm_invoice *ia2 = build(pa, c);
            invoices_equal(ia, ia2, c, "building twice");
            gm_invoice_free(ia2);
        }
        /* Rounding bound: usage lines' rounded sum vs the exact sum. */
        size_t n_usage = 0;
        for (size_t i = 0; i < ia->n_lines; i++)
            n_usage += ia->lines[i].kind <= GM_LINE_TIER;
        gm_i128 unit = gm_pow10_i128(18 - ia->minor_units);
        gm_i128 gap = ia->usage_minor * unit - ia->exact_usage_e18;
        CHECK((gap < 0 ? -gap : gap) * 2 <= (gm_i128)n_usage * unit,
              "seed %llu invoice %ld: rounded lines drift more than half a unit per line",
              (unsigned long long)seed, c);
        /* B: shuffled. */
        memcpy(sh, ev, n * sizeof *ev);
        for (size_t i = n; i > 1; i--) {
            size_t k = below(&s, i);
            gm_usage t = sh[i - 1];
            sh[i - 1] = sh[k];
            sh[k] = t;
        }
        gm_rating_period *pb = gm_rating_period_new(b, tenant, NOV1 + 17 * GM_US_PER_DAY);
        for (size_t i = 0; i < n; i++)
            CHECK(gm_rating_period_add_event(pb, &sh[i], NULL, err, sizeof err) == 0, "%s", err);
        gm_invoice *ib = build(pb, c);
        invoices_equal(ia, ib, c, "shuffled order");
        /* C: batched into hourly sums per (model, site), added in (model, site, hour)
         * order, each at a random instant of its hour. */
        gm_rating_period *pc = gm_rating_period_new(b, tenant, NOV1);
        qsort(sh, n, sizeof *sh, cmp_batch);
        for (size_t i = 0; i < n;) {
            int64_t hour = sh[i].time_us - sh[i].time_us % GM_US_PER_HOUR;
            gm_usage_sum sum = {
                sh[i].model, sh[i].site, hour + (int64_t)below(&s, 3600000000u), {0}, NULL};
            size_t k = i;
            for (; k < n && !cmp_batch(&sh[k], &sh[i]); k++)
                for (int d = 0; d < GM_DIM_COUNT; d++)
                    sum.qty[d] += sh[k].qty[d];
            i = k;
            CHECK(gm_rating_period_add_sum(pc, &sum, err, sizeof err) == 0, "%s", err);
        }
        gm_invoice *ic = build(pc, c);
        invoices_equal(ia, ic, c, "hourly batches");
        gm_invoice_free(ia);
        gm_invoice_free(ib);
        gm_invoice_free(ic);
        gm_rating_period_free(pa);
        gm_rating_period_free(pb);
        gm_rating_period_free(pc);
    }
    fprintf(stderr, "order/batching: %ld events in %ld invoices in %lld ms, seed %llu\n", events,
            invoices, (long long)(gm_mono_us() - t0) / 1000, (unsigned long long)seed);
    gm_rating_book_free(b);
}
END_TEST

/* Number literals are read from their text: the scan must pair each cJSON number node with
 * its literal, also around strings with escaped quotes and digits, nesting, exponents. */
START_TEST(test_number_literals_pair_with_their_nodes)
{
    const char *doc = "{\"a\":\"x\\\"1,2\\\\\",\"b\":[1,-2.5e3,{\"c\":30,\"d\":\"9\"}],"
                      "\"e\":true,\"version\":7,\"f\":[[0],[12345678901234567890]]}";
    rating__json j;
    char err[256];
    ck_assert_msg(rating__json_parse(doc, strlen(doc), &j, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(j.n_nums, 6);
    size_t n;
    const char *t = rating__json_num_text(&j, cJSON_GetObjectItem(j.root, "version"), &n);
    ck_assert_int_eq((int)n, 1);
    ck_assert(t[0] == '7');
    t = rating__json_num_text(&j, cJSON_GetArrayItem(cJSON_GetObjectItem(j.root, "b"), 1), &n);
    ck_assert_int_eq(strncmp(t, "-2.5e3", n), 0);
    const cJSON *big =
        cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j.root, "f"), 1), 0);
    t = rating__json_num_text(&j, big, &n);
    ck_assert_int_eq(strncmp(t, "12345678901234567890", n), 0);
    int64_t v;
    ck_assert_int_eq(rating__json_int(&j, big, INT64_MAX, &v), GM_ERANGE);
    rating__json_free(&j);
}
END_TEST

/* Mutated cards and contracts are refused or accepted, never crash or leak (ASan). */
START_TEST(test_mutated_documents_never_crash)
{
    uint64_t s = seed ^ 5;
    char path[1024];
    const char *files[] = {"list-usd-v1.json", "contract-acme.json"};
    for (size_t fi = 0; fi < 2; fi++) {
        snprintf(path, sizeof path, "%s/examples/ratecards/%s", GM_SOURCE_DIR, files[fi]);
        FILE *f = fopen(path, "rb");
        ck_assert_msg(f != NULL, "%s", path);
        static char orig[65536], buf[65536];
        size_t len = fread(orig, 1, sizeof orig, f);
        fclose(f);
        static const char junk[] = "0123456789.-e\"{}[],: \\ux";
        long accepted = 0;
        for (int i = 0; i < 3000; i++) {
            memcpy(buf, orig, len);
            size_t n = len;
            for (int m = 1 + (int)below(&s, 4); m > 0; m--) {
                size_t at = below(&s, n);
                switch (below(&s, 3)) {
                case 0: /* overwrite */
                    buf[at] = junk[below(&s, sizeof junk - 1)];
                    break;
                case 1: /* delete */
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                    break;
                default: /* truncate */
                    n = at + 1;
                }
            }
            char err[1024];
            if (fi == 0) {
                gm_rating_card *c;
                if (gm_rating_card_parse(buf, n, &c, err, sizeof err) == 0) {
                    accepted++;
                    gm_rating_card_free(c);
                } else {
                    CHECK(err[0] != '\0', "seed %llu: an error without a reason",
                          (unsigned long long)seed);
                }
            } else {
                gm_rating_contract *k;
                if (gm_rating_contract_parse(buf, n, &k, err, sizeof err) == 0) {
                    accepted++;
                    gm_rating_contract_free(k);
                } else {
                    CHECK(err[0] != '\0', "seed %llu: an error without a reason",
                          (unsigned long long)seed);
                }
            }
        }
        fprintf(stderr, "mutations of %s: %ld of 3000 still valid\n", files[fi], accepted);
    }
}
END_TEST

int main(void)
{
    init_seed();
    Suite *s = suite_create("rating properties");
    TCase *tc = tcase_create("properties");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_rounding_moves_each_line_by_at_most_half_a_minor_unit);
    tcase_add_test(tc, test_allocations_add_up_exactly);
    tcase_add_test(tc, test_graduated_tier_never_charges_more_for_less);
    tcase_add_test(tc, test_invoice_depends_neither_on_event_order_nor_on_batching);
    tcase_add_test(tc, test_number_literals_pair_with_their_nodes);
    tcase_add_test(tc, test_mutated_documents_never_crash);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
