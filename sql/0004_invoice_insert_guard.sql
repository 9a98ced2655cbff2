-- 0004: an invoice is born a draft (security review): nobody, not even a leaked gm_api
-- credential, can INSERT an invoice that is already finalized or void, carries a number
-- (which would leave a gap in the issuer's series), or covers a period that is not one
-- whole UTC calendar month (a second invoice for a month by shifting its start).

SET ROLE gm_owner;

CREATE FUNCTION gm.invoice_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'draft' OR NEW.number IS NOT NULL OR NEW.number_seq IS NOT NULL
       OR NEW.finalized_at IS NOT NULL OR NEW.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'gm.invoices: a new invoice must be a draft without number (finalize it instead)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.period_start <> date_trunc('month', NEW.period_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
       OR NEW.period_end <> (date_trunc('month', NEW.period_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' THEN
        RAISE EXCEPTION 'gm.invoices: the period must be one whole UTC calendar month, got % to %',
            NEW.period_start, NEW.period_end USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION gm.invoice_insert_guard IS 'New invoices are drafts of one whole UTC month; numbers are given only by finalization';

CREATE TRIGGER invoices_insert_guard BEFORE INSERT ON gm.invoices
    FOR EACH ROW EXECUTE FUNCTION gm.invoice_insert_guard();

RESET ROLE;
