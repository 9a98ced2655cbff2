/* The usage event contract (docs/events.md): the event struct, a strict single-pass
 * decoder for gridmeter.usage.v1 and gridmeter.gpu.v1 CloudEvents, and the canonical encoder.
 *
 * The decoder allocates nothing: strings are copied into the fixed arrays of gm_event, and
 * quantities are parsed from the number text. docs/events.md is the contract for operators;
 * every rule it states is enforced here and pinned by a fixture in tests/fixtures/events/.
 */
#ifndef GM_INGEST_H
#define GM_INGEST_H

#include "gm_common.h"
#include "gm_ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { GM_EVENT_USAGE = 1, GM_EVENT_GPU = 2 } gm_event_type;

/* data.service_tier of a usage event (optional; absent means standard). The order is the
 * wire order of gm_service_tier_name() and must not change (it is stored in the ledger by
 * name, never by number). */
typedef enum {
    GM_SERVICE_TIER_STANDARD = 0,
    GM_SERVICE_TIER_BATCH = 1,
    GM_SERVICE_TIER_PRIORITY = 2,
    GM_SERVICE_TIER_COUNT
} gm_service_tier;

/* A message over 8 KiB is refused before it is parsed. */
#define GM_EVENT_MAX_BYTES 8192
/* Every quantity (tokens, microseconds, counts, seq) is a JSON integer 0..2^53-1. */
#define GM_EVENT_MAX_QUANTITY ((INT64_C(1) << 53) - 1)

/* Latest instant RFC 3339 with a four-digit year can name: 9999-12-31T23:59:59.999999Z.
 * Times are 0 (1970-01-01T00:00:00Z) .. GM_EVENT_TIME_MAX_US. */
#define GM_EVENT_TIME_MAX_US INT64_C(253402300799999999)

/* Maximum lengths in bytes of the identifier fields (the arrays hold one more for the NUL).
 * Each identifier's rule (length, character set) is defined once, in common/gm_ident.h
 * (docs/events.md "Identifiers"); these names are kept for the event's arrays. */
#define GM_EVENT_SOURCE_MAX     GM_IDENT_SOURCE_MAX
#define GM_EVENT_ID_MAX         GM_IDENT_EVENT_ID_MAX
#define GM_EVENT_TENANT_MAX     GM_IDENT_TENANT_MAX
#define GM_EVENT_SITE_MAX       GM_IDENT_SITE_MAX
#define GM_EVENT_MODEL_MAX      GM_IDENT_MODEL_MAX
#define GM_EVENT_REQUEST_ID_MAX GM_IDENT_REQUEST_ID_MAX
#define GM_EVENT_DEVICE_MAX     GM_IDENT_DEVICE_MAX
#define GM_EVENT_POLICY_MAX     GM_IDENT_POLICY_MAX
#define GM_EVENT_CHARSET_NAME   GM_IDENT_CHARSET_NAME
#define GM_EVENT_CHARSET_ID     GM_IDENT_CHARSET_ID

/* One decoded event. Fields that the event's type does not carry are "" or 0. All strings
 * are NUL-terminated and already checked against their character set and length. */
typedef struct gm_event {
    gm_event_type type;
    char source[GM_EVENT_SOURCE_MAX + 1]; /* CloudEvents source: one emitting node */
    char id[GM_EVENT_ID_MAX + 1];         /* (source, id) is the idempotency key */
    char tenant[GM_EVENT_TENANT_MAX + 1]; /* CloudEvents subject */
    int64_t time_us;                      /* CloudEvents time, microseconds since epoch */
    uint64_t seq;                         /* data.seq: 1, 2, 3, … per source and epoch */
    /* data.epoch (usage revision 1.2, docs/events.md "Epochs"): 0..2^53-1, 0 when absent. A
     * node that lost its state starts a new epoch; seqs count per (source, epoch). Usage
     * events only (0 in gpu events). */
    int64_t epoch;
    char site[GM_EVENT_SITE_MAX + 1];
    /* gridmeter.usage.v1 */
    char model[GM_EVENT_MODEL_MAX + 1];
    char request_id[GM_EVENT_REQUEST_ID_MAX + 1]; /* optional: "" when absent */
    int64_t input_tokens;                         /* uncached prompt tokens */
    int64_t cached_tokens;                        /* prompt tokens served from the cache */
    int64_t output_tokens;                        /* generated tokens */
    /* Optional usage fields (revision 1.1 of the v1 data, docs/events.md "Versions"); 0 and
     * GM_SERVICE_TIER_STANDARD when absent, which is what an event without them meant. */
    int64_t reasoning_tokens;     /* PART of output_tokens: 0 <= reasoning <= output */
    int64_t cache_write_tokens;   /* prompt tokens written into the prompt cache: SEPARATE from
                                   * input_tokens and cached_tokens (prompt = the three) */
    gm_service_tier service_tier; /* standard, batch or priority */
    int64_t gpu_us;               /* both types: GPU kernel time */
    /* gridmeter.gpu.v1 */
    char device[GM_EVENT_DEVICE_MAX + 1];
    int64_t window_start_us; /* data.window_start */
    int64_t window_end_us;   /* data.window_end, > window_start_us */
    char policy[GM_EVENT_POLICY_MAX + 1];
    int64_t kernels;
    int64_t unattributed_us;
} gm_event;

/* Why a message was refused, in parts: `field` is the JSON path ("data.output_tokens",
 * "time") or "message" for the message as a whole (size, UTF-8, JSON syntax); `rule` says
 * which rule broke and what was found ("must be an integer between 0 and 2^53-1, got 1.5").
 * `source` and `id` are the event's, when they could be read (else ""). All text is
 * printable ASCII, whatever the message held, so it can be stored and logged as is. */
typedef struct gm_event_error {
    char field[64];
    char rule[224];
    size_t offset; /* byte offset in the message where the problem was found */
    char source[GM_EVENT_SOURCE_MAX + 1];
    char id[GM_EVENT_ID_MAX + 1];
} gm_event_error;

/* Decodes one message (not NUL-terminated; `len` bytes) into *out. Returns 0, or GM_EINVAL
 * with the reason in err (may be NULL), formatted
 *   "event edge/fra1/n17#991: data.output_tokens: must be an integer between 0 and 2^53-1,
 *    got 1.5"
 * or without the "event source#id: " part when those could not be read. On failure *out is
 * unspecified. Thread-safe; allocates nothing. */
int gm_event_decode(const char *msg, size_t len, gm_event *out, char *err,
                    size_t err_len) GM_MUSTCHECK;
/* The same, with the reason in parts (`e` may be NULL). */
int gm_event_decode_ex(const char *msg, size_t len, gm_event *out, gm_event_error *e) GM_MUSTCHECK;
/* Formats e as gm_event_decode does; returns the length it wanted (like snprintf). */
size_t gm_event_error_format(const gm_event_error *e, char *buf, size_t buf_len);

/* Checks an event built in memory (by the node client, or a test) against the same rules as
 * the decoder: 0 or GM_EINVAL naming the field and rule. */
int gm_event_check(const gm_event *ev, char *err, size_t err_len) GM_MUSTCHECK;

/* Writes the canonical JSON of an event into buf (NUL-terminated when it fits): fixed key
 * order, no whitespace, time with 6 fraction digits, datacontenttype included, request_id
 * left out when "". Returns the length without the NUL, or 0 when the event breaks a rule
 * (see gm_event_check) or it does not fit. gm_event_decode() of the output gives back an
 * equal event. GM_EVENT_MAX_BYTES + 1 always suffices. */
size_t gm_event_encode(const gm_event *ev, char *buf, size_t buf_len);

/* Field-by-field equality (strings compared as strings, unused fields included). */
bool gm_event_equal(const gm_event *a, const gm_event *b);

/* What a message the decoder refused still says about its identity, for the reject's
 * columns (gm.rejected_events source, event_id, seq, tenant, event_time) so that a seq that
 * arrived and was refused is no gap (audit.source_gaps): source, id and data.seq, each by
 * the contract's own rule, and when valid subject (else tenant "") and time (else time_us
 * INT64_MIN). A lenient JSON read: nothing else of the message is checked or kept. true
 * when source, id and seq were all read; otherwise *out is zeroed. */
bool gm_event_identity_of(const char *msg, size_t len, gm_event *out);

/* ---- Completing a node's event text (ingest/event_complete.c) --------------------------
 * `gridmeter emit` and the node agent accept events without what the node's client knows
 * better: specversion ("1.0"), type (gridmeter.usage.v1), source, time, data.site, and id
 * with data.seq (the node client assigns both). gm_event_complete inserts the missing members
 * as text after the top-level '{' and data's '{'; it never interprets a value, so the strict
 * decoder still checks every rule of the completed event. */
typedef struct gm_event_fill {
    const char *source; /* for events without "source" (NULL: not filled in) */
    const char *site;   /* data.site for events without one (NULL: not filled in) */
    int64_t time_us;    /* "time" for events without one */
    bool gpu_us;        /* usage events without data.gpu_us get "gpu_us":0 (and the flag) */
} gm_event_fill;

/* *filled after gm_event_complete: */
#define GM_EVENT_FILLED_NUMBERS                                                                    \
    1u                            /* neither id nor data.seq: placeholders put in, to be           \
                                   * replaced by the node client (gm_node_record_event) */
#define GM_EVENT_FILLED_GPU_US 2u /* data.gpu_us was missing; 0 put in */
/* The most bytes gm_event_complete adds to a message. */
#define GM_EVENT_FILL_EXTRA 640

/* Writes the completed text into out (out_cap >= len + GM_EVENT_FILL_EXTRA + 1 always
 * suffices; NUL-terminated) and its length into *out_len. Text that is not a plain JSON
 * object is copied unchanged (the decoder says what is wrong). Returns 0, or GM_EINVAL with
 * the reason in e when exactly one of id and data.seq is given (either the caller numbers its
 * events, with both, or the node does, with neither). */
int gm_event_complete(const char *msg, size_t len, const gm_event_fill *fill, char *out,
                      size_t out_cap, size_t *out_len, unsigned *filled,
                      gm_event_error *e) GM_MUSTCHECK;
/* gm_event_complete, then gm_event_decode_ex of the completed text into *ev. A refusal of the
 * message as a whole (size, UTF-8, JSON syntax) is reported against the text as sent (its byte
 * offsets are the sender's); a message that only the filled-in members take over 8192 bytes
 * says so. e may be NULL. */
int gm_event_complete_decode(const char *msg, size_t len, const gm_event_fill *fill, gm_event *ev,
                             unsigned *filled, gm_event_error *e) GM_MUSTCHECK;

/* "gridmeter.usage.v1", "gridmeter.gpu.v1", or "unknown". */
const char *gm_event_type_name(gm_event_type type);
/* "standard", "batch", "priority", or "unknown". */
const char *gm_service_tier_name(gm_service_tier tier);
/* Parses a tier name (exactly one of the three, lower case): 0, or -1 for anything else. */
int gm_service_tier_parse(const char *s, size_t len, gm_service_tier *out);

#endif /* GM_INGEST_H */
