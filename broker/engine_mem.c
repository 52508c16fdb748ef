/* SPDX-License-Identifier: MIT */
/* The in-memory engine: topic table, seq counters, bounded history rings, reclaimable topics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "engine.h"
#include "map.h"
#include "ttree.h"

typedef struct hist_s {
    uint64_t seq;
    hr_msg_t *msg;    /* owned ref: the live delivery body */
    hr_msg_t *replay; /* owned ref or NULL: its replay variant, made on first replay */
} hist_t;

typedef struct topic_s {
    uint64_t seq;  /* last seq assigned */
    uint64_t base; /* seq this state started from (a reclaimed topic's, or the floor) */
    uint64_t hash;
    uint64_t *cell;   /* shared seq cell (lim.seq_cell), or NULL */
    hr_tnode_t *node; /* its place in the topic tree */
    hist_t *ring;
    uint32_t head, count, cap;
    size_t bytes;                  /* history bytes charged, ring included */
    struct topic_s *lprev, *lnext; /* every topic, least recently published first */
    struct topic_s *hprev, *hnext; /* topics holding history, least recently published first */
    uint16_t nlen;
    char name[];
} topic_t;

typedef struct list_s {
    topic_t *head, *tail;
} list_t;

/*
 * Reclaimed topics leave a tombstone: their hash and last seq, 16 bytes plus
 * the map entry, so a topic that comes back continues where it stopped and a
 * resuming client never sees a seq go backwards. The tombstones are bounded
 * (a FIFO of hashes); forgetting one raises the floor, the seq every new
 * topic starts above, so even then no seq is ever reused.
 */
typedef struct mem_s {
    hr_engine_t base;
    hr_map_t topics;
    hr_ttree_t tree; /* the same topics by token: wildcard replays visit only matches */
    list_t lru;      /* all topics */
    list_t hlru;     /* topics with history: the global trim never walks empty ones */
    hr_mem_limits_t lim;
    size_t hist_bytes, hist_msgs, hist_topics;
    hr_map_t tomb;   /* hash (8 bytes) -> seq, as a pointer-sized integer */
    uint64_t *tfifo; /* ring of tombstoned hashes, oldest first */
    size_t thead, tcount;
    uint64_t floor;
    uint64_t reclaimed, replay_uncached;
    char epoch[65];
} mem_t;

#define RECLAIM_TRIES 32 /* topics examined for reclamation per new topic at the cap */

/* ---- lists ---------------------------------------------------------------------- */

#define LIST_UNLINK(l, t, prev, next)                                                              \
    do {                                                                                           \
        if ((t)->prev)                                                                             \
            (t)->prev->next = (t)->next;                                                           \
        else                                                                                       \
            (l)->head = (t)->next;                                                                 \
        if ((t)->next)                                                                             \
            (t)->next->prev = (t)->prev;                                                           \
        else                                                                                       \
            (l)->tail = (t)->prev;                                                                 \
        (t)->prev = (t)->next = NULL;                                                              \
    } while (0)

#define LIST_PUSH(l, t, prev, next)                                                                \
    do {                                                                                           \
        (t)->prev = (l)->tail;                                                                     \
        (t)->next = NULL;                                                                          \
        if ((l)->tail)                                                                             \
            (l)->tail->next = (t);                                                                 \
        else                                                                                       \
            (l)->head = (t);                                                                       \
        (l)->tail = (t);                                                                           \
    } while (0)

static int in_hlru(const mem_t *e, const topic_t *t)
{
    return t->hprev || e->hlru.head == t;
}

/* ---- history ---------------------------------------------------------------------- */

static size_t entry_cost(const hist_t *h)
{
    return h->msg->len + (h->replay ? h->replay->len : 0);
}

static void charge(mem_t *e, topic_t *t, size_t add, size_t sub)
{
    t->bytes = t->bytes + add - sub;
    e->hist_bytes = e->hist_bytes + add - sub;
}

/* A topic whose history is gone gives back its ring and leaves the history list. */
static void release_ring(mem_t *e, topic_t *t)
{
    charge(e, t, 0, (size_t)t->cap * sizeof(hist_t));
    free(t->ring);
    t->ring = NULL;
    t->cap = t->head = 0;
    if (in_hlru(e, t)) {
        LIST_UNLINK(&e->hlru, t, hprev, hnext);
        e->hist_topics--;
    }
}

static void drop_oldest(mem_t *e, topic_t *t)
{
    hist_t *h = &t->ring[t->head];
    charge(e, t, 0, entry_cost(h));
    e->hist_msgs--;
    hr_msg_unref(&h->msg);
    hr_msg_unref(&h->replay);
    t->head = (t->head + 1) % t->cap;
    if (--t->count == 0)
        release_ring(e, t);
}

/* Grows the ring (unrolled so head is 0) up to history_msgs entries. */
static int grow_ring(mem_t *e, topic_t *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 4;
    if (cap > e->lim.history_msgs)
        cap = e->lim.history_msgs;
    hist_t *r = malloc(cap * sizeof(*r));
    if (!r)
        return -1;
    for (uint32_t i = 0; i < t->count; i++)
        r[i] = t->ring[(t->head + i) % t->cap];
    free(t->ring);
    charge(e, t, (size_t)(cap - t->cap) * sizeof(hist_t), 0);
    t->ring = r;
    t->head = 0;
    t->cap = cap;
    return 0;
}

/*
 * Keeps `m` as `seq` of `t`, then enforces the bounds: the per-topic byte
 * bound (the topic keeps at least its newest message), then history-total,
 * taken from the topics least recently published. Only topics that still
 * hold history are on that list, and each step drops a message, so the work
 * is proportional to what is evicted, never to how many topics exist.
 */
static void retain(mem_t *e, topic_t *t, uint64_t seq, hr_msg_t *m)
{
    if (!e->lim.history_msgs)
        return;
    if (t->count == t->cap) {
        if (t->cap < e->lim.history_msgs) {
            if (grow_ring(e, t) != 0)
                return; /* history is best effort under OOM; seq still advances */
        } else {
            drop_oldest(e, t);
            if (!t->cap && grow_ring(e, t) != 0)
                return;
        }
    }
    hist_t *h = &t->ring[(t->head + t->count) % t->cap];
    h->seq = seq;
    h->msg = hr_msg_ref(m);
    h->replay = NULL;
    t->count++;
    e->hist_msgs++;
    charge(e, t, entry_cost(h), 0);
    if (in_hlru(e, t))
        LIST_UNLINK(&e->hlru, t, hprev, hnext);
    else
        e->hist_topics++;
    LIST_PUSH(&e->hlru, t, hprev, hnext);
    while (t->count > 1 && t->bytes > e->lim.history_bytes)
        drop_oldest(e, t);
    topic_t *v = e->hlru.head;
    while (v && e->hist_bytes > e->lim.history_total) {
        topic_t *next = v->hnext;
        while (v->count && e->hist_bytes > e->lim.history_total && (v != t || v->count > 1))
            drop_oldest(e, v);
        if (v == t)
            break; /* the newest topic is last: nothing more to take but its newest message */
        v = next;
    }
}

/* ---- topics ------------------------------------------------------------------------ */

static void topic_free(mem_t *e, topic_t *t)
{
    while (t->count)
        drop_oldest(e, t);
    if (t->ring)
        release_ring(e, t);
    LIST_UNLINK(&e->lru, t, lprev, lnext);
    hr__ttree_del(&e->tree, t->node);
    free(t);
}

static uint64_t tomb_take(mem_t *e, uint64_t h)
{
    void *v = hr__map_del(&e->tomb, &h, sizeof(h));
    return (uint64_t)(uintptr_t)v;
}

static void tomb_put(mem_t *e, uint64_t h, uint64_t seq)
{
    if (!e->lim.max_tombstones) {
        if (seq > e->floor)
            e->floor = seq;
        return;
    }
    if (e->tcount == e->lim.max_tombstones) { /* forget the oldest: raise the floor */
        uint64_t old = e->tfifo[e->thead];
        e->thead = (e->thead + 1) % e->lim.max_tombstones;
        e->tcount--;
        uint64_t s = tomb_take(e, old);
        if (s > e->floor)
            e->floor = s;
    }
    uint64_t prev = (uint64_t)(uintptr_t)hr__map_get(&e->tomb, &h, sizeof(h));
    if (prev > seq)
        seq = prev; /* two topics with one hash: the larger seq keeps both monotonic */
    if (hr__map_put(&e->tomb, &h, sizeof(h), (void *)(uintptr_t)seq) != 0) {
        if (seq > e->floor)
            e->floor = seq; /* no memory for the tombstone: the floor covers it */
        return;
    }
    e->tfifo[(e->thead + e->tcount) % e->lim.max_tombstones] = h;
    e->tcount++;
}

static void reclaim(mem_t *e, topic_t *t)
{
    if (t->seq)
        tomb_put(e, t->hash, t->seq);
    hr__map_del(&e->topics, t->name, t->nlen);
    topic_free(e, t);
    e->reclaimed++;
}

/*
 * At max-topics a new topic takes the place of the least recently
 * published one that no subscription matches (its seq survives as a
 * tombstone). Topics with interest are moved to the back, a second chance,
 * so the next search starts elsewhere. Returns 0 when a slot was freed.
 */
static int reclaim_one(mem_t *e)
{
    for (int i = 0; i < RECLAIM_TRIES && e->lru.head; i++) {
        topic_t *t = e->lru.head;
        if (!e->lim.has_interest ||
            !e->lim.has_interest(e->lim.interest_arg, t->name, t->nlen, t->hash)) {
            reclaim(e, t);
            return 0;
        }
        LIST_UNLINK(&e->lru, t, lprev, lnext);
        LIST_PUSH(&e->lru, t, lprev, lnext);
    }
    return -1;
}

static topic_t *topic_get(mem_t *e, hr_slice_t name, uint64_t h, int create, int *status)
{
    topic_t *t = hr__map_get_hashed(&e->topics, name.p, name.n, h);
    *status = HR_OK;
    if (t || !create)
        return t;
    if (e->topics.count >= e->lim.max_topics && reclaim_one(e) != 0) {
        *status = HR_ELIMIT;
        return NULL;
    }
    t = calloc(1, sizeof(*t) + name.n);
    if (!t || hr__map_put(&e->topics, name.p, name.n, t) != 0) {
        free(t);
        *status = HR_ENOMEM;
        return NULL;
    }
    t->hash = h;
    t->nlen = (uint16_t)name.n;
    memcpy(t->name, name.p, name.n);
    if (!(t->node = hr__ttree_add(&e->tree, name.p, name.n, t))) {
        hr__map_del(&e->topics, name.p, name.n);
        free(t);
        *status = HR_ENOMEM;
        return NULL;
    }
    uint64_t was = e->tcount ? tomb_take(e, h) : 0;
    t->seq = t->base = was > e->floor ? was : e->floor;
    if (e->lim.seq_cell && (t->cell = e->lim.seq_cell(e->lim.seq_arg, h))) {
        uint64_t kept = __atomic_load_n(t->cell, __ATOMIC_ACQUIRE);
        if (kept > t->seq)
            t->seq = t->base = kept; /* a previous incarnation of this process got that far */
    }
    LIST_PUSH(&e->lru, t, lprev, lnext);
    return t;
}

/* ---- operations -------------------------------------------------------------------- */

static int mem_publish(hr_engine_t *base, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg)
{
    mem_t *e = (mem_t *)base;
    int st;
    topic_t *t = topic_get(e, p->topic, p->hash, 1, &st);
    if (!t)
        return st;
    uint64_t seq = t->seq + 1;
    hr_msg_t *m = hr_msg_new_delivery(p->topic, seq, p->payload, p->reply, p->headers, 0);
    if (!m)
        return HR_ENOMEM;
    t->seq = seq;
    if (t->cell) { /* raise, never lower: the cell may be shared by several topics */
        uint64_t cur = __atomic_load_n(t->cell, __ATOMIC_RELAXED);
        while (cur < seq && !__atomic_compare_exchange_n(t->cell, &cur, seq, 1, __ATOMIC_RELEASE,
                                                         __ATOMIC_RELAXED))
            ;
    }
    LIST_UNLINK(&e->lru, t, lprev, lnext);
    LIST_PUSH(&e->lru, t, lprev, lnext);
    retain(e, t, seq, m);
    cb(arg, HR_OK, p->topic, p->hash, seq, m);
    hr_msg_unref(&m);
    return HR_OK;
}

typedef struct replay_s {
    mem_t *e;
    const hr_erange_t *r;
    uint64_t since; /* after the epoch check */
    int has_since;
    hr_engine_msg_cb msg;
    void *arg;
    int gap, oom;
} replay_t;

/* Where a topic's replay starts: the later of since + 1 and the `last` window. */
static uint64_t replay_start(const replay_t *x, const topic_t *t, int *by_since)
{
    uint64_t start = x->has_since ? x->since + 1 : t->seq + 1;
    *by_since = x->has_since;
    if (x->r->has_last) {
        uint64_t ls = x->r->last >= t->seq ? 1 : t->seq - x->r->last + 1;
        if (!x->has_since || ls > start) {
            start = ls;
            *by_since = 0;
        }
    }
    return start;
}

static void replay_topic(replay_t *x, topic_t *t)
{
    mem_t *e = x->e;
    int by_since;
    uint64_t start = replay_start(x, t, &by_since);
    if (start > t->seq)
        return;
    uint64_t oldest = t->count ? t->ring[t->head].seq : t->seq + 1;
    /* since 0 asks for all this topic's state holds: what came before it (a
     * reclaimed topic's past) is not reported as lost. */
    uint64_t want = by_since && x->since == 0 && start <= t->base ? t->base + 1 : start;
    if (by_since && oldest > want)
        x->gap = 1;
    for (uint32_t i = 0; i < t->count; i++) {
        hist_t *h = &t->ring[(t->head + i) % t->cap];
        if (h->seq < start)
            continue;
        hr_msg_t *body = h->replay;
        if (!body) {
            if (!(body = hr_msg_new_replay(h->msg))) {
                x->oom = 1;
                return;
            }
            /* Cached only while history-total allows: replays must not push
             * retained memory past its bound. */
            if (e->hist_bytes + body->len <= e->lim.history_total) {
                h->replay = body;
                charge(e, t, body->len, 0);
            } else {
                e->replay_uncached++;
            }
        }
        x->msg(x->arg, (hr_slice_t){t->name, t->nlen}, h->seq, body);
        if (body != h->replay)
            hr_msg_unref(&body);
    }
}

typedef struct collect_s {
    const hr_erange_t *r;
    topic_t **v;
    size_t n, cap;
    int oom;
} collect_t;

static void collect_cb(void *arg, void *val)
{
    collect_t *m = arg;
    if (m->oom)
        return;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        topic_t **v = realloc(m->v, cap * sizeof(*v));
        if (!v) {
            m->oom = 1;
            return;
        }
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = val;
}

static int mem_replay(hr_engine_t *base, const hr_erange_t *r, hr_engine_msg_cb msg,
                      hr_engine_done_cb done, void *arg)
{
    mem_t *e = (mem_t *)base;
    replay_t x = {e, r, r->since, r->has_since, msg, arg, 0, 0};
    if (r->has_epoch &&
        (r->epoch.n != strlen(e->epoch) || memcmp(r->epoch.p, e->epoch, r->epoch.n) != 0)) {
        /* Seq numbers from another incarnation mean nothing here. */
        x.gap = 1;
        x.since = 0;
        x.has_since = 1;
    }
    if (!r->wildcard) {
        int st;
        topic_t *t = topic_get(e, r->pattern, r->hash, 0, &st);
        if (t) {
            replay_topic(&x, t);
        } else if (x.has_since && x.since > 0) {
            /* No state: the topic was reclaimed (or never existed here). */
            uint64_t h = r->hash, known = e->floor;
            uint64_t tomb = (uint64_t)(uintptr_t)hr__map_get(&e->tomb, &h, sizeof(h));
            if (tomb > known)
                known = tomb;
            if (x.since < known)
                x.gap = 1;
        }
        done(arg, x.oom ? HR_ENOMEM : x.gap ? HR_EGAP : HR_OK, 1);
        return HR_OK;
    }
    collect_t c = {r, NULL, 0, 0, 0};
    int64_t visited =
        hr__ttree_match(&e->tree, r->pattern.p, r->pattern.n, r->scan_budget, collect_cb, &c);
    if (visited < 0) { /* over the scan budget: nothing replayed */
        free(c.v);
        done(arg, HR_ELIMIT, r->scan_budget);
        return HR_OK;
    }
    uint64_t cost = (uint64_t)visited + 1;
    for (size_t i = 0; i < c.n && !x.oom; i++)
        replay_topic(&x, c.v[i]);
    free(c.v);
    done(arg, x.oom || c.oom ? HR_ENOMEM : x.gap ? HR_EGAP : HR_OK, cost);
    return HR_OK;
}

/* The in-memory engine learns interest from the router's index when it needs it. */
static int mem_interest_add(hr_engine_t *base, const struct hr_sub_s *sub)
{
    (void)base;
    (void)sub;
    return HR_OK;
}

static void mem_interest_remove(hr_engine_t *base, const struct hr_sub_s *sub)
{
    (void)base;
    (void)sub;
}

static const char *mem_epoch(hr_engine_t *base)
{
    return ((mem_t *)base)->epoch;
}

static void mem_stats(hr_engine_t *base, hr_engine_stats_t *st)
{
    mem_t *e = (mem_t *)base;
    st->topics = e->topics.count;
    st->hist_msgs = e->hist_msgs;
    st->hist_bytes = e->hist_bytes;
    st->hist_topics = e->hist_topics;
    st->reclaimed = e->reclaimed;
    st->tombstones = e->tomb.count;
    st->seq_floor = e->floor;
    st->replay_uncached = e->replay_uncached;
}

static void free_topic_cb(void *arg, const void *k, size_t kl, void *val)
{
    (void)k;
    (void)kl;
    topic_t *t = val;
    mem_t *e = arg;
    while (t->count)
        drop_oldest(e, t);
    free(t->ring);
    free(t);
}

static void mem_destroy(hr_engine_t *base)
{
    mem_t *e = (mem_t *)base;
    hr__map_each(&e->topics, free_topic_cb, e);
    hr__map_destroy(&e->topics);
    hr__ttree_destroy(&e->tree);
    hr__map_destroy(&e->tomb);
    free(e->tfifo);
    free(e);
}

static const hr_engine_ops_t mem_ops = {
    .name = "memory",
    .sync = 1,
    .publish = mem_publish,
    .replay = mem_replay,
    .interest_add = mem_interest_add,
    .interest_remove = mem_interest_remove,
    .epoch = mem_epoch,
    .stats = mem_stats,
    .destroy = mem_destroy,
};

void hr__engine_mem_set_seq_cell(hr_engine_t *base, uint64_t *(*cell)(void *arg, uint64_t hash),
                                 void *arg)
{
    mem_t *e = (mem_t *)base;
    e->lim.seq_cell = cell;
    e->lim.seq_arg = arg;
}

hr_engine_t *hr__engine_mem_new(const hr_mem_limits_t *lim)
{
    mem_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->base.ops = &mem_ops;
    e->lim = *lim;
    hr__map_init(&e->topics);
    hr__map_init(&e->tomb);
    if (hr__ttree_init(&e->tree) != HR_OK) {
        free(e);
        return NULL;
    }
    if (lim->max_tombstones && !(e->tfifo = calloc(lim->max_tombstones, sizeof(uint64_t)))) {
        hr__ttree_destroy(&e->tree);
        free(e);
        return NULL;
    }
    if (lim->epoch && *lim->epoch) {
        snprintf(e->epoch, sizeof(e->epoch), "%s", lim->epoch);
    } else {
        /* A fresh incarnation: seq numbers restart, so resuming clients must be told. */
        uint8_t rnd[8] = {0};
        if (uv_random(NULL, NULL, rnd, sizeof(rnd), 0, NULL) != 0) {
            uv_timeval64_t tv;
            uv_gettimeofday(&tv);
            memcpy(rnd, &tv, sizeof(rnd) < sizeof(tv) ? sizeof(rnd) : sizeof(tv));
        }
        for (int i = 0; i < 8; i++)
            snprintf(e->epoch + 2 * i, 3, "%02x", rnd[i]);
    }
    e->lim.epoch = NULL;
    return &e->base;
}
