/* SPDX-License-Identifier: MIT */
/* libherald asynchronous client internals: the client, its subscriptions, operations, transports.
 */
#ifndef HERALD_CLIENT_ASYNC_H
#define HERALD_CLIENT_ASYNC_H

#include <string.h>

#include "client_int.h"

/*
 * The asynchronous client is four files of one role each:
 *   client.c     options, URL, lifecycle (new, close, drain), accessors
 *   conn.c       the connection: connect, reconnect, read path, frame dispatch, output
 *   transport.c  the transports (TCP length prefix, WebSocket) behind hr__transport_t
 *   tls.c        TLS under either transport (tls://, wss://), on protocol/tlsio.c
 *   sub.c        subscriptions, resume state, the delivery queue
 *   ops.c        pending operations (acks, requests, flushes, confirmations), publish
 * All of it runs on the client's loop thread.
 */

#define HR__DEFAULT_MAX_FRAME (16u << 20) /* before WELCOME tells the real one */
#define HR__DETAIL_MAX 300                /* error details passed to on_error */
/* What the broker's plaintext answer on a TLS port (an ERR 1, or an HTTP 400) says. */
#define HR__TLS_PORT_HINT "speaks TLS"

typedef struct hr__conn_s hr__conn_t;

/*
 * A transport: how a connected socket starts its session and how bytes
 * become frame bodies and back. Frames are always queued in `c->out` as
 * length-prefixed bodies (so publishes can be salvaged across reconnects
 * whatever the transport); `frame_out` turns them into what goes on the wire.
 */
typedef struct hr__transport_s {
    const char *scheme; /* "tcp", "ws", "tls", "wss" */
    int default_port;
    int has_path; /* the URL may carry a path */
    int secure;   /* TLS under the transport */
    /** Starts the session on a fresh connection (HELLO, or the upgrade request). */
    int (*start)(hr_client_t *c, hr__conn_t *conn);
    /**
     * Takes the next unit from `p`: HR_OK with `*used` bytes consumed and,
     * if it completes a frame body, `*body` set (else body->p is NULL);
     * HR_EAGAIN when more bytes are needed; another status ends the connection.
     */
    int (*next)(hr_client_t *c, hr__conn_t *conn, uint8_t *p, size_t n, hr_slice_t *body,
                size_t *used);
    /** Moves the length-prefixed frames of `c->out` into `conn->wbuf` for one write. */
    int (*frame_out)(hr_client_t *c, hr__conn_t *conn);
} hr__transport_t;

extern const hr__transport_t hr__tcp_transport;
extern const hr__transport_t hr__ws_transport;
extern const hr__transport_t hr__tls_transport;
extern const hr__transport_t hr__wss_transport;

enum hr__op_kind { HR__OP_ACK = 1, HR__OP_REQ = 2, HR__OP_FLUSH = 3, HR__OP_CONFIRM = 4 };

/*
 * A pending operation: a publish waiting for its ACK, a request waiting for
 * its reply, a flush waiting for its PONG, a subscription waiting for the
 * PONG that confirms it (`id` is that PING's id, 0 until it is sent). Ack
 * ids and sids share one counter so that an ERR's `ref` names exactly one
 * of them.
 */
typedef struct hr__op_s {
    struct hr__op_s *next, *prev;
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
    hr_sub_t *sub; /* HR__OP_CONFIRM */
} hr__op_t;

/* Last seq seen per topic, for wildcard subscriptions. */
typedef struct hr__seq_entry_s {
    struct hr__seq_entry_s *next;
    uint64_t last;
    char topic[];
} hr__seq_entry_t;

/* A subscription (the public hr_sub_t). */
struct hr_subscription_s {
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
    char *epoch_opt;   /* NULL: none */
    hr_buf_t xopts;    /* transforms: encoded SUB option entries, sent with every SUB */
    uint32_t nxopts;   /* entries in xopts */
    int refused;       /* the broker refused the SUB: not restored, not unsubscribed */
    hr__op_t *confirm; /* pending on_confirm, or NULL */
    /* Resume state: last seq received, per topic, and the epoch it came under. */
    int have_last;
    uint64_t last;
    uint64_t seen_gen; /* c->epoch_gen when `seen_epoch` was taken */
    int has_seen_epoch;
    char seen_epoch[HR_EPOCH_MAX + 1];
    hr__seq_entry_t **seqs; /* wildcard: hash by topic */
    size_t nseqs_buckets, nseqs;
    /* Pending limits. */
    size_t pend_msgs, pend_bytes, lim_msgs, lim_bytes;
    uint64_t dropped, delivered;
    int slow;
    /* Presence: member info (NULL: not a member); a $PRES. watcher's callback (or NULL). */
    char *presence;
    size_t presence_len;
    hr_presence_cb pres_cb;
    void *pres_arg;
};

/* One TCP connection attempt; outlives its client link until uv_close completes. */
typedef struct hr__conn_s {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    hr_buf_t wbuf;  /* bytes of the write in flight */
    hr_client_t *c; /* NULL once detached */
    int writing;
    int ws_open;            /* WebSocket handshake done */
    char ws_accept[29];     /* the Sec-WebSocket-Accept the server must send */
    struct hr_tlsio_s *tls; /* tls:// and wss:// only: the TLS pump */
    int tls_first;          /* the first byte the server sent, -1 before */
    int tls_asked;          /* the server asked for a client certificate */
} hr__conn_t;

struct hr_client_s {
    uv_loop_t *loop;
    hr_client_opts_t o;
    char *name, *token, *host, *path;
    int port;
    const hr__transport_t *tp; /* from the URL's scheme */
    void *tls_ctx;             /* SSL_CTX of tls:// and wss:// clients, else NULL */
    void *tls_session;         /* SSL_SESSION to resume on the next connection, or NULL */
    char *tls_name;            /* opts.tls_server_name, or NULL: the URL's host */
    int in_frag;               /* a fragmented WebSocket message is being reassembled in `frag` */
    int frag_done; /* `frag` holds a whole message handed out: reset before reading on */
    hr_buf_t frag;
    int state;
    int close_status;
    int user_closed; /* hr_client_close() was called: queued messages are dropped */
    int ever_connected;
    int welcomed; /* current connection got its WELCOME */
    hr__conn_t *conn;
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
    hr__op_t *ops_head, *ops_tail;
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

/* ---- small helpers ------------------------------------------------------ */

static inline hr_slice_t hr__slice(const char *s)
{
    hr_slice_t sl = {s, s ? strlen(s) : 0};
    return sl;
}

static inline void hr__buf_truncate(hr_buf_t *b, size_t len)
{
    b->len = len;
}

static inline void hr__report(hr_client_t *c, int status, hr_sub_t *sub, const char *detail)
{
    if (c->o.on_error)
        c->o.on_error(c, status, sub, detail ? detail : hr_strerror(status), c->o.arg);
}

static inline void hr__event(hr_client_t *c, int ev, int status)
{
    if (c->o.on_state)
        c->o.on_state(c, ev, status, c->o.arg);
}

static inline int hr__connected(const hr_client_t *c)
{
    return c->conn && c->welcomed;
}

static inline int hr__accepting(const hr_client_t *c)
{
    return c->state != HR_STATE_CLOSING && !c->draining;
}

/*
 * Each encoder call appends one length-prefixed frame; on failure the
 * buffer is cut back so a half frame never goes out.
 */
#define HR__ENCODE(buf, expr)                                                                      \
    do {                                                                                           \
        size_t mark_ = (buf)->len;                                                                 \
        size_t lp_ = hr_lp_begin(buf);                                                             \
        int r_ = (expr);                                                                           \
        if (r_ != HR_OK || (buf)->oom) {                                                           \
            hr__buf_truncate((buf), mark_);                                                        \
            (buf)->oom = 0;                                                                        \
            return HR_ENOMEM;                                                                      \
        }                                                                                          \
        hr_lp_end((buf), lp_);                                                                     \
    } while (0)

/* ---- client.c ------------------------------------------------------------ */

/** xorshift64*: jitter, masks and inbox names need spread, not secrecy. */
HR__HIDDEN uint64_t hr__rand(hr_client_t *c);
/** strdup() that passes NULL through; NULL on OOM. */
HR__HIDDEN char *hr__strdup(const char *s);
/** Starts closing with `status`: handles close, then the CLOSED event. */
HR__HIDDEN void hr__client_begin_close(hr_client_t *c, int status);
/** Completes a drain once everything it waits for is done. */
HR__HIDDEN void hr__drain_check(hr_client_t *c);
/** Sends what a drain sends on the current connection: UNSUBs, then its PING. */
HR__HIDDEN void hr__drain_send(hr_client_t *c);

/* ---- conn.c -------------------------------------------------------------- */

/** Starts a connection attempt (resolving the host if needed). */
HR__HIDDEN void hr__conn_start(hr_client_t *c);
/** The current connection is gone (or an attempt failed) with `status`. */
HR__HIDDEN void hr__conn_lost(hr_client_t *c, int status);
/** Closes the current connection's socket and forgets it. */
HR__HIDDEN void hr__conn_detach(hr_client_t *c);
/** Writes what `c->out` holds before the loop next polls. */
HR__HIDDEN void hr__want_flush(hr_client_t *c);
/** Decodes and handles one frame body; a malformed one ends the connection. */
HR__HIDDEN void hr__on_body(hr_client_t *c, const void *p, size_t n);
/** The largest frame body accepted from the broker. */
HR__HIDDEN size_t hr__max_frame(const hr_client_t *c);
/* Frame senders: HR_OK or HR_ENOMEM (nothing queued). */
HR__HIDDEN int hr__send_hello(hr_client_t *c);
HR__HIDDEN int hr__send_unsub(hr_client_t *c, uint64_t sid);
HR__HIDDEN int hr__send_ping(hr_client_t *c, uint64_t id);

/** Writes `b`'s bytes (taken: `b` is left empty) on a request of their own, through TLS if any. */
HR__HIDDEN int hr__conn_write(hr_client_t *c, hr__conn_t *conn, hr_buf_t *b);

/* ---- tls.c --------------------------------------------------------------- */

/** The SSL_CTX for `o` (CA, client certificate, ALPN http/1.1 if `wss`). HR_ETLSCONF, HR_EINVAL. */
HR__HIDDEN int hr__tls_ctx_new(const hr_client_opts_t *o, int wss, void **ctx);
/** Frees the client's TLS context and kept session. */
HR__HIDDEN void hr__tls_client_free(hr_client_t *c);
/** Nonzero when the current connection resumed an earlier TLS session. */
HR__HIDDEN int hr__tls_resumed(const hr_client_t *c);
/** Starts the client side of TLS on `conn` (SNI, the name check). HR_ENOMEM, HR_EINVAL. */
HR__HIDDEN int hr__tls_new(hr_client_t *c, hr__conn_t *conn);
HR__HIDDEN void hr__tls_free(hr__conn_t *conn);
/** Nonzero once the TLS handshake of `conn` is complete. */
HR__HIDDEN int hr__tls_ready(const hr__conn_t *conn);
/**
 * Feeds `n` bytes of ciphertext from the socket: advances the handshake
 * (calling `on_up` once it completes), appends the plaintext to `plain` and
 * what TLS must send back to `wire`. HR_OK, UV_EOF (close_notify) or the
 * failure (HR_ECERT, HR_ECERTNAME, HR_ECERTEXPIRED, HR_ECLIENTCERT,
 * HR_EPLAINPORT, HR_ETLS: reported to on_error with the reason first).
 */
HR__HIDDEN int hr__tls_input(hr_client_t *c, hr__conn_t *conn, const uint8_t *p, size_t n,
                             hr_buf_t *plain, hr_buf_t *wire,
                             int (*on_up)(hr_client_t *c, void *arg), void *arg);
/**
 * The status for a connection of `c` that ended with `status` (a reset or
 * EOF): HR_ECLIENTCERT, reported with the reason, when it ended before
 * WELCOME right after the server asked for a client certificate.
 */
HR__HIDDEN int hr__tls_lost(hr_client_t *c, hr__conn_t *conn, int status);
/**
 * Replaces the plaintext in `b` with its ciphertext (anything TLS had
 * pending first), in as few records as it takes: a batch of frames is a
 * few full records, not one per frame. HR_OK, HR_ENOMEM, HR_ETLS.
 */
HR__HIDDEN int hr__tls_seal(hr_client_t *c, hr__conn_t *conn, hr_buf_t *b);

/* ---- filter.c ------------------------------------------------------------ */

/**
 * Appends the transforms of `so` (NULL: none) to `b` as SUB option entries;
 * `*n` gets their count. HR_OK, HR_EINVAL (bad `fields`) or HR_ENOMEM.
 */
HR__HIDDEN int hr__xopts_encode(const hr_sub_opts_t *so, hr_buf_t *b, uint32_t *n);

/* ---- sub.c --------------------------------------------------------------- */

HR__HIDDEN hr_sub_t *hr__sub_find(hr_client_t *c, uint64_t sid);
HR__HIDDEN void hr__sub_remove(hr_client_t *c, hr_sub_t *s);
HR__HIDDEN void hr__sub_decref(hr_sub_t *s);
/** Sends the SUB that restores `s` on a new connection, from where it left off. */
HR__HIDDEN void hr__sub_resume(hr_client_t *c, hr_sub_t *s);
/** Creates a subscription (`internal`: the request inbox). See hr_client_subscribe(). */
HR__HIDDEN int hr__subscribe(hr_client_t *c, const char *pattern, const hr_sub_opts_t *so,
                             hr_msg_cb cb, void *arg, int internal, hr_sub_t **out);
HR__HIDDEN void hr__on_msg(hr_client_t *c, const hr_frame_t *f);
HR__HIDDEN void hr__on_gap(hr_client_t *c, const hr_frame_t *f);
/** Takes the next message off the delivery queue (its qsub holds a reference), or NULL. */
HR__HIDDEN hr_message_t *hr__deliver_next(hr_client_t *c);

/* ---- ops.c --------------------------------------------------------------- */

HR__HIDDEN void hr__op_link(hr_client_t *c, hr__op_t *op);
HR__HIDDEN void hr__op_unlink(hr_client_t *c, hr__op_t *op);
HR__HIDDEN hr__op_t *hr__op_find(hr_client_t *c, int kind, uint64_t id);
/** Completes and frees `op` (already unlinked). */
HR__HIDDEN void hr__op_complete(hr_client_t *c, hr__op_t *op, int status, uint64_t seq,
                                hr_message_t *reply);
/** Completes with `status` every op `pick` selects (all if NULL). */
HR__HIDDEN void hr__ops_finish(hr_client_t *c, int status,
                               int (*pick)(hr_client_t *, hr__op_t *, void *), void *ctx);
HR__HIDDEN void hr__deadline_arm(hr_client_t *c, uint64_t deadline);
/** Sends the PING of every confirmation waiting for one (after the SUBs of a WELCOME). */
HR__HIDDEN void hr__confirm_pings(hr_client_t *c);
/** Completes the flushes whose PONG came before messages now delivered. */
HR__HIDDEN void hr__flush_delivered(hr_client_t *c);
HR__HIDDEN void hr__on_pong(hr_client_t *c, uint64_t id);
HR__HIDDEN void hr__on_reply(hr_client_t *c, const hr_frame_t *f);

#endif
