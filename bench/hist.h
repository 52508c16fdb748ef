/* SPDX-License-Identifier: MIT */
/* herald-bench: HDR-style log-bucketed latency histogram (~0.8% precision). */
#ifndef HB_HIST_H
#define HB_HIST_H

#include <stddef.h>
#include <stdint.h>

/*
 * Values (nanoseconds) are bucketed by their power of two and, inside it, by
 * the next HB_HIST_SUB_BITS bits of mantissa: 128 sub-buckets per octave, so
 * a bucket is at most 1/128 of its value wide. Values below 128 are exact.
 * Values beyond 2^HB_HIST_MAX_EXP are clamped into the last bucket (the max
 * is still kept exactly).
 */
#define HB_HIST_SUB_BITS 7
#define HB_HIST_SUB (1u << HB_HIST_SUB_BITS)
#define HB_HIST_MAX_EXP 44 /* ~4.9 hours in ns */
#define HB_HIST_BUCKETS ((HB_HIST_MAX_EXP - HB_HIST_SUB_BITS + 2) * HB_HIST_SUB)

typedef struct hb_hist_s {
    uint64_t count;
    uint64_t min, max;
    double sum;
    uint64_t b[HB_HIST_BUCKETS];
} hb_hist_t;

/** Clears `h` (caller's storage). */
void hb_hist_init(hb_hist_t *h);
/** Records one value. */
void hb_hist_record(hb_hist_t *h, uint64_t v);
/** Records `n` occurrences of one value. */
void hb_hist_record_n(hb_hist_t *h, uint64_t v, uint64_t n);
/** Adds every recorded value of `src` to `dst`. */
void hb_hist_merge(hb_hist_t *dst, const hb_hist_t *src);
/**
 * Returns the value at percentile `p` (0..100): the highest value equivalent
 * to the bucket holding the p-th value (as HdrHistogram does), never above the
 * recorded max. 0 for an empty histogram.
 */
uint64_t hb_hist_percentile(const hb_hist_t *h, double p);
/** Mean of the recorded values (exact, from their sum); 0 when empty. */
double hb_hist_mean(const hb_hist_t *h);

/** Bucket index of `v`; exposed for the unit tests. */
size_t hb_hist_index(uint64_t v);
/** Lowest and highest value that map to bucket `i`. */
uint64_t hb_hist_lo(size_t i);
uint64_t hb_hist_hi(size_t i);

#endif
