/* SPDX-License-Identifier: MIT */
/* libFuzzer target: SUB transform options, filter evaluation and projection over any payload. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "herald/protocol.h"
#include "mpread.h"
#include "xform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Heap copy of exactly `n` bytes, so ASan catches any over-read. */
static uint8_t *copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

static int is_map(const uint8_t *p, size_t n)
{
    hr_mp_t r;
    hr_mp_val_t v;
    hr__mp_init(&r, p, n);
    return hr__mp_check(p, n) && hr__mp_read(&r, &v) && v.kind == HR_MP_MAP;
}

/* The normalized field list decodes to itself: {fields: key} has the same key. */
static void check_key(const hr_xform_t *x)
{
    hr_slice_t k = hr__xform_fields_key(x);
    if (!k.n)
        return;
    size_t n = 8 + k.n;
    uint8_t *opts = malloc(n);
    CHECK(opts);
    memcpy(opts,
           "\x81\xa6"
           "fields",
           8);
    memcpy(opts + 8, k.p, k.n);
    hr_xform_t *y;
    const char *why;
    int rc = hr__xform_new(opts, n, 0, &y, &why);
    if (rc != HR_ENOMEM) {
        CHECK(rc == HR_OK && y);
        hr_slice_t k2 = hr__xform_fields_key(y);
        CHECK(k2.n == k.n && memcmp(k2.p, k.p, k.n) == 0);
        CHECK(y->fields_hash == x->fields_hash);
        hr__xform_free(&y);
    }
    free(opts);
}

/* 1 if the projection keeps the whole value at `path`: some listed field is `path` or leads to it.
 */
static int covered(const hr_xform_t *x, hr_slice_t path)
{
    const hr_xf_field_t *kids = x->fields;
    uint16_t nkids = x->nroots;
    const char *seg = path.p, *end = path.p + path.n;
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        size_t len = dot ? (size_t)(dot - seg) : (size_t)(end - seg);
        const hr_xf_field_t *f = NULL;
        for (uint16_t i = 0; i < nkids && !f; i++)
            if (kids[i].key.n == len && memcmp(kids[i].key.p, seg, len) == 0)
                f = kids + i;
        if (!f)
            return 0;
        if (!f->nkids)
            return 1;
        if (!dot)
            return 0;
        kids = x->fields + f->kids;
        nkids = f->nkids;
        seg = dot + 1;
    }
}

/* When the projection keeps every field the filter reads, the filter answers the same on it. */
static void check_filter_on_projection(const hr_xform_t *x, const uint8_t *pl, size_t n,
                                       const uint8_t *proj, size_t pn)
{
    if (!(x->flags & HR_XF_FILTER))
        return;
    for (uint16_t i = 0; i < x->nnodes; i++)
        if (x->nodes[i].path.n && !covered(x, x->nodes[i].path))
            return;
    CHECK(hr__xform_match(x, proj, pn) == hr__xform_match(x, pl, n));
}

static void check_projection(const hr_xform_t *x, const uint8_t *pl, size_t n)
{
    hr_buf_t b, again;
    hr_buf_init(&b);
    hr_buf_init(&again);
    int rc = hr__xform_project_buf(x, pl, n, &b);
    if (rc == HR_ENOMEM)
        goto out;
    CHECK(rc == ((x->flags & HR_XF_FIELDS) && is_map(pl, n)));
    if (rc == 1) {
        /* A well-formed map, no longer than the payload, and projecting it again changes nothing.
         */
        uint8_t *out = copy(b.base, b.len);
        CHECK(b.len <= n);
        CHECK(is_map(out, b.len));
        check_filter_on_projection(x, pl, n, out, b.len);
        rc = hr__xform_project_buf(x, out, b.len, &again);
        if (rc != HR_ENOMEM)
            CHECK(rc == 1 && again.len == b.len && memcmp(again.base, out, b.len) == 0);
        free(out);
    } else {
        CHECK(b.len == 0);
    }
out:
    hr_buf_destroy(&b);
    hr_buf_destroy(&again);
}

/*
 * Input: byte 0 bit 0 = exact topic; bytes 1-2 = length of the option map
 * (big-endian, clamped); then the options; the rest is the payload.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    int exact = data[0] & 1;
    size_t on = (size_t)data[1] << 8 | data[2];
    if (on > size - 3)
        on = size - 3;
    uint8_t *opts = copy(data + 3, on);
    uint8_t *pl = copy(data + 3 + on, size - 3 - on);
    size_t pn = size - 3 - on;

    hr_xform_t *x = (hr_xform_t *)1;
    const char *why = NULL;
    int rc = hr__xform_new(opts, on, exact, &x, &why);
    CHECK(rc == HR_OK || rc == HR_EOPTION || rc == HR_ENOMEM);
    if (rc != HR_OK) {
        CHECK(x == NULL);
        CHECK(rc != HR_EOPTION || (why && *why));
        goto out;
    }
    CHECK(why == NULL);
    if (!x)
        goto out;
    CHECK(x->flags != 0);
    CHECK(!(x->flags & HR_XF_PRESENCE) || (exact && x->presence.n <= HR_XFORM_PRESENCE_MAX));

    int m = hr__xform_match(x, pl, pn);
    CHECK(m == 0 || m == 1);
    CHECK(hr__xform_match(x, pl, pn) == m);
    /* Malformed bytes behave exactly like no payload at all. */
    if (!hr__mp_check(pl, pn))
        CHECK(hr__xform_match(x, NULL, 0) == m);

    hr_slice_t kv;
    if (hr__xform_conflate_key(x, pl, pn, &kv)) {
        CHECK(kv.p >= (const char *)pl && kv.p + kv.n <= (const char *)pl + pn);
        CHECK(hr__mp_check(kv.p, kv.n));
    }
    check_projection(x, pl, pn);
    check_key(x);
    hr__xform_free(&x);
    CHECK(x == NULL);
out:
    free(opts);
    free(pl);
    return 0;
}
