# api: the REST API against a real PostgreSQL and a real HTTP server (in-process, ephemeral
# port, role gm_api), through a socket HTTP client (tests/test_api_client.c).
add_library(gm_api_testclient STATIC ${CMAKE_CURRENT_LIST_DIR}/test_api_client.c)
target_link_libraries(gm_api_testclient PUBLIC gm_testsupport gm_api gm_ledger gm_rating)
gm_add_test(NAME test_api SOURCES test_api.c LIBS gm_api_testclient PkgConfig::CJSON
            LABELS integration TIMEOUT 300)
# test_api runs `gridmeter quote` as the oracle of invoice totals.
add_dependencies(test_api gridmeter)
# The HTTP edge over raw sockets: every finding of the outside review (issue 13) with its
# exact bytes, and the rules that make each class impossible (docs/api.md, "Security").
gm_add_test(NAME test_api_http SOURCES test_api_http.c LIBS gm_api_testclient PkgConfig::CJSON
            LABELS integration TIMEOUT 300)
