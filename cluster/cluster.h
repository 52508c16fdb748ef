/* SPDX-License-Identifier: MIT */
/* The cluster: a primary process supervising worker processes that share the ports. */
#ifndef HERALD_CLUSTER_CLUSTER_H
#define HERALD_CLUSTER_CLUSTER_H

#include "config.h"

struct hr_server_s;

/*
 * `herald --workers N` (N > 1) runs a primary: it reserves the ports, sets
 * up the shared memory (rings between every pair of workers, the shared seq
 * table), spawns N copies of itself as workers, writes the ready file once
 * all of them listen, respawns a worker that dies (with backoff, loudly
 * when it keeps dying), forwards SIGHUP, and on SIGTERM/SIGINT lets every
 * worker drain and exits 0. A worker learns its place from the environment
 * (HERALD_WORKER_*), set by the primary only.
 */

/** Runs the primary until shutdown; returns the process exit code. */
int hr__primary_run(const hr_config_t *cfg, int argc, char **argv);

/**
 * In a worker: fills the worker fields of `cfg` from the environment the
 * primary set. Returns 1 in a worker, 0 in a process started by a user,
 * -1 (after a message on stderr) when the environment is inconsistent.
 */
int hr__worker_setup(hr_config_t *cfg);

/** In a worker, once the server exists: links it to the others (rings, control pipe). */
int hr__worker_attach(struct hr_server_s *s);

/** In a worker, after the server listens: tells the primary. */
void hr__worker_ready(struct hr_server_s *s);

/** In a worker being destroyed: releases the links. */
void hr__worker_detach(struct hr_server_s *s);

#endif
