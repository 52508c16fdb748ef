/* SPDX-License-Identifier: MIT */
/* The worker: listeners, the per-turn flush, periodic sweeps, signals and shutdown. */
#define _GNU_SOURCE /* SO_REUSEPORT, SOCK_CLOEXEC */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "presence.h"
#include "log.h"
#include "node.h"
#include "pipeline.h"
#include "server.h"
#include "policy.h"
#include "proxy.h"
#include "stats.h"
#include "tls.h"
#include "xsub.h"

#define SWEEP_MS_MAX 250

const hr_transport_t *hr__ws_transport;

uint64_t hr__now_ms(const hr_server_t *s)
{
    return uv_now(s->loop);
}

int hr__server_port(const hr_server_t *s, int kind)
{
    for (int i = 0; i < s->nlisteners; i++)
        if (s->listeners[i].tp->kind == kind)
            return s->listeners[i].port;
    return 0;
}

static void on_check(uv_check_t *h)
{
    hr_server_t *s = h->data;
    if (s->on_flush)
        s->on_flush(s);
    hr__conn_flush_all(s);
}

/* Output queued by timers (sweep PINGs, ERR 6/11 closes, engine timers) goes
 * out before the loop blocks again, not one poll timeout later. */
static void on_prepare(uv_prepare_t *h)
{
    hr_server_t *s = h->data;
    if (s->on_flush)
        s->on_flush(s);
    hr__conn_flush_all(s);
}

static void on_sweep(uv_timer_t *t)
{
    hr_server_t *s = t->data;
    uv_update_time(s->loop);
    uint64_t now = hr__now_ms(s);
    hr_conn_t *c = s->conns;
    while (c) {
        hr_conn_t *next = c->next; /* close is deferred to the close phase */
        hr__conn_sweep(c, now);
        c = next;
    }
    hr__limits_sweep(s);
    hr__stats_tick(s, now);
}

/*
 * SIGHUP: the command line (and the --config files it names) is read again;
 * the settings that can change while running take effect for what happens
 * next, the others are named in the log as needing a restart.
 */
static void reload(hr_server_t *s)
{
    hr_config_t fresh;
    if (!s->argv) {
        HR_LOG(HR_LOG_WARN, 0, "SIGHUP received: no command line to reload from; ignored");
        return;
    }
    hr__config_defaults(&fresh);
    if (hr__config_args(&fresh, s->argc, s->argv) != 0) {
        HR_LOG(HR_LOG_ERROR, 0,
               "SIGHUP received: the configuration has errors (see above); "
               "keeping the running one");
        return;
    }
    if (s->nworkers > 1) { /* what the primary decided for this worker is not a change */
        fresh.port = s->cfg.port;
        fresh.ws_port = s->cfg.ws_port;
        memcpy(fresh.ready_file, s->cfg.ready_file, sizeof(fresh.ready_file));
    }
    int n = hr__config_reload(&s->cfg, &fresh);
    hr__log_level = hr__log_parse_level(s->cfg.log_level);
    hr__tls_reload(s); /* the files are read again even when their names did not change */
    /* At warn level: an operator's action, worth a line even in a quiet log. */
    HR_LOG(HR_LOG_WARN, 0, "SIGHUP received: configuration reloaded (%d setting%s changed)", n,
           n == 1 ? "" : "s");
}

static void on_signal(uv_signal_t *h, int signum)
{
    hr_server_t *s = h->data;
    if (signum == SIGHUP) {
        reload(s);
        return;
    }
    HR_LOG(HR_LOG_INFO, 0, "%s received: %s", signum == SIGINT ? "SIGINT" : "SIGTERM",
           s->shutting_down ? "closing every connection now" : "shutting down");
    if (s->shutting_down) {
        for (hr_conn_t *c = s->conns; c; c = c->next)
            hr__conn_close_now(c);
        return;
    }
    hr__server_shutdown(s);
}

static void on_shutdown_timer(uv_timer_t *t)
{
    hr_server_t *s = t->data;
    HR_LOG(HR_LOG_WARN, 0, "shutdown timeout: closing %zu remaining connections", s->nconns);
    for (hr_conn_t *c = s->conns; c; c = c->next)
        hr__conn_close_now(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    hr_listener_t *l = ls->data;
    hr_server_t *s = l->srv;
    const char *why;
    if (status < 0) {
        if (hr__limits_log_budget(s))
            HR_LOG(HR_LOG_WARN, 0, "accept on %s port failed: %s", l->tp->name,
                   uv_strerror(status));
        return;
    }
    hr_conn_t *c = hr__conn_new(s, l->tp);
    if (!c) {
        HR_LOG(HR_LOG_WARN, 0, "out of memory accepting a connection");
        return;
    }
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0 || (l->tls && hr__tls_accept(c) != HR_OK)) {
        hr__conn_close_now(c);
        return;
    }
    hr__conn_start(c);
    if (s->nconns > (size_t)s->cfg.max_connections) {
        s->stats.refused_conns++;
        if (hr__limits_log_budget(s))
            HR_LOG(HR_LOG_WARN, c->id, "refused: max-connections (%lld) reached",
                   (long long)s->cfg.max_connections);
        hr__conn_fail(c, HR_ELIMIT, "connection limit reached");
    } else if ((why = hr__limits_accept(c)) != NULL) {
        hr__conn_fail(c, HR_ELIMIT, why); /* logs the reason */
    }
}

/*
 * Everything that can fail for a reason the operator must fix (the
 * credentials) is checked before a libuv handle exists, so a failed init
 * leaves nothing to close: the caller prints nothing more and exits.
 */
int hr__server_init(hr_server_t *s, uv_loop_t *loop, const hr_config_t *cfg)
{
    int r;
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = *cfg;
    s->max_frame = (size_t)cfg->max_payload + HR_FRAME_SLACK;
    s->worker = (uint16_t)cfg->worker_id;
    s->nworkers = (uint16_t)(cfg->nworkers > 1 ? cfg->nworkers : 1);
    s->next_id = cfg->id_base;
    uv_timeval64_t tv;
    s->started_ms = uv_now(loop);
    if (uv_gettimeofday(&tv) == 0)
        s->started_unix = (double)tv.tv_sec + tv.tv_usec / 1e6;
    hr_mem_limits_t lim = {
        .max_topics = (size_t)cfg->max_topics,
        .history_msgs = (uint32_t)cfg->history_msgs,
        .history_bytes = (size_t)cfg->history_bytes,
        .history_total = (size_t)cfg->history_total,
        .max_tombstones = (size_t)cfg->topic_tombstones,
        .has_interest = hr__router_has_interest,
        .interest_arg = s,
        .epoch = cfg->epoch[0] ? cfg->epoch : NULL,
    };
    hr_buf_init(&s->scratch);
    hr__limits_init(s);
    if (hr__index_init(&s->index) != 0) {
        r = HR_ENOMEM;
        goto fail;
    }
    if ((r = hr__node_engine_new(s, &s->engine)) != HR_OK) /* prints why */
        goto fail;
    if (!s->engine && !(s->engine = hr__engine_mem_new(&lim))) {
        r = HR_ENOMEM;
        goto fail;
    }
    if (cfg->engine_delay_ms > 0 &&
        !(s->engine = hr__engine_delay_new(loop, s->engine, (uint64_t)cfg->engine_delay_ms))) {
        r = HR_ENOMEM;
        goto fail;
    }
    if ((r = hr__auth_init(s)) != HR_OK) /* prints why, except when out of memory */
        goto fail;
    if ((r = hr__policy_init(s)) != HR_OK) /* prints why, except when out of memory */
        goto fail;
    if ((r = hr__presence_init(s)) != HR_OK)
        goto fail;
    if ((r = hr__proxy_init(s)) != HR_OK) /* prints why, except when out of memory */
        goto fail;
    if ((r = hr__pipeline_init(s)) != HR_OK) /* prints why, except when out of memory */
        goto fail;
    if ((r = hr__tls_init(s)) != HR_OK) /* prints why, except when out of memory */
        goto fail;
    uv_check_init(loop, &s->flush_check);
    s->flush_check.data = s;
    uv_check_start(&s->flush_check, on_check);
    uv_prepare_init(loop, &s->flush_prepare);
    s->flush_prepare.data = s;
    uv_prepare_start(&s->flush_prepare, on_prepare);
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_init(loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    hr__xsub_init(s);
    uv_signal_init(loop, &s->sigint);
    uv_signal_init(loop, &s->sigterm);
    uv_signal_init(loop, &s->sighup);
    s->sigint.data = s->sigterm.data = s->sighup.data = s;
    hr__pipeline_start(s);
    return HR_OK;
fail:
    if (r == HR_ENOMEM)
        fprintf(stderr, "herald: out of memory\n");
    hr__server_destroy(s);
    return r;
}

/*
 * The workers of a cluster all listen on the same ports: each binds its own
 * socket with SO_REUSEPORT and the kernel spreads new connections across
 * them. libuv 1.44 has no flag for it, so the socket is made here and
 * handed to uv_tcp_open().
 */
static int bind_reuseport(uv_tcp_t *h, const struct sockaddr *sa)
{
    int on = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 || bind(fd, sa, len) != 0) {
        int r = uv_translate_sys_error(errno);
        close(fd);
        return r;
    }
    int r = uv_tcp_open(h, fd);
    if (r != 0)
        close(fd);
    return r;
}

static int listen_on(hr_server_t *s, hr_listener_t *l, const hr_transport_t *tp, int port)
{
    struct sockaddr_storage ss;
    int namelen = sizeof(ss);
    int r;
    l->srv = s;
    l->tp = tp;
    uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    l->open = 1;
    l->tls = hr__tls_port(s, tp->kind);
    if (strchr(s->cfg.bind, ':'))
        r = uv_ip6_addr(s->cfg.bind, port, (struct sockaddr_in6 *)&ss);
    else
        r = uv_ip4_addr(s->cfg.bind, port, (struct sockaddr_in *)&ss);
    if (r != 0) {
        fprintf(stderr, "herald: setting 'bind': '%s' is not an IP address\n", s->cfg.bind);
        return r;
    }
    if (s->cfg.reuseport)
        r = bind_reuseport(&l->tcp, (struct sockaddr *)&ss);
    else
        r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    if (r != 0 || (r = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection)) != 0) {
        fprintf(stderr, "herald: cannot listen on %s port %s:%d: %s\n", tp->name, s->cfg.bind, port,
                uv_strerror(r));
        return r;
    }
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &namelen);
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

static int write_ready_file(hr_server_t *s)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->cfg.ready_file);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "herald: setting 'ready-file': cannot write '%s': %s\n", tmp,
                strerror(errno));
        return -1;
    }
    for (int i = 0; i < s->nlisteners; i++)
        fprintf(f, "%s=%d\n", s->listeners[i].tp->name, s->listeners[i].port);
    fprintf(f, "pid=%d\n", (int)uv_os_getpid());
    if (fclose(f) != 0 || rename(tmp, s->cfg.ready_file) != 0) {
        fprintf(stderr, "herald: setting 'ready-file': cannot write '%s': %s\n", s->cfg.ready_file,
                strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void close_listener(hr_listener_t *l)
{
    if (l->open) {
        l->open = 0;
        uv_close((uv_handle_t *)&l->tcp, NULL);
    }
}

/* Closing every handle lets uv_run() return. */
static void close_handles(hr_server_t *s)
{
    for (int i = 0; i < s->nlisteners; i++)
        close_listener(&s->listeners[i]);
    if (s->on_stop)
        s->on_stop(s);
    uv_close((uv_handle_t *)&s->flush_check, NULL);
    uv_close((uv_handle_t *)&s->flush_prepare, NULL);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    hr__presence_close(s);
    uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
    hr__xsub_close(s);
    hr__pipeline_close(s);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
}

/* 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8: reachable from this host only. */
static int is_loopback(const char *addr)
{
    unsigned char a[16];
    static const unsigned char v6_loopback[16] = {[15] = 1};
    static const unsigned char v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (uv_inet_pton(AF_INET, addr, a) == 0)
        return a[0] == 127;
    if (uv_inet_pton(AF_INET6, addr, a) == 0)
        return memcmp(a, v6_loopback, 16) == 0 || (memcmp(a, v4_mapped, 12) == 0 && a[12] == 127);
    return 0;
}

/*
 * Nothing is logged until both ports listen and the ready file is written:
 * a start that fails prints its one reason to stderr and nothing else.
 */
int hr__server_start(hr_server_t *s)
{
    /* One listener per transport; a new front end is one more row. */
    struct {
        const hr_transport_t *tp;
        int port;
    } want[] = {{&hr__tcp_transport, (int)s->cfg.port}, {hr__ws_transport, (int)s->cfg.ws_port}};
    int r = 0;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]) && r == 0; i++)
        if (want[i].tp)
            r = listen_on(s, &s->listeners[s->nlisteners++], want[i].tp, want[i].port);
    if (r == 0 && *s->cfg.ready_file && write_ready_file(s) != 0)
        r = -1;
    if (r != 0) {
        close_handles(s);
        return r;
    }
    uint64_t sweep = (uint64_t)s->cfg.heartbeat_ms / 4;
    if (sweep > SWEEP_MS_MAX)
        sweep = SWEEP_MS_MAX;
    if (sweep < 10)
        sweep = 10;
    uv_timer_start(&s->sweep, on_sweep, sweep, sweep);
    /* A worker drains when its primary says so (SIGTERM): a terminal's Ctrl-C reaches the
     * whole process group, and a second signal would mean "close everything now". */
    if (s->nworkers <= 1)
        uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sighup, on_signal, SIGHUP);
    for (int i = 0; i < s->nlisteners; i++)
        HR_LOG(HR_LOG_INFO, 0, "listening: %s on %s:%d%s", s->listeners[i].tp->name, s->cfg.bind,
               s->listeners[i].port, s->listeners[i].tls ? " (TLS)" : "");
    if (!s->auth && !is_loopback(s->cfg.bind))
        HR_LOG(HR_LOG_WARN, 0,
               "bind %s is not loopback and authentication is off: any client that can reach "
               "these ports may publish and subscribe to every topic (set auth-tokens-file or "
               "a jwt-* key, or bind 127.0.0.1 behind a TLS proxy: see docs/security.md)",
               s->cfg.bind);
    return 0;
}

void hr__server_shutdown(hr_server_t *s)
{
    if (!s->shutting_down) {
        s->shutting_down = 1;
        for (int i = 0; i < s->nlisteners; i++)
            close_listener(&s->listeners[i]);
        for (hr_conn_t *c = s->conns; c; c = c->next)
            hr__conn_fail(c, HR_ESHUTDOWN, "server shutting down");
        uv_timer_start(&s->shutdown_timer, on_shutdown_timer, (uint64_t)s->cfg.shutdown_timeout_ms,
                       0);
    }
    if (s->nconns)
        return; /* called again from the last connection's close */
    HR_LOG(HR_LOG_INFO, 0, "every client drained; exiting");
    close_handles(s);
}

void hr__server_destroy(hr_server_t *s)
{
    hr__presence_destroy(s);
    hr__auth_destroy(s);
    hr__limits_destroy(s);
    hr__proxy_destroy(s);
    hr__index_destroy(&s->index);
    hr__map_destroy(&s->conns_by_id);
    hr__engine_destroy(s->engine);
    s->engine = NULL;
    hr_buf_destroy(&s->scratch);
    hr_buf_destroy(&s->xbuf);
    hr__policy_destroy(s);
    hr__pipeline_destroy(s);
    hr__tls_destroy(s);
    hr__oq_cache_release();
}
