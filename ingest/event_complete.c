/* Completing a node's event text before the strict decoder sees it (`gridmeter emit`, the node
 * agent): the members a node's client knows better than the server that sent the event
 * (specversion, type, source, time, data.site, id with data.seq, and data.gpu_us where GPU
 * accounting fills it) are inserted as text right after the top-level '{' and after data's '{'.
 *
 * DESIGN. The scan only finds member names (strings aware of escapes, brackets counted); it
 * never interprets a value, so nothing here can accept what the decoder would refuse: the
 * completed text goes through gm_event_decode_ex, which checks every rule. Text that is not a
 * plain object is passed on unchanged, and the decoder says what is wrong with it. A refusal of
 * the message as a whole (size, UTF-8, JSON syntax) is reported against the text as sent, so
 * that its byte offsets are the sender's.
 */
#include "gm_ingest.h"

#include <stdio.h>
#include <string.h>

/* What the top level and the data object of a message already have. */
typedef struct {
    bool specversion, type, type_gpu, source, id, time, data;
    bool data_seq, data_site, data_gpu_us;
    size_t top_open;  /* offset just after the top-level '{' */
    bool top_empty;   /* "{}" */
    size_t data_open; /* offset just after data's '{' (0: data is not an object) */
    bool data_empty;
} scan;

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* Skips a JSON string starting at s[i] == '"'; returns the offset after it or 0. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* Skips any JSON value (strings aware of escapes, brackets counted). */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    int depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            i = skip_string(s, i, n);
            if (!i)
                return 0;
            if (!depth)
                return i;
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (!depth)
                return i;
            if (!--depth)
                return i + 1;
        } else if (!depth && (c == ',')) {
            return i;
        }
        i++;
    }
    return depth ? 0 : i;
}

/* Walks the members of the object whose '{' is at s[i]. Returns the offset after the closing
 * '}' or 0 when the text is not a plain object (the strict decoder then says what is wrong). */
static size_t scan_object(const char *s, size_t i, size_t n, scan *ls, bool top)
{
    size_t open = i + 1;
    i = skip_ws(s, open, n);
    if (top) {
        ls->top_open = open;
        ls->top_empty = i < n && s[i] == '}';
    } else {
        ls->data_open = open;
        ls->data_empty = i < n && s[i] == '}';
    }
    if (i < n && s[i] == '}')
        return i + 1;
    while (i < n) {
        if (s[i] != '"')
            return 0;
        size_t k0 = i + 1, k1 = skip_string(s, i, n);
        if (!k1)
            return 0;
        size_t klen = k1 - 1 - k0;
        const char *k = s + k0;
#define KEY(lit) (klen == sizeof(lit) - 1 && !memcmp(k, lit, klen))
        i = skip_ws(s, k1, n);
        if (i >= n || s[i] != ':')
            return 0;
        i = skip_ws(s, i + 1, n);
        if (top) {
            ls->specversion |= KEY("specversion");
            ls->source |= KEY("source");
            ls->id |= KEY("id");
            ls->time |= KEY("time");
            if (KEY("type")) {
                static const char gpu[] = "\"gridmeter.gpu.v1\"";
                ls->type = true;
                ls->type_gpu = n - i >= sizeof gpu - 1 && !memcmp(s + i, gpu, sizeof gpu - 1);
            }
            if (KEY("data")) {
                ls->data = true;
                if (i < n && s[i] == '{') {
                    i = scan_object(s, i, n, ls, false);
                    if (!i)
                        return 0;
                    goto next;
                }
            }
        } else {
            ls->data_seq |= KEY("seq");
            ls->data_site |= KEY("site");
            ls->data_gpu_us |= KEY("gpu_us");
        }
#undef KEY
        i = skip_value(s, i, n);
        if (!i)
            return 0;
    next:
        i = skip_ws(s, i, n);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, i + 1, n);
            continue;
        }
        if (i < n && s[i] == '}')
            return i + 1;
        return 0;
    }
    return 0;
}

static void set_error(gm_event_error *e, const char *field, const char *rule)
{
    if (!e)
        return;
    memset(e, 0, sizeof *e);
    snprintf(e->field, sizeof e->field, "%s", field);
    snprintf(e->rule, sizeof e->rule, "%s", rule);
}

/* Appends to out; false when it does not fit. */
static bool put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + n >= cap)
        return false;
    memcpy(out + *len, s, n);
    *len += n;
    return true;
}

/* Appends one member (its parts, a NULL-terminated list), comma-separated from the ones
 * before; *len becomes cap when it does not fit. */
static void member(char *buf, size_t cap, size_t *len, const char *const *parts)
{
    size_t l = *len;
    if (l >= cap)
        return;
    if (l)
        buf[l++] = ',';
    for (; *parts; parts++) {
        size_t n = strlen(*parts);
        if (l + n >= cap) {
            *len = cap;
            return;
        }
        memcpy(buf + l, *parts, n);
        l += n;
    }
    buf[l] = '\0';
    *len = l;
}

int gm_event_complete(const char *msg, size_t len, const gm_event_fill *fill, char *out,
                      size_t out_cap, size_t *out_len, unsigned *filled, gm_event_error *e)
{
    *filled = 0;
    *out_len = 0;
    scan ls = {0};
    size_t i = skip_ws(msg, 0, len);
    bool plain = i < len && msg[i] == '{' && scan_object(msg, i, len, &ls, true) != 0;
    if (plain && ls.id != ls.data_seq) {
        set_error(e, ls.id ? "data.seq" : "id",
                  "give id and data.seq together (your own numbering) or neither (the node "
                  "assigns both)");
        return GM_EINVAL;
    }
    if (!plain) { /* the decoder says what is wrong */
        if (len >= out_cap) {
            set_error(e, "message", "does not fit the completion buffer");
            return GM_EINVAL;
        }
        memcpy(out, msg, len);
        out[len] = '\0';
        *out_len = len;
        return 0;
    }
    bool numbers = !ls.id && !(ls.data && ls.data_seq);
    char top[GM_EVENT_SOURCE_MAX + 256], dat[GM_EVENT_SITE_MAX + 64], now[40];
    size_t tl = 0, dl = 0;
    /* members are appended with memcpy (this is on every event's path; no printf) */
#define ADD(buf, l, ...) member(buf, sizeof buf, &l, (const char *[]){__VA_ARGS__, NULL})
    if (!ls.specversion)
        ADD(top, tl, "\"specversion\":\"1.0\"");
    if (!ls.type)
        ADD(top, tl, "\"type\":\"gridmeter.usage.v1\"");
    if (!ls.source && fill->source && *fill->source)
        ADD(top, tl, "\"source\":\"", fill->source, "\"");
    if (numbers)
        ADD(top, tl, "\"id\":\"to-be-assigned\"");
    if (!ls.time) {
        /* the events of one request share the instant: format it once per thread and instant */
        static __thread int64_t cached_us = -1;
        static __thread char cached[40];
        if (fill->time_us != cached_us) {
            gm_time_format(fill->time_us, cached, sizeof cached);
            cached_us = fill->time_us;
        }
        memcpy(now, cached, sizeof now);
        ADD(top, tl, "\"time\":\"", now, "\"");
    }
    if (ls.data_open) {
        if (numbers)
            ADD(dat, dl, "\"seq\":1");
        if (!ls.data_site && fill->site && *fill->site)
            ADD(dat, dl, "\"site\":\"", fill->site, "\"");
        if (!ls.data_gpu_us && fill->gpu_us && !ls.type_gpu) {
            ADD(dat, dl, "\"gpu_us\":0");
            *filled |= GM_EVENT_FILLED_GPU_US;
        }
    }
#undef ADD
    if (tl >= sizeof top || dl >= sizeof dat) {
        set_error(e, "message", "the node's defaults (source, site) are too long to fill in");
        return GM_EINVAL;
    }
    size_t o = 0, copied = 0;
    bool ok = true;
    /* top-level members right after its '{', data's right after data's '{' */
    if (tl) {
        ok = ok && put(out, out_cap, &o, msg + copied, ls.top_open - copied);
        ok = ok && put(out, out_cap, &o, top, tl);
        ok = ok && (ls.top_empty || put(out, out_cap, &o, ",", 1));
        copied = ls.top_open;
    }
    if (dl) {
        ok = ok && put(out, out_cap, &o, msg + copied, ls.data_open - copied);
        ok = ok && put(out, out_cap, &o, dat, dl);
        ok = ok && (ls.data_empty || put(out, out_cap, &o, ",", 1));
        copied = ls.data_open;
    }
    ok = ok && put(out, out_cap, &o, msg + copied, len - copied);
    if (!ok) {
        set_error(e, "message", "does not fit the completion buffer");
        return GM_EINVAL;
    }
    out[o] = '\0';
    *out_len = o;
    if (numbers)
        *filled |= GM_EVENT_FILLED_NUMBERS;
    return 0;
}

int gm_event_complete_decode(const char *msg, size_t len, const gm_event_fill *fill, gm_event *ev,
                             unsigned *filled, gm_event_error *e)
{
    *filled = 0;
    if (len > GM_EVENT_MAX_BYTES) /* refused before it is parsed: say so about the sent text */
        return gm_event_decode_ex(msg, len, ev, e);
    char buf[GM_EVENT_MAX_BYTES + GM_EVENT_FILL_EXTRA + 1];
    size_t n = 0;
    int rc = gm_event_complete(msg, len, fill, buf, sizeof buf, &n, filled, e);
    if (rc)
        return rc;
    rc = gm_event_decode_ex(buf, n, ev, e);
    if (rc == 0 || !e || strcmp(e->field, "message") != 0)
        return rc;
    /* The message as a whole: report it against the text as sent. */
    gm_event_error orig;
    gm_event tmp;
    if (gm_event_decode_ex(msg, len, &tmp, &orig) != 0 && !strcmp(orig.field, "message")) {
        *e = orig;
    } else if (n > GM_EVENT_MAX_BYTES) {
        snprintf(e->rule, sizeof e->rule,
                 "must be at most %d bytes with the members the node fills in (source, time, id, "
                 "seq, site), got %zu (%zu as sent)",
                 GM_EVENT_MAX_BYTES, n, len);
    }
    return rc;
}
