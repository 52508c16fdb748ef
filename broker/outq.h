/* SPDX-License-Identifier: MIT */
/* Per-connection output queue: shared message references with tiny per-delivery headers. */
#ifndef HERALD_BROKER_OUTQ_H
#define HERALD_BROKER_OUTQ_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "herald/protocol.h"

/* One queued output item: an optional per-delivery header + a shared body. */
typedef struct hr_oq_ent_s {
    hr_msg_t *msg; /* owned ref */
    uint8_t hlen;
    uint8_t hdr[HR_DELIVERY_HDR_MAX];
} hr_oq_ent_t;

/*
 * Entries live in fixed chunks that never move while queued, because a
 * uv_write in flight points at the header bytes stored inside them.
 */
#define HR_OQ_CHUNK 32

typedef struct hr_oq_chunk_s {
    struct hr_oq_chunk_s *next;
    uint32_t n; /* entries written into this chunk */
    hr_oq_ent_t ents[HR_OQ_CHUNK];
} hr_oq_chunk_t;

typedef struct hr_outq_s {
    hr_oq_chunk_t *head, *tail;
    uint32_t head_i; /* first queued entry in `head` */
    uint32_t n;      /* entries queued */
    uint32_t off;    /* bytes of the first entry already written */
    size_t bytes;    /* bytes queued and not yet written */
    size_t inflight; /* bytes handed to uv_write, not yet completed */
} hr_outq_t;

/*
 * What one queued entry costs beyond its bytes on the wire: the entry (its
 * share of a chunk), and the header, headroom and allocator overhead of
 * its message, charged to each connection that pins it like the body's
 * bytes are. For small messages this is most of what a backlog holds, so
 * the output limits count it: `out-hard 8M` means about 8 MB of memory.
 */
#define HR_OQ_ENT_OVERHEAD                                                                         \
    (sizeof(hr_oq_chunk_t) / HR_OQ_CHUNK + sizeof(hr_msg_t) + HR_WS_HDR_MAX + 2 * sizeof(void *))

/** Memory `q` holds, as charged against the output limits: its bytes plus per-entry overhead. */
static inline size_t hr__oq_charge(const hr_outq_t *q)
{
    return q->bytes + (size_t)q->n * HR_OQ_ENT_OVERHEAD;
}

/**
 * Appends `m` (taking a reference) preceded by `hlen` header bytes; `hdr`, when
 * hlen > 0, must point to HR_DELIVERY_HDR_MAX readable bytes. HR_OK or HR_ENOMEM.
 */
int hr__oq_push(hr_outq_t *q, hr_msg_t *m, const uint8_t *hdr, size_t hlen);
/** Releases `n` written bytes from the front, dropping fully written entries. */
void hr__oq_advance(hr_outq_t *q, size_t n);
/**
 * Fills at most `max_iov` iovecs with up to about `max_bytes` queued bytes,
 * from the write cursor on; returns the count and their total in `*total`.
 */
int hr__oq_iov(const hr_outq_t *q, uv_buf_t *iov, int max_iov, size_t max_bytes, size_t *total);
/** Drops every entry not covered by the write in flight (q->inflight bytes). */
void hr__oq_drop_unsent(hr_outq_t *q);
/** Frees the chunks kept for reuse (at exit, so leak checkers see a clean heap). */
void hr__oq_cache_release(void);
/** Releases every entry and chunk. */
void hr__oq_free(hr_outq_t *q);

#endif
