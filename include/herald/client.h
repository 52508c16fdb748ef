/* SPDX-License-Identifier: MIT */
/* libherald: the asynchronous (libuv) and blocking client APIs of Herald. */
#ifndef HERALD_CLIENT_H
#define HERALD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "status.h"
#include "protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Threading. The asynchronous API (hr_client_*, hr_sub_*) belongs to the
 * thread that runs the uv_loop_t passed to hr_client_new(): call it only
 * from that thread, and every callback runs on it. It starts no thread of
 * its own (libuv's thread pool resolves host names that are not literal
 * addresses). hr_message_ref()/hr_message_unref() and the accessors may be
 * used from any thread on a message that thread holds a reference to.
 * The blocking API (hr_sync_*) is thread-safe as documented at its section.
 *
 * Status codes are those of status.h; libuv's UV_E* codes pass through.
 * A call that takes a callback and returns an error never calls it.
 */

typedef struct hr_client_s hr_client_t;
typedef struct hr_subscription_s hr_sub_t;
typedef struct hr_message_s hr_message_t;

/* Connection events, reported to hr_client_opts_t.on_state. */
enum hr_client_event {
    HR_EVENT_CONNECTED = 1,    /* first WELCOME received */
    HR_EVENT_DISCONNECTED = 2, /* connection lost; reconnecting unless a CLOSED follows */
    HR_EVENT_RECONNECTED = 3,  /* connected again, subscriptions restored */
    HR_EVENT_CLOSED = 4        /* final: the client is freed after this callback returns */
};

/* States, as returned by hr_client_state(). */
enum hr_client_state {
    HR_STATE_CONNECTING = 1,   /* first connection attempt in progress */
    HR_STATE_CONNECTED = 2,    /* WELCOME received */
    HR_STATE_RECONNECTING = 3, /* lost; waiting for or attempting a reconnect */
    HR_STATE_DRAINING = 4,     /* hr_client_drain() in progress */
    HR_STATE_CLOSING = 5       /* hr_client_close() called or reconnect given up */
};

/**
 * Connection state change. `status` is HR_OK for CONNECTED/RECONNECTED and
 * for a CLOSED asked for by hr_client_close(); otherwise the reason (a libuv
 * code such as UV_ECONNREFUSED, or a Herald code such as HR_ESHUTDOWN).
 */
typedef void (*hr_state_cb)(hr_client_t *c, int event, int status, void *arg);

/**
 * Asynchronous error: an ERR frame from the broker (status mapped with
 * hr_status_from_wire()), a GAP frame (HR_EGAP), a slow consumer (HR_ESLOW:
 * a subscription's pending limit was reached and messages are being
 * dropped). `sub` is the subscription concerned or NULL; `detail` is a
 * NUL-terminated description. Both are borrowed for the callback.
 */
typedef void (*hr_error_cb)(hr_client_t *c, int status, hr_sub_t *sub, const char *detail,
                            void *arg);

/**
 * A message for subscription `sub`. `m` is borrowed: it is valid until the
 * callback returns; call hr_message_ref() to keep it longer.
 */
typedef void (*hr_msg_cb)(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg);

/** Publish completion: HR_OK and the message's `seq` once the broker sequenced it. */
typedef void (*hr_ack_cb)(hr_client_t *c, int status, uint64_t seq, void *arg);

/**
 * Request completion. On HR_OK `reply` is the reply, borrowed until the
 * callback returns (hr_message_ref() keeps it). Otherwise `reply` is NULL and
 * status is HR_ETIMEDOUT, HR_EDISCONNECTED (the connection dropped while the
 * request was in flight) or HR_ECLOSED (client closed).
 */
typedef void (*hr_request_cb)(hr_client_t *c, int status, hr_message_t *reply, void *arg);

/** Completion of hr_client_flush() and hr_client_drain(). */
typedef void (*hr_done_cb)(hr_client_t *c, int status, void *arg);

/**
 * Subscription confirmed (hr_sub_opts_t.on_confirm): HR_OK once the broker
 * processed the SUB without refusing it; otherwise the refusal (HR_EPERM,
 * HR_ETOPIC, HR_ELIMIT, ... mapped from the ERR that named the sid),
 * HR_ETIMEDOUT (no answer within request_timeout_ms) or HR_ECLOSED. On any
 * status but HR_OK the subscription is already removed: `sub` is valid only
 * until the callback returns and must not be unsubscribed.
 */
typedef void (*hr_sub_confirm_cb)(hr_client_t *c, hr_sub_t *sub, int status, void *arg);

/* How a tls:// or wss:// client checks the server (hr_client_opts_t.tls_verify). */
enum hr_tls_verify {
    HR_TLS_VERIFY_FULL = 0,  /* a trusted chain, valid now, for the server's name (default) */
    HR_TLS_VERIFY_CHAIN = 1, /* a trusted chain, valid now, whatever name it is for */
    HR_TLS_VERIFY_NONE = 2   /* nothing: encryption without authentication; tests only */
};

/*
 * Connection options. Initialise with hr_client_opts_init() (zero is not the
 * default for every field), then set what you need. Strings are copied by
 * hr_client_new().
 */
typedef struct hr_client_opts_s {
    const char *url;   /* tcp://host[:port], host[:port], ws://host[:port][/path], or
                          over TLS tls://host[:port], wss://host[:port][/path];
                          NULL: tcp://127.0.0.1:7400 */
    const char *name;  /* client name sent in HELLO, or NULL */
    const char *token; /* auth token sent in HELLO, or NULL */
    int echo;          /* receive own publications (default 1) */

    uint32_t connect_timeout_ms; /* TCP connect + HELLO/WELCOME (default 5000) */
    uint32_t request_timeout_ms; /* default for requests and flush (default 5000) */
    uint32_t ping_interval_ms;   /* client PING period, 0 = never (default 30000) */
    uint32_t max_pings_out;      /* unanswered PINGs before the link is dropped (default 2) */

    /* Reconnect policy: after losing a connection, wait
     * min(reconnect_wait_ms * 2^n, reconnect_wait_max_ms), jittered by
     * +-reconnect_jitter (a fraction), before attempt n (from 0). */
    int reconnect;                  /* reconnect automatically (default 1) */
    int max_reconnect;              /* attempts per outage; -1 = unlimited (default 60) */
    uint32_t reconnect_wait_ms;     /* default 50 */
    uint32_t reconnect_wait_max_ms; /* default 2000 */
    double reconnect_jitter;        /* 0..1 (default 0.2) */
    int retry_on_failed_connect;    /* treat a failed first connect like a lost one (default 0) */

    /* Buffer limits. */
    size_t reconnect_buf_bytes; /* publishes held while not connected (default 8 MiB);
                                   past it publish returns HR_EBUFFULL */
    size_t max_out_bytes;       /* unsent bytes while connected (default 64 MiB) */
    size_t pending_msgs_limit;  /* per-subscription default (default 65536) */
    size_t pending_bytes_limit; /* per-subscription default (default 64 MiB) */
    uint32_t deliver_batch;     /* messages delivered per loop turn (default 1024) */

    /* TLS, for tls:// and wss:// URLs (ignored by the others). hr_client_new()
     * reads the files, and fails with HR_ETLSCONF if one does not load. */
    const char *tls_ca_file;     /* PEM file of CA certificates to trust, or NULL */
    const char *tls_ca_dir;      /* directory of hashed CA certificates (openssl rehash), or NULL;
                                    with neither, the system's default trust store */
    const char *tls_cert_file;   /* client certificate chain (PEM) for brokers that ask, or NULL */
    const char *tls_key_file;    /* its private key (PEM); NULL: in tls_cert_file */
    const char *tls_server_name; /* name sent as SNI and checked against the certificate;
                                    NULL: the URL's host (an address literal is checked as an
                                    address, and sends no SNI) */
    int tls_verify;              /* enum hr_tls_verify (default HR_TLS_VERIFY_FULL) */

    hr_state_cb on_state; /* may be NULL */
    hr_error_cb on_error; /* may be NULL */
    void *arg;            /* passed to on_state and on_error */
} hr_client_opts_t;

/** Fills `o` with the defaults documented above. */
void hr_client_opts_init(hr_client_opts_t *o);

/* ---- client lifecycle --------------------------------------------------- */

/**
 * Creates a client on `loop` and starts connecting; `*out` is usable at once
 * (publishes and subscriptions made before the connection is up are sent
 * when it is). The result of the first attempt arrives as HR_EVENT_CONNECTED,
 * or as HR_EVENT_CLOSED with the failure (unless retry_on_failed_connect).
 * Returns HR_OK, HR_EINVAL (bad option), HR_EURL (unparsable or unsupported
 * URL), HR_ETLSCONF (a TLS file does not load, or the key does not match the
 * certificate), HR_ENOMEM, or a libuv error. On error nothing is allocated.
 *
 * Over TLS, a failed handshake closes the attempt with HR_ECERT (untrusted
 * chain), HR_ECERTNAME (certificate for another name), HR_ECERTEXPIRED,
 * HR_ECLIENTCERT (the broker refused the client certificate, or its
 * absence), HR_EPLAINPORT (the port does not speak TLS) or HR_ETLS, after
 * on_error got the reason in words; a plaintext URL aimed at a TLS port
 * fails with HR_ETLSPORT. Neither port mismatch is retried.
 */
int hr_client_new(uv_loop_t *loop, const hr_client_opts_t *opts, hr_client_t **out);

/**
 * Closes at once: pending acks, requests and flushes complete with
 * HR_ECLOSED, queued messages are dropped (they are delivered when the
 * client closes on its own, having given up reconnecting), handles are
 * closed, then
 * HR_EVENT_CLOSED is reported and the client is freed. Idempotent; safe
 * inside any callback. `c` must not be used after the CLOSED event.
 */
void hr_client_close(hr_client_t *c);

/**
 * Drains, then closes: refuses new publishes, subscriptions and requests
 * (HR_ECLOSED), unsubscribes every subscription, delivers messages already
 * received, waits for outstanding acks and requests and a PING round trip,
 * then calls `cb` (HR_OK, or HR_ETIMEDOUT after `timeout_ms`, 0 = the
 * request timeout) and closes as hr_client_close(). Returns HR_OK,
 * HR_ECLOSED (already closing or draining).
 */
int hr_client_drain(hr_client_t *c, uint32_t timeout_ms, hr_done_cb cb, void *arg);

/** Returns the current HR_STATE_*. */
int hr_client_state(const hr_client_t *c);

/** Server-assigned client id from the last WELCOME (0 before the first). */
uint64_t hr_client_id(const hr_client_t *c);

/** The broker's max_payload from the last WELCOME (0 before the first). */
uint64_t hr_client_max_payload(const hr_client_t *c);

/**
 * The epoch of the last WELCOME (NUL-terminated, at most HR_EPOCH_MAX
 * bytes): the incarnation of the broker's seq numbers and history. NULL
 * before the first WELCOME and with a broker that announces none. Valid
 * until the next reconnect; copy it to keep it with a saved seq.
 */
const char *hr_client_epoch(const hr_client_t *c);

/** The loop the client runs on. */
uv_loop_t *hr_client_loop(const hr_client_t *c);

/* Counters since hr_client_new(); payload bytes only. */
typedef struct hr_client_stats_s {
    uint64_t msgs_in, bytes_in;   /* MSG frames received for subscriptions and requests */
    uint64_t msgs_out, bytes_out; /* publishes accepted (sent or buffered) */
    uint64_t reconnects;          /* successful reconnections */
    uint64_t dropped;             /* messages dropped by pending limits, all subscriptions */
} hr_client_stats_t;

/** Copies the client's counters into `*out`. */
void hr_client_stats(const hr_client_t *c, hr_client_stats_t *out);

/* ---- publish ------------------------------------------------------------ */

/* Optional publish settings; NULL means none. */
typedef struct hr_publish_opts_s {
    const char *reply;          /* reply topic, or NULL */
    const hr_header_t *headers; /* `nheaders` key/value pairs (NUL-terminated), or NULL */
    size_t nheaders;
    hr_ack_cb on_ack; /* ask the broker for an ACK and report it here, or NULL */
    void *arg;        /* for on_ack */
} hr_publish_opts_t;

/**
 * Publishes `len` bytes of `data` on `topic`. Everything is copied before
 * the call returns. With `opts->on_ack` the callback later gets the seq, or
 * HR_EDISCONNECTED if the connection dropped after the message was sent and
 * before its ACK, or the broker's refusal (HR_EPERM, HR_ETOPIC), or
 * HR_ECLOSED. While not connected the frame is buffered (up to
 * reconnect_buf_bytes) and sent after the next WELCOME.
 * Returns HR_OK, HR_ETOPIC (invalid topic or reply), HR_EPERM (a `$` topic:
 * only the broker publishes those), HR_ETOOBIG (payload over the broker's
 * max_payload), HR_EBUFFULL (buffer limit), HR_ECLOSED (closing or
 * draining), HR_ENOMEM, HR_EINVAL.
 */
int hr_client_publish(hr_client_t *c, const char *topic, const void *data, size_t len,
                      const hr_publish_opts_t *opts);

/**
 * Replies to `m` (publishes on its reply topic). Returns HR_EINVAL if `m`
 * has no reply topic, else as hr_client_publish().
 */
int hr_client_respond(hr_client_t *c, const hr_message_t *m, const void *data, size_t len);

/* ---- subscription transforms -------------------------------------------- */

/*
 * A filter: a predicate on the payload, read by the broker as a MessagePack
 * map with string keys (docs/transforms.md). Build one with the functions
 * below, pass it in hr_sub_opts_t.filter, then free it: the subscription
 * keeps its own encoded copy. A `field` is a path of keys into nested maps
 * separated by `.` ("user.id"). Strings given to the builders are copied.
 */
typedef struct hr_filter_s hr_filter_t;

/* A constant in a filter. Make one with hr_val_*(). */
enum hr_value_type { HR_VAL_NIL, HR_VAL_BOOL, HR_VAL_INT, HR_VAL_UINT, HR_VAL_DOUBLE, HR_VAL_STR };
typedef struct hr_value_s {
    int type; /* enum hr_value_type */
    union {
        int b;
        int64_t i;
        uint64_t u;
        double d;
        const char *s; /* NUL-terminated; copied by the builder */
    } v;
} hr_value_t;

static inline hr_value_t hr_val_nil(void)
{
    hr_value_t x = {HR_VAL_NIL, {0}};
    return x;
}
static inline hr_value_t hr_val_bool(int b)
{
    hr_value_t x = {HR_VAL_BOOL, {0}};
    x.v.b = b != 0;
    return x;
}
static inline hr_value_t hr_val_int(int64_t i)
{
    hr_value_t x = {HR_VAL_INT, {0}};
    x.v.i = i;
    return x;
}
static inline hr_value_t hr_val_uint(uint64_t u)
{
    hr_value_t x = {HR_VAL_UINT, {0}};
    x.v.u = u;
    return x;
}
static inline hr_value_t hr_val_double(double d)
{
    hr_value_t x = {HR_VAL_DOUBLE, {0}};
    x.v.d = d;
    return x;
}
static inline hr_value_t hr_val_str(const char *s)
{
    hr_value_t x = {HR_VAL_STR, {0}};
    x.v.s = s;
    return x;
}

/*
 * Leaf filters. Each returns a new filter, or NULL when out of memory or
 * for an invalid argument (NULL or empty `field`, a NULL string value, a
 * non-number for an order comparison).
 */
/** True when `field` exists and equals `v` (integers and floats compare as numbers). */
hr_filter_t *hr_filter_eq(const char *field, hr_value_t v);
/** True when `field` exists and does not equal `v`. */
hr_filter_t *hr_filter_ne(const char *field, hr_value_t v);
/** Order comparisons: `field` exists, is a number and is <, <=, >, >= `number`. */
hr_filter_t *hr_filter_lt(const char *field, hr_value_t number);
hr_filter_t *hr_filter_le(const char *field, hr_value_t number);
hr_filter_t *hr_filter_gt(const char *field, hr_value_t number);
hr_filter_t *hr_filter_ge(const char *field, hr_value_t number);
/** True when `field` exists and equals one of the `n` (>= 1) values. */
hr_filter_t *hr_filter_in(const char *field, const hr_value_t *values, size_t n);
/** True when `field` exists, whatever its value. */
hr_filter_t *hr_filter_exists(const char *field);
/** Shorthands: hr_filter_eq(field, hr_val_str(s)) and hr_filter_eq(field, hr_val_int(i)). */
hr_filter_t *hr_filter_eq_str(const char *field, const char *s);
hr_filter_t *hr_filter_eq_int(const char *field, int64_t i);

/*
 * Combinations. They take ownership of their arguments (also on failure)
 * and return a new filter, or NULL when an argument is NULL or memory runs
 * out: builders nest without checks in between, and one NULL at the end
 * means the whole expression failed. Nested `and`s (and `or`s) are
 * flattened into one, which keeps expressions within the broker's depth
 * limit (8).
 */
hr_filter_t *hr_filter_and(hr_filter_t *a, hr_filter_t *b);
hr_filter_t *hr_filter_or(hr_filter_t *a, hr_filter_t *b);
hr_filter_t *hr_filter_not(hr_filter_t *e);

/** Frees `f` (NULL-safe). */
void hr_filter_free(hr_filter_t *f);

/* ---- subscribe ---------------------------------------------------------- */

/*
 * Optional subscription settings; NULL means the defaults. Strings are copied.
 * The transforms (filter, fields, rate, conflate, batch) are checked by the
 * broker: an invalid one refuses the subscription with HR_EOPTION (at
 * on_error, or at on_confirm when set). They apply in that order, and the
 * seq numbers of what arrives then skip what they left out (no HR_EGAP).
 */
typedef struct hr_sub_opts_s {
    const char *queue;          /* queue group name, or NULL */
    int has_since;              /* replay retained history after `since` first */
    uint64_t since;             /* 0 with has_since: all retained history */
    int has_last;               /* replay the latest `last` retained messages of each topic first */
    uint64_t last;              /* with both since and last, the later start wins */
    const char *epoch;          /* the epoch `since` was seen under (hr_client_epoch()), or NULL:
                                   if the broker's differs it replays from the start (HR_EGAP) */
    size_t pending_msgs_limit;  /* 0: the client's default */
    size_t pending_bytes_limit; /* 0: the client's default */
    hr_sub_confirm_cb on_confirm; /* send a PING after the SUB and report the outcome, or NULL */
    void *confirm_arg;            /* for on_confirm */
    const void *presence; /* member info (at most 1 KiB): while subscribed, this connection is a
                             member of the topic (an exact topic), or NULL: not a member */
    size_t presence_len;  /* bytes at `presence` (0 with a non-NULL `presence`: empty info) */
    const hr_filter_t *filter; /* deliver only the messages it matches, or NULL */
    const char *const *fields; /* deliver a map of only these `nfields` (1..32) paths, or NULL */
    size_t nfields;
    uint32_t rate_n;          /* > 0: at most rate_n messages per rate_ms; the rest dropped */
    uint32_t rate_ms;         /* 1..86400000 */
    uint32_t conflate_ms;     /* > 0: in each window of this many ms after a delivery, keep only */
    const char *conflate_key; /* the latest message per value of this field (NULL: per topic) */
    uint32_t batch_max;       /* > 0: the broker sends messages in batches of at most batch_max */
    uint32_t batch_ms;        /* (1..1024), at most batch_ms (1..60000) after the first one; */
                              /* each still reaches `cb` as a message of its own */
} hr_sub_opts_t;

/**
 * Subscribes to `pattern` (`*` and `>` wildcards). `cb` runs for each
 * message, in seq order per topic. Across reconnects the subscription is
 * restored and resumes after the last seq it received on each topic (SUB
 * since, with the epoch of the WELCOME under which that seq arrived), so
 * nothing is lost or repeated while the broker's history covers the
 * outage; when it does not, or when the broker's epoch changed (its seq
 * numbers started again), on_error gets HR_EGAP with this `sub` and the
 * broker replays what it has from the start. Queue subscriptions resume
 * live (a replay would bypass the group).
 * SUB has no positive answer: a refusal (HR_EPERM, HR_ETOPIC, HR_ELIMIT)
 * arrives at on_error, and the refused subscription is not restored on
 * reconnect nor unsubscribed on the wire. With `opts->on_confirm` the
 * outcome arrives there instead, and a refused subscription is removed.
 * `*out` stays valid until hr_sub_unsubscribe(), an on_confirm with a
 * failure, or the client's CLOSED event.
 * Returns HR_OK, HR_ETOPIC, HR_EINVAL (also for `fields` with a NULL path
 * or more than 32), HR_ECLOSED, HR_ENOMEM.
 */
int hr_client_subscribe(hr_client_t *c, const char *pattern, const hr_sub_opts_t *opts,
                        hr_msg_cb cb, void *arg, hr_sub_t **out);

/** Shorthand for a queue subscription (hr_client_subscribe with opts.queue). */
int hr_client_queue_subscribe(hr_client_t *c, const char *pattern, const char *queue, hr_msg_cb cb,
                              void *arg, hr_sub_t **out);

/**
 * Unsubscribes and frees `sub`: no callback for it runs after this returns
 * (messages already queued for it are dropped, a pending on_confirm is
 * dropped). Safe inside its own message callback. Returns HR_OK or
 * HR_EINVAL (NULL).
 */
int hr_sub_unsubscribe(hr_sub_t *sub);

/** The subscription's sid on the wire (stable across reconnects). */
uint64_t hr_sub_sid(const hr_sub_t *sub);
/** Messages and bytes received but not yet delivered to the callback. */
void hr_sub_pending(const hr_sub_t *sub, size_t *msgs, size_t *bytes);
/** Messages dropped because the pending limits were reached. */
uint64_t hr_sub_dropped(const hr_sub_t *sub);
/** Messages delivered to the callback so far. */
uint64_t hr_sub_delivered(const hr_sub_t *sub);
/** Changes the pending limits (0 keeps a limit as is). */
void hr_sub_set_pending_limits(hr_sub_t *sub, size_t msgs, size_t bytes);

/* ---- presence ------------------------------------------------------------ */

/* One member of a room: its client id (the WELCOME's) and the info it subscribed with. */
typedef struct hr_presence_member_s {
    uint64_t client_id;
    const void *info; /* borrowed for the callback */
    size_t info_len;
} hr_presence_member_t;

/*
 * What the broker said about a room (docs/client.md). A snapshot comes
 * first, and again after every reconnect: `members` is the whole list.
 * Then changes: `members` are the members that joined (or whose info
 * changed) and `left` the client ids that left. When `listed` is 0 the room
 * has more members than the broker lists (presence-list-max): only `count`
 * is meaningful and a list kept from earlier events must be dropped; when
 * the room shrinks back, a change lists every member as joined. Everything
 * is borrowed for the callback.
 */
typedef struct hr_presence_event_s {
    int snapshot; /* 1: a snapshot (the list replaces yours), 0: a change */
    int listed;   /* 0: count only */
    uint64_t count;
    const hr_presence_member_t *members; /* snapshot: everyone; change: joined */
    size_t nmembers;
    const uint64_t *left; /* change: client ids that left */
    size_t nleft;
} hr_presence_event_t;

/** A presence event of a watched room; `ev` and what it points to are borrowed. */
typedef void (*hr_presence_cb)(hr_client_t *c, hr_sub_t *sub, const hr_presence_event_t *ev,
                               void *arg);

/**
 * Watches who is in `topic` (an exact topic): subscribes to `$PRES.<topic>`
 * and decodes the broker's snapshots and changes into `cb`. Membership is
 * a subscription with hr_sub_opts_t.presence. Stop with hr_sub_unsubscribe().
 * A refusal (HR_EPERM without subscribe permission on `topic`) arrives at
 * on_error; a body that does not decode is reported there as HR_EPROTO.
 * Returns HR_OK, HR_ETOPIC (not an exact topic), HR_EINVAL, HR_ECLOSED,
 * HR_ENOMEM. Loop thread only.
 */
int hr_client_watch_presence(hr_client_t *c, const char *topic, hr_presence_cb cb, void *arg,
                             hr_sub_t **out);

/* ---- request / flush ---------------------------------------------------- */

/**
 * Sends a request on `topic` with a reply topic under this connection's
 * inbox (one wildcard subscription `_INBOX.<random>.>` per client, made on
 * the first request) and calls `cb` with the first reply, or with
 * HR_ETIMEDOUT after `timeout_ms` (0: request_timeout_ms). There is no
 * no-responders signal in protocol v1: a request nobody answers times out.
 * Returns as hr_client_publish().
 */
int hr_client_request(hr_client_t *c, const char *topic, const void *data, size_t len,
                      uint32_t timeout_ms, hr_request_cb cb, void *arg);

/**
 * Sends a PING and calls `cb` with HR_OK when its PONG arrives: every frame
 * sent before it has then been processed by the broker. HR_ETIMEDOUT after
 * the request timeout, HR_EDISCONNECTED if the connection drops first.
 * Returns HR_OK, HR_ENOTCONN (not connected), HR_ECLOSED, HR_ENOMEM.
 */
int hr_client_flush(hr_client_t *c, hr_done_cb cb, void *arg);

/* ---- messages ----------------------------------------------------------- */

/** The topic (NUL-terminated). */
const char *hr_message_topic(const hr_message_t *m);
/** The payload and its length; the bytes are followed by a NUL not counted in `*len`. */
const void *hr_message_data(const hr_message_t *m, size_t *len);
/** The per-topic sequence number assigned by the broker (0 for none). */
uint64_t hr_message_seq(const hr_message_t *m);
/** The reply topic, or NULL. */
const char *hr_message_reply(const hr_message_t *m);
/** 1 if the message came from history (SUB since), else 0. */
int hr_message_is_replay(const hr_message_t *m);
/** The value of header `key`, or NULL. */
const char *hr_message_header(const hr_message_t *m, const char *key);
/** All headers: returns the array and sets `*n` (NULL and 0 if none). */
const hr_header_t *hr_message_headers(const hr_message_t *m, size_t *n);
/** Adds a reference and returns `m`. Thread-safe. */
hr_message_t *hr_message_ref(hr_message_t *m);
/** Drops a reference, frees at zero, sets `*m` to NULL. NULL-safe. Thread-safe. */
void hr_message_unref(hr_message_t **m);

/* ---- blocking API --------------------------------------------------------
 *
 * hr_sync_t runs an hr_client_t on its own loop in a private thread and
 * hands each call to it (uv_async) and the result back. Thread safety:
 * every hr_sync_* function except hr_sync_close() may be called from any
 * number of threads at once on the same hr_sync_t, and hr_sync_next() from
 * several threads on the same subscription (each message goes to exactly
 * one caller). hr_sync_close() must be the last call on the handle and must
 * not run concurrently with another call on it; hr_sync_unsubscribe()
 * likewise for its subscription. opts->on_state and opts->on_error, if set,
 * run on the private thread. Timeouts are in milliseconds; a negative
 * timeout waits forever. Reconnect, buffering and resume work as in the
 * asynchronous API.
 */
typedef struct hr_sync_s hr_sync_t;
typedef struct hr_sync_sub_s hr_sync_sub_t;

/**
 * Connects and waits for the first WELCOME (at most connect_timeout_ms).
 * Returns HR_OK, the failure of the first attempt (for example
 * UV_ECONNREFUSED, HR_EAUTH, HR_ETIMEDOUT), HR_EURL, HR_EINVAL, HR_ENOMEM.
 */
int hr_sync_connect(const hr_client_opts_t *opts, hr_sync_t **out);

/**
 * Checks and queues a publish for the private thread, and returns without
 * waiting for it: HR_OK, HR_ETOPIC, HR_EPERM, HR_EINVAL, HR_ETOOBIG (over
 * the broker's max_payload), HR_ECLOSED, HR_ENOMEM. opts->on_ack is
 * ignored (use hr_sync_publish_acked()). Publishes run in the order they
 * were queued, so one thread's publishes keep their order and a later
 * hr_sync_flush() covers them. At most reconnect_buf_bytes of publishes
 * wait for the private thread; past that the call blocks until they are
 * taken. A refusal found there (HR_EBUFFULL: the client's own buffers are
 * full) goes to opts->on_error.
 */
int hr_sync_publish(hr_sync_t *s, const char *topic, const void *data, size_t len,
                    const hr_publish_opts_t *opts);

/**
 * Publishes with an ACK and waits for it; `*seq` (if not NULL) gets the seq.
 * Returns as hr_client_publish(), or the ack status (HR_EDISCONNECTED, ...),
 * or HR_ETIMEDOUT.
 */
int hr_sync_publish_acked(hr_sync_t *s, const char *topic, const void *data, size_t len,
                          int timeout_ms, uint64_t *seq);

/**
 * Subscribes and confirms: sends SUB then PING and returns once the PONG
 * arrives (HR_OK) or the broker refused the subscription (its ERR mapped to
 * HR_EPERM, HR_ETOPIC, HR_ELIMIT, ...; nothing is left subscribed). Messages
 * queue inside `*out` (bounded by the pending limits, then dropped and
 * counted) until hr_sync_next() takes them. opts->on_confirm is ignored.
 * Returns as hr_client_subscribe(), the refusal, or HR_ETIMEDOUT (no answer
 * within request_timeout_ms, for instance while disconnected).
 */
int hr_sync_subscribe(hr_sync_t *s, const char *pattern, const hr_sub_opts_t *opts,
                      hr_sync_sub_t **out);

/**
 * Waits for the next message of `sub`. On HR_OK `*m` is owned by the
 * caller (hr_message_unref() it). Returns HR_OK, HR_ETIMEDOUT, HR_ECLOSED
 * (client closed or subscription gone).
 */
int hr_sync_next(hr_sync_sub_t *sub, int timeout_ms, hr_message_t **m);

/** Messages dropped by `sub`'s pending limits. */
uint64_t hr_sync_dropped(const hr_sync_sub_t *sub);

/** Unsubscribes, frees `*sub` and its queued messages, sets `*sub` to NULL. */
int hr_sync_unsubscribe(hr_sync_sub_t **sub);

/**
 * Sends a request and waits for the reply. On HR_OK `*reply` is owned by
 * the caller. Returns as hr_client_request() or its completion status.
 */
int hr_sync_request(hr_sync_t *s, const char *topic, const void *data, size_t len, int timeout_ms,
                    hr_message_t **reply);

/** PING round trip: returns once the broker processed everything sent before. */
int hr_sync_flush(hr_sync_t *s, int timeout_ms);

/** The client's HR_STATE_*. */
int hr_sync_state(hr_sync_t *s);

/**
 * Drains the client if `drain` is set (waiting for in-flight work), closes
 * it, stops and joins the private thread, frees every subscription still
 * open and `*s`, and sets `*s` to NULL. NULL-safe.
 */
void hr_sync_close(hr_sync_t **s, int drain);

#ifdef __cplusplus
}
#endif
#endif
