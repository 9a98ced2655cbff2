/* Shards: the shard map file, a shard database's record of its part of it (sql/0016), and
 * the coordinator database that queries every shard through postgres_fdw.
 *
 * DESIGN. Nothing here distributes rows: Kafka already does. Each partition of a sharded
 * topic belongs to one shard (the map), a rater of that shard is assigned exactly those
 * partitions (rater.c, static assignment) and writes them to that shard's database in the
 * one local transaction it always used. The map is checked three times: at start (the
 * database's gm.shard_identity and gm.shard_partitions must say what the map says), in
 * every transaction (the gm.shard_fence trigger, SQLSTATE GMS01), and by `gridmeter shard
 * check`. Reading across shards is PostgreSQL's own postgres_fdw (see gm_shard_coordinator).
 * The format is in docs/scaling.md, "The shard map". */
#include "gm_rater.h"
#include "gm_ledger.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void gm_shard_map_free(gm_shard_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_topics; i++)
        free(m->topics[i].owner);
    free(m->topics);
    free(m->shards);
    free(m);
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_' ||
              s[i] == '-'))
            return false;
    return true;
}

/* Kafka's topic name rule: 1..249 of [a-zA-Z0-9._-]. */
static bool valid_topic(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 249)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

int gm_shard_map_find(const gm_shard_map *m, const char *name)
{
    for (size_t i = 0; m && i < m->n_shards; i++)
        if (!strcmp(m->shards[i].name, name))
            return (int)i;
    return -1;
}

const gm_shard_topic *gm_shard_map_topic(const gm_shard_map *m, const char *topic)
{
    for (size_t i = 0; m && i < m->n_topics; i++)
        if (!strcmp(m->topics[i].topic, topic))
            return &m->topics[i];
    return NULL;
}

size_t gm_shard_map_partitions(const gm_shard_topic *t, int shard, int32_t *out, size_t cap)
{
    size_t n = 0;
    for (int p = 0; t && p < t->partitions; p++)
        if (t->owner[p] == shard) {
            if (n < cap)
                out[n] = p;
            n++;
        }
    return n;
}

/* Next whitespace-separated word of *s (NUL-terminated in place), or NULL. */
static char *word(char **s)
{
    char *p = *s;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return *s = p, NULL;
    char *w = p;
    while (*p && *p != ' ' && *p != '\t')
        p++;
    if (*p)
        *p++ = '\0';
    *s = p;
    return w;
}

/* "0,1,4-7" into owner[] = shard; each partition once. */
static int assign_list(gm_shard_topic *t, int shard, const char *list, const char *where,
                       const gm_shard_map *m, char *err, size_t err_len)
{
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *dash = memchr(p, '-', len);
        uint64_t lo, hi;
        if (dash ? gm_parse_u64(p, (size_t)(dash - p), 4095, &lo) ||
                       gm_parse_u64(dash + 1, len - (size_t)(dash - p) - 1, 4095, &hi)
                 : gm_parse_u64(p, len, 4095, &lo))
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: partitions: must be a list of partition numbers and ranges "
                           "such as 0,1,4-7, got \"%s\"",
                           where, list);
        if (!dash)
            hi = lo;
        if (hi < lo)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: partitions: range %llu-%llu runs backwards", where,
                           (unsigned long long)lo, (unsigned long long)hi);
        for (uint64_t k = lo; k <= hi; k++) {
            if ((int64_t)k >= t->partitions)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s: partition %llu: topic %s has partitions 0..%d", where,
                               (unsigned long long)k, t->topic, t->partitions - 1);
            if (t->owner[k] >= 0)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s: partition %llu of topic %s: already assigned to shard %s "
                               "(a partition belongs to exactly one shard)",
                               where, (unsigned long long)k, t->topic, m->shards[t->owner[k]].name);
            t->owner[k] = (int16_t)shard;
        }
        p += len;
        if (*p == ',') {
            p++;
            if (!*p)
                return gm_fail(err, err_len, GM_EINVAL,
                               "%s: partitions: a list ends with a number, got \"%s\"", where,
                               list);
        }
    }
    return 0;
}

int gm_shard_map_parse(const char *text, size_t len, const char *path, gm_shard_map **out,
                       char *err, size_t err_len)
{
    *out = NULL;
    if (memchr(text, '\0', len))
        return gm_fail(err, err_len, GM_EINVAL, "%s: a shard map is text: it has a NUL byte", path);
    gm_shard_map *m = gm_xcalloc(1, sizeof *m);
    char *copy = gm_xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    int rc = 0;
    bool version = false;
    size_t cap_s = 0, cap_t = 0;
    char *line = copy;
    for (int lineno = 1; line && !rc; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char where[512];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r')
            line[--ll] = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = line;
        char *kw = word(&s);
        if (!kw) {
            line = nl ? nl + 1 : NULL;
            continue;
        }
        if (!version && strcmp(kw, "version")) {
            rc = gm_fail(err, err_len, GM_EINVAL,
                         "%s: a shard map starts with \"version 1\", got \"%s\"", where, kw);
        } else if (!strcmp(kw, "version")) {
            char *v = word(&s);
            if (version || !v || strcmp(v, "1") || word(&s))
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: version: must be the first line, once, \"version 1\"", where);
            version = true;
        } else if (!strcmp(kw, "topic")) {
            char *name = word(&s), *np = word(&s);
            uint64_t n = 0;
            if (!name || !np || word(&s) || !valid_topic(name) ||
                gm_parse_u64(np, strlen(np), 4096, &n) || n < 1)
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: topic: must be \"topic NAME PARTITIONS\" with a Kafka topic "
                             "name and 1..4096 partitions",
                             where);
            else if (gm_shard_map_topic(m, name))
                rc = gm_fail(err, err_len, GM_EINVAL, "%s: topic %s: declared twice", where, name);
            else {
                if (m->n_topics == cap_t) {
                    cap_t = cap_t ? cap_t * 2 : 4;
                    m->topics = gm_xrealloc(m->topics, cap_t * sizeof *m->topics);
                }
                gm_shard_topic *t = &m->topics[m->n_topics++];
                memset(t, 0, sizeof *t);
                snprintf(t->topic, sizeof t->topic, "%s", name);
                t->partitions = (int)n;
                t->owner = gm_xmalloc(n * sizeof *t->owner);
                for (uint64_t k = 0; k < n; k++)
                    t->owner[k] = -1;
            }
        } else if (!strcmp(kw, "shard")) {
            char *name = word(&s);
            while (*s == ' ' || *s == '\t')
                s++;
            size_t cl = strlen(s);
            while (cl && (s[cl - 1] == ' ' || s[cl - 1] == '\t'))
                s[--cl] = '\0';
            if (!name || !valid_name(name))
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: shard: the name must be 1..63 of a-z, 0-9, '_' and '-', "
                             "starting with a letter or digit",
                             where);
            else if (cl == 0 || cl >= sizeof m->shards[0].conninfo)
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: shard %s: needs a libpq conninfo of 1..%zu bytes after the "
                             "name",
                             where, name, sizeof m->shards[0].conninfo - 1);
            else if (gm_shard_map_find(m, name) >= 0)
                rc = gm_fail(err, err_len, GM_EINVAL, "%s: shard %s: declared twice", where, name);
            else if (m->n_shards >= 1000)
                rc = gm_fail(err, err_len, GM_EINVAL, "%s: at most 1000 shards", where);
            else {
                if (m->n_shards == cap_s) {
                    cap_s = cap_s ? cap_s * 2 : 4;
                    m->shards = gm_xrealloc(m->shards, cap_s * sizeof *m->shards);
                }
                gm_shard *sh = &m->shards[m->n_shards++];
                snprintf(sh->name, sizeof sh->name, "%s", name);
                snprintf(sh->conninfo, sizeof sh->conninfo, "%s", s);
            }
        } else if (!strcmp(kw, "assign")) {
            char *name = word(&s), *topic = word(&s), *list = word(&s);
            int si = name ? gm_shard_map_find(m, name) : -1;
            gm_shard_topic *t = topic ? (gm_shard_topic *)gm_shard_map_topic(m, topic) : NULL;
            if (!name || !topic || !list || word(&s))
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: assign: must be \"assign SHARD TOPIC PARTITIONS\"", where);
            else if (si < 0)
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: assign: shard %s is not declared above (shard NAME CONNINFO)",
                             where, name);
            else if (!t)
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: assign: topic %s is not declared above (topic NAME "
                             "PARTITIONS)",
                             where, topic);
            else
                rc = assign_list(t, si, list, where, m, err, err_len);
        } else {
            rc = gm_fail(err, err_len, GM_EINVAL,
                         "%s: unknown keyword \"%s\" (version, topic, shard, assign)", where, kw);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
    if (!rc && !version)
        rc = gm_fail(err, err_len, GM_EINVAL, "%s: empty: a shard map starts with \"version 1\"",
                     path);
    if (!rc && m->n_shards == 0)
        rc = gm_fail(err, err_len, GM_EINVAL, "%s: no shard declared", path);
    if (!rc && m->n_topics == 0)
        rc = gm_fail(err, err_len, GM_EINVAL, "%s: no topic declared", path);
    for (size_t i = 0; !rc && i < m->n_topics; i++)
        for (int p = 0; !rc && p < m->topics[i].partitions; p++)
            if (m->topics[i].owner[p] < 0)
                rc = gm_fail(err, err_len, GM_EINVAL,
                             "%s: partition %d of topic %s is assigned to no shard (every "
                             "partition belongs to exactly one)",
                             path, p, m->topics[i].topic);
    /* Co-location: a source's messages go to the same partition number in every topic
     * (the key is the source), so every topic is split alike and a source's usage events
     * and GPU windows are on one shard. */
    for (size_t i = 1; !rc && i < m->n_topics; i++) {
        const gm_shard_topic *a = &m->topics[0], *b = &m->topics[i];
        bool same = a->partitions == b->partitions;
        for (int p = 0; same && p < a->partitions; p++)
            same = a->owner[p] == b->owner[p];
        if (!same)
            rc = gm_fail(err, err_len, GM_EINVAL,
                         "%s: topic %s: must have the partitions of topic %s (%d) and the same "
                         "shard for each (co-location: a source's events of every topic on one "
                         "shard)",
                         path, b->topic, a->topic, a->partitions);
    }
    if (rc) {
        gm_shard_map_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int gm_shard_map_load(const char *path, gm_shard_map **out, char *err, size_t err_len)
{
    size_t len = 0;
    char *text = gm_read_file(path, &len, err, err_len);
    if (!text) {
        *out = NULL;
        return GM_EIO;
    }
    int rc = gm_shard_map_parse(text, len, path, out, err, err_len);
    free(text);
    return rc;
}

/* ---- A shard database ---------------------------------------------------------------*/

/* The database's record: its name (or "" when not a shard) and, per map topic, the
 * partitions it lists. Compared with the map, every difference named. */
int gm_shard_check_db(PGconn *c, const gm_shard_map *m, int shard, char *err, size_t err_len)
{
    const char *want = m->shards[shard].name;
    PGresult *r = PQexec(c, "SELECT name FROM gm.shard_identity");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc =
            gm_pg_fail(c, r, "reading gm.shard_identity (is the database migrated?)", err, err_len);
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 0), want)) {
        int rc =
            gm_fail(err, err_len, GM_EFENCED,
                    "shard %s: database %s on %s:%s is %s%s (gm.shard_identity): wrong "
                    "conninfo in the map, or run gridmeter shard init",
                    want, PQdb(c), PQhost(c), PQport(c), PQntuples(r) ? "shard " : "not a shard",
                    PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
        PQclear(r);
        return rc;
    }
    PQclear(r);
    r = PQexec(c, "SELECT t.topic, t.partitions, coalesce(string_agg(p.partition::text, ','"
                  " ORDER BY p.partition), '') FROM gm.shard_topics t LEFT JOIN"
                  " gm.shard_partitions p USING (topic) GROUP BY 1, 2 ORDER BY 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "reading gm.shard_partitions", err, err_len);
        PQclear(r);
        return rc;
    }
    int rc = 0;
    size_t seen = 0;
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        const gm_shard_topic *t = gm_shard_map_topic(m, PQgetvalue(r, i, 0));
        if (!t) {
            rc = gm_fail(err, err_len, GM_EFENCED,
                         "shard %s: the database shards topic %s, which the map does not", want,
                         PQgetvalue(r, i, 0));
            break;
        }
        seen++;
        char list[8192] = "";
        size_t w = 0;
        for (int p = 0; p < t->partitions && w < sizeof list - 8; p++)
            if (t->owner[p] == shard)
                w += (size_t)snprintf(list + w, sizeof list - w, "%s%d", w ? "," : "", p);
        if (atoi(PQgetvalue(r, i, 1)) != t->partitions || strcmp(list, PQgetvalue(r, i, 2)))
            rc = gm_fail(err, err_len, GM_EFENCED,
                         "shard %s: topic %s: the database holds partitions [%s] of %s, the "
                         "map gives it [%s] of %d (gm.shard_partitions; moving a partition "
                         "is a data move, docs/scaling.md)",
                         want, t->topic, PQgetvalue(r, i, 2), PQgetvalue(r, i, 1), list,
                         t->partitions);
    }
    PQclear(r);
    if (!rc && seen != m->n_topics)
        rc = gm_fail(err, err_len, GM_EFENCED,
                     "shard %s: the map shards %zu topics, the database records %zu (run "
                     "gridmeter shard init)",
                     want, m->n_topics, seen);
    return rc;
}

int gm_shard_init_db(PGconn *c, const gm_shard_map *m, int shard, char *err, size_t err_len)
{
    PGresult *r = PQexec(c, "SELECT (SELECT name FROM gm.shard_identity),"
                            " (SELECT count(*) FROM gm.shard_topics)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = gm_pg_fail(c, r, "reading gm.shard_identity", err, err_len);
        PQclear(r);
        return rc;
    }
    bool named = !PQgetisnull(r, 0, 0);
    bool listed = atoi(PQgetvalue(r, 0, 1)) > 0;
    PQclear(r);
    if (named || listed) /* already a shard: only the same part of the same map is fine */
        return gm_shard_check_db(c, m, shard, err, err_len);
    /* A database that rated partitions before it became a shard must hold only its own. */
    int rc = gm_pg_exec(c, "BEGIN", err, err_len);
    if (rc)
        return rc;
    const char *v[3] = {m->shards[shard].name};
    r = PQexecParams(c, "INSERT INTO gm.shard_identity (name) VALUES ($1)", 1, NULL, v, NULL, NULL,
                     0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = gm_pg_fail(c, r, "inserting gm.shard_identity", err, err_len);
    PQclear(r);
    for (size_t i = 0; !rc && i < m->n_topics; i++) {
        const gm_shard_topic *t = &m->topics[i];
        char n[16];
        snprintf(n, sizeof n, "%d", t->partitions);
        v[0] = t->topic;
        v[1] = n;
        r = PQexecParams(c, "INSERT INTO gm.shard_topics (topic, partitions) VALUES ($1, $2)", 2,
                         NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = gm_pg_fail(c, r, "inserting gm.shard_topics", err, err_len);
        PQclear(r);
        for (int p = 0; !rc && p < t->partitions; p++) {
            if (t->owner[p] != shard)
                continue;
            snprintf(n, sizeof n, "%d", p);
            r = PQexecParams(c, "INSERT INTO gm.shard_partitions VALUES ($1, $2)", 2, NULL, v, NULL,
                             NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                rc = gm_pg_fail(c, r, "inserting gm.shard_partitions", err, err_len);
            PQclear(r);
        }
    }
    if (!rc) {
        r = PQexec(c, "SELECT o.topic || '/' || o.partition FROM gm.consumer_offsets o"
                      " JOIN gm.shard_topics t USING (topic) WHERE NOT EXISTS (SELECT 1 FROM"
                      " gm.shard_partitions p WHERE p.topic = o.topic AND p.partition ="
                      " o.partition) LIMIT 1");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = gm_pg_fail(c, r, "reading gm.consumer_offsets", err, err_len);
        else if (PQntuples(r))
            rc = gm_fail(err, err_len, GM_EFENCED,
                         "shard %s: the database already rated partition %s, which the map "
                         "gives to another shard: nothing changed",
                         m->shards[shard].name, PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    char e2[256];
    if (rc) {
        if (gm_pg_exec(c, "ROLLBACK", e2, sizeof e2))
            gm_warn("shard", "msg=\"rollback failed\" error=\"%s\"", e2);
        return rc;
    }
    return gm_pg_exec(c, "COMMIT", err, err_len);
}

int gm_shard_session(PGconn *c, const char *shard, char *err, size_t err_len)
{
    const char *v[1] = {shard};
    PGresult *r = PQexecParams(c, "SELECT set_config('gridmeter.shard', $1, false)", 1, NULL, v,
                               NULL, NULL, 0);
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK
                 ? 0
                 : gm_pg_fail(c, r, "setting gridmeter.shard", err, err_len);
    PQclear(r);
    return rc;
}
