/* SPDX-License-Identifier: MIT */
/* Reads payload fields for subscription transforms: filter evaluation and the conflate key. */
#include <string.h>

#include "xform.h"

/* Result of comparing a payload value with a constant. */
enum { LESS = -1, EQUAL = 0, GREATER = 1, UNORDERED = 2 };

static int order(int less, int greater)
{
    return less ? LESS : greater ? GREATER : EQUAL;
}

/*
 * Compares an integer >= 0 with a double (not NaN) exactly. Converting the
 * integer to double would round above 2^53 (2^53 + 1 would equal 2^53), so
 * the double's integer part is compared as an integer, then its fraction.
 */
static int cmp_u_d(uint64_t u, double d)
{
    if (d < 0)
        return GREATER;
    if (d >= 18446744073709551616.0) /* 2^64 */
        return LESS;
    uint64_t t = (uint64_t)d; /* floor(d): d is in [0, 2^64) */
    if (u != t)
        return order(u<t, u> t);
    /* Below 2^53 (double)t is exact; above it every double is an integer. */
    return (double)t < d ? LESS : EQUAL;
}

/* |i| for i < 0, without overflow at INT64_MIN. */
static uint64_t mag(int64_t i)
{
    return (uint64_t)(-(i + 1)) + 1;
}

static int cmp_num(const hr_mp_val_t *a, const hr_mp_val_t *b)
{
    if (a->kind == HR_MP_FLOAT && b->kind == HR_MP_FLOAT)
        return a->f != a->f || b->f != b->f ? UNORDERED : order(a->f<b->f, a->f> b->f);
    if (b->kind == HR_MP_FLOAT) {
        if (b->f != b->f)
            return UNORDERED;
        if (a->kind == HR_MP_POS)
            return cmp_u_d(a->u, b->f);
        /* a < 0: below every non-negative double; else compare magnitudes, reversed. */
        return b->f >= 0 ? LESS : -cmp_u_d(mag(a->i), -b->f);
    }
    if (a->kind == HR_MP_FLOAT) {
        int r = cmp_num(b, a);
        return r == UNORDERED ? r : -r;
    }
    if (a->kind != b->kind)
        return a->kind == HR_MP_NEG ? LESS : GREATER;
    return a->kind == HR_MP_POS ? order(a->u<b->u, a->u> b->u) : order(a->i<b->i, a->i> b->i);
}

static int is_num(int kind)
{
    return kind == HR_MP_POS || kind == HR_MP_NEG || kind == HR_MP_FLOAT;
}

/* Numbers compare as numbers, strings bytewise, nil and booleans by equality;
 * anything else (other kinds, containers) is unordered and unequal. */
static int cmp(const hr_mp_val_t *a, const hr_mp_val_t *b)
{
    if (is_num(a->kind) && is_num(b->kind))
        return cmp_num(a, b);
    if (a->kind != b->kind)
        return UNORDERED;
    switch (a->kind) {
    case HR_MP_NIL:
        return EQUAL;
    case HR_MP_BOOL:
        return a->b == b->b ? EQUAL : UNORDERED;
    case HR_MP_STR: {
        size_t n = a->s.n < b->s.n ? a->s.n : b->s.n;
        int d = n ? memcmp(a->s.p, b->s.p, n) : 0;
        return d ? order(d<0, d> 0) : order(a->s.n<b->s.n, a->s.n> b->s.n);
    }
    default:
        return UNORDERED;
    }
}

/* A comparison, `in` or `exists` node. `doc` is NULL for a malformed payload. */
static int leaf(const hr_xform_t *x, const hr_xf_node_t *nd, const hr_mp_t *doc)
{
    hr_slice_t raw;
    hr_mp_t r;
    hr_mp_val_t v;
    if (!doc || !hr__mp_path(*doc, nd->path, &raw))
        return 0;
    if (nd->op == HR_XF_EXISTS)
        return 1;
    hr__mp_init(&r, raw.p, raw.n);
    if (!hr__mp_read(&r, &v))
        return 0;
    const hr_mp_val_t *k = x->vals + nd->val;
    int c = cmp(&v, k);
    switch (nd->op) {
    case HR_XF_EQ:
        return c == EQUAL;
    case HR_XF_NE:
        return c != EQUAL;
    case HR_XF_LT:
        return c == LESS;
    case HR_XF_LE:
        return c == LESS || c == EQUAL;
    case HR_XF_GT:
        return c == GREATER;
    case HR_XF_GE:
        return c == GREATER || c == EQUAL;
    default: /* HR_XF_IN */
        for (uint16_t i = 0; i < nd->nargs; i++)
            if (cmp(&v, k + i) == EQUAL)
                return 1;
        return 0;
    }
}

/* Evaluates the subtree at `at`. Recursion follows the compiled program,
 * whose depth is at most HR_XFORM_DEPTH_MAX, never the payload. */
static int eval(const hr_xform_t *x, uint16_t at, const hr_mp_t *doc)
{
    const hr_xf_node_t *nd = x->nodes + at;
    uint16_t kid = at + 1;
    switch (nd->op) {
    case HR_XF_AND:
    case HR_XF_OR:
        for (uint16_t i = 0; i < nd->nargs; i++, kid += x->nodes[kid].size)
            if (eval(x, kid, doc) != (nd->op == HR_XF_AND))
                return nd->op == HR_XF_OR;
        return nd->op == HR_XF_AND;
    case HR_XF_NOT:
        return !eval(x, kid, doc);
    default:
        return leaf(x, nd, doc);
    }
}

int hr__xform_match_checked(const hr_xform_t *x, const void *payload, size_t n, int wellformed)
{
    hr_mp_t doc;
    if (!x || !x->nnodes)
        return 1;
    hr__mp_init(&doc, payload, n);
    return eval(x, 0, wellformed ? &doc : NULL);
}

int hr__xform_match(const hr_xform_t *x, const void *payload, size_t n)
{
    /* One pass proves the payload well formed, so the lookups that follow
     * cannot depend on where in the payload a malformation sits. */
    return hr__xform_match_checked(x, payload, n, x && x->nnodes && hr__mp_check(payload, n));
}

int hr__xform_conflate_key(const hr_xform_t *x, const void *payload, size_t n, hr_slice_t *val)
{
    hr_mp_t doc;
    if (!x || !x->conflate_key.n || !hr__mp_check(payload, n))
        return 0;
    hr__mp_init(&doc, payload, n);
    return hr__mp_path(doc, x->conflate_key, val);
}
