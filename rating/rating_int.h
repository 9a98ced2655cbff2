/* Internals of the rating module shared by its files (and its tests): string hash maps,
 * the JSON reader with exact number literals, and the card, contract and book structures. */
#ifndef GM_RATING_INT_H
#define GM_RATING_INT_H

#include "gm_rating.h"

#include <cjson/cJSON.h>
#include <string.h>

/* ---- String -> int32 map, open addressing, keys borrowed from the owner ------------------ */
typedef struct {
    uint32_t mask; /* capacity - 1; capacity is a power of two, load <= 1/2 */
    uint32_t count;
    uint64_t *hash; /* 0 = empty slot (real hashes are forced non-zero) */
    const char **key;
    uint32_t *key_len;
    int32_t *value;
} rating__map;

uint64_t rating__hash(const char *s, size_t len);
void rating__map_init(rating__map *m);
void rating__map_free(rating__map *m);
/* Inserts key (borrowed: must outlive the map) -> value; returns the existing value if the
 * key is present (and leaves it), or -1 when inserted. */
int32_t rating__map_put(rating__map *m, const char *key, size_t len, int32_t value);

static inline int32_t rating__map_get_h(const rating__map *m, const char *key, size_t len,
                                        uint64_t h)
{
    if (!m->count)
        return -1;
    for (uint32_t i = (uint32_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t hh = m->hash[i];
        if (hh == 0)
            return -1;
        if (hh == h && m->key_len[i] == len && !memcmp(m->key[i], key, len))
            return m->value[i];
    }
}

static inline int32_t rating__map_get(const rating__map *m, const char *key)
{
    size_t len = strlen(key);
    return rating__map_get_h(m, key, len, rating__hash(key, len));
}

/* ---- JSON with exact number literals ---------------------------------------------------
 * cJSON turns numbers into doubles. We scan the text for number literals first and store,
 * in each number node's valueint, the index of its literal, so that integers are parsed
 * from their text (gm_parse_i64) and no double is ever read. */
typedef struct {
    cJSON *root;
    const char *text;
    size_t n_nums;
    size_t *num_off, *num_len;
} rating__json;

int rating__json_parse(const char *text, size_t len, rating__json *out, char *err,
                       size_t err_len) GM_MUSTCHECK;
void rating__json_free(rating__json *j);
/* The literal text of a number node. */
const char *rating__json_num_text(const rating__json *j, const cJSON *num, size_t *len);
/* A JSON value's kind for messages: "a string", "a number 1.5", "an object", ... */
void rating__json_describe(const rating__json *j, const cJSON *v, char *buf, size_t len);
/* Refuses a member of object o that is not one of allowed (NULL-terminated), "path.key: unknown
 * field (allowed: ...)", and a member that appears twice, "path.key: field appears twice". */
int rating__check_keys(const cJSON *o, const char *path, const char *const *allowed, char *err,
                       size_t err_len) GM_MUSTCHECK;
/* Non-negative JSON integer (plain digits) <= max. */
int rating__json_int(const rating__json *j, const cJSON *v, int64_t max, int64_t *out);

/* ---- Price variants (rating/variant.c) -------------------------------------------------
 * A model's context rows (prices.<model>.context_tiers): strictly ascending above_tokens; a
 * request whose prompt is above a row's threshold is priced by the highest such row k. Rows
 * are cumulative: row k's prices are row k-1's (row -1: the tenant's base prices) with the
 * dimensions row k states replaced (a card's row x the site tier's multiplier; a contract's
 * row flat); cache_write and reasoning follow the resulting input and output unless the base
 * or a row up to k states them (docs/rating.md, "Price variants", rule 2). */
#define RATING_MULT_SCALE     6 /* site-tier and service-tier multipliers: up to 6 fraction digits */
#define RATING_MULT_MAX_E6    INT64_C(1000000000000) /* the largest multiplier, 1000000 */
#define RATING_PRICE_MAX_TEXT "9223372.036854775807" /* INT64_MAX at 10^-12: the largest price */
/* The dimensions that follow another one when not stated (cache_write input, reasoning output). */
#define RATING_FOLLOW_MASK ((1u << GM_DIM_CACHE_WRITE) | (1u << GM_DIM_REASONING))

typedef struct {
    int64_t above;                 /* above_tokens, > 0 */
    unsigned mask;                 /* bit d: the row itself states dimension d */
    int64_t price_p[GM_DIM_COUNT]; /* the stated prices */
    unsigned cum_mask;             /* bit d: this row or a lower one states d */
    int64_t cum_p[GM_DIM_COUNT];   /* d in cum_mask: the price of the highest such row */
    int64_t *eff; /* card rows: [tier * GM_DIM_COUNT + d], cum_p x the tier's multiplier */
    char variant[GM_RATING_SVC_COUNT][GM_RATING_VARIANT_MAX]; /* "ctx>N", "batch/ctx>N", ... */
} rating__ctx_row;

typedef struct {
    size_t n;
    rating__ctx_row *row;
} rating__ctx;

/* service_tiers of a card or contract: a multiplier per listed tier (standard: always 1). */
typedef struct {
    bool present; /* the document states service_tiers (a contract's replaces the card's) */
    bool listed[GM_RATING_SVC_COUNT];
    int64_t mult_e6[GM_RATING_SVC_COUNT];
} rating__svc;

/* Parses prices.<model>.context_tiers (path names it) into ctx. */
int rating__ctx_parse(const rating__json *j, const cJSON *v, const char *path, rating__ctx *ctx,
                      char *err, size_t err_len) GM_MUSTCHECK;
void rating__ctx_free(rating__ctx *ctx);
/* Parses a document's service_tiers (a contract's when contract) into svc (absent: not
 * present, nothing listed; {} refused). */
int rating__svc_parse(const rating__json *j, const cJSON *v, bool contract, rating__svc *svc,
                      char *err, size_t err_len) GM_MUSTCHECK;
/* What the nearest exact multipliers of a refusal depend on: the step of exact multipliers
 * (every multiple of it keeps each price added exact in 12 fraction digits; start at 1) and the
 * largest price added (a multiplier offered keeps it within the largest price). */
typedef struct {
    int64_t step;
    int64_t max_p;
} rating__svc_span;
void rating__svc_span_add(rating__svc_span *s, int64_t price_p);
/* Refuses (GM_ERANGE) a price (of dimension d) that a listed multiplier of svc does not keep
 * exact in 12 fraction digits, naming service_tiers.<tier>, the price (what) and the nearest
 * multipliers that are multiples of span->step and keep span->max_p within the largest price;
 * a product past the largest price is refused as such, with no multiplier offered. */
int rating__svc_check(const rating__svc *svc, int64_t price_p, int d, const rating__svc_span *span,
                      const char *what, char *err, size_t err_len) GM_MUSTCHECK;
/* "token", "GPU-second" or "request": the unit that dimension d's prices are per. */
const char *rating__unit_word(int d);
/* A price x a multiplier, at 10^-18, fits a price (int64 at 10^-12). */
bool rating__price_fits(gm_i128 price_e18);
/* Parses one price object of any subset of dimensions (a context row's prices). */
int rating__row_prices(const rating__json *j, const cJSON *v, const char *path,
                       int64_t price[GM_DIM_COUNT], unsigned *mask, char *err,
                       size_t err_len) GM_MUSTCHECK;
/* "", "batch", "priority": the variant of a service tier at the base context. */
const char *rating__base_variant(gm_rating_svc s);
/* price x multiplier (10^-6), exact, into *out; false when not exact or out of range. */
bool rating__svc_mul(int64_t price_p, int64_t mult_e6, int64_t *out);

/* ---- Cards ----------------------------------------------------------------------------- */

struct gm_rating_card {
    char *card_id;
    int64_t version;
    int64_t valid_from_us, valid_until_us;
    char currency[4];
    int minor_units;
    bool reject_unknown;
    bool is_default;
    /* models[0..n_models) named; default_model = index of the "default" entry or -1 */
    size_t n_models;
    char **model_names;
    int32_t default_model;
    size_t n_tiers;
    char **tier_names;
    int32_t default_tier;
    size_t n_sites;
    char **site_names;
    int32_t *site_tier;
    /* price_p[(model * n_tiers + tier) * GM_DIM_COUNT + dim], final effective price */
    int64_t *price;
    /* stated[model * n_tiers + tier]: the bits of RATING_FOLLOW_MASK whose price the level that
     * prices it there (the tier's own prices, else the model entry) states, not follows */
    unsigned *stated;
    rating__map model_map, site_map, tier_map;
    gm_rating_price_row *rows;
    gm_rating_site_row *site_rows;
    rating__ctx *ctx; /* per model (as model_names), context rows; NULL: none on the card */
    rating__svc svc;  /* service_tiers */
};

/* ---- Contracts ------------------------------------------------------------------------- */
typedef struct {
    char *model;
    unsigned mask;   /* bit d: dimension d overridden */
    unsigned stated; /* bit d: the contract states d itself (not followed from another) */
    int64_t price_p[GM_DIM_COUNT];
    rating__ctx ctx; /* the contract's own context rows for the model (n 0: the card's) */
} rating__override;

typedef struct {
    gm_dim dim;
    gm_tier_mode mode;
    size_t n_models; /* 0: every model */
    char **models;
    char *models_label; /* "*" or "a,b" for line descriptions */
    size_t n_bands;
    gm_i128 *up_to; /* inclusive upper bound of each band; -1 = unbounded (last only) */
    int64_t *price_p;
} rating__tier_rule;

struct gm_rating_contract {
    char *tenant;
    char *card_id; /* NULL: default card */
    char currency[4];
    int minor_units;
    size_t n_over;
    rating__override *over;
    rating__map over_map;
    size_t n_rules;
    rating__tier_rule *rules;
    gm_i128 discount_e4; /* percent * 10^4 */
    gm_i128 commitment_minor;
    gm_i128 credits_minor;
    int64_t commit_start_us, commit_end_us; /* INT64_MIN / GM_RATING_NO_END: no bound */
    gm_i128 term_minor;   /* term_commitment: total over [commit_start, commit_end); 0: none */
    int64_t effective_us; /* effective_from: the first instant (a month start) it applies;
                             INT64_MIN: always */
    gm_i128 allowance[GM_DIM_COUNT]; /* free units per month; 0: none */
    gm_gpu_basis gpu_basis;          /* GM_GPU_BASIS_REQUESTS unless "gpu_basis": "windows" */
    int64_t gpu_window_price_p;      /* per GPU-second; set with GM_GPU_BASIS_WINDOWS only */
    rating__svc svc;                 /* service_tiers: when present, replaces the card's */
};

/* ---- Book ------------------------------------------------------------------------------ */
struct gm_rating_book;
/* The index in book->con of the tenant's contract version in force at time_us; -1: none. */
int32_t rating__contract_at(const struct gm_rating_book *b, const char *tenant, int64_t time_us);
typedef struct {
    char *card_id;
    char currency[4];
    size_t n_cards;
    gm_rating_card **cards;
    /* timeline: seg_start ascending; seg_card[i] in force on [seg_start[i], seg_start[i+1]) */
    size_t n_seg;
    int64_t *seg_start;
    const gm_rating_card **seg_card;
} rating__family;

struct gm_rating_book {
    size_t n_fam, cap_fam;
    rating__family **fam;
    rating__map fam_map;
    int32_t default_fam; /* -1: none */
    size_t n_con, cap_con;
    gm_rating_contract **con;
    int32_t *con_fam; /* family index of each contract; -1: the default card */
    /* Versions of a tenant's contract: con_map holds the index of its first entry, whose
     * con_head is the newest version; con_older links each version to the one added before
     * it (-1: none). The version in force at t: from the newest, the first whose effective_us
     * <= t (rating__contract_at). */
    int32_t *con_head, *con_older;
    rating__map con_map;
};

/* What prices a (tenant, model, site, time): the card version, the contract (NULL for an
 * unknown tenant), the site tier and the unit price of each dimension. */
typedef struct {
    const gm_rating_card *card;
    const gm_rating_contract *contract;
    int32_t tier;
    int32_t model; /* index of the event's model on the card; -1 when not listed there */
    int64_t price_p[GM_DIM_COUNT];
    unsigned flags;
    unsigned stated;        /* bits of RATING_FOLLOW_MASK stated (not followed) in the base */
    unsigned from_contract; /* bit d: price_p[d] is the contract's (GM_PRICE_F_CONTRACT_PRICE) */
    const char *variant;    /* the price variant that priced it */
    const rating__ctx *ctx; /* the model's context rows in force (the contract's or the card's) */
} rating__resolved;

/* Picks the context row for `prompt` tokens (0: base) and applies the service tier's
 * multiplier (the contract's service_tiers when it states them, else the card's) to r. */
int rating__apply_variant(rating__resolved *r, gm_rating_svc svc, int64_t prompt, char *err,
                          size_t err_len) GM_MUSTCHECK;

/* Resolves what prices (tenant, model, site, time) and applies the variant: the context row
 * for a prompt of `prompt` tokens (0: the base context) and the service tier's multiplier. */
int rating__resolve(const gm_rating_book *book, const char *tenant, const char *model,
                    const char *site, int64_t time_us, gm_rating_svc svc, int64_t prompt,
                    rating__resolved *out, char *err, size_t err_len) GM_MUSTCHECK;
/* The prompt of a variant's context threshold N (a request above N: N + 1), 0 for none. */
int rating__variant_prompt(const char *variant, gm_rating_svc *svc, int64_t *prompt, char *err,
                           size_t err_len) GM_MUSTCHECK;
/* An event's prompt: input + cached + cache_write tokens (quantities checked first). */
int64_t rating__prompt(const gm_usage *u);
/* Quantities in 0..2^53-1, and the event's price from a resolution. */
int rating__qty_check(const gm_usage *u, char *err, size_t err_len) GM_MUSTCHECK;
int rating__price_fill(const gm_usage *u, const rating__resolved *r, gm_event_price *out, char *err,
                       size_t err_len) GM_MUSTCHECK;
const gm_rating_card *rating__family_at(const rating__family *f, int64_t time_us);

/* Amount of a graduated or volume rule for the month's quantity q (exact, e18). */
int rating__tier_amount(const rating__tier_rule *r, gm_i128 q, gm_i128 *amount_e18);

#endif /* GM_RATING_INT_H */
