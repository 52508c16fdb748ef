/* SPDX-License-Identifier: MIT */
/* Output queue: a ring of (header, shared body) entries and a write cursor. */
#include <stdlib.h>
#include <string.h>

#include "outq.h"

static size_t ent_len(const hr_oq_ent_t *e)
{
    return e->hlen + e->msg->len;
}

int hr__oq_push(hr_outq_t *q, hr_msg_t *m, const uint8_t *hdr, size_t hlen)
{
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 4;
        hr_oq_ent_t *e = malloc(cap * sizeof(*e));
        if (!e)
            return HR_ENOMEM;
        for (uint32_t i = 0; i < q->n; i++)
            e[i] = q->ents[(q->head + i) % q->cap];
        free(q->ents);
        q->ents = e;
        q->head = 0;
        q->cap = cap;
    }
    hr_oq_ent_t *e = &q->ents[(q->head + q->n) % q->cap];
    e->msg = hr_msg_ref(m);
    e->hlen = (uint8_t)hlen;
    if (hlen)
        memcpy(e->hdr, hdr, hlen);
    q->n++;
    q->bytes += ent_len(e);
    return HR_OK;
}

void hr__oq_advance(hr_outq_t *q, size_t n)
{
    while (n && q->n) {
        hr_oq_ent_t *e = &q->ents[q->head];
        size_t left = ent_len(e) - q->off;
        if (n < left) {
            q->off += (uint32_t)n;
            q->bytes -= n;
            return;
        }
        n -= left;
        q->bytes -= left;
        q->off = 0;
        hr_msg_unref(&e->msg);
        q->head = (q->head + 1) % q->cap;
        q->n--;
    }
    if (!q->n && q->cap > 64) { /* a drained queue gives back a large ring */
        free(q->ents);
        q->ents = NULL;
        q->cap = q->head = 0;
    }
}

void hr__oq_drop_unsent(hr_outq_t *q)
{
    size_t covered = 0;
    uint32_t keep = 0;
    while (keep < q->n && covered < q->inflight) {
        covered += ent_len(&q->ents[(q->head + keep) % q->cap]) - (keep ? 0 : q->off);
        keep++;
    }
    for (uint32_t i = keep; i < q->n; i++) {
        hr_oq_ent_t *e = &q->ents[(q->head + i) % q->cap];
        q->bytes -= ent_len(e) - (i ? 0 : q->off);
        if (!i)
            q->off = 0;
        hr_msg_unref(&e->msg);
    }
    q->n = keep;
}

void hr__oq_free(hr_outq_t *q)
{
    for (uint32_t i = 0; i < q->n; i++)
        hr_msg_unref(&q->ents[(q->head + i) % q->cap].msg);
    free(q->ents);
    memset(q, 0, sizeof(*q));
}

int hr__oq_iov(const hr_outq_t *q, uv_buf_t *iov, int max_iov, size_t max_bytes, size_t *total)
{
    int k = 0;
    size_t off = q->off, sum = 0;
    for (uint32_t i = 0; i < q->n && k + 2 <= max_iov && sum < max_bytes; i++) {
        const hr_oq_ent_t *e = &q->ents[(q->head + i) % q->cap];
        if (off < e->hlen) {
            iov[k++] = uv_buf_init((char *)e->hdr + off, (unsigned)(e->hlen - off));
            sum += e->hlen - off;
            off = 0;
        } else {
            off -= e->hlen;
        }
        iov[k++] = uv_buf_init((char *)hr_msg_bytes(e->msg) + off, (unsigned)(e->msg->len - off));
        sum += e->msg->len - off;
        off = 0;
    }
    *total = sum;
    return k;
}
