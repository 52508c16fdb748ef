/* SPDX-License-Identifier: MIT */
/* libherald over WebSocket: the client's RFC 6455 layer, a scripted server, and the real broker. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../../client/client_int.h"
#include "cfix.h"

static cfix_t F;

/* ---- the codec, without sockets ---------------------------------------- */

START_TEST(test_accept_rfc_example)
{
    char acc[29];
    hr_buf_t b;
    /* RFC 6455 section 1.3: "the sample nonce" */
    const uint8_t nonce[16] = "the sample nonce";
    hr__ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc);
    ck_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    hr_buf_init(&b);
    ck_assert_int_eq(hr__ws_request(&b, "::1", 7401, "/x", nonce, acc), HR_OK);
    ck_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    hr_buf_append(&b, "", 1);
    const char *req = (const char *)b.base;
    ck_assert_ptr_nonnull(strstr(req, "GET /x HTTP/1.1\r\n"));
    ck_assert_ptr_nonnull(strstr(req, "Host: [::1]:7401\r\n"));
    ck_assert_ptr_nonnull(strstr(req, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    ck_assert_ptr_nonnull(strstr(req, "Sec-WebSocket-Protocol: herald.v1\r\n\r\n"));
    hr_buf_destroy(&b);
}
END_TEST

static int response(const char *r)
{
    size_t used = 0;
    return hr__ws_response((const uint8_t *)r, strlen(r), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &used);
}

START_TEST(test_response_checks)
{
    const char *ok =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
        "Connection: Upgrade\r\nsec-websocket-accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: herald.v1\r\n\r\n\x82\x00";
    size_t used = 0, head = (size_t)(strstr(ok, "\r\n\r\n") + 4 - ok);
    const char *acc = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    ck_assert_int_eq(hr__ws_response((const uint8_t *)ok, head + 2, acc, &used), HR_OK);
    ck_assert_uint_eq(used, head);    /* the frame after the head is left */
    for (size_t n = 0; n < head; n++) /* every truncation waits for more */
        ck_assert_int_eq(hr__ws_response((const uint8_t *)ok, n, acc, &used), HR_EAGAIN);
    ck_assert_int_eq(response("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
                     HR_OK); /* no subprotocol echoed: accepted */
    ck_assert_int_eq(response("HTTP/1.1 400 Bad\r\n\r\n"), HR_EPROTO);
    ck_assert_int_eq(response("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                              "Sec-WebSocket-Accept: AAAAPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
                     HR_EPROTO);
    ck_assert_int_eq(response("HTTP/1.1 101 x\r\n"
                              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
                     HR_EPROTO);
    ck_assert_int_eq(response("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                              "Sec-WebSocket-Protocol: other\r\n\r\n"),
                     HR_EPROTO);
    ck_assert_int_eq(response("\x82\x05hello"), HR_EPROTO);
}
END_TEST

/* Encodes with each length form, then parses back at every split point. */
START_TEST(test_frames_roundtrip)
{
    size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 200000};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        uint8_t *data = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            data[i] = (uint8_t)(i * 7);
        hr_buf_t b;
        hr_buf_init(&b);
        ck_assert_int_eq(hr__ws_encode(&b, 2, data, n, 0xa1b2c3d4), HR_OK);
        ck_assert_uint_eq(b.base[0], 0x82);
        ck_assert(b.base[1] & 0x80); /* masked */
        if (n > 0)
            ck_assert(memcmp(b.base + b.len - n, data, n) != 0 || n < 4);
        hr__ws_frame_t f;
        size_t used;
        size_t step = n > 1000 ? 997 : 1;
        for (size_t cut = 0; cut < b.len; cut += step)
            ck_assert_int_eq(hr__ws_frame_next(b.base, cut, 1u << 20, &f, &used), HR_EAGAIN);
        ck_assert_int_eq(hr__ws_frame_next(b.base, b.len, 1u << 20, &f, &used), HR_OK);
        ck_assert_uint_eq(used, b.len);
        ck_assert_int_eq(f.fin, 1);
        ck_assert_int_eq(f.opcode, 2);
        ck_assert_uint_eq(f.len, n);
        ck_assert(n == 0 || memcmp(f.data, data, n) == 0); /* unmasked in place */
        if (n > 10)
            ck_assert_int_eq(hr__ws_frame_next(b.base, b.len, 10, &f, &used), HR_ETOOBIG);
        hr_buf_destroy(&b);
        free(data);
    }
    uint8_t rsv[] = {0xc2, 0x00};
    uint8_t bigping[] = {0x89, 0x7e, 0x00, 0x80};
    uint8_t fragping[] = {0x09, 0x00};
    hr__ws_frame_t f;
    size_t used;
    ck_assert_int_eq(hr__ws_frame_next(rsv, 2, 100, &f, &used), HR_EPROTO);
    ck_assert_int_eq(hr__ws_frame_next(bigping, 4, 1000, &f, &used), HR_EPROTO);
    ck_assert_int_eq(hr__ws_frame_next(fragping, 2, 100, &f, &used), HR_EPROTO);
}
END_TEST

/* ---- a scripted WebSocket server ----------------------------------------- */

typedef struct wsfake_s {
    uv_tcp_t lis;
    int port;
    hr_buf_t after; /* frames sent right after the 101 response */
    hr_buf_t later; /* frames sent once the client sent something after its head */
    hr_buf_t got;   /* bytes received after the request head */
    int head_done, later_done;
} wsfake_t;

static void wf_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char scratch[65536];
    *b = uv_buf_init(scratch, sizeof(scratch));
}

static void wf_written(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void wf_send(uv_stream_t *s, const void *p, size_t n)
{
    uv_write_t *w = malloc(sizeof(*w));
    w->data = malloc(n);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    ck_assert_int_eq(uv_write(w, s, &b, 1, wf_written), 0);
}

/* Answers the upgrade with the right accept, then plays `after`; records the rest. */
static void wf_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    wsfake_t *f = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, (uv_close_cb)free);
        return;
    }
    hr_buf_append(&f->got, buf->base, (size_t)n);
    if (f->head_done) {
        if (!f->later_done && f->got.len) {
            f->later_done = 1;
            wf_send(s, f->later.base, f->later.len);
        }
        return;
    }
    hr_buf_append(&f->got, "", 1);
    f->got.len--;
    const char *end = strstr((const char *)f->got.base, "\r\n\r\n");
    if (!end)
        return;
    const char *k = strstr((const char *)f->got.base, "Sec-WebSocket-Key: ");
    ck_assert_ptr_nonnull(k);
    char key[64], acc[29], resp[512];
    sscanf(k + 19, "%63[^\r]", key);
    hr__ws_accept(key, acc);
    int rn = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                      "Sec-WebSocket-Protocol: herald.v1\r\n\r\n",
                      acc);
    f->head_done = 1;
    hr_buf_consume(&f->got, (size_t)(end + 4 - (const char *)f->got.base));
    wf_send(s, resp, (size_t)rn);
    wf_send(s, f->after.base, f->after.len);
}

static void wf_accept(uv_stream_t *lis, int status)
{
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(lis->loop, c);
    c->data = lis->data;
    ck_assert_int_eq(uv_accept(lis, (uv_stream_t *)c), 0);
    uv_read_start((uv_stream_t *)c, wf_alloc, wf_read);
}

static void wf_start(uv_loop_t *loop, wsfake_t *f)
{
    f->port = cfix_listen(loop, &f->lis, wf_accept);
    f->lis.data = f; /* after uv_tcp_init */
}

/* An unmasked server frame. */
static void srv_frame(hr_buf_t *b, uint8_t b0, const void *p, size_t n)
{
    uint8_t h[4] = {b0, (uint8_t)(n < 126 ? n : 126), (uint8_t)(n >> 8), (uint8_t)n};
    hr_buf_append(b, h, n < 126 ? 2 : 4);
    hr_buf_append(b, p, n);
}

typedef struct st_s {
    int connected, closed, close_status, msgs;
    char payload[64];
} st_t;

static void st_cb(hr_client_t *c, int ev, int status, void *arg)
{
    st_t *t = arg;
    t->connected += ev == HR_EVENT_CONNECTED;
    if (ev == HR_EVENT_CLOSED) {
        t->closed = 1;
        t->close_status = status;
    }
}

static void msg_cb(hr_client_t *c, hr_sub_t *s, hr_message_t *m, void *arg)
{
    st_t *t = arg;
    size_t n;
    const char *d = hr_message_data(m, &n);
    snprintf(t->payload, sizeof(t->payload), "%.*s", (int)n, d);
    t->msgs++;
}

/*
 * The server answers with WELCOME split over three fragments with a ping
 * between them and a MSG, and once the HELLO arrives ERR 9 and a close
 * frame: the client
 * reassembles, answers the ping with a masked pong carrying its payload,
 * delivers the MSG and reports HR_ESHUTDOWN.
 */
START_TEST(test_fragments_ping_close)
{
    uv_loop_t loop;
    wsfake_t f;
    st_t t;
    hr_buf_t body;
    hr_welcome_t w = {"fake", 3, 0, 1024, 1024 + 4096, 30000, NULL};
    hr_slice_t topic = {"a.b", 3}, pay = {"hello", 5}, none = {NULL, 0};
    uv_loop_init(&loop);
    memset(&f, 0, sizeof(f));
    memset(&t, 0, sizeof(t));
    hr_buf_init(&body);
    hr_enc_welcome(&body, &w);
    size_t third = body.len / 3;
    srv_frame(&f.after, 0x02, body.base, third);
    srv_frame(&f.after, 0x89, "pp", 2);
    srv_frame(&f.after, 0x00, body.base + third, third);
    srv_frame(&f.after, 0x80, body.base + 2 * third, body.len - 2 * third);
    hr_buf_reset(&body);
    hr_enc_msg(&body, 1, topic, 1, pay, none, none, 0);
    srv_frame(&f.after, 0x82, body.base, body.len);
    hr_buf_reset(&body);
    hr_enc_err(&body, 9, "bye", 0, 0);
    srv_frame(&f.later, 0x82, body.base, body.len);
    srv_frame(&f.later, 0x88, "\x03\xe9", 2);
    wf_start(&loop, &f);

    hr_client_opts_t o;
    char url[64];
    hr_client_t *c;
    hr_sub_t *sub;
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", f.port);
    hr_client_opts_init(&o);
    o.url = url;
    o.on_state = st_cb;
    o.arg = &t;
    o.reconnect = 0;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "a.>", NULL, msg_cb, &t, &sub), HR_OK);
    ck_assert(cfix_run_until(&loop, &t.closed, 5000));
    ck_assert_int_eq(t.connected, 1);
    ck_assert_int_eq(t.msgs, 1);
    ck_assert_str_eq(t.payload, "hello");
    ck_assert_int_eq(t.close_status, HR_ESHUTDOWN);

    /* What the client sent: masked binary frames (HELLO, SUB) and a pong "pp". */
    int saw_pong = 0, binaries = 0;
    size_t off = 0;
    while (off < f.got.len) {
        hr__ws_frame_t fr;
        size_t used;
        ck_assert_int_eq(hr__ws_frame_next(f.got.base + off, f.got.len - off, 1u << 20, &fr, &used),
                         HR_OK);
        ck_assert(f.got.base[off + 1] & 0x80);
        if (fr.opcode == 0xA) {
            ck_assert_uint_eq(fr.len, 2);
            ck_assert(memcmp(fr.data, "pp", 2) == 0);
            saw_pong = 1;
        } else {
            hr_frame_t hf;
            ck_assert_int_eq(fr.opcode, 2);
            ck_assert_int_eq(hr_frame_decode(fr.data, fr.len, 0, &hf, NULL), HR_OK);
            ck_assert_int_eq(hf.op, binaries == 0 ? HR_OP_HELLO : HR_OP_SUB);
            binaries++;
        }
        off += used;
    }
    ck_assert(saw_pong);
    ck_assert_int_ge(binaries, 1);
    hr_buf_destroy(&body);
    hr_buf_destroy(&f.after);
    hr_buf_destroy(&f.later);
    hr_buf_destroy(&f.got);
    cfix_loop_close(&loop);
}
END_TEST

/* ---- the real broker ------------------------------------------------------ */

static void setup(void)
{
    ck_assert_int_eq(cfix_start(&F, NULL), 0);
}

static void teardown(void)
{
    cfix_stop(&F);
}

/* A WebSocket subscriber and a WebSocket publisher, every length form, plus blocking requests. */
START_TEST(test_ws_broker)
{
    char wsurl[64], tcpurl[64];
    hr_client_opts_t o;
    hr_sync_t *ws, *tcp;
    hr_sync_sub_t *sub, *svc;
    hr_message_t *m;
    hr_client_opts_init(&o);
    o.url = cfix_ws_url(&F, wsurl, sizeof(wsurl));
    ck_assert_int_eq(hr_sync_connect(&o, &ws), HR_OK);
    o.url = cfix_url(&F, tcpurl, sizeof(tcpurl));
    ck_assert_int_eq(hr_sync_connect(&o, &tcp), HR_OK);
    ck_assert_int_eq(hr_sync_subscribe(ws, "big.*", NULL, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_flush(ws, 2000), HR_OK);
    size_t sizes[] = {0, 100, 126, 65535, 65536, 300000};
    static char payload[300000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (char)('a' + i % 26);
    for (size_t k = 0; k < 6; k++) {
        /* alternately from the TCP and from the WebSocket client */
        hr_sync_t *from = k % 2 ? ws : tcp;
        ck_assert_int_eq(hr_sync_publish(from, "big.x", payload, sizes[k], NULL), HR_OK);
        ck_assert_int_eq(hr_sync_next(sub, 3000, &m), HR_OK);
        size_t n;
        const char *d = hr_message_data(m, &n);
        ck_assert_uint_eq(n, sizes[k]);
        ck_assert(memcmp(d, payload, n) == 0);
        ck_assert_uint_eq(hr_message_seq(m), k + 1);
        hr_message_unref(&m);
    }
    /* a request/reply by hand: the WebSocket client asks, the TCP client answers */
    ck_assert_int_eq(hr_sync_subscribe(tcp, "svc.ws", NULL, &svc), HR_OK);
    ck_assert_int_eq(hr_sync_flush(tcp, 2000), HR_OK);
    hr_message_t *reply = NULL;
    uint64_t seq = 0;
    ck_assert_int_eq(hr_sync_publish_acked(ws, "acked.ws", "x", 1, 2000, &seq), HR_OK);
    ck_assert_uint_eq(seq, 1);
    ck_assert_int_eq(
        hr_sync_publish(ws, "svc.ws", "ping", 4, &(hr_publish_opts_t){.reply = "big.reply"}),
        HR_OK);
    ck_assert_int_eq(hr_sync_next(svc, 2000, &m), HR_OK);
    ck_assert_str_eq(hr_message_reply(m), "big.reply");
    ck_assert_int_eq(hr_sync_publish(tcp, hr_message_reply(m), "pong", 4, NULL), HR_OK);
    hr_message_unref(&m);
    ck_assert_int_eq(hr_sync_next(sub, 2000, &reply), HR_OK);
    ck_assert_str_eq(hr_message_topic(reply), "big.reply");
    hr_message_unref(&reply);
    ck_assert_uint_eq(hr_sync_dropped(sub), 0);
    hr_sync_close(&tcp, 0);
    hr_sync_close(&ws, 1);
}
END_TEST

typedef struct ev_s {
    int connected, reconnected, disconnected, closed;
    int disc_status, close_status;
} ev_t;

static void ev_cb(hr_client_t *c, int ev, int status, void *arg)
{
    ev_t *e = arg;
    e->connected += ev == HR_EVENT_CONNECTED;
    e->reconnected += ev == HR_EVENT_RECONNECTED;
    if (ev == HR_EVENT_DISCONNECTED) {
        e->disconnected++;
        e->disc_status = status;
    }
    if (ev == HR_EVENT_CLOSED) {
        e->closed++;
        e->close_status = status;
    }
}

/* SIGTERM over WebSocket: ERR 9 then close 1001, HR_ESHUTDOWN, then back on the same port. */
START_TEST(test_ws_shutdown_reconnect)
{
    uv_loop_t loop;
    ev_t e = {0};
    hr_client_opts_t o;
    char url[64];
    hr_client_t *c;
    hr_client_opts_init(&o);
    o.url = cfix_ws_url(&F, url, sizeof(url));
    o.reconnect_wait_ms = 10;
    ck_assert_int_eq(cfix_shutdown_cycle(&F, &o), HR_ESHUTDOWN);

    /* ws:// to the TCP port: the broker's ERR frame instead of an HTTP answer. */
    uv_loop_init(&loop);
    memset(&e, 0, sizeof(e));
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", F.port);
    o.on_state = ev_cb;
    o.arg = &e;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    ck_assert(cfix_run_until(&loop, &e.closed, 5000));
    ck_assert_int_eq(e.close_status, HR_ETCPPORT);
    cfix_loop_close(&loop);
}
END_TEST

Suite *ws_suite(void);

Suite *ws_suite(void)
{
    Suite *s = suite_create("client_ws");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, test_accept_rfc_example);
    tcase_add_test(tc, test_response_checks);
    tcase_add_test(tc, test_frames_roundtrip);
    suite_add_tcase(s, tc);
    tc = tcase_create("scripted");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_fragments_ping_close);
    suite_add_tcase(s, tc);
    tc = tcase_create("broker");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ws_broker);
    tcase_add_test(tc, test_ws_shutdown_reconnect);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ws_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
