/* Signed webhooks from the transactional outbox (sql/0009: gm.webhook_outbox,
 * gm.webhook_endpoints, gm.webhook_deliveries). docs/api.md, "Webhooks".
 *
 * Each outbox event goes to every enabled endpoint of its tenant and every global endpoint
 * registered before the event was created. A delivery is one HTTP POST of the event's JSON
 * with the headers
 *   Gridmeter-Event-Id: <event id>          (stable: receivers deduplicate on it)
 *   Gridmeter-Event-Type: <type>
 *   Gridmeter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>[,v1=...]
 * (one v1 per secret of the endpoint: the current one, and the previous one during a
 * rotation). A 2xx answer marks the delivery done; anything else (another status, no answer,
 * a timeout) schedules the next attempt after gm_webhook_backoff_s(). Attempts never stop, so
 * a receiver that is down for hours loses nothing; at least once: an answer lost after the
 * receiver got the body means the same event id again later. */
#ifndef GM_WEBHOOK_H
#define GM_WEBHOOK_H

#include "gm_common.h"

#include <libpq-fe.h>

/* HMAC-SHA256 (OpenSSL) of "<t_s>.<body>" with `secret`, as 64 lowercase hex digits + NUL. */
void gm_webhook_signature(const char *secret, int64_t t_s, const char *body, size_t body_len,
                          char hex[65]);

/* Seconds to wait after the attempts-th failed attempt (attempts >= 1):
 * min(base_s * 2^(attempts-1), max_s). */
int64_t gm_webhook_backoff_s(int attempts, int64_t base_s, int64_t max_s);
/* An endpoint URL, parsed by libcurl's URL API (curl_url): absolute, scheme http or https in
 * any case, a host required. true, or false with the rule and the URL in why ("url: ..."). */
bool gm_webhook_url_ok(const char *url, char *why, size_t why_len);

typedef struct {
    long timeout_ms;        /* per POST, connect included (default 10000) */
    int64_t backoff_base_s; /* default 10 */
    int64_t backoff_max_s;  /* default 600: a down receiver is retried every 10 minutes */
    int max_deliveries;     /* per call (default 100) */
} gm_webhook_opts;

typedef struct {
    size_t queued;    /* (event, endpoint) pairs added by this call */
    size_t attempted; /* POSTs made */
    size_t delivered; /* answered 2xx */
    size_t failed;    /* other answers, no answer, timeouts */
} gm_webhook_stats;

void gm_webhook_opts_init(gm_webhook_opts *o);

/* One pass: queues the outbox events for their endpoints, then makes the due deliveries
 * (next_attempt_at <= gm.now()), each in its own transaction holding the delivery's row lock
 * (FOR UPDATE SKIP LOCKED: several deliverers share the work, none sends one twice at once).
 * Returns 0 (failed POSTs are not errors: they are scheduled again), or GM_EDB. */
int gm_webhook_deliver(PGconn *c, const gm_webhook_opts *o, gm_webhook_stats *st, char *err,
                       size_t err_len) GM_MUSTCHECK;

#endif /* GM_WEBHOOK_H */
