-- 0021 entitlement push: every committed change of a month's spend, a budget or a budget
-- alert is announced on the channel gm_entitlement (NOTIFY is delivered at COMMIT, in commit
-- order, never for a rolled-back transaction), so that each API server keeps the entitlement
-- answer in memory without polling (api/entitlement.c; docs/api.md, "Budgets and alerts").
--
-- Payloads (space-separated, the tenant last so that any stored tenant text survives):
--   s <xid> <period_us> <currency> <amount> <updated_us> <tenant>   month_spend row now
--   S <xid> <period_us> <currency> - - <tenant>                     month_spend row deleted
--   b <xid> <currency> <monthly_limit> <t|f hard> <thresholds,> <tenant>   budget now
--   B <xid> <tenant>                                                budget deleted
--   a <xid> <period_us> <percent> <tenant>                          alert inserted
--   A <xid> <period_us> <percent> <tenant>                          alert deleted
--   r <xid>                                                         table truncated: reload
-- <xid> is pg_current_xact_id() of the writing transaction: a listener that read a snapshot
-- skips the notifications of transactions that snapshot already saw. Amounts are the
-- numeric's text (exact). The API servers' own heartbeats (h ...) use the same channel.

SET ROLE gm_owner;

CREATE FUNCTION gm.entitlement_notify() RETURNS trigger LANGUAGE plpgsql
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
                || OLD.threshold_percent || ' ' || OLD.tenant);
        END IF;
        p := CASE WHEN TG_OP = 'DELETE' THEN 'A ' ELSE 'a ' END || x || ' '
             || (extract(epoch FROM r.period_start) * 1000000)::bigint || ' '
             || r.threshold_percent || ' ' || r.tenant;
    END IF;
    PERFORM pg_notify('gm_entitlement', p);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION gm.entitlement_notify IS 'Announces a committed change of gm.month_spend, gm.budgets or gm.budget_alerts on channel gm_entitlement (payload grammar: sql/0021), for the API servers'' in-memory entitlement answer';

CREATE TRIGGER month_spend_entitlement AFTER INSERT OR UPDATE OR DELETE ON gm.month_spend
    FOR EACH ROW EXECUTE FUNCTION gm.entitlement_notify();
CREATE TRIGGER budgets_entitlement AFTER INSERT OR UPDATE OR DELETE ON gm.budgets
    FOR EACH ROW EXECUTE FUNCTION gm.entitlement_notify();
CREATE TRIGGER budget_alerts_entitlement AFTER INSERT OR UPDATE OR DELETE ON gm.budget_alerts
    FOR EACH ROW EXECUTE FUNCTION gm.entitlement_notify();
CREATE TRIGGER month_spend_entitlement_truncate AFTER TRUNCATE ON gm.month_spend
    FOR EACH STATEMENT EXECUTE FUNCTION gm.entitlement_notify();
CREATE TRIGGER budgets_entitlement_truncate AFTER TRUNCATE ON gm.budgets
    FOR EACH STATEMENT EXECUTE FUNCTION gm.entitlement_notify();
CREATE TRIGGER budget_alerts_entitlement_truncate AFTER TRUNCATE ON gm.budget_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION gm.entitlement_notify();

RESET ROLE;
