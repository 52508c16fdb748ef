/* SPDX-License-Identifier: MIT */
/* The interest index: which subscriptions match a topic (exact hash + wildcard trie). */
#ifndef HERALD_BROKER_INDEX_H
#define HERALD_BROKER_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "map.h"

struct hr_conn_s;
typedef struct hr_interest_s hr_interest_t;
typedef struct hr_qgroup_s hr_qgroup_t;
typedef struct hr_inode_s hr_inode_t;

struct hr_replay_s;
struct hr_xsub_s;

/*
 * One subscription, linked into one interest list. Its delivery target is a
 * local connection (`conn`) or, when `conn` is NULL, the peer link `peer`
 * (interest another process registered here). `cid` is the identity of the
 * connection that made it, unique across the processes of one broker:
 * echo suppression and queue-group choice compare identities, never
 * pointers, so they work for members that live in another process.
 */
typedef struct hr_sub_s {
    struct hr_conn_s *conn; /* owner, or NULL for a peer's interest */
    uint64_t cid;           /* client id of the subscriber */
    uint64_t sid;
    struct hr_replay_s *rp; /* private to sub.c: the pending replay while replaying */
    struct hr_xsub_s *xf;   /* private to xsub.c: transforms and their state; NULL: none */
    uint16_t peer;          /* peer link index when conn is NULL */
    hr_interest_t *in;      /* private: the list it is in */
    hr_qgroup_t *group;     /* private: its queue group, or NULL */
    uint32_t pos;           /* private: index in in->subs or group->members */
    uint16_t plen;
    uint16_t qlen;
    /* private to presence.c: the subscription's role there (enum hr_pres_role) */
    uint8_t presence;
    char *queue;    /* points into `pattern` storage after the pattern, or NULL */
    char pattern[]; /* pattern bytes, then queue bytes */
} hr_sub_t;

/* Members of one queue group (same pattern and queue name). */
struct hr_qgroup_s {
    hr_sub_t **members;
    uint32_t n, cap;
    uint32_t rr; /* round-robin cursor */
    uint16_t qlen;
    char queue[];
};

/* Subscriptions sharing one pattern: plain ones and queue groups. */
struct hr_interest_s {
    hr_sub_t **subs;
    uint32_t n, cap;
    hr_qgroup_t **groups;
    uint32_t ngroups, gcap;
};

typedef struct hr_index_s {
    hr_map_t exact;    /* topic -> hr_inode_t* (no wildcard): the common case, one lookup */
    hr_map_t children; /* (parent pointer, token) -> hr_inode_t* of the wildcard trie */
    hr_inode_t *root;  /* wildcard trie */
    size_t nsubs;      /* read-only */
    size_t npatterns;  /* read-only: distinct patterns with interest */
} hr_index_t;

typedef struct hr_index_visitor_s {
    void (*sub)(void *arg, hr_sub_t *s);
    void (*group)(void *arg, hr_qgroup_t *g);
    void *arg;
} hr_index_visitor_t;

int hr__index_init(hr_index_t *ix);
void hr__index_destroy(hr_index_t *ix);

/** New subscription (not yet indexed); NULL on OOM. Free with hr__sub_free(). */
hr_sub_t *hr__sub_new(struct hr_conn_s *conn, uint64_t cid, uint64_t sid, const char *pattern,
                      size_t plen, const char *queue, size_t qlen);
void hr__sub_free(hr_sub_t *s);

/** Indexes `s` by its (already validated) pattern. 0 or -1 on OOM. */
int hr__index_add(hr_index_t *ix, hr_sub_t *s);
/** Removes `s` from the index (it stays allocated). */
void hr__index_remove(hr_index_t *ix, hr_sub_t *s);
/** Visits every plain subscription and every queue group whose pattern matches `topic`. */
void hr__index_match(const hr_index_t *ix, const char *topic, size_t tlen,
                     const hr_index_visitor_t *v);
/** hr__index_match() with `h` = hr__hash(topic, tlen) from the caller. */
void hr__index_match_hashed(const hr_index_t *ix, const char *topic, size_t tlen, uint64_t h,
                            const hr_index_visitor_t *v);
/** Picks the next member of `g` round-robin, skipping members of client `skip_cid` (0: none). */
hr_sub_t *hr__qgroup_pick(hr_qgroup_t *g, uint64_t skip_cid);

#endif
