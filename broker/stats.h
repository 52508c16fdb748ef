/* SPDX-License-Identifier: MIT */
/* A worker's numbers for /metrics and /healthz, and the shared area a cluster publishes them in. */
#ifndef HERALD_BROKER_STATS_H
#define HERALD_BROKER_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

/* hr_wstats_t.have: process metrics that could be read. */
#define HR_WS_HAVE_STATM 1u  /* rss, vm */
#define HR_WS_HAVE_FDS 2u    /* open_fds */
#define HR_WS_HAVE_MAXFDS 4u /* max_fds */

/*
 * Everything /metrics prints about one worker at one moment. Every field is a uint64_t: the
 * counters (from `st` up to `subs`, except st.conns[]) are added field by field, and a
 * respawned worker continues its predecessor's counters (see stats.c).
 */
typedef struct hr_wstats_s {
    /* counters */
    hr_stats_t st;      /* the worker's own counters (st.conns[] are gauges) */
    uint64_t reclaimed; /* topics whose state was reclaimed */
    uint64_t ring_out;  /* records written into the rings to other workers */
    uint64_t ring_in;   /* records read from the rings of other workers */
    uint64_t ring_full; /* records that found a ring to another worker full and waited */
    uint64_t pipe_passed, pipe_rewritten, pipe_rejected, pipe_failed, pipe_timeouts;
    uint64_t pipe_restarts, pipe_late;                      /* publish pipelines (pipeline.c) */
    uint64_t engine_reconnects, engine_gaps, engine_resets; /* a scale-out engine's */
    /* gauges */
    uint64_t subs, patterns, topics, tombstones, hist_bytes, hist_msgs, outq, inflight;
    uint64_t ring_backlog;  /* bytes waiting for room in the rings */
    uint64_t pipe_inflight; /* messages in publish pipeline stages */
    uint64_t engine_up;     /* 1: the engine serves (always, for the in-memory one) */
    uint64_t engine_queued; /* bytes of commands waiting for the engine's store */
    uint64_t engine_lag_ms; /* age of the oldest of them */
    uint64_t rss, vm, open_fds, max_fds;
    uint64_t start_unix_ms; /* wall clock, ms since the epoch */
    uint64_t start_mono_ms; /* monotonic clock (the loop's), for uptime */
    uint64_t uptime_ms;     /* filled when a scrape renders */
    uint64_t have;          /* HR_WS_HAVE_* */
    /* filled by the reader from what the primary wrote, never published by the worker */
    uint64_t up;       /* 1: serving */
    uint64_t restarts; /* respawns after the worker died */
} hr_wstats_t;

#define HR_WS_COUNTERS_END offsetof(hr_wstats_t, subs)

/* The cluster's counters a worker's link keeps (cluster/link.c fills them). */
typedef struct hr_link_counters_s {
    uint64_t ring_out, ring_in, ring_full, ring_backlog;
    uint64_t remote_subs; /* subscriptions other workers registered in this worker's index */
} hr_link_counters_t;

typedef void (*hr_link_counters_cb)(const hr_server_t *s, hr_link_counters_t *lc);

/* ---- the shared area (a memfd made by the primary) --------------------------------------- */

/*
 * One worker's slot. The worker is the only writer of `seq` and `w`: a seqlock with two
 * copies (a latch, see stats.c), so a reader never sees half a snapshot, even of a worker
 * that died while writing. The primary is the only writer of the other words.
 */
typedef struct hr_stats_slot_s {
    _Alignas(64) _Atomic uint32_t seq;
    _Atomic uint32_t up;           /* primary: 1 from the worker's "ready" until it exits */
    _Atomic uint32_t gen;          /* primary: incarnation, 1 for the first */
    _Atomic uint32_t pid;          /* primary: the incarnation's pid */
    _Atomic uint64_t restarts;     /* primary: spawns after the first */
    _Alignas(64) hr_wstats_t w[2]; /* readers take w[seq & 1] */
} hr_stats_slot_t;

typedef struct hr_stats_area_s hr_stats_area_t;

/**
 * Primary: creates the area for `n` workers in a sealed memfd without close-on-exec (the
 * workers inherit it) and maps it into `*area`. Returns the fd, or a negative errno with
 * nothing left behind.
 */
int hr__stats_area_create(unsigned n, hr_stats_area_t **area);
/** Primary: unmaps the area and closes `fd` (either may be absent: NULL, -1). */
void hr__stats_area_free(hr_stats_area_t *area, int fd);
/** Primary: worker `id` was spawned as process `pid` (a respawn counts as a restart). */
void hr__stats_area_spawned(hr_stats_area_t *area, unsigned id, int pid);
/** Primary: worker `id` serves (up = 1) or has exited (up = 0). */
void hr__stats_area_set_up(hr_stats_area_t *area, unsigned id, int up);

/** Worker `id`'s slot, or NULL when `id` is out of range. */
hr_stats_slot_t *hr__stats_area_slot(hr_stats_area_t *area, unsigned id);
/**
 * A new writer takes over the slot from one that died, perhaps in the middle of a write: after
 * it the slot's w[0] is its last complete snapshot (none when `seq` is 0).
 */
void hr__stats_slot_adopt(hr_stats_slot_t *sl);
/** The slot's one writer publishes `w` (no reader sees half of it). */
void hr__stats_slot_write(hr_stats_slot_t *sl, const hr_wstats_t *w);
/**
 * Copies the slot's last complete snapshot into `w`: 0, or -1 when none was ever written.
 * Retries only while the writer writes; never returns a torn copy.
 */
int hr__stats_slot_read(const hr_stats_slot_t *sl, hr_wstats_t *w);

/* ---- a worker ------------------------------------------------------------------------------ */

/**
 * Worker: maps the area behind `fd` (inherited from the primary) and publishes a first
 * snapshot, continuing the counters the previous incarnation of this worker left in its slot.
 * `lc` (may be NULL) reads the link's counters. Returns HR_OK, HR_EPROTO when `fd` is not an
 * area for this cluster, HR_ENOMEM, or a negative errno. Without an area /metrics shows this
 * worker alone.
 */
int hr__stats_attach(hr_server_t *s, int fd, hr_link_counters_cb lc);
/** Worker: unmaps the area. */
void hr__stats_detach(hr_server_t *s);
/** The sweep: publishes a snapshot when the last one is older than HR_STATS_PERIOD_MS. */
void hr__stats_tick(hr_server_t *s, uint64_t now_ms);

#define HR_STATS_PERIOD_MS 250

/** Fills `w` with this worker's numbers now; `fds` also counts open descriptors (a listing). */
void hr__stats_collect(const hr_server_t *s, hr_wstats_t *w, int fds);

/* What one scrape shows. */
enum hr_ws_state { HR_WS_NONE = 0, HR_WS_DOWN = 1, HR_WS_UP = 2 };

typedef struct hr_stats_view_s {
    hr_wstats_t total; /* the whole broker */
    hr_wstats_t *w;    /* per worker (n of them); NULL for a single process */
    uint8_t *state;    /* enum hr_ws_state per worker */
    unsigned n;        /* workers; 0 for a single process */
    unsigned up;       /* workers serving (this one included) */
} hr_stats_view_t;

/**
 * Fills `v` for a scrape: alone, this worker's numbers; in a cluster, this worker's slot is
 * published afresh and every slot is read. Returns HR_OK or HR_ENOMEM. Free with
 * hr__stats_view_free().
 */
int hr__stats_view(const hr_server_t *s, hr_stats_view_t *v);
void hr__stats_view_free(hr_stats_view_t *v);

/** Workers serving, this one included (1 for a single process). */
unsigned hr__stats_workers_up(const hr_server_t *s);

#endif
