-- 0016 shards: a database may be one shard of a sharded store (docs/scaling.md, "Shards").
-- Each Kafka partition of a sharded topic belongs to exactly one shard, which holds that
-- partition's ledger rows, charges, sources, rejects and offsets, so that a batch stays one
-- local transaction. The shard map (a file, `gridmeter shard`) says which; this migration
-- lets a shard database record its own part of it and refuse any other partition's rows.
--
-- The fence. A database with a row in gm.shard_identity is a shard: an insert or update of
-- gm.consumer_offsets (done in every batch transaction, for every partition of the batch)
-- or a new gm.ledger_streams id for a partition of a sharded topic (gm.shard_topics) that
-- is not in gm.shard_partitions fails with SQLSTATE GMS01, and so does any such write from
-- a session whose gridmeter.shard setting (the rater sets it to its --shard) names another
-- shard. The batch rolls back whole; the rater stops (a wrong map is an operator's matter,
-- never retried). A database without the row (one PostgreSQL, the default) is unaffected.

SET ROLE gm_owner;

CREATE TABLE gm.shard_identity (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    name        text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT gm.now()
);
COMMENT ON TABLE gm.shard_identity IS 'This database''s shard name (one row), written by gridmeter shard init; no row: not a shard';

CREATE TABLE gm.shard_topics (
    topic       text    PRIMARY KEY,
    partitions  integer NOT NULL CHECK (partitions BETWEEN 1 AND 4096)
);
COMMENT ON TABLE gm.shard_topics IS 'The sharded topics and their partition count, as in the shard map';

CREATE TABLE gm.shard_partitions (
    topic      text    NOT NULL REFERENCES gm.shard_topics (topic),
    partition  integer NOT NULL CHECK (partition >= 0),
    PRIMARY KEY (topic, partition)
);
COMMENT ON TABLE gm.shard_partitions IS 'The partitions of the sharded topics this shard holds, and no other shard holds';

CREATE FUNCTION gm.shard_fence() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, gm AS $$
DECLARE
    me     text;
    claim  text := nullif(current_setting('gridmeter.shard', true), '');
BEGIN
    SELECT name INTO me FROM gm.shard_identity;
    IF claim IS NOT NULL AND claim IS DISTINCT FROM me THEN
        RAISE EXCEPTION 'shard fence: this session writes for shard %, but this database is %',
            claim, coalesce('shard ' || me, 'not a shard') USING ERRCODE = 'GMS01';
    END IF;
    IF me IS NOT NULL
       AND EXISTS (SELECT 1 FROM gm.shard_topics t WHERE t.topic = NEW.topic)
       AND NOT EXISTS (SELECT 1 FROM gm.shard_partitions p
                       WHERE p.topic = NEW.topic AND p.partition = NEW.partition) THEN
        RAISE EXCEPTION 'shard fence: %: partition % of topic % belongs to another shard (gm.shard_partitions)',
            TG_TABLE_NAME, NEW.partition, NEW.topic USING ERRCODE = 'GMS01';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER shard_fence BEFORE INSERT OR UPDATE ON gm.consumer_offsets
    FOR EACH ROW EXECUTE FUNCTION gm.shard_fence();
CREATE TRIGGER shard_fence BEFORE INSERT OR UPDATE ON gm.ledger_streams
    FOR EACH ROW EXECUTE FUNCTION gm.shard_fence();

RESET ROLE;

GRANT SELECT ON gm.shard_identity, gm.shard_topics, gm.shard_partitions TO gm_rater, gm_api;
