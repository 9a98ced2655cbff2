/* The node client library (gm_node): how an inference server hands each request's usage to
 * gridmeter without ever losing it. docs/node-client.md is the operator's guide.
 *
 * record() assigns the event's `id` and per-source `seq`, appends the canonical JSON to a
 * local append-only spool (a directory of CRC-framed, memory-mapped segments), and returns.
 * A pump thread makes the spool durable (fsync policy), produces what is durable with the
 * idempotent producer (keyed by source, so one source stays in order in one partition),
 * and marks a spooled event acknowledged only on its successful delivery report. Segments
 * whose events are all acknowledged are deleted. After a crash the spool re-sends what Kafka
 * did not acknowledge (duplicates are removed downstream by (source, id)). When the spool is
 * full, record() fails with GM_EFULL: back-pressure, never a silent drop.
 *
 * The lower layer, the spool (gm_spool_*), is public too so that tests and tools can use it
 * alone; so is the load generator's event model (gm_loadgen_*), which `gridmeter loadgen`
 * and the reconciliation tests share.
 */
#ifndef GM_NODE_H
#define GM_NODE_H

#include "gm_common.h"
#include "gm_ingest.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Node client -----------------------------------------------------------------------*/
typedef struct gm_node gm_node;

typedef enum {
    GM_NODE_FSYNC_EVENT = 0, /* record() returns after its event is on disk (slowest) */
    GM_NODE_FSYNC_BATCH,     /* one fsync per produced batch (default) */
    GM_NODE_FSYNC_INTERVAL,  /* one fsync every fsync_interval_ms; events wait for it */
} gm_node_fsync;

#define GM_NODE_DEFAULT_TOPIC "gridmeter.usage.v1"
/* The producer's partitioner, fixed (a kafka_props "partitioner" of another value is
 * refused): messages are keyed by their source, and a sharded rater checks that each is in
 * the partition Kafka's Java-compatible murmur2 gives for it (docs/scaling.md, "Placement"). */
#define GM_NODE_PARTITIONER "murmur2_random"

/* What the node does when its spool holds no state (no state file, no segment: a new
 * directory, or a re-imaged node whose spool was wiped). docs/node-client.md "State loss and
 * epochs". Whatever the choice, a seq is never given twice within one epoch. */
typedef enum {
    GM_NODE_STATE_FIRST_START = 0, /* default: this is the node's first start, epoch 0 */
    GM_NODE_STATE_REQUIRE,         /* --require-state: refuse to open (GM_ENOTFOUND), with the
                                    * reason and how to start a new epoch */
    GM_NODE_STATE_NEW_EPOCH,       /* --new-epoch-if-lost: start a new epoch */
} gm_node_missing_state;

typedef struct gm_node_config {
    const char *brokers;                 /* bootstrap.servers; required */
    const char *topic;                   /* default GM_NODE_DEFAULT_TOPIC */
    const char *source;                  /* CloudEvents source of this node: "edge/fra1/node-017" */
    const char *site;                    /* default data.site: "fra1" */
    const char *spool_dir;               /* created when missing; one process at a time (flock) */
    uint64_t spool_max_bytes;            /* bound on the spool files together; default 1 GiB */
    uint64_t segment_bytes;              /* default min(spool_max_bytes / 8, 64 MiB), >= 64 KiB */
    gm_node_fsync fsync;                 /* default GM_NODE_FSYNC_BATCH */
    int fsync_interval_ms;               /* GM_NODE_FSYNC_INTERVAL only; default 100 */
    int linger_ms;                       /* librdkafka linger.ms; default 5 */
    int message_timeout_ms;              /* librdkafka message.timeout.ms; default 300000; a message
                                          * that times out is produced again from the spool */
    int close_timeout_ms;                /* how long close() tries to deliver; default 5000 */
    const char *const *kafka_props;      /* extra librdkafka settings: "key", "value", …, NULL */
    gm_node_missing_state missing_state; /* a spool without state: see above */
    bool new_epoch; /* --new-epoch: start a new epoch now, state or not (seq from 1) */
} gm_node_config;

/* Fills in the defaults; callers then set brokers, source, site and spool_dir. */
void gm_node_config_init(gm_node_config *cfg);

/* One request's usage. Strings are copied; the struct may be reused after the call. */
typedef struct gm_node_usage {
    const char *tenant;     /* required: CloudEvents subject */
    const char *model;      /* required */
    const char *request_id; /* optional (NULL or "") */
    const char *source;     /* NULL: the node's source (a gateway may record for several) */
    const char *site;       /* NULL: the node's site */
    int64_t time_us;        /* 0: now */
    int64_t input_tokens;   /* uncached prompt tokens */
    int64_t cached_tokens;  /* prompt tokens served from the prompt cache */
    int64_t output_tokens;  /* generated tokens */
    int64_t gpu_us;         /* GPU kernel time of the request */
    /* usage revision 1.1 (docs/events.md "Versions"); 0 / standard: not stated */
    int64_t reasoning_tokens;     /* part of output_tokens (<= output_tokens) */
    int64_t cache_write_tokens;   /* prompt tokens written into the cache (separate) */
    gm_service_tier service_tier; /* GM_SERVICE_TIER_STANDARD, _BATCH or _PRIORITY */
} gm_node_usage;

typedef struct gm_node_stats {
    uint64_t recorded;          /* events appended to the spool by this process */
    uint64_t acked;             /* delivery reports with success */
    uint64_t delivery_errors;   /* delivery reports with an error (each produced again) */
    uint64_t produced;          /* produce calls accepted, resends included */
    uint64_t queue_full;        /* times the producer queue was full (the spool kept them) */
    uint64_t producer_rebuilds; /* producers destroyed and rebuilt after a fatal error */
    uint64_t recovered;         /* unacknowledged events found in the spool at open */
    uint64_t truncated_bytes;   /* bytes cut from torn or corrupt spool tails at open */
    uint64_t unacked;           /* events in the spool that Kafka has not acknowledged */
    uint64_t spool_bytes;       /* size of the spool files now */
    uint64_t spool_max_bytes;
    /* Positions in the spool (lsn: every record, numbered for ever): the last record appended,
     * and the end of the acknowledged prefix (every record at or below it was delivered). A
     * caller that noted last_lsn after recording knows its records are in Kafka once acked_lsn
     * reaches it (the node agent's delivery latency). */
    uint64_t last_lsn;
    uint64_t acked_lsn;
    uint64_t epoch; /* data.epoch of the events this node records */
    bool new_epoch; /* this open started that epoch */
} gm_node_stats;

/* Opens the spool (recovering and truncating a torn tail), starts the producer and the pump
 * thread, and starts re-sending what the spool holds. *out is set on success only.
 * Epochs: the node records its usage events with the spool's epoch (data.epoch, left out at
 * 0). A new epoch (cfg->new_epoch, or a spool without state and GM_NODE_STATE_NEW_EPOCH) is
 * gm_node_next_epoch(previous epoch), durable before the first event of it, and its seqs
 * start at 1; it is logged. A spool without state and GM_NODE_STATE_REQUIRE is GM_ENOTFOUND:
 *   "node edge/fra1/n17: spool DIR holds no state (no spool.state, no segment), and
 *    --require-state is set: the spool was lost or wiped (a re-imaged node?), so this node's
 *    seqs would start again at 1 and reuse seqs of events it sent before. Start a new epoch
 *    with --new-epoch (its events are data.epoch N, seq 1, 2, ...), or restore the spool"
 */
int gm_node_open(const gm_node_config *cfg, gm_node **out, char *err, size_t err_len) GM_MUSTCHECK;

/* Records one request's usage: assigns seq and id ("<last part of source>-<seq, 12
 * digits>"), spools the canonical event, and returns; delivery happens in the background.
 * Thread-safe. Returns 0 (and the seq in *seq_out when not NULL), GM_EINVAL (the usage breaks
 * the event contract: the reason names the field), GM_EFULL (spool bound reached: retry
 * later; nothing was recorded) or GM_EIO. */
int gm_node_record(gm_node *node, const gm_node_usage *u, uint64_t *seq_out, char *err,
                   size_t err_len) GM_MUSTCHECK;

/* Records an event built by the caller (usage or gpu type). Fills in what is empty: source and
 * site (the node's), time (now); always assigns seq and id (overwriting them). On success *ev
 * holds the event as spooled. Same results as gm_node_record. */
int gm_node_record_event(gm_node *node, gm_event *ev, char *err, size_t err_len) GM_MUSTCHECK;

/* Spools and produces `len` bytes as they are, keyed by `key` (NULL: the node's source),
 * without checking or assigning anything: for events whose id and seq the caller owns, and
 * for tools that must send malformed messages on purpose. len <= GM_NODE_RAW_MAX. */
#define GM_NODE_RAW_MAX (64u * 1024u)
int gm_node_send_raw(gm_node *node, const char *key, const void *msg, size_t len, char *err,
                     size_t err_len) GM_MUSTCHECK;

/* Waits until everything recorded before the call is acknowledged by Kafka. Returns 0, or
 * GM_EUNAVAIL after timeout_ms (the events stay in the spool and keep being sent). */
int gm_node_flush(gm_node *node, int timeout_ms, char *err, size_t err_len) GM_MUSTCHECK;

/* Makes everything recorded before the call durable on disk (the spool's msync, done by the
 * pump thread, so one sync serves every caller waiting at that moment: group commit), also
 * with the BATCH and INTERVAL policies. Returns 0, GM_EUNAVAIL when it did not happen within
 * timeout_ms (the events stay in the spool: they are as safe as record() left them). */
int gm_node_sync(gm_node *node, int timeout_ms, char *err, size_t err_len) GM_MUSTCHECK;

void gm_node_stats_get(gm_node *node, gm_node_stats *out);

/* Tries to deliver for close_timeout_ms, stops the pump, destroys the producer and closes the
 * spool; what is still unacknowledged stays in the spool for the next open. NULL is fine. */
void gm_node_close(gm_node *node);

/* The id the library gives event `seq` of `source`: "node-017-000000000042". */
void gm_node_event_id(const char *source, uint64_t seq, char *buf, size_t buf_len);
/* The same in `epoch`: the id above for epoch 0, "node-017-e1796212800-000000000042" for
 * another epoch (so no id of one epoch is an id of another). */
void gm_node_event_id_epoch(const char *source, uint64_t epoch, uint64_t seq, char *buf,
                            size_t buf_len);
/* The epoch a node starts after `previous` (0 when unknown, e.g. the state is gone): the Unix
 * time in seconds on gridmeter's clock (gm_now_us), or previous + 1 when that is higher. */
uint64_t gm_node_next_epoch(uint64_t previous);

/* For tests: raises a librdkafka fatal error in the producer (rd_kafka_test_fatal_error). */
int gm_node__inject_fatal(gm_node *node);

/* ---- Spool -----------------------------------------------------------------------------
 * A directory of segment files seg-<first lsn, 20 digits>.spool and a state file. Each
 * record is framed as
 *     u32 len | u32 crc32c(bytes after this word .. end) | u64 lsn | u64 seq |
 *     u16 key_len | u16 flags | u32 payload_len | key | payload | zero padding to 8
 * (little-endian; len counts the bytes after the crc). `lsn` numbers every record of the
 * spool 1, 2, 3, … for ever; `seq` is the event's per-source seq (0 for raw records).
 * Invariants (checked by gm_spool_check):
 *   1. lsns are contiguous across the live segments; segment names are their first lsn.
 *   2. acked_lsn < every lsn whose state is not ACKED; records at or below it are never
 *      handed out again. A segment is deleted only when all its records are <= acked_lsn,
 *      and only after the state file that records acked_lsn and the per-source seqs of the
 *      deleted records is durable (so seq never goes back, even with no segment left).
 *   3. A record is handed out (gm_spool_take) only when it is durable (synced_lsn).
 *   4. The sum of the segment file sizes never exceeds max_bytes.
 * The spool is thread-safe (one mutex); take/ack are meant for one pump thread. */
typedef struct gm_spool gm_spool;

typedef struct gm_spool_config {
    const char *dir;
    uint64_t max_bytes;     /* default 1 GiB */
    uint64_t segment_bytes; /* default min(max_bytes / 8, 64 MiB), at least 64 KiB */
    bool sync_each;         /* every append is made durable before it returns */
} gm_spool_config;

/* Writes a record's payload for the seq the spool assigned, into buf (buf_len bytes);
 * returns its length, or 0 when it cannot (the append then fails with GM_EINVAL and the
 * reason the callback wrote into err). */
typedef size_t (*gm_spool_encode_fn)(void *arg, uint64_t seq, char *buf, size_t buf_len, char *err,
                                     size_t err_len);

typedef struct gm_spool_rec {
    uint64_t lsn, seq;
    const char *key;
    size_t key_len;
    const char *payload; /* valid until the record is acknowledged */
    size_t payload_len;
} gm_spool_rec;

typedef struct gm_spool_stats {
    uint64_t first_lsn, next_lsn; /* live records are [first_lsn, next_lsn) */
    uint64_t acked_lsn, synced_lsn;
    uint64_t unacked;
    uint64_t bytes, max_bytes;
    uint64_t segments;
    uint64_t recovered;       /* unacknowledged records found at open */
    uint64_t truncated_bytes; /* bytes cut at open */
} gm_spool_stats;

int gm_spool_open(const gm_spool_config *cfg, gm_spool **out, char *err,
                  size_t err_len) GM_MUSTCHECK;
/* Persists the state file and unmaps; records stay on disk. NULL is fine. */
void gm_spool_close(gm_spool *sp);

/* Appends a record for `key`. With assign_seq, the record gets the key's next seq (the
 * callback writes the payload for it, directly into the segment); without, seq is 0.
 * Returns 0 with *lsn_out and *seq_out (either may be NULL), GM_EFULL, GM_EINVAL or GM_EIO. */
int gm_spool_append(gm_spool *sp, const char *key, bool assign_seq, gm_spool_encode_fn fn,
                    void *arg, uint64_t *seq_out, uint64_t *lsn_out, char *err,
                    size_t err_len) GM_MUSTCHECK;
int gm_spool_append_raw(gm_spool *sp, const char *key, const void *payload, size_t len,
                        uint64_t *lsn_out, char *err, size_t err_len) GM_MUSTCHECK;
/* The last seq given to `key` in the current epoch (0 when none). */
uint64_t gm_spool_last_seq(gm_spool *sp, const char *key);
/* Whether the spool had state when it was opened (a state file or a segment): false for a new
 * or wiped directory. */
bool gm_spool_had_state(gm_spool *sp);
/* Writes the state file now (durable), so that the next open finds state. */
int gm_spool_save_state(gm_spool *sp, char *err, size_t err_len) GM_MUSTCHECK;
/* The epoch in the state file (0 for a new spool or one from before epochs). */
uint64_t gm_spool_epoch(gm_spool *sp);
/* Starts epoch `epoch` (> the current one, else GM_EINVAL): the state file with the epoch and
 * its first lsn is made durable, then every source's seq starts again at 1. Records of the
 * earlier epoch still in the spool are still sent; they no longer count for seqs. */
int gm_spool_new_epoch(gm_spool *sp, uint64_t epoch, char *err, size_t err_len) GM_MUSTCHECK;
/* Makes everything appended so far durable (msync). Returns 0 or GM_EIO. */
int gm_spool_sync(gm_spool *sp, char *err, size_t err_len) GM_MUSTCHECK;
/* Hands out up to `max` durable records not yet handed out (those given back or nacked
 * first), in lsn order, and marks them in flight. Returns how many. */
size_t gm_spool_take(gm_spool *sp, gm_spool_rec *out, size_t max);
/* Gives a record back (it was not produced: queue full); it is handed out again. */
void gm_spool_untake(gm_spool *sp, uint64_t lsn);
/* Delivery report: ok marks it acknowledged; !ok hands it out again. */
void gm_spool_ack(gm_spool *sp, uint64_t lsn, bool ok);
/* Successful delivery reports for many records under one lock. */
void gm_spool_ack_many(gm_spool *sp, const uint64_t *lsns, size_t n);
/* Every record in flight is handed out again (after the producer was rebuilt). */
void gm_spool_reset_inflight(gm_spool *sp);
/* Persists acked_lsn and deletes segments whose records are all acknowledged. */
int gm_spool_reclaim(gm_spool *sp, char *err, size_t err_len) GM_MUSTCHECK;
/* Waits until acked_lsn >= lsn or timeout_ms passed; returns true when reached. */
bool gm_spool_wait_acked(gm_spool *sp, uint64_t lsn, int timeout_ms);
/* Records not yet handed out, plus those to hand out again. */
uint64_t gm_spool_backlog(gm_spool *sp);
void gm_spool_stats_get(gm_spool *sp, gm_spool_stats *out);
/* Checks the numbered invariants above; 0 or GM_ECORRUPT with the broken one in err. */
int gm_spool_check(gm_spool *sp, char *err, size_t err_len) GM_MUSTCHECK;

/* CRC-32C (Castagnoli), hardware-accelerated where the CPU has SSE 4.2. */
uint32_t gm_crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- Load generator model --------------------------------------------------------------
 * A deterministic stream (from a seed) of what many edge nodes would send: valid usage events
 * with long-tailed prompt lengths, cache hits, output lengths and GPU time; re-sends of
 * earlier events (same source and id); and malformed messages of several kinds. It keeps the
 * exact integer totals of the valid, distinct events for the manifest. Floating point is used
 * only to sample quantities; every quantity is an integer and every total an exact sum. */
typedef struct gm_loadgen gm_loadgen;

typedef struct gm_loadgen_config {
    int sites;              /* default 4 */
    int nodes_per_site;     /* default 2 */
    int tenants;            /* default 5 */
    int models;             /* default 3 (at most 8) */
    uint64_t seed;          /* default 1 */
    uint32_t duplicate_ppm; /* share of re-sends in parts per million */
    uint32_t malformed_ppm; /* share of malformed messages in parts per million */
    int64_t start_us;       /* 0: event times are the wall clock; else the simulated clock */
    uint64_t rate;          /* events per second of the simulated clock (default 1000) */
    /* Sources are "<source_prefix>/<site>/node-NNN"; NULL: "edge". At most
     * GM_LOADGEN_PREFIX_MAX bytes of the id set (docs/events.md), e.g. a run id, so that one
     * run's events can be told from another's. */
    const char *source_prefix;
} gm_loadgen_config;

#define GM_LOADGEN_PREFIX_MAX 40

typedef enum {
    GM_LOADGEN_VALID = 0, /* ev is complete except seq and id: record it */
    GM_LOADGEN_DUPLICATE, /* raw is an earlier valid event, byte for byte: send it as is */
    GM_LOADGEN_MALFORMED, /* raw breaks the contract: send it as is */
} gm_loadgen_kind;

typedef enum {
    GM_LOADGEN_BAD_FRACTION = 0,
    GM_LOADGEN_BAD_NEGATIVE,
    GM_LOADGEN_BAD_MISSING,
    GM_LOADGEN_BAD_TIME,
    GM_LOADGEN_BAD_OVERSIZE,
    GM_LOADGEN_BAD_UTF8,
    GM_LOADGEN_BAD_KINDS
} gm_loadgen_bad;

typedef struct gm_loadgen_item {
    gm_loadgen_kind kind;
    gm_loadgen_bad bad; /* MALFORMED only */
    gm_event ev;        /* VALID: the event without seq and id; others: the event it is from */
    char *raw;          /* DUPLICATE and MALFORMED: the bytes (owned by the generator, valid
                         * until the next call) */
    size_t raw_len;
} gm_loadgen_item;

void gm_loadgen_config_init(gm_loadgen_config *cfg);
int gm_loadgen_new(const gm_loadgen_config *cfg, gm_loadgen **out, char *err,
                   size_t err_len) GM_MUSTCHECK;
void gm_loadgen_free(gm_loadgen *lg);
/* The next item; `now_us` is the wall clock used when start_us is 0. */
void gm_loadgen_next(gm_loadgen *lg, int64_t now_us, gm_loadgen_item *item);
/* Reports that the VALID item was recorded with this seq (its id follows from it): it joins
 * the totals and may be re-sent later. Call it for every VALID item that was recorded. */
void gm_loadgen_recorded(gm_loadgen *lg, const gm_event *ev_with_seq_and_id);
/* Reports that a DUPLICATE or MALFORMED item was sent. */
void gm_loadgen_sent(gm_loadgen *lg, const gm_loadgen_item *item);
/* Writes the manifest JSON (docs/node-client.md): exact totals per tenant, model, site and
 * dimension of the valid distinct events, counts, and per-source seq ranges. */
int gm_loadgen_manifest_write(const gm_loadgen *lg, FILE *out, const char *extra_json, char *err,
                              size_t err_len) GM_MUSTCHECK;
/* The number of simulated sources (sites * nodes_per_site) and the name of source i. */
int gm_loadgen_sources(const gm_loadgen *lg);
const char *gm_loadgen_source(const gm_loadgen *lg, int i);
const char *gm_loadgen_bad_name(gm_loadgen_bad bad);

#endif /* GM_NODE_H */
