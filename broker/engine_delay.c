/* SPDX-License-Identifier: MIT */
/* A test engine: defers every call of an inner engine, the timing of a remote topic owner. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "engine.h"

/*
 * Publishes complete after `ms`, replays after 2 * `ms`: a SUB's replay is
 * then answered after PUBs read later have already been delivered live,
 * which is the case the subscription's replaying state exists for. Calls
 * run in the order they are due; the inner engine is synchronous.
 */
typedef struct call_s {
    struct call_s *next;
    uint64_t due;
    int kind; /* 0 publish, 1 replay */
    hr_engine_pub_cb pub_cb;
    hr_engine_msg_cb msg_cb;
    hr_engine_done_cb done_cb;
    void *arg;
    hr_epub_t pub;
    hr_erange_t range;
    char *bytes; /* owned copies of every slice */
} call_t;

typedef struct delay_s {
    hr_engine_t base;
    hr_engine_t *inner;
    uv_timer_t timer;
    uint64_t ms;
    call_t *head, *tail; /* due order: same delay per kind, so insertion keeps it sorted */
} delay_t;

static hr_slice_t keep(char **at, hr_slice_t s)
{
    hr_slice_t r = {*at, s.n};
    if (s.n)
        memcpy(*at, s.p, s.n);
    *at += s.n;
    return r;
}

static void arm(delay_t *d);

static void on_timer(uv_timer_t *h)
{
    delay_t *d = h->data;
    uint64_t now = uv_now(d->timer.loop);
    while (d->head && d->head->due <= now) {
        call_t *c = d->head;
        d->head = c->next;
        if (!d->head)
            d->tail = NULL;
        int st;
        if (c->kind == 0) {
            st = hr__engine_publish(d->inner, &c->pub, c->pub_cb, c->arg);
            if (st < 0)
                c->pub_cb(c->arg, st, c->pub.topic, c->pub.hash, 0, NULL);
        } else {
            st = hr__engine_replay(d->inner, &c->range, c->msg_cb, c->done_cb, c->arg);
            if (st < 0)
                c->done_cb(c->arg, st, 0);
        }
        free(c->bytes);
        free(c);
    }
    arm(d);
}

static void arm(delay_t *d)
{
    if (!d->head)
        return;
    uint64_t now = uv_now(d->timer.loop);
    uv_timer_start(&d->timer, on_timer, d->head->due > now ? d->head->due - now : 0, 0);
}

/* Inserts in due order (replays wait longer, so they may land behind later publishes). */
static void enqueue(delay_t *d, call_t *c)
{
    call_t **pp = &d->head;
    while (*pp && (*pp)->due <= c->due)
        pp = &(*pp)->next;
    c->next = *pp;
    *pp = c;
    if (!c->next)
        d->tail = c;
    arm(d);
}

static int delay_publish(hr_engine_t *base, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg)
{
    delay_t *d = (delay_t *)base;
    call_t *c = calloc(1, sizeof(*c));
    size_t n = p->topic.n + p->payload.n + p->reply.n + p->headers.n;
    if (!c || !(c->bytes = malloc(n ? n : 1))) {
        free(c);
        return HR_ENOMEM;
    }
    char *at = c->bytes;
    c->pub.topic = keep(&at, p->topic);
    c->pub.hash = p->hash;
    c->pub.payload = keep(&at, p->payload);
    c->pub.reply = keep(&at, p->reply);
    c->pub.headers = keep(&at, p->headers);
    c->pub_cb = cb;
    c->arg = arg;
    c->due = uv_now(d->timer.loop) + d->ms;
    enqueue(d, c);
    return HR_OK;
}

static int delay_replay(hr_engine_t *base, const hr_erange_t *r, hr_engine_msg_cb msg,
                        hr_engine_done_cb done, void *arg)
{
    delay_t *d = (delay_t *)base;
    call_t *c = calloc(1, sizeof(*c));
    size_t n = r->pattern.n + r->epoch.n;
    if (!c || !(c->bytes = malloc(n ? n : 1))) {
        free(c);
        return HR_ENOMEM;
    }
    char *at = c->bytes;
    c->kind = 1;
    c->range = *r;
    c->range.pattern = keep(&at, r->pattern);
    c->range.epoch = keep(&at, r->epoch);
    c->msg_cb = msg;
    c->done_cb = done;
    c->arg = arg;
    c->due = uv_now(d->timer.loop) + 2 * d->ms;
    enqueue(d, c);
    return HR_OK;
}

static int delay_interest_add(hr_engine_t *base, const struct hr_sub_s *sub)
{
    delay_t *d = (delay_t *)base;
    return d->inner->ops->interest_add(d->inner, sub);
}

static void delay_interest_remove(hr_engine_t *base, const struct hr_sub_s *sub)
{
    delay_t *d = (delay_t *)base;
    d->inner->ops->interest_remove(d->inner, sub);
}

static const char *delay_epoch(hr_engine_t *base)
{
    delay_t *d = (delay_t *)base;
    return d->inner->ops->epoch(d->inner);
}

static void delay_stats(hr_engine_t *base, hr_engine_stats_t *st)
{
    delay_t *d = (delay_t *)base;
    d->inner->ops->stats(d->inner, st);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void delay_destroy(hr_engine_t *base)
{
    delay_t *d = (delay_t *)base;
    while (d->head) {
        call_t *c = d->head;
        d->head = c->next;
        free(c->bytes);
        free(c);
    }
    hr__engine_destroy(d->inner);
    /* Destroyed after the loop stopped: one more non-blocking turn runs the
     * close callback, so the loop closes with no handle left. */
    uv_loop_t *loop = d->timer.loop;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
    uv_run(loop, UV_RUN_NOWAIT);
}

static const hr_engine_ops_t delay_ops = {
    .name = "delay",
    .sync = 0,
    .publish = delay_publish,
    .replay = delay_replay,
    .interest_add = delay_interest_add,
    .interest_remove = delay_interest_remove,
    .epoch = delay_epoch,
    .stats = delay_stats,
    .destroy = delay_destroy,
};

hr_engine_t *hr__engine_delay_new(uv_loop_t *loop, hr_engine_t *inner, uint64_t ms)
{
    delay_t *d = calloc(1, sizeof(*d));
    if (!d) {
        hr__engine_destroy(inner);
        return NULL;
    }
    d->base.ops = &delay_ops;
    d->inner = inner;
    d->ms = ms;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_unref((uv_handle_t *)&d->timer);
    return &d->base;
}
