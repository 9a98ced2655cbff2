/* `gridmeter rerate --month M [--tenant T] [--dry-run]`: re-rates a month with the rate cards
 * now in PostgreSQL (after a backdated price change) through billing/: prints the diff line by
 * line (quantity, old and new unit price and amount) and, unless --dry-run, appends the run
 * (audit.rerating_runs) and its corrections; the ledger is never rewritten. */
#include "cli.h"
#include "gm_billing.h"
#include "gm_ledger.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gm_cli_billing_open(const char *cmd, const gm_opt *opts, PGconn **db, gm_rating_book **book,
                        gm_billing_ctx *ctx);

int gm_cmd_rerate(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "rerate",
        "Re-rate a month with the rate cards and contracts now stored (for example after a\n"
        "backdated card version): each tenant's month is priced again and compared line by line\n"
        "with what stands (a finalized month's billed lines, a draft month's charges as rated).\n"
        "--dry-run only prints the diff. Applied, the run (who, why, when, totals) and one\n"
        "correction per changed line are appended (audit.rerating_runs,\n"
        "audit.rerating_corrections); drafts price with the new cards anyway, and a finalized\n"
        "month gets adjustment lines naming it on the tenant's next invoice. Re-rating again\n"
        "changes nothing. Exit status: 0 done, 1 error, 2 usage.",
        "gridmeter rerate --month YYYY-MM [--tenant T] [--dry-run] [--reason R] [--json]"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"grace-hours", "billing.grace_hours", "GRIDMETER_GRACE_HOURS", "72", GM_OPT_INT,
         "a month's invoices can be finalized this long after its end", 0, 0},
        {"month", NULL, NULL, "", GM_OPT_STR, "the month to re-rate, YYYY-MM (required)", 0, 0},
        {"tenant", NULL, NULL, "", GM_OPT_STR, "one tenant (default: all)", 0, 0},
        {"dry-run", NULL, NULL, "false", GM_OPT_FLAG, "print the diff, write nothing", 0, 0},
        {"reason", NULL, NULL, "", GM_OPT_STR, "why (required unless --dry-run)", 0, 0},
        {"by", NULL, NULL, "", GM_OPT_STR, "who asks (default: the login name)", 0, 0},
        {"json", NULL, NULL, "false", GM_OPT_FLAG, "JSON instead of a table", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter rerate: %s\n", err), 2);
    int64_t month;
    if (npos != 0 || !gm_billing_parse_month(gm_opt_str(opts, "month"), &month)) {
        fprintf(stderr, "gridmeter rerate: --month YYYY-MM is required (1970-01 or later)\n");
        return 2;
    }
    const char *tenant = gm_opt_str(opts, "tenant"), *reason = gm_opt_str(opts, "reason");
    bool dry = gm_opt_flag(opts, "dry-run");
    if (!dry && !*reason) {
        fprintf(stderr, "gridmeter rerate: --reason is required to apply (or use --dry-run)\n");
        return 2;
    }
    char by[256];
    const char *b = gm_opt_str(opts, "by");
    if (*b)
        snprintf(by, sizeof by, "%s", b);
    else {
        struct passwd *pw = getpwuid(getuid());
        snprintf(by, sizeof by, "%s (gridmeter rerate)", pw ? pw->pw_name : "unknown");
    }
    PGconn *db;
    gm_rating_book *book;
    gm_billing_ctx ctx;
    if ((rc = gm_cli_billing_open("rerate", opts, &db, &book, &ctx)))
        return rc;
    gm_billing_rerate_result *res = NULL;
    rc = gm_billing_rerate(&ctx, month, *tenant ? tenant : NULL, dry, by, reason, &res, err,
                           sizeof err);
    int status = 0;
    if (rc) {
        fprintf(stderr, "gridmeter rerate: %s\n", err);
        status = rc == GM_EINVAL ? 2 : 1;
    } else if (gm_opt_flag(opts, "json")) {
        cJSON *o = gm_billing_rerate_json(res, dry);
        char *s = cJSON_Print(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("%-20s %-7s %-10s %-7s %-26s %-8s %3s %22s %16s %16s %22s %22s %14s %14s\n",
               "tenant", "period", "status", "kind", "model", "site", "ver", "quantity",
               "price before", "price after", "exact before", "exact after", "before", "after");
        for (size_t i = 0; i < res->n_lines; i++) {
            const gm_billing_rerate_line *l = &res->lines[i];
            char m[8], q[64], pb[48], pa[48], eb[64], ea[64], mb[48], ma[48];
            gm_billing_format_month(l->period_start_us, m);
            gm_billing_line tmp = {0};
            snprintf(tmp.dimension, sizeof tmp.dimension, "%s", l->dimension);
            tmp.qty = l->qty_after ? l->qty_after : l->qty_before;
            gm_billing_line_quantity(&tmp, q, sizeof q);
            gm_dec_format(l->unit_price_p_before, 12, pb, sizeof pb);
            gm_dec_format(l->unit_price_p_after, 12, pa, sizeof pa);
            gm_dec_format(l->amount_e18_before, 18, eb, sizeof eb);
            gm_dec_format(l->amount_e18_after, 18, ea, sizeof ea);
            gm_rating_format_minor(l->amount_minor_before, l->minor_units, mb, sizeof mb);
            gm_rating_format_minor(l->amount_minor_after, l->minor_units, ma, sizeof ma);
            /* the price variant last (docs/rating.md, "Price variants"), when not the base */
            printf("%-20s %-7s %-10s %-7s %-26s %-8s %3lld %22s %16s %16s %22s %22s %14s %14s"
                   " %s %s%s%s\n",
                   l->tenant, m, l->invoice_status, l->kind, l->model, l->site_tier,
                   (long long)l->card_version, q, pb, pa, eb, ea, mb, ma, l->dimension,
                   gm_billing_line_unit(&tmp) ? gm_billing_line_unit(&tmp) : "",
                   l->variant[0] ? " variant=" : "", l->variant);
        }
        char d[64];
        gm_dec_format(res->delta_e18, 18, d, sizeof d);
        printf("rerate %s%s%s: %d tenant(s), %zu line(s) changed, exact delta %s%s",
               gm_opt_str(opts, "month"), *tenant ? " tenant " : "", tenant, res->tenants,
               res->n_lines, d, dry ? " (dry run: nothing written)\n" : "");
        if (!dry)
            printf(", run %lld applied\n", (long long)res->run_id);
    }
    gm_billing_rerate_result_free(res);
    gm_rating_book_free(book);
    PQfinish(db);
    return status;
}
