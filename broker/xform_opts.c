/* SPDX-License-Identifier: MIT */
/* Decodes and compiles the transforms of a SUB option map into one hr_xform_t allocation. */
#include <stdlib.h>
#include <string.h>

#include "xform.h"

/*
 * Decoding runs in two steps. The option map is read once, strictly, into
 * fixed arrays on the stack whose slices still point into the input (the
 * limits bound them: 64 nodes, 256 constants, 32 paths). Only when all of it
 * is valid is the exact size known; then one allocation receives the
 * hr_xform_t, the filter program, its constants, the projection trie and a
 * pool holding every string, and the slices are re-pointed into the pool.
 */
typedef struct comp_s {
    hr_mp_t r;
    const char *why;
    hr_xform_t x; /* scalars and slices into the input */
    hr_xf_node_t nodes[HR_XFORM_NODES_MAX];
    hr_mp_val_t vals[HR_XFORM_VALUES_MAX];
    hr_slice_t paths[HR_XFORM_FIELDS_MAX];
    uint16_t nnodes, nvals, npaths;
    unsigned given; /* option keys seen, nil or not (1 << K_*) */
} comp_t;

#define FAIL(c, msg)                                                                               \
    do {                                                                                           \
        (c)->why = (msg);                                                                          \
        return 0;                                                                                  \
    } while (0)

static int rd(comp_t *c, hr_mp_val_t *v)
{
    if (!hr__mp_read(&c->r, v))
        FAIL(c, "malformed option map");
    return 1;
}

static int is(hr_slice_t s, const char *name)
{
    size_t n = strlen(name);
    return s.n == n && memcmp(s.p, name, n) == 0;
}

/* A field path: 1..HR_XFORM_PATH_MAX bytes, 1..HR_XFORM_SEGS_MAX non-empty keys. */
static int path(comp_t *c, hr_slice_t *out)
{
    hr_mp_val_t v;
    if (!rd(c, &v))
        return 0;
    if (v.kind != HR_MP_STR)
        FAIL(c, "a field path must be a string");
    if (v.s.n == 0)
        FAIL(c, "a field path is empty");
    if (v.s.n > HR_XFORM_PATH_MAX)
        FAIL(c, "a field path is longer than 255 bytes");
    size_t segs = 1;
    for (size_t i = 0; i < v.s.n; i++) {
        if (v.s.p[i] != '.')
            continue;
        if (i == 0 || i + 1 == v.s.n || v.s.p[i + 1] == '.')
            FAIL(c, "a field path has an empty key (leading, trailing or doubled '.')");
        segs++;
    }
    if (segs > HR_XFORM_SEGS_MAX)
        FAIL(c, "a field path has more than 8 keys");
    *out = v.s;
    return 1;
}

/* One filter constant: nil, a boolean, a number or a string. */
static int constant(comp_t *c, int number_only)
{
    hr_mp_val_t v;
    if (!rd(c, &v))
        return 0;
    int num = v.kind == HR_MP_POS || v.kind == HR_MP_NEG || v.kind == HR_MP_FLOAT;
    if (number_only && !num)
        FAIL(c, "filter: <, <=, > and >= compare with a number");
    if (!num && v.kind != HR_MP_NIL && v.kind != HR_MP_BOOL && v.kind != HR_MP_STR)
        FAIL(c, "filter: a value must be nil, a boolean, a number or a string");
    if (c->nvals == HR_XFORM_VALUES_MAX)
        FAIL(c, "filter: more than 256 values");
    c->vals[c->nvals++] = v;
    return 1;
}

static const struct {
    const char *name;
    uint8_t op;
} ops[] = {{"==", HR_XF_EQ},   {"!=", HR_XF_NE}, {"<", HR_XF_LT},   {"<=", HR_XF_LE},
           {">", HR_XF_GT},    {">=", HR_XF_GE}, {"in", HR_XF_IN},  {"exists", HR_XF_EXISTS},
           {"and", HR_XF_AND}, {"or", HR_XF_OR}, {"not", HR_XF_NOT}};

/*
 * One expression and its sub-expressions, in prefix order. Recursion is
 * bounded by HR_XFORM_DEPTH_MAX, checked before anything nested is read.
 */
static int expr(comp_t *c, int depth)
{
    hr_mp_val_t v, opname;
    if (depth > HR_XFORM_DEPTH_MAX)
        FAIL(c, "filter: nested deeper than 8");
    if (!rd(c, &v))
        return 0;
    if (v.kind != HR_MP_ARRAY || v.n == 0)
        FAIL(c, "filter: an expression must be a non-empty array");
    if (!rd(c, &opname))
        return 0;
    if (opname.kind != HR_MP_STR)
        FAIL(c, "filter: an expression must start with an operator string");
    if (c->nnodes == HR_XFORM_NODES_MAX)
        FAIL(c, "filter: more than 64 expressions");
    uint16_t at = c->nnodes++;
    hr_xf_node_t *nd = &c->nodes[at];
    size_t i;
    for (i = 0; i < sizeof(ops) / sizeof(ops[0]) && !is(opname.s, ops[i].name); i++)
        ;
    if (i == sizeof(ops) / sizeof(ops[0]))
        FAIL(c, "filter: unknown operator");
    memset(nd, 0, sizeof(*nd));
    nd->op = ops[i].op;
    nd->val = c->nvals;
    switch (nd->op) {
    case HR_XF_EQ:
    case HR_XF_NE:
    case HR_XF_LT:
    case HR_XF_LE:
    case HR_XF_GT:
    case HR_XF_GE:
        if (v.n != 3)
            FAIL(c, "filter: a comparison takes a field and a value");
        if (!path(c, &nd->path) || !constant(c, nd->op >= HR_XF_LT))
            return 0;
        nd->nargs = 1;
        break;
    case HR_XF_IN: {
        hr_mp_val_t list;
        if (v.n != 3)
            FAIL(c, "filter: in takes a field and an array of values");
        if (!path(c, &nd->path) || !rd(c, &list))
            return 0;
        if (list.kind != HR_MP_ARRAY)
            FAIL(c, "filter: in takes a field and an array of values");
        for (uint32_t k = 0; k < list.n; k++)
            if (!constant(c, 0))
                return 0;
        nd->nargs = (uint16_t)list.n;
        break;
    }
    case HR_XF_EXISTS:
        if (v.n != 2)
            FAIL(c, "filter: exists takes one field");
        if (!path(c, &nd->path))
            return 0;
        break;
    case HR_XF_AND:
    case HR_XF_OR:
    case HR_XF_NOT:
        if (nd->op == HR_XF_NOT ? v.n != 2 : v.n < 2)
            FAIL(c, nd->op == HR_XF_NOT ? "filter: not takes one expression"
                                        : "filter: and/or take at least one expression");
        for (uint32_t k = 1; k < v.n; k++)
            if (!expr(c, depth + 1))
                return 0;
        nd->nargs = (uint16_t)(v.n - 1);
        break;
    }
    nd->size = (uint16_t)(c->nnodes - at);
    return 1;
}

/*
 * Field paths order key by key (bytewise, a path before its extensions), so
 * that paths sharing leading keys sit together and a path directly precedes
 * every path it contains.
 */
static int next_seg(hr_slice_t p, size_t *off, hr_slice_t *seg)
{
    if (*off > p.n)
        return 0;
    const char *s = p.p + *off, *dot = memchr(s, '.', p.n - *off);
    seg->p = s;
    seg->n = dot ? (size_t)(dot - s) : p.n - *off;
    *off += seg->n + 1;
    return 1;
}

static int path_cmp(hr_slice_t a, hr_slice_t b)
{
    size_t ia = 0, ib = 0;
    hr_slice_t sa, sb;
    for (;;) {
        int ha = next_seg(a, &ia, &sa), hb = next_seg(b, &ib, &sb);
        if (!ha || !hb)
            return ha - hb;
        int d = memcmp(sa.p, sb.p, sa.n < sb.n ? sa.n : sb.n);
        if (d || sa.n != sb.n)
            return d ? d : sa.n < sb.n ? -1 : 1;
    }
}

/* 1 if `outer` is `inner` or one of its leading runs of keys. */
static int path_covers(hr_slice_t outer, hr_slice_t inner)
{
    return outer.n <= inner.n && memcmp(outer.p, inner.p, outer.n) == 0 &&
           (outer.n == inner.n || inner.p[outer.n] == '.');
}

static int fields(comp_t *c)
{
    hr_mp_val_t v;
    hr_slice_t p;
    if (!rd(c, &v))
        return 0;
    if (v.kind != HR_MP_ARRAY)
        FAIL(c, "fields must be an array of field paths");
    if (v.n == 0 || v.n > HR_XFORM_FIELDS_MAX)
        FAIL(c, "fields must list 1 to 32 paths");
    for (uint32_t i = 0; i < v.n; i++) {
        if (!path(c, &p))
            return 0;
        size_t j = c->npaths++; /* insertion sort: at most 32 */
        for (; j > 0 && path_cmp(c->paths[j - 1], p) > 0; j--)
            c->paths[j] = c->paths[j - 1];
        c->paths[j] = p;
    }
    uint16_t kept = 0;
    for (uint16_t i = 0; i < c->npaths; i++)
        if (!kept || !path_covers(c->paths[kept - 1], c->paths[i]))
            c->paths[kept++] = c->paths[i];
    c->npaths = kept;
    return 1;
}

/* The unsigned fields of rate, conflate and batch: name, bounds, destination. */
typedef struct num_s {
    const char *name;
    uint32_t max;
    uint32_t *dst;
    const char *bad; /* wrong type, zero or above max */
} num_t;

/*
 * A small map of unsigned integers (all required) and, for conflate, an
 * optional path `key`. Unknown keys are ignored like in the option map.
 */
static int num_map(comp_t *c, const num_t *f, int nf, hr_slice_t *key, const char *not_map,
                   const char *missing)
{
    hr_mp_val_t v, k, n;
    unsigned seen = 0;
    if (!rd(c, &v))
        return 0;
    if (v.kind != HR_MP_MAP)
        FAIL(c, not_map);
    for (uint32_t i = 0; i < v.n; i++) {
        if (!rd(c, &k))
            return 0;
        int j = 0;
        for (; j < nf && !(k.kind == HR_MP_STR && is(k.s, f[j].name)); j++)
            ;
        if (j < nf) {
            if (seen & (1u << j))
                FAIL(c, "a transform map repeats a key");
            seen |= 1u << j;
            if (!rd(c, &n))
                return 0;
            if (n.kind != HR_MP_POS || n.u == 0 || n.u > f[j].max)
                FAIL(c, f[j].bad);
            *f[j].dst = (uint32_t)n.u;
        } else if (key && hr__mp_key_is(&k, "key", 3)) {
            hr_mp_t at = c->r;
            if (key->p)
                FAIL(c, "a transform map repeats a key");
            key->p = ""; /* seen, even as nil */
            if (hr__mp_read(&at, &n) && n.kind == HR_MP_NIL)
                c->r = at; /* nil: no key, latest per topic */
            else if (!path(c, key))
                return 0;
        } else if (!hr__mp_skip(&c->r)) {
            FAIL(c, "malformed option map");
        }
    }
    if (seen != (1u << nf) - 1)
        FAIL(c, missing);
    return 1;
}

static int presence(comp_t *c, int exact)
{
    hr_mp_val_t v;
    if (!rd(c, &v))
        return 0;
    if (v.kind != HR_MP_BIN)
        FAIL(c, "presence must be binary (msgpack bin)");
    if (v.s.n > HR_XFORM_PRESENCE_MAX)
        FAIL(c, "presence is larger than 1 KiB");
    if (!exact)
        FAIL(c, "presence needs an exact topic, not a pattern");
    c->x.presence = v.s;
    c->x.flags |= HR_XF_PRESENCE;
    return 1;
}

enum { K_FILTER, K_FIELDS, K_RATE, K_CONFLATE, K_BATCH, K_PRESENCE, K_N };
static const char *const keys[K_N] = {"filter", "fields", "rate", "conflate", "batch", "presence"};

static int one_option(comp_t *c, int k, int exact)
{
    hr_xform_t *x = &c->x;
    switch (k) {
    case K_FILTER:
        return expr(c, 1);
    case K_FIELDS:
        return fields(c);
    case K_RATE: {
        num_t f[] = {{"n", HR_XFORM_RATE_N_MAX, &x->rate_n, "rate.n must be from 1 to 1000000"},
                     {"ms", HR_XFORM_WINDOW_MS_MAX, &x->rate_ms,
                      "rate.ms must be from 1 to 86400000 (one day)"}};
        return num_map(c, f, 2, NULL, "rate must be a map {n, ms}", "rate needs both n and ms");
    }
    case K_CONFLATE: {
        num_t f[] = {{"ms", HR_XFORM_CONFLATE_MS_MAX, &x->conflate_ms,
                      "conflate.ms must be from 1 to 3600000 (one hour)"}};
        return num_map(c, f, 1, &x->conflate_key, "conflate must be a map {ms, key?}",
                       "conflate needs ms");
    }
    case K_BATCH: {
        num_t f[] = {{"max", HR_XFORM_BATCH_MAX, &x->batch_max, "batch.max must be from 1 to 1024"},
                     {"ms", HR_XFORM_BATCH_MS_MAX, &x->batch_ms,
                      "batch.ms must be from 1 to 60000 (one minute)"}};
        return num_map(c, f, 2, NULL, "batch must be a map {max, ms}",
                       "batch needs both max and ms");
    }
    default:
        return presence(c, exact);
    }
}

static int options(comp_t *c, int exact)
{
    hr_mp_val_t v, key;
    if (c->r.p == c->r.end)
        return 1;
    if (!rd(c, &v))
        return 0;
    if (v.kind == HR_MP_NIL)
        goto end;
    if (v.kind != HR_MP_MAP)
        FAIL(c, "options must be a map");
    for (uint32_t i = 0; i < v.n; i++) {
        if (!rd(c, &key))
            return 0;
        if (key.kind != HR_MP_STR)
            FAIL(c, "option keys must be strings");
        int k = 0;
        for (; k < K_N && !is(key.s, keys[k]); k++)
            ;
        if (k == K_N) {
            if (!hr__mp_skip(&c->r))
                FAIL(c, "malformed option map");
            continue;
        }
        if (c->given & (1u << k))
            FAIL(c, "an option is given twice");
        c->given |= 1u << k;
        hr_mp_t at = c->r;
        hr_mp_val_t nil;
        if (hr__mp_read(&at, &nil) && nil.kind == HR_MP_NIL) {
            c->r = at; /* nil: as if absent (still counts as given) */
            continue;
        }
        if (!one_option(c, k, exact))
            return 0;
    }
end:
    if (c->r.p != c->r.end)
        FAIL(c, "trailing bytes after the option map");
    return 1;
}

/* ---- the compiled allocation ------------------------------------------------ */

/*
 * Lays out the trie of paths[lo, hi), which share their first `depth` keys:
 * the distinct next keys become consecutive nodes (`*first` the first of
 * them; returns how many), then each one's children. With `out` NULL it
 * only counts. Recursion depth is at most HR_XFORM_SEGS_MAX.
 */
static uint16_t trie(hr_xf_field_t *out, uint16_t *used, const hr_slice_t *paths, int lo, int hi,
                     int depth, uint16_t *first)
{
    hr_slice_t seg[HR_XFORM_FIELDS_MAX];
    int last[HR_XFORM_FIELDS_MAX]; /* 1 if the path ends with this key */
    uint16_t n = 0;
    for (int i = lo; i < hi; i++) {
        size_t off = 0;
        for (int d = 0; d <= depth; d++)
            next_seg(paths[i], &off, &seg[i]);
        last[i] = off > paths[i].n;
        if (i == lo || seg[i].n != seg[i - 1].n || memcmp(seg[i].p, seg[i - 1].p, seg[i].n) != 0)
            n++;
    }
    *first = *used;
    *used += n;
    for (int i = lo, g = *first; i < hi; g++) {
        int j = i + 1;
        while (j < hi && seg[j].n == seg[i].n && memcmp(seg[j].p, seg[i].p, seg[i].n) == 0)
            j++;
        /* A path that ends here stands alone in its group: those it covered were dropped. */
        uint16_t kids = 0, nkids = last[i] ? 0 : trie(out, used, paths, i, j, depth + 1, &kids);
        if (out) {
            out[g].key = seg[i];
            out[g].kids = kids;
            out[g].nkids = nkids;
        }
        i = j;
    }
    return n;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static hr_slice_t keep(char **pool, hr_slice_t s)
{
    hr_slice_t k = {*pool, s.n};
    if (s.n)
        memcpy(*pool, s.p, s.n);
    *pool += s.n;
    return k;
}

static hr_xform_t *build(const comp_t *c)
{
    size_t pool = c->x.conflate_key.n + c->x.presence.n, keylen = 0;
    uint16_t ntrie = 0;
    for (uint16_t i = 0; i < c->nnodes; i++)
        pool += c->nodes[i].path.n;
    for (uint16_t i = 0; i < c->nvals; i++)
        pool += c->vals[i].kind == HR_MP_STR ? c->vals[i].s.n : 0;
    if (c->npaths) {
        uint8_t hdr[5];
        keylen = hr__mp_put_array(hdr, c->npaths);
        for (uint16_t i = 0; i < c->npaths; i++)
            keylen += hr__mp_put_str(hdr, c->paths[i].n) + c->paths[i].n;
        uint16_t first;
        trie(NULL, &ntrie, c->paths, 0, c->npaths, 0, &first);
    }
    size_t size = sizeof(hr_xform_t) + c->nnodes * sizeof(hr_xf_node_t) +
                  c->nvals * sizeof(hr_mp_val_t) + ntrie * sizeof(hr_xf_field_t) + keylen + pool;
    hr_xform_t *x = malloc(size);
    if (!x)
        return NULL;
    *x = c->x;
    hr_xf_node_t *nodes = (hr_xf_node_t *)(x + 1);
    hr_mp_val_t *vals = (hr_mp_val_t *)(nodes + c->nnodes);
    hr_xf_field_t *fl = (hr_xf_field_t *)(vals + c->nvals);
    char *p = (char *)(fl + ntrie);

    x->nodes = nodes;
    x->vals = vals;
    x->fields = fl;
    x->nnodes = c->nnodes;
    for (uint16_t i = 0; i < c->nnodes; i++) {
        nodes[i] = c->nodes[i];
        nodes[i].path = keep(&p, c->nodes[i].path);
    }
    for (uint16_t i = 0; i < c->nvals; i++) {
        vals[i] = c->vals[i];
        if (vals[i].kind == HR_MP_STR)
            vals[i].s = keep(&p, c->vals[i].s);
    }
    x->conflate_key = keep(&p, c->x.conflate_key);
    x->presence = keep(&p, c->x.presence);
    x->fields_key.p = p;
    x->fields_key.n = keylen;
    if (c->npaths) {
        hr_slice_t paths[HR_XFORM_FIELDS_MAX];
        uint16_t used = 0, first;
        p += hr__mp_put_array((uint8_t *)p, c->npaths);
        for (uint16_t i = 0; i < c->npaths; i++) {
            p += hr__mp_put_str((uint8_t *)p, c->paths[i].n);
            paths[i] = keep(&p, c->paths[i]); /* the trie's keys point into the key */
        }
        x->nroots = trie(fl, &used, paths, 0, c->npaths, 0, &first);
    }
    x->fields_hash = fnv1a(x->fields_key.p, x->fields_key.n);
    return x;
}

int hr__xform_new(const void *opts, size_t n, int exact, hr_xform_t **out, const char **why)
{
    const char *dummy;
    comp_t c;
    if (!why)
        why = &dummy;
    *out = NULL;
    *why = NULL;
    memset(&c.x, 0, sizeof(c.x));
    c.nnodes = c.nvals = c.npaths = 0;
    c.given = 0;
    c.why = NULL;
    hr__mp_init(&c.r, opts, n);
    if (!options(&c, exact)) {
        *why = c.why;
        return HR_EOPTION;
    }
    c.x.flags |= (c.nnodes ? HR_XF_FILTER : 0) | (c.npaths ? HR_XF_FIELDS : 0) |
                 (c.x.rate_n ? HR_XF_RATE : 0) | (c.x.conflate_ms ? HR_XF_CONFLATE : 0) |
                 (c.x.batch_max ? HR_XF_BATCH : 0);
    if (c.x.flags && !(*out = build(&c)))
        return HR_ENOMEM;
    return HR_OK;
}

void hr__xform_free(hr_xform_t **x)
{
    free(*x);
    *x = NULL;
}

hr_slice_t hr__xform_fields_key(const hr_xform_t *x)
{
    hr_slice_t none = {NULL, 0};
    return x && (x->flags & HR_XF_FIELDS) ? x->fields_key : none;
}
