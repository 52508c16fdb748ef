/* SPDX-License-Identifier: MIT */
/* libherald pending operations (acks, requests, flushes, confirmations), publish and request. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"

/* ---- pending operations ------------------------------------------------- */

void hr__op_link(hr_client_t *c, hr__op_t *op)
{
    op->next = NULL;
    op->prev = c->ops_tail;
    if (c->ops_tail)
        c->ops_tail->next = op;
    else
        c->ops_head = op;
    c->ops_tail = op;
}

void hr__op_unlink(hr_client_t *c, hr__op_t *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        c->ops_head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        c->ops_tail = op->prev;
    op->next = op->prev = NULL;
}

hr__op_t *hr__op_find(hr_client_t *c, int kind, uint64_t id)
{
    for (hr__op_t *op = c->ops_head; op; op = op->next)
        if (op->kind == kind && op->id == id)
            return op;
    return NULL;
}

/*
 * Reports the outcome of a confirmed subscription. A subscription that
 * failed is removed before its callback runs, so the callback may neither
 * see it delivered to nor unsubscribe it; a refused one needs no UNSUB (the
 * broker never made it), one that timed out gets one.
 */
static void confirm_complete(hr_client_t *c, hr__op_t *op, int status)
{
    hr_sub_t *s = op->sub;
    s->confirm = NULL;
    if (status != HR_OK && !s->dead) {
        s->dead = 1;
        hr__sub_remove(c, s);
        if (hr__connected(c) && s->sent && !s->refused && !s->drained)
            hr__send_unsub(c, s->sid);
        assert(s->refs >= 2);
        s->refs--; /* the subscription's own reference; the op's keeps it alive */
        op->cb.confirm(c, s, status, op->arg);
    } else if (!s->dead) {
        op->cb.confirm(c, s, status, op->arg);
    }
    hr__sub_decref(s); /* the op's reference */
}

/* Completes and frees `op` (already unlinked). */
void hr__op_complete(hr_client_t *c, hr__op_t *op, int status, uint64_t seq, hr_message_t *reply)
{
    switch (op->kind) {
    case HR__OP_ACK:
        if (op->cb.ack)
            op->cb.ack(c, status, seq, op->arg);
        break;
    case HR__OP_REQ:
        op->cb.req(c, status, status == HR_OK ? reply : NULL, op->arg);
        break;
    case HR__OP_FLUSH:
        op->cb.done(c, status, op->arg);
        break;
    case HR__OP_CONFIRM:
        confirm_complete(c, op, status);
        break;
    }
    free(op);
}

/*
 * Completes with `status` every op for which `pick` says so (all if NULL). The ops are unlinked
 * first and completed afterwards, because the callbacks may add or remove ops.
 */
void hr__ops_finish(hr_client_t *c, int status, int (*pick)(hr_client_t *, hr__op_t *, void *),
                    void *ctx)
{
    hr__op_t *head = NULL, **tail = &head;
    hr__op_t *op = c->ops_head;
    while (op) {
        hr__op_t *next = op->next;
        if (!pick || pick(c, op, ctx)) {
            hr__op_unlink(c, op);
            *tail = op;
            tail = &op->next;
        }
        op = next;
    }
    while (head) {
        hr__op_t *next = head->next;
        hr__op_complete(c, head, status, 0, NULL);
        head = next;
    }
}

static int pick_expired(hr_client_t *c, hr__op_t *op, void *ctx)
{
    uint64_t now = *(uint64_t *)ctx;
    return op->deadline && op->deadline <= now;
}

static void deadline_cb(uv_timer_t *t)
{
    hr_client_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    c->deadline_due = 0;
    hr__ops_finish(c, HR_ETIMEDOUT, pick_expired, &now);
    uint64_t next = 0;
    for (hr__op_t *op = c->ops_head; op; op = op->next)
        if (op->deadline && (!next || op->deadline < next))
            next = op->deadline;
    if (next)
        hr__deadline_arm(c, next);
    hr__drain_check(c);
}

void hr__deadline_arm(hr_client_t *c, uint64_t deadline)
{
    if (c->deadline_due && c->deadline_due <= deadline)
        return;
    if (c->state == HR_STATE_CLOSING)
        return;
    c->deadline_due = deadline;
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->t_deadline, deadline_cb, deadline > now ? deadline - now : 0, 0);
}

/* ---- flushes, replies, confirmations ------------------------------------ */

static int pick_flushed(hr_client_t *c, hr__op_t *op, void *ctx)
{
    return op->kind == HR__OP_FLUSH && op->ponged && op->mark <= c->q_deq;
}

void hr__flush_delivered(hr_client_t *c)
{
    for (hr__op_t *op = c->ops_head; op; op = op->next)
        if (pick_flushed(c, op, NULL))
            c->flush_waiting--;
    hr__ops_finish(c, HR_OK, pick_flushed, NULL);
}

void hr__on_reply(hr_client_t *c, const hr_frame_t *f)
{
    /* Reply topics are <inbox>.<token>. */
    if (f->topic.n <= c->inbox_len + 1)
        return;
    uint64_t token = 0;
    for (size_t i = c->inbox_len + 1; i < f->topic.n; i++) {
        char ch = f->topic.p[i];
        if (ch < '0' || ch > '9')
            return;
        token = token * 10 + (uint64_t)(ch - '0');
    }
    hr__op_t *op = hr__op_find(c, HR__OP_REQ, token);
    if (!op)
        return; /* late reply to a request that timed out */
    hr__op_unlink(c, op);
    hr_message_t *m = hr__message_new(f);
    hr__op_complete(c, op, m ? HR_OK : HR_ENOMEM, 0, m);
    hr_message_unref(&m);
    hr__drain_check(c);
}

/* Sends the PING of every confirmation waiting for one (after its SUB). */
static int pick_unsent_drained(hr_client_t *c, hr__op_t *op, void *ctx)
{
    return op->kind == HR__OP_CONFIRM && !op->id && op->sub->drained;
}

/*
 * After a WELCOME: the SUBs went out, now the PING of each confirmation
 * that waits for one. A subscription a drain took before it was ever sent
 * will not be: its confirmation ends with HR_ECLOSED.
 */
void hr__confirm_pings(hr_client_t *c)
{
    hr__ops_finish(c, HR_ECLOSED, pick_unsent_drained, NULL);
    for (hr__op_t *op = c->ops_head; op; op = op->next)
        if (op->kind == HR__OP_CONFIRM && !op->id) {
            op->id = ++c->ping_id;
            hr__send_ping(c, op->id);
        }
}

void hr__on_pong(hr_client_t *c, uint64_t id)
{
    if (c->draining && id == c->drain_ping) {
        c->drain_ponged = 1;
        hr__drain_check(c);
        return;
    }
    hr__op_t *op = hr__op_find(c, HR__OP_CONFIRM, id);
    if (op) {
        hr__op_unlink(c, op);
        hr__op_complete(c, op, HR_OK, 0, NULL);
        hr__drain_check(c);
        return;
    }
    op = hr__op_find(c, HR__OP_FLUSH, id);
    if (op && !op->ponged && c->q_deq < c->q_enq) {
        /* Complete after the messages that arrived before this PONG. */
        op->ponged = 1;
        op->mark = c->q_enq;
        op->deadline = 0;
        c->flush_waiting++;
    } else if (op) {
        hr__op_unlink(c, op);
        hr__op_complete(c, op, HR_OK, 0, NULL);
        hr__drain_check(c);
    }
}

/*
 * Encodes one PUB into `out` when connected, else into `pend`. Buffer limits
 * are checked against a bound of the frame's size before encoding.
 */
/* ---- public: publish ---------------------------------------------------- */

int hr__publish_check(const char *topic, const void *data, size_t len, const char *reply,
                      const hr_header_t *headers, size_t nheaders, uint64_t max_payload,
                      size_t *est)
{
    size_t tn = strlen(topic);
    if (hr_topic_validate(topic, tn) != HR_OK)
        return HR_ETOPIC;
    if (topic[0] == '$')
        return HR_EPERM;
    if (reply && hr_topic_validate(reply, strlen(reply)) != HR_OK)
        return HR_ETOPIC;
    if (!data && len)
        return HR_EINVAL;
    if (max_payload && len > max_payload)
        return HR_ETOOBIG;
    *est = len + tn + (reply ? strlen(reply) : 0) + 64;
    for (size_t i = 0; i < nheaders; i++) {
        if (!headers[i].key || !headers[i].value)
            return HR_EINVAL;
        *est += strlen(headers[i].key) + strlen(headers[i].value) + 10;
    }
    return HR_OK;
}

static int publish(hr_client_t *c, const char *topic, const void *data, size_t len,
                   const char *reply, const hr_header_t *headers, size_t nheaders, hr__op_t *op)
{
    size_t est;
    int r = hr__publish_check(topic, data, len, reply, headers, nheaders, c->max_payload, &est);
    if (r != HR_OK)
        return r;
    hr_buf_t *b;
    if (hr__connected(c)) {
        b = &c->out;
        size_t inflight = c->conn->writing ? c->conn->wbuf.len : 0;
        if (b->len + inflight + est > c->o.max_out_bytes)
            return HR_EBUFFULL;
    } else {
        b = &c->pend;
        if (b->len + est > c->o.reconnect_buf_bytes)
            return HR_EBUFFULL;
    }
    hr_pub_opts_t po;
    memset(&po, 0, sizeof(po));
    po.reply = hr__slice(reply);
    po.headers = headers;
    po.nheaders = nheaders;
    if (op) {
        op->id = ++c->next_id;
        po.has_ack = 1;
        po.ack = op->id;
    }
    hr_slice_t t = {topic, strlen(topic)}, p = {data, len};
    HR__ENCODE(b, hr_enc_pub(b, t, p, &po));
    c->stats.msgs_out++;
    c->stats.bytes_out += len;
    if (op)
        hr__op_link(c, op);
    if (b == &c->out)
        hr__want_flush(c);
    return HR_OK;
}

int hr_client_publish(hr_client_t *c, const char *topic, const void *data, size_t len,
                      const hr_publish_opts_t *opts)
{
    if (!c || !topic)
        return HR_EINVAL;
    if (!hr__accepting(c))
        return HR_ECLOSED;
    hr__op_t *op = NULL;
    if (opts && opts->on_ack) {
        op = calloc(1, sizeof(*op));
        if (!op)
            return HR_ENOMEM;
        op->kind = HR__OP_ACK;
        op->cb.ack = opts->on_ack;
        op->arg = opts->arg;
    }
    int r = publish(c, topic, data, len, opts ? opts->reply : NULL, opts ? opts->headers : NULL,
                    opts ? opts->nheaders : 0, op);
    if (r != HR_OK)
        free(op);
    return r;
}

int hr_client_respond(hr_client_t *c, const hr_message_t *m, const void *data, size_t len)
{
    if (!c || !m || !m->reply)
        return HR_EINVAL;
    return hr_client_publish(c, m->reply, data, len, NULL);
}

/* ---- public: request, flush --------------------------------------------- */

/* A request or flush op with a deadline `timeout_ms` (0: the request timeout) from now. */
static hr__op_t *op_new(hr_client_t *c, int kind, uint64_t id, uint32_t timeout_ms, void *arg)
{
    hr__op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->kind = kind;
    op->id = id;
    op->arg = arg;
    op->deadline = uv_now(c->loop) + (timeout_ms ? timeout_ms : c->o.request_timeout_ms);
    return op;
}

/* Links `op` once the frame it waits on was queued (`sent`: HR_OK), else frees it. */
static int op_start(hr_client_t *c, hr__op_t *op, int sent)
{
    if (sent != HR_OK) {
        free(op);
        return sent;
    }
    hr__op_link(c, op);
    hr__deadline_arm(c, op->deadline);
    return HR_OK;
}

static void inbox_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    /* Replies are matched in hr__on_reply() and never queued. */
}

static int ensure_inbox(hr_client_t *c)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char pat[sizeof(c->inbox) + 2];
    if (c->inbox_sub)
        return HR_OK;
    memcpy(c->inbox, "_INBOX.", 7);
    for (int i = 0; i < 22; i++)
        c->inbox[7 + i] = abc[hr__rand(c) % (sizeof(abc) - 1)];
    c->inbox[29] = '\0';
    c->inbox_len = 29;
    snprintf(pat, sizeof(pat), "%s.>", c->inbox);
    return hr__subscribe(c, pat, NULL, inbox_cb, NULL, 1, &c->inbox_sub);
}

int hr_client_request(hr_client_t *c, const char *topic, const void *data, size_t len,
                      uint32_t timeout_ms, hr_request_cb cb, void *arg)
{
    char reply[sizeof(c->inbox) + 24];
    if (!c || !topic || !cb)
        return HR_EINVAL;
    if (!hr__accepting(c))
        return HR_ECLOSED;
    int r = ensure_inbox(c);
    if (r != HR_OK)
        return r;
    hr__op_t *op = op_new(c, HR__OP_REQ, ++c->next_id, timeout_ms, arg);
    if (!op)
        return HR_ENOMEM;
    op->cb.req = cb;
    snprintf(reply, sizeof(reply), "%s.%llu", c->inbox, (unsigned long long)op->id);
    return op_start(c, op, publish(c, topic, data, len, reply, NULL, 0, NULL));
}

int hr_client_flush(hr_client_t *c, hr_done_cb cb, void *arg)
{
    if (!c || !cb)
        return HR_EINVAL;
    if (c->state == HR_STATE_CLOSING)
        return HR_ECLOSED;
    if (!hr__connected(c))
        return HR_ENOTCONN;
    hr__op_t *op = op_new(c, HR__OP_FLUSH, ++c->ping_id, 0, arg);
    if (!op)
        return HR_ENOMEM;
    op->cb.done = cb;
    return op_start(c, op, hr__send_ping(c, op->id));
}
