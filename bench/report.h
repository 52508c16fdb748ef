/* SPDX-License-Identifier: MIT */
/* herald-bench: results of one scenario run and their JSON / Markdown reports. */
#ifndef HB_REPORT_H
#define HB_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "hist.h"

/* One sample of the throughput time series (taken by the sampler). */
typedef struct hb_sample_s {
    double t;            /* seconds since the run started */
    double pub_rate;     /* msgs/s published during the interval */
    double del_rate;     /* msgs/s delivered during the interval */
    double broker_cpu;   /* % of one core during the interval, -1 if unknown */
    uint64_t broker_rss; /* bytes, 0 if unknown */
} hb_sample_t;

/* What a scenario was asked to do. */
typedef struct hb_params_s {
    int pubs, subs, topics, size, threads, stalled, conns;
    double rate;               /* total msgs/s, 0 = as fast as the window allows */
    double duration;           /* seconds */
    uint64_t count;            /* per publisher, 0 = use duration */
    uint64_t window;           /* max deliveries in flight (max-rate mode) */
    const char *sub_transport; /* "tcp" or "ws" */
    const char *transform;     /* Herald only: a SUB transform every subscriber asks for */
} hb_params_t;

/* Everything measured in one run of one scenario against one broker. */
typedef struct hb_result_s {
    char scenario[32];
    char broker[32];  /* adapter name: herald, nats, redis */
    char version[64]; /* broker version if known */
    hb_params_t params;
    int ok;          /* the run completed (set-up, publish, drain) */
    int skipped;     /* the broker cannot run this scenario (error says why) */
    char error[256]; /* why not, or the first error seen */

    uint64_t published, pub_bytes;
    uint64_t expected, delivered, del_bytes;
    uint64_t lost, duplicates, reordered, gaps;
    uint64_t errors, disconnects;
    uint64_t stalled_closed;   /* stalled subscribers the broker cut off */
    double pub_secs, del_secs; /* windows the rates are computed over */
    double pub_rate, del_rate; /* msgs/s */
    double pub_mbps, del_mbps; /* MB/s (10^6) of payload */

    hb_hist_t *lat; /* latency (ns), NULL if not measured */

    double bench_cpu;  /* % of one core used by herald-bench during the run */
    double broker_cpu; /* % of one core, -1 if unknown */
    uint64_t broker_rss, broker_rss_peak, broker_rss_base; /* bytes, 0 if unknown */
    double mem_per_conn;                                   /* bytes, idle scenario */

    hb_sample_t *series;
    int nseries;
} hb_result_t;

/** Fills derived fields (rates) from the raw counts. */
void hb_result_finish(hb_result_t *r);
/** Writes one result as a JSON object (no trailing newline). */
void hb_report_json(FILE *f, const hb_result_t *r, int indent);
/** Writes a JSON array of results. */
void hb_report_json_all(FILE *f, hb_result_t *const *rs, int n);

/* The headline figure of a scenario and whether bigger is better. */
typedef struct hb_headline_s {
    const char *label;
    double value;
    int higher_better;
} hb_headline_t;
hb_headline_t hb_headline(const hb_result_t *r);

/**
 * Writes one Markdown section per scenario: a table with one column per
 * broker and, for each peer, a column "herald/<peer>" with the ratio, then a
 * sentence saying plainly whether Herald is ahead or behind on the headline
 * figure. Results are grouped by scenario in the order they first appear.
 */
void hb_report_markdown(FILE *f, hb_result_t *const *rs, int n);

/** Formats `v` with a k/M/G suffix into `buf` ("1.23M"); returns buf. */
const char *hb_fmt_si(char *buf, size_t n, double v);
/** Formats a duration in ns as "812us", "1.20ms", "2.1s"; returns buf. */
const char *hb_fmt_ns(char *buf, size_t n, double ns);
/** Formats bytes as "512 B", "1.5 KiB", "20.0 MiB"; returns buf. */
const char *hb_fmt_bytes(char *buf, size_t n, double b);

#endif
