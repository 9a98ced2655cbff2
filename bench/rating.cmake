# rating: events priced per second per core (bench_rating), beside a bare-loop baseline.
# For numbers, build Release (-O2) in its own build directory.
add_executable(bench_rating ${CMAKE_CURRENT_SOURCE_DIR}/bench_rating.c)
target_link_libraries(bench_rating PRIVATE gm_rating)
