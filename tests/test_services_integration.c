/* Integration: the real Kafka broker and the real PostgreSQL server that the project starts
 * (scripts/services.sh) are reachable, and carry data both ways; a private pair of them,
 * restarted on other ports with the same data folder, comes back with its data. */
#include "support.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- private services (scripts/services.sh with their own folder and ports) ----
 * The folder is made and the servers are stopped by the parent process (an unchecked
 * fixture): Check ends a forked test at its first failed assertion, without a checked
 * teardown. The log is beside the folder and stays when the test fails. */
static char var_dir[256];
static int pg_port, kafka_port, controller_port;

static int services(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "GRIDMETER_VAR='%s' GRIDMETER_PG_PORT=%d GRIDMETER_KAFKA_PORT=%d"
             " GRIDMETER_KAFKA_CONTROLLER_PORT=%d GRIDMETER_KAFKA_TOPICS=gmtest.ports"
             " GRIDMETER_KAFKA_PARTITIONS=2 bash '%s/scripts/services.sh' %s >> '%s.log' 2>&1",
             var_dir, pg_port, kafka_port, controller_port, GM_SOURCE_DIR, verb, var_dir);
    return system(cmd);
}

static void new_ports(void)
{
    pg_port = gm_test_free_port();
    kafka_port = gm_test_free_port();
    controller_port = gm_test_free_port();
}

static void make_private_dir(void)
{
    snprintf(var_dir, sizeof var_dir, "/tmp/gmtest-svc-ports-XXXXXX");
    if (!mkdtemp(var_dir) || chmod(var_dir, 0755)) /* as root, PostgreSQL runs as postgres */
        abort();
}

static void stop_private_services(void)
{
    /* a passed test has removed its log already: do not make it again */
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "log='%s.log'; [ -f \"$log\" ] || log=/dev/null; GRIDMETER_VAR='%s' bash "
             "'%s/scripts/services.sh' stop >> \"$log\" 2>&1 && rm -rf '%s'",
             var_dir, var_dir, GM_SOURCE_DIR, var_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not stop the private servers in %s or remove it\n", var_dir);
}

static PGconn *private_pg(void)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=gridmeter", pg_port);
    return gm_test_pg_connect(ci);
}

static rd_kafka_t *private_producer(void)
{
    char err[512], brokers[64];
    snprintf(brokers, sizeof brokers, "127.0.0.1:%d", kafka_port);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    return rk;
}

/* Messages in the topic: the sum of its partitions' high watermarks. */
static int64_t messages_in(rd_kafka_t *rk, const char *topic, int partitions)
{
    int64_t sum = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 30000);
        ck_assert_msg(e == 0, "watermarks of %s/%d: %s", topic, p, rd_kafka_err2str(e));
        sum += hi;
    }
    return sum;
}

START_TEST(test_private_services_restart_on_other_ports_with_their_data)
{
    new_ports();
    ck_assert_msg(services("start") == 0, "start on %d/%d/%d failed (log: %s.log)", pg_port,
                  kafka_port, controller_port, var_dir);
    PGconn *c = private_pg();
    gm_test_pg_exec(c, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')");
    PQfinish(c);
    rd_kafka_t *rk = private_producer();
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("gmtest.ports"), RD_KAFKA_V_VALUE("m", 1),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            0);
    ck_assert_int_eq(rd_kafka_flush(rk, 30000), 0);
    rd_kafka_destroy(rk);
    ck_assert_int_eq(services("stop"), 0);

    /* Same folder, other ports: both servers listen where they are told now, and kept their
     * data (the KRaft cluster id and quorum stay valid). */
    int old_kafka = kafka_port;
    new_ports();
    ck_assert_int_ne(kafka_port, old_kafka);
    ck_assert_msg(services("start") == 0, "restart on %d/%d/%d failed (log: %s.log)", pg_port,
                  kafka_port, controller_port, var_dir);
    c = private_pg();
    char *v = gm_test_pg_value(c, "SELECT string_agg(v, ',') FROM kept");
    ck_assert_str_eq(v, "before");
    free(v);
    PQfinish(c);
    rk = private_producer();
    ck_assert_int_eq(messages_in(rk, "gmtest.ports", 2), 50);
    rd_kafka_destroy(rk);
    ck_assert_int_eq(services("stop"), 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -f '%s.log'", var_dir);
    ck_assert_int_eq(system(cmd), 0);
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
    TCase *priv = tcase_create("private");
    tcase_set_timeout(priv, 240);
    tcase_add_unchecked_fixture(priv, make_private_dir, stop_private_services);
    tcase_add_test(priv, test_private_services_restart_on_other_ports_with_their_data);
    suite_add_tcase(s, priv);
    return gm_test_run(s);
}
