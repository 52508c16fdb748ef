/* SPDX-License-Identifier: MIT */
/* libFuzzer target: TCP length-prefix framing (hr_lp_next) and the strict frame decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "herald/protocol.h"

#define MAX_PAYLOAD 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every slice the decoder returns must lie inside the body it decoded. */
static void check_slice(hr_slice_t s, const uint8_t *body, size_t n)
{
    if (!s.p)
        return;
    CHECK((const uint8_t *)s.p >= body);
    CHECK((const uint8_t *)s.p + s.n <= body + n);
}

static int slice_eq(hr_slice_t a, hr_slice_t b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/*
 * The round-trip oracle: a frame that decoded cleanly, encoded again by the
 * protocol library's own encoder, must decode to the same fields.
 */
static void roundtrip(const hr_frame_t *f)
{
    hr_buf_t b;
    hr_frame_t g;
    int r = HR_OK;
    hr_buf_init(&b);
    switch (f->op) {
    case HR_OP_PUB: {
        hr_pub_opts_t o = {0};
        o.reply = (f->flags & HR_F_REPLY) ? f->reply : (hr_slice_t){0};
        o.has_ack = (f->flags & HR_F_ACK) != 0;
        o.ack = f->id;
        o.headers_raw = (f->flags & HR_F_HEADERS) ? f->headers : (hr_slice_t){0};
        r = hr_enc_pub(&b, f->topic, f->payload, &o);
        break;
    }
    case HR_OP_SUB: {
        hr_sub_fields_t o = {0};
        o.queue = (f->flags & HR_F_QUEUE) ? f->queue : (hr_slice_t){0};
        o.has_since = (f->flags & HR_F_SINCE) != 0;
        o.since = f->since;
        o.has_last = (f->flags & HR_F_LAST) != 0;
        o.last = f->last;
        o.epoch = (f->flags & HR_F_EPOCH) ? f->epoch : (hr_slice_t){0};
        r = hr_enc_sub_ex(&b, f->sid, f->topic, &o);
        break;
    }
    case HR_OP_UNSUB:
        r = hr_enc_unsub(&b, f->sid);
        break;
    case HR_OP_PING:
        r = hr_enc_ping(&b, f->id);
        break;
    case HR_OP_PONG:
        r = hr_enc_pong(&b, f->id);
        break;
    case HR_OP_ACK:
        r = hr_enc_ack(&b, f->id, f->seq);
        break;
    case HR_OP_GAP:
        r = hr_enc_gap(&b, f->sid, f->topic, f->first_seq, f->last_seq);
        break;
    case HR_OP_MSG:
        r = hr_enc_msg(&b, f->sid, f->topic, f->seq, f->payload,
                       (f->flags & HR_F_REPLY) ? f->reply : (hr_slice_t){0},
                       (f->flags & HR_F_HEADERS) ? f->headers : (hr_slice_t){0},
                       (f->flags & HR_F_REPLAY) != 0);
        break;
    default:
        hr_buf_destroy(&b);
        return;
    }
    CHECK(r == HR_OK);
    r = hr_frame_decode(b.base, b.len, MAX_PAYLOAD, &g, NULL);
    CHECK(r == HR_OK);
    CHECK(g.op == f->op);
    CHECK(g.sid == f->sid && g.id == f->id && g.seq == f->seq);
    CHECK(slice_eq(g.topic, f->topic) && slice_eq(g.payload, f->payload));
    uint32_t kept =
        HR_F_ACK | HR_F_SINCE | HR_F_REPLY | HR_F_QUEUE | HR_F_REPLAY | HR_F_LAST | HR_F_EPOCH;
    CHECK((g.flags & kept) == (f->flags & kept));
    if (f->flags & HR_F_REPLY)
        CHECK(slice_eq(g.reply, f->reply));
    if (f->flags & HR_F_QUEUE)
        CHECK(slice_eq(g.queue, f->queue));
    if (f->flags & HR_F_SINCE)
        CHECK(g.since == f->since);
    if (f->flags & HR_F_LAST)
        CHECK(g.last == f->last);
    if (f->flags & HR_F_EPOCH)
        CHECK(slice_eq(g.epoch, f->epoch));
    if (f->flags & HR_F_HEADERS) {
        hr_headers_iter_t a, c;
        hr_slice_t ka, va, kc, vc;
        hr_headers_iter_init(&a, f->headers);
        hr_headers_iter_init(&c, g.headers);
        for (;;) {
            int na = hr_headers_iter_next(&a, &ka, &va), nc = hr_headers_iter_next(&c, &kc, &vc);
            CHECK(na == nc);
            if (!na)
                break;
            CHECK(slice_eq(ka, kc) && slice_eq(va, vc));
        }
    }
    hr_buf_destroy(&b);
}

/*
 * The delivery oracle: the shared MSG body built from a PUB plus the
 * per-subscriber header (the broker's hot path) must decode as the MSG the
 * subscriber expects, live and replayed.
 */
static void delivery(const hr_frame_t *f)
{
    hr_slice_t none = {0};
    hr_msg_t *m =
        hr_msg_new_delivery(f->topic, 7, f->payload, (f->flags & HR_F_REPLY) ? f->reply : none,
                            (f->flags & HR_F_HEADERS) ? f->headers : none, 0);
    CHECK(m);
    hr_msg_t *rp = hr_msg_new_replay(m);
    CHECK(rp);
    hr_msg_t *both[2] = {m, rp};
    for (int i = 0; i < 2; i++) {
        uint8_t hdr[HR_DELIVERY_HDR_MAX];
        uint64_t sid = f->id ^ (uint64_t)i << 40;
        size_t hl = hr_msg_delivery_header(both[i], sid, HR_FRAMING_LP, hdr);
        CHECK(hl > HR_LP_PREFIX && hl <= HR_DELIVERY_HDR_MAX);
        size_t n = hl + both[i]->len;
        uint8_t *buf = malloc(n);
        CHECK(buf);
        memcpy(buf, hdr, hl);
        memcpy(buf + hl, hr_msg_bytes(both[i]), both[i]->len);
        hr_slice_t body;
        size_t used;
        CHECK(hr_lp_next(buf, n, SIZE_MAX, &body, &used) == HR_OK && used == n);
        hr_frame_t g;
        int r = hr_frame_decode(body.p, body.n, 0, &g, NULL);
        CHECK(r == HR_OK);
        CHECK(g.op == HR_OP_MSG && g.sid == sid && g.seq == 7);
        CHECK(slice_eq(g.topic, f->topic) && slice_eq(g.payload, f->payload));
        CHECK(!!(g.flags & HR_F_REPLAY) == i);
        CHECK(!!(g.flags & HR_F_REPLY) == !!(f->flags & HR_F_REPLY));
        if (f->flags & HR_F_REPLY)
            CHECK(slice_eq(g.reply, f->reply));
        free(buf);
    }
    hr_msg_unref(&rp);
    hr_msg_unref(&m);
}

static void decode_one(const uint8_t *body, size_t n)
{
    hr_frame_t f;
    const char *why = NULL;
    /* Decode from a heap copy of exactly n bytes so ASan sees any over-read. */
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return;
    if (n)
        memcpy(copy, body, n);
    int r = hr_frame_decode(copy, n, MAX_PAYLOAD, &f, &why);
    CHECK(r == HR_OK || r == HR_EPROTO || r == HR_ETOOBIG || r == HR_ETOPIC);
    CHECK(r == HR_OK || why != NULL);
    if (r == HR_OK || r == HR_ETOPIC) {
        hr_slice_t all[] = {f.topic, f.payload, f.reply,  f.headers, f.queue,
                            f.name,  f.token,   f.server, f.message};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
            check_slice(all[i], copy, n);
        CHECK(f.op > 0);
    }
    if (r == HR_OK) {
        if (f.op == HR_OP_PUB || f.op == HR_OP_MSG || f.op == HR_OP_GAP)
            CHECK(hr_topic_validate(f.topic.p, f.topic.n) == HR_OK);
        if (f.op == HR_OP_SUB)
            CHECK(hr_pattern_validate(f.topic.p, f.topic.n) == HR_OK);
        if (f.op == HR_OP_PUB || f.op == HR_OP_MSG)
            CHECK(f.payload.n <= MAX_PAYLOAD);
        (void)hr_op_name(f.op);
        roundtrip(&f);
        if (f.op == HR_OP_PUB)
            delivery(&f);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The whole input as one body. */
    decode_one(data, size);

    /* The input as a TCP stream of length-prefixed frames. */
    size_t off = 0;
    while (off < size) {
        hr_slice_t body;
        size_t used = 0;
        int r = hr_lp_next(data + off, size - off, MAX_PAYLOAD + HR_FRAME_SLACK, &body, &used);
        if (r == HR_EAGAIN) {
            CHECK(used == 0 || used > size - off);
            break;
        }
        if (r != HR_OK) {
            CHECK(r == HR_ETOOBIG);
            break;
        }
        CHECK(used == HR_LP_PREFIX + body.n && used <= size - off);
        decode_one((const uint8_t *)body.p, body.n);
        off += used;
    }
    return 0;
}
