/* SPDX-License-Identifier: MIT */
/* The exec stage's frames: requests to a child process, strict decoding of its answers. */
#include <string.h>

#include "mpread.h"
#include "pipeline.h"

/* Appends msgpack item headers (and bodies) to `b`; out of memory shows in b->oom. */
static void put_str(hr_buf_t *b, const void *p, size_t n)
{
    uint8_t h[5];
    hr_buf_append(b, h, hr__mp_put_str(h, n));
    hr_buf_append(b, p, n);
}

static void put_uint(hr_buf_t *b, uint64_t v)
{
    uint8_t h[9];
    hr_buf_append(b, h, hr__mp_put_uint(h, v));
}

int hr__pipe_request_encode(hr_buf_t *b, uint64_t id, const hr_pub_cmd_t *p, uint64_t client)
{
    size_t start = b->len;
    size_t mark = hr_lp_begin(b);
    uint8_t h[5];
    hr_buf_append(b, h, hr__mp_put_map(h, 4 + (p->reply.n != 0) + (p->headers.n != 0)));
    put_str(b, "id", 2);
    put_uint(b, id);
    put_str(b, "topic", 5);
    put_str(b, p->topic.p, p->topic.n);
    put_str(b, "payload", 7);
    hr_buf_append(b, h, hr__mp_put_bin(h, p->payload.n));
    hr_buf_append(b, p->payload.p, p->payload.n);
    put_str(b, "client", 6);
    put_uint(b, client);
    if (p->reply.n) {
        put_str(b, "reply", 5);
        put_str(b, p->reply.p, p->reply.n);
    }
    if (p->headers.n) { /* already a validated map: copied as it is */
        put_str(b, "headers", 7);
        hr_buf_append(b, p->headers.p, p->headers.n);
    }
    if (b->oom) {
        b->len = start;
        b->oom = 0;
        return HR_ENOMEM;
    }
    hr_lp_end(b, mark);
    return HR_OK;
}

/* A map<str,str> of at most HR_PIPE_HEADERS_MAX entries, as a PUB's headers must be. */
static int read_headers(hr_mp_t *r, hr_slice_t *out, const char **why)
{
    const uint8_t *start = r->p;
    hr_mp_val_t v;
    if (!hr__mp_read(r, &v)) {
        *why = "headers: malformed";
        return 0;
    }
    if (v.kind == HR_MP_NIL) {
        *out = (hr_slice_t){NULL, 0};
        return 1;
    }
    if (v.kind != HR_MP_MAP || v.n > HR_PIPE_HEADERS_MAX) {
        *why = "headers: not a map of at most 64 string pairs";
        return 0;
    }
    for (uint32_t i = 0; i < 2 * v.n; i++) {
        hr_mp_val_t s;
        if (!hr__mp_read(r, &s) || s.kind != HR_MP_STR || s.s.n > HR_PIPE_HEADER_MAX) {
            *why = "headers: keys and values must be strings of at most 4 KiB";
            return 0;
        }
    }
    *out = (hr_slice_t){(const char *)start, (size_t)(r->p - start)};
    return 1;
}

int hr__pipe_answer_decode(const void *p, size_t n, hr_pipe_answer_t *a, const char **why)
{
    static const char *dummy;
    hr_mp_t r;
    hr_mp_val_t v;
    int has_id = 0, has_action = 0;
    if (!why)
        why = &dummy;
    *a = (hr_pipe_answer_t){0};
    if (!hr__mp_check(p, n)) {
        *why = "not one well-formed msgpack value";
        return HR_EPROTO;
    }
    hr__mp_init(&r, p, n);
    if (!hr__mp_read(&r, &v) || v.kind != HR_MP_MAP) {
        *why = "not a map";
        return HR_EPROTO;
    }
    for (uint32_t i = 0; i < v.n; i++) {
        hr_mp_val_t k, x;
        if (!hr__mp_read(&r, &k)) {
            *why = "malformed key";
            return HR_EPROTO;
        }
        if (k.kind == HR_MP_STR && hr__mp_key_is(&k, "headers", 7)) {
            if (!read_headers(&r, &a->headers, why))
                return HR_EPROTO;
            a->has_headers = 1;
            continue;
        }
        hr_mp_t at = r; /* the value, for skipping a container whole */
        if (!hr__mp_read(&r, &x)) {
            *why = "malformed value";
            return HR_EPROTO;
        }
        if (x.kind == HR_MP_ARRAY || x.kind == HR_MP_MAP) { /* only headers may be one */
            if (k.kind == HR_MP_STR &&
                (hr__mp_key_is(&k, "id", 2) || hr__mp_key_is(&k, "action", 6) ||
                 hr__mp_key_is(&k, "payload", 7) || hr__mp_key_is(&k, "reason", 6))) {
                *why = "a field has the wrong type";
                return HR_EPROTO;
            }
            r = at;
            if (!hr__mp_skip(&r)) {
                *why = "malformed value";
                return HR_EPROTO;
            }
            continue;
        }
        if (k.kind != HR_MP_STR)
            continue;
        if (hr__mp_key_is(&k, "id", 2)) {
            if (x.kind != HR_MP_POS) {
                *why = "id: not an unsigned integer";
                return HR_EPROTO;
            }
            a->id = x.u;
            has_id = 1;
        } else if (hr__mp_key_is(&k, "action", 6)) {
            if (x.kind == HR_MP_STR && x.s.n == 4 && memcmp(x.s.p, "pass", 4) == 0)
                a->action = HR_PIPE_PASS;
            else if (x.kind == HR_MP_STR && x.s.n == 6 && memcmp(x.s.p, "reject", 6) == 0)
                a->action = HR_PIPE_REJECT;
            else {
                *why = "action: not \"pass\" or \"reject\"";
                return HR_EPROTO;
            }
            has_action = 1;
        } else if (hr__mp_key_is(&k, "payload", 7)) {
            if (x.kind != HR_MP_BIN && x.kind != HR_MP_STR) {
                *why = "payload: not bin";
                return HR_EPROTO;
            }
            a->payload = x.s;
            a->has_payload = 1;
        } else if (hr__mp_key_is(&k, "reason", 6)) {
            if (x.kind != HR_MP_STR) {
                *why = "reason: not a string";
                return HR_EPROTO;
            }
            a->reason = x.s;
            if (a->reason.n > HR_PIPE_REASON_MAX)
                a->reason.n = HR_PIPE_REASON_MAX;
        }
    }
    if (!has_id || !has_action) {
        *why = has_id ? "action missing" : "id missing";
        return HR_EPROTO;
    }
    return HR_OK;
}
