-- 0019 epochs are closed by accepted events only: 0015 let a higher epoch that holds no
-- accepted event (a message refused as a conflict under it, e.g. a re-send with another
-- data.epoch) close the source's live epoch, so audit.source_epochs showed the live epoch
-- with a next_epoch and audit.source_gaps listed a tail for it. Both views are 0015's
-- definitions with `n.events > 0` added where a later epoch closes an earlier one.

SET ROLE gm_owner;

CREATE OR REPLACE VIEW audit.source_gaps AS
SELECT s.source,
       lower(g.r)     AS first_missing,
       upper(g.r) - 1 AS last_missing,
       s.epoch,
       'gap'::text    AS kind
FROM gm.sources s,
     LATERAL (SELECT coalesce(range_agg(int8range(r.seq, r.seq + 1)), '{}'::int8multirange) AS m
              FROM gm.rejected_events r
              WHERE r.source = s.source AND r.epoch = s.epoch AND r.seq IS NOT NULL) rj,
     LATERAL unnest(int8multirange(int8range(1, upper(s.seqs))) - s.seqs - rj.m) AS g(r)
UNION ALL
SELECT s.source,
       upper(s.seqs),
       NULL::bigint,
       s.epoch,
       'tail'
FROM gm.sources s
WHERE EXISTS (SELECT 1 FROM gm.sources n
              WHERE n.source = s.source AND n.epoch > s.epoch AND n.events > 0);
COMMENT ON VIEW audit.source_gaps IS
    'Per source and epoch: ranges of data.seq below the epoch''s highest accepted seq that never arrived (kind gap; seqs that arrived and were rejected are in audit.rejected_events, not here; a range closes when a late event fills it), and for an epoch that a later epoch of the source closed (a higher epoch with at least one accepted event), its tail (kind tail): from first_missing on, events the node may have sent before it lost its state never arrived; last_missing NULL: how many cannot be known. A new epoch is not a gap of the old one.';

CREATE OR REPLACE VIEW audit.source_epochs AS
SELECT s.source,
       s.epoch,
       lower(s.seqs)     AS first_seq,
       upper(s.seqs) - 1 AS last_seq,
       s.events          AS accepted,
       s.duplicates,
       c.conflicting,
       c.rejected,
       c.missing,
       s.first_time,
       s.last_time,
       s.first_seen,
       s.last_seen,
       (SELECT min(n.epoch) FROM gm.sources n
         WHERE n.source = s.source AND n.epoch > s.epoch AND n.events > 0)
           AS next_epoch,
       s.tenant
FROM gm.sources s
JOIN audit.source_completeness c ON c.source = s.source AND c.epoch = s.epoch;
COMMENT ON VIEW audit.source_epochs IS
    'One row per source and epoch (data.epoch): the seq range received, counts (accepted, duplicates, conflicting, rejected, missing), the first and last event time, when the rater first and last saw it, and the epoch that followed it (next_epoch: the next higher epoch with at least one accepted event; NULL: the current epoch). An epoch with a next_epoch is closed: its tail is in audit.source_gaps (kind tail). A higher epoch that holds only conflicts or rejects closes nothing';

RESET ROLE;
