/* Test support: throw-away PostgreSQL databases and Kafka topics, and free ports for the private
 * servers some integration tests start. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int gm_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

const char *gm_test_brokers(void)
{
    const char *b = getenv("GRIDMETER_KAFKA_BROKERS");
    ck_assert_msg(b && *b, "GRIDMETER_KAFKA_BROKERS is not set: start the services with "
                           "`scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`");
    return b;
}

PGconn *gm_test_pg_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo ? conninfo : "");
    ck_assert_msg(PQstatus(c) == CONNECTION_OK,
                  "cannot connect to PostgreSQL (%s): %s -- start it with "
                  "`scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`",
                  conninfo ? conninfo : "from PG* environment", PQerrorMessage(c));
    return c;
}

void gm_test_pg_exec(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "SQL failed: %s\n%s",
                  PQerrorMessage(conn), sql);
    PQclear(r);
}

char *gm_test_pg_value(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "SQL failed: %s\n%s", PQerrorMessage(conn),
                  sql);
    char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? gm_xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

static int counter;

int gm_test_free_port(void)
{
    static int given[64];
    static int n_given;
    for (int tries = 0; tries < 100; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                 getsockname(fd, (struct sockaddr *)&a, &len) == 0;
        close(fd);
        ck_assert_msg(ok, "no free port on 127.0.0.1: %s", strerror(errno));
        int port = ntohs(a.sin_port), seen = 0;
        for (int i = 0; i < n_given; i++)
            seen |= given[i] == port;
        if (seen)
            continue;
        if (n_given < (int)(sizeof given / sizeof given[0]))
            given[n_given++] = port;
        return port;
    }
    ck_abort_msg("no new free port on 127.0.0.1 in 100 tries");
    return -1;
}

const char *gm_test_db_create(const char *tag)
{
    static __thread char conninfo[512];
    char name[128];
    snprintf(name, sizeof name, "gmtest_%s_%d_%d", tag, (int)getpid(), ++counter);
    PGconn *c = gm_test_pg_connect("dbname=postgres");
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", name);
    gm_test_pg_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    gm_test_pg_exec(c, sql);
    PQfinish(c);
    snprintf(conninfo, sizeof conninfo, "dbname=%s", name);
    return conninfo;
}

void gm_test_db_drop(const char *conninfo)
{
    const char *name = strstr(conninfo, "dbname=");
    if (!name)
        return;
    PGconn *c = gm_test_pg_connect("dbname=postgres");
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name + 7);
    gm_test_pg_exec(c, sql);
    PQfinish(c);
}

const char *gm_test_topic_name(const char *tag, char *buf, size_t buf_len)
{
    snprintf(buf, buf_len, "gmtest.%s.%d.%d", tag, (int)getpid(), ++counter);
    return buf;
}

static rd_kafka_t *admin_client(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", gm_test_brokers(), err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "rd_kafka_new: %s", err);
    return rk;
}

static void admin_wait(rd_kafka_queue_t *q, rd_kafka_event_type_t want, bool create)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    ck_assert_msg(ev != NULL, "Kafka admin request timed out after 30 s");
    ck_assert_int_eq(rd_kafka_event_type(ev), want);
    size_t n = 0;
    const rd_kafka_topic_result_t **res =
        create ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n)
               : rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR ||
                          (create && e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS),
                      "topic %s: %s", rd_kafka_topic_result_name(res[i]),
                      rd_kafka_topic_result_error_string(res[i]));
    }
    rd_kafka_event_destroy(ev);
}

void gm_test_topic_create(const char *topic, int partitions)
{
    char err[512];
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, err, sizeof err);
    ck_assert_msg(nt != NULL, "NewTopic: %s", err);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    admin_wait(q, RD_KAFKA_EVENT_CREATETOPICS_RESULT, true);
    rd_kafka_NewTopic_destroy(nt);
    /* Wait until metadata shows every partition with a leader. */
    for (int tries = 0; tries < 100; tries++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
        bool ready = false;
        if (rd_kafka_metadata(rk, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            ready = md->topic_cnt == 1 && md->topics[0].err == 0 &&
                    md->topics[0].partition_cnt == partitions;
            for (int p = 0; ready && p < md->topics[0].partition_cnt; p++)
                ready = md->topics[0].partitions[p].leader >= 0;
            rd_kafka_metadata_destroy(md);
        }
        rd_kafka_topic_destroy(t);
        if (ready)
            break;
        usleep(100000);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

void gm_test_topic_delete(const char *topic)
{
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(topic);
    rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
    admin_wait(q, RD_KAFKA_EVENT_DELETETOPICS_RESULT, false);
    rd_kafka_DeleteTopic_destroy(dt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

void gm_test_clock_to_children(void)
{
    if (!gm_clock_is_set())
        return;
    char at[40];
    gm_time_format(gm_now_us(), at, sizeof at);
    setenv("GRIDMETER_NOW", at, 1);
}
