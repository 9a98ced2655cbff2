/* Fuzz target for the event decoder (libFuzzer entry point; also replayed by replay_main.c).
 *
 * Invariants checked on every input, beyond "no crash, no sanitizer report":
 *   1. A refusal has a field and a rule, all printable ASCII or valid UTF-8 reason text.
 *   2. An accepted event passes gm_event_check.
 *   3. decode(encode(decode(x))) == decode(x): the canonical form decodes to the same event.
 *   4. encode is a fixed point: encode(decode(encode(e))) is byte-identical to encode(e).
 */
#include "gm_ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void die(const char *what, const unsigned char *data, size_t size)
{
    fprintf(stderr, "fuzz_event_decode: invariant broken: %s (input %zu bytes: %.*s)\n", what, size,
            (int)(size < 300 ? size : 300), (const char *)data);
    abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static char buf[GM_EVENT_MAX_BYTES + 1], buf2[GM_EVENT_MAX_BYTES + 1];
    gm_event ev, ev2;
    gm_event_error e;
    char err[512];
    if (gm_event_decode_ex((const char *)data, size, &ev, &e) != 0) {
        if (!e.field[0] || !e.rule[0])
            die("refusal without field or rule", data, size);
        if (gm_event_decode((const char *)data, size, &ev2, err, sizeof err) == 0)
            die("decode_ex refused but decode accepted", data, size);
        if (!strstr(err, e.field) || !strstr(err, e.rule))
            die("formatted reason lacks field or rule", data, size);
        return 0;
    }
    if (gm_event_check(&ev, err, sizeof err) != 0)
        die("accepted event fails gm_event_check", data, size);
    size_t n = gm_event_encode(&ev, buf, sizeof buf);
    if (n == 0)
        die("accepted event does not encode", data, size);
    if (gm_event_decode(buf, n, &ev2, err, sizeof err) != 0)
        die("canonical form refused", data, size);
    if (!gm_event_equal(&ev, &ev2))
        die("decode(encode(decode(x))) != decode(x)", data, size);
    size_t n2 = gm_event_encode(&ev2, buf2, sizeof buf2);
    if (n2 != n || memcmp(buf, buf2, n))
        die("encode is not a fixed point", data, size);
    return 0;
}
