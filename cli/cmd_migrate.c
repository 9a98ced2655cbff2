/* `gridmeter migrate`: apply (or list) the embedded schema migrations. */
#include "cli.h"
#include "gm_ledger.h"

int gm_cmd_migrate(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "migrate",
        "Apply the PostgreSQL schema migrations (sql/, embedded in this binary) in order.\n"
        "Each runs in its own transaction; re-running is a no-op; an edited applied migration "
        "is an error.\nThe connecting user must be a superuser or a member of gm_owner.",
        "gridmeter migrate [--status | --dry-run] [--db CONNINFO]"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"status", NULL, NULL, NULL, GM_OPT_FLAG, "list applied and pending migrations", 0, 0},
        {"dry-run", NULL, NULL, NULL, GM_OPT_FLAG, "show what would be applied, change nothing", 0,
         0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter migrate: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter migrate: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    PGconn *c = gm_pg_connect(gm_opt_str(opts, "db"), "gridmeter-migrate", err, sizeof err);
    if (!c) {
        fprintf(stderr, "gridmeter migrate: %s\n", err);
        return 1;
    }
    gm_migrate_mode mode = gm_opt_flag(opts, "status")    ? GM_MIGRATE_STATUS
                           : gm_opt_flag(opts, "dry-run") ? GM_MIGRATE_DRY_RUN
                                                          : GM_MIGRATE_APPLY;
    rc = gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count, mode, stdout, err,
                           sizeof err);
    PQfinish(c);
    if (rc) {
        fprintf(stderr, "gridmeter migrate: %s\n", err);
        return 1;
    }
    return 0;
}
