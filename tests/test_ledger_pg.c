/* Integration (real PostgreSQL): migrations are ordered, idempotent, atomic and guarded by
 * checksums; rate cards and contracts import without ever rewriting a version; the compact
 * ledger (sql/0012) keeps every row exactly as the wide table held it. */
#include "gm_ledger.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

static char *read_example(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/examples/ratecards/%s", GM_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[1 << 16];
    *len = fread(buf, 1, sizeof buf - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

START_TEST(test_migrate_twice_is_a_no_op)
{
    char ci[256];
    snprintf(ci, sizeof ci, "%s", gm_test_db_create("mig"));
    PGconn *c = gm_test_pg_connect(ci);
    char err[1024];
    ck_assert_int_eq(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    char *n1 = gm_test_pg_value(c, "SELECT count(*) FROM gm_meta.schema_migrations");
    ck_assert_int_eq(atoi(n1), (int)gm_ledger_migrations_count);
    ck_assert_int_eq(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    char *n2 = gm_test_pg_value(c, "SELECT count(*) FROM gm_meta.schema_migrations");
    ck_assert_str_eq(n1, n2);
    free(n1);
    free(n2);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

START_TEST(test_failed_migration_leaves_nothing_half_applied)
{
    char ci[256];
    snprintf(ci, sizeof ci, "%s", gm_test_db_create("migfail"));
    PGconn *c = gm_test_pg_connect(ci);
    char err[1024];
    ck_assert_int_eq(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    /* A later migration whose second statement fails: its first must not stay. */
    gm_migration bad[64];
    size_t n = gm_ledger_migrations_count;
    memcpy(bad, gm_ledger_migrations, n * sizeof *bad);
    bad[n].version = gm_ledger_migrations[n - 1].version + 1; /* numbers rise, gaps allowed */
    bad[n].name = "9999_broken";
    bad[n].sql = "CREATE TABLE gm.half_done (a int);\nSELECT 1;\nSELECT * FROM gm.no_such_table;";
    int rc = gm_ledger_migrate(c, bad, n + 1, GM_MIGRATE_APPLY, NULL, err, sizeof err);
    ck_assert_int_eq(rc, GM_EDB);
    ck_assert_msg(strstr(err, "9999_broken") && strstr(err, "line 3"), "error was: %s", err);
    char *v = gm_test_pg_value(c, "SELECT to_regclass('gm.half_done') IS NULL");
    ck_assert_str_eq(v, "t");
    free(v);
    v = gm_test_pg_value(
        c, "SELECT count(*) FROM gm_meta.schema_migrations WHERE name = '9999_broken'");
    ck_assert_str_eq(v, "0");
    free(v);
    /* An applied migration that was edited afterwards is refused, not skipped. */
    bad[0].sql = "SELECT 'edited';";
    rc = gm_ledger_migrate(c, bad, 1, GM_MIGRATE_APPLY, NULL, err, sizeof err);
    ck_assert_int_eq(rc, GM_ECONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "changed after it was applied"));
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

#define LEDGER_ROWS_TEXT                                                                           \
    "SELECT coalesce(string_agg(l::text, E'\\n' ORDER BY event_id), '') FROM gm.ledger l"
#define USAGE_EVENTS_TEXT                                                                          \
    "SELECT coalesce(string_agg(u::text, E'\\n' ORDER BY id), '') FROM audit.usage_events u"
/* The same rows as later migrations show them: sql/0015 adds epoch at the end of gm.ledger and
 * audit.usage_events, 0 for every row written before (docs/events.md "Epochs"). */
#define LEDGER_ROWS_TEXT_EPOCH0                                                                    \
    "SELECT coalesce(string_agg(regexp_replace(l::text, '\\)$', ',0)'), E'\\n' ORDER BY"           \
    " event_id), '') FROM gm.ledger l"
#define USAGE_EVENTS_TEXT_EPOCH0                                                                   \
    "SELECT coalesce(string_agg(regexp_replace(u::text, '\\)$', ',0)'), E'\\n' ORDER BY id), '')"  \
    " FROM audit.usage_events u"

static void insert_wide_rows(PGconn *c)
{
    /* e1: amounts are quantity x unit price; e2: they are not (a hand-made row: 1/3 of a
     * unit, a GPU amount no 12-decimal price gives, an amount on a zero quantity). */
    gm_test_pg_exec(
        c, "INSERT INTO gm.ledger (tenant, event_time, source, event_id, seq, site, model,"
           " request_id, input_tokens, cached_tokens, output_tokens, gpu_us, site_tier, card_id,"
           " card_version, currency, amount_input, amount_cached, amount_output, amount_gpu,"
           " flags, kafka_topic, kafka_partition, kafka_offset) VALUES"
           " ('acme', '2025-03-10T10:00:00Z', 'edge/fra1/n1', 'e1', 1, 'fra1', 'm-large',"
           "  'req-1', 1000, 200, 30, 1500000, 'metro', 'list-usd', 1, 'USD', 0.003, 0.0001,"
           "  0.00045, 0.0015, 0, 'gridmeter.usage.v1', 3, 41),"
           " ('acme', '2025-03-10T11:00:00Z', 'edge/fra1/n1', 'e2', 2, 'fra1', 'm-large', NULL,"
           "  3, 0, 7, 3, NULL, 'list-usd', 1, 'USD', 0.000000000000000001,"
           "  0.000000000000000007, 0.333333333333333333, 0.000000000000000001, 9,"
           "  'gridmeter.usage.v1', 3, 42)");
    /* e3: usage revision 1.1 (sql/0009): reasoning inside the output, cache writes, a tier,
     * and the three amounts of the new dimensions (output priced on its other 4 tokens) */
    gm_test_pg_exec(
        c, "INSERT INTO gm.ledger (tenant, event_time, source, event_id, seq, site, model,"
           " request_id, input_tokens, cached_tokens, output_tokens, gpu_us, site_tier, card_id,"
           " card_version, currency, amount_input, amount_cached, amount_output, amount_gpu,"
           " flags, kafka_topic, kafka_partition, kafka_offset, reasoning_tokens,"
           " cache_write_tokens, service_tier, amount_cache_write, amount_reasoning,"
           " amount_request) VALUES"
           " ('acme', '2025-03-10T12:00:00Z', 'edge/fra1/n1', 'e3', 3, 'fra1', 'm-large', NULL,"
           "  10, 0, 7, 0, NULL, 'list-usd', 1, 'USD', 0.00001, 0, 0.000012, 0, 0,"
           "  'gridmeter.usage.v1', 3, 43, 3, 5, 'batch', 0.00001, 0.000009, 0.01)");
}

START_TEST(test_compact_ledger_keeps_rows_exactly)
{
    char ci[256];
    snprintf(ci, sizeof ci, "%s", gm_test_db_create("compact"));
    PGconn *c = gm_test_pg_connect(ci);
    char err[1024];
    size_t before = 0;
    while (before < gm_ledger_migrations_count && gm_ledger_migrations[before].version < 12)
        before++;
    ck_assert_uint_lt(before, gm_ledger_migrations_count);
    ck_assert_int_eq(
        gm_ledger_migrate(c, gm_ledger_migrations, before, GM_MIGRATE_APPLY, NULL, err, sizeof err),
        0);
    insert_wide_rows(c); /* into the wide table of sql/0001 */
    char *rows_wide = gm_test_pg_value(c, LEDGER_ROWS_TEXT_EPOCH0);
    char *usage_wide = gm_test_pg_value(c, USAGE_EVENTS_TEXT_EPOCH0);
    char *recon_wide = gm_test_pg_value(c, "SELECT events || ' ' || ledger_amount"
                                           " FROM audit.reconciliation");
    ck_assert_int_eq(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    /* The rows moved: the same text, column by column, through gm.ledger and the audit view. */
    char *v = gm_test_pg_value(c, LEDGER_ROWS_TEXT);
    ck_assert_str_eq(v, rows_wide);
    free(v);
    v = gm_test_pg_value(c, USAGE_EVENTS_TEXT);
    ck_assert_str_eq(v, usage_wide);
    free(v);
    v = gm_test_pg_value(c, "SELECT events || ' ' || ledger_amount FROM audit.reconciliation");
    ck_assert_str_eq(v, recon_wide);
    free(v);
    v = gm_test_pg_value(c, "SELECT to_regclass('gm.ledger_v0') IS NULL"
                            " AND to_regclass('gm.ledger_rows_2025_03') IS NOT NULL");
    ck_assert_str_eq(v, "t");
    free(v);
    /* e1 is stored as unit prices (no amounts), e2 with its fixed amounts. */
    v = gm_test_pg_value(c, "SELECT string_agg(r.event_id || ':' || (p.amount_input IS NULL)"
                            " || ':' || p.price_input, ',' ORDER BY r.event_id)"
                            " FROM gm.ledger_rows r JOIN gm.ledger_pricings p"
                            " ON p.id = r.pricing_id");
    ck_assert_str_eq(v, "e1:true:0.000003000000,e2:false:0.000000000000,e3:true:0.000001000000");
    free(v);
    /* The same rows written by hand into the compact ledger read back the same. */
    gm_test_pg_exec(c, "CREATE TABLE wide_copy AS SELECT * FROM gm.ledger");
    gm_test_pg_exec(c, "INSERT INTO gm.ledger SELECT tenant, event_time, source,"
                       " event_id || '-again', seq + 10, site, model, request_id, input_tokens,"
                       " cached_tokens, output_tokens, gpu_us, site_tier, card_id, card_version,"
                       " currency, amount_input, amount_cached, amount_output, amount_gpu, flags,"
                       " kafka_topic, kafka_partition, kafka_offset + 10, ingested_at,"
                       " reasoning_tokens, cache_write_tokens, service_tier, amount_cache_write,"
                       " amount_reasoning, amount_request FROM wide_copy");
    v = gm_test_pg_value(c, "SELECT count(*) FROM (SELECT tenant, event_time, source,"
                            " event_id || '-again', seq + 10, site, model, request_id,"
                            " input_tokens, cached_tokens, output_tokens, gpu_us, site_tier,"
                            " card_id, card_version, currency, amount_input, amount_cached,"
                            " amount_output, amount_gpu, flags, kafka_topic, kafka_partition,"
                            " kafka_offset + 10, ingested_at, reasoning_tokens,"
                            " cache_write_tokens, service_tier, amount_cache_write,"
                            " amount_reasoning, amount_request, epoch FROM wide_copy"
                            " EXCEPT SELECT * FROM gm.ledger) x");
    ck_assert_str_eq(v, "0");
    free(v);
    /* Dedup by (source, id): the same id again is refused by the unique key. */
    PGresult *r = PQexec(c, "INSERT INTO gm.ledger SELECT * FROM wide_copy LIMIT 1");
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23505");
    PQclear(r);
    /* Append-only, even for the owner. */
    r = PQexec(c, "UPDATE gm.ledger SET input_tokens = 0");
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    free(rows_wide);
    free(usage_wide);
    free(recon_wide);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

/* A column another migration added to the wide table is never dropped by the move: sql/0012
 * refuses, naming it, and leaves nothing of itself behind. */
START_TEST(test_compact_ledger_refuses_to_drop_an_unknown_column)
{
    char ci[256];
    snprintf(ci, sizeof ci, "%s", gm_test_db_create("compactcol"));
    PGconn *c = gm_test_pg_connect(ci);
    char err[1024];
    size_t before = 0;
    while (before < gm_ledger_migrations_count && gm_ledger_migrations[before].version < 12)
        before++;
    ck_assert_int_eq(
        gm_ledger_migrate(c, gm_ledger_migrations, before, GM_MIGRATE_APPLY, NULL, err, sizeof err),
        0);
    gm_test_pg_exec(c, "ALTER TABLE gm.ledger ADD COLUMN payload_fingerprint bytea");
    ck_assert_int_ne(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    ck_assert_msg(strstr(err, "payload_fingerprint") != NULL, "%s", err);
    char *v = gm_test_pg_value(c, "SELECT to_regclass('gm.ledger_rows') IS NULL"
                                  " AND to_regclass('gm.ledger') IS NOT NULL");
    ck_assert_str_eq(v, "t");
    free(v);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

START_TEST(test_card_versions_are_never_rewritten)
{
    char ci[256];
    snprintf(ci, sizeof ci, "%s", gm_test_db_create("cards"));
    PGconn *c = gm_test_pg_connect(ci);
    char err[1024], msg[512];
    ck_assert_int_eq(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    size_t len;
    char *card = read_example("list-usd-v1.json", &len);
    ck_assert_msg(gm_ledger_import(c, card, len, msg, sizeof msg, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(msg, "imported"));
    /* The same document again: accepted, nothing changes. */
    ck_assert_msg(gm_ledger_import(c, card, len, msg, sizeof msg, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(msg, "unchanged"));
    /* The same version with another price: refused, and the stored one stays. */
    char *changed = gm_xstrdup(card);
    char *p = strstr(changed, "\"0.60\"");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "\"0.61\"", 6);
    ck_assert_int_eq(
        gm_ledger_import(c, changed, strlen(changed), msg, sizeof msg, err, sizeof err),
        GM_ECONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "never rewritten"));
    free(changed);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM gm.rate_cards");
    ck_assert_str_eq(v, "1");
    free(v);
    /* Not even the owner's UPDATE gets through the trigger. */
    PGresult *r = PQexec(c, "UPDATE gm.rate_cards SET currency = 'EUR'");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    /* A contract that changes becomes the tenant's next version. */
    char *contract = read_example("contract-acme.json", &len);
    ck_assert_msg(gm_ledger_import(c, contract, len, msg, sizeof msg, err, sizeof err) == 0, "%s",
                  err);
    char *c2 = gm_xstrdup(contract);
    p = strstr(c2, "\"100.00\"");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "\"200.00\"", 8);
    ck_assert_msg(gm_ledger_import(c, c2, strlen(c2), msg, sizeof msg, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_ptr_nonnull(strstr(msg, "version 2"));
    free(c2);
    /* Invalid documents name the field and the rule; nothing is stored. */
    const char *broken = "{\"card_id\":\"x\",\"version\":1,\"valid_from\":\"2026-01-01T00:00:00Z\","
                         "\"currency\":\"USD\",\"unknown_models\":\"reject\","
                         "\"prices\":{\"m\":{\"input\":{\"per_token\":0.5}}}}";
    ck_assert_int_ne(gm_ledger_import(c, broken, strlen(broken), msg, sizeof msg, err, sizeof err),
                     0);
    ck_assert_ptr_nonnull(strstr(err, "prices.m.input"));
    v = gm_test_pg_value(c, "SELECT count(*) FROM gm.rate_cards");
    ck_assert_str_eq(v, "1");
    free(v);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

/* Regression (issue 15 review): a contract naming a card that is not stored was imported, and
 * then every event of its tenant was rejected. It is refused at import (409, the card may be
 * imported later), naming card_id, and nothing is stored; the same with the card is imported. */
START_TEST(test_contract_naming_a_missing_card_is_refused_at_import)
{
    char ci[256];
    snprintf(ci, sizeof ci, "%s", gm_test_db_create("card_missing"));
    PGconn *c = gm_test_pg_connect(ci);
    char err[1024], msg[512];
    ck_assert_int_eq(gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err),
                     0);
    size_t len;
    char *card = read_example("list-usd-v1.json", &len);
    ck_assert_msg(gm_ledger_import(c, card, len, msg, sizeof msg, err, sizeof err) == 0, "%s", err);
    const char *bad = "{\"tenant\":\"nocard\",\"card_id\":\"no-such-card\",\"currency\":\"USD\"}";
    int rc = gm_ledger_import(c, bad, strlen(bad), msg, sizeof msg, err, sizeof err);
    ck_assert_msg(rc == GM_ECONFLICT, "%d %s", rc, err);
    ck_assert_msg(strstr(err, "card_id: card no-such-card does not exist"), "%s", err);
    char *v = gm_test_pg_value(c, "SELECT count(*) FROM gm.contracts");
    ck_assert_str_eq(v, "0");
    free(v);
    /* inside a caller's transaction (the API's POST) too: refused, the caller rolls back */
    gm_test_pg_exec(c, "BEGIN");
    ck_assert_int_eq(gm_ledger_import(c, bad, strlen(bad), msg, sizeof msg, err, sizeof err),
                     GM_ECONFLICT);
    gm_test_pg_exec(c, "ROLLBACK");
    const char *good = "{\"tenant\":\"nocard\",\"currency\":\"USD\"}"; /* the default card */
    ck_assert_msg(gm_ledger_import(c, good, strlen(good), msg, sizeof msg, err, sizeof err) == 0,
                  "%s", err);
    v = gm_test_pg_value(c, "SELECT count(*) FROM gm.contracts");
    ck_assert_str_eq(v, "1");
    free(v);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ledger_pg");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_migrate_twice_is_a_no_op);
    tcase_add_test(tc, test_failed_migration_leaves_nothing_half_applied);
    tcase_add_test(tc, test_card_versions_are_never_rewritten);
    tcase_add_test(tc, test_contract_naming_a_missing_card_is_refused_at_import);
    tcase_add_test(tc, test_compact_ledger_keeps_rows_exactly);
    tcase_add_test(tc, test_compact_ledger_refuses_to_drop_an_unknown_column);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
