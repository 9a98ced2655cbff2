/* The CUPTI function table of the collector and its test seam. Includes the CUPTI headers:
 * only cupti_collector.c and the tests built with CUPTI headers include this file. */
#ifndef GM_GPU_CUPTI_H
#define GM_GPU_CUPTI_H

#include "gpu_internal.h"

#include <cupti.h>

/* Every CUPTI (and the two CUDA driver) entry points the collector uses, loaded at run time
 * with dlopen/dlsym so that a host without a GPU, a driver or libcupti still starts. Tests
 * fill a table by hand. Entries marked optional may be NULL. */
typedef struct gpu__cupti_api {
    void *lib;        /* dlopen handle of libcupti (never closed: CUPTI cannot unload) */
    void *driver_lib; /* dlopen handle of libcuda */
    /* the CUDA driver: is there a usable GPU? (cuInit, cuDeviceGetCount) */
    int (*cuInit)(unsigned flags);
    int (*cuDeviceGetCount)(int *count);
    CUptiResult (*GetVersion)(uint32_t *version);
    CUptiResult (*GetResultString)(CUptiResult result, const char **str); /* optional */
    CUptiResult (*GetTimestamp)(uint64_t *timestamp);
    CUptiResult (*ActivityRegisterCallbacks)(CUpti_BuffersCallbackRequestFunc requested,
                                             CUpti_BuffersCallbackCompleteFunc completed);
    CUptiResult (*ActivityEnable)(CUpti_ActivityKind kind);
    CUptiResult (*ActivityDisable)(CUpti_ActivityKind kind);
    CUptiResult (*ActivityFlushAll)(uint32_t flag);
    CUptiResult (*ActivityGetNextRecord)(uint8_t *buffer, size_t valid_bytes,
                                         CUpti_Activity **record);
    CUptiResult (*ActivityGetNumDroppedRecords)(CUcontext context, uint32_t stream_id,
                                                size_t *dropped);
    CUptiResult (*ActivityPushExternalCorrelationId)(CUpti_ExternalCorrelationKind kind,
                                                     uint64_t id);
    CUptiResult (*ActivityPopExternalCorrelationId)(CUpti_ExternalCorrelationKind kind,
                                                    uint64_t *last_id);
    /* optional: trace only the launch, copy and set API calls instead of all of them */
    CUptiResult (*ActivityEnableDriverApi)(CUpti_CallbackId cbid, uint8_t enable);
    CUptiResult (*ActivityEnableRuntimeApi)(CUpti_CallbackId cbid, uint8_t enable);
    CUptiResult (*GetCallbackName)(CUpti_CallbackDomain domain, uint32_t cbid, const char **name);
} gpu__cupti_api;

/* The external correlation kinds the tagging API pushes. */
#define GPU__EXT_TENANT CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0
#define GPU__EXT_STEP   CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM1

/* Loads libcupti (path, or libcupti.so.13 then libcupti.so) and libcuda.so.1. GM_EUNAVAIL
 * with the reason when a library or a required symbol is missing. */
int gpu__cupti_load(gpu__cupti_api *api, const char *path, char *err, size_t err_len);

/* What one activity buffer held. */
typedef gm_gpu_tag gpu__tag;

typedef struct gpu__parsed {
    gm_gpu_record *recs;
    size_t n_recs, cap_recs;
    gpu__tag *tags;
    size_t n_tags, cap_tags;
    gm_gpu_collector_stats stats; /* kernels, copies, tags, api/other records, zero, inverted,
                                     bad_buffers */
} gpu__parsed;

/* The record parser: walks a completed CUPTI activity buffer with api->ActivityGetNextRecord
 * and appends what it found to *out (records with zero or inverted timestamps are counted,
 * not kept). Handles CUDA 13 records: CUpti_ActivityKernel10 (KERNEL, CONCURRENT_KERNEL),
 * CUpti_ActivityMemcpy6 (MEMCPY), CUpti_ActivityMemcpyPtoP4 (MEMCPY2),
 * CUpti_ActivityMemset4 (MEMSET), CUpti_ActivityExternalCorrelation, CUpti_ActivityAPI. */
void gpu__cupti_parse(const gpu__cupti_api *api, uint8_t *buf, size_t valid, gpu__parsed *out);
void gpu__parsed_free(gpu__parsed *p);

/* Starts a collector on a given table (the seam: tests pass a fake one). The table is copied. */
int gpu__collector_start_with(const gpu__cupti_api *api, const gm_gpu_collector_conf *conf,
                              gm_gpu_collector **out, char *err, size_t err_len);

#endif
