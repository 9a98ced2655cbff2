/* The `gridmeter` command: dispatches to the subcommands listed in commands.h. */
#include "cli.h"
#include "gm_common.h"

#include <signal.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
#define GM_CMD(name, fn, summary) {#name, fn, summary},
#include "commands.h"
#undef GM_CMD
};

static void usage(FILE *out)
{
    fprintf(out, "gridmeter: metering and billing for token-as-a-service inference at the edge\n\n"
                 "usage: gridmeter <command> [options]\n"
                 "       gridmeter <command> --help\n\ncommands:\n");
    for (size_t i = 0; i < GM_ARRAY_LEN(commands); i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nEvery option can also come from the environment or a config file "
                 "(--config FILE,\nGRIDMETER_CONFIG); see docs/configuration.md. PostgreSQL "
                 "settings use libpq's\nPGHOST, PGPORT, PGDATABASE, PGUSER; Kafka brokers "
                 "GRIDMETER_KAFKA_BROKERS.\n");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    char err[320];
    if (gm_clock_check(err, sizeof err)) {
        fprintf(stderr, "gridmeter: %s\n", err);
        return 2;
    }
    if (gm_clock_is_set()) {
        char at[40];
        gm_time_format(gm_now_us(), at, sizeof at);
        gm_warn("clock", "msg=\"clock moved by GRIDMETER_NOW\" now=%s offset_us=%lld", at,
                (long long)gm_clock_offset_us());
    }
    if (!strcmp(argv[1], "--version"))
        return gm_cmd_version(1, argv + 1);
    for (size_t i = 0; i < GM_ARRAY_LEN(commands); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "gridmeter: unknown command \"%s\" (see gridmeter --help)\n", argv[1]);
    return 2;
}
