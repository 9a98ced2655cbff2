/* Subcommand options: command line > environment > config file > default, and --help.
 *
 * The config file (docs/configuration.md) is read once per process and kept: values that
 * options point at live as long as the process. Format: '#' or ';' comments, `[section]`
 * headers, `key = value` lines; the key seen by options is "section.key". */
#include "gm_common.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct cfg_entry {
    char *key;
    char *value;
} cfg_entry;

static cfg_entry *cfg;
static size_t cfg_n;

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_config(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return gm_fail(err, err_len, GM_ECONFIG, "config file %s: cannot open: %s", path,
                       strerror(errno));
    char line[4096], section[256] = "";
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] != '\0' || e - s - 1 >= (long)sizeof section || e == s + 1) {
                fclose(f);
                return gm_fail(err, err_len, GM_ECONFIG,
                               "config file %s:%d: a section header must be [name]", path, lineno);
            }
            *e = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            fclose(f);
            return gm_fail(err, err_len, GM_ECONFIG, "config file %s:%d: expected `key = value`",
                           path, lineno);
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        if (*k == '\0') {
            fclose(f);
            return gm_fail(err, err_len, GM_ECONFIG, "config file %s:%d: empty key", path, lineno);
        }
        size_t vlen = strlen(v);
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
            v[vlen - 1] = '\0';
            v++;
        }
        char full[600];
        snprintf(full, sizeof full, "%s%s%s", section, *section ? "." : "", k);
        cfg = gm_xrealloc(cfg, (cfg_n + 1) * sizeof *cfg);
        cfg[cfg_n].key = gm_xstrdup(full);
        cfg[cfg_n].value = gm_xstrdup(v);
        cfg_n++;
    }
    fclose(f);
    return 0;
}

static const char *cfg_get(const char *key)
{
    const char *found = NULL;
    for (size_t i = 0; i < cfg_n; i++) /* last one wins */
        if (!strcmp(cfg[i].key, key))
            found = cfg[i].value;
    return found;
}

static gm_opt *find_opt(gm_opt *opts, const char *name, size_t name_len)
{
    for (gm_opt *o = opts; o->name; o++)
        if (strlen(o->name) == name_len && !strncmp(o->name, name, name_len))
            return o;
    return NULL;
}

static int check_value(const gm_opt *o, char *err, size_t err_len)
{
    if (o->type == GM_OPT_INT && o->value) {
        int64_t v;
        if (gm_parse_i64(o->value, strlen(o->value), &v) != 0)
            return gm_fail(err, err_len, GM_EINVAL,
                           "option --%s (from %s): must be an integer, got \"%s\"", o->name,
                           o->from, o->value);
    }
    if (o->type == GM_OPT_FLAG && o->value) {
        const char *v = o->value;
        if (strcmp(v, "1") && strcmp(v, "0") && strcmp(v, "true") && strcmp(v, "false") &&
            strcmp(v, "yes") && strcmp(v, "no") && strcmp(v, "on") && strcmp(v, "off"))
            return gm_fail(err, err_len, GM_EINVAL,
                           "option --%s (from %s): must be true or false, got \"%s\"", o->name,
                           o->from, v);
    }
    return 0;
}

int gm_opts_parse(const gm_cmd_info *cmd, gm_opt *opts, int argc, char **argv, int *n_pos,
                  char *err, size_t err_len)
{
    const char *config_path = getenv("GRIDMETER_CONFIG");
    int npos = 0;
    for (gm_opt *o = opts; o->name; o++) {
        o->value = NULL;
        o->from = NULL;
    }
    /* Pass 1: command line. Positionals are compacted to argv[1..]. */
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gm_opts_print_help(cmd, opts, stdout);
            return 1;
        }
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                argv[1 + npos++] = argv[i];
            break;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            argv[1 + npos++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        if (name_len == 6 && !strncmp(name, "config", 6)) {
            if (eq)
                config_path = eq + 1;
            else if (i + 1 < argc)
                config_path = argv[++i];
            else
                return gm_fail(err, err_len, GM_EINVAL, "option --config: needs a file name");
            continue;
        }
        gm_opt *o = find_opt(opts, name, name_len);
        if (!o && name_len > 3 && !strncmp(name, "no-", 3)) {
            gm_opt *neg = find_opt(opts, name + 3, name_len - 3);
            if (neg && neg->type == GM_OPT_FLAG && !eq) {
                neg->value = "false";
                neg->from = "command line";
                continue;
            }
        }
        if (!o)
            return gm_fail(err, err_len, GM_EINVAL,
                           "unknown option --%.*s for `gridmeter %s` (see --help)", (int)name_len,
                           name, cmd->name);
        if (eq)
            o->value = eq + 1;
        else if (o->type == GM_OPT_FLAG)
            o->value = "true";
        else if (i + 1 < argc)
            o->value = argv[++i];
        else
            return gm_fail(err, err_len, GM_EINVAL, "option --%s: needs a value", o->name);
        o->from = "command line";
    }
    if (n_pos)
        *n_pos = npos;
    /* Pass 2: environment, config file, default. */
    if (config_path && *config_path && !cfg) {
        int rc = load_config(config_path, err, err_len);
        if (rc)
            return rc;
    }
    for (gm_opt *o = opts; o->name; o++) {
        if (!o->value && o->env && getenv(o->env) && *getenv(o->env)) {
            o->value = getenv(o->env);
            o->from = "environment";
        }
        if (!o->value && o->key && cfg_get(o->key)) {
            o->value = cfg_get(o->key);
            o->from = "config file";
        }
        if (!o->value && o->def) {
            o->value = o->def;
            o->from = "default";
        }
        int rc = check_value(o, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

void gm_opts_print_help(const gm_cmd_info *cmd, const gm_opt *opts, FILE *out)
{
    fprintf(out, "%s\n\nusage: %s\n\noptions:\n", cmd->summary, cmd->usage);
    for (const gm_opt *o = opts; o->name; o++) {
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s", o->name,
                 o->type == GM_OPT_FLAG ? "" : (o->type == GM_OPT_INT ? " N" : " VALUE"));
        fprintf(out, "  %-26s %s\n", lhs, o->help);
        if (o->env || o->key || o->def) {
            fprintf(out, "  %-26s ", "");
            const char *sep = "";
            if (o->env) {
                fprintf(out, "env %s", o->env);
                sep = "; ";
            }
            if (o->key) {
                fprintf(out, "%sconfig %s", sep, o->key);
                sep = "; ";
            }
            if (o->def)
                fprintf(out, "%sdefault %s", sep, *o->def ? o->def : "\"\"");
            fputc('\n', out);
        }
    }
    fprintf(out, "  %-26s %s\n", "--config FILE",
            "config file (env GRIDMETER_CONFIG); see docs/configuration.md");
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
}

static const gm_opt *lookup(const gm_opt *opts, const char *name)
{
    for (const gm_opt *o = opts; o->name; o++)
        if (!strcmp(o->name, name))
            return o;
    fprintf(stderr, "gridmeter: internal error: no option named %s\n", name);
    abort();
}

const char *gm_opt_str(const gm_opt *opts, const char *name)
{
    return lookup(opts, name)->value;
}

int64_t gm_opt_int(const gm_opt *opts, const char *name)
{
    const gm_opt *o = lookup(opts, name);
    int64_t v = 0;
    if (o->value && gm_parse_i64(o->value, strlen(o->value), &v) != 0)
        return 0; /* already refused by gm_opts_parse */
    return v;
}

bool gm_opt_flag(const gm_opt *opts, const char *name)
{
    const char *v = lookup(opts, name)->value;
    return v && (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"));
}
