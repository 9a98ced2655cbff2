/* ledger internals shared between its files (not part of the public header). */
#ifndef GM_LEDGER_INT_H
#define GM_LEDGER_INT_H

#include "gm_ingest.h"
#include "gm_ledger.h"

/* The ids one compact ledger row refers to (sql/0012: gm.ledger_names, gm.ledger_streams,
 * gm.ledger_pricings). 0: not resolved. */
typedef struct ledger__row_ids {
    int32_t source, tenant, site, model, pricing, stream;
} ledger__row_ids;

/* A cache of those ids. Ids are never reused or deleted, so an entry stays true for ever
 * (also after a rolled-back batch: interning commits on its own, before the batch begins). */
typedef struct ledger__ids ledger__ids;

ledger__ids *ledger__ids_new(void);
void ledger__ids_free(ledger__ids *x);
/* Fills out[i] for rows[0..n). Cache misses cost one round trip for all missing names and
 * one per new topic partition or pricing; they must run outside a transaction (each
 * interning statement commits by itself). */
int ledger__ids_resolve(ledger__ids *x, PGconn *c, const char *topic, const gm_ledger_row *rows,
                        size_t n, ledger__row_ids *out, char *err, size_t err_len) GM_MUSTCHECK;

/* The dimensions of gm.charges, in gm_dim order (rating/gm_rating.h), and a row's quantity
 * in each: output is its non-reasoning part, request is 1 where a per-request fee applies
 * (docs/rating.md "Token kinds and the request fee"). One definition for the charges, the
 * writer's amount check and the chain's charge changes. */
#define LEDGER_DIM_GPU     3
#define LEDGER_DIM_REQUEST 6
extern const char *const ledger__dim_names[GM_LEDGER_DIMS];
static inline void ledger__charge_qty(const gm_ledger_row *row, int64_t qty[GM_LEDGER_DIMS])
{
    const gm_event *ev = row->ev;
    qty[0] = ev->input_tokens;
    qty[1] = ev->cached_tokens;
    qty[2] = ev->output_tokens - ev->reasoning_tokens;
    qty[3] = ev->gpu_us;
    qty[4] = ev->cache_write_tokens;
    qty[5] = ev->reasoning_tokens;
    qty[6] = row->unit_price_p[LEDGER_DIM_REQUEST] ? 1 : 0;
}

/* The row's price variant, "" for standard at the base context (a part of the charges' key,
 * after card_version; the chain's charge changes carry it as a 14th field when not ""). */
static inline const char *ledger__variant(const gm_ledger_row *row)
{
    return row->variant ? row->variant : "";
}

#endif /* GM_LEDGER_INT_H */
