/* SPDX-License-Identifier: MIT */
/* PROXY protocol on a connection: who must send the header, consuming it, the real address. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"
#include "server.h"

/*
 * The longest v2 header accepted, TLVs included. Balancers add a few short
 * TLVs (ALPN, authority, a VPC endpoint id, TLS details); 4 KiB leaves room
 * for those while bounding what a connection may make the broker hold
 * before it has said anything of its own.
 */
#define V2_MAX 4096

_Static_assert(HR_PROXY_TCP == 1 << HR_T_TCP && HR_PROXY_WS == 1 << HR_T_WS,
               "proxy-protocol bits are indexed by transport kind");

/* The worker's settings, parsed once at start-up. */
struct hr_proxy_s {
    int ports; /* 1 << enum hr_tkind: the ports that take the header */
    int nnets;
    hr_proxy_net_t nets[HR_PROXY_NETS_MAX];
};

enum pstate {
    P_REQUIRED = 1, /* from a listed balancer: the header must come first */
    P_REFUSED,      /* from anyone else: a header is refused, other bytes pass through */
    P_DONE,         /* the header named the client: `addr` is its address */
};

/* A connection's PROXY state (conn->proxy); NULL when it has none to keep. */
struct hr_proxy_conn_s {
    uint8_t state;    /* enum pstate */
    uint8_t family;   /* P_DONE: AF_INET or AF_INET6 */
    uint16_t port;    /* P_DONE: the client's port */
    uint8_t addr[16]; /* P_DONE: the client's address */
    hr_buf_t held;    /* the beginning of a header that has not all arrived */
};

int hr__proxy_init(hr_server_t *s)
{
    int ports = hr__proxy_ports(s->cfg.proxy_protocol);
    char err[200];
    if (ports <= 0)
        return HR_OK; /* off (values were checked when they were set) */
    if (!*s->cfg.proxy_from) {
        fprintf(stderr,
                "herald: setting 'proxy-protocol': '%s' needs 'proxy-from', the addresses of the "
                "load balancers allowed to send the PROXY header\n",
                s->cfg.proxy_protocol);
        return HR_EINVAL;
    }
    struct hr_proxy_s *px = calloc(1, sizeof(*px));
    if (!px)
        return HR_ENOMEM;
    px->ports = ports;
    px->nnets = hr__proxy_nets_parse(s->cfg.proxy_from, px->nets, err, sizeof(err));
    if (px->nnets <= 0) { /* checked when set, but an empty list ("," alone) lands here */
        fprintf(stderr, "herald: setting 'proxy-from': %s\n",
                px->nnets < 0 ? err : "no address in the list");
        free(px);
        return HR_EINVAL;
    }
    s->proxy = px;
    return HR_OK;
}

void hr__proxy_destroy(hr_server_t *s)
{
    free(s->proxy);
    s->proxy = NULL;
}

int hr__proxy_peer(const hr_conn_t *c, struct sockaddr_storage *ss)
{
    const struct hr_proxy_conn_s *pc = c->proxy;
    memset(ss, 0, sizeof(*ss));
    if (pc && pc->state == P_DONE) {
        if (pc->family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)ss;
            in->sin_family = AF_INET;
            in->sin_port = htons(pc->port);
            memcpy(&in->sin_addr, pc->addr, 4);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons(pc->port);
            memcpy(&in6->sin6_addr, pc->addr, 16);
        }
        return 0;
    }
    int len = sizeof(*ss);
    return uv_tcp_getpeername(&c->tcp, (struct sockaddr *)ss, &len);
}

/* "203.0.113.7:51000" or "[2001:db8::1]:51000" for the log; "?" when unknown. */
static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char ip[64];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        uv_ip4_name(in, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(in6, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

/* The address the connection came from (the balancer's, for a proxied one), for the log. */
static const char *via_str(const hr_conn_t *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &n);
    return addr_str(&ss, buf, len);
}

void hr__proxy_accept(hr_conn_t *c)
{
    const struct hr_proxy_s *px = c->srv->proxy;
    struct sockaddr_storage ss;
    int len = sizeof(ss), listed = 0;
    if (hr__log_level >= HR_LOG_DEBUG) { /* the connection id's address, for the lines after */
        char via[80];
        HR_LOG(HR_LOG_DEBUG, c->id, "accepted on the %s port from %s", c->tp->name,
               via_str(c, via, sizeof(via)));
    }
    if (!px || !(px->ports & (1 << c->tp->kind)))
        return;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            listed = hr__proxy_nets_match(px->nets, px->nnets, AF_INET,
                                          (const uint8_t *)&((struct sockaddr_in *)&ss)->sin_addr);
        else if (ss.ss_family == AF_INET6)
            listed = hr__proxy_nets_match(px->nets, px->nnets, AF_INET6,
                                          ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr);
    }
    if (!(c->proxy = calloc(1, sizeof(*c->proxy)))) {
        hr__conn_close_now(c);
        return;
    }
    c->proxy->state = listed ? P_REQUIRED : P_REFUSED;
}

int hr__proxy_waiting(const hr_conn_t *c)
{
    return c->proxy && c->proxy->state == P_REQUIRED;
}

int hr__proxy_in_header(const hr_conn_t *c)
{
    return c->proxy && c->proxy->state != P_DONE;
}

void hr__proxy_conn_free(hr_conn_t *c)
{
    if (!c->proxy)
        return;
    hr_buf_destroy(&c->proxy->held);
    free(c->proxy);
    c->proxy = NULL;
}

/* One line with the reason, rate-limited like the other refusals. */
static void log_refusal(hr_conn_t *c, const char *why)
{
    hr_server_t *s = c->srv;
    char via[80];
    s->stats.proxy_refused++;
    if (hr__limits_log_budget(s))
        HR_LOG(HR_LOG_WARN, c->id, "refused on the %s port: PROXY protocol from %s: %s",
               c->tp->name, via_str(c, via, sizeof(via)), why);
}

static void refuse(hr_conn_t *c, const char *why)
{
    log_refusal(c, why);
    hr__conn_close_now(c);
}

void hr__proxy_cut(hr_conn_t *c)
{
    if (hr__proxy_in_header(c) && c->proxy->held.len)
        log_refusal(c, "the connection closed in the middle of a header");
}

/* The header named the client (or said there is none: LOCAL, UNKNOWN). */
static void accepted(hr_conn_t *c, const hr_proxy_hdr_t *h)
{
    struct hr_proxy_conn_s *pc = c->proxy;
    char via[80], real[80];
    c->srv->stats.proxy_headers++;
    if (h->local) { /* the balancer's own connection (a health check): its address is right */
        HR_LOG(HR_LOG_DEBUG, c->id, "PROXY v%d from %s: no client address (local)", h->version,
               via_str(c, via, sizeof(via)));
        hr__proxy_conn_free(c);
        return;
    }
    hr_buf_destroy(&pc->held);
    pc->state = P_DONE;
    pc->family = (uint8_t)h->family;
    pc->port = h->sport;
    memcpy(pc->addr, h->src, sizeof(pc->addr));
    if (hr__log_level >= HR_LOG_DEBUG) {
        struct sockaddr_storage ss;
        hr__proxy_peer(c, &ss);
        HR_LOG(HR_LOG_DEBUG, c->id, "PROXY v%d from %s: client %s", h->version,
               via_str(c, via, sizeof(via)), addr_str(&ss, real, sizeof(real)));
    }
}

/* Hands stream bytes on unless the connection closed meanwhile. */
static void pass(hr_conn_t *c, const char *p, size_t n)
{
    if (n && !(c->flags & (HR_C_CLOSING | HR_C_CLOSED)))
        hr__conn_input(c, p, n);
}

/*
 * Without bytes held from earlier reads the header is parsed in place in
 * the read buffer (the usual case: a balancer sends it in one segment).
 * Otherwise the new bytes join the held ones, at most as many as a header
 * may still need; what is past them is passed on separately.
 */
void hr__proxy_data(hr_conn_t *c, const char *p, size_t n)
{
    struct hr_proxy_conn_s *pc = c->proxy;
    size_t had = pc->held.len, took = n;
    const uint8_t *buf = (const uint8_t *)p;
    size_t len = n;
    hr_proxy_hdr_t h;
    if (had) {
        if (took > V2_MAX - had)
            took = V2_MAX - had;
        if (hr_buf_append(&pc->held, p, took) != HR_OK) {
            hr__conn_close_now(c);
            return;
        }
        buf = pc->held.base;
        len = pc->held.len;
    }
    int r = hr__proxy_parse(buf, len, V2_MAX, &h);
    /* From an unlisted address, a header is refused as soon as its signature is complete;
     * "PRO" alone could still be something else, and is held like a listed one's. */
    if (r == HR_EAGAIN && !(pc->state == P_REFUSED && h.version)) {
        if (!had && hr_buf_append(&pc->held, p, n) != HR_OK)
            hr__conn_close_now(c);
        return;
    }
    if (pc->state == P_REFUSED && r != HR_EINVAL) {
        refuse(c, "a header from an address not in proxy-from");
        return;
    }
    switch (r) {
    case HR_EPROTO:
        refuse(c, h.why);
        return;
    case HR_EINVAL:
        if (pc->state == P_REQUIRED) {
            refuse(c, "no header, and the address is in proxy-from, which requires one");
            return;
        }
        { /* Not a header, from an address that sends none: a direct client. */
            hr_buf_t held = pc->held;
            hr_buf_init(&pc->held);
            hr__proxy_conn_free(c);
            if (!had) {
                pass(c, p, n);
                return;
            }
            /* One piece: TLS decrypts into the loop-wide buffer, where the rest of `p` is. */
            if (took < n && hr_buf_append(&held, p + took, n - took) != HR_OK) {
                hr_buf_destroy(&held);
                hr__conn_close_now(c);
                return;
            }
            pass(c, (const char *)held.base, held.len);
            hr_buf_destroy(&held);
        }
        return;
    default: /* HR_OK */
        break;
    }
    size_t rest = h.len - had; /* of `p`: the header's bytes in it */
    accepted(c, &h);
    const char *why = hr__limits_peer(c);
    if (why) {
        hr__conn_fail(c, HR_ELIMIT, why);
        return;
    }
    pass(c, p + rest, n - rest);
}

int hr__proxy_sweep(hr_conn_t *c, uint64_t now)
{
    const struct hr_proxy_conn_s *pc = c->proxy;
    if (!pc || pc->state == P_DONE || (pc->state == P_REFUSED && !pc->held.len))
        return 0; /* a direct client that sent nothing yet: the transport's timeouts apply */
    int ws = c->tp->kind == HR_T_WS;
    uint64_t limit = (uint64_t)(ws ? c->srv->cfg.ws_handshake_ms : c->srv->cfg.hello_timeout_ms);
    if (now - c->idle_since < limit)
        return 0;
    refuse(c, ws ? "no complete header within ws-handshake-ms"
                 : "no complete header within hello-timeout-ms");
    return 1;
}
