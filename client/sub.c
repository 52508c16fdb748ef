/* SPDX-License-Identifier: MIT */
/* libherald subscriptions: the sid table, resume state (seqs, epoch), the delivery queue. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"

static void idle_cb(uv_idle_t *h);

/* ---- the subscriptions table -------------------------------------------- */

static int is_wildcard(const char *p)
{
    for (const char *t = p; *t;) {
        const char *e = strchr(t, '.');
        size_t n = e ? (size_t)(e - t) : strlen(t);
        if (n == 1 && (*t == '*' || *t == '>'))
            return 1;
        if (!e)
            break;
        t = e + 1;
    }
    return 0;
}

static size_t hash_str(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

hr_sub_t *hr__sub_find(hr_client_t *c, uint64_t sid)
{
    if (!c->subs_buckets)
        return NULL;
    for (hr_sub_t *s = c->subs_hash[sid & (c->subs_buckets - 1)]; s; s = s->hnext)
        if (s->sid == sid)
            return s;
    return NULL;
}

static int sub_insert(hr_client_t *c, hr_sub_t *s)
{
    if (c->nsubs + 1 > c->subs_buckets) {
        size_t nb = c->subs_buckets ? c->subs_buckets * 2 : 16;
        hr_sub_t **h = calloc(nb, sizeof(*h));
        if (!h)
            return HR_ENOMEM;
        for (hr_sub_t *x = c->subs_head; x; x = x->next) {
            x->hnext = h[x->sid & (nb - 1)];
            h[x->sid & (nb - 1)] = x;
        }
        free(c->subs_hash);
        c->subs_hash = h;
        c->subs_buckets = nb;
    }
    s->hnext = c->subs_hash[s->sid & (c->subs_buckets - 1)];
    c->subs_hash[s->sid & (c->subs_buckets - 1)] = s;
    s->prev = c->subs_tail;
    s->next = NULL;
    if (c->subs_tail)
        c->subs_tail->next = s;
    else
        c->subs_head = s;
    c->subs_tail = s;
    c->nsubs++;
    return HR_OK;
}

void hr__sub_remove(hr_client_t *c, hr_sub_t *s)
{
    hr_sub_t **pp = &c->subs_hash[s->sid & (c->subs_buckets - 1)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->subs_head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        c->subs_tail = s->prev;
    c->nsubs--;
}

static void seqs_clear(hr_sub_t *s)
{
    for (size_t i = 0; i < s->nseqs_buckets; i++) {
        hr__seq_entry_t *e = s->seqs[i];
        while (e) {
            hr__seq_entry_t *n = e->next;
            free(e);
            e = n;
        }
    }
    free(s->seqs);
    s->seqs = NULL;
    s->nseqs_buckets = s->nseqs = 0;
    s->have_last = 0;
    s->last = 0;
}

static void sub_free(hr_sub_t *s)
{
    seqs_clear(s);
    free(s->pattern);
    free(s->queue);
    free(s->epoch_opt);
    hr_buf_destroy(&s->xopts);
    free(s->presence);
    free(s);
}

void hr__sub_decref(hr_sub_t *s)
{
    if (--s->refs == 0)
        sub_free(s);
}

/* Returns the entry for `topic`, creating it (last = 0) if needed; NULL on OOM. */
static hr__seq_entry_t *seq_get(hr_sub_t *s, const char *topic, size_t n, int create)
{
    if (s->nseqs_buckets) {
        for (hr__seq_entry_t *e = s->seqs[hash_str(topic, n) & (s->nseqs_buckets - 1)]; e;
             e = e->next)
            if (strncmp(e->topic, topic, n) == 0 && e->topic[n] == '\0')
                return e;
    }
    if (!create)
        return NULL;
    if (s->nseqs + 1 > s->nseqs_buckets * 2) {
        size_t nb = s->nseqs_buckets ? s->nseqs_buckets * 2 : 8;
        hr__seq_entry_t **h = calloc(nb, sizeof(*h));
        if (!h)
            return NULL;
        for (size_t i = 0; i < s->nseqs_buckets; i++) {
            hr__seq_entry_t *e = s->seqs[i];
            while (e) {
                hr__seq_entry_t *next = e->next;
                size_t b = hash_str(e->topic, strlen(e->topic)) & (nb - 1);
                e->next = h[b];
                h[b] = e;
                e = next;
            }
        }
        free(s->seqs);
        s->seqs = h;
        s->nseqs_buckets = nb;
    }
    hr__seq_entry_t *e = malloc(sizeof(*e) + n + 1);
    if (!e)
        return NULL;
    memcpy(e->topic, topic, n);
    e->topic[n] = '\0';
    e->last = 0;
    size_t b = hash_str(topic, n) & (s->nseqs_buckets - 1);
    e->next = s->seqs[b];
    s->seqs[b] = e;
    s->nseqs++;
    return e;
}

/* ---- SUB frames --------------------------------------------------------- */

static int send_sub(hr_client_t *c, hr_sub_t *s, hr_sub_fields_t *o)
{
    o->queue = hr__slice(s->queue);
    o->extra = (hr_slice_t){(const char *)s->xopts.base, s->xopts.len};
    o->nextra = s->nxopts;
    HR__ENCODE(&c->out, hr_enc_sub_ex(&c->out, s->sid, hr__slice(s->pattern), o));
    s->sent = 1;
    hr__want_flush(c);
    return HR_OK;
}

/* The SUB options the application asked for. */
static void first_sub_fields(const hr_sub_t *s, hr_sub_fields_t *o)
{
    memset(o, 0, sizeof(*o));
    o->has_since = s->has_since;
    o->since = s->since;
    o->has_last = s->has_last_n;
    o->last = s->last_n;
    o->epoch = s->epoch_opt ? hr__slice(s->epoch_opt) : (hr_slice_t){NULL, 0};
    o->presence = (hr_slice_t){s->presence, s->presence_len};
}

/* ---- delivery ----------------------------------------------------------- */

static void enqueue(hr_client_t *c, hr_sub_t *s, hr_message_t *m)
{
    m->qsub = s;
    m->qnext = NULL;
    s->refs++;
    s->pend_msgs++;
    s->pend_bytes += m->len;
    c->q_enq++;
    if (c->q_tail)
        c->q_tail->qnext = m;
    else
        c->q_head = m;
    c->q_tail = m;
    if (!uv_is_active((uv_handle_t *)&c->idle))
        uv_idle_start(&c->idle, idle_cb);
}

hr_message_t *hr__deliver_next(hr_client_t *c)
{
    hr_message_t *m = c->q_head;
    if (!m)
        return NULL;
    c->q_head = m->qnext;
    if (!c->q_head)
        c->q_tail = NULL;
    m->qnext = NULL;
    c->q_deq++;
    hr_sub_t *s = m->qsub;
    s->pend_msgs--;
    s->pend_bytes -= m->len;
    if (s->slow && s->pend_msgs <= s->lim_msgs / 2 && s->pend_bytes <= s->lim_bytes / 2)
        s->slow = 0;
    return m;
}

/*
 * Messages are delivered from an idle handle, at most deliver_batch per loop
 * turn, so that reading the socket continues while a slow callback runs:
 * what the callbacks cannot absorb accumulates in the per-subscription
 * pending counts, where the limits apply.
 */
static void idle_cb(uv_idle_t *h)
{
    hr_client_t *c = h->data;
    for (uint32_t n = 0; n < c->o.deliver_batch && c->state != HR_STATE_CLOSING; n++) {
        hr_message_t *m = hr__deliver_next(c);
        if (!m)
            break;
        hr_sub_t *s = m->qsub;
        m->qsub = NULL;
        if (!s->dead) {
            s->delivered++;
            s->cb(c, s, m, s->arg);
        }
        hr_message_unref(&m);
        hr__sub_decref(s);
    }
    if (!c->q_head)
        uv_idle_stop(h);
    if (c->flush_waiting && c->state != HR_STATE_CLOSING)
        hr__flush_delivered(c);
    hr__drain_check(c);
}

static void slow_consumer(hr_client_t *c, hr_sub_t *s)
{
    s->dropped++;
    c->stats.dropped++;
    if (!s->slow) {
        char d[HR__DETAIL_MAX];
        s->slow = 1;
        snprintf(d, sizeof(d), "slow consumer: pending limit of sid %llu reached, dropping",
                 (unsigned long long)s->sid);
        hr__report(c, HR_ESLOW, s, d);
    }
}

void hr__sub_dropped(hr_sub_t *sub, int notify)
{
    sub->dropped++;
    sub->c->stats.dropped++;
    if (notify) {
        char d[HR__DETAIL_MAX];
        snprintf(d, sizeof(d), "slow consumer: queue of sid %llu full, dropping",
                 (unsigned long long)sub->sid);
        hr__report(sub->c, HR_ESLOW, sub, d);
    }
}

/* ---- resume ------------------------------------------------------------- */

/* Remembers the epoch under which `s` last saw a seq (copied once per epoch change). */
static void note_epoch(hr_client_t *c, hr_sub_t *s)
{
    if (s->seen_gen == c->epoch_gen)
        return;
    s->seen_gen = c->epoch_gen;
    s->has_seen_epoch = c->has_epoch;
    memcpy(s->seen_epoch, c->epoch, sizeof(s->seen_epoch));
}

/*
 * Resume bookkeeping. For an exact topic the broker's `since` replay makes
 * the stream contiguous; for a wildcard the resume point is the smallest
 * last seq over its topics, so topics ahead of it are replayed partly twice
 * and those duplicates (always marked replay) are dropped here by their
 * per-topic last seq. A seq at or below the last one that is not such a
 * replay cannot happen within one epoch; a broker that announces no epoch
 * may have restarted unseen and begun its sequence again. That is reported
 * as HR_EGAP and the stream continues from the new seq.
 */
static int accept_seq(hr_client_t *c, hr_sub_t *s, const hr_frame_t *f)
{
    uint64_t *last;
    if (s->queue || s->pres_cb) /* a watcher's snapshot repeats the seq of the last change */
        return 1;
    if (!s->wildcard) {
        last = s->have_last ? &s->last : NULL;
    } else {
        hr__seq_entry_t *e = seq_get(s, f->topic.p, f->topic.n, 1);
        if (!e)
            return 1; /* out of memory: deliver without dedup rather than lose */
        last = e->last ? &e->last : NULL;
        if (!last)
            e->last = f->seq;
    }
    if (last && f->seq <= *last) {
        char d[HR__DETAIL_MAX];
        if (s->wildcard && (f->flags & HR_F_REPLAY))
            return 0;
        snprintf(d, sizeof(d), "sequence of %.*s restarted at %llu after %llu", (int)f->topic.n,
                 f->topic.p, (unsigned long long)f->seq, (unsigned long long)*last);
        hr__report(c, HR_EGAP, s, d);
    }
    if (last)
        *last = f->seq;
    else if (!s->wildcard)
        s->last = f->seq;
    s->have_last = 1;
    note_epoch(c, s);
    return 1;
}

void hr__on_msg(hr_client_t *c, const hr_frame_t *f)
{
    c->stats.msgs_in++;
    c->stats.bytes_in += f->payload.n;
    if (c->inbox_sub && f->sid == c->inbox_sub->sid) {
        hr__on_reply(c, f);
        return;
    }
    hr_sub_t *s = hr__sub_find(c, f->sid);
    if (!s || s->dead)
        return; /* unsubscribed: in flight before the broker saw UNSUB */
    if (!accept_seq(c, s, f))
        return;
    if (s->pend_msgs >= s->lim_msgs || s->pend_bytes + f->payload.n > s->lim_bytes) {
        slow_consumer(c, s);
        return;
    }
    hr_message_t *m = hr__message_new(f);
    if (!m) {
        slow_consumer(c, s);
        return;
    }
    enqueue(c, s, m);
}

void hr__on_gap(hr_client_t *c, const hr_frame_t *f)
{
    char d[HR__DETAIL_MAX];
    hr_sub_t *s = hr__sub_find(c, f->sid);
    if (!s || s->dead)
        return;
    if (s->wildcard) {
        hr__seq_entry_t *e = seq_get(s, f->topic.p, f->topic.n, 1);
        if (e && e->last < f->last_seq)
            e->last = f->last_seq;
    } else if (!s->have_last || s->last < f->last_seq) {
        s->have_last = 1;
        s->last = f->last_seq;
    }
    note_epoch(c, s);
    snprintf(d, sizeof(d), "GAP on %.*s: seq %llu..%llu lost", (int)f->topic.n, f->topic.p,
             (unsigned long long)f->first_seq, (unsigned long long)f->last_seq);
    hr__report(c, HR_EGAP, s, d);
}

/*
 * The resume point of a subscription on a new connection; see accept_seq().
 * It travels with the epoch under which its seq was seen. When that is not
 * the epoch of this WELCOME the broker's seqs started again: it answers
 * ERR 10 (reported as HR_EGAP) and replays its whole history, so the old
 * per-topic seqs are forgotten here and the subscription counts as new,
 * asking for everything of the new epoch until it sees a seq of its own.
 */
void hr__sub_resume(hr_client_t *c, hr_sub_t *s)
{
    hr_sub_fields_t o;
    first_sub_fields(s, &o);
    if (s->internal || s->queue) {
        if (s->sent) {
            memset(&o, 0, sizeof(o)); /* live: a replay would bypass the group */
            o.presence = (hr_slice_t){s->presence, s->presence_len};
        }
    } else if (s->have_last) {
        o.has_last = 0;
        o.has_since = 1;
        o.since = s->last;
        if (s->wildcard) {
            o.since = UINT64_MAX;
            for (size_t i = 0; i < s->nseqs_buckets; i++)
                for (hr__seq_entry_t *e = s->seqs[i]; e; e = e->next)
                    if (e->last < o.since)
                        o.since = e->last;
        }
        o.epoch = s->has_seen_epoch ? hr__slice(s->seen_epoch) : (hr_slice_t){NULL, 0};
        if (s->has_seen_epoch && c->has_epoch && strcmp(s->seen_epoch, c->epoch) != 0) {
            seqs_clear(s);
            s->has_since = 1;
            s->since = 0;
            s->has_last_n = 0;
            free(s->epoch_opt);
            s->epoch_opt = NULL;
        }
    }
    send_sub(c, s, &o);
}

/* ---- public: subscribe -------------------------------------------------- */

int hr__subscribe(hr_client_t *c, const char *pattern, const hr_sub_opts_t *so, hr_msg_cb cb,
                  void *arg, int internal, hr_sub_t **out)
{
    if (hr_pattern_validate(pattern, strlen(pattern)) != HR_OK)
        return HR_ETOPIC;
    if (so && so->queue && hr_topic_validate(so->queue, strlen(so->queue)) != HR_OK)
        return HR_EINVAL;
    if (so && so->epoch && strlen(so->epoch) > HR_EPOCH_MAX)
        return HR_EINVAL;
    hr_sub_t *s = calloc(1, sizeof(*s));
    hr__op_t *op = so && so->on_confirm ? calloc(1, sizeof(*op)) : NULL;
    if (!s || (so && so->on_confirm && !op)) {
        free(s);
        free(op);
        return HR_ENOMEM;
    }
    hr_buf_init(&s->xopts);
    int xr = hr__xopts_encode(so, &s->xopts, &s->nxopts);
    if (xr != HR_OK) {
        hr_buf_destroy(&s->xopts);
        free(s);
        free(op);
        return xr;
    }
    s->c = c;
    s->refs = 1;
    s->sid = ++c->next_id;
    s->pattern = hr__strdup(pattern);
    s->queue = so && so->queue ? hr__strdup(so->queue) : NULL;
    s->wildcard = is_wildcard(pattern);
    s->internal = internal;
    s->cb = cb;
    s->arg = arg;
    s->has_since = so ? so->has_since : 0;
    s->since = so ? so->since : 0;
    s->has_last_n = so ? so->has_last : 0;
    s->last_n = so ? so->last : 0;
    s->epoch_opt = so && so->epoch ? hr__strdup(so->epoch) : NULL;
    if (so && so->presence && (s->presence = malloc(so->presence_len ? so->presence_len : 1)))
        memcpy(s->presence, so->presence, so->presence_len);
    s->presence_len = so && so->presence ? so->presence_len : 0;
    s->lim_msgs = so && so->pending_msgs_limit ? so->pending_msgs_limit : c->o.pending_msgs_limit;
    s->lim_bytes =
        so && so->pending_bytes_limit ? so->pending_bytes_limit : c->o.pending_bytes_limit;
    if (!s->pattern || (so && so->queue && !s->queue) || (so && so->epoch && !s->epoch_opt) ||
        (so && so->presence && !s->presence) || sub_insert(c, s) != HR_OK) {
        sub_free(s);
        free(op);
        return HR_ENOMEM;
    }
    if (hr__connected(c)) {
        hr_sub_fields_t o;
        first_sub_fields(s, &o);
        if (send_sub(c, s, &o) != HR_OK || (op && hr__send_ping(c, ++c->ping_id) != HR_OK)) {
            hr__sub_remove(c, s);
            sub_free(s);
            free(op);
            return HR_ENOMEM;
        }
    }
    if (op) {
        /* The PING went out right after the SUB; before the WELCOME it waits for
         * hr__confirm_pings().
         */
        op->kind = HR__OP_CONFIRM;
        op->id = hr__connected(c) ? c->ping_id : 0;
        op->cb.confirm = so->on_confirm;
        op->arg = so->confirm_arg;
        op->sub = s;
        op->deadline = uv_now(c->loop) + c->o.request_timeout_ms;
        s->refs++;
        s->confirm = op;
        hr__op_link(c, op);
        hr__deadline_arm(c, op->deadline);
    }
    *out = s;
    return HR_OK;
}

int hr_client_subscribe(hr_client_t *c, const char *pattern, const hr_sub_opts_t *opts,
                        hr_msg_cb cb, void *arg, hr_sub_t **out)
{
    if (!c || !pattern || !cb || !out)
        return HR_EINVAL;
    if (!hr__accepting(c))
        return HR_ECLOSED;
    return hr__subscribe(c, pattern, opts, cb, arg, 0, out);
}

int hr_client_queue_subscribe(hr_client_t *c, const char *pattern, const char *queue, hr_msg_cb cb,
                              void *arg, hr_sub_t **out)
{
    hr_sub_opts_t so;
    if (!queue)
        return HR_EINVAL;
    memset(&so, 0, sizeof(so));
    so.queue = queue;
    return hr_client_subscribe(c, pattern, &so, cb, arg, out);
}

int hr_sub_unsubscribe(hr_sub_t *s)
{
    if (!s || s->dead)
        return HR_EINVAL;
    hr_client_t *c = s->c;
    s->dead = 1;
    hr__sub_remove(c, s);
    if (c->inbox_sub == s)
        c->inbox_sub = NULL;
    if (hr__connected(c) && !s->drained && !s->refused)
        hr__send_unsub(c, s->sid);
    if (s->confirm) {
        hr__op_unlink(c, s->confirm);
        free(s->confirm);
        s->confirm = NULL;
        assert(s->refs >= 2);
        s->refs--; /* the op's reference */
    }
    hr__sub_decref(s);
    hr__drain_check(c);
    return HR_OK;
}

uint64_t hr_sub_sid(const hr_sub_t *s)
{
    return s->sid;
}

void hr_sub_pending(const hr_sub_t *s, size_t *msgs, size_t *bytes)
{
    if (msgs)
        *msgs = s->pend_msgs;
    if (bytes)
        *bytes = s->pend_bytes;
}

uint64_t hr_sub_dropped(const hr_sub_t *s)
{
    return s->dropped;
}

uint64_t hr_sub_delivered(const hr_sub_t *s)
{
    return s->delivered;
}

void hr_sub_set_pending_limits(hr_sub_t *s, size_t msgs, size_t bytes)
{
    if (msgs)
        s->lim_msgs = msgs;
    if (bytes)
        s->lim_bytes = bytes;
}
