-- 0006 event identity: conflicting re-sends, rejects that can be replayed, completeness
-- without ambiguity (docs/events.md "Identity", docs/auditors.md).
--
-- Additive only: a new table gm.conflicting_events, new nullable columns on
-- gm.rejected_events and one on gm.sources; audit views keep their columns and gain some at
-- the end.

SET ROLE gm_owner;

-- A message whose (source, seq) or (source, id) was already taken by an accepted event that
-- is not the same event (another id, another seq, or the same identity with other content).
-- Kept with its payload and Kafka coordinates; never charged.
CREATE TABLE gm.conflicting_events (
    received_at               timestamptz NOT NULL DEFAULT gm.now(),
    kafka_topic               text        NOT NULL,
    kafka_partition           integer     NOT NULL,
    kafka_offset              bigint      NOT NULL,
    kafka_key                 bytea,
    payload                   bytea       NOT NULL,
    source                    text        NOT NULL,
    event_id                  text        NOT NULL,
    seq                       bigint      NOT NULL,
    tenant                    text        NOT NULL,
    event_time                timestamptz NOT NULL,
    fingerprint               bytea       NOT NULL CHECK (length(fingerprint) = 32),
    kind                      text        NOT NULL
                              CHECK (kind IN ('content_differs', 'seq_taken', 'id_reused')),
    reason                    text        NOT NULL,
    accepted_event_id         text,
    accepted_seq              bigint,
    accepted_fingerprint      bytea       CHECK (length(accepted_fingerprint) = 32),
    accepted_kafka_topic      text,
    accepted_kafka_partition  integer,
    accepted_kafka_offset     bigint,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX conflicting_events_source_seq ON gm.conflicting_events (source, seq);
COMMENT ON TABLE gm.conflicting_events IS
    'Messages that claimed the identity of an accepted event with other content: kept, never charged';

-- Rejects: what could be read of the event, why (rule), and what a replay made of it.
ALTER TABLE gm.rejected_events
    ADD COLUMN source                  text,
    ADD COLUMN event_id                text,
    ADD COLUMN seq                     bigint,
    ADD COLUMN tenant                  text,
    ADD COLUMN event_time              timestamptz,
    ADD COLUMN rule                    text
        CHECK (rule IN ('contract', 'type', 'time', 'rating', 'poison', 'kafka')),
    ADD COLUMN replayed_at             timestamptz,
    ADD COLUMN replay_outcome          text CHECK (replay_outcome IN ('rated', 'duplicate', 'conflict')),
    ADD COLUMN replayed_kafka_topic    text,
    ADD COLUMN replayed_kafka_partition integer,
    ADD COLUMN replayed_kafka_offset   bigint,
    ADD CONSTRAINT rejected_events_replay_complete
        CHECK ((replayed_at IS NULL) = (replay_outcome IS NULL));
CREATE INDEX rejected_events_source_seq ON gm.rejected_events (source, seq) WHERE source IS NOT NULL;

-- Quiet duplicates per source (same event re-sent), for completeness per source.
ALTER TABLE gm.sources ADD COLUMN duplicates bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN gm.sources.duplicates IS 'Re-sends of an accepted event (same source, id, seq and content), not charged';

-- Conflicting messages per committed batch (messages = accepted + duplicates + conflicts +
-- rejected).
ALTER TABLE gm.batches ADD COLUMN conflicts integer NOT NULL DEFAULT 0;

RESET ROLE;

GRANT INSERT, SELECT ON gm.conflicting_events TO gm_rater;
GRANT SELECT ON gm.conflicting_events TO gm_api;
-- `gridmeter rejects replay` runs as gm_rater: it marks a reject, never rewrites it.
GRANT UPDATE (replayed_at, replay_outcome, replayed_kafka_topic, replayed_kafka_partition,
              replayed_kafka_offset) ON gm.rejected_events TO gm_rater;

SET ROLE gm_owner;

CREATE VIEW audit.conflicting_events AS
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
       c.kafka_key
FROM gm.conflicting_events c;
COMMENT ON VIEW audit.conflicting_events IS
    'Messages that claimed an accepted event''s identity ((source, seq) or (source, id)) with other content: kept with their payload, never charged. The accepted event is the one in audit.usage_events.';
COMMENT ON COLUMN audit.conflicting_events.kind IS
    'content_differs: same source, id and seq, other content; seq_taken: the seq belongs to an event with another id (e.g. a node that lost its state and restarted at seq 1); id_reused: the (source, id) belongs to an event with another seq';
COMMENT ON COLUMN audit.conflicting_events.fingerprint IS
    'SHA-256 (hex) of the canonical form of this message''s event (gm_event_encode)';
COMMENT ON COLUMN audit.conflicting_events.accepted_id IS 'id of the accepted event that holds the identity (NULL only if it could not be found)';
COMMENT ON COLUMN audit.conflicting_events.accepted_fingerprint IS
    'SHA-256 (hex) of the canonical form of the accepted event, rebuilt from its ledger row';
COMMENT ON COLUMN audit.conflicting_events.received_at IS 'When the rater kept it (gm.now() of its batch)';
COMMENT ON COLUMN audit.conflicting_events.source IS 'The message''s CloudEvents source (also id, seq, tenant, time: as the message says)';
COMMENT ON COLUMN audit.conflicting_events.id IS 'The message''s CloudEvents id';
COMMENT ON COLUMN audit.conflicting_events.seq IS 'The message''s data.seq';
COMMENT ON COLUMN audit.conflicting_events.tenant IS 'The message''s subject (tenant)';
COMMENT ON COLUMN audit.conflicting_events.time IS 'The message''s event time';
COMMENT ON COLUMN audit.conflicting_events.reason IS 'The rule, naming the accepted event: why it was not charged';
COMMENT ON COLUMN audit.conflicting_events.accepted_seq IS 'data.seq of the accepted event';
COMMENT ON COLUMN audit.conflicting_events.accepted_kafka_topic IS 'Kafka topic of the accepted event''s message';
COMMENT ON COLUMN audit.conflicting_events.accepted_kafka_partition IS 'Kafka partition of the accepted event''s message';
COMMENT ON COLUMN audit.conflicting_events.accepted_kafka_offset IS 'Kafka offset of the accepted event''s message (the row of audit.usage_events with these coordinates)';
COMMENT ON COLUMN audit.conflicting_events.kafka_topic IS 'Kafka topic of the conflicting message';
COMMENT ON COLUMN audit.conflicting_events.kafka_partition IS 'Kafka partition of the conflicting message';
COMMENT ON COLUMN audit.conflicting_events.kafka_offset IS 'Kafka offset of the conflicting message';
COMMENT ON COLUMN audit.conflicting_events.payload IS 'The message as received: text when valid UTF-8, else PostgreSQL''s escape form';
COMMENT ON COLUMN audit.conflicting_events.payload_bytes IS 'The message as received, bytes';
COMMENT ON COLUMN audit.conflicting_events.kafka_key IS 'The message''s Kafka key (the source)';

-- Existing columns stay as they were; the new ones follow.
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
       r.replayed_kafka_offset
FROM gm.rejected_events r;
COMMENT ON COLUMN audit.rejected_events.rule IS
    'Which rule refused it: contract (the event contract), type (wrong type for the topic), time (time policy), rating (no card or tenant prices it), poison (PostgreSQL refused its row), kafka (unreadable message); NULL for rejects stored before migration 0006';
COMMENT ON COLUMN audit.rejected_events.source IS 'The event''s source, when the message states a valid source, id and seq (also id, seq; tenant and time when valid), even if another field broke the contract';
COMMENT ON COLUMN audit.rejected_events.id IS 'The event''s CloudEvents id, when the message could be decoded';
COMMENT ON COLUMN audit.rejected_events.seq IS 'The event''s data.seq, when the message could be decoded: an arrived seq, never a gap';
COMMENT ON COLUMN audit.rejected_events.tenant IS 'The event''s subject (tenant), when the message could be decoded';
COMMENT ON COLUMN audit.rejected_events.time IS 'The event''s time, when the message could be decoded';
COMMENT ON COLUMN audit.rejected_events.replayed_kafka_topic IS 'Kafka topic of the row that accounts for the replayed event';
COMMENT ON COLUMN audit.rejected_events.replayed_kafka_partition IS 'Kafka partition of the row that accounts for the replayed event';
COMMENT ON COLUMN audit.rejected_events.replayed_at IS 'When `gridmeter rejects replay` accounted for it (gm.now()); NULL: not replayed';
COMMENT ON COLUMN audit.rejected_events.replay_outcome IS
    'rated: a ledger row now holds it; duplicate: the same event was already in the ledger; conflict: kept in audit.conflicting_events';
COMMENT ON COLUMN audit.rejected_events.replayed_kafka_offset IS
    'The ledger row that accounts for the replayed event, by its Kafka coordinates (replayed_kafka_topic, _partition, _offset) in audit.usage_events';

-- Only what never arrived: seqs that arrived and were rejected (and not replayed) are not gaps.
CREATE OR REPLACE VIEW audit.source_gaps AS
SELECT s.source,
       lower(g.r)     AS first_missing,
       upper(g.r) - 1 AS last_missing
FROM gm.sources s,
     LATERAL (SELECT coalesce(range_agg(int8range(r.seq, r.seq + 1)), '{}'::int8multirange) AS m
              FROM gm.rejected_events r
              WHERE r.source = s.source AND r.seq IS NOT NULL) rj,
     LATERAL unnest(int8multirange(int8range(1, upper(s.seqs))) - s.seqs - rj.m) AS g(r);
COMMENT ON VIEW audit.source_gaps IS
    'Ranges of data.seq below a source''s highest accepted seq that never arrived (completeness). Seqs that arrived and were rejected are in audit.rejected_events, not here. A range closes when a late event fills it.';

CREATE VIEW audit.source_completeness AS
SELECT s.source,
       s.tenant,
       upper(s.seqs) - 1 AS highest_seq,
       s.events          AS accepted,
       s.duplicates,
       (SELECT count(*) FROM gm.conflicting_events c WHERE c.source = s.source) AS conflicting,
       (SELECT count(*) FROM gm.rejected_events r
         WHERE r.source = s.source AND r.replayed_at IS NULL) AS rejected,
       coalesce((SELECT sum(g.last_missing - g.first_missing + 1) FROM audit.source_gaps g
                  WHERE g.source = s.source), 0)::bigint AS missing
FROM gm.sources s;
COMMENT ON VIEW audit.source_completeness IS
    'Per source: accepted events, quiet duplicates, conflicting messages, rejects not replayed, and seqs that never arrived (missing, as in audit.source_gaps)';
COMMENT ON COLUMN audit.source_completeness.source IS 'The emitting node (CloudEvents source)';
COMMENT ON COLUMN audit.source_completeness.tenant IS 'The tenant of the first event accepted from this source';
COMMENT ON COLUMN audit.source_completeness.highest_seq IS 'The highest accepted data.seq';
COMMENT ON COLUMN audit.source_completeness.accepted IS 'Events in the ledger from this source';
COMMENT ON COLUMN audit.source_completeness.duplicates IS 'Re-sends of an accepted event with the same content (not charged)';
COMMENT ON COLUMN audit.source_completeness.conflicting IS 'Messages in audit.conflicting_events from this source (not charged)';
COMMENT ON COLUMN audit.source_completeness.rejected IS 'Messages in audit.rejected_events from this source, not replayed';
COMMENT ON COLUMN audit.source_completeness.missing IS 'Seqs below highest_seq that never arrived';

RESET ROLE;

GRANT SELECT ON audit.conflicting_events, audit.source_completeness TO gm_auditor, gm_api;
GRANT SELECT ON audit.rejected_events, audit.source_gaps TO gm_auditor, gm_api;
