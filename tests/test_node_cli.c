/* End-to-end tests of `gridmeter emit` and `gridmeter loadgen` against the real broker: emit
 * assigns or keeps id and seq as documented; what loadgen puts in Kafka reconciles exactly
 * with its manifest (valid distinct events, duplicates, malformed messages, totals). */
#include "gm_node.h"
#include "support.h"
#include "test_node_util.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char topic[128], dir[256];

static void setup(void)
{
    gm_test_topic_name("nodecli", topic, sizeof topic);
    gm_test_topic_create(topic, 3);
    tn_tmpdir(dir, sizeof dir, "nodecli");
}

static void teardown(void)
{
    gm_test_topic_delete(topic);
    tn_rmdir(dir);
}

/* Runs a shell command line; returns its exit status. */
static int sh(const char *fmt, ...) GM_PRINTF(1, 2);
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    gm_test_clock_to_children();
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *buf = gm_xmalloc(1 << 22);
    size_t n = fread(buf, 1, (1 << 22) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

START_TEST(test_emit_assigns_id_and_seq_keeps_given_ones_and_refuses_half)
{
    char in[400];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    FILE *f = fopen(in, "w");
    fputs("{\"subject\":\"acme\",\"data\":{\"model\":\"m1\",\"input_tokens\":5,\"cached_tokens\":0,"
          "\"output_tokens\":7,\"gpu_us\":9}}\n",
          f);
    fputs("{\"subject\":\"acme\",\"data\":{\"model\":\"m1\",\"input_tokens\":6,\"cached_tokens\":1,"
          "\"output_tokens\":7,\"gpu_us\":9}}\n",
          f);
    fputs("{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"edge/x/own\","
          "\"id\":\"own-7\",\"time\":\"2026-01-01T00:00:00Z\",\"subject\":\"globex\",\"data\":{"
          "\"seq\":7,\"site\":\"x\",\"model\":\"m\",\"input_tokens\":1,\"cached_tokens\":0,"
          "\"output_tokens\":2,\"gpu_us\":3}}\n",
          f);
    fputs("{\"subject\":\"acme\",\"id\":\"x\",\"data\":{\"model\":\"m1\",\"input_tokens\":5,"
          "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}\n",
          f);
    fputs("{\"subject\":\"acme\",\"data\":{\"model\":\"m1\",\"input_tokens\":1.5,"
          "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}\n",
          f);
    fclose(f);
    int rc = sh("'%s' emit --brokers '%s' --topic '%s' --source edge/t/node-9 --site t "
                "--spool-dir '%s/spool' < '%s' > '%s/out' 2> '%s/err'",
                GM_GRIDMETER, gm_test_brokers(), topic, dir, in, dir, dir);
    char path[400];
    snprintf(path, sizeof path, "%s/out", dir);
    char *out = slurp(path);
    snprintf(path, sizeof path, "%s/err", dir);
    char *err = slurp(path);
    ck_assert_msg(rc == 1, "exit %d (two lines are invalid)\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "2 recorded") && strstr(out, "1 sent with their own") &&
                      strstr(out, "2 invalid") && strstr(out, "all acknowledged"),
                  "%s", out);
    ck_assert_msg(strstr(err, "line 4: data.seq: give id and data.seq together"), "%s", err);
    ck_assert_msg(strstr(err, "line 5: ") && strstr(err, "data.input_tokens"), "%s", err);
    free(out);
    free(err);

    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 3, 30000, &m);
    ck_assert_uint_eq(got, 3);
    int assigned = 0, own = 0;
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        ck_assert_int_eq(gm_event_decode(m[i].payload, m[i].len, &ev, NULL, 0), 0);
        if (!strcmp(ev.source, "edge/x/own")) {
            ck_assert_str_eq(ev.id, "own-7");
            ck_assert_uint_eq(ev.seq, 7);
            own++;
        } else {
            ck_assert_str_eq(ev.source, "edge/t/node-9");
            ck_assert_str_eq(ev.site, "t");
            char id[64];
            gm_node_event_id(ev.source, ev.seq, id, sizeof id);
            ck_assert_str_eq(ev.id, id);
            ck_assert(ev.seq == 1 || ev.seq == 2);
            assigned++;
        }
    }
    ck_assert_int_eq(assigned, 2);
    ck_assert_int_eq(own, 1);
    tn_free(m, got);
}
END_TEST

/* `gridmeter emit --require-state` on a spool without state (a re-imaged node) exits 1 with
 * the documented reason, records nothing; `--new-epoch` then sends the events in a new
 * epoch, seq 1, with ids that name it (docs/node-client.md "State loss and epochs"). */
START_TEST(test_emit_on_a_lost_spool_refuses_or_starts_a_new_epoch)
{
    char in[400], path[400];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    FILE *f = fopen(in, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"subject\":\"acme\",\"data\":{\"model\":\"m1\",\"input_tokens\":5,\"cached_tokens\":0,"
          "\"output_tokens\":7,\"gpu_us\":9}}\n",
          f);
    fclose(f);
    int rc = sh("'%s' emit --brokers '%s' --topic '%s' --source edge/t/node-8 --site t "
                "--spool-dir '%s/lost' --require-state < '%s' > '%s/out' 2> '%s/err'",
                GM_GRIDMETER, gm_test_brokers(), topic, dir, in, dir, dir);
    snprintf(path, sizeof path, "%s/err", dir);
    char *err = slurp(path);
    ck_assert_msg(rc == 1, "exit %d\n%s", rc, err);
    ck_assert_msg(strstr(err, "gridmeter emit: node edge/t/node-8: spool ") &&
                      strstr(err, "holds no state") &&
                      strstr(err, "Start a new epoch with --new-epoch (its events are data.epoch"),
                  "%s", err);
    free(err);
    /* a refusal leaves no state behind: it refuses again */
    rc = sh("'%s' emit --brokers '%s' --topic '%s' --source edge/t/node-8 --site t "
            "--spool-dir '%s/lost' --require-state < '%s' > '%s/out' 2> '%s/err'",
            GM_GRIDMETER, gm_test_brokers(), topic, dir, in, dir, dir);
    ck_assert_int_eq(rc, 1);
    rc = sh("'%s' emit --brokers '%s' --topic '%s' --source edge/t/node-8 --site t "
            "--spool-dir '%s/lost' --require-state --new-epoch < '%s' > '%s/out' 2> '%s/err'",
            GM_GRIDMETER, gm_test_brokers(), topic, dir, in, dir, dir);
    err = slurp(path);
    ck_assert_msg(rc == 0, "exit %d\n%s", rc, err);
    ck_assert_msg(strstr(err, "node state: a new epoch starts, seqs from 1"), "%s", err);
    free(err);
    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 1, 30000, &m);
    ck_assert_uint_eq(got, 1);
    gm_event ev;
    ck_assert_int_eq(gm_event_decode(m[0].payload, m[0].len, &ev, NULL, 0), 0);
    ck_assert_uint_eq(ev.seq, 1);
    ck_assert_int_gt(ev.epoch, 0);
    char id[GM_EVENT_ID_MAX + 1];
    gm_node_event_id_epoch(ev.source, (uint64_t)ev.epoch, 1, id, sizeof id);
    ck_assert_str_eq(ev.id, id);
    ck_assert_ptr_nonnull(strstr(ev.id, "node-8-e"));
    tn_free(m, got);
}
END_TEST

static int64_t num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "manifest: %s is not a number", k);
    return (int64_t)v->valuedouble;
}

START_TEST(test_what_loadgen_sends_reconciles_exactly_with_its_manifest)
{
    int rc = sh("'%s' loadgen --brokers '%s' --topic '%s' --spool-dir '%s/spool' --count 6000 "
                "--start 2026-10-31T23:50:00Z --rate 5 --sites 3 --nodes-per-site 2 "
                "--tenants 4 --duplicates 0.03 --malformed 0.02 --seed 5 --manifest '%s/m.json' "
                "> '%s/out' 2>&1",
                GM_GRIDMETER, gm_test_brokers(), topic, dir, dir, dir);
    char path[400];
    snprintf(path, sizeof path, "%s/out", dir);
    char *out = slurp(path);
    ck_assert_msg(rc == 0, "loadgen exit %d:\n%s", rc, out);
    free(out);
    snprintf(path, sizeof path, "%s/m.json", dir);
    char *text = slurp(path);
    cJSON *man = cJSON_Parse(text);
    ck_assert_msg(man != NULL, "manifest is not JSON:\n%s", text);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(man, "complete")));
    int64_t valid = num(man, "valid_distinct"), dups = num(man, "duplicates_sent"),
            bad = num(man, "malformed_sent");
    ck_assert_int_eq(valid + dups + bad, 6000);
    ck_assert_int_gt(dups, 0);
    ck_assert_int_gt(bad, 0);

    tn_msg *m;
    size_t got = tn_consume(gm_test_brokers(), topic, 6000, 60000, &m);
    ck_assert_uint_ge(got, 6000);
    /* Reconcile: decode, drop malformed, keep the first copy of each (source, id). */
    typedef struct {
        char key[GM_EVENT_SOURCE_MAX + GM_EVENT_ID_MAX + 2];
    } seen_key;
    seen_key *seen = gm_xcalloc(got, sizeof *seen);
    size_t n_seen = 0;
    int64_t malformed = 0, extra = 0, in = 0, cached = 0, outp = 0, gpu = 0, acme_in = 0;
    int64_t oct_events = 0, nov_events = 0;
    for (size_t i = 0; i < got; i++) {
        gm_event ev;
        if (gm_event_decode(m[i].payload, m[i].len, &ev, NULL, 0)) {
            malformed++;
            continue;
        }
        char k[sizeof seen->key];
        snprintf(k, sizeof k, "%s#%s", ev.source, ev.id);
        bool dup = false;
        for (size_t j = 0; j < n_seen && !dup; j++)
            dup = !strcmp(seen[j].key, k);
        if (dup) {
            extra++;
            continue;
        }
        memcpy(seen[n_seen++].key, k, sizeof k);
        in += ev.input_tokens;
        cached += ev.cached_tokens;
        outp += ev.output_tokens;
        gpu += ev.gpu_us;
        if (!strcmp(ev.tenant, "acme"))
            acme_in += ev.input_tokens;
        if (gm_month_start(ev.time_us) == gm_month_start(INT64_C(1793490000) * GM_US_PER_SEC))
            oct_events++;
        else
            nov_events++;
    }
    ck_assert_int_eq(malformed, bad);
    ck_assert_int_eq((int64_t)n_seen, valid);
    ck_assert_int_ge(extra, dups); /* at least the loadgen's re-sends */
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(man, "totals");
    ck_assert_int_eq(num(tot, "input_tokens"), in);
    ck_assert_int_eq(num(tot, "cached_tokens"), cached);
    ck_assert_int_eq(num(tot, "output_tokens"), outp);
    ck_assert_int_eq(num(tot, "gpu_us"), gpu);
    const cJSON *acme = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(man, "by_tenant"), "acme");
    ck_assert_int_eq(num(acme, "input_tokens"), acme_in);
    /* the simulated clock crossed a month boundary: both months have events */
    int64_t m_oct = 0, m_nov = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(man, "by_month_tenant_model_site"))
    {
        const char *month = cJSON_GetObjectItemCaseSensitive(row, "month")->valuestring;
        int64_t e = num(cJSON_GetObjectItemCaseSensitive(row, "totals"), "events");
        if (!strcmp(month, "2026-10"))
            m_oct += e;
        else if (!strcmp(month, "2026-11"))
            m_nov += e;
    }
    ck_assert_int_gt(m_oct, 0);
    ck_assert_int_gt(m_nov, 0);
    ck_assert_int_eq(m_oct, oct_events);
    ck_assert_int_eq(m_nov, nov_events);
    free(seen);
    tn_free(m, got);
    cJSON_Delete(man);
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("node_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 180);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_emit_assigns_id_and_seq_keeps_given_ones_and_refuses_half);
    tcase_add_test(tc, test_what_loadgen_sends_reconciles_exactly_with_its_manifest);
    tcase_add_test(tc, test_emit_on_a_lost_spool_refuses_or_starts_a_new_epoch);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
