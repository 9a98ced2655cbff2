-- 0027 price variants (docs/rating.md, "Price variants"): service-tier multipliers and
-- context-length rows price a request by its variant, "" (standard, base context), "batch",
-- "priority", "ctx>N", "batch/ctx>N" or "priority/ctx>N", and the variant is a part of the key
-- of what is summed from priced requests, so that re-pricing the sums gives the rater's prices:
--   * gm.charges.variant (key: before unit_price), gm.charges_daily.variant (key, and the
--     rollup functions of 0008 re-created with it; their triggers stay, and so do the spend
--     triggers of 0009 and the NOTIFY triggers of 0021, which this file does not touch);
--   * gm.invoice_lines.variant ('' on lines of the base variant and on money lines) and
--     gm.rerating_corrections.variant (audit.rerating_corrections re-created with it last);
--   * the chain's charge changes get a 14th element, the variant, only when it is not '', so
--     that every earlier record stays as it was: audit.chain_batch_check and
--     audit.chain_replay_check (0011) hash it when present, audit.chain_state_check (0017)
--     groups by it;
--   * audit.invoice_lines (0017) and audit.usage_hourly (0002) re-created with variant as
--     their last column.

SET ROLE gm_owner;

ALTER TABLE gm.charges ADD COLUMN variant text NOT NULL DEFAULT '';
ALTER TABLE gm.charges DROP CONSTRAINT charges_pkey;
ALTER TABLE gm.charges ADD PRIMARY KEY (tenant, hour, site, model, dimension, card_id, card_version,
                                        variant, unit_price);
COMMENT ON COLUMN gm.charges.variant IS 'Price variant of the requests behind the row: '''' (standard, base context), batch, priority, ctx>N, batch/ctx>N or priority/ctx>N (N: the context row''s above_tokens); docs/rating.md, Price variants';

ALTER TABLE gm.charges_daily ADD COLUMN variant text NOT NULL DEFAULT '';
ALTER TABLE gm.charges_daily DROP CONSTRAINT charges_daily_pkey;
ALTER TABLE gm.charges_daily ADD PRIMARY KEY (tenant, day, site, model, dimension, card_id,
                                              card_version, variant, currency);
COMMENT ON COLUMN gm.charges_daily.variant IS 'Price variant, as gm.charges.variant';

-- 0008's rollup functions with the variant (same names: the triggers on gm.charges call them).
CREATE OR REPLACE FUNCTION gm.charges_rollup_ins() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.charges_daily AS d (tenant, day, site, model, dimension, card_id, card_version,
                                       variant, currency, quantity, amount, events, first_hour,
                                       last_hour)
    SELECT tenant, gm.day_of(hour), site, model, dimension, card_id, card_version, variant, currency,
           sum(quantity), sum(amount), sum(events), min(hour), max(hour)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (tenant, day, site, model, dimension, card_id, card_version, variant, currency)
    DO UPDATE
    SET quantity = d.quantity + EXCLUDED.quantity, amount = d.amount + EXCLUDED.amount,
        events = d.events + EXCLUDED.events, first_hour = least(d.first_hour, EXCLUDED.first_hour),
        last_hour = greatest(d.last_hour, EXCLUDED.last_hour);
    INSERT INTO gm.charges_daily_model AS d (tenant, day, model, dimension, currency, quantity,
                                             amount, events)
    SELECT tenant, gm.day_of(hour), model, dimension, currency, sum(quantity), sum(amount), sum(events)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant, day, model, dimension, currency) DO UPDATE
    SET quantity = d.quantity + EXCLUDED.quantity, amount = d.amount + EXCLUDED.amount,
        events = d.events + EXCLUDED.events;
    INSERT INTO gm.period_changes AS p (tenant, period_start, seq)
    SELECT tenant, m, nextval('gm.change_seq')
    FROM (SELECT DISTINCT tenant, gm.month_of(hour) AS m FROM new_rows ORDER BY 1, 2) x
    ON CONFLICT (tenant, period_start) DO UPDATE SET seq = EXCLUDED.seq, changed_at = gm.now();
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION gm.charges_rollup_upd() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.charges_daily AS d (tenant, day, site, model, dimension, card_id, card_version,
                                       variant, currency, quantity, amount, events, first_hour,
                                       last_hour)
    SELECT tenant, gm.day_of(hour), site, model, dimension, card_id, card_version, variant, currency,
           sum(q), sum(a), sum(e), min(hour), max(hour)
    FROM (SELECT tenant, hour, site, model, dimension, card_id, card_version, variant, currency,
                 quantity AS q, amount AS a, events AS e FROM new_rows
          UNION ALL
          SELECT tenant, hour, site, model, dimension, card_id, card_version, variant, currency,
                 -quantity, -amount, -events FROM old_rows) x
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ON CONFLICT (tenant, day, site, model, dimension, card_id, card_version, variant, currency)
    DO UPDATE
    SET quantity = d.quantity + EXCLUDED.quantity, amount = d.amount + EXCLUDED.amount,
        events = d.events + EXCLUDED.events, first_hour = least(d.first_hour, EXCLUDED.first_hour),
        last_hour = greatest(d.last_hour, EXCLUDED.last_hour);
    INSERT INTO gm.charges_daily_model AS d (tenant, day, model, dimension, currency, quantity,
                                             amount, events)
    SELECT tenant, gm.day_of(hour), model, dimension, currency, sum(q), sum(a), sum(e)
    FROM (SELECT tenant, hour, model, dimension, currency, quantity AS q, amount AS a, events AS e
          FROM new_rows
          UNION ALL
          SELECT tenant, hour, model, dimension, currency, -quantity, -amount, -events
          FROM old_rows) x
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant, day, model, dimension, currency) DO UPDATE
    SET quantity = d.quantity + EXCLUDED.quantity, amount = d.amount + EXCLUDED.amount,
        events = d.events + EXCLUDED.events;
    INSERT INTO gm.period_changes AS p (tenant, period_start, seq)
    SELECT tenant, m, nextval('gm.change_seq')
    FROM (SELECT DISTINCT tenant, gm.month_of(hour) AS m FROM new_rows ORDER BY 1, 2) x
    ON CONFLICT (tenant, period_start) DO UPDATE SET seq = EXCLUDED.seq, changed_at = gm.now();
    RETURN NULL;
END $$;

ALTER TABLE gm.invoice_lines ADD COLUMN variant text NOT NULL DEFAULT '';
COMMENT ON COLUMN gm.invoice_lines.variant IS 'Price variant of a usage or allowance line (as gm.charges.variant); '''' on lines of the base variant, tier lines and money lines';

ALTER TABLE gm.rerating_corrections ADD COLUMN variant text NOT NULL DEFAULT '';
COMMENT ON COLUMN gm.rerating_corrections.variant IS 'Price variant of the corrected line (as gm.invoice_lines.variant)';
CREATE OR REPLACE VIEW audit.rerating_corrections AS
SELECT c.correction_id, c.run_id, c.tenant, c.period_start, c.invoice_id, c.invoice_status,
       c.kind, c.dimension, c.model, c.site_tier, c.card_version, c.band, c.currency,
       c.quantity_before, c.quantity_after, c.unit_price_before, c.unit_price_after,
       c.amount_exact_before, c.amount_exact_after, c.amount_minor_before, c.amount_minor_after,
       EXISTS (SELECT 1 FROM gm.period_snapshots s WHERE s.tenant = c.tenant
               AND s.period_start = c.period_start AND s.rerating_seq >= c.correction_id) AS billed,
       c.variant
FROM gm.rerating_corrections c;

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
       l.gpu_basis,
       l.variant
FROM gm.invoice_lines l;

COMMENT ON COLUMN audit.invoice_lines.variant IS 'Price variant of the line: '''' (standard, base context), batch, priority, ctx>N, batch/ctx>N, priority/ctx>N';

CREATE OR REPLACE VIEW audit.usage_hourly AS
SELECT c.tenant,
       c.hour,
       c.site,
       c.model,
       c.dimension,
       sum(c.quantity)  AS quantity,
       sum(c.amount)    AS amount,
       c.currency,
       sum(c.events)    AS events,
       c.variant
FROM gm.charges c
GROUP BY c.tenant, c.hour, c.site, c.model, c.dimension, c.currency, c.variant;
COMMENT ON COLUMN audit.usage_hourly.variant IS 'Price variant (docs/rating.md, Price variants): one row per variant';

CREATE OR REPLACE VIEW audit.chain_batch_check AS
WITH rec AS (
    SELECT topic, partition, batch_seq,
           string_agg(record, '' ORDER BY kafka_offset) FILTER (WHERE kind = 'L') AS l_records,
           string_agg(record, '' ORDER BY kafka_offset) FILTER (WHERE kind = 'R') AS r_records,
           string_agg(record, '' ORDER BY kafka_offset) FILTER (WHERE kind = 'X') AS x_records,
           count(*) FILTER (WHERE kind = 'X') AS conflicts_found,
           count(*) FILTER (WHERE kind = 'L') AS rows_found,
           count(*) FILTER (WHERE kind = 'R') AS rejects_found
    FROM audit.chain_records WHERE batch_seq IS NOT NULL GROUP BY 1, 2, 3
), b AS (
    SELECT c.*, lag(c.digest) OVER w AS prev_row_digest, lag(c.next_offset) OVER w AS prev_next,
           lag(c.seq) OVER w AS prev_seq
    FROM gm.chain_batches c WINDOW w AS (PARTITION BY c.group_id, c.topic, c.partition ORDER BY c.seq)
)
SELECT b.group_id, b.topic, b.partition, b.seq, b.from_offset, b.next_offset,
       b.rows, coalesce(rec.rows_found, 0) AS rows_found,
       b.rejects, coalesce(rec.rejects_found, 0) AS rejects_found,
       encode(b.digest, 'hex') AS digest,
       encode(sha256(convert_to(
           'B' || gm.chain_f('1') || gm.chain_f(b.group_id) || gm.chain_f(b.topic)
           || gm.chain_f(b.partition::text) || gm.chain_f(b.seq::text) || gm.chain_f(b.from_offset::text)
           || gm.chain_f(b.next_offset::text) || gm.chain_f(b.rows::text) || gm.chain_f(b.rejects::text)
           || gm.chain_f(b.duplicates::text) || gm.chain_f(b.conflicts::text) || gm.chain_f(gm.chain_dec(b.input_tokens))
           || gm.chain_f(gm.chain_dec(b.cached_tokens)) || gm.chain_f(gm.chain_dec(b.output_tokens))
           || gm.chain_f(gm.chain_dec(b.gpu_us)) || gm.chain_f(gm.chain_dec(b.amount_input))
           || gm.chain_f(gm.chain_dec(b.amount_cached)) || gm.chain_f(gm.chain_dec(b.amount_output))
           || gm.chain_f(gm.chain_dec(b.amount_gpu)) || gm.chain_f(encode(b.prev_digest, 'hex'))
           || gm.chain_f(encode(sha256(convert_to(
                  coalesce(rec.l_records, '') || coalesce(rec.r_records, '') || coalesce(rec.x_records, '')
                  || coalesce((SELECT string_agg('C' || gm.chain_f(e->>0) || gm.chain_f(e->>1) || gm.chain_f(e->>2)
                                 || gm.chain_f(e->>3) || gm.chain_f(e->>4) || gm.chain_f(e->>5) || gm.chain_f(e->>6)
                                 || gm.chain_f(e->>7) || gm.chain_f(e->>8) || gm.chain_f(e->>9) || gm.chain_f(e->>10)
                                 || gm.chain_f(e->>11) || gm.chain_f(e->>12)
                                 || CASE WHEN jsonb_array_length(e) > 13 THEN gm.chain_f(e->>13) ELSE '' END
                                 || E'\n', '' ORDER BY o)
                               FROM jsonb_array_elements(b.charges) WITH ORDINALITY AS x(e, o)), ''),
                  'UTF8')), 'hex')) || E'\n',
           'UTF8')), 'hex') AS digest_recomputed,
       (b.seq = 1 AND b.prev_digest = decode(repeat('00', 32), 'hex'))
           OR (b.prev_seq = b.seq - 1 AND b.prev_digest = b.prev_row_digest AND b.from_offset = b.prev_next)
           AS link_ok,
       b.conflicts, coalesce(rec.conflicts_found, 0) AS conflicts_found
FROM b LEFT JOIN rec ON rec.topic = b.topic AND rec.partition = b.partition AND rec.batch_seq = b.seq;

CREATE OR REPLACE VIEW audit.chain_replay_check AS
WITH m AS (
    SELECT p.seq,
           string_agg('M' || gm.chain_f(u.part::text) || gm.chain_f(u.off::text) || gm.chain_f(r.replay_outcome)
                      || gm.chain_f(r.replayed_kafka_topic) || gm.chain_f(r.replayed_kafka_partition::text)
                      || gm.chain_f(r.replayed_kafka_offset::text) || E'\n'
                      || CASE WHEN r.replay_outcome = 'rated' THEN coalesce(cr.record, '')
                              WHEN r.replay_outcome = 'conflict' THEN coalesce(cx.record, '') ELSE '' END,
                      '' ORDER BY u.n) AS records,
           count(cr.record) AS rows_found
    FROM gm.chain_replays p
    CROSS JOIN LATERAL unnest(p.partitions, p.offsets) WITH ORDINALITY AS u(part, off, n)
    LEFT JOIN gm.rejected_events r ON r.kafka_topic = p.topic AND r.kafka_partition = u.part
        AND r.kafka_offset = u.off
    LEFT JOIN audit.chain_records cr ON r.replay_outcome = 'rated' AND cr.kind = 'L' AND cr.topic = p.topic
        AND cr.partition = u.part AND cr.kafka_offset = u.off
    LEFT JOIN audit.chain_records cx ON r.replay_outcome = 'conflict' AND cx.kind = 'X' AND cx.topic = p.topic
        AND cx.partition = u.part AND cx.kafka_offset = u.off
    GROUP BY p.seq
)
SELECT p.seq, p.topic, p.rows, coalesce(m.rows_found, 0) AS rows_found, encode(p.digest, 'hex') AS digest,
       encode(sha256(convert_to(
           'P' || gm.chain_f('1') || gm.chain_f(p.topic) || gm.chain_f(p.seq::text) || gm.chain_f(p.rows::text)
           || gm.chain_f(p.duplicates::text) || gm.chain_f(p.conflicts::text)
           || gm.chain_f(encode(p.prev_digest, 'hex'))
           || gm.chain_f(encode(sha256(convert_to(
                  coalesce(m.records, '')
                  || coalesce((SELECT string_agg('C' || gm.chain_f(e->>0) || gm.chain_f(e->>1) || gm.chain_f(e->>2)
                                 || gm.chain_f(e->>3) || gm.chain_f(e->>4) || gm.chain_f(e->>5) || gm.chain_f(e->>6)
                                 || gm.chain_f(e->>7) || gm.chain_f(e->>8) || gm.chain_f(e->>9) || gm.chain_f(e->>10)
                                 || gm.chain_f(e->>11) || gm.chain_f(e->>12)
                                 || CASE WHEN jsonb_array_length(e) > 13 THEN gm.chain_f(e->>13) ELSE '' END
                                 || E'\n', '' ORDER BY o)
                               FROM jsonb_array_elements(p.charges) WITH ORDINALITY AS x(e, o)), ''),
                  'UTF8')), 'hex')) || E'\n',
           'UTF8')), 'hex') AS digest_recomputed,
       (p.seq = 1 AND p.prev_digest = decode(repeat('00', 32), 'hex'))
           OR (lag(p.seq) OVER w = p.seq - 1 AND p.prev_digest = lag(p.digest) OVER w) AS link_ok
FROM gm.chain_replays p LEFT JOIN m USING (seq) WINDOW w AS (ORDER BY p.seq);

CREATE OR REPLACE VIEW audit.chain_state_check AS
WITH d AS (
    SELECT tenant, hour_us, site, model, dimension, card_id, card_version, variant, unit_price,
           sum(quantity) AS quantity, sum(amount) AS amount, sum(events) AS events
    FROM (SELECT tenant, hour_us, site, model, dimension, card_id, card_version, variant, unit_price,
                 quantity, amount, events
          FROM (SELECT e->>0 AS tenant, (e->>1)::bigint AS hour_us, e->>2 AS site, e->>3 AS model,
                       e->>4 AS dimension, e->>5 AS card_id, (e->>6)::integer AS card_version,
                       coalesce(e->>13, '') AS variant, (e->>9)::numeric AS unit_price, (e->>10)::numeric AS quantity,
                       (e->>11)::numeric AS amount, (e->>12)::bigint AS events
                FROM (SELECT charges FROM gm.chain_batches UNION ALL SELECT charges FROM gm.chain_replays) cb,
                     jsonb_array_elements(cb.charges) e) chained
          UNION ALL
          -- the charges of GPU windows (not chained yet): what the window rows say
          SELECT w.tenant, gm.chain_us(date_trunc('hour', w.window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')::bigint,
                 w.site, '*', 'gpu', w.charge_card_id, w.charge_card_version, '', w.charge_unit_price,
                 w.gpu_us, w.charge_amount, 1
          FROM gm.gpu_windows w WHERE w.charge_amount IS NOT NULL) x
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
), c AS (
    SELECT tenant, gm.chain_us(hour)::bigint AS hour_us, site, model, dimension, card_id, card_version,
           variant, unit_price, quantity, amount, events FROM gm.charges
)
SELECT 'charges' AS object,
       concat_ws('/', coalesce(c.tenant, d.tenant), coalesce(c.hour_us, d.hour_us), coalesce(c.site, d.site),
                 coalesce(c.model, d.model), coalesce(c.dimension, d.dimension), coalesce(c.card_id, d.card_id),
                 coalesce(c.card_version, d.card_version), nullif(coalesce(c.variant, d.variant), ''),
                 coalesce(c.unit_price, d.unit_price)) AS key,
       concat_ws(' ', 'quantity=' || gm.chain_dec(c.quantity), 'amount=' || gm.chain_dec(c.amount), 'events=' || c.events) AS stored,
       concat_ws(' ', 'quantity=' || gm.chain_dec(d.quantity), 'amount=' || gm.chain_dec(d.amount), 'events=' || d.events) AS chained
FROM c FULL JOIN d ON c.tenant = d.tenant AND c.hour_us = d.hour_us AND c.site = d.site AND c.model = d.model
    AND c.dimension = d.dimension AND c.card_id = d.card_id AND c.card_version = d.card_version
    AND c.variant = d.variant AND c.unit_price = d.unit_price
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

COMMENT ON VIEW audit.chain_state_check IS 'Differences between the state tables and what the chains and the ledger say: gm.charges against the sum of the chained charge changes (key with the price variant, the 14th element of a charge change; none: '''') plus the charges of GPU windows (audit.gpu_windows.charge_*), gm.consumer_offsets against the last chained batch (the GPU topics of gm.gpu_topics, not chained, skipped), gm.sources event counts against the ledger rows per source and epoch (key source/epoch), replay marks of gm.rejected_events against the replay chain (each replayed reject listed by exactly one gm.chain_replays entry). Empty when everything agrees';

RESET ROLE;
