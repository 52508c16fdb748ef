/* SPDX-License-Identifier: MIT */
/* The PROXY protocol header parser (v1 and v2) and the proxy-from address list: no I/O. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "herald/status.h"
#include "proxy.h"

/*
 * Hand-written: Debian packages no PROXY protocol library (HAProxy's parser
 * lives inside HAProxy), and the format is small and fully specified by
 * HAProxy's proxy-protocol.txt. The parser is stateless: each call looks at
 * everything received so far, which the caller bounds (107 bytes for v1,
 * `v2_max` for v2), so re-reading it is cheap and there is no state to get
 * wrong between calls.
 */

static const uint8_t v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int fail(hr_proxy_hdr_t *h, const char *why)
{
    h->why = why;
    return HR_EPROTO;
}

/* ---- v1 ------------------------------------------------------------------------------- */

/* A decimal port: 0..65535, no sign, no leading zero (except "0" itself). */
static int v1_port(const char *s, size_t n, uint16_t *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* One address token of a v1 line: inet_pton is strict (dotted quad, RFC 4291 text). */
static int v1_addr(int family, const char *s, size_t n, uint8_t *out)
{
    char tmp[48];
    if (n == 0 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    return inet_pton(family, tmp, out) == 1 ? 0 : -1;
}

/*
 * "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN[ anything]\r\n",
 * at most 107 bytes. Until the CRLF arrives only the characters seen are
 * checked, so garbage fails at once rather than after 107 bytes.
 */
static int parse_v1(const uint8_t *p, size_t n, hr_proxy_hdr_t *h)
{
    size_t lim = n < HR_PROXY_V1_MAX ? n : HR_PROXY_V1_MAX, end = 0;
    for (size_t i = sizeof(v1_sig); i < lim; i++) {
        if (p[i] == '\r') {
            if (i + 1 < lim && p[i + 1] != '\n')
                return fail(h, "v1: CR not followed by LF");
            if (i + 1 < lim) {
                end = i;
                break;
            }
            continue;
        }
        if (p[i] == '\n')
            return fail(h, "v1: line ends with LF, not CRLF");
        if (p[i] < 0x20 || p[i] > 0x7e)
            return fail(h, "v1: a byte that is not printable ASCII");
    }
    if (!end) {
        if (n >= HR_PROXY_V1_MAX)
            return fail(h, "v1: no CRLF within 107 bytes");
        return HR_EAGAIN;
    }
    const char *s = (const char *)p + sizeof(v1_sig), *e = (const char *)p + end;
    const char *tok[6];
    size_t len[6];
    int k = 0;
    while (s <= e && k < 6) { /* split on single spaces */
        const char *sp = memchr(s, ' ', (size_t)(e - s));
        const char *stop = sp ? sp : e;
        tok[k] = s;
        len[k++] = (size_t)(stop - s);
        if (!sp)
            break;
        s = sp + 1;
    }
    h->len = end + 2;
    if (len[0] == 7 && !memcmp(tok[0], "UNKNOWN", 7)) { /* the rest is ignored */
        h->local = 1;
        h->family = AF_UNSPEC;
        return HR_OK;
    }
    if (len[0] != 4 || (memcmp(tok[0], "TCP4", 4) != 0 && memcmp(tok[0], "TCP6", 4) != 0))
        return fail(h, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    if (k != 5 || tok[4] + len[4] != e)
        return fail(h, "v1: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' with single spaces");
    h->family = tok[0][3] == '4' ? AF_INET : AF_INET6;
    if (v1_addr(h->family, tok[1], len[1], h->src) != 0)
        return fail(h, "v1: bad source address");
    if (v1_addr(h->family, tok[2], len[2], h->dst) != 0)
        return fail(h, "v1: bad destination address");
    if (v1_port(tok[3], len[3], &h->sport) != 0 || v1_port(tok[4], len[4], &h->dport) != 0)
        return fail(h, "v1: bad port (0..65535, decimal, no leading zeros)");
    return HR_OK;
}

/* ---- v2 ------------------------------------------------------------------------------- */

/* The address block size each family needs (v2 spec section 2.2). */
static size_t v2_addr_len(uint8_t fam)
{
    switch (fam >> 4) {
    case 1:
        return 12; /* AF_INET: 4 + 4 + 2 + 2 */
    case 2:
        return 36; /* AF_INET6: 16 + 16 + 2 + 2 */
    case 3:
        return 216; /* AF_UNIX: 108 + 108 */
    default:
        return 0;
    }
}

static int parse_v2(const uint8_t *p, size_t n, size_t v2_max, hr_proxy_hdr_t *h)
{
    if (n > 12 && (p[12] >> 4) != 2)
        return fail(h, "v2: version is not 2");
    if (n > 12 && (p[12] & 0x0F) > 1)
        return fail(h, "v2: command is not LOCAL or PROXY");
    int local = n > 12 && (p[12] & 0x0F) == 0;
    if (n > 13 && !local) {
        uint8_t fam = p[13];
        /* UNSPEC, or a stream: TCP over IPv4/IPv6, or a UNIX stream (addresses unused). */
        if (fam != 0x00 && fam != 0x11 && fam != 0x21 && fam != 0x31)
            return fail(h, "v2: address family or transport is not UNSPEC, TCP4, TCP6 or "
                           "UNIX stream");
    }
    if (n < HR_PROXY_V2_HDR)
        return HR_EAGAIN;
    size_t len = (size_t)p[14] << 8 | p[15];
    if (HR_PROXY_V2_HDR + len > v2_max)
        return fail(h, "v2: header longer than this broker accepts");
    size_t alen = local ? 0 : v2_addr_len(p[13]);
    if (len < alen)
        return fail(h, "v2: length too short for the address family");
    if (n < HR_PROXY_V2_HDR + len)
        return HR_EAGAIN;
    const uint8_t *a = p + HR_PROXY_V2_HDR;
    /* The TLVs after the addresses are skipped, but they must tile the rest exactly. LOCAL
     * and UNSPEC carry nothing the receiver may use: their bytes are ignored as they are. */
    size_t off = local || p[13] >> 4 == 0 ? len : alen;
    while (off < len) {
        if (len - off < 3 || len - off - 3 < ((size_t)a[off + 1] << 8 | a[off + 2]))
            return fail(h, "v2: a TLV runs past the end of the header");
        off += 3 + ((size_t)a[off + 1] << 8 | a[off + 2]);
    }
    h->len = HR_PROXY_V2_HDR + len;
    uint8_t af = p[13] >> 4;
    if (local || (af != 1 && af != 2)) {
        /* LOCAL (a balancer's own health check), UNSPEC or UNIX: no client address. */
        h->local = 1;
        h->family = AF_UNSPEC;
        return HR_OK;
    }
    size_t al = af == 1 ? 4 : 16;
    h->family = al == 4 ? AF_INET : AF_INET6;
    memcpy(h->src, a, al);
    memcpy(h->dst, a + al, al);
    h->sport = (uint16_t)(a[2 * al] << 8 | a[2 * al + 1]);
    h->dport = (uint16_t)(a[2 * al + 2] << 8 | a[2 * al + 3]);
    return HR_OK;
}

int hr__proxy_parse(const uint8_t *p, size_t n, size_t v2_max, hr_proxy_hdr_t *h)
{
    memset(h, 0, sizeof(*h));
    size_t m1 = n < sizeof(v1_sig) ? n : sizeof(v1_sig);
    size_t m2 = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
    if (n && !memcmp(p, v1_sig, m1)) {
        if (n < sizeof(v1_sig))
            return HR_EAGAIN;
        h->version = 1;
        return parse_v1(p, n, h);
    }
    if (n && !memcmp(p, v2_sig, m2)) {
        if (n < sizeof(v2_sig))
            return HR_EAGAIN;
        h->version = 2;
        return parse_v2(p, n, v2_max, h);
    }
    return n ? HR_EINVAL : HR_EAGAIN;
}

/* ---- proxy-from ------------------------------------------------------------------------ */

static const uint8_t v4_mapped[12] = {[10] = 0xff, [11] = 0xff};

static int net_parse(const char *s, size_t n, hr_proxy_net_t *net, char *err, size_t errlen)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp)) {
        snprintf(err, errlen, "'%.*s' is not an IP address or CIDR block", (int)(n < 60 ? n : 60),
                 s);
        return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *slash = strchr(tmp, '/');
    if (slash)
        *slash = 0;
    memset(net, 0, sizeof(*net));
    if (inet_pton(AF_INET, tmp, net->addr) == 1)
        net->family = AF_INET;
    else if (inet_pton(AF_INET6, tmp, net->addr) == 1)
        net->family = AF_INET6;
    else {
        snprintf(err, errlen, "'%s' is not an IPv4 or IPv6 address", tmp);
        return -1;
    }
    unsigned max = net->family == AF_INET ? 32 : 128, bits = max;
    if (slash) {
        const char *b = slash + 1;
        size_t bl = strlen(b);
        bits = 0;
        if (bl == 0 || bl > 3 || (bl > 1 && b[0] == '0') || strspn(b, "0123456789") != bl ||
            (bits = (unsigned)atoi(b)) > max) {
            snprintf(err, errlen, "'%.*s': the prefix length must be 0..%u", (int)n, s, max);
            return -1;
        }
    }
    net->bits = (uint8_t)bits;
    for (unsigned i = bits; i < max; i++)
        if (net->addr[i / 8] & (0x80 >> (i % 8))) {
            snprintf(err, errlen, "'%.*s' has address bits set past the /%u prefix", (int)n, s,
                     bits);
            return -1;
        }
    /* Peers with IPv4-mapped addresses are matched as IPv4, so such an entry is IPv4 too. */
    if (net->family == AF_INET6 && bits >= 96 && !memcmp(net->addr, v4_mapped, 12)) {
        memmove(net->addr, net->addr + 12, 4);
        memset(net->addr + 4, 0, 12);
        net->family = AF_INET;
        net->bits = (uint8_t)(bits - 96);
    }
    return 0;
}

int hr__proxy_nets_parse(const char *list, hr_proxy_net_t *nets, char *err, size_t errlen)
{
    int k = 0;
    const char *s = list;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strcspn(s, ",");
        const char *next = s[n] ? s + n + 1 : s + n;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n == 0 && !*next && k > 0)
            break; /* a trailing comma */
        if (k == HR_PROXY_NETS_MAX) {
            snprintf(err, errlen, "more than %d addresses or blocks", HR_PROXY_NETS_MAX);
            return -1;
        }
        if (net_parse(s, n, &nets[k], err, errlen) != 0)
            return -1;
        k++;
        s = next;
    }
    return k;
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    return !rest || ((a[whole] ^ b[whole]) & (0xFF00 >> rest)) == 0;
}

int hr__proxy_nets_match(const hr_proxy_net_t *nets, int n, int family, const uint8_t *addr)
{
    if (family == AF_INET6 && !memcmp(addr, v4_mapped, 12)) {
        family = AF_INET;
        addr += 12;
    }
    for (int i = 0; i < n; i++)
        if (nets[i].family == family && prefix_eq(nets[i].addr, addr, nets[i].bits))
            return 1;
    return 0;
}

/* ---- settings ------------------------------------------------------------------------- */

int hr__proxy_ports(const char *v)
{
    if (!strcmp(v, "off"))
        return 0;
    if (!strcmp(v, "tcp"))
        return HR_PROXY_TCP;
    if (!strcmp(v, "ws"))
        return HR_PROXY_WS;
    if (!strcmp(v, "both"))
        return HR_PROXY_TCP | HR_PROXY_WS;
    return -1;
}

int hr__proxy_setting_check(const char *name, const char *value, char *err, size_t errlen)
{
    if (!strcmp(name, "proxy-protocol") && hr__proxy_ports(value) < 0) {
        snprintf(err, errlen, "setting 'proxy-protocol': '%s' is not off, tcp, ws or both", value);
        return -1;
    }
    if (!strcmp(name, "proxy-from")) {
        hr_proxy_net_t nets[HR_PROXY_NETS_MAX];
        char why[160];
        if (hr__proxy_nets_parse(value, nets, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "setting 'proxy-from': %s", why);
            return -1;
        }
    }
    return 0;
}
