/* The gridmeter subcommands, one line each: GM_CMD(name, function, summary).
 * Each function is `int fn(int argc, char **argv)` (argv[0] is the subcommand name) and
 * lives in cli/cmd_<name>.c; it returns the process exit status. Keep the list in the order
 * an operator meets the commands. */
GM_CMD(migrate, gm_cmd_migrate, "apply the PostgreSQL schema migrations (idempotent)")
GM_CMD(version, gm_cmd_version, "print the version and the libraries it was built with")
