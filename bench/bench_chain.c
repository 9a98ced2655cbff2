/* Tamper-evidence benchmark. (1) The batch writer's commit with and without the batch digests
 * (ledger/chain.c), alternated batch by batch into two databases on the same server, so that
 * both see the same load; (2) `gridmeter audit verify` (gm_chain_verify) over the digested
 * database, beside the same ordered scan of the ledger through the same cursor with nothing
 * done to the rows (the fetch ceiling), with the verifier's own CPU time per row.
 *
 *   bench_chain [events=1000000] [batch=10000] [partitions=6]
 * Needs the local PostgreSQL (eval "$(scripts/services.sh env)") and a Release build. Creates
 * and drops its own databases. No Kafka: batches are built in memory, as the rater builds them. */
#include "gm_ingest.h"
#include "gm_ledger.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_chain: %s: %s\n", what, err);
    exit(1);
}

static PGconn *connect_db(const char *db)
{
    char err[512], ci[256];
    snprintf(ci, sizeof ci, "dbname=%s", db);
    PGconn *c = gm_pg_connect(ci, "bench_chain", err, sizeof err);
    if (!c)
        die("connect", err);
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    char err[1024];
    if (gm_pg_exec(c, sql, err, sizeof err))
        die(sql, err);
}

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

#define N_SOURCES 600
static uint64_t seqs[N_SOURCES];

static void make(gm_event *ev, gm_ledger_row *row, int64_t time_us, int32_t part, int64_t off)
{
    static const char *const tenants[] = {"acme", "globex", "initech", "umbrella", "hooli"};
    static const char *const models[] = {"llama-3.1-70b", "llama-3.1-8b", "mixtral", "qwen"};
    static const char *const sites[] = {"fra1", "ams1", "lon1", "par1", "waw1", "mad1"};
    int k = (int)(rnd() % N_SOURCES);
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_USAGE;
    snprintf(ev->source, sizeof ev->source, "edge/%s/node-%03d", sites[k % 6], k);
    ev->seq = ++seqs[k];
    snprintf(ev->id, sizeof ev->id, "n%03d-%012llu", k, (unsigned long long)ev->seq);
    snprintf(ev->tenant, sizeof ev->tenant, "%s", tenants[k % 5]);
    snprintf(ev->site, sizeof ev->site, "%s", sites[k % 6]);
    snprintf(ev->model, sizeof ev->model, "%s", models[rnd() % 4]);
    ev->time_us = time_us;
    ev->input_tokens = (int64_t)(rnd() % 4000);
    ev->cached_tokens = (int64_t)(rnd() % 2000);
    ev->output_tokens = (int64_t)(rnd() % 1000);
    ev->gpu_us = (int64_t)(rnd() % 200000);
    memset(row, 0, sizeof *row);
    row->ev = ev;
    row->partition = part;
    row->offset = off;
    row->card_id = "list-usd";
    row->card_version = 1;
    memcpy(row->currency, "USD", 4);
    int64_t q[4] = {ev->input_tokens, ev->cached_tokens, ev->output_tokens, ev->gpu_us};
    int64_t price[4] = {3000000, 1500000, 15000000, 800000000000};
    for (int d = 0; d < 4; d++) {
        row->unit_price_p[d] = price[d];
        row->amount_e18[d] = d == 3 ? (gm_i128)q[d] * price[d] : (gm_i128)q[d] * price[d] * 1000000;
    }
}

int main(int argc, char **argv)
{
    int64_t n_events = argc > 1 ? atoll(argv[1]) : 1000000;
    int batch = argc > 2 ? atoi(argv[2]) : 10000;
    int parts = argc > 3 ? atoi(argv[3]) : 6;
    if (!getenv("GRIDMETER_LOG_LEVEL"))
        gm_log_set_level(GM_LOG_WARN);
    char db[2][64], err[1024];
    PGconn *admin = connect_db("postgres");
    PGconn *c[2];
    gm_ledger_writer *w[2];
    for (int i = 0; i < 2; i++) {
        snprintf(db[i], sizeof db[i], "gmbench_chain_%s_%d", i ? "on" : "off", (int)getpid());
        char sql[160];
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", db[i]);
        exec_ok(admin, sql);
        c[i] = connect_db(db[i]);
        if (gm_ledger_migrate(c[i], gm_ledger_migrations, gm_ledger_migrations_count,
                              GM_MIGRATE_APPLY, NULL, err, sizeof err))
            die("migrate", err);
        w[i] = gm_ledger_writer_new(c[i]);
    }
    printf("bench_chain: %lld events into each of 2 databases, batch %d over %d partitions, "
           "PostgreSQL %d\n",
           (long long)n_events, batch, parts, PQserverVersion(c[0]));
    gm_event *ev = gm_xcalloc((size_t)batch, sizeof *ev);
    gm_ledger_row *rows = gm_xcalloc((size_t)batch, sizeof *rows);
    gm_ledger_pos *pos = gm_xcalloc((size_t)parts, sizeof *pos);
    int64_t *next[2] = {gm_xcalloc((size_t)parts, sizeof(int64_t)),
                        gm_xcalloc((size_t)parts, sizeof(int64_t))};
    double commit_s[2] = {0, 0};
    int64_t done[2] = {0, 0}, t_start = gm_mono_us();
    /* Batch k goes to database k % 2: off, on, off, on, … The events are made afresh for each
     * (the same generator), so both get the same kind of rows. */
    for (int64_t k = 0; done[0] < n_events || done[1] < n_events; k++) {
        int i = (int)(k % 2);
        if (done[i] >= n_events)
            continue;
        int n = (int)(n_events - done[i] < batch ? n_events - done[i] : batch);
        for (int p = 0; p < parts; p++) {
            pos[p].partition = p;
            pos[p].expected = next[i][p] ? next[i][p] : -1;
        }
        for (int j = 0; j < n; j++) {
            int32_t p = j % parts;
            make(&ev[j], &rows[j], INT64_C(1795816800000000) + done[i] + j, p, next[i][p]++);
        }
        int np = n < parts ? n : parts;
        for (int p = 0; p < np; p++)
            pos[p].next = next[i][p];
        /* rows in Kafka order per partition: sort by partition (stable by offset) */
        gm_ledger_row *sorted = gm_xcalloc((size_t)n, sizeof *sorted);
        size_t m = 0;
        for (int p = 0; p < np; p++)
            for (int j = p; j < n; j += parts)
                sorted[m++] = rows[j];
        gm_ledger_batch b = {
            "bench", "gridmeter.usage.v1", "bench", sorted, (size_t)n, NULL, 0, pos, (size_t)np};
        gm_ledger_result res;
        gm_chain__bench_off = i == 0;
        int64_t t0 = gm_mono_us();
        if (gm_ledger_writer_commit(w[i], &b, &res, err, sizeof err))
            die("commit", err);
        commit_s[i] += (double)(gm_mono_us() - t0) / 1e6;
        free(sorted);
        done[i] += n;
        if (isatty(2) && k % 10 == 0) {
            double el = (double)(gm_mono_us() - t_start) / 1e6;
            fprintf(stderr, "\r  writing: %lld / %lld events, %.0f/s",
                    (long long)(done[0] + done[1]), (long long)(2 * n_events),
                    (double)(done[0] + done[1]) / el);
        }
    }
    if (isatty(2))
        fputc('\n', stderr);
    gm_chain__bench_off = false;
    printf("  commit without digests: %10.0f events/s (%.2f s)\n", (double)n_events / commit_s[0],
           commit_s[0]);
    printf("  commit with digests:    %10.0f events/s (%.2f s): %+.1f%% time; on the commit's path "
           "%.2f s (%.1f%%), prepared during the COPY %.2f s\n",
           (double)n_events / commit_s[1], commit_s[1],
           100.0 * (commit_s[1] - commit_s[0]) / commit_s[0], (double)gm_chain__busy_us / 1e6,
           100.0 * (double)gm_chain__busy_us / 1e6 / commit_s[1], (double)gm_chain__prep_us / 1e6);

    /* (2) verify, and the bare scan through the same cursor. */
    exec_ok(c[1], "VACUUM ANALYZE");
    for (int round = 0; round < 2; round++) {
        double w0 = (double)gm_mono_us() / 1e6, c0 = cpu_s();
        exec_ok(c[1], "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                      " DECLARE s NO SCROLL CURSOR FOR SELECT kafka_topic, kafka_partition,"
                      " kafka_offset, tenant, (extract(epoch FROM event_time) * 1000000)::bigint,"
                      " source, event_id, seq, site, model, request_id, input_tokens,"
                      " cached_tokens, output_tokens, gpu_us, site_tier, card_id, card_version,"
                      " currency, amount_input::text, amount_cached::text, amount_output::text,"
                      " amount_gpu::text, flags FROM gm.ledger ORDER BY 1, 2, 3");
        int64_t got = 0;
        for (;;) {
            PGresult *r = PQexec(c[1], "FETCH 20000 FROM s");
            int n = PQntuples(r);
            got += n;
            PQclear(r);
            if (n == 0)
                break;
        }
        exec_ok(c[1], "ROLLBACK");
        double scan_wall = (double)gm_mono_us() / 1e6 - w0, scan_cpu = cpu_s() - c0;
        w0 = (double)gm_mono_us() / 1e6;
        c0 = cpu_s();
        gm_chain_verify_opts o = {0};
        gm_chain_report rep;
        if (gm_chain_verify(c[1], &o, &rep, err, sizeof err))
            die("verify", err);
        double v_wall = (double)gm_mono_us() / 1e6 - w0, v_cpu = cpu_s() - c0;
        if (rep.problems)
            die("verify found a mismatch", rep.first);
        printf("  round %d: bare ordered scan %lld rows: %10.0f rows/s (client CPU %.2f s)\n",
               round + 1, (long long)got, (double)got / scan_wall, scan_cpu);
        printf("  round %d: audit verify      %lld rows: %10.0f rows/s (%.2f of the scan);"
               " verifier CPU %.2f s = %.0f rows per CPU-second\n",
               round + 1, (long long)rep.rows, (double)rep.rows / v_wall,
               ((double)rep.rows / v_wall) / ((double)got / scan_wall), v_cpu,
               (double)rep.rows / v_cpu);
    }
    for (int i = 0; i < 2; i++) {
        gm_ledger_writer_free(w[i]);
        PQfinish(c[i]);
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db[i]);
        exec_ok(admin, sql);
    }
    PQfinish(admin);
    free(ev);
    free(rows);
    free(pos);
    free(next[0]);
    free(next[1]);
    return 0;
}
