-- 0008 billing: what billing/ (gm_billing.h) needs beside the invoices of 0003.
--
--   * gm.charges_daily: the charges rolled up per tenant, UTC day, site, model, dimension and
--     card version (and gm.charges_daily_model: per tenant, day, model and dimension), kept by statement-level triggers on gm.charges (transition tables) in the
--     rater's own transaction: drafts and day-bucket usage read ~24x fewer rows. The rater's
--     COPY path (ledger/batch.c) is not touched; the triggers see whatever statement wrote
--     gm.charges.
--   * gm.period_changes: a change marker per (tenant, month), bumped from one global
--     sequence whenever the month's charges or one of the tenant's invoices of that month
--     change. A draft of month M is the same as long as max(seq) over the tenant's months
--     <= M is (and the rating book is), so it is recomputed only when that number moves.
--   * gm.period_snapshots inserts are guarded (only for a draft being finalized, for its
--     own month or an earlier one of the same tenant) and remember the re-rating
--     corrections they billed.
--   * re-rating runs and their line corrections (append-only), and their auditors' views;
--   * audit.reconciliation with what is billed, what waits in a draft and what is billed
--     nowhere; audit.invoice_lines with the unit of each line's quantity.

SET ROLE gm_owner;

CREATE TABLE gm.charges_daily (
    tenant        text        NOT NULL,
    day           timestamptz NOT NULL,
    site          text        NOT NULL,
    model         text        NOT NULL,
    dimension     text        NOT NULL,
    card_id       text        NOT NULL,
    card_version  integer     NOT NULL,
    currency      char(3)     NOT NULL,
    quantity      numeric(40,0)  NOT NULL,
    amount        numeric(38,18) NOT NULL,
    events        bigint      NOT NULL,
    first_hour    timestamptz NOT NULL,
    last_hour     timestamptz NOT NULL,
    PRIMARY KEY (tenant, day, site, model, dimension, card_id, card_version, currency)
);
COMMENT ON TABLE gm.charges_daily IS 'gm.charges summed per UTC day (kept by triggers on gm.charges in the writer''s transaction); first_hour/last_hour bound the hours behind a row';

-- The same per tenant, day, model and dimension only (all sites and card versions): what the
-- usage series by day without a site answers from (~10x fewer rows again).
CREATE TABLE gm.charges_daily_model (
    tenant        text        NOT NULL,
    day           timestamptz NOT NULL,
    model         text        NOT NULL,
    dimension     text        NOT NULL,
    currency      char(3)     NOT NULL,
    quantity      numeric(40,0)  NOT NULL,
    amount        numeric(38,18) NOT NULL,
    events        bigint      NOT NULL,
    PRIMARY KEY (tenant, day, model, dimension, currency)
);
COMMENT ON TABLE gm.charges_daily_model IS 'gm.charges summed per UTC day, model and dimension (all sites and card versions); kept by the same triggers';

CREATE SEQUENCE gm.change_seq;
CREATE TABLE gm.period_changes (
    tenant       text        NOT NULL,
    period_start timestamptz NOT NULL,
    seq          bigint      NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT gm.now(),
    PRIMARY KEY (tenant, period_start)
);
COMMENT ON TABLE gm.period_changes IS 'Change marker per tenant and month: seq (one global sequence) moves whenever the month''s charges or invoices change';

CREATE FUNCTION gm.month_of(t timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

CREATE FUNCTION gm.day_of(t timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- Statement-level: the rows a statement inserted (or old and new of the rows it updated)
-- are summed per day and upserted into the rollup, and the months touched get a new marker.
-- Rows are upserted in key order (two writers lock in one order, as the rater does for
-- gm.charges).

CREATE FUNCTION gm.charges_rollup_ins() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.charges_daily AS d (tenant, day, site, model, dimension, card_id, card_version,
                                       currency, quantity, amount, events, first_hour, last_hour)
    SELECT tenant, gm.day_of(hour), site, model, dimension, card_id, card_version, currency,
           sum(quantity), sum(amount), sum(events), min(hour), max(hour)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (tenant, day, site, model, dimension, card_id, card_version, currency) DO UPDATE
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

CREATE FUNCTION gm.charges_rollup_upd() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.charges_daily AS d (tenant, day, site, model, dimension, card_id, card_version,
                                       currency, quantity, amount, events, first_hour, last_hour)
    SELECT tenant, gm.day_of(hour), site, model, dimension, card_id, card_version, currency,
           sum(q), sum(a), sum(e), min(hour), max(hour)
    FROM (SELECT tenant, hour, site, model, dimension, card_id, card_version, currency,
                 quantity AS q, amount AS a, events AS e FROM new_rows
          UNION ALL
          SELECT tenant, hour, site, model, dimension, card_id, card_version, currency,
                 -quantity, -amount, -events FROM old_rows) x
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (tenant, day, site, model, dimension, card_id, card_version, currency) DO UPDATE
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

CREATE TRIGGER charges_rollup_ins AFTER INSERT ON gm.charges
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gm.charges_rollup_ins();
CREATE TRIGGER charges_rollup_upd AFTER UPDATE ON gm.charges
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION gm.charges_rollup_upd();
-- Charges are never deleted by gridmeter; a DELETE or TRUNCATE would leave the rollup wrong.
CREATE TRIGGER charges_no_delete BEFORE DELETE ON gm.charges
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER charges_no_truncate BEFORE TRUNCATE ON gm.charges
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();

-- The rollup of what is already there.
INSERT INTO gm.charges_daily (tenant, day, site, model, dimension, card_id, card_version, currency,
                              quantity, amount, events, first_hour, last_hour)
SELECT tenant, gm.day_of(hour), site, model, dimension, card_id, card_version, currency,
       sum(quantity), sum(amount), sum(events), min(hour), max(hour)
FROM gm.charges GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;
INSERT INTO gm.charges_daily_model (tenant, day, model, dimension, currency, quantity, amount,
                                    events)
SELECT tenant, gm.day_of(hour), model, dimension, currency, sum(quantity), sum(amount), sum(events)
FROM gm.charges GROUP BY 1, 2, 3, 4, 5;
INSERT INTO gm.period_changes (tenant, period_start, seq)
SELECT DISTINCT tenant, gm.month_of(hour), nextval('gm.change_seq') FROM gm.charges
ON CONFLICT DO NOTHING;

-- An invoice row that appears or changes status moves its month's marker too (the next
-- month's draft reads its credit balance and snapshots).
CREATE FUNCTION gm.invoices_mark() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.period_changes AS p (tenant, period_start, seq)
    VALUES (NEW.tenant, NEW.period_start, nextval('gm.change_seq'))
    ON CONFLICT (tenant, period_start) DO UPDATE SET seq = EXCLUDED.seq, changed_at = gm.now();
    RETURN NULL;
END $$;
CREATE TRIGGER invoices_mark AFTER INSERT OR UPDATE ON gm.invoices
    FOR EACH ROW EXECUTE FUNCTION gm.invoices_mark();

-- ---- Snapshots: guarded inserts -----------------------------------------------------------
ALTER TABLE gm.period_snapshots ADD COLUMN rerating_seq bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN gm.period_snapshots.rerating_seq IS 'The highest re-rating correction of this period that the snapshot''s invoice billed (0: none)';

CREATE FUNCTION gm.period_snapshots_guard() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    inv gm.invoices%ROWTYPE;
BEGIN
    SELECT * INTO inv FROM gm.invoices WHERE invoice_id = NEW.invoice_id;
    IF NOT FOUND OR inv.status <> 'draft' THEN
        RAISE EXCEPTION 'gm.period_snapshots: invoice % is not a draft being finalized', NEW.invoice_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF inv.tenant <> NEW.tenant THEN
        RAISE EXCEPTION 'gm.period_snapshots: invoice % belongs to tenant %, not %', NEW.invoice_id, inv.tenant, NEW.tenant
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.period_start > inv.period_start OR NEW.period_start <> gm.month_of(NEW.period_start) THEN
        RAISE EXCEPTION 'gm.period_snapshots: period % is not a month at or before the invoice''s %',
            NEW.period_start, inv.period_start USING ERRCODE = 'check_violation';
    END IF;
    NEW.taken_at := gm.clock_now();
    RETURN NEW;
END $$;
CREATE TRIGGER period_snapshots_guard BEFORE INSERT ON gm.period_snapshots
    FOR EACH ROW EXECUTE FUNCTION gm.period_snapshots_guard();

-- ---- Re-rating ------------------------------------------------------------------------------
CREATE TABLE gm.rerating_runs (
    run_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    period_start  timestamptz NOT NULL CHECK (period_start = gm.month_of(period_start)),
    tenant        text,
    requested_by  text        NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 200),
    reason        text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    created_at    timestamptz NOT NULL DEFAULT gm.now(),
    tenants       integer     NOT NULL,
    lines_changed integer     NOT NULL,
    delta_exact   numeric(38,18) NOT NULL,
    delta_minor   jsonb       NOT NULL
);
COMMENT ON TABLE gm.rerating_runs IS 'Applied re-rating runs (append-only): who, when, why, which month and tenant, totals';

CREATE TABLE gm.rerating_corrections (
    correction_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           bigint      NOT NULL REFERENCES gm.rerating_runs,
    tenant           text        NOT NULL,
    period_start     timestamptz NOT NULL,
    invoice_id       text        REFERENCES gm.invoices,
    invoice_status   text        NOT NULL,
    kind             text        NOT NULL,
    dimension        text,
    model            text,
    site_tier        text,
    card_version     integer,
    band             integer,
    currency         char(3)     NOT NULL,
    quantity_before  numeric(40,0) NOT NULL,
    quantity_after   numeric(40,0) NOT NULL,
    unit_price_before numeric(30,12),
    unit_price_after  numeric(30,12),
    amount_exact_before numeric(38,18) NOT NULL,
    amount_exact_after  numeric(38,18) NOT NULL,
    amount_minor_before numeric(40,0) NOT NULL,
    amount_minor_after  numeric(40,0) NOT NULL
);
CREATE INDEX rerating_corrections_period ON gm.rerating_corrections (tenant, period_start, correction_id);
COMMENT ON TABLE gm.rerating_corrections IS 'Line-by-line result of a re-rating run (append-only); billed as adjustment lines by the next invoice for finalized months';

CREATE TRIGGER rerating_runs_immutable BEFORE UPDATE OR DELETE ON gm.rerating_runs
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER rerating_corrections_immutable BEFORE UPDATE OR DELETE ON gm.rerating_corrections
    FOR EACH ROW EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER rerating_runs_no_truncate BEFORE TRUNCATE ON gm.rerating_runs
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();
CREATE TRIGGER rerating_corrections_no_truncate BEFORE TRUNCATE ON gm.rerating_corrections
    FOR EACH STATEMENT EXECUTE FUNCTION gm.refuse_change();

-- A correction moves its month's marker (the next draft bills it).
CREATE FUNCTION gm.rerating_mark() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    INSERT INTO gm.period_changes AS p (tenant, period_start, seq)
    VALUES (NEW.tenant, NEW.period_start, nextval('gm.change_seq'))
    ON CONFLICT (tenant, period_start) DO UPDATE SET seq = EXCLUDED.seq, changed_at = gm.now();
    RETURN NULL;
END $$;
CREATE TRIGGER rerating_mark AFTER INSERT ON gm.rerating_corrections
    FOR EACH ROW EXECUTE FUNCTION gm.rerating_mark();

CREATE VIEW audit.rerating_runs AS
SELECT run_id, period_start, tenant, requested_by, reason, created_at, tenants, lines_changed,
       delta_exact, delta_minor
FROM gm.rerating_runs;
COMMENT ON VIEW audit.rerating_runs IS
    'Applied re-rating runs: the month (and tenant, NULL for all), who asked, why, when (gridmeter''s clock), how many tenants and lines changed, the exact delta and the rounded delta per currency (JSON object currency -> minor units). The ledger is never rewritten: corrections are appended and billed as adjustment lines.';

CREATE VIEW audit.rerating_corrections AS
SELECT c.correction_id, c.run_id, c.tenant, c.period_start, c.invoice_id, c.invoice_status,
       c.kind, c.dimension, c.model, c.site_tier, c.card_version, c.band, c.currency,
       c.quantity_before, c.quantity_after, c.unit_price_before, c.unit_price_after,
       c.amount_exact_before, c.amount_exact_after, c.amount_minor_before, c.amount_minor_after,
       EXISTS (SELECT 1 FROM gm.period_snapshots s WHERE s.tenant = c.tenant
               AND s.period_start = c.period_start AND s.rerating_seq >= c.correction_id) AS billed
FROM gm.rerating_corrections c;
COMMENT ON VIEW audit.rerating_corrections IS
    'Each line a re-rating run changed: quantity, unit price (per token or per GPU-second), exact and rounded amount before and after; billed is true once an invoice carried it (a draft shows it at once; a finalized month through an adjustment line on its next invoice).';

-- ---- Auditors: lines with their units, reconciliation with what is not billed yet -------
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
       CASE WHEN l.dimension = 'gpu' THEN 'gpu_second' WHEN l.dimension IS NOT NULL THEN 'token' END AS unit,
       CASE WHEN l.dimension = 'gpu' THEN l.quantity / 1000000 ELSE l.quantity END AS billed_quantity
FROM gm.invoice_lines l;
COMMENT ON VIEW audit.invoice_lines IS
    'Lines of finalized (and void) invoices: quantity (tokens, or GPU-microseconds for dimension gpu, as metered), unit price (12 decimals; per token or per GPU-second), exact amount (18 decimals) and the one rounding to the minor unit (half to even). billed_quantity is the quantity in the unit of the price (unit: token or gpu_second), so that billed_quantity x unit_price = amount_exact. Adjustment lines name the period they correct.';
COMMENT ON COLUMN audit.invoice_lines.billed_quantity IS 'Quantity in the unit of unit_price: tokens, or GPU-seconds (quantity / 10^6) for dimension gpu';

-- billed_amount: list amount of the charges as of the latest snapshot of the period (what an
-- invoice billed: its own, or adjustment lines of a later one); waiting_amount: the rest of
-- the charges when a draft will bill it (the period's own draft, or the next draft of the
-- tenant for a billed or backfilled month); unbilled_amount: charges no invoice row covers.
-- billed + waiting + unbilled = charged_amount.
CREATE OR REPLACE VIEW audit.reconciliation AS
WITH ledger AS (
    SELECT tenant, gm.month_of(event_time) AS period_start,
           currency, count(*) AS events,
           sum(amount_input + amount_cached + amount_output + amount_gpu) AS ledger_amount
    FROM gm.ledger GROUP BY 1, 2, 3
), charged AS (
    SELECT tenant, gm.month_of(day) AS period_start,
           currency, sum(amount) AS charged_amount
    FROM gm.charges_daily GROUP BY 1, 2, 3
), invoiced AS (
    SELECT i.tenant, coalesce(l.corrects_period, i.period_start) AS period_start,
           sum(l.amount_exact) FILTER (WHERE coalesce(l.adjusted_kind, l.kind) IN ('usage', 'tier')) AS invoiced_amount,
           sum(l.amount) AS invoiced_rounded
    FROM gm.invoices i JOIN gm.invoice_lines l USING (invoice_id)
    WHERE i.status IN ('finalized', 'void')
    GROUP BY 1, 2
), snap AS (
    SELECT DISTINCT ON (tenant, period_start) tenant, period_start, amount
    FROM gm.period_snapshots ORDER BY tenant, period_start, taken_at DESC, invoice_id
), base AS (
    SELECT coalesce(l.tenant, c.tenant)               AS tenant,
           coalesce(l.period_start, c.period_start)   AS period_start,
           coalesce(l.currency, c.currency)           AS currency,
           coalesce(l.events, 0)                      AS events,
           coalesce(l.ledger_amount, 0)               AS ledger_amount,
           coalesce(c.charged_amount, 0)              AS charged_amount
    FROM ledger l FULL JOIN charged c USING (tenant, period_start, currency)
), parts AS (
    SELECT b.*,
           b.charged_amount - coalesce(s.amount, 0) AS rest,
           coalesce(s.amount, 0) AS billed,
           own.status AS own_status,
           (own.status IS NULL OR own.status = 'draft')
             AND EXISTS (SELECT 1 FROM gm.invoices f WHERE f.tenant = b.tenant
                         AND f.status <> 'draft' AND f.period_start > b.period_start) AS backfill,
           EXISTS (SELECT 1 FROM gm.invoices d WHERE d.tenant = b.tenant AND d.status = 'draft'
                   AND d.period_start > b.period_start) AS later_draft
    FROM base b
    LEFT JOIN snap s ON s.tenant = b.tenant AND s.period_start = b.period_start
    LEFT JOIN gm.invoices own ON own.tenant = b.tenant AND own.period_start = b.period_start
), split AS (
    SELECT p.*,
           CASE WHEN p.own_status = 'void' THEN 0
                WHEN p.backfill OR p.own_status = 'finalized' THEN
                     CASE WHEN p.later_draft THEN p.rest ELSE 0 END
                WHEN p.own_status = 'draft' THEN p.rest
                ELSE 0 END AS waiting
    FROM parts p
)
SELECT p.tenant, p.period_start, p.currency, p.events, p.ledger_amount, p.charged_amount,
       iv.invoiced_amount,
       p.ledger_amount - p.charged_amount AS difference,
       iv.invoiced_rounded,
       p.billed AS billed_amount,
       p.waiting AS waiting_amount,
       p.rest - p.waiting AS unbilled_amount
FROM split p
LEFT JOIN invoiced iv ON iv.tenant = p.tenant AND iv.period_start = p.period_start;
COMMENT ON VIEW audit.reconciliation IS
    'Per tenant and month: ledger events and exact list amount against the hourly charges (difference = ledger - charges, must be 0); invoiced_amount (exact usage and tier lines billed for the period by its own invoice and later adjustment lines; NULL while nothing is finalized) and invoiced_rounded; and the charges split into billed_amount (as of the latest invoice that billed the period), waiting_amount (in a draft: the period''s own, or the next draft''s adjustment lines for late or backfilled usage) and unbilled_amount (no invoice row will bill it: no draft exists yet, or the period''s invoice is void). billed + waiting + unbilled = charged_amount, all at list prices.';
COMMENT ON COLUMN audit.reconciliation.billed_amount IS 'List amount of the period''s charges when an invoice last billed it (latest snapshot); 0 when never billed';
COMMENT ON COLUMN audit.reconciliation.waiting_amount IS 'List amount not billed yet that a draft will bill (its own draft, or adjustment lines on the next draft)';
COMMENT ON COLUMN audit.reconciliation.unbilled_amount IS 'List amount that no invoice row covers (billed nowhere): expect 0 after gridmeter close';

RESET ROLE;

GRANT SELECT ON gm.charges_daily, gm.charges_daily_model, gm.period_changes TO gm_api;
GRANT SELECT ON gm.rerating_runs, gm.rerating_corrections TO gm_api;
GRANT INSERT ON gm.rerating_runs, gm.rerating_corrections TO gm_api;
GRANT USAGE ON SEQUENCE gm.change_seq TO gm_api, gm_rater;
GRANT SELECT ON gm.charges_daily TO gm_rater;
GRANT SELECT ON audit.rerating_runs, audit.rerating_corrections, audit.invoice_lines,
      audit.reconciliation TO gm_auditor;
GRANT SELECT ON audit.rerating_runs, audit.rerating_corrections, audit.invoice_lines TO gm_api;
