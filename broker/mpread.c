/* SPDX-License-Identifier: MIT */
/* A bounds-checked msgpack reader for untrusted bytes: one value at a time, no allocation. */
#include <string.h>

#include "mpread.h"

void hr__mp_init(hr_mp_t *r, const void *p, size_t n)
{
    /* NULL + 0 is undefined behaviour; an empty input gets a static empty range. */
    r->p = p ? (const uint8_t *)p : (const uint8_t *)"";
    r->end = r->p + (p ? n : 0);
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Sign-extends the `n`-byte big-endian two's complement integer at `p`. */
static int64_t be_signed(const uint8_t *p, size_t n)
{
    uint64_t v = be(p, n);
    if (n < 8 && (v >> (8 * n - 1)))
        v |= ~(uint64_t)0 << (8 * n);
    return (int64_t)v;
}

static void set_int(hr_mp_val_t *v, int64_t i)
{
    if (i < 0) {
        v->kind = HR_MP_NEG;
        v->i = i;
    } else {
        v->kind = HR_MP_POS;
        v->u = (uint64_t)i;
    }
}

static double be_double(const uint8_t *p, size_t n)
{
    uint64_t bits = be(p, n);
    if (n == 4) {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, sizeof(f));
        return f;
    }
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

/*
 * The header of type byte `t` is `hlen` bytes long (type byte included) and,
 * for str/bin/ext, its length field is the `lenlen` bytes after the type
 * byte (ext adds the type byte to its body). Everything is checked against
 * the bytes left before the cursor moves.
 */
int hr__mp_read(hr_mp_t *r, hr_mp_val_t *v)
{
    size_t left = (size_t)(r->end - r->p);
    if (left == 0)
        return 0;
    const uint8_t *p = r->p;
    uint8_t t = p[0];
    size_t hlen = 1, body = 0, lenlen = 0;
    uint64_t count = 0;
    int container = 0;

    memset(v, 0, sizeof(*v));
    if (t <= 0x7f) {
        set_int(v, t);
    } else if (t >= 0xe0) {
        set_int(v, (int8_t)t);
    } else if (t <= 0x9f) { /* fixmap 0x80-0x8f, fixarray 0x90-0x9f */
        v->kind = t <= 0x8f ? HR_MP_MAP : HR_MP_ARRAY;
        count = t & 0x0f;
        container = 1;
    } else if (t <= 0xbf) {
        v->kind = HR_MP_STR;
        body = t & 0x1f;
    } else {
        switch (t) {
        case 0xc0:
            v->kind = HR_MP_NIL;
            break;
        case 0xc2:
        case 0xc3:
            v->kind = HR_MP_BOOL;
            v->b = t == 0xc3;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            v->kind = HR_MP_BIN;
            lenlen = (size_t)1 << (t - 0xc4);
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
            v->kind = HR_MP_EXT;
            lenlen = (size_t)1 << (t - 0xc7);
            break;
        case 0xca:
        case 0xcb:
            hlen = t == 0xca ? 5 : 9;
            if (left < hlen)
                return 0;
            v->kind = HR_MP_FLOAT;
            v->f = be_double(p + 1, hlen - 1);
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            hlen = 1 + ((size_t)1 << (t - 0xcc));
            if (left < hlen)
                return 0;
            v->kind = HR_MP_POS;
            v->u = be(p + 1, hlen - 1);
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3:
            hlen = 1 + ((size_t)1 << (t - 0xd0));
            if (left < hlen)
                return 0;
            set_int(v, be_signed(p + 1, hlen - 1));
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            v->kind = HR_MP_EXT; /* fixext: type byte + 1, 2, 4, 8 or 16 bytes */
            body = 1 + ((size_t)1 << (t - 0xd4));
            break;
        case 0xd9:
        case 0xda:
        case 0xdb:
            v->kind = HR_MP_STR;
            lenlen = (size_t)1 << (t - 0xd9);
            break;
        case 0xdc:
        case 0xdd:
        case 0xde:
        case 0xdf:
            v->kind = t <= 0xdd ? HR_MP_ARRAY : HR_MP_MAP;
            hlen = 1 + ((t & 1) ? 4 : 2);
            if (left < hlen)
                return 0;
            count = be(p + 1, hlen - 1);
            container = 1;
            break;
        default:
            return 0; /* 0xc1 is never used */
        }
    }
    if (lenlen) {
        hlen = 1 + lenlen;
        if (left < hlen)
            return 0;
        body = (size_t)be(p + 1, lenlen) + (v->kind == HR_MP_EXT);
    }
    if (container) {
        /* Every element takes at least one byte. */
        if (count * (v->kind == HR_MP_MAP ? 2 : 1) > left - hlen)
            return 0;
        v->n = (uint32_t)count;
    } else if (v->kind == HR_MP_STR || v->kind == HR_MP_BIN || v->kind == HR_MP_EXT) {
        if (body > left - hlen)
            return 0;
        v->s.p = (const char *)p + hlen;
        v->s.n = body;
    }
    r->p = p + hlen + (container ? 0 : body);
    return 1;
}

/*
 * Skips with a count of values still to skip instead of recursion, so a
 * hostile payload nested a million levels deep costs a counter. The count
 * never exceeds the bytes left (hr__mp_read() checks each container's count
 * against them), so it cannot overflow.
 */
int hr__mp_skip(hr_mp_t *r)
{
    uint64_t left = 1;
    hr_mp_val_t v;
    while (left) {
        if (!hr__mp_read(r, &v))
            return 0;
        left--;
        if (v.kind == HR_MP_ARRAY)
            left += v.n;
        else if (v.kind == HR_MP_MAP)
            left += 2 * (uint64_t)v.n;
    }
    return 1;
}

int hr__mp_check(const void *p, size_t n)
{
    hr_mp_t r;
    hr__mp_init(&r, p, n);
    return hr__mp_skip(&r) && r.p == r.end;
}

int hr__mp_key_is(const hr_mp_val_t *k, const char *s, size_t n)
{
    return k->kind == HR_MP_STR && k->s.n == n && memcmp(k->s.p, s, n) == 0;
}

int hr__mp_map_find(hr_mp_t *r, uint32_t pairs, const char *key, size_t n)
{
    hr_mp_val_t k;
    for (uint32_t i = 0; i < pairs; i++) {
        hr_mp_t at = *r;
        if (!hr__mp_read(r, &k))
            return 0;
        if (hr__mp_key_is(&k, key, n))
            return 1;
        *r = at; /* any other key, containers included, is skipped whole */
        if (!hr__mp_skip(r) || !hr__mp_skip(r))
            return 0;
    }
    return 0;
}

int hr__mp_path(hr_mp_t r, hr_slice_t path, hr_slice_t *out)
{
    const char *seg = path.p, *end = path.p + path.n;
    hr_mp_val_t v;
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        size_t len = dot ? (size_t)(dot - seg) : (size_t)(end - seg);
        if (!hr__mp_read(&r, &v) || v.kind != HR_MP_MAP || !hr__mp_map_find(&r, v.n, seg, len))
            return 0;
        if (!dot)
            break;
        seg = dot + 1;
    }
    const uint8_t *start = r.p;
    if (!hr__mp_skip(&r))
        return 0;
    out->p = (const char *)start;
    out->n = (size_t)(r.p - start);
    return 1;
}

static size_t put_be(uint8_t *out, uint8_t t, uint64_t v, size_t n)
{
    out[0] = t;
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return 1 + n;
}

size_t hr__mp_put_str(uint8_t *out, size_t n)
{
    if (n < 32)
        return put_be(out, (uint8_t)(0xa0 | n), 0, 0);
    if (n < 256)
        return put_be(out, 0xd9, n, 1);
    if (n < 65536)
        return put_be(out, 0xda, n, 2);
    return put_be(out, 0xdb, n, 4);
}

/* Maps and arrays differ only in their type bytes. */
static size_t put_container(uint8_t *out, uint32_t n, uint8_t fix, uint8_t x16)
{
    if (n < 16)
        return put_be(out, (uint8_t)(fix | n), 0, 0);
    if (n < 65536)
        return put_be(out, x16, n, 2);
    return put_be(out, (uint8_t)(x16 + 1), n, 4);
}

size_t hr__mp_put_map(uint8_t *out, uint32_t n)
{
    return put_container(out, n, 0x80, 0xde);
}

size_t hr__mp_put_array(uint8_t *out, uint32_t n)
{
    return put_container(out, n, 0x90, 0xdc);
}

size_t hr__mp_put_uint(uint8_t *out, uint64_t v)
{
    if (v < 128)
        return put_be(out, (uint8_t)v, 0, 0);
    if (v < 256)
        return put_be(out, 0xcc, v, 1);
    if (v < 65536)
        return put_be(out, 0xcd, v, 2);
    if (v <= UINT32_MAX)
        return put_be(out, 0xce, v, 4);
    return put_be(out, 0xcf, v, 8);
}

size_t hr__mp_put_bin(uint8_t *out, size_t n)
{
    if (n < 256)
        return put_be(out, 0xc4, n, 1);
    if (n < 65536)
        return put_be(out, 0xc5, n, 2);
    return put_be(out, 0xc6, n, 4);
}
