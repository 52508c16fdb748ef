/* SPDX-License-Identifier: MIT */
/* A worker's links to the others: interest, forwarded publishes, deliveries and replays. */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/mman.h>

#include "link.h"
#include "log.h"
#include "presence.h"
#include "server.h"
#include "shm.h"
#include "stats.h"
#include "waker.h"

/*
 * Every topic has one owner, the worker hr__route() names. The owner
 * sequences the topic, keeps its history and does its fan-out: to its own
 * connections, and to every other worker that told it about a matching
 * subscription. What crosses between workers are records on the ring of
 * that ordered pair:
 *
 *   ADD / DEL      a plain pattern this worker now (no longer) subscribes to;
 *                  exact topics go to their owner only, wildcards to all
 *   QADD / QDEL    one queue-group member, so the owner can choose among all
 *   RESET          forget everything the sender registered (it restarted)
 *   PUB            a publish for a topic the receiver owns; answered by ACK
 *   ACK            the owner's answer to a PUB: status and seq
 *   MSG            a sequenced message for the receiver's subscriptions
 *                  (or for one queue-group member there)
 *   RREQ           a replay (since/last) for topics the receiver owns;
 *                  answered by RMSG records and one RDONE
 *   HELLO / SYNC   a worker that starts says HELLO to every other; each
 *                  forgets what it knew of the sender and answers with its
 *                  RESET, its interest and SYNC
 *
 * A new worker sequences nothing (PUB and RREQ records wait, and it does
 * not listen yet) until every peer answered its HELLO: a message it
 * sequences must reach every subscription, including those registered with
 * its previous incarnation. The PUBs forwarded to it while it was down sit
 * in the ring and are sequenced then, with the shared seq table's numbers.
 *
 * A record is copied once into the ring by its producer and once out of it
 * (into a refcounted message) by its consumer: one copy per hop. A full ring
 * never loses a record: it waits in the producer's overflow queue, and
 * while that queue is long the worker stops reading its connections and its
 * inbound rings, so backpressure reaches the publishers.
 */
enum rec_type {
    R_ADD = 1,
    R_DEL,
    R_QADD,
    R_QDEL,
    R_RESET,
    R_PUB,
    R_ACK,
    R_MSG,
    R_RREQ,
    R_RMSG,
    R_RDONE,
    R_HELLO, /* the sender (re)started: forget it, and tell it your interest */
    R_SYNC,  /* the end of that answer */
    R_PJOIN, /* presence: a member joins / leaves a room the receiver keeps */
    R_PLEAVE,
    R_PWATCH, /* presence: watchers of a room the receiver keeps (+/-); with a sid, a snapshot */
    R_PSNAP,  /* the snapshot for one watcher */
    R_BAR,    /* a barrier after interest records: answered by BACK */
    R_BACK
};

#define SYNC_WAIT_MS 2000 /* a worker starts serving without a peer that does not answer */

#define DRAIN_BUDGET 4096                /* records per inbound ring per loop turn */
#define OVERFLOW_HIGH (8u * 1024 * 1024) /* queued bytes that pause this worker's input */
#define SEQ_SLOTS (1u << 20)             /* shared seq table: 16 MiB of address space */
#define SEQ_PROBE 32

/* ---- the shared seq table ------------------------------------------------------------ */

/*
 * The last seq of every topic, kept where a worker's crash cannot take it:
 * a table in memory the primary created. A respawned owner continues each
 * topic from here, so seq numbers never go backwards; only history is lost
 * (and resuming clients get ERR 10 for it). Each slot has one writer, the
 * topic's owner. A topic that finds no free slot uses the shared floor
 * cell, raised by every such topic, which is just as safe.
 */
typedef struct seq_slot_s {
    uint64_t key; /* hash | 1; 0: free */
    uint64_t seq;
} seq_slot_t;

typedef struct seq_table_s {
    uint64_t floor;
    uint64_t pad;
    seq_slot_t slot[SEQ_SLOTS];
} seq_table_t;

/* ---- primary side ------------------------------------------------------------------- */

struct hr_cluster_shm_s {
    hr_shm_t shm;
    int seq_fd;
    int efd[HR_CLUSTER_MAX];
    int n;
    int stats_fd;
    hr_stats_area_t *stats;
};

hr_cluster_shm_t *hr__cluster_shm_create(int n, const hr_config_t *cfg)
{
    hr_cluster_shm_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->n = n;
    c->seq_fd = -1;
    c->stats_fd = -1;
    for (int i = 0; i < HR_CLUSTER_MAX; i++)
        c->efd[i] = -1;
    /* A record may take at most half a ring: the largest frame, its routing
     * fields and a replay's extra bytes must fit in one. */
    uint64_t need = 2 * ((uint64_t)cfg->max_payload + HR_FRAME_SLACK + 1024), ring = 1u << 20;
    while (ring < need)
        ring <<= 1;
    if (hr__shm_create(&c->shm, (unsigned)n, (size_t)ring) != 0)
        goto fail;
    c->seq_fd = memfd_create("herald-seq", 0);
    if (c->seq_fd < 0 || ftruncate(c->seq_fd, sizeof(seq_table_t)) != 0)
        goto fail;
    for (int i = 0; i < n; i++)
        if ((c->efd[i] = hr__waker_fd_new()) < 0)
            goto fail;
    if ((c->stats_fd = hr__stats_area_create((unsigned)n, &c->stats)) < 0) {
        errno = -c->stats_fd;
        goto fail;
    }
    return c;
fail:
    hr__cluster_shm_free(c);
    return NULL;
}

int hr__cluster_shm_stdio(hr_cluster_shm_t *c, uv_stdio_container_t *io, int max)
{
    int k = 0;
    if (max < 3 + c->n)
        return 0;
    io[k].flags = UV_INHERIT_FD;
    io[k++].data.fd = c->shm.fd;
    io[k].flags = UV_INHERIT_FD;
    io[k++].data.fd = c->seq_fd;
    for (int i = 0; i < c->n; i++) {
        io[k].flags = UV_INHERIT_FD;
        io[k++].data.fd = c->efd[i];
    }
    io[k].flags = UV_INHERIT_FD; /* HR_CLUSTER_FD_STATS(n) */
    io[k++].data.fd = c->stats_fd;
    return k;
}

void hr__cluster_shm_free(hr_cluster_shm_t *c)
{
    if (!c)
        return;
    hr__shm_unmap(&c->shm);
    if (c->seq_fd >= 0)
        close(c->seq_fd);
    for (int i = 0; i < HR_CLUSTER_MAX; i++)
        if (c->efd[i] >= 0)
            close(c->efd[i]);
    hr__stats_area_free(c->stats, c->stats_fd);
    free(c);
}

hr_stats_area_t *hr__cluster_shm_stats(hr_cluster_shm_t *c)
{
    return c ? c->stats : NULL;
}

/* ---- worker side ---------------------------------------------------------------------- */

typedef struct ovf_s {
    struct ovf_s *next;
    uint32_t type;
    size_t len;
    uint8_t data[];
} ovf_t;

typedef struct peer_s {
    hr_ring_t out, in; /* to the peer, from the peer */
    int efd;           /* the peer's eventfd: wakes it */
    int up;
    int dirty;                  /* records reserved in `out` and not yet committed */
    ovf_t *ovf_head, *ovf_tail; /* records waiting for room in `out` */
    size_t ovf_bytes;
} peer_t;

typedef struct pend_pub_s {
    hr_router_done_cb done;
    void *arg;
} pend_pub_t;

typedef struct pend_replay_s {
    hr_engine_msg_cb msg;
    hr_engine_done_cb done;
    void *arg;
    int waiting; /* answers still to come */
    int status;
    uint64_t topics;
} pend_replay_t;

typedef struct link_s {
    hr_engine_t base; /* the cluster engine: replays span owners */
    hr_engine_t *inner;
    hr_server_t *s;
    int self, n;
    hr_shm_t shm;
    seq_table_t *seq;
    hr_waker_t waker;
    int efd;
    peer_t peer[HR_CLUSTER_MAX];
    hr_map_t interest;  /* pattern -> local plain subscriptions (count) */
    hr_map_t remote;    /* key -> hr_sub_t* registered by peers */
    hr_map_t pend_pubs; /* token -> pend_pub_t* */
    hr_map_t pend_reps; /* token -> pend_replay_t* */
    uint64_t next_token;
    uint64_t records_out, records_in, records_waited; /* for /metrics */
    size_t ovf_total;
    int congested;
    uv_timer_t retry; /* flushes overflow queues while any is non-empty */
    int stopped;      /* hr__link_stop() ran */
    int unsynced;     /* peers whose answer to our HELLO has not arrived */
    uint8_t synced_from[HR_CLUSTER_MAX];
    ovf_t *def_head, *def_tail; /* PUB and RREQ records waiting for that */
    uv_timer_t sync_timer;
    hr_buf_t rec; /* record being built */
    /* Presence (the keeper of a room is the owner of `$PRES.<topic>`): */
    hr_map_t pmem;   /* "topic|cid" -> pmem_t: local members of rooms others keep */
    hr_map_t pwatch; /* topic -> local watchers of rooms others keep (count) */
    hr_map_t rwatch; /* "topic|peer" -> that peer's watchers of rooms kept here (count) */
    hr_map_t bars;   /* token -> bar_t: SUBs waiting for the owners to have their interest */
} link_t;

static link_t *L; /* one worker, one link */

/* ---- records ------------------------------------------------------------------------------ */

/* Little helpers to build and read records: fixed fields, then length-prefixed bytes. */
static void put_u64(hr_buf_t *b, uint64_t v)
{
    hr_buf_append(b, &v, sizeof(v));
}

static void put_bytes(hr_buf_t *b, hr_slice_t s)
{
    uint32_t n = (uint32_t)s.n;
    hr_buf_append(b, &n, sizeof(n));
    if (n)
        hr_buf_append(b, s.p, n);
}

typedef struct rd_s {
    const uint8_t *p;
    size_t n;
    int bad;
} rd_t;

static uint64_t get_u64(rd_t *r)
{
    uint64_t v = 0;
    if (r->n < sizeof(v)) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->p, sizeof(v));
    r->p += sizeof(v);
    r->n -= sizeof(v);
    return v;
}

static hr_slice_t get_bytes(rd_t *r)
{
    uint32_t n = 0;
    hr_slice_t s = {NULL, 0};
    if (r->n < sizeof(n)) {
        r->bad = 1;
        return s;
    }
    memcpy(&n, r->p, sizeof(n));
    if (r->n - sizeof(n) < n) {
        r->bad = 1;
        return s;
    }
    s.p = (const char *)r->p + sizeof(n);
    s.n = n;
    r->p += sizeof(n) + n;
    r->n -= sizeof(n) + n;
    return s;
}

static void set_congested(link_t *l, int on);
static void on_retry(uv_timer_t *t);

static int ring_put(link_t *l, int to, uint32_t type, const void *data, size_t len)
{
    peer_t *p = &l->peer[to];
    void *dst;
    int r = p->ovf_head ? HR_EBUFFULL : hr__ring_reserve(&p->out, type, len, &dst);
    if (r == HR_EBUFFULL && p->dirty) { /* what this turn reserved may be holding the room */
        if (hr__ring_commit(&p->out))
            hr__waker_signal(p->efd);
        p->dirty = 0;
        r = p->ovf_head ? HR_EBUFFULL : hr__ring_reserve(&p->out, type, len, &dst);
    }
    if (r == 0) {
        /* Published once per loop turn (hr__link_flush): one release store and at
         * most one wake-up per ring and turn, however many records. */
        memcpy(dst, data, len);
        p->dirty = 1;
        l->records_out++;
        return HR_OK;
    }
    if (r != HR_EBUFFULL) { /* rings are sized for the largest frame: this is a bug */
        HR_LOG(HR_LOG_ERROR, 0, "record of %zu bytes refused by the ring to worker %d: %s", len, to,
               hr_strerror(r));
        return r;
    }
    ovf_t *o = malloc(sizeof(*o) + len);
    if (!o)
        return HR_ENOMEM;
    o->next = NULL;
    o->type = type;
    o->len = len;
    memcpy(o->data, data, len);
    if (p->ovf_tail)
        p->ovf_tail->next = o;
    else
        p->ovf_head = o;
    p->ovf_tail = o;
    l->records_waited++;
    p->ovf_bytes += len;
    l->ovf_total += len;
    if (!l->stopped && !uv_is_active((uv_handle_t *)&l->retry))
        uv_timer_start(&l->retry, on_retry, 1, 1);
    if (l->ovf_total > OVERFLOW_HIGH)
        set_congested(l, 1);
    return HR_OK;
}

/* Sends the record built in l->rec. */
static int send_rec(link_t *l, int to, uint32_t type)
{
    int r = ring_put(l, to, type, l->rec.base, l->rec.len);
    hr_buf_reset(&l->rec);
    return r;
}

/* Commits what this loop turn wrote to every ring (the server calls it before its flush). */
static void link_flush(hr_server_t *s)
{
    link_t *l = L;
    (void)s;
    if (!l)
        return;
    for (int i = 0; i < l->n; i++) {
        peer_t *p = &l->peer[i];
        if (!p->dirty)
            continue;
        p->dirty = 0;
        if (hr__ring_commit(&p->out))
            hr__waker_signal(p->efd);
    }
}

static void flush_overflow(link_t *l)
{
    for (int i = 0; i < l->n; i++) {
        peer_t *p = &l->peer[i];
        int wake = 0;
        while (p->ovf_head) {
            ovf_t *o = p->ovf_head;
            void *dst;
            if (hr__ring_reserve(&p->out, o->type, o->len, &dst) != 0)
                break;
            memcpy(dst, o->data, o->len);
            l->records_out++;
            p->ovf_head = o->next;
            if (!p->ovf_head)
                p->ovf_tail = NULL;
            p->ovf_bytes -= o->len;
            l->ovf_total -= o->len;
            free(o);
            wake = 1;
        }
        if (wake || p->dirty) {
            p->dirty = 0;
            if (hr__ring_commit(&p->out))
                hr__waker_signal(p->efd);
        }
    }
    if (l->ovf_total <= OVERFLOW_HIGH / 2)
        set_congested(l, 0);
}

static void on_retry(uv_timer_t *t)
{
    link_t *l = t->data;
    flush_overflow(l);
    if (!l->ovf_total)
        uv_timer_stop(t);
}

/* ---- congestion: pause input while the overflow queues are long -------------------------------
 */

static void set_congested(link_t *l, int on)
{
    if (l->congested == on)
        return;
    l->congested = on;
    l->s->congested = on;
    if (on) {
        HR_LOG(HR_LOG_DEBUG, 0, "rings full: pausing input until the other workers catch up");
        if (!l->stopped)
            uv_timer_start(&l->retry, on_retry, 1, 1);
    } else {
        hr__server_uncongest(l->s);
    }
}

/* ---- interest -------------------------------------------------------------------------------- */

static int exact(const hr_sub_t *sub)
{
    return hr_topic_validate(sub->pattern, sub->plen) == HR_OK;
}

/* Sends the record in l->rec to the places that sequence topics `sub` matches. */
static void send_interest(link_t *l, const hr_sub_t *sub, uint32_t type)
{
    if (exact(sub)) {
        int owner = hr__route(l->s, hr__hash(sub->pattern, sub->plen));
        if (owner != l->self)
            ring_put(l, owner, type, l->rec.base, l->rec.len);
    } else {
        for (int i = 0; i < l->n; i++)
            if (i != l->self)
                ring_put(l, i, type, l->rec.base, l->rec.len);
    }
    hr_buf_reset(&l->rec);
}

static void build_interest(link_t *l, const hr_sub_t *sub)
{
    put_u64(&l->rec, sub->cid);
    put_u64(&l->rec, sub->sid);
    put_bytes(&l->rec, (hr_slice_t){sub->pattern, sub->plen});
    put_bytes(&l->rec, (hr_slice_t){sub->queue, sub->qlen});
}

/*
 * A PONG after a SUB means the subscription is in place for publishers on
 * every worker: the SUB's answer waits until each worker its interest went to
 * has answered a barrier sent behind it (ring order: the interest first).
 */
typedef struct bar_s {
    hr_reply_t *slot;
    int waiting;
} bar_t;

static void barrier(link_t *l, const hr_sub_t *sub)
{
    int targets[HR_CLUSTER_MAX], nt = 0;
    if (!sub->conn)
        return;
    if (exact(sub)) {
        int owner = hr__route(l->s, hr__hash(sub->pattern, sub->plen));
        if (owner != l->self)
            targets[nt++] = owner;
    } else {
        for (int i = 0; i < l->n; i++)
            if (i != l->self && l->peer[i].up)
                targets[nt++] = i;
    }
    if (!nt)
        return;
    bar_t *b = malloc(sizeof(*b));
    uint64_t token = ++l->next_token;
    if (!b || !(b->slot = hr__conn_reply_later(sub->conn))) {
        free(b);
        return; /* no memory: the SUB is answered without waiting */
    }
    b->waiting = nt;
    if (hr__map_put(&l->bars, &token, sizeof(token), b) != 0) {
        hr__conn_reply_fill(b->slot, 0);
        free(b);
        return;
    }
    for (int i = 0; i < nt; i++) {
        put_u64(&l->rec, token);
        send_rec(l, targets[i], R_BAR);
    }
}

static void on_back(link_t *l, rd_t *r)
{
    uint64_t token = get_u64(r);
    bar_t *b = r->bad ? NULL : hr__map_get(&l->bars, &token, sizeof(token));
    if (!b || --b->waiting > 0)
        return;
    hr__map_del(&l->bars, &token, sizeof(token));
    hr__conn_reply_fill(b->slot, 0);
    free(b);
}

static int cl_interest_add(hr_engine_t *e, const hr_sub_t *sub)
{
    link_t *l = (link_t *)e;
    if (sub->qlen) {
        build_interest(l, sub);
        send_interest(l, sub, R_QADD);
        barrier(l, sub);
        return HR_OK;
    }
    uintptr_t n = (uintptr_t)hr__map_get(&l->interest, sub->pattern, sub->plen);
    if (hr__map_put(&l->interest, sub->pattern, sub->plen, (void *)(n + 1)) != 0)
        return HR_ENOMEM;
    if (n == 0) {
        build_interest(l, sub);
        send_interest(l, sub, R_ADD);
    }
    barrier(l, sub); /* also when an earlier ADD of the pattern may still be on its way */
    return HR_OK;
}

static void cl_interest_remove(hr_engine_t *e, const hr_sub_t *sub)
{
    link_t *l = (link_t *)e;
    if (sub->qlen) {
        build_interest(l, sub);
        send_interest(l, sub, R_QDEL);
        return;
    }
    uintptr_t n = (uintptr_t)hr__map_get(&l->interest, sub->pattern, sub->plen);
    if (n > 1) {
        hr__map_put(&l->interest, sub->pattern, sub->plen, (void *)(n - 1));
        return;
    }
    hr__map_del(&l->interest, sub->pattern, sub->plen);
    if (n == 1) {
        build_interest(l, sub);
        send_interest(l, sub, R_DEL);
    }
}

/* The key of a peer's registration: peer, kind, member identity, pattern, queue. */
static size_t remote_key(char *k, size_t cap, int peer, int q, uint64_t cid, uint64_t sid,
                         hr_slice_t pattern, hr_slice_t queue)
{
    size_t n =
        (size_t)snprintf(k, cap, "%d|%d|%llu|%llu|", peer, q, q ? (unsigned long long)cid : 0ull,
                         q ? (unsigned long long)sid : 0ull);
    if (n + pattern.n + 1 + queue.n > cap)
        return 0;
    memcpy(k + n, pattern.p, pattern.n);
    n += pattern.n;
    k[n++] = '|';
    if (queue.n)
        memcpy(k + n, queue.p, queue.n);
    return n + queue.n;
}

static void on_interest(link_t *l, int from, uint32_t type, rd_t *r)
{
    uint64_t cid = get_u64(r), sid = get_u64(r);
    hr_slice_t pattern = get_bytes(r), queue = get_bytes(r);
    char key[HR_TOPIC_MAX * 2 + 64];
    int q = type == R_QADD || type == R_QDEL;
    if (r->bad || !pattern.n || pattern.n > HR_TOPIC_MAX || queue.n > HR_TOPIC_MAX)
        return;
    size_t kl = remote_key(key, sizeof(key), from, q, cid, sid, pattern, queue);
    if (!kl)
        return;
    hr_sub_t *sub = hr__map_get(&l->remote, key, kl);
    if (type == R_ADD || type == R_QADD) {
        if (sub)
            return;
        sub = hr__sub_new(NULL, q ? cid : 0, sid, pattern.p, pattern.n, queue.p, queue.n);
        if (!sub)
            return;
        sub->peer = (uint16_t)from;
        if (hr__index_add(&l->s->index, sub) != 0 || hr__map_put(&l->remote, key, kl, sub) != 0) {
            hr__index_remove(&l->s->index, sub);
            hr__sub_free(sub);
        }
        return;
    }
    if (sub) {
        hr__map_del(&l->remote, key, kl);
        hr__index_remove(&l->s->index, sub);
        hr__sub_free(sub);
    }
}

typedef struct collect_s {
    int peer; /* -1: every peer */
    hr_sub_t **v;
    char **keys;
    size_t *klens;
    size_t n, cap;
} collect_t;

static void collect_remote(void *arg, const void *k, size_t kl, void *val)
{
    collect_t *c = arg;
    if (c->peer >= 0 && ((hr_sub_t *)val)->peer != c->peer)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        void *a = realloc(c->v, cap * sizeof(*c->v)), *b = realloc(c->keys, cap * sizeof(char *)),
             *d = realloc(c->klens, cap * sizeof(size_t));
        if (a)
            c->v = a;
        if (b)
            c->keys = b;
        if (d)
            c->klens = d;
        if (!a || !b || !d)
            return;
        c->cap = cap;
    }
    c->keys[c->n] = malloc(kl);
    if (!c->keys[c->n])
        return;
    memcpy(c->keys[c->n], k, kl);
    c->klens[c->n] = kl;
    c->v[c->n++] = val;
}

/* Forgets what `peer` (or, with -1, every peer) registered here. */
static void forget_remote(link_t *l, int peer)
{
    collect_t c = {peer, NULL, NULL, NULL, 0, 0};
    hr__map_each(&l->remote, collect_remote, &c);
    for (size_t i = 0; i < c.n; i++) {
        hr__map_del(&l->remote, c.keys[i], c.klens[i]);
        hr__index_remove(&l->s->index, c.v[i]);
        hr__sub_free(c.v[i]);
        free(c.keys[i]);
    }
    free(c.v);
    free(c.keys);
    free(c.klens);
}

/* Tells `peer` everything this worker subscribes to: RESET, the interest, SYNC. */
static void announce_subs(link_t *l, int peer);

static void announce(link_t *l, int peer)
{
    ring_put(l, peer, R_RESET, "", 0);
    announce_subs(l, peer);
    ring_put(l, peer, R_SYNC, "", 0);
}

static void announce_subs(link_t *l, int peer)
{
    hr_server_t *s = l->s;
    for (hr_conn_t *c = s->conns; c; c = c->next) {
        if (c->flags & HR_C_CLOSED)
            continue;
        for (uint32_t i = 0; i < c->nsubs; i++) {
            const hr_sub_t *sub = c->subs[i];
            int to_peer = !exact(sub) || hr__route(s, hr__hash(sub->pattern, sub->plen)) == peer;
            if (!to_peer)
                continue;
            build_interest(l, sub);
            send_rec(l, peer, sub->qlen ? R_QADD : R_ADD); /* duplicates are idempotent */
        }
    }
}

/* ---- publishing through the owner ---------------------------------------------------------------
 */

static int cl_forward(void *arg, uint16_t owner, const hr_pub_cmd_t *p, uint64_t origin_cid,
                      int origin_no_echo, hr_router_done_cb done, void *done_arg)
{
    link_t *l = arg;
    pend_pub_t *pp = malloc(sizeof(*pp));
    if (!pp)
        return HR_ENOMEM;
    uint64_t token = ++l->next_token;
    pp->done = done;
    pp->arg = done_arg;
    if (hr__map_put(&l->pend_pubs, &token, sizeof(token), pp) != 0) {
        free(pp);
        return HR_ENOMEM;
    }
    put_u64(&l->rec, token);
    put_u64(&l->rec, origin_cid);
    put_u64(&l->rec, (uint64_t)origin_no_echo);
    put_bytes(&l->rec, p->topic);
    put_bytes(&l->rec, p->payload);
    put_bytes(&l->rec, p->reply);
    put_bytes(&l->rec, p->headers);
    if (send_rec(l, owner, R_PUB) != HR_OK) {
        hr__map_del(&l->pend_pubs, &token, sizeof(token));
        free(pp);
        return HR_ENOMEM;
    }
    return HR_OK;
}

typedef struct fwd_s {
    link_t *l;
    int from;
    uint64_t token;
} fwd_t;

static void send_ack(link_t *l, int to, uint64_t token, int status, uint64_t seq)
{
    put_u64(&l->rec, token);
    put_u64(&l->rec, (uint64_t)(int64_t)status);
    put_u64(&l->rec, seq);
    send_rec(l, to, R_ACK);
}

static void on_fwd_done(void *arg, int status, uint64_t seq)
{
    fwd_t *f = arg;
    send_ack(f->l, f->from, f->token, status, seq);
    free(f);
}

static void on_pub(link_t *l, int from, rd_t *r)
{
    uint64_t token = get_u64(r), origin = get_u64(r), no_echo = get_u64(r);
    hr_pub_cmd_t p = {0};
    p.topic = get_bytes(r);
    p.payload = get_bytes(r);
    p.reply = get_bytes(r);
    p.headers = get_bytes(r);
    if (r->bad || !p.topic.n)
        return;
    fwd_t *f = malloc(sizeof(*f));
    if (!f) {
        send_ack(l, from, token, HR_ENOMEM, 0);
        return;
    }
    *f = (fwd_t){l, from, token};
    int st = hr__router_publish(l->s, &p, origin, (int)no_echo, on_fwd_done, f);
    if (st < 0)
        on_fwd_done(f, st, 0);
}

static void on_ack(link_t *l, rd_t *r)
{
    uint64_t token = get_u64(r);
    int status = (int)(int64_t)get_u64(r);
    uint64_t seq = get_u64(r);
    if (r->bad)
        return;
    pend_pub_t *pp = hr__map_del(&l->pend_pubs, &token, sizeof(token));
    if (!pp)
        return; /* an answer for a previous incarnation of this worker */
    if (pp->done)
        pp->done(pp->arg, status, seq);
    free(pp);
}

/* ---- deliveries
 * ------------------------------------------------------------------------------------ */

static void put_delivery(link_t *l, const hr_delivery_t *d)
{
    put_u64(&l->rec, d->hash);
    put_u64(&l->rec, d->seq);
    put_u64(&l->rec, d->origin);
    put_u64(&l->rec, (uint64_t)d->no_echo | (uint64_t)d->m->arr << 8);
    put_bytes(&l->rec, d->topic);
    put_bytes(&l->rec, (hr_slice_t){(const char *)hr_msg_bytes(d->m), d->m->len});
}

static void cl_deliver(void *arg, uint16_t peer, const hr_delivery_t *d, const hr_sub_t *member)
{
    link_t *l = arg;
    put_u64(&l->rec, member ? member->cid : 0);
    put_u64(&l->rec, member ? member->sid : 0);
    put_delivery(l, d);
    send_rec(l, peer, R_MSG);
}

static int cl_busy(void *arg, const hr_sub_t *sub)
{
    link_t *l = arg;
    return l->peer[sub->peer].ovf_head != NULL || !l->peer[sub->peer].up;
}

/* Reads a delivery record into a message of its own: the one copy out of the ring. */
static hr_msg_t *get_delivery(rd_t *r, hr_delivery_t *d)
{
    d->hash = get_u64(r);
    d->seq = get_u64(r);
    d->origin = get_u64(r);
    uint64_t flags = get_u64(r);
    d->no_echo = (int)(flags & 1);
    d->topic = get_bytes(r);
    hr_slice_t body = get_bytes(r);
    if (r->bad || !d->topic.n)
        return NULL;
    hr_msg_t *m = hr_msg_new(0, body.p, body.n);
    if (m)
        m->arr = (uint8_t)(flags >> 8);
    return d->m = m;
}

static void on_msg(link_t *l, rd_t *r)
{
    uint64_t cid = get_u64(r), sid = get_u64(r);
    hr_delivery_t d;
    hr_msg_t *m = get_delivery(r, &d);
    if (!m)
        return;
    if (cid) { /* the owner chose this worker's member of a queue group */
        hr_conn_t *c = hr__map_get(&l->s->conns_by_id, &cid, sizeof(cid));
        if (c)
            hr__sub_deliver_member(c, sid, m);
    } else {
        hr__router_fanout_local(l->s, &d);
    }
    hr_msg_unref(&m);
}

/* ---- replays across owners
 * ---------------------------------------------------------------------------- */

typedef struct rreq_s {
    link_t *l;
    int to;
    uint64_t token;
} rreq_t;

static void rreq_msg(void *arg, hr_slice_t topic, uint64_t seq, hr_msg_t *body)
{
    rreq_t *q = arg;
    link_t *l = q->l;
    hr_delivery_t d = {body, topic, 0, seq, 0, 0};
    put_u64(&l->rec, q->token);
    put_delivery(l, &d);
    send_rec(l, q->to, R_RMSG);
}

static void rreq_done(void *arg, int status, uint64_t topics)
{
    rreq_t *q = arg;
    link_t *l = q->l;
    put_u64(&l->rec, q->token);
    put_u64(&l->rec, (uint64_t)(int64_t)status);
    put_u64(&l->rec, topics);
    send_rec(l, q->to, R_RDONE);
    free(q);
}

static void put_range(link_t *l, const hr_erange_t *r)
{
    put_u64(&l->rec, r->hash);
    put_u64(&l->rec, (uint64_t)r->wildcard | (uint64_t)r->has_since << 1 |
                         (uint64_t)r->has_last << 2 | (uint64_t)r->has_epoch << 3);
    put_u64(&l->rec, r->since);
    put_u64(&l->rec, r->last);
    put_u64(&l->rec, r->scan_budget);
    put_bytes(&l->rec, r->pattern);
    put_bytes(&l->rec, r->epoch);
}

static void on_rreq(link_t *l, int from, rd_t *r)
{
    uint64_t token = get_u64(r);
    hr_erange_t q = {0};
    q.hash = get_u64(r);
    uint64_t f = get_u64(r);
    q.wildcard = (int)(f & 1);
    q.has_since = (int)(f >> 1 & 1);
    q.has_last = (int)(f >> 2 & 1);
    q.has_epoch = (int)(f >> 3 & 1);
    q.since = get_u64(r);
    q.last = get_u64(r);
    q.scan_budget = get_u64(r);
    q.pattern = get_bytes(r);
    q.epoch = get_bytes(r);
    if (r->bad || !q.pattern.n)
        return;
    rreq_t *x = malloc(sizeof(*x));
    if (!x)
        return;
    *x = (rreq_t){l, from, token};
    if (hr__engine_replay(l->inner, &q, rreq_msg, rreq_done, x) < 0)
        rreq_done(x, HR_ENOMEM, 0);
}

static void replay_answered(link_t *l, uint64_t token, pend_replay_t *pr, int status,
                            uint64_t topics)
{
    if (status != HR_OK && (pr->status == HR_OK || status == HR_ELIMIT))
        pr->status = status;
    pr->topics += topics;
    if (--pr->waiting > 0)
        return;
    hr__map_del(&l->pend_reps, &token, sizeof(token));
    pr->done(pr->arg, pr->status, pr->topics);
    free(pr);
}

static void on_rmsg(link_t *l, rd_t *r)
{
    uint64_t token = get_u64(r);
    hr_delivery_t d;
    hr_msg_t *m = get_delivery(r, &d);
    if (!m)
        return;
    pend_replay_t *pr = hr__map_get(&l->pend_reps, &token, sizeof(token));
    if (pr)
        pr->msg(pr->arg, d.topic, d.seq, m);
    hr_msg_unref(&m);
}

static void on_rdone(link_t *l, rd_t *r)
{
    uint64_t token = get_u64(r);
    int status = (int)(int64_t)get_u64(r);
    uint64_t topics = get_u64(r);
    pend_replay_t *pr = r->bad ? NULL : hr__map_get(&l->pend_reps, &token, sizeof(token));
    if (pr)
        replay_answered(l, token, pr, status, topics);
}

/* The local part of a replay answers at once: counted like a peer's answer. */
typedef struct local_s {
    link_t *l;
    uint64_t token;
    pend_replay_t *pr;
} local_t;

static void local_msg(void *arg, hr_slice_t topic, uint64_t seq, hr_msg_t *body)
{
    local_t *x = arg;
    x->pr->msg(x->pr->arg, topic, seq, body);
}

static void local_done(void *arg, int status, uint64_t topics)
{
    local_t *x = arg;
    replay_answered(x->l, x->token, x->pr, status, topics);
}

/*
 * A replay asks the owners: for an exact topic its one owner, for a wildcard
 * every worker (each owns a share of the matching topics). A worker that is
 * down answers with a gap: its topics' history is not available now.
 */
static int cl_replay(hr_engine_t *e, const hr_erange_t *r, hr_engine_msg_cb msg,
                     hr_engine_done_cb done, void *arg)
{
    link_t *l = (link_t *)e;
    int owner = r->wildcard ? -1 : hr__route(l->s, r->hash);
    if (owner == l->self)
        return hr__engine_replay(l->inner, r, msg, done, arg);
    /* Each owner checks the scan budget against its own topics; what all of
     * them examined is charged to the client afterwards (the done callback's
     * count), so a burst of wildcard replays is still paid for in full. */
    pend_replay_t *pr = calloc(1, sizeof(*pr));
    if (!pr)
        return HR_ENOMEM;
    uint64_t token = ++l->next_token;
    *pr = (pend_replay_t){msg, done, arg, owner >= 0 ? 1 : l->n, HR_OK, 0};
    if (hr__map_put(&l->pend_reps, &token, sizeof(token), pr) != 0) {
        free(pr);
        return HR_ENOMEM;
    }
    for (int i = 0; i < l->n; i++) {
        if (owner >= 0 && i != owner)
            continue;
        if (i == l->self) {
            local_t x = {l, token, pr};
            if (hr__engine_replay(l->inner, r, local_msg, local_done, &x) < 0)
                local_done(&x, HR_ENOMEM, 0);
            continue;
        }
        if (!l->peer[i].up) {
            replay_answered(l, token, pr, HR_EGAP, 0);
            continue;
        }
        put_u64(&l->rec, token);
        put_range(l, r);
        send_rec(l, i, R_RREQ);
    }
    return HR_OK;
}

static int cl_publish(hr_engine_t *e, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg)
{
    link_t *l = (link_t *)e;
    return hr__engine_publish(l->inner, p, cb, arg); /* the router only calls it on the owner */
}

static const char *cl_epoch(hr_engine_t *e)
{
    link_t *l = (link_t *)e;
    return l->inner->ops->epoch(l->inner);
}

static void cl_stats(hr_engine_t *e, hr_engine_stats_t *st)
{
    link_t *l = (link_t *)e;
    l->inner->ops->stats(l->inner, st);
}

static void cl_destroy(hr_engine_t *e)
{
    link_t *l = (link_t *)e;
    hr__engine_destroy(l->inner);
    l->inner = NULL;
}

static const hr_engine_ops_t cluster_ops = {
    .name = "cluster",
    .sync = 0,
    .publish = cl_publish,
    .replay = cl_replay,
    .interest_add = cl_interest_add,
    .interest_remove = cl_interest_remove,
    .epoch = cl_epoch,
    .stats = cl_stats,
    .destroy = cl_destroy,
};

static const hr_peer_ops_t peer_ops = {cl_forward, cl_deliver, cl_busy};

/* ---- presence across workers ------------------------------------------------------------------
 */

/*
 * A room is kept by the worker that owns `$PRES.<topic>`: it counts the
 * members (joins and leaves forwarded from every worker), coalesces the
 * changes and publishes them on `$PRES.<topic>`, which reaches the watchers
 * on every worker like any message (their interest in that topic went to the
 * same owner). A watcher on another worker gets its snapshot in a PSNAP
 * record: its worker sends the interest (ADD) and the PWATCH in one batch, so
 * the keeper handles both in one drain and no change of the room can fall
 * between them; changes published later follow the snapshot in the ring.
 * Every worker remembers what it forwarded, so a keeper that restarts is told
 * again (after its HELLO); a worker that dies takes its members and watchers
 * with it (hr__presence_worker_gone()).
 */
typedef struct pmem_s {
    uint32_t count;
    uint32_t ilen;
    char info[];
} pmem_t;

static int pres_owner(link_t *l, hr_slice_t room)
{
    char t[HR_TOPIC_MAX + HR_PRES_PREFIX_LEN];
    if (room.n > HR_TOPIC_MAX)
        return l->self;
    memcpy(t, HR_PRES_PREFIX, HR_PRES_PREFIX_LEN);
    memcpy(t + HR_PRES_PREFIX_LEN, room.p, room.n);
    return hr__route(l->s, hr__hash(t, HR_PRES_PREFIX_LEN + room.n));
}

/* "bytes|number": the number after the last '|'. */
static size_t pkey(char *k, size_t cap, const char *a, size_t an, uint64_t b)
{
    size_t n = an < cap - 24 ? an : cap - 24;
    memcpy(k, a, n);
    return n + (size_t)snprintf(k + n, cap - n, "|%llu", (unsigned long long)b);
}

static const char *last_bar(const void *k, size_t kn)
{
    const char *p = k;
    for (size_t i = kn; i > 0; i--)
        if (p[i - 1] == '|')
            return p + i - 1;
    return NULL;
}

static void send_pjoin(link_t *l, int to, hr_slice_t room, uint64_t cid, hr_slice_t info)
{
    put_u64(&l->rec, cid);
    put_bytes(&l->rec, room);
    put_bytes(&l->rec, info);
    send_rec(l, to, R_PJOIN);
}

static void send_pwatch(link_t *l, int to, hr_slice_t room, uint64_t cid, uint64_t sid,
                        int64_t delta)
{
    put_u64(&l->rec, cid);
    put_u64(&l->rec, sid);
    put_u64(&l->rec, (uint64_t)delta);
    put_bytes(&l->rec, room);
    send_rec(l, to, R_PWATCH);
}

static int pres_fwd(hr_server_t *s, int kind, hr_slice_t room, uint64_t cid, uint64_t sid,
                    hr_slice_t info)
{
    link_t *l = L;
    (void)s;
    if (!l || !room.n)
        return 0;
    int owner = pres_owner(l, room);
    if (owner == l->self)
        return 0;
    char k[HR_TOPIC_MAX + 32];
    size_t kn;
    if (kind == HR_PRES_FWD_JOIN) {
        kn = pkey(k, sizeof(k), room.p, room.n, cid);
        pmem_t *m = hr__map_get(&l->pmem, k, kn);
        uint32_t count = m ? m->count + 1 : 1;
        pmem_t *nm = malloc(sizeof(*nm) + info.n);
        if (nm) {
            nm->count = count;
            nm->ilen = (uint32_t)info.n;
            if (info.n)
                memcpy(nm->info, info.p, info.n);
            if (hr__map_put(&l->pmem, k, kn, nm) == 0) {
                free(m);
            } else {
                free(nm);
            }
        }
        send_pjoin(l, owner, room, cid, info);
    } else if (kind == HR_PRES_FWD_LEAVE) {
        kn = pkey(k, sizeof(k), room.p, room.n, cid);
        pmem_t *m = hr__map_get(&l->pmem, k, kn);
        if (m && --m->count == 0) {
            hr__map_del(&l->pmem, k, kn);
            free(m);
        }
        put_u64(&l->rec, cid);
        put_bytes(&l->rec, room);
        send_rec(l, owner, R_PLEAVE);
    } else {
        int64_t d = kind == HR_PRES_FWD_WATCH ? 1 : -1;
        intptr_t n = (intptr_t)hr__map_get(&l->pwatch, room.p, room.n) + (intptr_t)d;
        if (n > 0)
            hr__map_put(&l->pwatch, room.p, room.n, (void *)n);
        else
            hr__map_del(&l->pwatch, room.p, room.n);
        send_pwatch(l, owner, room, cid, d > 0 ? sid : 0, d);
    }
    return 1;
}

static void on_pjoin(link_t *l, int from, rd_t *r, int join)
{
    uint64_t cid = get_u64(r);
    hr_slice_t room = get_bytes(r), info = join ? get_bytes(r) : (hr_slice_t){0};
    if (r->bad || !room.n || room.n > HR_TOPIC_MAX || info.n > HR_PRES_INFO_MAX)
        return;
    if (join)
        hr__presence_member_join(l->s, room, cid, info, (uint16_t)from);
    else
        hr__presence_member_leave(l->s, room, cid);
}

static void on_pwatch(link_t *l, int from, rd_t *r)
{
    uint64_t cid = get_u64(r), sid = get_u64(r);
    int64_t delta = (int64_t)get_u64(r);
    hr_slice_t room = get_bytes(r);
    char k[HR_TOPIC_MAX + 32];
    if (r->bad || !room.n || room.n > HR_TOPIC_MAX || delta < -1000000 || delta > 1000000)
        return;
    size_t kn = pkey(k, sizeof(k), room.p, room.n, (uint64_t)from);
    intptr_t n = (intptr_t)hr__map_get(&l->rwatch, k, kn) + (intptr_t)delta;
    if (n > 0)
        hr__map_put(&l->rwatch, k, kn, (void *)n);
    else
        hr__map_del(&l->rwatch, k, kn);
    hr__presence_remote_watch(l->s, room, (int)delta);
    if (delta <= 0 || !sid)
        return;
    hr_msg_t *snap = hr__presence_snapshot(l->s, room);
    if (!snap)
        return;
    hr_delivery_t d = {snap, room, 0, 0, cid, 0};
    put_u64(&l->rec, cid);
    put_u64(&l->rec, sid);
    put_delivery(l, &d);
    send_rec(l, from, R_PSNAP);
    hr_msg_unref(&snap);
}

static void on_psnap(link_t *l, rd_t *r)
{
    uint64_t cid = get_u64(r), sid = get_u64(r);
    hr_delivery_t d;
    hr_msg_t *m = get_delivery(r, &d);
    if (!m)
        return;
    hr_conn_t *c = hr__map_get(&l->s->conns_by_id, &cid, sizeof(cid));
    hr_sub_t *sub = c ? hr__sub_find(c, sid) : NULL;
    if (sub && sub->presence == HR_PRES_WATCHER)
        hr__conn_deliver(c, sid, m);
    hr_msg_unref(&m);
}

typedef struct pres_walk_s {
    link_t *l;
    int peer;
} pres_walk_t;

static void rejoin_one(void *arg, const void *k, size_t kn, void *v)
{
    pres_walk_t *w = arg;
    const char *bar = last_bar(k, kn);
    pmem_t *m = v;
    if (!bar)
        return;
    hr_slice_t room = {k, (size_t)(bar - (const char *)k)};
    if (pres_owner(w->l, room) != w->peer)
        return;
    uint64_t cid = strtoull(bar + 1, NULL, 10);
    for (uint32_t i = 0; i < m->count; i++)
        send_pjoin(w->l, w->peer, room, cid, (hr_slice_t){m->info, m->ilen});
}

/*
 * Tells a keeper that restarted the members this worker reported to it, and
 * registers each local watcher again with a sid: the new keeper's room starts
 * from what it is told now, so every watcher gets a fresh snapshot (marked
 * replay) that replaces what it knew.
 */
static void pres_announce(link_t *l, int peer)
{
    pres_walk_t w = {l, peer};
    hr__map_each(&l->pmem, rejoin_one, &w);
    for (hr_conn_t *c = l->s->conns; c; c = c->next) {
        if (c->flags & HR_C_CLOSED)
            continue;
        for (uint32_t i = 0; i < c->nsubs; i++) {
            const hr_sub_t *sub = c->subs[i];
            if (sub->presence != HR_PRES_WATCHER || sub->plen <= HR_PRES_PREFIX_LEN)
                continue;
            hr_slice_t room = {sub->pattern + HR_PRES_PREFIX_LEN, sub->plen - HR_PRES_PREFIX_LEN};
            if (pres_owner(l, room) == peer)
                send_pwatch(l, peer, room, c->id, sub->sid, 1);
        }
    }
}

typedef struct unwatch_s {
    int peer;
    char **keys;
    size_t *lens;
    intptr_t *counts;
    size_t n, cap;
} unwatch_t;

static void collect_rwatch(void *arg, const void *k, size_t kn, void *v)
{
    unwatch_t *u = arg;
    const char *bar = last_bar(k, kn);
    if (!bar || atoi(bar + 1) != u->peer || u->n == u->cap)
        return;
    if (!(u->keys[u->n] = malloc(kn)))
        return;
    memcpy(u->keys[u->n], k, kn);
    u->lens[u->n] = kn;
    u->counts[u->n++] = (intptr_t)v;
}

/* A peer's members and watchers of rooms kept here go with it. */
static void pres_forget(link_t *l, int peer)
{
    hr__presence_worker_gone(l->s, (uint16_t)peer);
    size_t cap = l->rwatch.count;
    unwatch_t u = {peer,
                   calloc(cap + 1, sizeof(char *)),
                   calloc(cap + 1, sizeof(size_t)),
                   calloc(cap + 1, sizeof(intptr_t)),
                   0,
                   cap};
    if (u.keys && u.lens && u.counts)
        hr__map_each(&l->rwatch, collect_rwatch, &u);
    for (size_t i = 0; i < u.n; i++) {
        const char *bar = last_bar(u.keys[i], u.lens[i]);
        hr__presence_remote_watch(l->s, (hr_slice_t){u.keys[i], (size_t)(bar - u.keys[i])},
                                  -(int)u.counts[i]);
        hr__map_del(&l->rwatch, u.keys[i], u.lens[i]);
        free(u.keys[i]);
    }
    free(u.keys);
    free(u.lens);
    free(u.counts);
}

/* ---- draining
 * ------------------------------------------------------------------------------------------ */

static void dispatch(link_t *l, int from, uint32_t type, const void *data, size_t len);

/* Until every peer answered HELLO, sequencing waits: its records are copied aside. */
static void defer(link_t *l, int from, uint32_t type, const void *data, size_t len)
{
    ovf_t *o = malloc(sizeof(*o) + len);
    if (!o)
        return;
    o->next = NULL;
    o->type = type | (uint32_t)from << 24;
    o->len = len;
    memcpy(o->data, data, len);
    if (l->def_tail)
        l->def_tail->next = o;
    else
        l->def_head = o;
    l->def_tail = o;
}

static void synced(link_t *l)
{
    l->unsynced = 0;
    uv_timer_stop(&l->sync_timer);
    while (l->def_head) {
        ovf_t *o = l->def_head;
        l->def_head = o->next;
        if (!l->def_head)
            l->def_tail = NULL;
        dispatch(l, (int)(o->type >> 24), o->type & 0xffffff, o->data, o->len);
        free(o);
    }
}

static void on_sync(link_t *l, int from)
{
    if (!l->unsynced || l->synced_from[from])
        return;
    l->synced_from[from] = 1;
    if (--l->unsynced == 0)
        synced(l);
}

static void on_sync_timeout(uv_timer_t *t)
{
    link_t *l = t->data;
    if (!l->unsynced)
        return;
    for (int i = 0; i < l->n; i++)
        if (i != l->self && !l->synced_from[i]) {
            HR_LOG(HR_LOG_WARN, 0, "worker %d did not answer within %d ms: serving without it", i,
                   SYNC_WAIT_MS);
            l->peer[i].up = 0;
        }
    synced(l);
}

int hr__link_synced(void)
{
    return !L || !L->unsynced;
}

static void dispatch(link_t *l, int from, uint32_t type, const void *data, size_t len)
{
    rd_t r = {data, len, 0};
    switch (type) {
    case R_ADD:
    case R_DEL:
    case R_QADD:
    case R_QDEL:
        on_interest(l, from, type, &r);
        break;
    case R_RESET:
        forget_remote(l, from);
        break;
    case R_HELLO:
        forget_remote(l, from);
        pres_forget(l, from);
        l->peer[from].up = 1;
        announce(l, from);
        pres_announce(l, from);
        break;
    case R_PJOIN:
    case R_PLEAVE:
        on_pjoin(l, from, &r, type == R_PJOIN);
        break;
    case R_PWATCH:
        on_pwatch(l, from, &r);
        break;
    case R_PSNAP:
        on_psnap(l, &r);
        break;
    case R_BAR: {
        uint64_t token = get_u64(&r);
        if (!r.bad) {
            put_u64(&l->rec, token);
            send_rec(l, from, R_BACK);
        }
        break;
    }
    case R_BACK:
        on_back(l, &r);
        break;
    case R_SYNC:
        on_sync(l, from);
        break;
    case R_PUB:
        if (l->unsynced) {
            defer(l, from, type, data, len);
            break;
        }
        on_pub(l, from, &r);
        break;
    case R_ACK:
        on_ack(l, &r);
        break;
    case R_MSG:
        on_msg(l, &r);
        break;
    case R_RREQ:
        if (l->unsynced) {
            defer(l, from, type, data, len);
            break;
        }
        on_rreq(l, from, &r);
        break;
    case R_RMSG:
        on_rmsg(l, &r);
        break;
    case R_RDONE:
        on_rdone(l, &r);
        break;
    default:
        break; /* a newer worker's record: skipped */
    }
}

static void link_ping(hr_server_t *s);

static size_t drain(hr_waker_t *w, void *arg)
{
    link_t *l = arg;
    size_t total = 0;
    (void)w;
    if (l->congested)
        return 1; /* come back next turn: our own output must drain first */
    for (int i = 0; i < l->n; i++) {
        if (i == l->self)
            continue;
        hr_ring_t *in = &l->peer[i].in;
        uint32_t type;
        size_t len, k = 0;
        void *p;
        while (k < DRAIN_BUDGET && (p = hr__ring_peek(in, &type, &len)) != NULL) {
            dispatch(l, i, type, p, len);
            k++;
        }
        if (k)
            hr__ring_release(in);
        total += k;
    }
    l->records_in += total;
    return total;
}

/* ---- the shared seq table
 * ---------------------------------------------------------------------------------- */

static uint64_t *seq_cell(void *arg, uint64_t hash)
{
    link_t *l = arg;
    seq_table_t *t = l->seq;
    uint64_t key = hash | 1;
    for (uint32_t i = 0; i < SEQ_PROBE; i++) {
        seq_slot_t *s = &t->slot[(hash + i) & (SEQ_SLOTS - 1)];
        uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (k == key)
            return &s->seq;
        if (k == 0) {
            uint64_t zero = 0;
            if (__atomic_compare_exchange_n(&s->key, &zero, key, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) ||
                zero == key)
                return &s->seq;
        }
    }
    return &t->floor;
}

/* ---- attach / detach
 * --------------------------------------------------------------------------------------------- */

int hr__link_attach(hr_server_t *s)
{
    link_t *l = calloc(1, sizeof(*l));
    if (!l)
        return HR_ENOMEM;
    l->s = s;
    l->self = s->worker;
    l->n = s->nworkers;
    l->efd = HR_CLUSTER_FD0 + 2 + l->self;
    if (hr__shm_map(&l->shm, HR_CLUSTER_FD0) != 0 || (int)l->shm.nworkers != l->n) {
        fprintf(stderr, "herald: worker %d: cannot map the cluster's shared memory\n", l->self);
        free(l);
        return HR_EINVAL;
    }
    l->seq =
        mmap(NULL, sizeof(seq_table_t), PROT_READ | PROT_WRITE, MAP_SHARED, HR_CLUSTER_FD0 + 1, 0);
    if (l->seq == MAP_FAILED) {
        fprintf(stderr, "herald: worker %d: cannot map the seq table: %s\n", l->self,
                strerror(errno));
        hr__shm_unmap(&l->shm);
        free(l);
        return HR_EINVAL;
    }
    for (int i = 0; i < l->n; i++) {
        if (i == l->self)
            continue;
        hr__shm_ring(&l->shm, (unsigned)l->self, (unsigned)i, &l->peer[i].out);
        hr__shm_ring(&l->shm, (unsigned)i, (unsigned)l->self, &l->peer[i].in);
        l->peer[i].efd = HR_CLUSTER_FD0 + 2 + i;
        l->peer[i].up = 1; /* until the primary says otherwise */
    }
    hr__map_init(&l->interest);
    hr__map_init(&l->remote);
    hr__map_init(&l->pend_pubs);
    hr__map_init(&l->pend_reps);
    hr_buf_init(&l->rec);
    uv_timer_init(s->loop, &l->retry);
    l->retry.data = l;
    /* The cluster engine wraps the worker's memory engine: replays reach every owner. */
    l->base.ops = &cluster_ops;
    l->inner = s->engine;
    s->engine = &l->base;
    s->peer = &peer_ops;
    s->peer_arg = l;
    s->on_flush = link_flush;
    s->on_ping = link_ping;
    s->presence_fwd = pres_fwd;
    hr__map_init(&l->pmem);
    hr__map_init(&l->pwatch);
    hr__map_init(&l->rwatch);
    hr__map_init(&l->bars);
    hr__engine_mem_set_seq_cell(l->inner, seq_cell, l);
    hr_shm_worker_t *me = hr__shm_worker(&l->shm, (unsigned)l->self);
    if (hr__waker_start(&l->waker, s->loop, l->efd, &me->waiting, drain, l) != 0) {
        fprintf(stderr, "herald: worker %d: cannot watch its eventfd\n", l->self);
        return HR_EINVAL;
    }
    L = l;
    /* A new incarnation: whatever the others remember of the previous one goes,
     * and they tell this one what they subscribe to. */
    l->unsynced = l->n - 1;
    uv_timer_init(s->loop, &l->sync_timer);
    l->sync_timer.data = l;
    uv_timer_start(&l->sync_timer, on_sync_timeout, SYNC_WAIT_MS, 0);
    for (int i = 0; i < l->n; i++)
        if (i != l->self)
            ring_put(l, i, R_HELLO, "", 0);
    return HR_OK;
}

void hr__link_peer_down(hr_server_t *s, int peer)
{
    link_t *l = L;
    if (!l || peer < 0 || peer >= l->n || peer == l->self)
        return;
    l->peer[peer].up = 0;
    forget_remote(l, peer);
    pres_forget(l, peer);
    (void)s;
}

void hr__link_peer_up(hr_server_t *s, int peer)
{
    link_t *l = L;
    if (!l || peer < 0 || peer >= l->n || peer == l->self)
        return;
    l->peer[peer].up = 1; /* its HELLO (in the ring) brings the rest */
    (void)s;
}

void hr__link_counters(const hr_server_t *s, hr_link_counters_t *lc)
{
    const link_t *l = L;
    (void)s;
    if (!l)
        return;
    lc->ring_out = l->records_out;
    lc->ring_in = l->records_in;
    lc->ring_full = l->records_waited;
    lc->ring_backlog = l->ovf_total;
    lc->remote_subs = l->remote.count;
}

static void free_pub(void *arg, const void *k, size_t kl, void *v)
{
    (void)arg;
    (void)k;
    (void)kl;
    free(v);
}

static void free_bar(void *arg, const void *k, size_t kl, void *v)
{
    bar_t *b = v;
    (void)arg;
    (void)k;
    (void)kl;
    hr__conn_reply_fill(b->slot, 0); /* its connection is gone: this frees the slot */
    free(b);
}

/* A PING is answered after what other workers already sent this one is delivered. */
static void link_ping(hr_server_t *s)
{
    (void)s;
    if (L && !L->stopped)
        drain(&L->waker, L);
}

static void on_waker_closed(hr_waker_t *w)
{
    (void)w;
}

void hr__link_stop(hr_server_t *s)
{
    link_t *l = L;
    (void)s;
    if (!l || l->stopped)
        return;
    l->stopped = 1;
    hr__waker_stop(&l->waker, on_waker_closed);
    uv_close((uv_handle_t *)&l->retry, NULL);
    uv_close((uv_handle_t *)&l->sync_timer, NULL);
}

void hr__link_detach(hr_server_t *s)
{
    link_t *l = L;
    if (!l)
        return;
    if (!l->stopped) {
        hr__link_stop(s);
        uv_run(s->loop, UV_RUN_NOWAIT); /* the loop already ended: let the closes finish */
    }
    forget_remote(l, -1);
    for (int i = 0; i < l->n; i++)
        while (l->peer[i].ovf_head) {
            ovf_t *o = l->peer[i].ovf_head;
            l->peer[i].ovf_head = o->next;
            free(o);
        }
    while (l->def_head) {
        ovf_t *o = l->def_head;
        l->def_head = o->next;
        free(o);
    }
    hr__map_each(&l->pend_pubs, free_pub, NULL);
    hr__map_each(&l->pend_reps, free_pub, NULL);
    hr__map_each(&l->pmem, free_pub, NULL);
    hr__map_destroy(&l->pmem);
    hr__map_destroy(&l->pwatch);
    hr__map_destroy(&l->rwatch);
    hr__map_each(&l->bars, free_bar, NULL); /* the connections were freed first */
    hr__map_destroy(&l->bars);
    s->presence_fwd = NULL;
    hr__map_destroy(&l->interest);
    hr__map_destroy(&l->remote);
    hr__map_destroy(&l->pend_pubs);
    hr__map_destroy(&l->pend_reps);
    hr_buf_destroy(&l->rec);
    munmap(l->seq, sizeof(seq_table_t));
    hr__shm_unmap(&l->shm);
    s->engine = l->inner;
    s->peer = NULL;
    free(l);
    L = NULL;
}
