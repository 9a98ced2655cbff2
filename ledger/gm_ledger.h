/* ledger: gridmeter's PostgreSQL side. Migrations (embedded from sql/), connections, rate
 * card import and the rating book loader, and the exactly-once batch writer of the rater.
 *
 * Connections use libpq's usual environment (PGHOST, PGPORT, PGDATABASE, PGUSER, …) and an
 * optional conninfo string (option --db, env GRIDMETER_DB) that overrides it. */
#ifndef GM_LEDGER_H
#define GM_LEDGER_H

#include "gm_common.h"

#include <libpq-fe.h>

/* ---- Connections ------------------------------------------------------------------------*/
/* Connects (conninfo may be NULL or ""), sets application_name and UTC. NULL on failure
 * with the reason in err. The caller owns the connection (PQfinish). */
PGconn *gm_pg_connect(const char *conninfo, const char *app_name, char *err, size_t err_len);
/* Runs one command that must succeed (COMMAND_OK or TUPLES_OK); GM_EDB with the server's
 * message (and SQLSTATE) in err otherwise. */
int gm_pg_exec(PGconn *c, const char *sql, char *err, size_t err_len) GM_MUSTCHECK;
/* Describes the failure of `r` into err: "SQLSTATE 23505: duplicate key … (context)".
 * Returns GM_EDB, or GM_EUNKNOWN when the connection is gone (the outcome of an in-flight
 * COMMIT is then unknown). */
int gm_pg_fail(PGconn *c, const PGresult *r, const char *what, char *err, size_t err_len);
/* BEGIN [mode] (e.g. "ISOLATION LEVEL REPEATABLE READ") and put `now_us` into the
 * transaction as gridmeter.now, so that every gm.now() stamp of the transaction is the instant
 * the caller decided on. One round trip; on failure nothing is left open. */
int gm_pg_begin(PGconn *c, const char *mode, int64_t now_us, char *err,
                size_t err_len) GM_MUSTCHECK;
/* Like gm_pg_begin, or joins the caller's transaction when one is open (the API runs a POST
 * in one transaction with its idempotency record): then only gridmeter.now is set to now_us,
 * the mode is the caller's, and *own is false. gm_pg_end commits (rc 0) or rolls back a
 * transaction it owns and returns rc or the COMMIT's failure (GM_ECONFLICT for a
 * serialization failure); a joined one is left to its owner (who rolls it back when rc is
 * not 0). */
int gm_pg_begin_or_join(PGconn *c, const char *mode, int64_t now_us, bool *own, char *err,
                        size_t err_len) GM_MUSTCHECK;
int gm_pg_end(PGconn *c, bool own, int rc, const char *what, char *err, size_t err_len);
/* Brings the session's gridmeter.clock_offset_us up to the process clock's offset when it
 * moved since *offset_us (which the caller keeps per connection; gm_pg_connect set it). */
int gm_pg_sync_clock(PGconn *c, int64_t *offset_us, char *err, size_t err_len) GM_MUSTCHECK;
/* Creates the monthly ledger partitions for the `months` months from the one holding
 * `from_us` (gridmeter's clock, not the server's). *created (may be NULL) gets how many were
 * new. GM_EDB / GM_EUNKNOWN with the reason in err. */
int gm_ledger_ensure_partitions(PGconn *c, int64_t from_us, int months, int *created, char *err,
                                size_t err_len) GM_MUSTCHECK;

/* ---- Migrations -------------------------------------------------------------------------*/
typedef struct gm_migration {
    int version;      /* 1, 2, … from the file name NNNN_name.sql */
    const char *name; /* "0001_core" */
    const char *sql;
} gm_migration;

/* The migrations of sql/, embedded at build time, in version order. */
extern const gm_migration gm_ledger_migrations[];
extern const size_t gm_ledger_migrations_count;

typedef enum { GM_MIGRATE_APPLY = 0, GM_MIGRATE_STATUS, GM_MIGRATE_DRY_RUN } gm_migrate_mode;

/* Applies the pending migrations in order, each in its own transaction (a failure leaves
 * nothing of that migration behind), serialized across processes by an advisory lock,
 * and records each in gm_meta.schema_migrations with a SHA-256 checksum. A migration that
 * changed after it was applied is an error. `out` (may be NULL) gets one line per
 * migration. Returns 0, or GM_EDB / GM_ECONFLICT with the reason in err. */
int gm_ledger_migrate(PGconn *c, const gm_migration *list, size_t n, gm_migrate_mode mode,
                      FILE *out, char *err, size_t err_len) GM_MUSTCHECK;

/* ---- Rate cards and contracts -------------------------------------------------------------*/
struct gm_rating_book;
/* Imports one rate card version or tenant contract (JSON; a document with a top-level
 * "tenant" is a contract). Validated by the rating engine and against what is stored; a
 * card version is never rewritten (the same version with other content is GM_ECONFLICT);
 * a changed contract becomes the tenant's next contract version. `msg` says what happened.
 * In its own transaction, or in the caller's when one is open (the caller then commits). */
int gm_ledger_import(PGconn *c, const char *json, size_t len, char *msg, size_t msg_len, char *err,
                     size_t err_len) GM_MUSTCHECK;
/* The same with flags. A contract version with effective_from (docs/rating.md,
 * "Effective-dated contracts") is refused (GM_ECONFLICT, naming the month and the invoice)
 * when its month or a later one of the tenant is invoiced (finalized or void), unless
 * GM_LEDGER_IMPORT_ALLOW_CLOSED; and when an earlier version is in another currency. */
#define GM_LEDGER_IMPORT_ALLOW_CLOSED 1u
int gm_ledger_import_flags(PGconn *c, const char *json, size_t len, unsigned flags, char *msg,
                           size_t msg_len, char *err, size_t err_len) GM_MUSTCHECK;
/* Loads every card version and each tenant's contract versions that can be in force (the
 * newest without effective_from and every later one) into a new book. */
int gm_ledger_load_book(PGconn *c, struct gm_rating_book **out, char *err,
                        size_t err_len) GM_MUSTCHECK;

/* ---- The exactly-once batch writer ---------------------------------------------------------
 * One call, one PostgreSQL transaction: the ledger rows (duplicates removed by each source's
 * accepted seq ranges), the hourly charges derived from the rows actually inserted, the
 * sources' seq ranges (compare-and-set), the rejected messages, and the consumer offsets
 * (compare-and-set: fences a stale consumer). Invariants (checked by tests):
 *   L1 a ledger row exists for an accepted (source, seq) exactly once;
 *   L2 sum of charges == sum of ledger amounts, per tenant, hour, site, model, dimension;
 *   L3 a partition's stored next_offset moves only forward, and only together with the
 *      rows of the messages below it;
 *   L4 every message below next_offset is in the ledger, counted as a duplicate, in
 *      gm.conflicting_events or in gm.rejected_events;
 *   L5 a message is a quiet duplicate only when an accepted event has its source, id and seq
 *      and the same content (gm_event_equal); any other claim on an accepted event's
 *      (source, seq) or (source, id) is a conflict: kept in gm.conflicting_events, never
 *      charged (docs/events.md "Identity"). */
/* input, cached, output, gpu, cache_write, reasoning, request: the order of gm_dim in rating
 * (the last three since sql/0009; output holds output_tokens - reasoning_tokens) */
#define GM_LEDGER_DIMS 7

#define GM_LEDGER_F_UNKNOWN_TENANT 1u
#define GM_LEDGER_F_DEFAULT_MODEL  2u

typedef struct gm_ledger_row {
    const struct gm_event *ev; /* decoded usage event (borrowed) */
    int32_t partition;
    int64_t offset;
    const char *card_id;
    int64_t card_version;
    char currency[4];
    const char *site_tier;                /* may be NULL */
    int64_t unit_price_p[GM_LEDGER_DIMS]; /* 10^-12 per token / per GPU-second */
    gm_i128 amount_e18[GM_LEDGER_DIMS];   /* exact, 10^-18 currency units */
    unsigned flags;                       /* GM_LEDGER_F_… */
    /* The price variant of the row's charges (gm_event_price.variant, borrowed; NULL or "":
     * standard at the base context): a part of the key of gm.charges. */
    const char *variant;
    /* The message as received (borrowed; may be NULL: then a conflict keeps the canonical
     * form of ev as its payload). */
    const void *key;
    size_t key_len;
    const void *payload;
    size_t payload_len;
} gm_ledger_row;

/* SHA-256 of the canonical form (gm_event_encode) of an event: its content fingerprint.
 * GM_EINVAL when the event cannot be encoded. */
int gm_event_fingerprint(const struct gm_event *ev, unsigned char out[32]) GM_MUSTCHECK;

typedef struct gm_ledger_reject {
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *payload;
    size_t payload_len;
    const char *reason;
    /* What could be read of the event (borrowed; NULL when it could not be decoded) and
     * which rule refused it: "contract", "type", "time", "rating", "poison" or "kafka"
     * (NULL: not said). */
    const struct gm_event *ev;
    const char *rule;
} gm_ledger_reject;

/* Where a partition stands: `expected` is the next_offset stored in PostgreSQL as this
 * consumer last read or wrote it (-1: no row yet); `next` is the new value. */
typedef struct gm_ledger_pos {
    int32_t partition;
    int64_t expected;
    int64_t next;
} gm_ledger_pos;

typedef struct gm_ledger_batch {
    const char *group_id;
    const char *topic;
    const char *rater_id;
    gm_ledger_row *rows; /* in Kafka order per partition */
    size_t n_rows;
    gm_ledger_reject *rejects;
    size_t n_rejects;
    gm_ledger_pos *pos;
    size_t n_pos;
} gm_ledger_batch;

typedef struct gm_ledger_result {
    size_t accepted;
    size_t duplicates; /* quiet: the same event again */
    size_t conflicts;  /* another event's identity: gm.conflicting_events */
    size_t rejected;
    size_t charge_rows;
    bool slow_path; /* the unique key caught a duplicate that seq ranges did not */
} gm_ledger_result;

typedef struct gm_ledger_writer gm_ledger_writer;

/* The writer borrows `c` (the caller closes it after gm_ledger_writer_free). */
gm_ledger_writer *gm_ledger_writer_new(PGconn *c);
void gm_ledger_writer_free(gm_ledger_writer *w);
/* Commits one batch. Returns 0; GM_EFENCED when a partition's offset moved under us
 * (another consumer owns it now); GM_ECONFLICT when a source's seq ranges moved under us;
 * GM_EDB on a database error (rolled back); GM_EUNKNOWN when the connection broke and the
 * outcome is unknown. After any error the caller re-reads the offsets and seeks there. */
int gm_ledger_writer_commit(gm_ledger_writer *w, const gm_ledger_batch *b, gm_ledger_result *res,
                            char *err, size_t err_len) GM_MUSTCHECK;
/* Replay mode (`gridmeter rejects replay`): every row of a batch is a stored reject (by its
 * Kafka coordinates, in the batch's topic) being rated again. The commit then also marks
 * each of those rejects (replayed_at, replay_outcome rated / duplicate / conflict, and the
 * Kafka coordinates of the row that accounts for it) in the same transaction, only if it
 * was not marked yet (else GM_ECONFLICT: another replay got there first, nothing written),
 * and records no gm.batches row (the message was counted when it was rejected).
 * dry_run: everything is done and rolled back (the result says what would happen). */
void gm_ledger_writer_set_replay(gm_ledger_writer *w, bool replay, bool dry_run);
/* Forgets cached source state (after a rebalance or an error). */
void gm_ledger_writer_reset(gm_ledger_writer *w);

/* Reads the stored next offsets of `n` partitions (-1 where there is no row). */
int gm_ledger_read_offsets(PGconn *c, const char *group_id, const char *topic,
                           const int32_t *partitions, size_t n, int64_t *next_out, char *err,
                           size_t err_len) GM_MUSTCHECK;

/* ---- Tamper evidence (ledger/chain.c, ledger/chain_verify.c; docs/auditors.md) -----------
 * Every committed batch writes, per Kafka partition, one gm.chain_batches row: SHA-256 over
 * the canonical bytes of what it wrote (scheme 1), chained to the partition's previous
 * batch. Finalized invoices, credit notes and re-rating runs are chained by triggers
 * (sql/0011_chain.sql). */
typedef struct gm_chain gm_chain;
gm_chain *gm_chain_new(void);
void gm_chain_free(gm_chain *c);
/* Computes the digests' record part of `b` (no database access): the writer calls it while
 * the server ingests the ledger COPY, so that the work is off the commit's critical path.
 * gm_chain_forget drops a prepared batch (at the start of every commit attempt). */
int gm_chain_prepare(gm_chain *c, const gm_ledger_batch *b, const unsigned char *dup, char *err,
                     size_t err_len) GM_MUSTCHECK;
void gm_chain_forget(gm_chain *c);
/* In the batch's open transaction, after the offsets' compare-and-set: appends one chain
 * row per partition of `b`; dup[i] is 1 for rows not inserted (duplicates). Uses what
 * gm_chain_prepare computed for this batch and these duplicates, or computes it now. */
int gm_chain_record_batch(gm_chain *c, PGconn *conn, const gm_ledger_batch *b,
                          const unsigned char *dup, char *err, size_t err_len) GM_MUSTCHECK;

/* For benchmarks only (nothing in gridmeter sets it; bench_rater's and bench_chain's before
 * and after): skip the digest. And the time spent in the digest code, for the same: busy in
 * gm_chain_record_batch (on the commit's path), prep in gm_chain_prepare (during the COPY). */
extern bool gm_chain__bench_off;
extern int64_t gm_chain__busy_us, gm_chain__prep_us, gm_chain__batches;

typedef struct gm_chain_verify_opts {
    int64_t from_us, to_us;  /* batches and documents recorded in [from, to); 0: unbounded */
    const char *anchor_path; /* NULL: no anchor file */
    /* Called about twice a second (may be NULL): rows verified so far of about `total`. */
    void (*progress)(void *arg, int64_t done, int64_t total, double elapsed_s);
    void *arg;
} gm_chain_verify_opts;

typedef struct gm_chain_report {
    int64_t batches, chains, rows, rejects, documents, doc_chains, anchors;
    int64_t replays, replayed_rows; /* entries of the chain "replay", the ledger rows they rated */
    int64_t problems;               /* mismatches found (0: everything verified) */
    char first[4096];               /* the first mismatch: what and where, what differs */
    double elapsed_s;
} gm_chain_report;

/* Recomputes every digest from the rows, checks the links, offsets, the state tables and the
 * anchors. Returns 0 with rep->problems (0 = sound), or an error code when verification could
 * not run (then err says why). */
int gm_chain_verify(PGconn *c, const gm_chain_verify_opts *o, gm_chain_report *rep, char *err,
                    size_t err_len) GM_MUSTCHECK;
/* Writes the chain heads as an anchor (docs/auditors.md, "Anchors") to out. */
int gm_chain_anchor(PGconn *c, FILE *out, int64_t now_us, char *err, size_t err_len) GM_MUSTCHECK;

/* ---- Seq ranges (exposed for tests) ------------------------------------------------------*/
typedef struct gm_seqset {
    int64_t (*r)[2]; /* sorted, disjoint, non-adjacent inclusive ranges [lo, hi] */
    size_t n, cap;
} gm_seqset;
bool gm_seqset_contains(const gm_seqset *s, int64_t seq);
/* Adds seq; returns false when it was already there. */
bool gm_seqset_add(gm_seqset *s, int64_t seq);
/* PostgreSQL int8multirange text "{[1,5),[7,8)}" <-> set. */
int gm_seqset_parse(gm_seqset *s, const char *text) GM_MUSTCHECK;
size_t gm_seqset_format(const gm_seqset *s, char **buf, size_t *cap);
void gm_seqset_clear(gm_seqset *s);

#endif /* GM_LEDGER_H */
