/* SPDX-License-Identifier: MIT */
/* Herald's msgpack front end: decodes one frame body and calls the command it carries. */
#include "auth.h"
#include "log.h"
#include "server.h"

static void send_welcome(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    hr_welcome_t w = {
        .server = "herald/" HERALD_VERSION,
        .client_id = c->id,
        .worker = s->worker,
        .max_payload = (uint64_t)s->cfg.max_payload,
        .max_frame = s->max_frame,
        .heartbeat_ms = (uint64_t)s->cfg.heartbeat_ms,
        .epoch = s->engine->ops->epoch(s->engine),
    };
    if (hr_enc_welcome(&s->scratch, &w) == HR_OK)
        hr__conn_send_scratch(c);
}

static void handle_hello(hr_conn_t *c, const hr_frame_t *f)
{
    const char *why;
    if (c->flags & HR_C_HELLO) {
        hr__conn_fail_input(c, HR_EPROTO, "HELLO may only be the first frame");
        return;
    }
    if (f->version != HR_PROTOCOL_VERSION) {
        hr__conn_fail(c, HR_EPROTO, "unsupported protocol version (this broker speaks v 1)");
        return;
    }
    if (hr__auth_hello(c, f->token, &why) != HR_OK) {
        hr__conn_fail(c, HR_EAUTH, why);
        return;
    }
    c->flags |= HR_C_HELLO;
    if (f->flags & HR_F_NO_ECHO)
        c->flags |= HR_C_NO_ECHO;
    HR_LOG(HR_LOG_DEBUG, c->id, "HELLO name=%.*s", (int)f->name.n, f->name.p ? f->name.p : "");
    send_welcome(c);
}

void hr__cmd_ping(hr_conn_t *c, uint64_t id)
{
    if (hr_enc_pong(&c->srv->scratch, id) == HR_OK)
        hr__conn_answer(c);
}

void hr__dispatch_frame(hr_conn_t *c, const char *body, size_t n)
{
    hr_server_t *s = c->srv;
    hr_frame_t f;
    const char *why;
    if (c->flags & (HR_C_CLOSING | HR_C_FAILING))
        return;
    c->idle_since = hr__now_ms(s);
    c->pings = 0;
    int r = hr_frame_decode(body, n, (size_t)s->cfg.max_payload, &f, &why);
    if (r == HR_EPROTO || r == HR_ETOOBIG) {
        hr__conn_fail_input(c, r, why);
        return;
    }
    if (!(c->flags & HR_C_HELLO) && f.op != HR_OP_HELLO) {
        hr__conn_fail(c, HR_EPROTO, "the first frame must be HELLO");
        return;
    }
    switch (f.op) {
    case HR_OP_HELLO:
        handle_hello(c, &f);
        break;
    case HR_OP_PUB: {
        if (r == HR_ETOPIC) {
            hr__conn_err(c, HR_ETOPIC, why, (f.flags & HR_F_ACK) != 0, f.id);
            break;
        }
        hr_pub_cmd_t p = {
            .topic = f.topic,
            .payload = f.payload,
            .reply = (f.flags & HR_F_REPLY) ? f.reply : (hr_slice_t){0},
            .headers = (f.flags & HR_F_HEADERS) ? f.headers : (hr_slice_t){0},
            .has_ack = (f.flags & HR_F_ACK) != 0,
            .ack = f.id,
        };
        hr__cmd_publish(c, &p);
        break;
    }
    case HR_OP_SUB: {
        if (r == HR_ETOPIC) {
            hr__conn_err(c, HR_ETOPIC, why, 1, f.sid);
            break;
        }
        hr_sub_cmd_t sc = {
            .sid = f.sid,
            .pattern = f.topic,
            .queue = (f.flags & HR_F_QUEUE) ? f.queue : (hr_slice_t){0},
            .has_since = (f.flags & HR_F_SINCE) != 0,
            .since = f.since,
            .has_last = (f.flags & HR_F_LAST) != 0,
            .last = f.last,
            .has_epoch = (f.flags & HR_F_EPOCH) != 0,
            .epoch = f.epoch,
            .opts = (f.flags & HR_F_HAS_OPTS) ? f.opts : (hr_slice_t){0},
        };
        hr__cmd_subscribe(c, &sc);
        break;
    }
    case HR_OP_UNSUB:
        hr__cmd_unsubscribe(c, f.sid);
        break;
    case HR_OP_PING:
        hr__cmd_ping(c, f.id);
        break;
    case HR_OP_PONG:
        break;
    default:
        hr__conn_fail_input(c, HR_EPROTO, "opcode not valid from a client");
        break;
    }
}
