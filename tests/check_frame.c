/* SPDX-License-Identifier: MIT */
/* Framing (protocol/frame.c): TCP length prefix and WebSocket headers at every split point. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "herald/protocol.h"
#include "hr_check.h"

/* Parses the first `n` bytes of `p` from an exact-size copy, so ASan sees any over-read. */
static int parse_exact(const uint8_t *p, size_t n, uint64_t max, hr_ws_header_t *h)
{
    uint8_t *q = malloc(n ? n : 1);
    memcpy(q, p, n);
    int r = hr_ws_header_parse(q, n, max, h);
    free(q);
    return r;
}

START_TEST(lp_prefix)
{
    uint8_t b[HR_LP_PREFIX + 3] = {0};
    hr_slice_t body;
    size_t used;
    hr_lp_put(b, 3);
    memcpy(b + HR_LP_PREFIX, "\x92\x05\x01", 3);
    ck_assert(memcmp(b, "\0\0\0\3", 4) == 0);
    ck_assert_uint_eq(hr_lp_get(b), 3);
    for (size_t k = 0; k < sizeof(b); k++) {
        ck_assert_int_eq(hr_lp_next(b, k, 1024, &body, &used), HR_EAGAIN);
        ck_assert_uint_eq(used, k < HR_LP_PREFIX ? 0 : sizeof(b)); /* the size once known */
    }
    ck_assert_int_eq(hr_lp_next(b, sizeof(b), 1024, &body, &used), HR_OK);
    ck_assert_uint_eq(used, sizeof(b));
    ck_assert(body.n == 3 && body.p == (const char *)b + HR_LP_PREFIX);
    ck_assert_int_eq(hr_lp_next(b, sizeof(b), 2, &body, &used), HR_ETOOBIG);
    uint8_t big[4];
    hr_lp_put(big, 0xfffffffe);
    ck_assert_uint_eq(hr_lp_get(big), 0xfffffffe);
    ck_assert_int_eq(hr_lp_next(big, 4, 1 << 20, &body, &used), HR_ETOOBIG);
}
END_TEST

/* The lengths at each boundary of the 7-, 16- and 64-bit encodings. */
static const uint64_t lengths[] = {0, 1, 125, 126, 127, 65535, 65536, 1ull << 32, UINT64_MAX >> 1};

static size_t expected_hdr(uint64_t len, int masked)
{
    return (len < 126 ? 2 : len <= 0xffff ? 4 : 10) + (masked ? 4 : 0);
}

/* Every length, masked or not, built then parsed from every prefix of the header. */
START_TEST(ws_every_split_point)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        for (int masked = 0; masked < 2; masked++) {
            uint8_t out[HR_WS_HDR_MAX_MASKED];
            hr_ws_header_t h;
            int fin = (int)(i & 1), op = masked ? 2 : 9;
            size_t hl = hr_ws_header_build(out, fin, op, lengths[i], masked ? key : NULL);
            ck_assert_uint_eq(hl, expected_hdr(lengths[i], masked));
            ck_assert_uint_le(hl, masked ? HR_WS_HDR_MAX_MASKED : HR_WS_HDR_MAX);
            for (size_t k = 0; k < hl; k++)
                ck_assert_int_eq(parse_exact(out, k, UINT64_MAX, &h), HR_EAGAIN);
            ck_assert_int_eq(parse_exact(out, hl, UINT64_MAX, &h), HR_OK);
            ck_assert_uint_eq(h.hdr_len, hl);
            ck_assert_uint_eq(h.len, lengths[i]);
            ck_assert_int_eq(h.fin, fin);
            ck_assert_int_eq(h.opcode, op);
            ck_assert_int_eq(h.masked, masked);
            ck_assert_int_eq(h.rsv, 0);
            ck_assert(memcmp(h.mask, masked ? key : (const uint8_t *)"\0\0\0\0", 4) == 0);
        }
    }
}
END_TEST

/* A length over `max` is refused from the length alone, before the mask key arrives. */
START_TEST(ws_too_large)
{
    static const uint8_t key[4] = {1, 2, 3, 4};
    uint8_t out[HR_WS_HDR_MAX_MASKED];
    hr_ws_header_t h;
    for (size_t i = 1; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        size_t hl = hr_ws_header_build(out, 1, 2, lengths[i], key);
        ck_assert_int_eq(parse_exact(out, hl - 4, lengths[i] - 1, &h), HR_ETOOBIG);
        ck_assert_int_eq(parse_exact(out, hl, lengths[i] - 1, &h), HR_ETOOBIG);
        ck_assert_int_eq(parse_exact(out, hl, lengths[i], &h), HR_OK);
    }
    /* a 64-bit length with its most significant bit set */
    static const uint8_t msb[] = {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_int_eq(parse_exact(msb, sizeof(msb), UINT64_MAX, &h), HR_EPROTO);
    static const uint8_t max64[] = {0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ck_assert_int_eq(parse_exact(max64, sizeof(max64), UINT64_MAX, &h), HR_EPROTO);
}
END_TEST

/* The examples of RFC 6455 section 5.7, reserved bits, a non-minimal length. */
START_TEST(ws_rfc_examples)
{
    hr_ws_header_t h;
    static const uint8_t hello[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    ck_assert_int_eq(parse_exact(hello, sizeof(hello), 125, &h), HR_OK);
    ck_assert(h.fin && h.opcode == 1 && !h.masked && h.len == 5 && h.hdr_len == 2);

    uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ck_assert_int_eq(parse_exact(masked, sizeof(masked), 125, &h), HR_OK);
    ck_assert(h.masked && h.len == 5 && h.hdr_len == 6);
    /* unmasking in two pieces gives the same as in one */
    hr_ws_mask(masked + 6, 2, h.mask, 0);
    hr_ws_mask(masked + 8, 3, h.mask, 2);
    ck_assert(memcmp(masked + 6, "Hello", 5) == 0);

    static const uint8_t frag[] = {0x01, 0x03, 'H', 'e', 'l'};
    ck_assert_int_eq(parse_exact(frag, sizeof(frag), 125, &h), HR_OK);
    ck_assert(!h.fin && h.opcode == 1);

    static const uint8_t b256[] = {0x82, 0x7e, 0x01, 0x00};
    ck_assert_int_eq(parse_exact(b256, sizeof(b256), 1 << 20, &h), HR_OK);
    ck_assert(h.len == 256 && h.hdr_len == 4);
    static const uint8_t b64k[] = {0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0};
    ck_assert_int_eq(parse_exact(b64k, sizeof(b64k), 1 << 20, &h), HR_OK);
    ck_assert(h.len == 65536 && h.hdr_len == 10);

    static const uint8_t rsv[] = {0xc2, 0x00};
    ck_assert_int_eq(parse_exact(rsv, sizeof(rsv), 125, &h), HR_OK);
    ck_assert_int_eq(h.rsv, 4); /* RSV1: left to the caller to refuse */
    static const uint8_t nonminimal[] = {0x82, 0x7e, 0x00, 0x05};
    ck_assert_int_eq(parse_exact(nonminimal, sizeof(nonminimal), 125, &h), HR_OK);
    ck_assert_uint_eq(h.len, 5);

    /* the server's shared-delivery header is the unmasked final one */
    uint8_t a[HR_WS_HDR_MAX], b[HR_WS_HDR_MAX];
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        size_t n = hr_ws_frame_header(a, 2, lengths[i]);
        ck_assert_uint_eq(n, hr_ws_header_build(b, 1, 2, lengths[i], NULL));
        ck_assert(memcmp(a, b, n) == 0);
    }
}
END_TEST

static Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *t = tcase_create("lp");
    tcase_add_test(t, lp_prefix);
    suite_add_tcase(s, t);
    t = tcase_create("ws");
    tcase_add_test(t, ws_every_split_point);
    tcase_add_test(t, ws_too_large);
    tcase_add_test(t, ws_rfc_examples);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(frame_suite)
