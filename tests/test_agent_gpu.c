/* GPU accounting through the `gridmeter agent` process (--gpu feed) against the real broker
 * (throw-away topics): the simulated engine's steps go over the Unix socket before they run,
 * its usage events without gpu_us after; both topics are read back with librdkafka. The usage
 * events carry each request's GPU time and the gridmeter.gpu.v1 windows are the rows of the
 * attribution rules over the same work, one event per row, seqs without a hole. */
#include "gm_node.h"
#include "support.h"
#include "test_agent_gpu_sim.h"
#include "test_agent_util.h"
#include "test_node_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
