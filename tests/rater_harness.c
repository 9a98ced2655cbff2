/* Harness for the rater's integration tests (see rater_harness.h). */
#include "rater_harness.h"
#include "gm_ledger.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *const h_tenants[H_TENANTS] = {"acme", "globex", "initech", "umbrella", "newco"};
const char *const h_models[H_MODELS] = {"llama-3.1-70b-instruct", "llama-3.1-8b-instruct",
                                        "deepseek-v3", "some-unlisted-model"};
const char *const h_sites[H_SITES] = {"fra1", "ams1", "tro1", "core-fra", "sin1", "zzz9"};

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = gm_xmalloc((size_t)n + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void import(PGconn *c, const char *file)
{
    char path[512], msg[512], err[1024];
    snprintf(path, sizeof path, "%s/examples/ratecards/%s", GM_SOURCE_DIR, file);
    size_t len;
    char *json = read_file(path, &len);
    int rc = gm_ledger_import(c, json, len, msg, sizeof msg, err, sizeof err);
    ck_assert_msg(rc == 0, "import %s: %s", file, err);
    free(json);
}

void h_db_prepare(const char *conninfo)
{
    PGconn *c = gm_test_pg_connect(conninfo);
    char err[1024];
    int rc = gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                               GM_MIGRATE_APPLY, NULL, err, sizeof err);
    ck_assert_msg(rc == 0, "migrate: %s", err);
    import(c, "list-usd-v1.json");
    import(c, "contract-acme.json");
    PQfinish(c);
}

void h_env_open(h_env *e, const char *tag, int partitions)
{
    memset(e, 0, sizeof *e);
    snprintf(e->conninfo, sizeof e->conninfo, "%s", gm_test_db_create(tag));
    h_db_prepare(e->conninfo);
    e->brokers = gm_test_brokers();
    e->partitions = partitions;
    gm_test_topic_name(tag, e->topic, sizeof e->topic);
    gm_test_topic_create(e->topic, partitions);
    snprintf(e->group, sizeof e->group, "%s.raters", e->topic);
}

void h_env_close(h_env *e)
{
    gm_test_topic_delete(e->topic);
    gm_test_db_drop(e->conninfo);
}

/* xorshift64*: deterministic traffic from a seed. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static int delivery_failures;
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        delivery_failures++;
}

static void produce_raw(rd_kafka_t *p, const char *topic, const char *key, const void *val,
                        size_t len)
{
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p, 50);
            continue;
        }
        ck_assert_msg(err == 0, "produce: %s", rd_kafka_err2str(err));
        return;
    }
}

/* Broken messages, one kind each: the rater must keep every one with its reason. */
static size_t make_malformed(int kind, const char *source, uint64_t seq, char *buf, size_t cap)
{
    switch (kind % 6) {
    case 0:
        return (size_t)snprintf(
            buf, cap,
            "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"%s\",\"id\":"
            "\"bad-%llu\",\"time\":\"2026-11-27T10:00:00Z\",\"subject\":\"acme\",\"data\":{"
            "\"seq\":%llu,\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":1.5,"
            "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":1}}",
            source, (unsigned long long)seq, (unsigned long long)seq);
    case 1:
        return (size_t)snprintf(
            buf, cap,
            "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"%s\",\"id\":"
            "\"bad-%llu\",\"time\":\"2026-11-27T10:00:00Z\",\"subject\":\"acme\",\"data\":{"
            "\"seq\":%llu,\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":-3,"
            "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":1}}",
            source, (unsigned long long)seq, (unsigned long long)seq);
    case 2:
        return (size_t)snprintf(buf, cap, "this is not json at all");
    case 3:
        return (size_t)snprintf(buf, cap,
                                "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\","
                                "\"source\":\"%s\",\"id\":\"\xff\xfe\"}",
                                source);
    case 4:
        return (size_t)snprintf(
            buf, cap,
            "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"%s\",\"id\":"
            "\"bad-%llu\",\"time\":\"2026-13-27T10:00:00Z\",\"subject\":\"acme\",\"data\":{"
            "\"seq\":%llu,\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":1,"
            "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":1}}",
            source, (unsigned long long)seq, (unsigned long long)seq);
    default:
        return (size_t)snprintf(
            buf, cap,
            "{\"specversion\":\"1.0\",\"type\":\"gridmeter.usage.v1\",\"source\":\"%s\",\"id\":"
            "\"bad-%llu\",\"time\":\"2026-11-27T10:00:00Z\",\"data\":{"
            "\"seq\":%llu,\"site\":\"fra1\",\"model\":\"m\",\"input_tokens\":1,"
            "\"cached_tokens\":0,\"output_tokens\":1,\"gpu_us\":9007199254740992}}",
            source, (unsigned long long)seq, (unsigned long long)seq);
    }
}

void h_produce(const h_env *e, const h_traffic *t, h_expect *x)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "linger.ms", "20", err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "compression.codec", "lz4", err, sizeof err) == 0);
    if (e->partitioner)
        ck_assert(rd_kafka_conf_set(conf, "partitioner", e->partitioner, err, sizeof err) == 0);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    delivery_failures = 0;

    uint64_t s = t->seed ? t->seed : 0x9e3779b97f4a7c15ULL;
    uint64_t *next_seq = gm_xcalloc((size_t)t->sources, sizeof *next_seq);
    int *src_tenant = gm_xcalloc((size_t)t->sources, sizeof *src_tenant);
    int *src_site = gm_xcalloc((size_t)t->sources, sizeof *src_site);
    for (int k = 0; t->first_seq > 0 && k < t->sources; k++)
        next_seq[k] = (uint64_t)t->first_seq - 1;
    for (int k = 0; k < t->sources; k++) {
        src_tenant[k] = (int)(rnd(&s) % H_TENANTS);
        src_site[k] = k % H_SITES;
    }
    gm_event ev;
    char buf[GM_EVENT_MAX_BYTES + 1], source[64];
    int64_t time_us = t->start_us ? t->start_us : INT64_C(1795816800000000);
    int64_t step = t->step_us ? t->step_us : 1000;
    int64_t paced_from = gm_mono_us();
    x->holes = x->holes || t->skip_seq_every > 0;
    for (int64_t i = 0; i < t->events; i++) {
        if (t->rate > 0) {
            int64_t due = paced_from + i * GM_US_PER_SEC / t->rate;
            int64_t now = gm_mono_us();
            if (due > now + 1000)
                usleep((useconds_t)(due - now));
        }
        int k = (int)(rnd(&s) % (uint64_t)t->sources);
        snprintf(source, sizeof source, "edge/%s/node-%03d", h_sites[src_site[k]],
                 k + t->source_base);
        uint64_t seq = ++next_seq[k];
        if (t->skip_seq_every > 0 && k == 0 && seq % (uint64_t)t->skip_seq_every == 0)
            seq = ++next_seq[k]; /* a hole: this seq is never sent */
        memset(&ev, 0, sizeof ev);
        ev.type = GM_EVENT_USAGE;
        snprintf(ev.source, sizeof ev.source, "%s", source);
        snprintf(ev.id, sizeof ev.id, "n%03d-%012llu", k + t->source_base, (unsigned long long)seq);
        snprintf(ev.tenant, sizeof ev.tenant, "%s", h_tenants[src_tenant[k]]);
        ev.time_us = time_us;
        time_us += step;
        ev.seq = seq;
        int mi = (int)(rnd(&s) % H_MODELS);
        snprintf(ev.site, sizeof ev.site, "%s", h_sites[src_site[k]]);
        snprintf(ev.model, sizeof ev.model, "%s", h_models[mi]);
        ev.input_tokens = (int64_t)(rnd(&s) % 4000);
        ev.cached_tokens = (int64_t)(rnd(&s) % 3 == 0 ? rnd(&s) % 2000 : 0);
        ev.output_tokens = (int64_t)(rnd(&s) % 1000);
        ev.gpu_us = (int64_t)(rnd(&s) % 200000);
        size_t len = gm_event_encode(&ev, buf, sizeof buf);
        ck_assert_msg(len > 0, "encode failed");
        produce_raw(p, e->topic, source, buf, len);
        int64_t *q = x->qty[src_tenant[k]][mi][src_site[k]];
        q[0] += ev.input_tokens;
        q[1] += ev.cached_tokens;
        q[2] += ev.output_tokens;
        q[3] += ev.gpu_us;
        x->events++;
        if (t->dup_permille && (int)(rnd(&s) % 1000) < t->dup_permille) {
            produce_raw(p, e->topic, source, buf, len); /* a node re-sending after a timeout */
            x->duplicates++;
        }
        if (t->malformed_permille && (int)(rnd(&s) % 1000) < t->malformed_permille) {
            len = make_malformed((int)x->malformed, source, seq, buf, sizeof buf);
            produce_raw(p, e->topic, source, buf, len);
            x->malformed++;
        }
        rd_kafka_poll(p, 0);
    }
    ck_assert_int_eq(rd_kafka_flush(p, 60000), 0);
    ck_assert_int_eq(delivery_failures, 0);
    rd_kafka_destroy(p);
    free(next_seq);
    free(src_tenant);
    free(src_site);
}

struct h_producer {
    const h_env *e;
    h_traffic t;
    h_expect *x;
    pthread_t th;
};

static void *producer_main(void *arg)
{
    h_producer *p = arg;
    h_produce(p->e, &p->t, p->x);
    return NULL;
}

h_producer *h_produce_start(const h_env *e, const h_traffic *t, h_expect *x)
{
    h_producer *p = gm_xcalloc(1, sizeof *p);
    p->e = e;
    p->t = *t;
    p->x = x;
    ck_assert_int_eq(pthread_create(&p->th, NULL, producer_main, p), 0);
    return p;
}

void h_produce_join(h_producer *p)
{
    pthread_join(p->th, NULL);
    free(p);
}

int h_raters_that_committed(const h_env *e)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    char *v = gm_test_pg_value(c, "SELECT count(DISTINCT rater) FROM gm.batches");
    int n = atoi(v);
    free(v);
    PQfinish(c);
    return n;
}

bool h_wait_rater_committed(const h_env *e, const char *id, int timeout_s)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    const char *params[1] = {id};
    bool done = false;
    for (int i = 0; !done && i < timeout_s * 10; i++) {
        PGresult *r = PQexecParams(c, "SELECT 1 FROM gm.batches WHERE rater = $1 LIMIT 1", 1, NULL,
                                   params, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
        done = PQntuples(r) > 0;
        PQclear(r);
        if (!done)
            usleep(100000);
    }
    PQfinish(c);
    return done;
}

pid_t h_rater_start(const h_env *e, const char *id, const char *const *extra)
{
    char db[300];
    snprintf(db, sizeof db, "--db=%s", e->conninfo);
    const char *argv[40] = {GM_BINARY_DIR "/cli/gridmeter",
                            "rater",
                            db,
                            "--topic",
                            e->topic,
                            "--group",
                            e->group,
                            "--brokers",
                            e->brokers,
                            "--id",
                            id,
                            "--metrics=",
                            "--batch-size",
                            "2000",
                            "--batch-ms",
                            "100",
                            "--session-timeout-ms",
                            "6000"};
    int n = 18;
    bool gpu_topic = false;
    for (int i = 0; extra && extra[i] && n < 38; i++) {
        gpu_topic = gpu_topic || !strncmp(extra[i], "--gpu-topic", 11);
        argv[n++] = extra[i];
    }
    if (!gpu_topic)
        argv[n++] = "--gpu-topic="; /* tests of usage events leave GPU windows off */
    argv[n] = NULL;
    gm_test_clock_to_children();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("GRIDMETER_LOG_LEVEL", "warn", 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int h_rater_wait(pid_t pid)
{
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int64_t h_wait_accounted(const h_env *e, int64_t messages, int timeout_s)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    int64_t got = 0;
    for (int i = 0; i < timeout_s * 5; i++) {
        char *v = gm_test_pg_value(c, "SELECT coalesce(sum(messages), 0) FROM gm.batches");
        got = atoll(v);
        free(v);
        if (got >= messages)
            break;
        usleep(200000);
    }
    PQfinish(c);
    return got;
}

static int64_t value_i64(PGconn *c, const char *sql)
{
    char *v = gm_test_pg_value(c, sql);
    int64_t n = v ? atoll(v) : 0;
    free(v);
    return n;
}

void h_verify(const h_env *e, const h_expect *x)
{
    PGconn *c = gm_test_pg_connect(e->conninfo);
    /* Tamper evidence: every batch the raters committed is chained, and the chains, offsets,
     * charges and sources agree with the rows (whatever the test did to the raters). */
    {
        gm_chain_verify_opts o = {0};
        gm_chain_report rep;
        char err[1024];
        ck_assert_msg(gm_chain_verify(c, &o, &rep, err, sizeof err) == 0, "%s", err);
        ck_assert_msg(rep.problems == 0, "audit verify: %s", rep.first);
        ck_assert_int_eq(rep.rows, x->events);
    }
    /* Every valid, distinct event exactly once. */
    ck_assert_int_eq(value_i64(c, "SELECT count(*) FROM gm.ledger"), x->events);
    ck_assert_int_eq(value_i64(c, "SELECT count(*) FROM (SELECT source, epoch, seq FROM gm.ledger"
                                  " GROUP BY 1, 2, 3 HAVING count(*) > 1) d"),
                     0);
    ck_assert_int_eq(value_i64(c, "SELECT count(*) FROM (SELECT source, event_id FROM gm.ledger"
                                  " GROUP BY 1, 2 HAVING count(*) > 1) d"),
                     0);
    /* Quantities per tenant, model, site, dimension equal what was sent. */
    PGresult *r = PQexec(c, "SELECT tenant, model, site, sum(input_tokens), sum(cached_tokens),"
                            " sum(output_tokens), sum(gpu_us) FROM gm.ledger GROUP BY 1, 2, 3");
    ck_assert(PQresultStatus(r) == PGRES_TUPLES_OK);
    int64_t seen[H_TENANTS][H_MODELS][H_SITES][4];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < PQntuples(r); i++) {
        int t = -1, m = -1, s = -1;
        for (int k = 0; k < H_TENANTS; k++)
            if (!strcmp(h_tenants[k], PQgetvalue(r, i, 0)))
                t = k;
        for (int k = 0; k < H_MODELS; k++)
            if (!strcmp(h_models[k], PQgetvalue(r, i, 1)))
                m = k;
        for (int k = 0; k < H_SITES; k++)
            if (!strcmp(h_sites[k], PQgetvalue(r, i, 2)))
                s = k;
        ck_assert_msg(t >= 0 && m >= 0 && s >= 0, "unexpected ledger group %s/%s/%s",
                      PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
        for (int d = 0; d < 4; d++)
            seen[t][m][s][d] = atoll(PQgetvalue(r, i, 3 + d));
    }
    PQclear(r);
    for (int t = 0; t < H_TENANTS; t++)
        for (int m = 0; m < H_MODELS; m++)
            for (int s = 0; s < H_SITES; s++)
                for (int d = 0; d < 4; d++)
                    ck_assert_msg(seen[t][m][s][d] == x->qty[t][m][s][d],
                                  "%s/%s/%s dim %d: ledger %lld, sent %lld", h_tenants[t],
                                  h_models[m], h_sites[s], d, (long long)seen[t][m][s][d],
                                  (long long)x->qty[t][m][s][d]);
    /* Charges are derived from exactly the ledger rows. */
    ck_assert_int_eq(
        value_i64(
            c,
            "WITH l AS (SELECT tenant, date_trunc('hour', event_time) AS hour, site, model,"
            "  sum(input_tokens) AS i, sum(cached_tokens) AS c, sum(output_tokens) AS o,"
            "  sum(gpu_us) AS g, sum(amount_input) AS ai, sum(amount_cached) AS ac,"
            "  sum(amount_output) AS ao, sum(amount_gpu) AS ag FROM gm.ledger GROUP BY 1,2,3,4),"
            " ch AS (SELECT tenant, hour, site, model,"
            "  sum(quantity) FILTER (WHERE dimension = 'input') AS i,"
            "  sum(quantity) FILTER (WHERE dimension = 'cached') AS c,"
            "  sum(quantity) FILTER (WHERE dimension = 'output') AS o,"
            "  sum(quantity) FILTER (WHERE dimension = 'gpu') AS g,"
            "  sum(amount) FILTER (WHERE dimension = 'input') AS ai,"
            "  sum(amount) FILTER (WHERE dimension = 'cached') AS ac,"
            "  sum(amount) FILTER (WHERE dimension = 'output') AS ao,"
            "  sum(amount) FILTER (WHERE dimension = 'gpu') AS ag FROM gm.charges GROUP BY 1,2,3,4)"
            " SELECT count(*) FROM l FULL JOIN ch USING (tenant, hour, site, model)"
            " WHERE coalesce(l.i,0) <> coalesce(ch.i,0) OR coalesce(l.c,0) <> coalesce(ch.c,0)"
            "  OR coalesce(l.o,0) <> coalesce(ch.o,0) OR coalesce(l.g,0) <> coalesce(ch.g,0)"
            "  OR coalesce(l.ai,0) <> coalesce(ch.ai,0) OR coalesce(l.ac,0) <> coalesce(ch.ac,0)"
            "  OR coalesce(l.ao,0) <> coalesce(ch.ao,0) OR coalesce(l.ag,0) <> coalesce(ch.ag,0)"),
        0);
    ck_assert_int_eq(
        value_i64(c, "SELECT count(*) FROM audit.reconciliation WHERE difference <> 0"), 0);
    ck_assert_int_eq(value_i64(c, "SELECT coalesce(sum(events), 0) FROM audit.reconciliation"),
                     x->events);
    /* Every malformed message kept, with a reason that names a field. */
    ck_assert_int_eq(value_i64(c, "SELECT count(*) FROM audit.rejected_events"), x->malformed);
    ck_assert_int_eq(value_i64(c, "SELECT count(*) FROM audit.rejected_events WHERE reason = ''"),
                     0);
    /* The batches account for every message exactly once, and the stored offsets reached
     * the end of every partition. */
    ck_assert_int_eq(value_i64(c, "SELECT coalesce(sum(accepted), 0) FROM gm.batches"), x->events);
    ck_assert_int_eq(value_i64(c, "SELECT coalesce(sum(rejected), 0) FROM gm.batches"),
                     x->malformed);
    ck_assert_int_eq(value_i64(c, "SELECT coalesce(sum(messages), 0) FROM gm.batches"),
                     x->events + x->duplicates + x->malformed);
    ck_assert_int_eq(value_i64(c, "SELECT coalesce(sum(next_offset), 0) FROM gm.consumer_offsets"),
                     x->events + x->duplicates + x->malformed);
    /* The sources' seq ranges hold exactly the accepted events, and no hole unless one was
     * made on purpose. */
    ck_assert_int_eq(value_i64(c, "SELECT coalesce(sum(events), 0) FROM gm.sources"), x->events);
    if (!x->holes)
        ck_assert_int_eq(value_i64(c, "SELECT count(*) FROM audit.source_gaps"), 0);
    PQfinish(c);
}

int h_run(const char *const *argv, const char *in_path, char *out, size_t cap)
{
    gm_test_clock_to_children();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("GRIDMETER_LOG_LEVEL", "warn", 0);
        dup2(fds[1], 1);
        close(fds[0]);
        if (in_path && !freopen(in_path, "r", stdin))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    char sink[4096];
    ssize_t k;
    while ((k = read(fds[0], n < cap - 1 ? out + n : sink,
                     n < cap - 1 ? cap - 1 - n : sizeof sink)) > 0)
        if (n < cap - 1)
            n += (size_t)k;
    out[n] = 0;
    close(fds[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void h_expect_value(PGconn *c, const char *sql, const char *want)
{
    char *v = gm_test_pg_value(c, sql);
    ck_assert_msg(v != NULL, "no value: %s", sql);
    ck_assert_msg(!strcmp(v, want), "%s\n got: %s\n want: %s", sql, v, want);
    free(v);
}

void h_produce_events(const h_env *e, const gm_event *evs, size_t n, const char *jsonl)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, err, sizeof err) == 0);
    ck_assert(rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) == 0);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    FILE *f = jsonl ? fopen(jsonl, "a") : NULL;
    ck_assert(!jsonl || f);
    for (size_t i = 0; i < n; i++) {
        char buf[GM_EVENT_MAX_BYTES + 1];
        size_t len = gm_event_encode(&evs[i], buf, sizeof buf);
        ck_assert(len > 0);
        rd_kafka_resp_err_t r = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(e->topic), RD_KAFKA_V_KEY(evs[i].source, strlen(evs[i].source)),
            RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        ck_assert_msg(r == 0, "produce: %s", rd_kafka_err2str(r));
        if (f) {
            fwrite(buf, 1, len, f);
            fputc('\n', f);
        }
    }
    if (f)
        fclose(f);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), 0);
    rd_kafka_destroy(p);
}

char *h_rejects_cmd(const h_env *e, const char *now, const char *args, int *status)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s%s%s%s/cli/gridmeter rejects %s --db='%s user=gm_rater' 2>&1",
             now ? "GRIDMETER_NOW=" : "", now ? now : "", now ? " " : "", GM_BINARY_DIR, args,
             e->conninfo);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 65536, n = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    size_t k;
    while ((k = fread(out + n, 1, cap - n - 1, p)) > 0)
        n += k;
    out[n] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}
