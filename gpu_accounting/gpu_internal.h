/* Internals of gpu_accounting shared between its files and its tests (no CUDA headers). */
#ifndef GM_GPU_INTERNAL_H
#define GM_GPU_INTERNAL_H

#include "gm_gpu.h"

#include <stdbool.h>

/* sweep.c */
/* LSD radix sort of keys (and vals, when not NULL) by key bits [lo_bit, lo_bit + bits). */
void gpu__radix_sort(uint64_t *keys, uint32_t *vals, uint64_t *tk, uint32_t *tv, size_t n,
                     unsigned lo_bit, unsigned bits);
int gpu__spans_check(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                     char *err, size_t err_len);
size_t gpu__piece_count(const gm_gpu_span *spans, size_t n, uint64_t window_ns);
/* Scratch memory of the C sweep, reused over calls (one device after another). */
typedef struct gpu__sweep_ws {
    uint64_t *keys, *tk;
    uint32_t *vals, *tv;
    size_t cap_events;
    int64_t *base, *pieces;
    uint32_t *touched;
    uint32_t cap_owners;
} gpu__sweep_ws;
int gpu__sweep_cpu_ws(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                      gpu__sweep_ws *ws, gm_gpu_sweep *out, char *err, size_t err_len);
void gpu__sweep_ws_free(gpu__sweep_ws *ws);
/* Invariants S1-S3 of a sweep output (sweep.c). */
int gpu__sweep_check(const gm_gpu_sweep *s, uint64_t window_ns, char *err, size_t err_len);

/* attrib.c: largest-remainder split of `total` over weights w[0..n) (all >= 0). When all
 * weights are 0 the split is even. out[i] = floor(total*w[i]/W), then the leftover units go
 * one each to the largest remainders total*w[i] mod W, ties to the lower index. */
void gpu__lr_split(int64_t total, const int64_t *w, size_t n, int64_t *out);
/* Tenant id rule (charset name, 1..64 bytes): 0 or GM_EINVAL with the reason. */
int gpu__tenant_check(const char *tenant, char *err, size_t err_len);
int gpu__request_id_check(const char *rid, char *err, size_t err_len);

/* A small open-addressing map from uint64 keys to uint64 values. */
typedef struct gpu__map {
    uint64_t *keys;
    uint64_t *vals;
    uint8_t *used;
    size_t cap, n;
} gpu__map;
void gpu__map_free(gpu__map *m);
uint64_t *gpu__map_get(const gpu__map *m, uint64_t key);
/* Returns the value slot for key, inserting (value 0) when absent; *fresh tells which. */
uint64_t *gpu__map_put(gpu__map *m, uint64_t key, bool *fresh);

/* collector.c: the collector's core, fed by a source of records behind this table. */
typedef struct gpu__backend {
    void *ctx;
    int feed; /* 1: the caller adds records (gm_gpu_collector_add); 0: the source does */
    /* hands over what the source has buffered (forced: everything, at stop); may be NULL */
    void (*flush)(void *ctx, int forced);
    /* the clock the records are timed in, ns since the epoch; windows close on it */
    uint64_t (*now_ns)(void *ctx);
    /* tagging on the calling thread: 0, GM_EUNAVAIL; pop: GM_EINVAL when nothing was pushed.
     * NULL: the collector has no tagging (GM_EUNAVAIL) */
    int (*push)(void *ctx, gm_gpu_tag_kind kind, uint64_t id);
    int (*pop)(void *ctx, gm_gpu_tag_kind kind);
    /* after the last forced flush: the source delivers nothing more; may be NULL */
    void (*stop)(void *ctx);
} gpu__backend;
/* Applies the defaults of gm_gpu_collector_conf and checks it. */
int gpu__collector_conf_defaults(gm_gpu_collector_conf *cf, char *err, size_t err_len);
/* A collector on a source (conf with defaults applied); no thread yet. */
gm_gpu_collector *gpu__collector_new(const gpu__backend *be, const gm_gpu_collector_conf *conf);
/* Starts the flush thread unless conf.flush_ms is UINT32_MAX. */
void gpu__collector_start_thread(gm_gpu_collector *c);
/* Frees a collector that has no running thread (start failed, or after stop). */
void gpu__collector_free(gm_gpu_collector *c);
/* What one buffer of the source held: records, tags and their counts (kernels, copies, tags,
 * api/other records, zero, inverted, bad_buffers are added to the stats), records dropped. */
void gpu__collector_add_buffer(gm_gpu_collector *c, const gm_gpu_record *recs, size_t n_recs,
                               const gm_gpu_tag *tags, size_t n_tags,
                               const gm_gpu_collector_stats *counts, int64_t dropped);

/* Interned strings: index <-> text (attrib.c). */
typedef struct gpu__strtab {
    char **s;
    size_t n, cap;
    gpu__map by_hash; /* probe hash -> index */
} gpu__strtab;
uint32_t gpu__strtab_intern(gpu__strtab *t, const char *str);
void gpu__strtab_free(gpu__strtab *t);

#endif
