/* The attribution engine: joins records to tenant and step tags, runs the sweep per device and
 * resource, and turns owner shares into per-tenant rows (rules 3-5 of gm_gpu.h).
 *
 * DESIGN. Records, tags, tenant names and step manifests are collected in any order. A run
 * gives every owner a dense id in canonical order (tenants by name, steps by id, then
 * "unattributed"), so that the tie-breaks of the largest-remainder splits do not depend on
 * arrival order, groups the records by (device, resource) in O(N), sweeps each group
 * (sweep.c, or the CUDA path) and post-processes window by window.
 *
 * Invariants of a result, checked by gm_gpu_result_check:
 *   R1. windows sorted by (device, resource, window_start), unique, window_end - start > 0.
 *   R2. rows sorted by (device, resource, window_start, tenant), unique, each in a window.
 *   R3. per window: sum(rows.gpu_ns) + unattributed_ns == busy_ns <= window length.
 *   R4. per window: busy_us == round-half-up(busy_ns / 1000) and
 *       sum(rows.gpu_us) + unattributed_us == busy_us.
 *   R5. all quantities >= 0; unattributed_records <= records.
 */
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

void gpu__map_free(gpu__map *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof *m);
}

uint64_t *gpu__map_get(const gpu__map *m, uint64_t key)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (!m->used[i])
            return NULL;
        if (m->keys[i] == key)
            return &m->vals[i];
    }
}

static void map_grow(gpu__map *m)
{
    gpu__map n = {0};
    n.cap = m->cap ? m->cap * 2 : 64;
    n.keys = gm_xmalloc(n.cap * sizeof *n.keys);
    n.vals = gm_xmalloc(n.cap * sizeof *n.vals);
    n.used = gm_xcalloc(n.cap, 1);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        size_t mask = n.cap - 1, j = mix64(m->keys[i]) & mask;
        while (n.used[j])
            j = (j + 1) & mask;
        n.used[j] = 1;
        n.keys[j] = m->keys[i];
        n.vals[j] = m->vals[i];
        n.n++;
    }
    gpu__map_free(m);
    *m = n;
}

uint64_t *gpu__map_put(gpu__map *m, uint64_t key, bool *fresh)
{
    if ((m->n + 1) * 2 > m->cap)
        map_grow(m);
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (!m->used[i]) {
            m->used[i] = 1;
            m->keys[i] = key;
            m->vals[i] = 0;
            m->n++;
            if (fresh)
                *fresh = true;
            return &m->vals[i];
        }
        if (m->keys[i] == key) {
            if (fresh)
                *fresh = false;
            return &m->vals[i];
        }
    }
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

uint32_t gpu__strtab_intern(gpu__strtab *t, const char *str)
{
    for (uint64_t h = fnv1a(str);; h = h * 31 + 1) {
        bool fresh;
        uint64_t *v = gpu__map_put(&t->by_hash, h, &fresh);
        if (fresh) {
            if (t->n == t->cap) {
                t->cap = t->cap ? t->cap * 2 : 16;
                t->s = gm_xrealloc(t->s, t->cap * sizeof *t->s);
            }
            t->s[t->n] = gm_xstrdup(str);
            *v = t->n;
            return (uint32_t)t->n++;
        }
        if (strcmp(t->s[*v], str) == 0)
            return (uint32_t)*v;
    }
}

void gpu__strtab_free(gpu__strtab *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->s[i]);
    free(t->s);
    gpu__map_free(&t->by_hash);
    memset(t, 0, sizeof *t);
}

/* Tenant and request ids follow the one rule of each (common/gm_ident.h). */
int gpu__tenant_check(const char *tenant, char *err, size_t err_len)
{
    return gm_ident_check_field(GM_IDENT_TENANT, "tenant", tenant, err, err_len);
}

int gpu__request_id_check(const char *rid, char *err, size_t err_len)
{
    return gm_ident_check_field(GM_IDENT_REQUEST_ID, "request_id", rid, err, err_len);
}

typedef struct lr_item {
    gm_i128 rem;
    size_t idx;
} lr_item;

static int cmp_lr(const void *a, const void *b)
{
    const lr_item *x = a, *y = b;
    if (x->rem != y->rem)
        return x->rem > y->rem ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

void gpu__lr_split(int64_t total, const int64_t *w, size_t n, int64_t *out)
{
    if (n == 0)
        return;
    gm_i128 W = 0;
    for (size_t i = 0; i < n; i++)
        W += w[i];
    if (W == 0) {
        int64_t q = total / (int64_t)n, r = total % (int64_t)n;
        for (size_t i = 0; i < n; i++)
            out[i] = q + ((int64_t)i < r);
        return;
    }
    int64_t given = 0;
    lr_item *items = NULL;
    size_t n_items = 0;
    for (size_t i = 0; i < n; i++) {
        gm_i128 p = (gm_i128)total * w[i];
        out[i] = (int64_t)(p / W);
        given += out[i];
    }
    int64_t left = total - given; /* < n */
    if (left > 0) {
        items = gm_xmalloc(n * sizeof *items);
        for (size_t i = 0; i < n; i++) {
            gm_i128 p = (gm_i128)total * w[i];
            items[n_items++] = (lr_item){.rem = p % W, .idx = i};
        }
        qsort(items, n_items, sizeof *items, cmp_lr);
        for (int64_t j = 0; j < left; j++)
            out[items[j].idx]++;
        free(items);
    }
}

/* ---- the engine ---------------------------------------------------------------------- */

typedef struct step_req {
    uint32_t tenant;  /* index in names */
    uint32_t request; /* index in requests, or UINT32_MAX */
    int64_t weight;
} step_req;

typedef struct step {
    uint64_t id;
    size_t first, n; /* into reqs */
} step;

typedef struct request {
    uint32_t tenant; /* names */
    uint32_t rid;    /* rids */
} request;

struct gm_gpu_attr {
    gm_gpu_attr_conf conf;
    gm_gpu_record *recs;
    size_t n_recs, cap_recs;
    gm_gpu_counts add_counts; /* what is known when records and tags are added */
    uint32_t *tag_corr;       /* the tags as added; indexed at run (tag_index) */
    uint8_t *tag_kind;
    uint64_t *tag_val;
    size_t n_tags, cap_tags;
    gpu__map tenant_of_tag; /* tenant tag -> names index */
    gpu__strtab names;      /* tenant names */
    gpu__strtab rids;       /* request ids */
    gpu__map step_of_id;    /* step id -> steps index */
    step *steps;
    size_t n_steps, cap_steps;
    step_req *reqs;
    size_t n_reqs, cap_reqs;
    request *requests;
    size_t n_requests, cap_requests;
    gpu__map request_of_key; /* (tenant << 32 | rid) -> requests index */
};

int gm_gpu_attr_new(const gm_gpu_attr_conf *conf, gm_gpu_attr **out, char *err, size_t err_len)
{
    gm_gpu_attr_conf c = conf ? *conf : (gm_gpu_attr_conf){0};
    *out = NULL;
    if (c.window_ns == 0)
        c.window_ns = GM_GPU_DEFAULT_WINDOW_NS;
    if (c.window_ns >= GM_GPU_MAX_NS)
        return gm_fail(err, err_len, GM_EINVAL, "gpu attribution: window_ns: must be below 2^62");
    if (c.prefill_weight == 0 && c.decode_weight == 0)
        c.prefill_weight = c.decode_weight = 1;
    gm_gpu_attr *a = gm_xcalloc(1, sizeof *a);
    a->conf = c;
    *out = a;
    return 0;
}

void gm_gpu_attr_free(gm_gpu_attr *a)
{
    if (!a)
        return;
    free(a->recs);
    free(a->tag_corr);
    free(a->tag_kind);
    free(a->tag_val);
    gpu__map_free(&a->tenant_of_tag);
    gpu__strtab_free(&a->names);
    gpu__strtab_free(&a->rids);
    gpu__map_free(&a->step_of_id);
    free(a->steps);
    free(a->reqs);
    free(a->requests);
    gpu__map_free(&a->request_of_key);
    free(a);
}

int gm_gpu_attr_define_tenant(gm_gpu_attr *a, uint64_t tag, const char *tenant, char *err,
                              size_t err_len)
{
    int rc = gpu__tenant_check(tenant, err, err_len);
    if (rc)
        return rc;
    uint32_t idx = gpu__strtab_intern(&a->names, tenant);
    bool fresh;
    uint64_t *v = gpu__map_put(&a->tenant_of_tag, tag, &fresh);
    if (!fresh && *v != idx)
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "tenant tag %llu: already names tenant %s, refused %s",
                       (unsigned long long)tag, a->names.s[*v], tenant);
    *v = idx;
    return 0;
}

void gm_gpu_attr_add_records(gm_gpu_attr *a, const gm_gpu_record *recs, size_t n)
{
    if (a->n_recs + n > a->cap_recs) {
        a->cap_recs = (a->n_recs + n) + a->cap_recs / 2 + 16;
        a->recs = gm_xrealloc(a->recs, a->cap_recs * sizeof *a->recs);
    }
    for (size_t i = 0; i < n; i++) {
        const gm_gpu_record *r = &recs[i];
        a->add_counts.records++;
        if (r->start_ns == 0 && r->end_ns == 0) {
            a->add_counts.zero_timestamps++;
            continue;
        }
        if (r->end_ns < r->start_ns || r->end_ns >= GM_GPU_MAX_NS || r->resource > 1) {
            a->add_counts.inverted++;
            continue;
        }
        if (r->end_ns == r->start_ns) {
            a->add_counts.empty++;
            continue;
        }
        a->recs[a->n_recs++] = *r;
    }
}

void gm_gpu_attr_add_tag(gm_gpu_attr *a, uint32_t correlation_id, gm_gpu_tag_kind kind,
                         uint64_t value)
{
    if (a->n_tags == a->cap_tags) {
        a->cap_tags = a->cap_tags ? a->cap_tags * 2 : 1024;
        a->tag_corr = gm_xrealloc(a->tag_corr, a->cap_tags * sizeof *a->tag_corr);
        a->tag_kind = gm_xrealloc(a->tag_kind, a->cap_tags * sizeof *a->tag_kind);
        a->tag_val = gm_xrealloc(a->tag_val, a->cap_tags * sizeof *a->tag_val);
    }
    a->tag_corr[a->n_tags] = correlation_id;
    a->tag_kind[a->n_tags] = kind == GM_GPU_TAG_STEP ? GM_GPU_TAG_STEP : GM_GPU_TAG_TENANT;
    a->tag_val[a->n_tags++] = value;
}

int gm_gpu_attr_add_step(gm_gpu_attr *a, uint64_t step_id, const gm_gpu_step_request *reqs,
                         size_t n, char *err, size_t err_len)
{
    if (n == 0)
        return gm_fail(err, err_len, GM_EINVAL, "step %llu: manifest: must list a request",
                       (unsigned long long)step_id);
    if (gpu__map_get(&a->step_of_id, step_id))
        return gm_fail(err, err_len, GM_ECONFLICT, "step %llu: manifest: already given",
                       (unsigned long long)step_id);
    for (size_t i = 0; i < n; i++) {
        char why[160];
        if (gpu__tenant_check(reqs[i].tenant, why, sizeof why) ||
            (reqs[i].request_id && gpu__request_id_check(reqs[i].request_id, why, sizeof why)))
            return gm_fail(err, err_len, GM_EINVAL, "step %llu: request %zu: %s",
                           (unsigned long long)step_id, i, why);
        if (reqs[i].prefill_tokens < 0 || reqs[i].decode_tokens < 0)
            return gm_fail(err, err_len, GM_EINVAL,
                           "step %llu: request %zu: token counts must be >= 0",
                           (unsigned long long)step_id, i);
        gm_i128 w = (gm_i128)a->conf.prefill_weight * reqs[i].prefill_tokens +
                    (gm_i128)a->conf.decode_weight * reqs[i].decode_tokens;
        if (w >= ((gm_i128)1 << 62))
            return gm_fail(err, err_len, GM_ERANGE,
                           "step %llu: request %zu: weight must be below 2^62",
                           (unsigned long long)step_id, i);
    }
    if (a->n_reqs + n > a->cap_reqs) {
        a->cap_reqs = (a->n_reqs + n) * 2;
        a->reqs = gm_xrealloc(a->reqs, a->cap_reqs * sizeof *a->reqs);
    }
    size_t first = a->n_reqs;
    for (size_t i = 0; i < n; i++) {
        step_req sr = {.tenant = gpu__strtab_intern(&a->names, reqs[i].tenant),
                       .request = UINT32_MAX,
                       .weight =
                           (int64_t)((gm_i128)a->conf.prefill_weight * reqs[i].prefill_tokens +
                                     (gm_i128)a->conf.decode_weight * reqs[i].decode_tokens)};
        if (reqs[i].request_id) {
            uint32_t rid = gpu__strtab_intern(&a->rids, reqs[i].request_id);
            bool fresh;
            uint64_t *v =
                gpu__map_put(&a->request_of_key, ((uint64_t)sr.tenant << 32) | rid, &fresh);
            if (fresh) {
                if (a->n_requests == a->cap_requests) {
                    a->cap_requests = a->cap_requests ? a->cap_requests * 2 : 16;
                    a->requests = gm_xrealloc(a->requests, a->cap_requests * sizeof *a->requests);
                }
                a->requests[a->n_requests] = (request){.tenant = sr.tenant, .rid = rid};
                *v = a->n_requests++;
            }
            sr.request = (uint32_t)*v;
        }
        a->reqs[a->n_reqs++] = sr;
    }
    if (a->n_steps == a->cap_steps) {
        a->cap_steps = a->cap_steps ? a->cap_steps * 2 : 16;
        a->steps = gm_xrealloc(a->steps, a->cap_steps * sizeof *a->steps);
    }
    a->steps[a->n_steps] = (step){.id = step_id, .first = first, .n = n};
    *gpu__map_put(&a->step_of_id, step_id, NULL) = a->n_steps++;
    return 0;
}

/* ---- run ----------------------------------------------------------------------------- */

/* Correlation id -> tag value for one kind, built at run: a direct table when the ids are
 * dense (CUPTI hands them out in increasing order), a hash map otherwise. Of two values for
 * one id the smallest wins, whatever the order they came in. */
typedef struct tag_index {
    int dense;
    uint32_t lo;
    size_t span;
    uint64_t *vals;
    uint8_t *present;
    gpu__map map;
} tag_index;

static void tag_index_build(tag_index *ix, const gm_gpu_attr *a, uint8_t kind, int64_t *conflicts)
{
    memset(ix, 0, sizeof *ix);
    uint32_t lo = UINT32_MAX, hi = 0;
    size_t n = 0;
    for (size_t i = 0; i < a->n_tags; i++) {
        if (a->tag_kind[i] != kind)
            continue;
        n++;
        if (a->tag_corr[i] < lo)
            lo = a->tag_corr[i];
        if (a->tag_corr[i] > hi)
            hi = a->tag_corr[i];
    }
    if (n == 0)
        return;
    ix->lo = lo;
    ix->span = (size_t)(hi - lo) + 1;
    ix->dense = ix->span <= 4 * n + 4096;
    if (ix->dense) {
        ix->vals = gm_xmalloc(ix->span * sizeof *ix->vals);
        ix->present = gm_xcalloc(ix->span, 1);
    }
    for (size_t i = 0; i < a->n_tags; i++) {
        if (a->tag_kind[i] != kind)
            continue;
        uint64_t v = a->tag_val[i], *slot;
        bool fresh;
        if (ix->dense) {
            size_t k = a->tag_corr[i] - lo;
            fresh = !ix->present[k];
            ix->present[k] = 1;
            slot = &ix->vals[k];
        } else {
            slot = gpu__map_put(&ix->map, a->tag_corr[i], &fresh);
        }
        if (fresh) {
            *slot = v;
        } else if (*slot != v) {
            (*conflicts)++;
            if (v < *slot)
                *slot = v;
        }
    }
}

static const uint64_t *tag_index_get(const tag_index *ix, uint32_t corr)
{
    if (!ix->dense)
        return gpu__map_get(&ix->map, corr);
    if (corr < ix->lo || corr - ix->lo >= ix->span || !ix->present[corr - ix->lo])
        return NULL;
    return &ix->vals[corr - ix->lo];
}

static void tag_index_free(tag_index *ix)
{
    free(ix->vals);
    free(ix->present);
    gpu__map_free(&ix->map);
}

typedef struct run_ctx {
    gm_gpu_attr *a;
    uint32_t n_t;        /* tenants (names), owners [0, n_t) in name order */
    uint32_t *name_rank; /* names index -> rank */
    uint32_t *rank_name; /* rank -> names index */
    size_t *step_by_rank;
    uint32_t n_owners, unattr;
    tag_index by_tenant, by_step; /* correlation id -> tag value */
    gpu__map tenant_owner;        /* tenant tag -> owner */
    gpu__map step_owner;          /* step id -> owner */
    /* per window scratch, indexed by tenant rank */
    int64_t *t_ns, *t_k;
    uint32_t *t_touched;
    uint8_t *t_in;
    size_t n_t_touched;
    uint64_t *t_stamp; /* dedupe of tenants within one step */
    uint64_t stamp;
    int64_t *req_ns;
    uint8_t *req_seen;
    /* output */
    gm_gpu_row *rows;
    size_t n_rows, cap_rows;
    gm_gpu_window *wins;
    size_t n_wins, cap_wins;
    gm_gpu_counts counts;
} run_ctx;

static int cmp_name_idx(const void *x, const void *y, void *arg)
{
    char **s = arg;
    return strcmp(s[*(const uint32_t *)x], s[*(const uint32_t *)y]);
}

static int cmp_step_idx(const void *x, const void *y, void *arg)
{
    const step *s = arg;
    uint64_t p = s[*(const size_t *)x].id, q = s[*(const size_t *)y].id;
    return (p > q) - (p < q);
}

static uint32_t owner_of(run_ctx *R, uint32_t corr)
{
    const uint64_t *v = tag_index_get(&R->by_step, corr);
    if (v) {
        const uint64_t *o = gpu__map_get(&R->step_owner, *v);
        if (o)
            return (uint32_t)*o;
        R->counts.missing_manifest++;
    }
    v = tag_index_get(&R->by_tenant, corr);
    if (v) {
        const uint64_t *o = gpu__map_get(&R->tenant_owner, *v);
        if (o)
            return (uint32_t)*o;
        R->counts.unknown_tenant++;
        return R->unattr;
    }
    R->counts.untagged++;
    return R->unattr;
}

static void tenant_add(run_ctx *R, uint32_t rank, int64_t ns, int64_t kernels)
{
    if (!R->t_in[rank]) {
        R->t_in[rank] = 1;
        R->t_touched[R->n_t_touched++] = rank;
    }
    R->t_ns[rank] += ns;
    R->t_k[rank] += kernels;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Rules 3-5 for one window of one group: cells[0..n) are its owner cells. */
static void finish_window(run_ctx *R, uint32_t device, uint8_t resource, const gm_gpu_win *w,
                          const gm_gpu_cell *cells, size_t n)
{
    gm_gpu_attr *a = R->a;
    int64_t *weights = gm_xmalloc((n + 1) * sizeof *weights);
    int64_t *T = gm_xmalloc((n + 1) * sizeof *T);
    int64_t sum_base = 0;
    for (size_t i = 0; i < n; i++)
        sum_base += cells[i].base_ns;
    for (size_t i = 0; i < n; i++)
        weights[i] = sum_base ? cells[i].base_ns : cells[i].pieces;
    gpu__lr_split(w->pool_ns, weights, n, T); /* rule 3: the pool */
    int64_t unattr_ns = 0, unattr_k = 0, pieces = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t o = cells[i].owner;
        int64_t t = cells[i].base_ns + T[i];
        pieces += cells[i].pieces;
        if (o < R->n_t) {
            tenant_add(R, o, t, cells[i].pieces);
        } else if (o == R->unattr) {
            unattr_ns += t;
            unattr_k += cells[i].pieces;
        } else { /* rule 4: a step */
            const step *s = &a->steps[R->step_by_rank[o - R->n_t]];
            int64_t *sw = gm_xmalloc(s->n * sizeof *sw), *part = gm_xmalloc(s->n * sizeof *part);
            for (size_t j = 0; j < s->n; j++)
                sw[j] = a->reqs[s->first + j].weight;
            gpu__lr_split(t, sw, s->n, part);
            R->stamp++;
            for (size_t j = 0; j < s->n; j++) {
                const step_req *q = &a->reqs[s->first + j];
                uint32_t rank = R->name_rank[q->tenant];
                int first = R->t_stamp[rank] != R->stamp;
                R->t_stamp[rank] = R->stamp;
                tenant_add(R, rank, part[j], first ? cells[i].pieces : 0);
                if (q->request != UINT32_MAX && resource == GM_GPU_RES_KERNEL) {
                    R->req_ns[q->request] += part[j];
                    R->req_seen[q->request] = 1;
                }
            }
            free(sw);
            free(part);
        }
    }
    /* rows in tenant order; rule 5 over them and the unattributed time */
    qsort(R->t_touched, R->n_t_touched, sizeof *R->t_touched, cmp_u32);
    size_t m = R->n_t_touched;
    int64_t *uw = gm_xmalloc((m + 1) * sizeof *uw), *us = gm_xmalloc((m + 1) * sizeof *us);
    for (size_t j = 0; j < m; j++)
        uw[j] = R->t_ns[R->t_touched[j]];
    uw[m] = unattr_ns;
    int64_t busy_us = (w->busy_ns + 500) / 1000;
    gpu__lr_split(busy_us, uw, m + 1, us);
    uint64_t W = a->conf.window_ns;
    int64_t ws = (int64_t)((uint64_t)w->window * W), we = ws + (int64_t)W;
    if (R->n_rows + m > R->cap_rows) {
        R->cap_rows = (R->n_rows + m) * 2;
        R->rows = gm_xrealloc(R->rows, R->cap_rows * sizeof *R->rows);
    }
    for (size_t j = 0; j < m; j++) {
        uint32_t rank = R->t_touched[j];
        R->rows[R->n_rows++] = (gm_gpu_row){.device = device,
                                            .resource = resource,
                                            .window_start_ns = ws,
                                            .window_end_ns = we,
                                            .tenant = NULL, /* set at the end */
                                            .gpu_ns = R->t_ns[rank],
                                            .gpu_us = us[j],
                                            .kernels = R->t_k[rank]};
        /* remember the rank in the pointer slot until strings are placed */
        R->rows[R->n_rows - 1].tenant = (const char *)(uintptr_t)(rank + 1);
        R->t_ns[rank] = 0;
        R->t_k[rank] = 0;
        R->t_in[rank] = 0;
    }
    R->n_t_touched = 0;
    if (R->n_wins == R->cap_wins) {
        R->cap_wins = R->cap_wins ? R->cap_wins * 2 : 16;
        R->wins = gm_xrealloc(R->wins, R->cap_wins * sizeof *R->wins);
    }
    R->wins[R->n_wins++] = (gm_gpu_window){.device = device,
                                           .resource = resource,
                                           .window_start_ns = ws,
                                           .window_end_ns = we,
                                           .busy_ns = w->busy_ns,
                                           .busy_us = busy_us,
                                           .unattributed_ns = unattr_ns,
                                           .unattributed_us = us[m],
                                           .pool_ns = w->pool_ns,
                                           .records = pieces,
                                           .unattributed_records = unattr_k};
    free(uw);
    free(us);
    free(weights);
    free(T);
}

static int cmp_req(const void *x, const void *y, void *arg)
{
    const gm_gpu_attr *a = arg;
    const request *p = &a->requests[*(const uint32_t *)x], *q = &a->requests[*(const uint32_t *)y];
    int c = strcmp(a->names.s[p->tenant], a->names.s[q->tenant]);
    return c ? c : strcmp(a->rids.s[p->rid], a->rids.s[q->rid]);
}

void gm_gpu_result_free(gm_gpu_result *res)
{
    if (!res)
        return;
    free(res->rows);
    free(res->windows);
    free(res->requests);
    free(res->strings_);
    memset(res, 0, sizeof *res);
}

int gm_gpu_attr_run(gm_gpu_attr *a, gm_gpu_result *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    run_ctx R = {.a = a};
    R.counts = a->add_counts;
    R.n_t = (uint32_t)a->names.n;
    R.rank_name = gm_xmalloc((R.n_t + 1) * sizeof *R.rank_name);
    R.name_rank = gm_xmalloc((R.n_t + 1) * sizeof *R.name_rank);
    for (uint32_t i = 0; i < R.n_t; i++)
        R.rank_name[i] = i;
    qsort_r(R.rank_name, R.n_t, sizeof *R.rank_name, cmp_name_idx, a->names.s);
    for (uint32_t r = 0; r < R.n_t; r++)
        R.name_rank[R.rank_name[r]] = r;
    R.step_by_rank = gm_xmalloc((a->n_steps + 1) * sizeof *R.step_by_rank);
    for (size_t i = 0; i < a->n_steps; i++)
        R.step_by_rank[i] = i;
    qsort_r(R.step_by_rank, a->n_steps, sizeof *R.step_by_rank, cmp_step_idx, a->steps);
    R.n_owners = R.n_t + (uint32_t)a->n_steps + 1;
    R.unattr = R.n_owners - 1;
    tag_index_build(&R.by_tenant, a, GM_GPU_TAG_TENANT, &R.counts.tag_conflicts);
    tag_index_build(&R.by_step, a, GM_GPU_TAG_STEP, &R.counts.tag_conflicts);
    for (size_t i = 0; i < a->tenant_of_tag.cap; i++) {
        if (a->tenant_of_tag.used[i])
            *gpu__map_put(&R.tenant_owner, a->tenant_of_tag.keys[i], NULL) =
                R.name_rank[a->tenant_of_tag.vals[i]];
    }
    for (size_t r = 0; r < a->n_steps; r++)
        *gpu__map_put(&R.step_owner, a->steps[R.step_by_rank[r]].id, NULL) = R.n_t + r;
    R.t_ns = gm_xcalloc(R.n_t + 1, sizeof *R.t_ns);
    R.t_k = gm_xcalloc(R.n_t + 1, sizeof *R.t_k);
    R.t_touched = gm_xmalloc((R.n_t + 1) * sizeof *R.t_touched);
    R.t_in = gm_xcalloc(R.n_t + 1, 1);
    R.t_stamp = gm_xcalloc(R.n_t + 1, sizeof *R.t_stamp);
    R.req_ns = gm_xcalloc(a->n_requests + 1, sizeof *R.req_ns);
    R.req_seen = gm_xcalloc(a->n_requests + 1, 1);

    /* group the records by (device, resource) in O(N): count, offsets, fill */
    gpu__map gidx = {0};
    uint64_t *gkeys = NULL;
    size_t n_groups = 0, cap_groups = 0;
    uint32_t *rec_group = gm_xmalloc((a->n_recs + 1) * sizeof *rec_group);
    for (size_t i = 0; i < a->n_recs; i++) {
        uint64_t key = ((uint64_t)a->recs[i].device << 1) | a->recs[i].resource;
        bool fresh;
        uint64_t *v = gpu__map_put(&gidx, key, &fresh);
        if (fresh) {
            if (n_groups == cap_groups) {
                cap_groups = cap_groups ? cap_groups * 2 : 8;
                gkeys = gm_xrealloc(gkeys, cap_groups * sizeof *gkeys);
            }
            gkeys[n_groups] = key;
            *v = n_groups++;
        }
        rec_group[i] = (uint32_t)*v;
    }
    size_t *gcount = gm_xcalloc(n_groups + 1, sizeof *gcount);
    size_t *goff = gm_xcalloc(n_groups + 1, sizeof *goff);
    for (size_t i = 0; i < a->n_recs; i++)
        gcount[rec_group[i]]++;
    /* groups in key order */
    uint32_t *gorder = gm_xmalloc((n_groups + 1) * sizeof *gorder);
    for (size_t g = 0; g < n_groups; g++)
        gorder[g] = (uint32_t)g;
    for (size_t i = 1; i < n_groups; i++) { /* insertion sort: few groups */
        uint32_t x = gorder[i];
        size_t j = i;
        while (j > 0 && gkeys[gorder[j - 1]] > gkeys[x]) {
            gorder[j] = gorder[j - 1];
            j--;
        }
        gorder[j] = x;
    }
    size_t acc = 0;
    for (size_t g = 0; g < n_groups; g++) {
        goff[gorder[g]] = acc;
        acc += gcount[gorder[g]];
    }
    gm_gpu_span *spans = gm_xmalloc((a->n_recs + 1) * sizeof *spans);
    {
        size_t *fill = gm_xmalloc((n_groups + 1) * sizeof *fill);
        memcpy(fill, goff, (n_groups + 1) * sizeof *fill);
        for (size_t i = 0; i < a->n_recs; i++) {
            const gm_gpu_record *r = &a->recs[i];
            spans[fill[rec_group[i]]++] = (gm_gpu_span){.start_ns = r->start_ns,
                                                        .end_ns = r->end_ns,
                                                        .owner = owner_of(&R, r->correlation_id)};
        }
        free(fill);
    }
    int rc = 0;
    gpu__sweep_ws ws = {0};
    for (size_t gi = 0; gi < n_groups && rc == 0; gi++) {
        uint32_t g = gorder[gi];
        gm_gpu_sweep sw;
        rc = a->conf.use_cuda ? gm_gpu_sweep_cuda(spans + goff[g], gcount[g], a->conf.window_ns,
                                                  R.n_owners, &sw, err, err_len)
                              : gpu__sweep_cpu_ws(spans + goff[g], gcount[g], a->conf.window_ns,
                                                  R.n_owners, &ws, &sw, err, err_len);
        if (rc)
            break;
        size_t c = 0;
        for (size_t wi = 0; wi < sw.n_wins; wi++) {
            while (c < sw.n_cells && sw.cells[c].window < sw.wins[wi].window)
                c++;
            size_t c0 = c;
            while (c < sw.n_cells && sw.cells[c].window == sw.wins[wi].window)
                c++;
            finish_window(&R, (uint32_t)(gkeys[g] >> 1), (uint8_t)(gkeys[g] & 1), &sw.wins[wi],
                          sw.cells + c0, c - c0);
        }
        gm_gpu_sweep_free(&sw);
    }
    gpu__sweep_ws_free(&ws);
    free(spans);
    free(gorder);
    free(gcount);
    free(goff);
    free(rec_group);
    free(gkeys);
    gpu__map_free(&gidx);

    if (rc == 0) {
        /* strings: the tenant names and request ids, in one block owned by the result */
        size_t bytes = 0;
        for (size_t i = 0; i < a->names.n; i++)
            bytes += strlen(a->names.s[i]) + 1;
        for (size_t i = 0; i < a->rids.n; i++)
            bytes += strlen(a->rids.s[i]) + 1;
        char *block = gm_xmalloc(bytes + 1), *p = block;
        const char **name_at = gm_xmalloc((a->names.n + 1) * sizeof *name_at);
        const char **rid_at = gm_xmalloc((a->rids.n + 1) * sizeof *rid_at);
        for (size_t i = 0; i < a->names.n; i++) {
            size_t l = strlen(a->names.s[i]) + 1;
            memcpy(p, a->names.s[i], l);
            name_at[i] = p;
            p += l;
        }
        for (size_t i = 0; i < a->rids.n; i++) {
            size_t l = strlen(a->rids.s[i]) + 1;
            memcpy(p, a->rids.s[i], l);
            rid_at[i] = p;
            p += l;
        }
        for (size_t i = 0; i < R.n_rows; i++) {
            uint32_t rank = (uint32_t)((uintptr_t)R.rows[i].tenant - 1);
            R.rows[i].tenant = name_at[R.rank_name[rank]];
        }
        uint32_t *rq = gm_xmalloc((a->n_requests + 1) * sizeof *rq);
        size_t n_rq = 0;
        for (uint32_t i = 0; i < a->n_requests; i++) {
            if (R.req_seen[i])
                rq[n_rq++] = i;
        }
        qsort_r(rq, n_rq, sizeof *rq, cmp_req, a);
        gm_gpu_request_row *reqs = gm_xmalloc((n_rq + 1) * sizeof *reqs);
        for (size_t i = 0; i < n_rq; i++) {
            const request *q = &a->requests[rq[i]];
            reqs[i] = (gm_gpu_request_row){.tenant = name_at[q->tenant],
                                           .request_id = rid_at[q->rid],
                                           .gpu_ns = R.req_ns[rq[i]],
                                           .gpu_us = (R.req_ns[rq[i]] + 500) / 1000};
        }
        free(rq);
        free(name_at);
        free(rid_at);
        out->rows = R.rows;
        out->n_rows = R.n_rows;
        out->windows = R.wins;
        out->n_windows = R.n_wins;
        out->requests = reqs;
        out->n_requests = n_rq;
        out->counts = R.counts;
        out->strings_ = block;
        R.rows = NULL;
        R.wins = NULL;
    }
    free(R.rows);
    free(R.wins);
    free(R.rank_name);
    free(R.name_rank);
    free(R.step_by_rank);
    free(R.t_ns);
    free(R.t_k);
    free(R.t_touched);
    free(R.t_in);
    free(R.t_stamp);
    free(R.req_ns);
    free(R.req_seen);
    tag_index_free(&R.by_tenant);
    tag_index_free(&R.by_step);
    gpu__map_free(&R.tenant_owner);
    gpu__map_free(&R.step_owner);
    return rc;
}

/* ---- invariants ---------------------------------------------------------------------- */

static int win_cmp(const gm_gpu_window *x, uint32_t dev, uint8_t res, int64_t ws)
{
    if (x->device != dev)
        return x->device < dev ? -1 : 1;
    if (x->resource != res)
        return x->resource < res ? -1 : 1;
    return (x->window_start_ns > ws) - (x->window_start_ns < ws);
}

int gm_gpu_result_check(const gm_gpu_result *res, char *err, size_t err_len)
{
    for (size_t i = 0; i < res->n_windows; i++) {
        const gm_gpu_window *w = &res->windows[i];
        if (i && win_cmp(&res->windows[i - 1], w->device, w->resource, w->window_start_ns) >= 0)
            return gm_fail(err, err_len, GM_ECORRUPT, "R1: windows not sorted at %zu", i);
        if (w->window_end_ns <= w->window_start_ns)
            return gm_fail(err, err_len, GM_ECORRUPT, "R1: window %zu empty", i);
        if (w->busy_ns < 0 || w->busy_ns > w->window_end_ns - w->window_start_ns ||
            w->unattributed_ns < 0 || w->unattributed_us < 0 || w->records < 0 ||
            w->unattributed_records < 0 || w->unattributed_records > w->records)
            return gm_fail(err, err_len, GM_ECORRUPT, "R3/R5: window %zu: value out of range", i);
        if (w->busy_us != (w->busy_ns + 500) / 1000)
            return gm_fail(err, err_len, GM_ECORRUPT, "R4: window %zu: busy_us %lld for %lld ns", i,
                           (long long)w->busy_us, (long long)w->busy_ns);
    }
    int64_t *sum_ns = gm_xcalloc(res->n_windows + 1, sizeof *sum_ns);
    int64_t *sum_us = gm_xcalloc(res->n_windows + 1, sizeof *sum_us);
    size_t wi = 0;
    int rc = 0;
    for (size_t i = 0; i < res->n_rows && !rc; i++) {
        const gm_gpu_row *r = &res->rows[i];
        if (i) {
            const gm_gpu_row *p = &res->rows[i - 1];
            int64_t c = p->device != r->device       ? (p->device < r->device ? -1 : 1)
                        : p->resource != r->resource ? (p->resource < r->resource ? -1 : 1)
                        : p->window_start_ns != r->window_start_ns
                            ? (p->window_start_ns < r->window_start_ns ? -1 : 1)
                            : strcmp(p->tenant, r->tenant);
            if (c >= 0) {
                rc = gm_fail(err, err_len, GM_ECORRUPT, "R2: rows not sorted at %zu", i);
                break;
            }
        }
        while (wi < res->n_windows &&
               win_cmp(&res->windows[wi], r->device, r->resource, r->window_start_ns) < 0)
            wi++;
        if (wi == res->n_windows ||
            win_cmp(&res->windows[wi], r->device, r->resource, r->window_start_ns) != 0 ||
            res->windows[wi].window_end_ns != r->window_end_ns) {
            rc = gm_fail(err, err_len, GM_ECORRUPT, "R2: row %zu has no window", i);
            break;
        }
        if (r->gpu_ns < 0 || r->gpu_us < 0 || r->kernels < 0 || !r->tenant) {
            rc = gm_fail(err, err_len, GM_ECORRUPT, "R5: row %zu: value out of range", i);
            break;
        }
        sum_ns[wi] += r->gpu_ns;
        sum_us[wi] += r->gpu_us;
    }
    for (size_t i = 0; i < res->n_windows && !rc; i++) {
        const gm_gpu_window *w = &res->windows[i];
        if (sum_ns[i] + w->unattributed_ns != w->busy_ns)
            rc =
                gm_fail(err, err_len, GM_ECORRUPT,
                        "R3: window %zu: rows %lld ns + unattributed %lld ns != busy %lld ns", i,
                        (long long)sum_ns[i], (long long)w->unattributed_ns, (long long)w->busy_ns);
        else if (sum_us[i] + w->unattributed_us != w->busy_us)
            rc =
                gm_fail(err, err_len, GM_ECORRUPT,
                        "R4: window %zu: rows %lld us + unattributed %lld us != busy %lld us", i,
                        (long long)sum_us[i], (long long)w->unattributed_us, (long long)w->busy_us);
    }
    free(sum_ns);
    free(sum_us);
    return rc;
}
