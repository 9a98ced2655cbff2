# gpu_accounting tests: the attribution rules (pure C), the CUPTI record parser and collector
# over hand-built CUDA 13 activity buffers (where the CUPTI headers are found), and the CUDA
# bulk path against the C reference (label gpu: exits 77 without a GPU).
gm_add_test(NAME test_gpu_attrib SOURCES test_gpu_attrib.c LIBS gm_gpu LABELS unit)
if(GM_GPU_HAVE_CUPTI AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_gpu_cupti.c)
    gm_add_test(NAME test_gpu_cupti SOURCES test_gpu_cupti.c LIBS gm_gpu LABELS unit)
    target_include_directories(test_gpu_cupti PRIVATE ${GM_GPU_CUPTI_INCLUDE})
endif()
gm_add_test(NAME test_gpu_cuda SOURCES test_gpu_cuda.c LIBS gm_gpu LABELS gpu SKIP_77
            TIMEOUT 600)
# ASan reserves the low address range that the CUDA driver maps; let the driver have it.
set_property(TEST test_gpu_cuda APPEND PROPERTY ENVIRONMENT "ASAN_OPTIONS=protect_shadow_gap=0")
