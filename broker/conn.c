/* SPDX-License-Identifier: MIT */
/* Connections: lifecycle, reading, output queues and answers in order, closing, sweeps. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "policy.h"
#include "proxy.h"
#include "server.h"
#include "tls.h"

#define IOV_BATCH 1024           /* iovecs per write (IOV_MAX on Linux) */
#define WRITE_BATCH (256 * 1024) /* bytes per write */
#define CLOSE_LINGER_MS 5000     /* how long a closing connection may take to drain */
#define FIN_LINGER_MS 1000       /* after our FIN, how long the peer has to close */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void conn_flush(hr_conn_t *c);
static void replies_orphan(hr_conn_t *c);

/* ---- output queue ---------------------------------------------------------- */

static void mark_pending(hr_conn_t *c)
{
    if (c->flags & (HR_C_PENDING | HR_C_CLOSED))
        return;
    c->flags |= HR_C_PENDING;
    c->pending_next = c->srv->pending;
    c->srv->pending = c;
}

static int oq_push(hr_conn_t *c, hr_msg_t *m, const uint8_t *hdr, size_t hlen)
{
    int r = hr__oq_push(&c->out, m, hdr, hlen);
    if (r == HR_OK)
        mark_pending(c);
    return r;
}

void hr__conn_kick(hr_conn_t *c)
{
    mark_pending(c);
}

static void oq_advance(hr_conn_t *c, size_t n)
{
    if (c->flags & HR_C_PROTOCOL)
        c->srv->stats.bytes_out += n;
    else
        c->srv->stats.http_bytes_out += n;
    hr__oq_advance(&c->out, n);
}

/* ---- closing --------------------------------------------------------------- */

static void on_close(uv_handle_t *h)
{
    hr_conn_t *c = h->data;
    hr_server_t *s = c->srv;
    if (c->flags & HR_C_PENDING) { /* rare: closed after being queued for flush */
        hr_conn_t **pp = &s->pending;
        while (*pp && *pp != c)
            pp = &(*pp)->pending_next;
        if (*pp)
            *pp = c->pending_next;
    }
    hr__subs_free(c);
    hr__policy_free(c);
    replies_orphan(c);
    hr__oq_free(&c->out);
    hr_buf_destroy(&c->in);
    hr__auth_conn_free(c);
    hr__limits_conn_free(c);
    hr__proxy_conn_free(c);
    if (c->tp->on_free)
        c->tp->on_free(c);
    hr__tls_free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->flags & HR_C_PROTOCOL)
        s->stats.conns[c->tp->kind]--;
    if (s->nworkers > 1)
        hr__map_del(&s->conns_by_id, &c->id, sizeof(c->id));
    HR_LOG(HR_LOG_DEBUG, c->id, "closed");
    free(c);
    if (s->shutting_down && s->nconns == 0)
        hr__server_shutdown(s); /* finishes: every client is gone */
}

void hr__conn_close_now(hr_conn_t *c)
{
    if (c->flags & HR_C_CLOSED)
        return;
    hr__subs_drop(c);
    c->flags |= HR_C_CLOSED | HR_C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    hr_conn_t *c = req->data;
    free(req);
    if (c->flags & HR_C_CLOSED)
        return;
    if (status < 0) {
        hr__conn_close_now(c);
        return;
    }
    /* Lingering close: read and discard until the peer closes (or the
     * deadline passes), so unread input cannot turn our FIN into a RST that
     * would destroy the ERR frame before the client reads it. */
    uint64_t fin_deadline = hr__now_ms(c->srv) + FIN_LINGER_MS;
    if (fin_deadline < c->deadline)
        c->deadline = fin_deadline;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        hr__conn_close_now(c);
}

/* Output drained on a closing connection: half-close, then linger. */
static void begin_shutdown(hr_conn_t *c)
{
    if (c->flags & (HR_C_SHUT | HR_C_CLOSED))
        return;
    c->flags |= HR_C_SHUT;
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (!req) {
        hr__conn_close_now(c);
        return;
    }
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        hr__conn_close_now(c);
    }
}

int hr__conn_send_raw(hr_conn_t *c, const void *p, size_t n)
{
    if (n == 0)
        return HR_OK; /* an empty entry would never be written, and never leave the queue */
    hr_msg_t *m = hr_msg_new(0, p, n);
    if (!m)
        return HR_ENOMEM;
    int r = oq_push(c, m, NULL, 0);
    hr_msg_unref(&m);
    return r;
}

/*
 * Charges output just queued: past out-soft the soft-limit clock starts, and
 * past half of it the broker stops reading the connection until its output
 * drains (check_backpressure()), so a client that sends faster than it reads
 * the answers (deliveries, ACKs, PONGs, ERRs) is slowed down instead of
 * having them queued without bound.
 */
static void charge_output(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    size_t q = hr__oq_charge(&c->out);
    if (q > (size_t)s->cfg.out_soft && !c->soft_since)
        c->soft_since = hr__now_ms(s);
    c->sink.hwm = (size_t)s->cfg.out_soft / 2 + 1; /* follows a reload of out-soft */
    c->sink.lwm = c->sink.hwm / 4;
    if (!hr__stage_set_fill(&c->sink, q))
        hr__conn_hold(c, HR_C_PAUSED);
}

hr_msg_t *hr__conn_frame_scratch(hr_conn_t *c)
{
    hr_buf_t *b = &c->srv->scratch;
    hr_msg_t *m = hr_msg_new(HR_WS_HDR_MAX, b->base, b->len);
    hr_buf_reset(b);
    if (m)
        hr_msg_frame(m, c->tp->framing);
    return m;
}

int hr__conn_send_scratch(hr_conn_t *c)
{
    hr_msg_t *m = hr__conn_frame_scratch(c);
    if (!m)
        return HR_ENOMEM;
    int r = oq_push(c, m, NULL, 0);
    hr_msg_unref(&m);
    if (r == HR_OK)
        charge_output(c);
    return r;
}

/* The wire code of `status` (1..13), counted in the per-code error metrics. */
static unsigned count_err(hr_server_t *s, int status)
{
    unsigned code = hr_status_to_wire(status);
    if (code < sizeof(s->stats.errors) / sizeof(s->stats.errors[0]))
        s->stats.errors[code]++;
    return code;
}

/* ---- answers in order ------------------------------------------------------- */

/*
 * Frames on one connection are processed in order, and a client that needs
 * to know its earlier frames were handled sends PING and waits for the
 * PONG. With an engine that answers later, a PUB's ACK (or a SUB's replay)
 * can complete after later frames were read; their answers then wait here,
 * in arrival order, behind the first one not answered yet. With nothing
 * outstanding (always, with the in-memory engine) answers go straight out.
 */
struct hr_reply_s {
    struct hr_reply_s *next;
    hr_conn_t *c;           /* NULL once the connection is gone: the completion frees the slot */
    hr_msg_t *body;         /* the framed answer, or NULL (a replay barrier, or not answered yet) */
    void (*run)(void *arg); /* instead of a body: runs when the slot's turn comes */
    void *arg;
    int done;
};

static void replies_drain(hr_conn_t *c)
{
    while (c->rq_head && c->rq_head->done) {
        hr_reply_t *r = c->rq_head;
        c->rq_head = r->next;
        if (!c->rq_head)
            c->rq_tail = NULL;
        if (r->body && !(c->flags & HR_C_CLOSING)) {
            if (oq_push(c, r->body, NULL, 0) == HR_OK)
                charge_output(c);
        }
        hr_msg_unref(&r->body);
        if (r->run) { /* its answers go out now, ahead of the later ones still queued */
            c->flags |= HR_C_TURN;
            r->run(r->arg);
            c->flags &= ~(uint32_t)HR_C_TURN;
        }
        free(r);
    }
    if (!c->rq_head && (c->flags & HR_C_FAILING)) {
        c->flags &= ~(uint32_t)HR_C_FAILING;
        hr__conn_fail(c, c->fail_status, c->fail_msg);
    }
}

void hr__conn_fail_input(hr_conn_t *c, int status, const char *msg)
{
    if (c->flags & (HR_C_CLOSING | HR_C_FAILING))
        return;
    if (!c->rq_head) {
        hr__conn_fail(c, status, msg);
        return;
    }
    c->flags |= HR_C_FAILING;
    c->fail_status = status;
    c->fail_msg = msg;
    c->deadline = hr__now_ms(c->srv) + CLOSE_LINGER_MS;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

hr_conn_t *hr__reply_conn(const hr_reply_t *r)
{
    return r->c;
}

hr_reply_t *hr__conn_reply_later(hr_conn_t *c)
{
    hr_reply_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->c = c;
    if (c->rq_tail)
        c->rq_tail->next = r;
    else
        c->rq_head = r;
    c->rq_tail = r;
    return r;
}

void hr__reply_set_run(hr_reply_t *r, void (*run)(void *arg), void *arg)
{
    r->run = run;
    r->arg = arg;
}

void hr__conn_reply_fill(hr_reply_t *r, int with_scratch)
{
    hr_conn_t *c = r->c;
    if (!c) { /* the connection went away first (the caller encoded nothing) */
        if (r->run)
            r->run(r->arg); /* lets the owner of arg clean up */
        free(r);
        return;
    }
    if (with_scratch)
        r->body = hr__conn_frame_scratch(c);
    r->done = 1;
    replies_drain(c);
}

int hr__conn_answer(hr_conn_t *c)
{
    if (!c->rq_head || (c->flags & HR_C_TURN))
        return hr__conn_send_scratch(c);
    hr_reply_t *r = hr__conn_reply_later(c);
    if (!r) {
        hr_buf_reset(&c->srv->scratch);
        return HR_ENOMEM;
    }
    hr__conn_reply_fill(r, 1);
    return HR_OK;
}

static void replies_orphan(hr_conn_t *c)
{
    hr_reply_t *r = c->rq_head;
    while (r) {
        hr_reply_t *next = r->next;
        if (r->done) {
            hr_msg_unref(&r->body);
            if (r->run)
                r->run(r->arg);
            free(r);
        } else {
            r->c = NULL; /* its completion is still to come and frees it */
            r->next = NULL;
        }
        r = next;
    }
    c->rq_head = c->rq_tail = NULL;
}

static void send_err(hr_conn_t *c, int status, const char *msg, int has_ref, uint64_t ref)
{
    unsigned code = count_err(c->srv, status);
    if (hr_enc_err(&c->srv->scratch, code, msg, has_ref, ref) == HR_OK)
        hr__conn_answer(c);
}

void hr__conn_err(hr_conn_t *c, int status, const char *msg, int has_ref, uint64_t ref)
{
    if (c->flags & HR_C_CLOSING)
        return;
    HR_LOG(HR_LOG_DEBUG, c->id, "ERR %u: %s", hr_status_to_wire(status), msg);
    send_err(c, status, msg, has_ref, ref);
}

void hr__conn_fail(hr_conn_t *c, int status, const char *msg)
{
    hr_server_t *s = c->srv;
    if (c->flags & HR_C_CLOSING)
        return;
    unsigned code = hr_status_to_wire(status);
    int quiet = status == HR_OK || status == HR_ESHUTDOWN;
    if (status == HR_OK)
        HR_LOG(HR_LOG_DEBUG, c->id, "closing: %s", msg);
    else if (quiet || hr__limits_log_budget(s)) /* floods must not flood the log */
        HR_LOG(quiet ? HR_LOG_DEBUG : HR_LOG_INFO, c->id, "closing: ERR %u: %s", code, msg);
    /* Subscriptions stay indexed until the close: this may run in the middle
     * of a fan-out over the very list they are in. Deliveries skip CLOSING
     * connections and queue groups pick another member. */
    if (status == HR_ESLOW) {
        s->stats.slow_consumers++;
        hr__oq_drop_unsent(&c->out);
    }
    /* The goodbye goes out now, ahead of answers still waiting for the engine. */
    replies_orphan(c);
    if (status != HR_OK && (c->flags & HR_C_PROTOCOL)) {
        count_err(s, status);
        if (hr_enc_err(&s->scratch, code, msg, 0, 0) == HR_OK)
            hr__conn_send_scratch(c);
    } else if (status != HR_OK) {
        count_err(s, status);
    }
    if (c->tp->on_closing && (!c->tls || hr__tls_ready(c))) /* no goodbye before TLS is up */
        c->tp->on_closing(c, status);
    c->flags |= HR_C_CLOSING;
    c->deadline = hr__now_ms(s) +
                  (status == HR_ESHUTDOWN ? (uint64_t)s->cfg.shutdown_timeout_ms : CLOSE_LINGER_MS);
    uv_read_stop((uv_stream_t *)&c->tcp);
    mark_pending(c);
}

/*
 * An engine that answers later lets a client have many publishes and
 * replays outstanding; past OPS_MAX of them its input is paused until half
 * have been answered, so what waits for the engine stays bounded.
 */
#define OPS_MAX 1024

/* Every reason reading may be paused for; reading resumes when none is left. */
#define READ_HOLDS (HR_C_PAUSED | HR_C_OPS_WAIT | HR_C_CONGESTED | HR_C_STAGE_WAIT)

void hr__conn_hold(hr_conn_t *c, uint32_t why)
{
    if (!(c->flags & (why | HR_C_CLOSING))) {
        if (!(c->flags & READ_HOLDS))
            uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags |= why;
    }
}

static void unhold(hr_conn_t *c, uint32_t why)
{
    if (!(c->flags & why))
        return;
    c->flags &= ~why;
    if (!(c->flags & (READ_HOLDS | HR_C_CLOSING | HR_C_FAILING)))
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void hr__server_release(hr_server_t *s, uint32_t why)
{
    for (hr_conn_t *c = s->conns; c; c = c->next)
        unhold(c, why);
}

void hr__conn_congest(hr_conn_t *c)
{
    hr__conn_hold(c, HR_C_CONGESTED);
}

void hr__server_uncongest(hr_server_t *s)
{
    hr__server_release(s, HR_C_CONGESTED);
}

void hr__conn_ops_begin(hr_conn_t *c)
{
    if (++c->inflight_ops >= OPS_MAX)
        hr__conn_hold(c, HR_C_OPS_WAIT);
}

void hr__conn_ops_end(hr_conn_t *c)
{
    c->inflight_ops--;
    if (c->inflight_ops <= OPS_MAX / 2)
        unhold(c, HR_C_OPS_WAIT);
}

/* ---- writing --------------------------------------------------------------- */

static void check_backpressure(hr_conn_t *c)
{
    size_t hwm = (size_t)c->srv->cfg.out_soft / 2;
    hr__stage_set_fill(&c->sink, hr__oq_charge(&c->out)); /* on_sink_drain() once drained */
    if (hr__oq_charge(&c->out) <= (size_t)c->srv->cfg.out_soft)
        c->soft_since = 0;
    if (c->park && hr__oq_charge(&c->out) <= hwm / 4 && !(c->flags & HR_C_CLOSING))
        hr__policy_release(c); /* drained: GAP frames, then what a policy parked */
}

static void on_write(uv_write_t *req, int status)
{
    hr_conn_t *c = req->data;
    free(req);
    c->wreq = NULL;
    if (status < 0) { /* canceled by close, or the peer is gone */
        c->out.inflight = 0;
        hr__conn_close_now(c);
        return;
    }
    oq_advance(c, c->out.inflight);
    c->out.inflight = 0;
    conn_flush(c);
}

static void tls_write_done(hr_conn_t *c, int status)
{
    if (status < 0)
        hr__conn_close_now(c);
    else
        conn_flush(c);
}

/*
 * TLS: the queue is encrypted a batch at a time (iovecs gathered into full
 * records) and the ciphertext written like plain bytes, one write in flight.
 * A closing connection says close_notify before its FIN; one whose
 * handshake never finished sends only what TLS has to say (an alert).
 */
static void tls_flush(hr_conn_t *c)
{
    hr_outq_t *q = &c->out;
    uv_buf_t iov[IOV_BATCH];
    size_t total;
    for (;;) {
        int r = hr__tls_send(c, tls_write_done);
        if (r == HR_EAGAIN) {
            check_backpressure(c);
            return;
        }
        if (r != HR_OK) {
            hr__conn_close_now(c);
            return;
        }
        if (q->n && hr__tls_ready(c)) {
            int k = hr__oq_iov(q, iov, IOV_BATCH, WRITE_BATCH, &total);
            if (hr__tls_encrypt(c, iov, k) != HR_OK) {
                hr__conn_close_now(c);
                return;
            }
            oq_advance(c, total);
            continue;
        }
        if (!(c->flags & HR_C_CLOSING) || !hr__tls_goodbye(c))
            break;
    }
    check_backpressure(c);
    if (c->flags & HR_C_CLOSING)
        begin_shutdown(c);
}

/*
 * Writes as much of the queue as the socket takes: uv_try_write first (no
 * request, no callback, bytes released at once), and only the remainder
 * through one uv_write; while that is in flight nothing else is written, so
 * the queue order is the wire order.
 */
static void conn_flush(hr_conn_t *c)
{
    hr_outq_t *q = &c->out;
    uv_buf_t iov[IOV_BATCH];
    size_t total;
    if (q->inflight || c->wreq || (c->flags & HR_C_CLOSED))
        return;
    if (c->tls) {
        tls_flush(c);
        return;
    }
    while (q->n) {
        int k = hr__oq_iov(q, iov, IOV_BATCH, WRITE_BATCH, &total);
        int r = uv_try_write((uv_stream_t *)&c->tcp, iov, (unsigned)k);
        if (r == UV_EAGAIN)
            r = 0;
        if (r < 0) {
            hr__conn_close_now(c);
            return;
        }
        oq_advance(c, (size_t)r);
        if ((size_t)r < total) {
            /* The rest of this batch goes to uv_write: skip what was written in
             * the iovecs already built (the entries they point at stay queued). */
            int i = 0;
            size_t done = (size_t)r;
            while (done >= iov[i].len) {
                done -= iov[i].len;
                i++;
            }
            iov[i].base += done;
            iov[i].len -= done;
            total -= (size_t)r;
            c->wreq = malloc(sizeof(*c->wreq));
            if (!c->wreq) {
                hr__conn_close_now(c);
                return;
            }
            c->wreq->data = c;
            if (uv_write(c->wreq, (uv_stream_t *)&c->tcp, iov + i, (unsigned)(k - i), on_write) !=
                0) {
                free(c->wreq);
                c->wreq = NULL;
                hr__conn_close_now(c);
                return;
            }
            q->inflight = total;
            check_backpressure(c);
            return;
        }
    }
    check_backpressure(c);
    if (c->flags & HR_C_CLOSING)
        begin_shutdown(c);
}

void hr__conn_flush_all(hr_server_t *s)
{
    while (s->pending) {
        hr_conn_t *c = s->pending;
        s->pending = c->pending_next;
        c->pending_next = NULL;
        c->flags &= ~(uint32_t)HR_C_PENDING;
        conn_flush(c);
    }
}

/* ---- reading --------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    hr_conn_t *c = h->data;
    (void)hint;
    if (c->tp->read_buf && !c->tls && c->tp->read_buf(c, buf))
        return;
    *buf = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    hr_conn_t *c = st->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            HR_LOG(HR_LOG_DEBUG, c->id, "read error: %s", uv_strerror((int)nread));
        if (c->proxy)
            hr__proxy_cut(c); /* logs a header the peer did not finish */
        hr__conn_close_now(c);
        return;
    }
    if (nread == 0 || (c->flags & HR_C_CLOSING))
        return; /* lingering close: discard */
    if (c->flags & HR_C_PROTOCOL)
        c->srv->stats.bytes_in += (uint64_t)nread;
    else
        c->srv->stats.http_bytes_in += (uint64_t)nread;
    if (c->proxy && hr__proxy_in_header(c)) {
        hr__proxy_data(c, buf->base, (size_t)nread); /* raw bytes: the header comes before TLS */
        return;
    }
    if (buf->base != c->srv->rbuf) { /* the transport's own buffer (never with TLS: on_alloc) */
        c->tp->read_done(c, (size_t)nread);
        return;
    }
    hr__conn_input(c, buf->base, (size_t)nread);
}

void hr__conn_input(hr_conn_t *c, const char *p, size_t n)
{
    if (c->tls)
        hr__tls_read(c, p, n); /* ciphertext: its plaintext goes on to the transport */
    else
        c->tp->on_data(c, p, n);
}

/*
 * Client ids are unique across the workers of one broker: worker w of n
 * hands out w, w + n, w + 2n, ... (plus one, so 0 never names a client),
 * from a counter that a respawned worker starts past what its previous
 * incarnation can have used (next_id's starting value).
 */
static void free_unlisted(uv_handle_t *h)
{
    free(h->data);
}

/*
 * The connection's output queue is the last stage of every delivery chain
 * (stage.h): its fill is the pending output bytes and its mark half of
 * out-soft. Full, it stops reading the socket (charge_output()); drained to a
 * quarter of its mark, reading resumes. Plain deliveries call
 * hr__conn_deliver() directly; transform chains write hr_outitem_t items.
 */
static void sink_write(hr_stage_t *st, hr_item_t *it)
{
    hr_outitem_t *o = (hr_outitem_t *)it;
    hr__conn_deliver((hr_conn_t *)((char *)st - offsetof(hr_conn_t, sink)), o->sid, o->m);
}

static void sink_destroy(hr_stage_t *st)
{
    (void)st; /* part of the connection */
}

static const hr_stage_ops_t sink_ops = {"output", sink_write, NULL, sink_destroy, NULL};

static void on_sink_drain(void *arg, hr_stage_t *st)
{
    (void)st;
    unhold(arg, HR_C_PAUSED);
}

hr_conn_t *hr__conn_new(hr_server_t *s, const hr_transport_t *tp)
{
    hr_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->srv = s;
    c->tp = tp;
    hr__stage_init(&c->sink, &sink_ops, (size_t)s->cfg.out_soft / 2 + 1);
    c->sink.on_drain = on_sink_drain;
    c->sink.arg = c;
    c->id = s->next_id++ * s->nworkers + s->worker + 1;
    if (s->nworkers > 1 && hr__map_put(&s->conns_by_id, &c->id, sizeof(c->id), c) != 0) {
        uv_close((uv_handle_t *)&c->tcp, free_unlisted);
        return NULL;
    }
    c->idle_since = hr__now_ms(s);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (tp->ready_at_accept)
        hr__conn_protocol(c);
    return c;
}

/* Only connections that speak Herald count as connections of their transport:
 * an HTTP request on the WebSocket port (a scrape) is counted as a request. */
void hr__conn_protocol(hr_conn_t *c)
{
    c->flags |= HR_C_PROTOCOL;
    c->srv->stats.conns[c->tp->kind]++;
    c->srv->stats.conns_total[c->tp->kind]++;
}

void hr__conn_start(hr_conn_t *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    hr__proxy_accept(c);
    if (!(c->flags & HR_C_CLOSED) && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        hr__conn_close_now(c);
}

/* ---- delivery ---------------------------------------------------------------- */

void hr__conn_deliver(hr_conn_t *c, uint64_t sid, hr_msg_t *m)
{
    uint8_t hdr[HR_DELIVERY_HDR_MAX];
    hr_server_t *s = c->srv;
    if (c->flags & HR_C_CLOSING)
        return;
    /* Backlogged, topics with a slow-consumer policy lose messages instead
     * of closing the connection (policy.c); with no policy this is one test. */
    if (s->npolicies && (c->park || hr__oq_charge(&c->out) > (size_t)s->cfg.out_soft / 2) &&
        hr__policy_deliver(c, sid, m))
        return;
    size_t hlen = hr_msg_delivery_header(m, sid, c->tp->framing, hdr);
    if (oq_push(c, m, hdr, hlen) != HR_OK) {
        hr__conn_fail(c, HR_ESLOW, "slow consumer: out of memory for pending output");
        return;
    }
    s->stats.deliveries++;
    if (hr__oq_charge(&c->out) > (size_t)s->cfg.out_hard) {
        hr__conn_fail(c, HR_ESLOW, "slow consumer: pending output over out-hard");
        return;
    }
    charge_output(c);
}

/* ---- timers ------------------------------------------------------------------ */

void hr__conn_sweep(hr_conn_t *c, uint64_t now)
{
    hr_server_t *s = c->srv;
    if (c->flags & HR_C_CLOSED)
        return;
    if (c->flags & HR_C_CLOSING) {
        if (now >= c->deadline)
            hr__conn_close_now(c);
        return;
    }
    if (c->flags & HR_C_FAILING) { /* the answers it waits for are not coming */
        if (now >= c->deadline) {
            c->flags &= ~(uint32_t)HR_C_FAILING;
            hr__conn_fail(c, c->fail_status, c->fail_msg);
        }
        return;
    }
    if (c->proxy && hr__proxy_sweep(c, now)) /* the PROXY header comes before TLS */
        return;
    if (c->tls && hr__tls_sweep(c, now))
        return;
    if (c->tp->on_sweep && c->tp->on_sweep(c, now))
        return;
    if (!(c->flags & HR_C_PROTOCOL))
        return;
    if (!(c->flags & HR_C_HELLO)) {
        if (now - c->idle_since >= (uint64_t)s->cfg.hello_timeout_ms)
            hr__conn_fail(c, HR_EPROTO, "no HELLO within hello-timeout-ms");
        return;
    }
    if (hr__auth_expired(c)) {
        hr__conn_fail(c, HR_EAUTH, "token expired");
        return;
    }
    if (c->soft_since && now - c->soft_since >= (uint64_t)s->cfg.out_soft_ms) {
        hr__conn_fail(c, HR_ESLOW, "slow consumer: pending output over out-soft for too long");
        return;
    }
    if (now - c->idle_since >= (uint64_t)s->cfg.heartbeat_ms) {
        if (c->pings >= 2) {
            hr__conn_fail(c, HR_EHEARTBEAT, "heartbeat timeout: two pings unanswered");
            return;
        }
        c->pings++;
        c->idle_since = now;
        if (hr_enc_ping(&s->scratch, c->pings) == HR_OK)
            hr__conn_send_scratch(c);
    }
}
