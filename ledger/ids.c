/* Interned ids of the compact ledger: tenants, sites, models, sources, topic partitions and
 * pricings (sql/0012), cached per writer.
 *
 * DESIGN. One open-addressing table maps (kind, key text) to an id. Names use their own
 * text as the key; a topic partition "topic\x1fpartition"; a pricing every field rating
 * decided (card, currency, tier as text; version, flags and the four prices in hex).
 * A row's pricing key is built only when its fields differ from the previous row's, so that a
 * warm batch costs a few hash lookups a row and no round trip. */
#include "gm_ingest.h"
#include "ledger_int.h"

#include <stdlib.h>
#include <string.h>

enum { K_TENANT = 1, K_SITE = 2, K_MODEL = 3, K_SOURCE = 4, K_STREAM = 5, K_PRICING = 6 };

typedef struct slot {
    char *key; /* NULL: empty */
    uint64_t hash;
    int32_t id; /* 0: looked up now */
    unsigned char kind;
} slot;

struct ledger__ids {
    slot *s;
    size_t cap, n;
    /* misses of the current call: indexes into nothing (slots move), so the keys */
    struct miss {
        unsigned char kind;
        const char *key; /* owned by its slot */
        const gm_ledger_row *row;
    } * miss;
    size_t n_miss, miss_cap;
    char *key; /* the current row's pricing key */
    size_t key_cap;
};

/* A word at a time (a few ns for a typical 20-byte name; FNV's byte loop cost a microsecond a
 * row over the six keys). */
static uint64_t hash_key(unsigned kind, const char *key, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)kind * 0xff51afd7ed558ccdULL) ^ len;
    size_t i = 0;
    uint64_t w;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
    }
    w = 0;
    memcpy(&w, key + i, len - i);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    return h ^ (h >> 29);
}

ledger__ids *ledger__ids_new(void)
{
    ledger__ids *x = gm_xcalloc(1, sizeof *x);
    x->cap = 256;
    x->s = gm_xcalloc(x->cap, sizeof *x->s);
    return x;
}

void ledger__ids_free(ledger__ids *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->cap; i++)
        free(x->s[i].key);
    free(x->s);
    free(x->miss);
    free(x->key);
    free(x);
}

static slot *find(ledger__ids *x, unsigned kind, const char *key, uint64_t h)
{
    size_t j = h & (x->cap - 1);
    while (x->s[j].key) {
        if (x->s[j].hash == h && x->s[j].kind == kind && !strcmp(x->s[j].key, key))
            return &x->s[j];
        j = (j + 1) & (x->cap - 1);
    }
    return &x->s[j];
}

/* The slot of (kind, key), created (id 0) when new. */
static slot *get(ledger__ids *x, unsigned kind, const char *key)
{
    if ((x->n + 1) * 2 > x->cap) {
        slot *old = x->s;
        size_t old_cap = x->cap;
        x->cap *= 2;
        x->s = gm_xcalloc(x->cap, sizeof *x->s);
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].key)
                *find(x, old[i].kind, old[i].key, old[i].hash) = old[i];
        free(old);
    }
    uint64_t h = hash_key(kind, key, strlen(key));
    slot *s = find(x, kind, key, h);
    if (!s->key) {
        s->key = gm_xstrdup(key);
        s->hash = h;
        s->kind = (unsigned char)kind;
        s->id = 0;
        x->n++;
    }
    return s;
}

static void add_miss(ledger__ids *x, unsigned kind, const slot *s, const gm_ledger_row *row)
{
    for (size_t i = 0; i < x->n_miss; i++)
        if (x->miss[i].key == s->key)
            return;
    if (x->n_miss == x->miss_cap) {
        x->miss_cap = x->miss_cap ? x->miss_cap * 2 : 32;
        x->miss = gm_xrealloc(x->miss, x->miss_cap * sizeof *x->miss);
    }
    x->miss[x->n_miss++] = (struct miss){(unsigned char)kind, s->key, row};
}

/* The pricing's key: its strings, then version, flags and the four prices in hex (cheap to
 * build for every row: no decimal formatting; the key is never read back). */
static char *put_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* The pricing's key into *buf (grown as needed): card, currency and tier, then version, flags
 * and the prices of every dimension in hex (cheap to build for every row; never read back). */
static void pricing_key(const gm_ledger_row *row, char **buf, size_t *cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t lc = strlen(row->card_id), lu = strlen(row->currency),
           lt = row->site_tier ? strlen(row->site_tier) : 0;
    size_t need = lc + lu + lt + 4 + (2 + GM_LEDGER_DIMS) * 16 + 1;
    if (need > *cap) {
        *cap = need * 2;
        *buf = gm_xrealloc(*buf, *cap);
    }
    char *p = *buf;
    p = put_str(p, row->card_id, lc);
    *p++ = '\x1f';
    p = put_str(p, row->currency, lu);
    *p++ = '\x1f';
    *p++ = row->site_tier ? '=' : '-';
    p = put_str(p, row->site_tier ? row->site_tier : "", lt);
    *p++ = '\x1f';
    uint64_t v[2 + GM_LEDGER_DIMS] = {(uint64_t)row->card_version, row->flags};
    for (int d = 0; d < GM_LEDGER_DIMS; d++)
        v[2 + d] = (uint64_t)row->unit_price_p[d];
    for (int i = 0; i < 2 + GM_LEDGER_DIMS; i++)
        for (int sh = 60; sh >= 0; sh -= 4)
            *p++ = hex[(v[i] >> sh) & 15];
    *p = '\0';
}

static bool same_pricing(const gm_ledger_row *a, const gm_ledger_row *b)
{
    if (a->card_version != b->card_version || a->flags != b->flags ||
        strcmp(a->card_id, b->card_id) || strcmp(a->currency, b->currency) ||
        !a->site_tier != !b->site_tier || (a->site_tier && strcmp(a->site_tier, b->site_tier)))
        return false;
    for (int d = 0; d < GM_LEDGER_DIMS; d++)
        if (a->unit_price_p[d] != b->unit_price_p[d])
            return false;
    return true;
}

/* Looks every id of the rows up; returns how many rows miss one (and lists the misses). */
static size_t lookup(ledger__ids *x, const char *topic, const gm_ledger_row *rows, size_t n,
                     ledger__row_ids *out, bool record)
{
    size_t missing = 0;
    char key[300]; /* a topic partition's key (Kafka topic names are at most 249 bytes) */
    const gm_ledger_row *prev = NULL;
    int32_t prev_pricing = 0, prev_partition = -1, prev_stream = 0;
    for (size_t i = 0; i < n; i++) {
        const gm_ledger_row *row = &rows[i];
        const gm_event *ev = row->ev;
        ledger__row_ids *o = &out[i];
        const struct {
            unsigned kind;
            const char *name;
            int32_t *id;
        } names[4] = {{K_SOURCE, ev->source, &o->source},
                      {K_TENANT, ev->tenant, &o->tenant},
                      {K_SITE, ev->site, &o->site},
                      {K_MODEL, ev->model, &o->model}};
        bool miss = false;
        for (int k = 0; k < 4; k++) {
            slot *s = get(x, names[k].kind, names[k].name);
            *names[k].id = s->id;
            if (!s->id) {
                miss = true;
                if (record)
                    add_miss(x, names[k].kind, s, row);
            }
        }
        if (row->partition == prev_partition && prev_stream) {
            o->stream = prev_stream;
        } else {
            snprintf(key, sizeof key, "%s\x1f%d", topic, row->partition);
            slot *s = get(x, K_STREAM, key);
            o->stream = s->id;
            if (!s->id) {
                miss = true;
                if (record)
                    add_miss(x, K_STREAM, s, row);
            }
            prev_partition = row->partition;
            prev_stream = s->id;
        }
        if (prev && prev_pricing && same_pricing(prev, row)) {
            o->pricing = prev_pricing;
        } else {
            pricing_key(row, &x->key, &x->key_cap);
            slot *s = get(x, K_PRICING, x->key);
            o->pricing = s->id;
            if (!s->id) {
                miss = true;
                if (record)
                    add_miss(x, K_PRICING, s, row);
            }
            prev = row;
            prev_pricing = s->id;
        }
        missing += miss;
    }
    return missing;
}

/* Appends s to a PostgreSQL array literal as a quoted element ("…", " and \ escaped). */
static char *array_elem(char *p, const char *s, bool first)
{
    if (!first)
        *p++ = ',';
    *p++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '"';
    return p;
}

static int fail_result(PGconn *c, PGresult *r, const char *what, char *err, size_t err_len)
{
    int rc = gm_pg_fail(c, r, what, err, err_len);
    PQclear(r);
    return rc;
}

static int resolve_names(ledger__ids *x, PGconn *c, char *err, size_t err_len)
{
    size_t n = 0, names_len = 3;
    for (size_t i = 0; i < x->n_miss; i++)
        if (x->miss[i].kind <= K_SOURCE) {
            n++;
            names_len += 2 * strlen(x->miss[i].key) + 3;
        }
    if (n == 0)
        return 0;
    char *kinds = gm_xmalloc(n * 4 + 3), *names = gm_xmalloc(names_len);
    char *kp = kinds, *np = names;
    *kp++ = '{';
    *np++ = '{';
    bool first = true;
    for (size_t i = 0; i < x->n_miss; i++) {
        const struct miss *m = &x->miss[i];
        if (m->kind > K_SOURCE)
            continue;
        if (!first)
            *kp++ = ',';
        *kp++ = (char)('0' + m->kind);
        np = array_elem(np, m->key, first);
        first = false;
    }
    *kp++ = '}';
    *kp = '\0';
    *np++ = '}';
    *np = '\0';
    const char *params[2] = {kinds, names};
    PGresult *r = PQexecParams(c,
                               "SELECT kind, name, id FROM"
                               " gm.ledger_name_ids($1::smallint[], $2::text[])",
                               2, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = fail_result(c, r, "interning ledger names", err, err_len);
    } else {
        for (int i = 0; i < PQntuples(r); i++) {
            slot *s = get(x, (unsigned)atoi(PQgetvalue(r, i, 0)), PQgetvalue(r, i, 1));
            s->id = (int32_t)atol(PQgetvalue(r, i, 2));
        }
        PQclear(r);
    }
    free(kinds);
    free(names);
    return rc;
}

/* A PostgreSQL array literal, built element by element. */
typedef struct abuf {
    char *p;
    size_t n, cap;
} abuf;

static void abuf_elem(abuf *a, const char *s) /* s NULL: the element NULL */
{
    size_t need = a->n + (s ? 2 * strlen(s) : 4) + 4;
    if (need > a->cap) {
        a->cap = need * 2 > 256 ? need * 2 : 256;
        a->p = gm_xrealloc(a->p, a->cap);
    }
    char *p = a->p + a->n;
    *p++ = a->n ? ',' : '{';
    if (s) {
        p = array_elem(p, s, true);
    } else {
        memcpy(p, "NULL", 4);
        p += 4;
    }
    a->n = (size_t)(p - a->p);
}

static const char *abuf_end(abuf *a)
{
    if (a->n == 0)
        abuf_elem(a, NULL); /* not reached: there is at least one element */
    a->p[a->n] = '}';
    a->p[a->n + 1] = '\0';
    return a->p;
}

/* Every missing pricing of the batch in one round trip (a cold rater meets as many as its
 * first batch has distinct prices). */
static int resolve_pricings(ledger__ids *x, PGconn *c, char *err, size_t err_len)
{
    enum { NA = 5 + GM_LEDGER_DIMS }; /* the arrays of gm.ledger_pricing_ids */
    abuf a[NA] = {{0}};
    size_t n = 0;
    for (size_t i = 0; i < x->n_miss; i++) {
        const struct miss *m = &x->miss[i];
        if (m->kind != K_PRICING)
            continue;
        const gm_ledger_row *row = m->row;
        char ver[24], flags[16], p[GM_LEDGER_DIMS][48];
        snprintf(ver, sizeof ver, "%lld", (long long)row->card_version);
        snprintf(flags, sizeof flags, "%u", row->flags);
        for (int d = 0; d < GM_LEDGER_DIMS; d++)
            gm_dec_format(row->unit_price_p[d], 12, p[d], sizeof p[d]);
        abuf_elem(&a[0], row->card_id);
        abuf_elem(&a[1], ver);
        abuf_elem(&a[2], row->currency);
        abuf_elem(&a[3], row->site_tier);
        abuf_elem(&a[4], flags);
        for (int d = 0; d < GM_LEDGER_DIMS; d++)
            abuf_elem(&a[5 + d], p[d]);
        n++;
    }
    int rc = 0;
    if (n) {
        const char *params[NA];
        for (int k = 0; k < NA; k++) {
            a[k].cap += 2; /* room for the closing brace and NUL */
            a[k].p = gm_xrealloc(a[k].p, a[k].cap);
            params[k] = abuf_end(&a[k]);
        }
        PGresult *r = PQexecParams(c,
                                   "SELECT ord, id FROM gm.ledger_pricing_ids($1::text[],"
                                   " $2::integer[], $3::text[], $4::text[], $5::smallint[],"
                                   " $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[],"
                                   " $10::numeric[], $11::numeric[], $12::numeric[])",
                                   NA, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || (size_t)PQntuples(r) != n) {
            rc = fail_result(c, r, "interning pricings", err, err_len);
        } else {
            /* ord k (1-based) is the k-th pricing miss, in miss order. */
            size_t k = 0;
            for (size_t i = 0; i < x->n_miss && rc == 0; i++) {
                if (x->miss[i].kind != K_PRICING)
                    continue;
                k++;
                for (int j = 0; j < PQntuples(r); j++)
                    if ((size_t)atol(PQgetvalue(r, j, 0)) == k && !PQgetisnull(r, j, 1))
                        get(x, K_PRICING, x->miss[i].key)->id = (int32_t)atol(PQgetvalue(r, j, 1));
            }
            PQclear(r);
        }
    }
    for (int k = 0; k < NA; k++)
        free(a[k].p);
    return rc;
}

static int resolve_stream(ledger__ids *x, PGconn *c, const char *topic, const struct miss *m,
                          char *err, size_t err_len)
{
    char part[16];
    snprintf(part, sizeof part, "%d", m->row->partition);
    const char *params[2] = {topic, part};
    PGresult *r = PQexecParams(c, "SELECT gm.ledger_stream_id($1, $2::integer)", 2, NULL, params,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
        return fail_result(c, r, "interning a topic partition", err, err_len);
    get(x, m->kind, m->key)->id = (int32_t)atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

int ledger__ids_resolve(ledger__ids *x, PGconn *c, const char *topic, const gm_ledger_row *rows,
                        size_t n, ledger__row_ids *out, char *err, size_t err_len)
{
    x->n_miss = 0;
    if (lookup(x, topic, rows, n, out, true) == 0)
        return 0;
    int rc = resolve_names(x, c, err, err_len);
    if (rc == 0)
        rc = resolve_pricings(x, c, err, err_len);
    for (size_t i = 0; rc == 0 && i < x->n_miss; i++)
        if (x->miss[i].kind == K_STREAM)
            rc = resolve_stream(x, c, topic, &x->miss[i], err, err_len);
    x->n_miss = 0;
    if (rc)
        return rc;
    if (lookup(x, topic, rows, n, out, false) != 0)
        return gm_fail(err, err_len, GM_EDB, "interning ledger ids: PostgreSQL returned no id");
    return 0;
}
