/* SPDX-License-Identifier: MIT */
/* Review regressions without sockets: the broker's hash against flooding, config parsing. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hr_check.h"
#include "map.h"

/* The unkeyed 64-bit FNV-1a that map.c used: an attacker can compute it. */
static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

#define NBLOCKS 10
#define BLOCK 3
#define KEYLEN (NBLOCKS * BLOCK)
#define MASK 0xffffu

/*
 * The low k bits of an FNV-1a state depend only on the low k bits of the
 * previous state and the input, so blocks that collide in the low bits keep
 * colliding whatever follows: NBLOCKS pairs give 2^NBLOCKS topics that all
 * land in one bucket of a table of up to 2^16 slots (a few thousand hashes
 * of work; real attacks go much further).
 */
static void make_collisions(char pairs[NBLOCKS][2][BLOCK])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    uint64_t h = 1469598103934665603ull;
    static uint32_t seen[MASK + 1];
    static char first[MASK + 1][BLOCK];
    for (int b = 0; b < NBLOCKS; b++) {
        memset(seen, 0, sizeof(seen));
        int found = 0;
        for (uint32_t x = 0; !found && x < 64u * 64u * 64u; x++) {
            char blk[BLOCK];
            for (int i = 0; i < BLOCK; i++)
                blk[i] = alphabet[(x >> (6 * i)) % 64];
            uint32_t low = (uint32_t)(fnv1a(h, blk, BLOCK) & MASK);
            if (seen[low]) {
                memcpy(pairs[b][0], first[low], BLOCK);
                memcpy(pairs[b][1], blk, BLOCK);
                found = 1;
            } else {
                seen[low] = 1;
                memcpy(first[low], blk, BLOCK);
            }
        }
        ck_assert_msg(found, "no collision found");
        h = fnv1a(h, pairs[b][0], BLOCK);
    }
}

/* Topics chosen to collide in a table's low bits must not all share a bucket. */
START_TEST(hash_resists_chosen_collisions)
{
    static char pairs[NBLOCKS][2][BLOCK];
    static uint32_t count[MASK + 1];
    make_collisions(pairs);
    uint32_t worst = 0, fnv_low = 0;
    for (uint32_t k = 0; k < (1u << NBLOCKS); k++) {
        char key[KEYLEN];
        for (int b = 0; b < NBLOCKS; b++)
            memcpy(key + b * BLOCK, pairs[b][(k >> b) & 1], BLOCK);
        uint32_t l = (uint32_t)(fnv1a(1469598103934665603ull, key, KEYLEN) & MASK);
        if (k == 0)
            fnv_low = l;
        ck_assert_uint_eq(l, fnv_low); /* the construction works */
        uint32_t slot = (uint32_t)(hr__hash(key, KEYLEN) & MASK);
        if (++count[slot] > worst)
            worst = count[slot];
    }
    ck_assert_msg(worst <= 8, "%u of %u chosen keys share one bucket", worst, 1u << NBLOCKS);
}
END_TEST

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
    tcase_add_test(t, hash_resists_chosen_collisions);
    tcase_add_test(t, config_negative_size_overflow);
    tcase_set_timeout(t, 30);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(review_unit_suite)
