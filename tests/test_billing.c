/* billing/ without HTTP, against a real PostgreSQL (throw-away databases): commitments of
 * months without usage, finalize order and credits carried over random months, late events
 * and backfills adjusted once, re-rating (dry run, applied, twice = once, the next invoice
 * carries it, reconciliation difference 0), the month close run twice and twice at once, and a
 * regression test for each defect of issue 18. gm_billing_check (B1-B10) runs after every
 * operation. The clock is pinned: every instant is passed in. */
#include "billing_int.h"
#include "gm_billing.h"
#include "gm_ledger.h"
#include "support.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define DAY GM_US_PER_DAY
static int64_t T(const char *s)
{
    int64_t us;
    char why[128];
    ck_assert_msg(gm_time_parse(s, strlen(s), &us, why, sizeof why) == 0, "%s: %s", s, why);
    return us;
}

static const char CARD_V1[] =
    "{\"card_id\":\"c\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\",\"currency\":"
    "\"USD\",\"default_card\":true,\"prices\":{\"m1\":{\"input\":{\"per_1m_tokens\":\"1.00\"},"
    "\"cached\":{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":"
    "{\"per_gpu_second\":\"0.001\"}},\"default\":{\"input\":{\"per_1m_tokens\":\"1.00\"},"
    "\"cached\":{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":"
    "{\"per_gpu_second\":\"0.001\"}}}}";
/* A backdated correction: from 2026-09-15, m1 output costs 3.00 per 1M tokens. */
static const char CARD_V2[] =
    "{\"card_id\":\"c\",\"version\":2,\"valid_from\":\"2026-09-15T00:00:00Z\",\"currency\":"
    "\"USD\",\"default_card\":true,\"prices\":{\"m1\":{\"input\":{\"per_1m_tokens\":\"1.00\"},"
    "\"cached\":{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"3.00\"},\"gpu\":"
    "{\"per_gpu_second\":\"0.001\"}},\"default\":{\"input\":{\"per_1m_tokens\":\"1.00\"},"
    "\"cached\":{\"per_1m_tokens\":\"0.50\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":"
    "{\"per_gpu_second\":\"0.001\"}}}}";
static const char CONTRACT[] = "{\"tenant\":\"acme\",\"card_id\":\"c\",\"currency\":\"USD\","
                               "\"minimum_commitment\":\"100.00\",\"prepaid_credits\":\"30.00\"}";

typedef struct {
    const char *conninfo;
    PGconn *db;
    gm_rating_book *book;
    gm_billing_ctx ctx;
    int64_t seq;
} fx;

static void import(PGconn *c, const char *doc)
{
    char msg[512], err[1024];
    ck_assert_msg(gm_ledger_import(c, doc, strlen(doc), msg, sizeof msg, err, sizeof err) == 0,
                  "import: %s", err);
}

static void reload(fx *f)
{
    char err[1024];
    gm_rating_book_free(f->book);
    ck_assert_msg(gm_ledger_load_book(f->db, &f->book, err, sizeof err) == 0, "book: %s", err);
    f->ctx.book = f->book;
    f->ctx.book_generation++;
}

/* A fresh database, the card and acme's contract imported at 2026-08-15. */
static void setup(fx *f, const char *tag)
{
    memset(f, 0, sizeof *f);
    gm_clock_set_us(T("2026-08-15T00:00:00Z"));
    f->conninfo = gm_xstrdup(gm_test_db_create(tag));
    char err[1024];
    f->db = gm_pg_connect(f->conninfo, "test_billing", err, sizeof err);
    ck_assert_msg(f->db != NULL, "%s", err);
    ck_assert_msg(gm_ledger_migrate(f->db, gm_ledger_migrations, gm_ledger_migrations_count,
                                    GM_MIGRATE_APPLY, NULL, err, sizeof err) == 0,
                  "migrate: %s", err);
    import(f->db, CARD_V1);
    import(f->db, CONTRACT);
    f->ctx = (gm_billing_ctx){f->db, NULL, 0, 0, 72, NULL};
    reload(f);
}

static void teardown(fx *f)
{
    /* Tamper evidence: every invoice, credit note and re-rating run the test made is chained,
     * and the verifier's canonical JSON (built in C) agrees with the database's. A window
     * (from 1 µs) leaves out the ledger rows the tests insert without a rater. */
    gm_chain_verify_opts o = {0};
    o.from_us = 1;
    gm_chain_report rep;
    char err[1024];
    ck_assert_msg(gm_chain_verify(f->db, &o, &rep, err, sizeof err) == 0, "verify: %s", err);
    ck_assert_msg(rep.problems == 0, "audit verify: %s", rep.first);
    char *unchained = gm_test_pg_value(f->db, "SELECT count(*) FROM gm.invoices i WHERE status <>"
                                              " 'draft' AND NOT EXISTS (SELECT 1 FROM"
                                              " gm.chain_documents d WHERE d.kind = 'invoice'"
                                              " AND d.doc_id = i.invoice_id)");
    ck_assert_str_eq(unchained, "0");
    free(unchained);
    gm_rating_book_free(f->book);
    PQfinish(f->db);
    gm_test_db_drop(f->conninfo);
    free((char *)f->conninfo);
}

static void check(fx *f, const char *after)
{
    char err[2048];
    int rc = gm_billing_check(&f->ctx, NULL, err, sizeof err);
    ck_assert_msg(rc == 0, "invariants after %s: %s", after, err);
}

/* One event, written as the rater writes it: a ledger row and the charges upserted in one
 * transaction (the rollup triggers fire on the charges statement). */
static void ev(fx *f, const char *tenant, int64_t t, int64_t in, int64_t out, int64_t gpu_us)
{
    gm_usage u = {tenant, "m1", "s1", t, {in, 0, out, gpu_us}, GM_RATING_SVC_STANDARD};
    gm_event_price pr;
    char err[512];
    ck_assert_msg(gm_rating_price_event(f->book, &u, &pr, err, sizeof err) == 0, "%s", err);
    char ts[40], hour[40], id[64], sq[24], q[4][24], a[4][64], up[4][48], ver[16];
    gm_time_format(t, ts, sizeof ts);
    gm_time_format(t - t % GM_US_PER_HOUR, hour, sizeof hour);
    f->seq++;
    snprintf(id, sizeof id, "e%lld", (long long)f->seq);
    snprintf(sq, sizeof sq, "%lld", (long long)f->seq);
    snprintf(ver, sizeof ver, "%lld", (long long)pr.card_version);
    for (int d = 0; d < 4; d++) {
        snprintf(q[d], sizeof q[d], "%lld", (long long)u.qty[d]);
        gm_dec_format(pr.amount_e18[d], 18, a[d], sizeof a[d]);
        gm_dec_format(pr.unit_price_p[d], 12, up[d], sizeof up[d]);
    }
    gm_test_pg_exec(f->db, "BEGIN");
    const char *lp[19] = {tenant,      ts,   "src/1", id,   sq,           "s1",       "m1",
                          q[0],        q[1], q[2],    q[3], pr.site_tier, pr.card_id, ver,
                          pr.currency, a[0], a[1],    a[2], a[3]};
    PGresult *r = PQexecParams(
        f->db,
        "INSERT INTO gm.ledger (tenant, event_time, source, event_id, seq, site, model,"
        " input_tokens, cached_tokens, output_tokens, gpu_us, site_tier, card_id, card_version,"
        " currency, amount_input, amount_cached, amount_output, amount_gpu, flags, kafka_topic,"
        " kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        " $12, $13, $14, $15, $16, $17, $18, $19, 0, 't', 0, $5)",
        19, NULL, lp, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "ledger: %s", PQerrorMessage(f->db));
    PQclear(r);
    static const char *dims[4] = {"input", "cached", "output", "gpu"};
    for (int d = 0; d < 4; d++) {
        if (!u.qty[d])
            continue;
        const char *cp[12] = {tenant, hour,         "s1",        "m1",  dims[d], pr.card_id,
                              ver,    pr.site_tier, pr.currency, up[d], q[d],    a[d]};
        r = PQexecParams(f->db,
                         "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
                         " card_version, site_tier, currency, unit_price, quantity, amount, events)"
                         " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1)"
                         " ON CONFLICT (tenant, hour, site, model, dimension, card_id,"
                         " card_version, variant, unit_price) DO UPDATE SET quantity ="
                         " gm.charges.quantity"
                         " + EXCLUDED.quantity, amount = gm.charges.amount + EXCLUDED.amount,"
                         " events = gm.charges.events + 1",
                         12, NULL, cp, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "charges: %s", PQerrorMessage(f->db));
        PQclear(r);
    }
    gm_test_pg_exec(f->db, "COMMIT");
}

static void close_month(fx *f, const char *month, int64_t now_us, gm_billing_close_summary *s)
{
    int64_t m;
    ck_assert(gm_billing_parse_month(month, &m));
    f->ctx.now_us = now_us;
    char err[1024];
    int rc = gm_billing_close(&f->ctx, m, NULL, NULL, s, err, sizeof err);
    ck_assert_msg(rc == 0, "close %s: %s", month, err);
    check(f, "close");
}

static gm_billing_invoice *inv_of(fx *f, const char *tenant, const char *month)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT invoice_id FROM gm.invoices WHERE tenant = '%s' AND period_start = '%s-01Z'",
             tenant, month);
    char *id = gm_test_pg_value(f->db, sql);
    ck_assert_msg(id != NULL, "no invoice of %s %s", tenant, month);
    gm_billing_invoice *inv = NULL;
    char err[1024];
    ck_assert_msg(gm_billing_invoice_get(&f->ctx, id, NULL, &inv, err, sizeof err) == 0, "%s", err);
    free(id);
    return inv;
}

static gm_i128 line_sum(const gm_billing_invoice *inv, const char *kind)
{
    gm_i128 s = 0;
    for (size_t i = 0; i < inv->n_lines; i++)
        if (!strcmp(inv->lines[i].kind, kind))
            s += inv->lines[i].amount_minor;
    return s;
}

/* Regression (issue 18: a month with no usage got no invoice, so its minimum commitment was
 * never billed): the close bills the commitment of every month of an active contract. */
START_TEST(test_commitment_is_billed_for_a_month_without_usage)
{
    fx f;
    setup(&f, "bill_commit");
    ev(&f, "acme", T("2026-09-10T10:00:00Z"), 1000000, 1000000, 0); /* 3.00 */
    gm_billing_close_summary s;
    close_month(&f, "2026-08", T("2026-09-05T00:00:00Z"), &s);
    close_month(&f, "2026-09", T("2026-10-05T00:00:00Z"), &s);
    close_month(&f, "2026-10", T("2026-11-05T00:00:00Z"), &s); /* no usage at all */
    gm_billing_invoice *aug = inv_of(&f, "acme", "2026-08"), *sep = inv_of(&f, "acme", "2026-09"),
                       *oct = inv_of(&f, "acme", "2026-10");
    ck_assert_str_eq(oct->status, "finalized");
    /* the minimum is 100.00 every month; 30.00 of credit is drawn in August */
    ck_assert(line_sum(aug, "commitment") == 10000);
    ck_assert(aug->total_minor == 7000);
    ck_assert(line_sum(sep, "commitment") == 9700);
    ck_assert(sep->total_minor == 10000);
    ck_assert(line_sum(oct, "commitment") == 10000);
    ck_assert(oct->total_minor == 10000);
    gm_billing_invoice_free(aug);
    gm_billing_invoice_free(sep);
    gm_billing_invoice_free(oct);
    /* a month that has not begun gets no commitment draft, and cannot be closed */
    int created = -1;
    char err[1024];
    f.ctx.now_us = T("2026-11-05T00:00:00Z");
    ck_assert(gm_billing_drafts_ensure(&f.ctx, T("2027-03-01T00:00:00Z"), NULL, &created, err,
                                       sizeof err) == 0);
    ck_assert_int_eq(created, 0);
    ck_assert_int_eq(
        gm_billing_close(&f.ctx, T("2027-03-01T00:00:00Z"), NULL, NULL, &s, err, sizeof err),
        GM_EINVAL);
    teardown(&f);
}
END_TEST

/* Properties over random months: whatever the usage (some months none, late events into
 * finalized months), closing month after month keeps every invariant (finalize order B4,
 * credits carried B5, billed exactly once B6), and the late usage is billed once. */
START_TEST(test_random_months_keep_every_invariant)
{
    unsigned seed = 20261127u + (unsigned)_i;
    fx f;
    setup(&f, "bill_props");
    static const char *months[] = {"2026-09", "2026-10", "2026-11", "2026-12", "2027-01"};
    int64_t starts[5];
    for (int m = 0; m < 5; m++)
        ck_assert(gm_billing_parse_month(months[m], &starts[m]));
    gm_billing_close_summary s;
    for (int m = 0; m < 5; m++) {
        int n = rand_r(&seed) % 4; /* 0..3 events: some months have none */
        for (int k = 0; k < n; k++)
            ev(&f, rand_r(&seed) % 2 ? "acme" : "other",
               starts[m] + (int64_t)(rand_r(&seed) % 27) * DAY + GM_US_PER_HOUR,
               rand_r(&seed) % 5000000, rand_r(&seed) % 5000000, rand_r(&seed) % 90000000);
        if (m > 0 && rand_r(&seed) % 2) /* a late event into the month before */
            ev(&f, "acme", starts[m - 1] + 3 * DAY, 250000, 0, 0);
        check(&f, "events");
        close_month(&f, months[m], gm_month_next(starts[m]) + 80 * GM_US_PER_HOUR, &s);
        ck_assert_int_eq(s.failed, 0);
        /* twice = once */
        close_month(&f, months[m], gm_month_next(starts[m]) + 81 * GM_US_PER_HOUR, &s);
        ck_assert_int_eq(s.finalized, 0);
    }
    /* every accepted list amount is billed (the last month's late events wait in a draft) */
    char *unbilled = gm_test_pg_value(
        f.db, "SELECT (coalesce(sum(unbilled_amount), 0) = 0)::text FROM audit.reconciliation");
    ck_assert_str_eq(unbilled, "true");
    free(unbilled);
    char *diff = gm_test_pg_value(
        f.db, "SELECT count(*)::text FROM audit.reconciliation WHERE difference <> 0");
    ck_assert_str_eq(diff, "0");
    free(diff);
    teardown(&f);
}
END_TEST

/* Late events and re-rating: a late event into a finalized month is billed once, on the next
 * invoice; a backdated card version re-rated (dry run, then applied) shows the diff line by
 * line, the next invoice carries the adjustment naming the month, re-rating twice equals
 * once, and reconciliation shows no difference. */
START_TEST(test_rerating_after_a_backdated_price_is_billed_once_on_the_next_invoice)
{
    fx f;
    setup(&f, "bill_rerate");
    ev(&f, "acme", T("2026-09-20T10:00:00Z"), 0, 50000000, 0); /* 50M output: 100.00 at v1 */
    gm_billing_close_summary s;
    close_month(&f, "2026-08", T("2026-09-05T00:00:00Z"), &s);
    close_month(&f, "2026-09", T("2026-10-05T00:00:00Z"), &s);
    gm_billing_invoice *sep = inv_of(&f, "acme", "2026-09");
    ck_assert_str_eq(sep->status, "finalized");
    gm_billing_invoice_free(sep);
    /* a late September event after the close */
    ev(&f, "acme", T("2026-09-28T10:00:00Z"), 0, 1000000, 0);
    /* the backdated correction */
    import(f.db, CARD_V2);
    reload(&f);
    int64_t sep_us;
    ck_assert(gm_billing_parse_month("2026-09", &sep_us));
    f.ctx.now_us = T("2026-10-06T00:00:00Z");
    gm_billing_rerate_result *dry = NULL, *run = NULL, *again = NULL;
    char err[1024];
    ck_assert_msg(
        gm_billing_rerate(&f.ctx, sep_us, NULL, true, NULL, NULL, &dry, err, sizeof err) == 0, "%s",
        err);
    ck_assert_int_eq(dry->run_id, 0);
    ck_assert_uint_gt(dry->n_lines, 0);
    char *runs = gm_test_pg_value(f.db, "SELECT count(*)::text FROM gm.rerating_runs");
    ck_assert_str_eq(runs, "0"); /* a dry run writes nothing */
    free(runs);
    bool saw_v1 = false, saw_v2 = false;
    for (size_t i = 0; i < dry->n_lines; i++) {
        const gm_billing_rerate_line *l = &dry->lines[i];
        if (!strcmp(l->kind, "usage") && !strcmp(l->dimension, "output") && l->card_version == 1)
            saw_v1 = l->qty_before == 50000000 && l->qty_after == 0;
        if (!strcmp(l->kind, "usage") && !strcmp(l->dimension, "output") && l->card_version == 2)
            saw_v2 = l->qty_after == 51000000 && l->unit_price_p_after == 3000000;
    }
    ck_assert_msg(saw_v1 && saw_v2, "the diff moves September's output from v1 to v2");
    ck_assert_msg(gm_billing_rerate(&f.ctx, sep_us, NULL, false, "test", "backdated v2", &run, err,
                                    sizeof err) == 0,
                  "%s", err);
    ck_assert_int_gt(run->run_id, 0);
    ck_assert_uint_eq(run->n_lines, dry->n_lines);
    check(&f, "rerate");
    ck_assert_msg(gm_billing_rerate(&f.ctx, sep_us, NULL, false, "test", "again", &again, err,
                                    sizeof err) == 0,
                  "%s", err);
    ck_assert_uint_eq(again->n_lines, 0); /* re-rating twice changes nothing the second time */
    /* the ledger was not rewritten */
    char *v = gm_test_pg_value(f.db, "SELECT count(*)::text FROM gm.ledger WHERE card_version = 2");
    ck_assert_str_eq(v, "0");
    free(v);
    /* October's draft carries the September adjustment: 51M at 3.00 = 153.00, billed 100.00 */
    gm_billing_invoice *oct = inv_of(&f, "acme", "2026-10");
    gm_i128 adj = 0;
    for (size_t i = 0; i < oct->n_lines; i++)
        if (!strcmp(oct->lines[i].kind, "adjustment")) {
            ck_assert(oct->lines[i].corrects_period_us == sep_us);
            adj += oct->lines[i].amount_minor;
        }
    ck_assert_msg(adj == 5300, "adjustment %lld", (long long)adj);
    gm_billing_invoice_free(oct);
    close_month(&f, "2026-10", T("2026-11-05T00:00:00Z"), &s);
    /* billed once: November's draft has no September adjustment any more */
    gm_billing_invoice *nov = inv_of(&f, "acme", "2026-11");
    for (size_t i = 0; i < nov->n_lines; i++)
        ck_assert_str_ne(nov->lines[i].kind, "adjustment");
    gm_billing_invoice_free(nov);
    char *rec = gm_test_pg_value(
        f.db, "SELECT count(*)::text FROM audit.reconciliation WHERE difference <> 0");
    ck_assert_str_eq(rec, "0");
    free(rec);
    char *billed = gm_test_pg_value(f.db, "SELECT bool_and(billed)::text FROM"
                                          " audit.rerating_corrections");
    ck_assert_str_eq(billed, "true");
    free(billed);
    gm_billing_rerate_result_free(dry);
    gm_billing_rerate_result_free(run);
    gm_billing_rerate_result_free(again);
    teardown(&f);
}
END_TEST

typedef struct {
    const char *conninfo;
    const gm_rating_book *book;
    int64_t month, now;
    gm_billing_close_summary sum;
    int rc;
} close_arg;

static void *close_thread(void *p)
{
    close_arg *a = p;
    char err[1024];
    PGconn *c = gm_pg_connect(a->conninfo, "test_billing_close", err, sizeof err);
    gm_billing_ctx ctx = {c, a->book, 1, a->now, 72, NULL};
    a->rc = gm_billing_close(&ctx, a->month, NULL, NULL, &a->sum, err, sizeof err);
    PQfinish(c);
    return NULL;
}

/* Two closes at once finalize each invoice once. */
START_TEST(test_two_closes_at_once_finalize_each_invoice_once)
{
    fx f;
    setup(&f, "bill_close2");
    for (int t = 0; t < 6; t++) {
        char tn[16];
        snprintf(tn, sizeof tn, "t%d", t);
        ev(&f, tn, T("2026-09-03T00:00:00Z") + t * GM_US_PER_HOUR, 1000 * (t + 1), 0, 0);
    }
    close_arg a[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        a[i] = (close_arg){f.conninfo, f.book, T("2026-09-01T00:00:00Z"), T("2026-10-05T00:00:00Z"),
                           {0},        0};
        pthread_create(&th[i], NULL, close_thread, &a[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    char *n = gm_test_pg_value(f.db, "SELECT count(*)::text FROM gm.invoices WHERE status ="
                                     " 'finalized' AND period_start = '2026-09-01Z'");
    ck_assert_str_eq(n, "7"); /* six tenants and acme (its commitment) */
    free(n);
    /* and acme's August (its contract dates from August): eight finalizations in all */
    ck_assert_int_eq(a[0].sum.finalized + a[1].sum.finalized, 8);
    char *seq = gm_test_pg_value(f.db, "SELECT count(DISTINCT number_seq)::text || ' ' ||"
                                       " max(number_seq) FROM gm.invoices WHERE number_seq IS NOT"
                                       " NULL");
    ck_assert_str_eq(seq, "8 8"); /* gapless, no number twice */
    free(seq);
    check(&f, "two closes");
    teardown(&f);
}
END_TEST

/* Regression (issue 18: usage of a month before the last finalized one that was never
 * invoiced, a backfill, was billed nowhere): the next draft bills it as adjustment lines. */
START_TEST(test_backfill_before_the_last_finalized_month_is_billed_on_the_next_invoice)
{
    fx f;
    setup(&f, "bill_backfill");
    gm_billing_close_summary s;
    ev(&f, "zed", T("2026-10-10T00:00:00Z"), 2000000, 0, 0); /* no contract: default card */
    close_month(&f, "2026-10", T("2026-11-05T00:00:00Z"), &s);
    /* September's usage arrives after October is finalized */
    ev(&f, "zed", T("2026-09-10T00:00:00Z"), 3000000, 0, 0);
    gm_billing_invoice *nov = inv_of(&f, "zed", "2026-11");
    gm_i128 adj = 0;
    for (size_t i = 0; i < nov->n_lines; i++)
        if (!strcmp(nov->lines[i].kind, "adjustment"))
            adj += nov->lines[i].amount_minor;
    ck_assert_msg(adj == 300, "September billed on November: %lld", (long long)adj);
    gm_billing_invoice_free(nov);
    close_month(&f, "2026-11", T("2026-12-05T00:00:00Z"), &s);
    char *u = gm_test_pg_value(f.db, "SELECT (coalesce(sum(unbilled_amount + waiting_amount), 0)"
                                     " = 0)::text FROM audit.reconciliation WHERE tenant = 'zed'");
    ck_assert_str_eq(u, "true");
    free(u);
    teardown(&f);
}
END_TEST

/* Regression (issue 18: a customer's probe of another tenant's invoice id computed that draft
 * before answering 404): the tenant is checked first. Here computing the draft would fail
 * (an unpriceable model once the card rejects unknown models), so only a check made before
 * computing can answer "not found". */
START_TEST(test_probe_of_another_tenants_invoice_computes_nothing)
{
    fx f;
    setup(&f, "bill_probe");
    ev(&f, "acme", T("2026-09-10T00:00:00Z"), 1000, 0, 0);
    char id[64], err[1024];
    f.ctx.now_us = T("2026-09-20T00:00:00Z");
    ck_assert(gm_billing_draft_ensure(&f.ctx, "acme", T("2026-09-01T00:00:00Z"), id, sizeof id, err,
                                      sizeof err) == 0);
    /* a book in which acme's draft cannot be computed (no card at all) */
    gm_rating_book *empty = gm_rating_book_new();
    gm_billing_ctx ctx = f.ctx;
    ctx.book = empty;
    gm_billing_invoice *inv = NULL;
    ck_assert_int_eq(gm_billing_invoice_get(&ctx, id, "other", &inv, err, sizeof err),
                     GM_ENOTFOUND);
    ck_assert_msg(strstr(err, "no default card") == NULL, "the draft was computed: %s", err);
    /* acme itself reaches the computation, which fails with this book */
    ck_assert_int_ne(gm_billing_invoice_get(&ctx, id, "acme", &inv, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "no default card") != NULL, "%s", err);
    gm_rating_book_free(empty);
    teardown(&f);
}
END_TEST

/* Regression (issue 18: numbers from PostgreSQL that failed to parse became 0). */
START_TEST(test_unreadable_numbers_are_errors_not_zero)
{
    PGconn *c = gm_test_pg_connect(NULL);
    PGresult *r = PQexec(c, "SELECT 'x12'::text AS n, '1.5'::text AS m, NULL::text AS z");
    billing__rd rd = {0};
    ck_assert(billing__i64(&rd, r, 0, 0) == 0);
    ck_assert(rd.bad);
    char err[512];
    ck_assert_int_eq(billing__rd_fail(&rd, "probe", err, sizeof err), GM_ECORRUPT);
    ck_assert_msg(strstr(err, "column n") != NULL, "%s", err);
    billing__rd rd2 = {0};
    ck_assert(billing__int(&rd2, r, 0, 1) == 0 && rd2.bad); /* 1.5 is not an integer */
    billing__rd rd3 = {0};
    ck_assert(billing__i64(&rd3, r, 0, 2) == 0 && rd3.bad); /* NULL is not an int64 */
    PQclear(r);
    PQfinish(c);
}
END_TEST

/* Regression (issue 18: gm.period_snapshots inserts were not guarded). */
START_TEST(test_snapshot_inserts_are_guarded)
{
    fx f;
    setup(&f, "bill_snap");
    ev(&f, "acme", T("2026-09-10T00:00:00Z"), 1000, 0, 0);
    gm_billing_close_summary s;
    close_month(&f, "2026-08", T("2026-09-05T00:00:00Z"), &s);
    close_month(&f, "2026-09", T("2026-10-05T00:00:00Z"), &s);
    char *fin = gm_test_pg_value(f.db, "SELECT invoice_id FROM gm.invoices WHERE tenant = 'acme'"
                                       " AND period_start = '2026-09-01Z'");
    char *draft = gm_test_pg_value(f.db, "SELECT invoice_id FROM gm.invoices WHERE tenant ="
                                         " 'acme' AND status = 'draft'");
    char sql[512];
    /* a snapshot that would hide later September events: refused for a finalized invoice */
    snprintf(sql, sizeof sql,
             "INSERT INTO gm.period_snapshots (tenant, period_start, invoice_id, events, amount)"
             " VALUES ('acme', '2026-09-01Z', '%s', 99, 99)",
             fin);
    PGresult *r = PQexec(f.db, sql);
    ck_assert(PQresultStatus(r) == PGRES_FATAL_ERROR);
    PQclear(r);
    /* another tenant's, and a later month's, through a draft: refused too */
    snprintf(sql, sizeof sql,
             "INSERT INTO gm.period_snapshots (tenant, period_start, invoice_id, events, amount)"
             " VALUES ('other', '2026-09-01Z', '%s', 1, 1)",
             draft);
    r = PQexec(f.db, sql);
    ck_assert(PQresultStatus(r) == PGRES_FATAL_ERROR);
    PQclear(r);
    snprintf(sql, sizeof sql,
             "INSERT INTO gm.period_snapshots (tenant, period_start, invoice_id, events, amount)"
             " VALUES ('acme', '2027-09-01Z', '%s', 1, 1)",
             draft);
    r = PQexec(f.db, sql);
    ck_assert(PQresultStatus(r) == PGRES_FATAL_ERROR);
    PQclear(r);
    free(fin);
    free(draft);
    check(&f, "refused snapshots");
    teardown(&f);
}
END_TEST

/* Regression (issue 18: BEGIN's result was unchecked in void): when the transaction cannot
 * begin, void changes nothing (no credit note committed alone). */
START_TEST(test_void_changes_nothing_when_its_transaction_cannot_begin)
{
    fx f;
    setup(&f, "bill_void");
    ev(&f, "zed", T("2026-09-10T00:00:00Z"), 5000000, 0, 0);
    gm_billing_close_summary s;
    close_month(&f, "2026-09", T("2026-10-05T00:00:00Z"), &s);
    char *id = gm_test_pg_value(f.db, "SELECT invoice_id FROM gm.invoices WHERE tenant = 'zed'"
                                      " AND status = 'finalized'");
    /* a connection stuck in a failed transaction: BEGIN cannot start a new one */
    PGconn *c = gm_test_pg_connect(f.conninfo);
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "SELECT 1/0"));
    gm_billing_ctx ctx = f.ctx;
    ctx.db = c;
    char err[1024];
    ck_assert_int_ne(gm_billing_void(&ctx, id, "test", err, sizeof err), 0);
    PQfinish(c);
    char *n = gm_test_pg_value(f.db, "SELECT count(*)::text FROM gm.credit_notes");
    ck_assert_str_eq(n, "0");
    free(n);
    f.ctx.now_us = T("2026-10-06T00:00:00Z");
    ck_assert_msg(gm_billing_void(&f.ctx, id, "wrong customer", err, sizeof err) == 0, "%s", err);
    check(&f, "void");
    free(id);
    teardown(&f);
}
END_TEST

/* Regression (issue 18: revenue rounding assumed 2 minor digits when a card declares its
 * own): the book knows the digits of a currency outside the ISO table. */
START_TEST(test_minor_units_come_from_the_card_outside_the_iso_table)
{
    gm_rating_book *b = gm_rating_book_new();
    const char card[] =
        "{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\",\"currency\":"
        "\"XTS\",\"minor_units\":4,\"unknown_models\":\"reject\",\"prices\":{\"m\":{\"input\":"
        "{\"per_token\":\"0.0001\"},\"cached\":{\"per_token\":\"0\"},\"output\":{\"per_token\":"
        "\"0\"},\"gpu\":{\"per_gpu_second\":\"0\"}}}}";
    char err[512];
    ck_assert_msg(gm_rating_book_add_card(b, card, strlen(card), err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gm_rating_book_minor_units(b, "XTS"), 4);
    ck_assert_int_eq(gm_rating_book_minor_units(b, "JPY"), 0);
    ck_assert_int_eq(gm_rating_book_minor_units(b, "QQQ"), -1);
    gm_rating_book_free(b);
}
END_TEST

/* Regression (issue 18: a site tier that states its own price was still refused by the
 * multiplier exactness check). */
START_TEST(test_a_tier_that_states_its_own_price_is_accepted)
{
    const char card[] =
        "{\"card_id\":\"t\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\",\"currency\":"
        "\"USD\",\"unknown_models\":\"reject\",\"prices\":{\"m\":{\"input\":{\"per_token\":"
        "\"0.000000000001\"},\"cached\":{\"per_token\":\"0\"},\"output\":{\"per_token\":\"0\"},"
        "\"gpu\":{\"per_gpu_second\":\"0\"}}},\"site_tiers\":{\"a\":{\"multiplier\":\"1.5\","
        "\"prices\":{\"m\":{\"input\":{\"per_token\":\"0.000000000002\"}}},\"sites\":[\"s\"]},"
        "\"b\":{\"multiplier\":\"1\",\"sites\":[\"u\"]}},\"default_site_tier\":\"b\"}";
    gm_rating_card *c = NULL;
    char err[512];
    ck_assert_msg(gm_rating_card_parse(card, strlen(card), &c, err, sizeof err) == 0, "%s", err);
    gm_rating_card_free(c);
    /* without its own price, 0.000000000001 x 1.5 is still refused, naming the way out */
    const char *bad_own =
        strstr(card, ",\"prices\":{\"m\":{\"input\":{\"per_token\":\"0.000000000002\"}}}");
    char *bad = gm_xstrdup(card);
    size_t off = (size_t)(bad_own - card),
           cut = strlen(",\"prices\":{\"m\":{\"input\":{\"per_token\":"
                        "\"0.000000000002\"}}}");
    memmove(bad + off, bad + off + cut, strlen(bad + off + cut) + 1);
    ck_assert_int_ne(gm_rating_card_parse(bad, strlen(bad), &c, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "give the tier its own price") != NULL, "%s", err);
    free(bad);
}
END_TEST

/* Regression (issue 18: invoice line descriptions were cut inside a UTF-8 character). */
START_TEST(test_descriptions_are_never_cut_inside_a_utf8_character)
{
    char s[8] = "ab\xc3\xa9"; /* "abé" */
    ck_assert_uint_eq(gm_utf8_trim_partial(s), 4);
    s[3] = 0; /* cut inside é */
    ck_assert_uint_eq(gm_utf8_trim_partial(s), 2);
    ck_assert_str_eq(s, "ab");
    char e[8] = "a\xe2\x82"; /* two of the three bytes of € */
    ck_assert_uint_eq(gm_utf8_trim_partial(e), 1);
    /* Through the rating engine a model name can no longer carry UTF-8: model ids are
     * 1 to 128 bytes of A-Z a-z 0-9 . _ - : / @ + = ~ (docs/events.md "Identifiers"), so a
     * card naming a model of two-byte characters is refused naming the field and the rule. */
    char model[200] = "";
    for (int i = 0; i < 60; i++)
        strcat(model, "\xc3\xa9");
    char card[1024];
    snprintf(card, sizeof card,
             "{\"card_id\":\"u\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
             "\"currency\":\"USD\",\"prices\":{\"%s\":{\"input\":{\"per_token\":\"0.000001\"},"
             "\"cached\":{\"per_token\":\"0\"},\"output\":{\"per_token\":\"0\"},\"gpu\":"
             "{\"per_gpu_second\":\"0\"}},\"default\":{\"input\":{\"per_token\":\"0\"},\"cached\":"
             "{\"per_token\":\"0\"},\"output\":{\"per_token\":\"0\"},\"gpu\":{\"per_gpu_second\":"
             "\"0\"}}}}",
             model);
    gm_rating_book *b = gm_rating_book_new();
    char err[512];
    ck_assert(gm_rating_book_add_card(b, card, strlen(card), err, sizeof err) != 0);
    ck_assert_msg(strstr(err, "must use only A-Z a-z 0-9") != NULL, "%s", err);
    gm_rating_book_free(b);
}
END_TEST

/* Regression (issue 18: a model dropped from a new card version silently fell to the card's
 * default entry): the import refuses it unless the version lists it in dropped_models. */
START_TEST(test_import_refuses_a_version_that_drops_a_model_with_usage)
{
    fx f;
    setup(&f, "bill_drop");
    ev(&f, "acme", T("2026-09-20T10:00:00Z"), 1000, 0, 0);
    const char *v3 = "{\"card_id\":\"c\",\"version\":3,\"valid_from\":\"2026-09-01T00:00:00Z\","
                     "\"currency\":\"USD\",\"default_card\":true,\"prices\":{\"default\":{"
                     "\"input\":{\"per_1m_tokens\":\"250000\"},\"cached\":{\"per_1m_tokens\":"
                     "\"0.50\"},\"output\":{\"per_1m_tokens\":\"2.00\"},\"gpu\":"
                     "{\"per_gpu_second\":\"0.001\"}}}%s}";
    char doc[1024], msg[512], err[1024];
    snprintf(doc, sizeof doc, v3, "");
    ck_assert_int_eq(gm_ledger_import(f.db, doc, strlen(doc), msg, sizeof msg, err, sizeof err),
                     GM_ECONFLICT);
    ck_assert_msg(strstr(err, "drops model m1") && strstr(err, "dropped_models"), "%s", err);
    snprintf(doc, sizeof doc, v3, ",\"dropped_models\":[\"m1\"]");
    ck_assert_msg(gm_ledger_import(f.db, doc, strlen(doc), msg, sizeof msg, err, sizeof err) == 0,
                  "stated explicitly: %s", err);
    teardown(&f);
}
END_TEST

/* Regression (issue 18: `ratecard validate` accepted a contract whose card does not exist and
 * tier rules naming models that exist nowhere). */
START_TEST(test_contracts_must_name_existing_cards_and_models)
{
    gm_rating_book *b = gm_rating_book_new();
    char err[512];
    ck_assert(gm_rating_book_add_card(b, CARD_V1, strlen(CARD_V1), err, sizeof err) == 0);
    const char *k1 = "{\"tenant\":\"a\",\"card_id\":\"nope\",\"currency\":\"USD\"}";
    ck_assert(gm_rating_book_add_contract(b, k1, strlen(k1), err, sizeof err) == 0);
    ck_assert_int_eq(gm_rating_book_check_contracts(b, err, sizeof err), GM_ENOTFOUND);
    ck_assert_msg(strstr(err, "card nope does not exist") != NULL, "%s", err);
    gm_rating_book_free(b);
    b = gm_rating_book_new();
    ck_assert(gm_rating_book_add_card(b, CARD_V1, strlen(CARD_V1), err, sizeof err) == 0);
    const char *k2 = "{\"tenant\":\"a\",\"card_id\":\"c\",\"currency\":\"USD\",\"tiers\":[{"
                     "\"dimension\":\"output\",\"models\":[\"ghost\"],\"mode\":\"volume\","
                     "\"bands\":[{\"up_to\":null,\"price\":{\"per_1m_tokens\":\"1\"}}]}]}";
    ck_assert(gm_rating_book_add_contract(b, k2, strlen(k2), err, sizeof err) == 0);
    ck_assert_int_eq(gm_rating_book_check_contracts(b, err, sizeof err), GM_ENOTFOUND);
    ck_assert_msg(strstr(err, "model ghost") != NULL, "%s", err);
    gm_rating_book_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("billing");
    TCase *tc = tcase_create("billing");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_commitment_is_billed_for_a_month_without_usage);
    tcase_add_loop_test(tc, test_random_months_keep_every_invariant, 0, 6);
    tcase_add_test(tc, test_rerating_after_a_backdated_price_is_billed_once_on_the_next_invoice);
    tcase_add_test(tc, test_two_closes_at_once_finalize_each_invoice_once);
    tcase_add_test(tc, test_backfill_before_the_last_finalized_month_is_billed_on_the_next_invoice);
    tcase_add_test(tc, test_probe_of_another_tenants_invoice_computes_nothing);
    tcase_add_test(tc, test_unreadable_numbers_are_errors_not_zero);
    tcase_add_test(tc, test_snapshot_inserts_are_guarded);
    tcase_add_test(tc, test_void_changes_nothing_when_its_transaction_cannot_begin);
    tcase_add_test(tc, test_minor_units_come_from_the_card_outside_the_iso_table);
    tcase_add_test(tc, test_a_tier_that_states_its_own_price_is_accepted);
    tcase_add_test(tc, test_descriptions_are_never_cut_inside_a_utf8_character);
    tcase_add_test(tc, test_import_refuses_a_version_that_drops_a_model_with_usage);
    tcase_add_test(tc, test_contracts_must_name_existing_cards_and_models);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
