/* Integration tests of the node client library against the real Kafka broker: events arrive
 * with the seq and id the library gave them, seq goes on across restarts, what could not be
 * delivered is sent after a restart, a fatal producer error loses nothing; and, on librdkafka's
 * mock cluster, delivery errors are produced again from the spool. */
#include "gm_node.h"
#include "support.h"
#include "test_node_util.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char topic[128], spool[256];

static void setup(void)
{
    gm_test_topic_name("node", topic, sizeof topic);
    gm_test_topic_create(topic, 3);
    tn_tmpdir(spool, sizeof spool, "node-spool");
}

static void teardown(void)
{
    gm_test_topic_delete(topic);
    tn_rmdir(spool);
}

static void flush_ok(gm_node *n)
{
    char err[512];
    int rc = gm_node_flush(n, 30000, err, sizeof err);
    ck_assert_msg(rc == 0, "flush: %s", err);
}

START_TEST(test_recorded_events_arrive_with_assigned_seq_and_id_keyed_by_source)
{
    gm_node *n = tn_open(gm_test_brokers(), topic, spool, "edge/fra1/node-017");
    for (uint64_t i = 1; i <= 2000; i++) {
        uint64_t seq;
        tn_record(n, i, &seq);
        ck_assert_uint_eq(seq, i);
    }
    /* a second source through the same handle (a gateway) */
    gm_node_usage u = {.tenant = "globex",
                       .model = "m1",
                       .source = "edge/ams1/node-002",
                       .site = "ams1",
                       .input_tokens = 1,
                       .output_tokens = 2,
                       .gpu_us = 3};
    uint64_t seq = 0;
    char err[512];
    ck_assert_int_eq(gm_node_record(n, &u, &seq, err, sizeof err), 0);
    ck_assert_uint_eq(seq, 1);
    flush_ok(n);
    gm_node_stats st;
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.recorded, 2001);
    ck_assert_uint_eq(st.acked, 2001);
    ck_assert_uint_eq(st.unacked, 0);
    gm_node_close(n);

    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 2001, 30000, &m);
    ck_assert_uint_eq(got, 2001);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 2001);
    ck_assert_uint_eq(dups, 0);
    ck_assert_uint_eq(max_seq, 2000);
    /* one source's events are in seq order in their partition */
    uint64_t last = 0;
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        ck_assert_int_eq(gm_event_decode(m[i].payload, m[i].len, &ev, err, sizeof err), 0);
        /* keyed by its source, in the partition Kafka's murmur2 gives it over the topic's
         * 3: where a sharded rater expects it (docs/scaling.md, "Placement") */
        ck_assert_str_eq(m[i].key, ev.source);
        ck_assert_int_eq(m[i].partition, rd_kafka_msg_partitioner_murmur2(
                                             NULL, ev.source, strlen(ev.source), 3, NULL, NULL));
        if (strcmp(ev.source, "edge/fra1/node-017"))
            continue;
        ck_assert_uint_eq(ev.seq, last + 1);
        last = ev.seq;
        ck_assert_str_eq(ev.tenant, "acme");
        ck_assert_str_eq(ev.site, "fra1");
        ck_assert_int_eq(ev.output_tokens, 100);
        ck_assert_int_eq(ev.gpu_us, 84200);
        char want_req[32];
        snprintf(want_req, sizeof want_req, "req-%llu", (unsigned long long)ev.seq);
        ck_assert_str_eq(ev.request_id, want_req);
    }
    tn_free(m, got);
}
END_TEST

START_TEST(test_record_refuses_usage_that_breaks_the_contract_and_names_the_field)
{
    gm_node *n = tn_open(gm_test_brokers(), topic, spool, "edge/fra1/node-001");
    char err[512];
    uint64_t seq;
    gm_node_usage u = {.tenant = "acme", .model = "m", .input_tokens = -1};
    ck_assert_int_eq(gm_node_record(n, &u, &seq, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "data.input_tokens") != NULL, "%s", err);
    u.input_tokens = 1;
    u.tenant = NULL;
    ck_assert_int_eq(gm_node_record(n, &u, &seq, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "subject") != NULL, "%s", err);
    u.tenant = "bad tenant";
    ck_assert_int_eq(gm_node_record(n, &u, &seq, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "subject") != NULL, "%s", err);
    u.tenant = "acme";
    ck_assert_int_eq(gm_node_record(n, &u, &seq, err, sizeof err), 0);
    ck_assert_uint_eq(seq, 1); /* refused usage used no seq */
    flush_ok(n);
    gm_node_close(n);
}
END_TEST

/* The partitioner is fixed: another one in kafka_props is refused naming the setting. */
START_TEST(test_another_partitioner_is_refused)
{
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = "127.0.0.1:1";
    c.topic = topic;
    c.source = "edge/fra1/node-006";
    c.site = "fra1";
    c.spool_dir = spool;
    static const char *const props[] = {"partitioner", "consistent_random", NULL};
    c.kafka_props = props;
    gm_node *n = NULL;
    char err[512];
    ck_assert_int_eq(gm_node_open(&c, &n, err, sizeof err), GM_ECONFIG);
    ck_assert_ptr_null(n);
    ck_assert_msg(strstr(err, "kafka setting partitioner=consistent_random: the partitioner is "
                              "fixed to murmur2_random") != NULL,
                  "%s", err);
    static const char *const same[] = {"partitioner", "murmur2_random", NULL};
    c.kafka_props = same;
    c.close_timeout_ms = 100;
    ck_assert_msg(gm_node_open(&c, &n, err, sizeof err) == 0, "%s", err);
    gm_node_close(n);
}
END_TEST

START_TEST(test_seq_continues_across_restarts)
{
    for (int round = 0; round < 3; round++) {
        gm_node *n = tn_open(gm_test_brokers(), topic, spool, "edge/fra1/node-003");
        for (uint64_t i = 1; i <= 100; i++) {
            uint64_t seq;
            tn_record(n, (uint64_t)round * 100 + i, &seq);
            ck_assert_uint_eq(seq, (uint64_t)round * 100 + i);
        }
        gm_node_close(n);
    }
    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 300, 30000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 300);
    ck_assert_uint_eq(max_seq, 300);
    tn_free(m, got);
}
END_TEST

START_TEST(test_events_recorded_while_kafka_is_unreachable_are_sent_after_restart)
{
    /* Nothing listens on port 1: every event stays in the spool. */
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = "127.0.0.1:1";
    c.topic = topic;
    c.source = "edge/fra1/node-004";
    c.site = "fra1";
    c.spool_dir = spool;
    c.close_timeout_ms = 200;
    gm_node *n = NULL;
    char err[512];
    ck_assert_int_eq(gm_node_open(&c, &n, err, sizeof err), 0);
    for (uint64_t i = 1; i <= 500; i++)
        tn_record(n, i, NULL);
    ck_assert_int_eq(gm_node_flush(n, 300, err, sizeof err), GM_EUNAVAIL);
    ck_assert_msg(strstr(err, "500 events") != NULL, "%s", err);
    gm_node_close(n);

    n = tn_open(gm_test_brokers(), topic, spool, "edge/fra1/node-004");
    gm_node_stats st;
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.recovered, 500);
    flush_ok(n);
    gm_node_close(n);
    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 500, 30000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 500);
    ck_assert_uint_eq(max_seq, 500);
    tn_free(m, got);
}
END_TEST

START_TEST(test_fatal_producer_error_rebuilds_the_producer_and_loses_nothing)
{
    gm_node *n = tn_open(gm_test_brokers(), topic, spool, "edge/fra1/node-005");
    for (uint64_t i = 1; i <= 5000; i++)
        tn_record(n, i, NULL);
    ck_assert_int_eq(gm_node__inject_fatal(n), 0);
    for (uint64_t i = 5001; i <= 10000; i++)
        tn_record(n, i, NULL);
    flush_ok(n);
    gm_node_stats st;
    gm_node_stats_get(n, &st);
    ck_assert_uint_ge(st.producer_rebuilds, 1);
    ck_assert_uint_eq(st.unacked, 0);
    gm_node_close(n);
    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 10000, 30000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 10000);
    ck_assert_uint_eq(max_seq, 10000);
    tn_free(m, got);
}
END_TEST

typedef struct {
    gm_node *n;
    int count, base;
} rec_job;

static void *record_thread(void *arg)
{
    rec_job *j = arg;
    for (int i = 0; i < j->count; i++)
        tn_record(j->n, (uint64_t)(j->base + i), NULL);
    return NULL;
}

START_TEST(test_record_from_many_threads_keeps_seq_without_holes)
{
    gm_node *n = tn_open(gm_test_brokers(), topic, spool, "edge/fra1/node-006");
    pthread_t th[4];
    rec_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (rec_job){n, 2500, t * 2500 + 1};
        pthread_create(&th[t], NULL, record_thread, &jobs[t]);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    flush_ok(n);
    gm_node_close(n);
    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 10000, 30000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 10000);
    ck_assert_uint_eq(max_seq, 10000);
    ck_assert_uint_eq(dups, 0);
    tn_free(m, got);
}
END_TEST

/* librdkafka's mock cluster: the broker goes down, messages time out (delivery errors), the
 * spool produces them again, the broker comes back, everything arrives. */
START_TEST(test_delivery_errors_are_produced_again_from_the_spool)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_ptr_nonnull(host);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    ck_assert_ptr_nonnull(mc);
    const char *brokers = rd_kafka_mock_cluster_bootstraps(mc);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, "mock.usage", 2, 1), 0);

    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = brokers;
    c.topic = "mock.usage";
    c.source = "edge/fra1/node-007";
    c.site = "fra1";
    c.spool_dir = spool;
    c.message_timeout_ms = 1000;
    c.close_timeout_ms = 10000;
    gm_node *n = NULL;
    ck_assert_msg(gm_node_open(&c, &n, err, sizeof err) == 0, "%s", err);
    for (uint64_t i = 1; i <= 200; i++)
        tn_record(n, i, NULL);
    flush_ok(n);
    rd_kafka_mock_broker_set_down(mc, 1);
    for (uint64_t i = 201; i <= 400; i++)
        tn_record(n, i, NULL);
    ck_assert_int_eq(gm_node_flush(n, 1500, err, sizeof err), GM_EUNAVAIL);
    /* the 1 s message timeout is checked about once a second: wait for the failures */
    gm_node_stats st;
    int64_t until = gm_mono_us() + 20 * GM_US_PER_SEC;
    do {
        usleep(100 * 1000);
        gm_node_stats_get(n, &st);
    } while (st.delivery_errors == 0 && gm_mono_us() < until);
    ck_assert_uint_gt(st.delivery_errors, 0);
    rd_kafka_mock_broker_set_up(mc, 1);
    flush_ok(n);
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.unacked, 0);
    gm_node_close(n);

    tn_msg *m;
    size_t got = tn_consume(brokers, "mock.usage", 400, 30000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 400);
    ck_assert_uint_eq(max_seq, 400);
    tn_free(m, got);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("node");
    TCase *tc = tcase_create("node");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_recorded_events_arrive_with_assigned_seq_and_id_keyed_by_source);
    tcase_add_test(tc, test_record_refuses_usage_that_breaks_the_contract_and_names_the_field);
    tcase_add_test(tc, test_another_partitioner_is_refused);
    tcase_add_test(tc, test_seq_continues_across_restarts);
    tcase_add_test(tc, test_events_recorded_while_kafka_is_unreachable_are_sent_after_restart);
    tcase_add_test(tc, test_fatal_producer_error_rebuilds_the_producer_and_loses_nothing);
    tcase_add_test(tc, test_record_from_many_threads_keeps_seq_without_holes);
    tcase_add_test(tc, test_delivery_errors_are_produced_again_from_the_spool);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
