/* SPDX-License-Identifier: MIT */
/* Stream stages: write, end, error, a high-water mark, pause/resume and drain, in chains. */
#ifndef HERALD_BROKER_STAGE_H
#define HERALD_BROKER_STAGE_H

#include <stddef.h>
#include <stdint.h>

/*
 * A stage takes items from upstream with hr__stage_write(), does its work,
 * and hands results on with hr__stage_push(). Stages are linked into chains
 * ending in a sink (a stage with no `next`). The model is Node's stream: a
 * write into a stage whose fill has reached its high-water mark still takes
 * the item but answers 0, "wait"; whoever wrote then pauses its own source
 * (a connection stops reading its socket, a stage holds what it would push)
 * until the stage drains, i.e. its fill falls to half the mark. Pausing thus
 * travels upstream stage by stage to the socket, and nothing in a chain grows
 * without bound: each stage holds at most its mark plus what its upstream
 * had already taken when it was told to wait.
 *
 * What an item is belongs to the chain (a publish on its way to the
 * sequencer, a delivery on its way to a connection); the stage interface
 * only needs the intrusive link in hr_item_t, used while an item is held
 * because the next stage is full. Ownership of an item passes with every
 * write and push.
 */

typedef struct hr_item_s {
    struct hr_item_s *next; /* private: a stage's held list */
} hr_item_t;

typedef struct hr_stage_s hr_stage_t;

typedef struct hr_stage_ops_s {
    const char *name;
    /** Takes `it`; pushes zero or more items on, now or later. */
    void (*write)(hr_stage_t *st, hr_item_t *it);
    /** Optional: no more writes will come; push what is held, then call hr__stage_ended(). */
    void (*end)(hr_stage_t *st);
    /** Frees the stage and every item it still holds (the chain is being torn down). */
    void (*destroy)(hr_stage_t *st);
    /** Optional: frees an item this stage's held list still has at destroy. */
    void (*drop)(hr_stage_t *st, hr_item_t *it);
} hr_stage_ops_t;

/** An error a stage reports (a child process died, garbage came back, ...). */
typedef void (*hr_stage_error_cb)(void *arg, hr_stage_t *st, int status, const char *why);
/** A source outside the chain (a connection) may write again. */
typedef void (*hr_stage_drain_cb)(void *arg, hr_stage_t *st);

/* Every stage starts with this; the rest of its state is its own. */
struct hr_stage_s {
    const hr_stage_ops_t *ops;
    hr_stage_t *next; /* downstream; NULL: a sink */
    hr_stage_t *up;   /* upstream stage, told when this one drains; NULL: the source is outside */
    size_t fill;      /* what the stage holds, in its own unit, held items included */
    size_t hwm;       /* high-water mark of `fill`; 0: never full */
    size_t lwm;       /* a stage that said "wait" drains when its fill falls to this (hwm / 2) */
    hr_item_t *held, *held_tail; /* pushed while `next` was full, oldest first */
    uint32_t waiting : 1;        /* said "wait" to upstream, owes it a drain */
    uint32_t blocked : 1;        /* `next` said "wait": pushes are held */
    uint32_t ended : 1;
    uint32_t end_due : 1; /* ended with items still held: the next stage ends once they went */
    hr_stage_drain_cb on_drain; /* for a source outside the chain */
    hr_stage_error_cb on_error;
    void *arg; /* for on_drain and on_error */
};

/** Initialises the common part of a stage. */
void hr__stage_init(hr_stage_t *st, const hr_stage_ops_t *ops, size_t hwm);

/** Links `n` stages into a chain, st[0] first. */
void hr__stage_chain(hr_stage_t **st, size_t n);

/**
 * Writes `it` into `st`. Returns 1 while `st` is below its high-water mark,
 * 0 when the writer should wait for a drain (the item was taken either way).
 */
int hr__stage_write(hr_stage_t *st, hr_item_t *it);

/**
 * Hands `it` from `st` to the next stage, or holds it (in order) while the
 * next stage is full. A sink may not push.
 */
void hr__stage_push(hr_stage_t *st, hr_item_t *it);

/**
 * Writes `it` into the next stage without ever holding it, for chains whose
 * source cannot wait (one publish fans out to many subscriptions): the next
 * stage's fullness is then its own to act on (the connection's output queue
 * pauses reading its socket, and the slow-consumer policy decides what its
 * overflow loses). Items of such chains may live on the stack.
 */
void hr__stage_forward(hr_stage_t *st, hr_item_t *it);

/** The stage's own fill changed by `delta` (its work took or finished items). */
void hr__stage_fill(hr_stage_t *st, long delta);

/**
 * Sets the fill of a stage that measures it itself (a connection's pending
 * output bytes): returns 0 when the stage is now full (it said "wait"),
 * else 1; drains it when it falls to its low-water mark.
 */
int hr__stage_set_fill(hr_stage_t *st, size_t fill);

/** Whether a write into `st` now would be answered "wait". */
int hr__stage_full(const hr_stage_t *st);

/** No more writes into `st` (its `end` op, if any, pushes what it holds). */
void hr__stage_end(hr_stage_t *st);

/** Called by a stage's `end` op once it has pushed everything: ends the next stage. */
void hr__stage_ended(hr_stage_t *st);

/** Reports an error of `st` to whoever set on_error on the chain's first stage. */
void hr__stage_error(hr_stage_t *st, int status, const char *why);

/** Destroys every stage of the chain starting at `st`, held items included. */
void hr__stage_destroy_chain(hr_stage_t *st);

#endif
