/* A bounded pool of PostgreSQL connections (role gm_api) shared by the connection threads:
 * connected lazily, waited for with a deadline (503 past it), reset when returned broken or
 * mid-transaction. */
#include "api_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct api_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *conninfo;
    int size, statement_timeout_ms;
    PGconn **conns; /* NULL: not connected yet */
    bool *busy;
};

api_pool *api__pool_new(const char *conninfo, int size, int statement_timeout_ms)
{
    api_pool *p = gm_xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->conninfo = gm_xstrdup(conninfo ? conninfo : "");
    p->size = size > 0 ? size : 1;
    p->statement_timeout_ms = statement_timeout_ms;
    p->conns = gm_xcalloc((size_t)p->size, sizeof *p->conns);
    p->busy = gm_xcalloc((size_t)p->size, sizeof *p->busy);
    return p;
}

void api__pool_free(api_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->size; i++)
        if (p->conns[i])
            PQfinish(p->conns[i]);
    free(p->conns);
    free(p->busy);
    free(p->conninfo);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static PGconn *connect_one(api_pool *p, char *err, size_t err_len)
{
    PGconn *c = gm_pg_connect(p->conninfo, "gridmeter-api", err, err_len);
    if (!c)
        return NULL;
    char sql[96];
    snprintf(sql, sizeof sql, "SET statement_timeout = %d", p->statement_timeout_ms);
    if (gm_pg_exec(c, sql, err, err_len)) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

PGconn *api__pool_get(api_pool *p, int wait_ms, char *err, size_t err_len)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait_ms / 1000;
    dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L)
        dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&p->mu);
    int slot = -1;
    for (;;) {
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->busy[i] && p->conns[i])
                slot = i;
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->busy[i])
                slot = i;
        if (slot >= 0)
            break;
        if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            gm_fail(err, err_len, GM_EUNAVAIL,
                    "all %d database connections busy for %d ms (db_pool_size)", p->size, wait_ms);
            return NULL;
        }
    }
    p->busy[slot] = true;
    PGconn *c = p->conns[slot];
    p->conns[slot] = NULL;
    pthread_mutex_unlock(&p->mu);
    if (c && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    }
    if (!c)
        c = connect_one(p, err, err_len);
    /* A clock moved at run time (tests; GRIDMETER_NOW is fixed at start and already in the
     * connection's options) is told to the session again, so that gm.now() follows it. */
    int64_t unknown = INT64_MIN;
    if (c && gm_clock_is_set() && gm_pg_sync_clock(c, &unknown, err, err_len)) {
        PQfinish(c);
        c = NULL;
    }
    if (!c) {
        pthread_mutex_lock(&p->mu);
        p->busy[slot] = false;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return c;
}

void api__pool_put(api_pool *p, PGconn *c)
{
    if (!c)
        return;
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    } else if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        PQclear(PQexec(c, "ROLLBACK"));
        if (PQtransactionStatus(c) != PQTRANS_IDLE) {
            PQfinish(c);
            c = NULL;
        }
    }
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++)
        if (p->busy[i] && !p->conns[i]) {
            p->busy[i] = false;
            p->conns[i] = c;
            break;
        }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}
