/* SPDX-License-Identifier: MIT */
/* Review regressions against the real broker over loopback sockets. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hr_check.h"
#include "hr_fixture.h"
#include "hr_raw.h"

static hr_slice_t S(const char *s)
{
    hr_slice_t x = {s, strlen(s)};
    return x;
}

static void start(hr_fixture_t *fx, const char *const *extra)
{
    ck_assert_msg(hr_fixture_start(fx, extra) == 0, "broker did not start");
}

static void finish(hr_fixture_t *fx)
{
    hr_fixture_stop(fx);
    hr_fixture_destroy(fx);
}

static int client(hr_raw_t *r, hr_fixture_t *fx)
{
    return hr_raw_connect(r, fx->tcp_port) == 0 && hr_raw_hello(r, 1) == 0 ? 0 : -1;
}

static int send_sub(hr_raw_t *r, uint64_t sid, const char *pattern, int has_since, uint64_t since)
{
    hr_buf_t b;
    hr_buf_init(&b);
    hr_enc_sub(&b, sid, S(pattern), S(""), has_since, since);
    int rc = hr_raw_send_body(r, &b);
    hr_buf_destroy(&b);
    return rc;
}

/* One counter from GET /metrics on the WebSocket/HTTP port, or -1. */
static long long metric(int port, const char *name)
{
    hr_raw_t h;
    char buf[65536];
    size_t len = 0;
    long long v = -1;
    if (hr_raw_connect(&h, port) != 0)
        return -1;
    const char *rq = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    hr_raw_send(&h, rq, strlen(rq));
    for (;;) {
        struct pollfd p = {h.fd, POLLIN, 0};
        if (len + 1 >= sizeof(buf) || poll(&p, 1, 5000) <= 0)
            break;
        ssize_t got = recv(h.fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    buf[len] = 0;
    hr_raw_close(&h);
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *at = strstr(buf, key);
    if (at)
        v = atoll(at + strlen(key));
    return v;
}

static size_t put_ping(uint8_t *out, uint64_t id)
{
    /* [5, id] with id always as uint64: every frame is 15 bytes. */
    static const uint8_t head[] = {0, 0, 0, 11, 0x92, 0x05, 0xcf};
    memcpy(out, head, sizeof(head));
    for (int i = 0; i < 8; i++)
        out[sizeof(head) + (size_t)i] = (uint8_t)(id >> (56 - 8 * i));
    return 15;
}

/*
 * A client that sends PINGs (or PUBs with ack) and never reads the answers
 * must be slowed down like a slow subscriber: the broker stops reading it
 * once its own output passes half of out-soft, instead of queueing PONGs
 * without bound. Then, once the client reads, every PING is answered.
 */
START_TEST(pings_without_reading_are_paused)
{
    enum { FRAME = 15, CAP = 64 << 20, BACKLOG_MAX = 1 << 20 };
    /* Ids this large make each PONG as long as its PING (15 bytes), so bytes
     * read minus bytes written is what the broker holds unanswered. */
    const uint64_t base = (uint64_t)1 << 40;
    hr_fixture_t fx;
    const char *args[] = {"--out-soft", "4K", NULL};
    start(&fx, args);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 16 * 1024, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.tcp_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    hr_raw_t r;
    memset(&r, 0, sizeof(r));
    r.fd = fd;
    hr_buf_t b;
    hr_buf_init(&b);
    size_t m = hr_lp_begin(&b);
    hr_enc_hello(&b, "flood", NULL, 1);
    hr_lp_end(&b, m);
    ck_assert_int_eq(hr_raw_send(&r, b.base, b.len), 0);
    hr_buf_destroy(&b);
    ck_assert_int_eq(hr_raw_next(&r, 5000), 0);
    ck_assert_int_eq(r.f.op, HR_OP_WELCOME);

    /* Send PINGs without reading until the broker stops taking them for 1 s. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static uint8_t chunk[FRAME * 4096];
    size_t sent = 0;
    uint64_t id = 0;
    int blocked = 0;
    long long backlog = 0;
    while (sent < CAP && !blocked && backlog < BACKLOG_MAX) {
        size_t n = 0;
        for (int i = 0; i < 4096; i++)
            n += put_ping(chunk + n, base + ++id);
        size_t off = 0;
        while (off < n) {
            ssize_t w = send(fd, chunk + off, n - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                sent += (size_t)w;
                continue;
            }
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                break;
            struct pollfd p = {fd, POLLOUT, 0};
            if (poll(&p, 1, 1000) == 0) {
                blocked = 1;
                break;
            }
        }
        if (off < n && !blocked)
            break; /* send error */
        if (sent % (1 << 20) < sizeof(chunk))
            backlog = metric(fx.ws_port, "herald_bytes_in_total") -
                      metric(fx.ws_port, "herald_bytes_out_total");
        if (blocked) {
            /* Finish the frame cut by the last send, blocking from here on. */
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            size_t rest = (FRAME - off % FRAME) % FRAME;
            if (rest && hr_raw_send(&r, chunk + off, rest) == 0)
                sent += rest;
        }
    }
    uint64_t frames = sent / FRAME;
    backlog =
        metric(fx.ws_port, "herald_bytes_in_total") - metric(fx.ws_port, "herald_bytes_out_total");
    /* Now read: the broker resumes, and every PING gets its PONG in order. */
    uint64_t pongs = 0;
    int in_order = 1;
    if (blocked) {
        while (pongs < frames && hr_raw_next(&r, 10000) == 0) {
            if (r.f.op != HR_OP_PONG)
                continue;
            if (r.f.id != base + ++pongs)
                in_order = 0;
        }
    }
    hr_raw_close(&r);
    finish(&fx);
    ck_assert_msg(backlog < BACKLOG_MAX,
                  "the broker kept reading: %lld bytes of PONGs queued (%zu bytes sent)", backlog,
                  sent);
    ck_assert(blocked);
    ck_assert_uint_eq(pongs, frames);
    ck_assert(in_order);
}
END_TEST

/*
 * A publisher that is also a subscriber and overflows its own output with
 * the delivery of its PUB is closed with ERR 6; nothing may follow the ERR
 * (the ACK of that PUB least of all: on WebSocket it would follow the close
 * frame).
 */
START_TEST(nothing_after_err6_of_own_publish)
{
    hr_fixture_t fx;
    hr_raw_t p;
    const char *args[] = {"--out-soft", "1K", "--out-hard", "1K", NULL};
    start(&fx, args);
    ck_assert_int_eq(client(&p, &fx), 0);
    ck_assert_int_eq(send_sub(&p, 1, "self", 0, 0), 0);
    ck_assert_int_eq(hr_raw_sync(&p, 1), 0);
    static char big[4000];
    hr_buf_t b;
    hr_pub_opts_t o = {.has_ack = 1, .ack = 7};
    hr_slice_t pl = {big, sizeof(big)};
    hr_buf_init(&b);
    hr_enc_pub(&b, S("self"), pl, &o);
    ck_assert_int_eq(hr_raw_send_body(&p, &b), 0);
    hr_buf_destroy(&b);
    int first = hr_raw_next_nonping(&p, 5000);
    int op = p.f.op;
    uint64_t code = p.f.code;
    int after = hr_raw_next_nonping(&p, 2000);
    int after_op = p.f.op;
    hr_raw_close(&p);
    finish(&fx);
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(op, HR_OP_ERR);
    ck_assert_uint_eq(code, 6);
    ck_assert_msg(after != 0, "a frame (op %d) followed ERR 6", after_op);
}
END_TEST

static Suite *review_suite(void)
{
    Suite *s = suite_create("review");
    TCase *t = tcase_create("review");
    tcase_add_test(t, pings_without_reading_are_paused);
    tcase_add_test(t, nothing_after_err6_of_own_publish);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(review_suite)
