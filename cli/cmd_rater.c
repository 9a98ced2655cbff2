/* `gridmeter rater`: the rating consumer (see rater/rater.c). */
#include "cli.h"
#include "gm_rater.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

int gm_cmd_rater(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "rater",
        "Consume usage events from Kafka, price them and write the ledger and charges to\n"
        "PostgreSQL exactly once. Run several in one group to share the partitions.\n"
        "SIGTERM/SIGINT finish the batch being committed (or let it fail and roll back),\n"
        "drop the one being prepared, then exit.",
        "gridmeter rater [options]"};
    gm_rater_config cfg;
    gm_rater_config_init(&cfg);
    gm_opt opts[] = {
        {"brokers", "kafka.brokers", "GRIDMETER_KAFKA_BROKERS", cfg.brokers, GM_OPT_STR,
         "Kafka bootstrap servers", 0, 0},
        {"topic", "kafka.topic", "GRIDMETER_TOPIC", cfg.topic, GM_OPT_STR, "usage event topic", 0,
         0},
        {"gpu-topic", "kafka.gpu_topic", "GRIDMETER_GPU_TOPIC", cfg.gpu_topic, GM_OPT_STR,
         "gridmeter.gpu.v1 topic (GPU windows); empty for none", 0, 0},
        {"group", "rater.group", "GRIDMETER_RATER_GROUP", cfg.group_id, GM_OPT_STR,
         "consumer group (also the key of the offsets stored in PostgreSQL)", 0, 0},
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"id", "rater.id", "GRIDMETER_RATER_ID", "", GM_OPT_STR,
         "this rater's name in logs and gm.batches (default host:pid)", 0, 0},
        {"batch-size", "rater.batch_size", "GRIDMETER_RATER_BATCH_SIZE", "10000", GM_OPT_INT,
         "most messages per PostgreSQL transaction", 0, 0},
        {"batch-ms", "rater.batch_ms", "GRIDMETER_RATER_BATCH_MS", "200", GM_OPT_INT,
         "longest wait to fill a batch, in milliseconds", 0, 0},
        {"pipeline", "rater.pipeline", "GRIDMETER_RATER_PIPELINE", "1", GM_OPT_INT,
         "1: prepare the next batch while a commit thread writes this one; 0: "
         "one after the other",
         0, 0},
        {"batch-idle-ms", "rater.batch_idle_ms", "GRIDMETER_RATER_BATCH_IDLE_MS", "5", GM_OPT_INT,
         "pipelined: how long a partial batch waits once the commit thread is "
         "free (0: until --batch-ms)",
         0, 0},
        {"session-timeout-ms", "rater.session_timeout_ms", NULL, "10000", GM_OPT_INT,
         "Kafka group session timeout", 0, 0},
        {"metrics", "rater.metrics", "GRIDMETER_RATER_METRICS", "127.0.0.1:9464", GM_OPT_STR,
         "HOST:PORT for /metrics and /healthz; empty to disable", 0, 0},
        {"reload-s", "rater.reload_s", NULL, "30", GM_OPT_INT,
         "fallback re-read of cards and contracts, seconds (imports: NOTIFY)", 0, 0},
        {"max-future-s", "rater.max_future_s", "GRIDMETER_RATER_MAX_FUTURE_S", "300", GM_OPT_INT,
         "refuse events more than this many s ahead (0: off)", 0, 0},
        {"max-age-days", "rater.max_age_days", "GRIDMETER_RATER_MAX_AGE_DAYS", "0", GM_OPT_INT,
         "refuse events more than this many days old (0: off)", 0, 0},
        {"exit-idle-ms", NULL, NULL, "0", GM_OPT_INT,
         "exit after this long with no message (0: never; for scripts and tests)", 0, 0},
        {"max-messages", NULL, NULL, "0", GM_OPT_INT,
         "exit after committing at least this many messages (0: no limit)", 0, 0},
        {"shard-map", "rater.shard_map", "GRIDMETER_SHARD_MAP", "", GM_OPT_STR,
         "shard map file (docs/scaling.md); with --shard: rate that shard's "
         "partitions into its database",
         0, 0},
        {"shard", "rater.shard", "GRIDMETER_SHARD", "", GM_OPT_STR,
         "this rater's shard in --shard-map (its conninfo replaces --db)", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter rater: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter rater: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    cfg.brokers = gm_opt_str(opts, "brokers");
    cfg.topic = gm_opt_str(opts, "topic");
    cfg.gpu_topic = gm_opt_str(opts, "gpu-topic");
    cfg.group_id = gm_opt_str(opts, "group");
    cfg.db_conninfo = gm_opt_str(opts, "db");
    cfg.rater_id = gm_opt_str(opts, "id");
    cfg.batch_max = (int)gm_opt_int(opts, "batch-size");
    cfg.batch_ms = (int)gm_opt_int(opts, "batch-ms");
    int64_t pipeline = gm_opt_int(opts, "pipeline"), idle_ms = gm_opt_int(opts, "batch-idle-ms");
    if (pipeline != 0 && pipeline != 1) {
        fprintf(stderr, "gridmeter rater: --pipeline must be 0 or 1, got %lld\n",
                (long long)pipeline);
        return 2;
    }
    if (idle_ms < 0 || idle_ms > 60000) {
        fprintf(stderr, "gridmeter rater: --batch-idle-ms must be 0..60000, got %lld\n",
                (long long)idle_ms);
        return 2;
    }
    cfg.pipeline = (int)pipeline;
    cfg.batch_idle_ms = (int)idle_ms;
    cfg.session_timeout_ms = (int)gm_opt_int(opts, "session-timeout-ms");
    cfg.metrics_addr = gm_opt_str(opts, "metrics");
    cfg.book_reload_s = (int)gm_opt_int(opts, "reload-s");
    cfg.exit_idle_ms = gm_opt_int(opts, "exit-idle-ms");
    cfg.max_messages = gm_opt_int(opts, "max-messages");
    cfg.max_future_s = gm_opt_int(opts, "max-future-s");
    cfg.max_age_days = gm_opt_int(opts, "max-age-days");
    if (cfg.max_future_s < 0 || cfg.max_future_s > 31622400 || cfg.max_age_days < 0 ||
        cfg.max_age_days > 36600) {
        fprintf(stderr, "gridmeter rater: --max-future-s must be 0..31622400 (366 days) and "
                        "--max-age-days 0..36600\n");
        return 2;
    }
    if (cfg.batch_max < 1 || cfg.batch_max > 1000000 || cfg.batch_ms < 1) {
        fprintf(stderr, "gridmeter rater: --batch-size must be 1..1000000 and --batch-ms >= 1\n");
        return 2;
    }
    gm_shard_map *map = NULL;
    const char *map_path = gm_opt_str(opts, "shard-map"), *shard = gm_opt_str(opts, "shard");
    if (*map_path || *shard) {
        if (!*map_path || !*shard) {
            fprintf(stderr, "gridmeter rater: --shard-map and --shard go together\n");
            return 2;
        }
        const gm_opt *db = NULL;
        for (const gm_opt *o = opts; o->name && !db; o++)
            db = strcmp(o->name, "db") ? NULL : o;
        /* the map names the database; a --db given here contradicts it (one from the
         * environment or a shared config file is not used) */
        if (*cfg.db_conninfo && db && db->from && !strcmp(db->from, "command line")) {
            fprintf(stderr, "gridmeter rater: --db: a sharded rater writes the database the "
                            "shard map names for its shard; leave --db out\n");
            return 2;
        }
        if (gm_shard_map_load(map_path, &map, err, sizeof err)) {
            fprintf(stderr, "gridmeter rater: --shard-map: %s\n", err);
            return 2;
        }
        int si = gm_shard_map_find(map, shard);
        if (si < 0) {
            fprintf(stderr, "gridmeter rater: --shard: %s is not a shard of %s\n", shard, map_path);
            gm_shard_map_free(map);
            return 2;
        }
        cfg.shard_map = map;
        cfg.shard = shard;
        cfg.db_conninfo = map->shards[si].conninfo;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    rc = gm_rater_run(&cfg, &stop_flag, err, sizeof err);
    gm_shard_map_free(map);
    if (rc) {
        fprintf(stderr, "gridmeter rater: %s\n", err);
        return 1;
    }
    return 0;
}
