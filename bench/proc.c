/* SPDX-License-Identifier: MIT */
/* herald-bench: CPU time and resident memory of a process from /proc, and of ourselves. */
#include "hb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int64_t one_cpu_ns(int pid);
static uint64_t one_rss(int pid);

/*
 * A broker may be several processes (herald --workers N: a primary and its
 * workers): its figures are those of the process and its children, read
 * from /proc/PID/task/PID/children.
 */
static int children(int pid, int *out, int max)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f)
        return 0;
    while (n < max && fscanf(f, "%d", &out[n]) == 1)
        n++;
    fclose(f);
    return n;
}

int64_t hb_proc_cpu_ns(int pid)
{
    int kids[256], n = pid > 0 ? children(pid, kids, 256) : 0;
    int64_t total = one_cpu_ns(pid);
    for (int i = 0; i < n && total >= 0; i++) {
        int64_t k = one_cpu_ns(kids[i]);
        if (k > 0)
            total += k;
    }
    return total;
}

uint64_t hb_proc_rss(int pid)
{
    int kids[256], n = pid > 0 ? children(pid, kids, 256) : 0;
    uint64_t total = one_rss(pid);
    for (int i = 0; i < n; i++)
        total += one_rss(kids[i]);
    return total;
}

static int64_t one_cpu_ns(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2;
    /* Fields 3..: state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt, majflt,
     * cmajflt, utime (14), stime (15). */
    unsigned long long utime = 0, stime = 0;
    if (sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t)((utime + stime) * (1000000000ull / (unsigned long long)hz));
}

static uint64_t one_rss(int pid)
{
    char path[64], line[256];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtoull(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb * 1024;
}

int64_t hb_self_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ll +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ll;
}
