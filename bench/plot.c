/* SPDX-License-Identifier: MIT */
/* herald-bench: latency percentile curves and throughput over time, drawn by gnuplot. */
#include "hb.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/*
 * One gnuplot process per scenario draws two files: <scenario>-latency.<fmt>
 * (latency against percentile on the usual HdrHistogram axis, 1/(1-p) on a
 * log scale, one line per broker) and <scenario>-throughput.<fmt> (delivered
 * msgs/s over time per broker). The data travel inline as datablocks.
 */
static void terminal(FILE *g, const char *fmt, const char *dir, const char *scen, const char *what)
{
    if (!strcmp(fmt, "svg"))
        fprintf(g, "set terminal svg size 900,540 dynamic background '#ffffff'\n");
    else
        fprintf(g, "set terminal png size 900,540\n");
    fprintf(g, "set output '%s/%s-%s.%s'\n", dir, scen, what, fmt);
}

static int plot_scenario(FILE *g, const char *dir, const char *fmt, const char *scen,
                         hb_result_t *const *rs, int n)
{
    int nlat = 0, nser = 0;
    for (int i = 0; i < n; i++) {
        const hb_result_t *r = rs[i];
        if (strcmp(r->scenario, scen) || !r->ok)
            continue;
        if (r->lat && r->lat->count) {
            fprintf(g, "$lat%d << EOD\n", i);
            /* 1/(1-p) from 1 to 10^6 in 1/20-decade steps, stopping at the last value. */
            for (int k = 0; k <= 120; k++) {
                double x = pow(10, k / 20.0);
                double p = 100.0 * (1 - 1 / x);
                fprintf(g, "%.6g %.6g\n", x, (double)hb_hist_percentile(r->lat, p) / 1e6);
                if ((double)r->lat->count * (1 - p / 100) < 1)
                    break;
            }
            fprintf(g, "EOD\n");
            nlat++;
        }
        if (r->nseries) {
            fprintf(g, "$ser%d << EOD\n", i);
            for (int k = 0; k < r->nseries; k++)
                fprintf(g, "%.3f %.0f %.0f\n", r->series[k].t, r->series[k].del_rate,
                        r->series[k].pub_rate);
            fprintf(g, "EOD\n");
            nser++;
        }
    }
    if (nlat) {
        terminal(g, fmt, dir, scen, "latency");
        fprintf(g, "set title 'herald-bench %s: latency by percentile'\n", scen);
        fprintf(g, "set logscale x\nset logscale y\nset grid\nset key top left\n");
        fprintf(g, "set xlabel 'percentile'\nset ylabel 'latency (ms)'\n");
        /* Tic labels are formats to gnuplot: a literal % is written %% there. */
        fprintf(g, "set xtics ('0%%%%' 1, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, "
                   "'99.99%%%%' 10000, '99.999%%%%' 100000, '99.9999%%%%' 1000000)\n");
        fprintf(g, "plot ");
        int first = 1;
        for (int i = 0; i < n; i++)
            if (!strcmp(rs[i]->scenario, scen) && rs[i]->ok && rs[i]->lat && rs[i]->lat->count) {
                fprintf(g, "%s$lat%d using 1:2 with lines linewidth 2 title '%s'",
                        first ? "" : ", ", i, rs[i]->broker);
                first = 0;
            }
        fprintf(g, "\nunset logscale\nunset xtics\nset xtics\n");
    }
    if (nser) {
        terminal(g, fmt, dir, scen, "throughput");
        fprintf(g, "set title 'herald-bench %s: delivered msgs/s over time'\n", scen);
        fprintf(g, "set grid\nset key top right\nset yrange [0:*]\n");
        fprintf(g, "set xlabel 'seconds'\nset ylabel 'msgs/s'\nset format y '%%.1s%%c'\n");
        fprintf(g, "plot ");
        int first = 1;
        for (int i = 0; i < n; i++)
            if (!strcmp(rs[i]->scenario, scen) && rs[i]->ok && rs[i]->nseries) {
                fprintf(g, "%s$ser%d using 1:2 with lines linewidth 2 title '%s'",
                        first ? "" : ", ", i, rs[i]->broker);
                first = 0;
            }
        fprintf(g, "\nset format y\nset yrange [*:*]\n");
    }
    return nlat + nser;
}

int hb_plot(const char *dir, const char *fmt, hb_result_t *const *rs, int n)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -1;
    if (strchr(dir, '\''))
        return -1; /* it is quoted inside the gnuplot script */
    FILE *g = popen("gnuplot", "w");
    if (!g)
        return -1;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            if (!strcmp(rs[j]->scenario, rs[i]->scenario))
                seen = 1;
        if (!seen)
            plot_scenario(g, dir, fmt, rs[i]->scenario, rs, n);
    }
    int st = pclose(g);
    return st == 0 ? 0 : -1;
}
