# api: the REST API against a real PostgreSQL and a real HTTP server (in-process, ephemeral
# port, role gm_api), through a socket HTTP client (tests/test_api_client.c).
add_library(gm_api_testclient STATIC ${CMAKE_CURRENT_LIST_DIR}/test_api_client.c)
target_link_libraries(gm_api_testclient PUBLIC gm_testsupport gm_api gm_ledger gm_rating)
gm_add_test(NAME test_api SOURCES test_api.c LIBS gm_api_testclient PkgConfig::CJSON
            LABELS integration TIMEOUT 300)
# test_api runs `gridmeter quote` as the oracle of invoice totals.
add_dependencies(test_api gridmeter)
# The entitlement answer from the pushed in-memory mirror (sql/0021, api/entitlement_mirror.c):
# commits shown without restart, the hard limit, the listener killed, month rollover, and a
# second API process (`gridmeter api`) that agrees.
gm_add_test(NAME test_entitlement SOURCES test_entitlement.c LIBS gm_api_testclient
            PkgConfig::CJSON LABELS integration TIMEOUT 300)
target_compile_definitions(test_entitlement PRIVATE GM_GRIDMETER="$<TARGET_FILE:gridmeter>")
add_dependencies(test_entitlement gridmeter)
# The HTTP edge over raw sockets: every finding of the outside review (issue 13) with its
# exact bytes, and the rules that make each class impossible (docs/api.md, "Security").
gm_add_test(NAME test_api_http SOURCES test_api_http.c LIBS gm_api_testclient PkgConfig::CJSON
            LABELS integration TIMEOUT 300)

# The HTTP edge's fuzz harness (request heads, framing, targets, routes, cursors) over its
# corpus (one input per finding of issue 13 and more), under whatever compiler builds the
# project: a unit test.
gm_add_test(NAME test_api_fuzz_replay SOURCES fuzz/fuzz_http_request.c fuzz/replay_main.c
            LIBS gm_api LABELS unit)
target_compile_definitions(test_api_fuzz_replay PRIVATE
                           GM_FUZZ_CORPUS="${CMAKE_CURRENT_SOURCE_DIR}/fuzz/http_corpus")

# The libFuzzer target fuzz_http_request (label fuzz, bounded like fuzz_event_decode), built
# by the clang that tests/ingest.cmake found and checked (GM_HAVE_LIBFUZZER, GM_FUZZ_CC,
# GM_FUZZ_FLAGS); ingest.cmake is read after this file, so the registration is deferred to
# the end of tests/.
function(gm_api_fuzz_target)
    if(NOT GM_HAVE_LIBFUZZER)
        gm_add_skipped_test(NAME fuzz_http_request LABELS fuzz REASON "${GM_FUZZ_WHY_NOT}")
        return()
    endif()
    get_target_property(common_srcs gm_common SOURCES)
    list(TRANSFORM common_srcs PREPEND ${PROJECT_SOURCE_DIR}/common/)
    set(srcs ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_http_request.c
             ${PROJECT_SOURCE_DIR}/api/edge.c ${PROJECT_SOURCE_DIR}/api/routes.c
             ${PROJECT_SOURCE_DIR}/api/cursor.c ${common_srcs})
    set(incs -I${PROJECT_SOURCE_DIR}/api -I${PROJECT_SOURCE_DIR}/common)
    foreach(d ${LIBPQ_INCLUDE_DIRS} ${CJSON_INCLUDE_DIRS} ${LIBCRYPTO_INCLUDE_DIRS})
        list(APPEND incs -I${d})
    endforeach()
    set(bin ${CMAKE_CURRENT_BINARY_DIR}/fuzz_http_request)
    add_custom_command(
        OUTPUT ${bin}
        COMMAND ${GM_FUZZ_CC} ${GM_FUZZ_FLAGS} ${incs} ${srcs} ${CJSON_LINK_LIBRARIES}
                ${LIBCRYPTO_LINK_LIBRARIES} -lpthread -o ${bin}
        DEPENDS ${srcs} ${PROJECT_SOURCE_DIR}/api/api_edge.h ${PROJECT_SOURCE_DIR}/api/gm_api.h
                ${PROJECT_SOURCE_DIR}/common/gm_common.h
        COMMENT "Building the libFuzzer target fuzz_http_request with ${GM_FUZZ_CC}"
        VERBATIM)
    add_custom_target(fuzz_http_request_build ALL DEPENDS ${bin})
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz-http-corpus
         ${CMAKE_CURRENT_BINARY_DIR}/fuzz-http-artifacts)
    set(seconds ${GM_FUZZ_SECONDS})
    if(NOT seconds)
        set(seconds 20)
    endif()
    add_test(NAME fuzz_http_request
             COMMAND ${bin} -max_total_time=${seconds} -rss_limit_mb=1024 -timeout=10
                     -max_len=20000 -print_final_stats=1
                     -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/http.dict
                     -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz-http-artifacts/
                     ${CMAKE_CURRENT_BINARY_DIR}/fuzz-http-corpus
                     ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/http_corpus)
    math(EXPR timeout "${seconds} * 3 + 60")
    set_tests_properties(fuzz_http_request PROPERTIES LABELS fuzz TIMEOUT ${timeout})
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} CALL gm_api_fuzz_target)
