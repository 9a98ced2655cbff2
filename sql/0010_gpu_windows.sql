-- 0010 GPU windows: gridmeter.gpu.v1 events (GPU time that gpu_accounting attributed to a
-- tenant over a window on one device of a node), written exactly once by the rater's GPU
-- consumer (rater/gpu.c), and the auditors' reconciliation of the per-request gpu_us that
-- nodes report on usage events against that attributed time (docs/auditors.md).

SET ROLE gm_owner;

-- One row per accepted gridmeter.gpu.v1 event (append-only). Idempotency as for usage
-- events, for ever: (source, event_id) and (source, seq) are each unique. A re-sent event
-- (same key, same content) is a duplicate, counted once; another event under a key already
-- taken is a conflict, kept in gm.rejected_events with the reason. Several events for one
-- (device, policy, window, tenant) are legitimate (late records are reported as an extra row
-- for their window, see docs/gpu-accounting.md) and add up.
CREATE TABLE gm.gpu_windows (
    source           text        NOT NULL,
    event_id         text        NOT NULL,
    seq              bigint      NOT NULL CHECK (seq >= 1),
    node             text        NOT NULL GENERATED ALWAYS AS (regexp_replace(source, '/gpu$', '')) STORED,
    site             text        NOT NULL,
    device           text        NOT NULL,
    policy           text        NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    tenant           text        NOT NULL,
    gpu_us           bigint      NOT NULL CHECK (gpu_us >= 0),
    kernels          bigint      NOT NULL CHECK (kernels >= 0),
    unattributed_us  bigint      NOT NULL CHECK (unattributed_us >= 0),
    event_time       timestamptz NOT NULL,
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT gm.now(),
    CHECK (window_end > window_start),
    UNIQUE (source, event_id),
    UNIQUE (source, seq),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
COMMENT ON TABLE gm.gpu_windows IS 'One row per accepted gridmeter.gpu.v1 event (append-only): GPU time attributed to a tenant on one device over one window';
CREATE INDEX gpu_windows_hour ON gm.gpu_windows (site, node, tenant, window_start);

RESET ROLE;
GRANT INSERT, SELECT ON gm.gpu_windows TO gm_rater;
GRANT SELECT ON gm.gpu_windows TO gm_api;
SET ROLE gm_owner;

CREATE VIEW audit.gpu_windows AS
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
       w.ingested_at
FROM gm.gpu_windows w;
COMMENT ON VIEW audit.gpu_windows IS
    'One row per accepted gridmeter.gpu.v1 event: GPU time (microseconds) that the node''s gpu_accounting attributed to a tenant on one device over one window, with its Kafka coordinates. Rows for one (node, device, policy, window, tenant) add up.';
COMMENT ON COLUMN audit.gpu_windows.source IS 'CloudEvents source of the GPU node client (the agent''s is <usage source>/gpu); (source, id) and (source, seq) are each unique';
COMMENT ON COLUMN audit.gpu_windows.id IS 'CloudEvents id; (source, id) is the idempotency key';
COMMENT ON COLUMN audit.gpu_windows.node IS 'The node: source without a trailing "/gpu", so that it equals the source of the same node''s usage events';
COMMENT ON COLUMN audit.gpu_windows.device IS 'data.device: the GPU (gpu<N> from gpu_accounting)';
COMMENT ON COLUMN audit.gpu_windows.policy IS 'data.policy: kernel-share-v1 (kernel time, comparable to usage gpu_us) or copy-share-v1 (copy-engine time)';
COMMENT ON COLUMN audit.gpu_windows.window_start IS 'data.window_start, inclusive';
COMMENT ON COLUMN audit.gpu_windows.window_end IS 'data.window_end, exclusive';
COMMENT ON COLUMN audit.gpu_windows.gpu_us IS 'data.gpu_us: microseconds of GPU time attributed to the tenant in the window';
COMMENT ON COLUMN audit.gpu_windows.kernels IS 'data.kernels: kernels (record pieces) that contributed';
COMMENT ON COLUMN audit.gpu_windows.unattributed_us IS 'data.unattributed_us: time of the device-window attributed to no tenant; the same on every row of one close of the window';
COMMENT ON COLUMN audit.gpu_windows.time IS 'CloudEvents time (the window end)';

-- Completeness of GPU windows: seq ranges a GPU source never delivered (or whose event was
-- rejected), like audit.source_gaps for usage events.
CREATE VIEW audit.gpu_source_gaps AS
SELECT source, prev + 1 AS first_missing, seq - 1 AS last_missing
FROM (SELECT source, seq, coalesce(lag(seq) OVER (PARTITION BY source ORDER BY seq), 0) AS prev
      FROM gm.gpu_windows) s
WHERE seq > prev + 1;
COMMENT ON VIEW audit.gpu_source_gaps IS
    'Ranges of data.seq that a GPU source skipped (from 1 to its highest accepted seq): windows never received, or rejected (see audit.rejected_events). A range closes when a late event fills it.';

-- Reconciliation per site, node, tenant and hour (UTC): the kernel time nodes reported per
-- request (gpu_us of usage events, hour of the event time) beside the kernel time CUPTI
-- attributed (kernel-share-v1 windows, hour of window_start). A node that reports less per
-- request than its GPUs were busy for the tenant shows a negative difference_us.
CREATE VIEW audit.gpu_reconciliation AS
WITH reported AS (
    SELECT site, source AS node, tenant, date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           sum(gpu_us)::bigint AS gpu_us, count(*) AS events
    FROM gm.ledger
    GROUP BY 1, 2, 3, 4
), attributed AS (
    SELECT site, node, tenant, date_trunc('hour', window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           sum(gpu_us)::bigint AS gpu_us, count(*) AS windows
    FROM gm.gpu_windows
    WHERE policy = 'kernel-share-v1'
    GROUP BY 1, 2, 3, 4
), device_windows AS (
    -- one close's unattributed time is repeated on each of its rows: the largest per
    -- device-window counts once
    SELECT site, node, date_trunc('hour', window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           device, window_start, max(unattributed_us) AS unattributed_us
    FROM gm.gpu_windows
    WHERE policy = 'kernel-share-v1'
    GROUP BY 1, 2, 3, 4, 5
), node_hours AS (
    SELECT d.site, d.node, d.hour, sum(d.unattributed_us)::bigint AS unattributed_us
    FROM device_windows d
    GROUP BY 1, 2, 3
), node_attributed AS (
    SELECT site, node, hour, sum(gpu_us)::bigint AS gpu_us FROM attributed GROUP BY 1, 2, 3
)
SELECT coalesce(r.site, a.site)       AS site,
       coalesce(r.node, a.node)       AS node,
       coalesce(r.tenant, a.tenant)   AS tenant,
       coalesce(r.hour, a.hour)       AS hour,
       coalesce(r.gpu_us, 0)          AS reported_gpu_us,
       coalesce(a.gpu_us, 0)          AS attributed_gpu_us,
       coalesce(r.gpu_us, 0) - coalesce(a.gpu_us, 0) AS difference_us,
       coalesce(r.events, 0)          AS usage_events,
       coalesce(a.windows, 0)         AS gpu_windows,
       coalesce(n.unattributed_us, 0) AS node_unattributed_us,
       coalesce(na.gpu_us, 0)         AS node_attributed_us,
       CASE WHEN coalesce(na.gpu_us, 0) + coalesce(n.unattributed_us, 0) = 0 THEN NULL
            ELSE round(coalesce(n.unattributed_us, 0)::numeric
                       / (coalesce(na.gpu_us, 0) + coalesce(n.unattributed_us, 0)), 6) END
                                      AS unattributed_share
FROM reported r
FULL JOIN attributed a ON a.site = r.site AND a.node = r.node AND a.tenant = r.tenant AND a.hour = r.hour
LEFT JOIN node_hours n ON n.site = coalesce(r.site, a.site) AND n.node = coalesce(r.node, a.node)
                      AND n.hour = coalesce(r.hour, a.hour)
LEFT JOIN node_attributed na ON na.site = coalesce(r.site, a.site) AND na.node = coalesce(r.node, a.node)
                            AND na.hour = coalesce(r.hour, a.hour);
COMMENT ON VIEW audit.gpu_reconciliation IS
    'Per site, node, tenant and UTC hour: GPU kernel time reported per request on usage events beside the kernel time gpu_accounting attributed (kernel-share-v1 windows), the difference and the node''s unattributed share. A node that under-reports shows a negative difference_us.';
COMMENT ON COLUMN audit.gpu_reconciliation.node IS 'The usage events'' source, equal to audit.gpu_windows.node of the same node';
COMMENT ON COLUMN audit.gpu_reconciliation.hour IS 'UTC hour: of the event time for usage events, of window_start for GPU windows';
COMMENT ON COLUMN audit.gpu_reconciliation.reported_gpu_us IS 'Sum of data.gpu_us of the tenant''s accepted usage events from the node in the hour';
COMMENT ON COLUMN audit.gpu_reconciliation.attributed_gpu_us IS 'Sum of gpu_us of the tenant''s kernel-share-v1 GPU windows of the node starting in the hour';
COMMENT ON COLUMN audit.gpu_reconciliation.difference_us IS 'reported_gpu_us - attributed_gpu_us: negative when the node reported less per request than CUPTI attributed';
COMMENT ON COLUMN audit.gpu_reconciliation.usage_events IS 'Usage events summed in reported_gpu_us';
COMMENT ON COLUMN audit.gpu_reconciliation.gpu_windows IS 'GPU window rows summed in attributed_gpu_us';
COMMENT ON COLUMN audit.gpu_reconciliation.node_unattributed_us IS 'Kernel time of the node''s device-windows in the hour attributed to no tenant (per device-window the largest unattributed_us of its rows), the same on every tenant''s row';
COMMENT ON COLUMN audit.gpu_reconciliation.node_attributed_us IS 'Kernel time the node''s windows in the hour attributed to any tenant';
COMMENT ON COLUMN audit.gpu_reconciliation.unattributed_share IS 'node_unattributed_us / (node_attributed_us + node_unattributed_us), 6 decimals rounded half away from zero; NULL when both are 0';

RESET ROLE;
GRANT SELECT ON audit.gpu_windows, audit.gpu_source_gaps, audit.gpu_reconciliation TO gm_auditor, gm_api;

-- ---- Unit economics: site cost cards and the cost and margin of tokens -------------------
SET ROLE gm_owner;

-- What a GPU-hour costs the operator at a site, versioned like rate cards: a version is never
-- rewritten; the version in force at an hour is the one with the latest valid_from at or before
-- it. Site '*' is the fleet default for sites without a card of their own in force.
CREATE TABLE gm.cost_cards (
    site                 text           NOT NULL CHECK (site ~ '^([A-Za-z0-9][A-Za-z0-9._-]{0,63}|\*)$'),
    version              integer        NOT NULL CHECK (version >= 1),
    valid_from           timestamptz    NOT NULL,
    currency             char(3)        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    gpu_hour_cost        numeric(30,12) NOT NULL CHECK (gpu_hour_cost >= 0),
    reference_per_1m_output numeric(30,12) CHECK (reference_per_1m_output >= 0),
    note                 text,
    imported_at          timestamptz    NOT NULL DEFAULT gm.now(),
    PRIMARY KEY (site, version),
    UNIQUE (site, valid_from)
);
COMMENT ON TABLE gm.cost_cards IS 'Versioned site cost cards: cost per GPU-hour per site (or * for the fleet), immutable versions';
CREATE TRIGGER cost_cards_immutable BEFORE UPDATE OR DELETE ON gm.cost_cards
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();

CREATE VIEW audit.cost_cards AS
SELECT site, version, valid_from, currency, gpu_hour_cost, reference_per_1m_output, note, imported_at
FROM gm.cost_cards;
COMMENT ON VIEW audit.cost_cards IS 'Site cost cards as imported: what a GPU-hour costs the operator per site (* = fleet default), from valid_from on';
COMMENT ON COLUMN audit.cost_cards.gpu_hour_cost IS 'Cost of one GPU-hour (3,600,000,000 GPU-microseconds) in currency, 12 decimals';
COMMENT ON COLUMN audit.cost_cards.reference_per_1m_output IS 'A reference price per 1M output tokens the operator compares with (e.g. a central cloud list price); NULL: none';

-- The cost and margin of tokens. Two bases, never mixed in one row:
--   requests: per site, tenant, model and hour, GPU time = the per-request gpu_us of the
--             usage events (as billed today, gm.charges dimension gpu);
--   windows:  per site, tenant and hour (model '*': windows carry no model), GPU time = the
--             kernel time gpu_accounting attributed (kernel-share-v1 rows of gm.gpu_windows);
--             tokens and revenue of all the tenant's models at the site in the hour.
-- Revenue is the list amount of the usage (the ledger's exact amounts, before invoice-level
-- tiers, discounts, commitments and credits).
CREATE VIEW audit.gpu_economics AS
WITH usage AS (
    SELECT site, tenant, model, hour, currency,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'input'), 0)::numeric(40,0)  AS input_tokens,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'cached'), 0)::numeric(40,0) AS cached_tokens,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'output'), 0)::numeric(40,0) AS output_tokens,
           coalesce(sum(quantity) FILTER (WHERE dimension = 'gpu'), 0)::numeric(40,0)    AS gpu_us,
           sum(amount) AS revenue
    FROM gm.charges
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
COMMENT ON VIEW audit.gpu_economics IS
    'Cost and margin of tokens per site, tenant, model and UTC hour: GPU time priced by the site''s cost card beside the list revenue. basis requests: per model, GPU time from the usage events'' per-request gpu_us; basis windows: model *, GPU time attributed by gpu_accounting (kernel-share-v1 windows).';
COMMENT ON COLUMN audit.gpu_economics.basis IS 'requests (GPU time = per-request gpu_us, per model) or windows (GPU time = attributed kernel windows, all models as *)';
COMMENT ON COLUMN audit.gpu_economics.gpu_us IS 'GPU-microseconds of the basis';
COMMENT ON COLUMN audit.gpu_economics.revenue IS 'List amount of the usage in revenue_currency (exact, 18 decimals), before invoice-level tiers, discounts, commitments and credits';
COMMENT ON COLUMN audit.gpu_economics.cost_card_site IS 'The cost card used: the site''s own in force at the hour, else the fleet default *; NULL: none in force (no cost, no margin)';
COMMENT ON COLUMN audit.gpu_economics.gpu_cost IS 'gpu_us x gpu_hour_cost / 3,600,000,000, rounded half away from zero to 18 decimals, in cost_currency';
COMMENT ON COLUMN audit.gpu_economics.margin IS 'revenue - gpu_cost; NULL when no cost card is in force or the currencies differ';
COMMENT ON COLUMN audit.gpu_economics.cost_per_1m_output_tokens IS 'gpu_cost x 1,000,000 / output_tokens, rounded half away from zero to 18 decimals; NULL without output tokens';
COMMENT ON COLUMN audit.gpu_economics.revenue_per_1m_output_tokens IS 'revenue x 1,000,000 / output_tokens, rounded half away from zero to 18 decimals; NULL without output tokens';
COMMENT ON COLUMN audit.gpu_economics.reference_per_1m_output_tokens IS 'The cost card''s reference price per 1M output tokens, to compare cost_per_1m_output_tokens with';

RESET ROLE;
GRANT SELECT ON gm.cost_cards TO gm_api, gm_rater;
GRANT INSERT ON gm.cost_cards TO gm_api;
GRANT SELECT ON audit.cost_cards, audit.gpu_economics TO gm_auditor, gm_api;
