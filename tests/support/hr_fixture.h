/* SPDX-License-Identifier: MIT */
/* Test fixture: runs the real herald binary on ephemeral loopback ports. */
#ifndef HERALD_TEST_FIXTURE_H
#define HERALD_TEST_FIXTURE_H

#include <sys/types.h>

typedef struct hr_fixture_s {
    pid_t pid;
    int tcp_port;
    int ws_port;
    char dir[256];  /* private temp dir (ready file, logs) */
    char *args[64]; /* private: argv kept for restart */
    int nargs;
} hr_fixture_t;

/**
 * Starts $HERALD_BIN (or ./broker/herald) with --bind 127.0.0.1 --port 0
 * --ws-port 0 --ready-file plus `extra` (NULL-terminated, may be NULL), and
 * waits until it listens. Returns 0 or -1 (and the reason on stderr).
 */
int hr_fixture_start(hr_fixture_t *fx, const char *const *extra);
/** Restarts a stopped broker with the same arguments and the same ports. */
int hr_fixture_restart(hr_fixture_t *fx);
/** SIGTERM and wait; returns the exit status (or -1). */
int hr_fixture_stop(hr_fixture_t *fx);
/** SIGKILL and wait. */
void hr_fixture_kill(hr_fixture_t *fx);
/** Frees the fixture's memory and removes its temp dir (after stop/kill). */
void hr_fixture_destroy(hr_fixture_t *fx);

#endif
