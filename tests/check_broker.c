/* SPDX-License-Identifier: MIT */
/* Broker integration: the real binary over real loopback sockets. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
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

static int slice_eq_odd(hr_slice_t t)
{
    return t.n == 3 && memcmp(t.p, "odd", 3) == 0;
}

static void start(hr_fixture_t *fx, const char *const *extra)
{
    ck_assert_msg(hr_fixture_start(fx, extra) == 0, "broker did not start");
}

static void client(hr_raw_t *r, hr_fixture_t *fx, int echo)
{
    ck_assert_int_eq(hr_raw_connect(r, fx->tcp_port), 0);
    ck_assert_int_eq(hr_raw_hello(r, echo), 0);
}

static void sub(hr_raw_t *r, uint64_t sid, const char *pattern, int has_since, uint64_t since)
{
    hr_buf_t b;
    hr_buf_init(&b);
    hr_enc_sub(&b, sid, S(pattern), S(""), has_since, since);
    hr_raw_send_body(r, &b);
    hr_buf_destroy(&b);
}

static void pub(hr_raw_t *r, const char *topic, const void *p, size_t n, int ack)
{
    hr_buf_t b;
    hr_pub_opts_t o = {.has_ack = ack != 0, .ack = (uint64_t)ack};
    hr_slice_t pl = {p, n};
    hr_buf_init(&b);
    hr_enc_pub(&b, S(topic), pl, &o);
    ck_assert_int_eq(hr_raw_send_body(r, &b), 0);
    hr_buf_destroy(&b);
}

START_TEST(fanout_in_order)
{
    enum { NSUB = 40, NMSG = 500 };
    hr_fixture_t fx;
    static hr_raw_t subs[NSUB];
    hr_raw_t p;
    start(&fx, NULL);
    for (int i = 0; i < NSUB; i++) {
        client(&subs[i], &fx, 1);
        sub(&subs[i], (uint64_t)i + 1, i % 2 ? "fan.out" : "fan.*", 0, 0);
        ck_assert_int_eq(hr_raw_sync(&subs[i], 1), 0);
    }
    client(&p, &fx, 1);
    for (int m = 0; m < NMSG; m++) {
        char payload[32];
        int n = snprintf(payload, sizeof(payload), "m%d", m);
        pub(&p, "fan.out", payload, (size_t)n, 0);
    }
    for (int i = 0; i < NSUB; i++)
        for (int m = 0; m < NMSG; m++) {
            ck_assert_int_eq(hr_raw_next_nonping(&subs[i], 5000), 0);
            ck_assert_int_eq(subs[i].f.op, HR_OP_MSG);
            ck_assert_uint_eq(subs[i].f.sid, (uint64_t)i + 1);
            ck_assert_uint_eq(subs[i].f.seq, (uint64_t)m + 1);
        }
    for (int i = 0; i < NSUB; i++)
        hr_raw_close(&subs[i]);
    hr_raw_close(&p);
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

/* Frames split at every byte and many frames in one write decode the same. */
START_TEST(byte_by_byte_and_batched)
{
    hr_fixture_t fx;
    hr_raw_t s, p;
    hr_buf_t b;
    start(&fx, NULL);
    client(&s, &fx, 1);
    sub(&s, 1, "t", 0, 0);
    ck_assert_int_eq(hr_raw_sync(&s, 1), 0);
    ck_assert_int_eq(hr_raw_connect(&p, fx.tcp_port), 0);
    hr_buf_init(&b);
    size_t m = hr_lp_begin(&b);
    hr_enc_hello(&b, NULL, NULL, 1);
    hr_lp_end(&b, m);
    for (int i = 0; i < 50; i++) {
        m = hr_lp_begin(&b);
        hr_enc_pub(&b, S("t"), S("0123456789"), NULL);
        hr_lp_end(&b, m);
    }
    size_t half = b.len / 2;
    for (size_t i = 0; i < half; i++) /* one byte per write */
        ck_assert_int_eq(hr_raw_send(&p, b.base + i, 1), 0);
    ck_assert_int_eq(hr_raw_send(&p, b.base + half, b.len - half), 0); /* the rest at once */
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
        ck_assert_uint_eq(s.f.seq, (uint64_t)i + 1);
        ck_assert_uint_eq(s.f.payload.n, 10);
    }
    hr_buf_destroy(&b);
    hr_raw_close(&s);
    hr_raw_close(&p);
    hr_fixture_stop(&fx);
    hr_fixture_destroy(&fx);
}
END_TEST

START_TEST(max_payload_intact)
{
    hr_fixture_t fx;
    hr_raw_t s, p;
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7);
    big[n] = 0;
    start(&fx, NULL);
    client(&s, &fx, 1);
    sub(&s, 1, "big", 0, 0);
    ck_assert_int_eq(hr_raw_sync(&s, 1), 0);
    client(&p, &fx, 1);
    pub(&p, "big", big, n, 5);
    ck_assert_int_eq(hr_raw_next(&p, 5000), 0);
    ck_assert_int_eq(p.f.op, HR_OP_ACK);
    ck_assert_uint_eq(p.f.id, 5);
    ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
    ck_assert_uint_eq(s.f.payload.n, n);
    ck_assert_mem_eq(s.f.payload.p, big, n);
    pub(&p, "big", big, n + 1, 6); /* one byte over max_payload: ERR 2 and closed */
    ck_assert_int_eq(hr_raw_next(&p, 5000), 0);
    ck_assert_int_eq(p.f.op, HR_OP_ERR);
    ck_assert_uint_eq(p.f.code, 2);
    ck_assert(hr_raw_eof(&p, 3000));
    ck_assert_int_eq(hr_raw_sync(&s, 2), 0); /* the subscriber is unaffected */
    free(big);
    hr_raw_close(&s);
    hr_raw_close(&p);
    hr_fixture_stop(&fx);
    hr_fixture_destroy(&fx);
}
END_TEST

/* A subscriber that stops reading is cut off; a fast one on the topic gets everything. */
START_TEST(slow_consumer_cut_off)
{
    const char *args[] = {"--out-hard", "256K", "--out-soft", "128K", "--out-soft-ms", "300", NULL};
    hr_fixture_t fx;
    hr_raw_t slow, fast, p;
    static char payload[4096];
    start(&fx, args);
    client(&slow, &fx, 1); /* it stops reading after this: kernel buffers fill, then ours */
    sub(&slow, 1, "news", 0, 0);
    ck_assert_int_eq(hr_raw_sync(&slow, 1), 0);
    client(&fast, &fx, 1);
    sub(&fast, 7, "news", 0, 0);
    ck_assert_int_eq(hr_raw_sync(&fast, 1), 0);
    client(&p, &fx, 1);
    enum { N = 4000 }; /* 16 MB: more than loopback socket buffers absorb */
    int got = 0;
    for (int i = 0; i < N; i++) {
        pub(&p, "news", payload, sizeof(payload), 0);
        while (got < i - 10) { /* read the fast subscriber as we go */
            ck_assert_int_eq(hr_raw_next_nonping(&fast, 5000), 0);
            ck_assert_uint_eq(fast.f.seq, (uint64_t)++got);
        }
    }
    while (got < N) {
        ck_assert_int_eq(hr_raw_next_nonping(&fast, 5000), 0);
        ck_assert_uint_eq(fast.f.seq, (uint64_t)++got);
    }
    /* The slow one: whatever it had, then ERR 6, then the connection is closed. */
    int saw_err = 0;
    while (hr_raw_next(&slow, 5000) == 0) {
        if (slow.f.op == HR_OP_ERR) {
            ck_assert_uint_eq(slow.f.code, 6);
            saw_err = 1;
            break;
        }
        ck_assert_int_eq(slow.f.op, HR_OP_MSG);
    }
    ck_assert(saw_err);
    ck_assert(hr_raw_eof(&slow, 3000));
    hr_raw_close(&slow);
    hr_raw_close(&fast);
    hr_raw_close(&p);
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

START_TEST(garbage_closes_only_offender)
{
    hr_fixture_t fx;
    hr_raw_t good, bad;
    start(&fx, NULL);
    client(&good, &fx, 1);
    sub(&good, 1, "g", 0, 0);
    const char *garbage[] = {"\x00\x00\x00\x02\xc1\xc1", "\x00\x00\x00\x05\xdd\xff\xff\xff\xff",
                             "\xff\xff\xff\xff", "\x00\x02\x00\x00"};
    size_t lens[] = {6, 9, 4, 4};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(hr_raw_connect(&bad, fx.tcp_port), 0);
        if (i < 2)
            ck_assert_int_eq(hr_raw_hello(&bad, 1), 0);
        hr_raw_send(&bad, garbage[i], lens[i]);
        ck_assert_int_eq(hr_raw_next(&bad, 5000), 0);
        ck_assert_int_eq(bad.f.op, HR_OP_ERR);
        ck_assert_uint_eq(bad.f.code, i == 0 || i == 1 ? 1 : 2);
        ck_assert(hr_raw_eof(&bad, 3000));
        hr_raw_close(&bad);
        ck_assert_int_eq(hr_raw_sync(&good, (uint64_t)i + 10), 0);
    }
    /* An HTTP request gets an HTTP answer naming the WebSocket/HTTP port. */
    char resp[512];
    size_t got = 0;
    ssize_t k;
    ck_assert_int_eq(hr_raw_connect(&bad, fx.tcp_port), 0);
    hr_raw_send(&bad, "GET / HTTP/1.1\r\n\r\n", 18);
    while (got < sizeof(resp) - 1 && (k = recv(bad.fd, resp + got, sizeof(resp) - 1 - got, 0)) > 0)
        got += (size_t)k;
    resp[got] = 0;
    ck_assert_msg(strncmp(resp, "HTTP/1.1 400 ", 13) == 0, "%s", resp);
    ck_assert_ptr_nonnull(strstr(resp, "this is Herald's TCP port"));
    hr_raw_close(&bad);
    ck_assert_int_eq(hr_raw_sync(&good, 20), 0);
    hr_raw_close(&good);
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

START_TEST(since_replay_and_gap)
{
    const char *args[] = {"--history-msgs", "10", NULL};
    hr_fixture_t fx;
    hr_raw_t p, s;
    start(&fx, args);
    client(&p, &fx, 1);
    for (int i = 0; i < 25; i++)
        pub(&p, "h.x", "x", 1, i == 24 ? 99 : 0);
    ck_assert_int_eq(hr_raw_next(&p, 5000), 0);
    ck_assert_uint_eq(p.f.seq, 25);
    client(&s, &fx, 1);
    sub(&s, 3, "h.x", 1, 20); /* inside history: 21..25 replayed, no ERR */
    for (uint64_t q = 21; q <= 25; q++) {
        ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
        ck_assert_int_eq(s.f.op, HR_OP_MSG);
        ck_assert_uint_eq(s.f.seq, q);
        ck_assert(s.f.flags & HR_F_REPLAY);
    }
    pub(&p, "h.x", "y", 1, 0); /* live follows with no gap or duplicate */
    ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
    ck_assert_uint_eq(s.f.seq, 26);
    ck_assert(!(s.f.flags & HR_F_REPLAY));
    sub(&s, 4, "h.*", 1, 2); /* older than history: ERR 10 first, then 17..26 */
    ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
    ck_assert_int_eq(s.f.op, HR_OP_ERR);
    ck_assert_uint_eq(s.f.code, 10);
    ck_assert_uint_eq(s.f.sid, 4);
    for (uint64_t q = 17; q <= 26; q++) {
        ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
        ck_assert_uint_eq(s.f.sid, 4);
        ck_assert_uint_eq(s.f.seq, q);
    }
    hr_raw_close(&p);
    hr_raw_close(&s);
    hr_fixture_stop(&fx);
    hr_fixture_destroy(&fx);
}
END_TEST

START_TEST(heartbeat_and_shutdown)
{
    const char *args[] = {"--heartbeat-ms", "100", NULL};
    hr_fixture_t fx;
    hr_raw_t quiet, live;
    start(&fx, args);
    client(&quiet, &fx, 1);
    client(&live, &fx, 1);
    int pings = 0;
    uint64_t id = 100;
    for (int i = 0; i < 100; i++) {
        if (hr_raw_next(&quiet, 60) != 0) {
            ck_assert_int_eq(hr_raw_sync(&live, id++), 0); /* `live` keeps talking */
            continue;
        }
        if (quiet.f.op == HR_OP_PING) {
            pings++;
            continue;
        }
        break;
    }
    ck_assert_int_eq(quiet.f.op, HR_OP_ERR);
    ck_assert_uint_eq(quiet.f.code, 11);
    ck_assert_int_eq(pings, 2);
    ck_assert(hr_raw_eof(&quiet, 2000));
    /* `live` answered no ping, but its frames every ~60 ms kept it open. */
    ck_assert_int_eq(hr_raw_sync(&live, 1), 0);
    kill(fx.pid, SIGTERM);
    for (;;) {
        ck_assert_int_eq(hr_raw_next(&live, 3000), 0);
        if (live.f.op == HR_OP_ERR)
            break;
    }
    ck_assert_uint_eq(live.f.code, 9);
    ck_assert(hr_raw_eof(&live, 3000));
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_raw_close(&quiet);
    hr_raw_close(&live);
    hr_fixture_destroy(&fx);
}
END_TEST

/* A wildcard `since` is charged per topic examined; over budget it goes live with ERR 10. */
START_TEST(wildcard_replay_budget)
{
    const char *args[] = {"--replay-scan-rate", "30", NULL};
    hr_fixture_t fx;
    hr_raw_t p, s;
    char topic[32];
    start(&fx, args);
    client(&p, &fx, 1);
    for (int i = 0; i < 20; i++) {
        snprintf(topic, sizeof(topic), "w.%d", i);
        pub(&p, topic, "x", 1, i == 19 ? 1 : 0);
    }
    ck_assert_int_eq(hr_raw_next(&p, 5000), 0); /* the ACK: all 20 topics exist */
    client(&s, &fx, 1);
    sub(&s, 1, "w.*", 1, 0); /* 21 of the 30 topics a second: replayed */
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
        ck_assert_int_eq(s.f.op, HR_OP_MSG);
        ck_assert(s.f.flags & HR_F_REPLAY);
    }
    sub(&s, 2, "w.>", 1, 0); /* the budget is spent: ERR 10, then live only */
    ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
    ck_assert_int_eq(s.f.op, HR_OP_ERR);
    ck_assert_uint_eq(s.f.code, 10);
    ck_assert_uint_eq(s.f.sid, 2);
    pub(&p, "w.3", "y", 1, 0);
    for (int k = 0; k < 2; k++) { /* sid 1 and sid 2 both get the live message */
        ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
        ck_assert_int_eq(s.f.op, HR_OP_MSG);
        ck_assert_uint_eq(s.f.seq, 2);
        ck_assert(!(s.f.flags & HR_F_REPLAY));
    }
    /* `since` on a queue subscription is ignored: one member gets each message. */
    hr_buf_t b;
    hr_buf_init(&b);
    hr_enc_sub(&b, 3, S("w.4"), S("q"), 1, 0);
    hr_raw_send_body(&s, &b);
    hr_enc_ping(&b, 9);
    hr_raw_send_body(&s, &b);
    hr_buf_destroy(&b);
    ck_assert_int_eq(hr_raw_next_nonping(&s, 5000), 0);
    ck_assert_int_eq(s.f.op, HR_OP_PONG); /* no replay came before it */
    hr_raw_close(&p);
    hr_raw_close(&s);
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

/* A queue group stops choosing a member whose output is over the soft limit. */
START_TEST(queue_group_skips_backlogged_member)
{
    const char *args[] = {"--out-soft", "64K", "--out-hard", "64M", "--out-soft-ms", "60000", NULL};
    enum { N = 10000 };
    static char payload[4096];
    hr_fixture_t fx;
    hr_raw_t a, b, p;
    hr_buf_t buf;
    int small = 4096, got = 0;
    start(&fx, args);
    ck_assert_int_eq(hr_raw_connect(&a, fx.tcp_port), 0);
    setsockopt(a.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    ck_assert_int_eq(hr_raw_hello(&a, 1), 0);
    client(&b, &fx, 1);
    hr_buf_init(&buf);
    hr_enc_sub(&buf, 1, S("jobs"), S("w"), 0, 0);
    hr_raw_send_body(&a, &buf);
    hr_enc_sub(&buf, 2, S("jobs"), S("w"), 0, 0);
    hr_raw_send_body(&b, &buf);
    hr_buf_destroy(&buf);
    ck_assert_int_eq(hr_raw_sync(&a, 1), 0); /* `a` never reads again */
    ck_assert_int_eq(hr_raw_sync(&b, 1), 0);
    client(&p, &fx, 1);
    for (int i = 0; i < N; i++) {
        pub(&p, "jobs", payload, sizeof(payload), 0);
        if (i % 8 == 7) /* `b` keeps up: read what has arrived */
            while (hr_raw_next_nonping(&b, 0) == 0)
                got++;
    }
    while (hr_raw_next_nonping(&b, 500) == 0)
        got++;
    /* Strict round robin would give `b` only half. */
    ck_assert_msg(got >= N * 7 / 10, "b got %d of %d", got, N);
    hr_raw_close(&a);
    hr_raw_close(&b);
    hr_raw_close(&p);
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

/* Many subscriptions in random sid order: replace, unsubscribe, unknown sids. */
START_TEST(many_sids)
{
    enum { N = 2000 };
    hr_fixture_t fx;
    hr_raw_t c;
    hr_buf_t b;
    static uint64_t sids[N];
    start(&fx, NULL);
    client(&c, &fx, 1);
    hr_buf_init(&b);
    for (int i = 0; i < N; i++)
        sids[i] = (uint64_t)(i * 7919 % N) * 1000003ull + 1; /* a permutation, spread out */
    for (int i = 0; i < N; i++) {
        hr_enc_sub(&b, sids[i], S(i % 2 ? "odd" : "even"), S(""), 0, 0);
        hr_raw_send_body(&c, &b);
    }
    for (int i = 0; i < N; i += 2) { /* even ones move to "odd" (replaced, not added) */
        hr_enc_sub(&b, sids[i], S("odd"), S(""), 0, 0);
        hr_raw_send_body(&c, &b);
    }
    for (int i = 0; i < N; i += 4) {
        hr_enc_unsub(&b, sids[i]);
        hr_raw_send_body(&c, &b);
    }
    hr_enc_unsub(&b, sids[0]); /* already gone: ERR 8 naming it */
    hr_raw_send_body(&c, &b);
    ck_assert_int_eq(hr_raw_next_nonping(&c, 5000), 0);
    ck_assert_int_eq(c.f.op, HR_OP_ERR);
    ck_assert_uint_eq(c.f.code, 8);
    ck_assert_uint_eq(c.f.sid, sids[0]);
    hr_enc_pub(&b, S("odd"), S("x"), NULL);
    hr_raw_send_body(&c, &b);
    hr_enc_pub(&b, S("even"), S("x"), NULL);
    hr_raw_send_body(&c, &b);
    hr_enc_ping(&b, 5);
    hr_raw_send_body(&c, &b);
    int odd = 0;
    for (;;) {
        ck_assert_int_eq(hr_raw_next_nonping(&c, 5000), 0);
        if (c.f.op == HR_OP_PONG)
            break;
        ck_assert_int_eq(c.f.op, HR_OP_MSG);
        ck_assert(slice_eq_odd(c.f.topic));
        odd++;
    }
    ck_assert_int_eq(odd, N - N / 4); /* nothing left on "even"; a quarter unsubscribed */
    hr_buf_destroy(&b);
    hr_raw_close(&c);
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

/* ---- output backpressure --------------------------------------------------------- */

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
    hr_fixture_stop(&fx);
    hr_fixture_destroy(&fx);
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
    client(&p, &fx, 1);
    sub(&p, 1, "self", 0, 0);
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
    hr_fixture_stop(&fx);
    hr_fixture_destroy(&fx);
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(op, HR_OP_ERR);
    ck_assert_uint_eq(code, 6);
    ck_assert_msg(after != 0, "a frame (op %d) followed ERR 6", after_op);
}
END_TEST

static Suite *broker_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *t = tcase_create("broker");
    tcase_add_test(t, fanout_in_order);
    tcase_add_test(t, byte_by_byte_and_batched);
    tcase_add_test(t, max_payload_intact);
    tcase_add_test(t, slow_consumer_cut_off);
    tcase_add_test(t, garbage_closes_only_offender);
    tcase_add_test(t, since_replay_and_gap);
    tcase_add_test(t, heartbeat_and_shutdown);
    tcase_add_test(t, wildcard_replay_budget);
    tcase_add_test(t, queue_group_skips_backlogged_member);
    tcase_add_test(t, many_sids);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    t = tcase_create("backpressure");
    tcase_add_test(t, pings_without_reading_are_paused);
    tcase_add_test(t, nothing_after_err6_of_own_publish);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(broker_suite)
