/* Strict single-pass decoder of gridmeter.usage.v1 and gridmeter.gpu.v1 CloudEvents.
 *
 * DESIGN. The rater decodes every event on its hot path, so this is not a general JSON
 * parser with a tree: it is one forward pass over the bytes that knows the contract.
 *
 *   1. The size is checked (<= GM_EVENT_MAX_BYTES), then the whole message is checked to be
 *      UTF-8 (8 bytes at a time while they are ASCII), so that an invalid byte is reported
 *      with its offset wherever it sits.
 *   2. The top-level object is read member by member. Each key is decoded (escapes
 *      included) into a small buffer and dispatched; known keys are remembered in a bit
 *      mask, so a duplicate is an error; unknown keys must be CloudEvents extension
 *      attribute names (a-z 0-9) with a scalar value, and are skipped.
 *   3. `data` is read in place into the gm_event fields. Every field is a scalar, so the
 *      decoder never descends further than two levels: an object or array where a scalar
 *      belongs is refused at once, which is how deep nesting is refused early, with no
 *      recursion and no depth counter to overflow.
 *   4. Quantities are parsed from the number text: only a plain run of at most 16 digits
 *      without a leading zero, <= 2^53-1, passes. A sign, a fraction or an exponent is an
 *      error, never rounded (1.0 and -0 are errors too).
 *   5. When `data` comes before `type`, its fields are read into the union of both types'
 *      fields and checked against the type at the end.
 *
 * Nothing is allocated; the output's strings are the fixed arrays of gm_event. The first
 * broken rule ends the decode, and the reason names the field (its JSON path) and the rule.
 */
#include "event_internal.h"

#include <stdarg.h>
#include <string.h>

/* Fields of `data`, and which event types carry them. */
enum {
    F_SEQ,
    F_SITE,
    F_MODEL,
    F_REQUEST_ID,
    F_INPUT_TOKENS,
    F_CACHED_TOKENS,
    F_OUTPUT_TOKENS,
    F_GPU_US,
    F_DEVICE,
    F_WINDOW_START,
    F_WINDOW_END,
    F_POLICY,
    F_KERNELS,
    F_UNATTRIBUTED_US,
    F_REASONING_TOKENS,
    F_CACHE_WRITE_TOKENS,
    F_SERVICE_TIER,
    F_EPOCH,
    F_COUNT
};
#define T_USAGE (1u << GM_EVENT_USAGE)
#define T_GPU   (1u << GM_EVENT_GPU)

static const struct {
    const char *name;
    unsigned char len;
    unsigned char types;
    bool optional;
    const char *path; /* "data.<name>", for reasons */
} dfields[F_COUNT] = {
    [F_SEQ] = {"seq", 3, T_USAGE | T_GPU, false, "data.seq"},
    [F_SITE] = {"site", 4, T_USAGE | T_GPU, false, "data.site"},
    [F_MODEL] = {"model", 5, T_USAGE, false, "data.model"},
    [F_REQUEST_ID] = {"request_id", 10, T_USAGE, true, "data.request_id"},
    [F_INPUT_TOKENS] = {"input_tokens", 12, T_USAGE, false, "data.input_tokens"},
    [F_CACHED_TOKENS] = {"cached_tokens", 13, T_USAGE, false, "data.cached_tokens"},
    [F_OUTPUT_TOKENS] = {"output_tokens", 13, T_USAGE, false, "data.output_tokens"},
    [F_GPU_US] = {"gpu_us", 6, T_USAGE | T_GPU, false, "data.gpu_us"},
    [F_DEVICE] = {"device", 6, T_GPU, false, "data.device"},
    [F_WINDOW_START] = {"window_start", 12, T_GPU, false, "data.window_start"},
    [F_WINDOW_END] = {"window_end", 10, T_GPU, false, "data.window_end"},
    [F_POLICY] = {"policy", 6, T_GPU, false, "data.policy"},
    [F_KERNELS] = {"kernels", 7, T_GPU, false, "data.kernels"},
    [F_UNATTRIBUTED_US] = {"unattributed_us", 15, T_GPU, false, "data.unattributed_us"},
    /* revision 1.1 of the usage data: optional, absent = 0 / "standard" */
    [F_REASONING_TOKENS] = {"reasoning_tokens", 16, T_USAGE, true, "data.reasoning_tokens"},
    [F_CACHE_WRITE_TOKENS] = {"cache_write_tokens", 18, T_USAGE, true, "data.cache_write_tokens"},
    [F_SERVICE_TIER] = {"service_tier", 12, T_USAGE, true, "data.service_tier"},
    /* revision 1.2: optional, absent = 0 */
    [F_EPOCH] = {"epoch", 5, T_USAGE, true, "data.epoch"},
};

/* Top-level members. */
enum {
    K_SPECVERSION,
    K_TYPE,
    K_SOURCE,
    K_ID,
    K_TIME,
    K_SUBJECT,
    K_DATACONTENTTYPE,
    K_DATASCHEMA,
    K_DATA,
    K_DATA_BASE64,
    K_OTHER
};
#define K_REQUIRED                                                                                 \
    ((1u << K_SPECVERSION) | (1u << K_TYPE) | (1u << K_SOURCE) | (1u << K_ID) | (1u << K_TIME) |   \
     (1u << K_SUBJECT) | (1u << K_DATA))

#define KEY_CAP      72 /* longest key kept; longer ones are unknown or refused */
#define EXT_NAME_MAX 64 /* extension attribute names: 1..64 of a-z 0-9 */
#define EXT_MAX      16 /* extension attributes per event */
#define SHOW_MAX     40 /* bytes of an offending value shown in a reason */
#define QTY_RULE     "must be an integer between %d and 2^53-1, got %s"

typedef struct {
    const char *msg, *p, *end;
    gm_event *ev;
    gm_event_error *e;
    unsigned seen;  /* K_* bits */
    unsigned dseen; /* F_* bits */
    int n_ext;
    char ext[EXT_MAX][EXT_NAME_MAX + 1];
} dec;

/* ---- Reasons --------------------------------------------------------------------------*/

/* Writes up to `max_show` bytes of s as printable ASCII (other bytes as \xNN), "..." when
 * cut short. */
static void render(const char *s, size_t n, size_t max_show, char *out, size_t out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (out_len == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= max_show || o + 8 >= out_len) {
            if (o + 4 < out_len)
                memcpy(out + o, "...", 3), o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

static int failv(dec *d, const char *at, const char *field, const char *fmt, va_list ap)
{
    gm_event_error *e = d->e;
    snprintf(e->field, sizeof e->field, "%s", field);
    vsnprintf(e->rule, sizeof e->rule, fmt, ap);
    e->offset = (size_t)(at - d->msg);
    return GM_EINVAL;
}

static int fail(dec *d, const char *at, const char *field, const char *fmt, ...) GM_PRINTF(4, 5);
static int fail(dec *d, const char *at, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = failv(d, at, field, fmt, ap);
    va_end(ap);
    return rc;
}

/* A JSON syntax error at `at`. */
static int syntax(dec *d, const char *at, const char *what)
{
    if (at >= d->end)
        return fail(d, at, "message", "invalid JSON: %s, got the end of the message", what);
    char b[16];
    render(at, 1, 1, b, sizeof b);
    return fail(d, at, "message", "invalid JSON at byte %zu: %s, got '%s'", (size_t)(at - d->msg),
                what, b);
}

/* Describes the JSON value starting at p for a "got …" clause: "an object", "an array",
 * or its text (strings with their quotes), cut to SHOW_MAX bytes. */
static void describe(const dec *d, const char *p, char *out, size_t out_len)
{
    if (p >= d->end) {
        snprintf(out, out_len, "nothing");
        return;
    }
    if (*p == '{' || *p == '[') {
        snprintf(out, out_len, *p == '{' ? "an object" : "an array");
        return;
    }
    const char *q = p;
    if (*p == '"') {
        for (q = p + 1; q < d->end && *q != '"'; q++)
            if (*q == '\\' && q + 1 < d->end)
                q++;
        if (q < d->end)
            q++;
    } else {
        while (q < d->end && !strchr(",}] \t\r\n", *q))
            q++;
    }
    render(p, (size_t)(q - p), SHOW_MAX, out, out_len);
}

/* Field path for a reason: prefix + key rendered printable. */
static void field_path(char *out, size_t out_len, const char *prefix, const char *k, size_t n)
{
    char shown[48];
    render(k, n, 32, shown, sizeof shown);
    if (n == 0)
        snprintf(shown, sizeof shown, "\"\""); /* the empty key */
    snprintf(out, out_len, "%s%s", prefix, shown);
}

/* ---- UTF-8 ----------------------------------------------------------------------------*/

/* Offset of the first byte of the first invalid UTF-8 sequence, or n when all is valid.
 * Refuses overlong forms, surrogates (U+D800..DFFF) and code points past U+10FFFF. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & UINT64_C(0x8080808080808080))) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            return i;
        }
        if (n - i <= need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += need + 1;
    }
    return n;
}

/* ---- Lexing ---------------------------------------------------------------------------*/

static inline void skip_ws(dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static inline void emit(char *dst, size_t cap, size_t *n, const char *s, size_t k)
{
    if (*n < cap)
        memcpy(dst + *n, s, k <= cap - *n ? k : cap - *n);
    *n += k;
}

#define ONES  UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)
/* Non-zero when some byte of w is 0 (may also flag bytes above a true hit; never misses). */
static inline uint64_t swar_zero(uint64_t w)
{
    return (w - ONES) & ~w & HIGHS;
}
/* Non-zero when some byte of w is < n (n <= 128). */
static inline uint64_t swar_less(uint64_t w, unsigned n)
{
    return (w - ONES * n) & ~w & HIGHS;
}

/* Reads the JSON string at d->p (which is '"'), decoding escapes. Writes at most `cap`
 * bytes to dst (not terminated) and the full decoded length to *len. */
static int scan_string(dec *d, char *dst, size_t cap, size_t *len)
{
    const char *s = d->p + 1, *end = d->end;
    size_t n = 0;
    for (;;) {
        const char *q = s;
        /* 8 bytes at a time while none is '"', '\\' or a control character (SWAR: a
         * byte-wise "has zero" / "has less than 0x20" test), then byte by byte. */
        while (end - q >= 8) {
            uint64_t w;
            memcpy(&w, q, 8);
            uint64_t m =
                swar_zero(w ^ ONES * '"') | swar_zero(w ^ ONES * '\\') | swar_less(w, 0x20);
            if (m) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                q += __builtin_ctzll(m) >> 3; /* the lowest flagged byte is a true hit */
#endif
                break;
            }
            q += 8;
        }
        while (q < end && (event__class[(unsigned char)*q] & EVENT__C_PLAIN))
            q++;
        emit(dst, cap, &n, s, (size_t)(q - s));
        if (q >= end)
            return syntax(d, q, "unterminated string");
        if (*q == '"') {
            d->p = q + 1;
            *len = n;
            return 0;
        }
        if (*q != '\\')
            return syntax(d, q, "control character in a string (must be escaped)");
        if (q + 1 >= end)
            return syntax(d, q + 1, "unterminated string");
        char c = q[1], one;
        s = q + 2;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            one = c;
            break;
        case 'b':
            one = '\b';
            break;
        case 'f':
            one = '\f';
            break;
        case 'n':
            one = '\n';
            break;
        case 'r':
            one = '\r';
            break;
        case 't':
            one = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (end - s < 4 || hex4(s, &cp))
                return syntax(d, q, "\\u must be followed by 4 hex digits");
            s += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return syntax(d, q, "unpaired UTF-16 surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    return syntax(d, q, "unpaired UTF-16 surrogate in \\u escape");
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            char u[4];
            size_t k;
            if (cp < 0x80) {
                u[0] = (char)cp, k = 1;
            } else if (cp < 0x800) {
                u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), k = 2;
            } else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (char)(0x80 | (cp & 0x3F)), k = 3;
            } else {
                u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F));
                k = 4;
            }
            emit(dst, cap, &n, u, k);
            continue;
        }
        default:
            return syntax(d, q + 1, "unknown escape in a string");
        }
        emit(dst, cap, &n, &one, 1);
    }
}

/* Checks the JSON number grammar at d->p and moves past it. */
static int scan_number(dec *d)
{
    const char *p = d->p, *end = d->end;
    if (p < end && *p == '-')
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return syntax(d, p, "malformed number");
    if (*p == '0')
        p++;
    else
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return syntax(d, p, "malformed number (digits must follow '.')");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return syntax(d, p, "malformed number (digits must follow the exponent)");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && *p >= '0' && *p <= '9')
        return syntax(d, p, "malformed number (leading zero)");
    d->p = p;
    return 0;
}

static int scan_literal(dec *d, const char *lit, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, lit, n))
        return syntax(d, d->p, "expected a value");
    d->p += n;
    return 0;
}

/* ---- Values of the contract -----------------------------------------------------------*/

/* A quantity: JSON integer text 0 <= n <= 2^53-1 (and >= min). */
static int parse_quantity(dec *d, const char *field, int min, int64_t *out)
{
    const char *p = d->p, *s = p, *end = d->end;
    uint64_t v = 0;
    if (p < end && *p >= '0' && *p <= '9') {
        if (*p == '0') {
            p++;
        } else {
            while (p < end && *p >= '0' && *p <= '9' && p - s < 17)
                v = v * 10 + (uint64_t)(*p++ - '0');
        }
        /* The number must end here: "01", "1.5", "1e3", "0x80" are all refused as a whole. */
        bool more = p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
                    *p != '\r' && *p != '\t';
        if (!more && v <= (uint64_t)GM_EVENT_MAX_QUANTITY && v >= (uint64_t)min) {
            *out = (int64_t)v;
            d->p = p;
            return 0;
        }
    }
    char got[SHOW_MAX * 4 + 8];
    describe(d, s, got, sizeof got);
    return fail(d, s, field, QTY_RULE, min, got);
}

/* A string value into a buffer of cap bytes (+1 for the NUL); *len gets its full length. */
static int parse_string_into(dec *d, const char *field, char *dst, size_t cap, size_t *len)
{
    if (d->p >= d->end || *d->p != '"') {
        char got[SHOW_MAX * 4 + 8];
        describe(d, d->p, got, sizeof got);
        return fail(d, d->p, field, "must be a string, got %s", got);
    }
    int rc = scan_string(d, dst, cap, len);
    if (rc)
        return rc;
    if (*len <= cap)
        dst[*len] = '\0';
    return 0;
}

static int parse_ident(dec *d, const char *field, char *dst, gm_ident_kind kind, bool optional)
{
    const char *at = d->p;
    size_t n = 0;
    size_t max = gm_ident_max(kind);
    int rc = parse_string_into(d, field, dst, max, &n);
    if (rc)
        return rc;
    char rule[192];
    if (event__ident_check(dst, n, kind, optional, rule, sizeof rule))
        return fail(d, at, field, "%s", rule);
    return 0;
}

static int parse_time(dec *d, const char *field, int64_t *out)
{
    const char *at = d->p;
    char buf[48];
    size_t n = 0;
    int rc = parse_string_into(d, field, buf, sizeof buf - 1, &n);
    if (rc)
        return rc;
    char rule[160], got[SHOW_MAX * 4 + 8];
    if (n >= sizeof buf - 1 || gm_time_parse(buf, n, out, rule, sizeof rule)) {
        if (n >= sizeof buf - 1)
            snprintf(rule, sizeof rule, "must be an RFC 3339 date-time like 2026-11-27T22:00:00Z");
        describe(d, at, got, sizeof got);
        return fail(d, at, field, "%s, got %s", rule, got);
    }
    if (*out > EVENT__TIME_MAX_US) {
        describe(d, at, got, sizeof got);
        return fail(d, at, field, "must be at most 9999-12-31T23:59:59.999999Z, got %s", got);
    }
    return 0;
}

/* A string that must be one of the given constants. */
static int parse_const(dec *d, const char *field, const char *a, const char *b, int *which)
{
    const char *at = d->p;
    char buf[32];
    size_t n = 0;
    int rc = parse_string_into(d, field, buf, sizeof buf - 1, &n);
    if (rc)
        return rc;
    if (n == strlen(a) && !memcmp(buf, a, n)) {
        *which = 0;
        return 0;
    }
    if (b && n == strlen(b) && !memcmp(buf, b, n)) {
        *which = 1;
        return 0;
    }
    char got[SHOW_MAX * 4 + 8];
    describe(d, at, got, sizeof got);
    if (b)
        return fail(d, at, field, "must be \"%s\" or \"%s\", got %s", a, b, got);
    return fail(d, at, field, "must be \"%s\", got %s", a, got);
}

/* data.service_tier: exactly "standard", "batch" or "priority". */
static int parse_service_tier(dec *d, const char *field, gm_service_tier *out)
{
    const char *at = d->p;
    char buf[32];
    size_t n = 0;
    int rc = parse_string_into(d, field, buf, sizeof buf - 1, &n);
    if (rc)
        return rc;
    if (n < sizeof buf && !gm_service_tier_parse(buf, n, out))
        return 0;
    char got[SHOW_MAX * 4 + 8];
    describe(d, at, got, sizeof got);
    return fail(d, at, field, "must be \"standard\", \"batch\" or \"priority\", got %s", got);
}

/* ---- Members --------------------------------------------------------------------------*/

/* Reads `"key" :` and leaves d->p at the value. */
static int parse_key(dec *d, char *key, size_t *len)
{
    if (d->p >= d->end || *d->p != '"')
        return syntax(d, d->p, "expected a string key");
    int rc = scan_string(d, key, KEY_CAP, len);
    if (rc)
        return rc;
    key[*len < KEY_CAP ? *len : KEY_CAP] = '\0';
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':')
        return syntax(d, d->p, "expected ':' after a key");
    d->p++;
    skip_ws(d);
    return 0;
}

/* After a member: ',' (then another key) or the closing '}'. Returns 1 at the '}'. */
static int member_end(dec *d)
{
    skip_ws(d);
    if (d->p < d->end && *d->p == ',') {
        d->p++;
        skip_ws(d);
        return 0;
    }
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 1;
    }
    return syntax(d, d->p, "expected ',' or '}' after a member");
}

static int data_field(const char *k, size_t n)
{
    for (int f = 0; f < F_COUNT; f++)
        if (dfields[f].len == n && !memcmp(dfields[f].name, k, n))
            return f;
    return -1;
}

static int parse_data_value(dec *d, int f, const char *field)
{
    gm_event *ev = d->ev;
    int64_t seq;
    int rc;
    switch (f) {
    case F_SEQ:
        rc = parse_quantity(d, field, 1, &seq);
        ev->seq = (uint64_t)seq;
        return rc;
    case F_SITE:
        return parse_ident(d, field, ev->site, GM_IDENT_SITE, false);
    case F_MODEL:
        return parse_ident(d, field, ev->model, GM_IDENT_MODEL, false);
    case F_REQUEST_ID:
        return parse_ident(d, field, ev->request_id, GM_IDENT_REQUEST_ID, true);
    case F_INPUT_TOKENS:
        return parse_quantity(d, field, 0, &ev->input_tokens);
    case F_CACHED_TOKENS:
        return parse_quantity(d, field, 0, &ev->cached_tokens);
    case F_OUTPUT_TOKENS:
        return parse_quantity(d, field, 0, &ev->output_tokens);
    case F_GPU_US:
        return parse_quantity(d, field, 0, &ev->gpu_us);
    case F_DEVICE:
        return parse_ident(d, field, ev->device, GM_IDENT_DEVICE, false);
    case F_WINDOW_START:
        return parse_time(d, field, &ev->window_start_us);
    case F_WINDOW_END:
        return parse_time(d, field, &ev->window_end_us);
    case F_POLICY:
        return parse_ident(d, field, ev->policy, GM_IDENT_POLICY, false);
    case F_KERNELS:
        return parse_quantity(d, field, 0, &ev->kernels);
    case F_UNATTRIBUTED_US:
        return parse_quantity(d, field, 0, &ev->unattributed_us);
    case F_REASONING_TOKENS:
        return parse_quantity(d, field, 0, &ev->reasoning_tokens);
    case F_CACHE_WRITE_TOKENS:
        return parse_quantity(d, field, 0, &ev->cache_write_tokens);
    case F_SERVICE_TIER:
        return parse_service_tier(d, field, &ev->service_tier);
    case F_EPOCH:
        return parse_quantity(d, field, 0, &ev->epoch);
    }
    return fail(d, d->p, field, "internal error: unhandled field");
}

static const char *type_data_name(unsigned type)
{
    return type == GM_EVENT_USAGE ? "gridmeter.usage.v1" : "gridmeter.gpu.v1";
}

/* The `data` object; d->p is at its first byte. */
static int parse_data(dec *d)
{
    if (d->p >= d->end || *d->p != '{') {
        char got[SHOW_MAX * 4 + 8];
        describe(d, d->p, got, sizeof got);
        return fail(d, d->p, "data", "must be a JSON object, got %s", got);
    }
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 0;
    }
    for (;;) {
        char key[KEY_CAP + 1], field[64];
        size_t kn = 0;
        const char *at = d->p;
        int rc = parse_key(d, key, &kn);
        if (rc)
            return rc;
        int f = kn <= KEY_CAP ? data_field(key, kn) : -1;
        unsigned type = d->ev->type;
        if (f < 0 || (type && !(dfields[f].types & (1u << type)))) {
            field_path(field, sizeof field, "data.", key, kn < KEY_CAP ? kn : KEY_CAP);
            if (type)
                return fail(d, at, field,
                            "is not a field of %s data (unknown fields are "
                            "refused)",
                            type_data_name(type));
            return fail(d, at, field,
                        "is not a field of gridmeter.usage.v1 or "
                        "gridmeter.gpu.v1 data (unknown fields are refused)");
        }
        if (d->dseen & (1u << f))
            return fail(d, at, dfields[f].path, "duplicate key");
        d->dseen |= 1u << f;
        if ((rc = parse_data_value(d, f, dfields[f].path)))
            return rc;
        if ((rc = member_end(d)) < 0)
            return rc;
        if (rc == 1)
            return 0;
    }
}

static int top_key(const char *k, size_t n)
{
#define IS(lit) (n == sizeof(lit) - 1 && !memcmp(k, lit, n))
    switch (n) {
    case 2:
        return IS("id") ? K_ID : K_OTHER;
    case 4:
        return IS("type") ? K_TYPE : IS("time") ? K_TIME : IS("data") ? K_DATA : K_OTHER;
    case 6:
        return IS("source") ? K_SOURCE : K_OTHER;
    case 7:
        return IS("subject") ? K_SUBJECT : K_OTHER;
    case 10:
        return IS("dataschema") ? K_DATASCHEMA : K_OTHER;
    case 11:
        return IS("specversion") ? K_SPECVERSION : IS("data_base64") ? K_DATA_BASE64 : K_OTHER;
    case 15:
        return IS("datacontenttype") ? K_DATACONTENTTYPE : K_OTHER;
    }
    return K_OTHER;
#undef IS
}

/* An unknown top-level member: a CloudEvents extension attribute with a scalar value. */
static int parse_extension(dec *d, const char *at, const char *key, size_t kn)
{
    char field[64];
    field_path(field, sizeof field, "", key, kn < KEY_CAP ? kn : KEY_CAP);
    bool name_ok = kn >= 1 && kn <= EXT_NAME_MAX;
    for (size_t i = 0; name_ok && i < kn; i++)
        name_ok = event__class[(unsigned char)key[i]] & EVENT__C_ATTR;
    if (!name_ok)
        return fail(d, at, field,
                    "is not a known attribute, and not a CloudEvents extension attribute name "
                    "(1 to %d characters a-z 0-9)",
                    EXT_NAME_MAX);
    for (int i = 0; i < d->n_ext; i++)
        if (!strcmp(d->ext[i], key))
            return fail(d, at, field, "duplicate key");
    if (d->n_ext == EXT_MAX)
        return fail(d, at, field, "more than %d extension attributes", EXT_MAX);
    memcpy(d->ext[d->n_ext++], key, kn + 1); /* kn <= EXT_NAME_MAX, key is NUL-free here */
    size_t n = 0;
    switch (d->p < d->end ? *d->p : 0) {
    case '"':
        return scan_string(d, NULL, 0, &n);
    case 't':
        return scan_literal(d, "true", 4);
    case 'f':
        return scan_literal(d, "false", 5);
    case 'n':
        return scan_literal(d, "null", 4);
    case '{':
    case '[': {
        char got[16];
        describe(d, d->p, got, sizeof got);
        return fail(d, d->p, field,
                    "extension attribute must be a string, number, boolean or null, got %s", got);
    }
    default:
        return scan_number(d);
    }
}

static int parse_event(dec *d)
{
    gm_event *ev = d->ev;
    if (d->end - d->msg > GM_EVENT_MAX_BYTES)
        return fail(d, d->msg, "message", "must be at most %d bytes, got %zu", GM_EVENT_MAX_BYTES,
                    (size_t)(d->end - d->msg));
    size_t bad = utf8_invalid_at((const unsigned char *)d->msg, (size_t)(d->end - d->msg));
    if (bad != (size_t)(d->end - d->msg))
        return fail(d, d->msg + bad, "message", "invalid UTF-8 at byte offset %zu (0x%02X)", bad,
                    (unsigned char)d->msg[bad]);
    skip_ws(d);
    if (d->p >= d->end)
        return fail(d, d->p, "message", "is empty");
    if (*d->p != '{') {
        char got[SHOW_MAX * 4 + 8];
        describe(d, d->p, got, sizeof got);
        return fail(d, d->p, "message", "must be a JSON object, got %s", got);
    }
    d->p++;
    skip_ws(d);
    int rc = 0, which;
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        goto done;
    }
    for (;;) {
        char key[KEY_CAP + 1];
        size_t kn = 0;
        const char *at = d->p;
        if ((rc = parse_key(d, key, &kn)))
            return rc;
        int k = kn <= KEY_CAP ? top_key(key, kn) : K_OTHER;
        if (k != K_OTHER) {
            if (d->seen & (1u << k))
                return fail(d, at, key, "duplicate key");
            d->seen |= 1u << k;
        }
        switch (k) {
        case K_SPECVERSION:
            rc = parse_const(d, "specversion", "1.0", NULL, &which);
            break;
        case K_TYPE:
            rc = parse_const(d, "type", "gridmeter.usage.v1", "gridmeter.gpu.v1", &which);
            if (!rc)
                ev->type = which == 0 ? GM_EVENT_USAGE : GM_EVENT_GPU;
            break;
        case K_SOURCE:
            rc = parse_ident(d, "source", ev->source, GM_IDENT_SOURCE, false);
            break;
        case K_ID:
            rc = parse_ident(d, "id", ev->id, GM_IDENT_EVENT_ID, false);
            break;
        case K_TIME:
            rc = parse_time(d, "time", &ev->time_us);
            break;
        case K_SUBJECT:
            rc = parse_ident(d, "subject", ev->tenant, GM_IDENT_TENANT, false);
            break;
        case K_DATACONTENTTYPE:
            rc = parse_const(d, "datacontenttype", "application/json", NULL, &which);
            break;
        case K_DATASCHEMA: {
            size_t n = 0;
            const char *vat = d->p;
            char one[1];
            rc = parse_string_into(d, "dataschema", one, 0, &n);
            if (!rc && n == 0)
                rc = fail(d, vat, "dataschema", "must not be empty");
            break;
        }
        case K_DATA:
            rc = parse_data(d);
            break;
        case K_DATA_BASE64:
            rc = fail(d, at, "data_base64",
                      "is not accepted: the event's data must be a JSON object in \"data\"");
            break;
        default:
            rc = parse_extension(d, at, key, kn);
            break;
        }
        if (rc)
            return rc;
        if ((rc = member_end(d)) < 0)
            return rc;
        if (rc == 1)
            break;
    }
done:
    skip_ws(d);
    if (d->p != d->end)
        return syntax(d, d->p, "unexpected text after the JSON object");
    static const char *const top_names[] = {[K_SPECVERSION] = "specversion",
                                            [K_TYPE] = "type",
                                            [K_SOURCE] = "source",
                                            [K_ID] = "id",
                                            [K_TIME] = "time",
                                            [K_SUBJECT] = "subject",
                                            [K_DATA] = "data"};
    if ((d->seen & K_REQUIRED) != K_REQUIRED) {
        for (int k = 0; k <= K_DATA; k++)
            if ((K_REQUIRED & (1u << k)) && !(d->seen & (1u << k)))
                return fail(d, d->end, top_names[k], "is required");
    }
    unsigned tbit = 1u << ev->type;
    for (int f = 0; f < F_COUNT; f++) {
        const char *field = dfields[f].path;
        bool carried = dfields[f].types & tbit, seen = d->dseen & (1u << f);
        if (seen && !carried)
            return fail(d, d->end, field, "is not a field of %s data (unknown fields are refused)",
                        type_data_name(ev->type));
        if (!seen && carried && !dfields[f].optional)
            return fail(d, d->end, field, "is required");
    }
    if (ev->type == GM_EVENT_GPU && ev->window_end_us <= ev->window_start_us)
        return fail(d, d->end, "data.window_end", "must be later than data.window_start");
    if (ev->type == GM_EVENT_USAGE && ev->reasoning_tokens > ev->output_tokens)
        return fail(d, d->end, EVENT__PART_FIELD, EVENT__PART_RULE_ONLY, ev->reasoning_tokens,
                    ev->output_tokens);
    return 0;
}

/* After a failure: the event's source and id, read leniently from the top level, so that
 * the reason can name the event. Skips nested values by counting brackets (no recursion). */
static void recover_ids(const char *msg, size_t len, gm_event_error *e)
{
    gm_event_error scratch;
    dec r = {.msg = msg, .p = msg, .end = msg + len, .e = &scratch};
    char key[KEY_CAP + 1], val[GM_EVENT_SOURCE_MAX + 1];
    size_t kn = 0, vn = 0;
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{')
        return;
    r.p++;
    skip_ws(&r);
    while (r.p < r.end && *r.p == '"') {
        if (parse_key(&r, key, &kn))
            return;
        if (r.p < r.end && *r.p == '"') {
            if (scan_string(&r, val, sizeof val - 1, &vn))
                return;
            bool is_src = kn == 6 && !memcmp(key, "source", 6),
                 is_id = kn == 2 && !memcmp(key, "id", 2);
            if ((is_src || is_id) && vn <= GM_EVENT_SOURCE_MAX) {
                val[vn] = '\0';
                char *dst = is_src ? e->source : e->id;
                if (!dst[0] && !event__ident_check(val, vn, GM_IDENT_EVENT_ID, false, NULL, 0))
                    memcpy(dst, val, vn + 1);
            }
        } else {
            int depth = 0;
            while (r.p < r.end) {
                char c = *r.p;
                if (c == '"') {
                    if (scan_string(&r, NULL, 0, &vn))
                        return;
                    continue;
                }
                if (depth == 0 && (c == ',' || c == '}'))
                    break;
                if (c == '{' || c == '[')
                    depth++;
                else if (c == '}' || c == ']')
                    depth--;
                r.p++;
            }
        }
        skip_ws(&r);
        if (r.p >= r.end || *r.p != ',')
            return;
        r.p++;
        skip_ws(&r);
    }
}

int gm_event_decode_ex(const char *msg, size_t len, gm_event *out, gm_event_error *e)
{
    gm_event_error scratch;
    dec d;
    if (!msg) /* no message at all: refused as empty, without arithmetic on NULL */
        msg = "", len = 0;
    d.msg = d.p = msg;
    d.end = msg + len;
    d.ev = out;
    d.e = e ? e : &scratch;
    d.seen = d.dseen = 0;
    d.n_ext = 0;
    out->type = 0;
    out->source[0] = out->id[0] = out->tenant[0] = out->site[0] = '\0';
    out->model[0] = out->request_id[0] = out->device[0] = out->policy[0] = '\0';
    out->time_us = 0;
    out->seq = 0;
    out->input_tokens = out->cached_tokens = out->output_tokens = out->gpu_us = 0;
    out->window_start_us = out->window_end_us = out->kernels = out->unattributed_us = 0;
    out->reasoning_tokens = out->cache_write_tokens = out->epoch = 0;
    out->service_tier = GM_SERVICE_TIER_STANDARD;
    int rc = parse_event(&d);
    if (rc && e) {
        e->source[0] = e->id[0] = '\0';
        recover_ids(msg, len, e);
    }
    return rc;
}

int gm_event_decode(const char *msg, size_t len, gm_event *out, char *err, size_t err_len)
{
    gm_event_error e;
    int rc = gm_event_decode_ex(msg, len, out, &e);
    if (rc && err && err_len)
        gm_event_error_format(&e, err, err_len);
    return rc;
}
