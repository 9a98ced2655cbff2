/* Integration (real PostgreSQL): tamper evidence. Batches written by the exactly-once writer
 * and invoices finalized in SQL are chained; an untouched database verifies (in C, in the
 * audit views, and with the independent Python verifier); each tampering a superuser can do
 * (a ledger row, a charge, an offset, an invoice line, a credit note changed; a row or a whole
 * batch deleted; two rows swapped; an older backup restored) is found and located. */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOPIC "gridmeter.usage.v1"
#define N_EV  8

typedef struct fixture {
    char conninfo[256];
    PGconn *c;
    gm_ledger_writer *w;
    gm_event ev[N_EV];
    gm_ledger_row rows[N_EV];
} fixture;

static void make_event(gm_event *ev, const char *source, uint64_t seq, int64_t tokens)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "%s", source);
    snprintf(ev->id, sizeof ev->id, "%s-%llu", source, (unsigned long long)seq);
    snprintf(ev->tenant, sizeof ev->tenant, "acme");
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->model, sizeof ev->model, "m");
    if (seq % 2)
        snprintf(ev->request_id, sizeof ev->request_id, "req \"%llu\"\t", (unsigned long long)seq);
    ev->time_us = INT64_C(1795816800000000) + (int64_t)seq * 1000;
    ev->seq = seq;
    ev->input_tokens = tokens;
    ev->output_tokens = 5;
    ev->gpu_us = 7;
}

static void make_row(gm_ledger_row *row, const gm_event *ev, int32_t partition, int64_t offset)
{
    memset(row, 0, sizeof *row);
    row->ev = ev;
    row->partition = partition;
    row->offset = offset;
    row->card_id = "list-usd";
    row->card_version = 1;
    row->site_tier = partition ? "tier-b" : NULL;
    memcpy(row->currency, "USD", 4);
    row->unit_price_p[0] = 1500000; /* 1.5 * 10^-6 per token */
    row->amount_e18[0] = (gm_i128)ev->input_tokens * 1500000 * 1000000;
    row->unit_price_p[2] = 2000000;
    row->amount_e18[2] = (gm_i128)ev->output_tokens * 2000000 * 1000000;
    row->unit_price_p[3] = 30000000000;                     /* 0.03 per GPU-second */
    row->amount_e18[3] = (gm_i128)ev->gpu_us * 30000000000; /* per us: 0.03 / 10^6 */
    row->flags = partition ? 4 : 0;
}

static void commit(fixture *f, gm_ledger_batch *b)
{
    gm_ledger_result res;
    char err[1024];
    ck_assert_msg(gm_ledger_writer_commit(f->w, b, &res, err, sizeof err) == 0, "%s", err);
}

/* Three batches: partition 0 twice (the second with a duplicate and a rejected message),
 * partition 1 once. */
static void open_db(fixture *f, const char *tag)
{
    snprintf(f->conninfo, sizeof f->conninfo, "%s", gm_test_db_create(tag));
    f->c = gm_test_pg_connect(f->conninfo);
    char err[1024];
    ck_assert_msg(gm_ledger_migrate(f->c, gm_ledger_migrations, gm_ledger_migrations_count,
                                    GM_MIGRATE_APPLY, NULL, err, sizeof err) == 0,
                  "%s", err);
    f->w = gm_ledger_writer_new(f->c);
    make_event(&f->ev[0], "edge/fra1/n1", 1, 10);
    make_event(&f->ev[1], "edge/fra1/n1", 2, 20);
    make_event(&f->ev[2], "edge/fra1/n2", 1, 30);
    make_row(&f->rows[0], &f->ev[0], 0, 0);
    make_row(&f->rows[1], &f->ev[1], 0, 1);
    make_row(&f->rows[2], &f->ev[2], 1, 0);
    gm_ledger_pos pos[2] = {{0, -1, 2}, {1, -1, 1}};
    gm_ledger_batch b1 = {"g", TOPIC, "t", f->rows, 3, NULL, 0, pos, 2};
    commit(f, &b1);
    make_event(&f->ev[3], "edge/fra1/n1", 2, 20); /* a re-send: duplicate */
    make_event(&f->ev[4], "edge/fra1/n1", 3, 40);
    make_row(&f->rows[3], &f->ev[3], 0, 2);
    make_row(&f->rows[4], &f->ev[4], 0, 4);
    gm_ledger_reject rj = {
        0, 3, "k\x01", 2, "{\"bad\":\x02}", 10, "event: data: missing", NULL, "contract"};
    gm_ledger_pos pos2 = {0, 2, 5};
    gm_ledger_batch b2 = {"g", TOPIC, "t", &f->rows[3], 2, &rj, 1, &pos2, 1};
    commit(f, &b2);
}

static void close_db(fixture *f)
{
    gm_ledger_writer_free(f->w);
    PQfinish(f->c);
    gm_test_db_drop(f->conninfo);
}

static gm_chain_report verify_with(PGconn *c, const char *anchor)
{
    gm_chain_verify_opts o = {0};
    o.anchor_path = anchor;
    gm_chain_report rep;
    char err[1024];
    ck_assert_msg(gm_chain_verify(c, &o, &rep, err, sizeof err) == 0, "%s", err);
    return rep;
}

static gm_chain_report verify(fixture *f)
{
    return verify_with(f->c, NULL);
}

/* As the superuser, past the immutability triggers: what a DBA or a disk edit can do. */
/* The ledger's storage (sql/0012): rows of Kafka partition 0 and 1 of the test topic. A
 * superuser edits gm.ledger_rows itself (the view gm.ledger refuses changes). */
#define S0 "stream_id = (SELECT id FROM gm.ledger_streams WHERE partition = 0)"
#define S1 "stream_id = (SELECT id FROM gm.ledger_streams WHERE partition = 1)"

static void tamper(fixture *f, const char *sql)
{
    char buf[2048];
    snprintf(buf, sizeof buf,
             "SET session_replication_role = replica; %s;"
             " RESET session_replication_role",
             sql);
    gm_test_pg_exec(f->c, buf);
}

static void assert_found(const gm_chain_report *rep, const char *where, const char *what)
{
    ck_assert_msg(rep->problems > 0, "tampering not found");
    ck_assert_msg(strstr(rep->first, where), "not located at \"%s\": %s", where, rep->first);
    if (what)
        ck_assert_msg(strstr(rep->first, what), "\"%s\" not said: %s", what, rep->first);
}

static int64_t count(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    int64_t n = atoll(v);
    free(v);
    return n;
}

/* A finalized invoice with two lines and a credit note, through the SQL guards. */
static void finalize_invoice(fixture *f)
{
    gm_test_pg_exec(f->c, "INSERT INTO gm.invoices (invoice_id, tenant, issuer, period_start,"
                          " period_end) VALUES ('inv_1', 'acme', 'GM', '2026-11-01Z',"
                          " '2026-12-01Z')");
    gm_test_pg_exec(f->c,
                    "BEGIN;"
                    "INSERT INTO gm.invoice_lines (invoice_id, line_no, kind, description,"
                    " dimension, model, quantity, unit_price, amount_exact, amount, amount_minor)"
                    " VALUES ('inv_1', 1, 'usage', 'input tokens \"m\"', 'input', 'm', 100,"
                    " 0.0000015, 0.00015, 0.00, 0),"
                    " ('inv_1', 2, 'usage', 'gpu', 'gpu', 'm', 7000000, 0.03, 0.21, 0.21, 21);"
                    "UPDATE gm.invoices SET status = 'finalized', currency = 'USD',"
                    " minor_units = 2, total = 0.21, total_minor = 21 WHERE invoice_id = 'inv_1';"
                    "COMMIT");
    gm_test_pg_exec(f->c, "INSERT INTO gm.credit_notes (invoice_id, amount, reason)"
                          " VALUES ('inv_1', 0.10, 'goodwill')");
}

START_TEST(test_untouched_ledger_and_invoices_verify)
{
    fixture f;
    open_db(&f, "chok");
    finalize_invoice(&f);
    gm_chain_report rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.batches, 3);
    ck_assert_int_eq(rep.chains, 2);
    ck_assert_int_eq(rep.rows, 4); /* the duplicate is no row */
    ck_assert_int_eq(rep.rejects, 1);
    ck_assert_int_eq(rep.documents, 2);
    ck_assert_int_eq(rep.doc_chains, 2);
    /* The auditor's SQL agrees, row by row, with the auditor's privileges. */
    gm_test_pg_exec(f.c, "SET ROLE gm_auditor");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check"), 3);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check WHERE"
                                " digest = digest_recomputed AND link_ok"),
                     3);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_document_check WHERE"
                                " digest = digest_recomputed AND link_ok"),
                     2);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_state_check"), 0);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_records WHERE batch_seq IS NULL"),
                     0);
    ck_assert_int_eq(count(f.c, "SELECT duplicates FROM audit.chain_batches WHERE partition = 0"
                                " AND seq = 2"),
                     1);
    gm_test_pg_exec(f.c, "RESET ROLE");
    /* The independent Python verifier agrees. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/examples/verify_chain.py --db '%s' >/dev/null",
             GM_SOURCE_DIR, f.conninfo);
    ck_assert_int_eq(system(cmd), 0);
    /* The command: exit status 0, and its anchor. */
    snprintf(cmd, sizeof cmd, "%s/cli/gridmeter audit verify --db '%s' | grep -q '^ok: '",
             GM_BINARY_DIR, f.conninfo);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "%s/cli/gridmeter audit anchor --db '%s' | grep -c '^batch:g/" TOPIC "/[01]\t'"
             " | grep -qx 2",
             GM_BINARY_DIR, f.conninfo);
    ck_assert_int_eq(system(cmd), 0);
    close_db(&f);
}
END_TEST

START_TEST(test_changed_ledger_row_is_found)
{
    fixture f;
    open_db(&f, "chrow");
    tamper(&f, "UPDATE gm.ledger_rows SET input_tokens = 11 WHERE " S0 " AND kafka_offset = 0");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/0 #1 (offsets 0..1)",
                 "input_tokens: recorded 30, found 31");
    /* and by the auditor's SQL */
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check WHERE"
                                " digest <> digest_recomputed"),
                     1);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/examples/verify_chain.py --db '%s' >/dev/null",
             GM_SOURCE_DIR, f.conninfo);
    ck_assert_int_eq(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof cmd, "%s/cli/gridmeter audit verify --db '%s' >/dev/null", GM_BINARY_DIR,
             f.conninfo);
    ck_assert_int_eq(WEXITSTATUS(system(cmd)), 1);
    close_db(&f);
}
END_TEST

/* Usage revision 1.1's fields are in the L record: a cache-write count or a service tier
 * changed by a superuser is found (the review of issue 17 found it was not). */
START_TEST(test_changed_revision_1_1_fields_are_found)
{
    fixture f;
    open_db(&f, "chkinds");
    tamper(&f, "UPDATE gm.ledger_rows SET cache_write_tokens = 1000 WHERE " S1);
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/1 #1", "a field other than the quantities");
    tamper(&f, "UPDATE gm.ledger_rows SET cache_write_tokens = 0, service_tier = 1 WHERE " S1);
    rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/1 #1", "a field other than the quantities");
    tamper(&f, "UPDATE gm.ledger_rows SET service_tier = 0 WHERE " S1);
    rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "restored, still: %s", rep.first);
    close_db(&f);
}
END_TEST

START_TEST(test_changed_tenant_is_found)
{
    fixture f;
    open_db(&f, "chten");
    tamper(&f, "INSERT INTO gm.ledger_names (kind, name) VALUES (1, 'other');"
               " UPDATE gm.ledger_rows SET tenant_id = (SELECT id FROM gm.ledger_names WHERE"
               " kind = 1 AND name = 'other') WHERE " S1);
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/1 #1", "a field other than the quantities");
    close_db(&f);
}
END_TEST

START_TEST(test_changed_charge_is_found)
{
    fixture f;
    open_db(&f, "chchg");
    tamper(&f, "UPDATE gm.charges SET amount = amount + 1 WHERE dimension = 'gpu'"
               " AND site_tier IS NULL");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "gm.charges acme/", "gpu");
    close_db(&f);
}
END_TEST

START_TEST(test_changed_offset_is_found)
{
    fixture f;
    open_db(&f, "choff");
    tamper(&f, "UPDATE gm.consumer_offsets SET next_offset = 3 WHERE partition = 0");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "gm.consumer_offsets g/" TOPIC "/0", "next_offset=5");
    close_db(&f);
}
END_TEST

START_TEST(test_deleted_row_is_found)
{
    fixture f;
    open_db(&f, "chdel");
    tamper(&f, "DELETE FROM gm.ledger_rows WHERE " S0 " AND kafka_offset = 4");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/0 #2 (offsets 2..4)", "rows: recorded 1, found 0");
    close_db(&f);
}
END_TEST

START_TEST(test_deleted_batch_is_found)
{
    fixture f;
    open_db(&f, "chdelb");
    /* The first batch of partition 0 with its rows: the chain has a hole. */
    tamper(&f, "DELETE FROM gm.ledger_rows WHERE " S0 " AND kafka_offset < 2;"
               " DELETE FROM gm.chain_batches WHERE partition = 0 AND seq = 1");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch chain g/" TOPIC "/0 starts at #2", NULL);
    close_db(&f);
}
END_TEST

START_TEST(test_swapped_rows_are_found)
{
    fixture f;
    open_db(&f, "chswap");
    tamper(&f, "UPDATE gm.ledger_rows SET kafka_offset = -1 WHERE " S0 " AND kafka_offset = 0;"
               " UPDATE gm.ledger_rows SET kafka_offset = 0 WHERE " S0 " AND kafka_offset = 1;"
               " UPDATE gm.ledger_rows SET kafka_offset = 1 WHERE " S0 " AND kafka_offset = -1");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/0 #1", "rows swapped offsets");
    close_db(&f);
}
END_TEST

START_TEST(test_reordered_batches_are_found)
{
    fixture f;
    open_db(&f, "chreord");
    /* Batches #1 and #2 of partition 0 trade places in the chain. */
    tamper(&f, "UPDATE gm.chain_batches SET seq = seq + 100 WHERE partition = 0;"
               " UPDATE gm.chain_batches SET seq = CASE seq WHEN 101 THEN 2 ELSE 1 END"
               " WHERE partition = 0");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "batch chain g/" TOPIC "/0: #1 names a previous digest", "reordered");
    ck_assert_int_ge(rep.problems, 2); /* the link and both digests */
    close_db(&f);
}
END_TEST

START_TEST(test_row_added_behind_the_raters_back_is_found)
{
    fixture f;
    open_db(&f, "chadd");
    tamper(&f, "CREATE TEMP TABLE t AS SELECT * FROM gm.ledger_rows WHERE " S1 ";"
               " UPDATE t SET kafka_offset = 9, event_id = 'x';"
               " INSERT INTO gm.ledger_rows SELECT * FROM t");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "ledger row " TOPIC "/1@9", "in no chained batch");
    close_db(&f);
}
END_TEST

START_TEST(test_changed_invoice_line_and_credit_note_are_found)
{
    fixture f;
    open_db(&f, "chinv");
    finalize_invoice(&f);
    tamper(&f, "UPDATE gm.invoice_lines SET amount_exact = 0.22 WHERE line_no = 2");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "document invoice:GM #1: invoice inv_1 GM-000001", "lines changed");
    ck_assert_int_eq(rep.problems, 1);
    tamper(&f, "UPDATE gm.invoice_lines SET amount_exact = 0.21 WHERE line_no = 2;"
               " UPDATE gm.credit_notes SET reason = 'other'");
    rep = verify(&f);
    assert_found(&rep, "document credit_note:GM #1: credit_note cn_", "GM-CN-000001");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_document_check WHERE"
                                " digest <> digest_recomputed"),
                     1);
    close_db(&f);
}
END_TEST

START_TEST(test_rerating_run_is_chained_and_a_changed_correction_is_found)
{
    fixture f;
    open_db(&f, "chrr");
    finalize_invoice(&f);
    gm_test_pg_exec(f.c,
                    "BEGIN;"
                    "INSERT INTO gm.rerating_runs (period_start, tenant, requested_by, reason,"
                    " tenants, lines_changed, delta_exact, delta_minor) VALUES ('2026-11-01Z',"
                    " 'acme', 'finance', 'card v2 backdated', 1, 1, -0.05, '{\"USD\": -5}');"
                    "INSERT INTO gm.rerating_corrections (run_id, tenant, period_start, invoice_id,"
                    " invoice_status, kind, dimension, model, currency, quantity_before,"
                    " quantity_after, unit_price_before, unit_price_after, amount_exact_before,"
                    " amount_exact_after, amount_minor_before, amount_minor_after) SELECT"
                    " max(run_id), 'acme', '2026-11-01Z', 'inv_1', 'finalized', 'usage', 'gpu',"
                    " 'm', 'USD', 7000000, 7000000, 0.03, 0.0235, 0.21, 0.1645, 21, 16"
                    " FROM gm.rerating_runs;"
                    "COMMIT");
    gm_chain_report rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.documents, 3);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_documents WHERE chain ="
                                " 'rerating' AND kind = 'rerating_run'"),
                     1);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/examples/verify_chain.py --db '%s' >/dev/null",
             GM_SOURCE_DIR, f.conninfo);
    ck_assert_int_eq(system(cmd), 0);
    tamper(&f, "UPDATE gm.rerating_corrections SET amount_exact_after = 0.15");
    rep = verify(&f);
    assert_found(&rep, "document rerating #1: rerating_run 1", "changed");
    close_db(&f);
}
END_TEST

START_TEST(test_restored_older_backup_is_found_by_the_anchor)
{
    fixture f;
    open_db(&f, "chbak");
    /* The backup: a copy of the database as it is now. */
    char backup[300];
    snprintf(backup, sizeof backup, "%s", gm_test_db_create("chbak_old"));
    const char *dbname = strstr(f.conninfo, "dbname=") + 7;
    const char *oldname = strstr(backup, "dbname=") + 7;
    gm_test_db_drop(backup);
    gm_ledger_writer_free(f.w);
    PQfinish(f.c);
    PGconn *admin = gm_test_pg_connect("dbname=postgres");
    char sql[512];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", oldname, dbname);
    gm_test_pg_exec(admin, sql);
    f.c = gm_test_pg_connect(f.conninfo);
    f.w = gm_ledger_writer_new(f.c);
    /* More usage, then the day's anchor. */
    make_event(&f.ev[5], "edge/fra1/n2", 2, 50);
    make_row(&f.rows[5], &f.ev[5], 1, 1);
    gm_ledger_pos pos = {1, 1, 2};
    gm_ledger_batch b = {"g", TOPIC, "t", &f.rows[5], 1, NULL, 0, &pos, 1};
    commit(&f, &b);
    char anchor[] = "/tmp/gm_anchor_XXXXXX";
    int fd = mkstemp(anchor);
    ck_assert_int_ge(fd, 0);
    FILE *out = fdopen(fd, "w");
    char err[1024];
    ck_assert_msg(gm_chain_anchor(f.c, out, INT64_C(1795900000000000), err, sizeof err) == 0, "%s",
                  err);
    fclose(out);
    gm_chain_report rep = verify_with(f.c, anchor);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.anchors, 2);
    /* The restored backup is consistent in itself; only the anchor tells. */
    PGconn *old = gm_test_pg_connect(backup);
    rep = verify_with(old, NULL);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    rep = verify_with(old, anchor);
    assert_found(&rep, "chain batch:g/" TOPIC "/1 had #2", "ends at #1");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 %s/examples/verify_chain.py --db '%s' --anchor %s >/dev/null", GM_SOURCE_DIR,
             f.conninfo, anchor);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "python3 %s/examples/verify_chain.py --db '%s' --anchor %s >/dev/null", GM_SOURCE_DIR,
             backup, anchor);
    ck_assert_int_eq(WEXITSTATUS(system(cmd)), 1);
    PQfinish(old);
    unlink(anchor);
    gm_test_db_drop(backup);
    PQfinish(admin);
    close_db(&f);
}
END_TEST

/* `gridmeter rejects replay` rates the rejected message of batch #2 (offset 3 of partition 0)
 * again: its ledger row lies in batch #2's range, where the message counts as a reject. */
static void replay_reject(fixture *f)
{
    make_event(&f->ev[5], "edge/fra1/n3", 1, 50);
    make_row(&f->rows[5], &f->ev[5], 0, 3);
    gm_ledger_writer *w = gm_ledger_writer_new(f->c);
    gm_ledger_writer_set_replay(w, true, false);
    gm_ledger_batch b = {"gridmeter-rejects-replay", TOPIC, "t", &f->rows[5], 1, NULL, 0, NULL, 0};
    gm_ledger_result res;
    char err[1024];
    ck_assert_msg(gm_ledger_writer_commit(w, &b, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(res.accepted, 1);
    gm_ledger_writer_free(w);
}

static int run_py(const fixture *f)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/examples/verify_chain.py --db '%s' >/dev/null",
             GM_SOURCE_DIR, f->conninfo);
    return WEXITSTATUS(system(cmd));
}

START_TEST(test_replayed_reject_verifies)
{
    fixture f;
    open_db(&f, "chreplay");
    replay_reject(&f);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger WHERE kafka_partition = 0 AND"
                                " kafka_offset = 3"),
                     1);
    gm_chain_report rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.batches, 3);
    ck_assert_int_eq(rep.rows, 5);
    ck_assert_int_eq(rep.rejects, 1); /* still counted by its batch, as received */
    ck_assert_int_eq(rep.replays, 1);
    ck_assert_int_eq(rep.replayed_rows, 1);
    gm_test_pg_exec(f.c, "SET ROLE gm_auditor");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check WHERE"
                                " digest = digest_recomputed AND link_ok"),
                     3);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_replay_check WHERE"
                                " digest = digest_recomputed AND link_ok AND rows_found = 1"),
                     1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_state_check"), 0);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_records WHERE"
                                " batch_seq IS NULL AND replay_seq IS NULL"),
                     0);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_heads WHERE chain = 'replay'"),
                     1);
    gm_test_pg_exec(f.c, "RESET ROLE");
    ck_assert_int_eq(run_py(&f), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/cli/gridmeter audit verify --db '%s' | grep -q '^ok: '",
             GM_BINARY_DIR, f.conninfo);
    ck_assert_int_eq(system(cmd), 0);
    /* the replay chain's head is anchored like the others */
    char anchor[] = "/tmp/gm_anchor_XXXXXX";
    int fd = mkstemp(anchor);
    ck_assert_int_ge(fd, 0);
    FILE *out = fdopen(fd, "w");
    char err[1024];
    ck_assert_msg(gm_chain_anchor(f.c, out, INT64_C(1795900000000000), err, sizeof err) == 0, "%s",
                  err);
    fclose(out);
    rep = verify_with(f.c, anchor);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.anchors, 3); /* the 2 batch chains and the replay chain */
    tamper(&f, "UPDATE gm.chain_replays SET digest = sha256(digest)");
    rep = verify_with(f.c, anchor);
    ck_assert_msg(rep.problems > 0 && strstr(rep.first, "replay"), "%s", rep.first);
    unlink(anchor);
    close_db(&f);
}
END_TEST

START_TEST(test_changed_replayed_row_is_found)
{
    fixture f;
    open_db(&f, "chreplayrow");
    replay_reject(&f);
    tamper(&f, "UPDATE gm.ledger_rows SET input_tokens = 51 WHERE " S0 " AND kafka_offset = 3");
    gm_chain_report rep = verify(&f);
    assert_found(&rep, "replay #1", "a replayed row");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_replay_check WHERE"
                                " digest <> digest_recomputed"),
                     1);
    ck_assert_int_eq(run_py(&f), 1);
    close_db(&f);
}
END_TEST

/* A replayed reject that turns out to claim an accepted event's identity is kept as a
 * conflict at its coordinates: the replay entry covers it, and a change to it is found. */
START_TEST(test_replay_kept_as_conflict_verifies_and_is_covered)
{
    fixture f;
    open_db(&f, "chreplaycf");
    make_event(&f.ev[5], "edge/fra1/n1", 3, 99); /* seq 3 was accepted with 40 tokens */
    make_row(&f.rows[5], &f.ev[5], 0, 3);
    gm_ledger_writer *w = gm_ledger_writer_new(f.c);
    gm_ledger_writer_set_replay(w, true, false);
    gm_ledger_batch b = {"gridmeter-rejects-replay", TOPIC, "t", &f.rows[5], 1, NULL, 0, NULL, 0};
    gm_ledger_result res;
    char err[1024];
    ck_assert_msg(gm_ledger_writer_commit(w, &b, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(res.conflicts, 1);
    gm_ledger_writer_free(w);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.rejected_events WHERE"
                                " replay_outcome = 'conflict'"),
                     1);
    gm_chain_report rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(rep.replays, 1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_replay_check WHERE"
                                " digest = digest_recomputed AND link_ok"),
                     1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check WHERE"
                                " digest = digest_recomputed AND link_ok"),
                     3);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_records WHERE"
                                " batch_seq IS NULL AND replay_seq IS NULL"),
                     0);
    ck_assert_int_eq(run_py(&f), 0);
    tamper(&f, "UPDATE gm.conflicting_events SET kind = 'seq_taken'");
    rep = verify(&f);
    assert_found(&rep, "replay #1", "digest recorded");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_replay_check WHERE"
                                " digest <> digest_recomputed"),
                     1);
    ck_assert_int_eq(run_py(&f), 1);
    close_db(&f);
}
END_TEST

/* A row slipped in at a reject's coordinates and the reject marked as replayed by hand: the
 * row is no longer in its batch's digest, but no replay entry lists the reject. */
START_TEST(test_forged_replay_mark_is_found)
{
    fixture f;
    open_db(&f, "chforged");
    tamper(&f,
           "CREATE TEMP TABLE t AS SELECT * FROM gm.ledger_rows WHERE " S0
           " AND kafka_offset = 4; UPDATE t SET kafka_offset = 3, event_id = 'forged', seq = 99;"
           " INSERT INTO gm.ledger_rows SELECT * FROM t;"
           " UPDATE gm.rejected_events SET replayed_at = gm.now(), replay_outcome = 'rated',"
           " replayed_kafka_topic = kafka_topic, replayed_kafka_partition = kafka_partition,"
           " replayed_kafka_offset = kafka_offset");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger WHERE kafka_offset = 3"), 1);
    gm_chain_report rep = verify(&f);
    ck_assert_msg(rep.problems > 0, "forged replay mark not found");
    ck_assert_msg(strstr(rep.first, "replay mark"), "%s", rep.first);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_state_check WHERE"
                                " object = 'rejected_events'"),
                     1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_records WHERE"
                                " batch_seq IS NULL AND replay_seq IS NULL"),
                     1);
    ck_assert_int_eq(run_py(&f), 1);
    close_db(&f);
}
END_TEST

/* A message that claims an accepted event's identity with other content is a conflict: counted
 * apart from the duplicates and covered by its batch's digest (record X). */
START_TEST(test_conflict_is_counted_apart_from_duplicates)
{
    fixture f;
    open_db(&f, "chconflict");
    make_event(&f.ev[6], "edge/fra1/n1", 3, 41); /* seq 3 was accepted with 40 tokens */
    make_row(&f.rows[6], &f.ev[6], 0, 5);
    gm_ledger_pos pos = {0, 5, 6};
    gm_ledger_batch b = {"g", TOPIC, "t", &f.rows[6], 1, NULL, 0, &pos, 1};
    commit(&f, &b);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.conflicting_events"), 1);
    ck_assert_int_eq(count(f.c, "SELECT duplicates FROM gm.chain_batches WHERE partition = 0"
                                " AND seq = 3"),
                     0);
    ck_assert_int_eq(count(f.c, "SELECT conflicts FROM gm.chain_batches WHERE partition = 0"
                                " AND seq = 3"),
                     1);
    ck_assert_int_eq(count(f.c, "SELECT conflicts FROM gm.chain_batches WHERE partition = 0"
                                " AND seq = 2"),
                     0);
    gm_chain_report rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check WHERE"
                                " digest = digest_recomputed AND link_ok"),
                     4);
    ck_assert_int_eq(run_py(&f), 0);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_records WHERE kind = 'X' AND"
                                " batch_seq = 3"),
                     1);
    /* the conflicting message's content is in the digest */
    tamper(&f, "UPDATE gm.conflicting_events SET kind = 'seq_taken'");
    rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/0 #3", "digest recorded");
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.chain_batch_check WHERE"
                                " digest <> digest_recomputed"),
                     1);
    ck_assert_int_eq(run_py(&f), 1);
    tamper(&f, "UPDATE gm.conflicting_events SET kind = 'content_differs'");
    rep = verify(&f);
    ck_assert_msg(rep.problems == 0, "%s", rep.first);
    tamper(&f, "DELETE FROM gm.conflicting_events");
    rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/0 #3", "conflicts: recorded 1, found 0");
    ck_assert_int_eq(run_py(&f), 1);
    /* the count is in the digest */
    tamper(&f, "UPDATE gm.chain_batches SET conflicts = 0, duplicates = 1 WHERE partition = 0"
               " AND seq = 3");
    rep = verify(&f);
    assert_found(&rep, "batch g/" TOPIC "/0 #3", "digest recorded");
    ck_assert_int_eq(run_py(&f), 1);
    close_db(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chain");
    TCase *tc = tcase_create("tamper");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_untouched_ledger_and_invoices_verify);
    tcase_add_test(tc, test_changed_ledger_row_is_found);
    tcase_add_test(tc, test_changed_tenant_is_found);
    tcase_add_test(tc, test_changed_revision_1_1_fields_are_found);
    tcase_add_test(tc, test_changed_charge_is_found);
    tcase_add_test(tc, test_changed_offset_is_found);
    tcase_add_test(tc, test_deleted_row_is_found);
    tcase_add_test(tc, test_deleted_batch_is_found);
    tcase_add_test(tc, test_swapped_rows_are_found);
    tcase_add_test(tc, test_reordered_batches_are_found);
    tcase_add_test(tc, test_row_added_behind_the_raters_back_is_found);
    tcase_add_test(tc, test_changed_invoice_line_and_credit_note_are_found);
    tcase_add_test(tc, test_rerating_run_is_chained_and_a_changed_correction_is_found);
    tcase_add_test(tc, test_restored_older_backup_is_found_by_the_anchor);
    tcase_add_test(tc, test_replayed_reject_verifies);
    tcase_add_test(tc, test_changed_replayed_row_is_found);
    tcase_add_test(tc, test_forged_replay_mark_is_found);
    tcase_add_test(tc, test_replay_kept_as_conflict_verifies_and_is_covered);
    tcase_add_test(tc, test_conflict_is_counted_apart_from_duplicates);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
