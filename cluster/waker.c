/* SPDX-License-Identifier: MIT */
/* Wakes a worker's libuv loop through its eventfd when one of its inbound rings fills. */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "waker.h"

int hr__waker_fd_new(void)
{
    int fd = eventfd(0, EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int hr__waker_signal(int efd)
{
    uint64_t one = 1;
    for (;;) {
        if (write(efd, &one, sizeof(one)) == (ssize_t)sizeof(one))
            return 0;
        if (errno == EAGAIN)
            return 0; /* the counter is saturated: the consumer is signalled already */
        if (errno != EINTR)
            return -errno;
    }
}

static void on_idle(uv_idle_t *h);

/*
 * One batch. When the callback found nothing, the worker means to sleep: it announces so
 * (waiting = 1), fences, and lets the callback look once more. A producer that committed
 * before that fence is seen by this second look; one that commits after it sees waiting = 1
 * and signals the eventfd (ring.c has the producer's half). Only when the second look is
 * empty too does the worker sleep; otherwise it clears the word, so busy producers stop
 * paying for the flag, and comes back next turn through the idle handle, which also keeps
 * the loop from blocking in between.
 */
static void turn(hr_waker_t *w)
{
    w->turns++;
    size_t n = w->cb(w, w->arg);
    if (w->closing)
        return;
    if (n == 0) {
        atomic_store_explicit(w->waiting, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        n = w->cb(w, w->arg);
        if (w->closing)
            return;
        if (n == 0) {
            w->sleeps++;
            uv_idle_stop(&w->idle);
            return;
        }
    }
    /* Written only when set: every producer reads this line at each commit. */
    if (atomic_load_explicit(w->waiting, memory_order_relaxed))
        atomic_store_explicit(w->waiting, 0, memory_order_relaxed);
    uv_idle_start(&w->idle, on_idle);
}

static void on_idle(uv_idle_t *h)
{
    turn(h->data);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    hr_waker_t *w = h->data;
    uint64_t count;
    ssize_t r;
    do
        r = read(w->fd, &count, sizeof(count));
    while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof(count))
        w->wakeups++;
    /* A failed poll (status < 0) still gets a turn: the rings are the truth, not the fd. */
    turn(w);
}

int hr__waker_start(hr_waker_t *w, uv_loop_t *loop, int efd, _Atomic uint32_t *waiting,
                    hr_waker_cb cb, void *arg)
{
    if (!w || !loop || efd < 0 || !waiting || !cb)
        return UV_EINVAL;
    memset(w, 0, sizeof(*w));
    w->fd = efd;
    w->waiting = waiting;
    w->cb = cb;
    w->arg = arg;
    int err = uv_poll_init(loop, &w->poll, efd);
    if (err < 0)
        return err;
    w->poll.data = w;
    w->open_handles = 1;
    if ((err = uv_idle_init(loop, &w->idle)) < 0)
        goto fail;
    w->idle.data = w;
    w->open_handles = 2;
    /* Records may be waiting already: the first turn runs without a signal. */
    if ((err = uv_poll_start(&w->poll, UV_READABLE, on_poll)) < 0 ||
        (err = uv_idle_start(&w->idle, on_idle)) < 0)
        goto fail;
    return 0;

fail:
    /* The handles are closed without a callback reaching the caller; the loop must run
     * once for them to finish closing, as for any libuv handle. */
    w->closing = 1;
    uv_close((uv_handle_t *)&w->poll, NULL);
    if (w->open_handles == 2)
        uv_close((uv_handle_t *)&w->idle, NULL);
    return err;
}

static void on_closed(uv_handle_t *h)
{
    hr_waker_t *w = h->data;
    if (--w->open_handles == 0 && w->close_cb)
        w->close_cb(w);
}

void hr__waker_stop(hr_waker_t *w, hr_waker_close_cb close_cb)
{
    if (!w || w->closing)
        return;
    w->closing = 1;
    w->close_cb = close_cb;
    atomic_store_explicit(w->waiting, 0, memory_order_relaxed);
    uv_close((uv_handle_t *)&w->poll, on_closed);
    uv_close((uv_handle_t *)&w->idle, on_closed);
}
