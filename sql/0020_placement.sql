-- 0020 placement (docs/scaling.md, "Placement"): in sharded mode the rater keeps a message
-- whose Kafka key is not its event's source, or whose partition is not the one its source
-- belongs to, as a reject of rule 'placement' (rater/placement.c): charged nowhere, since
-- the shard that owns the source's partition charges its correctly placed copy. The rule
-- joins the names of 0006's CHECK. `gridmeter rejects replay` never replays these.

SET ROLE gm_owner;

ALTER TABLE gm.rejected_events DROP CONSTRAINT rejected_events_rule_check;
ALTER TABLE gm.rejected_events ADD CONSTRAINT rejected_events_rule_check
    CHECK (rule IN ('contract', 'type', 'time', 'rating', 'poison', 'kafka', 'placement'));

COMMENT ON COLUMN audit.rejected_events.rule IS
    'Which rule refused it: contract (the event contract), type (wrong type for the topic), time (time policy), rating (no card or tenant prices it), poison (PostgreSQL refused its row), kafka (unreadable message), placement (sharded: its Kafka key is not its source, or its partition is not its source''s; charged nowhere, never replayed: its own shard charges the correctly placed copy); NULL for rejects stored before migration 0006 and for GPU rejects other than placement';

RESET ROLE;
