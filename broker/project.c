/* SPDX-License-Identifier: MIT */
/* Field projection (`fields`): a new map holding only the listed paths of a payload. */
#include <string.h>

#include "xform.h"

/*
 * The listed paths are compiled into a trie (hr_xf_field_t), so that paths
 * sharing leading keys share one nested map in the output. One pass over a
 * payload map finds the first entry for each trie child (a later duplicate
 * key is ignored, as the filter ignores it), so the output has no duplicate
 * keys and lists them in the trie's sorted order. A map header states its
 * count up front, so a nested map is kept only if its own projection keeps
 * an entry (nonempty()). Recursion follows the trie (at most
 * HR_XFORM_SEGS_MAX deep), never the payload, which has been checked well
 * formed before.
 */
typedef struct out_s {
    hr_xform_write_cb write;
    void *arg;
} out_t;

/*
 * Sets at[i] to the start of the value of the first entry keyed kids[i].key
 * in the map whose `pairs` entries start at `r`, or NULL; one pass, which
 * stops once every child is found.
 */
static void locate(const hr_xf_field_t *kids, uint16_t nkids, hr_mp_t r, uint32_t pairs,
                   const uint8_t **at)
{
    hr_mp_val_t k;
    uint16_t left = nkids;
    for (uint16_t i = 0; i < nkids; i++)
        at[i] = NULL;
    for (uint32_t e = 0; e < pairs && left; e++) {
        hr_mp_t key = r;
        if (!hr__mp_read(&r, &k))
            return;
        if (k.kind == HR_MP_ARRAY || k.kind == HR_MP_MAP) {
            r = key; /* a container key: skip it whole */
            if (!hr__mp_skip(&r))
                return;
        }
        for (uint16_t i = 0; i < nkids; i++) {
            if (!at[i] && hr__mp_key_is(&k, kids[i].key.p, kids[i].key.n)) {
                at[i] = r.p;
                left--;
                break;
            }
        }
        if (!hr__mp_skip(&r))
            return;
    }
}

/* Opens the value at `p` as a map: `*r` at its entries, `*pairs` their count. 0 if no map. */
static int open_map(const uint8_t *p, const uint8_t *end, hr_mp_t *r, uint32_t *pairs)
{
    hr_mp_val_t v;
    r->p = p;
    r->end = end;
    if (!hr__mp_read(r, &v) || v.kind != HR_MP_MAP)
        return 0;
    *pairs = v.n;
    return 1;
}

static int nonempty(const hr_xform_t *x, const hr_xf_field_t *kids, uint16_t nkids, hr_mp_t r,
                    uint32_t pairs);

/* 1 if child `f`, found at `p`, is kept: a leaf, or a map whose projection keeps an entry. */
static int kept(const hr_xform_t *x, const hr_xf_field_t *f, const uint8_t *p, const uint8_t *end)
{
    hr_mp_t r;
    uint32_t pairs;
    if (!p)
        return 0;
    return !f->nkids ||
           (open_map(p, end, &r, &pairs) && nonempty(x, x->fields + f->kids, f->nkids, r, pairs));
}

static int nonempty(const hr_xform_t *x, const hr_xf_field_t *kids, uint16_t nkids, hr_mp_t r,
                    uint32_t pairs)
{
    const uint8_t *at[HR_XFORM_FIELDS_MAX];
    locate(kids, nkids, r, pairs, at);
    for (uint16_t i = 0; i < nkids; i++)
        if (kept(x, kids + i, at[i], r.end))
            return 1;
    return 0;
}

static int put(const out_t *o, const void *p, size_t n)
{
    return o->write(o->arg, p, n) == 0;
}

static int emit(const hr_xform_t *x, const hr_xf_field_t *kids, uint16_t nkids, hr_mp_t r,
                uint32_t pairs, const out_t *o)
{
    const uint8_t *at[HR_XFORM_FIELDS_MAX];
    uint8_t hdr[5];
    uint32_t n = 0;
    locate(kids, nkids, r, pairs, at);
    for (uint16_t i = 0; i < nkids; i++) {
        if (kept(x, kids + i, at[i], r.end))
            n++;
        else
            at[i] = NULL;
    }
    if (!put(o, hdr, hr__mp_put_map(hdr, n)))
        return 0;
    for (uint16_t i = 0; i < nkids; i++) {
        const hr_xf_field_t *f = kids + i;
        hr_mp_t v = {at[i], r.end};
        uint32_t sub = 0;
        if (!at[i])
            continue;
        if (!put(o, hdr, hr__mp_put_str(hdr, f->key.n)) || !put(o, f->key.p, f->key.n))
            return 0;
        if (!f->nkids) {
            hr__mp_skip(&v); /* cannot fail: the payload was checked */
            if (!put(o, at[i], (size_t)(v.p - at[i])))
                return 0;
        } else {
            open_map(at[i], r.end, &v, &sub); /* a map: kept() said so */
            if (!emit(x, x->fields + f->kids, f->nkids, v, sub, o))
                return 0;
        }
    }
    return 1;
}

int hr__xform_project(const hr_xform_t *x, const void *payload, size_t n, hr_xform_write_cb write,
                      void *arg)
{
    hr_mp_t r;
    hr_mp_val_t v;
    out_t o = {write, arg};
    if (!x || !(x->flags & HR_XF_FIELDS) || !hr__mp_check(payload, n))
        return 0;
    hr__mp_init(&r, payload, n);
    if (!hr__mp_read(&r, &v) || v.kind != HR_MP_MAP)
        return 0;
    return emit(x, x->fields, x->nroots, r, v.n, &o) ? 1 : HR_ECANCELED;
}

static int buf_write(void *arg, const void *p, size_t n)
{
    return hr_buf_append(arg, p, n);
}

int hr__xform_project_buf(const hr_xform_t *x, const void *payload, size_t n, hr_buf_t *b)
{
    size_t len = b->len;
    int rc = hr__xform_project(x, payload, n, buf_write, b);
    if (rc == HR_ECANCELED) {
        b->len = len;
        b->oom = 0;
        return HR_ENOMEM;
    }
    return rc;
}
