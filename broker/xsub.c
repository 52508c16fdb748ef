/* SPDX-License-Identifier: MIT */
/* Applying a subscription's transforms to its deliveries: filter, fields, rate, conflate, batch. */
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "xsub.h"

/*
 * A subscription with transforms owns one hr_xsub_t. The stages run in the
 * order of the protocol: the filter and the projection read the payload in
 * place; `rate` counts deliveries in a fixed window; `conflate` keeps, per
 * (topic, key value), the latest body that arrived during its window; `batch`
 * collects bodies for one BATCH frame. Conflate windows and batches that wait
 * are put on one list per worker, served by one timer (server.xtimer) that is
 * set for the earliest deadline among them, so an idle subscription costs
 * no timer and a busy worker one. Bodies held here are references to the
 * shared (or projected) delivery bodies, never copies.
 */

/* One conflate slot: the latest body for one (topic, key value). */
typedef struct cslot_s {
    uint64_t h;   /* hash of `key` */
    uint64_t seq; /* of `m`: slots go out in seq order */
    hr_msg_t *m;  /* owned */
    size_t klen;
    char *key; /* owned: topic, a NUL, then the raw msgpack key value */
} cslot_t;

typedef struct hr_xsub_s hr_xsub_t;

struct hr_xsub_s {
    hr_xform_t *x; /* owned */
    hr_sub_t *sub;
    hr_server_t *srv;
    uint64_t rate_start; /* rate: start of the current window (ms) */
    uint32_t rate_count; /* deliveries in it */
    uint64_t cf_until;   /* conflate: end of the current window; no window before it */
    cslot_t *slots;      /* conflate: what the window holds */
    uint32_t nslots, capslots;
    size_t cf_bytes; /* conflate: bytes of the bodies and keys the slots hold */
    hr_msg_t **bq;   /* batch: bodies of the batch being collected (owned references) */
    uint32_t nbq;
    size_t bq_bytes; /* bytes their entries take in the BATCH body */
    uint64_t bq_due; /* when the batch must go out */
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
    if (xs->nslots)
        d = xs->cf_until;
    if (xs->nbq && xs->bq_due < d)
        d = xs->bq_due;
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

/* ---- the last stage: out to the connection, one by one or in BATCH frames --------- */

/* Appends a msgpack uint (smallest form) or array header of `n` elements. */
static void put_head(hr_buf_t *b, uint8_t fix, uint8_t fixmax, const uint8_t *wide, uint64_t v)
{
    uint8_t t[9];
    size_t n;
    if (v <= fixmax) {
        t[0] = (uint8_t)(fix + v);
        n = 1;
    } else {
        int w = v < 256 && wide[0] ? 1 : v < 65536 ? 2 : v <= UINT32_MAX ? 4 : 8;
        t[0] = wide[w == 1 ? 0 : w == 2 ? 1 : w == 4 ? 2 : 3];
        for (int i = 0; i < w; i++)
            t[1 + i] = (uint8_t)(v >> (8 * (w - 1 - i)));
        n = 1 + (size_t)w;
    }
    hr_buf_append(b, t, n);
}

static void put_uint(hr_buf_t *b, uint64_t v)
{
    static const uint8_t wide[4] = {0xcc, 0xcd, 0xce, 0xcf};
    put_head(b, 0, 127, wide, v);
}

static void put_array(hr_buf_t *b, uint32_t n)
{
    static const uint8_t wide[4] = {0, 0xdc, 0xdd, 0xdd};
    put_head(b, 0x90, 15, wide, n);
}

/*
 * Sends the batch as one BATCH frame, [21, sid, [[topic, seq, payload,
 * opts?], ...]]: each entry is a delivery body after its sid, so it is
 * copied once into the frame behind the array marker of its own length.
 */
static void batch_flush(hr_xsub_t *xs)
{
    hr_server_t *s = xs->srv;
    hr_conn_t *c = xs->sub->conn;
    uint32_t n = xs->nbq;
    if (!n)
        return;
    xs->nbq = 0;
    xs->bq_bytes = 0;
    if (!(c->flags & HR_C_CLOSING)) {
        hr_buf_t *b = &s->scratch;
        hr_buf_reset(b);
        put_array(b, 3);
        put_uint(b, HR_OP_BATCH);
        put_uint(b, xs->sub->sid);
        put_array(b, n);
        for (uint32_t i = 0; i < n; i++) {
            uint8_t arr = (uint8_t)(xs->bq[i]->arr - 2); /* MSG without opcode and sid */
            hr_buf_append(b, &arr, 1);
            hr_buf_append(b, hr_msg_bytes(xs->bq[i]), xs->bq[i]->len);
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
        hr_msg_unref(&xs->bq[i]);
}

static void out(hr_xsub_t *xs, hr_msg_t *m)
{
    hr_xform_t *x = xs->x;
    hr_conn_t *c = xs->sub->conn;
    if (!(x->flags & HR_XF_BATCH)) {
        hr__conn_deliver(c, xs->sub->sid, m);
        return;
    }
    if (c->flags & HR_C_CLOSING)
        return;
    /* A BATCH frame stays within what a client accepts (max_frame) and
     * within HR_XSUB_BATCH_BYTES: a batch that would grow past them goes
     * out first. The 32 bytes cover the frame's own header and array
     * markers. */
    size_t limit = xs->srv->max_frame > 64 ? xs->srv->max_frame - 32 : 32;
    if (limit > HR_XSUB_BATCH_BYTES)
        limit = HR_XSUB_BATCH_BYTES;
    if (xs->nbq && xs->bq_bytes + m->len + 1 > limit)
        batch_flush(xs);
    if (!xs->bq) {
        xs->bq = malloc(x->batch_max * sizeof(*xs->bq));
        if (!xs->bq) {
            hr__conn_fail(c, HR_ESLOW, "slow consumer: out of memory for pending output");
            return;
        }
    }
    if (!xs->nbq)
        xs->bq_due = now_ms(xs) + x->batch_ms;
    xs->bq[xs->nbq++] = hr_msg_ref(m);
    xs->bq_bytes += m->len + 1;
    if (xs->nbq >= x->batch_max)
        batch_flush(xs);
    arm(xs);
}

/* ---- conflate ------------------------------------------------------------------- */

static int slot_cmp(const void *a, const void *b)
{
    uint64_t x = ((const cslot_t *)a)->seq, y = ((const cslot_t *)b)->seq;
    return x < y ? -1 : x > y;
}

/* The window ends: what it kept goes out in seq order (so each topic's
 * messages stay in order), and a new window starts, since something was
 * just delivered. */
static void conflate_flush(hr_xsub_t *xs, uint64_t now)
{
    uint32_t n = xs->nslots;
    if (!n)
        return;
    qsort(xs->slots, n, sizeof(*xs->slots), slot_cmp);
    xs->nslots = 0;
    xs->cf_bytes = 0;
    xs->cf_until = now + xs->x->conflate_ms;
    for (uint32_t i = 0; i < n; i++) {
        out(xs, xs->slots[i].m);
        hr_msg_unref(&xs->slots[i].m);
        free(xs->slots[i].key);
    }
}

static void conflate_keep(hr_xsub_t *xs, hr_msg_t *m, hr_slice_t topic, uint64_t seq,
                          hr_slice_t payload)
{
    hr_slice_t kv = {NULL, 0};
    if (xs->x->conflate_key.n)
        hr__xform_conflate_key(xs->x, payload.p, payload.n, &kv);
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
    for (uint32_t i = 0; i < xs->nslots; i++) {
        cslot_t *sl = &xs->slots[i];
        if (sl->h == h && sl->klen == klen && memcmp(sl->key, key, klen) == 0) {
            xs->cf_bytes = xs->cf_bytes - sl->m->len + m->len;
            hr_msg_unref(&sl->m);
            sl->m = hr_msg_ref(m);
            sl->seq = seq;
            if (key != stack)
                free(key);
            return;
        }
    }
    /* Bounded memory: a window holds at most HR_XSUB_CONFLATE_KEYS distinct
     * key values and about HR_XSUB_CONFLATE_BYTES of bodies; more ends the
     * window early (what it kept goes out now, into the output queue and its
     * limits) rather than dropping a latest value. */
    if (xs->nslots >= HR_XSUB_CONFLATE_KEYS || xs->cf_bytes >= HR_XSUB_CONFLATE_BYTES)
        conflate_flush(xs, now_ms(xs));
    if (xs->nslots == xs->capslots) {
        uint32_t nc = xs->capslots ? xs->capslots * 2 : 4;
        cslot_t *p = realloc(xs->slots, nc * sizeof(*p));
        if (!p) {
            if (key != stack)
                free(key);
            return;
        }
        xs->slots = p;
        xs->capslots = nc;
    }
    char *own = key != stack ? key : malloc(klen);
    if (!own)
        return;
    if (key == stack)
        memcpy(own, stack, klen);
    xs->slots[xs->nslots++] = (cslot_t){h, seq, hr_msg_ref(m), klen, own};
    xs->cf_bytes += m->len + klen;
    arm(xs);
}

/* ---- the pipeline ----------------------------------------------------------------- */

/* Rate, conflate and batch, for a body that passed filter and fields. */
static void after_fields(hr_xsub_t *xs, hr_msg_t *m, hr_slice_t topic, uint64_t seq,
                         hr_slice_t payload, int replay)
{
    hr_xform_t *x = xs->x;
    if (!replay && (x->flags & HR_XF_RATE)) {
        uint64_t now = now_ms(xs);
        if (now - xs->rate_start >= x->rate_ms) {
            xs->rate_start = now;
            xs->rate_count = 0;
        }
        if (xs->rate_count >= x->rate_n)
            return; /* dropped: the subscriber's seq numbers skip it */
        xs->rate_count++;
    }
    if (!replay && (x->flags & HR_XF_CONFLATE)) {
        uint64_t now = now_ms(xs);
        if (xs->nslots && now >= xs->cf_until)
            conflate_flush(xs, now); /* the timer has not come round yet */
        if (now >= xs->cf_until) {   /* quiet: at once, and a window starts */
            xs->cf_until = now + x->conflate_ms;
            out(xs, m);
        } else {
            conflate_keep(xs, m, topic, seq, payload);
        }
        return;
    }
    out(xs, m);
}

static int same_fields(const hr_xform_t *a, const hr_xform_t *b)
{
    return a->fields_hash == b->fields_hash && a->fields_key.n == b->fields_key.n &&
           memcmp(a->fields_key.p, b->fields_key.p, a->fields_key.n) == 0;
}

/* The body `sub` gets for `m` after its projection: a new reference. */
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

void hr__xsub_deliver(hr_sub_t *sub, hr_msg_t *m, int replay, hr_xcache_t *cache)
{
    hr_xsub_t *xs = sub->xf;
    hr_slice_t topic, payload, opts;
    uint64_t seq;
    if (sub->conn->flags & HR_C_CLOSING)
        return;
    if (hr_msg_delivery_parts(m, &topic, &seq, &payload, &opts) != HR_OK)
        return;
    if ((xs->x->flags & HR_XF_FILTER) && !hr__xform_match(xs->x, payload.p, payload.n))
        return;
    if (!(xs->x->flags & HR_XF_FIELDS)) {
        after_fields(xs, m, topic, seq, payload, replay);
        return;
    }
    hr_msg_t *pm = project(xs, m, payload, cache);
    if (!pm) {
        hr__conn_fail(sub->conn, HR_ESLOW, "slow consumer: out of memory for pending output");
        return;
    }
    after_fields(xs, pm, topic, seq, payload, replay);
    hr_msg_unref(&pm);
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
        if (xs->nslots && xs->cf_until <= now)
            conflate_flush(xs, now);
        if (xs->nbq && xs->bq_due <= now)
            batch_flush(xs);
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
    sub->xf = xs;
    return HR_OK;
}

void hr__xsub_free(hr_sub_t *sub)
{
    hr_xsub_t *xs = sub ? sub->xf : NULL;
    if (!xs)
        return;
    disarm(xs);
    for (uint32_t i = 0; i < xs->nslots; i++) {
        hr_msg_unref(&xs->slots[i].m);
        free(xs->slots[i].key);
    }
    free(xs->slots);
    for (uint32_t i = 0; i < xs->nbq; i++)
        hr_msg_unref(&xs->bq[i]);
    free(xs->bq);
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
