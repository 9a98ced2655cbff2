#!/usr/bin/env bash
# Is the rater's throughput flat as the ledger grows? Runs bench_rater once over `events`
# events (an empty ledger at the start) and draws its growth curve: events/s of each tenth of
# the run against the ledger's size when that tenth began, with the band of +-15% around the
# run's median. Writes bench_rater_growth.csv and .svg (and .png where Chromium is installed)
# in the current folder. The issue's full run is 50M events (about 3 hours on 2 cores):
#
#   bash bench/ledger_growth.sh [build/release] [events=2000000] [partitions=6] [batch=10000]
#   bash bench/ledger_growth.sh build/release 50000000
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build/release}
events=${2:-2000000}
partitions=${3:-6}
batch=${4:-10000}
[ -x "$build/bench/bench_rater" ] || { echo "build bench_rater first: cmake --build $build --target bench_rater" >&2; exit 1; }
eval "$(bash "$repo/scripts/services.sh" env)"
echo "ledger_growth: $events events, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$build/bench/bench_rater" "$events" "$partitions" "$batch"
python3 - bench_rater_growth.csv "$events" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
W, H, L, R, T, B = 760, 420, 80, 30, 40, 60
xs = [float(r["ledger_events"]) for r in rows]
ys = [float(r["events_per_s"]) for r in rows]
med = sorted(ys)[len(ys) // 2]
xmax = max(xs) * 1.05 or 1
ymax = max(max(ys), med * 1.15) * 1.15
def X(v): return L + (W - L - R) * v / xmax
def Y(v): return T + (H - T - B) * (1 - v / ymax)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">gridmeter rater: events/s as the ledger grows ({int(sys.argv[2]):,} events, 2-core host)</text>',
       f'<rect x="{L}" y="{Y(med*1.15):.1f}" width="{W-L-R}" height="{Y(med*0.85)-Y(med*1.15):.1f}" fill="#0072b2" opacity="0.08"/>']
for k in range(6):
    v = ymax * k / 5
    svg.append(f'<line x1="{L}" x2="{W-R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L-6}" y="{Y(v)+4:.1f}" text-anchor="end">{v/1000:.0f}k</text>')
    x = xmax * k / 5
    svg.append(f'<text x="{X(x):.1f}" y="{H-B+18}" text-anchor="middle">{x/1e6:.1f}M</text>')
svg.append(f'<text x="{W/2}" y="{H-20}" text-anchor="middle">events in the ledger</text>')
svg.append(f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">events per second</text>')
pts = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in zip(xs, ys))
svg.append(f'<polyline fill="none" stroke="#0072b2" stroke-width="2" points="{pts}"/>')
svg += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="#0072b2"/>' for x, y in zip(xs, ys)]
svg.append(f'<text x="{L+10}" y="{T+14}">band: median +-15% ({med*0.85:,.0f} to {med*1.15:,.0f} events/s)</text>')
svg.append("</svg>")
open(sys.argv[1].replace(".csv", ".svg"), "w").write("\n".join(svg))
out = [y for y in ys if abs(y - med) > 0.15 * med]
print(f"ledger_growth: median {med:,.0f} events/s, min {min(ys):,.0f}, max {max(ys):,.0f}; "
      f"{len(out)} of {len(ys)} tenths outside +-15%")
PY
if command -v chromium >/dev/null; then
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --window-size=760,420 \
        --screenshot="$PWD/bench_rater_growth.png" "file://$PWD/bench_rater_growth.svg" >/dev/null 2>&1 || true
fi
echo "curve: $PWD/bench_rater_growth.svg" >&2
