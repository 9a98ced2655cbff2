-- 0001 core: roles, schemas, the ledger and everything the rater writes.
--
-- Applied by `gridmeter migrate` in one transaction, as a member of gm_owner. Objects are
-- owned by gm_owner (NOLOGIN); no application role owns a table.
--
-- Roles (cluster-wide, created once, shared by every database of the cluster):
--   gm_owner    owns the schema objects; DDL only through migrations.
--   gm_rater    the rater: INSERT into the ledger (never UPDATE/DELETE), upserts charges,
--               source sequence state and consumer offsets.
--   gm_api      the REST API: reads the ledger, writes invoices (later migrations).
--   gm_auditor  read-only (default_transaction_read_only), sees schema audit only.

-- Roles are shared by every database of the cluster, and two databases may be migrated at
-- once (tests do): each step tolerates the other migrator having done it first.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['gm_owner', 'gm_rater', 'gm_api', 'gm_auditor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I %s', r, CASE WHEN r = 'gm_owner' THEN 'NOLOGIN' ELSE 'LOGIN' END);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a concurrent migration
            END;
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles ro ON ro.oid = s.setrole
                   WHERE ro.rolname = 'gm_auditor' AND s.setdatabase = 0
                     AND 'default_transaction_read_only=on' = ANY (s.setconfig)) THEN
        BEGIN
            ALTER ROLE gm_auditor SET default_transaction_read_only = on;
        EXCEPTION WHEN OTHERS THEN
            NULL; -- "tuple concurrently updated": a concurrent migration set it
        END;
    END IF;
END $$;
-- The migrating user creates objects as gm_owner.
GRANT gm_owner TO CURRENT_USER;

CREATE SCHEMA gm AUTHORIZATION gm_owner;
CREATE SCHEMA audit AUTHORIZATION gm_owner;
COMMENT ON SCHEMA gm IS 'gridmeter internal tables: may change between versions; use schema audit';
COMMENT ON SCHEMA audit IS 'gridmeter auditors'' views: stable columns (contract, DESIGN.md section 6)';
REVOKE ALL ON SCHEMA gm FROM PUBLIC;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA gm TO gm_rater, gm_api;
GRANT USAGE ON SCHEMA audit TO gm_auditor, gm_api;

SET ROLE gm_owner;

-- Rate cards and contracts, as imported (`gridmeter ratecard import`): the JSON document
-- is the source of truth that the rating engine loads; columns repeat what queries need.
CREATE TABLE gm.rate_cards (
    card_id      text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    currency     char(3)     NOT NULL,
    document     jsonb       NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (card_id, version),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
COMMENT ON TABLE gm.rate_cards IS 'Versioned, effective-dated rate cards; a version is never rewritten';

CREATE TABLE gm.contracts (
    tenant       text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    currency     char(3)     NOT NULL,
    document     jsonb       NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, version)
);
COMMENT ON TABLE gm.contracts IS 'Tenant contracts (currency, overrides, tiers, commitments, credits); latest version applies';

-- A version, once imported, is immutable.
CREATE FUNCTION gm.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.%: rows are immutable (%), add a new version instead',
        TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER rate_cards_immutable BEFORE UPDATE OR DELETE ON gm.rate_cards
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER contracts_immutable BEFORE UPDATE OR DELETE ON gm.contracts
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();

-- The ledger: one row per accepted usage event, partitioned by month of event time.
-- Idempotency key (source, event_id): enforced for ever by gm.sources (every accepted seq
-- of every source, compare-and-set per batch) and, as a safety net, by the unique index
-- (source, event_id, event_time) in each partition (a re-send carries the same time).
CREATE TABLE gm.ledger (
    tenant           text        NOT NULL,
    event_time       timestamptz NOT NULL,
    source           text        NOT NULL,
    event_id         text        NOT NULL,
    seq              bigint      NOT NULL CHECK (seq >= 1),
    site             text        NOT NULL,
    model            text        NOT NULL,
    request_id       text,
    input_tokens     bigint      NOT NULL CHECK (input_tokens >= 0),
    cached_tokens    bigint      NOT NULL CHECK (cached_tokens >= 0),
    output_tokens    bigint      NOT NULL CHECK (output_tokens >= 0),
    gpu_us           bigint      NOT NULL CHECK (gpu_us >= 0),
    site_tier        text,
    card_id          text        NOT NULL,
    card_version     integer     NOT NULL,
    currency         char(3)     NOT NULL,
    amount_input     numeric(38,18) NOT NULL,
    amount_cached    numeric(38,18) NOT NULL,
    amount_output    numeric(38,18) NOT NULL,
    amount_gpu       numeric(38,18) NOT NULL,
    flags            smallint    NOT NULL DEFAULT 0,
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (event_time);
COMMENT ON TABLE gm.ledger IS 'One row per accepted usage event (append-only), partitioned by month';
COMMENT ON COLUMN gm.ledger.flags IS 'bit 1: tenant unknown to billing, priced by the default card; 2: model priced by the card''s default entry; 4: site priced at the default site tier; 8: a contract price applied';
CREATE TABLE gm.ledger_default PARTITION OF gm.ledger DEFAULT;
CREATE UNIQUE INDEX ledger_idempotency ON gm.ledger (source, event_id, event_time);
CREATE INDEX ledger_tenant_time ON gm.ledger (tenant, event_time);

-- Creates the monthly partitions of gm.ledger covering [from_month, from_month + months).
-- SECURITY DEFINER so that the rater can keep partitions ahead without owning the table.
CREATE FUNCTION gm.ensure_ledger_partitions(from_ts timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    m       timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name    text;
    created integer := 0;
BEGIN
    FOR i IN 1..months LOOP
        name := 'ledger_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass('gm.' || name) IS NULL THEN
            EXECUTE format('CREATE TABLE gm.%I PARTITION OF gm.ledger FOR VALUES FROM (%L) TO (%L)',
                           name, m, m + interval '1 month');
            created := created + 1;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END $$;
COMMENT ON FUNCTION gm.ensure_ledger_partitions IS 'Creates monthly ledger partitions ahead of time; events outside them land in gm.ledger_default';

-- Charges: exact amounts per tenant, hour, site, model, dimension and price version.
CREATE TABLE gm.charges (
    tenant        text        NOT NULL,
    hour          timestamptz NOT NULL,
    site          text        NOT NULL,
    model         text        NOT NULL,
    dimension     text        NOT NULL CHECK (dimension IN ('input', 'cached', 'output', 'gpu')),
    card_id       text        NOT NULL,
    card_version  integer     NOT NULL,
    site_tier     text,
    currency      char(3)     NOT NULL,
    unit_price    numeric(30,12) NOT NULL,
    quantity      numeric(40,0)  NOT NULL,
    amount        numeric(38,18) NOT NULL,
    events        bigint      NOT NULL,
    PRIMARY KEY (tenant, hour, site, model, dimension, card_id, card_version, unit_price)
);
COMMENT ON TABLE gm.charges IS 'Exact charges derived from the ledger rows actually inserted, per hour and price';
COMMENT ON COLUMN gm.charges.quantity IS 'Tokens, or GPU-microseconds for dimension gpu';
COMMENT ON COLUMN gm.charges.unit_price IS 'Price per token, or per GPU-second for dimension gpu (12 decimals)';
COMMENT ON COLUMN gm.charges.events IS 'Events with a non-zero quantity in this dimension';

-- Per-source sequence state: every accepted seq as a multirange; holes are gaps.
CREATE TABLE gm.sources (
    source      text          PRIMARY KEY,
    tenant      text,
    seqs        int8multirange NOT NULL,
    events      bigint        NOT NULL DEFAULT 0,
    first_seen  timestamptz   NOT NULL DEFAULT now(),
    last_seen   timestamptz   NOT NULL DEFAULT now()
);
COMMENT ON TABLE gm.sources IS 'Accepted seq numbers per emitting node, for duplicate detection and completeness';

-- Consumer offsets: the next offset to read per group, topic and partition. Written in the
-- same transaction as the ledger rows, with a compare-and-set that fences a stale consumer.
CREATE TABLE gm.consumer_offsets (
    group_id     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
COMMENT ON TABLE gm.consumer_offsets IS 'Authoritative consumer positions (Kafka''s committed offsets are advisory)';

-- Messages that broke the event contract: kept with their coordinates and reason.
CREATE TABLE gm.rejected_events (
    received_at      timestamptz NOT NULL DEFAULT now(),
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_key        bytea,
    payload          bytea       NOT NULL,
    reason           text        NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
COMMENT ON TABLE gm.rejected_events IS 'Messages that broke the event contract, with the field and rule broken';

-- Batches committed by raters: one row per transaction, for operators and lag tracing.
CREATE TABLE gm.batches (
    batch_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id     text        NOT NULL,
    rater        text        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(), -- written last, just before COMMIT
    messages     integer     NOT NULL,
    accepted     integer     NOT NULL,
    duplicates   integer     NOT NULL,
    rejected     integer     NOT NULL
);

RESET ROLE;

GRANT SELECT ON gm.rate_cards, gm.contracts TO gm_rater, gm_api;
GRANT INSERT, SELECT ON gm.ledger TO gm_rater;
GRANT SELECT ON gm.ledger TO gm_api;
GRANT INSERT, UPDATE, SELECT ON gm.charges, gm.sources, gm.consumer_offsets TO gm_rater;
GRANT SELECT ON gm.charges, gm.sources, gm.consumer_offsets TO gm_api;
GRANT INSERT, SELECT ON gm.rejected_events, gm.batches TO gm_rater;
GRANT SELECT ON gm.rejected_events, gm.batches TO gm_api;
GRANT EXECUTE ON FUNCTION gm.ensure_ledger_partitions(timestamptz, integer) TO gm_rater;
REVOKE EXECUTE ON FUNCTION gm.ensure_ledger_partitions(timestamptz, integer) FROM PUBLIC;

SELECT gm.ensure_ledger_partitions(now() - interval '1 month', 4);
