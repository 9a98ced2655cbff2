/* Internal to rater/: the metrics the loop updates and the /metrics endpoint serves. */
#ifndef GM_RATER_INT_H
#define GM_RATER_INT_H

#include "gm_ledger.h"

#include <librdkafka/rdkafka.h>

/* Counters are written by the rater thread only and read by the HTTP thread: plain 64-bit
 * loads and stores (atomic on the targets we build for), relaxed reads are fine. */
typedef struct gm_rater_metrics_t {
    uint64_t batches;
    uint64_t batch_failures;
    uint64_t accepted;
    uint64_t duplicates;
    uint64_t rejected;
    uint64_t conflicts; /* another event's identity (gm.conflicting_events) */
    uint64_t poison;    /* rejected alone after bisecting a failing batch */
    uint64_t slow_path_batches;
    uint64_t rebalances;
    uint64_t pg_reconnects;
    uint64_t offset_gaps;
    uint64_t partition_failures;
    uint64_t watermark_failures; /* offset holes whose low-watermark query failed */
    uint64_t assign_failures;    /* rd_kafka_assign refused (the rater rejoins the group) */
    uint64_t misplaced;          /* rejects of rule placement (rater/placement.c), committed */
    uint64_t gpu_misplaced;      /* the same of the GPU window consumer */
    /* the same three of the GPU window consumer (rater/gpu.c, its own thread) */
    uint64_t gpu_offset_gaps;
    uint64_t gpu_watermark_failures;
    uint64_t gpu_assign_failures;
    uint64_t pipelined_batches;  /* prepared while the previous batch was committing */
    uint64_t pipeline_drops;     /* prepared batches dropped after the one before failed */
    uint64_t prepare_us_sum;     /* decoding and pricing (rater thread), for bench_rater */
    uint64_t flight_wait_us_sum; /* the rater thread waiting for the commit thread */
    uint64_t last_batch_messages;
    uint64_t commit_us_sum;
    uint64_t commit_buckets[12]; /* cumulative counts per le bucket, see metrics.c */
    int64_t started_us;
    /* written by the GPU consumer's thread only (rater/gpu.c), after each commit */
    uint64_t gpu_windows_charged[2]; /* by gm_gpu_basis: windows charged at 0 / at the price */
    uint64_t gpu_window_us_charged[2];
    uint64_t gpu_windows_unpriced; /* kernel-share-v1 windows no card priced: not charged */
} gm_rater_metrics_t;

extern gm_rater_metrics_t gm_rater_metrics;

struct gm_rating_book;
/* The rating book follows imports (rater/book_watch.c): the connection that LISTENs on gm_book
 * and when the book was last loaded. Zero-initialized. */
typedef struct gm_rater_book_watch {
    PGconn *conn;      /* the connection LISTEN was tried on (NULL: none yet) */
    int backend_pid;   /* its backend: a reconnect gives another */
    bool listening;    /* LISTEN gm_book succeeded on it */
    int64_t loaded_us; /* gm_mono_us() of the last load */
    bool pending;      /* a reload failed: tried again at the next call */
    uint64_t reloads;
} gm_rater_book_watch;
/* Before a batch: LISTENs gm_book on a new connection, reads the notifications that arrived
 * without a round trip, and reloads *book when one did, when the connection is new, when *book
 * is NULL, after a failed reload, or reload_s (> 0) after the last load. 0, or the load's error
 * (*book kept, the failure logged when there was one). */
int gm_rater__book_refresh(PGconn *pg, struct gm_rating_book **book, gm_rater_book_watch *w,
                           int reload_s, const char *comp, char *err, size_t err_len);

struct gm_rating_book;
struct gm_rater_config;
/* The rules after decoding, for the rater and `gridmeter rejects replay` alike: the time
 * policy, then the price. 0 with *row filled (ev borrowed; Kafka coordinates and message
 * left to the caller), or GM_EINVAL with the reason and *rule ("time", "rating"). */
int gm_rater__rate_event(const struct gm_rater_config *cfg, const struct gm_rating_book *book,
                         const struct gm_event *ev, int64_t now_us, gm_ledger_row *row,
                         char *reason, size_t reason_len, const char **rule) GM_MUSTCHECK;

struct gm_shard_map;
/* Placement (rater/placement.c; docs/scaling.md, "Placement"): in sharded mode (map not
 * NULL and topic in it), whether the message breaks the rule (its key is not ev->source, or
 * its partition is not the murmur2 partition of the source over the map's partition count);
 * true with the reason naming the rule. Unsharded: false. */
bool gm_rater__misplaced(const struct gm_shard_map *map, const char *topic, const void *key,
                         size_t key_len, int32_t partition, const struct gm_event *ev, char *reason,
                         size_t reason_len);
extern const char gm_rater__rule_placement[]; /* "placement": compared by address */

void gm_rater_metrics_batch(const gm_ledger_result *res, size_t messages, int64_t commit_us);
/* What /metrics reads for consumer lag: the handle (for cached high watermarks) and the
 * positions stored in PostgreSQL. NULLs detach. */
void gm_rater_metrics_set_rk(rd_kafka_t *rk, const char *topic, const int64_t *stored,
                             const bool *owned, int n_partitions);
/* Serves GET /metrics (Prometheus text) and /healthz on addr ("host:port"). */
int gm_rater_metrics_start(const char *addr, char *err, size_t err_len) GM_MUSTCHECK;
void gm_rater_metrics_stop(void);

#endif
