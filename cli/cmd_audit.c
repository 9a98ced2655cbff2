/* `gridmeter audit verify|anchor`: tamper evidence for auditors. verify recomputes every
 * chained digest (rater batches, invoices, credit notes, re-rating runs) from the rows and
 * checks the links, the state tables and an anchor file; anchor writes the chain heads.
 * Rules: docs/auditors.md, "Tamper evidence". Exit status: 0 sound, 1 a mismatch, 2 usage
 * or the check could not run. */
#include "cli.h"
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void progress(void *arg, int64_t done, int64_t total, double elapsed_s)
{
    (void)arg;
    double rate = elapsed_s > 0 ? (double)done / elapsed_s : 0;
    fprintf(stderr, "\r\033[Kverify: %lld / ~%lld ledger rows, %.0f rows/s, about %.0f s left",
            (long long)done, (long long)total, rate,
            rate > 0 && total > done ? (double)(total - done) / rate : 0.0);
}

static int parse_when(const char *s, int64_t *us)
{
    *us = 0;
    if (!s || !*s)
        return 0;
    char err[256];
    if (gm_time_parse(s, strlen(s), us, err, sizeof err) != 0) {
        fprintf(stderr, "gridmeter audit: %s\n", err);
        return 2;
    }
    return 0;
}

int gm_cmd_audit(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "audit",
        "Tamper evidence (docs/auditors.md, \"Tamper evidence\").\n"
        "  verify  recompute every chained digest from the rows (rater batches per partition,\n"
        "          finalized invoices, credit notes, re-rating runs), check each chain's links,\n"
        "          the offsets, charges and sources against the chains, and the anchor file's\n"
        "          heads; print the first mismatch with what differs. --from/--to limit it to\n"
        "          batches and documents recorded in [from, to) (then the state tables and\n"
        "          unchained rows are not checked). Exit status: 0 sound, 1 a mismatch, 2 usage\n"
        "          or the check could not run.\n"
        "  anchor  write the chain heads (one line per chain: CHAIN TAB SEQ TAB DIGEST) to\n"
        "          --out (appended) or stdout: keep them outside the database, e.g. daily.",
        "gridmeter audit verify [--from T] [--to T] [--anchor FILE] | audit anchor [--out FILE]"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"from", NULL, NULL, "", GM_OPT_STR, "verify: recorded at or after this RFC 3339 instant",
         0, 0},
        {"to", NULL, NULL, "", GM_OPT_STR, "verify: recorded before this RFC 3339 instant", 0, 0},
        {"anchor", NULL, NULL, "", GM_OPT_STR, "verify: an anchor file to check the chains against",
         0, 0},
        {"out", NULL, NULL, "", GM_OPT_STR, "anchor: append to this file (default stdout)", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter audit: %s\n", err), 2);
    const char *sub = npos == 1 ? argv[1] : "";
    if (strcmp(sub, "verify") && strcmp(sub, "anchor")) {
        fprintf(stderr, "gridmeter audit: expected `verify` or `anchor` (see --help)\n");
        return 2;
    }
    gm_chain_verify_opts vo = {0};
    if (parse_when(gm_opt_str(opts, "from"), &vo.from_us) ||
        parse_when(gm_opt_str(opts, "to"), &vo.to_us))
        return 2;
    PGconn *db = gm_pg_connect(gm_opt_str(opts, "db"), "gridmeter-audit", err, sizeof err);
    if (!db) {
        fprintf(stderr, "gridmeter audit: %s\n", err);
        return 2;
    }
    int status = 0;
    if (!strcmp(sub, "anchor")) {
        const char *path = gm_opt_str(opts, "out");
        FILE *out = *path ? fopen(path, "a") : stdout;
        if (!out) {
            fprintf(stderr, "gridmeter audit anchor: %s: cannot open for appending\n", path);
            status = 2;
        } else {
            if (gm_chain_anchor(db, out, gm_now_us(), err, sizeof err)) {
                fprintf(stderr, "gridmeter audit anchor: %s\n", err);
                status = 2;
            }
            if (out != stdout)
                fclose(out);
        }
        PQfinish(db);
        return status;
    }
    const char *anchor = gm_opt_str(opts, "anchor");
    vo.anchor_path = *anchor ? anchor : NULL;
    if (isatty(2))
        vo.progress = progress;
    gm_chain_report rep;
    rc = gm_chain_verify(db, &vo, &rep, err, sizeof err);
    if (vo.progress)
        fputc('\n', stderr);
    if (rc) {
        fprintf(stderr, "gridmeter audit verify: could not verify: %s\n", err);
        status = 2;
    } else {
        printf("verified %lld batches in %lld chains (%lld ledger rows, %lld rejected messages), "
               "%lld documents in %lld chains, %lld anchored heads in %.2f s (%.0f rows/s)\n",
               (long long)rep.batches, (long long)rep.chains, (long long)rep.rows,
               (long long)rep.rejects, (long long)rep.documents, (long long)rep.doc_chains,
               (long long)rep.anchors, rep.elapsed_s,
               rep.elapsed_s > 0 ? (double)rep.rows / rep.elapsed_s : 0.0);
        if (rep.problems) {
            printf("MISMATCH (%lld found); the first: %s\n", (long long)rep.problems, rep.first);
            status = 1;
        } else {
            printf("ok: every digest, link, state table and anchor agrees\n");
        }
    }
    PQfinish(db);
    return status;
}
