/* SPDX-License-Identifier: MIT */
/* Admission limits: connections per IP, pending handshakes, publish rate per connection. */
#ifndef HERALD_BROKER_LIMITS_H
#define HERALD_BROKER_LIMITS_H

#include <stdint.h>

#include "map.h"

struct hr_conn_s;
struct hr_server_s;

/* Per-connection limit state (embedded in hr_conn_t). */
typedef struct hr_limits_conn_s {
    uint8_t ip[16];     /* private: per-IP key (IPv4, or the /64 of IPv6) */
    uint8_t iplen;      /* private: 0 when the peer address is unknown */
    uint8_t counted;    /* private: counted against max-conns-per-ip */
    uint8_t pending;    /* private: counted as a pending handshake */
    uint64_t rate_ms;   /* private: last refill of the publish bucket */
    uint64_t tokens;    /* private: publish bucket, in thousandths of a message */
    uint64_t replay_ms; /* private: last refill of the wildcard-replay bucket */
    uint64_t replays;   /* private: wildcard-replay bucket, in thousandths */
} hr_limits_conn_t;

/* Per-worker limit state (embedded in hr_server_t). */
typedef struct hr_limits_s {
    hr_map_t per_ip;         /* private: IP key -> connection count (as a pointer-sized integer) */
    hr_map_t scan_ip;        /* private: IP key -> its wildcard replay scan bucket (malloc'd) */
    uint64_t scan_tokens;    /* private: the worker's scan bucket, in thousandths of a topic */
    uint64_t scan_at;        /* private: its last refill (ms) */
    uint64_t scan_pruned_at; /* private: when full per-IP buckets were last dropped (ms) */
    size_t pending;          /* read-only: connections accepted that have not sent HELLO yet */
    uint64_t log_window;     /* private: start (ms) of the refusal-logging second */
    uint32_t log_count;      /* private: refusal lines logged in it */
    uint64_t log_suppressed; /* private: refusal lines not logged in it */
} hr_limits_t;

void hr__limits_init(struct hr_server_s *s);
void hr__limits_destroy(struct hr_server_s *s);

/**
 * Admits a just-accepted connection: counts it against its IP and the pending
 * handshakes. Returns NULL, or a static reason (and counts the refusal) when
 * the connection must be refused with ERR 7 (HTTP 503 on WebSocket).
 */
const char *hr__limits_accept(struct hr_conn_s *c);

/**
 * Counts `c` against its client address (max-conns-per-ip) and keys its
 * replay scan budget by it: at accept, or once a PROXY header named the
 * client. NULL, or a static reason (counted) to refuse it with ERR 7.
 */
const char *hr__limits_peer(struct hr_conn_s *c);

/** The handshake of `c` is over (HELLO arrived): it no longer counts as pending. */
void hr__limits_hello(struct hr_conn_s *c);

/** 1 if `c` may publish one more message now (publish rate), else 0 (counted). */
int hr__limits_pub(struct hr_conn_s *c);

/**
 * 1 if one more line about a refused connection or credential may be logged
 * now: at most 10 a second, so that a flood cannot flood the log too. The
 * next line after a second with suppressed lines says how many there were.
 */
int hr__limits_log_budget(struct hr_server_s *s);

/**
 * 1 if `c` may start a history replay (SUB with `since`) for `pattern` now,
 * else 0 (counted). Only wildcard patterns are limited (max-replay-rate):
 * finding the topics they match walks every topic of the worker.
 */
int hr__limits_replay(struct hr_conn_s *c, const char *pattern, size_t n);

/**
 * Topics a wildcard replay by `c` may examine now: the least of what its
 * client address (replay-scan-rate a second) and the whole worker
 * (replay-scan-global) have left. 0: none, the replay must not run. The
 * budgets belong to the address, not the connection, so reconnecting does
 * not renew them.
 */
uint64_t hr__limits_scan_budget(struct hr_conn_s *c);

/**
 * Charges `topics` examined by a wildcard replay to the address `ip` (the
 * key of hr_limits_conn_t, which the caller copied: the connection may be
 * gone by the time the engine answers) and to the worker.
 */
void hr__limits_scan_charge(struct hr_server_s *s, const uint8_t *ip, size_t iplen,
                            uint64_t topics);

/** Periodic: forgets the per-address scan buckets that are full again (at most once a second). */
void hr__limits_sweep(struct hr_server_s *s);

/** Releases what `c` holds (its per-IP count, its pending slot). Idempotent. */
void hr__limits_conn_free(struct hr_conn_s *c);

#endif
