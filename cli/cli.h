/* Declarations of the subcommand entry points listed in commands.h. */
#ifndef GM_CLI_H
#define GM_CLI_H

#define GM_CMD(name, fn, summary) int fn(int argc, char **argv);
#include "commands.h"
#undef GM_CMD

#endif
