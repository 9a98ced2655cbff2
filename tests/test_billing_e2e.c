/* End to end, as finance runs it: `gridmeter loadgen` (a September of traffic through real
 * Kafka) -> `gridmeter rater` -> `gridmeter close --month 2026-09` -> a backdated card version
 * (`gridmeter ratecard import`) -> `gridmeter rerate --dry-run`, then applied -> the next
 * invoice carries the adjustment naming September, `gridmeter close --month 2026-10`
 * finalizes it, and audit.reconciliation shows no difference and nothing billed nowhere.
 * Every command runs as a child with the test's pinned clock (GRIDMETER_NOW). */
#include "gm_billing.h"
#include "gm_ledger.h"
#include "rater_harness.h"

#include <cjson/cJSON.h>
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

/* Runs argv with stdout into out (when not NULL, at most cap bytes); returns the exit status. */
static int run(const char *const *argv, char *out, size_t cap)
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

START_TEST(test_month_close_backdated_price_rerate_next_invoice_carries_it)
{
    gm_clock_set_us(T("2026-09-01T00:00:00Z"));
    h_env e;
    h_env_open(&e, "bille2e", 3);
    setenv("GRIDMETER_DB", e.conninfo, 1);
    char spool[256], manifest[256];
    snprintf(spool, sizeof spool, "/tmp/gmtest-bille2e-spool-%d", (int)getpid());
    snprintf(manifest, sizeof manifest, "/tmp/gmtest-bille2e-manifest-%d.json", (int)getpid());
    const char *lg[] = {GM_BINARY_DIR "/cli/gridmeter",
                        "loadgen",
                        "--brokers",
                        e.brokers,
                        "--topic",
                        e.topic,
                        "--spool-dir",
                        spool,
                        "--manifest",
                        manifest,
                        "--sites",
                        "3",
                        "--nodes-per-site",
                        "2",
                        "--tenants",
                        "4",
                        "--models",
                        "3",
                        "--rate",
                        "2000",
                        "--count",
                        "12000",
                        "--start",
                        "2026-09-20T00:00:00Z",
                        "--duplicates",
                        "0.02",
                        "--seed",
                        "18",
                        NULL};
    ck_assert_int_eq(run(lg, NULL, 0), 0);
    static const char *const idle[] = {"--exit-idle-ms", "4000", NULL};
    /* The rater rates the usage after it happened: its time policy refuses events more than
     * 5 minutes ahead of the clock (docs/events.md "Time policy"). */
    gm_clock_set_us(T("2026-09-21T00:00:00Z"));
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "bille2e", idle)), 0);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char *events = val(c, "SELECT count(*) FROM gm.ledger");
    ck_assert_int_gt(atoll(events), 10000);
    free(events);

    /* the month close, after September's grace window */
    gm_clock_set_us(T("2026-10-05T00:00:00Z"));
    static char out[1 << 20];
    const char *close9[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", "2026-09", NULL};
    ck_assert_int_eq(run(close9, out, sizeof out), 0);
    ck_assert_msg(strstr(out, " 0 failed") != NULL, "%s", out);
    char *fin = val(c, "SELECT count(*) FROM gm.invoices WHERE period_start = '2026-09-01Z'"
                       " AND status = 'draft'");
    ck_assert_str_eq(fin, "0");
    free(fin);
    /* again: nothing more */
    ck_assert_int_eq(run(close9, out, sizeof out), 0);
    ck_assert_msg(strstr(out, " 0 finalized") != NULL, "%s", out);

    /* a backdated correction of the list card: from 2026-09-15 every output costs 10x */
    gm_clock_set_us(T("2026-10-06T00:00:00Z"));
    FILE *f = fopen(GM_SOURCE_DIR "/examples/ratecards/list-usd-v1.json", "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    cJSON *card = cJSON_Parse(text);
    cJSON_ReplaceItemInObject(card, "version", cJSON_CreateNumber(3));
    cJSON_ReplaceItemInObject(card, "valid_from", cJSON_CreateString("2026-09-15T00:00:00Z"));
    cJSON_DeleteItemFromObject(card, "valid_until");
    cJSON_AddStringToObject(card, "valid_until", "2026-12-01T00:00:00Z");
    cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(card, "prices"))
    {
        cJSON *o = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "output"), "per_1m_tokens");
        if (o) {
            char p[64];
            gm_i128 v;
            ck_assert(gm_dec_parse(o->valuestring, strlen(o->valuestring), 6, &v, NULL, 0) == 0);
            gm_dec_format(v * 10, 6, p, sizeof p);
            cJSON_SetValuestring(o, p);
        }
    }
    char path[256];
    snprintf(path, sizeof path, "/tmp/gmtest-bille2e-card-%d.json", (int)getpid());
    f = fopen(path, "w");
    char *doc = cJSON_Print(card);
    fputs(doc, f);
    fclose(f);
    free(doc);
    cJSON_Delete(card);
    const char *imp[] = {GM_BINARY_DIR "/cli/gridmeter", "ratecard", "import", path, NULL};
    ck_assert_msg(run(imp, out, sizeof out) == 0, "import: %s", out);

    /* the dry run shows the diff and writes nothing */
    const char *dry[] = {GM_BINARY_DIR "/cli/gridmeter",
                         "rerate",
                         "--month",
                         "2026-09",
                         "--dry-run",
                         "--json",
                         NULL};
    ck_assert_int_eq(run(dry, out, sizeof out), 0);
    cJSON *d = cJSON_Parse(out);
    ck_assert_msg(d != NULL, "%s", out);
    ck_assert_int_gt(cJSON_GetObjectItem(d, "lines_changed")->valueint, 0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(d, "run_id")));
    const cJSON *l0 = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "lines"), 0);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(l0, "amount_exact_before"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(l0, "amount_exact_after"));
    char *runs = val(c, "SELECT count(*) FROM gm.rerating_runs");
    ck_assert_str_eq(runs, "0");
    free(runs);
    /* applied */
    const char *apply[] = {
        GM_BINARY_DIR "/cli/gridmeter",         "rerate", "--month", "2026-09", "--reason",
        "list card v3 backdated to 2026-09-15", "--json", NULL};
    ck_assert_int_eq(run(apply, out, sizeof out), 0);
    cJSON *a = cJSON_Parse(out);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(cJSON_GetObjectItem(a, "lines_changed")->valueint,
                     cJSON_GetObjectItem(d, "lines_changed")->valueint);
    runs = val(c, "SELECT count(*) || ' ' || sum(lines_changed) FROM audit.rerating_runs");
    char want[64];
    snprintf(want, sizeof want, "1 %d", cJSON_GetObjectItem(d, "lines_changed")->valueint);
    ck_assert_str_eq(runs, want);
    free(runs);
    /* twice = once */
    ck_assert_int_eq(run(apply, out, sizeof out), 0);
    cJSON *a2 = cJSON_Parse(out);
    ck_assert_int_eq(cJSON_GetObjectItem(a2, "lines_changed")->valueint, 0);
    cJSON_Delete(a2);

    /* October's close: its invoices carry the September adjustment, billed once */
    gm_clock_set_us(T("2026-11-05T00:00:00Z"));
    const char *close10[] = {GM_BINARY_DIR "/cli/gridmeter", "close", "--month", "2026-10", NULL};
    ck_assert_int_eq(run(close10, out, sizeof out), 0);
    /* the adjustment lines of October equal the finalized tenants' delta of the diff */
    char *adj = val(c, "SELECT coalesce(sum(l.amount_exact), 0) FROM audit.invoice_lines l"
                       " JOIN audit.invoices i USING (invoice_id) WHERE i.period_start ="
                       " '2026-10-01Z' AND l.corrects_period = '2026-09-01Z'"
                       " AND l.adjusted_kind IN ('usage', 'tier')");
    char *corr = val(c, "SELECT coalesce(sum(amount_exact_after - amount_exact_before), 0)"
                        " FROM audit.rerating_corrections WHERE invoice_status = 'finalized'"
                        " AND kind IN ('usage', 'tier')");
    ck_assert_str_eq(adj, corr);
    ck_assert_str_ne(adj, "0.000000000000000000");
    free(adj);
    free(corr);
    char *rec = val(c, "SELECT count(*) FILTER (WHERE difference <> 0) || ' ' ||"
                       " count(*) FILTER (WHERE unbilled_amount <> 0) FROM audit.reconciliation");
    ck_assert_str_eq(rec, "0 0");
    free(rec);
    char *billed = val(c, "SELECT bool_and(billed) FROM audit.rerating_corrections");
    ck_assert_str_eq(billed, "t");
    free(billed);
    /* the invariants over everything */
    gm_rating_book *book = NULL;
    char err[2048];
    ck_assert(gm_ledger_load_book(c, &book, err, sizeof err) == 0);
    gm_billing_ctx ctx = {c, book, 1, T("2026-11-05T00:00:00Z"), 72, NULL};
    ck_assert_msg(gm_billing_check(&ctx, NULL, err, sizeof err) == 0, "%s", err);
    gm_rating_book_free(book);
    cJSON_Delete(a);
    cJSON_Delete(d);
    PQfinish(c);
    unlink(path);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", spool, manifest);
    ck_assert_int_eq(system(cmd), 0);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("billing_e2e");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_month_close_backdated_price_rerate_next_invoice_carries_it);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
