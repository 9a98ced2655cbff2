-- 0002 audit: the auditors' views (contract: DESIGN.md section 6, docs/auditors.md).
-- The tables behind them may change; these views and their columns stay.

SET ROLE gm_owner;

-- Payloads are bytes (a rejected message may not be UTF-8): text when it is valid UTF-8,
-- else PostgreSQL's escape form, so that a view never fails on a bad row.
CREATE FUNCTION gm.payload_text(p bytea) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN convert_from(p, 'UTF8');
EXCEPTION WHEN others THEN
    RETURN encode(p, 'escape');
END $$;

CREATE VIEW audit.usage_events AS
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
       l.amount_input + l.amount_cached + l.amount_output + l.amount_gpu AS amount,
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
       l.ingested_at
FROM gm.ledger l;
COMMENT ON VIEW audit.usage_events IS
    'One row per accepted usage event: its quantities, Kafka coordinates, the rate card version it was priced with and its exact amount (currency units, 18 decimals, unrounded).';
COMMENT ON COLUMN audit.usage_events.id IS 'CloudEvents id; (source, id) is the idempotency key';
COMMENT ON COLUMN audit.usage_events.amount IS 'Exact list amount of the event (sum of the four dimensions), before invoice-level tiers, minimums and credits; never rounded';
COMMENT ON COLUMN audit.usage_events.tenant_unknown IS 'The tenant had no contract when the event was rated: priced by the default card and flagged';

CREATE VIEW audit.rejected_events AS
SELECT r.received_at,
       r.kafka_topic,
       r.kafka_partition,
       r.kafka_offset,
       gm.payload_text(r.payload) AS payload,
       r.reason,
       r.payload                  AS payload_bytes,
       r.kafka_key
FROM gm.rejected_events r;
COMMENT ON VIEW audit.rejected_events IS
    'Every message that broke the event contract, with its Kafka coordinates and the precise reason (field and rule). Nothing is dropped silently.';

CREATE VIEW audit.usage_hourly AS
SELECT c.tenant,
       c.hour,
       c.site,
       c.model,
       c.dimension,
       sum(c.quantity)  AS quantity,
       sum(c.amount)    AS amount,
       c.currency,
       sum(c.events)    AS events
FROM gm.charges c
GROUP BY c.tenant, c.hour, c.site, c.model, c.dimension, c.currency;
COMMENT ON VIEW audit.usage_hourly IS
    'Quantity (tokens, or GPU-microseconds for dimension gpu) and exact list amount per tenant, UTC hour, site, model and dimension.';

CREATE VIEW audit.source_gaps AS
SELECT s.source,
       lower(g.r)     AS first_missing,
       upper(g.r) - 1 AS last_missing
FROM gm.sources s,
     LATERAL unnest(int8multirange(int8range(1, upper(s.seqs))) - s.seqs) AS g(r);
COMMENT ON VIEW audit.source_gaps IS
    'Ranges of data.seq that a source skipped: events that were never received (completeness). A range closes when a late event fills it.';

-- Reconciliation per tenant and UTC month: the ledger against the charges derived from it
-- (and against invoices once migration 0003 and later add them).
CREATE VIEW audit.reconciliation AS
WITH ledger AS (
    SELECT tenant, date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
           currency, count(*) AS events,
           sum(amount_input + amount_cached + amount_output + amount_gpu) AS ledger_amount
    FROM gm.ledger GROUP BY 1, 2, 3
), charged AS (
    SELECT tenant, date_trunc('month', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
           currency, sum(amount) AS charged_amount
    FROM gm.charges GROUP BY 1, 2, 3
)
SELECT coalesce(l.tenant, c.tenant)               AS tenant,
       coalesce(l.period_start, c.period_start)   AS period_start,
       coalesce(l.currency, c.currency)           AS currency,
       coalesce(l.events, 0)                      AS events,
       coalesce(l.ledger_amount, 0)               AS ledger_amount,
       coalesce(c.charged_amount, 0)              AS charged_amount,
       NULL::numeric                              AS invoiced_amount,
       coalesce(l.ledger_amount, 0) - coalesce(c.charged_amount, 0) AS difference
FROM ledger l FULL JOIN charged c USING (tenant, period_start, currency);
COMMENT ON VIEW audit.reconciliation IS
    'Per tenant and month: ledger events and exact amount against the hourly charges (and invoices, when they exist). difference must be 0.';

RESET ROLE;

GRANT SELECT ON ALL TABLES IN SCHEMA audit TO gm_auditor;
GRANT SELECT ON audit.usage_events, audit.usage_hourly, audit.source_gaps, audit.reconciliation,
      audit.rejected_events TO gm_api;
