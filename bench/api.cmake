# api: HTTP load generator against an in-process `gridmeter api` over a generated month of
# ledger (default 10 million events): invoice GETs and usage queries, beside /healthz and the
# same SQL through libpq as baselines.
add_executable(bench_api ${CMAKE_CURRENT_LIST_DIR}/bench_api.c)
target_link_libraries(bench_api PRIVATE gm_api gm_ledger gm_rating gm_common Threads::Threads)
target_compile_definitions(bench_api PRIVATE GM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")

# api edge: the request head rules per head beside a minimal scan, and GET /healthz through
# the gate beside a bare libmicrohttpd daemon (a connection per request, and keep-alive).
add_executable(bench_api_edge ${CMAKE_CURRENT_LIST_DIR}/bench_api_edge.c)
target_link_libraries(bench_api_edge PRIVATE gm_api gm_common Threads::Threads)
