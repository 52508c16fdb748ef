/* SPDX-License-Identifier: MIT */
/* Topic state: per-topic sequencing and retained history, within global bounds. */
#ifndef HERALD_BROKER_ENGINE_H
#define HERALD_BROKER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/protocol.h"
#include "map.h"

/*
 * The engine is the seam for scale-out: today it keeps topic state in this
 * process; a Redis-backed engine will implement the same calls (sequence,
 * retain, replay) against Redis. The router never touches topic state
 * except through these functions.
 */

typedef struct hr_hist_s {
    uint64_t seq;
    hr_msg_t *msg;    /* owned ref: the live delivery body */
    hr_msg_t *replay; /* owned ref or NULL: its replay variant, made on first replay */
} hr_hist_t;

typedef struct hr_topic_s {
    uint64_t seq;                   /* last seq assigned; 0 = none yet */
    hr_hist_t *ring;                /* private */
    uint32_t head, count, cap;      /* private */
    size_t bytes;                   /* read-only: history bytes of this topic */
    struct hr_topic_s *prev, *next; /* private: LRU by last publish */
    uint16_t nlen;
    char name[];
} hr_topic_t;

typedef struct hr_engine_limits_s {
    size_t max_topics;
    uint32_t history_msgs; /* per topic; 0 disables history */
    size_t history_bytes;  /* per topic */
    size_t history_total;  /* all topics */
} hr_engine_limits_t;

typedef struct hr_engine_s {
    hr_map_t topics;                 /* private */
    hr_topic_t *lru_head, *lru_tail; /* private: head = least recently published */
    hr_engine_limits_t lim;          /* read-only */
    size_t hist_bytes;               /* read-only: total retained bytes */
    size_t hist_msgs;                /* read-only: total retained messages */
} hr_engine_t;

void hr__engine_init(hr_engine_t *e, const hr_engine_limits_t *lim);
void hr__engine_destroy(hr_engine_t *e);

/**
 * Returns the state of `topic`, creating it when `create`; NULL when absent,
 * on OOM (*status = HR_ENOMEM) or past max_topics (*status = HR_ELIMIT).
 */
hr_topic_t *hr__engine_topic(hr_engine_t *e, const char *topic, size_t tlen, int create,
                             int *status);

/** hr__engine_topic() with `h` = hr__hash(topic, tlen) from the caller. */
hr_topic_t *hr__engine_topic_hashed(hr_engine_t *e, const char *topic, size_t tlen, uint64_t h,
                                    int create, int *status);

/** Assigns the next seq of `t` and retains `m` (taking a reference) as that seq. */
uint64_t hr__engine_sequence(hr_engine_t *e, hr_topic_t *t);
void hr__engine_retain(hr_engine_t *e, hr_topic_t *t, uint64_t seq, hr_msg_t *m);

typedef void (*hr_replay_cb)(void *arg, hr_msg_t *replay_body);

/**
 * Delivers, oldest first, the retained messages of `t` with seq > `since` as
 * replay bodies (borrowed during the call). Returns HR_EGAP (after
 * replaying what it has) when history does not reach back to since + 1,
 * HR_ENOMEM if a replay body could not be made, else HR_OK.
 */
int hr__engine_replay(hr_engine_t *e, hr_topic_t *t, uint64_t since, hr_replay_cb cb, void *arg);

/** Calls fn for every topic whose name matches `pattern`. */
void hr__engine_each_match(hr_engine_t *e, const char *pattern, size_t plen,
                           void (*fn)(void *arg, hr_topic_t *t), void *arg);

#endif
