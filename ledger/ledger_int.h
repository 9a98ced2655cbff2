/* ledger internals shared between its files (not part of the public header). */
#ifndef GM_LEDGER_INT_H
#define GM_LEDGER_INT_H

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

#endif /* GM_LEDGER_INT_H */
