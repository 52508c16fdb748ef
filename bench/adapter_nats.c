/* SPDX-License-Identifier: MIT */
/* herald-bench adapter for nats-server: the NATS client text protocol. */
#include "hb.h"

#include <string.h>

static void nats_open(hb_conn_t *c)
{
    hb_buf_str(hb_out(c), "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":true,"
                          "\"name\":\"herald-bench\",\"lang\":\"c\",\"version\":\"0.1\","
                          "\"protocol\":1}\r\n");
}

static void nats_sub(hb_conn_t *c, uint32_t sid, const char *topic, size_t tn)
{
    hb_buf_t *b = hb_out(c);
    hb_buf_add(b, "SUB ", 4);
    hb_buf_add(b, topic, tn);
    hb_buf_add(b, " ", 1);
    hb_buf_u64(b, sid);
    hb_buf_add(b, "\r\n", 2);
}

static void nats_pub(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
                     const char *reply, size_t rn)
{
    hb_buf_t *b = hb_out(c);
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
}

static void nats_ping(hb_conn_t *c)
{
    hb_buf_add(hb_out(c), "PING\r\n", 6);
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

static long nats_parse(hb_conn_t *c, const uint8_t *p, size_t n)
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
        if (ll == 4 && !memcmp(line, "PING", 4))
            hb_buf_add(hb_out(c), "PONG\r\n", 6);
        else if (ll == 4 && !memcmp(line, "PONG", 4))
            hb_on_pong(c);
        else if (ll >= 4 && !memcmp(line, "-ERR", 4))
            hb_on_error(c, "nats: %.*s", (int)ll, (const char *)line);
        /* INFO and +OK need nothing. */
        off = after;
    }
    return (long)off;
}

const hb_adapter_t hb_adapter_nats = {
    .name = "nats",
    .open = nats_open,
    .sub = nats_sub,
    .pub = nats_pub,
    .ping = nats_ping,
    .parse = nats_parse,
    .native_reply = 1,
    .ws = 0,
};
