/* Integration, the whole pipeline as an operator runs it: `gridmeter loadgen` (simulated
 * edge nodes with duplicate re-sends and malformed messages, through the node client's
 * spool) -> real Kafka -> `gridmeter rater` -> PostgreSQL. The ledger must equal the
 * loadgen manifest exactly, per month, tenant, model, site and dimension. */
#include "rater_harness.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int run(const char *const *argv)
{
    gm_test_clock_to_children();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("GRIDMETER_LOG_LEVEL", "warn", 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int64_t num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(cJSON_IsNumber(v), "manifest: %s is missing", key);
    return (int64_t)v->valuedouble; /* manifest counts are far below 2^53 here */
}

START_TEST(test_loadgen_to_ledger_equals_manifest)
{
    h_env e;
    h_env_open(&e, "pipe", 4);
    char spool[256], manifest[256];
    snprintf(spool, sizeof spool, "/tmp/gmtest-pipe-spool-%d", (int)getpid());
    snprintf(manifest, sizeof manifest, "/tmp/gmtest-pipe-manifest-%d.json", (int)getpid());
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
                        "5",
                        "--nodes-per-site",
                        "3",
                        "--tenants",
                        "5",
                        "--models",
                        "4",
                        "--rate",
                        "2000",
                        "--count",
                        "60000",
                        "--start",
                        "2026-11-30T23:59:50Z", /* 30 s of events: crosses into December */
                        "--duplicates",
                        "0.05",
                        "--malformed",
                        "0.01",
                        "--seed",
                        "2026",
                        NULL};
    ck_assert_int_eq(run(lg), 0);
    static const char *const idle[] = {"--exit-idle-ms", "4000", NULL};
    pid_t pid = h_rater_start(&e, "pipe", idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);

    FILE *f = fopen(manifest, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 22];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cJSON *m = cJSON_Parse(text);
    ck_assert_ptr_nonnull(m);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "complete")));
    int64_t valid = num(m, "valid_distinct"), malformed = num(m, "malformed_sent");
    ck_assert_int_gt(num(m, "duplicates_sent"), 1000);
    ck_assert_int_gt(malformed, 200);

    PGconn *c = gm_test_pg_connect(e.conninfo);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM gm.ledger");
    ck_assert_int_eq(atoll(v), valid);
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.rejected_events");
    ck_assert_int_eq(atoll(v), malformed);
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0");
    ck_assert_str_eq(v, "0");
    free(v);
    v = gm_test_pg_value(
        c, "SELECT count(DISTINCT date_trunc('month', time)) FROM audit.usage_events");
    ck_assert_str_eq(v, "2");
    free(v);

    /* Cell by cell: month x tenant x model x site, four dimensions, and the charges too. */
    const cJSON *cells = cJSON_GetObjectItemCaseSensitive(m, "by_month_tenant_model_site");
    ck_assert(cJSON_IsArray(cells));
    int n_cells = 0;
    const cJSON *cell;
    cJSON_ArrayForEach(cell, cells)
    {
        const char *month = cJSON_GetObjectItemCaseSensitive(cell, "month")->valuestring;
        const char *tenant = cJSON_GetObjectItemCaseSensitive(cell, "tenant")->valuestring;
        const char *model = cJSON_GetObjectItemCaseSensitive(cell, "model")->valuestring;
        const char *site = cJSON_GetObjectItemCaseSensitive(cell, "site")->valuestring;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(cell, "totals");
        char month_start[32];
        snprintf(month_start, sizeof month_start, "%s-01T00:00:00Z", month);
        const char *params[4] = {month_start, tenant, model, site};
        PGresult *r = PQexecParams(
            c,
            "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(cached_tokens), 0),"
            " coalesce(sum(output_tokens), 0), coalesce(sum(gpu_us), 0),"
            " (SELECT coalesce(sum(quantity), 0) FROM audit.usage_hourly h WHERE h.tenant = $2"
            "  AND h.model = $3 AND h.site = $4 AND h.dimension = 'output'"
            "  AND date_trunc('month', h.hour) = $1::timestamptz)"
            " FROM audit.usage_events WHERE tenant = $2 AND model = $3 AND site = $4"
            " AND date_trunc('month', time) = $1::timestamptz",
            4, NULL, params, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
        ck_assert_int_eq(atoll(PQgetvalue(r, 0, 0)), num(t, "events"));
        ck_assert_int_eq(atoll(PQgetvalue(r, 0, 1)), num(t, "input_tokens"));
        ck_assert_int_eq(atoll(PQgetvalue(r, 0, 2)), num(t, "cached_tokens"));
        ck_assert_int_eq(atoll(PQgetvalue(r, 0, 3)), num(t, "output_tokens"));
        ck_assert_int_eq(atoll(PQgetvalue(r, 0, 4)), num(t, "gpu_us"));
        ck_assert_int_eq(atoll(PQgetvalue(r, 0, 5)), num(t, "output_tokens"));
        PQclear(r);
        n_cells++;
    }
    ck_assert_int_gt(n_cells, 20);
    PQfinish(c);
    cJSON_Delete(m);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", spool, manifest);
    ck_assert_int_eq(system(cmd), 0);
    h_env_close(&e);
}
END_TEST

static void expect_sql(const char *conninfo, const char *sql, const char *want)
{
    PGconn *c = gm_test_pg_connect(conninfo);
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(!strcmp(v, want), "%s\n  got:  %s\n  want: %s", sql, v, want);
    free(v);
    PQfinish(c);
}

/* Usage revision 1.1 through the real path: `gridmeter emit` -> Kafka -> `gridmeter rater` ->
 * PostgreSQL. The ledger keeps the new fields, prices output as its non-reasoning part and
 * reasoning and cache writes at the card's defaults (examples/ratecards/list-usd-v1.json:
 * llama-3.1-70b-instruct input 0.60, output 0.80 per 1M), the charges carry the new
 * dimensions, and the reconciliation holds. */
START_TEST(test_revision_1_1_events_are_rated_end_to_end)
{
    h_env e;
    h_env_open(&e, "rev11", 1);
    char spool[256], input[256];
    snprintf(spool, sizeof spool, "/tmp/gmtest-rev11-spool-%d", (int)getpid());
    snprintf(input, sizeof input, "/tmp/gmtest-rev11-%d.jsonl", (int)getpid());
    FILE *f = fopen(input, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"subject\":\"solo\",\"time\":\"2026-11-05T10:00:00Z\",\"data\":{"
          "\"model\":\"llama-3.1-70b-instruct\",\"input_tokens\":768,\"cached_tokens\":256,"
          "\"cache_write_tokens\":1024,\"output_tokens\":300,\"reasoning_tokens\":200,"
          "\"gpu_us\":0,\"service_tier\":\"batch\"}}\n"
          "{\"subject\":\"solo\",\"time\":\"2026-11-05T10:00:01Z\",\"data\":{"
          "\"model\":\"llama-3.1-70b-instruct\",\"input_tokens\":10,\"cached_tokens\":0,"
          "\"output_tokens\":5,\"gpu_us\":0}}\n",
          f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "GRIDMETER_LOG_LEVEL=warn %s/cli/gridmeter emit --brokers %s --topic %s"
             " --spool-dir %s --source test/rev11 --site fra1 < %s",
             GM_BINARY_DIR, e.brokers, e.topic, spool, input);
    gm_test_clock_to_children();
    ck_assert_int_eq(system(cmd), 0);
    static const char *const idle[] = {"--exit-idle-ms", "3000", NULL};
    ck_assert_int_eq(h_rater_wait(h_rater_start(&e, "rev11", idle)), 0);
    expect_sql(e.conninfo,
               "SELECT string_agg(concat_ws(':', output_tokens, reasoning_tokens,"
               " cache_write_tokens, service_tier, amount_output::numeric(20,10),"
               " amount_reasoning::numeric(20,10), amount_cache_write::numeric(20,10)), ','"
               " ORDER BY seq) FROM gm.ledger",
               "300:200:1024:batch:0.0000800000:0.0001600000:0.0006144000,"
               "5:0:0:standard:0.0000040000:0.0000000000:0.0000000000");
    expect_sql(e.conninfo,
               "SELECT string_agg(dimension || '=' || quantity, ',' ORDER BY dimension)"
               " FROM gm.charges",
               "cache_write=1024,cached=256,input=778,output=105,reasoning=200");
    expect_sql(e.conninfo, "SELECT count(*) || ' ' || sum(difference) FROM audit.reconciliation",
               "1 0.000000000000000000");
    h_env_close(&e);
    unlink(input);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", spool);
    ck_assert_int_eq(system(rm), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_loadgen_to_ledger_equals_manifest);
    tcase_add_test(tc, test_revision_1_1_events_are_rated_end_to_end);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
