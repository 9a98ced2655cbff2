/* bench_api: requests/s and p50/p99 of the REST API under a closed-loop load generator on the
 * same machine (one thread each; a new connection whenever the server closes one: it answers
 * one request per connection, and the connect is part of each latency), over a ledger of --events
 * events (default 10 million) in one month. Baselines in the same run: GET /healthz (HTTP only, no
 * database) and the usage query's SQL run directly through libpq by the same threads.
 *
 * The ledger is generated in PostgreSQL from a price table computed by the rating engine
 * (gm_rating_price_event per tenant x model x site), so ledger amounts and charges are what
 * the rater would have written. Needs PGHOST/PGPORT/PGUSER (scripts/services.sh env). */
#include "gm_api.h"
#include "gm_ledger.h"
#include "gm_rating.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define OCT_2026 INT64_C(1790812800000000)

static const char *models[] = {"llama-3.1-8b-instruct",   "llama-3.1-70b-instruct",
                               "llama-3.1-405b-instruct", "mixtral-8x7b-instruct",
                               "qwen2.5-72b-instruct",    "deepseek-v3"};
static const char *sites[] = {"fra1", "ams1", "lhr1", "par1", "nyc1",
                              "sfo1", "sin1", "tro1", "rey1", "anc1"};
#define N_TENANTS 20

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_api: %s: %s\n", what, err);
    exit(1);
}

static void exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    PQclear(r);
}

static void import_file(PGconn *c, const char *name)
{
    char path[512], msg[256], err[1024];
    snprintf(path, sizeof path, "%s/examples/ratecards/%s", GM_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path, "cannot open");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (gm_ledger_import(c, buf, n, msg, sizeof msg, err, sizeof err))
        die(name, err);
}

/* ---- Data ------------------------------------------------------------------------------- */
static void fill(PGconn *c, long events)
{
    gm_rating_book *book = NULL;
    char err[1024];
    if (gm_ledger_load_book(c, &book, err, sizeof err))
        die("book", err);
    exec(c, "CREATE TEMP TABLE bench_prices (t int, m int, s int, tenant text, model text,"
            " site text, site_tier text, card_id text, card_version int, currency text,"
            " p0 numeric, p1 numeric, p2 numeric, p3 numeric, flags smallint)");
    for (int t = 0; t < N_TENANTS; t++)
        for (size_t m = 0; m < GM_ARRAY_LEN(models); m++)
            for (size_t s = 0; s < GM_ARRAY_LEN(sites); s++) {
                char tenant[32];
                snprintf(tenant, sizeof tenant, t == 0 ? "acme" : "tenant%02d", t);
                gm_usage u = {tenant,   models[m],    sites[s],
                              OCT_2026, {1, 1, 1, 1}, GM_RATING_SVC_STANDARD};
                gm_event_price p;
                if (gm_rating_price_event(book, &u, &p, err, sizeof err))
                    die("price", err);
                char sql[1024], pr[4][48];
                for (int d = 0; d < 4; d++)
                    gm_dec_format(p.unit_price_p[d], 12, pr[d], sizeof pr[d]);
                snprintf(sql, sizeof sql,
                         "INSERT INTO bench_prices VALUES (%d, %zu, %zu, '%s', '%s', '%s', '%s',"
                         " '%s', %lld, '%s', %s, %s, %s, %s, %u)",
                         t, m, s, tenant, models[m], sites[s], p.site_tier, p.card_id,
                         (long long)p.card_version, p.currency, pr[0], pr[1], pr[2], pr[3],
                         p.flags & 15u);
                exec(c, sql);
            }
    gm_rating_book_free(book);
    /* The compact ledger (sql/0012): ids for the names, the sources and each price row, so
     * that the rows go straight into gm.ledger_rows (the view's row trigger is for a few rows
     * by hand, not ten million). */
    exec(c, "ALTER TABLE bench_prices ADD tenant_id int, ADD model_id int, ADD site_id int,"
            " ADD pricing_id int");
    exec(c, "UPDATE bench_prices SET tenant_id = gm.ledger_name_id(1::smallint, tenant),"
            " site_id = gm.ledger_name_id(2::smallint, site),"
            " model_id = gm.ledger_name_id(3::smallint, model),"
            " pricing_id = gm.ledger_pricing_id(card_id, card_version, currency, site_tier,"
            " flags, p0, p1, p2, p3, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL)");
    exec(c, "CREATE TEMP TABLE bench_sources AS SELECT site, k,"
            " gm.ledger_name_id(4::smallint, 'bench/' || site || '/' || k) AS id"
            " FROM (SELECT DISTINCT site FROM bench_prices) s, generate_series(0, 49) k");
    exec(c, "CREATE TEMP TABLE bench_stream AS SELECT gm.ledger_stream_id('bench', 0) AS id");
    char sql[4096];
    int64_t t0 = gm_mono_us();
    /* Events spread over October 2026; quantities from a hash of the row number. The view
     * gm.ledger derives the amounts: qty * price (per token); GPU: gpu_us * price / 10^6
     * (per GPU-second). */
    long chunk = 1000000;
    for (long done = 0; done < events; done += chunk) {
        long n = events - done < chunk ? events - done : chunk;
        snprintf(sql, sizeof sql,
                 "INSERT INTO gm.ledger_rows (event_time, seq, kafka_offset, input_tokens,"
                 " cached_tokens, output_tokens, gpu_us, source_id, tenant_id, site_id, model_id,"
                 " pricing_id, stream_id, event_id)"
                 " SELECT timestamptz '2026-10-01Z' + (g.i * (2678400.0 / %ld)) *"
                 " interval '1 second', g.i + 1, g.i, q.a, q.b, q.c, q.d, bs.id, p.tenant_id,"
                 " p.site_id, p.model_id, p.pricing_id, (SELECT id FROM bench_stream), 'e' || g.i"
                 " FROM generate_series(%ld::bigint, %ld::bigint) g(i)"
                 " CROSS JOIN LATERAL (SELECT (g.i * 7919) %% 2048 a, (g.i * 104729) %% 512 b,"
                 "   (g.i * 1299709) %% 1024 c, (g.i * 15485863) %% 200000 d,"
                 "   ((g.i * 2654435761) %% 4294967296) h) q"
                 " JOIN bench_prices p ON p.t = (q.h %% %d) AND p.m = ((q.h / 32) %% %zu)"
                 "   AND p.s = ((q.h / 1024) %% %zu)"
                 " JOIN bench_sources bs ON bs.site = p.site AND bs.k = g.i %% 50",
                 events, done, done + n - 1, N_TENANTS, GM_ARRAY_LEN(models), GM_ARRAY_LEN(sites));
        exec(c, sql);
        fprintf(stderr, "\rbench_api: ledger %ld / %ld events (%.0f s)", done + n, events,
                (double)(gm_mono_us() - t0) / 1e6);
    }
    fprintf(stderr, "\nbench_api: deriving the hourly charges from the ledger\n");
    exec(c,
         "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id, card_version,"
         " site_tier, currency, unit_price, quantity, amount, events)"
         " SELECT l.tenant, date_trunc('hour', l.event_time), l.site, l.model, d.dim,"
         " l.card_id, l.card_version, min(l.site_tier), l.currency, d.price, sum(d.qty),"
         " sum(d.amt), count(*) FILTER (WHERE d.qty > 0)"
         " FROM gm.ledger l JOIN bench_prices p ON p.tenant = l.tenant AND p.model = l.model"
         "  AND p.site = l.site"
         " CROSS JOIN LATERAL (VALUES ('input', l.input_tokens, l.amount_input, p.p0),"
         "  ('cached', l.cached_tokens, l.amount_cached, p.p1), ('output', l.output_tokens,"
         "  l.amount_output, p.p2), ('gpu', l.gpu_us, l.amount_gpu, p.p3)) d(dim, qty, amt, price)"
         " GROUP BY 1, 2, 3, 4, 5, 6, 7, 9, 10");
    exec(c, "ANALYZE gm.ledger_rows");
    exec(c, "ANALYZE gm.charges");
    exec(c, "VACUUM ANALYZE gm.charges_daily");
    exec(c, "VACUUM ANALYZE gm.charges_daily_model");
    fprintf(stderr, "bench_api: data ready in %.0f s\n", (double)(gm_mono_us() - t0) / 1e6);
}

/* ---- Load generator ---------------------------------------------------------------------- */
typedef struct {
    int port;
    const char *token;
    const char *const *paths;
    size_t n_paths;
    const char *conninfo; /* libpq baseline: run sql instead of HTTP */
    const char *sql;
    int64_t until_us;
    int64_t *lat_us;
    size_t n, cap;
    long errors;
    unsigned seed;
} worker;

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa))
        die("connect", "refused");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One request; returns the status (0 on a transport error). *closing: the server ends the
 * connection after this answer (it answers one request per connection). */
static int roundtrip(int fd, const char *req, size_t len, char *buf, size_t cap, bool *closing)
{
    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
        return 0;
    size_t got = 0;
    char *hdr_end = NULL;
    while (!hdr_end) {
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n <= 0)
            return 0;
        got += (size_t)n;
        buf[got] = 0;
        hdr_end = strstr(buf, "\r\n\r\n");
    }
    *hdr_end = 0;
    *closing = strcasestr(buf, "\r\nConnection: close") != NULL;
    *hdr_end = '\r';
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
    size_t need = (size_t)(hdr_end + 4 - buf) + body;
    while (got < need) {
        size_t want = need - got < cap - 1 ? need - got : cap - 1;
        ssize_t n = recv(fd, buf, want, 0);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    return atoi(buf + 9);
}

static void *work(void *arg)
{
    worker *w = arg;
    size_t cap = 1 << 22;
    char *buf = malloc(cap);
    PGconn *pg = w->conninfo ? PQconnectdb(w->conninfo) : NULL;
    int fd = -1;
    char req[1024];
    while (gm_mono_us() < w->until_us) {
        const char *path = w->paths[rand_r(&w->seed) % w->n_paths];
        int64_t t0 = gm_mono_us();
        bool ok;
        if (pg) {
            const char *p[3] = {"tenant07", "2026-10-12T00:00:00Z", "2026-10-13T00:00:00Z"};
            PGresult *r = PQexecParams(pg, w->sql, 3, NULL, p, NULL, NULL, 0);
            ok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
        } else {
            int n = snprintf(req, sizeof req,
                             "GET %s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n\r\n",
                             path, w->token);
            if (fd < 0)
                fd = dial(w->port);
            bool closing = false;
            int st = roundtrip(fd, req, (size_t)n, buf, cap, &closing);
            ok = st == 200;
            if (!ok && w->errors == 0) /* the first failure of each connection, for the reader */
                fprintf(stderr, "bench_api: GET %s answered %d\n", path, st);
            if (!st || closing) {
                close(fd);
                fd = -1; /* the next request connects again (its time counts) */
            }
        }
        int64_t us = gm_mono_us() - t0;
        if (!ok)
            w->errors++;
        if (w->n == w->cap)
            w->lat_us = realloc(w->lat_us, (w->cap = w->cap ? 2 * w->cap : 4096) * sizeof(int64_t));
        w->lat_us[w->n++] = us;
    }
    if (fd >= 0)
        close(fd);
    PQfinish(pg);
    free(buf);
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void run(const char *name, int port, const char *token, const char *const *paths,
                size_t n_paths, const char *conninfo, const char *sql, int threads, int seconds)
{
    worker w[64];
    pthread_t th[64];
    int64_t start = gm_mono_us();
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){port,
                        token,
                        paths,
                        n_paths,
                        conninfo,
                        sql,
                        start + seconds * GM_US_PER_SEC,
                        NULL,
                        0,
                        0,
                        0,
                        (unsigned)i * 7919u + 1};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    double el = (double)(gm_mono_us() - start) / 1e6;
    int64_t *all = malloc((total + 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat_us);
    }
    qsort(all, total, sizeof *all, cmp64);
    printf("%-34s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  (%zu requests, %ld errors, %d conns)\n",
           name, (double)total / el, total ? (double)all[total / 2] / 1000 : 0,
           total ? (double)all[total * 99 / 100] / 1000 : 0, total, errors, threads);
    fflush(stdout);
    free(all);
}

/* One GET of tenant07's entitlement on a fresh connection: the body into buf. */
static int ent_get(int port, const char *token, char *buf, size_t cap)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /v1/tenants/tenant07/entitlement HTTP/1.1\r\nHost: b\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     token);
    int fd = dial(port);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return 0;
    }
    size_t got = 0; /* the server closes after one answer: read to the end */
    for (ssize_t k; got + 1 < cap && (k = recv(fd, buf + got, cap - got - 1, 0)) > 0;)
        got += (size_t)k;
    buf[got] = 0;
    close(fd);
    return got > 12 ? atoi(buf + 9) : 0;
}

/* The JSON string member's value ("spend": "12.3...") copied into out; false if absent. */
static bool member(const char *body, const char *name, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", name);
    const char *p = strstr(body, pat);
    if (!p)
        return false;
    p += strlen(pat);
    size_t n = strcspn(p, "\"");
    if (n >= cap)
        return false;
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

/* Until the server's mirror has loaded (its answers say source "memory"). */
static void wait_memory(int port, const char *token)
{
    char *buf = malloc(1 << 16), src[16] = "";
    int64_t end = gm_mono_us() + 30 * GM_US_PER_SEC;
    while (gm_mono_us() < end &&
           !(ent_get(port, token, buf, 1 << 16) == 200 && member(buf, "source", src, sizeof src) &&
             !strcmp(src, "memory")))
        usleep(10000);
    free(buf);
    if (strcmp(src, "memory"))
        die("entitlement", "the mirror did not load within 30 s");
}

/* The lag of the figure behind committed usage: n times, one charging statement (what the
 * rater's charges trigger runs: gm.budget_apply, in its own transaction) adds 10^-6 USD to
 * tenant07's month; from its COMMIT's acknowledgement, GET entitlement in a loop until the
 * answer shows the new spend. Prints p50/p99/max. */
static void lag(PGconn *c, int port, const char *token, int n)
{
    char *buf = malloc(1 << 16), spend[64], src[16];
    if (ent_get(port, token, buf, 1 << 16) != 200 || !member(buf, "spend", spend, sizeof spend))
        die("entitlement", "no spend in the answer");
    gm_i128 e18 = 0;
    if (gm_dec_parse(spend, strlen(spend), 18, &e18, NULL, 0))
        die("entitlement", spend);
    char month[40], sql[512];
    gm_time_format(gm_month_start(gm_now_us()), month, sizeof month);
    snprintf(sql, sizeof sql,
             "SELECT gm.budget_apply('[{\"tenant\": \"tenant07\", \"period_start\": \"%s\","
             " \"currency\": \"USD\", \"amount\": \"0.000001\"}]')",
             month);
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    long polls = 0, from_db = 0;
    for (int i = 0; i < n; i++) {
        e18 += (gm_i128)1000000000000; /* 10^-6 in 10^-18 units */
        char want[64];
        gm_dec_format(e18, 18, want, sizeof want);
        exec(c, sql);
        int64_t t0 = gm_mono_us();
        for (;;) {
            polls++;
            if (ent_get(port, token, buf, 1 << 16) == 200 &&
                member(buf, "spend", spend, sizeof spend) && !strcmp(spend, want))
                break;
            if (gm_mono_us() - t0 > 10 * GM_US_PER_SEC)
                die("lag", "the charge did not show within 10 s");
        }
        lat[i] = gm_mono_us() - t0;
        if (member(buf, "source", src, sizeof src) && strcmp(src, "memory"))
            from_db++;
        usleep(2000 + (useconds_t)(i % 7) * 1000);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp64);
    printf("%-34s p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  (%d charges, %.1f polls each, %ld "
           "answers from the database)\n",
           "lag: COMMIT -> entitlement shows it", (double)lat[n / 2] / 1000,
           (double)lat[n * 99 / 100] / 1000, (double)lat[n - 1] / 1000, n, (double)polls / n,
           from_db);
    fflush(stdout);
    free(lat);
    free(buf);
}

int main(int argc, char **argv)
{
    long events = 10000000;
    int seconds = 10, threads = 8;
    const char *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc)
            events = atol(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--connections") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reuse-db") && i + 1 < argc)
            keep = argv[++i];
        else {
            fprintf(stderr, "usage: bench_api [--events N] [--seconds S] [--connections C]"
                            " [--reuse-db DBNAME]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64)
        threads = 8;
    char dbname[64], conninfo[128], api_conninfo[160], err[2048];
    snprintf(dbname, sizeof dbname, "%s", keep ? keep : "gmbench_api");
    snprintf(conninfo, sizeof conninfo, "dbname=%s", dbname);
    snprintf(api_conninfo, sizeof api_conninfo, "dbname=%s user=gm_api", dbname);
    PGconn *c = PQconnectdb(conninfo);
    bool fresh = PQstatus(c) != CONNECTION_OK;
    if (!fresh && !keep) {
        PQfinish(c);
        PGconn *a = PQconnectdb("dbname=postgres");
        char sql[128];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
        exec(a, sql);
        PQfinish(a);
        fresh = true;
    }
    if (fresh) {
        PGconn *a = PQconnectdb("dbname=postgres");
        char sql[128];
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
        exec(a, sql);
        PQfinish(a);
        c = PQconnectdb(conninfo);
        if (PQstatus(c) != CONNECTION_OK)
            die("connect", PQerrorMessage(c));
        if (gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count, GM_MIGRATE_APPLY,
                              NULL, err, sizeof err))
            die("migrate", err);
        import_file(c, "list-usd-v1.json");
        import_file(c, "contract-acme.json");
        fill(c, events);
    }
    char *count = NULL;
    PGresult *r = PQexec(c, "SELECT count(*) FROM gm.ledger");
    count = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    char token[GM_API_TOKEN_MAX], cust[GM_API_TOKEN_MAX], id[40];
    if (gm_api_key_create(c, "finance", NULL, "bench", 0, token, id, sizeof id, err, sizeof err) ||
        gm_api_key_create(c, "customer", "tenant07", "bench", 0, cust, id, sizeof id, err,
                          sizeof err))
        die("key", err);
    gm_api_config cfg;
    gm_api_config_defaults(&cfg);
    cfg.db_conninfo = api_conninfo;
    cfg.port = 0;
    cfg.rate_per_s = 0;         /* no per-key limit while measuring */
    cfg.per_ip_connections = 0; /* nor per address: every client thread is on 127.0.0.1 */
    cfg.grace_hours = 0;
    cfg.db_pool_size = threads;
    cfg.usage_cache_ms = 0; /* every request reaches PostgreSQL */
    gm_api_server *s = gm_api_start(&cfg, err, sizeof err);
    if (!s)
        die("api", err);
    int port = gm_api_port(s);
    cfg.usage_cache_ms = 1000;        /* the default: usage responses kept 1 s */
    cfg.entitlement_max_stale_ms = 0; /* the mirror off: every entitlement from PostgreSQL */
    gm_api_server *s_cached = gm_api_start(&cfg, err, sizeof err);
    if (!s_cached)
        die("api", err);
    int port_cached = gm_api_port(s_cached);
    /* invoice ids: tenant07's October draft (live) and tenant03's, finalized */
    char live_id[64] = "", fin_id[64] = "";
    r = PQexec(c, "SELECT 1");
    PQclear(r);
    {
        int fd = dial(port);
        char req[512], *buf = malloc(1 << 22);
        int n = snprintf(req, sizeof req,
                         "GET /v1/invoices?period=2026-10&limit=200 HTTP/1.1\r\nHost: b\r\n"
                         "Authorization: Bearer %s\r\n\r\n",
                         token);
        bool closing;
        roundtrip(fd, req, (size_t)n, buf, 1 << 22, &closing);
        close(fd);
        free(buf);
        r = PQexec(c, "SELECT (SELECT invoice_id FROM gm.invoices WHERE tenant = 'tenant07'"
                      " AND period_start = '2026-10-01Z'),"
                      " (SELECT invoice_id FROM gm.invoices WHERE tenant = 'tenant03'"
                      " AND period_start = '2026-10-01Z')");
        snprintf(live_id, sizeof live_id, "%s", PQgetvalue(r, 0, 0));
        snprintf(fin_id, sizeof fin_id, "%s", PQgetvalue(r, 0, 1));
        PQclear(r);
        fd = dial(port);
        buf = malloc(1 << 16);
        n = snprintf(req, sizeof req,
                     "POST /v1/invoices/%s/finalize HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer"
                     " %s\r\nIdempotency-Key: bench-fin-%d\r\nContent-Length: 0\r\n\r\n",
                     fin_id, token, (int)getpid());
        int st = roundtrip(fd, req, (size_t)n, buf, 1 << 16, &closing);
        close(fd);
        free(buf);
        if (st != 200 && st != 409)
            fprintf(stderr, "bench_api: finalize answered %d\n", st);
    }
    printf("bench_api: %s events in gm.ledger, %d connections, %d s per scenario, 2-core VM"
           " (load generator, server and PostgreSQL on the same machine)\n",
           count, threads, seconds);
    free(count);
    static const char *health[] = {"/healthz"};
    char p_fin[128], p_live[128];
    snprintf(p_fin, sizeof p_fin, "/v1/invoices/%s", fin_id);
    snprintf(p_live, sizeof p_live, "/v1/invoices/%s", live_id);
    const char *fin_paths[] = {p_fin}, *live_paths[] = {p_live};
    static const char *usage_hour[] = {
        "/v1/tenants/tenant07/usage?from=2026-10-12T00:00:00Z&to=2026-10-13T00:00:00Z&bucket=hour",
        "/v1/tenants/tenant07/usage?from=2026-10-05T00:00:00Z&to=2026-10-06T00:00:00Z&bucket=hour",
        "/v1/tenants/tenant07/usage?from=2026-10-20T00:00:00Z&to=2026-10-21T00:00:00Z&bucket=hour"};
    static const char *usage_small[] = {
        "/v1/tenants/tenant07/usage?from=2026-10-12T10:00:00Z&to=2026-10-12T11:00:00Z&bucket=hour",
        "/v1/tenants/tenant07/usage?from=2026-10-12T11:00:00Z&to=2026-10-12T12:00:00Z&bucket=hour"};
    static const char *usage_min[] = {
        "/v1/tenants/tenant07/usage?from=2026-10-12T10:00:00Z&to=2026-10-12T11:00:00Z"
        "&bucket=minute"};
    static const char *usage_day[] = {
        "/v1/tenants/tenant07/usage?from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"
        "&bucket=day&group_by=model"};
    const char *sql_day =
        "SELECT coalesce((extract(epoch FROM date_trunc('hour', hour AT TIME ZONE 'UTC') AT TIME"
        " ZONE 'UTC') * 1000000)::bigint, 0) b, '', '', CASE dimension WHEN 'input' THEN 0 WHEN"
        " 'cached' THEN 1 WHEN 'output' THEN 2 ELSE 3 END, sum(quantity)::text,"
        " sum(amount)::text, currency FROM gm.charges WHERE tenant = $1 AND hour >= $2 AND"
        " hour < $3 GROUP BY 1, 2, 3, 4, 7 ORDER BY 1, 2, 3, 4";
    run("baseline GET /healthz (no DB)", port, token, health, 1, NULL, NULL, threads, seconds);
    /* the hard-limit answer (docs/api.md "Budgets and alerts") beside /healthz */
    PQclear(PQexec(c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit) VALUES"
                      " ('tenant07', 'USD', 1000000) ON CONFLICT (tenant) DO NOTHING"));
    static const char *entitlement[] = {"/v1/tenants/tenant07/entitlement"};
    wait_memory(port, cust);
    run("entitlement (default: pushed mirror)", port, cust, entitlement, 1, NULL, NULL, threads,
        seconds);
    run("entitlement, mirror off (direct SQL)", port_cached, cust, entitlement, 1, NULL, NULL,
        threads, seconds);
    lag(c, port, cust, 300);
    run("baseline libpq usage SQL (1 day)", 0, NULL, health, 1, conninfo, sql_day, threads,
        seconds);
    run("usage, 1 day by hour", port, cust, usage_hour, 3, NULL, NULL, threads, seconds);
    run("usage, 1 hour by hour", port, cust, usage_small, 2, NULL, NULL, threads, seconds);
    run("usage, 1 hour by minute (ledger)", port, cust, usage_min, 1, NULL, NULL, threads, seconds);
    run("usage, month by day x model", port, cust, usage_day, 1, NULL, NULL, threads, seconds);
    run("usage, 1 day by hour, 1 s cache", port_cached, cust, usage_hour, 3, NULL, NULL, threads,
        seconds);
    run("usage, month by day, 1 s cache", port_cached, cust, usage_day, 1, NULL, NULL, threads,
        seconds);
    run("GET invoice (finalized)", port, token, fin_paths, 1, NULL, NULL, threads, seconds);
    run("GET invoice (draft, live)", port, token, live_paths, 1, NULL, NULL, threads, seconds);
    gm_api_stop(s);
    gm_api_stop(s_cached);
    PQfinish(c);
    return 0;
}
