# gpu_accounting benchmarks: attribution throughput, C on one core and CUDA when a GPU answers.
add_executable(bench_gpu ${CMAKE_CURRENT_LIST_DIR}/bench_gpu.c)
target_link_libraries(bench_gpu PRIVATE gm_gpu)
