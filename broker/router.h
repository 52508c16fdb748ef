/* SPDX-License-Identifier: MIT */
/* The router and the command entry points every front end calls. Loop thread only. */
#ifndef HERALD_BROKER_ROUTER_H
#define HERALD_BROKER_ROUTER_H

#include <stdint.h>

#include "herald/protocol.h"

struct hr_server_s;
struct hr_conn_s;
struct hr_sub_s;

/*
 * Commands: what a client asks for, independent of how it was encoded.
 * dispatch.c decodes Herald's msgpack frames into these; another front end
 * (MQTT, RESP) would fill them from its own wire format and call the same
 * functions. Slices are borrowed for the call.
 */
typedef struct hr_pub_cmd_s {
    hr_slice_t topic, payload;
    hr_slice_t reply;   /* n == 0: none */
    hr_slice_t headers; /* raw msgpack map<str,str>; n == 0: none */
    int has_ack;
    uint64_t ack;
} hr_pub_cmd_t;

typedef struct hr_sub_cmd_s {
    uint64_t sid;
    hr_slice_t pattern;
    hr_slice_t queue; /* n == 0: none */
    int has_since, has_last, has_epoch;
    uint64_t since, last;
    hr_slice_t epoch;
    hr_slice_t opts; /* the raw option map (transforms, presence); n == 0: none */
} hr_sub_cmd_t;

/** PUB: permission and rate checks, then hr__router_publish(); ACK or ERR to `c`. */
void hr__cmd_publish(struct hr_conn_s *c, const hr_pub_cmd_t *p);
/** SUB: permission and limit checks, index, replay. Errors go to `c` as ERR frames. */
void hr__cmd_subscribe(struct hr_conn_s *c, const hr_sub_cmd_t *s);
/** UNSUB (ERR 8 for an unknown sid). */
void hr__cmd_unsubscribe(struct hr_conn_s *c, uint64_t sid);
/** PING: the PONG waits for the answers of every earlier command of `c`. */
void hr__cmd_ping(struct hr_conn_s *c, uint64_t id);
/** The subscription `sid` of `c`, or NULL. */
struct hr_sub_s *hr__sub_find(struct hr_conn_s *c, uint64_t sid);
/** Drops every subscription of `c` (it is closing). */
void hr__subs_drop(struct hr_conn_s *c);
/** Frees every subscription of `c` (it is being freed). */
void hr__subs_free(struct hr_conn_s *c);

/*
 * Where a publish is sequenced and where a delivery goes when it is not a
 * local connection. A broker of one process has no peer ops; the cluster
 * supplies them (its rings), and so could a scale-out engine.
 */
typedef void (*hr_router_done_cb)(void *arg, int status, uint64_t seq);

/* One sequenced message on its way out: the shared body and what routing needs. */
typedef struct hr_delivery_s {
    hr_msg_t *m; /* the sealed delivery body */
    hr_slice_t topic;
    uint64_t hash; /* hr__hash(topic) */
    uint64_t seq;
    uint64_t origin; /* publisher's client id; 0: the broker */
    int no_echo;     /* the publisher said echo: false */
} hr_delivery_t;

typedef struct hr_peer_ops_s {
    /** Hands a publish for a topic this worker does not own to its owner; `done` as below. */
    int (*forward)(void *arg, uint16_t owner, const hr_pub_cmd_t *p, uint64_t origin_cid,
                   int origin_no_echo, hr_router_done_cb done, void *done_arg);
    /**
     * Hands the sealed delivery `d` to peer `peer`: for its matching
     * subscriptions when `member` is NULL (once per message and peer), or
     * to the one queue-group member `member` (a sub registered by the peer).
     */
    void (*deliver)(void *arg, uint16_t peer, const struct hr_delivery_s *d,
                    const struct hr_sub_s *member);
    /** Whether peer subscription `sub` can take a message now (queue groups skip busy ones). */
    int (*busy)(void *arg, const struct hr_sub_s *sub);
} hr_peer_ops_t;

/** The worker that sequences `topic` (hash h): the same answer in every process. */
uint16_t hr__route(const struct hr_server_s *s, uint64_t h);

/**
 * A publish completed: called with the sealed body, it fans out locally
 * (and to peers with interest) and completes the publisher's ACK. Used by
 * the router itself and by a peer link that receives sequenced messages.
 */
void hr__router_fanout(struct hr_server_s *s, const hr_delivery_t *d);

/**
 * A message sequenced by another worker arrived here: it goes to this
 * worker's own plain subscriptions only (the owner already chose queue-group
 * members and handed other workers their copies).
 */
void hr__router_fanout_local(struct hr_server_s *s, const hr_delivery_t *d);

/**
 * Publishes from client `origin_cid` (0: the broker itself). `done` (may be
 * NULL) runs once with the status and seq; with a synchronous engine before
 * this returns. Returns a negative status (and `done` is not called) when
 * the publish could not start.
 */
int hr__router_publish(struct hr_server_s *s, const hr_pub_cmd_t *p, uint64_t origin_cid,
                       int origin_no_echo, hr_router_done_cb done, void *arg);

/**
 * A live message for a subscription still waiting for its replay (sub.c):
 * held, then delivered after the replay unless the replay already had it.
 */
void hr__sub_hold(struct hr_sub_s *sub, hr_slice_t topic, uint64_t seq, hr_msg_t *m);

/**
 * Delivers `m` to subscription `sid` of `c` as the queue-group member
 * another worker chose: through its transforms when it has any (nothing
 * when the sid is gone).
 */
void hr__sub_deliver_member(struct hr_conn_s *c, uint64_t sid, hr_msg_t *m);

/** Whether any subscription matches `topic` (the memory engine keeps such topics). */
int hr__router_has_interest(void *srv, const char *topic, size_t n, uint64_t h);

#endif
