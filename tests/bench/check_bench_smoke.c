/* SPDX-License-Identifier: MIT */
/* Smoke run of every herald-bench scenario against the real broker: no loss, sane figures. */
#include <check.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hb.h"
#include "hr_certs.h"
#include "hr_fixture.h"
#include "json_check.h"

extern char **environ;

/* Changes to a scenario's smoke sizes; zero fields keep the default. */
typedef struct tweak_s {
    int size;
    double duration;
    uint64_t window;
} tweak_t;

static const char *target_ca; /* set: the target speaks TLS, verified against this CA */

/* Runs scenario `name` (smoke sizes, `tw` applied) against a fresh broker started with `extra`. */
static void run_tweaked(const char *name, const char *const *extra, tweak_t tw, hb_result_t *r,
                        hr_fixture_t *fx)
{
    ck_assert_int_eq(hr_fixture_start(fx, extra), 0);
    hb_plan_t pl;
    ck_assert_int_eq(hb_scenario_plan(name, 1, &pl), 0);
    if (tw.size > 0)
        pl.p.size = tw.size;
    if (tw.duration > 0)
        pl.p.duration = tw.duration;
    if (tw.window > 0)
        pl.p.window = tw.window;
    pl.quiet = 1;
    pl.p.threads = 2;
    hb_target_t t;
    memset(&t, 0, sizeof t);
    t.ad = hb_adapter_find("herald");
    ck_assert_ptr_nonnull(t.ad);
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    t.port = fx->tcp_port;
    t.ws_port = fx->ws_port;
    t.pid = (int)fx->pid;
    if (target_ca)
        snprintf(t.tls_ca, sizeof t.tls_ca, "%s", target_ca);
    hb_run(&pl, &t, r);
}

static void run_scenario(const char *name, const char *const *extra, hb_result_t *r,
                         hr_fixture_t *fx)
{
    run_tweaked(name, extra, (tweak_t){0, 0, 0}, r, fx);
}

static void finish(hb_result_t *r, hr_fixture_t *fx)
{
    ck_assert_int_eq(hr_fixture_stop(fx), 0);
    hr_fixture_destroy(fx);
    free(r->lat);
    free(r->series);
}

/* What every publishing scenario must show: complete, lossless, in order, plausible. */
static void assert_clean(const hb_result_t *r)
{
    ck_assert_msg(r->ok, "%s did not complete: %s", r->scenario, r->error);
    ck_assert_uint_eq(r->errors, 0);
    ck_assert_uint_eq(r->disconnects, 0);
    ck_assert_uint_gt(r->published, 0);
    ck_assert_uint_gt(r->expected, 0);
    ck_assert_uint_eq(r->delivered, r->expected);
    ck_assert_uint_eq(r->lost, 0);
    ck_assert_uint_eq(r->duplicates, 0);
    ck_assert_uint_eq(r->reordered, 0);
    ck_assert_uint_eq(r->gaps, 0);
    ck_assert(r->pub_rate > 0 && r->del_rate > 0);
    ck_assert(r->pub_secs > 0 && r->pub_secs < 30);
    ck_assert(r->del_secs > 0 && r->del_secs < 30);
    ck_assert_ptr_nonnull(r->lat);
    ck_assert_uint_eq(r->lat->count, r->delivered);
    uint64_t p50 = hb_hist_percentile(r->lat, 50), p99 = hb_hist_percentile(r->lat, 99);
    ck_assert_uint_gt(p50, 0);
    ck_assert_uint_le(p50, p99);
    ck_assert_uint_le(p99, r->lat->max);
    ck_assert_uint_lt(r->lat->max, 10ull * 1000000000ull); /* under 10 s */
    ck_assert(r->bench_cpu > 0);
    ck_assert(r->broker_cpu >= 0);
    ck_assert_uint_gt(r->broker_rss_peak, 0);
    ck_assert_int_gt(r->nseries, 0);
}

/* herald-bench over TLS (both ports) against a broker with a certificate: as clean as plain. */
START_TEST(test_tls)
{
    static const char *const names[] = {"fanout", "idle-ws"};
    ck_assert_ptr_nonnull(hr_test_certs());
    const char *const extra[] = {"--tls-cert", hr_test_cert("server.pem"), "--tls-key",
                                 hr_test_cert("server.key"), NULL};
    hr_fixture_t fx;
    hb_result_t r;
    target_ca = hr_test_cert("ca.pem");
    run_scenario(names[_i], extra, &r, &fx);
    target_ca = NULL;
    if (_i == 0) {
        assert_clean(&r);
        ck_assert_uint_eq(r.delivered, r.published * (uint64_t)r.params.subs);
    } else {
        ck_assert_msg(r.ok, "idle-ws over TLS did not complete: %s", r.error);
        ck_assert(r.mem_per_conn > 0);
    }
    finish(&r, &fx);
}
END_TEST

START_TEST(test_throughput)
{
    hr_fixture_t fx;
    hb_result_t r;
    run_scenario("throughput", NULL, &r, &fx);
    assert_clean(&r);
    ck_assert_uint_eq(r.delivered, r.published); /* 1 -> 1 */
    finish(&r, &fx);
}
END_TEST

START_TEST(test_fanout)
{
    hr_fixture_t fx;
    hb_result_t r;
    run_scenario("fanout", NULL, &r, &fx);
    assert_clean(&r);
    ck_assert_uint_eq(r.delivered, r.published * (uint64_t)r.params.subs);
    finish(&r, &fx);
}
END_TEST

START_TEST(test_chat)
{
    hr_fixture_t fx;
    hb_result_t r;
    run_scenario("chat", NULL, &r, &fx);
    assert_clean(&r);
    /* Two subscribers per room: every message reaches exactly two. */
    ck_assert_uint_eq(r.delivered, 2 * r.published);
    finish(&r, &fx);
}
END_TEST

START_TEST(test_latency)
{
    hr_fixture_t fx;
    hb_result_t r;
    run_scenario("latency", NULL, &r, &fx);
    assert_clean(&r);
    /* Open loop: the publisher kept its schedule (rate x duration; the low bound allows for
     * a generator starved of CPU on a busy CI machine). */
    double want = r.params.rate * r.params.duration;
    ck_assert_msg(r.published > want * 0.7 && r.published < want * 1.1, "published %llu of %.0f",
                  (unsigned long long)r.published, want);
    ck_assert_uint_eq(r.delivered, r.published * (uint64_t)r.params.subs);
    finish(&r, &fx);
}
END_TEST

/* idle (TCP) and idle-ws (WebSocket, every client connecting at once). */
START_TEST(test_idle)
{
    static const char *const names[] = {"idle", "idle-ws"};
    const char *name = names[_i];
    hr_fixture_t fx;
    hb_result_t r;
    run_scenario(name, NULL, &r, &fx);
    ck_assert_msg(r.ok, "%s did not complete: %s", name, r.error);
    ck_assert_uint_eq(r.disconnects, 0);
    ck_assert_uint_eq(r.errors, 0);
    ck_assert_uint_gt(r.broker_rss, 0);
    ck_assert(r.mem_per_conn >= 0 && r.mem_per_conn < 1024 * 1024);
    finish(&r, &fx);
}
END_TEST

START_TEST(test_mixed)
{
    hr_fixture_t fx;
    hb_result_t r;
    ck_assert_int_eq(hr_fixture_start(&fx, NULL), 0);
    int ws = fx.ws_port;
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
    if (ws <= 0)
        return; /* this broker build serves no WebSocket yet */
    run_scenario("mixed", NULL, &r, &fx);
    assert_clean(&r);
    finish(&r, &fx);
}
END_TEST

START_TEST(test_slow)
{
    /*
     * Small output limits, 1 KiB payloads and 1.5 s so that even a slow (sanitizer)
     * build on a busy machine pushes the stalled subscriber past the limit; a window
     * of 500 deliveries keeps what any healthy subscriber may owe (~0.5 MiB) far
     * below it.
     */
    static const char *const extra[] = {"--out-hard",    "2M",  "--out-soft", "512K",
                                        "--out-soft-ms", "100", NULL};
    hr_fixture_t fx;
    hb_result_t r;
    run_tweaked("slow", extra, (tweak_t){1024, 1.5, 500}, &r, &fx);
    assert_clean(&r);
    ck_assert_uint_eq(r.delivered, r.published * (uint64_t)(r.params.subs - 1));
    ck_assert_uint_eq(r.stalled_closed, 1);
    finish(&r, &fx);
}
END_TEST

START_TEST(test_reqrep)
{
    hr_fixture_t fx;
    hb_result_t r;
    run_scenario("reqrep", NULL, &r, &fx);
    assert_clean(&r);
    ck_assert_uint_eq(r.delivered, r.published); /* a reply for every request */
    finish(&r, &fx);
}
END_TEST

/* The binary end to end: --check passes, and the JSON and Markdown files are written. */
START_TEST(test_binary_end_to_end)
{
    const char *bin = getenv("HERALD_BENCH_BIN");
    if (!bin)
        bin = "./bench/herald-bench"; /* run by hand from the build directory */
    hr_fixture_t fx;
    ck_assert_int_eq(hr_fixture_start(&fx, NULL), 0);
    char target[128], json[300], md[300];
    snprintf(target, sizeof target, "herald://127.0.0.1:%d?pid=%d", fx.tcp_port, (int)fx.pid);
    snprintf(json, sizeof json, "%s/bench.json", fx.dir);
    snprintf(md, sizeof md, "%s/bench.md", fx.dir);
    char *argv[] = {(char *)bin,  "--smoke", "--check",    "--quiet", "-t",       target,
                    "--json",     json,      "--md",       md,        "--repeat", "2",
                    "--duration", "0.3",     "throughput", "fanout",  NULL};
    pid_t pid;
    ck_assert_int_eq(posix_spawn(&pid, bin, NULL, NULL, argv, environ), 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "herald-bench status %d", status);

    FILE *f = fopen(json, "r");
    ck_assert_ptr_nonnull(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    ck_assert_msg(json_valid(buf), "invalid JSON report");
    ck_assert_ptr_nonnull(strstr(buf, "\"scenario\": \"fanout\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"lost\": 0"));
    f = fopen(md, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    ck_assert_ptr_nonnull(strstr(buf, "### throughput"));
    ck_assert_ptr_nonnull(strstr(buf, "| delivered msgs/s |"));
    ck_assert_int_eq(hr_fixture_stop(&fx), 0);
    hr_fixture_destroy(&fx);
}
END_TEST

static Suite *smoke_suite(void)
{
    Suite *s = suite_create("bench_smoke");
    TCase *tc = tcase_create("scenarios");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_throughput);
    tcase_add_test(tc, test_fanout);
    tcase_add_test(tc, test_chat);
    tcase_add_test(tc, test_latency);
    tcase_add_loop_test(tc, test_idle, 0, 2);
    tcase_add_test(tc, test_mixed);
    tcase_add_test(tc, test_slow);
    tcase_add_test(tc, test_reqrep);
    tcase_add_loop_test(tc, test_tls, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("binary");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_binary_end_to_end);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    hr_test_certs(); /* before the runner forks: the TLS tests share them */
    SRunner *sr = srunner_create(smoke_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
