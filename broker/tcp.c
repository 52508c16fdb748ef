/* SPDX-License-Identifier: MIT */
/* The TCP transport: 4-byte big-endian length prefix, then the frame body. */
#include "server.h"

#define DIRECT_READ_MIN (16 * 1024) /* read straight into a partial frame this large */

static size_t lp_total(const hr_conn_t *c)
{
    const uint8_t *p = c->in.base;
    return HR_LP_PREFIX + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
}

/*
 * A large frame already started: the rest is read straight into its own
 * buffer instead of the loop-wide one, so a 1 MiB payload is copied once
 * rather than once per 64 KiB read.
 */
static int tcp_read_buf(hr_conn_t *c, uv_buf_t *buf)
{
    if (c->in.len < HR_LP_PREFIX || (c->flags & HR_C_SHUT))
        return 0;
    size_t need = lp_total(c) - c->in.len;
    if (need < DIRECT_READ_MIN || hr_buf_reserve(&c->in, need) != HR_OK)
        return 0;
    *buf = uv_buf_init((char *)c->in.base + c->in.len, (unsigned)need);
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
    return (c->flags & HR_C_CLOSING) != 0;
}

void hr__tcp_data(hr_conn_t *c, const char *p, size_t n)
{
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
