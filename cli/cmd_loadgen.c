/* `gridmeter loadgen`: simulates many edge sites and nodes sending usage events through the
 * node client library, with optional duplicate re-sends and malformed messages, and writes the
 * manifest of exact expected totals that reconciliation tests compare against. */
#include "cli.h"
#include "gm_common.h"
#include "gm_node.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "90", "90s", "15m", "2h", "30d" -> seconds. */
static int parse_duration(const char *s, uint64_t *out_s)
{
    size_t len = strlen(s);
    uint64_t mult = 1;
    if (len && strchr("smhd", s[len - 1])) {
        mult = s[len - 1] == 's' ? 1 : s[len - 1] == 'm' ? 60 : s[len - 1] == 'h' ? 3600 : 86400;
        len--;
    }
    uint64_t v;
    if (gm_parse_u64(s, len, UINT64_MAX / 86400, &v))
        return GM_EINVAL;
    *out_s = v * mult;
    return 0;
}

/* "0.05" -> 50000 parts per million. */
static int parse_share(const char *name, const char *s, uint32_t *ppm, char *err, size_t err_len)
{
    gm_i128 v;
    char e[256];
    if (gm_dec_parse(s, strlen(s), 6, &v, e, sizeof e) || v < 0 || v > 1000000)
        return gm_fail(err, err_len, GM_EINVAL,
                       "--%s: must be a share between 0 and 1 with at most 6 decimals, got \"%s\"",
                       name, s);
    *ppm = (uint32_t)v;
    return 0;
}

int gm_cmd_loadgen(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "loadgen",
        "Simulate edge sites and inference nodes sending usage events through the node\n"
        "client library (one spool, one producer, one source per simulated node), with\n"
        "long-tailed prompts, cache hits, outputs and GPU time, optional duplicate re-sends\n"
        "and malformed messages. Writes a manifest with the exact totals per tenant, model,\n"
        "site and dimension of the valid distinct events. Without --start, event times are\n"
        "the clock and the run is paced at --rate; with --start, a simulated clock advances\n"
        "1/rate per event and the run goes as fast as it can (backfills).",
        "gridmeter loadgen [options] (--count N | --duration D)"};
    gm_opt opts[] = {
        {"brokers", "kafka.brokers", "GRIDMETER_KAFKA_BROKERS", GM_DEFAULT_KAFKA_BROKERS,
         GM_OPT_STR, "Kafka bootstrap servers", 0, 0},
        {"topic", "kafka.topic", "GRIDMETER_TOPIC", GM_NODE_DEFAULT_TOPIC, GM_OPT_STR,
         "topic to produce to", 0, 0},
        {"spool-dir", "loadgen.spool_dir", NULL, ".var/spool/loadgen", GM_OPT_STR,
         "spool directory (use a fresh one per run: seqs continue from it)", 0, 0},
        {"spool-max-bytes", NULL, NULL, "1073741824", GM_OPT_INT, "bound on the spool files", 0, 0},
        {"fsync", NULL, NULL, "batch", GM_OPT_STR, "spool fsync policy: event, batch, interval", 0,
         0},
        {"sites", NULL, NULL, "4", GM_OPT_INT, "edge sites", 0, 0},
        {"source-prefix", NULL, NULL, "edge", GM_OPT_STR,
         "sources are PREFIX/<site>/node-NNN (e.g. a run id, to tell runs apart)", 0, 0},
        {"nodes-per-site", NULL, NULL, "2", GM_OPT_INT, "inference nodes per site", 0, 0},
        {"tenants", NULL, NULL, "5", GM_OPT_INT, "tenants (Zipf-distributed traffic)", 0, 0},
        {"models", NULL, NULL, "3", GM_OPT_INT, "models, 1..8 (Zipf-distributed traffic)", 0, 0},
        {"rate", NULL, NULL, "1000", GM_OPT_INT, "events per second (simulated with --start)", 0,
         0},
        {"count", NULL, NULL, "0", GM_OPT_INT, "messages to send in all", 0, 0},
        {"duration", NULL, NULL, "", GM_OPT_STR,
         "or: how long, e.g. 60s, 15m, 2h, 30d (count = rate * duration)", 0, 0},
        {"seed", NULL, NULL, "1", GM_OPT_INT, "random seed (same seed, same events)", 0, 0},
        {"duplicates", NULL, NULL, "0", GM_OPT_STR,
         "share of messages that re-send an earlier event (same source and id), e.g. 0.02", 0, 0},
        {"malformed", NULL, NULL, "0", GM_OPT_STR,
         "share of malformed messages (fractional, negative, missing field, bad time, "
         "oversize, invalid UTF-8)",
         0, 0},
        {"start", NULL, NULL, "", GM_OPT_STR,
         "RFC 3339 time of the first event: simulated clock (backfill)", 0, 0},
        {"manifest", NULL, NULL, "loadgen-manifest.json", GM_OPT_STR, "where to write the manifest",
         0, 0},
        {"flush-timeout-ms", NULL, NULL, "120000", GM_OPT_INT,
         "how long to wait at the end for Kafka's acknowledgements", 0, 0},
        {"progress", NULL, NULL, NULL, GM_OPT_FLAG,
         "show progress even when stderr is not a terminal", 0, 0},
        {"require-state", NULL, NULL, NULL, GM_OPT_FLAG,
         "refuse to start when the spool holds no state (lost or wiped: see --new-epoch)", 0, 0},
        {"new-epoch", NULL, NULL, NULL, GM_OPT_FLAG,
         "start a new epoch of the source now: seq from 1, data.epoch = the Unix time", 0, 0},
        {"new-epoch-if-lost", NULL, NULL, NULL, GM_OPT_FLAG,
         "when the spool holds no state, start a new epoch instead of epoch 0", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter loadgen: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter loadgen: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    gm_loadgen_config lc;
    gm_loadgen_config_init(&lc);
    lc.sites = (int)gm_opt_int(opts, "sites");
    lc.nodes_per_site = (int)gm_opt_int(opts, "nodes-per-site");
    lc.tenants = (int)gm_opt_int(opts, "tenants");
    lc.models = (int)gm_opt_int(opts, "models");
    lc.seed = (uint64_t)gm_opt_int(opts, "seed");
    lc.source_prefix = gm_opt_str(opts, "source-prefix");
    int64_t rate = gm_opt_int(opts, "rate");
    if (rate < 1) {
        fprintf(stderr, "gridmeter loadgen: --rate must be at least 1\n");
        return 2;
    }
    lc.rate = (uint64_t)rate;
    if (parse_share("duplicates", gm_opt_str(opts, "duplicates"), &lc.duplicate_ppm, err,
                    sizeof err) ||
        parse_share("malformed", gm_opt_str(opts, "malformed"), &lc.malformed_ppm, err,
                    sizeof err)) {
        fprintf(stderr, "gridmeter loadgen: %s\n", err);
        return 2;
    }
    const char *start = gm_opt_str(opts, "start");
    if (*start && gm_time_parse(start, strlen(start), &lc.start_us, err, sizeof err)) {
        fprintf(stderr, "gridmeter loadgen: --start: %s\n", err);
        return 2;
    }
    uint64_t count = (uint64_t)gm_opt_int(opts, "count");
    const char *dur = gm_opt_str(opts, "duration");
    if (*dur) {
        uint64_t secs;
        if (parse_duration(dur, &secs)) {
            fprintf(stderr, "gridmeter loadgen: --duration: expected e.g. 60s, 15m, 2h, 30d\n");
            return 2;
        }
        if (!count)
            count = secs * lc.rate;
    }
    if (!count) {
        fprintf(stderr, "gridmeter loadgen: give --count or --duration\n");
        return 2;
    }
    gm_loadgen *lg = NULL;
    if (gm_loadgen_new(&lc, &lg, err, sizeof err)) {
        fprintf(stderr, "gridmeter loadgen: %s\n", err);
        return 2;
    }

    gm_node_config nc;
    gm_node_config_init(&nc);
    nc.brokers = gm_opt_str(opts, "brokers");
    nc.topic = gm_opt_str(opts, "topic");
    nc.source = "edge/loadgen/node-000"; /* every event names its simulated node */
    nc.site = "loadgen";
    nc.spool_dir = gm_opt_str(opts, "spool-dir");
    nc.new_epoch = gm_opt_flag(opts, "new-epoch");
    nc.missing_state = gm_opt_flag(opts, "require-state")       ? GM_NODE_STATE_REQUIRE
                       : gm_opt_flag(opts, "new-epoch-if-lost") ? GM_NODE_STATE_NEW_EPOCH
                                                                : GM_NODE_STATE_FIRST_START;
    nc.spool_max_bytes = (uint64_t)gm_opt_int(opts, "spool-max-bytes");
    const char *fs = gm_opt_str(opts, "fsync");
    nc.fsync = !strcmp(fs, "event")      ? GM_NODE_FSYNC_EVENT
               : !strcmp(fs, "interval") ? GM_NODE_FSYNC_INTERVAL
                                         : GM_NODE_FSYNC_BATCH;
    gm_node *n = NULL;
    if (gm_node_open(&nc, &n, err, sizeof err)) {
        fprintf(stderr, "gridmeter loadgen: %s\n", err);
        gm_loadgen_free(lg);
        return 1;
    }
    bool show = gm_opt_flag(opts, "progress") || isatty(2);
    bool paced = lc.start_us == 0;
    int64_t t0 = gm_mono_us(), last_progress = t0;
    uint64_t sent = 0, full_waits = 0;
    int status = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (paced) {
            int64_t due = t0 + (int64_t)((unsigned __int128)i * GM_US_PER_SEC / lc.rate);
            int64_t ahead = due - gm_mono_us();
            if (ahead > 1000)
                usleep((useconds_t)ahead);
        }
        gm_loadgen_item it;
        gm_loadgen_next(lg, gm_now_us(), &it);
        for (;;) {
            if (it.kind == GM_LOADGEN_VALID)
                rc = gm_node_record_event(n, &it.ev, err, sizeof err);
            else
                rc = gm_node_send_raw(n, it.ev.source, it.raw, it.raw_len, err, sizeof err);
            if (rc != GM_EFULL)
                break;
            if (!full_waits++)
                fprintf(stderr, "\ngridmeter loadgen: waiting (back-pressure): %s\n", err);
            usleep(10000);
        }
        if (rc) {
            fprintf(stderr, "\ngridmeter loadgen: message %" PRIu64 ": %s\n", i + 1, err);
            status = 1;
            break;
        }
        if (it.kind == GM_LOADGEN_VALID)
            gm_loadgen_recorded(lg, &it.ev);
        else
            gm_loadgen_sent(lg, &it);
        sent++;
        if (show && (sent & 255) == 0 && gm_mono_us() - last_progress > 500000) {
            last_progress = gm_mono_us();
            double secs = (double)(last_progress - t0) / 1e6, r = (double)sent / secs;
            fprintf(stderr,
                    "\rloadgen: %" PRIu64 "/%" PRIu64 " (%.0f%%), %.0f msg/s, %.0f s left   ", sent,
                    count, 100.0 * (double)sent / (double)count, r,
                    (double)(count - sent) / (r > 0 ? r : 1));
        }
    }
    int flush_rc = gm_node_flush(n, (int)gm_opt_int(opts, "flush-timeout-ms"), err, sizeof err);
    if (flush_rc) {
        fprintf(stderr, "\ngridmeter loadgen: %s\n", err);
        status = 1;
    }
    double secs = (double)(gm_mono_us() - t0) / 1e6;
    if (show)
        fprintf(stderr, "\n");

    const char *path = gm_opt_str(opts, "manifest");
    char tmp[4096], extra[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(extra, sizeof extra,
             "\"params\": {\"sites\": %d, \"nodes_per_site\": %d, \"tenants\": %d, \"models\": "
             "%d, \"rate\": %" PRIu64 ", \"count\": %" PRIu64 ", \"duplicate_ppm\": %u, "
             "\"malformed_ppm\": %u, \"start\": \"%s\", \"topic\": \"%s\", \"source_prefix\": "
             "\"%s\"},\n  \"messages_sent\": %" PRIu64 ",\n  \"complete\": %s",
             lc.sites, lc.nodes_per_site, lc.tenants, lc.models, lc.rate, count, lc.duplicate_ppm,
             lc.malformed_ppm, start, nc.topic, lc.source_prefix, sent,
             status == 0 ? "true" : "false");
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "gridmeter loadgen: manifest %s: %s\n", tmp, strerror(errno));
        status = 1;
    } else {
        int wrc = gm_loadgen_manifest_write(lg, f, extra, err, sizeof err);
        if (fclose(f) || wrc || rename(tmp, path)) {
            fprintf(stderr, "gridmeter loadgen: manifest %s: %s\n", path,
                    wrc ? err : strerror(errno));
            status = 1;
        }
    }
    printf("loadgen: %" PRIu64 " messages in %.2f s (%.0f/s) to %s, %s; manifest %s\n", sent, secs,
           secs > 0 ? (double)sent / secs : 0.0, nc.topic,
           flush_rc ? "NOT all acknowledged" : "all acknowledged by Kafka", path);
    gm_node_close(n);
    gm_loadgen_free(lg);
    return status;
}
