/* Rate card and tenant contract documents: JSON parsing and validation. Every error names
 * the field path and the rule it breaks. Format: docs/rating.md. */
#include "gm_ident.h"
#include "rating_int.h"

#include <stdlib.h>

static const char *dim_keys[GM_DIM_COUNT] = {"input",       "cached",    "output", "gpu",
                                             "cache_write", "reasoning", "request"};
static const char *const dim_keys_allowed[GM_DIM_COUNT + 1] = {
    "input", "cached", "output", "gpu", "cache_write", "reasoning", "request", NULL};

static int dim_from_name(const char *s)
{
    for (int d = 0; d < GM_DIM_COUNT; d++)
        if (!strcmp(s, dim_keys[d]))
            return d;
    return -1;
}

/* Checks that every member of object `o` is one of `allowed` (NULL-terminated), once. */
int rating__check_keys(const cJSON *o, const char *path, const char *const *allowed, char *err,
                       size_t err_len)
{
    for (const cJSON *c = o->child; c; c = c->next) {
        size_t k = 0;
        while (allowed[k] && strcmp(allowed[k], c->string))
            k++;
        if (!allowed[k]) {
            char list[256] = "";
            for (k = 0; allowed[k]; k++) {
                strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, allowed[k], sizeof list - strlen(list) - 1);
            }
            return gm_fail(err, err_len, GM_EINVAL, "%s%s%s: unknown field (allowed: %s)", path,
                           *path ? "." : "", c->string, list);
        }
        for (const cJSON *d = o->child; d != c; d = d->next)
            if (!strcmp(d->string, c->string))
                return gm_fail(err, err_len, GM_EINVAL, "%s%s%s: field appears twice", path,
                               *path ? "." : "", c->string);
    }
    return 0;
}

static int need_object(const rating__json *j, const cJSON *v, const char *path, char *err,
                       size_t err_len)
{
    if (cJSON_IsObject(v))
        return 0;
    char got[96];
    rating__json_describe(j, v, got, sizeof got);
    return gm_fail(err, err_len, GM_EINVAL, "%s: must be an object, got %s", path, got);
}

static int need_string(const rating__json *j, const cJSON *v, const char *path, char *err,
                       size_t err_len)
{
    if (cJSON_IsString(v) && v->valuestring[0])
        return 0;
    char got[96];
    rating__json_describe(j, v, got, sizeof got);
    return gm_fail(err, err_len, GM_EINVAL, "%s: must be a non-empty string, got %s", path, got);
}

/* An identifier that events carry (a tenant, model or site): one rule, common/gm_ident.h. A
 * name that breaks it could never match an event, so the document is refused. */
static int need_ident(gm_ident_kind kind, const char *s, const char *path, char *err,
                      size_t err_len)
{
    char rule[200];
    if (gm_ident_check(kind, s, strlen(s), rule, sizeof rule) == 0)
        return 0;
    return gm_fail(err, err_len, GM_EINVAL,
                   "%s: %s (a %s id must follow the rule of events' %s, 1 to %zu bytes of %s; "
                   "this one can never match an event)",
                   path, rule, gm_ident_name(kind),
                   kind == GM_IDENT_TENANT  ? "subject"
                   : kind == GM_IDENT_MODEL ? "data.model"
                                            : "data.site",
                   gm_ident_max(kind), gm_ident_charset(kind));
}

/* A decimal that must be a JSON string: refuses numbers with the reason. */
static int need_decimal_text(const rating__json *j, const cJSON *v, const char *path,
                             const char *example, char *err, size_t err_len)
{
    if (cJSON_IsString(v))
        return 0;
    char got[96];
    rating__json_describe(j, v, got, sizeof got);
    if (cJSON_IsNumber(v)) {
        size_t n;
        const char *t = rating__json_num_text(j, v, &n);
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be a decimal string like \"%s\", not %s: prices and amounts are "
                       "exact decimals, and JSON numbers are binary floats to most readers "
                       "(write \"%.*s\")",
                       path, example, got, (int)(n > 40 ? 40 : n), t);
    }
    return gm_fail(err, err_len, GM_EINVAL, "%s: must be a decimal string like \"%s\", got %s",
                   path, example, got);
}

/* Parses {"per_1m_tokens": "0.60"} (exactly one unit key) for dimension d. */
static int parse_price(const rating__json *j, const cJSON *v, gm_dim d, const char *path,
                       int64_t *price_p, char *err, size_t err_len)
{
    int rc = need_object(j, v, path, err, err_len);
    if (rc)
        return rc;
    const char *tok_units[] = {"per_token", "per_1m_tokens", NULL};
    const char *gpu_units[] = {"per_gpu_second", "per_gpu_hour", NULL};
    const char *req_units[] = {"per_request", "per_request", NULL};
    const char *const *units = d == GM_DIM_GPU       ? gpu_units
                               : d == GM_DIM_REQUEST ? req_units
                                                     : tok_units;
    if (d == GM_DIM_REQUEST && (!v->child || v->child->next))
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must have exactly \"per_request\" (e.g. {\"per_request\": \"0.001\"})",
                       path);
    if (!v->child || v->child->next)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must have exactly one of \"%s\" or \"%s\" (e.g. {\"%s\": \"0.60\"})",
                       path, units[0], units[1], units[1]);
    const cJSON *u = v->child;
    if (strcmp(u->string, units[0]) && strcmp(u->string, units[1])) {
        if (d == GM_DIM_REQUEST)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s.%s: unknown price unit for requests (allowed: per_request)", path,
                           u->string);
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s.%s: unknown price unit for %s (allowed: %s, %s)", path, u->string,
                       d == GM_DIM_GPU ? "GPU time" : "tokens", units[0], units[1]);
    }
    char sub[512];
    snprintf(sub, sizeof sub, "%s.%s", path, u->string);
    if ((rc = need_decimal_text(j, u, sub, "0.60", err, err_len)))
        return rc;
    char why[400];
    rc = gm_rating_price_convert(u->string, u->valuestring, strlen(u->valuestring), price_p, why,
                                 sizeof why);
    if (rc)
        return gm_fail(err, err_len, rc, "%s: %s", sub, why);
    return 0;
}

static int parse_time(const rating__json *j, const cJSON *v, const char *path, int64_t *us,
                      char *err, size_t err_len)
{
    int rc = need_string(j, v, path, err, err_len);
    if (rc)
        return rc;
    char why[160];
    if (gm_time_parse(v->valuestring, strlen(v->valuestring), us, why, sizeof why))
        return gm_fail(err, err_len, GM_EINVAL, "%s: must be an RFC 3339 time, got \"%s\": %s",
                       path, v->valuestring, why);
    if (*us % GM_US_PER_HOUR)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be a whole UTC hour (hourly usage sums are priced by one card "
                       "version), got \"%s\"",
                       path, v->valuestring);
    return 0;
}

static int parse_currency(const rating__json *j, const cJSON *doc, char code[4], int *mu, char *err,
                          size_t err_len)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(doc, "currency");
    int rc = need_string(j, c, "currency", err, err_len);
    if (rc)
        return rc;
    const char *s = c->valuestring;
    if (strlen(s) != 3 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' || s[2] < 'A' ||
        s[2] > 'Z')
        return gm_fail(err, err_len, GM_EINVAL,
                       "currency: must be an ISO 4217 code of three capital letters, got \"%s\"",
                       s);
    memcpy(code, s, 4);
    int known = gm_rating_currency_minor_units(s);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "minor_units");
    if (m) {
        int64_t v;
        if (rating__json_int(j, m, 4, &v)) {
            char got[96];
            rating__json_describe(j, m, got, sizeof got);
            return gm_fail(err, err_len, GM_EINVAL,
                           "minor_units: must be an integer from 0 to 4, got %s", got);
        }
        if (known >= 0 && v != known)
            return gm_fail(err, err_len, GM_EINVAL,
                           "minor_units: %s has %d minor digits (ISO 4217), got %d", s, known,
                           (int)v);
        *mu = (int)v;
    } else if (known < 0) {
        return gm_fail(err, err_len, GM_EINVAL,
                       "currency: \"%s\" is not in the built-in ISO 4217 table; state its "
                       "\"minor_units\" (0 to 4)",
                       s);
    } else {
        *mu = known;
    }
    return 0;
}

/* ---- Cards ----------------------------------------------------------------------------- */

void gm_rating_card_free(gm_rating_card *c)
{
    if (!c)
        return;
    free(c->card_id);
    size_t nm = c->n_models + (c->default_model >= 0);
    for (size_t i = 0; i < nm; i++)
        free(c->model_names ? c->model_names[i] : NULL);
    free(c->model_names);
    for (size_t i = 0; i < c->n_tiers; i++)
        free(c->tier_names[i]);
    free(c->tier_names);
    for (size_t i = 0; i < c->n_sites; i++)
        free(c->site_names[i]);
    free(c->site_names);
    free(c->site_tier);
    free(c->price);
    free(c->stated);
    free(c->rows);
    free(c->site_rows);
    for (size_t i = 0; c->ctx && i < nm; i++)
        rating__ctx_free(&c->ctx[i]);
    free(c->ctx);
    rating__map_free(&c->model_map);
    rating__map_free(&c->site_map);
    rating__map_free(&c->tier_map);
    free(c);
}

/* Parses prices.<model> into price[GM_DIM_COUNT]. The four original dimensions are required
 * when all_dims; the three of revision 1.1 are optional everywhere, and an object that does
 * not state them follows its own statements (docs/rating.md, "Token kinds"):
 *   cache_write absent: the object's input price (when it states input);
 *   reasoning absent:   the object's output price (when it states output);
 *   request absent:     0 (no fee) in a complete entry (all_dims), else inherited. */
static int parse_model_prices(const rating__json *j, const cJSON *m, const char *path,
                              bool all_dims, bool allow_ctx, int64_t price[GM_DIM_COUNT],
                              unsigned *mask, unsigned *stated, char *err, size_t err_len)
{
    int rc = need_object(j, m, path, err, err_len);
    if (rc)
        return rc;
    static const char *const allowed[] = {"input",       "cached",    "output",  "gpu",
                                          "cache_write", "reasoning", "request", NULL};
    static const char *const allowed_ctx[] = {"input",   "cached",        "output",
                                              "gpu",     "cache_write",   "reasoning",
                                              "request", "context_tiers", NULL};
    if ((rc = rating__check_keys(m, path, allow_ctx ? allowed_ctx : allowed, err, err_len)))
        return rc;
    *mask = 0;
    for (int d = 0; d < GM_DIM_COUNT; d++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(m, dim_keys[d]);
        char sub[512];
        snprintf(sub, sizeof sub, "%s.%s", path, dim_keys[d]);
        if (!p) {
            if (all_dims && d < GM_DIM_LEGACY_COUNT)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s: missing: every model states all four dimensions (input, "
                               "cached, output, gpu); write \"0\" for a free one",
                               sub);
            continue;
        }
        if ((rc = parse_price(j, p, (gm_dim)d, sub, &price[d], err, err_len)))
            return rc;
        *mask |= 1u << d;
    }
    if (stated) /* the dimensions the object states itself (before following and defaults) */
        *stated = *mask;
    static const struct {
        gm_dim dim, from;
    } follow[] = {{GM_DIM_CACHE_WRITE, GM_DIM_INPUT}, {GM_DIM_REASONING, GM_DIM_OUTPUT}};
    for (size_t i = 0; i < GM_ARRAY_LEN(follow); i++)
        if (!(*mask & (1u << follow[i].dim)) && (*mask & (1u << follow[i].from))) {
            price[follow[i].dim] = price[follow[i].from];
            *mask |= 1u << follow[i].dim;
        }
    if (all_dims && !(*mask & (1u << GM_DIM_REQUEST))) {
        price[GM_DIM_REQUEST] = 0;
        *mask |= 1u << GM_DIM_REQUEST;
    }
    return 0;
}

int rating__row_prices(const rating__json *j, const cJSON *v, const char *path,
                       int64_t price[GM_DIM_COUNT], unsigned *mask, char *err, size_t err_len)
{
    unsigned filled;
    /* a row keeps what it states: what it does not state comes from below (rating__ctx_parse) */
    return parse_model_prices(j, v, path, false, false, price, &filled, mask, err, err_len);
}

/* The card's context rows at each site tier: a stated price x the tier's multiplier, exact
 * (or refused like a tier's multiplied price); then every effective price, base and context
 * rows, x each service-tier multiplier, exact (or refused with the two nearest multipliers). */
static int card_variants(gm_rating_card *c, size_t nm, const gm_i128 *tier_mult,
                         const char *const *mult_text, char *err, size_t err_len)
{
    size_t nt = c->n_tiers;
    gm_i128 one = gm_pow10_i128(RATING_MULT_SCALE);
    for (size_t mi = 0; c->ctx && mi < nm; mi++)
        for (size_t r = 0; r < c->ctx[mi].n; r++) {
            rating__ctx_row *row = &c->ctx[mi].row[r];
            row->eff = gm_xcalloc(nt * GM_DIM_COUNT, sizeof *row->eff);
            for (size_t ti = 0; ti < nt; ti++)
                for (int d = 0; d < GM_DIM_COUNT; d++) {
                    if (!(row->mask & (1u << d))) {
                        /* cumulative: a dimension a lower row states keeps that row's price */
                        if (row->cum_mask & (1u << d))
                            row->eff[ti * GM_DIM_COUNT + d] =
                                c->ctx[mi].row[r - 1].eff[ti * GM_DIM_COUNT + d];
                        continue;
                    }
                    gm_i128 p = (gm_i128)row->price_p[d] * tier_mult[ti];
                    if (p % one != 0 || p / one > INT64_MAX) {
                        char bp[64], ep[64];
                        gm_dec_format(row->price_p[d], 12, bp, sizeof bp);
                        gm_dec_format(p, 12 + RATING_MULT_SCALE, ep, sizeof ep);
                        if (!rating__price_fits(p))
                            return gm_fail(err, err_len, GM_ERANGE,
                                           "site_tiers.%s.multiplier: %s x "
                                           "prices.%s.context_tiers[%zu].prices.%s (%s per %s) = "
                                           "%s exceeds the largest price (%s per %s)",
                                           c->tier_names[ti], mult_text[ti], c->model_names[mi], r,
                                           dim_keys[d], bp, rating__unit_word(d), ep,
                                           RATING_PRICE_MAX_TEXT, rating__unit_word(d));
                        return gm_fail(err, err_len, GM_ERANGE,
                                       "site_tiers.%s.multiplier: %s x "
                                       "prices.%s.context_tiers[%zu].prices.%s (%s per %s) = %s "
                                       "is not exact in 12 fraction digits; pick a multiplier or "
                                       "a row price that keeps it exact",
                                       c->tier_names[ti], mult_text[ti], c->model_names[mi], r,
                                       dim_keys[d], bp, rating__unit_word(d), ep);
                    }
                    row->eff[ti * GM_DIM_COUNT + d] = (int64_t)(p / one);
                }
        }
    if (!c->svc.present)
        return 0;
    rating__svc_span step = {1, 0};
    for (size_t i = 0; i < nm * nt * GM_DIM_COUNT; i++)
        rating__svc_span_add(&step, c->price[i]);
    for (size_t mi = 0; c->ctx && mi < nm; mi++)
        for (size_t r = 0; r < c->ctx[mi].n; r++)
            for (size_t i = 0; i < nt * GM_DIM_COUNT; i++)
                rating__svc_span_add(&step, c->ctx[mi].row[r].eff[i]);
    for (size_t mi = 0; mi < nm; mi++)
        for (size_t ti = 0; ti < nt; ti++)
            for (int d = 0; d < GM_DIM_COUNT; d++) {
                char what[400];
                snprintf(what, sizeof what, "prices.%s.%s at site tier %s", c->model_names[mi],
                         dim_keys[d], c->tier_names[ti]);
                int rc = rating__svc_check(&c->svc, c->price[(mi * nt + ti) * GM_DIM_COUNT + d], d,
                                           &step, what, err, err_len);
                for (size_t r = 0; !rc && c->ctx && r < c->ctx[mi].n; r++) {
                    if (!(c->ctx[mi].row[r].mask & (1u << d)))
                        continue;
                    snprintf(what, sizeof what,
                             "prices.%s.context_tiers[%zu].prices.%s at site tier %s",
                             c->model_names[mi], r, dim_keys[d], c->tier_names[ti]);
                    rc = rating__svc_check(&c->svc, c->ctx[mi].row[r].eff[ti * GM_DIM_COUNT + d], d,
                                           &step, what, err, err_len);
                }
                if (rc)
                    return rc;
            }
    return 0;
}

static int card_from_json(const rating__json *j, gm_rating_card *c, char *err, size_t err_len)
{
    const cJSON *doc = j->root;
    int rc = need_object(j, doc, "card", err, err_len);
    if (rc)
        return rc;
    static const char *const allowed[] = {
        "card_id",           "version",      "valid_from",     "valid_until",   "currency",
        "minor_units",       "default_card", "unknown_models", "prices",        "site_tiers",
        "default_site_tier", "description",  "dropped_models", "service_tiers", NULL};
    if ((rc = rating__check_keys(doc, "", allowed, err, err_len)))
        return rc;
    if ((rc = rating__svc_parse(j, cJSON_GetObjectItemCaseSensitive(doc, "service_tiers"), false,
                                &c->svc, err, err_len)))
        return rc;
    /* dropped_models: the models this version leaves out on purpose (import refuses a version
     * that drops a model with usage in its validity unless it is listed here). */
    const cJSON *dm = cJSON_GetObjectItemCaseSensitive(doc, "dropped_models");
    if (dm) {
        if (!cJSON_IsArray(dm))
            return gm_fail(err, err_len, GM_EINVAL,
                           "dropped_models: must be an array of model names");
        int k = 0;
        for (const cJSON *m = dm->child; m; m = m->next, k++) {
            char mp[64];
            snprintf(mp, sizeof mp, "dropped_models[%d]", k);
            if ((rc = need_string(j, m, mp, err, err_len)) ||
                (rc = need_ident(GM_IDENT_MODEL, m->valuestring, mp, err, err_len)))
                return rc;
        }
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "card_id");
    if ((rc = need_string(j, v, "card_id", err, err_len)))
        return rc;
    c->card_id = gm_xstrdup(v->valuestring);
    v = cJSON_GetObjectItemCaseSensitive(doc, "version");
    if (rating__json_int(j, v, GM_RATING_QTY_MAX, &c->version) || c->version < 1) {
        char got[96];
        rating__json_describe(j, v, got, sizeof got);
        return gm_fail(err, err_len, GM_EINVAL,
                       "version: must be a JSON integer from 1 to 2^53-1, got %s", got);
    }
    if ((rc = parse_time(j, cJSON_GetObjectItemCaseSensitive(doc, "valid_from"), "valid_from",
                         &c->valid_from_us, err, err_len)))
        return rc;
    c->valid_until_us = GM_RATING_NO_END;
    v = cJSON_GetObjectItemCaseSensitive(doc, "valid_until");
    if (v && !cJSON_IsNull(v)) {
        if ((rc = parse_time(j, v, "valid_until", &c->valid_until_us, err, err_len)))
            return rc;
        if (c->valid_until_us <= c->valid_from_us)
            return gm_fail(err, err_len, GM_EINVAL, "valid_until: must be after valid_from");
    }
    if ((rc = parse_currency(j, doc, c->currency, &c->minor_units, err, err_len)))
        return rc;
    v = cJSON_GetObjectItemCaseSensitive(doc, "default_card");
    if (v && !cJSON_IsBool(v))
        return gm_fail(err, err_len, GM_EINVAL, "default_card: must be true or false");
    c->is_default = v && cJSON_IsTrue(v);

    const cJSON *prices = cJSON_GetObjectItemCaseSensitive(doc, "prices");
    if ((rc = need_object(j, prices, "prices", err, err_len)))
        return rc;
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(prices, "default");
    v = cJSON_GetObjectItemCaseSensitive(doc, "unknown_models");
    if (v) {
        if (!cJSON_IsString(v) ||
            (strcmp(v->valuestring, "default") && strcmp(v->valuestring, "reject")))
            return gm_fail(err, err_len, GM_EINVAL,
                           "unknown_models: must be \"default\" (price them with "
                           "prices.default) or \"reject\"");
        c->reject_unknown = !strcmp(v->valuestring, "reject");
    }
    if (c->reject_unknown && def)
        return gm_fail(err, err_len, GM_EINVAL,
                       "prices.default: a card with \"unknown_models\": \"reject\" has no "
                       "default entry");
    if (!c->reject_unknown && !def)
        return gm_fail(err, err_len, GM_EINVAL,
                       "prices: must have a \"default\" entry for models the card does not "
                       "list, or set \"unknown_models\": \"reject\"");

    /* Models: named ones first (document order), then "default". */
    size_t n_named = 0;
    for (const cJSON *m = prices->child; m; m = m->next)
        if (strcmp(m->string, "default"))
            n_named++;
    if (n_named == 0 && !def)
        return gm_fail(err, err_len, GM_EINVAL, "prices: must list at least one model");
    c->n_models = n_named;
    c->default_model = def ? (int32_t)n_named : -1;
    size_t nm = n_named + (def != NULL);
    c->model_names = gm_xcalloc(nm, sizeof *c->model_names);
    int64_t *base = gm_xcalloc(nm * GM_DIM_COUNT, sizeof *base);
    unsigned *base_stated = gm_xcalloc(nm, sizeof *base_stated);
    rc = 0;
    size_t k = 0;
    for (const cJSON *m = prices->child; m && !rc; m = m->next) {
        bool is_def = !strcmp(m->string, "default");
        size_t idx = is_def ? n_named : k++;
        char path[300];
        snprintf(path, sizeof path, "prices.%s", m->string);
        if (!m->string[0]) {
            rc = gm_fail(err, err_len, GM_EINVAL, "prices: a model name must not be empty");
            break;
        }
        if (!is_def && (rc = need_ident(GM_IDENT_MODEL, m->string, path, err, err_len)))
            break;
        if (rating__map_get(&c->model_map, m->string) >= 0) {
            rc = gm_fail(err, err_len, GM_EINVAL, "%s: model appears twice", path);
            break;
        }
        c->model_names[idx] = gm_xstrdup(m->string);
        rating__map_put(&c->model_map, c->model_names[idx], strlen(m->string), (int32_t)idx);
        unsigned mask;
        rc = parse_model_prices(j, m, path, true, true, &base[idx * GM_DIM_COUNT], &mask,
                                &base_stated[idx], err, err_len);
        const cJSON *ct = rc ? NULL : cJSON_GetObjectItemCaseSensitive(m, "context_tiers");
        if (ct) {
            if (!c->ctx)
                c->ctx = gm_xcalloc(nm, sizeof *c->ctx);
            char cp[320];
            snprintf(cp, sizeof cp, "%s.context_tiers", path);
            rc = rating__ctx_parse(j, ct, cp, &c->ctx[idx], err, err_len);
        }
    }
    if (rc) {
        free(base);
        free(base_stated);
        return rc;
    }

    /* Site tiers. */
    const cJSON *tiers = cJSON_GetObjectItemCaseSensitive(doc, "site_tiers");
    const cJSON *dflt = cJSON_GetObjectItemCaseSensitive(doc, "default_site_tier");
    size_t nt = 0;
    if (tiers) {
        if ((rc = need_object(j, tiers, "site_tiers", err, err_len)) || !tiers->child) {
            free(base);
            free(base_stated);
            return rc ? rc
                      : gm_fail(err, err_len, GM_EINVAL, "site_tiers: must name at least one tier");
        }
        for (const cJSON *t = tiers->child; t; t = t->next)
            nt++;
    } else {
        nt = 1;
    }
    c->n_tiers = nt;
    c->tier_names = gm_xcalloc(nt, sizeof *c->tier_names);
    gm_i128 *tier_mult = gm_xcalloc(nt, sizeof *tier_mult);
    const char **tier_mult_text = gm_xcalloc(nt, sizeof *tier_mult_text);
    tier_mult[0] = gm_pow10_i128(RATING_MULT_SCALE);
    tier_mult_text[0] = "1";
    c->price = gm_xcalloc(nm * nt * GM_DIM_COUNT, sizeof *c->price);
    c->stated = gm_xcalloc(nm * nt, sizeof *c->stated);
    if (!tiers) {
        c->tier_names[0] = gm_xstrdup("standard");
        rating__map_put(&c->tier_map, c->tier_names[0], 8, 0);
        c->default_tier = 0;
        memcpy(c->price, base, nm * GM_DIM_COUNT * sizeof *base);
        for (size_t mi = 0; mi < nm; mi++)
            c->stated[mi] = base_stated[mi] & RATING_FOLLOW_MASK;
        if (dflt && !(cJSON_IsString(dflt) && !strcmp(dflt->valuestring, "standard"))) {
            free(base);
            free(base_stated);
            free(tier_mult);
            free(tier_mult_text);
            return gm_fail(err, err_len, GM_EINVAL,
                           "default_site_tier: names a tier but the card has no site_tiers");
        }
    } else {
        size_t cap_sites = 16;
        c->site_names = gm_xcalloc(cap_sites, sizeof *c->site_names);
        c->site_tier = gm_xcalloc(cap_sites, sizeof *c->site_tier);
        size_t ti = 0;
        for (const cJSON *t = tiers->child; t && !rc; t = t->next, ti++) {
            char path[300];
            snprintf(path, sizeof path, "site_tiers.%s", t->string);
            c->tier_names[ti] = gm_xstrdup(t->string);
            if (rating__map_put(&c->tier_map, c->tier_names[ti], strlen(t->string), (int32_t)ti) >=
                0) {
                rc = gm_fail(err, err_len, GM_EINVAL, "%s: tier appears twice", path);
                break;
            }
            if ((rc = need_object(j, t, path, err, err_len)))
                break;
            static const char *const tallowed[] = {"multiplier", "prices", "sites", "description",
                                                   NULL};
            if ((rc = rating__check_keys(t, path, tallowed, err, err_len)))
                break;
            gm_i128 mult = gm_pow10_i128(RATING_MULT_SCALE);
            const cJSON *mv = cJSON_GetObjectItemCaseSensitive(t, "multiplier");
            char mpath[320];
            snprintf(mpath, sizeof mpath, "%s.multiplier", path);
            tier_mult_text[ti] = mv && cJSON_IsString(mv) ? mv->valuestring : "1";
            if (mv) {
                if ((rc = need_decimal_text(j, mv, mpath, "1.25", err, err_len)))
                    break;
                char why[160];
                int prc = gm_dec_parse(mv->valuestring, strlen(mv->valuestring), RATING_MULT_SCALE,
                                       &mult, why, sizeof why);
                if (prc || mult < 0 || mult > gm_pow10_i128(RATING_MULT_SCALE + 6)) {
                    rc = gm_fail(err, err_len, GM_EINVAL,
                                 "%s: must be a decimal string from 0 to 1000000 with at most %d "
                                 "fraction digits, got \"%s\"",
                                 mpath, RATING_MULT_SCALE, mv->valuestring);
                    break;
                }
            }
            tier_mult[ti] = mult;
            /* The tier's own prices first: a (model, dimension) the tier prices itself is
             * never multiplied, so the exactness rule does not apply to it (regression: a tier
             * stating its own price was still refused by the multiplier check, although the
             * error advised exactly that). */
            int64_t *own_p = gm_xcalloc(nm * GM_DIM_COUNT + 1, sizeof *own_p);
            unsigned *own_m = gm_xcalloc(nm + 1, sizeof *own_m);
            unsigned *own_s = gm_xcalloc(nm + 1, sizeof *own_s);
            const cJSON *tp = cJSON_GetObjectItemCaseSensitive(t, "prices");
            if (tp) {
                char ppath[320];
                snprintf(ppath, sizeof ppath, "%s.prices", path);
                rc = need_object(j, tp, ppath, err, err_len);
                for (const cJSON *m = tp ? tp->child : NULL; m && !rc; m = m->next) {
                    char mp[400];
                    snprintf(mp, sizeof mp, "%s.%s", ppath, m->string);
                    int32_t mi = rating__map_get(&c->model_map, m->string);
                    if (mi < 0) {
                        rc = gm_fail(err, err_len, GM_EINVAL,
                                     "%s: model is not in prices (a tier can only re-price "
                                     "models of the card)",
                                     mp);
                        break;
                    }
                    if (cJSON_IsObject(m) && cJSON_GetObjectItemCaseSensitive(m, "context_tiers")) {
                        rc = gm_fail(err, err_len, GM_EINVAL,
                                     "%s.context_tiers: not allowed in a site tier's prices (a "
                                     "model's context rows are prices.%s.context_tiers, and each "
                                     "site tier's multiplier applies to them)",
                                     mp, m->string);
                        break;
                    }
                    int64_t own[GM_DIM_COUNT];
                    unsigned mask, stated;
                    if ((rc = parse_model_prices(j, m, mp, false, false, own, &mask, &stated, err,
                                                 err_len)))
                        break;
                    for (int d = 0; d < GM_DIM_COUNT; d++)
                        if (mask & (1u << d))
                            own_p[(size_t)mi * GM_DIM_COUNT + d] = own[d];
                    own_m[mi] |= mask;
                    own_s[mi] |= stated;
                }
            }
            /* Whether cache_write and reasoning were stated by the level that prices them here
             * (the tier, when it prices them, else the card), or follow input and output:
             * context rows keep a stated one (rating__apply_variant). */
            for (size_t mi = 0; mi < nm; mi++)
                for (int d = GM_DIM_CACHE_WRITE; d <= GM_DIM_REASONING; d++)
                    if ((own_m[mi] & (1u << d) ? own_s[mi] : base_stated[mi]) & (1u << d))
                        c->stated[mi * nt + ti] |= 1u << d;
            /* Effective prices: base * multiplier, exact, unless the tier states its own. */
            for (size_t mi = 0; mi < nm && !rc; mi++)
                for (int d = 0; d < GM_DIM_COUNT; d++) {
                    if (own_m[mi] & (1u << d)) {
                        c->price[(mi * nt + ti) * GM_DIM_COUNT + d] = own_p[mi * GM_DIM_COUNT + d];
                        continue;
                    }
                    gm_i128 p = (gm_i128)base[mi * GM_DIM_COUNT + d] * mult;
                    gm_i128 one = gm_pow10_i128(RATING_MULT_SCALE);
                    if (p % one != 0 || p / one > INT64_MAX) {
                        char bp[64], ep[64];
                        gm_dec_format(base[mi * GM_DIM_COUNT + d], 12, bp, sizeof bp);
                        gm_dec_format(p, 12 + RATING_MULT_SCALE, ep, sizeof ep);
                        bool fits = rating__price_fits(p);
                        rc = gm_fail(
                            err, err_len, GM_ERANGE,
                            "%s: %s x prices.%s.%s (%s per %s) = %s %s%s%s; give the "
                            "tier its own price for it (%s.prices.%s.%s) or pick a "
                            "%s",
                            mpath, mv ? mv->valuestring : "1", c->model_names[mi], dim_keys[d], bp,
                            rating__unit_word(d), ep,
                            fits ? "is not exact in 12 fraction digits"
                                 : "exceeds the largest price (" RATING_PRICE_MAX_TEXT " per ",
                            fits ? "" : rating__unit_word(d), fits ? "" : ")", path,
                            c->model_names[mi], dim_keys[d],
                            fits ? "multiplier that keeps it exact" : "smaller multiplier");
                        break;
                    }
                    c->price[(mi * nt + ti) * GM_DIM_COUNT + d] = (int64_t)(p / one);
                }
            free(own_p);
            free(own_m);
            free(own_s);
            if (rc)
                break;
            const cJSON *sites = cJSON_GetObjectItemCaseSensitive(t, "sites");
            if (sites) {
                char spath[320];
                snprintf(spath, sizeof spath, "%s.sites", path);
                if (!cJSON_IsArray(sites)) {
                    rc = gm_fail(err, err_len, GM_EINVAL, "%s: must be an array of site names",
                                 spath);
                    break;
                }
                int si = 0;
                for (const cJSON *s = sites->child; s; s = s->next, si++) {
                    char sp[400];
                    snprintf(sp, sizeof sp, "%s[%d]", spath, si);
                    if ((rc = need_string(j, s, sp, err, err_len)) ||
                        (rc = need_ident(GM_IDENT_SITE, s->valuestring, sp, err, err_len)))
                        break;
                    if (c->n_sites == cap_sites) {
                        cap_sites *= 2;
                        c->site_names =
                            gm_xrealloc(c->site_names, cap_sites * sizeof *c->site_names);
                        c->site_tier = gm_xrealloc(c->site_tier, cap_sites * sizeof *c->site_tier);
                    }
                    c->site_names[c->n_sites] = gm_xstrdup(s->valuestring);
                    c->site_tier[c->n_sites] = (int32_t)ti;
                    int32_t prev = rating__map_put(&c->site_map, c->site_names[c->n_sites],
                                                   strlen(s->valuestring), (int32_t)c->n_sites);
                    c->n_sites++;
                    if (prev >= 0) {
                        rc = gm_fail(err, err_len, GM_EINVAL,
                                     "%s: site \"%s\" is already in tier \"%s\" (a site belongs "
                                     "to one tier)",
                                     sp, s->valuestring, c->tier_names[c->site_tier[prev]]);
                        break;
                    }
                }
            }
        }
        if (!rc) {
            if (!cJSON_IsString(dflt))
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "default_site_tier: must name the tier of sites the card does not "
                             "list (one of site_tiers)");
            else if ((c->default_tier = rating__map_get(&c->tier_map, dflt->valuestring)) < 0)
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "default_site_tier: \"%s\" is not one of site_tiers",
                             dflt->valuestring);
        }
    }
    free(base);
    free(base_stated);
    if (!rc)
        rc = card_variants(c, nm, tier_mult, tier_mult_text, err, err_len);
    free(tier_mult);
    free(tier_mult_text);
    if (rc)
        return rc;
    /* Introspection rows. */
    c->rows = gm_xcalloc(nm * nt * GM_DIM_COUNT, sizeof *c->rows);
    size_t r = 0;
    for (size_t mi = 0; mi < nm; mi++)
        for (size_t ti = 0; ti < nt; ti++)
            for (int d = 0; d < GM_DIM_COUNT; d++, r++) {
                c->rows[r].model = c->model_names[mi];
                c->rows[r].site_tier = c->tier_names[ti];
                c->rows[r].dim = (gm_dim)d;
                c->rows[r].price_p = c->price[r];
            }
    c->site_rows = gm_xcalloc(c->n_sites ? c->n_sites : 1, sizeof *c->site_rows);
    for (size_t s = 0; s < c->n_sites; s++) {
        c->site_rows[s].site = c->site_names[s];
        c->site_rows[s].site_tier = c->tier_names[c->site_tier[s]];
    }
    return 0;
}

int gm_rating_card_parse(const char *json, size_t len, gm_rating_card **out, char *err,
                         size_t err_len)
{
    *out = NULL;
    rating__json j;
    int rc = rating__json_parse(json, len, &j, err, err_len);
    if (rc)
        return rc;
    gm_rating_card *c = gm_xcalloc(1, sizeof *c);
    c->default_model = -1;
    rc = card_from_json(&j, c, err, err_len);
    rating__json_free(&j);
    if (rc) {
        gm_rating_card_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void gm_rating_card_get_info(const gm_rating_card *c, gm_rating_card_info *out)
{
    memset(out, 0, sizeof *out);
    out->card_id = c->card_id;
    out->version = c->version;
    out->valid_from_us = c->valid_from_us;
    out->valid_until_us = c->valid_until_us;
    memcpy(out->currency, c->currency, 4);
    out->minor_units = c->minor_units;
    out->reject_unknown_models = c->reject_unknown;
    out->is_default_card = c->is_default;
    out->n_models = c->n_models;
    out->n_site_tiers = c->n_tiers;
    out->n_sites = c->n_sites;
    out->default_site_tier = c->tier_names[c->default_tier];
}

size_t gm_rating_card_prices(const gm_rating_card *c, const gm_rating_price_row **rows)
{
    *rows = c->rows;
    return (c->n_models + (c->default_model >= 0)) * c->n_tiers * GM_DIM_COUNT;
}

int64_t gm_rating_card_service_multiplier(const gm_rating_card *c, gm_rating_svc s)
{
    if ((unsigned)s >= GM_RATING_SVC_COUNT)
        return 0;
    if (s == GM_RATING_SVC_STANDARD)
        return 1000000;
    return c->svc.present && c->svc.listed[s] ? c->svc.mult_e6[s] : 0;
}

int gm_rating_card_variant_prices(const gm_rating_card *c, gm_rating_variant_row **rows, size_t *n,
                                  char *err, size_t err_len)
{
    size_t nm = c->n_models + (c->default_model >= 0), cap = 0, k = 0;
    gm_rating_variant_row *out = NULL;
    for (size_t mi = 0; mi < nm; mi++)
        for (size_t ti = 0; ti < c->n_tiers; ti++)
            for (int s = 0; s < GM_RATING_SVC_COUNT; s++) {
                if (s != GM_RATING_SVC_STANDARD && !(c->svc.present && c->svc.listed[s]))
                    continue;
                size_t n_ctx = c->ctx ? c->ctx[mi].n : 0;
                for (size_t level = 0; level <= n_ctx; level++) {
                    if (s == GM_RATING_SVC_STANDARD && level == 0)
                        continue; /* the base variant: gm_rating_card_prices */
                    /* the path of events: the card's price at the tier, the row, the multiplier */
                    rating__resolved r = {0};
                    r.card = c;
                    r.tier = (int32_t)ti;
                    r.model = (int32_t)mi;
                    memcpy(r.price_p, c->price + (mi * c->n_tiers + ti) * GM_DIM_COUNT,
                           sizeof r.price_p);
                    r.stated = c->stated[mi * c->n_tiers + ti];
                    r.ctx = n_ctx ? &c->ctx[mi] : NULL;
                    int64_t prompt = level ? c->ctx[mi].row[level - 1].above + 1 : 0;
                    int rc = rating__apply_variant(&r, (gm_rating_svc)s, prompt, err, err_len);
                    if (rc) {
                        free(out);
                        return rc;
                    }
                    for (int d = 0; d < GM_DIM_COUNT; d++) {
                        if (k == cap)
                            out = gm_xrealloc(out, (cap = cap ? 2 * cap : 64) * sizeof *out);
                        out[k++] = (gm_rating_variant_row){c->model_names[mi], c->tier_names[ti],
                                                           r.variant, (gm_dim)d, r.price_p[d]};
                    }
                }
            }
    *rows = out;
    *n = k;
    return 0;
}

size_t gm_rating_card_sites(const gm_rating_card *c, const gm_rating_site_row **rows)
{
    *rows = c->site_rows;
    return c->n_sites;
}

/* ---- Contracts ------------------------------------------------------------------------- */

void gm_rating_contract_free(gm_rating_contract *k)
{
    if (!k)
        return;
    free(k->tenant);
    free(k->card_id);
    for (size_t i = 0; i < k->n_over; i++) {
        free(k->over[i].model);
        rating__ctx_free(&k->over[i].ctx);
    }
    free(k->over);
    rating__map_free(&k->over_map);
    for (size_t i = 0; i < k->n_rules; i++) {
        rating__tier_rule *r = &k->rules[i];
        for (size_t m = 0; m < r->n_models; m++)
            free(r->models[m]);
        free(r->models);
        free(r->models_label);
        free(r->up_to);
        free(r->price_p);
    }
    free(k->rules);
    free(k);
}

static int parse_money(const rating__json *j, const cJSON *v, const char *path, int mu,
                       const char *currency, gm_i128 *out, char *err, size_t err_len)
{
    int rc = need_decimal_text(j, v, path, mu ? "100.00" : "100", err, err_len);
    if (rc)
        return rc;
    char why[160];
    const char *s = v->valuestring;
    rc = gm_dec_parse(s, strlen(s), mu, out, why, sizeof why);
    if (rc == GM_ERANGE && strstr(why, "fraction digits"))
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: %s amounts have at most %d fraction digits (its minor unit), got "
                       "\"%s\"",
                       path, currency, mu, s);
    if (rc || *out < 0 || *out > gm_pow10_i128(30))
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be a non-negative decimal string like \"100.00\", got \"%s\"%s%s",
                       path, s, rc ? ": " : "", rc ? why : "");
    return 0;
}

static int parse_rule(const rating__json *j, const cJSON *t, const char *path, rating__tier_rule *r,
                      char *err, size_t err_len)
{
    int rc = need_object(j, t, path, err, err_len);
    if (rc)
        return rc;
    static const char *const allowed[] = {"dimension", "models",      "mode",
                                          "bands",     "description", NULL};
    if ((rc = rating__check_keys(t, path, allowed, err, err_len)))
        return rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, "dimension");
    int d = cJSON_IsString(v) ? dim_from_name(v->valuestring) : -1;
    if (d < 0)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s.dimension: must be one of \"input\", \"cached\", \"output\", \"gpu\"",
                       path);
    r->dim = (gm_dim)d;
    v = cJSON_GetObjectItemCaseSensitive(t, "mode");
    if (!cJSON_IsString(v) ||
        (strcmp(v->valuestring, "graduated") && strcmp(v->valuestring, "volume")))
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s.mode: must be \"graduated\" (each band prices the units in it) or "
                       "\"volume\" (the band of the month's total prices every unit)",
                       path);
    r->mode = !strcmp(v->valuestring, "volume") ? GM_TIER_VOLUME : GM_TIER_GRADUATED;
    v = cJSON_GetObjectItemCaseSensitive(t, "models");
    size_t label_len = 2;
    if (v) {
        if (!cJSON_IsArray(v) || !v->child)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s.models: must be a non-empty array of model names (leave it out "
                           "for every model)",
                           path);
        for (const cJSON *m = v->child; m; m = m->next)
            r->n_models++;
        r->models = gm_xcalloc(r->n_models, sizeof *r->models);
        size_t i = 0;
        for (const cJSON *m = v->child; m; m = m->next, i++) {
            char mp[400];
            snprintf(mp, sizeof mp, "%s.models[%zu]", path, i);
            if ((rc = need_string(j, m, mp, err, err_len))) {
                r->n_models = i;
                return rc;
            }
            r->models[i] = gm_xstrdup(m->valuestring);
            label_len += strlen(m->valuestring) + 1;
        }
    }
    r->models_label = gm_xcalloc(1, label_len);
    if (!r->n_models)
        strcpy(r->models_label, "*");
    for (size_t i = 0; i < r->n_models; i++) {
        if (i)
            strcat(r->models_label, ",");
        strcat(r->models_label, r->models[i]);
    }
    const cJSON *bands = cJSON_GetObjectItemCaseSensitive(t, "bands");
    if (!cJSON_IsArray(bands) || !bands->child)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s.bands: must be a non-empty array of {\"up_to\": \"1000000\", "
                       "\"price\": {...}}, the last with \"up_to\": null",
                       path);
    for (const cJSON *b = bands->child; b; b = b->next)
        r->n_bands++;
    r->up_to = gm_xcalloc(r->n_bands, sizeof *r->up_to);
    r->price_p = gm_xcalloc(r->n_bands, sizeof *r->price_p);
    size_t i = 0;
    for (const cJSON *b = bands->child; b; b = b->next, i++) {
        char bp[400];
        snprintf(bp, sizeof bp, "%s.bands[%zu]", path, i);
        if ((rc = need_object(j, b, bp, err, err_len)))
            return rc;
        static const char *const ballowed[] = {"up_to", "price", NULL};
        if ((rc = rating__check_keys(b, bp, ballowed, err, err_len)))
            return rc;
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(b, "up_to");
        bool last = b->next == NULL;
        if (!u || cJSON_IsNull(u)) {
            if (!last)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s.up_to: only the last band is unbounded (null)", bp);
            r->up_to[i] = -1;
        } else {
            if (last)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s.up_to: the last band must be unbounded (\"up_to\": null) so "
                               "that every quantity has a price",
                               bp);
            if (!cJSON_IsString(u) ||
                gm_dec_parse(u->valuestring, strlen(u->valuestring), 0, &r->up_to[i], NULL, 0) ||
                r->up_to[i] <= 0 || r->up_to[i] > gm_pow10_i128(36)) {
                char got[96];
                rating__json_describe(j, u, got, sizeof got);
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s.up_to: must be a positive integer string in %s (the band's "
                               "inclusive upper bound), got %s",
                               bp, r->dim == GM_DIM_GPU ? "GPU-microseconds" : "tokens", got);
            }
            if (i > 0 && r->up_to[i] <= r->up_to[i - 1])
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s.up_to: must be greater than the previous band's", bp);
        }
        char pp[420];
        snprintf(pp, sizeof pp, "%s.price", bp);
        if ((rc = parse_price(j, cJSON_GetObjectItemCaseSensitive(b, "price"), r->dim, pp,
                              &r->price_p[i], err, err_len)))
            return rc;
    }
    return 0;
}

static bool rules_overlap(const rating__tier_rule *a, const rating__tier_rule *b)
{
    if (a->dim != b->dim)
        return false;
    if (!a->n_models || !b->n_models)
        return true;
    for (size_t i = 0; i < a->n_models; i++)
        for (size_t k = 0; k < b->n_models; k++)
            if (!strcmp(a->models[i], b->models[k]))
                return true;
    return false;
}

/* An instant of a commitment term: RFC 3339, whole seconds (pro-rating counts seconds). */
static int parse_instant(const rating__json *j, const cJSON *v, const char *path, int64_t *us,
                         char *err, size_t err_len)
{
    int rc = need_string(j, v, path, err, err_len);
    if (rc)
        return rc;
    char why[160];
    if (gm_time_parse(v->valuestring, strlen(v->valuestring), us, why, sizeof why))
        return gm_fail(err, err_len, GM_EINVAL, "%s: must be an RFC 3339 time, got \"%s\": %s",
                       path, v->valuestring, why);
    if (*us % GM_US_PER_SEC)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be a whole second (partial months are pro-rated by seconds), "
                       "got \"%s\"",
                       path, v->valuestring);
    return 0;
}

/* The instant `months` calendar months after t (UTC): same day and time of day, the day
 * clamped to the target month's last day (2027-01-31 + 1 month = 2027-02-28T...). */
static int64_t add_months(int64_t t, int months)
{
    int64_t day = t >= 0 ? t / GM_US_PER_DAY : -((-t + GM_US_PER_DAY - 1) / GM_US_PER_DAY);
    int64_t tod = t - day * GM_US_PER_DAY, y;
    unsigned m, d;
    gm_civil_from_days(day, &y, &m, &d);
    int64_t mm = (int64_t)m - 1 + months;
    y += mm / 12;
    m = (unsigned)(mm % 12) + 1;
    unsigned last = (unsigned)(gm_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) -
                               gm_days_from_civil(y, m, 1));
    if (d > last)
        d = last;
    return gm_days_from_civil(y, m, d) * GM_US_PER_DAY + tod;
}

/* commitment_start / commitment_end: the term of minimum_commitment (a monthly minimum,
 * pro-rated) or of term_commitment (a total over the term, trued up at its end), never both
 * (docs/rating.md, "Commitments over a term", "Total over a term"). */
static int parse_term(const rating__json *j, const cJSON *doc, gm_rating_contract *k, char *err,
                      size_t err_len)
{
    k->commit_start_us = INT64_MIN;
    k->commit_end_us = GM_RATING_NO_END;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(doc, "commitment_start");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "commitment_end");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "term_commitment");
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(doc, "minimum_commitment");
    if (s && cJSON_IsNull(s))
        s = NULL;
    if (e && cJSON_IsNull(e))
        e = NULL;
    if (t && cJSON_IsNull(t))
        t = NULL;
    int rc;
    if (t) {
        if (mc && !cJSON_IsNull(mc))
            return gm_fail(err, err_len, GM_EINVAL,
                           "term_commitment: cannot be combined with minimum_commitment (a "
                           "contract commits either a monthly minimum or one total over its "
                           "term; state one of them)");
        if ((rc = parse_money(j, t, "term_commitment", k->minor_units, k->currency, &k->term_minor,
                              err, err_len)))
            return rc;
        if (k->term_minor <= 0)
            return gm_fail(err, err_len, GM_EINVAL,
                           "term_commitment: must be positive (the total committed over the "
                           "term), got \"%s\"",
                           t->valuestring);
        if (!s || !e)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: required with term_commitment (a total is committed over a "
                           "bounded term [commitment_start, commitment_end))",
                           !s ? "commitment_start" : "commitment_end");
    } else if (!s && !e) {
        return 0;
    } else if (!mc) {
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: bounds the term of minimum_commitment or term_commitment, which the "
                       "contract does not state (add \"minimum_commitment\": the monthly "
                       "minimum, or \"term_commitment\": the total over the term)",
                       s ? "commitment_start" : "commitment_end");
    }
    if (s && (rc = parse_instant(j, s, "commitment_start", &k->commit_start_us, err, err_len)))
        return rc;
    if (e && (rc = parse_instant(j, e, "commitment_end", &k->commit_end_us, err, err_len)))
        return rc;
    if (s && e && k->commit_end_us <= k->commit_start_us)
        return gm_fail(err, err_len, GM_EINVAL,
                       "commitment_end: must be after commitment_start (the term is [start, end)"
                       ", end exclusive), got \"%s\" <= \"%s\"",
                       e->valuestring, s->valuestring);
    if (t) {
        int64_t limit = add_months(k->commit_start_us, GM_RATING_TERM_MAX_MONTHS);
        if (k->commit_end_us > limit) {
            char lim[40];
            gm_time_format(limit, lim, sizeof lim);
            return gm_fail(err, err_len, GM_EINVAL,
                           "commitment_end: a term_commitment term may last at most %d months "
                           "(commitment_start + %d calendar months = %s), got \"%s\"",
                           GM_RATING_TERM_MAX_MONTHS, GM_RATING_TERM_MAX_MONTHS, lim,
                           e->valuestring);
        }
    }
    return 0;
}

/* effective_from: "YYYY-MM", the UTC month from which this contract version applies
 * (docs/rating.md, "Effective-dated contracts"); absent or null: every month. */
static int parse_effective(const rating__json *j, const cJSON *v, gm_rating_contract *k, char *err,
                           size_t err_len)
{
    k->effective_us = INT64_MIN;
    if (!v || cJSON_IsNull(v))
        return 0;
    int rc = need_string(j, v, "effective_from", err, err_len);
    if (rc)
        return rc;
    const char *s = v->valuestring;
    bool shape = strlen(s) == 7 && s[4] == '-';
    for (int i = 0; shape && i < 7; i++)
        if (i != 4 && (s[i] < '0' || s[i] > '9'))
            shape = false;
    int y = shape ? atoi(s) : 0, m = shape ? atoi(s + 5) : 0;
    if (!shape || y < 1970 || m < 1 || m > 12)
        return gm_fail(err, err_len, GM_EINVAL,
                       "effective_from: must be a month \"YYYY-MM\" (UTC; the version applies from "
                       "the first instant of that month), got \"%s\"",
                       s);
    k->effective_us = gm_days_from_civil(y, (unsigned)m, 1) * GM_US_PER_DAY;
    return 0;
}

/* free_allowances: {"<dimension>": "<free units per month>"}. */
static int parse_allowances(const rating__json *j, const cJSON *a, gm_rating_contract *k, char *err,
                            size_t err_len)
{
    if (!a)
        return 0;
    int rc = need_object(j, a, "free_allowances", err, err_len);
    if (rc)
        return rc;
    if ((rc = rating__check_keys(a, "free_allowances", dim_keys_allowed, err, err_len)))
        return rc;
    for (const cJSON *v = a->child; v; v = v->next) {
        gm_dim d = (gm_dim)dim_from_name(v->string);
        const char *unit = d == GM_DIM_GPU       ? "GPU-microseconds"
                           : d == GM_DIM_REQUEST ? "requests"
                                                 : "tokens";
        gm_i128 q = 0;
        if (!cJSON_IsString(v) ||
            gm_dec_parse(v->valuestring, strlen(v->valuestring), 0, &q, NULL, 0) || q <= 0 ||
            q > gm_pow10_i128(36)) {
            char got[96];
            rating__json_describe(j, v, got, sizeof got);
            return gm_fail(err, err_len, GM_EINVAL,
                           "free_allowances.%s: must be a positive integer string in %s (the "
                           "free units per month, e.g. \"1000000\"), got %s",
                           v->string, unit, got);
        }
        for (size_t r = 0; r < k->n_rules; r++)
            if (k->rules[r].dim == d && !k->rules[r].n_models)
                return gm_fail(err, err_len, GM_EINVAL,
                               "free_allowances.%s: tiers[%zu] prices every model's %s usage, so "
                               "the allowance would never apply (allowances apply to usage "
                               "lines; give the rule a first band at price \"0\" instead: "
                               "{\"up_to\": \"%s\", \"price\": {\"per_token\": \"0\"}})",
                               v->string, r, v->string, v->valuestring);
        k->allowance[d] = q;
    }
    return 0;
}

/* gpu_basis ("requests", the default, or "windows") and gpu_window_price (required with
 * "windows", refused otherwise); a gpu tier rule only with "requests" (docs/rating.md,
 * "GPU billing basis"). */
static int contract_gpu_basis(const rating__json *j, const cJSON *doc, gm_rating_contract *k,
                              char *err, size_t err_len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "gpu_basis");
    int rc;
    k->gpu_basis = GM_GPU_BASIS_REQUESTS;
    if (v) {
        if (!cJSON_IsString(v) ||
            (strcmp(v->valuestring, "requests") && strcmp(v->valuestring, "windows"))) {
            char what[96];
            rating__json_describe(j, v, what, sizeof what);
            return gm_fail(err, err_len, GM_EINVAL,
                           "gpu_basis: must be \"requests\" or \"windows\", got %s", what);
        }
        if (!strcmp(v->valuestring, "windows"))
            k->gpu_basis = GM_GPU_BASIS_WINDOWS;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(doc, "gpu_window_price");
    if (k->gpu_basis == GM_GPU_BASIS_REQUESTS) {
        if (p)
            return gm_fail(err, err_len, GM_EINVAL,
                           "gpu_window_price: only allowed with gpu_basis \"windows\" (this "
                           "contract bills GPU time from the requests' gpu_us)");
        return 0;
    }
    if (!p)
        return gm_fail(err, err_len, GM_EINVAL,
                       "gpu_window_price: required when gpu_basis is \"windows\" (e.g. "
                       "{\"per_gpu_hour\": \"2.88\"})");
    if ((rc = parse_price(j, p, GM_DIM_GPU, "gpu_window_price", &k->gpu_window_price_p, err,
                          err_len)))
        return rc;
    if (k->allowance[GM_DIM_GPU] > 0)
        return gm_fail(err, err_len, GM_EINVAL,
                       "free_allowances.gpu: cannot be combined with gpu_basis \"windows\" "
                       "(attributed windows are priced at gpu_window_price; state a lower price "
                       "instead)");
    for (size_t i = 0; i < k->n_rules; i++)
        if (k->rules[i].dim == GM_DIM_GPU)
            return gm_fail(err, err_len, GM_EINVAL,
                           "tiers[%zu]: a gpu tier rule cannot be combined with gpu_basis "
                           "\"windows\" (attributed windows are priced at gpu_window_price)",
                           i);
    return 0;
}

/* The contract's own prices (overrides and context rows) x its own service_tiers: exact, or
 * refused naming the multiplier, the price and the two nearest exact multipliers. (The card's
 * prices x the contract's multipliers, and the contract's prices x the card's: the book's
 * gm_rating_book_check_contracts.) */
static int contract_svc_check(const gm_rating_contract *k, char *err, size_t err_len)
{
    if (!k->svc.present)
        return 0;
    rating__svc_span step = {1, 0};
    for (size_t i = 0; i < k->n_over; i++) {
        for (int d = 0; d < GM_DIM_COUNT; d++)
            if (k->over[i].mask & (1u << d))
                rating__svc_span_add(&step, k->over[i].price_p[d]);
        for (size_t r = 0; r < k->over[i].ctx.n; r++)
            for (int d = 0; d < GM_DIM_COUNT; d++)
                if (k->over[i].ctx.row[r].mask & (1u << d))
                    rating__svc_span_add(&step, k->over[i].ctx.row[r].price_p[d]);
    }
    for (size_t i = 0; i < k->n_over; i++)
        for (int d = 0; d < GM_DIM_COUNT; d++) {
            char what[400];
            snprintf(what, sizeof what, "prices.%s.%s", k->over[i].model, dim_keys[d]);
            int rc = (k->over[i].mask & (1u << d))
                         ? rating__svc_check(&k->svc, k->over[i].price_p[d], d, &step, what, err,
                                             err_len)
                         : 0;
            for (size_t r = 0; !rc && r < k->over[i].ctx.n; r++) {
                if (!(k->over[i].ctx.row[r].mask & (1u << d)))
                    continue;
                snprintf(what, sizeof what, "prices.%s.context_tiers[%zu].prices.%s",
                         k->over[i].model, r, dim_keys[d]);
                rc = rating__svc_check(&k->svc, k->over[i].ctx.row[r].price_p[d], d, &step, what,
                                       err, err_len);
            }
            if (rc)
                return rc;
        }
    return 0;
}

static int contract_from_json(const rating__json *j, gm_rating_contract *k, char *err,
                              size_t err_len)
{
    const cJSON *doc = j->root;
    int rc = need_object(j, doc, "contract", err, err_len);
    if (rc)
        return rc;
    static const char *const allowed[] = {"tenant",
                                          "card_id",
                                          "currency",
                                          "minor_units",
                                          "prices",
                                          "tiers",
                                          "discount_percent",
                                          "minimum_commitment",
                                          "prepaid_credits",
                                          "commitment_start",
                                          "commitment_end",
                                          "free_allowances",
                                          "description",
                                          "gpu_basis",
                                          "gpu_window_price",
                                          "term_commitment",
                                          "effective_from",
                                          "service_tiers",
                                          NULL};
    if ((rc = rating__check_keys(doc, "", allowed, err, err_len)))
        return rc;
    if ((rc = rating__svc_parse(j, cJSON_GetObjectItemCaseSensitive(doc, "service_tiers"), true,
                                &k->svc, err, err_len)))
        return rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "tenant");
    if ((rc = need_string(j, v, "tenant", err, err_len)) ||
        (rc = need_ident(GM_IDENT_TENANT, v->valuestring, "tenant", err, err_len)))
        return rc;
    k->tenant = gm_xstrdup(v->valuestring);
    v = cJSON_GetObjectItemCaseSensitive(doc, "card_id");
    if (v) {
        if ((rc = need_string(j, v, "card_id", err, err_len)))
            return rc;
        k->card_id = gm_xstrdup(v->valuestring);
    }
    if ((rc = parse_currency(j, doc, k->currency, &k->minor_units, err, err_len)))
        return rc;
    const cJSON *prices = cJSON_GetObjectItemCaseSensitive(doc, "prices");
    if (prices) {
        if ((rc = need_object(j, prices, "prices", err, err_len)))
            return rc;
        for (const cJSON *m = prices->child; m; m = m->next)
            k->n_over++;
        k->over = gm_xcalloc(k->n_over ? k->n_over : 1, sizeof *k->over);
        size_t i = 0;
        for (const cJSON *m = prices->child; m; m = m->next, i++) {
            char path[300];
            snprintf(path, sizeof path, "prices.%s", m->string);
            if (strcmp(m->string, "default") &&
                (rc = need_ident(GM_IDENT_MODEL, m->string, path, err, err_len)))
                return rc;
            k->over[i].model = gm_xstrdup(m->string);
            if (rating__map_put(&k->over_map, k->over[i].model, strlen(m->string), (int32_t)i) >= 0)
                return gm_fail(err, err_len, GM_EINVAL, "%s: model appears twice", path);
            if ((rc = parse_model_prices(j, m, path, false, true, k->over[i].price_p,
                                         &k->over[i].mask, &k->over[i].stated, err, err_len)))
                return rc;
            const cJSON *ct = cJSON_GetObjectItemCaseSensitive(m, "context_tiers");
            char cp[320];
            snprintf(cp, sizeof cp, "%s.context_tiers", path);
            if (ct && (rc = rating__ctx_parse(j, ct, cp, &k->over[i].ctx, err, err_len)))
                return rc;
            if (!k->over[i].mask && !k->over[i].ctx.n)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s: must override at least one dimension or state context_tiers",
                               path);
        }
    }
    const cJSON *tiers = cJSON_GetObjectItemCaseSensitive(doc, "tiers");
    if (tiers) {
        if (!cJSON_IsArray(tiers))
            return gm_fail(err, err_len, GM_EINVAL, "tiers: must be an array of tier rules");
        for (const cJSON *t = tiers->child; t; t = t->next)
            k->n_rules++;
        k->rules = gm_xcalloc(k->n_rules ? k->n_rules : 1, sizeof *k->rules);
        size_t i = 0;
        for (const cJSON *t = tiers->child; t; t = t->next, i++) {
            char path[64];
            snprintf(path, sizeof path, "tiers[%zu]", i);
            if ((rc = parse_rule(j, t, path, &k->rules[i], err, err_len)))
                return rc;
            for (size_t p = 0; p < i; p++)
                if (rules_overlap(&k->rules[p], &k->rules[i]))
                    return gm_fail(err, err_len, GM_EINVAL,
                                   "%s: covers %s usage of a model that tiers[%zu] already "
                                   "covers (one tier rule per model and dimension)",
                                   path, gm_dim_name(k->rules[i].dim), p);
        }
    }
    v = cJSON_GetObjectItemCaseSensitive(doc, "discount_percent");
    if (v) {
        if ((rc = need_decimal_text(j, v, "discount_percent", "7.5", err, err_len)))
            return rc;
        if (gm_dec_parse(v->valuestring, strlen(v->valuestring), 4, &k->discount_e4, NULL, 0) ||
            k->discount_e4 < 0 || k->discount_e4 > 1000000)
            return gm_fail(err, err_len, GM_EINVAL,
                           "discount_percent: must be a decimal string from 0 to 100 with at most "
                           "4 fraction digits, got \"%s\"",
                           v->valuestring);
    }
    v = cJSON_GetObjectItemCaseSensitive(doc, "minimum_commitment");
    if (v && (rc = parse_money(j, v, "minimum_commitment", k->minor_units, k->currency,
                               &k->commitment_minor, err, err_len)))
        return rc;
    v = cJSON_GetObjectItemCaseSensitive(doc, "prepaid_credits");
    if (v && (rc = parse_money(j, v, "prepaid_credits", k->minor_units, k->currency,
                               &k->credits_minor, err, err_len)))
        return rc;
    if ((rc = parse_term(j, doc, k, err, err_len)))
        return rc;
    if ((rc = parse_effective(j, cJSON_GetObjectItemCaseSensitive(doc, "effective_from"), k, err,
                              err_len)))
        return rc;
    if ((rc = parse_allowances(j, cJSON_GetObjectItemCaseSensitive(doc, "free_allowances"), k, err,
                               err_len)))
        return rc;
    if ((rc = contract_gpu_basis(j, doc, k, err, err_len)))
        return rc;
    return contract_svc_check(k, err, err_len);
}

int gm_rating_contract_parse(const char *json, size_t len, gm_rating_contract **out, char *err,
                             size_t err_len)
{
    *out = NULL;
    rating__json j;
    int rc = rating__json_parse(json, len, &j, err, err_len);
    if (rc)
        return rc;
    gm_rating_contract *k = gm_xcalloc(1, sizeof *k);
    k->commit_start_us = INT64_MIN;
    k->commit_end_us = GM_RATING_NO_END;
    k->effective_us = INT64_MIN;
    rc = contract_from_json(&j, k, err, err_len);
    rating__json_free(&j);
    if (rc) {
        gm_rating_contract_free(k);
        return rc;
    }
    *out = k;
    return 0;
}

void gm_rating_contract_get_info(const gm_rating_contract *k, gm_rating_contract_info *out)
{
    memset(out, 0, sizeof *out);
    out->tenant = k->tenant;
    out->card_id = k->card_id;
    memcpy(out->currency, k->currency, 4);
    out->minor_units = k->minor_units;
    out->n_price_overrides = k->n_over;
    out->n_tier_rules = k->n_rules;
    out->discount_percent_e4 = k->discount_e4;
    out->minimum_commitment_minor = k->commitment_minor;
    out->prepaid_credits_minor = k->credits_minor;
    out->commitment_start_us = k->commit_start_us;
    out->commitment_end_us = k->commit_end_us;
    out->term_commitment_minor = k->term_minor;
    out->effective_from_us = k->effective_us;
    memcpy(out->free_allowance, k->allowance, sizeof out->free_allowance);
    out->gpu_basis = k->gpu_basis;
    out->gpu_window_price_p = k->gpu_window_price_p;
}

bool gm_rating_contract_term_months(const gm_rating_contract *k, int64_t *first_month_us,
                                    int64_t *last_month_us)
{
    if (!k || k->term_minor <= 0)
        return false;
    if (first_month_us)
        *first_month_us = gm_month_start(k->commit_start_us);
    if (last_month_us)
        *last_month_us = gm_month_start(k->commit_end_us - GM_US_PER_SEC);
    return true;
}

gm_i128 gm_rating_contract_commitment(const gm_rating_contract *k, int64_t month_start_us,
                                      int64_t *covered_s, int64_t *month_s)
{
    int64_t m0 = gm_month_start(month_start_us), m1 = gm_month_next(m0);
    int64_t a = k->commit_start_us > m0 ? k->commit_start_us : m0;
    int64_t b = k->commit_end_us < m1 ? k->commit_end_us : m1;
    int64_t cov = b > a ? (b - a) / GM_US_PER_SEC : 0, all = (m1 - m0) / GM_US_PER_SEC;
    if (covered_s)
        *covered_s = cov;
    if (month_s)
        *month_s = all;
    if (cov == all)
        return k->commitment_minor;
    if (cov == 0 || k->commitment_minor == 0)
        return 0;
    /* minimum x cov / all, half to even (both positive; minimum <= 10^30, cov < 2^22). */
    gm_i128 num = k->commitment_minor * cov, q = num / all, r = num % all;
    if (2 * r > all || (2 * r == all && (q & 1)))
        q++;
    return q;
}
