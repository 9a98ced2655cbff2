/* PostgreSQL connection helpers: connect, run, and describe failures precisely. */
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>

PGconn *gm_pg_connect(const char *conninfo, const char *app_name, char *err, size_t err_len)
{
    /* gridmeter.clock_offset_us: the process's clock offset (GRIDMETER_NOW), which gm.now()
     * adds to now() so that the database stamps and decides on the same clock. */
    char options[160];
    snprintf(options, sizeof options,
             "-c TimeZone=UTC -c client_min_messages=warning -c gridmeter.clock_offset_us=%lld",
             (long long)gm_clock_offset_us());
    const char *keys[] = {"dbname", "application_name", "options", NULL};
    const char *vals[] = {conninfo && *conninfo ? conninfo : NULL, app_name, options, NULL};
    /* expand_dbname=1: a conninfo string in dbname is expanded; NULL values fall back to
     * libpq's environment (PGHOST, PGPORT, …). */
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        gm_fail(err, err_len, GM_ENOMEM, "PostgreSQL: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        gm_fail(err, err_len, GM_EDB, "PostgreSQL: cannot connect (host %s port %s db %s): %s",
                PQhost(c) ? PQhost(c) : "?", PQport(c) ? PQport(c) : "?", PQdb(c) ? PQdb(c) : "?",
                msg);
        PQfinish(c);
        return NULL;
    }
    return c;
}

int gm_pg_fail(PGconn *c, const PGresult *r, const char *what, char *err, size_t err_len)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg)
        msg = PQerrorMessage(c);
    char one[1024];
    snprintf(one, sizeof one, "%s", msg ? msg : "unknown error");
    for (char *p = one; *p; p++)
        if (*p == '\n')
            *p = ' ';
    size_t n = strlen(one);
    while (n && one[n - 1] == ' ')
        one[--n] = '\0';
    bool gone = PQstatus(c) != CONNECTION_OK;
    gm_fail(err, err_len, gone ? GM_EUNKNOWN : GM_EDB, "%s: %s%s%s%s", what,
            state ? "SQLSTATE " : "", state ? state : "", state ? ": " : "", one);
    return gone ? GM_EUNKNOWN : GM_EDB;
}

int gm_pg_exec(PGconn *c, const char *sql, char *err, size_t err_len)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = gm_pg_fail(c, r, "SQL", err, err_len);
    PQclear(r);
    return rc;
}

int gm_ledger_ensure_partitions(PGconn *c, int64_t from_us, int months, int *created, char *err,
                                size_t err_len)
{
    char from[40], n[16];
    gm_time_format(from_us, from, sizeof from);
    snprintf(n, sizeof n, "%d", months);
    const char *p[2] = {from, n};
    PGresult *r = PQexecParams(c, "SELECT gm.ensure_ledger_partitions($1::timestamptz, $2::int)", 2,
                               NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = gm_pg_fail(c, r, "ledger partitions", err, err_len);
    else if (created)
        *created = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

int gm_pg_begin(PGconn *c, const char *mode, int64_t now_us, char *err, size_t err_len)
{
    char ts[40], sql[192];
    gm_time_format(now_us, ts, sizeof ts); /* our own text: digits, '-', ':', '.', 'T', 'Z' */
    snprintf(sql, sizeof sql, "BEGIN%s%s; SELECT set_config('gridmeter.now', '%s', true)",
             mode && *mode ? " " : "", mode ? mode : "", ts);
    int rc = gm_pg_exec(c, sql, err, err_len);
    if (rc && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
    return rc;
}

int gm_pg_begin_or_join(PGconn *c, const char *mode, int64_t now_us, bool *own, char *err,
                        size_t err_len)
{
    if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
        *own = true;
        return gm_pg_begin(c, mode, now_us, err, err_len);
    }
    *own = false;
    char ts[40], sql[96];
    gm_time_format(now_us, ts, sizeof ts); /* our own text: digits, '-', ':', '.', 'T', 'Z' */
    snprintf(sql, sizeof sql, "SELECT set_config('gridmeter.now', '%s', true)", ts);
    return gm_pg_exec(c, sql, err, err_len);
}

int gm_pg_end(PGconn *c, bool own, int rc, const char *what, char *err, size_t err_len)
{
    if (!own)
        return rc;
    if (rc) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    PGresult *r = PQexec(c, "COMMIT");
    /* COMMIT of a failed transaction answers ROLLBACK: nothing was written */
    if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(r), "COMMIT")) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        rc = gm_pg_fail(c, r, what, err, err_len);
        if (st && (!strcmp(st, "40001") || !strcmp(st, "40P01")))
            rc = GM_ECONFLICT; /* a serialization failure: nothing was written, retry */
    }
    PQclear(r);
    return rc;
}

int gm_pg_sync_clock(PGconn *c, int64_t *offset_us, char *err, size_t err_len)
{
    int64_t want = gm_clock_offset_us();
    if (*offset_us == want)
        return 0;
    char sql[96];
    snprintf(sql, sizeof sql, "SET gridmeter.clock_offset_us = %lld", (long long)want);
    int rc = gm_pg_exec(c, sql, err, err_len);
    if (!rc)
        *offset_us = want;
    return rc;
}
