/* Broker outage against a PRIVATE Kafka broker (127.0.0.1, on free ports picked at start-up;
 * started and stopped here with scripts/services.sh, never the shared one): the broker is stopped
 * for 10 s while events are recorded. record() keeps succeeding until the spool bound, then refuses
 * with GM_EFULL (back-pressure, nothing recorded); after the broker is back everything recorded
 * arrives, and the seqs have no holes. */
#include "gm_node.h"
#include "support.h"
#include "test_node_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOPIC "gridmeter.usage.v1"

static char var_dir[256];
static int port, controller_port;
static char brokers[64];

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
    snprintf(var_dir, sizeof var_dir, "/tmp/gmtest-outage-kafka-XXXXXX");
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

START_TEST(test_broker_down_10s_record_succeeds_until_the_bound_and_nothing_is_lost)
{
    char spool[256];
    tn_tmpdir(spool, sizeof spool, "outage-spool");
    ck_assert_msg(services("start") == 0, "private broker did not start (log: %s/services.log)",
                  var_dir);

    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = brokers;
    c.topic = TOPIC;
    c.source = "edge/fra1/node-outage";
    c.site = "fra1";
    c.spool_dir = spool;
    c.spool_max_bytes = 2u << 20;
    c.segment_bytes = 256u << 10;
    c.close_timeout_ms = 30000;
    gm_node *n = NULL;
    char err[512];
    ck_assert_msg(gm_node_open(&c, &n, err, sizeof err) == 0, "%s", err);

    uint64_t req = 0;
    for (int i = 0; i < 2000; i++)
        tn_record(n, ++req, NULL);
    ck_assert_msg(gm_node_flush(n, 60000, err, sizeof err) == 0, "%s", err);

    ck_assert_int_eq(services("stop"), 0);
    int64_t t_end = gm_mono_us() + 10 * GM_US_PER_SEC;
    uint64_t ok_down = 0, refused = 0, bytes_at_first_refusal = 0;
    while (gm_mono_us() < t_end) {
        char rid[32];
        snprintf(rid, sizeof rid, "req-%llu", (unsigned long long)(req + 1));
        gm_node_usage u = {.tenant = "acme",
                           .model = "llama-3.1-8b-instruct",
                           .request_id = rid,
                           .input_tokens = 10,
                           .output_tokens = 20,
                           .gpu_us = 30};
        int rc = gm_node_record(n, &u, NULL, err, sizeof err);
        if (rc == 0) {
            req++;
            ok_down++;
            ck_assert_msg(refused == 0, "record succeeded after a refusal while still full");
        } else {
            ck_assert_msg(rc == GM_EFULL, "record while the broker is down: %s", err);
            ck_assert_msg(strstr(err, "full") != NULL, "%s", err);
            if (!refused++) {
                gm_node_stats st;
                gm_node_stats_get(n, &st);
                bytes_at_first_refusal = st.spool_bytes;
                printf("outage: spool full after %llu events: %s\n", (unsigned long long)ok_down,
                       err);
            }
        }
        usleep(500);
    }
    /* It took until the bound: refusals began only with the spool (nearly) at its bound
     * (a segment is the unit of allocation). */
    ck_assert_uint_gt(refused, 0);
    ck_assert_uint_gt(ok_down, 3000);
    ck_assert_uint_ge(bytes_at_first_refusal, c.spool_max_bytes - 2 * c.segment_bytes);

    ck_assert_int_eq(services("start"), 0);
    ck_assert_msg(gm_node_flush(n, 90000, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 1000; i++)
        tn_record(n, ++req, NULL);
    ck_assert_msg(gm_node_flush(n, 60000, err, sizeof err) == 0, "%s", err);
    gm_node_stats st;
    gm_node_stats_get(n, &st);
    printf("outage: recorded %llu while down, %llu refused; delivery errors %llu, queue full "
           "%llu\n",
           (unsigned long long)ok_down, (unsigned long long)refused,
           (unsigned long long)st.delivery_errors, (unsigned long long)st.queue_full);
    gm_node_close(n);

    tn_msg *m;
    size_t got = tn_consume(brokers, TOPIC, (size_t)req, 60000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), req);
    ck_assert_uint_eq(max_seq, req); /* a refusal used no seq */
    tn_free(m, got);

    tn_rmdir(spool);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("node_outage");
    TCase *tc = tcase_create("outage");
    tcase_set_timeout(tc, 280);
    tcase_add_unchecked_fixture(tc, broker_dir, broker_stop);
    tcase_add_test(tc, test_broker_down_10s_record_succeeds_until_the_bound_and_nothing_is_lost);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
