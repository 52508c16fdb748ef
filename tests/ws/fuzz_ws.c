/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the WebSocket transport's whole input path. A real
 * hr_server_t on a private loop with two WebSocket connections over
 * socketpairs. The input is a list of steps: raw bytes (HTTP heads, broken
 * frames) or frames the target builds and masks from a header byte, so the
 * fuzzer gets past the masking rule and into wslay, reassembly and the
 * Herald frames behind it. Whatever the broker answers must be well formed:
 * an HTTP status line before the upgrade, then unmasked frames whose binary
 * messages decode as Herald frames and whose close codes are ones Herald uses.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../fuzz/fuzz_check.h"
#include "log.h"
#include "server.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char UPGRADE[] =
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n";

typedef struct side_s {
    size_t frames; /* frames checked (FUZZ_WS_VERBOSE prints them) */
    int fd;        /* the client's end; -1 once closed */
    int upgraded;  /* the 101 was seen */
    int closed;    /* a close frame was seen: nothing may follow */
    hr_buf_t in;   /* broker output not yet checked */
} side_t;

static hr_config_t cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *set[][2] = {
        {"max-payload", "1024"},  {"out-hard", "16K"},         {"out-soft", "4K"},
        {"out-soft-ms", "0"},     {"heartbeat-ms", "1000"},    {"hello-timeout-ms", "1000"},
        {"ws-max-header", "512"}, {"ws-handshake-ms", "1000"},
    };
    char err[256];
    hr__config_defaults(&cfg);
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
        CHECK(hr__config_set(&cfg, set[i][0], set[i][1], err, sizeof(err)) == 0);
    hr__log_level = -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Checks one server frame at the front of s->in; returns its size, 0 if incomplete. */
static size_t check_frame(side_t *s)
{
    const uint8_t *p = s->in.base;
    size_t n = s->in.len;
    hr_ws_header_t h;
    int r = hr_ws_header_parse(p, n, UINT64_MAX, &h);
    if (r == HR_EAGAIN)
        return 0;
    CHECK(r == HR_OK);
    CHECK(!h.masked);  /* server frames are never masked */
    CHECK(h.rsv == 0); /* no reserved bits */
    size_t off = h.hdr_len;
    uint64_t len = h.len;
    if (n - off < len)
        return 0;
    int op = h.opcode;
    CHECK(h.fin); /* the broker never fragments */
    CHECK(!s->closed);
    if (op == 2) {
        hr_frame_t f;
        CHECK(hr_frame_decode((const char *)p + off, len, 0, &f, NULL) == HR_OK);
        CHECK(f.op >= HR_OP_WELCOME || f.op == HR_OP_PING || f.op == HR_OP_PONG);
    } else if (op == 8) {
        s->closed = 1;
        if (len >= 2) {
            unsigned code = (unsigned)p[off] << 8 | p[off + 1];
            CHECK(code == 1000 || code == 1001 || code == 1002 || code == 1003 || code == 1007 ||
                  code == 1008 || code == 1009 || (code >= 3000 && code < 5000) ||
                  (code >= 1010 && code <= 1014));
        }
    } else {
        CHECK(op == 10); /* pong */
    }
    return off + (size_t)len;
}

static void drain(side_t *s)
{
    char buf[16384];
    ssize_t n;
    while (s->fd >= 0 && (n = read(s->fd, buf, sizeof(buf))) > 0)
        hr_buf_append(&s->in, buf, (size_t)n);
    for (;;) {
        if (!s->upgraded) {
            const uint8_t *e = NULL;
            for (size_t i = 3; i < s->in.len && !e; i++)
                if (!memcmp(s->in.base + i - 3, "\r\n\r\n", 4))
                    e = s->in.base + i + 1;
            if (!e)
                return;
            CHECK(s->in.len >= 12 && !memcmp(s->in.base, "HTTP/1.1 ", 9));
            int ok = !memcmp(s->in.base + 9, "101", 3);
            if (!ok) { /* an error response: a body, then the connection closes */
                hr_buf_reset(&s->in);
                s->closed = 1;
                return;
            }
            hr_buf_consume(&s->in, (size_t)(e - s->in.base));
            s->upgraded = 1;
            continue;
        }
        size_t used = check_frame(s);
        if (!used)
            return;
        hr_buf_consume(&s->in, used);
        s->frames++;
    }
}

/* Writes a frame built from header byte h: opcode, fin, mask and rsv choices, payload p[0..n). */
static void send_frame(side_t *s, uint8_t h, const uint8_t *p, size_t n)
{
    static const uint8_t ops[8] = {2, 2, 2, 0, 0, 9, 8, 1};
    uint8_t f[14 + 255];
    size_t k = 0;
    f[k++] = (uint8_t)((h & 0x08 ? 0 : 0x80) | (h & 0x80 ? 0x40 : 0) | ops[(h >> 4) & 7]);
    int mask = !(h & 0x04) || (h & 0x02); /* mostly masked */
    f[k++] = (uint8_t)((mask ? 0x80 : 0) | n);
    if (mask) {
        static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
        memcpy(f + k, key, 4);
        k += 4;
        for (size_t i = 0; i < n; i++)
            f[k + i] = p[i] ^ key[i % 4];
    } else {
        memcpy(f + k, p, n);
    }
    if (s->fd >= 0) {
        ssize_t w = write(s->fd, f, k + n);
        (void)w;
    }
}

/*
 * Input: steps of [h][n][n bytes]. h & 1: which connection. h & 0x02 with
 * h & 0x04: raw bytes; otherwise a built frame (n <= 125 keeps it a short
 * one). h == 0xff: a sweep 2 s later (timeouts); h == 0xfe: close the peer.
 * The first byte, when odd, skips the automatic upgrade of connection 1.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uv_loop_t loop;
    static hr_server_t srv;
    side_t sides[2];
    uint64_t later = 0;
    if (!size || uv_loop_init(&loop) != 0)
        return 0;
    hr__ws_transport = &hr__websocket_transport;
    CHECK(hr__server_init(&srv, &loop, &cfg) == HR_OK);
    for (int i = 0; i < 2; i++) {
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        fcntl(sv[1], F_SETFL, O_NONBLOCK);
        memset(&sides[i], 0, sizeof(sides[i]));
        sides[i].fd = sv[1];
        hr_conn_t *c = hr__conn_new(&srv, &hr__websocket_transport);
        CHECK(c && uv_tcp_open(&c->tcp, sv[0]) == 0);
        hr__conn_start(c);
        if (i == 0 || !(data[0] & 1)) {
            ssize_t w = write(sv[1], UPGRADE, sizeof(UPGRADE) - 1);
            (void)w;
        }
    }
    size_t off = 1;
    while (off + 2 <= size) {
        uint8_t h = data[off], n = data[off + 1];
        off += 2;
        side_t *s = &sides[h & 1];
        if (h == 0xff) {
            later += 2000;
            for (hr_conn_t *c = srv.conns, *next; c; c = next) {
                next = c->next;
                hr__conn_sweep(c, hr__now_ms(&srv) + later);
            }
        } else if (h == 0xfe && s->fd >= 0) {
            close(s->fd);
            s->fd = -1;
        } else {
            if (n > size - off)
                n = (uint8_t)(size - off);
            if ((h & 0x06) == 0x06) {
                if (s->fd >= 0) {
                    ssize_t w = write(s->fd, data + off, n);
                    (void)w;
                }
            } else {
                send_frame(s, h, data + off, n > 125 ? 125 : n);
            }
            off += n;
        }
        for (int t = 0; t < 4; t++) {
            uv_run(&loop, UV_RUN_NOWAIT);
            drain(&sides[0]);
            drain(&sides[1]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (getenv("FUZZ_WS_VERBOSE"))
            fprintf(stderr, "conn %d: upgraded %d, %zu frames, closed %d\n", i, sides[i].upgraded,
                    sides[i].frames, sides[i].closed);
        if (sides[i].fd >= 0)
            close(sides[i].fd);
        hr_buf_destroy(&sides[i].in);
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
    CHECK(uv_loop_close(&loop) == 0);
    return 0;
}
