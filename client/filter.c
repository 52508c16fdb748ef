/* SPDX-License-Identifier: MIT */
/* libherald subscription transforms: filter builders and the SUB option entries they become. */
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "async.h"

/*
 * A filter is kept encoded, as the broker reads it. `and` and `or` nodes
 * keep their operands' encodings back to back and their count, and get
 * their array header only when the whole expression is written
 * (filter_write()), so that a chain of hr_filter_and() calls becomes one
 * `and` of many operands instead of a deep nest.
 */
enum { F_LEAF, F_AND, F_OR };

struct hr_filter_s {
    int kind;       /* F_LEAF: `enc` is the expression; F_AND, F_OR: its operands */
    uint32_t nkids; /* F_AND, F_OR */
    hr_buf_t enc;
};

static int buf_write(void *data, const char *p, size_t n)
{
    return hr_buf_append(data, p, n) == HR_OK ? 0 : -1;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_value(msgpack_packer *pk, const hr_value_t *v)
{
    switch (v->type) {
    case HR_VAL_BOOL:
        if (v->v.b)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case HR_VAL_INT:
        msgpack_pack_int64(pk, v->v.i);
        break;
    case HR_VAL_UINT:
        msgpack_pack_uint64(pk, v->v.u);
        break;
    case HR_VAL_DOUBLE:
        msgpack_pack_double(pk, v->v.d);
        break;
    case HR_VAL_STR:
        pack_cstr(pk, v->v.s);
        break;
    default:
        msgpack_pack_nil(pk);
        break;
    }
}

static int value_ok(const hr_value_t *v)
{
    return v->type >= HR_VAL_NIL && v->type <= HR_VAL_STR && (v->type != HR_VAL_STR || v->v.s);
}

static int is_number(const hr_value_t *v)
{
    return v->type == HR_VAL_INT || v->type == HR_VAL_UINT || v->type == HR_VAL_DOUBLE;
}

static hr_filter_t *filter_new(int kind)
{
    hr_filter_t *f = calloc(1, sizeof(*f));
    if (f) {
        f->kind = kind;
        hr_buf_init(&f->enc);
    }
    return f;
}

void hr_filter_free(hr_filter_t *f)
{
    if (!f)
        return;
    hr_buf_destroy(&f->enc);
    free(f);
}

/* A failed encoding leaves `enc` marked oom: the builder then returns NULL. */
static hr_filter_t *leaf_done(hr_filter_t *f)
{
    if (f->enc.oom) {
        hr_filter_free(f);
        return NULL;
    }
    return f;
}

/* [op, field, values...] with `nvals` values, or [op, field, [values]] for `in`. */
static hr_filter_t *leaf(const char *op, const char *field, const hr_value_t *vals, size_t nvals,
                         int list)
{
    if (!field || !*field)
        return NULL;
    for (size_t i = 0; i < nvals; i++)
        if (!value_ok(&vals[i]))
            return NULL;
    hr_filter_t *f = filter_new(F_LEAF);
    if (!f)
        return NULL;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f->enc, buf_write);
    msgpack_pack_array(&pk, 2 + (list ? 1 : nvals));
    pack_cstr(&pk, op);
    pack_cstr(&pk, field);
    if (list)
        msgpack_pack_array(&pk, nvals);
    for (size_t i = 0; i < nvals; i++)
        pack_value(&pk, &vals[i]);
    return leaf_done(f);
}

hr_filter_t *hr_filter_eq(const char *field, hr_value_t v)
{
    return leaf("==", field, &v, 1, 0);
}

hr_filter_t *hr_filter_ne(const char *field, hr_value_t v)
{
    return leaf("!=", field, &v, 1, 0);
}

static hr_filter_t *order(const char *op, const char *field, hr_value_t v)
{
    return is_number(&v) ? leaf(op, field, &v, 1, 0) : NULL;
}

hr_filter_t *hr_filter_lt(const char *field, hr_value_t number)
{
    return order("<", field, number);
}

hr_filter_t *hr_filter_le(const char *field, hr_value_t number)
{
    return order("<=", field, number);
}

hr_filter_t *hr_filter_gt(const char *field, hr_value_t number)
{
    return order(">", field, number);
}

hr_filter_t *hr_filter_ge(const char *field, hr_value_t number)
{
    return order(">=", field, number);
}

hr_filter_t *hr_filter_in(const char *field, const hr_value_t *values, size_t n)
{
    return n && values ? leaf("in", field, values, n, 1) : NULL;
}

hr_filter_t *hr_filter_exists(const char *field)
{
    return leaf("exists", field, NULL, 0, 0);
}

hr_filter_t *hr_filter_eq_str(const char *field, const char *s)
{
    return s ? hr_filter_eq(field, hr_val_str(s)) : NULL;
}

hr_filter_t *hr_filter_eq_int(const char *field, int64_t i)
{
    return hr_filter_eq(field, hr_val_int(i));
}

/* Appends the whole expression `f` to `b`. */
static void filter_write(const hr_filter_t *f, hr_buf_t *b)
{
    if (f->kind != F_LEAF) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, b, buf_write);
        msgpack_pack_array(&pk, 1 + f->nkids);
        pack_cstr(&pk, f->kind == F_AND ? "and" : "or");
    }
    hr_buf_append(b, f->enc.base, f->enc.len);
}

/* Adds `e` (consumed) as operands of `to`: its own operands when it is the same kind. */
static void absorb(hr_filter_t *to, hr_filter_t *e)
{
    if (e->kind == to->kind) {
        hr_buf_append(&to->enc, e->enc.base, e->enc.len);
        to->nkids += e->nkids;
    } else {
        filter_write(e, &to->enc);
        to->nkids++;
    }
    hr_filter_free(e);
}

static hr_filter_t *combine(int kind, hr_filter_t *a, hr_filter_t *b)
{
    hr_filter_t *f = a && b ? filter_new(kind) : NULL;
    if (!f) {
        hr_filter_free(a);
        hr_filter_free(b);
        return NULL;
    }
    absorb(f, a);
    absorb(f, b);
    return leaf_done(f);
}

hr_filter_t *hr_filter_and(hr_filter_t *a, hr_filter_t *b)
{
    return combine(F_AND, a, b);
}

hr_filter_t *hr_filter_or(hr_filter_t *a, hr_filter_t *b)
{
    return combine(F_OR, a, b);
}

hr_filter_t *hr_filter_not(hr_filter_t *e)
{
    hr_filter_t *f = e ? filter_new(F_LEAF) : NULL;
    if (!f) {
        hr_filter_free(e);
        return NULL;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f->enc, buf_write);
    msgpack_pack_array(&pk, 2);
    pack_cstr(&pk, "not");
    filter_write(e, &f->enc);
    hr_filter_free(e);
    return leaf_done(f);
}

/* ---- SUB option entries -------------------------------------------------- */

static void pack_window(msgpack_packer *pk, const char *k1, uint64_t v1, const char *k2,
                        uint64_t v2)
{
    msgpack_pack_map(pk, 2);
    pack_cstr(pk, k1);
    msgpack_pack_uint64(pk, v1);
    pack_cstr(pk, k2);
    msgpack_pack_uint64(pk, v2);
}

int hr__xopts_encode(const hr_sub_opts_t *so, hr_buf_t *b, uint32_t *n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    *n = 0;
    if (!so)
        return HR_OK;
    if (so->fields && (so->nfields == 0 || so->nfields > 32))
        return HR_EINVAL;
    for (size_t i = 0; so->fields && i < so->nfields; i++)
        if (!so->fields[i])
            return HR_EINVAL;
    if (so->filter) {
        pack_cstr(&pk, "filter");
        filter_write(so->filter, b);
        ++*n;
    }
    if (so->fields) {
        pack_cstr(&pk, "fields");
        msgpack_pack_array(&pk, so->nfields);
        for (size_t i = 0; i < so->nfields; i++)
            pack_cstr(&pk, so->fields[i]);
        ++*n;
    }
    if (so->rate_n) {
        pack_cstr(&pk, "rate");
        pack_window(&pk, "n", so->rate_n, "ms", so->rate_ms);
        ++*n;
    }
    if (so->conflate_ms) {
        pack_cstr(&pk, "conflate");
        msgpack_pack_map(&pk, so->conflate_key ? 2 : 1);
        pack_cstr(&pk, "ms");
        msgpack_pack_uint64(&pk, so->conflate_ms);
        if (so->conflate_key) {
            pack_cstr(&pk, "key");
            pack_cstr(&pk, so->conflate_key);
        }
        ++*n;
    }
    if (so->batch_max) {
        pack_cstr(&pk, "batch");
        pack_window(&pk, "max", so->batch_max, "ms", so->batch_ms);
        ++*n;
    }
    return b->oom ? HR_ENOMEM : HR_OK;
}
