/* SPDX-License-Identifier: MIT */
/* Subscription transforms: SUB option decoding, payload filters and field projections. */
#ifndef HERALD_BROKER_XFORM_H
#define HERALD_BROKER_XFORM_H

#include <stddef.h>
#include <stdint.h>

#include "herald/protocol.h"
#include "mpread.h"

/*
 * A SUB may carry transforms in its option map (docs/transforms.md): `filter`,
 * `fields`, `rate`, `conflate`, `batch`, and `presence` member info. They are
 * decoded once, when the subscription is made, into one compact allocation
 * (hr_xform_t) that the router consults per message. Nothing here allocates
 * or copies per message except the projected body itself, and nothing here
 * touches a loop: any thread may use a hr_xform_t it can read.
 */

/* Limits (refused with HR_EOPTION beyond them). */
#define HR_XFORM_DEPTH_MAX 8             /* nesting of filter expressions */
#define HR_XFORM_NODES_MAX 64            /* filter expressions in all */
#define HR_XFORM_VALUES_MAX 256          /* constants in all `==`, `!=`, order and `in` nodes */
#define HR_XFORM_FIELDS_MAX 32           /* paths in `fields` */
#define HR_XFORM_PATH_MAX 255            /* bytes in one field path */
#define HR_XFORM_SEGS_MAX 8              /* keys in one field path */
#define HR_XFORM_PRESENCE_MAX 1024       /* bytes of `presence` member info */
#define HR_XFORM_RATE_N_MAX 1000000      /* rate.n */
#define HR_XFORM_WINDOW_MS_MAX 86400000  /* rate.ms: one day */
#define HR_XFORM_CONFLATE_MS_MAX 3600000 /* conflate.ms: one hour */
#define HR_XFORM_BATCH_MAX 1024          /* batch.max messages */
#define HR_XFORM_BATCH_MS_MAX 60000      /* batch.ms: one minute */

/* Bits of hr_xform_t.flags: which transforms the subscription asked for. */
enum hr_xform_flag {
    HR_XF_FILTER = 1u << 0,
    HR_XF_FIELDS = 1u << 1,
    HR_XF_RATE = 1u << 2,
    HR_XF_CONFLATE = 1u << 3,
    HR_XF_BATCH = 1u << 4,
    HR_XF_PRESENCE = 1u << 5
};

/* private: filter operators */
enum hr_xf_op {
    HR_XF_EQ,
    HR_XF_NE,
    HR_XF_LT,
    HR_XF_LE,
    HR_XF_GT,
    HR_XF_GE,
    HR_XF_IN,
    HR_XF_EXISTS,
    HR_XF_AND,
    HR_XF_OR,
    HR_XF_NOT
};

/* private: one filter expression; a subtree is `size` consecutive nodes. */
typedef struct hr_xf_node_s {
    uint8_t op;      /* HR_XF_EQ ... */
    uint16_t size;   /* nodes in this subtree, itself included */
    uint16_t nargs;  /* and, or, not: sub-expressions; in: constants */
    uint16_t val;    /* comparisons, in: first constant in hr_xform_t.vals */
    hr_slice_t path; /* comparisons, in, exists: the field */
} hr_xf_node_t;

/* private: one node of the projection trie; children are consecutive. */
typedef struct hr_xf_field_s {
    hr_slice_t key; /* one key of a path */
    uint16_t kids;  /* first child in hr_xform_t.fields */
    uint16_t nkids; /* 0: a leaf, the whole value is kept */
} hr_xf_field_t;

/*
 * The decoded transforms of one subscription. Every slice points into the
 * same allocation and lives as long as it.
 */
typedef struct hr_xform_s {
    uint32_t flags;              /* read-only: HR_XF_* */
    uint32_t rate_n;             /* read-only: rate: at most rate_n messages ... */
    uint32_t rate_ms;            /* read-only: ... per window of rate_ms */
    uint32_t conflate_ms;        /* read-only: conflate window */
    hr_slice_t conflate_key;     /* read-only: field path; empty: latest per topic */
    uint32_t batch_max;          /* read-only: messages in one BATCH frame */
    uint32_t batch_ms;           /* read-only: longest a batch waits after its first message */
    hr_slice_t presence;         /* read-only: member info (may be empty with HR_XF_PRESENCE) */
    hr_slice_t fields_key;       /* read-only: canonical projection (see hr__xform_fields_key) */
    uint64_t fields_hash;        /* read-only: hash of fields_key */
    const hr_xf_node_t *nodes;   /* private: filter program, prefix order */
    const hr_mp_val_t *vals;     /* private: filter constants */
    const hr_xf_field_t *fields; /* private: projection trie; root children first */
    uint16_t nnodes;             /* private */
    uint16_t nroots;             /* private: root children of the trie */
} hr_xform_t;

/**
 * Decodes the transforms in `opts`, the raw bytes of a SUB option map (as
 * the codec hands it over; `n` == 0 or a nil means no options). `exact` is
 * nonzero when the SUB pattern is an exact topic (hr_topic_validate()
 * accepts it: no wildcard), which `presence` requires. Unknown keys, and `queue`, `since`, `last`,
 * `epoch` (the codec's), are ignored; a transform key whose value is nil counts as absent.
 *
 * Returns HR_OK with `*out` set to a new hr_xform_t, or to NULL when the map
 * carries no transform at all (a plain subscription costs nothing); or
 * HR_EOPTION (`*why`: a static reason naming the problem) for any invalid
 * transform or malformed map; or HR_ENOMEM. `*out` is NULL on failure.
 * Reads `opts` strictly and allocates only the result.
 */
int hr__xform_new(const void *opts, size_t n, int exact, hr_xform_t **out, const char **why);

/** Frees `*x` (NULL-safe) and sets `*x` to NULL. */
void hr__xform_free(hr_xform_t **x);

/**
 * Evaluates the filter of `x` against `payload`. Returns 1 (deliver) or 0
 * (leave out). Without a filter, 1. A payload that is not one well-formed
 * msgpack map makes every comparison and `exists` false, never an error.
 * No allocation, no copy; cost is bounded by the filter's size times the
 * payload's length, whatever its nesting.
 */
int hr__xform_match(const hr_xform_t *x, const void *payload, size_t n);

/**
 * hr__xform_match() when the caller already knows whether `payload` is one
 * well-formed msgpack value (hr__mp_check()): a fan-out checks each message
 * once for all the subscriptions whose filters read it.
 */
int hr__xform_match_checked(const hr_xform_t *x, const void *payload, size_t n, int wellformed);

/** Receives projected bytes; returns 0, or nonzero to stop (the projection then fails). */
typedef int (*hr_xform_write_cb)(void *arg, const void *p, size_t n);

/**
 * Writes the projection of `payload` by the `fields` of `x` through `write`:
 * a map holding only those paths that exist (nested paths keep their
 * nesting, keys in the order of hr__xform_fields_key()). The result is never
 * longer than `payload`, so a buffer of `n` bytes always suffices.
 *
 * Returns 1 when a projection was written; 0 when `x` has no `fields` or the
 * payload is not one well-formed msgpack map (nothing written: deliver the
 * payload unchanged); HR_ECANCELED when `write` asked to stop.
 */
int hr__xform_project(const hr_xform_t *x, const void *payload, size_t n, hr_xform_write_cb write,
                      void *arg);

/**
 * hr__xform_project() appending to `b`. Returns 1, 0 (as above, `b`
 * untouched) or HR_ENOMEM (`b` back at its old length).
 */
int hr__xform_project_buf(const hr_xform_t *x, const void *payload, size_t n, hr_buf_t *b);

/**
 * The key under which subscriptions share one projected body of a message:
 * the msgpack array of the `fields` paths, sorted key by key, duplicates and
 * paths inside another listed path dropped. Equal keys give equal
 * projections of every payload. Empty when `x` is NULL or has no `fields`.
 * `fields_hash` is a 64-bit FNV-1a of it, the same in every process: a
 * quick first comparison, not a map key (clients choose the paths, so key a
 * hash map by the bytes, e.g. hr__map, whose hash is keyed).
 */
hr_slice_t hr__xform_fields_key(const hr_xform_t *x);

/**
 * Finds the value of the conflate `key` field of `x` in `payload`. Returns 1
 * with `*val` the raw msgpack bytes of the value (a slice of `payload`), or
 * 0 when there is no key field, the field is missing or the payload is not
 * a well-formed map (all such messages share one slot). Values compare as
 * bytes: 1 and 1.0, or one string in two encodings, are different slots.
 */
int hr__xform_conflate_key(const hr_xform_t *x, const void *payload, size_t n, hr_slice_t *val);

#endif
