/* The HTTP edge's rules as pure functions over bytes (api/edge.c, api/routes.c,
 * api/cursor.c): no sockets, no libmicrohttpd, no database. The gate (api/gate.c) applies them
 * to the bytes of a request head before libmicrohttpd parses anything; the pipeline
 * (api/server.c) applies the framing and target rules again to libmicrohttpd's view of the
 * same request; tests/fuzz/fuzz_http_request.c feeds them arbitrary bytes.
 *
 * Invariants (api__edge_check_* verify them; the fuzz target and the tests call those):
 *   E1 a refusal has a status in 400..599, a problem slug and a detail; detail and field
 *      are valid UTF-8 without control characters;
 *   E2 an accepted target's path segments and query parameters are valid UTF-8 without C0
 *      or C1 control characters or DEL, within the length limits below; no segment is "."
 *      or ".." or contains '/'; every parameter has a non-empty name and a value;
 *   E3 an accepted head frames its body one way only: no Transfer-Encoding, at most one
 *      Content-Length, and that one within the body limit;
 *   E4 a problem document is valid JSON and valid UTF-8 with type, title, status and
 *      detail, and an instance (when present) that is printable ASCII. */
#ifndef GM_API_EDGE_H
#define GM_API_EDGE_H

#include "gm_api.h"
#include "gm_common.h"

/* ---- Limits ------------------------------------------------------------------------------*/
#define API_HEAD_MAX        16384 /* request line, header fields and the blank line (431) */
#define API_LINE_MAX        8192  /* the request line (414) */
#define API_FIELDS_MAX      64    /* header fields (431) */
#define API_TARGET_MAX      8000  /* raw request-target bytes (414) */
#define API_SEGMENTS_MAX    16    /* path segments */
#define API_SEGMENT_MAX     256   /* decoded bytes of one path segment */
#define API_PARAMS_MAX      16    /* query parameters */
#define API_PARAM_NAME_MAX  64    /* decoded bytes of a parameter name */
#define API_PARAM_VALUE_MAX 2048  /* decoded bytes of a parameter value */
#define API_INSTANCE_MAX    512   /* bytes of a problem's instance */

/* A refusal: the status, the problem type's slug, the field at fault ("" when none) and a
 * detail that names the field and the rule. */
typedef struct {
    int status;
    const char *slug;
    char field[72];
    char detail[400];
} api_refusal;

/* One header field as received: name and value (trimmed of optional whitespace). */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} api_field;

/* How the body ends (RFC 9112 §6.3), decided once before any handler runs. */
typedef struct {
    bool has_length;      /* a Content-Length was given */
    uint64_t length;      /* its value (0 without one: no body) */
    bool expect_continue; /* Expect: 100-continue */
} api_framing;

/* Framing and the header fields the server reads once: Host, Content-Length,
 * Transfer-Encoding, Authorization, Content-Type, Idempotency-Key and Expect may appear at
 * most once (400 otherwise: which of two values counts is ambiguous); Transfer-Encoding is
 * refused (with Content-Length: 400, a request-smuggling precondition; chunked alone: 411
 * Length Required; any other coding: 501); Content-Length is 1 to 19 digits (400) and at
 * most max_body (413); Expect is 100-continue or absent (417). 0, or GM_EINVAL with why. */
int api__framing_decide(const api_field *f, size_t n, int64_t max_body, api_framing *out,
                        api_refusal *why) GM_MUSTCHECK;

/* A parsed request head; pointers are into the caller's buffer. */
typedef struct {
    char method[17];
    const char *target;
    size_t target_len;
    int version_minor; /* HTTP/1.<minor>: 0 or 1 */
    size_t n_fields;
    api_field fields[API_FIELDS_MAX];
    api_framing framing;
    size_t head_len; /* bytes up to and including the blank line */
} api_head;

/* Parses buf[0..len) as the start of a request (strict RFC 9112 grammar: one request line
 * `method SP origin-form SP HTTP/1.x CRLF`, header fields `token ":" OWS value OWS CRLF`
 * without line folding, bare LF, NUL or other control bytes, then CRLF), the target by
 * api__target_parse, the framing by api__framing_decide, and Host (exactly one in HTTP/1.1).
 * Returns 0 when buf holds a complete valid head, 1 when everything so far is valid but the
 * head is not complete (and len < API_HEAD_MAX), GM_EINVAL with the refusal otherwise
 * (HTTP/2 and HTTP/0.9 included: 505 and 400). Complete lines are checked as they arrive, so
 * garbage is refused before the head ends. */
int api__head_parse(const char *buf, size_t len, int64_t max_body, api_head *h,
                    api_refusal *why) GM_MUSTCHECK;

/* A request target, decoded: path segments and query parameters (NUL-terminated copies in
 * store). "/v1/me" has the segments "v1" and "me"; "/" has one empty segment. */
typedef struct {
    size_t n_seg;
    const char *seg[API_SEGMENTS_MAX];
    size_t n_param;
    const char *pname[API_PARAMS_MAX];
    const char *pvalue[API_PARAMS_MAX];
    size_t path_len; /* raw bytes of the path (before '?') */
    char store[API_TARGET_MAX + API_SEGMENTS_MAX + 2 * API_PARAMS_MAX + 8];
} api_target;

/* Turns a raw request-target (origin-form) into decoded, validated segments and parameters:
 * only RFC 3986 characters raw (others must be percent-encoded); %XX well formed; after
 * decoding, no C0/C1 control or DEL, valid UTF-8, no '/' inside a segment, no "." or ".."
 * segments; parameters are name=value pairs with a non-empty name ('+' is a space);
 * limits above. 0, or GM_EINVAL with the refusal naming the segment or parameter. */
int api__target_parse(const char *raw, size_t len, api_target *t, api_refusal *why) GM_MUSTCHECK;

/* The problem document's instance for a raw target: its path, with every byte that is not
 * visible ASCII (or is '"', '\\', '%' not starting a %XX) percent-encoded, cut to fit out
 * (out_len <= API_INSTANCE_MAX + 1) without splitting a %XX. */
void api__instance_of(const char *raw, size_t len, char *out, size_t out_len);

/* RFC 9457 problem document (application/problem+json): type
 * https://gridmeter.dev/problems/<slug>, title, status, detail, instance (omitted when NULL),
 * field (when not NULL); invalid UTF-8 in detail or field becomes U+FFFD. Returns a malloc'd
 * NUL-terminated text and its length in *len. */
char *api__problem_render(int status, const char *slug, const char *field, const char *detail,
                          const char *instance, size_t *len);
const char *api__status_title(int status);
/* Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
bool api__utf8_valid(const char *s, size_t n);
/* Copies s into out (NUL-terminated, at most out_len - 1 bytes) as printable ASCII: other
 * bytes become '?'. For names of the caller's input inside a detail. */
void api__printable(const char *s, size_t n, char *out, size_t out_len);

/* ---- Routes (routes.c) --------------------------------------------------------------------*/
typedef enum {
    API_R_HEALTHZ,
    API_R_READYZ,
    API_R_METRICS,
    API_R_OPENAPI,
    API_R_ME,
    API_R_OPS_INGEST,
    API_R_INVOICES_LIST,
    API_R_INVOICE_GET,
    API_R_INVOICE_FINALIZE,
    API_R_INVOICE_VOID,
    API_R_CREDIT_NOTE_CREATE,
    API_R_CREDIT_NOTES_LIST,
    API_R_REVENUE,
    API_R_ECONOMICS,
    API_R_COST_CARDS_LIST,
    API_R_COST_CARD_CREATE,
    API_R_RERATING_RUN,
    API_R_RERATING_RUNS_LIST,
    API_R_USAGE,
    API_R_SPEND,
    API_R_TENANT_INVOICES,
    API_R_TENANTS_LIST,
    API_R_TENANT_CREATE,
    API_R_TENANT_GET,
    API_R_CONTRACTS_LIST,
    API_R_CONTRACT_IMPORT,
    API_R_RATE_CARDS_LIST,
    API_R_RATE_CARD_IMPORT,
    API_R_KEYS_LIST,
    API_R_KEY_CREATE,
    API_R_KEY_REVOKE,
    API_R_ENTITLEMENT,
    API_R_BUDGET_SET,
    API_R_COUNT
} api_route_id;

#define API_RF_NO_DB           1u /* the handler needs no PostgreSQL connection */
#define API_RF_TENANT_SCOPED   2u /* a customer key only for its own tenant (param[0]) */
#define API_RF_REPEATABLE_READ 4u /* POST: its transaction is REPEATABLE READ */

typedef struct {
    gm_api_route_info info;
    const char *query; /* allowed query parameters, comma-separated */
    unsigned flags;    /* API_RF_* */
} api_route_spec;

/* The route table, indexed by api_route_id. */
extern const api_route_spec api__routes[API_R_COUNT];

typedef struct {
    int route;        /* the matched route (HEAD matches GET), or -1 */
    bool path_known;  /* some route has this path (with another method: 405) */
    bool path_public; /* every route with this path is public */
    char allow[48];   /* the path's methods: "GET, HEAD, POST" */
    const char *param[3];
    int n_param;
} api_match;

/* Matches a method and decoded target against the table: literal segments byte for byte,
 * {name} any non-empty segment. */
void api__route_match(const char *method, const api_target *t, api_match *m);
/* True when the path (decoded) is under /v1/ or is /metrics: unauthenticated callers learn
 * nothing about it beyond 401 (public routes excepted). */
bool api__path_needs_key(const api_target *t);

/* ---- Cursors (cursor.c) -------------------------------------------------------------------
 * An opaque list position "<hex payload>.<hex tag>": payload "<kind>|<int64>|<text>", tag the
 * first 16 bytes of HMAC-SHA256(key, "gridmeter-cursor-v1|" payload) (OpenSSL libcrypto).
 * Verified with the current key, then the previous one (rotation); the number must lie in
 * [1970-01-01, 10000-01-01) in microseconds and the text be 1..text_len-1 bytes of UTF-8
 * without control characters. */
#define API_CURSOR_KEY_MAX 512
typedef struct {
    uint8_t key[API_CURSOR_KEY_MAX];
    size_t key_len;
    uint8_t prev[API_CURSOR_KEY_MAX];
    size_t prev_len; /* 0: no previous key */
} api_cursor_keys;
#define API_CURSOR_MAX 600
void api__cursor_sign(const api_cursor_keys *k, const char *kind, int64_t a, const char *b,
                      char *out, size_t out_len);
/* 0, or GM_EINVAL with the reason (malformed, altered, another list's, another key's, out
 * of range) in err. */
int api__cursor_verify(const api_cursor_keys *k, const char *kind, const char *s, int64_t *a,
                       char *b, size_t b_len, char *err, size_t err_len) GM_MUSTCHECK;

/* ---- Invariant checks (tests, fuzz) -------------------------------------------------------*/
/* Each returns NULL when the invariant holds, else which part broke. */
const char *api__edge_check_refusal(const api_refusal *why);                /* E1 */
const char *api__edge_check_target(const api_target *t);                    /* E2 */
const char *api__edge_check_head(const api_head *h, int64_t max_body);      /* E3 */
const char *api__edge_check_problem(const char *doc, size_t len, int want); /* E4 */

#endif /* GM_API_EDGE_H */
