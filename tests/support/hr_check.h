/* SPDX-License-Identifier: MIT */
/* The main() every Check suite shares. */
#ifndef HERALD_TEST_CHECK_H
#define HERALD_TEST_CHECK_H

#include <check.h>

#define HR_CHECK_MAIN(suite_fn)                                                                    \
    int main(void)                                                                                 \
    {                                                                                              \
        SRunner *r = srunner_create(suite_fn());                                                   \
        srunner_run_all(r, CK_NORMAL);                                                             \
        int failed = srunner_ntests_failed(r);                                                     \
        srunner_free(r);                                                                           \
        return failed ? 1 : 0;                                                                     \
    }

#endif
