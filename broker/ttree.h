/* SPDX-License-Identifier: MIT */
/* The topics with state as a token tree: a pattern visits only the topics it can match. */
#ifndef HERALD_BROKER_TTREE_H
#define HERALD_BROKER_TTREE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/protocol.h"
#include "map.h"

typedef struct hr_tnode_s hr_tnode_t;

typedef struct hr_ttree_s {
    hr_map_t kids;    /* private: (parent, token) -> child */
    hr_tnode_t *root; /* private */
    size_t nodes;     /* read-only */
} hr_ttree_t;

/** HR_OK or HR_ENOMEM. */
int hr__ttree_init(hr_ttree_t *t);
void hr__ttree_destroy(hr_ttree_t *t);

/** Files `val` under the (valid) topic; returns its node for hr__ttree_del(), NULL on OOM. */
hr_tnode_t *hr__ttree_add(hr_ttree_t *t, const char *topic, size_t n, void *val);
/** Removes the topic at `node` (NULL: nothing) and the nodes left empty. */
void hr__ttree_del(hr_ttree_t *t, hr_tnode_t *node);

/**
 * Calls `fn` for the value of every topic `pattern` matches (the protocol's
 * rules, `$` topics included). Returns the nodes visited, or -1 when that
 * would exceed `budget` (0: no limit); `fn` may then have been called for
 * some of them.
 */
int64_t hr__ttree_match(const hr_ttree_t *t, const char *pattern, size_t n, uint64_t budget,
                        void (*fn)(void *arg, void *val), void *arg);

#endif
