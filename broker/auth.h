/* SPDX-License-Identifier: MIT */
/* Authentication at HELLO and authorization of every PUB and SUB. */
#ifndef HERALD_BROKER_AUTH_H
#define HERALD_BROKER_AUTH_H

#include <stdint.h>

#include "herald/protocol.h"

struct hr_conn_s;
struct hr_server_s;

/*
 * What a connection may do. HR_AUTH_REPLY is a PUB's reply topic: the
 * publisher asks others to publish there for it, so it must be a topic the
 * publisher may both publish and subscribe to.
 */
enum hr_auth_action { HR_AUTH_PUB = 1, HR_AUTH_SUB = 2, HR_AUTH_REPLY = 3 };

/* A list of validated patterns. */
typedef struct hr_plist_s {
    char **v;
    uint32_t n, cap;
} hr_plist_t;

/* One identity's permissions (c->auth points at one; NULL: unrestricted). */
typedef struct hr_perms_s {
    char name[64];  /* token name or JWT `sub`, for logs */
    int64_t exp;    /* unix seconds after which the connection is closed; 0: never */
    int shared;     /* owned by the server's token table, not by the connection */
    hr_plist_t pub; /* topics it may publish to */
    hr_plist_t sub; /* patterns it may subscribe within */
} hr_perms_t;

/**
 * Prepares the configured authentication (token file, JWT keys). HR_OK,
 * HR_EINVAL after printing the reason (file and line) to stderr, or
 * HR_ENOMEM. With none configured every client may do everything.
 */
int hr__auth_init(struct hr_server_s *s);
void hr__auth_destroy(struct hr_server_s *s);

/**
 * Checks the HELLO credentials of `c` (`token` may be empty) and records the
 * connection's permissions in c->auth. HR_OK or HR_EAUTH with `*why` set to
 * a static message for the ERR 3 frame.
 */
int hr__auth_hello(struct hr_conn_s *c, hr_slice_t token, const char **why);

/** 1 if `c` may publish to topic / subscribe to pattern `t` (enum hr_auth_action), else 0. */
int hr__auth_allowed(const struct hr_conn_s *c, int action, hr_slice_t t);

/** 1 if the credentials of `c` have expired (a JWT's exp passed): close it with ERR 3. */
int hr__auth_expired(const struct hr_conn_s *c);

/** Releases c->auth. */
void hr__auth_conn_free(struct hr_conn_s *c);

/* ---- the parsers, also used by the unit suite and the fuzz target -------- */

/**
 * Adds the patterns of a permission spec `pub=P1,P2 sub=P3` (words separated
 * by spaces or `;`) to `perms`. HR_OK; else HR_EINVAL (not `pub=` or `sub=`),
 * HR_ETOPIC (an invalid pattern) or HR_ENOMEM, with a message in `err`.
 * What was added before the failure stays: hr__auth_perms_clear() it.
 */
int hr__auth_parse_perms(hr_perms_t *perms, const char *spec, char *err, size_t errlen);

/**
 * Adds the `pub` and `sub` arrays of a JSON object (the `herald` JWT claim)
 * to `perms`; other members are skipped. HR_OK; else HR_EINVAL (malformed
 * JSON, or `pub`/`sub` not an array of strings), HR_ETOPIC (an invalid
 * pattern) or HR_ENOMEM. What was added before a failure stays, as above.
 */
int hr__auth_parse_claim(hr_perms_t *perms, const char *json, size_t n);

/** Frees the patterns of `perms` (not `perms` itself) and empties its lists. */
void hr__auth_perms_clear(hr_perms_t *perms);

#endif
