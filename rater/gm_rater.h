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
    const char *brokers;     /* bootstrap servers */
    const char *topic;       /* gridmeter.usage.v1 */
    const char *group_id;    /* consumer group; also the key of gm.consumer_offsets */
    const char *db_conninfo; /* libpq conninfo, "" for the PG* environment */
    const char *rater_id;    /* name in logs and gm.batches (default host:pid) */
    int batch_max;           /* messages per transaction */
    int batch_ms;            /* longest wait to fill a batch */
    /* Pipelining (rater/rater.c, docs/operations.md "Pipelining"): 1 (default) polls, decodes
     * and prices the next batch while a commit thread writes the current one to PostgreSQL;
     * 0 does one after the other. batch_idle_ms (default 5; 0: off), pipelined only: once
     * the commit thread is free, a partial batch waits at most this long for more messages
     * before it is handed over (batch_max and batch_ms still bound it). */
    int pipeline;
    int batch_idle_ms;
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
    /* Sharded (rater/shard.c): this rater writes shard `shard` of the map and is assigned
     * exactly its partitions of topic (and gpu_topic), statically, with no group rebalance.
     * NULL: one PostgreSQL, partitions shared by the consumer group. */
    const struct gm_shard_map *shard_map;
    const char *shard;
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
 * gm.rejected_events, with its parameters. only_pending (replay): replayed ones and those of
 * rule placement left out anyway. */
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

/* ---- Shards (rater/shard.c; docs/scaling.md, "Shards") --------------------------------
 * The shard map file: every partition of each listed topic belongs to exactly one shard (a
 * name and a libpq conninfo). */
typedef struct gm_shard {
    char name[64];
    char conninfo[1024];
} gm_shard;

typedef struct gm_shard_topic {
    char topic[250];
    int partitions;
    int16_t *owner; /* [partitions]: index into shards */
} gm_shard_topic;

typedef struct gm_shard_map {
    gm_shard *shards;
    size_t n_shards;
    gm_shard_topic *topics;
    size_t n_topics;
} gm_shard_map;

/* Parses a map (path only names it in errors); *out is freed with gm_shard_map_free. Every
 * rule broken is GM_EINVAL with the file, line and rule in err. */
int gm_shard_map_parse(const char *text, size_t len, const char *path, gm_shard_map **out,
                       char *err, size_t err_len) GM_MUSTCHECK;
int gm_shard_map_load(const char *path, gm_shard_map **out, char *err, size_t err_len) GM_MUSTCHECK;
void gm_shard_map_free(gm_shard_map *m);
/* The partition of `partitions` that a message keyed by `source` belongs to: Kafka's
 * Java-compatible murmur2 partitioner (librdkafka's rd_kafka_msg_partitioner_murmur2),
 * what gridmeter's node client produces with; -1 when partitions <= 0. The rater checks it
 * in sharded mode (docs/scaling.md, "Placement"). */
int32_t gm_shard_partition_of(const char *source, int partitions);
/* The shard's index, or -1. */
int gm_shard_map_find(const gm_shard_map *m, const char *name);
/* The topic's entry, or NULL when the map does not shard it. */
const gm_shard_topic *gm_shard_map_topic(const gm_shard_map *m, const char *topic);
/* The partitions of t that shard holds, ascending, into out[0..cap); returns how many. */
size_t gm_shard_map_partitions(const gm_shard_topic *t, int shard, int32_t *out, size_t cap);

/* The database's record (gm.shard_identity, gm.shard_topics, gm.shard_partitions) agrees
 * with shard `shard` of the map: 0, or GM_EFENCED naming the difference (GM_EDB when it
 * cannot be read). */
int gm_shard_check_db(PGconn *c, const gm_shard_map *m, int shard, char *err,
                      size_t err_len) GM_MUSTCHECK;
/* Records shard `shard` of the map in a migrated database that is no shard yet (one
 * transaction; refused when the database rated a partition of another shard); on a
 * database that is a shard already, the same as gm_shard_check_db. */
int gm_shard_init_db(PGconn *c, const gm_shard_map *m, int shard, char *err,
                     size_t err_len) GM_MUSTCHECK;
/* Marks the session as writing for `shard` (gridmeter.shard), so that the fence trigger
 * refuses its writes to any other database. */
int gm_shard_session(PGconn *c, const char *shard, char *err, size_t err_len) GM_MUSTCHECK;
/* Sets up (again) the coordinator database c: postgres_fdw servers and user mappings for
 * every shard, each shard's audit views as foreign tables in schema shard_<name>, and in
 * schema audit one view per audit view over all shards, with the same columns (docs/
 * scaling.md, "The coordinator"). log (may be NULL): one line per view. */
int gm_shard_coordinator(PGconn *c, const gm_shard_map *m, FILE *log, char *err,
                         size_t err_len) GM_MUSTCHECK;
/* Brings the billing database c (a migrated gridmeter database of its own: no shard, no
 * rated events) up to the shards: its gm.charges becomes, key by key, the sum of the shards'
 * gm.charges (read through postgres_fdw servers gm_shard_<name>, foreign tables
 * shard_<name>.charges, made again on every run), for hours from from_us on (INT64_MIN:
 * all), in one transaction; only changed keys are written, so gm.charges' triggers keep the
 * rollups and change markers as in one database. Refused (nothing changed) when c is a
 * shard or rated events, holds a charge no shard has, or the shards disagree on a key's
 * currency or site tier. docs/scaling.md, "Invoicing across shards". */
typedef struct gm_shard_billing_result {
    size_t shard_rows; /* keys read from the shards (summed over them) */
    size_t inserted, updated;
} gm_shard_billing_result;
int gm_shard_billing(PGconn *c, const gm_shard_map *m, int64_t from_us,
                     gm_shard_billing_result *res, char *err, size_t err_len) GM_MUSTCHECK;

#endif /* GM_RATER_H */
