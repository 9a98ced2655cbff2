/* Idempotency-Key on POST: the record and the effect commit in one transaction.
 *
 * A POST runs as (on the handler's pooled connection):
 *   BEGIN [ISOLATION LEVEL REPEATABLE READ: routes flagged so]; gridmeter.now := the instant
 *   SELECT pg_try_advisory_xact_lock(<key id, Idempotency-Key>)  false: 409, another request
 *                                                                with this key is running
 *   DELETE the record if older than the retention; SELECT the record
 *     present: replay it (Idempotent-Replayed: true), or 422 when method, path or body differ
 *   SAVEPOINT gm_effect; the handler (its statements join this transaction:
 *     gm_pg_begin_or_join in billing/ and ledger/)
 *   a final answer (2xx; 4xx but 408, 409, 423, 425, 429): for a 4xx ROLLBACK TO SAVEPOINT
 *     (a refusal leaves nothing), INSERT the record with the answer, COMMIT
 *   any other answer (5xx, 409 "grace window still open", serialization failures, 429, ...):
 *     ROLLBACK, nothing stored, so a retry with the same key runs again
 *
 * Invariants:
 *   I1 after a crash at any point, either the effect and its record exist, or neither;
 *   I2 only final answers are replayed; a failed COMMIT replaces the answer (409 or 503);
 *   I3 a record older than the retention is never replayed, and the server deletes it (at
 *      most once a minute of its clock, before a POST; sql/0007 indexes created_at);
 *   I4 two requests with one key never run their handlers at the same time.
 * The stored path is the decoded one, so two spellings of one path are the same request. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

bool api__idem_final(int status)
{
    if (status >= 200 && status <= 299)
        return true;
    return status >= 400 && status <= 499 && status != 408 && status != 409 && status != 423 &&
           status != 425 && status != 429;
}

static void canonical_path(const api_target *t, api_buf *b)
{
    for (size_t i = 0; i < t->n_seg; i++) {
        api__buf_add(b, "/", 1);
        api__buf_str(b, t->seg[i]);
    }
}

static void retry_after(api_req *r, const char *s)
{
    snprintf(r->header_name, sizeof r->header_name, "Retry-After");
    snprintf(r->header_value, sizeof r->header_value, "%s", s);
}

static void rollback(api_req *r)
{
    PQclear(PQexec(r->db, "ROLLBACK"));
}

static int64_t cutoff_us(api_req *r)
{
    return r->now_us - (int64_t)api__config(r->srv)->idempotency_retention_hours * GM_US_PER_HOUR;
}

bool api__idem_begin(api_req *r, const api_route_spec *rt, const char *ikey, api_idem *st)
{
    memset(st, 0, sizeof *st);
    snprintf(st->key, sizeof st->key, "%s", ikey);
    api_buf hb = {0};
    api__buf_str(&hb, rt->info.method);
    api__buf_add(&hb, "\n", 1);
    canonical_path(r->target, &hb);
    api__buf_add(&hb, "\n", 1);
    api__buf_add(&hb, r->body, r->body_len);
    gm_api_sha256(hb.p, hb.len, st->hash);
    free(hb.p);
    char err[512];
    if (gm_pg_begin(r->db,
                    rt->flags & API_RF_REPEATABLE_READ ? "ISOLATION LEVEL REPEATABLE READ" : NULL,
                    r->now_us, err, sizeof err)) {
        gm_error("api", "msg=\"idempotency: BEGIN failed\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "the database is not available; retry shortly");
        retry_after(r, "1");
        return false;
    }
    const char *lp[2] = {r->auth.key_id, st->key};
    PGresult *res = PQexecParams(r->db,
                                 "SELECT pg_try_advisory_xact_lock(hashtextextended("
                                 "'gm.idempotency/' || $1 || '/' || $2, 0))",
                                 2, NULL, lp, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "idempotency");
        PQclear(res);
        rollback(r);
        return false;
    }
    bool locked = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!locked) {
        api__problem(r, 409, "idempotency-in-progress", "Idempotency-Key",
                     "Idempotency-Key: a request with this key is being processed; retry");
        retry_after(r, "1");
        rollback(r);
        return false;
    }
    char cut[40];
    api__time_param(cutoff_us(r), cut);
    const char *dp[3] = {r->auth.key_id, st->key, cut};
    res = PQexecParams(r->db,
                       "DELETE FROM gm.idempotency WHERE key_id = $1 AND idem_key = $2"
                       " AND created_at < $3::timestamptz",
                       3, NULL, dp, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        api__db_problem(r, res, "idempotency");
        PQclear(res);
        rollback(r);
        return false;
    }
    PQclear(res);
    res = PQexecParams(r->db,
                       "SELECT request_hash = $3, status, content_type, body FROM gm.idempotency"
                       " WHERE key_id = $1 AND idem_key = $2",
                       3, NULL, (const char *[]){r->auth.key_id, st->key, (const char *)st->hash},
                       (int[]){0, 0, 32}, (int[]){0, 0, 1}, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "idempotency");
        PQclear(res);
        rollback(r);
        return false;
    }
    if (PQntuples(res) == 1) {
        if (PQgetvalue(res, 0, 0)[0] != 't') {
            api__problem(r, 422, "idempotency-key-reused", "Idempotency-Key",
                         "Idempotency-Key: already used with another method, path or body");
        } else if (PQgetisnull(res, 0, 1)) {
            /* written by a version that claimed before running: the outcome is unknown */
            api__problem(r, 409, "idempotency-in-progress", "Idempotency-Key",
                         "Idempotency-Key: the first request with this key did not record its "
                         "answer; check its effect, then use a new key");
        } else {
            r->status = atoi(PQgetvalue(res, 0, 1));
            snprintf(r->header_name, sizeof r->header_name, "Idempotent-Replayed");
            snprintf(r->header_value, sizeof r->header_value, "true");
            r->ctype = !strcmp(PQgetvalue(res, 0, 2), "application/problem+json")
                           ? "application/problem+json"
                           : "application/json";
            free(r->resp);
            r->resp = gm_xstrdup(PQgetvalue(res, 0, 3));
            r->resp_len = strlen(r->resp);
        }
        PQclear(res);
        rollback(r);
        return false;
    }
    PQclear(res);
    if (gm_pg_exec(r->db, "SAVEPOINT gm_effect", err, sizeof err)) {
        gm_error("api", "msg=\"idempotency: SAVEPOINT failed\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "the database is not available; retry shortly");
        retry_after(r, "1");
        rollback(r);
        return false;
    }
    st->open = true;
    return true;
}

/* Replaces the answer after a failed COMMIT: the effect was not saved. */
static void commit_failed(api_req *r, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    free(r->idem_store);
    r->idem_store = NULL;
    r->header_name[0] = 0;
    if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01"))) {
        api__problem(r, 409, "conflict", NULL,
                     "a concurrent change conflicted; nothing was saved: retry with the same "
                     "Idempotency-Key");
        retry_after(r, "1");
    } else {
        gm_error("api", "msg=\"commit failed\" sqlstate=%s err=\"%s\"", state ? state : "",
                 PQerrorMessage(r->db));
        api__problem(r, 503, "unavailable", NULL,
                     "the change was not saved (the commit failed); retry with the same "
                     "Idempotency-Key");
        retry_after(r, "1");
    }
}

void api__idem_finish(api_req *r, api_idem *st)
{
    if (!st->open)
        return;
    st->open = false;
    PGTransactionStatusType ts = PQtransactionStatus(r->db);
    if (ts == PQTRANS_IDLE) {
        /* a handler ended the request's transaction itself: a bug (gm_pg_begin_or_join) */
        gm_error("api", "msg=\"handler ended the request transaction\" path=\"%s\"", r->path);
        free(r->idem_store);
        r->idem_store = NULL;
        api__problem(r, 500, "internal", NULL, "transaction handling error (logged)");
        return;
    }
    if (r->status < 400 && ts != PQTRANS_INTRANS) {
        gm_error("api", "msg=\"2xx with a failed transaction\" path=\"%s\"", r->path);
        api__problem(r, 500, "internal", NULL, "the change could not be saved (logged)");
    }
    if (!api__idem_final(r->status)) {
        rollback(r);
        free(r->idem_store);
        r->idem_store = NULL;
        return;
    }
    char err[512];
    if (r->status >= 400 && gm_pg_exec(r->db, "ROLLBACK TO SAVEPOINT gm_effect", err, sizeof err)) {
        gm_error("api", "msg=\"rollback to savepoint failed\" err=\"%s\"", err);
        rollback(r);
        return; /* the refusal is sent, not stored */
    }
    char status[16];
    snprintf(status, sizeof status, "%d", r->status);
    api_buf path = {0};
    canonical_path(r->target, &path);
    const char *p[8] = {r->auth.key_id,
                        st->key,
                        (const char *)st->hash,
                        "POST",
                        path.p,
                        status,
                        r->ctype,
                        r->idem_store ? r->idem_store
                        : r->resp     ? r->resp
                                      : ""};
    int lens[8] = {0, 0, 32, 0, 0, 0, 0, 0}, fmts[8] = {0, 0, 1, 0, 0, 0, 0, 0};
    PGresult *res = PQexecParams(r->db,
                                 "INSERT INTO gm.idempotency (key_id, idem_key, request_hash,"
                                 " method, path, status, content_type, body)"
                                 " VALUES ($1, $2, $3, $4, $5, $6::int, $7, $8)",
                                 8, NULL, p, lens, fmts, 0);
    free(path.p);
    free(r->idem_store);
    r->idem_store = NULL;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && !strcmp(state, "23505")) { /* another request with this key committed */
            api__problem(r, 409, "idempotency-in-progress", "Idempotency-Key",
                         "Idempotency-Key: a request with this key was processed at the same "
                         "time; retry to get its answer");
            retry_after(r, "1");
        } else {
            gm_error("api", "msg=\"idempotency record not written\" key_id=%s err=\"%s\"",
                     r->auth.key_id, PQerrorMessage(r->db));
            api__problem(r, 503, "unavailable", NULL,
                         "the change was not saved (its idempotency record failed); retry with "
                         "the same Idempotency-Key");
            retry_after(r, "1");
        }
        PQclear(res);
        rollback(r);
        return;
    }
    PQclear(res);
    res = PQexec(r->db, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT"))
        commit_failed(r, res);
    PQclear(res);
}

void api__idem_sweep(api_server *s, PGconn *db)
{
    char cut[40];
    api__time_param(
        gm_now_us() - (int64_t)api__config(s)->idempotency_retention_hours * GM_US_PER_HOUR, cut);
    const char *p[1] = {cut};
    PGresult *res =
        PQexecParams(db, "DELETE FROM gm.idempotency WHERE created_at < $1::timestamptz", 1, NULL,
                     p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        gm_warn("api", "msg=\"idempotency sweep failed\" err=\"%s\"", PQerrorMessage(db));
    else if (atoi(PQcmdTuples(res)) > 0)
        gm_info("api", "msg=\"idempotency records past the retention deleted\" count=%s",
                PQcmdTuples(res));
    PQclear(res);
}
