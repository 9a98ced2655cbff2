/* Sets of accepted seq numbers as sorted inclusive ranges: usually one range per source. */
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>

/* Index of the first range whose hi >= seq (n when none). */
static size_t lower_bound(const gm_seqset *s, int64_t seq)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid][1] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool gm_seqset_contains(const gm_seqset *s, int64_t seq)
{
    /* Fast path: the common case is one range and seq just past it. */
    if (s->n && seq > s->r[s->n - 1][1])
        return false;
    size_t i = lower_bound(s, seq);
    return i < s->n && s->r[i][0] <= seq;
}

static void insert_at(gm_seqset *s, size_t i, int64_t lo, int64_t hi)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->r = gm_xrealloc(s->r, s->cap * sizeof *s->r);
    }
    memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
    s->r[i][0] = lo;
    s->r[i][1] = hi;
    s->n++;
}

bool gm_seqset_add(gm_seqset *s, int64_t seq)
{
    if (s->n && s->r[s->n - 1][1] == seq - 1) { /* the usual append */
        s->r[s->n - 1][1] = seq;
        return true;
    }
    size_t i = lower_bound(s, seq);
    if (i < s->n && s->r[i][0] <= seq)
        return false;
    bool join_prev = i > 0 && s->r[i - 1][1] == seq - 1;
    bool join_next = i < s->n && s->r[i][0] == seq + 1;
    if (join_prev && join_next) {
        s->r[i - 1][1] = s->r[i][1];
        memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof *s->r);
        s->n--;
    } else if (join_prev) {
        s->r[i - 1][1] = seq;
    } else if (join_next) {
        s->r[i][0] = seq;
    } else {
        insert_at(s, i, seq, seq);
    }
    return true;
}

void gm_seqset_clear(gm_seqset *s)
{
    free(s->r);
    memset(s, 0, sizeof *s);
}

int gm_seqset_parse(gm_seqset *s, const char *text)
{
    s->n = 0;
    const char *p = text;
    if (*p++ != '{')
        return GM_EINVAL;
    while (*p && *p != '}') {
        long long lo, hi;
        int used = 0;
        if (sscanf(p, "[%lld,%lld)%n", &lo, &hi, &used) != 2 || used == 0 || hi <= lo)
            return GM_EINVAL;
        p += used;
        if (s->n && lo <= s->r[s->n - 1][1] + 1)
            return GM_EINVAL; /* PostgreSQL's canonical form is sorted and merged */
        insert_at(s, s->n, lo, hi - 1);
        if (*p == ',')
            p++;
    }
    return *p == '}' && p[1] == '\0' ? 0 : GM_EINVAL;
}

size_t gm_seqset_format(const gm_seqset *s, char **buf, size_t *cap)
{
    size_t need = 3 + s->n * 44;
    if (*cap < need) {
        *buf = gm_xrealloc(*buf, need);
        *cap = need;
    }
    size_t w = 0;
    (*buf)[w++] = '{';
    for (size_t i = 0; i < s->n; i++)
        w += (size_t)snprintf(*buf + w, *cap - w, "%s[%lld,%lld)", i ? "," : "",
                              (long long)s->r[i][0], (long long)s->r[i][1] + 1);
    (*buf)[w++] = '}';
    (*buf)[w] = '\0';
    return w;
}
