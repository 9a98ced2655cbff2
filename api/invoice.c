/* Invoices over HTTP: thin adapters from the api's server state (rating book, grace hours,
 * draft cache, the request's connection) to billing/ (gm_billing.h), which owns the invoice
 * model, drafts, finalization and the renderings. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

const gm_billing_ctx *api__billing_begin(api_server *s, PGconn *db, gm_billing_ctx *ctx, char *err,
                                         size_t err_len)
{
    const gm_rating_book *book = api__book_acquire(s, db, err, err_len);
    if (!book)
        return NULL;
    *ctx = (gm_billing_ctx){db,
                            book,
                            api__book_generation(s),
                            gm_now_us(),
                            api__config(s)->grace_hours,
                            api__drafts(s)};
    return ctx;
}

void api__billing_end(api_server *s)
{
    api__book_release(s);
}

void api__invoice_free(api_invoice *inv)
{
    gm_billing_invoice_free(inv);
}

int api__period_fingerprint(PGconn *db, const char *tenant, int64_t start_us, int64_t end_us,
                            gm_i128 *events, gm_i128 *amount_e18, char *err, size_t err_len)
{
    return gm_billing_fingerprint(db, tenant, start_us, end_us, events, amount_e18, err, err_len);
}

int api__invoice_get(api_server *s, PGconn *db, const char *invoice_id, const char *visible_to,
                     api_invoice **out, char *err, size_t err_len)
{
    gm_billing_ctx ctx;
    if (!api__billing_begin(s, db, &ctx, err, err_len))
        return GM_EDB;
    int rc = gm_billing_invoice_get(&ctx, invoice_id, visible_to, out, err, err_len);
    api__billing_end(s);
    return rc;
}

int api__invoice_ensure_period(api_server *s, PGconn *db, int64_t period_start_us,
                               const char *tenant, char *err, size_t err_len)
{
    gm_billing_ctx ctx = {db, NULL, 0, gm_now_us(), api__config(s)->grace_hours, NULL};
    return gm_billing_drafts_ensure(&ctx, period_start_us, tenant, NULL, err, err_len);
}

cJSON *api__invoice_json(const api_invoice *inv, bool with_lines)
{
    return gm_billing_invoice_json(inv, with_lines);
}

char *api__invoice_csv(const api_invoice *inv, size_t *len)
{
    return gm_billing_invoice_csv(inv, len);
}

int api__invoice_list(api_server *s, PGconn *db, const api_invoice_filter *f, api_invoice ***out,
                      size_t *n_out, char *next_cursor, size_t cursor_len, char *err,
                      size_t err_len)
{
    next_cursor[0] = 0;
    gm_billing_ctx ctx;
    if (!api__billing_begin(s, db, &ctx, err, err_len))
        return GM_EDB;
    bool more = false;
    int rc = gm_billing_list(&ctx, f, out, n_out, &more, err, err_len);
    api__billing_end(s);
    if (!rc && more && *n_out)
        api__cursor_make((*out)[*n_out - 1]->period_start_us, (*out)[*n_out - 1]->tenant,
                         next_cursor, cursor_len);
    return rc;
}

int api__invoice_compute(api_server *s, PGconn *db, const char *tenant, int64_t period_start_us,
                         api_invoice **out, char *err, size_t err_len)
{
    gm_billing_ctx ctx;
    if (!api__billing_begin(s, db, &ctx, err, err_len))
        return GM_EDB;
    ctx.cache = NULL; /* no invoice id: nothing to key a cache entry on */
    int rc = gm_billing_compute(&ctx, tenant, period_start_us, out, err, err_len);
    api__billing_end(s);
    return rc;
}

int api__invoice_finalize(api_server *s, PGconn *db, const char *invoice_id, char *err,
                          size_t err_len)
{
    gm_billing_ctx ctx;
    if (!api__billing_begin(s, db, &ctx, err, err_len))
        return GM_EDB;
    /* One instant (ctx.now_us) decides the grace window and stamps finalized_at. */
    int rc = gm_billing_finalize(&ctx, invoice_id, err, err_len);
    api__billing_end(s);
    return rc;
}
