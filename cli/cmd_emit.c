/* `gridmeter emit`: usage events as JSON lines on stdin, to Kafka through the node client
 * library (spool, idempotent producer), for scripts, tests and small integrations.
 *
 * A line without `id` and `data.seq` gets both from the library (seq per source, persisted in
 * the spool); missing `specversion`, `type`, `source`, `time` and `data.site` are filled in
 * from the options and the clock (gm_event_complete, ingest/event_complete.c: the same rule as
 * the node agent's). A line with both `id` and `data.seq` is the caller's own
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
        {"require-state", "node.require_state", NULL, NULL, GM_OPT_FLAG,
         "refuse to start when the spool holds no state (lost or wiped: see --new-epoch)", 0, 0},
        {"new-epoch", NULL, NULL, NULL, GM_OPT_FLAG,
         "start a new epoch of the source now: seq from 1, data.epoch = the Unix time", 0, 0},
        {"new-epoch-if-lost", "node.new_epoch_if_lost", NULL, NULL, GM_OPT_FLAG,
         "when the spool holds no state, start a new epoch instead of epoch 0", 0, 0},
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
    cfg.new_epoch = gm_opt_flag(opts, "new-epoch");
    cfg.missing_state = gm_opt_flag(opts, "require-state")       ? GM_NODE_STATE_REQUIRE
                        : gm_opt_flag(opts, "new-epoch-if-lost") ? GM_NODE_STATE_NEW_EPOCH
                                                                 : GM_NODE_STATE_FIRST_START;
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
    int64_t t0 = gm_mono_us(), last_progress = t0;
    bool told_full = false;
    while ((len = getline(&line, &line_cap, stdin)) >= 0) {
        c.lines++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
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
                gm_event ev;
                gm_event_error e;
                unsigned filled = 0;
                gm_event_fill fill = {
                    .source = cfg.source, .site = cfg.site, .time_us = gm_now_us()};
                rc = gm_event_complete_decode(line, (size_t)len, &fill, &ev, &filled, &e);
                if (rc) {
                    gm_event_error_format(&e, err, sizeof err);
                    break;
                }
                if (filled & GM_EVENT_FILLED_NUMBERS) {
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
