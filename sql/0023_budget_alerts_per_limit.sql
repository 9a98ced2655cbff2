-- 0023 budget alerts, exactly once per tenant, month, threshold AND limit (docs/api.md,
-- "Budgets and alerts"). Before, an alert was keyed (tenant, month, threshold): a limit raised
-- after a crossing never alerted again at that threshold of the new limit, and a limit lowered
-- below the month's spend raised nothing until the next charge.
--   1. gm.budget_alerts is keyed (tenant, period_start, threshold_percent, monthly_limit). The
--      event id stays budget.<tenant>.<YYYY-MM>.<percent> for the first alert of a tenant,
--      month and threshold; a later one (another limit) is that id + '.' + the limit without
--      trailing zeros (budget.acme.2026-11.80.2000), so receivers deduplicating on ids see it.
--   2. Alerts are evaluated by every charging transaction (as before) AND when a budget is
--      inserted or its currency, limit or thresholds change, in that transaction, against the
--      month's committed spend (the month of gm.now()), with their outbox rows.
--   3. Charging and budget setting serialize on the month's gm.month_spend row: the budget
--      trigger locks it (FOR UPDATE) before it reads the spend, and the charging side evaluates
--      alerts in a statement after its spend upsert, so that each sees what the other
--      committed (READ COMMITTED: a new snapshot per statement).
--   4. gm.entitlement_notify's alert payload carries the limit and currency ('a|A <xid>
--      <period_us> <percent> <limit> <currency> <tenant>'), for the API servers'
--      thresholds_crossed (the alerts of the budget's current limit and currency).

SET ROLE gm_owner;

ALTER TABLE gm.budget_alerts DROP CONSTRAINT budget_alerts_pkey;
ALTER TABLE gm.budget_alerts ADD PRIMARY KEY (tenant, period_start, threshold_percent,
                                              monthly_limit);
COMMENT ON TABLE gm.budget_alerts IS 'One row per tenant, UTC month, budget threshold and limit crossed (the primary key makes it exactly once): the limit and the month''s spend in the transaction that crossed it (a charging transaction, or the one that set the budget)';
COMMENT ON COLUMN gm.budget_alerts.event_id IS 'Stable id of the alert: budget.<tenant>.<YYYY-MM>.<percent> for the first alert of the tenant, month and threshold; + ''.<limit>'' (trailing zeros removed) for a later one under another limit. The webhook event id receivers deduplicate on';

-- The alerts that the month's spend rows named in keys ([{tenant, period_start, currency}])
-- cross, with their outbox rows; one statement.
CREATE FUNCTION gm.budget_alerts_raise(keys jsonb) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
BEGIN
    WITH s AS (
        SELECT m.tenant, m.period_start, m.currency, m.amount
        FROM jsonb_to_recordset(keys) AS k(tenant text, period_start timestamptz,
                                           currency char(3))
        JOIN gm.month_spend m ON m.tenant = k.tenant AND m.period_start = k.period_start
                             AND m.currency = k.currency
    ), a AS (
        INSERT INTO gm.budget_alerts (tenant, period_start, threshold_percent, currency,
                                      monthly_limit, spend, crossed_at, event_id)
        SELECT s.tenant, s.period_start, t.pct, s.currency, b.monthly_limit, s.amount, gm.now(),
               'budget.' || s.tenant || '.' || to_char(s.period_start AT TIME ZONE 'UTC', 'YYYY-MM')
                 || '.' || t.pct
                 || CASE WHEN EXISTS (SELECT 1 FROM gm.budget_alerts o WHERE o.tenant = s.tenant
                                      AND o.period_start = s.period_start
                                      AND o.threshold_percent = t.pct)
                         THEN '.' || trim_scale(b.monthly_limit)::text ELSE '' END
        FROM s JOIN gm.budgets b ON b.tenant = s.tenant AND b.currency = s.currency
             CROSS JOIN LATERAL unnest(b.thresholds) AS t(pct)
        WHERE s.amount * 100 >= b.monthly_limit * t.pct
          AND NOT EXISTS (SELECT 1 FROM gm.budget_alerts o WHERE o.tenant = s.tenant
                          AND o.period_start = s.period_start AND o.threshold_percent = t.pct
                          AND o.monthly_limit = b.monthly_limit)
        ORDER BY 1, 2, 3
        ON CONFLICT DO NOTHING
        RETURNING *
    )
    INSERT INTO gm.webhook_outbox (event_id, event_type, tenant, payload)
    SELECT a.event_id, 'budget.threshold_crossed', a.tenant,
           jsonb_build_object('id', a.event_id, 'type', 'budget.threshold_crossed',
                              'tenant', a.tenant,
                              'period', to_char(a.period_start AT TIME ZONE 'UTC', 'YYYY-MM'),
                              'threshold_percent', a.threshold_percent,
                              'currency', a.currency,
                              'limit', a.monthly_limit::text, 'spend', a.spend::text,
                              'crossed_at', to_char(a.crossed_at AT TIME ZONE 'UTC',
                                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    FROM a ORDER BY a.event_id
    ON CONFLICT DO NOTHING;
END $$;

-- Spend of the charges a statement wrote, then (a statement of its own, so that it sees a
-- budget committed while the upsert waited for the month's row) the alerts it crosses.
CREATE OR REPLACE FUNCTION gm.budget_apply(delta jsonb) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    keys jsonb;
BEGIN
    WITH d AS (
        SELECT x.tenant, x.period_start, x.currency, x.amount
        FROM jsonb_to_recordset(delta) AS x(tenant text, period_start timestamptz,
                                            currency char(3), amount numeric)
        ORDER BY 1, 2, 3
    ), s AS (
        INSERT INTO gm.month_spend AS m (tenant, period_start, currency, amount, updated_at)
        SELECT tenant, period_start, currency, amount, gm.now() FROM d
        ON CONFLICT (tenant, period_start, currency) DO UPDATE
        SET amount = m.amount + EXCLUDED.amount, updated_at = EXCLUDED.updated_at
        RETURNING m.tenant, m.period_start, m.currency
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object('tenant', s.tenant,
                                                 'period_start', s.period_start,
                                                 'currency', s.currency)), '[]')
    INTO keys FROM s;
    IF jsonb_array_length(keys) > 0 THEN
        PERFORM gm.budget_alerts_raise(keys);
    END IF;
END $$;

-- A budget inserted, or its currency, limit or thresholds changed: the month's crossed
-- thresholds of the new terms are raised now, in this transaction.
CREATE FUNCTION gm.budget_set_alerts() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, gm AS $$
DECLARE
    m timestamptz := gm.month_of(gm.now());
BEGIN
    -- wait for a charging transaction of this month that holds the row, then see its spend
    PERFORM 1 FROM gm.month_spend WHERE tenant = NEW.tenant AND period_start = m
        AND currency = NEW.currency FOR UPDATE;
    PERFORM gm.budget_alerts_raise(jsonb_build_array(jsonb_build_object(
        'tenant', NEW.tenant, 'period_start', m, 'currency', NEW.currency)));
    RETURN NULL;
END $$;
CREATE TRIGGER budgets_alerts_ins AFTER INSERT ON gm.budgets
    FOR EACH ROW EXECUTE FUNCTION gm.budget_set_alerts();
CREATE TRIGGER budgets_alerts_upd AFTER UPDATE ON gm.budgets FOR EACH ROW
    WHEN ((OLD.tenant, OLD.currency, OLD.monthly_limit, OLD.thresholds)
          IS DISTINCT FROM (NEW.tenant, NEW.currency, NEW.monthly_limit, NEW.thresholds))
    EXECUTE FUNCTION gm.budget_set_alerts();

-- The alert payload with the limit (sql/0021's grammar otherwise unchanged).
CREATE OR REPLACE FUNCTION gm.entitlement_notify() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, gm AS $$
DECLARE
    x text := pg_current_xact_id()::text;
    r record;
    p text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('gm_entitlement', 'r ' || x);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'month_spend' THEN
        p := CASE WHEN TG_OP = 'DELETE' THEN 'S ' ELSE 's ' END || x || ' '
             || (extract(epoch FROM r.period_start) * 1000000)::bigint || ' ' || r.currency || ' '
             || CASE WHEN TG_OP = 'DELETE' THEN '- -'
                     ELSE r.amount::text || ' '
                          || (extract(epoch FROM r.updated_at) * 1000000)::bigint END
             || ' ' || r.tenant;
        -- a row moved to another key is the old key deleted, then the new one
        IF TG_OP = 'UPDATE' AND (OLD.tenant, OLD.period_start, OLD.currency)
                                IS DISTINCT FROM (NEW.tenant, NEW.period_start, NEW.currency) THEN
            PERFORM pg_notify('gm_entitlement', 'S ' || x || ' '
                || (extract(epoch FROM OLD.period_start) * 1000000)::bigint || ' '
                || OLD.currency || ' - - ' || OLD.tenant);
        END IF;
    ELSIF TG_TABLE_NAME = 'budgets' THEN
        IF TG_OP = 'UPDATE' AND OLD.tenant IS DISTINCT FROM NEW.tenant THEN
            PERFORM pg_notify('gm_entitlement', 'B ' || x || ' ' || OLD.tenant);
        END IF;
        p := CASE WHEN TG_OP = 'DELETE' THEN 'B ' || x || ' ' || r.tenant
                  ELSE 'b ' || x || ' ' || r.currency || ' ' || r.monthly_limit::text || ' '
                       || CASE WHEN r.hard_limit THEN 't' ELSE 'f' END || ' '
                       || array_to_string(r.thresholds, ',') || ' ' || r.tenant END;
    ELSE -- budget_alerts
        IF TG_OP = 'UPDATE' THEN
            PERFORM pg_notify('gm_entitlement', 'A ' || x || ' '
                || (extract(epoch FROM OLD.period_start) * 1000000)::bigint || ' '
                || OLD.threshold_percent || ' ' || OLD.monthly_limit::text || ' ' || OLD.currency
                || ' ' || OLD.tenant);
        END IF;
        p := CASE WHEN TG_OP = 'DELETE' THEN 'A ' ELSE 'a ' END || x || ' '
             || (extract(epoch FROM r.period_start) * 1000000)::bigint || ' '
             || r.threshold_percent || ' ' || r.monthly_limit::text || ' ' || r.currency || ' '
             || r.tenant;
    END IF;
    PERFORM pg_notify('gm_entitlement', p);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION gm.entitlement_notify IS 'Announces a committed change of gm.month_spend, gm.budgets or gm.budget_alerts on channel gm_entitlement (payload grammar: sql/0021; alerts carry the limit since sql/0023), for the API servers'' in-memory entitlement answer';

RESET ROLE;
