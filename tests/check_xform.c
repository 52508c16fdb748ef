/* SPDX-License-Identifier: MIT */
/* Subscription transforms: option decoding and its refusals, filter semantics, projection. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/protocol.h"
#include "hr_check.h"
#include "xform.h"

/* ---- a JSON-like notation for msgpack test data ------------------------------
 * {"k": v, ...}, [v, ...], "str", b"bin", 12, -3, 1.5, true, false, null. Keys
 * may be any value. No escapes; strings end at the next quote. */

static const char *val(const char *s, hr_buf_t *b);

static const char *ws(const char *s)
{
    while (*s == ' ' || *s == ',' || *s == ':')
        s++;
    return s;
}

static void put_be(hr_buf_t *b, uint8_t t, uint64_t v, int n)
{
    uint8_t x[9] = {t};
    for (int i = 0; i < n; i++)
        x[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    hr_buf_append(b, x, 1 + (size_t)n);
}

static void put_uint(hr_buf_t *b, uint64_t u)
{
    if (u < 128)
        put_be(b, (uint8_t)u, 0, 0);
    else if (u < 256)
        put_be(b, 0xcc, u, 1);
    else if (u < 65536)
        put_be(b, 0xcd, u, 2);
    else if (u <= UINT32_MAX)
        put_be(b, 0xce, u, 4);
    else
        put_be(b, 0xcf, u, 8);
}

static void put_int(hr_buf_t *b, int64_t i)
{
    if (i >= -32)
        put_be(b, (uint8_t)i, 0, 0);
    else if (i >= INT8_MIN)
        put_be(b, 0xd0, (uint64_t)i & 0xff, 1);
    else if (i >= INT16_MIN)
        put_be(b, 0xd1, (uint64_t)i & 0xffff, 2);
    else if (i >= INT32_MIN)
        put_be(b, 0xd2, (uint64_t)i & 0xffffffff, 4);
    else
        put_be(b, 0xd3, (uint64_t)i, 8);
}

/* Elements up to `close`, each packed into `body`; returns the count. */
static const char *items(const char *s, char close, hr_buf_t *body, uint32_t *n)
{
    *n = 0;
    for (s = ws(s); *s != close; s = ws(s)) {
        s = val(s, body);
        (*n)++;
    }
    return s + 1;
}

static const char *val(const char *s, hr_buf_t *b)
{
    s = ws(s);
    uint8_t hdr[5];
    if (*s == '{' || *s == '[') {
        hr_buf_t body;
        uint32_t n;
        hr_buf_init(&body);
        s = items(s + 1, *s == '{' ? '}' : ']', &body, &n);
        if (s[-1] == '}')
            hr_buf_append(b, hdr, hr__mp_put_map(hdr, n / 2));
        else
            hr_buf_append(b, hdr, hr__mp_put_array(hdr, n));
        hr_buf_append(b, body.base, body.len);
        hr_buf_destroy(&body);
        return s;
    }
    if (*s == '"' || (s[0] == 'b' && s[1] == '"')) {
        int bin = *s == 'b';
        s += 1 + bin;
        const char *e = strchr(s, '"');
        size_t n = (size_t)(e - s);
        if (bin)
            put_be(b, n < 256 ? 0xc4 : 0xc5, n, n < 256 ? 1 : 2);
        else
            hr_buf_append(b, hdr, hr__mp_put_str(hdr, n));
        hr_buf_append(b, s, n);
        return e + 1;
    }
    if (!strncmp(s, "true", 4) || !strncmp(s, "false", 5) || !strncmp(s, "null", 4)) {
        put_be(b, *s == 't' ? 0xc3 : *s == 'f' ? 0xc2 : 0xc0, 0, 0);
        return s + (*s == 'f' ? 5 : 4);
    }
    char *end;
    size_t len = strspn(s, "-+0123456789.eE");
    if (memchr(s, '.', len) || memchr(s, 'e', len)) {
        double d = strtod(s, &end);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        put_be(b, 0xcb, bits, 8);
    } else if (*s == '-') {
        put_int(b, strtoll(s, &end, 10));
    } else {
        put_uint(b, strtoull(s, &end, 10));
    }
    return end;
}

/* Packs `json` into a fresh exact-size allocation (so ASan sees over-reads). */
static uint8_t *mp(const char *json, size_t *n)
{
    hr_buf_t b;
    hr_buf_init(&b);
    val(json, &b);
    uint8_t *p = malloc(b.len ? b.len : 1);
    memcpy(p, b.base, b.len);
    *n = b.len;
    hr_buf_destroy(&b);
    return p;
}

/* ---- helpers -------------------------------------------------------------- */

static int decode(const char *opts, int exact, hr_xform_t **x, const char **why)
{
    size_t n;
    uint8_t *p = mp(opts, &n);
    int rc = hr__xform_new(p, n, exact, x, why);
    free(p); /* the result owns copies of everything it keeps */
    return rc;
}

static hr_xform_t *must(const char *opts)
{
    hr_xform_t *x;
    const char *why;
    int rc = decode(opts, 1, &x, &why);
    ck_assert_msg(rc == HR_OK, "%s: %s", opts, why ? why : "?");
    ck_assert_ptr_nonnull(x);
    return x;
}

/* Matches payload `json` against filter `filter`. */
static int match(const char *filter, const char *json)
{
    char opts[4096];
    size_t n;
    snprintf(opts, sizeof(opts), "{\"filter\": %s}", filter);
    hr_xform_t *x = must(opts);
    uint8_t *p = mp(json, &n);
    int r = hr__xform_match(x, p, n);
    ck_assert_int_eq(hr__xform_match(x, p, n), r);
    free(p);
    hr__xform_free(&x);
    ck_assert_ptr_null(x);
    return r;
}

static int match_raw(const char *filter, const void *payload, size_t n)
{
    char opts[512];
    snprintf(opts, sizeof(opts), "{\"filter\": %s}", filter);
    hr_xform_t *x = must(opts);
    uint8_t *p = malloc(n ? n : 1);
    memcpy(p, payload, n);
    int r = hr__xform_match(x, p, n);
    free(p);
    hr__xform_free(&x);
    return r;
}

/* ---- option decoding ---------------------------------------------------------------- */

START_TEST(no_transforms)
{
    hr_xform_t *x = (hr_xform_t *)1;
    const char *why;
    ck_assert_int_eq(hr__xform_new(NULL, 0, 0, &x, &why), HR_OK);
    ck_assert_ptr_null(x);
    ck_assert_int_eq(decode("null", 0, &x, &why), HR_OK);
    ck_assert_ptr_null(x);
    ck_assert_int_eq(decode("{}", 0, &x, &why), HR_OK);
    ck_assert_ptr_null(x);
    /* The codec's keys and unknown keys are ignored, whatever their values. */
    ck_assert_int_eq(decode("{\"queue\": \"q\", \"since\": 3, \"last\": 2, \"epoch\": \"e1\", "
                            "\"future\": [1, {\"x\": b\"y\"}], 7: 8}",
                            0, &x, &why),
                     HR_EOPTION); /* ...but keys must be strings */
    ck_assert_str_eq(why, "option keys must be strings");
    ck_assert_int_eq(decode("{\"queue\": \"q\", \"since\": 3, \"last\": 2, \"epoch\": \"e1\", "
                            "\"future\": [1, {\"x\": b\"y\"}]}",
                            0, &x, &why),
                     HR_OK);
    ck_assert_ptr_null(x);
    /* A transform key with nil is absent. */
    ck_assert_int_eq(decode("{\"filter\": null, \"fields\": null, \"rate\": null, \"conflate\": "
                            "null, \"batch\": null, \"presence\": null}",
                            0, &x, &why),
                     HR_OK);
    ck_assert_ptr_null(x);
    ck_assert_ptr_null(hr__xform_fields_key(NULL).p);
    ck_assert_int_eq(hr__xform_match(NULL, "", 0), 1);
}
END_TEST

START_TEST(all_options)
{
    hr_xform_t *x = must("{\"since\": 1, \"filter\": [\"exists\", \"a\"], \"fields\": [\"a\"], "
                         "\"rate\": {\"n\": 5, \"ms\": 1000, \"burst\": 1}, \"conflate\": {\"ms\": "
                         "250, \"key\": \"user.id\"}, \"batch\": {\"max\": 10, \"ms\": 50}, "
                         "\"presence\": b\"alice\"}");
    ck_assert_uint_eq(x->flags, HR_XF_FILTER | HR_XF_FIELDS | HR_XF_RATE | HR_XF_CONFLATE |
                                    HR_XF_BATCH | HR_XF_PRESENCE);
    ck_assert_uint_eq(x->rate_n, 5);
    ck_assert_uint_eq(x->rate_ms, 1000);
    ck_assert_uint_eq(x->conflate_ms, 250);
    ck_assert_uint_eq(x->conflate_key.n, 7);
    ck_assert_mem_eq(x->conflate_key.p, "user.id", 7);
    ck_assert_uint_eq(x->batch_max, 10);
    ck_assert_uint_eq(x->batch_ms, 50);
    ck_assert_uint_eq(x->presence.n, 5);
    ck_assert_mem_eq(x->presence.p, "alice", 5);
    hr__xform_free(&x);

    x = must("{\"conflate\": {\"ms\": 3600000, \"key\": null}, \"presence\": b\"\"}");
    ck_assert_uint_eq(x->flags, HR_XF_CONFLATE | HR_XF_PRESENCE);
    ck_assert_uint_eq(x->conflate_key.n, 0);
    ck_assert_uint_eq(x->presence.n, 0);
    hr__xform_free(&x);
    hr__xform_free(&x); /* NULL-safe */

    /* Limits themselves are accepted. */
    x = must("{\"rate\": {\"n\": 1000000, \"ms\": 86400000}, \"batch\": {\"max\": 1024, \"ms\": "
             "60000}}");
    ck_assert_uint_eq(x->flags, HR_XF_RATE | HR_XF_BATCH);
    hr__xform_free(&x);
}
END_TEST

/* Builds a filter of `depth` nested nots around one exists. */
static void nested_not(char *out, size_t cap, int depth)
{
    size_t k = 0;
    k += (size_t)snprintf(out + k, cap - k, "{\"filter\": ");
    for (int i = 1; i < depth; i++)
        k += (size_t)snprintf(out + k, cap - k, "[\"not\", ");
    k += (size_t)snprintf(out + k, cap - k, "[\"exists\", \"a\"]");
    for (int i = 1; i < depth; i++)
        k += (size_t)snprintf(out + k, cap - k, "]");
    snprintf(out + k, cap - k, "}");
}

/* An `or` of `n` - 1 exists nodes (n nodes in all). */
static void wide_or(char *out, size_t cap, int n)
{
    size_t k = (size_t)snprintf(out, cap, "{\"filter\": [\"or\"");
    for (int i = 1; i < n; i++)
        k += (size_t)snprintf(out + k, cap - k, ", [\"exists\", \"f%d\"]", i);
    snprintf(out + k, cap - k, "]}");
}

START_TEST(limits)
{
    char buf[8192];
    hr_xform_t *x;
    const char *why;
    nested_not(buf, sizeof(buf), 8);
    x = must(buf);
    hr__xform_free(&x);
    nested_not(buf, sizeof(buf), 9);
    ck_assert_int_eq(decode(buf, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "filter: nested deeper than 8");
    ck_assert_ptr_null(x);
    /* A hostile depth fails at 9, not after reading the rest. */
    nested_not(buf, sizeof(buf), 500);
    ck_assert_int_eq(decode(buf, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "filter: nested deeper than 8");

    wide_or(buf, sizeof(buf), 64);
    x = must(buf);
    ck_assert_uint_eq(x->nnodes, 64);
    hr__xform_free(&x);
    wide_or(buf, sizeof(buf), 65);
    ck_assert_int_eq(decode(buf, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "filter: more than 64 expressions");

    /* 32 paths, 255-byte paths, 8 keys. */
    size_t k = (size_t)snprintf(buf, sizeof(buf), "{\"fields\": [");
    for (int i = 0; i < 32; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "\"f%d\", ", i);
    snprintf(buf + k, sizeof(buf) - k, "]}");
    x = must(buf);
    hr__xform_free(&x);
    snprintf(buf + k, sizeof(buf) - k, "\"f32\"]}");
    ck_assert_int_eq(decode(buf, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "fields must list 1 to 32 paths");

    char path[300];
    memset(path, 'p', sizeof(path));
    snprintf(buf, sizeof(buf), "{\"fields\": [\"%.*s\"]}", 255, path);
    x = must(buf);
    hr__xform_free(&x);
    snprintf(buf, sizeof(buf), "{\"fields\": [\"%.*s\"]}", 256, path);
    ck_assert_int_eq(decode(buf, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "a field path is longer than 255 bytes");
    x = must("{\"filter\": [\"exists\", \"a.b.c.d.e.f.g.h\"]}");
    hr__xform_free(&x);
    ck_assert_int_eq(decode("{\"filter\": [\"exists\", \"a.b.c.d.e.f.g.h.i\"]}", 1, &x, &why),
                     HR_EOPTION);
    ck_assert_str_eq(why, "a field path has more than 8 keys");

    /* 256 constants in all. */
    k = (size_t)snprintf(buf, sizeof(buf), "{\"filter\": [\"in\", \"a\", [");
    for (int i = 0; i < 256; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%d, ", i);
    snprintf(buf + k, sizeof(buf) - k, "]]}");
    x = must(buf);
    hr__xform_free(&x);
    snprintf(buf + k, sizeof(buf) - k, "7]]}");
    ck_assert_int_eq(decode(buf, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "filter: more than 256 values");
}
END_TEST

/* Every refusal with its reason. */
static const struct {
    const char *opts;
    int exact;
    const char *why;
} bad[] = {
    {"[1]", 1, "options must be a map"},
    {"{\"filter\": \"x\"}", 1, "filter: an expression must be a non-empty array"},
    {"{\"filter\": []}", 1, "filter: an expression must be a non-empty array"},
    {"{\"filter\": [1, \"a\"]}", 1, "filter: an expression must start with an operator string"},
    {"{\"filter\": [\"~\", \"a\", 1]}", 1, "filter: unknown operator"},
    {"{\"filter\": [\"EQ\", \"a\", 1]}", 1, "filter: unknown operator"},
    {"{\"filter\": [\"==\", \"a\"]}", 1, "filter: a comparison takes a field and a value"},
    {"{\"filter\": [\"!=\", \"a\", 1, 2]}", 1, "filter: a comparison takes a field and a value"},
    {"{\"filter\": [\"==\", 5, 1]}", 1, "a field path must be a string"},
    {"{\"filter\": [\"==\", \"\", 1]}", 1, "a field path is empty"},
    {"{\"filter\": [\"==\", \".a\", 1]}", 1,
     "a field path has an empty key (leading, trailing or doubled '.')"},
    {"{\"filter\": [\"==\", \"a.\", 1]}", 1,
     "a field path has an empty key (leading, trailing or doubled '.')"},
    {"{\"filter\": [\"==\", \"a..b\", 1]}", 1,
     "a field path has an empty key (leading, trailing or doubled '.')"},
    {"{\"filter\": [\"==\", \"a\", [1]]}", 1,
     "filter: a value must be nil, a boolean, a number or a string"},
    {"{\"filter\": [\"==\", \"a\", {\"b\": 1}]}", 1,
     "filter: a value must be nil, a boolean, a number or a string"},
    {"{\"filter\": [\"==\", \"a\", b\"x\"]}", 1,
     "filter: a value must be nil, a boolean, a number or a string"},
    {"{\"filter\": [\"<\", \"a\", \"x\"]}", 1, "filter: <, <=, > and >= compare with a number"},
    {"{\"filter\": [\">=\", \"a\", null]}", 1, "filter: <, <=, > and >= compare with a number"},
    {"{\"filter\": [\"in\", \"a\", 1]}", 1, "filter: in takes a field and an array of values"},
    {"{\"filter\": [\"in\", \"a\"]}", 1, "filter: in takes a field and an array of values"},
    {"{\"filter\": [\"in\", \"a\", [1, [2]]]}", 1,
     "filter: a value must be nil, a boolean, a number or a string"},
    {"{\"filter\": [\"exists\"]}", 1, "filter: exists takes one field"},
    {"{\"filter\": [\"exists\", \"a\", 1]}", 1, "filter: exists takes one field"},
    {"{\"filter\": [\"and\"]}", 1, "filter: and/or take at least one expression"},
    {"{\"filter\": [\"or\"]}", 1, "filter: and/or take at least one expression"},
    {"{\"filter\": [\"not\"]}", 1, "filter: not takes one expression"},
    {"{\"filter\": [\"not\", [\"exists\", \"a\"], [\"exists\", \"b\"]]}", 1,
     "filter: not takes one expression"},
    {"{\"filter\": [\"and\", [\"exists\", \"a\"], 5]}", 1,
     "filter: an expression must be a non-empty array"},
    {"{\"fields\": \"a\"}", 1, "fields must be an array of field paths"},
    {"{\"fields\": []}", 1, "fields must list 1 to 32 paths"},
    {"{\"fields\": [\"a\", 1]}", 1, "a field path must be a string"},
    {"{\"fields\": [\"a..b\"]}", 1,
     "a field path has an empty key (leading, trailing or doubled '.')"},
    {"{\"rate\": 5}", 1, "rate must be a map {n, ms}"},
    {"{\"rate\": {\"n\": 5}}", 1, "rate needs both n and ms"},
    {"{\"rate\": {\"ms\": 5}}", 1, "rate needs both n and ms"},
    {"{\"rate\": {\"n\": 0, \"ms\": 5}}", 1, "rate.n must be from 1 to 1000000"},
    {"{\"rate\": {\"n\": 1000001, \"ms\": 5}}", 1, "rate.n must be from 1 to 1000000"},
    {"{\"rate\": {\"n\": -1, \"ms\": 5}}", 1, "rate.n must be from 1 to 1000000"},
    {"{\"rate\": {\"n\": 1.0, \"ms\": 5}}", 1, "rate.n must be from 1 to 1000000"},
    {"{\"rate\": {\"n\": 1, \"ms\": 0}}", 1, "rate.ms must be from 1 to 86400000 (one day)"},
    {"{\"rate\": {\"n\": 1, \"ms\": 86400001}}", 1, "rate.ms must be from 1 to 86400000 (one day)"},
    {"{\"rate\": {\"n\": 1, \"n\": 2, \"ms\": 1}}", 1, "a transform map repeats a key"},
    {"{\"conflate\": []}", 1, "conflate must be a map {ms, key?}"},
    {"{\"conflate\": {\"key\": \"a\"}}", 1, "conflate needs ms"},
    {"{\"conflate\": {\"ms\": 0}}", 1, "conflate.ms must be from 1 to 3600000 (one hour)"},
    {"{\"conflate\": {\"ms\": 3600001}}", 1, "conflate.ms must be from 1 to 3600000 (one hour)"},
    {"{\"conflate\": {\"ms\": 1, \"key\": 5}}", 1, "a field path must be a string"},
    {"{\"conflate\": {\"ms\": 1, \"key\": \"\"}}", 1, "a field path is empty"},
    {"{\"conflate\": {\"ms\": 1, \"key\": \"a\", \"key\": \"b\"}}", 1,
     "a transform map repeats a key"},
    {"{\"conflate\": {\"ms\": 1, \"key\": null, \"key\": \"b\"}}", 1,
     "a transform map repeats a key"},
    {"{\"batch\": true}", 1, "batch must be a map {max, ms}"},
    {"{\"batch\": {\"max\": 2}}", 1, "batch needs both max and ms"},
    {"{\"batch\": {\"max\": 0, \"ms\": 1}}", 1, "batch.max must be from 1 to 1024"},
    {"{\"batch\": {\"max\": 1025, \"ms\": 1}}", 1, "batch.max must be from 1 to 1024"},
    {"{\"batch\": {\"max\": 1, \"ms\": 60001}}", 1,
     "batch.ms must be from 1 to 60000 (one minute)"},
    {"{\"presence\": \"alice\"}", 1, "presence must be binary (msgpack bin)"},
    {"{\"presence\": b\"alice\"}", 0, "presence needs an exact topic, not a pattern"},
    {"{\"filter\": [\"exists\", \"a\"], \"filter\": [\"exists\", \"b\"]}", 1,
     "an option is given twice"},
    {"{\"rate\": null, \"rate\": {\"n\": 1, \"ms\": 1}}", 1, "an option is given twice"},
};

START_TEST(refusals)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hr_xform_t *x = (hr_xform_t *)1;
        const char *why = NULL;
        int rc = decode(bad[i].opts, bad[i].exact, &x, &why);
        ck_assert_msg(rc == HR_EOPTION, "%s: %d", bad[i].opts, rc);
        ck_assert_ptr_null(x);
        ck_assert_msg(why && !strcmp(why, bad[i].why), "%s: got \"%s\"", bad[i].opts,
                      why ? why : "(null)");
    }
    /* Presence above 1 KiB. */
    char big[1200], xs[1100];
    hr_xform_t *x;
    const char *why;
    memset(xs, 'x', sizeof(xs));
    snprintf(big, sizeof(big), "{\"presence\": b\"%.*s\"}", 1025, xs);
    ck_assert_int_eq(decode(big, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "presence is larger than 1 KiB");
    snprintf(big, sizeof(big), "{\"presence\": b\"%.*s\"}", 1024, xs);
    ck_assert_int_eq(decode(big, 1, &x, &why), HR_OK);
    ck_assert_uint_eq(x->presence.n, 1024);
    hr__xform_free(&x);
}
END_TEST

START_TEST(malformed_options)
{
    /* Truncations of a valid map at every length, and raw garbage. */
    size_t n;
    uint8_t *p = mp("{\"filter\": [\"and\", [\"==\", \"a.b\", \"x\"], [\"in\", \"c\", [1, 2.5, "
                    "null]]], \"fields\": [\"a\"], \"rate\": {\"n\": 1, \"ms\": 2}, \"x\": [1]}",
                    &n);
    for (size_t k = 1; k < n; k++) {
        hr_xform_t *x;
        const char *why = NULL;
        uint8_t *cut = malloc(k);
        memcpy(cut, p, k);
        ck_assert_int_eq(hr__xform_new(cut, k, 1, &x, &why), HR_EOPTION);
        ck_assert_ptr_nonnull(why);
        ck_assert_ptr_null(x);
        free(cut);
    }
    hr_xform_t *x;
    const char *why;
    uint8_t *more = malloc(n + 1);
    memcpy(more, p, n);
    more[n] = 0xc0;
    ck_assert_int_eq(hr__xform_new(more, n + 1, 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "trailing bytes after the option map");
    free(more);
    free(p);
    static const uint8_t huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'x'};
    ck_assert_int_eq(hr__xform_new(huge, sizeof(huge), 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "malformed option map");
    static const uint8_t c1[] = {0x81, 0xa1, 'x', 0xc1};
    ck_assert_int_eq(hr__xform_new(c1, sizeof(c1), 1, &x, &why), HR_EOPTION);
    ck_assert_str_eq(why, "malformed option map");
    ck_assert_int_eq(hr__xform_new(c1, sizeof(c1), 1, &x, NULL), HR_EOPTION); /* why optional */
}
END_TEST

/* ---- filter --------------------------------------------------------------------------- */

static const char *msg = "{\"user\": {\"id\": 42, \"name\": \"ann\", \"tags\": [\"a\"]}, "
                         "\"kind\": \"chat\", \"unread\": 3, \"score\": 2.5, \"neg\": -7, "
                         "\"big\": 18446744073709551615, \"ok\": true, \"none\": null}";

START_TEST(operators)
{
    ck_assert(match("[\"==\", \"kind\", \"chat\"]", msg));
    ck_assert(!match("[\"==\", \"kind\", \"cha\"]", msg));
    ck_assert(!match("[\"==\", \"kind\", \"chats\"]", msg));
    ck_assert(match("[\"!=\", \"kind\", \"typing\"]", msg));
    ck_assert(!match("[\"!=\", \"kind\", \"chat\"]", msg));
    ck_assert(match("[\"<\", \"unread\", 4]", msg));
    ck_assert(!match("[\"<\", \"unread\", 3]", msg));
    ck_assert(match("[\"<=\", \"unread\", 3]", msg));
    ck_assert(!match("[\"<=\", \"unread\", 2]", msg));
    ck_assert(match("[\">\", \"unread\", 0]", msg));
    ck_assert(!match("[\">\", \"unread\", 3]", msg));
    ck_assert(match("[\">=\", \"unread\", 3]", msg));
    ck_assert(!match("[\">=\", \"unread\", 4]", msg));
    ck_assert(match("[\"in\", \"kind\", [\"typing\", \"chat\"]]", msg));
    ck_assert(!match("[\"in\", \"kind\", [\"typing\", 1, null]]", msg));
    ck_assert(!match("[\"in\", \"kind\", []]", msg));
    ck_assert(match("[\"in\", \"unread\", [\"3\", 3.0]]", msg));
    ck_assert(match("[\"exists\", \"none\"]", msg));
    ck_assert(match("[\"exists\", \"user.tags\"]", msg));
    ck_assert(!match("[\"exists\", \"nothing\"]", msg));
    ck_assert(match("[\"==\", \"ok\", true]", msg));
    ck_assert(!match("[\"==\", \"ok\", false]", msg));
    ck_assert(match("[\"!=\", \"ok\", false]", msg));
    ck_assert(!match("[\"==\", \"ok\", 1]", msg)); /* a boolean is not a number */
    ck_assert(match("[\"==\", \"none\", null]", msg));
    ck_assert(!match("[\"==\", \"kind\", null]", msg));
    /* Strings compare bytewise, only with strings. */
    ck_assert(!match("[\"==\", \"unread\", \"3\"]", msg));
    ck_assert(match("[\"!=\", \"unread\", \"3\"]", msg));
    /* A container is present but equal to no constant and unordered. */
    ck_assert(!match("[\"==\", \"user\", null]", msg));
    ck_assert(match("[\"!=\", \"user\", null]", msg));
    ck_assert(!match("[\">\", \"user\", 0]", msg));
    ck_assert(!match("[\"<=\", \"user\", 0]", msg));
}
END_TEST

START_TEST(numbers)
{
    ck_assert(match("[\"==\", \"unread\", 3.0]", msg));
    ck_assert(match("[\"<\", \"unread\", 3.5]", msg));
    ck_assert(match("[\">\", \"score\", 2]", msg));
    ck_assert(match("[\"<\", \"score\", 3]", msg));
    ck_assert(match("[\"==\", \"score\", 2.5]", msg));
    ck_assert(match("[\"<\", \"neg\", 0]", msg));
    ck_assert(match("[\"<\", \"neg\", -6.5]", msg));
    ck_assert(match("[\">\", \"neg\", -7.5]", msg));
    ck_assert(match("[\"==\", \"neg\", -7.0]", msg));
    ck_assert(match("[\">\", \"neg\", -8]", msg));
    ck_assert(!match("[\">\", \"neg\", 5]", msg));
    ck_assert(match("[\"==\", \"big\", 18446744073709551615]", msg));
    ck_assert(match("[\">\", \"big\", 9223372036854775807]", msg));
    ck_assert(match("[\">\", \"big\", -1]", msg));
    ck_assert(match("[\"<\", \"big\", 1.8446744073709552e19]", msg)); /* 2^64 */
    ck_assert(match("[\">\", \"big\", 1.8446744073709550e19]", msg));
    /* 2^53 + 1 does not equal the double 2^53 (a conversion would say it does). */
    ck_assert(match("[\">\", \"x\", 9007199254740992.0]", "{\"x\": 9007199254740993}"));
    ck_assert(!match("[\"==\", \"x\", 9007199254740992.0]", "{\"x\": 9007199254740993}"));
    ck_assert(match("[\"==\", \"x\", 9007199254740992]", "{\"x\": 9007199254740992.0}"));
    ck_assert(match("[\"<\", \"x\", -9223372036854775807]", "{\"x\": -9223372036854775808}"));
    ck_assert(match("[\"<\", \"x\", -9.2233720368547e18]", "{\"x\": -9223372036854775808}"));
    ck_assert(match("[\"==\", \"x\", -9.223372036854775808e18]", "{\"x\": -9223372036854775808}"));
    ck_assert(match("[\"==\", \"x\", 0]", "{\"x\": -0.0}"));
    ck_assert(match("[\"<\", \"x\", 0]", "{\"x\": -1e300}"));
    ck_assert(match("[\">\", \"x\", 18446744073709551615]", "{\"x\": 1e300}"));
    /* Every integer encoding of the same number is equal. */
    static const uint8_t enc[][10] = {
        {0x81, 0xa1, 'x', 0x05},
        {0x81, 0xa1, 'x', 0xcc, 0x05},
        {0x81, 0xa1, 'x', 0xcd, 0x00, 0x05},
        {0x81, 0xa1, 'x', 0xd2, 0x00, 0x00, 0x00, 0x05},
        {0x81, 0xa1, 'x', 0xca, 0x40, 0xa0, 0x00, 0x00}, /* float 32: 5.0 */
    };
    static const size_t len[] = {4, 5, 6, 8, 8};
    for (int i = 0; i < 5; i++) {
        ck_assert(match_raw("[\"==\", \"x\", 5]", enc[i], len[i]));
        ck_assert(match_raw("[\"==\", \"x\", 5.0]", enc[i], len[i]));
    }
    static const uint8_t m1[] = {0x81, 0xa1, 'x', 0xd0, 0xff}; /* int 8: -1 */
    ck_assert(match_raw("[\"==\", \"x\", -1]", m1, sizeof(m1)));
    ck_assert(match_raw("[\"<\", \"x\", 0]", m1, sizeof(m1)));
    /* NaN is unordered: no comparison holds, != does. */
    static const uint8_t nan[] = {0x81, 0xa1, 'x', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0};
    ck_assert(!match_raw("[\"==\", \"x\", 1]", nan, sizeof(nan)));
    ck_assert(!match_raw("[\"<\", \"x\", 1]", nan, sizeof(nan)));
    ck_assert(!match_raw("[\">=\", \"x\", 1.5]", nan, sizeof(nan)));
    ck_assert(match_raw("[\"!=\", \"x\", 1]", nan, sizeof(nan)));
}
END_TEST

START_TEST(missing_and_not_maps)
{
    static const char *leaves[] = {
        "[\"==\", \"nope\", 1]",      "[\"!=\", \"nope\", 1]",   "[\"<\", \"nope\", 1]",
        "[\">=\", \"nope\", 1]",      "[\"in\", \"nope\", [1]]", "[\"exists\", \"nope\"]",
        "[\"==\", \"user.nope\", 1]", "[\"!=\", \"kind.x\", 1]", "[\"exists\", \"user.id.x\"]"};
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        char nt[200];
        snprintf(nt, sizeof(nt), "[\"not\", %s]", leaves[i]);
        ck_assert_msg(!match(leaves[i], msg), "%s", leaves[i]);
        ck_assert_msg(match(nt, msg), "%s", nt);
    }
    /* Payloads that are not maps, or not msgpack. */
    static const char *notmaps[] = {"5", "\"kind\"", "[\"kind\", \"chat\"]", "null", "b\"x\""};
    for (size_t i = 0; i < sizeof(notmaps) / sizeof(notmaps[0]); i++) {
        ck_assert(!match("[\"!=\", \"kind\", \"x\"]", notmaps[i]));
        ck_assert(!match("[\"exists\", \"kind\"]", notmaps[i]));
        ck_assert(match("[\"not\", [\"exists\", \"kind\"]]", notmaps[i]));
    }
    static const uint8_t junk[][6] = {
        {0x82, 0xa1, 'k', 0x01},             /* map of 2, one entry */
        {0x81, 0xa1, 'k', 0x01, 0xc0},       /* trailing byte */
        {0x81, 0xa1, 'k', 0x01, 0x00},       /* trailing byte */
        {0x82, 0xa1, 'k', 0x01, 0xa1, 0xc1}, /* 0xc1 after the field */
        {0x81, 0xa1, 'k', 0xd9, 0x09, 'x'},  /* truncated string */
    };
    static const size_t jl[] = {4, 5, 5, 6, 6};
    for (int i = 0; i < 5; i++) {
        ck_assert(!match_raw("[\"==\", \"k\", 1]", junk[i], jl[i]));
        ck_assert(!match_raw("[\"exists\", \"k\"]", junk[i], jl[i]));
        ck_assert(match_raw("[\"not\", [\"exists\", \"k\"]]", junk[i], jl[i]));
    }
    ck_assert(!match_raw("[\"exists\", \"k\"]", "", 0));
    ck_assert(match_raw("[\"not\", [\"==\", \"k\", 1]]", "", 0));
}
END_TEST

START_TEST(nesting)
{
    ck_assert(match("[\"==\", \"user.id\", 42]", msg));
    ck_assert(match("[\"==\", \"user.name\", \"ann\"]", msg));
    ck_assert(match("[\"==\", \"a.b.c.d.e.f.g.h\", 1]",
                    "{\"a\": {\"b\": {\"c\": {\"d\": {\"e\": {\"f\": {\"g\": {\"h\": 1}}}}}}}}"));
    /* Keys other than strings never match; the first of duplicate keys wins. */
    ck_assert(!match("[\"exists\", \"1\"]", "{1: 2}"));
    ck_assert(match("[\"==\", \"k\", 1]", "{[1, {\"k\": 2}]: 0, \"k\": 1, \"k\": 2}"));
    ck_assert(!match("[\"==\", \"k\", 2]", "{\"k\": 1, \"k\": 2}"));
    /* and / or / not nest, short-circuit and count children right. */
    ck_assert(match("[\"and\", [\"==\", \"kind\", \"chat\"], [\"or\", [\"==\", \"user.id\", 7], "
                    "[\"in\", \"user.id\", [41, 42]]], [\"not\", [\"exists\", \"muted\"]]]",
                    msg));
    ck_assert(!match("[\"and\", [\"==\", \"kind\", \"chat\"], [\"or\", [\"==\", \"user.id\", 7], "
                     "[\"in\", \"user.id\", [41, 43]]], [\"not\", [\"exists\", \"muted\"]]]",
                     msg));
    ck_assert(match("[\"or\", [\"and\", [\"exists\", \"x\"], [\"exists\", \"y\"]], [\"and\", "
                    "[\"exists\", \"kind\"], [\"not\", [\"not\", [\"exists\", \"ok\"]]]]]",
                    msg));
    ck_assert(match("[\"and\", [\"exists\", \"kind\"]]", msg));
    ck_assert(!match("[\"or\", [\"exists\", \"x\"]]", msg));
    ck_assert(!match("[\"or\", [\"and\", [\"exists\", \"kind\"], [\"exists\", \"x\"]], "
                     "[\"exists\", \"y\"]]",
                     msg));
}
END_TEST

/* Every msgpack encoding, each under its own key: lookups skip each one right, typed
 * comparisons read each one right, and projection copies each one verbatim. */
static const struct {
    const char *hex;
    const char *eq; /* a filter value it equals, or NULL */
} kinds[] = {
    {"c0", "null"},
    {"c2", "false"},
    {"c3", "true"},
    {"7f", "127"},
    {"e0", "-32"},
    {"ccff", "255"},
    {"cdffff", "65535"},
    {"ceffffffff", "4294967295"},
    {"cfffffffffffffffff", "18446744073709551615"},
    {"d080", "-128"},
    {"d18000", "-32768"},
    {"d280000000", "-2147483648"},
    {"d38000000000000000", "-9223372036854775808"},
    {"d07f", "127"},
    {"ca3f800000", "1"},
    {"cb3ff8000000000000", "1.5"},
    {"a3616263", "\"abc\""},
    {"d903616263", "\"abc\""},
    {"da0003616263", "\"abc\""},
    {"db00000003616263", "\"abc\""},
    {"c4027879", NULL},
    {"c500027879", NULL},
    {"c6000000027879", NULL},
    {"d401aa", NULL},
    {"d501aabb", NULL},
    {"d601aabbccdd", NULL},
    {"d701aabbccddeeff0011", NULL},
    {"d801aabbccddeeff00112233445566778899", NULL},
    {"c70201aabb", NULL},
    {"c8000201aabb", NULL},
    {"c90000000201aabb", NULL},
    {"920102", NULL},
    {"dc0001c0", NULL},
    {"dd00000001c0", NULL},
    {"81a16b01", NULL},
    {"de0001a16b01", NULL},
    {"df00000001a16b01", NULL},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

START_TEST(every_encoding)
{
    uint8_t pl[1024];
    size_t n = 0, at[NKINDS], len[NKINDS];
    pl[n++] = 0xde; /* map 16 */
    pl[n++] = 0;
    pl[n++] = (uint8_t)(NKINDS + 1);
    for (size_t i = 0; i < NKINDS; i++) {
        pl[n++] = 0xa2; /* key "kA", "kB", ... */
        pl[n++] = 'k';
        pl[n++] = (uint8_t)('A' + i);
        at[i] = n;
        len[i] = unhex(kinds[i].hex, pl + n);
        n += len[i];
    }
    memcpy(pl + n, "\xa1z\x01", 3);
    n += 3;
    ck_assert(match_raw("[\"==\", \"z\", 1]", pl, n));
    char f[128], o[128];
    for (size_t i = 0; i < NKINDS; i++) {
        snprintf(f, sizeof(f), "[\"exists\", \"k%c\"]", (char)('A' + i));
        ck_assert_msg(match_raw(f, pl, n), "%s", kinds[i].hex);
        if (kinds[i].eq) {
            snprintf(f, sizeof(f), "[\"==\", \"k%c\", %s]", (char)('A' + i), kinds[i].eq);
            ck_assert_msg(match_raw(f, pl, n), "%s", f);
            snprintf(f, sizeof(f), "[\"!=\", \"k%c\", %s]", (char)('A' + i), kinds[i].eq);
            ck_assert_msg(!match_raw(f, pl, n), "%s", f);
        }
        /* Projection copies the value's bytes as they are. */
        snprintf(o, sizeof(o), "{\"fields\": [\"z\", \"k%c\"]}", (char)('A' + i));
        hr_xform_t *x = must(o);
        hr_buf_t b;
        hr_buf_init(&b);
        ck_assert_int_eq(hr__xform_project_buf(x, pl, n, &b), 1);
        ck_assert_uint_eq(b.len, 1 + 3 + len[i] + 3);
        ck_assert_int_eq(b.base[0], 0x82);
        ck_assert_mem_eq(b.base + 4, pl + at[i], len[i]);
        ck_assert_mem_eq(b.base + 4 + len[i], "\xa1z\x01", 3);
        hr_buf_destroy(&b);
        hr__xform_free(&x);
    }
}
END_TEST

/* A payload nested far deeper than any limit: evaluation and projection walk it with a
 * counter, never recursion. */
START_TEST(hostile_depth)
{
    size_t depth = 200000, n = 0;
    uint8_t *p = malloc(depth + 16);
    p[n++] = 0x82;
    p[n++] = 0xa1;
    p[n++] = 'd';
    for (size_t i = 0; i < depth; i++)
        p[n++] = 0x91; /* [[[[...]]]] */
    p[n++] = 0xc0;
    p[n++] = 0xa1;
    p[n++] = 'k';
    p[n++] = 0x07;
    ck_assert(match_raw("[\"==\", \"k\", 7]", p, n));
    ck_assert(match_raw("[\"exists\", \"d\"]", p, n));
    ck_assert(!match_raw("[\"==\", \"d.x\", 7]", p, n));
    hr_xform_t *x = must("{\"fields\": [\"k\"]}");
    hr_buf_t b;
    hr_buf_init(&b);
    ck_assert_int_eq(hr__xform_project_buf(x, p, n, &b), 1);
    ck_assert_uint_eq(b.len, 4);
    ck_assert_mem_eq(b.base, "\x81\xa1k\x07", 4);
    hr_buf_destroy(&b);
    hr__xform_free(&x);
    p[3] = 0x92; /* now malformed: the innermost array misses an element */
    ck_assert(!match_raw("[\"==\", \"k\", 7]", p, n));
    free(p);
}
END_TEST

/* ---- projection ---------------------------------------------------------------------- */

/* Projects `json` by `fields` and compares with `want` (sorted keys), or "" for "unchanged". */
static void project(const char *fields, const char *json, const char *want)
{
    char opts[1024];
    size_t n, wn;
    snprintf(opts, sizeof(opts), "{\"fields\": %s}", fields);
    hr_xform_t *x = must(opts);
    uint8_t *p = mp(json, &n);
    hr_buf_t b;
    hr_buf_init(&b);
    hr_buf_append(&b, "pre", 3);
    int rc = hr__xform_project_buf(x, p, n, &b);
    if (!*want) {
        ck_assert_msg(rc == 0, "%s %s: %d", fields, json, rc);
        ck_assert_uint_eq(b.len, 3);
    } else {
        uint8_t *w = mp(want, &wn);
        ck_assert_msg(rc == 1, "%s %s: %d", fields, json, rc);
        ck_assert_msg(b.len - 3 == wn && !memcmp(b.base + 3, w, wn), "%s %s: wrong projection",
                      fields, json);
        ck_assert_uint_le(wn, n);
        ck_assert(hr__mp_check(b.base + 3, b.len - 3));
        free(w);
    }
    hr_buf_destroy(&b);
    free(p);
    hr__xform_free(&x);
}

START_TEST(projection)
{
    project("[\"c\", \"a\"]", "{\"a\": 1, \"b\": 2, \"c\": [3, {\"d\": 4}]}",
            "{\"a\": 1, \"c\": [3, {\"d\": 4}]}");
    project("[\"user.id\", \"kind\", \"user.name\"]", msg,
            "{\"kind\": \"chat\", \"user\": {\"id\": 42, \"name\": \"ann\"}}");
    project("[\"user.id\", \"user\"]", msg,
            "{\"user\": {\"id\": 42, \"name\": \"ann\", \"tags\": [\"a\"]}}");
    /* Missing paths are left out, and so are nested maps left empty. */
    project("[\"nope\", \"unread\"]", msg, "{\"unread\": 3}");
    project("[\"user.nope\", \"kind.x\", \"unread.y\", \"ok\"]", msg, "{\"ok\": true}");
    project("[\"nope\"]", msg, "{}");
    project("[\"a.b.c\", \"a.x\"]", "{\"a\": {\"b\": {\"z\": 1}, \"x\": null}}",
            "{\"a\": {\"x\": null}}");
    project("[\"a.b.c\"]", "{\"a\": {\"b\": {\"c\": {\"d\": 1}, \"z\": 1}, \"y\": 2}}",
            "{\"a\": {\"b\": {\"c\": {\"d\": 1}}}}");
    /* Keys other than strings and duplicate keys: the first string key wins. */
    project("[\"k\"]", "{1: 2, \"k\": 1, \"k\": 2}", "{\"k\": 1}");
    project("[\"a.k\"]", "{\"a\": 5, \"a\": {\"k\": 1}}", "{}");
    /* Not a map, or not msgpack: unchanged. */
    project("[\"a\"]", "[1, 2]", "");
    project("[\"a\"]", "7", "");
    project("[\"a\"]", "b\"{}\"", "");
    /* Keys that sort close: "a-c" < "a" < "a.b" bytewise but "a" groups with "a.b". */
    project("[\"a-c\", \"a.b\", \"a0\"]", "{\"a\": {\"b\": 1, \"c\": 2}, \"a-c\": 3, \"a0\": 4}",
            "{\"a\": {\"b\": 1}, \"a-c\": 3, \"a0\": 4}");
}
END_TEST

START_TEST(projection_edges)
{
    hr_xform_t *x = must("{\"fields\": [\"a\"]}");
    hr_buf_t b;
    hr_buf_init(&b);
    static const uint8_t trunc[] = {0x82, 0xa1, 'a', 0x01};
    ck_assert_int_eq(hr__xform_project_buf(x, trunc, sizeof(trunc), &b), 0);
    ck_assert_int_eq(hr__xform_project_buf(x, NULL, 0, &b), 0);
    ck_assert_uint_eq(b.len, 0);
    hr_buf_destroy(&b);
    hr__xform_free(&x);
    /* Without fields, no projection. */
    x = must("{\"filter\": [\"exists\", \"a\"]}");
    ck_assert_int_eq(hr__xform_project_buf(x, "\x81\xa1\x61\x01", 4, &b), 0);
    ck_assert_uint_eq(hr__xform_fields_key(x).n, 0);
    hr__xform_free(&x);
    ck_assert_int_eq(hr__xform_project_buf(NULL, "\x80", 1, &b), 0);
    hr_buf_destroy(&b);
}
END_TEST

static int refuse(void *arg, const void *p, size_t n)
{
    int *calls = arg;
    return ++*calls >= 2 ? -1 : 0;
}

START_TEST(projection_writer_stops)
{
    hr_xform_t *x = must("{\"fields\": [\"a\", \"b\"]}");
    int calls = 0;
    ck_assert_int_eq(hr__xform_project(x, "\x82\xa1\x61\x01\xa1\x62\x02", 7, refuse, &calls),
                     HR_ECANCELED);
    hr__xform_free(&x);
}
END_TEST

static hr_xform_t *fields_of(const char *list)
{
    char opts[512];
    snprintf(opts, sizeof(opts), "{\"fields\": %s}", list);
    return must(opts);
}

static int same_key(const char *a, const char *b)
{
    hr_xform_t *x = fields_of(a), *y = fields_of(b);
    hr_slice_t kx = hr__xform_fields_key(x), ky = hr__xform_fields_key(y);
    int same = kx.n == ky.n && !memcmp(kx.p, ky.p, kx.n);
    ck_assert_int_eq(same, x->fields_hash == y->fields_hash);
    hr__xform_free(&x);
    hr__xform_free(&y);
    return same;
}

START_TEST(projection_keys)
{
    ck_assert(same_key("[\"a\", \"b\"]", "[\"b\", \"a\"]"));
    ck_assert(same_key("[\"a\", \"b\", \"a\"]", "[\"b\", \"a\"]"));
    ck_assert(same_key("[\"a.x\", \"a\", \"b.c\", \"b.c.d\"]", "[\"b.c\", \"a\"]"));
    ck_assert(same_key("[\"u.id\", \"u.name\", \"kind\"]", "[\"kind\", \"u.name\", \"u.id\"]"));
    ck_assert(!same_key("[\"a\"]", "[\"a.x\"]"));
    ck_assert(!same_key("[\"a\", \"b\"]", "[\"a\"]"));
    ck_assert(!same_key("[\"ab\"]", "[\"a.b\"]"));
    /* The key is the msgpack array of the normalized paths, and its hash is fixed. */
    hr_xform_t *x = fields_of("[\"b\", \"a.x\", \"a\"]");
    hr_slice_t k = hr__xform_fields_key(x);
    ck_assert_uint_eq(k.n, 5);
    ck_assert_mem_eq(k.p, "\x92\xa1\x61\xa1\x62", 5);
    ck_assert(x->fields_hash != 0);
    hr__xform_free(&x);
}
END_TEST

START_TEST(conflate_key)
{
    hr_xform_t *x = must("{\"conflate\": {\"ms\": 100, \"key\": \"user.id\"}}");
    size_t n;
    uint8_t *p = mp(msg, &n);
    hr_slice_t v;
    ck_assert_int_eq(hr__xform_conflate_key(x, p, n, &v), 1);
    ck_assert_uint_eq(v.n, 1);
    ck_assert_int_eq((uint8_t)v.p[0], 42);
    ck_assert_int_eq(hr__xform_conflate_key(x, p, n - 1, &v), 0);
    free(p);
    p = mp("{\"user\": 1}", &n);
    ck_assert_int_eq(hr__xform_conflate_key(x, p, n, &v), 0);
    free(p);
    hr__xform_free(&x);
    x = must("{\"conflate\": {\"ms\": 100}}");
    ck_assert_int_eq(hr__xform_conflate_key(x, "\x80", 1, &v), 0);
    hr__xform_free(&x);
}
END_TEST

static Suite *xform_suite(void)
{
    Suite *s = suite_create("xform");
    TCase *t = tcase_create("options");
    tcase_add_test(t, no_transforms);
    tcase_add_test(t, all_options);
    tcase_add_test(t, limits);
    tcase_add_test(t, refusals);
    tcase_add_test(t, malformed_options);
    suite_add_tcase(s, t);
    t = tcase_create("filter");
    tcase_add_test(t, operators);
    tcase_add_test(t, numbers);
    tcase_add_test(t, missing_and_not_maps);
    tcase_add_test(t, nesting);
    tcase_add_test(t, every_encoding);
    tcase_add_test(t, hostile_depth);
    tcase_add_test(t, conflate_key);
    tcase_set_timeout(t, 30);
    suite_add_tcase(s, t);
    t = tcase_create("fields");
    tcase_add_test(t, projection);
    tcase_add_test(t, projection_edges);
    tcase_add_test(t, projection_writer_stops);
    tcase_add_test(t, projection_keys);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(xform_suite)
