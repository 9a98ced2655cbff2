# gpu_accounting benchmarks: attribution throughput, C on one core and CUDA when a GPU answers;
# the device-check programs (gpu_accounting/device-check.sh runs them on a GPU machine).
add_executable(bench_gpu ${CMAKE_CURRENT_LIST_DIR}/bench_gpu.c)
target_link_libraries(bench_gpu PRIVATE gm_gpu)
add_executable(bench_gpu_bulk ${CMAKE_CURRENT_LIST_DIR}/bench_gpu_bulk.c)
target_link_libraries(bench_gpu_bulk PRIVATE gm_gpu)
if(GM_HAVE_CUDA)
    foreach(b bench_gpu_overlap bench_gpu_overhead)
        add_executable(${b} ${CMAKE_CURRENT_LIST_DIR}/${b}.cu)
        target_link_libraries(${b} PRIVATE gm_gpu CUDA::cudart_static)
        set_target_properties(${b} PROPERTIES CUDA_ARCHITECTURES "80-real;90")
    endforeach()
endif()
