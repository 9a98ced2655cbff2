/* The `gridmeter agent` process against the real broker (throw-away topics): SIGKILL of the
 * agent again and again during a stream of batches (some kills during start-up and spool
 * recovery); afterwards every event an answer acknowledged is in Kafka, every event in Kafka
 * was recorded once (one seq per request id), and per source the seqs have no hole. And the
 * Python example client (examples/agent_client.py, Debian's python3, standard library only)
 * over the Unix socket. */
#include "gm_node.h"
#include "support.h"
#include "test_agent_util.h"
#include "test_node_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define SRC "edge/fra1/agent-chaos"

static char dir[256], spool[300], sock[300], log_path[300], topic[128];

static void setup(void)
{
    tn_tmpdir(dir, sizeof dir, "agent-kafka");
    snprintf(spool, sizeof spool, "%s/spool", dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    snprintf(log_path, sizeof log_path, "%s/agent.log", dir);
    gm_test_topic_name("agent", topic, sizeof topic);
    gm_test_topic_create(topic, 3);
}

static void teardown(void)
{
    ta_close();
    gm_test_topic_delete(topic);
    tn_rmdir(dir);
}

static pid_t start_agent(bool wait_ready)
{
    const char *args[] = {"--brokers",
                          gm_test_brokers(),
                          "--topic",
                          topic,
                          "--source",
                          SRC,
                          "--site",
                          "fra1",
                          "--spool-dir",
                          spool,
                          "--socket",
                          sock,
                          "--listen",
                          "",
                          "--close-timeout-ms",
                          "20000",
                          "--linger-ms",
                          "2",
                          NULL};
    if (wait_ready)
        return ta_agent_start(args, log_path, sock, 30000);
    /* started and not waited for: the kill lands during start-up or spool recovery */
    gm_test_clock_to_children();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        if (!freopen(log_path, "a", stdout) || !freopen(log_path, "a", stderr))
            _exit(126);
        const char *argv[32] = {GM_GRIDMETER, "agent"};
        size_t n = 2;
        for (size_t i = 0; args[i]; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(GM_GRIDMETER, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static char *batch_body(uint64_t first, int n)
{
    size_t cap = (size_t)n * 220 + 1, len = 0;
    char *b = gm_xmalloc(cap);
    for (int i = 0; i < n; i++)
        len +=
            (size_t)snprintf(b + len, cap - len,
                             "{\"subject\":\"acme\",\"data\":{\"model\":\"llama-3.1-8b-instruct\","
                             "\"request_id\":\"c-%llu\",\"input_tokens\":%d,\"cached_tokens\":0,"
                             "\"output_tokens\":7,\"gpu_us\":9}}\n",
                             (unsigned long long)(first + (uint64_t)i), i + 1);
    return b;
}

/* Kills the agent after_ms after its start, or as soon as the stream has reached request id
 * `at`, whichever comes first: mid-stream however fast or slow the machine is. */
typedef struct killer {
    pid_t pid;
    int after_ms;
    const uint64_t *next; /* the stream's next request id (written by the test thread) */
    uint64_t at;
} killer;

static void *kill_later(void *arg)
{
    killer *k = arg;
    int64_t until = gm_mono_us() + (int64_t)k->after_ms * 1000;
    while (gm_mono_us() < until && __atomic_load_n(k->next, __ATOMIC_RELAXED) < k->at)
        usleep(1000);
    kill(k->pid, SIGKILL);
    return NULL;
}

/* Waits until the agent reports nothing unacknowledged (or the timeout). */
static void wait_delivered(int timeout_ms)
{
    int64_t until = gm_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        ta_resp r;
        ta_request(sock, 0, NULL, "/healthz", NULL, NULL, 0, &r);
        long long unacked = ta_json_int(r.body, "unacked");
        ta_resp_free(&r);
        if (unacked == 0)
            return;
        ck_assert_msg(gm_mono_us() < until, "the agent still holds %lld unacknowledged events",
                      unacked);
        usleep(100 * 1000);
    }
}

START_TEST(test_kill9_during_a_stream_loses_no_acknowledged_event_and_leaves_no_seq_hole)
{
    enum { ROUNDS = 12, BATCH = 50, MAX_REQ = 400000 };
    uint8_t *acked = gm_xcalloc(MAX_REQ, 1);   /* answered as accepted */
    uint8_t *unknown = gm_xcalloc(MAX_REQ, 1); /* sent, no answer: the agent was killed */
    uint64_t next = 0, n_acked = 0, kills_mid_stream = 0, kills_at_start = 0, kills_idle = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < ROUNDS; round++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        if (round % 4 == 3) { /* kill during start-up and spool recovery */
            pid_t pid = start_agent(false);
            usleep((useconds_t)(5 + (rng >> 33) % 150) * 1000);
            ta_agent_kill9(pid);
            kills_at_start++;
            continue;
        }
        pid_t pid = start_agent(true);
        /* each round has its share of request ids; the kill comes within it (at 20 to 90 %
         * of it, or after 0.3 to 1.5 s if the agent is slower) */
        uint64_t share = MAX_REQ / ROUNDS, round_end = next + share;
        killer k = {pid, 300 + (int)((rng >> 33) % 1200), &next,
                    next + share / 5 + (rng >> 20) % (share * 7 / 10)};
        pthread_t th;
        pthread_create(&th, NULL, kill_later, &k);
        for (;;) {
            ck_assert_uint_lt(next + BATCH, MAX_REQ);
            if (next + BATCH > round_end) {
                kills_idle++;
                break;
            }
            char *body = batch_body(next, BATCH);
            ta_resp r;
            ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", body, strlen(body), &r);
            free(body);
            if (r.status == 0) { /* killed: this batch's fate is unknown */
                for (int i = 0; i < BATCH; i++)
                    unknown[next + (uint64_t)i] = 1;
                next += BATCH;
                ta_resp_free(&r);
                break;
            }
            ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
            ck_assert_int_eq(ta_json_int(r.body, "accepted"), BATCH);
            for (int i = 0; i < BATCH; i++)
                acked[next + (uint64_t)i] = 1;
            n_acked += BATCH;
            __atomic_store_n(&next, next + BATCH, __ATOMIC_RELAXED);
            ta_resp_free(&r);
        }
        pthread_join(th, NULL);
        int st;
        waitpid(pid, &st, 0);
        kills_mid_stream++;
    }
    /* a last run delivers what the spool kept */
    pid_t pid = start_agent(true);
    wait_delivered(120000);
    ck_assert_int_eq(ta_agent_stop(pid), 0);
    printf("kill9: %llu requests ids sent, %llu acknowledged, %llu kills (%llu of them after "
           "the round's share was sent), %llu at start\n",
           (unsigned long long)next, (unsigned long long)n_acked,
           (unsigned long long)kills_mid_stream, (unsigned long long)kills_idle,
           (unsigned long long)kills_at_start);
    ck_assert_msg(kills_idle < kills_mid_stream, "no kill came in the middle of a stream");
    ck_assert_uint_gt(n_acked, 1000);

    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, (size_t)n_acked, 120000, &m);
    uint64_t dups, max_seq;
    uint64_t distinct = tn_check_seqs(m, got, &dups, &max_seq); /* no hole per source */
    ck_assert_uint_eq(distinct, max_seq);
    /* each request id once (one seq), every acknowledged one present */
    uint64_t *seq_of = gm_xcalloc(MAX_REQ, sizeof *seq_of);
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        ck_assert(gm_event_decode(m[i].payload, m[i].len, &ev, NULL, 0) == 0);
        ck_assert_str_eq(ev.source, SRC);
        unsigned long long req = strtoull(ev.request_id + 2, NULL, 10);
        ck_assert_uint_lt(req, next);
        ck_assert_msg(acked[req] || unknown[req], "request c-%llu was never sent", req);
        ck_assert_msg(!seq_of[req] || seq_of[req] == ev.seq,
                      "request c-%llu recorded twice (seqs %llu and %llu)", req,
                      (unsigned long long)seq_of[req], (unsigned long long)ev.seq);
        seq_of[req] = ev.seq;
    }
    for (uint64_t q = 0; q < next; q++)
        ck_assert_msg(!acked[q] || seq_of[q], "acknowledged request c-%llu is not in Kafka",
                      (unsigned long long)q);
    printf("kill9: %zu messages read, %llu distinct, %llu duplicates (re-sent after a kill)\n", got,
           (unsigned long long)distinct, (unsigned long long)dups);
    tn_free(m, got);
    free(seq_of);
    free(acked);
    free(unknown);
}
END_TEST

START_TEST(test_the_python_example_client_sends_over_the_unix_socket)
{
    pid_t pid = start_agent(true);
    char events[320], cmd[1200], out[320];
    snprintf(events, sizeof events, "%s/events.jsonl", dir);
    snprintf(out, sizeof out, "%s/client.out", dir);
    FILE *f = fopen(events, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 250; i++)
        fprintf(f,
                "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"request_id\":\"py-%d\","
                "\"input_tokens\":%d,\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":0}}\n",
                i, i);
    fprintf(f, "\n{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":-1,"
               "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":0}}\n");
    fclose(f);
    /* Debian's python3 (the project's scripts install it), standard library only */
    snprintf(cmd, sizeof cmd,
             "PYTHONNOUSERSITE=1 /usr/bin/python3 -I %s/examples/agent_client.py --socket '%s' "
             "--batch 100 < '%s' > '%s' 2>&1",
             GM_SOURCE_DIR, sock, events, out);
    int rc = system(cmd);
    size_t tl;
    char *text = gm_read_file(out, &tl, NULL, 0);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "exit %d: %s", rc, text);
    ck_assert_msg(strstr(text, "{\"accepted\": 250, \"rejected\": 1}"), "%s", text);
    ck_assert_msg(strstr(text, "line 252: data.input_tokens: must be an integer between 0 and "
                               "2^53-1, got -1"),
                  "%s", text);
    free(text);
    wait_delivered(60000);
    ck_assert_int_eq(ta_agent_stop(pid), 0);
    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 250, 60000, &m);
    uint64_t dups, max_seq;
    ck_assert_uint_eq(tn_check_seqs(m, got, &dups, &max_seq), 250);
    ck_assert_uint_eq(max_seq, 250);
    tn_free(m, got);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_kafka");
    TCase *t = tcase_create("kafka");
    tcase_set_timeout(t, 400);
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t,
                   test_kill9_during_a_stream_loses_no_acknowledged_event_and_leaves_no_seq_hole);
    tcase_add_test(t, test_the_python_example_client_sends_over_the_unix_socket);
    suite_add_tcase(s, t);
    return gm_test_run(s);
}
