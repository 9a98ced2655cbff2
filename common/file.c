/* Reading a whole file into memory (rate cards, contracts, manifests). */
#include "gm_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char *gm_read_file(const char *path, size_t *len, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        gm_fail(err, err_len, GM_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 65536, n = 0, k;
    char *buf = gm_xmalloc(cap);
    while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap)
            buf = gm_xrealloc(buf, cap *= 2);
    }
    buf[n] = '\0'; /* n < cap: callers may also treat the text as a C string */
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        gm_fail(err, err_len, GM_EIO, "%s: read error", path);
        return NULL;
    }
    *len = n;
    return buf;
}
