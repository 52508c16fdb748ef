/* SPDX-License-Identifier: MIT */
/* libherald asynchronous client: options, URL, lifecycle (new, close, drain) and accessors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"

/* ---- small helpers ------------------------------------------------------ */

uint64_t hr__rand(hr_client_t *c)
{
    /* xorshift64*: jitter and inbox names need spread, not secrecy. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ULL;
}

char *hr__strdup(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- options ------------------------------------------------------------ */

void hr_client_opts_init(hr_client_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->echo = 1;
    o->connect_timeout_ms = 5000;
    o->request_timeout_ms = 5000;
    o->ping_interval_ms = 30000;
    o->max_pings_out = 2;
    o->reconnect = 1;
    o->max_reconnect = 60;
    o->reconnect_wait_ms = 50;
    o->reconnect_wait_max_ms = 2000;
    o->reconnect_jitter = 0.2;
    o->reconnect_buf_bytes = 8u << 20;
    o->max_out_bytes = 64u << 20;
    o->pending_msgs_limit = 65536;
    o->pending_bytes_limit = 64u << 20;
    o->deliver_batch = 1024;
}

static const hr__transport_t *const transports[] = {&hr__tcp_transport, &hr__ws_transport,
                                                    &hr__tls_transport, &hr__wss_transport};

/*
 * Accepts tcp://host[:port], host[:port], ws://host[:port][/path] and their
 * TLS forms tls:// and wss://, with IPv6 literals in brackets. The port
 * defaults to the transport's (7400 for tcp and tls, 7401 for ws and wss).
 */
static int parse_url(hr_client_t *c, const char *url)
{
    char auth[300];
    const char *p = url ? url : "tcp://127.0.0.1:7400";
    const char *sep = strstr(p, "://");
    c->tp = &hr__tcp_transport;
    if (sep) {
        size_t sn = (size_t)(sep - p);
        c->tp = NULL;
        for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++)
            if (strlen(transports[i]->scheme) == sn && strncmp(p, transports[i]->scheme, sn) == 0)
                c->tp = transports[i];
        if (!c->tp)
            return HR_EURL;
        p = sep + 3;
    }
    long port = c->tp->default_port;
    const char *slash = strchr(p, '/');
    size_t an = slash ? (size_t)(slash - p) : strlen(p);
    if (an == 0 || an >= sizeof(auth) || (slash && !c->tp->has_path))
        return HR_EURL;
    memcpy(auth, p, an);
    auth[an] = '\0';
    char *host = auth, *rest;
    if (auth[0] == '[') {
        char *rb = strchr(auth, ']');
        if (!rb)
            return HR_EURL;
        *rb = '\0';
        host = auth + 1;
        rest = rb + 1;
    } else {
        rest = strchr(auth, ':');
        if (rest && strchr(rest + 1, ':'))
            return HR_EURL; /* an IPv6 literal needs brackets */
        rest = rest ? rest : auth + an;
    }
    if (*rest == ':') {
        char *e;
        *rest++ = '\0';
        port = strtol(rest, &e, 10);
        if (e == rest || *e != '\0' || port <= 0 || port > 65535)
            return HR_EURL;
    } else if (*rest != '\0') {
        return HR_EURL;
    }
    if (*host == '\0' || strchr(host, ' '))
        return HR_EURL;
    c->host = hr__strdup(host);
    c->path = hr__strdup(slash ? slash : "/");
    if (!c->host || !c->path)
        return HR_ENOMEM;
    c->port = (int)port;
    return HR_OK;
}

/* ---- close -------------------------------------------------------------- */

/*
 * The last step of closing, outside any other callback. Messages that had
 * arrived are still delivered when the client gave up on its own (the
 * broker closed and reconnecting is off or exhausted); after
 * hr_client_close() they are dropped, as documented.
 */
static void finalize(hr_client_t *c)
{
    hr_message_t *m;
    while ((m = hr__deliver_next(c)) != NULL) {
        hr_sub_t *s = m->qsub;
        if (!c->user_closed && !s->dead) {
            s->delivered++;
            s->cb(c, s, m, s->arg);
        }
        hr_message_unref(&m);
        hr__sub_decref(s);
    }
    hr__ops_finish(c, HR_ECLOSED, NULL, NULL);
    if (c->draining && c->drain_cb) {
        hr_done_cb cb = c->drain_cb;
        c->drain_cb = NULL;
        cb(c, c->close_status ? c->close_status : HR_ECLOSED, c->drain_arg);
    }
    hr_sub_t *s = c->subs_head;
    while (s) {
        hr_sub_t *next = s->next;
        s->dead = 1;
        hr__sub_decref(s);
        s = next;
    }
    c->subs_head = c->subs_tail = NULL;
    hr__event(c, HR_EVENT_CLOSED, c->close_status);
    free(c->subs_hash);
    hr_buf_destroy(&c->in);
    hr_buf_destroy(&c->out);
    hr_buf_destroy(&c->pend);
    hr_buf_destroy(&c->frag);
    free(c->name);
    free(c->token);
    free(c->host);
    free(c->path);
    free(c->tls_name);
    hr__tls_client_free(c);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    hr_client_t *c = h->data;
    if (--c->handles_open == 0)
        finalize(c);
}

/*
 * Closing is asynchronous: handles close, and the final callbacks (failed
 * ops, CLOSED) run from the last close callback, outside any user callback.
 */
void hr__client_begin_close(hr_client_t *c, int status)
{
    if (c->state == HR_STATE_CLOSING)
        return;
    c->state = HR_STATE_CLOSING;
    c->close_status = status;
    hr__conn_detach(c);
    if (c->gai) {
        c->gai->data = NULL;
        uv_cancel((uv_req_t *)c->gai);
        c->gai = NULL;
    }
    uv_close((uv_handle_t *)&c->t_reconnect, handle_closed);
    uv_close((uv_handle_t *)&c->t_connect, handle_closed);
    uv_close((uv_handle_t *)&c->t_ping, handle_closed);
    uv_close((uv_handle_t *)&c->t_deadline, handle_closed);
    uv_close((uv_handle_t *)&c->t_drain, handle_closed);
    uv_close((uv_handle_t *)&c->idle, handle_closed);
    uv_close((uv_handle_t *)&c->prep, handle_closed);
}

void hr_client_close(hr_client_t *c)
{
    if (c && c->state != HR_STATE_CLOSING) {
        c->user_closed = 1;
        hr__client_begin_close(c, HR_OK);
    }
}

static void drain_timeout_cb(uv_timer_t *t)
{
    hr_client_t *c = t->data;
    hr_done_cb cb = c->drain_cb;
    c->drain_cb = NULL;
    if (cb)
        cb(c, HR_ETIMEDOUT, c->drain_arg);
    hr__client_begin_close(c, HR_OK);
}

void hr__drain_check(hr_client_t *c)
{
    if (!c->draining || c->state == HR_STATE_CLOSING)
        return;
    if (!hr__connected(c) || !c->drain_ponged || c->q_head || c->ops_head || c->pend.len ||
        c->out.len || (c->conn && c->conn->writing))
        return;
    hr_done_cb cb = c->drain_cb;
    c->drain_cb = NULL;
    if (cb)
        cb(c, HR_OK, c->drain_arg);
    hr__client_begin_close(c, HR_OK);
}

/*
 * On the wire a drain is an UNSUB for every subscription (none for a refused
 * one: the broker never made it) and a PING; its PONG means the broker sent
 * everything it will send. Sent again on a new connection.
 */
void hr__drain_send(hr_client_t *c)
{
    for (hr_sub_t *s = c->subs_head; s; s = s->next)
        if (!s->internal && !s->drained && !s->dead) {
            if (!s->refused)
                hr__send_unsub(c, s->sid);
            s->drained = 1;
        }
    c->drain_ponged = 0;
    c->drain_ping = ++c->ping_id;
    hr__send_ping(c, c->drain_ping);
}

int hr_client_drain(hr_client_t *c, uint32_t timeout_ms, hr_done_cb cb, void *arg)
{
    if (c->draining || c->state == HR_STATE_CLOSING)
        return HR_ECLOSED;
    c->draining = 1;
    c->state = HR_STATE_DRAINING;
    c->drain_cb = cb;
    c->drain_arg = arg;
    uv_timer_start(&c->t_drain, drain_timeout_cb, timeout_ms ? timeout_ms : c->o.request_timeout_ms,
                   0);
    if (hr__connected(c))
        hr__drain_send(c);
    return HR_OK;
}

/* ---- public: lifecycle -------------------------------------------------- */

int hr_client_new(uv_loop_t *loop, const hr_client_opts_t *opts, hr_client_t **out)
{
    hr_client_opts_t def;
    if (!loop || !out)
        return HR_EINVAL;
    if (!opts) {
        hr_client_opts_init(&def);
        opts = &def;
    }
    if (opts->reconnect_jitter < 0 || opts->reconnect_jitter > 1 || !opts->deliver_batch ||
        !opts->pending_msgs_limit || !opts->pending_bytes_limit)
        return HR_EINVAL;
    hr_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return HR_ENOMEM;
    c->loop = loop;
    c->o = *opts;
    int r = parse_url(c, opts->url);
    if (r != HR_OK) {
        free(c->host);
        free(c->path);
        free(c);
        return r;
    }
    c->name = hr__strdup(opts->name);
    c->token = hr__strdup(opts->token);
    c->tls_name = hr__strdup(opts->tls_server_name);
    if ((opts->name && !c->name) || (opts->token && !c->token) ||
        (opts->tls_server_name && !c->tls_name))
        r = HR_ENOMEM;
    else if (opts->tls_verify < HR_TLS_VERIFY_FULL || opts->tls_verify > HR_TLS_VERIFY_NONE)
        r = HR_EINVAL;
    else if (c->tp->secure)
        r = hr__tls_ctx_new(opts, c->tp->has_path, &c->tls_ctx);
    if (r != HR_OK) {
        free(c->name);
        free(c->token);
        free(c->tls_name);
        free(c->host);
        free(c->path);
        free(c);
        return r;
    }
    /* The files were read; the server name is kept in tls_name. */
    c->o.url = c->o.name = c->o.token = NULL;
    c->o.tls_ca_file = c->o.tls_ca_dir = c->o.tls_server_name = NULL;
    c->o.tls_cert_file = c->o.tls_key_file = NULL;
    c->state = HR_STATE_CONNECTING;
    hr_buf_init(&c->in);
    hr_buf_init(&c->out);
    hr_buf_init(&c->pend);
    hr_buf_init(&c->frag);
    uint64_t seed = 0;
    if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0 || !seed)
        seed = uv_hrtime() ^ (uint64_t)(uintptr_t)c;
    c->rng = seed | 1;
    uv_timer_init(loop, &c->t_reconnect);
    uv_timer_init(loop, &c->t_connect);
    uv_timer_init(loop, &c->t_ping);
    uv_timer_init(loop, &c->t_deadline);
    uv_timer_init(loop, &c->t_drain);
    uv_idle_init(loop, &c->idle);
    uv_prepare_init(loop, &c->prep);
    c->t_reconnect.data = c->t_connect.data = c->t_ping.data = c->t_deadline.data = c;
    c->t_drain.data = c->idle.data = c->prep.data = c;
    c->handles_open = 7;
    *out = c;
    hr__conn_start(c);
    return HR_OK;
}

int hr_client_state(const hr_client_t *c)
{
    return c->state;
}

uint64_t hr_client_id(const hr_client_t *c)
{
    return c->client_id;
}

uint64_t hr_client_max_payload(const hr_client_t *c)
{
    return c->max_payload;
}

const char *hr_client_epoch(const hr_client_t *c)
{
    return c->has_epoch ? c->epoch : NULL;
}

uv_loop_t *hr_client_loop(const hr_client_t *c)
{
    return c->loop;
}

void hr_client_stats(const hr_client_t *c, hr_client_stats_t *out)
{
    *out = c->stats;
}
