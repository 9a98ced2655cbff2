/* Shared foundation of every gridmeter module: error codes, logging, options and config,
 * strict number and time parsing, and exact decimal money types.
 *
 * Nothing here knows Kafka, PostgreSQL or HTTP. Everything that ends in money uses the
 * integer types below (int64 quantities, __int128 amounts); there is no float on that path.
 */
#ifndef GM_COMMON_H
#define GM_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GM_MUSTCHECK    __attribute__((warn_unused_result))
#define GM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- Errors ---------------------------------------------------------------------------
 * Functions return 0 or a negative GM_E… code, and write the human reason (object and
 * rule) into a caller's buffer when they take one. Codes and names come from one list. */
#define GM_ERRNO_MAP(XX)                                                                           \
    XX(EINVAL, "invalid input")                                                                    \
    XX(ERANGE, "value out of range or arithmetic overflow")                                        \
    XX(ENOMEM, "out of memory")                                                                    \
    XX(EIO, "I/O error")                                                                           \
    XX(ENOTFOUND, "not found")                                                                     \
    XX(EFULL, "full: back-pressure")                                                               \
    XX(ECONFIG, "configuration error")                                                             \
    XX(EDB, "database error")                                                                      \
    XX(EKAFKA, "Kafka error")                                                                      \
    XX(ECONFLICT, "conflict")                                                                      \
    XX(EFENCED, "fenced: another owner took over")                                                 \
    XX(EUNKNOWN, "outcome unknown")                                                                \
    XX(EUNAVAIL, "unavailable")                                                                    \
    XX(ECORRUPT, "corrupt data")

typedef enum {
    GM_OK = 0,
#define XX(code, _) GM_##code,
    GM__ERR_FIRST = -100,
    GM_ERRNO_MAP(XX)
#undef XX
} gm_err;

/* Static text for a code ("invalid input"); never NULL. */
const char *gm_strerror(int code);
/* Symbolic name ("GM_EINVAL"); never NULL. */
const char *gm_errname(int code);

/* snprintf into an error buffer that may be NULL; returns `code` so that callers can write
 * `return gm_fail(err, errlen, GM_EINVAL, "field %s: …", f);`. */
int gm_fail(char *err, size_t err_len, int code, const char *fmt, ...) GM_PRINTF(4, 5);

/* ---- Logging ---------------------------------------------------------------------------
 * One line per record on stderr, logfmt: `ts=… level=info comp=rater msg="…" k=v …`.
 * The level comes from GRIDMETER_LOG_LEVEL (debug, info, warn, error); default info. */
typedef enum { GM_LOG_DEBUG = 0, GM_LOG_INFO, GM_LOG_WARN, GM_LOG_ERROR } gm_log_level;

void gm_log_set_level(gm_log_level level);
gm_log_level gm_log_get_level(void);
/* By convention the text is `msg="what happened" key=value …`; plain text without '=' is
 * logged as msg="…". */
void gm_log(gm_log_level level, const char *comp, const char *fmt, ...) GM_PRINTF(3, 4);
#define gm_debug(comp, ...) gm_log(GM_LOG_DEBUG, comp, __VA_ARGS__)
#define gm_info(comp, ...)  gm_log(GM_LOG_INFO, comp, __VA_ARGS__)
#define gm_warn(comp, ...)  gm_log(GM_LOG_WARN, comp, __VA_ARGS__)
#define gm_error(comp, ...) gm_log(GM_LOG_ERROR, comp, __VA_ARGS__)

/* ---- Options and config ----------------------------------------------------------------
 * Every subcommand declares its options in one table. Values come, strongest first, from
 * the command line (`--name value` or `--name=value`), the environment (`env`, e.g.
 * GRIDMETER_KAFKA_BROKERS), the config file (`key`, e.g. `kafka.brokers`, in the file named
 * by --config or GRIDMETER_CONFIG), then `def`. `--help` prints the table. The file format
 * is documented in docs/configuration.md: `[section]` headers and `key = value` lines. */
typedef enum { GM_OPT_STR = 0, GM_OPT_INT, GM_OPT_FLAG } gm_opt_type;

typedef struct gm_opt {
    const char *name; /* command-line name without dashes: "brokers" */
    const char *key;  /* config-file key "section.key", or NULL */
    const char *env;  /* environment variable, or NULL */
    const char *def;  /* default text, or NULL for none */
    gm_opt_type type;
    const char *help;  /* one line */
    const char *value; /* out: resolved text (points into argv, environ, the file or def) */
    const char *from;  /* out: "command line", "environment", "config file", "default" */
} gm_opt;

typedef struct gm_cmd_info {
    const char *name;    /* "rater" */
    const char *summary; /* one line */
    const char *usage;   /* "gridmeter rater [options]" */
} gm_cmd_info;

/* Parses argv (argv[0] is the subcommand name) against the NULL-name-terminated table.
 * Returns 0, 1 when --help was printed (caller exits 0), or GM_EINVAL/GM_ECONFIG with the
 * reason in err. Positional arguments are left, in order, in argv[1..*n_pos]. */
int gm_opts_parse(const gm_cmd_info *cmd, gm_opt *opts, int argc, char **argv, int *n_pos,
                  char *err, size_t err_len) GM_MUSTCHECK;
void gm_opts_print_help(const gm_cmd_info *cmd, const gm_opt *opts, FILE *out);
/* Finds a resolved option by name; aborts on an unknown name (a programming error). */
const char *gm_opt_str(const gm_opt *opts, const char *name);
int64_t gm_opt_int(const gm_opt *opts, const char *name);
bool gm_opt_flag(const gm_opt *opts, const char *name);

/* ---- Strict parsing --------------------------------------------------------------------*/
/* Decimal digits only (no sign, no spaces, no leading zeros unless the number is "0"),
 * value <= max. Returns 0, GM_EINVAL (not a plain integer) or GM_ERANGE (> max). */
int gm_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out) GM_MUSTCHECK;
/* Like gm_parse_u64 but accepts a leading '-' and parses into int64. */
int gm_parse_i64(const char *s, size_t len, int64_t *out) GM_MUSTCHECK;
/* The offset of the first "\u0000" escape inside a JSON string of text (a key or a value),
 * or SIZE_MAX when there is none. cJSON decodes that escape to a NUL byte and so cuts the
 * C string short ("acme\u0000x" would read as "acme"); documents are refused instead. */
size_t gm_json_nul_escape(const char *text, size_t len);

/* ---- Time ------------------------------------------------------------------------------
 * Instants are int64 microseconds since 1970-01-01T00:00:00Z ("_us"). */
#define GM_US_PER_SEC  INT64_C(1000000)
#define GM_US_PER_HOUR (INT64_C(3600) * GM_US_PER_SEC)
#define GM_US_PER_DAY  (INT64_C(86400) * GM_US_PER_SEC)

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM), 't'/'z' accepted, year
 * 1970..9999, fraction up to 9 digits (truncated to microseconds only when the extra digits
 * are zero, otherwise GM_EINVAL: an instant is never silently changed). Leap second 60 is
 * refused. The reason names the rule broken. */
int gm_time_parse(const char *s, size_t len, int64_t *us_out, char *err,
                  size_t err_len) GM_MUSTCHECK;
/* Writes "2026-11-27T22:00:00.123456Z" (always 6 fraction digits); buf >= 32 bytes. */
void gm_time_format(int64_t us, char *buf, size_t buf_len);
/* Days since epoch <-> civil date (proleptic Gregorian). */
int64_t gm_days_from_civil(int64_t y, unsigned m, unsigned d);
void gm_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);
/* First instant of the UTC calendar month containing `us`, and of the next month. */
int64_t gm_month_start(int64_t us);
int64_t gm_month_next(int64_t us);
/* The one clock (common/clock.c): every decision that depends on "now" reads gm_now_us().
 * It is CLOCK_REALTIME, moved by GRIDMETER_NOW=<RFC 3339 instant> in the environment to that
 * instant at process start, running on from there. gm_clock_check() reports a value that
 * does not parse (GM_ECONFIG; gm_now_us() aborts on one); gm_clock_offset_us() is the shift
 * from the real clock (0 when not moved), passed to PostgreSQL so that gm.now() agrees;
 * gm_clock_set_us() moves the clock at run time (tests), also running on;
 * gm_clock_freeze_us() stops it at an instant (tests of boundaries to the microsecond). */
int64_t gm_now_us(void);
int gm_clock_check(char *err, size_t err_len) GM_MUSTCHECK;
int64_t gm_clock_offset_us(void);
bool gm_clock_is_set(void);
void gm_clock_set_us(int64_t now_us);
void gm_clock_freeze_us(int64_t now_us);
/* Monotonic clock in microseconds: for durations and timeouts only, never for the calendar. */
int64_t gm_mono_us(void);

/* ---- Exact decimals --------------------------------------------------------------------
 * A decimal is an __int128 count of 10^-scale units. Prices use GM_PRICE_SCALE (12): one
 * unit of `price_p` is 10^-12 of the currency's major unit per priced unit. */
typedef __int128 gm_i128;
#define GM_PRICE_SCALE 12
#define GM_I128_MAX    ((gm_i128)(((unsigned __int128)1 << 127) - 1))
#define GM_I128_MIN    (-GM_I128_MAX - 1)

/* Parses "-12.345" with at most `scale` fraction digits into value*10^scale. No exponent,
 * no '+', no spaces; "1." and ".5" are refused. GM_EINVAL names the rule in err, GM_ERANGE
 * when it does not fit, and more than `scale` fraction digits is GM_ERANGE unless they are
 * all zero. */
int gm_dec_parse(const char *s, size_t len, int scale, gm_i128 *out, char *err,
                 size_t err_len) GM_MUSTCHECK;
/* Formats value*10^-scale with exactly `scale` fraction digits ("-0.050000"); returns the
 * length written. buf >= 48 bytes always suffices. */
size_t gm_dec_format(gm_i128 value, int scale, char *buf, size_t buf_len);
/* Plain integer text of an __int128. */
size_t gm_i128_format(gm_i128 value, char *buf, size_t buf_len);
/* 10^n for 0 <= n <= 38. */
gm_i128 gm_pow10_i128(int n);

/* Drops a UTF-8 sequence cut short at the end of s (after a byte-limited copy such as
 * snprintf into a fixed buffer), so that s stays valid UTF-8. Returns the new length. */
size_t gm_utf8_trim_partial(char *s);

/* Checked arithmetic: 0 or GM_ERANGE (never wraps). */
static inline int gm_i128_add(gm_i128 a, gm_i128 b, gm_i128 *out)
{
    return __builtin_add_overflow(a, b, out) ? GM_ERANGE : 0;
}
static inline int gm_i128_mul(gm_i128 a, gm_i128 b, gm_i128 *out)
{
    return __builtin_mul_overflow(a, b, out) ? GM_ERANGE : 0;
}

/* ---- Defaults shared by the commands ---------------------------------------------------
 * The Kafka broker that scripts/services.sh starts; production sets GRIDMETER_KAFKA_BROKERS. */
#define GM_DEFAULT_KAFKA_BROKERS "127.0.0.1:59092"

/* ---- Files -------------------------------------------------------------------------------*/
/* Reads a whole file: a malloc'd buffer NUL-terminated after its *len bytes (the caller
 * frees it), or NULL with "PATH: cannot open: reason" in err. */
char *gm_read_file(const char *path, size_t *len, char *err, size_t err_len);

/* ---- Small things ----------------------------------------------------------------------*/
#define GM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* Aborts with a message on allocation failure: used only where the caller cannot recover. */
void *gm_xmalloc(size_t n);
void *gm_xcalloc(size_t n, size_t size);
void *gm_xrealloc(void *p, size_t n);
char *gm_xstrdup(const char *s);

#endif /* GM_COMMON_H */
