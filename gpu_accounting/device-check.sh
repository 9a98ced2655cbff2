#!/usr/bin/env bash
# gpu_accounting device check: builds and runs, on one machine with an NVIDIA GPU, in under
# 5 minutes:
#   1. test_gpu_cuda: the CUDA bulk path against the C reference (unit cases, bit-identical);
#   2. overlap: two tenants launch kernels on two streams with deliberate overlap under the
#      real CUPTI collector; attributed times vs cudaEvent timings and vs busy time;
#   3. bulk: the CUDA sweep against the C reference on 100 million synthetic records;
#   4. overhead: CUPTI collector overhead on a kernel-heavy loop (launches/s off vs on);
#   5. throughput: C attribution on one core and CUDA attribution, records/s.
# It prints a summary at the end (and writes it to $OUT/summary.txt when OUT is set).
#
# Build: CMake (Release) when the project configures here; otherwise a direct nvcc/cc build of
# just gm_common + gm_gpu + the check programs (the Check tests are then not built).
# Environment: GM_DEVCHECK_SPANS (default 100000000), GM_DEVCHECK_BUILD (build dir),
# GM_DEVCHECK_DIRECT=1 (skip CMake, build directly),
# GRIDMETER_CUPTI_PATH (libcupti; found under the CUDA toolkit when unset).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GM_DEVCHECK_BUILD:-$ROOT/build-devcheck}
SPANS=${GM_DEVCHECK_SPANS:-100000000}
OUTDIR=${OUT:-$BUILD/out}
mkdir -p "$BUILD" "$OUTDIR"
LOG=$OUTDIR/device-check.log
: >"$LOG"
T0=$(date +%s)
declare -a SUMMARY=()

say() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - T0)); }
note() { SUMMARY+=("$1"); }

# run NAME TIMEOUT CMD...: runs a step, keeps its output, records PASS/FAIL/SKIP
run_step() {
    local name=$1 limit=$2
    shift 2
    say ""
    say "=== $name ($(elapsed) s) : $*"
    local t=$(date +%s)
    timeout "$limit" "$@" >"$OUTDIR/$name.out" 2>&1
    local rc=$?
    tee -a "$LOG" <"$OUTDIR/$name.out" | tail -40
    local st=FAIL
    [ $rc -eq 0 ] && st=PASS
    [ $rc -eq 77 ] && st=SKIP
    [ $rc -eq 124 ] && st="FAIL (timeout ${limit}s)"
    note "$(printf '%-10s %-22s %4ss' "$name" "$st" $(($(date +%s) - t)))"
    return $rc
}

say "gridmeter gpu_accounting device check, $(date -u +%FT%TZ)"
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | tee -a "$LOG"
NVCC=$(command -v nvcc || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -z "$NVCC" ]; then
    say "no nvcc: cannot build the CUDA path"
    exit 77
fi
"$NVCC" --version | tail -2 | tee -a "$LOG"
# the toolkit: $CUDA_HOME, else the one whose include/ has cuda_runtime.h next to nvcc or in
# /usr/local/cuda (nvcc may be a wrapper script elsewhere)
if [ -z "${CUDA_HOME:-}" ]; then
    for d in "$(dirname "$(readlink -f "$NVCC")")/.." /usr/local/cuda /usr/local/cuda-*; do
        if [ -f "$d/include/cuda_runtime.h" ]; then
            CUDA_HOME=$(cd "$d" && pwd)
            break
        fi
    done
fi
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
say "CUDA toolkit: $CUDA_HOME"
if [ -z "${GRIDMETER_CUPTI_PATH:-}" ]; then
    GRIDMETER_CUPTI_PATH=$(find "$CUDA_HOME" /usr/local/cuda* /usr/lib/x86_64-linux-gnu \
        -name 'libcupti.so*' 2>/dev/null | sort | head -1)
fi
export GRIDMETER_CUPTI_PATH
[ -n "$GRIDMETER_CUPTI_PATH" ] &&
    export LD_LIBRARY_PATH="$(dirname "$GRIDMETER_CUPTI_PATH"):${LD_LIBRARY_PATH:-}"
say "libcupti: ${GRIDMETER_CUPTI_PATH:-not found}"
JOBS=$(nproc 2>/dev/null || echo 4)

# ---- build -------------------------------------------------------------------------------
BIN=""
TESTS_BUILT=0
say ""
say "=== build ($(elapsed) s)"
if [ -z "${GM_DEVCHECK_DIRECT:-}" ] && command -v cmake >/dev/null &&
    cmake -S "$ROOT" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DGM_WERROR=OFF \
        -DCMAKE_CUDA_COMPILER="$NVCC" >>"$LOG" 2>&1; then
    if cmake --build "$BUILD/cmake" -j"$JOBS" --target bench_gpu bench_gpu_bulk bench_gpu_overlap \
        bench_gpu_overhead >>"$LOG" 2>&1; then
        BIN=$BUILD/cmake/bench
        cmake --build "$BUILD/cmake" -j"$JOBS" --target test_gpu_cuda test_gpu_attrib \
            test_gpu_cupti >>"$LOG" 2>&1 && TESTS_BUILT=1
    fi
fi
if [ -z "$BIN" ]; then
    say "CMake build not possible here (see log); direct build of gm_common + gm_gpu"
    D=$BUILD/direct
    mkdir -p "$D"
    ARCH="-arch=native" # the GPU here; sm_90 (H100/H200) when nvcc cannot see one
    if ! "$NVCC" $ARCH -x cu -c /dev/null -o "$D/probe.o" >"$D/probe.txt" 2>&1 ||
        grep -q "Cannot find valid GPU" "$D/probe.txt"; then
        ARCH="-arch=sm_90"
    fi
    CFL="-O2 -std=gnu11 -D_GNU_SOURCE -I$ROOT/common -I$ROOT/gpu_accounting"
    OK=1
    for f in common/error.c common/log.c common/opts.c common/parse.c common/decimal.c \
        gpu_accounting/attrib.c gpu_accounting/sweep.c gpu_accounting/archive.c; do
        cc $CFL -c "$ROOT/$f" -o "$D/$(basename "$f" .c).o" >>"$LOG" 2>&1 || OK=0
    done
    if [ -f "$CUDA_HOME/include/cupti.h" ] || [ -f "$CUDA_HOME/extras/CUPTI/include/cupti.h" ]; then
        cc $CFL -I"$CUDA_HOME/include" -I"$CUDA_HOME/extras/CUPTI/include" \
            -c "$ROOT/gpu_accounting/cupti_collector.c" -o "$D/cupti_collector.o" >>"$LOG" 2>&1 ||
            OK=0
    else
        say "no CUPTI headers under $CUDA_HOME: the collector checks will SKIP"
        cc $CFL -c "$ROOT/gpu_accounting/collector_none.c" -o "$D/collector_none.o" >>"$LOG" 2>&1 ||
            OK=0
    fi
    "$NVCC" -O3 $ARCH -std=c++17 -D_GNU_SOURCE -I"$ROOT/common" -I"$ROOT/gpu_accounting" \
        -c "$ROOT/gpu_accounting/sweep_cuda.cu" -o "$D/sweep_cuda.o" >>"$LOG" 2>&1 || OK=0
    rm -f "$D/libgm_gpu.a" "$D/probe.o" "$D"/*.main.o
    ar rcs "$D/libgm_gpu.a" "$D"/*.o 2>>"$LOG" || OK=0
    for b in bench_gpu bench_gpu_bulk; do
        cc $CFL -c "$ROOT/bench/$b.c" -o "$D/$b.main.o" >>"$LOG" 2>&1 || OK=0
        "$NVCC" $ARCH "$D/$b.main.o" "$D/libgm_gpu.a" -o "$D/$b" -ldl -lpthread >>"$LOG" 2>&1 ||
            OK=0
    done
    for b in bench_gpu_overlap bench_gpu_overhead; do
        "$NVCC" -O2 $ARCH -std=c++17 -D_GNU_SOURCE -I"$ROOT/common" -I"$ROOT/gpu_accounting" \
            "$ROOT/bench/$b.cu" -o "$D/$b" "$D/libgm_gpu.a" -ldl -lpthread >>"$LOG" 2>&1 || OK=0
    done
    if [ $OK = 1 ]; then BIN=$D; else
        say "build FAILED; last lines of the log:"
        tail -30 "$LOG"
        exit 1
    fi
fi
note "$(printf '%-10s %-22s %4ss' build "PASS ($([ "$BIN" = "$BUILD/cmake/bench" ] && echo cmake || echo direct))" "$(elapsed)")"

# ---- checks ------------------------------------------------------------------------------
if [ $TESTS_BUILT = 1 ]; then
    run_step test_cuda 240 "$BUILD/cmake/tests/test_gpu_cuda"
    run_step test_cupti 60 "$BUILD/cmake/tests/test_gpu_cupti"
else
    note "$(printf '%-10s %-22s' test_cuda 'SKIP (not built)')"
fi
run_step overlap 60 "$BIN/bench_gpu_overlap" 40 3000 1000
run_step bulk 200 "$BIN/bench_gpu_bulk" "$SPANS"
run_step ovh_off 60 "$BIN/bench_gpu_overhead" off 200000
run_step ovh_on 60 "$BIN/bench_gpu_overhead" on 200000
run_step throughput 120 "$BIN/bench_gpu" 10000000

# ---- summary -----------------------------------------------------------------------------
OFF=$(awk '/^RESULT off/ {print $3}' "$OUTDIR/ovh_off.out" 2>/dev/null)
ON=$(awk '/^RESULT on/ {print $3}' "$OUTDIR/ovh_on.out" 2>/dev/null)
{
    echo ""
    echo "================ gpu_accounting device check: summary ================"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    for s in "${SUMMARY[@]}"; do echo "  $s"; done
    echo "--- overlap (attributed vs cudaEvent)"
    grep -E "attributed:|busy |sum check|collector:" "$OUTDIR/overlap.out" 2>/dev/null | sed 's/^/  /'
    echo "--- bulk path vs C reference"
    grep -E "C sweep|CUDA sweep|^bulk:" "$OUTDIR/bulk.out" 2>/dev/null | sed 's/^/  /'
    echo "--- CUPTI overhead (kernel-heavy loop)"
    grep -E "^overhead:" "$OUTDIR/ovh_off.out" "$OUTDIR/ovh_on.out" 2>/dev/null | sed 's/^.*out:/  /'
    if [ -n "$OFF" ] && [ -n "$ON" ]; then
        awk -v a="$OFF" -v b="$ON" 'BEGIN { printf "  overhead: %+.1f%% wall time with the collector\n", (b - a) / a * 100 }'
    fi
    echo "--- attribution throughput"
    grep -E "baseline|attribution|of which|sweep" "$OUTDIR/throughput.out" 2>/dev/null | sed 's/^/  /'
    echo "total $(elapsed) s"
} | tee "$OUTDIR/summary.txt" | tee -a "$LOG"
grep -q "FAIL" "$OUTDIR/summary.txt" && exit 1
exit 0
