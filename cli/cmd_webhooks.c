/* `gridmeter webhooks`: delivers the webhook outbox (webhook/gm_webhook.h): one pass with
 * --once (for cron and tests), else a pass every --interval-ms until SIGINT/SIGTERM. Prints a
 * line per pass that did something: queued, attempted, delivered, failed. */
#include "cli.h"
#include "gm_ledger.h"
#include "gm_webhook.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int gm_cmd_webhooks(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "webhooks",
        "Deliver webhook events from the transactional outbox (gm.webhook_outbox) to the\n"
        "registered endpoints (gm.webhook_endpoints): signed HTTP POSTs (HMAC-SHA256 over\n"
        "timestamp and body, docs/api.md \"Webhooks\"), retried with exponential backoff until a\n"
        "2xx answer. Several deliverers may run at once (row locks: none sends one delivery\n"
        "twice at once). Exit status: 0, 1 on a database error, 2 usage.",
        "gridmeter webhooks [--once] [--interval-ms N] [--timeout-ms N]"};
    gm_opt opts[] = {{"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
                      "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
                     {"once", NULL, NULL, "false", GM_OPT_FLAG, "one pass, then exit", 0, 0},
                     {"interval-ms", "webhooks.interval_ms", "GRIDMETER_WEBHOOK_INTERVAL_MS",
                      "1000", GM_OPT_INT, "pause between passes", 0, 0},
                     {"timeout-ms", "webhooks.timeout_ms", "GRIDMETER_WEBHOOK_TIMEOUT_MS", "10000",
                      GM_OPT_INT, "per POST, connect included", 0, 0},
                     {"backoff-base-s", "webhooks.backoff_base_s",
                      "GRIDMETER_WEBHOOK_BACKOFF_BASE_S", "10", GM_OPT_INT,
                      "wait after the first failed attempt (doubling after each)", 0, 0},
                     {"backoff-max-s", "webhooks.backoff_max_s", "GRIDMETER_WEBHOOK_BACKOFF_MAX_S",
                      "600", GM_OPT_INT, "longest wait between attempts", 0, 0},
                     {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter webhooks: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter webhooks: no positional arguments\n");
        return 2;
    }
    PGconn *db = gm_pg_connect(gm_opt_str(opts, "db"), "gridmeter-webhooks", err, sizeof err);
    if (!db) {
        fprintf(stderr, "gridmeter webhooks: %s\n", err);
        return 1;
    }
    gm_webhook_opts o;
    gm_webhook_opts_init(&o);
    o.timeout_ms = (long)gm_opt_int(opts, "timeout-ms");
    o.backoff_base_s = gm_opt_int(opts, "backoff-base-s");
    o.backoff_max_s = gm_opt_int(opts, "backoff-max-s");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    bool once = gm_opt_flag(opts, "once");
    do {
        gm_webhook_stats st;
        if ((rc = gm_webhook_deliver(db, &o, &st, err, sizeof err))) {
            fprintf(stderr, "gridmeter webhooks: %s\n", err);
            break;
        }
        if (st.queued || st.attempted || once)
            printf("webhooks: %zu queued, %zu attempted, %zu delivered, %zu failed\n", st.queued,
                   st.attempted, st.delivered, st.failed);
        fflush(stdout);
        if (!once && !stop && st.attempted < (size_t)o.max_deliveries)
            usleep((useconds_t)gm_opt_int(opts, "interval-ms") * 1000);
    } while (!once && !stop);
    PQfinish(db);
    return rc ? 1 : 0;
}
