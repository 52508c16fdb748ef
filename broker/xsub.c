/* SPDX-License-Identifier: MIT */
/* Applying a subscription's transforms to its deliveries: filter, fields, rate, conflate, batch. */
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "xsub.h"

/*
 * A subscription with transforms owns one hr_xsub_t: a chain of stream
 * stages (stage.h), one per transform it asked for, in the order of the
 * protocol (filter, fields, rate, conflate, batch), ending in a stage that
 * writes into the connection's output stage. Items are deliveries on the
 * stack (xitem_t): a fan-out cannot wait for one subscriber, so the stages
 * forward without holding (hr__stage_forward()), and what a subscription may
 * hold is bounded by each stage (conflate keys and bytes, batch size). The
 * filter and the projection read the payload in place; `rate` counts
 * deliveries in a fixed window; `conflate` keeps, per (topic, key value),
 * the latest body that arrived during its window; `batch` collects bodies
 * for one BATCH frame. Conflate windows and batches that wait are put on one
 * list per worker, served by one timer (server.xtimer) set for the earliest
 * deadline among them, so an idle subscription costs no timer and a busy
 * worker one. Bodies held here are references to the shared (or projected)
 * delivery bodies, never copies.
 */

/* One delivery on its way through a chain. */
typedef struct xitem_s {
    hr_item_t link;
    hr_msg_t *m; /* borrowed */
    hr_slice_t topic, payload;
    uint64_t seq;
    int replay; /* history from since/last: passes filter, fields and batch only */
    hr_xcache_t *cache;
} xitem_t;

/* One conflate slot: the latest body for one (topic, key value). */
typedef struct cslot_s {
    uint64_t h;   /* hash of `key` */
    uint64_t seq; /* of `m`: slots go out in seq order */
    hr_msg_t *m;  /* owned */
    size_t klen;
    char *key; /* owned: topic, a NUL, then the raw msgpack key value */
} cslot_t;

typedef struct hr_xsub_s hr_xsub_t;

/* The stages; each starts with its hr_stage_t and knows its chain's owner. */
typedef struct xstage_s {
    hr_stage_t st;
    hr_xsub_t *xs;
} xstage_t;

typedef struct rate_s {
    hr_stage_t st;
    hr_xsub_t *xs;
    uint64_t start;
    uint32_t count;
} rate_t;

typedef struct conflate_s {
    hr_stage_t st;
    hr_xsub_t *xs;
    uint64_t until; /* end of the current window; no window before it */
    cslot_t *slots;
    uint32_t capslots; /* st.fill: slots in use */
    uint32_t *index;   /* open addressing by key hash: slot number + 1, 0 empty */
    uint32_t nindex;   /* a power of two, at least twice the slots in use; 0: none yet */
    size_t bytes;      /* of the bodies and keys the slots hold */
} conflate_t;

typedef struct batch_s {
    hr_stage_t st;
    hr_xsub_t *xs;
    hr_msg_t **q; /* bodies of the batch being collected (owned references); st.fill of them */
    size_t bytes; /* bytes their entries take in the BATCH body */
    uint64_t due; /* when the batch must go out */
} batch_t;

struct hr_xsub_s {
    hr_xform_t *x; /* owned */
    hr_sub_t *sub;
    hr_server_t *srv;
    hr_stage_t *first; /* owned: the chain */
    conflate_t *cf;    /* in the chain, for the timer; NULL: no conflate */
    batch_t *bt;       /* likewise for batch */
    hr_xsub_t *prev, *next;
    int armed; /* on srv->xarmed */
};

static uint64_t now_ms(hr_xsub_t *xs)
{
    return hr__now_ms(xs->srv);
}

/* ---- the worker's timer ---------------------------------------------------------- */

#define NEVER UINT64_MAX

static uint64_t due_of(const hr_xsub_t *xs)
{
    uint64_t d = NEVER;
    if (xs->cf && xs->cf->st.fill)
        d = xs->cf->until;
    if (xs->bt && xs->bt->st.fill && xs->bt->due < d)
        d = xs->bt->due;
    return d;
}

static void on_xtimer(uv_timer_t *t);

static void timer_set(hr_server_t *s, uint64_t due)
{
    uint64_t now = hr__now_ms(s);
    s->xdue = due;
    uv_timer_start(&s->xtimer, on_xtimer, due > now ? due - now : 0, 0);
}

static void disarm(hr_xsub_t *xs)
{
    hr_server_t *s = xs->srv;
    if (!xs->armed)
        return;
    if (xs->prev)
        xs->prev->next = xs->next;
    else
        s->xarmed = xs->next;
    if (xs->next)
        xs->next->prev = xs->prev;
    xs->prev = xs->next = NULL;
    xs->armed = 0;
}

/* Puts `xs` on the timer's list when something of it waits, and makes the
 * timer fire no later than its deadline. */
static void arm(hr_xsub_t *xs)
{
    hr_server_t *s = xs->srv;
    uint64_t d = due_of(xs);
    if (d == NEVER) {
        disarm(xs);
        return;
    }
    if (!xs->armed) {
        xs->next = s->xarmed;
        xs->prev = NULL;
        if (s->xarmed)
            s->xarmed->prev = xs;
        s->xarmed = xs;
        xs->armed = 1;
    }
    if (!s->xdue || d < s->xdue)
        timer_set(s, d);
}

/* ---- out: the chain's end, into the connection's output stage ---------------------- */

static void out_write(hr_stage_t *st, hr_item_t *it)
{
    hr_sub_t *sub = ((xstage_t *)st)->xs->sub;
    hr_outitem_t o = {{NULL}, sub->sid, ((xitem_t *)it)->m};
    hr__stage_write(&sub->conn->sink, &o.link); /* full: the connection stops reading */
}

/* ---- batch ---------------------------------------------------------------------------- */

/*
 * Sends the batch as one BATCH frame, [21, sid, [[topic, seq, payload,
 * opts?], ...]]: each entry is a delivery body after its sid, so it is
 * copied once into the frame behind the array marker of its own length.
 */
static void batch_flush(batch_t *bt)
{
    hr_xsub_t *xs = bt->xs;
    hr_server_t *s = xs->srv;
    hr_conn_t *c = xs->sub->conn;
    uint32_t n = (uint32_t)bt->st.fill;
    if (!n)
        return;
    bt->st.fill = 0;
    bt->bytes = 0;
    if (!(c->flags & HR_C_CLOSING)) {
        hr_buf_t *b = &s->scratch;
        hr_buf_reset(b);
        uint8_t h[5 + 1 + 9 + 5];
        size_t k = hr__mp_put_array(h, 3);
        k += hr__mp_put_uint(h + k, HR_OP_BATCH);
        k += hr__mp_put_uint(h + k, xs->sub->sid);
        k += hr__mp_put_array(h + k, n);
        hr_buf_append(b, h, k);
        for (uint32_t i = 0; i < n; i++) {
            uint8_t arr = (uint8_t)(bt->q[i]->arr - 2); /* MSG without opcode and sid */
            hr_buf_append(b, &arr, 1);
            hr_buf_append(b, hr_msg_bytes(bt->q[i]), bt->q[i]->len);
        }
        if (b->oom || hr__conn_send_scratch(c) != HR_OK) {
            hr_buf_reset(b);
            hr__conn_fail(c, HR_ESLOW, "slow consumer: out of memory for pending output");
        } else {
            s->stats.deliveries += n;
            if (hr__oq_charge(&c->out) > (size_t)s->cfg.out_hard)
                hr__conn_fail(c, HR_ESLOW, "slow consumer: pending output over out-hard");
        }
    }
    for (uint32_t i = 0; i < n; i++)
        hr_msg_unref(&bt->q[i]);
}

static void batch_write(hr_stage_t *st, hr_item_t *it)
{
    batch_t *bt = (batch_t *)st;
    hr_xsub_t *xs = bt->xs;
    hr_msg_t *m = ((xitem_t *)it)->m;
    hr_conn_t *c = xs->sub->conn;
    if (c->flags & HR_C_CLOSING)
        return;
    /* A BATCH frame stays within what a client accepts (max_frame) and
     * within HR_XSUB_BATCH_BYTES: a batch that would grow past them goes
     * out first. The 32 bytes cover the frame's own header and array
     * markers. */
    size_t limit = xs->srv->max_frame > 64 ? xs->srv->max_frame - 32 : 32;
    if (limit > HR_XSUB_BATCH_BYTES)
        limit = HR_XSUB_BATCH_BYTES;
    if (st->fill && bt->bytes + m->len + 1 > limit)
        batch_flush(bt);
    if (!bt->q) {
        bt->q = malloc(xs->x->batch_max * sizeof(*bt->q));
        if (!bt->q) {
            hr__conn_fail(c, HR_ESLOW, "slow consumer: out of memory for pending output");
            return;
        }
    }
    if (!st->fill)
        bt->due = now_ms(xs) + xs->x->batch_ms;
    bt->q[st->fill++] = hr_msg_ref(m);
    bt->bytes += m->len + 1;
    if (st->fill >= xs->x->batch_max)
        batch_flush(bt);
    arm(xs);
}

static void batch_destroy(hr_stage_t *st)
{
    batch_t *bt = (batch_t *)st;
    for (size_t i = 0; i < st->fill; i++)
        hr_msg_unref(&bt->q[i]);
    free(bt->q);
    free(bt);
}

/* ---- conflate ------------------------------------------------------------------- */

static int slot_cmp(const void *a, const void *b)
{
    uint64_t x = ((const cslot_t *)a)->seq, y = ((const cslot_t *)b)->seq;
    return x < y ? -1 : x > y;
}

/* The window ends: what it kept goes on in seq order (so each topic's
 * messages stay in order), and a new window starts, since something was
 * just delivered. */
static void conflate_flush(conflate_t *cf, uint64_t now)
{
    uint32_t n = (uint32_t)cf->st.fill;
    if (!n)
        return;
    qsort(cf->slots, n, sizeof(*cf->slots), slot_cmp);
    cf->st.fill = 0;
    if (cf->nindex)
        memset(cf->index, 0, cf->nindex * sizeof(*cf->index));
    cf->bytes = 0;
    cf->until = now + cf->xs->x->conflate_ms;
    for (uint32_t i = 0; i < n; i++) {
        xitem_t it = {{NULL}, cf->slots[i].m, {NULL, 0}, {NULL, 0}, cf->slots[i].seq, 0, NULL};
        hr__stage_forward(&cf->st, &it.link);
        hr_msg_unref(&cf->slots[i].m);
        free(cf->slots[i].key);
    }
}

/* Indexes the slot just added, growing (and rebuilding) the index to keep it at most half
 * full. Out of memory, the slot stays unindexed: a later message with the same key then gets
 * a slot of its own, so both go out when the window ends (one more delivery, nothing lost). */
static void index_add(conflate_t *cf)
{
    uint32_t n = (uint32_t)cf->st.fill;
    if (2 * n > cf->nindex) {
        uint32_t cap = cf->nindex ? cf->nindex * 2 : 16;
        uint32_t *ix = calloc(cap, sizeof(*ix));
        if (ix) {
            free(cf->index);
            cf->index = ix;
            cf->nindex = cap;
            for (uint32_t i = 0; i + 1 < n; i++) {
                uint32_t j = (uint32_t)cf->slots[i].h & (cap - 1);
                while (ix[j])
                    j = (j + 1) & (cap - 1);
                ix[j] = i + 1;
            }
        }
    }
    if (n >= cf->nindex) /* no index, or no room left in it */
        return;
    uint32_t mask = cf->nindex - 1, j = (uint32_t)cf->slots[n - 1].h & mask;
    while (cf->index[j])
        j = (j + 1) & mask;
    cf->index[j] = n;
}

static void conflate_keep(conflate_t *cf, const xitem_t *it)
{
    hr_xsub_t *xs = cf->xs;
    hr_slice_t kv = {NULL, 0}, topic = it->topic;
    if (xs->x->conflate_key.n)
        hr__xform_conflate_key(xs->x, it->payload.p, it->payload.n, &kv);
    size_t klen = topic.n + 1 + kv.n;
    char stack[HR_TOPIC_MAX + 1 + 64];
    char *key = klen <= sizeof(stack) ? stack : malloc(klen);
    if (!key)
        return; /* out of memory: the message is conflated away */
    memcpy(key, topic.p, topic.n);
    key[topic.n] = 0;
    if (kv.n)
        memcpy(key + topic.n + 1, kv.p, kv.n);
    uint64_t h = hr__hash(key, klen);
    uint32_t mask = cf->nindex - 1, j = cf->nindex ? (uint32_t)h & mask : 0;
    for (; cf->nindex && cf->index[j]; j = (j + 1) & mask) {
        cslot_t *sl = &cf->slots[cf->index[j] - 1];
        if (sl->h == h && sl->klen == klen && memcmp(sl->key, key, klen) == 0) {
            cf->bytes = cf->bytes - sl->m->len + it->m->len;
            hr_msg_unref(&sl->m);
            sl->m = hr_msg_ref(it->m);
            sl->seq = it->seq;
            if (key != stack)
                free(key);
            return;
        }
    }
    /* Bounded memory: a window holds at most HR_XSUB_CONFLATE_KEYS distinct
     * key values and about HR_XSUB_CONFLATE_BYTES of bodies; more ends the
     * window early (what it kept goes out now, into the output queue and its
     * limits) rather than dropping a latest value. */
    if (cf->st.fill >= HR_XSUB_CONFLATE_KEYS || cf->bytes >= HR_XSUB_CONFLATE_BYTES)
        conflate_flush(cf, now_ms(xs));
    if (cf->st.fill == cf->capslots) {
        uint32_t nc = cf->capslots ? cf->capslots * 2 : 4;
        cslot_t *p = realloc(cf->slots, nc * sizeof(*p));
        if (!p) {
            if (key != stack)
                free(key);
            return;
        }
        cf->slots = p;
        cf->capslots = nc;
    }
    char *own = key != stack ? key : malloc(klen);
    if (!own)
        return;
    if (key == stack)
        memcpy(own, stack, klen);
    cf->slots[cf->st.fill++] = (cslot_t){h, it->seq, hr_msg_ref(it->m), klen, own};
    cf->bytes += it->m->len + klen;
    index_add(cf);
    arm(xs);
}

static void conflate_write(hr_stage_t *st, hr_item_t *i)
{
    conflate_t *cf = (conflate_t *)st;
    xitem_t *it = (xitem_t *)i;
    if (it->replay) {
        hr__stage_forward(st, i);
        return;
    }
    uint64_t now = now_ms(cf->xs);
    if (st->fill && now >= cf->until)
        conflate_flush(cf, now); /* the timer has not come round yet */
    if (now >= cf->until) {      /* quiet: at once, and a window starts */
        cf->until = now + cf->xs->x->conflate_ms;
        hr__stage_forward(st, i);
    } else {
        conflate_keep(cf, it);
    }
}

static void conflate_destroy(hr_stage_t *st)
{
    conflate_t *cf = (conflate_t *)st;
    for (size_t i = 0; i < st->fill; i++) {
        hr_msg_unref(&cf->slots[i].m);
        free(cf->slots[i].key);
    }
    free(cf->slots);
    free(cf->index);
    free(cf);
}

/* ---- rate, fields, filter ------------------------------------------------------------- */

static void rate_write(hr_stage_t *st, hr_item_t *i)
{
    rate_t *r = (rate_t *)st;
    const hr_xform_t *x = r->xs->x;
    if (!((xitem_t *)i)->replay) {
        uint64_t now = now_ms(r->xs);
        if (now - r->start >= x->rate_ms) {
            r->start = now;
            r->count = 0;
        }
        if (r->count >= x->rate_n)
            return; /* dropped: the subscriber's seq numbers skip it */
        r->count++;
    }
    hr__stage_forward(st, i);
}

static int same_fields(const hr_xform_t *a, const hr_xform_t *b)
{
    return a->fields_hash == b->fields_hash && a->fields_key.n == b->fields_key.n &&
           memcmp(a->fields_key.p, b->fields_key.p, a->fields_key.n) == 0;
}

/* The body `xs` gets for `m` after its projection: a new reference. */
static hr_msg_t *project(hr_xsub_t *xs, hr_msg_t *m, hr_slice_t payload, hr_xcache_t *cache)
{
    const hr_xform_t *x = xs->x;
    if (cache)
        for (uint32_t i = 0; i < cache->n; i++)
            if (same_fields(cache->e[i].x, x))
                return hr_msg_ref(cache->e[i].m);
    hr_buf_t *b = &xs->srv->xbuf;
    hr_buf_reset(b);
    hr_msg_t *pm;
    int r = hr__xform_project_buf(x, payload.p, payload.n, b);
    if (r == 1)
        pm = hr_msg_new_with_payload(m, (hr_slice_t){(const char *)b->base, b->len});
    else if (r == 0)
        pm = hr_msg_ref(m); /* not a map: delivered unchanged */
    else
        pm = NULL;
    if (!pm)
        return NULL;
    if (cache && cache->n < HR_XCACHE_MAX) {
        cache->e[cache->n].x = x;
        cache->e[cache->n++].m = hr_msg_ref(pm);
    }
    return pm;
}

/* The projected body goes on; the original payload stays the one later stages read (a
 * conflate key is looked up in what was published). */
static void fields_write(hr_stage_t *st, hr_item_t *i)
{
    hr_xsub_t *xs = ((xstage_t *)st)->xs;
    xitem_t *it = (xitem_t *)i;
    hr_msg_t *pm = project(xs, it->m, it->payload, it->cache);
    if (!pm) {
        hr__conn_fail(xs->sub->conn, HR_ESLOW, "slow consumer: out of memory for pending output");
        return;
    }
    xitem_t next = *it;
    next.m = pm;
    hr__stage_forward(st, &next.link);
    hr_msg_unref(&pm);
}

static void filter_write(hr_stage_t *st, hr_item_t *i)
{
    xitem_t *it = (xitem_t *)i;
    hr_xcache_t *c = it->cache;
    if (c && c->wellformed < 0) /* once per message for the whole fan-out */
        c->wellformed = hr__mp_check(it->payload.p, it->payload.n);
    int wf = c ? c->wellformed : hr__mp_check(it->payload.p, it->payload.n);
    if (hr__xform_match_checked(((xstage_t *)st)->xs->x, it->payload.p, it->payload.n, wf))
        hr__stage_forward(st, i);
}

static void plain_destroy(hr_stage_t *st)
{
    free(st);
}

static const hr_stage_ops_t filter_ops = {"filter", filter_write, NULL, plain_destroy, NULL};
static const hr_stage_ops_t fields_ops = {"fields", fields_write, NULL, plain_destroy, NULL};
static const hr_stage_ops_t rate_ops = {"rate", rate_write, NULL, plain_destroy, NULL};
static const hr_stage_ops_t conflate_ops = {"conflate", conflate_write, NULL, conflate_destroy,
                                            NULL};
static const hr_stage_ops_t batch_ops = {"batch", batch_write, NULL, batch_destroy, NULL};
static const hr_stage_ops_t out_ops = {"out", out_write, NULL, plain_destroy, NULL};

/* ---- delivering ---------------------------------------------------------------------- */

void hr__xsub_deliver(hr_sub_t *sub, hr_msg_t *m, int replay, hr_xcache_t *cache)
{
    hr_xsub_t *xs = sub->xf;
    xitem_t it = {{NULL}, m, {NULL, 0}, {NULL, 0}, 0, replay, cache};
    hr_slice_t opts;
    if (sub->conn->flags & HR_C_CLOSING)
        return;
    if (hr_msg_delivery_parts(m, &it.topic, &it.seq, &it.payload, &opts) != HR_OK)
        return;
    hr__stage_write(xs->first, &it.link);
}

int hr__xsub_match(const hr_sub_t *sub, const hr_msg_t *m)
{
    hr_slice_t topic, payload, opts;
    uint64_t seq;
    const hr_xform_t *x = sub->xf->x;
    if (!(x->flags & HR_XF_FILTER))
        return 1;
    if (hr_msg_delivery_parts(m, &topic, &seq, &payload, &opts) != HR_OK)
        return 0;
    return hr__xform_match(x, payload.p, payload.n);
}

void hr__xcache_clear(hr_xcache_t *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        hr_msg_unref(&c->e[i].m);
    c->n = 0;
}

/* ---- timer ---------------------------------------------------------------------- */

/*
 * Serves every subscription whose conflate window or batch came due, then
 * sets the timer for the earliest deadline left. What this queues goes out
 * in the same loop turn: the server flushes from a uv_prepare before the
 * loop blocks again.
 */
static void on_xtimer(uv_timer_t *t)
{
    hr_server_t *s = t->data;
    uint64_t now = hr__now_ms(s), next = NEVER;
    s->xdue = 0;
    hr_xsub_t *xs = s->xarmed;
    while (xs) {
        hr_xsub_t *nx = xs->next;
        if (xs->cf && xs->cf->st.fill && xs->cf->until <= now)
            conflate_flush(xs->cf, now);
        if (xs->bt && xs->bt->st.fill && xs->bt->due <= now)
            batch_flush(xs->bt);
        uint64_t d = due_of(xs);
        if (d == NEVER)
            disarm(xs);
        else if (d < next)
            next = d;
        xs = nx;
    }
    /* arm() may have set the timer meanwhile, for a subscription served above */
    if (next != NEVER && (!s->xdue || next < s->xdue))
        timer_set(s, next);
}

/* ---- lifecycle --------------------------------------------------------------------- */

/* A new stage of `size` bytes (a struct starting with xstage_t's fields), or NULL. */
static hr_stage_t *stage_new(hr_xsub_t *xs, const hr_stage_ops_t *ops, size_t size)
{
    xstage_t *st = calloc(1, size);
    if (!st)
        return NULL;
    hr__stage_init(&st->st, ops, 0); /* never "full": a fan-out cannot wait */
    st->xs = xs;
    return &st->st;
}

int hr__xsub_attach(hr_sub_t *sub, hr_xform_t **x)
{
    const uint32_t delivery =
        HR_XF_FILTER | HR_XF_FIELDS | HR_XF_RATE | HR_XF_CONFLATE | HR_XF_BATCH;
    if (!*x || !((*x)->flags & delivery)) {
        hr__xform_free(x);
        return HR_OK;
    }
    hr_xsub_t *xs = calloc(1, sizeof(*xs));
    if (!xs) {
        hr__xform_free(x);
        return HR_ENOMEM;
    }
    xs->x = *x;
    *x = NULL;
    xs->sub = sub;
    xs->srv = sub->conn->srv;
    static const struct {
        uint32_t flag;
        const hr_stage_ops_t *ops;
        size_t size;
    } kinds[] = {{HR_XF_FILTER, &filter_ops, sizeof(xstage_t)},
                 {HR_XF_FIELDS, &fields_ops, sizeof(xstage_t)},
                 {HR_XF_RATE, &rate_ops, sizeof(rate_t)},
                 {HR_XF_CONFLATE, &conflate_ops, sizeof(conflate_t)},
                 {HR_XF_BATCH, &batch_ops, sizeof(batch_t)},
                 {0, &out_ops, sizeof(xstage_t)}};
    hr_stage_t *chain[6];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (kinds[i].flag && !(xs->x->flags & kinds[i].flag))
            continue;
        if (kinds[i].ops == &out_ops && (xs->x->flags & HR_XF_BATCH))
            break; /* batch writes its frames into the connection itself */
        if (!(chain[n] = stage_new(xs, kinds[i].ops, kinds[i].size))) {
            hr__stage_chain(chain, n);
            if (n)
                hr__stage_destroy_chain(chain[0]);
            hr__xform_free(&xs->x);
            free(xs);
            return HR_ENOMEM;
        }
        if (kinds[i].ops == &conflate_ops)
            xs->cf = (conflate_t *)chain[n];
        if (kinds[i].ops == &batch_ops)
            xs->bt = (batch_t *)chain[n];
        n++;
    }
    hr__stage_chain(chain, n);
    xs->first = chain[0];
    sub->xf = xs;
    return HR_OK;
}

void hr__xsub_free(hr_sub_t *sub)
{
    hr_xsub_t *xs = sub ? sub->xf : NULL;
    if (!xs)
        return;
    disarm(xs);
    hr__stage_destroy_chain(xs->first);
    hr__xform_free(&xs->x);
    free(xs);
    sub->xf = NULL;
}

void hr__xsub_init(hr_server_t *s)
{
    uv_timer_init(s->loop, &s->xtimer);
    s->xtimer.data = s;
}

void hr__xsub_close(hr_server_t *s)
{
    uv_close((uv_handle_t *)&s->xtimer, NULL);
    s->xdue = 0;
}
