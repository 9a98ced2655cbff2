/* `gridmeter api`: the REST API server (see api/server.c and docs/api.md). */
#include "cli.h"
#include "gm_api.h"

#include <signal.h>
#include <string.h>

int gm_cmd_api(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "api",
        "Serve the REST API: invoices for finance, usage and spend for customers, tenants,\n"
        "contracts, rate cards and keys for admins; /v1/openapi.json, /healthz, /readyz,\n"
        "/metrics. Connect as the least-privileged role gm_api (e.g. --db \"user=gm_api\").\n"
        "Create the first admin key with `gridmeter apikey create --role admin`.\n"
        "SIGTERM/SIGINT stop it (requests in flight finish).",
        "gridmeter api [options]"};
    gm_api_config d;
    gm_api_config_defaults(&d);
    char port[16], pool[16], body[24], rate[16], burst[16], grace[16], maxc[16], to[16], st[16],
        rto[16], ato[16], hres[16], afb[16], afm[16], ret[16], kar[16], ems[16];
    snprintf(port, sizeof port, "%d", d.port);
    snprintf(pool, sizeof pool, "%d", d.db_pool_size);
    snprintf(body, sizeof body, "%lld", (long long)d.max_body_bytes);
    snprintf(rate, sizeof rate, "%d", d.rate_per_s);
    snprintf(burst, sizeof burst, "%d", d.rate_burst);
    snprintf(grace, sizeof grace, "%d", d.grace_hours);
    snprintf(maxc, sizeof maxc, "%d", d.max_connections);
    snprintf(to, sizeof to, "%d", d.conn_timeout_s);
    snprintf(st, sizeof st, "%d", d.statement_timeout_ms);
    snprintf(rto, sizeof rto, "%d", d.request_timeout_s);
    snprintf(ato, sizeof ato, "%d", d.answer_timeout_s);
    snprintf(hres, sizeof hres, "%d", d.health_reserve);
    snprintf(afb, sizeof afb, "%d", d.auth_fail_burst);
    snprintf(afm, sizeof afm, "%d", d.auth_fail_per_min);
    snprintf(ret, sizeof ret, "%d", d.idempotency_retention_hours);
    snprintf(kar, sizeof kar, "%d", d.keep_alive_requests);
    snprintf(ems, sizeof ems, "%d", d.entitlement_max_stale_ms);
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo (role gm_api); empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"listen", "api.listen", "GRIDMETER_API_LISTEN", "127.0.0.1", GM_OPT_STR,
         "IPv4 address to listen on", 0, 0},
        {"port", "api.port", "GRIDMETER_API_PORT", port, GM_OPT_INT, "TCP port (0: ephemeral)", 0,
         0},
        {"db-pool", "api.db_pool", NULL, pool, GM_OPT_INT, "PostgreSQL connections", 0, 0},
        {"statement-timeout-ms", "api.statement_timeout_ms", NULL, st, GM_OPT_INT,
         "PostgreSQL statement_timeout per query", 0, 0},
        {"max-body", "api.max_body_bytes", NULL, body, GM_OPT_INT,
         "largest request body in bytes (413 above)", 0, 0},
        {"rate-limit", "api.rate_limit", NULL, rate, GM_OPT_INT,
         "requests per second per API key (429 above; 0: no limit)", 0, 0},
        {"rate-burst", "api.rate_burst", NULL, burst, GM_OPT_INT, "burst per API key", 0, 0},
        {"max-connections", "api.max_connections", NULL, maxc, GM_OPT_INT,
         "HTTP connections at once (one thread each)", 0, 0},
        {"per-ip-connections", "api.per_ip_connections", NULL, "16", GM_OPT_INT,
         "requests in progress per client address (0: no limit)", 0, 0},
        {"health-reserve", "api.health_reserve", NULL, hres, GM_OPT_INT,
         "connections kept for /healthz and /readyz beyond the limits", 0, 0},
        {"timeout-s", "api.timeout_s", NULL, to, GM_OPT_INT,
         "close a connection idle this long (while its answer is sent too)", 0, 0},
        {"request-timeout-s", "api.request_timeout_s", NULL, rto, GM_OPT_INT,
         "a whole request (head and body) must arrive within this of connecting (408)", 0, 0},
        {"answer-timeout-s", "api.answer_timeout_s", NULL, ato, GM_OPT_INT,
         "then its answer must be delivered within this (slow readers are cut off)", 0, 0},
        {"keep-alive-requests", "api.keep_alive_requests", NULL, kar, GM_OPT_INT,
         "requests one connection may carry (1: every answer closes; later requests skip the "
         "gate's head check, see docs/api.md)",
         0, 0},
        {"auth-fail-burst", "api.auth_fail_burst", NULL, afb, GM_OPT_INT,
         "failed authentications per client address before 429 (0: no limit)", 0, 0},
        {"auth-fail-per-min", "api.auth_fail_per_min", NULL, afm, GM_OPT_INT,
         "failed authentications per client address and minute after the burst", 0, 0},
        {"idempotency-retention-hours", "api.idempotency_retention_hours", NULL, ret, GM_OPT_INT,
         "keep Idempotency-Key answers this long, then delete them", 0, 0},
        {"cursor-key-file", "api.cursor_key_file", "GRIDMETER_API_CURSOR_KEY_FILE", "", GM_OPT_STR,
         "file with the secret (32+ bytes) list cursors are signed with", 0, 0},
        {"cursor-key-previous-file", "api.cursor_key_previous_file",
         "GRIDMETER_API_CURSOR_KEY_PREVIOUS_FILE", "", GM_OPT_STR,
         "the key before it (rotation: its cursors stay valid)", 0, 0},
        {"grace-hours", "billing.grace_hours", NULL, grace, GM_OPT_INT,
         "hours after a month's end before its invoices can be finalized (late events)", 0, 0},
        {"tls-cert", "api.tls_cert", NULL, "", GM_OPT_STR, "PEM certificate file (HTTPS)", 0, 0},
        {"tls-key", "api.tls_key", NULL, "", GM_OPT_STR, "PEM private key file (HTTPS)", 0, 0},
        {"entitlement-max-stale-ms", "api.entitlement_max_stale_ms", NULL, ems, GM_OPT_INT,
         "answer GET .../entitlement from the pushed in-memory mirror while it is proven at "
         "most this stale, else from PostgreSQL (0: always PostgreSQL; else 20..600000)",
         0, 0},
        {"rater-metrics", "api.rater_metrics", "GRIDMETER_RATER_METRICS_URL",
         "http://127.0.0.1:9464/metrics", GM_OPT_STR,
         "the rater's /metrics URL (http or https), read by GET /v1/ops/ingest", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter api: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter api: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    gm_api_config cfg = d;
    cfg.db_conninfo = gm_opt_str(opts, "db");
    cfg.listen_addr = gm_opt_str(opts, "listen");
    cfg.port = (int)gm_opt_int(opts, "port");
    cfg.db_pool_size = (int)gm_opt_int(opts, "db-pool");
    cfg.statement_timeout_ms = (int)gm_opt_int(opts, "statement-timeout-ms");
    cfg.max_body_bytes = gm_opt_int(opts, "max-body");
    cfg.rate_per_s = (int)gm_opt_int(opts, "rate-limit");
    cfg.rate_burst = (int)gm_opt_int(opts, "rate-burst");
    cfg.max_connections = (int)gm_opt_int(opts, "max-connections");
    cfg.per_ip_connections = (int)gm_opt_int(opts, "per-ip-connections");
    cfg.conn_timeout_s = (int)gm_opt_int(opts, "timeout-s");
    cfg.grace_hours = (int)gm_opt_int(opts, "grace-hours");
    cfg.tls_cert_file = gm_opt_str(opts, "tls-cert");
    cfg.tls_key_file = gm_opt_str(opts, "tls-key");
    cfg.rater_metrics_url = gm_opt_str(opts, "rater-metrics");
    cfg.health_reserve = (int)gm_opt_int(opts, "health-reserve");
    cfg.request_timeout_s = (int)gm_opt_int(opts, "request-timeout-s");
    cfg.answer_timeout_s = (int)gm_opt_int(opts, "answer-timeout-s");
    cfg.auth_fail_burst = (int)gm_opt_int(opts, "auth-fail-burst");
    cfg.auth_fail_per_min = (int)gm_opt_int(opts, "auth-fail-per-min");
    cfg.idempotency_retention_hours = (int)gm_opt_int(opts, "idempotency-retention-hours");
    cfg.keep_alive_requests = (int)gm_opt_int(opts, "keep-alive-requests");
    cfg.entitlement_max_stale_ms = (int)gm_opt_int(opts, "entitlement-max-stale-ms");
    cfg.cursor_key_file = gm_opt_str(opts, "cursor-key-file");
    cfg.cursor_key_previous_file = gm_opt_str(opts, "cursor-key-previous-file");
    if (cfg.port < 0 || cfg.port > 65535 || cfg.db_pool_size < 1 || cfg.grace_hours < 0 ||
        cfg.conn_timeout_s < 1 || cfg.per_ip_connections < 0 || cfg.request_timeout_s < 1 ||
        cfg.answer_timeout_s < 1 || cfg.health_reserve < 0 || cfg.auth_fail_burst < 0 ||
        cfg.auth_fail_per_min < 0 || cfg.idempotency_retention_hours < 1 ||
        cfg.keep_alive_requests < 1 || cfg.keep_alive_requests > 100000) {
        fprintf(stderr,
                "gridmeter api: --port 0..65535, --db-pool >= 1, --grace-hours >= 0, "
                "--timeout-s >= 1, --request-timeout-s >= 1, --answer-timeout-s >= 1, "
                "--per-ip-connections >= 0, "
                "--health-reserve >= 0, --auth-fail-burst >= 0, --auth-fail-per-min "
                ">= 0, --idempotency-retention-hours >= 1, --keep-alive-requests 1..100000\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads inherit the mask; sigwait below */
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    if (!s) {
        fprintf(stderr, "gridmeter api: %s\n", err);
        return 1;
    }
    gm_info("api", "msg=\"listening\" addr=%s port=%d tls=%s", cfg.listen_addr, gm_api_port(s),
            cfg.tls_cert_file[0] ? "on" : "off");
    /* The port line on stdout lets scripts and tests use --port 0. */
    printf("listening on %s:%d\n", cfg.listen_addr, gm_api_port(s));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    gm_info("api", "msg=\"stopping\" signal=%d", sig);
    gm_api_stop(s);
    return 0;
}
