/* SPDX-License-Identifier: MIT */
/* Review regressions without sockets: config parsing. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hr_check.h"

/* A negative size with a suffix must not wrap around into a valid value. */
START_TEST(config_negative_size_overflow)
{
    hr_config_t c;
    char err[256];
    hr__config_defaults(&c);
    /* -(2^54 - 1) * 1024 = -(2^64) + 1024: wraps to 1024 when multiplied unchecked. */
    ck_assert_int_eq(hr__config_set(&c, "out-hard", "-18014398509481983K", err, sizeof(err)), -1);
    ck_assert_int_eq(c.out_hard, 8 << 20);
    ck_assert_int_eq(hr__config_set(&c, "out-hard", "-9223372036854775807G", err, sizeof(err)), -1);
    ck_assert_int_eq(hr__config_set(&c, "out-hard", "-1K", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "'out-hard'"));
}
END_TEST

static Suite *review_unit_suite(void)
{
    Suite *s = suite_create("review_unit");
    TCase *t = tcase_create("review_unit");
    tcase_add_test(t, config_negative_size_overflow);
    tcase_set_timeout(t, 30);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(review_unit_suite)
