/* SPDX-License-Identifier: MIT */
/* A node of a scale-out deployment: choosing the engine, and what the Redis engine hands back. */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "node.h"

/* Whether Redis chose this node for queue group `g` (members share pattern and queue). */
static int group_here(void *arg, const hr_qgroup_t *g)
{
    const hr_qchoice_t *qc = arg;
    if (!g->n)
        return 0;
    const hr_sub_t *m = g->members[0];
    return hr__engine_redis_group_here(qc, m->pattern, m->plen, g->queue, g->qlen);
}

/* A message reached this node through Redis (from any node, this one included). Its queue
 * groups take it only where the publish script chose (exactly one node per group). */
static void on_deliver(void *arg, hr_slice_t topic, uint64_t hash, uint64_t seq, hr_msg_t *body,
                       uint64_t origin, int no_echo, const hr_qchoice_t *qc)
{
    hr_server_t *s = arg;
    hr_delivery_t d = {body, topic, hash, seq, origin, no_echo};
    s->group_here = group_here;
    s->group_arg = (void *)(uintptr_t)qc;
    hr__router_fanout(s, &d);
    s->group_here = NULL;
    s->group_arg = NULL;
}

typedef struct gap_s {
    hr_server_t *s;
    hr_slice_t topic;
    uint64_t first, last;
} gap_t;

static void gap_sub(void *arg, hr_sub_t *sub)
{
    gap_t *g = arg;
    hr_conn_t *c = sub->conn;
    /* A subscription still waiting for its replay learns of the hole from the replay. */
    if (!c || sub->rp || (c->flags & HR_C_CLOSING))
        return;
    if (hr_enc_gap(&g->s->scratch, sub->sid, g->topic, g->first, g->last) == HR_OK)
        hr__conn_send_scratch(c);
}

static void gap_group(void *arg, hr_qgroup_t *grp)
{
    (void)arg; /* a queue group shares the messages: no member lost them all */
    (void)grp;
}

/* Seqs first..last of `topic` never reached this node (Redis was out of reach): every live
 * subscription to it is told, as for messages a slow-consumer policy dropped. */
static void on_gap(void *arg, hr_slice_t topic, uint64_t hash, uint64_t first, uint64_t last)
{
    hr_server_t *s = arg;
    gap_t g = {s, topic, first, last};
    hr_index_visitor_t v = {gap_sub, gap_group, &g};
    HR_LOG(HR_LOG_INFO, 0, "redis engine: %.*s lost seq %llu..%llu on this node", (int)topic.n,
           topic.p, (unsigned long long)first, (unsigned long long)last);
    hr__index_match_hashed(&s->index, topic.p, topic.n, hash, &v);
}

/*
 * Redis lost its data: seq numbers start again under a new epoch. A live
 * subscriber cannot be told that with a GAP (nothing was skipped; the
 * numbers went back), so every connection with subscriptions is closed
 * with ERR 9: it reconnects, resumes with its old epoch and gets ERR 10 and
 * what history there is, which is the protocol's answer to exactly this.
 */
static void on_reset(void *arg)
{
    hr_server_t *s = arg;
    for (hr_conn_t *c = s->conns; c; c = c->next)
        if (c->nsubs && !(c->flags & HR_C_CLOSING))
            hr__conn_fail(c, HR_ESHUTDOWN, "topic state was lost (new epoch): reconnect");
}

int hr__node_engine_new(hr_server_t *s, hr_engine_t **out)
{
    const hr_config_t *cfg = &s->cfg;
    *out = NULL;
    if (strcmp(cfg->engine, "memory") == 0)
        return HR_OK;
    if (!hr__engine_redis_is_url(cfg->engine)) {
        fprintf(stderr, "herald: setting 'engine': '%s' is neither 'memory' nor a redis:// URL\n",
                cfg->engine);
        return HR_EINVAL;
    }
    if (strpbrk(cfg->redis_prefix, "{}")) { /* the keys' hash tags are the topics' */
        fprintf(stderr, "herald: setting 'redis-prefix': '%s' must not contain '{' or '}'\n",
                cfg->redis_prefix);
        return HR_EINVAL;
    }
    hr_redis_opts_t o = {
        .url = cfg->engine,
        .prefix = cfg->redis_prefix,
        .history_msgs = (uint32_t)cfg->history_msgs,
        .history_ttl_s = (uint64_t)cfg->redis_history_ttl,
        .queue_max = (size_t)cfg->redis_queue_max,
        .hooks = {on_deliver, on_gap, on_reset, s},
    };
    char err[256];
    int r = hr__engine_redis_new(s->loop, &o, out, err, sizeof(err));
    if (r == HR_EINVAL)
        fprintf(stderr, "herald: setting 'engine': %s\n", err);
    return r;
}

static void on_wait_timer(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

void hr__node_wait_ready(hr_server_t *s, uint64_t ms)
{
    if (strcmp(s->engine->ops->name, "redis") != 0)
        return;
    uv_timer_t t;
    int expired = 0;
    uv_timer_init(s->loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_wait_timer, ms, 0);
    while (!expired && !hr__engine_redis_ready(s->engine))
        uv_run(s->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(s->loop, UV_RUN_NOWAIT);
    if (!hr__engine_redis_ready(s->engine))
        HR_LOG(HR_LOG_WARN, 0,
               "redis engine: Redis not reachable yet: serving; publishes wait for it (up to "
               "redis-queue-max) and resuming clients get ERR 10 until it answers");
}
