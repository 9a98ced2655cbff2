#!/usr/bin/env bash
# The test command (README.md): set-up, an ASan+UBSan build, the local services, and every
# CTest suite except the long soaks (label `soak`, run with `ctest -L soak`).
# Services this script starts are stopped again when it ends; ones already running stay.
#
#   bash scripts/test.sh                          # all default labels, ASan+UBSan (build/test)
#   bash scripts/test.sh -L unit                  # extra arguments go to ctest
#   bash scripts/test.sh --release -L unit        # optimized build (RelWithDebInfo, -O2) in build/test-opt
#   bash scripts/test.sh --build-type Debug       # any CMake build type, in build/test-debug
#   bash scripts/test.sh --at 2026-12-31T23:59:30Z -R 'test_api|test_rater'
#                                                 # moved clock: GRIDMETER_NOW for every test process
#
# Options (anything else, and everything after `--`, goes to ctest):
#   --at RFC3339          export GRIDMETER_NOW=RFC3339 to ctest, so that every test and every
#                         gridmeter process it starts reads that instant as "now" (one per run)
#   --release             same as --build-type RelWithDebInfo
#   --build-type TYPE     CMake build type (default Asan); build folder build/test for Asan,
#                         build/test-opt for RelWithDebInfo, build/test-<type> otherwise
#   --no-build            run the tests of the existing build folder as it is
# Environment: GM_BUILD_DIR (the build folder), CI=true (warnings are errors), GM_TEST_JOBS
# (parallel ctest jobs, default 2), and the services' variables of scripts/lib.sh.
# A build error stops the script at the build with the compiler's messages (exit 1).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
cd "$GM_REPO"
t_start=$SECONDS

build_type=Asan at="" do_build=1
ctest_args=()
while (($#)); do
    case "$1" in
    --at)
        (($# >= 2)) || gm_die "--at needs an RFC 3339 instant, e.g. --at 2026-12-31T23:59:30Z"
        [ -z "$at" ] || gm_die "--at is given once per run (got '$at' and '$2')"
        at=$2
        shift 2
        ;;
    --at=*) [ -z "$at" ] || gm_die "--at is given once per run"; at=${1#--at=}; shift ;;
    --release) build_type=RelWithDebInfo; shift ;;
    --build-type)
        (($# >= 2)) || gm_die "--build-type needs a CMake build type (Asan, RelWithDebInfo, Release, Debug)"
        build_type=$2
        shift 2
        ;;
    --build-type=*) build_type=${1#--build-type=}; shift ;;
    --no-build) do_build=0; shift ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; ctest_args+=("$@"); break ;;
    *) ctest_args+=("$1"); shift ;;
    esac
done

if [ -n "$at" ]; then
    # The form is checked here for a quick answer; gridmeter's own parser has the last word.
    [[ "$at" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$ ]] \
        && date -u -d "$at" >/dev/null 2>&1 \
        || gm_die "--at '$at': expected an RFC 3339 instant such as 2026-12-31T23:59:30Z"
fi

case "$build_type" in
Asan) default_dir=$GM_REPO/build/test ;;
RelWithDebInfo) default_dir=$GM_REPO/build/test-opt ;;
*) default_dir=$GM_REPO/build/test-$(echo "$build_type" | tr '[:upper:]' '[:lower:]') ;;
esac
build=${GM_BUILD_DIR:-$default_dir}

bash scripts/setup.sh
t_setup=$SECONDS

if [ "$do_build" = 1 ]; then
    werror=OFF
    [ "${CI:-}" = true ] && werror=ON
    mkdir -p "$build"
    gm_say "build: $build_type in $build (warnings as errors: $werror)"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="$build_type" -DGM_WERROR=$werror >"$build/cmake.log" 2>&1 \
        || { cat "$build/cmake.log" >&2; gm_die "cmake configure failed (log: $build/cmake.log)"; }
    # The whole build output goes to build.log; the progress lines are left off the screen.
    # The pipeline's status is cmake's (pipefail; the filter itself always succeeds).
    if ! cmake --build "$build" -j"$(nproc)" 2>&1 | tee "$build/build.log" \
        | { grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' || true; }; then
        errors=$(grep -E '^[^ ].*:[0-9]+(:[0-9]+)?: (fatal )?error|undefined reference|^CMake Error' "$build/build.log" \
            | head -n 20 || true)
        if [ -n "$errors" ]; then
            printf '%s\n' "--- build errors:" "$errors" >&2
        fi
        gm_die "build failed (log: $build/build.log)"
    fi
else
    [ -f "$build/CTestTestfile.cmake" ] || gm_die "--no-build: no configured build in $build"
fi
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
clock="the real clock"
if [ -n "$at" ]; then
    export GRIDMETER_NOW=$at
    clock="GRIDMETER_NOW=$at"
fi
gm_say "tests: $build_type build, $clock, ctest ${ctest_args[*]:-(all but soak)}"
rc=0
ctest --test-dir "$build" --output-on-failure -LE soak -j"${GM_TEST_JOBS:-2}" ${ctest_args[@]+"${ctest_args[@]}"} || rc=$?
t_tests=$SECONDS
gm_say "timings ($build_type, $clock): set-up $((t_setup - t_start)) s, build $((t_build - t_setup)) s, services $((t_services - t_build)) s, tests $((t_tests - t_services)) s"
exit $rc
