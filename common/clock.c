/* The one clock: every decision in gridmeter that depends on "now" reads gm_now_us().
 *
 * DESIGN. By default the clock is CLOCK_REALTIME. GRIDMETER_NOW=<RFC 3339 instant> in the
 * environment sets it to that instant at process start, running on from there at the real
 * rate (an offset added to CLOCK_REALTIME), so that operators can dry-run a period close and
 * tests can pin the calendar. The offset is captured by a constructor, i.e. when the
 * process (or the library) is loaded, not at the first call. A value that does not parse is
 * not ignored: gm_clock_check() reports it (the `gridmeter` command exits 2), and a process
 * that reads the clock anyway aborts with the reason, because a billing process must never
 * run on a clock other than the one it was told to use.
 *
 * PostgreSQL is told the same clock: gm_pg_connect() passes the offset as the session
 * setting gridmeter.clock_offset_us, which gm.now() (sql/0005_clock.sql) adds to now().
 *
 * Tests may also move the clock at run time with gm_clock_set_us() (same "runs on" rule), or
 * stop it at an instant with gm_clock_freeze_us() to test a boundary to the microsecond. */
#include "gm_common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Atomic int64_t g_offset_us; /* added to CLOCK_REALTIME */
static _Atomic bool g_moved;        /* GRIDMETER_NOW or gm_clock_set_us() moved it */
static _Atomic int64_t g_frozen_us; /* non-zero: gm_clock_freeze_us() stopped the clock here */
static char g_error[256];           /* non-empty: GRIDMETER_NOW did not parse */

static int64_t real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * GM_US_PER_SEC + ts.tv_nsec / 1000;
}

__attribute__((constructor)) static void clock_init(void)
{
    const char *s = getenv("GRIDMETER_NOW");
    if (!s || !*s)
        return;
    int64_t at = 0;
    char why[160];
    if (gm_time_parse(s, strlen(s), &at, why, sizeof why) != 0) {
        snprintf(g_error, sizeof g_error, "GRIDMETER_NOW=\"%.60s\": %s", s, why);
        return;
    }
    atomic_store(&g_offset_us, at - real_us());
    atomic_store(&g_moved, true);
}

int gm_clock_check(char *err, size_t err_len)
{
    if (g_error[0])
        return gm_fail(err, err_len, GM_ECONFIG, "%s", g_error);
    return 0;
}

int64_t gm_now_us(void)
{
    if (__builtin_expect(g_error[0] != '\0', 0)) {
        fprintf(stderr, "gridmeter: %s (an RFC 3339 instant such as 2026-12-31T23:59:30Z)\n",
                g_error);
        abort();
    }
    int64_t frozen = atomic_load_explicit(&g_frozen_us, memory_order_relaxed);
    if (__builtin_expect(frozen != 0, 0))
        return frozen;
    return real_us() + atomic_load_explicit(&g_offset_us, memory_order_relaxed);
}

int64_t gm_clock_offset_us(void)
{
    return atomic_load(&g_offset_us);
}

void gm_clock_set_us(int64_t now_us)
{
    atomic_store(&g_offset_us, now_us - real_us());
    atomic_store(&g_frozen_us, 0);
    atomic_store(&g_moved, true);
}

void gm_clock_freeze_us(int64_t now_us)
{
    atomic_store(&g_offset_us, now_us - real_us());
    atomic_store(&g_frozen_us, now_us ? now_us : 1);
    atomic_store(&g_moved, true);
}

bool gm_clock_is_set(void)
{
    return atomic_load(&g_moved);
}

int64_t gm_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * GM_US_PER_SEC + ts.tv_nsec / 1000;
}
