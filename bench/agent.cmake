# Node agent benchmark: batch POSTs over the Unix socket against the raw node client in the same
# run, and the answer time at half the measured rate (build type Release for numbers).
if(TARGET gm_agent AND CURL_FOUND)
    add_executable(bench_agent bench_agent.c)
    target_link_libraries(bench_agent PRIVATE gm_agent PkgConfig::CURL)
endif()
