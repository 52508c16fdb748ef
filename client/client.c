/* SPDX-License-Identifier: MIT */
/* libherald asynchronous client: connection, reconnect, subscriptions, requests on libuv. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

#define DEFAULT_MAX_FRAME (16u << 20) /* before WELCOME tells the real one */
#define READ_CHUNK 65536
#define DETAIL_MAX 300

enum op_kind { OP_ACK = 1, OP_REQ = 2, OP_FLUSH = 3, OP_CONFIRM = 4 };

/*
 * A pending operation: a publish waiting for its ACK, a request waiting for
 * its reply, a flush waiting for its PONG, a subscription waiting for the
 * PONG that confirms it (`id` is that PING's id, 0 until it is sent). Ack
 * ids and sids share one counter so that an ERR's `ref` names exactly one
 * of them.
 */
typedef struct op_s {
    struct op_s *next, *prev;
    int kind;
    uint64_t id;
    uint64_t deadline; /* loop time in ms; 0: none */
    uint64_t mark;     /* flush: PONG seen, waiting until q_deq reaches this */
    int ponged;
    union {
        hr_ack_cb ack;
        hr_request_cb req;
        hr_done_cb done;
        hr_sub_confirm_cb confirm;
    } cb;
    void *arg;
    hr_sub_t *sub; /* OP_CONFIRM */
} op_t;

/* Last seq seen per topic, for wildcard subscriptions. */
typedef struct seq_entry_s {
    struct seq_entry_s *next;
    uint64_t last;
    char topic[];
} seq_entry_t;

struct hr_sub_s {
    hr_client_t *c;
    hr_sub_t *next, *prev; /* the client's list, in subscription order */
    hr_sub_t *hnext;       /* sid hash chain */
    uint64_t sid;
    char *pattern;
    char *queue; /* NULL: none */
    int wildcard;
    int internal; /* the request inbox */
    int dead;     /* unsubscribed; freed when refs drop to 0 */
    int drained;  /* UNSUB sent by drain; still delivers what arrives */
    int sent;     /* a SUB went out on some connection */
    int refs;
    hr_msg_cb cb;
    void *arg;
    /* The options of the first SUB (after an epoch change: replay all). */
    int has_since;
    uint64_t since;
    int has_last_n;
    uint64_t last_n;
    char *epoch_opt; /* NULL: none */
    int refused;     /* the broker refused the SUB: not restored, not unsubscribed */
    op_t *confirm;   /* pending on_confirm, or NULL */
    /* Resume state: last seq received, per topic, and the epoch it came under. */
    int have_last;
    uint64_t last;
    uint64_t seen_gen; /* c->epoch_gen when `seen_epoch` was taken */
    int has_seen_epoch;
    char seen_epoch[HR_EPOCH_MAX + 1];
    seq_entry_t **seqs; /* wildcard: hash by topic */
    size_t nseqs_buckets, nseqs;
    /* Pending limits. */
    size_t pend_msgs, pend_bytes, lim_msgs, lim_bytes;
    uint64_t dropped, delivered;
    int slow;
};

/* One TCP connection attempt; outlives its client link until uv_close completes. */
typedef struct conn_s {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    hr_buf_t wbuf;  /* bytes of the write in flight */
    hr_client_t *c; /* NULL once detached */
    int writing;
    int ws_open;        /* WebSocket handshake done */
    char ws_accept[29]; /* the Sec-WebSocket-Accept the server must send */
} conn_t;

struct hr_client_s {
    uv_loop_t *loop;
    hr_client_opts_t o;
    char *name, *token, *host, *path;
    int port;
    int ws;      /* WebSocket transport (ws://) */
    int in_frag; /* a fragmented WebSocket message is being reassembled in `frag` */
    hr_buf_t frag;
    int state;
    int close_status;
    int user_closed; /* hr_client_close() was called: queued messages are dropped */
    int ever_connected;
    int welcomed; /* current connection got its WELCOME */
    conn_t *conn;
    uv_getaddrinfo_t *gai;
    uv_timer_t t_reconnect, t_connect, t_ping, t_deadline, t_drain;
    uv_idle_t idle;
    uv_prepare_t prep;
    int handles_open;
    hr_buf_t in;   /* partial input frames */
    hr_buf_t out;  /* frames for the current connection, not yet written */
    hr_buf_t pend; /* publishes held while not connected */
    uint64_t next_id;
    uint64_t ping_id;
    uint32_t pings_out;
    int attempts;
    int last_err; /* status of a fatal ERR on the current connection */
    uint64_t client_id, max_payload, max_frame, heartbeat_ms;
    int has_epoch;                /* the last WELCOME carried an epoch */
    char epoch[HR_EPOCH_MAX + 1]; /* ... this one */
    uint64_t epoch_gen;           /* bumped whenever the epoch (or its absence) changes */
    /* subscriptions */
    hr_sub_t *subs_head, *subs_tail;
    hr_sub_t **subs_hash;
    size_t subs_buckets, nsubs;
    /* delivery queue */
    hr_message_t *q_head, *q_tail;
    uint64_t q_enq, q_deq; /* messages ever queued / taken off the queue */
    int flush_waiting;     /* flush ops whose PONG came before their messages were delivered */
    /* pending operations */
    op_t *ops_head, *ops_tail;
    uint64_t deadline_due;
    /* request inbox */
    char inbox[40];
    size_t inbox_len;
    hr_sub_t *inbox_sub;
    /* drain */
    int draining;
    hr_done_cb drain_cb;
    void *drain_arg;
    uint64_t drain_ping;
    int drain_ponged;
    uint64_t rng;
    hr_client_stats_t stats;
};

static void start_connect(hr_client_t *c);
static void conn_lost(hr_client_t *c, int status);
static void begin_close(hr_client_t *c, int status);
static void drain_check(hr_client_t *c);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t rnd(hr_client_t *c)
{
    /* xorshift64*: jitter and inbox names need spread, not secrecy. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ULL;
}

static char *dupstr(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static hr_slice_t slice(const char *s)
{
    hr_slice_t sl = {s, s ? strlen(s) : 0};
    return sl;
}

static int is_wildcard(const char *p)
{
    for (const char *t = p; *t;) {
        const char *e = strchr(t, '.');
        size_t n = e ? (size_t)(e - t) : strlen(t);
        if (n == 1 && (*t == '*' || *t == '>'))
            return 1;
        if (!e)
            break;
        t = e + 1;
    }
    return 0;
}

static size_t hash_str(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

/* Makes hr_buf_t's `len` cover bytes written directly into its spare capacity. */
static void buf_commit(hr_buf_t *b, size_t n)
{
    b->len += n;
}

static void buf_truncate(hr_buf_t *b, size_t len)
{
    b->len = len;
}

static void report(hr_client_t *c, int status, hr_sub_t *sub, const char *detail)
{
    if (c->o.on_error)
        c->o.on_error(c, status, sub, detail ? detail : hr_strerror(status), c->o.arg);
}

static void event(hr_client_t *c, int ev, int status)
{
    if (c->o.on_state)
        c->o.on_state(c, ev, status, c->o.arg);
}

/* ---- options ------------------------------------------------------------ */

void hr_client_opts_init(hr_client_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->echo = 1;
    o->connect_timeout_ms = 5000;
    o->request_timeout_ms = 5000;
    o->ping_interval_ms = 30000;
    o->max_pings_out = 2;
    o->reconnect = 1;
    o->max_reconnect = 60;
    o->reconnect_wait_ms = 50;
    o->reconnect_wait_max_ms = 2000;
    o->reconnect_jitter = 0.2;
    o->reconnect_buf_bytes = 8u << 20;
    o->max_out_bytes = 64u << 20;
    o->pending_msgs_limit = 65536;
    o->pending_bytes_limit = 64u << 20;
    o->deliver_batch = 1024;
}

/*
 * Accepts tcp://host[:port], host[:port] and ws://host[:port][/path], with
 * IPv6 literals in brackets. The port defaults to 7400 (tcp) or 7401 (ws).
 */
static int parse_url(hr_client_t *c, const char *url)
{
    char auth[300];
    const char *p = url ? url : "tcp://127.0.0.1:7400";
    const char *sep = strstr(p, "://");
    long port = HR_DEFAULT_PORT;
    if (sep) {
        size_t sn = (size_t)(sep - p);
        if (sn == 2 && strncmp(p, "ws", 2) == 0) {
            c->ws = 1;
            port = HR_DEFAULT_WS_PORT;
        } else if (sn != 3 || strncmp(p, "tcp", 3) != 0) {
            return HR_EURL; /* wss:// would need TLS */
        }
        p = sep + 3;
    }
    const char *slash = strchr(p, '/');
    size_t an = slash ? (size_t)(slash - p) : strlen(p);
    if (an == 0 || an >= sizeof(auth) || (slash && !c->ws))
        return HR_EURL;
    memcpy(auth, p, an);
    auth[an] = '\0';
    char *host = auth, *rest;
    if (auth[0] == '[') {
        char *rb = strchr(auth, ']');
        if (!rb)
            return HR_EURL;
        *rb = '\0';
        host = auth + 1;
        rest = rb + 1;
    } else {
        rest = strchr(auth, ':');
        if (rest && strchr(rest + 1, ':'))
            return HR_EURL; /* an IPv6 literal needs brackets */
        rest = rest ? rest : auth + an;
    }
    if (*rest == ':') {
        char *e;
        *rest++ = '\0';
        port = strtol(rest, &e, 10);
        if (e == rest || *e != '\0' || port <= 0 || port > 65535)
            return HR_EURL;
    } else if (*rest != '\0') {
        return HR_EURL;
    }
    if (*host == '\0' || strchr(host, ' '))
        return HR_EURL;
    c->host = dupstr(host);
    c->path = dupstr(slash ? slash : "/");
    if (!c->host || !c->path)
        return HR_ENOMEM;
    c->port = (int)port;
    return HR_OK;
}

/* ---- subscriptions table ------------------------------------------------ */

static hr_sub_t *sub_find(hr_client_t *c, uint64_t sid)
{
    if (!c->subs_buckets)
        return NULL;
    for (hr_sub_t *s = c->subs_hash[sid & (c->subs_buckets - 1)]; s; s = s->hnext)
        if (s->sid == sid)
            return s;
    return NULL;
}

static int sub_insert(hr_client_t *c, hr_sub_t *s)
{
    if (c->nsubs + 1 > c->subs_buckets) {
        size_t nb = c->subs_buckets ? c->subs_buckets * 2 : 16;
        hr_sub_t **h = calloc(nb, sizeof(*h));
        if (!h)
            return HR_ENOMEM;
        for (hr_sub_t *x = c->subs_head; x; x = x->next) {
            x->hnext = h[x->sid & (nb - 1)];
            h[x->sid & (nb - 1)] = x;
        }
        free(c->subs_hash);
        c->subs_hash = h;
        c->subs_buckets = nb;
    }
    s->hnext = c->subs_hash[s->sid & (c->subs_buckets - 1)];
    c->subs_hash[s->sid & (c->subs_buckets - 1)] = s;
    s->prev = c->subs_tail;
    s->next = NULL;
    if (c->subs_tail)
        c->subs_tail->next = s;
    else
        c->subs_head = s;
    c->subs_tail = s;
    c->nsubs++;
    return HR_OK;
}

static void sub_remove(hr_client_t *c, hr_sub_t *s)
{
    hr_sub_t **pp = &c->subs_hash[s->sid & (c->subs_buckets - 1)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->subs_head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        c->subs_tail = s->prev;
    c->nsubs--;
}

static void seqs_clear(hr_sub_t *s)
{
    for (size_t i = 0; i < s->nseqs_buckets; i++) {
        seq_entry_t *e = s->seqs[i];
        while (e) {
            seq_entry_t *n = e->next;
            free(e);
            e = n;
        }
    }
    free(s->seqs);
    s->seqs = NULL;
    s->nseqs_buckets = s->nseqs = 0;
    s->have_last = 0;
    s->last = 0;
}

static void sub_free(hr_sub_t *s)
{
    seqs_clear(s);
    free(s->pattern);
    free(s->queue);
    free(s->epoch_opt);
    free(s);
}

static void sub_decref(hr_sub_t *s)
{
    if (--s->refs == 0)
        sub_free(s);
}

/* Returns the entry for `topic`, creating it (last = 0) if needed; NULL on OOM. */
static seq_entry_t *seq_get(hr_sub_t *s, const char *topic, size_t n, int create)
{
    if (s->nseqs_buckets) {
        for (seq_entry_t *e = s->seqs[hash_str(topic, n) & (s->nseqs_buckets - 1)]; e; e = e->next)
            if (strncmp(e->topic, topic, n) == 0 && e->topic[n] == '\0')
                return e;
    }
    if (!create)
        return NULL;
    if (s->nseqs + 1 > s->nseqs_buckets * 2) {
        size_t nb = s->nseqs_buckets ? s->nseqs_buckets * 2 : 8;
        seq_entry_t **h = calloc(nb, sizeof(*h));
        if (!h)
            return NULL;
        for (size_t i = 0; i < s->nseqs_buckets; i++) {
            seq_entry_t *e = s->seqs[i];
            while (e) {
                seq_entry_t *next = e->next;
                size_t b = hash_str(e->topic, strlen(e->topic)) & (nb - 1);
                e->next = h[b];
                h[b] = e;
                e = next;
            }
        }
        free(s->seqs);
        s->seqs = h;
        s->nseqs_buckets = nb;
    }
    seq_entry_t *e = malloc(sizeof(*e) + n + 1);
    if (!e)
        return NULL;
    memcpy(e->topic, topic, n);
    e->topic[n] = '\0';
    e->last = 0;
    size_t b = hash_str(topic, n) & (s->nseqs_buckets - 1);
    e->next = s->seqs[b];
    s->seqs[b] = e;
    s->nseqs++;
    return e;
}

/* ---- output ------------------------------------------------------------- */

static void write_cb(uv_write_t *req, int status);

/* Writes everything queued in `out` with one uv_write, at most one in flight. */
static void flush_out(hr_client_t *c)
{
    conn_t *conn = c->conn;
    if (!conn || conn->writing || c->out.len == 0)
        return;
    if (c->ws) {
        /* `out` holds length-prefixed bodies; each becomes one masked binary message. */
        size_t off = 0;
        hr_buf_reset(&conn->wbuf);
        while (off < c->out.len) {
            hr_slice_t body;
            size_t used;
            hr_lp_next(c->out.base + off, c->out.len - off, SIZE_MAX, &body, &used);
            if (hr__ws_encode(&conn->wbuf, 2, body.p, body.n, (uint32_t)rnd(c)) != HR_OK) {
                conn_lost(c, HR_ENOMEM);
                return;
            }
            off += used;
        }
    } else {
        hr_buf_t tmp = conn->wbuf;
        conn->wbuf = c->out;
        c->out = tmp;
    }
    hr_buf_reset(&c->out);
    uv_buf_t b = uv_buf_init((char *)conn->wbuf.base, (unsigned)conn->wbuf.len);
    int r = uv_write(&conn->wreq, (uv_stream_t *)&conn->tcp, &b, 1, write_cb);
    if (r < 0) {
        conn_lost(c, r);
        return;
    }
    conn->writing = 1;
}

static void write_cb(uv_write_t *req, int status)
{
    conn_t *conn = req->data;
    hr_client_t *c = conn->c;
    conn->writing = 0;
    hr_buf_reset(&conn->wbuf);
    if (!c)
        return;
    if (status < 0) {
        conn_lost(c, status);
        return;
    }
    flush_out(c);
    drain_check(c);
}

static void prep_cb(uv_prepare_t *h)
{
    hr_client_t *c = h->data;
    uv_prepare_stop(h);
    flush_out(c);
}

/* Frames are batched: the write happens once per loop turn, before polling. */
static void want_flush(hr_client_t *c)
{
    if (c->conn && c->out.len && !uv_is_active((uv_handle_t *)&c->prep))
        uv_prepare_start(&c->prep, prep_cb);
}

/*
 * Each encoder call appends one length-prefixed frame; on failure the
 * buffer is cut back so a half frame never goes out.
 */
#define ENCODE(buf, expr)                                                                          \
    do {                                                                                           \
        size_t mark_ = (buf)->len;                                                                 \
        size_t lp_ = hr_lp_begin(buf);                                                             \
        int r_ = (expr);                                                                           \
        if (r_ != HR_OK || (buf)->oom) {                                                           \
            buf_truncate((buf), mark_);                                                            \
            (buf)->oom = 0;                                                                        \
            return HR_ENOMEM;                                                                      \
        }                                                                                          \
        hr_lp_end((buf), lp_);                                                                     \
    } while (0)

static int send_sub(hr_client_t *c, hr_sub_t *s, hr_sub_fields_t *o)
{
    o->queue = slice(s->queue);
    ENCODE(&c->out, hr_enc_sub_ex(&c->out, s->sid, slice(s->pattern), o));
    s->sent = 1;
    want_flush(c);
    return HR_OK;
}

/* The SUB options the application asked for. */
static void first_sub_fields(const hr_sub_t *s, hr_sub_fields_t *o)
{
    memset(o, 0, sizeof(*o));
    o->has_since = s->has_since;
    o->since = s->since;
    o->has_last = s->has_last_n;
    o->last = s->last_n;
    o->epoch = s->epoch_opt ? slice(s->epoch_opt) : (hr_slice_t){NULL, 0};
}

static int send_unsub(hr_client_t *c, uint64_t sid)
{
    ENCODE(&c->out, hr_enc_unsub(&c->out, sid));
    want_flush(c);
    return HR_OK;
}

static int send_ping(hr_client_t *c, uint64_t id)
{
    ENCODE(&c->out, hr_enc_ping(&c->out, id));
    want_flush(c);
    return HR_OK;
}

static int send_pong(hr_client_t *c, uint64_t id)
{
    ENCODE(&c->out, hr_enc_pong(&c->out, id));
    want_flush(c);
    return HR_OK;
}

static int send_hello(hr_client_t *c)
{
    ENCODE(&c->out, hr_enc_hello(&c->out, c->name, c->token, c->o.echo));
    want_flush(c);
    return HR_OK;
}

static int connected(const hr_client_t *c)
{
    return c->conn && c->welcomed;
}

/* ---- pending operations ------------------------------------------------- */

static void op_link(hr_client_t *c, op_t *op)
{
    op->next = NULL;
    op->prev = c->ops_tail;
    if (c->ops_tail)
        c->ops_tail->next = op;
    else
        c->ops_head = op;
    c->ops_tail = op;
}

static void op_unlink(hr_client_t *c, op_t *op)
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

static op_t *op_find(hr_client_t *c, int kind, uint64_t id)
{
    for (op_t *op = c->ops_head; op; op = op->next)
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
static void confirm_complete(hr_client_t *c, op_t *op, int status)
{
    hr_sub_t *s = op->sub;
    s->confirm = NULL;
    if (status != HR_OK && !s->dead) {
        s->dead = 1;
        sub_remove(c, s);
        if (connected(c) && s->sent && !s->refused && !s->drained)
            send_unsub(c, s->sid);
        assert(s->refs >= 2);
        s->refs--; /* the subscription's own reference; the op's keeps it alive */
        op->cb.confirm(c, s, status, op->arg);
    } else if (!s->dead) {
        op->cb.confirm(c, s, status, op->arg);
    }
    sub_decref(s); /* the op's reference */
}

/* Completes and frees `op` (already unlinked). */
static void op_complete(hr_client_t *c, op_t *op, int status, uint64_t seq, hr_message_t *reply)
{
    switch (op->kind) {
    case OP_ACK:
        if (op->cb.ack)
            op->cb.ack(c, status, seq, op->arg);
        break;
    case OP_REQ:
        op->cb.req(c, status, status == HR_OK ? reply : NULL, op->arg);
        break;
    case OP_FLUSH:
        op->cb.done(c, status, op->arg);
        break;
    case OP_CONFIRM:
        confirm_complete(c, op, status);
        break;
    }
    free(op);
}

static void deadline_arm(hr_client_t *c, uint64_t deadline);

/*
 * Completes with `status` every op for which `pick` says so (all if NULL). The ops are unlinked
 * first and completed afterwards, because the callbacks may add or remove ops.
 */
static void ops_finish(hr_client_t *c, int status, int (*pick)(hr_client_t *, op_t *, void *),
                       void *ctx)
{
    op_t *head = NULL, **tail = &head;
    op_t *op = c->ops_head;
    while (op) {
        op_t *next = op->next;
        if (!pick || pick(c, op, ctx)) {
            op_unlink(c, op);
            *tail = op;
            tail = &op->next;
        }
        op = next;
    }
    while (head) {
        op_t *next = head->next;
        op_complete(c, head, status, 0, NULL);
        head = next;
    }
}

static int pick_expired(hr_client_t *c, op_t *op, void *ctx)
{
    uint64_t now = *(uint64_t *)ctx;
    return op->deadline && op->deadline <= now;
}

static void deadline_cb(uv_timer_t *t)
{
    hr_client_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    c->deadline_due = 0;
    ops_finish(c, HR_ETIMEDOUT, pick_expired, &now);
    uint64_t next = 0;
    for (op_t *op = c->ops_head; op; op = op->next)
        if (op->deadline && (!next || op->deadline < next))
            next = op->deadline;
    if (next)
        deadline_arm(c, next);
    drain_check(c);
}

static void deadline_arm(hr_client_t *c, uint64_t deadline)
{
    if (c->deadline_due && c->deadline_due <= deadline)
        return;
    if (c->state == HR_STATE_CLOSING)
        return;
    c->deadline_due = deadline;
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->t_deadline, deadline_cb, deadline > now ? deadline - now : 0, 0);
}

/* ---- delivery ----------------------------------------------------------- */

static void idle_cb(uv_idle_t *h);

static int pick_flushed(hr_client_t *c, op_t *op, void *ctx)
{
    return op->kind == OP_FLUSH && op->ponged && op->mark <= c->q_deq;
}

static void enqueue(hr_client_t *c, hr_sub_t *s, hr_message_t *m)
{
    m->qsub = s;
    m->qnext = NULL;
    s->refs++;
    s->pend_msgs++;
    s->pend_bytes += m->len;
    c->q_enq++;
    if (c->q_tail)
        c->q_tail->qnext = m;
    else
        c->q_head = m;
    c->q_tail = m;
    if (!uv_is_active((uv_handle_t *)&c->idle))
        uv_idle_start(&c->idle, idle_cb);
}

static hr_message_t *dequeue(hr_client_t *c)
{
    hr_message_t *m = c->q_head;
    if (!m)
        return NULL;
    c->q_head = m->qnext;
    if (!c->q_head)
        c->q_tail = NULL;
    m->qnext = NULL;
    c->q_deq++;
    hr_sub_t *s = m->qsub;
    s->pend_msgs--;
    s->pend_bytes -= m->len;
    if (s->slow && s->pend_msgs <= s->lim_msgs / 2 && s->pend_bytes <= s->lim_bytes / 2)
        s->slow = 0;
    return m;
}

/*
 * Messages are delivered from an idle handle, at most deliver_batch per loop
 * turn, so that reading the socket continues while a slow callback runs:
 * what the callbacks cannot absorb accumulates in the per-subscription
 * pending counts, where the limits apply.
 */
static void idle_cb(uv_idle_t *h)
{
    hr_client_t *c = h->data;
    for (uint32_t n = 0; n < c->o.deliver_batch && c->state != HR_STATE_CLOSING; n++) {
        hr_message_t *m = dequeue(c);
        if (!m)
            break;
        hr_sub_t *s = m->qsub;
        m->qsub = NULL;
        if (!s->dead) {
            s->delivered++;
            s->cb(c, s, m, s->arg);
        }
        hr_message_unref(&m);
        sub_decref(s);
    }
    if (!c->q_head)
        uv_idle_stop(h);
    if (c->flush_waiting && c->state != HR_STATE_CLOSING) {
        for (op_t *op = c->ops_head; op; op = op->next)
            if (pick_flushed(c, op, NULL))
                c->flush_waiting--;
        ops_finish(c, HR_OK, pick_flushed, NULL);
    }
    drain_check(c);
}

static void slow_consumer(hr_client_t *c, hr_sub_t *s)
{
    s->dropped++;
    c->stats.dropped++;
    if (!s->slow) {
        char d[DETAIL_MAX];
        s->slow = 1;
        snprintf(d, sizeof(d), "slow consumer: pending limit of sid %llu reached, dropping",
                 (unsigned long long)s->sid);
        report(c, HR_ESLOW, s, d);
    }
}

void hr__sub_dropped(hr_sub_t *sub, int notify)
{
    sub->dropped++;
    sub->c->stats.dropped++;
    if (notify) {
        char d[DETAIL_MAX];
        snprintf(d, sizeof(d), "slow consumer: queue of sid %llu full, dropping",
                 (unsigned long long)sub->sid);
        report(sub->c, HR_ESLOW, sub, d);
    }
}

/* ---- inbound frames ----------------------------------------------------- */

static void on_reply(hr_client_t *c, const hr_frame_t *f)
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
    op_t *op = op_find(c, OP_REQ, token);
    if (!op)
        return; /* late reply to a request that timed out */
    op_unlink(c, op);
    hr_message_t *m = hr__message_new(f);
    op_complete(c, op, m ? HR_OK : HR_ENOMEM, 0, m);
    hr_message_unref(&m);
    drain_check(c);
}

/* Remembers the epoch under which `s` last saw a seq (copied once per epoch change). */
static void note_epoch(hr_client_t *c, hr_sub_t *s)
{
    if (s->seen_gen == c->epoch_gen)
        return;
    s->seen_gen = c->epoch_gen;
    s->has_seen_epoch = c->has_epoch;
    memcpy(s->seen_epoch, c->epoch, sizeof(s->seen_epoch));
}

/*
 * Resume bookkeeping. For an exact topic the broker's `since` replay makes
 * the stream contiguous; for a wildcard the resume point is the smallest
 * last seq over its topics, so topics ahead of it are replayed partly twice
 * and those duplicates (always marked replay) are dropped here by their
 * per-topic last seq. A seq at or below the last one that is not such a
 * replay cannot happen within one epoch; a broker that announces no epoch
 * may have restarted unseen and begun its sequence again. That is reported
 * as HR_EGAP and the stream continues from the new seq.
 */
static int accept_seq(hr_client_t *c, hr_sub_t *s, const hr_frame_t *f)
{
    uint64_t *last;
    if (s->queue)
        return 1;
    if (!s->wildcard) {
        last = s->have_last ? &s->last : NULL;
    } else {
        seq_entry_t *e = seq_get(s, f->topic.p, f->topic.n, 1);
        if (!e)
            return 1; /* out of memory: deliver without dedup rather than lose */
        last = e->last ? &e->last : NULL;
        if (!last)
            e->last = f->seq;
    }
    if (last && f->seq <= *last) {
        char d[DETAIL_MAX];
        if (s->wildcard && (f->flags & HR_F_REPLAY))
            return 0;
        snprintf(d, sizeof(d), "sequence of %.*s restarted at %llu after %llu", (int)f->topic.n,
                 f->topic.p, (unsigned long long)f->seq, (unsigned long long)*last);
        report(c, HR_EGAP, s, d);
    }
    if (last)
        *last = f->seq;
    else if (!s->wildcard)
        s->last = f->seq;
    s->have_last = 1;
    note_epoch(c, s);
    return 1;
}

static void on_msg(hr_client_t *c, const hr_frame_t *f)
{
    c->stats.msgs_in++;
    c->stats.bytes_in += f->payload.n;
    if (c->inbox_sub && f->sid == c->inbox_sub->sid) {
        on_reply(c, f);
        return;
    }
    hr_sub_t *s = sub_find(c, f->sid);
    if (!s || s->dead)
        return; /* unsubscribed: in flight before the broker saw UNSUB */
    if (!accept_seq(c, s, f))
        return;
    if (s->pend_msgs >= s->lim_msgs || s->pend_bytes + f->payload.n > s->lim_bytes) {
        slow_consumer(c, s);
        return;
    }
    hr_message_t *m = hr__message_new(f);
    if (!m) {
        slow_consumer(c, s);
        return;
    }
    enqueue(c, s, m);
}

static void on_err(hr_client_t *c, const hr_frame_t *f)
{
    char d[DETAIL_MAX];
    int status = hr_status_from_wire((unsigned)f->code);
    int n = f->message.n > 250 ? 250 : (int)f->message.n;
    snprintf(d, sizeof(d), "ERR %llu: %.*s", (unsigned long long)f->code, n, f->message.p);
    switch (f->code) {
    case 1:
    case 2:
    case 3:
    case 6:
    case 9:
    case 11:
        c->last_err = status; /* the broker closes the connection after this */
        break;
    default:
        break;
    }
    if (f->flags & HR_F_REF) {
        op_t *op = op_find(c, OP_ACK, f->sid);
        if (op) {
            op_unlink(c, op);
            op_complete(c, op, status, 0, NULL);
            drain_check(c);
            return;
        }
        hr_sub_t *s = sub_find(c, f->sid);
        if (s && !s->dead && f->code != 10 && f->code != 8) {
            /* Anything but a history gap (or the answer to an UNSUB) refuses the SUB. */
            s->refused = 1;
            if (s->confirm) {
                op = s->confirm;
                op_unlink(c, op);
                op_complete(c, op, status, 0, NULL);
                drain_check(c);
                return;
            }
        }
        report(c, status, s && !s->dead ? s : NULL, d);
        return;
    }
    report(c, status, NULL, d);
}

static void on_gap(hr_client_t *c, const hr_frame_t *f)
{
    char d[DETAIL_MAX];
    hr_sub_t *s = sub_find(c, f->sid);
    if (!s || s->dead)
        return;
    if (s->wildcard) {
        seq_entry_t *e = seq_get(s, f->topic.p, f->topic.n, 1);
        if (e && e->last < f->last_seq)
            e->last = f->last_seq;
    } else if (!s->have_last || s->last < f->last_seq) {
        s->have_last = 1;
        s->last = f->last_seq;
    }
    note_epoch(c, s);
    snprintf(d, sizeof(d), "GAP on %.*s: seq %llu..%llu lost", (int)f->topic.n, f->topic.p,
             (unsigned long long)f->first_seq, (unsigned long long)f->last_seq);
    report(c, HR_EGAP, s, d);
}

static void ping_cb(uv_timer_t *t);

/*
 * The resume point of a subscription on a new connection; see accept_seq().
 * It travels with the epoch under which its seq was seen. When that is not
 * the epoch of this WELCOME the broker's seqs started again: it answers
 * ERR 10 (reported as HR_EGAP) and replays its whole history, so the old
 * per-topic seqs are forgotten here and the subscription counts as new,
 * asking for everything of the new epoch until it sees a seq of its own.
 */
static void resubscribe(hr_client_t *c, hr_sub_t *s)
{
    hr_sub_fields_t o;
    first_sub_fields(s, &o);
    if (s->internal || s->queue) {
        if (s->sent)
            memset(&o, 0, sizeof(o)); /* live: a replay would bypass the group */
    } else if (s->have_last) {
        o.has_last = 0;
        o.has_since = 1;
        o.since = s->last;
        if (s->wildcard) {
            o.since = UINT64_MAX;
            for (size_t i = 0; i < s->nseqs_buckets; i++)
                for (seq_entry_t *e = s->seqs[i]; e; e = e->next)
                    if (e->last < o.since)
                        o.since = e->last;
        }
        o.epoch = s->has_seen_epoch ? slice(s->seen_epoch) : (hr_slice_t){NULL, 0};
        if (s->has_seen_epoch && c->has_epoch && strcmp(s->seen_epoch, c->epoch) != 0) {
            seqs_clear(s);
            s->has_since = 1;
            s->since = 0;
            s->has_last_n = 0;
            free(s->epoch_opt);
            s->epoch_opt = NULL;
        }
    }
    send_sub(c, s, &o);
}

/* Sends the PING of every confirmation waiting for one (after its SUB). */
static void confirm_pings(hr_client_t *c)
{
    for (op_t *op = c->ops_head; op; op = op->next)
        if (op->kind == OP_CONFIRM && !op->id) {
            op->id = ++c->ping_id;
            send_ping(c, op->id);
        }
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
        conn_lost(c, HR_EPROTO);
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
            resubscribe(c, s);
    confirm_pings(c);
    if (c->pend.len) {
        if (hr_buf_append(&c->out, c->pend.base, c->pend.len) != HR_OK) {
            conn_lost(c, HR_ENOMEM);
            return;
        }
        hr_buf_reset(&c->pend);
    }
    if (c->draining) {
        for (hr_sub_t *s = c->subs_head; s; s = s->next)
            if (!s->internal && !s->drained && !s->dead) {
                if (!s->refused)
                    send_unsub(c, s->sid);
                s->drained = 1;
            }
        c->drain_ponged = 0;
        c->drain_ping = ++c->ping_id;
        send_ping(c, c->drain_ping);
    }
    want_flush(c);
    if (c->o.ping_interval_ms)
        uv_timer_start(&c->t_ping, ping_cb, c->o.ping_interval_ms, c->o.ping_interval_ms);
    int first = !c->ever_connected;
    c->ever_connected = 1;
    c->stats.reconnects += !first;
    if (c->state != HR_STATE_DRAINING)
        c->state = HR_STATE_CONNECTED;
    event(c, first ? HR_EVENT_CONNECTED : HR_EVENT_RECONNECTED, HR_OK);
}

static void on_pong(hr_client_t *c, uint64_t id)
{
    if (c->draining && id == c->drain_ping) {
        c->drain_ponged = 1;
        drain_check(c);
        return;
    }
    op_t *op = op_find(c, OP_CONFIRM, id);
    if (op) {
        op_unlink(c, op);
        op_complete(c, op, HR_OK, 0, NULL);
        drain_check(c);
        return;
    }
    op = op_find(c, OP_FLUSH, id);
    if (op && !op->ponged && c->q_deq < c->q_enq) {
        /* Complete after the messages that arrived before this PONG. */
        op->ponged = 1;
        op->mark = c->q_enq;
        op->deadline = 0;
        c->flush_waiting++;
    } else if (op) {
        op_unlink(c, op);
        op_complete(c, op, HR_OK, 0, NULL);
        drain_check(c);
    }
}

static void handle_frame(hr_client_t *c, const hr_frame_t *f)
{
    c->pings_out = 0; /* any frame proves the link alive */
    if (!c->welcomed && f->op != HR_OP_WELCOME && f->op != HR_OP_ERR) {
        conn_lost(c, HR_EPROTO);
        return;
    }
    switch (f->op) {
    case HR_OP_WELCOME:
        on_welcome(c, f);
        break;
    case HR_OP_MSG:
        on_msg(c, f);
        break;
    case HR_OP_ACK: {
        op_t *op = op_find(c, OP_ACK, f->id);
        if (op) {
            op_unlink(c, op);
            op_complete(c, op, HR_OK, f->seq, NULL);
            drain_check(c);
        }
        break;
    }
    case HR_OP_ERR:
        on_err(c, f);
        break;
    case HR_OP_GAP:
        on_gap(c, f);
        break;
    case HR_OP_PING:
        send_pong(c, f->id);
        break;
    case HR_OP_PONG:
        on_pong(c, f->id);
        break;
    default:
        conn_lost(c, HR_EPROTO);
        break;
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn_t *conn = h->data;
    hr_client_t *c = conn->c;
    if (!c || hr_buf_reserve(&c->in, READ_CHUNK) != HR_OK) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)c->in.base + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

/* Decodes and handles one frame body; a malformed one ends the connection. */
static void on_body(hr_client_t *c, const void *p, size_t n)
{
    hr_frame_t f;
    if (hr_frame_decode(p, n, 0, &f, NULL) != HR_OK) {
        conn_lost(c, HR_EPROTO);
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

static size_t max_frame(const hr_client_t *c)
{
    return c->max_frame ? c->max_frame + MSG_SLACK : DEFAULT_MAX_FRAME;
}

/*
 * A TCP client dialled to the WebSocket/HTTP port gets an HTTP response
 * (the broker answers a request line that is not one with 400 at once)
 * where a WELCOME frame should be: its "HTTP" would otherwise read as a
 * huge length prefix. Returns HR_EHTTPPORT for one, HR_EAGAIN while the
 * bytes could still become one, HR_OK otherwise.
 */
static int http_answer(const uint8_t *p, size_t n)
{
    static const char http[] = "HTTP/";
    size_t k = n < 5 ? n : 5;
    if (!n || memcmp(p, http, k) != 0)
        return HR_OK;
    return k == 5 ? HR_EHTTPPORT : HR_EAGAIN;
}

/* TCP: length-prefixed bodies. Returns the bytes consumed. */
static size_t lp_input(hr_client_t *c, conn_t *conn)
{
    size_t off = 0;
    if (!c->welcomed) {
        int r = http_answer(c->in.base, c->in.len);
        if (r == HR_EAGAIN)
            return 0;
        if (r != HR_OK) {
            conn_lost(c, r);
            return 0;
        }
    }
    while (c->conn == conn) {
        hr_slice_t body;
        size_t used;
        int r = hr_lp_next(c->in.base + off, c->in.len - off, max_frame(c), &body, &used);
        if (r == HR_EAGAIN)
            break;
        if (r != HR_OK) {
            conn_lost(c, r);
            break;
        }
        off += used;
        on_body(c, body.p, body.n);
    }
    return off;
}

/* Writes a control frame or the handshake on its own request, beside the data writes. */
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

static int write_raw(conn_t *conn, raw_write_t *w)
{
    uv_buf_t b = uv_buf_init((char *)w->buf.base, (unsigned)w->buf.len);
    w->req.data = w;
    int r = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, raw_written);
    if (r < 0) {
        hr_buf_destroy(&w->buf);
        free(w);
    }
    return r;
}

static void ws_pong(hr_client_t *c, conn_t *conn, const void *p, size_t n)
{
    raw_write_t *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    hr_buf_init(&w->buf);
    if (hr__ws_encode(&w->buf, 0xA, p, n, (uint32_t)rnd(c)) != HR_OK) {
        hr_buf_destroy(&w->buf);
        free(w);
        return;
    }
    write_raw(conn, w);
}

/* One data frame (binary or continuation) of a possibly fragmented message. */
static void ws_data(hr_client_t *c, const hr__ws_frame_t *f)
{
    if ((f->opcode == 2) == c->in_frag) { /* binary inside a message, or a stray continuation */
        conn_lost(c, HR_EPROTO);
        return;
    }
    if (f->fin && !c->in_frag) {
        on_body(c, f->data, f->len);
        return;
    }
    if (c->frag.len + f->len > max_frame(c)) {
        conn_lost(c, HR_ETOOBIG);
        return;
    }
    if (hr_buf_append(&c->frag, f->data, f->len) != HR_OK) {
        conn_lost(c, HR_ENOMEM);
        return;
    }
    c->in_frag = !f->fin;
    if (f->fin) {
        on_body(c, c->frag.base, c->frag.len);
        hr_buf_reset(&c->frag);
    }
}

/* WebSocket: the upgrade response, then frames. Returns the bytes consumed. */
static size_t ws_input(hr_client_t *c, conn_t *conn)
{
    size_t off = 0;
    if (!conn->ws_open) {
        /* An HTTP response begins with "HTTP/"; a Herald TCP frame (the broker's
         * ERR for the request it took as a length prefix) with a zero byte. */
        if (c->in.len && c->in.base[0] == 0) {
            conn_lost(c, HR_ETCPPORT);
            return 0;
        }
        int r = hr__ws_response(c->in.base, c->in.len, conn->ws_accept, &off);
        if (r == HR_EAGAIN)
            return 0;
        if (r == HR_OK)
            r = send_hello(c);
        if (r != HR_OK) {
            conn_lost(c, r);
            return 0;
        }
        conn->ws_open = 1;
    }
    while (c->conn == conn) {
        hr__ws_frame_t f;
        size_t used;
        int r = hr__ws_frame_next(c->in.base + off, c->in.len - off, max_frame(c), &f, &used);
        if (r == HR_EAGAIN)
            break;
        if (r != HR_OK) {
            conn_lost(c, r);
            break;
        }
        off += used;
        switch (f.opcode) {
        case 0x0:
        case 0x2:
            ws_data(c, &f);
            break;
        case 0x8: /* close: the ERR before it, if any, says why */
            conn_lost(c, UV_EOF);
            break;
        case 0x9:
            ws_pong(c, conn, f.data, f.len);
            break;
        case 0xA:
            break;
        default: /* text or reserved */
            conn_lost(c, HR_EPROTO);
            break;
        }
    }
    return off;
}

/*
 * Frames are decoded in place from `in`; only a trailing partial frame is
 * kept for the next read. A frame's slices stay valid while it is handled,
 * even if a callback closes the connection: `in` is only reset when the
 * next connection starts.
 */
static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *conn = st->data;
    hr_client_t *c = conn->c;
    if (!c)
        return;
    if (nread < 0) {
        conn_lost(c, (int)nread);
        return;
    }
    buf_commit(&c->in, (size_t)nread);
    size_t off = c->ws ? ws_input(c, conn) : lp_input(c, conn);
    if (c->conn == conn)
        hr_buf_consume(&c->in, off);
}

/* ---- connection lifecycle ---------------------------------------------- */

static void conn_close_cb(uv_handle_t *h)
{
    conn_t *conn = h->data;
    hr_buf_destroy(&conn->wbuf);
    free(conn);
}

static void detach(hr_client_t *c)
{
    conn_t *conn = c->conn;
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

static int pick_lost(hr_client_t *c, op_t *op, void *ctx)
{
    struct keep_set *k = ctx;
    if (op->kind == OP_FLUSH && op->ponged)
        return 0; /* answered; only waiting for local delivery */
    if (op->kind == OP_CONFIRM) {
        op->id = 0; /* the SUB goes out again after the next WELCOME, and a new PING */
        return 0;
    }
    if (op->kind != OP_ACK)
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
        double u = (double)(rnd(c) >> 11) / (double)(1ULL << 53); /* [0,1) */
        d = (uint64_t)((double)d * (1.0 - j + 2.0 * j * u));
    }
    return (uint32_t)d;
}

static void reconnect_cb(uv_timer_t *t)
{
    start_connect(t->data);
}

/* Schedules the next attempt, or gives up with `status` when out of attempts. */
static void retry_or_close(hr_client_t *c, int status)
{
    if (c->draining && !c->ever_connected) {
        begin_close(c, status);
        return;
    }
    if (!c->o.reconnect || status == HR_EAUTH || status == HR_EHTTPPORT || status == HR_ETCPPORT ||
        (c->o.max_reconnect >= 0 && c->attempts >= c->o.max_reconnect)) {
        begin_close(c, status);
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
    detach(c);
    if (!c->ever_connected && !c->o.retry_on_failed_connect) {
        begin_close(c, status);
        return;
    }
    retry_or_close(c, status);
}

/*
 * The connection is gone. Publishes not yet written are kept for the next
 * one; acks of those already written, requests and flushes fail with
 * HR_EDISCONNECTED (the broker may or may not have processed them).
 */
static void conn_lost(hr_client_t *c, int status)
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
    detach(c);
    struct keep_set k;
    salvage_out(c, &k.ids, &k.n);
    c->drain_ponged = 0;
    if (c->state != HR_STATE_DRAINING)
        c->state = HR_STATE_RECONNECTING;
    ops_finish(c, HR_EDISCONNECTED, pick_lost, &k);
    free(k.ids);
    if (c->state == HR_STATE_CLOSING)
        return;
    event(c, HR_EVENT_DISCONNECTED, status);
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
    conn_t *conn = req->data;
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
    c->in_frag = 0;
    uv_tcp_nodelay(&conn->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&conn->tcp, alloc_cb, read_cb);
    if (r == 0 && c->ws) {
        /* HELLO follows once the server accepted the upgrade (ws_input). */
        uint8_t nonce[16];
        raw_write_t *w = calloc(1, sizeof(*w));
        for (int i = 0; i < 16; i += 8) {
            uint64_t x = rnd(c);
            memcpy(nonce + i, &x, 8);
        }
        r = HR_ENOMEM;
        if (w) {
            hr_buf_init(&w->buf);
            r = hr__ws_request(&w->buf, c->host, c->port, c->path, nonce, conn->ws_accept);
            if (r == HR_OK)
                r = write_raw(conn, w);
            else {
                hr_buf_destroy(&w->buf);
                free(w);
            }
        }
    } else if (r == 0) {
        r = send_hello(c);
    }
    if (r < 0)
        attempt_failed(c, r);
}

static void dial(hr_client_t *c, const struct sockaddr *sa)
{
    conn_t *conn = calloc(1, sizeof(*conn));
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

static void start_connect(hr_client_t *c)
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
    if (!connected(c))
        return;
    if (c->pings_out >= c->o.max_pings_out) {
        conn_lost(c, HR_ETIMEDOUT);
        return;
    }
    c->pings_out++;
    send_ping(c, ++c->ping_id);
}

/* ---- close -------------------------------------------------------------- */

/*
 * The last step of closing, outside any other callback. Messages that had
 * arrived are still delivered when the client gave up on its own (the
 * broker closed and reconnecting is off or exhausted); after
 * hr_client_close() they are dropped, as documented.
 */
static void finalize(hr_client_t *c)
{
    hr_message_t *m;
    while ((m = dequeue(c)) != NULL) {
        hr_sub_t *s = m->qsub;
        if (!c->user_closed && !s->dead) {
            s->delivered++;
            s->cb(c, s, m, s->arg);
        }
        hr_message_unref(&m);
        sub_decref(s);
    }
    ops_finish(c, HR_ECLOSED, NULL, NULL);
    if (c->draining && c->drain_cb) {
        hr_done_cb cb = c->drain_cb;
        c->drain_cb = NULL;
        cb(c, c->close_status ? c->close_status : HR_ECLOSED, c->drain_arg);
    }
    hr_sub_t *s = c->subs_head;
    while (s) {
        hr_sub_t *next = s->next;
        s->dead = 1;
        sub_decref(s);
        s = next;
    }
    c->subs_head = c->subs_tail = NULL;
    event(c, HR_EVENT_CLOSED, c->close_status);
    free(c->subs_hash);
    hr_buf_destroy(&c->in);
    hr_buf_destroy(&c->out);
    hr_buf_destroy(&c->pend);
    hr_buf_destroy(&c->frag);
    free(c->name);
    free(c->token);
    free(c->host);
    free(c->path);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    hr_client_t *c = h->data;
    if (--c->handles_open == 0)
        finalize(c);
}

/*
 * Closing is asynchronous: handles close, and the final callbacks (failed
 * ops, CLOSED) run from the last close callback, outside any user callback.
 */
static void begin_close(hr_client_t *c, int status)
{
    if (c->state == HR_STATE_CLOSING)
        return;
    c->state = HR_STATE_CLOSING;
    c->close_status = status;
    detach(c);
    if (c->gai) {
        c->gai->data = NULL;
        uv_cancel((uv_req_t *)c->gai);
        c->gai = NULL;
    }
    uv_close((uv_handle_t *)&c->t_reconnect, handle_closed);
    uv_close((uv_handle_t *)&c->t_connect, handle_closed);
    uv_close((uv_handle_t *)&c->t_ping, handle_closed);
    uv_close((uv_handle_t *)&c->t_deadline, handle_closed);
    uv_close((uv_handle_t *)&c->t_drain, handle_closed);
    uv_close((uv_handle_t *)&c->idle, handle_closed);
    uv_close((uv_handle_t *)&c->prep, handle_closed);
}

void hr_client_close(hr_client_t *c)
{
    if (c && c->state != HR_STATE_CLOSING) {
        c->user_closed = 1;
        begin_close(c, HR_OK);
    }
}

static void drain_timeout_cb(uv_timer_t *t)
{
    hr_client_t *c = t->data;
    hr_done_cb cb = c->drain_cb;
    c->drain_cb = NULL;
    if (cb)
        cb(c, HR_ETIMEDOUT, c->drain_arg);
    begin_close(c, HR_OK);
}

static void drain_check(hr_client_t *c)
{
    if (!c->draining || c->state == HR_STATE_CLOSING)
        return;
    if (!connected(c) || !c->drain_ponged || c->q_head || c->ops_head || c->pend.len ||
        c->out.len || (c->conn && c->conn->writing))
        return;
    hr_done_cb cb = c->drain_cb;
    c->drain_cb = NULL;
    if (cb)
        cb(c, HR_OK, c->drain_arg);
    begin_close(c, HR_OK);
}

int hr_client_drain(hr_client_t *c, uint32_t timeout_ms, hr_done_cb cb, void *arg)
{
    if (c->draining || c->state == HR_STATE_CLOSING)
        return HR_ECLOSED;
    c->draining = 1;
    c->state = HR_STATE_DRAINING;
    c->drain_cb = cb;
    c->drain_arg = arg;
    uv_timer_start(&c->t_drain, drain_timeout_cb, timeout_ms ? timeout_ms : c->o.request_timeout_ms,
                   0);
    if (connected(c)) {
        for (hr_sub_t *s = c->subs_head; s; s = s->next)
            if (!s->internal && !s->dead) {
                if (!s->refused)
                    send_unsub(c, s->sid);
                s->drained = 1;
            }
        c->drain_ponged = 0;
        c->drain_ping = ++c->ping_id;
        send_ping(c, c->drain_ping);
    }
    return HR_OK;
}

/* ---- public: lifecycle -------------------------------------------------- */

int hr_client_new(uv_loop_t *loop, const hr_client_opts_t *opts, hr_client_t **out)
{
    hr_client_opts_t def;
    if (!loop || !out)
        return HR_EINVAL;
    if (!opts) {
        hr_client_opts_init(&def);
        opts = &def;
    }
    if (opts->reconnect_jitter < 0 || opts->reconnect_jitter > 1 || !opts->deliver_batch ||
        !opts->pending_msgs_limit || !opts->pending_bytes_limit)
        return HR_EINVAL;
    hr_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return HR_ENOMEM;
    c->loop = loop;
    c->o = *opts;
    int r = parse_url(c, opts->url);
    if (r != HR_OK) {
        free(c->host);
        free(c->path);
        free(c);
        return r;
    }
    c->name = dupstr(opts->name);
    c->token = dupstr(opts->token);
    if ((opts->name && !c->name) || (opts->token && !c->token)) {
        free(c->name);
        free(c->token);
        free(c->host);
        free(c->path);
        free(c);
        return HR_ENOMEM;
    }
    c->o.url = c->o.name = c->o.token = NULL;
    c->state = HR_STATE_CONNECTING;
    hr_buf_init(&c->in);
    hr_buf_init(&c->out);
    hr_buf_init(&c->pend);
    hr_buf_init(&c->frag);
    uint64_t seed = 0;
    if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0 || !seed)
        seed = uv_hrtime() ^ (uint64_t)(uintptr_t)c;
    c->rng = seed | 1;
    uv_timer_init(loop, &c->t_reconnect);
    uv_timer_init(loop, &c->t_connect);
    uv_timer_init(loop, &c->t_ping);
    uv_timer_init(loop, &c->t_deadline);
    uv_timer_init(loop, &c->t_drain);
    uv_idle_init(loop, &c->idle);
    uv_prepare_init(loop, &c->prep);
    c->t_reconnect.data = c->t_connect.data = c->t_ping.data = c->t_deadline.data = c;
    c->t_drain.data = c->idle.data = c->prep.data = c;
    c->handles_open = 7;
    *out = c;
    start_connect(c);
    return HR_OK;
}

int hr_client_state(const hr_client_t *c)
{
    return c->state;
}

uint64_t hr_client_id(const hr_client_t *c)
{
    return c->client_id;
}

uint64_t hr_client_max_payload(const hr_client_t *c)
{
    return c->max_payload;
}

const char *hr_client_epoch(const hr_client_t *c)
{
    return c->has_epoch ? c->epoch : NULL;
}

uv_loop_t *hr_client_loop(const hr_client_t *c)
{
    return c->loop;
}

void hr_client_stats(const hr_client_t *c, hr_client_stats_t *out)
{
    *out = c->stats;
}

/* ---- public: publish ---------------------------------------------------- */

static int accepting(const hr_client_t *c)
{
    return c->state != HR_STATE_CLOSING && !c->draining;
}

/*
 * Encodes one PUB into `out` when connected, else into `pend`. Buffer limits
 * are checked against a bound of the frame's size before encoding.
 */
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
                   const char *reply, const hr_header_t *headers, size_t nheaders, op_t *op)
{
    size_t est;
    int r = hr__publish_check(topic, data, len, reply, headers, nheaders, c->max_payload, &est);
    if (r != HR_OK)
        return r;
    hr_buf_t *b;
    if (connected(c)) {
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
    po.reply = slice(reply);
    po.headers = headers;
    po.nheaders = nheaders;
    if (op) {
        op->id = ++c->next_id;
        po.has_ack = 1;
        po.ack = op->id;
    }
    hr_slice_t t = {topic, strlen(topic)}, p = {data, len};
    ENCODE(b, hr_enc_pub(b, t, p, &po));
    c->stats.msgs_out++;
    c->stats.bytes_out += len;
    if (op)
        op_link(c, op);
    if (b == &c->out)
        want_flush(c);
    return HR_OK;
}

int hr_client_publish(hr_client_t *c, const char *topic, const void *data, size_t len,
                      const hr_publish_opts_t *opts)
{
    if (!c || !topic)
        return HR_EINVAL;
    if (!accepting(c))
        return HR_ECLOSED;
    op_t *op = NULL;
    if (opts && opts->on_ack) {
        op = calloc(1, sizeof(*op));
        if (!op)
            return HR_ENOMEM;
        op->kind = OP_ACK;
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

/* ---- public: subscribe -------------------------------------------------- */

static int subscribe(hr_client_t *c, const char *pattern, const hr_sub_opts_t *so, hr_msg_cb cb,
                     void *arg, int internal, hr_sub_t **out)
{
    if (hr_pattern_validate(pattern, strlen(pattern)) != HR_OK)
        return HR_ETOPIC;
    if (so && so->queue && hr_topic_validate(so->queue, strlen(so->queue)) != HR_OK)
        return HR_EINVAL;
    if (so && so->epoch && strlen(so->epoch) > HR_EPOCH_MAX)
        return HR_EINVAL;
    hr_sub_t *s = calloc(1, sizeof(*s));
    op_t *op = so && so->on_confirm ? calloc(1, sizeof(*op)) : NULL;
    if (!s || (so && so->on_confirm && !op)) {
        free(s);
        free(op);
        return HR_ENOMEM;
    }
    s->c = c;
    s->refs = 1;
    s->sid = ++c->next_id;
    s->pattern = dupstr(pattern);
    s->queue = so && so->queue ? dupstr(so->queue) : NULL;
    s->wildcard = is_wildcard(pattern);
    s->internal = internal;
    s->cb = cb;
    s->arg = arg;
    s->has_since = so ? so->has_since : 0;
    s->since = so ? so->since : 0;
    s->has_last_n = so ? so->has_last : 0;
    s->last_n = so ? so->last : 0;
    s->epoch_opt = so && so->epoch ? dupstr(so->epoch) : NULL;
    s->lim_msgs = so && so->pending_msgs_limit ? so->pending_msgs_limit : c->o.pending_msgs_limit;
    s->lim_bytes =
        so && so->pending_bytes_limit ? so->pending_bytes_limit : c->o.pending_bytes_limit;
    if (!s->pattern || (so && so->queue && !s->queue) || (so && so->epoch && !s->epoch_opt) ||
        sub_insert(c, s) != HR_OK) {
        sub_free(s);
        free(op);
        return HR_ENOMEM;
    }
    if (connected(c)) {
        hr_sub_fields_t o;
        first_sub_fields(s, &o);
        if (send_sub(c, s, &o) != HR_OK || (op && send_ping(c, ++c->ping_id) != HR_OK)) {
            sub_remove(c, s);
            sub_free(s);
            free(op);
            return HR_ENOMEM;
        }
    }
    if (op) {
        /* The PING went out right after the SUB; before the WELCOME it waits for confirm_pings().
         */
        op->kind = OP_CONFIRM;
        op->id = connected(c) ? c->ping_id : 0;
        op->cb.confirm = so->on_confirm;
        op->arg = so->confirm_arg;
        op->sub = s;
        op->deadline = uv_now(c->loop) + c->o.request_timeout_ms;
        s->refs++;
        s->confirm = op;
        op_link(c, op);
        deadline_arm(c, op->deadline);
    }
    *out = s;
    return HR_OK;
}

int hr_client_subscribe(hr_client_t *c, const char *pattern, const hr_sub_opts_t *opts,
                        hr_msg_cb cb, void *arg, hr_sub_t **out)
{
    if (!c || !pattern || !cb || !out)
        return HR_EINVAL;
    if (!accepting(c))
        return HR_ECLOSED;
    return subscribe(c, pattern, opts, cb, arg, 0, out);
}

int hr_client_queue_subscribe(hr_client_t *c, const char *pattern, const char *queue, hr_msg_cb cb,
                              void *arg, hr_sub_t **out)
{
    hr_sub_opts_t so;
    if (!queue)
        return HR_EINVAL;
    memset(&so, 0, sizeof(so));
    so.queue = queue;
    return hr_client_subscribe(c, pattern, &so, cb, arg, out);
}

int hr_sub_unsubscribe(hr_sub_t *s)
{
    if (!s || s->dead)
        return HR_EINVAL;
    hr_client_t *c = s->c;
    s->dead = 1;
    sub_remove(c, s);
    if (c->inbox_sub == s)
        c->inbox_sub = NULL;
    if (connected(c) && !s->drained && !s->refused)
        send_unsub(c, s->sid);
    if (s->confirm) {
        op_unlink(c, s->confirm);
        free(s->confirm);
        s->confirm = NULL;
        assert(s->refs >= 2);
        s->refs--; /* the op's reference */
    }
    sub_decref(s);
    drain_check(c);
    return HR_OK;
}

uint64_t hr_sub_sid(const hr_sub_t *s)
{
    return s->sid;
}

void hr_sub_pending(const hr_sub_t *s, size_t *msgs, size_t *bytes)
{
    if (msgs)
        *msgs = s->pend_msgs;
    if (bytes)
        *bytes = s->pend_bytes;
}

uint64_t hr_sub_dropped(const hr_sub_t *s)
{
    return s->dropped;
}

uint64_t hr_sub_delivered(const hr_sub_t *s)
{
    return s->delivered;
}

void hr_sub_set_pending_limits(hr_sub_t *s, size_t msgs, size_t bytes)
{
    if (msgs)
        s->lim_msgs = msgs;
    if (bytes)
        s->lim_bytes = bytes;
}

/* ---- public: request, flush --------------------------------------------- */

static void inbox_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    /* Replies are matched in on_reply() and never queued. */
}

static int ensure_inbox(hr_client_t *c)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char pat[sizeof(c->inbox) + 2];
    if (c->inbox_sub)
        return HR_OK;
    memcpy(c->inbox, "_INBOX.", 7);
    for (int i = 0; i < 22; i++)
        c->inbox[7 + i] = abc[rnd(c) % (sizeof(abc) - 1)];
    c->inbox[29] = '\0';
    c->inbox_len = 29;
    snprintf(pat, sizeof(pat), "%s.>", c->inbox);
    return subscribe(c, pat, NULL, inbox_cb, NULL, 1, &c->inbox_sub);
}

int hr_client_request(hr_client_t *c, const char *topic, const void *data, size_t len,
                      uint32_t timeout_ms, hr_request_cb cb, void *arg)
{
    char reply[sizeof(c->inbox) + 24];
    if (!c || !topic || !cb)
        return HR_EINVAL;
    if (!accepting(c))
        return HR_ECLOSED;
    int r = ensure_inbox(c);
    if (r != HR_OK)
        return r;
    op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return HR_ENOMEM;
    op->kind = OP_REQ;
    op->id = ++c->next_id;
    op->cb.req = cb;
    op->arg = arg;
    op->deadline = uv_now(c->loop) + (timeout_ms ? timeout_ms : c->o.request_timeout_ms);
    snprintf(reply, sizeof(reply), "%s.%llu", c->inbox, (unsigned long long)op->id);
    r = publish(c, topic, data, len, reply, NULL, 0, NULL);
    if (r != HR_OK) {
        free(op);
        return r;
    }
    op_link(c, op);
    deadline_arm(c, op->deadline);
    return HR_OK;
}

int hr_client_flush(hr_client_t *c, hr_done_cb cb, void *arg)
{
    if (!c || !cb)
        return HR_EINVAL;
    if (c->state == HR_STATE_CLOSING)
        return HR_ECLOSED;
    if (!connected(c))
        return HR_ENOTCONN;
    op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return HR_ENOMEM;
    op->kind = OP_FLUSH;
    op->id = ++c->ping_id;
    op->cb.done = cb;
    op->arg = arg;
    op->deadline = uv_now(c->loop) + c->o.request_timeout_ms;
    int r = send_ping(c, op->id);
    if (r != HR_OK) {
        free(op);
        return r;
    }
    op_link(c, op);
    deadline_arm(c, op->deadline);
    return HR_OK;
}
