/* SPDX-License-Identifier: MIT */
/* Output queue: gathering, partial writes at every byte, dropping unsent, releasing refs. */
#include <check.h>
#include <string.h>

#include "hr_check.h"
#include "outq.h"

/* Pushes three deliveries of one shared body and one control message. */
static void fill(hr_outq_t *q, hr_msg_t *shared, hr_msg_t *ctl)
{
    static const uint8_t h1[HR_DELIVERY_HDR_MAX] = {'A'}, h2[HR_DELIVERY_HDR_MAX] = {'B', 'B'},
                         h3[HR_DELIVERY_HDR_MAX] = {'C', 'C', 'C'};
    memset(q, 0, sizeof(*q));
    hr__oq_push(q, shared, h1, 1);
    hr__oq_push(q, ctl, NULL, 0);
    hr__oq_push(q, shared, h2, 2);
    hr__oq_push(q, shared, h3, 3);
}

static const char expect[] = "AbodyctlBBbodyCCCbody";

/* Reassembles what the iovecs say from the cursor on. */
static size_t gather(const hr_outq_t *q, char *out, int max_iov)
{
    uv_buf_t iov[16];
    size_t total, k = 0;
    int n = hr__oq_iov(q, iov, max_iov, 1 << 20, &total);
    for (int i = 0; i < n; i++) {
        memcpy(out + k, iov[i].base, iov[i].len);
        k += iov[i].len;
    }
    ck_assert_uint_eq(k, total);
    return k;
}

START_TEST(partial_writes_every_byte)
{
    hr_msg_t *shared = hr_msg_new(0, "body", 4), *ctl = hr_msg_new(0, "ctl", 3);
    size_t len = strlen(expect);
    for (size_t first = 0; first <= len; first++) {
        hr_outq_t q;
        char out[64];
        fill(&q, shared, ctl);
        ck_assert_uint_eq(q.bytes, len);
        ck_assert_uint_eq(shared->refs, 4);
        hr__oq_advance(&q, first);
        ck_assert_uint_eq(q.bytes, len - first);
        size_t k = gather(&q, out, 16);
        ck_assert_uint_eq(k, len - first);
        ck_assert_mem_eq(out, expect + first, k);
        hr__oq_advance(&q, k);
        ck_assert_uint_eq(q.n, 0);
        ck_assert_uint_eq(shared->refs, 1); /* every delivery released its reference */
        hr__oq_free(&q);
    }
    hr_msg_unref(&shared);
    hr_msg_unref(&ctl);
}
END_TEST

START_TEST(iov_limit)
{
    hr_msg_t *shared = hr_msg_new(0, "body", 4), *ctl = hr_msg_new(0, "ctl", 3);
    hr_outq_t q;
    char out[64];
    fill(&q, shared, ctl);
    size_t k = gather(&q, out, 3); /* room for one delivery (2 iovecs) only */
    ck_assert_uint_eq(k, 5);
    ck_assert_mem_eq(out, "Abody", 5);
    hr__oq_free(&q);
    ck_assert_uint_eq(shared->refs, 1);
    hr_msg_unref(&shared);
    hr_msg_unref(&ctl);
}
END_TEST

START_TEST(drop_unsent_keeps_inflight)
{
    hr_msg_t *shared = hr_msg_new(0, "body", 4), *ctl = hr_msg_new(0, "ctl", 3);
    hr_outq_t q;
    fill(&q, shared, ctl);
    hr__oq_advance(&q, 2);
    q.inflight = 5; /* the rest of entry 0 and part of entry 1 are in a write */
    hr__oq_drop_unsent(&q);
    ck_assert_uint_eq(q.n, 2);
    ck_assert_uint_eq(q.bytes, 3 + 3);
    ck_assert_uint_eq(shared->refs, 2);
    q.inflight = 0;
    hr__oq_drop_unsent(&q);
    ck_assert_uint_eq(q.n, 0);
    ck_assert_uint_eq(q.bytes, 0);
    hr__oq_free(&q);
    ck_assert_uint_eq(shared->refs, 1);
    ck_assert_uint_eq(ctl->refs, 1);
    hr_msg_unref(&shared);
    hr_msg_unref(&ctl);
}
END_TEST

START_TEST(growth)
{
    hr_msg_t *m = hr_msg_new(0, "x", 1);
    hr_outq_t q;
    memset(&q, 0, sizeof(q));
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++)
            ck_assert_int_eq(hr__oq_push(&q, m, NULL, 0), HR_OK);
        hr__oq_advance(&q, 400); /* consume across chunk boundaries */
    }
    ck_assert_uint_eq(q.n, 1800);
    ck_assert_uint_eq(m->refs, 1801);
    hr__oq_advance(&q, 1800);
    ck_assert_ptr_null(q.head); /* a drained queue holds no memory */
    hr__oq_free(&q);
    hr_msg_unref(&m);
}
END_TEST

static Suite *outq_suite(void)
{
    Suite *s = suite_create("outq");
    TCase *t = tcase_create("outq");
    tcase_add_test(t, partial_writes_every_byte);
    tcase_add_test(t, iov_limit);
    tcase_add_test(t, drop_unsent_keeps_inflight);
    tcase_add_test(t, growth);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(outq_suite)
