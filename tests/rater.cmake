# Rater and ledger suites (ledger/, rater/, sql/).
add_library(gm_rater_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/rater_harness.c)
target_link_libraries(gm_rater_harness PUBLIC gm_testsupport gm_ledger gm_ingest)
gm_add_test(NAME test_ledger SOURCES test_ledger.c LIBS gm_ledger LABELS unit)
gm_add_test(NAME test_rater_integration SOURCES test_rater_integration.c LIBS gm_rater_harness
            LABELS integration TIMEOUT 1500)
# The rater tests run the gridmeter binary.
add_dependencies(test_rater_integration gridmeter)
gm_add_test(NAME test_rater_restarts SOURCES test_rater_restarts.c LIBS gm_rater_harness
            LABELS integration TIMEOUT 900)
add_dependencies(test_rater_restarts gridmeter)
gm_add_test(NAME test_ledger_pg SOURCES test_ledger_pg.c LIBS gm_ledger LABELS integration
            TIMEOUT 120)
gm_add_test(NAME test_pipeline_integration SOURCES test_pipeline_integration.c
            LIBS gm_rater_harness PkgConfig::CJSON LABELS integration TIMEOUT 600)
add_dependencies(test_pipeline_integration gridmeter)
gm_add_test(NAME test_ledger_writer SOURCES test_ledger_writer.c LIBS gm_ledger gm_ingest
            LABELS integration TIMEOUT 120)
# Issue 12: identity and conflicts, node state loss, time policy, replay, poison messages.
gm_add_test(NAME test_event_identity SOURCES test_event_identity.c LIBS gm_rater_harness
            LABELS integration TIMEOUT 300)
add_dependencies(test_event_identity gridmeter)
gm_add_test(NAME test_source_epochs SOURCES test_source_epochs.c test_node_util.c
            LIBS gm_rater_harness gm_node LABELS integration TIMEOUT 300)
add_dependencies(test_source_epochs gridmeter)
gm_add_test(NAME test_identity_rules SOURCES test_identity_rules.c LIBS gm_rater gm_gpu LABELS unit)
# GPU windows (rater/gpu.c): exactly once through SIGKILL, conflicts, reconciliation.
gm_add_test(NAME test_rater_gpu SOURCES test_rater_gpu.c LIBS gm_rater_harness
            LABELS integration TIMEOUT 600)
add_dependencies(test_rater_gpu gridmeter)
gm_add_test(NAME test_chain SOURCES test_chain.c LIBS gm_ledger gm_ingest LABELS integration
            TIMEOUT 420) # a hang guard: 120 s ran out at load 9 under ASan
add_dependencies(test_chain gridmeter)
# Past one PostgreSQL (docs/scaling.md): two shards, a coordinator, the fence.
gm_add_test(NAME test_rater_shards SOURCES test_rater_shards.c LIBS gm_rater_harness gm_rater
            PkgConfig::CJSON LABELS integration TIMEOUT 600)
add_dependencies(test_rater_shards gridmeter)
gm_add_test(NAME test_shard_map SOURCES test_shard_map.c LIBS gm_rater LABELS unit)
gm_add_test(NAME test_rater_gpu_billing SOURCES test_rater_gpu_billing.c LIBS gm_rater_harness
            gm_billing gm_ledger gm_rating PkgConfig::CJSON LABELS integration TIMEOUT 600)
add_dependencies(test_rater_gpu_billing gridmeter)
# Issue 12, no unchecked result on an event's path: the rater's sources compiled again with
# the test-only fault seam (rater/faults.h), run in-process against the real broker and
# PostgreSQL. The gridmeter binary never has the seam.
get_target_property(gm_rater_srcs gm_rater SOURCES)
list(TRANSFORM gm_rater_srcs PREPEND ${PROJECT_SOURCE_DIR}/rater/)
add_library(gm_rater_faults STATIC ${gm_rater_srcs})
target_compile_definitions(gm_rater_faults PUBLIC GM_RATER_FAULTS=1)
target_include_directories(gm_rater_faults PUBLIC ${PROJECT_SOURCE_DIR}/rater)
get_target_property(gm_rater_libs gm_rater LINK_LIBRARIES)
target_link_libraries(gm_rater_faults PUBLIC ${gm_rater_libs})
gm_add_test(NAME test_rater_faults SOURCES test_rater_faults.c LIBS gm_rater_faults
            gm_rater_harness LABELS integration TIMEOUT 600)
