/* Test support: the servers the integration tests talk to, and throw-away databases and
 * topics so that tests neither see nor leave each other's data. */
#ifndef GM_TEST_SUPPORT_H
#define GM_TEST_SUPPORT_H

#include "gm_common.h"

#include <check.h>
#include <libpq-fe.h>

/* Runs a Check suite and returns the process exit status (0 when all passed). */
int gm_test_run(Suite *s);

/* The brokers from GRIDMETER_KAFKA_BROKERS; an integration test without it fails with a
 * message that says to run scripts/services.sh. */
const char *gm_test_brokers(void);

/* Creates a fresh database named gmtest_<tag>_<pid>_<n> on the server from PGHOST/PGPORT/
 * PGUSER and returns its conninfo (static buffer per call site: copy it). */
const char *gm_test_db_create(const char *tag);
/* Drops the database made by gm_test_db_create. */
void gm_test_db_drop(const char *conninfo);
/* Connects or fails the test. */
PGconn *gm_test_pg_connect(const char *conninfo);
/* Executes SQL that must succeed and returns the first column of the first row as a
 * malloc'd string (NULL when there are no rows). */
char *gm_test_pg_value(PGconn *conn, const char *sql);
void gm_test_pg_exec(PGconn *conn, const char *sql);

/* When this process's clock was moved (GRIDMETER_NOW, gm_clock_set_us), puts its current
 * instant into GRIDMETER_NOW, so that the gridmeter processes the test starts next begin
 * where this process's clock is, not where it began. Call before fork/system/popen. */
void gm_test_clock_to_children(void);

/* A TCP port on 127.0.0.1 that nothing is bound to now, for a server the test starts in
 * another process (a private PostgreSQL cluster or Kafka broker): the kernel's choice for a
 * socket bound to port 0, read back and released. Never the same port twice in a process, so
 * that two runs on one host, or two servers of one test, do not collide. Fails the test when
 * no port can be had. */
int gm_test_free_port(void);

/* A topic name unique to this process: gmtest.<tag>.<pid>.<n>. */
const char *gm_test_topic_name(const char *tag, char *buf, size_t buf_len);
/* Creates the topic with `partitions` partitions (admin API) and waits until it exists. */
void gm_test_topic_create(const char *topic, int partitions);
void gm_test_topic_delete(const char *topic);

#endif
