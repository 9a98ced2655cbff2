/* `gridmeter apikey create|revoke`: API keys from the command line (the first admin key of a
 * fresh install is made here). */
#include "cli.h"
#include "gm_api.h"
#include "gm_ledger.h"

#include <string.h>

int gm_cmd_apikey(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "apikey",
        "Create or revoke an API key. `create` prints the key once (only its SHA-256 is\n"
        "stored); `revoke KEY_ID` disables a key for good.",
        "gridmeter apikey create --role admin|finance|customer [--tenant T] [--name N]\n"
        "                        [--expires RFC3339]\n"
        "       gridmeter apikey revoke KEY_ID"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"role", NULL, NULL, "", GM_OPT_STR, "admin, finance or customer", 0, 0},
        {"tenant", NULL, NULL, "", GM_OPT_STR, "tenant of a customer key", 0, 0},
        {"name", NULL, NULL, "", GM_OPT_STR, "a label for people", 0, 0},
        {"expires", NULL, NULL, "", GM_OPT_STR, "expiry (RFC 3339); empty: none", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter apikey: %s\n", err), 2);
    bool create = npos == 1 && !strcmp(argv[1], "create");
    bool revoke = npos == 2 && !strcmp(argv[1], "revoke");
    if (!create && !revoke) {
        fprintf(stderr, "usage: %s\n", info.usage);
        return 2;
    }
    int64_t exp = 0;
    const char *e = gm_opt_str(opts, "expires");
    if (create && *e && gm_time_parse(e, strlen(e), &exp, err, sizeof err)) {
        fprintf(stderr, "gridmeter apikey: --expires: %s\n", err);
        return 2;
    }
    PGconn *c = gm_pg_connect(gm_opt_str(opts, "db"), "gridmeter-apikey", err, sizeof err);
    if (!c) {
        fprintf(stderr, "gridmeter apikey: %s\n", err);
        return 1;
    }
    if (create) {
        char token[GM_API_TOKEN_MAX], id[40];
        rc =
            gm_api_key_create(c, gm_opt_str(opts, "role"), gm_opt_str(opts, "tenant"),
                              gm_opt_str(opts, "name"), exp, token, id, sizeof id, err, sizeof err);
        if (!rc) {
            printf("key_id %s\nkey %s\n", id, token);
            fprintf(stderr, "gridmeter apikey: the key is shown once; store it now\n");
        }
    } else {
        rc = gm_api_key_revoke(c, argv[2], err, sizeof err);
        if (!rc)
            printf("revoked %s\n", argv[2]);
    }
    PQfinish(c);
    if (rc) {
        fprintf(stderr, "gridmeter apikey: %s\n", err);
        return 1;
    }
    return 0;
}
