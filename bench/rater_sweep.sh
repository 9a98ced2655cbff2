#!/usr/bin/env bash
# Runs bench_rater over several batch sizes and draws the curve: end-to-end events/s and
# p99 produce->commit latency against batch size, beside the two COPY baselines of each run.
# Writes bench_rater_sweep.csv and .svg (and .png where Chromium is installed) in the
# current folder.
#
#   bash bench/rater_sweep.sh [build/release] [events=200000] [sizes="1000 2500 5000 10000 20000"]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build/release}
events=${2:-200000}
sizes=${3:-1000 2500 5000 10000 20000}
[ -x "$build/bench/bench_rater" ] || { echo "build bench_rater first: cmake --build $build --target bench_rater" >&2; exit 1; }
eval "$(bash "$repo/scripts/services.sh" env)"
out=bench_rater_sweep.csv
echo "batch,ceiling,ledger_copy,end_to_end,p50_ms,p99_ms" >"$out"
n=0 total=$(wc -w <<<"$sizes") t0=$SECONDS
for b in $sizes; do
    n=$((n + 1))
    printf '[%d/%d] batch %s (elapsed %ds)\n' "$n" "$total" "$b" $((SECONDS - t0)) >&2
    line=$("$build/bench/bench_rater" "$events" 6 "$b" 2>/dev/null | tee /dev/stderr | grep '^RESULT')
    echo "$line" | sed -E 's/RESULT batch=([0-9]+) ceiling=([0-9]+) ledger_copy=([0-9]+) end_to_end=([0-9]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+).*/\1,\2,\3,\4,\5,\6/' >>"$out"
done
python3 - "$out" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
W, H, L, R, T, B = 760, 420, 70, 70, 40, 60
xs = [int(r["batch"]) for r in rows]
ymax = max(max(float(r["ceiling"]), float(r["end_to_end"])) for r in rows) * 1.1
pmax = max(float(r["p99_ms"]) for r in rows) * 1.2 or 1
def X(i): return L + (W - L - R) * (i / max(1, len(rows) - 1))
def Y(v): return T + (H - T - B) * (1 - v / ymax)
def P(v): return T + (H - T - B) * (1 - v / pmax)
def line(key, f, color, dash=""):
    pts = " ".join(f"{X(i):.1f},{f(float(r[key])):.1f}" for i, r in enumerate(rows))
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" {dash} points="{pts}"/>' + "".join(
        f'<circle cx="{X(i):.1f}" cy="{f(float(r[key])):.1f}" r="3" fill="{color}"/>' for i, r in enumerate(rows))
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">gridmeter rater: Kafka to committed ledger, by batch size (2-core host)</text>']
for k in range(6):
    v = ymax * k / 5
    svg.append(f'<line x1="{L}" x2="{W-R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L-6}" y="{Y(v)+4:.1f}" text-anchor="end">{v/1000:.0f}k</text>')
    p = pmax * k / 5
    svg.append(f'<text x="{W-R+6}" y="{P(p)+4:.1f}">{p:.0f} ms</text>')
for i, x in enumerate(xs):
    svg.append(f'<text x="{X(i):.1f}" y="{H-B+18}" text-anchor="middle">{x}</text>')
svg.append(f'<text x="{W/2}" y="{H-20}" text-anchor="middle">messages per transaction</text>')
svg.append(f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">rows or events per second</text>')
svg.append(line("ceiling", Y, "#999", 'stroke-dasharray="4 3"'))
svg.append(line("ledger_copy", Y, "#e69f00", 'stroke-dasharray="6 3"'))
svg.append(line("end_to_end", Y, "#0072b2"))
svg.append(line("p99_ms", P, "#d55e00"))
legend = [("#999", "binary COPY, unindexed table (ceiling)"), ("#e69f00", "binary COPY of compact rows into gm.ledger_rows"),
          ("#0072b2", "rater end to end"), ("#d55e00", "p99 produce->commit at half load (right axis)")]
for i, (c, t) in enumerate(legend):
    svg.append(f'<rect x="{L+10}" y="{T+8+i*16}" width="12" height="3" fill="{c}"/><text x="{L+28}" y="{T+13+i*16}">{t}</text>')
svg.append("</svg>")
open(sys.argv[1].replace(".csv", ".svg"), "w").write("\n".join(svg))
PY
if command -v chromium >/dev/null; then
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --window-size=760,420 \
        --screenshot="$PWD/bench_rater_sweep.png" "file://$PWD/bench_rater_sweep.svg" >/dev/null 2>&1 || true
fi
cat "$out"
echo "curve: $PWD/bench_rater_sweep.svg" >&2
