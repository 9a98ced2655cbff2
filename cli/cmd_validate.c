/* `gridmeter validate`: checks usage events (JSON lines on stdin) against the contract. */
#include "cli.h"
#include "gm_common.h"
#include "gm_ingest.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int gm_cmd_validate(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "validate",
        "Check usage events, one JSON object per line on stdin, against the event contract "
        "(docs/events.md). Prints `line N: <field>: <rule>` for each invalid event, then `N "
        "valid, M invalid`; exits 1 if any was invalid. Blank lines are skipped.",
        "gridmeter validate < events.jsonl"};
    gm_opt opts[] = {{0}};
    char err[512];
    int rc = gm_opts_parse(&info, opts, argc, argv, NULL, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter validate: %s\n", err), 2);

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t line_no = 0, valid = 0, invalid = 0;
    gm_event ev;
    gm_event_error e;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        size_t i = 0;
        while (i < len && strchr(" \t\r", line[i]))
            i++;
        if (i == len)
            continue;
        if (gm_event_decode_ex(line, len, &ev, &e) == 0) {
            valid++;
        } else {
            invalid++;
            printf("line %" PRIu64 ": %s: %s\n", line_no, e.field, e.rule);
        }
    }
    free(line);
    if (ferror(stdin)) {
        fprintf(stderr, "gridmeter validate: reading stdin failed\n");
        return 2;
    }
    printf("%" PRIu64 " valid, %" PRIu64 " invalid\n", valid, invalid);
    return invalid ? 1 : 0;
}
