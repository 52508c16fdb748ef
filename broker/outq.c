/* SPDX-License-Identifier: MIT */
/* Output queue: a list of chunks of (header, shared body) entries and a write cursor. */
#include <stdlib.h>
#include <string.h>

#include "outq.h"

/*
 * Drained chunks are kept for reuse (up to CHUNK_CACHE of them): every 32
 * deliveries would otherwise malloc and free a 1 KiB block, which keeps
 * glibc out of its fast paths. The broker's loop thread is the only user.
 */
#define CHUNK_CACHE 256
static hr_oq_chunk_t *chunk_cache;
static unsigned chunk_cached;

static hr_oq_chunk_t *chunk_new(void)
{
    hr_oq_chunk_t *c = chunk_cache;
    if (c) {
        chunk_cache = c->next;
        chunk_cached--;
        return c;
    }
    return malloc(sizeof(*c));
}

static void chunk_free(hr_oq_chunk_t *c)
{
    if (chunk_cached < CHUNK_CACHE) {
        c->next = chunk_cache;
        chunk_cache = c;
        chunk_cached++;
        return;
    }
    free(c);
}

void hr__oq_cache_release(void)
{
    while (chunk_cache) {
        hr_oq_chunk_t *next = chunk_cache->next;
        free(chunk_cache);
        chunk_cache = next;
    }
    chunk_cached = 0;
}

static size_t ent_len(const hr_oq_ent_t *e)
{
    return e->hlen + e->msg->len;
}

int hr__oq_push(hr_outq_t *q, hr_msg_t *m, const uint8_t *hdr, size_t hlen)
{
    if (!q->tail || q->tail->n == HR_OQ_CHUNK) {
        hr_oq_chunk_t *c = chunk_new();
        if (!c)
            return HR_ENOMEM;
        c->next = NULL;
        c->n = 0;
        if (q->tail)
            q->tail->next = c;
        else {
            q->head = c;
            q->head_i = 0;
        }
        q->tail = c;
    }
    hr_oq_ent_t *e = &q->tail->ents[q->tail->n++];
    e->msg = hr_msg_ref(m);
    e->hlen = (uint8_t)hlen;
    if (hlen) /* the caller's buffer is HR_DELIVERY_HDR_MAX bytes: a fixed-size copy is cheaper */
        memcpy(e->hdr, hdr, sizeof(e->hdr));
    q->n++;
    q->bytes += ent_len(e);
    return HR_OK;
}

/* Removes the first entry (its bytes are accounted for by the caller). */
static void pop(hr_outq_t *q)
{
    hr_msg_unref(&q->head->ents[q->head_i].msg);
    q->n--;
    q->off = 0;
    if (++q->head_i == q->head->n) {
        /* A chunk is done once its entries are consumed and it is full or last. */
        hr_oq_chunk_t *c = q->head;
        if (c->n == HR_OQ_CHUNK || !c->next) {
            q->head = c->next;
            q->head_i = 0;
            if (!q->head)
                q->tail = NULL;
            chunk_free(c);
        }
    }
}

void hr__oq_advance(hr_outq_t *q, size_t n)
{
    while (n && q->n) {
        hr_oq_ent_t *e = &q->head->ents[q->head_i];
        size_t left = ent_len(e) - q->off;
        if (n < left) {
            q->off += (uint32_t)n;
            q->bytes -= n;
            return;
        }
        n -= left;
        q->bytes -= left;
        pop(q);
    }
}

/* Walks entries from the first queued one: *c, *i is the position of entry `k`. */
#define FOR_EACH_ENT(q, c, i)                                                                      \
    for (hr_oq_chunk_t *c = (q)->head; c; c = c->next)                                             \
        for (uint32_t i = (c == (q)->head ? (q)->head_i : 0); i < c->n; i++)

void hr__oq_drop_unsent(hr_outq_t *q)
{
    size_t covered = 0;
    uint32_t k = 0, keep = 0;
    hr_oq_chunk_t *cut = NULL;
    uint32_t cut_i = 0;
    FOR_EACH_ENT(q, c, i)
    {
        hr_oq_ent_t *e = &c->ents[i];
        if (covered < q->inflight) { /* still referenced by the write in flight */
            covered += ent_len(e) - (k ? 0 : q->off);
            keep++;
        } else {
            if (!cut) {
                cut = c;
                cut_i = i;
            }
            q->bytes -= ent_len(e) - (k ? 0 : q->off);
            if (!k)
                q->off = 0;
            hr_msg_unref(&e->msg);
        }
        k++;
    }
    if (!cut)
        return;
    /* Truncate after the kept entries and free the chunks past the cut. */
    hr_oq_chunk_t *rest = cut->next;
    cut->next = NULL;
    cut->n = cut_i;
    while (rest) {
        hr_oq_chunk_t *next = rest->next;
        chunk_free(rest);
        rest = next;
    }
    q->n = keep;
    q->tail = cut;
    if (keep == 0) {
        chunk_free(cut);
        q->head = q->tail = NULL;
        q->head_i = 0;
    }
}

void hr__oq_free(hr_outq_t *q)
{
    FOR_EACH_ENT(q, c, i)
    hr_msg_unref(&c->ents[i].msg);
    hr_oq_chunk_t *c = q->head;
    while (c) {
        hr_oq_chunk_t *next = c->next;
        chunk_free(c);
        c = next;
    }
    memset(q, 0, sizeof(*q));
}

int hr__oq_iov(const hr_outq_t *q, uv_buf_t *iov, int max_iov, size_t max_bytes, size_t *total)
{
    int k = 0;
    size_t off = q->off, sum = 0;
    FOR_EACH_ENT(q, c, i)
    {
        if (k + 2 > max_iov || sum >= max_bytes)
            break;
        const hr_oq_ent_t *e = &c->ents[i];
        /* Plain stores: uv_buf_init() is an out-of-line call in libuv. */
        if (off < e->hlen) {
            iov[k].base = (char *)e->hdr + off;
            iov[k++].len = e->hlen - off;
            sum += e->hlen - off;
            off = 0;
        } else {
            off -= e->hlen;
        }
        iov[k].base = (char *)hr_msg_bytes(e->msg) + off;
        iov[k++].len = e->msg->len - off;
        sum += e->msg->len - off;
        off = 0;
    }
    *total = sum;
    return k;
}
