/* SPDX-License-Identifier: MIT */
/* Codec: round trips, every split point, every rejection, truncations. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/protocol.h"
#include "hr_check.h"

/* Decodes `hex` ("92 05 01") into a fresh exact-size allocation, so ASan sees over-reads. */
static uint8_t *hexbytes(const char *hex, size_t *n)
{
    uint8_t *p = malloc(strlen(hex) / 2 + 1);
    size_t k = 0;
    for (const char *s = hex; *s;) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        sscanf(s, "%2x", &v);
        p[k++] = (uint8_t)v;
        s += 2;
    }
    *n = k;
    return p;
}

static int decode_hex(const char *hex, hr_frame_t *f)
{
    size_t n;
    uint8_t *p = hexbytes(hex, &n);
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, p, n);
    int r = hr_frame_decode(exact, n, 1024, f, NULL);
    free(p);
    free(exact);
    return r;
}

static hr_slice_t S(const char *s)
{
    hr_slice_t x = {s, strlen(s)};
    return x;
}

static int slice_eq(hr_slice_t a, const char *b)
{
    return a.n == strlen(b) && memcmp(a.p, b, a.n) == 0;
}

/* Every frame type, encoded by the library. */
static void build_all(hr_buf_t *stream, int prefixed)
{
    hr_header_t hdrs[] = {{"k", "v"}, {"trace", "abc"}};
    hr_pub_opts_t po = {
        .reply = S("_INBOX.r1"), .has_ack = 1, .ack = 77, .headers = hdrs, .nheaders = 2};
    hr_welcome_t w = {"herald/x", 5, 0, 1024, 5120, 30000, "e-1764740000-4242"};
    hr_sub_fields_t so = {.has_since = 1, .since = 41, .has_last = 1, .last = 10, .epoch = S("e1")};
    size_t m;
#define ONE(call)                                                                                  \
    do {                                                                                           \
        m = prefixed ? hr_lp_begin(stream) : 0;                                                    \
        ck_assert_int_eq(call, HR_OK);                                                             \
        if (prefixed)                                                                              \
            hr_lp_end(stream, m);                                                                  \
    } while (0)
    ONE(hr_enc_hello(stream, "name", "tok", 0));
    ONE(hr_enc_pub(stream, S("chat.room1"), S("hello"), &po));
    ONE(hr_enc_pub(stream, S("a"), S(""), NULL));
    ONE(hr_enc_sub(stream, 300, S("chat.*"), S("workers"), 1, 12));
    ONE(hr_enc_sub(stream, 1, S(">"), S(""), 0, 0));
    ONE(hr_enc_unsub(stream, 70000));
    ONE(hr_enc_ping(stream, 1ull << 40));
    ONE(hr_enc_pong(stream, 3));
    ONE(hr_enc_welcome(stream, &w));
    ONE(hr_enc_msg(stream, 9, S("chat.room1"), 65536, S("payload"), S("_INBOX.x"),
                   S("\x81\xa1k\xa1v"), 1));
    ONE(hr_enc_ack(stream, 77, 4));
    ONE(hr_enc_err(stream, 5, "invalid topic", 1, 300));
    ONE(hr_enc_gap(stream, 9, S("chat.room1"), 3, 8));
    ONE(hr_enc_sub_ex(stream, 12, S("room.lobby"), &so));
    ONE(hr_enc_sub_ex(stream, 13, S("room.>"), NULL));
    /* BATCH has no encoder here (the broker builds it): [21, 7, [["a", 1, h'78'], ["a.b",
     * 300, h'', {reply: "r", replay: true}]]] */
    static const uint8_t batch[] = {0x93, 0x15, 0x07, 0x92, 0x93, 0xa1, 'a',  0x01, 0xc4, 0x01,
                                    'x',  0x94, 0xa3, 'a',  '.',  'b',  0xcd, 0x01, 0x2c, 0xc4,
                                    0x00, 0x82, 0xa5, 'r',  'e',  'p',  'l',  'y',  0xa1, 'r',
                                    0xa6, 'r',  'e',  'p',  'l',  'a',  'y',  0xc3};
    ONE(hr_buf_append(stream, batch, sizeof(batch)));
#undef ONE
}

static const int all_ops[] = {1, 2, 2, 3, 3, 4, 5, 6, 16, 17, 18, 19, 20, 3, 3, 21};
#define NALL (sizeof(all_ops) / sizeof(all_ops[0]))

START_TEST(round_trip)
{
    hr_buf_t b;
    hr_frame_t f;
    hr_buf_init(&b);
    build_all(&b, 1);
    size_t off = 0;
    for (size_t i = 0; i < NALL; i++) {
        hr_slice_t body;
        size_t used;
        ck_assert_int_eq(hr_lp_next(b.base + off, b.len - off, 1 << 20, &body, &used), HR_OK);
        ck_assert_int_eq(hr_frame_decode(body.p, body.n, 0, &f, NULL), HR_OK);
        ck_assert_int_eq(f.op, all_ops[i]);
        switch (i) {
        case 0:
            ck_assert(slice_eq(f.name, "name") && slice_eq(f.token, "tok"));
            ck_assert(f.flags & HR_F_NO_ECHO);
            ck_assert_uint_eq(f.version, 1);
            break;
        case 1: {
            ck_assert(slice_eq(f.topic, "chat.room1") && slice_eq(f.payload, "hello"));
            ck_assert(slice_eq(f.reply, "_INBOX.r1"));
            ck_assert((f.flags & HR_F_ACK) && f.id == 77);
            hr_headers_iter_t it;
            hr_slice_t k, v;
            hr_headers_iter_init(&it, f.headers);
            ck_assert(hr_headers_iter_next(&it, &k, &v) && slice_eq(k, "k") && slice_eq(v, "v"));
            ck_assert(hr_headers_iter_next(&it, &k, &v) && slice_eq(k, "trace"));
            ck_assert(!hr_headers_iter_next(&it, &k, &v));
            break;
        }
        case 2:
            ck_assert(f.payload.n == 0 && !(f.flags & HR_F_HAS_OPTS));
            break;
        case 3:
            ck_assert(f.sid == 300 && slice_eq(f.topic, "chat.*") && slice_eq(f.queue, "workers"));
            ck_assert((f.flags & HR_F_SINCE) && f.since == 12);
            ck_assert(!(f.flags & (HR_F_LAST | HR_F_EPOCH)));
            break;
        case 5:
            ck_assert_uint_eq(f.sid, 70000);
            break;
        case 6:
            ck_assert_uint_eq(f.id, 1ull << 40);
            break;
        case 8:
            ck_assert(slice_eq(f.server, "herald/x") && f.client_id == 5 && f.max_frame == 5120);
            ck_assert_uint_eq(f.heartbeat_ms, 30000);
            ck_assert((f.flags & HR_F_EPOCH) && slice_eq(f.epoch, "e-1764740000-4242"));
            break;
        case 9:
            ck_assert(f.sid == 9 && f.seq == 65536 && slice_eq(f.payload, "payload"));
            ck_assert((f.flags & HR_F_REPLAY) && slice_eq(f.reply, "_INBOX.x"));
            break;
        case 10:
            ck_assert(f.id == 77 && f.seq == 4);
            break;
        case 11:
            ck_assert(f.code == 5 && (f.flags & HR_F_REF) && f.sid == 300);
            break;
        case 12:
            ck_assert(f.first_seq == 3 && f.last_seq == 8);
            break;
        case 13:
            ck_assert(f.sid == 12 && slice_eq(f.topic, "room.lobby") && !(f.flags & HR_F_QUEUE));
            ck_assert((f.flags & HR_F_SINCE) && f.since == 41);
            ck_assert((f.flags & HR_F_LAST) && f.last == 10);
            ck_assert((f.flags & HR_F_EPOCH) && slice_eq(f.epoch, "e1"));
            break;
        case 14:
            ck_assert(f.sid == 13 && !(f.flags & HR_F_HAS_OPTS));
            break;
        }
        off += used;
    }
    ck_assert_uint_eq(off, b.len);
    hr_buf_destroy(&b);
}
END_TEST

typedef struct collect_s {
    int ops[64];
    int n;
} collect_t;

static int collect(void *arg, const char *body, size_t n)
{
    collect_t *c = arg;
    hr_frame_t f;
    ck_assert_int_eq(hr_frame_decode(body, n, 0, &f, NULL), HR_OK);
    c->ops[c->n++] = f.op;
    return 0;
}

/* The stream of every frame type split in two at every byte, and fed byte by byte. */
START_TEST(every_split_point)
{
    hr_buf_t b, partial;
    hr_buf_init(&b);
    hr_buf_init(&partial);
    build_all(&b, 1);
    for (size_t cut = 0; cut <= b.len; cut++) {
        collect_t c = {{0}, 0};
        ck_assert_int_eq(hr_lp_feed(&partial, (char *)b.base, cut, 1 << 20, collect, &c), HR_OK);
        ck_assert_int_eq(
            hr_lp_feed(&partial, (char *)b.base + cut, b.len - cut, 1 << 20, collect, &c), HR_OK);
        ck_assert_int_eq(c.n, (int)NALL);
        for (size_t i = 0; i < NALL; i++)
            ck_assert_int_eq(c.ops[i], all_ops[i]);
        ck_assert_uint_eq(partial.len, 0);
        ck_assert_ptr_null(partial.base); /* nothing held between frames */
    }
    collect_t c = {{0}, 0};
    for (size_t i = 0; i < b.len; i++)
        ck_assert_int_eq(hr_lp_feed(&partial, (char *)b.base + i, 1, 1 << 20, collect, &c), HR_OK);
    ck_assert_int_eq(c.n, (int)NALL);
    hr_buf_destroy(&partial);
    hr_buf_destroy(&b);
}
END_TEST

/* Every proper prefix of every valid body is rejected, never over-read. */
START_TEST(truncated_bodies_rejected)
{
    hr_buf_t b;
    hr_frame_t f;
    hr_buf_init(&b);
    build_all(&b, 1);
    size_t off = 0;
    while (off < b.len) {
        hr_slice_t body;
        size_t used;
        ck_assert_int_eq(hr_lp_next(b.base + off, b.len - off, 1 << 20, &body, &used), HR_OK);
        for (size_t n = 0; n < body.n; n++) {
            char *exact = malloc(n ? n : 1);
            memcpy(exact, body.p, n);
            ck_assert_int_eq(hr_frame_decode(exact, n, 0, &f, NULL), HR_EPROTO);
            free(exact);
        }
        off += used;
    }
    hr_buf_destroy(&b);
}
END_TEST

START_TEST(rejections)
{
    hr_frame_t f;
    /* not an array / empty / opcode problems */
    ck_assert_int_eq(decode_hex("05", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("90", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("91 07", &f), HR_EPROTO);       /* unknown opcode */
    ck_assert_int_eq(decode_hex("91 cd 01 00", &f), HR_EPROTO); /* opcode 256 */
    ck_assert_int_eq(decode_hex("91 a1 61", &f), HR_EPROTO);    /* opcode not an int */
    /* declared sizes larger than the input: never allocated, rejected */
    ck_assert_int_eq(decode_hex("dd ff ff ff ff", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("92 01 df ff ff ff ff", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("93 02 db ff ff ff ff", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("93 02 a1 61 c6 ff ff ff ff", &f), HR_EPROTO);
    /* HELLO */
    ck_assert_int_eq(decode_hex("92 01 80", &f), HR_EPROTO);             /* no v */
    ck_assert_int_eq(decode_hex("92 01 c0", &f), HR_EPROTO);             /* nil map */
    ck_assert_int_eq(decode_hex("91 01", &f), HR_EPROTO);                /* missing map */
    ck_assert_int_eq(decode_hex("93 01 81 a1 76 01 c0", &f), HR_EPROTO); /* extra field */
    ck_assert_int_eq(decode_hex("92 01 81 a1 76 a1 31", &f), HR_EPROTO); /* v a string */
    ck_assert_int_eq(decode_hex("92 01 81 a1 76 ff", &f), HR_EPROTO);    /* v negative */
    ck_assert_int_eq(decode_hex("92 01 82 a1 76 01 a4 65 63 68 6f 01", &f), HR_EPROTO); /* echo */
    ck_assert_int_eq(decode_hex("92 01 81 01 01", &f), HR_EPROTO);       /* non-string key */
    ck_assert_int_eq(decode_hex("92 01 81 a1 76 01 00", &f), HR_EPROTO); /* trailing byte */
    ck_assert_int_eq(decode_hex("92 01 81 a1 76 02", &f), HR_OK); /* v checked by the broker */
    ck_assert_uint_eq(f.version, 2);
    /* signed encodings of non-negative integers are integers too */
    ck_assert_int_eq(decode_hex("92 01 81 a1 76 d0 01", &f), HR_OK);
    /* unknown keys of any type are skipped */
    ck_assert_int_eq(decode_hex("92 01 83 a1 76 01 a1 78 92 c3 cb 00 00 00 00 00 00 00 00 a1 79 "
                                "d6 01 00 00 00 00",
                                &f),
                     HR_OK);
    ck_assert_int_eq(decode_hex("92 01 82 a1 76 01 a1 78 c1", &f), HR_EPROTO); /* 0xc1 */
    /* PUB */
    ck_assert_int_eq(decode_hex("92 02 a1 61", &f), HR_EPROTO);       /* no payload */
    ck_assert_int_eq(decode_hex("93 02 a1 61 a1 62", &f), HR_EPROTO); /* str payload */
    ck_assert_int_eq(decode_hex("93 02 01 c4 00", &f), HR_EPROTO);    /* int topic */
    ck_assert_int_eq(decode_hex("93 02 a1 61 c4 00", &f), HR_OK);
    ck_assert_int_eq(decode_hex("94 02 a1 61 c4 00 c0", &f), HR_OK);        /* nil opts */
    ck_assert_int_eq(decode_hex("94 02 a1 61 c4 00 01", &f), HR_EPROTO);    /* opts an int */
    ck_assert_int_eq(decode_hex("95 02 a1 61 c4 00 80 80", &f), HR_EPROTO); /* extra field */
    ck_assert_int_eq(decode_hex("94 02 a1 61 c4 00 81 a3 61 63 6b a1 78", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("94 02 a1 61 c4 00 81 a7 68 65 61 64 65 72 73 81 a1 61 01", &f),
                     HR_EPROTO); /* header value not a string */
    ck_assert_int_eq(decode_hex("93 02 a3 61 2e 2e c4 00", &f), HR_ETOPIC); /* "a.." */
    ck_assert_int_eq(decode_hex("93 02 a3 61 2e 2a c4 00", &f), HR_ETOPIC); /* "a.*" */
    ck_assert_int_eq(decode_hex("94 02 a1 61 c4 00 81 a5 72 65 70 6c 79 a1 3e", &f), HR_ETOPIC);
    ck_assert_int_eq(decode_hex("93 02 a0 c4 00", &f), HR_ETOPIC); /* empty topic */
    /* payload over max_payload (1024 here) */
    {
        size_t n = 4 + 3 + 1025;
        uint8_t *p = calloc(1, n);
        memcpy(p, "\x93\x02\xa1\x61\xc5\x04\x01", 7);
        ck_assert_int_eq(hr_frame_decode(p, n, 1024, &f, NULL), HR_ETOOBIG);
        ck_assert_int_eq(hr_frame_decode(p, n, 0, &f, NULL), HR_OK);
        free(p);
    }
    /* SUB / UNSUB / PING */
    ck_assert_int_eq(decode_hex("93 03 a1 61 a1 61", &f), HR_EPROTO);    /* sid a string */
    ck_assert_int_eq(decode_hex("93 03 ff a1 61", &f), HR_EPROTO);       /* negative sid */
    ck_assert_int_eq(decode_hex("93 03 01 a3 61 2e 3e", &f), HR_OK);     /* a.> */
    ck_assert_int_eq(decode_hex("93 03 01 a3 3e 2e 61", &f), HR_ETOPIC); /* >.a */
    ck_assert_int_eq(decode_hex("93 03 01 a2 61 2a", &f), HR_ETOPIC);    /* a* */
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a5 71 75 65 75 65 a0", &f), HR_ETOPIC);
    ck_assert_uint_eq(f.sid, 1); /* filled, for the ERR ref */
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a5 73 69 6e 63 65 a1 31", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("91 04", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("93 04 01 02", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("92 05 c0", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("92 05 2a", &f), HR_OK);
    ck_assert_int_eq(decode_hex("92 05 2a 2a", &f), HR_EPROTO); /* trailing byte */
    /* deep nesting in an unknown option is bounded */
    {
        char hex[4096] = "92 01 82 a1 76 01 a1 78 ";
        for (int i = 0; i < 200; i++)
            strcat(hex, "91 ");
        strcat(hex, "01");
        ck_assert_int_eq(decode_hex(hex, &f), HR_EPROTO);
    }
}
END_TEST

/* WELCOME epoch, SUB epoch and last: types, the 64-byte bound, unknown keys. */
START_TEST(epoch_and_last)
{
    hr_frame_t f;
    hr_buf_t b;
    char e65[HR_EPOCH_MAX + 2];
    const char *why;
    memset(e65, 'e', sizeof(e65) - 1);
    e65[sizeof(e65) - 1] = 0;
    /* SUB {last: 5} and {epoch: "ab"} */
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a4 6c 61 73 74 05", &f), HR_OK);
    ck_assert((f.flags & HR_F_LAST) && f.last == 5 && !(f.flags & HR_F_SINCE));
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a5 65 70 6f 63 68 a2 61 62", &f), HR_OK);
    ck_assert((f.flags & HR_F_EPOCH) && f.epoch.n == 2); /* bytes freed: length only */
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a5 65 70 6f 63 68 a0", &f), HR_OK);
    ck_assert((f.flags & HR_F_EPOCH) && f.epoch.n == 0);
    /* wrong types */
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a4 6c 61 73 74 a1 31", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a4 6c 61 73 74 ff", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a5 65 70 6f 63 68 01", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 81 a5 65 70 6f 63 68 c4 01 61", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("92 10 81 a5 65 70 6f 63 68 c3", &f), HR_EPROTO);
    /* unknown keys beside them stay ignored */
    ck_assert_int_eq(decode_hex("94 03 01 a1 61 82 a4 6c 61 73 74 05 a2 7a 7a 91 01", &f), HR_OK);
    ck_assert_int_eq(decode_hex("92 10 82 a5 65 70 6f 63 68 a1 78 a2 7a 7a c0", &f), HR_OK);
    ck_assert((f.flags & HR_F_EPOCH) && f.epoch.n == 1);
    /* a WELCOME without an epoch (an older broker) has none */
    ck_assert_int_eq(decode_hex("92 10 81 a1 76 01", &f), HR_OK);
    ck_assert(!(f.flags & HR_F_EPOCH) && f.epoch.n == 0);

    /* the 64-byte bound, through both encoders and the decoder */
    hr_buf_init(&b);
    hr_welcome_t w = {"x", 1, 0, 1024, 5120, 30000, e65};
    ck_assert_int_eq(hr_enc_welcome(&b, &w), HR_EINVAL);
    ck_assert_uint_eq(b.len, 0);
    hr_sub_fields_t so = {.has_since = 1, .since = 3, .epoch = {e65, HR_EPOCH_MAX + 1}};
    ck_assert_int_eq(hr_enc_sub_ex(&b, 1, S("a"), &so), HR_EINVAL);
    ck_assert_uint_eq(b.len, 0);
    so.epoch.n = HR_EPOCH_MAX;
    ck_assert_int_eq(hr_enc_sub_ex(&b, 1, S("a"), &so), HR_OK);
    ck_assert_int_eq(hr_frame_decode(b.base, b.len, 0, &f, NULL), HR_OK);
    ck_assert_uint_eq(f.epoch.n, HR_EPOCH_MAX);
    /* one byte more, written by hand: a protocol error with a reason */
    static const uint8_t sub_head[] = {0x94, 0x03, 0x01, 0xa1, 'a', 0x81, 0xa5,
                                       'e',  'p',  'o',  'c',  'h', 0xd9, HR_EPOCH_MAX + 1};
    static const uint8_t welcome_head[] = {
        0x92, 0x10, 0x81, 0xa5, 'e', 'p', 'o', 'c', 'h', 0xd9, HR_EPOCH_MAX + 1};
    hr_buf_reset(&b);
    hr_buf_append(&b, sub_head, sizeof(sub_head));
    hr_buf_append(&b, e65, HR_EPOCH_MAX + 1);
    ck_assert_int_eq(hr_frame_decode(b.base, b.len, 0, &f, &why), HR_EPROTO);
    ck_assert_ptr_nonnull(strstr(why, "epoch"));
    hr_buf_reset(&b);
    hr_buf_append(&b, welcome_head, sizeof(welcome_head));
    hr_buf_append(&b, e65, HR_EPOCH_MAX + 1);
    ck_assert_int_eq(hr_frame_decode(b.base, b.len, 0, &f, &why), HR_EPROTO);
    ck_assert_ptr_nonnull(strstr(why, "epoch"));
    hr_buf_destroy(&b);
}
END_TEST

/* BATCH (op 21): each message comes out of the iterator as the MSG it stands for. */
START_TEST(batch_frames)
{
    hr_frame_t f, m;
    hr_batch_iter_t it;
    /* [21, 7, [["a", 1, bin "x"], ["a.b", 300, bin "", {reply: "r", replay: true}]]] */
    const char *two = "93 15 07 92 93 a1 61 01 c4 01 78"
                      " 94 a3 61 2e 62 cd 01 2c c4 00 82 a5 72 65 70 6c 79 a1 72"
                      " a6 72 65 70 6c 61 79 c3";
    ck_assert_int_eq(decode_hex(two, &f), HR_OK);
    ck_assert_int_eq(f.op, HR_OP_BATCH);
    ck_assert_uint_eq(f.sid, 7);
    ck_assert_uint_eq(f.nbatch, 2);
    ck_assert_str_eq(hr_op_name(HR_OP_BATCH), "BATCH");
    /* the slices point into the decoded bytes, freed by decode_hex: decode again here */
    size_t n;
    uint8_t *p = hexbytes(two, &n);
    ck_assert_int_eq(hr_frame_decode(p, n, 0, &f, NULL), HR_OK);
    hr_batch_iter_init(&it, &f);
    ck_assert(hr_batch_iter_next(&it, &m));
    ck_assert(m.op == HR_OP_MSG && m.sid == 7 && m.seq == 1 && m.topic.n == 1 && m.payload.n == 1);
    ck_assert(!(m.flags & HR_F_REPLAY));
    ck_assert(hr_batch_iter_next(&it, &m));
    ck_assert(m.seq == 300 && m.topic.n == 3 && m.payload.n == 0);
    ck_assert((m.flags & HR_F_REPLAY) && (m.flags & HR_F_REPLY) && m.reply.n == 1);
    ck_assert(!hr_batch_iter_next(&it, &m));
    free(p);
    /* empty batch; then malformed ones */
    ck_assert_int_eq(decode_hex("93 15 07 90", &f), HR_OK);
    ck_assert_uint_eq(f.nbatch, 0);
    ck_assert_int_eq(decode_hex("92 15 07", &f), HR_EPROTO);
    ck_assert_int_eq(decode_hex("93 15 07 91 92 a1 61 01", &f), HR_EPROTO);          /* 2 fields */
    ck_assert_int_eq(decode_hex("93 15 07 91 93 a1 61 a1 31 c4 00", &f), HR_EPROTO); /* seq str */
    ck_assert_int_eq(decode_hex("93 15 07 91 93 a1 2a 01 c4 00", &f), HR_EPROTO);    /* topic * */
    ck_assert_int_eq(decode_hex("93 15 07 92 93 a1 61 01 c4 00", &f), HR_EPROTO);    /* count */
}
END_TEST

/* hr_enc_sub_ex() appends already encoded option entries (transforms) to the map. */
START_TEST(sub_extra_options)
{
    hr_buf_t b;
    hr_frame_t f;
    static const char rate[] = "\xa4rate\x82\xa1n\x01\xa2ms\x0a";
    hr_sub_fields_t so = {.queue = S("q"), .extra = {rate, sizeof(rate) - 1}, .nextra = 1};
    hr_buf_init(&b);
    ck_assert_int_eq(hr_enc_sub_ex(&b, 3, S("a.*"), &so), HR_OK);
    ck_assert_int_eq(hr_frame_decode(b.base, b.len, 0, &f, NULL), HR_OK);
    ck_assert((f.flags & HR_F_QUEUE) && f.queue.n == 1);
    ck_assert_uint_eq(f.opts.n, 1 + 6 + 2 + sizeof(rate) - 1);
    ck_assert_int_eq(memcmp(f.opts.p + f.opts.n - (sizeof(rate) - 1), rate, sizeof(rate) - 1), 0);
    hr_buf_destroy(&b);
}
END_TEST

START_TEST(length_prefix)
{
    hr_slice_t body;
    size_t used;
    hr_buf_t partial;
    uint8_t big[4] = {0x00, 0x10, 0x00, 0x01};
    ck_assert_int_eq(hr_lp_next(big, 4, 1 << 20, &body, &used), HR_ETOOBIG);
    ck_assert_int_eq(hr_lp_next(big, 3, 1 << 20, &body, &used), HR_EAGAIN);
    ck_assert_int_eq(hr_lp_next(big, 4, 2 << 20, &body, &used), HR_EAGAIN);
    ck_assert_uint_eq(used, 4 + 0x100001);
    hr_buf_init(&partial);
    ck_assert_int_eq(hr_lp_feed(&partial, (char *)big, 2, 1 << 20, collect, NULL), HR_OK);
    ck_assert_int_eq(hr_lp_feed(&partial, (char *)big + 2, 2, 1 << 20, collect, NULL), HR_ETOOBIG);
    hr_buf_destroy(&partial);
}
END_TEST

START_TEST(topics)
{
    char tok[70];
    memset(tok, 'a', sizeof(tok));
    ck_assert_int_eq(hr_topic_validate("a.b.c", 5), HR_OK);
    ck_assert_int_eq(hr_topic_validate("$SYS.x", 6), HR_OK);
    ck_assert_int_eq(hr_topic_validate("a b", 3), HR_ETOPIC);
    ck_assert_int_eq(hr_topic_validate(".a", 2), HR_ETOPIC);
    ck_assert_int_eq(hr_topic_validate("a.", 2), HR_ETOPIC);
    ck_assert_int_eq(hr_topic_validate("a\x01", 2), HR_ETOPIC);
    ck_assert_int_eq(hr_topic_validate("a\xc3\xa9", 3), HR_ETOPIC);
    ck_assert_int_eq(hr_topic_validate(tok, 64), HR_OK);
    ck_assert_int_eq(hr_topic_validate(tok, 65), HR_ETOPIC);
    ck_assert_int_eq(hr_topic_validate("a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", 31), HR_OK);
    ck_assert_int_eq(hr_topic_validate("a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a", 33), HR_ETOPIC);
    ck_assert_int_eq(hr_pattern_validate("*.b.>", 5), HR_OK);
    ck_assert_int_eq(hr_pattern_validate("a.>.b", 5), HR_ETOPIC);
    ck_assert_int_eq(hr_pattern_validate("a.b*", 4), HR_ETOPIC);
    ck_assert(hr_topic_match("a.*", 3, "a.b", 3));
    ck_assert(!hr_topic_match("a.*", 3, "a.b.c", 5));
    ck_assert(!hr_topic_match("a.*", 3, "a", 1));
    ck_assert(hr_topic_match("a.>", 3, "a.b.c", 5));
    ck_assert(!hr_topic_match("a.>", 3, "a", 1));
    ck_assert(hr_topic_match(">", 1, "x", 1));
    ck_assert(!hr_topic_match(">", 1, "$SYS.x", 6));
    ck_assert(!hr_topic_match("*.x", 3, "$SYS.x", 6));
    ck_assert(hr_topic_match("$SYS.>", 6, "$SYS.x", 6));
    ck_assert(hr_topic_match("a.b", 3, "a.b", 3));
    ck_assert(!hr_topic_match("a.b", 3, "a.bc", 4));
    ck_assert(!hr_topic_match("a.b.c", 5, "a.b", 3));
}
END_TEST

START_TEST(status_codes)
{
    ck_assert_uint_eq(hr_status_to_wire(HR_EPROTO), 1);
    ck_assert_uint_eq(hr_status_to_wire(HR_EHEARTBEAT), 11);
    ck_assert_uint_eq(hr_status_to_wire(HR_ENOMEM), 0);
    ck_assert_int_eq(hr_status_from_wire(6), HR_ESLOW);
    ck_assert_int_eq(hr_status_from_wire(99), HR_EPROTO);
    ck_assert_str_eq(hr_err_name(HR_ETOPIC), "HR_ETOPIC");
    ck_assert_str_eq(hr_strerror(HR_OK), "success");
    ck_assert_str_eq(hr_err_name(-111), "ECONNREFUSED"); /* libuv codes pass through */
}
END_TEST

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *t = tcase_create("codec");
    tcase_add_test(t, round_trip);
    tcase_add_test(t, every_split_point);
    tcase_add_test(t, truncated_bodies_rejected);
    tcase_add_test(t, rejections);
    tcase_add_test(t, epoch_and_last);
    tcase_add_test(t, batch_frames);
    tcase_add_test(t, sub_extra_options);
    tcase_add_test(t, length_prefix);
    tcase_add_test(t, topics);
    tcase_add_test(t, status_codes);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(codec_suite)
