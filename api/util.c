/* Small helpers of the API: text buffers, problem+json and JSON responses (rendered by
 * edge.c), query and body access (strict: unknown members are errors; parameters were
 * validated by the pipeline), months, cursors (signed, cursor.c), money text. */
#include "api_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void api__buf_add(api_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = gm_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void api__buf_str(api_buf *b, const char *s)
{
    api__buf_add(b, s, strlen(s));
}

void api__buf_printf(api_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < (int)sizeof tmp) {
        api__buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = gm_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    api__buf_add(b, big, (size_t)n);
    free(big);
}

void api__buf_csv(api_buf *b, const char *s)
{
    /* A leading = + - @ would be a formula in a spreadsheet: prefix a quote (OWASP) unless
     * the field is a number. */
    bool numeric = *s != 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '.' || (*p == '-' && p == s)))
            numeric = false;
    bool quote = strpbrk(s, ",\"\r\n") != NULL || (!numeric && strchr("=+-@\t", *s) && *s);
    if (!quote) {
        api__buf_str(b, s);
        return;
    }
    api__buf_add(b, "\"", 1);
    if (!numeric && *s && strchr("=+-@\t", *s))
        api__buf_add(b, "'", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            api__buf_add(b, "\"", 1);
        api__buf_add(b, p, 1);
    }
    api__buf_add(b, "\"", 1);
}

void api__text(api_req *r, int status, const char *ctype, char *body, size_t len)
{
    free(r->resp);
    r->status = status;
    r->resp = body;
    r->resp_len = len;
    r->ctype = ctype;
}

void api__json(api_req *r, int status, cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s) {
        api__problem(r, 500, "internal", NULL, "out of memory while rendering the response");
        return;
    }
    api__text(r, status, "application/json", s, strlen(s));
}

void api__problem(api_req *r, int status, const char *slug, const char *field, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    size_t len;
    char *s = api__problem_render(status, slug, field, detail, r->path ? r->path : "/", &len);
    api__text(r, status, "application/problem+json", s, len);
}

void api__db_problem(api_req *r, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!state)
        state = "";
    if (!msg)
        msg = "";
    if (!strcmp(state, "23514")) /* check_violation: a rule of ours, said by the trigger */
        api__problem(r, 422, "rule-violated", NULL, "%s", msg);
    else if (!strcmp(state, "55000") || !strcmp(state, "42501") || !strcmp(state, "40001") ||
             !strcmp(state, "40P01"))
        api__problem(r, 409, "conflict", NULL, "%s", msg);
    else if (!strcmp(state, "57014"))
        api__problem(r, 503, "timeout", NULL, "%s: the statement timed out", what);
    else {
        gm_error("api", "msg=\"database error\" what=\"%s\" sqlstate=%s detail=\"%s\"", what, state,
                 msg);
        api__problem(r, 500, "internal", NULL, "%s: database error (SQLSTATE %s), logged", what,
                     state);
    }
}

const char *api__query(api_req *r, const char *name)
{
    const api_target *t = r->target;
    for (size_t i = 0; t && i < t->n_param; i++)
        if (!strcmp(t->pname[i], name))
            return t->pvalue[i];
    return NULL;
}

bool api__wants_csv(api_req *r)
{
    const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    return a && strstr(a, "text/csv") != NULL;
}

static bool in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !memcmp(p, name, n))
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

cJSON *api__body_object(api_req *r, const char *allowed, bool empty_ok)
{
    if (r->body_len == 0) {
        if (empty_ok)
            return cJSON_CreateObject();
        api__problem(r, 400, "invalid-body", NULL, "a JSON object body is required");
        return NULL;
    }
    if (memchr(r->body, 0, r->body_len)) {
        api__problem(r, 400, "invalid-json", NULL, "body: NUL byte in JSON text");
        return NULL;
    }
    size_t nul = gm_json_nul_escape(r->body, r->body_len);
    if (nul != SIZE_MAX) {
        api__problem(r, 400, "invalid-json", NULL,
                     "body: \\u0000 (NUL) in a JSON string at byte %zu: no field may contain it",
                     nul);
        return NULL;
    }
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(r->body, r->body_len + 1, &end, true); /* + its NUL */
    if (!o) {
        size_t off = end && end >= r->body ? (size_t)(end - r->body) : 0;
        api__problem(r, 400, "invalid-json", NULL, "body: malformed JSON near byte %zu", off);
        return NULL;
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        api__problem(r, 400, "invalid-body", NULL, "body: must be a JSON object");
        return NULL;
    }
    for (cJSON *m = o->child; m; m = m->next) {
        if (!in_list(allowed, m->string)) {
            api__problem(r, 400, "unknown-field", m->string,
                         "body.%.64s: unknown field (allowed: %s)", m->string, allowed);
            cJSON_Delete(o);
            return NULL;
        }
        for (cJSON *k = m->next; k; k = k->next)
            if (!strcmp(k->string, m->string)) {
                api__problem(r, 400, "duplicate-field", m->string,
                             "body.%.64s: appears more than once", m->string);
                cJSON_Delete(o);
                return NULL;
            }
    }
    return o;
}

bool api__parse_month(const char *s, int64_t *start_us)
{
    if (!s || strlen(s) != 7 || s[4] != '-')
        return false;
    uint64_t y, m;
    if (gm_parse_u64(s, 4, 9999, &y) || y < 1970 || s[5] < '0' || s[5] > '1' ||
        gm_parse_u64(s + 5 + (s[5] == '0'), s[5] == '0' ? 1 : 2, 12, &m) || m < 1)
        return false;
    *start_us = gm_days_from_civil((int64_t)y, (unsigned)m, 1) * GM_US_PER_DAY;
    return true;
}

void api__format_month(int64_t us, char out[8])
{
    int64_t y;
    unsigned m, d;
    gm_civil_from_days(us / GM_US_PER_DAY, &y, &m, &d);
    snprintf(out, 8, "%04d-%02u", (int)y, m);
}

bool api__parse_limit(api_req *r, int def, int max, int *out)
{
    const char *s = api__query(r, "limit");
    if (!s) {
        *out = def;
        return true;
    }
    uint64_t v;
    if (gm_parse_u64(s, strlen(s), (uint64_t)max, &v) || v < 1) {
        api__problem(r, 400, "invalid-parameter", "limit", "limit: must be an integer from 1 to %d",
                     max);
        return false;
    }
    *out = (int)v;
    return true;
}

void api__cursor_make(api_server *s, const char *kind, int64_t a, const char *b, char *out,
                      size_t out_len)
{
    api__cursor_sign(api__cursor_keys(s), kind, a, b, out, out_len);
}

bool api__cursor_parse(api_req *r, const char *kind, const char *s, int64_t *a, char *b,
                       size_t b_len)
{
    char why[256];
    if (api__cursor_verify(api__cursor_keys(r->srv), kind, s, a, b, b_len, why, sizeof why)) {
        api__problem(r, 400, "invalid-parameter", "cursor", "%s", why);
        return false;
    }
    return true;
}

int api__minor_units(const char *currency)
{
    int m = gm_rating_currency_minor_units(currency);
    return m < 0 ? 2 : m;
}

bool api__num_e18(const char *s, gm_i128 *out)
{
    return s && gm_dec_parse(s, strlen(s), 18, out, NULL, 0) == 0;
}

bool api__num_int(const char *s, gm_i128 *out)
{
    return s && gm_dec_parse(s, strlen(s), 0, out, NULL, 0) == 0;
}

void api__add_e18(cJSON *o, const char *name, gm_i128 v)
{
    char b[64];
    gm_dec_format(v, 18, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

void api__add_minor(cJSON *o, const char *name, gm_i128 minor, int minor_units)
{
    char b[64];
    gm_rating_format_minor(minor, minor_units, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

void api__add_i128(cJSON *o, const char *name, gm_i128 v)
{
    char b[64];
    gm_i128_format(v, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

void api__add_time(cJSON *o, const char *name, int64_t us)
{
    if (!us) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    char b[40];
    gm_time_format(us, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

bool api__pg_time(const char *s, int64_t *us)
{
    return s && gm_parse_i64(s, strlen(s), us) == 0;
}

void api__time_param(int64_t us, char buf[40])
{
    gm_time_format(us, buf, 40);
}
