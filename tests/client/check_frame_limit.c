/* SPDX-License-Identifier: MIT */
/* libherald and the real broker at the frame size limit: a MSG may exceed max_frame. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/client.h"
#include "hr_check.h"
#include "hr_fixture.h"
#include "hr_raw.h"

/* A PUB body of exactly `len` bytes on `topic` (payload `payload` bytes), padded by a header. */
static void pub_of_size(hr_buf_t *b, const char *topic, size_t payload, size_t len)
{
    static char pl[1 << 16], val[1 << 16];
    hr_buf_t h;
    hr_buf_init(&h);
    for (size_t pad = 0; pad < sizeof(val); pad++) {
        /* headers = {"k": "x" * pad} */
        uint8_t hdr[] = {0x81, 0xa1, 'k', 0xda, (uint8_t)(pad >> 8), (uint8_t)pad};
        hr_buf_reset(&h);
        hr_buf_append(&h, hdr, sizeof(hdr));
        memset(val, 'x', pad);
        hr_buf_append(&h, val, pad);
        hr_pub_opts_t o = {.headers_raw = {(const char *)h.base, h.len}};
        hr_slice_t t = {topic, strlen(topic)}, p = {pl, payload};
        hr_buf_reset(b);
        hr_enc_pub(b, t, p, &o);
        if (b->len >= len)
            break;
    }
    hr_buf_destroy(&h);
}

static hr_sync_t *connect_sync(const hr_fixture_t *fx)
{
    char url[64];
    hr_client_opts_t o;
    hr_sync_t *s = NULL;
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", fx->tcp_port);
    hr_client_opts_init(&o);
    o.url = url;
    o.reconnect = 0; /* a dropped connection must show, not be papered over */
    return hr_sync_connect(&o, &s) == HR_OK ? s : NULL;
}

/*
 * The broker accepts a PUB body of exactly max_frame bytes (docs/protocol.md
 * refuses only longer ones), and the MSG it makes of it is a few bytes
 * longer (sid and seq, and `replay: true` for history). libherald held
 * incoming frames to max_frame and dropped the connection on that MSG, so
 * one publisher could disconnect every libherald subscriber of a topic
 * (and, with reconnect and resume, again on every replay).
 */
START_TEST(message_of_max_frame_reaches_libherald)
{
    enum { MAX_PAYLOAD = 1024, MAX_FRAME = MAX_PAYLOAD + 4096 };
    hr_fixture_t fx;
    const char *args[] = {"--max-payload", "1024", NULL};
    ck_assert_msg(hr_fixture_start(&fx, args) == 0, "broker did not start");
    hr_sync_t *live = connect_sync(&fx);
    hr_sync_sub_t *sub = NULL;
    int st_sub = live ? hr_sync_subscribe(live, "big", NULL, &sub) : -1;
    int st_flush = live ? hr_sync_flush(live, 5000) : -1;

    hr_raw_t p;
    hr_buf_t b;
    hr_buf_init(&b);
    int st_pub = -1;
    if (hr_raw_connect(&p, fx.tcp_port) == 0 && hr_raw_hello(&p, 1) == 0) {
        pub_of_size(&b, "big", MAX_PAYLOAD, MAX_FRAME);
        st_pub = b.len == MAX_FRAME ? hr_raw_send_body(&p, &b) : -2;
        if (st_pub == 0)
            st_pub = hr_raw_sync(&p, 1); /* accepted: the broker answers the next PING */
    }
    hr_buf_destroy(&b);
    hr_raw_close(&p);

    hr_message_t *m = NULL;
    size_t len = 0;
    int st_live = sub ? hr_sync_next(sub, 3000, &m) : -1;
    if (m)
        hr_message_data(m, &len);
    size_t live_len = len;
    hr_message_unref(&m);

    /* A late subscriber with since 0 gets it from history, as a replay. */
    hr_sync_t *late = connect_sync(&fx);
    hr_sync_sub_t *lsub = NULL;
    hr_sub_opts_t so = {.has_since = 1, .since = 0};
    int st_late = late ? hr_sync_subscribe(late, "big", &so, &lsub) : -1;
    int st_replay = lsub ? hr_sync_next(lsub, 3000, &m) : -1;
    int replay = m ? hr_message_is_replay(m) : 0;
    hr_message_unref(&m);

    hr_sync_close(&live, 0);
    hr_sync_close(&late, 0);
    hr_fixture_stop(&fx);
    hr_fixture_destroy(&fx);

    ck_assert_int_eq(st_sub, HR_OK);
    ck_assert_int_eq(st_flush, HR_OK);
    ck_assert_int_eq(st_pub, 0);
    ck_assert_int_eq(st_live, HR_OK);
    ck_assert_uint_eq(live_len, MAX_PAYLOAD);
    ck_assert_int_eq(st_late, HR_OK);
    ck_assert_int_eq(st_replay, HR_OK);
    ck_assert(replay);
}
END_TEST

static Suite *frame_limit_suite(void)
{
    Suite *s = suite_create("client_frame_limit");
    TCase *t = tcase_create("max_frame");
    tcase_add_test(t, message_of_max_frame_reaches_libherald);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(frame_limit_suite)
