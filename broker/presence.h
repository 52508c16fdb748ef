/* SPDX-License-Identifier: MIT */
/* Presence: who is in a room, for the watchers of `$PRES.<topic>`. Loop thread only. */
#ifndef HERALD_BROKER_PRESENCE_H
#define HERALD_BROKER_PRESENCE_H

#include <stdint.h>

#include "herald/protocol.h"
#include "router.h"

struct hr_server_s;
struct hr_conn_s;
struct hr_sub_s;

/*
 * A SUB with `presence: bin` on an exact topic makes its connection a
 * member of that topic (a "room") while the subscription lasts; a SUB to
 * `$PRES.<topic>` makes it a watcher, which gets a snapshot of the members
 * and then their changes, coalesced over `presence-interval` ms.
 *
 * Membership is kept per (topic, client id), counting the subscriptions
 * that hold it, so it crosses a process boundary as two calls:
 * hr__presence_member_join() and hr__presence_member_leave(). In a cluster
 * those are what a link forwards to the worker that keeps the room (the
 * owner of `$PRES.<topic>`, so that the room's changes are sequenced and
 * fanned out where they are made); this process implements them for its own
 * rooms.
 */

#define HR_PRES_PREFIX "$PRES."
#define HR_PRES_PREFIX_LEN 6
#define HR_PRES_INFO_MAX 1024 /* bytes of member info */

/* The role of a subscription in presence (hr_sub_t.presence). */
enum hr_pres_role { HR_PRES_NONE = 0, HR_PRES_MEMBER = 1, HR_PRES_WATCHER = 2 };

/** Sets up s->presence (after the loop and the config). HR_OK or HR_ENOMEM. */
int hr__presence_init(struct hr_server_s *s);
/** Closes the coalescing timer (with the server's other handles). */
void hr__presence_close(struct hr_server_s *s);
/** Frees every room (after the loop has stopped). NULL-safe. */
void hr__presence_destroy(struct hr_server_s *s);

/**
 * Classifies a SUB before anything is made. Returns its role (enum
 * hr_pres_role), or -1 after queueing the ERR to `c`: ERR 5 for a `$PRES.`
 * pattern that does not name one exact topic, ERR 12 (with the sid) for a
 * `presence` that is not bin, longer than 1 KiB, on a pattern or on a `$`
 * topic. `*scope` is what the subscribe permission is checked on: the room
 * topic for a watcher, else the pattern. `*info` is the member info, a
 * slice of the SUB's bytes.
 */
int hr__presence_sub_check(struct hr_conn_s *c, const hr_sub_cmd_t *cmd, hr_slice_t *scope,
                           hr_slice_t *info);

/**
 * `sub` is indexed with role `role` (from hr__presence_sub_check()): a
 * member joins; a watcher is sent its snapshot. Call it before a replaced
 * subscription of the same sid is released, so that keeping a membership
 * across the replacement is not a leave and a join.
 */
void hr__presence_sub_added(struct hr_conn_s *c, struct hr_sub_s *sub, int role, hr_slice_t info);

/** `sub` is going away (UNSUB, replaced, connection closing): its role ends. Idempotent. */
void hr__presence_sub_gone(struct hr_server_s *s, struct hr_sub_s *sub);

/**
 * Client `cid` holds one more membership of `topic` with member info
 * `info` (copied; the latest info wins). `origin` is the worker the client
 * is connected to. HR_OK or HR_ENOMEM (nothing changed).
 */
int hr__presence_member_join(struct hr_server_s *s, hr_slice_t topic, uint64_t cid, hr_slice_t info,
                             uint16_t origin);

/** Client `cid` holds one membership of `topic` less; at none it has left. */
void hr__presence_member_leave(struct hr_server_s *s, hr_slice_t topic, uint64_t cid);

/* What a cluster link forwards to the worker that keeps a room (server.h presence_fwd). */
enum hr_pres_fwd {
    HR_PRES_FWD_JOIN = 1,
    HR_PRES_FWD_LEAVE,
    HR_PRES_FWD_WATCH,
    HR_PRES_FWD_UNWATCH
};

/** On the keeper: watchers on another worker appeared (delta > 0) or went. */
void hr__presence_remote_watch(struct hr_server_s *s, hr_slice_t topic, int delta);

/** On the keeper: the room's snapshot body (a reference to drop), or NULL when no room. */
hr_msg_t *hr__presence_snapshot(struct hr_server_s *s, hr_slice_t topic);

/** Worker `origin` is gone (it crashed): every member it reported leaves. */
void hr__presence_worker_gone(struct hr_server_s *s, uint16_t origin);

/** Rooms with state and members in all of them (for tests and metrics). */
void hr__presence_stats(const struct hr_server_s *s, uint64_t *rooms, uint64_t *members);

#endif
