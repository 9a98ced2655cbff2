# Node agent (agent/gm_agent.h): requests answered precisely with the spool read back (unit,
# no broker), and the `gridmeter agent` process against the real broker: kill -9 during a
# stream, a private broker stopped and started, the Python example client, GPU accounting
# (a feed of steps, and the CUPTI collector on a fake CUPTI table) read back from Kafka.
# HTTP from the tests goes through libcurl (Debian: libcurl4-openssl-dev, scripts/setup.sh).
if(CURL_FOUND)
    gm_add_test(NAME test_agent SOURCES test_agent.c test_agent_util.c test_node_util.c
                LIBS gm_agent PkgConfig::CURL LABELS unit TIMEOUT 180)
    target_compile_definitions(test_agent PRIVATE GM_GRIDMETER="")
else()
    gm_add_skipped_test(NAME test_agent LABELS unit
                        REASON "libcurl (libcurl4-openssl-dev) not found at configure time")
endif()
if(CURL_FOUND AND TARGET gridmeter)
    gm_add_test(NAME test_agent_kafka SOURCES test_agent_kafka.c test_agent_util.c
                test_node_util.c LIBS gm_node PkgConfig::CURL LABELS integration TIMEOUT 420)
    target_compile_definitions(test_agent_kafka PRIVATE GM_GRIDMETER="$<TARGET_FILE:gridmeter>")
    add_dependencies(test_agent_kafka gridmeter)
else()
    gm_add_skipped_test(NAME test_agent_kafka LABELS integration
                        REASON "libcurl (libcurl4-openssl-dev) not found at configure time")
endif()
if(CURL_FOUND AND TARGET gridmeter)
    gm_add_test(NAME test_agent_outage SOURCES test_agent_outage.c test_agent_util.c
                test_node_util.c LIBS gm_node PkgConfig::CURL LABELS integration TIMEOUT 420)
    target_compile_definitions(test_agent_outage PRIVATE GM_GRIDMETER="$<TARGET_FILE:gridmeter>")
    add_dependencies(test_agent_outage gridmeter)
else()
    gm_add_skipped_test(NAME test_agent_outage LABELS integration
                        REASON "libcurl (libcurl4-openssl-dev) not found at configure time")
endif()
if(CURL_FOUND AND TARGET gridmeter)
    gm_add_test(NAME test_agent_gpu SOURCES test_agent_gpu.c test_agent_util.c test_node_util.c
                LIBS gm_node gm_gpu gm_ledger PkgConfig::CURL LABELS integration TIMEOUT 240)
    target_compile_definitions(test_agent_gpu PRIVATE GM_GRIDMETER="$<TARGET_FILE:gridmeter>")
    add_dependencies(test_agent_gpu gridmeter)
else()
    gm_add_skipped_test(NAME test_agent_gpu LABELS integration
                        REASON "libcurl (libcurl4-openssl-dev) not found at configure time")
endif()
# The CUPTI collector inside the agent on a fake CUPTI table: needs the CUPTI headers (the
# CUDA toolkit), not a GPU.
if(CURL_FOUND AND GM_GPU_HAVE_CUPTI)
    gm_add_test(NAME test_agent_gpu_cupti SOURCES test_agent_gpu_cupti.c test_agent_util.c
                test_node_util.c LIBS gm_agent PkgConfig::CURL LABELS integration TIMEOUT 240)
    target_include_directories(test_agent_gpu_cupti PRIVATE ${GM_GPU_CUPTI_INCLUDE})
    target_compile_definitions(test_agent_gpu_cupti PRIVATE GM_GRIDMETER="")
else()
    gm_add_skipped_test(NAME test_agent_gpu_cupti LABELS integration
                        REASON "no CUDA toolkit with the CUPTI headers, or no libcurl, at configure time")
endif()
