/* SPDX-License-Identifier: MIT */
/* Slow-consumer policies per topic pattern: what a backlogged connection loses, and GAP frames. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "server.h"

/*
 * A connection whose pending output passes half of out-soft (where the
 * broker also stops reading it) is backlogged. Messages of topics with a
 * policy then stop entering its output queue:
 *
 * - drop-newest: the message is dropped;
 * - drop-oldest: it is parked; past the parking budget (a quarter of
 *   out-soft) the oldest parked message is dropped;
 * - conflate: it is parked in place of the parked message of the same
 *   subscription and topic, which is dropped.
 *
 * Every dropped seq is recorded per (sid, topic) as one range: what a
 * policy drops for a subscription and topic always lies above what was
 * delivered and below what is still parked, so one range per pair is exact.
 * When the output has drained to an eighth of out-soft, the GAP frames go
 * out first, then the parked messages in arrival order, so a subscriber
 * sees, per topic, the seqs before the gap, the GAP, then the rest.
 * Topics without a policy (disconnect) are queued as before and keep the
 * out-soft / out-hard limits; a backlog of policy topics alone stays under
 * out-soft and never closes the connection.
 */

typedef struct pol_s {
    char *pattern;
    size_t plen;
    int kind;
} pol_t;

struct hr_policies_s {
    pol_t *v;
    size_t n;
};
typedef struct hr_policies_s hr_policies_t;

typedef struct parked_s {
    uint64_t sid;
    uint64_t th; /* topic hash */
    uint64_t seq;
    hr_msg_t *m; /* owned */
} parked_t;

typedef struct gap_s {
    uint64_t sid;
    uint64_t th;
    uint64_t first, last;
    size_t tlen;
    char *topic; /* owned */
} gap_t;

struct hr_park_s {
    parked_t *e;
    size_t n, cap;
    size_t bytes;
    gap_t *g;
    size_t ng, capg;
};

static int kind_of(const char *p, size_t n)
{
    static const char *const names[] = {"disconnect", "drop-oldest", "drop-newest", "conflate"};
    for (int i = 0; i < 4; i++)
        if (strlen(names[i]) == n && memcmp(names[i], p, n) == 0)
            return i;
    return -1;
}

int hr__policy_init(hr_server_t *s)
{
    const char *spec = s->cfg.slow_policy;
    hr_policies_t *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return HR_ENOMEM;
    s->policies = ps;
    s->npolicies = 0;
    while (*spec) {
        const char *end = strchr(spec, ',');
        size_t n = end ? (size_t)(end - spec) : strlen(spec);
        const char *eq = memchr(spec, '=', n);
        size_t plen = eq ? (size_t)(eq - spec) : 0;
        int kind = eq ? kind_of(eq + 1, n - plen - 1) : -1;
        if (kind < 0 || hr_pattern_validate(spec, plen) != HR_OK) {
            fprintf(stderr,
                    "herald: slow-policy: '%.*s' is not pattern=policy (drop-oldest, "
                    "drop-newest, conflate, disconnect)\n",
                    (int)n, spec);
            return HR_EINVAL;
        }
        pol_t *v = realloc(ps->v, (ps->n + 1) * sizeof(*v));
        if (!v)
            return HR_ENOMEM;
        ps->v = v;
        if (!(v[ps->n].pattern = malloc(plen)))
            return HR_ENOMEM;
        memcpy(v[ps->n].pattern, spec, plen);
        v[ps->n].plen = plen;
        v[ps->n++].kind = kind;
        s->npolicies += kind != HR_POL_DISCONNECT;
        spec += n + (end != NULL);
    }
    return HR_OK;
}

void hr__policy_destroy(hr_server_t *s)
{
    hr_policies_t *ps = s->policies;
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++)
        free(ps->v[i].pattern);
    free(ps->v);
    free(ps);
    s->policies = NULL;
}

static int policy_of(const hr_server_t *s, hr_slice_t topic)
{
    const hr_policies_t *ps = s->policies;
    for (size_t i = 0; ps && i < ps->n; i++)
        if (hr_topic_match(ps->v[i].pattern, ps->v[i].plen, topic.p, topic.n))
            return ps->v[i].kind;
    return HR_POL_DISCONNECT;
}

/* Doubles the array `*v` of `*cap` elements of `size` bytes (at least 8). 0 or -1. */
static int grow(void **v, size_t *cap, size_t size)
{
    size_t nc = *cap ? *cap * 2 : 8;
    void *p = realloc(*v, nc * size);
    if (!p)
        return -1;
    *v = p;
    *cap = nc;
    return 0;
}

/* Records `seq` of (sid, topic) as lost. 0, or -1 when out of memory or of gap slots. */
static int gap_add(struct hr_park_s *p, uint64_t sid, hr_slice_t topic, uint64_t th, uint64_t seq)
{
    for (size_t i = 0; i < p->ng; i++) {
        gap_t *g = &p->g[i];
        if (g->sid == sid && g->th == th && g->tlen == topic.n &&
            memcmp(g->topic, topic.p, topic.n) == 0) {
            if (seq < g->first)
                g->first = seq;
            if (seq > g->last)
                g->last = seq;
            return 0;
        }
    }
    if (p->ng >= HR_POLICY_GAPS_MAX)
        return -1;
    if (p->ng == p->capg && grow((void **)&p->g, &p->capg, sizeof(*p->g)) != 0)
        return -1;
    char *t = malloc(topic.n);
    if (!t)
        return -1;
    memcpy(t, topic.p, topic.n);
    p->g[p->ng++] = (gap_t){sid, th, seq, seq, topic.n, t};
    return 0;
}

/* Drops parked entry `i`, recording its seq. */
static int evict(struct hr_park_s *p, size_t i)
{
    parked_t *e = &p->e[i];
    hr_slice_t topic, payload, opts;
    uint64_t seq;
    int r = hr_msg_delivery_parts(e->m, &topic, &seq, &payload, &opts) == HR_OK
                ? gap_add(p, e->sid, topic, e->th, e->seq)
                : 0;
    p->bytes -= e->m->len + sizeof(*e);
    hr_msg_unref(&e->m);
    memmove(e, e + 1, (p->n - i - 1) * sizeof(*e));
    p->n--;
    return r;
}

static int same_topic(const hr_msg_t *a, const hr_msg_t *b)
{
    hr_slice_t ta, tb, pl, op;
    uint64_t seq;
    return hr_msg_delivery_parts(a, &ta, &seq, &pl, &op) == HR_OK &&
           hr_msg_delivery_parts(b, &tb, &seq, &pl, &op) == HR_OK && ta.n == tb.n &&
           memcmp(ta.p, tb.p, ta.n) == 0;
}

static int park(hr_conn_t *c, struct hr_park_s *p, int kind, uint64_t sid, uint64_t th,
                uint64_t seq, hr_msg_t *m)
{
    if (kind == HR_POL_CONFLATE)
        for (size_t i = 0; i < p->n; i++)
            if (p->e[i].sid == sid && p->e[i].th == th && same_topic(p->e[i].m, m)) {
                if (evict(p, i) != 0)
                    return -1;
                break; /* at most one per (sid, topic) */
            }
    if (p->n == p->cap && grow((void **)&p->e, &p->cap, sizeof(*p->e)) != 0)
        return -1;
    p->e[p->n++] = (parked_t){sid, th, seq, hr_msg_ref(m)};
    p->bytes += m->len + sizeof(parked_t);
    size_t budget = (size_t)c->srv->cfg.out_soft / 4;
    while (p->bytes > budget && p->n > 1)
        if (evict(p, 0) != 0)
            return -1;
    return 0;
}

int hr__policy_deliver(hr_conn_t *c, uint64_t sid, hr_msg_t *m)
{
    hr_server_t *s = c->srv;
    hr_slice_t topic, payload, opts;
    uint64_t seq;
    if (hr_msg_delivery_parts(m, &topic, &seq, &payload, &opts) != HR_OK)
        return 0;
    int kind = policy_of(s, topic);
    if (kind == HR_POL_DISCONNECT)
        return 0;
    if (!c->park && !(c->park = calloc(1, sizeof(*c->park)))) {
        hr__conn_fail(c, HR_ESLOW, "slow consumer: out of memory for pending output");
        return 1;
    }
    uint64_t th = hr__hash(topic.p, topic.n);
    int r = kind == HR_POL_DROP_NEWEST ? gap_add(c->park, sid, topic, th, seq)
                                       : park(c, c->park, kind, sid, th, seq, m);
    if (r != 0)
        hr__conn_fail(c, HR_ESLOW, "slow consumer: too many lost ranges to report");
    return 1;
}

static void park_free(struct hr_park_s *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        hr_msg_unref(&p->e[i].m);
    for (size_t i = 0; i < p->ng; i++)
        free(p->g[i].topic);
    free(p->e);
    free(p->g);
    free(p);
}

void hr__policy_release(hr_conn_t *c)
{
    struct hr_park_s *p = c->park;
    if (!p)
        return;
    c->park = NULL; /* what follows is queued as usual (and may be parked again) */
    for (size_t i = 0; i < p->ng && !(c->flags & HR_C_CLOSING); i++) {
        gap_t *g = &p->g[i];
        hr_slice_t t = {g->topic, g->tlen};
        if (hr_enc_gap(&c->srv->scratch, g->sid, t, g->first, g->last) == HR_OK)
            hr__conn_send_scratch(c);
    }
    for (size_t i = 0; i < p->n; i++)
        hr__conn_deliver(c, p->e[i].sid, p->e[i].m);
    park_free(p);
}

void hr__policy_forget(hr_conn_t *c, uint64_t sid)
{
    struct hr_park_s *p = c->park;
    if (!p)
        return;
    for (size_t i = p->n; i-- > 0;)
        if (p->e[i].sid == sid) {
            p->bytes -= p->e[i].m->len + sizeof(parked_t);
            hr_msg_unref(&p->e[i].m);
            memmove(&p->e[i], &p->e[i + 1], (p->n - i - 1) * sizeof(*p->e));
            p->n--;
        }
    for (size_t i = p->ng; i-- > 0;)
        if (p->g[i].sid == sid) {
            free(p->g[i].topic);
            p->g[i] = p->g[--p->ng];
        }
}

void hr__policy_free(hr_conn_t *c)
{
    park_free(c->park);
    c->park = NULL;
}
