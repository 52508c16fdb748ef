/* SPDX-License-Identifier: MIT */
/* One worker: listeners, connections, output queues, router. Loop thread only. */
#ifndef HERALD_BROKER_SERVER_H
#define HERALD_BROKER_SERVER_H

#include <uv.h>

#include "config.h"
#include "engine.h"
#include "herald/protocol.h"
#include "index.h"
#include "limits.h"
#include "router.h"

typedef struct hr_server_s hr_server_t;
typedef struct hr_conn_s hr_conn_t;

/* Transport kinds, also the index of per-transport metrics. */
enum hr_tkind { HR_T_TCP = 0, HR_T_WS = 1, HR_T_COUNT };

/*
 * A transport turns socket bytes into frame bodies (handing each to
 * hr__dispatch_frame()) and knows how a body is framed on the way out.
 * TCP (tcp.c) is the 4-byte length prefix; WebSocket (ws.c) does its
 * handshake and RFC 6455 framing and keeps its state in conn->tdata. The
 * connection code (conn.c) knows no transport by name.
 */
typedef struct hr_transport_s {
    const char *name;
    int kind;            /* enum hr_tkind */
    int framing;         /* enum hr_framing, for shared delivery headers */
    int ready_at_accept; /* frames flow from the first byte (no transport handshake) */
    /** Bytes arrived in the loop-wide read buffer (borrowed for the call). */
    void (*on_data)(hr_conn_t *c, const char *p, size_t n);
    /** Optional: offer a buffer of the transport's own for the next read; 1 if it did. */
    int (*read_buf)(hr_conn_t *c, uv_buf_t *buf);
    /** With read_buf: `n` bytes arrived in the transport's own buffer. */
    void (*read_done)(hr_conn_t *c, size_t n);
    /** The broker is closing `c` for `status` (HR_OK: no ERR): queue any goodbye (close frame). */
    void (*on_closing)(hr_conn_t *c, int status);
    /** `c` is being freed: release conn->tdata. */
    void (*on_free)(hr_conn_t *c);
    /** Optional: called by the sweep timer; return nonzero to close (timeouts). */
    int (*on_sweep)(hr_conn_t *c, uint64_t now_ms);
} hr_transport_t;

#include "outq.h"
#include "stage.h"

enum hr_conn_flag {
    HR_C_HELLO = 1u << 0,       /* HELLO done */
    HR_C_NO_ECHO = 1u << 1,     /* echo: false */
    HR_C_CLOSING = 1u << 2,     /* ERR sent or peer gone: no more input, draining */
    HR_C_PENDING = 1u << 3,     /* in the flush list */
    HR_C_PAUSED = 1u << 4,      /* reading paused by output backpressure */
    HR_C_SHUT = 1u << 5,        /* uv_shutdown issued */
    HR_C_CLOSED = 1u << 6,      /* uv_close issued */
    HR_C_PROTOCOL = 1u << 7,    /* the transport handshake is done: frames flow */
    HR_C_OPS_WAIT = 1u << 8,    /* reading paused: too many engine calls in flight */
    HR_C_TURN = 1u << 9,        /* an answer that waited is being given: its ERRs go out now */
    HR_C_CONGESTED = 1u << 10,  /* reading paused: the rings to other workers are full */
    HR_C_FAILING = 1u << 11,    /* a fatal ERR waits for the answers to earlier frames */
    HR_C_STAGE_WAIT = 1u << 12, /* reading paused: a publish pipeline it writes into is full */
};

struct hr_conn_s {
    uv_tcp_t tcp;
    hr_server_t *srv;
    const hr_transport_t *tp;
    void *tdata;    /* transport state */
    void *auth;     /* permissions from auth.c; NULL: unrestricted */
    uint64_t id;    /* client id: unique across the workers of one broker */
    uint32_t flags; /* HR_C_* */
    uint8_t pings;  /* unanswered server pings */
    hr_buf_t in;    /* bytes of a partial frame only; empty when idle */
    hr_outq_t out;
    hr_stage_t sink; /* the output queue as a stream stage: its fill is the pending bytes */
    hr_sub_t **subs; /* owned */
    uint32_t nsubs, subcap;
    uint64_t idle_since;  /* ms: last frame received or ping sent */
    hr_limits_conn_t lim; /* limits.c: per-IP slot, pending handshake, publish bucket */
    uint64_t soft_since;  /* ms: when output went over out-soft, 0 if not */
    uint64_t deadline;    /* ms: force close when CLOSING lasts past this */
    uv_write_t *wreq;     /* owned while a write is in flight */
    struct hr_reply_s *rq_head, *rq_tail; /* answers waiting for an earlier one */
    uint32_t inflight_ops; /* publishes and replays the engine has not answered yet */
    int fail_status;       /* HR_C_FAILING: the ERR to send once the answers are out */
    const char *fail_msg;
    struct hr_park_s *park;  /* policy.c: parked messages and lost ranges, NULL when none */
    struct hr_tls_s *tls;    /* tls.c: the TLS session, NULL on a plain connection */
    hr_conn_t *prev, *next;  /* all connections */
    hr_conn_t *pending_next; /* flush list */
    /* proxy_conn.c: the PROXY header being read, then the client's address; NULL: none */
    struct hr_proxy_conn_s *proxy;
};

/* Counters exported by /metrics; uint64_t fields only (stats.c adds them as an array). */
typedef struct hr_stats_s {
    uint64_t conns_total[HR_T_COUNT];
    uint64_t conns[HR_T_COUNT];
    uint64_t msgs_in, bytes_in;
    uint64_t deliveries, bytes_out;
    uint64_t slow_consumers;
    uint64_t errors[14]; /* by ERR code */
    uint64_t refused_conns;
    uint64_t refused_per_ip;  /* max-conns-per-ip */
    uint64_t refused_pending; /* max-pending handshakes */
    uint64_t rate_limited;    /* PUBs refused by max-pub-rate */
    uint64_t replay_limited;  /* wildcard SUBs with since refused by max-replay-rate */
    uint64_t scan_refused;    /* wildcard replays refused for the scan budget (ERR 10) */
    uint64_t scan_topics;     /* topics examined by wildcard replays */
    uint64_t auth_failed;     /* HELLOs refused (ERR 3), incl. expiry */
    uint64_t denied_pub;      /* PUBs (or reply topics) not permitted (ERR 4) */
    uint64_t denied_sub;      /* SUBs not permitted (ERR 4) */
    uint64_t http_status[12]; /* HTTP responses on the WebSocket port, by http.c's table */
    uint64_t http_requests;   /* HTTP request heads received (upgrades included) */
    uint64_t http_bytes_in;   /* bytes read before the transport handshake finished */
    uint64_t http_bytes_out;  /* bytes written to connections that never finished it */
    uint64_t tls_handshakes;  /* TLS handshakes completed */
    uint64_t tls_failed;      /* TLS connections closed by a failed or stalled handshake */
    uint64_t proxy_headers;   /* PROXY protocol headers accepted */
    uint64_t proxy_refused;   /* connections refused for their PROXY header (or its absence) */
} hr_stats_t;

typedef struct hr_listener_s {
    uv_tcp_t tcp;
    hr_server_t *srv;
    const hr_transport_t *tp;
    int port; /* bound port */
    int open;
    int tls; /* connections accepted here speak TLS */
} hr_listener_t;

#define HR_LISTENERS_MAX 4

struct hr_peer_ops_s;

struct hr_server_s {
    uv_loop_t *loop;
    hr_config_t cfg;
    size_t max_frame;
    hr_listener_t listeners[HR_LISTENERS_MAX];
    int nlisteners;
    uv_check_t flush_check;     /* flushes output produced by I/O callbacks */
    uv_prepare_t flush_prepare; /* flushes output produced by timers, before the loop blocks */
    uv_timer_t sweep;
    uv_timer_t shutdown_timer;
    uv_signal_t sigint, sigterm, sighup;
    hr_conn_t *conns;
    hr_conn_t *pending;
    size_t nconns;
    uint64_t next_id;
    uint16_t worker;   /* this worker's number, in WELCOME and in client ids */
    uint16_t nworkers; /* workers of this broker (1: a single process) */
    hr_index_t index;
    hr_engine_t *engine;
    const struct hr_peer_ops_s *peer; /* router.h: the other workers; NULL when alone */
    void *peer_arg;
    hr_map_t conns_by_id; /* client id -> connection, in a cluster (queue-group deliveries) */
    int congested;        /* the rings to other workers are full: publishers are paused */
    void (*on_stop)(hr_server_t *s);  /* closes what others opened on the loop (cluster links) */
    void (*on_flush)(hr_server_t *s); /* once per loop turn, before output is written */
    void (*on_ping)(hr_server_t *s);  /* before a PONG: deliver what other workers sent */
    /* node.c: while a scale-out engine delivers a message, which queue groups take it here */
    int (*group_here)(void *arg, const hr_qgroup_t *g);
    void *group_arg;
    int argc; /* the command line, read again on SIGHUP */
    char **argv;
    hr_buf_t scratch;                /* control frame encoding */
    uv_timer_t xtimer;               /* xsub.c: conflate windows and batches that come due */
    struct hr_xsub_s *xarmed;        /* xsub.c: subscriptions waiting for xtimer */
    uint64_t xdue;                   /* xsub.c: when xtimer fires; 0: stopped */
    hr_buf_t xbuf;                   /* xsub.c: projection scratch */
    struct hr_policies_s *policies;  /* policy.c: slow-consumer policies by topic pattern */
    size_t npolicies;                /* policy.c: how many are not `disconnect` */
    struct hr_pipeline_s *pipelines; /* pipeline.c: publish pipelines by topic pattern */
    int pipe_pass_on_error;          /* pipeline.c: pipeline-on-error is `pass` */
    hr_stats_t stats;
    struct hr_cstats_s *cstats; /* stats.c: the cluster's shared stats area; NULL when alone */
    hr_limits_t limits;         /* limits.c */
    struct hr_tls_srv_s *tls;   /* tls.c: the TLS context; NULL when TLS is off */
    struct hr_proxy_s *proxy;   /* proxy_conn.c: PROXY protocol settings; NULL when off */
    void *auth;                 /* auth.c: tokens and keys; NULL when unrestricted */
    /* presence.c: rooms and their watchers */
    struct hr_presence_s *presence;
    /* In a cluster: hands a presence change to the worker that keeps the room; 0 when this
     * worker keeps it (then presence.c handles it here). */
    int (*presence_fwd)(hr_server_t *s, int kind, hr_slice_t topic, uint64_t cid, uint64_t sid,
                        hr_slice_t info);
    int shutting_down;
    int exit_code;
    uint64_t started_ms;  /* loop time at start, for uptime */
    double started_unix;  /* wall-clock start time, seconds since the epoch */
    char rbuf[64 * 1024]; /* loop-wide read buffer */
};

extern const hr_transport_t hr__tcp_transport;
/* Set by the WebSocket module when it is linked in (NULL: no WebSocket listener). */
extern const hr_transport_t *hr__ws_transport;

/* What a delivery chain writes into a connection's output stage (hr_conn_t.sink). */
typedef struct hr_outitem_s {
    hr_item_t link;
    uint64_t sid;
    hr_msg_t *m; /* borrowed */
} hr_outitem_t;

/** The handshake of a transport that has one is done: frames flow, the connection counts. */
void hr__conn_protocol(hr_conn_t *c);
/** Sets up the worker; on failure prints why to stderr and leaves nothing to close. */
int hr__server_init(hr_server_t *s, uv_loop_t *loop, const hr_config_t *cfg);
/**
 * Binds and listens on the configured ports; writes the ready file. On
 * failure prints why to stderr and closes every handle: run the loop to
 * finish closing them, then hr__server_destroy().
 */
int hr__server_start(hr_server_t *s);
/** Starts a graceful shutdown: stop accepting, ERR 9 to everyone, drain, stop. */
void hr__server_shutdown(hr_server_t *s);
void hr__server_destroy(hr_server_t *s);
uint64_t hr__now_ms(const hr_server_t *s);
/** The port the listener of transport `kind` (enum hr_tkind) is bound to, 0 if none. */
int hr__server_port(const hr_server_t *s, int kind);

/** The rings drained: resumes the connections paused while they were full. */
void hr__server_uncongest(hr_server_t *s);
/** Pauses reading `c` for reason `why` (an HR_C_* read hold) until that reason is released. */
void hr__conn_hold(hr_conn_t *c, uint32_t why);
/** Releases reason `why` on every connection; those with no reason left read again. */
void hr__server_release(hr_server_t *s, uint32_t why);
/** Pauses reading `c` until hr__server_uncongest() (it publishes while the rings are full). */
void hr__conn_congest(hr_conn_t *c);

/* conn.c: connection lifecycle, output queue, closing */
hr_conn_t *hr__conn_new(hr_server_t *s, const hr_transport_t *tp);
void hr__conn_start(hr_conn_t *c);
/**
 * What the socket read, after any PROXY header (proxy_conn.c) was taken
 * off (borrowed for the call): TLS decrypts it first on a TLS connection,
 * then the transport gets it.
 */
void hr__conn_input(hr_conn_t *c, const char *p, size_t n);
/** Queues ERR for `status` (an HR_E* with a wire code) that leaves the connection open. */
void hr__conn_err(hr_conn_t *c, int status, const char *msg, int has_ref, uint64_t ref);
/** Queues the ERR for `status` (HR_OK: none), lets the transport say goodbye, drains, closes. */
void hr__conn_fail(hr_conn_t *c, int status, const char *msg);
/**
 * hr__conn_fail() for bad input (`msg` static), after the answers to the
 * frames read before it (a publish another worker sequences): nothing more
 * is read meanwhile.
 */
void hr__conn_fail_input(hr_conn_t *c, int status, const char *msg);
/** Puts `c` on the flush list (the TLS layer has bytes of its own to send). */
void hr__conn_kick(hr_conn_t *c);
/** Closes at once (peer gone). */
void hr__conn_close_now(hr_conn_t *c);
/** Queues raw, already framed bytes (copied): WebSocket control frames, HTTP responses. */
int hr__conn_send_raw(hr_conn_t *c, const void *p, size_t n);
/** Queues a body from s->scratch framed for the connection's transport (copied once). */
int hr__conn_send_scratch(hr_conn_t *c);
/** Frames the body in s->scratch for `c` as a message of its own (the caller queues it). */
hr_msg_t *hr__conn_frame_scratch(hr_conn_t *c);
/*
 * Answers (ACK, PONG, ERR that leaves the connection open) in the order of
 * the frames they answer. hr__conn_answer() queues the body in s->scratch,
 * after any answer still outstanding; hr__conn_reply_later() reserves the
 * place of one that comes later and hr__conn_reply_fill() completes it
 * (with the body in s->scratch when `with_scratch`, else none: a barrier).
 * hr__reply_conn() is NULL once the connection is gone: encode nothing
 * then, just fill (which frees the slot).
 */
typedef struct hr_reply_s hr_reply_t;
int hr__conn_answer(hr_conn_t *c);
hr_reply_t *hr__conn_reply_later(hr_conn_t *c);
hr_conn_t *hr__reply_conn(const hr_reply_t *r);
void hr__conn_reply_fill(hr_reply_t *r, int with_scratch);
/** Makes `r` run `run(arg)` when its turn comes (or when the connection is gone) instead. */
void hr__reply_set_run(hr_reply_t *r, void (*run)(void *arg), void *arg);
/** An engine call was started for / answered to `c`: bounds what one connection has in flight. */
void hr__conn_ops_begin(hr_conn_t *c);
void hr__conn_ops_end(hr_conn_t *c);
/** Queues a delivery: the shared body `m` behind a per-subscriber header. */
void hr__conn_deliver(hr_conn_t *c, uint64_t sid, hr_msg_t *m);
/** Flushes every connection with pending output (once per loop turn). */
void hr__conn_flush_all(hr_server_t *s);
/** Periodic checks: heartbeats, HELLO timeout, soft output limit, close deadlines. */
void hr__conn_sweep(hr_conn_t *c, uint64_t now);

/* dispatch.c */
/** Handles one complete frame body from the transport. */
void hr__dispatch_frame(hr_conn_t *c, const char *body, size_t n);

/* tcp.c */
/** The TCP framing decoder (kept visible for the fuzz target). */
void hr__tcp_data(hr_conn_t *c, const char *p, size_t n);

#endif
