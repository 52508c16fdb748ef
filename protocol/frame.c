/* SPDX-License-Identifier: MIT */
/* Framing: the TCP length prefix and RFC 6455 frame headers. Pure code: bytes in, bytes out. */
#include <string.h>

#include "herald/protocol.h"

/* ---- TCP: 4-byte big-endian length prefix -------------------------------- */

void hr_lp_put(uint8_t out[HR_LP_PREFIX], uint32_t n)
{
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
}

uint32_t hr_lp_get(const uint8_t p[HR_LP_PREFIX])
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int hr_lp_next(const void *buf, size_t len, size_t max_frame, hr_slice_t *body, size_t *consumed)
{
    const uint8_t *p = buf;
    if (len < HR_LP_PREFIX) {
        *consumed = 0;
        return HR_EAGAIN;
    }
    uint32_t n = hr_lp_get(p);
    if (n > max_frame) {
        *consumed = 0;
        return HR_ETOOBIG;
    }
    *consumed = HR_LP_PREFIX + (size_t)n;
    if (len < *consumed)
        return HR_EAGAIN;
    body->p = (const char *)p + HR_LP_PREFIX;
    body->n = (size_t)n;
    return HR_OK;
}

/* ---- WebSocket (RFC 6455 section 5.2) ------------------------------------- */

/*
 * The header is 2 bytes, then 0, 2 or 8 bytes of extended length (7-bit
 * values 126 and 127 announce them), then the 4-byte mask key if the MASK
 * bit is set. The length is judged as soon as it is known, before the mask
 * key arrives, so an oversized frame is refused from its first bytes.
 * Non-minimal length encodings are accepted.
 */
int hr_ws_header_parse(const void *buf, size_t n, uint64_t max, hr_ws_header_t *h)
{
    const uint8_t *p = buf;
    if (n < 2)
        return HR_EAGAIN;
    h->fin = (p[0] & 0x80) != 0;
    h->rsv = (p[0] >> 4) & 0x07;
    h->opcode = p[0] & 0x0f;
    h->masked = (p[1] & 0x80) != 0;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (n < 4)
            return HR_EAGAIN;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return HR_EAGAIN;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        if (len >> 63)
            return HR_EPROTO; /* the most significant bit must be 0 */
        hl = 10;
    }
    if (len > max)
        return HR_ETOOBIG;
    if (h->masked) {
        if (n < hl + 4)
            return HR_EAGAIN;
        memcpy(h->mask, p + hl, 4);
        hl += 4;
    } else {
        memset(h->mask, 0, 4);
    }
    h->len = len;
    h->hdr_len = hl;
    return HR_OK;
}

size_t hr_ws_header_build(uint8_t *out, int fin, int opcode, uint64_t len, const uint8_t *mask)
{
    size_t hl = 2;
    uint8_t m = mask ? 0x80 : 0;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)(m | len);
    } else if (len <= 0xffff) {
        out[1] = m | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        hl = 4;
    } else {
        out[1] = m | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        memcpy(out + hl, mask, 4);
        hl += 4;
    }
    return hl;
}

size_t hr_ws_frame_header(uint8_t *out, int opcode, uint64_t payload_len)
{
    return hr_ws_header_build(out, 1, opcode, payload_len, NULL);
}

void hr_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(off + i) & 3];
}
