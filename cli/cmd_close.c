/* `gridmeter close --month YYYY-MM`: the month close. Creates the month's drafts (tenants with
 * charges, and every month of an active contract: commitments are owed also without usage),
 * then finalizes, tenant by tenant and each tenant's months in order, every draft of that month
 * or earlier whose grace window has ended. Idempotent; two at once finalize each invoice once.
 * Progress on a terminal, a summary, exit status for cron. */
#include "cli.h"
#include "gm_billing.h"
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gm_cli_billing_open(const char *cmd, const gm_opt *opts, PGconn **db, gm_rating_book **book,
                        gm_billing_ctx *ctx);

typedef struct {
    bool tty, verbose;
    int64_t t0;
} progress_state;

static void progress(void *arg, int done, int total, const char *invoice_id, const char *tenant,
                     const char *outcome)
{
    progress_state *p = arg;
    if (p->verbose || (strncmp(outcome, "finalized", 9) && strncmp(outcome, "already", 7)))
        fprintf(stderr, "%s%s %s: %s\n", p->tty ? "\r\033[K" : "", invoice_id, tenant, outcome);
    if (p->tty) {
        double s = (double)(gm_mono_us() - p->t0) / 1e6;
        double rate = s > 0 ? done / s : 0;
        fprintf(stderr, "\r\033[Kclose: %d / %d invoices, %.1f/s, about %.0f s left", done, total,
                rate, rate > 0 ? (total - done) / rate : 0.0);
        if (done == total)
            fputc('\n', stderr);
    }
}

int gm_cmd_close(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "close",
        "Close a billing month: create its drafts (every tenant with charges, and every month\n"
        "of an active contract, whose minimum commitment is owed also without usage), then\n"
        "finalize every draft of that month and earlier ones, tenant by tenant and in month\n"
        "order, whose grace window (period end + grace hours) has ended at this command's\n"
        "instant (gm_now_us). Idempotent: finalized invoices are skipped, and two closes at once\n"
        "finalize each invoice once. Exit status: 0 every invoice of the month is final, 1 some\n"
        "could not be finalized (reasons printed), 2 usage, 3 some drafts are still in their\n"
        "grace window (run again later).",
        "gridmeter close --month YYYY-MM [--grace-hours H] [--verbose]"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"grace-hours", "billing.grace_hours", "GRIDMETER_GRACE_HOURS", "72", GM_OPT_INT,
         "a month's invoices can be finalized this long after its end", 0, 0},
        {"month", NULL, NULL, "", GM_OPT_STR, "the month to close, YYYY-MM (required)", 0, 0},
        {"verbose", NULL, NULL, "false", GM_OPT_FLAG, "print every invoice, not only problems", 0,
         0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter close: %s\n", err), 2);
    int64_t month;
    if (npos != 0 || !gm_billing_parse_month(gm_opt_str(opts, "month"), &month)) {
        fprintf(stderr, "gridmeter close: --month YYYY-MM is required (1970-01 or later)\n");
        return 2;
    }
    PGconn *db;
    gm_rating_book *book;
    gm_billing_ctx ctx;
    if ((rc = gm_cli_billing_open("close", opts, &db, &book, &ctx)))
        return rc;
    progress_state ps = {isatty(2) != 0, gm_opt_flag(opts, "verbose"), gm_mono_us()};
    gm_billing_close_summary sum;
    rc = gm_billing_close(&ctx, month, progress, &ps, &sum, err, sizeof err);
    printf("close %s: %d drafts created, %d finalized, %d already final, %d not due (grace"
           " window open), %d failed\n",
           gm_opt_str(opts, "month"), sum.drafts_created, sum.finalized, sum.already_final,
           sum.not_due, sum.failed);
    int status = 0;
    if (rc) {
        fprintf(stderr, "gridmeter close: %s\n", err);
        status = rc == GM_EINVAL ? 2 : 1; /* 2: the month has not begun */
    } else if (sum.not_due)
        status = 3;
    gm_rating_book_free(book);
    PQfinish(db);
    return status;
}
