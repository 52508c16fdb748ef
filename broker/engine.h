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
 * A publish completed. `status` is HR_OK, HR_ELIMIT (topic limit) or
 * HR_ENOMEM. On HR_OK `seq` is the message's seq and `body` its sealed
 * delivery body (topic, seq, payload, opts); `topic` and `body` are
 * borrowed for the call: hr_msg_ref() the body to keep it.
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
} hr_engine_stats_t;

struct hr_engine_ops_s {
    const char *name;
    int sync; /* callbacks always run before the call returns */
    /** Sequences and retains one message; `cb` gets its seq and body. */
    int (*publish)(hr_engine_t *e, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg);
    /** Replays retained history for `r`: `msg` per message, then `done` once. */
    int (*replay)(hr_engine_t *e, const hr_erange_t *r, hr_engine_msg_cb msg,
                  hr_engine_done_cb done, void *arg);
    /** Local subscription `sub` was indexed / is being removed (a scale-out engine tells the
     *  places that sequence its topics, so messages cross to this process only if wanted). */
    int (*interest_add)(hr_engine_t *e, const struct hr_sub_s *sub);
    void (*interest_remove)(hr_engine_t *e, const struct hr_sub_s *sub);
    /** The current epoch (NUL-terminated, at most 64 bytes), stable for the engine's life. */
    const char *(*epoch)(hr_engine_t *e);
    void (*stats)(hr_engine_t *e, hr_engine_stats_t *st);
    /** Frees the engine; pending callbacks are not called. */
    void (*destroy)(hr_engine_t *e);
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

#endif
