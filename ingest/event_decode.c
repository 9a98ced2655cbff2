/* Strict single-pass decoder of usage events (work in progress: refuses everything). */
#include "event_internal.h"

#include <string.h>

int gm_event_decode_ex(const char *msg, size_t len, gm_event *out, gm_event_error *e)
{
    (void)msg;
    (void)len;
    (void)out;
    if (e) {
        memset(e, 0, sizeof *e);
        snprintf(e->field, sizeof e->field, "message");
        snprintf(e->rule, sizeof e->rule, "decoder not implemented yet");
    }
    return GM_EINVAL;
}

int gm_event_decode(const char *msg, size_t len, gm_event *out, char *err, size_t err_len)
{
    gm_event_error e;
    int rc = gm_event_decode_ex(msg, len, out, &e);
    if (rc && err && err_len)
        gm_event_error_format(&e, err, err_len);
    return rc;
}
