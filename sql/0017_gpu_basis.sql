-- 0017 GPU billing basis (docs/rating.md, "GPU billing basis"): a contract bills GPU time
-- either from the requests' gpu_us (gpu_basis "requests", the default) or from the windows that
-- gpu_accounting attributed to the tenant (gpu_basis "windows"), never both.
--
-- The rater's GPU consumer charges every accepted kernel-share-v1 window with gpu_us > 0 that
-- its book can price, in the transaction that inserts the window: one gm.charges row per
-- (tenant, hour of window_start, site, card version, unit price) under model '*', dimension
-- 'gpu', at the contract's gpu_window_price (0 under gpu_basis "requests"), and the charge on
-- the window row (the charge_* columns), so that audit.reconciliation counts the billed window
-- amounts beside the ledger's and audit.chain_state_check finds each window charge in its row.
-- Invoice lines of dimension gpu say which basis billed them (gpu_basis).
--
-- Views re-created from their newest definitions (only the change added): audit.reconciliation
-- (0009: + window amounts, + gpu_window_amount), audit.chain_state_check (0015: + window
-- charges, GPU topics' offsets skipped), audit.gpu_windows (0010: + charge columns),
-- audit.invoice_lines (0009: + gpu_basis), audit.gpu_economics (0010: window charges out of
-- the requests rows).

SET ROLE gm_owner;

ALTER TABLE gm.gpu_windows
    ADD COLUMN charge_card_id      text,
    ADD COLUMN charge_card_version integer,
    ADD COLUMN charge_currency     char(3),
    ADD COLUMN charge_unit_price   numeric(30,12),
    ADD COLUMN charge_amount       numeric(38,18),
    ADD CONSTRAINT gpu_windows_charge_check CHECK (
        (charge_amount IS NULL) = (charge_card_id IS NULL) AND (charge_amount IS NULL) = (charge_card_version IS NULL)
        AND (charge_amount IS NULL) = (charge_currency IS NULL) AND (charge_amount IS NULL) = (charge_unit_price IS NULL)
        AND (charge_amount IS NULL OR (policy = 'kernel-share-v1' AND gpu_us > 0)));
COMMENT ON COLUMN gm.gpu_windows.charge_amount IS 'Exact amount charged for the window (gpu_us x charge_unit_price / 10^6) in gm.charges under model *, dimension gpu; NULL when not charged (copy-share-v1, gpu_us 0, or no card priced the tenant)';

-- The topics the GPU consumer reads: their offsets and rejects are not in the batch chains yet
-- (gridmeter audit verify skips them; docs/auditors.md).
CREATE TABLE gm.gpu_topics (
    topic      text        PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE gm.gpu_topics IS 'Kafka topics consumed by the rater''s GPU window consumer (gridmeter.gpu.v1); written by the consumer';

ALTER TABLE gm.invoice_lines ADD COLUMN gpu_basis text CHECK (gpu_basis IN ('requests', 'windows'));
COMMENT ON COLUMN gm.invoice_lines.gpu_basis IS 'Lines of dimension gpu: requests (GPU time billed from the usage events'' gpu_us) or windows (from the attributed GPU windows, model *); NULL on other lines';

CREATE OR REPLACE VIEW audit.reconciliation AS
WITH ledger AS (
    SELECT tenant, period_start, currency, sum(events)::bigint AS events, sum(amount) AS ledger_amount,
           sum(window_amount) AS window_amount
    FROM (SELECT tenant, gm.month_of(event_time) AS period_start,
                 currency, count(*) AS events,
                 sum(amount_input + amount_cached + amount_output + amount_gpu
                     + amount_cache_write + amount_reasoning + amount_request) AS amount,
                 0::numeric AS window_amount
          FROM gm.ledger GROUP BY 1, 2, 3
          UNION ALL
          -- the charged GPU windows (gpu_basis, docs/rating.md): their charges are in
          -- gm.charges beside the ledger's
          SELECT tenant, gm.month_of(window_start), charge_currency, 0, sum(charge_amount),
                 sum(charge_amount)
          FROM gm.gpu_windows WHERE charge_amount IS NOT NULL GROUP BY 1, 2, 3) u
    GROUP BY 1, 2, 3
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
           coalesce(l.window_amount, 0)               AS window_amount,
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
       p.rest - p.waiting AS unbilled_amount,
       p.window_amount AS gpu_window_amount
FROM split p
LEFT JOIN invoiced iv ON iv.tenant = p.tenant AND iv.period_start = p.period_start;

COMMENT ON COLUMN audit.reconciliation.ledger_amount IS 'Exact list amount of the ledger''s events of the month plus the charged GPU windows (gpu_window_amount)';
COMMENT ON COLUMN audit.reconciliation.gpu_window_amount IS 'Of ledger_amount, the exact amount of the tenant''s GPU windows charged in the month (audit.gpu_windows.charge_amount; 0 unless a contract bills by gpu_basis windows)';

CREATE OR REPLACE VIEW audit.chain_state_check AS
WITH d AS (
    SELECT tenant, hour_us, site, model, dimension, card_id, card_version, unit_price,
           sum(quantity) AS quantity, sum(amount) AS amount, sum(events) AS events
    FROM (SELECT tenant, hour_us, site, model, dimension, card_id, card_version, unit_price,
                 quantity, amount, events
          FROM (SELECT e->>0 AS tenant, (e->>1)::bigint AS hour_us, e->>2 AS site, e->>3 AS model,
                       e->>4 AS dimension, e->>5 AS card_id, (e->>6)::integer AS card_version,
                       (e->>9)::numeric AS unit_price, (e->>10)::numeric AS quantity,
                       (e->>11)::numeric AS amount, (e->>12)::bigint AS events
                FROM (SELECT charges FROM gm.chain_batches UNION ALL SELECT charges FROM gm.chain_replays) cb,
                     jsonb_array_elements(cb.charges) e) chained
          UNION ALL
          -- the charges of GPU windows (not chained yet): what the window rows say
          SELECT w.tenant, gm.chain_us(date_trunc('hour', w.window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')::bigint,
                 w.site, '*', 'gpu', w.charge_card_id, w.charge_card_version, w.charge_unit_price,
                 w.gpu_us, w.charge_amount, 1
          FROM gm.gpu_windows w WHERE w.charge_amount IS NOT NULL) x
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
), c AS (
    SELECT tenant, gm.chain_us(hour)::bigint AS hour_us, site, model, dimension, card_id, card_version,
           unit_price, quantity, amount, events FROM gm.charges
)
SELECT 'charges' AS object,
       concat_ws('/', coalesce(c.tenant, d.tenant), coalesce(c.hour_us, d.hour_us), coalesce(c.site, d.site),
                 coalesce(c.model, d.model), coalesce(c.dimension, d.dimension), coalesce(c.card_id, d.card_id),
                 coalesce(c.card_version, d.card_version), coalesce(c.unit_price, d.unit_price)) AS key,
       concat_ws(' ', 'quantity=' || gm.chain_dec(c.quantity), 'amount=' || gm.chain_dec(c.amount), 'events=' || c.events) AS stored,
       concat_ws(' ', 'quantity=' || gm.chain_dec(d.quantity), 'amount=' || gm.chain_dec(d.amount), 'events=' || d.events) AS chained
FROM c FULL JOIN d ON c.tenant = d.tenant AND c.hour_us = d.hour_us AND c.site = d.site AND c.model = d.model
    AND c.dimension = d.dimension AND c.card_id = d.card_id AND c.card_version = d.card_version AND c.unit_price = d.unit_price
WHERE c.quantity IS DISTINCT FROM d.quantity OR c.amount IS DISTINCT FROM d.amount OR c.events IS DISTINCT FROM d.events
UNION ALL
SELECT 'consumer_offsets', concat_ws('/', coalesce(o.group_id, h.group_id), coalesce(o.topic, h.topic), coalesce(o.partition, h.partition)),
       'next_offset=' || o.next_offset, 'next_offset=' || h.next_offset
FROM (SELECT * FROM gm.consumer_offsets WHERE topic NOT IN (SELECT topic FROM gm.gpu_topics)) o
FULL JOIN (SELECT DISTINCT ON (group_id, topic, partition) group_id, topic, partition, next_offset
           FROM gm.chain_batches ORDER BY group_id, topic, partition, seq DESC) h
    ON h.group_id = o.group_id AND h.topic = o.topic AND h.partition = o.partition
WHERE o.next_offset IS DISTINCT FROM h.next_offset
UNION ALL
SELECT 'sources', concat_ws('/', coalesce(s.source, l.source), coalesce(s.epoch, l.epoch)),
       'events=' || s.events, 'events=' || coalesce(l.n, 0)
FROM gm.sources s
FULL JOIN (SELECT source, epoch, count(*) AS n FROM gm.ledger GROUP BY 1, 2) l
    ON l.source = s.source AND l.epoch = s.epoch
WHERE s.events IS DISTINCT FROM coalesce(l.n, 0)
UNION ALL
SELECT 'rejected_events', concat_ws('/', r.kafka_topic, r.kafka_partition, r.kafka_offset),
       'replay_outcome=' || r.replay_outcome,
       'replay entries=' || (SELECT count(*) FROM gm.chain_replays p, unnest(p.partitions, p.offsets) AS u(part, off)
                             WHERE p.topic = r.kafka_topic AND u.part = r.kafka_partition AND u.off = r.kafka_offset)
FROM gm.rejected_events r
WHERE r.replayed_at IS NOT NULL
  AND (SELECT count(*) FROM gm.chain_replays p, unnest(p.partitions, p.offsets) AS u(part, off)
       WHERE p.topic = r.kafka_topic AND u.part = r.kafka_partition AND u.off = r.kafka_offset) <> 1;

COMMENT ON VIEW audit.chain_state_check IS 'Differences between the state tables and what the chains and the ledger say: gm.charges against the sum of the chained charge changes plus the charges of GPU windows (audit.gpu_windows.charge_*), gm.consumer_offsets against the last chained batch (the GPU topics of gm.gpu_topics, not chained, skipped), gm.sources event counts against the ledger rows per source and epoch (key source/epoch), replay marks of gm.rejected_events against the replay chain (each replayed reject listed by exactly one gm.chain_replays entry). Empty when everything agrees';

CREATE OR REPLACE VIEW audit.gpu_windows AS
SELECT w.source,
       w.event_id AS id,
       w.seq,
       w.node,
       w.site,
       w.device,
       w.policy,
       w.window_start,
       w.window_end,
       w.tenant,
       w.gpu_us,
       w.kernels,
       w.unattributed_us,
       w.event_time AS time,
       w.kafka_topic,
       w.kafka_partition,
       w.kafka_offset,
       w.ingested_at,
       w.charge_card_id,
       w.charge_card_version,
       w.charge_currency,
       w.charge_unit_price,
       w.charge_amount
FROM gm.gpu_windows w;

COMMENT ON COLUMN audit.gpu_windows.charge_amount IS 'Exact amount charged for the window: gpu_us x charge_unit_price / 10^6 (under gpu_basis requests the unit price is 0); NULL when not charged (copy-share-v1, gpu_us 0, or no card prices the tenant)';
COMMENT ON COLUMN audit.gpu_windows.charge_unit_price IS 'Price per GPU-second the window was charged at: the contract''s gpu_window_price under gpu_basis windows, else 0';
COMMENT ON COLUMN audit.gpu_windows.charge_card_version IS 'Version of the card in force for the tenant at window_start (the gm.charges key of the window''s charge)';

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
       CASE WHEN l.dimension = 'gpu' THEN l.quantity / 1000000 ELSE l.quantity END AS billed_quantity,
       l.gpu_basis
FROM gm.invoice_lines l;

COMMENT ON COLUMN audit.invoice_lines.gpu_basis IS 'Lines of dimension gpu: requests or windows (docs/rating.md, GPU billing basis); NULL otherwise';

-- audit.gpu_economics (0010) with the charges of GPU windows (model *) out of the requests
-- rows: their revenue counts in the windows rows, beside the other models' revenue.
CREATE OR REPLACE VIEW audit.gpu_economics AS
WITH usage AS (
    SELECT site, tenant, model, hour, currency,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'input'), 0)::numeric(40,0)  AS input_tokens,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'cached'), 0)::numeric(40,0) AS cached_tokens,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'output'), 0)::numeric(40,0) AS output_tokens,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'gpu'), 0)::numeric(40,0)    AS gpu_us,
           sum(amount) AS revenue
    FROM gm.charges
    WHERE model <> '*' OR amount <> 0 -- a window charged at 0 (gpu_basis requests) is no revenue
    GROUP BY 1, 2, 3, 4, 5
), usage_all AS (
    SELECT site, tenant, hour, currency, sum(input_tokens) AS input_tokens,
           sum(cached_tokens) AS cached_tokens, sum(output_tokens) AS output_tokens,
           sum(revenue) AS revenue
    FROM usage GROUP BY 1, 2, 3, 4
), attributed AS (
    SELECT site, tenant, date_trunc('hour', window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           sum(gpu_us)::numeric(40,0) AS gpu_us
    FROM gm.gpu_windows WHERE policy = 'kernel-share-v1'
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'requests'::text AS basis, site, tenant, model, hour, currency, input_tokens,
           cached_tokens, output_tokens, gpu_us, revenue
    FROM usage
    WHERE model <> '*' -- the charges of GPU windows (gpu_basis) count in the windows rows only
    UNION ALL
    SELECT 'windows', coalesce(u.site, a.site), coalesce(u.tenant, a.tenant), '*',
           coalesce(u.hour, a.hour), u.currency, coalesce(u.input_tokens, 0),
           coalesce(u.cached_tokens, 0), coalesce(u.output_tokens, 0), coalesce(a.gpu_us, 0),
           coalesce(u.revenue, 0)
    FROM usage_all u
    FULL JOIN attributed a ON a.site = u.site AND a.tenant = u.tenant AND a.hour = u.hour
), costed AS (
    SELECT x.*, k.site AS cost_card_site, k.version AS cost_card_version,
           k.currency AS cost_currency, k.gpu_hour_cost, k.reference_per_1m_output,
           round(x.gpu_us * k.gpu_hour_cost / 3600000000, 18) AS gpu_cost
    FROM rows x
    LEFT JOIN LATERAL (
        SELECT * FROM gm.cost_cards c
        WHERE c.site IN (x.site, '*') AND c.valid_from <= x.hour
        ORDER BY (c.site = x.site) DESC, c.valid_from DESC LIMIT 1) k ON true
)
SELECT basis, site, tenant, model, hour, input_tokens, cached_tokens, output_tokens, gpu_us,
       currency AS revenue_currency, coalesce(revenue, 0)::numeric(38,18) AS revenue,
       cost_card_site, cost_card_version, cost_currency, gpu_hour_cost, gpu_cost::numeric(38,18) AS gpu_cost,
       CASE WHEN gpu_cost IS NOT NULL AND (currency IS NULL OR currency = cost_currency)
            THEN (coalesce(revenue, 0) - gpu_cost)::numeric(38,18) END AS margin,
       CASE WHEN output_tokens > 0 THEN round(gpu_cost * 1000000 / output_tokens, 18)::numeric(38,18) END
           AS cost_per_1m_output_tokens,
       CASE WHEN output_tokens > 0 THEN round(coalesce(revenue, 0) * 1000000 / output_tokens, 18)::numeric(38,18) END
           AS revenue_per_1m_output_tokens,
       reference_per_1m_output AS reference_per_1m_output_tokens
FROM costed;

RESET ROLE;
GRANT SELECT, INSERT ON gm.gpu_topics TO gm_rater;
GRANT SELECT ON gm.gpu_topics TO gm_api, gm_auditor;
