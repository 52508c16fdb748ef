/* SPDX-License-Identifier: MIT */
/* Presence: room membership, snapshots and coalesced changes on `$PRES.<topic>`. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mpread.h"
#include "presence.h"
#include "server.h"

/*
 * A room is the presence state of one topic: a hash of its members (client
 * id -> member info) and, while it has watchers, what the watchers were last
 * told (the "view") plus the members touched since. The view is kept inside
 * the member entries themselves: `in_view` says the watchers know the
 * member, `pinfo` keeps the info they know when it changed since, and a
 * member that left while in the view stays as a "ghost" (no subscriptions)
 * until the next change tells the watchers. So a new watcher's snapshot is
 * exactly the view, and the changes that follow apply to it with nothing
 * missing and nothing twice.
 *
 * Above the list maximum the watchers hold a count only (`listed` is 0): no
 * member is in the view and nothing is recorded per member, so a churning
 * room of any size costs a counter and one small frame per interval. When
 * the count falls back to the maximum, the next change lists every member
 * in `joined`. Touched members are kept in an array (each at most once), so
 * what one interval records is bounded by the members plus the ghosts, i.e.
 * by twice the largest membership of the interval.
 */

typedef struct room_s room_t;

typedef struct member_s {
    uint64_t cid;
    uint32_t nsubs;   /* subscriptions holding the membership; 0: a ghost */
    uint32_t touched; /* 1 + index in room->touched, 0: not touched */
    uint16_t origin;  /* worker the client is connected to */
    uint8_t in_view;  /* the watchers know this member */
    uint32_t ilen, plen;
    char *info;  /* current info (owned) */
    char *pinfo; /* info the watchers know when it differs from `info` (owned), else NULL */
} member_t;

struct room_s {
    hr_map_t members;   /* client id (8 bytes) -> member_t*, ghosts included */
    uint32_t count;     /* members holding a subscription */
    uint32_t watchers;  /* subscriptions to $PRES.<topic> on this worker */
    uint32_t pub_count; /* the count the watchers were last told */
    int listed;         /* the view is a member list, not a count only */
    int dirty;          /* on the dirty list: a change is due at the next tick */
    member_t **touched; /* members changed since the last change (listed only) */
    uint32_t ntouched, captouched;
    uint64_t seq;      /* seq of the last change sequenced */
    hr_msg_t *snap;    /* the snapshot's delivery body, made once for every new watcher */
    uint32_t inflight; /* changes the engine has not sequenced yet */
    struct hr_presence_s *p;
    room_t *next;  /* dirty list */
    uint16_t tlen; /* bytes of "$PRES.<topic>" */
    char ptopic[]; /* "$PRES.<topic>"; the room's topic follows the prefix */
};

typedef struct hr_presence_s {
    hr_server_t *srv;
    uv_timer_t timer;
    hr_map_t rooms; /* topic -> room_t* */
    room_t *dirty;  /* rooms with a change due */
    uint64_t members;
    uint32_t list_max; /* presence-list-max, bounded so a listed frame fits max-payload */
    uint64_t interval;
    hr_buf_t buf;
} hr_presence_t;

/* A listed entry at its largest: array header, uint64 client id, bin 16 header, 1 KiB. */
#define ENTRY_MAX (1 + 9 + 3 + HR_PRES_INFO_MAX)
#define LEFT_MAX 9

/* ---- msgpack writing ---------------------------------------------------------- */

static void put(hr_buf_t *b, const void *p, size_t n)
{
    (void)hr_buf_append(b, p, n); /* b->oom records a failure for the caller */
}

static void put_uint(hr_buf_t *b, uint64_t v)
{
    uint8_t o[9];
    size_t n;
    if (v < 128) {
        o[0] = (uint8_t)v;
        n = 1;
    } else if (v <= 0xff) {
        o[0] = 0xcc;
        o[1] = (uint8_t)v;
        n = 2;
    } else if (v <= 0xffff) {
        o[0] = 0xcd;
        o[1] = (uint8_t)(v >> 8);
        o[2] = (uint8_t)v;
        n = 3;
    } else if (v <= 0xffffffffu) {
        o[0] = 0xce;
        for (int i = 0; i < 4; i++)
            o[1 + i] = (uint8_t)(v >> (24 - 8 * i));
        n = 5;
    } else {
        o[0] = 0xcf;
        for (int i = 0; i < 8; i++)
            o[1 + i] = (uint8_t)(v >> (56 - 8 * i));
        n = 9;
    }
    put(b, o, n);
}

static void put_key(hr_buf_t *b, const char *k)
{
    uint8_t h[5];
    size_t n = strlen(k);
    put(b, h, hr__mp_put_str(h, n));
    put(b, k, n);
}

static void put_array(hr_buf_t *b, uint32_t n)
{
    uint8_t h[5];
    put(b, h, hr__mp_put_array(h, n));
}

static void put_map(hr_buf_t *b, uint32_t n)
{
    uint8_t h[5];
    put(b, h, hr__mp_put_map(h, n));
}

static void put_entry(hr_buf_t *b, uint64_t cid, const char *info, uint32_t n)
{
    uint8_t h[3];
    put_array(b, 2);
    put_uint(b, cid);
    if (n < 256) {
        h[0] = 0xc4;
        h[1] = (uint8_t)n;
        put(b, h, 2);
    } else {
        h[0] = 0xc5;
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        put(b, h, 3);
    }
    put(b, info, n);
}

/* ---- rooms and members ------------------------------------------------------------ */

static hr_presence_t *P(const hr_server_t *s)
{
    return s->presence;
}

static room_t *room_find(hr_presence_t *p, hr_slice_t topic)
{
    return hr__map_get(&p->rooms, topic.p, topic.n);
}

static room_t *room_get(hr_presence_t *p, hr_slice_t topic)
{
    room_t *r = room_find(p, topic);
    if (r)
        return r;
    r = calloc(1, sizeof(*r) + HR_PRES_PREFIX_LEN + topic.n);
    if (!r)
        return NULL;
    hr__map_init(&r->members);
    r->p = p;
    memcpy(r->ptopic, HR_PRES_PREFIX, HR_PRES_PREFIX_LEN);
    memcpy(r->ptopic + HR_PRES_PREFIX_LEN, topic.p, topic.n);
    r->tlen = (uint16_t)(HR_PRES_PREFIX_LEN + topic.n);
    if (hr__map_put(&p->rooms, topic.p, topic.n, r) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

static hr_slice_t room_topic(const room_t *r)
{
    return (hr_slice_t){r->ptopic + HR_PRES_PREFIX_LEN, r->tlen - HR_PRES_PREFIX_LEN};
}

/* A room with no members and no watchers holds nothing worth keeping. */
static void room_maybe_free(hr_presence_t *p, room_t *r)
{
    if (r->count || r->watchers || r->dirty || r->members.count || r->inflight)
        return;
    hr_slice_t t = room_topic(r);
    hr__map_del(&p->rooms, t.p, t.n);
    hr__map_destroy(&r->members);
    hr_msg_unref(&r->snap);
    free(r->touched);
    free(r);
}

static member_t *member_find(room_t *r, uint64_t cid)
{
    return hr__map_get(&r->members, &cid, sizeof(cid));
}

static void member_free(room_t *r, member_t *m)
{
    hr__map_del(&r->members, &m->cid, sizeof(m->cid));
    free(m->info);
    free(m->pinfo);
    free(m);
}

/* Records that `m` changed since the last change (only while the view is a list). */
static int touch(room_t *r, member_t *m)
{
    if (m->touched)
        return 0;
    if (r->ntouched == r->captouched) {
        uint32_t cap = r->captouched ? r->captouched * 2 : 8;
        member_t **v = realloc(r->touched, cap * sizeof(*v));
        if (!v)
            return -1;
        r->touched = v;
        r->captouched = cap;
    }
    r->touched[r->ntouched++] = m;
    m->touched = r->ntouched;
    return 0;
}

static void untouch(room_t *r, member_t *m)
{
    if (!m->touched)
        return;
    uint32_t i = m->touched - 1;
    r->touched[i] = r->touched[--r->ntouched];
    if (i < r->ntouched)
        r->touched[i]->touched = i + 1;
    m->touched = 0;
}

static void on_tick(uv_timer_t *t);

static void mark_dirty(hr_presence_t *p, room_t *r)
{
    if (!r->watchers || r->dirty)
        return;
    r->dirty = 1;
    r->next = p->dirty;
    p->dirty = r;
    if (!uv_is_active((uv_handle_t *)&p->timer))
        uv_timer_start(&p->timer, on_tick, p->interval, p->interval);
}

/* Sets the current info; keeps what the watchers know in `pinfo` while they know another. */
static int set_info(room_t *r, member_t *m, hr_slice_t info)
{
    if (m->info && m->ilen == info.n && memcmp(m->info, info.p, info.n) == 0)
        return 0;
    char *copy = malloc(info.n ? info.n : 1);
    if (!copy)
        return -1;
    memcpy(copy, info.p, info.n);
    if (m->in_view && r->listed && !m->pinfo) {
        m->pinfo = m->info; /* the watchers' version, until the next change */
        m->plen = m->ilen;
    } else
        free(m->info);
    m->info = copy;
    m->ilen = (uint32_t)info.n;
    return 0;
}

int hr__presence_member_join(hr_server_t *s, hr_slice_t topic, uint64_t cid, hr_slice_t info,
                             uint16_t origin)
{
    hr_presence_t *p = P(s);
    room_t *r = room_get(p, topic);
    if (!r)
        return HR_ENOMEM;
    member_t *m = member_find(r, cid);
    int fresh = !m;
    if (fresh) {
        if (!(m = calloc(1, sizeof(*m))) || hr__map_put(&r->members, &cid, sizeof(cid), m) != 0) {
            free(m);
            room_maybe_free(p, r);
            return HR_ENOMEM;
        }
        m->cid = cid;
    }
    int watched = r->watchers && r->listed;
    if (set_info(r, m, info) != 0 || (watched && touch(r, m) != 0)) {
        if (fresh) {
            member_free(r, m);
            room_maybe_free(p, r);
        }
        return HR_ENOMEM;
    }
    m->origin = origin;
    if (m->nsubs++ == 0) {
        r->count++;
        p->members++;
    }
    mark_dirty(p, r);
    return HR_OK;
}

void hr__presence_member_leave(hr_server_t *s, hr_slice_t topic, uint64_t cid)
{
    hr_presence_t *p = P(s);
    room_t *r = room_find(p, topic);
    member_t *m = r ? member_find(r, cid) : NULL;
    if (!m || !m->nsubs || --m->nsubs)
        return;
    r->count--;
    p->members--;
    if (r->watchers && r->listed && m->in_view) {
        if (touch(r, m) != 0) { /* cannot record the leave: stay a member in the view */
            m->nsubs = 1;
            r->count++;
            p->members++;
            return;
        }
    } else {
        untouch(r, m); /* joined and left within one interval: nothing to tell */
        member_free(r, m);
    }
    mark_dirty(p, r);
    room_maybe_free(p, r);
}

/* ---- watchers: the view, snapshots and changes -------------------------------------- */

typedef struct walk_s {
    room_t *r;
    hr_buf_t *b;
} walk_t;

static void view_all(void *arg, const void *k, size_t kn, void *v)
{
    (void)arg, (void)k, (void)kn;
    member_t *m = v;
    m->in_view = m->nsubs > 0;
}

static void clear_view(void *arg, const void *k, size_t kn, void *v)
{
    (void)arg, (void)k, (void)kn;
    member_t *m = v;
    m->in_view = 0;
    free(m->pinfo);
    m->pinfo = NULL;
}

/*
 * Forgets what the watchers knew: every member out of the view, ghosts
 * freed. A ghost is always a touched member (a leave of a member in the
 * view is recorded), so the touched array finds them all.
 */
static void view_drop(room_t *r)
{
    for (uint32_t i = 0; i < r->ntouched; i++) {
        member_t *m = r->touched[i];
        m->touched = 0;
        if (!m->nsubs)
            member_free(r, m);
    }
    r->ntouched = 0;
    hr__map_each(&r->members, clear_view, NULL);
    hr_msg_unref(&r->snap);
}

/* The view becomes the current membership (a list when it fits). */
static void view_start(hr_presence_t *p, room_t *r)
{
    r->listed = r->count <= p->list_max;
    r->pub_count = r->count;
    hr_msg_unref(&r->snap);
    if (r->listed)
        hr__map_each(&r->members, view_all, NULL);
}

static void snap_entry(void *arg, const void *k, size_t kn, void *v)
{
    (void)k, (void)kn;
    walk_t *w = arg;
    member_t *m = v;
    if (m->in_view)
        put_entry(w->b, m->cid, m->pinfo ? m->pinfo : m->info, m->pinfo ? m->plen : m->ilen);
}

/* The snapshot: the view, `{count, members}` or `{count}`, into p->buf. */
static void encode_snapshot(hr_presence_t *p, room_t *r)
{
    hr_buf_t *b = &p->buf;
    hr_buf_reset(b);
    put_map(b, r->listed ? 2 : 1);
    put_key(b, "count");
    put_uint(b, r->pub_count);
    if (!r->listed)
        return;
    put_key(b, "members");
    put_array(b, r->pub_count); /* the members in the view, ghosts included */
    walk_t w = {r, b};
    hr__map_each(&r->members, snap_entry, &w);
}

static void join_all(void *arg, const void *k, size_t kn, void *v)
{
    (void)k, (void)kn;
    walk_t *w = arg;
    member_t *m = v;
    if (m->nsubs) {
        put_entry(w->b, m->cid, m->info, m->ilen);
        m->in_view = 1;
    }
}

/* A change was sequenced (at once, or later with an engine in another process). */
static void on_published(void *arg, int status, uint64_t seq)
{
    room_t *r = arg;
    r->inflight--;
    if (status == HR_OK && seq > r->seq) {
        r->seq = seq;
        hr_msg_unref(&r->snap); /* it carries the seq */
    }
    room_maybe_free(r->p, r);
}

/* Publishes p->buf on `$PRES.<topic>` through the router: sequenced and fanned out like any. */
static void publish(hr_presence_t *p, room_t *r)
{
    hr_server_t *s = p->srv;
    hr_msg_unref(&r->snap); /* the view changed */
    if (p->buf.oom) {
        if (hr__limits_log_budget(s))
            HR_LOG(HR_LOG_WARN, 0, "presence: out of memory for a change of %.*s", (int)r->tlen,
                   r->ptopic);
        return;
    }
    hr_pub_cmd_t cmd = {.topic = {r->ptopic, r->tlen},
                        .payload = {(const char *)p->buf.base, p->buf.len}};
    r->inflight++; /* the room stays until `done` ran (an engine destroyed drops it: no call) */
    int st = hr__router_publish(s, &cmd, 0, 0, on_published, r);
    if (st < 0) {
        r->inflight--;
        if (hr__limits_log_budget(s)) /* rate-limited: many rooms may fail in one tick */
            HR_LOG(HR_LOG_WARN, 0, "presence: change of %.*s not published (%s)", (int)r->tlen,
                   r->ptopic, hr_strerror(st));
    }
}

/*
 * One interval's change of one room: from the view to the membership now.
 * A listed change always carries `joined` and `left` (maybe empty); a count
 * only change carries `count` alone and means the watchers keep no list.
 */
static void flush_room(hr_presence_t *p, room_t *r)
{
    hr_buf_t *b = &p->buf;
    int listed = r->count <= p->list_max;
    hr_buf_reset(b);
    if (r->listed && listed) {
        uint32_t nj = 0, nl = 0;
        for (uint32_t i = 0; i < r->ntouched; i++) {
            member_t *m = r->touched[i];
            if (m->nsubs && (!m->in_view || m->pinfo))
                nj++;
            else if (!m->nsubs && m->in_view)
                nl++;
        }
        if (!nj && !nl && r->count == r->pub_count) {
            for (uint32_t i = 0; i < r->ntouched; i++)
                r->touched[i]->touched = 0;
            r->ntouched = 0; /* nothing to tell (an info set again to the same bytes) */
            return;
        }
        put_map(b, 3);
        put_key(b, "count");
        put_uint(b, r->count);
        put_key(b, "joined");
        put_array(b, nj);
        for (uint32_t i = 0; i < r->ntouched; i++) {
            member_t *m = r->touched[i];
            if (m->nsubs && (!m->in_view || m->pinfo))
                put_entry(b, m->cid, m->info, m->ilen);
        }
        put_key(b, "left");
        put_array(b, nl);
        for (uint32_t i = 0; i < r->ntouched; i++) {
            member_t *m = r->touched[i];
            if (!m->nsubs && m->in_view)
                put_uint(b, m->cid);
        }
        /* The view is now the membership: ghosts go, info is what was sent. */
        for (uint32_t i = 0; i < r->ntouched; i++) {
            member_t *m = r->touched[i];
            m->touched = 0;
            if (!m->nsubs) {
                member_free(r, m);
                continue;
            }
            m->in_view = 1;
            free(m->pinfo);
            m->pinfo = NULL;
        }
        r->ntouched = 0;
    } else if (!r->listed && listed) {
        put_map(b, 3);
        put_key(b, "count");
        put_uint(b, r->count);
        put_key(b, "joined");
        put_array(b, r->count);
        walk_t w = {r, b};
        hr__map_each(&r->members, join_all, &w);
        put_key(b, "left");
        put_array(b, 0);
        r->listed = 1;
    } else {
        if (r->listed) { /* over the maximum: the watchers drop their lists */
            view_drop(r);
            r->listed = 0;
        } else if (r->count == r->pub_count)
            return;
        put_map(b, 1);
        put_key(b, "count");
        put_uint(b, r->count);
    }
    r->pub_count = r->count;
    publish(p, r);
}

static void on_tick(uv_timer_t *t)
{
    hr_presence_t *p = t->data;
    room_t *r = p->dirty;
    p->dirty = NULL; /* rooms touched while flushing go on a fresh list */
    while (r) {
        room_t *next = r->next;
        r->dirty = 0;
        if (r->watchers)
            flush_room(p, r);
        room_maybe_free(p, r);
        r = next;
    }
    if (!p->dirty)
        uv_timer_stop(&p->timer);
}

/*
 * Sends a new watcher the room's snapshot, marked replay, carrying the seq
 * of the last change. The body depends only on the view and that seq, so it
 * is made once and shared by every watcher that arrives before the next
 * change: a crowd subscribing to a big room costs one encoding.
 */
/* The room's snapshot body, made on first need and kept until the view changes. */
static hr_msg_t *room_snapshot(hr_presence_t *p, room_t *r)
{
    if (!r->snap) {
        encode_snapshot(p, r);
        hr_slice_t payload = {(const char *)p->buf.base, p->buf.len}, none = {0};
        if (!p->buf.oom)
            r->snap = hr_msg_new_delivery((hr_slice_t){r->ptopic, r->tlen}, r->seq, payload, none,
                                          none, 1);
    }
    return r->snap;
}

static void send_snapshot(hr_presence_t *p, room_t *r, hr_conn_t *c, uint64_t sid)
{
    if (!room_snapshot(p, r)) {
        hr__conn_err(c, HR_ELIMIT, "presence snapshot: out of memory", 1, sid);
        return;
    }
    hr__conn_deliver(c, sid, r->snap);
}

static void watcher_add(hr_presence_t *p, hr_conn_t *c, hr_sub_t *sub)
{
    hr_slice_t topic = {sub->pattern + HR_PRES_PREFIX_LEN, sub->plen - HR_PRES_PREFIX_LEN};
    room_t *r = room_get(p, topic);
    if (!r) {
        hr__conn_err(c, HR_ELIMIT, "presence: out of memory", 1, sub->sid);
        return;
    }
    if (r->watchers++ == 0)
        view_start(p, r);
    sub->presence = HR_PRES_WATCHER;
    send_snapshot(p, r, c, sub->sid);
}

static void watcher_gone(hr_presence_t *p, hr_sub_t *sub)
{
    hr_slice_t topic = {sub->pattern + HR_PRES_PREFIX_LEN, sub->plen - HR_PRES_PREFIX_LEN};
    room_t *r = room_find(p, topic);
    if (!r || !r->watchers)
        return;
    if (--r->watchers == 0) {
        view_drop(r);
        r->listed = 0;
    }
    room_maybe_free(p, r);
}

/* ---- subscription hooks ------------------------------------------------------------- */

/* Finds `presence` in the SUB option map: 1 with the value, 0 when absent or nil, -1 invalid. */
static int presence_opt(hr_slice_t opts, hr_slice_t *info, const char **why)
{
    hr_mp_t rd;
    hr_mp_val_t v;
    hr__mp_init(&rd, opts.p, opts.n);
    if (!opts.n || !hr__mp_read(&rd, &v) || v.kind != HR_MP_MAP ||
        !hr__mp_map_find(&rd, v.n, "presence", 8) || !hr__mp_read(&rd, &v) || v.kind == HR_MP_NIL)
        return 0;
    if (v.kind != HR_MP_BIN)
        *why = "presence must be binary (msgpack bin)";
    else if (v.s.n > HR_PRES_INFO_MAX)
        *why = "presence is larger than 1 KiB";
    else {
        *info = v.s;
        return 1;
    }
    return -1;
}

int hr__presence_sub_check(hr_conn_t *c, const hr_sub_cmd_t *cmd, hr_slice_t *scope,
                           hr_slice_t *info)
{
    const char *why = NULL;
    hr_slice_t pat = cmd->pattern;
    *scope = pat;
    *info = (hr_slice_t){0};
    int member = presence_opt(cmd->opts, info, &why);
    int exact = hr_topic_validate(pat.p, pat.n) == HR_OK;
    if (member > 0 && !exact)
        why = "presence needs an exact topic, not a pattern";
    else if (member > 0 && pat.p[0] == '$')
        why = "presence is not allowed on a reserved ('$') topic";
    if (why) {
        hr__conn_err(c, HR_EOPTION, why, 1, cmd->sid);
        return -1;
    }
    if (member > 0)
        return HR_PRES_MEMBER;
    if (pat.n < HR_PRES_PREFIX_LEN || memcmp(pat.p, HR_PRES_PREFIX, HR_PRES_PREFIX_LEN) != 0)
        return HR_PRES_NONE;
    hr_slice_t topic = {pat.p + HR_PRES_PREFIX_LEN, pat.n - HR_PRES_PREFIX_LEN};
    if (!exact || hr_topic_validate(topic.p, topic.n) != HR_OK) {
        hr__conn_err(c, HR_ETOPIC, "$PRES. must be followed by one exact topic", 1, cmd->sid);
        return -1;
    }
    *scope = topic;
    return HR_PRES_WATCHER;
}

/*
 * The worker that keeps a room is the owner of `$PRES.<topic>`. With one
 * process that is this one. In a cluster the link would forward the join
 * and the leave to it; until that is wired, presence is refused there
 * (CLUSTER_WHY) rather than reported per worker, with wrong counts.
 */
/* In a cluster a room another worker keeps is reached through the link. */
static int forward(hr_server_t *s, int kind, hr_slice_t topic, uint64_t cid, uint64_t sid,
                   hr_slice_t info)
{
    return s->presence_fwd && s->presence_fwd(s, kind, topic, cid, sid, info);
}

void hr__presence_sub_added(hr_conn_t *c, hr_sub_t *sub, int role, hr_slice_t info)
{
    hr_presence_t *p = P(c->srv);
    if (role == HR_PRES_WATCHER) {
        hr_slice_t room = {sub->pattern + HR_PRES_PREFIX_LEN, sub->plen - HR_PRES_PREFIX_LEN};
        if (forward(c->srv, HR_PRES_FWD_WATCH, room, c->id, sub->sid, (hr_slice_t){0})) {
            sub->presence = HR_PRES_WATCHER; /* the keeper sends the snapshot */
            return;
        }
        watcher_add(p, c, sub);
        return;
    }
    if (role != HR_PRES_MEMBER)
        return;
    hr_slice_t topic = {sub->pattern, sub->plen};
    if (forward(c->srv, HR_PRES_FWD_JOIN, topic, c->id, sub->sid, info)) {
        sub->presence = HR_PRES_MEMBER;
        return;
    }
    if (hr__presence_member_join(c->srv, topic, c->id, info, c->srv->worker) != HR_OK) {
        hr__conn_err(c, HR_ELIMIT, "presence: out of memory", 1, sub->sid);
        return;
    }
    sub->presence = HR_PRES_MEMBER;
}

void hr__presence_sub_gone(hr_server_t *s, hr_sub_t *sub)
{
    int role = sub->presence;
    sub->presence = HR_PRES_NONE;
    hr_slice_t topic = {sub->pattern, sub->plen};
    hr_slice_t room = {sub->pattern + HR_PRES_PREFIX_LEN,
                       sub->plen > HR_PRES_PREFIX_LEN ? sub->plen - HR_PRES_PREFIX_LEN : 0};
    if (role == HR_PRES_MEMBER &&
        !forward(s, HR_PRES_FWD_LEAVE, topic, sub->cid, sub->sid, (hr_slice_t){0}))
        hr__presence_member_leave(s, topic, sub->cid);
    else if (role == HR_PRES_WATCHER &&
             !forward(s, HR_PRES_FWD_UNWATCH, room, sub->cid, sub->sid, (hr_slice_t){0}))
        watcher_gone(P(s), sub);
}

void hr__presence_remote_watch(hr_server_t *s, hr_slice_t topic, int delta)
{
    hr_presence_t *p = P(s);
    room_t *r = delta > 0 ? room_get(p, topic) : room_find(p, topic);
    if (!r)
        return;
    if (delta > 0) {
        if (r->watchers == 0)
            view_start(p, r);
        r->watchers += (uint32_t)delta;
        return;
    }
    uint32_t d = (uint32_t)-delta;
    r->watchers = r->watchers > d ? r->watchers - d : 0;
    if (r->watchers == 0) {
        view_drop(r);
        r->listed = 0;
    }
    room_maybe_free(p, r);
}

hr_msg_t *hr__presence_snapshot(hr_server_t *s, hr_slice_t topic)
{
    hr_presence_t *p = P(s);
    room_t *r = room_find(p, topic);
    hr_msg_t *snap = r ? room_snapshot(p, r) : NULL;
    return snap ? hr_msg_ref(snap) : NULL;
}

/* ---- a worker's members leave with it ------------------------------------------------- */

typedef struct gone_s {
    uint16_t origin;
    uint64_t *cids;
    size_t n, cap;
    int oom;
} gone_t;

static void collect_origin(void *arg, const void *k, size_t kn, void *v)
{
    (void)k, (void)kn;
    gone_t *g = arg;
    member_t *m = v;
    if (!m->nsubs || m->origin != g->origin || g->oom)
        return;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        uint64_t *c = realloc(g->cids, cap * sizeof(*c));
        if (!c) {
            g->oom = 1;
            return;
        }
        g->cids = c;
        g->cap = cap;
    }
    g->cids[g->n++] = m->cid;
}

typedef struct rooms_s {
    room_t **v;
    size_t n, cap;
} rooms_t;

static void collect_room(void *arg, const void *k, size_t kn, void *v)
{
    (void)k, (void)kn;
    rooms_t *rs = arg;
    if (rs->n < rs->cap)
        rs->v[rs->n++] = v;
}

void hr__presence_worker_gone(hr_server_t *s, uint16_t origin)
{
    hr_presence_t *p = P(s);
    rooms_t rs = {NULL, 0, p->rooms.count};
    if (!rs.cap || !(rs.v = malloc(rs.cap * sizeof(*rs.v))))
        return;
    hr__map_each(&p->rooms, collect_room, &rs);
    for (size_t i = 0; i < rs.n; i++) {
        room_t *r = rs.v[i];
        gone_t g = {origin, NULL, 0, 0, 0};
        hr__map_each(&r->members, collect_origin, &g);
        hr_slice_t t = room_topic(r);
        char topic[256];
        memcpy(topic, t.p, t.n); /* the room may be freed by the last leave */
        for (size_t j = 0; j < g.n; j++) {
            member_t *m = member_find(r, g.cids[j]);
            if (m && m->nsubs) {
                m->nsubs = 1;
                hr__presence_member_leave(s, (hr_slice_t){topic, t.n}, g.cids[j]);
            }
            if (!room_find(p, (hr_slice_t){topic, t.n}))
                break;
        }
        free(g.cids);
    }
    free(rs.v);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int hr__presence_init(hr_server_t *s)
{
    hr_presence_t *p = calloc(1, sizeof(*p));
    if (!p)
        return HR_ENOMEM;
    p->srv = s;
    hr__map_init(&p->rooms);
    hr_buf_init(&p->buf);
    p->interval = (uint64_t)s->cfg.presence_interval_ms;
    /* A listed change holds at most list_max entries joined and list_max left. */
    uint64_t fit = ((uint64_t)s->cfg.max_payload - 64) / (ENTRY_MAX + LEFT_MAX);
    uint64_t max = (uint64_t)s->cfg.presence_list_max;
    p->list_max = (uint32_t)(max < fit ? max : fit);
    uv_timer_init(s->loop, &p->timer);
    p->timer.data = p;
    s->presence = p;
    return HR_OK;
}

void hr__presence_close(hr_server_t *s)
{
    if (s->presence)
        uv_close((uv_handle_t *)&P(s)->timer, NULL);
}

static void free_member(void *arg, const void *k, size_t kn, void *v)
{
    (void)arg, (void)k, (void)kn;
    member_t *m = v;
    free(m->info);
    free(m->pinfo);
    free(m);
}

static void free_room(void *arg, const void *k, size_t kn, void *v)
{
    (void)arg, (void)k, (void)kn;
    room_t *r = v;
    hr__map_each(&r->members, free_member, NULL);
    hr__map_destroy(&r->members);
    hr_msg_unref(&r->snap);
    free(r->touched);
    free(r);
}

void hr__presence_destroy(hr_server_t *s)
{
    hr_presence_t *p = P(s);
    if (!p)
        return;
    hr__map_each(&p->rooms, free_room, NULL);
    hr__map_destroy(&p->rooms);
    hr_buf_destroy(&p->buf);
    free(p);
    s->presence = NULL;
}

void hr__presence_stats(const hr_server_t *s, uint64_t *rooms, uint64_t *members)
{
    const hr_presence_t *p = P(s);
    *rooms = p ? p->rooms.count : 0;
    *members = p ? p->members : 0;
}
