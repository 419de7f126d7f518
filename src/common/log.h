/* SPDX-License-Identifier: Apache-2.0 */
/* Leveled logging to stderr: "<time> <prog> <LEVEL> <message>". */
#ifndef QT_COMMON_LOG_H
#define QT_COMMON_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Set program name and threshold. Also honoured: QT_LOG=error|warn|info|debug. */
void log_init(const char *prog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warn", "info", "debug"; returns -EINVAL on anything else. */
int log_parse_level(const char *s, enum log_level *out);
/* Apply a --log-level argument: on a bad value print "<prog>: --log-level '<arg>': expected
 * error|warn|info|debug" to stderr and return -EINVAL, leaving the level unchanged. */
int log_set_level_arg(const char *prog, const char *arg);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define log_err(...)  log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_DEBUG)                                                      \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

#endif
