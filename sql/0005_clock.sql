-- 0005 clock: PostgreSQL reads gridmeter's one clock (common/clock.c) instead of its own.
--
-- gm.now() is, in this order:
--   1. the instant the application put into the transaction-local setting gridmeter.now
--      (gm_pg_begin does, with the very instant it decided on: a finalization's grace
--      window and its finalized_at are the same microsecond);
--   2. otherwise now() moved by the session setting gridmeter.clock_offset_us, which every
--      gridmeter connection sets (gm_pg_connect) to its process's clock offset: 0 normally,
--      the shift that GRIDMETER_NOW asked for otherwise.
-- So the application and the database never disagree about which month it is. Every
-- column default and trigger that stamped now() or clock_timestamp() stamps gm.now() or
-- gm.clock_now() instead.

SET ROLE gm_owner;

CREATE FUNCTION gm.clock_offset() RETURNS interval LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('gridmeter.clock_offset_us', true), ''), '0')::bigint
           * interval '1 microsecond'
$$;
COMMENT ON FUNCTION gm.clock_offset IS 'How far the session''s gridmeter clock is from the server''s (setting gridmeter.clock_offset_us; 0 when unset)';

CREATE FUNCTION gm.now() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('gridmeter.now', true), '')::timestamptz,
                    pg_catalog.now() + gm.clock_offset())
$$;
COMMENT ON FUNCTION gm.now IS 'gridmeter''s clock: the transaction''s gridmeter.now when the application set it, else now() plus the session''s clock offset';

CREATE FUNCTION gm.clock_now() RETURNS timestamptz LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('gridmeter.now', true), '')::timestamptz,
                    pg_catalog.clock_timestamp() + gm.clock_offset())
$$;
COMMENT ON FUNCTION gm.clock_now IS 'gridmeter''s clock now (clock_timestamp() plus the session''s clock offset)';

ALTER TABLE gm.rate_cards ALTER COLUMN imported_at SET DEFAULT gm.now();
ALTER TABLE gm.contracts ALTER COLUMN imported_at SET DEFAULT gm.now();
ALTER TABLE gm.ledger ALTER COLUMN ingested_at SET DEFAULT gm.now();
ALTER TABLE gm.sources ALTER COLUMN first_seen SET DEFAULT gm.now();
ALTER TABLE gm.sources ALTER COLUMN last_seen SET DEFAULT gm.now();
ALTER TABLE gm.consumer_offsets ALTER COLUMN updated_at SET DEFAULT gm.now();
ALTER TABLE gm.rejected_events ALTER COLUMN received_at SET DEFAULT gm.now();
ALTER TABLE gm.batches ALTER COLUMN committed_at SET DEFAULT gm.clock_now();
ALTER TABLE gm.tenants ALTER COLUMN created_at SET DEFAULT gm.now();
ALTER TABLE gm.api_keys ALTER COLUMN created_at SET DEFAULT gm.now();
ALTER TABLE gm.idempotency ALTER COLUMN created_at SET DEFAULT gm.now();
ALTER TABLE gm.invoices ALTER COLUMN created_at SET DEFAULT gm.now();
ALTER TABLE gm.credit_notes ALTER COLUMN created_at SET DEFAULT gm.now();
ALTER TABLE gm.period_snapshots ALTER COLUMN taken_at SET DEFAULT gm.clock_now();

-- The ledger's monthly partitions, around gridmeter's clock, one caller at a time. A month whose rows already
-- sit in the DEFAULT partition (events that arrived before their partition existed) is
-- skipped with a warning instead of failing: PostgreSQL refuses to create a partition
-- whose range the DEFAULT partition holds rows of, and the rows stay queryable there.
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
    -- Raters start together: one at a time (two CREATEs of one partition race otherwise).
    PERFORM pg_advisory_xact_lock(29113321406034434);
    FOR i IN 1..months LOOP
        name := 'ledger_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass('gm.' || name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM gm.ledger_default
                       WHERE event_time >= m AND event_time < m + interval '1 month') THEN
                RAISE WARNING 'ledger partition % not created: gm.ledger_default holds rows of that month', name;
            ELSE
                EXECUTE format('CREATE TABLE gm.%I PARTITION OF gm.ledger FOR VALUES FROM (%L) TO (%L)',
                               name, m, m + interval '1 month');
                created := created + 1;
            END IF;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

CREATE OR REPLACE FUNCTION gm.invoices_guard() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    credited numeric;
    seq      bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice %: a % invoice is immutable and never deleted', OLD.invoice_id, OLD.status
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.invoice_id <> OLD.invoice_id OR NEW.tenant <> OLD.tenant OR NEW.period_start <> OLD.period_start
       OR NEW.period_end <> OLD.period_end OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'invoice %: identity columns never change', OLD.invoice_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.status = 'draft' AND NEW.status = 'draft' THEN
        IF NEW.number IS NOT NULL OR NEW.finalized_at IS NOT NULL THEN
            RAISE EXCEPTION 'invoice %: a draft has no number', OLD.invoice_id USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    ELSIF OLD.status = 'draft' AND NEW.status = 'finalized' THEN
        seq := gm.next_number(NEW.issuer, 'invoice');
        NEW.number_seq := seq;
        NEW.number := NEW.issuer || '-' || lpad(seq::text, 6, '0');
        NEW.finalized_at := gm.now();
        RETURN NEW;
    ELSIF OLD.status = 'finalized' AND NEW.status = 'void' THEN
        IF (to_jsonb(NEW) - 'status' - 'voided_at') <> (to_jsonb(OLD) - 'status' - 'voided_at') THEN
            RAISE EXCEPTION 'invoice % (%): finalized, only its status may change to void', OLD.invoice_id, OLD.number
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT coalesce(sum(amount), 0) INTO credited FROM gm.credit_notes WHERE invoice_id = OLD.invoice_id;
        IF credited <> greatest(OLD.total, 0) THEN
            RAISE EXCEPTION 'invoice % (%): void needs credit notes for the whole total % (credited %)',
                OLD.invoice_id, OLD.number, OLD.total, credited USING ERRCODE = 'check_violation';
        END IF;
        NEW.voided_at := coalesce(NEW.voided_at, gm.now());
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'invoice % (%): a % invoice is immutable (% -> % refused)', OLD.invoice_id,
        coalesce(OLD.number, 'draft'), OLD.status, OLD.status, NEW.status USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION gm.credit_notes_guard() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    inv      gm.invoices%ROWTYPE;
    credited numeric;
    seq      bigint;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'credit note %: immutable (%)', OLD.credit_note_id, TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO inv FROM gm.invoices WHERE invoice_id = NEW.invoice_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice %: not found', NEW.invoice_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF inv.status <> 'finalized' THEN
        RAISE EXCEPTION 'invoice %: credit notes only for finalized invoices (status %)', inv.invoice_id, inv.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF scale(NEW.amount) > inv.minor_units AND NEW.amount <> round(NEW.amount, inv.minor_units) THEN
        RAISE EXCEPTION 'amount: % has more fraction digits than % allows (%)', NEW.amount, inv.currency, inv.minor_units
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT coalesce(sum(amount), 0) INTO credited FROM gm.credit_notes WHERE invoice_id = inv.invoice_id;
    IF credited + NEW.amount > inv.total THEN
        RAISE EXCEPTION 'amount: % exceeds what is still creditable on invoice % (total %, credited %, creditable %)',
            NEW.amount, inv.number, inv.total, credited, greatest(inv.total - credited, 0)
            USING ERRCODE = 'check_violation';
    END IF;
    seq := gm.next_number(inv.issuer, 'credit_note');
    NEW.number_seq := seq;
    NEW.number := inv.issuer || '-CN-' || lpad(seq::text, 6, '0');
    NEW.tenant := inv.tenant;
    NEW.currency := inv.currency;
    NEW.amount_minor := NEW.amount * (10::numeric ^ inv.minor_units);
    NEW.created_at := gm.now();
    RETURN NEW;
END $$;

RESET ROLE;

-- Partitions around the clock of the connection that migrates (moved by GRIDMETER_NOW).
SELECT gm.ensure_ledger_partitions(gm.now() - interval '1 month', 4);
