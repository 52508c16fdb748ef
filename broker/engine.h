/* SPDX-License-Identifier: MIT */
/* The topic state engine: sequencing, retained history and replay behind an operations table. */
#ifndef HERALD_BROKER_ENGINE_H
#define HERALD_BROKER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/protocol.h"

/*
 * The engine owns every topic's state: the seq counter, the retained
 * history and the epoch under which seq numbers are meaningful. The router
 * reaches it only through the operations below, and nothing outside an
 * engine's own file reads its fields, so an engine whose answers arrive
 * later (a worker that owns the topic in another process, Redis) plugs in
 * without touching the router.
 *
 * A topic is named by its bytes plus its hash (hr__hash(), keyed the same
 * in every process of one broker); that pair is the only topic handle that
 * crosses the seam.
 *
 * Calls that take callbacks follow one rule: when the call returns a
 * negative status, no callback runs; otherwise each callback runs exactly
 * once (the message callback once per message), possibly before the call
 * returns. `sync` engines always complete before returning, which lets the
 * router keep its per-publish context on the stack.
 */

typedef struct hr_engine_s hr_engine_t;
typedef struct hr_engine_ops_s hr_engine_ops_t;
struct hr_sub_s;

/* Every engine starts with this; the rest of its state is private. */
struct hr_engine_s {
    const hr_engine_ops_t *ops; /* read-only */
};

/* A publish as the engine sees it: every slice borrowed for the call. */
typedef struct hr_epub_s {
    hr_slice_t topic;
    uint64_t hash; /* hr__hash(topic) */
    hr_slice_t payload;
    hr_slice_t reply;   /* n == 0: none */
    hr_slice_t headers; /* raw msgpack map; n == 0: none */
    uint64_t origin;    /* the publisher's client id (0: the broker), for fans_out engines */
    int no_echo;        /* the publisher said echo: false */
} hr_epub_t;

/*
 * A replay request (SUB with `since` and/or `last`). The engine answers
 * with the messages to replay, oldest first within a topic, and a final
 * status; whether history was missing is the engine's answer, never
 * recomputed by the caller.
 */
typedef struct hr_erange_s {
    hr_slice_t pattern; /* an exact topic or a wildcard pattern */
    uint64_t hash;      /* hr__hash(pattern) when exact */
    int wildcard;
    int has_since, has_last, has_epoch;
    uint64_t since; /* replay seq > since */
    uint64_t last;  /* replay the latest `last` of each topic; with since, the later start wins */
    hr_slice_t epoch;
    uint64_t scan_budget; /* wildcard only: topics the engine may examine; 0 = no limit */
} hr_erange_t;

/**
 * A publish completed. `status` is HR_OK, HR_ELIMIT (topic limit),
 * HR_ENOMEM, HR_ENOTCONN (a scale-out engine lost its store with the
 * message) or HR_EBUFFULL (too much already waits for that store).
 * On HR_OK `seq` is the message's seq and `body` its sealed delivery body
 * (topic, seq, payload, opts); `topic` and `body` are borrowed for the call:
 * hr_msg_ref() the body to keep it. An engine with `fans_out` passes a NULL
 * body: it delivers the message itself, like messages other nodes publish.
 */
typedef void (*hr_engine_pub_cb)(void *arg, int status, hr_slice_t topic, uint64_t hash,
                                 uint64_t seq, hr_msg_t *body);

/** One replayed message: `body` is the replay variant (marked replay: true), borrowed. */
typedef void (*hr_engine_msg_cb)(void *arg, hr_slice_t topic, uint64_t seq, hr_msg_t *body);

/**
 * A replay ended. `status`: HR_OK; HR_EGAP when some history no longer
 * reached back far enough or the client's epoch is not the current one
 * (then everything retained was replayed, as if since were 0); HR_ELIMIT
 * when the wildcard scan budget was too small (nothing replayed); HR_ENOMEM.
 * `topics` is the number of topics examined, for the caller's scan budget.
 */
typedef void (*hr_engine_done_cb)(void *arg, int status, uint64_t topics);

typedef struct hr_engine_stats_s {
    uint64_t topics;          /* topics with state */
    uint64_t hist_msgs;       /* retained messages */
    uint64_t hist_bytes;      /* bytes charged to history (bodies, replay copies, rings) */
    uint64_t hist_topics;     /* topics holding history (what the global trim walks) */
    uint64_t reclaimed;       /* topics whose state was reclaimed (their seq kept) */
    uint64_t tombstones;      /* reclaimed topics whose last seq is still remembered */
    uint64_t seq_floor;       /* new topics start above this (tombstones that were forgotten) */
    uint64_t replay_uncached; /* replay bodies made but not cached (history-total reached) */
    /* A scale-out engine (Redis) only; zero for the others. */
    uint64_t remote;       /* 1: topic state lives in another service */
    uint64_t remote_up;    /* 1: connected to it and serving */
    uint64_t queued_bytes; /* commands waiting to be sent or answered */
    uint64_t lag_ms;       /* age of the oldest command not answered yet */
    uint64_t reconnects;   /* connections to the service made after the first */
    uint64_t gaps;         /* seq holes seen by live subscriptions (GAP frames sent for) */
    uint64_t resets;       /* times the service's epoch changed (its data was lost) */
} hr_engine_stats_t;

struct hr_engine_ops_s {
    const char *name;
    int sync;     /* callbacks always run before the call returns */
    int fans_out; /* delivers sequenced messages itself (publish callbacks get no body) */
    /** Sequences and retains one message; `cb` gets its seq and body. */
    int (*publish)(hr_engine_t *e, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg);
    /** Replays retained history for `r`: `msg` per message, then `done` once. */
    int (*replay)(hr_engine_t *e, const hr_erange_t *r, hr_engine_msg_cb msg,
                  hr_engine_done_cb done, void *arg);
    /** Local subscription `sub` was indexed / is being removed (a scale-out engine tells the
     *  places that sequence its topics, so messages cross to this process only if wanted). */
    int (*interest_add)(hr_engine_t *e, const struct hr_sub_s *sub);
    void (*interest_remove)(hr_engine_t *e, const struct hr_sub_s *sub);
    /** The current epoch (NUL-terminated, at most 64 bytes). It changes only when the topic
     *  state was lost (a scale-out engine whose store lost its data). */
    const char *(*epoch)(hr_engine_t *e);
    void (*stats)(hr_engine_t *e, hr_engine_stats_t *st);
    /** Frees the engine; pending callbacks are not called. */
    void (*destroy)(hr_engine_t *e);
    /** Optional (NULL: always in effect). Returns 0 when every interest change made so far is
     *  in effect, else 1 and calls `cb(arg)` once it is (so a PONG after a SUB means messages
     *  published anywhere from then on reach it). */
    int (*barrier)(hr_engine_t *e, void (*cb)(void *arg), void *arg);
};

/* Convenience wrappers, so call sites read like calls. */
static inline int hr__engine_publish(hr_engine_t *e, const hr_epub_t *p, hr_engine_pub_cb cb,
                                     void *arg)
{
    return e->ops->publish(e, p, cb, arg);
}

static inline int hr__engine_replay(hr_engine_t *e, const hr_erange_t *r, hr_engine_msg_cb msg,
                                    hr_engine_done_cb done, void *arg)
{
    return e->ops->replay(e, r, msg, done, arg);
}

static inline void hr__engine_destroy(hr_engine_t *e)
{
    if (e)
        e->ops->destroy(e);
}

/* ---- the in-memory engine (engine_mem.c) ------------------------------------ */

typedef struct hr_mem_limits_s {
    size_t max_topics;
    uint32_t history_msgs; /* per topic; 0 disables history */
    size_t history_bytes;  /* per topic */
    size_t history_total;  /* all topics, rings included */
    size_t max_tombstones; /* reclaimed topics whose seq is remembered */
    const char *epoch;     /* NULL: a fresh random one */
    /* Whether any subscription matches `topic`: such a topic is not reclaimed. */
    int (*has_interest)(void *arg, const char *topic, size_t n, uint64_t hash);
    void *interest_arg;
    /* Optional: a cell, outside this process, that keeps `hash`'s last seq across a crash
     * (the engine raises it to every seq it assigns and starts a new topic from it). */
    uint64_t *(*seq_cell)(void *arg, uint64_t hash);
    void *seq_arg;
} hr_mem_limits_t;

/** The in-memory engine (NULL on OOM). Synchronous: every callback runs inside the call. */
hr_engine_t *hr__engine_mem_new(const hr_mem_limits_t *lim);

/** Sets the shared seq cells of a memory engine (before its first publish). */
void hr__engine_mem_set_seq_cell(hr_engine_t *e, uint64_t *(*cell)(void *arg, uint64_t hash),
                                 void *arg);

/* ---- the delaying engine (engine_delay.c) ---------------------------------- */

struct uv_loop_s;

/**
 * Wraps `inner` (taking ownership) so every publish completes `ms`
 * milliseconds later and every replay 2 * `ms` later, in order: the shape
 * of an engine in another process. Used by the tests of the asynchronous
 * paths (setting engine-delay-ms); never in production.
 */
hr_engine_t *hr__engine_delay_new(struct uv_loop_s *loop, hr_engine_t *inner, uint64_t ms);

/* ---- the Redis engine (engine_redis.c) ------------------------------------- */

/* The queue groups one message was given to, as the Redis engine received it (opaque). */
typedef struct hr_qchoice_s {
    const uint8_t *p;
    uint16_t count;
    const char *node; /* this node's id */
} hr_qchoice_t;

/** Whether queue group (pattern, queue) takes the message here: Redis chose this node for it. */
int hr__engine_redis_group_here(const hr_qchoice_t *qc, const char *pattern, size_t pn,
                                const char *queue, size_t qn);

/* What a Redis engine tells the node it serves (server side: broker/node.c). */
typedef struct hr_redis_hooks_s {
    /** A message reached this node (its own or another node's): deliver it locally. `body` is
     *  borrowed; `origin` is the publisher's client id when this node published it, else 0;
     *  `qc` says which queue groups take it here (hr__engine_redis_group_here()). */
    void (*deliver)(void *arg, hr_slice_t topic, uint64_t hash, uint64_t seq, hr_msg_t *body,
                    uint64_t origin, int no_echo, const hr_qchoice_t *qc);
    /** Live subscriptions to `topic` missed seqs first..last (Redis was out of reach). */
    void (*gap)(void *arg, hr_slice_t topic, uint64_t hash, uint64_t first, uint64_t last);
    /** The epoch changed: seq numbers started again; live subscribers must resubscribe. */
    void (*reset)(void *arg);
    void *arg;
} hr_redis_hooks_t;

typedef struct hr_redis_opts_s {
    const char *url;        /* redis://[:password@]host[:port][/db] */
    const char *prefix;     /* of every key and channel */
    uint32_t history_msgs;  /* per topic (the stream's MAXLEN); 0: none */
    uint64_t history_ttl_s; /* a topic's history expires this long after its last publish */
    size_t queue_max;       /* bytes of commands that may wait for Redis */
    hr_redis_hooks_t hooks;
} hr_redis_opts_t;

/** Whether `url` is a Redis engine URL at all (redis:// or redis+cluster://). */
int hr__engine_redis_is_url(const char *url);

/**
 * A Redis engine on `loop`: connects at once and keeps reconnecting. HR_OK, HR_EINVAL (a bad
 * URL: why in `err`) or HR_ENOMEM. Asynchronous, never blocks the loop.
 */
int hr__engine_redis_new(struct uv_loop_s *loop, const hr_redis_opts_t *o, hr_engine_t **out,
                         char *err, size_t errlen);

/** Whether the engine knows the store's epoch yet (the node waits a little for it at start). */
int hr__engine_redis_ready(hr_engine_t *e);

#endif
