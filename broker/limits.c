/* SPDX-License-Identifier: MIT */
/* Admission limits: connections per IP, pending handshakes, publish rate, replay scan budgets. */
#include <stdlib.h>
#include <string.h>

#include "limits.h"
#include "log.h"
#include "proxy.h"
#include "server.h"

void hr__limits_init(hr_server_t *s)
{
    hr__map_init(&s->limits.per_ip);
    hr__map_init(&s->limits.scan_ip);
    s->limits.pending = 0;
    s->limits.scan_tokens = (uint64_t)s->cfg.replay_scan_global * 1000;
    s->limits.scan_at = hr__now_ms(s);
}

static void free_value(void *arg, const void *key, size_t klen, void *val)
{
    (void)arg, (void)key, (void)klen;
    free(val);
}

void hr__limits_destroy(hr_server_t *s)
{
    hr__map_destroy(&s->limits.per_ip);
    hr__map_each(&s->limits.scan_ip, free_value, NULL);
    hr__map_destroy(&s->limits.scan_ip);
}

/*
 * The per-IP key: the IPv4 address, or the first 64 bits of an IPv6 address
 * (one host usually holds a whole /64, so counting /128s would be no limit).
 * IPv4-mapped IPv6 addresses count as their IPv4 address. Behind a load
 * balancer that sends the PROXY header, the address is the client's it names.
 */
static int ip_key(hr_conn_t *c, uint8_t key[16])
{
    struct sockaddr_storage ss;
    if (hr__proxy_peer(c, &ss) != 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        memcpy(key, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 4;
    }
    if (ss.ss_family == AF_INET6) {
        const uint8_t *a = ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            memcpy(key, a + 12, 4);
            return 4;
        }
        memcpy(key, a, 8);
        return 8;
    }
    return 0;
}

const char *hr__limits_accept(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    hr_limits_conn_t *l = &c->lim;
    if (s->cfg.max_pending && s->limits.pending >= (size_t)s->cfg.max_pending) {
        s->stats.refused_pending++;
        return "too many pending handshakes: try again later";
    }
    /* A balancer's connection counts against the client its PROXY header names, later. */
    const char *why = hr__proxy_waiting(c) ? NULL : hr__limits_peer(c);
    if (why)
        return why;
    l->pending = 1;
    s->limits.pending++;
    l->rate_ms = hr__now_ms(s);
    l->tokens =
        (uint64_t)(s->cfg.max_pub_burst ? s->cfg.max_pub_burst : s->cfg.max_pub_rate) * 1000;
    return NULL;
}

const char *hr__limits_peer(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    hr_limits_conn_t *l = &c->lim;
    int klen = ip_key(c, l->ip); /* also the key of the address's replay scan budget */
    l->iplen = (uint8_t)(klen > 0 ? klen : 0);
    if (s->cfg.max_conns_per_ip && l->iplen && !l->counted) {
        uintptr_t n = (uintptr_t)hr__map_get(&s->limits.per_ip, l->ip, l->iplen);
        if (n >= (uintptr_t)s->cfg.max_conns_per_ip) {
            s->stats.refused_per_ip++;
            return "connection limit per IP address reached";
        }
        if (hr__map_put(&s->limits.per_ip, l->ip, l->iplen, (void *)(n + 1)) != 0)
            return "out of memory";
        l->counted = 1;
    }
    return NULL;
}

void hr__limits_hello(hr_conn_t *c)
{
    if (c->lim.pending) {
        c->lim.pending = 0;
        c->srv->limits.pending--;
    }
}

/*
 * A token bucket: `rate` a second, bursts of up to `burst` (0: one second's
 * worth). Kept in thousandths so that low rates refill smoothly at
 * millisecond resolution. Returns 1 and takes a token, or 0.
 */
static int bucket_take(uint64_t *tokens, uint64_t *last, uint64_t rate, uint64_t burst,
                       uint64_t now)
{
    uint64_t cap = (burst ? burst : rate) * 1000;
    if (now > *last) {
        uint64_t add = (now - *last) * rate; /* rate/s = rate thousandths per ms */
        *tokens = cap - *tokens < add ? cap : *tokens + add;
        *last = now;
    }
    if (*tokens < 1000)
        return 0;
    *tokens -= 1000;
    return 1;
}

int hr__limits_pub(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    if (!s->cfg.max_pub_rate)
        return 1;
    if (bucket_take(&c->lim.tokens, &c->lim.rate_ms, (uint64_t)s->cfg.max_pub_rate,
                    (uint64_t)s->cfg.max_pub_burst, hr__now_ms(s)))
        return 1;
    s->stats.rate_limited++;
    return 0;
}

int hr__limits_replay(hr_conn_t *c, const char *pattern, size_t n)
{
    hr_server_t *s = c->srv;
    if (!s->cfg.max_replay_rate || hr_topic_validate(pattern, n) == HR_OK)
        return 1; /* no limit, or one topic: a single lookup */
    if (bucket_take(&c->lim.replays, &c->lim.replay_ms, (uint64_t)s->cfg.max_replay_rate,
                    (uint64_t)s->cfg.max_replay_burst, hr__now_ms(s)))
        return 1;
    s->stats.replay_limited++;
    return 0;
}

/*
 * Wildcard replay scan budgets. A wildcard `since` examines every topic of
 * the worker, so what such replays may examine is a token bucket (in
 * thousandths of a topic, refilled every millisecond) per client address
 * and one for the worker. A connection's budget would be renewed by
 * reconnecting; an address's bucket outlives its connections until it is
 * full again, when it is the same as no bucket and is dropped (sweep). At
 * most SCAN_IPS_MAX addresses have one; past that, new addresses are held
 * by the worker's bucket alone until the sweep frees room.
 */
#define SCAN_IPS_MAX 65536

typedef struct scan_bucket_s {
    uint64_t tokens; /* thousandths of a topic */
    uint64_t at;     /* ms of the last refill */
} scan_bucket_t;

/* Refills a bucket of `rate` topics a second up to one second's worth. */
static void scan_refill(scan_bucket_t *b, uint64_t rate, uint64_t now)
{
    uint64_t cap = rate * 1000, dt = now - b->at;
    b->at = now;
    if (dt >= 1000 || b->tokens >= cap || cap - b->tokens <= dt * rate)
        b->tokens = cap;
    else
        b->tokens += dt * rate;
}

uint64_t hr__limits_scan_budget(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    hr_limits_t *l = &s->limits;
    uint64_t now = hr__now_ms(s), rate = (uint64_t)s->cfg.replay_scan_rate;
    uint64_t budget = rate;
    scan_bucket_t *b = c->lim.iplen ? hr__map_get(&l->scan_ip, c->lim.ip, c->lim.iplen) : NULL;
    if (b) {
        scan_refill(b, rate, now);
        budget = b->tokens / 1000;
    }
    if (s->cfg.replay_scan_global) {
        scan_bucket_t g = {l->scan_tokens, l->scan_at};
        scan_refill(&g, (uint64_t)s->cfg.replay_scan_global, now);
        l->scan_tokens = g.tokens;
        l->scan_at = g.at;
        if (g.tokens / 1000 < budget)
            budget = g.tokens / 1000;
    }
    if (!budget)
        s->stats.scan_refused++;
    return budget;
}

static void take(uint64_t *tokens, uint64_t topics)
{
    *tokens = topics > *tokens / 1000 ? 0 : *tokens - topics * 1000;
}

void hr__limits_scan_charge(hr_server_t *s, const uint8_t *ip, size_t iplen, uint64_t topics)
{
    hr_limits_t *l = &s->limits;
    uint64_t now = hr__now_ms(s), rate = (uint64_t)s->cfg.replay_scan_rate;
    s->stats.scan_topics += topics;
    if (s->cfg.replay_scan_global)
        take(&l->scan_tokens, topics); /* refilled just before, by hr__limits_scan_budget() */
    if (!iplen)
        return;
    scan_bucket_t *b = hr__map_get(&l->scan_ip, ip, iplen);
    if (!b) {
        if (l->scan_ip.count >= SCAN_IPS_MAX || !(b = malloc(sizeof(*b))))
            return;
        *b = (scan_bucket_t){rate * 1000, now};
        if (hr__map_put(&l->scan_ip, ip, iplen, b) != 0) {
            free(b);
            return;
        }
    }
    scan_refill(b, rate, now);
    take(&b->tokens, topics);
}

typedef struct scan_prune_s {
    hr_server_t *s;
    uint8_t (*keys)[17]; /* length, then the key */
    size_t n;
} scan_prune_t;

static void collect_full(void *arg, const void *key, size_t klen, void *val)
{
    scan_prune_t *p = arg;
    scan_bucket_t *b = val;
    scan_refill(b, (uint64_t)p->s->cfg.replay_scan_rate, hr__now_ms(p->s));
    if (b->tokens < (uint64_t)p->s->cfg.replay_scan_rate * 1000)
        return;
    p->keys[p->n][0] = (uint8_t)klen;
    memcpy(p->keys[p->n] + 1, key, klen);
    p->n++;
}

void hr__limits_sweep(hr_server_t *s)
{
    hr_limits_t *l = &s->limits;
    uint64_t now = hr__now_ms(s);
    if (!l->scan_ip.count || now - l->scan_pruned_at < 1000)
        return;
    l->scan_pruned_at = now;
    scan_prune_t p = {s, malloc(l->scan_ip.count * sizeof(*p.keys)), 0};
    if (!p.keys)
        return;
    hr__map_each(&l->scan_ip, collect_full, &p); /* the map may not change during the walk */
    for (size_t i = 0; i < p.n; i++)
        free(hr__map_del(&l->scan_ip, p.keys[i] + 1, p.keys[i][0]));
    free(p.keys);
}

#define LOG_PER_SEC 10

int hr__limits_log_budget(hr_server_t *s)
{
    hr_limits_t *l = &s->limits;
    uint64_t now = hr__now_ms(s);
    if (now - l->log_window >= 1000) {
        if (l->log_suppressed)
            HR_LOG(HR_LOG_WARN, 0, "%llu more refusals not logged (at most %d a second)",
                   (unsigned long long)l->log_suppressed, LOG_PER_SEC);
        l->log_window = now;
        l->log_count = 0;
        l->log_suppressed = 0;
    }
    if (l->log_count < LOG_PER_SEC) {
        l->log_count++;
        return 1;
    }
    l->log_suppressed++;
    return 0;
}

void hr__limits_conn_free(hr_conn_t *c)
{
    hr_server_t *s = c->srv;
    hr_limits_conn_t *l = &c->lim;
    hr__limits_hello(c);
    if (l->counted) {
        uintptr_t n = (uintptr_t)hr__map_get(&s->limits.per_ip, l->ip, l->iplen);
        if (n > 1)
            hr__map_put(&s->limits.per_ip, l->ip, l->iplen, (void *)(n - 1));
        else
            hr__map_del(&s->limits.per_ip, l->ip, l->iplen);
        l->counted = 0;
    }
}
