/* Structured logging: one logfmt line per record on stderr, safe from several threads. */
#include "gm_common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_level = -1;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static gm_log_level level_from_env(void)
{
    const char *s = getenv("GRIDMETER_LOG_LEVEL");
    if (!s)
        return GM_LOG_INFO;
    if (!strcmp(s, "debug"))
        return GM_LOG_DEBUG;
    if (!strcmp(s, "warn"))
        return GM_LOG_WARN;
    if (!strcmp(s, "error"))
        return GM_LOG_ERROR;
    return GM_LOG_INFO;
}

void gm_log_set_level(gm_log_level level)
{
    log_level = (int)level;
}

gm_log_level gm_log_get_level(void)
{
    if (log_level < 0)
        log_level = (int)level_from_env();
    return (gm_log_level)log_level;
}

void gm_log(gm_log_level level, const char *comp, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < gm_log_get_level())
        return;
    char ts[40];
    gm_time_format(gm_now_us(), ts, sizeof ts);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The message is free text up to the first " key=" pair by convention; quote it whole
     * when it has no '=' so that logfmt readers keep it as one value. */
    pthread_mutex_lock(&log_mu);
    if (strchr(msg, '='))
        fprintf(stderr, "ts=%s level=%s comp=%s %s\n", ts, names[level], comp, msg);
    else
        fprintf(stderr, "ts=%s level=%s comp=%s msg=\"%s\"\n", ts, names[level], comp, msg);
    pthread_mutex_unlock(&log_mu);
}
