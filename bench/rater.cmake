# Rater benchmark: Kafka -> ledger events/s and latency against the binary-COPY ceiling.
add_executable(bench_rater ${CMAKE_CURRENT_LIST_DIR}/bench_rater.c)
target_link_libraries(bench_rater PRIVATE gm_rater gm_ledger gm_ingest Threads::Threads)
target_compile_definitions(bench_rater PRIVATE GM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
# GPU window consumer (rater/gpu.c): gpu.v1 events/s beside the usage loop in the same run.
add_executable(bench_rater_gpu ${CMAKE_CURRENT_LIST_DIR}/bench_rater_gpu.c)
target_link_libraries(bench_rater_gpu PRIVATE gm_rater gm_ledger gm_ingest Threads::Threads)
target_compile_definitions(bench_rater_gpu PRIVATE GM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
# Tamper evidence: commit with and without batch digests (alternated), audit verify's rate.
add_executable(bench_chain ${CMAKE_CURRENT_LIST_DIR}/bench_chain.c)
target_link_libraries(bench_chain PRIVATE gm_ledger gm_ingest)
