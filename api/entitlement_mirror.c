/* The entitlement mirror: each API server's in-memory copy of what GET
 * /v1/tenants/{t}/entitlement answers from (gm.budgets, gm.month_spend, gm.budget_alerts),
 * kept current by push, not by a TTL. One thread per server owns a dedicated PostgreSQL
 * connection that LISTENs on gm_entitlement (sql/0021: a trigger on each table NOTIFYs the
 * new row; PostgreSQL delivers at COMMIT, in commit order, never for a rollback), then reads
 * everything in one REPEATABLE READ snapshot and applies, from then on, each notification
 * that snapshot did not already contain (the payload's xid against the snapshot).
 *
 * Freshness is proven, not assumed: every heartbeat_ms the thread NOTIFYs the channel itself;
 * when that notification comes back, every commit before it was sent has been applied
 * (notifications arrive in commit order), so the mirror is exact as of the send instant.
 * Readers use the mirror only while that proof is younger than max_stale_ms and the thread is
 * connected with its load done; otherwise they answer from PostgreSQL (entitlement.c). A
 * lost connection (pg_terminate_backend, a restart) reconnects with backoff and loads again;
 * a TRUNCATE of a table (notification r) loads again. docs/api.md, "Budgets and alerts". */
#include "api_int.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENT_CHANNEL "gm_entitlement"

typedef struct {
    int64_t period_us;
    char currency[4];
    char amount[64];
    gm_i128 amount_e18;
    int64_t updated_us;
} ent_month;

typedef struct {
    int64_t period_us;
    int pct;
    gm_i128 limit_e18; /* the limit it was raised under (sql/0023) */
    char currency[4];
} ent_alert;

typedef struct ent_tenant {
    struct ent_tenant *next;
    char *tenant;
    bool has_budget, hard;
    char currency[4];
    char limit[64];
    gm_i128 limit_e18;
    int thr[16], n_thr;
    ent_month *months;
    int n_months, cap_months;
    ent_alert *alerts;
    int n_alerts, cap_alerts;
} ent_tenant;

typedef struct {
    ent_tenant **b;
    size_t nb, count;
} ent_map;

typedef struct {
    uint64_t xmin, xmax;
    uint64_t *xip;
    size_t n_xip;
} ent_snap;

struct api_mirror {
    char *conninfo;
    int max_stale_ms, heartbeat_ms;
    pthread_rwlock_t lock;
    ent_map map;           /* under lock */
    int64_t floor_us;      /* months before this were not loaded: such answers come from the DB */
    bool usable;           /* connected and loaded (under lock) */
    int64_t fresh_mono_us; /* every commit before this monotonic instant is applied (lock) */
    ent_snap snap;         /* the load's snapshot (thread only) */
    PGconn *conn; /* the listener's (thread only; here, not on its stack, for leak checkers) */
    pthread_t thread;
    bool started;
    int wake[2];
    int stop; /* __atomic */
    char token[40];
    /* counters for /metrics */
    uint64_t loads, reconnects, notifications, answers_memory, answers_db;
};

/* ---- The map --------------------------------------------------------------------------- */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void map_free(ent_map *m)
{
    for (size_t i = 0; i < m->nb; i++)
        for (ent_tenant *t = m->b[i], *n; t; t = n) {
            n = t->next;
            free(t->tenant);
            free(t->months);
            free(t->alerts);
            free(t);
        }
    free(m->b);
    memset(m, 0, sizeof *m);
}

static ent_tenant *map_find(const ent_map *m, const char *tenant)
{
    if (!m->nb)
        return NULL;
    for (ent_tenant *t = m->b[hash_str(tenant) & (m->nb - 1)]; t; t = t->next)
        if (!strcmp(t->tenant, tenant))
            return t;
    return NULL;
}

static ent_tenant *map_get(ent_map *m, const char *tenant)
{
    ent_tenant *t = map_find(m, tenant);
    if (t)
        return t;
    if (m->count + 1 > m->nb) { /* grow to keep chains short (power of two) */
        size_t nb = m->nb ? m->nb * 2 : 1024;
        ent_tenant **b = gm_xcalloc(nb, sizeof *b);
        for (size_t i = 0; i < m->nb; i++)
            for (ent_tenant *x = m->b[i], *n; x; x = n) {
                n = x->next;
                size_t k = hash_str(x->tenant) & (nb - 1);
                x->next = b[k];
                b[k] = x;
            }
        free(m->b);
        m->b = b;
        m->nb = nb;
    }
    t = gm_xcalloc(1, sizeof *t);
    t->tenant = gm_xstrdup(tenant);
    size_t k = hash_str(tenant) & (m->nb - 1);
    t->next = m->b[k];
    m->b[k] = t;
    m->count++;
    return t;
}

static int parse_thresholds(const char *s, int out[16])
{
    int n = 0;
    while (*s && n < 16) {
        out[n++] = atoi(s);
        s += strcspn(s, ",");
        s += *s == ',';
    }
    return n;
}

static bool set_budget(ent_tenant *t, const char *currency, const char *limit, bool hard,
                       const char *thresholds)
{
    gm_i128 v;
    if (strlen(currency) != 3 || strlen(limit) >= sizeof t->limit || !api__num_e18(limit, &v))
        return false;
    t->has_budget = true;
    memcpy(t->currency, currency, 4);
    snprintf(t->limit, sizeof t->limit, "%s", limit);
    t->limit_e18 = v;
    t->hard = hard;
    t->n_thr = parse_thresholds(thresholds, t->thr);
    return true;
}

static bool set_month(ent_tenant *t, int64_t period, const char *currency, const char *amount,
                      int64_t updated)
{
    gm_i128 v;
    if (strlen(currency) != 3 || strlen(amount) >= sizeof t->months[0].amount ||
        !api__num_e18(amount, &v))
        return false;
    ent_month *mo = NULL;
    for (int i = 0; i < t->n_months && !mo; i++)
        if (t->months[i].period_us == period && !strcmp(t->months[i].currency, currency))
            mo = &t->months[i];
    if (!mo) {
        if (t->n_months == t->cap_months) {
            t->cap_months = t->cap_months ? t->cap_months * 2 : 2;
            t->months = gm_xrealloc(t->months, (size_t)t->cap_months * sizeof *t->months);
        }
        mo = &t->months[t->n_months++];
        mo->period_us = period;
        memcpy(mo->currency, currency, 4);
    }
    snprintf(mo->amount, sizeof mo->amount, "%s", amount);
    mo->amount_e18 = v;
    mo->updated_us = updated;
    return true;
}

static void del_month(ent_tenant *t, int64_t period, const char *currency)
{
    for (int i = 0; i < t->n_months; i++)
        if (t->months[i].period_us == period && !strcmp(t->months[i].currency, currency)) {
            t->months[i] = t->months[--t->n_months];
            return;
        }
}

static bool set_alert(ent_tenant *t, int64_t period, int pct, const char *limit,
                      const char *currency, bool present)
{
    gm_i128 lim = 0;
    char why[128];
    if (gm_dec_parse(limit, strlen(limit), 18, &lim, why, sizeof why) || strlen(currency) != 3)
        return false;
    for (int i = 0; i < t->n_alerts; i++)
        if (t->alerts[i].period_us == period && t->alerts[i].pct == pct &&
            t->alerts[i].limit_e18 == lim && !strcmp(t->alerts[i].currency, currency)) {
            if (!present)
                t->alerts[i] = t->alerts[--t->n_alerts];
            return true;
        }
    if (!present)
        return true;
    if (t->n_alerts == t->cap_alerts) {
        t->cap_alerts = t->cap_alerts ? t->cap_alerts * 2 : 4;
        t->alerts = gm_xrealloc(t->alerts, (size_t)t->cap_alerts * sizeof *t->alerts);
    }
    t->alerts[t->n_alerts] = (ent_alert){period, pct, lim, ""};
    memcpy(t->alerts[t->n_alerts++].currency, currency, 4);
    return true;
}

/* ---- Snapshots ------------------------------------------------------------------------- */
/* pg_snapshot text "xmin:xmax:xip,xip,..." */
static bool snap_parse(const char *s, ent_snap *out)
{
    char *e;
    free(out->xip);
    memset(out, 0, sizeof *out);
    out->xmin = strtoull(s, &e, 10);
    if (*e != ':')
        return false;
    out->xmax = strtoull(e + 1, &e, 10);
    if (*e != ':')
        return false;
    for (const char *p = e + 1; *p;) {
        out->xip = gm_xrealloc(out->xip, (out->n_xip + 1) * sizeof *out->xip);
        out->xip[out->n_xip++] = strtoull(p, &e, 10);
        p = e + (*e == ',');
        if (e == p && *p)
            return false;
    }
    return true;
}

/* Whether the load's snapshot already saw the transaction's effects. */
static bool snap_sees(const ent_snap *s, uint64_t xid)
{
    if (xid < s->xmin)
        return true;
    if (xid >= s->xmax)
        return false;
    for (size_t i = 0; i < s->n_xip; i++)
        if (s->xip[i] == xid)
            return false;
    return true;
}

/* ---- Loading --------------------------------------------------------------------------- */
static PGresult *q(PGconn *c, const char *sql, int n, const char *const *p, char *err,
                   size_t err_len)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        gm_pg_fail(c, r, "entitlement load", err, err_len);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* Reads the three tables in one snapshot into a new map and puts it in place. */
static int load(api_mirror *m, PGconn *c, char *err, size_t err_len)
{
    int64_t t0 = gm_mono_us();
    int64_t floor = gm_month_start(gm_month_start(gm_now_us()) - 1); /* last month on */
    char fl[32];
    snprintf(fl, sizeof fl, "%lld", (long long)floor);
    const char *p[1] = {fl};
    ent_map nm = {0};
    PGresult *r = q(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err, err_len);
    if (!r)
        return GM_EDB;
    PQclear(r);
    int rc = GM_EDB;
    if (!(r = q(c, "SELECT pg_current_snapshot()::text", 0, NULL, err, err_len)))
        goto out;
    bool ok = PQntuples(r) == 1 && snap_parse(PQgetvalue(r, 0, 0), &m->snap);
    PQclear(r);
    if (!ok) {
        gm_fail(err, err_len, GM_EDB, "entitlement load: unreadable snapshot");
        goto out;
    }
    if (!(r = q(c,
                "SELECT tenant, currency, monthly_limit::text, hard_limit,"
                " array_to_string(thresholds, ',') FROM gm.budgets",
                0, NULL, err, err_len)))
        goto out;
    for (int i = 0; i < PQntuples(r); i++)
        set_budget(map_get(&nm, PQgetvalue(r, i, 0)), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                   !strcmp(PQgetvalue(r, i, 3), "t"), PQgetvalue(r, i, 4));
    PQclear(r);
    if (!(r = q(c,
                "SELECT tenant, (extract(epoch FROM period_start) * 1000000)::bigint, currency,"
                " amount::text, (extract(epoch FROM updated_at) * 1000000)::bigint"
                " FROM gm.month_spend WHERE period_start >= 'epoch'::timestamptz + $1::bigint * "
                "interval '1 microsecond'",
                1, p, err, err_len)))
        goto out;
    for (int i = 0; i < PQntuples(r); i++)
        set_month(map_get(&nm, PQgetvalue(r, i, 0)), atoll(PQgetvalue(r, i, 1)),
                  PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), atoll(PQgetvalue(r, i, 4)));
    PQclear(r);
    if (!(r = q(
              c,
              "SELECT tenant, (extract(epoch FROM period_start) * 1000000)::bigint,"
              " threshold_percent, monthly_limit::text, currency FROM gm.budget_alerts"
              " WHERE period_start >= 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'",
              1, p, err, err_len)))
        goto out;
    for (int i = 0; i < PQntuples(r); i++)
        (void)set_alert(map_get(&nm, PQgetvalue(r, i, 0)), atoll(PQgetvalue(r, i, 1)),
                        atoi(PQgetvalue(r, i, 2)), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), true);
    PQclear(r);
    rc = 0;
out:
    if ((r = PQexec(c, rc ? "ROLLBACK" : "COMMIT")))
        PQclear(r);
    if (rc) {
        map_free(&nm);
        return rc;
    }
    pthread_rwlock_wrlock(&m->lock);
    map_free(&m->map);
    m->map = nm;
    m->floor_us = floor;
    m->fresh_mono_us = t0; /* the snapshot was taken after t0 */
    m->usable = true;
    pthread_rwlock_unlock(&m->lock);
    __atomic_fetch_add(&m->loads, 1, __ATOMIC_RELAXED);
    return 0;
}

/* ---- Notifications --------------------------------------------------------------------- */
/* Applies one payload (sql/0021); the caller holds the write lock. Returns 1 when the
 * mirror must be loaded again, 2 for this thread's heartbeat (seq in *hb), 0 otherwise. */
static int apply(api_mirror *m, char *s, uint64_t *hb)
{
    char kind = s[0];
    if (!kind || s[1] != ' ')
        return 0;
    char *f[7] = {0};
    int want = kind == 's' || kind == 'S' || kind == 'b' ? 6
               : kind == 'a' || kind == 'A'              ? 6
               : kind == 'h' || kind == 'B'              ? 2
                                                         : 1;
    char *p = s + 2;
    int n = 0;
    for (; n < want && p && *p; n++) {
        f[n] = p;
        if (n == want - 1 && kind != 'h' && kind != 'r') {
            n++;
            break; /* the tenant: the rest */
        }
        p = strchr(p, ' ');
        if (p)
            *p++ = 0;
    }
    if (kind == 'h') {
        if (f[0] && f[1] && !strcmp(f[0], m->token)) {
            *hb = strtoull(f[1], NULL, 10);
            return 2;
        }
        return 0;
    }
    if (!f[0] || snap_sees(&m->snap, strtoull(f[0], NULL, 10)))
        return 0; /* the load already contains it */
    if (kind == 'r')
        return 1;
    if (kind == 'B' && f[1]) {
        ent_tenant *t = map_find(&m->map, f[1]);
        if (t)
            t->has_budget = false;
        return 0;
    }
    /* fields after the xid, then the tenant (the rest of the payload) */
    if (n < want) /* malformed: never guess, load again */
        return 1;
    char *tenant = f[want - 1];
    bool ok = true;
    if (kind == 's')
        ok = set_month(map_get(&m->map, tenant), atoll(f[1]), f[2], f[3], atoll(f[4]));
    else if (kind == 'S')
        del_month(map_get(&m->map, tenant), atoll(f[1]), f[2]);
    else if (kind == 'b')
        ok = set_budget(map_get(&m->map, tenant), f[1], f[2], !strcmp(f[3], "t"), f[4]);
    else if (kind == 'a' || kind == 'A')
        ok = set_alert(map_get(&m->map, tenant), atoll(f[1]), atoi(f[2]), f[3], f[4], kind == 'a');
    return ok ? 0 : 1;
}

static bool wait_or_stop(api_mirror *m, int ms)
{
    struct pollfd pf = {m->wake[0], POLLIN, 0};
    poll(&pf, 1, ms);
    return !__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE);
}

static void drop(api_mirror *m, PGconn **c, const char *why)
{
    pthread_rwlock_wrlock(&m->lock);
    m->usable = false;
    pthread_rwlock_unlock(&m->lock);
    if (*c) {
        gm_warn("api",
                "msg=\"entitlement listener lost its connection; answering from the "
                "database until it has reconnected and loaded again\" error=\"%s\"",
                why);
        PQfinish(*c);
        *c = NULL;
    }
}

static void *run(void *arg)
{
    api_mirror *m = arg;
    int backoff_ms = 50;
    uint64_t seq = 0, hb_seq = 0;
    int64_t hb_sent = 0, next_hb = 0, last_proof = 0;
    bool hb_busy = false, reload = false, first = true;
    char err[512];
    while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
        if (!m->conn || (reload && !hb_busy)) { /* a load waits for the heartbeat's answer */
            if (!m->conn) {
                if (!first)
                    __atomic_fetch_add(&m->reconnects, 1, __ATOMIC_RELAXED);
                first = false;
                m->conn = gm_pg_connect(m->conninfo, "gridmeter-api-entitlement", err, sizeof err);
                if (m->conn &&
                    (gm_pg_exec(m->conn, "SET statement_timeout = 30000", err, sizeof err) ||
                     gm_pg_exec(m->conn, "LISTEN " ENT_CHANNEL, err, sizeof err))) {
                    PQfinish(m->conn);
                    m->conn = NULL;
                }
                hb_busy = false;
            }
            if (m->conn && load(m, m->conn, err, sizeof err)) {
                PQfinish(m->conn);
                m->conn = NULL;
            }
            if (!m->conn) {
                gm_warn("api",
                        "msg=\"entitlement listener cannot connect or load\" error=\"%s\" "
                        "retry_ms=%d",
                        err, backoff_ms);
                if (!wait_or_stop(m, backoff_ms))
                    break;
                backoff_ms = backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2;
                continue;
            }
            backoff_ms = 50;
            reload = false;
            last_proof = gm_mono_us();
            next_hb = 0;
        }
        int64_t now = gm_mono_us();
        if (!hb_busy && now >= next_hb) {
            char sql[128];
            snprintf(sql, sizeof sql, "SELECT pg_notify('" ENT_CHANNEL "', 'h %s %llu')", m->token,
                     (unsigned long long)++seq);
            if (!PQsendQuery(m->conn, sql)) {
                drop(m, &m->conn, PQerrorMessage(m->conn));
                continue;
            }
            hb_busy = true;
            hb_seq = seq;
            hb_sent = now;
            next_hb = now + (int64_t)m->heartbeat_ms * 1000;
        }
        /* no proof for this long: the connection is as good as lost */
        int64_t dead_us = (int64_t)(m->max_stale_ms * 4 > 2000 ? m->max_stale_ms * 4 : 2000) * 1000;
        if (now - last_proof > dead_us) {
            drop(m, &m->conn, "no heartbeat came back");
            continue;
        }
        int wait_ms = (int)((next_hb - now) / 1000) + 1;
        if (hb_busy || wait_ms < 1)
            wait_ms = m->heartbeat_ms;
        struct pollfd pf[2] = {{PQsocket(m->conn), POLLIN, 0}, {m->wake[0], POLLIN, 0}};
        if (poll(pf, 2, wait_ms) < 0 && errno != EINTR) {
            drop(m, &m->conn, strerror(errno));
            continue;
        }
        if (__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE))
            break;
        if ((pf[0].revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(m->conn)) {
            drop(m, &m->conn, PQerrorMessage(m->conn));
            continue;
        }
        while (hb_busy && !PQisBusy(m->conn)) {
            PGresult *r = PQgetResult(m->conn);
            if (!r) {
                hb_busy = false;
                break;
            }
            bool bad = PQresultStatus(r) != PGRES_TUPLES_OK;
            PQclear(r);
            if (bad) {
                drop(m, &m->conn, PQerrorMessage(m->conn));
                break;
            }
        }
        if (!m->conn)
            continue;
        PGnotify *nf = PQnotifies(m->conn);
        if (nf) {
            pthread_rwlock_wrlock(&m->lock);
            for (; nf; nf = PQnotifies(m->conn)) {
                uint64_t got = 0;
                int a = apply(m, nf->extra, &got);
                if (a == 1)
                    reload = true;
                else if (a == 2 && got == hb_seq && !reload) {
                    m->fresh_mono_us = hb_sent; /* everything committed before it is in */
                    last_proof = gm_mono_us();
                }
                __atomic_fetch_add(&m->notifications, 1, __ATOMIC_RELAXED);
                PQfreemem(nf);
            }
            pthread_rwlock_unlock(&m->lock);
        }
        if (PQstatus(m->conn) != CONNECTION_OK)
            drop(m, &m->conn, PQerrorMessage(m->conn));
        else if (reload) { /* answers come from the database until the load is done */
            pthread_rwlock_wrlock(&m->lock);
            m->usable = false;
            pthread_rwlock_unlock(&m->lock);
        }
    }
    if (m->conn)
        PQfinish(m->conn);
    m->conn = NULL;
    return NULL;
}

/* ---- Public ---------------------------------------------------------------------------- */
api_mirror *api__mirror_start(const char *conninfo, int max_stale_ms, uint64_t seed, char *err,
                              size_t err_len)
{
    api_mirror *m = gm_xcalloc(1, sizeof *m);
    m->conninfo = gm_xstrdup(conninfo ? conninfo : "");
    m->max_stale_ms = max_stale_ms;
    m->heartbeat_ms = max_stale_ms / 4 > 5 ? max_stale_ms / 4 : 5;
    if (m->heartbeat_ms > 250)
        m->heartbeat_ms = 250;
    pthread_rwlock_init(&m->lock, NULL);
    snprintf(m->token, sizeof m->token, "%d-%016llx", (int)getpid(), (unsigned long long)seed);
    if (pipe(m->wake)) {
        gm_fail(err, err_len, GM_EIO, "entitlement listener: pipe: %s", strerror(errno));
        api__mirror_stop(m);
        return NULL;
    }
    if (pthread_create(&m->thread, NULL, run, m)) {
        gm_fail(err, err_len, GM_EIO, "entitlement listener: cannot start its thread");
        api__mirror_stop(m);
        return NULL;
    }
    m->started = true;
    /* The first load, before the server listens, for up to 2 s (else the first answers come
     * from the database, as whenever the mirror cannot vouch for them). */
    for (int64_t end = gm_mono_us() + 2 * GM_US_PER_SEC; gm_mono_us() < end;) {
        pthread_rwlock_rdlock(&m->lock);
        bool up = m->usable;
        pthread_rwlock_unlock(&m->lock);
        if (up)
            break;
        usleep(2000);
    }
    return m;
}

void api__mirror_stop(api_mirror *m)
{
    if (!m)
        return;
    __atomic_store_n(&m->stop, 1, __ATOMIC_RELEASE);
    if (m->started) {
        if (write(m->wake[1], "x", 1) < 0)
            gm_warn("api", "msg=\"entitlement listener wake failed\"");
        pthread_join(m->thread, NULL);
    }
    if (m->wake[0] > 0) {
        close(m->wake[0]);
        close(m->wake[1]);
    }
    map_free(&m->map);
    free(m->snap.xip);
    pthread_rwlock_destroy(&m->lock);
    free(m->conninfo);
    free(m);
}

bool api__mirror_answer(api_mirror *m, const char *tenant, int64_t now_us, api_ent_view *v)
{
    if (!m)
        return false;
    int64_t month = gm_month_start(now_us);
    pthread_rwlock_rdlock(&m->lock);
    int64_t stale = gm_mono_us() - m->fresh_mono_us;
    if (!m->usable || stale > (int64_t)m->max_stale_ms * 1000 || month < m->floor_us) {
        pthread_rwlock_unlock(&m->lock);
        return false;
    }
    memset(v, 0, sizeof *v);
    v->period_us = month;
    v->now_us = now_us;
    v->stale_us = stale < 0 ? 0 : stale;
    v->as_of_us = now_us - v->stale_us;
    v->spend_updated_us = -1;
    const ent_tenant *t = map_find(&m->map, tenant);
    if (t && t->has_budget) {
        v->has_budget = true;
        v->hard = t->hard;
        memcpy(v->currency, t->currency, 4);
        snprintf(v->limit, sizeof v->limit, "%s", t->limit);
        memcpy(v->thr, t->thr, sizeof v->thr);
        v->n_thr = t->n_thr;
        gm_i128 spend = 0;
        snprintf(v->spend, sizeof v->spend, "0");
        for (int i = 0; i < t->n_months; i++)
            if (t->months[i].period_us == month && !strcmp(t->months[i].currency, t->currency)) {
                spend = t->months[i].amount_e18;
                snprintf(v->spend, sizeof v->spend, "%s", t->months[i].amount);
                v->spend_updated_us = t->months[i].updated_us;
            }
        for (int i = 0; i < t->n_alerts && v->n_crossed < (int)GM_ARRAY_LEN(v->crossed); i++)
            if (t->alerts[i].period_us == month && t->alerts[i].limit_e18 == t->limit_e18 &&
                !strcmp(t->alerts[i].currency, t->currency))
                v->crossed[v->n_crossed++] = t->alerts[i].pct; /* of the current limit */
        v->allowed = !t->hard || spend < t->limit_e18;
    } else {
        v->allowed = true;
    }
    pthread_rwlock_unlock(&m->lock);
    /* crossed thresholds in increasing order, as the database answer lists them */
    for (int i = 1; i < v->n_crossed; i++)
        for (int k = i; k > 0 && v->crossed[k - 1] > v->crossed[k]; k--) {
            int x = v->crossed[k];
            v->crossed[k] = v->crossed[k - 1];
            v->crossed[k - 1] = x;
        }
    snprintf(v->source, sizeof v->source, "memory");
    __atomic_fetch_add(&m->answers_memory, 1, __ATOMIC_RELAXED);
    return true;
}

void api__mirror_count_db(api_mirror *m)
{
    if (m)
        __atomic_fetch_add(&m->answers_db, 1, __ATOMIC_RELAXED);
}

void api__mirror_metrics(api_mirror *m, api_buf *b)
{
    uint64_t mem = 0, dbn = 0, loads = 0, rec = 0, nots = 0;
    int64_t stale = -1;
    bool usable = false;
    if (m) {
        mem = __atomic_load_n(&m->answers_memory, __ATOMIC_RELAXED);
        dbn = __atomic_load_n(&m->answers_db, __ATOMIC_RELAXED);
        loads = __atomic_load_n(&m->loads, __ATOMIC_RELAXED);
        rec = __atomic_load_n(&m->reconnects, __ATOMIC_RELAXED);
        nots = __atomic_load_n(&m->notifications, __ATOMIC_RELAXED);
        pthread_rwlock_rdlock(&m->lock);
        usable = m->usable;
        stale = gm_mono_us() - m->fresh_mono_us;
        pthread_rwlock_unlock(&m->lock);
    }
    api__buf_printf(
        b,
        "# HELP gridmeter_api_entitlement_answers_total Entitlement answers by source (memory: "
        "the pushed mirror; database: a direct query).\n"
        "# TYPE gridmeter_api_entitlement_answers_total counter\n"
        "gridmeter_api_entitlement_answers_total{source=\"memory\"} %llu\n"
        "gridmeter_api_entitlement_answers_total{source=\"database\"} %llu\n"
        "# HELP gridmeter_api_entitlement_mirror_usable 1 while the mirror is connected, loaded "
        "and proven fresh.\n"
        "# TYPE gridmeter_api_entitlement_mirror_usable gauge\n"
        "gridmeter_api_entitlement_mirror_usable %d\n"
        "# HELP gridmeter_api_entitlement_mirror_staleness_seconds Age of the mirror's last "
        "freshness proof.\n"
        "# TYPE gridmeter_api_entitlement_mirror_staleness_seconds gauge\n"
        "gridmeter_api_entitlement_mirror_staleness_seconds %lld.%06lld\n"
        "# HELP gridmeter_api_entitlement_mirror_loads_total Full loads of the mirror (start, "
        "reconnect, truncate).\n"
        "# TYPE gridmeter_api_entitlement_mirror_loads_total counter\n"
        "gridmeter_api_entitlement_mirror_loads_total %llu\n"
        "# HELP gridmeter_api_entitlement_mirror_reconnects_total Listener reconnections.\n"
        "# TYPE gridmeter_api_entitlement_mirror_reconnects_total counter\n"
        "gridmeter_api_entitlement_mirror_reconnects_total %llu\n"
        "# HELP gridmeter_api_entitlement_notifications_total Notifications received on "
        "gm_entitlement (heartbeats included).\n"
        "# TYPE gridmeter_api_entitlement_notifications_total counter\n"
        "gridmeter_api_entitlement_notifications_total %llu\n",
        (unsigned long long)mem, (unsigned long long)dbn,
        m && usable && stale <= (int64_t)m->max_stale_ms * 1000 ? 1 : 0,
        (long long)(stale < 0 ? 0 : stale / 1000000), (long long)(stale < 0 ? 0 : stale % 1000000),
        (unsigned long long)loads, (unsigned long long)rec, (unsigned long long)nots);
}
