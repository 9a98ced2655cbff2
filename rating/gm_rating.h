/* Rating engine: versioned rate cards, tenant contracts, exact per-event prices, invoice
 * lines (tiers, discounts, commitments, prepaid credits, one rounding per line) and
 * re-rating diffs. A pure library: no I/O, no Kafka, no SQL, no floating point.
 *
 * Money (see docs/rating.md, "Money"):
 *   - quantities are integers: tokens, or GPU-microseconds (`gpu_us`);
 *   - a price `price_p` is an exact decimal held as an integer count of 10^-12 currency
 *     units per priced unit (per token; per GPU-second);
 *   - an exact amount `amount_e18` is a gm_i128 count of 10^-18 currency units:
 *     tokens: qty * price_p * 10^6;  GPU: gpu_us * price_p  (1 us = 10^-6 s);
 *   - an amount in the currency's minor unit (`_minor`, cents for USD, yen for JPY, fils
 *     for KWD) comes from exactly one rounding per invoice line, half to even, and the
 *     exact amount is kept beside it. The invoice total is the sum of its rounded lines.
 *   - overflow is GM_ERANGE with a reason, never a wrap.
 *
 * Threads: a book is built (add_card, add_contract) by one thread; afterwards it is
 * read-only and gm_rating_price_event() may be called from any number of threads at once.
 * A book must not change while periods or invoices made from it are alive.
 */
#ifndef GM_RATING_H
#define GM_RATING_H

#include "gm_common.h"

/* ---- Dimensions ------------------------------------------------------------------------ */
/* The first four are the original dimensions; the next three came with usage revision 1.1
 * (docs/rating.md, "Token kinds and the request fee"):
 *   GM_DIM_CACHE_WRITE  prompt tokens written into the cache (the event's cache_write_tokens)
 *   GM_DIM_REASONING    reasoning tokens (the event's reasoning_tokens, a part of its output;
 *                       GM_DIM_OUTPUT then holds output_tokens - reasoning_tokens)
 *   GM_DIM_REQUEST      requests (1 per usage event), for a per-request fee
 * Use gm_rating_usage_tokens() to fill the quantities from an event's fields. */
typedef enum {
    GM_DIM_INPUT = 0,
    GM_DIM_CACHED,
    GM_DIM_OUTPUT,
    GM_DIM_GPU,
    GM_DIM_CACHE_WRITE,
    GM_DIM_REASONING,
    GM_DIM_REQUEST,
    GM_DIM_COUNT
} gm_dim;
#define GM_DIM_LEGACY_COUNT 4 /* input, cached, output, gpu: required on every card entry */

/* "input", "cached", "output", "gpu", "cache_write", "reasoning", "request"; "?" else. */
const char *gm_dim_name(gm_dim d);
/* The metered unit of a dimension: "token", "gpu_us" or "request". */
const char *gm_dim_unit(gm_dim d);

/* Fills qty[GM_DIM_COUNT] from a usage event's fields: the output dimension gets the
 * non-reasoning part (output - reasoning), so that no token is priced twice; one request.
 * The caller has checked reasoning <= output (the event decoder refuses more). */
static inline void gm_rating_usage_tokens(int64_t qty[], int64_t input, int64_t cached,
                                          int64_t cache_write, int64_t output, int64_t reasoning,
                                          int64_t gpu_us)
{
    qty[GM_DIM_INPUT] = input;
    qty[GM_DIM_CACHED] = cached;
    qty[GM_DIM_OUTPUT] = output - reasoning;
    qty[GM_DIM_GPU] = gpu_us;
    qty[GM_DIM_CACHE_WRITE] = cache_write;
    qty[GM_DIM_REASONING] = reasoning;
    qty[GM_DIM_REQUEST] = 1;
}

/* ---- Currencies ------------------------------------------------------------------------
 * ISO 4217 code -> minor-unit exponent (USD 2, EUR 2, JPY 0, KWD 3, BHD 3, ...). Returns
 * the exponent, or -1 for a code the built-in table does not know (a card or contract
 * then states "minor_units" itself). */
int gm_rating_currency_minor_units(const char *code);

/* ---- Parsed rate cards and contracts (for validation and import) ------------------------
 * A card is one version of a price list; see docs/rating.md for the JSON format. Parsing
 * validates everything that one document can show; errors name the field path and the
 * rule, e.g. `prices.llama-3.1-70b.output.per_1m_tokens: must be a decimal string with at
 * most 12 fraction digits per token (6 per 1M tokens), got "0.1234567890123"`. */
typedef struct gm_rating_card gm_rating_card;
typedef struct gm_rating_contract gm_rating_contract;

#define GM_RATING_NO_END INT64_MAX /* valid_until_us of an open-ended card */

typedef struct {
    const char *card_id;
    int64_t version;
    int64_t valid_from_us;  /* inclusive */
    int64_t valid_until_us; /* exclusive; GM_RATING_NO_END when open-ended */
    char currency[4];
    int minor_units;
    bool reject_unknown_models; /* false: the "default" entry prices unknown models */
    bool is_default_card;       /* prices tenants without a contract */
    size_t n_models;            /* named models, the "default" entry not counted */
    size_t n_site_tiers;
    size_t n_sites;
    const char *default_site_tier; /* tier of sites the card does not list */
} gm_rating_card_info;

/* One effective price of a card: model x site tier x dimension (after tier multipliers and
 * tier prices). model is "default" for the default entry. */
typedef struct {
    const char *model;
    const char *site_tier;
    gm_dim dim;
    int64_t price_p;
} gm_rating_price_row;

typedef struct {
    const char *site;
    const char *site_tier;
} gm_rating_site_row;

/* Parses and validates one card. On success *out owns everything and must be freed with
 * gm_rating_card_free(). */
int gm_rating_card_parse(const char *json, size_t len, gm_rating_card **out, char *err,
                         size_t err_len) GM_MUSTCHECK;
void gm_rating_card_free(gm_rating_card *card);
/* The info's strings (card_id, default_site_tier) belong to the card: valid until
 * gm_rating_card_free(); copy them to keep them longer. */
void gm_rating_card_get_info(const gm_rating_card *card, gm_rating_card_info *out);
/* Rows valid while the card lives, in a stable order (model, tier, dimension). */
size_t gm_rating_card_prices(const gm_rating_card *card, const gm_rating_price_row **rows);
size_t gm_rating_card_sites(const gm_rating_card *card, const gm_rating_site_row **rows);
/* One price of a variant other than the base one: model x site tier x variant x dimension. */
typedef struct {
    const char *model;
    const char *site_tier;
    const char *variant; /* "batch", "ctx>N", "priority/ctx>N", ... (never "") */
    gm_dim dim;
    int64_t price_p;
} gm_rating_variant_row;
/* The card's prices of every variant but the base one (docs/rating.md, "Price variants"): per
 * model, site tier, service tier (standard and the ones the card lists), context (the base and
 * each row) and dimension, what a request of that variant pays under the card alone (no
 * contract), by the pricing path of events. *rows is malloc'd (free() it); its strings live
 * while the card does. */
int gm_rating_card_variant_prices(const gm_rating_card *card, gm_rating_variant_row **rows,
                                  size_t *n, char *err, size_t err_len) GM_MUSTCHECK;

typedef enum { GM_TIER_GRADUATED = 0, GM_TIER_VOLUME = 1 } gm_tier_mode;

/* Where a contract's GPU time is billed from (docs/rating.md, "GPU billing basis"), never
 * both: the requests' gpu_us (the default), or the GPU windows that gpu_accounting
 * attributed to the tenant (kernel-share-v1), priced at the contract's gpu_window_price. */
typedef enum { GM_GPU_BASIS_REQUESTS = 0, GM_GPU_BASIS_WINDOWS = 1 } gm_gpu_basis;
/* "requests" or "windows". */
const char *gm_gpu_basis_name(gm_gpu_basis b);
/* The model name under which attributed windows are charged and invoiced (gm.charges,
 * invoice lines): "*", which no model can be (docs/events.md). */
#define GM_GPU_WINDOW_MODEL "*"

typedef struct {
    const char *tenant;
    const char *card_id; /* NULL: the book's default card */
    char currency[4];
    int minor_units;
    size_t n_price_overrides; /* models with at least one overridden dimension */
    size_t n_tier_rules;
    gm_i128 discount_percent_e4;      /* 7.5 % = 75000; 0 for none */
    gm_i128 minimum_commitment_minor; /* per month; 0 for none */
    gm_i128 prepaid_credits_minor;    /* granted credit; 0 for none */
    /* The term of the minimum commitment: [commitment_start_us, commitment_end_us), whole
     * seconds; INT64_MIN / GM_RATING_NO_END where the contract states no bound. */
    int64_t commitment_start_us, commitment_end_us;
    /* A total committed over the whole term [commitment_start_us, commitment_end_us) (both
     * bounds then stated), trued up on the invoice of the term's last month; 0 for none.
     * Never together with minimum_commitment_minor (docs/rating.md, "Total over a term"). */
    gm_i128 term_commitment_minor;
    /* effective_from: the first instant (a UTC month start) at which this version applies;
     * INT64_MIN when the contract states none (it applies to every month). */
    int64_t effective_from_us;
    /* Free units per month and dimension (tokens, gpu_us, requests); 0 for none. */
    gm_i128 free_allowance[GM_DIM_COUNT];
    gm_gpu_basis gpu_basis;
    int64_t gpu_window_price_p; /* per GPU-second; 0 unless gpu_basis is windows */
} gm_rating_contract_info;

/* The minimum commitment of the month starting at month_start_us under a contract: the
 * monthly minimum x (seconds of the month inside the commitment term) / (seconds of the
 * month), rounded once, half to even, to the minor unit; the full minimum when the term
 * covers the month, 0 when it misses it (docs/rating.md, "Commitments over a term").
 * *covered_s and *month_s (may be NULL) receive the two second counts. */
gm_i128 gm_rating_contract_commitment(const gm_rating_contract *contract, int64_t month_start_us,
                                      int64_t *covered_s, int64_t *month_s);

/* The months of a contract's total-over-term commitment (term_commitment): the UTC month
 * starts of the term's first month (the month of commitment_start) and last month (the month
 * of commitment_end minus one second: the month in which the term ends, where the true-up is
 * invoiced). false when the contract has no term total. */
#define GM_RATING_TERM_MAX_MONTHS 36 /* longest term of a term_commitment */
bool gm_rating_contract_term_months(const gm_rating_contract *contract, int64_t *first_month_us,
                                    int64_t *last_month_us);

int gm_rating_contract_parse(const char *json, size_t len, gm_rating_contract **out, char *err,
                             size_t err_len) GM_MUSTCHECK;
void gm_rating_contract_free(gm_rating_contract *contract);
/* The info's strings belong to the contract: valid until gm_rating_contract_free(). */
void gm_rating_contract_get_info(const gm_rating_contract *contract, gm_rating_contract_info *out);

/* ---- The book: every card version, site tier and tenant contract ------------------------ */
typedef struct gm_rating_book gm_rating_book;

gm_rating_book *gm_rating_book_new(void);
void gm_rating_book_free(gm_rating_book *book);
/* Parses one card version and adds it. Refused (GM_ECONFLICT) when the book already has
 * this card id and version, when its currency differs from the card's other versions or
 * from a contract that names it, or when a second card id claims "default_card". */
int gm_rating_book_add_card(gm_rating_book *book, const char *json, size_t len, char *err,
                            size_t err_len) GM_MUSTCHECK;
/* Parses one tenant contract and adds it. A tenant's first contract may state effective_from
 * or not; each later one is a newer version and must state it (else GM_ECONFLICT: one
 * contract per tenant). Its currency must match the card it names when that card is known. */
int gm_rating_book_add_contract(gm_rating_book *book, const char *json, size_t len, char *err,
                                size_t err_len) GM_MUSTCHECK;
/* The same with an already parsed object; the book takes ownership on success only (on an
 * error the caller still owns and frees it). */
int gm_rating_book_add_parsed_card(gm_rating_book *book, gm_rating_card *card, char *err,
                                   size_t err_len) GM_MUSTCHECK;
int gm_rating_book_add_parsed_contract(gm_rating_book *book, gm_rating_contract *contract,
                                       char *err, size_t err_len) GM_MUSTCHECK;
/* The card version of `card_id` (NULL: the default card) in force at `time_us`: among the
 * versions whose [valid_from, valid_until) holds the instant, the highest version. NULL when
 * none. The card stays owned by the book. */
const gm_rating_card *gm_rating_book_card_at(const gm_rating_book *book, const char *card_id,
                                             int64_t time_us);
/* The first instant after time_us at which the card version pricing `tenant` (its contract's
 * card, or the default card) can change: the next start of a segment of that card's
 * timeline, or GM_RATING_NO_END. Usage summed over [t, next) is priced by one version. */
int64_t gm_rating_book_next_change_us(const gm_rating_book *book, const char *tenant,
                                      int64_t time_us);
/* Minor-unit digits of a currency: the ISO table, else what a card or contract of the book in
 * that currency declares ("minor_units"); -1 when neither knows it. */
int gm_rating_book_minor_units(const gm_rating_book *book, const char *currency);
/* Checks the book's contracts against its cards: a contract's card_id names a card of the
 * book (or a default card exists), and every model a tier rule names is on some version of
 * that card or priced by the contract. GM_ENOTFOUND naming the contract and field. */
int gm_rating_book_check_contracts(const gm_rating_book *book, char *err,
                                   size_t err_len) GM_MUSTCHECK;
/* Only the price-variant part of that check (also run by it): each contract's service_tiers
 * multipliers x its card's prices (every version), or the card's multipliers x the contract's
 * own prices, exact in 12 fraction digits (docs/rating.md, "Price variants"); GM_ERANGE naming
 * the contract, the multiplier, the price and the two nearest exact multipliers. And a
 * contract's prices (or context rows) of a model that no version of its card prices (nor a
 * default entry) and the contract does not price in all four dimensions: GM_EINVAL. Import
 * runs it against the stored documents. */
int gm_rating_book_check_service_tiers(const gm_rating_book *book, char *err,
                                       size_t err_len) GM_MUSTCHECK;
/* The tenant's newest contract version (the last added), or NULL. */
const gm_rating_contract *gm_rating_book_contract(const gm_rating_book *book, const char *tenant);
/* The tenant's contract version in force at time_us (docs/rating.md, "Effective-dated
 * contracts"): among its versions whose effective_from month has begun (or that state none),
 * the newest; NULL when none (the tenant is priced as one without a contract). Invoices use
 * the version in force at the month's start, events the one at their time. */
const gm_rating_contract *gm_rating_book_contract_at(const gm_rating_book *book, const char *tenant,
                                                     int64_t time_us);

/* ---- Per-event pricing (hot path: no allocation, hash lookups) ------------------------- */
/* The service tier of a request (the event's data.service_tier), in the order of
 * gm_service_tier (ingest/gm_ingest.h): the rating engine prices it by the card's (or the
 * contract's) service_tiers multipliers (docs/rating.md, "Price variants"). */
typedef enum {
    GM_RATING_SVC_STANDARD = 0,
    GM_RATING_SVC_BATCH,
    GM_RATING_SVC_PRIORITY,
    GM_RATING_SVC_COUNT
} gm_rating_svc;
/* "standard", "batch", "priority"; "?" else. */
const char *gm_rating_svc_name(gm_rating_svc s);
/* A card's service-tier multiplier (10^-6) of tier s: 0 when the card does not list it. */
int64_t gm_rating_card_service_multiplier(const gm_rating_card *card, gm_rating_svc s);

/* A price variant's canonical text: "" (standard, base context), "batch", "priority",
 * "ctx>N", "batch/ctx>N" or "priority/ctx>N" (N: the context row's above_tokens). It is a
 * part of the key of charges and invoice lines. At most GM_RATING_VARIANT_MAX bytes. */
#define GM_RATING_VARIANT_MAX  40
#define GM_RATING_CTX_ROWS_MAX 16 /* context_tiers rows per model */

typedef struct {
    const char *tenant, *model, *site;
    int64_t time_us;
    int64_t qty[GM_DIM_COUNT]; /* each 0 <= qty <= 2^53-1 */
    /* The request's service tier (0: standard). Its prompt, input + cached + cache_write
     * tokens, picks the context row (docs/rating.md, "Price variants"). */
    gm_rating_svc service_tier;
} gm_usage;

typedef struct {
    int64_t card_version;
    const char *card_id; /* owned by the book */
    char currency[4];
    int minor_units;
    const char *site_tier; /* owned by the book */
    int64_t unit_price_p[GM_DIM_COUNT];
    gm_i128 amount_e18[GM_DIM_COUNT]; /* exact list amount of each dimension */
    unsigned flags;                   /* GM_PRICE_F_... */
    /* The price variant (canonical text, owned by the book or static; "" for standard at
     * the base context): the key part of the charge this price goes to. */
    const char *variant;
} gm_event_price;

#define GM_PRICE_F_UNKNOWN_TENANT                                                                  \
    1u /* priced by the default card and flagged, never rejected (docs/rating.md) */
#define GM_PRICE_F_DEFAULT_MODEL 2u /* model not on the card: priced by its "default" entry */
#define GM_PRICE_F_DEFAULT_SITE  4u /* site not on the card: priced at its default site tier */
#define GM_PRICE_F_CONTRACT_PRICE                                                                  \
    8u /* at least one unit price is the contract's (override or row) */
#define GM_PRICE_F_UNLISTED_VARIANT                                                                \
    16u /* the request's service tier (batch, priority) is not listed in the service_tiers         \
         * in force (the contract's, else the card's): priced and keyed as standard (x 1) */
#define GM_PRICE_F_GPU_WINDOWS                                                                     \
    32u /* the contract bills GPU time from attributed windows (gpu_basis "windows"): a usage      \
         * event's gpu is priced 0; a window line is priced at gpu_window_price */

#define GM_RATING_QTY_MAX ((INT64_C(1) << 53) - 1)

/* Prices one event: resolves the tenant's contract (or the default card, flagged), the card
 * version in force at u->time_us, the model (or the card's default entry, flagged), the
 * site tier (or the default tier, flagged) and the exact list amount of each dimension.
 * GM_ENOTFOUND: no card in force, no default card for an unknown tenant, or the card
 * rejects the model. GM_EINVAL: a quantity outside 0..2^53-1 or a NULL string. GM_ERANGE:
 * an amount past int128 (absurd prices only). `err` may be NULL. */
int gm_rating_price_event(const gm_rating_book *book, const gm_usage *u, gm_event_price *out,
                          char *err, size_t err_len) GM_MUSTCHECK;
/* The unit prices of a charge: (tenant, model, site, hour) under a price variant, e.g. a
 * row of gm.charges. The one pricing path of the rater and of billing: an event is priced as
 * the charge of its variant (gm_rating_price_event derives the variant from its service tier
 * and prompt, then prices through here), so re-pricing the charges gives the rater's prices.
 * A variant "ctx>N" is priced by the context row of the model with the highest above_tokens
 * <= N (the row N itself when the card still has it). out->amount_e18 is 0; out->variant is
 * the variant that priced it. GM_EINVAL: a variant that is not canonical text. */
int gm_rating_price_charge(const gm_rating_book *book, const char *tenant, const char *model,
                           const char *site, int64_t time_us, const char *variant,
                           gm_event_price *out, char *err, size_t err_len) GM_MUSTCHECK;
/* Parses a variant's canonical text: its service tier and its context threshold (0: the base
 * context). GM_EINVAL naming the rule when it is not canonical. */
int gm_rating_variant_parse(const char *variant, gm_rating_svc *svc, int64_t *ctx_above, char *err,
                            size_t err_len) GM_MUSTCHECK;
/* Sum of out->amount_e18 over dimensions (checked). */
int gm_event_price_total(const gm_event_price *p, gm_i128 *total_e18) GM_MUSTCHECK;

/* ---- Periods: one tenant's usage for one calendar month (UTC) ---------------------------
 * A period accumulates quantities per invoice-line key (dimension, model, site tier, card
 * version) in gm_i128, so that a month of 10^12 events of 2^53-1 units stays exact. The
 * result depends only on the multiset of usage added, never on order or batching. */
typedef struct gm_rating_period gm_rating_period;

/* `month_us` may be any instant of the month. Returns NULL only when tenant is NULL. */
gm_rating_period *gm_rating_period_new(const gm_rating_book *book, const char *tenant,
                                       int64_t month_us);
void gm_rating_period_free(gm_rating_period *period);
int64_t gm_rating_period_start_us(const gm_rating_period *period);
int64_t gm_rating_period_end_us(const gm_rating_period *period);

/* Adds one event of this tenant and month (GM_EINVAL otherwise), priced as by
 * gm_rating_price_event(). `out` (may be NULL) receives its price. */
int gm_rating_period_add_event(gm_rating_period *period, const gm_usage *u, gm_event_price *out,
                               char *err, size_t err_len) GM_MUSTCHECK;

/* Pre-aggregated usage, e.g. an hourly row of the ledger: priced as an event at time_us
 * (card validity boundaries fall on whole hours, so an hour is priced by one version). */
typedef struct {
    const char *model, *site;
    int64_t time_us;
    gm_i128 qty[GM_DIM_COUNT]; /* each >= 0 */
    const char *variant;       /* the charges' price variant; NULL or "": standard, base */
} gm_usage_sum;

int gm_rating_period_add_sum(gm_rating_period *period, const gm_usage_sum *s, char *err,
                             size_t err_len) GM_MUSTCHECK;

/* ---- Invoices --------------------------------------------------------------------------
 * Lines, in this order (line_no 1..n):
 *   GM_LINE_USAGE     one per (dimension, model, site tier, card version, variant) with
 *                     quantity, for usage that no contract tier rule covers, sorted by that
 *                     key (variants bytewise, "" first); tier rules cover the base variant
 *                     "" only;
 *   GM_LINE_TIER      one per band of a contract tier rule with quantity in it (graduated),
 *                     or one at the band the month's quantity falls in (volume), in rule
 *                     order; model is the rule's model list ("*" for all), site_tier "*";
 *   GM_LINE_ALLOWANCE -(free units of the contract's free_allowances): one per usage line
 *                     that free units of its dimension fall on (in line order, lines at a
 *                     unit price of 0 skipped), same key, quantity and unit price as the
 *                     free part, amount -(qty * unit price) rounded once;
 *   GM_LINE_DISCOUNT  -(discount_percent of the rounded usage subtotal net of allowances),
 *                     rounded once;
 *   GM_LINE_COMMITMENT the shortfall up to the monthly minimum commitment (pro-rated by
 *                     seconds in a month that the commitment term covers in part), or, under
 *                     a total over a term (term_commitment), the true-up on the invoice of
 *                     the term's last month: total - spend in the term, when positive;
 *   GM_LINE_CREDIT    -(prepaid credit drawn), at most the balance and the amount due.
 * Discount and credit are also allocated over the lines before them by largest remainder
 * (line's `discount_minor`, `credit_minor`), so that the parts add up exactly. */
typedef enum {
    GM_LINE_USAGE = 0,
    GM_LINE_TIER,
    GM_LINE_ALLOWANCE,
    GM_LINE_DISCOUNT,
    GM_LINE_COMMITMENT,
    GM_LINE_CREDIT
} gm_line_kind;

const char *gm_line_kind_name(gm_line_kind k); /* "usage", "tier", "discount", ... */

typedef struct {
    int line_no;
    gm_line_kind kind;
    gm_dim dim;             /* GM_DIM_COUNT for money-only lines */
    const char *model;      /* "*" = the rule's models (see tier_models); "" for money lines */
    const char *site_tier;  /* "*" for tier lines; "" for money lines */
    int64_t card_version;   /* 0 where lines span versions or carry no usage */
    int band;               /* tier band, 1-based; 0 otherwise */
    gm_i128 qty;            /* tokens or gpu_us; 0 for money lines */
    int64_t unit_price_p;   /* 0 for money lines */
    gm_i128 amount_e18;     /* exact amount */
    gm_i128 amount_minor;   /* the one rounding of amount_e18, half to even */
    gm_i128 discount_minor; /* <= 0: this line's share of the discount line */
    gm_i128 credit_minor;   /* <= 0: this line's share of the credit line */
    unsigned flags;         /* GM_PRICE_F_... of the usage behind the line */
    const char *variant;    /* price variant of usage and allowance lines; "" otherwise */
    char description[128];
} gm_invoice_line;

typedef struct {
    const char *tenant;
    const char *card_id;
    int64_t period_start_us, period_end_us;
    char currency[4];
    int minor_units;
    unsigned flags; /* union of the lines' flags */
    size_t n_lines;
    gm_invoice_line *lines;
    gm_i128 usage_minor;          /* sum of usage and tier lines */
    gm_i128 allowance_minor;      /* <= 0: sum of the allowance lines */
    gm_i128 commitment_due_minor; /* this month's minimum commitment (pro-rated); 0: none */
    gm_i128 discount_minor;       /* <= 0 */
    gm_i128 commitment_minor;     /* >= 0 */
    gm_i128 credit_minor;         /* <= 0 */
    gm_i128 total_minor;          /* sum of all rounded lines */
    gm_i128 exact_usage_e18;      /* sum of the usage and tier lines' exact amounts */
    gm_i128 credit_balance_after_minor;
    /* A total over a term (term_commitment) whose term holds this month: the committed total,
     * the spend in the term through this month (earlier months' spend from the opts plus this
     * month's usage + allowance + discount) and what remains of the total (>= 0). has_term is
     * false (and the three 0) in every other case. term_last_month: this is the term's last
     * month, so the commitment line, if any, is the true-up. */
    bool has_term, term_last_month;
    gm_i128 term_total_minor, term_spent_minor, term_remaining_minor;
} gm_invoice;

typedef struct {
    /* Prepaid credit left at the start of this month; when has_credit_balance is false the
     * contract's full grant is used (first month). */
    bool has_credit_balance;
    gm_i128 credit_balance_minor;
    /* Under a total over a term: the spend counted in the term's months before this one (each
     * month's usage + allowance + discount, as invoiced; >= 0). Without it (false) the earlier
     * months count 0: the caller passes it (billing recomputes those months, quote carries it
     * from month to month). */
    bool has_term_spent;
    gm_i128 term_spent_before_minor;
} gm_invoice_opts;

/* Builds the invoice of a period (the period is not changed; building twice gives equal
 * invoices). `opts` may be NULL. A period without usage and without contract gives an
 * invoice with no lines. *out is freed with gm_invoice_free(). */
int gm_rating_period_invoice(const gm_rating_period *period, const gm_invoice_opts *opts,
                             gm_invoice **out, char *err, size_t err_len) GM_MUSTCHECK;
void gm_invoice_free(gm_invoice *inv);
/* Checks the invariants of an invoice (numbered in invoice.c): returns 0 or GM_ECORRUPT with
 * the broken one in err. Tests call it on every invoice they build. */
int gm_invoice_check(const gm_invoice *inv, char *err, size_t err_len);

/* ---- Re-rating: line-by-line difference of two invoices of the same period -------------
 * Lines are matched by (kind, dimension, model, site tier, card version, band, variant); a line
 * only in `before` has after = 0 and vice versa. Entries are sorted by that key; unchanged lines
 * are included with changed = false. Nothing is written anywhere: a dry run by nature. */
typedef struct {
    gm_line_kind kind;
    gm_dim dim;
    const char *model, *site_tier;
    int64_t card_version;
    int band;
    const char *variant;
    bool changed;
    gm_i128 qty_before, qty_after;
    int64_t unit_price_p_before, unit_price_p_after;
    gm_i128 amount_e18_before, amount_e18_after;
    gm_i128 amount_minor_before, amount_minor_after;
    gm_i128 delta_minor; /* after - before */
} gm_invoice_diff_line;

typedef struct {
    size_t n_lines;
    gm_invoice_diff_line *lines;
    size_t n_changed;
    gm_i128 total_before_minor, total_after_minor, delta_minor;
} gm_invoice_diff;

int gm_invoice_diff_make(const gm_invoice *before, const gm_invoice *after, gm_invoice_diff **out,
                         char *err, size_t err_len) GM_MUSTCHECK;
void gm_invoice_diff_free(gm_invoice_diff *diff);

/* Re-rates one tenant's month: prices `events` against both books, builds both invoices and
 * their diff. Deterministic: the same inputs give the same diff, in any event order. The
 * invoices are returned when the pointers are non-NULL (caller frees). */
int gm_rating_rerate(const gm_rating_book *before, const gm_rating_book *after, const char *tenant,
                     int64_t month_us, const gm_usage *events, size_t n,
                     const gm_invoice_opts *opts, gm_invoice_diff **diff_out,
                     gm_invoice **before_out, gm_invoice **after_out, char *err,
                     size_t err_len) GM_MUSTCHECK;

/* ---- Helpers on money ------------------------------------------------------------------ */
/* Rounds an exact amount (10^-18) to minor units (10^-minor_units), half to even. */
gm_i128 gm_rating_round_e18(gm_i128 amount_e18, int minor_units);
/* Exact amount of qty units of a dimension at price_p: 0 or GM_ERANGE. */
int gm_rating_amount_e18(gm_dim dim, gm_i128 qty, int64_t price_p, gm_i128 *out) GM_MUSTCHECK;
/* Splits `total` (>= 0) over n parts in proportion to weights (>= 0) by largest remainder:
 * floor shares first, then one unit each to the largest remainders, ties to the lower
 * index. Shares add up to total exactly. GM_EINVAL when total > 0 and all weights are 0,
 * GM_ERANGE on overflow. */
int gm_rating_allocate(gm_i128 total, const gm_i128 *weights, size_t n,
                       gm_i128 *shares) GM_MUSTCHECK;
/* Formats a minor-unit amount as "12.34" (JPY "1234", KWD "1.234"); buf >= 48 bytes. */
size_t gm_rating_format_minor(gm_i128 minor, int minor_units, char *buf, size_t buf_len);
/* Converts a stated price into price_p exactly, or refuses naming the nearest exact values.
 * unit: "per_token", "per_1m_tokens", "per_gpu_second", "per_gpu_hour", "per_request"
 * (12 fraction digits per request, like per_token). */
int gm_rating_price_convert(const char *unit, const char *text, size_t len, int64_t *price_p,
                            char *err, size_t err_len) GM_MUSTCHECK;

#endif /* GM_RATING_H */
