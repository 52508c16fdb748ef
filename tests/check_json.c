/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/json.c: strings, numbers, skipping, arrays and objects, truncation. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "herald/status.h"
#include "hr_check.h"
#include "json.h"

/* A cursor over a heap copy of exactly strlen(s) bytes, so ASan sees any over-read. */
typedef struct doc_s {
    hr_json_t j;
    char *copy;
} doc_t;

static hr_json_t *doc_open(doc_t *d, const char *s, size_t n)
{
    d->copy = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(d->copy);
    memcpy(d->copy, s, n);
    hr__json_init(&d->j, d->copy, n);
    return &d->j;
}

static void doc_close(doc_t *d)
{
    free(d->copy);
    d->copy = NULL;
}

START_TEST(strings)
{
    doc_t d;
    char out[8];
    size_t n;
    const char *esc = " \"a\\\"\\\\\\/\\u0041\\u00e9\\n\xc3\xa9\" ";
    hr_json_t *j = doc_open(&d, esc, strlen(esc));
    ck_assert_int_eq(hr__json_str(j, out, sizeof(out), &n), HR_OK);
    ck_assert_uint_eq(n, 9); /* a " \ / A, then 0x80 for \u00e9, \n and each UTF-8 byte */
    ck_assert_int_eq(memcmp(out, "a\"\\/A\x80\x80\x80", 8), 0);
    ck_assert_int_eq(hr__json_end(j), HR_OK);
    doc_close(&d);
    /* Longer than `cap`: read whole, the length says so. */
    j = doc_open(&d, "\"0123456789\"", 12);
    ck_assert_int_eq(hr__json_str(j, out, 4, &n), HR_OK);
    ck_assert_uint_eq(n, 10);
    ck_assert_int_eq(memcmp(out, "0123", 4), 0);
    doc_close(&d);
    static const char *const bad[] = {"",          "x",           "\"abc",    "\"\\x\"",
                                      "\"\\u12\"", "\"\\u12g4\"", "\"a\nb\"", "\"\\"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = doc_open(&d, bad[i], strlen(bad[i]));
        ck_assert_msg(hr__json_str(j, NULL, 0, NULL) == HR_EINVAL, "accepted: %s", bad[i]);
        doc_close(&d);
    }
}
END_TEST

START_TEST(numbers)
{
    static const struct {
        const char *s;
        double v;
    } good[] = {
        {"0", 0},
        {"-0", 0},
        {"7", 7},
        {"1767225600", 1767225600},
        {"1.5", 1.5},
        {"-10.25", -10.25},
        {"1e3", 1000},
        {"1E+3", 1000},
        {"25e-2", 0.25},
        {" 42 ", 42},
        {"1e400", HUGE_VAL},
    };
    doc_t d;
    double v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        hr_json_t *j = doc_open(&d, good[i].s, strlen(good[i].s));
        ck_assert_msg(hr__json_number(j, &v) == HR_OK, "refused: %s", good[i].s);
        ck_assert_msg(v == good[i].v, "%s read as %g", good[i].s, v);
        ck_assert_int_eq(hr__json_end(j), HR_OK);
        doc_close(&d);
    }
    /* strtod would take most of these; JSON does not. */
    static const char *const bad[] = {"",     "-",    "+1",   "01",  ".5",  "1.",
                                      "1e",   "1e+",  "0x10", "inf", "nan", "\"1\"",
                                      "true", "null", "-.5",  "- 1", "[1]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hr_json_t *j = doc_open(&d, bad[i], strlen(bad[i]));
        int r = hr__json_number(j, &v);
        if (r == HR_OK)
            r = hr__json_end(j); /* "0x10": the number 0, then junk */
        ck_assert_msg(r == HR_EINVAL, "accepted: %s", bad[i]);
        doc_close(&d);
    }
    /* Longer than any date needs: refused rather than cut. */
    char big[80];
    memset(big, '1', sizeof(big));
    hr_json_t *j = doc_open(&d, big, sizeof(big));
    ck_assert_int_eq(hr__json_number(j, &v), HR_EINVAL);
    doc_close(&d);
}
END_TEST

/* Walks an object as the `herald` claim is read, counting the strings of its "a" arrays. */
static int walk(const char *s, size_t len, int *nstr)
{
    doc_t d;
    hr_json_t *j = doc_open(&d, s, len);
    size_t i = 0, k, n;
    char key[8];
    int r;
    *nstr = 0;
    if ((r = hr__json_open(j, '{')) != HR_OK)
        goto out;
    while ((r = hr__json_next(j, '{', &i)) == 1) {
        if ((r = hr__json_key(j, key, sizeof(key), &n)) != HR_OK)
            goto out;
        if (n == 1 && key[0] == 'a') {
            if ((r = hr__json_open(j, '[')) != HR_OK)
                goto out;
            k = 0;
            while ((r = hr__json_next(j, '[', &k)) == 1) {
                if ((r = hr__json_str(j, NULL, 0, NULL)) != HR_OK)
                    goto out;
                (*nstr)++;
            }
            if (r != HR_OK)
                goto out;
        } else if ((r = hr__json_skip(j)) != HR_OK) {
            goto out;
        }
    }
    if (r == HR_OK)
        r = hr__json_end(j);
out:
    doc_close(&d);
    return r;
}

START_TEST(containers)
{
    int n;
    ck_assert_int_eq(walk("{}", 2, &n), HR_OK);
    ck_assert_int_eq(walk(" { \"a\" : [ ] } ", 15, &n), HR_OK);
    ck_assert_int_eq(n, 0);
    const char *doc = "{\"x\":{\"y\":[1,-2.5e3,true,false,null,\"z\",{}]},\"a\":[\"p\",\"q\"],"
                      "\"a-much-longer-key\":\"v\"}";
    ck_assert_int_eq(walk(doc, strlen(doc), &n), HR_OK);
    ck_assert_int_eq(n, 2);
    static const char *const bad[] = {
        "",
        "[]",
        "{",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\" 1}",
        "{\"a\":[1]}",
        "{\"a\":[\"p\",]}",
        "{\"a\":[\"p\" \"q\"]}",
        "{\"x\":1,}",
        "{,}",
        "{\"x\":1 \"y\":2}",
        "{\"x\":tru}",
        "{\"x\":1} {}",
        "{\"x\":[}",
        "{\"x\":{\"y\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(walk(bad[i], strlen(bad[i]), &n) == HR_EINVAL, "accepted: %s", bad[i]);
    /* Every cut of a valid document is refused, and never read past. */
    for (size_t cut = 0; cut < strlen(doc); cut++)
        ck_assert_msg(walk(doc, cut, &n) == HR_EINVAL, "accepted the first %zu bytes", cut);
}
END_TEST

START_TEST(depth_limit)
{
    char s[128];
    doc_t d;
    /* hr__json_skip() takes 16 levels (a scalar is one, [1] two) and refuses the 17th. */
    for (int depth = 14; depth <= 16; depth++) {
        int n = 0;
        for (int i = 0; i < depth; i++)
            s[n++] = '[';
        s[n++] = '1';
        for (int i = 0; i < depth; i++)
            s[n++] = ']';
        hr_json_t *j = doc_open(&d, s, (size_t)n);
        ck_assert_int_eq(hr__json_skip(j), depth + 1 <= 16 ? HR_OK : HR_EINVAL);
        doc_close(&d);
    }
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *t = tcase_create("values");
    tcase_add_test(t, strings);
    tcase_add_test(t, numbers);
    suite_add_tcase(s, t);
    t = tcase_create("containers");
    tcase_add_test(t, containers);
    tcase_add_test(t, depth_limit);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(json_suite)
