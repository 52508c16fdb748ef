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

static int tcp_next(hr_client_t *c, hr__conn_t *conn, uint8_t *p, size_t n, hr_slice_t *body,
                    size_t *used)
{
    if (!c->welcomed) {
        int r = http_answer(p, n);
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
    "tcp", HR_DEFAULT_PORT, 0, tcp_start, tcp_next, tcp_frame_out,
};

/* ---- WebSocket ---------------------------------------------------------- */

/* Writes a control frame or the handshake on its own request, beside the data writes. */
typedef struct raw_write_s {
    uv_write_t req;
    hr_buf_t buf;
} raw_write_t;

static void raw_written(uv_write_t *req, int status)
{
    raw_write_t *w = req->data;
    hr_buf_destroy(&w->buf);
    free(w);
}

/* Writes and frees `w`, which holds what `fill` appended (HR_OK) or nothing (its error). */
static int write_raw(hr__conn_t *conn, raw_write_t *w, int fill)
{
    if (fill != HR_OK) {
        hr_buf_destroy(&w->buf);
        free(w);
        return fill;
    }
    uv_buf_t b = uv_buf_init((char *)w->buf.base, (unsigned)w->buf.len);
    w->req.data = w;
    int r = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, raw_written);
    if (r < 0) {
        hr_buf_destroy(&w->buf);
        free(w);
    }
    return r;
}

static raw_write_t *raw_new(void)
{
    raw_write_t *w = calloc(1, sizeof(*w));
    if (w)
        hr_buf_init(&w->buf);
    return w;
}

/* Sends the upgrade request; HELLO follows once the server accepted it (ws_next). */
static int ws_start(hr_client_t *c, hr__conn_t *conn)
{
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t x = hr__rand(c);
        memcpy(nonce + i, &x, 8);
    }
    raw_write_t *w = raw_new();
    if (!w)
        return HR_ENOMEM;
    return write_raw(conn, w,
                     hr__ws_request(&w->buf, c->host, c->port, c->path, nonce, conn->ws_accept));
}

static void ws_pong(hr_client_t *c, hr__conn_t *conn, const void *p, size_t n)
{
    raw_write_t *w = raw_new();
    if (w)
        write_raw(conn, w, hr__ws_encode(&w->buf, 0xA, p, n, (uint32_t)hr__rand(c)));
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
        int r = hr__ws_response(p, n, conn->ws_accept, used);
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
    "ws", HR_DEFAULT_WS_PORT, 1, ws_start, ws_next, ws_frame_out,
};
