/* SPDX-License-Identifier: MIT */
/* Broker logging to stderr with levels; the level is checked before formatting. */
#ifndef HERALD_BROKER_LOG_H
#define HERALD_BROKER_LOG_H

#include <stdint.h>

enum hr_log_level { HR_LOG_ERROR = 0, HR_LOG_WARN, HR_LOG_INFO, HR_LOG_DEBUG, HR_LOG_TRACE };

extern int hr__log_level;

/** Parses "error|warn|info|debug|trace"; returns the level or -1. */
int hr__log_parse_level(const char *s);

void hr__log_write(int level, uint64_t conn_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Start-up: keeps the lines logged from now on in memory (up to 16 KiB; past
 * that they are written as usual) so that a start that fails can drop them.
 */
void hr__log_hold(void);

/** Writes the lines held since hr__log_hold(), or drops them, and stops holding. */
void hr__log_release(int drop);

/* conn_id 0 means "not about one connection". */
#define HR_LOG(level, conn_id, ...)                                                                \
    do {                                                                                           \
        if ((level) <= hr__log_level)                                                              \
            hr__log_write((level), (conn_id), __VA_ARGS__);                                        \
    } while (0)

#endif
