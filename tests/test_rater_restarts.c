/* Integration: the rater rides out a PostgreSQL restart (fast shutdown) and a Kafka broker
 * restart in the middle of a run, losing and doubling nothing. Each test runs its own
 * private server (scripts/services.sh with its own GRIDMETER_VAR and ports), so that the
 * shared services other tests use are never disturbed. */
#include "rater_harness.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PRIVATE_PG_PORT               "55532"
#define PRIVATE_KAFKA_PORT            "59292"
#define PRIVATE_KAFKA_CONTROLLER_PORT "59293"

static char var_dir[256];

static void services(const char *verb, const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "GRIDMETER_VAR='%s' GRIDMETER_PG_PORT=" PRIVATE_PG_PORT
             " GRIDMETER_KAFKA_PORT=" PRIVATE_KAFKA_PORT
             " GRIDMETER_KAFKA_CONTROLLER_PORT=" PRIVATE_KAFKA_CONTROLLER_PORT
             " GRIDMETER_KAFKA_TOPICS=gridmeter.usage.v1 bash '%s/scripts/services.sh' %s %s"
             " >> '%s.log' 2>&1",
             var_dir, GM_SOURCE_DIR, verb, what, var_dir);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "services.sh %s %s failed (log: %s.log)", verb, what, var_dir);
}

static void private_dir(const char *tag)
{
    snprintf(var_dir, sizeof var_dir, "/tmp/gmtest-%s-%d", tag, (int)getpid());
}

static void cleanup_dir(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", var_dir, var_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", var_dir);
}

START_TEST(test_postgres_fast_restart_mid_run)
{
    private_dir("pg");
    services("start", "pg");
    setenv("PGHOST", "127.0.0.1", 1);
    setenv("PGPORT", PRIVATE_PG_PORT, 1);
    setenv("PGUSER", "postgres", 1);
    h_env e;
    h_env_open(&e, "pgrestart", 4);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {
        .sources = 30, .events = 100000, .dup_permille = 50, .malformed_permille = 5, .seed = 11};
    h_produce(&e, &t, &x);
    static const char *const args[] = {"--exit-idle-ms", "5000", "--batch-size", "1000", NULL};
    pid_t pid = h_rater_start(&e, "pg", args);
    usleep(2000000);
    services("restart", "pg"); /* fast shutdown: open transactions are cut */
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);
    h_env_close(&e);
    services("stop", "pg");
    cleanup_dir();
}
END_TEST

START_TEST(test_broker_restart_mid_run)
{
    private_dir("kafka");
    services("start", "kafka");
    setenv("GRIDMETER_KAFKA_BROKERS", "127.0.0.1:" PRIVATE_KAFKA_PORT, 1);
    h_env e;
    h_env_open(&e, "kafkarestart", 4);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 30, .events = 60000, .dup_permille = 50, .seed = 13};
    h_produce(&e, &t, &x);
    static const char *const args[] = {"--exit-idle-ms", "20000", "--batch-size", "1000", NULL};
    pid_t pid = h_rater_start(&e, "kafka", args);
    usleep(1500000);
    services("restart", "kafka");
    /* More traffic after the restart: the rater must pick it up too. */
    h_traffic t2 = {.sources = 30,
                    .events = 40000,
                    .seed = 17,
                    .source_base = 1000,
                    .start_us = INT64_C(1795820400000000)};
    h_produce(&e, &t2, &x);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);
    h_env_close(&e);
    services("stop", "kafka");
    cleanup_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rater_restarts");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    const char *only = getenv("GM_TEST_ONLY");
    if (!only || strstr("test_postgres_fast_restart_mid_run", only))
        tcase_add_test(tc, test_postgres_fast_restart_mid_run);
    if (!only || strstr("test_broker_restart_mid_run", only))
        tcase_add_test(tc, test_broker_restart_mid_run);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
