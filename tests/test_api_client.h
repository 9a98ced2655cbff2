/* Test support for the api suites: a tiny HTTP/1.1 client over sockets (no libcurl), the
 * shared fixture (database, keys, server) and a ledger filler that prices events with the
 * rating engine exactly as the rater does. */
#ifndef GM_TEST_API_CLIENT_H
#define GM_TEST_API_CLIENT_H

#include "gm_api.h"
#include "gm_ledger.h"
#include "gm_rating.h"
#include "support.h"

typedef struct {
    int status;
    char *headers; /* raw header block */
    char *body;    /* NUL-terminated */
    size_t len;
} http_resp;

/* One request on a fresh connection (Connection: close). extra: more header lines, each
 * ending in \r\n, or NULL. Fails the test on a transport error. */
void http_do(int port, const char *method, const char *path, const char *token, const char *idem,
             const char *body, const char *extra, http_resp *out);
/* Sends raw bytes and reads the answer (for malformed requests); status 0 when the server
 * closed the connection without one. */
void http_raw(int port, const char *raw, size_t len, http_resp *out);
void http_free(http_resp *r);
/* Value of a response header (case-insensitive) into buf; false when absent. */
bool http_header(const http_resp *r, const char *name, char *buf, size_t len);

typedef struct {
    char conninfo[256];     /* superuser, for setup and checks */
    char api_conninfo[300]; /* role gm_api */
    char admin[GM_API_TOKEN_MAX], finance[GM_API_TOKEN_MAX], acme[GM_API_TOKEN_MAX],
        gulf[GM_API_TOKEN_MAX], revoked[GM_API_TOKEN_MAX], expired[GM_API_TOKEN_MAX];
    gm_api_server *server;
    int port;
} api_fixture;

extern api_fixture F;
/* The suite's calendar does not depend on today's date: the fixture pins the process clock
 * (gm_clock_set_us) to this instant, 2026-11-20T12:00:00Z, whatever GRIDMETER_NOW or the
 * real date says. The data lies in July to November 2026; tests that need another "now"
 * (a month end, a leap day, the end of a grace window) move the clock themselves. */
#define API_TEST_NOW INT64_C(1795176000000000)
/* Creates the database, migrates, imports examples/ratecards, makes the keys and starts the
 * server (grace 0 h, generous rate limit). Call from an unchecked fixture. */
void api_fixture_setup(void);
void api_fixture_teardown(void);

/* Prices one event with the stored book and writes it to gm.ledger and gm.charges as the
 * rater would. qty: input, cached, output, gpu_us. */
void api_add_event(PGconn *c, const char *tenant, const char *model, const char *site,
                   int64_t time_us, const int64_t qty[4]);

#endif
