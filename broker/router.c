/* SPDX-License-Identifier: MIT */
/* The router: where a publish is sequenced, and fan-out to local and peer subscriptions. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "pipeline.h"
#include "server.h"
#include "xsub.h"

uint16_t hr__route(const hr_server_t *s, uint64_t h)
{
    /* The high half of the keyed hash: the low bits already pick hash buckets. */
    return s->nworkers > 1 ? (uint16_t)((h >> 32) % s->nworkers) : s->worker;
}

/* ---- fan-out ----------------------------------------------------------------- */

typedef struct fan_s {
    hr_server_t *s;
    const hr_delivery_t *d;
    hr_msg_t *m;
    uint64_t origin;    /* publisher's client id; 0: the broker */
    int no_echo;        /* the publisher said echo: false */
    int local_only;     /* skip peers' interest and queue groups */
    uint64_t peer_sent; /* peers already handed this message (at most 64 links) */
    hr_xcache_t xc;     /* projected bodies shared by subscriptions with transforms */
} fan_t;

static void to_peer(fan_t *f, hr_sub_t *sub, const hr_sub_t *member)
{
    hr_server_t *s = f->s;
    if (!s->peer)
        return;
    if (!member) { /* one hand-off per peer, however many of its patterns match */
        uint64_t bit = 1ull << (sub->peer & 63);
        if (f->peer_sent & bit)
            return;
        f->peer_sent |= bit;
    }
    s->peer->deliver(s->peer_arg, sub->peer, f->d, member);
}

static void fan_sub(void *arg, hr_sub_t *sub)
{
    fan_t *f = arg;
    if (f->no_echo && sub->cid == f->origin)
        return;
    if (!sub->conn) {
        if (!f->local_only)
            to_peer(f, sub, NULL);
    } else if (sub->rp) {
        hr__sub_hold(sub, f->d->topic, f->d->seq, f->m);
    } else if (sub->xf) {
        hr__xsub_deliver(sub, f->m, 0, &f->xc);
    } else
        hr__conn_deliver(sub->conn, sub->sid, f->m);
}

/* A queue-group delivery to a local member, through its transforms if it has any. */
static void to_member(fan_t *f, hr_sub_t *sub)
{
    if (sub->xf)
        hr__xsub_deliver(sub, f->m, 0, &f->xc);
    else
        hr__conn_deliver(sub->conn, sub->sid, f->m);
}

/* How backlogged a member is: -1 cannot take it at all, 1 busy, 0 ready. */
static int member_state(fan_t *f, const hr_sub_t *sub, size_t *backlog)
{
    if (!sub->conn) {
        *backlog = (size_t)-1 / 2;
        return f->s->peer && f->s->peer->busy(f->s->peer_arg, sub) ? 1 : 0;
    }
    if (sub->conn->flags & HR_C_CLOSING)
        return -1;
    *backlog = hr__oq_charge(&sub->conn->out);
    return hr__oq_charge(&sub->conn->out) > (size_t)f->s->cfg.out_soft;
}

/*
 * One member of the group gets the message: round robin, skipping members
 * that are closing and, while another member can take it, members whose
 * output is already over the soft limit (a slow member would otherwise keep
 * being chosen until it is cut off, and take its share with it). When every
 * member is busy, the least backlogged one gets the message. Members are
 * compared by client id, so a member in another process is one like any.
 */
static void fan_group(void *arg, hr_qgroup_t *g)
{
    fan_t *f = arg;
    uint64_t skip = f->no_echo ? f->origin : 0;
    if (f->local_only || (f->s->group_here && !f->s->group_here(f->s->group_arg, g)))
        return; /* (another node takes it: the scale-out engine chose) */
    hr_sub_t *fallback = NULL;
    size_t fb_backlog = 0;
    for (uint32_t tries = 0; tries < g->n; tries++) {
        hr_sub_t *sub = hr__qgroup_pick(g, skip);
        size_t backlog;
        if (!sub)
            return;
        int st = member_state(f, sub, &backlog);
        if (st < 0 || (sub->xf && !hr__xsub_match(sub, f->m)))
            continue; /* closing, or its filter leaves the message to another member */
        if (st > 0) {
            if (!fallback || backlog < fb_backlog) {
                fallback = sub; /* the least backlogged of the busy ones */
                fb_backlog = backlog;
            }
            continue;
        }
        if (sub->conn)
            to_member(f, sub);
        else
            to_peer(f, sub, sub);
        return;
    }
    if (fallback && fallback->conn)
        to_member(f, fallback);
    else if (fallback)
        to_peer(f, fallback, fallback);
}

static void fanout(hr_server_t *s, const hr_delivery_t *d, int local_only)
{
    fan_t f = {s, d, d->m, d->origin, d->no_echo, local_only, 0, HR_XCACHE_INIT};
    hr_index_visitor_t v = {fan_sub, fan_group, &f};
    hr__index_match_hashed(&s->index, d->topic.p, d->topic.n, d->hash, &v);
    if (f.xc.n)
        hr__xcache_clear(&f.xc);
}

void hr__router_fanout(hr_server_t *s, const hr_delivery_t *d)
{
    fanout(s, d, 0);
}

void hr__router_fanout_local(hr_server_t *s, const hr_delivery_t *d)
{
    fanout(s, d, 1);
}

typedef struct any_s {
    int found;
} any_t;

static void any_sub(void *arg, hr_sub_t *sub)
{
    (void)sub;
    ((any_t *)arg)->found = 1;
}

static void any_group(void *arg, hr_qgroup_t *g)
{
    (void)g;
    ((any_t *)arg)->found = 1;
}

int hr__router_has_interest(void *srv, const char *topic, size_t n, uint64_t h)
{
    hr_server_t *s = srv;
    any_t a = {0};
    hr_index_visitor_t v = {any_sub, any_group, &a};
    hr__index_match_hashed(&s->index, topic, n, h, &v);
    return a.found;
}

/* ---- publishing -------------------------------------------------------------- */

typedef struct pubctx_s {
    hr_server_t *s;
    uint64_t origin;
    int no_echo;
    int heap;
    hr_router_done_cb done;
    void *arg;
} pubctx_t;

static void on_sequenced(void *arg, int status, hr_slice_t topic, uint64_t h, uint64_t seq,
                         hr_msg_t *body)
{
    pubctx_t *x = arg;
    if (status == HR_OK)
        x->s->stats.msgs_in++;
    if (status == HR_OK && body) { /* without a body the engine delivers it (fans_out) */
        hr_delivery_t d = {body, topic, h, seq, x->origin, x->no_echo};
        hr__router_fanout(x->s, &d);
    }
    if (x->done)
        x->done(x->arg, status, seq);
    if (x->heap)
        free(x);
}

int hr__router_publish(hr_server_t *s, const hr_pub_cmd_t *p, uint64_t origin_cid,
                       int origin_no_echo, hr_router_done_cb done, void *arg)
{
    uint64_t h = hr__hash(p->topic.p, p->topic.n); /* once, for the engine and the index */
    uint16_t owner = hr__route(s, h);
    if (owner != s->worker && s->peer)
        return s->peer->forward(s->peer_arg, owner, p, origin_cid, origin_no_echo, done, arg);
    hr_epub_t ep = {p->topic, h, p->payload, p->reply, p->headers, origin_cid, origin_no_echo};
    if (s->engine->ops->sync) { /* the hot path: no allocation per publish */
        pubctx_t x = {s, origin_cid, origin_no_echo, 0, done, arg};
        return hr__engine_publish(s->engine, &ep, on_sequenced, &x);
    }
    pubctx_t *x = malloc(sizeof(*x));
    if (!x)
        return HR_ENOMEM;
    *x = (pubctx_t){s, origin_cid, origin_no_echo, 1, done, arg};
    int r = hr__engine_publish(s->engine, &ep, on_sequenced, x);
    if (r < 0)
        free(x);
    return r;
}

/* ---- PUB --------------------------------------------------------------------- */

typedef struct pubans_s {
    hr_conn_t *c;     /* synchronous completion */
    hr_reply_t *slot; /* asynchronous completion: the answer's place */
    int has_ack;
    uint64_t ack;
    const char *why; /* a pipeline's rejection: why, for the ERR 13 */
} pubans_t;

/* Encodes the PUB's answer into s->scratch; 0 when there is none to give. */
static int pub_answer(hr_conn_t *c, const pubans_t *a, int status, uint64_t seq)
{
    hr_server_t *s = c->srv;
    if (status == HR_OK)
        return a->has_ack && hr_enc_ack(&s->scratch, a->ack, seq) == HR_OK;
    const char *why = status == HR_ELIMIT ? "topic limit reached" : "out of memory";
    if (status == HR_EREJECTED)
        why = a->why ? a->why : "rejected by the publish pipeline";
    if (status == HR_ENOTCONN) /* a scale-out engine that lost its store, with the message */
        why = "not published: the engine's store (Redis) is unreachable";
    if (status == HR_EBUFFULL)
        why = "not published: redis-queue-max reached (the engine's store is slow or away)";
    int local = status == HR_ENOMEM || status == HR_ENOTCONN || status == HR_EBUFFULL;
    unsigned code = hr_status_to_wire(local ? HR_ELIMIT : status);
    if (code < sizeof(s->stats.errors) / sizeof(s->stats.errors[0]))
        s->stats.errors[code]++;
    return hr_enc_err(&s->scratch, code, why, a->has_ack, a->ack) == HR_OK;
}

static void on_pub_done(void *arg, int status, uint64_t seq)
{
    pubans_t *a = arg;
    if (!a->slot) { /* synchronous: the answer goes out in order by construction */
        hr_conn_t *c = a->c;
        if (!(c->flags & HR_C_CLOSING) && pub_answer(c, a, status, seq))
            hr__conn_answer(c);
        return;
    }
    hr_conn_t *c = hr__reply_conn(a->slot);
    int with = c && !(c->flags & HR_C_CLOSING) && pub_answer(c, a, status, seq);
    if (c)
        hr__conn_ops_end(c);
    hr__conn_reply_fill(a->slot, with);
    free(a);
}

static void on_pipe_done(void *arg, int status, uint64_t seq, const char *why)
{
    ((pubans_t *)arg)->why = why;
    on_pub_done(arg, status, seq);
}

void hr__cmd_publish(hr_conn_t *c, const hr_pub_cmd_t *p)
{
    hr_server_t *s = c->srv;
    int has_ack = p->has_ack;
    if (p->topic.p[0] == '$') {
        hr__conn_err(c, HR_EPERM, "topics beginning with '$' are reserved for the broker", has_ack,
                     p->ack);
        return;
    }
    if (!hr__auth_allowed(c, HR_AUTH_PUB, p->topic)) {
        hr__conn_err(c, HR_EPERM, "not permitted to publish to this topic", has_ack, p->ack);
        return;
    }
    if (p->reply.n && !hr__auth_allowed(c, HR_AUTH_REPLY, p->reply)) {
        hr__conn_err(c, HR_EPERM, "not permitted to use this reply topic", has_ack, p->ack);
        return;
    }
    if (!hr__limits_pub(c)) {
        hr__conn_err(c, HR_ELIMIT, "publish rate limit exceeded (max-pub-rate)", has_ack, p->ack);
        return;
    }
    int no_echo = (c->flags & HR_C_NO_ECHO) != 0;
    if (s->congested)
        hr__conn_congest(c); /* this one is taken; the next frames wait for the rings */
    hr_pipeline_t *pl = s->pipelines ? hr__pipeline_find(s, p->topic) : NULL;
    if (s->engine->ops->sync && !s->peer && !pl) {
        pubans_t a = {c, NULL, has_ack, p->ack, NULL};
        int r = hr__router_publish(s, p, c->id, no_echo, on_pub_done, &a);
        if (r < 0)
            on_pub_done(&a, r, 0);
        return;
    }
    pubans_t *a = malloc(sizeof(*a));
    hr_reply_t *slot = a ? hr__conn_reply_later(c) : NULL;
    if (!slot) {
        free(a);
        hr__conn_err(c, HR_ELIMIT, "out of memory", has_ack, p->ack);
        return;
    }
    *a = (pubans_t){NULL, slot, has_ack, p->ack, NULL};
    hr__conn_ops_begin(c);
    int r = pl ? hr__pipeline_publish(pl, c, p, no_echo, on_pipe_done, a)
               : hr__router_publish(s, p, c->id, no_echo, on_pub_done, a);
    if (r < 0)
        on_pub_done(a, r, 0);
}
