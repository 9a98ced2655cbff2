/* The CUDA bulk path: the sweep of sweep.c (rules 1 and 2 of gm_gpu.h) on the GPU for large
 * archives of kernel records, bit-identical to the C reference.
 *
 * DESIGN. The same events as sweep.c, built in parallel: count pieces per span, exclusive scan,
 * emit ((t - origin) << 1 | is_start, owner), cub radix sort. Then, per event i:
 *   k_i  = inclusive scan of +1/-1             (pieces running after event i)
 *   L_i  = t_{i+1} - t_i, q_i = L_i / k_i, r_i = L_i mod k_i    (when k_i > 0)
 *   B_i  = exclusive scan of q                  (= B of the C sweep at event i)
 * per window: busy = sum L_i, pool = sum r_i, reduced by key (the interval windows are
 * non-decreasing in event order). Per (window, owner) cell: sum of +B_i (end) and -B_i
 * (start), and the count of starts, by sorting the events by cell key and reducing by key.
 * Integer sums are associative and exact, so the result equals the C sweep bit for bit.
 * The host only copies the spans in and the sums out: checks, time range and piece counts are
 * computed on the GPU. Limits: fewer than 2^30 spans and 2^30 pieces per call (2^31 events);
 * split larger archives by time.
 */
extern "C" {
#include "gpu_internal.h"
}

#include <cub/cub.cuh>
#include <cuda_runtime.h>

#include <stdlib.h>
#include <string.h>

namespace
{

struct Pair {
    unsigned long long a, b;
};

struct MinOp {
    __host__ __device__ unsigned long long operator()(unsigned long long a,
                                                      unsigned long long b) const
    {
        return a < b ? a : b;
    }
};

struct MaxOp {
    __host__ __device__ unsigned long long operator()(unsigned long long a,
                                                      unsigned long long b) const
    {
        return a > b ? a : b;
    }
};

struct PairSum {
    __host__ __device__ Pair operator()(const Pair &x, const Pair &y) const
    {
        return Pair{x.a + y.a, x.b + y.b};
    }
};

/* Pieces per span, and in one pass the checks and the time range: stats[0] = min start,
 * stats[1] = max end, stats[2] = 1 when a span is invalid (the host then finds which). */
__global__ void scan_spans(const gm_gpu_span *s, int n, unsigned long long W, unsigned int n_owners,
                           unsigned long long *cnt, unsigned long long *stats)
{
    typedef cub::BlockReduce<unsigned long long, 256> Reduce;
    __shared__ typename Reduce::TempStorage tmin_s, tmax_s;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long lo = ~0ull, hi = 0;
    if (i < n) {
        gm_gpu_span x = s[i];
        if (!(x.start_ns < x.end_ns && x.end_ns < GM_GPU_MAX_NS && x.owner < n_owners)) {
            atomicOr(&stats[2], 1ull);
            cnt[i] = 0;
        } else {
            cnt[i] = (x.end_ns - 1) / W - x.start_ns / W + 1;
            lo = x.start_ns;
            hi = x.end_ns;
        }
    }
    unsigned long long bmin = Reduce(tmin_s).Reduce(lo, MinOp());
    unsigned long long bmax = Reduce(tmax_s).Reduce(hi, MaxOp());
    if (threadIdx.x == 0) {
        atomicMin(&stats[0], bmin);
        atomicMax(&stats[1], bmax);
    }
}

__global__ void emit_events(const gm_gpu_span *s, int n, unsigned long long W,
                            unsigned long long origin, const unsigned long long *off,
                            unsigned long long *keys, unsigned int *vals)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    unsigned long long t = s[i].start_ns - origin, end = s[i].end_ns - origin;
    unsigned long long e = 2 * off[i];
    unsigned int o = s[i].owner;
    while (t < end) {
        unsigned long long b = (t / W + 1) * W;
        unsigned long long pe = end < b ? end : b;
        keys[e] = (t << 1) | 1ull;
        vals[e++] = o;
        keys[e] = pe << 1;
        vals[e++] = o;
        t = pe;
    }
}

__global__ void deltas(const unsigned long long *keys, long long n, int *d)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        d[i] = (keys[i] & 1ull) ? 1 : -1;
}

/* per interval i (event i to i+1): q for B, and (busy, pool) keyed by window */
__global__ void intervals(const unsigned long long *keys, const int *k, long long n,
                          unsigned long long W, unsigned long long *q, unsigned long long *win_key,
                          Pair *win_val)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    unsigned long long t = keys[i] >> 1;
    unsigned long long len = i + 1 < n ? (keys[i + 1] >> 1) - t : 0;
    int kk = k[i];
    unsigned long long qq = 0, rr = 0, busy = 0;
    if (kk > 0 && len > 0) {
        qq = len / (unsigned long long)kk;
        rr = len % (unsigned long long)kk;
        busy = len;
    }
    q[i] = qq;
    win_key[i] = t / W;
    win_val[i] = Pair{busy, rr};
}

/* per event: its cell key (window * n_owners + owner) and (+-B, is_start) */
__global__ void contributions(const unsigned long long *keys, const unsigned int *owners,
                              const unsigned long long *B, long long n, unsigned long long W,
                              unsigned long long n_owners, unsigned long long *cell_key,
                              Pair *cell_val)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    unsigned long long t = keys[i] >> 1;
    int is_start = (int)(keys[i] & 1ull);
    unsigned long long w = is_start ? t / W : (t - 1) / W;
    cell_key[i] = w * n_owners + owners[i];
    cell_val[i] = is_start ? Pair{0ull - B[i], 1ull} : Pair{B[i], 0ull};
}

struct Dev {
    void *ptrs[32];
    int n = 0;
    ~Dev()
    {
        for (int i = 0; i < n; i++)
            cudaFree(ptrs[i]);
    }
    template <typename T> cudaError_t alloc(T **p, size_t count)
    {
        cudaError_t e = cudaMalloc((void **)p, count * sizeof(T) + 16);
        if (e == cudaSuccess)
            ptrs[n++] = *p;
        return e;
    }
    void release(void *p)
    {
        for (int i = 0; i < n; i++) {
            if (ptrs[i] == p) {
                cudaFree(p);
                ptrs[i] = ptrs[--n];
                return;
            }
        }
    }
};

unsigned bits_for(unsigned long long x)
{
    return x ? 64u - (unsigned)__builtin_clzll(x) : 1u;
}

} // namespace

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return gm_fail(err, err_len, e_ == cudaErrorMemoryAllocation ? GM_ENOMEM : GM_EIO,     \
                           "CUDA sweep: %s: %s", #call, cudaGetErrorString(e_));                   \
    } while (0)

extern "C" int gm_gpu_cuda_available(char *why, size_t why_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        gm_fail(why, why_len, GM_EUNAVAIL, "no usable GPU: %s",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    return 1;
}

static int sweep_cuda(const gm_gpu_span *spans, size_t n_spans, uint64_t W, uint32_t n_owners,
                      gm_gpu_sweep *out, char *err, size_t err_len)
{
    if (n_spans >= (1u << 30))
        return gm_fail(err, err_len, GM_ERANGE,
                       "CUDA sweep: %zu spans: at most 2^30 per call; split the archive by time",
                       n_spans);
    const int n = (int)n_spans;
    const int TB = 256;
    Dev d;
    gm_gpu_span *d_spans;
    unsigned long long *d_cnt, *d_off, *d_stats;
    CK(d.alloc(&d_spans, n_spans));
    CK(cudaMemcpy(d_spans, spans, n_spans * sizeof *spans, cudaMemcpyHostToDevice));
    CK(d.alloc(&d_cnt, n_spans));
    CK(d.alloc(&d_off, n_spans));
    CK(d.alloc(&d_stats, 3));
    const unsigned long long init[3] = {~0ull, 0ull, 0ull};
    CK(cudaMemcpy(d_stats, init, sizeof init, cudaMemcpyHostToDevice));
    scan_spans<<<(n + TB - 1) / TB, TB>>>(d_spans, n, W, n_owners, d_cnt, d_stats);
    CK(cudaGetLastError());
    void *tmp = NULL;
    size_t tmp_bytes = 0, need = 0;
    auto ensure_tmp = [&](size_t bytes) -> cudaError_t {
        if (bytes <= tmp_bytes)
            return cudaSuccess;
        if (tmp)
            d.release(tmp);
        tmp = NULL;
        unsigned char *p;
        cudaError_t e = d.alloc(&p, bytes);
        if (e == cudaSuccess) {
            tmp = p;
            tmp_bytes = bytes;
        }
        return e;
    };
    CK(cub::DeviceScan::ExclusiveSum(NULL, need, d_cnt, d_off, n));
    CK(ensure_tmp(need));
    CK(cub::DeviceScan::ExclusiveSum(tmp, need, d_cnt, d_off, n));
    unsigned long long h_stats[3], h_last[2];
    CK(cudaMemcpy(h_stats, d_stats, sizeof h_stats, cudaMemcpyDeviceToHost));
    if (h_stats[2]) /* an invalid span: the host check names it */
        return gpu__spans_check(spans, n_spans, W, n_owners, err, err_len);
    CK(cudaMemcpy(&h_last[0], d_off + (n - 1), sizeof h_last[0], cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&h_last[1], d_cnt + (n - 1), sizeof h_last[1], cudaMemcpyDeviceToHost));
    const uint64_t tmin = h_stats[0], tmax = h_stats[1];
    const size_t pieces = (size_t)(h_last[0] + h_last[1]);
    if (pieces >= (1u << 30))
        return gm_fail(err, err_len, GM_ERANGE,
                       "CUDA sweep: %zu spans in %zu pieces: at most 2^30 per call; split the "
                       "archive by time",
                       n_spans, pieces);
    const uint64_t origin = tmin / W * W;
    const int64_t w_origin = (int64_t)(tmin / W);
    const long long ne = 2 * (long long)pieces;
    unsigned long long *keys, *keys2;
    unsigned int *vals, *vals2;
    CK(d.alloc(&keys, (size_t)ne));
    CK(d.alloc(&vals, (size_t)ne));
    emit_events<<<(n + TB - 1) / TB, TB>>>(d_spans, n, W, origin, d_off, keys, vals);
    CK(cudaGetLastError());
    d.release(d_spans);
    d.release(d_cnt);
    d.release(d_off);
    CK(d.alloc(&keys2, (size_t)ne));
    CK(d.alloc(&vals2, (size_t)ne));
    unsigned key_bits = bits_for(((tmax - origin) << 1) | 1);
    {
        cub::DoubleBuffer<unsigned long long> kb(keys, keys2);
        cub::DoubleBuffer<unsigned int> vb(vals, vals2);
        CK(cub::DeviceRadixSort::SortPairs(NULL, need, kb, vb, (int)ne, 0, (int)key_bits));
        CK(ensure_tmp(need));
        CK(cub::DeviceRadixSort::SortPairs(tmp, need, kb, vb, (int)ne, 0, (int)key_bits));
        if (kb.Current() != keys) {
            d.release(keys);
            keys = kb.Current();
        } else {
            d.release(keys2);
        }
        if (vb.Current() != vals) {
            d.release(vals);
            vals = vb.Current();
        } else {
            d.release(vals2);
        }
    }
    const int eb = (int)((ne + TB - 1) / TB);
    int *dk;
    CK(d.alloc(&dk, (size_t)ne));
    deltas<<<eb, TB>>>(keys, ne, dk);
    CK(cudaGetLastError());
    CK(cub::DeviceScan::InclusiveSum(NULL, need, dk, dk, (int)ne));
    CK(ensure_tmp(need));
    CK(cub::DeviceScan::InclusiveSum(tmp, need, dk, dk, (int)ne));
    unsigned long long *q, *wkey, *B;
    Pair *wval;
    CK(d.alloc(&q, (size_t)ne));
    CK(d.alloc(&wkey, (size_t)ne));
    CK(d.alloc(&wval, (size_t)ne));
    intervals<<<eb, TB>>>(keys, dk, ne, W, q, wkey, wval);
    CK(cudaGetLastError());
    d.release(dk);
    /* per window busy and pool */
    unsigned long long *wkey_out, *n_runs;
    Pair *wval_out;
    CK(d.alloc(&wkey_out, (size_t)ne));
    CK(d.alloc(&wval_out, (size_t)ne));
    CK(d.alloc(&n_runs, 1));
    CK(cub::DeviceReduce::ReduceByKey(NULL, need, wkey, wkey_out, wval, wval_out, n_runs, PairSum(),
                                      (int)ne));
    CK(ensure_tmp(need));
    CK(cub::DeviceReduce::ReduceByKey(tmp, need, wkey, wkey_out, wval, wval_out, n_runs, PairSum(),
                                      (int)ne));
    unsigned long long h_runs = 0;
    CK(cudaMemcpy(&h_runs, n_runs, sizeof h_runs, cudaMemcpyDeviceToHost));
    unsigned long long *h_wkey = (unsigned long long *)gm_xmalloc((h_runs + 1) * sizeof *h_wkey);
    Pair *h_wval = (Pair *)gm_xmalloc((h_runs + 1) * sizeof *h_wval);
    cudaError_t e1 = cudaMemcpy(h_wkey, wkey_out, h_runs * sizeof *h_wkey, cudaMemcpyDeviceToHost);
    cudaError_t e2 = cudaMemcpy(h_wval, wval_out, h_runs * sizeof *h_wval, cudaMemcpyDeviceToHost);
    if (e1 != cudaSuccess || e2 != cudaSuccess) {
        free(h_wkey);
        free(h_wval);
        CK(e1 != cudaSuccess ? e1 : e2);
    }
    d.release(wkey);
    d.release(wval);
    d.release(wkey_out);
    d.release(wval_out);
    size_t nw = 0;
    gm_gpu_win *wins = (gm_gpu_win *)gm_xmalloc((h_runs + 1) * sizeof *wins);
    for (unsigned long long i = 0; i < h_runs; i++) {
        if (h_wval[i].a > 0)
            wins[nw++] = gm_gpu_win{(int64_t)h_wkey[i] + w_origin, (int64_t)h_wval[i].a,
                                    (int64_t)h_wval[i].b};
    }
    free(h_wkey);
    free(h_wval);
    /* B: exclusive scan of q */
    int rc = 0;
    do {
        cudaError_t e;
        if ((e = d.alloc(&B, (size_t)ne)) != cudaSuccess ||
            (e = cub::DeviceScan::ExclusiveSum(NULL, need, q, B, (int)ne)) != cudaSuccess ||
            (e = ensure_tmp(need)) != cudaSuccess ||
            (e = cub::DeviceScan::ExclusiveSum(tmp, need, q, B, (int)ne)) != cudaSuccess) {
            rc = gm_fail(err, err_len, GM_EIO, "CUDA sweep: scan of B: %s", cudaGetErrorString(e));
            break;
        }
        d.release(q);
        unsigned long long *ckey, *ckey2;
        Pair *cval, *cval2;
        if ((e = d.alloc(&ckey, (size_t)ne)) != cudaSuccess ||
            (e = d.alloc(&cval, (size_t)ne)) != cudaSuccess) {
            rc = gm_fail(err, err_len, GM_ENOMEM, "CUDA sweep: %s", cudaGetErrorString(e));
            break;
        }
        contributions<<<eb, TB>>>(keys, vals, B, ne, W, n_owners, ckey, cval);
        if ((e = cudaGetLastError()) != cudaSuccess) {
            rc = gm_fail(err, err_len, GM_EIO, "CUDA sweep: %s", cudaGetErrorString(e));
            break;
        }
        d.release(keys);
        d.release(vals);
        d.release(B);
        uint64_t n_win_rel = (tmax - 1 - origin) / W + 1;
        unsigned cell_bits = bits_for(n_win_rel * (uint64_t)n_owners);
        if ((e = d.alloc(&ckey2, (size_t)ne)) != cudaSuccess ||
            (e = d.alloc(&cval2, (size_t)ne)) != cudaSuccess) {
            rc = gm_fail(err, err_len, GM_ENOMEM, "CUDA sweep: %s", cudaGetErrorString(e));
            break;
        }
        cub::DoubleBuffer<unsigned long long> kb(ckey, ckey2);
        cub::DoubleBuffer<Pair> vb(cval, cval2);
        if ((e = cub::DeviceRadixSort::SortPairs(NULL, need, kb, vb, (int)ne, 0, (int)cell_bits)) !=
                cudaSuccess ||
            (e = ensure_tmp(need)) != cudaSuccess ||
            (e = cub::DeviceRadixSort::SortPairs(tmp, need, kb, vb, (int)ne, 0, (int)cell_bits)) !=
                cudaSuccess) {
            rc = gm_fail(err, err_len, GM_EIO, "CUDA sweep: sort of cells: %s",
                         cudaGetErrorString(e));
            break;
        }
        /* reduce into the other halves of the double buffers */
        unsigned long long *rkey = kb.Alternate();
        Pair *rval = vb.Alternate();
        if ((e = cub::DeviceReduce::ReduceByKey(NULL, need, kb.Current(), rkey, vb.Current(), rval,
                                                n_runs, PairSum(), (int)ne)) != cudaSuccess ||
            (e = ensure_tmp(need)) != cudaSuccess ||
            (e = cub::DeviceReduce::ReduceByKey(tmp, need, kb.Current(), rkey, vb.Current(), rval,
                                                n_runs, PairSum(), (int)ne)) != cudaSuccess ||
            (e = cudaMemcpy(&h_runs, n_runs, sizeof h_runs, cudaMemcpyDeviceToHost)) !=
                cudaSuccess) {
            rc = gm_fail(err, err_len, GM_EIO, "CUDA sweep: reduce of cells: %s",
                         cudaGetErrorString(e));
            break;
        }
        unsigned long long *h_ckey =
            (unsigned long long *)gm_xmalloc((h_runs + 1) * sizeof *h_ckey);
        Pair *h_cval = (Pair *)gm_xmalloc((h_runs + 1) * sizeof *h_cval);
        if ((e = cudaMemcpy(h_ckey, rkey, h_runs * sizeof *h_ckey, cudaMemcpyDeviceToHost)) !=
                cudaSuccess ||
            (e = cudaMemcpy(h_cval, rval, h_runs * sizeof *h_cval, cudaMemcpyDeviceToHost)) !=
                cudaSuccess) {
            free(h_ckey);
            free(h_cval);
            rc = gm_fail(err, err_len, GM_EIO, "CUDA sweep: copy of cells: %s",
                         cudaGetErrorString(e));
            break;
        }
        gm_gpu_cell *cells = (gm_gpu_cell *)gm_xmalloc((h_runs + 1) * sizeof *cells);
        size_t nc = 0;
        for (unsigned long long i = 0; i < h_runs; i++) {
            if (h_cval[i].b == 0)
                continue;
            cells[nc++] = gm_gpu_cell{(int64_t)(h_ckey[i] / n_owners) + w_origin,
                                      (uint32_t)(h_ckey[i] % n_owners), (int64_t)h_cval[i].a,
                                      (int64_t)h_cval[i].b};
        }
        free(h_ckey);
        free(h_cval);
        out->cells = cells;
        out->n_cells = nc;
        out->wins = wins;
        out->n_wins = nw;
        wins = NULL;
    } while (0);
    free(wins);
    return rc;
}

extern "C" int gm_gpu_sweep_cuda(const gm_gpu_span *spans, size_t n, uint64_t window_ns,
                                 uint32_t n_owners, gm_gpu_sweep *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    /* the spans themselves are checked on the GPU (scan_spans), not here: O(1) host work */
    int rc = gpu__spans_check(NULL, 0, window_ns, n_owners, err, err_len);
    if (rc)
        return rc;
    char why[160];
    if (!gm_gpu_cuda_available(why, sizeof why))
        return gm_fail(err, err_len, GM_EUNAVAIL, "CUDA sweep: %s", why);
    if (n == 0)
        return 0;
    rc = sweep_cuda(spans, n, window_ns, n_owners, out, err, err_len);
    if (rc)
        gm_gpu_sweep_free(out);
    return rc;
}
