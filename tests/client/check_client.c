/* SPDX-License-Identifier: MIT */
/* libherald asynchronous API against the real broker: every call, status, ordering, acks, requests.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herald/client.h"
#include "cfix.h"

#define MAXN 20000

static cfix_t F;
static char URL[64];

/* ---- harness ------------------------------------------------------------ */

typedef struct tc_s {
    uv_loop_t loop;
    hr_client_t *c;
    int connected, reconnected, disconnected, closed;
    int close_status, disc_status;
    int nerr, last_err;
    int errs_by_status[8];
    hr_sub_t *err_sub;
    char detail[320];
} tc_t;

static void st_cb(hr_client_t *c, int ev, int status, void *arg)
{
    tc_t *t = arg;
    switch (ev) {
    case HR_EVENT_CONNECTED:
        t->connected++;
        break;
    case HR_EVENT_RECONNECTED:
        t->reconnected++;
        break;
    case HR_EVENT_DISCONNECTED:
        t->disconnected++;
        t->disc_status = status;
        break;
    case HR_EVENT_CLOSED:
        t->closed++;
        t->close_status = status;
        t->c = NULL;
        break;
    }
}

static void err_cb(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    tc_t *t = arg;
    t->nerr++;
    t->last_err = status;
    t->err_sub = sub;
    snprintf(t->detail, sizeof(t->detail), "%s", detail);
    if (status == HR_ESLOW)
        t->errs_by_status[0]++;
    if (status == HR_EGAP)
        t->errs_by_status[1]++;
}

static void tc_opts(tc_t *t, hr_client_opts_t *o, const char *url)
{
    hr_client_opts_init(o);
    o->url = url;
    o->on_state = st_cb;
    o->on_error = err_cb;
    o->arg = t;
}

static void tc_init(tc_t *t)
{
    memset(t, 0, sizeof(*t));
    ck_assert_int_eq(uv_loop_init(&t->loop), 0);
}

/* Creates a client on t's loop and waits for its CONNECTED event. */
static hr_client_t *tc_connect_opts(tc_t *t, hr_client_opts_t *o)
{
    ck_assert_int_eq(hr_client_new(&t->loop, o, &t->c), HR_OK);
    ck_assert(cfix_run_until(&t->loop, &t->connected, 3000));
    ck_assert_int_eq(hr_client_state(t->c), HR_STATE_CONNECTED);
    return t->c;
}

static hr_client_t *tc_connect(tc_t *t)
{
    hr_client_opts_t o;
    tc_opts(t, &o, URL);
    return tc_connect_opts(t, &o);
}

static void tc_close(tc_t *t)
{
    if (t->c)
        hr_client_close(t->c);
    ck_assert(cfix_run_until(&t->loop, &t->closed, 3000));
    cfix_loop_close(&t->loop);
}

/* Collects messages of subscriptions. */
typedef struct coll_s {
    int n;
    int replays;
    uint64_t seqs[MAXN];
    uint32_t vals[MAXN];
    char topic[128];
    char payload[256];
    char reply[128];
    char hdr[64];
    hr_message_t *kept;
    int unsub_after; /* unsubscribe from the callback after this many */
    int sleep_us;
} coll_t;

static void coll_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    coll_t *k = arg;
    size_t len;
    const char *d = hr_message_data(m, &len);
    if (k->n < MAXN) {
        k->seqs[k->n] = hr_message_seq(m);
        k->vals[k->n] = len >= 4 ? (uint32_t)strtoul(d, NULL, 10) : 0;
    }
    k->n++;
    k->replays += hr_message_is_replay(m);
    snprintf(k->topic, sizeof(k->topic), "%s", hr_message_topic(m));
    snprintf(k->payload, sizeof(k->payload), "%.*s", (int)len, d);
    snprintf(k->reply, sizeof(k->reply), "%s", hr_message_reply(m) ? hr_message_reply(m) : "");
    const char *h = hr_message_header(m, "kind");
    snprintf(k->hdr, sizeof(k->hdr), "%s", h ? h : "");
    if (!k->kept)
        k->kept = hr_message_ref(m);
    if (k->unsub_after && k->n == k->unsub_after)
        hr_sub_unsubscribe(sub);
    if (k->sleep_us) {
        struct timespec ts = {0, k->sleep_us * 1000L};
        nanosleep(&ts, NULL);
    }
}

static coll_t *coll_new(void)
{
    return calloc(1, sizeof(coll_t));
}

static void coll_free(coll_t *k)
{
    hr_message_unref(&k->kept);
    free(k);
}

static void flush_done(hr_client_t *c, int status, void *arg)
{
    int *p = arg;
    *p = status == HR_OK ? 1 : status;
}

/* PING round trip: everything sent before has been processed by the broker. */
static void tc_flush(tc_t *t, hr_client_t *c)
{
    int done = 0;
    ck_assert_int_eq(hr_client_flush(c, flush_done, &done), HR_OK);
    ck_assert(cfix_run_until(&t->loop, &done, 3000));
    ck_assert_int_eq(done, 1);
}

static void setup(void)
{
    ck_assert_int_eq(cfix_start(&F, NULL), 0);
    cfix_url(&F, URL, sizeof(URL));
}

static void teardown(void)
{
    cfix_stop(&F);
}

/* ---- connect, options, URL ---------------------------------------------- */

START_TEST(test_connect_close)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    ck_assert_uint_gt(hr_client_id(c), 0);
    ck_assert_uint_gt(hr_client_max_payload(c), 0);
    ck_assert_ptr_eq(hr_client_loop(c), &t.loop);
    hr_client_close(c);
    hr_client_close(c); /* idempotent */
    ck_assert_int_eq(hr_client_state(c), HR_STATE_CLOSING);
    ck_assert_int_eq(hr_client_publish(c, "a", "x", 1, NULL), HR_ECLOSED);
    ck_assert(cfix_run_until(&t.loop, &t.closed, 3000));
    ck_assert_int_eq(t.close_status, HR_OK);
    ck_assert_int_eq(t.closed, 1);
    cfix_loop_close(&t.loop);
}
END_TEST

START_TEST(test_bad_options)
{
    uv_loop_t loop;
    hr_client_t *c = NULL;
    hr_client_opts_t o;
    uv_loop_init(&loop);
    hr_client_opts_init(&o);
    const char *bad[] = {"wsss://127.0.0.1:7401", "http://x:1",      "tcp://:7400", "tcp://host:0",
                         "tcp://host:99999",      "tcp://host:12ab", "tcp://[::1",  "",
                         "tcp://h:1/path",        "tcp://::1:7400",  "ws://[::1]x", "ws://:1/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.url = bad[i];
        ck_assert_msg(hr_client_new(&loop, &o, &c) == HR_EURL, "url %s", bad[i]);
    }
    o.url = "127.0.0.1:1";
    o.reconnect_jitter = 2;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_EINVAL);
    ck_assert_int_eq(hr_client_new(NULL, &o, &c), HR_EINVAL);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_connect_refused)
{
    tc_t t;
    hr_client_opts_t o;
    tc_init(&t);
    tc_opts(&t, &o, "tcp://127.0.0.1:1");
    ck_assert_int_eq(hr_client_new(&t.loop, &o, &t.c), HR_OK);
    /* Publishes before the first connection are buffered, then dropped. */
    ck_assert_int_eq(hr_client_publish(t.c, "a.b", "x", 1, NULL), HR_OK);
    ck_assert(cfix_run_until(&t.loop, &t.closed, 3000));
    ck_assert_int_eq(t.close_status, UV_ECONNREFUSED);
    ck_assert_int_eq(t.connected, 0);
    cfix_loop_close(&t.loop);
}
END_TEST

/*
 * A tcp:// URL naming the WebSocket/HTTP port and a ws:// URL naming the TCP
 * port fail at once with a status that says so, not after the connect
 * timeout, and are not retried even with retry_on_failed_connect.
 */
START_TEST(test_wrong_port)
{
    char url[64];
    const struct {
        const char *scheme;
        int port;
        int status;
    } cases[] = {{"tcp", F.ws_port, HR_EHTTPPORT}, {"ws", F.port, HR_ETCPPORT}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tc_t t;
        hr_client_opts_t o;
        tc_init(&t);
        snprintf(url, sizeof(url), "%s://127.0.0.1:%d", cases[i].scheme, cases[i].port);
        tc_opts(&t, &o, url);
        o.retry_on_failed_connect = 1;
        uint64_t t0 = uv_hrtime();
        ck_assert_int_eq(hr_client_new(&t.loop, &o, &t.c), HR_OK);
        ck_assert(cfix_run_until(&t.loop, &t.closed, 3000));
        ck_assert_int_eq(t.close_status, cases[i].status);
        ck_assert_uint_lt((uv_hrtime() - t0) / 1000000, 1000);
        ck_assert_int_eq(t.connected, 0);
        cfix_loop_close(&t.loop);

        hr_sync_t *s = NULL;
        hr_client_opts_init(&o);
        o.url = url;
        ck_assert_int_eq(hr_sync_connect(&o, &s), cases[i].status);
        ck_assert_ptr_null(s);
    }
    ck_assert_ptr_nonnull(strstr(hr_strerror(HR_EHTTPPORT), "WebSocket/HTTP port"));
    ck_assert_ptr_nonnull(strstr(hr_strerror(HR_ETCPPORT), "TCP port"));
}
END_TEST

START_TEST(test_connect_hostname_and_retry)
{
    tc_t t;
    hr_client_opts_t o;
    char url[64];
    tc_init(&t);
    snprintf(url, sizeof(url), "localhost:%d", F.port);
    tc_opts(&t, &o, url);
    tc_connect_opts(&t, &o);
    tc_close(&t);

    /* retry_on_failed_connect: the first attempt fails, reconnect gives up after 3. */
    tc_init(&t);
    tc_opts(&t, &o, "tcp://127.0.0.1:1");
    o.retry_on_failed_connect = 1;
    o.max_reconnect = 3;
    o.reconnect_wait_ms = 10;
    uint64_t t0 = uv_hrtime();
    ck_assert_int_eq(hr_client_new(&t.loop, &o, &t.c), HR_OK);
    ck_assert(cfix_run_until(&t.loop, &t.closed, 5000));
    ck_assert_int_eq(t.close_status, UV_ECONNREFUSED);
    /* backoff 10, 20, 40 ms with +-20% jitter */
    ck_assert_uint_ge((uv_hrtime() - t0) / 1000000, 50);
    cfix_loop_close(&t.loop);
}
END_TEST

/* ---- publish / subscribe ------------------------------------------------ */

START_TEST(test_pubsub_order_headers_reply)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    coll_t *k = coll_new();
    hr_sub_t *sub;
    ck_assert_int_eq(hr_client_subscribe(c, "room.1", NULL, coll_cb, k, &sub), HR_OK);
    ck_assert_uint_gt(hr_sub_sid(sub), 0);
    tc_flush(&t, c);
    hr_header_t h[2] = {{"kind", "greeting"}, {"lang", "en"}};
    hr_publish_opts_t po = {.reply = "_INBOX.me", .headers = h, .nheaders = 2};
    ck_assert_int_eq(hr_client_publish(c, "room.1", "hello", 5, &po), HR_OK);
    ck_assert(cfix_run_until(&t.loop, &k->n, 3000));
    ck_assert_str_eq(k->topic, "room.1");
    ck_assert_str_eq(k->payload, "hello");
    ck_assert_str_eq(k->reply, "_INBOX.me");
    ck_assert_str_eq(k->hdr, "greeting");
    size_t nh;
    const hr_header_t *hh = hr_message_headers(k->kept, &nh);
    ck_assert_uint_eq(nh, 2);
    ck_assert_str_eq(hh[1].key, "lang");
    ck_assert_str_eq(hh[1].value, "en");
    ck_assert_ptr_null(hr_message_header(k->kept, "nope"));
    ck_assert_uint_eq(hr_message_seq(k->kept), 1);
    ck_assert_int_eq(hr_message_is_replay(k->kept), 0);

    /* 2000 more: delivered in seq order, no gap, no duplicate. */
    for (int i = 0; i < 2000; i++) {
        char p[16];
        int n = snprintf(p, sizeof(p), "%08d", i);
        ck_assert_int_eq(hr_client_publish(c, "room.1", p, (size_t)n, NULL), HR_OK);
    }
    int target = 2001;
    for (int i = 0; i < 300 && k->n < target; i++)
        cfix_run_for(&t.loop, 10);
    ck_assert_int_eq(k->n, target);
    for (int i = 0; i < target; i++)
        ck_assert_uint_eq(k->seqs[i], (uint64_t)i + 1);
    ck_assert_uint_eq(hr_sub_delivered(sub), (uint64_t)target);
    hr_client_stats_t st;
    hr_client_stats(c, &st);
    ck_assert_uint_eq(st.msgs_in, (uint64_t)target);
    ck_assert_uint_eq(st.msgs_out, (uint64_t)target);
    ck_assert_uint_eq(st.bytes_out, 5 + 2000 * 8);
    ck_assert_uint_eq(st.reconnects, 0);
    ck_assert_uint_eq(st.dropped, 0);
    ck_assert_uint_eq(hr_sub_dropped(sub), 0);
    size_t pm, pb;
    hr_sub_pending(sub, &pm, &pb);
    ck_assert_uint_eq(pm, 0);
    ck_assert_uint_eq(pb, 0);
    tc_close(&t);
    coll_free(k);
}
END_TEST

START_TEST(test_publish_errors)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    char big[2048] = {0};
    ck_assert_int_eq(hr_client_publish(c, "a..b", "x", 1, NULL), HR_ETOPIC);
    ck_assert_int_eq(hr_client_publish(c, "a.*", "x", 1, NULL), HR_ETOPIC);
    ck_assert_int_eq(hr_client_publish(c, "a.>", "x", 1, NULL), HR_ETOPIC);
    ck_assert_int_eq(hr_client_publish(c, "$SYS.x", "x", 1, NULL), HR_EPERM);
    hr_publish_opts_t po = {.reply = "bad reply"};
    ck_assert_int_eq(hr_client_publish(c, "a", "x", 1, &po), HR_ETOPIC);
    ck_assert_int_eq(hr_client_publish(c, "a", NULL, 3, NULL), HR_EINVAL);
    ck_assert_int_eq(hr_client_publish(c, NULL, "x", 1, NULL), HR_EINVAL);
    hr_header_t h = {"k", NULL};
    hr_publish_opts_t ph = {.headers = &h, .nheaders = 1};
    ck_assert_int_eq(hr_client_publish(c, "a", "x", 1, &ph), HR_EINVAL);
    ck_assert_int_eq(hr_client_publish(c, "a", NULL, 0, NULL), HR_OK); /* empty payload */
    hr_sub_t *s;
    ck_assert_int_eq(hr_client_subscribe(c, "a.>.b", NULL, coll_cb, NULL, &s), HR_ETOPIC);
    ck_assert_int_eq(hr_client_subscribe(c, "", NULL, coll_cb, NULL, &s), HR_ETOPIC);
    ck_assert_int_eq(hr_client_subscribe(c, "a", NULL, NULL, NULL, &s), HR_EINVAL);
    ck_assert_int_eq(hr_client_queue_subscribe(c, "a", NULL, coll_cb, NULL, &s), HR_EINVAL);
    ck_assert_int_eq(hr_sub_unsubscribe(NULL), HR_EINVAL);
    ck_assert_int_eq(hr_client_respond(c, NULL, "x", 1), HR_EINVAL);
    tc_close(&t);

    /* Payload over the broker's max_payload. */
    cfix_stop(&F);
    const char *args[] = {"--max-payload", "1K", NULL};
    ck_assert_int_eq(cfix_start(&F, args), 0);
    cfix_url(&F, URL, sizeof(URL));
    tc_init(&t);
    c = tc_connect(&t);
    ck_assert_uint_eq(hr_client_max_payload(c), 1024);
    ck_assert_int_eq(hr_client_publish(c, "a", big, 1025, NULL), HR_ETOOBIG);
    ck_assert_int_eq(hr_client_publish(c, "a", big, 1024, NULL), HR_OK);
    tc_flush(&t, c);
    tc_close(&t);
}
END_TEST

typedef struct acks_s {
    int n;
    int status[64];
    uint64_t seq[64];
} acks_t;

static void ack_cb(hr_client_t *c, int status, uint64_t seq, void *arg)
{
    acks_t *a = arg;
    a->status[a->n] = status;
    a->seq[a->n] = seq;
    a->n++;
}

START_TEST(test_acks)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    acks_t a = {0};
    hr_publish_opts_t po = {.on_ack = ack_cb, .arg = &a};
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(hr_client_publish(c, "orders.new", "x", 1, &po), HR_OK);
    ck_assert_int_eq(hr_client_publish(c, "orders.other", "x", 1, &po), HR_OK);
    for (int i = 0; i < 300 && a.n < 11; i++)
        cfix_run_for(&t.loop, 10);
    ck_assert_int_eq(a.n, 11);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(a.status[i], HR_OK);
        ck_assert_uint_eq(a.seq[i], (uint64_t)i + 1);
    }
    ck_assert_uint_eq(a.seq[10], 1);
    tc_close(&t);
}
END_TEST

START_TEST(test_wildcards_unsubscribe_echo)
{
    tc_t t, t2;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    coll_t *star = coll_new(), *gt = coll_new(), *once = coll_new();
    hr_sub_t *s1, *s2, *s3;
    ck_assert_int_eq(hr_client_subscribe(c, "chat.*.msg", NULL, coll_cb, star, &s1), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "chat.>", NULL, coll_cb, gt, &s2), HR_OK);
    once->unsub_after = 2; /* unsubscribes itself from inside its callback */
    ck_assert_int_eq(hr_client_subscribe(c, "chat.>", NULL, coll_cb, once, &s3), HR_OK);
    tc_flush(&t, c);
    ck_assert_int_eq(hr_client_publish(c, "chat.a.msg", "1", 1, NULL), HR_OK);
    ck_assert_int_eq(hr_client_publish(c, "chat.b.msg", "2", 1, NULL), HR_OK);
    ck_assert_int_eq(hr_client_publish(c, "chat.b.typing", "3", 1, NULL), HR_OK);
    ck_assert_int_eq(hr_client_publish(c, "chat", "4", 1, NULL), HR_OK);
    tc_flush(&t, c);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(star->n, 2);
    ck_assert_int_eq(gt->n, 3);
    ck_assert_int_eq(once->n, 2);
    ck_assert_int_eq(hr_sub_unsubscribe(s2), HR_OK);
    ck_assert_int_eq(hr_client_publish(c, "chat.c.msg", "5", 1, NULL), HR_OK);
    tc_flush(&t, c);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(star->n, 3);
    ck_assert_int_eq(gt->n, 3);

    /* echo = 0: a second client does not get its own publications. */
    hr_client_opts_t o;
    tc_init(&t2);
    tc_opts(&t2, &o, URL);
    o.echo = 0;
    hr_client_t *c2 = tc_connect_opts(&t2, &o);
    coll_t *own = coll_new();
    hr_sub_t *s4;
    ck_assert_int_eq(hr_client_subscribe(c2, "chat.>", NULL, coll_cb, own, &s4), HR_OK);
    tc_flush(&t2, c2);
    ck_assert_int_eq(hr_client_publish(c2, "chat.d.msg", "6", 1, NULL), HR_OK);
    tc_flush(&t2, c2);
    cfix_run_for(&t2.loop, 30);
    cfix_run_for(&t.loop, 30);
    ck_assert_int_eq(own->n, 0);
    ck_assert_int_eq(star->n, 4);
    tc_close(&t2);
    tc_close(&t);
    coll_free(star);
    coll_free(gt);
    coll_free(once);
    coll_free(own);
}
END_TEST

START_TEST(test_queue_groups)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    coll_t *w1 = coll_new(), *w2 = coll_new(), *all = coll_new();
    hr_sub_t *s1, *s2, *s3;
    ck_assert_int_eq(hr_client_queue_subscribe(c, "jobs.>", "workers", coll_cb, w1, &s1), HR_OK);
    ck_assert_int_eq(hr_client_queue_subscribe(c, "jobs.>", "workers", coll_cb, w2, &s2), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "jobs.>", NULL, coll_cb, all, &s3), HR_OK);
    tc_flush(&t, c);
    for (int i = 0; i < 200; i++)
        ck_assert_int_eq(hr_client_publish(c, "jobs.resize", "j", 1, NULL), HR_OK);
    tc_flush(&t, c);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(all->n, 200);
    ck_assert_int_eq(w1->n + w2->n, 200);
    tc_close(&t);
    coll_free(w1);
    coll_free(w2);
    coll_free(all);
}
END_TEST

START_TEST(test_since_history)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(hr_client_publish(c, "news.sport", "n", 1, NULL), HR_OK);
    tc_flush(&t, c);
    coll_t *k = coll_new(), *k2 = coll_new();
    hr_sub_t *s, *s2;
    hr_sub_opts_t so = {.has_since = 1, .since = 0};
    ck_assert_int_eq(hr_client_subscribe(c, "news.sport", &so, coll_cb, k, &s), HR_OK);
    so.since = 3;
    ck_assert_int_eq(hr_client_subscribe(c, "news.*", &so, coll_cb, k2, &s2), HR_OK);
    ck_assert_int_eq(hr_client_publish(c, "news.sport", "n", 1, NULL), HR_OK);
    tc_flush(&t, c);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(k->n, 6);
    ck_assert_int_eq(k->replays, 5);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(k->seqs[i], (uint64_t)i + 1);
    ck_assert_int_eq(k2->n, 3);
    ck_assert_uint_eq(k2->seqs[0], 4);
    tc_close(&t);
    coll_free(k);
    coll_free(k2);
}
END_TEST

/* ---- requests, flush ---------------------------------------------------- */

static void responder_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    size_t len;
    const char *d = hr_message_data(m, &len);
    char out[300];
    int n = snprintf(out, sizeof(out), "re:%.*s", (int)len, d);
    ck_assert_int_eq(hr_client_respond(c, m, out, (size_t)n), HR_OK);
}

typedef struct replies_s {
    int n;
    int status[16];
    char data[16][64];
} replies_t;

static void reply_cb(hr_client_t *c, int status, hr_message_t *m, void *arg)
{
    replies_t *r = arg;
    r->status[r->n] = status;
    if (m) {
        size_t len;
        const char *d = hr_message_data(m, &len);
        snprintf(r->data[r->n], sizeof(r->data[0]), "%.*s", (int)len, d);
    } else {
        ck_assert_int_ne(status, HR_OK);
    }
    r->n++;
}

START_TEST(test_request_reply_timeout)
{
    tc_t t;
    tc_init(&t);
    hr_client_t *c = tc_connect(&t);
    hr_sub_t *svc;
    ck_assert_int_eq(hr_client_subscribe(c, "svc.echo", NULL, responder_cb, NULL, &svc), HR_OK);
    tc_flush(&t, c);
    replies_t r = {0};
    char q[8][8];
    for (int i = 0; i < 8; i++) {
        int n = snprintf(q[i], sizeof(q[i]), "q%d", i);
        ck_assert_int_eq(hr_client_request(c, "svc.echo", q[i], (size_t)n, 2000, reply_cb, &r),
                         HR_OK);
    }
    for (int i = 0; i < 300 && r.n < 8; i++)
        cfix_run_for(&t.loop, 10);
    ck_assert_int_eq(r.n, 8);
    for (int i = 0; i < 8; i++) {
        char want[16];
        snprintf(want, sizeof(want), "re:q%d", i);
        ck_assert_int_eq(r.status[i], HR_OK);
        ck_assert_str_eq(r.data[i], want); /* matched to their own requests */
    }
    /* No responder: times out (protocol v1 has no no-responders signal). */
    replies_t r2 = {0};
    uint64_t t0 = uv_hrtime();
    ck_assert_int_eq(hr_client_request(c, "svc.nobody", "x", 1, 100, reply_cb, &r2), HR_OK);
    ck_assert(cfix_run_until(&t.loop, &r2.n, 3000));
    ck_assert_int_eq(r2.status[0], HR_ETIMEDOUT);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    ck_assert_uint_ge(ms, 95);
    ck_assert_uint_lt(ms, 1000);
    ck_assert_int_eq(hr_client_request(c, "bad topic", "x", 1, 100, reply_cb, &r2), HR_ETOPIC);
    ck_assert_int_eq(hr_client_request(c, "svc.echo", "x", 1, 100, NULL, &r2), HR_EINVAL);

    /* A pending request fails with HR_ECLOSED when the client closes. */
    replies_t r3 = {0};
    ck_assert_int_eq(hr_client_request(c, "svc.nobody", "x", 1, 5000, reply_cb, &r3), HR_OK);
    tc_close(&t);
    ck_assert_int_eq(r3.n, 1);
    ck_assert_int_eq(r3.status[0], HR_ECLOSED);
}
END_TEST

START_TEST(test_flush_states)
{
    tc_t t;
    hr_client_opts_t o;
    int done = 0;
    tc_init(&t);
    tc_opts(&t, &o, URL);
    ck_assert_int_eq(hr_client_new(&t.loop, &o, &t.c), HR_OK);
    ck_assert_int_eq(hr_client_state(t.c), HR_STATE_CONNECTING);
    ck_assert_int_eq(hr_client_flush(t.c, flush_done, &done), HR_ENOTCONN);
    ck_assert_int_eq(hr_client_flush(t.c, NULL, &done), HR_EINVAL);
    ck_assert(cfix_run_until(&t.loop, &t.connected, 3000));
    tc_flush(&t, t.c);
    tc_close(&t);
}
END_TEST

/* ---- drain -------------------------------------------------------------- */

static void drain_done(hr_client_t *c, int status, void *arg)
{
    int *p = arg;
    *p = status == HR_OK ? 1 : status;
}

START_TEST(test_drain)
{
    tc_t t, t2;
    tc_init(&t);
    tc_init(&t2);
    hr_client_t *c = tc_connect(&t);
    hr_client_t *pub = tc_connect(&t2);
    coll_t *k = coll_new();
    hr_sub_t *s;
    ck_assert_int_eq(hr_client_subscribe(c, "d.>", NULL, coll_cb, k, &s), HR_OK);
    tc_flush(&t, c);
    for (int i = 0; i < 500; i++)
        ck_assert_int_eq(hr_client_publish(pub, "d.x", "m", 1, NULL), HR_OK);
    tc_flush(&t2, pub);
    acks_t a = {0};
    hr_publish_opts_t po = {.on_ack = ack_cb, .arg = &a};
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(hr_client_publish(c, "own.x", "x", 1, &po), HR_OK);
    int drained = 0;
    ck_assert_int_eq(hr_client_drain(c, 3000, drain_done, &drained), HR_OK);
    ck_assert_int_eq(hr_client_state(c), HR_STATE_DRAINING);
    ck_assert_int_eq(hr_client_drain(c, 3000, drain_done, &drained), HR_ECLOSED);
    ck_assert_int_eq(hr_client_publish(c, "d.x", "m", 1, NULL), HR_ECLOSED);
    ck_assert_int_eq(hr_client_subscribe(c, "e", NULL, coll_cb, k, &s), HR_ECLOSED);
    ck_assert(cfix_run_until(&t.loop, &drained, 3000));
    ck_assert_int_eq(drained, 1);
    ck_assert_int_eq(a.n, 20);   /* every ack arrived before the drain completed */
    ck_assert_int_eq(k->n, 500); /* every message already sent was delivered */
    ck_assert(cfix_run_until(&t.loop, &t.closed, 3000));
    ck_assert_int_eq(t.close_status, HR_OK);
    cfix_loop_close(&t.loop);
    tc_close(&t2);
    coll_free(k);
}
END_TEST

/* ---- slow consumer ------------------------------------------------------ */

START_TEST(test_slow_consumer)
{
    tc_t t, t2;
    hr_client_opts_t o;
    tc_init(&t);
    tc_init(&t2);
    tc_opts(&t, &o, URL);
    o.deliver_batch = 1; /* one message per loop turn: reading outpaces delivery */
    hr_client_t *c = tc_connect_opts(&t, &o);
    hr_client_t *pub = tc_connect(&t2);
    coll_t *k = coll_new();
    k->sleep_us = 200;
    hr_sub_t *s;
    hr_sub_opts_t so = {.pending_msgs_limit = 20};
    ck_assert_int_eq(hr_client_subscribe(c, "firehose", &so, coll_cb, k, &s), HR_OK);
    tc_flush(&t, c);
    for (int i = 0; i < 2000; i++)
        ck_assert_int_eq(hr_client_publish(pub, "firehose", "0123456789", 10, NULL), HR_OK);
    tc_flush(&t2, pub);
    for (int i = 0; i < 100; i++)
        cfix_run_for(&t.loop, 20);
    uint64_t dropped = hr_sub_dropped(s);
    ck_assert_uint_gt(dropped, 0);
    ck_assert_uint_eq((uint64_t)k->n + dropped, 2000);
    ck_assert_int_ge(t.errs_by_status[0], 1); /* HR_ESLOW reported */
    hr_client_stats_t st;
    hr_client_stats(c, &st);
    ck_assert_uint_eq(st.dropped, dropped);
    ck_assert_ptr_eq(t.err_sub, s);
    /* Received seqs still increase. */
    for (int i = 1; i < k->n && i < MAXN; i++)
        ck_assert_uint_gt(k->seqs[i], k->seqs[i - 1]);
    hr_sub_set_pending_limits(s, 100000, 0);
    tc_close(&t);
    tc_close(&t2);
    coll_free(k);
}
END_TEST

/* The broker's heartbeat PINGs are answered: an idle client stays connected. */
START_TEST(test_server_heartbeat)
{
    tc_t t;
    hr_client_opts_t o;
    cfix_stop(&F);
    const char *args[] = {"--heartbeat-ms", "100", "--max-subs", "2", NULL};
    ck_assert_int_eq(cfix_start(&F, args), 0);
    cfix_url(&F, URL, sizeof(URL));
    tc_init(&t);
    tc_opts(&t, &o, URL);
    o.ping_interval_ms = 0; /* only the broker pings */
    hr_client_t *c = tc_connect_opts(&t, &o);
    cfix_run_for(&t.loop, 700);
    ck_assert_int_eq(t.disconnected, 0);
    ck_assert_int_eq(hr_client_state(c), HR_STATE_CONNECTED);

    /* An ERR naming a sid reaches on_error with that subscription. */
    hr_sub_t *s1, *s2, *s3;
    ck_assert_int_eq(hr_client_subscribe(c, "a", NULL, coll_cb, NULL, &s1), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "b", NULL, coll_cb, NULL, &s2), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "c", NULL, coll_cb, NULL, &s3), HR_OK);
    tc_flush(&t, c);
    ck_assert_int_eq(t.nerr, 1);
    ck_assert_int_eq(t.last_err, HR_ELIMIT);
    ck_assert_ptr_eq(t.err_sub, s3);
    ck_assert_int_eq(hr_client_state(c), HR_STATE_CONNECTED);
    tc_close(&t);
}
END_TEST

/* ---- a scripted fake broker, for what the real one does not do on demand ---- */

typedef struct fake_s {
    uv_tcp_t lis;
    hr_buf_t script; /* bytes sent to each accepted connection, which is then closed */
    int accepts;
    int port;
} fake_t;

static void fake_written(uv_write_t *w, int status)
{
    uv_close((uv_handle_t *)w->handle, (uv_close_cb)free);
    free(w);
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char scratch[4096];
    *b = uv_buf_init(scratch, sizeof(scratch));
}

/* Answers the client's HELLO with the script, so the close is a FIN, not a reset. */
static void fake_read(uv_stream_t *conn, ssize_t n, const uv_buf_t *buf)
{
    fake_t *f = conn->data;
    if (n == 0)
        return;
    uv_read_stop(conn);
    if (n < 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    uv_write_t *w = malloc(sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)f->script.base, (unsigned)f->script.len);
    ck_assert_int_eq(uv_write(w, conn, &b, 1, fake_written), 0);
}

static void fake_accept(uv_stream_t *lis, int status)
{
    fake_t *f = lis->data;
    uv_tcp_t *conn = malloc(sizeof(*conn));
    uv_tcp_init(lis->loop, conn);
    conn->data = f;
    ck_assert_int_eq(uv_accept(lis, (uv_stream_t *)conn), 0);
    f->accepts++;
    uv_read_start((uv_stream_t *)conn, fake_alloc, fake_read);
}

static void fake_start(uv_loop_t *loop, fake_t *f)
{
    f->port = cfix_listen(loop, &f->lis, fake_accept);
    f->lis.data = f; /* after uv_tcp_init */
}

static void fake_welcome(hr_buf_t *b)
{
    hr_welcome_t w = {"fake", 7, 0, 1024, 1024 + 4096, 30000, NULL};
    size_t m = hr_lp_begin(b);
    hr_enc_welcome(b, &w);
    hr_lp_end(b, m);
}

static void fake_err(hr_buf_t *b, unsigned code)
{
    size_t m = hr_lp_begin(b);
    hr_enc_err(b, code, "scripted", 0, 0);
    hr_lp_end(b, m);
}

/*
 * Runs a client with retries against `f`'s script until it closes (or, with
 * `disconnects`, until that many disconnections, then closes it); returns
 * the close status.
 */
static int run_fake(tc_t *t, fake_t *f, int max_reconnect, int disconnects)
{
    hr_client_opts_t o;
    char url[64];
    fake_start(&t->loop, f);
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", f->port);
    tc_opts(t, &o, url);
    o.retry_on_failed_connect = 1;
    o.max_reconnect = max_reconnect;
    o.reconnect_wait_ms = 5;
    ck_assert_int_eq(hr_client_new(&t->loop, &o, &t->c), HR_OK);
    while (disconnects && t->disconnected < disconnects && !t->closed)
        cfix_run_for(&t->loop, 5);
    if (disconnects && t->c)
        hr_client_close(t->c);
    ck_assert(cfix_run_until(&t->loop, &t->closed, 5000));
    hr_buf_destroy(&f->script);
    cfix_loop_close(&t->loop);
    return t->close_status;
}

START_TEST(test_fake_broker_statuses)
{
    tc_t t;
    fake_t f;

    /* ERR 3 at HELLO: HR_EAUTH, reported, and never retried. */
    tc_init(&t);
    memset(&f, 0, sizeof(f));
    fake_err(&f.script, 3);
    ck_assert_int_eq(run_fake(&t, &f, 5, 0), HR_EAUTH);
    ck_assert_int_eq(f.accepts, 1);
    ck_assert_int_eq(t.last_err, HR_EAUTH);

    /* WELCOME then ERR 11: disconnected with HR_EHEARTBEAT; each reconnect succeeds
     * (and resets the attempt count) until the client is closed. */
    tc_init(&t);
    memset(&f, 0, sizeof(f));
    fake_welcome(&f.script);
    fake_err(&f.script, 11);
    ck_assert_int_eq(run_fake(&t, &f, 1, 3), HR_OK);
    ck_assert_int_eq(t.connected, 1);
    ck_assert_int_ge(t.reconnected, 2);
    ck_assert_int_eq(t.disc_status, HR_EHEARTBEAT);
    ck_assert_int_ge(f.accepts, 3);

    /* A malformed frame: HR_EPROTO. */
    tc_init(&t);
    memset(&f, 0, sizeof(f));
    hr_buf_append(&f.script, "\0\0\0\3\xc1\xc1\xc1", 7);
    ck_assert_int_eq(run_fake(&t, &f, 0, 0), HR_EPROTO);

    /* A frame longer than the limit, judged from its prefix: HR_ETOOBIG. */
    tc_init(&t);
    memset(&f, 0, sizeof(f));
    hr_buf_append(&f.script, "\xff\xff\xff\xff", 4);
    ck_assert_int_eq(run_fake(&t, &f, 0, 0), HR_ETOOBIG);

    /* Anything but WELCOME or ERR first: HR_EPROTO. */
    tc_init(&t);
    memset(&f, 0, sizeof(f));
    size_t m = hr_lp_begin(&f.script);
    hr_enc_pong(&f.script, 1);
    hr_lp_end(&f.script, m);
    ck_assert_int_eq(run_fake(&t, &f, 0, 0), HR_EPROTO);
}
END_TEST

/* GAP frames and ERRs naming an ack id reach the right callbacks. */
START_TEST(test_fake_broker_gap_and_ack_err)
{
    tc_t t;
    fake_t f;
    hr_client_opts_t o;
    char url[64];
    hr_slice_t topic = {"t.x", 3}, none = {NULL, 0}, pay = {"p", 1};
    tc_init(&t);
    memset(&f, 0, sizeof(f));
    fake_welcome(&f.script);
    /* sid 1 is the first subscription, ack id 2 the publish made after it. */
    size_t m = hr_lp_begin(&f.script);
    hr_enc_msg(&f.script, 1, topic, 5, pay, none, none, 0);
    hr_lp_end(&f.script, m);
    m = hr_lp_begin(&f.script);
    hr_enc_gap(&f.script, 1, topic, 6, 9);
    hr_lp_end(&f.script, m);
    m = hr_lp_begin(&f.script);
    hr_enc_msg(&f.script, 1, topic, 10, pay, none, none, 0);
    hr_lp_end(&f.script, m);
    m = hr_lp_begin(&f.script);
    hr_enc_err(&f.script, 4, "not permitted", 1, 2);
    hr_lp_end(&f.script, m);
    fake_start(&t.loop, &f);
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", f.port);
    tc_opts(&t, &o, url);
    o.reconnect = 0;
    ck_assert_int_eq(hr_client_new(&t.loop, &o, &t.c), HR_OK);
    coll_t *k = coll_new();
    hr_sub_t *s;
    acks_t a = {0};
    hr_publish_opts_t po = {.on_ack = ack_cb, .arg = &a};
    ck_assert_int_eq(hr_client_subscribe(t.c, "t.>", NULL, coll_cb, k, &s), HR_OK);
    ck_assert_uint_eq(hr_sub_sid(s), 1);
    ck_assert_int_eq(hr_client_publish(t.c, "t.x", "p", 1, &po), HR_OK);
    ck_assert(cfix_run_until(&t.loop, &t.closed, 5000));
    ck_assert_int_eq(k->n, 2);
    ck_assert_uint_eq(k->seqs[1], 10);
    ck_assert_int_eq(t.errs_by_status[1], 1); /* HR_EGAP */
    ck_assert_int_eq(a.n, 1);
    ck_assert_int_eq(a.status[0], HR_EPERM);
    hr_buf_destroy(&f.script);
    cfix_loop_close(&t.loop);
    coll_free(k);
}
END_TEST

Suite *client_suite(void);

Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"connect", test_connect_close},
        {"options", test_bad_options},
        {"refused", test_connect_refused},
        {"hostname_retry", test_connect_hostname_and_retry},
        {"pubsub", test_pubsub_order_headers_reply},
        {"publish_errors", test_publish_errors},
        {"acks", test_acks},
        {"wildcards", test_wildcards_unsubscribe_echo},
        {"queue", test_queue_groups},
        {"since", test_since_history},
        {"request", test_request_reply_timeout},
        {"flush", test_flush_states},
        {"drain", test_drain},
        {"slow_consumer", test_slow_consumer},
        {"heartbeat_err_ref", test_server_heartbeat},
        {"fake_broker", test_fake_broker_statuses},
        {"fake_broker_gap", test_fake_broker_gap_and_ack_err},
        {"wrong_port", test_wrong_port},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
