/* SPDX-License-Identifier: MIT */
/* libherald transports: TCP (length-prefixed frames) and WebSocket, behind one interface. */
#include <stdlib.h>
#include <string.h>

#include "async.h"

/* ---- TCP ---------------------------------------------------------------- */

static int tcp_start(hr_client_t *c, hr__conn_t *conn)
{
    return hr__send_hello(c);
}

/*
 * A TCP client dialled to the WebSocket/HTTP port gets an HTTP response
 * (the broker answers a request line that is not one with 400 at once)
 * where a WELCOME frame should be: its "HTTP" would otherwise read as a
 * huge length prefix. Returns HR_EHTTPPORT for one, HR_EAGAIN while the
 * bytes could still become one, HR_OK otherwise.
 */
static int http_answer(const uint8_t *p, size_t n)
{
    static const char http[] = "HTTP/";
    size_t k = n < 5 ? n : 5;
    if (!n || memcmp(p, http, k) != 0)
        return HR_OK;
    return k == 5 ? HR_EHTTPPORT : HR_EAGAIN;
}

/*
 * A plaintext client dialled to a TLS port gets a TLS record back (an alert
 * about the bytes it took for a ClientHello), which starts with content
 * type 21 or 22 and version major 3. Same results as http_answer().
 */
static int tls_answer(const hr_client_t *c, const uint8_t *p, size_t n)
{
    if (c->tp->secure || !n || (p[0] != 0x15 && p[0] != 0x16))
        return HR_OK;
    return n < 2 ? HR_EAGAIN : p[1] == 0x03 ? HR_ETLSPORT : HR_OK;
}

/* Whether the `n` bytes at `p` contain the NUL-terminated `s`. */
static int contains(const uint8_t *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, s, k) == 0)
            return 1;
    return 0;
}

static int tcp_next(hr_client_t *c, hr__conn_t *conn, uint8_t *p, size_t n, hr_slice_t *body,
                    size_t *used)
{
    if (!c->welcomed) {
        int r = tls_answer(c, p, n);
        if (r == HR_OK)
            r = http_answer(p, n);
        if (r == HR_EHTTPPORT && !c->tp->secure && contains(p, n, HR__TLS_PORT_HINT))
            r = HR_ETLSPORT; /* the 400 of a WebSocket port that speaks TLS */
        if (r != HR_OK)
            return r;
    }
    return hr_lp_next(p, n, hr__max_frame(c), body, used);
}

/* Frames are queued length-prefixed: they go out as they are. */
static int tcp_frame_out(hr_client_t *c, hr__conn_t *conn)
{
    hr_buf_t tmp = conn->wbuf;
    conn->wbuf = c->out;
    c->out = tmp;
    return HR_OK;
}

const hr__transport_t hr__tcp_transport = {
    "tcp", HR_DEFAULT_PORT, 0, 0, tcp_start, tcp_next, tcp_frame_out,
};

/* The same framing inside TLS; the broker serves TLS on the same ports. */
const hr__transport_t hr__tls_transport = {
    "tls", HR_DEFAULT_PORT, 0, 1, tcp_start, tcp_next, tcp_frame_out,
};

/* ---- WebSocket ---------------------------------------------------------- */

/* Sends the upgrade request; HELLO follows once the server accepted it (ws_next). */
static int ws_start(hr_client_t *c, hr__conn_t *conn)
{
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t x = hr__rand(c);
        memcpy(nonce + i, &x, 8);
    }
    hr_buf_t b;
    hr_buf_init(&b);
    int r = hr__ws_request(&b, c->host, c->port, c->path, nonce, conn->ws_accept);
    if (r == HR_OK)
        r = hr__conn_write(c, conn, &b);
    hr_buf_destroy(&b);
    return r;
}

static void ws_pong(hr_client_t *c, hr__conn_t *conn, const void *p, size_t n)
{
    hr_buf_t b;
    hr_buf_init(&b);
    if (hr__ws_encode(&b, 0xA, p, n, (uint32_t)hr__rand(c)) == HR_OK)
        hr__conn_write(c, conn, &b);
    hr_buf_destroy(&b);
}

/*
 * One data frame (binary or continuation) of a possibly fragmented message;
 * a complete message becomes `*body`. A reassembled one lives in `frag`
 * until the next call.
 */
static int ws_data(hr_client_t *c, const hr__ws_frame_t *f, hr_slice_t *body)
{
    if ((f->opcode == 2) == c->in_frag) /* binary inside a message, or a stray continuation */
        return HR_EPROTO;
    if (f->fin && !c->in_frag) {
        body->p = (const char *)f->data;
        body->n = f->len;
        return HR_OK;
    }
    if (c->frag.len + f->len > hr__max_frame(c))
        return HR_ETOOBIG;
    if (hr_buf_append(&c->frag, f->data, f->len) != HR_OK)
        return HR_ENOMEM;
    c->in_frag = !f->fin;
    if (f->fin) {
        body->p = (const char *)c->frag.base;
        body->n = c->frag.len;
        c->frag_done = 1;
    }
    return HR_OK;
}

/* The upgrade response, then frames: data, close, ping, pong. */
static int ws_next(hr_client_t *c, hr__conn_t *conn, uint8_t *p, size_t n, hr_slice_t *body,
                   size_t *used)
{
    if (c->frag_done) {
        hr_buf_reset(&c->frag);
        c->frag_done = 0;
    }
    if (!conn->ws_open) {
        /* An HTTP response begins with "HTTP/"; a Herald TCP frame (the broker's
         * ERR for the request it took as a length prefix) with a zero byte. */
        if (n && p[0] == 0)
            return HR_ETCPPORT;
        int r = tls_answer(c, p, n);
        if (r != HR_OK)
            return r;
        r = hr__ws_response(p, n, conn->ws_accept, used);
        if ((r == HR_EPROTO || r == HR_ETCPPORT) && !c->tp->secure &&
            contains(p, n, HR__TLS_PORT_HINT))
            return HR_ETLSPORT; /* the broker's 400 from a TLS port */
        if (r == HR_OK)
            r = hr__send_hello(c);
        if (r == HR_OK)
            conn->ws_open = 1;
        return r;
    }
    hr__ws_frame_t f;
    int r = hr__ws_frame_next(p, n, hr__max_frame(c), &f, used);
    if (r != HR_OK)
        return r;
    switch (f.opcode) {
    case 0x0:
    case 0x2:
        return ws_data(c, &f, body);
    case 0x8: /* close: the ERR before it, if any, says why */
        return UV_EOF;
    case 0x9:
        ws_pong(c, conn, f.data, f.len);
        return HR_OK;
    case 0xA:
        return HR_OK;
    default: /* text or reserved */
        return HR_EPROTO;
    }
}

/* `out` holds length-prefixed bodies; each becomes one masked binary message. */
static int ws_frame_out(hr_client_t *c, hr__conn_t *conn)
{
    size_t off = 0;
    hr_buf_reset(&conn->wbuf);
    while (off < c->out.len) {
        hr_slice_t body;
        size_t used;
        hr_lp_next(c->out.base + off, c->out.len - off, SIZE_MAX, &body, &used);
        if (hr__ws_encode(&conn->wbuf, 2, body.p, body.n, (uint32_t)hr__rand(c)) != HR_OK)
            return HR_ENOMEM;
        off += used;
    }
    return HR_OK;
}

const hr__transport_t hr__ws_transport = {
    "ws", HR_DEFAULT_WS_PORT, 1, 0, ws_start, ws_next, ws_frame_out,
};

const hr__transport_t hr__wss_transport = {
    "wss", HR_DEFAULT_WS_PORT, 1, 1, ws_start, ws_next, ws_frame_out,
};
