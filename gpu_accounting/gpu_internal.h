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

/* Interned strings: index <-> text (attrib.c). */
typedef struct gpu__strtab {
    char **s;
    size_t n, cap;
    gpu__map by_hash; /* probe hash -> index */
} gpu__strtab;
uint32_t gpu__strtab_intern(gpu__strtab *t, const char *str);
void gpu__strtab_free(gpu__strtab *t);

#endif
