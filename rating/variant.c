/* Price variants (docs/rating.md, "Price variants"): service-tier multipliers (service_tiers
 * of cards and contracts) and context-length rows (prices.<model>.context_tiers), their
 * validation (exactness in 12 fraction digits, with the two nearest exact multipliers), and
 * the canonical variant text ("", "batch", "ctx>N", "priority/ctx>N", ...) that keys charges
 * and invoice lines. */
#include "rating_int.h"

#include <stdlib.h>

static const char *const svc_names[GM_RATING_SVC_COUNT] = {"standard", "batch", "priority"};
/* The variant of each service tier at the base context. */
static const char *const base_variants[GM_RATING_SVC_COUNT] = {"", "batch", "priority"};

const char *gm_rating_svc_name(gm_rating_svc s)
{
    return (unsigned)s < GM_RATING_SVC_COUNT ? svc_names[s] : "?";
}

const char *rating__base_variant(gm_rating_svc s)
{
    return (unsigned)s < GM_RATING_SVC_COUNT ? base_variants[s] : "";
}

bool rating__svc_mul(int64_t price_p, int64_t mult_e6, int64_t *out)
{
    gm_i128 p = (gm_i128)price_p * mult_e6;
    if (p % 1000000 != 0 || p / 1000000 > INT64_MAX)
        return false;
    *out = (int64_t)(p / 1000000);
    return true;
}

/* A multiplier (10^-6) as the shortest decimal text: 500000 -> "0.5". */
static void mult_text(int64_t m, char *buf, size_t len)
{
    size_t n = gm_dec_format(m, RATING_MULT_SCALE, buf, len);
    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

void rating__svc_span_add(rating__svc_span *s, int64_t price_p)
{
    /* A multiplier m keeps price p exact when p x m is a multiple of 10^6, i.e. when m is a
     * multiple of 10^6 / gcd(p, 10^6); for every price: a multiple of the lcm of those steps
     * (a divisor of 10^6). */
    int64_t a = price_p < 0 ? -price_p : price_p;
    int64_t st = 1000000 / gcd64(a, 1000000);
    s->step = s->step / gcd64(s->step, st) * st;
    if (a > s->max_p)
        s->max_p = a;
}

const char *rating__unit_word(int d)
{
    return d == GM_DIM_GPU ? "GPU-second" : d == GM_DIM_REQUEST ? "request" : "token";
}

bool rating__price_fits(gm_i128 price_e18)
{
    return price_e18 / 1000000 <= INT64_MAX;
}

int rating__svc_check(const rating__svc *svc, int64_t price_p, int d, const rating__svc_span *span,
                      const char *what, char *err, size_t err_len)
{
    int64_t step = span->step;
    for (int t = 1; svc->present && t < GM_RATING_SVC_COUNT; t++) {
        int64_t m = svc->mult_e6[t], q;
        if (!svc->listed[t] || rating__svc_mul(price_p, m, &q))
            continue;
        char mt[48], pt[64], et[96], lt[48], ht[48];
        mult_text(m, mt, sizeof mt);
        gm_dec_format(price_p, 12, pt, sizeof pt);
        gm_i128 e = (gm_i128)price_p * m;
        gm_dec_format(e, 12 + RATING_MULT_SCALE, et, sizeof et);
        if (!rating__price_fits(e)) /* no multiplier this large can help: none offered */
            return gm_fail(err, err_len, GM_ERANGE,
                           "service_tiers.%s: %s x %s (%s) = %s exceeds the largest price "
                           "(%s per %s)",
                           svc_names[t], mt, what, pt, et, RATING_PRICE_MAX_TEXT,
                           rating__unit_word(d));
        /* The nearest multiples of step (which keep every price exact), within 0 < x <= the
         * largest multiplier and the largest price (for every price of the span); lo <= 1 or
         * lo < m, so lo fits when m does. */
        int64_t lo = m / step * step, hi = lo + step;
        if (lo == 0) {
            lo = hi;
            hi = lo + step;
        }
        int64_t big = span->max_p > price_p ? span->max_p : price_p;
        bool hi_ok = hi <= RATING_MULT_MAX_E6 && rating__price_fits((gm_i128)big * hi);
        mult_text(lo, lt, sizeof lt);
        mult_text(hi, ht, sizeof ht);
        return gm_fail(err, err_len, GM_ERANGE,
                       "service_tiers.%s: %s x %s (%s) = %s is not exact in 12 fraction digits "
                       "(a multiplier must keep every price exact, as site-tier multipliers "
                       "do); nearest exact multiplier%s: \"%s\"%s%s%s",
                       svc_names[t], mt, what, pt, et, hi_ok ? "s" : "", lt, hi_ok ? " or \"" : "",
                       hi_ok ? ht : "", hi_ok ? "\"" : "");
    }
    return 0;
}

int rating__svc_parse(const rating__json *j, const cJSON *v, bool contract, rating__svc *svc,
                      char *err, size_t err_len)
{
    memset(svc, 0, sizeof *svc);
    for (int t = 0; t < GM_RATING_SVC_COUNT; t++)
        svc->mult_e6[t] = 1000000;
    if (!v)
        return 0;
    if (!cJSON_IsObject(v)) {
        char got[96];
        rating__json_describe(j, v, got, sizeof got);
        return gm_fail(err, err_len, GM_EINVAL,
                       "service_tiers: must be an object of multipliers such as {\"batch\": "
                       "\"0.5\", \"priority\": \"1.5\"}, got %s",
                       got);
    }
    if (!v->child)
        return gm_fail(err, err_len, GM_EINVAL,
                       contract ? "service_tiers: must list batch, priority or both (a contract's "
                                  "service_tiers replaces the card's as a whole, so {} would "
                                  "drop the card's multipliers; leave service_tiers out to keep "
                                  "them, or write {\"batch\": \"1\", \"priority\": \"1\"} to "
                                  "bill every tier at the standard prices)"
                                : "service_tiers: must list batch, priority or both (leave "
                                  "service_tiers out for a card without multipliers)");
    svc->present = true;
    for (const cJSON *c = v->child; c; c = c->next) {
        int t = -1;
        for (int k = 1; k < GM_RATING_SVC_COUNT; k++)
            if (!strcmp(c->string, svc_names[k]))
                t = k;
        if (!strcmp(c->string, "standard"))
            return gm_fail(err, err_len, GM_EINVAL,
                           "service_tiers.standard: the standard tier is priced by the %s "
                           "themselves (multiplier 1) and cannot be listed (allowed: batch, "
                           "priority)",
                           contract ? "tenant's prices (the contract's and the card's)"
                                    : "card's prices");
        if (t < 0)
            return gm_fail(err, err_len, GM_EINVAL,
                           "service_tiers.%s: unknown service tier (allowed: batch, priority, "
                           "the values of events' data.service_tier)",
                           c->string);
        if (svc->listed[t])
            return gm_fail(err, err_len, GM_EINVAL, "service_tiers.%s: field appears twice",
                           c->string);
        char path[64];
        snprintf(path, sizeof path, "service_tiers.%s", svc_names[t]);
        gm_i128 m = 0;
        if (!cJSON_IsString(c)) {
            char got[96];
            rating__json_describe(j, c, got, sizeof got);
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: must be a decimal string like \"0.5\" (multipliers are exact "
                           "decimals), got %s",
                           path, got);
        }
        /* trailing zeros past the 6th fraction digit do not count ("0.5000000" is 0.5) */
        size_t len = strlen(c->valuestring);
        char why[160];
        int prc = gm_dec_parse(c->valuestring, len, RATING_MULT_SCALE, &m, why, sizeof why);
        if (prc || m <= 0 || m > RATING_MULT_MAX_E6) {
            /* more fraction digits than 6 (and in range): the two nearest with 6 */
            char near[160] = "";
            gm_i128 fine;
            if (prc == GM_ERANGE && strstr(why, "fraction digits") &&
                !gm_dec_parse(c->valuestring, len, 30, &fine, NULL, 0) && fine > 0 &&
                fine < (gm_i128)RATING_MULT_MAX_E6 * gm_pow10_i128(30 - RATING_MULT_SCALE)) {
                int64_t lo = (int64_t)(fine / gm_pow10_i128(30 - RATING_MULT_SCALE));
                char lt[48], ht[48];
                mult_text(lo, lt, sizeof lt);
                mult_text(lo + 1, ht, sizeof ht);
                if (lo > 0)
                    snprintf(near, sizeof near, "; nearest: \"%s\" or \"%s\"", lt, ht);
                else
                    snprintf(near, sizeof near, "; nearest: \"%s\"", ht);
            }
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: must be a decimal string greater than 0 and at most 1000000 with "
                           "at most %d fraction digits, got \"%s\"%s",
                           path, RATING_MULT_SCALE, c->valuestring, near);
        }
        svc->listed[t] = true;
        svc->mult_e6[t] = (int64_t)m;
    }
    return 0;
}

void rating__ctx_free(rating__ctx *ctx)
{
    for (size_t i = 0; i < ctx->n; i++)
        free(ctx->row[i].eff);
    free(ctx->row);
    ctx->row = NULL;
    ctx->n = 0;
}

int rating__ctx_parse(const rating__json *j, const cJSON *v, const char *path, rating__ctx *ctx,
                      char *err, size_t err_len)
{
    if (!cJSON_IsArray(v) || !v->child)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be a non-empty array of rows {\"above_tokens\": N, \"prices\": "
                       "{...}}",
                       path);
    size_t n = 0;
    for (const cJSON *r = v->child; r; r = r->next)
        n++;
    if (n > GM_RATING_CTX_ROWS_MAX)
        return gm_fail(err, err_len, GM_EINVAL, "%s: at most %d rows, got %zu", path,
                       GM_RATING_CTX_ROWS_MAX, n);
    ctx->row = gm_xcalloc(n, sizeof *ctx->row);
    ctx->n = n;
    size_t i = 0;
    for (const cJSON *r = v->child; r; r = r->next, i++) {
        rating__ctx_row *row = &ctx->row[i];
        char rp[400];
        snprintf(rp, sizeof rp, "%s[%zu]", path, i);
        if (!cJSON_IsObject(r))
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: must be an object {\"above_tokens\": N, \"prices\": {...}}", rp);
        /* unknown and repeated members refused (a repeated "prices" or "above_tokens" was
         * read first-wins, while other JSON readers see the last one) */
        static const char *const row_keys[] = {"above_tokens", "prices", "description", NULL};
        int krc = rating__check_keys(r, rp, row_keys, err, err_len);
        if (krc)
            return krc;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(r, "above_tokens");
        if (rating__json_int(j, a, GM_RATING_QTY_MAX, &row->above) || row->above < 1) {
            char got[96];
            rating__json_describe(j, a, got, sizeof got);
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s.above_tokens: must be a JSON integer from 1 to 2^53-1 (a request "
                           "whose prompt, input + cached + cache_write tokens, is above it uses "
                           "this row), got %s",
                           rp, got);
        }
        if (i > 0 && row->above <= ctx->row[i - 1].above)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s.above_tokens: rows must be strictly ascending by above_tokens, "
                           "got %lld after %lld",
                           rp, (long long)row->above, (long long)ctx->row[i - 1].above);
        char pp[420];
        snprintf(pp, sizeof pp, "%s.prices", rp);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "prices");
        int rc = rating__row_prices(j, p, pp, row->price_p, &row->mask, err, err_len);
        if (rc)
            return rc;
        if (!row->mask)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: must state at least one dimension (the others come from the "
                           "model's base prices)",
                           pp);
        /* cumulative: what the row does not state, the row below it (or the base) prices */
        row->cum_mask = row->mask | (i ? ctx->row[i - 1].cum_mask : 0);
        for (int d = 0; d < GM_DIM_COUNT; d++)
            row->cum_p[d] = row->mask & (1u << d) ? row->price_p[d]
                            : i                   ? ctx->row[i - 1].cum_p[d]
                                                  : 0;
        for (int t = 0; t < GM_RATING_SVC_COUNT; t++)
            snprintf(row->variant[t], sizeof row->variant[t], "%s%sctx>%lld", base_variants[t],
                     t ? "/" : "", (long long)row->above);
    }
    return 0;
}

int gm_rating_variant_parse(const char *v, gm_rating_svc *svc, int64_t *ctx_above, char *err,
                            size_t err_len)
{
    *svc = GM_RATING_SVC_STANDARD;
    *ctx_above = 0;
    if (!v || !*v)
        return 0;
    const char *p = v;
    for (int t = 1; t < GM_RATING_SVC_COUNT; t++) {
        size_t n = strlen(base_variants[t]);
        if (!strncmp(p, base_variants[t], n) && (p[n] == '\0' || p[n] == '/')) {
            *svc = (gm_rating_svc)t;
            p += n;
            if (!*p)
                return 0;
            p++;
            break;
        }
    }
    if (strncmp(p, "ctx>", 4) || p[4] < '1' || p[4] > '9')
        goto bad;
    p += 4;
    int64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (GM_RATING_QTY_MAX - (*p - '0')) / 10)
            goto bad;
        n = n * 10 + (*p - '0');
    }
    if (*p)
        goto bad;
    *ctx_above = n;
    return 0;
bad:
    return gm_fail(err, err_len, GM_EINVAL,
                   "variant \"%.60s\": must be \"\", \"batch\", \"priority\", \"ctx>N\", "
                   "\"batch/ctx>N\" or \"priority/ctx>N\" (N a positive integer without leading "
                   "zeros)",
                   v);
}

int rating__variant_prompt(const char *variant, gm_rating_svc *svc, int64_t *prompt, char *err,
                           size_t err_len)
{
    int64_t above;
    int rc = gm_rating_variant_parse(variant, svc, &above, err, err_len);
    if (rc)
        return rc;
    *prompt = above ? above + 1 : 0; /* above < 2^53 - 1 */
    return 0;
}

int rating__apply_variant(rating__resolved *r, gm_rating_svc svc, int64_t prompt, char *err,
                          size_t err_len)
{
    if ((unsigned)svc >= GM_RATING_SVC_COUNT)
        return gm_fail(err, err_len, GM_EINVAL,
                       "usage: service tier %d is not one of standard, "
                       "batch, priority",
                       (int)svc);
    const rating__ctx *ctx = r->ctx;
    const rating__ctx_row *row = NULL;
    for (size_t i = ctx ? ctx->n : 0; prompt > 0 && i-- > 0;)
        if (prompt > ctx->row[i].above) {
            row = &ctx->row[i];
            break;
        }
    if (row) {
        /* Cumulative rows (docs/rating.md, "Price variants", rule 2): every dimension that
         * this row or a lower one states at the highest such row's price, the others at the
         * base; cache_write and reasoning that neither the base nor a row states follow the
         * resulting input and output. The contract's rows are the contract's prices, the
         * card's rows are not. */
        const int64_t *e = row->eff ? row->eff + (size_t)r->tier * GM_DIM_COUNT : row->cum_p;
        bool contract_rows = r->contract && !row->eff;
        for (int d = 0; d < GM_DIM_COUNT; d++)
            if (row->cum_mask & (1u << d)) {
                r->price_p[d] = e[d];
                if (contract_rows)
                    r->from_contract |= 1u << d;
                else
                    r->from_contract &= ~(1u << d);
            }
        static const gm_dim follow[][2] = {{GM_DIM_CACHE_WRITE, GM_DIM_INPUT},
                                           {GM_DIM_REASONING, GM_DIM_OUTPUT}};
        for (size_t i = 0; i < GM_ARRAY_LEN(follow); i++) {
            unsigned f = 1u << follow[i][0], from = 1u << follow[i][1];
            if ((row->cum_mask | r->stated) & f)
                continue;
            r->price_p[follow[i][0]] = r->price_p[follow[i][1]];
            r->from_contract = (r->from_contract & ~f) | (r->from_contract & from ? f : 0);
        }
        if (r->flags & GM_PRICE_F_GPU_WINDOWS)
            r->price_p[GM_DIM_GPU] = 0; /* billed from the windows, whatever the row says */
    }
    /* flagged contract_price when at least one unit price is the contract's */
    if (r->from_contract)
        r->flags |= GM_PRICE_F_CONTRACT_PRICE;
    else
        r->flags &= ~GM_PRICE_F_CONTRACT_PRICE;
    const rating__svc *s =
        r->contract && r->contract->svc.present ? &r->contract->svc : &r->card->svc;
    if (svc != GM_RATING_SVC_STANDARD && !s->listed[svc]) {
        /* not listed: priced, and keyed, as standard (x 1), flagged */
        r->flags |= GM_PRICE_F_UNLISTED_VARIANT;
        svc = GM_RATING_SVC_STANDARD;
    }
    r->variant = row ? row->variant[svc] : base_variants[svc];
    if (svc == GM_RATING_SVC_STANDARD)
        return 0;
    for (int d = 0; d < GM_DIM_COUNT; d++)
        if (!rating__svc_mul(r->price_p[d], s->mult_e6[svc], &r->price_p[d])) {
            char mt[48], pt[64];
            mult_text(s->mult_e6[svc], mt, sizeof mt);
            gm_dec_format(r->price_p[d], 12, pt, sizeof pt);
            bool fits = rating__price_fits((gm_i128)r->price_p[d] * s->mult_e6[svc]);
            return gm_fail(err, err_len, GM_ERANGE,
                           "%s service_tiers.%s: %s x the %s price %s %s%s%s (card %s v%lld)",
                           r->contract && r->contract->svc.present ? "contract" : "card",
                           svc_names[svc], mt, gm_dim_name((gm_dim)d), pt,
                           fits ? "is not exact in 12 fraction digits"
                                : "exceeds the largest price (" RATING_PRICE_MAX_TEXT " per ",
                           fits ? "" : rating__unit_word(d), fits ? "" : ")", r->card->card_id,
                           (long long)r->card->version);
        }
    return 0;
}
