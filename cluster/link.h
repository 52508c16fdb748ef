/* SPDX-License-Identifier: MIT */
/* What the workers share: the rings between every pair, the seq table, and the links on them. */
#ifndef HERALD_CLUSTER_LINK_H
#define HERALD_CLUSTER_LINK_H

#include <stdint.h>

#include <uv.h>

#include "config.h"

#define HR_CLUSTER_MAX 64                       /* workers */
#define HR_CLUSTER_FDS_MAX (3 + HR_CLUSTER_MAX) /* rings, seq table, eventfds, stats */
#define HR_CLUSTER_FD0 4                        /* where a worker finds them (3: control) */
/* The stats area (broker/stats.h) comes after the n eventfds. */
#define HR_CLUSTER_FD_STATS(n) (HR_CLUSTER_FD0 + 2 + (n))

struct hr_server_s;
struct hr_link_counters_s;
struct hr_stats_area_s;

/* ---- set up by the primary ----------------------------------------------------- */

typedef struct hr_cluster_shm_s hr_cluster_shm_t;

/** Creates the shared memory and wake-up fds for `n` workers (NULL with errno on failure). */
hr_cluster_shm_t *hr__cluster_shm_create(int n, const hr_config_t *cfg);
/** Fills `io` with what a worker inherits (in the order HR_CLUSTER_FD0 onwards); returns count. */
int hr__cluster_shm_stdio(hr_cluster_shm_t *shm, uv_stdio_container_t *io, int max);
void hr__cluster_shm_free(hr_cluster_shm_t *shm);
/** The stats area the workers publish into (the primary writes up and restarts there). */
struct hr_stats_area_s *hr__cluster_shm_stats(hr_cluster_shm_t *shm);

/* ---- used by a worker ------------------------------------------------------------ */

/** Maps what the primary set up and links `s` to the other workers. HR_OK or a status. */
int hr__link_attach(struct hr_server_s *s);
/** Whether every peer answered this worker's HELLO (or did not in time): it may serve. */
int hr__link_synced(void);
/** A peer went away (its process died) or came back (a new incarnation listens). */
void hr__link_peer_down(struct hr_server_s *s, int peer);
void hr__link_peer_up(struct hr_server_s *s, int peer);
/** Fills the link's counters for /metrics (an hr_link_counters_cb of broker/stats.h). */
void hr__link_counters(const struct hr_server_s *s, struct hr_link_counters_s *lc);
/** Closes the link's loop handles (the broker is stopping). */
void hr__link_stop(struct hr_server_s *s);
/** Unlinks and unmaps (the worker is exiting, its loop has ended). */
void hr__link_detach(struct hr_server_s *s);

#endif
