/* Rate cards and contracts in PostgreSQL: import (validated, never rewriting a version) and
 * loading every card and each tenant's contract versions that can be in force into a rating book;
 * an effective-dated contract version is refused for a month already invoiced unless asked. */
#include "gm_ledger.h"
#include "gm_rating.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef int (*add_fn)(gm_rating_book *book, const char *json, size_t len, char *err,
                      size_t err_len);

static const char cards_sql[] = "SELECT card_id, version, document::text FROM gm.rate_cards"
                                " ORDER BY card_id, version";
/* Each tenant's contract versions that can be in force (docs/rating.md, "Effective-dated
 * contracts"), oldest first: the newest version that states no effective_from (it applies to
 * every month, so nothing older is reachable) and every version after it (each states one). */
static const char contracts_sql[] =
    "SELECT c.tenant, c.version, c.document::text FROM gm.contracts c"
    " WHERE c.version >= coalesce((SELECT max(d.version) FROM gm.contracts d"
    "   WHERE d.tenant = c.tenant AND d.document->>'effective_from' IS NULL), 1)"
    " ORDER BY c.tenant, c.version";

/* Adds every document that `sql` returns (columns: key, version, document) to the book. */
static int add_documents(PGconn *c, gm_rating_book *book, const char *sql, const char *table,
                         add_fn add, char *err, size_t err_len)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char what[64];
        snprintf(what, sizeof what, "loading %s", table);
        rc = gm_pg_fail(c, r, what, err, err_len);
    }
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        char why[512];
        const char *doc = PQgetvalue(r, i, 2);
        if ((rc = add(book, doc, strlen(doc), why, sizeof why)))
            gm_fail(err, err_len, rc, "%s %s version %s: %s", table, PQgetvalue(r, i, 0),
                    PQgetvalue(r, i, 1), why);
    }
    PQclear(r);
    return rc;
}

static int load_into(PGconn *c, gm_rating_book *book, char *err, size_t err_len)
{
    int rc =
        add_documents(c, book, cards_sql, "gm.rate_cards", gm_rating_book_add_card, err, err_len);
    return rc ? rc
              : add_documents(c, book, contracts_sql, "gm.contracts", gm_rating_book_add_contract,
                              err, err_len);
}

int gm_ledger_load_book(PGconn *c, gm_rating_book **out, char *err, size_t err_len)
{
    gm_rating_book *book = gm_rating_book_new();
    int rc = load_into(c, book, err, err_len);
    if (rc) {
        gm_rating_book_free(book);
        return rc;
    }
    *out = book;
    return 0;
}

static int import_card(PGconn *c, const char *json, size_t len, char *msg, size_t msg_len,
                       char *err, size_t err_len)
{
    gm_rating_card *card = NULL;
    char why[1024];
    int rc = gm_rating_card_parse(json, len, &card, why, sizeof why);
    if (rc)
        return gm_fail(err, err_len, rc, "rate card: %s", why);
    gm_rating_card_info info;
    gm_rating_card_get_info(card, &info);
    /* info's strings belong to the card, which is freed before the messages are written. */
    char card_id[256];
    snprintf(card_id, sizeof card_id, "%s", info.card_id);
    info.card_id = card_id;
    char version[24], from[40], until[40];
    snprintf(version, sizeof version, "%lld", (long long)info.version);
    gm_time_format(info.valid_from_us, from, sizeof from);
    if (info.valid_until_us != GM_RATING_NO_END)
        gm_time_format(info.valid_until_us, until, sizeof until);
    /* The document must also fit the cards and contracts already there (one currency per
     * card id, one default card). */
    gm_rating_book *book = gm_rating_book_new();
    rc = load_into(c, book, err, err_len);
    if (rc == 0) {
        rc = gm_rating_book_add_card(book, json, len, why, sizeof why);
        if (rc == GM_ECONFLICT) {
            /* Same id and version: fine when the stored document is the same. */
            const char *params[3] = {info.card_id, version, json};
            PGresult *r = PQexecParams(c,
                                       "SELECT document = $3::jsonb FROM gm.rate_cards"
                                       " WHERE card_id = $1 AND version = $2",
                                       3, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
                bool same = PQgetvalue(r, 0, 0)[0] == 't';
                PQclear(r);
                gm_rating_book_free(book);
                gm_rating_card_free(card);
                if (same) {
                    snprintf(msg, msg_len, "rate card %s version %s: already imported, unchanged",
                             info.card_id, version);
                    return 0;
                }
                return gm_fail(err, err_len, GM_ECONFLICT,
                               "rate card %s version %s: already imported with other content; "
                               "a version is never rewritten: import it as version %lld",
                               info.card_id, version, (long long)info.version + 1);
            }
            PQclear(r);
        }
        if (rc && rc != GM_ECONFLICT)
            gm_fail(err, err_len, rc, "rate card %s version %s: %s", info.card_id, version, why);
        else if (rc)
            gm_fail(err, err_len, rc, "rate card %s version %s: %s", info.card_id, version, why);
        /* the stored contracts' service-tier multipliers x this version's prices, and its
         * multipliers x their own prices (docs/rating.md, "Price variants") */
        if (rc == 0 && (rc = gm_rating_book_check_service_tiers(book, why, sizeof why)))
            gm_fail(err, err_len, rc, "rate card %s version %s: %s", info.card_id, version, why);
    }
    gm_rating_book_free(book);
    /* A version that drops a model with usage in its validity would price that usage by the
     * card's default entry (or reject it) on the next re-rating or draft: refused unless the
     * document lists the model in "dropped_models" (regression: a price went up 250,000x
     * with only a default_model flag). */
    if (rc == 0) {
        const gm_rating_price_row *rows;
        size_t nr = gm_rating_card_prices(card, &rows);
        cJSON *doc = cJSON_ParseWithLength(json, len);
        cJSON *dm = doc ? cJSON_GetObjectItemCaseSensitive(doc, "dropped_models") : NULL;
        const char *params[3] = {info.card_id, from,
                                 info.valid_until_us != GM_RATING_NO_END ? until : NULL};
        PGresult *r =
            PQexecParams(c,
                         /* models the version that priced the usage named */
                         "SELECT d.model, to_char(min(d.first_hour) AT TIME ZONE"
                         " 'UTC', 'YYYY-MM-DD\"T\"HH24:00\"Z\"')"
                         " FROM gm.charges_daily d JOIN gm.rate_cards r"
                         " ON r.card_id = d.card_id AND r.version = d.card_version"
                         " WHERE d.card_id = $1 AND d.last_hour >= $2"
                         " AND ($3::timestamptz IS NULL OR d.first_hour < $3)"
                         " AND d.model <> 'default' AND (r.document -> 'prices') ? d.model"
                         " GROUP BY d.model ORDER BY d.model",
                         3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = gm_pg_fail(c, r, "models with usage", err, err_len);
        for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
            const char *m = PQgetvalue(r, i, 0);
            bool named = false, dropped = false;
            for (size_t k = 0; k < nr && !named; k++)
                named = strcmp(rows[k].model, "default") && !strcmp(rows[k].model, m);
            for (const cJSON *x = dm ? dm->child : NULL; x && !dropped; x = x->next)
                dropped = cJSON_IsString(x) && !strcmp(x->valuestring, m);
            if (!named && !dropped)
                rc = gm_fail(err, err_len, GM_ECONFLICT,
                             "rate card %s version %s: drops model %s, which has usage priced by"
                             " card %s since %s within this version's validity; it would be"
                             " priced by the card's default entry (or refused). Price it on this"
                             " version, or list it in \"dropped_models\" to mean it",
                             info.card_id, version, m, info.card_id, PQgetvalue(r, i, 1));
        }
        PQclear(r);
        cJSON_Delete(doc);
    }
    if (rc == 0) {
        const char *params[6] = {
            info.card_id,  version, from, info.valid_until_us != GM_RATING_NO_END ? until : NULL,
            info.currency, json};
        PGresult *r = PQexecParams(c,
                                   "INSERT INTO gm.rate_cards (card_id, version, valid_from,"
                                   " valid_until, currency, document)"
                                   " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                                   6, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = gm_pg_fail(c, r, "inserting into gm.rate_cards", err, err_len);
        else
            snprintf(msg, msg_len, "rate card %s version %s (%s, valid from %s): imported",
                     info.card_id, version, info.currency, from);
        PQclear(r);
    }
    gm_rating_card_free(card);
    return rc;
}

/* An effective-dated version (effective_from) changes the months from its month on: refused
 * when one of them is invoiced already (finalized or void), unless allowed; and it keeps the
 * currency of the tenant's versions it follows (a commitment term may span versions). */
static int check_effective(PGconn *c, const gm_rating_contract_info *info, unsigned flags,
                           char *err, size_t err_len)
{
    if (info->effective_from_us == INT64_MIN)
        return 0;
    char from[40], month[8];
    gm_time_format(info->effective_from_us, from, sizeof from);
    snprintf(month, sizeof month, "%.7s", from);
    const char *p[3] = {info->tenant, from, info->currency};
    PGresult *r = PQexecParams(
        c,
        "SELECT (SELECT coalesce(number, invoice_id::text) || ' of ' ||"
        "   to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM') || ' is ' || status"
        "   FROM gm.invoices WHERE tenant = $1 AND status <> 'draft' AND period_start >= $2"
        "   ORDER BY period_start LIMIT 1),"
        " (SELECT version::text || ' (' || currency || ')' FROM gm.contracts"
        "   WHERE tenant = $1 AND currency <> $3 AND version >= coalesce((SELECT max(version)"
        "   FROM gm.contracts WHERE tenant = $1 AND document->>'effective_from' IS NULL), 1)"
        "   ORDER BY version DESC LIMIT 1)",
        3, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = gm_pg_fail(c, r, "checking effective_from", err, err_len);
    } else if (!PQgetisnull(r, 0, 0) && !(flags & GM_LEDGER_IMPORT_ALLOW_CLOSED)) {
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "contract %s: effective_from: %s reaches a month already invoiced (invoice "
                     "%s): a version takes effect from a month whose invoice is not finalized; "
                     "to change invoiced months on purpose, import with --allow-closed-months "
                     "and re-rate them (gridmeter rerate), which bills the difference",
                     info->tenant, month, PQgetvalue(r, 0, 0));
    } else if (!PQgetisnull(r, 0, 1)) {
        rc = gm_fail(err, err_len, GM_ECONFLICT,
                     "contract %s: currency: an effective-dated version keeps the tenant's "
                     "currency, but version %s is in another; got %s",
                     info->tenant, PQgetvalue(r, 0, 1), info->currency);
    }
    PQclear(r);
    return rc;
}

static int import_contract(PGconn *c, const char *json, size_t len, unsigned flags, char *msg,
                           size_t msg_len, char *err, size_t err_len)
{
    gm_rating_contract *ct = NULL;
    char why[1024];
    int rc = gm_rating_contract_parse(json, len, &ct, why, sizeof why);
    if (rc)
        return gm_fail(err, err_len, rc, "contract: %s", why);
    gm_rating_contract_info info;
    gm_rating_contract_get_info(ct, &info);
    char tenant[128];
    snprintf(tenant, sizeof tenant, "%s", info.tenant);
    /* Check it against the cards (currency of the card it names), without the tenant's
     * older contract versions, which it replaces. */
    gm_rating_book *book = gm_rating_book_new();
    rc = add_documents(c, book, cards_sql, "gm.rate_cards", gm_rating_book_add_card, err, err_len);
    if (rc == 0 && (rc = gm_rating_book_add_contract(book, json, len, why, sizeof why)))
        gm_fail(err, err_len, rc, "contract %s: %s", tenant, why);
    /* service-tier multipliers x the stored card's prices, and the card's x the contract's */
    if (rc == 0 && (rc = gm_rating_book_check_service_tiers(book, why, sizeof why)))
        gm_fail(err, err_len, rc, "%s", why);
    /* ... and the card it names must exist (or a default card, when it names none), with the
     * models of its tier rules: before, such a contract was stored and then every event of the
     * tenant was rejected. The message names the field (card_id, tiers[N].models). */
    if (rc == 0 && (rc = gm_rating_book_check_contracts(book, why, sizeof why)))
        rc = gm_fail(err, err_len, GM_ECONFLICT, "%s; import the card first", why);
    gm_rating_book_free(book);
    if (rc == 0)
        rc = check_effective(c, &info, flags, err, err_len);
    gm_rating_contract_free(ct);
    if (rc)
        return rc;
    const char *params[3] = {tenant, json, info.currency};
    PGresult *r =
        PQexecParams(c,
                     "WITH latest AS (SELECT version, document FROM gm.contracts WHERE tenant = $1"
                     " ORDER BY version DESC LIMIT 1)"
                     " INSERT INTO gm.contracts (tenant, version, currency, document)"
                     " SELECT $1, coalesce((SELECT version FROM latest), 0) + 1, $3, $2::jsonb"
                     " WHERE NOT EXISTS (SELECT 1 FROM latest WHERE document = $2::jsonb)"
                     " RETURNING version",
                     3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = gm_pg_fail(c, r, "inserting into gm.contracts", err, err_len);
    } else if (PQntuples(r) == 0) {
        snprintf(msg, msg_len, "contract %s: already imported, unchanged", tenant);
    } else {
        snprintf(msg, msg_len, "contract %s version %s (%s): imported", tenant, PQgetvalue(r, 0, 0),
                 params[2]);
    }
    PQclear(r);
    return rc;
}

static int import_doc(PGconn *c, const char *json, size_t len, unsigned flags, char *msg,
                      size_t msg_len, char *err, size_t err_len);

int gm_ledger_import(PGconn *c, const char *json_in, size_t len, char *msg, size_t msg_len,
                     char *err, size_t err_len)
{
    return gm_ledger_import_flags(c, json_in, len, 0, msg, msg_len, err, err_len);
}

int gm_ledger_import_flags(PGconn *c, const char *json_in, size_t len, unsigned flags, char *msg,
                           size_t msg_len, char *err, size_t err_len)
{
    /* The document goes to PostgreSQL as text: make it a C string of exactly len bytes. */
    if (memchr(json_in, '\0', len))
        return gm_fail(err, err_len, GM_EINVAL, "document contains a NUL byte");
    char *json = gm_xmalloc(len + 1);
    memcpy(json, json_in, len);
    json[len] = '\0';
    int rc = import_doc(c, json, len, flags, msg, msg_len, err, err_len);
    free(json);
    return rc;
}

static int import_doc(PGconn *c, const char *json, size_t len, unsigned flags, char *msg,
                      size_t msg_len, char *err, size_t err_len)
{
    cJSON *doc = cJSON_ParseWithLength(json, len);
    if (!doc || !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return gm_fail(err, err_len, GM_EINVAL, "not a JSON object");
    }
    bool is_contract = cJSON_GetObjectItemCaseSensitive(doc, "tenant") != NULL;
    cJSON_Delete(doc);
    /* Serialize importers: a version check and its insert are one decision. Inside a
     * caller's transaction (the API's POST, committed with its idempotency record) the import
     * joins it and the caller commits or rolls back. */
    bool own = PQtransactionStatus(c) == PQTRANS_IDLE;
    int rc = gm_pg_exec(c,
                        own ? "BEGIN; SELECT pg_advisory_xact_lock(29113321406034433)"
                            : "SELECT pg_advisory_xact_lock(29113321406034433)",
                        err, err_len);
    if (rc)
        return rc;
    rc = is_contract ? import_contract(c, json, len, flags, msg, msg_len, err, err_len)
                     : import_card(c, json, len, msg, msg_len, err, err_len);
    if (!own)
        return rc;
    if (rc) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    return gm_pg_exec(c, "COMMIT", err, err_len);
}
