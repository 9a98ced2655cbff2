/* Rating money: dimension and currency tables, exact amounts, half-even rounding, largest-
 * remainder allocation, and exact conversion of stated prices (per 1M tokens, per GPU-hour)
 * into price_p, refusing what is not exact in 12 fraction digits. */
#include "rating_int.h"

#include <stdlib.h>

const char *gm_dim_name(gm_dim d)
{
    static const char *names[] = {"input",       "cached",    "output", "gpu",
                                  "cache_write", "reasoning", "request"};
    return (unsigned)d < GM_DIM_COUNT ? names[d] : "?";
}

const char *gm_dim_unit(gm_dim d)
{
    return d == GM_DIM_GPU              ? "gpu_us"
           : d == GM_DIM_REQUEST        ? "request"
           : (unsigned)d < GM_DIM_COUNT ? "token"
                                        : "?";
}

const char *gm_line_kind_name(gm_line_kind k)
{
    static const char *names[] = {"usage", "tier", "allowance", "discount", "commitment", "credit"};
    return (unsigned)k < GM_ARRAY_LEN(names) ? names[k] : "?";
}

/* ISO 4217 minor-unit exponents of the currencies a contract is likely to name. Others are
 * accepted when the document states "minor_units". */
static const struct {
    const char code[4];
    int minor_units;
} currencies[] = {
    {"AED", 2}, {"AUD", 2}, {"BHD", 3}, {"BRL", 2}, {"CAD", 2}, {"CHF", 2}, {"CLP", 0}, {"CNY", 2},
    {"CZK", 2}, {"DKK", 2}, {"EUR", 2}, {"GBP", 2}, {"HKD", 2}, {"HUF", 2}, {"IDR", 2}, {"ILS", 2},
    {"INR", 2}, {"IQD", 3}, {"ISK", 0}, {"JOD", 3}, {"JPY", 0}, {"KRW", 0}, {"KWD", 3}, {"LYD", 3},
    {"MXN", 2}, {"MYR", 2}, {"NOK", 2}, {"NZD", 2}, {"OMR", 3}, {"PHP", 2}, {"PLN", 2}, {"SAR", 2},
    {"SEK", 2}, {"SGD", 2}, {"THB", 2}, {"TND", 3}, {"TRY", 2}, {"TWD", 2}, {"UGX", 0}, {"USD", 2},
    {"VND", 0}, {"XAF", 0}, {"XOF", 0}, {"ZAR", 2},
};

int gm_rating_currency_minor_units(const char *code)
{
    if (!code)
        return -1;
    for (size_t i = 0; i < GM_ARRAY_LEN(currencies); i++)
        if (!strcmp(currencies[i].code, code))
            return currencies[i].minor_units;
    return -1;
}

static const gm_i128 pow10_tab[] = {
    1,
    10,
    100,
    1000,
    10000,
    100000,
    1000000,
    10000000,
    100000000,
    1000000000,
    10000000000,
    100000000000,
    1000000000000,
    10000000000000,
    100000000000000,
    1000000000000000,
    10000000000000000,
    100000000000000000,
    1000000000000000000,
};

int gm_rating_amount_e18(gm_dim dim, gm_i128 qty, int64_t price_p, gm_i128 *out)
{
    gm_i128 a;
    if (__builtin_mul_overflow(qty, (gm_i128)price_p, &a))
        return GM_ERANGE;
    if (dim != GM_DIM_GPU && __builtin_mul_overflow(a, (gm_i128)1000000, &a))
        return GM_ERANGE;
    *out = a;
    return 0;
}

gm_i128 gm_rating_round_e18(gm_i128 amount_e18, int minor_units)
{
    gm_i128 d = pow10_tab[18 - minor_units];
    bool neg = amount_e18 < 0;
    /* |INT128_MIN| is unreachable: amounts come from checked products of bounded inputs. */
    gm_i128 a = neg ? -amount_e18 : amount_e18;
    gm_i128 q = a / d, r = a % d;
    if (r * 2 > d || (r * 2 == d && (q & 1)))
        q++;
    return neg ? -q : q;
}

size_t gm_rating_format_minor(gm_i128 minor, int minor_units, char *buf, size_t buf_len)
{
    return gm_dec_format(minor, minor_units, buf, buf_len);
}

typedef struct {
    const gm_i128 *rem;
} alloc_ctx;

static int cmp_rem(const void *a, const void *b, void *arg)
{
    const gm_i128 *rem = ((const alloc_ctx *)arg)->rem;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (rem[i] != rem[j])
        return rem[i] > rem[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

int gm_rating_allocate(gm_i128 total, const gm_i128 *weights, size_t n, gm_i128 *shares)
{
    gm_i128 w_sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] < 0)
            return GM_EINVAL;
        if (gm_i128_add(w_sum, weights[i], &w_sum))
            return GM_ERANGE;
    }
    if (total < 0)
        return GM_EINVAL;
    if (w_sum == 0) {
        for (size_t i = 0; i < n; i++)
            shares[i] = 0;
        return total == 0 ? 0 : GM_EINVAL;
    }
    gm_i128 *rem = gm_xcalloc(n ? n : 1, sizeof *rem);
    size_t *idx = gm_xcalloc(n ? n : 1, sizeof *idx);
    gm_i128 given = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        gm_i128 p;
        if (gm_i128_mul(total, weights[i], &p)) {
            rc = GM_ERANGE;
            goto out;
        }
        shares[i] = p / w_sum;
        rem[i] = p % w_sum;
        given += shares[i];
        idx[i] = i;
    }
    gm_i128 left = total - given; /* 0 <= left < n */
    alloc_ctx ctx = {rem};
    qsort_r(idx, n, sizeof *idx, cmp_rem, &ctx);
    for (size_t k = 0; k < n && left > 0; k++, left--)
        shares[idx[k]]++;
out:
    free(rem);
    free(idx);
    return rc;
}

/* ---- Stated prices -> price_p ---------------------------------------------------------- */

/* Formats v * 10^-scale without trailing fraction zeros ("2.5", "0.000694444444"). */
static void fmt_trim(gm_i128 v, int scale, char *buf, size_t len)
{
    gm_dec_format(v, scale, buf, len);
    if (scale == 0 || !strchr(buf, '.'))
        return;
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
}

int gm_rating_price_convert(const char *unit, const char *text, size_t len, int64_t *price_p,
                            char *err, size_t err_len)
{
    int per_1m = !strcmp(unit, "per_1m_tokens"), per_hour = !strcmp(unit, "per_gpu_hour");
    int per_token = !strcmp(unit, "per_token") || !strcmp(unit, "per_request"),
        per_second = !strcmp(unit, "per_gpu_second");
    if (!per_1m && !per_hour && !per_token && !per_second)
        return gm_fail(err, err_len, GM_EINVAL,
                       "unknown price unit \"%s\" (per_token, per_1m_tokens, per_gpu_second, "
                       "per_gpu_hour, per_request)",
                       unit);
    const char *what = per_hour || per_second         ? "GPU-second"
                       : !strcmp(unit, "per_request") ? "request"
                                                      : "token";
    if (len > 0 && text[0] == '-')
        return gm_fail(err, err_len, GM_EINVAL, "must not be negative, got \"%.*s\"", (int)len,
                       text);
    /* per 1M tokens: 12 digits per token are 6 per 1M tokens; price_p = x * 10^6. */
    int scale = per_1m ? 6 : 12;
    gm_i128 v;
    char why[160];
    int rc = gm_dec_parse(text, len, scale, &v, why, sizeof why);
    if (rc == GM_EINVAL)
        return gm_fail(err, err_len, GM_EINVAL,
                       "must be a decimal string like \"0.60\" (%s), got \"%.*s\"", why, (int)len,
                       text);
    if (rc == GM_ERANGE && !strstr(why, "fraction digits"))
        return gm_fail(err, err_len, GM_ERANGE, "price is too large, got \"%.*s\"", (int)len, text);
    if (rc == GM_ERANGE) {
        /* Too many fraction digits: name the two nearest exact values. */
        gm_i128 fine;
        char lo[64], hi[64];
        int fine_rc = gm_dec_parse(text, len, 30, &fine, NULL, 0);
        if (per_hour) {
            gm_i128 unit_scale = gm_pow10_i128(18) * 3600; /* 30 - 12 digits, per second */
            gm_i128 p_lo = fine_rc ? 0 : fine / unit_scale;
            fmt_trim(p_lo, 12, lo, sizeof lo);
            fmt_trim(p_lo + 1, 12, hi, sizeof hi);
            return gm_fail(err, err_len, GM_ERANGE,
                           "%.*s per GPU-hour is not exact in 12 fraction digits per GPU-second; "
                           "state \"per_gpu_second\": \"%s\" or \"%s\", or an hourly price that "
                           "is a multiple of 0.0000000036",
                           (int)len, text, fine_rc ? "?" : lo, fine_rc ? "?" : hi);
        }
        gm_i128 p_lo = fine_rc ? 0 : fine / gm_pow10_i128(30 - scale);
        fmt_trim(p_lo, scale, lo, sizeof lo);
        fmt_trim(p_lo + 1, scale, hi, sizeof hi);
        return gm_fail(err, err_len, GM_ERANGE,
                       "must be a decimal string with at most 12 fraction digits per %s%s, got "
                       "\"%.*s\"; nearest exact: \"%s\" or \"%s\"",
                       what, per_1m ? " (6 per 1M tokens)" : "", (int)len, text, fine_rc ? "?" : lo,
                       fine_rc ? "?" : hi);
    }
    if (per_hour) {
        /* x per hour = x / 3600 per second: exact in 12 digits iff x*10^12 % 3600 == 0. */
        if (v % 3600 != 0) {
            char exact[64], lo[64], hi[64], lo_h[64], hi_h[64];
            gm_i128 p_lo = v / 3600;
            gm_dec_format(v * 1000000 / 3600, 18, exact, sizeof exact);
            fmt_trim(p_lo, 12, lo, sizeof lo);
            fmt_trim(p_lo + 1, 12, hi, sizeof hi);
            fmt_trim(p_lo * 3600, 12, lo_h, sizeof lo_h);
            fmt_trim((p_lo + 1) * 3600, 12, hi_h, sizeof hi_h);
            return gm_fail(err, err_len, GM_ERANGE,
                           "%.*s per GPU-hour is %s... per GPU-second, not exact in 12 fraction "
                           "digits (an hourly price must be a multiple of 0.0000000036); nearest "
                           "exact: \"per_gpu_second\": \"%s\" (= %s per GPU-hour) or \"%s\" (= %s "
                           "per GPU-hour)",
                           (int)len, text, exact, lo, lo_h, hi, hi_h);
        }
        v /= 3600;
    }
    if (v > INT64_MAX)
        return gm_fail(err, err_len, GM_ERANGE, "price is too large, got \"%.*s\"", (int)len, text);
    *price_p = (int64_t)v;
    return 0;
}
