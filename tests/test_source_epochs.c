/* Integration (issue 12, "node state loss is explicit"): epochs of a source, against the real
 * Kafka broker and PostgreSQL, checked through the audit views (docs/events.md "Epochs",
 * docs/node-client.md "State loss and epochs", docs/auditors.md "Completeness",
 * docs/operations.md "A node that lost its state").
 *
 * The finding: source S sends seq 1..3 with ids a1..a3, then, after its state was lost, seq
 * 1..4 with ids b1..b4. In a new epoch all seven events end in the ledger; the node client
 * either starts that epoch or refuses to start with the documented error. */
#include "gm_ledger.h"
#include "gm_node.h"
#include "rater_harness.h"
#include "test_node_util.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const exit_when_idle[] = {"--exit-idle-ms", "3000", NULL};

#define NOW "2026-11-28T12:00:00Z"
/* a new epoch as a node would start it after NOW (docs/node-client.md: Unix seconds) */
#define E1 1795867200

typedef struct ev_spec {
    const char *id;
    int seq;
    long long epoch; /* < 0: no data.epoch member */
    long input_tokens;
} ev_spec;

static void produce(const h_env *e, const char *source, const ev_spec *evs, size_t n)
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
        char msg[1024], ep[48] = "";
        if (s->epoch >= 0)
            snprintf(ep, sizeof ep, "\"epoch\":%lld,", s->epoch);
        int len = snprintf(msg, sizeof msg,
                           "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                           "\"source\":\"%s\",\"id\":\"%s\",\"time\":\"2026-11-28T10:00:00Z\","
                           "\"subject\":\"acme\",\"data\":{\"seq\":%d,%s\"site\":\"fra1\","
                           "\"model\":\"llama-3.1-70b-instruct\",\"input_tokens\":%ld,"
                           "\"cached_tokens\":0,\"output_tokens\":10,\"gpu_us\":0}}",
                           source, s->id, s->seq, ep, s->input_tokens);
        rd_kafka_resp_err_t rc =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(e->topic), RD_KAFKA_V_KEY(source, strlen(source)),
                              RD_KAFKA_V_VALUE(msg, (size_t)len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        ck_assert_msg(rc == 0, "produce: %s", rd_kafka_err2str(rc));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);
}

static int64_t now_us(void)
{
    int64_t at;
    char err[200];
    ck_assert_msg(gm_time_parse(NOW, strlen(NOW), &at, err, sizeof err) == 0, "%s", err);
    return at;
}

static void pin_clock(void)
{
    gm_clock_set_us(now_us());
}

static void rate(const h_env *e, const char *id)
{
    pin_clock();
    pid_t pid = h_rater_start(e, id, exit_when_idle);
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

/* Every digest recomputes (C verifier and the auditor's SQL) and the state tables agree with
 * the chains per (source, epoch). */
static void assert_chain_sound(const h_env *e)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    gm_chain_verify_opts vo = {0};
    gm_chain_report rep;
    char err[512];
    ck_assert_msg(gm_chain_verify(c, &vo, &rep, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    char *v = gm_test_pg_value(c, "SELECT count(*) FILTER (WHERE digest <> digest_recomputed)"
                                  " FROM audit.chain_batch_check");
    ck_assert_str_eq(v, "0");
    free(v);
    v = gm_test_pg_value(c, "SELECT count(*) FROM audit.chain_state_check");
    ck_assert_str_eq(v, "0");
    free(v);
    PQfinish(c);
}

/* The finding, with the events as a node in a new epoch sends them: b1..b4 carry data.epoch.
 * All seven are accepted and charged; epoch 0 is closed and its tail is reported as a tail,
 * never as a gap; the chain covers the epoch. */
START_TEST(test_state_loss_in_a_new_epoch_keeps_all_seven_events)
{
    h_env e;
    h_env_open(&e, "epoch7", 1);
    const char *S = "edge/fra1/reimaged";
    ev_spec first[] = {{"a1", 1, -1, 100}, {"a2", 2, -1, 100}, {"a3", 3, -1, 100}};
    produce(&e, S, first, 3);
    rate(&e, "r1");
    ev_spec again[] = {
        {"b1", 1, E1, 200}, {"b2", 2, E1, 200}, {"b3", 3, E1, 200}, {"b4", 4, E1, 200}};
    produce(&e, S, again, 4);
    rate(&e, "r2");
    ASSERT_Q(&e,
             "SELECT string_agg(id || '@' || epoch || '/' || seq, ',' ORDER BY epoch, seq)"
             " FROM audit.usage_events",
             "a1@0/1,a2@0/2,a3@0/3,b1@1795867200/1,b2@1795867200/2,b3@1795867200/3,"
             "b4@1795867200/4");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.conflicting_events", "0");
    ASSERT_Q(&e, "SELECT sum(quantity) FROM audit.usage_hourly WHERE dimension = 'input'", "1100");
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', epoch, first_seq, last_seq, accepted, duplicates,"
             " conflicting, rejected, missing, coalesce(next_epoch::text, 'current'),"
             " first_time = '2026-11-28T10:00:00Z' AND last_time = first_time), ','"
             " ORDER BY epoch) FROM audit.source_epochs",
             "0:1:3:3:0:0:0:0:1795867200:t,1795867200:1:4:4:0:0:0:0:current:t");
    /* a new epoch is no gap of the old one; the old epoch's tail is a tail */
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', epoch, kind, first_missing,"
             " coalesce(last_missing::text, 'unknown')), ',') FROM audit.source_gaps",
             "0:tail:4:unknown");
    ASSERT_Q(&e,
             "SELECT string_agg(epoch || ':' || accepted || ':' || missing, ',' ORDER BY epoch)"
             " FROM audit.source_completeness",
             "0:3:0,1795867200:4:0");
    /* the L records of epoch 0 are the records of before (no epoch field); the others end in it */
    ASSERT_Q(&e,
             "SELECT count(*) FILTER (WHERE record LIKE '%:standard\n')"
             " || ' ' || count(*) FILTER (WHERE record LIKE '%:standard10:1795867200\n')"
             " FROM audit.chain_records WHERE kind = 'L'",
             "3 4");
    /* the views an auditor reads say what they are */
    ASSERT_Q(&e, "SELECT obj_description('audit.source_epochs'::regclass) LIKE '%epoch%'", "t");
    ASSERT_Q(
        &e,
        "SELECT count(*) FROM pg_attribute a WHERE a.attrelid = 'audit.source_epochs'::regclass"
        " AND a.attnum > 0 AND col_description(a.attrelid, a.attnum) IS NULL",
        "0");
    char ci[400];
    snprintf(ci, sizeof ci, "%s user=gm_auditor", e.conninfo);
    PGconn *c = gm_test_pg_connect(ci);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM audit.source_epochs");
    ck_assert_str_eq(v, "2");
    free(v);
    PQfinish(c);
    assert_chain_sound(&e);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/examples/verify_chain.py --db '%s' >/dev/null",
             GM_SOURCE_DIR, e.conninfo);
    ck_assert_int_eq(system(cmd), 0);
    /* the chain covers the epoch: a row moved to another epoch (or into one) is found */
    const char *tampers[] = {"UPDATE gm.ledger_rows SET epoch = 7 WHERE event_id = 'b2'",
                             "UPDATE gm.ledger_rows SET epoch = 1795867200 WHERE event_id = 'a3'"};
    for (size_t i = 0; i < GM_ARRAY_LEN(tampers); i++) {
        c = gm_test_pg_connect(e.conninfo);
        gm_test_pg_exec(c, tampers[i]);
        gm_chain_verify_opts vo = {0};
        gm_chain_report rep;
        char err[512];
        ck_assert_msg(gm_chain_verify(c, &vo, &rep, err, sizeof err) == 0, "%s", err);
        ck_assert_msg(rep.problems > 0, "%s: not found", tampers[i]);
        v = gm_test_pg_value(c, "SELECT count(*) FROM audit.chain_batch_check"
                                " WHERE digest <> digest_recomputed");
        ck_assert_str_eq(v, "1");
        free(v);
        v = gm_test_pg_value(c, "SELECT count(*) > 0 FROM audit.chain_state_check"
                                " WHERE object = 'sources'");
        ck_assert_str_eq(v, "t");
        free(v);
        PQfinish(c);
        snprintf(cmd, sizeof cmd, "python3 %s/examples/verify_chain.py --db '%s' >/dev/null",
                 GM_SOURCE_DIR, e.conninfo);
        ck_assert_int_eq(WEXITSTATUS(system(cmd)), 1);
        c = gm_test_pg_connect(e.conninfo);
        gm_test_pg_exec(
            c, i == 0 ? "UPDATE gm.ledger_rows SET epoch = 1795867200 WHERE event_id = 'b2'"
                      : "UPDATE gm.ledger_rows SET epoch = 0 WHERE event_id = 'a3'");
        PQfinish(c);
    }
    assert_chain_sound(&e);
    h_env_close(&e);
}
END_TEST

/* Completeness per epoch: a hole in epoch 0 is a gap of epoch 0, its tail a tail; a seq of the
 * new epoch that arrived and was rejected is no gap; seq 2 of the new epoch is not seq 2 of
 * epoch 0. */
START_TEST(test_gaps_and_rejects_count_per_epoch)
{
    h_env e;
    h_env_open(&e, "epochgap", 1);
    const char *S = "edge/fra1/n-gap";
    ev_spec first[] = {{"a1", 1, -1, 100}, {"a2", 2, 0, 100}, {"a4", 4, -1, 100}};
    produce(&e, S, first, 3);
    ev_spec again[] = {{"b1", 1, E1, 200}, {"b2", 2, E1, -1}, {"b3", 3, E1, 200}};
    produce(&e, S, again, 3);
    rate(&e, "r1");
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', epoch, kind, first_missing,"
             " coalesce(last_missing::text, 'unknown')), ',' ORDER BY epoch, kind)"
             " FROM audit.source_gaps",
             "0:gap:3:3,0:tail:5:unknown");
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', epoch, seq, id), ',') FROM audit.rejected_events",
             "1795867200:2:b2");
    /* gridmeter rejects list names the epoch the reject states (show has it as a field) */
    int st;
    char *out = h_rejects_cmd(&e, NULL, "list", &st);
    ck_assert_msg(st == 0 && strstr(out, "edge/fra1/n-gap#b2 seq 2 epoch 1795867200 "), "%s", out);
    free(out);
    out = h_rejects_cmd(&e, NULL, "show", &st);
    ck_assert_msg(st == 0 && strstr(out, "\nepoch         1795867200\n"), "%s", out);
    free(out);
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', epoch, accepted, rejected, missing), ','"
             " ORDER BY epoch) FROM audit.source_completeness",
             "0:3:0:1,1795867200:2:1:0");
    assert_chain_sound(&e);
    h_env_close(&e);
}
END_TEST

/* The fingerprint covers the epoch: the same source, id, seq and content under another epoch
 * is not a quiet duplicate but a conflict (the id belongs to the accepted event), never
 * charged. */
START_TEST(test_resend_under_another_epoch_is_a_conflict)
{
    h_env e;
    h_env_open(&e, "epochcf", 1);
    const char *S = "edge/fra1/n-cf";
    ev_spec first[] = {{"a1", 1, -1, 100}};
    produce(&e, S, first, 1);
    rate(&e, "r1");
    ev_spec again[] = {{"a1", 1, E1, 100}, {"a1", 1, 0, 100}};
    produce(&e, S, again, 2);
    rate(&e, "r2");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.usage_events", "1");
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', kind, epoch, accepted_epoch, accepted_id,"
             " fingerprint <> accepted_fingerprint), ',') FROM audit.conflicting_events",
             "id_reused:1795867200:0:a1:t");
    ASSERT_Q(&e, "SELECT reason FROM audit.conflicting_events",
             "event edge/fra1/n-cf#a1: id: belongs to the accepted event with data.epoch 0 and "
             "data.seq 1, this message has data.epoch 1795867200 and data.seq 1: kept as a "
             "conflict, not charged");
    /* the explicit "epoch":0 re-send is the same event: a quiet duplicate */
    ASSERT_Q(&e, "SELECT sum(duplicates) || ' ' || sum(conflicts) FROM gm.batches", "1 1");
    ASSERT_Q(&e, "SELECT sum(quantity) FROM audit.usage_hourly WHERE dimension = 'input'", "100");
    /* a conflict under a higher epoch closes nothing (sql/0019): the live epoch 0 has no
     * next epoch and no tail */
    ASSERT_Q(&e,
             "SELECT coalesce(next_epoch::text, 'none') FROM audit.source_epochs WHERE epoch = 0",
             "none");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.source_gaps", "0");
    assert_chain_sound(&e);
    h_env_close(&e);
}
END_TEST

static gm_node *open_node(const h_env *e, const char *spool, gm_node_missing_state ms,
                          bool new_epoch, int *rc, char *err, size_t err_len)
{
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = e->brokers;
    c.topic = e->topic;
    c.source = "edge/fra1/node-re";
    c.site = "fra1";
    c.spool_dir = spool;
    c.missing_state = ms;
    c.new_epoch = new_epoch;
    gm_node *n = NULL;
    *rc = gm_node_open(&c, &n, err, err_len);
    return n;
}

static void record_n(gm_node *n, int count, uint64_t first_seq)
{
    char err[512];
    for (int i = 0; i < count; i++) {
        gm_node_usage u = {.tenant = "acme",
                           .model = "llama-3.1-70b-instruct",
                           .time_us = now_us() - 2 * 3600 * GM_US_PER_SEC,
                           .input_tokens = 100,
                           .output_tokens = 10};
        uint64_t seq = 0;
        ck_assert_msg(gm_node_record(n, &u, &seq, err, sizeof err) == 0, "%s", err);
        ck_assert_uint_eq(seq, first_seq + (uint64_t)i); /* never a seq twice in an epoch */
    }
    ck_assert_msg(gm_node_flush(n, 30000, err, sizeof err) == 0, "%s", err);
}

/* The finding through the node client: a node records three events, its spool is wiped (a
 * re-imaged node). With --require-state it refuses to start, saying what happened and how to
 * start a new epoch; with --new-epoch it starts one (seq from 1, ids that name the epoch); it
 * keeps that epoch over restarts; a second --new-epoch goes one higher. Every event lands. */
START_TEST(test_node_after_spool_loss_refuses_or_starts_a_new_epoch)
{
    h_env e;
    h_env_open(&e, "epochnode", 1);
    pin_clock();
    char spool[256], err[1024];
    tn_tmpdir(spool, sizeof spool, "epoch");
    int rc;
    gm_node *n = open_node(&e, spool, GM_NODE_STATE_FIRST_START, false, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    gm_node_stats st;
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.epoch, 0);
    ck_assert(!st.new_epoch);
    record_n(n, 3, 1);
    gm_node_close(n);
    /* with state, --require-state opens and continues the epoch */
    n = open_node(&e, spool, GM_NODE_STATE_REQUIRE, false, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    gm_node_close(n);

    tn_rmdir(spool); /* re-imaged: the spool is gone */
    n = open_node(&e, spool, GM_NODE_STATE_REQUIRE, false, &rc, err, sizeof err);
    ck_assert_ptr_null(n);
    ck_assert_int_eq(rc, GM_ENOTFOUND);
    ck_assert_msg(strstr(err, "node edge/fra1/node-re: spool ") == err, "%s", err);
    ck_assert_msg(strstr(err, "holds no state (no spool.state, no segment), and --require-state "
                              "is set: the spool was lost or wiped (a re-imaged node?), so this "
                              "node's seqs would start again at 1 and reuse seqs of events it "
                              "sent before. Start a new epoch with --new-epoch (its events are "
                              "data.epoch ") != NULL,
                  "%s", err);
    ck_assert_msg(strstr(err, ", seq 1, 2, ...), or restore the spool") != NULL, "%s", err);

    n = open_node(&e, spool, GM_NODE_STATE_REQUIRE, true, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    gm_node_stats_get(n, &st);
    ck_assert(st.new_epoch);
    uint64_t e1 = st.epoch;
    uint64_t now_s = (uint64_t)(now_us() / GM_US_PER_SEC);
    ck_assert_msg(e1 >= now_s && e1 < now_s + 3600, "epoch %llu", (unsigned long long)e1);
    record_n(n, 4, 1);
    gm_node_close(n);
    /* a restart keeps the epoch and goes on counting: seq 5, not 1 */
    n = open_node(&e, spool, GM_NODE_STATE_REQUIRE, false, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.epoch, e1);
    ck_assert(!st.new_epoch);
    record_n(n, 1, 5);
    gm_node_close(n);
    /* --new-epoch with state: one higher than the last (the clock has not passed it) */
    gm_clock_set_us((int64_t)e1 * GM_US_PER_SEC);
    n = open_node(&e, spool, GM_NODE_STATE_FIRST_START, true, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.epoch, e1 + 1);
    pin_clock();
    record_n(n, 1, 1);
    gm_node_close(n);
    /* a wiped spool with --new-epoch-if-lost starts an epoch on its own */
    tn_rmdir(spool);
    gm_clock_set_us((int64_t)(e1 + 100) * GM_US_PER_SEC);
    n = open_node(&e, spool, GM_NODE_STATE_NEW_EPOCH, false, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    gm_node_stats_get(n, &st);
    ck_assert_uint_eq(st.epoch, e1 + 100);
    ck_assert(st.new_epoch);
    pin_clock();
    record_n(n, 2, 1);
    gm_node_close(n);
    tn_rmdir(spool);

    rate(&e, "r1");
    char want[512], sql[512];
    snprintf(want, sizeof want, "0:1:3:3,%llu:1:5:5,%llu:1:1:1,%llu:1:2:2", (unsigned long long)e1,
             (unsigned long long)e1 + 1, (unsigned long long)e1 + 100);
    ASSERT_Q(&e,
             "SELECT string_agg(concat_ws(':', epoch, first_seq, last_seq, accepted), ','"
             " ORDER BY epoch) FROM audit.source_epochs",
             want);
    ASSERT_Q(&e, "SELECT count(*) FROM audit.conflicting_events", "0");
    ASSERT_Q(&e, "SELECT count(*) FROM audit.rejected_events", "0");
    snprintf(sql, sizeof sql,
             "SELECT string_agg(id, ',' ORDER BY seq) FROM audit.usage_events WHERE epoch = %llu",
             (unsigned long long)e1);
    snprintf(want, sizeof want,
             "node-re-e%llu-000000000001,node-re-e%llu-000000000002,node-re-e%llu-000000000003,"
             "node-re-e%llu-000000000004,node-re-e%llu-000000000005",
             (unsigned long long)e1, (unsigned long long)e1, (unsigned long long)e1,
             (unsigned long long)e1, (unsigned long long)e1);
    ASSERT_Q(&e, sql, want);
    ASSERT_Q(&e, "SELECT string_agg(id, ',' ORDER BY seq) FROM audit.usage_events WHERE epoch = 0",
             "node-re-000000000001,node-re-000000000002,node-re-000000000003");
    snprintf(want, sizeof want, "0:tail:4,%llu:tail:6,%llu:tail:2", (unsigned long long)e1,
             (unsigned long long)e1 + 1);
    ASSERT_Q(&e,
             "SELECT string_agg(epoch || ':' || kind || ':' || first_missing, ',' ORDER BY epoch)"
             " FROM audit.source_gaps",
             want);
    assert_chain_sound(&e);
    h_env_close(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("source_epochs");
    TCase *tc = tcase_create("epochs");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_state_loss_in_a_new_epoch_keeps_all_seven_events);
    tcase_add_test(tc, test_gaps_and_rejects_count_per_epoch);
    tcase_add_test(tc, test_resend_under_another_epoch_is_a_conflict);
    tcase_add_test(tc, test_node_after_spool_loss_refuses_or_starts_a_new_epoch);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
