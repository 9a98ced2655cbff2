/* Periods and invoices: a tenant's month of usage summed per line key in int128, turned into
 * invoice lines (contract tiers, discount, minimum commitment, prepaid credits), one
 * half-even rounding per line, largest-remainder allocations; and the re-rating diff.
 *
 * Invariants of an invoice (checked by gm_invoice_check(), which the tests call on every
 * invoice they build):
 *   I1. line_no runs 1..n in array order; usage lines come first, sorted by (dimension,
 *       model, site tier, card version, variant) without duplicates, then tier lines, then
 * allowance lines, then at most one discount, one commitment and one credit line, in that order.
 *   I2. a usage or tier line's amount_e18 is exactly qty * unit_price_p (* 10^6 for tokens);
 *       an allowance line's is exactly -(qty * unit_price_p), and it carries no shares.
 *   I3. every line's amount_minor is amount_e18 rounded half to even to the minor unit, so
 *       |amount_minor - amount_e18| <= half a minor unit.
 *   I4. total_minor is the sum of all lines' amount_minor; usage_minor, discount_minor,
 *       commitment_minor and credit_minor are the sums of their kinds' lines.
 *   I5. the lines' discount_minor shares add up to the discount line, their credit_minor
 *       shares to the credit line (largest remainder: the parts add up exactly).
 *   I6. discount, allowance and credit are <= 0, commitment >= 0, total >= 0, allowances do
 *       not exceed the usage, and no line's shares exceed its own amount (net of its
 *       allowance line: shares are allocated by the net amounts).
 */
#include "rating_int.h"

#include <stdlib.h>

/* ---- Periods --------------------------------------------------------------------------- */

typedef struct {
    uint64_t hash;
    int32_t model_idx; /* the model's index on the card, or -1 (keyed by name) */
    const gm_rating_card *card;
    char *model;
    const char *tier;    /* owned by the book */
    const char *variant; /* owned by the book (or static) */
    int64_t price_p[GM_DIM_COUNT];
    unsigned flags;
    gm_i128 qty[GM_DIM_COUNT];
} period_entry;

struct gm_rating_period {
    const gm_rating_book *book;
    char *tenant;
    int64_t start_us, end_us;
    size_t n, cap;
    period_entry *e;
    uint32_t *slots; /* open addressing over e[]: index + 1, 0 = empty */
    size_t slots_mask;
};

gm_rating_period *gm_rating_period_new(const gm_rating_book *book, const char *tenant,
                                       int64_t month_us)
{
    if (!tenant)
        return NULL;
    gm_rating_period *p = gm_xcalloc(1, sizeof *p);
    p->book = book;
    p->tenant = gm_xstrdup(tenant);
    p->start_us = gm_month_start(month_us);
    p->end_us = gm_month_next(month_us);
    return p;
}

void gm_rating_period_free(gm_rating_period *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->e[i].model);
    free(p->e);
    free(p->slots);
    free(p->tenant);
    free(p);
}

int64_t gm_rating_period_start_us(const gm_rating_period *p)
{
    return p->start_us;
}

int64_t gm_rating_period_end_us(const gm_rating_period *p)
{
    return p->end_us;
}

static int period_check(const gm_rating_period *p, const char *tenant, int64_t time_us, char *err,
                        size_t err_len)
{
    if (!tenant)
        return gm_fail(err, err_len, GM_EINVAL, "usage without a tenant added to a period");
    if (strcmp(tenant, p->tenant) != 0)
        return gm_fail(err, err_len, GM_EINVAL, "usage of tenant %s added to the period of %s",
                       tenant, p->tenant);
    if (time_us < p->start_us || time_us >= p->end_us) {
        char t[40], s[40];
        gm_time_format(time_us, t, sizeof t);
        gm_time_format(p->start_us, s, sizeof s);
        return gm_fail(err, err_len, GM_EINVAL, "usage at %s is outside the month from %s", t, s);
    }
    return 0;
}

/* The entry of (card version, model, tier), created with its prices when new. The table
 * holds entry indexes + 1 (0 = empty), probed by a hash of the key's parts; no key string is
 * built per event. */
static uint64_t entry_hash(const gm_rating_card *card, int32_t model_idx, const char *model,
                           const char *tier, const char *variant)
{
    /* A model listed on the card is keyed by its index, others by their name. */
    uint64_t h = model_idx >= 0 ? (uint64_t)model_idx * 0xD6E8FEB86659FD93ull
                                : rating__hash(model, strlen(model));
    if (variant[0]) /* by its text: equal variants of two context rows are one key */
        h ^= rating__hash(variant, strlen(variant)) * 0x94D049BB133111EBull;
    h ^= (uint64_t)(uintptr_t)card * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)(uintptr_t)tier * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

static void period_grow(gm_rating_period *p)
{
    size_t cap = p->slots_mask ? (p->slots_mask + 1) * 2 : 64;
    uint32_t *slots = gm_xcalloc(cap, sizeof *slots);
    for (size_t i = 0; i < p->n; i++) {
        size_t k = p->e[i].hash & (cap - 1);
        while (slots[k])
            k = (k + 1) & (cap - 1);
        slots[k] = (uint32_t)i + 1;
    }
    free(p->slots);
    p->slots = slots;
    p->slots_mask = cap - 1;
}

static period_entry *period_entry_get(gm_rating_period *p, const gm_rating_card *card,
                                      int32_t model_idx, const char *model, const char *tier,
                                      const char *variant, const int64_t price_p[GM_DIM_COUNT],
                                      unsigned flags)
{
    uint64_t h = entry_hash(card, model_idx, model, tier, variant);
    if (p->slots) {
        for (size_t k = h & p->slots_mask; p->slots[k]; k = (k + 1) & p->slots_mask) {
            period_entry *e = &p->e[p->slots[k] - 1];
            if (e->hash == h && e->card == card && e->tier == tier && e->model_idx == model_idx &&
                (model_idx >= 0 || !strcmp(e->model, model)) &&
                (e->variant == variant || !strcmp(e->variant, variant)))
                return e;
        }
    }
    if ((p->n + 1) * 2 > (p->slots ? p->slots_mask + 1 : 0))
        period_grow(p);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->e = gm_xrealloc(p->e, p->cap * sizeof *p->e);
    }
    period_entry *e = &p->e[p->n];
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->model_idx = model_idx;
    e->card = card;
    e->model = gm_xstrdup(model);
    e->tier = tier;
    e->variant = variant;
    memcpy(e->price_p, price_p, sizeof e->price_p);
    e->flags = flags;
    size_t k = h & p->slots_mask;
    while (p->slots[k])
        k = (k + 1) & p->slots_mask;
    p->slots[k] = (uint32_t)++p->n;
    return e;
}

static int entry_add(period_entry *e, const gm_i128 qty[GM_DIM_COUNT], char *err, size_t err_len)
{
    gm_i128 sum[GM_DIM_COUNT];
    for (int d = 0; d < GM_DIM_COUNT; d++)
        if (gm_i128_add(e->qty[d], qty[d], &sum[d]))
            return gm_fail(err, err_len, GM_ERANGE,
                           "model %s: the month's %s quantity overflows int128", e->model,
                           gm_dim_name((gm_dim)d));
    memcpy(e->qty, sum, sizeof sum);
    return 0;
}

int gm_rating_period_add_event(gm_rating_period *p, const gm_usage *u, gm_event_price *out,
                               char *err, size_t err_len)
{
    int rc = period_check(p, u->tenant, u->time_us, err, err_len);
    if (rc)
        return rc;
    gm_event_price ep;
    rating__resolved r;
    if ((rc = rating__qty_check(u, err, err_len)) ||
        (rc = rating__resolve(p->book, u->tenant, u->model, u->site, u->time_us, u->service_tier,
                              rating__prompt(u), &r, err, err_len)) ||
        (rc = rating__price_fill(u, &r, &ep, err, err_len)))
        return rc;
    period_entry *e = period_entry_get(p, r.card, r.model, u->model, ep.site_tier, ep.variant,
                                       ep.unit_price_p, ep.flags);
    gm_i128 q[GM_DIM_COUNT];
    for (int d = 0; d < GM_DIM_COUNT; d++)
        q[d] = u->qty[d];
    /* Requests are metered only where a fee applies (as the rater's charges are). */
    if (!ep.unit_price_p[GM_DIM_REQUEST])
        q[GM_DIM_REQUEST] = 0;
    if ((rc = entry_add(e, q, err, err_len)))
        return rc;
    e->flags |= ep.flags; /* the key's flags are the union over its usage: order-independent */
    if (out)
        *out = ep;
    return 0;
}

int gm_rating_period_add_sum(gm_rating_period *p, const gm_usage_sum *s, char *err, size_t err_len)
{
    int rc = period_check(p, p->tenant, s->time_us, err, err_len);
    if (rc)
        return rc;
    for (int d = 0; d < GM_DIM_COUNT; d++)
        if (s->qty[d] < 0)
            return gm_fail(err, err_len, GM_EINVAL, "usage sum: %s quantity is negative",
                           gm_dim_name((gm_dim)d));
    /* Priced as gm_rating_price_charge prices the charges' variant: one pricing path. */
    gm_rating_svc svc;
    int64_t prompt;
    rating__resolved r;
    if ((rc = rating__variant_prompt(s->variant, &svc, &prompt, err, err_len)) ||
        (rc = rating__resolve(p->book, p->tenant, s->model, s->site, s->time_us, svc, prompt, &r,
                              err, err_len)))
        return rc;
    period_entry *e = period_entry_get(p, r.card, r.model, s->model, r.card->tier_names[r.tier],
                                       r.variant, r.price_p, r.flags);
    gm_i128 q[GM_DIM_COUNT];
    memcpy(q, s->qty, sizeof q);
    if (!r.price_p[GM_DIM_REQUEST]) /* metered only where a fee applies, as add_event */
        q[GM_DIM_REQUEST] = 0;
    if ((rc = entry_add(e, q, err, err_len)))
        return rc;
    e->flags |= r.flags;
    return 0;
}

/* ---- Tier rules ------------------------------------------------------------------------ */

/* Quantity priced by each band for the month's quantity q. Graduated: the units inside the
 * band (bounds inclusive: up_to = 1000000 prices units 1..1000000). Volume: all of q in the
 * first band whose up_to >= q. */
static void tier_split(const rating__tier_rule *r, gm_i128 q, gm_i128 *qb)
{
    gm_i128 lower = 0;
    bool placed = false;
    for (size_t b = 0; b < r->n_bands; b++) {
        gm_i128 upper = r->up_to[b];
        bool open = upper < 0;
        if (r->mode == GM_TIER_GRADUATED) {
            gm_i128 top = open || q < upper ? q : upper;
            qb[b] = top > lower ? top - lower : 0;
        } else {
            qb[b] = !placed && (open || q <= upper) ? q : 0;
            placed = placed || open || q <= upper;
        }
        lower = upper;
    }
}

int rating__tier_amount(const rating__tier_rule *r, gm_i128 q, gm_i128 *amount_e18)
{
    gm_i128 qb[64];
    if (r->n_bands > GM_ARRAY_LEN(qb))
        return GM_ERANGE;
    tier_split(r, q, qb);
    gm_i128 sum = 0;
    for (size_t b = 0; b < r->n_bands; b++) {
        gm_i128 a;
        if (gm_rating_amount_e18(r->dim, qb[b], r->price_p[b], &a) || gm_i128_add(sum, a, &sum))
            return GM_ERANGE;
    }
    *amount_e18 = sum;
    return 0;
}

/* ---- Invoices -------------------------------------------------------------------------- */

typedef struct {
    gm_invoice pub;
    size_t n_strs, cap_strs;
    char **strs;
    size_t cap_lines;
} invoice_priv;

static const char *inv_str(invoice_priv *v, const char *s)
{
    if (v->n_strs == v->cap_strs) {
        v->cap_strs = v->cap_strs ? 2 * v->cap_strs : 16;
        v->strs = gm_xrealloc(v->strs, v->cap_strs * sizeof *v->strs);
    }
    return v->strs[v->n_strs++] = gm_xstrdup(s);
}

static const char *dim_label(gm_dim d)
{
    static const char *labels[] = {"input tokens",  "cached tokens",      "output tokens",
                                   "GPU time (us)", "cache write tokens", "reasoning tokens",
                                   "requests"};
    return (unsigned)d < GM_DIM_COUNT ? labels[d] : "?";
}

/* Line descriptions are informative and may be cut at 127 bytes, never inside a UTF-8
 * character (regression: a model name with multi-byte characters cut mid-character made the
 * description invalid UTF-8 in JSON, CSV and PostgreSQL). */
GM_PRINTF(2, 3) static void describe(gm_invoice_line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->description, sizeof l->description, fmt, ap);
    va_end(ap);
    gm_utf8_trim_partial(l->description);
}

static gm_invoice_line *inv_line(invoice_priv *v)
{
    gm_invoice *inv = &v->pub;
    if (inv->n_lines == v->cap_lines) {
        v->cap_lines = v->cap_lines ? 2 * v->cap_lines : 16;
        inv->lines = gm_xrealloc(inv->lines, v->cap_lines * sizeof *inv->lines);
    }
    gm_invoice_line *l = &inv->lines[inv->n_lines++];
    memset(l, 0, sizeof *l);
    l->line_no = (int)inv->n_lines;
    l->dim = GM_DIM_COUNT;
    l->model = "";
    l->site_tier = "";
    l->variant = "";
    return l;
}

void gm_invoice_free(gm_invoice *inv)
{
    if (!inv)
        return;
    invoice_priv *v = (invoice_priv *)inv;
    for (size_t i = 0; i < v->n_strs; i++)
        free(v->strs[i]);
    free(v->strs);
    free(inv->lines);
    free(v);
}

typedef struct {
    gm_dim dim;
    const char *model, *tier;
    int64_t version;
    const char *variant;
    gm_i128 qty;
    int64_t price_p;
    unsigned flags;
    bool claimed;
} usage_item;

static int cmp_item(const void *a, const void *b)
{
    const usage_item *x = a, *y = b;
    if (x->dim != y->dim)
        return x->dim < y->dim ? -1 : 1;
    int c = strcmp(x->model, y->model);
    if (c)
        return c;
    if ((c = strcmp(x->tier, y->tier)))
        return c;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return strcmp(x->variant, y->variant); /* bytewise: "" (the base variant) first */
}

static bool rule_covers(const rating__tier_rule *r, const usage_item *it)
{
    if (r->dim != it->dim || it->variant[0]) /* tier rules cover the base variant only */
        return false;
    if (!strcmp(it->model, GM_GPU_WINDOW_MODEL))
        return false; /* attributed windows: never a tier rule's (docs/rating.md) */
    if (!r->n_models)
        return true;
    for (size_t i = 0; i < r->n_models; i++)
        if (!strcmp(r->models[i], it->model))
            return true;
    return false;
}

static gm_i128 minor_to_e18(gm_i128 minor, int mu)
{
    return minor * gm_pow10_i128(18 - mu);
}

static int line_amounts(gm_invoice_line *l, int mu, char *err, size_t err_len)
{
    if (gm_rating_amount_e18(l->dim, l->qty, l->unit_price_p, &l->amount_e18))
        return gm_fail(err, err_len, GM_ERANGE,
                       "line %d (%s): amount exceeds int128 (1.7e20 currency units)", l->line_no,
                       l->description);
    l->amount_minor = gm_rating_round_e18(l->amount_e18, mu);
    return 0;
}

/* Allocates total (>= 0) over lines [0, n) with weights w(l); writes -share into field. The
 * weight of usage and tier line i is net[i] (its amount net of its allowance line), of an
 * allowance line 0. */
static int allocate_over(gm_invoice *inv, size_t n, const gm_i128 *net, gm_i128 total, bool credit,
                         char *err, size_t err_len)
{
    gm_i128 *w = gm_xcalloc(n ? n : 1, sizeof *w), *s = gm_xcalloc(n ? n : 1, sizeof *s);
    for (size_t i = 0; i < n; i++) {
        const gm_invoice_line *l = &inv->lines[i];
        gm_i128 a = l->kind == GM_LINE_ALLOWANCE ? 0 : net[i];
        w[i] = credit ? a + l->discount_minor : a;
    }
    int rc = gm_rating_allocate(total, w, n, s);
    for (size_t i = 0; !rc && i < n; i++) {
        if (credit)
            inv->lines[i].credit_minor = -s[i];
        else
            inv->lines[i].discount_minor = -s[i];
    }
    free(w);
    free(s);
    if (rc)
        return gm_fail(err, err_len, rc, "allocating the %s over %zu lines failed",
                       credit ? "credit" : "discount", n);
    return 0;
}

int gm_rating_period_invoice(const gm_rating_period *p, const gm_invoice_opts *opts,
                             gm_invoice **out, char *err, size_t err_len)
{
    *out = NULL;
    /* The contract version in force in the month (effective_from). */
    const gm_rating_contract *k = gm_rating_book_contract_at(p->book, p->tenant, p->start_us);
    invoice_priv *v = gm_xcalloc(1, sizeof *v);
    gm_invoice *inv = &v->pub;
    inv->tenant = inv_str(v, p->tenant);
    inv->period_start_us = p->start_us;
    inv->period_end_us = p->end_us;
    const gm_rating_card *any =
        p->n ? p->e[0].card : gm_rating_book_card_at(p->book, k ? k->card_id : NULL, p->start_us);
    if (k) {
        memcpy(inv->currency, k->currency, 4);
        inv->minor_units = k->minor_units;
    } else if (any) {
        memcpy(inv->currency, any->currency, 4);
        inv->minor_units = any->minor_units;
    }
    inv->card_id = any ? inv_str(v, any->card_id) : inv_str(v, k && k->card_id ? k->card_id : "");
    if (!k)
        inv->flags |= GM_PRICE_F_UNKNOWN_TENANT;
    int mu = inv->minor_units;
    int rc = 0;

    /* Usage items, sorted by line key. */
    size_t n_items = 0;
    usage_item *items = gm_xcalloc(p->n * GM_DIM_COUNT + 1, sizeof *items);
    for (size_t i = 0; i < p->n; i++)
        for (int d = 0; d < GM_DIM_COUNT; d++)
            if (p->e[i].qty[d] > 0)
                items[n_items++] = (usage_item){(gm_dim)d,
                                                p->e[i].model,
                                                p->e[i].tier,
                                                p->e[i].card->version,
                                                p->e[i].variant,
                                                p->e[i].qty[d],
                                                p->e[i].price_p[d],
                                                p->e[i].flags,
                                                false};
    qsort(items, n_items, sizeof *items, cmp_item);

    /* Contract tier rules claim their items first; what is left are plain usage lines. */
    size_t n_rules = k ? k->n_rules : 0;
    gm_i128 *rule_q = gm_xcalloc(n_rules + 1, sizeof *rule_q);
    unsigned *rule_flags = gm_xcalloc(n_rules + 1, sizeof *rule_flags);
    for (size_t r = 0; r < n_rules && !rc; r++)
        for (size_t i = 0; i < n_items && !rc; i++)
            if (!items[i].claimed && rule_covers(&k->rules[r], &items[i])) {
                items[i].claimed = true;
                rule_flags[r] |= items[i].flags;
                if (gm_i128_add(rule_q[r], items[i].qty, &rule_q[r]))
                    rc = gm_fail(err, err_len, GM_ERANGE, "tiers[%zu]: quantity overflows", r);
            }
    for (size_t i = 0; i < n_items && !rc; i++) {
        const usage_item *it = &items[i];
        if (it->claimed)
            continue;
        gm_invoice_line *l = inv_line(v);
        l->kind = GM_LINE_USAGE;
        l->dim = it->dim;
        l->model = inv_str(v, it->model);
        l->site_tier = inv_str(v, it->tier);
        l->card_version = it->version;
        l->variant = inv_str(v, it->variant);
        l->qty = it->qty;
        l->unit_price_p = it->price_p;
        l->flags = it->flags;
        if (it->variant[0] && it->dim != GM_DIM_GPU)
            describe(l, "%s, %s, site tier %s, card %s v%lld, variant %s", dim_label(it->dim),
                     it->model, it->tier, inv->card_id, (long long)it->version, it->variant);
        else if (it->variant[0])
            describe(l, "GPU time (us), %s, site tier %s, card %s v%lld, variant %s%s", it->model,
                     it->tier, inv->card_id, (long long)it->version, it->variant,
                     it->flags & GM_PRICE_F_GPU_WINDOWS ? ", not billed: gpu_basis windows" : "");
        else if (it->dim != GM_DIM_GPU)
            describe(l, "%s, %s, site tier %s, card %s v%lld", dim_label(it->dim), it->model,
                     it->tier, inv->card_id, (long long)it->version);
        else if (!strcmp(it->model, GM_GPU_WINDOW_MODEL))
            describe(l, "GPU time (us) of attributed windows, site tier %s, card %s v%lld, %s",
                     it->tier, inv->card_id, (long long)it->version,
                     it->flags & GM_PRICE_F_GPU_WINDOWS ? "gpu_basis windows"
                                                        : "not billed: gpu_basis requests");
        else if (it->flags & GM_PRICE_F_GPU_WINDOWS)
            describe(l,
                     "GPU time (us), %s, site tier %s, card %s v%lld, not billed: gpu_basis "
                     "windows",
                     it->model, it->tier, inv->card_id, (long long)it->version);
        else
            describe(l, "%s, %s, site tier %s, card %s v%lld", dim_label(it->dim), it->model,
                     it->tier, inv->card_id, (long long)it->version);
        rc = line_amounts(l, mu, err, err_len);
    }
    for (size_t r = 0; r < n_rules && !rc; r++) {
        const rating__tier_rule *rule = &k->rules[r];
        if (rule_q[r] == 0)
            continue;
        gm_i128 qb[64];
        if (rule->n_bands > GM_ARRAY_LEN(qb)) {
            rc = gm_fail(err, err_len, GM_ERANGE, "tiers[%zu]: more than 64 bands", r);
            break;
        }
        tier_split(rule, rule_q[r], qb);
        gm_i128 lower = 0;
        for (size_t b = 0; b < rule->n_bands && !rc; b++) {
            gm_i128 upper = rule->up_to[b];
            if (qb[b] > 0) {
                gm_invoice_line *l = inv_line(v);
                l->kind = GM_LINE_TIER;
                l->dim = rule->dim;
                l->model = inv_str(v, rule->models_label);
                l->site_tier = "*";
                l->band = (int)b + 1;
                l->qty = qb[b];
                l->unit_price_p = rule->price_p[b];
                l->flags = rule_flags[r];
                char lo[48], hi[48];
                gm_i128_format(lower + 1, lo, sizeof lo);
                if (upper < 0)
                    snprintf(hi, sizeof hi, "and up");
                else
                    gm_i128_format(upper, hi, sizeof hi);
                describe(l, "%s, models %s, %s band %d (%s..%s)", dim_label(rule->dim),
                         rule->models_label, rule->mode == GM_TIER_VOLUME ? "volume" : "graduated",
                         l->band, lo, upper < 0 ? "" : hi);
                rc = line_amounts(l, mu, err, err_len);
            }
            lower = upper;
        }
    }
    free(items);
    free(rule_q);
    free(rule_flags);
    size_t n_usage = inv->n_lines;
    for (size_t i = 0; i < n_usage && !rc; i++) {
        inv->flags |= inv->lines[i].flags;
        if (gm_i128_add(inv->usage_minor, inv->lines[i].amount_minor, &inv->usage_minor) ||
            gm_i128_add(inv->exact_usage_e18, inv->lines[i].amount_e18, &inv->exact_usage_e18))
            rc = gm_fail(err, err_len, GM_ERANGE, "invoice total overflows");
    }
    /* Free allowances: per dimension, the free units fall on the dimension's usage lines in
     * line order (lines at a unit price of 0 skipped); one negative line per line they hit.
     * net[i] is usage line i's amount net of its allowance line: the weight of allocations. */
    gm_i128 *net = gm_xcalloc(n_usage + 1, sizeof *net);
    for (size_t i = 0; i < n_usage; i++)
        net[i] = inv->lines[i].amount_minor;
    for (int d = 0; d < GM_DIM_COUNT && !rc && k; d++) {
        gm_i128 left = k->allowance[d];
        for (size_t i = 0; i < n_usage && left > 0 && !rc; i++) {
            const gm_invoice_line *u = &inv->lines[i];
            if (u->kind != GM_LINE_USAGE || (int)u->dim != d || u->unit_price_p == 0)
                continue;
            gm_i128 take = u->qty < left ? u->qty : left;
            left -= take;
            gm_invoice_line *l = inv_line(v);
            u = &inv->lines[i]; /* inv_line may move the array */
            l->kind = GM_LINE_ALLOWANCE;
            l->dim = u->dim;
            l->model = u->model;
            l->site_tier = u->site_tier;
            l->card_version = u->card_version;
            l->variant = u->variant;
            l->qty = take;
            l->unit_price_p = u->unit_price_p;
            l->flags = u->flags;
            char fa[48], qa[48];
            gm_i128_format(k->allowance[d], fa, sizeof fa);
            gm_i128_format(take, qa, sizeof qa);
            describe(l, "free allowance %s of %s %s a month: %s, %s%s%s", qa, fa, dim_label(u->dim),
                     u->model, u->site_tier, u->variant[0] ? ", " : "", u->variant);
            if (gm_rating_amount_e18(l->dim, l->qty, l->unit_price_p, &l->amount_e18)) {
                rc = gm_fail(err, err_len, GM_ERANGE, "allowance line %d: amount exceeds int128",
                             l->line_no);
                break;
            }
            l->amount_e18 = -l->amount_e18;
            l->amount_minor = gm_rating_round_e18(l->amount_e18, mu);
            net[i] += l->amount_minor;
            inv->allowance_minor += l->amount_minor;
        }
    }
    size_t n_priced = inv->n_lines;                         /* usage, tier and allowance lines */
    gm_i128 base = inv->usage_minor + inv->allowance_minor; /* >= 0: each |allowance| <= its line */
    /* Discount: a percentage of the rounded usage subtotal net of allowances, rounded once. */
    gm_i128 disc = 0;
    if (!rc && k && k->discount_e4 > 0 && base > 0) {
        gm_i128 x;
        if (gm_i128_mul(base, k->discount_e4 * gm_pow10_i128(12 - mu), &x)) {
            rc = gm_fail(err, err_len, GM_ERANGE, "discount overflows");
        } else {
            gm_invoice_line *l = inv_line(v);
            l->kind = GM_LINE_DISCOUNT;
            l->amount_e18 = -x;
            l->amount_minor = gm_rating_round_e18(-x, mu);
            char pct[48];
            gm_dec_format(k->discount_e4, 4, pct, sizeof pct);
            describe(l, "discount %s%% of usage", pct);
            disc = -l->amount_minor;
            inv->discount_minor = l->amount_minor;
            rc = allocate_over(inv, n_priced, net, disc, false, err, err_len);
        }
    }
    /* Minimum commitment: the shortfall of the discounted usage; in a month that the term
     * covers in part, the minimum pro-rated by seconds (gm_rating_contract_commitment). */
    gm_i128 due = base - disc;
    size_t n_before_credit = inv->n_lines;
    int64_t cov_s = 0, month_s = 0;
    gm_i128 minimum = k ? gm_rating_contract_commitment(k, p->start_us, &cov_s, &month_s) : 0;
    inv->commitment_due_minor = minimum;
    if (!rc && k && minimum > due) {
        gm_invoice_line *l = inv_line(v);
        l->kind = GM_LINE_COMMITMENT;
        l->amount_minor = minimum - due;
        l->amount_e18 = minor_to_e18(l->amount_minor, mu);
        char c[48], m[48];
        gm_rating_format_minor(k->commitment_minor, mu, c, sizeof c);
        gm_rating_format_minor(minimum, mu, m, sizeof m);
        if (cov_s == month_s)
            describe(l, "minimum commitment %s %s shortfall", c, inv->currency);
        else
            describe(l, "minimum commitment %s %s x %lld/%lld s = %s, shortfall", c, inv->currency,
                     (long long)cov_s, (long long)month_s, m);
        inv->commitment_minor = l->amount_minor;
        due = minimum;
        n_before_credit = inv->n_lines;
    }
    /* A total over a term: this month's spend (usage + allowance + discount, what the monthly
     * minimum compares too) adds to the earlier months'; on the invoice of the term's last
     * month the rest of the total is owed as the true-up line. Amounts in minor units: exact,
     * no rounding. */
    int64_t t_first = 0, t_last = 0;
    if (!rc && k && gm_rating_contract_term_months(k, &t_first, &t_last) &&
        p->start_us >= t_first && p->start_us <= t_last) {
        gm_i128 before = opts && opts->has_term_spent ? opts->term_spent_before_minor : 0;
        if (before < 0)
            rc = gm_fail(err, err_len, GM_EINVAL,
                         "term spend before the month must not be "
                         "negative");
        inv->has_term = true;
        inv->term_last_month = p->start_us == t_last;
        inv->term_total_minor = k->term_minor;
        inv->term_spent_minor = before + due;
        inv->term_remaining_minor =
            k->term_minor > inv->term_spent_minor ? k->term_minor - inv->term_spent_minor : 0;
        if (!rc && inv->term_last_month && inv->term_remaining_minor > 0) {
            gm_invoice_line *l = inv_line(v);
            l->kind = GM_LINE_COMMITMENT;
            l->amount_minor = inv->term_remaining_minor;
            l->amount_e18 = minor_to_e18(l->amount_minor, mu);
            char c[48], sp[48], a[40], b[40];
            gm_rating_format_minor(k->term_minor, mu, c, sizeof c);
            gm_rating_format_minor(inv->term_spent_minor, mu, sp, sizeof sp);
            gm_time_format(k->commit_start_us, a, sizeof a);
            gm_time_format(k->commit_end_us, b, sizeof b);
            a[10] = b[10] = 0; /* the dates; the instants are on the contract */
            describe(l, "term commitment %s %s [%s, %s), spent %s, true-up", c, inv->currency, a, b,
                     sp);
            inv->commitment_minor = l->amount_minor;
            due += l->amount_minor;
            n_before_credit = inv->n_lines;
        }
    }
    /* Prepaid credits draw down on what is due. */
    gm_i128 balance = opts && opts->has_credit_balance ? opts->credit_balance_minor
                      : k                              ? k->credits_minor
                                                       : 0;
    if (!rc && balance < 0)
        rc = gm_fail(err, err_len, GM_EINVAL, "credit balance must not be negative");
    gm_i128 used = balance < due ? balance : due;
    if (!rc && used > 0) {
        /* The discount line is no weight: weights are usage lines net of their discount
         * share, and the commitment line. */
        gm_i128 *w = gm_xcalloc(n_before_credit, sizeof *w),
                *s = gm_xcalloc(n_before_credit, sizeof *s);
        for (size_t i = 0; i < n_before_credit; i++) {
            const gm_invoice_line *l = &inv->lines[i];
            gm_i128 a = i < n_usage ? net[i] : l->amount_minor;
            w[i] = l->kind == GM_LINE_DISCOUNT || l->kind == GM_LINE_ALLOWANCE
                       ? 0
                       : a + l->discount_minor;
        }
        rc = gm_rating_allocate(used, w, n_before_credit, s);
        for (size_t i = 0; !rc && i < n_before_credit; i++)
            inv->lines[i].credit_minor = -s[i];
        free(w);
        free(s);
        if (rc) {
            rc = gm_fail(err, err_len, rc, "allocating the credit over the lines failed");
        } else {
            gm_invoice_line *l = inv_line(v);
            l->kind = GM_LINE_CREDIT;
            l->amount_minor = -used;
            l->amount_e18 = minor_to_e18(-used, mu);
            char b[48];
            gm_rating_format_minor(balance, mu, b, sizeof b);
            describe(l, "prepaid credit (balance %s %s)", b, inv->currency);
            inv->credit_minor = -used;
        }
    }
    free(net);
    inv->credit_balance_after_minor = balance - (used > 0 ? used : 0);
    for (size_t i = 0; i < inv->n_lines && !rc; i++)
        if (gm_i128_add(inv->total_minor, inv->lines[i].amount_minor, &inv->total_minor))
            rc = gm_fail(err, err_len, GM_ERANGE, "invoice total overflows");
    if (rc) {
        gm_invoice_free(inv);
        return rc;
    }
    *out = inv;
    return 0;
}

int gm_invoice_check(const gm_invoice *inv, char *err, size_t err_len)
{
#define BAD(...) return gm_fail(err, err_len, GM_ECORRUPT, __VA_ARGS__)
    gm_i128 total = 0, usage = 0, disc = 0, commit = 0, credit = 0, disc_sh = 0, credit_sh = 0;
    gm_i128 allow = 0;
    gm_i128 half = gm_pow10_i128(18 - inv->minor_units) / 2;
    int phase = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        const gm_invoice_line *l = &inv->lines[i];
        if (l->line_no != (int)i + 1)
            BAD("I1: line %zu has line_no %d", i + 1, l->line_no);
        if ((int)l->kind < phase || (l->kind >= GM_LINE_DISCOUNT && (int)l->kind == phase &&
                                     i > 0 && inv->lines[i - 1].kind == l->kind))
            BAD("I1: line %d (%s) is out of order", l->line_no, gm_line_kind_name(l->kind));
        phase = (int)l->kind;
        if (l->kind == GM_LINE_USAGE && i > 0 && inv->lines[i - 1].kind == GM_LINE_USAGE) {
            const gm_invoice_line *q = &inv->lines[i - 1];
            usage_item a = {q->dim, q->model, q->site_tier, q->card_version, q->variant, 0,
                            0,      0,        false};
            usage_item b = {l->dim, l->model, l->site_tier, l->card_version, l->variant, 0,
                            0,      0,        false};
            if (cmp_item(&a, &b) >= 0)
                BAD("I1: usage lines %d and %d are not in strict key order", q->line_no,
                    l->line_no);
        }
        if (l->kind == GM_LINE_USAGE || l->kind == GM_LINE_TIER) {
            gm_i128 a;
            if (gm_rating_amount_e18(l->dim, l->qty, l->unit_price_p, &a) || a != l->amount_e18)
                BAD("I2: line %d: amount_e18 is not qty * unit price", l->line_no);
            if (gm_i128_add(usage, l->amount_minor, &usage))
                BAD("I4: usage sum overflows");
        }
        if (l->kind == GM_LINE_ALLOWANCE) {
            gm_i128 a;
            if (gm_rating_amount_e18(l->dim, l->qty, l->unit_price_p, &a) || -a != l->amount_e18)
                BAD("I2: allowance line %d: amount_e18 is not -(qty * unit price)", l->line_no);
            if (l->discount_minor || l->credit_minor)
                BAD("I6: allowance line %d carries a discount or credit share", l->line_no);
            allow += l->amount_minor;
        }
        if (l->amount_minor != gm_rating_round_e18(l->amount_e18, inv->minor_units))
            BAD("I3: line %d: amount_minor is not the half-even rounding of amount_e18",
                l->line_no);
        gm_i128 diff = minor_to_e18(l->amount_minor, inv->minor_units) - l->amount_e18;
        if (diff > half || -diff > half)
            BAD("I3: line %d: rounding moved the amount by more than half a minor unit",
                l->line_no);
        if (l->kind == GM_LINE_DISCOUNT)
            disc += l->amount_minor;
        if (l->kind == GM_LINE_COMMITMENT)
            commit += l->amount_minor;
        if (l->kind == GM_LINE_CREDIT)
            credit += l->amount_minor;
        if (l->discount_minor > 0 || l->credit_minor > 0)
            BAD("I6: line %d: a share is positive", l->line_no);
        if (l->kind != GM_LINE_DISCOUNT && l->kind != GM_LINE_CREDIT &&
            l->kind != GM_LINE_ALLOWANCE &&
            l->amount_minor + l->discount_minor + l->credit_minor < 0)
            BAD("I6: line %d: its shares exceed its amount", l->line_no);
        disc_sh += l->discount_minor;
        credit_sh += l->credit_minor;
        total += l->amount_minor;
    }
    if (total != inv->total_minor)
        BAD("I4: total_minor is not the sum of the rounded lines");
    if (usage != inv->usage_minor || disc != inv->discount_minor ||
        commit != inv->commitment_minor || credit != inv->credit_minor ||
        allow != inv->allowance_minor)
        BAD("I4: a subtotal differs from the sum of its lines");
    if (disc_sh != disc)
        BAD("I5: the discount shares do not add up to the discount line");
    if (credit_sh != credit)
        BAD("I5: the credit shares do not add up to the credit line");
    if (disc > 0 || credit > 0 || commit < 0 || total < 0 || allow > 0 || usage + allow < 0)
        BAD("I6: a discount, allowance or credit is positive, allowances exceed usage, or the "
            "total is negative");
    return 0;
#undef BAD
}

/* ---- Diff and re-rating ---------------------------------------------------------------- */

typedef struct {
    gm_invoice_diff pub;
    size_t n_strs;
    char **strs;
} diff_priv;

static int cmp_line_key(const gm_invoice_line *a, const gm_invoice_line *b)
{
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->dim != b->dim)
        return a->dim < b->dim ? -1 : 1;
    int c = strcmp(a->model, b->model);
    if (c)
        return c;
    if ((c = strcmp(a->site_tier, b->site_tier)))
        return c;
    if (a->card_version != b->card_version)
        return a->card_version < b->card_version ? -1 : 1;
    if (a->band != b->band)
        return a->band < b->band ? -1 : 1;
    return strcmp(a->variant, b->variant);
}

static int cmp_line_ptr(const void *a, const void *b)
{
    return cmp_line_key(*(const gm_invoice_line *const *)a, *(const gm_invoice_line *const *)b);
}

static const gm_invoice_line **sorted_lines(const gm_invoice *inv)
{
    const gm_invoice_line **s = gm_xcalloc(inv->n_lines + 1, sizeof *s);
    for (size_t i = 0; i < inv->n_lines; i++)
        s[i] = &inv->lines[i];
    qsort(s, inv->n_lines, sizeof *s, cmp_line_ptr);
    return s;
}

int gm_invoice_diff_make(const gm_invoice *before, const gm_invoice *after, gm_invoice_diff **out,
                         char *err, size_t err_len)
{
    *out = NULL;
    if (strcmp(before->tenant, after->tenant) || before->period_start_us != after->period_start_us)
        return gm_fail(err, err_len, GM_EINVAL,
                       "diff: the invoices are of different tenants or periods");
    if (memcmp(before->currency, after->currency, 4) || before->minor_units != after->minor_units)
        return gm_fail(err, err_len, GM_EINVAL, "diff: the invoices are in different currencies");
    const gm_invoice_line **a = sorted_lines(before), **b = sorted_lines(after);
    size_t cap = before->n_lines + after->n_lines;
    diff_priv *v = gm_xcalloc(1, sizeof *v);
    gm_invoice_diff *d = &v->pub;
    d->lines = gm_xcalloc(cap + 1, sizeof *d->lines);
    v->strs = gm_xcalloc(3 * cap + 1, sizeof *v->strs);
    size_t i = 0, k = 0;
    while (i < before->n_lines || k < after->n_lines) {
        int c = i == before->n_lines ? 1 : k == after->n_lines ? -1 : cmp_line_key(a[i], b[k]);
        const gm_invoice_line *x = c <= 0 ? a[i] : NULL, *y = c >= 0 ? b[k] : NULL;
        const gm_invoice_line *key = x ? x : y;
        gm_invoice_diff_line *dl = &d->lines[d->n_lines++];
        dl->kind = key->kind;
        dl->dim = key->dim;
        dl->model = v->strs[v->n_strs++] = gm_xstrdup(key->model);
        dl->site_tier = v->strs[v->n_strs++] = gm_xstrdup(key->site_tier);
        dl->card_version = key->card_version;
        dl->band = key->band;
        dl->variant = v->strs[v->n_strs++] = gm_xstrdup(key->variant);
        if (x) {
            dl->qty_before = x->qty;
            dl->unit_price_p_before = x->unit_price_p;
            dl->amount_e18_before = x->amount_e18;
            dl->amount_minor_before = x->amount_minor;
            i++;
        }
        if (y) {
            dl->qty_after = y->qty;
            dl->unit_price_p_after = y->unit_price_p;
            dl->amount_e18_after = y->amount_e18;
            dl->amount_minor_after = y->amount_minor;
            k++;
        }
        dl->delta_minor = dl->amount_minor_after - dl->amount_minor_before;
        dl->changed = !x || !y || dl->qty_before != dl->qty_after ||
                      dl->unit_price_p_before != dl->unit_price_p_after ||
                      dl->amount_e18_before != dl->amount_e18_after ||
                      dl->amount_minor_before != dl->amount_minor_after;
        d->n_changed += dl->changed;
    }
    d->total_before_minor = before->total_minor;
    d->total_after_minor = after->total_minor;
    d->delta_minor = after->total_minor - before->total_minor;
    free(a);
    free(b);
    *out = d;
    return 0;
}

void gm_invoice_diff_free(gm_invoice_diff *d)
{
    if (!d)
        return;
    diff_priv *v = (diff_priv *)d;
    for (size_t i = 0; i < v->n_strs; i++)
        free(v->strs[i]);
    free(v->strs);
    free(d->lines);
    free(v);
}

static int invoice_of(const gm_rating_book *book, const char *tenant, int64_t month_us,
                      const gm_usage *ev, size_t n, const gm_invoice_opts *opts, gm_invoice **out,
                      char *err, size_t err_len)
{
    gm_rating_period *p = gm_rating_period_new(book, tenant, month_us);
    if (!p)
        return gm_fail(err, err_len, GM_EINVAL, "re-rating: tenant is required");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = gm_rating_period_add_event(p, &ev[i], NULL, err, err_len);
    if (!rc)
        rc = gm_rating_period_invoice(p, opts, out, err, err_len);
    gm_rating_period_free(p);
    return rc;
}

int gm_rating_rerate(const gm_rating_book *before, const gm_rating_book *after, const char *tenant,
                     int64_t month_us, const gm_usage *events, size_t n,
                     const gm_invoice_opts *opts, gm_invoice_diff **diff_out,
                     gm_invoice **before_out, gm_invoice **after_out, char *err, size_t err_len)
{
    gm_invoice *a = NULL, *b = NULL;
    *diff_out = NULL;
    int rc = invoice_of(before, tenant, month_us, events, n, opts, &a, err, err_len);
    if (!rc)
        rc = invoice_of(after, tenant, month_us, events, n, opts, &b, err, err_len);
    if (!rc)
        rc = gm_invoice_diff_make(a, b, diff_out, err, err_len);
    if (rc || !before_out)
        gm_invoice_free(a);
    else
        *before_out = a;
    if (rc || !after_out)
        gm_invoice_free(b);
    else
        *after_out = b;
    return rc;
}
