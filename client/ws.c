/* SPDX-License-Identifier: MIT */
/* libherald's WebSocket client layer (RFC 6455): upgrade handshake, masked frames, parsing. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client_int.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- SHA-1 (FIPS 180-1), only for Sec-WebSocket-Accept ------------------ */

typedef struct sha1_s {
    uint32_t h[5];
    uint64_t len;
    uint8_t block[64];
    size_t n;
} sha1_t;

static uint32_t rol(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

static void sha1_block(sha1_t *s, const uint8_t *p)
{
    uint32_t w[80], a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
}

static void sha1_update(sha1_t *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    while (n--) {
        s->block[s->n++] = *p++;
        if (s->n == 64) {
            sha1_block(s, s->block);
            s->n = 0;
        }
    }
}

static void sha1(const void *data, size_t n, uint8_t out[20])
{
    sha1_t s = {{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}, 0, {0}, 0};
    uint64_t bits = (uint64_t)n * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];
    sha1_update(&s, data, n);
    sha1_update(&s, &pad, 1);
    while (s.n != 56)
        sha1_update(&s, &zero, 1);
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(&s, lenb, 8);
    for (int i = 0; i < 20; i++)
        out[i] = (uint8_t)(s.h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const uint8_t *p, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = t[v >> 18];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = t[(v >> 6) & 63];
        out[o++] = t[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = t[v >> 18];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* ---- handshake ---------------------------------------------------------- */

void hr__ws_accept(const char *key, char accept[29])
{
    char cat[128];
    uint8_t digest[20];
    snprintf(cat, sizeof(cat), "%.60s%s", key, WS_GUID);
    sha1(cat, strlen(cat), digest);
    base64(digest, 20, accept);
}

int hr__ws_request(hr_buf_t *out, const char *host, int port, const char *path,
                   const uint8_t nonce[16], char accept[29])
{
    char key[25], buf[1024];
    base64(nonce, 16, key);
    hr__ws_accept(key, accept);
    int ipv6 = strchr(host, ':') != NULL;
    int n = snprintf(buf, sizeof(buf),
                     "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                     path, ipv6 ? "[" : "", host, ipv6 ? "]" : "", port, key, HR_WS_SUBPROTOCOL);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return HR_EINVAL;
    return hr_buf_append(out, buf, (size_t)n);
}

/* Finds header `name` in the response head; copies its trimmed value. */
static int header(const char *head, const char *name, char *val, size_t vn)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        const char *p = l + 2;
        if (strncasecmp(p, name, nl) != 0 || p[nl] != ':')
            continue;
        p += nl + 1;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *e = strstr(p, "\r\n");
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        size_t n = (size_t)(e - p);
        if (n >= vn)
            return 0;
        memcpy(val, p, n);
        val[n] = '\0';
        return 1;
    }
    return 0;
}

int hr__ws_response(const uint8_t *p, size_t n, const char *accept, size_t *used)
{
    char head[4096], val[128];
    const char *end = NULL;
    for (size_t i = 0; i + 3 < n; i++)
        if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
            end = (const char *)p + i + 4;
            break;
        }
    if (n >= 5 && memcmp(p, "HTTP/", 5) != 0)
        return HR_EPROTO; /* not an HTTP server (a Herald TCP port, say) */
    if (!end)
        return n >= sizeof(head) ? HR_EPROTO : HR_EAGAIN;
    size_t hn = (size_t)(end - (const char *)p);
    if (hn >= sizeof(head))
        return HR_EPROTO;
    memcpy(head, p, hn);
    head[hn] = '\0';
    *used = hn;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        /* The TCP port answers an HTTP request with a 400 that names itself. */
        if (memmem(p, n, "Herald's TCP port", 17))
            return HR_ETCPPORT;
        return HR_EPROTO;
    }
    if (!header(head, "Upgrade", val, sizeof(val)) || strcasecmp(val, "websocket") != 0)
        return HR_EPROTO;
    if (!header(head, "Sec-WebSocket-Accept", val, sizeof(val)) || strcmp(val, accept) != 0)
        return HR_EPROTO;
    if (header(head, "Sec-WebSocket-Protocol", val, sizeof(val)) &&
        strcmp(val, HR_WS_SUBPROTOCOL) != 0)
        return HR_EPROTO;
    return HR_OK;
}

/* ---- frames ------------------------------------------------------------- */

int hr__ws_encode(hr_buf_t *out, int opcode, const void *data, size_t n, uint32_t mask)
{
    uint8_t h[HR_WS_HDR_MAX_MASKED],
        m[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8), (uint8_t)mask};
    size_t hl = hr_ws_header_build(h, 1, opcode, n, m);
    if (hr_buf_reserve(out, hl + n) != HR_OK)
        return HR_ENOMEM;
    hr_buf_append(out, h, hl); /* room was reserved: cannot fail */
    hr_buf_append(out, data, n);
    hr_ws_mask(out->base + out->len - n, n, m, 0);
    return HR_OK;
}

int hr__ws_frame_next(uint8_t *p, size_t n, uint64_t max, hr__ws_frame_t *f, size_t *used)
{
    hr_ws_header_t h;
    int r = hr_ws_header_parse(p, n, max, &h);
    if (r != HR_OK)
        return r;
    if (h.rsv)
        return HR_EPROTO; /* no extension was negotiated */
    if (h.opcode >= 8 && (h.len > 125 || !h.fin))
        return HR_EPROTO;
    if (n - h.hdr_len < h.len)
        return HR_EAGAIN;
    f->fin = h.fin;
    f->opcode = h.opcode;
    f->data = p + h.hdr_len;
    f->len = (size_t)h.len;
    if (h.masked) /* servers do not mask, but undo it if one does */
        hr_ws_mask(f->data, f->len, h.mask, 0);
    *used = h.hdr_len + f->len;
    return HR_OK;
}
