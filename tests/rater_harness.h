/* Harness for the rater's integration tests: a migrated throw-away database with the
 * sample rate cards, generated usage traffic with exactly known totals, rater processes
 * to start, kill and stop, and the checks every run must pass. */
#ifndef GM_RATER_HARNESS_H
#define GM_RATER_HARNESS_H

#include "gm_ingest.h"
#include "support.h"

#include <sys/types.h>

#define H_TENANTS 5
#define H_MODELS  4
#define H_SITES   6

/* Exact expected totals of the valid, distinct events sent. */
typedef struct h_expect {
    int64_t qty[H_TENANTS][H_MODELS][H_SITES][4];
    int64_t events;     /* valid, distinct */
    int64_t duplicates; /* re-sends of valid events */
    int64_t malformed;  /* messages that break the contract */
    bool holes;         /* some seqs were skipped on purpose (audit.source_gaps not empty) */
} h_expect;

typedef struct h_env {
    char conninfo[256];
    char topic[128];
    char group[160];
    const char *brokers;
    int partitions;
    /* librdkafka's partitioner for h_produce (NULL: librdkafka's default); sharded raters
     * need "murmur2_random", what gridmeter's node client uses (docs/scaling.md) */
    const char *partitioner;
} h_env;

extern const char *const h_tenants[H_TENANTS];
extern const char *const h_models[H_MODELS];
extern const char *const h_sites[H_SITES];

/* Migrates the database and imports the sample cards (as h_env_open does). */
void h_db_prepare(const char *conninfo);
/* Database (migrated, sample cards imported) and topic for one test. */
void h_env_open(h_env *e, const char *tag, int partitions);
void h_env_close(h_env *e);

typedef struct h_traffic {
    int sources;      /* emitting nodes */
    int64_t events;   /* distinct valid events */
    int dup_permille; /* re-sends per 1000 events */
    int malformed_permille;
    uint64_t seed;
    int64_t start_us; /* event time of the first event; later ones step by step_us */
    int64_t step_us;
    int skip_seq_every; /* > 0: source 0 skips every Nth seq (gaps) */
    int source_base;    /* first node number: traffic of separate calls comes from other nodes */
    int rate;           /* > 0: events per second (paced), else as fast as possible */
    int first_seq;      /* > 0: every node's seq starts here (a later call of one node) */
} h_traffic;

/* Produces the traffic to e->topic (keyed by source) and adds it to *x. */
void h_produce(const h_env *e, const h_traffic *t, h_expect *x);

/* The same in a thread, so that raters can be killed while traffic arrives. */
typedef struct h_producer h_producer;
h_producer *h_produce_start(const h_env *e, const h_traffic *t, h_expect *x);
void h_produce_join(h_producer *p);

/* Distinct rater ids that committed at least one batch. */
int h_raters_that_committed(const h_env *e);
/* Waits up to timeout_s for rater `id` to commit a batch: true when it did. For tests that
 * must act while a rater holds partitions and works, whatever the machine's load. */
bool h_wait_rater_committed(const h_env *e, const char *id, int timeout_s);

/* Starts `gridmeter rater` on the env; extra args (NULL-terminated) are appended. */
pid_t h_rater_start(const h_env *e, const char *id, const char *const *extra);
/* Waits for a rater to exit and returns its exit status (-1 if killed by a signal). */
int h_rater_wait(pid_t pid);
/* Runs `gridmeter rejects ARGS` on the env's database as gm_rater (the role the docs name),
 * with GRIDMETER_NOW=now when now is not NULL; returns its output, stdout and stderr
 * (malloc'd), and puts the exit status in *status. */
char *h_rejects_cmd(const h_env *e, const char *now, const char *args, int *status);
/* Runs a command (argv[0] a path) with the test clock (gm_test_clock_to_children) and
 * GRIDMETER_LOG_LEVEL warn unless set, stdin from in_path (NULL: inherited); its stdout goes to
 * out (NUL-terminated, cut at cap - 1). Returns its exit status (-1 if killed by a signal). */
int h_run(const char *const *argv, const char *in_path, char *out, size_t cap);
/* Fails the test unless the one value of `sql` is `want`. */
void h_expect_value(PGconn *c, const char *sql, const char *want);
/* Produces events (their canonical form, keyed by source) to e->topic, and appends them as
 * JSON lines to `jsonl` when it is not NULL (a quote's input). */
void h_produce_events(const h_env *e, const struct gm_event *evs, size_t n, const char *jsonl);
/* Polls the database until the ledger has `messages` messages accounted for (accepted +
 * duplicates + rejected in gm.batches) or timeout_s passes; returns that count. */
int64_t h_wait_accounted(const h_env *e, int64_t messages, int timeout_s);

/* The checks of every run: ledger == expected per tenant, model, site, dimension; no
 * duplicate (source, seq); charges == ledger; reconciliation difference 0; rejected ==
 * malformed; every partition's stored offset == the high watermark. */
void h_verify(const h_env *e, const h_expect *x);

#endif
