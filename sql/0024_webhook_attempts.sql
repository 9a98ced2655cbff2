-- 0024 every webhook delivery attempt is kept (docs/api.md, "Webhooks"): before, a
-- delivery row kept only its last attempt (last_status, last_error) though the docs promised
-- every attempt visible, and a delivered row showed a future next_attempt_at.
--   gm.webhook_attempts: one row per attempt, written by the deliverer in the transaction
--   that records the outcome (gridmeter webhooks, webhook/webhook.c); audit.webhook_attempts
--   over it. gm.webhook_deliveries.next_attempt_at is NULL once delivered. Attempts made
--   before this migration are not listed one by one (their count stays in attempts).

SET ROLE gm_owner;

CREATE TABLE gm.webhook_attempts (
    event_id     text        NOT NULL,
    endpoint_id  bigint      NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 1),
    attempted_at timestamptz NOT NULL,
    status       integer,
    error        text,
    delivered    boolean     NOT NULL,
    PRIMARY KEY (event_id, endpoint_id, attempt),
    FOREIGN KEY (event_id, endpoint_id) REFERENCES gm.webhook_deliveries
);
COMMENT ON TABLE gm.webhook_attempts IS 'Every delivery attempt of a webhook event to an endpoint, written with its outcome by the deliverer';
COMMENT ON COLUMN gm.webhook_attempts.attempted_at IS 'gm.now() of the attempt''s transaction: when the POST began';
COMMENT ON COLUMN gm.webhook_attempts.status IS 'HTTP status of the answer (NULL: no answer: connection refused, timeout)';
COMMENT ON COLUMN gm.webhook_attempts.error IS 'Why it failed: HTTP <status>, or the transfer error (NULL when delivered)';
COMMENT ON COLUMN gm.webhook_attempts.delivered IS 'true: a 2xx answer, the delivery is done';

ALTER TABLE gm.webhook_deliveries ALTER COLUMN next_attempt_at DROP NOT NULL;
UPDATE gm.webhook_deliveries SET next_attempt_at = NULL WHERE delivered_at IS NOT NULL;
COMMENT ON COLUMN gm.webhook_deliveries.next_attempt_at IS 'When the next attempt is due; NULL once delivered';

CREATE VIEW audit.webhook_attempts AS
SELECT a.event_id, o.event_type, o.tenant, a.endpoint_id, e.url, a.attempt, a.attempted_at,
       a.status, a.error, a.delivered
FROM gm.webhook_attempts a JOIN gm.webhook_outbox o USING (event_id)
JOIN gm.webhook_endpoints e USING (endpoint_id);
COMMENT ON VIEW audit.webhook_attempts IS 'Every delivery attempt of every webhook event to every endpoint, with its outcome (what admins look at when a receiver fails)';

-- sql/0009's definition, columns unchanged and in order; last_attempt_at added last
CREATE OR REPLACE VIEW audit.webhook_deliveries AS
SELECT d.event_id, o.event_type, o.tenant, d.endpoint_id, e.url, d.attempts, d.next_attempt_at,
       d.delivered_at, d.last_status, d.last_error, o.created_at,
       (SELECT max(a.attempted_at) FROM gm.webhook_attempts a WHERE a.event_id = d.event_id
        AND a.endpoint_id = d.endpoint_id) AS last_attempt_at
FROM gm.webhook_deliveries d JOIN gm.webhook_outbox o USING (event_id)
JOIN gm.webhook_endpoints e USING (endpoint_id);
COMMENT ON VIEW audit.webhook_deliveries IS 'Every webhook event and endpoint: attempts, next attempt (NULL once delivered), delivery time and the last answer; each attempt: audit.webhook_attempts';

RESET ROLE;
GRANT SELECT ON audit.webhook_attempts TO gm_auditor, gm_api;
GRANT SELECT, INSERT ON gm.webhook_attempts TO gm_api;
