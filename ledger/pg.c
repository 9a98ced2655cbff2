/* PostgreSQL connection helpers: connect, run, and describe failures precisely. */
#include "gm_ledger.h"

#include <string.h>

PGconn *gm_pg_connect(const char *conninfo, const char *app_name, char *err, size_t err_len)
{
    const char *keys[] = {"dbname", "application_name", "options", NULL};
    const char *vals[] = {conninfo && *conninfo ? conninfo : NULL, app_name,
                          "-c TimeZone=UTC -c client_min_messages=warning", NULL};
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
