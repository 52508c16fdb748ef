/* SPDX-License-Identifier: MIT */
/* herald-bench: the client side of WebSocket (RFC 6455) for adapters that support it. */
#include "hb.h"

#include <string.h>
#include <strings.h>

/*
 * herald-bench always offers the RFC 6455 sample key; the server must answer
 * with its well-known accept value, which spares us SHA-1 and base64 here.
 */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

void hb_ws_upgrade(hb_conn_t *c, const char *subprotocol)
{
    hb_buf_t *b = &c->out;
    hb_buf_str(b, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                  "Sec-WebSocket-Version: 13\r\n");
    if (subprotocol) {
        hb_buf_str(b, "Sec-WebSocket-Protocol: ");
        hb_buf_str(b, subprotocol);
        hb_buf_str(b, "\r\n");
    }
    hb_buf_str(b, "\r\n");
    c->state = HB_C_UPGRADING;
}

static const uint8_t *find(const uint8_t *p, size_t n, const char *s)
{
    size_t sl = strlen(s);
    for (size_t i = 0; i + sl <= n; i++)
        if (!strncasecmp((const char *)p + i, s, sl))
            return p + i;
    return NULL;
}

long hb_ws_parse_upgrade(hb_conn_t *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = find(p, n, "\r\n\r\n");
    if (!end) {
        if (n > 8192) {
            hb_on_error(c, "websocket: upgrade response too long");
            return -1;
        }
        return 0;
    }
    size_t hl = (size_t)(end - p) + 4;
    if (hl < 12 || memcmp(p, "HTTP/1.1 101", 12)) {
        const uint8_t *eol = find(p, hl, "\r\n");
        hb_on_error(c, "websocket: upgrade refused: %.*s", (int)(eol - p), (const char *)p);
        return -1;
    }
    if (!find(p, hl, WS_ACCEPT)) {
        hb_on_error(c, "websocket: wrong Sec-WebSocket-Accept");
        return -1;
    }
    hb_on_upgraded(c);
    return (long)hl;
}

void hb_ws_frame(hb_conn_t *c, hb_buf_t *out, int opcode, const void *p, size_t n)
{
    uint8_t *w = hb_buf_space(out, n + 14);
    uint8_t *s = w;
    *w++ = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        *w++ = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        *w++ = 0x80 | 126;
        *w++ = (uint8_t)(n >> 8);
        *w++ = (uint8_t)n;
    } else {
        *w++ = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            *w++ = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t x = c->mask;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->mask = x;
    uint8_t key[4] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
    memcpy(w, key, 4);
    w += 4;
    const uint8_t *src = p;
    for (size_t i = 0; i < n; i++)
        w[i] = src[i] ^ key[i & 3];
    w += n;
    out->len += (size_t)(w - s);
}

long hb_ws_parse(const uint8_t *p, size_t n, int *op, const uint8_t **body, size_t *bn)
{
    if (n < 2)
        return 0;
    int fin = p[0] & 0x80;
    *op = p[0] & 0x0f;
    if (p[1] & 0x80)
        return -1; /* servers never mask */
    uint64_t len = p[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        h = 10;
    }
    if (!fin || *op == 0)
        return -1; /* herald.v1 sends one frame per message; fragments are not expected */
    if (len > n - h)
        return 0;
    *body = p + h;
    *bn = (size_t)len;
    return (long)(h + len);
}
