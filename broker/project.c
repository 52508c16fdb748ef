/* SPDX-License-Identifier: MIT */
/* Field projection (`fields`): a new map holding only the listed paths of a payload. */
#include <string.h>

#include "xform.h"

/*
 * The listed paths are compiled into a trie (hr_xf_field_t), so that paths
 * sharing leading keys share one nested map in the output. For each trie
 * node the payload map is searched for the first entry with that key (a
 * later duplicate key is ignored, as the filter ignores it), so the output
 * has no duplicate keys and lists them in the trie's sorted order. A map
 * header states its count up front: count() says how many entries a level
 * will have, including only nested maps that keep at least one entry.
 * Recursion follows the trie (at most HR_XFORM_SEGS_MAX deep), never the
 * payload; the payload has been checked well formed before.
 */
typedef struct out_s {
    hr_xform_write_cb write;
    void *arg;
} out_t;

/* Moves `r` to the value of `f` in the map of `pairs` entries at `map`; 0 if absent. */
static int find(hr_mp_t map, uint32_t pairs, const hr_xf_field_t *f, hr_mp_t *r)
{
    *r = map;
    return hr__mp_map_find(r, pairs, f->key.p, f->key.n);
}

static uint32_t count(const hr_xform_t *x, const hr_xf_field_t *kids, uint16_t nkids, hr_mp_t map,
                      uint32_t pairs)
{
    uint32_t k = 0;
    hr_mp_t r;
    hr_mp_val_t v;
    for (uint16_t i = 0; i < nkids; i++) {
        const hr_xf_field_t *f = kids + i;
        if (!find(map, pairs, f, &r))
            continue;
        if (!f->nkids || (hr__mp_read(&r, &v) && v.kind == HR_MP_MAP &&
                          count(x, x->fields + f->kids, f->nkids, r, v.n)))
            k++;
    }
    return k;
}

static int put(const out_t *o, const void *p, size_t n)
{
    return o->write(o->arg, p, n) == 0;
}

static int put_key(const out_t *o, hr_slice_t key)
{
    uint8_t hdr[5];
    return put(o, hdr, hr__mp_put_str(hdr, key.n)) && put(o, key.p, key.n);
}

static int emit(const hr_xform_t *x, const hr_xf_field_t *kids, uint16_t nkids, hr_mp_t map,
                uint32_t pairs, const out_t *o)
{
    uint8_t hdr[5];
    hr_mp_t r;
    hr_mp_val_t v;
    if (!put(o, hdr, hr__mp_put_map(hdr, count(x, kids, nkids, map, pairs))))
        return 0;
    for (uint16_t i = 0; i < nkids; i++) {
        const hr_xf_field_t *f = kids + i;
        if (!find(map, pairs, f, &r))
            continue;
        if (!f->nkids) {
            const uint8_t *start = r.p;
            if (!hr__mp_skip(&r))
                continue; /* not reached: the payload was checked */
            if (!put_key(o, f->key) || !put(o, start, (size_t)(r.p - start)))
                return 0;
        } else if (hr__mp_read(&r, &v) && v.kind == HR_MP_MAP &&
                   count(x, x->fields + f->kids, f->nkids, r, v.n)) {
            if (!put_key(o, f->key) || !emit(x, x->fields + f->kids, f->nkids, r, v.n, o))
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
