/* SPDX-License-Identifier: MIT */
/* Single-producer single-consumer ring of variable-size records in shared memory. */
#include <assert.h>
#include <string.h>

#include "herald/status.h"
#include "ring.h"

_Static_assert(sizeof(hr_ring_ctl_t) <= HR_RING_CTL_SIZE, "ring control block too large");

/* The bytes a record of `len` occupies: header plus body, rounded up to HR_RING_ALIGN. */
static uint64_t footprint(size_t len)
{
    return ((uint64_t)HR_RING_HDR + len + HR_RING_ALIGN - 1) & ~(uint64_t)(HR_RING_ALIGN - 1);
}

static void put_hdr(uint8_t *p, uint32_t len, uint32_t type)
{
    memcpy(p, &len, 4);
    memcpy(p + 4, &type, 4);
}

int hr__ring_init(hr_ring_t *r, void *mem, uint64_t size, _Atomic uint32_t *waiting)
{
    if (!r || !mem || ((uintptr_t)mem & 127) || size < HR_RING_MIN_SIZE ||
        size > HR_RING_MAX_SIZE || (size & (size - 1)))
        return HR_EINVAL;
    memset(r, 0, sizeof(*r));
    r->ctl = mem;
    r->data = (uint8_t *)mem + HR_RING_CTL_SIZE;
    r->size = size;
    r->waiting = waiting;
    r->head = r->wpos = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
    r->tail = r->rpos = r->tail_seen = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    r->head_seen = r->head;
    return 0;
}

size_t hr__ring_max_len(const hr_ring_t *r)
{
    return (size_t)(r->size / 2 - HR_RING_HDR);
}

/*
 * A record never straddles the end of the data area: when the bytes left before the end are
 * too few, a padding record fills them and the record starts at offset 0. Limiting a record
 * to half the ring guarantees it always fits one way or the other once the ring has drained,
 * wherever the positions stand, so a producer that waits always makes progress.
 */
int hr__ring_reserve(hr_ring_t *r, uint32_t type, size_t len, void **data)
{
    if (len > hr__ring_max_len(r))
        return HR_ETOOBIG;
    if (type == HR_RING_TYPE_PAD)
        return HR_EINVAL;
    uint64_t need = footprint(len);
    uint64_t off = r->wpos & (r->size - 1);
    uint64_t to_end = r->size - off;
    uint64_t total = need <= to_end ? need : to_end + need;
    if (r->wpos + total - r->tail_seen > r->size) {
        /* Acquire pairs with the consumer's release: its reads of the bytes we are about to
         * overwrite are complete. */
        r->tail_seen = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
        if (r->wpos + total - r->tail_seen > r->size) {
            r->full++;
            return HR_EBUFFULL;
        }
    }
    if (need > to_end) {
        put_hdr(r->data + off, (uint32_t)(to_end - HR_RING_HDR), HR_RING_TYPE_PAD);
        r->wpos += to_end;
        off = 0;
    }
    put_hdr(r->data + off, (uint32_t)len, type);
    r->wpos += need;
    *data = r->data + off + HR_RING_HDR;
    return 0;
}

/*
 * The wake-up protocol (the consumer's half is in waker.c). The consumer, before it sleeps,
 * stores waiting = 1, issues a seq_cst fence, then looks at every inbound ring once more.
 * The producer stores the new head, issues a seq_cst fence, then reads waiting and tail.
 * The two fences are ordered one way or the other: either the consumer's second look sees
 * this head, or this load sees waiting = 1 (and the tail the consumer released before its
 * fence). So a wake-up is never lost, and the common case costs no syscall: a consumer that
 * is busy has waiting = 0, and a ring that already held records (tail behind the old head)
 * has a consumer that will come back to it. The exchange makes exactly one producer pay for
 * the eventfd write when several commit to a sleeping consumer at once.
 */
int hr__ring_commit(hr_ring_t *r)
{
    uint64_t old = r->head;
    if (r->wpos == old)
        return 0;
    r->head = r->wpos;
    atomic_store_explicit(&r->ctl->head, r->wpos, memory_order_release);
    r->commits++;
    if (!r->waiting)
        return 0;
    atomic_thread_fence(memory_order_seq_cst);
    /* Both loads come after the fence, so their order is free: waiting first, because it is
     * 0 while the consumer is busy and then the consumer's tail line is not touched. */
    if (!atomic_load_explicit(r->waiting, memory_order_relaxed))
        return 0;
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    r->tail_seen = tail;
    if (tail != old || !atomic_exchange_explicit(r->waiting, 0, memory_order_relaxed))
        return 0;
    r->wakes++;
    return 1;
}

void hr__ring_cancel(hr_ring_t *r)
{
    r->wpos = r->head;
}

/* Fails the ring: the other side wrote something no producer of ours writes. */
static void *corrupt(hr_ring_t *r)
{
    r->err = HR_EPROTO;
    return NULL;
}

void *hr__ring_peek(hr_ring_t *r, uint32_t *type, size_t *len)
{
    if (r->err)
        return NULL;
    for (;;) {
        if (r->rpos == r->head_seen) {
            /* Acquire pairs with the producer's release: the record bytes are visible. */
            r->head_seen = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
            if (r->rpos == r->head_seen)
                return NULL;
            if (r->head_seen - r->tail > r->size || r->head_seen < r->rpos)
                return corrupt(r);
        }
        uint64_t off = r->rpos & (r->size - 1);
        uint64_t to_end = r->size - off;
        uint32_t n, t;
        memcpy(&n, r->data + off, 4);
        memcpy(&t, r->data + off + 4, 4);
        if (t == HR_RING_TYPE_PAD) {
            if (n != to_end - HR_RING_HDR || r->rpos + to_end > r->head_seen)
                return corrupt(r);
            r->rpos += to_end;
            continue;
        }
        uint64_t need = footprint(n);
        if (n > hr__ring_max_len(r) || need > to_end || r->rpos + need > r->head_seen)
            return corrupt(r);
        r->rpos += need;
        *type = t;
        *len = n;
        return r->data + off + HR_RING_HDR;
    }
}

void hr__ring_release(hr_ring_t *r)
{
    if (r->rpos == r->tail)
        return;
    r->tail = r->rpos;
    atomic_store_explicit(&r->ctl->tail, r->rpos, memory_order_release);
}

uint64_t hr__ring_used(const hr_ring_t *r)
{
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
    return head - tail;
}
