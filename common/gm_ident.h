/* One rule per identifier: the length and character set of tenant, site, model and source
 * ids (and the event's other identifier fields), defined here once and used by the event
 * codec, gpu_accounting, rate cards and contracts, billing, the API, the CLI and, through
 * gm_ident_sql_pattern(), the CHECK constraints of sql/ (docs/events.md "Identifiers"). */
#ifndef GM_IDENT_H
#define GM_IDENT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    GM_IDENT_TENANT = 0, /* event subject, contracts, API tenants and keys, budgets */
    GM_IDENT_SITE,       /* data.site, rate cards' site_tiers.*.sites */
    GM_IDENT_MODEL,      /* data.model, rate cards' and contracts' prices keys */
    GM_IDENT_SOURCE,     /* CloudEvents source: one emitting node */
    GM_IDENT_EVENT_ID,   /* CloudEvents id */
    GM_IDENT_REQUEST_ID, /* data.request_id (optional in events: "" when absent) */
    GM_IDENT_DEVICE,     /* data.device of gridmeter.gpu.v1 */
    GM_IDENT_POLICY,     /* data.policy of gridmeter.gpu.v1 */
    GM_IDENT_COUNT
} gm_ident_kind;

/* Maximum lengths in bytes. */
#define GM_IDENT_TENANT_MAX     64
#define GM_IDENT_SITE_MAX       64
#define GM_IDENT_MODEL_MAX      128
#define GM_IDENT_SOURCE_MAX     128
#define GM_IDENT_EVENT_ID_MAX   128
#define GM_IDENT_REQUEST_ID_MAX 128
#define GM_IDENT_DEVICE_MAX     64
#define GM_IDENT_POLICY_MAX     32

/* The two ASCII character sets: identifiers go into SQL, CSV, logfmt, URLs and file names
 * without escaping. */
#define GM_IDENT_CHARSET_NAME "A-Z a-z 0-9 . _ - (first a letter or digit)"
#define GM_IDENT_CHARSET_ID   "A-Z a-z 0-9 . _ - : / @ + = ~"

/* "tenant", "site", "model", "source", "id", "request_id", "device", "policy". */
const char *gm_ident_name(gm_ident_kind kind);
size_t gm_ident_max(gm_ident_kind kind);
/* GM_IDENT_CHARSET_NAME or GM_IDENT_CHARSET_ID. */
const char *gm_ident_charset(gm_ident_kind kind);
/* The whole rule in words: "1 to 64 bytes of A-Z a-z 0-9 . _ - (first a letter or digit)". */
const char *gm_ident_rule(gm_ident_kind kind);
/* The same rule as a PostgreSQL regular expression (for CHECK constraints and tests):
 * "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$". */
const char *gm_ident_sql_pattern(gm_ident_kind kind);

/* Checks `len` bytes at s (NUL bytes are refused like any other byte outside the set).
 * Returns 0, or GM_EINVAL with the broken rule, without the field name, in rule ("must be
 * at most 64 bytes, got 65"; "must use only …, got ' ' at position 4"). */
int gm_ident_check(gm_ident_kind kind, const char *s, size_t len, char *rule, size_t rule_len);
/* The same on a NUL-terminated string (NULL is invalid). */
bool gm_ident_valid(gm_ident_kind kind, const char *s);
/* Checks s and writes "<field>: <rule>" into err on failure, e.g.
 * "tenant: must use only A-Z a-z 0-9 . _ - (first a letter or digit), got ' ' at position 4".
 * Returns 0 or GM_EINVAL. */
int gm_ident_check_field(gm_ident_kind kind, const char *field, const char *s, char *err,
                         size_t err_len);

#endif /* GM_IDENT_H */
