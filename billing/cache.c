/* Draft cache: computed drafts kept per invoice id under the tenant's change marker and the
 * rating book generation, so that a draft is recomputed only when its month (or an earlier
 * one it adjusts, or the book) changed. Fixed slots (hash of the id), one mutex. */
#include "billing_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char invoice_id[64];
    int64_t marker;
    uint64_t gen;
    gm_billing_invoice *inv; /* a deep copy */
} slot;

struct gm_billing_cache {
    pthread_mutex_t mu;
    size_t n;
    slot *slots;
};

gm_billing_cache *gm_billing_cache_new(size_t slots)
{
    gm_billing_cache *c = gm_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->n = slots ? slots : 1;
    c->slots = gm_xcalloc(c->n, sizeof *c->slots);
    return c;
}

void gm_billing_cache_free(gm_billing_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        gm_billing_invoice_free(c->slots[i].inv);
    free(c->slots);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static slot *slot_of(gm_billing_cache *c, const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return &c->slots[h % c->n];
}

/* Copies the computed part (lines, totals, credit) of `from` into `into`. */
static void copy_computed(gm_billing_invoice *into, const gm_billing_invoice *from)
{
    for (size_t i = 0; i < into->n_lines; i++) {
        free(into->lines[i].model);
        free(into->lines[i].site_tier);
    }
    free(into->lines);
    into->n_lines = from->n_lines;
    into->lines = from->n_lines ? gm_xmalloc(from->n_lines * sizeof *from->lines) : NULL;
    for (size_t i = 0; i < from->n_lines; i++) {
        into->lines[i] = from->lines[i];
        into->lines[i].model = gm_xstrdup(from->lines[i].model);
        into->lines[i].site_tier = gm_xstrdup(from->lines[i].site_tier);
    }
    memcpy(into->currency, from->currency, sizeof into->currency);
    into->minor_units = from->minor_units;
    into->total_minor = from->total_minor;
    into->usage_exact_e18 = from->usage_exact_e18;
    into->credit_before_minor = from->credit_before_minor;
    into->credit_after_minor = from->credit_after_minor;
    into->has_credit_before = from->has_credit_before;
    into->has_term = from->has_term;
    into->term_last_month = from->term_last_month;
    into->term_total_minor = from->term_total_minor;
    into->term_spent_minor = from->term_spent_minor;
    into->term_remaining_minor = from->term_remaining_minor;
    into->live = from->live;
}

bool billing__cache_get(gm_billing_cache *c, const char *invoice_id, int64_t marker, uint64_t gen,
                        gm_billing_invoice *into)
{
    pthread_mutex_lock(&c->mu);
    slot *s = slot_of(c, invoice_id);
    bool hit = s->inv && !strcmp(s->invoice_id, invoice_id) && s->marker == marker && s->gen == gen;
    if (hit)
        copy_computed(into, s->inv);
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void billing__cache_put(gm_billing_cache *c, const char *invoice_id, int64_t marker, uint64_t gen,
                        const gm_billing_invoice *from)
{
    gm_billing_invoice *copy = gm_xcalloc(1, sizeof *copy);
    copy_computed(copy, from);
    pthread_mutex_lock(&c->mu);
    slot *s = slot_of(c, invoice_id);
    gm_billing_invoice *old = s->inv;
    snprintf(s->invoice_id, sizeof s->invoice_id, "%s", invoice_id);
    s->marker = marker;
    s->gen = gen;
    s->inv = copy;
    pthread_mutex_unlock(&c->mu);
    gm_billing_invoice_free(old);
}
