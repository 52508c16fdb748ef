/* SPDX-License-Identifier: MIT */
/* Shared-memory rings: records, wrap-around, full rings, batches, the region, two threads. */
#define _GNU_SOURCE /* memfd_create */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "herald/status.h"
#include "hr_check.h"
#include "ring.h"
#include "shm.h"

/* A ring on the heap for the single-process tests: control block, then data. */
typedef struct {
    void *mem;
    hr_ring_t r;
} heap_ring_t;

static void heap_ring(heap_ring_t *h, uint64_t size)
{
    h->mem = aligned_alloc(128, HR_RING_CTL_SIZE + size);
    ck_assert_ptr_nonnull(h->mem);
    memset(h->mem, 0, HR_RING_CTL_SIZE + size);
    ck_assert_int_eq(hr__ring_init(&h->r, h->mem, size, NULL), 0);
}

static uint8_t pattern(uint64_t seq, size_t i)
{
    return (uint8_t)(seq * 131 + i * 7 + (i >> 8));
}

static void put(hr_ring_t *r, uint32_t type, size_t len, uint64_t seq)
{
    void *p;
    ck_assert_int_eq(hr__ring_reserve(r, type, len, &p), 0);
    ck_assert_uint_eq((uintptr_t)p % HR_RING_ALIGN, 0);
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)p)[i] = pattern(seq, i);
}

static void expect(hr_ring_t *r, uint32_t type, size_t len, uint64_t seq)
{
    uint32_t t;
    size_t n;
    uint8_t *p = hr__ring_peek(r, &t, &n);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(t, type);
    ck_assert_uint_eq(n, len);
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern(seq, i))
            ck_abort_msg("record %llu byte %zu differs", (unsigned long long)seq, i);
}

/* Moves both positions forward by `bytes` (a multiple of 8) through filler records. */
static void advance(hr_ring_t *r, uint64_t bytes)
{
    while (bytes > 0) {
        uint64_t to_end = r->size - (r->wpos & (r->size - 1));
        uint64_t step = bytes < r->size / 2 ? bytes : r->size / 2;
        step = step < to_end ? step : to_end; /* no padding record */
        put(r, 1, step - HR_RING_HDR, 0);
        hr__ring_commit(r);
        expect(r, 1, step - HR_RING_HDR, 0);
        hr__ring_release(r);
        bytes -= step;
    }
}

START_TEST(every_size)
{
    heap_ring_t h;
    heap_ring(&h, 4096);
    size_t max = hr__ring_max_len(&h.r);
    ck_assert_uint_eq(max, 2048 - HR_RING_HDR);
    for (size_t len = 0; len <= max; len++) {
        put(&h.r, (uint32_t)len, len, len);
        ck_assert_int_eq(hr__ring_commit(&h.r), 0); /* nobody sleeps on this ring */
        expect(&h.r, (uint32_t)len, len, len);
        ck_assert_ptr_null(hr__ring_peek(&h.r, &(uint32_t){0}, &(size_t){0}));
        hr__ring_release(&h.r);
        ck_assert_uint_eq(hr__ring_used(&h.r), 0);
    }
    ck_assert_int_eq(h.r.err, 0);
    free(h.mem);
}
END_TEST

/* From every start offset, a record of every length, then a second one behind it. */
START_TEST(wrap_every_offset)
{
    const uint64_t size = HR_RING_MIN_SIZE;
    heap_ring_t h;
    heap_ring(&h, size);
    size_t max = hr__ring_max_len(&h.r);
    for (uint64_t off = 0; off < size; off += HR_RING_ALIGN) {
        for (size_t len = 0; len <= max; len++) {
            uint64_t at = h.r.wpos & (size - 1);
            advance(&h.r, (off - at) & (size - 1));
            ck_assert_uint_eq(h.r.wpos & (size - 1), off);
            put(&h.r, 7, len, off + len);
            /* A second record fits unless the first one (and its padding) left no room. */
            void *p;
            int second = hr__ring_reserve(&h.r, 8, 5, &p) == 0;
            if (second)
                memset(p, 5, 5);
            else
                ck_assert_uint_gt(h.r.wpos - h.r.tail_seen + 16, size);
            hr__ring_commit(&h.r);
            expect(&h.r, 7, len, off + len);
            if (second)
                ck_assert_ptr_nonnull(hr__ring_peek(&h.r, &(uint32_t){0}, &(size_t){0}));
            hr__ring_release(&h.r);
            ck_assert_uint_eq(hr__ring_used(&h.r), 0);
        }
    }
    ck_assert_int_eq(h.r.err, 0);
    free(h.mem);
}
END_TEST

START_TEST(full_then_recovers)
{
    heap_ring_t h;
    heap_ring(&h, 4096);
    void *p;
    int k = 0;
    /* Reserved but uncommitted records count: the ring fills before any commit. */
    while (hr__ring_reserve(&h.r, 1, 100, &p) == 0)
        memset(p, k++, 100);
    ck_assert_int_eq(k, 4096 / 112);
    ck_assert_uint_eq(h.r.full, 1);
    uint64_t wpos = h.r.wpos;
    ck_assert_int_eq(hr__ring_reserve(&h.r, 1, 100, &p), HR_EBUFFULL);
    ck_assert_uint_eq(h.r.wpos, wpos); /* a refused reservation changes nothing */
    ck_assert_uint_eq(h.r.full, 2);
    hr__ring_commit(&h.r);
    /* Peeking alone frees nothing; releasing does. */
    uint32_t t;
    size_t n;
    ck_assert_ptr_nonnull(hr__ring_peek(&h.r, &t, &n));
    ck_assert_int_eq(hr__ring_reserve(&h.r, 1, 100, &p), HR_EBUFFULL);
    hr__ring_release(&h.r);
    ck_assert_int_eq(hr__ring_reserve(&h.r, 1, 100, &p), 0);
    memset(p, 99, 100);
    hr__ring_commit(&h.r);
    for (int i = 1; i < k; i++) {
        uint8_t *q = hr__ring_peek(&h.r, &t, &n);
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_eq(q[0], i);
    }
    uint8_t *q = hr__ring_peek(&h.r, &t, &n);
    ck_assert_uint_eq(q[99], 99);
    hr__ring_release(&h.r);
    ck_assert_uint_eq(hr__ring_used(&h.r), 0);
    free(h.mem);

    /* A record that must wrap needs room for the padding too. Fill 3496 bytes, free the
     * first 1000: 1600 bytes are free, 600 of them before the end. */
    heap_ring(&h, 4096);
    put(&h.r, 1, 992, 1);
    put(&h.r, 2, 992, 2);
    put(&h.r, 3, 1488, 3);
    hr__ring_commit(&h.r);
    expect(&h.r, 1, 992, 1);
    hr__ring_release(&h.r);
    ck_assert_int_eq(hr__ring_reserve(&h.r, 4, 1000, &p), HR_EBUFFULL); /* 600 + 1008 */
    put(&h.r, 4, 992, 4);                                               /* 600 + 1000 */
    ck_assert_int_eq(hr__ring_reserve(&h.r, 5, 0, &p), HR_EBUFFULL);
    hr__ring_commit(&h.r);
    expect(&h.r, 2, 992, 2);
    expect(&h.r, 3, 1488, 3);
    expect(&h.r, 4, 992, 4);
    hr__ring_release(&h.r);
    ck_assert_uint_eq(hr__ring_used(&h.r), 0);
    free(h.mem);
}
END_TEST

START_TEST(batches)
{
    heap_ring_t h;
    heap_ring(&h, 4096);
    uint32_t t;
    size_t n;
    for (uint64_t i = 0; i < 10; i++)
        put(&h.r, (uint32_t)i, 50 + i, i);
    ck_assert_ptr_null(hr__ring_peek(&h.r, &t, &n)); /* nothing visible before the commit */
    hr__ring_commit(&h.r);
    ck_assert_uint_eq(h.r.commits, 1);
    ck_assert_int_eq(hr__ring_commit(&h.r), 0);
    ck_assert_uint_eq(h.r.commits, 1);
    for (uint64_t i = 0; i < 10; i++)
        expect(&h.r, (uint32_t)i, 50 + i, i);
    ck_assert_ptr_null(hr__ring_peek(&h.r, &t, &n));
    ck_assert_uint_eq(hr__ring_used(&h.r), 7 * 64 + 3 * 72); /* all still held */
    hr__ring_release(&h.r);
    ck_assert_uint_eq(hr__ring_used(&h.r), 0);
    /* Cancel forgets what was reserved since the last commit. */
    put(&h.r, 1, 10, 1);
    put(&h.r, 2, 10, 2);
    hr__ring_cancel(&h.r);
    ck_assert_int_eq(hr__ring_commit(&h.r), 0);
    ck_assert_ptr_null(hr__ring_peek(&h.r, &t, &n));
    put(&h.r, 3, 10, 3);
    hr__ring_commit(&h.r);
    expect(&h.r, 3, 10, 3);
    hr__ring_release(&h.r);
    free(h.mem);
}
END_TEST

START_TEST(bad_sizes)
{
    heap_ring_t h;
    heap_ring(&h, 4096);
    void *p = NULL;
    ck_assert_int_eq(hr__ring_reserve(&h.r, 1, hr__ring_max_len(&h.r) + 1, &p), HR_ETOOBIG);
    ck_assert_int_eq(hr__ring_reserve(&h.r, 1, SIZE_MAX, &p), HR_ETOOBIG);
    ck_assert_int_eq(hr__ring_reserve(&h.r, HR_RING_TYPE_PAD, 1, &p), HR_EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(h.r.wpos, 0);

    hr_ring_t r;
    ck_assert_int_eq(hr__ring_init(&r, h.mem, 4095, NULL), HR_EINVAL);
    ck_assert_int_eq(hr__ring_init(&r, h.mem, 512, NULL), HR_EINVAL);
    ck_assert_int_eq(hr__ring_init(&r, h.mem, (uint64_t)HR_RING_MAX_SIZE * 2, NULL), HR_EINVAL);
    ck_assert_int_eq(hr__ring_init(&r, (uint8_t *)h.mem + 8, 1024, NULL), HR_EINVAL);
    ck_assert_int_eq(hr__ring_init(&r, NULL, 1024, NULL), HR_EINVAL);
    free(h.mem);

    hr_shm_t shm;
    ck_assert_int_eq(hr__shm_create(&shm, 0, 0), HR_EINVAL);
    ck_assert_int_eq(hr__shm_create(&shm, HR_SHM_MAX_WORKERS + 1, 0), HR_EINVAL);
    ck_assert_int_eq(hr__shm_create(&shm, 2, 1000), HR_EINVAL);
    ck_assert_int_eq(hr__shm_create(&shm, 2, 512), HR_EINVAL);
    ck_assert_int_eq(hr__shm_create(&shm, 2, (size_t)HR_RING_MAX_SIZE * 2), HR_EINVAL);
    ck_assert_int_eq(shm.fd, -1);
    ck_assert_int_eq(hr__shm_map(&shm, -1), HR_EINVAL);
    hr__shm_unmap(&shm);

    ck_assert_int_eq(hr__shm_create(&shm, 3, 1024), 0);
    hr_ring_t ring;
    ck_assert_int_eq(hr__shm_ring(&shm, 1, 1, &ring), HR_EINVAL);
    ck_assert_int_eq(hr__shm_ring(&shm, 3, 0, &ring), HR_EINVAL);
    ck_assert_int_eq(hr__shm_ring(&shm, 0, 3, &ring), HR_EINVAL);
    ck_assert_ptr_null(hr__shm_worker(&shm, 3));
    ck_assert_ptr_nonnull(hr__shm_worker(&shm, 2));
    hr__shm_unmap(&shm);
    hr__shm_unmap(&shm);
}
END_TEST

/* Files that are not a region are refused: unsealed, wrong magic, wrong size. */
START_TEST(map_refuses_strangers)
{
    hr_shm_t shm;
    int fd = memfd_create("plain", 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
    ck_assert_int_eq(hr__shm_map(&shm, fd), HR_EPROTO); /* not sealed */
    close(fd);

    fd = memfd_create("sealed", MFD_ALLOW_SEALING);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
    ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
    ck_assert_int_eq(hr__shm_map(&shm, fd), HR_EPROTO); /* zeroes: no magic */
    close(fd);

    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_lt(hr__shm_map(&shm, p[0]), 0);
    close(p[0]);
    close(p[1]);
    ck_assert_ptr_null(shm.base);
}
END_TEST

/* Every ring of a 64-worker region is its own: one record each, read through a 2nd mapping. */
START_TEST(layout_all_pairs)
{
    hr_shm_t a, b;
    ck_assert_int_eq(hr__shm_create(&a, HR_SHM_MAX_WORKERS, HR_RING_MIN_SIZE), 0);
    ck_assert_int_eq(hr__shm_map(&b, a.fd), 0);
    ck_assert_int_eq(b.nworkers, HR_SHM_MAX_WORKERS);
    ck_assert_int_eq(b.ring_size, HR_RING_MIN_SIZE);
    ck_assert_int_eq(b.fd, -1);
    ck_assert_int_eq(fcntl(a.fd, F_GETFD) & FD_CLOEXEC, 0); /* workers inherit it */
    unsigned n = a.nworkers;
    for (unsigned from = 0; from < n; from++)
        for (unsigned to = 0; to < n; to++) {
            if (from == to)
                continue;
            hr_ring_t r;
            ck_assert_int_eq(hr__shm_ring(&a, from, to, &r), 0);
            ck_assert_ptr_eq(r.waiting, &hr__shm_worker(&a, to)->waiting);
            put(&r, from * 64 + to, 16 + from, to);
            hr__ring_commit(&r);
        }
    for (unsigned from = 0; from < n; from++)
        for (unsigned to = 0; to < n; to++) {
            if (from == to)
                continue;
            hr_ring_t r;
            ck_assert_int_eq(hr__shm_ring(&b, from, to, &r), 0);
            expect(&r, from * 64 + to, 16 + from, to);
            ck_assert_ptr_null(hr__ring_peek(&r, &(uint32_t){0}, &(size_t){0}));
            hr__ring_release(&r);
        }
    hr__shm_worker(&a, 5)->counters[0] = 42;
    ck_assert_uint_eq(hr__shm_worker(&b, 5)->counters[0], 42);
    hr__shm_unmap(&b);
    hr__shm_unmap(&a);
}
END_TEST

/* A peer that writes nonsense stops the ring instead of sending the reader out of bounds. */
START_TEST(malformed_record)
{
    heap_ring_t h;
    heap_ring(&h, 4096);
    uint32_t bad[2] = {5000, 1};
    memcpy(h.r.data, bad, sizeof(bad));
    atomic_store(&h.r.ctl->head, 64);
    uint32_t t;
    size_t n;
    ck_assert_ptr_null(hr__ring_peek(&h.r, &t, &n));
    ck_assert_int_eq(h.r.err, HR_EPROTO);
    ck_assert_ptr_null(hr__ring_peek(&h.r, &t, &n));
    free(h.mem);
}
END_TEST

/* --- Two threads over one ring: for ThreadSanitizer; the consumer spins, no waker. --- */

#define THREAD_RECORDS 200000

static void *thread_producer(void *arg)
{
    hr_ring_t *r = arg;
    for (uint64_t seq = 0; seq < THREAD_RECORDS;) {
        void *p;
        size_t len = 8 + seq % 300;
        if (hr__ring_reserve(r, (uint32_t)seq, len, &p) != 0) {
            hr__ring_commit(r);
            sched_yield();
            continue;
        }
        memcpy(p, &seq, 8);
        for (size_t i = 8; i < len; i++)
            ((uint8_t *)p)[i] = pattern(seq, i);
        if (++seq % 16 == 0)
            hr__ring_commit(r);
    }
    hr__ring_commit(r);
    return NULL;
}

START_TEST(two_threads)
{
    hr_shm_t shm;
    ck_assert_int_eq(hr__shm_create(&shm, 2, 8192), 0);
    hr_ring_t prod, cons;
    ck_assert_int_eq(hr__shm_ring(&shm, 0, 1, &prod), 0);
    ck_assert_int_eq(hr__shm_ring(&shm, 0, 1, &cons), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_producer, &prod), 0);
    uint64_t seq = 0;
    while (seq < THREAD_RECORDS) {
        uint32_t t;
        size_t len;
        uint8_t *p = hr__ring_peek(&cons, &t, &len);
        if (!p) {
            hr__ring_release(&cons);
            sched_yield();
            continue;
        }
        uint64_t got;
        memcpy(&got, p, 8);
        ck_assert_uint_eq(got, seq);
        ck_assert_uint_eq(t, (uint32_t)seq);
        ck_assert_uint_eq(len, 8 + seq % 300);
        for (size_t i = 8; i < len; i++)
            if (p[i] != pattern(seq, i))
                ck_abort_msg("record %llu byte %zu differs", (unsigned long long)seq, i);
        if (++seq % 7 == 0)
            hr__ring_release(&cons);
    }
    hr__ring_release(&cons);
    pthread_join(th, NULL);
    ck_assert_int_eq(cons.err, 0);
    hr__shm_unmap(&shm);
}
END_TEST

static Suite *ring_suite(void)
{
    Suite *s = suite_create("ring");
    TCase *t = tcase_create("records");
    tcase_add_test(t, every_size);
    tcase_add_test(t, wrap_every_offset);
    tcase_add_test(t, full_then_recovers);
    tcase_add_test(t, batches);
    tcase_add_test(t, bad_sizes);
    tcase_add_test(t, malformed_record);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);

    t = tcase_create("shm");
    tcase_add_test(t, map_refuses_strangers);
    tcase_add_test(t, layout_all_pairs);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);

    t = tcase_create("threads");
    tcase_add_test(t, two_threads);
    tcase_set_timeout(t, 120);
    suite_add_tcase(s, t);

    return s;
}

HR_CHECK_MAIN(ring_suite)
