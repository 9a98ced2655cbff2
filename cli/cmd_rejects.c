/* `gridmeter rejects list|show|replay`: the messages the rater refused (gm.rejected_events),
 * by rule, reason, source, tenant, time or Kafka coordinates, and their replay after a fix
 * (a card or tenant imported, a limit raised) through rater/replay.c. docs/operations.md
 * "Rejects". */
#include "cli.h"
#include "gm_ledger.h"
#include "gm_rater.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_instant(const char *name, const char *s, int64_t *out)
{
    *out = 0;
    if (!*s)
        return 0;
    char why[200];
    if (gm_time_parse(s, strlen(s), out, why, sizeof why) != 0) {
        fprintf(stderr, "gridmeter rejects: --%s: %s\n", name, why);
        return 2;
    }
    return 0;
}

static int parse_coord(const char *name, const char *s, int64_t *out)
{
    *out = -1;
    if (!*s)
        return 0;
    uint64_t v;
    if (gm_parse_u64(s, strlen(s), INT64_MAX, &v) != 0) {
        fprintf(stderr, "gridmeter rejects: --%s: must be an integer >= 0, got \"%s\"\n", name, s);
        return 2;
    }
    *out = (int64_t)v;
    return 0;
}

static int list(PGconn *c, const gm_rejects_filter *f)
{
    gm_rejects_where_t w;
    char err[512], sql[1600];
    if (gm_rejects_where(f, false, &w, err, sizeof err) != 0) {
        fprintf(stderr, "gridmeter rejects: %s\n", err);
        return 2;
    }
    snprintf(sql, sizeof sql,
             "SELECT kafka_topic || '/' || kafka_partition || '/' || kafka_offset,"
             " to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
             " coalesce(rule, '-'), coalesce(source || '#' || event_id || ' seq ' || seq"
             "  || CASE WHEN epoch > 0 THEN ' epoch ' || epoch ELSE '' END, '-'),"
             " coalesce(tenant, '-'),"
             " coalesce(replay_outcome || ' ' || to_char(replayed_at AT TIME ZONE 'UTC',"
             "  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'pending'), reason"
             " FROM gm.rejected_events%s",
             w.sql);
    PGresult *r = PQexecParams(c, sql, w.n, NULL, w.v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        gm_pg_fail(c, r, "reading gm.rejected_events", err, sizeof err);
        fprintf(stderr, "gridmeter rejects: %s\n", err);
        PQclear(r);
        return 1;
    }
    printf("%-40s %-20s %-8s %-48s %-16s %-30s %s\n", "kafka", "received", "rule", "event",
           "tenant", "replay", "reason");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-40s %-20s %-8s %-48s %-16s %-30s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
               PQgetvalue(r, i, 6));
    printf("%d reject(s)%s\n", PQntuples(r), f->include_replayed ? "" : " not replayed");
    PQclear(r);
    return 0;
}

static int show(PGconn *c, const gm_rejects_filter *f)
{
    gm_rejects_where_t w;
    char err[512], sql[1600];
    if (gm_rejects_where(f, false, &w, err, sizeof err) != 0) {
        fprintf(stderr, "gridmeter rejects: %s\n", err);
        return 2;
    }
    snprintf(sql, sizeof sql,
             "SELECT kafka_topic, kafka_partition, kafka_offset, received_at, rule, reason,"
             " source, event_id, seq, epoch, tenant, event_time, replayed_at, replay_outcome,"
             " replayed_kafka_topic || '/' || replayed_kafka_partition || '/' ||"
             " replayed_kafka_offset, gm.payload_text(payload)"
             " FROM gm.rejected_events%s",
             w.sql);
    PGresult *r = PQexecParams(c, sql, w.n, NULL, w.v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        gm_pg_fail(c, r, "reading gm.rejected_events", err, sizeof err);
        fprintf(stderr, "gridmeter rejects: %s\n", err);
        PQclear(r);
        return 1;
    }
    if (PQntuples(r) == 0) {
        fprintf(stderr, "gridmeter rejects: no reject matches\n");
        PQclear(r);
        return 1;
    }
    static const char *const names[] = {"topic",       "partition", "offset",       "received_at",
                                        "rule",        "reason",    "source",       "id",
                                        "seq",         "epoch",     "tenant",       "time",
                                        "replayed_at", "replay",    "accounted_by", "payload"};
    for (int i = 0; i < PQntuples(r); i++) {
        if (i)
            putchar('\n');
        for (int k = 0; k < (int)GM_ARRAY_LEN(names); k++)
            printf("%-13s %s\n", names[k], PQgetisnull(r, i, k) ? "-" : PQgetvalue(r, i, k));
    }
    PQclear(r);
    return 0;
}

int gm_cmd_rejects(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "rejects",
        "The messages the rater refused (audit.rejected_events), and their replay.\n"
        "  list     one line per reject: Kafka coordinates, rule, event, replay state, reason\n"
        "  show     every column and the payload of the matching rejects\n"
        "  replay   decode, check and price each matching reject again with the rate cards,\n"
        "           contracts and limits of now; one that passes is rated exactly once (its\n"
        "           ledger row, charges and the reject's mark commit together; a reject\n"
        "           already replayed is never replayed again). --dry-run writes nothing.\n"
        "           Rejects of rule placement are never replayed (docs/scaling.md).\n"
        "Filters combine (AND). Exit status: 0 done, 1 error, 2 usage.",
        "gridmeter rejects list|show|replay [filters] [--dry-run]"};
    gm_opt opts[] = {
        {"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
         "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0, 0},
        {"rule", NULL, NULL, "", GM_OPT_STR,
         "contract, type, time, rating, poison, kafka or placement", 0, 0},
        {"reason", NULL, NULL, "", GM_OPT_STR, "rejects whose reason contains this text", 0, 0},
        {"source", NULL, NULL, "", GM_OPT_STR, "the event's source", 0, 0},
        {"tenant", NULL, NULL, "", GM_OPT_STR, "the event's tenant (subject)", 0, 0},
        {"topic", NULL, NULL, "", GM_OPT_STR, "Kafka topic", 0, 0},
        {"partition", NULL, NULL, "", GM_OPT_STR, "Kafka partition", 0, 0},
        {"offset", NULL, NULL, "", GM_OPT_STR, "Kafka offset", 0, 0},
        {"since", NULL, NULL, "", GM_OPT_STR, "received at or after (RFC 3339)", 0, 0},
        {"until", NULL, NULL, "", GM_OPT_STR, "received before (RFC 3339)", 0, 0},
        {"from", NULL, NULL, "", GM_OPT_STR, "event time at or after (RFC 3339)", 0, 0},
        {"to", NULL, NULL, "", GM_OPT_STR, "event time before (RFC 3339)", 0, 0},
        {"limit", NULL, NULL, "0", GM_OPT_INT, "at most this many (0: all)", 0, 0},
        {"all", NULL, NULL, "false", GM_OPT_FLAG, "list/show: also rejects already replayed", 0, 0},
        {"dry-run", NULL, NULL, "false", GM_OPT_FLAG,
         "replay: say what would happen, write nothing", 0, 0},
        {"max-future-s", "rater.max_future_s", "GRIDMETER_RATER_MAX_FUTURE_S", "300", GM_OPT_INT,
         "replay: the time policy's limit ahead of the clock (as the rater's)", 0, 0},
        {"max-age-days", "rater.max_age_days", "GRIDMETER_RATER_MAX_AGE_DAYS", "0", GM_OPT_INT,
         "replay: the time policy's age limit (as the rater's)", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter rejects: %s\n", err), 2);
    if (npos != 1 ||
        (strcmp(argv[1], "list") && strcmp(argv[1], "show") && strcmp(argv[1], "replay"))) {
        fprintf(stderr, "gridmeter rejects: expected list, show or replay (see --help)\n");
        return 2;
    }
    const char *verb = argv[1];
    gm_rejects_filter f = {0};
    f.rule = gm_opt_str(opts, "rule");
    f.reason = gm_opt_str(opts, "reason");
    f.source = gm_opt_str(opts, "source");
    f.tenant = gm_opt_str(opts, "tenant");
    f.topic = gm_opt_str(opts, "topic");
    f.limit = gm_opt_int(opts, "limit");
    f.include_replayed = gm_opt_flag(opts, "all");
    int64_t part, off;
    if ((rc = parse_coord("partition", gm_opt_str(opts, "partition"), &part)) ||
        (rc = parse_coord("offset", gm_opt_str(opts, "offset"), &off)) ||
        (rc = parse_instant("since", gm_opt_str(opts, "since"), &f.since_us)) ||
        (rc = parse_instant("until", gm_opt_str(opts, "until"), &f.until_us)) ||
        (rc = parse_instant("from", gm_opt_str(opts, "from"), &f.time_from_us)) ||
        (rc = parse_instant("to", gm_opt_str(opts, "to"), &f.time_to_us)))
        return rc;
    if (part > INT32_MAX) {
        fprintf(stderr, "gridmeter rejects: --partition: must be at most %d\n", INT32_MAX);
        return 2;
    }
    f.partition = (int32_t)part;
    f.offset = off;
    if (*f.rule && strcmp(f.rule, "contract") && strcmp(f.rule, "type") && strcmp(f.rule, "time") &&
        strcmp(f.rule, "rating") && strcmp(f.rule, "poison") && strcmp(f.rule, "kafka") &&
        strcmp(f.rule, "placement")) {
        fprintf(stderr,
                "gridmeter rejects: --rule: must be contract, type, time, rating, poison, "
                "kafka or placement, got \"%s\"\n",
                f.rule);
        return 2;
    }
    gm_rater_config cfg;
    gm_rater_config_init(&cfg);
    cfg.max_future_s = gm_opt_int(opts, "max-future-s");
    cfg.max_age_days = gm_opt_int(opts, "max-age-days");
    if (cfg.max_future_s < 0 || cfg.max_future_s > 31622400 || cfg.max_age_days < 0 ||
        cfg.max_age_days > 36600 || f.limit < 0) {
        fprintf(stderr, "gridmeter rejects: --max-future-s must be 0..31622400, --max-age-days "
                        "0..36600 and --limit >= 0\n");
        return 2;
    }
    PGconn *c = gm_pg_connect(gm_opt_str(opts, "db"), "gridmeter-rejects", err, sizeof err);
    if (!c) {
        fprintf(stderr, "gridmeter rejects: %s\n", err);
        return 1;
    }
    int status;
    if (!strcmp(verb, "list")) {
        status = list(c, &f);
    } else if (!strcmp(verb, "show")) {
        status = show(c, &f);
    } else {
        bool dry = gm_opt_flag(opts, "dry-run");
        gm_replay_result res;
        rc = gm_rater_replay(c, &cfg, &f, dry, isatty(2) ? stderr : NULL, stdout, &res, err,
                             sizeof err);
        if (rc) {
            fprintf(stderr, "gridmeter rejects replay: %s\n", err);
            status = 1;
        } else {
            printf("replay: %zu selected, %zu rated, %zu duplicate, %zu conflict, %zu still "
                   "rejected%s\n",
                   res.selected, res.rated, res.duplicates, res.conflicts, res.still_rejected,
                   dry ? " (dry run: nothing written)" : "");
            status = 0;
        }
    }
    PQfinish(c);
    return status;
}
