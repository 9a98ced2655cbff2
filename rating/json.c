/* String hash maps and the JSON reader of the rating module: cJSON for structure, number
 * literals kept as text (never read as doubles). */
#include "rating_int.h"

#include <stdlib.h>

/* ---- Hash map -------------------------------------------------------------------------- */

uint64_t rating__hash(const char *s, size_t len)
{
    /* 8 bytes at a time, multiply-xorshift mixing; good enough for names, cheap per event. */
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, len);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h ? h : 1;
}

void rating__map_init(rating__map *m)
{
    memset(m, 0, sizeof *m);
}

void rating__map_free(rating__map *m)
{
    free(m->hash);
    free(m->key);
    free(m->key_len);
    free(m->value);
    rating__map_init(m);
}

static void map_insert_slot(rating__map *m, uint64_t h, const char *key, uint32_t len,
                            int32_t value)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->hash[i])
        i = (i + 1) & m->mask;
    m->hash[i] = h;
    m->key[i] = key;
    m->key_len[i] = len;
    m->value[i] = value;
    m->count++;
}

static void map_grow(rating__map *m)
{
    rating__map old = *m;
    uint32_t cap = old.mask ? (old.mask + 1) * 2 : 16;
    m->mask = cap - 1;
    m->count = 0;
    m->hash = gm_xcalloc(cap, sizeof *m->hash);
    m->key = gm_xcalloc(cap, sizeof *m->key);
    m->key_len = gm_xcalloc(cap, sizeof *m->key_len);
    m->value = gm_xcalloc(cap, sizeof *m->value);
    for (uint32_t i = 0; old.mask && i <= old.mask; i++)
        if (old.hash[i])
            map_insert_slot(m, old.hash[i], old.key[i], old.key_len[i], old.value[i]);
    free(old.hash);
    free(old.key);
    free(old.key_len);
    free(old.value);
}

int32_t rating__map_put(rating__map *m, const char *key, size_t len, int32_t value)
{
    uint64_t h = rating__hash(key, len);
    int32_t v = rating__map_get_h(m, key, len, h);
    if (v >= 0)
        return v;
    if (!m->mask || (m->count + 1) * 2 > m->mask + 1)
        map_grow(m);
    map_insert_slot(m, h, key, (uint32_t)len, value);
    return -1;
}

/* ---- JSON ------------------------------------------------------------------------------ */

static void line_col(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Assigns literal indexes to number nodes in document order (cJSON keeps that order). */
static int number_walk(cJSON *node, size_t *next, size_t n)
{
    for (; node; node = node->next) {
        if (cJSON_IsNumber(node)) {
            if (*next >= n)
                return -1;
            node->valueint = (int)(*next)++;
        }
        if (node->child && number_walk(node->child, next, n))
            return -1;
    }
    return 0;
}

int rating__json_parse(const char *text, size_t len, rating__json *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    size_t nul = gm_json_nul_escape(text, len);
    if (nul != SIZE_MAX) {
        size_t line, col;
        line_col(text, nul, &line, &col);
        return gm_fail(err, err_len, GM_EINVAL,
                       "\\u0000 (NUL) in a JSON string (line %zu, column %zu): no name or value "
                       "may contain it",
                       line, col);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t line, col, off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        line_col(text, off, &line, &col);
        return gm_fail(err, err_len, GM_EINVAL, "not valid JSON (line %zu, column %zu)", line, col);
    }
    for (const char *p = end; p < text + len; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            cJSON_Delete(root);
            size_t line, col;
            line_col(text, (size_t)(p - text), &line, &col);
            return gm_fail(err, err_len, GM_EINVAL,
                           "text after the JSON document (line %zu, column %zu)", line, col);
        }
    /* Scan number literals outside strings. */
    size_t cap = 16, n = 0;
    size_t *off = gm_xmalloc(cap * sizeof *off), *nlen = gm_xmalloc(cap * sizeof *nlen);
    size_t stop = (size_t)(end - text);
    for (size_t i = 0; i < stop;) {
        char c = text[i];
        if (c == '"') {
            for (i++; i < stop && text[i] != '"'; i++)
                if (text[i] == '\\')
                    i++;
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t s = i;
            while (i < stop && (strchr("0123456789+-.eE", text[i]) && text[i] != '\0'))
                i++;
            if (n == cap) {
                cap *= 2;
                off = gm_xrealloc(off, cap * sizeof *off);
                nlen = gm_xrealloc(nlen, cap * sizeof *nlen);
            }
            off[n] = s;
            nlen[n++] = i - s;
        } else {
            i++;
        }
    }
    size_t next = 0;
    if (number_walk(root, &next, n) || next != n) {
        cJSON_Delete(root);
        free(off);
        free(nlen);
        return gm_fail(err, err_len, GM_EINVAL, "JSON number literals could not be matched");
    }
    out->root = root;
    out->text = text;
    out->n_nums = n;
    out->num_off = off;
    out->num_len = nlen;
    return 0;
}

void rating__json_free(rating__json *j)
{
    if (!j)
        return;
    cJSON_Delete(j->root);
    free(j->num_off);
    free(j->num_len);
    memset(j, 0, sizeof *j);
}

const char *rating__json_num_text(const rating__json *j, const cJSON *num, size_t *len)
{
    size_t i = (size_t)num->valueint;
    if (!cJSON_IsNumber(num) || i >= j->n_nums) {
        *len = 0;
        return "";
    }
    *len = j->num_len[i];
    return j->text + j->num_off[i];
}

void rating__json_describe(const rating__json *j, const cJSON *v, char *buf, size_t len)
{
    if (!v)
        snprintf(buf, len, "nothing");
    else if (cJSON_IsString(v))
        snprintf(buf, len, "the string \"%.40s\"", v->valuestring);
    else if (cJSON_IsNumber(v)) {
        size_t n;
        const char *t = rating__json_num_text(j, v, &n);
        snprintf(buf, len, "the number %.*s", (int)(n > 40 ? 40 : n), t);
    } else if (cJSON_IsBool(v))
        snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v))
        snprintf(buf, len, "null");
    else if (cJSON_IsArray(v))
        snprintf(buf, len, "an array");
    else
        snprintf(buf, len, "an object");
}

int rating__json_int(const rating__json *j, const cJSON *v, int64_t max, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return GM_EINVAL;
    size_t n;
    const char *t = rating__json_num_text(j, v, &n);
    uint64_t u;
    int rc = gm_parse_u64(t, n, (uint64_t)max, &u);
    if (rc)
        return rc;
    *out = (int64_t)u;
    return 0;
}
