/* Fuzz target for the HTTP edge: the request head parser, framing, the target decoder, the
 * router and cursors (api/edge.c, api/routes.c, api/cursor.c; libFuzzer entry point, also
 * replayed by replay_main.c under any compiler). Each input is tried as a request head, as
 * a bare request target, and as a cursor.
 *
 * Invariants checked on every input, beyond "no crash, no sanitizer report":
 *   1. E1-E4 of api/api_edge.h: refusals are well formed, accepted targets and heads obey
 *      every rule, problem documents (with the input's target as instance) are valid JSON
 *      and UTF-8;
 *   2. a head that parses is still "incomplete" (1), never refused, when cut short, and its
 *      target parses on its own; framing decided again on its fields gives the same result;
 *   3. an accepted target, re-encoded (every byte outside unreserved percent-encoded),
 *      decodes to the same segments and parameters;
 *   4. the router gives a route only for its method (HEAD: GET), with as many non-empty
 *      parameters as the template has, and an Allow list whenever the path is known;
 *   5. a cursor verifies only with the key that signed it; what it signed comes back. */
#include "api_edge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void die(const char *what, const unsigned char *data, size_t size)
{
    fprintf(stderr, "fuzz_http_request: invariant broken: %s (input %zu bytes: ", what, size);
    for (size_t i = 0; i < size && i < 300; i++)
        fprintf(stderr, data[i] >= 0x20 && data[i] < 0x7f ? "%c" : "\\x%02x", data[i]);
    fprintf(stderr, ")\n");
    abort();
}

static void check_problem(const api_refusal *why, const char *instance, const unsigned char *d,
                          size_t n)
{
    const char *bad = api__edge_check_refusal(why);
    if (bad)
        die(bad, d, n);
    size_t len;
    char *doc = api__problem_render(why->status, why->slug, why->field[0] ? why->field : NULL,
                                    why->detail, instance, &len);
    bad = api__edge_check_problem(doc, len, why->status);
    free(doc);
    if (bad)
        die(bad, d, n);
}

static void encode(const char *s, char *out, size_t *o)
{
    static const char hx[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '~') {
            out[(*o)++] = (char)c;
        } else {
            out[(*o)++] = '%';
            out[(*o)++] = hx[c >> 4];
            out[(*o)++] = hx[c & 15];
        }
    }
}

static void check_target(const api_target *t, const unsigned char *d, size_t n)
{
    const char *bad = api__edge_check_target(t);
    if (bad)
        die(bad, d, n);
    /* 3: re-encoded, the same */
    static char re[3 * sizeof(((api_target *)0)->store) + 64];
    size_t o = 0;
    for (size_t i = 0; i < t->n_seg; i++) {
        re[o++] = '/';
        encode(t->seg[i], re, &o);
    }
    for (size_t i = 0; i < t->n_param; i++) {
        re[o++] = i ? '&' : '?';
        encode(t->pname[i], re, &o);
        re[o++] = '=';
        encode(t->pvalue[i], re, &o);
    }
    re[o] = 0;
    static api_target t2;
    api_refusal why;
    if (o > API_TARGET_MAX)
        return; /* encoding grew it past the limit: nothing to compare */
    if (api__target_parse(re, o, &t2, &why))
        die("re-encoded target refused", d, n);
    if (t2.n_seg != t->n_seg || t2.n_param != t->n_param)
        die("re-encoded target: counts differ", d, n);
    for (size_t i = 0; i < t->n_seg; i++)
        if (strcmp(t2.seg[i], t->seg[i]))
            die("re-encoded target: a segment differs", d, n);
    for (size_t i = 0; i < t->n_param; i++)
        if (strcmp(t2.pname[i], t->pname[i]) || strcmp(t2.pvalue[i], t->pvalue[i]))
            die("re-encoded target: a parameter differs", d, n);
}

static void check_route(const char *method, const api_target *t, const unsigned char *d, size_t n)
{
    api_match m;
    api__route_match(method, t, &m);
    if (m.route >= 0) {
        const gm_api_route_info *ri = &api__routes[m.route].info;
        if (strcmp(ri->method, method) && !(!strcmp(method, "HEAD") && !strcmp(ri->method, "GET")))
            die("a route for another method", d, n);
        int want = 0;
        for (const char *p = ri->pattern; (p = strchr(p, '{')); p++)
            want++;
        if (m.n_param != want)
            die("parameter count differs from the template", d, n);
        for (int i = 0; i < m.n_param; i++)
            if (!m.param[i] || !m.param[i][0])
                die("an empty path parameter", d, n);
    }
    if (m.path_known && !m.allow[0])
        die("a known path without Allow", d, n);
    if (m.route >= 0 && !m.path_known)
        die("a route for an unknown path", d, n);
}

static void as_head(const unsigned char *data, size_t size)
{
    static api_head h, h2;
    static api_target t;
    api_refusal why;
    const int64_t max_body = 1 << 20;
    int rc = api__head_parse((const char *)data, size, max_body, &h, &why);
    if (rc != 0 && rc != 1 && rc != GM_EINVAL)
        die("head parse: unexpected return code", data, size);
    if (rc == GM_EINVAL) {
        char inst[API_TARGET_MAX + 1];
        snprintf(inst, sizeof inst, "%.*s", (int)h.target_len, h.target ? h.target : "");
        check_problem(&why, h.target_len ? inst : NULL, data, size);
        return;
    }
    if (rc == 1)
        return;
    const char *bad = api__edge_check_head(&h, max_body);
    if (bad)
        die(bad, data, size);
    if (h.head_len < 4 || h.head_len > size || memcmp(data + h.head_len - 4, "\r\n\r\n", 4))
        die("head_len does not end at the blank line", data, size);
    /* 2: cut short, still only incomplete */
    if (api__head_parse((const char *)data, h.head_len - 1, max_body, &h2, &why) != 1)
        die("a prefix of a valid head is not 'incomplete'", data, size);
    api_framing f;
    if (api__framing_decide(h.fields, h.n_fields, max_body, &f, &why) ||
        f.length != h.framing.length || f.has_length != h.framing.has_length)
        die("framing decided differently the second time", data, size);
    if (api__target_parse(h.target, h.target_len, &t, &why))
        die("the target of an accepted head is refused", data, size);
    check_target(&t, data, size);
    check_route(h.method, &t, data, size);
    check_route("HEAD", &t, data, size);
}

static void as_target(const unsigned char *data, size_t size)
{
    static api_target t;
    api_refusal why;
    if (api__target_parse((const char *)data, size, &t, &why)) {
        char inst[API_TARGET_MAX + 1];
        size_t n = size < API_TARGET_MAX ? size : API_TARGET_MAX;
        memcpy(inst, data, n);
        inst[n] = 0;
        check_problem(&why, inst, data, size);
        char out[API_INSTANCE_MAX + 1];
        api__instance_of((const char *)data, size, out, sizeof out);
        for (const char *c = out; *c; c++)
            if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
                die("instance not printable ASCII", data, size);
        return;
    }
    check_target(&t, data, size);
    check_route("GET", &t, data, size);
    check_route("POST", &t, data, size);
    check_route("DELETE", &t, data, size);
}

static void as_cursor(const unsigned char *data, size_t size)
{
    static api_cursor_keys k1, k2;
    if (!k1.key_len) {
        memset(k1.key, 'a', 32);
        k1.key_len = 32;
        memset(k2.key, 'b', 32);
        k2.key_len = 32;
    }
    char s[API_CURSOR_MAX + 2], b[160], err[256];
    size_t n = size < API_CURSOR_MAX + 1 ? size : API_CURSOR_MAX + 1;
    memcpy(s, data, n);
    s[n] = 0;
    int64_t a;
    if (api__cursor_verify(&k1, "inv", s, &a, b, sizeof b, err, sizeof err) == 0 &&
        api__cursor_verify(&k2, "inv", s, &a, b, sizeof b, err, sizeof err) == 0)
        die("a cursor verified with two different keys", data, size);
    /* 5: what is signed comes back, under its kind and key only */
    if (size < 9)
        return;
    int64_t pos;
    memcpy(&pos, data, 8);
    pos = (int64_t)((uint64_t)pos % UINT64_C(253402300800000000));
    char text[129];
    size_t tl = 0;
    for (size_t i = 8; i < size && tl < 128; i++)
        if (data[i] >= 0x20 && data[i] < 0x7f)
            text[tl++] = (char)data[i];
    text[tl] = 0;
    if (!tl)
        return;
    char c[API_CURSOR_MAX];
    api__cursor_sign(&k1, "cn", pos, text, c, sizeof c);
    int64_t back;
    if (api__cursor_verify(&k1, "cn", c, &back, b, sizeof b, err, sizeof err) || back != pos ||
        strcmp(b, text))
        die("a signed cursor does not verify to what was signed", data, size);
    if (!api__cursor_verify(&k2, "cn", c, &back, b, sizeof b, err, sizeof err) ||
        !api__cursor_verify(&k1, "inv", c, &back, b, sizeof b, err, sizeof err))
        die("a cursor verified with another key or for another list", data, size);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    as_head(data, size);
    as_target(data, size);
    as_cursor(data, size);
    return 0;
}
