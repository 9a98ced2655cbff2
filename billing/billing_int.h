/* Internals shared by the billing files: SQL helpers, strict readers of PostgreSQL text, the
 * invoice columns and the draft computation used by finalize, close, re-rating and check. */
#ifndef GM_BILLING_INT_H
#define GM_BILLING_INT_H

#include "gm_billing.h"
#include "gm_ledger.h"

#define BILLING_US(x) "coalesce((extract(epoch FROM " x ") * 1000000)::bigint, 0)"

/* A reader of result text that remembers the first value that is not what it must be
 * (instead of reading it as 0): callers check billing__rd_fail once after reading a row. */
typedef struct {
    bool bad;
    char why[256];
} billing__rd;

int64_t billing__i64(billing__rd *rd, const PGresult *r, int row, int col);
gm_i128 billing__int(billing__rd *rd, const PGresult *r, int row, int col);   /* NULL -> 0 */
gm_i128 billing__e18(billing__rd *rd, const PGresult *r, int row, int col);   /* NULL -> 0 */
int64_t billing__price(billing__rd *rd, const PGresult *r, int row, int col); /* NULL -> 0 */
/* GM_ECORRUPT naming what was read, or 0. */
int billing__rd_fail(const billing__rd *rd, const char *what, char *err, size_t err_len);

int billing__dbfail(PGconn *db, const PGresult *r, const char *what, char *err, size_t err_len);
PGresult *billing__q(PGconn *db, const char *sql, int n, const char *const *params, int want,
                     const char *what, char *err, size_t err_len, int *rc);
int billing__exec(PGconn *db, const char *sql, int n, const char *const *p, const char *what,
                  char *err, size_t err_len);
void billing__time(int64_t us, char buf[40]);

gm_billing_line *billing__line_push(gm_billing_invoice *inv, size_t *cap);

/* The rating invoice of a tenant's month from its (rolled-up) charges, priced by ctx->book. */
int billing__rate_period(const gm_billing_ctx *ctx, const char *tenant, int64_t start_us,
                         const gm_invoice_opts *opts, gm_invoice **out, char *err, size_t err_len);

typedef struct {
    int64_t start_us;
    gm_i128 events, amount_e18;
    int64_t rerating_seq;
} billing__period;

/* Computes a draft's lines and totals into inv (row fields loaded); the periods that its
 * adjustment lines correct go to *adj (for snapshots). */
int billing__compute_live(const gm_billing_ctx *ctx, gm_billing_invoice *inv, billing__period **adj,
                          size_t *n_adj, char *err, size_t err_len);

/* Rows of gm.invoices in INVOICE_COLS order. */
extern const char billing__invoice_cols[];
int billing__row_to_invoice(const PGresult *r, int i, gm_billing_invoice *inv, char *err,
                            size_t err_len);
int billing__load_row(PGconn *db, const char *invoice_id, bool lock, gm_billing_invoice **out,
                      char *err, size_t err_len);
int billing__load_lines(PGconn *db, gm_billing_invoice *inv, char *err, size_t err_len);

/* Lines billed for period q of a tenant (own non-adjustment lines of invoice qid, when not
 * NULL, plus every adjustment line naming q on a finalized or void invoice), one row per line
 * key: kind, dimension, model, site_tier, card_version, band, quantity, amount_exact,
 * amount_minor, unit_price. */
PGresult *billing__billed_lines(PGconn *db, const char *tenant, const char *qid, int64_t q_us,
                                char *err, size_t err_len, int *rc);

/* Draft cache (cache.c). */
bool billing__cache_get(gm_billing_cache *c, const char *invoice_id, int64_t marker, uint64_t gen,
                        gm_billing_invoice *into);
void billing__cache_put(gm_billing_cache *c, const char *invoice_id, int64_t marker, uint64_t gen,
                        const gm_billing_invoice *from);

#endif /* GM_BILLING_INT_H */
