-- 0018 identifiers: one rule per identifier in SQL as in C (common/gm_ident.h, docs/events.md
-- "Identifiers"). Tenant and site ids: 1 to 64 bytes of A-Z a-z 0-9 . _ -, first a letter or
-- digit; model and source ids: 1 to 128 bytes of A-Z a-z 0-9 . _ - : / @ + = ~.
-- Before this, gm.tenants allowed 128 bytes, and contracts, API keys and budgets any text:
-- a tenant created with a 65-byte id, or a contract for "Acme Corp", could never match an
-- event.
--
-- Existing rows. Each constraint is added NOT VALID (every new or changed row is checked at
-- once) and then validated in this migration when no stored row breaks it. Where rows do
-- break it, the constraint stays NOT VALID, the migration says how many with a WARNING, and
-- nothing is deleted or rewritten (a contract is immutable; such a tenant never had a usage
-- event, since no event can carry its id). docs/operations.md "Identifiers in stored rows"
-- has the query that lists them and the VALIDATE CONSTRAINT to run after an operator's fix.

SET ROLE gm_owner;

CREATE FUNCTION pg_temp.ident_check(tbl regclass, con text, expr text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%s) NOT VALID', tbl, con, expr);
    EXECUTE format('SELECT count(*) FROM %s WHERE NOT (%s)', tbl, expr) INTO bad;
    IF bad = 0 THEN
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', tbl, con);
    ELSE
        RAISE WARNING 'sql/0018: % rows of % break %: the constraint is left NOT VALID (new rows are checked)',
            bad, tbl, con
            USING HINT = 'docs/operations.md "Identifiers in stored rows" lists them and how to validate';
    END IF;
END $$;

ALTER TABLE gm.tenants DROP CONSTRAINT IF EXISTS tenants_tenant_check; -- was 1 to 128 bytes
SELECT pg_temp.ident_check('gm.tenants', 'tenants_tenant_ident',
                           $r$tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'$r$);
SELECT pg_temp.ident_check('gm.contracts', 'contracts_tenant_ident',
                           $r$tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'$r$);
SELECT pg_temp.ident_check('gm.api_keys', 'api_keys_tenant_ident',
                           $r$tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'$r$);
SELECT pg_temp.ident_check('gm.budgets', 'budgets_tenant_ident',
                           $r$tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'$r$);
-- The ledger's interned names: kind 1 tenant, 2 site, 3 model, 4 source (checked once per
-- new name, not per ledger row).
SELECT pg_temp.ident_check('gm.ledger_names', 'ledger_names_ident',
                           $r$CASE kind
                                WHEN 1 THEN name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
                                WHEN 2 THEN name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
                                WHEN 3 THEN name ~ '^[A-Za-z0-9._:/@+=~-]{1,128}$'
                                WHEN 4 THEN name ~ '^[A-Za-z0-9._:/@+=~-]{1,128}$'
                              END$r$);
SELECT pg_temp.ident_check('gm.gpu_windows', 'gpu_windows_ident',
                           $r$tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
                              AND site ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
                              AND source ~ '^[A-Za-z0-9._:/@+=~-]{1,128}$'$r$);

COMMENT ON CONSTRAINT tenants_tenant_ident ON gm.tenants IS 'The tenant id rule of docs/events.md "Identifiers": 1 to 64 bytes of A-Z a-z 0-9 . _ -, first a letter or digit';
COMMENT ON CONSTRAINT contracts_tenant_ident ON gm.contracts IS 'The tenant id rule of docs/events.md "Identifiers"';
COMMENT ON CONSTRAINT ledger_names_ident ON gm.ledger_names IS 'Tenant, site, model and source rules of docs/events.md "Identifiers", by kind';

DROP FUNCTION pg_temp.ident_check(regclass, text, text);

RESET ROLE;
