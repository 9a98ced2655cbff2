-- 0025 audit.reconciliation on a void invoice: the view showed its charges as billed (billed
-- 0.80, unbilled 0, invoiced 0.80) while docs/auditors.md (the contract shared with outside
-- auditors) says a period whose invoice is void is unbilled and invoiced_amount is what
-- finalized invoices billed. Re-created from its newest definition (sql/0017), columns
-- unchanged and in the same order: invoiced counts finalized invoices only; a snapshot taken by
-- a void invoice does not count as billed; a period whose own invoice is void has billed 0,
-- waiting 0 and all its charges unbilled.

SET ROLE gm_owner;

CREATE OR REPLACE VIEW audit.reconciliation AS
WITH ledger AS (
    SELECT tenant, period_start, currency, sum(events)::bigint AS events, sum(amount) AS ledger_amount,
           sum(window_amount) AS window_amount
    FROM (SELECT tenant, gm.month_of(event_time) AS period_start,
                 currency, count(*) AS events,
                 sum(amount_input + amount_cached + amount_output + amount_gpu
                     + amount_cache_write + amount_reasoning + amount_request) AS amount,
                 0::numeric AS window_amount
          FROM gm.ledger GROUP BY 1, 2, 3
          UNION ALL
          -- the charged GPU windows (gpu_basis, docs/rating.md): their charges are in
          -- gm.charges beside the ledger's
          SELECT tenant, gm.month_of(window_start), charge_currency, 0, sum(charge_amount),
                 sum(charge_amount)
          FROM gm.gpu_windows WHERE charge_amount IS NOT NULL GROUP BY 1, 2, 3) u
    GROUP BY 1, 2, 3
), charged AS (
    SELECT tenant, gm.month_of(day) AS period_start,
           currency, sum(amount) AS charged_amount
    FROM gm.charges_daily GROUP BY 1, 2, 3
), invoiced AS (
    SELECT i.tenant, coalesce(l.corrects_period, i.period_start) AS period_start,
           sum(l.amount_exact) FILTER (WHERE coalesce(l.adjusted_kind, l.kind) IN ('usage', 'tier')) AS invoiced_amount,
           sum(l.amount) AS invoiced_rounded
    FROM gm.invoices i JOIN gm.invoice_lines l USING (invoice_id)
    WHERE i.status = 'finalized' -- a void invoice billed nothing (docs/auditors.md)
    GROUP BY 1, 2
), snap AS (
    SELECT DISTINCT ON (ps.tenant, ps.period_start) ps.tenant, ps.period_start, ps.amount
    FROM gm.period_snapshots ps JOIN gm.invoices si ON si.invoice_id = ps.invoice_id
    WHERE si.status <> 'void' -- what a void invoice billed is not billed
    ORDER BY ps.tenant, ps.period_start, ps.taken_at DESC, ps.invoice_id
), base AS (
    SELECT coalesce(l.tenant, c.tenant)               AS tenant,
           coalesce(l.period_start, c.period_start)   AS period_start,
           coalesce(l.currency, c.currency)           AS currency,
           coalesce(l.events, 0)                      AS events,
           coalesce(l.ledger_amount, 0)               AS ledger_amount,
           coalesce(l.window_amount, 0)               AS window_amount,
           coalesce(c.charged_amount, 0)              AS charged_amount
    FROM ledger l FULL JOIN charged c USING (tenant, period_start, currency)
), parts AS (
    SELECT b.*,
           b.charged_amount - CASE WHEN own.status = 'void' THEN 0
                                   ELSE coalesce(s.amount, 0) END AS rest,
           CASE WHEN own.status = 'void' THEN 0 ELSE coalesce(s.amount, 0) END AS billed,
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
       p.rest - p.waiting AS unbilled_amount,
       p.window_amount AS gpu_window_amount
FROM split p
LEFT JOIN invoiced iv ON iv.tenant = p.tenant AND iv.period_start = p.period_start;

RESET ROLE;
