/* SPDX-License-Identifier: MIT */
/* herald-bench adapter for redis-server: RESP2 SUBSCRIBE / PUBLISH. */
#include "hb.h"

#include <string.h>

/*
 * RESP2 needs no greeting, but a RESP2 connection that subscribed may not
 * PUBLISH. Requesters and the responder (reqrep) do both, so it switches to RESP3, where
 * messages arrive as pushes and commands stay allowed.
 */
static void redis_open(hb_conn_t *c)
{
    if (c->role & (HB_REQ | HB_REP))
        hb_buf_str(hb_out(c), "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
}

static void bulk(hb_buf_t *b, const void *p, size_t n)
{
    hb_buf_add(b, "$", 1);
    hb_buf_u64(b, n);
    hb_buf_add(b, "\r\n", 2);
    hb_buf_add(b, p, n);
    hb_buf_add(b, "\r\n", 2);
}

static void redis_sub(hb_conn_t *c, uint32_t sid, const char *topic, size_t tn)
{
    (void)sid;
    hb_buf_t *b = hb_out(c);
    hb_buf_str(b, "*2\r\n$9\r\nSUBSCRIBE\r\n");
    bulk(b, topic, tn);
}

/* Redis has no reply topics: a responder answers on hb.inbox.<publisher id>. */
static void redis_pub(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
                      const char *reply, size_t rn)
{
    (void)reply;
    (void)rn;
    hb_buf_t *b = hb_out(c);
    hb_buf_space(b, tn + n + 64);
    hb_buf_add(b, "*3\r\n$7\r\nPUBLISH\r\n", 17);
    bulk(b, topic, tn);
    bulk(b, p, n);
}

static void redis_ping(hb_conn_t *c)
{
    hb_buf_str(hb_out(c), "*1\r\n$4\r\nPING\r\n");
}

/* Finds the CRLF-terminated line at p[off]; returns the offset after it, or 0 if incomplete. */
static size_t line_end(const uint8_t *p, size_t n, size_t off)
{
    const uint8_t *nl = memchr(p + off, '\n', n - off);
    return nl ? (size_t)(nl - p) + 1 : 0;
}

static long long num(const uint8_t *p, size_t n)
{
    long long v = 0;
    int neg = n && p[0] == '-';
    for (size_t i = neg; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        v = v * 10 + (p[i] - '0');
    return neg ? -v : v;
}

typedef struct elem_s {
    char type;
    const uint8_t *p;
    size_t n;
} elem_t;

/*
 * Parses one RESP2/RESP3 element at p[off] into `e` (strings and numbers;
 * aggregates are walked and skipped). Returns the offset after it, 0 if
 * incomplete, -1 if malformed.
 */
static long elem(hb_conn_t *c, const uint8_t *p, size_t n, size_t off, elem_t *e, int depth)
{
    if (off >= n)
        return 0;
    size_t le = line_end(p, n, off);
    if (!le)
        return 0;
    if (le - off < 3 || depth > 8)
        return -1;
    const uint8_t *l = p + off + 1;
    size_t ll = le - off - 3; /* without type byte and CRLF */
    if (e)
        *e = (elem_t){(char)p[off], l, ll};
    switch (p[off]) {
    case '+':
    case '-':
    case ':':
    case '_':
    case '#':
    case ',':
    case '(':
        return (long)le;
    case '$':
    case '=':
    case '!': {
        long long bl = num(l, ll);
        if (bl < 0) {
            if (e)
                e->n = 0;
            return (long)le;
        }
        if (le + (size_t)bl + 2 > n)
            return 0;
        if (e)
            *e = (elem_t){(char)p[off], p + le, (size_t)bl};
        return (long)(le + (size_t)bl + 2);
    }
    case '*':
    case '>':
    case '~':
    case '%':
    case '|': {
        long long k = num(l, ll);
        if (p[off] == '%' || p[off] == '|')
            k *= 2;
        size_t at = le;
        for (long long i = 0; i < k; i++) {
            long r = elem(c, p, n, at, NULL, depth + 1);
            if (r <= 0)
                return r;
            at = (size_t)r;
        }
        return (long)at;
    }
    default:
        hb_on_error(c, "redis: unexpected reply type '%c'", p[off]);
        return -1;
    }
}

/* Parses one reply or push at p[off]; returns the offset after it, 0 if incomplete, -1 if bad. */
static long reply(hb_conn_t *c, const uint8_t *p, size_t n, size_t off)
{
    elem_t top;
    long end = elem(c, p, n, off, &top, 0);
    if (end <= 0)
        return end;
    if (top.type == '+' && top.n == 4 && !memcmp(top.p, "PONG", 4)) {
        hb_on_pong(c);
    } else if (top.type == '-') {
        hb_on_error(c, "redis: %.*s", (int)top.n, (const char *)top.p);
    } else if (top.type == '*' || top.type == '>') {
        /* Pub/sub traffic: [message, channel, payload], [pong, ""], [subscribe, ch, n]. */
        long long k = num(top.p, top.n);
        elem_t el[3];
        size_t at = line_end(p, n, off);
        for (long long i = 0; i < k && i < 3; i++) {
            long r = elem(c, p, n, at, &el[i], 1);
            if (r <= 0)
                return -1;
            at = (size_t)r;
        }
        if (k == 3 && el[0].n == 7 && !memcmp(el[0].p, "message", 7))
            hb_on_msg(c, (const char *)el[1].p, el[1].n, el[2].p, el[2].n, NULL, 0);
        else if (k >= 1 && el[0].n == 4 && !memcmp(el[0].p, "pong", 4))
            hb_on_pong(c);
    }
    return end;
}

static long redis_parse(hb_conn_t *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        long r = reply(c, p, n, off);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        off = (size_t)r;
    }
    return (long)off;
}

const hb_adapter_t hb_adapter_redis = {
    .name = "redis",
    .open = redis_open,
    .sub = redis_sub,
    .pub = redis_pub,
    .ping = redis_ping,
    .parse = redis_parse,
    .native_reply = 0,
    .ws = 0,
};
