/* SPDX-License-Identifier: MIT */
/* In-memory engine: topic table, seq counters, bounded history rings. */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* What one retained entry costs against the history budgets. */
static size_t entry_cost(const hr_hist_t *h)
{
    return sizeof(*h) + h->msg->len + (h->replay ? h->replay->len : 0);
}

void hr__engine_init(hr_engine_t *e, const hr_engine_limits_t *lim)
{
    memset(e, 0, sizeof(*e));
    hr__map_init(&e->topics);
    e->lim = *lim;
}

static void drop_oldest(hr_engine_t *e, hr_topic_t *t)
{
    hr_hist_t *h = &t->ring[t->head];
    size_t c = entry_cost(h);
    t->bytes -= c;
    e->hist_bytes -= c;
    e->hist_msgs--;
    hr_msg_unref(&h->msg);
    hr_msg_unref(&h->replay);
    t->head = (t->head + 1) % t->cap;
    t->count--;
}

static void topic_free(hr_engine_t *e, hr_topic_t *t)
{
    while (t->count)
        drop_oldest(e, t);
    free(t->ring);
    free(t);
}

static void free_topic_cb(void *arg, const void *k, size_t kl, void *val)
{
    topic_free(arg, val);
}

void hr__engine_destroy(hr_engine_t *e)
{
    hr__map_each(&e->topics, free_topic_cb, e);
    hr__map_destroy(&e->topics);
    memset(e, 0, sizeof(*e));
}

static void lru_unlink(hr_engine_t *e, hr_topic_t *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        e->lru_head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        e->lru_tail = t->prev;
    t->prev = t->next = NULL;
}

static void lru_push_tail(hr_engine_t *e, hr_topic_t *t)
{
    t->prev = e->lru_tail;
    t->next = NULL;
    if (e->lru_tail)
        e->lru_tail->next = t;
    else
        e->lru_head = t;
    e->lru_tail = t;
}

hr_topic_t *hr__engine_topic(hr_engine_t *e, const char *topic, size_t tlen, int create,
                             int *status)
{
    return hr__engine_topic_hashed(e, topic, tlen, hr__hash(topic, tlen), create, status);
}

hr_topic_t *hr__engine_topic_hashed(hr_engine_t *e, const char *topic, size_t tlen, uint64_t h,
                                    int create, int *status)
{
    hr_topic_t *t = hr__map_get_hashed(&e->topics, topic, tlen, h);
    *status = HR_OK;
    if (t || !create)
        return t;
    if (e->topics.count >= e->lim.max_topics) {
        *status = HR_ELIMIT;
        return NULL;
    }
    t = calloc(1, sizeof(*t) + tlen);
    if (!t || hr__map_put(&e->topics, topic, tlen, t) != 0) {
        free(t);
        *status = HR_ENOMEM;
        return NULL;
    }
    t->nlen = (uint16_t)tlen;
    memcpy(t->name, topic, tlen);
    lru_push_tail(e, t);
    return t;
}

uint64_t hr__engine_sequence(hr_engine_t *e, hr_topic_t *t)
{
    lru_unlink(e, t);
    lru_push_tail(e, t);
    return ++t->seq;
}

void hr__engine_retain(hr_engine_t *e, hr_topic_t *t, uint64_t seq, hr_msg_t *m)
{
    if (!e->lim.history_msgs)
        return;
    if (t->count == t->cap) {
        if (t->cap < e->lim.history_msgs) {
            /* Grow the ring (unrolled so head is 0). */
            uint32_t cap = t->cap ? t->cap * 2 : 4;
            if (cap > e->lim.history_msgs)
                cap = e->lim.history_msgs;
            hr_hist_t *r = malloc(cap * sizeof(*r));
            if (!r)
                return; /* history is best effort under OOM; seq still advances */
            for (uint32_t i = 0; i < t->count; i++)
                r[i] = t->ring[(t->head + i) % t->cap];
            free(t->ring);
            t->ring = r;
            t->head = 0;
            t->cap = cap;
        } else {
            drop_oldest(e, t);
        }
    }
    hr_hist_t *h = &t->ring[(t->head + t->count) % t->cap];
    h->seq = seq;
    h->msg = hr_msg_ref(m);
    h->replay = NULL;
    t->count++;
    size_t c = entry_cost(h);
    t->bytes += c;
    e->hist_bytes += c;
    e->hist_msgs++;
    /* Per-topic byte bound (always keep the newest message), then the global
     * bound, taken from the least recently published topics first. */
    while (t->count > 1 && t->bytes > e->lim.history_bytes)
        drop_oldest(e, t);
    for (hr_topic_t *v = e->lru_head; v && e->hist_bytes > e->lim.history_total; v = v->next)
        while (v->count && e->hist_bytes > e->lim.history_total && (v != t || v->count > 1))
            drop_oldest(e, v);
}

int hr__engine_replay(hr_engine_t *e, hr_topic_t *t, uint64_t since, hr_replay_cb cb, void *arg)
{
    int status = HR_OK;
    if (since >= t->seq)
        return HR_OK; /* nothing newer than what the client has */
    uint64_t oldest = t->count ? t->ring[t->head].seq : t->seq + 1;
    if (oldest > since + 1)
        status = HR_EGAP;
    for (uint32_t i = 0; i < t->count; i++) {
        hr_hist_t *h = &t->ring[(t->head + i) % t->cap];
        if (h->seq <= since)
            continue;
        if (!h->replay) {
            if (!(h->replay = hr_msg_new_replay(h->msg)))
                return HR_ENOMEM;
            t->bytes += h->replay->len;
            e->hist_bytes += h->replay->len;
        }
        cb(arg, h->replay);
    }
    return status;
}

typedef struct each_s {
    const char *pattern;
    size_t plen;
    void (*fn)(void *, hr_topic_t *);
    void *arg;
} each_t;

static void each_cb(void *arg, const void *k, size_t kl, void *val)
{
    each_t *x = arg;
    if (hr_topic_match(x->pattern, x->plen, k, kl))
        x->fn(x->arg, val);
}

void hr__engine_each_match(hr_engine_t *e, const char *pattern, size_t plen,
                           void (*fn)(void *arg, hr_topic_t *t), void *arg)
{
    each_t x = {pattern, plen, fn, arg};
    hr__map_each(&e->topics, each_cb, &x);
}
