/* SPDX-License-Identifier: MIT */
/* The TCP transport: 4-byte big-endian length prefix, then the frame body. */
#include <string.h>

#include "server.h"

#define DIRECT_READ_MIN (16 * 1024)  /* read straight into a partial frame this large */
#define DIRECT_READ_STEP (64 * 1024) /* the least a direct read makes room for */
#define FIRST_FRAME_MAX (64 * 1024)  /* the first frame (HELLO) may declare at most this */

static size_t lp_total(const hr_conn_t *c)
{
    const uint8_t *p = c->in.base;
    return HR_LP_PREFIX + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
}

/*
 * A large frame already started: the rest is read straight into its own
 * buffer instead of the loop-wide one, so a 1 MiB payload is copied a few
 * times at most rather than once per 64 KiB read. The buffer grows with
 * what has arrived (room for as much again, 64 KiB at least), never to the
 * declared size at once: a prefix alone must not make the broker reserve
 * the megabytes it declares.
 */
static int tcp_read_buf(hr_conn_t *c, uv_buf_t *buf)
{
    if (c->in.len < HR_LP_PREFIX || (c->flags & HR_C_SHUT))
        return 0;
    size_t need = lp_total(c) - c->in.len;
    if (need < DIRECT_READ_MIN)
        return 0;
    size_t room = c->in.len > DIRECT_READ_STEP ? c->in.len : DIRECT_READ_STEP;
    if (room > need)
        room = need;
    if (hr_buf_reserve(&c->in, room) != HR_OK)
        return 0;
    size_t len = c->in.cap - c->in.len < need ? c->in.cap - c->in.len : need;
    *buf = uv_buf_init((char *)c->in.base + c->in.len, (unsigned)len);
    return 1;
}

/* `n` bytes landed in the partial frame's buffer: dispatch it once complete. */
static void tcp_read_done(hr_conn_t *c, size_t n)
{
    c->in.len += n;
    if (c->in.len < HR_LP_PREFIX)
        return;
    size_t total = lp_total(c);
    if (total - HR_LP_PREFIX > c->srv->max_frame) {
        hr__conn_fail(c, HR_ETOOBIG, "frame larger than max_frame");
        return;
    }
    if (c->in.len < total)
        return;
    hr__dispatch_frame(c, (const char *)c->in.base + HR_LP_PREFIX, total - HR_LP_PREFIX);
    hr_buf_destroy(&c->in); /* an idle connection holds no input buffer */
}

static int lp_frame(void *arg, const char *body, size_t n)
{
    hr_conn_t *c = arg;
    hr__dispatch_frame(c, body, n);
    return (c->flags & (HR_C_CLOSING | HR_C_FAILING)) != 0;
}

/* True when `p` (4 bytes) starts an HTTP request rather than a length prefix. */
static int looks_like_http(const uint8_t p[4])
{
    static const char *const methods[] = {"GET ", "POST", "HEAD", "PUT ", "OPTI",
                                          "DELE", "PATC", "CONN", "TRAC", "PRI "};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (!memcmp(p, methods[i], 4))
            return 1;
    return 0;
}

/*
 * Someone pointed an HTTP client (or a browser's WebSocket) at the TCP
 * port: its first bytes would declare a frame of a gigabyte or more. It
 * gets a short plain-text answer it can show, naming the right port.
 */
static void http_on_tcp(hr_conn_t *c)
{
    char body[192], resp[384];
    int port = hr__server_port(c->srv, HR_T_WS);
    int bn = port ? snprintf(body, sizeof(body),
                             "this is Herald's TCP port; WebSocket and HTTP are on port %d\n", port)
                  : snprintf(body, sizeof(body),
                             "this is Herald's TCP port (length-prefixed frames); this broker "
                             "serves no WebSocket or HTTP port\n");
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     bn, body);
    if (n > 0 && (size_t)n < sizeof(resp))
        hr__conn_send_raw(c, resp, (size_t)n);
    hr__conn_fail(c, HR_OK, "an HTTP request on the TCP port");
}

/*
 * Checks the prefix of a connection's first frame as soon as its 4 bytes
 * are in. That frame must be HELLO, which is small (a token is at most
 * 8 KiB), so before HELLO a connection may declare at most 64 KiB: an
 * unauthenticated peer cannot make the broker wait for, or hold, a frame
 * of max_frame bytes. Returns 1 when the connection was failed.
 */
static int first_prefix(hr_conn_t *c, const char *p, size_t n)
{
    uint8_t pre[HR_LP_PREFIX];
    size_t have = c->in.len;
    if ((c->flags & (HR_C_HELLO | HR_C_CLOSING)) || have >= HR_LP_PREFIX || have + n < HR_LP_PREFIX)
        return 0;
    if (have)
        memcpy(pre, c->in.base, have);
    memcpy(pre + have, p, HR_LP_PREFIX - have);
    size_t len = (size_t)pre[0] << 24 | (size_t)pre[1] << 16 | (size_t)pre[2] << 8 | pre[3];
    size_t max = c->srv->max_frame < FIRST_FRAME_MAX ? c->srv->max_frame : FIRST_FRAME_MAX;
    if (len <= max)
        return 0;
    if (len > c->srv->max_frame && looks_like_http(pre))
        http_on_tcp(c);
    else
        hr__conn_fail(c, HR_ETOOBIG,
                      "frame before HELLO larger than 64 KiB: the first frame must be HELLO");
    return 1;
}

void hr__tcp_data(hr_conn_t *c, const char *p, size_t n)
{
    if (first_prefix(c, p, n))
        return;
    int r = hr_lp_feed(&c->in, p, n, c->srv->max_frame, lp_frame, c);
    if (r == HR_ETOOBIG)
        hr__conn_fail(c, HR_ETOOBIG, "frame larger than max_frame");
    else if (r == HR_ENOMEM)
        hr__conn_close_now(c);
}

const hr_transport_t hr__tcp_transport = {
    .name = "tcp",
    .kind = HR_T_TCP,
    .framing = HR_FRAMING_LP,
    .ready_at_accept = 1,
    .on_data = hr__tcp_data,
    .read_buf = tcp_read_buf,
    .read_done = tcp_read_done,
};
