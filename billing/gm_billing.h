/* Billing: the invoice model and its lifecycle over PostgreSQL. Drafts from the charges
 * (through the rating engine), commitments for every month of an active contract (also
 * without usage), late-event and backfill adjustments, finalize, void, credit notes, the
 * month close and re-rating. Used by the REST API (api/, thin HTTP adapters), the command
 * line (gridmeter invoice|close|rerate) and `gridmeter quote` (gm_billing_from_rating).
 *
 * Every call takes its context: a libpq connection, the rating book, the clock (now_us, an
 * instant the caller read from gm_now_us(); billing never reads the wall clock) and the grace
 * window. Invariants (B1..B11) are numbered in billing.c and check.c and checked by
 * gm_billing_check(), which the tests call after every operation.
 *
 * Units on lines: quantity and unit price are always in the same unit: tokens for token
 * dimensions, GPU-seconds for dimension gpu (quantity shown with 6 decimals: the metered
 * GPU-microseconds / 10^6); the metered integer stays beside it (qty, metered_unit). */
#ifndef GM_BILLING_H
#define GM_BILLING_H

#include "gm_common.h"
#include "gm_rating.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>

typedef struct gm_billing_cache gm_billing_cache;

typedef struct {
    PGconn *db;
    const gm_rating_book *book;
    uint64_t book_generation; /* changes whenever the book does (draft cache key); 0: none */
    int64_t now_us;           /* the caller's instant (gm_now_us()) */
    int grace_hours;          /* a month is finalized from its end + grace_hours */
    gm_billing_cache *cache;  /* optional: computed drafts, keyed by change markers */
} gm_billing_ctx;

typedef struct {
    int line_no;
    char kind[16];          /* usage, tier, discount, commitment, credit, adjustment */
    char adjusted_kind[16]; /* adjustment lines: kind of the corrected line */
    char description[192];
    char dimension[16]; /* "" for money lines */
    char *model;        /* "" for money lines */
    char *site_tier;
    int64_t card_version;
    int band;
    gm_i128 qty; /* metered: tokens, or GPU-microseconds */
    int64_t unit_price_p;
    gm_i128 amount_e18;
    gm_i128 amount_minor;
    gm_i128 discount_minor, credit_minor;
    int64_t corrects_period_us; /* adjustment lines; 0 otherwise */
    char gpu_basis[12]; /* gpu lines: "requests" or "windows" (docs/rating.md); "" otherwise */
    char variant[GM_RATING_VARIANT_MAX]; /* price variant (docs/rating.md); "" for the base */
} gm_billing_line;

typedef struct {
    char invoice_id[64];
    char tenant[136];
    char issuer[24];
    int64_t period_start_us, period_end_us;
    char status[12];
    char number[48];
    char currency[4];
    int minor_units;
    gm_i128 total_minor;
    gm_i128 usage_exact_e18;
    gm_i128 credited_minor;
    gm_i128 credit_before_minor, credit_after_minor;
    bool has_credit_before;
    int64_t finalized_at_us, voided_at_us, created_at_us;
    gm_i128 ledger_events, ledger_amount_e18;
    size_t n_lines;
    gm_billing_line *lines;
    bool live; /* computed on read (draft) */
    /* A draft of a month inside a total-over-term commitment (term_commitment): the committed
     * total, the spend in the term through this month (the earlier months recomputed from
     * their charges) and what remains; term_last_month: the commitment line is the true-up.
     * Not stored with finalized invoices (false there). */
    bool has_term, term_last_month;
    gm_i128 term_total_minor, term_spent_minor, term_remaining_minor;
} gm_billing_invoice;

void gm_billing_invoice_free(gm_billing_invoice *inv);
/* Checks one invoice in memory (B1 total = sum of rounded lines, B2 one half-even rounding of
 * usage/tier lines, B3 adjustments name an earlier period, B8 line numbers 1..n). */
int gm_billing_invoice_check(const gm_billing_invoice *inv, char *err, size_t err_len);

/* The GPU-second form of a line's quantity ("25.000000") or the token count; unit is
 * "gpu_second" or "token" (NULL for money lines). */
const char *gm_billing_line_unit(const gm_billing_line *l);
void gm_billing_line_quantity(const gm_billing_line *l, char *buf, size_t len);

/* ---- Without a database: the invoice of one tenant's month from a rating period ----------
 * The one place where rating invoices become billing lines (drafts and `quote`). */
gm_billing_invoice *gm_billing_from_rating(const gm_invoice *g);
cJSON *gm_billing_line_json(const gm_billing_line *l, int minor_units);

/* ---- Reading ----------------------------------------------------------------------------- */
/* Loads an invoice: finalized and void ones with their stored lines, drafts computed live.
 * `visible_to` (a customer's tenant, or NULL for any) is checked BEFORE anything is computed:
 * another tenant's invoice is GM_ENOTFOUND exactly like a missing one. */
int gm_billing_invoice_get(const gm_billing_ctx *ctx, const char *invoice_id,
                           const char *visible_to, gm_billing_invoice **out, char *err,
                           size_t err_len) GM_MUSTCHECK;
/* A tenant's month computed like a draft, without writing any row (spend). */
int gm_billing_compute(const gm_billing_ctx *ctx, const char *tenant, int64_t month_us,
                       gm_billing_invoice **out, char *err, size_t err_len) GM_MUSTCHECK;
/* The draft id of (tenant, month), creating the row when missing. */
int gm_billing_draft_ensure(const gm_billing_ctx *ctx, const char *tenant, int64_t month_us,
                            char *id_out, size_t id_len, char *err, size_t err_len) GM_MUSTCHECK;
/* Draft rows for the month of every tenant with charges in it or an active contract (one
 * imported before the month's end: its commitment is billed also without usage); tenant NULL
 * for all. *created (may be NULL) counts the new rows. */
int gm_billing_drafts_ensure(const gm_billing_ctx *ctx, int64_t month_us, const char *tenant,
                             int *created, char *err, size_t err_len) GM_MUSTCHECK;

typedef struct {
    int64_t period_start_us; /* 0: any, unless has_period */
    bool has_period;         /* period_start_us is a filter even when 0 (1970-01) */
    const char *tenant;      /* NULL: any */
    const char *status;      /* NULL: any */
    bool has_cursor;
    int64_t cursor_period_us;
    char cursor_tenant[136];
    int limit;
    bool with_lines; /* drafts are computed only when true or when a total is wanted */
} gm_billing_filter;
/* One page, newest period first, then tenant; drafts computed live. Cursor text in
 * next_cursor ("" on the last page), made with the caller's cursor maker. */
int gm_billing_list(const gm_billing_ctx *ctx, const gm_billing_filter *f,
                    gm_billing_invoice ***out, size_t *n_out, bool *more, char *err,
                    size_t err_len) GM_MUSTCHECK;

/* Exact charges (events, list amount) of a tenant's [start, end). */
int gm_billing_fingerprint(PGconn *db, const char *tenant, int64_t start_us, int64_t end_us,
                           gm_i128 *events, gm_i128 *amount_e18, char *err,
                           size_t err_len) GM_MUSTCHECK;

/* ---- Changing ---------------------------------------------------------------------------- */
/* Finalizes a draft in one REPEATABLE READ transaction whose instant is ctx->now_us (the
 * grace window and finalized_at use it). GM_ENOTFOUND, GM_ECONFLICT (not a draft, grace open,
 * months out of order: reason in err), GM_EDB. */
int gm_billing_finalize(const gm_billing_ctx *ctx, const char *invoice_id, char *err,
                        size_t err_len) GM_MUSTCHECK;
/* Voids a finalized invoice: a credit note for what is still creditable, then status void,
 * in one transaction. */
int gm_billing_void(const gm_billing_ctx *ctx, const char *invoice_id, const char *reason,
                    char *err, size_t err_len) GM_MUSTCHECK;

typedef struct {
    char credit_note_id[64], number[48], invoice_id[64], tenant[136], currency[4];
    char amount[64], reason[1001];
    int64_t created_at_us;
} gm_billing_credit_note;
/* A credit note of `amount` (decimal text in currency units) on a finalized invoice.
 * GM_EINVAL (amount: not a positive decimal with at most the currency's digits, or more than
 * is creditable; reason in err), GM_ENOTFOUND, GM_ECONFLICT (not finalized). */
int gm_billing_credit_note_create(const gm_billing_ctx *ctx, const char *invoice_id,
                                  const char *amount, const char *reason,
                                  gm_billing_credit_note *out, char *err,
                                  size_t err_len) GM_MUSTCHECK;

/* ---- The month close ----------------------------------------------------------------------
 * Ensures the month's drafts (charges and active contracts), then finalizes, tenant by
 * tenant in name order and each tenant's months in order, every draft of `month` or earlier
 * whose grace window has ended. Idempotent: a finalized invoice is skipped; two closes at
 * once finalize each invoice once (row locks). progress (may be NULL) is called after each
 * invoice. Returns 0 when every draft due was finalized or already final; GM_ECONFLICT when
 * some could not be (counted in failed, reasons logged through progress). */
typedef struct {
    int drafts_created;
    int finalized;
    int already_final;
    int not_due; /* grace window still open */
    int failed;
} gm_billing_close_summary;
typedef void (*gm_billing_progress)(void *arg, int done, int total, const char *invoice_id,
                                    const char *tenant, const char *outcome);
int gm_billing_close(const gm_billing_ctx *ctx, int64_t month_us, gm_billing_progress progress,
                     void *arg, gm_billing_close_summary *sum, char *err,
                     size_t err_len) GM_MUSTCHECK;

/* ---- Re-rating ------------------------------------------------------------------------------
 * Re-prices a month with ctx->book (for example after a backdated card version) and diffs it
 * line by line against what stands: for a finalized month its billed lines (own lines plus
 * adjustment lines naming it), for a draft month the charges as the rater priced them; a
 * line of an earlier correction that no invoice billed yet counts as standing. Applied (not
 * dry_run), one gm.rerating_runs row (who, why, when, totals) and one
 * gm.rerating_corrections row per changed line are appended in one transaction; the ledger
 * and the charges are never rewritten. Drafts price from the book anyway; a finalized month
 * gets adjustment lines naming it on the tenant's next invoice. Re-rating twice changes
 * nothing the second time. */
typedef struct {
    char tenant[136];
    int64_t period_start_us;
    char invoice_id[64];
    char invoice_status[12];
    char currency[4];
    int minor_units;
    char kind[16];
    char dimension[16];
    char model[160];
    char site_tier[64];
    int64_t card_version;
    int band;
    char variant[GM_RATING_VARIANT_MAX];
    gm_i128 qty_before, qty_after;
    int64_t unit_price_p_before, unit_price_p_after;
    gm_i128 amount_e18_before, amount_e18_after;
    gm_i128 amount_minor_before, amount_minor_after;
} gm_billing_rerate_line;

typedef struct {
    int64_t run_id; /* 0 for a dry run */
    int tenants;
    size_t n_lines; /* changed lines only */
    gm_billing_rerate_line *lines;
    gm_i128 delta_e18;
} gm_billing_rerate_result;

int gm_billing_rerate(const gm_billing_ctx *ctx, int64_t month_us, const char *tenant, bool dry_run,
                      const char *requested_by, const char *reason, gm_billing_rerate_result **out,
                      char *err, size_t err_len) GM_MUSTCHECK;
/* The session lock that serializes applied runs of one month (taken before the transaction,
 * so that a run's snapshot sees the runs before it); take false releases it. A caller that
 * runs gm_billing_rerate inside its own open transaction (the API's POST) takes it before
 * beginning that transaction and releases it after the COMMIT or ROLLBACK. */
int gm_billing_rerate_lock(PGconn *db, int64_t month_us, bool take, char *err,
                           size_t err_len) GM_MUSTCHECK;
void gm_billing_rerate_result_free(gm_billing_rerate_result *r);
cJSON *gm_billing_rerate_json(const gm_billing_rerate_result *r, bool dry_run);

/* ---- Renderings (API and CLI) -------------------------------------------------------------- */
cJSON *gm_billing_invoice_json(const gm_billing_invoice *inv, bool with_lines);
/* CSV (RFC 4180, CRLF, a final total row; formula-leading cells neutralized). */
char *gm_billing_invoice_csv(const gm_billing_invoice *inv, size_t *len);
cJSON *gm_billing_credit_note_json(const gm_billing_credit_note *cn);

/* ---- Draft cache ------------------------------------------------------------------------------
 * Thread-safe; an entry is valid while the tenant's change marker (max gm.period_changes.seq
 * of its months up to the draft's) and the book generation are what they were. */
gm_billing_cache *gm_billing_cache_new(size_t slots);
void gm_billing_cache_free(gm_billing_cache *c);

/* ---- Invariants over the database (B1..B11) ---------------------------------------------- */
/* Checks every invoice of `tenant` (NULL: all tenants): stored and live. 0, or GM_ECORRUPT
 * naming the invariant and the invoice. */
int gm_billing_check(const gm_billing_ctx *ctx, const char *tenant, char *err,
                     size_t err_len) GM_MUSTCHECK;

/* Strict parse of a "YYYY-MM" month; false when malformed. */
bool gm_billing_parse_month(const char *s, int64_t *start_us);
void gm_billing_format_month(int64_t us, char out[8]);
/* The tenant id rule of common/gm_ident.h (GM_IDENT_TENANT). */
bool gm_billing_valid_tenant(const char *t);
bool gm_billing_valid_invoice_id(const char *s);

#endif /* GM_BILLING_H */
