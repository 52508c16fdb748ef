/* SPDX-License-Identifier: MIT */
/* Refcounted message buffers and the per-delivery framing of shared bodies. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "herald/protocol.h"

hr_msg_t *hr_msg_new(size_t headroom, const void *p, size_t len)
{
    if (headroom + len > UINT32_MAX - sizeof(hr_msg_t))
        return NULL;
    hr_msg_t *m = malloc(sizeof(*m) + headroom + len);
    if (!m)
        return NULL;
    m->refs = 1;
    m->off = (uint32_t)headroom;
    m->len = (uint32_t)len;
    m->cap = (uint32_t)(headroom + len);
    m->arr = 0;
    if (p)
        memcpy(m->data + headroom, p, len);
    else
        memset(m->data + headroom, 0, len);
    return m;
}

hr_msg_t *hr_msg_ref(hr_msg_t *m)
{
    assert(m->refs > 0);
    m->refs++;
    return m;
}

void hr_msg_unref(hr_msg_t **mp)
{
    hr_msg_t *m = *mp;
    if (!m)
        return;
    *mp = NULL;
    assert(m->refs > 0);
    if (--m->refs == 0)
        free(m);
}

/* Encoded sizes, to allocate a delivery body exactly once. They mirror the
 * smallest-format choices msgpack-c's packer makes. */
static size_t sz_uint(uint64_t v)
{
    return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

static size_t sz_str(size_t n)
{
    return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
}

static size_t sz_bin(size_t n)
{
    return n + (n < 256 ? 2 : n < 65536 ? 3 : 5);
}

typedef struct fixed_s {
    uint8_t *p;
    size_t left;
} fixed_t;

static int fixed_write(void *data, const char *p, size_t n)
{
    fixed_t *w = data;
    assert(n <= w->left);
    memcpy(w->p, p, n);
    w->p += n;
    w->left -= n;
    return 0;
}

hr_msg_t *hr_msg_new_delivery(hr_slice_t topic, uint64_t seq, hr_slice_t payload, hr_slice_t reply,
                              hr_slice_t headers_raw, int replay)
{
    int nopts = (reply.n > 0) + (headers_raw.n > 0) + (replay != 0);
    size_t len = sz_str(topic.n) + sz_uint(seq) + sz_bin(payload.n);
    if (nopts)
        len += 1 + (reply.n ? sz_str(5) + sz_str(reply.n) : 0) +
               (headers_raw.n ? sz_str(7) + headers_raw.n : 0) + (replay ? sz_str(6) + 1 : 0);
    hr_msg_t *m = hr_msg_new(0, NULL, len);
    if (!m)
        return NULL;
    m->arr = nopts ? 0x96 : 0x95;

    fixed_t w = {m->data, len};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, fixed_write);
    msgpack_pack_str(&pk, topic.n);
    msgpack_pack_str_body(&pk, topic.p, topic.n);
    msgpack_pack_uint64(&pk, seq);
    msgpack_pack_bin(&pk, payload.n);
    msgpack_pack_bin_body(&pk, payload.p, payload.n);
    if (nopts) {
        msgpack_pack_map(&pk, (size_t)nopts);
        if (reply.n) {
            msgpack_pack_str(&pk, 5);
            msgpack_pack_str_body(&pk, "reply", 5);
            msgpack_pack_str(&pk, reply.n);
            msgpack_pack_str_body(&pk, reply.p, reply.n);
        }
        if (headers_raw.n) {
            msgpack_pack_str(&pk, 7);
            msgpack_pack_str_body(&pk, "headers", 7);
            fixed_write(&w, headers_raw.p, headers_raw.n);
        }
        if (replay) {
            msgpack_pack_str(&pk, 6);
            msgpack_pack_str_body(&pk, "replay", 6);
            msgpack_pack_true(&pk);
        }
    }
    assert(w.left == 0);
    return m;
}

/* Length of the msgpack str/uint/bin element at `p` (bodies we encoded). */
static size_t elem_len(const uint8_t *p)
{
    uint8_t t = p[0];
    if (t <= 0x7f)
        return 1;
    if ((t & 0xe0) == 0xa0)
        return 1 + (t & 0x1fu);
    switch (t) {
    case 0xcc:
        return 2;
    case 0xcd:
        return 3;
    case 0xce:
        return 5;
    case 0xcf:
        return 9;
    case 0xd9:
    case 0xc4:
        return 2 + p[1];
    case 0xda:
    case 0xc5:
        return 3 + ((size_t)p[1] << 8 | p[2]);
    case 0xdb:
    case 0xc6:
        return 5 + ((size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4]);
    default:
        return 0;
    }
}

hr_msg_t *hr_msg_new_replay(const hr_msg_t *live)
{
    static const uint8_t pair[] = {0xa6, 'r', 'e', 'p', 'l', 'a', 'y', 0xc3};
    const uint8_t *b = hr_msg_bytes(live);
    size_t extra = sizeof(pair) + (live->arr == 0x95);
    hr_msg_t *m = hr_msg_new(0, NULL, live->len + extra);
    if (!m)
        return NULL;
    memcpy(m->data, b, live->len);
    if (live->arr == 0x95) {
        m->data[live->len] = 0x81; /* a new opts map with one entry */
    } else {
        size_t off = 0;
        for (int i = 0; i < 3; i++) /* topic, seq, payload */
            off += elem_len(b + off);
        assert(off < live->len && (b[off] & 0xf0) == 0x80 && b[off] < 0x8f);
        m->data[off]++; /* our opts maps are fixmaps of at most 3 entries */
    }
    memcpy(m->data + live->len + (live->arr == 0x95), pair, sizeof(pair));
    m->arr = 0x96;
    return m;
}

/* The value of the msgpack uint at `p` (bodies we encoded). */
static uint64_t get_uint(const uint8_t *p, size_t n)
{
    if (n == 1)
        return p[0];
    uint64_t v = 0;
    for (size_t i = 1; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Where the data of the str or bin element at `p` of length `n` starts. */
static size_t elem_hdr(const uint8_t *p)
{
    uint8_t t = p[0];
    if ((t & 0xe0) == 0xa0)
        return 1;
    return t == 0xd9 || t == 0xc4 ? 2 : t == 0xda || t == 0xc5 ? 3 : 5;
}

int hr_msg_delivery_parts(const hr_msg_t *m, hr_slice_t *topic, uint64_t *seq, hr_slice_t *payload,
                          hr_slice_t *opts)
{
    const uint8_t *b = hr_msg_bytes(m);
    size_t off = 0, len[3];
    for (int i = 0; i < 3; i++) { /* topic, seq, payload */
        uint8_t t = off < m->len ? b[off] : 0xc1;
        size_t head = t == 0xc4 || t == 0xd9   ? 2
                      : t == 0xc5 || t == 0xda ? 3
                      : t == 0xc6 || t == 0xdb ? 5
                                               : 1; /* what elem_len() reads */
        if (off >= m->len || m->len - off < head || !(len[i] = elem_len(b + off)) ||
            len[i] > m->len - off)
            return HR_EINVAL;
        const uint8_t *e = b + off;
        if (i == 1)
            *seq = get_uint(e, len[i]);
        else {
            size_t h = elem_hdr(e);
            hr_slice_t sl = {(const char *)e + h, len[i] - h};
            *(i == 0 ? topic : payload) = sl;
        }
        off += len[i];
    }
    *opts = (hr_slice_t){(const char *)b + off, m->len - off};
    return HR_OK;
}

hr_msg_t *hr_msg_new_with_payload(const hr_msg_t *body, hr_slice_t payload)
{
    hr_slice_t topic, old, opts;
    uint64_t seq;
    if (hr_msg_delivery_parts(body, &topic, &seq, &old, &opts) != HR_OK)
        return NULL;
    size_t head = (size_t)((const uint8_t *)old.p - hr_msg_bytes(body)) - (sz_bin(old.n) - old.n);
    size_t len = head + sz_bin(payload.n) + opts.n;
    hr_msg_t *m = hr_msg_new(0, NULL, len);
    if (!m)
        return NULL;
    m->arr = body->arr;
    fixed_t w = {m->data, len};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, fixed_write);
    fixed_write(&w, (const char *)hr_msg_bytes(body), head); /* topic, seq */
    msgpack_pack_bin(&pk, payload.n);
    msgpack_pack_bin_body(&pk, payload.p, payload.n);
    fixed_write(&w, opts.p, opts.n);
    assert(w.left == 0);
    return m;
}

static size_t put_uint(uint8_t *out, uint64_t v)
{
    if (v < 128) {
        out[0] = (uint8_t)v;
        return 1;
    }
    int n = v < 256 ? 1 : v < 65536 ? 2 : v <= UINT32_MAX ? 4 : 8;
    out[0] = (uint8_t)(n == 1 ? 0xcc : n == 2 ? 0xcd : n == 4 ? 0xce : 0xcf);
    for (int i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return 1 + (size_t)n;
}

static size_t put_frame_header(uint8_t *out, int framing, uint64_t body_len)
{
    if (framing == HR_FRAMING_WS)
        return hr_ws_frame_header(out, 2, body_len);
    hr_lp_put(out, (uint32_t)body_len);
    return HR_LP_PREFIX;
}

size_t hr_msg_delivery_header(const hr_msg_t *m, uint64_t sid, int framing, uint8_t *out)
{
    /* Hot: once per delivery. Written straight into `out`, no temporary. */
    size_t sl = sid < 128 ? 1 : sid < 256 ? 2 : sid < 65536 ? 3 : sid <= UINT32_MAX ? 5 : 9;
    size_t h = put_frame_header(out, framing, 2 + sl + m->len);
    out[h] = m->arr;
    out[h + 1] = HR_OP_MSG;
    put_uint(out + h + 2, sid);
    return h + 2 + sl;
}

int hr_msg_frame(hr_msg_t *m, int framing)
{
    uint8_t hdr[HR_WS_HDR_MAX];
    size_t h = put_frame_header(hdr, framing, m->len);
    if (h > m->off)
        return HR_EINVAL;
    m->off -= (uint32_t)h;
    m->len += (uint32_t)h;
    memcpy(m->data + m->off, hdr, h);
    return HR_OK;
}
