/* SPDX-License-Identifier: MIT */
/* Message buffers: shared delivery bodies, per-delivery headers, replay variants, refcounts. */
#include <check.h>
#include <string.h>

#include "herald/protocol.h"
#include "hr_check.h"

static hr_slice_t S(const char *s)
{
    hr_slice_t x = {s, strlen(s)};
    return x;
}

/* header + shared body must equal what the plain encoder makes for that MSG. */
static void check_delivery(uint64_t sid, uint64_t seq, size_t plen, const char *reply,
                           const char *headers, int replay)
{
    static char payload[70000];
    memset(payload, 'p', sizeof(payload));
    hr_slice_t pl = {payload, plen};
    hr_msg_t *m = hr_msg_new_delivery(S("chat.room"), seq, pl, S(reply), S(headers), 0);
    ck_assert_ptr_nonnull(m);
    if (replay) {
        hr_msg_t *r = hr_msg_new_replay(m);
        hr_msg_unref(&m);
        m = r;
    }
    uint8_t hdr[HR_DELIVERY_HDR_MAX];
    size_t h = hr_msg_delivery_header(m, sid, HR_FRAMING_LP, hdr);
    hr_buf_t want, got;
    hr_buf_init(&want);
    hr_buf_init(&got);
    size_t mark = hr_lp_begin(&want);
    hr_enc_msg(&want, sid, S("chat.room"), seq, pl, S(reply), S(headers), replay);
    hr_lp_end(&want, mark);
    hr_buf_append(&got, hdr, h);
    hr_buf_append(&got, hr_msg_bytes(m), m->len);
    ck_assert_uint_eq(got.len, want.len);
    ck_assert_mem_eq(got.base, want.base, got.len);

    /* The WebSocket header frames the same bytes as one binary message. */
    h = hr_msg_delivery_header(m, sid, HR_FRAMING_WS, hdr);
    hr_ws_header_t wh;
    ck_assert_int_eq(hr_ws_header_parse(hdr, h, UINT64_MAX, &wh), HR_OK);
    ck_assert(wh.fin && wh.opcode == 2 && !wh.masked);
    ck_assert_uint_eq(wh.len, want.len - 4);
    hr_msg_unref(&m);
    ck_assert_ptr_null(m);
    hr_buf_destroy(&want);
    hr_buf_destroy(&got);
}

START_TEST(delivery_matches_encoder)
{
    uint64_t sids[] = {0, 127, 128, 255, 256, 65535, 65536, 1ull << 32, UINT64_MAX};
    size_t lens[] = {0, 1, 100, 125, 126, 255, 256, 65535, 65536, 69999};
    for (size_t i = 0; i < sizeof(sids) / sizeof(sids[0]); i++)
        for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
            check_delivery(sids[i], sids[i] + 1, lens[j], "", "", 0);
            check_delivery(sids[i], 3, lens[j], "", "", 1);
        }
    check_delivery(5, 9, 10, "_INBOX.a", "", 0);
    check_delivery(5, 9, 10, "_INBOX.a", "\x81\xa1k\xa1v", 1);
    check_delivery(5, 9, 10, "", "\x81\xa1k\xa1v", 1);
}
END_TEST

/* The parts of a delivery body, and the same body with another payload (a projection). */
START_TEST(parts_and_new_payload)
{
    static char payload[70000], topic[200];
    memset(payload, 'p', sizeof(payload));
    memset(topic, 't', sizeof(topic) - 1);
    size_t lens[] = {0, 1, 255, 256, 65535, 65536};
    uint64_t seqs[] = {1, 200, 70000, 1ull << 40};
    const char *topics[] = {"a", topic};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        for (size_t j = 0; j < sizeof(seqs) / sizeof(seqs[0]); j++)
            for (int k = 0; k < 4; k++) {
                hr_slice_t pl = {payload, lens[i]}, t = S(topics[k & 1]), tp, pp, op;
                uint64_t seq;
                const char *reply = k & 2 ? "_INBOX.r" : "";
                hr_msg_t *m = hr_msg_new_delivery(t, seqs[j], pl, S(reply), S(""), 0);
                hr_msg_t *r = hr_msg_new_replay(m);
                ck_assert_int_eq(hr_msg_delivery_parts(r, &tp, &seq, &pp, &op), HR_OK);
                ck_assert(tp.n == t.n && memcmp(tp.p, t.p, t.n) == 0 && seq == seqs[j]);
                ck_assert(pp.n == pl.n && memcmp(pp.p, payload, pl.n) == 0 && op.n > 0);
                /* a shorter payload in place of the long one equals a body made with it */
                hr_slice_t small = {payload, lens[i] / 3};
                hr_msg_t *n = hr_msg_new_with_payload(r, small);
                hr_msg_t *w = hr_msg_new_delivery(t, seqs[j], small, S(reply), S(""), 0);
                hr_msg_t *wr = hr_msg_new_replay(w);
                ck_assert_uint_eq(n->len, wr->len);
                ck_assert_uint_eq(n->arr, wr->arr);
                ck_assert_mem_eq(hr_msg_bytes(n), hr_msg_bytes(wr), n->len);
                hr_msg_unref(&m);
                hr_msg_unref(&r);
                hr_msg_unref(&n);
                hr_msg_unref(&w);
                hr_msg_unref(&wr);
            }
    /* bytes that are not a delivery body */
    hr_msg_t *bad = hr_msg_new(0, "\xc1\x01", 2);
    hr_slice_t a, b, c;
    uint64_t seq;
    ck_assert_int_eq(hr_msg_delivery_parts(bad, &a, &seq, &b, &c), HR_EINVAL);
    ck_assert_ptr_null(hr_msg_new_with_payload(bad, S("x")));
    hr_msg_unref(&bad);
    bad = hr_msg_new(0, "\xa1t\x01\xc4\x05xx", 6); /* payload cut short */
    ck_assert_int_eq(hr_msg_delivery_parts(bad, &a, &seq, &b, &c), HR_EINVAL);
    hr_msg_unref(&bad);
    bad = hr_msg_new(0, "\xa1t\x01\xc5\x00", 5); /* its length cut short */
    ck_assert_int_eq(hr_msg_delivery_parts(bad, &a, &seq, &b, &c), HR_EINVAL);
    hr_msg_unref(&bad);
}
END_TEST

START_TEST(refcounts)
{
    hr_msg_t *m = hr_msg_new(0, "abc", 3);
    hr_msg_t *a = hr_msg_ref(m), *b = hr_msg_ref(m);
    ck_assert_uint_eq(m->refs, 3);
    hr_msg_unref(&a);
    ck_assert_ptr_null(a);
    ck_assert_uint_eq(m->refs, 2);
    hr_msg_unref(&b);
    hr_msg_unref(&m); /* freed here; ASan reports a leak or double free otherwise */
    hr_msg_unref(&m); /* NULL-safe */
}
END_TEST

START_TEST(framing_in_headroom)
{
    hr_msg_t *m = hr_msg_new(HR_WS_HDR_MAX, "\x92\x05\x01", 3);
    ck_assert_int_eq(hr_msg_frame(m, HR_FRAMING_LP), HR_OK);
    ck_assert_uint_eq(m->len, 7);
    ck_assert_mem_eq(hr_msg_bytes(m), "\x00\x00\x00\x03\x92\x05\x01", 7);
    hr_msg_unref(&m);
    m = hr_msg_new(HR_WS_HDR_MAX, "\x92\x05\x01", 3);
    ck_assert_int_eq(hr_msg_frame(m, HR_FRAMING_WS), HR_OK);
    ck_assert_mem_eq(hr_msg_bytes(m), "\x82\x03\x92\x05\x01", 5);
    hr_msg_unref(&m);
    m = hr_msg_new(0, "x", 1);
    ck_assert_int_eq(hr_msg_frame(m, HR_FRAMING_LP), HR_EINVAL); /* no headroom */
    hr_msg_unref(&m);
}
END_TEST

static Suite *msg_suite(void)
{
    Suite *s = suite_create("msg");
    TCase *t = tcase_create("msg");
    tcase_add_test(t, delivery_matches_encoder);
    tcase_add_test(t, refcounts);
    tcase_add_test(t, parts_and_new_payload);
    tcase_add_test(t, framing_in_headroom);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(msg_suite)
