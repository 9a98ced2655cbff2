/* Error codes and their texts (from the one GM_ERRNO_MAP list), and allocation helpers. */
#include "gm_common.h"

#include <stdlib.h>
#include <string.h>

const char *gm_strerror(int code)
{
    switch (code) {
    case GM_OK:
        return "ok";
#define XX(c, text)                                                                                \
    case GM_##c:                                                                                   \
        return text;
        GM_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *gm_errname(int code)
{
    switch (code) {
    case GM_OK:
        return "GM_OK";
#define XX(c, _)                                                                                   \
    case GM_##c:                                                                                   \
        return "GM_" #c;
        GM_ERRNO_MAP(XX)
#undef XX
    default:
        return "GM_E?";
    }
}

int gm_fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
    if (err && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void oom(size_t n)
{
    fprintf(stderr, "gridmeter: out of memory (%zu bytes)\n", n);
    abort();
}

void *gm_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *gm_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *gm_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *gm_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = gm_xmalloc(n);
    memcpy(p, s, n);
    return p;
}
