/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/map.c: put/get/del/each, growth, chains, the keyed hash. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hr_check.h"
#include "map.h"

static void *V(uintptr_t v)
{
    return (void *)v;
}

START_TEST(put_get_del)
{
    hr_map_t m;
    hr__map_init(&m);
    ck_assert_ptr_null(hr__map_get(&m, "a", 1)); /* no table yet */
    ck_assert_ptr_null(hr__map_del(&m, "a", 1));
    ck_assert_int_eq(hr__map_put(&m, "a", 1, V(1)), 0);
    ck_assert_int_eq(hr__map_put(&m, "ab", 2, V(2)), 0);
    ck_assert_int_eq(hr__map_put(&m, "", 0, V(3)), 0);     /* the empty key is a key */
    ck_assert_int_eq(hr__map_put(&m, "a\0b", 3, V(4)), 0); /* keys are bytes, not C strings */
    ck_assert_uint_eq(m.count, 4);
    ck_assert_ptr_eq(hr__map_get(&m, "a", 1), V(1));
    ck_assert_ptr_eq(hr__map_get(&m, "ab", 2), V(2));
    ck_assert_ptr_eq(hr__map_get(&m, "", 0), V(3));
    ck_assert_ptr_eq(hr__map_get(&m, "a\0b", 3), V(4));
    ck_assert_ptr_null(hr__map_get(&m, "a\0", 2));
    ck_assert_ptr_null(hr__map_get(&m, "b", 1));
    ck_assert_ptr_eq(hr__map_get_hashed(&m, "ab", 2, hr__hash("ab", 2)), V(2));
    /* Replacing keeps the count; the key is copied, so the caller's may change. */
    char key[] = "a";
    ck_assert_int_eq(hr__map_put(&m, key, 1, V(5)), 0);
    key[0] = 'z';
    ck_assert_uint_eq(m.count, 4);
    ck_assert_ptr_eq(hr__map_get(&m, "a", 1), V(5));
    ck_assert_ptr_eq(hr__map_del(&m, "a", 1), V(5));
    ck_assert_ptr_null(hr__map_del(&m, "a", 1));
    ck_assert_ptr_null(hr__map_get(&m, "a", 1));
    ck_assert_ptr_eq(hr__map_get(&m, "ab", 2), V(2));
    ck_assert_uint_eq(m.count, 3);
    hr__map_destroy(&m);
    ck_assert_uint_eq(m.count, 0);
    ck_assert_ptr_null(hr__map_get(&m, "ab", 2));
    hr__map_destroy(&m); /* destroying twice is harmless */
}
END_TEST

typedef struct seen_s {
    unsigned char hit[1000];
    size_t calls;
} seen_t;

static void see(void *arg, const void *key, size_t klen, void *val)
{
    seen_t *s = arg;
    unsigned k;
    char buf[16];
    ck_assert_uint_lt(klen, sizeof(buf));
    memcpy(buf, key, klen);
    buf[klen] = 0;
    ck_assert_int_eq(sscanf(buf, "k%u", &k), 1);
    ck_assert_uint_lt(k, 1000);
    ck_assert_ptr_eq(val, V(k + 1));
    s->hit[k]++;
    s->calls++;
}

static size_t key_of(char *buf, size_t cap, unsigned i)
{
    return (size_t)snprintf(buf, cap, "k%u", i);
}

/* The table doubles as it fills (16, 32, ...): every entry survives each rehash. */
START_TEST(growth_and_each)
{
    hr_map_t m;
    char k[16];
    hr__map_init(&m);
    for (unsigned i = 0; i < 1000; i++) {
        ck_assert_int_eq(hr__map_put(&m, k, key_of(k, sizeof(k), i), V(i + 1)), 0);
        ck_assert_uint_eq(m.count, i + 1);
        ck_assert_uint_ge(m.nslots, m.count); /* load factor at most 1 */
        ck_assert_uint_eq(m.nslots & (m.nslots - 1), 0);
    }
    ck_assert_uint_eq(m.nslots, 1024);
    for (unsigned i = 0; i < 1000; i++)
        ck_assert_ptr_eq(hr__map_get(&m, k, key_of(k, sizeof(k), i)), V(i + 1));
    seen_t s;
    memset(&s, 0, sizeof(s));
    hr__map_each(&m, see, &s);
    ck_assert_uint_eq(s.calls, 1000);
    for (unsigned i = 0; i < 1000; i++)
        ck_assert_uint_eq(s.hit[i], 1);
    /* Delete every other one: the rest stay reachable, each visits the rest once. */
    for (unsigned i = 0; i < 1000; i += 2)
        ck_assert_ptr_eq(hr__map_del(&m, k, key_of(k, sizeof(k), i)), V(i + 1));
    ck_assert_uint_eq(m.count, 500);
    memset(&s, 0, sizeof(s));
    hr__map_each(&m, see, &s);
    ck_assert_uint_eq(s.calls, 500);
    for (unsigned i = 0; i < 1000; i++) {
        ck_assert_uint_eq(s.hit[i], i % 2);
        void *want = i % 2 ? V(i + 1) : NULL;
        ck_assert_ptr_eq(hr__map_get(&m, k, key_of(k, sizeof(k), i)), want);
    }
    hr__map_destroy(&m);
}
END_TEST

/*
 * Keys whose hashes share their low bits share a slot: find three for a
 * table of 16 slots (hr__hash is fixed within a process), two of which
 * part ways at 32 slots, and check the chain from each end and across a
 * rehash.
 */
START_TEST(chains)
{
    char keys[3][16];
    size_t lens[3];
    unsigned found = 0;
    uint64_t slot = 0;
    for (unsigned i = 0; found < 3 && i < 100000; i++) {
        char k[16];
        size_t n = key_of(k, sizeof(k), i);
        uint64_t h = hr__hash(k, n);
        if (found == 0)
            slot = h & 31;
        else if ((h & 15) != (slot & 15) || (found == 2 && (h & 31) == slot))
            continue; /* the third key must land elsewhere at 32 slots */
        memcpy(keys[found], k, n);
        lens[found++] = n;
    }
    ck_assert_uint_eq(found, 3);
    hr_map_t m;
    hr__map_init(&m);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(hr__map_put(&m, keys[i], lens[i], V((uintptr_t)i + 1)), 0);
    ck_assert_uint_eq(m.nslots, 16);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(hr__map_get(&m, keys[i], lens[i]), V((uintptr_t)i + 1));
    /* The middle of the chain, then its head and tail. */
    ck_assert_ptr_eq(hr__map_del(&m, keys[1], lens[1]), V(2));
    ck_assert_ptr_eq(hr__map_get(&m, keys[0], lens[0]), V(1));
    ck_assert_ptr_eq(hr__map_get(&m, keys[2], lens[2]), V(3));
    ck_assert_int_eq(hr__map_put(&m, keys[1], lens[1], V(2)), 0);
    /* Grow to 32 slots and beyond with other keys; the chain splits and survives. */
    char k[16];
    for (unsigned i = 0; m.nslots < 64; i++) {
        size_t n = (size_t)snprintf(k, sizeof(k), "x%u", i);
        ck_assert_int_eq(hr__map_put(&m, k, n, V(99)), 0);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(hr__map_get(&m, keys[i], lens[i]), V((uintptr_t)i + 1));
    ck_assert_ptr_eq(hr__map_del(&m, keys[0], lens[0]), V(1));
    ck_assert_ptr_eq(hr__map_del(&m, keys[2], lens[2]), V(3));
    ck_assert_ptr_eq(hr__map_get(&m, keys[1], lens[1]), V(2));
    hr__map_destroy(&m);
}
END_TEST

/* ---- the keyed hash ---------------------------------------------------------------- */

/* The unkeyed 64-bit FNV-1a that map.c once used: an attacker can compute it. */
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

/* hr__hash("herald") in a fresh child process, read back through a pipe. */
static uint64_t hash_in_child(void)
{
    int fd[2];
    uint64_t h = 0;
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        h = hr__hash("herald", 6);
        _exit(write(fd[1], &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : 1);
    }
    close(fd[1]);
    ck_assert_int_eq(read(fd[0], &h, sizeof(h)), (ssize_t)sizeof(h));
    close(fd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return h;
}

/*
 * The key is drawn once per process: stable within one, different between
 * two. The children fork from a test process that has not hashed yet (Check
 * runs each test in a fork of its own), so each draws its own key.
 */
START_TEST(key_per_process)
{
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && strcmp(fork_mode, "no") == 0)
        return; /* an earlier test in this process drew the key the children would inherit */
    uint64_t a = hash_in_child(), b = hash_in_child();
    ck_assert_msg(a != b, "two processes hashed with the same key");
    uint64_t h = hr__hash("herald", 6);
    ck_assert_uint_eq(hr__hash("herald", 6), h);
    ck_assert_uint_ne(hr__hash("herald", 5), h);
    ck_assert_uint_ne(hr__hash("heralD", 6), h);
}
END_TEST

static Suite *map_suite(void)
{
    Suite *s = suite_create("map");
    TCase *t = tcase_create("map");
    tcase_add_test(t, put_get_del);
    tcase_add_test(t, growth_and_each);
    tcase_add_test(t, chains);
    suite_add_tcase(s, t);
    t = tcase_create("keyed hash");
    tcase_add_test(t, hash_resists_chosen_collisions);
    tcase_add_test(t, key_per_process);
    tcase_set_timeout(t, 30);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(map_suite)
