/* Differential test of rating/ against PostgreSQL NUMERIC as the oracle: thousands of random
 * line amounts and half-even roundings, price conversions (per 1M tokens, per GPU-hour),
 * largest-remainder allocations and graduated tiers, each computed in C and in SQL. */
#include "rating_int.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

static uint64_t seed;

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

/* A growing SQL text. */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

GM_PRINTF(2, 3) static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->cap = b->cap ? b->cap * 2 + (size_t)k : 65536;
        b->p = gm_xrealloc(b->p, b->cap);
    }
}

static const char *i128s(gm_i128 v)
{
    static char buf[16][48];
    static int k;
    char *b = buf[k++ % 16];
    gm_i128_format(v, b, 48);
    return b;
}

/* Runs a query that lists mismatches; fails with the first few. */
static void expect_no_rows(PGconn *c, const char *what, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", what, PQerrorMessage(c));
    int n = PQntuples(r);
    char rows[1024] = "";
    for (int i = 0; i < n && i < 5; i++) {
        strncat(rows, " | ", sizeof rows - strlen(rows) - 1);
        for (int f = 0; f < PQnfields(r); f++) {
            strncat(rows, PQgetvalue(r, i, f), sizeof rows - strlen(rows) - 1);
            strncat(rows, " ", sizeof rows - strlen(rows) - 1);
        }
    }
    PQclear(r);
    ck_assert_msg(n == 0, "seed %llu: %s: %d rows differ from PostgreSQL NUMERIC:%s",
                  (unsigned long long)seed, what, n, rows);
}

static void exec_sb(PGconn *c, sbuf *b)
{
    gm_test_pg_exec(c, b->p);
    b->n = 0;
    b->p[0] = '\0';
}

START_TEST(test_line_amounts_and_rounding_match_numeric)
{
    const char *ci = gm_test_db_create("rating");
    PGconn *c = gm_test_pg_connect(ci);
    uint64_t s = seed ^ 11;
    gm_test_pg_exec(c, "CREATE TABLE line (id int, qty numeric, price_p numeric, token bool, "
                       "mu int, c_e18 numeric, c_minor numeric)");
    sbuf b = {0};
    int n = 0;
    for (int i = 0; i < 5000; i++) {
        gm_dim dim = (gm_dim)below(&s, GM_DIM_COUNT);
        int mu = (int[]){0, 2, 3, 4}[below(&s, 4)];
        /* event sizes, month sums up to ~2^93, and prices from 10^-12 to 10^6 per unit */
        gm_i128 qty = (gm_i128)(rnd(&s) >> below(&s, 64));
        if (below(&s, 3) == 0)
            qty *= (gm_i128)below(&s, 1ull << 40);
        int64_t price = (int64_t)(rnd(&s) >> (4 + below(&s, 60)));
        if (i % 8 == 0) {
            /* An exact tie: an odd number of half minor units. */
            qty = (gm_i128)(rnd(&s) >> 12) | 1;
            price = (int64_t)(5 * gm_pow10_i128((dim == GM_DIM_GPU ? 17 : 11) - mu));
        }
        gm_i128 e18;
        if (gm_rating_amount_e18(dim, qty, price, &e18))
            continue; /* past int128: refused, tested in test_rating */
        gm_i128 minor = gm_rating_round_e18(e18, mu);
        if (!b.n)
            sb_add(&b, "INSERT INTO line VALUES ");
        else
            sb_add(&b, ",");
        sb_add(&b, "(%d,%s,%lld,%s,%d,%s,%s)", i, i128s(qty), (long long)price,
               dim == GM_DIM_GPU ? "false" : "true", mu, i128s(e18), i128s(minor));
        n++;
        if (n % 500 == 0)
            exec_sb(c, &b);
    }
    if (b.n)
        exec_sb(c, &b);
    char *cnt = gm_test_pg_value(c, "SELECT count(*) FROM line");
    ck_assert_int_ge(atoi(cnt), 4000);
    free(cnt);
    /* Exact amount in 10^-18 units, then half-even rounding in integers. */
    expect_no_rows(c, "line amounts",
                   "WITH x AS (SELECT id, qty * price_p * CASE WHEN token THEN 1000000 ELSE 1 END "
                   "  AS e18, 10::numeric ^ (18 - mu) AS d, c_e18, c_minor FROM line), "
                   "y AS (SELECT *, div(e18, d) AS q, mod(e18, d) AS r FROM x) "
                   "SELECT id, e18, c_e18, c_minor FROM y WHERE e18 <> c_e18 OR c_minor <> "
                   "CASE WHEN 2 * r > d THEN q + 1 WHEN 2 * r < d THEN q ELSE q + mod(q, 2) END");
    /* And the same through the money value: round(exact amount) at mu digits differs from the
     * half-even result only on exact ties, where PostgreSQL rounds half away from zero. */
    expect_no_rows(c, "ties",
                   "WITH x AS (SELECT id, qty * price_p * CASE WHEN token THEN 1000000 ELSE 1 END "
                   "  / 10::numeric ^ 18 AS amount, mu, c_minor FROM line) "
                   "SELECT id, amount, c_minor FROM x WHERE round(amount, mu) * 10::numeric ^ mu "
                   "<> c_minor AND (amount * 10::numeric ^ mu) - trunc(amount * 10::numeric ^ mu) "
                   "<> 0.5");
    free(b.p);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

START_TEST(test_price_conversions_match_numeric)
{
    const char *ci = gm_test_db_create("rating");
    PGconn *c = gm_test_pg_connect(ci);
    uint64_t s = seed ^ 12;
    gm_test_pg_exec(c, "CREATE TABLE conv (id int, unit text, txt text, ok bool, price_p numeric)");
    sbuf b = {0};
    for (int i = 0; i < 4000; i++) {
        const char *unit = (const char *[]){"per_1m_tokens", "per_gpu_hour", "per_token",
                                            "per_gpu_second"}[below(&s, 4)];
        char txt[64];
        int frac = (int)below(&s, 15);
        unsigned long long ip = below(&s, 1000);
        unsigned long long fp = frac ? rnd(&s) % (unsigned long long)gm_pow10_i128(frac) : 0;
        if (below(&s, 3) == 0 && !strcmp(unit, "per_gpu_hour"))
            fp = fp / 36 * 36; /* more exact hourly prices */
        if (frac)
            snprintf(txt, sizeof txt, "%llu.%0*llu", ip, frac, fp);
        else
            snprintf(txt, sizeof txt, "%llu", ip);
        int64_t pp = 0;
        int rc = gm_rating_price_convert(unit, txt, strlen(txt), &pp, NULL, 0);
        sb_add(&b, "%s(%d,'%s','%s',%s,%lld)", b.n ? "," : "INSERT INTO conv VALUES ", i, unit, txt,
               rc ? "false" : "true", (long long)pp);
    }
    exec_sb(c, &b);
    /* Oracle: the price per token or GPU-second, times 10^12, must be an integer. */
    expect_no_rows(c, "price conversions",
                   "WITH x AS (SELECT id, unit, txt, ok, price_p, txt::numeric * 10::numeric ^ 12 "
                   "/ CASE unit WHEN 'per_1m_tokens' THEN 1000000 WHEN 'per_gpu_hour' THEN 3600 "
                   "ELSE 1 END AS exact FROM conv) "
                   "SELECT id, unit, txt, ok, price_p FROM x WHERE ok <> (exact = trunc(exact)) "
                   "OR (ok AND exact <> price_p)");
    free(b.p);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

START_TEST(test_allocations_and_graduated_tiers_match_numeric)
{
    const char *ci = gm_test_db_create("rating");
    PGconn *c = gm_test_pg_connect(ci);
    uint64_t s = seed ^ 13;
    gm_test_pg_exec(c,
                    "CREATE TABLE alloc (g int, i int, w numeric, total numeric, share numeric)");
    gm_test_pg_exec(c, "CREATE TABLE band (g int, b int, lower numeric, upper numeric, "
                       "price_p numeric, token bool, q numeric)");
    gm_test_pg_exec(c, "CREATE TABLE tier (g int, c_e18 numeric)");
    sbuf b = {0}, bb = {0}, bt = {0};
    for (int g = 0; g < 3000; g++) {
        size_t n = 1 + below(&s, 10);
        gm_i128 w[10], sh[10], sum = 0;
        for (size_t k = 0; k < n; k++) {
            w[k] = below(&s, 5) == 0 ? 0 : (gm_i128)below(&s, 1ull << below(&s, 50));
            sum += w[k];
        }
        if (sum == 0)
            w[0] = sum = 1;
        gm_i128 total = (gm_i128)below(&s, (uint64_t)sum + 1);
        ck_assert_int_eq(gm_rating_allocate(total, w, n, sh), 0);
        for (size_t k = 0; k < n; k++)
            sb_add(&b, "%s(%d,%zu,%s,%s,%s)", b.n ? "," : "INSERT INTO alloc VALUES ", g, k,
                   i128s(w[k]), i128s(total), i128s(sh[k]));
        /* A graduated rule and a quantity. */
        gm_i128 up[6];
        int64_t price[6];
        rating__tier_rule r = {0};
        r.dim = (gm_dim)below(&s, GM_DIM_COUNT);
        r.mode = GM_TIER_GRADUATED;
        r.n_bands = 1 + below(&s, 6);
        r.up_to = up;
        r.price_p = price;
        gm_i128 bound = 0;
        for (size_t k = 0; k < r.n_bands; k++) {
            bound += 1 + (gm_i128)below(&s, 1ull << below(&s, 40));
            up[k] = k + 1 == r.n_bands ? -1 : bound;
            price[k] = (int64_t)below(&s, 1ull << below(&s, 40));
        }
        gm_i128 q = (gm_i128)below(&s, (uint64_t)bound * 2 + 1), e18;
        ck_assert_int_eq(rating__tier_amount(&r, q, &e18), 0);
        gm_i128 lower = 0;
        for (size_t k = 0; k < r.n_bands; k++) {
            sb_add(&bb, "%s(%d,%zu,%s,%s,%lld,%s,%s)", bb.n ? "," : "INSERT INTO band VALUES ", g,
                   k, i128s(lower), up[k] < 0 ? "NULL" : i128s(up[k]), (long long)price[k],
                   r.dim == GM_DIM_GPU ? "false" : "true", i128s(q));
            lower = up[k];
        }
        sb_add(&bt, "%s(%d,%s)", bt.n ? "," : "INSERT INTO tier VALUES ", g, i128s(e18));
        if (g % 300 == 299) {
            exec_sb(c, &b);
            exec_sb(c, &bb);
            exec_sb(c, &bt);
        }
    }
    expect_no_rows(
        c, "largest remainder",
        "WITH a AS (SELECT *, sum(w) OVER (PARTITION BY g) AS wsum FROM alloc), "
        "b AS (SELECT *, div(total * w, wsum) AS fl, mod(total * w, wsum) AS rem FROM a), "
        "c AS (SELECT *, total - sum(fl) OVER (PARTITION BY g) AS lft, row_number() OVER "
        "(PARTITION BY g ORDER BY rem DESC, i ASC) AS rk FROM b) "
        "SELECT g, i, share, fl, rk, lft FROM c "
        "WHERE share <> fl + CASE WHEN rk <= lft THEN 1 ELSE 0 END");
    expect_no_rows(
        c, "graduated tiers",
        "WITH x AS (SELECT g, sum(greatest(0, least(q, coalesce(upper, q)) - lower) * "
        "price_p * CASE WHEN token THEN 1000000 ELSE 1 END) AS e18 FROM band GROUP BY g) "
        "SELECT x.g, x.e18, t.c_e18 FROM x JOIN tier t USING (g) WHERE x.e18 <> t.c_e18");
    char *cnt = gm_test_pg_value(c, "SELECT count(*) FROM tier");
    ck_assert_str_eq(cnt, "3000");
    free(cnt);
    free(b.p);
    free(bb.p);
    free(bt.p);
    PQfinish(c);
    gm_test_db_drop(ci);
}
END_TEST

int main(void)
{
    const char *e = getenv("GM_TEST_SEED");
    seed = e ? strtoull(e, NULL, 10) : 20261127;
    Suite *s = suite_create("rating vs PostgreSQL NUMERIC");
    TCase *tc = tcase_create("differential");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_line_amounts_and_rounding_match_numeric);
    tcase_add_test(tc, test_price_conversions_match_numeric);
    tcase_add_test(tc, test_allocations_and_graduated_tiers_match_numeric);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
