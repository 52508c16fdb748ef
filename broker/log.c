/* SPDX-License-Identifier: MIT */
/* Broker logging: one line per event, timestamp, level, connection id. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

int hr__log_level = HR_LOG_INFO;

/* Lines held during start-up (hr__log_hold), written or dropped together. */
static struct {
    int on;
    size_t len;
    char buf[16384];
} held;

static const char *const names[] = {"error", "warn", "info", "debug", "trace"};

int hr__log_parse_level(const char *s)
{
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/*
 * Lines about one connection (conn_id != 0) at info and below are rate
 * limited: a flood of bad clients must not turn into a flood of log lines.
 * At most CONN_LINES_PER_SEC such lines a second; the rest are counted and
 * reported in one line when the next second starts. Debug and trace are
 * opt-in and never limited.
 */
#define CONN_LINES_PER_SEC 50

static int allow_conn_line(const struct timespec *ts)
{
    static time_t window;
    static unsigned lines, suppressed;
    if (ts->tv_sec != window) {
        if (suppressed)
            fprintf(stderr, "%lld: %u connection log lines suppressed in the last second\n",
                    (long long)window, suppressed);
        window = ts->tv_sec;
        lines = suppressed = 0;
    }
    if (lines < CONN_LINES_PER_SEC) {
        lines++;
        return 1;
    }
    suppressed++;
    return 0;
}

void hr__log_write(int level, uint64_t conn_id, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    int n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (conn_id && level <= HR_LOG_INFO && !allow_conn_line(&ts))
        return;
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, names[level]);
    if (conn_id && n > 0 && (size_t)n < sizeof(line))
        n +=
            snprintf(line + n, sizeof(line) - (size_t)n, "conn=%llu ", (unsigned long long)conn_id);
    if (n > 0 && (size_t)n < sizeof(line)) {
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (held.on && held.len + (size_t)n <= sizeof(held.buf)) {
        memcpy(held.buf + held.len, line, (size_t)n);
        held.len += (size_t)n;
        return;
    }
    if (held.on) /* full: keep the order, write what is held first */
        hr__log_release(0);
    fwrite(line, 1, (size_t)n, stderr);
}

void hr__log_hold(void)
{
    held.on = 1;
}

void hr__log_release(int drop)
{
    if (!drop && held.len)
        fwrite(held.buf, 1, held.len, stderr);
    held.on = 0;
    held.len = 0;
}
