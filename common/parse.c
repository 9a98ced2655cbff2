/* Strict integer parsing and RFC 3339 time: nothing is rounded, clamped or guessed. */
#include "gm_common.h"

#include <string.h>
#include <time.h>

size_t gm_json_nul_escape(const char *text, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!in_string) {
            in_string = c == '"';
        } else if (c == '"') {
            in_string = false;
        } else if (c == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 6 <= len && !memcmp(text + i + 2, "0000", 4))
                return i;
            i++; /* the escaped character: \" and \\ do not end or start anything */
        }
    }
    return SIZE_MAX;
}

int gm_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0)
        return GM_EINVAL;
    if (len > 1 && s[0] == '0')
        return GM_EINVAL;
    uint64_t v = 0;
    bool overflow = false;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)s[i];
        if (c < '0' || c > '9')
            return GM_EINVAL;
        /* Keep scanning after overflow so that "12x" is still EINVAL, not ERANGE. */
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, c - '0', &v))
            overflow = true;
    }
    if (overflow || v > max)
        return GM_ERANGE;
    *out = v;
    return 0;
}

int gm_parse_i64(const char *s, size_t len, int64_t *out)
{
    bool neg = len > 0 && s[0] == '-';
    uint64_t v;
    int rc = gm_parse_u64(s + neg, len - neg, neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &v);
    if (rc)
        return rc;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Howard Hinnant's days_from_civil / civil_from_days. */
int64_t gm_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void gm_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t yy = (int64_t)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int gm_time_parse(const char *s, size_t len, int64_t *us_out, char *err, size_t err_len)
{
#define BAD(...) gm_fail(err, err_len, GM_EINVAL, __VA_ARGS__)
    unsigned Y, M, D, h, mi, sec;
    if (len < 20)
        return BAD("must be an RFC 3339 date-time like 2026-11-27T22:00:00Z");
    if (digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D))
        return BAD("must start with a date YYYY-MM-DD (RFC 3339)");
    if (s[10] != 'T' && s[10] != 't')
        return BAD("date and time must be separated by 'T' (RFC 3339)");
    if (digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        return BAD("time must be HH:MM:SS (RFC 3339)");
    if (Y < 1970)
        return BAD("year must be 1970 or later");
    if (M < 1 || M > 12)
        return BAD("month must be 01..12");
    if (D < 1 || D > days_in_month(Y, M))
        return BAD("day %02u does not exist in %04u-%02u", D, Y, M);
    if (h > 23 || mi > 59)
        return BAD("hour must be 00..23 and minute 00..59");
    if (sec > 59)
        return BAD("second must be 00..59 (leap seconds are not accepted)");
    size_t i = 19;
    int64_t frac_us = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        size_t nd = i - start;
        if (nd == 0)
            return BAD("a '.' must be followed by fraction digits");
        if (nd > 9)
            return BAD("fraction of a second has more than 9 digits");
        for (size_t k = 0; k < nd; k++) {
            if (k < 6)
                frac_us = frac_us * 10 + (s[start + k] - '0');
            else if (s[start + k] != '0')
                return BAD("sub-microsecond precision is not accepted (digits past the 6th "
                           "must be 0)");
        }
        for (size_t k = nd; k < 6; k++)
            frac_us *= 10;
    }
    int64_t offset_s = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        unsigned oh, om;
        if (len - i < 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
            digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return BAD("time offset must be Z or ±HH:MM");
        offset_s = (int64_t)oh * 3600 + om * 60;
        if (s[i] == '-')
            offset_s = -offset_s;
        i += 6;
    } else {
        return BAD("time offset (Z or ±HH:MM) is required");
    }
    if (i != len)
        return BAD("unexpected characters after the time offset");
    int64_t days = gm_days_from_civil(Y, M, D);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    if (secs < 0)
        return BAD("instant is before 1970-01-01T00:00:00Z");
    *us_out = secs * GM_US_PER_SEC + frac_us;
    return 0;
#undef BAD
}

void gm_time_format(int64_t us, char *buf, size_t buf_len)
{
    int64_t secs = us / GM_US_PER_SEC, frac = us % GM_US_PER_SEC;
    if (frac < 0) {
        frac += GM_US_PER_SEC;
        secs -= 1;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t y;
    unsigned m, d;
    gm_civil_from_days(days, &y, &m, &d);
    snprintf(buf, buf_len, "%04lld-%02u-%02uT%02u:%02u:%02u.%06lldZ", (long long)y, m, d,
             (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60), (unsigned)(rem % 60),
             (long long)frac);
}

int64_t gm_month_start(int64_t us)
{
    int64_t days = us / GM_US_PER_DAY - (us % GM_US_PER_DAY < 0), y;
    unsigned m, d;
    gm_civil_from_days(days, &y, &m, &d);
    return gm_days_from_civil(y, m, 1) * GM_US_PER_DAY;
}

int64_t gm_month_next(int64_t us)
{
    int64_t days = gm_month_start(us) / GM_US_PER_DAY, y;
    unsigned m, d;
    gm_civil_from_days(days, &y, &m, &d);
    if (++m > 12) {
        m = 1;
        y++;
    }
    return gm_days_from_civil(y, m, 1) * GM_US_PER_DAY;
}

size_t gm_utf8_trim_partial(char *s)
{
    size_t n = strlen(s);
    /* Walk back over continuation bytes (10xxxxxx) to the lead byte of the last sequence. */
    size_t i = n, cont = 0;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80 && cont < 4) {
        i--;
        cont++;
    }
    if (i == 0)
        return n;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead < 0x80             ? 1
                  : (lead & 0xE0) == 0xC0 ? 2
                  : (lead & 0xF0) == 0xE0 ? 3
                  : (lead & 0xF8) == 0xF0 ? 4
                                          : 1;
    if (lead >= 0x80 && cont + 1 < need) {
        s[i - 1] = 0; /* the last character was cut: drop its remaining bytes */
        return i - 1;
    }
    return n;
}
