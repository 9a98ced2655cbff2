/* End to end through real Kafka and PostgreSQL: price variants (docs/rating.md, "Price
 * variants"). 360 requests of tenant widgets mixing service tiers (standard, batch, priority),
 * prompt sizes (5,000; exactly 128,000; 128,001; 200,000 tokens) and two sites (fra1 metro,
 * tro1 remote x 1.25) are produced to the broker, `gridmeter rater` prices them, and:
 *   - gm.charges and gm.charges_daily hold one key per variant, each summing to the hand
 *     computation below (the rater's prices);
 *   - the draft's usage lines (billing re-pricing the charges by variant) and, after
 *     `gridmeter close`, the finalized lines of audit.invoice_lines, sum per variant to the
 *     same amounts, and a re-rating dry run finds nothing to correct;
 *   - the chains verify, audit.chain_state_check and audit.chain_batch_check are clean (the
 *     charge changes of variant keys carry a 14th element);
 *   - the invoice CSV ends with the variant column.
 * The card (variants-usd, Example 11 of docs/rating.md): long-70b input 0.60, cached 0.30,
 * output 2.00 per 1M tokens; a prompt above 128,000 tokens: input 1.20, output 3.00 (cached
 * stays 0.30); batch x 0.5, priority x 1.5; remote x 1.25. A unit price is then, in 10^-12 per
 * token: the row's (or base) price x 5/4 at tro1 x 1/2 (batch) or 3/2 (priority), each step
 * exact; an amount is tokens x unit price. The test adds these up per variant by hand (integer
 * arithmetic, no rating code) and compares. */
#include "gm_billing.h"
#include "gm_ledger.h"
#include "rater_harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int64_t T(const char *s)
{
    int64_t us;
    char why[128];
    ck_assert(gm_time_parse(s, strlen(s), &us, why, sizeof why) == 0);
    return us;
}

#define expect h_expect_value

static const char CARD[] =
    "{\"card_id\":\"variants-usd\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
    "\"currency\":\"USD\",\"unknown_models\":\"reject\",\"prices\":{\"long-70b\":{"
    "\"input\":{\"per_1m_tokens\":\"0.60\"},\"cached\":{\"per_1m_tokens\":\"0.30\"},"
    "\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":{\"per_gpu_hour\":\"0\"},"
    "\"context_tiers\":[{\"above_tokens\":128000,\"prices\":{\"input\":{\"per_1m_tokens\":"
    "\"1.20\"},\"output\":{\"per_1m_tokens\":\"3.00\"}}}]}},"
    "\"service_tiers\":{\"batch\":\"0.5\",\"priority\":\"1.5\"},"
    "\"site_tiers\":{\"metro\":{\"sites\":[\"fra1\"]},\"remote\":{\"multiplier\":\"1.25\","
    "\"sites\":[\"tro1\"]}},\"default_site_tier\":\"metro\"}";
static const char CONTRACT[] =
    "{\"tenant\":\"widgets\",\"card_id\":\"variants-usd\",\"currency\":\"USD\"}";

#define N_EVENTS 360
static const int64_t shapes[4][3] = {/* input, cached, output */
                                     {5000, 0, 1050},
                                     {120000, 8000, 1000}, /* prompt 128,000: base */
                                     {120001, 8000, 1000}, /* prompt 128,001: the row */
                                     {200000, 0, 500}};
static const char *const variant_names[6] = {
    "", "batch", "priority", "ctx>128000", "batch/ctx>128000", "priority/ctx>128000"};

/* The hand computation: exact amounts in 10^-18 per variant (index as variant_names). */
static void hand_sums(gm_i128 want[6])
{
    memset(want, 0, 6 * sizeof *want);
    for (int i = 0; i < N_EVENTS; i++) {
        int svc = i % 3, shape = (i / 3) % 4;
        bool remote = i % 5 == 0;
        const int64_t *q = shapes[shape];
        bool row = q[0] + q[1] > 128000;
        /* 10^-12 per token, then x 4 (site) x 2 (service) so the steps stay integers */
        gm_i128 p_in = row ? 1200000 : 600000, p_ca = 300000, p_out = row ? 3000000 : 2000000;
        gm_i128 site = remote ? 5 : 4, serv = svc == 0 ? 2 : svc == 1 ? 1 : 3;
        gm_i128 a =
            ((gm_i128)q[0] * p_in + (gm_i128)q[1] * p_ca + (gm_i128)q[2] * p_out) * site * serv;
        ck_assert(a % 8 == 0);
        want[(row ? 3 : 0) + svc] += a / 8 * 1000000;
    }
}

/* The requests, produced to the broker (and written to `jsonl`). */
static void produce(const h_env *e, const char *jsonl)
{
    gm_event *evs = gm_xcalloc(N_EVENTS, sizeof *evs);
    for (int i = 0; i < N_EVENTS; i++) {
        gm_event *ev = &evs[i];
        ev->type = GM_EVENT_USAGE;
        const char *site = i % 5 == 0 ? "tro1" : "fra1";
        snprintf(ev->source, sizeof ev->source, "edge/%s/node-%d", site, i % 4);
        snprintf(ev->id, sizeof ev->id, "v-%d", i);
        snprintf(ev->tenant, sizeof ev->tenant, "widgets");
        snprintf(ev->site, sizeof ev->site, "%s", site);
        snprintf(ev->model, sizeof ev->model, "long-70b");
        ev->seq = (uint64_t)(i / 4 + 1) + (uint64_t)(i % 5 == 0) * 1000; /* unique per source */
        ev->time_us = T("2026-11-10T00:00:00Z") + (int64_t)i * 37 * 1000000;
        ev->input_tokens = shapes[(i / 3) % 4][0];
        ev->cached_tokens = shapes[(i / 3) % 4][1];
        ev->output_tokens = shapes[(i / 3) % 4][2];
        ev->service_tier = (gm_service_tier)(i % 3);
    }
    unlink(jsonl);
    h_produce_events(e, evs, N_EVENTS, jsonl);
    free(evs);
}

/* "variant=amount" per variant, in variant order, from a query of (variant, sum(amount)). */
static char *per_variant(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(v != NULL, "no value: %s", sql);
    return v;
}

static void want_text(const gm_i128 want[6], char *out, size_t cap)
{
    /* bytewise order of the variant texts, as PostgreSQL's COLLATE "C" sorts them */
    static const int order[6] = {0, 1, 4, 3, 2, 5};
    size_t n = 0;
    out[0] = 0;
    for (int k = 0; k < 6; k++) {
        char a[64];
        gm_dec_format(want[order[k]], 18, a, sizeof a);
        n +=
            (size_t)snprintf(out + n, cap - n, "%s%s=%s", k ? " " : "", variant_names[order[k]], a);
    }
}

START_TEST(test_variants_through_rater_billing_and_audit)
{
    gm_clock_set_us(T("2026-11-10T06:00:00Z"));
    h_env e;
    h_env_open(&e, "variants", 2);
    setenv("GRIDMETER_DB", e.conninfo, 1);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char msg[512], err[2048];
    ck_assert_msg(gm_ledger_import(c, CARD, strlen(CARD), msg, sizeof msg, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_msg(
        gm_ledger_import(c, CONTRACT, strlen(CONTRACT), msg, sizeof msg, err, sizeof err) == 0,
        "%s", err);
    /* import checks a contract's multipliers against the stored card's prices */
    static const char BAD[] = "{\"tenant\":\"initech\",\"card_id\":\"variants-usd\","
                              "\"currency\":\"USD\",\"service_tiers\":{\"batch\":\"0.33334\"}}";
    ck_assert(gm_ledger_import(c, BAD, strlen(BAD), msg, sizeof msg, err, sizeof err) != 0);
    ck_assert_msg(strstr(err, "contract initech: service_tiers.batch: 0.33334 x card variants-usd"
                              " v1 prices.long-70b.cached at site tier remote"),
                  "%s", err);
    ck_assert_msg(strstr(err, "nearest exact multipliers: \"0.33332\" or \"0.33336\""), "%s", err);
    char jsonl[200];
    snprintf(jsonl, sizeof jsonl, "/tmp/gmtest-variants-%d.jsonl", (int)getpid());
    produce(&e, jsonl);
    static const char *const idle[] = {"--exit-idle-ms", "4000", NULL};
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "variants", idle)), 0);
    expect(c, "SELECT count(*) FROM gm.ledger WHERE tenant = 'widgets'", "360");
    expect(c, "SELECT count(*) FROM gm.rejected_events", "0");

    gm_i128 want[6];
    hand_sums(want);
    char wt[1024];
    want_text(want, wt, sizeof wt);
    /* The rater's prices: charges and their daily rollup per variant. */
#define SUMS(col, from, where)                                                                     \
    "SELECT string_agg(variant || '=' || a, ' ' ORDER BY variant COLLATE \"C\") FROM (SELECT"      \
    " variant, sum(" col ")::numeric(38,18)::text AS a FROM " from " WHERE " where                 \
    " GROUP BY variant) x"
    char *got = per_variant(c, SUMS("amount", "gm.charges", "tenant = 'widgets'"));
    ck_assert_msg(!strcmp(got, wt), "charges\n got: %s\n want: %s", got, wt);
    free(got);
    got = per_variant(c, SUMS("amount", "gm.charges_daily", "tenant = 'widgets'"));
    ck_assert_msg(!strcmp(got, wt), "charges_daily\n got: %s\n want: %s", got, wt);
    free(got);
    /* one unit price per (dimension, site tier, variant): e.g. batch input at fra1 0.0000003 */
    expect(c,
           "SELECT string_agg(DISTINCT unit_price::text, ',') FROM gm.charges WHERE site = 'fra1'"
           " AND dimension = 'input' AND variant = 'batch'",
           "0.000000300000");
    expect(c,
           "SELECT string_agg(DISTINCT unit_price::text, ',') FROM gm.charges WHERE site = 'tro1'"
           " AND dimension = 'input' AND variant = 'priority/ctx>128000'",
           "0.000002250000");
    /* the ledger's amounts are the charges' (reconciliation), and the view has the variant */
    expect(c, "SELECT count(*) FILTER (WHERE difference <> 0) FROM audit.reconciliation", "0");
    expect(c, "SELECT count(DISTINCT variant) FROM audit.usage_hourly WHERE tenant = 'widgets'",
           "6");

    /* Billing re-prices the charges by variant: the draft's lines sum to the same. */
    gm_rating_book *book = NULL;
    ck_assert(gm_ledger_load_book(c, &book, err, sizeof err) == 0);
    gm_billing_ctx ctx = {c, book, 1, T("2026-11-10T06:00:00Z"), 72, NULL};
    gm_billing_invoice *d = NULL;
    ck_assert_msg(
        gm_billing_compute(&ctx, "widgets", T("2026-11-01T00:00:00Z"), &d, err, sizeof err) == 0,
        "%s", err);
    gm_i128 line_sum[6] = {0};
    for (size_t i = 0; i < d->n_lines; i++) {
        const gm_billing_line *l = &d->lines[i];
        ck_assert_str_eq(l->kind, "usage");
        int k = 0;
        while (k < 6 && strcmp(variant_names[k], l->variant))
            k++;
        ck_assert_msg(k < 6, "line %d: variant %s", l->line_no, l->variant);
        line_sum[k] += l->amount_e18;
    }
    for (int k = 0; k < 6; k++)
        ck_assert_msg(line_sum[k] == want[k], "draft, variant \"%s\"", variant_names[k]);
    /* the CSV ends with the variant */
    size_t csv_len;
    char *csv = gm_billing_invoice_csv(d, &csv_len);
    ck_assert_msg(strstr(csv, ",gpu_basis,variant\r\n"), "%.300s", csv);
    ck_assert_msg(strstr(csv, ",batch/ctx>128000\r\n"), "%.2000s", csv);
    free(csv);
    gm_billing_invoice_free(d);
    /* a re-rating dry run with the same book: the rater's prices stand, nothing to correct */
    gm_billing_rerate_result *rr = NULL;
    ck_assert_msg(gm_billing_rerate(&ctx, T("2026-11-01T00:00:00Z"), "widgets", true, NULL, NULL,
                                    &rr, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(rr->n_lines, 0);
    gm_billing_rerate_result_free(rr);

    /* Finalized by `gridmeter close`: the stored lines, per variant. */
    static char out[1 << 16];
    gm_clock_set_us(T("2026-12-05T00:00:00Z"));
    const char *close11[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", "2026-11", NULL};
    ck_assert_msg(h_run(close11, NULL, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, " 0 failed") != NULL, "%s", out);
    got = per_variant(c, SUMS("amount_exact",
                              "audit.invoice_lines l JOIN audit.invoices i USING (invoice_id)",
                              "i.tenant = 'widgets' AND i.status = 'finalized' AND l.kind ="
                              " 'usage'"));
    ck_assert_msg(!strcmp(got, wt), "finalized lines\n got: %s\n want: %s", got, wt);
    free(got);
    /* the draft-to-final path recomputes nothing differently: no adjustment afterwards */
    ctx.now_us = T("2026-12-05T00:00:00Z");
    ck_assert_msg(gm_billing_check(&ctx, NULL, err, sizeof err) == 0, "%s", err);

    /* Tamper evidence: the chains verify, and the state tables agree with them. */
    gm_chain_verify_opts o = {0};
    gm_chain_report rep;
    ck_assert_msg(gm_chain_verify(c, &o, &rep, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(rep.problems == 0, "audit verify: %s", rep.first);
    ck_assert_int_eq(rep.rows, N_EVENTS);
    expect(c, "SELECT count(*) FROM audit.chain_state_check", "0");
    expect(c,
           "SELECT count(*) FILTER (WHERE digest <> digest_recomputed OR NOT link_ok)"
           " FROM audit.chain_batch_check",
           "0");
    /* variant keys carry a 14th element; base keys keep 13 */
    expect(c,
           "SELECT string_agg(DISTINCT jsonb_array_length(e)::text || ':' || coalesce(e->>13, ''),"
           " ',') FROM gm.chain_batches b, jsonb_array_elements(b.charges) e"
           " WHERE e->>13 IS NULL OR e->>13 = 'batch'",
           "13:,14:batch");
    gm_rating_book_free(book);
    unlink(jsonl);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("billing_variants_e2e");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_variants_through_rater_billing_and_audit);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
