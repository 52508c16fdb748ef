/* SPDX-License-Identifier: MIT */
/* Growable byte buffer and TCP length-prefix helpers. */
#include <stdlib.h>
#include <string.h>

#include "herald/protocol.h"

void hr_buf_init(hr_buf_t *b)
{
    memset(b, 0, sizeof(*b));
}

void hr_buf_destroy(hr_buf_t *b)
{
    free(b->base);
    memset(b, 0, sizeof(*b));
}

int hr_buf_reserve(hr_buf_t *b, size_t n)
{
    if (b->cap - b->len >= n)
        return HR_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2)
            goto oom;
        cap *= 2;
    }
    uint8_t *p = realloc(b->base, cap);
    if (!p)
        goto oom;
    b->base = p;
    b->cap = cap;
    return HR_OK;
oom:
    b->oom = 1;
    return HR_ENOMEM;
}

int hr_buf_append(hr_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return HR_OK;
    if (hr_buf_reserve(b, n) != HR_OK)
        return HR_ENOMEM;
    memcpy(b->base + b->len, p, n);
    b->len += n;
    return HR_OK;
}

void hr_buf_consume(hr_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->base, b->base + n, b->len - n);
    b->len -= n;
}

void hr_buf_reset(hr_buf_t *b)
{
    b->len = 0;
    b->oom = 0;
}

size_t hr_lp_begin(hr_buf_t *b)
{
    static const uint8_t zero[HR_LP_PREFIX];
    size_t mark = b->len;
    hr_buf_append(b, zero, sizeof(zero));
    return mark;
}

void hr_lp_end(hr_buf_t *b, size_t mark)
{
    if (b->oom || b->len < mark + HR_LP_PREFIX)
        return;
    hr_lp_put(b->base + mark, (uint32_t)(b->len - mark - HR_LP_PREFIX));
}

static size_t prefix_total(const hr_buf_t *b)
{
    return HR_LP_PREFIX + (size_t)hr_lp_get(b->base);
}

int hr_lp_feed(hr_buf_t *partial, const char *p, size_t n, size_t max_frame, hr_frame_cb cb,
               void *arg)
{
    while (n) {
        if (partial->len) {
            /* Top up the partial frame: first its prefix, then its body. */
            size_t want = partial->len < HR_LP_PREFIX ? HR_LP_PREFIX - partial->len
                                                      : prefix_total(partial) - partial->len;
            size_t take = want < n ? want : n;
            if (hr_buf_append(partial, p, take) != HR_OK)
                return HR_ENOMEM;
            p += take;
            n -= take;
            if (partial->len < HR_LP_PREFIX)
                continue;
            size_t total = prefix_total(partial);
            if (total - HR_LP_PREFIX > max_frame)
                return HR_ETOOBIG;
            if (partial->len < total)
                continue; /* the buffer grows with the bytes, not with the declared size */
            int stop = cb(arg, (const char *)partial->base + HR_LP_PREFIX, total - HR_LP_PREFIX);
            hr_buf_destroy(partial);
            if (stop)
                return HR_ECANCELED;
            continue;
        }
        hr_slice_t body;
        size_t used;
        int r = hr_lp_next(p, n, max_frame, &body, &used);
        if (r == HR_ETOOBIG)
            return r;
        if (r == HR_EAGAIN) /* keep what came, not room for what was declared */
            return hr_buf_append(partial, p, n);
        if (cb(arg, body.p, body.n))
            return HR_ECANCELED;
        p += used;
        n -= used;
    }
    return HR_OK;
}
