/* SPDX-License-Identifier: MIT */
/* Shared-memory rings: records, wrap-around, full rings, batches, two processes, wake-ups. */
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
#include "waker.h"

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

/* --- Processes: a region and eventfds made before fork, consumed on a libuv loop. --- */

/* Record body: seq, then a checksum of the bytes after the first 16, then those bytes. */
static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Lengths of the two-process test: mostly small, sometimes up to 64 KiB. */
static size_t record_len(uint64_t *rng)
{
    uint64_t x = xorshift(rng);
    if (x % 1000 == 0)
        return 16 + (x >> 20) % 65536;
    return 16 + (x >> 20) % 496;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Counters a child producer leaves in its worker header for the parent. */
enum { C_FULL, C_WAITS, C_WAKES, C_COMMITS, C_DONE };

/*
 * CHECKED: the producer writes every byte from the seq and checksums it, the consumer
 * verifies it. COPY: the producer copies the body from a buffer (the one copy of a hop) and
 * the consumer checks seq and length only: the ring's own cost. STRESS: tiny bursts timed
 * against the consumer's sleep.
 */
typedef enum { M_CHECKED, M_COPY, M_STRESS } mode_t_;

typedef struct {
    hr_shm_t *shm;
    unsigned self;
    int efd;
    uint64_t records;
    unsigned burst_max; /* records per commit: 1..burst_max */
    mode_t_ mode;
} producer_t;

/* Waits for room the way a worker would: spin a little, then yield. */
static void backoff(unsigned *spins)
{
    if (++*spins < 64)
        return;
    sched_yield();
}

/* What M_COPY producers copy bodies from. */
static uint8_t source[256 + 65536 + 16];

/*
 * Runs in a forked child: produce, publish counters, exit. Never returns. Like a worker
 * after exec, it maps the region again from the fd rather than using the parent's mapping.
 */
static void produce(const producer_t *pr)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    hr_shm_t shm;
    hr_ring_t r;
    if (hr__shm_map(&shm, pr->shm->fd) != 0 || hr__shm_ring(&shm, pr->self, 0, &r) != 0)
        _exit(2);
    hr_shm_worker_t *me = hr__shm_worker(&shm, pr->self);
    hr_shm_worker_t *them = hr__shm_worker(&shm, 0);
    uint64_t rng = 88172645463325252ull + pr->self, seq = 0, waits = 0;
    while (seq < pr->records) {
        if (pr->mode == M_STRESS) {
            /* Let the consumer drain, then commit right as it goes to sleep (or not). */
            while (hr__ring_used(&r) != 0)
                sched_yield();
            uint64_t x = xorshift(&rng);
            if (x & 1)
                while (!atomic_load(&them->waiting))
                    sched_yield();
            for (volatile unsigned i = 0; i < (x >> 8) % 2000; i++)
                ;
        }
        unsigned burst = 1 + (unsigned)(xorshift(&rng) % pr->burst_max);
        for (unsigned k = 0; k < burst && seq < pr->records; k++) {
            size_t len = pr->mode == M_STRESS ? 16 : record_len(&rng);
            void *v;
            unsigned spins = 0;
            while (hr__ring_reserve(&r, pr->self, len, &v) != 0) {
                waits += spins == 0;
                /* Full: publish what is reserved so the consumer can make room, then wait. */
                if (hr__ring_commit(&r))
                    hr__waker_signal(pr->efd);
                backoff(&spins);
            }
            uint8_t *p = v, fill = (uint8_t)seq;
            uint32_t sum = 0;
            memcpy(p, &seq, 8);
            if (pr->mode == M_COPY) {
                memcpy(p + 16, source + (seq & 255), len - 16);
            } else {
                for (size_t i = 16; i < len; i++)
                    p[i] = (uint8_t)(fill + i);
                sum = fnv1a(p + 16, len - 16);
            }
            memcpy(p + 8, &sum, 4);
            memcpy(p + 12, &(uint32_t){(uint32_t)len}, 4);
            seq++;
        }
        if (hr__ring_commit(&r))
            hr__waker_signal(pr->efd);
    }
    atomic_store(&me->counters[C_FULL], r.full);
    atomic_store(&me->counters[C_WAITS], waits);
    atomic_store(&me->counters[C_WAKES], r.wakes);
    atomic_store(&me->counters[C_COMMITS], r.commits);
    atomic_store(&me->counters[C_DONE], seq);
    _exit(0);
}

typedef struct {
    hr_shm_t *shm;
    hr_ring_t in[HR_SHM_MAX_WORKERS];
    unsigned nworkers;
    uint64_t want; /* records per producer */
    uint64_t next[HR_SHM_MAX_WORKERS];
    uint64_t total;
    uint64_t bytes;
    char failure[200];
    uv_timer_t deadline;
    hr_waker_t *waker;
    uint64_t stall; /* stress: random state; when non-zero, an empty drain dawdles */
    int verify;     /* check every body's checksum */
    int timed_out;
    int stopped;
} consumer_t;

static void fail_with(consumer_t *c, const char *what, unsigned from, uint64_t seq)
{
    if (!c->failure[0])
        snprintf(c->failure, sizeof(c->failure), "%s (from %u, record %llu)", what, from,
                 (unsigned long long)seq);
}

static void finish(consumer_t *c, hr_waker_t *w)
{
    if (c->stopped)
        return;
    c->stopped = 1;
    hr__waker_stop(w, NULL);
    uv_close((uv_handle_t *)&c->deadline, NULL);
}

/* The waker callback: drains every inbound ring, at most 4096 records a turn. */
static size_t drain(hr_waker_t *w, void *arg)
{
    consumer_t *c = arg;
    size_t n = 0;
    for (unsigned from = 1; from < c->nworkers; from++) {
        hr_ring_t *r = &c->in[from];
        uint32_t type;
        size_t len;
        uint8_t *p;
        while (n < 4096 && (p = hr__ring_peek(r, &type, &len)) != NULL) {
            uint64_t seq;
            uint32_t sum, len32;
            memcpy(&seq, p, 8);
            memcpy(&sum, p + 8, 4);
            memcpy(&len32, p + 12, 4);
            if (type != from || len < 16 || len32 != len)
                fail_with(c, "bad header", from, c->next[from]);
            else if (seq != c->next[from])
                fail_with(c, "out of order", from, seq);
            else if (c->verify && fnv1a(p + 16, len - 16) != sum)
                fail_with(c, "bad checksum", from, seq);
            c->next[from]++;
            c->total++;
            c->bytes += len;
            if (++n % 256 == 0)
                hr__ring_release(r);
        }
        hr__ring_release(r);
        if (r->err)
            fail_with(c, "malformed ring", from, c->next[from]);
    }
    if (c->failure[0] || c->total == c->want * (c->nworkers - 1))
        finish(c, w);
    /* Widen the window between finding the rings empty and announcing sleep, where a
     * commit is caught only by the second look (see waker.c). */
    if (n == 0 && c->stall)
        for (volatile uint64_t i = xorshift(&c->stall) % 4000; i > 0; i--)
            ;
    return n;
}

static void on_deadline(uv_timer_t *t)
{
    consumer_t *c = t->data;
    c->timed_out = 1;
    finish(c, c->waker);
}

typedef struct {
    double seconds;
    uint64_t full, waits, wakes, commits, bytes;
    hr_waker_t waker;
} run_result_t;

/*
 * Forks nworkers - 1 producers into worker 0 and consumes on a loop until every record has
 * arrived, a check fails or `limit_s` passes. Reaps (and on failure kills) only its own
 * children.
 */
static void run_cluster(unsigned nworkers, uint64_t records, unsigned burst_max, mode_t_ mode,
                        double limit_s, run_result_t *res)
{
    hr_shm_t shm;
    ck_assert_int_eq(hr__shm_create(&shm, nworkers, 0), 0);
    int efd = hr__waker_fd_new();
    ck_assert_int_ge(efd, 0);
    static consumer_t c;
    memset(&c, 0, sizeof(c));
    memset(res, 0, sizeof(*res));
    c.shm = &shm;
    c.nworkers = nworkers;
    c.want = records;
    c.stall = mode == M_STRESS ? 2463534242u : 0;
    c.verify = mode != M_COPY;
    for (unsigned from = 1; from < nworkers; from++)
        ck_assert_int_eq(hr__shm_ring(&shm, from, 0, &c.in[from]), 0);

    double t0 = now_s();
    pid_t kids[HR_SHM_MAX_WORKERS] = {0};
    for (unsigned from = 1; from < nworkers; from++) {
        producer_t pr = {&shm, from, efd, records, burst_max, mode};
        kids[from] = fork();
        ck_assert_int_ge(kids[from], 0);
        if (kids[from] == 0)
            produce(&pr);
    }

    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    c.waker = &res->waker;
    uv_timer_init(&loop, &c.deadline);
    c.deadline.data = &c;
    uv_timer_start(&c.deadline, on_deadline, (uint64_t)(limit_s * 1000), 0);
    ck_assert_int_eq(
        hr__waker_start(&res->waker, &loop, efd, &hr__shm_worker(&shm, 0)->waiting, drain, &c), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    res->seconds = now_s() - t0;
    uv_loop_close(&loop);

    int clean = 1;
    for (unsigned from = 1; from < nworkers; from++) {
        int st;
        if (c.failure[0] || c.timed_out)
            kill(kids[from], SIGKILL);
        if (waitpid(kids[from], &st, 0) != kids[from] || !WIFEXITED(st) || WEXITSTATUS(st))
            clean = 0;
        hr_shm_worker_t *wk = hr__shm_worker(&shm, from);
        res->full += wk->counters[C_FULL];
        res->waits += wk->counters[C_WAITS];
        res->wakes += wk->counters[C_WAKES];
        res->commits += wk->counters[C_COMMITS];
        if (wk->counters[C_DONE] != records)
            clean = 0;
    }
    res->bytes = c.bytes;
    close(efd);
    hr__shm_unmap(&shm);
    ck_assert_msg(!c.failure[0], "%s", c.failure);
    ck_assert_msg(!c.timed_out, "timed out after %.1f s with %llu of %llu records: lost wake-up?",
                  limit_s, (unsigned long long)c.total,
                  (unsigned long long)(records * (nworkers - 1)));
    ck_assert_msg(clean, "a producer did not finish cleanly");
    ck_assert_uint_eq(c.total, records * (nworkers - 1));
    for (unsigned from = 1; from < nworkers; from++)
        ck_assert_uint_eq(c.next[from], records);
}

/* The numbers the docs quote; `ctest -R cluster_ring -V` shows them. */
static void report(const char *name, uint64_t records, const run_result_t *res)
{
    printf("ring %s: %llu records, %.1f MB in %.3f s: %.0f records/s, %.0f MB/s; eventfd "
           "writes %llu (%.5f per record); consumer: %llu wake-ups, %llu sleeps, %llu turns; "
           "producers: %llu commits, waited for room %llu times (%llu refused reservations)\n",
           name, (unsigned long long)records, res->bytes / 1e6, res->seconds,
           records / res->seconds, res->bytes / 1e6 / res->seconds, (unsigned long long)res->wakes,
           (double)res->wakes / records, (unsigned long long)res->waker.wakeups,
           (unsigned long long)res->waker.sleeps, (unsigned long long)res->waker.turns,
           (unsigned long long)res->commits, (unsigned long long)res->waits,
           (unsigned long long)res->full);
    fflush(stdout);
}

/* One producer sends 1,000,000 records of 16 B to 64 KiB to a consumer on a libuv loop. */
static void one_million(const char *name, mode_t_ mode)
{
    const uint64_t records = 1000000;
    run_result_t res;
    run_cluster(2, records, 32, mode, 120, &res);
    report(name, records, &res);
}

START_TEST(two_processes)
{
    one_million("two_processes", M_CHECKED);
}
END_TEST

/* The same traffic with one memcpy per record and no checksum: what the ring itself costs. */
START_TEST(two_processes_copy)
{
    one_million("two_processes_copy", M_COPY);
}
END_TEST

/* Two producers commit small bursts just as the consumer goes to sleep; none may be lost. */
START_TEST(lost_wakeup_stress)
{
    const uint64_t records = 30000;
    run_result_t res;
    run_cluster(3, records, 4, M_STRESS, 120, &res);
    report("lost_wakeup_stress", 2 * records, &res);
    ck_assert_uint_gt(res.waker.sleeps, 1000); /* the consumer really slept between bursts */
    ck_assert_uint_gt(res.wakes, 1000);
}
END_TEST

/* In one process: a commit from a timer wakes the waker; stop calls its close callback. */
typedef struct {
    hr_shm_t shm;
    hr_ring_t tx, rx;
    hr_waker_t w;
    uv_timer_t timer;
    int efd, sent, got, closed;
} local_t;

static size_t local_drain(hr_waker_t *w, void *arg)
{
    local_t *l = arg;
    size_t n = 0;
    uint32_t t;
    size_t len;
    while (hr__ring_peek(&l->rx, &t, &len)) {
        n++;
        l->got++;
    }
    hr__ring_release(&l->rx);
    return n;
}

static void local_closed(hr_waker_t *w)
{
    ((local_t *)w->data)->closed = 1;
}

static void local_tick(uv_timer_t *t)
{
    local_t *l = t->data;
    if (l->got < l->sent || uv_is_active((uv_handle_t *)&l->w.idle))
        return; /* not delivered yet, or the consumer is not asleep yet */
    if (l->sent == 100) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        hr__waker_stop(&l->w, local_closed);
        return;
    }
    void *p;
    ck_assert_int_eq(hr__ring_reserve(&l->tx, 1, 8, &p), 0);
    l->sent++;
    /* The consumer has had a turn with nothing to do: it sleeps, so this commit wakes it. */
    ck_assert_int_eq(hr__ring_commit(&l->tx), 1);
    ck_assert_int_eq(hr__waker_signal(l->efd), 0);
}

START_TEST(waker_in_one_loop)
{
    static local_t l;
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(hr__shm_create(&l.shm, 2, 0), 0);
    ck_assert_int_eq(hr__shm_ring(&l.shm, 1, 0, &l.tx), 0);
    ck_assert_int_eq(hr__shm_ring(&l.shm, 1, 0, &l.rx), 0);
    l.efd = hr__waker_fd_new();
    ck_assert_int_ge(l.efd, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ck_assert_int_eq(
        hr__waker_start(&l.w, &loop, -1, &hr__shm_worker(&l.shm, 0)->waiting, local_drain, &l),
        UV_EINVAL);
    ck_assert_int_eq(
        hr__waker_start(&l.w, &loop, l.efd, &hr__shm_worker(&l.shm, 0)->waiting, local_drain, &l),
        0);
    l.w.data = &l;
    uv_timer_init(&loop, &l.timer);
    l.timer.data = &l;
    uv_timer_start(&l.timer, local_tick, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_int_eq(l.got, 100);
    ck_assert_int_eq(l.closed, 1);
    ck_assert_uint_eq(l.tx.wakes, 100);
    ck_assert_uint_ge(l.w.wakeups, 100);
    close(l.efd);
    hr__shm_unmap(&l.shm);
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

    t = tcase_create("processes");
    tcase_add_test(t, waker_in_one_loop);
    tcase_add_test(t, two_processes);
    tcase_add_test(t, two_processes_copy);
    tcase_add_test(t, lost_wakeup_stress);
    tcase_set_tags(t, "processes");
    tcase_set_timeout(t, 150);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(ring_suite)
