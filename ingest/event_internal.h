/* Internal to the event codec: the identifier character classes and rules shared by the
 * decoder (event_decode.c) and the checker/encoder (event_encode.c). */
#ifndef GM_EVENT_INTERNAL_H
#define GM_EVENT_INTERNAL_H

#include "gm_ident.h"
#include "gm_ingest.h"

#include <stdbool.h>
#include <stddef.h>
#include <inttypes.h>

/* Bits of event__class[c] (NAME, ID and ALNUM mirror common/gm_ident.h, which alone decides
 * an identifier; the decoder uses PLAIN and ATTR). */
enum {
    EVENT__C_NAME = 1,  /* in GM_EVENT_CHARSET_NAME */
    EVENT__C_ID = 2,    /* in GM_EVENT_CHARSET_ID */
    EVENT__C_ALNUM = 4, /* A-Z a-z 0-9 */
    EVENT__C_ATTR = 8,  /* a-z 0-9: CloudEvents attribute names */
    EVENT__C_PLAIN = 16 /* may appear in a JSON string as is: >= 0x20, not '"' or '\\' */
};
extern const unsigned char event__class[256];

/* Checks an identifier of `len` bytes by its one rule (common/gm_ident.h); "" passes when
 * `optional`. Returns 0, or GM_EINVAL with the rule (without the field name) in rule. */
int event__ident_check(const char *s, size_t len, gm_ident_kind kind, bool optional, char *rule,
                       size_t rule_len);

#define EVENT__TIME_MAX_US GM_EVENT_TIME_MAX_US

/* Parts may not exceed their whole: the one refusal of a usage event whose reasoning tokens
 * (part of the output) are more than its output tokens. Both fields are named; the values
 * are the reasoning and output counts (int64_t). */
#define EVENT__PART_RULE                                                                           \
    "data.reasoning_tokens: must not exceed data.output_tokens (reasoning tokens are part of "     \
    "the output), got %" PRId64 " > %" PRId64
#define EVENT__PART_FIELD "data.reasoning_tokens"
#define EVENT__PART_RULE_ONLY                                                                      \
    "must not exceed data.output_tokens (reasoning tokens are part of the output), got %" PRId64   \
    " > %" PRId64

#endif
