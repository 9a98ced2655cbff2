/* `gridmeter emit`: usage events as JSON lines on stdin, to Kafka through the node client
 * library (spool, idempotent producer), for scripts, tests and small integrations.
 *
 * A line without `id` and `data.seq` gets both from the library (seq per source, persisted in
 * the spool); missing `specversion`, `type`, `source`, `time` and `data.site` are filled in
 * from the options and the clock. A line with both `id` and `data.seq` is the caller's own
 * numbering: it is checked strictly and sent as is (canonical JSON), nothing is assigned.
 * One of the two without the other is refused. --raw sends lines byte for byte, unchecked
 * (to feed malformed messages to a rater on purpose). */
#include "cli.h"
#include "gm_common.h"
#include "gm_node.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the top level and the data object of a line already have. */
typedef struct {
    bool specversion, type, source, id, time, data;
    bool data_seq, data_site;
    size_t top_open;  /* offset just after the top-level '{' */
    bool top_empty;   /* "{}" */
    size_t data_open; /* offset just after data's '{' (0: data is not an object) */
    bool data_empty;
} line_scan;

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

/* Walks the members of the object whose '{' is at s[i]; calls seen(key) for each. Returns the
 * offset after the closing '}' or 0 when the text is not a plain object (the strict decoder
 * then says what is wrong). */
static size_t scan_object(const char *s, size_t i, size_t n, line_scan *ls, bool top)
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
            ls->type |= KEY("type");
            ls->source |= KEY("source");
            ls->id |= KEY("id");
            ls->time |= KEY("time");
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

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->buf = gm_xrealloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

/* `ins` is a list of members without a trailing comma; it goes right after `open`. */
static void insert_members(sbuf *out, const char *line, size_t *copied, size_t open,
                           const char *ins, bool empty)
{
    if (!*ins)
        return;
    sb_put(out, line + *copied, open - *copied);
    sb_put(out, ins, strlen(ins));
    if (!empty)
        sb_put(out, ",", 1);
    *copied = open;
}

typedef struct {
    uint64_t lines, assigned, passed, raw, invalid, blank;
} emit_counts;

static void progress(const emit_counts *c, gm_node *n, int64_t t0, bool final)
{
    gm_node_stats st;
    gm_node_stats_get(n, &st);
    double secs = (double)(gm_mono_us() - t0) / 1e6;
    fprintf(stderr,
            "\remit: %" PRIu64 " lines, %" PRIu64 " sent, %" PRIu64 " invalid, %.0f lines/s, "
            "%" PRIu64 " not yet acknowledged%s",
            c->lines, c->assigned + c->passed + c->raw, c->invalid,
            secs > 0 ? (double)c->lines / secs : 0.0, st.unacked, final ? "\n" : "   ");
}

int gm_cmd_emit(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "emit",
        "Send usage events, JSON lines on stdin, to Kafka through the node client library\n"
        "(local spool first, then the idempotent producer). A line without id and data.seq\n"
        "gets both assigned (seq per source, persisted in the spool); a line with both is\n"
        "sent as the caller numbered it. Missing specversion, type, source, time and\n"
        "data.site are filled in. Exits 1 when a line was invalid or not everything was\n"
        "acknowledged by Kafka within --flush-timeout-ms (it stays in the spool).",
        "gridmeter emit [options] < events.jsonl"};
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    char def_source[128];
    snprintf(def_source, sizeof def_source, "edge/local/%s", host);
    for (char *p = def_source; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/", *p))
            *p = '-';
    gm_opt opts[] = {
        {"brokers", "kafka.brokers", "GRIDMETER_KAFKA_BROKERS", GM_DEFAULT_KAFKA_BROKERS,
         GM_OPT_STR, "Kafka bootstrap servers", 0, 0},
        {"topic", "kafka.topic", "GRIDMETER_TOPIC", GM_NODE_DEFAULT_TOPIC, GM_OPT_STR,
         "topic to produce to", 0, 0},
        {"source", "node.source", "GRIDMETER_NODE_SOURCE", def_source, GM_OPT_STR,
         "CloudEvents source for lines without one", 0, 0},
        {"site", "node.site", "GRIDMETER_NODE_SITE", "local", GM_OPT_STR,
         "data.site for lines without one", 0, 0},
        {"spool-dir", "node.spool_dir", "GRIDMETER_SPOOL_DIR", ".var/spool/emit", GM_OPT_STR,
         "spool directory (one process at a time)", 0, 0},
        {"spool-max-bytes", "node.spool_max_bytes", NULL, "1073741824", GM_OPT_INT,
         "bound on the spool files; when full, emit waits", 0, 0},
        {"fsync", "node.fsync", NULL, "batch", GM_OPT_STR,
         "spool fsync policy: event, batch or interval", 0, 0},
        {"fsync-interval-ms", "node.fsync_interval_ms", NULL, "100", GM_OPT_INT,
         "fsync period with --fsync interval", 0, 0},
        {"linger-ms", "node.linger_ms", NULL, "5", GM_OPT_INT, "producer linger.ms", 0, 0},
        {"flush-timeout-ms", NULL, NULL, "60000", GM_OPT_INT,
         "how long to wait at the end for Kafka's acknowledgements", 0, 0},
        {"raw", NULL, NULL, NULL, GM_OPT_FLAG,
         "send every line byte for byte, unchecked, keyed by --source", 0, 0},
        {"progress", NULL, NULL, NULL, GM_OPT_FLAG,
         "show progress even when stderr is not a terminal", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter emit: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter emit: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    gm_node_config cfg;
    gm_node_config_init(&cfg);
    cfg.brokers = gm_opt_str(opts, "brokers");
    cfg.topic = gm_opt_str(opts, "topic");
    cfg.source = gm_opt_str(opts, "source");
    cfg.site = gm_opt_str(opts, "site");
    cfg.spool_dir = gm_opt_str(opts, "spool-dir");
    cfg.spool_max_bytes = (uint64_t)gm_opt_int(opts, "spool-max-bytes");
    cfg.fsync_interval_ms = (int)gm_opt_int(opts, "fsync-interval-ms");
    cfg.linger_ms = (int)gm_opt_int(opts, "linger-ms");
    const char *fs = gm_opt_str(opts, "fsync");
    if (!strcmp(fs, "event"))
        cfg.fsync = GM_NODE_FSYNC_EVENT;
    else if (!strcmp(fs, "batch"))
        cfg.fsync = GM_NODE_FSYNC_BATCH;
    else if (!strcmp(fs, "interval"))
        cfg.fsync = GM_NODE_FSYNC_INTERVAL;
    else {
        fprintf(stderr, "gridmeter emit: --fsync must be event, batch or interval, got \"%s\"\n",
                fs);
        return 2;
    }
    int flush_ms = (int)gm_opt_int(opts, "flush-timeout-ms");
    bool raw = gm_opt_flag(opts, "raw");
    bool show = gm_opt_flag(opts, "progress") || isatty(2);

    gm_node *n = NULL;
    if (gm_node_open(&cfg, &n, err, sizeof err)) {
        fprintf(stderr, "gridmeter emit: %s\n", err);
        return 1;
    }
    emit_counts c = {0};
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    sbuf fixed = {0};
    int64_t t0 = gm_mono_us(), last_progress = t0;
    bool told_full = false;
    while ((len = getline(&line, &line_cap, stdin)) >= 0) {
        c.lines++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        size_t i = skip_ws(line, 0, (size_t)len);
        if (i == (size_t)len) {
            c.blank++;
            continue;
        }
        for (;;) {
            if (raw) {
                rc = gm_node_send_raw(n, NULL, line, (size_t)len, err, sizeof err);
                if (!rc)
                    c.raw++;
            } else {
                line_scan ls = {0};
                bool plain = line[i] == '{' && scan_object(line, i, (size_t)len, &ls, true);
                bool assign = plain && !ls.id && !(ls.data && ls.data_seq);
                const char *msg = line;
                size_t msg_len = (size_t)len;
                if (plain && ls.id != ls.data_seq) {
                    rc = gm_fail(err, sizeof err, GM_EINVAL,
                                 "%s: give id and data.seq together (your own numbering) or "
                                 "neither (the library assigns both)",
                                 ls.id ? "data.seq" : "id");
                    break;
                }
                if (plain) {
                    char top[512] = "", now[40];
                    size_t tl = 0;
#define ADD(...) tl += (size_t)snprintf(top + tl, sizeof top - tl, __VA_ARGS__)
                    if (!ls.specversion)
                        ADD("%s\"specversion\":\"1.0\"", tl ? "," : "");
                    if (!ls.type)
                        ADD("%s\"type\":\"gridmeter.usage.v1\"", tl ? "," : "");
                    if (!ls.source)
                        ADD("%s\"source\":\"%s\"", tl ? "," : "", cfg.source);
                    if (assign)
                        ADD("%s\"id\":\"to-be-assigned\"", tl ? "," : "");
                    if (!ls.time) {
                        gm_time_format(gm_now_us(), now, sizeof now);
                        ADD("%s\"time\":\"%s\"", tl ? "," : "", now);
                    }
#undef ADD
                    char dat[256] = "";
                    if (ls.data_open)
                        snprintf(dat, sizeof dat, "%s%s%s%s%s", assign ? "\"seq\":1" : "",
                                 assign && !ls.data_site ? "," : "",
                                 ls.data_site ? "" : "\"site\":\"", ls.data_site ? "" : cfg.site,
                                 ls.data_site ? "" : "\"");
                    fixed.len = 0;
                    size_t copied = 0;
                    insert_members(&fixed, line, &copied, ls.top_open, top, ls.top_empty);
                    if (ls.data_open)
                        insert_members(&fixed, line, &copied, ls.data_open, dat, ls.data_empty);
                    sb_put(&fixed, line + copied, (size_t)len - copied);
                    msg = fixed.buf;
                    msg_len = fixed.len;
                }
                gm_event ev;
                rc = gm_event_decode(msg, msg_len, &ev, err, sizeof err);
                if (rc)
                    break;
                if (assign) {
                    rc = gm_node_record_event(n, &ev, err, sizeof err);
                    if (!rc)
                        c.assigned++;
                } else {
                    char canon[GM_EVENT_MAX_BYTES + 1];
                    size_t cl = gm_event_encode(&ev, canon, sizeof canon);
                    rc = gm_node_send_raw(n, ev.source, canon, cl, err, sizeof err);
                    if (!rc)
                        c.passed++;
                }
            }
            if (rc != GM_EFULL)
                break;
            if (!told_full) {
                fprintf(stderr, "\ngridmeter emit: waiting: %s\n", err);
                told_full = true;
            }
            usleep(10000); /* back-pressure: wait for Kafka to acknowledge */
        }
        if (rc) {
            c.invalid++;
            fprintf(stderr, "%sline %" PRIu64 ": %s\n", show ? "\n" : "", c.lines, err);
        }
        if (show && gm_mono_us() - last_progress > 500000) {
            progress(&c, n, t0, false);
            last_progress = gm_mono_us();
        }
    }
    free(line);
    free(fixed.buf);
    int flush_rc = gm_node_flush(n, flush_ms, err, sizeof err);
    if (show)
        progress(&c, n, t0, true);
    double secs = (double)(gm_mono_us() - t0) / 1e6;
    printf("emit: %" PRIu64 " lines: %" PRIu64 " recorded (id and seq assigned), %" PRIu64
           " sent with their own id and seq, %" PRIu64 " raw, %" PRIu64 " invalid, %" PRIu64
           " blank; %s in %.2f s\n",
           c.lines, c.assigned, c.passed, c.raw, c.invalid, c.blank,
           flush_rc ? "NOT all acknowledged" : "all acknowledged by Kafka", secs);
    if (flush_rc)
        fprintf(stderr, "gridmeter emit: %s\n", err);
    gm_node_close(n);
    return c.invalid || flush_rc ? 1 : 0;
}
