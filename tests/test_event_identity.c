/* Integration (issue 12, "nothing vanishes silently"): event identity and conflicting
 * re-sends, a node that lost its state, the time policy, replay of rejects and poison
 * messages, against the real Kafka broker and PostgreSQL, checked through the audit views
 * (docs/events.md "Identity", "Time policy"; docs/auditors.md; docs/operations.md "Rejects"). */
#include "gm_ledger.h"
#include "rater_harness.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const exit_when_idle[] = {"--exit-idle-ms", "3000", NULL};

/* The rater's clock in these tests: events are dated around it, never around today. */
#define NOW "2026-11-28T12:00:00Z"

typedef struct ev_spec {
    const char *source, *id;
    int seq;
    const char *time;
    const char *tenant;
    long input_tokens;
    const char *request_id;
} ev_spec;

static void produce(const h_env *e, const ev_spec *evs, size_t n)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    for (size_t i = 0; i < n; i++) {
        const ev_spec *s = &evs[i];
        char msg[1024];
        int len = snprintf(msg, sizeof msg,
                           "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                           "\"source\":\"%s\",\"id\":\"%s\",\"time\":\"%s\",\"subject\":\"%s\","
                           "\"data\":{\"seq\":%d,\"site\":\"fra1\",\"model\":"
                           "\"llama-3.1-70b-instruct\",\"request_id\":\"%s\","
                           "\"input_tokens\":%ld,\"cached_tokens\":0,\"output_tokens\":10,"
                           "\"gpu_us\":0}}",
                           s->source, s->id, s->time ? s->time : "2026-11-28T10:00:00Z",
                           s->tenant ? s->tenant : "acme", s->seq,
                           s->request_id ? s->request_id : "", s->input_tokens);
        rd_kafka_resp_err_t rc = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(e->topic), RD_KAFKA_V_KEY(s->source, strlen(s->source)),
            RD_KAFKA_V_VALUE(msg, (size_t)len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        ck_assert_msg(rc == 0, "produce: %s", rd_kafka_err2str(rc));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);
}

/* Pins this process's clock at NOW: the raters it starts read it (gm_test_clock_to_children),
 * also when the suite runs on a moved clock (scripts/test.sh --at). */
static void pin_clock(void)
{
    int64_t at;
    char err[200];
    ck_assert_msg(gm_time_parse(NOW, strlen(NOW), &at, err, sizeof err) == 0, "%s", err);
    gm_clock_set_us(at);
}

/* Runs one rater on the env until it is idle, on the tests' clock. */
static void rate(const h_env *e, const char *id, const char *const *extra)
{
    const char *argv[8];
    size_t n = 0;
    for (size_t i = 0; exit_when_idle[i]; i++)
        argv[n++] = exit_when_idle[i];
    for (size_t i = 0; extra && extra[i] && n < 7; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pin_clock();
    pid_t pid = h_rater_start(e, id, argv);
    ck_assert_int_eq(h_rater_wait(pid), 0);
}

static char *q(const h_env *e, const char *sql)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    char *v = gm_test_pg_value(c, sql);
    PQfinish(c);
    return v ? v : strdup("");
}

#define ASSERT_Q(e, sql, want)                                                                     \
    do {                                                                                           \
        char *got_ = q(e, sql);                                                                    \
        ck_assert_msg(!strcmp(got_, want), "%s\n  got  %s\n  want %s", sql, got_, want);           \
        free(got_);                                                                                \
    } while (0)

/* Tamper evidence over what the rater wrote: every digest recomputes (C verifier and the
 * auditor's SQL), and the batches counted `conflicts` conflicting messages apart from the
 * duplicates. */
static void assert_chain_sound(const h_env *e, int conflicts)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    gm_chain_verify_opts vo = {0};
    gm_chain_report rep;
    char err[512];
    ck_assert_msg(gm_chain_verify(c, &vo, &rep, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    char *v = gm_test_pg_value(c, "SELECT sum(conflicts) || ' ' || sum(conflicts_found) || ' ' ||"
                                  " count(*) FILTER (WHERE digest <> digest_recomputed)"
                                  " FROM audit.chain_batch_check");
    char want[64];
    snprintf(want, sizeof want, "%d %d 0", conflicts, conflicts);
    ck_assert_str_eq(v, want);
    free(v);
    PQfinish(c);
}

/* Finding 1: a re-imaged node (state wiped) starts again at seq 1 with new ids. Main kept
 * a1, a2, a3, b4 and counted b1..b3 as duplicates, in no audit view. */
START_TEST(test_node_restarting_at_seq_1_with_new_ids_is_a_visible_conflict)
{
    h_env e;
    h_env_open(&e, "idnode", 1);
    const char *S = "edge/fra1/reimaged";
    ev_spec first[] = {
        {S, "a1", 1, 0, 0, 100, 0}, {S, "a2", 2, 0, 0, 100, 0}, {S, "a3", 3, 0, 0, 100, 0}};
    produce(&e, first, 3);
    rate(&e, "r1", NULL);
    ev_spec again[] = {{S, "b1", 1, 0, 0, 200, 0},
                       {S, "b2", 2, 0, 0, 200, 0},
                       {S, "b3", 3, 0, 0, 200, 0},
                       {S, "b4", 4, 0, 0, 200, 0}};
    produce(&e, again, 4);
    /* this rater stays up with its /metrics until the test has read the counters */
    char addr[64], url[128];
    snprintf(addr, sizeof addr, "--metrics=127.0.0.1:%d", gm_test_free_port());
    snprintf(url, sizeof url, "curl -sf http://%s/metrics", addr + strlen("--metrics="));
    const char *const live[] = {addr, NULL};
    pin_clock();
    pid_t pid = h_rater_start(&e, "r2", live);
    ck_assert_int_eq(h_wait_accounted(&e, 7, 60), 7);
    FILE *m = popen(url, "r");
    ck_assert_ptr_nonnull(m);
    char line[256];
    int conflict = -1, duplicate = -1, accepted = -1;
    while (fgets(line, sizeof line, m)) {
        sscanf(line, "gridmeter_rater_messages_total{outcome=\"conflict\"} %d", &conflict);
        sscanf(line, "gridmeter_rater_messages_total{outcome=\"duplicate\"} %d", &duplicate);
        sscanf(line, "gridmeter_rater_messages_total{outcome=\"accepted\"} %d", &accepted);
    }
    ck_assert_int_eq(pclose(m), 0);
    kill(pid, SIGTERM);
    ck_assert_int_eq(h_rater_wait(pid), 0);
    ck_assert_int_eq(conflict, 3);
    ck_assert_int_eq(duplicate, 0);
    ck_assert_int_eq(accepted, 1);
    ASSERT_Q(&e, "SELECT string_agg(id, ',' ORDER BY seq) FROM audit.usage_events", "a1,a2,a3,b4");
    ASSERT_Q(&e,
             "SELECT string_agg(id || ':' || kind || ':' || accepted_id || ':' || kafka_offset,"
             " ',' ORDER BY seq) FROM audit.conflicting_events",
             "b1:seq_taken:a1:3,b2:seq_taken:a2:4,b3:seq_taken:a3:5");
    ASSERT_Q(&e,
             "SELECT count(*) FROM audit.conflicting_events WHERE fingerprint ~ '^[0-9a-f]{64}$'"
             " AND accepted_fingerprint ~ '^[0-9a-f]{64}$' AND fingerprint <> accepted_fingerprint"
             " AND reason LIKE '%data.seq: ' || seq || ' belongs to the accepted event"
             " edge/fra1/reimaged#' || accepted_id || ' %'"
             " AND payload LIKE '%\"id\":\"' || id || '\"%'",
             "3");
    ASSERT_Q(&e,
             "SELECT accepted || ' ' || duplicates || ' ' || conflicting || ' ' || rejected || ' '"
             " || missing FROM audit.source_completeness",
             "4 0 3 0 0");
    /* never charged: the charges hold the four accepted events' input tokens */
    ASSERT_Q(&e, "SELECT sum(quantity) FROM audit.usage_hourly WHERE dimension = 'input'", "500");
    ASSERT_Q(&e, "SELECT sum(conflicts) || ' ' || sum(duplicates) FROM gm.batches", "3 0");
    /* what an auditor sees, as gm_auditor */
    char ci[400];
    snprintf(ci, sizeof ci, "%s user=gm_auditor", e.conninfo);
    PGconn *c = gm_test_pg_connect(ci);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM audit.conflicting_events");
    ck_assert_str_eq(v, "3");
    free(v);
    v = gm_test_pg_value(c, "SELECT conflicting FROM audit.source_completeness");
    ck_assert_str_eq(v, "3");
    free(v);
    v = gm_test_pg_value(c, "SELECT obj_description('audit.conflicting_events'::regclass)");
    ck_assert_ptr_nonnull(strstr(v, "never charged"));
    free(v);
    PQfinish(c);
    assert_chain_sound(&e, 3);
    h_env_close(&e);
}
END_TEST

/* Finding 2: the same (source, id, seq) re-sent with input_tokens 999 instead of 100 was
 * dropped as a duplicate without comparison. A byte-identical re-send stays a quiet
 * duplicate, in the same batch and in a later one. */
START_TEST(test_resend_with_other_content_is_a_conflict_identical_resend_a_duplicate)
{
    h_env e;
    h_env_open(&e, "idresend", 1);
    const char *S = "edge/fra1/n2";
    ev_spec first[] = {{S, "e1", 1, 0, 0, 100, 0}, {S, "e1", 1, 0, 0, 100, 0}};
    produce(&e, first, 2); /* one batch: the re-send meets the original in memory */
    rate(&e, "r1", NULL);
    ev_spec later[] = {{S, "e1", 1, 0, 0, 999, 0}, {S, "e1", 1, 0, 0, 100, 0}};
    produce(&e, later, 2); /* a later batch: compared with the ledger row */
    rate(&e, "r2", NULL);
    ASSERT_Q(&e, "SELECT count(*) || ' ' || sum(input_tokens) FROM audit.usage_events", "1 100");
    ASSERT_Q(
        &e,
        "SELECT kind || ' ' || id || ' ' || seq || ' ' || accepted_id || ' ' || accepted_seq"
        " || ' ' || kafka_offset || ' ' || accepted_kafka_offset FROM audit.conflicting_events",
        "content_differs e1 1 e1 1 2 0");
    ASSERT_Q(&e,
             "SELECT count(*) FROM audit.conflicting_events WHERE payload LIKE"
             " '%\"input_tokens\":999%' AND fingerprint <> accepted_fingerprint"
             " AND reason LIKE '%content differs from the accepted event%'",
             "1");
    ASSERT_Q(&e,
             "SELECT accepted || ' ' || duplicates || ' ' || conflicting FROM"
             " audit.source_completeness",
             "1 2 1");
    ASSERT_Q(&e, "SELECT sum(quantity) FROM audit.usage_hourly WHERE dimension = 'input'", "100");
    assert_chain_sound(&e, 1);
    h_env_close(&e);
}
END_TEST

/* A message that breaks the contract in a field other than its identity (here the subject)
 * is kept with the source, id and seq it still carries: its seq arrived, so it is no gap
 * (the review of issue 12 found such rejects stored without them, listed as missing). */
START_TEST(test_a_refused_message_keeps_its_identity_and_is_no_gap)
{
    h_env e;
    h_env_open(&e, "idkeep", 1);
    const char *S = "edge/fra1/n9";
    ev_spec evs[] = {{S, "k1", 1, NULL, NULL, 10, NULL},
                     {S, "k2", 2, NULL, "bad tenant", 10, NULL},
                     {S, "k3", 3, NULL, NULL, 10, NULL}};
    produce(&e, evs, GM_ARRAY_LEN(evs));
    rate(&e, "r1", NULL);
    ASSERT_Q(&e,
             "SELECT concat_ws(':', source, id, seq, coalesce(tenant, '-'), rule)"
             " FROM audit.rejected_events",
             "edge/fra1/n9:k2:2:-:contract");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.source_gaps", "0");
    ASSERT_Q(&e,
             "SELECT concat_ws(' ', accepted, rejected, missing) FROM audit.source_completeness",
             "2 1 0");
    h_env_close(&e);
}
END_TEST

/* Finding 3: an event dated 2030-01-01 was accepted and priced into a 2030 month. More than
 * 300 s ahead of gridmeter's clock (default), or more than --max-age-days behind it (off by
 * default; 400 here), is rejected (rule time). */
START_TEST(test_events_too_far_ahead_or_too_old_are_rejected_with_the_rule)
{
    h_env e;
    h_env_open(&e, "idtime", 1);
    const char *S = "edge/fra1/n3";
    /* The rater's clock starts at NOW and runs on: the margins are its seconds of work. */
    ev_spec evs[] = {
        {S, "t1", 1, "2026-11-28T12:04:30Z", 0, 1, 0}, /* 270 s ahead: accepted */
        {S, "t2", 2, "2026-11-28T12:05:30Z", 0, 1, 0}, /* 330 s ahead: rejected */
        {S, "t3", 3, "2030-01-01T00:00:00Z", 0, 1, 0},
        {S, "t4", 4, "2025-10-24T12:01:00Z", 0, 1, 0}, /* just under 400 days old */
        {S, "t5", 5, "2025-10-24T11:59:00Z", 0, 1, 0}, /* just over: rejected */
        {S, "t6", 6, "2026-11-28T11:00:00Z", 0, 1, 0},
    };
    /* t4 passes the time policy and meets the next rule: no card was valid in 2025 */
    produce(&e, evs, GM_ARRAY_LEN(evs));
    const char *const age[] = {"--max-age-days=400", NULL}; /* the age limit is off by default */
    rate(&e, "r1", age);
    ASSERT_Q(&e,
             "SELECT string_agg(id || ':' || rule, ',' ORDER BY seq) FROM audit.rejected_events",
             "t2:time,t3:time,t4:rating,t5:time");
    ASSERT_Q(&e,
             "SELECT count(*) FROM audit.rejected_events WHERE id = 't3' AND reason LIKE"
             " 'event edge/fra1/n3#t3: time: must be at most 300 s after gridmeter''s clock"
             " (rater.max_future_s=300), got 2030-01-01T00:00:00.000000Z at"
             " 2026-11-28T12:0' || '%'",
             "1");
    ASSERT_Q(&e,
             "SELECT count(*) FROM audit.rejected_events WHERE id = 't5' AND reason LIKE"
             " '%time: must be at most 400 days before gridmeter''s clock"
             " (rater.max_age_days=400), got 2025-10-24T11:59:00.000000Z%'",
             "1");
    ASSERT_Q(&e, "SELECT string_agg(id, ',' ORDER BY seq) FROM audit.usage_events", "t1,t6");
    /* rejected seqs arrived: not gaps */
    ASSERT_Q(&e, "SELECT count(*) FROM audit.source_gaps", "0");
    h_env_close(&e);
}
END_TEST

#define ASSERT_CMD(e, args, want_status, want_text)                                                \
    do {                                                                                           \
        int st_;                                                                                   \
        char *out_ = h_rejects_cmd(e, NOW, args, &st_);                                            \
        ck_assert_msg(st_ == (want_status) && strstr(out_, want_text),                             \
                      "gridmeter rejects %s: status %d, want %d and \"%s\":\n%s", args, st_,       \
                      want_status, want_text, out_);                                               \
        free(out_);                                                                                \
    } while (0)

/* A card for 2025 (the one the rejected event lacked), version 2 of list-usd. */
static const char card_2025[] =
    "{\"card_id\":\"list-usd\",\"version\":2,\"valid_from\":\"2025-01-01T00:00:00Z\","
    "\"valid_until\":\"2026-01-01T00:00:00Z\",\"currency\":\"USD\",\"default_card\":true,"
    "\"unknown_models\":\"default\",\"prices\":{\"default\":{\"input\":{\"per_1m_tokens\":"
    "\"1.00\"},\"cached\":{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"2.00\"},"
    "\"gpu\":{\"per_gpu_hour\":\"3.60\"}}}}";

/* Finding 4: an event no rate card prices was rejected for good, and audit.source_gaps
 * showed its seq as never arrived. Now it is a visible reject, not a gap, and after the card
 * is imported `gridmeter rejects replay` rates it exactly once (twice, or two at once, add
 * nothing). */
START_TEST(test_rejected_for_a_missing_card_is_replayed_exactly_once_after_the_import)
{
    h_env e;
    h_env_open(&e, "idreplay", 1);
    const char *S = "edge/fra1/n4";
    ev_spec evs[] = {{S, "r1", 1, "2025-12-15T10:00:00Z", 0, 1000000, 0},
                     {S, "r2", 2, "2026-11-28T10:00:00Z", 0, 1000000, 0},
                     {S, "r3", 3, "2030-01-01T00:00:00Z", 0, 1000000, 0}};
    produce(&e, evs, 3);
    rate(&e, "r1", NULL);
    ASSERT_Q(&e, "SELECT count(*) FROM audit.source_gaps", "0");
    ASSERT_Q(&e,
             "SELECT accepted || ' ' || rejected || ' ' || missing FROM audit.source_completeness",
             "1 2 0");
    ASSERT_Q(&e,
             "SELECT string_agg(id || ':' || rule || ':' || coalesce(replay_outcome, 'pending'),"
             " ',' ORDER BY seq) FROM audit.rejected_events",
             "r1:rating:pending,r3:time:pending");
    ASSERT_CMD(&e, "list", 0, "2 reject(s) not replayed");
    ASSERT_CMD(&e, "list --rule rating", 0, "1 reject(s) not replayed");
    ASSERT_CMD(&e, "show --source edge/fra1/n4 --offset 0", 0, "\"id\":\"r1\"");
    /* before the fix: still refused, nothing changes */
    ASSERT_CMD(&e, "replay --rule rating", 0,
               "replay: 1 selected, 0 rated, 0 duplicate, 0 conflict, 1 still rejected");
    ASSERT_CMD(&e, "replay --bogus", 2, "bogus");
    ASSERT_CMD(&e, "frobnicate", 2, "expected list, show or replay");

    PGconn *c = gm_test_pg_connect(e.conninfo);
    char msg[256], err[512];
    ck_assert_msg(
        gm_ledger_import(c, card_2025, strlen(card_2025), msg, sizeof msg, err, sizeof err) == 0,
        "%s", err);
    PQfinish(c);
    ASSERT_CMD(&e, "replay --rule rating --dry-run", 0,
               "replay: 1 selected, 1 rated, 0 duplicate, 0 conflict, 0 still rejected (dry run");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.usage_events", "1");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.rejected_events WHERE replayed_at IS NOT NULL", "0");

    /* two replays at once: one rates it, the other finds it done or loses the race */
    char cmd[2][2048];
    FILE *p[2];
    for (int i = 0; i < 2; i++) {
        snprintf(cmd[i], sizeof cmd[i],
                 "GRIDMETER_NOW=%s %s/cli/gridmeter rejects replay --rule rating"
                 " --db='%s user=gm_rater'",
                 NOW, GM_BINARY_DIR, e.conninfo);
        p[i] = popen(cmd[i], "r");
        ck_assert_ptr_nonnull(p[i]);
    }
    int rated = 0;
    for (int i = 0; i < 2; i++) {
        char line[512];
        while (fgets(line, sizeof line, p[i])) {
            int n;
            if (sscanf(line, "replay: %*d selected, %d rated", &n) == 1)
                rated += n;
        }
        ck_assert_int_eq(pclose(p[i]), 0);
    }
    ck_assert_int_eq(rated, 1);
    ASSERT_CMD(&e, "replay --rule rating", 0, "replay: 0 selected, 0 rated");

    ASSERT_Q(&e,
             "SELECT string_agg(id || ':' || kafka_offset || ':' || rate_card_version, ','"
             " ORDER BY seq) FROM audit.usage_events",
             "r1:0:2,r2:1:1");
    ASSERT_Q(&e,
             "SELECT replay_outcome || ' ' || replayed_kafka_partition || '/' ||"
             " replayed_kafka_offset || ' ' || (replayed_at IS NOT NULL) FROM audit.rejected_events"
             " WHERE id = 'r1'",
             "rated 0/0 true");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0", "0");
    ASSERT_Q(&e, "SELECT sum(quantity) FROM audit.usage_hourly WHERE dimension = 'input'",
             "2000000");
    ASSERT_Q(&e,
             "SELECT accepted || ' ' || rejected || ' ' || missing FROM audit.source_completeness",
             "2 1 0");
    /* a limit raised: the event from 2030 is rated once the operator allows it */
    ASSERT_CMD(&e, "replay --rule time", 0, "0 rated, 0 duplicate, 0 conflict, 1 still rejected");
    ASSERT_CMD(&e, "replay --rule time --max-future-s 0", 0, "1 selected, 1 rated");
    ASSERT_Q(&e, "SELECT string_agg(id, ',' ORDER BY seq) FROM audit.usage_events", "r1,r2,r3");
    ASSERT_CMD(&e, "list", 0, "0 reject(s) not replayed");
    ASSERT_CMD(&e, "list --all", 0, "2 reject(s)");
    /* tamper evidence after the replays: the rows they wrote lie in the offset ranges of the
     * batches that rejected them; each replay that rated something has its own chain entry */
    c = gm_test_pg_connect(e.conninfo);
    gm_chain_verify_opts vo = {0};
    gm_chain_report rep;
    ck_assert_msg(gm_chain_verify(c, &vo, &rep, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.replays, 2);
    ck_assert_int_eq(rep.replayed_rows, 2);
    ck_assert_int_eq(rep.rejects, 2);
    PQfinish(c);
    h_env_close(&e);
}
END_TEST

/* Finding 5: a batch that failed for a reason tied to one message (a row PostgreSQL
 * refuses) backed off and retried for ever; the partition stalled. */
START_TEST(test_poison_message_is_isolated_and_the_partition_goes_on)
{
    h_env e;
    h_env_open(&e, "idpoison", 1);
    PGconn *c = gm_test_pg_connect(e.conninfo);
    /* a row PostgreSQL refuses (as a constraint added by an operator would) */
    gm_test_pg_exec(c, "ALTER TABLE gm.ledger_rows ADD CONSTRAINT test_no_poison"
                       " CHECK (request_id <> 'poison')"); /* gm.ledger is a view over it */
    PQfinish(c);
    const char *S = "edge/fra1/n5";
    ev_spec evs[8];
    for (int i = 0; i < 8; i++) {
        static char ids[8][16];
        snprintf(ids[i], sizeof ids[i], "p%d", i + 1);
        evs[i] = (ev_spec){S, ids[i], i + 1, 0, 0, 10, i == 5 ? "poison" : "ok"};
    }
    produce(&e, evs, 8);
    pin_clock();
    pid_t pid = h_rater_start(&e, "r1", exit_when_idle);
    /* On main this never happens: the batch is retried for ever. */
    int64_t got = h_wait_accounted(&e, 8, 60);
    if (got < 8)
        kill(pid, SIGKILL);
    ck_assert_int_eq(h_rater_wait(pid), got < 8 ? -1 : 0);
    ck_assert_int_eq(got, 8);
    ASSERT_Q(&e, "SELECT string_agg(id, ',' ORDER BY seq) FROM audit.usage_events",
             "p1,p2,p3,p4,p5,p7,p8");
    ASSERT_Q(&e,
             "SELECT id || ' ' || rule || ' ' || kafka_offset FROM audit.rejected_events"
             " WHERE reason LIKE '%poison: PostgreSQL refuses this event''s rows%SQLSTATE 23514%'",
             "p6 poison 5");
    ASSERT_Q(&e, "SELECT next_offset FROM gm.consumer_offsets", "8");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.source_gaps", "0");
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event_identity");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_node_restarting_at_seq_1_with_new_ids_is_a_visible_conflict);
    tcase_add_test(tc, test_resend_with_other_content_is_a_conflict_identical_resend_a_duplicate);
    tcase_add_test(tc, test_events_too_far_ahead_or_too_old_are_rejected_with_the_rule);
    tcase_add_test(tc, test_a_refused_message_keeps_its_identity_and_is_no_gap);
    tcase_add_test(tc, test_rejected_for_a_missing_card_is_replayed_exactly_once_after_the_import);
    tcase_add_test(tc, test_poison_message_is_isolated_and_the_partition_goes_on);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
