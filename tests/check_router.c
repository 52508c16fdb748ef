/* SPDX-License-Identifier: MIT */
/* Router: ownership by hash, fan-out to peer links, echo and queue-group choice by client id. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "hr_check.h"
#include "server.h"

static hr_server_t srv;
static uv_loop_t loop;

typedef struct got_s {
    int n;
    uint16_t peer[64];
    uint64_t member_cid[64];
} got_t;

static got_t got;

static int fake_forward(void *arg, uint16_t owner, const hr_pub_cmd_t *p, uint64_t origin,
                        int no_echo, hr_router_done_cb done, void *done_arg)
{
    (void)arg;
    (void)owner;
    (void)p;
    (void)origin;
    (void)no_echo;
    (void)done;
    (void)done_arg;
    return HR_OK;
}

static void fake_deliver(void *arg, uint16_t peer, const hr_delivery_t *d, const hr_sub_t *member)
{
    (void)arg;
    (void)d;
    ck_assert_int_lt(got.n, 64);
    got.peer[got.n] = peer;
    got.member_cid[got.n++] = member ? member->cid : 0;
}

static int busy_cid; /* members of this client report busy */

static int fake_busy(void *arg, const hr_sub_t *sub)
{
    (void)arg;
    return (int)sub->cid == busy_cid;
}

static const hr_peer_ops_t fake_ops = {fake_forward, fake_deliver, fake_busy};

static void setup(void)
{
    hr_config_t cfg;
    hr__config_defaults(&cfg);
    cfg.nworkers = 3;
    uv_loop_init(&loop);
    ck_assert_int_eq(hr__server_init(&srv, &loop, &cfg), HR_OK);
    srv.peer = &fake_ops;
    memset(&got, 0, sizeof(got));
    busy_cid = -1;
}

static void teardown(void)
{
    hr__server_shutdown(&srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    hr__server_destroy(&srv);
    uv_loop_close(&loop);
}

/* A peer's registration: a subscription with no connection. */
static hr_sub_t *peer_sub(uint16_t peer, uint64_t cid, uint64_t sid, const char *pattern,
                          const char *queue)
{
    hr_sub_t *s =
        hr__sub_new(NULL, cid, sid, pattern, strlen(pattern), queue, queue ? strlen(queue) : 0);
    ck_assert_ptr_nonnull(s);
    s->peer = peer;
    ck_assert_int_eq(hr__index_add(&srv.index, s), 0);
    return s;
}

static void fan(const char *topic, uint64_t origin, int no_echo)
{
    hr_msg_t *m = hr_msg_new(0, "x", 1);
    hr_delivery_t d = {m,      {topic, strlen(topic)}, hr__hash(topic, strlen(topic)), 1, origin,
                       no_echo};
    hr__router_fanout(&srv, &d);
    hr_msg_unref(&m);
}

START_TEST(route_is_stable_and_spread)
{
    int count[3] = {0, 0, 0};
    char t[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(t, sizeof(t), "room.%d", i);
        uint64_t h = hr__hash(t, strlen(t));
        uint16_t w = hr__route(&srv, h);
        ck_assert_uint_lt(w, 3);
        ck_assert_uint_eq(hr__route(&srv, h), w); /* the same answer every time */
        count[w]++;
    }
    for (int i = 0; i < 3; i++)
        ck_assert_int_gt(count[i], 800); /* roughly a third each */
    srv.nworkers = 1;
    ck_assert_uint_eq(hr__route(&srv, hr__hash("a", 1)), srv.worker);
}
END_TEST

/* One hand-off per peer and message, however many of its patterns match. */
START_TEST(one_handoff_per_peer)
{
    hr_sub_t *s[4] = {peer_sub(1, 0, 0, "a.b", NULL), peer_sub(1, 0, 0, "a.*", NULL),
                      peer_sub(2, 0, 0, "a.>", NULL), peer_sub(2, 0, 0, "x.y", NULL)};
    fan("a.b", 7, 0);
    ck_assert_int_eq(got.n, 2);
    ck_assert_uint_ne(got.peer[0], got.peer[1]);
    ck_assert(hr__router_has_interest(&srv, "a.b", 3, hr__hash("a.b", 3)));
    ck_assert(!hr__router_has_interest(&srv, "q", 1, hr__hash("q", 1)));
    /* a message another worker sequenced goes to local subscriptions only */
    memset(&got, 0, sizeof(got));
    hr_msg_t *m = hr_msg_new(0, "x", 1);
    hr_delivery_t d = {m, {"a.b", 3}, hr__hash("a.b", 3), 2, 7, 0};
    hr__router_fanout_local(&srv, &d);
    hr_msg_unref(&m);
    ck_assert_int_eq(got.n, 0);
    for (int i = 0; i < 4; i++) {
        hr__index_remove(&srv.index, s[i]);
        hr__sub_free(s[i]);
    }
}
END_TEST

/* Exactly one member of a group gets each message, wherever it lives; echo: false skips
 * the publisher's own member by client id; busy members are skipped while others are not. */
START_TEST(queue_group_by_client_id)
{
    hr_sub_t *m1 = peer_sub(1, 101, 1, "jobs.*", "q");
    hr_sub_t *m2 = peer_sub(2, 202, 1, "jobs.*", "q");
    int per[3] = {0, 0, 0};
    for (int i = 0; i < 10; i++) {
        memset(&got, 0, sizeof(got));
        fan("jobs.x", 5, 0);
        ck_assert_int_eq(got.n, 1);
        per[got.peer[0]]++;
    }
    ck_assert_int_eq(per[1], 5); /* round robin */
    ck_assert_int_eq(per[2], 5);
    for (int i = 0; i < 4; i++) { /* the publisher is member 101 and said echo: false */
        memset(&got, 0, sizeof(got));
        fan("jobs.x", 101, 1);
        ck_assert_int_eq(got.n, 1);
        ck_assert_uint_eq(got.member_cid[0], 202);
    }
    busy_cid = 202;
    for (int i = 0; i < 4; i++) {
        memset(&got, 0, sizeof(got));
        fan("jobs.x", 5, 0);
        ck_assert_uint_eq(got.member_cid[0], 101);
    }
    hr__index_remove(&srv.index, m1);
    hr__index_remove(&srv.index, m2);
    hr__sub_free(m1);
    hr__sub_free(m2);
}
END_TEST

static Suite *router_suite(void)
{
    Suite *s = suite_create("router");
    TCase *t = tcase_create("router");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, route_is_stable_and_spread);
    tcase_add_test(t, one_handoff_per_peer);
    tcase_add_test(t, queue_group_by_client_id);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(router_suite)
