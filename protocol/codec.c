/* SPDX-License-Identifier: MIT */
/* Frame codec: strict zero-copy decoder and msgpack-c based encoders. */
#include <string.h>

#include <msgpack.h>

#include "herald/protocol.h"

/*
 * Why a hand-written reader instead of msgpack_unpacker: msgpack-c 4.0.0
 * builds an object tree in a zone and sizes arrays and maps from their
 * declared counts before the bytes arrive (a 5-byte `dd ff ff ff ff` asks
 * for gigabytes), and its objects copy or reference through the zone. The
 * protocol only needs a handful of fixed shapes, so a bounds-checked cursor
 * that checks every declared count against the bytes actually present gives
 * zero-copy slices, no allocation at all, and a precise error for each
 * failure. Encoding goes through msgpack-c's packer.
 */
typedef struct rd_s {
    const uint8_t *p;
    const uint8_t *end;
} rd_t;

static size_t rd_left(const rd_t *r)
{
    return (size_t)(r->end - r->p);
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads the `n` bytes after the type byte as a big-endian integer. */
static int rd_be(rd_t *r, int n, uint64_t *v)
{
    if (rd_left(r) < (size_t)n)
        return 0;
    *v = be(r->p, n);
    r->p += n;
    return 1;
}

static int rd_uint(rd_t *r, uint64_t *v)
{
    if (r->p >= r->end)
        return 0;
    uint8_t t = *r->p;
    if (t <= 0x7f) {
        r->p++;
        *v = t;
        return 1;
    }
    if (t >= 0xcc && t <= 0xcf) {
        r->p++;
        return rd_be(r, 1 << (t - 0xcc), v);
    }
    if (t >= 0xd0 && t <= 0xd3) { /* signed encodings of non-negative values */
        int n = 1 << (t - 0xd0);
        if (rd_left(r) < (size_t)n + 1 || (r->p[1] & 0x80))
            return 0;
        r->p++;
        return rd_be(r, n, v);
    }
    return 0;
}

static int rd_lenprefixed(rd_t *r, size_t n, hr_slice_t *s)
{
    if (rd_left(r) < n)
        return 0;
    s->p = (const char *)r->p;
    s->n = n;
    r->p += n;
    return 1;
}

static int rd_str(rd_t *r, hr_slice_t *s)
{
    if (r->p >= r->end)
        return 0;
    uint8_t t = *r->p;
    uint64_t n;
    if ((t & 0xe0) == 0xa0) {
        r->p++;
        n = t & 0x1f;
    } else if (t >= 0xd9 && t <= 0xdb) {
        r->p++;
        if (!rd_be(r, 1 << (t - 0xd9), &n))
            return 0;
    } else {
        return 0;
    }
    return rd_lenprefixed(r, n, s);
}

static int rd_bin(rd_t *r, hr_slice_t *s)
{
    if (r->p >= r->end)
        return 0;
    uint8_t t = *r->p;
    uint64_t n;
    if (t < 0xc4 || t > 0xc6)
        return 0;
    r->p++;
    if (!rd_be(r, 1 << (t - 0xc4), &n))
        return 0;
    return rd_lenprefixed(r, n, s);
}

static int rd_bool(rd_t *r, int *b)
{
    if (r->p >= r->end || (*r->p != 0xc2 && *r->p != 0xc3))
        return 0;
    *b = *r->p++ == 0xc3;
    return 1;
}

static int rd_nil(rd_t *r)
{
    if (r->p >= r->end || *r->p != 0xc0)
        return 0;
    r->p++;
    return 1;
}

/* Container headers: the declared count is checked against the bytes left
 * (every element takes at least one byte), so a count can never ask for
 * more than the input holds. */
static int rd_container(rd_t *r, int map, uint32_t *n)
{
    if (r->p >= r->end)
        return 0;
    uint8_t t = *r->p;
    uint64_t v;
    uint8_t fix = map ? 0x80 : 0x90, x16 = map ? 0xde : 0xdc;
    if ((t & 0xf0) == fix) {
        r->p++;
        v = t & 0x0f;
    } else if (t == x16 || t == x16 + 1) {
        r->p++;
        if (!rd_be(r, t == x16 ? 2 : 4, &v))
            return 0;
    } else {
        return 0;
    }
    if (v * (map ? 2 : 1) > rd_left(r))
        return 0;
    *n = (uint32_t)v;
    return 1;
}

#define SKIP_DEPTH_MAX 32

/* Skips one value of any type (unknown option values). */
static int rd_skip(rd_t *r, int depth)
{
    if (r->p >= r->end || depth > SKIP_DEPTH_MAX)
        return 0;
    uint8_t t = *r->p;
    uint64_t n;
    hr_slice_t s;
    uint32_t cnt;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        r->p++;
        return 1;
    }
    if ((t & 0xe0) == 0xa0 || (t >= 0xd9 && t <= 0xdb))
        return rd_str(r, &s);
    if (t >= 0xc4 && t <= 0xc6)
        return rd_bin(r, &s);
    if ((t & 0xf0) == 0x80 || (t & 0xf0) == 0x90 || (t >= 0xdc && t <= 0xdf)) {
        int map = (t & 0xf0) == 0x80 || t == 0xde || t == 0xdf;
        if (!rd_container(r, map, &cnt))
            return 0;
        for (uint64_t i = 0; i < (uint64_t)cnt * (map ? 2 : 1); i++)
            if (!rd_skip(r, depth + 1))
                return 0;
        return 1;
    }
    r->p++;
    switch (t) {
    case 0xcc:
    case 0xd0:
        n = 1;
        break;
    case 0xcd:
    case 0xd1:
        n = 2;
        break;
    case 0xca:
    case 0xce:
    case 0xd2:
        n = 4;
        break;
    case 0xcb:
    case 0xcf:
    case 0xd3:
        n = 8;
        break;
    case 0xd4:
        n = 2;
        break;
    case 0xd5:
        n = 3;
        break;
    case 0xd6:
        n = 5;
        break;
    case 0xd7:
        n = 9;
        break;
    case 0xd8:
        n = 17;
        break;
    case 0xc7:
    case 0xc8:
    case 0xc9:
        if (!rd_be(r, 1 << (t - 0xc7), &n))
            return 0;
        n += 1; /* the ext type byte */
        break;
    default:
        return 0; /* 0xc1: never used */
    }
    return rd_lenprefixed(r, n, &s);
}

static int key_is(hr_slice_t k, const char *name)
{
    size_t n = strlen(name);
    return k.n == n && memcmp(k.p, name, n) == 0;
}

/* Reads an optional trailing option map (absent or nil allowed). Calls
 * `field` for every key; unknown keys are skipped by it. */
typedef int (*opt_fn)(rd_t *r, hr_slice_t key, hr_frame_t *f, const char **why);

static int rd_opts(rd_t *r, hr_frame_t *f, opt_fn field, const char **why)
{
    uint32_t n;
    const uint8_t *start = r->p;
    if (rd_nil(r))
        return 1;
    if (!rd_container(r, 1, &n)) {
        *why = "option map expected";
        return 0;
    }
    f->flags |= HR_F_HAS_OPTS;
    for (uint32_t i = 0; i < n; i++) {
        hr_slice_t key;
        if (!rd_str(r, &key)) {
            *why = "option keys must be strings";
            return 0;
        }
        if (!field(r, key, f, why))
            return 0;
    }
    f->opts.p = (const char *)start;
    f->opts.n = (size_t)(r->p - start);
    return 1;
}

static int skip_unknown(rd_t *r, const char **why)
{
    if (!rd_skip(r, 0)) {
        *why = "malformed option value";
        return 0;
    }
    return 1;
}

static int rd_headers(rd_t *r, hr_slice_t *raw, const char **why)
{
    const uint8_t *start = r->p;
    uint32_t n;
    if (!rd_container(r, 1, &n)) {
        *why = "headers must be a map";
        return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        hr_slice_t k, v;
        if (!rd_str(r, &k) || !rd_str(r, &v)) {
            *why = "headers must map strings to strings";
            return 0;
        }
    }
    raw->p = (const char *)start;
    raw->n = (size_t)(r->p - start);
    return 1;
}

#define BAD(msg)                                                                                   \
    do {                                                                                           \
        *why = (msg);                                                                              \
        return 0;                                                                                  \
    } while (0)

static int hello_opt(rd_t *r, hr_slice_t k, hr_frame_t *f, const char **why)
{
    int b;
    if (key_is(k, "v")) {
        if (!rd_uint(r, &f->version))
            BAD("HELLO v must be an unsigned integer");
    } else if (key_is(k, "name")) {
        if (!rd_str(r, &f->name))
            BAD("HELLO name must be a string");
        f->flags |= HR_F_NAME;
    } else if (key_is(k, "token")) {
        if (!rd_str(r, &f->token))
            BAD("HELLO token must be a string");
        f->flags |= HR_F_TOKEN;
    } else if (key_is(k, "echo")) {
        if (!rd_bool(r, &b))
            BAD("HELLO echo must be a boolean");
        if (b)
            f->flags &= ~(uint32_t)HR_F_NO_ECHO;
        else
            f->flags |= HR_F_NO_ECHO;
    } else {
        return skip_unknown(r, why);
    }
    return 1;
}

/* `epoch: str` of WELCOME and SUB: at most HR_EPOCH_MAX bytes. */
static int rd_epoch(rd_t *r, hr_frame_t *f, const char **why)
{
    if (!rd_str(r, &f->epoch))
        BAD("epoch must be a string");
    if (f->epoch.n > HR_EPOCH_MAX)
        BAD("epoch longer than 64 bytes");
    f->flags |= HR_F_EPOCH;
    return 1;
}

static int welcome_opt(rd_t *r, hr_slice_t k, hr_frame_t *f, const char **why)
{
    uint64_t *dst = NULL;
    if (key_is(k, "server")) {
        if (!rd_str(r, &f->server))
            BAD("WELCOME server must be a string");
        return 1;
    }
    if (key_is(k, "epoch"))
        return rd_epoch(r, f, why);
    if (key_is(k, "v"))
        dst = &f->version;
    else if (key_is(k, "client_id"))
        dst = &f->client_id;
    else if (key_is(k, "worker"))
        dst = &f->worker;
    else if (key_is(k, "max_payload"))
        dst = &f->max_payload;
    else if (key_is(k, "max_frame"))
        dst = &f->max_frame;
    else if (key_is(k, "heartbeat_ms"))
        dst = &f->heartbeat_ms;
    if (!dst)
        return skip_unknown(r, why);
    if (!rd_uint(r, dst))
        BAD("WELCOME fields must be unsigned integers");
    return 1;
}

static int pub_opt(rd_t *r, hr_slice_t k, hr_frame_t *f, const char **why)
{
    int b;
    if (key_is(k, "reply")) {
        if (!rd_str(r, &f->reply))
            BAD("reply must be a string");
        f->flags |= HR_F_REPLY;
    } else if (key_is(k, "ack") && f->op == HR_OP_PUB) {
        if (!rd_uint(r, &f->id))
            BAD("ack must be an unsigned integer");
        f->flags |= HR_F_ACK;
    } else if (key_is(k, "headers")) {
        if (!rd_headers(r, &f->headers, why))
            return 0;
        f->flags |= HR_F_HEADERS;
    } else if (key_is(k, "replay") && f->op == HR_OP_MSG) {
        if (!rd_bool(r, &b))
            BAD("replay must be a boolean");
        if (b)
            f->flags |= HR_F_REPLAY;
    } else {
        return skip_unknown(r, why);
    }
    return 1;
}

static int sub_opt(rd_t *r, hr_slice_t k, hr_frame_t *f, const char **why)
{
    if (key_is(k, "queue")) {
        if (!rd_str(r, &f->queue))
            BAD("queue must be a string");
        f->flags |= HR_F_QUEUE;
    } else if (key_is(k, "since")) {
        if (!rd_uint(r, &f->since))
            BAD("since must be an unsigned integer");
        f->flags |= HR_F_SINCE;
    } else if (key_is(k, "last")) {
        if (!rd_uint(r, &f->last))
            BAD("last must be an unsigned integer");
        f->flags |= HR_F_LAST;
    } else if (key_is(k, "epoch")) {
        return rd_epoch(r, f, why);
    } else {
        return skip_unknown(r, why);
    }
    return 1;
}

/* One message of a BATCH, [topic, seq, payload, opts?], into `m` as a MSG of its own. */
static int rd_batch_msg(rd_t *r, size_t max_payload, hr_frame_t *m, const char **why, int *toobig)
{
    uint32_t n;
    m->op = HR_OP_MSG;
    if (!rd_container(r, 0, &n) || n < 3 || n > 4)
        BAD("BATCH messages are arrays of topic, seq, payload and optional options");
    if (!rd_str(r, &m->topic) || !rd_uint(r, &m->seq) || !rd_bin(r, &m->payload))
        BAD("BATCH message field of the wrong type");
    if (n == 4 && !rd_opts(r, m, pub_opt, why))
        return 0;
    if (max_payload && m->payload.n > max_payload)
        *toobig = 1;
    if (hr_topic_validate(m->topic.p, m->topic.n) != HR_OK ||
        ((m->flags & HR_F_REPLY) && hr_topic_validate(m->reply.p, m->reply.n) != HR_OK))
        BAD("invalid topic in a BATCH message");
    return 1;
}

static int rd_batch(rd_t *r, size_t max_payload, hr_frame_t *f, const char **why, int *toobig)
{
    uint32_t n;
    const uint8_t *start = r->p;
    if (!rd_container(r, 0, &n))
        BAD("BATCH messages must be an array");
    for (uint32_t i = 0; i < n; i++) {
        hr_frame_t m;
        memset(&m, 0, sizeof(m));
        if (!rd_batch_msg(r, max_payload, &m, why, toobig))
            return 0;
    }
    f->batch = (hr_slice_t){(const char *)start, (size_t)(r->p - start)};
    f->nbatch = n;
    return 1;
}

void hr_batch_iter_init(hr_batch_iter_t *it, const hr_frame_t *f)
{
    rd_t r = {(const uint8_t *)f->batch.p, (const uint8_t *)f->batch.p + f->batch.n};
    uint32_t n = 0;
    if (!f->batch.n || !rd_container(&r, 0, &n))
        n = 0;
    it->p = (const char *)r.p;
    it->end = (const char *)r.end;
    it->left = n;
    it->sid = f->sid;
}

int hr_batch_iter_next(hr_batch_iter_t *it, hr_frame_t *msg)
{
    rd_t r = {(const uint8_t *)it->p, (const uint8_t *)it->end};
    const char *why;
    int toobig = 0;
    if (!it->left)
        return 0;
    memset(msg, 0, sizeof(*msg));
    if (!rd_batch_msg(&r, 0, msg, &why, &toobig)) { /* checked by hr_frame_decode() */
        it->left = 0;
        return 0;
    }
    msg->sid = it->sid;
    it->p = (const char *)r.p;
    it->left--;
    return 1;
}

/* A queue name: 1..HR_TOPIC_MAX printable ASCII bytes without spaces. */
static int queue_valid(hr_slice_t q)
{
    if (q.n == 0 || q.n > HR_TOPIC_MAX)
        return 0;
    for (size_t i = 0; i < q.n; i++)
        if ((uint8_t)q.p[i] <= 0x20 || (uint8_t)q.p[i] >= 0x7f)
            return 0;
    return 1;
}

/* Structure of one body; topics are checked afterwards by the caller. */
static int decode_body(rd_t *r, size_t max_payload, hr_frame_t *f, const char **why, int *toobig)
{
    uint32_t n;
    uint64_t op;
    if (!rd_container(r, 0, &n))
        BAD("frame body is not a msgpack array");
    if (n < 1 || !rd_uint(r, &op))
        BAD("first element must be an opcode");
    f->op = op > 255 ? -1 : (int)op;
    switch (f->op) {
    case HR_OP_HELLO:
        if (n != 2)
            BAD("HELLO takes exactly one option map");
        if (rd_nil(r))
            BAD("HELLO needs an option map with v");
        f->version = UINT64_MAX; /* "absent": no valid version is that large */
        if (!rd_opts(r, f, hello_opt, why))
            return 0;
        if (f->version == UINT64_MAX)
            BAD("HELLO without v");
        break;
    case HR_OP_PUB:
        if (n < 3 || n > 4)
            BAD("PUB takes topic, payload and optional options");
        if (!rd_str(r, &f->topic))
            BAD("PUB topic must be a string");
        if (!rd_bin(r, &f->payload))
            BAD("PUB payload must be binary (msgpack bin)");
        if (n == 4 && !rd_opts(r, f, pub_opt, why))
            return 0;
        if (max_payload && f->payload.n > max_payload)
            *toobig = 1;
        break;
    case HR_OP_SUB:
        if (n < 3 || n > 4)
            BAD("SUB takes sid, pattern and optional options");
        if (!rd_uint(r, &f->sid))
            BAD("SUB sid must be an unsigned integer");
        if (!rd_str(r, &f->topic))
            BAD("SUB pattern must be a string");
        if (n == 4 && !rd_opts(r, f, sub_opt, why))
            return 0;
        break;
    case HR_OP_UNSUB:
        if (n != 2 || !rd_uint(r, &f->sid))
            BAD("UNSUB takes exactly one unsigned sid");
        break;
    case HR_OP_PING:
    case HR_OP_PONG:
        if (n != 2 || !rd_uint(r, &f->id))
            BAD("PING/PONG take exactly one unsigned id");
        break;
    case HR_OP_WELCOME:
        if (n != 2)
            BAD("WELCOME takes exactly one option map");
        if (!rd_opts(r, f, welcome_opt, why))
            return 0;
        break;
    case HR_OP_MSG:
        if (n < 5 || n > 6)
            BAD("MSG takes sid, topic, seq, payload and optional options");
        if (!rd_uint(r, &f->sid) || !rd_str(r, &f->topic) || !rd_uint(r, &f->seq) ||
            !rd_bin(r, &f->payload))
            BAD("MSG field of the wrong type");
        if (n == 6 && !rd_opts(r, f, pub_opt, why))
            return 0;
        break;
    case HR_OP_ACK:
        if (n != 3 || !rd_uint(r, &f->id) || !rd_uint(r, &f->seq))
            BAD("ACK takes an unsigned ack id and seq");
        break;
    case HR_OP_ERR:
        if (n < 3 || n > 4 || !rd_uint(r, &f->code) || !rd_str(r, &f->message))
            BAD("ERR takes code, message and optional ref");
        if (n == 4) {
            if (rd_uint(r, &f->sid))
                f->flags |= HR_F_REF;
            else if (!rd_nil(r))
                BAD("ERR ref must be an unsigned integer");
        }
        break;
    case HR_OP_GAP:
        if (n != 5 || !rd_uint(r, &f->sid) || !rd_str(r, &f->topic) || !rd_uint(r, &f->first_seq) ||
            !rd_uint(r, &f->last_seq))
            BAD("GAP takes sid, topic, first_seq and last_seq");
        break;
    case HR_OP_BATCH:
        if (n != 3 || !rd_uint(r, &f->sid))
            BAD("BATCH takes sid and an array of messages");
        if (!rd_batch(r, max_payload, f, why, toobig))
            return 0;
        break;
    default:
        BAD("unknown opcode");
    }
    if (r->p != r->end)
        BAD("trailing bytes after the frame");
    return 1;
}

int hr_frame_decode(const void *body, size_t len, size_t max_payload, hr_frame_t *f,
                    const char **why)
{
    const char *dummy;
    /* An empty body may come as (NULL, 0) (an empty WebSocket message); NULL + 0 is undefined. */
    const uint8_t *p = body ? (const uint8_t *)body : (const uint8_t *)"";
    rd_t r = {p, p + (body ? len : 0)};
    int toobig = 0;

    if (!why)
        why = &dummy;
    memset(f, 0, sizeof(*f));
    *why = NULL;
    if (!decode_body(&r, max_payload, f, why, &toobig))
        return HR_EPROTO;
    if (toobig) {
        *why = "payload larger than max_payload";
        return HR_ETOOBIG;
    }
    switch (f->op) {
    case HR_OP_PUB:
    case HR_OP_MSG:
    case HR_OP_GAP:
        if (hr_topic_validate(f->topic.p, f->topic.n) != HR_OK) {
            *why = "invalid topic";
            return HR_ETOPIC;
        }
        if ((f->flags & HR_F_REPLY) && hr_topic_validate(f->reply.p, f->reply.n) != HR_OK) {
            *why = "invalid reply topic";
            return HR_ETOPIC;
        }
        break;
    case HR_OP_SUB:
        if (hr_pattern_validate(f->topic.p, f->topic.n) != HR_OK) {
            *why = "invalid pattern";
            return HR_ETOPIC;
        }
        if ((f->flags & HR_F_QUEUE) && !queue_valid(f->queue)) {
            *why = "invalid queue name";
            return HR_ETOPIC;
        }
        break;
    default:
        break;
    }
    return HR_OK;
}

const char *hr_op_name(int op)
{
    switch (op) {
    case HR_OP_HELLO:
        return "HELLO";
    case HR_OP_PUB:
        return "PUB";
    case HR_OP_SUB:
        return "SUB";
    case HR_OP_UNSUB:
        return "UNSUB";
    case HR_OP_PING:
        return "PING";
    case HR_OP_PONG:
        return "PONG";
    case HR_OP_WELCOME:
        return "WELCOME";
    case HR_OP_MSG:
        return "MSG";
    case HR_OP_ACK:
        return "ACK";
    case HR_OP_ERR:
        return "ERR";
    case HR_OP_GAP:
        return "GAP";
    case HR_OP_BATCH:
        return "BATCH";
    default:
        return "?";
    }
}

void hr_headers_iter_init(hr_headers_iter_t *it, hr_slice_t raw)
{
    rd_t r = {(const uint8_t *)raw.p, (const uint8_t *)raw.p + raw.n};
    uint32_t n = 0;
    if (!raw.n || !rd_container(&r, 1, &n))
        n = 0;
    it->p = (const char *)r.p;
    it->end = (const char *)r.end;
    it->left = n;
}

int hr_headers_iter_next(hr_headers_iter_t *it, hr_slice_t *key, hr_slice_t *val)
{
    rd_t r = {(const uint8_t *)it->p, (const uint8_t *)it->end};
    if (!it->left || !rd_str(&r, key) || !rd_str(&r, val))
        return 0;
    it->left--;
    it->p = (const char *)r.p;
    return 1;
}

/* ---- encoders ------------------------------------------------------------ */

static int buf_write(void *data, const char *p, size_t n)
{
    return hr_buf_append(data, p, n) == HR_OK ? 0 : -1;
}

static void str(msgpack_packer *pk, const char *p, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, p, n);
}

static void cstr(msgpack_packer *pk, const char *s)
{
    str(pk, s, strlen(s));
}

static void bin(msgpack_packer *pk, hr_slice_t s)
{
    msgpack_pack_bin(pk, s.n);
    msgpack_pack_bin_body(pk, s.p, s.n);
}

#define ENC_BEGIN(b)                                                                               \
    msgpack_packer pk;                                                                             \
    size_t enc_start = (b)->len;                                                                   \
    msgpack_packer_init(&pk, (b), buf_write)
#define ENC_END(b)                                                                                 \
    do {                                                                                           \
        if ((b)->oom) {                                                                            \
            (b)->len = enc_start;                                                                  \
            (b)->oom = 0;                                                                          \
            return HR_ENOMEM;                                                                      \
        }                                                                                          \
        return HR_OK;                                                                              \
    } while (0)

int hr_enc_hello(hr_buf_t *b, const char *name, const char *token, int echo)
{
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, HR_OP_HELLO);
    msgpack_pack_map(&pk, 2 + (name != NULL) + (token != NULL));
    cstr(&pk, "v");
    msgpack_pack_uint8(&pk, HR_PROTOCOL_VERSION);
    cstr(&pk, "echo");
    if (echo)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    if (name) {
        cstr(&pk, "name");
        cstr(&pk, name);
    }
    if (token) {
        cstr(&pk, "token");
        cstr(&pk, token);
    }
    ENC_END(b);
}

/* Writes the opts map shared by PUB and MSG; `ack` < 0 means none. */
static void pack_msg_opts(msgpack_packer *pk, hr_slice_t reply, const hr_pub_opts_t *o,
                          hr_slice_t headers_raw, int has_ack, uint64_t ack, int replay)
{
    int has_headers = headers_raw.n || (o && o->nheaders);
    msgpack_pack_map(pk, (reply.n > 0) + has_headers + has_ack + (replay != 0));
    if (reply.n) {
        cstr(pk, "reply");
        str(pk, reply.p, reply.n);
    }
    if (has_ack) {
        cstr(pk, "ack");
        msgpack_pack_uint64(pk, ack);
    }
    if (has_headers) {
        cstr(pk, "headers");
        if (headers_raw.n) {
            pk->callback(pk->data, headers_raw.p, headers_raw.n);
        } else {
            msgpack_pack_map(pk, o->nheaders);
            for (size_t i = 0; i < o->nheaders; i++) {
                cstr(pk, o->headers[i].key);
                cstr(pk, o->headers[i].value);
            }
        }
    }
    if (replay) {
        cstr(pk, "replay");
        msgpack_pack_true(pk);
    }
}

int hr_enc_pub(hr_buf_t *b, hr_slice_t topic, hr_slice_t payload, const hr_pub_opts_t *o)
{
    hr_slice_t none = {NULL, 0};
    hr_slice_t reply = o ? o->reply : none;
    hr_slice_t raw = o ? o->headers_raw : none;
    int has_opts = o && (reply.n || o->has_ack || o->nheaders || raw.n);
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, has_opts ? 4 : 3);
    msgpack_pack_uint8(&pk, HR_OP_PUB);
    str(&pk, topic.p, topic.n);
    bin(&pk, payload);
    if (has_opts)
        pack_msg_opts(&pk, reply, o, raw, o->has_ack, o->ack, 0);
    ENC_END(b);
}

int hr_enc_sub(hr_buf_t *b, uint64_t sid, hr_slice_t pattern, hr_slice_t queue, int has_since,
               uint64_t since)
{
    hr_sub_fields_t o = {.queue = queue, .has_since = has_since, .since = since};
    return hr_enc_sub_ex(b, sid, pattern, &o);
}

int hr_enc_sub_ex(hr_buf_t *b, uint64_t sid, hr_slice_t pattern, const hr_sub_fields_t *o)
{
    hr_sub_fields_t none = {{NULL, 0}, 0, 0, 0, 0, {NULL, 0}, {NULL, 0}, 0, {NULL, 0}};
    if (!o)
        o = &none;
    int has_epoch = o->epoch.p != NULL;
    if (has_epoch && o->epoch.n > HR_EPOCH_MAX)
        return HR_EINVAL;
    unsigned nopts = (o->queue.n > 0) + (o->has_since != 0) + (o->has_last != 0) + has_epoch +
                     (o->extra.n ? o->nextra : 0) + (o->presence.p != NULL);
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, nopts ? 4 : 3);
    msgpack_pack_uint8(&pk, HR_OP_SUB);
    msgpack_pack_uint64(&pk, sid);
    str(&pk, pattern.p, pattern.n);
    if (nopts) {
        msgpack_pack_map(&pk, nopts);
        if (o->queue.n) {
            cstr(&pk, "queue");
            str(&pk, o->queue.p, o->queue.n);
        }
        if (o->has_since) {
            cstr(&pk, "since");
            msgpack_pack_uint64(&pk, o->since);
        }
        if (o->has_last) {
            cstr(&pk, "last");
            msgpack_pack_uint64(&pk, o->last);
        }
        if (has_epoch) {
            cstr(&pk, "epoch");
            str(&pk, o->epoch.p, o->epoch.n);
        }
        if (o->presence.p) {
            cstr(&pk, "presence");
            msgpack_pack_bin(&pk, o->presence.n);
            msgpack_pack_bin_body(&pk, o->presence.p, o->presence.n);
        }
        if (o->extra.n)
            buf_write(b, o->extra.p, o->extra.n);
    }
    ENC_END(b);
}

static int enc_op_uint(hr_buf_t *b, int op, uint64_t v)
{
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, (uint8_t)op);
    msgpack_pack_uint64(&pk, v);
    ENC_END(b);
}

int hr_enc_unsub(hr_buf_t *b, uint64_t sid)
{
    return enc_op_uint(b, HR_OP_UNSUB, sid);
}

int hr_enc_ping(hr_buf_t *b, uint64_t id)
{
    return enc_op_uint(b, HR_OP_PING, id);
}

int hr_enc_pong(hr_buf_t *b, uint64_t id)
{
    return enc_op_uint(b, HR_OP_PONG, id);
}

int hr_enc_welcome(hr_buf_t *b, const hr_welcome_t *w)
{
    if (w->epoch && strlen(w->epoch) > HR_EPOCH_MAX)
        return HR_EINVAL;
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, HR_OP_WELCOME);
    msgpack_pack_map(&pk, w->epoch ? 8 : 7);
    cstr(&pk, "v");
    msgpack_pack_uint8(&pk, HR_PROTOCOL_VERSION);
    cstr(&pk, "server");
    cstr(&pk, w->server ? w->server : "herald");
    cstr(&pk, "client_id");
    msgpack_pack_uint64(&pk, w->client_id);
    cstr(&pk, "worker");
    msgpack_pack_uint64(&pk, w->worker);
    cstr(&pk, "max_payload");
    msgpack_pack_uint64(&pk, w->max_payload);
    cstr(&pk, "max_frame");
    msgpack_pack_uint64(&pk, w->max_frame);
    cstr(&pk, "heartbeat_ms");
    msgpack_pack_uint64(&pk, w->heartbeat_ms);
    if (w->epoch) {
        cstr(&pk, "epoch");
        cstr(&pk, w->epoch);
    }
    ENC_END(b);
}

int hr_enc_ack(hr_buf_t *b, uint64_t ack, uint64_t seq)
{
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint8(&pk, HR_OP_ACK);
    msgpack_pack_uint64(&pk, ack);
    msgpack_pack_uint64(&pk, seq);
    ENC_END(b);
}

int hr_enc_err(hr_buf_t *b, unsigned code, const char *message, int has_ref, uint64_t ref)
{
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, has_ref ? 4 : 3);
    msgpack_pack_uint8(&pk, HR_OP_ERR);
    msgpack_pack_unsigned_int(&pk, code);
    cstr(&pk, message ? message : "");
    if (has_ref)
        msgpack_pack_uint64(&pk, ref);
    ENC_END(b);
}

int hr_enc_gap(hr_buf_t *b, uint64_t sid, hr_slice_t topic, uint64_t first_seq, uint64_t last_seq)
{
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, HR_OP_GAP);
    msgpack_pack_uint64(&pk, sid);
    str(&pk, topic.p, topic.n);
    msgpack_pack_uint64(&pk, first_seq);
    msgpack_pack_uint64(&pk, last_seq);
    ENC_END(b);
}

int hr_enc_msg(hr_buf_t *b, uint64_t sid, hr_slice_t topic, uint64_t seq, hr_slice_t payload,
               hr_slice_t reply, hr_slice_t headers_raw, int replay)
{
    int has_opts = reply.n || headers_raw.n || replay;
    ENC_BEGIN(b);
    msgpack_pack_array(&pk, has_opts ? 6 : 5);
    msgpack_pack_uint8(&pk, HR_OP_MSG);
    msgpack_pack_uint64(&pk, sid);
    str(&pk, topic.p, topic.n);
    msgpack_pack_uint64(&pk, seq);
    bin(&pk, payload);
    if (has_opts)
        pack_msg_opts(&pk, reply, NULL, headers_raw, 0, 0, replay);
    ENC_END(b);
}
