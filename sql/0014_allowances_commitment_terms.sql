-- 0014 allowances and commitment terms (docs/rating.md, "Free allowances" and "Commitments over
-- a term"): invoices may carry allowance lines (kind 'allowance': the free units of a contract's
-- free_allowances, a negative amount on the key of the usage line they fall on). The pro-rated
-- minimum of a partial month needs no column: the commitment line carries its amount and its
-- description the seconds it was pro-rated by.

SET ROLE gm_owner;

ALTER TABLE gm.invoice_lines DROP CONSTRAINT invoice_lines_kind_check;
ALTER TABLE gm.invoice_lines ADD CONSTRAINT invoice_lines_kind_check CHECK (kind IN
    ('usage', 'tier', 'allowance', 'discount', 'commitment', 'credit', 'adjustment'));
COMMENT ON COLUMN gm.invoice_lines.kind IS 'usage, tier, allowance (free units of the contract, <= 0), discount, commitment, credit, or adjustment (adjusted_kind names the kind it corrects)';

RESET ROLE;
