/* Tamper evidence, writing side: the digest of a rater batch, per partition, chained to the
 * previous batch of the partition and stored in the batch's own transaction.
 *
 * DESIGN. The digest covers the LOGICAL content of what the batch wrote (the event contract
 * fields, tenant, card reference, exact amounts; the rejected messages; the changes to the
 * charges; the offsets moved), never the storage layout, so that a change of column types
 * or indexes does not change a digest. The canonical bytes (scheme 1, docs/auditors.md
 * "Tamper evidence") are built from the rows in memory, exactly as `gridmeter audit verify`
 * (ledger/chain_verify.c), the audit.chain_batch_check view and examples/verify_chain.py
 * rebuild them from the rows PostgreSQL holds. Concurrency: the hook runs after the offsets'
 * compare-and-set, whose row lock serializes every writer of a partition until COMMIT, so
 * reading the chain head and appending to it cannot race.
 */
#include "chain_int.h"
#include "ledger_int.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* gm.charges' dimension names, in gm_dim order (rating/gm_rating.h); ledger/ledger_int.h */
const char *const ledger__dim_names[GM_LEDGER_DIMS] = {"input",       "cached",    "output", "gpu",
                                                       "cache_write", "reasoning", "request"};
#define dim_names ledger__dim_names

bool gm_chain__bench_off;
int64_t gm_chain__busy_us, gm_chain__prep_us, gm_chain__batches;

/* ---- Canonical encoding ---------------------------------------------------------------------*/
void chain__reserve(chain__buf *b, size_t extra)
{
    if (b->n + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + extra + 1)
            cap *= 2;
        b->p = gm_xrealloc(b->p, cap);
        b->cap = cap;
    }
}

void chain__put(chain__buf *b, const char *s, size_t len)
{
    chain__reserve(b, len);
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

/* Decimal digits of v into the end of t[24]; returns where they start (snprintf is most of
 * the cost of a record otherwise). */
static char *u64_text(uint64_t v, char t[24])
{
    char *p = t + 24;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

void chain__f(chain__buf *b, const char *s, size_t len)
{
    char t[24];
    char *d = u64_text(len, t);
    size_t dn = (size_t)(t + 24 - d);
    chain__reserve(b, dn + 1 + len);
    memcpy(b->p + b->n, d, dn);
    b->n += dn;
    b->p[b->n++] = ':';
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

void chain__fs(chain__buf *b, const char *s)
{
    if (!s)
        chain__put(b, "-", 1);
    else
        chain__f(b, s, strlen(s));
}

void chain__fi(chain__buf *b, int64_t v)
{
    char t[25];
    char *d = u64_text(v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, t + 1);
    if (v < 0)
        *--d = '-';
    chain__f(b, d, (size_t)(t + 25 - d));
}

size_t chain__dec_text(gm_i128 v, int scale, char *out, size_t out_len)
{
    /* Digits least significant first; 64-bit division while the value fits (a 128-bit
     * division per digit made this the hook's main cost). */
    char dig[48];
    size_t n = 0;
    unsigned __int128 u =
        v < 0 ? (unsigned __int128)0 - (unsigned __int128)v : (unsigned __int128)v;
    while (u > UINT64_MAX) {
        dig[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    }
    uint64_t x = (uint64_t)u;
    do {
        dig[n++] = (char)('0' + (int)(x % 10));
        x /= 10;
    } while (x);
    size_t lo = 0; /* trailing fraction zeros are dropped */
    while (lo < (size_t)scale && lo < n && dig[lo] == '0')
        lo++;
    if (lo == n) { /* zero */
        snprintf(out, out_len, "0");
        return 1;
    }
    char t[96];
    size_t w = 0;
    if (v < 0)
        t[w++] = '-';
    size_t int_digits = n > (size_t)scale ? n - (size_t)scale : 0;
    if (int_digits == 0)
        t[w++] = '0';
    for (size_t k = n; k > (size_t)scale; k--)
        t[w++] = dig[k - 1];
    if (lo < (size_t)scale) {
        t[w++] = '.';
        for (size_t k = (size_t)scale; k > lo; k--)
            t[w++] = k <= n ? dig[k - 1] : '0';
    }
    t[w] = '\0';
    snprintf(out, out_len, "%s", t);
    return w < out_len ? w : (out_len ? out_len - 1 : 0);
}

size_t chain__trim_dec(char *s, size_t n)
{
    if (memchr(s, '.', n)) {
        while (n > 0 && s[n - 1] == '0')
            n--;
        if (n > 0 && s[n - 1] == '.')
            n--;
        s[n] = '\0';
    }
    if (n == 2 && s[0] == '-' && s[1] == '0') { /* "-0.000" -> "0" */
        s[0] = '0';
        s[1] = '\0';
        n = 1;
    }
    return n;
}

void chain__fd(chain__buf *b, gm_i128 v, int scale)
{
    if (v == 0) {
        chain__put(b, "1:0", 3);
        return;
    }
    char t[64];
    size_t n = chain__dec_text(v, scale, t, sizeof t);
    chain__f(b, t, n);
}

/* A JSON string of s, escaped as PostgreSQL's to_json(text) does. */
void chain__json_str(chain__buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strlen(s);
    chain__reserve(b, len * 6 + 2);
    b->p[b->n++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *e = NULL;
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            break;
        }
        if (e) {
            b->p[b->n++] = e[0];
            b->p[b->n++] = e[1];
        } else if (c < 0x20) {
            memcpy(b->p + b->n, "\\u00", 4);
            b->n += 4;
            b->p[b->n++] = hex[c >> 4];
            b->p[b->n++] = hex[c & 15];
        } else {
            b->p[b->n++] = (char)c;
        }
    }
    b->p[b->n++] = '"';
    b->p[b->n] = '\0';
}

void chain__hex(const unsigned char d[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
}

/* The header record "B". */
void chain__header(chain__buf *b, const chain__head *h)
{
    chain__put(b, "B", 1);
    chain__fs(b, "1");
    chain__fs(b, h->group_id);
    chain__fs(b, h->topic);
    chain__fi(b, h->partition);
    chain__fi(b, h->seq);
    chain__fi(b, h->from_offset);
    chain__fi(b, h->next_offset);
    chain__fi(b, h->rows);
    chain__fi(b, h->rejects);
    chain__fi(b, h->duplicates);
    chain__fi(b, h->conflicts);
    for (int d = 0; d < CHAIN_DIMS; d++)
        chain__fd(b, h->qty[d], 0);
    for (int d = 0; d < CHAIN_DIMS; d++)
        chain__fd(b, h->amount_e18[d], 18);
    chain__fs(b, h->prev_hex);
    chain__fs(b, h->records_hex);
    chain__put(b, "\n", 1);
}

void chain__replay_header(chain__buf *b, const char *topic, int64_t seq, int64_t rows,
                          int64_t duplicates, int64_t conflicts, const char *prev_hex,
                          const char *records_hex)
{
    chain__put(b, "P", 1);
    chain__fs(b, "1");
    chain__fs(b, topic);
    chain__fi(b, seq);
    chain__fi(b, rows);
    chain__fi(b, duplicates);
    chain__fi(b, conflicts);
    chain__fs(b, prev_hex);
    chain__fs(b, records_hex);
    chain__put(b, "\n", 1);
}

/* Unchecked appends for put_row, which reserves the row's bound first. */
static inline void raw_f(char **w, const char *s, size_t len)
{
    char t[24];
    char *d = u64_text(len, t);
    size_t dn = (size_t)(t + 24 - d);
    memcpy(*w, d, dn);
    *w += dn;
    *(*w)++ = ':';
    memcpy(*w, s, len);
    *w += len;
}

static inline void raw_s(char **w, const char *s, size_t len)
{
    if (!s) {
        *(*w)++ = '-';
        return;
    }
    raw_f(w, s, len);
}

static inline void raw_i(char **w, int64_t v)
{
    char t[25];
    char *d = u64_text(v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, t + 1);
    if (v < 0)
        *--d = '-';
    raw_f(w, d, (size_t)(t + 25 - d));
}

static inline void raw_d(char **w, gm_i128 v, int scale)
{
    char t[64];
    size_t n = v == 0 ? (t[0] = '0', 1) : chain__dec_text(v, scale, t, sizeof t);
    raw_f(w, t, n);
}

/* One ledger row, record "L" (the hot loop of the hook: one reservation per row). */
static void put_row(chain__buf *b, const gm_ledger_row *row)
{
    const gm_event *ev = row->ev;
    size_t l_ten = strlen(ev->tenant), l_src = strlen(ev->source), l_id = strlen(ev->id);
    size_t l_site = strlen(ev->site), l_model = strlen(ev->model);
    size_t l_req = strlen(ev->request_id), l_card = strlen(row->card_id);
    size_t l_tier = row->site_tier ? strlen(row->site_tier) : 0, l_cur = strlen(row->currency);
    /* strings + their length prefixes (<= 21 each) + 15 numbers (<= 21 + 41 each) + the
     * service tier (<= 8 + 21) and the epoch (<= 21 + 21) */
    chain__reserve(b, l_ten + l_src + l_id + l_site + l_model + l_req + l_card + l_tier + l_cur +
                          10 * 21 + 15 * 64 + 8 + 4 + 42);
    char *w = b->p + b->n;
    *w++ = 'L';
    raw_i(&w, row->offset);
    raw_f(&w, ev->tenant, l_ten);
    raw_i(&w, ev->time_us);
    raw_f(&w, ev->source, l_src);
    raw_f(&w, ev->id, l_id);
    raw_i(&w, (int64_t)ev->seq);
    raw_f(&w, ev->site, l_site);
    raw_f(&w, ev->model, l_model);
    raw_s(&w, l_req ? ev->request_id : NULL, l_req); /* "" is stored as NULL */
    raw_i(&w, ev->input_tokens);
    raw_i(&w, ev->cached_tokens);
    raw_i(&w, ev->output_tokens);
    raw_i(&w, ev->gpu_us);
    raw_s(&w, row->site_tier, l_tier);
    raw_f(&w, row->card_id, l_card);
    raw_i(&w, row->card_version);
    raw_f(&w, row->currency, l_cur);
    for (int d = 0; d < CHAIN_DIMS; d++)
        raw_d(&w, row->amount_e18[d], 18);
    raw_i(&w, (int64_t)row->flags);
    raw_i(&w, ev->reasoning_tokens); /* usage revision 1.1 (sql/0009) */
    raw_i(&w, ev->cache_write_tokens);
    const char *tier = gm_service_tier_name(ev->service_tier);
    raw_f(&w, tier, strlen(tier));
    if (ev->epoch) /* usage revision 1.2 (sql/0015): only when not 0, so older records stay */
        raw_i(&w, ev->epoch);
    *w++ = '\n';
    b->n = (size_t)(w - b->p);
    b->p[b->n] = '\0';
}

void chain__hexbytes(chain__buf *b, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *d = data;
    char t[24];
    int k = snprintf(t, sizeof t, "%zu:", len * 2);
    chain__put(b, t, (size_t)k);
    chain__reserve(b, len * 2);
    for (size_t i = 0; i < len; i++) {
        b->p[b->n++] = hex[d[i] >> 4];
        b->p[b->n++] = hex[d[i] & 15];
    }
    b->p[b->n] = '\0';
}

/* One rejected message, record "R". */
static void put_reject(chain__buf *b, const gm_ledger_reject *r)
{
    chain__put(b, "R", 1);
    chain__fi(b, r->offset);
    if (r->key)
        chain__hexbytes(b, r->key, r->key_len);
    else
        chain__put(b, "-", 1);
    chain__hexbytes(b, r->payload ? r->payload : "", r->payload_len);
    chain__fs(b, r->reason);
    chain__put(b, "\n", 1);
}

/* ---- Charges of one partition ---------------------------------------------------------------*/
typedef struct ch_entry {
    bool used;
    uint64_t hash;
    const gm_ledger_row *row;
    int dim;
    int64_t hour_us;
    int64_t price_p;
    gm_i128 qty;
    gm_i128 amount_e18;
    int64_t events;
} ch_entry;

struct chain__part;
struct gm_chain {
    ch_entry *ch;
    size_t ch_cap;
    chain__buf head, recs, json;
    struct chain__part *prep; /* gm_chain_prepare's result, for prep_batch */
    size_t n_prep, prep_cap, prep_dups, prep_rows;
    const gm_ledger_batch *prep_batch;
    chain__conflict_fn conflict_of; /* gm_chain__on_conflicts */
    const void *conflict_arg;
};

void gm_chain__on_conflicts(gm_chain *c, chain__conflict_fn fn, const void *arg)
{
    c->conflict_of = fn;
    c->conflict_arg = arg;
}

gm_chain *gm_chain_new(void)
{
    return gm_xcalloc(1, sizeof(gm_chain));
}

static void prep_clear(gm_chain *c);

void gm_chain_forget(gm_chain *c)
{
    prep_clear(c);
}

void gm_chain_free(gm_chain *c)
{
    if (!c)
        return;
    prep_clear(c);
    free(c->prep);
    free(c->ch);
    free(c->head.p);
    free(c->recs.p);
    free(c->json.p);
    free(c);
}

static uint64_t fnv(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The row's part of a charge key's hash (the strings: once per row, not per dimension). */
static uint64_t row_hash(const gm_ledger_row *row)
{
    const gm_event *ev = row->ev;
    uint64_t h = 14695981039346656037ULL;
    h = fnv(ev->tenant, strlen(ev->tenant) + 1, h);
    h = fnv(ev->site, strlen(ev->site) + 1, h);
    h = fnv(ev->model, strlen(ev->model) + 1, h);
    h = fnv(row->card_id, strlen(row->card_id) + 1, h);
    const char *variant = ledger__variant(row);
    if (variant[0])
        h = fnv(variant, strlen(variant) + 1, h);
    return fnv(&row->card_version, sizeof row->card_version, h);
}

static uint64_t key_hash(uint64_t row_h, int dim, int64_t hour_us, int64_t price)
{
    uint64_t x = row_h ^ ((uint64_t)dim * 0x9e3779b97f4a7c15ULL);
    x ^= (uint64_t)hour_us * 0xbf58476d1ce4e5b9ULL;
    x ^= (uint64_t)price * 0x94d049bb133111ebULL;
    x ^= x >> 31; /* splitmix64's finalizer */
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    return x;
}

static bool key_same(const ch_entry *c, const gm_ledger_row *row, int dim, int64_t hour_us,
                     int64_t price)
{
    const gm_event *a = c->row->ev, *e = row->ev;
    return c->dim == dim && c->hour_us == hour_us && c->price_p == price &&
           c->row->card_version == row->card_version && !strcmp(a->tenant, e->tenant) &&
           !strcmp(a->site, e->site) && !strcmp(a->model, e->model) &&
           !strcmp(c->row->card_id, row->card_id) &&
           !strcmp(ledger__variant(c->row), ledger__variant(row));
}

/* gm.charges' key order: tenant, hour, site, model, dimension, card_id, card_version,
 * variant, unit_price (strings by bytes). */
static int key_cmp(const void *pa, const void *pb)
{
    const ch_entry *a = pa, *b = pb;
    const gm_event *x = a->row->ev, *y = b->row->ev;
    int c;
    if ((c = strcmp(x->tenant, y->tenant)))
        return c;
    if (a->hour_us != b->hour_us)
        return a->hour_us < b->hour_us ? -1 : 1;
    if ((c = strcmp(x->site, y->site)))
        return c;
    if ((c = strcmp(x->model, y->model)))
        return c;
    if ((c = strcmp(dim_names[a->dim], dim_names[b->dim])))
        return c;
    if ((c = strcmp(a->row->card_id, b->row->card_id)))
        return c;
    if (a->row->card_version != b->row->card_version)
        return a->row->card_version < b->row->card_version ? -1 : 1;
    if ((c = strcmp(ledger__variant(a->row), ledger__variant(b->row))))
        return c;
    if (a->price_p != b->price_p)
        return a->price_p < b->price_p ? -1 : 1;
    return 0;
}

/* Sums the partition's inserted rows into charges as the writer does (a dimension counts
 * when its quantity or amount is not zero), sorted by key; returns how many. */
static void ch_grow(gm_chain *c)
{
    size_t old_cap = c->ch_cap;
    ch_entry *old = c->ch;
    c->ch_cap = old_cap ? old_cap * 2 : 4096;
    c->ch = gm_xcalloc(c->ch_cap, sizeof *c->ch);
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].used)
            continue;
        size_t j = old[i].hash & (c->ch_cap - 1);
        while (c->ch[j].used)
            j = (j + 1) & (c->ch_cap - 1);
        c->ch[j] = old[i];
    }
    free(old);
}

/* Sums the batch's inserted rows (every partition) into charges as the writer does (a
 * dimension counts when its quantity or amount is not zero), sorted by key: the batch's
 * changes to gm.charges. Returns how many in *n_out (c->ch[0..n)). */
static int sum_charges(gm_chain *c, const gm_ledger_batch *b, const unsigned char *dup,
                       size_t *n_out, char *err, size_t err_len)
{
    if (c->ch_cap == 0)
        ch_grow(c);
    else
        memset(c->ch, 0, c->ch_cap * sizeof *c->ch);
    size_t n = 0;
    for (size_t i = 0; i < b->n_rows; i++) {
        const gm_ledger_row *row = &b->rows[i];
        if (dup[i])
            continue;
        const gm_event *ev = row->ev;
        int64_t qty[GM_LEDGER_DIMS]; /* what gm.charges holds (ledger_int.h) */
        ledger__charge_qty(row, qty);
        int64_t hour_us = ev->time_us - ev->time_us % GM_US_PER_HOUR;
        uint64_t rh = row_hash(row);
        for (int d = 0; d < GM_LEDGER_DIMS; d++) {
            if (qty[d] == 0 && row->amount_e18[d] == 0)
                continue;
            if ((n + 1) * 2 > c->ch_cap)
                ch_grow(c);
            int64_t price = row->unit_price_p[d];
            uint64_t h = key_hash(rh, d, hour_us, price);
            size_t j = h & (c->ch_cap - 1);
            while (c->ch[j].used &&
                   !(c->ch[j].hash == h && key_same(&c->ch[j], row, d, hour_us, price)))
                j = (j + 1) & (c->ch_cap - 1);
            ch_entry *e = &c->ch[j];
            if (!e->used) {
                e->used = true;
                e->hash = h;
                e->row = row;
                e->dim = d;
                e->hour_us = hour_us;
                e->price_p = price;
                n++;
            }
            if (gm_i128_add(e->qty, qty[d], &e->qty) ||
                gm_i128_add(e->amount_e18, row->amount_e18[d], &e->amount_e18))
                return gm_fail(err, err_len, GM_ERANGE, "chain: charge sum overflows");
            e->events++;
        }
    }
    size_t k = 0;
    for (size_t j = 0; j < c->ch_cap && k < n; j++)
        if (c->ch[j].used)
            c->ch[k++] = c->ch[j];
    qsort(c->ch, k, sizeof *c->ch, key_cmp);
    *n_out = k;
    return 0;
}

/* The 13 strings of a charge change, in the order of gm.chain_batches.charges, and a 14th,
 * the price variant, only when it is not "" (sql/0027), so that earlier records stay as they
 * were; returns how many. */
static int charge_fields(const ch_entry *e, char f[14][64], const char *s[14])
{
    const gm_event *ev = e->row->ev;
    s[0] = ev->tenant;
    snprintf(f[1], 64, "%lld", (long long)e->hour_us);
    s[1] = f[1];
    s[2] = ev->site;
    s[3] = ev->model;
    s[4] = dim_names[e->dim];
    s[5] = e->row->card_id;
    snprintf(f[6], 64, "%lld", (long long)e->row->card_version);
    s[6] = f[6];
    s[7] = e->row->site_tier;
    s[8] = e->row->currency;
    chain__dec_text(e->price_p, GM_PRICE_SCALE, f[9], 64);
    s[9] = f[9];
    chain__dec_text(e->qty, 0, f[10], 64);
    s[10] = f[10];
    chain__dec_text(e->amount_e18, 18, f[11], 64);
    s[11] = f[11];
    snprintf(f[12], 64, "%lld", (long long)e->events);
    s[12] = f[12];
    s[13] = ledger__variant(e->row);
    return s[13][0] ? 14 : 13;
}

/* The text of one gm.chain_batches row: 18 short values, then the charges' JSON. */
typedef struct chain__val {
    char s[18][72];
    char *json;
} chain__val;

/* ---- The hook --------------------------------------------------------------------------------*/
static int read_heads(PGconn *conn, const gm_ledger_batch *b, int64_t *seq, char (*hex)[65],
                      char *err, size_t err_len)
{
    chain__buf q = {0};
    chain__put(&q, "{", 1);
    for (size_t k = 0; k < b->n_pos; k++) {
        char t[16];
        int n = snprintf(t, sizeof t, "%s%d", k ? "," : "", b->pos[k].partition);
        chain__put(&q, t, (size_t)n);
        seq[k] = 0;
        memset(hex[k], '0', 64);
        hex[k][64] = '\0';
    }
    chain__put(&q, "}", 1);
    const char *params[3] = {b->group_id, b->topic, q.p};
    PGresult *r =
        PQexecParams(conn,
                     "SELECT DISTINCT ON (partition) partition, seq, encode(digest, 'hex')"
                     " FROM gm.chain_batches WHERE group_id = $1 AND topic = $2"
                     " AND partition = ANY($3::int[]) ORDER BY partition, seq DESC",
                     3, NULL, params, NULL, NULL, 0);
    free(q.p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(conn, r, "reading the chain heads", err, err_len);
        PQclear(r);
        return rc;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        int32_t p = (int32_t)atol(PQgetvalue(r, i, 0));
        for (size_t k = 0; k < b->n_pos; k++)
            if (b->pos[k].partition == p) {
                seq[k] = atoll(PQgetvalue(r, i, 1));
                snprintf(hex[k], 65, "%s", PQgetvalue(r, i, 2));
            }
    }
    PQclear(r);
    return 0;
}

/* Per partition of the prepared batch: the header's counts and totals, the records' digest
 * and the charge changes' JSON. */
typedef struct chain__part {
    int64_t first, rows, rejects, duplicates, conflicts;
    gm_i128 qty[CHAIN_DIMS], amount_e18[CHAIN_DIMS];
    char records_hex[65];
    char *json;
} chain__part;

/* One conflicting message (a row marked 2), record "X": what gm.conflicting_events holds of
 * it (ledger/batch.c write_conflicts: the payload, or the event's canonical form without one). */
static void put_conflict(gm_chain *c, chain__buf *b, const gm_ledger_row *row, size_t i)
{
    const char *kind = NULL;
    const unsigned char *fp = NULL;
    if (c->conflict_of)
        c->conflict_of(c->conflict_arg, i, &kind, &fp);
    chain__put(b, "X", 1);
    chain__fi(b, row->offset);
    if (row->key)
        chain__hexbytes(b, row->key, row->key_len);
    else
        chain__put(b, "-", 1);
    if (row->payload) {
        chain__hexbytes(b, row->payload, row->payload_len);
    } else {
        char canon[GM_EVENT_MAX_BYTES + 1];
        size_t n = gm_event_encode(row->ev, canon, sizeof canon);
        chain__hexbytes(b, canon, n);
    }
    if (fp)
        chain__hexbytes(b, fp, 32);
    else
        chain__put(b, "-", 1);
    chain__fs(b, kind);
    chain__put(b, "\n", 1);
}

/* The C records of c->ch[0..n_ch) into c->recs, their JSON into c->json. */
static void put_charges(gm_chain *c, size_t n_ch)
{
    c->json.n = 0;
    chain__put(&c->json, "[", 1);
    for (size_t j = 0; j < n_ch; j++) {
        char f[14][64];
        const char *s[14];
        int nf = charge_fields(&c->ch[j], f, s);
        chain__put(&c->recs, "C", 1);
        chain__put(&c->json, j ? ",[" : "[", j ? 2 : 1);
        for (int x = 0; x < nf; x++) {
            chain__fs(&c->recs, s[x]);
            if (x)
                chain__put(&c->json, ",", 1);
            if (s[x])
                chain__json_str(&c->json, s[x]);
            else
                chain__put(&c->json, "null", 4);
        }
        chain__put(&c->recs, "\n", 1);
        chain__put(&c->json, "]", 1);
    }
    chain__put(&c->json, "]", 1);
}

static void prep_clear(gm_chain *c)
{
    for (size_t k = 0; k < c->n_prep; k++)
        free(c->prep[k].json);
    c->n_prep = 0;
    c->prep_batch = NULL;
}

int gm_chain_prepare(gm_chain *c, const gm_ledger_batch *b, const unsigned char *dup, char *err,
                     size_t err_len)
{
    prep_clear(c);
    if (b->n_pos == 0 || gm_chain__bench_off)
        return 0;
    int64_t t0 = gm_mono_us();
    if (c->prep_cap < b->n_pos) {
        free(c->prep);
        c->prep = gm_xcalloc(b->n_pos, sizeof *c->prep);
        c->prep_cap = b->n_pos;
    }
    size_t lowest = 0;
    for (size_t k = 1; k < b->n_pos; k++)
        if (b->pos[k].partition < b->pos[lowest].partition)
            lowest = k;
    int rc = 0;
    size_t n_dup = 0;
    for (size_t k = 0; rc == 0 && k < b->n_pos; k++) {
        int32_t p = b->pos[k].partition;
        chain__part *h = &c->prep[k];
        memset(h, 0, sizeof *h);
        c->n_prep = k + 1;
        c->recs.n = 0;
        h->first = INT64_MAX;
        for (size_t i = 0; i < b->n_rows; i++) {
            const gm_ledger_row *row = &b->rows[i];
            if (row->partition != p)
                continue;
            if (row->offset < h->first)
                h->first = row->offset;
            if (dup[i]) { /* 1: the same event again, 2: a conflict (ledger/batch.c) */
                if (dup[i] == 2)
                    h->conflicts++;
                else
                    h->duplicates++;
                continue;
            }
            h->rows++;
            const gm_event *ev = row->ev;
            int64_t q[CHAIN_DIMS] = {ev->input_tokens, ev->cached_tokens, ev->output_tokens,
                                     ev->gpu_us};
            for (int d = 0; d < CHAIN_DIMS; d++) {
                h->qty[d] += q[d];
                h->amount_e18[d] += row->amount_e18[d]; /* bounded by gm.charges' sums */
            }
            put_row(&c->recs, row);
        }
        n_dup += (size_t)(h->duplicates + h->conflicts);
        for (size_t i = 0; i < b->n_rejects; i++) {
            const gm_ledger_reject *rj = &b->rejects[i];
            if (rj->partition != p)
                continue;
            if (rj->offset < h->first)
                h->first = rj->offset;
            h->rejects++;
            put_reject(&c->recs, rj);
        }
        for (size_t i = 0; i < b->n_rows; i++)
            if (dup[i] == 2 && b->rows[i].partition == p)
                put_conflict(c, &c->recs, &b->rows[i], i);
        /* The batch's charge changes go with its lowest partition's entry. */
        size_t n_ch = 0;
        if (k == lowest && (rc = sum_charges(c, b, dup, &n_ch, err, err_len)))
            break;
        put_charges(c, n_ch);
        h->json = gm_xstrdup(c->json.p);
        unsigned char md[32];
        if (!EVP_Digest(c->recs.p ? c->recs.p : "", c->recs.n, md, NULL, EVP_sha256(), NULL))
            abort(); /* libcrypto without SHA-256 is a broken installation */
        chain__hex(md, h->records_hex);
    }
    if (rc) {
        prep_clear(c);
        return rc;
    }
    c->prep_batch = b;
    c->prep_dups = n_dup;
    c->prep_rows = b->n_rows;
    __atomic_add_fetch(&gm_chain__prep_us, gm_mono_us() - t0, __ATOMIC_RELAXED);
    return 0;
}

int gm_chain_record_batch(gm_chain *c, PGconn *conn, const gm_ledger_batch *b,
                          const unsigned char *dup, char *err, size_t err_len)
{
    if (b->n_pos == 0 || gm_chain__bench_off)
        return 0;
    /* Prepared during the ledger COPY, unless the batch or its duplicates changed since (the
     * slow path marks more rows as duplicates). */
    size_t n_dup = 0;
    for (size_t i = 0; i < b->n_rows; i++)
        n_dup += dup[i] != 0;
    int rc = 0;
    if (c->prep_batch != b || c->n_prep != b->n_pos || c->prep_dups != n_dup ||
        c->prep_rows != b->n_rows)
        if ((rc = gm_chain_prepare(c, b, dup, err, err_len)))
            return rc;
    int64_t t0 = gm_mono_us();
    int64_t *head_seq = gm_xcalloc(b->n_pos, sizeof *head_seq);
    char(*head_hex)[65] = gm_xcalloc(b->n_pos, sizeof *head_hex);
    chain__val *vals = gm_xcalloc(b->n_pos, sizeof *vals);
    rc = read_heads(conn, b, head_seq, head_hex, err, err_len);
    for (size_t k = 0; rc == 0 && k < b->n_pos; k++) {
        const gm_ledger_pos *pos = &b->pos[k];
        const chain__part *pp = &c->prep[k];
        int32_t p = pos->partition;
        chain__head h = {b->group_id, b->topic, p,           head_seq[k] + 1, pos->expected,
                         pos->next,   pp->rows, pp->rejects, pp->duplicates,  pp->conflicts,
                         {0},         {0},      head_hex[k], pp->records_hex};
        memcpy(h.qty, pp->qty, sizeof h.qty);
        memcpy(h.amount_e18, pp->amount_e18, sizeof h.amount_e18);
        if (h.from_offset < 0)
            h.from_offset = pp->first; /* the partition's first batch: from its first message */
        c->head.n = 0;
        chain__header(&c->head, &h);
        unsigned char md[32];
        if (!EVP_Digest(c->head.p, c->head.n, md, NULL, EVP_sha256(), NULL))
            abort();
        /* One multi-row INSERT for every partition of the batch: one round trip. */
        chain__val *v = &vals[k];
        snprintf(v->s[0], 64, "%d", p);
        snprintf(v->s[1], 64, "%lld", (long long)h.seq);
        snprintf(v->s[2], 64, "%lld", (long long)h.from_offset);
        snprintf(v->s[3], 64, "%lld", (long long)h.next_offset);
        snprintf(v->s[4], 64, "%lld", (long long)h.rows);
        snprintf(v->s[5], 64, "%lld", (long long)h.rejects);
        snprintf(v->s[6], 64, "%lld", (long long)h.duplicates);
        snprintf(v->s[7], 64, "%lld", (long long)h.conflicts);
        for (int d = 0; d < CHAIN_DIMS; d++) {
            chain__dec_text(h.qty[d], 0, v->s[8 + d], 64);
            chain__dec_text(h.amount_e18[d], 18, v->s[12 + d], 64);
        }
        char hex[65];
        chain__hex(md, hex);
        snprintf(v->s[16], sizeof v->s[16], "\\x%s", head_hex[k]);
        snprintf(v->s[17], sizeof v->s[17], "\\x%s", hex);
        v->json = gm_xstrdup(pp->json);
    }
    if (rc == 0) {
        size_t np = 2 + b->n_pos * 19;
        const char **params = gm_xcalloc(np, sizeof *params);
        params[0] = b->group_id;
        params[1] = b->topic;
        chain__buf q = {0};
        const char *ins = "INSERT INTO gm.chain_batches (group_id, topic, partition, seq,"
                          " from_offset, next_offset, rows, rejects, duplicates, conflicts,"
                          " input_tokens,"
                          " cached_tokens, output_tokens, gpu_us, amount_input, amount_cached,"
                          " amount_output, amount_gpu, prev_digest, digest, charges) VALUES ";
        chain__put(&q, ins, strlen(ins));
        for (size_t k = 0; k < b->n_pos; k++) {
            chain__put(&q, k ? ", ($1, $2" : "($1, $2", k ? 9 : 7);
            for (int x = 0; x < 19; x++) {
                size_t at = 2 + k * 19 + (size_t)x;
                params[at] = x < 18 ? vals[k].s[x] : vals[k].json;
                char t[24];
                int n = snprintf(t, sizeof t, ", $%zu", at + 1);
                chain__put(&q, t, (size_t)n);
            }
            chain__put(&q, ")", 1);
        }
        PGresult *r = PQexecParams(conn, q.p, (int)np, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = gm_pg_fail(conn, r, "recording the batch digests", err, err_len);
        PQclear(r);
        free(q.p);
        free(params);
    }
    for (size_t k = 0; k < b->n_pos; k++)
        free(vals[k].json);
    free(vals);
    prep_clear(c);
    free(head_seq);
    free(head_hex);
    __atomic_add_fetch(&gm_chain__busy_us, gm_mono_us() - t0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&gm_chain__batches, 1, __ATOMIC_RELAXED);
    return rc;
}

/* ---- Replays --------------------------------------------------------------------------------*/
static PGresult *replay_q(PGconn *conn, const char *sql, int n, const char *const *p,
                          const char *what, char *err, size_t err_len, int *rc)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        *rc = gm_pg_fail(conn, r, what, err, err_len);
        PQclear(r);
        return NULL;
    }
    return r;
}

int gm_chain_record_replay(gm_chain *c, PGconn *conn, const gm_ledger_batch *b,
                           const unsigned char *dup, char *err, size_t err_len)
{
    if (b->n_rows == 0 || gm_chain__bench_off)
        return 0;
    size_t n = b->n_rows;
    size_t *ord = gm_xmalloc(n * sizeof *ord);
    for (size_t i = 0; i < n; i++) { /* (partition, offset) order; replays come sorted */
        size_t j = i;
        while (j > 0 && (b->rows[ord[j - 1]].partition > b->rows[i].partition ||
                         (b->rows[ord[j - 1]].partition == b->rows[i].partition &&
                          b->rows[ord[j - 1]].offset > b->rows[i].offset))) {
            ord[j] = ord[j - 1];
            j--;
        }
        ord[j] = i;
    }
    chain__buf parts = {0}, offs = {0};
    chain__put(&parts, "{", 1);
    chain__put(&offs, "{", 1);
    int64_t rows = 0, dups = 0, conflicts = 0;
    for (size_t k = 0; k < n; k++) {
        const gm_ledger_row *row = &b->rows[ord[k]];
        char t[32];
        int m = snprintf(t, sizeof t, "%s%d", k ? "," : "", row->partition);
        chain__put(&parts, t, (size_t)m);
        m = snprintf(t, sizeof t, "%s%lld", k ? "," : "", (long long)row->offset);
        chain__put(&offs, t, (size_t)m);
        rows += dup[ord[k]] == 0;
        dups += dup[ord[k]] == 1;
        conflicts += dup[ord[k]] == 2;
    }
    chain__put(&parts, "}", 1);
    chain__put(&offs, "}", 1);
    int rc = 0;
    int64_t seq = 1;
    char prev[65];
    memset(prev, '0', 64);
    prev[64] = '\0';
    /* one appender at a time (the chain is global); taken last, released at COMMIT */
    PGresult *r = replay_q(conn, "SELECT pg_advisory_xact_lock(hashtext('gm.chain_replays'))", 0,
                           NULL, "locking the replay chain", err, err_len, &rc);
    PQclear(r);
    if (rc == 0 &&
        (r = replay_q(conn,
                      "SELECT seq, encode(digest, 'hex') FROM gm.chain_replays ORDER BY seq DESC"
                      " LIMIT 1",
                      0, NULL, "reading the replay chain's head", err, err_len, &rc))) {
        if (PQntuples(r) == 1) {
            seq = atoll(PQgetvalue(r, 0, 0)) + 1;
            snprintf(prev, sizeof prev, "%s", PQgetvalue(r, 0, 1));
        }
        PQclear(r);
    }
    const char *mp[3] = {b->topic, parts.p, offs.p};
    if (rc == 0 &&
        (r = replay_q(conn,
                      "SELECT r.replay_outcome, r.replayed_kafka_topic,"
                      " r.replayed_kafka_partition, r.replayed_kafka_offset"
                      " FROM unnest($2::integer[], $3::bigint[]) WITH ORDINALITY AS u(part, off, n)"
                      " LEFT JOIN gm.rejected_events r ON r.kafka_topic = $1"
                      " AND r.kafka_partition = u.part AND r.kafka_offset = u.off ORDER BY u.n",
                      3, mp, "reading the replay marks", err, err_len, &rc))) {
        if (PQntuples(r) != (int)n)
            rc = gm_fail(err, err_len, GM_EDB, "replay chain: %d marks for %zu rejects",
                         PQntuples(r), n);
        c->recs.n = 0;
        for (size_t k = 0; rc == 0 && k < n; k++) {
            const gm_ledger_row *row = &b->rows[ord[k]];
            int i = (int)k;
            chain__put(&c->recs, "M", 1);
            chain__fi(&c->recs, row->partition);
            chain__fi(&c->recs, row->offset);
            for (int x = 0; x < 4; x++)
                chain__fs(&c->recs, PQgetisnull(r, i, x) ? NULL : PQgetvalue(r, i, x));
            chain__put(&c->recs, "\n", 1);
            if (dup[ord[k]] == 0)
                put_row(&c->recs, row);
            else if (dup[ord[k]] == 2)
                put_conflict(c, &c->recs, row, ord[k]);
        }
        PQclear(r);
    }
    size_t n_ch = 0;
    if (rc == 0 && (rc = sum_charges(c, b, dup, &n_ch, err, err_len)) == 0) {
        put_charges(c, n_ch);
        unsigned char md[32];
        char rec_hex[65], hex[65];
        if (!EVP_Digest(c->recs.p ? c->recs.p : "", c->recs.n, md, NULL, EVP_sha256(), NULL))
            abort();
        chain__hex(md, rec_hex);
        c->head.n = 0;
        chain__replay_header(&c->head, b->topic, seq, rows, dups, conflicts, prev, rec_hex);
        if (!EVP_Digest(c->head.p, c->head.n, md, NULL, EVP_sha256(), NULL))
            abort();
        chain__hex(md, hex);
        char s_seq[24], s_rows[24], s_dups[24], s_cf[24], s_prev[72], s_dig[72];
        snprintf(s_seq, sizeof s_seq, "%lld", (long long)seq);
        snprintf(s_rows, sizeof s_rows, "%lld", (long long)rows);
        snprintf(s_dups, sizeof s_dups, "%lld", (long long)dups);
        snprintf(s_cf, sizeof s_cf, "%lld", (long long)conflicts);
        snprintf(s_prev, sizeof s_prev, "\\x%s", prev);
        snprintf(s_dig, sizeof s_dig, "\\x%s", hex);
        const char *ip[10] = {s_seq,  b->topic, parts.p,   offs.p, s_rows,
                              s_dups, s_cf,     c->json.p, s_prev, s_dig};
        r = replay_q(conn,
                     "INSERT INTO gm.chain_replays (seq, topic, partitions, offsets, rows,"
                     " duplicates, conflicts, charges, prev_digest, digest) VALUES ($1, $2, $3,"
                     " $4, $5, $6, $7, $8, $9, $10)",
                     10, ip, "recording the replay's digest", err, err_len, &rc);
        PQclear(r);
    }
    free(parts.p);
    free(offs.p);
    free(ord);
    return rc;
}
