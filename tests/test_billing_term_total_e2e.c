/* End to end through real Kafka and PostgreSQL: a total-over-term commitment (docs/rating.md,
 * "Total over a term") of 1,000.00 USD over [2027-01-15, 2027-03-15), so January, February
 * and March 2027 are its months and March's invoice carries the true-up. Usage is produced to
 * the broker, `gridmeter rater` prices it, `gridmeter close` finalizes the three months (the
 * clock moved by GRIDMETER_NOW, never today's date), and `gridmeter quote` over the same
 * events prints the same invoices. Card list-usd v1 (the harness's card),
 * llama-3.1-70b-instruct at fra1 (metro): input 0.60 and output 0.80 per 1M tokens, GPU 0.001 a
 * second; contract discount 10 %. Hand-computed:
 *   January:  input 100,000,000 = 60.00 + output 50,000,000 = 40.00; discount -10.00; spend 90.00
 *   February: input 200,000,000 = 120.00 + GPU 36,000 s = 36.00; discount -15.60; spend 140.40
 *   March:    output 25,000,000 = 20.00; discount -2.00; spend 18.00
 *   term spend 90.00 + 140.40 + 18.00 = 248.40; true-up 1,000.00 - 248.40 = 751.60;
 *   March total 20.00 - 2.00 + 751.60 = 769.60.
 * Then a late February event (input 10,000,000 = 6.00) after March is finalized: April's
 * invoice adjusts February (usage +6.00, discount -0.60) and March's true-up (the spend is
 * now 253.80: 746.20, so -5.40): April total 0.00, and the term has cost exactly 1,000.00.
 * Effective-dated versions (docs/rating.md, "Effective-dated contracts"): a version from March
 * (invoiced) is refused naming the invoice; one from June prices input at 0.30 per 1M: the
 * rater charges a May event at 6.00 and a June one at 3.00, May invoices 5.40, June 2.70, and
 * March recomputed keeps its own version's term; the quote with both versions agrees. */
#include "gm_billing.h"
#include "gm_ledger.h"
#include "rater_harness.h"

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
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

/* Runs argv (stdin from in_path when not NULL) with stdout into out; the exit status. */
#define run    h_run
#define expect h_expect_value

static void usage_event(gm_event *ev, uint64_t seq, int64_t t, int64_t input, int64_t output,
                        int64_t gpu_us)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/fra1/node-t");
    snprintf(ev->id, sizeof ev->id, "t-%llu", (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "widgets");
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->model, sizeof ev->model, "llama-3.1-70b-instruct");
    ev->seq = seq;
    ev->time_us = t;
    ev->input_tokens = input;
    ev->output_tokens = output;
    ev->gpu_us = gpu_us;
}

/* Produces events to the topic and writes them as JSON lines to `jsonl` (the quote's input). */
static void produce(const h_env *e, const char *jsonl, const gm_event *evs, size_t n)
{
    h_produce_events(e, evs, n, jsonl);
}

static void close_month(const char *month, char *out, size_t cap)
{
    const char *argv[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", month, NULL};
    ck_assert_msg(run(argv, NULL, out, cap) == 0, "close %s: %s", month, out);
    ck_assert_msg(strstr(out, " 0 failed") != NULL, "close %s: %s", month, out);
}

static const char CONTRACT[] =
    "{\"tenant\": \"widgets\", \"card_id\": \"list-usd\", \"currency\": \"USD\","
    " \"discount_percent\": \"10\", \"term_commitment\": \"1000.00\","
    " \"commitment_start\": \"2027-01-15T00:00:00Z\", \"commitment_end\": "
    "\"2027-03-15T00:00:00Z\"}";

/* The finalized lines of a month as "kind:amount" joined by spaces, in line order. */
#define LINES_OF(month)                                                                            \
    "SELECT string_agg(coalesce(l.adjusted_kind || '/', '') || l.kind || ':' || l.amount, ' '"     \
    " ORDER BY l.line_no) FROM audit.invoice_lines l JOIN audit.invoices i USING (invoice_id)"     \
    " WHERE i.tenant = 'widgets' AND i.period_start = '" month "-01Z'"

START_TEST(test_term_total_true_up_through_rater_close_and_quote)
{
    gm_clock_set_us(T("2027-01-10T00:00:00Z"));
    h_env e;
    h_env_open(&e, "termtotal", 1);
    setenv("GRIDMETER_DB", e.conninfo, 1);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char msg[512], err[2048];
    ck_assert_msg(
        gm_ledger_import(c, CONTRACT, strlen(CONTRACT), msg, sizeof msg, err, sizeof err) == 0,
        "%s", err);
    char cpath[200], jsonl[200];
    snprintf(cpath, sizeof cpath, "/tmp/gmtest-termtotal-c-%d.json", (int)getpid());
    snprintf(jsonl, sizeof jsonl, "/tmp/gmtest-termtotal-events-%d.jsonl", (int)getpid());
    FILE *f = fopen(cpath, "w");
    ck_assert_ptr_nonnull(f);
    fputs(CONTRACT, f);
    fclose(f);
    unlink(jsonl);

    gm_event ev[4];
    usage_event(&ev[0], 1, T("2027-01-20T10:00:00Z"), 100000000, 50000000, 0);
    usage_event(&ev[1], 2, T("2027-02-03T10:00:00Z"), 200000000, 0, INT64_C(36000000000));
    usage_event(&ev[2], 3, T("2027-03-02T10:00:00Z"), 0, 25000000, 0);
    gm_clock_set_us(T("2027-03-20T00:00:00Z"));
    produce(&e, jsonl, ev, 3);
    static const char *const idle[] = {"--exit-idle-ms", "4000", NULL};
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "termtotal", idle)), 0);
    expect(c, "SELECT count(*) FROM gm.ledger WHERE tenant = 'widgets'", "3");

    /* Progress before the last month: January's draft. */
    gm_rating_book *book = NULL;
    ck_assert(gm_ledger_load_book(c, &book, err, sizeof err) == 0);
    gm_billing_ctx ctx = {c, book, 1, T("2027-03-20T00:00:00Z"), 72, NULL};
    gm_billing_invoice *d = NULL;
    ck_assert_msg(
        gm_billing_compute(&ctx, "widgets", T("2027-02-01T00:00:00Z"), &d, err, sizeof err) == 0,
        "%s", err);
    char a[48], b[48];
    ck_assert(d->has_term && !d->term_last_month);
    gm_rating_format_minor(d->term_spent_minor, 2, a, sizeof a);
    gm_rating_format_minor(d->term_remaining_minor, 2, b, sizeof b);
    ck_assert_str_eq(a, "230.40"); /* January 90.00 + February 140.40 */
    ck_assert_str_eq(b, "769.60");
    gm_billing_invoice_free(d);
    gm_rating_book_free(book);

    static char out[1 << 18];
    gm_clock_set_us(T("2027-04-05T00:00:00Z"));
    close_month("2027-01", out, sizeof out);
    close_month("2027-02", out, sizeof out);
    close_month("2027-03", out, sizeof out);
    expect(c, LINES_OF("2027-01"), "usage:60.00 usage:40.00 discount:-10.00");
    expect(c, LINES_OF("2027-02"), "usage:120.00 usage:36.00 discount:-15.60");
    expect(c, LINES_OF("2027-03"), "usage:20.00 discount:-2.00 commitment:751.60");
    expect(c,
           "SELECT string_agg(total::text, ' ' ORDER BY period_start) FROM audit.invoices"
           " WHERE tenant = 'widgets' AND status = 'finalized' AND period_start >= '2027-01-01Z'",
           "90.00 140.40 769.60");
    expect(c,
           "SELECT l.description FROM audit.invoice_lines l JOIN audit.invoices i"
           " USING (invoice_id) WHERE i.tenant = 'widgets' AND l.kind = 'commitment'",
           "term commitment 1000.00 USD [2027-01-15, 2027-03-15), spent 248.40, true-up");

    /* The quote of the same events: the same three invoices, line for line. */
    const char *quote[] = {GM_BINARY_DIR "/cli/gridmeter",
                           "quote",
                           "--rate-card",
                           GM_SOURCE_DIR "/examples/ratecards/list-usd-v1.json",
                           "--contract",
                           cpath,
                           "--no-events",
                           NULL};
    ck_assert_msg(run(quote, jsonl, out, sizeof out) == 0, "quote: %s", out);
    cJSON *q = cJSON_Parse(out);
    ck_assert_msg(q != NULL, "quote output: %s", out);
    cJSON *invs = cJSON_GetObjectItem(q, "invoices");
    ck_assert_int_eq(cJSON_GetArraySize(invs), 3);
    static const char *months[3] = {"2027-01", "2027-02", "2027-03"};
    static const char *spent[3] = {"90.00", "230.40", "248.40"};
    for (int m = 0; m < 3; m++) {
        const cJSON *qi = cJSON_GetArrayItem(invs, m);
        char sql[1024], lines[512] = "";
        const cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItem(qi, "lines"))
        {
            size_t n = strlen(lines);
            snprintf(lines + n, sizeof lines - n, "%s%s:%s", n ? " " : "",
                     cJSON_GetObjectItem(l, "kind")->valuestring,
                     cJSON_GetObjectItem(l, "amount")->valuestring);
        }
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(l.kind || ':' || l.amount, ' ' ORDER BY l.line_no)"
                 " FROM audit.invoice_lines l JOIN audit.invoices i USING (invoice_id)"
                 " WHERE i.tenant = 'widgets' AND i.period_start = '%s-01Z'",
                 months[m]);
        expect(c, sql, lines);
        const cJSON *tc = cJSON_GetObjectItem(qi, "term_commitment");
        ck_assert_msg(cJSON_IsObject(tc), "month %s: no term_commitment", months[m]);
        ck_assert_str_eq(cJSON_GetObjectItem(tc, "total")->valuestring, "1000.00");
        ck_assert_str_eq(cJSON_GetObjectItem(tc, "spent_in_term")->valuestring, spent[m]);
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(tc, "last_month")) == (m == 2));
    }
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(invs, 2), "total")->valuestring,
                     "769.60");
    cJSON_Delete(q);

    /* A late February event after March is billed: the true-up follows the new spend. */
    gm_clock_set_us(T("2027-04-06T00:00:00Z"));
    usage_event(&ev[3], 4, T("2027-02-10T10:00:00Z"), 10000000, 0, 0);
    produce(&e, jsonl, &ev[3], 1);
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "termtotal", idle)), 0);
    expect(c, "SELECT count(*) FROM gm.ledger WHERE tenant = 'widgets'", "4");
    gm_clock_set_us(T("2027-05-05T00:00:00Z"));
    close_month("2027-04", out, sizeof out);
    expect(c, LINES_OF("2027-04"),
           "usage/adjustment:6.00 discount/adjustment:-0.60 commitment/adjustment:-5.40");
    expect(c,
           "SELECT total || ' ' || status FROM audit.invoices WHERE tenant = 'widgets'"
           " AND period_start = '2027-04-01Z'",
           "0.00 finalized");
    /* Over the term the tenant paid exactly its total. */
    expect(c, "SELECT sum(total) FROM audit.invoices WHERE tenant = 'widgets'", "1000.00");

    /* Effective-dated contract versions (docs/rating.md, "Effective-dated contracts"). A
     * version from March, whose invoice is finalized, is refused naming the invoice. */
    {
        char v2[1024];
        snprintf(v2, sizeof v2, "%.*s, \"effective_from\": \"2027-03\"}",
                 (int)(strlen(CONTRACT) - 1), CONTRACT);
        ck_assert_int_eq(gm_ledger_import(c, v2, strlen(v2), msg, sizeof msg, err, sizeof err),
                         GM_ECONFLICT);
        ck_assert_msg(strstr(err, "contract widgets: effective_from: 2027-03 reaches a month "
                                  "already invoiced (invoice GM-") != NULL &&
                          strstr(err, " of 2027-03 is finalized)") != NULL,
                      "%s", err);
    }
    /* A version from June (open): input at 0.30 per 1M for this tenant, the same discount, no
     * term. May stays priced by the first version, June by the new one. */
    static const char V3[] =
        "{\"tenant\": \"widgets\", \"card_id\": \"list-usd\", \"currency\": \"USD\","
        " \"discount_percent\": \"10\", \"effective_from\": \"2027-06\","
        " \"prices\": {\"llama-3.1-70b-instruct\": {\"input\": {\"per_1m_tokens\": \"0.30\"}}}}";
    char c3path[200];
    snprintf(c3path, sizeof c3path, "/tmp/gmtest-termtotal-c3-%d.json", (int)getpid());
    f = fopen(c3path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(V3, f);
    fclose(f);
    const char *imp[] = {GM_BINARY_DIR "/cli/gridmeter", "ratecard", "import", c3path, NULL};
    ck_assert_msg(run(imp, NULL, out, sizeof out) == 0, "import: %s", out);
    gm_event late[2];
    usage_event(&late[0], 5, T("2027-05-10T10:00:00Z"), 10000000, 0, 0);
    usage_event(&late[1], 6, T("2027-06-10T10:00:00Z"), 10000000, 0, 0);
    gm_clock_set_us(T("2027-06-15T00:00:00Z"));
    produce(&e, jsonl, late, 2);
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "termtotal", idle)), 0);
    /* The rater priced each event by the version in force at its time. */
    expect(c,
           "SELECT string_agg(amount::text, ' ' ORDER BY hour) FROM gm.charges"
           " WHERE tenant = 'widgets' AND hour >= '2027-05-01Z'",
           "6.000000000000000000 3.000000000000000000");
    /* March, re-computed now, still follows the version of March (its term and true-up). */
    ck_assert(gm_ledger_load_book(c, &book, err, sizeof err) == 0);
    gm_billing_ctx ctx3 = {c, book, 1, T("2027-06-15T00:00:00Z"), 72, NULL};
    ck_assert_msg(
        gm_billing_compute(&ctx3, "widgets", T("2027-03-01T00:00:00Z"), &d, err, sizeof err) == 0,
        "%s", err);
    ck_assert(d->has_term && d->term_last_month);
    gm_rating_format_minor(d->term_spent_minor, 2, a, sizeof a);
    ck_assert_str_eq(a, "253.80");
    gm_billing_invoice_free(d);
    gm_rating_book_free(book);
    gm_clock_set_us(T("2027-07-05T00:00:00Z"));
    close_month("2027-05", out, sizeof out);
    close_month("2027-06", out, sizeof out);
    /* May: 6.00 - 0.60 = 5.40; June at the contract's price: 3.00 - 0.30 = 2.70. */
    expect(c, LINES_OF("2027-05"), "usage:6.00 discount:-0.60");
    expect(c, LINES_OF("2027-06"), "usage:3.00 discount:-0.30");
    /* The quote with both versions (file order is version order) agrees for May and June. */
    char both[420];
    snprintf(both, sizeof both, "%s,%s", cpath, c3path);
    const char *quote2[] = {GM_BINARY_DIR "/cli/gridmeter",
                            "quote",
                            "--rate-card",
                            GM_SOURCE_DIR "/examples/ratecards/list-usd-v1.json",
                            "--contract",
                            both,
                            "--no-events",
                            NULL};
    ck_assert_msg(run(quote2, jsonl, out, sizeof out) == 0, "quote: %s", out);
    q = cJSON_Parse(out);
    ck_assert_msg(q != NULL, "quote output: %s", out);
    invs = cJSON_GetObjectItem(q, "invoices");
    ck_assert_int_eq(cJSON_GetArraySize(invs), 5); /* January, February, March, May, June */
    static const char *want_q[2] = {"5.40", "2.70"};
    for (int m = 0; m < 2; m++) {
        const cJSON *qi = cJSON_GetArrayItem(invs, 3 + m);
        ck_assert_str_eq(cJSON_GetObjectItem(qi, "total")->valuestring, want_q[m]);
        ck_assert(cJSON_IsNull(cJSON_GetObjectItem(qi, "term_commitment")));
    }
    cJSON_Delete(q);
    unlink(c3path);

    /* The list amounts reconcile; the billing invariants hold. */
    expect(c, "SELECT count(*) FILTER (WHERE difference <> 0) FROM audit.reconciliation", "0");
    ck_assert(gm_ledger_load_book(c, &book, err, sizeof err) == 0);
    gm_billing_ctx ctx2 = {c, book, 1, T("2027-07-05T00:00:00Z"), 72, NULL};
    ck_assert_msg(gm_billing_check(&ctx2, NULL, err, sizeof err) == 0, "%s", err);
    gm_rating_book_free(book);
    unlink(cpath);
    unlink(jsonl);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("billing_term_total_e2e");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_term_total_true_up_through_rater_close_and_quote);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
