/* The node agent's requests, answered precisely, with nothing else lost or changed: every test
 * runs an agent in this process against a broker address where nothing listens (so nothing
 * leaves the spool), sends requests over its Unix socket (HTTP, libcurl), and after closing the
 * agent reads its spool back: exactly the events answered as accepted are there, in order, with
 * the seqs the answers gave, and nothing else. */
#include "gm_agent.h"
#include "support.h"
#include "test_agent_gpu_sim.h"
#include "test_agent_util.h"
#include "test_node_util.h"

#include <pthread.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SRC "edge/fra1/node-017"

static char dir[256], spool[300], sock[300], brokers[64];

static const char *EV = "{\"subject\":\"acme\",\"data\":{\"model\":\"llama-3.1-8b-instruct\","
                        "\"request_id\":\"r-%d\",\"input_tokens\":%d,\"cached_tokens\":0,"
                        "\"output_tokens\":7,\"gpu_us\":9}}";

static void setup(void)
{
    tn_tmpdir(dir, sizeof dir, "agent");
    snprintf(spool, sizeof spool, "%s/spool", dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", dir);
    snprintf(brokers, sizeof brokers, "127.0.0.1:%d", gm_test_free_port()); /* nobody there */
}

static void teardown(void)
{
    ta_close();
    tn_rmdir(dir);
}

static void config(gm_agent_config *c)
{
    gm_agent_config_init(c);
    c->node.brokers = brokers;
    c->node.source = SRC;
    c->node.site = "fra1";
    c->node.spool_dir = spool;
    c->node.close_timeout_ms = 100;
    c->socket_path = sock;
}

static gm_agent *open_agent(const gm_agent_config *c)
{
    gm_agent *a = NULL;
    char err[512];
    ck_assert_msg(gm_agent_open(c, &a, err, sizeof err) == 0, "%s", err);
    return a;
}

static gm_agent *open_default(void)
{
    gm_agent_config c;
    config(&c);
    return open_agent(&c);
}

static void check_close(gm_agent *a)
{
    char err[512];
    ck_assert_msg(gm_agent_check(a, err, sizeof err) == 0, "%s", err);
    gm_agent_close(a);
}

static void post(const char *ctype, const char *path, const char *body, ta_resp *r)
{
    ta_request(sock, 0, NULL, path ? path : "/v1/events", ctype, body, strlen(body), r);
}

/* n events, JSON lines, request ids r-<first>.. */
static char *lines(int first, int n)
{
    size_t cap = (size_t)n * 200 + 1, len = 0;
    char *b = gm_xmalloc(cap);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(b + len, cap - len, EV, first + i, 100 + i), b[len++] = '\n';
    b[len] = '\0';
    return b;
}

/* The spool's events (payloads), in lsn order; the agent must be closed. */
static size_t spool_events(const char *d, gm_event **out)
{
    gm_spool_config sc = {.dir = d};
    gm_spool *sp = NULL;
    char err[512];
    ck_assert_msg(gm_spool_open(&sc, &sp, err, sizeof err) == 0, "%s", err);
    size_t n = 0, cap = 64;
    gm_event *ev = gm_xmalloc(cap * sizeof *ev);
    gm_spool_rec recs[256];
    size_t k;
    while ((k = gm_spool_take(sp, recs, 256)) > 0) {
        for (size_t i = 0; i < k; i++) {
            if (n == cap)
                ev = gm_xrealloc(ev, (cap *= 2) * sizeof *ev);
            ck_assert_msg(
                gm_event_decode(recs[i].payload, recs[i].payload_len, &ev[n], err, sizeof err) == 0,
                "spooled record %zu: %s", n, err);
            ck_assert_int_eq((int)recs[i].key_len, (int)strlen(ev[n].source));
            ck_assert(!memcmp(recs[i].key, ev[n].source, recs[i].key_len));
            n++;
        }
    }
    ck_assert_msg(gm_spool_check(sp, err, sizeof err) == 0, "%s", err);
    gm_spool_close(sp);
    *out = ev;
    return n;
}

START_TEST(test_events_without_id_and_seq_get_them_and_are_spooled_in_order)
{
    gm_agent *a = open_default();
    char *body = lines(0, 100);
    ta_resp r;
    post("application/x-ndjson", NULL, body, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 100);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 0);
    ck_assert_msg(strstr(r.body, "\"seqs\":[{\"source\":\"" SRC "\",\"first\":1,\"last\":100}]"),
                  "%s", r.body);
    ck_assert(strstr(r.body, "\"durable\":\"spool\""));
    ta_resp_free(&r);
    free(body);
    /* a CloudEvents batch continues the seqs */
    char batch[1024];
    snprintf(
        batch, sizeof batch, "[%s ,\n %s]",
        "{\"subject\":\"globex\",\"data\":{\"model\":\"m\","
        "\"input_tokens\":1,\"cached_tokens\":2,\"output_tokens\":3,\"gpu_us\":4}}",
        "{\"subject\":\"initech\",\"time\":\"2026-11-27T22:00:00Z\",\"data\":{\"site\":\"ams1\","
        "\"model\":\"m\",\"input_tokens\":1,\"cached_tokens\":2,\"output_tokens\":3,"
        "\"gpu_us\":4}}");
    post("application/cloudevents-batch+json; charset=utf-8", NULL, batch, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"first\":101,\"last\":102"), "%s", r.body);
    ta_resp_free(&r);
    /* one event, application/cloudevents+json */
    char one[512];
    snprintf(one, sizeof one, EV, 777, 5);
    post("application/cloudevents+json", NULL, one, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"first\":103,\"last\":103"), "%s", r.body);
    ta_resp_free(&r);
    check_close(a);

    gm_event *ev;
    size_t n = spool_events(spool, &ev);
    ck_assert_uint_eq(n, 103);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(ev[i].seq, i + 1);
        ck_assert_str_eq(ev[i].source, SRC);
        char id[GM_EVENT_ID_MAX + 1];
        gm_node_event_id(SRC, i + 1, id, sizeof id);
        ck_assert_str_eq(ev[i].id, id);
    }
    ck_assert_str_eq(ev[0].request_id, "r-0");
    ck_assert_int_eq(ev[99].input_tokens, 199);
    ck_assert_str_eq(ev[99].site, "fra1");
    ck_assert_str_eq(ev[100].tenant, "globex");
    ck_assert_str_eq(ev[101].site, "ams1"); /* what the event has is kept */
    ck_assert_int_eq(ev[101].time_us, INT64_C(1795816800000000));
    ck_assert_str_eq(ev[102].request_id, "r-777");
    free(ev);
}
END_TEST

START_TEST(test_one_bad_event_among_good_ones_is_named_and_the_others_are_recorded)
{
    gm_agent *a = open_default();
    char *good = lines(0, 4);
    /* lines: good, good, <bad>, blank, good, good: the bad one is index 2, line 3 */
    char body[4096];
    char *l2 = strchr(strchr(good, '\n') + 1, '\n') + 1;
    snprintf(body, sizeof body, "%.*s%s\n\n%s", (int)(l2 - good), good,
             "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":1.5,"
             "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}",
             l2);
    ta_resp r;
    post("application/x-ndjson", NULL, body, &r);
    ck_assert_int_eq(r.status, 200); /* partial: the good ones are in */
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 4);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 1);
    ck_assert_msg(strstr(r.body,
                         "\"errors\":[{\"index\":2,\"line\":3,\"field\":\"data.input_tokens\","
                         "\"rule\":\"must be an integer between 0 and 2^53-1, got 1.5\""),
                  "%s", r.body);
    ck_assert(!strstr(r.body, "to-be-assigned")); /* no placeholder id in the answer */
    ck_assert(strstr(r.body, "\"first\":1,\"last\":4"));
    ta_resp_free(&r);
    /* every kind of bad event in one batch, each named */
    const char *batch = "[{\"subject\":\"acme\"},"
                        "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":1,"
                        "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9,\"tokens\":1}},"
                        "{\"subject\":\"ac me\",\"data\":{}},"
                        "{\"type\":\"gridmeter.gpu.v1\",\"subject\":\"acme\",\"data\":{}},"
                        "{\"subject\":\"acme\",\"subject\":\"acme\"},"
                        "{\"id\":\"x\",\"subject\":\"acme\",\"data\":{}},"
                        "7,"
                        "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":1,"
                        "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}]";
    post("application/cloudevents-batch+json", NULL, batch, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 1);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 7);
    const char *want[] = {
        "{\"index\":0,\"field\":\"data\",\"rule\":\"is required\"",
        "{\"index\":1,\"field\":\"data.tokens\",\"rule\":\"is not a field of gridmeter.usage.v1",
        "{\"index\":2,\"field\":\"subject\",\"rule\":\"must use only",
        "{\"index\":3,\"field\":\"data.gpu_us\"", /* the decoder's rules come first */
        "{\"index\":4,\"field\":\"subject\",\"rule\":\"duplicate key\"",
        "{\"index\":5,\"field\":\"data.seq\",\"rule\":\"give id and data.seq together",
        "{\"index\":6,\"field\":\"message\"",
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(want); i++)
        ck_assert_msg(strstr(r.body, want[i]), "missing %s in %s", want[i], r.body);
    ck_assert(strstr(r.body, "\"first\":5,\"last\":5"));
    ta_resp_free(&r);
    /* all bad: 422, nothing recorded */
    post("application/x-ndjson", NULL, "{\"subject\":\"acme\"}\n{}\n", &r);
    ck_assert_int_eq(r.status, 422);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 0);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 2);
    ta_resp_free(&r);
    check_close(a);
    gm_event *ev;
    size_t n = spool_events(spool, &ev);
    ck_assert_uint_eq(n, 5);
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(ev[i].seq, i + 1);
    ck_assert_str_eq(ev[2].request_id, "r-2");
    ck_assert_str_eq(ev[3].request_id, "r-3");
    free(ev);
    free(good);
}
END_TEST

START_TEST(test_a_gpu_window_and_a_wrong_source_are_refused_with_the_agents_rule)
{
    gm_agent *a = open_default();
    ta_resp r;
    post("application/json", NULL,
         "{\"type\":\"gridmeter.gpu.v1\",\"id\":\"w-1\",\"subject\":\"acme\",\"data\":{\"seq\":1,"
         "\"device\":\"gpu0\",\"window_start\":\"2026-11-27T22:00:00Z\",\"window_end\":"
         "\"2026-11-27T22:00:10Z\",\"policy\":\"kernel-share-v1\",\"kernels\":1,\"gpu_us\":5,"
         "\"unattributed_us\":0}}",
         &r);
    ck_assert_int_eq(r.status, 422);
    ck_assert_msg(strstr(r.body, "\"field\":\"type\",\"rule\":\"must be \\\"gridmeter.usage.v1\\\" "
                                 "here"),
                  "%s", r.body);
    ck_assert(strstr(r.body, "\"id\":\"w-1\""));
    ta_resp_free(&r);
    post("application/json", NULL,
         "{\"source\":\"edge/fra1/other\",\"subject\":\"acme\",\"data\":{\"model\":\"m\","
         "\"input_tokens\":1,\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}",
         &r);
    ck_assert_int_eq(r.status, 422);
    ck_assert_msg(strstr(r.body, "\"field\":\"source\",\"rule\":\"must be this agent's source"),
                  "%s", r.body);
    ta_resp_free(&r);
    /* the caller's own numbering for the agent's source would collide with its seqs */
    post("application/json", NULL,
         "{\"id\":\"n-1\",\"subject\":\"acme\",\"data\":{\"seq\":1,\"model\":\"m\","
         "\"input_tokens\":1,\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}",
         &r);
    ck_assert_int_eq(r.status, 422);
    ck_assert_msg(strstr(r.body, "\"field\":\"data.seq\",\"rule\":\"the agent numbers source"),
                  "%s", r.body);
    ta_resp_free(&r);
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 0);
    free(ev);
}
END_TEST

START_TEST(test_a_gateway_records_other_sources_and_their_own_numbering_unchanged)
{
    gm_agent_config c;
    config(&c);
    c.allow_other_sources = true;
    gm_agent *a = open_agent(&c);
    ta_resp r;
    const char *body =
        "{\"source\":\"gw/a\",\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":1,"
        "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}\n"
        "{\"source\":\"gw/"
        "b\",\"id\":\"b-41\",\"time\":\"2026-11-27T22:00:00Z\",\"subject\":\"acme\","
        "\"data\":{\"seq\":41,\"model\":\"m\",\"input_tokens\":1,\"cached_tokens\":0,"
        "\"output_tokens\":7,\"gpu_us\":9}}\n"
        "{\"source\":\"gw/a\",\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":2,"
        "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}\n"
        "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":3,"
        "\"cached_tokens\":0,\"output_tokens\":7,\"gpu_us\":9}}\n";
    post("application/x-ndjson", NULL, body, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 4);
    ck_assert_int_eq(ta_json_int(r.body, "numbered_by_caller"), 1);
    ck_assert_msg(strstr(r.body, "{\"source\":\"gw/a\",\"first\":1,\"last\":2}") &&
                      strstr(r.body, "{\"source\":\"" SRC "\",\"first\":1,\"last\":1}"),
                  "%s", r.body);
    ta_resp_free(&r);
    check_close(a);
    gm_event *ev;
    size_t n = spool_events(spool, &ev);
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(ev[1].source, "gw/b");
    ck_assert_str_eq(ev[1].id, "b-41");
    ck_assert_uint_eq(ev[1].seq, 41);
    ck_assert_str_eq(ev[2].id, "a-000000000002");
    free(ev);
}
END_TEST

START_TEST(test_atomic_request_with_a_bad_event_records_nothing)
{
    gm_agent *a = open_default();
    char *good = lines(0, 3);
    char body[4096];
    snprintf(body, sizeof body, "%s{\"subject\":\"acme\",\"data\":{\"model\":\"m\"}}\n", good);
    ta_resp r;
    post("application/x-ndjson", "/v1/events?atomic=true", body, &r);
    ck_assert_int_eq(r.status, 422);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 0);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 4);
    ck_assert(strstr(r.body, "\"atomic\":true"));
    ck_assert_msg(strstr(r.body, "{\"index\":3,\"line\":4,\"field\":\"data.input_tokens\""), "%s",
                  r.body);
    ck_assert_int_eq((int)ta_count(r.body, "\"index\""), 1); /* only the bad one has a reason */
    ta_resp_free(&r);
    /* the same good events atomically: all in */
    post("application/x-ndjson", "/v1/events?atomic=true", good, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strstr(r.body, "\"first\":1,\"last\":3"));
    ta_resp_free(&r);
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 3);
    free(ev);
    free(good);
}
END_TEST

START_TEST(test_malformed_bodies_are_refused_as_a_whole_and_nothing_is_recorded)
{
    gm_agent *a = open_default();
    char one[512];
    snprintf(one, sizeof one, EV, 1, 1);
    char b1[1100], b2[1100], b3[1100], b4[1100];
    snprintf(b1, sizeof b1, "[%s", one);           /* not closed */
    snprintf(b2, sizeof b2, "[%s] x", one);        /* text after */
    snprintf(b3, sizeof b3, "%s", one);            /* not an array */
    snprintf(b4, sizeof b4, "[%s,,%s]", one, one); /* missing element */
    struct {
        const char *ct, *body, *rule;
        long status;
    } cases[] = {
        {"application/cloudevents-batch+json", b1, "the array is not closed", 400},
        {"application/cloudevents-batch+json", "[{\"subject\":\"acme\"",
         "does not end before the body does", 400},
        {"application/cloudevents-batch+json", b2, "text after the array", 400},
        {"application/cloudevents-batch+json", b3, "must be a JSON array of events", 400},
        {"application/cloudevents-batch+json", b4, "expected an event", 400},
        {"application/cloudevents-batch+json", "[{\"a\":\"\\\"]", "does not end before", 400},
        {"application/json", "[1]", "carries one event", 400},
        {"application/json", "  ", "is empty", 400},
        {"text/plain", one, "must be application/x-ndjson", 415},
        {NULL, one, "Content-Type is required", 415},
        {"application/x-ndjson; charset=latin1", one, "charset must be utf-8", 415},
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(cases); i++) {
        ta_resp r;
        post(cases[i].ct, NULL, cases[i].body, &r);
        ck_assert_msg(r.status == cases[i].status, "case %zu: %ld %s", i, r.status, r.body);
        ck_assert_msg(strstr(r.body, cases[i].rule), "case %zu: %s", i, r.body);
        ck_assert_int_eq(ta_json_int(r.body, "accepted"), 0);
        ta_resp_free(&r);
    }
    /* an empty batch is fine and records nothing */
    ta_resp r;
    post("application/cloudevents-batch+json", NULL, " [ ] ", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 0);
    ta_resp_free(&r);
    gm_agent_stats st;
    gm_agent_stats_get(a, &st);
    ck_assert_uint_eq(st.requests_bad, GM_ARRAY_LEN(cases));
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 0);
    free(ev);
}
END_TEST

START_TEST(test_oversize_bodies_and_too_many_events_are_413_and_an_oversize_event_alone_is_named)
{
    gm_agent_config c;
    config(&c);
    c.max_body_bytes = 64 * 1024;
    c.max_events = 50;
    gm_agent *a = open_agent(&c);
    ta_resp r;
    char *big = lines(0, 600); /* ~88 KiB */
    size_t bl = strlen(big);
    ck_assert_uint_gt(bl, 64 * 1024);
    ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", big, bl, &r);
    ck_assert_int_eq(r.status, 413);
    ck_assert_msg(strstr(r.body, "\"field\":\"body\",\"rule\":\"must be at most 65536 bytes"), "%s",
                  r.body);
    ta_resp_free(&r);
    free(big);
    char *many = lines(0, 51);
    post("application/x-ndjson", NULL, many, &r);
    ck_assert_int_eq(r.status, 413);
    ck_assert_msg(strstr(r.body, "must hold at most 50 events"), "%s", r.body);
    ta_resp_free(&r);
    free(many);
    /* one event over 8192 bytes among good ones: that one is refused, by its size */
    size_t cap = 20000;
    char *body = gm_xmalloc(cap);
    char one[512];
    snprintf(one, sizeof one, EV, 1, 1);
    int n = snprintf(body, cap, "%s\n{\"subject\":\"acme\",\"pad\":\"", one);
    memset(body + n, 'x', 9000);
    n += 9000;
    n += snprintf(body + n, cap - (size_t)n, "\",\"data\":{}}\n%s\n", one);
    post("application/x-ndjson", NULL, body, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 2);
    ck_assert_msg(strstr(r.body, "{\"index\":1,\"line\":2,\"field\":\"message\",\"rule\":\"must be "
                                 "at most 8192 bytes, got 9"),
                  "%s", r.body);
    ta_resp_free(&r);
    free(body);
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 2);
    free(ev);
}
END_TEST

START_TEST(test_full_spool_answers_429_with_retry_after_and_keeps_every_accepted_event)
{
    gm_agent_config c;
    config(&c);
    c.node.spool_max_bytes = 512u << 10;
    c.node.segment_bytes = 64u << 10;
    c.retry_after_s = 3;
    gm_agent *a = open_agent(&c);
    uint64_t answered = 0;
    int first = 0, full = 0;
    for (int round = 0; round < 400 && full < 3; round++) {
        char *body = lines(first, 50);
        ta_resp r;
        post("application/x-ndjson", NULL, body, &r);
        free(body);
        if (r.status == 200) {
            ck_assert_msg(full == 0, "accepted after a 429 while nothing was delivered");
            ck_assert_int_eq(ta_json_int(r.body, "accepted"), 50);
            char want[64];
            snprintf(want, sizeof want, "\"first\":%d,\"last\":%d", first + 1, first + 50);
            ck_assert_msg(strstr(r.body, want), "%s", r.body);
            answered += 50;
            first += 50;
        } else {
            ck_assert_msg(r.status == 429, "%ld %s", r.status, r.body);
            ck_assert_int_eq(r.retry_after_s, 3);
            ck_assert_int_eq(ta_json_int(r.body, "accepted"), 0);
            ck_assert_int_eq(ta_json_int(r.body, "rejected"), 50);
            ck_assert_msg(strstr(r.body, "\"field\":\"spool\",\"rule\":\"full:"), "%s", r.body);
            full++;
        }
        ta_resp_free(&r);
    }
    ck_assert_int_eq(full, 3);
    ck_assert_uint_gt(answered, 500); /* it took events until (nearly) the bound */
    ta_resp r;
    ta_request(sock, 0, NULL, "/healthz", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert(strstr(r.body, "\"status\":\"full\""));
    ta_resp_free(&r);
    gm_agent_stats st;
    gm_agent_stats_get(a, &st);
    ck_assert_uint_eq(st.requests_full, 3);
    ck_assert_uint_eq(st.rejected_full, 150);
    ck_assert_uint_le(st.node.spool_bytes, c.node.spool_max_bytes);
    check_close(a);
    gm_event *ev;
    size_t n = spool_events(spool, &ev);
    ck_assert_uint_eq(n, answered); /* every accepted event, none of the refused */
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(ev[i].seq, i + 1);
    free(ev);
    /* a restart continues the seqs after the last accepted one */
    gm_agent *b = open_agent(&c);
    char *body = lines(0, 1);
    /* the spool sealed its last segment at close: a request may fit again, and takes the
     * next seq; or it does not, and no seq is used */
    post("application/x-ndjson", NULL, body, &r);
    if (r.status == 200) {
        char want[64];
        snprintf(want, sizeof want, "\"first\":%llu,", (unsigned long long)answered + 1);
        ck_assert_msg(strstr(r.body, want), "%s", r.body);
    } else {
        ck_assert_int_eq(r.status, 429);
    }
    ta_resp_free(&r);
    free(body);
    check_close(b);
}
END_TEST

START_TEST(test_durability_disk_answers_after_the_fsync)
{
    gm_agent_config c;
    config(&c);
    c.durability = GM_AGENT_DURABLE_DISK;
    gm_agent *a = open_agent(&c);
    char *body = lines(0, 20);
    ta_resp r;
    for (int i = 0; i < 5; i++) {
        post("application/x-ndjson", NULL, body, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strstr(r.body, "\"durable\":\"disk\""), "%s", r.body);
        ta_resp_free(&r);
    }
    free(body);
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 100);
    free(ev);
}
END_TEST

START_TEST(test_healthz_metrics_and_the_loopback_port_answer_like_the_socket)
{
    gm_agent_config c;
    config(&c);
    c.listen_addr = "127.0.0.1";
    c.listen_port = 0;
    gm_agent *a = open_agent(&c);
    int port = gm_agent_port(a);
    ck_assert_int_gt(port, 0);
    char *body = lines(0, 10);
    ta_resp r;
    ta_request(NULL, port, NULL, "/v1/events", "application/x-ndjson", body, strlen(body), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strstr(r.body, "\"first\":1,\"last\":10"));
    ta_resp_free(&r);
    post("application/x-ndjson", NULL, body, &r);
    ck_assert(strstr(r.body, "\"first\":11,\"last\":20"));
    ta_resp_free(&r);
    post("application/x-ndjson", NULL, "{}\n", &r);
    ta_resp_free(&r);
    free(body);
    ta_request(NULL, port, NULL, "/healthz", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"status\":\"ok\"") && strstr(r.body, "\"unacked\":20") &&
                      strstr(r.body, "\"gpu\":\"off\""),
                  "%s", r.body);
    ta_resp_free(&r);
    ta_request(sock, 0, NULL, "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    const char *want[] = {"gridmeter_agent_events_accepted_total 20\n",
                          "gridmeter_agent_events_rejected_total 1\n",
                          "gridmeter_agent_unacked_events 20\n",
                          "gridmeter_agent_requests_total{path=\"events\",code=\"2xx\"} 2\n",
                          "gridmeter_agent_requests_total{path=\"events\",code=\"4xx\"} 1\n",
                          "gridmeter_agent_delivery_seconds_bucket{le=\"+Inf\"} 0\n",
                          "gridmeter_agent_spool_max_bytes 1073741824\n"};
    for (size_t i = 0; i < GM_ARRAY_LEN(want); i++)
        ck_assert_msg(strstr(r.body, want[i]), "missing %s", want[i]);
    ck_assert(strstr(r.body, "gridmeter_agent_spool_bytes "));
    ta_resp_free(&r);
    ta_request(sock, 0, "DELETE", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 405);
    ta_resp_free(&r);
    ta_request(sock, 0, NULL, "/v2/events", "application/json", "{}", 2, &r);
    ck_assert_int_eq(r.status, 404);
    ta_resp_free(&r);
    ta_request(sock, 0, NULL, "/v1/gpu/steps", "application/json", "{}", 2, &r);
    ck_assert_int_eq(r.status, 404);
    ck_assert(strstr(r.body, "GPU accounting is off"));
    ta_resp_free(&r);
    check_close(a);
}
END_TEST

START_TEST(test_bad_configurations_are_refused_with_the_reason)
{
    gm_agent_config c;
    gm_agent *a = NULL;
    char err[512];
    config(&c);
    c.listen_addr = "0.0.0.0";
    ck_assert_int_eq(gm_agent_open(&c, &a, err, sizeof err), GM_ECONFIG);
    ck_assert_msg(strstr(err, "must be a loopback address"), "%s", err);
    config(&c);
    c.listen_addr = "::1";
    c.socket_path = NULL;
    int rc = gm_agent_open(&c, &a, err, sizeof err); /* may lack IPv6: then the reason says so */
    if (rc == 0) {
        ck_assert_int_gt(gm_agent_port(a), 0);
        gm_agent_close(a);
    }
    config(&c);
    c.node.source = "edge fra1";
    ck_assert_int_eq(gm_agent_open(&c, &a, err, sizeof err), GM_ECONFIG);
    ck_assert_msg(strstr(err, "source must be"), "%s", err);
    config(&c);
    c.socket_path = NULL;
    ck_assert_int_eq(gm_agent_open(&c, &a, err, sizeof err), GM_ECONFIG);
    ck_assert_msg(strstr(err, "give a Unix socket path"), "%s", err);
    /* a live socket belongs to another agent; a stale one (killed agent) is replaced */
    config(&c);
    gm_agent *first = open_agent(&c);
    char spool2[320];
    snprintf(spool2, sizeof spool2, "%s/spool2", dir);
    gm_agent_config c2;
    config(&c2);
    c2.node.spool_dir = spool2;
    ck_assert_int_eq(gm_agent_open(&c2, &a, err, sizeof err), GM_ECONFLICT);
    ck_assert_msg(strstr(err, "another process answers on"), "%s", err);
    gm_agent_close(first);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(sock), sizeof sa.sun_path);
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* a socket file nobody listens on */
    a = open_agent(&c2);
    struct stat sb;
    ck_assert_int_eq(stat(sock, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0660);
    gm_agent_close(a);
    ck_assert_int_ne(stat(sock, &sb), 0); /* removed at close */
    /* one agent per spool (the node client's lock) */
    config(&c);
    gm_agent *one = open_agent(&c);
    c.socket_path = NULL;
    c.listen_addr = "127.0.0.1";
    ck_assert_int_ne(gm_agent_open(&c, &a, err, sizeof err), 0);
    gm_agent_close(one);
}
END_TEST

START_TEST(test_in_process_submit_answers_like_http)
{
    gm_agent *a = open_default();
    char *body = lines(0, 5);
    int status = 0, ra = 0;
    char *answer = NULL;
    gm_agent_submit(a, "/v1/events", "application/x-ndjson", NULL, body, strlen(body), &status,
                    &answer, &ra);
    ck_assert_int_eq(status, 200);
    ck_assert(strstr(answer, "\"first\":1,\"last\":5"));
    free(answer);
    gm_agent_submit(a, "/v1/events", "application/x-ndjson", "atomic=true", "{}\n", 3, &status,
                    &answer, &ra);
    ck_assert_int_eq(status, 422);
    free(answer);
    free(body);
    check_close(a);
}
END_TEST

/* ---- GPU accounting ------------------------------------------------------------------ */

typedef struct poster {
    const char *body;
    ta_resp r;
} poster;

static void *post_thread(void *arg)
{
    poster *p = arg;
    ta_request(sock, 0, NULL, "/v1/events", "application/x-ndjson", p->body, strlen(p->body),
               &p->r);
    ta_close();
    return NULL;
}

static void wait_waiting(gm_agent *a, uint64_t n)
{
    int64_t until = gm_mono_us() + 30 * GM_US_PER_SEC;
    gm_agent_stats st;
    for (gm_agent_stats_get(a, &st); st.gpu_waiting != n; gm_agent_stats_get(a, &st)) {
        ck_assert_msg(gm_mono_us() < until, "%llu requests wait, expected %llu",
                      (unsigned long long)st.gpu_waiting, (unsigned long long)n);
        usleep(5000);
    }
}

START_TEST(test_gpu_feed_fills_each_requests_gpu_us_and_writes_the_windows_of_the_rules)
{
    const int64_t W_US = GM_US_PER_SEC, GRACE_US = 200000;
    const int64_t base = INT64_C(1795000000000000); /* pinned: 2026-11-18T…Z, a whole second */
    gm_clock_freeze_us(base - 5 * GM_US_PER_SEC);
    sim sm;
    sim_make(&sm, base);
    gm_agent_config c;
    config(&c);
    c.gpu = GM_AGENT_GPU_FEED;
    c.gpu_conf.window_ns = (uint64_t)W_US * 1000u;
    c.gpu_conf.grace_ns = (uint64_t)GRACE_US * 1000u;
    c.gpu_conf.flush_ms = 10;
    gm_agent *a = open_agent(&c);
    /* the server's steps, before their windows close */
    char *steps = sim_steps_body(&sm, true);
    ta_resp r;
    post("application/x-ndjson", "/v1/gpu/steps", steps, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 0);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), (long long)ta_count(steps, "\n"));
    ta_resp_free(&r);
    free(steps);
    /* every step ran; the usage events come, without gpu_us: they wait for their windows */
    int64_t arrival = sm.end_us + 1000;
    gm_clock_freeze_us(arrival);
    char *usage = sim_usage_body(&sm);
    poster p = {.body = usage};
    pthread_t th;
    pthread_create(&th, NULL, post_thread, &p);
    wait_waiting(a, 1);
    char err[512];
    ck_assert_msg(gm_agent_check(a, err, sizeof err) == 0, "%s", err);
    /* the window holding the arrival closes: the request is answered */
    gm_clock_freeze_us((arrival / W_US + 1) * W_US + GRACE_US + 1000);
    pthread_join(th, NULL);
    ck_assert_msg(p.r.status == 200, "%ld %s", p.r.status, p.r.body);
    ck_assert_int_eq(ta_json_int(p.r.body, "accepted"), SIM_REQS + 1);
    ck_assert_int_eq(ta_json_int(p.r.body, "gpu_filled"), SIM_REQS + 1);
    ta_resp_free(&p.r);
    free(usage);
    gm_agent_stats st;
    gm_agent_stats_get(a, &st);
    ck_assert_uint_eq(st.gpu_filled, SIM_REQS + 1);
    ck_assert_uint_eq(st.gpu_unmatched, 1); /* req-never */
    ta_request(sock, 0, NULL, "/healthz", NULL, NULL, 0, &r);
    ck_assert_msg(strstr(r.body, "\"gpu\":\"feed\""), "%s", r.body);
    ta_resp_free(&r);
    check_close(a); /* the last close reports the rest */

    gm_gpu_result want;
    sim_expect(&sm, (uint64_t)W_US * 1000u, &want);
    gm_event *ev;
    size_t n = spool_events(spool, &ev);
    ck_assert_uint_eq(n, SIM_REQS + 1);
    for (size_t i = 0; i < n; i++) {
        int64_t us = sim_request_us(&want, ev[i].tenant, ev[i].request_id);
        ck_assert_msg(ev[i].gpu_us == (us < 0 ? 0 : us), "%s %s: gpu_us %lld, the rules say %lld",
                      ev[i].tenant, ev[i].request_id, (long long)ev[i].gpu_us, (long long)us);
        if (i < SIM_REQS)
            ck_assert_int_gt(ev[i].gpu_us, 0);
    }
    free(ev);
    char gspool[400];
    snprintf(gspool, sizeof gspool, "%s/gpu", spool);
    n = spool_events(gspool, &ev);
    sim_check_windows(&want, ev, n, SRC "/gpu", "fra1");
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(ev[i].seq, i + 1);
    free(ev);
    gm_gpu_result_free(&want);
}
END_TEST

START_TEST(test_a_collector_that_stops_closing_windows_does_not_hold_answers_for_ever)
{
    gm_clock_freeze_us(INT64_C(1795000000000000)); /* the feed's clock never moves */
    gm_agent_config c;
    config(&c);
    c.gpu = GM_AGENT_GPU_FEED;
    c.gpu_conf.flush_ms = 10;
    c.gpu_max_wait_ms = 300;
    gm_agent *a = open_agent(&c);
    ta_resp r;
    post("application/x-ndjson", NULL,
         "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"request_id\":\"x\","
         "\"input_tokens\":1,\"cached_tokens\":0,\"output_tokens\":1}}\n",
         &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 1);
    ta_resp_free(&r);
    gm_agent_stats st;
    gm_agent_stats_get(a, &st);
    ck_assert_uint_eq(st.gpu_wait_timeouts, 1);
    ck_assert_uint_eq(st.gpu_waiting, 0);
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 1);
    ck_assert_int_eq(ev[0].gpu_us, 0);
    free(ev);
}
END_TEST

START_TEST(test_gpu_steps_are_refused_precisely_and_good_ones_kept)
{
    gm_agent_config c;
    config(&c);
    c.gpu = GM_AGENT_GPU_FEED;
    gm_agent *a = open_agent(&c);
    int64_t t = gm_now_us();
    char body[4096];
    snprintf(body, sizeof body,
             "{\"step\":1,\"requests\":[{\"tenant\":\"acme\",\"request_id\":\"a\","
             "\"prefill_tokens\":5,\"decode_tokens\":0}],\"device\":0,\"start_us\":%lld,"
             "\"end_us\":%lld}\n"
             "{\"step\":1,\"requests\":[{\"tenant\":\"acme\",\"prefill_tokens\":1,"
             "\"decode_tokens\":0}],\"start_us\":%lld,\"end_us\":%lld}\n"
             "{\"step\":2,\"requests\":[{\"tenant\":\"ac me\",\"prefill_tokens\":1,"
             "\"decode_tokens\":0}],\"start_us\":%lld,\"end_us\":%lld}\n"
             "{\"step\":3,\"requests\":[{\"tenant\":\"acme\",\"prefill_tokens\":1.5,"
             "\"decode_tokens\":0}],\"start_us\":%lld,\"end_us\":%lld}\n"
             "{\"step\":4,\"requests\":[{\"tenant\":\"acme\",\"prefill_tokens\":1,"
             "\"decode_tokens\":0}],\"start_us\":%lld,\"end_us\":%lld}\n"
             "{\"step\":5,\"requests\":[{\"tenant\":\"acme\",\"prefill_tokens\":1,"
             "\"decode_tokens\":0}]}\n"
             "{\"tenant\":\"acme\"}\n"
             "{\"step\":6,\"requests\":[],\"start_us\":1,\"end_us\":2}\n"
             "{\"step\":7,\"requests\":[{\"tenant\":\"acme\",\"prefill_tokens\":1,"
             "\"decode_tokens\":0,\"tokens\":1}],\"start_us\":1,\"end_us\":2}\n"
             "{\"step\":8 \n"
             "{\"tenant\":\"globex\",\"kernels\":[{\"device\":1,\"start_us\":%lld,"
             "\"end_us\":%lld,\"resource\":\"copy\"}]}\n",
             (long long)t, (long long)t + 10, (long long)t, (long long)t + 10, (long long)t,
             (long long)t + 10, (long long)t, (long long)t + 10, (long long)t + 10, (long long)t,
             (long long)t, (long long)t + 5);
    ta_resp r;
    post("application/x-ndjson", "/v1/gpu/steps", body, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 2);
    ck_assert_int_eq(ta_json_int(r.body, "rejected"), 9);
    const char *want[] = {
        "{\"index\":1,\"field\":\"step\",\"rule\":\"step 1: manifest: already given\"}",
        "{\"index\":2,\"field\":\"requests\",\"rule\":\"step 2: request 0: tenant",
        "{\"index\":3,\"field\":\"requests[0].prefill_tokens\",\"rule\":\"must be an integer",
        "{\"index\":4,\"field\":\"end_us\",\"rule\":\"must not be before start_us\"}",
        "{\"index\":5,\"field\":\"kernels\",\"rule\":\"a feed (--gpu feed) needs",
        "{\"index\":6,\"field\":\"kernels\",\"rule\":\"tenant work needs its kernels",
        "{\"index\":7,\"field\":\"requests\",\"rule\":\"must be a non-empty array\"}",
        "{\"index\":8,\"field\":\"requests[0].tokens\",\"rule\":\"is not a field",
        "{\"index\":9,\"field\":\"message\",\"rule\":\"invalid JSON on this line\"}",
    };
    for (size_t i = 0; i < GM_ARRAY_LEN(want); i++)
        ck_assert_msg(strstr(r.body, want[i]), "missing %s in %s", want[i], r.body);
    ta_resp_free(&r);
    post("text/plain", "/v1/gpu/steps", "{}", &r);
    ck_assert_int_eq(r.status, 415);
    ta_resp_free(&r);
    post("application/json", "/v1/gpu/steps", "[{\"step\":9", &r);
    ck_assert_int_eq(r.status, 400);
    ta_resp_free(&r);
    check_close(a);
}
END_TEST

START_TEST(test_the_real_collector_without_a_gpu_fails_cleanly_and_usage_is_served)
{
    gm_agent_config c;
    config(&c);
    c.gpu = GM_AGENT_GPU_CUPTI; /* the real loader: libcuda, libcupti, a GPU */
    c.gpu_conf.window_ns = 100000000u;
    c.gpu_conf.grace_ns = 50000000u;
    c.gpu_conf.flush_ms = 20;
    gm_agent *a = open_agent(&c);
    ta_resp r;
    ta_request(sock, 0, NULL, "/healthz", NULL, NULL, 0, &r);
    bool unavailable = strstr(r.body, "\"gpu\":\"unavailable: ") != NULL;
    ck_assert_msg(unavailable || strstr(r.body, "\"gpu\":\"cupti\""), "%s", r.body);
    ck_assert_int_eq(r.status, 200); /* healthy: usage is served */
    ta_resp_free(&r);
    gm_agent_stats st;
    gm_agent_stats_get(a, &st);
    ck_assert(st.gpu_running == !unavailable);
    post("application/x-ndjson", "/v1/gpu/steps",
         "{\"step\":1,\"requests\":[{\"tenant\":\"acme\",\"prefill_tokens\":1,"
         "\"decode_tokens\":0}]}\n",
         &r);
    ck_assert_int_eq(r.status, unavailable ? 503 : 200);
    ta_resp_free(&r);
    /* without gpu_us: 0 ("unknown", the contract's word) when unavailable; with a GPU, the
     * request's kernel time, here none */
    post("application/x-ndjson", NULL,
         "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"request_id\":\"x\","
         "\"input_tokens\":1,\"cached_tokens\":0,\"output_tokens\":1}}\n"
         "{\"subject\":\"acme\",\"data\":{\"model\":\"m\",\"input_tokens\":1,"
         "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":77}}\n",
         &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_int_eq(ta_json_int(r.body, "accepted"), 2);
    ta_resp_free(&r);
    check_close(a);
    gm_event *ev;
    ck_assert_uint_eq(spool_events(spool, &ev), 2);
    ck_assert_int_eq(ev[0].gpu_us, 0);
    ck_assert_int_eq(ev[1].gpu_us, 77);
    free(ev);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent");
    TCase *t = tcase_create("requests");
    tcase_set_timeout(t, 120);
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_events_without_id_and_seq_get_them_and_are_spooled_in_order);
    tcase_add_test(t, test_one_bad_event_among_good_ones_is_named_and_the_others_are_recorded);
    tcase_add_test(t, test_a_gpu_window_and_a_wrong_source_are_refused_with_the_agents_rule);
    tcase_add_test(t, test_a_gateway_records_other_sources_and_their_own_numbering_unchanged);
    tcase_add_test(t, test_atomic_request_with_a_bad_event_records_nothing);
    tcase_add_test(t, test_malformed_bodies_are_refused_as_a_whole_and_nothing_is_recorded);
    tcase_add_test(
        t, test_oversize_bodies_and_too_many_events_are_413_and_an_oversize_event_alone_is_named);
    tcase_add_test(t, test_full_spool_answers_429_with_retry_after_and_keeps_every_accepted_event);
    tcase_add_test(t, test_durability_disk_answers_after_the_fsync);
    tcase_add_test(t, test_healthz_metrics_and_the_loopback_port_answer_like_the_socket);
    tcase_add_test(t, test_bad_configurations_are_refused_with_the_reason);
    tcase_add_test(t, test_in_process_submit_answers_like_http);
    tcase_add_test(t, test_gpu_feed_fills_each_requests_gpu_us_and_writes_the_windows_of_the_rules);
    tcase_add_test(t, test_gpu_steps_are_refused_precisely_and_good_ones_kept);
    tcase_add_test(t, test_a_collector_that_stops_closing_windows_does_not_hold_answers_for_ever);
    tcase_add_test(t, test_the_real_collector_without_a_gpu_fails_cleanly_and_usage_is_served);
    suite_add_tcase(s, t);
    return gm_test_run(s);
}
