# gpu_accounting tests: the attribution rules (pure C), the CUPTI record parser and collector
# over hand-built CUDA 13 activity buffers (where the CUPTI headers are found; skipped, exit 77,
# elsewhere), and the CUDA bulk path against the C reference (label gpu: exits 77 without a GPU).
gm_add_test(NAME test_gpu_attrib SOURCES test_gpu_attrib.c LIBS gm_gpu LABELS unit)
if(GM_GPU_HAVE_CUPTI)
    gm_add_test(NAME test_gpu_cupti SOURCES test_gpu_cupti.c LIBS gm_gpu LABELS unit)
    target_include_directories(test_gpu_cupti PRIVATE ${GM_GPU_CUPTI_INCLUDE})
else()
    gm_add_skipped_test(NAME test_gpu_cupti LABELS unit
                        REASON "no CUDA toolkit with the CUPTI headers (cupti_activity.h) found at configure time")
endif()
gm_add_test(NAME test_gpu_cuda SOURCES test_gpu_cuda.c LIBS gm_gpu LABELS gpu SKIP_77
            TIMEOUT 600)
# ASan reserves the low address range that the CUDA driver maps; let the driver have it.
set_property(TEST test_gpu_cuda APPEND PROPERTY ENVIRONMENT "ASAN_OPTIONS=protect_shadow_gap=0")
