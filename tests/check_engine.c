/* SPDX-License-Identifier: MIT */
/* Engine: per-topic seq, history bounds (messages, bytes, total), replay and gaps, topic limit. */
#include <check.h>
#include <string.h>

#include "engine.h"
#include "hr_check.h"

static hr_slice_t S(const char *s)
{
    hr_slice_t x = {s, strlen(s)};
    return x;
}

static void publish(hr_engine_t *e, const char *topic, size_t plen)
{
    static char payload[4096];
    int st;
    hr_topic_t *t = hr__engine_topic(e, topic, strlen(topic), 1, &st);
    ck_assert_ptr_nonnull(t);
    hr_slice_t p = {payload, plen};
    hr_msg_t *m = hr_msg_new_delivery(S(topic), t->seq + 1, p, S(""), S(""), 0);
    uint64_t seq = hr__engine_sequence(e, t);
    hr__engine_retain(e, t, seq, m);
    hr_msg_unref(&m);
}

typedef struct seen_s {
    uint64_t seqs[256];
    int n;
} seen_t;

static void on_replay(void *arg, hr_msg_t *m)
{
    seen_t *s = arg;
    hr_buf_t b;
    hr_frame_t f;
    uint8_t hdr[HR_DELIVERY_HDR_MAX];
    hr_buf_init(&b);
    size_t h = hr_msg_delivery_header(m, 1, HR_FRAMING_LP, hdr);
    hr_buf_append(&b, hdr + 4, h - 4);
    hr_buf_append(&b, hr_msg_bytes(m), m->len);
    ck_assert_int_eq(hr_frame_decode(b.base, b.len, 0, &f, NULL), HR_OK);
    ck_assert(f.flags & HR_F_REPLAY);
    s->seqs[s->n++] = f.seq;
    hr_buf_destroy(&b);
}

START_TEST(seq_and_history)
{
    hr_engine_t e;
    hr_engine_limits_t lim = {100, 5, 1 << 20, 1 << 30};
    int st;
    hr__engine_init(&e, &lim);
    for (int i = 0; i < 8; i++)
        publish(&e, "a", 10);
    publish(&e, "b", 10);
    hr_topic_t *a = hr__engine_topic(&e, "a", 1, 0, &st);
    ck_assert_uint_eq(a->seq, 8);
    ck_assert_uint_eq(a->count, 5);
    ck_assert_uint_eq(hr__engine_topic(&e, "b", 1, 0, &st)->seq, 1);
    seen_t s = {{0}, 0};
    ck_assert_int_eq(hr__engine_replay(&e, a, 5, on_replay, &s), HR_OK);
    ck_assert_int_eq(s.n, 3);
    ck_assert_uint_eq(s.seqs[0], 6);
    ck_assert_uint_eq(s.seqs[2], 8);
    s.n = 0;
    ck_assert_int_eq(hr__engine_replay(&e, a, 1, on_replay, &s), HR_EGAP); /* 2 and 3 gone */
    ck_assert_int_eq(s.n, 5);
    ck_assert_uint_eq(s.seqs[0], 4);
    s.n = 0;
    ck_assert_int_eq(hr__engine_replay(&e, a, 8, on_replay, &s), HR_OK);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(hr__engine_replay(&e, a, 100, on_replay, &s), HR_OK);
    hr__engine_destroy(&e);
}
END_TEST

START_TEST(byte_bounds)
{
    hr_engine_t e;
    hr_engine_limits_t lim = {100, 128, 4096, 2 * 4096};
    int st;
    hr__engine_init(&e, &lim);
    for (int i = 0; i < 50; i++)
        publish(&e, "a", 1000);
    hr_topic_t *a = hr__engine_topic(&e, "a", 1, 0, &st);
    ck_assert_uint_le(a->bytes, 4096);
    ck_assert_uint_ge(a->count, 3);
    for (int i = 0; i < 50; i++) {
        publish(&e, "b", 1000);
        publish(&e, "c", 1000);
        publish(&e, "d", 1000);
    }
    ck_assert_uint_le(e.hist_bytes, 2 * 4096); /* the total bound holds */
    /* the least recently published topic gave way first */
    ck_assert_uint_eq(hr__engine_topic(&e, "a", 1, 0, &st)->count, 0);
    /* a message larger than the per-topic bound is still kept as the newest */
    publish(&e, "big", 4000);
    publish(&e, "big", 4000);
    ck_assert_uint_eq(hr__engine_topic(&e, "big", 3, 0, &st)->count, 1);
    hr__engine_destroy(&e);
}
END_TEST

START_TEST(topic_limit)
{
    hr_engine_t e;
    hr_engine_limits_t lim = {2, 0, 0, 0};
    int st;
    hr__engine_init(&e, &lim);
    ck_assert_ptr_nonnull(hr__engine_topic(&e, "a", 1, 1, &st));
    ck_assert_ptr_nonnull(hr__engine_topic(&e, "b", 1, 1, &st));
    ck_assert_ptr_null(hr__engine_topic(&e, "c", 1, 1, &st));
    ck_assert_int_eq(st, HR_ELIMIT);
    ck_assert_ptr_nonnull(hr__engine_topic(&e, "a", 1, 1, &st)); /* existing ones still work */
    publish(&e, "a", 10);                                        /* history disabled: no crash */
    ck_assert_uint_eq(e.hist_msgs, 0);
    hr__engine_destroy(&e);
}
END_TEST

static Suite *engine_suite(void)
{
    Suite *s = suite_create("engine");
    TCase *t = tcase_create("engine");
    tcase_add_test(t, seq_and_history);
    tcase_add_test(t, byte_bounds);
    tcase_add_test(t, topic_limit);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(engine_suite)
