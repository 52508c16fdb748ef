/* SPDX-License-Identifier: MIT */
/* Applying a subscription's transforms to its deliveries: filter, fields, rate, conflate, batch. */
#ifndef HERALD_BROKER_XSUB_H
#define HERALD_BROKER_XSUB_H

#include <stdint.h>

#include "herald/protocol.h"
#include "xform.h"

struct hr_server_s;
struct hr_sub_s;

/* Limits of the per-subscription state (docs/transforms.md). */
#define HR_XSUB_CONFLATE_KEYS 1024          /* distinct key values one conflate window keeps */
#define HR_XSUB_BATCH_BYTES (256 * 1024)    /* a batch is sent early once it holds this much */
#define HR_XSUB_CONFLATE_BYTES (256 * 1024) /* and a conflate window ends early */
#define HR_XCACHE_MAX 8                     /* distinct projections shared within one fan-out */

/*
 * Projected bodies of one message, shared by the subscriptions of one
 * fan-out that ask for the same `fields` (keyed by hr__xform_fields_key()).
 * Zero-initialise; hr__xcache_clear() when the fan-out is done. Beyond
 * HR_XCACHE_MAX distinct projections, the others are made per subscription.
 */
typedef struct hr_xcache_s {
    int wellformed; /* the payload is one well-formed msgpack value: 1, 0 no, -1 not checked */
    uint32_t n;
    struct {
        const hr_xform_t *x; /* whose fields_key names the entry */
        hr_msg_t *m;         /* owned: the projected body (or the original one) */
    } e[HR_XCACHE_MAX];
} hr_xcache_t;

/** An empty cache for a new message. */
#define HR_XCACHE_INIT                                                                             \
    {                                                                                              \
        -1, 0,                                                                                     \
        {                                                                                          \
            {                                                                                      \
                0                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

/** Drops the cached bodies. */
void hr__xcache_clear(hr_xcache_t *c);

/**
 * Gives `sub` (a local subscription) the transforms `*x`, taking ownership
 * (`*x` is set to NULL). A hr_xform_t that asks for no delivery transform
 * (only presence) is freed and `sub` keeps the plain path. HR_OK or
 * HR_ENOMEM (`*x` freed too).
 */
int hr__xsub_attach(struct hr_sub_s *sub, hr_xform_t **x);

/** Frees every piece of transform state of `sub` (held bodies, timer entry). NULL-safe. */
void hr__xsub_free(struct hr_sub_s *sub);

/**
 * Whether the filter of `sub` (which has transforms) lets delivery body `m`
 * through: queue groups skip members that would drop a message.
 */
int hr__xsub_match(const struct hr_sub_s *sub, const hr_msg_t *m);

/**
 * Delivers body `m` (borrowed) to `sub`, which has transforms, through them
 * in order: filter, fields, rate, conflate, batch. `replay` marks history
 * from `since`/`last`: it passes filter, fields and batch, never rate or
 * conflate. `cache` (may be NULL) shares projected bodies within one fan-out.
 */
void hr__xsub_deliver(struct hr_sub_s *sub, hr_msg_t *m, int replay, hr_xcache_t *cache);

/** Sets up the worker's transform timer (one for all subscriptions). */
void hr__xsub_init(struct hr_server_s *s);
/** Closes the timer and frees the worker's scratch (the loop is stopping). */
void hr__xsub_close(struct hr_server_s *s);

#endif
