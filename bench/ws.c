/* SPDX-License-Identifier: MIT */
/* herald-bench: the client side of WebSocket (RFC 6455) for adapters that support it. */
#include "hb.h"

#include <string.h>
#include <strings.h>

#include "herald/protocol.h"

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
    uint8_t *w = hb_buf_space(out, n + HR_WS_HDR_MAX_MASKED);
    uint32_t x = c->mask;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->mask = x;
    uint8_t key[4] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
    size_t hl = hr_ws_header_build(w, 1, opcode, n, key);
    if (n)
        memcpy(w + hl, p, n);
    hr_ws_mask(w + hl, n, key, 0);
    out->len += hl + n;
}

long hb_ws_parse(const uint8_t *p, size_t n, int *op, const uint8_t **body, size_t *bn)
{
    hr_ws_header_t h;
    int r = hr_ws_header_parse(p, n, UINT64_MAX, &h);
    if (r == HR_EAGAIN)
        return 0;
    if (r != HR_OK || h.masked)
        return -1; /* servers never mask */
    *op = h.opcode;
    if (!h.fin || h.opcode == 0)
        return -1; /* herald.v1 sends one frame per message; fragments are not expected */
    if (h.len > n - h.hdr_len)
        return 0;
    *body = p + h.hdr_len;
    *bn = (size_t)h.len;
    return (long)(h.hdr_len + h.len);
}
