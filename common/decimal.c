/* Exact decimals: __int128 counts of 10^-scale units, parsed and printed without floats. */
#include "gm_common.h"

#include <string.h>

gm_i128 gm_pow10_i128(int n)
{
    gm_i128 v = 1;
    for (int i = 0; i < n; i++)
        v *= 10;
    return v;
}

int gm_dec_parse(const char *s, size_t len, int scale, gm_i128 *out, char *err, size_t err_len)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && s[i] == '-') {
        neg = true;
        i++;
    }
    size_t int_start = i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    size_t int_len = i - int_start;
    if (int_len == 0)
        return gm_fail(err, err_len, GM_EINVAL, "must be a decimal number like 12.345");
    if (int_len > 1 && s[int_start] == '0')
        return gm_fail(err, err_len, GM_EINVAL, "a decimal number has no leading zeros");
    size_t frac_start = i, frac_len = 0;
    if (i < len && s[i] == '.') {
        i++;
        frac_start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        frac_len = i - frac_start;
        if (frac_len == 0)
            return gm_fail(err, err_len, GM_EINVAL, "a '.' must be followed by digits");
    }
    if (i != len)
        return gm_fail(err, err_len, GM_EINVAL,
                       "must be a plain decimal number (no exponent, sign '+' or spaces)");
    gm_i128 v = 0;
    for (size_t k = int_start; k < int_start + int_len; k++)
        if (gm_i128_mul(v, 10, &v) || gm_i128_add(v, s[k] - '0', &v))
            return gm_fail(err, err_len, GM_ERANGE, "number is too large");
    for (int k = 0; k < scale; k++) {
        int digit = (size_t)k < frac_len ? s[frac_start + k] - '0' : 0;
        if (gm_i128_mul(v, 10, &v) || gm_i128_add(v, digit, &v))
            return gm_fail(err, err_len, GM_ERANGE, "number is too large");
    }
    for (size_t k = (size_t)scale; k < frac_len; k++)
        if (s[frac_start + k] != '0')
            return gm_fail(err, err_len, GM_ERANGE,
                           "has more than %d fraction digits (not exact at that scale)", scale);
    *out = neg ? -v : v;
    return 0;
}

size_t gm_i128_format(gm_i128 value, char *buf, size_t buf_len)
{
    char tmp[48];
    size_t n = 0;
    unsigned __int128 u =
        value < 0 ? (unsigned __int128)0 - (unsigned __int128)value : (unsigned __int128)value;
    do {
        tmp[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (value < 0)
        tmp[n++] = '-';
    size_t w = 0;
    while (n && w + 1 < buf_len)
        buf[w++] = tmp[--n];
    if (buf_len)
        buf[w] = '\0';
    return w;
}

size_t gm_dec_format(gm_i128 value, int scale, char *buf, size_t buf_len)
{
    char digits_buf[48];
    unsigned __int128 u =
        value < 0 ? (unsigned __int128)0 - (unsigned __int128)value : (unsigned __int128)value;
    size_t n = 0;
    do {
        digits_buf[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    while (n < (size_t)scale + 1)
        digits_buf[n++] = '0';
    char out[96];
    size_t w = 0;
    if (value < 0)
        out[w++] = '-';
    for (size_t k = n; k > 0; k--) {
        if (k == (size_t)scale && scale > 0)
            out[w++] = '.';
        out[w++] = digits_buf[k - 1];
    }
    out[w] = '\0';
    snprintf(buf, buf_len, "%s", out);
    return w < buf_len ? w : (buf_len ? buf_len - 1 : 0);
}
