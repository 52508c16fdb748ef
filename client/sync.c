/* SPDX-License-Identifier: MIT */
/* libherald blocking API: an hr_client_t on a private loop thread, driven through uv_async. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/*
 * Every call becomes a command: allocated by the calling thread, queued
 * under `mu`, executed on the loop thread (woken by uv_async_send), and
 * completed under `mu`. A command is shared by two parties (the caller and
 * the loop thread) and freed by whichever drops the last reference, so a
 * caller that gives up on a timeout never leaves the loop thread holding a
 * dangling pointer. Command inputs (topic, payload) are copied into it.
 */
enum cmd_kind {
    CMD_PUBLISH = 1,
    CMD_PUBLISH_ACKED,
    CMD_SUBSCRIBE,
    CMD_UNSUBSCRIBE,
    CMD_REQUEST,
    CMD_FLUSH,
    CMD_CLOSE
};

typedef struct cmd_s {
    struct cmd_s *next;
    int kind;
    int refs; /* under s->mu */
    int done; /* under s->mu */
    int status;
    uv_cond_t cv;
    /* inputs */
    char *topic;
    void *data;
    size_t len;
    uint32_t timeout_ms;
    int drain;
    char *reply;
    hr_header_t *headers;
    size_t nheaders;
    hr_sub_opts_t so;
    char *queue;
    char *epoch;
    hr_sync_sub_t *ssub;
    size_t est; /* CMD_PUBLISH: bytes charged to s->pub_bytes */
    /* outputs */
    uint64_t seq;
    hr_message_t *msg;
} cmd_t;

struct hr_sync_s {
    uv_loop_t loop;
    uv_async_t async;
    uv_thread_t thread;
    hr_client_t *c; /* loop thread only; NULL once the client closed */
    uv_mutex_t mu;
    uv_cond_t cv; /* connection result, state changes */
    cmd_t *q_head, *q_tail;
    int state;            /* under mu: mirror of hr_client_state() */
    int first_status;     /* under mu: result of the first connection */
    int first_done;       /* under mu */
    int client_gone;      /* under mu */
    int closing;          /* loop thread */
    hr_sync_sub_t *subs;  /* under mu */
    uint64_t max_payload; /* under mu: from the last WELCOME */
    size_t pub_bytes;     /* under mu: bytes of publishes queued, not yet executed */
    size_t pub_limit;     /* past it hr_sync_publish() waits */
    hr_state_cb user_state;
    hr_error_cb user_error;
    void *user_arg;
};

struct hr_sync_sub_s {
    hr_sync_t *s;
    hr_sub_t *sub;              /* loop thread only */
    hr_sync_sub_t *next, *prev; /* s->subs, under mu */
    uv_cond_t cv;
    hr_message_t *head, *tail; /* under mu */
    size_t n, bytes, lim_msgs, lim_bytes;
    uint64_t dropped;
    int slow;
    int closed; /* under mu */
};

/* ---- commands ----------------------------------------------------------- */

static void cmd_unref_locked(hr_sync_t *s, cmd_t *cmd)
{
    if (--cmd->refs > 0)
        return;
    hr_message_unref(&cmd->msg);
    uv_cond_destroy(&cmd->cv);
    free(cmd->topic);
    free(cmd->data);
    free(cmd->reply);
    free(cmd->queue);
    free(cmd->epoch);
    if (cmd->headers) {
        for (size_t i = 0; i < cmd->nheaders; i++) {
            free((char *)cmd->headers[i].key);
            free((char *)cmd->headers[i].value);
        }
        free(cmd->headers);
    }
    free(cmd);
}

static cmd_t *cmd_new(int kind)
{
    cmd_t *cmd = calloc(1, sizeof(*cmd));
    if (!cmd)
        return NULL;
    if (uv_cond_init(&cmd->cv) != 0) {
        free(cmd);
        return NULL;
    }
    cmd->kind = kind;
    cmd->refs = 1;
    return cmd;
}

static char *dup_or_null(const char *p, int *oom)
{
    if (!p)
        return NULL;
    size_t n = strlen(p) + 1;
    char *d = malloc(n);
    if (!d)
        *oom = 1;
    else
        memcpy(d, p, n);
    return d;
}

static int cmd_set_payload(cmd_t *cmd, const char *topic, const void *data, size_t len)
{
    int oom = 0;
    cmd->topic = dup_or_null(topic, &oom);
    if (len) {
        cmd->data = malloc(len);
        if (!cmd->data)
            return HR_ENOMEM;
        memcpy(cmd->data, data, len);
    }
    cmd->len = len;
    return oom ? HR_ENOMEM : HR_OK;
}

/* Completes `cmd` on the loop thread and drops the loop's reference. */
static void cmd_finish(hr_sync_t *s, cmd_t *cmd, int status)
{
    uv_mutex_lock(&s->mu);
    cmd->status = status;
    cmd->done = 1;
    uv_cond_signal(&cmd->cv);
    cmd_unref_locked(s, cmd);
    uv_mutex_unlock(&s->mu);
}

static uint64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? 0 : uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
}

/* Waits on `cv` (with `mu` held) until `*flag` or the deadline (0: none). */
static int wait_until(uv_cond_t *cv, uv_mutex_t *mu, const int *flag, uint64_t deadline)
{
    while (!*flag) {
        if (!deadline) {
            uv_cond_wait(cv, mu);
            continue;
        }
        uint64_t now = uv_hrtime();
        if (now >= deadline)
            return HR_ETIMEDOUT;
        uv_cond_timedwait(cv, mu, deadline - now);
    }
    return HR_OK;
}

/* Queues `cmd` for the loop thread, releases `mu` and wakes the loop. */
static void post_locked(hr_sync_t *s, cmd_t *cmd)
{
    if (s->q_tail)
        s->q_tail->next = cmd;
    else
        s->q_head = cmd;
    s->q_tail = cmd;
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

/*
 * Hands `cmd` to the loop thread and waits for its result, or until
 * `timeout_ms` passes (then the caller's reference is dropped and the
 * result, when it comes, is discarded). Consumes the caller's reference;
 * on HR_OK `*msg`/`*seq` receive the outputs.
 */
static int run_cmd(hr_sync_t *s, cmd_t *cmd, int timeout_ms, hr_message_t **msg, uint64_t *seq)
{
    uint64_t deadline = deadline_of(timeout_ms);
    uv_mutex_lock(&s->mu);
    if (s->client_gone && cmd->kind != CMD_CLOSE && cmd->kind != CMD_UNSUBSCRIBE) {
        cmd_unref_locked(s, cmd);
        uv_mutex_unlock(&s->mu);
        return HR_ECLOSED;
    }
    cmd->refs = 2;
    post_locked(s, cmd);

    uv_mutex_lock(&s->mu);
    int r = wait_until(&cmd->cv, &s->mu, &cmd->done, deadline);
    if (r == HR_OK) {
        r = cmd->status;
        if (msg) {
            *msg = cmd->msg;
            cmd->msg = NULL;
        }
        if (seq)
            *seq = cmd->seq;
    }
    cmd_unref_locked(s, cmd);
    uv_mutex_unlock(&s->mu);
    return r;
}

/* ---- loop thread -------------------------------------------------------- */

static void ack_cb(hr_client_t *c, int status, uint64_t seq, void *arg)
{
    cmd_t *cmd = arg;
    cmd->seq = seq;
    cmd_finish(hr_client_loop(c)->data, cmd, status);
}

static void req_cb(hr_client_t *c, int status, hr_message_t *reply, void *arg)
{
    cmd_t *cmd = arg;
    if (reply)
        cmd->msg = hr_message_ref(reply);
    cmd_finish(hr_client_loop(c)->data, cmd, status);
}

static void flush_cb(hr_client_t *c, int status, void *arg)
{
    cmd_finish(hr_client_loop(c)->data, arg, status);
}

/* A refused subscription is already gone from the client: forget it, so no UNSUB follows. */
static void confirm_cb(hr_client_t *c, hr_sub_t *sub, int status, void *arg)
{
    cmd_t *cmd = arg;
    if (status != HR_OK)
        cmd->ssub->sub = NULL;
    cmd_finish(hr_client_loop(c)->data, cmd, status);
}

/* Queues a message for hr_sync_next(), within the subscription's limits. */
static void sync_msg_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    hr_sync_sub_t *ss = arg;
    hr_sync_t *s = ss->s;
    int notify = 0;
    uv_mutex_lock(&s->mu);
    if (ss->n >= ss->lim_msgs || ss->bytes + m->len > ss->lim_bytes) {
        ss->dropped++;
        notify = !ss->slow;
        ss->slow = 1;
        uv_mutex_unlock(&s->mu);
        hr__sub_dropped(sub, notify);
        return;
    }
    hr_message_ref(m);
    m->qnext = NULL;
    if (ss->tail)
        ss->tail->qnext = m;
    else
        ss->head = m;
    ss->tail = m;
    ss->n++;
    ss->bytes += m->len;
    uv_cond_signal(&ss->cv);
    uv_mutex_unlock(&s->mu);
}

/*
 * A fire-and-forget publish was executed (or refused): release its share of
 * the queue bound, wake callers waiting on it, and report a refusal to the
 * error callback since nobody waits for the status.
 */
static void publish_done(hr_sync_t *s, cmd_t *cmd, int r)
{
    if (r != HR_OK && s->c && s->user_error) {
        char d[128];
        snprintf(d, sizeof(d), "publish on %.80s refused: %s", cmd->topic, hr_strerror(r));
        s->user_error(s->c, r, NULL, d, s->user_arg);
    }
    uv_mutex_lock(&s->mu);
    s->pub_bytes -= cmd->est;
    uv_cond_broadcast(&s->cv);
    cmd->done = 1;
    cmd_unref_locked(s, cmd);
    uv_mutex_unlock(&s->mu);
}

static void exec_cmd(hr_sync_t *s, cmd_t *cmd)
{
    hr_client_t *c = s->c;
    hr_publish_opts_t po;
    int r;
    if (!c && cmd->kind == CMD_PUBLISH) {
        publish_done(s, cmd, HR_ECLOSED);
        return;
    }
    if (!c && cmd->kind != CMD_CLOSE && cmd->kind != CMD_UNSUBSCRIBE) {
        cmd_finish(s, cmd, HR_ECLOSED);
        return;
    }
    switch (cmd->kind) {
    case CMD_PUBLISH:
    case CMD_PUBLISH_ACKED:
        memset(&po, 0, sizeof(po));
        po.reply = cmd->reply;
        po.headers = cmd->headers;
        po.nheaders = cmd->nheaders;
        if (cmd->kind == CMD_PUBLISH_ACKED) {
            po.on_ack = ack_cb;
            po.arg = cmd;
        }
        r = hr_client_publish(c, cmd->topic, cmd->data, cmd->len, &po);
        if (cmd->kind == CMD_PUBLISH)
            publish_done(s, cmd, r);
        else if (r != HR_OK)
            cmd_finish(s, cmd, r);
        break;
    case CMD_SUBSCRIBE:
        cmd->so.on_confirm = confirm_cb;
        cmd->so.confirm_arg = cmd;
        r = hr_client_subscribe(c, cmd->topic, &cmd->so, sync_msg_cb, cmd->ssub, &cmd->ssub->sub);
        if (r != HR_OK)
            cmd_finish(s, cmd, r);
        break;
    case CMD_UNSUBSCRIBE:
        if (c && cmd->ssub->sub)
            hr_sub_unsubscribe(cmd->ssub->sub);
        cmd->ssub->sub = NULL;
        cmd_finish(s, cmd, HR_OK);
        break;
    case CMD_REQUEST:
        r = hr_client_request(c, cmd->topic, cmd->data, cmd->len, cmd->timeout_ms, req_cb, cmd);
        if (r != HR_OK)
            cmd_finish(s, cmd, r);
        break;
    case CMD_FLUSH:
        r = hr_client_flush(c, flush_cb, cmd);
        if (r != HR_OK)
            cmd_finish(s, cmd, r);
        break;
    case CMD_CLOSE:
        s->closing = 1;
        if (!c) {
            uv_close((uv_handle_t *)&s->async, NULL);
        } else if (!cmd->drain || hr_client_drain(c, cmd->timeout_ms, NULL, NULL) != HR_OK) {
            hr_client_close(c);
        }
        cmd_finish(s, cmd, HR_OK);
        break;
    }
}

static void async_cb(uv_async_t *h)
{
    hr_sync_t *s = h->data;
    uv_mutex_lock(&s->mu);
    cmd_t *cmd = s->q_head;
    s->q_head = s->q_tail = NULL;
    uv_mutex_unlock(&s->mu);
    while (cmd) {
        cmd_t *next = cmd->next;
        cmd->next = NULL;
        exec_cmd(s, cmd);
        cmd = next;
    }
}

static void sync_state_cb(hr_client_t *c, int ev, int status, void *arg)
{
    hr_sync_t *s = arg;
    if (s->user_state)
        s->user_state(c, ev, status, s->user_arg);
    uv_mutex_lock(&s->mu);
    if (ev == HR_EVENT_CONNECTED || ev == HR_EVENT_RECONNECTED)
        s->max_payload = hr_client_max_payload(c);
    if (!s->first_done && (ev == HR_EVENT_CONNECTED || ev == HR_EVENT_CLOSED)) {
        s->first_done = 1;
        s->first_status = ev == HR_EVENT_CONNECTED ? HR_OK : (status ? status : HR_ECLOSED);
    }
    if (ev == HR_EVENT_CLOSED) {
        s->client_gone = 1;
        for (hr_sync_sub_t *ss = s->subs; ss; ss = ss->next) {
            ss->closed = 1;
            uv_cond_broadcast(&ss->cv);
        }
    }
    s->state = ev == HR_EVENT_CLOSED ? HR_STATE_CLOSING : hr_client_state(c);
    uv_cond_broadcast(&s->cv);
    uv_mutex_unlock(&s->mu);
    if (ev == HR_EVENT_CLOSED) {
        s->c = NULL;
        if (s->closing)
            uv_close((uv_handle_t *)&s->async, NULL);
    }
}

static void sync_error_cb(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    hr_sync_t *s = arg;
    if (s->user_error)
        s->user_error(c, status, sub, detail, s->user_arg);
}

static void thread_main(void *arg)
{
    hr_sync_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* ---- public ------------------------------------------------------------- */

static void sync_free(hr_sync_t *s)
{
    uv_loop_close(&s->loop);
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
    free(s);
}

int hr_sync_connect(const hr_client_opts_t *opts, hr_sync_t **out)
{
    hr_client_opts_t o;
    if (!out)
        return HR_EINVAL;
    if (opts)
        o = *opts;
    else
        hr_client_opts_init(&o);
    hr_sync_t *s = calloc(1, sizeof(*s));
    if (!s)
        return HR_ENOMEM;
    int r = uv_loop_init(&s->loop);
    if (r < 0) {
        free(s);
        return r;
    }
    s->loop.data = s;
    uv_mutex_init(&s->mu);
    uv_cond_init(&s->cv);
    uv_async_init(&s->loop, &s->async, async_cb);
    s->async.data = s;
    s->user_state = o.on_state;
    s->user_error = o.on_error;
    s->user_arg = o.arg;
    s->pub_limit = o.reconnect_buf_bytes;
    o.on_state = sync_state_cb;
    o.on_error = sync_error_cb;
    o.arg = s;
    s->state = HR_STATE_CONNECTING;
    r = hr_client_new(&s->loop, &o, &s->c);
    if (r == HR_OK)
        r = uv_thread_create(&s->thread, thread_main, s);
    if (r != HR_OK) {
        /* Nothing runs yet: close what exists on this thread. */
        if (s->c)
            hr_client_close(s->c);
        s->closing = 1;
        if (!s->c)
            uv_close((uv_handle_t *)&s->async, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        sync_free(s);
        return r;
    }
    uv_mutex_lock(&s->mu);
    wait_until(&s->cv, &s->mu, &s->first_done, 0);
    r = s->first_status;
    uv_mutex_unlock(&s->mu);
    if (r != HR_OK) {
        hr_sync_close(&s, 0);
        return r;
    }
    *out = s;
    return HR_OK;
}

static int copy_headers(cmd_t *cmd, const hr_publish_opts_t *opts)
{
    int oom = 0;
    cmd->reply = dup_or_null(opts->reply, &oom);
    if (opts->nheaders) {
        cmd->headers = calloc(opts->nheaders, sizeof(hr_header_t));
        if (!cmd->headers)
            return HR_ENOMEM;
        cmd->nheaders = opts->nheaders;
        for (size_t i = 0; i < opts->nheaders; i++) {
            if (!opts->headers[i].key || !opts->headers[i].value)
                return HR_EINVAL;
            cmd->headers[i].key = dup_or_null(opts->headers[i].key, &oom);
            cmd->headers[i].value = dup_or_null(opts->headers[i].value, &oom);
        }
    }
    return oom ? HR_ENOMEM : HR_OK;
}

/* Frees a command the loop thread never saw. */
static int cmd_abort(hr_sync_t *s, cmd_t *cmd, int r)
{
    uv_mutex_lock(&s->mu);
    cmd_unref_locked(s, cmd);
    uv_mutex_unlock(&s->mu);
    return r;
}

/*
 * Publishing does not wait for the loop thread: the publish is checked here,
 * queued, and executed in queue order (so one thread's publishes keep their
 * order, and a later flush covers them). The queue is bounded in bytes;
 * past the bound the caller waits for the loop thread to catch up.
 */
int hr_sync_publish(hr_sync_t *s, const char *topic, const void *data, size_t len,
                    const hr_publish_opts_t *opts)
{
    size_t est;
    if (!s || !topic)
        return HR_EINVAL;
    uv_mutex_lock(&s->mu);
    uint64_t max_payload = s->max_payload;
    uv_mutex_unlock(&s->mu);
    int r =
        hr__publish_check(topic, data, len, opts ? opts->reply : NULL, opts ? opts->headers : NULL,
                          opts ? opts->nheaders : 0, max_payload, &est);
    if (r != HR_OK)
        return r;
    cmd_t *cmd = cmd_new(CMD_PUBLISH);
    if (!cmd)
        return HR_ENOMEM;
    r = cmd_set_payload(cmd, topic, data, len);
    if (r == HR_OK && opts)
        r = copy_headers(cmd, opts);
    if (r != HR_OK)
        return cmd_abort(s, cmd, r);
    cmd->est = est;
    uv_mutex_lock(&s->mu);
    while (s->pub_bytes && s->pub_bytes + est > s->pub_limit && !s->client_gone)
        uv_cond_wait(&s->cv, &s->mu);
    if (s->client_gone) {
        cmd_unref_locked(s, cmd);
        uv_mutex_unlock(&s->mu);
        return HR_ECLOSED;
    }
    s->pub_bytes += est;
    post_locked(s, cmd);
    return HR_OK;
}

int hr_sync_publish_acked(hr_sync_t *s, const char *topic, const void *data, size_t len,
                          int timeout_ms, uint64_t *seq)
{
    if (!s || !topic || (!data && len))
        return HR_EINVAL;
    cmd_t *cmd = cmd_new(CMD_PUBLISH_ACKED);
    if (!cmd)
        return HR_ENOMEM;
    int r = cmd_set_payload(cmd, topic, data, len);
    if (r != HR_OK)
        return cmd_abort(s, cmd, r);
    return run_cmd(s, cmd, timeout_ms, NULL, seq);
}

int hr_sync_subscribe(hr_sync_t *s, const char *pattern, const hr_sub_opts_t *opts,
                      hr_sync_sub_t **out)
{
    if (!s || !pattern || !out)
        return HR_EINVAL;
    hr_sync_sub_t *ss = calloc(1, sizeof(*ss));
    cmd_t *cmd = cmd_new(CMD_SUBSCRIBE);
    if (!ss || !cmd) {
        free(ss);
        if (cmd)
            cmd_abort(s, cmd, 0);
        return HR_ENOMEM;
    }
    ss->s = s;
    uv_cond_init(&ss->cv);
    hr_client_opts_t d;
    hr_client_opts_init(&d);
    ss->lim_msgs =
        opts && opts->pending_msgs_limit ? opts->pending_msgs_limit : d.pending_msgs_limit;
    ss->lim_bytes =
        opts && opts->pending_bytes_limit ? opts->pending_bytes_limit : d.pending_bytes_limit;
    if (opts)
        cmd->so = *opts;
    /* The limits apply to the queue inside `ss`; the client's own per-turn
     * queue in front of it must not drop first. */
    cmd->so.pending_msgs_limit = SIZE_MAX;
    cmd->so.pending_bytes_limit = SIZE_MAX;
    int oom = 0;
    cmd->topic = dup_or_null(pattern, &oom);
    cmd->queue = opts ? dup_or_null(opts->queue, &oom) : NULL;
    cmd->so.queue = cmd->queue;
    cmd->epoch = opts ? dup_or_null(opts->epoch, &oom) : NULL;
    cmd->so.epoch = cmd->epoch;
    cmd->ssub = ss;
    if (oom) {
        uv_cond_destroy(&ss->cv);
        free(ss);
        return cmd_abort(s, cmd, HR_ENOMEM);
    }
    /* Link first so a CLOSED event that races the subscription marks it. */
    uv_mutex_lock(&s->mu);
    ss->next = s->subs;
    if (s->subs)
        s->subs->prev = ss;
    s->subs = ss;
    uv_mutex_unlock(&s->mu);
    int r = run_cmd(s, cmd, -1, NULL, NULL);
    if (r != HR_OK) {
        hr_sync_sub_t *tmp = ss;
        hr_sync_unsubscribe(&tmp);
        return r;
    }
    *out = ss;
    return HR_OK;
}

int hr_sync_next(hr_sync_sub_t *ss, int timeout_ms, hr_message_t **m)
{
    if (!ss || !m)
        return HR_EINVAL;
    hr_sync_t *s = ss->s;
    uint64_t deadline = deadline_of(timeout_ms);
    int r = HR_OK;
    uv_mutex_lock(&s->mu);
    while (!ss->head) {
        if (ss->closed) {
            r = HR_ECLOSED;
            break;
        }
        if (!deadline) {
            uv_cond_wait(&ss->cv, &s->mu);
            continue;
        }
        uint64_t now = uv_hrtime();
        if (now >= deadline) {
            r = HR_ETIMEDOUT;
            break;
        }
        uv_cond_timedwait(&ss->cv, &s->mu, deadline - now);
    }
    if (ss->head) {
        hr_message_t *msg = ss->head;
        ss->head = msg->qnext;
        if (!ss->head)
            ss->tail = NULL;
        msg->qnext = NULL;
        ss->n--;
        ss->bytes -= msg->len;
        if (ss->n <= ss->lim_msgs / 2 && ss->bytes <= ss->lim_bytes / 2)
            ss->slow = 0;
        *m = msg;
        r = HR_OK;
    }
    uv_mutex_unlock(&s->mu);
    return r;
}

uint64_t hr_sync_dropped(const hr_sync_sub_t *ss)
{
    uv_mutex_lock(&ss->s->mu);
    uint64_t d = ss->dropped;
    uv_mutex_unlock(&ss->s->mu);
    return d;
}

static void sync_sub_free(hr_sync_t *s, hr_sync_sub_t *ss)
{
    /* Called with s->mu held; the loop thread no longer references `ss`. */
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        s->subs = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    while (ss->head) {
        hr_message_t *m = ss->head;
        ss->head = m->qnext;
        hr_message_unref(&m);
    }
    uv_cond_destroy(&ss->cv);
    free(ss);
}

int hr_sync_unsubscribe(hr_sync_sub_t **ssp)
{
    if (!ssp || !*ssp)
        return HR_EINVAL;
    hr_sync_sub_t *ss = *ssp;
    hr_sync_t *s = ss->s;
    *ssp = NULL;
    cmd_t *cmd = cmd_new(CMD_UNSUBSCRIBE);
    int r = HR_ENOMEM;
    if (cmd) {
        cmd->ssub = ss;
        r = run_cmd(s, cmd, -1, NULL, NULL);
    }
    uv_mutex_lock(&s->mu);
    sync_sub_free(s, ss);
    uv_mutex_unlock(&s->mu);
    return r;
}

int hr_sync_request(hr_sync_t *s, const char *topic, const void *data, size_t len, int timeout_ms,
                    hr_message_t **reply)
{
    if (!s || !topic || !reply || (!data && len))
        return HR_EINVAL;
    cmd_t *cmd = cmd_new(CMD_REQUEST);
    if (!cmd)
        return HR_ENOMEM;
    int r = cmd_set_payload(cmd, topic, data, len);
    if (r != HR_OK)
        return cmd_abort(s, cmd, r);
    cmd->timeout_ms = timeout_ms < 0 ? UINT32_MAX : (timeout_ms ? (uint32_t)timeout_ms : 0);
    *reply = NULL;
    /* The loop side enforces the timeout; no need to abandon here. */
    return run_cmd(s, cmd, -1, reply, NULL);
}

int hr_sync_flush(hr_sync_t *s, int timeout_ms)
{
    if (!s)
        return HR_EINVAL;
    cmd_t *cmd = cmd_new(CMD_FLUSH);
    if (!cmd)
        return HR_ENOMEM;
    return run_cmd(s, cmd, timeout_ms, NULL, NULL);
}

int hr_sync_state(hr_sync_t *s)
{
    uv_mutex_lock(&s->mu);
    int st = s->state;
    uv_mutex_unlock(&s->mu);
    return st;
}

void hr_sync_close(hr_sync_t **sp, int drain)
{
    if (!sp || !*sp)
        return;
    hr_sync_t *s = *sp;
    *sp = NULL;
    cmd_t *cmd = cmd_new(CMD_CLOSE);
    if (cmd) {
        cmd->drain = drain;
        run_cmd(s, cmd, -1, NULL, NULL);
    }
    uv_thread_join(&s->thread);
    uv_mutex_lock(&s->mu);
    while (s->subs)
        sync_sub_free(s, s->subs);
    uv_mutex_unlock(&s->mu);
    sync_free(s);
}
