# ingest: the event contract (decoder, encoder, `gridmeter validate`) and its fuzzing.
gm_add_test(NAME test_events SOURCES test_events.c LIBS gm_ingest LABELS unit TIMEOUT 300)
# Completing a node's event text (gm_event_complete: `gridmeter emit`, the node agent).
gm_add_test(NAME test_event_complete SOURCES test_event_complete.c LIBS gm_ingest LABELS unit)

# The fuzz harness's invariants over the seed corpus, under whatever compiler builds the
# project (gcc included): a unit test.
gm_add_test(NAME test_events_fuzz_replay SOURCES fuzz/fuzz_event_decode.c fuzz/replay_main.c
            LIBS gm_ingest LABELS unit)
target_compile_definitions(test_events_fuzz_replay PRIVATE
                           GM_FUZZ_CORPUS="${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus")

# `gridmeter validate` end to end: output lines, summary and exit status.
if(TARGET gridmeter)
    add_test(NAME test_validate_cli
             COMMAND ${CMAKE_COMMAND} -DGRIDMETER=$<TARGET_FILE:gridmeter>
                     -DDIR=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/events/validate
                     -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/events/validate/check_validate.cmake)
    set_tests_properties(test_validate_cli PROPERTIES LABELS unit TIMEOUT 60)
endif()

# libFuzzer target. libFuzzer needs clang: the project's C compiler when it is clang, else a
# clang found on the PATH, built through a custom command (its own flags: fuzzer coverage,
# ASan, UBSan) from the decoder's and common's sources, so the fuzzer sees their coverage.
# It is built only when that clang can link -fsanitize=fuzzer (checked here at configure
# time), and runs as the CTest test fuzz_event_decode (label fuzz) for a bounded time;
# without such a clang the test is registered all the same and skipped (exit 77).
set(GM_FUZZ_CC "")
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    set(GM_FUZZ_CC ${CMAKE_C_COMPILER})
else()
    find_program(GM_CLANG NAMES clang clang-16 clang-15 clang-14)
    if(GM_CLANG)
        set(GM_FUZZ_CC ${GM_CLANG})
    endif()
endif()
set(GM_FUZZ_FLAGS -std=gnu11 -O1 -g -fsanitize=fuzzer,address,undefined
                  -fno-sanitize-recover=undefined -fno-omit-frame-pointer -D_GNU_SOURCE)
set(GM_HAVE_LIBFUZZER OFF)
set(GM_FUZZ_WHY_NOT "no clang found (libFuzzer needs clang; scripts/setup.sh installs it)")
if(GM_FUZZ_CC)
    if(EXISTS ${GM_FUZZ_CC})
        set(GM_FUZZ_WHY_NOT "${GM_FUZZ_CC} cannot link -fsanitize=fuzzer (libclang-rt-dev missing?)")
    else()
        set(GM_FUZZ_WHY_NOT "clang ${GM_FUZZ_CC} not found")
    endif()
    set(probe ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe.c)
    file(WRITE ${probe} "int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\n"
                        "int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n"
                        "{ return d && n ? 0 : 0; }\n")
    execute_process(COMMAND ${GM_FUZZ_CC} ${GM_FUZZ_FLAGS} ${probe} -o
                            ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe
                    RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
    if(probe_rc EQUAL 0)
        set(GM_HAVE_LIBFUZZER ON)
    endif()
endif()
message(STATUS "gridmeter: libFuzzer target ${GM_HAVE_LIBFUZZER} (${GM_FUZZ_CC})")

if(GM_HAVE_LIBFUZZER)
    get_target_property(gm_common_srcs gm_common SOURCES)
    list(TRANSFORM gm_common_srcs PREPEND ${PROJECT_SOURCE_DIR}/common/)
    set(fuzz_srcs ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_event_decode.c
                  ${PROJECT_SOURCE_DIR}/ingest/event_decode.c
                  ${PROJECT_SOURCE_DIR}/ingest/event_encode.c ${gm_common_srcs})
    set(fuzz_bin ${CMAKE_CURRENT_BINARY_DIR}/fuzz_event_decode)
    add_custom_command(
        OUTPUT ${fuzz_bin}
        COMMAND ${GM_FUZZ_CC} ${GM_FUZZ_FLAGS} -I${PROJECT_SOURCE_DIR}/common
                -I${PROJECT_SOURCE_DIR}/ingest ${fuzz_srcs} -lpthread -o ${fuzz_bin}
        DEPENDS ${fuzz_srcs} ${PROJECT_SOURCE_DIR}/ingest/gm_ingest.h
                ${PROJECT_SOURCE_DIR}/ingest/event_internal.h
                ${PROJECT_SOURCE_DIR}/common/gm_common.h
        COMMENT "Building the libFuzzer target fuzz_event_decode with ${GM_FUZZ_CC}"
        VERBATIM)
    add_custom_target(fuzz_event_decode_build ALL DEPENDS ${fuzz_bin})
    # New inputs go to the build tree; the committed seeds are only read.
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus
         ${CMAKE_CURRENT_BINARY_DIR}/fuzz-artifacts)
    if(NOT GM_FUZZ_SECONDS)
        set(GM_FUZZ_SECONDS 20)
    endif()
    add_test(NAME fuzz_event_decode
             COMMAND ${fuzz_bin} -max_total_time=${GM_FUZZ_SECONDS} -rss_limit_mb=1024
                     -timeout=10 -max_len=8300 -print_final_stats=1
                     -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/event.dict
                     -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz-artifacts/
                     ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus
                     ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus)
    math(EXPR fuzz_timeout "${GM_FUZZ_SECONDS} * 3 + 60")
    set_tests_properties(fuzz_event_decode PROPERTIES LABELS fuzz TIMEOUT ${fuzz_timeout})
else()
    gm_add_skipped_test(NAME fuzz_event_decode LABELS fuzz REASON "${GM_FUZZ_WHY_NOT}")
endif()

# docs/event.schema.json against the same fixtures, with the first python3 that has the
# jsonschema module (tests/python_with.sh: $GM_PYTHON3, python3 on the PATH, /usr/bin/python3;
# Debian's python3-jsonschema comes with scripts/setup.sh); skipped (exit 77) without one.
add_test(NAME test_event_schema
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/python_with.sh jsonschema
                 ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/events/check_schema.py ${PROJECT_SOURCE_DIR})
set_tests_properties(test_event_schema PROPERTIES LABELS unit TIMEOUT 60 SKIP_RETURN_CODE 77)
