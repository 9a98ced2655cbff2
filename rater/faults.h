/* Test-only fault seam of the rater: makes the Kafka and PostgreSQL calls on an event's path
 * fail on purpose, so that tests/test_rater_faults.c can show each failure is checked.
 *
 * The production library gm_rater is compiled without GM_RATER_FAULTS: every seam below is
 * then the constant `false` (or a constant interval) and costs nothing. Only the test
 * library gm_rater_faults (tests/rater.cmake) is compiled with it; there a test sets how
 * many of the next calls at each point fail (gm_rater_faults_set), and reads how many did. */
#ifndef GM_RATER_FAULTS_H
#define GM_RATER_FAULTS_H

#include "gm_common.h"

typedef enum {
    GM_RATER_FAULT_ASSIGN = 0, /* rd_kafka_assign of the usage consumer's partitions */
    GM_RATER_FAULT_WATERMARK,  /* rd_kafka_query_watermark_offsets, usage consumer */
    GM_RATER_FAULT_PARTITIONS, /* gm_ledger_ensure_partitions, at start and hourly */
    GM_RATER_FAULT_GPU_ASSIGN, /* the same for the GPU window consumer (rater/gpu.c) */
    GM_RATER_FAULT_GPU_WATERMARK,
    /* A usage batch's commit (either mode): COMMIT refuses it as a serialization failure
     * would (nothing written), or COMMIT_LOST: the batch commits but the rater is told the
     * connection broke (outcome unknown), so it must find out from PostgreSQL's offsets. */
    GM_RATER_FAULT_COMMIT,
    GM_RATER_FAULT_COMMIT_LOST,
    GM_RATER_FAULT_COUNT
} gm_rater_fault;

#ifdef GM_RATER_FAULTS
/* True when this call at point f is to fail (one of the `n` set for it is used up). */
bool gm_rater__fault(gm_rater_fault f);
/* The next n calls at f fail (0: none; replaces what was left). */
void gm_rater_faults_set(gm_rater_fault f, int n);
/* How many calls at f were made to fail so far. */
long gm_rater_faults_injected(gm_rater_fault f);
/* How often the rater keeps ledger partitions ahead, and how soon it tries again after a
 * failure (production: 1 h and 60 s; a test shortens them). */
extern int64_t gm_rater__partitions_every_us, gm_rater__partitions_retry_us;
#else
#define gm_rater__fault(f)            false
#define gm_rater__partitions_every_us (3600 * GM_US_PER_SEC)
#define gm_rater__partitions_retry_us (60 * GM_US_PER_SEC)
#endif

#endif /* GM_RATER_FAULTS_H */
