/* SPDX-License-Identifier: MIT */
/* Connections: input framing, frame dispatch, output queues, the router's fan-out. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "server.h"

#define IOV_BATCH 1024              /* iovecs per write (IOV_MAX on Linux) */
#define WRITE_BATCH (256 * 1024)    /* bytes per write */
#define CLOSE_LINGER_MS 5000        /* how long a closing connection may take to drain */
#define FIN_LINGER_MS 1000          /* after our FIN, how long the peer has to close */
#define DIRECT_READ_MIN (16 * 1024) /* read straight into a partial frame this large */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void conn_flush(hr_conn_t *c);

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

static void oq_advance(hr_conn_t *c, size_t n)
{
    c->srv->stats.bytes_out += n;
    hr__oq_advance(&c->out, n);
}

/* ---- closing --------------------------------------------------------------- */

static void drop_subs(hr_conn_t *c)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        hr__index_remove(&c->srv->index, c->subs[i]);
}

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
    for (uint32_t i = 0; i < c->nsubs; i++)
        hr__sub_free(c->subs[i]);
    free(c->subs);
    hr__oq_free(&c->out);
    hr_buf_destroy(&c->in);
    hr__auth_conn_free(c);
    hr__limits_conn_free(c);
    if (c->tp->on_free)
        c->tp->on_free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    s->stats.conns[c->tp->kind]--;
    HR_LOG(HR_LOG_DEBUG, c->id, "closed");
    free(c);
    if (s->shutting_down && s->nconns == 0)
        hr__server_shutdown(s); /* finishes: every client is gone */
}

void hr__conn_close_now(hr_conn_t *c)
{
    if (c->flags & HR_C_CLOSED)
        return;
    drop_subs(c);
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
    size_t q = c->out.bytes;
    if (q > (size_t)s->cfg.out_soft && !c->soft_since)
        c->soft_since = hr__now_ms(s);
    if (q > (size_t)s->cfg.out_soft / 2 && !(c->flags & (HR_C_PAUSED | HR_C_CLOSING))) {
        c->flags |= HR_C_PAUSED;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

int hr__conn_send_scratch(hr_conn_t *c)
{
    hr_buf_t *b = &c->srv->scratch;
    hr_msg_t *m = hr_msg_new(HR_WS_HDR_MAX, b->base, b->len);
    hr_buf_reset(b);
    if (!m)
        return HR_ENOMEM;
    hr_msg_frame(m, c->tp->framing);
    int r = oq_push(c, m, NULL, 0);
    hr_msg_unref(&m);
    if (r == HR_OK)
        charge_output(c);
    return r;
}

static void send_err(hr_conn_t *c, unsigned code, const char *msg, int has_ref, uint64_t ref)
{
    if (code < sizeof(c->srv->stats.errors) / sizeof(c->srv->stats.errors[0]))
        c->srv->stats.errors[code]++;
    if (hr_enc_err(&c->srv->scratch, code, msg, has_ref, ref) == HR_OK)
        hr__conn_send_scratch(c);
}

void hr__conn_err(hr_conn_t *c, unsigned code, const char *msg, int has_ref, uint64_t ref)
{
    if (c->flags & HR_C_CLOSING)
        return;
    HR_LOG(HR_LOG_DEBUG, c->id, "ERR %u: %s", code, msg);
    send_err(c, code, msg, has_ref, ref);
}

void hr__conn_fail(hr_conn_t *c, unsigned code, const char *msg)
{
    hr_server_t *s = c->srv;
    if (c->flags & HR_C_CLOSING)
        return;
    if (code == 9 || code == 0 || hr__limits_log_budget(s)) /* floods must not flood the log */
        HR_LOG(code == 9 || code == 0 ? HR_LOG_DEBUG : HR_LOG_INFO, c->id, "closing: ERR %u: %s",
               code, msg);
    /* Subscriptions stay indexed until the close: this may run in the middle
     * of a fan-out over the very list they are in. deliver() skips CLOSING
     * connections and queue groups pick another member. */
    if (code == 6) {
        s->stats.slow_consumers++;
        hr__oq_drop_unsent(&c->out);
    }
    if (code && (c->flags & HR_C_PROTOCOL))
        send_err(c, code, msg, 0, 0);
    else if (code)
        s->stats.errors[code]++;
    if (c->tp->on_closing)
        c->tp->on_closing(c, code);
    c->flags |= HR_C_CLOSING;
    c->deadline =
        hr__now_ms(s) + (code == 9 ? (uint64_t)s->cfg.shutdown_timeout_ms : CLOSE_LINGER_MS);
    uv_read_stop((uv_stream_t *)&c->tcp);
    mark_pending(c);
}

/* ---- writing --------------------------------------------------------------- */

static void check_backpressure(hr_conn_t *c)
{
    size_t hwm = (size_t)c->srv->cfg.out_soft / 2;
    if ((c->flags & HR_C_PAUSED) && c->out.bytes <= hwm / 4 && !(c->flags & HR_C_CLOSING)) {
        c->flags &= ~(uint32_t)HR_C_PAUSED;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    if (c->out.bytes <= (size_t)c->srv->cfg.out_soft)
        c->soft_since = 0;
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
    if (q->inflight || (c->flags & HR_C_CLOSED))
        return;
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

static size_t lp_total(const hr_conn_t *c)
{
    const uint8_t *p = c->in.base;
    return HR_LP_PREFIX + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    hr_conn_t *c = h->data;
    /* A large frame already started: read the rest straight into its buffer. */
    if (c->tp == &hr__tcp_transport && c->in.len >= HR_LP_PREFIX && !(c->flags & HR_C_SHUT)) {
        size_t need = lp_total(c) - c->in.len;
        if (need >= DIRECT_READ_MIN && hr_buf_reserve(&c->in, need) == HR_OK) {
            *buf = uv_buf_init((char *)c->in.base + c->in.len, (unsigned)need);
            return;
        }
    }
    *buf = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

/* Dispatches the partial frame in c->in if it is complete. */
static void lp_complete(hr_conn_t *c)
{
    if (c->in.len < HR_LP_PREFIX)
        return;
    size_t total = lp_total(c);
    if (total - HR_LP_PREFIX > c->srv->max_frame) {
        hr__conn_fail(c, 2, "frame larger than max_frame");
        return;
    }
    if (c->in.len < total)
        return;
    hr__conn_on_frame(c, (const char *)c->in.base + HR_LP_PREFIX, total - HR_LP_PREFIX);
    hr_buf_destroy(&c->in); /* an idle connection holds no input buffer */
}

static int lp_frame(void *arg, const char *body, size_t n)
{
    hr_conn_t *c = arg;
    hr__conn_on_frame(c, body, n);
    return (c->flags & HR_C_CLOSING) != 0;
}

void hr__conn_lp_data(hr_conn_t *c, const char *p, size_t n)
{
    int r = hr_lp_feed(&c->in, p, n, c->srv->max_frame, lp_frame, c);
    if (r == HR_ETOOBIG)
        hr__conn_fail(c, 2, "frame larger than max_frame");
    else if (r == HR_ENOMEM)
        hr__conn_close_now(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    hr_conn_t *c = st->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            HR_LOG(HR_LOG_DEBUG, c->id, "read error: %s", uv_strerror((int)nread));
        hr__conn_close_now(c);
        return;
    }
    if (nread == 0 || (c->flags & HR_C_CLOSING))
        return; /* lingering close: discard */
    c->srv->stats.bytes_in += (uint64_t)nread;
    if (buf->base != c->srv->rbuf) {
        c->in.len += (size_t)nread;
        lp_complete(c);
        return;
    }
    c->tp->on_data(c, buf->base, (size_t)nread);
}

static void tcp_on_data(hr_conn_t *c, const char *p, size_t n)
{
    hr__conn_lp_data(c, p, n);
}

const hr_transport_t hr__tcp_transport = {
    .name = "tcp",
    .kind = HR_T_TCP,
    .framing = HR_FRAMING_LP,
    .on_data = tcp_on_data,
};

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
    c->id = ++s->next_id;
    c->idle_since = hr__now_ms(s);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    s->stats.conns[tp->kind]++;
    s->stats.conns_total[tp->kind]++;
    if (tp->kind == HR_T_TCP)
        c->flags |= HR_C_PROTOCOL;
    return c;
}

void hr__conn_start(hr_conn_t *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        hr__conn_close_now(c);
}

/* ---- router ------------------------------------------------------------------ */

typedef struct fan_s {
    hr_server_t *s;
    hr_conn_t *from;
    hr_msg_t *m;
} fan_t;

static void deliver(hr_conn_t *c, uint64_t sid, hr_msg_t *m)
{
    uint8_t hdr[HR_DELIVERY_HDR_MAX];
    hr_server_t *s = c->srv;
    if (c->flags & HR_C_CLOSING)
        return;
    size_t hlen = hr_msg_delivery_header(m, sid, c->tp->framing, hdr);
    if (oq_push(c, m, hdr, hlen) != HR_OK) {
        hr__conn_fail(c, 6, "slow consumer: out of memory for pending output");
        return;
    }
    s->stats.deliveries++;
    size_t q = c->out.bytes;
    if (q > (size_t)s->cfg.out_hard) {
        hr__conn_fail(c, 6, "slow consumer: pending output over out-hard");
        return;
    }
    charge_output(c);
}

static void fan_sub(void *arg, hr_sub_t *sub)
{
    fan_t *f = arg;
    if (sub->conn == f->from && (f->from->flags & HR_C_NO_ECHO))
        return;
    deliver(sub->conn, sub->sid, f->m);
}

/*
 * One member of the group gets the message: round robin, skipping members
 * that are closing and, while another member can take it, members whose
 * output is already over the soft limit (a slow member would otherwise keep
 * being chosen until it is cut off, and take its share with it). When every
 * member is over it, the least backlogged one gets the message.
 */
static void fan_group(void *arg, hr_qgroup_t *g)
{
    fan_t *f = arg;
    hr_conn_t *skip = f->from && (f->from->flags & HR_C_NO_ECHO) ? f->from : NULL;
    hr_sub_t *fallback = NULL;
    for (uint32_t tries = 0; tries < g->n; tries++) {
        hr_sub_t *sub = hr__qgroup_pick(g, skip);
        if (!sub)
            return;
        if (sub->conn->flags & HR_C_CLOSING)
            continue;
        if (sub->conn->out.bytes > (size_t)sub->conn->srv->cfg.out_soft) {
            if (!fallback || sub->conn->out.bytes < fallback->conn->out.bytes)
                fallback = sub; /* the least backlogged of the busy ones */
            continue;
        }
        deliver(sub->conn, sub->sid, f->m);
        return;
    }
    if (fallback)
        deliver(fallback->conn, fallback->sid, f->m);
}

int hr__router_publish(hr_server_t *s, hr_conn_t *from, hr_slice_t topic, hr_slice_t payload,
                       hr_slice_t reply, hr_slice_t headers, uint64_t *seq)
{
    int st;
    uint64_t h = hr__hash(topic.p, topic.n); /* once, for the engine and the index */
    hr_topic_t *t = hr__engine_topic_hashed(&s->engine, topic.p, topic.n, h, 1, &st);
    if (!t)
        return st;
    uint64_t sq = t->seq + 1;
    hr_msg_t *m = hr_msg_new_delivery(topic, sq, payload, reply, headers, 0);
    if (!m)
        return HR_ENOMEM;
    hr__engine_sequence(&s->engine, t);
    hr__engine_retain(&s->engine, t, sq, m);
    fan_t f = {s, from, m};
    hr_index_visitor_t v = {fan_sub, fan_group, &f};
    hr__index_match_hashed(&s->index, topic.p, topic.n, h, &v);
    hr_msg_unref(&m);
    s->stats.msgs_in++;
    if (seq)
        *seq = sq;
    return HR_OK;
}

/* ---- frames ------------------------------------------------------------------ */

static void send_welcome(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    hr_welcome_t w = {
        .server = "herald/" HERALD_VERSION,
        .client_id = c->id,
        .worker = 0,
        .max_payload = (uint64_t)s->cfg.max_payload,
        .max_frame = s->max_frame,
        .heartbeat_ms = (uint64_t)s->cfg.heartbeat_ms,
    };
    if (hr_enc_welcome(&s->scratch, &w) == HR_OK)
        hr__conn_send_scratch(c);
}

/* A connection's subscriptions are kept sorted by sid, so SUB and UNSUB find
 * theirs by binary search even with thousands of them. */
static uint32_t sub_pos(const hr_conn_t *c, uint64_t sid)
{
    uint32_t lo = 0, hi = c->nsubs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->subs[mid]->sid < sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static hr_sub_t **find_sub(hr_conn_t *c, uint64_t sid)
{
    uint32_t i = sub_pos(c, sid);
    return i < c->nsubs && c->subs[i]->sid == sid ? &c->subs[i] : NULL;
}

/* Inserts `sub` (room already reserved); returns its slot. */
static hr_sub_t **sub_insert(hr_conn_t *c, hr_sub_t *sub)
{
    uint32_t i = sub_pos(c, sub->sid);
    memmove(&c->subs[i + 1], &c->subs[i], (c->nsubs - i) * sizeof(*c->subs));
    c->subs[i] = sub;
    c->nsubs++;
    return &c->subs[i];
}

static void sub_erase(hr_conn_t *c, hr_sub_t **slot)
{
    uint32_t i = (uint32_t)(slot - c->subs);
    memmove(&c->subs[i], &c->subs[i + 1], (c->nsubs - i - 1) * sizeof(*c->subs));
    c->nsubs--;
}

typedef struct replay_s {
    hr_conn_t *c;
    hr_sub_t *sub;
    uint64_t since;
    int gap;
} replay_t;

static void replay_one(void *arg, hr_msg_t *body)
{
    replay_t *r = arg;
    deliver(r->c, r->sub->sid, body);
}

static void gap_check(replay_t *r, hr_topic_t *t)
{
    uint64_t oldest = t->count ? t->ring[t->head].seq : t->seq + 1;
    if (r->since < t->seq && oldest > r->since + 1)
        r->gap = 1;
}

typedef struct matches_s {
    hr_topic_t **v;
    size_t n, cap;
    int oom;
} matches_t;

static void collect(void *arg, hr_topic_t *t)
{
    matches_t *m = arg;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        hr_topic_t **v = realloc(m->v, cap * sizeof(*v));
        if (!v) {
            m->oom = 1;
            return;
        }
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = t;
}

/*
 * A wildcard `since` examines every topic with state, so it is charged
 * against a per-connection budget of topics examined (replay-scan-rate a
 * second, as a token bucket): without it a burst of such SUBs, a few bytes
 * each, stalls the loop for every other client. Over budget, the
 * subscription goes live without replay and the client gets ERR 10, the
 * same answer as for history that is gone.
 */
static int scan_budget_take(hr_conn_t *c, uint64_t cost)
{
    uint64_t rate = (uint64_t)c->srv->cfg.replay_scan_rate, now = hr__now_ms(c->srv);
    if (!c->scan_at) {
        c->scan_tokens = rate;
    } else {
        uint64_t refill = (now - c->scan_at) * rate / 1000;
        c->scan_tokens = c->scan_tokens + refill > rate ? rate : c->scan_tokens + refill;
    }
    c->scan_at = now ? now : 1;
    if (cost > c->scan_tokens)
        return 0;
    c->scan_tokens -= cost;
    return 1;
}

/*
 * SUB with `since`: the retained history of every matching topic goes out
 * before the subscription is indexed, all within this callback, so the
 * first live message queued after it follows the last replayed one: no gap,
 * no duplicate. A single ERR 10 precedes the replay when some topic's
 * history no longer reaches back to since + 1.
 */
static void replay(hr_conn_t *c, hr_sub_t *sub, uint64_t since)
{
    hr_server_t *s = c->srv;
    replay_t r = {c, sub, since, 0};
    matches_t m = {NULL, 0, 0, 0};
    hr_topic_t *one;
    int st;
    if (hr_topic_validate(sub->pattern, sub->plen) == HR_OK) {
        one = hr__engine_topic(&s->engine, sub->pattern, sub->plen, 0, &st);
        if (one) {
            m.v = &one;
            m.n = 1;
        }
    } else {
        if (!scan_budget_take(c, s->engine.topics.count + 1)) {
            hr__conn_err(c, 10, "history not replayed: wildcard replay budget exhausted", 1,
                         sub->sid);
            return;
        }
        hr__engine_each_match(&s->engine, sub->pattern, sub->plen, collect, &m);
    }
    for (size_t i = 0; i < m.n; i++)
        gap_check(&r, m.v[i]);
    if (r.gap || m.oom)
        hr__conn_err(c, 10, "history gap: since is older than the retained history", 1, sub->sid);
    for (size_t i = 0; i < m.n && !(c->flags & HR_C_CLOSING); i++)
        hr__engine_replay(&s->engine, m.v[i], since, replay_one, &r);
    if (m.v != &one)
        free(m.v);
}

static void handle_sub(hr_conn_t *c, const hr_frame_t *f)
{
    hr_server_t *s = c->srv;
    hr_sub_t **slot = find_sub(c, f->sid);
    if (!hr__auth_allowed(c, HR_AUTH_SUB, f->topic)) {
        hr__conn_err(c, 4, "not permitted to subscribe to this pattern", 1, f->sid);
        return;
    }
    if ((f->flags & HR_F_SINCE) && !hr__limits_replay(c, f->topic.p, f->topic.n)) {
        hr__conn_err(c, 7, "replay rate limit exceeded (max-replay-rate)", 1, f->sid);
        return;
    }
    if (!slot && c->nsubs >= (uint32_t)s->cfg.max_subs) {
        hr__conn_err(c, 7, "subscription limit reached", 1, f->sid);
        return;
    }
    if (!slot && c->nsubs == c->subcap) {
        uint32_t cap = c->subcap ? c->subcap * 2 : 2;
        hr_sub_t **p = realloc(c->subs, cap * sizeof(*p));
        if (!p) {
            hr__conn_err(c, 7, "out of memory for subscriptions", 1, f->sid);
            return;
        }
        c->subs = p;
        c->subcap = cap;
    }
    hr_sub_t *sub = hr__sub_new(c, f->sid, f->topic.p, f->topic.n, f->queue.p,
                                (f->flags & HR_F_QUEUE) ? f->queue.n : 0);
    if (!sub) {
        hr__conn_err(c, 7, "out of memory for subscriptions", 1, f->sid);
        return;
    }
    if (slot) { /* an active sid is replaced */
        hr__index_remove(&s->index, *slot);
        hr__sub_free(*slot);
        *slot = sub;
    } else {
        slot = sub_insert(c, sub);
    }
    /* A queue group delivers each message to one member; replaying history
     * to a joining member would break that, so `since` is ignored there. */
    if ((f->flags & HR_F_SINCE) && !(f->flags & HR_F_QUEUE))
        replay(c, sub, f->since);
    if (c->flags & HR_C_CLOSING)
        return; /* the replay overflowed the output limit */
    if (hr__index_add(&s->index, sub) != 0) {
        sub_erase(c, slot);
        hr__sub_free(sub);
        hr__conn_err(c, 7, "out of memory for subscriptions", 1, f->sid);
    }
}

static void handle_unsub(hr_conn_t *c, uint64_t sid)
{
    hr_sub_t **slot = find_sub(c, sid);
    if (!slot) {
        hr__conn_err(c, 8, "unknown sid", 1, sid);
        return;
    }
    hr_sub_t *sub = *slot;
    hr__index_remove(&c->srv->index, sub);
    hr__sub_free(sub);
    sub_erase(c, slot);
}

static void handle_pub(hr_conn_t *c, const hr_frame_t *f, int status, const char *why)
{
    int has_ack = (f->flags & HR_F_ACK) != 0;
    uint64_t seq;
    if (status == HR_ETOPIC) {
        hr__conn_err(c, 5, why, has_ack, f->id);
        return;
    }
    if (f->topic.p[0] == '$') {
        hr__conn_err(c, 4, "topics beginning with '$' are reserved for the broker", has_ack, f->id);
        return;
    }
    if (!hr__auth_allowed(c, HR_AUTH_PUB, f->topic)) {
        hr__conn_err(c, 4, "not permitted to publish to this topic", has_ack, f->id);
        return;
    }
    if ((f->flags & HR_F_REPLY) && !hr__auth_allowed(c, HR_AUTH_REPLY, f->reply)) {
        hr__conn_err(c, 4, "not permitted to use this reply topic", has_ack, f->id);
        return;
    }
    if (!hr__limits_pub(c)) {
        hr__conn_err(c, 7, "publish rate limit exceeded (max-pub-rate)", has_ack, f->id);
        return;
    }
    int r = hr__router_publish(c->srv, c, f->topic, f->payload, f->reply, f->headers, &seq);
    if (r == HR_ELIMIT) {
        hr__conn_err(c, 7, "topic limit reached", has_ack, f->id);
        return;
    }
    if (r != HR_OK) {
        hr__conn_err(c, 7, "out of memory", has_ack, f->id);
        return;
    }
    if (c->flags & HR_C_CLOSING)
        return; /* its own delivery overflowed its output: nothing may follow the ERR */
    if (has_ack && hr_enc_ack(&c->srv->scratch, f->id, seq) == HR_OK)
        hr__conn_send_scratch(c);
}

void hr__conn_on_frame(hr_conn_t *c, const char *body, size_t n)
{
    hr_server_t *s = c->srv;
    hr_frame_t f;
    const char *why;
    if (c->flags & HR_C_CLOSING)
        return;
    c->idle_since = hr__now_ms(s);
    c->pings = 0;
    int r = hr_frame_decode(body, n, (size_t)s->cfg.max_payload, &f, &why);
    if (r == HR_EPROTO) {
        hr__conn_fail(c, 1, why);
        return;
    }
    if (r == HR_ETOOBIG) {
        hr__conn_fail(c, 2, why);
        return;
    }
    if (!(c->flags & HR_C_HELLO) && f.op != HR_OP_HELLO) {
        hr__conn_fail(c, 1, "the first frame must be HELLO");
        return;
    }
    switch (f.op) {
    case HR_OP_HELLO:
        if (c->flags & HR_C_HELLO) {
            hr__conn_fail(c, 1, "HELLO may only be the first frame");
            return;
        }
        if (f.version != HR_PROTOCOL_VERSION) {
            hr__conn_fail(c, 1, "unsupported protocol version (this broker speaks v 1)");
            return;
        }
        if (hr__auth_hello(c, f.token, &why) != HR_OK) {
            hr__conn_fail(c, 3, why);
            return;
        }
        c->flags |= HR_C_HELLO;
        if (f.flags & HR_F_NO_ECHO)
            c->flags |= HR_C_NO_ECHO;
        HR_LOG(HR_LOG_DEBUG, c->id, "HELLO name=%.*s", (int)f.name.n, f.name.p ? f.name.p : "");
        send_welcome(c);
        break;
    case HR_OP_PUB:
        handle_pub(c, &f, r, why);
        break;
    case HR_OP_SUB:
        if (r == HR_ETOPIC)
            hr__conn_err(c, 5, why, 1, f.sid);
        else
            handle_sub(c, &f);
        break;
    case HR_OP_UNSUB:
        handle_unsub(c, f.sid);
        break;
    case HR_OP_PING:
        if (hr_enc_pong(&s->scratch, f.id) == HR_OK)
            hr__conn_send_scratch(c);
        break;
    case HR_OP_PONG:
        break;
    default:
        hr__conn_fail(c, 1, "opcode not valid from a client");
        break;
    }
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
    if (c->tp->on_sweep && c->tp->on_sweep(c, now))
        return;
    if (!(c->flags & HR_C_PROTOCOL))
        return;
    if (!(c->flags & HR_C_HELLO)) {
        if (now - c->idle_since >= (uint64_t)s->cfg.hello_timeout_ms)
            hr__conn_fail(c, 1, "no HELLO within hello-timeout-ms");
        return;
    }
    if (hr__auth_expired(c)) {
        hr__conn_fail(c, 3, "token expired");
        return;
    }
    if (c->soft_since && now - c->soft_since >= (uint64_t)s->cfg.out_soft_ms) {
        hr__conn_fail(c, 6, "slow consumer: pending output over out-soft for too long");
        return;
    }
    if (now - c->idle_since >= (uint64_t)s->cfg.heartbeat_ms) {
        if (c->pings >= 2) {
            hr__conn_fail(c, 11, "heartbeat timeout: two pings unanswered");
            return;
        }
        c->pings++;
        c->idle_since = now;
        if (hr_enc_ping(&s->scratch, c->pings) == HR_OK)
            hr__conn_send_scratch(c);
    }
}
