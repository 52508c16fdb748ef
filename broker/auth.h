/* SPDX-License-Identifier: MIT */
/* Authentication at HELLO and authorization of every PUB and SUB. */
#ifndef HERALD_BROKER_AUTH_H
#define HERALD_BROKER_AUTH_H

#include "herald/protocol.h"

struct hr_conn_s;
struct hr_server_s;

enum hr_auth_action { HR_AUTH_PUB = 1, HR_AUTH_SUB = 2 };

/** Prepares the configured authentication (tokens, JWT keys). HR_OK or an error on stderr. */
int hr__auth_init(struct hr_server_s *s);
void hr__auth_destroy(struct hr_server_s *s);

/**
 * Checks the HELLO credentials of `c` (`token` may be empty) and records the
 * connection's permissions in c->auth. HR_OK or HR_EAUTH with `*why` set to
 * a static message for the ERR 3 frame.
 */
int hr__auth_hello(struct hr_conn_s *c, hr_slice_t token, const char **why);

/** 1 if `c` may publish to topic / subscribe to pattern `t`, else 0. */
int hr__auth_allowed(const struct hr_conn_s *c, int action, hr_slice_t t);

/** Releases c->auth. */
void hr__auth_conn_free(struct hr_conn_s *c);

#endif
