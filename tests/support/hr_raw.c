/* SPDX-License-Identifier: MIT */
/* Raw-socket helpers for integration tests. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hr_raw.h"

int hr_raw_connect(hr_raw_t *r, int port)
{
    struct sockaddr_in a;
    int one = 1;
    memset(r, 0, sizeof(*r));
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (r->fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(r->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

void hr_raw_close(hr_raw_t *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    hr_buf_destroy(&r->in);
    hr_buf_destroy(&r->body);
}

int hr_raw_send(hr_raw_t *r, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(r->fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int hr_raw_send_body(hr_raw_t *r, hr_buf_t *b)
{
    uint8_t pre[4] = {(uint8_t)(b->len >> 24), (uint8_t)(b->len >> 16), (uint8_t)(b->len >> 8),
                      (uint8_t)b->len};
    int rc = hr_raw_send(r, pre, 4) == 0 && hr_raw_send(r, b->base, b->len) == 0 ? 0 : -1;
    hr_buf_reset(b);
    return rc;
}

int hr_raw_hello(hr_raw_t *r, int echo)
{
    hr_buf_t b;
    hr_buf_init(&b);
    hr_enc_hello(&b, "test", NULL, echo);
    int rc = hr_raw_send_body(r, &b);
    hr_buf_destroy(&b);
    if (rc != 0 || hr_raw_next(r, 5000) != 0 || r->f.op != HR_OP_WELCOME)
        return -1;
    return 0;
}

static int fill(hr_raw_t *r, int timeout_ms)
{
    struct pollfd p = {r->fd, POLLIN, 0};
    char tmp[65536];
    int n = poll(&p, 1, timeout_ms);
    if (n <= 0)
        return -1;
    ssize_t got = recv(r->fd, tmp, sizeof(tmp), 0);
    if (got <= 0)
        return -1;
    return hr_buf_append(&r->in, tmp, (size_t)got);
}

int hr_raw_next(hr_raw_t *r, int timeout_ms)
{
    for (;;) {
        hr_slice_t body;
        size_t used;
        int st = hr_lp_next(r->in.base, r->in.len, (size_t)1 << 30, &body, &used);
        if (st == HR_OK) {
            hr_buf_reset(&r->body);
            hr_buf_append(&r->body, body.p, body.n);
            hr_buf_consume(&r->in, used);
            return hr_frame_decode(r->body.base, r->body.len, 0, &r->f, NULL) == HR_OK ? 0 : -1;
        }
        if (fill(r, timeout_ms) != 0)
            return -1;
    }
}

int hr_raw_next_nonping(hr_raw_t *r, int timeout_ms)
{
    for (;;) {
        if (hr_raw_next(r, timeout_ms) != 0)
            return -1;
        if (r->f.op != HR_OP_PING)
            return 0;
    }
}

int hr_raw_eof(hr_raw_t *r, int timeout_ms)
{
    char tmp[65536];
    for (;;) {
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0)
            return 0;
        ssize_t got = recv(r->fd, tmp, sizeof(tmp), 0);
        if (got <= 0)
            return 1;
    }
}

int hr_raw_sync(hr_raw_t *r, uint64_t id)
{
    hr_buf_t b;
    hr_buf_init(&b);
    hr_enc_ping(&b, id);
    int rc = hr_raw_send_body(r, &b);
    hr_buf_destroy(&b);
    if (rc)
        return -1;
    while (hr_raw_next(r, 5000) == 0)
        if (r->f.op == HR_OP_PONG && r->f.id == id)
            return 0;
    return -1;
}
