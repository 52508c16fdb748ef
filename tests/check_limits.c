/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/limits.c on a fake clock: publish rate, pending handshakes, log budget. */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hr_check.h"
#include "limits.h"
#include "server.h"

/*
 * limits.c reads the time through hr__now_ms(); this suite links with
 * -Wl,--wrap=hr__now_ms, so its calls come here and the tests move time.
 */
static uint64_t fake_now;

uint64_t __wrap_hr__now_ms(const hr_server_t *s);
uint64_t __wrap_hr__now_ms(const hr_server_t *s)
{
    (void)s;
    return fake_now;
}

/* A worker without a loop or sockets: enough for limits.c. Static: hr_server_t is large. */
static hr_server_t srv;

static void setup(void)
{
    memset(&srv, 0, sizeof(srv));
    hr__config_defaults(&srv.cfg);
    srv.cfg.max_conns_per_ip = 0; /* needs a socket's peer address */
    srv.cfg.max_pending = 0;
    fake_now = 1000000;
    hr__limits_init(&srv);
}

static void teardown(void)
{
    hr__limits_destroy(&srv);
}

/* A connection as accept() makes it: admitted, with a full publish bucket. */
static void conn_accept(hr_conn_t *c)
{
    memset(c, 0, sizeof(*c));
    c->srv = &srv;
    ck_assert_ptr_null(hr__limits_accept(c));
}

/* How many publishes `c` may make right now (stops at `max`). */
static int pubs(hr_conn_t *c, int max)
{
    int n = 0;
    while (n < max && hr__limits_pub(c))
        n++;
    return n;
}

/* ---- publish rate ------------------------------------------------------------------ */

START_TEST(pub_unlimited)
{
    hr_conn_t c;
    conn_accept(&c);
    ck_assert_int_eq(pubs(&c, 100000), 100000);
    ck_assert_uint_eq(srv.stats.rate_limited, 0);
}
END_TEST

/* Without max-pub-burst a connection may publish one second's worth at once. */
START_TEST(pub_rate_refills_per_ms)
{
    hr_conn_t c;
    srv.cfg.max_pub_rate = 10;
    conn_accept(&c);
    ck_assert_int_eq(pubs(&c, 100), 10);
    ck_assert_uint_eq(srv.stats.rate_limited, 1); /* each refusal counts */
    ck_assert_int_eq(hr__limits_pub(&c), 0);
    ck_assert_uint_eq(srv.stats.rate_limited, 2);
    fake_now += 99; /* 0.99 of a message */
    ck_assert_int_eq(hr__limits_pub(&c), 0);
    fake_now += 1;
    ck_assert_int_eq(pubs(&c, 100), 1);
    fake_now += 250; /* 2.5 messages: two now, the half is kept */
    ck_assert_int_eq(pubs(&c, 100), 2);
    fake_now += 50;
    ck_assert_int_eq(pubs(&c, 100), 1);
    /* A long silence refills to the cap, not beyond. */
    fake_now += 3600 * 1000;
    ck_assert_int_eq(pubs(&c, 100), 10);
}
END_TEST

START_TEST(pub_burst)
{
    hr_conn_t c;
    srv.cfg.max_pub_rate = 10;
    srv.cfg.max_pub_burst = 50;
    conn_accept(&c);
    ck_assert_int_eq(pubs(&c, 1000), 50);
    fake_now += 1000;
    ck_assert_int_eq(pubs(&c, 1000), 10);
    fake_now += 60 * 1000;
    ck_assert_int_eq(pubs(&c, 1000), 50);
}
END_TEST

/* Low rates refill smoothly; a clock that steps back refills nothing. */
START_TEST(pub_slow_rate_and_clock_step_back)
{
    hr_conn_t c;
    srv.cfg.max_pub_rate = 1;
    conn_accept(&c);
    ck_assert_int_eq(pubs(&c, 10), 1);
    fake_now += 999;
    ck_assert_int_eq(pubs(&c, 10), 0);
    fake_now += 1;
    ck_assert_int_eq(pubs(&c, 10), 1);
    fake_now -= 5000;
    ck_assert_int_eq(pubs(&c, 10), 0);
    fake_now += 5000;
    ck_assert_int_eq(pubs(&c, 10), 0);
    fake_now += 1000;
    ck_assert_int_eq(pubs(&c, 10), 1);
}
END_TEST

/* Each connection has its own bucket. */
START_TEST(pub_per_connection)
{
    hr_conn_t a, b;
    srv.cfg.max_pub_rate = 5;
    conn_accept(&a);
    ck_assert_int_eq(pubs(&a, 100), 5);
    fake_now += 100;
    conn_accept(&b);
    ck_assert_int_eq(pubs(&b, 100), 5);
    ck_assert_int_eq(pubs(&a, 100), 0); /* 0.5 of a message so far */
    fake_now += 100;
    ck_assert_int_eq(pubs(&a, 100), 1);
    ck_assert_int_eq(pubs(&b, 100), 0);
}
END_TEST

/* ---- pending handshakes ------------------------------------------------------------ */

START_TEST(pending_handshakes)
{
    hr_conn_t a, b, c, d;
    srv.cfg.max_pending = 2;
    conn_accept(&a);
    conn_accept(&b);
    ck_assert_uint_eq(srv.limits.pending, 2);
    memset(&c, 0, sizeof(c));
    c.srv = &srv;
    const char *why = hr__limits_accept(&c);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "pending"));
    ck_assert_uint_eq(srv.stats.refused_pending, 1);
    hr__limits_hello(&a); /* its HELLO came: no longer pending */
    hr__limits_hello(&a);
    ck_assert_uint_eq(srv.limits.pending, 1);
    conn_accept(&c);
    hr__limits_conn_free(&b); /* gone before its HELLO */
    hr__limits_conn_free(&b);
    hr__limits_conn_free(&a);
    ck_assert_uint_eq(srv.limits.pending, 1);
    conn_accept(&d);
    ck_assert_uint_eq(srv.limits.pending, 2);
    hr__limits_conn_free(&c);
    hr__limits_conn_free(&d);
    ck_assert_uint_eq(srv.limits.pending, 0);
}
END_TEST

/* ---- the log budget ---------------------------------------------------------------- */

/* Runs hr__limits_log_budget() with stderr going to a file; returns what it wrote. */
static int budget(char *out, size_t cap)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    int saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(f), 2), 0);
    int r = hr__limits_log_budget(&srv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    return r;
}

START_TEST(log_budget_per_second)
{
    char out[1024];
    int yes = 0;
    for (int i = 0; i < 15; i++) {
        yes += budget(out, sizeof(out));
        ck_assert_str_eq(out, "");
    }
    ck_assert_int_eq(yes, 10);
    fake_now += 999;
    ck_assert_int_eq(budget(out, sizeof(out)), 0);
    /* The next second starts with a line counting what the last one held back. */
    fake_now += 1;
    ck_assert_int_eq(budget(out, sizeof(out)), 1);
    ck_assert_msg(strstr(out, "6 more refusals not logged"), "logged: %s", out);
    ck_assert_ptr_nonnull(strstr(out, " warn "));
    /* A second that held nothing back says nothing. */
    fake_now += 1000;
    ck_assert_int_eq(budget(out, sizeof(out)), 1);
    ck_assert_str_eq(out, "");
}
END_TEST

static Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");
    TCase *t = tcase_create("publish rate");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, pub_unlimited);
    tcase_add_test(t, pub_rate_refills_per_ms);
    tcase_add_test(t, pub_burst);
    tcase_add_test(t, pub_slow_rate_and_clock_step_back);
    tcase_add_test(t, pub_per_connection);
    suite_add_tcase(s, t);
    t = tcase_create("pending handshakes");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, pending_handshakes);
    suite_add_tcase(s, t);
    t = tcase_create("log budget");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, log_budget_per_second);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(limits_suite)
