# Node client producer benchmark: the library's record+deliver rate against the raw
# librdkafka producer in the same run (build type Release for numbers).
add_executable(bench_produce bench_produce.c)
target_link_libraries(bench_produce PRIVATE gm_node)
