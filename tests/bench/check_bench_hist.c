/* SPDX-License-Identifier: MIT */
/* Unit tests for herald-bench's HDR-style histogram: bucketing, precision, percentiles, merge. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "hist.h"

static hb_hist_t *new_hist(void)
{
    hb_hist_t *h = malloc(sizeof(*h));
    ck_assert_ptr_nonnull(h);
    hb_hist_init(h);
    return h;
}

START_TEST(test_buckets_cover_values)
{
    /* Every value lands in a bucket whose range holds it; small values are exact. */
    for (uint64_t v = 0; v < 300000; v += (v < 1000 ? 1 : 97)) {
        size_t i = hb_hist_index(v);
        ck_assert_uint_lt(i, HB_HIST_BUCKETS);
        ck_assert_uint_le(hb_hist_lo(i), v);
        ck_assert_uint_ge(hb_hist_hi(i), v);
        if (v < 2 * HB_HIST_SUB)
            ck_assert_uint_eq(hb_hist_lo(i), hb_hist_hi(i));
    }
    for (int e = 8; e < HB_HIST_MAX_EXP; e++) {
        uint64_t v = ((uint64_t)1 << e) + 12345;
        size_t i = hb_hist_index(v);
        ck_assert_uint_le(hb_hist_lo(i), v);
        ck_assert_uint_ge(hb_hist_hi(i), v);
    }
    /* Consecutive buckets tile the number line without gaps or overlap. */
    for (size_t i = 1; i < HB_HIST_BUCKETS; i++)
        ck_assert_uint_eq(hb_hist_lo(i), hb_hist_hi(i - 1) + 1);
}
END_TEST

START_TEST(test_precision_one_percent)
{
    for (uint64_t v = 256; v < (1ull << 40); v = v * 3 / 2 + 7) {
        size_t i = hb_hist_index(v);
        double width = (double)(hb_hist_hi(i) - hb_hist_lo(i) + 1);
        ck_assert_msg(width / (double)v <= 1.0 / 128 + 1e-12, "bucket too wide at %llu",
                      (unsigned long long)v);
    }
}
END_TEST

START_TEST(test_huge_values_clamp)
{
    hb_hist_t *h = new_hist();
    hb_hist_record(h, UINT64_MAX);
    hb_hist_record(h, 1);
    ck_assert_uint_eq(hb_hist_index(UINT64_MAX), HB_HIST_BUCKETS - 1);
    ck_assert_uint_eq(h->max, UINT64_MAX);
    ck_assert_uint_eq(hb_hist_percentile(h, 100), UINT64_MAX);
    ck_assert_uint_eq(hb_hist_percentile(h, 0), 1);
    free(h);
}
END_TEST

START_TEST(test_percentiles_uniform)
{
    hb_hist_t *h = new_hist();
    for (uint64_t v = 1; v <= 100000; v++)
        hb_hist_record(h, v * 1000); /* 1 us .. 100 ms */
    ck_assert_uint_eq(h->count, 100000);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        double want = ps[k] * 1000 * 1000;
        double got = (double)hb_hist_percentile(h, ps[k]);
        ck_assert_msg(got >= want && got <= want * 1.01, "p%g: got %.0f want %.0f", ps[k], got,
                      want);
    }
    ck_assert_uint_eq(hb_hist_percentile(h, 100), 100000000);
    ck_assert_uint_eq(hb_hist_percentile(h, 0), 1000);
    ck_assert(hb_hist_mean(h) > 50000000 - 1 && hb_hist_mean(h) < 50001000);
    free(h);
}
END_TEST

START_TEST(test_percentile_never_above_max)
{
    hb_hist_t *h = new_hist();
    hb_hist_record(h, 1000001);
    hb_hist_record_n(h, 500, 9);
    ck_assert_uint_eq(h->count, 10);
    ck_assert_uint_eq(hb_hist_percentile(h, 50), 500 + (hb_hist_hi(hb_hist_index(500)) - 500));
    ck_assert_uint_le(hb_hist_percentile(h, 90), 503);
    ck_assert_uint_eq(hb_hist_percentile(h, 99), 1000001);
    ck_assert_uint_eq(hb_hist_percentile(h, 99.99), 1000001);
    free(h);
}
END_TEST

START_TEST(test_empty)
{
    hb_hist_t *h = new_hist();
    ck_assert_uint_eq(hb_hist_percentile(h, 50), 0);
    ck_assert(hb_hist_mean(h) == 0);
    hb_hist_record_n(h, 5, 0);
    ck_assert_uint_eq(h->count, 0);
    free(h);
}
END_TEST

START_TEST(test_merge)
{
    hb_hist_t *a = new_hist(), *b = new_hist(), *all = new_hist(), *e = new_hist();
    for (uint64_t v = 1; v < 50000; v += 7) {
        hb_hist_record(v % 2 ? a : b, v * 13);
        hb_hist_record(all, v * 13);
    }
    hb_hist_merge(a, e); /* merging an empty histogram changes nothing */
    hb_hist_merge(e, a); /* into an empty one: takes min too */
    hb_hist_merge(e, b);
    ck_assert_uint_eq(e->count, all->count);
    ck_assert_uint_eq(e->min, all->min);
    ck_assert_uint_eq(e->max, all->max);
    for (double p = 1; p < 100; p += 3.7)
        ck_assert_uint_eq(hb_hist_percentile(e, p), hb_hist_percentile(all, p));
    free(a);
    free(b);
    free(all);
    free(e);
}
END_TEST

static Suite *hist_suite(void)
{
    Suite *s = suite_create("bench_hist");
    TCase *tc = tcase_create("buckets");
    tcase_add_test(tc, test_buckets_cover_values);
    tcase_add_test(tc, test_precision_one_percent);
    tcase_add_test(tc, test_huge_values_clamp);
    suite_add_tcase(s, tc);
    tc = tcase_create("percentiles");
    tcase_add_test(tc, test_percentiles_uniform);
    tcase_add_test(tc, test_percentile_never_above_max);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_merge);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hist_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
