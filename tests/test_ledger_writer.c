/* Integration (real PostgreSQL): the exactly-once batch writer on its own, with batches
 * built by hand, for the paths that traffic seldom takes: the unique-key safety net (slow
 * path), a fenced consumer, and two writers racing on one source; and the compact rows
 * (sql/0012) reading back through gm.ledger exactly as written. */
#include "gm_ingest.h"
#include "gm_ledger.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

#define TOPIC "gridmeter.usage.v1"

typedef struct fixture {
    char conninfo[256];
    PGconn *c;
} fixture;

static void open_db(fixture *f, const char *tag)
{
    snprintf(f->conninfo, sizeof f->conninfo, "%s", gm_test_db_create(tag));
    f->c = gm_test_pg_connect(f->conninfo);
    char err[1024];
    ck_assert_msg(gm_ledger_migrate(f->c, gm_ledger_migrations, gm_ledger_migrations_count,
                                    GM_MIGRATE_APPLY, NULL, err, sizeof err) == 0,
                  "%s", err);
}

static void close_db(fixture *f)
{
    PQfinish(f->c);
    gm_test_db_drop(f->conninfo);
}

static void make_event(gm_event *ev, const char *source, uint64_t seq, const char *id)
{
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "%s", source);
    snprintf(ev->id, sizeof ev->id, "%s", id);
    snprintf(ev->tenant, sizeof ev->tenant, "acme");
    snprintf(ev->site, sizeof ev->site, "fra1");
    snprintf(ev->model, sizeof ev->model, "m");
    ev->time_us = INT64_C(1795816800000000);
    ev->seq = seq;
    ev->input_tokens = 10;
    ev->output_tokens = 5;
}

static void make_row(gm_ledger_row *row, const gm_event *ev, int64_t offset)
{
    memset(row, 0, sizeof *row);
    row->ev = ev;
    row->partition = 0;
    row->offset = offset;
    row->card_id = "list-usd";
    row->card_version = 1;
    memcpy(row->currency, "USD", 4);
    row->unit_price_p[0] = 1000000; /* 10^-6 per token */
    row->amount_e18[0] = (gm_i128)ev->input_tokens * 1000000 * 1000000;
    row->unit_price_p[2] = 2000000;
    row->amount_e18[2] = (gm_i128)(ev->output_tokens - ev->reasoning_tokens) * 2000000 * 1000000;
}

static int64_t count(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    int64_t n = atoll(v);
    free(v);
    return n;
}

START_TEST(test_reused_id_with_new_seq_goes_the_slow_path_is_a_conflict_and_not_charged)
{
    fixture f;
    open_db(&f, "wslow");
    gm_ledger_writer *w = gm_ledger_writer_new(f.c);
    gm_event ev[3];
    gm_ledger_row rows[3];
    make_event(&ev[0], "edge/fra1/n1", 1, "n1-1");
    make_event(&ev[1], "edge/fra1/n1", 2, "n1-2");
    make_row(&rows[0], &ev[0], 0);
    make_row(&rows[1], &ev[1], 1);
    gm_ledger_pos pos = {0, -1, 2};
    gm_ledger_batch b = {"g", TOPIC, "t", rows, 2, NULL, 0, &pos, 1};
    gm_ledger_result res;
    char err[1024];
    ck_assert_msg(gm_ledger_writer_commit(w, &b, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(res.accepted, 2);
    ck_assert(!res.slow_path);
    /* A node that reuses id n1-1 (same time) under a new seq 3: the seq ranges see a new
     * event, the unique key does not. It must not be charged. */
    make_event(&ev[2], "edge/fra1/n1", 3, "n1-1");
    make_row(&rows[2], &ev[2], 2);
    gm_ledger_pos pos2 = {0, 2, 3};
    gm_ledger_batch b2 = {"g", TOPIC, "t", &rows[2], 1, NULL, 0, &pos2, 1};
    ck_assert_msg(gm_ledger_writer_commit(w, &b2, &res, err, sizeof err) == 0, "%s", err);
    ck_assert(res.slow_path);
    ck_assert_uint_eq(res.accepted, 0);
    /* issue 12: another event's id is a conflict, kept for auditors, not a quiet duplicate */
    ck_assert_uint_eq(res.duplicates, 0);
    ck_assert_uint_eq(res.conflicts, 1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.conflicting_events WHERE"
                                " kind = 'id_reused' AND id = 'n1-1' AND seq = 3"
                                " AND accepted_seq = 1 AND accepted_kafka_offset = 0"
                                " AND fingerprint <> accepted_fingerprint"),
                     1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger"), 2);
    ck_assert_int_eq(count(f.c, "SELECT sum(quantity) FROM gm.charges WHERE dimension = 'input'"),
                     20);
    ck_assert_int_eq(count(f.c, "SELECT events FROM gm.sources"), 2);
    ck_assert_int_eq(count(f.c, "SELECT next_offset FROM gm.consumer_offsets"), 3);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0"),
                     0);
    gm_ledger_writer_free(w);
    close_db(&f);
}
END_TEST

/* Usage revision 1.1 (docs/events.md "Versions"): the three optional fields are stored as
 * sent, on the fast path and the slow path, and an event without them gets the defaults. */
START_TEST(test_revision_1_1_fields_are_kept_in_the_ledger)
{
    fixture f;
    open_db(&f, "wrev11");
    gm_ledger_writer *w = gm_ledger_writer_new(f.c);
    gm_event ev[3];
    gm_ledger_row rows[3];
    make_event(&ev[0], "edge/fra1/n1", 1, "n1-1");
    ev[0].output_tokens = 300;
    ev[0].reasoning_tokens = 200;
    ev[0].cache_write_tokens = 1024;
    ev[0].service_tier = GM_SERVICE_TIER_BATCH;
    make_event(&ev[1], "edge/fra1/n1", 2, "n1-2");
    make_row(&rows[0], &ev[0], 0);
    make_row(&rows[1], &ev[1], 1);
    /* as the rater prices it (gm_rating_usage_tokens): output 100 at the output price, 200
     * reasoning at 3 x 10^-6, 1024 cache writes at 10^-6, and a fee of 0.0001 */
    rows[0].amount_e18[2] = (gm_i128)100 * 2000000 * 1000000;
    rows[0].unit_price_p[4] = 1000000;
    rows[0].amount_e18[4] = (gm_i128)1024 * 1000000 * 1000000;
    rows[0].unit_price_p[5] = 3000000;
    rows[0].amount_e18[5] = (gm_i128)200 * 3000000 * 1000000;
    rows[0].unit_price_p[6] = 100000000;
    rows[0].amount_e18[6] = (gm_i128)100000000 * 1000000;
    gm_ledger_pos pos = {0, -1, 2};
    gm_ledger_batch b = {"g", TOPIC, "t", rows, 2, NULL, 0, &pos, 1};
    gm_ledger_result res;
    char err[1024];
    ck_assert_msg(gm_ledger_writer_commit(w, &b, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(res.accepted, 2);
    /* charges per dimension: output is the non-reasoning part; the request dimension counts
     * only the event with a fee */
    char *v = gm_test_pg_value(f.c, "SELECT string_agg(dimension || '=' || quantity || '@' ||"
                                    " amount::text, ',' ORDER BY dimension) FROM gm.charges");
    ck_assert_str_eq(v, "cache_write=1024@0.001024000000000000,input=20@0.000020000000000000,"
                        "output=105@0.000210000000000000,reasoning=200@0.000600000000000000,"
                        "request=1@0.000100000000000000");
    free(v);
    v = gm_test_pg_value(f.c, "SELECT string_agg(amount::text, ',' ORDER BY seq)"
                              " FROM audit.usage_events");
    ck_assert_str_eq(v, "0.001934000000000000,0.000020000000000000");
    free(v);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0"
                                " OR ledger_amount <> 0.001954"),
                     0);
    v = gm_test_pg_value(f.c, "SELECT string_agg(concat_ws(':', seq, output_tokens,"
                              " reasoning_tokens, cache_write_tokens, service_tier), ','"
                              " ORDER BY seq) FROM audit.usage_events");
    ck_assert_str_eq(v, "1:300:200:1024:batch,2:5:0:0:standard");
    free(v);
    /* the slow path (a reused id under a new seq, then a new event) copies the same columns */
    make_event(&ev[2], "edge/fra1/n1", 3, "n1-3");
    ev[2].reasoning_tokens = 5;
    ev[2].service_tier = GM_SERVICE_TIER_PRIORITY;
    make_row(&rows[2], &ev[2], 2);
    gm_ledger_row slow[2] = {rows[0], rows[2]};
    slow[0].offset = 3;
    gm_event again = ev[0];
    again.seq = 4;
    slow[0].ev = &again;
    slow[1].offset = 2;
    gm_ledger_pos pos2 = {0, 2, 4};
    gm_ledger_batch b2 = {"g", TOPIC, "t", slow, 2, NULL, 0, &pos2, 1};
    ck_assert_msg(gm_ledger_writer_commit(w, &b2, &res, err, sizeof err) == 0, "%s", err);
    ck_assert(res.slow_path);
    ck_assert_uint_eq(res.accepted, 1);
    ck_assert_uint_eq(res.duplicates, 0);
    ck_assert_uint_eq(res.conflicts, 1); /* an accepted id under another seq (docs/events.md) */
    v = gm_test_pg_value(f.c, "SELECT concat_ws(':', reasoning_tokens, cache_write_tokens,"
                              " service_tier) FROM gm.ledger WHERE seq = 3");
    ck_assert_str_eq(v, "5:0:priority");
    free(v);
    gm_ledger_writer_free(w);
    close_db(&f);
}
END_TEST

START_TEST(test_stale_consumer_is_fenced_and_writes_nothing)
{
    fixture f;
    open_db(&f, "wfence");
    gm_ledger_writer *w = gm_ledger_writer_new(f.c);
    gm_event ev[2];
    gm_ledger_row rows[2];
    make_event(&ev[0], "edge/fra1/n1", 1, "n1-1");
    make_row(&rows[0], &ev[0], 0);
    gm_ledger_pos pos = {0, -1, 1};
    gm_ledger_batch b = {"g", TOPIC, "new-owner", rows, 1, NULL, 0, &pos, 1};
    gm_ledger_result res;
    char err[1024];
    ck_assert_msg(gm_ledger_writer_commit(w, &b, &res, err, sizeof err) == 0, "%s", err);
    /* The old owner still believes the partition stands at "no row": it is fenced. */
    gm_ledger_writer *stale = gm_ledger_writer_new(f.c);
    make_event(&ev[1], "edge/fra1/n2", 1, "n2-1");
    make_row(&rows[1], &ev[1], 1);
    gm_ledger_reject rj = {0, 2, NULL, 0, "x", 1, "event: broken", NULL, NULL};
    gm_ledger_pos old = {0, -1, 3};
    gm_ledger_batch b2 = {"g", TOPIC, "old-owner", &rows[1], 1, &rj, 1, &old, 1};
    ck_assert_int_eq(gm_ledger_writer_commit(stale, &b2, &res, err, sizeof err), GM_EFENCED);
    ck_assert_ptr_nonnull(strstr(err, "fenced"));
    /* Same with a stored offset that moved on. */
    gm_ledger_pos old2 = {0, 0, 3};
    b2.pos = &old2;
    ck_assert_int_eq(gm_ledger_writer_commit(stale, &b2, &res, err, sizeof err), GM_EFENCED);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger"), 1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.rejected_events"), 0);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.sources"), 1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.batches"), 1);
    ck_assert_int_eq(count(f.c, "SELECT next_offset FROM gm.consumer_offsets"), 1);
    gm_ledger_writer_free(stale);
    gm_ledger_writer_free(w);
    close_db(&f);
}
END_TEST

START_TEST(test_two_writers_on_one_source_conflict_instead_of_doubling)
{
    fixture f;
    open_db(&f, "wrace");
    PGconn *c2 = gm_test_pg_connect(f.conninfo);
    gm_ledger_writer *a = gm_ledger_writer_new(f.c), *b = gm_ledger_writer_new(c2);
    gm_event ev[3];
    gm_ledger_row rows[3];
    gm_ledger_result res;
    char err[1024];
    /* A writes seq 1 (partition 0) and caches the source's ranges. */
    make_event(&ev[0], "edge/fra1/n1", 1, "n1-1");
    make_row(&rows[0], &ev[0], 0);
    gm_ledger_pos pa = {0, -1, 1};
    gm_ledger_batch ba = {"g", TOPIC, "a", rows, 1, NULL, 0, &pa, 1};
    ck_assert_msg(gm_ledger_writer_commit(a, &ba, &res, err, sizeof err) == 0, "%s", err);
    /* B (another partition: the node's key moved after a partition change) writes seq 2. */
    make_event(&ev[1], "edge/fra1/n1", 2, "n1-2");
    make_row(&rows[1], &ev[1], 0);
    rows[1].partition = 1;
    gm_ledger_pos pb = {1, -1, 1};
    gm_ledger_batch bb = {"g", TOPIC, "b", &rows[1], 1, NULL, 0, &pb, 1};
    ck_assert_msg(gm_ledger_writer_commit(b, &bb, &res, err, sizeof err) == 0, "%s", err);
    /* A, with its cached ranges {1}, now sees seq 2 again: its compare-and-set on the
     * source fails instead of writing seq 2 twice. */
    make_event(&ev[2], "edge/fra1/n1", 2, "n1-2-resent");
    make_row(&rows[2], &ev[2], 1); /* another id: the unique key alone would not catch it */
    gm_ledger_pos pa2 = {0, 1, 2};
    gm_ledger_batch ba2 = {"g", TOPIC, "a", &rows[2], 1, NULL, 0, &pa2, 1};
    ck_assert_int_eq(gm_ledger_writer_commit(a, &ba2, &res, err, sizeof err), GM_ECONFLICT);
    /* After the conflict A reloads the ranges: seq 2 is taken, by an event with another id:
     * a conflict (seq_taken), never charged. */
    ck_assert_msg(gm_ledger_writer_commit(a, &ba2, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(res.duplicates, 0);
    ck_assert_uint_eq(res.conflicts, 1);
    ck_assert_uint_eq(res.accepted, 0);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.conflicting_events WHERE"
                                " kind = 'seq_taken' AND accepted_id = 'n1-2'"),
                     1);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger"), 2);
    ck_assert_int_eq(count(f.c, "SELECT events FROM gm.sources"), 2);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0"),
                     0);
    gm_ledger_writer_free(a);
    gm_ledger_writer_free(b);
    PQfinish(c2);
    close_db(&f);
}
END_TEST

/* What gm.ledger must answer for a row, column by column. */
static void expect_row(PGconn *c, const gm_ledger_row *row)
{
    const gm_event *ev = row->ev;
    const char *params[2] = {ev->source, ev->id};
    PGresult *r = PQexecParams(
        c,
        "SELECT tenant, site, model, coalesce(request_id, '<null>'), seq, input_tokens,"
        " cached_tokens, output_tokens, gpu_us, coalesce(site_tier, '<null>'), card_id,"
        " card_version, currency, amount_input, amount_cached, amount_output, amount_gpu, flags,"
        " kafka_topic, kafka_partition, kafka_offset,"
        " (extract(epoch FROM event_time) * 1000000)::bigint"
        " FROM gm.ledger WHERE source = $1 AND event_id = $2",
        2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    char want[22][160];
    snprintf(want[0], sizeof want[0], "%s", ev->tenant);
    snprintf(want[1], sizeof want[0], "%s", ev->site);
    snprintf(want[2], sizeof want[0], "%s", ev->model);
    snprintf(want[3], sizeof want[0], "%s", ev->request_id[0] ? ev->request_id : "<null>");
    snprintf(want[4], sizeof want[0], "%llu", (unsigned long long)ev->seq);
    int64_t q[4] = {ev->input_tokens, ev->cached_tokens, ev->output_tokens, ev->gpu_us};
    for (int d = 0; d < 4; d++)
        snprintf(want[5 + d], sizeof want[0], "%lld", (long long)q[d]);
    snprintf(want[9], sizeof want[0], "%s", row->site_tier ? row->site_tier : "<null>");
    snprintf(want[10], sizeof want[0], "%s", row->card_id);
    snprintf(want[11], sizeof want[0], "%lld", (long long)row->card_version);
    snprintf(want[12], sizeof want[0], "%s", row->currency);
    for (int d = 0; d < 4; d++)
        gm_dec_format(row->amount_e18[d], 18, want[13 + d], sizeof want[0]);
    snprintf(want[17], sizeof want[0], "%u", row->flags);
    snprintf(want[18], sizeof want[0], "%s", TOPIC);
    snprintf(want[19], sizeof want[0], "%d", row->partition);
    snprintf(want[20], sizeof want[0], "%lld", (long long)row->offset);
    snprintf(want[21], sizeof want[0], "%lld", (long long)ev->time_us);
    for (int k = 0; k < 22; k++)
        ck_assert_msg(!strcmp(PQgetvalue(r, 0, k), want[k]), "%s#%s column %d: got %s, want %s",
                      ev->source, ev->id, k, PQgetvalue(r, 0, k), want[k]);
    PQclear(r);
}

START_TEST(test_compact_rows_read_back_exactly)
{
    fixture f;
    open_db(&f, "wcompact");
    gm_event ev[6];
    gm_ledger_row rows[6];
    /* Sources, tenants, sites, models and prices that differ in one field at a time. */
    static const char *const src[6] = {"edge/fra1/n1", "edge/fra1/n1", "edge/ams1/n2",
                                       "edge/ams1/n2", "core/x@y+z=~", "core/x@y+z=~"};
    for (int i = 0; i < 6; i++) {
        char id[32];
        snprintf(id, sizeof id, "id-%d", i);
        make_event(&ev[i], src[i], (uint64_t)(i / 2 * 10 + i % 2 + 1), id);
        make_row(&rows[i], &ev[i], i);
        rows[i].partition = i % 2;
    }
    snprintf(ev[1].model, sizeof ev[1].model, "org/model:tag");
    snprintf(ev[2].tenant, sizeof ev[2].tenant, "globex.eu");
    snprintf(ev[3].request_id, sizeof ev[3].request_id, "req-3");
    ev[4].time_us += 3 * 24 * INT64_C(3600000000); /* another day, same month */
    ev[5].input_tokens = (INT64_C(1) << 40) + 7;
    ev[5].cached_tokens = 3;
    ev[5].gpu_us = 123456789;
    rows[2].site_tier = "metro";
    rows[3].site_tier = "metro";
    rows[3].unit_price_p[0] += 1; /* only one price differs */
    rows[4].flags = 1 | 2;
    rows[4].card_version = 2;
    rows[5].unit_price_p[0] = 500000000000; /* 0.5 a token */
    rows[5].unit_price_p[1] = 1;            /* 10^-12 a token */
    rows[5].unit_price_p[3] = 7777777;      /* per GPU-second */
    for (int i = 0; i < 6; i++) {
        const gm_event *e = &ev[i];
        int64_t q[4] = {e->input_tokens, e->cached_tokens, e->output_tokens, e->gpu_us};
        for (int d = 0; d < 4; d++)
            rows[i].amount_e18[d] =
                (gm_i128)q[d] * rows[i].unit_price_p[d] * (d == 3 ? 1 : 1000000);
    }
    gm_ledger_pos pos[2] = {{0, -1, 6}, {1, -1, 6}};
    gm_ledger_batch b = {"g", TOPIC, "t", rows, 6, NULL, 0, pos, 2};
    gm_ledger_result res;
    char err[1024];
    gm_ledger_writer *w = gm_ledger_writer_new(f.c);
    ck_assert_msg(gm_ledger_writer_commit(w, &b, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(res.accepted, 6);
    for (int i = 0; i < 6; i++)
        expect_row(f.c, &rows[i]);
    /* Rows 0 and 1 differ in model only: one pricing for both. */
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger_pricings"), 5);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger_streams"), 2);
    int64_t names = count(f.c, "SELECT count(*) FROM gm.ledger_names");
    ck_assert_int_eq(names, 3 + 2 + 1 + 2); /* sources, tenants, sites, models */
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0"),
                     0);
    /* A second writer (cold cache, own connection) finds the same ids and adds none. */
    PGconn *c2 = gm_test_pg_connect(f.conninfo);
    gm_ledger_writer *w2 = gm_ledger_writer_new(c2);
    gm_event ev2[6];
    gm_ledger_row rows2[6];
    for (int i = 0; i < 6; i++) {
        ev2[i] = ev[i];
        snprintf(ev2[i].id, sizeof ev2[i].id, "again-%d", i);
        ev2[i].seq += 100;
        rows2[i] = rows[i];
        rows2[i].ev = &ev2[i];
        rows2[i].offset += 6;
    }
    gm_ledger_pos pos2[2] = {{0, 6, 12}, {1, 6, 12}};
    gm_ledger_batch b2 = {"g", TOPIC, "t2", rows2, 6, NULL, 0, pos2, 2};
    ck_assert_msg(gm_ledger_writer_commit(w2, &b2, &res, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(res.accepted, 6);
    for (int i = 0; i < 6; i++)
        expect_row(c2, &rows2[i]);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger_names"), names);
    ck_assert_int_eq(count(f.c, "SELECT count(*) FROM gm.ledger_pricings"), 5);
    gm_ledger_writer_free(w);
    gm_ledger_writer_free(w2);
    PQfinish(c2);
    close_db(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ledger_writer");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc,
                   test_reused_id_with_new_seq_goes_the_slow_path_is_a_conflict_and_not_charged);
    tcase_add_test(tc, test_stale_consumer_is_fenced_and_writes_nothing);
    tcase_add_test(tc, test_revision_1_1_fields_are_kept_in_the_ledger);
    tcase_add_test(tc, test_two_writers_on_one_source_conflict_instead_of_doubling);
    tcase_add_test(tc, test_compact_rows_read_back_exactly);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
