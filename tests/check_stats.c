/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/stats.c: the shared stats area, its seqlock, the primary's words. */
#include <check.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hr_check.h"
#include "stats.h"

#define WORDS (sizeof(hr_wstats_t) / sizeof(uint64_t))

/* A snapshot whose every word is `v`: a torn copy mixes two values. */
static void fill(hr_wstats_t *w, uint64_t v)
{
    uint64_t *p = (uint64_t *)w;
    for (size_t i = 0; i < WORDS; i++)
        p[i] = v;
}

/* The value every word of `w` holds, or UINT64_MAX when they differ. */
static uint64_t uniform(const hr_wstats_t *w)
{
    const uint64_t *p = (const uint64_t *)w;
    for (size_t i = 1; i < WORDS; i++)
        if (p[i] != p[0])
            return UINT64_MAX;
    return p[0];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

START_TEST(area_primary_words)
{
    hr_stats_area_t *a;
    int fd = hr__stats_area_create(3, &a);
    ck_assert_int_ge(fd, 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(hr__stats_area_slot(a, 3));
    hr_stats_slot_t *sl = hr__stats_area_slot(a, 1);
    ck_assert_ptr_nonnull(sl);
    /* The first spawn is no restart; every later one is. */
    hr__stats_area_spawned(a, 1, 100);
    ck_assert_uint_eq(atomic_load(&sl->gen), 1);
    ck_assert_uint_eq(atomic_load(&sl->restarts), 0);
    hr__stats_area_set_up(a, 1, 1);
    ck_assert_uint_eq(atomic_load(&sl->up), 1);
    hr__stats_area_set_up(a, 1, 0);
    hr__stats_area_spawned(a, 1, 101);
    hr__stats_area_spawned(a, 1, 102);
    ck_assert_uint_eq(atomic_load(&sl->gen), 3);
    ck_assert_uint_eq(atomic_load(&sl->restarts), 2);
    ck_assert_uint_eq(atomic_load(&sl->pid), 102);
    ck_assert_uint_eq(atomic_load(&sl->up), 0);
    /* Out of range or without an area: nothing happens. */
    hr__stats_area_spawned(a, 7, 1);
    hr__stats_area_set_up(NULL, 0, 1);
    ck_assert_uint_eq(atomic_load(&hr__stats_area_slot(a, 0)->gen), 0);
    /* The fd is sealed: it can neither shrink nor grow under a worker that mapped it. */
    ck_assert_int_ne(ftruncate(fd, 0), 0);
    ck_assert_int_ne(ftruncate(fd, 1 << 20), 0);
    hr__stats_area_free(a, fd);
}
END_TEST

/* Publishes a snapshot whose every word is `v`. */
static void write_value(hr_stats_slot_t *sl, uint64_t v)
{
    hr_wstats_t w;
    fill(&w, v);
    hr__stats_slot_write(sl, &w);
}

/* What a reader gets: the snapshot's value, UINT64_MAX for a torn copy, 0 for none. */
static uint64_t read_value(const hr_stats_slot_t *sl)
{
    hr_wstats_t r;
    return hr__stats_slot_read(sl, &r) == 0 ? uniform(&r) : 0;
}

static uint32_t seq_of(const hr_stats_slot_t *sl)
{
    return atomic_load(&sl->seq);
}

START_TEST(slot_read_write)
{
    hr_stats_area_t *a;
    int fd = hr__stats_area_create(1, &a);
    ck_assert_int_ge(fd, 0);
    hr_stats_slot_t *sl = hr__stats_area_slot(a, 0);
    ck_assert_uint_eq(read_value(sl), 0); /* never published */
    write_value(sl, 7);
    ck_assert_uint_eq(read_value(sl), 7);
    ck_assert_uint_eq(seq_of(sl), 2); /* one write: two steps of the count */
    /* A writer that died in the first half of a write (count odd, w[0] torn): readers take
     * w[1], the last complete snapshot. */
    write_value(sl, 8);
    atomic_store(&sl->seq, 7);
    memset(&sl->w[0], 0xff, sizeof(sl->w[0]));
    ck_assert_uint_eq(read_value(sl), 8);
    /* Its successor adopts the slot: the count is even and w[0] whole again. */
    hr__stats_slot_adopt(sl);
    ck_assert_uint_eq(seq_of(sl), 8);
    ck_assert_uint_eq(uniform(&sl->w[0]), 8);
    ck_assert_uint_eq(read_value(sl), 8);
    /* A writer that died in the second half (count even, w[1] torn): readers take w[0]. */
    write_value(sl, 9);
    memset(&sl->w[1], 0xff, sizeof(sl->w[1]));
    ck_assert_uint_eq(read_value(sl), 9);
    /* A writer that died during its very first write left nothing to read. */
    atomic_store(&sl->seq, 1);
    ck_assert_uint_eq(read_value(sl), 0);
    hr__stats_slot_adopt(sl);
    ck_assert_uint_eq(seq_of(sl), 0);
    hr__stats_area_free(a, fd);
}
END_TEST

/*
 * A writer process publishes snapshots in a tight loop (a short pause between them, as a
 * reader retries while a write overlaps its copy) while this process reads: no copy may mix
 * two snapshots, and the values only grow.
 */
START_TEST(seqlock_two_processes)
{
    hr_stats_area_t *a;
    int fd = hr__stats_area_create(2, &a);
    ck_assert_int_ge(fd, 0);
    hr_stats_slot_t *sl = hr__stats_area_slot(a, 1);
    write_value(sl, 1);
    pid_t parent = getpid(), pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (uint64_t v = 2; getppid() == parent; v++) { /* ends if the reader fails */
            write_value(sl, v);
            for (volatile int i = 0; i < 200; i++)
                ;
        }
        _exit(0);
    }
    uint64_t last = 0, reads = 0, changes = 0;
    double end = now_s() + 0.5;
    while (now_s() < end) {
        uint64_t v = read_value(sl);
        ck_assert_uint_ne(v, UINT64_MAX);
        ck_assert_uint_ge(v, last);
        changes += v != last;
        last = v;
        reads++;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_assert_uint_gt(reads, 1000);
    ck_assert_uint_gt(changes, 10); /* the writer did run while this process read */
    hr__stats_area_free(a, fd);
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("area");
    tcase_add_test(tc, area_primary_words);
    tcase_add_test(tc, slot_read_write);
    suite_add_tcase(s, tc);
    tc = tcase_create("seqlock");
    tcase_add_test(tc, seqlock_two_processes);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}

HR_CHECK_MAIN(stats_suite)
