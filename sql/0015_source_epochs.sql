-- 0015 source epochs: a node that lost its state starts a new epoch of its source, and seqs
-- count per (source, epoch) (docs/events.md "Epochs", docs/auditors.md "Completeness").
--
-- Additive: data.epoch (usage revision 1.2, default 0) is stored on every ledger row, reject
-- and conflict that states it; gm.sources is keyed by (source, epoch) (existing rows are
-- epoch 0); audit views keep their columns and gain epoch columns at their end; a new view
-- audit.source_epochs. Every view re-created here starts from its newest definition (0009
-- usage_events, 0006 rejected/conflicting/gaps/completeness, 0011 chain_records and
-- chain_state_check, 0012 gm.ledger) and only adds the epoch.

SET ROLE gm_owner;

-- Ledger storage: the epoch of the event (0 for every row before this migration: the
-- default is not stored in old rows).
ALTER TABLE gm.ledger_rows ADD COLUMN epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0);

-- The logical ledger (0012's definition) with epoch at its end.
CREATE OR REPLACE VIEW gm.ledger AS
SELECT tn.name                                     AS tenant,
       l.event_time,
       so.name                                     AS source,
       l.event_id,
       l.seq,
       si.name                                     AS site,
       mo.name                                     AS model,
       nullif(l.request_id, '')                    AS request_id,
       l.input_tokens,
       l.cached_tokens,
       l.output_tokens,
       l.gpu_us,
       p.site_tier,
       p.card_id,
       p.card_version,
       p.currency,
       coalesce(p.amount_input, l.input_tokens * p.price_input)::numeric(38,18)     AS amount_input,
       coalesce(p.amount_cached, l.cached_tokens * p.price_cached)::numeric(38,18)  AS amount_cached,
       coalesce(p.amount_output, (l.output_tokens - l.reasoning_tokens) * p.price_output)::numeric(38,18)
                                                                                    AS amount_output,
       coalesce(p.amount_gpu, l.gpu_us * p.price_gpu * 0.000001)::numeric(38,18)    AS amount_gpu,
       p.flags,
       st.topic                                    AS kafka_topic,
       st.partition                                AS kafka_partition,
       l.kafka_offset,
       l.ingested_at,
       l.reasoning_tokens,
       l.cache_write_tokens,
       (ARRAY['standard', 'batch', 'priority'])[l.service_tier + 1]            AS service_tier,
       coalesce(p.amount_cache_write, l.cache_write_tokens * p.price_cache_write)::numeric(38,18)
                                                                                AS amount_cache_write,
       coalesce(p.amount_reasoning, l.reasoning_tokens * p.price_reasoning)::numeric(38,18)
                                                                                AS amount_reasoning,
       coalesce(p.amount_request, p.price_request)::numeric(38,18)             AS amount_request,
       l.epoch
FROM gm.ledger_rows l
JOIN gm.ledger_names tn ON tn.id = l.tenant_id
JOIN gm.ledger_names so ON so.id = l.source_id
JOIN gm.ledger_names si ON si.id = l.site_id
JOIN gm.ledger_names mo ON mo.id = l.model_id
JOIN gm.ledger_pricings p ON p.id = l.pricing_id
JOIN gm.ledger_streams st ON st.id = l.stream_id;
ALTER VIEW gm.ledger ALTER COLUMN epoch SET DEFAULT 0;
COMMENT ON COLUMN gm.ledger.epoch IS 'data.epoch of the event (0 when it did not say): seqs count per (source, epoch)';

-- INSERT INTO gm.ledger (…): 0012's function, with the epoch.
CREATE OR REPLACE FUNCTION gm.ledger_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, gm AS $$
DECLARE
    p_in  numeric := gm.ledger_unit_price(NEW.input_tokens, NEW.amount_input, false);
    p_ca  numeric := gm.ledger_unit_price(NEW.cached_tokens, NEW.amount_cached, false);
    p_out numeric := gm.ledger_unit_price(NEW.output_tokens - coalesce(NEW.reasoning_tokens, 0),
                                          NEW.amount_output, false);
    p_gpu numeric := gm.ledger_unit_price(NEW.gpu_us, NEW.amount_gpu, true);
    p_cw  numeric := gm.ledger_unit_price(coalesce(NEW.cache_write_tokens, 0),
                                          coalesce(NEW.amount_cache_write, 0), false);
    p_re  numeric := gm.ledger_unit_price(coalesce(NEW.reasoning_tokens, 0),
                                          coalesce(NEW.amount_reasoning, 0), false);
    p_rq  numeric := coalesce(NEW.amount_request, 0); /* one request: the fee is the amount */
    fixed boolean;
BEGIN
    fixed := p_in IS NULL OR p_ca IS NULL OR p_out IS NULL OR p_gpu IS NULL OR p_cw IS NULL
             OR p_re IS NULL;
    INSERT INTO gm.ledger_rows (event_time, seq, kafka_offset, input_tokens, cached_tokens,
                                output_tokens, gpu_us, reasoning_tokens, cache_write_tokens,
                                ingested_at, source_id, tenant_id, site_id,
                                model_id, pricing_id, stream_id, service_tier, event_id,
                                request_id, epoch)
    VALUES (NEW.event_time, NEW.seq, NEW.kafka_offset, NEW.input_tokens, NEW.cached_tokens,
            NEW.output_tokens, NEW.gpu_us, coalesce(NEW.reasoning_tokens, 0),
            coalesce(NEW.cache_write_tokens, 0), coalesce(NEW.ingested_at, gm.now()),
            gm.ledger_name_id(4::smallint, NEW.source), gm.ledger_name_id(1::smallint, NEW.tenant),
            gm.ledger_name_id(2::smallint, NEW.site), gm.ledger_name_id(3::smallint, NEW.model),
            gm.ledger_pricing_id(NEW.card_id, NEW.card_version, NEW.currency, NEW.site_tier,
                                 coalesce(NEW.flags, 0)::smallint,
                                 coalesce(p_in, 0), coalesce(p_ca, 0), coalesce(p_out, 0),
                                 coalesce(p_gpu, 0),
                                 CASE WHEN fixed THEN NEW.amount_input END,
                                 CASE WHEN fixed THEN NEW.amount_cached END,
                                 CASE WHEN fixed THEN NEW.amount_output END,
                                 CASE WHEN fixed THEN NEW.amount_gpu END,
                                 coalesce(p_cw, 0), coalesce(p_re, 0), p_rq,
                                 CASE WHEN fixed THEN coalesce(NEW.amount_cache_write, 0) END,
                                 CASE WHEN fixed THEN coalesce(NEW.amount_reasoning, 0) END,
                                 CASE WHEN fixed THEN coalesce(NEW.amount_request, 0) END),
            gm.ledger_stream_id(NEW.kafka_topic, NEW.kafka_partition),
            CASE coalesce(NEW.service_tier, 'standard') WHEN 'standard' THEN 0 WHEN 'batch' THEN 1
                 WHEN 'priority' THEN 2 END,
            NEW.event_id, coalesce(NEW.request_id, ''), coalesce(NEW.epoch, 0));
    RETURN NEW;
END $$;

-- Seq state per (source, epoch), with the event times of the accepted events.
ALTER TABLE gm.sources ADD COLUMN epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
                       ADD COLUMN first_time timestamptz,
                       ADD COLUMN last_time timestamptz;
ALTER TABLE gm.sources DROP CONSTRAINT sources_pkey;
ALTER TABLE gm.sources ADD PRIMARY KEY (source, epoch);
UPDATE gm.sources s SET first_time = x.f, last_time = x.t
FROM (SELECT source, min(event_time) AS f, max(event_time) AS t FROM gm.ledger GROUP BY 1) x
WHERE x.source = s.source;
COMMENT ON TABLE gm.sources IS 'Accepted seq numbers per emitting node and epoch, for duplicate detection and completeness';
COMMENT ON COLUMN gm.sources.epoch IS 'data.epoch: seqs count 1, 2, 3, ... per (source, epoch)';
COMMENT ON COLUMN gm.sources.first_time IS 'Earliest event time among the accepted events of this source and epoch';
COMMENT ON COLUMN gm.sources.last_time IS 'Latest event time among the accepted events of this source and epoch';

-- Rejects and conflicts: the epoch the message states (NULL on a reject whose identity could
-- not be read, as its seq).
ALTER TABLE gm.rejected_events ADD COLUMN epoch bigint CHECK (epoch >= 0);
UPDATE gm.rejected_events SET epoch = 0 WHERE seq IS NOT NULL;
ALTER TABLE gm.conflicting_events ADD COLUMN epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
                                  ADD COLUMN accepted_epoch bigint CHECK (accepted_epoch >= 0);
UPDATE gm.conflicting_events SET accepted_epoch = 0 WHERE accepted_event_id IS NOT NULL;

-- ---- Views (existing columns stay; epoch columns follow) ---------------------------------

-- 0009's definition, with the epoch.
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
       l.amount_request,
       l.epoch
FROM gm.ledger l;
COMMENT ON COLUMN audit.usage_events.epoch IS 'data.epoch (0 when the event did not say): the seq is counted per (source, epoch)';

-- 0006's definition, with the epoch.
CREATE OR REPLACE VIEW audit.rejected_events AS
SELECT r.received_at,
       r.kafka_topic,
       r.kafka_partition,
       r.kafka_offset,
       gm.payload_text(r.payload) AS payload,
       r.reason,
       r.payload                  AS payload_bytes,
       r.kafka_key,
       r.source,
       r.event_id                 AS id,
       r.seq,
       r.tenant,
       r.event_time               AS time,
       r.rule,
       r.replayed_at,
       r.replay_outcome,
       r.replayed_kafka_topic,
       r.replayed_kafka_partition,
       r.replayed_kafka_offset,
       r.epoch
FROM gm.rejected_events r;
COMMENT ON COLUMN audit.rejected_events.epoch IS 'The event''s data.epoch (0 when absent), when its source, id and seq could be read; NULL otherwise';

-- 0006's definition, with both epochs.
CREATE OR REPLACE VIEW audit.conflicting_events AS
SELECT c.received_at,
       c.source,
       c.event_id                      AS id,
       c.seq,
       c.tenant,
       c.event_time                    AS time,
       c.kind,
       c.reason,
       encode(c.fingerprint, 'hex')    AS fingerprint,
       c.accepted_event_id             AS accepted_id,
       c.accepted_seq,
       encode(c.accepted_fingerprint, 'hex') AS accepted_fingerprint,
       c.accepted_kafka_topic,
       c.accepted_kafka_partition,
       c.accepted_kafka_offset,
       c.kafka_topic,
       c.kafka_partition,
       c.kafka_offset,
       gm.payload_text(c.payload)      AS payload,
       c.payload                       AS payload_bytes,
       c.kafka_key,
       c.epoch,
       c.accepted_epoch
FROM gm.conflicting_events c;
COMMENT ON COLUMN audit.conflicting_events.epoch IS 'The message''s data.epoch (0 when absent)';
COMMENT ON COLUMN audit.conflicting_events.accepted_epoch IS 'data.epoch of the accepted event (NULL when none was found)';

-- Per (source, epoch): holes below the epoch's highest accepted seq that never arrived (kind
-- gap, as in 0006: rejected seqs of the same epoch are not gaps), and for every epoch that a
-- later epoch of the source closed, one row for its tail (kind tail): seqs after its highest
-- accepted seq, which a node that lost its state may have sent and lost; how many cannot be
-- known (last_missing NULL). A new epoch is never a gap of the old one.
CREATE OR REPLACE VIEW audit.source_gaps AS
SELECT s.source,
       lower(g.r)     AS first_missing,
       upper(g.r) - 1 AS last_missing,
       s.epoch,
       'gap'::text    AS kind
FROM gm.sources s,
     LATERAL (SELECT coalesce(range_agg(int8range(r.seq, r.seq + 1)), '{}'::int8multirange) AS m
              FROM gm.rejected_events r
              WHERE r.source = s.source AND r.epoch = s.epoch AND r.seq IS NOT NULL) rj,
     LATERAL unnest(int8multirange(int8range(1, upper(s.seqs))) - s.seqs - rj.m) AS g(r)
UNION ALL
SELECT s.source,
       upper(s.seqs),
       NULL::bigint,
       s.epoch,
       'tail'
FROM gm.sources s
WHERE EXISTS (SELECT 1 FROM gm.sources n WHERE n.source = s.source AND n.epoch > s.epoch);
COMMENT ON VIEW audit.source_gaps IS
    'Per source and epoch: ranges of data.seq below the epoch''s highest accepted seq that never arrived (kind gap; seqs that arrived and were rejected are in audit.rejected_events, not here; a range closes when a late event fills it), and for an epoch that a later epoch of the source closed, its tail (kind tail): from first_missing on, events the node may have sent before it lost its state never arrived; last_missing NULL: how many cannot be known. A new epoch is not a gap of the old one.';
COMMENT ON COLUMN audit.source_gaps.epoch IS 'The epoch (data.epoch) whose seqs are missing';
COMMENT ON COLUMN audit.source_gaps.kind IS 'gap: first_missing..last_missing never arrived; tail: the epoch was closed by a later one, seqs from first_missing on (last_missing NULL, unknown end) never arrived if the node sent them';
COMMENT ON COLUMN audit.source_gaps.first_missing IS 'First missing data.seq';
COMMENT ON COLUMN audit.source_gaps.last_missing IS 'Last missing data.seq (NULL for a tail: unknown)';

-- 0006's definition, one row per (source, epoch), with the epoch.
CREATE OR REPLACE VIEW audit.source_completeness AS
SELECT s.source,
       s.tenant,
       upper(s.seqs) - 1 AS highest_seq,
       s.events          AS accepted,
       s.duplicates,
       (SELECT count(*) FROM gm.conflicting_events c
         WHERE c.source = s.source AND c.epoch = s.epoch) AS conflicting,
       (SELECT count(*) FROM gm.rejected_events r
         WHERE r.source = s.source AND r.epoch = s.epoch AND r.replayed_at IS NULL) AS rejected,
       coalesce((SELECT sum(g.last_missing - g.first_missing + 1) FROM audit.source_gaps g
                  WHERE g.source = s.source AND g.epoch = s.epoch AND g.kind = 'gap'), 0)::bigint AS missing,
       s.epoch
FROM gm.sources s;
COMMENT ON VIEW audit.source_completeness IS
    'Per source and epoch: accepted events, quiet duplicates, conflicting messages, rejects not replayed, and seqs that never arrived (missing, the kind gap rows of audit.source_gaps)';
COMMENT ON COLUMN audit.source_completeness.epoch IS 'The epoch (data.epoch); a source has one row per epoch';

CREATE VIEW audit.source_epochs AS
SELECT s.source,
       s.epoch,
       lower(s.seqs)     AS first_seq,
       upper(s.seqs) - 1 AS last_seq,
       s.events          AS accepted,
       s.duplicates,
       c.conflicting,
       c.rejected,
       c.missing,
       s.first_time,
       s.last_time,
       s.first_seen,
       s.last_seen,
       (SELECT min(n.epoch) FROM gm.sources n WHERE n.source = s.source AND n.epoch > s.epoch)
           AS next_epoch,
       s.tenant
FROM gm.sources s
JOIN audit.source_completeness c ON c.source = s.source AND c.epoch = s.epoch;
COMMENT ON VIEW audit.source_epochs IS
    'One row per source and epoch (data.epoch): the seq range received, counts (accepted, duplicates, conflicting, rejected, missing), the first and last event time, when the rater first and last saw it, and the epoch that followed it (next_epoch; NULL: the current epoch). An epoch with a next_epoch is closed: its tail is in audit.source_gaps (kind tail)';
COMMENT ON COLUMN audit.source_epochs.source IS 'The emitting node (CloudEvents source)';
COMMENT ON COLUMN audit.source_epochs.epoch IS 'data.epoch: 0 for events without it; a node that lost its state starts a higher one';
COMMENT ON COLUMN audit.source_epochs.first_seq IS 'Lowest data.seq received in this epoch (accepted, duplicate or conflicting)';
COMMENT ON COLUMN audit.source_epochs.last_seq IS 'Highest data.seq received in this epoch';
COMMENT ON COLUMN audit.source_epochs.accepted IS 'Events of this epoch in the ledger';
COMMENT ON COLUMN audit.source_epochs.duplicates IS 'Quiet re-sends of accepted events of this epoch (not charged)';
COMMENT ON COLUMN audit.source_epochs.conflicting IS 'Messages of this epoch in audit.conflicting_events (not charged)';
COMMENT ON COLUMN audit.source_epochs.rejected IS 'Messages of this epoch in audit.rejected_events, not replayed';
COMMENT ON COLUMN audit.source_epochs.missing IS 'Seqs below last_seq that never arrived (audit.source_gaps, kind gap)';
COMMENT ON COLUMN audit.source_epochs.first_time IS 'Earliest event time among the accepted events of the epoch (NULL: none accepted yet, or kept before migration 0015 without ledger rows)';
COMMENT ON COLUMN audit.source_epochs.last_time IS 'Latest event time among the accepted events of the epoch';
COMMENT ON COLUMN audit.source_epochs.first_seen IS 'When the rater first accepted an event of this epoch (gm.now())';
COMMENT ON COLUMN audit.source_epochs.last_seen IS 'When the rater last accepted an event of this epoch';
COMMENT ON COLUMN audit.source_epochs.next_epoch IS 'The source''s next higher epoch (NULL: this is its current epoch); set: this epoch is closed';
COMMENT ON COLUMN audit.source_epochs.tenant IS 'The tenant of the first event accepted from this source and epoch';

-- 0011's definition; the L record gets the epoch as one more field only when it is not 0, so
-- every record (and chain) written before stays byte for byte what it was.
CREATE OR REPLACE VIEW audit.chain_records AS
SELECT l.kafka_topic AS topic, l.kafka_partition AS partition, l.kafka_offset AS kafka_offset, 'L' AS kind,
       CASE WHEN rp.kafka_offset IS NULL THEN
       (SELECT c.seq FROM gm.chain_batches c WHERE c.topic = l.kafka_topic
          AND c.partition = l.kafka_partition AND c.next_offset > l.kafka_offset
          AND c.from_offset <= l.kafka_offset ORDER BY c.next_offset LIMIT 1) END AS batch_seq,
       'L' || gm.chain_f(l.kafka_offset::text) || gm.chain_f(l.tenant) || gm.chain_f(gm.chain_us(l.event_time))
       || gm.chain_f(l.source) || gm.chain_f(l.event_id) || gm.chain_f(l.seq::text) || gm.chain_f(l.site)
       || gm.chain_f(l.model) || gm.chain_f(l.request_id) || gm.chain_f(l.input_tokens::text)
       || gm.chain_f(l.cached_tokens::text) || gm.chain_f(l.output_tokens::text) || gm.chain_f(l.gpu_us::text)
       || gm.chain_f(l.site_tier) || gm.chain_f(l.card_id) || gm.chain_f(l.card_version::text)
       || gm.chain_f(l.currency::text) || gm.chain_f(gm.chain_dec(l.amount_input))
       || gm.chain_f(gm.chain_dec(l.amount_cached)) || gm.chain_f(gm.chain_dec(l.amount_output))
       || gm.chain_f(gm.chain_dec(l.amount_gpu)) || gm.chain_f(l.flags::text)
       || gm.chain_f(l.reasoning_tokens::text) || gm.chain_f(l.cache_write_tokens::text)
       || gm.chain_f(l.service_tier)
       || CASE WHEN l.epoch <> 0 THEN gm.chain_f(l.epoch::text) ELSE '' END || E'\n' AS record,
       CASE WHEN rp.kafka_offset IS NOT NULL THEN
       (SELECT min(p.seq) FROM gm.chain_replays p, unnest(p.partitions, p.offsets) AS u(part, off)
        WHERE p.topic = l.kafka_topic AND u.part = l.kafka_partition AND u.off = l.kafka_offset) END
           AS replay_seq
FROM gm.ledger l
LEFT JOIN gm.rejected_events rp ON rp.kafka_topic = l.kafka_topic AND rp.kafka_partition = l.kafka_partition
    AND rp.kafka_offset = l.kafka_offset AND rp.replay_outcome = 'rated'
    AND rp.replayed_kafka_topic = l.kafka_topic AND rp.replayed_kafka_partition = l.kafka_partition
    AND rp.replayed_kafka_offset = l.kafka_offset
UNION ALL
SELECT r.kafka_topic, r.kafka_partition, r.kafka_offset, 'R',
       (SELECT c.seq FROM gm.chain_batches c WHERE c.topic = r.kafka_topic
          AND c.partition = r.kafka_partition AND c.next_offset > r.kafka_offset
          AND c.from_offset <= r.kafka_offset ORDER BY c.next_offset LIMIT 1),
       'R' || gm.chain_f(r.kafka_offset::text) || gm.chain_f(encode(r.kafka_key, 'hex'))
       || gm.chain_f(encode(r.payload, 'hex')) || gm.chain_f(r.reason) || E'\n', NULL
FROM gm.rejected_events r
UNION ALL
SELECT x.kafka_topic, x.kafka_partition, x.kafka_offset, 'X',
       CASE WHEN rp.kafka_offset IS NULL THEN
       (SELECT c.seq FROM gm.chain_batches c WHERE c.topic = x.kafka_topic
          AND c.partition = x.kafka_partition AND c.next_offset > x.kafka_offset
          AND c.from_offset <= x.kafka_offset ORDER BY c.next_offset LIMIT 1) END,
       'X' || gm.chain_f(x.kafka_offset::text) || gm.chain_f(encode(x.kafka_key, 'hex'))
       || gm.chain_f(encode(x.payload, 'hex')) || gm.chain_f(encode(x.fingerprint, 'hex'))
       || gm.chain_f(x.kind) || E'\n',
       CASE WHEN rp.kafka_offset IS NOT NULL THEN
       (SELECT min(p.seq) FROM gm.chain_replays p, unnest(p.partitions, p.offsets) AS u(part, off)
        WHERE p.topic = x.kafka_topic AND u.part = x.kafka_partition AND u.off = x.kafka_offset) END
FROM gm.conflicting_events x
LEFT JOIN gm.rejected_events rp ON rp.kafka_topic = x.kafka_topic AND rp.kafka_partition = x.kafka_partition
    AND rp.kafka_offset = x.kafka_offset AND rp.replay_outcome = 'conflict'
    AND rp.replayed_kafka_topic = x.kafka_topic AND rp.replayed_kafka_partition = x.kafka_partition
    AND rp.replayed_kafka_offset = x.kafka_offset;

-- 0011's definition; gm.sources' event counts are compared with the ledger per (source,
-- epoch) (key source/epoch).
CREATE OR REPLACE VIEW audit.chain_state_check AS
WITH d AS (
    SELECT e->>0 AS tenant, (e->>1)::bigint AS hour_us, e->>2 AS site, e->>3 AS model, e->>4 AS dimension,
           e->>5 AS card_id, (e->>6)::integer AS card_version, (e->>9)::numeric AS unit_price,
           sum((e->>10)::numeric) AS quantity, sum((e->>11)::numeric) AS amount, sum((e->>12)::bigint) AS events
    FROM (SELECT charges FROM gm.chain_batches UNION ALL SELECT charges FROM gm.chain_replays) cb,
         jsonb_array_elements(cb.charges) e GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
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
FROM gm.consumer_offsets o
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
COMMENT ON VIEW audit.chain_state_check IS 'Differences between the state tables and what the chains and the ledger say: gm.charges against the sum of the chained charge changes, gm.consumer_offsets against the last chained batch, gm.sources event counts against the ledger rows per source and epoch (key source/epoch), replay marks of gm.rejected_events against the replay chain (each replayed reject listed by exactly one gm.chain_replays entry). Empty when everything agrees';

RESET ROLE;

GRANT SELECT ON audit.source_epochs TO gm_auditor, gm_api;
