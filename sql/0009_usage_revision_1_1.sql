-- 0009 usage revision 1.1 (docs/events.md, "Versions"): the ledger keeps the three optional
-- fields of usage events, so that nothing an emitter sent is lost, and prices three new
-- dimensions (docs/rating.md, "Token kinds and the request fee"). An event without the new
-- fields (every event before the revision) is stored with the defaults, which mean what it
-- meant, and its new amounts are 0.
--
-- And budgets (docs/api.md, "Budgets and alerts"): a monthly budget per tenant with
-- thresholds, the month's spend kept by statement-level triggers on gm.charges in the
-- rater's own transaction (gm.month_spend), one alert per tenant, month and threshold
-- (gm.budget_alerts, unique), and a transactional outbox (gm.webhook_outbox) written by the
-- same statement as the alert.
--
--   * reasoning_tokens: the part of output_tokens spent on reasoning (never above it);
--   * cache_write_tokens: prompt tokens written into the prompt cache (separate from
--     input_tokens and cached_tokens, like cached_tokens is separate from input_tokens);
--   * service_tier: standard, batch or priority.

SET ROLE gm_owner;

ALTER TABLE gm.ledger
    ADD COLUMN reasoning_tokens   bigint NOT NULL DEFAULT 0
        CONSTRAINT ledger_reasoning_part_of_output
        CHECK (reasoning_tokens >= 0 AND reasoning_tokens <= output_tokens),
    ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    ADD COLUMN service_tier       text   NOT NULL DEFAULT 'standard'
        CHECK (service_tier IN ('standard', 'batch', 'priority'));
COMMENT ON COLUMN gm.ledger.reasoning_tokens IS 'Part of output_tokens spent on reasoning (usage revision 1.1; 0 when the event did not say); never more than output_tokens';
COMMENT ON COLUMN gm.ledger.cache_write_tokens IS 'Prompt tokens written into the prompt cache (usage revision 1.1; 0 when absent); not also counted in input_tokens or cached_tokens';
COMMENT ON COLUMN gm.ledger.service_tier IS 'Service tier of the request: standard, batch or priority (usage revision 1.1; standard when absent)';

-- The exact amounts of the three new dimensions (output's amount is then the non-reasoning
-- part's), and the dimensions gm.charges accepts.
ALTER TABLE gm.ledger
    ADD COLUMN amount_cache_write numeric(38,18) NOT NULL DEFAULT 0,
    ADD COLUMN amount_reasoning   numeric(38,18) NOT NULL DEFAULT 0,
    ADD COLUMN amount_request     numeric(38,18) NOT NULL DEFAULT 0;
COMMENT ON COLUMN gm.ledger.amount_cache_write IS 'Exact list amount of cache_write_tokens (18 decimals); 0 before usage revision 1.1';
COMMENT ON COLUMN gm.ledger.amount_reasoning IS 'Exact list amount of reasoning_tokens (18 decimals); amount_output then prices output_tokens - reasoning_tokens';
COMMENT ON COLUMN gm.ledger.amount_request IS 'Exact per-request fee of the event (18 decimals); 0 where the card has no fee';
ALTER TABLE gm.charges DROP CONSTRAINT charges_dimension_check;
ALTER TABLE gm.charges ADD CONSTRAINT charges_dimension_check CHECK (dimension IN
    ('input', 'cached', 'output', 'gpu', 'cache_write', 'reasoning', 'request'));
COMMENT ON COLUMN gm.charges.dimension IS 'input, cached, output (the non-reasoning part of output_tokens), gpu, cache_write, reasoning, or request (quantity = requests, only where a per-request fee applied)';

-- The auditors' view gains the three fields at its end (its existing columns stay).
CREATE OR REPLACE VIEW audit.usage_events AS
SELECT l.source,
       l.event_id                                   AS id,
       l.seq,
       l.tenant,
       l.site,
       l.model,
       l.event_time                                 AS time,
       l.input_tokens,
       l.cached_tokens,
       l.output_tokens,
       l.gpu_us,
       l.kafka_topic,
       l.kafka_partition,
       l.kafka_offset,
       l.card_version                               AS rate_card_version,
       l.amount_input + l.amount_cached + l.amount_output + l.amount_gpu
         + l.amount_cache_write + l.amount_reasoning + l.amount_request AS amount,
       l.currency,
       l.card_id                                    AS rate_card_id,
       l.site_tier,
       l.request_id,
       l.amount_input,
       l.amount_cached,
       l.amount_output,
       l.amount_gpu,
       (l.flags & 1) <> 0                           AS tenant_unknown,
       (l.flags & 2) <> 0                           AS model_default_price,
       l.ingested_at,
       l.reasoning_tokens,
       l.cache_write_tokens,
       l.service_tier,
       l.amount_cache_write,
       l.amount_reasoning,
       l.amount_request
FROM gm.ledger l;
COMMENT ON COLUMN audit.usage_events.reasoning_tokens IS 'Part of output_tokens spent on reasoning (0 when the event did not say); included in output_tokens';
COMMENT ON COLUMN audit.usage_events.cache_write_tokens IS 'Prompt tokens written into the prompt cache (0 when absent); separate from input_tokens and cached_tokens';
COMMENT ON COLUMN audit.usage_events.service_tier IS 'standard, batch or priority (standard when the event did not say)';
COMMENT ON COLUMN audit.usage_events.amount IS 'Exact list amount of the event (sum of its seven dimensions: input, cached, output, gpu, cache_write, reasoning, request), before invoice-level tiers, minimums and credits; never rounded';
COMMENT ON COLUMN audit.usage_events.amount_output IS 'Exact amount of the non-reasoning output tokens (output_tokens - reasoning_tokens)';
COMMENT ON COLUMN audit.usage_events.amount_cache_write IS 'Exact amount of cache_write_tokens';
COMMENT ON COLUMN audit.usage_events.amount_reasoning IS 'Exact amount of reasoning_tokens';
COMMENT ON COLUMN audit.usage_events.amount_request IS 'Exact per-request fee (0 where the card has none)';

-- The ledger amount of the reconciliation counts the new dimensions (otherwise as in 0008).
CREATE OR REPLACE VIEW audit.reconciliation AS
WITH ledger AS (
    SELECT tenant, gm.month_of(event_time) AS period_start,
           currency, count(*) AS events,
           sum(amount_input + amount_cached + amount_output + amount_gpu
               + amount_cache_write + amount_reasoning + amount_request) AS ledger_amount
    FROM gm.ledger GROUP BY 1, 2, 3
), charged AS (
    SELECT tenant, gm.month_of(day) AS period_start,
           currency, sum(amount) AS charged_amount
    FROM gm.charges_daily GROUP BY 1, 2, 3
), invoiced AS (
    SELECT i.tenant, coalesce(l.corrects_period, i.period_start) AS period_start,
           sum(l.amount_exact) FILTER (WHERE coalesce(l.adjusted_kind, l.kind) IN ('usage', 'tier')) AS invoiced_amount,
           sum(l.amount) AS invoiced_rounded
    FROM gm.invoices i JOIN gm.invoice_lines l USING (invoice_id)
    WHERE i.status IN ('finalized', 'void')
    GROUP BY 1, 2
), snap AS (
    SELECT DISTINCT ON (tenant, period_start) tenant, period_start, amount
    FROM gm.period_snapshots ORDER BY tenant, period_start, taken_at DESC, invoice_id
), base AS (
    SELECT coalesce(l.tenant, c.tenant)               AS tenant,
           coalesce(l.period_start, c.period_start)   AS period_start,
           coalesce(l.currency, c.currency)           AS currency,
           coalesce(l.events, 0)                      AS events,
           coalesce(l.ledger_amount, 0)               AS ledger_amount,
           coalesce(c.charged_amount, 0)              AS charged_amount
    FROM ledger l FULL JOIN charged c USING (tenant, period_start, currency)
), parts AS (
    SELECT b.*,
           b.charged_amount - coalesce(s.amount, 0) AS rest,
           coalesce(s.amount, 0) AS billed,
           own.status AS own_status,
           (own.status IS NULL OR own.status = 'draft')
             AND EXISTS (SELECT 1 FROM gm.invoices f WHERE f.tenant = b.tenant
                         AND f.status <> 'draft' AND f.period_start > b.period_start) AS backfill,
           EXISTS (SELECT 1 FROM gm.invoices d WHERE d.tenant = b.tenant AND d.status = 'draft'
                   AND d.period_start > b.period_start) AS later_draft
    FROM base b
    LEFT JOIN snap s ON s.tenant = b.tenant AND s.period_start = b.period_start
    LEFT JOIN gm.invoices own ON own.tenant = b.tenant AND own.period_start = b.period_start
), split AS (
    SELECT p.*,
           CASE WHEN p.own_status = 'void' THEN 0
                WHEN p.backfill OR p.own_status = 'finalized' THEN
                     CASE WHEN p.later_draft THEN p.rest ELSE 0 END
                WHEN p.own_status = 'draft' THEN p.rest
                ELSE 0 END AS waiting
    FROM parts p
)
SELECT p.tenant, p.period_start, p.currency, p.events, p.ledger_amount, p.charged_amount,
       iv.invoiced_amount,
       p.ledger_amount - p.charged_amount AS difference,
       iv.invoiced_rounded,
       p.billed AS billed_amount,
       p.waiting AS waiting_amount,
       p.rest - p.waiting AS unbilled_amount
FROM split p
LEFT JOIN invoiced iv ON iv.tenant = p.tenant AND iv.period_start = p.period_start;

-- Invoice lines of the request dimension are counted in requests (otherwise as in 0008).
CREATE OR REPLACE VIEW audit.invoice_lines AS
SELECT l.invoice_id,
       l.line_no,
       l.description,
       l.dimension,
       l.model,
       l.site_tier,
       l.quantity,
       l.unit_price,
       l.amount_exact,
       l.amount,
       l.kind,
       l.card_version,
       l.band,
       l.discount_minor,
       l.credit_minor,
       l.corrects_period,
       l.adjusted_kind,
       CASE WHEN l.dimension = 'gpu' THEN 'gpu_second' WHEN l.dimension = 'request' THEN 'request'
            WHEN l.dimension IS NOT NULL THEN 'token' END AS unit,
       CASE WHEN l.dimension = 'gpu' THEN l.quantity / 1000000 ELSE l.quantity END AS billed_quantity
FROM gm.invoice_lines l;

RESET ROLE;
GRANT SELECT ON audit.usage_events TO gm_auditor;

SET ROLE gm_owner;

-- ---- Budgets ---------------------------------------------------------------------------
CREATE TABLE gm.budgets (
    tenant          text        PRIMARY KEY,
    currency        char(3)     NOT NULL,
    monthly_limit   numeric(38,18) NOT NULL CHECK (monthly_limit > 0),
    thresholds      integer[]   NOT NULL DEFAULT '{50,80,100}'
        CHECK (cardinality(thresholds) BETWEEN 1 AND 16 AND 0 < ALL (thresholds)
               AND 1000 >= ALL (thresholds)),
    hard_limit      boolean     NOT NULL DEFAULT true,
    customer_may_set boolean    NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT gm.now()
);
COMMENT ON TABLE gm.budgets IS 'Monthly budget per tenant: limit in the currency (list amounts of the month''s charges), alert thresholds in percent of the limit, and whether the entitlement endpoint refuses at the limit';
COMMENT ON COLUMN gm.budgets.monthly_limit IS 'Spend limit per UTC calendar month, in the currency (exact decimal)';
COMMENT ON COLUMN gm.budgets.thresholds IS 'Percentages of monthly_limit (1..1000) at which one alert per month is raised, e.g. {50,80,100}';
COMMENT ON COLUMN gm.budgets.customer_may_set IS 'true: the tenant''s own customer keys may change monthly_limit, thresholds and hard_limit (POST /v1/tenants/{t}/budget); set by admins only';
COMMENT ON COLUMN gm.budgets.hard_limit IS 'true: GET /v1/tenants/{t}/entitlement answers allowed=false once the month''s spend reaches the limit';

-- The month's spend per tenant and currency: the exact list amount of its charges, kept in
-- the charging transaction. One row per (tenant, month, currency): concurrent raters
-- charging one tenant serialize on it, which is what makes the alerts exactly once.
CREATE TABLE gm.month_spend (
    tenant        text        NOT NULL,
    period_start  timestamptz NOT NULL,
    currency      char(3)     NOT NULL,
    amount        numeric(38,18) NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant, period_start, currency)
);
COMMENT ON TABLE gm.month_spend IS 'Exact list amount of each tenant''s charges per UTC month and currency, updated in the same transaction as gm.charges (so it equals the month''s sum of gm.charges.amount at every commit)';
COMMENT ON COLUMN gm.month_spend.updated_at IS 'gm.now() of the last charging transaction that moved the amount';

CREATE TABLE gm.budget_alerts (
    tenant            text        NOT NULL,
    period_start      timestamptz NOT NULL,
    threshold_percent integer     NOT NULL,
    currency          char(3)     NOT NULL,
    monthly_limit     numeric(38,18) NOT NULL,
    spend             numeric(38,18) NOT NULL,
    crossed_at        timestamptz NOT NULL,
    event_id          text        NOT NULL UNIQUE,
    PRIMARY KEY (tenant, period_start, threshold_percent)
);
COMMENT ON TABLE gm.budget_alerts IS 'One row per tenant, UTC month and budget threshold crossed (the primary key makes it exactly once): the limit and the month''s spend in the transaction that crossed it';
COMMENT ON COLUMN gm.budget_alerts.spend IS 'The month''s spend (list amount) right after the charges that crossed the threshold';
COMMENT ON COLUMN gm.budget_alerts.event_id IS 'Stable id of the alert (budget.<tenant>.<YYYY-MM>.<percent>): the webhook event id receivers deduplicate on';

-- ---- Transactional outbox of webhook events --------------------------------------------
CREATE TABLE gm.webhook_outbox (
    event_id      text        PRIMARY KEY,
    event_type    text        NOT NULL,
    tenant        text,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT gm.now()
);
COMMENT ON TABLE gm.webhook_outbox IS 'Webhook events, written in the same transaction as the fact they report; event_id is the receivers'' idempotency key. Delivery state per endpoint: gm.webhook_deliveries';
COMMENT ON COLUMN gm.webhook_outbox.event_type IS 'budget.threshold_crossed, invoice.finalized, invoice.voided or credit_note.created';
COMMENT ON COLUMN gm.webhook_outbox.payload IS 'The event body; its text (payload::text) is the HTTP body sent and signed';

-- Endpoints registered by admins: per tenant (its events) or global (tenant NULL: all
-- events). Two secrets for rotation: every delivery is signed with each non-NULL secret.
CREATE TABLE gm.webhook_endpoints (
    endpoint_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text,
    url             text        NOT NULL CHECK (url ~ '^https?://'),
    secret          text        NOT NULL CHECK (length(secret) >= 16),
    secret_previous text        CHECK (length(secret_previous) >= 16),
    created_at      timestamptz NOT NULL DEFAULT gm.now(),
    disabled_at     timestamptz
);
COMMENT ON TABLE gm.webhook_endpoints IS 'Webhook receivers: per tenant or global (tenant NULL); an endpoint receives the events created from its created_at on';
COMMENT ON COLUMN gm.webhook_endpoints.secret_previous IS 'The secret before a rotation: deliveries carry a signature with each secret until this is set to NULL';

CREATE TABLE gm.webhook_deliveries (
    event_id        text        NOT NULL REFERENCES gm.webhook_outbox,
    endpoint_id     bigint      NOT NULL REFERENCES gm.webhook_endpoints,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT gm.now(),
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_pending ON gm.webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;
COMMENT ON TABLE gm.webhook_deliveries IS 'Delivery of each outbox event to each endpoint: attempts, when the next one is due (exponential backoff), when a 2xx answer was received';
COMMENT ON COLUMN gm.webhook_deliveries.last_status IS 'HTTP status of the last attempt (NULL: no answer: connection refused, timeout)';

-- Spend of the charges a statement wrote (inserted rows, or new minus old of updated rows),
-- then the alerts that spend crosses, then their outbox rows: one statement, in the
-- charging transaction, keys in order (tenant, month, currency).
CREATE FUNCTION gm.budget_apply(delta jsonb) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    WITH d AS (
        SELECT x.tenant, x.period_start, x.currency, x.amount
        FROM jsonb_to_recordset(delta) AS x(tenant text, period_start timestamptz,
                                            currency char(3), amount numeric)
        ORDER BY 1, 2, 3
    ), s AS (
        INSERT INTO gm.month_spend AS m (tenant, period_start, currency, amount, updated_at)
        SELECT tenant, period_start, currency, amount, gm.now() FROM d
        ON CONFLICT (tenant, period_start, currency) DO UPDATE
        SET amount = m.amount + EXCLUDED.amount, updated_at = EXCLUDED.updated_at
        RETURNING m.tenant, m.period_start, m.currency, m.amount
    ), a AS (
        INSERT INTO gm.budget_alerts (tenant, period_start, threshold_percent, currency,
                                      monthly_limit, spend, crossed_at, event_id)
        SELECT s.tenant, s.period_start, t.pct, s.currency, b.monthly_limit, s.amount, gm.now(),
               'budget.' || s.tenant || '.' || to_char(s.period_start AT TIME ZONE 'UTC', 'YYYY-MM')
                 || '.' || t.pct
        FROM s JOIN gm.budgets b ON b.tenant = s.tenant AND b.currency = s.currency
             CROSS JOIN LATERAL unnest(b.thresholds) AS t(pct)
        WHERE s.amount * 100 >= b.monthly_limit * t.pct
        ORDER BY 1, 2, 3
        ON CONFLICT DO NOTHING
        RETURNING *
    )
    INSERT INTO gm.webhook_outbox (event_id, event_type, tenant, payload)
    SELECT a.event_id, 'budget.threshold_crossed', a.tenant,
           jsonb_build_object('id', a.event_id, 'type', 'budget.threshold_crossed',
                              'tenant', a.tenant,
                              'period', to_char(a.period_start AT TIME ZONE 'UTC', 'YYYY-MM'),
                              'threshold_percent', a.threshold_percent,
                              'currency', a.currency,
                              'limit', a.monthly_limit::text, 'spend', a.spend::text,
                              'crossed_at', to_char(a.crossed_at AT TIME ZONE 'UTC',
                                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    FROM a ORDER BY a.event_id
    ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION gm.charges_spend_ins() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    PERFORM gm.budget_apply((SELECT coalesce(jsonb_agg(x), '[]') FROM (
        SELECT tenant, gm.month_of(hour) AS period_start, currency, sum(amount)::text AS amount
        FROM new_rows GROUP BY 1, 2, 3) x));
    RETURN NULL;
END $$;

CREATE FUNCTION gm.charges_spend_upd() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    PERFORM gm.budget_apply((SELECT coalesce(jsonb_agg(x), '[]') FROM (
        SELECT tenant, gm.month_of(hour) AS period_start, currency, sum(a)::text AS amount
        FROM (SELECT tenant, hour, currency, amount AS a FROM new_rows
              UNION ALL SELECT tenant, hour, currency, -amount FROM old_rows) y
        GROUP BY 1, 2, 3 HAVING sum(a) <> 0) x));
    RETURN NULL;
END $$;

CREATE TRIGGER charges_spend_ins AFTER INSERT ON gm.charges
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gm.charges_spend_ins();
CREATE TRIGGER charges_spend_upd AFTER UPDATE ON gm.charges
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION gm.charges_spend_upd();

-- Invoice and credit-note events, written in the transaction that finalizes, voids or issues
-- them. Deferred to the commit, and reading the row as it is then, so the event carries the
-- final number and totals whatever order the transaction set them in.
CREATE FUNCTION gm.invoice_event() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    i gm.invoices%ROWTYPE;
    kind text;
BEGIN
    SELECT * INTO i FROM gm.invoices WHERE invoice_id = NEW.invoice_id;
    kind := CASE i.status WHEN 'finalized' THEN 'finalized' WHEN 'void' THEN 'voided' END;
    IF kind IS NULL OR (TG_OP = 'UPDATE' AND OLD.status = i.status) THEN
        RETURN NULL;
    END IF;
    INSERT INTO gm.webhook_outbox (event_id, event_type, tenant, payload)
    VALUES ('invoice.' || i.invoice_id || '.' || kind, 'invoice.' || kind, i.tenant,
            jsonb_build_object('id', 'invoice.' || i.invoice_id || '.' || kind,
                               'type', 'invoice.' || kind, 'tenant', i.tenant,
                               'invoice_id', i.invoice_id, 'number', i.number,
                               'period', to_char(i.period_start AT TIME ZONE 'UTC', 'YYYY-MM'),
                               'currency', i.currency, 'total', i.total::text,
                               'at', to_char(coalesce(CASE kind WHEN 'voided' THEN i.voided_at
                                                      ELSE i.finalized_at END, gm.now())
                                             AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER invoices_event AFTER UPDATE OF status ON gm.invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('finalized', 'void'))
    EXECUTE FUNCTION gm.invoice_event();

CREATE FUNCTION gm.credit_note_event() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    n gm.credit_notes%ROWTYPE;
BEGIN
    SELECT * INTO n FROM gm.credit_notes WHERE credit_note_id = NEW.credit_note_id;
    INSERT INTO gm.webhook_outbox (event_id, event_type, tenant, payload)
    VALUES ('credit_note.' || n.credit_note_id, 'credit_note.created', n.tenant,
            jsonb_build_object('id', 'credit_note.' || n.credit_note_id,
                               'type', 'credit_note.created', 'tenant', n.tenant,
                               'credit_note_id', n.credit_note_id, 'invoice_id', n.invoice_id,
                               'number', n.number, 'currency', n.currency,
                               'amount', n.amount::text, 'reason', n.reason))
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER credit_notes_event AFTER INSERT ON gm.credit_notes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gm.credit_note_event();

-- The spend of what is already there.
INSERT INTO gm.month_spend (tenant, period_start, currency, amount, updated_at)
SELECT tenant, gm.month_of(hour), currency, sum(amount), gm.now() FROM gm.charges
GROUP BY 1, 2, 3;

CREATE VIEW audit.budget_alerts AS
SELECT a.tenant, a.period_start, a.threshold_percent, a.currency, a.monthly_limit, a.spend,
       a.crossed_at, a.event_id,
       (SELECT max(d.delivered_at) FROM gm.webhook_deliveries d WHERE d.event_id = a.event_id)
           AS delivered_at,
       (SELECT coalesce(sum(d.attempts), 0) FROM gm.webhook_deliveries d
        WHERE d.event_id = a.event_id) AS attempts
FROM gm.budget_alerts a;
COMMENT ON VIEW audit.budget_alerts IS 'One row per tenant, UTC month and budget threshold crossed (exactly once), with the spend right after the crossing charges and the delivery state of its webhook event';
COMMENT ON COLUMN audit.budget_alerts.spend IS 'The month''s list amount of committed charges right after the transaction that crossed the threshold';
COMMENT ON COLUMN audit.budget_alerts.delivered_at IS 'When the webhook event was last delivered to an endpoint (NULL: to none yet)';
COMMENT ON COLUMN audit.budget_alerts.attempts IS 'Delivery attempts of its webhook event, over all endpoints';

CREATE VIEW audit.webhook_deliveries AS
SELECT d.event_id, o.event_type, o.tenant, d.endpoint_id, e.url, d.attempts, d.next_attempt_at,
       d.delivered_at, d.last_status, d.last_error, o.created_at
FROM gm.webhook_deliveries d JOIN gm.webhook_outbox o USING (event_id)
JOIN gm.webhook_endpoints e USING (endpoint_id);
COMMENT ON VIEW audit.webhook_deliveries IS 'Every webhook event and endpoint: attempts, next attempt, delivery time and the last answer (what admins look at)';

RESET ROLE;
GRANT SELECT ON audit.budget_alerts, audit.webhook_deliveries TO gm_auditor, gm_api;
GRANT SELECT ON gm.budgets, gm.month_spend, gm.budget_alerts, gm.webhook_outbox TO gm_api, gm_rater;
GRANT INSERT, UPDATE, DELETE ON gm.budgets TO gm_api;
GRANT SELECT, INSERT, UPDATE ON gm.webhook_endpoints, gm.webhook_deliveries TO gm_api;
