/* Chaos test of the node client against the real broker: an emitting process is killed with
 * SIGKILL at random points (while recording, and while starting up and recovering its spool)
 * 20 times during a 100,000-event run. After the last restart every event must be in Kafka
 * at least once, and per source the seqs must have no holes. */
#include "gm_node.h"
#include "support.h"
#include "test_node_util.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define EVENTS 100000
#define KILLS  20
#define SOURCE "edge/fra1/node-chaos"

typedef struct {
    _Atomic uint64_t last_ok; /* highest request number whose record() returned 0 */
    _Atomic int started;      /* the child opened its node */
} shared_state;

static char topic[128], spool[256];

/* The emitting process: records requests start..EVENTS, then flushes. Its exit status says
 * how it ended; it never returns. */
static void child_main(shared_state *sh, uint64_t start)
{
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = gm_test_brokers();
    c.topic = topic;
    c.source = SOURCE;
    c.site = "fra1";
    c.spool_dir = spool;
    c.spool_max_bytes = 256u << 20;
    c.segment_bytes = 1u << 20; /* small segments: kills land in rotation and reclaim too */
    gm_node *n = NULL;
    char err[512];
    if (gm_node_open(&c, &n, err, sizeof err)) {
        fprintf(stderr, "child: open: %s\n", err);
        _exit(2);
    }
    atomic_store(&sh->started, 1);
    for (uint64_t i = start; i <= EVENTS; i++) {
        char req[32];
        snprintf(req, sizeof req, "req-%llu", (unsigned long long)i);
        gm_node_usage u = {.tenant = "acme",
                           .model = "llama-3.1-8b-instruct",
                           .request_id = req,
                           .input_tokens = (int64_t)(i % 977),
                           .output_tokens = (int64_t)(i % 131),
                           .gpu_us = (int64_t)i};
        int rc;
        while ((rc = gm_node_record(n, &u, NULL, err, sizeof err)) == GM_EFULL)
            usleep(1000);
        if (rc) {
            fprintf(stderr, "child: record %llu: %s\n", (unsigned long long)i, err);
            _exit(3);
        }
        atomic_store(&sh->last_ok, i);
    }
    if (gm_node_flush(n, 60000, err, sizeof err)) {
        fprintf(stderr, "child: %s\n", err);
        _exit(4);
    }
    gm_node_close(n);
    _exit(0);
}

static pid_t spawn(shared_state *sh)
{
    uint64_t start = atomic_load(&sh->last_ok) + 1;
    atomic_store(&sh->started, 0);
    fflush(stdout);
    fflush(stderr);
    gm_test_clock_to_children();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        child_main(sh, start);
    return pid;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_kill_9_twenty_times_loses_no_event_and_leaves_no_seq_hole)
{
    gm_test_topic_name("chaos", topic, sizeof topic);
    gm_test_topic_create(topic, 6);
    tn_tmpdir(spool, sizeof spool, "chaos-spool");
    shared_state *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(sh != MAP_FAILED);
    atomic_store(&sh->last_ok, 0);

    unsigned seed = (unsigned)(getenv("GM_CHAOS_SEED") ? strtoul(getenv("GM_CHAOS_SEED"), NULL, 10)
                                                       : (unsigned long)gm_now_us());
    srandom(seed);
    printf("chaos: seed %u (set GM_CHAOS_SEED to replay)\n", seed);
    uint64_t points[KILLS];
    for (int k = 0; k < KILLS; k++)
        points[k] = 1 + (uint64_t)random() % (EVENTS - 1000);
    qsort(points, KILLS, sizeof *points, cmp_u64);

    int64_t t0 = gm_mono_us();
    for (int k = 0; k < KILLS; k++) {
        pid_t pid = spawn(sh);
        int status;
        if (k % 5 == 4) {
            /* every fifth kill: during start-up and spool recovery */
            usleep((useconds_t)(random() % 40000));
        } else {
            /* at a random event, or a little after it */
            while (atomic_load(&sh->last_ok) < points[k]) {
                ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0,
                              "the emitter ended before kill %d (status %d)", k + 1, status);
                usleep(200);
            }
            usleep((useconds_t)(random() % 3000));
        }
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        printf("chaos: kill %2d at request %llu (started: %d)\n", k + 1,
               (unsigned long long)atomic_load(&sh->last_ok), atomic_load(&sh->started));
    }
    pid_t pid = spawn(sh);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the last emitter failed (status %d)", status);
    ck_assert_uint_eq(atomic_load(&sh->last_ok), EVENTS);
    printf("chaos: %d kills and the run took %.1f s\n", KILLS, (gm_mono_us() - t0) / 1e6);

    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, EVENTS, 60000, &m);
    uint64_t dups, max_seq;
    uint64_t distinct = tn_check_seqs(m, got, &dups, &max_seq);
    ck_assert_uint_eq(distinct, max_seq);
    ck_assert_uint_ge(distinct, EVENTS);
    /* every request is there at least once */
    uint8_t *seen = gm_xcalloc(EVENTS + 1, 1);
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        ck_assert_int_eq(gm_event_decode(m[i].payload, m[i].len, &ev, NULL, 0), 0);
        unsigned long long r;
        ck_assert_int_eq(sscanf(ev.request_id, "req-%llu", &r), 1);
        ck_assert(r >= 1 && r <= EVENTS);
        seen[r] = 1;
    }
    for (uint64_t r = 1; r <= EVENTS; r++)
        ck_assert_msg(seen[r], "request %llu never reached Kafka", (unsigned long long)r);
    printf("chaos: %zu messages, %llu distinct seqs (max %llu), %llu duplicates\n", got,
           (unsigned long long)distinct, (unsigned long long)max_seq, (unsigned long long)dups);
    free(seen);
    tn_free(m, got);
    munmap(sh, sizeof *sh);
    gm_test_topic_delete(topic);
    tn_rmdir(spool);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("node_chaos");
    TCase *tc = tcase_create("chaos");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_kill_9_twenty_times_loses_no_event_and_leaves_no_seq_hole);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
