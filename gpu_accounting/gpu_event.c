/* Turns attribution rows into gridmeter.gpu.v1 events (struct gm_event of ingest/gm_ingest.h).
 * Built only when the gm_ingest target exists beside gm_gpu. */
#include "gm_ingest.h"
#include "gpu_internal.h"

#include <string.h>

static int copy_field(char *dst, size_t cap, const char *src, const char *field, char *err,
                      size_t err_len)
{
    size_t len = strlen(src);
    if (len >= cap)
        return gm_fail(err, err_len, GM_EINVAL, "gpu event: %s: must be at most %zu bytes", field,
                       cap - 1);
    memcpy(dst, src, len + 1);
    return 0;
}

int gm_gpu_row_to_event(const gm_gpu_result *res, size_t row, const char *source, const char *id,
                        uint64_t seq, const char *site, struct gm_event *ev, char *err,
                        size_t err_len)
{
    if (row >= res->n_rows)
        return gm_fail(err, err_len, GM_EINVAL, "gpu event: row %zu: out of range", row);
    const gm_gpu_row *r = &res->rows[row];
    if (r->window_start_ns % 1000 || r->window_end_ns % 1000)
        return gm_fail(err, err_len, GM_EINVAL,
                       "gpu event: row %zu: window bounds must be whole microseconds", row);
    /* the row's window, for unattributed_us */
    size_t lo = 0, hi = res->n_windows;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const gm_gpu_window *w = &res->windows[mid];
        int less = w->device != r->device       ? w->device < r->device
                   : w->resource != r->resource ? w->resource < r->resource
                                                : w->window_start_ns < r->window_start_ns;
        if (less)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == res->n_windows || res->windows[lo].device != r->device ||
        res->windows[lo].resource != r->resource ||
        res->windows[lo].window_start_ns != r->window_start_ns)
        return gm_fail(err, err_len, GM_ECORRUPT, "gpu event: row %zu: no window", row);
    memset(ev, 0, sizeof *ev);
    ev->type = GM_EVENT_GPU;
    int rc =
        copy_field(ev->source, sizeof ev->source, source ? source : "", "source", err, err_len);
    if (!rc)
        rc = copy_field(ev->id, sizeof ev->id, id ? id : "", "id", err, err_len);
    if (!rc)
        rc = copy_field(ev->tenant, sizeof ev->tenant, r->tenant, "subject", err, err_len);
    if (!rc)
        rc = copy_field(ev->site, sizeof ev->site, site ? site : "", "data.site", err, err_len);
    if (!rc)
        rc = copy_field(ev->policy, sizeof ev->policy,
                        r->resource == GM_GPU_RES_COPY ? GM_GPU_POLICY_COPY : GM_GPU_POLICY_KERNEL,
                        "data.policy", err, err_len);
    if (rc)
        return rc;
    snprintf(ev->device, sizeof ev->device, "gpu%u", r->device);
    ev->seq = seq;
    ev->time_us = r->window_end_ns / 1000;
    ev->window_start_us = r->window_start_ns / 1000;
    ev->window_end_us = r->window_end_ns / 1000;
    ev->gpu_us = r->gpu_us;
    ev->kernels = r->kernels;
    ev->unattributed_us = res->windows[lo].unattributed_us;
    return 0;
}
