/* The identifier rules of gm_ident.h: one table of lengths and character sets, one check. */
#include "gm_ident.h"
#include "gm_common.h"

#include <string.h>

enum { C_NAME = 1, C_ID = 2, C_ALNUM = 4 };

/* Character classes (GNU range designators; everything else is 0). */
static const unsigned char cls[256] = {
    ['A' ... 'Z'] = C_NAME | C_ID | C_ALNUM,
    ['a' ... 'z'] = C_NAME | C_ID | C_ALNUM,
    ['0' ... '9'] = C_NAME | C_ID | C_ALNUM,
    ['.'] = C_NAME | C_ID,
    ['_'] = C_NAME | C_ID,
    ['-'] = C_NAME | C_ID,
    [':'] = C_ID,
    ['/'] = C_ID,
    ['@'] = C_ID,
    ['+'] = C_ID,
    ['='] = C_ID,
    ['~'] = C_ID,
};

static const struct {
    const char *name;
    size_t max;
    unsigned cs; /* C_NAME or C_ID */
    const char *rule;
    const char *sql;
} kinds[GM_IDENT_COUNT] = {
#define ID_RULE(n) "1 to " #n " bytes of " GM_IDENT_CHARSET_ID, "^[A-Za-z0-9._:/@+=~-]{1," #n "}$"
    [GM_IDENT_TENANT] = {"tenant", GM_IDENT_TENANT_MAX, C_NAME,
                         "1 to 64 bytes of " GM_IDENT_CHARSET_NAME,
                         "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    [GM_IDENT_SITE] = {"site", GM_IDENT_SITE_MAX, C_NAME, "1 to 64 bytes of " GM_IDENT_CHARSET_NAME,
                       "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    [GM_IDENT_MODEL] = {"model", GM_IDENT_MODEL_MAX, C_ID, ID_RULE(128)},
    [GM_IDENT_SOURCE] = {"source", GM_IDENT_SOURCE_MAX, C_ID, ID_RULE(128)},
    [GM_IDENT_EVENT_ID] = {"id", GM_IDENT_EVENT_ID_MAX, C_ID, ID_RULE(128)},
    [GM_IDENT_REQUEST_ID] = {"request_id", GM_IDENT_REQUEST_ID_MAX, C_ID, ID_RULE(128)},
    [GM_IDENT_DEVICE] = {"device", GM_IDENT_DEVICE_MAX, C_ID, ID_RULE(64)},
    [GM_IDENT_POLICY] = {"policy", GM_IDENT_POLICY_MAX, C_NAME,
                         "1 to 32 bytes of " GM_IDENT_CHARSET_NAME,
                         "^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"},
#undef ID_RULE
};

static bool known(gm_ident_kind k)
{
    return (unsigned)k < GM_IDENT_COUNT;
}

const char *gm_ident_name(gm_ident_kind k)
{
    return known(k) ? kinds[k].name : "identifier";
}

size_t gm_ident_max(gm_ident_kind k)
{
    return known(k) ? kinds[k].max : 0;
}

const char *gm_ident_charset(gm_ident_kind k)
{
    return known(k) && kinds[k].cs == C_ID ? GM_IDENT_CHARSET_ID : GM_IDENT_CHARSET_NAME;
}

const char *gm_ident_rule(gm_ident_kind k)
{
    return known(k) ? kinds[k].rule : "";
}

const char *gm_ident_sql_pattern(gm_ident_kind k)
{
    return known(k) ? kinds[k].sql : "^$";
}

/* One byte for a rule text: 'x' when printable ASCII, else 0xNN. */
static void show_byte(unsigned char c, char *buf, size_t buf_len)
{
    if (c > 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\')
        snprintf(buf, buf_len, "'%c'", c);
    else
        snprintf(buf, buf_len, "0x%02X", c);
}

int gm_ident_check(gm_ident_kind k, const char *s, size_t len, char *rule, size_t rule_len)
{
    if (!known(k))
        return gm_fail(rule, rule_len, GM_EINVAL, "unknown identifier kind %d", (int)k);
    if (len == 0 || !s)
        return gm_fail(rule, rule_len, GM_EINVAL, "must not be empty");
    if (len > kinds[k].max)
        return gm_fail(rule, rule_len, GM_EINVAL, "must be at most %zu bytes, got %zu",
                       kinds[k].max, len);
    unsigned cs = kinds[k].cs;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(cls[c] & cs)) {
            char b[8];
            show_byte(c, b, sizeof b);
            return gm_fail(rule, rule_len, GM_EINVAL, "must use only %s, got %s at position %zu",
                           gm_ident_charset(k), b, i);
        }
    }
    if (cs == C_NAME && !(cls[(unsigned char)s[0]] & C_ALNUM)) {
        char b[8];
        show_byte((unsigned char)s[0], b, sizeof b);
        return gm_fail(rule, rule_len, GM_EINVAL, "must start with a letter or digit, got %s", b);
    }
    return 0;
}

bool gm_ident_valid(gm_ident_kind k, const char *s)
{
    return s && gm_ident_check(k, s, strlen(s), NULL, 0) == 0;
}

int gm_ident_check_field(gm_ident_kind k, const char *field, const char *s, char *err,
                         size_t err_len)
{
    char rule[200];
    if (gm_ident_check(k, s, s ? strlen(s) : 0, rule, sizeof rule))
        return gm_fail(err, err_len, GM_EINVAL, "%s: %s", field, rule);
    return 0;
}
