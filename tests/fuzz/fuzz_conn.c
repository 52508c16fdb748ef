/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the broker's whole input path over the TCP transport, or
 * (built with FUZZ_WS, target fuzz_wsconn) over WebSocket: the HTTP upgrade and
 * the RFC 6455 input path. A real hr_server_t on a private libuv loop with
 * three connections whose sockets are socketpairs; the fuzzer's bytes are
 * written into the peers and the loop runs, so reads, framing, dispatch,
 * routing, replay, output queues, closing and sweeps all run as in the
 * broker. Every frame the broker sends back must decode cleanly.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "auth.h"
#include "log.h"
#include "server.h"
#include "ws.h"

#ifdef FUZZ_WS
#define TRANSPORT (&hr__websocket_transport)
/* A valid upgrade request: with input byte 0 odd, the harness sends it first on every peer. */
static const char upgrade[] =
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n";
#else
#define TRANSPORT (&hr__tcp_transport)
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define NC 3

typedef struct peer_s {
    int fd;       /* our end; -1 once closed */
    hr_conn_t *c; /* the broker's end (check alive() before use) */
    hr_buf_t in;  /* bytes the broker sent, not yet decoded */
    int http;     /* WebSocket: 1 while the HTTP response head is expected, 2 after an error */
} peer_t;

static hr_config_t cfg;
static hr_server_t srv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    hr__config_defaults(&cfg);
    /* Small limits so the fuzzer reaches them. The PROXY protocol hook runs first on every
     * connection: the socketpairs are not in proxy-from, so a header is refused and anything
     * else passes through to the transport. */
    static const char *set[][2] = {
        {"max-payload", "2048"},      {"max-subs", "6"},
        {"max-topics", "24"},         {"history-msgs", "4"},
        {"history-bytes", "4K"},      {"history-total", "16K"},
        {"out-hard", "16K"},          {"out-soft", "4K"},
        {"out-soft-ms", "0"},         {"heartbeat-ms", "1000"},
        {"hello-timeout-ms", "1000"}, {"proxy-protocol", "both"},
        {"proxy-from", "10.0.0.0/8"},
    };
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
        if (hr__config_set(&cfg, set[i][0], set[i][1], err, sizeof(err)) != 0)
            abort();
    /* Static tokens: "alice-secret-1" is restricted, "svc-secret-22" may do everything. */
    static char tokens[64];
    snprintf(tokens, sizeof(tokens), "/tmp/herald-fuzz-tokens-%d", (int)getpid());
    FILE *f = fopen(tokens, "w");
    if (!f)
        abort();
    fputs("alice alice-secret-1 pub=chat.>,_INBOX.alice.> sub=chat.*,_INBOX.alice.>\n"
          "svc svc-secret-22 pub=> sub=>,$SYS.>\n",
          f);
    fclose(f);
    if (hr__config_set(&cfg, "auth-tokens-file", tokens, err, sizeof(err)) != 0)
        abort();
    hr__log_level = -1; /* silent */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int alive(hr_conn_t *c)
{
    for (hr_conn_t *x = srv.conns; x; x = x->next)
        if (x == c)
            return !(x->flags & HR_C_CLOSED);
    return 0;
}

static void check_body(const void *p, size_t n)
{
    hr_frame_t f;
    int r = hr_frame_decode(p, n, 0, &f, NULL);
    CHECK(r == HR_OK);
    CHECK(f.op >= HR_OP_WELCOME || f.op == HR_OP_PING || f.op == HR_OP_PONG);
}

/* The next complete frame in `p[0..n)`: its bytes, or 0 when incomplete. */
static size_t next_frame(peer_t *p, const uint8_t *b, size_t n)
{
#ifdef FUZZ_WS
    if (p->http == 2)
        return n; /* an HTTP error response: nothing else follows */
    if (p->http) {
        const char *end = memmem(b, n, "\r\n\r\n", 4);
        if (!end)
            return 0;
        p->http = memcmp(b, "HTTP/1.1 101 ", 13) == 0 ? 0 : 2;
        return (size_t)((const uint8_t *)end + 4 - b);
    }
    hr_ws_header_t h;
    int r = hr_ws_header_parse(b, n, UINT64_MAX, &h);
    if (r == HR_EAGAIN)
        return 0;
    CHECK(r == HR_OK);
    CHECK(!h.masked); /* a server never masks */
    CHECK(h.fin);     /* nor fragments */
    size_t off = h.hdr_len;
    uint64_t len = h.len;
    if (n - off < len)
        return 0;
    int op = h.opcode;
    CHECK(op == 2 || op == 8 || op == 9 || op == 10);
    if (op == 2)
        check_body(b + off, (size_t)len);
    return off + (size_t)len;
#else
    hr_slice_t body;
    size_t used;
    if (hr_lp_next(b, n, SIZE_MAX, &body, &used) != HR_OK)
        return 0;
    check_body(body.p, body.n);
    return used;
#endif
}

/* Reads what the broker wrote to `p` and checks that every frame is well formed. */
static void drain(peer_t *p)
{
    char buf[16384];
    if (p->fd < 0)
        return;
    for (;;) {
        ssize_t n = read(p->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        hr_buf_append(&p->in, buf, (size_t)n);
    }
    size_t off = 0, k;
    while (off < p->in.len && (k = next_frame(p, p->in.base + off, p->in.len - off)) > 0)
        off += k;
    hr_buf_consume(&p->in, off);
}

static void turn(peer_t *peers)
{
    for (int i = 0; i < 4; i++) {
        uv_run(srv.loop, UV_RUN_NOWAIT);
        for (int k = 0; k < NC; k++)
            drain(&peers[k]);
    }
}

/*
 * Input: chunks of [h][n][n bytes]. h & 3 picks the connection (0..2) whose
 * peer writes the bytes; h & 3 == 3 is an action chosen by h >> 2: run a
 * sweep far in the future (heartbeats, HELLO timeout, soft limit), half-close
 * or close a peer, or stop draining output for a while.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uv_loop_t loop;
    peer_t peers[NC];
    uint64_t fake_now = 0;
    if (uv_loop_init(&loop) != 0)
        return 0;
    if (hr__server_init(&srv, &loop, &cfg) != HR_OK)
        abort();
    for (int i = 0; i < NC; i++) {
        int sv[2];
        hr_buf_init(&peers[i].in);
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            abort();
        fcntl(sv[1], F_SETFL, O_NONBLOCK);
        peers[i].fd = sv[1];
        peers[i].http = TRANSPORT == &hr__websocket_transport;
        peers[i].c = hr__conn_new(&srv, TRANSPORT);
        CHECK(peers[i].c);
        if (uv_tcp_open(&peers[i].c->tcp, sv[0]) != 0)
            abort();
        hr__conn_start(peers[i].c);
    }

    size_t off = 0;
#ifdef FUZZ_WS
    if (size && (data[0] & 1)) {
        for (int i = 0; i < NC; i++)
            CHECK(write(peers[i].fd, upgrade, sizeof(upgrade) - 1) == (ssize_t)sizeof(upgrade) - 1);
        turn(peers);
    }
    off = size ? 1 : 0;
#endif
    while (off + 2 <= size) {
        uint8_t h = data[off], n = data[off + 1];
        off += 2;
        int k = h & 3;
        if (k == 3) {
            int act = (h >> 2) & 7;
            peer_t *p = &peers[n % NC];
            if (act == 0) {
                fake_now += 1000u * (n + 1);
                for (int i = 0; i < NC; i++)
                    if (alive(peers[i].c))
                        hr__conn_sweep(peers[i].c, hr__now_ms(&srv) + fake_now);
            } else if (act == 1 && p->fd >= 0) {
                shutdown(p->fd, SHUT_WR);
            } else if (act == 2 && p->fd >= 0) {
                close(p->fd);
                p->fd = -1;
            } else if (act == 3) {
                hr__conn_flush_all(&srv);
            }
            turn(peers);
            continue;
        }
        if (n > size - off)
            n = (uint8_t)(size - off);
        if (peers[k].fd >= 0 && n) {
            ssize_t w = write(peers[k].fd, data + off, n);
            (void)w;
        }
        off += n;
        turn(peers);
    }

    for (int i = 0; i < NC; i++) {
        if (peers[i].fd >= 0)
            close(peers[i].fd);
        hr_buf_destroy(&peers[i].in);
    }
    for (int i = 0; i < 64 && srv.nconns; i++) {
        for (hr_conn_t *c = srv.conns; c; c = c->next)
            hr__conn_close_now(c);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    CHECK(srv.nconns == 0);
    hr__server_shutdown(&srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    hr__server_destroy(&srv);
    int r = uv_loop_close(&loop);
    CHECK(r == 0);
    return 0;
}
