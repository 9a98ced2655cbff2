/* ledger: gridmeter's PostgreSQL side. Migrations (embedded from sql/), connections, rate
 * card import and the rating book loader, and the exactly-once batch writer of the rater.
 *
 * Connections use libpq's usual environment (PGHOST, PGPORT, PGDATABASE, PGUSER, …) and an
 * optional conninfo string (option --db, env GRIDMETER_DB) that overrides it. */
#ifndef GM_LEDGER_H
#define GM_LEDGER_H

#include "gm_common.h"

#include <libpq-fe.h>

/* ---- Connections ------------------------------------------------------------------------*/
/* Connects (conninfo may be NULL or ""), sets application_name and UTC. NULL on failure
 * with the reason in err. The caller owns the connection (PQfinish). */
PGconn *gm_pg_connect(const char *conninfo, const char *app_name, char *err, size_t err_len);
/* Runs one command that must succeed (COMMAND_OK or TUPLES_OK); GM_EDB with the server's
 * message (and SQLSTATE) in err otherwise. */
int gm_pg_exec(PGconn *c, const char *sql, char *err, size_t err_len) GM_MUSTCHECK;
/* Describes the failure of `r` into err: "SQLSTATE 23505: duplicate key … (context)".
 * Returns GM_EDB, or GM_EUNKNOWN when the connection is gone (the outcome of an in-flight
 * COMMIT is then unknown). */
int gm_pg_fail(PGconn *c, const PGresult *r, const char *what, char *err, size_t err_len);

/* ---- Migrations -------------------------------------------------------------------------*/
typedef struct gm_migration {
    int version;      /* 1, 2, … from the file name NNNN_name.sql */
    const char *name; /* "0001_core" */
    const char *sql;
} gm_migration;

/* The migrations of sql/, embedded at build time, in version order. */
extern const gm_migration gm_ledger_migrations[];
extern const size_t gm_ledger_migrations_count;

typedef enum { GM_MIGRATE_APPLY = 0, GM_MIGRATE_STATUS, GM_MIGRATE_DRY_RUN } gm_migrate_mode;

/* Applies the pending migrations in order, each in its own transaction (a failure leaves
 * nothing of that migration behind), serialized across processes by an advisory lock,
 * and records each in gm_meta.schema_migrations with a SHA-256 checksum. A migration that
 * changed after it was applied is an error. `out` (may be NULL) gets one line per
 * migration. Returns 0, or GM_EDB / GM_ECONFLICT with the reason in err. */
int gm_ledger_migrate(PGconn *c, const gm_migration *list, size_t n, gm_migrate_mode mode,
                      FILE *out, char *err, size_t err_len) GM_MUSTCHECK;

#endif /* GM_LEDGER_H */
