/* SPDX-License-Identifier: MIT */
/* Received messages: one immutable, refcounted allocation per message. */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

static char *put(char **dst, const char *p, size_t n)
{
    char *s = *dst;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    *dst += n + 1;
    return s;
}

/*
 * The header map was validated by hr_frame_decode() (map<str,str>), so the
 * iterator cannot fail half-way; it is walked twice: once to size the
 * allocation, once to copy.
 */
hr_message_t *hr__message_new(const hr_frame_t *f)
{
    size_t nh = 0, hbytes = 0;
    hr_headers_iter_t it;
    hr_slice_t k, v;
    int has_reply = (f->flags & HR_F_REPLY) != 0;
    int has_headers = (f->flags & HR_F_HEADERS) && f->headers.n > 0;

    if (has_headers) {
        hr_headers_iter_init(&it, f->headers);
        while (hr_headers_iter_next(&it, &k, &v)) {
            nh++;
            hbytes += k.n + v.n + 2;
        }
    }
    size_t size = sizeof(hr_message_t) + nh * sizeof(hr_header_t) + f->topic.n + 1 +
                  (has_reply ? f->reply.n + 1 : 0) + f->payload.n + 1 + hbytes;
    hr_message_t *m = malloc(size);
    if (m == NULL)
        return NULL;
    atomic_init(&m->refs, 1);
    m->replay = (f->flags & HR_F_REPLAY) != 0;
    m->seq = f->seq;
    m->sid = f->sid;
    m->qnext = NULL;
    m->qsub = NULL;
    m->nheaders = nh;
    m->headers = nh ? (hr_header_t *)(m + 1) : NULL;
    char *p = (char *)(m + 1) + nh * sizeof(hr_header_t);
    m->topic = put(&p, f->topic.p, f->topic.n);
    m->reply = has_reply ? put(&p, f->reply.p, f->reply.n) : NULL;
    m->len = f->payload.n;
    m->data = (const uint8_t *)put(&p, f->payload.p, f->payload.n);
    if (nh) {
        size_t i = 0;
        hr_headers_iter_init(&it, f->headers);
        while (i < nh && hr_headers_iter_next(&it, &k, &v)) {
            m->headers[i].key = put(&p, k.p, k.n);
            m->headers[i].value = put(&p, v.p, v.n);
            i++;
        }
    }
    return m;
}

const char *hr_message_topic(const hr_message_t *m)
{
    return m->topic;
}

const void *hr_message_data(const hr_message_t *m, size_t *len)
{
    if (len)
        *len = m->len;
    return m->data;
}

uint64_t hr_message_seq(const hr_message_t *m)
{
    return m->seq;
}

const char *hr_message_reply(const hr_message_t *m)
{
    return m->reply;
}

int hr_message_is_replay(const hr_message_t *m)
{
    return m->replay;
}

const char *hr_message_header(const hr_message_t *m, const char *key)
{
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i].key, key) == 0)
            return m->headers[i].value;
    return NULL;
}

const hr_header_t *hr_message_headers(const hr_message_t *m, size_t *n)
{
    if (n)
        *n = m->nheaders;
    return m->headers;
}

hr_message_t *hr_message_ref(hr_message_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void hr_message_unref(hr_message_t **mp)
{
    hr_message_t *m = mp ? *mp : NULL;
    if (m == NULL)
        return;
    *mp = NULL;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}
