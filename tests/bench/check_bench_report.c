/* SPDX-License-Identifier: MIT */
/* Unit tests for herald-bench's reports: derived rates, JSON validity, Markdown tables and
 * verdicts. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "report.h"

/* Renders with `fn` into a heap string (caller frees). */
static char *render_json(hb_result_t *const *rs, int n)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    ck_assert_ptr_nonnull(f);
    hb_report_json_all(f, rs, n);
    fclose(f);
    return s;
}

static char *render_md(hb_result_t *const *rs, int n)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    ck_assert_ptr_nonnull(f);
    hb_report_markdown(f, rs, n);
    fclose(f);
    return s;
}

static void make(hb_result_t *r, const char *scen, const char *broker, double rate, uint64_t lat)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->scenario, sizeof r->scenario, "%s", scen);
    snprintf(r->broker, sizeof r->broker, "%s", broker);
    r->ok = 1;
    r->params.pubs = 1;
    r->params.subs = 1;
    r->params.topics = 1;
    r->params.size = 16;
    r->params.duration = 2;
    r->params.window = 1000;
    r->published = r->expected = r->delivered = (uint64_t)(rate * 2);
    r->pub_bytes = r->del_bytes = r->published * 16;
    r->pub_secs = r->del_secs = 2;
    r->broker_cpu = 95;
    r->broker_rss_peak = 4 << 20;
    r->lat = calloc(1, sizeof(hb_hist_t));
    hb_hist_init(r->lat);
    for (int i = 0; i < 1000; i++)
        hb_hist_record(r->lat, lat + (uint64_t)i);
    hb_result_finish(r);
}

static void drop(hb_result_t *r)
{
    free(r->lat);
    free(r->series);
}

START_TEST(test_finish_rates_and_loss)
{
    hb_result_t r;
    make(&r, "throughput", "herald", 1e6, 1000);
    ck_assert(r.pub_rate == 1e6 && r.del_rate == 1e6);
    ck_assert(r.del_mbps == 16.0);
    r.delivered -= 5;
    hb_result_finish(&r);
    ck_assert_uint_eq(r.lost, 5);
    r.delivered += 10; /* more than expected is not negative loss */
    hb_result_finish(&r);
    ck_assert_uint_eq(r.lost, 0);
    r.pub_secs = r.del_secs = 0;
    hb_result_finish(&r);
    ck_assert(r.pub_rate == 0 && r.del_rate == 0);
    drop(&r);
}
END_TEST

START_TEST(test_json_valid_and_complete)
{
    hb_result_t a, b;
    make(&a, "throughput", "herald", 2e6, 5000);
    make(&b, "throughput", "nats", 1e6, 9000);
    snprintf(b.error, sizeof b.error, "quote \" backslash \\ newline \n tab \t end");
    b.series = calloc(2, sizeof(hb_sample_t));
    b.nseries = 2;
    b.series[0] = (hb_sample_t){0.25, 1e6, 1e6, 90.5, 1234};
    b.series[1] = (hb_sample_t){0.5, 0.0 / 0.0, 2e6, -1, 0}; /* NaN must become null */
    free(b.lat);
    b.lat = NULL; /* latency not measured: null */
    hb_result_t *rs[] = {&a, &b};
    char *s = render_json(rs, 2);
    ck_assert_msg(json_valid(s), "invalid JSON:\n%s", s);
    ck_assert_ptr_nonnull(strstr(s, "\"scenario\": \"throughput\""));
    ck_assert_ptr_nonnull(strstr(s, "\"del_msgs_per_s\": 2000000"));
    ck_assert_ptr_nonnull(strstr(s, "\"p99\": "));
    ck_assert_ptr_nonnull(strstr(s, "\"p99_9\": "));
    ck_assert_ptr_nonnull(strstr(s, "\"latency_ns\": null"));
    ck_assert_ptr_nonnull(strstr(s, "\\\" backslash \\\\ newline \\n tab \\u0009"));
    ck_assert_ptr_nonnull(strstr(s, "[0.5, null, 2000000"));
    free(s);
    /* An empty report is an empty array. */
    s = render_json(rs, 0);
    ck_assert(json_valid(s));
    free(s);
    drop(&a);
    drop(&b);
}
END_TEST

START_TEST(test_markdown_ratio_ahead)
{
    hb_result_t h, n, r;
    make(&h, "throughput", "herald", 3e6, 5000);
    make(&n, "throughput", "nats", 1.5e6, 9000);
    make(&r, "throughput", "redis", 1e6, 9000);
    hb_result_t *rs[] = {&h, &n, &r};
    char *s = render_md(rs, 3);
    ck_assert_ptr_nonnull(strstr(s, "### throughput"));
    ck_assert_ptr_nonnull(
        strstr(s, "| | herald | nats-server | redis-server | herald/nats | herald/redis |"));
    ck_assert_ptr_nonnull(
        strstr(s, "| delivered msgs/s | 3.00M | 1.50M | 1.00M | 2.00x | 3.00x |"));
    ck_assert_ptr_nonnull(strstr(s, "Herald is ahead of nats-server on delivered msgs/s: 2.00x"));
    ck_assert_ptr_nonnull(strstr(
        s, "| delivered msgs per broker CPU-second | 3.16M | 1.58M | 1.05M | 2.00x | 3.00x |"));
    ck_assert_ptr_nonnull(strstr(s, "Target >= 1.5x nats-server: met (2.000x"));
    ck_assert_ptr_null(strstr(s, "behind"));
    free(s);
    drop(&h);
    drop(&n);
    drop(&r);
}
END_TEST

START_TEST(test_markdown_states_behind)
{
    hb_result_t h, n;
    make(&h, "fanout", "herald", 1e6, 5000);
    make(&n, "fanout", "nats", 4e6, 9000);
    hb_result_t *rs[] = {&h, &n};
    char *s = render_md(rs, 2);
    ck_assert_ptr_nonnull(strstr(s, "| delivered msgs/s | 1.00M | 4.00M | 0.25x (behind) |"));
    ck_assert_ptr_nonnull(
        strstr(s, "**Herald is behind nats-server** on delivered msgs/s: 0.25x (75% lower)"));
    ck_assert_ptr_null(strstr(s, "saturating"));
    free(s);
    /* A generator near its limit is called out. */
    h.params.threads = 2;
    h.bench_cpu = 190;
    s = render_md(rs, 2);
    ck_assert_ptr_nonnull(strstr(s, "herald-bench was close to saturating its 2 thread(s) in the "
                                    "herald run (190% CPU)"));
    ck_assert_ptr_nonnull(strstr(s, "Target >= 2x the better peer: **missed** (0.250x"));
    free(s);
    drop(&h);
    drop(&n);
}
END_TEST

START_TEST(test_markdown_latency_lower_is_better)
{
    hb_result_t h, n, r;
    make(&h, "latency", "herald", 20000, 100000); /* ~100 us */
    make(&n, "latency", "nats", 20000, 800000);   /* ~800 us */
    make(&r, "latency", "redis", 20000, 1000000); /* ~1 ms */
    h.params.rate = n.params.rate = r.params.rate = 20000;
    hb_result_t *rs[] = {&h, &n, &r};
    char *s = render_md(rs, 3);
    ck_assert_ptr_nonnull(strstr(s, "open loop at 20.0k msgs/s"));
    ck_assert_ptr_nonnull(strstr(s, "Herald is ahead of nats-server on p99 latency"));
    ck_assert_ptr_nonnull(strstr(s, "Target p99 <= half the better peer's: met"));
    ck_assert_ptr_nonnull(strstr(s, "against nats-server"));
    ck_assert_ptr_null(strstr(s, "(behind)"));
    free(s);
    drop(&h);
    drop(&n);
    drop(&r);
}
END_TEST

START_TEST(test_markdown_failed_and_skipped)
{
    hb_result_t h, n, r;
    make(&h, "mixed", "herald", 1e6, 5000);
    make(&n, "mixed", "nats", 1e6, 5000);
    make(&r, "mixed", "redis", 1e6, 5000);
    n.ok = 0;
    snprintf(n.error, sizeof n.error, "connection 3 closed");
    r.ok = 0;
    r.skipped = 1;
    snprintf(r.error, sizeof r.error, "no WebSocket");
    hb_result_t *rs[] = {&h, &n, &r};
    char *s = render_md(rs, 3);
    ck_assert_ptr_nonnull(strstr(s, "nats-server did not complete: connection 3 closed."));
    ck_assert_ptr_nonnull(strstr(s, "redis-server was not run: no WebSocket."));
    ck_assert_ptr_nonnull(strstr(s, "| delivered msgs/s | 1.00M | – | – |"));
    free(s);
    drop(&h);
    drop(&n);
    drop(&r);
}
END_TEST

START_TEST(test_markdown_idle_memory)
{
    hb_result_t h, n;
    make(&h, "idle", "herald", 0, 0);
    make(&n, "idle", "nats", 0, 0);
    h.published = h.delivered = h.expected = n.published = n.delivered = n.expected = 0;
    h.params.conns = n.params.conns = 10000;
    h.mem_per_conn = 700;
    n.mem_per_conn = 20480;
    hb_result_t *rs[] = {&h, &n};
    char *s = render_md(rs, 2);
    ck_assert_ptr_nonnull(strstr(s, "| memory per connection | 700 B | 20.0 KiB | 0.03x |"));
    ck_assert_ptr_nonnull(strstr(s, "Target <= 1 KB per idle connection: met (700 B)"));
    ck_assert_ptr_null(strstr(s, "delivered msgs/s"));
    free(s);
    drop(&h);
    drop(&n);
}
END_TEST

START_TEST(test_formatting)
{
    char b[32];
    ck_assert_str_eq(hb_fmt_si(b, sizeof b, 999), "999");
    ck_assert_str_eq(hb_fmt_si(b, sizeof b, 1234), "1.23k");
    ck_assert_str_eq(hb_fmt_si(b, sizeof b, 5.0e6), "5.00M");
    ck_assert_str_eq(hb_fmt_si(b, sizeof b, 774000), "774k");
    ck_assert_str_eq(hb_fmt_ns(b, sizeof b, 812), "812ns");
    ck_assert_str_eq(hb_fmt_ns(b, sizeof b, 81200), "81.2us");
    ck_assert_str_eq(hb_fmt_ns(b, sizeof b, 812000), "812us");
    ck_assert_str_eq(hb_fmt_ns(b, sizeof b, 1.2e6), "1.20ms");
    ck_assert_str_eq(hb_fmt_bytes(b, sizeof b, 512), "512 B");
    ck_assert_str_eq(hb_fmt_bytes(b, sizeof b, 1536), "1.5 KiB");
    ck_assert_str_eq(hb_fmt_bytes(b, sizeof b, 20.0 * 1024 * 1024), "20.0 MiB");
}
END_TEST

static Suite *report_suite(void)
{
    Suite *s = suite_create("bench_report");
    TCase *tc = tcase_create("json");
    tcase_add_test(tc, test_finish_rates_and_loss);
    tcase_add_test(tc, test_json_valid_and_complete);
    suite_add_tcase(s, tc);
    tc = tcase_create("markdown");
    tcase_add_test(tc, test_markdown_ratio_ahead);
    tcase_add_test(tc, test_markdown_states_behind);
    tcase_add_test(tc, test_markdown_latency_lower_is_better);
    tcase_add_test(tc, test_markdown_failed_and_skipped);
    tcase_add_test(tc, test_markdown_idle_memory);
    tcase_add_test(tc, test_formatting);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(report_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
