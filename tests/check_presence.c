/* SPDX-License-Identifier: MIT */
/* Presence state without sockets: membership counting, rooms freed, a worker's members leaving. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hr_check.h"
#include "presence.h"
#include "server.h"

static uv_loop_t loop;
static hr_server_t srv;

static void setup(void)
{
    hr_config_t cfg;
    hr__config_defaults(&cfg);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(hr__server_init(&srv, &loop, &cfg), HR_OK);
}

/* Closes what hr__server_init() opened (it was never started) and frees the rest. */
static void close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void teardown(void)
{
    uv_walk(&loop, close_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    hr__server_destroy(&srv);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}

static hr_slice_t S(const char *s)
{
    return (hr_slice_t){s, strlen(s)};
}

static void expect(uint64_t rooms, uint64_t members)
{
    uint64_t r, m;
    hr__presence_stats(&srv, &r, &m);
    ck_assert_uint_eq(r, rooms);
    ck_assert_uint_eq(m, members);
}

START_TEST(one_membership_per_client_and_topic)
{
    ck_assert_int_eq(hr__presence_member_join(&srv, S("room.a"), 7, S("a"), 0), HR_OK);
    ck_assert_int_eq(hr__presence_member_join(&srv, S("room.a"), 7, S("latest"), 0), HR_OK);
    ck_assert_int_eq(hr__presence_member_join(&srv, S("room.b"), 7, S(""), 0), HR_OK);
    expect(2, 2);
    hr__presence_member_leave(&srv, S("room.a"), 7);
    expect(2, 2); /* one subscription still holds it */
    hr__presence_member_leave(&srv, S("room.a"), 7);
    expect(1, 1); /* room.a had no watchers: freed with its last member */
    hr__presence_member_leave(&srv, S("room.a"), 7);
    hr__presence_member_leave(&srv, S("nowhere"), 9);
    expect(1, 1);
    hr__presence_member_leave(&srv, S("room.b"), 7);
    expect(0, 0);
}
END_TEST

START_TEST(a_workers_members_leave_with_it)
{
    for (uint64_t cid = 1; cid <= 300; cid++) {
        const char *room = cid % 3 ? "room.x" : "room.y";
        ck_assert_int_eq(hr__presence_member_join(&srv, S(room), cid, S("i"), (uint16_t)(cid % 2)),
                         HR_OK);
    }
    expect(2, 300);
    hr__presence_worker_gone(&srv, 1);
    expect(2, 150);
    hr__presence_worker_gone(&srv, 1);
    expect(2, 150);
    hr__presence_worker_gone(&srv, 0);
    expect(0, 0);
}
END_TEST

Suite *presence_suite(void);

Suite *presence_suite(void)
{
    Suite *s = suite_create("presence");
    TCase *tc = tcase_create("state");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, one_membership_per_client_and_topic);
    tcase_add_test(tc, a_workers_members_leave_with_it);
    suite_add_tcase(s, tc);
    return s;
}

HR_CHECK_MAIN(presence_suite)
