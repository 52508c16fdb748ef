/* SPDX-License-Identifier: MIT */
/* The cluster's shared memory: a header per worker and one ring per ordered pair of workers. */
#ifndef HERALD_CLUSTER_SHM_H
#define HERALD_CLUSTER_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ring.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HR_SHM_MAX_WORKERS 64
#define HR_SHM_RING_DEFAULT (1u << 20)
#define HR_SHM_COUNTERS 6
/* "HRLDSHM1": the first word of a region, checked by hr__shm_map(). */
#define HR_SHM_MAGIC UINT64_C(0x314d4853444c5248)
#define HR_SHM_VERSION 1u

/*
 * One worker's header: two cache lines. The first holds only `waiting`, which the worker and
 * every producer that wakes it write; the second holds words the worker and the primary
 * write rarely.
 */
typedef struct hr_shm_worker_s {
    /* Set by the worker just before it sleeps, cleared by it when it wakes or by the one
     * producer that signals it (see ring.c, waker.c). */
    _Alignas(64) _Atomic uint32_t waiting;
    /* Free for later code: e.g. the primary bumps `generation` at each spawn of this worker
     * and the worker stores it in `alive` once it serves; counters are per-worker stats. */
    _Alignas(64) _Atomic uint32_t generation;
    _Atomic uint32_t alive;
    _Atomic uint64_t counters[HR_SHM_COUNTERS];
} hr_shm_worker_t;

/* A mapped region. All fields are read-only for users. */
typedef struct hr_shm_s {
    void *base;         /* start of the mapping */
    size_t bytes;       /* length of the mapping (the memfd's size) */
    int fd;             /* the memfd when this process created it, -1 when it mapped one */
    unsigned nworkers;  /* workers 0..nworkers-1 */
    uint32_t ring_size; /* data bytes of every ring */
} hr_shm_t;

/**
 * Primary: creates a region for `nworkers` (1..HR_SHM_MAX_WORKERS) workers whose rings have
 * `ring_size` data bytes (a power of two within HR_RING_MIN_SIZE..HR_RING_MAX_SIZE; 0 means
 * HR_SHM_RING_DEFAULT). The memfd is sized, sealed against shrinking and growing, mapped,
 * and left open without close-on-exec in `shm->fd`, so spawned workers inherit it: pass
 * them the number. Pages are allocated on first touch, so an idle ring costs little real
 * memory. Returns 0; HR_EINVAL for bad arguments; a negative errno (UV_E*) when a system
 * call fails, with nothing left behind.
 */
int hr__shm_create(hr_shm_t *shm, unsigned nworkers, size_t ring_size);

/**
 * Worker: maps the region behind `fd` (made by hr__shm_create in the primary). Checks the
 * header and that the size matches and cannot change. Does not take `fd`: the caller may
 * close it once this returns. Returns 0; HR_EINVAL for a negative fd; HR_EPROTO when the
 * file is not such a region; a negative errno when a system call fails.
 */
int hr__shm_map(hr_shm_t *shm, int fd);

/** Unmaps the region and closes the fd if this process created it. Safe to call twice. */
void hr__shm_unmap(hr_shm_t *shm);

/** Returns worker `id`'s header, or NULL when `id` is out of range. */
hr_shm_worker_t *hr__shm_worker(const hr_shm_t *shm, unsigned id);

/**
 * Attaches `ring` to the ring carrying records from worker `from` to worker `to`; its
 * waiting word is `to`'s. Returns 0, or HR_EINVAL when either is out of range or they are
 * equal.
 */
int hr__shm_ring(const hr_shm_t *shm, unsigned from, unsigned to, hr_ring_t *ring);

#ifdef __cplusplus
}
#endif
#endif
