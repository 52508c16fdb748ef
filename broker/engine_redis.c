/* SPDX-License-Identifier: MIT */
/* The Redis engine: seq numbers, history and the epoch in Redis, fan-out between nodes via pub/sub.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <uv.h>

#include "engine.h"
#include "index.h"
#include "log.h"
#include "map.h"

/*
 * Several Herald nodes share one topic space through Redis:
 *
 * - A topic's state is two keys, `<prefix>{<topic>}:s` (the seq counter) and
 *   `<prefix>{<topic>}:h` (a stream of the last `history-msgs` delivery bodies,
 *   entry id `<seq>-0`, expiring `redis-history-ttl` after the last publish),
 *   and every topic shares `<prefix>epoch`. The braces keep a topic's keys
 *   and channel in one Redis Cluster slot.
 * - A publish is one Lua script (PUB_LUA): it creates the epoch if Redis lost
 *   it, INCRs the seq, builds the delivery body around it, appends it to the
 *   stream and PUBLISHes it on `<prefix>{<topic>}`. Being one script, seq
 *   numbers are contiguous whichever node published, and the order of the
 *   PUBLISHes is the order of the seqs.
 * - A node SUBSCRIBEs to the channels of topics and PSUBSCRIBEs to the glob
 *   form of patterns with local interest only. Every local delivery, of the
 *   node's own publishes too, comes through that subscription: a reply on the
 *   command connection could overtake another node's message on the
 *   subscriber connection, and seq order would break. The node's index
 *   filters what a glob admitted too widely, and a per-topic "last seq" drops
 *   the second copy of a message that matched a channel and a glob, and
 *   reveals holes (a lost connection) as GAPs.
 * - Commands on the command connection wait while a SUBSCRIBE is not yet
 *   confirmed: a publish or a replay read sent after it could otherwise run
 *   before it and miss the new subscriber (or leave a hole between a replay
 *   and the live messages).
 *
 * Two connections: commands through hiredis's async API on the worker's
 * loop (its libuv adapter); pub/sub through a non-blocking redisContext
 * driven by our own uv_poll_t, because hiredis 0.14's async subscribe
 * handling asserts on a push it did not expect and knows no sharded
 * ("smessage") pushes: here every reply is read with redisGetReplyFromReader
 * and dispatched by its kind. Commands are appended to hiredis's output
 * buffer and written once the socket is writable, so everything issued in
 * one loop turn leaves in one write.
 */

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LAST_MAX 65536 /* topics whose last seq is remembered (GAP and duplicate detection) */
/* The envelope of a published message: node id (8), origin client id (8, big-endian), flags
 * (1), then the queue-group choices (a 2-byte count; each a 2-byte length, "pattern\0queue",
 * the chosen node's id in 16 hex digits), then the delivery body. */
#define ENV_HEAD 17

/*
 * KEYS: seq, history, the topic's queue groups, then the epoch, the wildcard queue groups and
 * the wildcard interest. ARGV: this node's id, maxlen, ttl, channel, body head, body tail,
 * envelope head, topic, mode ("s": Redis Cluster), and on Redis Cluster the last three keys,
 * which live in other slots of the same shard and so cannot be declared. Returns {seq, epoch}.
 *
 * On Redis Cluster the message goes out with SPUBLISH to the shard's own subscribers, and with
 * a plain PUBLISH (which Redis Cluster sends to every shard) only when some node registered a
 * wildcard pattern matching the topic in this shard's `<prefix>{TAG}wi` (field "P\0node"): a
 * pattern cannot be subscribed shard by shard.
 *
 * Queue groups: a node with members of group (pattern P, queue Q) registers itself in a hash,
 * `<prefix>{P}:q` for an exact P (field "Q\0node") or `<prefix>qw` for a wildcard P (field
 * "P\0Q\0node"), the value being when the registration lapses unless renewed (Redis's clock).
 * The script picks one live node per group matching the topic, rotating with the seq, and
 * names it in the envelope; only that node delivers the message to one of its members.
 */
static const char PUB_LUA[] =
    "local ek, qwk, wik = KEYS[4], KEYS[5], KEYS[6]\n"
    "if not ek then ek, qwk, wik = ARGV[10], ARGV[11], ARGV[12] end\n"
    "local ep = redis.call('GET', ek)\n"
    "if not ep then\n"
    "  local t = redis.call('TIME')\n"
    "  ep = string.sub(redis.sha1hex(ARGV[1] .. '.' .. t[1] .. '.' .. t[2]), 1, 16)\n"
    "  redis.call('SET', ek, ep)\n"
    "end\n"
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local body = ARGV[5] .. cmsgpack.pack(seq) .. ARGV[6]\n"
    "if seq == 1 then redis.call('DEL', KEYS[2]) end\n"
    "if tonumber(ARGV[2]) > 0 then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-0', seq), 'b', body)\n"
    "  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end\n"
    "end\n"
    "local topic, groups, order, now = ARGV[8], {}, {}, nil\n"
    "local function add(gk, node, lapse)\n"
    "  now = now or tonumber(redis.call('TIME')[1])\n"
    "  if tonumber(lapse) < now then return end\n"
    "  if not groups[gk] then groups[gk] = {}; order[#order + 1] = gk end\n"
    "  table.insert(groups[gk], node)\n"
    "end\n"
    "local function matches(p, t)\n"
    "  local pt, tt = {}, {}\n"
    "  for x in string.gmatch(p, '[^.]+') do pt[#pt + 1] = x end\n"
    "  for x in string.gmatch(t, '[^.]+') do tt[#tt + 1] = x end\n"
    "  if string.sub(t, 1, 1) == '$' and (pt[1] == '*' or pt[1] == '>') then return false end\n"
    "  for i = 1, #pt do\n"
    "    if pt[i] == '>' then return #tt >= i end\n"
    "    if i > #tt or (pt[i] ~= '*' and pt[i] ~= tt[i]) then return false end\n"
    "  end\n"
    "  return #pt == #tt\n"
    "end\n"
    "local r = redis.call('HGETALL', KEYS[3])\n"
    "for i = 1, #r, 2 do\n"
    "  local q, node = string.match(r[i], '^(.*)%z(.-)$')\n"
    "  if q then add(topic .. '\\0' .. q, node, r[i + 1]) end\n"
    "end\n"
    "r = redis.call('HGETALL', qwk)\n"
    "for i = 1, #r, 2 do\n"
    "  local p, q, node = string.match(r[i], '^(.-)%z(.*)%z(.-)$')\n"
    "  if p and matches(p, topic) then add(p .. '\\0' .. q, node, r[i + 1]) end\n"
    "end\n"
    "local env = {ARGV[7], struct.pack('>H', #order)}\n"
    "for _, gk in ipairs(order) do\n"
    "  local g = groups[gk]\n"
    "  table.sort(g)\n"
    "  env[#env + 1] = struct.pack('>H', #gk) .. gk .. g[(seq % #g) + 1]\n"
    "end\n"
    "env[#env + 1] = body\n"
    "local msg = table.concat(env)\n"
    "if ARGV[9] ~= 's' then redis.call('PUBLISH', ARGV[4], msg); return {seq, ep} end\n"
    "redis.call('SPUBLISH', ARGV[4], msg)\n"
    "r = redis.call('HGETALL', wik)\n"
    "for i = 1, #r, 2 do\n"
    "  local p = string.match(r[i], '^(.*)%z')\n"
    "  now = now or tonumber(redis.call('TIME')[1])\n"
    "  if p and tonumber(r[i + 1]) >= now and matches(p, topic) then\n"
    "    redis.call('PUBLISH', ARGV[4], msg); break\n"
    "  end\n"
    "end\n"
    "return {seq, ep}\n";

/* KEYS: a group registry. ARGV: field, seconds (0: unregister). */
static const char REG_LUA[] =
    "if ARGV[2] == '0' then return redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
    "local t = redis.call('TIME')\n"
    "return redis.call('HSET', KEYS[1], ARGV[1], tonumber(t[1]) + tonumber(ARGV[2]))\n";

/* KEYS: seq, history, epoch (on Redis Cluster: ARGV[7]). ARGV: has_since, since, has_last,
 * last, has_epoch, epoch. Returns {seq, epoch, gap, body...}: the retained bodies from where the
 * replay starts. */
static const char REPLAY_LUA[] =
    "local seq = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local ep = redis.call('GET', KEYS[3] or ARGV[7]) or ''\n"
    "local hs, since = ARGV[1] == '1', tonumber(ARGV[2])\n"
    "local gap = 0\n"
    "if ARGV[5] == '1' and ARGV[6] ~= ep then gap = 1; hs = true; since = 0 end\n"
    "local start, bysince = seq + 1, hs\n"
    "if hs then start = since + 1 end\n"
    "if ARGV[3] == '1' then\n"
    "  local n, ls = tonumber(ARGV[4]), 1\n"
    "  if n < seq then ls = seq - n + 1 end\n"
    "  if not hs or ls > start then start = ls; bysince = false end\n"
    "end\n"
    "local out = {seq, ep, gap}\n"
    "if start <= seq then\n"
    "  local r = redis.call('XRANGE', KEYS[2], string.format('%d-0', start), '+')\n"
    "  local first = seq + 1\n"
    "  if #r > 0 then first = tonumber(string.match(r[1][1], '^(%d+)')) end\n"
    "  if bysince and first > start then out[3] = 1 end\n"
    "  for i = 1, #r do out[#out + 1] = r[i][2][2] end\n"
    "end\n"
    "return out\n";

/* KEYS: epoch. ARGV: this node's id. The epoch, made once by whichever node asks first: 16 hex
 * digits of a digest of the node's id and Redis's clock, so an epoch made again after Redis
 * lost its data differs from the one before, whichever node makes it. */
static const char EPOCH_LUA[] =
    "local ep = redis.call('GET', KEYS[1])\n"
    "if not ep then\n"
    "  local t = redis.call('TIME')\n"
    "  ep = string.sub(redis.sha1hex(ARGV[1] .. '.' .. t[1] .. '.' .. t[2]), 1, 16)\n"
    "  redis.call('SET', KEYS[1], ep)\n"
    "end\n"
    "return ep\n";

enum { OP_PUB, OP_REPLAY, OP_SCAN, OP_CTL, OP_REG };

/* Redis Cluster refuses keys of several slots in one script unless told they are on one shard
 * (they are: the shard's own epoch and registries, whose hash tag was chosen for it). */
#define XSLOT "#!lua flags=allow-cross-slot-keys\n"

#define STALL_MS 10000    /* a command unanswered this long, or connections not up: reconnect */
#define REG_LAPSE_S "20"  /* a registration not renewed for this long lapses (a dead node) */
#define REG_RENEW_MS 5000 /* how often a node renews its registrations */

typedef struct wreplay_s wreplay_t;

typedef struct op_s {
    struct op_s *next;
    struct redis_s *e;
    int kind;
    char *cmd; /* the formatted command (hiredis), owned until sent */
    size_t len;
    uint64_t t0;   /* loop time it was issued */
    uint64_t sent; /* loop time it was written to Redis */
    hr_engine_pub_cb pub_cb;
    hr_engine_msg_cb msg_cb;
    hr_engine_done_cb done_cb;
    void *arg;
    wreplay_t *w; /* wildcard replay this op belongs to */
    uint64_t hash;
    uint64_t seq; /* a publish waiting for its echo: its seq */
    size_t tlen;
    char topic[]; /* the topic (or pattern) it concerns */
} op_t;

/* A wildcard replay: SCAN for the topics, then one replay script per topic. */
struct wreplay_s {
    hr_erange_t r; /* pattern and epoch point into `bytes` */
    char *bytes;
    char *glob;      /* the SCAN MATCH argument */
    char cursor[24]; /* SCAN cursor, "0" when done */
    char **topics;   /* topics found */
    size_t ntopics, cap;
    size_t left; /* per-topic replays not answered yet */
    int gap, failed;
    hr_engine_msg_cb msg;
    hr_engine_done_cb done;
    void *arg;
};

typedef struct oplist_s {
    op_t *head, *tail;
} oplist_t;

/* A publish answered by Redis whose message this node also wants: its completion waits
 * until the message came back through the subscription (see echo_wait). */
typedef struct echo_s {
    uint64_t seq;
} echo_t;

typedef struct waiter_s {
    struct waiter_s *next;
    void (*cb)(void *arg);
    void *arg;
} waiter_t;

typedef struct redis_s {
    hr_engine_t base;
    uv_loop_t *loop;
    char host[256];
    char ip[256]; /* resolved */
    int port, db;
    char user[128], password[256];
    char name_cmd[48], name_sub[48]; /* CLIENT SETNAME: which node a connection belongs to */
    char prefix[128];
    size_t plen;
    uint32_t history_msgs;
    uint64_t ttl;
    size_t queue_max;
    hr_redis_hooks_t hooks;
    /* connections */
    redisAsyncContext *cmd;
    int cmd_ready; /* scripts loaded, epoch known */
    redisContext *sub;
    uv_poll_t *subpoll; /* owned; freed by its close callback */
    int sub_connected, sub_events;
    int pending_confirms; /* (un)subscribes Redis has not confirmed yet */
    uv_timer_t retry;
    uv_getaddrinfo_t gai;
    int resolving;
    uint64_t backoff;
    int tearing, destroying;
    int logged_down;                /* the "unreachable" line was logged for this outage */
    uint64_t warned_ms, warn_quiet; /* warn_error(): the last line logged, errors since */
    uint64_t attempt_ms;            /* when the current connections were opened */
    char pub_sha[41], replay_sha[41], reg_sha[41];
    char node_hex[17]; /* the node's id in group registrations and choices */
    char ekey[160];    /* the epoch */
    char qwkey[160];   /* the registry of wildcard queue groups */
    char wikey[160];   /* Redis Cluster: the registry of wildcard interest */
    /* Redis Cluster: this is one shard of a cluster engine (engine_rcluster below) */
    int sharded;
    int retired; /* a shard of a slot map that changed: it finishes what it has, then closes */
    void (*on_moved)(void *arg); /* Redis Cluster answered "not here" (MOVED, ASK, ...) */
    char *pub_src, *replay_src;  /* the scripts (with XSLOT when sharded) */
    hr_map_t wpats;              /* patterns registered in wikey -> local interest count */
    hr_map_t *lastp;  /* the last seqs (the cluster's, shared by its shards, or `last`) */
    hr_map_t *exactp; /* topics with exact interest on this node (the cluster's, or channels) */
    hr_map_t *patp;   /* the patterns this node PSUBSCRIBEd (a cluster's first shard's) */
    oplist_t echo;    /* publishes sequenced, waiting for their message to come back */
    oplist_t *echop;  /* where they wait (the cluster's, shared by its shards, or `echo`) */
    void (*on_epoch)(void *arg); /* a shard's epoch changed (the cluster recomputes its own) */
    void *epoch_arg;
    hr_map_t groups;  /* "pattern\0queue" -> local members (as an integer) */
    uv_timer_t renew; /* renews this node's group registrations */
    /* work */
    oplist_t queue;    /* not sent yet */
    oplist_t inflight; /* sent, in reply order */
    size_t queued_bytes;
    waiter_t *waiters;
    hr_map_t channels; /* exact topic -> local interest count (as an integer) */
    hr_map_t patterns; /* pattern -> local interest count */
    hr_map_t last;     /* topic -> last seq seen on the subscription */
    uint8_t node[8];
    char fresh[17]; /* this node's candidate epoch */
    char epoch[65];
    int have_epoch;
    uint64_t reconnects, gaps, resets, connects;
} redis_t;

static void link_down(redis_t *e, const char *why);
static void retire_check(redis_t *e);
static void flush(redis_t *e);
static void connect_start(redis_t *e);

/* ---- small helpers ---------------------------------------------------------------- */

static uint64_t now_ms(redis_t *e)
{
    return uv_now(e->loop);
}

/* A Redis glob matching at least the channels of the topics `pattern` matches: literal tokens
 * with the glob's special characters escaped, `*` and `>` as `*` (which also crosses dots:
 * the node's own index filters what it lets through). */
static size_t glob_of(char *out, const char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int tok_start = i == 0 || p[i - 1] == '.';
        int tok_end = i + 1 == n || p[i + 1] == '.';
        if ((p[i] == '*' || p[i] == '>') && tok_start && tok_end) {
            out[o++] = '*';
            continue;
        }
        if (strchr("*?[]\\", p[i]))
            out[o++] = '\\';
        out[o++] = p[i];
    }
    return o;
}

/* `<prefix>{<name>}<suffix>` into a new string (n: its length). */
static char *key_of(redis_t *e, const char *name, size_t nlen, const char *suffix, int glob,
                    size_t *n)
{
    size_t sl = strlen(suffix);
    char *k = malloc(2 * e->plen + 2 * nlen + sl + 3);
    if (!k)
        return NULL;
    size_t o;
    if (glob) {
        o = glob_of(k, e->prefix, e->plen);
        k[o++] = '{';
        o += glob_of(k + o, name, nlen);
    } else {
        memcpy(k, e->prefix, e->plen);
        o = e->plen;
        k[o++] = '{';
        memcpy(k + o, name, nlen);
        o += nlen;
    }
    k[o++] = '}';
    memcpy(k + o, suffix, sl);
    o += sl;
    k[o] = 0;
    *n = o;
    return k;
}

static op_t *op_new(redis_t *e, int kind, const char *topic, size_t tlen)
{
    op_t *op = calloc(1, sizeof(*op) + tlen + 1);
    if (!op)
        return NULL;
    op->e = e;
    op->kind = kind;
    op->tlen = tlen;
    if (tlen)
        memcpy(op->topic, topic, tlen);
    op->t0 = now_ms(e);
    return op;
}

static void op_free(op_t *op)
{
    if (op->cmd)
        redisFreeCommand(op->cmd);
    free(op);
}

static void list_push(oplist_t *l, op_t *op)
{
    op->next = NULL;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

static op_t *list_pop(oplist_t *l)
{
    op_t *op = l->head;
    if (op) {
        l->head = op->next;
        if (!l->head)
            l->tail = NULL;
        op->next = NULL;
    }
    return op;
}

static int format(op_t *op, int argc, const char **argv, const size_t *lens)
{
    int n = redisFormatCommandArgv(&op->cmd, argc, argv, lens);
    if (n < 0)
        return HR_ENOMEM;
    op->len = (size_t)n;
    return HR_OK;
}

/* ---- the command connection ------------------------------------------------------------ */

static void on_reply(redisAsyncContext *ac, void *r, void *priv);
static void register_groups(redis_t *e, int counted);
static void confirmed(redis_t *e);

static void send_op(redis_t *e, op_t *op)
{
    if (redisAsyncFormattedCommand(e->cmd, on_reply, op, op->cmd, op->len) != REDIS_OK) {
        /* The connection is going (hiredis is freeing it; its disconnect callback follows):
         * the op waits for the next one, first in line, and nothing more is sent. */
        e->cmd_ready = 0;
        op->next = e->queue.head;
        e->queue.head = op;
        if (!e->queue.tail)
            e->queue.tail = op;
        return;
    }
    if (op->kind != OP_REPLAY || op->w) { /* an exact replay is asked again after a reconnect */
        redisFreeCommand(op->cmd);
        op->cmd = NULL;
    }
    op->sent = now_ms(e);
    list_push(&e->inflight, op);
}

/* Sends what waits, unless a subscription is not confirmed yet (see the top of the file). */
static void flush(redis_t *e)
{
    if (!e->cmd_ready || !e->sub_connected || e->pending_confirms || e->tearing)
        return;
    op_t *op;
    while ((op = list_pop(&e->queue)) != NULL)
        send_op(e, op);
}

/* Takes an op made by a caller: sent now, or queued within queue-max. */
static int submit(redis_t *e, op_t *op)
{
    if (e->queued_bytes + op->len > e->queue_max) {
        op_free(op);
        return HR_EBUFFULL;
    }
    e->queued_bytes += op->len;
    op->t0 = now_ms(e);
    list_push(&e->queue, op);
    flush(e);
    return HR_OK;
}

/* The op at the head of `inflight` is `op` (hiredis answers in order). */
static void inflight_done(redis_t *e, op_t *op)
{
    op_t **pp = &e->inflight.head, *prev = NULL;
    while (*pp && *pp != op) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = op->next;
        if (e->inflight.tail == op)
            e->inflight.tail = prev;
    }
    e->queued_bytes -= op->len < e->queued_bytes ? op->len : e->queued_bytes;
}

static void set_epoch(redis_t *e, const char *ep, size_t n)
{
    if (n >= sizeof(e->epoch))
        n = sizeof(e->epoch) - 1;
    if (e->have_epoch && strlen(e->epoch) == n && memcmp(e->epoch, ep, n) == 0)
        return;
    int changed = e->have_epoch;
    memcpy(e->epoch, ep, n);
    e->epoch[n] = 0;
    e->have_epoch = 1;
    if (e->retired)
        return;
    if (e->on_epoch) { /* a shard: the cluster's epoch is made of its shards' */
        e->on_epoch(e->epoch_arg);
        return;
    }
    if (changed) {
        /* Redis lost its data (a restart without persistence, a flush): seq numbers start
         * again, so what this node remembers of them means nothing now. */
        e->resets++;
        HR_LOG(HR_LOG_WARN, 0, "redis engine: the epoch changed to %s: Redis lost its data",
               e->epoch);
        hr__map_destroy(&e->last);
        hr__map_init(&e->last);
        if (e->hooks.reset)
            e->hooks.reset(e->hooks.arg);
    }
}

static hr_msg_t *wrap_body(const char *p, size_t n, hr_slice_t *topic, uint64_t *seq)
{
    hr_msg_t *m = hr_msg_new(0, p, n);
    hr_slice_t payload, opts;
    if (!m)
        return NULL;
    if (hr_msg_delivery_parts(m, topic, seq, &payload, &opts) != HR_OK) {
        hr_msg_unref(&m);
        return NULL;
    }
    m->arr = opts.n ? 0x96 : 0x95;
    return m;
}

static void replay_bodies(redis_t *e, op_t *op, redisReply *r, int *gap)
{
    (void)e;
    if (r->element[2]->type == REDIS_REPLY_INTEGER && r->element[2]->integer)
        *gap = 1;
    for (size_t i = 3; i < r->elements; i++) {
        redisReply *b = r->element[i];
        hr_slice_t topic;
        uint64_t seq;
        if (b->type != REDIS_REPLY_STRING)
            continue;
        hr_msg_t *m = wrap_body(b->str, b->len, &topic, &seq);
        hr_msg_t *rm = m ? hr_msg_new_replay(m) : NULL;
        if (rm)
            op->msg_cb(op->arg, topic, seq, rm);
        hr_msg_unref(&rm);
        hr_msg_unref(&m);
    }
}

static int replay_reply_ok(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
           r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_STRING;
}

static void wreplay_free(wreplay_t *w);

/* Frees an op whose answer will never be used (the engine is going), and its wildcard
 * replay with its last op. */
static void op_drop(op_t *op)
{
    wreplay_t *w = op->w;
    if (w && (op->kind == OP_SCAN || --w->left == 0))
        wreplay_free(w);
    op_free(op);
}

static void wreplay_step(redis_t *e, wreplay_t *w);
static void reply_op(redis_t *e, op_t *op, redisReply *r);

typedef struct want_s {
    const char *topic;
    size_t n;
    int found;
} want_t;

static void want_cb(void *arg, const void *k, size_t kl, void *val)
{
    want_t *w = arg;
    (void)val;
    if (!w->found && hr_topic_match(k, kl, w->topic, w->n))
        w->found = 1;
}

/* Whether this node has local interest in `topic` (a channel, or a pattern it subscribed). */
static int node_wants(redis_t *e, const char *topic, size_t n)
{
    if (hr__map_get(e->exactp, topic, n))
        return 1;
    want_t w = {topic, n, 0};
    if (e->patp && e->patp->count)
        hr__map_each(e->patp, want_cb, &w);
    return w.found;
}

/*
 * A publish is answered on the command connection, its message arrives on the subscriber
 * connection, in either order. When this node wants the message, the publish completes (its
 * ACK, the PONG behind it) only once the message came back, so that a client that published
 * to a topic it subscribes to, then got its PONG, has its own message too, as with one broker.
 * Returns 1 when `op` now waits.
 */
static int echo_wait(redis_t *e, op_t *op)
{
    uint64_t last = (uint64_t)(uintptr_t)hr__map_get(e->lastp, op->topic, op->tlen);
    if (!e->sub_connected || (last && last >= op->seq) || !node_wants(e, op->topic, op->tlen))
        return 0;
    e->queued_bytes += op->len;
    op->t0 = now_ms(e);
    list_push(e->echop, op);
    return 1;
}

/* Completes the publishes waiting for messages of `topic` up to `seq` (all: `topic` NULL). */
static void echo_done(redis_t *e, const char *topic, size_t tn, uint64_t seq, uint64_t older)
{
    op_t **pp = &e->echop->head, *prev = NULL;
    while (*pp) {
        op_t *op = *pp;
        if (topic ? !(op->tlen == tn && memcmp(op->topic, topic, tn) == 0 && op->seq <= seq)
                  : op->t0 > older) {
            prev = op;
            pp = &op->next;
            continue;
        }
        *pp = op->next;
        if (e->echop->tail == op)
            e->echop->tail = prev;
        e->queued_bytes -= op->len < e->queued_bytes ? op->len : e->queued_bytes;
        op->pub_cb(op->arg, HR_OK, (hr_slice_t){op->topic, op->tlen}, op->hash, op->seq, NULL);
        op_free(op);
    }
}
static void wreplay_finish(redis_t *e, wreplay_t *w, int status, uint64_t topics);

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    op_t *op = priv;
    redis_t *e = op->e;
    redisReply *r = reply;
    (void)ac;
    inflight_done(e, op);
    if (e->destroying) { /* pending callbacks are not called */
        op_drop(op);
        return;
    }
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
        link_down(e, "Redis forgot the scripts"); /* they are loaded again on reconnect */
    if (r && r->type == REDIS_REPLY_ERROR && e->on_moved &&
        (!strncmp(r->str, "MOVED ", 6) || !strncmp(r->str, "ASK ", 4) ||
         !strncmp(r->str, "CLUSTERDOWN", 11) || !strncmp(r->str, "TRYAGAIN", 8) ||
         strstr(r->str, "non local key")))
        e->on_moved(e->epoch_arg); /* the slot map changed: the cluster reads it again */
    reply_op(e, op, r);
    retire_check(e);
}

/* An error Redis answered, logged at most once a second (a Redis out of memory or a cluster
 * that is down answers every command so), with the count of those not logged. */
static void warn_error(redis_t *e, const char *what, const char *err)
{
    uint64_t now = now_ms(e);
    if (e->warned_ms && now - e->warned_ms < 1000) {
        e->warn_quiet++;
        return;
    }
    HR_LOG(HR_LOG_WARN, 0, "redis engine: %s failed: %s (%llu more errors not logged)", what, err,
           (unsigned long long)e->warn_quiet);
    e->warned_ms = now;
    e->warn_quiet = 0;
}

/* Completes `op` with reply `r` (NULL: the connection went). */
static void reply_op(redis_t *e, op_t *op, redisReply *r)
{
    switch (op->kind) {
    case OP_PUB:
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            set_epoch(e, r->element[1]->str, r->element[1]->len);
            op->seq = (uint64_t)r->element[0]->integer;
            if (echo_wait(e, op))
                return;
            op->pub_cb(op->arg, HR_OK, (hr_slice_t){op->topic, op->tlen}, op->hash, op->seq, NULL);
        } else {
            if (r && r->type == REDIS_REPLY_ERROR)
                warn_error(e, "publish", r->str);
            /* A publish whose answer was lost may or may not have been sequenced: the
             * publisher is told it failed, never that it succeeded. */
            op->pub_cb(op->arg, HR_ENOTCONN, (hr_slice_t){op->topic, op->tlen}, op->hash, 0, NULL);
        }
        op_free(op);
        return;
    case OP_REPLAY: {
        if (!r && !op->w) { /* the connection went: a replay may simply be asked again */
            e->queued_bytes += op->len;
            list_push(&e->queue, op);
            return;
        }
        wreplay_t *w = op->w;
        int gap = 0, ok = replay_reply_ok(r);
        if (ok) {
            set_epoch(e, r->element[1]->str, r->element[1]->len);
            replay_bodies(e, op, r, &gap);
        }
        if (w) {
            w->gap |= gap;
            w->failed |= !ok;
            if (--w->left == 0)
                wreplay_finish(e, w,
                               w->failed ? HR_ENOTCONN
                               : w->gap  ? HR_EGAP
                                         : HR_OK,
                               w->ntopics + 1);
        } else {
            op->done_cb(op->arg, !ok ? HR_ENOTCONN : gap ? HR_EGAP : HR_OK, 1);
        }
        op_free(op);
        return;
    }
    case OP_SCAN: {
        wreplay_t *w = op->w;
        op_free(op);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            wreplay_finish(e, w, HR_ENOTCONN, 0);
            return;
        }
        snprintf(w->cursor, sizeof(w->cursor), "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            redisReply *k = keys->element[i];
            /* <prefix>{topic}:s */
            if (k->type != REDIS_REPLY_STRING || k->len < e->plen + 4)
                continue;
            const char *t = k->str + e->plen + 1;
            size_t tn = k->len - e->plen - 4;
            if (hr_topic_validate(t, tn) != HR_OK ||
                !hr_topic_match(w->r.pattern.p, w->r.pattern.n, t, tn))
                continue;
            if (w->ntopics == w->cap) {
                size_t cap = w->cap ? 2 * w->cap : 16;
                char **v = realloc(w->topics, cap * sizeof(*v));
                if (!v) {
                    w->failed = 1;
                    break;
                }
                w->topics = v;
                w->cap = cap;
            }
            char *copy = malloc(tn + 1);
            if (!copy) {
                w->failed = 1;
                break;
            }
            memcpy(copy, t, tn);
            copy[tn] = 0;
            w->topics[w->ntopics++] = copy;
        }
        wreplay_step(e, w);
        return;
    }
    case OP_REG:
        if (r && r->type == REDIS_REPLY_ERROR)
            warn_error(e, "queue group registration", r->str);
        if (op->arg) /* a registration a SUB's answer waits for */
            confirmed(e);
        op_free(op);
        return;
    default: /* OP_CTL: AUTH, SELECT, SCRIPT LOAD, the epoch */
        if (!r || r->type == REDIS_REPLY_ERROR) {
            if (r)
                HR_LOG(HR_LOG_ERROR, 0, "redis engine: %s: %s", op->topic, r->str);
            op_free(op);
            if (r)
                link_down(e, "a set-up command failed");
            return;
        }
        if (strcmp(op->topic, "epoch") == 0 && r->type == REDIS_REPLY_STRING) {
            set_epoch(e, r->str, r->len);
            e->cmd_ready = 1;
            register_groups(e, 1);
            flush(e);
        }
        op_free(op);
        return;
    }
}

/* A set-up command, sent at once (ahead of everything queued). */
static void ctl(redis_t *e, const char *what, int argc, const char **argv)
{
    op_t *op = op_new(e, OP_CTL, what, strlen(what));
    if (!op || format(op, argc, argv, NULL) != HR_OK) {
        if (op)
            op_free(op);
        link_down(e, "out of memory");
        return;
    }
    e->queued_bytes += op->len;
    send_op(e, op);
}

static void on_cmd_connect(const redisAsyncContext *ac, int status)
{
    redis_t *e = ac->data;
    if (status != REDIS_OK) {
        e->cmd = NULL; /* hiredis frees it */
        link_down(e, ac->errstr);
        return;
    }
    char db[16];
    snprintf(db, sizeof(db), "%d", e->db);
    if (e->user[0])
        ctl(e, "AUTH", 3, (const char *[]){"AUTH", e->user, e->password});
    else if (e->password[0])
        ctl(e, "AUTH", 2, (const char *[]){"AUTH", e->password});
    ctl(e, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", e->name_cmd});
    if (e->db)
        ctl(e, "SELECT", 2, (const char *[]){"SELECT", db});
    ctl(e, "pub", 3, (const char *[]){"SCRIPT", "LOAD", e->pub_src});
    ctl(e, "replay", 3, (const char *[]){"SCRIPT", "LOAD", e->replay_src});
    ctl(e, "reg", 3, (const char *[]){"SCRIPT", "LOAD", REG_LUA});
    ctl(e, "epoch", 5, (const char *[]){"EVAL", EPOCH_LUA, "1", e->ekey, e->fresh});
}

static void on_cmd_disconnect(const redisAsyncContext *ac, int status)
{
    redis_t *e = ac->data;
    e->cmd = NULL; /* hiredis frees it after this returns */
    e->cmd_ready = 0;
    if (!e->destroying)
        link_down(e, status == REDIS_OK ? "connection closed" : ac->errstr);
}

/* ---- queue groups across nodes -------------------------------------------------------------- */

/*
 * Registers (seconds > 0) or unregisters this node for queue group `gk` ("pattern\0queue") in
 * Redis. A registration that a SUB's answer waits for is `counted` like a subscription not yet
 * confirmed. Nothing is sent while Redis is out of reach: every group is registered again once
 * it is back.
 */
static void register_one(redis_t *e, const char *gk, size_t gn, const char *seconds, int counted,
                         int wi)
{
    const char *q = wi ? gk + gn : memchr(gk, 0, gn);
    if (!q || !e->cmd_ready || !e->cmd)
        return;
    size_t pn = (size_t)(q - gk), qn = wi ? 0 : gn - pn - 1, kn, fn;
    int exact = !wi && hr_topic_validate(gk, pn) == HR_OK;
    char *key = exact ? key_of(e, gk, pn, ":q", 0, &kn) : NULL;
    char *field = malloc(gn + 18);
    op_t *op = op_new(e, OP_REG, "reg", 3);
    if ((exact && !key) || !field || !op)
        goto out;
    if (exact) { /* "queue\0node" in the topic's own registry */
        memcpy(field, q + 1, qn);
        fn = qn;
    } else { /* "pattern\0queue\0node" in the wildcard registry, "pattern\0node" in wi */
        memcpy(field, gk, gn);
        fn = gn;
    }
    const char *reg = wi ? e->wikey : e->qwkey;
    field[fn++] = 0;
    memcpy(field + fn, e->node_hex, 16);
    fn += 16;
    const char *argv[] = {"EVALSHA", e->reg_sha, "1", exact ? key : reg, field, seconds};
    size_t lens[] = {7, 40, 1, exact ? kn : strlen(reg), fn, strlen(seconds)};
    if (format(op, 6, argv, lens) != HR_OK)
        goto out;
    if (counted) {
        op->arg = e;
        e->pending_confirms++;
    }
    e->queued_bytes += op->len;
    send_op(e, op);
    op = NULL;
out:
    if (op)
        op_free(op);
    free(key);
    free(field);
}

typedef struct reg_arg_s {
    redis_t *e;
    int counted, wi;
} reg_arg_t;

static void register_cb(void *arg, const void *k, size_t kl, void *val)
{
    reg_arg_t *x = arg;
    (void)val;
    register_one(x->e, k, kl, REG_LAPSE_S, x->counted, x->wi);
}

/* Every group with local members, again: on each connection, and every REG_RENEW_MS. */
static void register_groups(redis_t *e, int counted)
{
    reg_arg_t x = {e, counted, 0};
    hr__map_each(&e->groups, register_cb, &x);
    x.wi = 1;
    hr__map_each(&e->wpats, register_cb, &x);
}

static void on_renew(uv_timer_t *t)
{
    redis_t *e = t->data;
    uint64_t now = now_ms(e);
    /* A watchdog: connections that do not come up, or a Redis that stopped answering without
     * closing them, are closed and opened again rather than waited for. */
    int ready = e->cmd_ready && e->sub_connected && !e->pending_confirms;
    if (!e->retired && (e->cmd || e->sub) &&
        ((!ready && now - e->attempt_ms > STALL_MS) ||
         (e->inflight.head && now - e->inflight.head->sent > STALL_MS))) {
        link_down(e, "Redis does not answer");
        return;
    }
    register_groups(e, 0);
    /* A message that never came back (its subscription went meanwhile) holds its publish at
     * most a few seconds; a cluster's first shard sweeps the list its shards share. */
    if (e->echop == &e->echo || e->patp == &e->patterns)
        echo_done(e, NULL, 0, 0, now_ms(e) - 2000);
}

int hr__engine_redis_group_here(const hr_qchoice_t *qc, const char *pattern, size_t pn,
                                const char *queue, size_t qn)
{
    const uint8_t *p = qc->p;
    for (uint16_t i = 0; i < qc->count; i++) {
        size_t gn = (size_t)p[0] << 8 | p[1];
        const uint8_t *gk = p + 2, *node = gk + gn;
        if (gn == pn + 1 + qn && memcmp(gk, pattern, pn) == 0 && gk[pn] == 0 &&
            memcmp(gk + pn + 1, queue, qn) == 0)
            return memcmp(node, qc->node, 16) == 0;
        p = node + 16;
    }
    return 0; /* not registered when it was published: no node takes it */
}

/* "pattern\0queue", the identity of `s`'s queue group (NULL on OOM). */
static char *group_key(const hr_sub_t *s, size_t *gn)
{
    char *gk = malloc(s->plen + 1u + s->qlen);
    if (gk) {
        memcpy(gk, s->pattern, s->plen);
        gk[s->plen] = 0;
        memcpy(gk + s->plen + 1, s->queue, s->qlen);
        *gn = s->plen + 1u + s->qlen;
    }
    return gk;
}

/* Counts `delta` for `k` in `m`; registers the node when the count leaves 0, unregisters it
 * when the count returns to 0. */
static void reg_count(redis_t *e, hr_map_t *m, const char *k, size_t kn, int delta, int wi)
{
    uintptr_t n = (uintptr_t)hr__map_get(m, k, kn);
    if (delta > 0) {
        if (hr__map_put(m, k, kn, (void *)(n + 1)) == 0 && n == 0)
            register_one(e, k, kn, REG_LAPSE_S, 1, wi);
    } else if (n > 1) {
        hr__map_put(m, k, kn, (void *)(n - 1));
    } else if (n == 1) { /* counted too: after an UNSUB's answer Redis no longer picks it */
        hr__map_del(m, k, kn);
        register_one(e, k, kn, "0", 1, wi);
    }
}

/* A member of a queue group came (+1) or went (-1): the node registers while it has one. */
static void group_count(redis_t *e, const hr_sub_t *s, int delta)
{
    size_t gn;
    char *gk = group_key(s, &gn);
    if (gk)
        reg_count(e, &e->groups, gk, gn, delta, 0);
    free(gk);
}

/* ---- the subscriber connection ----------------------------------------------------------- */

static void on_sub_poll(uv_poll_t *h, int status, int events);

/* Appends a command to the subscriber connection's output; written when the socket is. */
static int sub_send(redis_t *e, int argc, const char **argv, const size_t *lens)
{
    if (!e->sub || redisAppendCommandArgv(e->sub, argc, argv, lens) != REDIS_OK)
        return -1;
    if (e->subpoll && !(e->sub_events & UV_WRITABLE)) {
        e->sub_events |= UV_WRITABLE;
        uv_poll_start(e->subpoll, e->sub_events, on_sub_poll);
    }
    return 0;
}

/* (un)subscribes one channel or glob; confirmed by one reply each. */
static void sub_cmd(redis_t *e, const char *verb, const char *name, size_t n, int pattern)
{
    size_t kn;
    char *ch = key_of(e, name, n, "", pattern, &kn);
    if (!ch)
        return; /* out of memory: a hole GAPs will reveal */
    if (e->sub && e->sub_connected) {
        const char *argv[2] = {verb, ch};
        size_t lens[2] = {strlen(verb), kn};
        if (sub_send(e, 2, argv, lens) == 0)
            e->pending_confirms++;
    }
    free(ch);
}

typedef struct resub_s {
    redis_t *e;
    int pattern;
} resub_t;

static void resub_cb(void *arg, const void *k, size_t kl, void *val)
{
    resub_t *x = arg;
    (void)val;
    sub_cmd(x->e,
            x->pattern      ? "PSUBSCRIBE"
            : x->e->sharded ? "SSUBSCRIBE"
                            : "SUBSCRIBE",
            k, kl, x->pattern);
}

/* The subscriber connection is up: it subscribes again to everything with local interest. */
static void on_sub_up(redis_t *e)
{
    e->sub_connected = 1;
    /* Their +OK replies are counted like confirmations. */
    if (e->user[0] || e->password[0]) {
        const char *argv[3] = {"AUTH", e->user[0] ? e->user : e->password, e->password};
        if (sub_send(e, e->user[0] ? 3 : 2, argv, NULL) == 0)
            e->pending_confirms++;
    }
    const char *argv[3] = {"CLIENT", "SETNAME", e->name_sub};
    if (sub_send(e, 3, argv, NULL) == 0)
        e->pending_confirms++;
    resub_t x = {e, 0};
    hr__map_each(&e->channels, resub_cb, &x);
    x.pattern = 1;
    hr__map_each(&e->patterns, resub_cb, &x);
    if (!e->pending_confirms)
        flush(e);
}

static void wake_waiters(redis_t *e)
{
    waiter_t *w = e->waiters;
    e->waiters = NULL;
    while (w) {
        waiter_t *next = w->next;
        w->cb(w->arg);
        free(w);
        w = next;
    }
}

static void confirmed(redis_t *e)
{
    if (e->pending_confirms > 0 && --e->pending_confirms == 0) {
        if (e->logged_down) {
            HR_LOG(HR_LOG_WARN, 0, "redis engine: connected to %s:%d again", e->host, e->port);
            e->logged_down = 0;
        }
        wake_waiters(e);
        flush(e);
    }
}

/* A message on the subscription: an envelope (who published it) around a delivery body. */
static void on_message(redis_t *e, const redisReply *data, int by_pattern)
{
    if (data->type != REDIS_REPLY_STRING || data->len < ENV_HEAD + 2)
        return;
    const uint8_t *p = (const uint8_t *)data->str;
    size_t off = ENV_HEAD + 2, len = data->len;
    hr_qchoice_t qc = {p + off, (uint16_t)(p[ENV_HEAD] << 8 | p[ENV_HEAD + 1]), e->node_hex};
    for (uint16_t i = 0; i < qc.count; i++) { /* the queue groups' chosen nodes */
        if (len - off < 2 || len - off - 2 < ((size_t)p[off] << 8 | p[off + 1]) + 16)
            return;
        off += 2 + ((size_t)p[off] << 8 | p[off + 1]) + 16;
    }
    hr_slice_t topic;
    uint64_t seq, origin = 0;
    hr_msg_t *m = off < len ? wrap_body(data->str + off, len - off, &topic, &seq) : NULL;
    if (!m)
        return;
    int own = memcmp(p, e->node, 8) == 0; /* client ids mean something on their node only */
    if (own)
        for (int i = 0; i < 8; i++)
            origin = origin << 8 | p[8 + i];
    uint64_t h = hr__hash(topic.p, topic.n);
    hr_map_t *lm = e->lastp;
    uint64_t last = (uint64_t)(uintptr_t)hr__map_get_hashed(lm, topic.p, topic.n, h);
    /* One connection (one Redis) carries both copies of a message that matched a channel and
     * a glob, one after the other: a second copy has the last seq, and a smaller seq means
     * Redis gave a seq again (a failover lost writes), which is not hidden. On a cluster the
     * copies come over different shards' connections, so anything not newer is a copy; and
     * the pattern path, which carries a topic only while some pattern matched it, reveals
     * holes only for topics without exact interest. */
    if (last && (e->sharded ? seq <= last : seq == last)) {
        hr_msg_unref(&m);
        return;
    }
    if (last && seq < last)
        HR_LOG(HR_LOG_WARN, 0, "redis engine: %.*s went back from seq %llu to %llu", (int)topic.n,
               topic.p, (unsigned long long)last, (unsigned long long)seq);
    if (last && seq > last + 1 &&
        (!e->sharded || !by_pattern || !hr__map_get_hashed(e->exactp, topic.p, topic.n, h))) {
        e->gaps++;
        if (e->hooks.gap)
            e->hooks.gap(e->hooks.arg, topic, h, last + 1, seq - 1);
    }
    if (lm->count >= LAST_MAX && !last) {
        hr__map_destroy(lm); /* bounded: forgetting costs only hole detection */
        hr__map_init(lm);
    }
    hr__map_put(lm, topic.p, topic.n, (void *)(uintptr_t)seq);
    e->hooks.deliver(e->hooks.arg, topic, h, seq, m, origin, own && (p[16] & 1), &qc);
    if (own && e->echop->head)
        echo_done(e, topic.p, topic.n, seq, 0);
    hr_msg_unref(&m);
}

static int is(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

static void on_push(redis_t *e, redisReply *r)
{
    if (r->type == REDIS_REPLY_STATUS) { /* AUTH */
        confirmed(e);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        HR_LOG(HR_LOG_ERROR, 0, "redis engine: subscriber connection: %s", r->str);
        link_down(e, "the subscriber connection was refused");
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    redisReply *kind = r->element[0];
    if (is(kind, "message") || is(kind, "smessage"))
        on_message(e, r->element[2], 0);
    else if (is(kind, "pmessage") && r->elements == 4)
        on_message(e, r->element[3], 1);
    else if (is(kind, "sunsubscribe") && e->on_moved && r->element[1]->type == REDIS_REPLY_STRING &&
             r->element[1]->len > e->plen + 2 &&
             hr__map_get(&e->channels, r->element[1]->str + e->plen + 1,
                         r->element[1]->len - e->plen - 2))
        e->on_moved(e->epoch_arg); /* not asked for: Redis moved the channel's slot away */
    else if (is(kind, "subscribe") || is(kind, "psubscribe") || is(kind, "unsubscribe") ||
             is(kind, "punsubscribe") || is(kind, "ssubscribe") || is(kind, "sunsubscribe"))
        confirmed(e);
}

static void on_sub_poll(uv_poll_t *h, int status, int events)
{
    redis_t *e = h->data;
    if (!e || !e->sub)
        return;
    if (status < 0) {
        link_down(e, uv_strerror(status));
        return;
    }
    if (!e->sub_connected && (events & (UV_WRITABLE | UV_READABLE))) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(e->sub->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
            link_down(e, strerror(err ? err : errno));
            return;
        }
        e->sub_events = UV_READABLE;
        uv_poll_start(h, e->sub_events, on_sub_poll);
        on_sub_up(e);
    }
    if (events & UV_READABLE) {
        if (redisBufferRead(e->sub) != REDIS_OK) {
            link_down(e, e->sub->errstr[0] ? e->sub->errstr : "connection closed");
            return;
        }
        void *reply;
        while (e->sub) {
            if (redisGetReplyFromReader(e->sub, &reply) != REDIS_OK) {
                link_down(e, "protocol error on the subscriber connection");
                return;
            }
            if (!reply)
                break;
            on_push(e, reply);
            freeReplyObject(reply);
        }
    }
    if (e->sub && (events & UV_WRITABLE) && e->sub_connected) {
        int done = 0;
        if (redisBufferWrite(e->sub, &done) != REDIS_OK) {
            link_down(e, e->sub->errstr);
            return;
        }
        if (done) {
            e->sub_events = UV_READABLE;
            uv_poll_start(h, e->sub_events, on_sub_poll);
        }
    }
}

/* ---- connecting, losing the link ------------------------------------------------------------ */

static void free_poll(uv_handle_t *h)
{
    free(h);
}

static void close_sub(redis_t *e)
{
    if (e->subpoll) {
        e->subpoll->data = NULL;
        uv_close((uv_handle_t *)e->subpoll, free_poll);
        e->subpoll = NULL;
    }
    if (e->sub) {
        redisFree(e->sub);
        e->sub = NULL;
    }
    e->sub_connected = 0;
    e->sub_events = 0;
}

/* Closes both connections; hiredis runs the callbacks of commands in flight with no reply. */
static void close_both(redis_t *e)
{
    close_sub(e);
    if (e->cmd) {
        redisAsyncContext *ac = e->cmd;
        e->cmd = NULL;
        ac->onDisconnect = NULL;
        redisAsyncFree(ac);
    }
}

static void on_retry(uv_timer_t *t)
{
    connect_start(t->data);
}

/*
 * Either connection failed: both go (a publish must never run while this node
 * cannot hear its result), whatever waited stays queued, and the next attempt
 * comes after a backoff that doubles up to 5 s. The callbacks of commands in
 * flight run with no reply: publishes fail, replays are asked again.
 */
/* A retired shard's commands that were never sent fail (a new shard has their topics now). */
static void fail_queued(redis_t *e)
{
    op_t *op;
    while ((op = list_pop(&e->queue)) != NULL) {
        e->queued_bytes -= op->len < e->queued_bytes ? op->len : e->queued_bytes;
        wreplay_t *w = op->w;
        if (op->kind == OP_PUB)
            op->pub_cb(op->arg, HR_ENOTCONN, (hr_slice_t){op->topic, op->tlen}, op->hash, 0, NULL);
        else if (op->kind == OP_REPLAY && !w)
            op->done_cb(op->arg, HR_ENOTCONN, 1);
        else if (op->kind == OP_SCAN)
            wreplay_finish(e, w, HR_ENOTCONN, w->ntopics + 1);
        else if (op->kind == OP_REPLAY && (w->failed = 1) && --w->left == 0)
            wreplay_finish(e, w, HR_ENOTCONN, w->ntopics + 1);
        op_free(op);
    }
}

/* A retired shard closes once nothing it was asked waits for an answer. */
static void retire_check(redis_t *e)
{
    if (e->retired && !e->inflight.head && (e->cmd || e->sub))
        link_down(e, NULL);
}

static void link_down(redis_t *e, const char *why)
{
    if (e->tearing || e->destroying)
        return;
    e->tearing = 1;
    if (!e->logged_down && !e->retired) {
        HR_LOG(HR_LOG_WARN, 0, "redis engine: %s:%d unreachable (%s): retrying", e->host, e->port,
               why ? why : "error");
        e->logged_down = 1;
    }
    e->cmd_ready = 0;
    e->pending_confirms = 0;
    close_both(e);
    wake_waiters(e);                      /* a PONG does not wait for a Redis that is away */
    echo_done(e, NULL, 0, 0, UINT64_MAX); /* sequenced; what was lost shows as a GAP */
    e->tearing = 0;
    if (e->retired) {
        fail_queued(e);
        return;
    }
    uv_timer_start(&e->retry, on_retry, e->backoff, 0);
    e->backoff = e->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : e->backoff * 2;
}

static void connect_ip(redis_t *e)
{
    e->attempt_ms = now_ms(e);
    e->connects++;
    if (e->connects > 1)
        e->reconnects++;
    redisAsyncContext *ac = redisAsyncConnect(e->ip, e->port);
    if (!ac || ac->err) {
        const char *why = ac ? ac->errstr : "out of memory";
        char buf[128];
        snprintf(buf, sizeof(buf), "%s", why);
        if (ac)
            redisAsyncFree(ac);
        link_down(e, buf);
        return;
    }
    ac->data = e;
    if (redisLibuvAttach(ac, e->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        link_down(e, "cannot attach to the loop");
        return;
    }
    /* The engine's handles do not keep the loop alive: the server's do. */
    uv_unref((uv_handle_t *)&((redisLibuvEvents *)ac->ev.data)->handle);
    redisAsyncSetConnectCallback(ac, on_cmd_connect);
    redisAsyncSetDisconnectCallback(ac, on_cmd_disconnect);
    e->cmd = ac;

    e->sub = redisConnectNonBlock(e->ip, e->port);
    if (!e->sub || e->sub->err || !(e->subpoll = malloc(sizeof(*e->subpoll))) ||
        uv_poll_init(e->loop, e->subpoll, e->sub->fd) != 0) {
        free(e->subpoll);
        e->subpoll = NULL;
        link_down(e, e->sub && e->sub->err ? e->sub->errstr : "cannot connect");
        return;
    }
    e->subpoll->data = e;
    uv_unref((uv_handle_t *)e->subpoll);
    e->sub_events = UV_WRITABLE;
    uv_poll_start(e->subpoll, e->sub_events, on_sub_poll);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    redis_t *e = req->data;
    e->resolving = 0;
    if (e->destroying) {
        uv_freeaddrinfo(res);
        return;
    }
    if (status != 0 || !res) {
        uv_freeaddrinfo(res);
        link_down(e, status ? uv_strerror(status) : "no address");
        return;
    }
    uv_ip_name(res->ai_addr, e->ip, sizeof(e->ip));
    uv_freeaddrinfo(res);
    connect_ip(e);
}

static void connect_start(redis_t *e)
{
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if (e->destroying || e->retired)
        return;
    if (uv_ip4_addr(e->host, e->port, &a4) == 0 || uv_ip6_addr(e->host, e->port, &a6) == 0) {
        snprintf(e->ip, sizeof(e->ip), "%s", e->host);
        connect_ip(e);
        return;
    }
    /* A name is resolved off the loop (getaddrinfo blocks). */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    e->gai.data = e;
    if (uv_getaddrinfo(e->loop, &e->gai, on_resolved, e->host, NULL, &hints) == 0)
        e->resolving = 1;
    else
        link_down(e, "cannot resolve the host name");
}

/* ---- operations ------------------------------------------------------------------------------ */

static int r_publish(hr_engine_t *base, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg)
{
    redis_t *e = (redis_t *)base;
    /* The body with seq 0 (one byte) gives the parts before and after the seq the script
     * puts there: the one encoder of delivery bodies stays msg.c's. */
    hr_msg_t *m = hr_msg_new_delivery(p->topic, 0, p->payload, p->reply, p->headers, 0);
    op_t *op = m ? op_new(e, OP_PUB, p->topic.p, p->topic.n) : NULL;
    size_t sk = 0, hk = 0, ek, ck = 0;
    char *skey = op ? key_of(e, p->topic.p, p->topic.n, ":s", 0, &sk) : NULL;
    char *hkey = op ? key_of(e, p->topic.p, p->topic.n, ":h", 0, &hk) : NULL;
    char *chan = op ? key_of(e, p->topic.p, p->topic.n, "", 0, &ck) : NULL;
    char *qkey = NULL, maxlen[16], ttl[24];
    size_t qk = 0;
    int st = HR_ENOMEM;
    if (!skey || !hkey || !chan)
        goto out;
    const uint8_t *b = hr_msg_bytes(m);
    hr_slice_t topic, payload, opts;
    uint64_t zero;
    hr_msg_delivery_parts(m, &topic, &zero, &payload, &opts);
    size_t head = (size_t)((const uint8_t *)topic.p + topic.n - b);
    uint8_t env[ENV_HEAD];
    memcpy(env, e->node, 8);
    for (int i = 0; i < 8; i++)
        env[8 + i] = (uint8_t)(p->origin >> (56 - 8 * i));
    env[16] = p->no_echo ? 1 : 0;
    ek = strlen(e->ekey);
    snprintf(maxlen, sizeof(maxlen), "%u", e->history_msgs);
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)e->ttl);
    if (!(qkey = key_of(e, p->topic.p, p->topic.n, ":q", 0, &qk)))
        goto out;
    /* Declared keys first (one slot), then the arguments; a cluster shard's own keys go last,
     * undeclared (see PUB_LUA). */
    const char *argv[18] = {"EVALSHA", e->pub_sha, e->sharded ? "3" : "6", skey, hkey, qkey};
    size_t lens[18] = {7, 40, 1, sk, hk, qk};
    int n = 6;
    if (!e->sharded) {
        argv[n] = e->ekey, lens[n++] = ek;
        argv[n] = e->qwkey, lens[n++] = strlen(e->qwkey);
        argv[n] = e->wikey, lens[n++] = strlen(e->wikey);
    }
    const char *args[] = {e->fresh,
                          maxlen,
                          ttl,
                          chan,
                          (const char *)b,
                          (const char *)b + head + 1,
                          (const char *)env,
                          p->topic.p,
                          e->sharded ? "s" : "-"};
    size_t alens[] = {strlen(e->fresh),  strlen(maxlen), strlen(ttl), ck, head,
                      m->len - head - 1, ENV_HEAD,       p->topic.n,  1};
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        argv[n] = args[i], lens[n++] = alens[i];
    if (e->sharded) {
        argv[n] = e->ekey, lens[n++] = ek;
        argv[n] = e->qwkey, lens[n++] = strlen(e->qwkey);
        argv[n] = e->wikey, lens[n++] = strlen(e->wikey);
    }
    if (format(op, n, argv, lens) != HR_OK)
        goto out;
    op->hash = p->hash;
    op->pub_cb = cb;
    op->arg = arg;
    st = submit(e, op);
    op = NULL;
out:
    if (op)
        op_free(op);
    free(skey);
    free(hkey);
    free(chan);
    free(qkey);
    hr_msg_unref(&m);
    return st;
}

static op_t *replay_op(redis_t *e, const hr_erange_t *r, const char *topic, size_t tn)
{
    op_t *op = op_new(e, OP_REPLAY, topic, tn);
    size_t sk = 0, hk = 0, ek;
    char *skey = op ? key_of(e, topic, tn, ":s", 0, &sk) : NULL;
    char *hkey = op ? key_of(e, topic, tn, ":h", 0, &hk) : NULL;
    char since[24], last[24];
    int ok = 0;
    if (skey && hkey) {
        ek = strlen(e->ekey);
        snprintf(since, sizeof(since), "%llu", (unsigned long long)r->since);
        snprintf(last, sizeof(last), "%llu", (unsigned long long)r->last);
        const char *argv[13] = {"EVALSHA", e->replay_sha, e->sharded ? "2" : "3", skey, hkey};
        size_t lens[13] = {7, 40, 1, sk, hk};
        int n = 5;
        if (!e->sharded) /* a cluster shard's epoch is in another slot: last, undeclared */
            argv[n] = e->ekey, lens[n++] = ek;
        const char *args[] = {r->has_since ? "1" : "0", since,
                              r->has_last ? "1" : "0",  last,
                              r->has_epoch ? "1" : "0", r->epoch.n ? r->epoch.p : ""};
        size_t alens[] = {1, strlen(since), 1, strlen(last), 1, r->epoch.n};
        for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
            argv[n] = args[i], lens[n++] = alens[i];
        if (e->sharded)
            argv[n] = e->ekey, lens[n++] = ek;
        ok = format(op, n, argv, lens) == HR_OK;
    }
    free(skey);
    free(hkey);
    if (!ok && op) {
        op_free(op);
        op = NULL;
    }
    return op;
}

static void wreplay_free(wreplay_t *w)
{
    for (size_t i = 0; i < w->ntopics; i++)
        free(w->topics[i]);
    free(w->topics);
    free(w->glob);
    free(w->bytes);
    free(w);
}

static void wreplay_finish(redis_t *e, wreplay_t *w, int status, uint64_t topics)
{
    (void)e;
    w->done(w->arg, status, topics);
    wreplay_free(w);
}

static int scan_next(redis_t *e, wreplay_t *w)
{
    op_t *op = op_new(e, OP_SCAN, "", 0);
    if (!op)
        return HR_ENOMEM;
    const char *argv[] = {"SCAN", w->cursor, "MATCH", w->glob, "COUNT", "1000"};
    if (format(op, 6, argv, NULL) != HR_OK) {
        op_free(op);
        return HR_ENOMEM;
    }
    op->w = w;
    return submit(e, op);
}

/* After each SCAN page: the next page, or (cursor back at 0) one replay per topic found. */
static void wreplay_step(redis_t *e, wreplay_t *w)
{
    int st;
    if (w->failed) {
        wreplay_finish(e, w, HR_ENOMEM, w->ntopics + 1);
        return;
    }
    if (w->r.scan_budget && w->ntopics + 1 > w->r.scan_budget) {
        wreplay_finish(e, w, HR_ELIMIT, w->r.scan_budget);
        return;
    }
    if (strcmp(w->cursor, "0") != 0) {
        if ((st = scan_next(e, w)) != HR_OK)
            wreplay_finish(e, w, st, w->ntopics + 1);
        return;
    }
    w->cursor[0] = 0;
    if (!w->ntopics) {
        wreplay_finish(e, w, HR_OK, 1);
        return;
    }
    w->left = w->ntopics;
    for (size_t i = 0; i < w->ntopics; i++) {
        op_t *op = replay_op(e, &w->r, w->topics[i], strlen(w->topics[i]));
        if (op) {
            op->w = w;
            op->msg_cb = w->msg;
            op->arg = w->arg;
        }
        if (!op || submit(e, op) != HR_OK) {
            w->failed = 1;
            if (--w->left == 0) {
                wreplay_finish(e, w, HR_ENOTCONN, w->ntopics + 1);
                return;
            }
        }
    }
}

static int r_replay(hr_engine_t *base, const hr_erange_t *r, hr_engine_msg_cb msg,
                    hr_engine_done_cb done, void *arg)
{
    redis_t *e = (redis_t *)base;
    if (!r->wildcard) {
        op_t *op = replay_op(e, r, r->pattern.p, r->pattern.n);
        if (!op)
            return HR_ENOMEM;
        op->msg_cb = msg;
        op->done_cb = done;
        op->arg = arg;
        return submit(e, op);
    }
    wreplay_t *w = calloc(1, sizeof(*w));
    size_t gn;
    if (!w || !(w->bytes = malloc(r->pattern.n + r->epoch.n + 1)) ||
        !(w->glob = key_of(e, r->pattern.p, r->pattern.n, ":s", 1, &gn))) {
        if (w)
            free(w->bytes);
        free(w);
        return HR_ENOMEM;
    }
    w->r = *r;
    memcpy(w->bytes, r->pattern.p, r->pattern.n);
    if (r->epoch.n)
        memcpy(w->bytes + r->pattern.n, r->epoch.p, r->epoch.n);
    w->r.pattern.p = w->bytes;
    w->r.epoch.p = w->bytes + r->pattern.n;
    snprintf(w->cursor, sizeof(w->cursor), "0");
    w->msg = msg;
    w->done = done;
    w->arg = arg;
    int st = scan_next(e, w);
    if (st != HR_OK)
        wreplay_free(w);
    return st;
}

static int is_pattern(const char *p, size_t n)
{
    return hr_topic_validate(p, n) != HR_OK;
}

enum { I_SUB = 1, I_GROUPS = 2, I_WI = 4 };

/*
 * Local interest in `s` came (+1) or went (-1). I_SUB: (un)subscribe its channel or glob when
 * the first one comes or the last goes; I_GROUPS: its queue group's registration; I_WI: a
 * pattern's registration in the shard's wildcard interest (Redis Cluster).
 */
static int interest(redis_t *e, const hr_sub_t *s, int delta, int what)
{
    int pat = is_pattern(s->pattern, s->plen);
    if ((what & I_GROUPS) && s->queue)
        group_count(e, s, delta);
    if ((what & I_WI) && pat)
        reg_count(e, &e->wpats, s->pattern, s->plen, delta, 1);
    if (!(what & I_SUB))
        return HR_OK;
    hr_map_t *m = pat ? &e->patterns : &e->channels;
    uintptr_t n = (uintptr_t)hr__map_get(m, s->pattern, s->plen);
    const char *verb = pat ? "PSUBSCRIBE" : e->sharded ? "SSUBSCRIBE" : "SUBSCRIBE";
    if (delta > 0) {
        if (hr__map_put(m, s->pattern, s->plen, (void *)(n + 1)) != 0)
            return HR_ENOMEM;
        if (n == 0)
            sub_cmd(e, verb, s->pattern, s->plen, pat);
        return HR_OK;
    }
    if (n > 1) {
        hr__map_put(m, s->pattern, s->plen, (void *)(n - 1));
        return HR_OK;
    }
    if (n == 0)
        return HR_OK;
    hr__map_del(m, s->pattern, s->plen);
    verb = pat ? "PUNSUBSCRIBE" : e->sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE";
    sub_cmd(e, verb, s->pattern, s->plen, pat);
    /* What is remembered of topics this node may stop hearing would make the next message
     * after a resubscription look like a hole. */
    if (pat) {
        hr__map_destroy(e->lastp);
        hr__map_init(e->lastp);
    } else {
        hr__map_del(e->lastp, s->pattern, s->plen);
    }
    return HR_OK;
}

static int r_interest_add(hr_engine_t *base, const struct hr_sub_s *sub)
{
    const hr_sub_t *s = (const hr_sub_t *)sub;
    return s->conn ? interest((redis_t *)base, s, 1, I_SUB | I_GROUPS) : HR_OK;
}

static void r_interest_remove(hr_engine_t *base, const struct hr_sub_s *sub)
{
    const hr_sub_t *s = (const hr_sub_t *)sub;
    if (s->conn)
        interest((redis_t *)base, s, -1, I_SUB | I_GROUPS);
}

static const char *r_epoch(hr_engine_t *base)
{
    redis_t *e = (redis_t *)base;
    return e->epoch;
}

static void r_stats(hr_engine_t *base, hr_engine_stats_t *st)
{
    redis_t *e = (redis_t *)base;
    st->remote = 1;
    st->remote_up = e->cmd_ready && e->sub_connected;
    st->queued_bytes = e->queued_bytes;
    uint64_t t0 = 0;
    if (e->inflight.head)
        t0 = e->inflight.head->t0;
    if (e->queue.head && (!t0 || e->queue.head->t0 < t0))
        t0 = e->queue.head->t0;
    st->lag_ms = t0 ? now_ms(e) - t0 : 0;
    st->reconnects = e->reconnects;
    st->gaps = e->gaps;
    st->resets = e->resets;
}

static int r_barrier(hr_engine_t *base, void (*cb)(void *arg), void *arg)
{
    redis_t *e = (redis_t *)base;
    if (!e->pending_confirms || !e->sub_connected)
        return 0;
    waiter_t *w = malloc(sizeof(*w));
    if (!w)
        return 0;
    *w = (waiter_t){e->waiters, cb, arg};
    e->waiters = w;
    return 1;
}

static void free_list(oplist_t *l)
{
    op_t *op;
    while ((op = list_pop(l)) != NULL)
        op_drop(op);
}

static void retry_closed(uv_handle_t *h)
{
    free(h->data);
}

static void r_destroy(hr_engine_t *base)
{
    redis_t *e = (redis_t *)base;
    e->destroying = 1;
    /* The loop has ended: what the last turn queued (a leaving node's unregistrations from its
     * queue groups) is written once more without waiting, so Redis stops picking this node. */
    if (e->cmd && e->cmd_ready)
        redisAsyncHandleWrite(e->cmd);
    close_both(e); /* the callbacks of commands in flight run with no reply and are dropped */
    /* Wildcard replays still waiting for their per-topic answers were freed with nothing. */
    free_list(&e->queue);
    free_list(&e->inflight);
    free_list(&e->echo);
    while (e->waiters) {
        waiter_t *w = e->waiters;
        e->waiters = w->next;
        free(w);
    }
    hr__map_destroy(&e->channels);
    hr__map_destroy(&e->patterns);
    hr__map_destroy(&e->last);
    hr__map_destroy(&e->groups);
    hr__map_destroy(&e->wpats);
    free(e->pub_src);
    free(e->replay_src);
    if (e->resolving)
        uv_cancel((uv_req_t *)&e->gai);
    uv_loop_t *loop = e->loop;
    uv_close((uv_handle_t *)&e->renew, NULL);
    uv_close((uv_handle_t *)&e->retry, retry_closed);
    uv_run(loop, UV_RUN_NOWAIT); /* the close callbacks of the engine's handles */
}

static const hr_engine_ops_t redis_ops = {
    .name = "redis",
    .sync = 0,
    .fans_out = 1,
    .publish = r_publish,
    .replay = r_replay,
    .interest_add = r_interest_add,
    .interest_remove = r_interest_remove,
    .epoch = r_epoch,
    .stats = r_stats,
    .destroy = r_destroy,
    .barrier = r_barrier,
};

/* ---- set-up ------------------------------------------------------------------------------- */

int hr__engine_redis_is_url(const char *url)
{
    return strncmp(url, "redis://", 8) == 0 || strncmp(url, "redis+cluster://", 16) == 0;
}

static void sha_hex(const char *script, char out[41])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)script, strlen(script), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* redis://[[user]:password@]host[:port][/db]; IPv6 hosts in brackets. */
static int parse_url(redis_t *e, const char *url, char *err, size_t errlen)
{
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "'%s' is not a redis:// URL", url);
        return HR_EINVAL;
    }
    const char *p = url + 8, *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if ((size_t)(at - pw) >= sizeof(e->password) ||
            (colon && (size_t)(colon - p) >= sizeof(e->user))) {
            snprintf(err, errlen, "the user name or password is too long");
            return HR_EINVAL;
        }
        if (colon) { /* redis://user:password@ (ACL) or redis://:password@ */
            memcpy(e->user, p, (size_t)(colon - p));
            e->user[colon - p] = 0;
        }
        memcpy(e->password, pw, (size_t)(at - pw));
        e->password[at - pw] = 0;
        p = at + 1;
    }
    const char *hend;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend) {
            snprintf(err, errlen, "unclosed '[' in the host");
            return HR_EINVAL;
        }
        p++;
    } else {
        hend = p + strcspn(p, ":/");
    }
    if (hend == p || (size_t)(hend - p) >= sizeof(e->host)) {
        snprintf(err, errlen, "no host in '%s'", url);
        return HR_EINVAL;
    }
    memcpy(e->host, p, (size_t)(hend - p));
    e->host[hend - p] = 0;
    p = *hend == ']' ? hend + 1 : hend;
    e->port = 6379;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535) {
            snprintf(err, errlen, "bad port in '%s'", url);
            return HR_EINVAL;
        }
        e->port = (int)v;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || v < 0 || v > 1000000) {
            snprintf(err, errlen, "bad database number in '%s'", url);
            return HR_EINVAL;
        }
        e->db = (int)v;
    } else if (*p && strcmp(p, "/") != 0) {
        snprintf(err, errlen, "unexpected '%s' in '%s'", p, url);
        return HR_EINVAL;
    }
    return HR_OK;
}

static char *cat(const char *a, const char *b)
{
    size_t an = strlen(a), bn = strlen(b);
    char *r = malloc(an + bn + 1);
    if (r) {
        memcpy(r, a, an);
        memcpy(r + an, b, bn + 1);
    }
    return r;
}

/*
 * Sets up `e` (host, port and credentials already there) and starts connecting. `node` is the
 * node's random id (16 bytes: the id, then the epoch candidate); `tag` is NULL for a single
 * Redis, else the hash tag that puts this shard's own keys on it.
 */
static int redis_init(redis_t *e, uv_loop_t *loop, const hr_redis_opts_t *o, const uint8_t *rnd,
                      const char *tag)
{
    e->base.ops = &redis_ops;
    e->loop = loop;
    e->sharded = tag != NULL;
    snprintf(e->name_cmd, sizeof(e->name_cmd), "herald-%d-cmd", (int)uv_os_getpid());
    snprintf(e->name_sub, sizeof(e->name_sub), "herald-%d-sub", (int)uv_os_getpid());
    snprintf(e->prefix, sizeof(e->prefix), "%s", o->prefix);
    e->plen = strlen(e->prefix);
    e->history_msgs = o->history_msgs;
    e->ttl = o->history_ttl_s;
    e->queue_max = o->queue_max;
    e->hooks = o->hooks;
    e->backoff = BACKOFF_MIN_MS;
    hr__map_init(&e->channels);
    hr__map_init(&e->patterns);
    hr__map_init(&e->last);
    hr__map_init(&e->groups);
    hr__map_init(&e->wpats);
    e->lastp = &e->last;
    e->exactp = &e->channels;
    e->patp = &e->patterns;
    e->echop = &e->echo;
    e->pub_src = cat(tag ? XSLOT : "", PUB_LUA);
    e->replay_src = cat(tag ? XSLOT : "", REPLAY_LUA);
    if (!e->pub_src || !e->replay_src)
        return HR_ENOMEM;
    /* EVALSHA names a script by its SHA-1: known before Redis is, so commands can be made
     * (and queued) while it is out of reach. SCRIPT LOAD at each connection puts them there. */
    sha_hex(e->pub_src, e->pub_sha);
    sha_hex(e->replay_src, e->replay_sha);
    sha_hex(REG_LUA, e->reg_sha);
    memcpy(e->node, rnd, 8);
    for (int i = 0; i < 8; i++) {
        snprintf(e->node_hex + 2 * i, 3, "%02x", rnd[i]);
        snprintf(e->fresh + 2 * i, 3, "%02x", rnd[8 + i]);
    }
    const char *t = tag ? tag : "";
    snprintf(e->ekey, sizeof(e->ekey), "%s%s%s%sepoch", e->prefix, tag ? "{" : "", t,
             tag ? "}" : "");
    snprintf(e->qwkey, sizeof(e->qwkey), "%s%s%s%sqw", e->prefix, tag ? "{" : "", t,
             tag ? "}" : "");
    snprintf(e->wikey, sizeof(e->wikey), "%s%s%s%swi", e->prefix, tag ? "{" : "", t,
             tag ? "}" : "");
    /* Until Redis names the epoch, one of this node's own: a client resuming meanwhile is told
     * its seqs may not mean what they did (ERR 10), never the opposite. */
    snprintf(e->epoch, sizeof(e->epoch), "%s", e->fresh);
    uv_timer_init(loop, &e->retry);
    e->retry.data = e;
    uv_unref((uv_handle_t *)&e->retry);
    uv_timer_init(loop, &e->renew);
    e->renew.data = e;
    uv_timer_start(&e->renew, on_renew, REG_RENEW_MS, REG_RENEW_MS);
    uv_unref((uv_handle_t *)&e->renew);
    connect_start(e);
    return HR_OK;
}

static void node_random(uint8_t rnd[16])
{
    if (uv_random(NULL, NULL, rnd, 16, 0, NULL) != 0) {
        uv_timeval64_t tv;
        uv_gettimeofday(&tv);
        memset(rnd, 0, 16);
        memcpy(rnd, &tv, sizeof(tv) < 16 ? sizeof(tv) : 16);
        rnd[15] ^= (uint8_t)uv_os_getpid();
    }
}

static int cluster_new(uv_loop_t *loop, const hr_redis_opts_t *o, hr_engine_t **out, char *err,
                       size_t errlen);

int hr__engine_redis_new(uv_loop_t *loop, const hr_redis_opts_t *o, hr_engine_t **out, char *err,
                         size_t errlen)
{
    if (strncmp(o->url, "redis+cluster://", 16) == 0)
        return cluster_new(loop, o, out, err, errlen);
    redis_t *e = calloc(1, sizeof(*e));
    if (!e)
        return HR_ENOMEM;
    int st = parse_url(e, o->url, err, errlen);
    if (st != HR_OK) {
        free(e);
        return st;
    }
    uint8_t rnd[16];
    node_random(rnd);
    if (redis_init(e, loop, o, rnd, NULL) != HR_OK) {
        free(e->pub_src);
        free(e->replay_src);
        free(e);
        return HR_ENOMEM;
    }
    *out = &e->base;
    return HR_OK;
}

/* ---- Redis Cluster ---------------------------------------------------------------------- */

/*
 * `redis+cluster://h1:p1,h2:p2,...` runs one redis_t per master ("shard"), each with its own
 * two connections, subscriptions and queue of commands, and routes every topic to the shard
 * that owns its hash slot. hiredis 0.14 knows nothing of Redis Cluster, so the slot map
 * (CLUSTER SLOTS, asked of the first seed that answers) and the key-to-slot hash (CRC16 of the
 * hash tag, as the Redis Cluster specification defines it) are written here.
 *
 * Exact topics use sharded pub/sub (SSUBSCRIBE on the owning shard, SPUBLISH in the script),
 * so a message travels to one shard only. A pattern cannot be subscribed shard by shard: the
 * node PSUBSCRIBEs on one shard and registers the pattern in every shard's wildcard interest,
 * and a shard's publish script then also PUBLISHes (cluster-wide) the messages of topics that
 * some registered pattern matches. Each shard keeps its own epoch; the node's epoch is made
 * from all of them, so any shard that lost its data changes it.
 *
 * When Redis answers that a slot is elsewhere (MOVED, ASK, CLUSTERDOWN, or a shard channel
 * unsubscribed unasked), the node reads the slot map again and starts over with new shards:
 * every local subscription is routed again, and the old shards finish the commands they
 * sent (those for moved slots fail: their publishes get ERR 7) and close. What a node misses
 * meanwhile shows as GAPs.
 */

#define CL_MAX_SHARDS 64
#define CL_MAX_SEEDS 16

static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0; /* CRC16-CCITT (XMODEM), as Redis Cluster uses it */
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int j = 0; j < 8; j++)
            crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* The hash slot of a key: of its hash tag (between the first '{' and the next '}') when it has
 * a non-empty one. */
static unsigned key_slot(const char *k, size_t n)
{
    const char *o = memchr(k, '{', n);
    if (o) {
        const char *c = memchr(o + 1, '}', n - (size_t)(o + 1 - k));
        if (c && c > o + 1) {
            k = o + 1;
            n = (size_t)(c - k);
        }
    }
    return crc16(k, n) & 16383u;
}

typedef struct cluster_s {
    hr_engine_t base;
    uv_loop_t *loop;
    hr_redis_opts_t o;
    redis_t cred; /* the URL's user and password (nothing else of it is used) */
    struct {
        char host[256];
        int port;
    } seeds[CL_MAX_SEEDS];
    int nseeds, seed_i;
    redisAsyncContext *topo; /* asking a seed for the slot map */
    uv_timer_t retry;
    uint64_t backoff;
    redis_t *shard[CL_MAX_SHARDS];
    int n;
    redis_t *retired[4 * CL_MAX_SHARDS]; /* shards of earlier slot maps, closed when drained */
    int nretired;
    int refreshing;        /* asking for the slot map again */
    uint64_t last_refresh; /* loop time of the last time it was asked */
    uint64_t refreshes;
    uint8_t slot_shard[16384]; /* shard index + 1; 0: no master known */
    uint8_t rnd[16];           /* the node's id and epoch candidate, shared by its shards */
    hr_map_t last, exact;      /* shared by the shards (see on_message) */
    oplist_t echo;             /* shared by the shards (see echo_wait) */
    hr_map_t subs;             /* every local subscription with interest (pointer -> 1) */
    char epoch[65];
    int have_epoch, destroying;
    uint64_t resets;
} cluster_t;

static const hr_engine_ops_t cluster_ops;

static redis_t *shard_of(cluster_t *c, const char *topic, size_t n)
{
    char key[HR_TOPIC_MAX + 200];
    size_t pl = strlen(c->o.prefix);
    if (pl + n + 4 > sizeof(key))
        return NULL;
    memcpy(key, c->o.prefix, pl);
    key[pl] = '{';
    memcpy(key + pl + 1, topic, n);
    memcpy(key + pl + 1 + n, "}:s", 3);
    unsigned i = c->slot_shard[key_slot(key, pl + n + 4)];
    return i ? c->shard[i - 1] : NULL;
}

/* The node's epoch: a digest of every shard's, once all are known. */
static void cl_on_epoch(void *arg)
{
    cluster_t *c = arg;
    unsigned char md[SHA_DIGEST_LENGTH];
    char all[CL_MAX_SHARDS * 65];
    size_t n = 0;
    for (int i = 0; i < c->n; i++) {
        if (!c->shard[i]->have_epoch)
            return;
        size_t l = strlen(c->shard[i]->epoch) + 1; /* with its NUL: a separator */
        memcpy(all + n, c->shard[i]->epoch, l);
        n += l;
    }
    SHA1((const unsigned char *)all, n, md);
    char ep[17];
    for (int i = 0; i < 8; i++)
        snprintf(ep + 2 * i, 3, "%02x", md[i]);
    if (c->have_epoch && strcmp(ep, c->epoch) == 0)
        return;
    int changed = c->have_epoch;
    snprintf(c->epoch, sizeof(c->epoch), "%s", ep);
    c->have_epoch = 1;
    if (changed) {
        c->resets++;
        HR_LOG(HR_LOG_WARN, 0, "redis engine: a cluster shard lost its data: new epoch %s", ep);
        hr__map_destroy(&c->last);
        hr__map_init(&c->last);
        if (c->o.hooks.reset)
            c->o.hooks.reset(c->o.hooks.arg);
    }
}

/* Local interest in `s` came or went: its channel on the shard that owns the topic; a
 * pattern's glob on the first shard and its registration on every shard. */
static void cl_route(cluster_t *c, const hr_sub_t *s, int delta)
{
    if (!is_pattern(s->pattern, s->plen)) {
        redis_t *e = shard_of(c, s->pattern, s->plen);
        uintptr_t n = (uintptr_t)hr__map_get(&c->exact, s->pattern, s->plen);
        if (delta > 0)
            hr__map_put(&c->exact, s->pattern, s->plen, (void *)(n + 1));
        else if (n > 1)
            hr__map_put(&c->exact, s->pattern, s->plen, (void *)(n - 1));
        else
            hr__map_del(&c->exact, s->pattern, s->plen);
        if (e)
            interest(e, s, delta, I_SUB | I_GROUPS);
        return;
    }
    for (int i = 0; i < c->n; i++)
        interest(c->shard[i], s, delta, (i == 0 ? I_SUB : 0) | I_WI | I_GROUPS);
}

static void topo_connect(cluster_t *c);
static void on_topo_retry(uv_timer_t *t);

typedef struct route_arg_s {
    cluster_t *c;
    int delta;
} route_arg_t;

static void route_cb(void *arg, const void *k, size_t kl, void *val)
{
    route_arg_t *x = arg;
    const hr_sub_t *s;
    (void)kl;
    (void)val;
    memcpy(&s, k, sizeof(s));
    cl_route(x->c, s, x->delta);
}

static void route_all(cluster_t *c, int delta)
{
    route_arg_t x = {c, delta};
    hr__map_each(&c->subs, route_cb, &x);
}

/* A shard was told a slot is elsewhere: the slot map is read again (at most once a second). */
static void cl_moved(void *arg)
{
    cluster_t *c = arg;
    if (c->refreshing || c->destroying)
        return;
    c->refreshing = 1;
    uint64_t now = uv_now(c->loop), next = c->last_refresh + 1000;
    HR_LOG(HR_LOG_WARN, 0, "redis engine: the cluster's slots moved: reading the slot map again");
    if (c->last_refresh && next > now)
        uv_timer_start(&c->retry, on_topo_retry, next - now, 0);
    else
        topo_connect(c);
}

static void on_topo_retry(uv_timer_t *t)
{
    topo_connect(t->data);
}

static void topo_retry(cluster_t *c, const char *why)
{
    if (c->destroying)
        return;
    HR_LOG(HR_LOG_WARN, 0, "redis engine: no cluster slot map yet (%s): retrying", why);
    uv_timer_start(&c->retry, on_topo_retry, c->backoff, 0);
    c->backoff = c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
}

/* Makes the shards from a CLUSTER SLOTS answer; 0, or -1 when it made none. */
static int build_shards(cluster_t *c, const redisReply *r, const char *seed_host)
{
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *en = r->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements < 3 ||
            en->element[0]->type != REDIS_REPLY_INTEGER ||
            en->element[1]->type != REDIS_REPLY_INTEGER ||
            en->element[2]->type != REDIS_REPLY_ARRAY || en->element[2]->elements < 2)
            continue;
        const redisReply *m = en->element[2];
        const char *ip = m->element[0]->type == REDIS_REPLY_STRING && m->element[0]->len
                             ? m->element[0]->str
                             : seed_host;
        int port = (int)m->element[1]->integer, k;
        long long lo = en->element[0]->integer, hi = en->element[1]->integer;
        if (lo < 0 || hi > 16383 || lo > hi)
            continue;
        for (k = 0; k < c->n; k++)
            if (strcmp(c->shard[k]->host, ip) == 0 && c->shard[k]->port == port)
                break;
        if (k == c->n) {
            redis_t *e = k < CL_MAX_SHARDS ? calloc(1, sizeof(*e)) : NULL;
            if (!e)
                continue;
            snprintf(e->host, sizeof(e->host), "%s", ip);
            e->port = port;
            memcpy(e->user, c->cred.user, sizeof(e->user));
            memcpy(e->password, c->cred.password, sizeof(e->password));
            c->shard[c->n++] = e;
        }
        for (long long sl = lo; sl <= hi; sl++)
            c->slot_shard[sl] = (uint8_t)(k + 1);
    }
    if (!c->n)
        return -1;
    for (int k = 0; k < c->n; k++) {
        redis_t *e = c->shard[k];
        char tag[16] = "";
        for (int i = 0; i < 1000000; i++) { /* a hash tag on this shard for its own keys */
            snprintf(tag, sizeof(tag), "%d", i);
            if (c->slot_shard[key_slot(tag, strlen(tag))] == k + 1)
                break;
        }
        e->lastp = &c->last;
        e->exactp = &c->exact;
        e->on_epoch = cl_on_epoch;
        e->epoch_arg = c;
        if (redis_init(e, c->loop, &c->o, c->rnd, tag) != HR_OK)
            HR_LOG(HR_LOG_ERROR, 0, "redis engine: out of memory for shard %s:%d", e->host,
                   e->port);
        e->lastp = &c->last; /* redis_init points them at its own */
        e->exactp = &c->exact;
        e->patp = &c->shard[0]->patterns;
        e->echop = &c->echo;
    }
    for (int k = 0; k < c->n; k++)
        c->shard[k]->on_moved = cl_moved;
    route_all(c, 1);
    HR_LOG(HR_LOG_INFO, 0, "redis engine: cluster of %d shard%s", c->n, c->n == 1 ? "" : "s");
    return 0;
}

/* A new slot map: the current shards retire (they finish what they sent, then close) and
 * every local subscription goes to the shards of the new map. */
static int rebuild(cluster_t *c, const redisReply *r, const char *seed)
{
    if (c->nretired + c->n > (int)(sizeof(c->retired) / sizeof(c->retired[0]))) {
        HR_LOG(HR_LOG_ERROR, 0, "redis engine: the cluster's slots moved too often: restart");
        return 0;
    }
    route_all(c, -1);
    int n = c->n;
    for (int k = 0; k < n; k++) {
        redis_t *e = c->shard[k];
        e->retired = 1;
        uv_timer_stop(&e->renew);
        uv_timer_stop(&e->retry);
        wake_waiters(e);
        if (!e->cmd_ready || !e->sub_connected)
            fail_queued(e); /* it would never send them */
        retire_check(e);
        c->retired[c->nretired++] = e;
    }
    c->n = 0;
    memset(c->slot_shard, 0, sizeof(c->slot_shard));
    c->refreshes++;
    if (build_shards(c, r, seed) != 0) {
        HR_LOG(HR_LOG_ERROR, 0, "redis engine: the new slot map names no master");
        return -1;
    }
    return 0;
}

static void on_slots(redisAsyncContext *ac, void *reply, void *priv)
{
    cluster_t *c = priv;
    redisReply *r = reply;
    c->topo = NULL;
    if (c->destroying || (c->n && !c->refreshing))
        return;
    const char *seed = c->seeds[(c->seed_i - 1) % c->nseeds].host;
    c->last_refresh = uv_now(c->loop);
    if (r && r->type == REDIS_REPLY_ARRAY && c->n) {
        c->refreshing = 0;
        rebuild(c, r, seed);
        redisAsyncDisconnect(ac);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || build_shards(c, r, seed) != 0) {
        topo_retry(c, r && r->type == REDIS_REPLY_ERROR ? r->str : "no slots");
        if (r)
            redisAsyncDisconnect(ac);
        return;
    }
    redisAsyncDisconnect(ac);
}

static void on_topo_connect(const redisAsyncContext *ac, int status)
{
    cluster_t *c = ac->data;
    if (status != REDIS_OK) {
        c->topo = NULL; /* hiredis frees it */
        topo_retry(c, ac->errstr);
    }
}

static void topo_connect(cluster_t *c)
{
    if (c->destroying || (c->n && !c->refreshing))
        return;
    int i = c->seed_i++ % c->nseeds;
    redisAsyncContext *ac = redisAsyncConnect(c->seeds[i].host, c->seeds[i].port);
    if (!ac || ac->err || redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        if (ac)
            redisAsyncFree(ac);
        topo_retry(c, "cannot connect");
        return;
    }
    uv_unref((uv_handle_t *)&((redisLibuvEvents *)ac->ev.data)->handle);
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_topo_connect);
    if (c->cred.user[0])
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", c->cred.user, c->cred.password);
    else if (c->cred.password[0])
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", c->cred.password);
    redisAsyncCommand(ac, on_slots, c, "CLUSTER SLOTS");
    c->topo = ac;
}

static int cl_publish(hr_engine_t *base, const hr_epub_t *p, hr_engine_pub_cb cb, void *arg)
{
    redis_t *e = shard_of((cluster_t *)base, p->topic.p, p->topic.n);
    return e ? r_publish(&e->base, p, cb, arg) : HR_ENOTCONN;
}

/* A replay over several shards (a pattern) or one: their answers combined. */
typedef struct cagg_s {
    int left, status, gap;
    uint64_t topics;
    hr_engine_msg_cb msg;
    hr_engine_done_cb done;
    void *arg;
} cagg_t;

static void agg_msg(void *arg, hr_slice_t topic, uint64_t seq, hr_msg_t *body)
{
    cagg_t *a = arg;
    a->msg(a->arg, topic, seq, body);
}

static void agg_done(void *arg, int st, uint64_t topics)
{
    cagg_t *a = arg;
    a->topics += topics;
    if (st == HR_EGAP)
        a->gap = 1;
    else if (st != HR_OK && a->status != HR_ELIMIT)
        a->status = st;
    if (--a->left)
        return;
    a->done(a->arg, a->status != HR_OK ? a->status : a->gap ? HR_EGAP : HR_OK, a->topics);
    free(a);
}

static int cl_replay(hr_engine_t *base, const hr_erange_t *r, hr_engine_msg_cb msg,
                     hr_engine_done_cb done, void *arg)
{
    cluster_t *c = (cluster_t *)base;
    redis_t *one = r->wildcard ? NULL : shard_of(c, r->pattern.p, r->pattern.n);
    if (!c->n || (!r->wildcard && !one))
        return HR_ENOTCONN;
    cagg_t *a = calloc(1, sizeof(*a));
    if (!a)
        return HR_ENOMEM;
    /* The shards know their own epochs; the client's is the node's, checked here. */
    hr_erange_t r2 = *r;
    r2.has_epoch = 0;
    if (r->has_epoch &&
        (r->epoch.n != strlen(c->epoch) || memcmp(r->epoch.p, c->epoch, r->epoch.n) != 0)) {
        a->gap = 1;
        r2.has_since = 1;
        r2.since = 0;
    }
    a->msg = msg;
    a->done = done;
    a->arg = arg;
    a->left = one ? 1 : c->n;
    if (one) {
        int st = r_replay(&one->base, &r2, agg_msg, agg_done, a);
        if (st < 0)
            free(a);
        return st;
    }
    a->left++; /* held until every shard was asked */
    for (int i = 0; i < c->n; i++) {
        int st = r_replay(&c->shard[i]->base, &r2, agg_msg, agg_done, a);
        if (st < 0)
            agg_done(a, st, 0);
    }
    agg_done(a, HR_OK, 0);
    return HR_OK;
}

static int cl_interest_add(hr_engine_t *base, const struct hr_sub_s *sub)
{
    cluster_t *c = (cluster_t *)base;
    const hr_sub_t *s = (const hr_sub_t *)sub;
    if (!s->conn)
        return HR_OK;
    if (hr__map_put(&c->subs, &s, sizeof(s), (void *)1) != 0)
        return HR_ENOMEM;
    if (c->n)
        cl_route(c, s, 1);
    return HR_OK;
}

static void cl_interest_remove(hr_engine_t *base, const struct hr_sub_s *sub)
{
    cluster_t *c = (cluster_t *)base;
    const hr_sub_t *s = (const hr_sub_t *)sub;
    if (!s->conn || !hr__map_del(&c->subs, &s, sizeof(s)))
        return;
    if (c->n)
        cl_route(c, s, -1);
}

static const char *cl_epoch(hr_engine_t *base)
{
    return ((cluster_t *)base)->epoch;
}

static void cl_stats(hr_engine_t *base, hr_engine_stats_t *st)
{
    cluster_t *c = (cluster_t *)base;
    st->remote = 1;
    st->remote_up = c->n > 0;
    for (int i = 0; i < c->n; i++) {
        hr_engine_stats_t one = {0};
        r_stats(&c->shard[i]->base, &one);
        st->remote_up &= one.remote_up;
        st->queued_bytes += one.queued_bytes;
        if (one.lag_ms > st->lag_ms)
            st->lag_ms = one.lag_ms;
        st->reconnects += one.reconnects;
        st->gaps += one.gaps;
    }
    st->resets = c->resets;
}

typedef struct cbar_s {
    int left;
    void (*cb)(void *arg);
    void *arg;
} cbar_t;

static void cbar_one(void *arg)
{
    cbar_t *b = arg;
    if (--b->left == 0) {
        b->cb(b->arg);
        free(b);
    }
}

static int cl_barrier(hr_engine_t *base, void (*cb)(void *arg), void *arg)
{
    cluster_t *c = (cluster_t *)base;
    cbar_t *b = malloc(sizeof(*b));
    if (!b)
        return 0;
    *b = (cbar_t){1, cb, arg};
    for (int i = 0; i < c->n; i++)
        if (r_barrier(&c->shard[i]->base, cbar_one, b))
            b->left++;
    if (--b->left == 0) {
        free(b);
        return 0;
    }
    return 1;
}

static void cl_retry_closed(uv_handle_t *h)
{
    cluster_t *c = h->data;
    hr__map_destroy(&c->last);
    hr__map_destroy(&c->exact);
    hr__map_destroy(&c->subs);
    free(c);
}

static void cl_destroy(hr_engine_t *base)
{
    cluster_t *c = (cluster_t *)base;
    c->destroying = 1;
    if (c->topo) {
        redisAsyncContext *ac = c->topo;
        c->topo = NULL;
        redisAsyncFree(ac);
    }
    for (int i = 0; i < c->n; i++)
        r_destroy(&c->shard[i]->base);
    for (int i = 0; i < c->nretired; i++)
        r_destroy(&c->retired[i]->base);
    free_list(&c->echo);
    uv_close((uv_handle_t *)&c->retry, cl_retry_closed);
    uv_run(c->loop, UV_RUN_NOWAIT);
}

static const hr_engine_ops_t cluster_ops = {
    .name = "redis",
    .sync = 0,
    .fans_out = 1,
    .publish = cl_publish,
    .replay = cl_replay,
    .interest_add = cl_interest_add,
    .interest_remove = cl_interest_remove,
    .epoch = cl_epoch,
    .stats = cl_stats,
    .destroy = cl_destroy,
    .barrier = cl_barrier,
};

/* redis+cluster://[[user]:password@]IP:PORT,IP:PORT,... */
static int cluster_new(uv_loop_t *loop, const hr_redis_opts_t *o, hr_engine_t **out, char *err,
                       size_t errlen)
{
    cluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return HR_ENOMEM;
    const char *p = o->url + 16, *at = strrchr(p, '@');
    char first[512];
    const char *list = at ? at + 1 : p;
    /* Credentials come from the URL as for a single Redis: parse "redis://<auth>@<first>". */
    size_t fl = strcspn(list, ",");
    snprintf(first, sizeof(first), "redis://%.*s%s%.*s", at ? (int)(at - p) : 0, p, at ? "@" : "",
             (int)fl, list);
    int st = parse_url(&c->cred, first, err, errlen);
    while (st == HR_OK && *list) {
        fl = strcspn(list, ",");
        char one[300];
        redis_t tmp;
        memset(&tmp, 0, sizeof(tmp));
        snprintf(one, sizeof(one), "redis://%.*s", (int)fl, list);
        struct sockaddr_in6 a6;
        struct sockaddr_in a4;
        if (c->nseeds == CL_MAX_SEEDS) {
            snprintf(err, errlen, "more than %d seed nodes", CL_MAX_SEEDS);
            st = HR_EINVAL;
        } else if ((st = parse_url(&tmp, one, err, errlen)) == HR_OK) {
            if (tmp.db || (uv_ip4_addr(tmp.host, tmp.port, &a4) != 0 &&
                           uv_ip6_addr(tmp.host, tmp.port, &a6) != 0)) {
                snprintf(err, errlen, "a redis+cluster:// seed must be IP:PORT, got '%.*s'",
                         (int)fl, list);
                st = HR_EINVAL;
            } else {
                snprintf(c->seeds[c->nseeds].host, sizeof(c->seeds[0].host), "%s", tmp.host);
                c->seeds[c->nseeds++].port = tmp.port;
            }
        }
        list += fl;
        if (*list == ',')
            list++;
    }
    if (st == HR_OK && !c->nseeds) {
        snprintf(err, errlen, "no seed node in '%s'", o->url);
        st = HR_EINVAL;
    }
    if (st != HR_OK) {
        free(c);
        return st;
    }
    c->base.ops = &cluster_ops;
    c->loop = loop;
    c->o = *o;
    c->backoff = BACKOFF_MIN_MS;
    node_random(c->rnd);
    for (int i = 0; i < 8; i++)
        snprintf(c->epoch + 2 * i, 3, "%02x", c->rnd[8 + i]); /* provisional, as for one Redis */
    hr__map_init(&c->last);
    hr__map_init(&c->exact);
    hr__map_init(&c->subs);
    uv_timer_init(loop, &c->retry);
    c->retry.data = c;
    uv_unref((uv_handle_t *)&c->retry);
    topo_connect(c);
    *out = &c->base;
    return HR_OK;
}

static int shard_ready(const redis_t *e)
{
    return e->have_epoch && e->cmd_ready && e->sub_connected && !e->pending_confirms;
}

int hr__engine_redis_ready(hr_engine_t *base)
{
    if (base->ops != &cluster_ops)
        return shard_ready((redis_t *)base);
    cluster_t *c = (cluster_t *)base;
    for (int i = 0; i < c->n; i++)
        if (!shard_ready(c->shard[i]))
            return 0;
    return c->n > 0 && c->have_epoch;
}
