/* Integration: the rater rides out a PostgreSQL restart (fast shutdown) and a Kafka broker
 * restart in the middle of a run, losing and doubling nothing. Each test runs its own
 * private server (scripts/services.sh with its own GRIDMETER_VAR and ports), so that the
 * shared services other tests use are never disturbed. */
#include "rater_harness.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Each test's private servers live in base_dir/<tag>. base_dir is made by the parent process
 * (an unchecked fixture), so that the parent stops whatever a test left running: Check ends a
 * forked test at its first failed assertion, without running a checked teardown. The logs
 * are beside base_dir and stay when a test fails. */
static char base_dir[256], var_dir[320], log_file[340];
/* The private servers' ports: free ones, picked per test (never fixed: two runs on one host
 * would collide), and kept for the test's restarts. */
static char pg_port[16], kafka_port[16], kafka_controller_port[16];
static const char *const tags[] = {"pg", "kafka"};

static void services(const char *verb, const char *what)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "GRIDMETER_VAR='%s' GRIDMETER_PG_PORT=%s GRIDMETER_KAFKA_PORT=%s"
             " GRIDMETER_KAFKA_CONTROLLER_PORT=%s"
             " GRIDMETER_KAFKA_TOPICS=gridmeter.usage.v1 bash '%s/scripts/services.sh' %s %s"
             " >> '%s' 2>&1",
             var_dir, pg_port, kafka_port, kafka_controller_port, GM_SOURCE_DIR, verb, what,
             log_file);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "services.sh %s %s failed (log: %s)", verb, what, log_file);
}

static void private_dir(const char *tag)
{
    snprintf(var_dir, sizeof var_dir, "%s/%s", base_dir, tag);
    snprintf(log_file, sizeof log_file, "%s-%s.log", base_dir, tag);
    snprintf(pg_port, sizeof pg_port, "%d", gm_test_free_port());
    snprintf(kafka_port, sizeof kafka_port, "%d", gm_test_free_port());
    snprintf(kafka_controller_port, sizeof kafka_controller_port, "%d", gm_test_free_port());
}

/* Unchecked setup and teardown, in the parent process. */
static void make_base_dir(void)
{
    snprintf(base_dir, sizeof base_dir, "/tmp/gmtest-restarts-XXXXXX");
    if (!mkdtemp(base_dir) || chmod(base_dir, 0755)) /* as root, PostgreSQL runs as postgres */
        abort();
}

static void stop_private_servers(void)
{
    char cmd[1400];
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        snprintf(cmd, sizeof cmd,
                 "[ ! -d '%s/%s' ] || GRIDMETER_VAR='%s/%s' bash '%s/scripts/services.sh' stop"
                 " >> '%s-%s.log' 2>&1",
                 base_dir, tags[i], base_dir, tags[i], GM_SOURCE_DIR, base_dir, tags[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "could not stop the private servers in %s/%s\n", base_dir, tags[i]);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", base_dir);
}

/* After a passed test: its servers are stopped; remove their folder and log. */
static void cleanup_dir(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", var_dir, log_file);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", var_dir);
}

/* The restart hit the run: batches were committed both before and after it. gm.batches'
 * committed_at is gm.clock_now() on the rater's clock, which starts where this test's clock
 * is (gm_test_clock_to_children), so the two compare also under GRIDMETER_NOW. */
static void assert_work_on_both_sides(const h_env *e, int64_t restarted_us)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE committed_at < to_timestamp(%lld / 1e6)) > 0"
             " AND count(*) FILTER (WHERE committed_at > to_timestamp(%lld / 1e6)) > 0"
             " FROM gm.batches",
             (long long)restarted_us, (long long)restarted_us);
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(!strcmp(v, "t"), "the restart did not fall in the middle of the run");
    free(v);
    PQfinish(c);
}

START_TEST(test_postgres_fast_restart_mid_run)
{
    private_dir("pg");
    services("start", "pg");
    setenv("PGHOST", "127.0.0.1", 1);
    setenv("PGPORT", pg_port, 1);
    setenv("PGUSER", "postgres", 1);
    h_env e;
    h_env_open(&e, "pgrestart", 4);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 30,
                   .events = 100000,
                   .dup_permille = 50,
                   .malformed_permille = 5,
                   .seed = 11,
                   .rate = 10000};
    h_producer *prod = h_produce_start(&e, &t, &x); /* ~10 s of traffic */
    static const char *const args[] = {"--exit-idle-ms", "5000", "--batch-size", "1000", NULL};
    pid_t pid = h_rater_start(&e, "pg", args);
    /* mid-run: after the rater's first batch (not a fixed 3 s: on a loaded machine it may
     * not have committed by then), with the traffic still coming */
    ck_assert_msg(h_wait_rater_committed(&e, "pg", 60), "the rater committed nothing in 60 s");
    usleep(1000000);
    services("restart", "pg"); /* fast shutdown: open transactions are cut */
    int64_t restarted_us = gm_now_us();
    h_produce_join(prod);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    assert_work_on_both_sides(&e, restarted_us);
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
    char brokers[64];
    snprintf(brokers, sizeof brokers, "127.0.0.1:%s", kafka_port);
    setenv("GRIDMETER_KAFKA_BROKERS", brokers, 1);
    h_env e;
    h_env_open(&e, "kafkarestart", 4);
    h_expect x;
    memset(&x, 0, sizeof x);
    /* ~12 s of traffic, so that the broker restart lands in the middle of it; the
     * producer rides out the restart too (idempotent, retries). */
    h_traffic t = {.sources = 30, .events = 60000, .dup_permille = 50, .seed = 13, .rate = 5000};
    h_producer *prod = h_produce_start(&e, &t, &x);
    static const char *const args[] = {"--exit-idle-ms", "20000", "--batch-size", "500", NULL};
    pid_t pid = h_rater_start(&e, "kafka", args);
    /* mid-run: after the rater's first batch (not a fixed 3 s: on a loaded machine it may
     * not have committed by then), with the traffic still coming */
    ck_assert_msg(h_wait_rater_committed(&e, "kafka", 60), "the rater committed nothing in 60 s");
    usleep(1000000);
    services("restart", "kafka");
    int64_t restarted_us = gm_now_us();
    h_produce_join(prod);
    /* More traffic after the restart, from other nodes: the rater must pick it up too. */
    h_traffic t2 = {.sources = 30,
                    .events = 40000,
                    .seed = 17,
                    .source_base = 1000,
                    .start_us = INT64_C(1795820400000000)};
    h_produce(&e, &t2, &x);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    assert_work_on_both_sides(&e, restarted_us);
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
    tcase_add_unchecked_fixture(tc, make_base_dir, stop_private_servers);
    const char *only = getenv("GM_TEST_ONLY");
    if (!only || strstr("test_postgres_fast_restart_mid_run", only))
        tcase_add_test(tc, test_postgres_fast_restart_mid_run);
    if (!only || strstr("test_broker_restart_mid_run", only))
        tcase_add_test(tc, test_broker_restart_mid_run);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
