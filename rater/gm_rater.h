/* rater: consumes usage events from Kafka, prices them with the rating engine and writes
 * them to the PostgreSQL ledger exactly once (ledger/batch.c), with Prometheus metrics. */
#ifndef GM_RATER_H
#define GM_RATER_H

#include "gm_common.h"

#include <signal.h>

typedef struct gm_rater_config {
    const char *brokers;      /* bootstrap servers */
    const char *topic;        /* gridmeter.usage.v1 */
    const char *group_id;     /* consumer group; also the key of gm.consumer_offsets */
    const char *db_conninfo;  /* libpq conninfo, "" for the PG* environment */
    const char *rater_id;     /* name in logs and gm.batches (default host:pid) */
    int batch_max;            /* messages per transaction */
    int batch_ms;             /* longest wait to fill a batch */
    int session_timeout_ms;   /* Kafka group session timeout */
    const char *metrics_addr; /* "127.0.0.1:9464"; NULL or "" for none */
    int book_reload_s;        /* re-read rate cards and contracts this often */
    int64_t exit_idle_ms;     /* > 0: stop after this long with nothing to do (demo, tests) */
    int64_t max_messages;     /* > 0: stop after committing at least this many (tests) */
    const char *gpu_topic;    /* gridmeter.gpu.v1 windows (rater/gpu.c); NULL or "": none */
} gm_rater_config;

/* Fills the defaults. */
void gm_rater_config_init(gm_rater_config *cfg);

/* Runs until *stop becomes non-zero (SIGTERM/SIGINT handlers set it), or an exit condition
 * of cfg is met. A batch in flight at stop is finished or abandoned (rolled back) cleanly.
 * Returns 0, or a GM_E… code with the reason in err for a failure it cannot ride out
 * (bad configuration, no rate card). Database and broker outages are ridden out. */
int gm_rater_run(const gm_rater_config *cfg, volatile sig_atomic_t *stop, char *err,
                 size_t err_len) GM_MUSTCHECK;

#endif /* GM_RATER_H */
