/* SPDX-License-Identifier: MIT */
/* libherald blocking API against the real broker, including several application threads at once. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/client.h"
#include "cfix.h"

static cfix_t F;
static char URL[64];

static void setup(void)
{
    ck_assert_int_eq(cfix_start(&F, NULL), 0);
    cfix_url(&F, URL, sizeof(URL));
}

static void teardown(void)
{
    cfix_stop(&F);
}

static hr_sync_t *connect_sync(void)
{
    hr_client_opts_t o;
    hr_sync_t *s = NULL;
    hr_client_opts_init(&o);
    o.url = URL;
    ck_assert_int_eq(hr_sync_connect(&o, &s), HR_OK);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(hr_sync_state(s), HR_STATE_CONNECTED);
    return s;
}

START_TEST(test_basic)
{
    hr_sync_t *s = connect_sync();
    hr_sync_sub_t *sub;
    hr_message_t *m = NULL;
    ck_assert_int_eq(hr_sync_subscribe(s, "greet.*", NULL, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_flush(s, 2000), HR_OK);
    hr_header_t h = {"lang", "fr"};
    hr_publish_opts_t po = {.headers = &h, .nheaders = 1, .reply = "greet.back"};
    ck_assert_int_eq(hr_sync_publish(s, "greet.world", "bonjour", 7, &po), HR_OK);
    ck_assert_int_eq(hr_sync_next(sub, 2000, &m), HR_OK);
    size_t len;
    const char *d = hr_message_data(m, &len);
    ck_assert_uint_eq(len, 7);
    ck_assert(memcmp(d, "bonjour", 7) == 0);
    ck_assert_str_eq(hr_message_topic(m), "greet.world");
    ck_assert_str_eq(hr_message_header(m, "lang"), "fr");
    ck_assert_str_eq(hr_message_reply(m), "greet.back");
    hr_message_unref(&m);
    ck_assert_ptr_null(m);

    uint64_t t0 = uv_hrtime();
    ck_assert_int_eq(hr_sync_next(sub, 100, &m), HR_ETIMEDOUT);
    ck_assert_uint_ge((uv_hrtime() - t0) / 1000000, 95);

    uint64_t seq = 0;
    ck_assert_int_eq(hr_sync_publish_acked(s, "greet.acked", "x", 1, 2000, &seq), HR_OK);
    ck_assert_uint_eq(seq, 1);
    ck_assert_int_eq(hr_sync_publish_acked(s, "greet.acked", "x", 1, 2000, &seq), HR_OK);
    ck_assert_uint_eq(seq, 2);
    ck_assert_int_eq(hr_sync_publish(s, "bad topic", "x", 1, NULL), HR_ETOPIC);
    ck_assert_int_eq(hr_sync_subscribe(s, "a.>.b", NULL, &sub), HR_ETOPIC);
    ck_assert_int_eq(hr_sync_unsubscribe(&sub), HR_OK);
    ck_assert_ptr_null(sub);
    hr_sync_close(&s, 0);
    ck_assert_ptr_null(s);
    hr_sync_close(&s, 0); /* NULL-safe */
}
END_TEST

START_TEST(test_connect_refused)
{
    hr_client_opts_t o;
    hr_sync_t *s = NULL;
    hr_client_opts_init(&o);
    o.url = "tcp://127.0.0.1:1";
    ck_assert_int_eq(hr_sync_connect(&o, &s), UV_ECONNREFUSED);
    ck_assert_ptr_null(s);
    o.url = "https://127.0.0.1:1";
    ck_assert_int_eq(hr_sync_connect(&o, &s), HR_EURL);
}
END_TEST

typedef struct responder_s {
    hr_sync_t *s;
    hr_sync_sub_t *sub;
    int answered;
} responder_t;

/* Answers requests until its subscription has been quiet for 500 ms. */
static void responder_main(void *arg)
{
    responder_t *r = arg;
    hr_message_t *m;
    while (hr_sync_next(r->sub, 500, &m) == HR_OK) {
        size_t len;
        const char *d = hr_message_data(m, &len);
        char out[64];
        int n = snprintf(out, sizeof(out), "re:%.*s", (int)len, d);
        if (hr_message_reply(m))
            ck_assert_int_eq(hr_sync_publish(r->s, hr_message_reply(m), out, (size_t)n, NULL),
                             HR_OK);
        r->answered++;
        hr_message_unref(&m);
    }
}

typedef struct asker_s {
    hr_sync_t *s;
    int id, ok;
} asker_t;

static void asker_main(void *arg)
{
    asker_t *a = arg;
    for (int i = 0; i < 50; i++) {
        char q[32], want[40];
        int n = snprintf(q, sizeof(q), "t%d-%d", a->id, i);
        snprintf(want, sizeof(want), "re:%s", q);
        hr_message_t *m = NULL;
        ck_assert_int_eq(hr_sync_request(a->s, "svc.upper", q, (size_t)n, 3000, &m), HR_OK);
        size_t len;
        const char *d = hr_message_data(m, &len);
        ck_assert_uint_eq(len, strlen(want));
        ck_assert(memcmp(d, want, len) == 0);
        hr_message_unref(&m);
        a->ok++;
    }
}

START_TEST(test_request_threads)
{
    hr_sync_t *server = connect_sync(), *client = connect_sync();
    responder_t r = {server, NULL, 0};
    ck_assert_int_eq(hr_sync_subscribe(server, "svc.upper", NULL, &r.sub), HR_OK);
    ck_assert_int_eq(hr_sync_flush(server, 2000), HR_OK);
    uv_thread_t rt, at[4];
    asker_t a[4];
    ck_assert_int_eq(uv_thread_create(&rt, responder_main, &r), 0);
    for (int i = 0; i < 4; i++) {
        a[i] = (asker_t){client, i, 0};
        ck_assert_int_eq(uv_thread_create(&at[i], asker_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        uv_thread_join(&at[i]);
        ck_assert_int_eq(a[i].ok, 50);
    }
    uv_thread_join(&rt);
    ck_assert_int_eq(r.answered, 200);

    hr_message_t *m = (hr_message_t *)1;
    ck_assert_int_eq(hr_sync_request(client, "svc.none", "x", 1, 100, &m), HR_ETIMEDOUT);
    ck_assert_ptr_null(m);
    hr_sync_unsubscribe(&r.sub);
    hr_sync_close(&client, 0);
    hr_sync_close(&server, 0);
}
END_TEST

typedef struct producer_s {
    hr_sync_t *s;
    int id;
} producer_t;

static void producer_main(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < 500; i++) {
        char v[16];
        int n = snprintf(v, sizeof(v), "%d", p->id * 1000 + i);
        ck_assert_int_eq(hr_sync_publish(p->s, "mt.topic", v, (size_t)n, NULL), HR_OK);
    }
    ck_assert_int_eq(hr_sync_flush(p->s, 5000), HR_OK);
}

typedef struct consumer_s {
    hr_sync_sub_t *sub;
    int n;
    uint64_t seq[2000];
    int val[2000];
} consumer_t;

static void consumer_main(void *arg)
{
    consumer_t *c = arg;
    hr_message_t *m;
    while (hr_sync_next(c->sub, 500, &m) == HR_OK) {
        ck_assert_int_lt(c->n, 2000);
        c->seq[c->n] = hr_message_seq(m);
        c->val[c->n] = atoi(hr_message_data(m, NULL));
        c->n++;
        hr_message_unref(&m);
    }
}

/*
 * Four threads publish through one hr_sync_t while two threads consume one
 * subscription of another: every message arrives exactly once, and each
 * publisher's messages are sequenced in the order it published them.
 */
START_TEST(test_many_threads)
{
    hr_sync_t *ps = connect_sync(), *cs = connect_sync();
    hr_sync_sub_t *sub;
    ck_assert_int_eq(hr_sync_subscribe(cs, "mt.topic", NULL, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_flush(cs, 2000), HR_OK);
    consumer_t *cons = calloc(2, sizeof(consumer_t));
    uv_thread_t ct[2], pt[4];
    producer_t prod[4];
    for (int i = 0; i < 2; i++) {
        cons[i].sub = sub;
        ck_assert_int_eq(uv_thread_create(&ct[i], consumer_main, &cons[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        prod[i] = (producer_t){ps, i};
        ck_assert_int_eq(uv_thread_create(&pt[i], producer_main, &prod[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        uv_thread_join(&pt[i]);
    for (int i = 0; i < 2; i++)
        uv_thread_join(&ct[i]);
    ck_assert_int_eq(cons[0].n + cons[1].n, 2000);
    int *by_seq = calloc(2001, sizeof(int));
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < cons[k].n; i++) {
            uint64_t q = cons[k].seq[i];
            ck_assert(q >= 1 && q <= 2000);
            ck_assert_int_eq(by_seq[q], 0); /* no duplicate */
            by_seq[q] = cons[k].val[i] + 1;
        }
    int last[4] = {-1, -1, -1, -1};
    for (int q = 1; q <= 2000; q++) {
        int v = by_seq[q] - 1;
        ck_assert_int_ge(v, 0);
        ck_assert_int_gt(v % 1000, last[v / 1000]);
        last[v / 1000] = v % 1000;
    }
    ck_assert_uint_eq(hr_sync_dropped(sub), 0);
    free(by_seq);
    free(cons);
    hr_sync_close(&ps, 1);
    hr_sync_close(&cs, 0); /* frees `sub` too */
}
END_TEST

START_TEST(test_pending_limit_and_close)
{
    hr_sync_t *s = connect_sync();
    hr_sync_sub_t *sub;
    hr_sub_opts_t so = {.pending_msgs_limit = 10};
    ck_assert_int_eq(hr_sync_subscribe(s, "lim", &so, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_flush(s, 2000), HR_OK);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(hr_sync_publish(s, "lim", "x", 1, NULL), HR_OK);
    ck_assert_int_eq(hr_sync_flush(s, 2000), HR_OK);
    /* The flush's PONG can overtake the loop thread's hand-off of the last
     * messages, and on a loaded machine the hand-off may come after this
     * thread has taken the first ten; what holds is: the first ten arrive,
     * every message is either delivered (in order) or counted as dropped. */
    hr_message_t *m;
    int n = 0;
    uint64_t last = 0;
    while (hr_sync_next(sub, 1000, &m) == HR_OK) {
        ck_assert_uint_gt(hr_message_seq(m), last);
        last = hr_message_seq(m);
        if (n < 10)
            ck_assert_uint_eq(last, (uint64_t)n + 1);
        hr_message_unref(&m);
        n++;
    }
    ck_assert_int_ge(n, 10);
    ck_assert_uint_gt(hr_sync_dropped(sub), 0);
    ck_assert_uint_eq((uint64_t)n + hr_sync_dropped(sub), 100);
    hr_sync_close(&s, 1);
}
END_TEST

typedef struct bp_s {
    hr_sync_t *s;
    int id;
} bp_t;

static void bp_main(void *arg)
{
    bp_t *b = arg;
    for (int i = 0; i < 5000; i++) {
        char v[16];
        int n = snprintf(v, sizeof(v), "%d", b->id * 100000 + i);
        ck_assert_int_eq(hr_sync_publish(b->s, "bp", v, (size_t)n, NULL), HR_OK);
    }
}

/*
 * hr_sync_publish() does not wait for the loop thread, but the queue in
 * front of it is bounded (here by a 4 KiB reconnect_buf_bytes): publishers
 * are held back, never refused, and nothing is lost or reordered.
 */
START_TEST(test_publish_backpressure)
{
    hr_client_opts_t o;
    hr_sync_t *ps, *cs = connect_sync();
    hr_client_opts_init(&o);
    o.url = URL;
    o.reconnect_buf_bytes = 4096;
    ck_assert_int_eq(hr_sync_connect(&o, &ps), HR_OK);
    hr_sync_sub_t *sub;
    ck_assert_int_eq(hr_sync_subscribe(cs, "bp", NULL, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_flush(cs, 2000), HR_OK);
    static char big[(1 << 20) + 1];
    ck_assert_int_eq(hr_sync_publish(ps, "bp", big, sizeof(big), NULL), HR_ETOOBIG);
    ck_assert_int_eq(hr_sync_publish(ps, "$SYS.x", "x", 1, NULL), HR_EPERM);
    uv_thread_t th[2];
    bp_t b[2] = {{ps, 0}, {ps, 1}};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(uv_thread_create(&th[i], bp_main, &b[i]), 0);
    for (int i = 0; i < 2; i++)
        uv_thread_join(&th[i]);
    ck_assert_int_eq(hr_sync_flush(ps, 5000), HR_OK);
    int next[2] = {0, 0}, n = 0;
    hr_message_t *m;
    while (n < 10000 && hr_sync_next(sub, 2000, &m) == HR_OK) {
        int v = atoi(hr_message_data(m, NULL));
        ck_assert_int_eq(v % 100000, next[v / 100000]); /* each thread's order kept */
        next[v / 100000]++;
        hr_message_unref(&m);
        n++;
    }
    ck_assert_int_eq(n, 10000);
    ck_assert_uint_eq(hr_sync_dropped(sub), 0);
    hr_sync_close(&ps, 1);
    hr_sync_close(&cs, 0);
}
END_TEST

/* ---- confirmed subscriptions, against a broker with authentication ---- */

#define TOKEN "alice-secret-token"
static char TOKENS[64];

static void setup_auth(void)
{
    snprintf(TOKENS, sizeof(TOKENS), "/tmp/herald-tokens-XXXXXX");
    int fd = mkstemp(TOKENS);
    ck_assert_int_ge(fd, 0);
    FILE *fp = fdopen(fd, "w");
    fprintf(fp, "alice %s pub=chat.> sub=chat.>,_INBOX.>\n", TOKEN);
    fclose(fp);
    const char *extra[] = {"--auth-tokens-file", TOKENS, NULL};
    ck_assert_int_eq(cfix_start(&F, extra), 0);
    cfix_url(&F, URL, sizeof(URL));
}

static void teardown_auth(void)
{
    cfix_stop(&F);
    unlink(TOKENS);
}

/* Errors reported to on_error, from whichever thread runs the client. */
typedef struct errs_s {
    uv_mutex_t mu;
    int n;
    int last;
    int closed; /* loop thread only */
} errs_t;

static void count_err(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    errs_t *e = arg;
    uv_mutex_lock(&e->mu);
    e->n++;
    e->last = status;
    uv_mutex_unlock(&e->mu);
    fprintf(stderr, "on_error %s: %s\n", hr_err_name(status), detail);
}

static int errs_count(errs_t *e)
{
    uv_mutex_lock(&e->mu);
    int n = e->n;
    uv_mutex_unlock(&e->mu);
    return n;
}

static void auth_opts(hr_client_opts_t *o, errs_t *e)
{
    hr_client_opts_init(o);
    o->url = URL;
    o->token = TOKEN;
    o->on_error = count_err;
    o->arg = e;
}

/*
 * A denied subscription is answered by its ERR before the PONG: the call
 * returns that status, leaves nothing subscribed, and nothing is
 * unsubscribed at close (no ERR 8 unknown sid).
 */
START_TEST(test_subscribe_confirmed)
{
    errs_t e = {.n = 0};
    hr_client_opts_t o;
    hr_sync_t *s = NULL;
    hr_sync_sub_t *denied = NULL, *ok = NULL;
    hr_message_t *m = NULL;
    uv_mutex_init(&e.mu);
    auth_opts(&o, &e);
    ck_assert_int_eq(hr_sync_connect(&o, &s), HR_OK);
    ck_assert_int_eq(hr_sync_subscribe(s, "secret.>", NULL, &denied), HR_EPERM);
    ck_assert_ptr_null(denied);
    ck_assert_int_eq(hr_sync_subscribe(s, "chat.*", NULL, &ok), HR_OK);
    ck_assert_int_eq(hr_sync_publish(s, "chat.lobby", "hi", 2, NULL), HR_OK);
    ck_assert_int_eq(hr_sync_next(ok, 2000, &m), HR_OK);
    hr_message_unref(&m);
    ck_assert_int_eq(hr_sync_subscribe(s, "chat.>", NULL, &denied), HR_OK);
    ck_assert_int_eq(hr_sync_unsubscribe(&denied), HR_OK);
    ck_assert_int_eq(hr_sync_flush(s, 2000), HR_OK);
    ck_assert_int_eq(errs_count(&e), 0);
    hr_sync_close(&s, 1); /* drain: UNSUB for what is still subscribed, then a PING */
    ck_assert_int_eq(errs_count(&e), 0);
    uv_mutex_destroy(&e.mu);
}
END_TEST

typedef struct conf_s {
    int n, status;
    hr_sub_t *sub;
} conf_t;

static void conf_cb(hr_client_t *c, hr_sub_t *sub, int status, void *arg)
{
    conf_t *k = arg;
    k->n++;
    k->status = status;
    k->sub = sub;
    ck_assert_int_eq(hr_sub_unsubscribe(sub), status == HR_OK ? HR_OK : HR_EINVAL);
}

static void nop_msg(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
}

static void closed_cb(hr_client_t *c, int ev, int status, void *arg)
{
    if (ev == HR_EVENT_CLOSED)
        ((errs_t *)arg)->closed = 1;
}

/*
 * The asynchronous API: on_confirm reports HR_OK or the refusal. Without
 * on_confirm a refusal goes to on_error and the refused subscription is
 * neither restored nor unsubscribed on the wire.
 */
START_TEST(test_async_confirm)
{
    uv_loop_t loop;
    errs_t e = {.n = 0};
    hr_client_opts_t o;
    hr_client_t *c;
    hr_sub_t *a, *b, *plain;
    conf_t ka = {0}, kb = {0};
    uv_mutex_init(&e.mu);
    uv_loop_init(&loop);
    auth_opts(&o, &e);
    o.on_state = closed_cb;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    /* made before the connection is up: confirmed after the WELCOME */
    hr_sub_opts_t so = {.on_confirm = conf_cb, .confirm_arg = &ka};
    ck_assert_int_eq(hr_client_subscribe(c, "chat.x", &so, nop_msg, NULL, &a), HR_OK);
    so.confirm_arg = &kb;
    ck_assert_int_eq(hr_client_subscribe(c, "admin.x", &so, nop_msg, NULL, &b), HR_OK);
    ck_assert(cfix_run_until(&loop, &kb.n, 3000));
    ck_assert(cfix_run_until(&loop, &ka.n, 3000));
    ck_assert_int_eq(ka.status, HR_OK);
    ck_assert_ptr_eq(ka.sub, a);
    ck_assert_int_eq(kb.status, HR_EPERM);
    ck_assert_ptr_eq(kb.sub, b);
    ck_assert_int_eq(ka.n + kb.n, 2);
    ck_assert_int_eq(errs_count(&e), 0); /* the refusal went to on_confirm only */

    /* unconfirmed: the refusal reaches on_error; unsubscribing sends nothing */
    hr_client_close(c);
    ck_assert(cfix_run_until(&loop, &e.closed, 3000));
    e.closed = 0;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "admin.y", NULL, nop_msg, NULL, &plain), HR_OK);
    for (int i = 0; i < 300 && errs_count(&e) == 0; i++)
        cfix_run_for(&loop, 10);
    ck_assert_int_eq(errs_count(&e), 1);
    ck_assert_int_eq(e.last, HR_EPERM);
    ck_assert_int_eq(hr_sub_unsubscribe(plain), HR_OK);
    ck_assert_int_eq(hr_client_drain(c, 2000, NULL, NULL), HR_OK);
    ck_assert(cfix_run_until(&loop, &e.closed, 3000));
    ck_assert_int_eq(errs_count(&e), 1); /* no ERR 8 */
    cfix_loop_close(&loop);
    uv_mutex_destroy(&e.mu);
}
END_TEST

/* A publish pipeline's rejection reaches the blocking API as HR_EREJECTED (ERR 13). */
static void setup_pipeline(void)
{
    static char spec[1024];
    snprintf(spec, sizeof(spec), "mod.>=exec:%s/examples/moderate.py --word spam",
             HERALD_SOURCE_DIR);
    const char *extra[] = {"--pipeline", spec, NULL};
    ck_assert_int_eq(cfix_start(&F, extra), 0);
    cfix_url(&F, URL, sizeof(URL));
}

START_TEST(test_pipeline_rejects)
{
    hr_sync_t *s = connect_sync();
    hr_sync_sub_t *sub;
    hr_message_t *m = NULL;
    uint64_t seq = 0;
    ck_assert_int_eq(hr_sync_subscribe(s, "mod.room", NULL, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_publish_acked(s, "mod.room", "buy spam", 8, 10000, &seq),
                     HR_EREJECTED);
    ck_assert_int_eq(hr_sync_publish_acked(s, "mod.room", "hello", 5, 10000, &seq), HR_OK);
    ck_assert_uint_eq(seq, 1); /* the rejected one was never sequenced */
    ck_assert_int_eq(hr_sync_next(sub, 5000, &m), HR_OK);
    size_t len;
    const char *d = hr_message_data(m, &len);
    ck_assert_uint_eq(len, 5);
    ck_assert(memcmp(d, "hello", 5) == 0);
    hr_message_unref(&m);
    ck_assert_int_eq(hr_sync_unsubscribe(&sub), HR_OK);
    hr_sync_close(&s, 0);
}
END_TEST

Suite *sync_suite(void);

Suite *sync_suite(void)
{
    Suite *s = suite_create("client_sync");
    TCase *tc = tcase_create("sync");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120); /* generous: ThreadSanitizer runs are slow */
    tcase_add_test(tc, test_basic);
    tcase_add_test(tc, test_connect_refused);
    tcase_add_test(tc, test_request_threads);
    tcase_add_test(tc, test_many_threads);
    tcase_add_test(tc, test_pending_limit_and_close);
    tcase_add_test(tc, test_publish_backpressure);
    suite_add_tcase(s, tc);
    tc = tcase_create("confirm");
    tcase_add_checked_fixture(tc, setup_auth, teardown_auth);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_subscribe_confirmed);
    tcase_add_test(tc, test_async_confirm);
    suite_add_tcase(s, tc);
    tc = tcase_create("pipeline");
    tcase_add_checked_fixture(tc, setup_pipeline, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pipeline_rejects);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sync_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
