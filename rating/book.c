/* The rating book (card versions grouped by card id, each with a validity timeline; tenant
 * contract versions, each in force from its effective_from month) and per-event pricing, the
 * hot path: three hash lookups, a walk over the tenant's versions (usually one), a binary
 * search over the card's timeline, no allocation. */
#include "rating_int.h"

#include <stdlib.h>

gm_rating_book *gm_rating_book_new(void)
{
    gm_rating_book *b = gm_xcalloc(1, sizeof *b);
    b->default_fam = -1;
    return b;
}

void gm_rating_book_free(gm_rating_book *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_fam; i++) {
        rating__family *f = b->fam[i];
        for (size_t k = 0; k < f->n_cards; k++)
            gm_rating_card_free(f->cards[k]);
        free(f->cards);
        free(f->seg_start);
        free(f->seg_card);
        free(f->card_id);
        free(f);
    }
    free(b->fam);
    rating__map_free(&b->fam_map);
    for (size_t i = 0; i < b->n_con; i++)
        gm_rating_contract_free(b->con[i]);
    free(b->con);
    free(b->con_fam);
    free(b->con_head);
    free(b->con_older);
    rating__map_free(&b->con_map);
    free(b);
}

/* The family of card_id, created empty when missing. */
static int32_t family_get(gm_rating_book *b, const char *card_id)
{
    int32_t i = rating__map_get(&b->fam_map, card_id);
    if (i >= 0)
        return i;
    if (b->n_fam == b->cap_fam) {
        b->cap_fam = b->cap_fam ? 2 * b->cap_fam : 4;
        b->fam = gm_xrealloc(b->fam, b->cap_fam * sizeof *b->fam);
    }
    rating__family *f = gm_xcalloc(1, sizeof *f);
    f->card_id = gm_xstrdup(card_id);
    b->fam[b->n_fam] = f;
    rating__map_put(&b->fam_map, f->card_id, strlen(f->card_id), (int32_t)b->n_fam);
    return (int32_t)b->n_fam++;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Rebuilds the timeline: at each boundary, the highest version whose validity holds it. */
static void family_timeline(rating__family *f)
{
    size_t nb = 0;
    int64_t *bounds = gm_xcalloc(2 * f->n_cards + 1, sizeof *bounds);
    for (size_t k = 0; k < f->n_cards; k++) {
        bounds[nb++] = f->cards[k]->valid_from_us;
        if (f->cards[k]->valid_until_us != GM_RATING_NO_END)
            bounds[nb++] = f->cards[k]->valid_until_us;
    }
    qsort(bounds, nb, sizeof *bounds, cmp_i64);
    free(f->seg_start);
    free(f->seg_card);
    f->seg_start = gm_xcalloc(nb + 1, sizeof *f->seg_start);
    f->seg_card = gm_xcalloc(nb + 1, sizeof *f->seg_card);
    f->n_seg = 0;
    for (size_t i = 0; i < nb; i++) {
        if (i > 0 && bounds[i] == bounds[i - 1])
            continue;
        const gm_rating_card *best = NULL;
        for (size_t k = 0; k < f->n_cards; k++) {
            const gm_rating_card *c = f->cards[k];
            if (c->valid_from_us <= bounds[i] && bounds[i] < c->valid_until_us &&
                (!best || c->version > best->version))
                best = c;
        }
        if (f->n_seg > 0 && f->seg_card[f->n_seg - 1] == best)
            continue;
        f->seg_start[f->n_seg] = bounds[i];
        f->seg_card[f->n_seg++] = best;
    }
    free(bounds);
}

const gm_rating_card *rating__family_at(const rating__family *f, int64_t t)
{
    size_t lo = 0, hi = f->n_seg; /* find the last seg_start <= t */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->seg_start[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? f->seg_card[lo - 1] : NULL;
}

static const rating__family *default_family(const gm_rating_book *b)
{
    if (b->default_fam >= 0)
        return b->fam[b->default_fam];
    /* Without a card marked "default_card", a book with one card id uses it. */
    size_t with_cards = 0;
    const rating__family *only = NULL;
    for (size_t i = 0; i < b->n_fam; i++)
        if (b->fam[i]->n_cards) {
            with_cards++;
            only = b->fam[i];
        }
    return with_cards == 1 ? only : NULL;
}

int gm_rating_book_add_parsed_card(gm_rating_book *b, gm_rating_card *c, char *err, size_t err_len)
{
    int32_t fi = rating__map_get(&b->fam_map, c->card_id);
    rating__family *f = fi >= 0 ? b->fam[fi] : NULL;
    if (f && f->n_cards && memcmp(f->currency, c->currency, 4))
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "card %s v%lld: currency %s differs from the card's other versions (%s)",
                       c->card_id, (long long)c->version, c->currency, f->currency);
    for (size_t k = 0; f && k < f->n_cards; k++)
        if (f->cards[k]->version == c->version)
            return gm_fail(err, err_len, GM_ECONFLICT,
                           "card %s v%lld: this version is already in the book (a new version "
                           "never rewrites an old one)",
                           c->card_id, (long long)c->version);
    if (c->is_default && b->default_fam >= 0 && (!f || b->default_fam != fi))
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "card %s: default_card, but card %s is already the default card", c->card_id,
                       b->fam[b->default_fam]->card_id);
    /* Will this card id price contracts that name no card (the default card)? */
    bool will_default = c->is_default;
    if (!will_default && b->default_fam < 0) {
        const rating__family *d = default_family(b);
        will_default = !d || !strcmp(d->card_id, c->card_id);
    } else if (!will_default) {
        will_default = !strcmp(b->fam[b->default_fam]->card_id, c->card_id);
    }
    for (size_t i = 0; i < b->n_con; i++) {
        const gm_rating_contract *k = b->con[i];
        bool names_it = k->card_id ? !strcmp(k->card_id, c->card_id) : will_default;
        if (names_it && (memcmp(k->currency, c->currency, 4) || k->minor_units != c->minor_units))
            return gm_fail(err, err_len, GM_ECONFLICT,
                           "card %s v%lld: currency %s, but the contract of tenant %s, which it "
                           "prices, is in %s",
                           c->card_id, (long long)c->version, c->currency, k->tenant, k->currency);
    }
    fi = family_get(b, c->card_id);
    f = b->fam[fi];
    f->cards = gm_xrealloc(f->cards, (f->n_cards + 1) * sizeof *f->cards);
    f->cards[f->n_cards++] = c;
    memcpy(f->currency, c->currency, 4);
    if (c->is_default)
        b->default_fam = fi;
    family_timeline(f);
    return 0;
}

int gm_rating_book_add_card(gm_rating_book *b, const char *json, size_t len, char *err,
                            size_t err_len)
{
    gm_rating_card *c;
    int rc = gm_rating_card_parse(json, len, &c, err, err_len);
    if (rc)
        return rc;
    rc = gm_rating_book_add_parsed_card(b, c, err, err_len);
    if (rc)
        gm_rating_card_free(c);
    return rc;
}

int gm_rating_book_add_parsed_contract(gm_rating_book *b, gm_rating_contract *k, char *err,
                                       size_t err_len)
{
    int32_t first = rating__map_get(&b->con_map, k->tenant);
    if (first >= 0 && k->effective_us == INT64_MIN)
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "contract of tenant %s: the book already has one (one contract per "
                       "tenant; a later version must state effective_from, the month from "
                       "which it applies)",
                       k->tenant);
    int32_t fi = k->card_id ? rating__map_get(&b->fam_map, k->card_id) : -1;
    const rating__family *f = k->card_id ? (fi >= 0 ? b->fam[fi] : NULL) : default_family(b);
    if (f && f->n_cards && memcmp(f->currency, k->currency, 4))
        return gm_fail(err, err_len, GM_ECONFLICT,
                       "contract of tenant %s: currency %s, but %s card %s is in %s", k->tenant,
                       k->currency, k->card_id ? "its" : "the default", f->card_id, f->currency);
    if (b->n_con == b->cap_con) {
        b->cap_con = b->cap_con ? 2 * b->cap_con : 16;
        b->con = gm_xrealloc(b->con, b->cap_con * sizeof *b->con);
        b->con_fam = gm_xrealloc(b->con_fam, b->cap_con * sizeof *b->con_fam);
        b->con_head = gm_xrealloc(b->con_head, b->cap_con * sizeof *b->con_head);
        b->con_older = gm_xrealloc(b->con_older, b->cap_con * sizeof *b->con_older);
    }
    int32_t i = (int32_t)b->n_con;
    b->con[i] = k;
    b->con_fam[i] = k->card_id ? family_get(b, k->card_id) : -1;
    b->con_head[i] = i;
    b->con_older[i] = -1;
    if (first >= 0) { /* a newer version of the tenant's contract */
        b->con_older[i] = b->con_head[first];
        b->con_head[first] = i;
    } else {
        rating__map_put(&b->con_map, k->tenant, strlen(k->tenant), i);
    }
    b->n_con++;
    return 0;
}

int gm_rating_book_add_contract(gm_rating_book *b, const char *json, size_t len, char *err,
                                size_t err_len)
{
    gm_rating_contract *k;
    int rc = gm_rating_contract_parse(json, len, &k, err, err_len);
    if (rc)
        return rc;
    rc = gm_rating_book_add_parsed_contract(b, k, err, err_len);
    if (rc)
        gm_rating_contract_free(k);
    return rc;
}

const gm_rating_card *gm_rating_book_card_at(const gm_rating_book *b, const char *card_id,
                                             int64_t time_us)
{
    const rating__family *f;
    if (card_id) {
        int32_t fi = rating__map_get(&b->fam_map, card_id);
        f = fi >= 0 ? b->fam[fi] : NULL;
    } else {
        f = default_family(b);
    }
    return f ? rating__family_at(f, time_us) : NULL;
}

int32_t rating__contract_at(const gm_rating_book *b, const char *tenant, int64_t time_us)
{
    int32_t i = rating__map_get(&b->con_map, tenant);
    if (i < 0)
        return -1;
    for (i = b->con_head[i]; i >= 0 && b->con[i]->effective_us > time_us; i = b->con_older[i])
        ;
    return i;
}

const gm_rating_contract *gm_rating_book_contract(const gm_rating_book *b, const char *tenant)
{
    int32_t i = rating__map_get(&b->con_map, tenant);
    return i >= 0 ? b->con[b->con_head[i]] : NULL;
}

const gm_rating_contract *gm_rating_book_contract_at(const gm_rating_book *b, const char *tenant,
                                                     int64_t time_us)
{
    int32_t i = rating__contract_at(b, tenant, time_us);
    return i >= 0 ? b->con[i] : NULL;
}

static int resolve_base(const gm_rating_book *b, const char *tenant, const char *model,
                        const char *site, int64_t time_us, rating__resolved *out, char *err,
                        size_t err_len)
{
    out->ctx = NULL;
    out->stated = 0;
    out->from_contract = 0;
    if (!tenant || !model || !site)
        return gm_fail(err, err_len, GM_EINVAL, "usage: tenant, model and site are required");
    unsigned flags = 0;
    int32_t ci = rating__contract_at(b, tenant, time_us);
    const gm_rating_contract *k = NULL;
    const rating__family *f;
    if (ci >= 0) {
        k = b->con[ci];
        f = b->con_fam[ci] >= 0 ? b->fam[b->con_fam[ci]] : default_family(b);
    } else {
        flags |= GM_PRICE_F_UNKNOWN_TENANT;
        f = default_family(b);
    }
    if (!f)
        return gm_fail(err, err_len, GM_ENOTFOUND,
                       "tenant %s: no default card (mark one card \"default_card\": true)", tenant);
    const gm_rating_card *c = rating__family_at(f, time_us);
    if (!c) {
        char ts[40];
        gm_time_format(time_us, ts, sizeof ts);
        return gm_fail(err, err_len, GM_ENOTFOUND,
                       "tenant %s: no version of card %s in force at %s", tenant, f->card_id, ts);
    }
    if (k && (memcmp(k->currency, c->currency, 4) || k->minor_units != c->minor_units))
        return gm_fail(err, err_len, GM_EINVAL,
                       "tenant %s: the contract is in %s but card %s v%lld is in %s", tenant,
                       k->currency, c->card_id, (long long)c->version, c->currency);
    if (!strcmp(model, GM_GPU_WINDOW_MODEL)) {
        /* Attributed GPU windows (docs/rating.md, "GPU billing basis"): only the gpu
         * dimension, at the contract's gpu_window_price under gpu_basis "windows", else 0
         * (the requests' gpu_us bill GPU time). Never a card's model entry. */
        size_t wl = strlen(site);
        int32_t wsi = rating__map_get_h(&c->site_map, site, wl, rating__hash(site, wl));
        memset(out->price_p, 0, sizeof out->price_p);
        if (wsi < 0)
            flags |= GM_PRICE_F_DEFAULT_SITE;
        if (k && k->gpu_basis == GM_GPU_BASIS_WINDOWS) {
            out->price_p[GM_DIM_GPU] = k->gpu_window_price_p;
            out->from_contract = 1u << GM_DIM_GPU;
            flags |= GM_PRICE_F_GPU_WINDOWS | GM_PRICE_F_CONTRACT_PRICE;
        }
        out->card = c;
        out->contract = k;
        out->tier = wsi >= 0 ? c->site_tier[wsi] : c->default_tier;
        out->model = -1;
        out->flags = flags;
        return 0;
    }
    size_t ml = strlen(model);
    uint64_t mh = rating__hash(model, ml);
    const rating__override *o = NULL;
    if (k && k->n_over) {
        int32_t oi = rating__map_get_h(&k->over_map, model, ml, mh);
        if (oi >= 0)
            o = &k->over[oi];
    }
    int32_t mi = rating__map_get_h(&c->model_map, model, ml, mh);
    size_t sl = strlen(site);
    int32_t si = rating__map_get_h(&c->site_map, site, sl, rating__hash(site, sl));
    int32_t tier = si >= 0 ? c->site_tier[si] : c->default_tier;
    if (si < 0)
        flags |= GM_PRICE_F_DEFAULT_SITE;
    if (mi < 0 || mi == c->default_model) {
        /* (the optional dimensions of revision 1.1 follow or default, parse_model_prices) */
        if (o && (o->mask & ((1u << GM_DIM_LEGACY_COUNT) - 1)) == (1u << GM_DIM_LEGACY_COUNT) - 1) {
            /* The contract prices every dimension of a model the card does not list. */
            memcpy(out->price_p, o->price_p, sizeof out->price_p);
            if (k->gpu_basis == GM_GPU_BASIS_WINDOWS) {
                out->price_p[GM_DIM_GPU] = 0; /* billed from the windows */
                flags |= GM_PRICE_F_GPU_WINDOWS;
            }
            out->card = c;
            out->contract = k;
            out->tier = tier;
            out->model = -1;
            out->flags = flags | GM_PRICE_F_CONTRACT_PRICE;
            out->stated = o->stated & RATING_FOLLOW_MASK;
            out->from_contract = (1u << GM_DIM_COUNT) - 1;
            out->ctx = o->ctx.n ? &o->ctx : NULL;
            return 0;
        }
        if (c->default_model < 0)
            return gm_fail(err, err_len, GM_ENOTFOUND,
                           "model %s: not on card %s v%lld, which rejects unknown models", model,
                           c->card_id, (long long)c->version);
        mi = c->default_model;
        flags |= GM_PRICE_F_DEFAULT_MODEL;
        /* A contract may re-price the card's default entry for this tenant. */
        if (!o && k && k->n_over) {
            int32_t oi = rating__map_get(&k->over_map, "default");
            if (oi >= 0)
                o = &k->over[oi];
        }
    }
    const int64_t *p = c->price + ((size_t)mi * c->n_tiers + (size_t)tier) * GM_DIM_COUNT;
    memcpy(out->price_p, p, sizeof out->price_p);
    out->stated = c->stated[(size_t)mi * c->n_tiers + (size_t)tier];
    if (o) {
        for (int d = 0; d < GM_DIM_COUNT; d++)
            if (o->mask & (1u << d)) {
                out->price_p[d] = o->price_p[d];
                if (d == GM_DIM_CACHE_WRITE || d == GM_DIM_REASONING)
                    out->stated = (out->stated & ~(1u << d)) | (o->stated & (1u << d));
            }
        /* GM_PRICE_F_CONTRACT_PRICE when one of these prices the request (rating__apply_variant:
         * a card's context row may replace them all) */
        out->from_contract = o->mask;
        if (o->mask)
            flags |= GM_PRICE_F_CONTRACT_PRICE;
    }
    if (k && k->gpu_basis == GM_GPU_BASIS_WINDOWS) {
        /* GPU time is billed from the tenant's attributed windows: never twice. */
        out->price_p[GM_DIM_GPU] = 0;
        flags |= GM_PRICE_F_GPU_WINDOWS;
    }
    out->card = c;
    out->contract = k;
    out->tier = tier;
    out->model = flags & GM_PRICE_F_DEFAULT_MODEL ? -1 : mi;
    out->flags = flags;
    /* Context rows: the contract's own for the model, else the card's (docs/rating.md,
     * "Price variants": contract prices do not override a card's context rows). */
    out->ctx = o && o->ctx.n ? &o->ctx : c->ctx && c->ctx[mi].n ? &c->ctx[mi] : NULL;
    return 0;
}

int rating__resolve(const gm_rating_book *b, const char *tenant, const char *model,
                    const char *site, int64_t time_us, gm_rating_svc svc, int64_t prompt,
                    rating__resolved *out, char *err, size_t err_len)
{
    int rc = resolve_base(b, tenant, model, site, time_us, out, err, err_len);
    if (rc)
        return rc;
    if (!strcmp(model, GM_GPU_WINDOW_MODEL)) { /* windows are no requests: no variant */
        out->variant = "";
        return 0;
    }
    return rating__apply_variant(out, svc, prompt, err, err_len);
}

const char *gm_gpu_basis_name(gm_gpu_basis b)
{
    return b == GM_GPU_BASIS_WINDOWS ? "windows" : "requests";
}

#define TOKEN_AMOUNT_MAX (GM_I128_MAX / 1000000)

int rating__price_fill(const gm_usage *u, const rating__resolved *r, gm_event_price *out, char *err,
                       size_t err_len)
{
    for (int d = 0; d < GM_DIM_COUNT; d++) {
        /* qty < 2^53 and price_p < 2^63: the product fits in int128 without a check. */
        gm_i128 a = (gm_i128)u->qty[d] * r->price_p[d];
        if (d != GM_DIM_GPU) {
            if (a > TOKEN_AMOUNT_MAX)
                return gm_fail(err, err_len, GM_ERANGE,
                               "usage %s: %s amount exceeds 1.7e20 currency units", u->tenant,
                               gm_dim_name((gm_dim)d));
            a *= 1000000;
        }
        out->amount_e18[d] = a;
        out->unit_price_p[d] = r->price_p[d];
    }
    out->card_version = r->card->version;
    out->card_id = r->card->card_id;
    memcpy(out->currency, r->card->currency, 4);
    out->minor_units = r->card->minor_units;
    out->site_tier = r->card->tier_names[r->tier];
    out->flags = r->flags;
    out->variant = r->variant;
    return 0;
}

/* The prompt that picks an event's context row: input + cached + cache_write tokens (each
 * checked <= 2^53-1, so the sum fits). */
int64_t rating__prompt(const gm_usage *u)
{
    return u->qty[GM_DIM_INPUT] + u->qty[GM_DIM_CACHED] + u->qty[GM_DIM_CACHE_WRITE];
}

int rating__qty_check(const gm_usage *u, char *err, size_t err_len)
{
    for (int d = 0; d < GM_DIM_COUNT; d++)
        if ((uint64_t)u->qty[d] > (uint64_t)GM_RATING_QTY_MAX)
            return gm_fail(err, err_len, GM_EINVAL,
                           "usage %s: %s quantity must be an integer from 0 to 2^53-1, got %lld",
                           u->tenant ? u->tenant : "?", gm_dim_name((gm_dim)d),
                           (long long)u->qty[d]);
    return 0;
}

int gm_rating_price_event(const gm_rating_book *b, const gm_usage *u, gm_event_price *out,
                          char *err, size_t err_len)
{
    int rc = rating__qty_check(u, err, err_len);
    if (rc)
        return rc;
    rating__resolved r;
    if ((rc = rating__resolve(b, u->tenant, u->model, u->site, u->time_us, u->service_tier,
                              rating__prompt(u), &r, err, err_len)))
        return rc;
    return rating__price_fill(u, &r, out, err, err_len);
}

int gm_rating_price_charge(const gm_rating_book *b, const char *tenant, const char *model,
                           const char *site, int64_t time_us, const char *variant,
                           gm_event_price *out, char *err, size_t err_len)
{
    gm_rating_svc svc;
    int64_t prompt;
    int rc = rating__variant_prompt(variant, &svc, &prompt, err, err_len);
    if (rc)
        return rc;
    rating__resolved r;
    if ((rc = rating__resolve(b, tenant, model, site, time_us, svc, prompt, &r, err, err_len)))
        return rc;
    gm_usage u = {tenant, model, site, time_us, {0}, svc};
    return rating__price_fill(&u, &r, out, err, err_len);
}

int gm_event_price_total(const gm_event_price *p, gm_i128 *total)
{
    gm_i128 t = 0;
    for (int d = 0; d < GM_DIM_COUNT; d++)
        if (gm_i128_add(t, p->amount_e18[d], &t))
            return GM_ERANGE;
    *total = t;
    return 0;
}

int64_t gm_rating_book_next_change_us(const gm_rating_book *b, const char *tenant, int64_t time_us)
{
    int32_t ci = tenant ? rating__contract_at(b, tenant, time_us) : -1;
    const rating__family *f =
        ci >= 0 && b->con_fam[ci] >= 0 ? b->fam[b->con_fam[ci]] : default_family(b);
    /* A later contract version taking effect is a change too (it may name another card). */
    int64_t next_contract = GM_RATING_NO_END;
    int32_t first = tenant ? rating__map_get(&b->con_map, tenant) : -1;
    for (int32_t i = first >= 0 ? b->con_head[first] : -1; i >= 0; i = b->con_older[i])
        if (b->con[i]->effective_us > time_us && b->con[i]->effective_us < next_contract)
            next_contract = b->con[i]->effective_us;
    if (!f)
        return next_contract;
    for (size_t i = 0; i < f->n_seg; i++)
        if (f->seg_start[i] > time_us)
            return f->seg_start[i] < next_contract ? f->seg_start[i] : next_contract;
    return next_contract;
}

int gm_rating_book_minor_units(const gm_rating_book *b, const char *currency)
{
    int known = gm_rating_currency_minor_units(currency);
    if (known >= 0)
        return known;
    for (size_t i = 0; i < b->n_fam; i++)
        for (size_t k = 0; k < b->fam[i]->n_cards; k++)
            if (!strcmp(b->fam[i]->cards[k]->currency, currency))
                return b->fam[i]->cards[k]->minor_units;
    for (size_t i = 0; i < b->n_con; i++)
        if (!strcmp(b->con[i]->currency, currency))
            return b->con[i]->minor_units;
    return -1;
}

/* A contract's multipliers x a card version's prices, or the card's multipliers x the
 * contract's own prices (whichever pair prices the tenant's requests): exact, else refused
 * naming the contract, the multiplier and the price. */
static int check_contract_svc(const gm_rating_contract *k, const gm_rating_card *c, char *err,
                              size_t err_len)
{
    size_t nm = c->n_models + (c->default_model >= 0), nt = c->n_tiers;
    rating__svc_span step = {1, 0};
    char what[400], why[900];
    int rc = 0;
    if (k->svc.present) {
        for (size_t i = 0; i < nm * nt * GM_DIM_COUNT; i++)
            rating__svc_span_add(&step, c->price[i]);
        for (size_t mi = 0; c->ctx && mi < nm; mi++)
            for (size_t r = 0; r < c->ctx[mi].n; r++)
                for (size_t i = 0; i < nt * GM_DIM_COUNT; i++)
                    rating__svc_span_add(&step, c->ctx[mi].row[r].eff[i]);
        for (size_t i = 0; !rc && i < nm * nt * GM_DIM_COUNT; i++) {
            snprintf(what, sizeof what, "card %s v%lld prices.%s.%s at site tier %s", c->card_id,
                     (long long)c->version, c->model_names[i / (nt * GM_DIM_COUNT)],
                     gm_dim_name((gm_dim)(i % GM_DIM_COUNT)),
                     c->tier_names[(i / GM_DIM_COUNT) % nt]);
            rc = rating__svc_check(&k->svc, c->price[i], (int)(i % GM_DIM_COUNT), &step, what, why,
                                   sizeof why);
        }
        for (size_t mi = 0; !rc && c->ctx && mi < nm; mi++)
            for (size_t r = 0; !rc && r < c->ctx[mi].n; r++)
                for (size_t i = 0; !rc && i < nt * GM_DIM_COUNT; i++) {
                    if (!(c->ctx[mi].row[r].mask & (1u << (i % GM_DIM_COUNT))))
                        continue;
                    snprintf(what, sizeof what,
                             "card %s v%lld prices.%s.context_tiers[%zu].prices.%s at site tier %s",
                             c->card_id, (long long)c->version, c->model_names[mi], r,
                             gm_dim_name((gm_dim)(i % GM_DIM_COUNT)),
                             c->tier_names[i / GM_DIM_COUNT]);
                    rc = rating__svc_check(&k->svc, c->ctx[mi].row[r].eff[i],
                                           (int)(i % GM_DIM_COUNT), &step, what, why, sizeof why);
                }
    } else if (c->svc.present) {
        for (size_t o = 0; o < k->n_over; o++)
            for (int d = 0; d < GM_DIM_COUNT; d++) {
                if (k->over[o].mask & (1u << d))
                    rating__svc_span_add(&step, k->over[o].price_p[d]);
                for (size_t r = 0; r < k->over[o].ctx.n; r++)
                    if (k->over[o].ctx.row[r].mask & (1u << d))
                        rating__svc_span_add(&step, k->over[o].ctx.row[r].price_p[d]);
            }
        for (size_t o = 0; !rc && o < k->n_over; o++)
            for (int d = 0; !rc && d < GM_DIM_COUNT; d++) {
                snprintf(what, sizeof what, "the contract's prices.%s.%s", k->over[o].model,
                         gm_dim_name((gm_dim)d));
                if (k->over[o].mask & (1u << d))
                    rc = rating__svc_check(&c->svc, k->over[o].price_p[d], d, &step, what, why,
                                           sizeof why);
                for (size_t r = 0; !rc && r < k->over[o].ctx.n; r++) {
                    if (!(k->over[o].ctx.row[r].mask & (1u << d)))
                        continue;
                    snprintf(what, sizeof what,
                             "the contract's prices.%s.context_tiers[%zu].prices.%s",
                             k->over[o].model, r, gm_dim_name((gm_dim)d));
                    rc = rating__svc_check(&c->svc, k->over[o].ctx.row[r].price_p[d], d, &step,
                                           what, why, sizeof why);
                }
            }
    }
    /* "contract acme: service_tiers.batch: 0.6 x card list-usd v1 prices.m.input ..." (the
     * contract's multiplier) or "contract acme: card list-usd v1 service_tiers.batch: 0.5 x the
     * contract's prices.m.input ..." (the card's) */
    if (rc && k->svc.present)
        return gm_fail(err, err_len, rc, "contract %s: %s", k->tenant, why);
    if (rc)
        return gm_fail(err, err_len, rc, "contract %s: card %s v%lld %s", k->tenant, c->card_id,
                       (long long)c->version, why);
    return 0;
}

/* A contract's prices or context rows for a model that no version of its card can price (not
 * on the card, no default entry) and that the contract does not price whole (all four
 * dimensions): every request of it would be rejected, so the contract is refused. */
static int check_contract_models(const gm_rating_contract *k, const rating__family *f, char *err,
                                 size_t err_len)
{
    const unsigned whole = (1u << GM_DIM_LEGACY_COUNT) - 1;
    if (!f || !f->n_cards)
        return 0; /* no card to check against (gm_rating_book_check_contracts names it) */
    for (size_t o = 0; o < k->n_over; o++) {
        const rating__override *ov = &k->over[o];
        bool is_def = !strcmp(ov->model, "default"), priced = false;
        if (!is_def && (ov->mask & whole) == whole)
            continue; /* the contract makes the model known for this tenant */
        for (size_t v = 0; v < f->n_cards && !priced; v++)
            priced = f->cards[v]->default_model >= 0 ||
                     (!is_def && rating__map_get(&f->cards[v]->model_map, ov->model) >= 0);
        if (priced)
            continue;
        if (is_def)
            return gm_fail(err, err_len, GM_EINVAL,
                           "contract %s: prices.default: no version of card %s has a default "
                           "entry (it rejects unknown models), so the contract's default "
                           "prices would never apply",
                           k->tenant, f->card_id);
        return gm_fail(err, err_len, GM_EINVAL,
                       "contract %s: prices.%s: model %s is on no version of card %s, which "
                       "rejects unknown models, and the contract does not price all four "
                       "dimensions (input, cached, output, gpu): every request of it would be "
                       "rejected (price all four, or name a model of the card)",
                       k->tenant, ov->model, ov->model, f->card_id);
    }
    return 0;
}

int gm_rating_book_check_service_tiers(const gm_rating_book *b, char *err, size_t err_len)
{
    for (size_t i = 0; i < b->n_con; i++) {
        const rating__family *f = b->con_fam[i] >= 0 ? b->fam[b->con_fam[i]] : default_family(b);
        int rc = check_contract_models(b->con[i], f, err, err_len);
        if (rc)
            return rc;
        for (size_t v = 0; f && v < f->n_cards; v++) {
            rc = check_contract_svc(b->con[i], f->cards[v], err, err_len);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int gm_rating_book_check_contracts(const gm_rating_book *b, char *err, size_t err_len)
{
    for (size_t i = 0; i < b->n_con; i++) {
        const gm_rating_contract *k = b->con[i];
        const rating__family *f = NULL;
        if (k->card_id) {
            int32_t fi = rating__map_get(&b->fam_map, k->card_id);
            f = fi >= 0 ? b->fam[fi] : NULL;
            if (!f || !f->n_cards)
                return gm_fail(err, err_len, GM_ENOTFOUND,
                               "contract %s: card_id: card %s does not exist (no version of it is"
                               " given)",
                               k->tenant, k->card_id);
        } else if (!(f = default_family(b))) {
            return gm_fail(err, err_len, GM_ENOTFOUND,
                           "contract %s: names no card_id and there is no default card (mark one"
                           " card \"default_card\": true)",
                           k->tenant);
        }
        for (size_t r = 0; r < k->n_rules; r++)
            for (size_t m = 0; m < k->rules[r].n_models; m++) {
                const char *name = k->rules[r].models[m];
                bool known = rating__map_get(&k->over_map, name) >= 0;
                for (size_t v = 0; v < f->n_cards && !known; v++)
                    known = rating__map_get(&f->cards[v]->model_map, name) >= 0;
                if (!known)
                    return gm_fail(err, err_len, GM_ENOTFOUND,
                                   "contract %s: tiers[%zu].models: model %s is on no version of"
                                   " card %s and not priced by the contract: the rule would never"
                                   " apply",
                                   k->tenant, r, name, f->card_id);
            }
        int rc = check_contract_models(k, f, err, err_len);
        if (rc)
            return rc;
        for (size_t v = 0; v < f->n_cards; v++) {
            rc = check_contract_svc(k, f->cards[v], err, err_len);
            if (rc)
                return rc;
        }
    }
    return 0;
}
