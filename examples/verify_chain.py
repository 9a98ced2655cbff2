#!/usr/bin/env python3
"""Independent verifier of gridmeter's hash chains (scheme 1, docs/auditors.md "Tamper evidence").

Standard library only: rows are read with `psql` (each row as one JSON array, so that NULLs and
exact decimals survive), canonical bytes are rebuilt here from the raw column values, hashed with
hashlib.sha256 and compared with the stored digests and links. Checks: every batch digest and
link, every ledger row and rejected message lies in a chained batch (a row a replay wrote: in
the replay chain entry that lists its reject), every replay digest and link, every replay mark
listed once, every document digest and link, and (with --anchor) the anchored heads.

    python3 examples/verify_chain.py --db "host=... dbname=gridmeter user=..." [--anchor FILE]

Exit status: 0 sound, 1 a mismatch (the first is printed), 2 the check could not run.
"""
import argparse
import datetime
import hashlib
import json
import subprocess
import sys

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def rows(db, sql):
    """The rows of `SELECT json_build_array(...)`, decoded with decimals kept as text."""
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                         check=True, capture_output=True, text=True, encoding="utf-8").stdout
    return [json.loads(line, parse_float=str, parse_int=str) for line in out.split("\n") if line]


def us(ts):
    """An ISO timestamp from PostgreSQL's JSON -> integer microseconds since the epoch, as text."""
    if ts is None:
        return None
    dt = datetime.datetime.fromisoformat(ts)
    return str((dt - EPOCH) // datetime.timedelta(microseconds=1))


def dec(s):
    """Canonical decimal: no trailing fraction zeros, no trailing point."""
    if s is None:
        return None
    s = str(s)
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def f(v):
    """A field: byte length, ':', the UTF-8 bytes; NULL is '-'."""
    if v is None:
        return b"-"
    b = str(v).encode("utf-8")
    return str(len(b)).encode() + b":" + b


def hexbytes(v):
    return None if v is None else v[2:]  # PostgreSQL's JSON of bytea is "\\x..."


def lrec(r):
    """The L record of a ledger row (columns as selected in Verifier.batches)."""
    return (b"L" + f(r[2]) + f(r[3]) + f(us(r[4])) + b"".join(f(x) for x in r[5:19])
            + b"".join(f(dec(x)) for x in r[19:23]) + f(r[23]) + f(r[25]) + f(r[26]) + f(r[27])
            + (f(r[28]) if int(r[28]) != 0 else b"")  # data.epoch, only when not 0 (sql/0015)
            + b"\n")


def xrec(r):
    """The X record of a gm.conflicting_events row (columns as selected in Verifier.batches)."""
    return b"X" + f(r[2]) + f(hexbytes(r[3])) + f(hexbytes(r[4])) + f(hexbytes(r[5])) + f(r[6]) + b"\n"


def j(v):
    return "null" if v is None else json.dumps(v, ensure_ascii=False)


ZERO = "0" * 64


class Verifier:
    def __init__(self, db):
        self.db = db
        self.problems = []
        self.replayed_rows = {}  # (topic, partition, offset) -> ledger row written by a replay
        self.replay_covered = set()
        self.replayed_conflicts = {}  # (topic, partition, offset) -> conflict a replay kept

    def problem(self, msg):
        self.problems.append(msg)

    def batches(self):
        bs = rows(self.db, "SELECT json_build_array(group_id, topic, partition, seq, from_offset, next_offset,"
                           " rows, rejects, duplicates, input_tokens, cached_tokens, output_tokens, gpu_us,"
                           " amount_input, amount_cached, amount_output, amount_gpu, charges,"
                           " encode(prev_digest, 'hex'), encode(digest, 'hex'), conflicts)"
                           " FROM gm.chain_batches ORDER BY group_id, topic, partition, seq")
        led = rows(self.db, "SELECT json_build_array(kafka_topic, kafka_partition, kafka_offset, tenant, event_time,"
                            " source, event_id, seq, site, model, request_id, input_tokens, cached_tokens,"
                            " output_tokens, gpu_us, site_tier, card_id, card_version, currency, amount_input,"
                            " amount_cached, amount_output, amount_gpu, flags, EXISTS (SELECT 1 FROM"
                            " gm.rejected_events r WHERE r.kafka_topic = l.kafka_topic AND r.kafka_partition ="
                            " l.kafka_partition AND r.kafka_offset = l.kafka_offset AND r.replay_outcome = 'rated'"
                            " AND r.replayed_kafka_topic = l.kafka_topic AND r.replayed_kafka_partition ="
                            " l.kafka_partition AND r.replayed_kafka_offset = l.kafka_offset),"
                            " reasoning_tokens, cache_write_tokens, service_tier, epoch) FROM gm.ledger l")
        rej = rows(self.db, "SELECT json_build_array(kafka_topic, kafka_partition, kafka_offset, kafka_key, payload,"
                            " reason) FROM gm.rejected_events")
        cfl = rows(self.db, "SELECT json_build_array(kafka_topic, kafka_partition, kafka_offset, kafka_key, payload,"
                            " fingerprint, kind, EXISTS (SELECT 1 FROM"
                            " gm.rejected_events r WHERE r.kafka_topic = x.kafka_topic AND r.kafka_partition ="
                            " x.kafka_partition AND r.kafka_offset = x.kafka_offset AND r.replay_outcome = 'conflict'"
                            " AND r.replayed_kafka_topic = x.kafka_topic AND r.replayed_kafka_partition ="
                            " x.kafka_partition AND r.replayed_kafka_offset = x.kafka_offset))"
                            " FROM gm.conflicting_events x")
        by_part = {}
        for r in cfl:
            if r[7]:  # kept by a replay at its reject's coordinates: see replays()
                self.replayed_conflicts[(r[0], int(r[1]), int(r[2]))] = r
                continue
            by_part.setdefault((r[0], int(r[1])), []).append(("X", int(r[2]), r))
        for r in led:
            if r[24]:  # written by a replay at its reject's coordinates: see replays()
                self.replayed_rows[(r[0], int(r[1]), int(r[2]))] = r
                continue
            by_part.setdefault((r[0], int(r[1])), []).append(("L", int(r[2]), r))
        for r in rej:
            by_part.setdefault((r[0], int(r[1])), []).append(("R", int(r[2]), r))
        for recs in by_part.values():
            recs.sort(key=lambda x: x[1])
        covered = set()
        prev = None
        for b in bs:
            group, topic, part, seq, frm, nxt = b[0], b[1], int(b[2]), int(b[3]), int(b[4]), int(b[5])
            name = "batch %s/%s/%d #%d" % (group, topic, part, seq)
            if prev and prev[:3] == (group, topic, part):
                if seq != prev[3] + 1 or b[18] != prev[4] or frm != prev[5]:
                    self.problem("%s: does not follow #%d (link, seq or offsets)" % (name, prev[3]))
            elif seq != 1 or b[18] != ZERO:
                self.problem("batch chain %s/%s/%d starts at #%d, not #1" % (group, topic, part, seq))
            prev = (group, topic, part, seq, b[19], nxt)
            h = hashlib.sha256()  # the records' digest, then the header that names it
            recs = [r for r in by_part.get((topic, part), []) if frm <= r[1] < nxt]
            for kind, off, r in recs:
                if kind == "L":
                    covered.add(("L", topic, part, off))
                    h.update(lrec(r))
            for kind, off, r in recs:
                if kind == "R":
                    covered.add(("R", topic, part, off))
                    h.update(b"R" + f(off) + f(hexbytes(r[3])) + f(hexbytes(r[4])) + f(r[5]) + b"\n")
            for kind, off, r in recs:
                if kind == "X":
                    covered.add(("X", topic, part, off))
                    h.update(xrec(r))
            charges = b[17] if isinstance(b[17], list) else json.loads(b[17])
            for c in charges:
                h.update(b"C" + b"".join(f(x) for x in c) + b"\n")
            header = (b"B" + f("1") + f(group) + f(topic) + f(part) + f(seq) + f(frm) + f(nxt) + f(b[6]) + f(b[7])
                      + f(b[8]) + f(b[20]) + b"".join(f(dec(x)) for x in b[9:17]) + f(b[18]) + f(h.hexdigest()) + b"\n")
            got = hashlib.sha256(header).hexdigest()
            if got != b[19]:
                self.problem("%s (offsets %d..%d): digest recorded %s, recomputed %s" % (
                    name, frm, nxt - 1, b[19][:16], got[:16]))
        for (topic, part), recs in sorted(by_part.items()):
            for kind, off, r in recs:
                if (kind, topic, part, off) not in covered:
                    self.problem("%s %s/%d@%d is in no chained batch" % (
                        {"L": "ledger row", "R": "rejected message", "X": "conflicting message"}[kind],
                        topic, part, off))
        return len(bs), len(led)

    def replays(self):
        """The chain "replay": links, digests from the rejects' marks and the rows they rated,
        and every replay mark listed by exactly one entry."""
        es = rows(self.db, "SELECT json_build_array(seq, topic, partitions, offsets, rows, duplicates, conflicts,"
                           " charges, encode(prev_digest, 'hex'), encode(digest, 'hex'))"
                           " FROM gm.chain_replays ORDER BY seq")
        marks = {}
        for r in rows(self.db, "SELECT json_build_array(kafka_topic, kafka_partition, kafka_offset, replay_outcome,"
                               " replayed_kafka_topic, replayed_kafka_partition, replayed_kafka_offset)"
                               " FROM gm.rejected_events WHERE replayed_at IS NOT NULL"):
            marks[(r[0], int(r[1]), int(r[2]))] = r[3:]
        listed = {}
        prev = None
        for e in es:
            seq, topic = int(e[0]), e[1]
            if prev is None:
                if seq != 1 or e[8] != ZERO:
                    self.problem("replay chain starts at #%d, not #1" % seq)
            elif seq != prev[0] + 1 or e[8] != prev[1]:
                self.problem("replay #%d: does not follow #%d (link or seq)" % (seq, prev[0]))
            prev = (seq, e[9])
            h = hashlib.sha256()
            for p, o in zip(e[2], e[3]):
                key = (topic, int(p), int(o))
                listed[key] = listed.get(key, 0) + 1
                m = marks.get(key, [None, None, None, None])
                h.update(b"M" + f(p) + f(o) + b"".join(f(x) for x in m) + b"\n")
                if m[0] == "rated" and key in self.replayed_rows:
                    h.update(lrec(self.replayed_rows[key]))
                    self.replay_covered.add(key)
                elif m[0] == "conflict" and key in self.replayed_conflicts:
                    h.update(xrec(self.replayed_conflicts[key]))
            charges = e[7] if isinstance(e[7], list) else json.loads(e[7])
            for c in charges:
                h.update(b"C" + b"".join(f(x) for x in c) + b"\n")
            header = (b"P" + f("1") + f(topic) + f(seq) + f(e[4]) + f(e[5]) + f(e[6]) + f(e[8])
                      + f(h.hexdigest()) + b"\n")
            got = hashlib.sha256(header).hexdigest()
            if got != e[9]:
                self.problem("replay #%d: digest recorded %s, recomputed %s" % (seq, e[9][:16], got[:16]))
        for key in sorted(marks):
            if listed.get(key, 0) != 1:
                self.problem("replay mark of %s/%d@%d is listed by %d replay entries, not 1" % (
                    key + (listed.get(key, 0),)))
        for key in sorted(self.replayed_rows):
            if key not in self.replay_covered:
                self.problem("ledger row %s/%d@%d carries a replay mark no replay entry covers" % key)
        return len(es)

    def doc_json(self, kind, doc_id):
        lit = "'" + doc_id.replace("'", "''") + "'"
        if kind == "invoice":
            keys = ["invoice_id", "tenant", "issuer", "number", "number_seq", "period_start", "period_end", "currency",
                    "minor_units", "total", "total_minor", "usage_exact", "credit_balance_before_minor",
                    "credit_balance_after_minor", "ledger_events", "ledger_amount", "created_at", "finalized_at"]
            times, decs = {"period_start", "period_end", "created_at", "finalized_at"}, set(keys[9:16])
            sub = ("lines", ["line_no", "kind", "adjusted_kind", "description", "dimension", "model", "site_tier",
                             "card_version", "band", "quantity", "unit_price", "amount_exact", "amount",
                             "amount_minor", "discount_minor", "credit_minor", "corrects_period"],
                   "gm.invoice_lines WHERE invoice_id = %s ORDER BY line_no" % lit)
            table = "gm.invoices WHERE invoice_id = " + lit
        elif kind == "credit_note":
            keys = ["credit_note_id", "invoice_id", "tenant", "number", "number_seq", "currency", "amount",
                    "amount_minor", "reason", "created_at"]
            times, decs, sub = {"created_at"}, {"amount", "amount_minor"}, None
            table = "gm.credit_notes WHERE credit_note_id = " + lit
        else:
            keys = ["run_id", "period_start", "tenant", "requested_by", "reason", "created_at", "tenants",
                    "lines_changed", "delta_exact", "delta_minor"]
            times, decs = {"period_start", "created_at"}, {"delta_exact"}
            sub = ("corrections", ["correction_id", "tenant", "period_start", "invoice_id", "invoice_status", "kind",
                                   "dimension", "model", "site_tier", "card_version", "band", "currency",
                                   "quantity_before", "quantity_after", "unit_price_before", "unit_price_after",
                                   "amount_exact_before", "amount_exact_after", "amount_minor_before",
                                   "amount_minor_after"],
                   "gm.rerating_corrections WHERE run_id::text = %s ORDER BY correction_id" % lit)
            table = "gm.rerating_runs WHERE run_id::text = " + lit
        sub_times = {"corrects_period", "period_start"}
        sub_decs = {"quantity", "unit_price", "amount_exact", "amount", "amount_minor", "discount_minor",
                    "credit_minor", "quantity_before", "quantity_after", "unit_price_before", "unit_price_after",
                    "amount_exact_before", "amount_exact_after", "amount_minor_before", "amount_minor_after"}

        def obj(cols, vals, times, decs):
            out = []
            for k, v in zip(cols, vals):
                if v is not None and k in times:
                    v = us(v)
                elif v is not None and k in decs:
                    v = dec(v)
                elif v is not None and not isinstance(v, str):
                    v = json.dumps(v, separators=(", ", ": ")) if isinstance(v, (dict, list)) else str(v)
                out.append(j(k) + ":" + j(v))
            return ",".join(out)

        def select(cols, frm):
            # delta_minor (jsonb) as PostgreSQL prints it, the rest as JSON values
            return "SELECT json_build_array(%s) FROM %s" % (
                ", ".join("delta_minor::text" if c == "delta_minor" else c for c in cols), frm)

        main = rows(self.db, select(keys, table))
        if len(main) != 1:
            return None
        text = "{" + obj(keys, main[0], times, decs)
        if sub:
            key, cols, frm = sub
            text += "," + j(key) + ":[" + ",".join(
                "{" + obj(cols, r, sub_times, sub_decs) + "}" for r in rows(self.db, select(cols, frm))) + "]"
        return text + "}"

    def documents(self):
        ds = rows(self.db, "SELECT json_build_array(chain, seq, kind, doc_id, number, encode(prev_digest, 'hex'),"
                           " encode(digest, 'hex')) FROM gm.chain_documents ORDER BY chain, seq")
        prev = None
        for chain, seq, kind, doc_id, number, pd, dg in ds:
            seq = int(seq)
            if prev and prev[0] == chain:
                if seq != prev[1] + 1 or pd != prev[2]:
                    self.problem("document %s #%d: does not follow #%d" % (chain, seq, prev[1]))
            elif seq != 1 or pd != ZERO:
                self.problem("document chain %s starts at #%d, not #1" % (chain, seq))
            prev = (chain, seq, dg)
            doc = self.doc_json(kind, doc_id)
            if doc is None:
                self.problem("document %s #%d: %s %s is gone" % (chain, seq, kind, doc_id))
                continue
            head = b"D" + f("1") + f(chain) + f(seq) + f(kind) + f(doc_id) + f(pd) + b"\n"
            got = hashlib.sha256(head + doc.encode("utf-8")).hexdigest()
            if got != dg:
                self.problem("document %s #%d: %s %s %s: digest recorded %s, recomputed %s" % (
                    chain, seq, kind, doc_id, number or "", dg[:16], got[:16]))
        return len(ds)

    def anchor(self, path):
        heads = {}
        for chain, seq, dg in rows(self.db, "SELECT json_build_array('batch:' || group_id || '/' || topic || '/'"
                                            " || partition, seq, encode(digest, 'hex')) FROM gm.chain_batches"
                                            " UNION ALL SELECT json_build_array(chain, seq, encode(digest, 'hex'))"
                                            " FROM gm.chain_documents UNION ALL SELECT json_build_array("
                                            "'replay', seq, encode(digest, 'hex')) FROM gm.chain_replays"):
            heads[(chain, int(seq))] = dg
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.rstrip("\r\n")
                if not line or line.startswith("#"):
                    continue
                chain, seq, dg = line.split("\t")
                have = heads.get((chain, int(seq)))
                if have is None:
                    self.problem("anchor: chain %s had #%s, the database has no #%s" % (chain, seq, seq))
                elif have != dg:
                    self.problem("anchor: chain %s #%s was %s, the database holds %s" % (chain, seq, dg[:16],
                                                                                          have[:16]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="", help="libpq conninfo (default: PG* environment)")
    ap.add_argument("--anchor", help="an anchor file written by `gridmeter audit anchor`")
    a = ap.parse_args()
    v = Verifier(a.db)
    try:
        n_b, n_rows = v.batches()
        n_r = v.replays()
        n_d = v.documents()
        if a.anchor:
            v.anchor(a.anchor)
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        print("verify_chain: could not verify: %s %s" % (e, getattr(e, "stderr", "") or ""), file=sys.stderr)
        return 2
    print("verified %d batches (%d ledger rows), %d replays and %d documents" % (n_b, n_rows, n_r, n_d))
    if v.problems:
        print("MISMATCH (%d found); the first: %s" % (len(v.problems), v.problems[0]))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
