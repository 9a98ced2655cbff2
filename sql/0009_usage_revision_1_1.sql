-- 0009 usage revision 1.1 (docs/events.md, "Versions"): the ledger keeps the three optional
-- fields of usage events, so that nothing an emitter sent is lost. An event without them
-- (every event before the revision) is stored with the defaults, which mean what it meant.
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
       l.ingested_at,
       l.reasoning_tokens,
       l.cache_write_tokens,
       l.service_tier
FROM gm.ledger l;
COMMENT ON COLUMN audit.usage_events.reasoning_tokens IS 'Part of output_tokens spent on reasoning (0 when the event did not say); included in output_tokens';
COMMENT ON COLUMN audit.usage_events.cache_write_tokens IS 'Prompt tokens written into the prompt cache (0 when absent); separate from input_tokens and cached_tokens';
COMMENT ON COLUMN audit.usage_events.service_tier IS 'standard, batch or priority (standard when the event did not say)';
RESET ROLE;
GRANT SELECT ON audit.usage_events TO gm_auditor;
