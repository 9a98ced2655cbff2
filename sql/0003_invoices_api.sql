-- 0003 invoices and the REST API: tenants, API keys (hashed), idempotency records, invoices
-- (draft -> finalized -> void), their lines, credit notes, gapless numbers per issuer, period
-- snapshots for late-event adjustments; audit.invoices, audit.invoice_lines, and
-- audit.reconciliation with invoiced_amount.
--
-- Invariants enforced here, in PostgreSQL (not only in C):
--   V1 a finalized invoice never changes, except the one transition finalized -> void, and
--      only once its credit notes add up to its total ("void through a credit note");
--   V2 a void invoice never changes; no finalized or void invoice is ever deleted;
--   V3 invoice lines are written only while their invoice is a draft (in the finalizing
--      transaction) and are never updated or deleted;
--   V4 numbers are assigned by the trigger at finalization from one counter row per issuer
--      and kind, in the finalizing transaction: gapless (a rollback returns the number);
--   V5 credit notes only for finalized invoices, and their sum never exceeds the invoice
--      total; credit notes are never updated or deleted;
--   V6 one invoice per tenant and calendar month (UTC).

SET ROLE gm_owner;

CREATE TABLE gm.tenants (
    tenant       text        PRIMARY KEY CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    display_name text        NOT NULL DEFAULT '',
    issuer       text        NOT NULL DEFAULT 'GM' CHECK (issuer ~ '^[A-Z0-9]{1,16}$'),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE gm.tenants IS 'Tenants known to billing; issuer is the invoice number series (tenants not listed use issuer GM)';

CREATE TABLE gm.api_keys (
    key_id      text        PRIMARY KEY,
    key_hash    bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    role        text        NOT NULL CHECK (role IN ('admin', 'finance', 'customer')),
    tenant      text,
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    CHECK ((role = 'customer') = (tenant IS NOT NULL))
);
COMMENT ON TABLE gm.api_keys IS 'API keys: only the SHA-256 of the key is stored; the key is shown once at creation';

-- Revocation is final: revoked_at is set once and never cleared; nothing else changes.
CREATE FUNCTION gm.api_keys_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'gm.api_keys: keys are revoked, never deleted' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL
       OR (to_jsonb(NEW) - 'revoked_at') <> (to_jsonb(OLD) - 'revoked_at') THEN
        RAISE EXCEPTION 'gm.api_keys: only revoked_at may be set, once' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER api_keys_guard BEFORE UPDATE OR DELETE ON gm.api_keys
    FOR EACH ROW EXECUTE FUNCTION gm.api_keys_guard();

-- Idempotency records of POST requests: (key, Idempotency-Key) -> the first response.
CREATE TABLE gm.idempotency (
    key_id       text        NOT NULL,
    idem_key     text        NOT NULL,
    request_hash bytea       NOT NULL,
    method       text        NOT NULL,
    path         text        NOT NULL,
    status       integer,
    content_type text,
    body         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, idem_key)
);
COMMENT ON TABLE gm.idempotency IS 'First response per API key and Idempotency-Key (status NULL: in progress)';

CREATE TABLE gm.number_sequences (
    issuer      text   NOT NULL,
    kind        text   NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    last_number bigint NOT NULL CHECK (last_number >= 1),
    PRIMARY KEY (issuer, kind)
);
COMMENT ON TABLE gm.number_sequences IS 'Gapless number series per issuer: taken in the transaction that finalizes';

CREATE FUNCTION gm.next_number(p_issuer text, p_kind text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
    INSERT INTO gm.number_sequences (issuer, kind, last_number) VALUES (p_issuer, p_kind, 1)
    ON CONFLICT (issuer, kind) DO UPDATE SET last_number = gm.number_sequences.last_number + 1
    RETURNING last_number
$$;
REVOKE EXECUTE ON FUNCTION gm.next_number(text, text) FROM PUBLIC;

CREATE TABLE gm.invoices (
    invoice_id     text        PRIMARY KEY DEFAULT ('inv_' || replace(gen_random_uuid()::text, '-', '')),
    tenant         text        NOT NULL,
    issuer         text        NOT NULL,
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    status         text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'finalized', 'void')),
    number         text        UNIQUE,
    number_seq     bigint,
    currency       char(3),
    minor_units    smallint,
    total          numeric,
    total_minor    numeric(40,0),
    usage_exact    numeric(38,18),
    credit_balance_before_minor numeric(40,0),
    credit_balance_after_minor  numeric(40,0),
    ledger_events  numeric,
    ledger_amount  numeric(38,18),
    created_at     timestamptz NOT NULL DEFAULT now(),
    finalized_at   timestamptz,
    voided_at      timestamptz,
    UNIQUE (tenant, period_start),
    CHECK (period_end > period_start),
    CHECK (status = 'draft' OR (number IS NOT NULL AND finalized_at IS NOT NULL AND total IS NOT NULL
                                AND currency IS NOT NULL)),
    CHECK ((status = 'void') = (voided_at IS NOT NULL))
);
COMMENT ON TABLE gm.invoices IS 'One invoice per tenant and UTC month: draft (computed live from the charges), finalized (immutable, numbered), void';

CREATE TABLE gm.invoice_lines (
    invoice_id      text        NOT NULL REFERENCES gm.invoices,
    line_no         integer     NOT NULL CHECK (line_no >= 1),
    kind            text        NOT NULL CHECK (kind IN ('usage', 'tier', 'discount', 'commitment', 'credit', 'adjustment')),
    adjusted_kind   text,
    description     text        NOT NULL,
    dimension       text,
    model           text,
    site_tier       text,
    card_version    integer,
    band            integer,
    quantity        numeric(40,0),
    unit_price      numeric(30,12),
    amount_exact    numeric(38,18) NOT NULL,
    amount          numeric     NOT NULL,
    amount_minor    numeric(40,0) NOT NULL,
    discount_minor  numeric(40,0) NOT NULL DEFAULT 0,
    credit_minor    numeric(40,0) NOT NULL DEFAULT 0,
    corrects_period timestamptz,
    PRIMARY KEY (invoice_id, line_no),
    CHECK ((kind = 'adjustment') = (corrects_period IS NOT NULL))
);
COMMENT ON TABLE gm.invoice_lines IS 'Lines of finalized invoices (drafts are computed on read); append-only';

CREATE TABLE gm.credit_notes (
    credit_note_id text        PRIMARY KEY DEFAULT ('cn_' || replace(gen_random_uuid()::text, '-', '')),
    invoice_id     text        NOT NULL REFERENCES gm.invoices,
    tenant         text        NOT NULL DEFAULT '',
    number         text        UNIQUE,
    number_seq     bigint,
    currency       char(3),
    amount         numeric     NOT NULL CHECK (amount > 0),
    amount_minor   numeric(40,0),
    reason         text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_notes_invoice ON gm.credit_notes (invoice_id);
COMMENT ON TABLE gm.credit_notes IS 'Credit notes against finalized invoices; their sum never exceeds the invoice total';

-- What the ledger held for a tenant's period when an invoice billed it (the invoice of the
-- period itself, or a later invoice with adjustment lines for it).
CREATE TABLE gm.period_snapshots (
    tenant       text        NOT NULL,
    period_start timestamptz NOT NULL,
    invoice_id   text        NOT NULL REFERENCES gm.invoices,
    events       numeric     NOT NULL,
    amount       numeric(38,18) NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, period_start, invoice_id)
);
COMMENT ON TABLE gm.period_snapshots IS 'Charges (events, exact amount) of a period as billed; a later difference is a late-event adjustment';

CREATE FUNCTION gm.invoices_guard() RETURNS trigger LANGUAGE plpgsql
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
        NEW.finalized_at := now();
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
        NEW.voided_at := coalesce(NEW.voided_at, now());
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'invoice % (%): a % invoice is immutable (% -> % refused)', OLD.invoice_id,
        coalesce(OLD.number, 'draft'), OLD.status, OLD.status, NEW.status USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER invoices_guard BEFORE UPDATE OR DELETE ON gm.invoices
    FOR EACH ROW EXECUTE FUNCTION gm.invoices_guard();

CREATE FUNCTION gm.invoice_lines_guard() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    st text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'invoice %: lines are immutable (%)', OLD.invoice_id, TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT status INTO st FROM gm.invoices WHERE invoice_id = NEW.invoice_id FOR UPDATE;
    IF st IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'invoice %: lines are written only while finalizing a draft (status %)', NEW.invoice_id, st
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoice_lines_guard BEFORE INSERT OR UPDATE OR DELETE ON gm.invoice_lines
    FOR EACH ROW EXECUTE FUNCTION gm.invoice_lines_guard();
CREATE TRIGGER invoice_lines_no_truncate BEFORE TRUNCATE ON gm.invoice_lines
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();

CREATE FUNCTION gm.credit_notes_guard() RETURNS trigger LANGUAGE plpgsql
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
    NEW.created_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER credit_notes_guard BEFORE INSERT OR UPDATE OR DELETE ON gm.credit_notes
    FOR EACH ROW EXECUTE FUNCTION gm.credit_notes_guard();

CREATE TRIGGER period_snapshots_immutable BEFORE UPDATE OR DELETE ON gm.period_snapshots
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER invoices_no_truncate BEFORE TRUNCATE ON gm.invoices
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER credit_notes_no_truncate BEFORE TRUNCATE ON gm.credit_notes
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();

-- ---- Auditors' views -------------------------------------------------------------------
CREATE VIEW audit.invoices AS
SELECT i.invoice_id,
       i.number,
       i.tenant,
       i.period_start,
       i.period_end,
       i.status,
       i.currency,
       i.total,
       i.finalized_at,
       i.issuer,
       i.total_minor,
       i.usage_exact,
       coalesce((SELECT sum(cn.amount) FROM gm.credit_notes cn WHERE cn.invoice_id = i.invoice_id), 0) AS credited,
       i.voided_at,
       i.ledger_events,
       i.ledger_amount
FROM gm.invoices i;
COMMENT ON VIEW audit.invoices IS
    'One row per invoice. Drafts are computed live from the charges on every read (number, currency and total NULL here); finalized invoices are immutable (triggers) and numbered gaplessly per issuer; void ones are fully credited.';
COMMENT ON COLUMN audit.invoices.total IS 'Sum of the rounded lines, in currency units (finalized and void invoices)';
COMMENT ON COLUMN audit.invoices.ledger_amount IS 'Exact list amount of the period''s charges when the invoice was finalized';

CREATE VIEW audit.invoice_lines AS
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
       l.adjusted_kind
FROM gm.invoice_lines l;
COMMENT ON VIEW audit.invoice_lines IS
    'Lines of finalized (and void) invoices: quantity (tokens, or GPU-microseconds for dimension gpu), unit price (12 decimals; per token or per GPU-second), exact amount (18 decimals) and the one rounding to the minor unit (half to even). Adjustment lines name the period they correct.';
COMMENT ON COLUMN audit.invoice_lines.corrects_period IS 'For adjustment lines: the start of the finalized period that late events corrected';

CREATE VIEW audit.credit_notes AS
SELECT credit_note_id, number, invoice_id, tenant, currency, amount, reason, created_at
FROM gm.credit_notes;
COMMENT ON VIEW audit.credit_notes IS 'Credit notes against finalized invoices, numbered gaplessly per issuer';

-- invoiced_amount: the exact amount of the usage and tier lines that billed the period (its
-- own finalized or void invoice and the adjustment lines of later invoices that correct it).
-- difference stays ledger minus charges (0); invoice_difference is ledger minus invoiced at
-- list prices only when no contract prices apply, so it is informative, not a check.
CREATE OR REPLACE VIEW audit.reconciliation AS
WITH ledger AS (
    SELECT tenant, date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
           currency, count(*) AS events,
           sum(amount_input + amount_cached + amount_output + amount_gpu) AS ledger_amount
    FROM gm.ledger GROUP BY 1, 2, 3
), charged AS (
    SELECT tenant, date_trunc('month', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
           currency, sum(amount) AS charged_amount
    FROM gm.charges GROUP BY 1, 2, 3
), invoiced AS (
    SELECT i.tenant, coalesce(l.corrects_period, i.period_start) AS period_start,
           sum(l.amount_exact) FILTER (WHERE coalesce(l.adjusted_kind, l.kind) IN ('usage', 'tier')) AS invoiced_amount,
           sum(l.amount) AS invoiced_rounded
    FROM gm.invoices i JOIN gm.invoice_lines l USING (invoice_id)
    WHERE i.status IN ('finalized', 'void')
    GROUP BY 1, 2
)
SELECT coalesce(l.tenant, c.tenant)               AS tenant,
       coalesce(l.period_start, c.period_start)   AS period_start,
       coalesce(l.currency, c.currency)           AS currency,
       coalesce(l.events, 0)                      AS events,
       coalesce(l.ledger_amount, 0)               AS ledger_amount,
       coalesce(c.charged_amount, 0)              AS charged_amount,
       iv.invoiced_amount                         AS invoiced_amount,
       coalesce(l.ledger_amount, 0) - coalesce(c.charged_amount, 0) AS difference,
       iv.invoiced_rounded                        AS invoiced_rounded
FROM ledger l FULL JOIN charged c USING (tenant, period_start, currency)
LEFT JOIN invoiced iv ON iv.tenant = coalesce(l.tenant, c.tenant)
                     AND iv.period_start = coalesce(l.period_start, c.period_start);
COMMENT ON VIEW audit.reconciliation IS
    'Per tenant and month: ledger events and exact list amount against the hourly charges (difference must be 0) and against the invoiced exact amount of the usage and tier lines (invoiced_amount: NULL while the period is not finalized; equals ledger_amount when the contract adds no own prices or tiers) and the rounded invoiced total including discounts, commitments, credits and adjustments (invoiced_rounded).';
COMMENT ON COLUMN audit.reconciliation.invoiced_amount IS 'Exact amount of the usage and tier lines billed for this period (own invoice plus later adjustment lines)';

RESET ROLE;

-- gm_api: least privileges. Reads what it serves; writes only what the API owns, never
-- UPDATE/DELETE on lines, credit notes or snapshots (and the triggers refuse those anyway).
GRANT SELECT, INSERT ON gm.tenants TO gm_api;
GRANT UPDATE (display_name, issuer) ON gm.tenants TO gm_api;
GRANT SELECT, INSERT ON gm.api_keys TO gm_api;
GRANT UPDATE (revoked_at) ON gm.api_keys TO gm_api;
GRANT SELECT, INSERT, DELETE ON gm.idempotency TO gm_api;
GRANT UPDATE (status, content_type, body) ON gm.idempotency TO gm_api;
GRANT SELECT, INSERT ON gm.invoices TO gm_api;
GRANT UPDATE (status, currency, minor_units, total, total_minor, usage_exact,
              credit_balance_before_minor, credit_balance_after_minor, ledger_events,
              ledger_amount, voided_at) ON gm.invoices TO gm_api;
GRANT SELECT, INSERT ON gm.invoice_lines, gm.credit_notes, gm.period_snapshots TO gm_api;
GRANT INSERT ON gm.rate_cards, gm.contracts TO gm_api;
GRANT SELECT ON audit.invoices, audit.invoice_lines, audit.credit_notes TO gm_api, gm_auditor;
GRANT SELECT ON audit.reconciliation TO gm_auditor;
