/* The HTTP edge's rules over bytes (see api_edge.h): request heads (strict RFC 9112
 * grammar), framing (RFC 9112 §6.3), request targets decoded into validated path segments and
 * query parameters, problem documents (RFC 9457) that are always valid JSON and UTF-8, and the
 * invariant checks E1-E4 that tests and the fuzz target call. No I/O here. */
#include "api_edge.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int refuse(api_refusal *why, int status, const char *slug, const char *field,
                  const char *fmt, ...) GM_PRINTF(5, 6);
static int refuse(api_refusal *why, int status, const char *slug, const char *field,
                  const char *fmt, ...)
{
    why->status = status;
    why->slug = slug;
    snprintf(why->field, sizeof why->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->detail, sizeof why->detail, fmt, ap);
    va_end(ap);
    return GM_EINVAL;
}

void api__printable(const char *s, size_t n, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < out_len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    if (out_len)
        out[o] = 0;
}

/* ---- Characters ---------------------------------------------------------------------------
 * Two 256-entry tables: a header or method token character (RFC 9110 tchar), and a character
 * allowed unencoded in an origin-form target (RFC 3986 pchar, '/', '?'). */
#define ALNUM_RANGES                                                                               \
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,        \
    ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,        \
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,        \
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1,        \
    ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,        \
    ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,        \
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,        \
    ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1

static const unsigned char tchar_tab[256] = {
    ALNUM_RANGES, ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1,    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1};

static const unsigned char target_tab[256] = {
    ALNUM_RANGES, ['-'] = 1,  ['.'] = 1, ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1,
    ['&'] = 1,    ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1, [','] = 1,
    [';'] = 1,    ['='] = 1,  [':'] = 1, ['@'] = 1, ['/'] = 1, ['?'] = 1, ['%'] = 1};

static bool is_tchar(unsigned char c)
{
    return tchar_tab[c];
}

static bool is_target_char(unsigned char c)
{
    return target_tab[c];
}

static int hexval(unsigned char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decodes one UTF-8 sequence at p (n bytes left): the code point, or -1 when invalid. */
static long utf8_next(const unsigned char *p, size_t n, size_t *used)
{
    unsigned c = p[0];
    int more;
    unsigned min;
    if (c < 0x80) {
        *used = 1;
        return c;
    }
    if ((c & 0xE0) == 0xC0)
        more = 1, min = 0x80, c &= 0x1F;
    else if ((c & 0xF0) == 0xE0)
        more = 2, min = 0x800, c &= 0x0F;
    else if ((c & 0xF8) == 0xF0)
        more = 3, min = 0x10000, c &= 0x07;
    else
        return -1;
    if (n < (size_t)more + 1)
        return -1;
    for (int i = 1; i <= more; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return -1;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return -1;
    *used = (size_t)more + 1;
    return (long)c;
}

bool api__utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t used;
        if (utf8_next(p + i, n - i, &used) < 0)
            return false;
        i += used;
    }
    return true;
}

/* Checks decoded text: 0, or what is wrong in `what` (a control byte, invalid UTF-8). */
static int text_problem(const char *s, size_t n, char *what, size_t what_len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t used;
        long cp = utf8_next(p + i, n - i, &used);
        if (cp < 0) {
            snprintf(what, what_len, "not valid UTF-8 after decoding (byte 0x%02X)", p[i]);
            return -1;
        }
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) {
            snprintf(what, what_len, "control character U+%04lX after decoding", cp);
            return -1;
        }
        i += used;
    }
    return 0;
}

/* Percent-decodes raw[0..n) into out (plus: '+' is a space); returns the decoded length, or
 * -1 when a '%' is not followed by two hex digits. */
static long pct_decode(const char *raw, size_t n, bool plus, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '%') {
            if (i + 2 >= n || hexval((unsigned char)raw[i + 1]) < 0 ||
                hexval((unsigned char)raw[i + 2]) < 0)
                return -1;
            out[o++] =
                (char)(hexval((unsigned char)raw[i + 1]) * 16 + hexval((unsigned char)raw[i + 2]));
            i += 2;
        } else {
            out[o++] = plus && c == '+' ? ' ' : (char)c;
        }
    }
    out[o] = 0;
    return (long)o;
}

/* ---- Targets ------------------------------------------------------------------------------*/
int api__target_parse(const char *raw, size_t len, api_target *t, api_refusal *why)
{
    memset(t, 0, offsetof(api_target, store));
    t->store[0] = 0;
    if (len == 0)
        return refuse(why, 400, "invalid-target", "request-target", "request-target: empty");
    if (len > API_TARGET_MAX)
        return refuse(why, 414, "uri-too-long", "request-target",
                      "request-target: %zu bytes, at most %d", len, API_TARGET_MAX);
    if (raw[0] != '/')
        return refuse(why, 400, "invalid-target", "request-target",
                      "request-target: must be a path starting with / (origin-form; absolute "
                      "and asterisk forms are not accepted)");
    for (size_t i = 0; i < len; i++)
        if (!is_target_char((unsigned char)raw[i]))
            return refuse(why, 400, "invalid-target", "request-target",
                          "request-target: byte 0x%02X at offset %zu must be percent-encoded",
                          (unsigned char)raw[i], i);
    const char *q = memchr(raw, '?', len);
    size_t plen = q ? (size_t)(q - raw) : len;
    t->path_len = plen;
    char *o = t->store;
    char what[96];
    /* path segments: raw[1..plen) split on '/' */
    for (size_t i = 1;;) {
        const char *e = memchr(raw + i, '/', plen - i);
        size_t sl = e ? (size_t)(e - (raw + i)) : plen - i;
        if (t->n_seg == API_SEGMENTS_MAX)
            return refuse(why, 400, "invalid-path", "path", "path: more than %d segments",
                          API_SEGMENTS_MAX);
        long dl = pct_decode(raw + i, sl, false, o);
        size_t k = t->n_seg + 1;
        if (dl < 0)
            return refuse(why, 400, "invalid-path", "path",
                          "path segment %zu: malformed percent-encoding (%% and two hex digits)",
                          k);
        if ((size_t)dl > API_SEGMENT_MAX)
            return refuse(why, 400, "invalid-path", "path",
                          "path segment %zu: %ld bytes after decoding, at most %d", k, dl,
                          API_SEGMENT_MAX);
        if (memchr(o, '/', (size_t)dl))
            return refuse(why, 400, "invalid-path", "path",
                          "path segment %zu: an encoded '/' (%%2F) is not allowed", k);
        if (text_problem(o, (size_t)dl, what, sizeof what))
            return refuse(why, 400, "invalid-path", "path", "path segment %zu: %s", k, what);
        if (!strcmp(o, ".") || !strcmp(o, ".."))
            return refuse(why, 400, "invalid-path", "path",
                          "path segment %zu: dot segments (. and ..) are not allowed", k);
        t->seg[t->n_seg++] = o;
        o += dl + 1;
        if (!e)
            break;
        i += sl + 1;
    }
    if (!q)
        return 0;
    /* query: name=value pairs separated by '&' */
    const char *qs = q + 1, *qe = raw + len;
    if (qs == qe)
        return 0; /* "?" alone: no parameters */
    for (const char *p = qs;;) {
        const char *amp = memchr(p, '&', (size_t)(qe - p));
        const char *pe = amp ? amp : qe;
        if (pe == p)
            return refuse(why, 400, "invalid-parameter", "query",
                          "query: an empty parameter (\"&&\", a leading or a trailing \"&\")");
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        char shown[API_PARAM_NAME_MAX + 1];
        if (!eq) {
            api__printable(p, (size_t)(pe - p) < 64 ? (size_t)(pe - p) : 64, shown, sizeof shown);
            return refuse(why, 400, "invalid-parameter", shown,
                          "query: parameter \"%s\" has no value (write name=value)", shown);
        }
        if (eq == p)
            return refuse(why, 400, "invalid-parameter", "query",
                          "query: a parameter without a name (\"=value\")");
        if (t->n_param == API_PARAMS_MAX)
            return refuse(why, 400, "invalid-parameter", "query", "query: more than %d parameters",
                          API_PARAMS_MAX);
        long nl = pct_decode(p, (size_t)(eq - p), true, o);
        api__printable(p, (size_t)(eq - p) < 64 ? (size_t)(eq - p) : 64, shown, sizeof shown);
        if (nl < 0)
            return refuse(why, 400, "invalid-parameter", shown,
                          "query parameter name \"%s\": malformed percent-encoding", shown);
        if (nl > API_PARAM_NAME_MAX)
            return refuse(why, 400, "invalid-parameter", shown,
                          "query parameter name \"%s\": more than %d bytes", shown,
                          API_PARAM_NAME_MAX);
        if (text_problem(o, (size_t)nl, what, sizeof what))
            return refuse(why, 400, "invalid-parameter", shown, "query parameter name \"%s\": %s",
                          shown, what);
        const char *name = o;
        o += nl + 1;
        api__printable(name, (size_t)nl, shown, sizeof shown);
        long vl = pct_decode(eq + 1, (size_t)(pe - eq - 1), true, o);
        if (vl < 0)
            return refuse(why, 400, "invalid-parameter", shown,
                          "%s: malformed percent-encoding (%% and two hex digits)", shown);
        if (vl > API_PARAM_VALUE_MAX)
            return refuse(why, 400, "invalid-parameter", shown,
                          "%s: %ld bytes after decoding, at most %d", shown, vl,
                          API_PARAM_VALUE_MAX);
        if (text_problem(o, (size_t)vl, what, sizeof what))
            return refuse(why, 400, "invalid-parameter", shown, "%s: %s", shown, what);
        t->pname[t->n_param] = name;
        t->pvalue[t->n_param++] = o;
        o += vl + 1;
        if (!amp)
            break;
        p = amp + 1;
    }
    return 0;
}

void api__instance_of(const char *raw, size_t len, char *out, size_t out_len)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    if (out_len > API_INSTANCE_MAX + 1)
        out_len = API_INSTANCE_MAX + 1;
    for (size_t i = 0; i < len && raw[i] != '?' && raw[i] != '#'; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '%' && i + 2 < len && hexval((unsigned char)raw[i + 1]) >= 0 &&
            hexval((unsigned char)raw[i + 2]) >= 0) {
            if (o + 4 > out_len)
                break;
            memcpy(out + o, raw + i, 3); /* an escape stays as it came */
            o += 3;
            i += 2;
        } else if (c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '%') {
            if (o + 2 > out_len)
                break;
            out[o++] = (char)c;
        } else {
            if (o + 4 > out_len)
                break;
            out[o++] = '%';
            out[o++] = hx[c >> 4];
            out[o++] = hx[c & 15];
        }
    }
    if (out_len)
        out[o] = 0;
}

/* ---- Heads --------------------------------------------------------------------------------*/
static bool name_is(const api_field *f, const char *name)
{
    return f->name_len == strlen(name) && !strncasecmp(f->name, name, f->name_len);
}

static bool value_is(const api_field *f, const char *v)
{
    return f->value_len == strlen(v) && !strncasecmp(f->value, v, f->value_len);
}

int api__framing_decide(const api_field *f, size_t n, int64_t max_body, api_framing *out,
                        api_refusal *why)
{
    static const char *const once[] = {"Host",          "Content-Length",  "Transfer-Encoding",
                                       "Authorization", "Idempotency-Key", "Content-Type",
                                       "Expect"};
    memset(out, 0, sizeof *out);
    const api_field *cl = NULL, *te = NULL, *expect = NULL;
    for (size_t k = 0; k < GM_ARRAY_LEN(once); k++) {
        const api_field *first = NULL;
        for (size_t i = 0; i < n; i++) {
            if (!name_is(&f[i], once[k]))
                continue;
            if (first)
                return refuse(why, 400, "duplicate-header", once[k],
                              "%s: given more than once (which one counts would be ambiguous; "
                              "RFC 9112 §6.3, RFC 9110 §5.3)",
                              once[k]);
            first = &f[i];
        }
        if (k == 1)
            cl = first;
        else if (k == 2)
            te = first;
        else if (k == 6)
            expect = first;
    }
    if (te && cl)
        return refuse(why, 400, "ambiguous-framing", "Transfer-Encoding",
                      "Transfer-Encoding and Content-Length together: the body's end would be "
                      "ambiguous (RFC 9112 §6.3, a request smuggling precondition)");
    if (te && value_is(te, "chunked"))
        return refuse(why, 411, "length-required", "Transfer-Encoding",
                      "Transfer-Encoding: chunked request bodies are not accepted; send the body "
                      "with a Content-Length");
    if (te) {
        char v[64];
        api__printable(te->value, te->value_len < 48 ? te->value_len : 48, v, sizeof v);
        return refuse(why, 501, "not-implemented", "Transfer-Encoding",
                      "Transfer-Encoding: \"%s\" is not implemented; send the body with a "
                      "Content-Length",
                      v);
    }
    if (cl) {
        uint64_t v = 0;
        bool digits = cl->value_len >= 1 && cl->value_len <= 19;
        for (size_t i = 0; digits && i < cl->value_len; i++) {
            if (cl->value[i] < '0' || cl->value[i] > '9')
                digits = false;
            else
                v = v * 10 + (uint64_t)(cl->value[i] - '0');
        }
        if (!digits) {
            char s[48];
            api__printable(cl->value, cl->value_len < 32 ? cl->value_len : 32, s, sizeof s);
            return refuse(why, 400, "invalid-header", "Content-Length",
                          "Content-Length: \"%s\" is not 1 to 19 decimal digits", s);
        }
        if (v > (uint64_t)max_body)
            return refuse(why, 413, "body-too-large", "Content-Length",
                          "Content-Length: %llu bytes, the body limit is %lld bytes",
                          (unsigned long long)v, (long long)max_body);
        out->has_length = true;
        out->length = v;
    }
    if (expect) {
        if (!value_is(expect, "100-continue"))
            return refuse(why, 417, "expectation-failed", "Expect",
                          "Expect: only 100-continue is supported");
        out->expect_continue = true;
    }
    return 0;
}

/* Bytes of a request line so far: visible ASCII and SP only. */
static int line_bytes(const char *l, size_t n, api_refusal *why)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c < 0x20 || c > 0x7e)
            return refuse(why, 400, "invalid-request-line", "request line",
                          "request line: byte 0x%02X at offset %zu is not allowed (only visible "
                          "ASCII and single spaces)",
                          c, i);
    }
    return 0;
}

/* Bytes of a header field line so far: HTAB, SP, visible ASCII, obs-text. */
static int field_bytes(const char *l, size_t n, api_refusal *why)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)l[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            char name[48] = "";
            const char *colon = memchr(l, ':', i);
            if (colon)
                api__printable(l, (size_t)(colon - l) < 40 ? (size_t)(colon - l) : 40, name,
                               sizeof name);
            return refuse(why, 400, "invalid-header", name[0] ? name : "header field",
                          "header field %s: control byte 0x%02X is not allowed",
                          name[0] ? name : "(unnamed)", c);
        }
    }
    return 0;
}

static int request_line(const char *l, size_t n, api_head *h, api_refusal *why)
{
    if (n == 0)
        return refuse(why, 400, "invalid-request-line", "request line",
                      "request line: empty (no blank line may come before the request)");
    int rc = line_bytes(l, n, why);
    if (rc)
        return rc;
    const char *sp1 = memchr(l, ' ', n);
    if (!sp1)
        return refuse(why, 400, "invalid-request-line", "request line",
                      "request line: must be method SP request-target SP HTTP-version");
    size_t ml = (size_t)(sp1 - l);
    const char *rest = sp1 + 1, *end = l + n;
    const char *sp2 = memchr(rest, ' ', (size_t)(end - rest));
    if (!sp2)
        return refuse(why, 400, "invalid-request-line", "HTTP-version",
                      "request line: no HTTP-version (HTTP/0.9 is not supported: send "
                      "HTTP/1.1)");
    const char *ver = sp2 + 1;
    size_t vl = (size_t)(end - ver);
    if (ml == 0 || sp2 == rest || memchr(ver, ' ', vl))
        return refuse(why, 400, "invalid-request-line", "request line",
                      "request line: exactly one space between method, request-target and "
                      "HTTP-version");
    char vs[24];
    api__printable(ver, vl < 16 ? vl : 16, vs, sizeof vs);
    if (vl != 8 || memcmp(ver, "HTTP/", 5) || ver[6] != '.' || ver[5] < '0' || ver[5] > '9' ||
        ver[7] < '0' || ver[7] > '9')
        return refuse(why, 400, "invalid-request-line", "HTTP-version",
                      "HTTP-version: \"%s\" is malformed (HTTP/1.1 or HTTP/1.0)", vs);
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        return refuse(why, 505, "http-version-not-supported", "HTTP-version",
                      "HTTP-version: %s is not supported (HTTP/1.1 and HTTP/1.0 are)", vs);
    h->version_minor = ver[7] - '0';
    if (ml > 16)
        return refuse(why, 400, "invalid-request-line", "method",
                      "method: more than 16 characters");
    for (size_t i = 0; i < ml; i++)
        if (!is_tchar((unsigned char)l[i]))
            return refuse(why, 400, "invalid-request-line", "method",
                          "method: byte 0x%02X is not a token character", (unsigned char)l[i]);
    memcpy(h->method, l, ml);
    h->method[ml] = 0;
    h->target = rest;
    h->target_len = (size_t)(sp2 - rest);
    api_target t; /* about 8 KiB of stack */
    return api__target_parse(h->target, h->target_len, &t, why);
}

static int field_line(const char *l, size_t n, api_head *h, api_refusal *why)
{
    if (l[0] == ' ' || l[0] == '\t')
        return refuse(why, 400, "invalid-header", "header field",
                      "header field: a line starting with whitespace (obsolete line folding) is "
                      "not accepted");
    const char *colon = memchr(l, ':', n);
    if (!colon) {
        char s[48];
        api__printable(l, n < 40 ? n : 40, s, sizeof s);
        return refuse(why, 400, "invalid-header", "header field",
                      "header field: no colon in \"%s\"", s);
    }
    size_t nl = (size_t)(colon - l);
    char name[48];
    api__printable(l, nl < 40 ? nl : 40, name, sizeof name);
    if (nl == 0)
        return refuse(why, 400, "invalid-header", "header field", "header field: empty field name");
    for (size_t i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c == ' ' || c == '\t')
            return refuse(why, 400, "invalid-header", name,
                          "header field %s: whitespace before the colon (RFC 9112 §5.1)", name);
        if (!is_tchar(c))
            return refuse(why, 400, "invalid-header", name,
                          "header field name: byte 0x%02X is not a token character", c);
    }
    const char *v = colon + 1, *ve = l + n;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    if (h->n_fields == API_FIELDS_MAX)
        return refuse(why, 431, "header-fields-too-large", "header fields",
                      "header fields: more than %d", API_FIELDS_MAX);
    h->fields[h->n_fields++] = (api_field){l, nl, v, (size_t)(ve - v)};
    return 0;
}

int api__head_parse(const char *buf, size_t len, int64_t max_body, api_head *h, api_refusal *why)
{
    memset(h, 0, sizeof *h);
    size_t avail = len < API_HEAD_MAX ? len : API_HEAD_MAX;
    size_t scan = avail < API_LINE_MAX + 2 ? avail : API_LINE_MAX + 2;
    const char *lf = memchr(buf, '\n', scan);
    int rc;
    if (!lf) {
        size_t part = scan && buf[scan - 1] == '\r' ? scan - 1 : scan;
        if ((rc = line_bytes(buf, part, why)))
            return rc;
        if (scan > API_LINE_MAX + 1)
            return refuse(why, 414, "uri-too-long", "request line",
                          "request line: more than %d bytes", API_LINE_MAX);
        return 1;
    }
    size_t ll = (size_t)(lf - buf);
    if (ll == 0 || buf[ll - 1] != '\r')
        return refuse(why, 400, "invalid-request-line", "request line",
                      ll == 0 ? "request line: empty (no blank line may come before the request)"
                              : "request line: must end with CRLF (a bare LF is not accepted)");
    if (ll - 1 > API_LINE_MAX)
        return refuse(why, 414, "uri-too-long", "request line", "request line: more than %d bytes",
                      API_LINE_MAX);
    if ((rc = request_line(buf, ll - 1, h, why)))
        return rc;
    size_t pos = ll + 1;
    for (;;) {
        const char *line = buf + pos;
        const char *e = memchr(line, '\n', avail - pos);
        if (!e) {
            size_t part = avail - pos;
            if (part && line[part - 1] == '\r')
                part--;
            if ((rc = field_bytes(line, part, why)))
                return rc;
            if (len >= API_HEAD_MAX)
                return refuse(why, 431, "header-fields-too-large", "header fields",
                              "request head (request line and header fields): more than %d "
                              "bytes",
                              API_HEAD_MAX);
            return 1;
        }
        size_t l = (size_t)(e - line);
        if (l == 0 || line[l - 1] != '\r')
            return refuse(why, 400, "invalid-header", "header field",
                          "header field: lines must end with CRLF (a bare LF is not accepted)");
        l--;
        if (l == 0) {
            h->head_len = pos + 2;
            break;
        }
        if ((rc = field_bytes(line, l, why)) || (rc = field_line(line, l, h, why)))
            return rc;
        pos += l + 2;
    }
    size_t hosts = 0;
    for (size_t i = 0; i < h->n_fields; i++)
        hosts += name_is(&h->fields[i], "Host");
    if (h->version_minor == 1 && hosts == 0)
        return refuse(why, 400, "invalid-header", "Host",
                      "Host: required in HTTP/1.1 (RFC 9112 §3.2)");
    return api__framing_decide(h->fields, h->n_fields, max_body, &h->framing, why);
}

/* ---- Problem documents --------------------------------------------------------------------*/
const char *api__status_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status >= 500 ? "Internal Server Error" : "Error";
    }
}

/* s as valid UTF-8 without control characters: invalid bytes become U+FFFD, controls '?'. */
static char *clean_text(const char *s)
{
    size_t n = strlen(s);
    char *out = gm_xmalloc(3 * n + 1);
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t used;
        long cp = utf8_next(p + i, n - i, &used);
        if (cp < 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) {
            out[o++] = '?';
            i += used;
        } else {
            memcpy(out + o, p + i, used);
            o += used;
            i += used;
        }
    }
    out[o] = 0;
    return out;
}

char *api__problem_render(int status, const char *slug, const char *field, const char *detail,
                          const char *instance, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    char type[160];
    snprintf(type, sizeof type, "https://gridmeter.dev/problems/%s", slug ? slug : "error");
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "title", api__status_title(status));
    cJSON_AddNumberToObject(o, "status", status);
    char *d = clean_text(detail ? detail : "");
    cJSON_AddStringToObject(o, "detail", d);
    free(d);
    if (instance) {
        char inst[API_INSTANCE_MAX + 1];
        api__instance_of(instance, strlen(instance), inst, sizeof inst);
        cJSON_AddStringToObject(o, "instance", inst);
    }
    if (field) {
        char *f = clean_text(field);
        cJSON_AddStringToObject(o, "field", f);
        free(f);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) {
        s = gm_xstrdup("{\"type\":\"https://gridmeter.dev/problems/internal\",\"title\":"
                       "\"Internal Server Error\",\"status\":500,\"detail\":\"out of memory\"}");
    }
    *len = strlen(s);
    return s;
}

/* ---- Invariant checks ---------------------------------------------------------------------*/
static bool clean(const char *s)
{
    size_t n = strlen(s);
    if (!api__utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

const char *api__edge_check_refusal(const api_refusal *why)
{
    if (why->status < 400 || why->status > 599)
        return "E1: status outside 400..599";
    if (!why->slug || !why->slug[0])
        return "E1: no slug";
    if (!why->detail[0])
        return "E1: no detail";
    if (!clean(why->detail) || !clean(why->field))
        return "E1: detail or field not clean UTF-8";
    return NULL;
}

const char *api__edge_check_target(const api_target *t)
{
    char what[96];
    if (t->n_seg < 1 || t->n_seg > API_SEGMENTS_MAX || t->n_param > API_PARAMS_MAX)
        return "E2: segment or parameter count";
    for (size_t i = 0; i < t->n_seg; i++) {
        size_t n = strlen(t->seg[i]);
        if (n > API_SEGMENT_MAX || text_problem(t->seg[i], n, what, sizeof what) ||
            strchr(t->seg[i], '/') || !strcmp(t->seg[i], ".") || !strcmp(t->seg[i], ".."))
            return "E2: a segment breaks a rule";
    }
    for (size_t i = 0; i < t->n_param; i++) {
        size_t nl = strlen(t->pname[i]), vl = strlen(t->pvalue[i]);
        if (!nl || nl > API_PARAM_NAME_MAX || vl > API_PARAM_VALUE_MAX ||
            text_problem(t->pname[i], nl, what, sizeof what) ||
            text_problem(t->pvalue[i], vl, what, sizeof what))
            return "E2: a parameter breaks a rule";
    }
    return NULL;
}

const char *api__edge_check_head(const api_head *h, int64_t max_body)
{
    size_t cls = 0;
    for (size_t i = 0; i < h->n_fields; i++) {
        if (name_is(&h->fields[i], "Transfer-Encoding"))
            return "E3: Transfer-Encoding accepted";
        cls += name_is(&h->fields[i], "Content-Length");
    }
    if (cls > 1 || (cls == 1) != h->framing.has_length)
        return "E3: Content-Length count";
    if (h->framing.length > (uint64_t)max_body)
        return "E3: body over the limit";
    if (!h->method[0] || !h->target_len || h->target[0] != '/')
        return "E3: request line";
    return NULL;
}

const char *api__edge_check_problem(const char *doc, size_t len, int want)
{
    if (strlen(doc) != len || !api__utf8_valid(doc, len))
        return "E4: not UTF-8 text";
    cJSON *j = cJSON_ParseWithLength(doc, len);
    if (!j)
        return "E4: not JSON";
    const char *bad = NULL;
    cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    cJSON *inst = cJSON_GetObjectItemCaseSensitive(j, "instance");
    if (!cJSON_IsNumber(st) || st->valueint != want)
        bad = "E4: status";
    else if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "type")) ||
             !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "title")) ||
             !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "detail")))
        bad = "E4: type, title or detail";
    else if (inst) {
        if (!cJSON_IsString(inst))
            bad = "E4: instance not a string";
        else
            for (const char *c = inst->valuestring; *c && !bad; c++)
                if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
                    bad = "E4: instance not printable ASCII";
    }
    cJSON_Delete(j);
    return bad;
}
