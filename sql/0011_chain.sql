-- 0011 chain: tamper evidence. A SHA-256 digest per committed rater batch and partition
-- (written by the rater in the batch's transaction, ledger/chain.c), and one per finalized
-- invoice, credit note and re-rating run (written here, by deferred triggers, at COMMIT),
-- each chained to the previous digest of its chain. The hash rules (scheme 1) are in
-- docs/auditors.md, "Tamper evidence"; `gridmeter audit verify` and the audit.chain_* views
-- recompute them from the rows.

SET ROLE gm_owner;

-- ---- Canonical encoding helpers (scheme 1) ------------------------------------------------
-- A field: its UTF-8 byte length in decimal, ':', the bytes; NULL is a single '-'.
CREATE FUNCTION gm.chain_f(v text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN '-' ELSE octet_length(v)::text || ':' || v END
$$;
-- A decimal: exact, no trailing fraction zeros, no trailing point ("1.50" -> "1.5", "0.000" -> "0").
CREATE FUNCTION gm.chain_dec(v numeric) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT trim_scale(v)::text
$$;
-- An instant: integer microseconds since 1970-01-01T00:00:00Z.
CREATE FUNCTION gm.chain_us(v timestamptz) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (extract(epoch FROM v) * 1000000)::bigint::text
$$;
-- A JSON value: a JSON string of the text, or null.
CREATE FUNCTION gm.chain_j(v text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(to_json(v)::text, 'null')
$$;

-- ---- Rater batches --------------------------------------------------------------------------
CREATE TABLE gm.chain_batches (
    group_id       text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    seq            bigint      NOT NULL CHECK (seq >= 1),
    from_offset    bigint      NOT NULL,
    next_offset    bigint      NOT NULL CHECK (next_offset > from_offset),
    rows           integer     NOT NULL,
    rejects        integer     NOT NULL,
    duplicates     integer     NOT NULL,
    conflicts      integer     NOT NULL,
    input_tokens   numeric     NOT NULL,
    cached_tokens  numeric     NOT NULL,
    output_tokens  numeric     NOT NULL,
    gpu_us         numeric     NOT NULL,
    amount_input   numeric     NOT NULL,
    amount_cached  numeric     NOT NULL,
    amount_output  numeric     NOT NULL,
    amount_gpu     numeric     NOT NULL,
    charges        jsonb       NOT NULL,
    prev_digest    bytea       NOT NULL CHECK (octet_length(prev_digest) = 32),
    digest         bytea       NOT NULL CHECK (octet_length(digest) = 32),
    committed_at   timestamptz NOT NULL DEFAULT gm.now(),
    scheme         smallint    NOT NULL DEFAULT 1 CHECK (scheme = 1),
    PRIMARY KEY (group_id, topic, partition, seq)
);
CREATE INDEX chain_batches_range ON gm.chain_batches (topic, partition, next_offset);
COMMENT ON TABLE gm.chain_batches IS 'One row per committed rater batch and Kafka partition: the offsets it covered, its totals, its charge changes and its SHA-256 digest chained to the previous batch of the partition (scheme 1, docs/auditors.md)';
COMMENT ON COLUMN gm.chain_batches.seq IS 'Position in the chain of (group_id, topic, partition), from 1, gapless';
COMMENT ON COLUMN gm.chain_batches.from_offset IS 'First Kafka offset of the batch in this partition (the stored offset before the batch)';
COMMENT ON COLUMN gm.chain_batches.next_offset IS 'gm.consumer_offsets.next_offset after the batch';
COMMENT ON COLUMN gm.chain_batches.rows IS 'Ledger rows the batch inserted for this partition';
COMMENT ON COLUMN gm.chain_batches.rejects IS 'gm.rejected_events rows the batch inserted for this partition';
COMMENT ON COLUMN gm.chain_batches.duplicates IS 'Messages of this partition found to be duplicates (the same event again: no row inserted)';
COMMENT ON COLUMN gm.chain_batches.conflicts IS 'Messages of this partition kept in gm.conflicting_events (another event''s identity: no ledger row)';
COMMENT ON COLUMN gm.chain_batches.charges IS 'The batch''s changes to gm.charges (all its partitions), on the entry of its lowest partition ([] on the others): array of [tenant, hour_us, site, model, dimension, card_id, card_version, site_tier, currency, unit_price, quantity, amount, events] (strings; site_tier may be null), in key order';
COMMENT ON COLUMN gm.chain_batches.prev_digest IS 'digest of the previous batch of the chain; 32 zero bytes for seq 1';
COMMENT ON COLUMN gm.chain_batches.scheme IS 'The hash rules the digest follows (docs/auditors.md, "Canonical encoding (scheme 1)")';
COMMENT ON COLUMN gm.chain_batches.digest IS 'SHA-256 over the canonical bytes of the batch (docs/auditors.md, "Batch digest")';

-- ---- Documents: finalized invoices, credit notes, re-rating runs -----------------------------
CREATE TABLE gm.chain_documents (
    chain        text        NOT NULL,
    seq          bigint      NOT NULL CHECK (seq >= 1),
    kind         text        NOT NULL CHECK (kind IN ('invoice', 'credit_note', 'rerating_run')),
    doc_id       text        NOT NULL,
    number       text,
    prev_digest  bytea       NOT NULL CHECK (octet_length(prev_digest) = 32),
    digest       bytea       NOT NULL CHECK (octet_length(digest) = 32),
    recorded_at  timestamptz NOT NULL DEFAULT gm.now(),
    scheme       smallint    NOT NULL DEFAULT 1 CHECK (scheme = 1),
    PRIMARY KEY (chain, seq),
    UNIQUE (kind, doc_id)
);
COMMENT ON TABLE gm.chain_documents IS 'One row per finalized invoice, credit note and re-rating run: SHA-256 of its canonical JSON chained per issuer and kind in number order (scheme 1, docs/auditors.md)';
COMMENT ON COLUMN gm.chain_documents.chain IS '"invoice:ISSUER", "credit_note:ISSUER" or "rerating"';
COMMENT ON COLUMN gm.chain_documents.doc_id IS 'invoice_id, credit_note_id, or run_id';
COMMENT ON COLUMN gm.chain_documents.scheme IS 'The hash rules the digest follows (docs/auditors.md)';
COMMENT ON COLUMN gm.chain_documents.number IS 'The document number (invoices and credit notes)';

-- ---- Replays: `gridmeter rejects replay` ---------------------------------------------------
-- A replay writes ledger rows (and charges, conflicts, duplicates) at the Kafka coordinates of
-- rejects counted in an earlier batch; each replay commit appends one entry to the single
-- chain "replay", in the replay's transaction, listing the replayed rejects by coordinates.
CREATE TABLE gm.chain_replays (
    seq            bigint      PRIMARY KEY CHECK (seq >= 1),
    topic          text        NOT NULL,
    partitions     integer[]   NOT NULL,
    offsets        bigint[]    NOT NULL CHECK (cardinality(offsets) = cardinality(partitions)),
    rows           integer     NOT NULL,
    duplicates     integer     NOT NULL,
    conflicts      integer     NOT NULL,
    charges        jsonb       NOT NULL,
    prev_digest    bytea       NOT NULL CHECK (octet_length(prev_digest) = 32),
    digest         bytea       NOT NULL CHECK (octet_length(digest) = 32),
    committed_at   timestamptz NOT NULL DEFAULT gm.now(),
    scheme         smallint    NOT NULL DEFAULT 1 CHECK (scheme = 1)
);
COMMENT ON TABLE gm.chain_replays IS 'One row per committed replay of rejects (`gridmeter rejects replay`): the rejects it replayed (by Kafka coordinates), what became of them, its charge changes and its SHA-256 digest chained to the previous replay (chain "replay", scheme 1, docs/auditors.md)';
COMMENT ON COLUMN gm.chain_replays.seq IS 'Position in the chain "replay", from 1, gapless';
COMMENT ON COLUMN gm.chain_replays.topic IS 'Kafka topic of the replayed rejects';
COMMENT ON COLUMN gm.chain_replays.partitions IS 'Kafka partition of each replayed reject (with offsets: its coordinates), in (partition, offset) order';
COMMENT ON COLUMN gm.chain_replays.offsets IS 'Kafka offset of each replayed reject';
COMMENT ON COLUMN gm.chain_replays.rows IS 'Ledger rows the replay inserted (outcome rated)';
COMMENT ON COLUMN gm.chain_replays.duplicates IS 'Replayed rejects found to be an accepted event again (outcome duplicate)';
COMMENT ON COLUMN gm.chain_replays.conflicts IS 'Replayed rejects kept in gm.conflicting_events (outcome conflict)';
COMMENT ON COLUMN gm.chain_replays.charges IS 'The replay''s changes to gm.charges, as gm.chain_batches.charges';
COMMENT ON COLUMN gm.chain_replays.prev_digest IS 'digest of the previous replay; 32 zero bytes for seq 1';
COMMENT ON COLUMN gm.chain_replays.digest IS 'SHA-256 over the canonical bytes of the replay (docs/auditors.md, "Replay digest")';
COMMENT ON COLUMN gm.chain_replays.committed_at IS 'gm.now() of the replay''s transaction';
COMMENT ON COLUMN gm.chain_replays.scheme IS 'The hash rules the digest follows (docs/auditors.md)';
CREATE TRIGGER chain_replays_immutable BEFORE UPDATE OR DELETE ON gm.chain_replays
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER chain_replays_no_truncate BEFORE TRUNCATE ON gm.chain_replays
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();

CREATE TRIGGER chain_batches_immutable BEFORE UPDATE OR DELETE ON gm.chain_batches
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER chain_documents_immutable BEFORE UPDATE OR DELETE ON gm.chain_documents
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER chain_batches_no_truncate BEFORE TRUNCATE ON gm.chain_batches
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER chain_documents_no_truncate BEFORE TRUNCATE ON gm.chain_documents
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();

-- Canonical JSON of a document (docs/auditors.md, "Document digest"): keys in this order,
-- every value a JSON string of its canonical text, or null; no whitespace.
CREATE FUNCTION gm.chain_doc_json(p_kind text, p_id text) RETURNS text LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
    SELECT CASE p_kind
    WHEN 'invoice' THEN (
        SELECT '{"invoice_id":' || chain_j(i.invoice_id) || ',"tenant":' || chain_j(i.tenant)
            || ',"issuer":' || chain_j(i.issuer) || ',"number":' || chain_j(i.number)
            || ',"number_seq":' || chain_j(i.number_seq::text)
            || ',"period_start":' || chain_j(chain_us(i.period_start))
            || ',"period_end":' || chain_j(chain_us(i.period_end))
            || ',"currency":' || chain_j(i.currency::text)
            || ',"minor_units":' || chain_j(i.minor_units::text)
            || ',"total":' || chain_j(chain_dec(i.total))
            || ',"total_minor":' || chain_j(chain_dec(i.total_minor))
            || ',"usage_exact":' || chain_j(chain_dec(i.usage_exact))
            || ',"credit_balance_before_minor":' || chain_j(chain_dec(i.credit_balance_before_minor))
            || ',"credit_balance_after_minor":' || chain_j(chain_dec(i.credit_balance_after_minor))
            || ',"ledger_events":' || chain_j(chain_dec(i.ledger_events))
            || ',"ledger_amount":' || chain_j(chain_dec(i.ledger_amount))
            || ',"created_at":' || chain_j(chain_us(i.created_at))
            || ',"finalized_at":' || chain_j(chain_us(i.finalized_at))
            || ',"lines":[' || coalesce((
                SELECT string_agg('{"line_no":' || chain_j(l.line_no::text)
                    || ',"kind":' || chain_j(l.kind) || ',"adjusted_kind":' || chain_j(l.adjusted_kind)
                    || ',"description":' || chain_j(l.description)
                    || ',"dimension":' || chain_j(l.dimension) || ',"model":' || chain_j(l.model)
                    || ',"site_tier":' || chain_j(l.site_tier)
                    || ',"card_version":' || chain_j(l.card_version::text)
                    || ',"band":' || chain_j(l.band::text)
                    || ',"quantity":' || chain_j(chain_dec(l.quantity))
                    || ',"unit_price":' || chain_j(chain_dec(l.unit_price))
                    || ',"amount_exact":' || chain_j(chain_dec(l.amount_exact))
                    || ',"amount":' || chain_j(chain_dec(l.amount))
                    || ',"amount_minor":' || chain_j(chain_dec(l.amount_minor))
                    || ',"discount_minor":' || chain_j(chain_dec(l.discount_minor))
                    || ',"credit_minor":' || chain_j(chain_dec(l.credit_minor))
                    || ',"corrects_period":' || chain_j(chain_us(l.corrects_period)) || '}',
                    ',' ORDER BY l.line_no)
                FROM gm.invoice_lines l WHERE l.invoice_id = i.invoice_id), '') || ']}'
        FROM gm.invoices i WHERE i.invoice_id = p_id)
    WHEN 'credit_note' THEN (
        SELECT '{"credit_note_id":' || chain_j(c.credit_note_id)
            || ',"invoice_id":' || chain_j(c.invoice_id) || ',"tenant":' || chain_j(c.tenant)
            || ',"number":' || chain_j(c.number) || ',"number_seq":' || chain_j(c.number_seq::text)
            || ',"currency":' || chain_j(c.currency::text) || ',"amount":' || chain_j(chain_dec(c.amount))
            || ',"amount_minor":' || chain_j(chain_dec(c.amount_minor))
            || ',"reason":' || chain_j(c.reason) || ',"created_at":' || chain_j(chain_us(c.created_at)) || '}'
        FROM gm.credit_notes c WHERE c.credit_note_id = p_id)
    WHEN 'rerating_run' THEN (
        SELECT '{"run_id":' || chain_j(r.run_id::text)
            || ',"period_start":' || chain_j(chain_us(r.period_start)) || ',"tenant":' || chain_j(r.tenant)
            || ',"requested_by":' || chain_j(r.requested_by) || ',"reason":' || chain_j(r.reason)
            || ',"created_at":' || chain_j(chain_us(r.created_at))
            || ',"tenants":' || chain_j(r.tenants::text) || ',"lines_changed":' || chain_j(r.lines_changed::text)
            || ',"delta_exact":' || chain_j(chain_dec(r.delta_exact))
            || ',"delta_minor":' || chain_j(r.delta_minor::text)
            || ',"corrections":[' || coalesce((
                SELECT string_agg('{"correction_id":' || chain_j(c.correction_id::text)
                    || ',"tenant":' || chain_j(c.tenant) || ',"period_start":' || chain_j(chain_us(c.period_start))
                    || ',"invoice_id":' || chain_j(c.invoice_id) || ',"invoice_status":' || chain_j(c.invoice_status)
                    || ',"kind":' || chain_j(c.kind) || ',"dimension":' || chain_j(c.dimension)
                    || ',"model":' || chain_j(c.model) || ',"site_tier":' || chain_j(c.site_tier)
                    || ',"card_version":' || chain_j(c.card_version::text) || ',"band":' || chain_j(c.band::text)
                    || ',"currency":' || chain_j(c.currency::text)
                    || ',"quantity_before":' || chain_j(chain_dec(c.quantity_before))
                    || ',"quantity_after":' || chain_j(chain_dec(c.quantity_after))
                    || ',"unit_price_before":' || chain_j(chain_dec(c.unit_price_before))
                    || ',"unit_price_after":' || chain_j(chain_dec(c.unit_price_after))
                    || ',"amount_exact_before":' || chain_j(chain_dec(c.amount_exact_before))
                    || ',"amount_exact_after":' || chain_j(chain_dec(c.amount_exact_after))
                    || ',"amount_minor_before":' || chain_j(chain_dec(c.amount_minor_before))
                    || ',"amount_minor_after":' || chain_j(chain_dec(c.amount_minor_after)) || '}',
                    ',' ORDER BY c.correction_id)
                FROM gm.rerating_corrections c WHERE c.run_id = r.run_id), '') || ']}'
        FROM gm.rerating_runs r WHERE r.run_id::text = p_id)
    END
$$;
COMMENT ON FUNCTION gm.chain_doc_json IS 'Canonical JSON (scheme 1) of an invoice, credit note or re-rating run, as hashed into gm.chain_documents';

-- The digest of a document at position seq of chain: SHA-256 of the header record and the JSON.
CREATE FUNCTION gm.chain_doc_digest(p_chain text, p_seq bigint, p_kind text, p_id text, p_prev bytea)
RETURNS bytea LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
    SELECT sha256(convert_to('D' || chain_f('1') || chain_f(p_chain) || chain_f(p_seq::text)
                             || chain_f(p_kind) || chain_f(p_id) || chain_f(encode(p_prev, 'hex')) || E'\n'
                             || chain_doc_json(p_kind, p_id), 'UTF8'))
$$;

-- Appends a document to its chain. Concurrent appenders of one chain queue on an advisory
-- lock (invoices and credit notes already queue on gm.next_number's row, in number order).
CREATE FUNCTION gm.chain_append(p_kind text, p_id text) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    v_chain  text;
    v_number text;
    v_seq    bigint;
    v_prev   bytea;
BEGIN
    IF p_kind = 'invoice' THEN
        SELECT 'invoice:' || issuer, number INTO v_chain, v_number FROM gm.invoices WHERE invoice_id = p_id;
    ELSIF p_kind = 'credit_note' THEN
        SELECT 'credit_note:' || i.issuer, c.number INTO v_chain, v_number
        FROM gm.credit_notes c JOIN gm.invoices i USING (invoice_id) WHERE c.credit_note_id = p_id;
    ELSE
        v_chain := 'rerating';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('gm.chain_documents'), hashtext(v_chain));
    SELECT seq, digest INTO v_seq, v_prev FROM gm.chain_documents WHERE chain = v_chain
    ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := decode(repeat('00', 32), 'hex');
    END IF;
    INSERT INTO gm.chain_documents (chain, seq, kind, doc_id, number, prev_digest, digest)
    VALUES (v_chain, v_seq + 1, p_kind, p_id, v_number, v_prev,
            gm.chain_doc_digest(v_chain, v_seq + 1, p_kind, p_id, v_prev));
END $$;
REVOKE EXECUTE ON FUNCTION gm.chain_append(text, text) FROM PUBLIC;

-- Deferred to COMMIT: the lines of an invoice and the corrections of a run are in by then.
CREATE FUNCTION gm.chain_doc_trigger() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    IF TG_TABLE_NAME = 'invoices' THEN
        PERFORM gm.chain_append('invoice', NEW.invoice_id);
    ELSIF TG_TABLE_NAME = 'credit_notes' THEN
        PERFORM gm.chain_append('credit_note', NEW.credit_note_id);
    ELSE
        PERFORM gm.chain_append('rerating_run', NEW.run_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER chain_invoice_finalized AFTER UPDATE ON gm.invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status = 'draft' AND NEW.status = 'finalized')
    EXECUTE FUNCTION gm.chain_doc_trigger();
CREATE CONSTRAINT TRIGGER chain_credit_note AFTER INSERT ON gm.credit_notes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gm.chain_doc_trigger();
CREATE CONSTRAINT TRIGGER chain_rerating_run AFTER INSERT ON gm.rerating_runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gm.chain_doc_trigger();

-- ---- Auditors' views: the chains and the same checks as `gridmeter audit verify` -------------
CREATE VIEW audit.chain_batches AS
SELECT group_id, topic, partition, seq, from_offset, next_offset, rows, rejects, duplicates,
       conflicts, input_tokens, cached_tokens, output_tokens, gpu_us,
       amount_input, amount_cached, amount_output, amount_gpu, charges,
       encode(prev_digest, 'hex') AS prev_digest, encode(digest, 'hex') AS digest, committed_at,
       scheme
FROM gm.chain_batches;
COMMENT ON VIEW audit.chain_batches IS 'The batch chains: one row per committed rater batch and partition, digests in lowercase hex (docs/auditors.md, "Tamper evidence")';

CREATE VIEW audit.chain_documents AS
SELECT chain, seq, kind, doc_id, number, encode(prev_digest, 'hex') AS prev_digest,
       encode(digest, 'hex') AS digest, recorded_at, scheme
FROM gm.chain_documents;
COMMENT ON VIEW audit.chain_documents IS 'The document chains: one row per finalized invoice, credit note and re-rating run, digests in lowercase hex';

-- Canonical L and R records of every ledger row and rejected message, with the batch whose
-- offset range holds it (NULL: no batch covers it).
CREATE VIEW audit.chain_records AS
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
       || gm.chain_f(l.service_tier) || E'\n' AS record,
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
COMMENT ON VIEW audit.chain_records IS 'Canonical record (scheme 1) of every ledger row (kind L), rejected message (kind R) and conflicting message (kind X, gm.conflicting_events), and the chained batch whose offset range holds it (batch_seq NULL: not covered by any batch, e.g. a row added behind the rater''s back). A ledger row written by a replay (its reject is marked rated at the same coordinates) belongs to no batch: replay_seq is the gm.chain_replays entry that lists it (NULL on a replayed row: a replay mark no replay entry covers, e.g. forged); likewise a conflicting message a replay kept (its reject marked conflict at the same coordinates)';

-- Every batch recomputed: digest from its rows, link to the previous batch, offsets contiguous.
CREATE VIEW audit.chain_batch_check AS
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
                                 || gm.chain_f(e->>11) || gm.chain_f(e->>12) || E'\n', '' ORDER BY o)
                               FROM jsonb_array_elements(b.charges) WITH ORDINALITY AS x(e, o)), ''),
                  'UTF8')), 'hex')) || E'\n',
           'UTF8')), 'hex') AS digest_recomputed,
       (b.seq = 1 AND b.prev_digest = decode(repeat('00', 32), 'hex'))
           OR (b.prev_seq = b.seq - 1 AND b.prev_digest = b.prev_row_digest AND b.from_offset = b.prev_next)
           AS link_ok,
       b.conflicts, coalesce(rec.conflicts_found, 0) AS conflicts_found
FROM b LEFT JOIN rec ON rec.topic = b.topic AND rec.partition = b.partition AND rec.batch_seq = b.seq;
COMMENT ON VIEW audit.chain_batch_check IS 'Every chained batch recomputed from the rows: digest (stored) against digest_recomputed, rows and rejects counted, link_ok = seq follows the previous one, prev_digest is its digest and from_offset its next_offset. A batch is sound when digest = digest_recomputed AND link_ok';

-- Every replay recomputed: its M records (the reject's mark) and, for a reject rated again,
-- the L record of the ledger row at the reject's coordinates (for one kept as a conflict, the
-- X record of its gm.conflicting_events row); its charge changes; its link.
CREATE VIEW audit.chain_replay_check AS
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
                                 || gm.chain_f(e->>11) || gm.chain_f(e->>12) || E'\n', '' ORDER BY o)
                               FROM jsonb_array_elements(p.charges) WITH ORDINALITY AS x(e, o)), ''),
                  'UTF8')), 'hex')) || E'\n',
           'UTF8')), 'hex') AS digest_recomputed,
       (p.seq = 1 AND p.prev_digest = decode(repeat('00', 32), 'hex'))
           OR (lag(p.seq) OVER w = p.seq - 1 AND p.prev_digest = lag(p.digest) OVER w) AS link_ok
FROM gm.chain_replays p LEFT JOIN m USING (seq) WINDOW w AS (ORDER BY p.seq);
COMMENT ON VIEW audit.chain_replay_check IS 'Every chained replay recomputed from the replayed rejects'' marks and the ledger rows they point at: digest (stored) against digest_recomputed, rows (rated) against rows_found, link_ok = seq follows the previous one and prev_digest is its digest. Sound when digest = digest_recomputed AND link_ok';

CREATE VIEW audit.chain_document_check AS
SELECT d.chain, d.seq, d.kind, d.doc_id, d.number, encode(d.digest, 'hex') AS digest,
       encode(gm.chain_doc_digest(d.chain, d.seq, d.kind, d.doc_id, d.prev_digest), 'hex') AS digest_recomputed,
       (d.seq = 1 AND d.prev_digest = decode(repeat('00', 32), 'hex'))
           OR (lag(d.seq) OVER w = d.seq - 1 AND d.prev_digest = lag(d.digest) OVER w) AS link_ok
FROM gm.chain_documents d WINDOW w AS (PARTITION BY d.chain ORDER BY d.seq);
COMMENT ON VIEW audit.chain_document_check IS 'Every chained document recomputed from its rows (digest_recomputed NULL: the document is gone) and its link to the previous one';

-- The chains' ends, for anchors: one row per chain.
CREATE VIEW audit.chain_heads AS
(SELECT DISTINCT ON (group_id, topic, partition) 'batch:' || group_id || '/' || topic || '/' || partition AS chain,
        seq, encode(digest, 'hex') AS digest
 FROM gm.chain_batches ORDER BY group_id, topic, partition, seq DESC)
UNION ALL
(SELECT 'replay', seq, encode(digest, 'hex') FROM gm.chain_replays ORDER BY seq DESC LIMIT 1);
COMMENT ON VIEW audit.chain_heads IS 'The last digest of every batch chain (name batch:GROUP/TOPIC/PARTITION) and of the replay chain (name replay); with audit.chain_document_heads, what an anchor file records';
CREATE VIEW audit.chain_document_heads AS
SELECT DISTINCT ON (chain) chain, seq, encode(digest, 'hex') AS digest
FROM gm.chain_documents ORDER BY chain, seq DESC;
COMMENT ON VIEW audit.chain_document_heads IS 'The last digest of every document chain';

-- What the chains say the state tables hold: gm.charges against the sum of the batches'
-- charge changes, gm.consumer_offsets against the last batch of each partition, gm.sources'
-- event counts against the ledger. Empty when all agree.
CREATE VIEW audit.chain_state_check AS
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
SELECT 'sources', coalesce(s.source, l.source), 'events=' || s.events, 'events=' || coalesce(l.n, 0)
FROM gm.sources s FULL JOIN (SELECT source, count(*) AS n FROM gm.ledger GROUP BY 1) l USING (source)
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
COMMENT ON VIEW audit.chain_state_check IS 'Differences between the state tables and what the chains and the ledger say: gm.charges against the sum of the chained charge changes, gm.consumer_offsets against the last chained batch, gm.sources event counts against the ledger rows, replay marks of gm.rejected_events against the replay chain (each replayed reject listed by exactly one gm.chain_replays entry). Empty when everything agrees';

RESET ROLE;

GRANT SELECT, INSERT ON gm.chain_batches, gm.chain_replays TO gm_rater;
GRANT SELECT ON gm.chain_batches, gm.chain_documents, gm.chain_replays TO gm_api;
GRANT SELECT ON audit.chain_batches, audit.chain_documents, audit.chain_records, audit.chain_batch_check,
    audit.chain_document_check, audit.chain_replay_check, audit.chain_heads, audit.chain_document_heads, audit.chain_state_check
    TO gm_auditor, gm_api;
