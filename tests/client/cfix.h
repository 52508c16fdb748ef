/* SPDX-License-Identifier: MIT */
/* Test helpers for libherald suites: the real broker as a child process, loop running. */
#ifndef HERALD_TESTS_CFIX_H
#define HERALD_TESTS_CFIX_H

#include <sys/types.h>

#include <uv.h>

#include "herald/client.h"

/* One broker process started from $HERALD_BIN on 127.0.0.1. */
typedef struct cfix_s {
    pid_t pid;
    int port;              /* TCP port; kept across cfix_restart() */
    int ws_port;           /* WebSocket port; kept across cfix_restart() */
    char dir[64];          /* temp dir holding the ready file */
    const char *extra[16]; /* extra broker arguments, NULL-terminated */
} cfix_t;

/** Starts the broker on an ephemeral port (`extra`: NULL-terminated args or NULL). 0 or -1. */
int cfix_start(cfix_t *f, const char *const *extra);
/** Starts it again on the same port as before. 0 or -1. */
int cfix_restart(cfix_t *f);
/** SIGTERM and wait (SIGKILL after 5 s). */
void cfix_stop(cfix_t *f);
/** SIGKILL and wait. */
void cfix_kill(cfix_t *f);
/** Writes "tcp://127.0.0.1:<port>" into `buf`. */
const char *cfix_url(const cfix_t *f, char *buf, size_t n);
/** Writes "ws://127.0.0.1:<ws_port>/" into `buf`. */
const char *cfix_ws_url(const cfix_t *f, char *buf, size_t n);

/**
 * A client made with `o` (whose on_state and arg are replaced) connects on a
 * loop of its own; the broker gets SIGTERM and is started again on the same
 * ports; the client must reconnect, then it is closed. Returns the status of
 * the DISCONNECTED event (HR_ESHUTDOWN when the broker said goodbye), or a
 * positive step number where it went wrong: 1 no connection, 2 no
 * disconnection, 3 no restart, 4 no reconnection, 5 no close.
 */
int cfix_shutdown_cycle(cfix_t *f, hr_client_opts_t *o);

/**
 * Runs `loop` until `*flag` is non-zero or `timeout_ms` passes; returns 1 if
 * the flag was set. A private timer wakes the loop so the deadline holds.
 */
int cfix_run_until(uv_loop_t *loop, const volatile int *flag, int timeout_ms);
/** Runs `loop` for `ms` milliseconds. */
void cfix_run_for(uv_loop_t *loop, int ms);
/** Closes every handle still open on `loop`, runs it dry and closes it. */
void cfix_loop_close(uv_loop_t *loop);

/** Listens on 127.0.0.1, an ephemeral port, with `cb`; returns the port (asserts on failure). */
int cfix_listen(uv_loop_t *loop, uv_tcp_t *lis, uv_connection_cb cb);

/**
 * A TCP proxy on the same loop: accepts on its own ephemeral port and
 * forwards each connection to `target_port`. Breaking it closes every
 * connection and the listener; resuming listens again on the same port.
 */
typedef struct cfix_proxy_s cfix_proxy_t;
cfix_proxy_t *cfix_proxy_new(uv_loop_t *loop, int target_port);
int cfix_proxy_port(const cfix_proxy_t *p);
void cfix_proxy_break(cfix_proxy_t *p);
int cfix_proxy_resume(cfix_proxy_t *p);
/** Stops forwarding without closing anything (a dead link); new connections hang too. */
void cfix_proxy_freeze(cfix_proxy_t *p);
void cfix_proxy_free(cfix_proxy_t *p);
/** Shows `cb` every chunk the clients send through the proxy, before it is forwarded. */
typedef void (*cfix_tap_cb)(const char *p, size_t n, void *arg);
void cfix_proxy_tap(cfix_proxy_t *p, cfix_tap_cb cb, void *arg);

#endif
