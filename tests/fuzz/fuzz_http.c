/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the HTTP request head scanner and parser of the WebSocket port. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void in_bounds(hr_slice_t s, const char *p, size_t n)
{
    if (s.p)
        CHECK(s.p >= p && s.p + s.n <= p + n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1); /* exact size: ASan sees any over-read */
    if (!p)
        return 0;
    memcpy(p, data, size);
    size_t hl = hr__http_head_end(p, size);
    CHECK(hl <= size);
    if (hl) {
        /* It ends with an empty line: LF LF, or LF CR LF (bare LFs are accepted). */
        CHECK(hl >= 2 && p[hl - 1] == '\n' &&
              (p[hl - 2] == '\n' || (hl >= 3 && p[hl - 2] == '\r' && p[hl - 3] == '\n')));
        hr_http_req_t rq;
        if (hr__http_parse(&rq, p, hl) == HR_OK) {
            hr_slice_t all[] = {rq.path,   rq.upgrade,    rq.connection,
                                rq.ws_key, rq.ws_version, rq.origin};
            for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
                in_bounds(all[i], p, hl);
            char accept[29];
            if (hr__http_ws_accept(rq.ws_key, accept) == HR_OK)
                CHECK(strlen(accept) == 28);
            (void)hr__http_has_token(rq.connection, "upgrade");
            (void)hr__http_list_has(rq.upgrade, rq.connection);
        }
    }
    /* The whole input as a comma-separated list searched for its own first token. */
    hr_slice_t l = {p, size};
    const char *comma = memchr(p, ',', size);
    hr_slice_t tok = {p, comma ? (size_t)(comma - p) : size};
    (void)hr__http_list_has(l, tok);
    free(p);
    return 0;
}
