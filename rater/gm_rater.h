/* rater: consumes usage events from Kafka, prices them with the rating engine and writes
 * them to the PostgreSQL ledger exactly once (ledger/batch.c), with Prometheus metrics. */
#ifndef GM_RATER_H
#define GM_RATER_H

#include "gm_common.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>

struct gm_event;

typedef struct gm_rater_config {
    const char *brokers;      /* bootstrap servers */
    const char *topic;        /* gridmeter.usage.v1 */
    const char *group_id;     /* consumer group; also the key of gm.consumer_offsets */
    const char *db_conninfo;  /* libpq conninfo, "" for the PG* environment */
    const char *rater_id;     /* name in logs and gm.batches (default host:pid) */
    int batch_max;            /* messages per transaction */
    int batch_ms;             /* longest wait to fill a batch */
    int session_timeout_ms;   /* Kafka group session timeout */
    const char *metrics_addr; /* "127.0.0.1:9464"; NULL or "" for none */
    int book_reload_s;        /* re-read rate cards and contracts this often */
    int64_t exit_idle_ms;     /* > 0: stop after this long with nothing to do (demo, tests) */
    int64_t max_messages;     /* > 0: stop after committing at least this many (tests) */
    /* Time policy (docs/events.md "Time policy"): an event whose time is more than
     * max_future_s after gm_now_us(), or more than max_age_days before it, is rejected
     * (rule "time"). 0 turns a limit off. Defaults 300 s and 400 days. */
    int64_t max_future_s;
    int64_t max_age_days;
    const char *gpu_topic; /* gridmeter.gpu.v1 windows (rater/gpu.c); NULL or "": none */
} gm_rater_config;

/* The time policy on one event: 0, or GM_EINVAL with the reason (field time, the rule and
 * its limit) in err. now_us is gridmeter's clock for the batch. */
int gm_rater_check_time(const gm_rater_config *cfg, const struct gm_event *ev, int64_t now_us,
                        char *err, size_t err_len) GM_MUSTCHECK;

/* Fills the defaults. */
void gm_rater_config_init(gm_rater_config *cfg);

/* Runs until *stop becomes non-zero (SIGTERM/SIGINT handlers set it), or an exit condition
 * of cfg is met. A batch in flight at stop is finished or abandoned (rolled back) cleanly.
 * Returns 0, or a GM_E… code with the reason in err for a failure it cannot ride out
 * (bad configuration, no rate card). Database and broker outages are ridden out. */
int gm_rater_run(const gm_rater_config *cfg, volatile sig_atomic_t *stop, char *err,
                 size_t err_len) GM_MUSTCHECK;

/* ---- Rejects: `gridmeter rejects list|show|replay` (rater/replay.c) ----------------------*/
typedef struct gm_rejects_filter {
    const char *rule;   /* "time", "rating", … (NULL or "": any) */
    const char *reason; /* a substring of the reason */
    const char *source;
    const char *tenant;
    const char *topic;
    int32_t partition;                /* -1: any */
    int64_t offset;                   /* -1: any */
    int64_t since_us, until_us;       /* received_at in [since, until); 0: open */
    int64_t time_from_us, time_to_us; /* the event's time in [from, to); 0: open */
    int64_t limit;                    /* > 0: at most this many */
    bool include_replayed;            /* list: also those already replayed */
} gm_rejects_filter;

/* The filter as SQL (" WHERE … ORDER BY kafka coordinates [LIMIT n]") over
 * gm.rejected_events, with its parameters. only_pending: replayed ones left out anyway. */
typedef struct gm_rejects_where_t {
    char sql[1024];
    const char *v[12];
    char store[12][200];
    int n;
} gm_rejects_where_t;
int gm_rejects_where(const gm_rejects_filter *f, bool only_pending, gm_rejects_where_t *w,
                     char *err, size_t err_len) GM_MUSTCHECK;

typedef struct gm_replay_result {
    size_t selected;       /* rejects not yet replayed that matched the filter */
    size_t rated;          /* now in the ledger */
    size_t duplicates;     /* the same event was in the ledger already */
    size_t conflicts;      /* another event holds its identity: audit.conflicting_events */
    size_t still_rejected; /* a rule still refuses it (left as it was) */
} gm_replay_result;

/* Re-decodes, re-checks (cfg's time policy, gm_now_us()) and re-prices every matching reject
 * not yet replayed, with the rate cards and contracts stored now, and commits each chunk
 * exactly once (see gm_ledger_writer_set_replay). dry_run: nothing stays, res says what
 * would happen. prog (may be NULL): a progress line; out (may be NULL): one line per reject
 * that is still refused, with the reason. */
int gm_rater_replay(PGconn *c, const gm_rater_config *cfg, const gm_rejects_filter *f, bool dry_run,
                    FILE *prog, FILE *out, gm_replay_result *res, char *err,
                    size_t err_len) GM_MUSTCHECK;

#endif /* GM_RATER_H */
