/* Reading archives of GPU kernel records (the text format of `gridmeter gpu attribute`) into
 * an attribution engine.
 *
 * Format: one item per line; blank lines and lines starting with '#' are ignored; fields are
 * separated by spaces or tabs; numbers are plain decimal integers.
 *   tenant <tag> <tenant-id>                                  tenant behind a tenant tag value
 *   kernel <device> <start_ns> <end_ns> <correlation_id>      a kernel record
 *   copy   <device> <start_ns> <end_ns> <correlation_id>      a memcpy/memset record
 *   tag tenant|step <correlation_id> <value>                  external correlation, any order
 *   step <step_id> <tenant>:<request_id|->:<prefill>:<decode> ...   a step manifest
 */
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>

static int num(const char *s, uint64_t *out)
{
    return s ? gm_parse_u64(s, strlen(s), UINT64_MAX, out) : GM_EINVAL;
}

int gm_gpu_archive_line(gm_gpu_attr *a, char *line, char *err, size_t err_len)
{
    char *save = NULL, *f[64];
    int n = 0;
    for (char *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
        if (n == 64)
            return gm_fail(err, err_len, GM_EINVAL,
                           "more than 64 fields: a step line lists at most 62 requests");
        f[n++] = t;
    }
    if (n == 0 || f[0][0] == '#')
        return 0;
    uint64_t v[4];
    if (strcmp(f[0], "tenant") == 0) {
        if (n != 3 || num(f[1], &v[0]))
            return gm_fail(err, err_len, GM_EINVAL, "tenant: expected `tenant <tag> <id>`");
        return gm_gpu_attr_define_tenant(a, v[0], f[2], err, err_len);
    }
    if (strcmp(f[0], "kernel") == 0 || strcmp(f[0], "copy") == 0) {
        if (n != 5 || num(f[1], &v[0]) || num(f[2], &v[1]) || num(f[3], &v[2]) ||
            num(f[4], &v[3]) || v[0] > UINT32_MAX || v[3] > UINT32_MAX)
            return gm_fail(err, err_len, GM_EINVAL,
                           "%s: expected `%s <device> <start_ns> <end_ns> <correlation_id>` "
                           "(integers)",
                           f[0], f[0]);
        gm_gpu_record r = {.start_ns = v[1],
                           .end_ns = v[2],
                           .device = (uint32_t)v[0],
                           .correlation_id = (uint32_t)v[3],
                           .resource = f[0][0] == 'c' ? GM_GPU_RES_COPY : GM_GPU_RES_KERNEL};
        gm_gpu_attr_add_records(a, &r, 1);
        return 0;
    }
    if (strcmp(f[0], "tag") == 0) {
        int step = n == 4 && strcmp(f[1], "step") == 0;
        if (n != 4 || (!step && strcmp(f[1], "tenant") != 0) || num(f[2], &v[0]) ||
            num(f[3], &v[1]) || v[0] > UINT32_MAX)
            return gm_fail(err, err_len, GM_EINVAL,
                           "tag: expected `tag tenant|step <correlation_id> <value>`");
        gm_gpu_attr_add_tag(a, (uint32_t)v[0], step ? GM_GPU_TAG_STEP : GM_GPU_TAG_TENANT, v[1]);
        return 0;
    }
    if (strcmp(f[0], "step") == 0) {
        if (n < 3 || num(f[1], &v[0]))
            return gm_fail(err, err_len, GM_EINVAL,
                           "step: expected `step <id> <tenant>:<request_id|->:<prefill>:<decode> "
                           "...`");
        gm_gpu_step_request q[62];
        for (int i = 2; i < n; i++) {
            char *p[4], *s2 = NULL;
            int m = 0;
            for (char *t = strtok_r(f[i], ":", &s2); t && m < 4; t = strtok_r(NULL, ":", &s2))
                p[m++] = t;
            uint64_t pre, dec;
            if (m != 4 || num(p[2], &pre) || num(p[3], &dec) || pre > INT64_MAX || dec > INT64_MAX)
                return gm_fail(err, err_len, GM_EINVAL,
                               "step %llu: request %d: expected "
                               "<tenant>:<request_id|->:<prefill>:<decode>",
                               (unsigned long long)v[0], i - 2);
            q[i - 2] = (gm_gpu_step_request){.tenant = p[0],
                                             .request_id = strcmp(p[1], "-") ? p[1] : NULL,
                                             .prefill_tokens = (int64_t)pre,
                                             .decode_tokens = (int64_t)dec};
        }
        return gm_gpu_attr_add_step(a, v[0], q, (size_t)(n - 2), err, err_len);
    }
    return gm_fail(err, err_len, GM_EINVAL,
                   "unknown item \"%s\": expected tenant, kernel, copy, tag or step", f[0]);
}

int gm_gpu_archive_load(gm_gpu_attr *a, FILE *in, const char *name, char *err, size_t err_len)
{
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    char why[384];
    while (getline(&line, &cap, in) > 0) {
        lineno++;
        rc = gm_gpu_archive_line(a, line, why, sizeof why);
        if (rc) {
            gm_fail(err, err_len, rc, "%s:%ld: %s", name ? name : "archive", lineno, why);
            break;
        }
    }
    free(line);
    if (rc == 0 && ferror(in))
        rc = gm_fail(err, err_len, GM_EIO, "%s: read error", name ? name : "archive");
    return rc;
}
