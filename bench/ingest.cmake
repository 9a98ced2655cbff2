# ingest benchmarks: decoder throughput against cJSON and memchr over the same messages.
add_executable(bench_decode bench_decode.c)
target_link_libraries(bench_decode PRIVATE gm_ingest PkgConfig::CJSON)
