/* `gridmeter shard init|check|coordinator|billing`: the shard databases of a shard map, the
 * coordinator database that reads all of them, and the billing database whose charges are
 * the shards' summed (rater/shard.c, rater/coordinator.c, docs/scaling.md). */
#include "cli.h"
#include "gm_billing.h"
#include "gm_ledger.h"
#include "gm_rater.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

static PGconn *connect_shard(const gm_shard *sh, char *err, size_t err_len)
{
    char why[1024];
    PGconn *c = gm_pg_connect(sh->conninfo, "gridmeter-shard", why, sizeof why);
    if (!c)
        gm_fail(err, err_len, GM_EDB, "shard %s: %s", sh->name, why);
    return c;
}

static int shard_init(const gm_shard_map *m, int only, FILE *out)
{
    int bad = 0;
    for (size_t i = 0; i < m->n_shards; i++) {
        if (only >= 0 && (int)i != only)
            continue;
        char err[2048];
        PGconn *c = connect_shard(&m->shards[i], err, sizeof err);
        int rc = c ? gm_ledger_migrate(c, gm_ledger_migrations, gm_ledger_migrations_count,
                                       GM_MIGRATE_APPLY, NULL, err, sizeof err)
                   : GM_EDB;
        if (!rc)
            rc = gm_shard_init_db(c, m, (int)i, err, sizeof err);
        if (rc) {
            fprintf(stderr, "gridmeter shard init: %s\n", err);
            bad++;
        } else {
            int32_t ids[4096];
            size_t n = gm_shard_map_partitions(&m->topics[0], (int)i, ids, 4096);
            fprintf(out, "shard %s: ready, %zu of %d partitions (database %s on %s:%s)\n",
                    m->shards[i].name, n, m->topics[0].partitions, PQdb(c), PQhost(c), PQport(c));
        }
        PQfinish(c);
    }
    return bad ? 1 : 0;
}

/* The topics' partition counts on the brokers equal the map's. */
static int check_kafka(const gm_shard_map *m, const char *brokers, int *problems)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "gridmeter shard check: --brokers: %s\n", err);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "gridmeter shard check: Kafka: %s\n", err);
        return 1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (e) {
        fprintf(stderr, "gridmeter shard check: Kafka metadata from %s: %s\n", brokers,
                rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return 1;
    }
    for (size_t i = 0; i < m->n_topics; i++) {
        const gm_shard_topic *t = &m->topics[i];
        int found = -1;
        for (int k = 0; k < md->topic_cnt; k++)
            if (!strcmp(md->topics[k].topic, t->topic) && !md->topics[k].err)
                found = md->topics[k].partition_cnt;
        if (found != t->partitions) {
            printf("problem: topic %s: the map has %d partitions, the brokers %s\n", t->topic,
                   t->partitions, found < 0 ? "do not have the topic" : "another count");
            if (found >= 0)
                printf("         (brokers: %d; a partition the map does not list is rated by "
                       "no shard)\n",
                       found);
            (*problems)++;
        } else {
            printf("topic %s: %d partitions, as in the map\n", t->topic, found);
        }
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return 0;
}

/* What every shard must hold alike: the rate cards, contracts and cost cards that its rater
 * prices with (imported into each shard), as one digest. */
static const char *const reference_sql =
    "SELECT md5(coalesce((SELECT string_agg(x::text, '|' ORDER BY x::text) FROM (SELECT"
    " card_id, version, valid_from, valid_until, currency, document::text FROM gm.rate_cards) x),"
    " '') || '#' || coalesce((SELECT string_agg(x::text, '|' ORDER BY x::text) FROM (SELECT"
    " tenant, version, currency, document::text FROM gm.contracts) x), '') || '#' ||"
    " coalesce((SELECT string_agg(x::text, '|' ORDER BY x::text) FROM (SELECT site, version,"
    " valid_from, currency, gpu_hour_cost, reference_per_1m_output, note FROM gm.cost_cards) x),"
    " ''))";

static int shard_check(const gm_shard_map *m, const char *brokers)
{
    int problems = 0;
    char version0[32] = "", cards0[40] = "";
    for (size_t i = 0; i < m->n_shards; i++) {
        char err[2048];
        PGconn *c = connect_shard(&m->shards[i], err, sizeof err);
        int rc = c ? gm_shard_check_db(c, m, (int)i, err, sizeof err) : GM_EDB;
        if (!rc) {
            /* every shard at the same schema version: the coordinator's views need it */
            PGresult *r = PQexec(c, "SELECT max(version) FROM gm_meta.schema_migrations");
            const char *v = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?";
            if (i == 0)
                snprintf(version0, sizeof version0, "%s", v);
            else if (strcmp(version0, v))
                rc = gm_fail(err, sizeof err, GM_ECONFIG,
                             "shard %s: schema version %s, shard %s has %s (run gridmeter shard "
                             "init, which migrates)",
                             m->shards[i].name, v, m->shards[0].name, version0);
            PQclear(r);
        }
        if (!rc) {
            PGresult *r = PQexec(c, reference_sql);
            if (PQresultStatus(r) != PGRES_TUPLES_OK)
                rc = gm_pg_fail(c, r, "reading the rate cards, contracts and cost cards", err,
                                sizeof err);
            else if (i == 0)
                snprintf(cards0, sizeof cards0, "%s", PQgetvalue(r, 0, 0));
            else if (strcmp(cards0, PQgetvalue(r, 0, 0)))
                rc = gm_fail(err, sizeof err, GM_ECONFIG,
                             "shard %s: its rate cards, contracts or cost cards differ from "
                             "shard %s's (import the same files into every shard: gridmeter "
                             "ratecard import --db)",
                             m->shards[i].name, m->shards[0].name);
            PQclear(r);
        }
        if (!rc) {
            /* no rows of another shard's partitions (written before the fence existed) */
            PGresult *r = PQexec(
                c, "SELECT o.topic || '/' || o.partition FROM gm.consumer_offsets o JOIN"
                   " gm.shard_topics t USING (topic) WHERE NOT EXISTS (SELECT 1 FROM"
                   " gm.shard_partitions p WHERE p.topic = o.topic AND p.partition = o.partition)"
                   " LIMIT 1");
            if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r))
                rc = gm_fail(err, sizeof err, GM_EFENCED,
                             "shard %s: holds offsets of partition %s, which is not its own",
                             m->shards[i].name, PQgetvalue(r, 0, 0));
            PQclear(r);
        }
        if (rc) {
            printf("problem: %s\n", err);
            problems++;
        } else {
            printf("shard %s: agrees with the map (schema version %s)\n", m->shards[i].name,
                   version0);
        }
        PQfinish(c);
    }
    if (brokers && *brokers) {
        int rc = check_kafka(m, brokers, &problems);
        if (rc)
            return rc;
    }
    printf("%d problem(s)\n", problems);
    return problems ? 1 : 0;
}

/* The reference data digest of one connection (reference_sql), into out. */
static int reference_digest(PGconn *c, const char *who, char *out, size_t cap, char *err,
                            size_t err_len)
{
    PGresult *r = PQexec(c, reference_sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char why[1024];
        (void)gm_pg_fail(c, r, "reading the rate cards, contracts and cost cards", why, sizeof why);
        rc = gm_fail(err, err_len, GM_EDB, "%s: %s", who, why);
    } else {
        snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
}

/* `shard billing`: the billing database's rate cards and contracts must be the shards' (it
 * prices the invoices), then its charges are brought up to the shards' sums. */
static int shard_billing(const gm_shard_map *m, const char *db, const char *from)
{
    int64_t from_us = INT64_MIN;
    if (*from && !gm_billing_parse_month(from, &from_us)) {
        fprintf(stderr,
                "gridmeter shard billing: --from: must be YYYY-MM (1970-01 or later), "
                "got \"%s\"\n",
                from);
        return 2;
    }
    if (!*db) {
        fprintf(stderr, "gridmeter shard billing: --db CONNINFO (the billing database) is "
                        "required\n");
        return 2;
    }
    char err[2048], mine[40] = "", first[40] = "";
    PGconn *c = gm_pg_connect(db, "gridmeter-shard", err, sizeof err);
    PGconn *s0 = c ? connect_shard(&m->shards[0], err, sizeof err) : NULL;
    int rc = !c || !s0 ? GM_EDB : 0;
    char who[200];
    snprintf(who, sizeof who, "shard %s", m->shards[0].name);
    if (!rc && !(rc = reference_digest(s0, who, first, sizeof first, err, sizeof err)) &&
        !(rc = reference_digest(c, "the billing database", mine, sizeof mine, err, sizeof err)) &&
        strcmp(first, mine))
        rc = gm_fail(err, sizeof err, GM_ECONFIG,
                     "the billing database's rate cards, contracts or cost cards differ from "
                     "shard %s's (it prices the invoices: import the same files into it, "
                     "gridmeter ratecard import --db)",
                     m->shards[0].name);
    PQfinish(s0);
    gm_shard_billing_result res;
    if (!rc)
        rc = gm_shard_billing(c, m, from_us, &res, err, sizeof err);
    if (rc)
        fprintf(stderr, "gridmeter shard billing: %s\n", err);
    else
        printf("billing database %s: %zu charge keys from %zu shards%s%s: %zu new, %zu changed\n",
               PQdb(c), res.shard_rows, m->n_shards, *from ? " from " : "", from, res.inserted,
               res.updated);
    PQfinish(c);
    return rc ? 1 : 0;
}

int gm_cmd_shard(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "shard",
        "The shard databases of a shard map (docs/scaling.md).\n"
        "  init         migrate each shard's database and record its name and partitions\n"
        "               (--shard NAME: that one only); a shard already recorded is checked\n"
        "  check        each database agrees with the map (name, partitions, schema version,\n"
        "               no other shard's offsets); with --brokers, the topics' partition counts\n"
        "  coordinator  set up --db as the coordinator: postgres_fdw servers for every shard\n"
        "               and schema audit over all of them (re-run after a migration)\n"
        "  billing      bring the billing database --db (migrated, no shard, the same cards)\n"
        "               up to the shards: its gm.charges the sum of theirs, key by key\n"
        "               (--from YYYY-MM: hours of that month on); then run close, invoice,\n"
        "               rerate and the API against it, as against one database\n"
        "Exit status: 0 ok, 1 a problem found or a database failed, 2 bad usage.",
        "gridmeter shard init|check|coordinator|billing --shard-map FILE [options]"};
    gm_opt opts[] = {
        {"shard-map", "rater.shard_map", "GRIDMETER_SHARD_MAP", "", GM_OPT_STR, "shard map file", 0,
         0},
        {"shard", NULL, NULL, "", GM_OPT_STR, "init: only this shard", 0, 0},
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "coordinator, billing: libpq conninfo of the coordinator or billing database (not a "
         "shard)",
         0, 0},
        {"from", NULL, NULL, "", GM_OPT_STR,
         "billing: only hours from this month on, YYYY-MM (default: all)", 0, 0},
        {"brokers", NULL, NULL, "", GM_OPT_STR,
         "check: Kafka bootstrap servers, to compare partition counts (empty: skip)", 0, 0},
        {0}};
    char err[2048];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter shard: %s\n", err), 2);
    if (npos != 1 || (strcmp(argv[1], "init") && strcmp(argv[1], "check") &&
                      strcmp(argv[1], "coordinator") && strcmp(argv[1], "billing"))) {
        fprintf(stderr, "gridmeter shard: expected one of init, check, coordinator, billing\n");
        return 2;
    }
    const char *verb = argv[1], *path = gm_opt_str(opts, "shard-map");
    if (!*path) {
        fprintf(stderr, "gridmeter shard %s: --shard-map FILE is required\n", verb);
        return 2;
    }
    gm_shard_map *m = NULL;
    if (gm_shard_map_load(path, &m, err, sizeof err)) {
        fprintf(stderr, "gridmeter shard %s: --shard-map: %s\n", verb, err);
        return 2;
    }
    const char *only = gm_opt_str(opts, "shard");
    int si = *only ? gm_shard_map_find(m, only) : -1;
    if (*only && (si < 0 || strcmp(verb, "init"))) {
        fprintf(stderr, "gridmeter shard %s: --shard: %s\n", verb,
                si < 0 ? "not a shard of the map" : "only for init");
        gm_shard_map_free(m);
        return 2;
    }
    if (!strcmp(verb, "init")) {
        rc = shard_init(m, si, stdout);
    } else if (!strcmp(verb, "check")) {
        rc = shard_check(m, gm_opt_str(opts, "brokers"));
    } else if (!strcmp(verb, "billing")) {
        rc = shard_billing(m, gm_opt_str(opts, "db"), gm_opt_str(opts, "from"));
    } else {
        const char *db = gm_opt_str(opts, "db");
        PGconn *c = *db ? gm_pg_connect(db, "gridmeter-shard", err, sizeof err) : NULL;
        if (!*db) {
            fprintf(stderr, "gridmeter shard coordinator: --db CONNINFO (the coordinator "
                            "database) is required\n");
            rc = 2;
        } else if (!c || gm_shard_coordinator(c, m, stdout, err, sizeof err)) {
            fprintf(stderr, "gridmeter shard coordinator: %s\n", err);
            rc = 1;
        } else {
            printf("coordinator %s: schema audit over %zu shards\n", PQdb(c), m->n_shards);
        }
        PQfinish(c);
    }
    gm_shard_map_free(m);
    return rc;
}
