/* Integration: the real Kafka broker and the real PostgreSQL server that the project starts
 * (scripts/services.sh) are reachable, and carry data both ways. */
#include "support.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#define N_MESSAGES 1000

static int delivered, delivery_errors;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        delivery_errors++;
    else
        delivered++;
}

START_TEST(test_kafka_idempotent_produce_then_consume_round_trips)
{
    char topic[128], err[512];
    gm_test_topic_name("smoke", topic, sizeof topic);
    gm_test_topic_create(topic, 3);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", gm_test_brokers(), err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "compression.codec", "lz4", err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    for (int i = 0; i < N_MESSAGES; i++) {
        char key[32], val[64];
        snprintf(key, sizeof key, "node-%d", i % 7);
        snprintf(val, sizeof val, "{\"seq\":%d}", i);
        rd_kafka_resp_err_t e =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE(val, strlen(val)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        ck_assert_msg(e == 0, "produce: %s", rd_kafka_err2str(e));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    ck_assert_int_eq(delivered, N_MESSAGES);
    ck_assert_int_eq(delivery_errors, 0);
    rd_kafka_destroy(p);

    conf = rd_kafka_conf_new();
    char group[160];
    snprintf(group, sizeof group, "%s.g", topic);
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", gm_test_brokers(), err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) == RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    ck_assert_int_eq(rd_kafka_subscribe(c, subs), 0);
    rd_kafka_topic_partition_list_destroy(subs);

    char *seen = calloc(N_MESSAGES, 1);
    int got = 0, last_seq_per_key[7];
    for (int k = 0; k < 7; k++)
        last_seq_per_key[k] = -1;
    int64_t deadline = gm_mono_us() + 60 * GM_US_PER_SEC;
    while (got < N_MESSAGES && gm_mono_us() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 500);
        if (!m)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        int seq = -1;
        ck_assert_int_eq(sscanf((const char *)m->payload, "{\"seq\":%d}", &seq), 1);
        ck_assert(seq >= 0 && seq < N_MESSAGES);
        ck_assert_msg(!seen[seq], "message %d consumed twice", seq);
        seen[seq] = 1;
        /* Keyed by node: one node's messages stay in order. */
        int key = seq % 7;
        ck_assert_int_gt(seq, last_seq_per_key[key]);
        last_seq_per_key[key] = seq;
        got++;
        rd_kafka_message_destroy(m);
    }
    ck_assert_int_eq(got, N_MESSAGES);
    free(seen);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    gm_test_topic_delete(topic);
}
END_TEST

START_TEST(test_postgres_round_trips_exact_numeric_row)
{
    const char *ci = gm_test_db_create("smoke");
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s", ci);
    PGconn *c = gm_test_pg_connect(conninfo);
    gm_test_pg_exec(c, "CREATE TABLE t (id bigint PRIMARY KEY, amount numeric(38,12) NOT NULL)");
    const char *params[2] = {"9007199254740991", "123456789012.000000000375"};
    PGresult *r = PQexecParams(c, "INSERT INTO t VALUES ($1::bigint, $2::numeric)", 2, NULL, params,
                               NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
    PQclear(r);
    char *v = gm_test_pg_value(c, "SELECT id::text || ' ' || amount::text FROM t");
    ck_assert_str_eq(v, "9007199254740991 123456789012.000000000375");
    free(v);
    /* The server was started with durability on. */
    v = gm_test_pg_value(c, "SHOW fsync");
    ck_assert_str_eq(v, "on");
    free(v);
    v = gm_test_pg_value(c, "SHOW synchronous_commit");
    ck_assert_str_eq(v, "on");
    free(v);
    PQfinish(c);
    gm_test_db_drop(conninfo);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("services");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_kafka_idempotent_produce_then_consume_round_trips);
    tcase_add_test(tc, test_postgres_round_trips_exact_numeric_row);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
