# Node client library (ingest/gm_node.h): spool unit tests, integration tests against the real
# broker (and a private one that the broker-outage test stops and starts), and the chaos test.
gm_add_test(NAME test_spool SOURCES test_spool.c LIBS gm_node LABELS unit TIMEOUT 60)
gm_add_test(NAME test_node SOURCES test_node.c test_node_util.c LIBS gm_node
            LABELS integration TIMEOUT 300)
gm_add_test(NAME test_node_chaos SOURCES test_node_chaos.c test_node_util.c LIBS gm_node
            LABELS integration TIMEOUT 240)
gm_add_test(NAME test_node_outage SOURCES test_node_outage.c test_node_util.c LIBS gm_node
            LABELS integration TIMEOUT 300)
gm_add_test(NAME test_node_loadgen SOURCES test_node_loadgen.c LIBS gm_node PkgConfig::CJSON
            LABELS unit TIMEOUT 120)
if(TARGET gridmeter)
    gm_add_test(NAME test_node_cli SOURCES test_node_cli.c test_node_util.c
                LIBS gm_node PkgConfig::CJSON LABELS integration TIMEOUT 240)
    target_compile_definitions(test_node_cli PRIVATE GM_GRIDMETER="$<TARGET_FILE:gridmeter>")
    add_dependencies(test_node_cli gridmeter)
endif()
