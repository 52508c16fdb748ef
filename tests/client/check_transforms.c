/* SPDX-License-Identifier: MIT */
/* libherald subscription transforms against the real broker: filter builders, fields, rate,
 * conflate, batch, HR_EOPTION. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "herald/client.h"
#include "cfix.h"

#define MAXN 64

static cfix_t F;
static char URL[64];

/* ---- harness ------------------------------------------------------------ */

typedef struct tx_s {
    uv_loop_t loop;
    hr_client_t *c;
    int connected, closed;
    int nerr, last_err;
    hr_sub_t *err_sub;
    int confirmed, confirm_status;
    /* messages received */
    int n;
    uint64_t seqs[MAXN];
    size_t lens[MAXN];
    char data[MAXN][128];
} tx_t;

static void st_cb(hr_client_t *c, int ev, int status, void *arg)
{
    tx_t *t = arg;
    (void)c;
    (void)status;
    if (ev == HR_EVENT_CONNECTED)
        t->connected = 1;
    if (ev == HR_EVENT_CLOSED) {
        t->closed = 1;
        t->c = NULL;
    }
}

static void err_cb(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    tx_t *t = arg;
    (void)c;
    (void)detail;
    t->nerr++;
    t->last_err = status;
    t->err_sub = sub;
}

static void msg_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    tx_t *t = arg;
    size_t len;
    const char *d = hr_message_data(m, &len);
    (void)c;
    (void)sub;
    if (t->n < MAXN) {
        t->seqs[t->n] = hr_message_seq(m);
        t->lens[t->n] = len;
        memcpy(t->data[t->n], d, len < sizeof(t->data[0]) ? len : sizeof(t->data[0]));
    }
    t->n++;
}

static void confirm_cb(hr_client_t *c, hr_sub_t *sub, int status, void *arg)
{
    tx_t *t = arg;
    (void)c;
    (void)sub;
    t->confirmed = 1;
    t->confirm_status = status;
}

static void tx_start(tx_t *t)
{
    hr_client_opts_t o;
    memset(t, 0, sizeof(*t));
    ck_assert_int_eq(uv_loop_init(&t->loop), 0);
    hr_client_opts_init(&o);
    o.url = URL;
    o.on_state = st_cb;
    o.on_error = err_cb;
    o.arg = t;
    ck_assert_int_eq(hr_client_new(&t->loop, &o, &t->c), HR_OK);
    ck_assert(cfix_run_until(&t->loop, &t->connected, 3000));
}

static void tx_stop(tx_t *t)
{
    if (t->c)
        hr_client_close(t->c);
    ck_assert(cfix_run_until(&t->loop, &t->closed, 3000));
    cfix_loop_close(&t->loop);
}

static void flush_done(hr_client_t *c, int status, void *arg)
{
    (void)c;
    *(int *)arg = status == HR_OK ? 1 : status;
}

static void tx_flush(tx_t *t)
{
    int done = 0;
    ck_assert_int_eq(hr_client_flush(t->c, flush_done, &done), HR_OK);
    ck_assert(cfix_run_until(&t->loop, &done, 3000));
    ck_assert_int_eq(done, 1);
}

/* Subscribes with `so` and waits for the broker's verdict (on_confirm). */
static hr_sub_t *tx_sub(tx_t *t, const char *topic, hr_sub_opts_t *so)
{
    hr_sub_t *s = NULL;
    so->on_confirm = confirm_cb;
    so->confirm_arg = t;
    t->confirmed = 0;
    ck_assert_int_eq(hr_client_subscribe(t->c, topic, so, msg_cb, t, &s), HR_OK);
    ck_assert(cfix_run_until(&t->loop, &t->confirmed, 3000));
    return s;
}

/* A msgpack payload built by `fill` on a packer. */
typedef struct pl_s {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} pl_t;

static msgpack_packer *pl_begin(pl_t *p, size_t nkeys)
{
    msgpack_sbuffer_init(&p->sb);
    msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&p->pk, nkeys);
    return &p->pk;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Publishes {kind: kind, n: n} to `topic`. */
static void pub_kn(tx_t *t, const char *topic, const char *kind, int64_t n)
{
    pl_t p;
    msgpack_packer *pk = pl_begin(&p, 2);
    pk_str(pk, "kind");
    pk_str(pk, kind);
    pk_str(pk, "n");
    msgpack_pack_int64(pk, n);
    ck_assert_int_eq(hr_client_publish(t->c, topic, p.sb.data, p.sb.size, NULL), HR_OK);
    msgpack_sbuffer_destroy(&p.sb);
}

/* Publishes {kind, n: i} for i in from..to (kind: k0 for even i, k1 for odd), then waits for
 * the broker to have processed them and lets `ms` pass for deliveries and timers. */
static void pub_range(tx_t *t, const char *topic, int from, int to, const char *k0, const char *k1,
                      int ms)
{
    for (int i = from; i <= to; i++)
        pub_kn(t, topic, i % 2 ? k1 : k0, i);
    tx_flush(t);
    cfix_run_for(&t->loop, ms);
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

/* ---- filter ---------------------------------------------------------------- */

START_TEST(test_filter_builders)
{
    tx_t t;
    tx_start(&t);
    hr_value_t kinds[] = {hr_val_str("msg"), hr_val_str("edit")};
    /* (kind in [msg, edit] and n > 1.5 and not n == 4) or n <= -10 */
    hr_filter_t *f =
        hr_filter_or(hr_filter_and(hr_filter_and(hr_filter_in("kind", kinds, 2),
                                                 hr_filter_gt("n", hr_val_double(1.5))),
                                   hr_filter_not(hr_filter_eq_int("n", 4))),
                     hr_filter_le("n", hr_val_int(-10)));
    ck_assert_ptr_nonnull(f);
    hr_sub_opts_t so = {0};
    so.filter = f;
    tx_sub(&t, "tx.filter", &so);
    hr_filter_free(f); /* the subscription keeps its own copy */
    ck_assert_int_eq(t.confirm_status, HR_OK);
    pub_kn(&t, "tx.filter", "msg", 1);      /* 1: n too small */
    pub_kn(&t, "tx.filter", "msg", 2);      /* 2: yes */
    pub_kn(&t, "tx.filter", "typing", 3);   /* 3: kind */
    pub_kn(&t, "tx.filter", "edit", 4);     /* 4: not n == 4 */
    pub_kn(&t, "tx.filter", "edit", 5);     /* 5: yes */
    pub_kn(&t, "tx.filter", "typing", -11); /* 6: yes, by the `or` */
    ck_assert_int_eq(hr_client_publish(t.c, "tx.filter", "raw", 3, NULL), HR_OK); /* 7: no map */
    tx_flush(&t);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(t.n, 3);
    ck_assert_uint_eq(t.seqs[0], 2);
    ck_assert_uint_eq(t.seqs[1], 5);
    ck_assert_uint_eq(t.seqs[2], 6);

    /* exists and ne, on a second subscription */
    hr_sub_opts_t so2 = {0};
    so2.filter = hr_filter_and(hr_filter_exists("kind"), hr_filter_ne("kind", hr_val_str("msg")));
    t.n = 0;
    tx_sub(&t, "tx.filter2", &so2);
    hr_filter_free((hr_filter_t *)so2.filter);
    pub_kn(&t, "tx.filter2", "msg", 1);
    pub_kn(&t, "tx.filter2", "typing", 1);
    tx_flush(&t);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(t.n, 1);
    ck_assert_uint_eq(t.seqs[0], 2);
    tx_stop(&t);
}
END_TEST

START_TEST(test_filter_builder_failures)
{
    ck_assert_ptr_null(hr_filter_lt("n", hr_val_str("x")));
    ck_assert_ptr_null(hr_filter_eq(NULL, hr_val_int(1)));
    ck_assert_ptr_null(hr_filter_eq("", hr_val_int(1)));
    ck_assert_ptr_null(hr_filter_eq_str("a", NULL));
    ck_assert_ptr_null(hr_filter_in("a", NULL, 0));
    /* a NULL operand fails the whole expression and frees the others */
    ck_assert_ptr_null(hr_filter_and(hr_filter_exists("a"), NULL));
    ck_assert_ptr_null(hr_filter_not(hr_filter_or(NULL, hr_filter_exists("b"))));
    hr_filter_free(NULL);
}
END_TEST

/* ---- fields, rate, conflate, batch ----------------------------------------------- */

START_TEST(test_fields)
{
    tx_t t;
    tx_start(&t);
    const char *fields[] = {"n"};
    hr_sub_opts_t so = {0};
    so.fields = fields;
    so.nfields = 1;
    tx_sub(&t, "tx.fields", &so);
    ck_assert_int_eq(t.confirm_status, HR_OK);
    pub_kn(&t, "tx.fields", "msg", 7);
    tx_flush(&t);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(t.n, 1);
    /* {n: 7} */
    ck_assert_uint_eq(t.lens[0], 4);
    ck_assert_int_eq(memcmp(t.data[0], "\x81\xa1n\x07", 4), 0);

    hr_sub_opts_t bad = {0};
    const char *nul[] = {NULL};
    bad.fields = nul;
    bad.nfields = 1;
    hr_sub_t *s = NULL;
    ck_assert_int_eq(hr_client_subscribe(t.c, "tx.x", &bad, msg_cb, &t, &s), HR_EINVAL);
    tx_stop(&t);
}
END_TEST

START_TEST(test_rate_and_conflate)
{
    tx_t t;
    tx_start(&t);
    hr_sub_opts_t so = {0};
    so.rate_n = 2;
    so.rate_ms = 60000;
    tx_sub(&t, "tx.rate", &so);
    pub_range(&t, "tx.rate", 1, 10, "r", "r", 50);
    ck_assert_int_eq(t.n, 2);
    ck_assert_uint_eq(t.seqs[1], 2);

    t.n = 0;
    hr_sub_opts_t co = {0};
    co.conflate_ms = 200;
    co.conflate_key = "kind";
    tx_sub(&t, "tx.conflate", &co);
    pub_range(&t, "tx.conflate", 1, 6, "even", "odd", 600);
    /* 1 at once; then the latest odd (5) and even (6) at the window's end */
    ck_assert_int_eq(t.n, 3);
    ck_assert_uint_eq(t.seqs[0], 1);
    ck_assert_uint_eq(t.seqs[1], 5);
    ck_assert_uint_eq(t.seqs[2], 6);
    tx_stop(&t);
}
END_TEST

START_TEST(test_batch)
{
    tx_t t;
    tx_start(&t);
    hr_sub_opts_t so = {0};
    so.batch_max = 3;
    so.batch_ms = 100;
    so.has_last = 1;
    so.last = 10;
    pub_range(&t, "tx.batch", 1, 2, "h", "h", 0); /* history, replayed in the first batch */
    tx_sub(&t, "tx.batch", &so);
    ck_assert_int_eq(t.confirm_status, HR_OK);
    pub_range(&t, "tx.batch", 3, 9, "b", "b", 400);
    ck_assert_int_eq(t.n, 9); /* each a message of its own, in order, no duplicate */
    for (int i = 0; i < 9; i++)
        ck_assert_uint_eq(t.seqs[i], (uint64_t)i + 1);
    tx_stop(&t);
}
END_TEST

/* ---- HR_EOPTION -------------------------------------------------------------- */

START_TEST(test_invalid_option)
{
    tx_t t;
    tx_start(&t);
    hr_sub_opts_t so = {0};
    so.rate_n = 5; /* rate_ms 0: refused by the broker */
    tx_sub(&t, "tx.bad", &so);
    ck_assert_int_eq(t.confirm_status, HR_EOPTION);

    /* without on_confirm the refusal reaches on_error with the subscription */
    hr_sub_opts_t bo = {0};
    bo.batch_max = 5000;
    bo.batch_ms = 10;
    hr_sub_t *s = NULL;
    ck_assert_int_eq(hr_client_subscribe(t.c, "tx.bad", &bo, msg_cb, &t, &s), HR_OK);
    tx_flush(&t);
    ck_assert_int_eq(t.nerr, 1);
    ck_assert_int_eq(t.last_err, HR_EOPTION);
    ck_assert_ptr_eq(t.err_sub, s);
    hr_sub_unsubscribe(s);

    /* the connection stays usable */
    hr_sub_opts_t ok = {0};
    tx_sub(&t, "tx.bad", &ok);
    ck_assert_int_eq(t.confirm_status, HR_OK);
    pub_kn(&t, "tx.bad", "x", 1);
    tx_flush(&t);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(t.n, 1);
    tx_stop(&t);
}
END_TEST

static Suite *transforms_suite(void)
{
    Suite *s = suite_create("client_transforms");
    TCase *tc = tcase_create("transforms");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_filter_builders);
    tcase_add_test(tc, test_filter_builder_failures);
    tcase_add_test(tc, test_fields);
    tcase_add_test(tc, test_rate_and_conflate);
    tcase_add_test(tc, test_batch);
    tcase_add_test(tc, test_invalid_option);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(transforms_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
