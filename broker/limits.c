/* SPDX-License-Identifier: MIT */
/* Admission limits: connections per IP, pending handshakes, publish rate per connection. */
#include <string.h>

#include "limits.h"
#include "log.h"
#include "server.h"

void hr__limits_init(hr_server_t *s)
{
    hr__map_init(&s->limits.per_ip);
    s->limits.pending = 0;
}

void hr__limits_destroy(hr_server_t *s)
{
    hr__map_destroy(&s->limits.per_ip);
}

/*
 * The per-IP key: the IPv4 address, or the first 64 bits of an IPv6 address
 * (one host usually holds a whole /64, so counting /128s would be no limit).
 * IPv4-mapped IPv6 addresses count as their IPv4 address.
 */
static int ip_key(hr_conn_t *c, uint8_t key[16])
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
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
    uint8_t key[16];
    int klen;
    if (s->cfg.max_pending && s->limits.pending >= (size_t)s->cfg.max_pending) {
        s->stats.refused_pending++;
        return "too many pending handshakes: try again later";
    }
    if (s->cfg.max_conns_per_ip && (klen = ip_key(c, key)) > 0) {
        uintptr_t n = (uintptr_t)hr__map_get(&s->limits.per_ip, key, (size_t)klen);
        if (n >= (uintptr_t)s->cfg.max_conns_per_ip) {
            s->stats.refused_per_ip++;
            return "connection limit per IP address reached";
        }
        if (hr__map_put(&s->limits.per_ip, key, (size_t)klen, (void *)(n + 1)) != 0)
            return "out of memory";
        memcpy(l->ip, key, (size_t)klen);
        l->iplen = (uint8_t)klen;
    }
    l->pending = 1;
    s->limits.pending++;
    l->rate_ms = hr__now_ms(s);
    l->tokens =
        (uint64_t)(s->cfg.max_pub_burst ? s->cfg.max_pub_burst : s->cfg.max_pub_rate) * 1000;
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
    if (l->iplen) {
        uintptr_t n = (uintptr_t)hr__map_get(&s->limits.per_ip, l->ip, l->iplen);
        if (n > 1)
            hr__map_put(&s->limits.per_ip, l->ip, l->iplen, (void *)(n - 1));
        else
            hr__map_del(&s->limits.per_ip, l->ip, l->iplen);
        l->iplen = 0;
    }
}
