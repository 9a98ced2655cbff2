/* `gridmeter invoice list|show|finalize|void|credit-note`: finance's invoice work from the
 * command line, through billing/ (the same code as the REST API). Also the helpers that
 * `close` and `rerate` share: connecting, loading the rating book, the clock. */
#include "cli.h"
#include "gm_billing.h"
#include "gm_ident.h"
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gm_cli_billing_open(const char *cmd, const gm_opt *opts, PGconn **db, gm_rating_book **book,
                        gm_billing_ctx *ctx)
{
    char err[1024];
    *db = gm_pg_connect(gm_opt_str(opts, "db"), cmd, err, sizeof err);
    if (!*db) {
        fprintf(stderr, "gridmeter %s: %s\n", cmd, err);
        return 1;
    }
    if (gm_ledger_load_book(*db, book, err, sizeof err)) {
        fprintf(stderr, "gridmeter %s: loading the rate cards and contracts: %s\n", cmd, err);
        PQfinish(*db);
        return 1;
    }
    int64_t grace = gm_opt_int(opts, "grace-hours");
    /* The one instant of this command: every decision it makes uses it. */
    *ctx = (gm_billing_ctx){*db, *book, 1, gm_now_us(), (int)grace, NULL};
    return 0;
}

static void print_json(cJSON *o)
{
    char *s = cJSON_Print(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

static int fail(const char *what, int rc, const char *err)
{
    fprintf(stderr, "gridmeter invoice %s: %s\n", what, err);
    return rc == GM_ENOTFOUND ? 4 : rc == GM_ECONFLICT ? 3 : 1;
}

int gm_cmd_invoice(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "invoice",
        "Invoices from the command line, through the same billing code as the REST API.\n"
        "  list         invoices of a month (--month; drafts are computed live and created for\n"
        "               every tenant with charges or an active contract), or of a tenant\n"
        "  show ID      one invoice with its lines (--csv for CSV); drafts computed live\n"
        "  finalize ID  finalize a draft past its grace window (one instant: gm_now_us)\n"
        "  void ID      void a finalized invoice (--reason): a credit note for the rest\n"
        "  credit-note ID --amount A --reason R   credit part of a finalized invoice\n"
        "Exit status: 0 done, 1 error, 2 usage, 3 refused by a rule (state, grace window,\n"
        "order, amount), 4 no such invoice.",
        "gridmeter invoice list [--month YYYY-MM] [--tenant T] [--status S] [--json]\n"
        "       gridmeter invoice show ID [--csv]\n"
        "       gridmeter invoice finalize ID\n"
        "       gridmeter invoice void ID --reason R\n"
        "       gridmeter invoice credit-note ID --amount A --reason R"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"grace-hours", "billing.grace_hours", "GRIDMETER_GRACE_HOURS", "72", GM_OPT_INT,
         "a month's invoices can be finalized this long after its end", 0, 0},
        {"month", NULL, NULL, "", GM_OPT_STR, "list: the month YYYY-MM (default: all months)", 0,
         0},
        {"tenant", NULL, NULL, "", GM_OPT_STR, "list: one tenant", 0, 0},
        {"status", NULL, NULL, "", GM_OPT_STR, "list: draft, finalized or void", 0, 0},
        {"json", NULL, NULL, "false", GM_OPT_FLAG, "list: JSON instead of a table", 0, 0},
        {"csv", NULL, NULL, "false", GM_OPT_FLAG, "show: CSV instead of JSON", 0, 0},
        {"reason", NULL, NULL, "", GM_OPT_STR, "void, credit-note: why (1-1000 characters)", 0, 0},
        {"amount", NULL, NULL, "", GM_OPT_STR, "credit-note: amount in currency units (\"12.50\")",
         0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter invoice: %s\n", err), 2);
    const char *sub = npos >= 1 ? argv[1] : "";
    bool needs_id = !strcmp(sub, "show") || !strcmp(sub, "finalize") || !strcmp(sub, "void") ||
                    !strcmp(sub, "credit-note");
    if (!(!strcmp(sub, "list") && npos == 1) && !(needs_id && npos == 2)) {
        fprintf(stderr, "usage: %s\n", info.usage);
        return 2;
    }
    const char *id = needs_id ? argv[2] : NULL;
    if (id && !gm_billing_valid_invoice_id(id)) {
        fprintf(stderr, "gridmeter invoice %s: %s: an invoice id is inv_ and 32 hex digits\n", sub,
                id);
        return 2;
    }
    gm_billing_filter f = {0};
    const char *month = gm_opt_str(opts, "month"), *tenant = gm_opt_str(opts, "tenant"),
               *status = gm_opt_str(opts, "status");
    if (*month && !gm_billing_parse_month(month, &f.period_start_us)) {
        fprintf(stderr, "gridmeter invoice: --month: must be YYYY-MM (1970-01 or later)\n");
        return 2;
    }
    if (*tenant && !gm_billing_valid_tenant(tenant)) {
        char why[256];
        (void)gm_ident_check_field(GM_IDENT_TENANT, "--tenant", tenant, why, sizeof why);
        fprintf(stderr, "gridmeter invoice: %s\n", why);
        return 2;
    }
    if (*status && strcmp(status, "draft") && strcmp(status, "finalized") &&
        strcmp(status, "void")) {
        fprintf(stderr, "gridmeter invoice: --status: must be draft, finalized or void\n");
        return 2;
    }
    PGconn *db;
    gm_rating_book *book;
    gm_billing_ctx ctx;
    if ((rc = gm_cli_billing_open("invoice", opts, &db, &book, &ctx)))
        return rc;
    int status_out = 0;
    if (!strcmp(sub, "list")) {
        f.tenant = *tenant ? tenant : NULL;
        f.status = *status ? status : NULL;
        f.limit = 200;
        if (f.period_start_us)
            rc = gm_billing_drafts_ensure(&ctx, f.period_start_us, f.tenant, NULL, err, sizeof err);
        cJSON *arr = cJSON_CreateArray();
        bool more = true;
        if (!gm_opt_flag(opts, "json"))
            printf("%-36s  %-7s  %-24s  %-9s  %-14s  %16s %s\n", "invoice_id", "period", "tenant",
                   "status", "number", "total", "currency");
        while (!rc && more) {
            gm_billing_invoice **v = NULL;
            size_t n = 0;
            rc = gm_billing_list(&ctx, &f, &v, &n, &more, err, sizeof err);
            for (size_t i = 0; i < n; i++) {
                if (!rc && gm_opt_flag(opts, "json"))
                    cJSON_AddItemToArray(arr, gm_billing_invoice_json(v[i], false));
                else if (!rc) {
                    char m[8], tot[64];
                    gm_billing_format_month(v[i]->period_start_us, m);
                    gm_rating_format_minor(v[i]->total_minor, v[i]->minor_units, tot, sizeof tot);
                    printf("%-36s  %-7s  %-24s  %-9s  %-14s  %16s %s\n", v[i]->invoice_id, m,
                           v[i]->tenant, v[i]->status, v[i]->number[0] ? v[i]->number : "-", tot,
                           v[i]->currency);
                }
            }
            if (!rc && more && n) {
                f.has_cursor = true;
                f.cursor_period_us = v[n - 1]->period_start_us;
                snprintf(f.cursor_tenant, sizeof f.cursor_tenant, "%s", v[n - 1]->tenant);
            }
            for (size_t i = 0; i < n; i++)
                gm_billing_invoice_free(v[i]);
            free(v);
        }
        if (!rc && gm_opt_flag(opts, "json"))
            print_json(arr);
        else
            cJSON_Delete(arr);
        if (rc)
            status_out = fail("list", rc, err);
    } else if (!strcmp(sub, "show")) {
        gm_billing_invoice *inv = NULL;
        rc = gm_billing_invoice_get(&ctx, id, NULL, &inv, err, sizeof err);
        if (rc)
            status_out = fail("show", rc, err);
        else if (gm_opt_flag(opts, "csv")) {
            size_t len;
            char *csv = gm_billing_invoice_csv(inv, &len);
            fwrite(csv, 1, len, stdout);
            free(csv);
        } else
            print_json(gm_billing_invoice_json(inv, true));
        gm_billing_invoice_free(inv);
    } else if (!strcmp(sub, "finalize")) {
        rc = gm_billing_finalize(&ctx, id, err, sizeof err);
        gm_billing_invoice *inv = NULL;
        if (!rc && !(rc = gm_billing_invoice_get(&ctx, id, NULL, &inv, err, sizeof err))) {
            char tot[64];
            gm_rating_format_minor(inv->total_minor, inv->minor_units, tot, sizeof tot);
            printf("finalized %s %s %s total %s %s\n", id, inv->number, inv->tenant, tot,
                   inv->currency);
        }
        gm_billing_invoice_free(inv);
        if (rc)
            status_out = fail("finalize", rc, err);
    } else if (!strcmp(sub, "void")) {
        rc = gm_billing_void(&ctx, id, gm_opt_str(opts, "reason"), err, sizeof err);
        if (rc)
            status_out = fail("void", rc, err);
        else
            printf("void %s\n", id);
    } else {
        gm_billing_credit_note cn;
        rc = gm_billing_credit_note_create(&ctx, id, gm_opt_str(opts, "amount"),
                                           gm_opt_str(opts, "reason"), &cn, err, sizeof err);
        if (rc)
            status_out = fail("credit-note", rc == GM_EINVAL ? GM_ECONFLICT : rc, err);
        else
            printf("credit note %s %s on %s: %s %s\n", cn.credit_note_id, cn.number, id, cn.amount,
                   cn.currency);
    }
    gm_rating_book_free(book);
    PQfinish(db);
    return status_out;
}
