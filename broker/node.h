/* SPDX-License-Identifier: MIT */
/* A node of a scale-out deployment: the engine it runs with. Loop thread only. */
#ifndef HERALD_BROKER_NODE_H
#define HERALD_BROKER_NODE_H

#include "server.h"

/**
 * The engine named by setting `engine`: NULL in `*out` for "memory" (the caller makes the
 * in-memory engine), a Redis engine for a redis:// URL. HR_OK, or HR_EINVAL / HR_ENOMEM after
 * printing why to stderr.
 */
int hr__node_engine_new(hr_server_t *s, hr_engine_t **out);

/** With a Redis engine: runs the loop until it knows the epoch, at most `ms`. */
void hr__node_wait_ready(hr_server_t *s, uint64_t ms);

#endif
