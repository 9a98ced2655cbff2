-- 0012 compact ledger: the same logical ledger in about half the bytes (docs/operations.md,
-- "Ledger storage"; measured in docs/benchmarks.md).
--
-- Storage moves from one wide row per event (repeated text for tenant, source, site, model,
-- card, currency and topic, four numeric amounts, two b-trees) to gm.ledger_rows: small integer
-- ids for the repeated strings (gm.ledger_names, gm.ledger_streams), one id for everything
-- the rating decided (gm.ledger_pricings: card, version, currency, site tier, flags and the
-- four unit prices), no per-event amounts (amount = quantity x unit price, exact), one unique
-- b-tree (source_id, event_id) per monthly partition and one (tenant_id, event_time).
--
-- gm.ledger becomes a view with exactly the columns, types and order of the table it replaces,
-- so every reader (audit.*, billing, the API, tests) sees the same logical rows; an INSTEAD OF
-- INSERT trigger keeps INSERT INTO gm.ledger (…) working for tools that write rows by hand.
-- The rater COPYs compact rows straight into gm.ledger_rows (ledger/batch.c).
--
-- Existing rows are moved into the new storage by this migration (row by row through the
-- trigger: minutes per million rows), and every view that read the old table is re-created
-- over the new view with its own definition.

SET ROLE gm_owner;

-- A column another migration added to gm.ledger would be lost by the move below: refuse
-- instead (carry it into gm.ledger_rows and the view first).
DO $$
DECLARE
    extra text;
BEGIN
    SELECT string_agg(column_name, ', ') INTO extra
    FROM information_schema.columns
    WHERE table_schema = 'gm' AND table_name = 'ledger'
      AND column_name NOT IN ('tenant', 'event_time', 'source', 'event_id', 'seq', 'site', 'model',
                              'request_id', 'input_tokens', 'cached_tokens', 'output_tokens',
                              'gpu_us', 'site_tier', 'card_id', 'card_version', 'currency',
                              'amount_input', 'amount_cached', 'amount_output', 'amount_gpu',
                              'flags', 'kafka_topic', 'kafka_partition', 'kafka_offset',
                              'ingested_at', 'reasoning_tokens', 'cache_write_tokens',
                              'service_tier', 'amount_cache_write', 'amount_reasoning',
                              'amount_request');
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'sql/0012: gm.ledger has columns this migration does not move: %', extra
            USING HINT = 'add them to gm.ledger_rows, the view gm.ledger and its INSERT trigger';
    END IF;
END $$;

ALTER TABLE gm.ledger RENAME TO ledger_v0;

-- Interned strings. kind: 1 tenant, 2 site, 3 model, 4 source. Ids are never reused.
CREATE TABLE gm.ledger_names (
    id    integer  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind  smallint NOT NULL CHECK (kind BETWEEN 1 AND 4),
    name  text     NOT NULL,
    UNIQUE (kind, name)
);
COMMENT ON TABLE gm.ledger_names IS 'Ids of the tenants (kind 1), sites (2), models (3) and sources (4) that gm.ledger_rows refers to';

CREATE TABLE gm.ledger_streams (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text    NOT NULL,
    partition  integer NOT NULL,
    UNIQUE (topic, partition)
);
COMMENT ON TABLE gm.ledger_streams IS 'Ids of the Kafka topic partitions that gm.ledger_rows refers to';

-- What rating decided for an event, once per distinct decision. amount_* are NULL for rows the
-- rater wrote (amount = quantity x unit price); they hold fixed amounts only for rows
-- inserted by hand through gm.ledger whose amounts are not quantity x one unit price.
CREATE TABLE gm.ledger_pricings (
    id            integer        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    card_id       text           NOT NULL,
    card_version  integer        NOT NULL,
    currency      char(3)        NOT NULL,
    site_tier     text,
    flags         smallint       NOT NULL,
    price_input   numeric(30,12) NOT NULL,
    price_cached  numeric(30,12) NOT NULL,
    price_output  numeric(30,12) NOT NULL,
    price_gpu     numeric(30,12) NOT NULL,
    amount_input  numeric(38,18),
    amount_cached numeric(38,18),
    amount_output numeric(38,18),
    amount_gpu    numeric(38,18),
    -- usage revision 1.1 (sql/0009): cache writes, reasoning (priced apart from the rest of
    -- the output) and the per-request fee
    price_cache_write  numeric(30,12) NOT NULL DEFAULT 0,
    price_reasoning    numeric(30,12) NOT NULL DEFAULT 0,
    price_request      numeric(30,12) NOT NULL DEFAULT 0,
    amount_cache_write numeric(38,18),
    amount_reasoning   numeric(38,18),
    amount_request     numeric(38,18),
    UNIQUE NULLS NOT DISTINCT (card_id, card_version, currency, site_tier, flags, price_input,
                               price_cached, price_output, price_gpu, amount_input,
                               amount_cached, amount_output, amount_gpu, price_cache_write,
                               price_reasoning, price_request, amount_cache_write,
                               amount_reasoning, amount_request)
);
COMMENT ON TABLE gm.ledger_pricings IS 'Rating decisions that gm.ledger_rows refers to: rate card and version, currency, site tier, flags and unit prices (per token; per GPU-second for gpu)';
COMMENT ON COLUMN gm.ledger_pricings.amount_input IS 'NULL: amount = quantity x unit price; else the fixed amount of each event of this pricing (hand-written rows only)';

-- One row per accepted usage event, fixed-width columns first (no padding), no NULLs (no
-- null bitmap: the tuple header stays 24 bytes). request_id '' means none.
CREATE TABLE gm.ledger_rows (
    event_time     timestamptz NOT NULL,
    seq            bigint      NOT NULL CHECK (seq >= 1),
    kafka_offset   bigint      NOT NULL,
    input_tokens   bigint      NOT NULL CHECK (input_tokens >= 0),
    cached_tokens  bigint      NOT NULL CHECK (cached_tokens >= 0),
    output_tokens  bigint      NOT NULL CHECK (output_tokens >= 0),
    gpu_us         bigint      NOT NULL CHECK (gpu_us >= 0),
    reasoning_tokens   bigint  NOT NULL DEFAULT 0
        CHECK (reasoning_tokens >= 0 AND reasoning_tokens <= output_tokens),
    cache_write_tokens bigint  NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    ingested_at    timestamptz NOT NULL DEFAULT gm.now(),
    source_id      integer     NOT NULL,
    tenant_id      integer     NOT NULL,
    site_id        integer     NOT NULL,
    model_id       integer     NOT NULL,
    pricing_id     integer     NOT NULL,
    stream_id      integer     NOT NULL,
    service_tier   smallint    NOT NULL DEFAULT 0 CHECK (service_tier BETWEEN 0 AND 2),
    event_id       text        NOT NULL,
    request_id     text        NOT NULL DEFAULT ''
) PARTITION BY RANGE (event_time);
COMMENT ON TABLE gm.ledger_rows IS 'Storage of gm.ledger (read it through gm.ledger or audit.usage_events): one compact row per accepted usage event, partitioned by month; unique (source_id, event_id) per partition';
-- No foreign keys: the ids come from the same transaction's writer, and a check per row
-- would cost more than the row.
CREATE INDEX ledger_rows_tenant_time ON gm.ledger_rows (tenant_id, event_time);
CREATE TABLE gm.ledger_rows_default PARTITION OF gm.ledger_rows DEFAULT;
-- The idempotency key (source, id) per partition: a unique index on the parent would have
-- to carry event_time (8 more bytes an event).
CREATE UNIQUE INDEX ledger_rows_default_idempotency ON gm.ledger_rows_default (source_id, event_id);

-- The logical ledger: the columns, types and order of the table of migration 0001.
CREATE VIEW gm.ledger AS
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
       coalesce(p.amount_request, p.price_request)::numeric(38,18)             AS amount_request
FROM gm.ledger_rows l
JOIN gm.ledger_names tn ON tn.id = l.tenant_id
JOIN gm.ledger_names so ON so.id = l.source_id
JOIN gm.ledger_names si ON si.id = l.site_id
JOIN gm.ledger_names mo ON mo.id = l.model_id
JOIN gm.ledger_pricings p ON p.id = l.pricing_id
JOIN gm.ledger_streams st ON st.id = l.stream_id;
COMMENT ON VIEW gm.ledger IS 'One row per accepted usage event (append-only): the logical ledger over its compact storage gm.ledger_rows; amounts are quantity x unit price, exact';
ALTER VIEW gm.ledger ALTER COLUMN flags SET DEFAULT 0;
ALTER VIEW gm.ledger ALTER COLUMN ingested_at SET DEFAULT gm.now();

-- Interning: the id of a name, a stream or a pricing, created when new. Safe under
-- concurrency (ON CONFLICT DO NOTHING, then read what the other writer committed).
CREATE FUNCTION gm.ledger_name_id(k smallint, n text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, gm AS $$
DECLARE
    i integer;
BEGIN
    SELECT id INTO i FROM gm.ledger_names WHERE kind = k AND name = n;
    IF i IS NULL THEN
        INSERT INTO gm.ledger_names (kind, name) VALUES (k, n) ON CONFLICT DO NOTHING RETURNING id INTO i;
        IF i IS NULL THEN
            SELECT id INTO i FROM gm.ledger_names WHERE kind = k AND name = n;
        END IF;
    END IF;
    RETURN i;
END $$;

-- Many names in one round trip (the rater's cache misses of a batch).
CREATE FUNCTION gm.ledger_name_ids(kinds smallint[], names text[])
RETURNS TABLE (kind smallint, name text, id integer)
LANGUAGE plpgsql SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.ledger_names AS x (kind, name)
    SELECT DISTINCT u.k, u.n FROM unnest(kinds, names) u(k, n) ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
    RETURN QUERY SELECT x.kind, x.name, x.id FROM gm.ledger_names x
                 JOIN unnest(kinds, names) u(k, n) ON x.kind = u.k AND x.name = u.n;
END $$;

CREATE FUNCTION gm.ledger_stream_id(t text, p integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, gm AS $$
DECLARE
    i integer;
BEGIN
    SELECT id INTO i FROM gm.ledger_streams WHERE topic = t AND partition = p;
    IF i IS NULL THEN
        INSERT INTO gm.ledger_streams (topic, partition) VALUES (t, p) ON CONFLICT DO NOTHING RETURNING id INTO i;
        IF i IS NULL THEN
            SELECT id INTO i FROM gm.ledger_streams WHERE topic = t AND partition = p;
        END IF;
    END IF;
    RETURN i;
END $$;

CREATE FUNCTION gm.ledger_pricing_id(c_id text, c_version integer, cur char(3), tier text,
                                     f smallint, p_in numeric, p_ca numeric, p_out numeric,
                                     p_gpu numeric, a_in numeric, a_ca numeric, a_out numeric,
                                     a_gpu numeric, p_cw numeric, p_re numeric, p_rq numeric,
                                     a_cw numeric, a_re numeric, a_rq numeric) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, gm AS $$
DECLARE
    i integer;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT id INTO i FROM gm.ledger_pricings
        WHERE card_id = c_id AND card_version = c_version AND currency = cur
          AND site_tier IS NOT DISTINCT FROM tier AND flags = f AND price_input = p_in
          AND price_cached = p_ca AND price_output = p_out AND price_gpu = p_gpu
          AND amount_input IS NOT DISTINCT FROM a_in AND amount_cached IS NOT DISTINCT FROM a_ca
          AND amount_output IS NOT DISTINCT FROM a_out AND amount_gpu IS NOT DISTINCT FROM a_gpu
          AND price_cache_write = p_cw AND price_reasoning = p_re AND price_request = p_rq
          AND amount_cache_write IS NOT DISTINCT FROM a_cw
          AND amount_reasoning IS NOT DISTINCT FROM a_re
          AND amount_request IS NOT DISTINCT FROM a_rq;
        EXIT WHEN i IS NOT NULL OR attempt = 2;
        INSERT INTO gm.ledger_pricings (card_id, card_version, currency, site_tier, flags,
                                        price_input, price_cached, price_output, price_gpu,
                                        amount_input, amount_cached, amount_output, amount_gpu,
                                        price_cache_write, price_reasoning, price_request,
                                        amount_cache_write, amount_reasoning, amount_request)
        VALUES (c_id, c_version, cur, tier, f, p_in, p_ca, p_out, p_gpu, a_in, a_ca, a_out, a_gpu,
                p_cw, p_re, p_rq, a_cw, a_re, a_rq)
        ON CONFLICT DO NOTHING RETURNING id INTO i;
        EXIT WHEN i IS NOT NULL;
    END LOOP;
    RETURN i;
END $$;

-- Many pricings in one round trip (a rater's cache misses of a batch): ord is the 1-based
-- position in the arrays.
CREATE FUNCTION gm.ledger_pricing_ids(c_ids text[], c_versions integer[], curs text[],
                                      tiers text[], fs smallint[], p_in numeric[],
                                      p_ca numeric[], p_out numeric[], p_gpu numeric[],
                                      p_cw numeric[], p_re numeric[], p_rq numeric[])
RETURNS TABLE (ord integer, id integer)
LANGUAGE sql SET search_path = pg_catalog, gm AS $$
    SELECT u.ord::integer,
           gm.ledger_pricing_id(u.c, u.v, u.cur::char(3), u.t, u.f, u.a, u.b, u.o, u.g,
                                NULL, NULL, NULL, NULL, u.cw, u.re, u.rq, NULL, NULL, NULL)
    FROM unnest(c_ids, c_versions, curs, tiers, fs, p_in, p_ca, p_out, p_gpu, p_cw, p_re, p_rq)
         WITH ORDINALITY AS u(c, v, cur, t, f, a, b, o, g, cw, re, rq, ord)
    ORDER BY u.ord
$$;

-- A unit price that gives `amount` for `qty` exactly (per token; per GPU-second when gpu),
-- or NULL when there is none.
CREATE FUNCTION gm.ledger_unit_price(qty bigint, amount numeric, gpu boolean) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN qty = 0 THEN CASE WHEN amount = 0 THEN 0 END
        WHEN gpu THEN (SELECT p FROM (SELECT round(amount * 1000000 / qty, 12) AS p) x
                       WHERE qty * p * 0.000001 = amount)
        ELSE (SELECT p FROM (SELECT round(amount / qty, 12) AS p) x WHERE qty * p = amount)
    END
$$;

-- INSERT INTO gm.ledger (…): the row in compact form. Amounts that are quantity x a unit
-- price are stored as that price; others as fixed amounts of their own pricing row.
CREATE FUNCTION gm.ledger_insert() RETURNS trigger
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
                                request_id)
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
            NEW.event_id, coalesce(NEW.request_id, ''));
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_insert INSTEAD OF INSERT ON gm.ledger
    FOR EACH ROW EXECUTE FUNCTION gm.ledger_insert();

-- The ledger is append-only, through the view as it was as a table (UPDATE and DELETE are
-- refused with insufficient_privilege, also for the owner).
CREATE FUNCTION gm.ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'gm.ledger: the ledger is append-only (%), corrections are re-rating runs', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_append_only INSTEAD OF UPDATE OR DELETE ON gm.ledger
    FOR EACH ROW EXECUTE FUNCTION gm.ledger_refuse_change();

-- Monthly partitions of gm.ledger_rows, each with its unique (source_id, event_id), around
-- gridmeter's clock, one caller at a time (as 0005's version did for the old table).
CREATE OR REPLACE FUNCTION gm.ensure_ledger_partitions(from_ts timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    m       timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name    text;
    created integer := 0;
BEGIN
    IF months < 1 OR months > 120 THEN
        RAISE EXCEPTION 'months: must be 1..120, got %', months USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(29113321406034434);
    FOR i IN 1..months LOOP
        name := 'ledger_rows_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass('gm.' || name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM gm.ledger_rows_default
                       WHERE event_time >= m AND event_time < m + interval '1 month') THEN
                RAISE WARNING 'ledger partition % not created: gm.ledger_rows_default holds rows of that month', name;
            ELSE
                EXECUTE format('CREATE TABLE gm.%I PARTITION OF gm.ledger_rows FOR VALUES FROM (%L) TO (%L)',
                               name, m, m + interval '1 month');
                EXECUTE format('CREATE UNIQUE INDEX %I ON gm.%I (source_id, event_id)',
                               name || '_idempotency', name);
                created := created + 1;
            END IF;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

SELECT gm.ensure_ledger_partitions(gm.now() - interval '1 month', 4);
-- Months the old table held rows of get their partitions before the rows move.
SELECT gm.ensure_ledger_partitions(m, 1)
FROM (SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
      FROM gm.ledger_v0) x;

INSERT INTO gm.ledger (tenant, event_time, source, event_id, seq, site, model, request_id,
                       input_tokens, cached_tokens, output_tokens, gpu_us, site_tier, card_id,
                       card_version, currency, amount_input, amount_cached, amount_output,
                       amount_gpu, flags, kafka_topic, kafka_partition, kafka_offset, ingested_at,
                       reasoning_tokens, cache_write_tokens, service_tier, amount_cache_write,
                       amount_reasoning, amount_request)
SELECT tenant, event_time, source, event_id, seq, site, model, request_id, input_tokens,
       cached_tokens, output_tokens, gpu_us, site_tier, card_id, card_version, currency,
       amount_input, amount_cached, amount_output, amount_gpu, flags, kafka_topic,
       kafka_partition, kafka_offset, ingested_at, reasoning_tokens, cache_write_tokens,
       service_tier, amount_cache_write, amount_reasoning, amount_request
FROM gm.ledger_v0 ORDER BY event_time, kafka_partition, kafka_offset;

-- Every view over the old table, re-created over gm.ledger with its own definition (same
-- columns: CREATE OR REPLACE keeps comments and grants). Views over those views follow.
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT DISTINCT c.oid::regclass::text AS name, pg_get_viewdef(c.oid) AS def
             FROM pg_depend d
             JOIN pg_rewrite r ON r.oid = d.objid
             JOIN pg_class c ON c.oid = r.ev_class
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = 'gm.ledger_v0'::regclass
               AND c.oid <> 'gm.ledger_v0'::regclass
    LOOP
        -- "FROM gm.ledger_v0 l" becomes "FROM gm.ledger l"; an unaliased "FROM gm.ledger_v0"
        -- becomes "FROM gm.ledger ledger_v0", so that "ledger_v0.column" still resolves
        -- (parentheses inside a lookahead do not capture: the alias is \2).
        v.def := regexp_replace(v.def, 'gm\.ledger_v0(\s+)(?!(WHERE|GROUP|ORDER|JOIN|LEFT|RIGHT|FULL|CROSS|INNER|NATURAL|LIMIT|UNION|EXCEPT|INTERSECT|WINDOW|HAVING|ON|USING|OFFSET|FETCH|FOR)\M)([a-z_][a-z0-9_]*)',
                                'gm.ledger\1\2', 'g');
        v.def := regexp_replace(v.def, 'gm\.ledger_v0\M', 'gm.ledger ledger_v0', 'g');
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v.name, v.def);
    END LOOP;
END $$;

-- Fails (and rolls the migration back) if anything still depends on the old table.
DROP TABLE gm.ledger_v0;

RESET ROLE;

GRANT SELECT, INSERT ON gm.ledger TO gm_rater;
GRANT SELECT ON gm.ledger TO gm_api;
GRANT INSERT, SELECT ON gm.ledger_rows TO gm_rater;
GRANT INSERT, SELECT ON gm.ledger_names, gm.ledger_streams, gm.ledger_pricings TO gm_rater;
GRANT SELECT ON gm.ledger_rows, gm.ledger_names, gm.ledger_streams, gm.ledger_pricings TO gm_api;
GRANT EXECUTE ON FUNCTION gm.ledger_name_id(smallint, text), gm.ledger_name_ids(smallint[], text[]),
      gm.ledger_stream_id(text, integer),
      gm.ledger_pricing_ids(text[], integer[], text[], text[], smallint[], numeric[], numeric[],
                            numeric[], numeric[], numeric[], numeric[], numeric[]),
      gm.ledger_pricing_id(text, integer, char, text, smallint, numeric, numeric, numeric, numeric,
                           numeric, numeric, numeric, numeric, numeric, numeric, numeric, numeric,
                           numeric, numeric) TO gm_rater;
