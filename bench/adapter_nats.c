/* SPDX-License-Identifier: MIT */
/* herald-bench adapter for nats-server: the NATS client text protocol, over TCP or WebSocket. */
#include "hb.h"

#include <string.h>

/*
 * Over WebSocket the text protocol is a byte stream carried in binary
 * messages: each command is encoded into a per-thread scratch buffer and sent
 * as one masked frame; what arrives is unframed into c->wsin and parsed there.
 */
static _Thread_local hb_buf_t scratch;

static hb_buf_t *begin(hb_conn_t *c)
{
    return c->ws ? &scratch : hb_out(c);
}

static void end(hb_conn_t *c)
{
    if (!c->ws)
        return;
    hb_ws_frame(c, hb_out(c), 2, scratch.p + scratch.off, hb_buf_pending(&scratch));
    scratch.off = scratch.len = 0;
}

static void nats_open(hb_conn_t *c)
{
    if (c->ws)
        hb_ws_upgrade(c, NULL);
    hb_buf_str(begin(c), "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":true,"
                         "\"name\":\"herald-bench\",\"lang\":\"c\",\"version\":\"0.1\","
                         "\"protocol\":1}\r\n");
    end(c);
}

static void nats_sub(hb_conn_t *c, uint32_t sid, const char *topic, size_t tn)
{
    hb_buf_t *b = begin(c);
    hb_buf_add(b, "SUB ", 4);
    hb_buf_add(b, topic, tn);
    hb_buf_add(b, " ", 1);
    hb_buf_u64(b, sid);
    hb_buf_add(b, "\r\n", 2);
    end(c);
}

static void nats_pub(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
                     const char *reply, size_t rn)
{
    hb_buf_t *b = begin(c);
    uint8_t *w = hb_buf_space(b, tn + rn + n + 40);
    uint8_t *s = w;
    memcpy(w, "PUB ", 4);
    w += 4;
    memcpy(w, topic, tn);
    w += tn;
    *w++ = ' ';
    if (reply && rn) {
        memcpy(w, reply, rn);
        w += rn;
        *w++ = ' ';
    }
    char tmp[24];
    int i = sizeof tmp;
    size_t v = n;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(w, tmp + i, sizeof tmp - (size_t)i);
    w += sizeof tmp - (size_t)i;
    *w++ = '\r';
    *w++ = '\n';
    memcpy(w, p, n);
    w += n;
    *w++ = '\r';
    *w++ = '\n';
    b->len += (size_t)(w - s);
    end(c);
}

static void nats_ping(hb_conn_t *c)
{
    hb_buf_add(begin(c), "PING\r\n", 6);
    end(c);
}

static size_t parse_size(const uint8_t *p, size_t n, int *ok)
{
    size_t v = 0;
    *ok = n > 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            *ok = 0;
            return 0;
        }
        v = v * 10 + (size_t)(p[i] - '0');
    }
    return v;
}

/* MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n; returns bytes used, 0, or -1. */
static long parse_msg(hb_conn_t *c, const uint8_t *p, size_t n, const uint8_t *line, size_t ll,
                      size_t after)
{
    const uint8_t *tok[5];
    size_t tl[5];
    int nt = 0;
    size_t i = 4;
    while (i < ll && nt < 5) {
        while (i < ll && line[i] == ' ')
            i++;
        if (i >= ll)
            break;
        size_t s = i;
        while (i < ll && line[i] != ' ')
            i++;
        tok[nt] = line + s;
        tl[nt++] = i - s;
    }
    if (nt < 3 || nt > 4) {
        hb_on_error(c, "nats: malformed MSG line");
        return -1;
    }
    int ok;
    size_t sz = parse_size(tok[nt - 1], tl[nt - 1], &ok);
    if (!ok) {
        hb_on_error(c, "nats: bad MSG size");
        return -1;
    }
    if (after + sz + 2 > n)
        return 0;
    hb_on_msg(c, (const char *)tok[0], tl[0], p + after, sz, nt == 4 ? (const char *)tok[2] : NULL,
              nt == 4 ? tl[2] : 0);
    return (long)(after + sz + 2);
}

static long parse_text(hb_conn_t *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        const uint8_t *line = p + off;
        const uint8_t *nl = memchr(line, '\n', n - off);
        if (!nl) {
            if (n - off > 65536) {
                hb_on_error(c, "nats: line too long");
                return -1;
            }
            break;
        }
        size_t ll = (size_t)(nl - line);
        if (ll && line[ll - 1] == '\r')
            ll--;
        size_t after = (size_t)(nl + 1 - p);
        if (ll > 4 && !memcmp(line, "MSG ", 4)) {
            long used = parse_msg(c, p, n, line, ll, after);
            if (used < 0)
                return -1;
            if (used == 0)
                break;
            off = (size_t)used;
            continue;
        }
        if (ll == 4 && !memcmp(line, "PING", 4)) {
            hb_buf_add(begin(c), "PONG\r\n", 6);
            end(c);
        } else if (ll == 4 && !memcmp(line, "PONG", 4))
            hb_on_pong(c);
        else if (ll >= 4 && !memcmp(line, "-ERR", 4))
            hb_on_error(c, "nats: %.*s", (int)ll, (const char *)line);
        /* INFO and +OK need nothing. */
        off = after;
    }
    return (long)off;
}

/* Unframes WebSocket messages into c->wsin and parses the text stream there. */
static long parse_ws(hb_conn_t *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    if (c->state == HB_C_UPGRADING) {
        long r = hb_ws_parse_upgrade(c, p, n);
        if (r <= 0)
            return r;
        off = (size_t)r;
    }
    while (off < n) {
        int op;
        const uint8_t *b;
        size_t bn;
        long r = hb_ws_parse(p + off, n - off, &op, &b, &bn);
        if (r < 0) {
            hb_on_error(c, "websocket: malformed or fragmented frame");
            return -1;
        }
        if (r == 0)
            break;
        if (op == 1 || op == 2) {
            hb_buf_add(&c->wsin, b, bn);
        } else if (op == 9) {
            hb_ws_frame(c, hb_out(c), 10, b, bn);
        } else if (op == 8) {
            hb_on_error(c, "websocket: closed by the broker");
            return -1;
        }
        off += (size_t)r;
    }
    if (hb_buf_pending(&c->wsin)) {
        long used = parse_text(c, c->wsin.p + c->wsin.off, hb_buf_pending(&c->wsin));
        if (used < 0)
            return -1;
        c->wsin.off += (size_t)used;
        if (c->wsin.off == c->wsin.len)
            c->wsin.off = c->wsin.len = 0;
    }
    return (long)off;
}

static long nats_parse(hb_conn_t *c, const uint8_t *p, size_t n)
{
    return c->ws ? parse_ws(c, p, n) : parse_text(c, p, n);
}

static void nats_thread_exit(void)
{
    hb_buf_free(&scratch);
}

const hb_adapter_t hb_adapter_nats = {
    .name = "nats",
    .open = nats_open,
    .sub = nats_sub,
    .pub = nats_pub,
    .ping = nats_ping,
    .parse = nats_parse,
    .native_reply = 1,
    .ws = 1,
    .thread_exit = nats_thread_exit,
};
