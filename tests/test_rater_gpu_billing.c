/* Integration: a contract that bills GPU time from attributed windows (gpu_basis "windows",
 * docs/rating.md "GPU billing basis"), end to end through real Kafka and PostgreSQL: usage and
 * gridmeter.gpu.v1 events -> `gridmeter rater` -> charges -> draft -> `gridmeter close` ->
 * finalized invoice (JSON lines and CSV say the basis), checked against a hand computation; a
 * re-sent window and a conflicting one are never charged twice; the contract switches basis
 * within the month (the whole open month follows the newest contract, never both); `gridmeter
 * quote` over the same events prints the same lines; audit.reconciliation counts the window
 * charges and `gridmeter audit verify` finds nothing wrong after the GPU topic was consumed. */
#include "gm_billing.h"
#include "gm_ledger.h"
#include "rater_harness.h"

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define H23 INT64_C(1795820400000000) /* 2026-11-27T23:00:00Z */
#define SEC GM_US_PER_SEC

static int64_t T(const char *s)
{
    int64_t us;
    char why[128];
    ck_assert(gm_time_parse(s, strlen(s), &us, why, sizeof why) == 0);
    return us;
}

/* Runs argv (stdin from in_path when not NULL) with stdout into out; the exit status. */
static int run(const char *const *argv, const char *in_path, char *out, size_t cap)
{
    gm_test_clock_to_children();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("GRIDMETER_LOG_LEVEL", "warn", 0);
        dup2(fds[1], 1);
        close(fds[0]);
        if (in_path && !freopen(in_path, "r", stdin))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    char sink[4096];
    ssize_t k;
    while ((k = read(fds[0], out && n < cap - 1 ? out + n : sink,
                     out && n < cap - 1 ? cap - 1 - n : sizeof sink)) > 0)
        if (out && n < cap - 1)
            n += (size_t)k;
    if (out)
        out[n] = 0;
    close(fds[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *val(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(v != NULL, "no value: %s", sql);
    return v;
}

static void expect(PGconn *c, const char *sql, const char *want)
{
    char *v = val(c, sql);
    ck_assert_msg(!strcmp(v, want), "%s: got %s, want %s", sql, v, want);
    free(v);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void import_contract(const char *path, const char *json)
{
    write_file(path, json);
    static char out[1 << 14];
    const char *imp[] = {GM_BINARY_DIR "/cli/gridmeter", "ratecard", "import", path, NULL};
    ck_assert_msg(run(imp, NULL, out, sizeof out) == 0, "import: %s", out);
}

static void gpu_event(gm_event *ev, uint64_t seq, const char *id, const char *tenant,
                      const char *policy, int64_t ws, int64_t we, int64_t gpu_us)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_GPU;
    snprintf(ev->source, sizeof ev->source, "edge/fra1/node-a/gpu");
    snprintf(ev->id, sizeof ev->id, "%s", id);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenant);
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->device, sizeof ev->device, "gpu0");
    snprintf(ev->policy, sizeof ev->policy, "%s", policy);
    ev->seq = seq;
    ev->time_us = we;
    ev->window_start_us = ws;
    ev->window_end_us = we;
    ev->gpu_us = gpu_us;
    ev->kernels = 1;
}

static void usage_event(gm_event *ev, uint64_t seq, const char *tenant, int64_t t, int64_t input,
                        int64_t output, int64_t gpu_us)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/fra1/node-a");
    snprintf(ev->id, sizeof ev->id, "u-%llu", (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenant);
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->model, sizeof ev->model, "llama-3.1-70b-instruct");
    ev->seq = seq;
    ev->time_us = t;
    ev->input_tokens = input;
    ev->output_tokens = output;
    ev->gpu_us = gpu_us;
}

/* Each event to Kafka (its topic by type) and as one JSON line to the quote's input. */
static void emit(rd_kafka_t *p, FILE *jsonl, const char *usage_topic, const char *gpu_topic,
                 const gm_event *ev)
{
    char buf[GM_EVENT_MAX_BYTES + 1];
    size_t len = gm_event_encode(ev, buf, sizeof buf);
    ck_assert_msg(len > 0, "encode %s#%s", ev->source, ev->id);
    const char *topic = ev->type == GM_EVENT_GPU ? gpu_topic : usage_topic;
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(ev->source, strlen(ev->source)),
            RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p, 50);
            continue;
        }
        ck_assert_msg(err == 0, "produce: %s", rd_kafka_err2str(err));
        break;
    }
    fwrite(buf, 1, len, jsonl);
    fputc('\n', jsonl);
}

static const char CONTRACT_WINDOWS[] =
    "{\"tenant\": \"widgets\", \"card_id\": \"list-usd\", \"currency\": \"USD\","
    " \"gpu_basis\": \"windows\", \"gpu_window_price\": {\"per_gpu_hour\": \"2.16\"}}";
static const char CONTRACT_REQUESTS[] =
    "{\"tenant\": \"widgets\", \"card_id\": \"list-usd\", \"currency\": \"USD\","
    " \"gpu_basis\": \"requests\"}";

/* The widgets draft of November 2026, computed as the API computes it, with the book now in
 * PostgreSQL. */
static gm_billing_invoice *draft(PGconn *c)
{
    gm_rating_book *book = NULL;
    char err[2048];
    ck_assert_msg(gm_ledger_load_book(c, &book, err, sizeof err) == 0, "%s", err);
    gm_billing_ctx ctx = {c, book, 1, gm_now_us(), 72, NULL};
    gm_billing_invoice *inv = NULL;
    ck_assert_msg(
        gm_billing_compute(&ctx, "widgets", T("2026-11-01T00:00:00Z"), &inv, err, sizeof err) == 0,
        "%s", err);
    ck_assert_msg(gm_billing_invoice_check(inv, err, sizeof err) == 0, "%s", err);
    gm_rating_book_free(book);
    return inv;
}

typedef struct {
    const char *dimension, *model, *quantity, *unit_price, *amount_exact, *amount, *gpu_basis;
} want_line;

static void check_lines(const gm_billing_invoice *inv, const want_line *w, size_t n,
                        const char *total)
{
    ck_assert_int_eq((int)inv->n_lines, (int)n);
    for (size_t i = 0; i < n; i++) {
        const gm_billing_line *l = &inv->lines[i];
        char q[64], up[48], ex[64], am[64];
        gm_billing_line_quantity(l, q, sizeof q);
        gm_dec_format(l->unit_price_p, 12, up, sizeof up);
        gm_dec_format(l->amount_e18, 18, ex, sizeof ex);
        gm_rating_format_minor(l->amount_minor, inv->minor_units, am, sizeof am);
        const char *got[] = {l->dimension, l->model, q, up, ex, am, l->gpu_basis};
        const char *exp[] = {w[i].dimension,    w[i].model,  w[i].quantity, w[i].unit_price,
                             w[i].amount_exact, w[i].amount, w[i].gpu_basis};
        for (int k = 0; k < 7; k++)
            ck_assert_msg(!strcmp(got[k], exp[k]), "line %zu (%s) field %d: got %s, want %s", i + 1,
                          l->description, k, got[k], exp[k]);
    }
    char t[64];
    gm_rating_format_minor(inv->total_minor, inv->minor_units, t, sizeof t);
    ck_assert_str_eq(t, total);
}

/* By hand (list-usd v1, fra1 = metro: input 0.60 and output 0.80 per 1M tokens, gpu 3.60 per
 * GPU-hour = 0.001 per GPU-second; the contract's windows 2.16 per GPU-hour = 0.0006 per
 * GPU-second), widgets in 2026-11:
 *   input  100,000 + 400,000 = 500,000 tokens x 0.0000006 = 0.30
 *   output  20,000 +  30,000 =  50,000 tokens x 0.0000008 = 0.04
 *   per-request gpu_us 600 s + 1200 s = 1800 s
 *   windows (kernel-share-v1) 900 s + 1800 s = 2700 s (the re-sent one and the conflicting
 *   one are not charged; the copy-share-v1 600 s window is never charged)
 * gpu_basis windows:  0.30 + 0.04 + 2700 x 0.0006 = 1.62 + 1800 s at 0 = 1.96
 * gpu_basis requests: 0.30 + 0.04 + 1800 x 0.001 = 1.80 + 2700 s at 0 = 2.14 */
static const want_line BY_WINDOWS[] = {
    {"input", "llama-3.1-70b-instruct", "500000", "0.000000600000", "0.300000000000000000", "0.30",
     ""},
    {"output", "llama-3.1-70b-instruct", "50000", "0.000000800000", "0.040000000000000000", "0.04",
     ""},
    {"gpu", "*", "2700.000000", "0.000600000000", "1.620000000000000000", "1.62", "windows"},
    {"gpu", "llama-3.1-70b-instruct", "1800.000000", "0.000000000000", "0.000000000000000000",
     "0.00", "windows"},
};
static const want_line BY_REQUESTS[] = {
    {"input", "llama-3.1-70b-instruct", "500000", "0.000000600000", "0.300000000000000000", "0.30",
     ""},
    {"output", "llama-3.1-70b-instruct", "50000", "0.000000800000", "0.040000000000000000", "0.04",
     ""},
    {"gpu", "*", "2700.000000", "0.000000000000", "0.000000000000000000", "0.00", "requests"},
    {"gpu", "llama-3.1-70b-instruct", "1800.000000", "0.001000000000", "1.800000000000000000",
     "1.80", "requests"},
};

START_TEST(test_contract_billed_by_attributed_windows_end_to_end)
{
    gm_clock_set_us(T("2026-11-28T00:00:00Z"));
    h_env e;
    h_env_open(&e, "gpubill", 1);
    setenv("GRIDMETER_DB", e.conninfo, 1);
    char gpu_topic[160], arg[200], c1[200], c2[200], c3[200], jsonl[200];
    snprintf(gpu_topic, sizeof gpu_topic, "%s.gpu", e.topic);
    gm_test_topic_create(gpu_topic, 1);
    snprintf(arg, sizeof arg, "--gpu-topic=%s", gpu_topic);
    snprintf(c1, sizeof c1, "/tmp/gmtest-gpubill-c1-%d.json", (int)getpid());
    snprintf(c2, sizeof c2, "/tmp/gmtest-gpubill-c2-%d.json", (int)getpid());
    snprintf(c3, sizeof c3, "/tmp/gmtest-gpubill-c3-%d.json", (int)getpid());
    snprintf(jsonl, sizeof jsonl, "/tmp/gmtest-gpubill-events-%d.jsonl", (int)getpid());
    import_contract(c1, CONTRACT_WINDOWS);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e.brokers, err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) == 0);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    FILE *in = fopen(jsonl, "w");
    ck_assert_ptr_nonnull(in);
    gm_event ev;
    usage_event(&ev, 1, "widgets", H23 + 10 * SEC, 100000, 20000, 600 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    usage_event(&ev, 2, "widgets", H23 + 20 * SEC, 400000, 30000, 1200 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    gpu_event(&ev, 1, "w-1", "widgets", "kernel-share-v1", H23, H23 + 900 * SEC, 900 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    gpu_event(&ev, 2, "w-2", "widgets", "kernel-share-v1", H23 + 900 * SEC, H23 + 2700 * SEC,
              1800 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    /* copy-engine time: stored, reconciled, never charged */
    gpu_event(&ev, 3, "w-3", "widgets", "copy-share-v1", H23, H23 + 900 * SEC, 600 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    /* w-1 re-sent as it was (a duplicate), then under its id with other content (a conflict) */
    gpu_event(&ev, 1, "w-1", "widgets", "kernel-share-v1", H23, H23 + 900 * SEC, 900 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    gpu_event(&ev, 4, "w-1", "widgets", "kernel-share-v1", H23, H23 + 900 * SEC, 5 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    /* acme's contract bills by requests: its window is charged at 0 */
    gpu_event(&ev, 5, "w-5", "acme", "kernel-share-v1", H23, H23 + 900 * SEC, 360 * SEC);
    emit(p, in, e.topic, gpu_topic, &ev);
    fclose(in);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);

    const char *extra[] = {arg, "--exit-idle-ms", "4000", NULL};
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "gpubill", extra)), 0);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    expect(c, "SELECT count(*) FROM gm.ledger", "2");
    expect(c, "SELECT count(*) FROM gm.gpu_windows", "4");
    expect(c, "SELECT count(*) FROM gm.rejected_events WHERE reason LIKE '%conflict%'", "1");
    /* each window charged once, in its row and in gm.charges */
    expect(c,
           "SELECT string_agg(id || ':' || coalesce(charge_amount::text, 'null') || ':' ||"
           " coalesce(charge_unit_price::text, 'null'), ' ' ORDER BY id)"
           " FROM audit.gpu_windows",
           "w-1:0.540000000000000000:0.000600000000 w-2:1.080000000000000000:0.000600000000"
           " w-3:null:null w-5:0.000000000000000000:0.000000000000");
    expect(c,
           "SELECT tenant || ' ' || quantity || ' ' || amount || ' ' || events FROM gm.charges"
           " WHERE model = '*' ORDER BY tenant",
           "acme 360000000 0.000000000000000000 1");
    expect(c,
           "SELECT quantity || ' ' || amount || ' ' || events || ' ' || site_tier FROM gm.charges"
           " WHERE model = '*' AND tenant = 'widgets'",
           "2700000000 1.620000000000000000 2 metro");
    /* the requests' gpu_us of a windows contract are priced 0, flagged (32) */
    expect(c,
           "SELECT sum(amount_gpu) || ' ' || bool_and(flags & 32 = 32) FROM gm.ledger"
           " WHERE tenant = 'widgets'",
           "0.000000000000000000 true");

    /* the draft, by windows */
    gm_billing_invoice *inv = draft(c);
    check_lines(inv, BY_WINDOWS, GM_ARRAY_LEN(BY_WINDOWS), "1.96");
    gm_billing_invoice_free(inv);

    /* the quote of the same events agrees line for line */
    static char out[1 << 18];
    const char *quote[] = {GM_BINARY_DIR "/cli/gridmeter",
                           "quote",
                           "--rate-card",
                           GM_SOURCE_DIR "/examples/ratecards/list-usd-v1.json",
                           "--contract",
                           c1,
                           "--no-events",
                           NULL};
    ck_assert_msg(run(quote, jsonl, out, sizeof out) == 0, "quote: %s", out);
    cJSON *q = cJSON_Parse(out);
    ck_assert_msg(q != NULL, "quote output: %s", out);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(q, "duplicates")), 2);
    const cJSON *qi = NULL, *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(q, "invoices"))
    {
        if (!strcmp(cJSON_GetObjectItem(x, "tenant")->valuestring, "widgets"))
            qi = x;
    }
    ck_assert_ptr_nonnull(qi);
    ck_assert_str_eq(cJSON_GetObjectItem(qi, "total")->valuestring, "1.96");
    const cJSON *ql = cJSON_GetObjectItem(qi, "lines");
    ck_assert_int_eq(cJSON_GetArraySize(ql), (int)GM_ARRAY_LEN(BY_WINDOWS));
    for (int i = 0; i < cJSON_GetArraySize(ql); i++) {
        const cJSON *l = cJSON_GetArrayItem(ql, i);
        const want_line *w = &BY_WINDOWS[i];
        ck_assert_str_eq(cJSON_GetObjectItem(l, "dimension")->valuestring, w->dimension);
        ck_assert_str_eq(cJSON_GetObjectItem(l, "model")->valuestring, w->model);
        ck_assert_str_eq(cJSON_GetObjectItem(l, "quantity")->valuestring, w->quantity);
        ck_assert_str_eq(cJSON_GetObjectItem(l, "unit_price")->valuestring, w->unit_price);
        ck_assert_str_eq(cJSON_GetObjectItem(l, "amount_exact")->valuestring, w->amount_exact);
        ck_assert_str_eq(cJSON_GetObjectItem(l, "amount")->valuestring, w->amount);
        const cJSON *b = cJSON_GetObjectItem(l, "gpu_basis");
        ck_assert_str_eq(cJSON_IsString(b) ? b->valuestring : "", w->gpu_basis);
    }
    cJSON_Delete(q);

    /* the contract switches to requests within the month: the whole open month follows it */
    gm_clock_set_us(T("2026-11-29T00:00:00Z"));
    import_contract(c2, CONTRACT_REQUESTS);
    inv = draft(c);
    check_lines(inv, BY_REQUESTS, GM_ARRAY_LEN(BY_REQUESTS), "2.14");
    gm_billing_invoice_free(inv);
    /* and back to windows before the month closes */
    import_contract(c3, CONTRACT_WINDOWS);
    inv = draft(c);
    check_lines(inv, BY_WINDOWS, GM_ARRAY_LEN(BY_WINDOWS), "1.96");
    gm_billing_invoice_free(inv);

    /* the month close: the finalized invoice keeps the basis of each gpu line */
    gm_clock_set_us(T("2026-12-05T00:00:00Z"));
    const char *close11[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", "2026-11", NULL};
    ck_assert_int_eq(run(close11, NULL, out, sizeof out), 0);
    expect(c,
           "SELECT string_agg(l.line_no || ':' || coalesce(l.model, '') || ':' || l.amount || ':'"
           " || coalesce(l.gpu_basis, '-'), ' ' ORDER BY l.line_no) FROM audit.invoice_lines l"
           " JOIN gm.invoices i USING (invoice_id) WHERE i.tenant = 'widgets'"
           " AND i.status = 'finalized'",
           "1:llama-3.1-70b-instruct:0.30:- 2:llama-3.1-70b-instruct:0.04:- 3:*:1.62:windows"
           " 4:llama-3.1-70b-instruct:0.00:windows");
    char *id = val(c, "SELECT invoice_id FROM gm.invoices WHERE tenant = 'widgets'"
                      " AND status = 'finalized'");
    const char *show[] = {GM_BINARY_DIR "/cli/gridmeter", "invoice", "show", id, "--csv", NULL};
    ck_assert_int_eq(run(show, NULL, out, sizeof out), 0);
    free(id);
    char *nl = strstr(out, "\r\n");
    ck_assert_ptr_nonnull(nl);
    /* gpu_basis, then variant (sql/0027), appended last */
    ck_assert_msg(nl - out > 18 && !strncmp(nl - 18, ",gpu_basis,variant", 18), "CSV header: %.*s",
                  (int)(nl - out), out);
    ck_assert_msg(strstr(out, ",gpu,*,metro,1,,2700.000000,gpu_second,0.000600000000,"
                              "1.620000000000000000,1.62,,windows,\r\n") != NULL,
                  "CSV: %s", out);

    /* the auditors' views: window amounts counted, nothing unbilled, nothing mismatched */
    expect(c,
           "SELECT events || ' ' || ledger_amount || ' ' || charged_amount || ' ' || difference"
           " || ' ' || gpu_window_amount || ' ' || unbilled_amount FROM audit.reconciliation"
           " WHERE tenant = 'widgets'",
           "2 1.960000000000000000 1.960000000000000000 0.000000000000000000"
           " 1.620000000000000000 0.000000000000000000");
    expect(c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0", "0");
    expect(c, "SELECT count(*) FROM audit.chain_state_check", "0");
    expect(c, "SELECT count(*) FROM gm.gpu_topics", "1");
    gm_chain_verify_opts o = {0};
    gm_chain_report rep;
    char verr[1024];
    ck_assert_msg(gm_chain_verify(c, &o, &rep, verr, sizeof verr) == 0, "%s", verr);
    ck_assert_msg(rep.problems == 0, "audit verify: %s", rep.first);
    {
        gm_rating_book *book = NULL;
        ck_assert(gm_ledger_load_book(c, &book, verr, sizeof verr) == 0);
        gm_billing_ctx ctx = {c, book, 1, gm_now_us(), 72, NULL};
        ck_assert_msg(gm_billing_check(&ctx, NULL, verr, sizeof verr) == 0, "%s", verr);
        gm_rating_book_free(book);
    }
    PQfinish(c);
    unlink(c1);
    unlink(c2);
    unlink(c3);
    unlink(jsonl);
    gm_test_topic_delete(gpu_topic);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rater_gpu_billing");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_contract_billed_by_attributed_windows_end_to_end);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
