# api: HTTP load generator against an in-process `gridmeter api` over a generated month of
# ledger (default 10 million events): invoice GETs and usage queries, beside /healthz and the
# same SQL through libpq as baselines.
add_executable(bench_api ${CMAKE_CURRENT_LIST_DIR}/bench_api.c)
target_link_libraries(bench_api PRIVATE gm_api gm_ledger gm_rating gm_common Threads::Threads)
target_compile_definitions(bench_api PRIVATE GM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
