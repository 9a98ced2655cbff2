-- 0007 idempotency records: only final answers, kept for a retention the server enforces.
--
-- The API now writes a record in the same transaction as the effect of its POST, and only for
-- a final answer (2xx, or a 4xx other than 408, 409, 423, 425 and 429: answers a retry
-- cannot change); it no longer claims a key before running (a crash between the claim and
-- the effect left that key answering 409 for ever) and never updates a record. It deletes
-- records older than its retention (api.idempotency_retention_hours, default 24) and never
-- replays one. Records written before this migration keep their rows (NOT VALID: old
-- in-progress claims with status NULL are answered 409 until the retention removes them).

SET ROLE gm_owner;

CREATE INDEX idempotency_created_at ON gm.idempotency (created_at);

ALTER TABLE gm.idempotency ADD CONSTRAINT idempotency_final_answer
    CHECK (status IS NOT NULL AND content_type IS NOT NULL AND body IS NOT NULL
           AND (status BETWEEN 200 AND 299
                OR (status BETWEEN 400 AND 499 AND status NOT IN (408, 409, 423, 425, 429))))
    NOT VALID;

REVOKE UPDATE (status, content_type, body) ON gm.idempotency FROM gm_api;

COMMENT ON TABLE gm.idempotency IS
    'The final answer to a POST per API key and Idempotency-Key, written in the transaction of its effect; deleted by the API after its retention (default 24 h)';
COMMENT ON COLUMN gm.idempotency.request_hash IS 'SHA-256 of method, decoded path and body: the same key with another request is refused (422)';
COMMENT ON COLUMN gm.idempotency.status IS 'HTTP status of the stored answer: 2xx, or a 4xx a retry cannot change';
COMMENT ON COLUMN gm.idempotency.body IS 'The answer replayed to retries (a created API key''s secret is not stored)';
COMMENT ON COLUMN gm.idempotency.created_at IS 'gm.now() of the transaction that made the effect; the retention counts from here';

RESET ROLE;
