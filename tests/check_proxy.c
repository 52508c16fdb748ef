/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/proxy.c: PROXY v1/v2 headers at every split point, proxy-from lists. */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "hr_check.h"
#include "proxy.h"
#include "server.h"

#define LIMIT 4096

static int parse(const void *p, size_t n, hr_proxy_hdr_t *h)
{
    return hr__proxy_parse(p, n, LIMIT, h);
}

/*
 * `hdr` (n bytes) is one complete header of `len` bytes followed by other
 * bytes: every strict prefix shorter than it needs more, and every longer
 * input parses to the same header, consuming exactly `len`.
 */
static void every_split(const uint8_t *hdr, size_t n, size_t len, int version)
{
    hr_proxy_hdr_t h;
    for (size_t i = 0; i < len; i++) {
        ck_assert_int_eq(parse(hdr, i, &h), HR_EAGAIN);
        size_t sig = version == 1 ? 6 : 12;
        ck_assert_int_eq(h.version, i >= sig ? version : 0);
    }
    for (size_t i = len; i <= n; i++) {
        ck_assert_int_eq(parse(hdr, i, &h), HR_OK);
        ck_assert_uint_eq(h.len, len);
        ck_assert_int_eq(h.version, version);
    }
}

static const char *v1_err(const char *line)
{
    hr_proxy_hdr_t h;
    int r = parse(line, strlen(line), &h);
    ck_assert_msg(r == HR_EPROTO, "'%s': %d", line, r);
    ck_assert_ptr_nonnull(h.why);
    return h.why;
}

/* ---- v1 -------------------------------------------------------------------------------- */

START_TEST(v1_tcp4)
{
    const char *s = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 7400\r\n\x00\x00\x00\x05";
    size_t hl = strlen("PROXY TCP4 203.0.113.7 10.0.0.1 51000 7400\r\n");
    hr_proxy_hdr_t h;
    ck_assert_int_eq(parse(s, hl + 4, &h), HR_OK);
    ck_assert_uint_eq(h.len, hl);
    ck_assert_int_eq(h.family, AF_INET);
    ck_assert_int_eq(h.local, 0);
    uint8_t a[4];
    inet_pton(AF_INET, "203.0.113.7", a);
    ck_assert_mem_eq(h.src, a, 4);
    inet_pton(AF_INET, "10.0.0.1", a);
    ck_assert_mem_eq(h.dst, a, 4);
    ck_assert_uint_eq(h.sport, 51000);
    ck_assert_uint_eq(h.dport, 7400);
    every_split((const uint8_t *)s, hl + 4, hl, 1);
}
END_TEST

START_TEST(v1_tcp6)
{
    const char *s = "PROXY TCP6 2001:db8::7 ::1 0 65535\r\nGET / HTTP/1.1\r\n";
    size_t hl = strlen("PROXY TCP6 2001:db8::7 ::1 0 65535\r\n");
    hr_proxy_hdr_t h;
    ck_assert_int_eq(parse(s, strlen(s), &h), HR_OK);
    ck_assert_uint_eq(h.len, hl);
    ck_assert_int_eq(h.family, AF_INET6);
    uint8_t a[16];
    inet_pton(AF_INET6, "2001:db8::7", a);
    ck_assert_mem_eq(h.src, a, 16);
    inet_pton(AF_INET6, "::1", a);
    ck_assert_mem_eq(h.dst, a, 16);
    ck_assert_uint_eq(h.sport, 0);
    ck_assert_uint_eq(h.dport, 65535);
    every_split((const uint8_t *)s, strlen(s), hl, 1);
}
END_TEST

START_TEST(v1_unknown)
{
    hr_proxy_hdr_t h;
    const char *a = "PROXY UNKNOWN\r\n", *b = "PROXY UNKNOWN ffff:: ffff:: 1 2\r\n";
    ck_assert_int_eq(parse(a, strlen(a), &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    ck_assert_int_eq(h.family, AF_UNSPEC);
    ck_assert_uint_eq(h.len, strlen(a));
    ck_assert_int_eq(parse(b, strlen(b), &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    ck_assert_uint_eq(h.len, strlen(b));
    every_split((const uint8_t *)b, strlen(b), strlen(b), 1);
}
END_TEST

/* The longest line is 107 bytes with its CRLF; one more is refused, not waited for. */
START_TEST(v1_length)
{
    char line[200];
    hr_proxy_hdr_t h;
    memset(line, 'x', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    memcpy(line + 105, "\r\n", 2);
    ck_assert_int_eq(parse(line, 107, &h), HR_OK);
    ck_assert_uint_eq(h.len, 107);
    memset(line, 'x', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    ck_assert_int_eq(parse(line, 106, &h), HR_EAGAIN);
    ck_assert_int_eq(parse(line, 107, &h), HR_EPROTO);
    ck_assert_int_eq(parse(line, 200, &h), HR_EPROTO);
    memcpy(line + 106, "\r\n", 2); /* a CRLF at 107..108 is too late */
    ck_assert_int_eq(parse(line, 108, &h), HR_EPROTO);
    ck_assert_int_eq(parse(line, 107, &h), HR_EPROTO);
    ck_assert_int_eq(parse(line, 106, &h), HR_EAGAIN);
}
END_TEST

START_TEST(v1_malformed)
{
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), "v1: CR not followed by LF");
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), "v1: line ends with LF, not CRLF");
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4\t5"), "v1: a byte that is not printable ASCII");
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 \x80"), "v1: a byte that is not printable ASCII");
    const char *proto = "v1: protocol is not TCP4, TCP6 or UNKNOWN";
    ck_assert_str_eq(v1_err("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), proto);
    ck_assert_str_eq(v1_err("PROXY \r\n"), proto);
    ck_assert_str_eq(v1_err("PROXY UNKNOWNX\r\n"), proto);
    ck_assert_str_eq(v1_err("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), proto);
    const char *shape = "v1: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' with single spaces";
    ck_assert_str_eq(v1_err("PROXY TCP4\r\n"), shape);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), shape);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), shape);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), shape);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), shape);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"), "v1: bad source address");
    ck_assert_str_eq(v1_err("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), "v1: bad source address");
    ck_assert_str_eq(v1_err("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), "v1: bad source address");
    ck_assert_str_eq(v1_err("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), "v1: bad source address");
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n"), "v1: bad destination address");
    ck_assert_str_eq(v1_err("PROXY TCP6 ::1 ::g 1 2\r\n"), "v1: bad destination address");
    ck_assert_str_eq(v1_err("PROXY TCP6 ::1 " /* 48 characters: longer than any address */
                            "0000:0000:0000:0000:0000:0000:0000:0000:00000000 1 2\r\n"),
                     "v1: bad destination address");
    const char *port = "v1: bad port (0..65535, decimal, no leading zeros)";
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), port);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), port);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n"), port);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), port);
    ck_assert_str_eq(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n"), port);
}
END_TEST

/* ---- not a header ---------------------------------------------------------------------- */

START_TEST(not_proxy)
{
    hr_proxy_hdr_t h;
    ck_assert_int_eq(parse("", 0, &h), HR_EAGAIN);
    ck_assert_int_eq(parse("PRO", 3, &h), HR_EAGAIN);
    ck_assert_int_eq(h.version, 0);
    ck_assert_int_eq(parse("\r\n\r\n\0", 5, &h), HR_EAGAIN);
    ck_assert_int_eq(h.version, 0);
    ck_assert_int_eq(parse("GET / HTTP/1.1\r\n", 16, &h), HR_EINVAL);
    ck_assert_int_eq(parse("\0\0\0\x05\x92", 5, &h), HR_EINVAL);
    ck_assert_int_eq(parse("PROXX", 5, &h), HR_EINVAL);
    ck_assert_int_eq(parse("PROXY\r\n", 7, &h), HR_EINVAL);
    ck_assert_int_eq(parse("\r\n\r\n\0\r\nQUIT!", 12, &h), HR_EINVAL);
    ck_assert_int_eq(parse("\r\n\r\nGET", 7, &h), HR_EINVAL);
}
END_TEST

/* ---- v2 -------------------------------------------------------------------------------- */

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: signature, `vc`, `fam`, the length of `body`, `body`; returns its size. */
static size_t v2(uint8_t *out, uint8_t vc, uint8_t fam, const void *body, size_t blen)
{
    memcpy(out, sig, 12);
    out[12] = vc;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

START_TEST(v2_tcp4)
{
    uint8_t b[64], body[12 + 9] = {203, 0, 113, 7, 10, 0, 0, 1, 0xC7, 0x38, 0x1C, 0xE8};
    /* Two TLVs after the addresses (ALPN "h2", a NOOP of 0 bytes): skipped. */
    memcpy(body + 12, "\x01\x00\x02h2\x04\x00\x00", 8);
    size_t n = v2(b, 0x21, 0x11, body, 20);
    memcpy(b + n, "\0\0\0\x05", 4);
    hr_proxy_hdr_t h;
    ck_assert_int_eq(parse(b, n + 4, &h), HR_OK);
    ck_assert_uint_eq(h.len, n);
    ck_assert_int_eq(h.version, 2);
    ck_assert_int_eq(h.local, 0);
    ck_assert_int_eq(h.family, AF_INET);
    ck_assert_mem_eq(h.src, body, 4);
    ck_assert_mem_eq(h.dst, body + 4, 4);
    ck_assert_uint_eq(h.sport, 51000);
    ck_assert_uint_eq(h.dport, 7400);
    every_split(b, n + 4, n, 2);
}
END_TEST

START_TEST(v2_tcp6)
{
    uint8_t b[64], body[36] = {0};
    inet_pton(AF_INET6, "2001:db8::7", body);
    inet_pton(AF_INET6, "2001:db8::1", body + 16);
    body[32] = 0xFF, body[33] = 0xFF, body[34] = 0, body[35] = 80;
    size_t n = v2(b, 0x21, 0x21, body, sizeof(body));
    hr_proxy_hdr_t h;
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.family, AF_INET6);
    ck_assert_mem_eq(h.src, body, 16);
    ck_assert_mem_eq(h.dst, body + 16, 16);
    ck_assert_uint_eq(h.sport, 65535);
    ck_assert_uint_eq(h.dport, 80);
    every_split(b, n, n, 2);
}
END_TEST

/* LOCAL (a health check), UNSPEC and UNIX streams carry no client address to use. */
START_TEST(v2_no_address)
{
    uint8_t b[300], body[216] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    hr_proxy_hdr_t h;
    size_t n = v2(b, 0x20, 0x00, NULL, 0);
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    ck_assert_int_eq(h.family, AF_UNSPEC);
    ck_assert_uint_eq(h.len, 16);
    every_split(b, n, n, 2);
    /* LOCAL ignores whatever family and addresses follow, even ones it could not carry. */
    n = v2(b, 0x20, 0x11, body, 12);
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    n = v2(b, 0x20, 0x12, body, 3);
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    ck_assert_uint_eq(h.len, 19);
    n = v2(b, 0x21, 0x00, NULL, 0);
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    n = v2(b, 0x21, 0x00, body, 5); /* UNSPEC: the bytes are skipped */
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    ck_assert_uint_eq(h.len, 21);
    n = v2(b, 0x21, 0x31, body, 216);
    ck_assert_int_eq(parse(b, n, &h), HR_OK);
    ck_assert_int_eq(h.local, 1);
    ck_assert_uint_eq(h.len, 232);
}
END_TEST

static const char *v2_err(uint8_t vc, uint8_t fam, const void *body, size_t blen, size_t max)
{
    uint8_t b[8192];
    hr_proxy_hdr_t h;
    size_t n = v2(b, vc, fam, body, blen);
    int r = hr__proxy_parse(b, n, max, &h);
    ck_assert_int_eq(r, HR_EPROTO);
    return h.why;
}

START_TEST(v2_malformed)
{
    uint8_t body[8192] = {0};
    ck_assert_str_eq(v2_err(0x11, 0x11, body, 12, LIMIT), "v2: version is not 2");
    ck_assert_str_eq(v2_err(0x31, 0x11, body, 12, LIMIT), "v2: version is not 2");
    ck_assert_str_eq(v2_err(0x22, 0x11, body, 12, LIMIT), "v2: command is not LOCAL or PROXY");
    ck_assert_str_eq(v2_err(0x2F, 0x11, body, 12, LIMIT), "v2: command is not LOCAL or PROXY");
    const char *fam = "v2: address family or transport is not UNSPEC, TCP4, TCP6 or UNIX stream";
    ck_assert_str_eq(v2_err(0x21, 0x12, body, 12, LIMIT), fam); /* UDP over IPv4 */
    ck_assert_str_eq(v2_err(0x21, 0x22, body, 36, LIMIT), fam); /* UDP over IPv6 */
    ck_assert_str_eq(v2_err(0x21, 0x32, body, 216, LIMIT), fam);
    ck_assert_str_eq(v2_err(0x21, 0x41, body, 12, LIMIT), fam);
    ck_assert_str_eq(v2_err(0x21, 0x10, body, 12, LIMIT), fam);
    ck_assert_str_eq(v2_err(0x21, 0x01, body, 12, LIMIT), fam);
    const char *shrt = "v2: length too short for the address family";
    ck_assert_str_eq(v2_err(0x21, 0x11, body, 11, LIMIT), shrt);
    ck_assert_str_eq(v2_err(0x21, 0x21, body, 35, LIMIT), shrt);
    ck_assert_str_eq(v2_err(0x21, 0x31, body, 215, LIMIT), shrt);
    const char *tlv = "v2: a TLV runs past the end of the header";
    ck_assert_str_eq(v2_err(0x21, 0x11, body, 13, LIMIT), tlv); /* 1 byte: no room for a TLV */
    ck_assert_str_eq(v2_err(0x21, 0x11, body, 14, LIMIT), tlv);
    body[12] = 0x02, body[13] = 0x00, body[14] = 0x02; /* declares 2 bytes, 1 there */
    ck_assert_str_eq(v2_err(0x21, 0x11, body, 16, LIMIT), tlv);
    body[14] = 0x01; /* fits */
    uint8_t b[64];
    hr_proxy_hdr_t h;
    ck_assert_int_eq(parse(b, v2(b, 0x21, 0x11, body, 16), &h), HR_OK);
    const char *big = "v2: header longer than this broker accepts";
    ck_assert_str_eq(v2_err(0x21, 0x11, body, LIMIT - 15, LIMIT), big);
    ck_assert_str_eq(v2_err(0x21, 0x11, body, 100, 115), big);
    /* Refused as soon as the 16 bytes declare it, without waiting for the rest. */
    v2(b, 0x21, 0x11, body, 0);
    b[14] = 0xFF, b[15] = 0xFF;
    ck_assert_int_eq(parse(b, 16, &h), HR_EPROTO);
    ck_assert_str_eq(h.why, big);
    /* Each byte is judged as it arrives: a bad version needs only 13 bytes. */
    v2(b, 0x11, 0x11, body, 12);
    ck_assert_int_eq(parse(b, 13, &h), HR_EPROTO);
    v2(b, 0x21, 0x12, body, 12);
    ck_assert_int_eq(parse(b, 13, &h), HR_EAGAIN);
    ck_assert_int_eq(parse(b, 14, &h), HR_EPROTO);
}
END_TEST

/* ---- proxy-from ------------------------------------------------------------------------ */

static int nets_parse(const char *list, hr_proxy_net_t *nets, char *err)
{
    return hr__proxy_nets_parse(list, nets, err, 200);
}

static int match(const hr_proxy_net_t *nets, int n, const char *addr)
{
    uint8_t a[16];
    if (inet_pton(AF_INET, addr, a) == 1)
        return hr__proxy_nets_match(nets, n, AF_INET, a);
    ck_assert_int_eq(inet_pton(AF_INET6, addr, a), 1);
    return hr__proxy_nets_match(nets, n, AF_INET6, a);
}

START_TEST(nets_lists)
{
    hr_proxy_net_t nets[HR_PROXY_NETS_MAX];
    char err[200];
    ck_assert_int_eq(nets_parse("", nets, err), 0);
    int n = nets_parse(" 10.0.0.0/8 ,192.168.1.7,\tfd00::/8, ::1,", nets, err);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(nets[0].family, AF_INET);
    ck_assert_int_eq(nets[0].bits, 8);
    ck_assert_int_eq(nets[1].bits, 32);
    ck_assert_int_eq(nets[2].family, AF_INET6);
    ck_assert_int_eq(nets[2].bits, 8);
    ck_assert_int_eq(nets[3].bits, 128);
    ck_assert(match(nets, n, "10.1.2.3"));
    ck_assert(match(nets, n, "10.255.255.255"));
    ck_assert(!match(nets, n, "11.0.0.0"));
    ck_assert(!match(nets, n, "9.255.255.255"));
    ck_assert(match(nets, n, "192.168.1.7"));
    ck_assert(!match(nets, n, "192.168.1.8"));
    ck_assert(match(nets, n, "fd12:3456::1"));
    ck_assert(!match(nets, n, "fe00::1"));
    ck_assert(match(nets, n, "::1"));
    ck_assert(!match(nets, n, "::2"));
    ck_assert(match(nets, n, "::ffff:10.9.8.7")); /* IPv4-mapped: matched as IPv4 */
    ck_assert(!match(nets, n, "::ffff:11.9.8.7"));
    ck_assert(!match(nets, n, "::a09:807")); /* IPv4-compatible is not mapped */
    ck_assert(!match(nets, 0, "10.1.2.3"));
    /* Prefixes that end inside a byte, and /0 for one family only. */
    ck_assert_int_eq(n = nets_parse("172.16.0.0/12,2001:db8:8000::/33,0.0.0.0/0", nets, err), 3);
    ck_assert(match(nets, 2, "172.31.255.255"));
    ck_assert(!match(nets, 2, "172.32.0.0"));
    ck_assert(match(nets, 2, "2001:db8:ffff::1"));
    ck_assert(!match(nets, 2, "2001:db8:7fff::1"));
    ck_assert(match(nets, n, "1.2.3.4"));
    ck_assert(!match(nets, n, "2001:db9::1"));
    /* An IPv4-mapped entry is an IPv4 one: it matches IPv4 peers and mapped peers alike. */
    ck_assert_int_eq(n = nets_parse("::ffff:192.168.1.7, ::ffff:10.1.2.0/120", nets, err), 2);
    ck_assert_int_eq(nets[0].family, AF_INET);
    ck_assert_int_eq(nets[0].bits, 32);
    ck_assert_int_eq(nets[1].family, AF_INET);
    ck_assert_int_eq(nets[1].bits, 24);
    ck_assert(match(nets, n, "192.168.1.7"));
    ck_assert(match(nets, n, "::ffff:192.168.1.7"));
    ck_assert(match(nets, n, "10.1.2.200"));
    ck_assert(match(nets, n, "::ffff:10.1.2.200"));
    ck_assert(!match(nets, n, "10.1.3.1"));
    ck_assert_int_eq(n = nets_parse("::ffff:0:0/96", nets, err), 1); /* every mapped address */
    ck_assert_int_eq(nets[0].family, AF_INET);
    ck_assert_int_eq(nets[0].bits, 0);
    ck_assert(match(nets, n, "1.2.3.4"));
    ck_assert(!match(nets, n, "2001:db9::1"));
    ck_assert_int_eq(n = nets_parse("::/0", nets, err), 1);
    ck_assert(match(nets, n, "2001:db9::1"));
    ck_assert(!match(nets, n, "1.2.3.4"));
}
END_TEST

static void nets_bad(const char *list, const char *why)
{
    hr_proxy_net_t nets[HR_PROXY_NETS_MAX];
    char err[200] = "";
    ck_assert_int_eq(nets_parse(list, nets, err), -1);
    ck_assert_msg(strstr(err, why) != NULL, "'%s': '%s' lacks '%s'", list, err, why);
}

START_TEST(nets_errors)
{
    nets_bad("10.0.0.0/33", "'10.0.0.0/33': the prefix length must be 0..32");
    nets_bad("::/129", "the prefix length must be 0..128");
    nets_bad("10.0.0.0/", "the prefix length");
    nets_bad("10.0.0.0/08", "the prefix length");
    nets_bad("10.0.0.0/-1", "the prefix length");
    nets_bad("10.0.0.0/8/8", "the prefix length");
    nets_bad("10.0.0.1/8", "'10.0.0.1/8' has address bits set past the /8 prefix");
    nets_bad("fd00::1/8", "has address bits set past the /8 prefix");
    nets_bad("10.0.0.256", "'10.0.0.256' is not an IPv4 or IPv6 address");
    nets_bad("lb.example.com", "is not an IPv4 or IPv6 address");
    nets_bad("10.0.0.1,,10.0.0.2", "'' is not an IP address or CIDR block");
    nets_bad(",", "is not an IP address or CIDR block");
    nets_bad("10.0.0.1 10.0.0.2", "is not an IPv4 or IPv6 address");
    char many[2048] = "";
    for (int i = 0; i <= HR_PROXY_NETS_MAX; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "10.0.0.%d,", i);
    nets_bad(many, "more than 64 addresses or blocks");
    char longer[100];
    memset(longer, '1', sizeof(longer) - 1);
    longer[99] = 0;
    nets_bad(longer, "is not an IP address or CIDR block");
}
END_TEST

/* ---- settings -------------------------------------------------------------------------- */

START_TEST(settings)
{
    char err[256];
    ck_assert_int_eq(hr__proxy_ports("off"), 0);
    ck_assert_int_eq(hr__proxy_ports("tcp"), 1 << HR_T_TCP);
    ck_assert_int_eq(hr__proxy_ports("ws"), 1 << HR_T_WS);
    ck_assert_int_eq(hr__proxy_ports("both"), 1 << HR_T_TCP | 1 << HR_T_WS);
    ck_assert_int_eq(hr__proxy_ports("on"), -1);
    ck_assert_int_eq(hr__proxy_setting_check("port", "garbage", err, sizeof(err)), 0);
    hr_config_t c;
    hr__config_defaults(&c);
    ck_assert_str_eq(c.proxy_protocol, "off");
    ck_assert_str_eq(c.proxy_from, "");
    ck_assert_int_eq(hr__config_set(&c, "proxy-protocol", "both", err, sizeof(err)), 0);
    ck_assert_str_eq(c.proxy_protocol, "both");
    ck_assert_int_eq(hr__config_set(&c, "proxy-protocol", "TCP", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "setting 'proxy-protocol': 'TCP' is not off, tcp, ws or both");
    ck_assert_str_eq(c.proxy_protocol, "both"); /* a refused value changes nothing */
    ck_assert_int_eq(hr__config_set(&c, "proxy-from", "10.0.0.0/8,::1", err, sizeof(err)), 0);
    ck_assert_int_eq(hr__config_set(&c, "proxy-from", "10.0.0.0/6", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "setting 'proxy-from': '10.0.0.0/6' has address bits set past the /6 "
                          "prefix");
    ck_assert_str_eq(c.proxy_from, "10.0.0.0/8,::1");
}
END_TEST

static Suite *proxy_suite(void)
{
    Suite *s = suite_create("proxy");
    TCase *t = tcase_create("v1");
    tcase_add_test(t, v1_tcp4);
    tcase_add_test(t, v1_tcp6);
    tcase_add_test(t, v1_unknown);
    tcase_add_test(t, v1_length);
    tcase_add_test(t, v1_malformed);
    tcase_add_test(t, not_proxy);
    suite_add_tcase(s, t);
    t = tcase_create("v2");
    tcase_add_test(t, v2_tcp4);
    tcase_add_test(t, v2_tcp6);
    tcase_add_test(t, v2_no_address);
    tcase_add_test(t, v2_malformed);
    suite_add_tcase(s, t);
    t = tcase_create("proxy_from");
    tcase_add_test(t, nets_lists);
    tcase_add_test(t, nets_errors);
    tcase_add_test(t, settings);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(proxy_suite)
