#!/usr/bin/env bash
# The test command (README.md): set-up, an ASan+UBSan build, the local services, and every
# CTest suite except the long soaks (label `soak`, run with `ctest -L soak`).
# Services this script starts are stopped again when it ends; ones already running stay.
#
#   bash scripts/test.sh                 # all default labels
#   bash scripts/test.sh -L unit         # extra arguments go to ctest
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
cd "$GM_REPO"
t_start=$SECONDS

bash scripts/setup.sh
t_setup=$SECONDS

build=${GM_BUILD_DIR:-$GM_REPO/build/test}
werror=OFF
[ "${CI:-}" = true ] && werror=ON
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Asan -DGM_WERROR=$werror >"$build/cmake.log" 2>&1 \
    || { cat "$build/cmake.log" >&2; gm_die "cmake configure failed (log: $build/cmake.log)"; }
cmake --build "$build" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || gm_die "build failed"
t_build=$SECONDS

started=0
if ! bash scripts/services.sh status >/dev/null 2>&1; then
    bash scripts/services.sh start
    started=1
fi
cleanup() { if [ "$started" = 1 ]; then bash "$here/services.sh" stop || true; fi; }
trap cleanup EXIT
eval "$(bash scripts/services.sh env)"
t_services=$SECONDS

# ASan: librdkafka and libpq keep a few process-lifetime allocations; leaks of our own are
# still reported by the unit suites, which link none of them on their hot paths.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
ctest --test-dir "$build" --output-on-failure -LE soak -j2 "$@" || rc=$?
t_tests=$SECONDS
gm_say "timings: set-up $((t_setup - t_start)) s, build $((t_build - t_setup)) s, services $((t_services - t_build)) s, tests $((t_tests - t_services)) s"
exit $rc
