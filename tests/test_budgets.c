/* Integration (real PostgreSQL): budgets and their alerts (sql/0009, docs/api.md "Budgets and
 * alerts"). Charges are written the way the rater writes them (INSERT ... ON CONFLICT DO
 * UPDATE on gm.charges, one transaction per batch) by many concurrent connections; the
 * month's spend, the alerts and their outbox rows come from the triggers on gm.charges. */
#include "gm_ledger.h"
#include "support.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

static char *value(PGconn *c, const char *sql)
{
    return gm_test_pg_value(c, sql);
}

static void expect(PGconn *c, const char *sql, const char *want)
{
    char *v = value(c, sql);
    ck_assert_msg(!strcmp(v, want), "%s\n  got:  %s\n  want: %s", sql, v, want);
    free(v);
}

/* One charging transaction of `amount` for tenant acme, as the rater upserts gm.charges:
 * the key varies with `k` so that some statements insert and others update. */
static void charge(PGconn *c, int k, const char *amount, bool commit)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
             " card_version, site_tier, currency, unit_price, quantity, amount, events) VALUES"
             " ('acme', '2026-11-05T%02d:00:00Z', 'fra1', 'm', 'output', 'list', 1, 'metro',"
             " 'USD', 0.000001, 1, %s, 1) ON CONFLICT (tenant, hour, site, model, dimension,"
             " card_id, card_version, variant, unit_price) DO UPDATE SET"
             " quantity = gm.charges.quantity + EXCLUDED.quantity,"
             " amount = gm.charges.amount + EXCLUDED.amount, events = gm.charges.events + 1; %s",
             k % 24, amount, commit ? "COMMIT" : "ROLLBACK");
    gm_test_pg_exec(c, sql);
}

enum { N_RATERS = 8, N_TX = 20 };

typedef struct {
    const char *conninfo;
    int id;
    pthread_barrier_t *start;
} rater_arg;

static void *rater_main(void *p)
{
    rater_arg *a = p;
    PGconn *c = gm_test_pg_connect(a->conninfo);
    pthread_barrier_wait(a->start);
    for (int i = 0; i < N_TX; i++)
        charge(c, a->id * N_TX + i, "0.01", true);
    PQfinish(c);
    return NULL;
}

/* 8 connections commit 160 charges of 0.01 at once against a budget of 1.00 with thresholds
 * 50/80/100 %: exactly three alerts, each raised by the transaction that reached its
 * threshold (the spend it records is exactly 0.50, 0.80 and 1.00, since every transaction
 * adds 0.01 and they serialize on the month's spend row), three outbox rows, and the month's
 * spend equals the sum of the charges. */
START_TEST(test_many_raters_crossing_one_threshold_raise_one_alert_each)
{
    fixture f;
    open_db(&f, "budget_race");
    gm_test_pg_exec(f.c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit, thresholds)"
                         " VALUES ('acme', 'USD', 1.00, '{50,80,100}')");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_RATERS);
    pthread_t th[N_RATERS];
    rater_arg args[N_RATERS];
    for (int i = 0; i < N_RATERS; i++) {
        args[i] = (rater_arg){f.conninfo, i, &start};
        pthread_create(&th[i], NULL, rater_main, &args[i]);
    }
    for (int i = 0; i < N_RATERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    expect(f.c,
           "SELECT string_agg(threshold_percent || '@' || spend::numeric(10,2), ','"
           " ORDER BY threshold_percent) FROM gm.budget_alerts",
           "50@0.50,80@0.80,100@1.00");
    expect(f.c, "SELECT string_agg(event_id, ',' ORDER BY event_id) FROM gm.webhook_outbox",
           "budget.acme.2026-11.100,budget.acme.2026-11.50,budget.acme.2026-11.80");
    expect(f.c, "SELECT amount::numeric(10,2)::text FROM gm.month_spend", "1.60");
    expect(f.c, "SELECT count(*) || ' ' || count(delivered_at) FROM audit.budget_alerts", "3 0");
    expect(f.c,
           "SELECT count(*) FROM gm.month_spend s WHERE amount <> (SELECT sum(amount) FROM"
           " gm.charges c WHERE c.tenant = s.tenant)",
           "0");
    expect(f.c,
           "SELECT payload->>'type' || ' ' || (payload->>'threshold_percent') || ' ' ||"
           " (payload->>'spend') || ' ' || (payload->>'limit') FROM gm.webhook_outbox"
           " WHERE event_id = 'budget.acme.2026-11.80'",
           "budget.threshold_crossed 80 0.800000000000000000 1.000000000000000000");
    close_db(&f);
}
END_TEST

/* A transaction that crossed a threshold and rolled back raised nothing; the next one that
 * commits does. One batch over two thresholds raises both; a budget in another currency
 * than the charges sees no spend; a later month starts again. */
START_TEST(test_alerts_follow_committed_charges_only)
{
    fixture f;
    open_db(&f, "budget_rules");
    gm_test_pg_exec(f.c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit, thresholds)"
                         " VALUES ('acme', 'USD', 10, '{50,80,100}')");
    charge(f.c, 1, "4.99", true);
    expect(f.c, "SELECT count(*) FROM gm.budget_alerts", "0");
    charge(f.c, 2, "0.01", false); /* would reach 50 %, rolled back */
    expect(f.c, "SELECT count(*) FROM gm.budget_alerts", "0");
    expect(f.c, "SELECT amount::text FROM gm.month_spend", "4.990000000000000000");
    charge(f.c, 2, "0.01", true);
    expect(f.c, "SELECT string_agg(threshold_percent::text, ',') FROM gm.budget_alerts", "50");
    charge(f.c, 3, "5.00", true); /* 10.00: 80 and 100 at once */
    expect(f.c,
           "SELECT string_agg(threshold_percent || '@' || spend::numeric(10,2), ','"
           " ORDER BY threshold_percent) FROM gm.budget_alerts",
           "50@5.00,80@10.00,100@10.00");
    charge(f.c, 4, "1.00", true); /* nothing new to cross */
    expect(f.c, "SELECT count(*) FROM gm.webhook_outbox", "3");
    /* The same spend against a EUR budget: no alert (charges in USD are not its spend). */
    gm_test_pg_exec(f.c, "UPDATE gm.budgets SET currency = 'EUR'");
    gm_test_pg_exec(f.c, "DELETE FROM gm.budget_alerts");
    charge(f.c, 5, "1.00", true);
    expect(f.c, "SELECT count(*) FROM gm.budget_alerts", "0");
    close_db(&f);
}
END_TEST

/* One charge of `amount` for acme in the current hour of gridmeter's clock. */
static void charge_now(PGconn *c, const char *amount)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO gm.charges (tenant, hour, site, model, dimension, card_id,"
             " card_version, site_tier, currency, unit_price, quantity, amount, events) VALUES"
             " ('acme', date_trunc('hour', gm.now()), 'fra1', 'm', 'output', 'list', 1, 'metro',"
             " 'USD', 0.000001, 1, %s, 1) ON CONFLICT (tenant, hour, site, model, dimension,"
             " card_id, card_version, variant, unit_price) DO UPDATE SET"
             " quantity = gm.charges.quantity + EXCLUDED.quantity,"
             " amount = gm.charges.amount + EXCLUDED.amount, events = gm.charges.events + 1",
             amount);
    gm_test_pg_exec(c, sql);
}

#define IDS_SQL                                                                                    \
    "SELECT string_agg(replace(event_id, to_char(gm.month_of(gm.now()) AT TIME ZONE 'UTC',"        \
    " 'YYYY-MM'), 'M'), ',' ORDER BY event_id) FROM gm.webhook_outbox"

/* Regression (issue 15 review): a budget lowered below the month's spend raised no alert until
 * the next charge, and a raised limit never alerted again at 100 %. Alerts are exactly once per
 * tenant, month, threshold and limit, evaluated by charges and by setting the budget (in its
 * transaction); the first alert of a threshold keeps the id budget.<t>.<M>.<pct>, a later one
 * under another limit has the limit appended. */
START_TEST(test_a_budget_set_below_the_spend_alerts_at_once_and_each_limit_alerts_once)
{
    fixture f;
    open_db(&f, "budget_limit");
    charge_now(f.c, "60.00");
    expect(f.c, "SELECT count(*) FROM gm.budget_alerts", "0");
    gm_test_pg_exec(f.c, "INSERT INTO gm.budgets (tenant, currency, monthly_limit, thresholds)"
                         " VALUES ('acme', 'USD', 100, '{50,100}')");
    expect(f.c, IDS_SQL, "budget.acme.M.50"); /* at once, no charge needed */
    /* a set that rolls back raises nothing */
    gm_test_pg_exec(f.c, "BEGIN; UPDATE gm.budgets SET monthly_limit = 10; ROLLBACK");
    expect(f.c, IDS_SQL, "budget.acme.M.50");
    gm_test_pg_exec(f.c, "UPDATE gm.budgets SET monthly_limit = 50"); /* below the spend */
    expect(f.c, IDS_SQL, "budget.acme.M.100,budget.acme.M.50,budget.acme.M.50.50");
    expect(f.c,
           "SELECT payload->>'limit' || ' ' || (payload->>'spend') FROM gm.webhook_outbox"
           " WHERE event_id LIKE 'budget.acme.%.100'",
           "50.000000000000000000 60.000000000000000000");
    gm_test_pg_exec(f.c, "UPDATE gm.budgets SET monthly_limit = 200"); /* 30 %: nothing */
    expect(f.c, "SELECT count(*) FROM gm.webhook_outbox", "3");
    charge_now(f.c, "40.00"); /* 100.00 = 50 % of 200: once more, under the new limit */
    expect(f.c, IDS_SQL,
           "budget.acme.M.100,budget.acme.M.50,budget.acme.M.50.200,budget.acme.M.50.50");
    gm_test_pg_exec(f.c, "UPDATE gm.budgets SET hard_limit = false");  /* not a new limit */
    gm_test_pg_exec(f.c, "UPDATE gm.budgets SET monthly_limit = 100"); /* back: 50 % had it */
    expect(f.c, IDS_SQL,
           "budget.acme.M.100,budget.acme.M.100.100,budget.acme.M.50,budget.acme.M.50.200,"
           "budget.acme.M.50.50");
    gm_test_pg_exec(f.c, "UPDATE gm.budgets SET monthly_limit = 100.000");
    charge_now(f.c, "1.00");
    expect(f.c,
           "SELECT count(*) || ' ' || count(DISTINCT (threshold_percent, monthly_limit))"
           " FROM gm.budget_alerts",
           "5 5");
    expect(f.c, "SELECT count(*) FROM gm.webhook_outbox", "5");
    close_db(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("budgets");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_many_raters_crossing_one_threshold_raise_one_alert_each);
    tcase_add_test(tc, test_alerts_follow_committed_charges_only);
    tcase_add_test(tc, test_a_budget_set_below_the_spend_alerts_at_once_and_each_limit_alerts_once);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
