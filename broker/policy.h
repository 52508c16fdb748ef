/* SPDX-License-Identifier: MIT */
/* Slow-consumer policies per topic pattern: what a backlogged connection loses, and GAP frames. */
#ifndef HERALD_BROKER_POLICY_H
#define HERALD_BROKER_POLICY_H

#include <stdint.h>

#include "herald/protocol.h"

struct hr_server_s;
struct hr_conn_s;

enum hr_policy_kind {
    HR_POL_DISCONNECT, /* the default: ERR 6 and close, as out-soft / out-hard decide */
    HR_POL_DROP_OLDEST,
    HR_POL_DROP_NEWEST,
    HR_POL_CONFLATE
};

/* Most distinct (sid, topic) lost ranges a connection tracks before it is closed as slow. */
#define HR_POLICY_GAPS_MAX 4096

/**
 * Reads the `slow-policy` setting ("pattern=policy,..."; first match wins)
 * into the server. HR_OK, HR_EINVAL (printed to stderr) or HR_ENOMEM.
 */
int hr__policy_init(struct hr_server_s *s);
void hr__policy_destroy(struct hr_server_s *s);

/**
 * Called by hr__conn_deliver() when the server has policies and the
 * connection is backlogged (or holds parked messages): applies the policy
 * of the message's topic. Returns 1 when the message was taken (parked or
 * dropped and recorded for a GAP), 0 when it is to be queued as usual.
 */
int hr__policy_deliver(struct hr_conn_s *c, uint64_t sid, hr_msg_t *m);

/** The connection's output drained: GAP frames, then what was parked, go out. */
void hr__policy_release(struct hr_conn_s *c);

/** Forgets what is parked or recorded for `sid` of `c` (UNSUB, replaced). */
void hr__policy_forget(struct hr_conn_s *c, uint64_t sid);

/** Frees the connection's parked state. */
void hr__policy_free(struct hr_conn_s *c);

#endif
