/* The C reference sweep: rules 1 and 2 of gm_gpu.h over the spans of one device and resource.
 *
 * DESIGN. Each span is cut at window boundaries into pieces; each piece gives two events,
 * end before start at equal times, keyed ((t - origin) << 1 | is_start) and sorted by an LSD
 * radix sort (11-bit digits, only over the bits the keys use). One pass then walks the
 * events. Between consecutive events lies an elementary interval of L ns with k pieces
 * running; B, the running sum of floor(L/k), is the base share that each running piece has
 * gained so far. A piece's base share is B at its end minus B at its start, so each event
 * adds +B (end) or -B (start) to its owner's cell, O(1) per event instead of O(k) per
 * interval. L mod k goes to the window's pool. At a window boundary every piece of the old
 * window has ended (ends sort first), so k = 0 there and windows are independent.
 *
 * Invariants, checked by sweep__check (tests call it through gm_gpu_sweep_cpu's output):
 *   S1. cells sorted by (window, owner), wins sorted by window, no duplicates.
 *   S2. for each window: sum(cells.base_ns) + pool_ns == busy_ns.
 *   S3. busy_ns <= window_ns, pool_ns >= 0, base_ns >= 0, pieces > 0.
 * S2 holds because each interval adds k * floor(L/k) to the cells and L mod k to the pool.
 */
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>

void gm_gpu_sweep_free(gm_gpu_sweep *s)
{
    if (!s)
        return;
    free(s->cells);
    free(s->wins);
    s->cells = NULL;
    s->wins = NULL;
    s->n_cells = s->n_wins = 0;
}

/* LSD radix sort of (keys, vals) by keys over bits [0, bits). tmp arrays of the same size. */
void gpu__radix_sort(uint64_t *keys, uint32_t *vals, uint64_t *tk, uint32_t *tv, size_t n,
                     unsigned lo_bit, unsigned bits)
{
    enum { D = 11, R = 1 << D };
    unsigned passes = (bits + D - 1) / D;
    if (passes == 0 || n < 2)
        return;
    size_t(*hist)[R] = gm_xcalloc(passes, sizeof *hist);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = keys[i] >> lo_bit;
        for (unsigned p = 0; p < passes; p++)
            hist[p][(k >> (p * D)) & (R - 1)]++;
    }
    uint64_t *sk = keys, *dk = tk;
    uint32_t *sv = vals, *dv = vals ? tv : NULL;
    for (unsigned p = 0; p < passes; p++) {
        size_t *h = hist[p];
        int trivial = 0;
        for (unsigned d = 0; d < R; d++) {
            if (h[d] == n)
                trivial = 1;
        }
        if (trivial)
            continue;
        size_t sum = 0;
        for (unsigned d = 0; d < R; d++) {
            size_t c = h[d];
            h[d] = sum;
            sum += c;
        }
        unsigned shift = lo_bit + p * D;
        if (sv) {
            for (size_t i = 0; i < n; i++) {
                size_t pos = h[(sk[i] >> shift) & (R - 1)]++;
                dk[pos] = sk[i];
                dv[pos] = sv[i];
            }
        } else {
            for (size_t i = 0; i < n; i++)
                dk[h[(sk[i] >> shift) & (R - 1)]++] = sk[i];
        }
        uint64_t *t64 = sk;
        sk = dk;
        dk = t64;
        uint32_t *t32 = sv;
        sv = dv;
        dv = t32;
    }
    if (sk != keys) {
        memcpy(keys, sk, n * sizeof *keys);
        if (sv)
            memcpy(vals, sv, n * sizeof *vals);
    }
    free(hist);
}

int gpu__spans_check(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                     char *err, size_t err_len)
{
    if (window_ns == 0 || window_ns >= GM_GPU_MAX_NS)
        return gm_fail(err, err_len, GM_EINVAL, "sweep: window_ns: must be between 1 and 2^62-1");
    for (size_t i = 0; i < n; i++) {
        const gm_gpu_span *s = &spans[i];
        if (!(s->start_ns < s->end_ns && s->end_ns < GM_GPU_MAX_NS))
            return gm_fail(err, err_len, GM_EINVAL,
                           "sweep: span %zu: must have start_ns < end_ns < 2^62, got %llu..%llu", i,
                           (unsigned long long)s->start_ns, (unsigned long long)s->end_ns);
        if (s->owner >= n_owners)
            return gm_fail(err, err_len, GM_EINVAL,
                           "sweep: span %zu: owner %u must be below n_owners %u", i, s->owner,
                           n_owners);
    }
    return 0;
}

size_t gpu__piece_count(const gm_gpu_span *spans, size_t n, uint64_t window_ns)
{
    size_t pieces = 0;
    for (size_t i = 0; i < n; i++)
        pieces += (size_t)((spans[i].end_ns - 1) / window_ns - spans[i].start_ns / window_ns + 1);
    return pieces;
}

typedef struct sweep_acc {
    int64_t *base;     /* per owner, current window */
    int64_t *pieces;   /* per owner, current window */
    uint32_t *touched; /* owners with pieces in the current window */
    size_t n_touched;
    gm_gpu_cell *cells;
    size_t n_cells, cap_cells;
    gm_gpu_win *wins;
    size_t n_wins, cap_wins;
} sweep_acc;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void acc_flush(sweep_acc *A, int64_t window, int64_t busy, int64_t pool)
{
    if (A->n_touched == 0)
        return;
    qsort(A->touched, A->n_touched, sizeof *A->touched, cmp_u32);
    if (A->n_cells + A->n_touched > A->cap_cells) {
        A->cap_cells = (A->n_cells + A->n_touched) * 2;
        A->cells = gm_xrealloc(A->cells, A->cap_cells * sizeof *A->cells);
    }
    for (size_t i = 0; i < A->n_touched; i++) {
        uint32_t o = A->touched[i];
        A->cells[A->n_cells++] = (gm_gpu_cell){
            .window = window, .owner = o, .base_ns = A->base[o], .pieces = A->pieces[o]};
        A->base[o] = 0;
        A->pieces[o] = 0;
    }
    A->n_touched = 0;
    if (busy > 0) {
        if (A->n_wins == A->cap_wins) {
            A->cap_wins = A->cap_wins ? A->cap_wins * 2 : 16;
            A->wins = gm_xrealloc(A->wins, A->cap_wins * sizeof *A->wins);
        }
        A->wins[A->n_wins++] = (gm_gpu_win){.window = window, .busy_ns = busy, .pool_ns = pool};
    }
}

void gpu__sweep_ws_free(gpu__sweep_ws *ws)
{
    free(ws->keys);
    free(ws->vals);
    free(ws->tk);
    free(ws->tv);
    free(ws->base);
    free(ws->pieces);
    free(ws->touched);
    memset(ws, 0, sizeof *ws);
}

static void ws_reserve(gpu__sweep_ws *ws, size_t ne, uint32_t n_owners)
{
    if (ne > ws->cap_events) {
        free(ws->keys);
        free(ws->vals);
        free(ws->tk);
        free(ws->tv);
        ws->cap_events = ne;
        ws->keys = gm_xmalloc(ne * sizeof *ws->keys);
        ws->vals = gm_xmalloc(ne * sizeof *ws->vals);
        ws->tk = gm_xmalloc(ne * sizeof *ws->tk);
        ws->tv = gm_xmalloc(ne * sizeof *ws->tv);
    }
    if (n_owners > ws->cap_owners) {
        free(ws->base);
        free(ws->pieces);
        free(ws->touched);
        ws->cap_owners = n_owners;
        ws->base = gm_xcalloc(n_owners, sizeof *ws->base);
        ws->pieces = gm_xcalloc(n_owners, sizeof *ws->pieces);
        ws->touched = gm_xmalloc(n_owners * sizeof *ws->touched);
    }
}

int gm_gpu_sweep_cpu(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                     gm_gpu_sweep *out, char *err, size_t err_len)
{
    gpu__sweep_ws ws = {0};
    int rc = gpu__sweep_cpu_ws(spans, n, window_ns, n_owners, &ws, out, err, err_len);
    gpu__sweep_ws_free(&ws);
    return rc;
}

int gpu__sweep_cpu_ws(const gm_gpu_span *spans, size_t n, uint64_t window_ns, uint32_t n_owners,
                      gpu__sweep_ws *ws, gm_gpu_sweep *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    int rc = gpu__spans_check(spans, n, window_ns, n_owners, err, err_len);
    if (rc || n == 0)
        return rc;
    const uint64_t W = window_ns;
    uint64_t tmin = UINT64_MAX, tmax = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].start_ns < tmin)
            tmin = spans[i].start_ns;
        if (spans[i].end_ns > tmax)
            tmax = spans[i].end_ns;
    }
    const uint64_t origin = tmin / W * W; /* a window boundary: windows stay aligned */
    const int64_t w_origin = (int64_t)(tmin / W);
    size_t np = gpu__piece_count(spans, n, W);
    size_t ne = 2 * np;
    ws_reserve(ws, ne, n_owners);
    uint64_t *keys = ws->keys;
    uint32_t *vals = ws->vals;
    /* When time, type and owner fit in 64 bits the owner rides in the low bits of the key
     * (one array to sort, sorted only over the time and type bits); else a separate array. */
    const unsigned tbits = 64 - (unsigned)__builtin_clzll(((tmax - origin) << 1) | 1);
    const unsigned obits = n_owners > 1 ? 64 - (unsigned)__builtin_clzll(n_owners - 1) : 1;
    const int packed = tbits + obits <= 64;
    const unsigned osh = packed ? obits : 0;
    const uint64_t omask = packed ? (UINT64_C(1) << obits) - 1 : 0;
    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = spans[i].start_ns - origin, end = spans[i].end_ns - origin;
        uint32_t o = spans[i].owner;
        while (s < end) {
            uint64_t b = (s / W + 1) * W;
            uint64_t pe = end < b ? end : b;
            if (packed) {
                keys[e++] = (((s << 1) | 1) << osh) | o;
                keys[e++] = ((pe << 1) << osh) | o;
            } else {
                keys[e] = (s << 1) | 1;
                vals[e++] = o;
                keys[e] = pe << 1;
                vals[e++] = o;
            }
            s = pe;
        }
    }
    gpu__radix_sort(keys, packed ? NULL : vals, ws->tk, ws->tv, ne, osh, tbits);

    sweep_acc A = {0};
    A.base = ws->base; /* all zero between calls: acc_flush clears what it used */
    A.pieces = ws->pieces;
    A.touched = ws->touched;
    int64_t k = 0, B = 0, busy = 0, pool = 0;
    uint64_t prev_t = 0;
    int64_t cur_w = -1;              /* relative window of the current events */
    uint64_t cur_lo = 0, cur_hi = 0; /* its bounds, relative */
    for (size_t i = 0; i < ne; i++) {
        uint64_t key = keys[i] >> osh;
        uint64_t t = key >> 1;
        int is_start = (int)(key & 1);
        uint32_t o = packed ? (uint32_t)(keys[i] & omask) : vals[i];
        if (k > 0) {
            uint64_t len = t - prev_t;
            if (len) {
                B += (int64_t)(len / (uint64_t)k);
                pool += (int64_t)(len % (uint64_t)k);
                busy += (int64_t)len;
            }
        }
        prev_t = t;
        int in_cur = is_start ? (t >= cur_lo && t < cur_hi) : (t > cur_lo && t <= cur_hi);
        if (cur_w < 0 || !in_cur) {
            /* k == 0 here: every piece of the old window has ended (invariant of the keys) */
            if (cur_w >= 0)
                acc_flush(&A, w_origin + cur_w, busy, pool);
            busy = pool = 0;
            cur_w = (int64_t)(is_start ? t / W : (t - 1) / W);
            cur_lo = (uint64_t)cur_w * W;
            cur_hi = cur_lo + W;
        }
        if (A.pieces[o] == 0 && is_start)
            A.touched[A.n_touched++] = o;
        if (is_start) {
            A.base[o] -= B;
            A.pieces[o]++;
            k++;
        } else {
            A.base[o] += B;
            k--;
        }
    }
    acc_flush(&A, w_origin + cur_w, busy, pool);
    out->cells = A.cells;
    out->n_cells = A.n_cells;
    out->wins = A.wins;
    out->n_wins = A.n_wins;
    return 0;
}

int gpu__sweep_check(const gm_gpu_sweep *s, uint64_t window_ns, char *err, size_t err_len)
{
    size_t c = 0;
    for (size_t i = 0; i < s->n_wins; i++) {
        const gm_gpu_win *w = &s->wins[i];
        if (i && s->wins[i - 1].window >= w->window)
            return gm_fail(err, err_len, GM_ECORRUPT, "sweep S1: wins not sorted at %zu", i);
        if (w->busy_ns <= 0 || (uint64_t)w->busy_ns > window_ns || w->pool_ns < 0)
            return gm_fail(err, err_len, GM_ECORRUPT, "sweep S3: window %lld busy/pool range",
                           (long long)w->window);
        while (c < s->n_cells && s->cells[c].window < w->window)
            c++;
        int64_t sum = 0;
        for (; c < s->n_cells && s->cells[c].window == w->window; c++) {
            const gm_gpu_cell *x = &s->cells[c];
            if (x->base_ns < 0 || x->pieces <= 0)
                return gm_fail(err, err_len, GM_ECORRUPT, "sweep S3: cell %zu range", c);
            sum += x->base_ns;
        }
        if (sum + w->pool_ns != w->busy_ns)
            return gm_fail(err, err_len, GM_ECORRUPT,
                           "sweep S2: window %lld: base %lld + pool %lld != busy %lld",
                           (long long)w->window, (long long)sum, (long long)w->pool_ns,
                           (long long)w->busy_ns);
    }
    for (size_t i = 1; i < s->n_cells; i++) {
        const gm_gpu_cell *a = &s->cells[i - 1], *b = &s->cells[i];
        if (a->window > b->window || (a->window == b->window && a->owner >= b->owner))
            return gm_fail(err, err_len, GM_ECORRUPT, "sweep S1: cells not sorted at %zu", i);
    }
    return 0;
}
