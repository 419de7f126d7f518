/* SPDX-License-Identifier: Apache-2.0 */
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Process-wide logger state: written once at start-up, read everywhere. */
static const char *log_prog = "qt";
static volatile int log_level = LOG_LVL_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

int log_parse_level(const char *s, enum log_level *out)
{
    static const struct {
        const char *name;
        enum log_level lvl;
    } names[] = {{"error", LOG_LVL_ERROR},
                 {"warn", LOG_LVL_WARN},
                 {"warning", LOG_LVL_WARN},
                 {"info", LOG_LVL_INFO},
                 {"debug", LOG_LVL_DEBUG}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].lvl;
            return 0;
        }
    }
    return -EINVAL;
}

int log_set_level_arg(const char *prog, const char *arg)
{
    enum log_level lvl;

    if (log_parse_level(arg, &lvl)) {
        fprintf(stderr, "%s: --log-level '%s': expected error|warn|info|debug\n", prog, arg);
        return -EINVAL;
    }
    log_set_level(lvl);
    return 0;
}

void log_init(const char *prog, enum log_level level)
{
    const char *env = getenv("QT_LOG");
    enum log_level from_env;

    if (prog)
        log_prog = prog;
    log_level = level;
    if (env && log_parse_level(env, &from_env) == 0)
        log_level = from_env;
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

enum log_level log_get_level(void)
{
    return (enum log_level)log_level;
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];

    if ((int)level > log_level || !fmt)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ld %s %s ", stamp, ts.tv_nsec / 1000000, log_prog, level_names[level]);
    vfprintf(stderr, fmt, ap);
    if (fmt[0] && fmt[strlen(fmt) - 1] != '\n')
        fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}
