/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the PROXY protocol header parser and the proxy-from list parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz_check.h"
#include "herald/status.h"
#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The class of a result: once a prefix is decided, every longer input must agree. */
static int decided(int r)
{
    return r == HR_OK || r == HR_EPROTO || r == HR_EINVAL;
}

/*
 * The parser is given everything received so far, so it must be consistent
 * across prefixes: "need more" until some length decides, then the same
 * answer (the same header length, or the same refusal) for every longer
 * input. A v2 limit of 512 bytes keeps the prefix walk short; the whole
 * input is also parsed once with the largest limit a v2 length can reach.
 */
static void parser(const uint8_t *p, size_t n)
{
    hr_proxy_hdr_t h, first;
    int r0 = HR_EAGAIN;
    size_t upto = n < 600 ? n : 600;
    for (size_t k = 0; k <= upto; k++) {
        int r = hr__proxy_parse(p, k, 512, &h);
        CHECK(r == HR_EAGAIN || decided(r));
        if (r == HR_EPROTO)
            CHECK(h.why != NULL);
        if (r == HR_OK) {
            CHECK(h.len <= k);
            CHECK(h.version == 1 ? h.len <= HR_PROXY_V1_MAX : h.len >= HR_PROXY_V2_HDR);
            CHECK(h.len <= 512 || h.version == 1);
            CHECK(h.local ? h.family == AF_UNSPEC : (h.family == AF_INET || h.family == AF_INET6));
        }
        if (decided(r0)) {
            CHECK(r == r0);
            if (r == HR_OK)
                CHECK(h.len == first.len && h.local == first.local && h.family == first.family &&
                      !memcmp(h.src, first.src, 16) && h.sport == first.sport);
        } else if (decided(r)) {
            CHECK(k > 0);
            r0 = r;
            first = h;
        }
    }
    int r = hr__proxy_parse(p, n, 16 + 65535, &h);
    CHECK(r == HR_EAGAIN || decided(r));
    if (r == HR_OK)
        CHECK(h.len <= n);
}

/* The input as a proxy-from list: every block parsed has no host bits, and matches itself. */
static void nets(const uint8_t *data, size_t size)
{
    char list[1024];
    hr_proxy_net_t nets[HR_PROXY_NETS_MAX];
    char err[200];
    size_t n = size < sizeof(list) - 1 ? size : sizeof(list) - 1;
    memcpy(list, data, n);
    list[n] = 0;
    int k = hr__proxy_nets_parse(list, nets, err, sizeof(err));
    CHECK(k >= -1 && k <= HR_PROXY_NETS_MAX);
    for (int i = 0; i < k; i++) {
        unsigned max = nets[i].family == AF_INET ? 32 : 128;
        CHECK(nets[i].family == AF_INET || nets[i].family == AF_INET6);
        CHECK(nets[i].bits <= max);
        for (unsigned b = nets[i].bits; b < max; b++)
            CHECK(!(nets[i].addr[b / 8] & (0x80 >> (b % 8))));
        CHECK(hr__proxy_nets_match(nets, k, nets[i].family, nets[i].addr));
    }
    if (size >= 16)
        (void)hr__proxy_nets_match(nets, k > 0 ? k : 0, data[0] & 1 ? AF_INET6 : AF_INET, data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1); /* exact size: ASan sees any over-read */
    if (!p)
        return 0;
    memcpy(p, data, size);
    parser(p, size);
    nets(p, size);
    free(p);
    return 0;
}
