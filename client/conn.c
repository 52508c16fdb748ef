/* SPDX-License-Identifier: MIT */
/* libherald connection: connect, reconnect, the read path and frame dispatch, output. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"

#define READ_CHUNK 65536

static void write_cb(uv_write_t *req, int status);
static void attempt_failed(hr_client_t *c, int status);
static void ping_cb(uv_timer_t *t);

/* ---- output ------------------------------------------------------------- */

/* Writes everything queued in `out` with one uv_write, at most one in flight. */
static void flush_out(hr_client_t *c)
{
    hr__conn_t *conn = c->conn;
    if (!conn || conn->writing || c->out.len == 0 || (conn->tls && !hr__tls_ready(conn)))
        return; /* over TLS, frames wait for the handshake (then HELLO flushes them) */
    int r = c->tp->frame_out(c, conn);
    if (r != HR_OK) {
        hr__conn_lost(c, r);
        return;
    }
    hr_buf_reset(&c->out);
    if (conn->tls && (r = hr__tls_seal(c, conn, &conn->wbuf)) != HR_OK) {
        hr__conn_lost(c, r);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)conn->wbuf.base, (unsigned)conn->wbuf.len);
    r = uv_write(&conn->wreq, (uv_stream_t *)&conn->tcp, &b, 1, write_cb);
    if (r < 0) {
        hr__conn_lost(c, r);
        return;
    }
    conn->writing = 1;
}

static void write_cb(uv_write_t *req, int status)
{
    hr__conn_t *conn = req->data;
    hr_client_t *c = conn->c;
    conn->writing = 0;
    hr_buf_reset(&conn->wbuf);
    if (!c)
        return;
    if (status < 0) {
        hr__conn_lost(c, status);
        return;
    }
    flush_out(c);
    hr__drain_check(c);
}

static void prep_cb(uv_prepare_t *h)
{
    hr_client_t *c = h->data;
    uv_prepare_stop(h);
    flush_out(c);
}

/* Bytes written on a request of their own, beside the data writes: the WebSocket
 * handshake and control frames, TLS handshake messages. */
typedef struct raw_write_s {
    uv_write_t req;
    hr_buf_t buf;
} raw_write_t;

static void raw_written(uv_write_t *req, int status)
{
    raw_write_t *w = req->data;
    hr_buf_destroy(&w->buf);
    free(w);
}

/* Writes the bytes of `b` as they are, taking them. */
static int write_bytes(hr__conn_t *conn, hr_buf_t *b)
{
    if (!b->len)
        return HR_OK;
    raw_write_t *w = malloc(sizeof(*w));
    if (!w)
        return HR_ENOMEM;
    w->buf = *b;
    hr_buf_init(b);
    uv_buf_t ub = uv_buf_init((char *)w->buf.base, (unsigned)w->buf.len);
    w->req.data = w;
    int r = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &ub, 1, raw_written);
    if (r < 0) {
        hr_buf_destroy(&w->buf);
        free(w);
    }
    return r;
}

int hr__conn_write(hr_client_t *c, hr__conn_t *conn, hr_buf_t *b)
{
    if (conn->tls) {
        int r = hr__tls_seal(c, conn, b);
        if (r != HR_OK)
            return r;
    }
    return write_bytes(conn, b);
}

/* Frames are batched: the write happens once per loop turn, before polling. */
void hr__want_flush(hr_client_t *c)
{
    if (c->conn && c->out.len && !uv_is_active((uv_handle_t *)&c->prep))
        uv_prepare_start(&c->prep, prep_cb);
}

int hr__send_unsub(hr_client_t *c, uint64_t sid)
{
    HR__ENCODE(&c->out, hr_enc_unsub(&c->out, sid));
    hr__want_flush(c);
    return HR_OK;
}

int hr__send_ping(hr_client_t *c, uint64_t id)
{
    HR__ENCODE(&c->out, hr_enc_ping(&c->out, id));
    hr__want_flush(c);
    return HR_OK;
}

static int send_pong(hr_client_t *c, uint64_t id)
{
    HR__ENCODE(&c->out, hr_enc_pong(&c->out, id));
    hr__want_flush(c);
    return HR_OK;
}

int hr__send_hello(hr_client_t *c)
{
    HR__ENCODE(&c->out, hr_enc_hello(&c->out, c->name, c->token, c->o.echo));
    hr__want_flush(c);
    return HR_OK;
}

/* ---- inbound frames ----------------------------------------------------- */

static void on_err(hr_client_t *c, const hr_frame_t *f)
{
    char d[HR__DETAIL_MAX];
    int status = hr_status_from_wire((unsigned)f->code);
    int n = f->message.n > 250 ? 250 : (int)f->message.n;
    int fatal = 0;
    snprintf(d, sizeof(d), "ERR %llu: %.*s", (unsigned long long)f->code, n, f->message.p);
    switch (f->code) {
    case 1:
    case 2:
    case 3:
    case 6:
    case 9:
    case 11:
        c->last_err = status; /* the broker closes the connection after this */
        fatal = 1;
        /* A TLS port of the broker answers a plaintext HELLO with this ERR 1. */
        if (f->code == 1 && !c->welcomed && strstr(d, HR__TLS_PORT_HINT))
            c->last_err = HR_ETLSPORT;
        break;
    default:
        break;
    }
    if (f->flags & HR_F_REF) {
        hr__op_t *op = hr__op_find(c, HR__OP_ACK, f->sid);
        if (op) {
            hr__op_unlink(c, op);
            hr__op_complete(c, op, status, 0, NULL);
            hr__drain_check(c);
            return;
        }
        hr_sub_t *s = hr__sub_find(c, f->sid);
        if (s && !s->dead && !fatal && f->code != 10 && f->code != 8) {
            /* An ERR that leaves the connection open and is neither a history gap
             * nor the answer to an UNSUB refuses the SUB (4, 5, 7, 12, ...). */
            s->refused = 1;
            if (s->confirm) {
                op = s->confirm;
                hr__op_unlink(c, op);
                hr__op_complete(c, op, status, 0, NULL);
                hr__drain_check(c);
                return;
            }
        }
        hr__report(c, status, s && !s->dead ? s : NULL, d);
        return;
    }
    hr__report(c, status, NULL, d);
}

/* Takes the WELCOME's epoch; a change (or a broker that stops sending one) bumps epoch_gen. */
static void take_epoch(hr_client_t *c, const hr_frame_t *f)
{
    int has = (f->flags & HR_F_EPOCH) != 0;
    size_t n = has ? f->epoch.n : 0;
    if (has == c->has_epoch && strlen(c->epoch) == n &&
        (!n || memcmp(c->epoch, f->epoch.p, n) == 0))
        return;
    if (has)
        memcpy(c->epoch, f->epoch.p, n);
    c->epoch[n] = '\0';
    c->has_epoch = has;
    c->epoch_gen++;
}

static void on_welcome(hr_client_t *c, const hr_frame_t *f)
{
    if (c->welcomed) {
        hr__conn_lost(c, HR_EPROTO);
        return;
    }
    uv_timer_stop(&c->t_connect);
    c->welcomed = 1;
    c->last_err = 0;
    c->attempts = 0;
    c->pings_out = 0;
    c->client_id = f->client_id;
    c->max_payload = f->max_payload;
    c->max_frame = f->max_frame;
    c->heartbeat_ms = f->heartbeat_ms;
    take_epoch(c, f);
    for (hr_sub_t *s = c->subs_head; s; s = s->next)
        if (!s->dead && !s->drained && !s->refused)
            hr__sub_resume(c, s);
    hr__confirm_pings(c);
    if (c->pend.len) {
        if (hr_buf_append(&c->out, c->pend.base, c->pend.len) != HR_OK) {
            hr__conn_lost(c, HR_ENOMEM);
            return;
        }
        hr_buf_reset(&c->pend);
    }
    if (c->draining)
        hr__drain_send(c);
    hr__want_flush(c);
    if (c->o.ping_interval_ms)
        uv_timer_start(&c->t_ping, ping_cb, c->o.ping_interval_ms, c->o.ping_interval_ms);
    int first = !c->ever_connected;
    c->ever_connected = 1;
    c->stats.reconnects += !first;
    if (c->state != HR_STATE_DRAINING)
        c->state = HR_STATE_CONNECTED;
    hr__event(c, first ? HR_EVENT_CONNECTED : HR_EVENT_RECONNECTED, HR_OK);
}

static void handle_frame(hr_client_t *c, const hr_frame_t *f)
{
    c->pings_out = 0; /* any frame proves the link alive */
    if (!c->welcomed && f->op != HR_OP_WELCOME && f->op != HR_OP_ERR) {
        hr__conn_lost(c, HR_EPROTO);
        return;
    }
    switch (f->op) {
    case HR_OP_WELCOME:
        on_welcome(c, f);
        break;
    case HR_OP_MSG:
        hr__on_msg(c, f);
        break;
    case HR_OP_ACK: {
        hr__op_t *op = hr__op_find(c, HR__OP_ACK, f->id);
        if (op) {
            hr__op_unlink(c, op);
            hr__op_complete(c, op, HR_OK, f->seq, NULL);
            hr__drain_check(c);
        }
        break;
    }
    case HR_OP_ERR:
        on_err(c, f);
        break;
    case HR_OP_GAP:
        hr__on_gap(c, f);
        break;
    case HR_OP_BATCH: { /* a subscription's messages, each delivered as a MSG of its own */
        hr_batch_iter_t it;
        hr_frame_t m;
        hr_batch_iter_init(&it, f);
        while (hr_batch_iter_next(&it, &m))
            hr__on_msg(c, &m);
        break;
    }
    case HR_OP_PING:
        send_pong(c, f->id);
        break;
    case HR_OP_PONG:
        hr__on_pong(c, f->id);
        break;
    default:
        hr__conn_lost(c, HR_EPROTO);
        break;
    }
}

/* ---- read path ---------------------------------------------------------- */

/*
 * Reads go straight into the spare capacity of `in`. Over TLS that is
 * ciphertext, which the pump copies before the plaintext takes its place.
 */
static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    hr__conn_t *conn = h->data;
    hr_client_t *c = conn->c;
    if (!c || hr_buf_reserve(&c->in, READ_CHUNK) != HR_OK) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)c->in.base + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

/* TLS input in progress: the connection and what TLS has to send back. */
typedef struct tls_io_s {
    hr__conn_t *conn;
    hr_buf_t wire;
} tls_io_t;

/*
 * The TLS handshake is done: its last flight goes out, then the transport
 * starts its session (HELLO, or the upgrade request) behind it.
 */
static int tls_up(hr_client_t *c, void *arg)
{
    tls_io_t *io = arg;
    int r = write_bytes(io->conn, &io->wire);
    return r == HR_OK ? c->tp->start(c, io->conn) : r;
}

/* Decrypts what arrived into `in` and sends what TLS has to say back. */
static int tls_read(hr_client_t *c, hr__conn_t *conn, const uint8_t *p, size_t n)
{
    tls_io_t io = {conn, {0}};
    hr_buf_init(&io.wire);
    int r = hr__tls_input(c, conn, p, n, &c->in, &io.wire, tls_up, &io);
    if (r == HR_OK && c->conn == conn)
        r = write_bytes(conn, &io.wire);
    hr_buf_destroy(&io.wire);
    return r;
}

/* Decodes and handles one frame body; a malformed one ends the connection. */
void hr__on_body(hr_client_t *c, const void *p, size_t n)
{
    hr_frame_t f;
    if (hr_frame_decode(p, n, 0, &f, NULL) != HR_OK) {
        hr__conn_lost(c, HR_EPROTO);
        return;
    }
    handle_frame(c, &f);
}

/*
 * The largest incoming frame body. WELCOME's max_frame bounds what the
 * broker accepts, and the broker accepts a PUB of exactly that size; the
 * MSG it makes of it carries a sid and a seq the PUB did not (up to 18
 * bytes) and, as a replay, `replay: true` (up to 9 more), so incoming
 * frames get that much slack.
 */
#define MSG_SLACK 64

size_t hr__max_frame(const hr_client_t *c)
{
    return c->max_frame ? c->max_frame + MSG_SLACK : HR__DEFAULT_MAX_FRAME;
}

/*
 * Frames are decoded in place from `in`; only a trailing partial frame is
 * kept for the next read. A frame's slices stay valid while it is handled,
 * even if a callback closes the connection: `in` is only reset when the
 * next connection starts.
 *
 * Over TLS the bytes that came with the end of the session (close_notify,
 * an alert) may also carry the broker's last frames, such as the ERR that
 * says why it closes: those frames are handled first, and the end of the
 * session is acted on after them.
 */
static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    hr__conn_t *conn = st->data;
    hr_client_t *c = conn->c;
    int end = HR_OK;
    if (!c)
        return;
    if (nread < 0) {
        hr__conn_lost(c, conn->tls ? hr__tls_lost(c, conn, (int)nread) : (int)nread);
        return;
    }
    if (conn->tls)
        end = tls_read(c, conn, c->in.base + c->in.len, (size_t)nread);
    else
        c->in.len += (size_t)nread; /* read straight into the spare capacity (alloc_cb) */
    size_t off = 0;
    while (c->conn == conn) {
        hr_slice_t body = {NULL, 0};
        size_t used = 0;
        int r = c->tp->next(c, conn, c->in.base + off, c->in.len - off, &body, &used);
        if (r == HR_EAGAIN)
            break;
        if (r != HR_OK) {
            hr__conn_lost(c, r);
            break;
        }
        off += used;
        if (body.p)
            hr__on_body(c, body.p, body.n);
    }
    if (c->conn != conn)
        return;
    hr_buf_consume(&c->in, off);
    if (end != HR_OK)
        hr__conn_lost(c, end);
}

/* ---- connection lifecycle ----------------------------------------------- */

static void conn_close_cb(uv_handle_t *h)
{
    hr__conn_t *conn = h->data;
    hr_buf_destroy(&conn->wbuf);
    hr__tls_free(conn);
    free(conn);
}

void hr__conn_detach(hr_client_t *c)
{
    hr__conn_t *conn = c->conn;
    if (!conn)
        return;
    c->conn = NULL;
    c->welcomed = 0;
    conn->c = NULL;
    uv_close((uv_handle_t *)&conn->tcp, conn_close_cb);
    uv_timer_stop(&c->t_connect);
    uv_timer_stop(&c->t_ping);
    uv_prepare_stop(&c->prep);
}

static int is_pub_frame(const uint8_t *body, size_t n)
{
    /* Every frame body is a short array: fixarray marker, then the opcode. */
    return n >= 2 && (body[0] & 0xf0) == 0x90 && body[1] == HR_OP_PUB;
}

/*
 * Publishes that never reached the socket are kept for the next connection;
 * everything else in `out` (SUB, UNSUB, PING, PONG) is rebuilt or obsolete.
 * Returns the ack ids that stay pending through `keep` (a list of ids).
 */
static void salvage_out(hr_client_t *c, uint64_t **keep, size_t *nkeep)
{
    size_t off = 0, cap = 0;
    *keep = NULL;
    *nkeep = 0;
    while (off < c->out.len) {
        hr_slice_t body;
        size_t used;
        if (hr_lp_next(c->out.base + off, c->out.len - off, SIZE_MAX, &body, &used) != HR_OK)
            break;
        if (is_pub_frame((const uint8_t *)body.p, body.n)) {
            hr_frame_t f;
            if (hr_buf_append(&c->pend, c->out.base + off, used) == HR_OK &&
                hr_frame_decode(body.p, body.n, 0, &f, NULL) == HR_OK && (f.flags & HR_F_ACK)) {
                if (*nkeep == cap) {
                    size_t ncap = cap ? cap * 2 : 16;
                    uint64_t *k = realloc(*keep, ncap * sizeof(*k));
                    if (k) {
                        *keep = k;
                        cap = ncap;
                    }
                }
                if (*nkeep < cap)
                    (*keep)[(*nkeep)++] = f.id;
            }
        }
        off += used;
    }
    hr_buf_reset(&c->out);
}

struct keep_set {
    uint64_t *ids;
    size_t n;
};

static int pick_lost(hr_client_t *c, hr__op_t *op, void *ctx)
{
    struct keep_set *k = ctx;
    if (op->kind == HR__OP_FLUSH && op->ponged)
        return 0; /* answered; only waiting for local delivery */
    if (op->kind == HR__OP_CONFIRM) {
        op->id = 0; /* the SUB goes out again after the next WELCOME, and a new PING */
        return 0;
    }
    if (op->kind != HR__OP_ACK)
        return 1;
    for (size_t i = 0; i < k->n; i++)
        if (k->ids[i] == op->id)
            return 0;
    return 1;
}

static uint32_t backoff_ms(hr_client_t *c)
{
    uint64_t d = c->o.reconnect_wait_ms;
    for (int i = 0; i < c->attempts && d < c->o.reconnect_wait_max_ms; i++)
        d *= 2;
    if (d > c->o.reconnect_wait_max_ms)
        d = c->o.reconnect_wait_max_ms;
    double j = c->o.reconnect_jitter;
    if (j > 0) {
        double u = (double)(hr__rand(c) >> 11) / (double)(1ULL << 53); /* [0,1) */
        d = (uint64_t)((double)d * (1.0 - j + 2.0 * j * u));
    }
    return (uint32_t)d;
}

static void reconnect_cb(uv_timer_t *t)
{
    hr__conn_start(t->data);
}

/* Schedules the next attempt, or gives up with `status` when out of attempts. */
static void retry_or_close(hr_client_t *c, int status)
{
    if (c->draining && !c->ever_connected) {
        hr__client_begin_close(c, status);
        return;
    }
    if (!c->o.reconnect || status == HR_EAUTH || status == HR_EHTTPPORT || status == HR_ETCPPORT ||
        status == HR_ETLSPORT || status == HR_EPLAINPORT ||
        (c->o.max_reconnect >= 0 && c->attempts >= c->o.max_reconnect)) {
        hr__client_begin_close(c, status);
        return;
    }
    uint32_t d = backoff_ms(c);
    c->attempts++;
    uv_timer_start(&c->t_reconnect, reconnect_cb, d, 0);
}

/* A connection attempt failed before its WELCOME. */
static void attempt_failed(hr_client_t *c, int status)
{
    if (c->last_err)
        status = c->last_err;
    c->last_err = 0;
    hr__conn_detach(c);
    if (!c->ever_connected && !c->o.retry_on_failed_connect) {
        hr__client_begin_close(c, status);
        return;
    }
    retry_or_close(c, status);
}

/*
 * The connection is gone. Publishes not yet written are kept for the next
 * one; acks of those already written, requests and flushes fail with
 * HR_EDISCONNECTED (the broker may or may not have processed them).
 */
void hr__conn_lost(hr_client_t *c, int status)
{
    if (!c->conn)
        return;
    if (!c->welcomed) {
        attempt_failed(c, status);
        return;
    }
    if (c->last_err)
        status = c->last_err;
    c->last_err = 0;
    hr__conn_detach(c);
    struct keep_set k;
    salvage_out(c, &k.ids, &k.n);
    c->drain_ponged = 0;
    if (c->state != HR_STATE_DRAINING)
        c->state = HR_STATE_RECONNECTING;
    hr__ops_finish(c, HR_EDISCONNECTED, pick_lost, &k);
    free(k.ids);
    if (c->state == HR_STATE_CLOSING)
        return;
    hr__event(c, HR_EVENT_DISCONNECTED, status);
    if (c->state == HR_STATE_CLOSING)
        return;
    retry_or_close(c, status);
}

static void connect_timeout_cb(uv_timer_t *t)
{
    hr_client_t *c = t->data;
    if (c->conn)
        attempt_failed(c, HR_ETIMEDOUT);
    else if (c->gai) {
        c->gai->data = NULL; /* its callback frees it */
        uv_cancel((uv_req_t *)c->gai);
        c->gai = NULL;
        attempt_failed(c, HR_ETIMEDOUT);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    hr__conn_t *conn = req->data;
    hr_client_t *c = conn->c;
    if (!c)
        return;
    if (status < 0) {
        attempt_failed(c, status);
        return;
    }
    hr_buf_reset(&c->in);
    hr_buf_reset(&c->out);
    hr_buf_reset(&c->frag);
    c->in_frag = c->frag_done = 0;
    uv_tcp_nodelay(&conn->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&conn->tcp, alloc_cb, read_cb);
    if (r == 0 && c->tp->secure) {
        r = hr__tls_new(c, conn);
        if (r == HR_OK)
            r = tls_read(c, conn, NULL, 0); /* the ClientHello */
    } else if (r == 0) {
        r = c->tp->start(c, conn);
    }
    if (r < 0)
        attempt_failed(c, r);
}

static void dial(hr_client_t *c, const struct sockaddr *sa)
{
    hr__conn_t *conn = calloc(1, sizeof(*conn));
    if (!conn) {
        attempt_failed(c, HR_ENOMEM);
        return;
    }
    uv_tcp_init(c->loop, &conn->tcp);
    conn->tcp.data = conn;
    conn->creq.data = conn;
    conn->wreq.data = conn;
    hr_buf_init(&conn->wbuf);
    conn->c = c;
    c->conn = conn;
    c->welcomed = 0;
    int r = uv_tcp_connect(&conn->creq, &conn->tcp, sa, on_connect);
    if (r < 0)
        attempt_failed(c, r);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    hr_client_t *c = req->data;
    if (c)
        c->gai = NULL;
    if (c && c->state != HR_STATE_CLOSING) {
        if (status < 0 || !res)
            attempt_failed(c, status < 0 ? status : UV_EAI_NONAME);
        else
            dial(c, res->ai_addr);
    }
    uv_freeaddrinfo(res);
    free(req);
}

void hr__conn_start(hr_client_t *c)
{
    struct sockaddr_storage ss;
    if (c->state == HR_STATE_CLOSING)
        return;
    if (c->o.connect_timeout_ms)
        uv_timer_start(&c->t_connect, connect_timeout_cb, c->o.connect_timeout_ms, 0);
    if (uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&ss) == 0) {
        dial(c, (const struct sockaddr *)&ss);
        return;
    }
    uv_getaddrinfo_t *req = malloc(sizeof(*req));
    char port[8];
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", c->port);
    if (!req) {
        attempt_failed(c, HR_ENOMEM);
        return;
    }
    req->data = c;
    int r = uv_getaddrinfo(c->loop, req, gai_cb, c->host, port, &hints);
    if (r < 0) {
        free(req);
        attempt_failed(c, r);
        return;
    }
    c->gai = req;
}

/*
 * Keepalive: the client sends its own PINGs so that it notices a dead link
 * (a peer that vanished without a FIN) within about
 * ping_interval_ms * max_pings_out; any inbound frame resets the count.
 */
static void ping_cb(uv_timer_t *t)
{
    hr_client_t *c = t->data;
    if (!hr__connected(c))
        return;
    if (c->pings_out >= c->o.max_pings_out) {
        hr__conn_lost(c, HR_ETIMEDOUT);
        return;
    }
    c->pings_out++;
    hr__send_ping(c, ++c->ping_id);
}
