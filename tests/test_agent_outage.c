/* Broker down and back, through the `gridmeter agent` process, against a PRIVATE Kafka broker
 * (127.0.0.1, free ports picked at start-up; started and stopped here with scripts/services.sh,
 * never the shared one). While the broker is down the agent keeps accepting (its producer's
 * messages time out every 2 s and are produced again from the spool, as they would for an hour)
 * until its spool is full, then answers 429 with Retry-After and records nothing of those
 * requests; /healthz says full. The client waits as told and sends the same batches again.
 * After the broker is back every accepted event arrives, and the seqs have no hole. */
#include "gm_node.h"
#include "support.h"
#include "test_agent_util.h"
#include "test_node_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOPIC "gridmeter.usage.v1"

static char var_dir[256], brokers[64], dir[256], spool[300], sock[300], log_path[300];
static int port, controller_port;

static int services(const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "GRIDMETER_VAR='%s' GRIDMETER_KAFKA_PORT=%d GRIDMETER_KAFKA_CONTROLLER_PORT=%d"
             " GRIDMETER_CACHE=\"${GRIDMETER_CACHE:-%s/.cache}\" bash %s/scripts/services.sh %s "
             "kafka >>'%s/services.log' 2>&1",
             var_dir, port, controller_port, GM_SOURCE_DIR, GM_SOURCE_DIR, what, var_dir);
    return system(cmd);
}

/* In the parent process (an unchecked fixture), so that the broker is stopped even when the
 * test fails. */
static void broker_dir(void)
{
    snprintf(var_dir, sizeof var_dir, "/tmp/gmtest-agent-outage-kafka-XXXXXX");
    if (!mkdtemp(var_dir))
        abort();
    port = gm_test_free_port();
    controller_port = gm_test_free_port();
    snprintf(brokers, sizeof brokers, "127.0.0.1:%d", port);
}

static void broker_stop(void)
{
    services("stop");
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", var_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", var_dir);
}

static char *batch_body(uint64_t first, int n)
{
    size_t cap = (size_t)n * 220 + 1, len = 0;
    char *b = gm_xmalloc(cap);
    for (int i = 0; i < n; i++)
        len +=
            (size_t)snprintf(b + len, cap - len,
                             "{\"subject\":\"acme\",\"data\":{\"model\":\"llama-3.1-8b-instruct\","
                             "\"request_id\":\"o-%llu\",\"input_tokens\":%d,\"cached_tokens\":0,"
                             "\"output_tokens\":7,\"gpu_us\":9}}\n",
                             (unsigned long long)(first + (uint64_t)i), i + 1);
    return b;
}

static long long health_int(const char *key, char *status, size_t len)
{
    ta_resp r;
    ta_request(sock, 0, NULL, "/healthz", NULL, NULL, 0, &r);
    long long v = ta_json_int(r.body, key);
    const char *s = strstr(r.body, "\"status\":\"");
    if (status)
        snprintf(status, len, "%.*s", s ? (int)strcspn(s + 10, "\"") : 0, s ? s + 10 : "");
    ta_resp_free(&r);
    return v;
}

START_TEST(test_broker_down_accepts_until_full_then_429_and_everything_arrives_after)
{
    enum { BATCH = 50 };
    tn_tmpdir(dir, sizeof dir, "agent-outage");
    snprintf(spool, sizeof spool, "%s/spool", dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    snprintf(log_path, sizeof log_path, "%s/agent.log", dir);
    ck_assert_msg(services("start") == 0, "private broker did not start (log: %s/services.log)",
                  var_dir);
    const char *args[] = {"--brokers",
                          brokers,
                          "--topic",
                          TOPIC,
                          "--source",
                          "edge/fra1/agent-outage",
                          "--site",
                          "fra1",
                          "--spool-dir",
                          spool,
                          "--spool-max-bytes",
                          "2097152",
                          "--socket",
                          sock,
                          "--listen",
                          "",
                          "--retry-after-s",
                          "1",
                          "--message-timeout-ms",
                          "2000",
                          "--close-timeout-ms",
                          "30000",
                          NULL};
    pid_t pid = ta_agent_start(args, log_path, sock, 30000);
    uint64_t next = 0, accepted = 0;
    for (int i = 0; i < 20; i++) { /* broker up */
        char *body = batch_body(next, BATCH);
        ta_resp r;
        ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", body, strlen(body), &r);
        free(body);
        ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
        ta_resp_free(&r);
        next += BATCH;
        accepted += BATCH;
    }

    int64_t t0 = gm_mono_us();
#define PHASE(what) printf("outage: %s at %.1f s\n", what, (double)(gm_mono_us() - t0) / 1e6)
    ck_assert_int_eq(services("stop"), 0);
    PHASE("broker stopped");
    uint64_t accepted_down = 0, refused = 0, retry_after = 0;
    char status[32];
    /* accept until full; then the same batch is refused (429) and waited on */
    uint64_t pending_first = UINT64_MAX;
    int64_t t_down = gm_mono_us();
    while (refused < 5 || gm_mono_us() - t_down < 15 * GM_US_PER_SEC) {
        uint64_t first = pending_first != UINT64_MAX ? pending_first : next;
        char *body = batch_body(first, BATCH);
        ta_resp r;
        ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", body, strlen(body), &r);
        free(body);
        if (r.status == 200) {
            ck_assert_msg(pending_first == UINT64_MAX, "accepted again while the broker is down");
            ck_assert_int_eq(ta_json_int(r.body, "accepted"), BATCH);
            next += BATCH;
            accepted += BATCH;
            accepted_down += BATCH;
        } else {
            ck_assert_msg(r.status == 429, "%ld %s", r.status, r.body);
            ck_assert_int_eq(ta_json_int(r.body, "accepted"), 0);
            ck_assert_int_ge(r.retry_after_s, 1);
            retry_after = (uint64_t)r.retry_after_s;
            if (pending_first == UINT64_MAX) {
                pending_first = next;
                next += BATCH; /* these request ids wait to be sent again */
                ck_assert_int_eq(health_int("unacked", status, sizeof status), (long long)accepted);
                ck_assert_str_eq(status, "full");
            }
            refused++;
            usleep(200 *
                   1000); /* shorter than Retry-After: the test checks the answer, not the wait */
        }
        ta_resp_free(&r);
    }
    printf("outage: accepted %llu while the broker was down, %llu requests refused (429, "
           "Retry-After %llu s)\n",
           (unsigned long long)accepted_down, (unsigned long long)refused,
           (unsigned long long)retry_after);
    ck_assert_uint_gt(accepted_down, 2000);
    ck_assert_uint_ge(refused, 5);

    ck_assert_int_eq(services("start"), 0);
    PHASE("broker started again");
    /* the client sends the refused batch again, waiting Retry-After between tries */
    for (int tries = 0;; tries++) {
        char *body = batch_body(pending_first, BATCH);
        ta_resp r;
        ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", body, strlen(body), &r);
        free(body);
        long st = r.status;
        int ra = r.retry_after_s;
        ta_resp_free(&r);
        if (st == 200)
            break;
        ck_assert_int_eq(st, 429);
        refused++;
        ck_assert_msg(tries < 120, "still full two minutes after the broker came back");
        sleep((unsigned)(ra > 0 ? ra : 1));
    }
    accepted += BATCH;
    PHASE("the refused batch accepted");
    for (int i = 0; i < 10; i++) {
        char *body = batch_body(next, BATCH);
        ta_resp r;
        ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", body, strlen(body), &r);
        free(body);
        ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
        ta_resp_free(&r);
        next += BATCH;
        accepted += BATCH;
    }
    int64_t until = gm_mono_us() + 120 * GM_US_PER_SEC;
    while (health_int("unacked", status, sizeof status) != 0)
        ck_assert_msg(gm_mono_us() < until, "not delivered 2 minutes after the broker came back");
    ck_assert_str_eq(status, "ok");
    PHASE("everything delivered");
    ta_resp r;
    ta_request(sock, 0, NULL, "/metrics", NULL, NULL, 0, &r);
    char want[96];
    snprintf(want, sizeof want, "gridmeter_agent_backpressure_total %llu\n",
             (unsigned long long)refused);
    ck_assert_msg(strstr(r.body, want), "want %s in %s", want, r.body);
    ta_resp_free(&r);
    ck_assert_int_eq(ta_agent_stop(pid), 0);
    ta_close();

    tn_msg *m;
    size_t got = tn_consume(brokers, TOPIC, (size_t)accepted, 90000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), accepted);
    ck_assert_uint_eq(max_seq, accepted); /* a refused request used no seq */
    printf("outage: %llu events in Kafka, %llu duplicates (produced again after time-outs)\n",
           (unsigned long long)accepted, (unsigned long long)dups);
    tn_free(m, got);
    tn_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_outage");
    TCase *tc = tcase_create("outage");
    tcase_set_timeout(tc, 400);
    tcase_add_unchecked_fixture(tc, broker_dir, broker_stop);
    tcase_add_test(tc, test_broker_down_accepts_until_full_then_429_and_everything_arrives_after);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
