/* The test-only fault seam of rater/faults.h: counters of calls to fail, per point. Compiled
 * only into gm_rater_faults (with GM_RATER_FAULTS), never into the gridmeter binary. */
#include "faults.h"

#ifdef GM_RATER_FAULTS
#include <stdatomic.h>

static atomic_int left[GM_RATER_FAULT_COUNT];
static atomic_long done[GM_RATER_FAULT_COUNT];

int64_t gm_rater__partitions_every_us = 3600 * GM_US_PER_SEC;
int64_t gm_rater__partitions_retry_us = 60 * GM_US_PER_SEC;

bool gm_rater__fault(gm_rater_fault f)
{
    if ((unsigned)f >= GM_RATER_FAULT_COUNT)
        return false;
    int n = atomic_load(&left[f]);
    while (n > 0)
        if (atomic_compare_exchange_weak(&left[f], &n, n - 1)) {
            atomic_fetch_add(&done[f], 1);
            return true;
        }
    return false;
}

void gm_rater_faults_set(gm_rater_fault f, int n)
{
    if ((unsigned)f < GM_RATER_FAULT_COUNT)
        atomic_store(&left[f], n);
}

long gm_rater_faults_injected(gm_rater_fault f)
{
    return (unsigned)f < GM_RATER_FAULT_COUNT ? atomic_load(&done[f]) : 0;
}
#else
typedef int gm_rater_faults_unused; /* ISO C: a translation unit is not empty */
#endif
