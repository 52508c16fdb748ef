/* SPDX-License-Identifier: MIT */
/* Stream stages: the bookkeeping every stage shares (fill, marks, held items, drain, end). */
#include <stddef.h>

#include "stage.h"

void hr__stage_init(hr_stage_t *st, const hr_stage_ops_t *ops, size_t hwm)
{
    *st = (hr_stage_t){0};
    st->ops = ops;
    st->hwm = hwm;
    st->lwm = hwm / 2;
}

void hr__stage_chain(hr_stage_t **st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        st[i]->next = i + 1 < n ? st[i + 1] : NULL;
        st[i]->up = i ? st[i - 1] : NULL;
    }
}

int hr__stage_full(const hr_stage_t *st)
{
    return st->hwm && st->fill >= st->hwm;
}

int hr__stage_write(hr_stage_t *st, hr_item_t *it)
{
    st->ops->write(st, it);
    if (hr__stage_full(st)) {
        st->waiting = 1;
        return 0;
    }
    return 1;
}

static void hold(hr_stage_t *st, hr_item_t *it)
{
    it->next = NULL;
    if (st->held_tail)
        st->held_tail->next = it;
    else
        st->held = it;
    st->held_tail = it;
    st->fill++;
}

void hr__stage_push(hr_stage_t *st, hr_item_t *it)
{
    if (st->blocked || st->held) {
        hold(st, it); /* behind what already waits: order is kept */
        return;
    }
    if (!hr__stage_write(st->next, it))
        st->blocked = 1;
}

/* The next stage drained: what `st` held goes on, until it is full again. */
static void release(hr_stage_t *st)
{
    st->blocked = 0;
    while (st->held && !st->blocked) {
        hr_item_t *it = st->held;
        st->held = it->next;
        if (!st->held)
            st->held_tail = NULL;
        st->fill--;
        if (!hr__stage_write(st->next, it))
            st->blocked = 1;
    }
    if (!st->held && st->end_due) {
        st->end_due = 0;
        hr__stage_end(st->next);
    }
    hr__stage_fill(st, 0);
}

void hr__stage_forward(hr_stage_t *st, hr_item_t *it)
{
    st->next->ops->write(st->next, it);
}

int hr__stage_set_fill(hr_stage_t *st, size_t fill)
{
    hr__stage_fill(st, (long)fill - (long)st->fill);
    if (hr__stage_full(st)) {
        st->waiting = 1;
        return 0;
    }
    return 1;
}

void hr__stage_fill(hr_stage_t *st, long delta)
{
    st->fill = (size_t)((long)st->fill + delta);
    if (!st->waiting || st->fill > st->lwm)
        return;
    st->waiting = 0; /* drained: the upstream may go on */
    if (st->up)
        release(st->up);
    else if (st->on_drain)
        st->on_drain(st->arg, st);
}

void hr__stage_end(hr_stage_t *st)
{
    if (st->ended)
        return;
    st->ended = 1;
    if (st->ops->end)
        st->ops->end(st);
    else
        hr__stage_ended(st);
}

void hr__stage_ended(hr_stage_t *st)
{
    if (st->held)
        st->end_due = 1;
    else if (st->next)
        hr__stage_end(st->next);
}

void hr__stage_error(hr_stage_t *st, int status, const char *why)
{
    hr_stage_t *first = st;
    while (first->up)
        first = first->up;
    if (first->on_error)
        first->on_error(first->arg, st, status, why);
}

void hr__stage_destroy_chain(hr_stage_t *st)
{
    while (st) {
        hr_stage_t *next = st->next;
        while (st->held) {
            hr_item_t *it = st->held;
            st->held = it->next;
            if (st->ops->drop)
                st->ops->drop(st, it);
        }
        st->ops->destroy(st);
        st = next;
    }
}
