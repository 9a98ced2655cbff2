/* Integration: the rater against the real Kafka broker and the real PostgreSQL server.
 * Each test ends with h_verify(): the ledger equals what was sent, exactly once. */
#include "gm_ledger.h"
#include "rater_harness.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const exit_when_idle[] = {"--exit-idle-ms", "4000", NULL};

START_TEST(test_every_event_rated_once_with_duplicates_and_malformed)
{
    h_env e;
    h_env_open(&e, "rate", 4);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {
        .sources = 40, .events = 200000, .dup_permille = 100, .malformed_permille = 10, .seed = 42};
    h_produce(&e, &t, &x);
    ck_assert_int_gt(x.duplicates, 15000);
    ck_assert_int_gt(x.malformed, 1500);
    pid_t pid = h_rater_start(&e, "r1", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);

    /* Every kind of malformed message names its field and rule. */
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM audit.rejected_events WHERE reason LIKE"
                                  " '%data.input_tokens: must be an integer%'");
    ck_assert_int_gt(atoi(v), 0);
    free(v);
    /* Unknown tenants are priced by the default card and flagged, never rejected. */
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.usage_events WHERE tenant = 'globex'"
                            " AND NOT tenant_unknown");
    ck_assert_str_eq(v, "0");
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.usage_events WHERE tenant = 'acme'"
                            " AND tenant_unknown");
    ck_assert_str_eq(v, "0");
    free(v);
    PQfinish(c);

    /* Running again changes nothing: offsets in PostgreSQL say everything is rated. */
    pid = h_rater_start(&e, "r1-again", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);
    h_env_close(&e);
}
END_TEST

START_TEST(test_kill9_twenty_times_loses_and_doubles_nothing)
{
    h_env e;
    h_env_open(&e, "kill", 4);
    h_expect x;
    memset(&x, 0, sizeof x);
    /* Traffic keeps arriving for ~50 s while raters are killed one after the other. */
    h_traffic t = {.sources = 40,
                   .events = 200000,
                   .dup_permille = 50,
                   .malformed_permille = 5,
                   .seed = 7,
                   .rate = 4000};
    h_producer *prod = h_produce_start(&e, &t, &x);
    /* A short session timeout, so that the group gives a dead rater's partitions to the
     * next one within 2 s (the broker allows it: group.min.session.timeout.ms=1000). */
    static const char *const fast_fail[] = {"--session-timeout-ms", "2000", NULL};
    uint64_t s = 12345;
    for (int k = 0; k < 20; k++) {
        char id[32];
        snprintf(id, sizeof id, "victim-%02d", k);
        pid_t pid = h_rater_start(&e, id, fast_fail);
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        /* long enough to be assigned and commit, then killed in whatever it is doing */
        usleep((useconds_t)(2500000 + (s >> 33) % 1500000));
        kill(pid, SIGKILL);
        ck_assert_int_eq(h_rater_wait(pid), -1);
    }
    h_produce_join(prod);
    int64_t total = x.events + x.duplicates + x.malformed;
    static const char *const last[] = {"--session-timeout-ms", "2000", "--exit-idle-ms", "4000",
                                       NULL};
    pid_t pid = h_rater_start(&e, "survivor", last);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    ck_assert_int_eq(h_wait_accounted(&e, total, 5), total);
    /* Most kills landed in the middle of the work, not in idle time. */
    ck_assert_int_ge(h_raters_that_committed(&e), 10);
    h_verify(&e, &x);
    h_env_close(&e);
}
END_TEST

/* Issue 19: with the pipeline on and small batches, a kill lands while one batch commits and
 * the next is prepared; SIGTERM at such a moment finishes the one and drops the other. Each
 * restart resumes from PostgreSQL's offsets: nothing lost, nothing doubled. */
START_TEST(test_pipelined_kill9_and_sigterm_mid_run)
{
    h_env e;
    h_env_open(&e, "pipekill", 3);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 24,
                   .events = 40000,
                   .dup_permille = 50,
                   .malformed_permille = 5,
                   .seed = 1919,
                   .rate = 4000};
    h_producer *prod = h_produce_start(&e, &t, &x); /* ~10 s of traffic */
    static const char *const piped[] = {
        "--pipeline", "1", "--batch-size", "300", "--batch-idle-ms", "5", "--session-timeout-ms",
        "2000",       NULL};
    uint64_t s = 1919;
    for (int k = 0; k < 8; k++) {
        char id[32];
        snprintf(id, sizeof id, "pipe-%02d", k);
        pid_t pid = h_rater_start(&e, id, piped);
        ck_assert_msg(h_wait_rater_committed(&e, id, 60), "rater %s committed nothing in 60 s", id);
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        usleep((useconds_t)(200000 + (s >> 33) % 800000));
        if (k % 2) {
            kill(pid, SIGTERM); /* finish the commit in flight, drop the prepared batch */
            ck_assert_int_eq(h_rater_wait(pid), 0);
        } else {
            kill(pid, SIGKILL);
            ck_assert_int_eq(h_rater_wait(pid), -1);
        }
    }
    h_produce_join(prod);
    static const char *const last[] = {"--pipeline", "1", "--batch-size", "300", "--exit-idle-ms",
                                       "4000",       NULL};
    pid_t pid = h_rater_start(&e, "pipe-survivor", last);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    int64_t total = x.events + x.duplicates + x.malformed;
    ck_assert_int_eq(h_wait_accounted(&e, total, 5), total);
    ck_assert_int_ge(h_raters_that_committed(&e), 8);
    h_verify(&e, &x);
    h_env_close(&e);
}
END_TEST

START_TEST(test_two_raters_share_partitions_through_kill_and_stop)
{
    h_env e;
    h_env_open(&e, "pair", 6);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 60, .events = 100000, .dup_permille = 50, .seed = 99, .rate = 5000};
    h_producer *prod = h_produce_start(&e, &t, &x); /* ~20 s of traffic */
    static const char *const slow[] = {"--batch-size", "500", NULL};
    pid_t a = h_rater_start(&e, "a", slow);
    pid_t b = h_rater_start(&e, "b", slow);
    /* not a fixed sleep: on a loaded machine a rater can take seconds to get its first batch
     * in (a fixed 2.5 s left "a" without a commit now and then, and the test failed) */
    ck_assert_msg(h_wait_rater_committed(&e, "a", 60), "rater a committed nothing in 60 s");
    kill(a, SIGKILL); /* a dies holding partitions: the group moves them to b */
    ck_assert_int_eq(h_rater_wait(a), -1);
    pid_t c = h_rater_start(&e, "c", slow);
    ck_assert_msg(h_wait_rater_committed(&e, "b", 60), "rater b committed nothing in 60 s");
    usleep(2000000);
    /* b freezes past the session timeout (6 s): its partitions move to c; when b wakes up,
     * any batch it still commits is fenced by the offsets' compare-and-set. */
    kill(b, SIGSTOP);
    usleep(9000000);
    kill(b, SIGCONT);
    usleep(2000000);
    kill(b, SIGTERM);
    ck_assert_int_eq(h_rater_wait(b), 0);
    kill(c, SIGTERM);
    ck_assert_int_eq(h_rater_wait(c), 0);
    h_produce_join(prod);
    ck_assert_int_ge(h_raters_that_committed(&e), 3); /* a, b and c all did work */
    pid_t d = h_rater_start(&e, "d", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(d), 0);
    h_verify(&e, &x);
    h_env_close(&e);
}
END_TEST

START_TEST(test_seq_holes_show_up_in_source_gaps)
{
    h_env e;
    h_env_open(&e, "gaps", 2);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 3, .events = 3000, .seed = 5, .skip_seq_every = 100};
    h_produce(&e, &t, &x);
    pid_t pid = h_rater_start(&e, "g", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    /* Source 0 skipped every 100th seq: each hole is one row, one seq wide. */
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM audit.source_gaps");
    char *holes =
        gm_test_pg_value(c, "SELECT count(*) FROM audit.source_gaps"
                            " WHERE source LIKE '%node-000' AND first_missing = last_missing"
                            " AND first_missing % 100 = 0");
    ck_assert_int_gt(atoi(v), 5);
    ck_assert_str_eq(v, holes);
    free(v);
    free(holes);
    v = gm_test_pg_value(
        c, "SELECT count(*) FROM audit.source_gaps WHERE source NOT LIKE '%node-000'");
    ck_assert_str_eq(v, "0");
    free(v);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

START_TEST(test_roles_rater_cannot_rewrite_ledger_auditor_cannot_write)
{
    h_env e;
    h_env_open(&e, "roles", 1);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 2, .events = 100, .seed = 3};
    h_produce(&e, &t, &x);
    pid_t pid = h_rater_start(&e, "roles", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);

    char ci[400];
    snprintf(ci, sizeof ci, "%s user=gm_rater", e.conninfo);
    PGconn *c = gm_test_pg_connect(ci);
    /* gm.ledger is a view over gm.ledger_rows (sql/0012): both refuse changes. */
    const char *refused[] = {"UPDATE gm.ledger SET input_tokens = 0",
                             "DELETE FROM gm.ledger",
                             "UPDATE gm.ledger_rows SET input_tokens = 0",
                             "DELETE FROM gm.ledger_rows",
                             "TRUNCATE gm.ledger_rows",
                             "UPDATE gm.ledger_names SET name = 'x'",
                             "UPDATE gm.ledger_pricings SET price_input = 0",
                             "UPDATE gm.rejected_events SET reason = ''",
                             "DROP TABLE gm.charges",
                             "UPDATE gm.chain_batches SET rows = 0",
                             "DELETE FROM gm.chain_batches"};
    for (size_t i = 0; i < GM_ARRAY_LEN(refused); i++) {
        PGresult *r = PQexec(c, refused[i]);
        ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR, "gm_rater could run: %s", refused[i]);
        ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
        PQclear(r);
    }
    PGresult *r = PQexec(c, "SELECT count(*) FROM gm.ledger");
    ck_assert(PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);

    snprintf(ci, sizeof ci, "%s user=gm_auditor", e.conninfo);
    c = gm_test_pg_connect(ci);
    char *v = gm_test_pg_value(c, "SHOW default_transaction_read_only");
    ck_assert_str_eq(v, "on");
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.usage_events");
    ck_assert_str_eq(v, "100");
    free(v);
    /* The auditor recomputes the chains in SQL: all sound. */
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.chain_batch_check WHERE digest <>"
                            " digest_recomputed OR NOT link_ok");
    ck_assert_str_eq(v, "0");
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.chain_state_check");
    ck_assert_str_eq(v, "0");
    free(v);
    const char *refused_auditor[] = {
        "SELECT count(*) FROM gm.ledger", /* internal tables: views only */
        "SELECT count(*) FROM gm.ledger_rows", "CREATE TABLE audit.x (a int)",
        "CREATE TEMP TABLE x (a int)",
        "BEGIN READ WRITE; INSERT INTO gm.sources VALUES ('x', 'x', '{}'); COMMIT"};
    for (size_t i = 0; i < GM_ARRAY_LEN(refused_auditor); i++) {
        r = PQexec(c, refused_auditor[i]);
        ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR, "gm_auditor could run: %s",
                      refused_auditor[i]);
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
    }
    /* Every audit view carries its documentation. */
    PQfinish(c);
    c = gm_test_pg_connect(e.conninfo);
    v = gm_test_pg_value(c,
                         "SELECT count(*) FROM pg_views v WHERE schemaname = 'audit'"
                         " AND obj_description(format('%I.%I', v.schemaname, v.viewname)::regclass)"
                         " IS NULL");
    ck_assert_str_eq(v, "0");
    free(v);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

/* Retention deleted messages before they were rated: the rater must not stall on the hole,
 * must say so (log, metric), and the lost events must show in audit.source_gaps: a loss is
 * reported, never silent. */
static void delete_records_below(const h_env *e, int64_t offset)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, err, sizeof err) == 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, e->topic, 0)->offset = offset;
    rd_kafka_DeleteRecords_t *del = rd_kafka_DeleteRecords_new(parts);
    rd_kafka_DeleteRecords(rk, &del, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    ck_assert_ptr_nonnull(ev);
    ck_assert_msg(rd_kafka_event_error(ev) == 0, "DeleteRecords: %s",
                  rd_kafka_event_error_string(ev));
    const rd_kafka_topic_partition_list_t *res =
        rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
    ck_assert_int_eq(res->elems[0].err, 0);
    rd_kafka_event_destroy(ev);
    rd_kafka_DeleteRecords_destroy(del);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

START_TEST(test_retention_gap_is_reported_not_silent)
{
    h_env e;
    h_env_open(&e, "retention", 1);
    h_expect x;
    memset(&x, 0, sizeof x);
    h_traffic t = {.sources = 1, .events = 500, .seed = 21};
    h_produce(&e, &t, &x);
    pid_t pid = h_rater_start(&e, "before", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x); /* offsets stored at 500 */
    /* 500 more from the same node; retention then deletes 300 of them unread. */
    h_traffic t2 = {.sources = 1, .events = 500, .seed = 21, .first_seq = 501};
    h_expect x2;
    memset(&x2, 0, sizeof x2);
    h_produce(&e, &t2, &x2);
    delete_records_below(&e, 800);
    pid = h_rater_start(&e, "after", exit_when_idle);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM gm.ledger");
    ck_assert_str_eq(v, "700");
    free(v);
    v = gm_test_pg_value(c, "SELECT next_offset FROM gm.consumer_offsets");
    ck_assert_str_eq(v, "1000");
    free(v);
    /* The 300 events that never reached the ledger are a reported gap of the node's seqs. */
    v = gm_test_pg_value(c, "SELECT string_agg(first_missing || '-' || last_missing, ',')"
                            " FROM audit.source_gaps");
    ck_assert_str_eq(v, "501-800");
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0");
    ck_assert_str_eq(v, "0");
    free(v);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

/* Regression (issue 15 review): after a contract import the rater priced events with its old
 * book for up to --reload-s (30 s). The import NOTIFYs gm_book and the rater reloads before
 * its next batch: events produced right after the import are priced under the new contract;
 * those rated before keep the old terms (only re-rating changes them). */
START_TEST(test_a_contract_import_takes_effect_for_the_next_batch)
{
    h_env e;
    h_env_open(&e, "bookw", 2);
    h_expect x;
    memset(&x, 0, sizeof x);
    /* the fallback out of the way: only the notification can make the rater reload */
    const char *const args[] = {"--reload-s", "3600", "--exit-idle-ms", "6000", NULL};
    pid_t pid = h_rater_start(&e, "bw1", args);
    h_traffic t1 = {.sources = 20, .events = 400, .seed = 7};
    h_produce(&e, &t1, &x);
    ck_assert_int_ge(h_wait_accounted(&e, 400, 60), 400);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM audit.usage_events WHERE tenant <> 'acme'"
                                  " AND tenant_unknown");
    ck_assert_int_gt(atoi(v), 0); /* no contract yet: the default card, flagged */
    free(v);
    char msg[512], err[1024];
    for (int i = 0; i < H_TENANTS; i++) {
        if (!strcmp(h_tenants[i], "acme"))
            continue;
        char doc[256];
        snprintf(doc, sizeof doc,
                 "{\"tenant\":\"%s\",\"card_id\":\"list-usd\",\"currency\":\"USD\"}", h_tenants[i]);
        ck_assert_msg(gm_ledger_import(c, doc, strlen(doc), msg, sizeof msg, err, sizeof err) == 0,
                      "%s", err);
    }
    h_traffic t2 = {.sources = 20, .events = 400, .seed = 8, .source_base = 100};
    h_produce(&e, &t2, &x);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    h_verify(&e, &x);
    v = gm_test_pg_value(c, "SELECT count(*) FILTER (WHERE tenant_unknown) || '/' || count(*)"
                            " FROM audit.usage_events WHERE source ~ 'node-1[0-9][0-9]$'");
    ck_assert_msg(!strcmp(v, "0/400"), "events after the import priced without it: %s", v);
    free(v);
    /* rated before the import: as they were */
    v = gm_test_pg_value(c, "SELECT count(*) FILTER (WHERE tenant_unknown) > 0 FROM"
                            " audit.usage_events WHERE source ~ 'node-0[0-9][0-9]$'");
    ck_assert_str_eq(v, "t");
    free(v);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rater");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 600);
    /* GM_TEST_ONLY=substring runs the matching tests only (for debugging). */
    const char *only = getenv("GM_TEST_ONLY");
#define ADD(t)                                                                                     \
    if (!only || strstr(#t, only))                                                                 \
    tcase_add_test(tc, t)
    ADD(test_every_event_rated_once_with_duplicates_and_malformed);
    ADD(test_kill9_twenty_times_loses_and_doubles_nothing);
    ADD(test_pipelined_kill9_and_sigterm_mid_run);
    ADD(test_two_raters_share_partitions_through_kill_and_stop);
    ADD(test_seq_holes_show_up_in_source_gaps);
    ADD(test_roles_rater_cannot_rewrite_ledger_auditor_cannot_write);
    ADD(test_retention_gap_is_reported_not_silent);
    ADD(test_a_contract_import_takes_effect_for_the_next_batch);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
