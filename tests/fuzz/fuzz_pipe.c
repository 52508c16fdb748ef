/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the exec stage's answer reader (length-prefixed frames, strict map decode). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "herald/protocol.h"
#include "mpread.h"
#include "pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int within(hr_slice_t s, const char *p, size_t n)
{
    return !s.n || ((const char *)s.p >= p && (const char *)s.p + s.n <= p + n);
}

/* Each frame the child wrote, exactly as pipeline.c's reader hands it over. */
static int on_frame(void *arg, const char *body, size_t n)
{
    (void)arg;
    char *copy = malloc(n ? n : 1); /* exactly n bytes: ASan sees any over-read */
    CHECK(copy);
    if (n)
        memcpy(copy, body, n);
    hr_pipe_answer_t a;
    const char *why = NULL;
    int r = hr__pipe_answer_decode(copy, n, &a, &why);
    if (r == HR_OK) {
        CHECK(a.action == HR_PIPE_PASS || a.action == HR_PIPE_REJECT);
        CHECK(within(a.payload, copy, n) && within(a.headers, copy, n));
        CHECK(within(a.reason, copy, n) && a.reason.n <= HR_PIPE_REASON_MAX);
        if (a.headers.n) /* what a rewrite puts into a delivery is one valid map */
            CHECK(hr__mp_check(a.headers.p, a.headers.n));
    } else {
        CHECK(r == HR_EPROTO && why && *why);
    }
    free(copy);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Fed in two reads split where the first byte says, as a pipe may deliver it. */
    hr_buf_t partial;
    hr_buf_init(&partial);
    size_t cut = size ? data[0] % (size + 1) : 0;
    int r = hr_lp_feed(&partial, (const char *)data, cut, 1 << 20, on_frame, NULL);
    if (r == HR_OK)
        hr_lp_feed(&partial, (const char *)data + cut, size - cut, 1 << 20, on_frame, NULL);
    hr_buf_destroy(&partial);
    return 0;
}
