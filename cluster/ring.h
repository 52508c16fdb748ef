/* SPDX-License-Identifier: MIT */
/* Single-producer single-consumer ring of variable-size records in shared memory. */
#ifndef HERALD_CLUSTER_RING_H
#define HERALD_CLUSTER_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every record starts with this many bytes of header: uint32 length, uint32 type. */
#define HR_RING_HDR 8u
/* Records start at multiples of this. */
#define HR_RING_ALIGN 8u
/* Bytes of shared control block (head and tail on separate lines) before a ring's data. */
#define HR_RING_CTL_SIZE 256u
/* Bounds of a ring's data size, which must be a power of two. */
#define HR_RING_MIN_SIZE 1024u
#define HR_RING_MAX_SIZE (1u << 30)
/* Record type reserved for the padding record that fills the end of the data area. */
#define HR_RING_TYPE_PAD UINT32_MAX

/*
 * The shared part of a ring. `head` is written only by the producer and `tail` only by the
 * consumer; both are byte positions that only grow (offset = position & (size - 1)), so
 * head - tail is the number of bytes in use and a full ring is never mistaken for an empty
 * one. They are 128 bytes apart so that neither side's writes, nor the adjacent-line
 * prefetcher, pull the other side's line away from it.
 */
typedef struct hr_ring_ctl_s {
    _Alignas(128) _Atomic uint64_t head;
    _Alignas(128) _Atomic uint64_t tail;
} hr_ring_ctl_t;

/*
 * One process's view of a ring. A process is the producer or the consumer of a ring (a test
 * may be both); each side uses only its own private fields, so the struct is not shared.
 */
typedef struct hr_ring_s {
    /* read-only */
    uint64_t full;    /* reservations refused because the ring was full */
    uint64_t commits; /* commits that published at least one record */
    uint64_t wakes;   /* commits that asked for the consumer to be woken */
    int err;          /* HR_EPROTO once the consumer met a malformed record; 0 otherwise */
    /* private */
    hr_ring_ctl_t *ctl;
    uint8_t *data;
    uint64_t size;
    _Atomic uint32_t *waiting; /* the consumer's "about to sleep" word, or NULL */
    uint64_t wpos;             /* producer: end of the reserved records */
    uint64_t head;             /* producer: last published head */
    uint64_t tail_seen;        /* producer: last tail read */
    uint64_t rpos;             /* consumer: end of the peeked records */
    uint64_t tail;             /* consumer: last published tail */
    uint64_t head_seen;        /* consumer: last head read */
} hr_ring_t;

/**
 * Attaches `r` to a ring whose control block is at `mem` and whose `size` data bytes follow
 * it at `mem + HR_RING_CTL_SIZE`. Zeroed memory is an empty ring. `waiting` is the
 * consumer's waiting word (see waker.h), or NULL when nobody sleeps on this ring. Picks up
 * the current head and tail, so a side can re-attach. Returns 0, or HR_EINVAL when `size`
 * is not a power of two within bounds or `mem` is not 128-byte aligned.
 */
int hr__ring_init(hr_ring_t *r, void *mem, uint64_t size, _Atomic uint32_t *waiting);

/** Returns the largest record length `r` accepts: half its data size minus the header. */
size_t hr__ring_max_len(const hr_ring_t *r);

/**
 * Producer: reserves room for a record of `len` bytes and type `type` after those already
 * reserved, and stores a pointer to its (8-byte aligned) body in `*data`. The record is
 * invisible to the consumer until hr__ring_commit(). Returns 0; HR_EBUFFULL when the ring
 * has no room now (nothing changes: apply backpressure and retry after the consumer has
 * released; `full` counts these); HR_ETOOBIG when `len` exceeds hr__ring_max_len();
 * HR_EINVAL when `type` is HR_RING_TYPE_PAD. Never a syscall.
 */
int hr__ring_reserve(hr_ring_t *r, uint32_t type, size_t len, void **data);

/**
 * Producer: publishes every record reserved since the last commit (one release store, so a
 * batch costs the same as one record). Returns 1 when the consumer may be asleep waiting
 * for this ring: the ring was empty before this batch and the consumer had announced it
 * was going to sleep; the caller must then signal the consumer's eventfd
 * (hr__waker_signal). Returns 0 otherwise, including when nothing was reserved.
 */
int hr__ring_commit(hr_ring_t *r);

/** Producer: forgets the records reserved since the last commit. */
void hr__ring_cancel(hr_ring_t *r);

/**
 * Consumer: returns the body of the next record after those already peeked and stores its
 * type and length, or returns NULL when no committed record is left (or `r->err` is set:
 * a malformed header stops the ring rather than reading out of bounds). The body stays
 * valid and unchanged until hr__ring_release(). Padding records are skipped.
 */
void *hr__ring_peek(hr_ring_t *r, uint32_t *type, size_t *len);

/**
 * Consumer: gives every peeked record back to the producer at once (one release store).
 * Their pointers are invalid afterwards.
 */
void hr__ring_release(hr_ring_t *r);

/** Returns the bytes committed and not yet released, as seen from the calling side. */
uint64_t hr__ring_used(const hr_ring_t *r);

#ifdef __cplusplus
}
#endif
#endif
