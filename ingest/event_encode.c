/* Event checking and the canonical encoder: the rules on an in-memory gm_event, the one JSON
 * text gridmeter writes for it, and the character classes the decoder shares. */
#include "event_internal.h"

#include <inttypes.h>
#include <string.h>

/* See the EVENT__C_* bits in event_internal.h (generated; 0x80..0xff are PLAIN because the
 * decoder validates UTF-8 before it looks at strings). */
const unsigned char event__class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  16, 16, 0,  16, 16, 16, 16, 16, 16, 16, 16, 18, 16, 19, 19, 18,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 18, 16, 16, 18, 16, 16, 18, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 16, 0,  16, 16, 19,
    16, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 16, 16, 16, 18, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
};

int event__ident_check(const char *s, size_t len, gm_ident_kind kind, bool optional, char *rule,
                       size_t rule_len)
{
    if (len == 0 && optional)
        return 0;
    return gm_ident_check(kind, s, len, rule, rule_len);
}

const char *gm_event_type_name(gm_event_type type)
{
    switch (type) {
    case GM_EVENT_USAGE:
        return "gridmeter.usage.v1";
    case GM_EVENT_GPU:
        return "gridmeter.gpu.v1";
    }
    return "unknown";
}

static const char *const service_tier_names[GM_SERVICE_TIER_COUNT] = {"standard", "batch",
                                                                      "priority"};

const char *gm_service_tier_name(gm_service_tier tier)
{
    return (unsigned)tier < GM_SERVICE_TIER_COUNT ? service_tier_names[tier] : "unknown";
}

int gm_service_tier_parse(const char *s, size_t len, gm_service_tier *out)
{
    for (int t = 0; t < GM_SERVICE_TIER_COUNT; t++)
        if (strlen(service_tier_names[t]) == len && !memcmp(service_tier_names[t], s, len)) {
            *out = (gm_service_tier)t;
            return 0;
        }
    return -1;
}

static int check_ident(const char *field, const char *s, size_t cap, gm_ident_kind kind,
                       bool optional, char *err, size_t err_len)
{
    size_t len = strnlen(s, cap);
    if (len == cap)
        return gm_fail(err, err_len, GM_EINVAL, "%s: is not NUL-terminated", field);
    char rule[160];
    if (event__ident_check(s, len, kind, optional, rule, sizeof rule))
        return gm_fail(err, err_len, GM_EINVAL, "%s: %s", field, rule);
    return 0;
}

static int check_quantity(const char *field, int64_t v, int64_t min, char *err, size_t err_len)
{
    if (v < min || v > GM_EVENT_MAX_QUANTITY)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be an integer between %" PRId64 " and 2^53-1, got %" PRId64, field,
                       min, v);
    return 0;
}

static int check_time(const char *field, int64_t us, char *err, size_t err_len)
{
    if (us < 0 || us > EVENT__TIME_MAX_US)
        return gm_fail(err, err_len, GM_EINVAL,
                       "%s: must be between 1970-01-01T00:00:00Z and "
                       "9999-12-31T23:59:59.999999Z, got %" PRId64 " us",
                       field, us);
    return 0;
}

#define IDENT(field, member, kind, opt)                                                            \
    do {                                                                                           \
        int rc_ = check_ident(field, ev->member, sizeof ev->member, kind, opt, err, err_len);      \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)
#define QTY(field, v, min)                                                                         \
    do {                                                                                           \
        int rc_ = check_quantity(field, v, min, err, err_len);                                     \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)
#define TIME(field, v)                                                                             \
    do {                                                                                           \
        int rc_ = check_time(field, v, err, err_len);                                              \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

int gm_event_check(const gm_event *ev, char *err, size_t err_len)
{
    if (ev->type != GM_EVENT_USAGE && ev->type != GM_EVENT_GPU)
        return gm_fail(err, err_len, GM_EINVAL,
                       "type: must be GM_EVENT_USAGE or GM_EVENT_GPU, got %d", (int)ev->type);
    IDENT("source", source, GM_IDENT_SOURCE, false);
    IDENT("id", id, GM_IDENT_EVENT_ID, false);
    IDENT("subject", tenant, GM_IDENT_TENANT, false);
    TIME("time", ev->time_us);
    QTY("data.seq", (int64_t)(ev->seq > (uint64_t)INT64_MAX ? INT64_MAX : ev->seq), 1);
    IDENT("data.site", site, GM_IDENT_SITE, false);
    if (ev->type == GM_EVENT_USAGE) {
        IDENT("data.model", model, GM_IDENT_MODEL, false);
        IDENT("data.request_id", request_id, GM_IDENT_REQUEST_ID, true);
        QTY("data.input_tokens", ev->input_tokens, 0);
        QTY("data.cached_tokens", ev->cached_tokens, 0);
        QTY("data.output_tokens", ev->output_tokens, 0);
        QTY("data.reasoning_tokens", ev->reasoning_tokens, 0);
        QTY("data.cache_write_tokens", ev->cache_write_tokens, 0);
        QTY("data.gpu_us", ev->gpu_us, 0);
        QTY("data.epoch", ev->epoch, 0);
        if (ev->reasoning_tokens > ev->output_tokens)
            return gm_fail(err, err_len, GM_EINVAL, EVENT__PART_RULE, ev->reasoning_tokens,
                           ev->output_tokens);
        if ((unsigned)ev->service_tier >= GM_SERVICE_TIER_COUNT)
            return gm_fail(err, err_len, GM_EINVAL,
                           "data.service_tier: must be \"standard\", \"batch\" or \"priority\", "
                           "got %d",
                           (int)ev->service_tier);
    } else {
        if (ev->epoch)
            return gm_fail(err, err_len, GM_EINVAL,
                           "data.epoch: is not a field of gridmeter.gpu.v1 data (usage events "
                           "only), got %" PRId64,
                           ev->epoch);
        IDENT("data.device", device, GM_IDENT_DEVICE, false);
        TIME("data.window_start", ev->window_start_us);
        TIME("data.window_end", ev->window_end_us);
        if (ev->window_end_us <= ev->window_start_us)
            return gm_fail(err, err_len, GM_EINVAL,
                           "data.window_end: must be later than data.window_start");
        QTY("data.gpu_us", ev->gpu_us, 0);
        IDENT("data.policy", policy, GM_IDENT_POLICY, false);
        QTY("data.kernels", ev->kernels, 0);
        QTY("data.unattributed_us", ev->unattributed_us, 0);
    }
    return 0;
}

/* ---- Encoder ---------------------------------------------------------------------------
 * Identifiers need no escaping (their character sets hold no '"', '\\' or controls), so
 * the encoder only copies. A writer that ran out of room remembers it and the result is 0. */
typedef struct {
    char *p, *end;
    bool full;
} writer;

static void put(writer *w, const char *s, size_t n)
{
    if (w->full || (size_t)(w->end - w->p) < n) {
        w->full = true;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}
#define PUT_LIT(w, lit) put(w, lit, sizeof(lit) - 1)

static void put_str(writer *w, const char *s)
{
    put(w, s, strlen(s));
}

static void put_u64(writer *w, uint64_t v)
{
    char b[24];
    char *q = b + sizeof b;
    do {
        *--q = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(w, q, (size_t)(b + sizeof b - q));
}

static void put_time(writer *w, int64_t us)
{
    char b[40];
    gm_time_format(us, b, sizeof b);
    put_str(w, b);
}

size_t gm_event_encode(const gm_event *ev, char *buf, size_t buf_len)
{
    if (gm_event_check(ev, NULL, 0) || buf_len == 0)
        return 0;
    writer w = {buf, buf + buf_len - 1, false}; /* room for the NUL */
    PUT_LIT(&w, "{\"specversion\":\"1.0\",\"type\":\"");
    put_str(&w, gm_event_type_name(ev->type));
    PUT_LIT(&w, "\",\"source\":\"");
    put_str(&w, ev->source);
    PUT_LIT(&w, "\",\"id\":\"");
    put_str(&w, ev->id);
    PUT_LIT(&w, "\",\"time\":\"");
    put_time(&w, ev->time_us);
    PUT_LIT(&w, "\",\"subject\":\"");
    put_str(&w, ev->tenant);
    PUT_LIT(&w, "\",\"datacontenttype\":\"application/json\",\"data\":{\"seq\":");
    put_u64(&w, ev->seq);
    if (ev->type == GM_EVENT_USAGE && ev->epoch) { /* revision 1.2: left out at 0 */
        PUT_LIT(&w, ",\"epoch\":");
        put_u64(&w, (uint64_t)ev->epoch);
    }
    PUT_LIT(&w, ",\"site\":\"");
    put_str(&w, ev->site);
    if (ev->type == GM_EVENT_USAGE) {
        PUT_LIT(&w, "\",\"model\":\"");
        put_str(&w, ev->model);
        if (ev->request_id[0]) {
            PUT_LIT(&w, "\",\"request_id\":\"");
            put_str(&w, ev->request_id);
        }
        PUT_LIT(&w, "\",\"input_tokens\":");
        put_u64(&w, (uint64_t)ev->input_tokens);
        PUT_LIT(&w, ",\"cached_tokens\":");
        put_u64(&w, (uint64_t)ev->cached_tokens);
        if (ev->cache_write_tokens) {
            PUT_LIT(&w, ",\"cache_write_tokens\":");
            put_u64(&w, (uint64_t)ev->cache_write_tokens);
        }
        PUT_LIT(&w, ",\"output_tokens\":");
        put_u64(&w, (uint64_t)ev->output_tokens);
        if (ev->reasoning_tokens) {
            PUT_LIT(&w, ",\"reasoning_tokens\":");
            put_u64(&w, (uint64_t)ev->reasoning_tokens);
        }
        PUT_LIT(&w, ",\"gpu_us\":");
        put_u64(&w, (uint64_t)ev->gpu_us);
        if (ev->service_tier != GM_SERVICE_TIER_STANDARD) {
            PUT_LIT(&w, ",\"service_tier\":\"");
            put_str(&w, gm_service_tier_name(ev->service_tier));
            PUT_LIT(&w, "\"");
        }
    } else {
        PUT_LIT(&w, "\",\"device\":\"");
        put_str(&w, ev->device);
        PUT_LIT(&w, "\",\"window_start\":\"");
        put_time(&w, ev->window_start_us);
        PUT_LIT(&w, "\",\"window_end\":\"");
        put_time(&w, ev->window_end_us);
        PUT_LIT(&w, "\",\"gpu_us\":");
        put_u64(&w, (uint64_t)ev->gpu_us);
        PUT_LIT(&w, ",\"policy\":\"");
        put_str(&w, ev->policy);
        PUT_LIT(&w, "\",\"kernels\":");
        put_u64(&w, (uint64_t)ev->kernels);
        PUT_LIT(&w, ",\"unattributed_us\":");
        put_u64(&w, (uint64_t)ev->unattributed_us);
    }
    PUT_LIT(&w, "}}");
    if (w.full)
        return 0;
    *w.p = '\0';
    return (size_t)(w.p - buf);
}

bool gm_event_equal(const gm_event *a, const gm_event *b)
{
    return a->type == b->type && !strcmp(a->source, b->source) && !strcmp(a->id, b->id) &&
           !strcmp(a->tenant, b->tenant) && a->time_us == b->time_us && a->seq == b->seq &&
           a->epoch == b->epoch && !strcmp(a->site, b->site) && !strcmp(a->model, b->model) &&
           !strcmp(a->request_id, b->request_id) && a->input_tokens == b->input_tokens &&
           a->cached_tokens == b->cached_tokens && a->output_tokens == b->output_tokens &&
           a->reasoning_tokens == b->reasoning_tokens &&
           a->cache_write_tokens == b->cache_write_tokens && a->service_tier == b->service_tier &&
           a->gpu_us == b->gpu_us && !strcmp(a->device, b->device) &&
           a->window_start_us == b->window_start_us && a->window_end_us == b->window_end_us &&
           !strcmp(a->policy, b->policy) && a->kernels == b->kernels &&
           a->unattributed_us == b->unattributed_us;
}

size_t gm_event_error_format(const gm_event_error *e, char *buf, size_t buf_len)
{
    int n;
    if (e->source[0] && e->id[0])
        n = snprintf(buf, buf_len, "event %s#%s: %s: %s", e->source, e->id, e->field, e->rule);
    else
        n = snprintf(buf, buf_len, "%s: %s", e->field, e->rule);
    return n < 0 ? 0 : (size_t)n;
}
