/* SPDX-License-Identifier: MIT */
/* herald-bench adapter for Herald: protocol v1 over TCP (length prefix) or WebSocket. */
#include "hb.h"

#include <herald/protocol.h>
#include <herald/status.h>

#include <string.h>

/* Frames are encoded into a per-thread scratch buffer, then framed for the transport. */
static _Thread_local hr_buf_t scratch;

static void emit(hb_conn_t *c)
{
    hb_buf_t *out = hb_out(c);
    if (c->ws) {
        hb_ws_frame(c, out, 2, scratch.base, scratch.len);
    } else {
        uint32_t n = (uint32_t)scratch.len;
        uint8_t *w = hb_buf_space(out, 4 + n);
        w[0] = (uint8_t)(n >> 24);
        w[1] = (uint8_t)(n >> 16);
        w[2] = (uint8_t)(n >> 8);
        w[3] = (uint8_t)n;
        memcpy(w + 4, scratch.base, n);
        out->len += 4 + n;
    }
    hr_buf_reset(&scratch);
}

static void herald_open(hb_conn_t *c)
{
    if (c->ws)
        hb_ws_upgrade(c, HR_WS_SUBPROTOCOL);
    hr_enc_hello(&scratch, "herald-bench", NULL, 1);
    emit(c);
}

static void herald_sub(hb_conn_t *c, uint32_t sid, const char *topic, size_t tn)
{
    hr_sub_fields_t o;
    memset(&o, 0, sizeof o);
    const char *t = hb_conn_params(c)->transform;
    if (t) {
        size_t len;
        o.extra.p = hb_transform_opts(t, &o.nextra, &len);
        o.extra.n = len;
    }
    hr_enc_sub_ex(&scratch, sid, (hr_slice_t){topic, tn}, &o);
    emit(c);
}

static void on_msg(hb_conn_t *c, const hr_frame_t *f)
{
    hb_on_msg(c, f->topic.p, f->topic.n, (const uint8_t *)f->payload.p, f->payload.n,
              (f->flags & HR_F_REPLY) ? f->reply.p : NULL,
              (f->flags & HR_F_REPLY) ? f->reply.n : 0);
}

static void herald_pub(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
                       const char *reply, size_t rn)
{
    hr_pub_opts_t o;
    memset(&o, 0, sizeof o);
    if (reply && rn)
        o.reply = (hr_slice_t){reply, rn};
    hr_enc_pub(&scratch, (hr_slice_t){topic, tn}, (hr_slice_t){(const char *)p, n},
               reply && rn ? &o : NULL);
    emit(c);
}

static void herald_ping(hb_conn_t *c)
{
    hr_enc_ping(&scratch, 1);
    emit(c);
}

/* Handles one frame body; returns 0, or -1 to close. */
static int body(hb_conn_t *c, const uint8_t *p, size_t n)
{
    hr_frame_t f;
    const char *why = NULL;
    int rc = hr_frame_decode(p, n, 0, &f, &why);
    if (rc != HR_OK) {
        hb_on_error(c, "herald: undecodable frame: %s", why ? why : hr_strerror(rc));
        return -1;
    }
    switch (f.op) {
    case HR_OP_MSG:
        on_msg(c, &f);
        break;
    case HR_OP_BATCH: { /* --transform batch: one delivery per message inside */
        hr_batch_iter_t it;
        hr_frame_t m;
        hr_batch_iter_init(&it, &f);
        while (hr_batch_iter_next(&it, &m)) /* checked by hr_frame_decode() */
            on_msg(c, &m);
        break;
    }
    case HR_OP_PONG:
        hb_on_pong(c);
        break;
    case HR_OP_PING:
        hr_enc_pong(&scratch, f.id);
        emit(c);
        break;
    case HR_OP_ERR:
        hb_on_error(c, "herald: ERR %llu %.*s", (unsigned long long)f.code, (int)f.message.n,
                    f.message.p);
        break;
    case HR_OP_GAP:
        hb_on_error(c, "herald: GAP on %.*s: %llu..%llu", (int)f.topic.n, f.topic.p,
                    (unsigned long long)f.first_seq, (unsigned long long)f.last_seq);
        break;
    default: /* WELCOME, ACK */
        break;
    }
    return 0;
}

static long parse_tcp(hb_conn_t *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        hr_slice_t b;
        size_t used = 0;
        int rc = hr_lp_next(p + off, n - off, (size_t)64 << 20, &b, &used);
        if (rc == HR_EAGAIN)
            break;
        if (rc != HR_OK) {
            hb_on_error(c, "herald: bad length prefix: %s", hr_strerror(rc));
            return -1;
        }
        if (body(c, (const uint8_t *)b.p, b.n))
            return -1;
        off += used;
    }
    return (long)off;
}

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
        if (op == 2) {
            if (body(c, b, bn))
                return -1;
        } else if (op == 9) {
            hb_ws_frame(c, hb_out(c), 10, b, bn);
        } else if (op == 8) {
            unsigned code = bn >= 2 ? (unsigned)(b[0] << 8 | b[1]) : 0;
            hb_on_error(c, "websocket: closed by the broker with code %u", code);
            return -1;
        } else if (op != 10) {
            hb_on_error(c, "websocket: unexpected opcode %d", op);
            return -1;
        }
        off += (size_t)r;
    }
    return (long)off;
}

static void herald_thread_exit(void)
{
    hr_buf_destroy(&scratch);
}

static long herald_parse(hb_conn_t *c, const uint8_t *p, size_t n)
{
    return c->ws ? parse_ws(c, p, n) : parse_tcp(c, p, n);
}

const hb_adapter_t hb_adapter_herald = {
    .name = "herald",
    .open = herald_open,
    .sub = herald_sub,
    .pub = herald_pub,
    .ping = herald_ping,
    .parse = herald_parse,
    .native_reply = 1,
    .ws = 1,
    .thread_exit = herald_thread_exit,
};
