/* SPDX-License-Identifier: MIT */
/* CHECK: an assert that stays on in release builds (fuzz targets build with NDEBUG). */
#ifndef HERALD_FUZZ_CHECK_H
#define HERALD_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
