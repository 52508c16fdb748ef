/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/http.c: request heads at every split point, parsing, accept key. */
#include <check.h>
#include <http_parser.h>
#include <string.h>

#include "hr_check.h"
#include "http.h"

static const char UPGRADE[] = "GET /?room=1 HTTP/1.1\r\n"
                              "Host: 127.0.0.1:7401\r\n"
                              "Upgrade: WebSocket\r\n"
                              "Connection: keep-alive, Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Protocol: chat\r\n"
                              "Sec-WebSocket-Protocol: x, herald.v1\r\n"
                              "Origin: http://good.example\r\n"
                              "\r\n";

static int slice_is(hr_slice_t s, const char *lit)
{
    return s.p && s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* The end of the head is found exactly when its last byte arrives, however it is split. */
START_TEST(head_end_every_split)
{
    size_t n = sizeof(UPGRADE) - 1;
    char with_frame[sizeof(UPGRADE) + 8];
    memcpy(with_frame, UPGRADE, n);
    memcpy(with_frame + n, "\x82\x80\x01\x02\x03\x04", 6);
    for (size_t len = 0; len <= n + 6; len++) {
        size_t want = len >= n ? n : 0;
        ck_assert_uint_eq(hr__http_head_end(with_frame, len), want);
    }
    ck_assert_uint_eq(hr__http_head_end("GET / HTTP/1.1\n\n", 16), 16); /* bare LF */
    ck_assert_uint_eq(hr__http_head_end("\r\n\r", 3), 0);
}
END_TEST

START_TEST(parse_upgrade)
{
    hr_http_req_t r;
    size_t n = hr__http_head_end(UPGRADE, sizeof(UPGRADE) - 1);
    ck_assert_int_eq(hr__http_parse(&r, UPGRADE, n), HR_OK);
    ck_assert_uint_eq(r.method, HTTP_GET);
    ck_assert_uint_eq(r.major, 1);
    ck_assert_uint_eq(r.minor, 1);
    ck_assert(slice_is(r.path, "/"));
    ck_assert(slice_is(r.upgrade, "WebSocket"));
    ck_assert(hr__http_has_token(r.upgrade, "websocket"));
    ck_assert(hr__http_has_token(r.connection, "upgrade"));
    ck_assert(!hr__http_has_token(r.connection, "close"));
    ck_assert(slice_is(r.ws_key, "dGhlIHNhbXBsZSBub25jZQ=="));
    ck_assert(slice_is(r.ws_version, "13"));
    ck_assert(slice_is(r.origin, "http://good.example"));
    ck_assert_uint_eq(r.protocols, 2);
    ck_assert_uint_eq(r.herald_v1, 1);
    ck_assert_uint_eq(r.dup_key, 0);
}
END_TEST

START_TEST(parse_other_requests)
{
    static const char post[] = "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
    static const char dup[] =
        "GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\nsec-websocket-key: b\r\n\r\n";
    static const char old[] = "GET /healthz HTTP/1.0\r\n\r\n";
    hr_http_req_t r;
    ck_assert_int_eq(hr__http_parse(&r, post, sizeof(post) - 1), HR_OK);
    ck_assert_uint_eq(r.method, HTTP_POST);
    ck_assert(slice_is(r.path, "/metrics"));
    ck_assert_int_eq(hr__http_parse(&r, dup, sizeof(dup) - 1), HR_OK);
    ck_assert_uint_eq(r.dup_key, 1);
    ck_assert_int_eq(hr__http_parse(&r, old, sizeof(old) - 1), HR_OK);
    ck_assert_uint_eq(r.minor, 0);
    ck_assert(slice_is(r.path, "/healthz"));
    ck_assert(r.upgrade.p == NULL && r.protocols == 0);
}
END_TEST

START_TEST(parse_malformed)
{
    static const char *const bad[] = {
        "GARBAGE\x01 / HTTP/1.1\r\n\r\n",
        "GET / HTTP/9.x\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\nBad\x7f: x\r\n\r\n",
        "\r\n\r\n",
    };
    hr_http_req_t r;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(hr__http_parse(&r, bad[i], strlen(bad[i])) == HR_EPROTO, "accepted: %s",
                      bad[i]);
}
END_TEST

START_TEST(token_lists)
{
    static const char list[] = " a ,b,, Herald.V1\t, c";
    hr_slice_t l = {list, sizeof(list) - 1};
    ck_assert(hr__http_has_token(l, "herald.v1"));
    ck_assert(hr__http_has_token(l, "a"));
    ck_assert(hr__http_has_token(l, "c"));
    ck_assert(!hr__http_has_token(l, "herald"));
    ck_assert(!hr__http_has_token((hr_slice_t){NULL, 0}, "a"));
}
END_TEST

START_TEST(accept_key)
{
    char out[29];
    ck_assert_int_eq(hr__http_ws_accept((hr_slice_t){"dGhlIHNhbXBsZSBub25jZQ==", 24}, out), HR_OK);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455 section 1.3 */
    ck_assert_int_eq(hr__http_ws_accept((hr_slice_t){"dGhlIHNhbXBsZSBub25jZQ=", 23}, out),
                     HR_EPROTO);
    ck_assert_int_eq(hr__http_ws_accept((hr_slice_t){"dGhlIHNhbXBsZSBub25j*Q==", 24}, out),
                     HR_EPROTO);
    ck_assert_int_eq(hr__http_ws_accept((hr_slice_t){"dGhlIHNhbXBsZSBub25jZQ=A", 24}, out),
                     HR_EPROTO);
}
END_TEST

static int contains(const char *s, size_t n, const char *lit, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, lit, k) == 0)
            return 1;
    return 0;
}

START_TEST(response_format)
{
    hr_buf_t b;
    hr_buf_init(&b);
    ck_assert_int_eq(hr__http_response(&b, 405, "Allow: GET\r\n", "text/plain", "no\n", 3), HR_OK);
    const char *s = (const char *)b.base;
    ck_assert(b.len > 20 && memcmp(s, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
    ck_assert(contains(s, b.len, "Content-Length: 3\r\n", 19));
    ck_assert(contains(s, b.len, "Connection: close\r\n", 19));
    ck_assert(contains(s, b.len, "Allow: GET\r\n", 12));
    ck_assert(b.len >= 7 && memcmp(s + b.len - 7, "\r\n\r\nno\n", 7) == 0);
    hr_buf_destroy(&b);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *t = tcase_create("request");
    tcase_add_test(t, head_end_every_split);
    tcase_add_test(t, parse_upgrade);
    tcase_add_test(t, parse_other_requests);
    tcase_add_test(t, parse_malformed);
    tcase_add_test(t, token_lists);
    suite_add_tcase(s, t);
    t = tcase_create("response");
    tcase_add_test(t, accept_key);
    tcase_add_test(t, response_format);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(http_suite)
