-- 0009 usage revision 1.1 (docs/events.md, "Versions"): the ledger keeps the three optional
-- fields of usage events, so that nothing an emitter sent is lost, and prices three new
-- dimensions (docs/rating.md, "Token kinds and the request fee"). An event without the new
-- fields (every event before the revision) is stored with the defaults, which mean what it
-- meant, and its new amounts are 0.
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
