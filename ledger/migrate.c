/* Schema migrations: ordered, transactional, recorded with checksums, safe to re-run. */
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>

/* Advisory lock key shared by every migrator ("gmmigr" in ASCII). */
#define MIGRATE_LOCK_KEY "29113321406034432"

static const char bootstrap_sql[] =
    "CREATE SCHEMA IF NOT EXISTS gm_meta;"
    "CREATE TABLE IF NOT EXISTS gm_meta.schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " applied_by text NOT NULL DEFAULT current_user, duration_ms integer NOT NULL);"
    "COMMENT ON TABLE gm_meta.schema_migrations IS 'Migrations applied by gridmeter migrate'";

/* Line number of a 1-based character position in sql. */
static int line_of(const char *sql, long pos)
{
    int line = 1;
    for (long i = 0; sql[i] && i < pos - 1; i++)
        line += sql[i] == '\n';
    return line;
}

static int checksum(PGconn *c, const char *sql, char out[65], char *err, size_t err_len)
{
    const char *params[1] = {sql};
    PGresult *r = PQexecParams(c, "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "migrate: checksum", err, err_len);
        PQclear(r);
        return rc;
    }
    snprintf(out, 65, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int apply_one(PGconn *c, const gm_migration *m, const char *sum, FILE *out, char *err,
                     size_t err_len)
{
    int64_t t0 = gm_mono_us();
    int rc = gm_pg_exec(c, "BEGIN", err, err_len);
    if (rc)
        return rc;
    PGresult *r = PQexec(c, m->sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
        char what[128];
        if (pos)
            snprintf(what, sizeof what, "migration %s, line %d", m->name,
                     line_of(m->sql, atol(pos)));
        else
            snprintf(what, sizeof what, "migration %s", m->name);
        rc = gm_pg_fail(c, r, what, err, err_len);
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    PQclear(r);
    char ver[16], ms[24];
    snprintf(ver, sizeof ver, "%d", m->version);
    snprintf(ms, sizeof ms, "%lld", (long long)((gm_mono_us() - t0) / 1000));
    const char *params[4] = {ver, m->name, sum, ms};
    r = PQexecParams(c,
                     "INSERT INTO gm_meta.schema_migrations (version, name, checksum, duration_ms)"
                     " VALUES ($1, $2, $3, $4)",
                     4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = gm_pg_fail(c, r, "migrate: recording", err, err_len);
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    PQclear(r);
    rc = gm_pg_exec(c, "COMMIT", err, err_len);
    if (rc)
        return rc;
    if (out)
        fprintf(out, "applied  %s  (%lld ms)\n", m->name, (long long)((gm_mono_us() - t0) / 1000));
    return 0;
}

int gm_ledger_migrate(PGconn *c, const gm_migration *list, size_t n, gm_migrate_mode mode,
                      FILE *out, char *err, size_t err_len)
{
    int rc = gm_pg_exec(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", err, err_len);
    if (rc)
        return rc;
    if (mode == GM_MIGRATE_APPLY)
        rc = gm_pg_exec(c, bootstrap_sql, err, err_len);
    if (rc)
        goto unlock;
    bool have_table = true;
    {
        PGresult *r = PQexec(c, "SELECT to_regclass('gm_meta.schema_migrations') IS NOT NULL");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = gm_pg_fail(c, r, "migrate", err, err_len);
            PQclear(r);
            goto unlock;
        }
        have_table = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
    }
    int applied_now = 0, pending = 0;
    for (size_t i = 0; i < n; i++) {
        const gm_migration *m = &list[i];
        char sum[65];
        if ((rc = checksum(c, m->sql, sum, err, err_len)))
            goto unlock;
        char stored[65] = "";
        if (have_table) {
            char ver[16];
            snprintf(ver, sizeof ver, "%d", m->version);
            const char *params[1] = {ver};
            PGresult *r = PQexecParams(
                c, "SELECT checksum, applied_at FROM gm_meta.schema_migrations WHERE version = $1",
                1, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_TUPLES_OK) {
                rc = gm_pg_fail(c, r, "migrate", err, err_len);
                PQclear(r);
                goto unlock;
            }
            if (PQntuples(r) == 1)
                snprintf(stored, sizeof stored, "%s", PQgetvalue(r, 0, 0));
            if (*stored && out && mode != GM_MIGRATE_APPLY)
                fprintf(out, "applied  %s  at %s\n", m->name, PQgetvalue(r, 0, 1));
            PQclear(r);
        }
        if (*stored) {
            if (strcmp(stored, sum) != 0) {
                rc = gm_fail(err, err_len, GM_ECONFLICT,
                             "migration %s changed after it was applied (checksum %.12s, "
                             "applied %.12s): never edit an applied migration, add a new one",
                             m->name, sum, stored);
                goto unlock;
            }
            continue;
        }
        pending++;
        if (mode != GM_MIGRATE_APPLY) {
            if (out)
                fprintf(out, "pending  %s\n", m->name);
            continue;
        }
        if ((rc = apply_one(c, m, sum, out, err, err_len)))
            goto unlock;
        applied_now++;
    }
    if (out) {
        if (mode == GM_MIGRATE_APPLY)
            fprintf(out, "%d migration(s) applied, schema at version %d\n", applied_now,
                    n ? list[n - 1].version : 0);
        else
            fprintf(out, "%d pending\n", pending);
    }
unlock:
    PQclear(PQexec(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return rc;
}
