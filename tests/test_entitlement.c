/* GET /v1/tenants/{t}/entitlement from the pushed in-memory mirror (api/entitlement_mirror.c,
 * sql/0021), against the real PostgreSQL and real HTTP servers started inside each test (so
 * that the test's clock is theirs): a committed spend change shows without a restart and an
 * uncommitted one never; the hard limit flips allowed to false; the listener's connection
 * killed while it cannot reconnect gives exact answers from the database, then a reconnect
 * and a load that missed nothing; a stalled listener (its backend stopped) is not trusted past
 * the bound; the month rolls over on gridmeter's (moved) clock; two API
 * processes (this one and a `gridmeter api` child) agree. Waits are polls with a generous
 * upper bound, never timed assertions. docs/api.md, "Budgets and alerts". */
#include "test_api_client.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOV_2026 INT64_C(1793491200000000) /* 2026-11-01T00:00:00Z */
#define DEC_2026 INT64_C(1796083200000000) /* 2026-12-01T00:00:00Z */
#define POLL_US  (60 * GM_US_PER_SEC)      /* upper bound of every wait (never reached) */

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static gm_api_server *start(int max_stale_ms, int *port)
{
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = F.api_conninfo;
    cfg.port = 0;
    cfg.rate_per_s = 0;
    cfg.db_pool_size = 2;
    cfg.entitlement_max_stale_ms = max_stale_ms;
    char err[512];
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    ck_assert_msg(s != NULL, "api start: %s", err);
    *port = gm_api_port(s);
    return s;
}

/* A superuser connection stamping gm.now() on this process's clock, as a rater's. */
static PGconn *db(void)
{
    PGconn *c = gm_test_pg_connect(F.conninfo);
    char off[96];
    snprintf(off, sizeof off, "SET gridmeter.clock_offset_us = '%lld'",
             (long long)gm_clock_offset_us());
    gm_test_pg_exec(c, off);
    return c;
}

static void charge(PGconn *c, const char *tenant, int64_t t, int64_t in, int64_t out)
{
    int64_t q[4] = {in, 0, out, 0};
    api_add_event(c, tenant, "llama-3.1-8b-instruct", "fra1", t, q);
}

/* The month's list amount of the tenant's USD charges: the oracle of `spend`. */
static char *month_sum(PGconn *c, const char *tenant, int64_t month)
{
    char sql[512], a[40], b[40];
    gm_time_format(month, a, sizeof a);
    gm_time_format(gm_month_next(month), b, sizeof b);
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(amount), 0)::text FROM gm.charges WHERE tenant = '%s' AND"
             " currency = 'USD' AND hour >= '%s' AND hour < '%s'",
             tenant, a, b);
    return gm_test_pg_value(c, sql);
}

static cJSON *ent(int port, const char *tenant)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/tenants/%s/entitlement", tenant);
    http_resp r;
    http_do(port, "GET", path, F.finance, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "entitlement %s: %d %s", tenant, r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    ck_assert_msg(j != NULL, "not JSON: %s", r.body);
    http_free(&r);
    return j;
}

/* Polls until the answer has the given spend (NULL: any), allowed (-1: any) and source
 * (NULL: any); returns it. Fails the test with the last answer past POLL_US. */
static cJSON *ent_until(int port, const char *tenant, const char *spend, int allowed,
                        const char *source)
{
    int64_t end = gm_mono_us() + POLL_US;
    for (;;) {
        cJSON *j = ent(port, tenant);
        const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "allowed");
        const char *sp = jstr(j, "spend"), *so = jstr(j, "source");
        bool ok = (!spend || (sp && !strcmp(sp, spend))) &&
                  (allowed < 0 || (allowed ? cJSON_IsTrue(al) : cJSON_IsFalse(al))) &&
                  (!source || (so && !strcmp(so, source)));
        if (ok) {
            /* whatever the source, the answer vouches for its age */
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stale_us");
            ck_assert(cJSON_IsNumber(st) && st->valuedouble >= 0);
            if (!strcmp(so, "memory"))
                ck_assert_msg(st->valuedouble <= 1000000, "memory answer staler than 1 s");
            return j;
        }
        if (gm_mono_us() > end) {
            char *txt = cJSON_PrintUnformatted(j);
            ck_abort_msg("entitlement of %s never became spend=%s allowed=%d source=%s; last: %s",
                         tenant, spend ? spend : "*", allowed, source ? source : "*", txt);
        }
        cJSON_Delete(j);
        usleep(5000);
    }
}

/* A counter or gauge of GET /metrics. */
static long long metric(int port, const char *name)
{
    http_resp r;
    http_do(port, "GET", "/metrics", F.admin, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    char pat[160];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(r.body, pat);
    ck_assert_msg(p != NULL, "metric %s missing", name);
    long long v = atoll(p + strlen(pat));
    http_free(&r);
    return v;
}

/* Every member but the ones that say when and from where. */
static void same_figure(const cJSON *a, const cJSON *b)
{
    static const char *names[] = {"tenant",
                                  "period",
                                  "allowed",
                                  "reason",
                                  "currency",
                                  "limit",
                                  "spend",
                                  "hard_limit",
                                  "thresholds_percent",
                                  "thresholds_crossed",
                                  "spend_as_of"};
    for (size_t i = 0; i < GM_ARRAY_LEN(names); i++) {
        char *x = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(a, names[i]));
        char *y = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(b, names[i]));
        ck_assert_msg(x && y && !strcmp(x, y), "%s: %s vs %s", names[i], x ? x : "(none)",
                      y ? y : "(none)");
        free(x);
        free(y);
    }
}

START_TEST(test_committed_spend_shows_without_restart_and_the_hard_limit_flips)
{
    gm_clock_set_us(API_TEST_NOW);
    int port, port_db;
    gm_api_server *s = start(1000, &port), *s_db = start(0, &port_db);
    PGconn *c = db();
    int64_t month = gm_month_start(gm_now_us()), t = month + GM_US_PER_DAY;
    gm_test_pg_exec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit, thresholds)"
                       " VALUES ('ent-one', 'USD', 1000, '{50,100}')");
    cJSON *j = ent_until(port, "ent-one", "0", 1, "memory");
    /* from here on every change arrives by push: the one load at start stays the only one */
    long long loads = metric(port, "gridmeter_api_entitlement_mirror_loads_total");
    ck_assert_int_eq(loads, 1);
    ck_assert_str_eq(jstr(j, "reason"), "within budget");
    ck_assert_str_eq(jstr(j, "limit"), "1000.000000000000000000");
    cJSON_Delete(j);
    charge(c, "ent-one", t, 1000, 2000);
    char *sum = month_sum(c, "ent-one", month);
    ck_assert_str_ne(sum, "0");
    j = ent_until(port, "ent-one", sum, 1, "memory");
    /* the figure from memory is the database's, member for member */
    cJSON *d = ent(port_db, "ent-one");
    ck_assert_str_eq(jstr(d, "source"), "database");
    same_figure(j, d);
    cJSON_Delete(d);
    cJSON_Delete(j);
    /* an uncommitted charge never shows; the marker committed after its rollback does */
    PGconn *open = db();
    gm_test_pg_exec(open, "BEGIN");
    gm_test_pg_exec(open, "UPDATE gm.month_spend SET amount = amount + 100000"
                          " WHERE tenant = 'ent-one'");
    j = ent(port, "ent-one");
    ck_assert_str_eq(jstr(j, "spend"), sum);
    cJSON_Delete(j);
    gm_test_pg_exec(open, "ROLLBACK");
    PQfinish(open);
    /* a hard limit at exactly the spend: refused, without a charge; setting it crosses both
     * thresholds of the new limit at once (sql/0023: before, only the next charge did) */
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE gm.budgets SET monthly_limit = %s WHERE tenant = 'ent-one'",
             sum);
    gm_test_pg_exec(c, sql);
    j = ent_until(port, "ent-one", sum, 0, "memory");
    ck_assert_str_eq(jstr(j, "reason"), "monthly limit reached");
    cJSON_Delete(j);
    char *n_alerts = gm_test_pg_value(c, "SELECT count(*) FROM gm.budget_alerts"
                                         " WHERE tenant = 'ent-one'");
    ck_assert_str_eq(n_alerts, "2");
    free(n_alerts);
    /* the next charge raises nothing more (alerts pushed too) */
    charge(c, "ent-one", t, 10, 0);
    free(sum);
    sum = month_sum(c, "ent-one", month);
    j = ent_until(port, "ent-one", sum, 0, "memory");
    for (int k = 0; k < 1000 && cJSON_GetArraySize(
                                    cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")) != 2;
         k++) { /* the alerts' notifications follow the spend's (one commit) */
        cJSON_Delete(j);
        usleep(5000);
        j = ent_until(port, "ent-one", sum, 0, "memory");
    }
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")),
                     2);
    d = ent(port_db, "ent-one");
    same_figure(j, d);
    cJSON_Delete(d);
    cJSON_Delete(j);
    /* soft, then no budget at all */
    gm_test_pg_exec(c, "UPDATE gm.budgets SET hard_limit = false WHERE tenant = 'ent-one'");
    j = ent_until(port, "ent-one", sum, 1, "memory");
    ck_assert_str_eq(jstr(j, "reason"), "soft limit reached"); /* was "within budget" */
    cJSON_Delete(j);
    /* a raised limit: the alerts of the old one are not this limit's crossings */
    gm_test_pg_exec(c, "UPDATE gm.budgets SET monthly_limit = monthly_limit * 4"
                       " WHERE tenant = 'ent-one'");
    j = ent_until(port, "ent-one", sum, 1, "memory");
    for (int k = 0; k < 1000 && cJSON_GetArraySize(
                                    cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")) != 0;
         k++) {
        cJSON_Delete(j);
        usleep(5000);
        j = ent_until(port, "ent-one", sum, 1, "memory");
    }
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")),
                     0);
    ck_assert_str_eq(jstr(j, "reason"), "within budget");
    d = ent(port_db, "ent-one");
    same_figure(j, d);
    cJSON_Delete(d);
    cJSON_Delete(j);
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'ent-one'");
    j = ent_until(port, "ent-one", NULL, 1, "memory");
    for (int k = 0; k < 1000 && strcmp(jstr(j, "reason"), "no budget"); k++) {
        cJSON_Delete(j);
        usleep(5000);
        j = ent(port, "ent-one");
    }
    ck_assert_str_eq(jstr(j, "reason"), "no budget");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "spend")));
    cJSON_Delete(j);
    ck_assert_int_ge(metric(port, "gridmeter_api_entitlement_answers_total{source=\"memory\"}"), 1);
    ck_assert_int_eq(metric(port, "gridmeter_api_entitlement_mirror_loads_total"), loads);
    free(sum);
    PQfinish(c);
    gm_api_stop(s);
    gm_api_stop(s_db);
}
END_TEST

START_TEST(test_listener_killed_answers_from_the_database_then_reloads_missing_nothing)
{
    gm_clock_set_us(API_TEST_NOW);
    int port;
    gm_api_server *s = start(1000, &port);
    PGconn *c = db();
    int64_t month = gm_month_start(gm_now_us()), t = month + 2 * GM_US_PER_DAY;
    gm_test_pg_exec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit)"
                       " VALUES ('ent-kill', 'USD', 1000)");
    cJSON_Delete(ent_until(port, "ent-kill", "0", 1, "memory"));
    /* the handlers' and the authentication pools hold a connection each from here on */
    http_resp r;
    http_do(port, "GET", "/v1/me", F.finance, NULL, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    http_free(&r);
    long long loads = metric(port, "gridmeter_api_entitlement_mirror_loads_total");
    ck_assert_int_ge(loads, 1);
    /* no new connection of gm_api to this database: the listener cannot come back */
    char *dbname = gm_test_pg_value(c, "SELECT current_database()");
    char sql[512];
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" CONNECTION LIMIT 0", dbname);
    gm_test_pg_exec(c, sql);
    char *killed = gm_test_pg_value(c, "SELECT count(pg_terminate_backend(pid)) FROM"
                                       " pg_stat_activity WHERE datname = current_database()"
                                       " AND application_name = 'gridmeter-api-entitlement'");
    ck_assert_int_ge(atoi(killed), 1);
    free(killed);
    /* committed while the listener is gone: the answer is exact, from the database */
    charge(c, "ent-kill", t, 1000, 1000);
    char *sum = month_sum(c, "ent-kill", month);
    cJSON *j = ent_until(port, "ent-kill", sum, 1, "database");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stale_us");
    ck_assert(cJSON_IsNumber(st) && st->valuedouble == 0);
    cJSON_Delete(j);
    ck_assert_int_eq(metric(port, "gridmeter_api_entitlement_mirror_usable"), 0);
    /* the limit reached meanwhile is refused at once */
    snprintf(sql, sizeof sql, "UPDATE gm.budgets SET monthly_limit = %s WHERE tenant = 'ent-kill'",
             sum);
    gm_test_pg_exec(c, sql);
    j = ent(port, "ent-kill");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "allowed")));
    ck_assert_str_eq(jstr(j, "source"), "database");
    cJSON_Delete(j);
    /* connections allowed again: reconnect, load; nothing committed meanwhile is missed */
    snprintf(sql, sizeof sql, "ALTER DATABASE \"%s\" CONNECTION LIMIT -1", dbname);
    gm_test_pg_exec(c, sql);
    j = ent_until(port, "ent-kill", sum, 0, "memory");
    ck_assert_str_eq(jstr(j, "reason"), "monthly limit reached");
    cJSON_Delete(j);
    charge(c, "ent-kill", t, 5, 0);
    free(sum);
    sum = month_sum(c, "ent-kill", month);
    cJSON_Delete(ent_until(port, "ent-kill", sum, 0, "memory"));
    ck_assert_int_gt(metric(port, "gridmeter_api_entitlement_mirror_loads_total"), loads);
    ck_assert_int_ge(metric(port, "gridmeter_api_entitlement_mirror_reconnects_total"), 1);
    ck_assert_int_eq(metric(port, "gridmeter_api_entitlement_mirror_usable"), 1);
    /* a TRUNCATE (no row triggers) loads again too */
    gm_test_pg_exec(c, "TRUNCATE gm.budget_alerts");
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'ent-kill'");
    j = ent_until(port, "ent-kill", NULL, 1, "memory");
    cJSON_Delete(j);
    free(sum);
    free(dbname);
    PQfinish(c);
    gm_api_stop(s);
}
END_TEST

/* The listener's backend stopped (SIGSTOP: connected, but nothing comes back): once its
 * last proof of freshness is older than the bound, answers come from the database, exact;
 * resumed, the mirror catches up. Nothing is asserted while the backend is stopped, so that
 * a failure cannot leave it stopped. */
START_TEST(test_a_stalled_listener_is_not_trusted_past_the_bound)
{
    gm_clock_set_us(API_TEST_NOW);
    int port;
    gm_api_server *s = start(1000, &port);
    PGconn *c = db();
    int64_t month = gm_month_start(gm_now_us()), t = month + 4 * GM_US_PER_DAY;
    gm_test_pg_exec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit)"
                       " VALUES ('ent-stall', 'USD', 1000)");
    cJSON_Delete(ent_until(port, "ent-stall", "0", 1, "memory"));
    char *pid = gm_test_pg_value(c, "SELECT string_agg(pid::text, ',') FROM pg_stat_activity"
                                    " WHERE datname = current_database()"
                                    " AND application_name = 'gridmeter-api-entitlement'");
    ck_assert_msg(pid && !strchr(pid, ','), "one listener: %s", pid ? pid : "none");
    pid_t backend = (pid_t)atoi(pid);
    ck_assert_msg(kill(backend, SIGSTOP) == 0, "cannot stop the listener's backend %d", backend);
    bool went_db = false, exact = false;
    char *sum = NULL, got[64] = "";
    for (int64_t end = gm_mono_us() + POLL_US; !went_db && gm_mono_us() < end;) {
        cJSON *j = ent(port, "ent-stall");
        went_db = jstr(j, "source") && !strcmp(jstr(j, "source"), "database");
        cJSON_Delete(j);
        usleep(5000);
    }
    if (went_db) { /* committed while the listener cannot hear it: exact all the same */
        charge(c, "ent-stall", t, 1000, 1000);
        sum = month_sum(c, "ent-stall", month);
        cJSON *j = ent(port, "ent-stall");
        exact = !strcmp(jstr(j, "source"), "database") && jstr(j, "spend") &&
                !strcmp(jstr(j, "spend"), sum);
        snprintf(got, sizeof got, "%s", jstr(j, "spend") ? jstr(j, "spend") : "null");
        cJSON_Delete(j);
    }
    kill(backend, SIGCONT);
    ck_assert_msg(went_db, "a stalled listener's mirror kept answering past the bound");
    ck_assert_msg(exact, "answer while stalled: spend %s, want %s from the database", got, sum);
    cJSON_Delete(ent_until(port, "ent-stall", sum, 1, "memory"));
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'ent-stall'");
    free(sum);
    free(pid);
    PQfinish(c);
    gm_api_stop(s);
}
END_TEST

START_TEST(test_month_rolls_over_on_the_moved_clock)
{
    gm_clock_set_us(DEC_2026 - 2 * GM_US_PER_SEC); /* 2026-11-30T23:59:58Z */
    int port;
    gm_api_server *s = start(1000, &port);
    PGconn *c = db();
    gm_test_pg_exec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit, thresholds)"
                       " VALUES ('ent-month', 'USD', '0.000001', '{100}')");
    charge(c, "ent-month", DEC_2026 - GM_US_PER_HOUR, 1000, 1000);
    char *nov = month_sum(c, "ent-month", NOV_2026);
    cJSON *j = ent_until(port, "ent-month", nov, 0, "memory");
    ck_assert_str_eq(jstr(j, "period"), "2026-11");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")),
                     1);
    cJSON_Delete(j);
    /* midnight UTC: December starts at 0 and allowed, November's crossing stays there */
    gm_clock_set_us(DEC_2026 + GM_US_PER_SEC);
    j = ent_until(port, "ent-month", "0", 1, "memory");
    ck_assert_str_eq(jstr(j, "period"), "2026-12");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thresholds_crossed")),
                     0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "spend_as_of")));
    cJSON_Delete(j);
    PQfinish(c);
    c = db(); /* stamps on the moved clock */
    charge(c, "ent-month", DEC_2026 + GM_US_PER_SEC, 1000, 0);
    char *dec = month_sum(c, "ent-month", DEC_2026);
    j = ent_until(port, "ent-month", dec, 0, "memory");
    ck_assert_str_eq(jstr(j, "period"), "2026-12");
    cJSON_Delete(j);
    /* a clock moved back before the loaded months: answered exactly from the database */
    gm_clock_set_us(NOV_2026 - 60 * GM_US_PER_DAY);
    j = ent_until(port, "ent-month", "0", 1, "database");
    ck_assert_str_eq(jstr(j, "period"), "2026-09");
    cJSON_Delete(j);
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'ent-month'");
    free(nov);
    free(dec);
    PQfinish(c);
    gm_api_stop(s);
}
END_TEST

START_TEST(test_two_api_processes_agree)
{
    gm_clock_set_us(API_TEST_NOW);
    int port, port2 = gm_test_free_port();
    gm_api_server *s = start(1000, &port);
    char p2[16];
    snprintf(p2, sizeof p2, "%d", port2);
    gm_test_clock_to_children();
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        const char *argv[] = {GM_GRIDMETER,   "api", "--db", F.api_conninfo, "--port", p2,
                              "--rate-limit", "0",   NULL};
        execv(GM_GRIDMETER, (char *const *)argv);
        _exit(127);
    }
    int64_t end = gm_mono_us() + POLL_US;
    for (;;) {
        http_resp r = {0};
        int fd_ok = 0;
        /* the child's /healthz: it listens once it started */
        int sfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port2),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        fd_ok = connect(sfd, (struct sockaddr *)&a, sizeof a) == 0;
        close(sfd);
        if (fd_ok) {
            http_do(port2, "GET", "/healthz", NULL, NULL, NULL, NULL, &r);
            bool up = r.status == 200;
            http_free(&r);
            if (up)
                break;
        }
        ck_assert_msg(gm_mono_us() < end && waitpid(pid, NULL, WNOHANG) == 0,
                      "gridmeter api did not start");
        usleep(20000);
    }
    PGconn *c = db();
    int64_t month = gm_month_start(gm_now_us()), t = month + 3 * GM_US_PER_DAY;
    gm_test_pg_exec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit)"
                       " VALUES ('ent-two', 'USD', 1000)");
    for (int i = 0; i < 5; i++)
        charge(c, "ent-two", t + i, 100 + i, 200);
    char *sum = month_sum(c, "ent-two", month);
    cJSON *a1 = ent_until(port, "ent-two", sum, 1, "memory");
    cJSON *a2 = ent_until(port2, "ent-two", sum, 1, "memory");
    same_figure(a1, a2);
    cJSON_Delete(a1);
    cJSON_Delete(a2);
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE gm.budgets SET monthly_limit = %s WHERE tenant = 'ent-two'",
             sum);
    gm_test_pg_exec(c, sql);
    a1 = ent_until(port, "ent-two", sum, 0, "memory");
    a2 = ent_until(port2, "ent-two", sum, 0, "memory");
    same_figure(a1, a2);
    cJSON_Delete(a1);
    cJSON_Delete(a2);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gridmeter api exit %d", status);
    gm_test_pg_exec(c, "DELETE FROM gm.budgets WHERE tenant = 'ent-two'");
    free(sum);
    PQfinish(c);
    gm_api_stop(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("entitlement");
    TCase *tc = tcase_create("mirror");
    tcase_add_unchecked_fixture(tc, api_fixture_setup, api_fixture_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_committed_spend_shows_without_restart_and_the_hard_limit_flips);
    tcase_add_test(tc, test_listener_killed_answers_from_the_database_then_reloads_missing_nothing);
    tcase_add_test(tc, test_a_stalled_listener_is_not_trusted_past_the_bound);
    tcase_add_test(tc, test_month_rolls_over_on_the_moved_clock);
    tcase_add_test(tc, test_two_api_processes_agree);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
