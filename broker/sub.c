/* SPDX-License-Identifier: MIT */
/* Subscriptions: SUB and UNSUB, and replays that stay gap-free when the engine answers late. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "policy.h"
#include "presence.h"
#include "server.h"
#include "xsub.h"

/* ---- a connection's subscriptions, sorted by sid -------------------------------- */

/* Kept sorted by sid, so SUB and UNSUB find theirs by binary search even
 * with thousands of them. */
static uint32_t sub_pos(const hr_conn_t *c, uint64_t sid)
{
    uint32_t lo = 0, hi = c->nsubs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->subs[mid]->sid < sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static hr_sub_t **find_sub(hr_conn_t *c, uint64_t sid)
{
    uint32_t i = sub_pos(c, sid);
    return i < c->nsubs && c->subs[i]->sid == sid ? &c->subs[i] : NULL;
}

hr_sub_t *hr__sub_find(hr_conn_t *c, uint64_t sid)
{
    hr_sub_t **slot = find_sub(c, sid);
    return slot ? *slot : NULL;
}

/* Inserts `sub` (room already reserved); returns its slot. */
static hr_sub_t **sub_insert(hr_conn_t *c, hr_sub_t *sub)
{
    uint32_t i = sub_pos(c, sub->sid);
    memmove(&c->subs[i + 1], &c->subs[i], (c->nsubs - i) * sizeof(*c->subs));
    c->subs[i] = sub;
    c->nsubs++;
    return &c->subs[i];
}

static void sub_erase(hr_conn_t *c, hr_sub_t **slot)
{
    uint32_t i = (uint32_t)(slot - c->subs);
    memmove(&c->subs[i], &c->subs[i + 1], (c->nsubs - i - 1) * sizeof(*c->subs));
    c->nsubs--;
}

/* ---- replay --------------------------------------------------------------------- */

/*
 * A subscription with `since` or `last` is indexed first and replayed
 * second: from the moment it is indexed, live messages for it are held
 * here instead of delivered. When the engine's answer is complete (and it
 * is the answer's turn among the connection's answers), the ERR 10 if
 * history was missing goes out first, then the replayed messages, then the
 * held live ones whose seq the replay did not already cover. So the
 * subscriber sees no gap and no duplicate however late the answer comes.
 * Messages are held by reference (the shared bodies), charged against the
 * connection's out-hard limit.
 */
typedef struct held_s {
    hr_msg_t *m;
    uint64_t th; /* topic hash */
    uint64_t seq;
} held_t;

typedef struct seen_s {
    uint64_t th;
    uint64_t seq; /* highest seq the replay delivered for the topic */
} seen_t;

typedef struct hr_replay_s hr_replay_t;

struct hr_replay_s {
    hr_sub_t *sub; /* NULL once the subscription is gone */
    hr_server_t *srv;
    hr_reply_t *slot; /* the answer's place when the engine is asynchronous */
    held_t *replayed; /* the engine's answer, kept until it is complete */
    size_t nreplayed, capreplayed;
    held_t *live; /* live messages that arrived meanwhile */
    size_t nlive, caplive, live_bytes;
    seen_t *seen; /* per topic, the highest replayed seq */
    size_t nseen, capseen;
    int status;
    int overflow;
    uint8_t ip[16]; /* the client address's scan budget key (limits.c), for the charge */
    uint8_t iplen;
};

static int push_held(held_t **v, size_t *n, size_t *cap, hr_msg_t *m, uint64_t th, uint64_t seq)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        held_t *p = realloc(*v, nc * sizeof(*p));
        if (!p)
            return -1;
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = (held_t){hr_msg_ref(m), th, seq};
    return 0;
}

static seen_t *seen_find(hr_replay_t *rp, uint64_t th)
{
    for (size_t i = 0; i < rp->nseen; i++)
        if (rp->seen[i].th == th)
            return &rp->seen[i];
    return NULL;
}

static void replay_free(hr_replay_t *rp)
{
    for (size_t i = 0; i < rp->nreplayed; i++)
        hr_msg_unref(&rp->replayed[i].m);
    for (size_t i = 0; i < rp->nlive; i++)
        hr_msg_unref(&rp->live[i].m);
    free(rp->replayed);
    free(rp->live);
    free(rp->seen);
    free(rp);
}

static void on_replay_msg(void *arg, hr_slice_t topic, uint64_t seq, hr_msg_t *body)
{
    hr_replay_t *rp = arg;
    if (!rp->sub || rp->overflow)
        return;
    uint64_t th = hr__hash(topic.p, topic.n);
    seen_t *s = seen_find(rp, th);
    if (!s) {
        if (rp->nseen == rp->capseen) {
            size_t nc = rp->capseen ? rp->capseen * 2 : 4;
            seen_t *p = realloc(rp->seen, nc * sizeof(*p));
            if (!p) {
                rp->overflow = 1;
                return;
            }
            rp->seen = p;
            rp->capseen = nc;
        }
        s = &rp->seen[rp->nseen++];
        *s = (seen_t){th, 0};
    }
    if (seq > s->seq)
        s->seq = seq;
    if (push_held(&rp->replayed, &rp->nreplayed, &rp->capreplayed, body, th, seq) != 0)
        rp->overflow = 1;
}

void hr__sub_hold(hr_sub_t *sub, hr_slice_t topic, uint64_t seq, hr_msg_t *m)
{
    hr_replay_t *rp = sub->rp;
    hr_conn_t *c = sub->conn;
    if (rp->overflow || (c->flags & HR_C_CLOSING))
        return;
    rp->live_bytes += m->len + sizeof(held_t);
    if (rp->live_bytes + hr__oq_charge(&c->out) > (size_t)c->srv->cfg.out_hard ||
        push_held(&rp->live, &rp->nlive, &rp->caplive, m, hr__hash(topic.p, topic.n), seq) != 0) {
        rp->overflow = 1;
        hr__conn_fail(c, HR_ESLOW,
                      "slow consumer: live messages held during a replay over out-hard");
    }
}

/* The answer is complete and it is its turn: deliver it, then what was held. */
static void replay_finish(void *arg)
{
    hr_replay_t *rp = arg;
    hr_sub_t *sub = rp->sub;
    if (!sub) {
        replay_free(rp);
        return;
    }
    hr_conn_t *c = sub->conn;
    sub->rp = NULL;
    if (!(c->flags & HR_C_CLOSING) && !rp->overflow) {
        if (rp->status == HR_ELIMIT) {
            c->srv->stats.scan_refused++;
            hr__conn_err(c, HR_EGAP, "history not replayed: wildcard replay budget exhausted", 1,
                         sub->sid);
        } else if (rp->status != HR_OK)
            hr__conn_err(c, HR_EGAP, "history gap: since is older than the retained history", 1,
                         sub->sid);
        /* With transforms, history passes filter, fields and batch; the
         * live messages held meanwhile pass every transform. */
        for (size_t i = 0; i < rp->nreplayed && !(c->flags & HR_C_CLOSING); i++) {
            if (sub->xf)
                hr__xsub_deliver(sub, rp->replayed[i].m, 1, NULL);
            else
                hr__conn_deliver(c, sub->sid, rp->replayed[i].m);
        }
        for (size_t i = 0; i < rp->nlive && !(c->flags & HR_C_CLOSING); i++) {
            seen_t *s = seen_find(rp, rp->live[i].th);
            if (s && rp->live[i].seq <= s->seq)
                continue;
            if (sub->xf)
                hr__xsub_deliver(sub, rp->live[i].m, 0, NULL);
            else
                hr__conn_deliver(c, sub->sid, rp->live[i].m);
        }
    }
    replay_free(rp);
}

static void on_replay_done(void *arg, int status, uint64_t topics)
{
    hr_replay_t *rp = arg;
    rp->status = status;
    if (topics) /* to the address, even when the connection is gone by now */
        hr__limits_scan_charge(rp->srv, rp->ip, rp->iplen, topics);
    if (!rp->slot) {
        replay_finish(rp);
        return;
    }
    hr_conn_t *c = hr__reply_conn(rp->slot);
    if (c)
        hr__conn_ops_end(c);
    hr__reply_set_run(rp->slot, replay_finish, rp);
    hr__conn_reply_fill(rp->slot, 0);
}

static void start_replay(hr_conn_t *c, hr_sub_t *sub, const hr_sub_cmd_t *cmd)
{
    hr_server_t *s = c->srv;
    hr_erange_t r = {
        .pattern = {sub->pattern, sub->plen},
        .wildcard = hr_topic_validate(sub->pattern, sub->plen) != HR_OK,
        .has_since = cmd->has_since,
        .has_last = cmd->has_last,
        .has_epoch = cmd->has_epoch,
        .since = cmd->since,
        .last = cmd->last,
        .epoch = cmd->epoch,
    };
    r.hash = r.wildcard ? 0 : hr__hash(sub->pattern, sub->plen);
    /* A wildcard replay examines every topic with state, so it is charged
     * to the budgets of the client's address and of the worker (limits.c):
     * without them a burst of such SUBs, a few bytes each and repeated over
     * fresh connections, stalls the loop for every other client. Over
     * budget, the subscription goes live without replay and the client gets
     * ERR 10, the same answer as for history that is gone. */
    if (r.wildcard) {
        r.scan_budget = hr__limits_scan_budget(c);
        if (!r.scan_budget) {
            hr__conn_err(c, HR_EGAP, "history not replayed: wildcard replay budget exhausted", 1,
                         sub->sid);
            return;
        }
    }
    hr_replay_t *rp = calloc(1, sizeof(*rp));
    if (!rp) {
        hr__conn_err(c, HR_EGAP, "history not replayed: out of memory", 1, sub->sid);
        return;
    }
    rp->sub = sub;
    rp->srv = s;
    memcpy(rp->ip, c->lim.ip, sizeof(rp->ip));
    rp->iplen = c->lim.iplen;
    if (!s->engine->ops->sync) {
        if (!(rp->slot = hr__conn_reply_later(c))) {
            free(rp);
            hr__conn_err(c, HR_EGAP, "history not replayed: out of memory", 1, sub->sid);
            return;
        }
        hr__conn_ops_begin(c);
    }
    sub->rp = rp;
    int st = hr__engine_replay(s->engine, &r, on_replay_msg, on_replay_done, rp);
    if (st < 0)
        on_replay_done(rp, st, 0);
}

/* ---- SUB and UNSUB ------------------------------------------------------------------ */

static void on_interest_in_effect(void *arg)
{
    hr_reply_t *slot = arg;
    hr_conn_t *c = hr__reply_conn(slot);
    if (c)
        hr__conn_ops_end(c);
    hr__conn_reply_fill(slot, 0);
}

/* An engine that confirms interest changes later (Redis) holds the SUB's (or UNSUB's) place
 * among the answers until it has: a PONG after a SUB then means messages published anywhere
 * reach it, and after an UNSUB that its queue groups no longer count on this process. */
static void await_interest(hr_conn_t *c)
{
    hr_engine_t *e = c->srv->engine;
    hr_reply_t *slot;
    if (!e->ops->barrier || !(slot = hr__conn_reply_later(c)))
        return;
    hr__conn_ops_begin(c);
    if (e->ops->barrier(e, on_interest_in_effect, slot) == 0)
        on_interest_in_effect(slot);
}

/* Unlinks `sub` from everything and frees it; a replay in flight forgets it. */
static void sub_release(hr_server_t *s, hr_sub_t *sub, int indexed)
{
    hr__presence_sub_gone(s, sub);
    if (indexed) {
        hr__index_remove(&s->index, sub);
        s->engine->ops->interest_remove(s->engine, sub);
    }
    if (sub->rp)
        sub->rp->sub = NULL;
    hr__xsub_free(sub);
    hr__sub_free(sub);
}

void hr__cmd_subscribe(hr_conn_t *c, const hr_sub_cmd_t *cmd)
{
    hr_server_t *s = c->srv;
    hr_sub_t **slot = find_sub(c, cmd->sid);
    hr_slice_t scope, info; /* a $PRES. watcher needs permission on the room's topic */
    int pres = hr__presence_sub_check(c, cmd, &scope, &info);
    if (pres < 0)
        return;
    /* A watcher's snapshot stands in for history: no replay. */
    int replay = (cmd->has_since || cmd->has_last) && !cmd->queue.n && pres != HR_PRES_WATCHER;
    if (!hr__auth_allowed(c, HR_AUTH_SUB, scope)) {
        hr__conn_err(c, HR_EPERM, "not permitted to subscribe to this pattern", 1, cmd->sid);
        return;
    }
    if (replay && !hr__limits_replay(c, cmd->pattern.p, cmd->pattern.n)) {
        hr__conn_err(c, HR_ELIMIT, "replay rate limit exceeded (max-replay-rate)", 1, cmd->sid);
        return;
    }
    /* Transforms are decoded before anything changes: an invalid one is
     * refused (ERR 12) and leaves the connection's subscriptions as they
     * were, including one this SUB would have replaced. */
    hr_xform_t *xf = NULL;
    const char *why = "invalid subscription option";
    int xr = hr__xform_new(cmd->opts.p, cmd->opts.n,
                           hr_topic_validate(cmd->pattern.p, cmd->pattern.n) == HR_OK, &xf, &why);
    if (xr != HR_OK) {
        hr__conn_err(c, xr == HR_EOPTION ? HR_EOPTION : HR_ELIMIT,
                     xr == HR_EOPTION ? why : "out of memory for subscriptions", 1, cmd->sid);
        return;
    }
    if (!slot && c->nsubs >= (uint32_t)s->cfg.max_subs) {
        hr__xform_free(&xf);
        hr__conn_err(c, HR_ELIMIT, "subscription limit reached", 1, cmd->sid);
        return;
    }
    if (!slot && c->nsubs == c->subcap) {
        uint32_t cap = c->subcap ? c->subcap * 2 : 2;
        hr_sub_t **p = realloc(c->subs, cap * sizeof(*p));
        if (!p) {
            hr__xform_free(&xf);
            hr__conn_err(c, HR_ELIMIT, "out of memory for subscriptions", 1, cmd->sid);
            return;
        }
        c->subs = p;
        c->subcap = cap;
    }
    hr_sub_t *sub =
        hr__sub_new(c, c->id, cmd->sid, cmd->pattern.p, cmd->pattern.n, cmd->queue.p, cmd->queue.n);
    if (!sub || hr__xsub_attach(sub, &xf) != HR_OK) {
        hr__xform_free(&xf);
        hr__sub_free(sub);
        hr__conn_err(c, HR_ELIMIT, "out of memory for subscriptions", 1, cmd->sid);
        return;
    }
    if (hr__index_add(&s->index, sub) != 0) {
        hr__xsub_free(sub);
        hr__sub_free(sub);
        hr__conn_err(c, HR_ELIMIT, "out of memory for subscriptions", 1, cmd->sid);
        return;
    }
    s->engine->ops->interest_add(s->engine, sub);
    await_interest(c);
    hr__presence_sub_added(c, sub, pres, info); /* before a replaced one leaves: no flap */
    if (slot) {                                 /* an active sid is replaced */
        hr__policy_forget(c, cmd->sid);
        sub_release(s, *slot, 1);
        *slot = sub;
    } else {
        sub_insert(c, sub);
    }
    /* A queue group delivers each message to one member; replaying history
     * to a joining member would break that, so `since` and `last` are
     * ignored there. */
    if (replay)
        start_replay(c, sub, cmd);
}

void hr__sub_deliver_member(hr_conn_t *c, uint64_t sid, hr_msg_t *m)
{
    hr_sub_t **slot = find_sub(c, sid);
    if (slot && (*slot)->xf)
        hr__xsub_deliver(*slot, m, 0, NULL);
    else if (slot)
        hr__conn_deliver(c, sid, m);
}

void hr__cmd_unsubscribe(hr_conn_t *c, uint64_t sid)
{
    hr_sub_t **slot = find_sub(c, sid);
    if (!slot) {
        hr__conn_err(c, HR_ESID, "unknown sid", 1, sid);
        return;
    }
    hr_sub_t *sub = *slot;
    sub_erase(c, slot);
    hr__policy_forget(c, sid);
    sub_release(c->srv, sub, 1);
    await_interest(c);
}

void hr__subs_drop(hr_conn_t *c)
{
    for (uint32_t i = 0; i < c->nsubs; i++) {
        hr__presence_sub_gone(c->srv, c->subs[i]);
        hr__index_remove(&c->srv->index, c->subs[i]);
        c->srv->engine->ops->interest_remove(c->srv->engine, c->subs[i]);
    }
}

void hr__subs_free(hr_conn_t *c)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        sub_release(c->srv, c->subs[i], 0);
    free(c->subs);
    c->subs = NULL;
    c->nsubs = c->subcap = 0;
}
