/* The rating book follows imports: sql/0022 NOTIFYs gm_book at the COMMIT of every change of
 * gm.rate_cards or gm.contracts; the rater LISTENs on its own PostgreSQL connection and, before
 * a batch, reads what has arrived (PQconsumeInput + PQnotifies: no round trip) and reloads the
 * book when something did. reload_s stays as a fallback (docs/rating.md, "When an import takes
 * effect"). */
#include "rater_int.h"

#include "gm_common.h"
#include "gm_rating.h"

#include <string.h>

static int reload(PGconn *pg, gm_rating_book **book, gm_rater_book_watch *w, const char *comp,
                  char *err, size_t err_len)
{
    gm_rating_book *b = NULL;
    int rc = gm_ledger_load_book(pg, &b, err, err_len);
    if (rc) {
        if (*book)
            gm_warn(comp, "msg=\"rate cards not reloaded, keeping the loaded ones\" error=\"%s\"",
                    err);
        w->pending = true; /* tried again before the next batch */
        return rc;
    }
    gm_rating_book_free(*book);
    *book = b;
    w->loaded_us = gm_mono_us();
    w->pending = false;
    w->reloads++;
    return 0;
}

int gm_rater__book_refresh(PGconn *pg, gm_rating_book **book, gm_rater_book_watch *w, int reload_s,
                           const char *comp, char *err, size_t err_len)
{
    if (!pg || PQstatus(pg) != CONNECTION_OK)
        return *book ? 0 : gm_fail(err, err_len, GM_EDB, "no PostgreSQL connection");
    bool need = w->pending || !*book;
    /* A new connection (the first, or after a reconnect): LISTEN on it before loading, and
     * load, since what was imported while no connection listened was announced to nobody. */
    if (w->conn != pg || w->backend_pid != PQbackendPID(pg)) {
        PGresult *r = PQexec(pg, "LISTEN gm_book");
        w->listening = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        w->conn = pg; /* tried once per connection */
        w->backend_pid = PQbackendPID(pg);
        need = true;
        if (!w->listening)
            gm_warn(comp,
                    "msg=\"LISTEN gm_book failed; the book is reloaded every reload_s only\""
                    " error=\"%s\"",
                    PQerrorMessage(pg));
    }
    /* What the server has sent since the last call: notifications that came during the
     * batch's own queries are already queued in libpq; PQconsumeInput reads the socket
     * without blocking (no round trip). */
    if (w->listening && PQconsumeInput(pg)) {
        PGnotify *n;
        while ((n = PQnotifies(pg))) {
            if (!strcmp(n->relname, "gm_book"))
                need = true;
            PQfreemem(n);
        }
    }
    if (!need && reload_s > 0 && gm_mono_us() - w->loaded_us > (int64_t)reload_s * GM_US_PER_SEC)
        need = true;
    return need ? reload(pg, book, w, comp, err, err_len) : 0;
}
