/* GPU accounting: exact attribution of GPU kernel and copy-engine time to tenants, the CUPTI
 * collector that feeds it on a node, the tenant/step tagging API, and the CUDA bulk path.
 *
 * The rules (docs/gpu-accounting.md has them with a worked example):
 *   1. Per device and resource (kernels; copies), cut each window into elementary intervals
 *      at every record start and end. In an interval of L ns where k records run, each gets
 *      floor(L/k) ns ("base"); the L mod k ns left over go to the window's pool.
 *   2. Idle intervals (k = 0) are charged to nobody. busy_ns = sum of the other intervals.
 *   3. A record is charged to its owner: the engine step its launch was tagged with (when a
 *      step manifest for it exists), else the tenant it was tagged with, else nobody
 *      ("unattributed"). The pool is split over the owners of the window in proportion to
 *      their base ns, largest remainder, ties by owner order (tenant name, then step id,
 *      then unattributed).
 *   4. A step's ns are split over its requests in proportion to
 *      prefill_weight * prefill_tokens + decode_weight * decode_tokens, largest remainder,
 *      ties by position in the manifest.
 *   5. Microseconds: busy_us = round-half-up(busy_ns / 1000), split over the window's rows
 *      (tenants and unattributed) in proportion to their ns, largest remainder, ties by
 *      tenant name (unattributed last). So every sum is exact in ns and in us.
 * Everything is integer arithmetic; results do not depend on the order of the records or on
 * how they were chunked into buffers.
 *
 * This header includes no CUDA header; the library builds and works without CUDA.
 */
#ifndef GM_GPU_H
#define GM_GPU_H

#include "gm_common.h"
#include "gm_ident.h"

#include <stddef.h>
#include <stdint.h>

/* ---- Records ---------------------------------------------------------------------------*/
typedef enum {
    GM_GPU_RES_KERNEL = 0, /* SM time: kernels */
    GM_GPU_RES_COPY = 1,   /* copy-engine time: memcpy and memset */
} gm_gpu_resource;

/* One unit of GPU work as CUPTI reports it. Times are ns since the epoch (CUPTI's Linux
 * default clock is CLOCK_REALTIME). */
typedef struct gm_gpu_record {
    uint64_t start_ns;
    uint64_t end_ns;
    uint32_t device;
    uint32_t correlation_id; /* the CUDA API call that launched it */
    uint8_t resource;        /* gm_gpu_resource */
} gm_gpu_record;

typedef enum {
    GM_GPU_TAG_TENANT = 1, /* value: a tenant tag from gm_gpu_attr_define_tenant */
    GM_GPU_TAG_STEP = 2,   /* value: an engine step id with a manifest */
} gm_gpu_tag_kind;

/* A tag: the work of one CUDA API call (its correlation id) belongs to a tenant tag or to an
 * engine step (CUPTI's external correlation records; or given by a feed's caller). */
typedef struct gm_gpu_tag {
    uint32_t correlation_id;
    uint8_t kind; /* gm_gpu_tag_kind */
    uint64_t value;
} gm_gpu_tag;

/* One request in a batched engine step. */
typedef struct gm_gpu_step_request {
    const char *tenant;     /* tenant id (GM_EVENT charset "name"), required */
    const char *request_id; /* may be NULL */
    int64_t prefill_tokens; /* >= 0 */
    int64_t decode_tokens;  /* >= 0 */
} gm_gpu_step_request;

#define GM_GPU_TENANT_MAX        GM_IDENT_TENANT_MAX /* the one tenant rule: gm_ident.h */
#define GM_GPU_REQUEST_ID_MAX    GM_IDENT_REQUEST_ID_MAX
#define GM_GPU_DEFAULT_WINDOW_NS (UINT64_C(10) * 1000000000u)
/* Timestamps must be below 2^62 ns (year 2116). */
#define GM_GPU_MAX_NS (UINT64_C(1) << 62)
/* The policy names written into gridmeter.gpu.v1 events (data.policy). */
#define GM_GPU_POLICY_KERNEL "kernel-share-v1"
#define GM_GPU_POLICY_COPY   "copy-share-v1"

/* ---- Results ---------------------------------------------------------------------------*/
/* One (device, resource, window, tenant) total. */
typedef struct gm_gpu_row {
    uint32_t device;
    uint8_t resource;
    int64_t window_start_ns;
    int64_t window_end_ns;
    const char *tenant; /* owned by the result */
    int64_t gpu_ns;     /* exact share, rules 1-4 */
    int64_t gpu_us;     /* rule 5 */
    int64_t kernels;    /* records (pieces within this window) that gave this tenant time */
} gm_gpu_row;

/* One (device, resource, window) with any busy time. */
typedef struct gm_gpu_window {
    uint32_t device;
    uint8_t resource;
    int64_t window_start_ns;
    int64_t window_end_ns;
    int64_t busy_ns;         /* = sum(rows.gpu_ns) + unattributed_ns */
    int64_t busy_us;         /* = sum(rows.gpu_us) + unattributed_us */
    int64_t unattributed_ns; /* time of records with no usable tag */
    int64_t unattributed_us;
    int64_t pool_ns;              /* rule 1 leftovers, split by rule 3 (for auditors) */
    int64_t records;              /* record pieces in this window */
    int64_t unattributed_records; /* of which without a usable tag */
} gm_gpu_window;

/* Per request (from step manifests), summed over all windows and devices. */
typedef struct gm_gpu_request_row {
    const char *tenant;
    const char *request_id;
    int64_t gpu_ns; /* kernel time only */
    int64_t gpu_us; /* round-half-up(gpu_ns / 1000), per request (not apportioned) */
} gm_gpu_request_row;

/* Counts of what the engine skipped or could not join. */
typedef struct gm_gpu_counts {
    int64_t records;          /* records given */
    int64_t zero_timestamps;  /* start and end 0: CUPTI could not time it; skipped */
    int64_t inverted;         /* end < start (or past GM_GPU_MAX_NS); skipped */
    int64_t empty;            /* end == start; nothing to charge */
    int64_t untagged;         /* kernels with no tag at all (unattributed) */
    int64_t unknown_tenant;   /* tenant tag with no tenant defined (unattributed) */
    int64_t missing_manifest; /* step tag with no manifest (tenant tag used if any) */
    int64_t tag_conflicts;    /* two values for one (correlation id, kind): smallest used */
} gm_gpu_counts;

typedef struct gm_gpu_result {
    gm_gpu_row *rows; /* sorted by device, resource, window, tenant */
    size_t n_rows;
    gm_gpu_window *windows; /* sorted by device, resource, window */
    size_t n_windows;
    gm_gpu_request_row *requests; /* sorted by tenant, request_id */
    size_t n_requests;
    gm_gpu_counts counts;
    void *strings_; /* internal: the storage of the tenant and request id strings */
} gm_gpu_result;

void gm_gpu_result_free(gm_gpu_result *res);
/* Checks the invariants of a result (numbered in attrib.c): sums per window in ns and us,
 * sortedness, ranges. 0 or GM_ECORRUPT naming the broken invariant. Tests call it. */
int gm_gpu_result_check(const gm_gpu_result *res, char *err, size_t err_len) GM_MUSTCHECK;

/* ---- Attribution engine (pure C) -------------------------------------------------------*/
typedef struct gm_gpu_attr gm_gpu_attr;

typedef struct gm_gpu_attr_conf {
    uint64_t window_ns;      /* 0: GM_GPU_DEFAULT_WINDOW_NS; windows are [k*w, (k+1)*w) */
    uint32_t prefill_weight; /* rule 4; prefill_weight = decode_weight = 0 means 1 and 1 */
    uint32_t decode_weight;
    int use_cuda; /* 1: run the sweep on the GPU (GM_EUNAVAIL without one) */
} gm_gpu_attr_conf;

/* conf may be NULL (defaults). */
int gm_gpu_attr_new(const gm_gpu_attr_conf *conf, gm_gpu_attr **out, char *err,
                    size_t err_len) GM_MUSTCHECK;
void gm_gpu_attr_free(gm_gpu_attr *a);
/* Names the tenant behind a tenant tag value. Defining one tag twice with different names
 * is GM_ECONFLICT. */
int gm_gpu_attr_define_tenant(gm_gpu_attr *a, uint64_t tag, const char *tenant, char *err,
                              size_t err_len) GM_MUSTCHECK;
/* Adds records (copied). Invalid records are counted, not refused. */
void gm_gpu_attr_add_records(gm_gpu_attr *a, const gm_gpu_record *recs, size_t n);
/* Tags the work of one CUDA API call (a CUPTI external correlation record). Tags may come
 * before or after their records. */
void gm_gpu_attr_add_tag(gm_gpu_attr *a, uint32_t correlation_id, gm_gpu_tag_kind kind,
                         uint64_t value);
/* The manifest of one engine step (copied). Tenant names are checked (charset "name", at
 * most GM_GPU_TENANT_MAX bytes); a second manifest for one step id is GM_ECONFLICT. */
int gm_gpu_attr_add_step(gm_gpu_attr *a, uint64_t step_id, const gm_gpu_step_request *reqs,
                         size_t n, char *err, size_t err_len) GM_MUSTCHECK;
/* Attributes everything added so far. The engine may be run again after adding more. */
int gm_gpu_attr_run(gm_gpu_attr *a, gm_gpu_result *out, char *err, size_t err_len) GM_MUSTCHECK;

/* Archives: the text format of `gridmeter gpu attribute` (gpu_accounting/archive.c):
 *   tenant <tag> <tenant-id> | kernel|copy <device> <start_ns> <end_ns> <correlation_id> |
 *   tag tenant|step <correlation_id> <value> |
 *   step <step_id> <tenant>:<request_id|->:<prefill>:<decode> ...
 * One line (modified in place) or a whole stream; the reason names file, line and rule. */
int gm_gpu_archive_line(gm_gpu_attr *a, char *line, char *err, size_t err_len) GM_MUSTCHECK;
int gm_gpu_archive_load(gm_gpu_attr *a, FILE *in, const char *name, char *err,
                        size_t err_len) GM_MUSTCHECK;

/* ---- Bulk sweep (rule 1 and 2 only), C and CUDA ----------------------------------------
 * The core that both paths share: spans of one device and resource with dense owner ids.
 * Output cells (window, owner) with base ns and piece counts, and per window busy and pool
 * ns. The CUDA path gives bit-identical output. */
typedef struct gm_gpu_span {
    uint64_t start_ns; /* < end_ns < GM_GPU_MAX_NS */
    uint64_t end_ns;
    uint32_t owner; /* < n_owners */
} gm_gpu_span;

typedef struct gm_gpu_cell {
    int64_t window; /* window index: start_ns / window_ns */
    uint32_t owner;
    int64_t base_ns;
    int64_t pieces;
} gm_gpu_cell;

typedef struct gm_gpu_win {
    int64_t window;
    int64_t busy_ns;
    int64_t pool_ns; /* sum of the interval remainders (L mod k) */
} gm_gpu_win;

typedef struct gm_gpu_sweep {
    gm_gpu_cell *cells; /* sorted by window, owner; only cells with pieces > 0 */
    size_t n_cells;
    gm_gpu_win *wins; /* sorted by window; only windows with busy_ns > 0 */
    size_t n_wins;
} gm_gpu_sweep;

void gm_gpu_sweep_free(gm_gpu_sweep *s);
/* C reference: O(N log N) (radix sort + one pass), one core. Spans must be valid. */
int gm_gpu_sweep_cpu(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                     gm_gpu_sweep *out, char *err, size_t err_len) GM_MUSTCHECK;
/* CUDA path: GM_EUNAVAIL when built without CUDA or when no GPU is usable. */
int gm_gpu_sweep_cuda(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                      gm_gpu_sweep *out, char *err, size_t err_len) GM_MUSTCHECK;
/* 1 when gm_gpu_sweep_cuda can run here (built with CUDA and a GPU answers). */
int gm_gpu_cuda_available(char *why, size_t why_len);

/* ---- Collector (CUPTI) ------------------------------------------------------------------
 * One per process (CUPTI's buffer callbacks are process-wide). Without libcupti, a driver or
 * a GPU, gm_gpu_collector_start returns GM_EUNAVAIL and the host keeps running; the tagging
 * calls then return GM_EUNAVAIL and do nothing. */
typedef struct gm_gpu_collector gm_gpu_collector;

typedef struct gm_gpu_collector_conf {
    uint64_t window_ns;  /* 0: GM_GPU_DEFAULT_WINDOW_NS */
    uint32_t flush_ms;   /* period of the flush thread; 0: 1000; UINT32_MAX: no thread */
    uint64_t grace_ns;   /* a window closes at its end + grace; 0: 2 s */
    size_t buffer_bytes; /* CUPTI activity buffer size; 0: 4 MiB */
    uint32_t prefill_weight, decode_weight;
    const char *cupti_path; /* NULL: libcupti.so.13, then libcupti.so */
    /* Called (from the flush thread, or from gm_gpu_collector_flush/stop) with the results
     * of the windows just closed. The result is freed after the call returns. */
    void (*on_windows)(const gm_gpu_result *res, void *arg);
    void *arg;
} gm_gpu_collector_conf;

typedef struct gm_gpu_collector_stats {
    int64_t buffers;          /* activity buffers completed */
    int64_t dropped;          /* records CUPTI dropped (no buffer space) */
    int64_t kernels;          /* kernel records */
    int64_t copies;           /* memcpy and memset records */
    int64_t tags;             /* external correlation records */
    int64_t api_records;      /* driver and runtime API records */
    int64_t other_records;    /* kinds we do not use */
    int64_t zero_timestamps;  /* records with start = end = 0 */
    int64_t inverted;         /* records with end < start */
    int64_t untagged_kernels; /* kernels with no usable tag (closed windows) */
    int64_t late_records;     /* records that arrived after their window had closed */
    int64_t windows_closed;
    int64_t bad_buffers; /* records cut short or unparsable */
    /* Every window that ends at or before this instant (ns since the epoch, the collector's
     * clock) has been closed and handed to on_windows (the call has returned); 0 before the
     * first close. A record that starts before it is late. */
    int64_t closed_until_ns;
} gm_gpu_collector_stats;

int gm_gpu_collector_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                           size_t err_len) GM_MUSTCHECK;
/* Flushes CUPTI (forced), closes every window and reports it, stops. Accepts NULL. */
void gm_gpu_collector_stop(gm_gpu_collector *c);
/* Flushes CUPTI and closes the windows that ended at least grace_ns ago (what the thread
 * does every flush_ms). */
int gm_gpu_collector_flush(gm_gpu_collector *c, char *err, size_t err_len) GM_MUSTCHECK;
void gm_gpu_collector_stats_get(gm_gpu_collector *c, gm_gpu_collector_stats *out);

/* A collector fed by its caller instead of CUPTI: records and tags come from
 * gm_gpu_collector_add (a node agent that receives them over its socket from the server it
 * serves: docs/node-agent.md). Needs no GPU, no driver and no libcupti; its clock is
 * gm_now_us(), so records are timed in ns since the epoch on the node's clock. The same
 * windows, rules, step manifests, callback and counters as the CUPTI collector; any number may
 * run in one process. The push/pop tagging calls return GM_EUNAVAIL on it (its tags come with
 * the records). Stopped with gm_gpu_collector_stop. */
int gm_gpu_feed_start(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                      size_t err_len) GM_MUSTCHECK;
/* Adds records and tags to a feed collector, as one CUPTI buffer would (tags before or after
 * their records, in this call or another; records with zero or inverted times are counted and
 * skipped). GM_EINVAL on a CUPTI collector (its correlation ids are CUPTI's) or for a tag of
 * an unknown kind; GM_EUNAVAIL when c is NULL. */
int gm_gpu_collector_add(gm_gpu_collector *c, const gm_gpu_record *recs, size_t n_recs,
                         const gm_gpu_tag *tags, size_t n_tags, char *err,
                         size_t err_len) GM_MUSTCHECK;
/* The tenant tag value of `tenant` on this collector (1, 2, …, the same for the collector's
 * life): the value of a GM_GPU_TAG_TENANT tag. GM_EINVAL for a tenant id that breaks the
 * rule (charset name, 1..64 bytes), GM_EUNAVAIL when c is NULL. */
int gm_gpu_collector_tenant_tag(gm_gpu_collector *c, const char *tenant, uint64_t *tag, char *err,
                                size_t err_len) GM_MUSTCHECK;
/* The collector's clock, ns since the epoch (CUPTI's timestamp, or gm_now_us() for a feed):
 * windows close when this clock passes their end + grace_ns. 0 when c is NULL. */
uint64_t gm_gpu_collector_now_ns(gm_gpu_collector *c);

/* Tagging, on the calling thread: the CUDA work launched between push and pop belongs to the
 * tenant (or to the engine step). Pushes nest per kind. A step's manifest may be given
 * before or after its kernels run, but before its window closes. */
int gm_gpu_tenant_push(gm_gpu_collector *c, const char *tenant);
int gm_gpu_tenant_pop(gm_gpu_collector *c);
int gm_gpu_step_push(gm_gpu_collector *c, uint64_t step_id);
int gm_gpu_step_pop(gm_gpu_collector *c);
int gm_gpu_step_manifest(gm_gpu_collector *c, uint64_t step_id, const gm_gpu_step_request *reqs,
                         size_t n, char *err, size_t err_len);

/* ---- gridmeter.gpu.v1 events ------------------------------------------------------------
 * Fills ev (a struct gm_event from ingest/gm_ingest.h) for one row: type gpu, tenant,
 * site, device "gpu<N>", window, gpu_us, policy (GM_GPU_POLICY_KERNEL or _COPY), kernels,
 * unattributed_us of the row's window, time = window end. source, id and seq are the
 * caller's (the node client assigns them). Returns 0 or GM_EINVAL (field too long).
 * Available when gm_gpu was built beside gm_ingest (GM_GPU_HAVE_INGEST). */
struct gm_event;
int gm_gpu_row_to_event(const gm_gpu_result *res, size_t row, const char *source, const char *id,
                        uint64_t seq, const char *site, struct gm_event *ev, char *err,
                        size_t err_len) GM_MUSTCHECK;

#endif /* GM_GPU_H */
