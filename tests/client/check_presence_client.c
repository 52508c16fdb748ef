/* SPDX-License-Identifier: MIT */
/* libherald presence against the real broker: hr_sub_opts_t.presence and hr_client_watch_presence.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/client.h"
#include "cfix.h"

static cfix_t F;
static char URL[64];

/* Two clients on one loop: a watcher and a member. */
typedef struct pt_s {
    uv_loop_t loop;
    hr_client_t *w, *m;
    int connected, closed, nerr, last_err;
    int events; /* presence events seen */
    hr_presence_event_t ev;
    uint64_t ids[8], left[8];
    char info[8][32];
} pt_t;

static void st_cb(hr_client_t *c, int ev, int status, void *arg)
{
    (void)c, (void)status;
    pt_t *t = arg;
    if (ev == HR_EVENT_CONNECTED)
        t->connected++;
    if (ev == HR_EVENT_CLOSED)
        t->closed++;
}

static void err_cb(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    (void)c, (void)sub, (void)detail;
    pt_t *t = arg;
    t->nerr++;
    t->last_err = status;
}

/* Copies what the event borrowed. */
static void pres_cb(hr_client_t *c, hr_sub_t *sub, const hr_presence_event_t *ev, void *arg)
{
    (void)c, (void)sub;
    pt_t *t = arg;
    t->events++;
    t->ev = *ev;
    for (size_t i = 0; i < ev->nmembers && i < 8; i++) {
        t->ids[i] = ev->members[i].client_id;
        snprintf(t->info[i], sizeof(t->info[i]), "%.*s", (int)ev->members[i].info_len,
                 (const char *)ev->members[i].info);
    }
    for (size_t i = 0; i < ev->nleft && i < 8; i++)
        t->left[i] = ev->left[i];
    t->ev.members = NULL;
    t->ev.left = NULL;
}

static void noop_cb(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    (void)c, (void)sub, (void)m, (void)arg;
}

static hr_client_t *pt_client(pt_t *t)
{
    hr_client_opts_t o;
    hr_client_t *c;
    hr_client_opts_init(&o);
    o.url = URL;
    o.on_state = st_cb;
    o.on_error = err_cb;
    o.arg = t;
    o.reconnect_wait_ms = 10;
    o.reconnect_wait_max_ms = 80;
    o.max_reconnect = -1;
    t->connected = 0;
    ck_assert_int_eq(hr_client_new(&t->loop, &o, &c), HR_OK);
    ck_assert(cfix_run_until(&t->loop, &t->connected, 3000));
    return c;
}

static void pt_init(pt_t *t)
{
    memset(t, 0, sizeof(*t));
    ck_assert_int_eq(uv_loop_init(&t->loop), 0);
    t->w = pt_client(t);
    t->m = pt_client(t);
}

static void pt_close(pt_t *t)
{
    hr_client_close(t->w);
    hr_client_close(t->m);
    for (int i = 0; i < 100 && t->closed < 2; i++)
        cfix_run_for(&t->loop, 20);
    ck_assert_int_eq(t->closed, 2);
    cfix_loop_close(&t->loop);
}

/* Runs the loop until the watcher has seen `n` events. */
static void pt_wait(pt_t *t, int n)
{
    for (int i = 0; i < 150 && t->events < n; i++)
        cfix_run_for(&t->loop, 20);
    ck_assert_int_eq(t->events, n);
}

static void start(const char *list_max)
{
    const char *args[] = {"--presence-interval", "100", "--presence-list-max", list_max, NULL};
    ck_assert_int_eq(cfix_start(&F, args), 0);
    cfix_url(&F, URL, sizeof(URL));
}

START_TEST(test_watch_join_leave)
{
    pt_t t;
    hr_sub_t *ws, *ms;
    start("10");
    pt_init(&t);
    ck_assert_int_eq(hr_client_watch_presence(t.w, "room.a", pres_cb, &t, &ws), HR_OK);
    ck_assert_int_eq(hr_client_watch_presence(t.w, "room.*", pres_cb, &t, &ws), HR_ETOPIC);
    pt_wait(&t, 1);
    ck_assert(t.ev.snapshot && t.ev.listed);
    ck_assert_int_eq(t.ev.count, 0);
    ck_assert_int_eq(t.ev.nmembers, 0);

    hr_sub_opts_t so = {0};
    so.presence = "bob";
    so.presence_len = 3;
    ck_assert_int_eq(hr_client_subscribe(t.m, "room.a", &so, NULL, NULL, &ms), HR_EINVAL);
    ck_assert_int_eq(hr_client_subscribe(t.m, "room.a", &so, noop_cb, NULL, &ms), HR_OK);
    pt_wait(&t, 2);
    ck_assert(!t.ev.snapshot && t.ev.listed);
    ck_assert_int_eq(t.ev.count, 1);
    ck_assert_int_eq(t.ev.nmembers, 1);
    ck_assert_uint_eq(t.ids[0], hr_client_id(t.m));
    ck_assert_str_eq(t.info[0], "bob");
    ck_assert_int_eq(t.ev.nleft, 0);

    ck_assert_int_eq(hr_sub_unsubscribe(ms), HR_OK);
    pt_wait(&t, 3);
    ck_assert_int_eq(t.ev.count, 0);
    ck_assert_int_eq(t.ev.nmembers, 0);
    ck_assert_int_eq(t.ev.nleft, 1);
    ck_assert_uint_eq(t.left[0], hr_client_id(t.m));

    /* Presence on a pattern is refused (ERR 12) and reported. */
    ck_assert_int_eq(hr_client_subscribe(t.m, "room.*", &so, noop_cb, NULL, &ms), HR_OK);
    for (int i = 0; i < 100 && !t.nerr; i++)
        cfix_run_for(&t.loop, 20);
    ck_assert_int_eq(t.last_err, HR_EOPTION);
    ck_assert_int_eq(t.events, 3);
    pt_close(&t);
    cfix_stop(&F);
}
END_TEST

START_TEST(test_watch_count_only)
{
    pt_t t;
    hr_sub_t *ws, *ms;
    start("0");
    pt_init(&t);
    hr_sub_opts_t so = {0};
    so.presence = "";
    ck_assert_int_eq(hr_client_subscribe(t.m, "room.b", &so, noop_cb, NULL, &ms), HR_OK);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(hr_client_watch_presence(t.w, "room.b", pres_cb, &t, &ws), HR_OK);
    pt_wait(&t, 1);
    ck_assert(t.ev.snapshot && !t.ev.listed);
    ck_assert_int_eq(t.ev.count, 1);
    hr_sub_unsubscribe(ms);
    pt_wait(&t, 2); /* back at the maximum (0): a list again, of nobody */
    ck_assert(!t.ev.snapshot && t.ev.listed);
    ck_assert_int_eq(t.ev.count, 0);
    ck_assert_int_eq(t.ev.nmembers + t.ev.nleft, 0);
    pt_close(&t);
    cfix_stop(&F);
}
END_TEST

/* After the broker restarts, the member is restored with its info and the watcher re-snapshots. */
START_TEST(test_restored_after_restart)
{
    pt_t t;
    hr_sub_t *ws, *ms;
    start("10");
    pt_init(&t);
    hr_sub_opts_t so = {0};
    so.presence = "carol";
    so.presence_len = 5;
    ck_assert_int_eq(hr_client_subscribe(t.m, "room.c", &so, noop_cb, NULL, &ms), HR_OK);
    cfix_run_for(&t.loop, 50);
    ck_assert_int_eq(hr_client_watch_presence(t.w, "room.c", pres_cb, &t, &ws), HR_OK);
    pt_wait(&t, 1);
    ck_assert_int_eq(t.ev.count, 1);
    cfix_kill(&F);
    cfix_run_for(&t.loop, 100);
    ck_assert_int_eq(cfix_restart(&F), 0);
    int snapshots = 0;
    for (int i = 0; i < 200 && !(t.events > 1 && t.ev.count == 1 && t.ev.nmembers == 1); i++) {
        int before = t.events;
        cfix_run_for(&t.loop, 20);
        if (t.events > before && t.ev.snapshot)
            snapshots++;
    }
    ck_assert_int_ge(snapshots, 1); /* a fresh snapshot after the reconnect */
    ck_assert_int_eq(t.ev.count, 1);
    ck_assert_uint_eq(t.ids[0], hr_client_id(t.m)); /* the new connection's id */
    ck_assert_str_eq(t.info[0], "carol");
    pt_close(&t);
    cfix_stop(&F);
}
END_TEST

Suite *presence_suite(void);

Suite *presence_suite(void)
{
    Suite *s = suite_create("presence");
    TCase *tc = tcase_create("presence");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_watch_join_leave);
    tcase_add_test(tc, test_watch_count_only);
    tcase_add_test(tc, test_restored_after_restart);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(presence_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
