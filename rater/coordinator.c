/* The coordinator database: finance and auditors query every shard through postgres_fdw.
 *
 * DESIGN. No home-made query layer: each shard's audit views are imported as foreign
 * tables (IMPORT FOREIGN SCHEMA audit, one local schema shard_<name> per shard), and the
 * coordinator's schema audit holds one view per audit view with the same columns:
 *   - the UNION ALL of the shards' rows, for views whose rows each belong to one shard
 *     (an event, a reject, a source, a node's hour: a source's partition, and so its shard,
 *     is the same in the usage and GPU topics; docs/scaling.md, "Co-location");
 *   - a regrouping for the views that add up rows of many sources (audit.usage_hourly,
 *     audit.reconciliation: keys grouped, quantities and amounts summed, exactly as one
 *     database would have summed them; audit.gpu_economics: sums regrouped and its cost,
 *     margin and per-million figures computed again from the sums, as the view does);
 *   - audit.gpu_reconciliation regrouped per node, tenant and hour (a node's usage and its
 *     GPU windows have two keys, SOURCE and SOURCE/gpu, so may be on two shards);
 *   - audit.cost_cards, reference data that every shard holds alike, from the first shard.
 * Schema audit_by_shard holds the same views with a first column `shard`, for provenance.
 * Everything is made again on every run, in one transaction: re-run it after a migration
 * or a map change. */
#include "gm_rater.h"
#include "gm_ledger.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* A growing SQL text. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) GM_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int w = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (w >= 0 && b->s && (size_t)w < room) {
            b->n += (size_t)w;
            return;
        }
        b->cap = (b->cap + (size_t)(w > 0 ? w : 0) + 1) * 2;
        b->s = gm_xrealloc(b->s, b->cap);
        if (b->n == 0)
            b->s[0] = '\0';
    }
}

static int run(PGconn *c, const char *sql, const char *what, char *err, size_t err_len)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = gm_pg_fail(c, r, what, err, err_len);
    PQclear(r);
    return rc;
}

/* Quoted identifier and literal (PQescape*, freed here after copying into out). */
static void ident(PGconn *c, const char *s, char *out, size_t cap)
{
    char *q = PQescapeIdentifier(c, s, strlen(s));
    snprintf(out, cap, "%s", q ? q : "\"?\"");
    PQfreemem(q);
}

static void literal(PGconn *c, const char *s, char *out, size_t cap)
{
    char *q = PQescapeLiteral(c, s, strlen(s));
    snprintf(out, cap, "%s", q ? q : "''");
    PQfreemem(q);
}

/* libpq connection keywords postgres_fdw takes as server options; user and password go to
 * the user mapping. Others (application_name, options, …) are left to postgres_fdw's
 * defaults. */
static const char *const server_keys[] = {"host",
                                          "hostaddr",
                                          "port",
                                          "dbname",
                                          "connect_timeout",
                                          "sslmode",
                                          "sslrootcert",
                                          "sslcert",
                                          "sslkey",
                                          "sslcrl",
                                          "target_session_attrs",
                                          "keepalives",
                                          "keepalives_idle",
                                          "keepalives_interval",
                                          "keepalives_count",
                                          NULL};

static bool is_server_key(const char *k)
{
    for (size_t i = 0; server_keys[i]; i++)
        if (!strcmp(server_keys[i], k))
            return true;
    return false;
}

static int make_server(PGconn *c, const gm_shard *sh, sbuf *sql, char *err, size_t err_len)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(sh->conninfo, &perr);
    if (!opts) {
        int rc = gm_fail(err, err_len, GM_EINVAL, "shard %s: conninfo: %s", sh->name,
                         perr ? perr : "out of memory");
        PQfreemem(perr);
        return rc;
    }
    char srv[160], name[140], lit[2200];
    snprintf(name, sizeof name, "gm_shard_%s", sh->name);
    ident(c, name, srv, sizeof srv);
    sb_add(sql, "CREATE SERVER %s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (fetch_size '10000'",
           srv);
    bool has_db = false;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || !is_server_key(o->keyword))
            continue;
        has_db = has_db || !strcmp(o->keyword, "dbname");
        literal(c, o->val, lit, sizeof lit);
        sb_add(sql, ", %s %s", o->keyword, lit);
    }
    sb_add(sql, ");\nCREATE USER MAPPING FOR CURRENT_USER SERVER %s", srv);
    bool first = true;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || (strcmp(o->keyword, "user") && strcmp(o->keyword, "password")))
            continue;
        literal(c, o->val, lit, sizeof lit);
        sb_add(sql, "%s%s %s", first ? " OPTIONS (" : ", ", o->keyword, lit);
        first = false;
    }
    sb_add(sql, "%s;\n", first ? "" : ")");
    PQconninfoFree(opts);
    if (!has_db)
        return gm_fail(err, err_len, GM_EINVAL,
                       "shard %s: conninfo: needs dbname= (the coordinator's server reaches "
                       "the shard with these settings only, not the rater's environment)",
                       sh->name);
    return 0;
}

/* Views that add up rows of many sources: keys are grouped, numbers summed. */
static bool regrouped(const char *view)
{
    return !strcmp(view, "usage_hourly") || !strcmp(view, "reconciliation");
}

static bool summed_type(const char *type)
{
    return !strcmp(type, "numeric") || !strcmp(type, "bigint") || !strcmp(type, "integer") ||
           !strcmp(type, "smallint");
}

/* audit.gpu_economics over the shards: as sql/0010's view, from the regrouped sums. A
 * 'windows' row of a site, tenant and hour whose GPU windows are on one shard and whose usage
 * is on another comes from the first without a revenue currency: it joins the key's row of
 * the one currency the other shards give it (one database's FULL JOIN would have made one
 * row of them). */
static void gpu_economics(sbuf *sql, const char *from)
{
    sb_add(sql,
           "WITH u0 AS (SELECT * FROM (%s) u), u AS (SELECT u0.*, CASE WHEN revenue_currency IS"
           " NULL AND min(revenue_currency) OVER k = max(revenue_currency) OVER k THEN"
           " min(revenue_currency) OVER k ELSE revenue_currency END AS cur FROM u0 WINDOW k AS"
           " (PARTITION BY basis, site, tenant, model, hour)),"
           " s AS (SELECT basis, site, tenant, model, hour, sum(input_tokens) AS input_tokens,"
           " sum(cached_tokens) AS cached_tokens, sum(output_tokens) AS output_tokens,"
           " sum(gpu_us) AS gpu_us, cur AS revenue_currency, sum(revenue) AS revenue,"
           " cost_card_site, cost_card_version, cost_currency, gpu_hour_cost,"
           " reference_per_1m_output_tokens FROM u GROUP BY basis, site, tenant, model, hour, cur,"
           " cost_card_site, cost_card_version, cost_currency, gpu_hour_cost,"
           " reference_per_1m_output_tokens),"
           " c AS (SELECT s.*, round(gpu_us * gpu_hour_cost / 3600000000, 18) AS gpu_cost FROM s)"
           " SELECT basis, site, tenant, model, hour, input_tokens, cached_tokens, output_tokens,"
           " gpu_us, revenue_currency, revenue::numeric(38,18) AS revenue, cost_card_site,"
           " cost_card_version, cost_currency, gpu_hour_cost, gpu_cost::numeric(38,18) AS gpu_cost,"
           " CASE WHEN gpu_cost IS NOT NULL AND (revenue_currency IS NULL OR revenue_currency ="
           " cost_currency) THEN (coalesce(revenue, 0) - gpu_cost)::numeric(38,18) END AS margin,"
           " CASE WHEN output_tokens > 0 THEN round(gpu_cost * 1000000 / output_tokens,"
           " 18)::numeric(38,18) END AS cost_per_1m_output_tokens,"
           " CASE WHEN output_tokens > 0 THEN round(coalesce(revenue, 0) * 1000000 /"
           " output_tokens, 18)::numeric(38,18) END AS revenue_per_1m_output_tokens,"
           " reference_per_1m_output_tokens FROM c",
           from);
}

/* audit.gpu_reconciliation over the shards: a node's usage events (keyed by its source) and
 * its GPU windows (keyed by its GPU source, SOURCE/gpu) may be on two shards. The per-tenant
 * sums add up; the node's per-hour figures (node_*: the same on every row of the node's hour
 * within one shard) are each shard's once, summed; the share is computed again from them. */
static void gpu_reconciliation(sbuf *sql, const char *by_shard)
{
    sb_add(sql,
           "WITH b AS (SELECT * FROM (%s) u), g AS (SELECT site, node, tenant, hour,"
           " sum(reported_gpu_us) AS r, sum(attributed_gpu_us) AS a, sum(usage_events) AS ue,"
           " sum(gpu_windows) AS gw FROM b GROUP BY 1, 2, 3, 4), n AS (SELECT site, node, hour,"
           " sum(nu) AS nu, sum(na) AS na FROM (SELECT DISTINCT shard, site, node, hour,"
           " node_unattributed_us AS nu, node_attributed_us AS na FROM b) d GROUP BY 1, 2, 3)"
           " SELECT g.site, g.node, g.tenant, g.hour, g.r::bigint AS reported_gpu_us,"
           " g.a::bigint AS attributed_gpu_us, (g.r - g.a)::bigint AS difference_us,"
           " g.ue::bigint AS usage_events, g.gw::bigint AS gpu_windows,"
           " coalesce(n.nu, 0)::bigint AS node_unattributed_us,"
           " coalesce(n.na, 0)::bigint AS node_attributed_us,"
           " CASE WHEN coalesce(n.na, 0) + coalesce(n.nu, 0) = 0 THEN NULL ELSE"
           " round(coalesce(n.nu, 0)::numeric / (coalesce(n.na, 0) + coalesce(n.nu, 0)), 6) END"
           " AS unattributed_share FROM g LEFT JOIN n ON n.site IS NOT DISTINCT FROM g.site AND"
           " n.node IS NOT DISTINCT FROM g.node AND n.hour IS NOT DISTINCT FROM g.hour",
           by_shard);
}

int gm_shard_coordinator(PGconn *c, const gm_shard_map *m, FILE *log, char *err, size_t err_len)
{
    PGresult *r = PQexec(c, "SELECT to_regnamespace('gm') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "reading the coordinator's schemas", err, err_len);
        PQclear(r);
        return rc;
    }
    bool is_data = !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    if (is_data)
        return gm_fail(err, err_len, GM_ECONFIG,
                       "database %s has schema gm: it is a gridmeter database (a shard?), and "
                       "the coordinator replaces schema audit: give it a database of its own",
                       PQdb(c));
    int rc = run(c, "BEGIN", "BEGIN", err, err_len);
    if (rc)
        return rc;
    sbuf sql = {0};
    sb_add(&sql, "CREATE EXTENSION IF NOT EXISTS postgres_fdw;\n"
                 "DROP SCHEMA IF EXISTS audit CASCADE;\n"
                 "DROP SCHEMA IF EXISTS audit_by_shard CASCADE;\n");
    /* Servers of an earlier run (shards since removed from the map included). */
    r = PQexec(c, "SELECT srvname FROM pg_foreign_server WHERE srvname LIKE 'gm\\_shard\\_%'");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            char q[160], sch[160];
            ident(c, PQgetvalue(r, i, 0), q, sizeof q);
            ident(c, PQgetvalue(r, i, 0) + 3, sch, sizeof sch); /* shard_<name> */
            sb_add(&sql, "DROP SCHEMA IF EXISTS %s CASCADE;\nDROP SERVER %s CASCADE;\n", sch, q);
        }
    }
    PQclear(r);
    sb_add(&sql,
           "CREATE SCHEMA audit;\nCOMMENT ON SCHEMA audit IS 'gridmeter auditors'' views "
           "over all shards (gridmeter shard coordinator): the columns of docs/auditors.md';\n"
           "CREATE SCHEMA audit_by_shard;\nCOMMENT ON SCHEMA audit_by_shard IS 'Each "
           "shard''s audit views, a first column shard naming the shard';\n");
    for (size_t i = 0; !rc && i < m->n_shards; i++) {
        char sch[160], srv[160], name[140];
        rc = make_server(c, &m->shards[i], &sql, err, err_len);
        snprintf(name, sizeof name, "shard_%s", m->shards[i].name);
        ident(c, name, sch, sizeof sch);
        snprintf(name, sizeof name, "gm_shard_%s", m->shards[i].name);
        ident(c, name, srv, sizeof srv);
        sb_add(&sql, "CREATE SCHEMA %s;\nIMPORT FOREIGN SCHEMA audit FROM SERVER %s INTO %s;\n",
               sch, srv, sch);
    }
    if (!rc)
        rc = run(c, sql.s, "creating the shards' servers and foreign tables", err, err_len);
    sql.n = 0;
    /* The views, from the first shard's foreign tables: every shard must have the same. */
    char name[140], sch0[160];
    snprintf(name, sizeof name, "shard_%s", m->shards[0].name);
    ident(c, name, sch0, sizeof sch0);
    const char *v[1] = {name};
    r = rc ? NULL
           : PQexecParams(c,
                          "SELECT c.relname, string_agg(quote_ident(a.attname), ',' ORDER BY"
                          " a.attnum), string_agg(format_type(a.atttypid, NULL), ',' ORDER BY"
                          " a.attnum) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                          " AND a.attnum > 0 AND NOT a.attisdropped WHERE c.relnamespace ="
                          " to_regnamespace($1) GROUP BY 1 ORDER BY 1",
                          1, NULL, v, NULL, NULL, 0);
    if (r && PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = gm_pg_fail(c, r, "listing the shards' audit views", err, err_len);
    for (int k = 0; !rc && r && k < PQntuples(r); k++) {
        const char *view = PQgetvalue(r, k, 0);
        char *cols = gm_xstrdup(PQgetvalue(r, k, 1)), *types = gm_xstrdup(PQgetvalue(r, k, 2));
        char vq[160];
        ident(c, view, vq, sizeof vq);
        sbuf u = {0}, by = {0};
        for (size_t i = 0; i < m->n_shards; i++) {
            char sch[160], lit[160];
            snprintf(name, sizeof name, "shard_%s", m->shards[i].name);
            ident(c, name, sch, sizeof sch);
            literal(c, m->shards[i].name, lit, sizeof lit);
            sb_add(&u, "%sSELECT %s FROM %s.%s", i ? " UNION ALL " : "", cols, sch, vq);
            sb_add(&by, "%sSELECT %s::text AS shard, %s FROM %s.%s", i ? " UNION ALL " : "", lit,
                   cols, sch, vq);
        }
        sb_add(&sql, "CREATE VIEW audit_by_shard.%s AS %s;\nCREATE VIEW audit.%s AS ", vq, by.s,
               vq);
        if (!strcmp(view, "cost_cards")) {
            /* reference data, imported into every shard alike (gridmeter shard check) */
            sb_add(&sql, "SELECT %s FROM %s.%s", cols, sch0, vq);
        } else if (!strcmp(view, "gpu_economics")) {
            gpu_economics(&sql, u.s);
        } else if (!strcmp(view, "gpu_reconciliation")) {
            gpu_reconciliation(&sql, by.s);
        } else if (regrouped(view)) {
            /* keys (text, times, currency) grouped; numbers summed, back in their type */
            sbuf sel = {0}, grp = {0};
            char *cs = NULL, *ts = NULL;
            char *col = strtok_r(cols, ",", &cs), *typ = strtok_r(types, ",", &ts);
            for (int n = 0; col && typ; n++) {
                if (summed_type(typ))
                    sb_add(&sel, "%ssum(%s)::%s AS %s", n ? ", " : "", col, typ, col);
                else {
                    sb_add(&sel, "%s%s", n ? ", " : "", col);
                    sb_add(&grp, "%s%s", grp.n ? ", " : "", col);
                }
                col = strtok_r(NULL, ",", &cs);
                typ = strtok_r(NULL, ",", &ts);
            }
            sb_add(&sql, "SELECT %s FROM (%s) u GROUP BY %s", sel.s, u.s, grp.s ? grp.s : "()");
            free(sel.s);
            free(grp.s);
        } else {
            sb_add(&sql, "%s", u.s);
        }
        free(cols);
        free(types);
        sb_add(&sql, ";\n");
        if (log)
            fprintf(log, "audit.%s: %s\n", view,
                    !strcmp(view, "cost_cards") ? "the first shard's"
                    : !strcmp(view, "gpu_economics") || !strcmp(view, "gpu_reconciliation") ||
                            regrouped(view)
                        ? "regrouped"
                        : "union");
        free(u.s);
        free(by.s);
    }
    PQclear(r);
    if (!rc) {
        sb_add(&sql, "DO $$ BEGIN IF to_regrole('gm_auditor') IS NOT NULL THEN"
                     " GRANT USAGE ON SCHEMA audit, audit_by_shard TO gm_auditor;"
                     " GRANT SELECT ON ALL TABLES IN SCHEMA audit, audit_by_shard TO gm_auditor;"
                     " END IF; END $$;\n");
        rc = run(c, sql.s, "creating the coordinator's audit views", err, err_len);
    }
    free(sql.s);
    char e2[256];
    if (rc) {
        if (run(c, "ROLLBACK", "ROLLBACK", e2, sizeof e2))
            gm_warn("shard", "msg=\"rollback failed\" error=\"%s\"", e2);
        return rc;
    }
    return run(c, "COMMIT", "COMMIT", err, err_len);
}

/* ---- The billing database (docs/scaling.md, "Invoicing across shards") ------------------
 * A gridmeter database of its own (migrated, no shard, never rated into) whose gm.charges is
 * the sum over the shards, key by key: each event adds to one key of one shard's charges, so
 * the sum per key is what one database that rated the same events holds. gm.charges' own
 * triggers keep the rollups (gm.charges_daily, gm.charges_daily_model) and the change markers
 * (gm.period_changes) as in one database, so `gridmeter close`, `invoice`, `rerate` and the
 * REST API run against it unchanged. Read through postgres_fdw in one transaction: each
 * shard's charges as of one snapshot (a shard's batches commit whole). */

/* gm.charges' key (sql/0027: the price variant before the unit price) */
static const char charge_key[] = "tenant, hour, site, model, dimension, card_id, card_version,"
                                 " variant, unit_price";

int gm_shard_billing(PGconn *c, const gm_shard_map *m, int64_t from_us,
                     gm_shard_billing_result *res, char *err, size_t err_len)
{
    memset(res, 0, sizeof *res);
    PGresult *r = PQexec(c, "SELECT to_regclass('gm.charges') IS NOT NULL,"
                            " to_regclass('gm.shard_identity') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "reading the billing database's schema", err, err_len);
        PQclear(r);
        return rc;
    }
    bool migrated = !strcmp(PQgetvalue(r, 0, 0), "t") && !strcmp(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    if (!migrated)
        return gm_fail(err, err_len, GM_ECONFIG,
                       "database %s: not a gridmeter database at this version (run gridmeter "
                       "migrate --db on it, then import the shards' rate cards and contracts)",
                       PQdb(c));
    int rc = run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ", "BEGIN", err, err_len);
    if (rc)
        return rc;
    /* one sync at a time; the rater's writers never take this lock (no rater writes here) */
    rc = run(c, "LOCK TABLE gm.charges IN SHARE ROW EXCLUSIVE MODE", "locking gm.charges", err,
             err_len);
    if (!rc) {
        r = PQexec(c,
                   "SELECT (SELECT name FROM gm.shard_identity),"
                   " EXISTS (SELECT 1 FROM gm.batches), EXISTS (SELECT 1 FROM gm.ledger_streams)");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = gm_pg_fail(c, r, "reading the billing database's state", err, err_len);
        else if (!PQgetisnull(r, 0, 0))
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         "database %s is shard %s: the billing database is a database of its "
                         "own, not a shard",
                         PQdb(c), PQgetvalue(r, 0, 0));
        else if (!strcmp(PQgetvalue(r, 0, 1), "t") || !strcmp(PQgetvalue(r, 0, 2), "t"))
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         "database %s has rated events (gm.batches, gm.ledger): the billing "
                         "database holds the shards' charges only, no rater writes to it",
                         PQdb(c));
        PQclear(r);
    }
    sbuf sql = {0};
    if (!rc) {
        sb_add(&sql, "CREATE EXTENSION IF NOT EXISTS postgres_fdw;\n");
        r = PQexec(c, "SELECT srvname FROM pg_foreign_server WHERE srvname LIKE 'gm\\_shard\\_%'");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            for (int i = 0; i < PQntuples(r); i++) {
                char q[160], sch[160];
                ident(c, PQgetvalue(r, i, 0), q, sizeof q);
                ident(c, PQgetvalue(r, i, 0) + 3, sch, sizeof sch); /* shard_<name> */
                sb_add(&sql, "DROP SCHEMA IF EXISTS %s CASCADE;\nDROP SERVER %s CASCADE;\n", sch,
                       q);
            }
        PQclear(r);
    }
    for (size_t i = 0; !rc && i < m->n_shards; i++) {
        char sch[160], srv[160], name[140];
        rc = make_server(c, &m->shards[i], &sql, err, err_len);
        snprintf(name, sizeof name, "shard_%s", m->shards[i].name);
        ident(c, name, sch, sizeof sch);
        snprintf(name, sizeof name, "gm_shard_%s", m->shards[i].name);
        ident(c, name, srv, sizeof srv);
        sb_add(&sql,
               "CREATE SCHEMA %s;\nCOMMENT ON SCHEMA %s IS 'gm.charges of shard %s, read by "
               "gridmeter shard billing';\nIMPORT FOREIGN SCHEMA gm LIMIT TO (charges) FROM "
               "SERVER %s INTO %s;\n",
               sch, sch, m->shards[i].name, srv, sch);
    }
    if (!rc)
        rc = run(c, sql.s, "creating the shards' servers and foreign tables", err, err_len);
    sql.n = 0;
    /* every shard's charges from the hour from_us on, as one relation */
    char from[40] = "-infinity";
    if (from_us != INT64_MIN)
        gm_time_format(from_us, from, sizeof from);
    char from_lit[64];
    literal(c, from, from_lit, sizeof from_lit);
    sbuf u = {0};
    for (size_t i = 0; !rc && i < m->n_shards; i++) {
        char sch[160], name[140];
        snprintf(name, sizeof name, "shard_%s", m->shards[i].name);
        ident(c, name, sch, sizeof sch);
        sb_add(&u,
               "%sSELECT %s, site_tier, currency, quantity, amount, events FROM %s.charges"
               " WHERE hour >= %s::timestamptz",
               i ? " UNION ALL " : "", charge_key, sch, from_lit);
    }
    const char *p[1] = {from};
    if (!rc) {
        /* a key's currency and site tier come from its card: the same on every shard */
        sb_add(&sql,
               "CREATE TEMP TABLE gm_shard_charges ON COMMIT DROP AS SELECT %s,"
               " min(site_tier) AS site_tier, min(currency) AS currency,"
               " count(DISTINCT (site_tier, currency)) AS n_terms, sum(quantity) AS quantity,"
               " sum(amount) AS amount, sum(events) AS events FROM (%s) u GROUP BY %s",
               charge_key, u.s, charge_key);
        r = PQexec(c, sql.s);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = gm_pg_fail(c, r, "reading the shards' charges", err, err_len);
        else
            res->shard_rows = (size_t)atoll(PQcmdTuples(r));
        PQclear(r);
        sql.n = 0;
    }
    if (!rc) {
        r = PQexec(c, "SELECT tenant || ' ' || hour || ' ' || site || ' ' || model || ' ' ||"
                      " dimension FROM gm_shard_charges WHERE n_terms > 1 LIMIT 1");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = gm_pg_fail(c, r, "checking the shards' charges", err, err_len);
        else if (PQntuples(r))
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         "the shards' charges of %s have different currencies or site tiers for "
                         "one price (import the same rate cards into every shard: gridmeter "
                         "shard check)",
                         PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (!rc) {
        /* a charge here that no shard has: something else wrote to this database */
        sb_add(&sql,
               "SELECT c.tenant || ' ' || c.hour || ' ' || c.site || ' ' || c.model || ' ' ||"
               " c.dimension FROM gm.charges c WHERE c.hour >= $1::timestamptz AND NOT EXISTS"
               " (SELECT 1 FROM gm_shard_charges s WHERE (s.tenant, s.hour, s.site, s.model,"
               " s.dimension, s.card_id, s.card_version, s.variant, s.unit_price) = (c.tenant,"
               " c.hour, c.site, c.model, c.dimension, c.card_id, c.card_version, c.variant,"
               " c.unit_price)) LIMIT 1");
        r = PQexecParams(c, sql.s, 1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = gm_pg_fail(c, r, "checking the billing database's charges", err, err_len);
        else if (PQntuples(r))
            rc = gm_fail(err, err_len, GM_ECONFIG,
                         "database %s holds a charge no shard has (%s): the billing database "
                         "holds the shards' charges only",
                         PQdb(c), PQgetvalue(r, 0, 0));
        PQclear(r);
        sql.n = 0;
    }
    if (!rc) {
        /* only the keys whose sums changed are written: the rollups and change markers move
         * for those alone (gm.charges' triggers, sql/0008) */
        sb_add(&sql,
               "WITH w AS (INSERT INTO gm.charges AS c (%s, site_tier, currency, quantity, amount,"
               " events) SELECT %s, site_tier, currency, quantity, amount, events FROM"
               " gm_shard_charges ORDER BY %s ON CONFLICT (%s) DO UPDATE SET site_tier ="
               " EXCLUDED.site_tier, currency = EXCLUDED.currency, quantity = EXCLUDED.quantity,"
               " amount = EXCLUDED.amount, events = EXCLUDED.events WHERE (c.site_tier,"
               " c.currency, c.quantity, c.amount, c.events) IS DISTINCT FROM"
               " (EXCLUDED.site_tier, EXCLUDED.currency, EXCLUDED.quantity, EXCLUDED.amount,"
               " EXCLUDED.events) RETURNING xmax = 0 AS inserted)"
               " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
               " FROM w",
               charge_key, charge_key, charge_key, charge_key);
        r = PQexec(c, sql.s);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = gm_pg_fail(c, r, "writing the billing database's charges", err, err_len);
        else {
            res->inserted = (size_t)atoll(PQgetvalue(r, 0, 0));
            res->updated = (size_t)atoll(PQgetvalue(r, 0, 1));
        }
        PQclear(r);
    }
    free(sql.s);
    free(u.s);
    char e2[256];
    if (rc) {
        if (run(c, "ROLLBACK", "ROLLBACK", e2, sizeof e2))
            gm_warn("shard", "msg=\"rollback failed\" error=\"%s\"", e2);
        return rc;
    }
    return run(c, "COMMIT", "COMMIT", err, err_len);
}
