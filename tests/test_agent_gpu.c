/* GPU accounting through the `gridmeter agent` process (--gpu feed) against the real broker
 * (throw-away topics): the simulated engine's steps go over the Unix socket before they run,
 * its usage events without gpu_us after; both topics are read back with librdkafka. The usage
 * events carry each request's GPU time and the gridmeter.gpu.v1 windows are the rows of the
 * attribution rules over the same work, one event per row, seqs without a hole. Then
 * `gridmeter rater` reads both topics: audit.gpu_windows and audit.gpu_reconciliation equal
 * what the engine did (engine -> spool -> Kafka -> rater -> ledger). */
#include "gm_node.h"
#include "support.h"
#include "test_agent_gpu_sim.h"
#include "test_agent_util.h"
#include "test_node_util.h"

#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int64_t q_i64(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(v != NULL, "no value: %s", sql);
    int64_t n = atoll(v);
    free(v);
    return n;
}

/* The rest of the way: `gridmeter rater` reads both topics into a fresh ledger, and
 * audit.gpu_windows and audit.gpu_reconciliation equal what the engine did (want). */
static void rate_and_reconcile(const char *usage_t, const char *gpu_t, const gm_gpu_result *want,
                               const sim *sm)
{
    char conninfo[256], err[1024], msg[256];
    snprintf(conninfo, sizeof conninfo, "%s", gm_test_db_create("agentgpu"));
    PGconn *c = gm_test_pg_connect(conninfo);
    ck_assert_msg(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                    GM_MIGRATE_APPLY, NULL, err, sizeof err) == 0,
                  "migrate: %s", err);
    char path[512];
    snprintf(path, sizeof path, "%s/examples/ratecards/list-usd-v1.json", GM_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    char card[65536];
    size_t len = fread(card, 1, sizeof card, f);
    fclose(f);
    ck_assert_msg(gm_ledger_import(c, card, len, msg, sizeof msg, err, sizeof err) == 0, "%s", err);
    char db[300], group[200];
    snprintf(db, sizeof db, "--db=%s", conninfo);
    snprintf(group, sizeof group, "%s.raters", usage_t);
    const char *argv[] = {GM_GRIDMETER,
                          "rater",
                          db,
                          "--topic",
                          usage_t,
                          "--gpu-topic",
                          gpu_t,
                          "--group",
                          group,
                          "--brokers",
                          gm_test_brokers(),
                          "--metrics=",
                          "--batch-ms",
                          "100",
                          "--exit-idle-ms",
                          "3000",
                          NULL};
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
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rater exit status %d", st);
    /* every window once, equal to the rules' rows */
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.gpu_windows"), (int64_t)want->n_rows);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.rejected_events"), 0);
    ck_assert_int_eq(q_i64(c, "SELECT count(*) FROM audit.usage_events"), SIM_REQS + 1);
    for (size_t t = 0; t < 3; t++) {
        int64_t rows_us = 0, req_us = 0;
        for (size_t i = 0; i < want->n_rows; i++)
            if (!strcmp(want->rows[i].tenant, SIM_TENANTS[t]) &&
                want->rows[i].resource == GM_GPU_RES_KERNEL)
                rows_us += want->rows[i].gpu_us;
        for (int j = 0; j < SIM_REQS; j++)
            if (!strcmp(sm->req[j].tenant, SIM_TENANTS[t])) {
                int64_t us = sim_request_us(want, sm->req[j].tenant, sm->req[j].rid);
                req_us += us < 0 ? 0 : us;
            }
        char sql[400];
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(sum(gpu_us), 0) FROM audit.gpu_windows WHERE tenant = '%s'"
                 " AND node = 'edge/fra1/gpu-node' AND policy = 'kernel-share-v1'",
                 SIM_TENANTS[t]);
        ck_assert_int_eq(q_i64(c, sql), rows_us);
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(sum(attributed_gpu_us), 0) FROM audit.gpu_reconciliation"
                 " WHERE tenant = '%s' AND node = 'edge/fra1/gpu-node' AND site = 'fra1'",
                 SIM_TENANTS[t]);
        ck_assert_int_eq(q_i64(c, sql), rows_us);
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(sum(reported_gpu_us), 0) FROM audit.gpu_reconciliation"
                 " WHERE tenant = '%s' AND node = 'edge/fra1/gpu-node' AND site = 'fra1'",
                 SIM_TENANTS[t]);
        ck_assert_int_eq(q_i64(c, sql), req_us);
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(sum(difference_us), 0) FROM audit.gpu_reconciliation"
                 " WHERE tenant = '%s'",
                 SIM_TENANTS[t]);
        ck_assert_int_eq(q_i64(c, sql), req_us - rows_us);
        printf("rater: %s reported %lld us per request, CUPTI rules attributed %lld us\n",
               SIM_TENANTS[t], (long long)req_us, (long long)rows_us);
    }
    PQfinish(c);
    gm_test_db_drop(conninfo);
}

START_TEST(test_feed_over_the_socket_gives_each_request_its_gpu_us_and_the_windows_in_kafka)
{
    char dir[256], spool[300], sock[300], log_path[300], usage_t[128], gpu_t[128];
    tn_tmpdir(dir, sizeof dir, "agent-gpu");
    snprintf(spool, sizeof spool, "%s/spool", dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    snprintf(log_path, sizeof log_path, "%s/agent.log", dir);
    gm_test_topic_name("agent-usage", usage_t, sizeof usage_t);
    gm_test_topic_name("agent-gpu", gpu_t, sizeof gpu_t);
    gm_test_topic_create(usage_t, 2);
    gm_test_topic_create(gpu_t, 2);
    const char *args[] = {"--brokers",
                          gm_test_brokers(),
                          "--topic",
                          usage_t,
                          "--gpu-topic",
                          gpu_t,
                          "--source",
                          "edge/fra1/gpu-node",
                          "--site",
                          "fra1",
                          "--spool-dir",
                          spool,
                          "--socket",
                          sock,
                          "--listen",
                          "",
                          "--gpu",
                          "feed",
                          "--gpu-window-ms",
                          "1000",
                          "--gpu-grace-ms",
                          "300",
                          "--gpu-flush-ms",
                          "50",
                          NULL};
    pid_t pid = ta_agent_start(args, log_path, sock, 30000);
    /* the engine's work starts two whole seconds from now, on the agent's clock */
    int64_t base = (gm_now_us() / GM_US_PER_SEC + 3) * GM_US_PER_SEC;
    sim sm;
    sim_make(&sm, base);
    char *steps = sim_steps_body(&sm, true);
    ta_resp r;
    ta_request(sock, 0, NULL, "/v1/gpu/steps", "application/x-ndjson", steps, strlen(steps), &r);
    ck_assert_msg(r.status == 200 && ta_json_int(r.body, "rejected") == 0, "%ld %s", r.status,
                  r.body);
    ck_assert_msg(!strstr(r.body, "warning"), "late kernels: %s", r.body);
    ta_resp_free(&r);
    free(steps);
    /* the usage events come after the engine ran them (a wait for the clock, not a timing) */
    while (gm_now_us() <= sm.end_us + 10000)
        usleep(20000);
    char *usage = sim_usage_body(&sm);
    ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", usage, strlen(usage), &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), SIM_REQS + 1);
    ck_assert_int_eq(ta_json_int(r.body, "gpu_filled"), SIM_REQS + 1);
    ta_resp_free(&r);
    free(usage);
    ck_assert_int_eq(ta_agent_stop(pid), 0); /* the last close reports every window */
    ta_close();

    gm_gpu_result want;
    sim_expect(&sm, GM_US_PER_SEC * 1000u, &want);
    tn_msg *m;
    uint64_t dups, max_seq;
    size_t got = tn_consume(gm_test_brokers(), usage_t, SIM_REQS + 1, 60000, &m);
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), SIM_REQS + 1);
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        ck_assert(gm_event_decode(m[i].payload, m[i].len, &ev, NULL, 0) == 0);
        int64_t us = sim_request_us(&want, ev.tenant, ev.request_id);
        ck_assert_msg(ev.gpu_us == (us < 0 ? 0 : us), "%s %s: gpu_us %lld, the rules say %lld",
                      ev.tenant, ev.request_id, (long long)ev.gpu_us, (long long)us);
    }
    tn_free(m, got);
    got = tn_consume(gm_test_brokers(), gpu_t, want.n_rows, 60000, &m);
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), want.n_rows);
    gm_event *ev = gm_xmalloc((got ? got : 1) * sizeof *ev);
    size_t n = 0;
    for (size_t i = 0; i < got; i++) {
        ck_assert(gm_event_decode(m[i].payload, m[i].len, &ev[n], NULL, 0) == 0);
        bool again = false; /* a duplicate delivery of one (source, id) counts once */
        for (size_t k = 0; k < n && !again; k++)
            again = !strcmp(ev[k].id, ev[n].id);
        if (!again)
            n++;
    }
    sim_check_windows(&want, ev, n, "edge/fra1/gpu-node/gpu", "fra1");
    rate_and_reconcile(usage_t, gpu_t, &want, &sm);
    printf("gpu feed: %zu requests' gpu_us and %zu windows equal the rules\n", (size_t)SIM_REQS, n);
    free(ev);
    tn_free(m, got);
    gm_gpu_result_free(&want);
    gm_test_topic_delete(usage_t);
    gm_test_topic_delete(gpu_t);
    tn_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_gpu");
    TCase *t = tcase_create("feed");
    tcase_set_timeout(t, 240);
    tcase_add_test(
        t, test_feed_over_the_socket_gives_each_request_its_gpu_us_and_the_windows_in_kafka);
    suite_add_tcase(s, t);
    return gm_test_run(s);
}
