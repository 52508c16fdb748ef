/* SPDX-License-Identifier: MIT */
/* herald-bench: HDR-style log-bucketed latency histogram. */
#include "hist.h"

#include <string.h>

void hb_hist_init(hb_hist_t *h)
{
    memset(h, 0, sizeof(*h));
}

/*
 * Bucket layout: indices [0, 2*SUB) hold values [0, 2*SUB) exactly (one
 * value per bucket). Above that, octave k (values in [2^(k+SUB_BITS),
 * 2^(k+SUB_BITS+1)), k >= 1) holds SUB buckets of width 2^k each.
 */
size_t hb_hist_index(uint64_t v)
{
    if (v < 2 * HB_HIST_SUB)
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v); /* >= SUB_BITS + 1 */
    if (msb > HB_HIST_MAX_EXP)
        return HB_HIST_BUCKETS - 1;
    int shift = msb - HB_HIST_SUB_BITS; /* >= 1 */
    size_t sub = (size_t)(v >> shift) - HB_HIST_SUB;
    return (size_t)(shift + 1) * HB_HIST_SUB + sub;
}

uint64_t hb_hist_lo(size_t i)
{
    if (i < 2 * HB_HIST_SUB)
        return i;
    size_t shift = i / HB_HIST_SUB - 1;
    size_t sub = i % HB_HIST_SUB;
    return (uint64_t)(HB_HIST_SUB + sub) << shift;
}

uint64_t hb_hist_hi(size_t i)
{
    if (i < 2 * HB_HIST_SUB)
        return i;
    size_t shift = i / HB_HIST_SUB - 1;
    return hb_hist_lo(i) + ((uint64_t)1 << shift) - 1;
}

void hb_hist_record_n(hb_hist_t *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count += n;
    h->sum += (double)v * (double)n;
    h->b[hb_hist_index(v)] += n;
}

void hb_hist_record(hb_hist_t *h, uint64_t v)
{
    hb_hist_record_n(h, v, 1);
}

void hb_hist_merge(hb_hist_t *dst, const hb_hist_t *src)
{
    if (src->count == 0)
        return;
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
    for (size_t i = 0; i < HB_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
}

uint64_t hb_hist_percentile(const hb_hist_t *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p <= 0)
        return h->min;
    if (p >= 100)
        return h->max;
    /* The rank of the p-th value, 1-based, rounded up like HdrHistogram. */
    double want = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HB_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hb_hist_hi(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double hb_hist_mean(const hb_hist_t *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}
