/* SPDX-License-Identifier: MIT */
/* Wakes a worker's libuv loop through its eventfd when one of its inbound rings fills. */
#ifndef HERALD_CLUSTER_WAKER_H
#define HERALD_CLUSTER_WAKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hr_waker_s hr_waker_t;

/**
 * Drains the worker's inbound rings: called once per loop turn while there is work, with
 * `arg` as given to hr__waker_start(). Returns the number of records it consumed; 0 means it
 * found every inbound ring empty. It should stop after a budget (so one turn does not starve
 * the loop's other handles) and return non-zero: it is called again on the next turn
 * without the loop blocking. May call hr__waker_stop().
 */
typedef size_t (*hr_waker_cb)(hr_waker_t *w, void *arg);

/** Called once both handles of a stopped waker are closed; `w` may then be freed. */
typedef void (*hr_waker_close_cb)(hr_waker_t *w);

struct hr_waker_s {
    /* public */
    void *data;
    /* read-only */
    uint64_t wakeups; /* eventfd reads that found a signal */
    uint64_t turns;   /* loop turns that called the callback */
    uint64_t sleeps;  /* times the worker went to sleep on the eventfd */
    /* private */
    uv_poll_t poll;
    uv_idle_t idle;
    int fd;
    int closing;
    int open_handles;
    _Atomic uint32_t *waiting;
    hr_waker_cb cb;
    void *arg;
    hr_waker_close_cb close_cb;
};

/**
 * Primary: creates a non-blocking eventfd for one consumer worker, without close-on-exec so
 * the worker inherits it. Returns the fd, or a negative errno.
 */
int hr__waker_fd_new(void);

/**
 * Producer: signals the consumer whose eventfd is `efd`; call it when hr__ring_commit()
 * returned 1. Returns 0 or a negative errno (a full eventfd counter counts as signalled).
 */
int hr__waker_signal(int efd);

/**
 * Consumer: watches `efd` on `loop` and calls `cb(w, arg)` once per loop turn while the
 * worker has inbound records, starting with the next turn. Before the loop sleeps, it sets
 * `*waiting` (the worker's word in shared memory) and lets `cb` look at the rings once more,
 * so no record committed meanwhile is left behind. `w`, `loop` and `efd` must stay valid
 * until the close callback of hr__waker_stop(). Loop thread only. Returns 0 or a UV_E* code;
 * on failure `cb` is never called and nothing needs stopping.
 */
int hr__waker_start(hr_waker_t *w, uv_loop_t *loop, int efd, _Atomic uint32_t *waiting,
                    hr_waker_cb cb, void *arg);

/**
 * Consumer: stops calling the callback and closes the handles; `close_cb` (may be NULL)
 * runs when they are closed. Does not close `efd`. Safe to call twice.
 */
void hr__waker_stop(hr_waker_t *w, hr_waker_close_cb close_cb);

#ifdef __cplusplus
}
#endif
#endif
