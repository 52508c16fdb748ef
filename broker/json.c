/* SPDX-License-Identifier: MIT */
/* A small bounds-checked JSON reader for JWT claims: a cursor, no allocation, no tree. */
#include <stdlib.h>
#include <string.h>

#include "herald/status.h"
#include "json.h"

#define DEPTH_MAX 16
#define NUMBER_MAX 64 /* longest number text read by hr__json_number() */

void hr__json_init(hr_json_t *j, const char *p, size_t n)
{
    j->p = p;
    j->end = p + n;
}

static void ws(hr_json_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16;
        if (d > 15)
            return HR_EINVAL;
        *v = *v << 4 | d;
    }
    return HR_OK;
}

int hr__json_str(hr_json_t *j, char *out, size_t cap, size_t *len)
{
    size_t n = 0;
    ws(j);
    if (j->p >= j->end || *j->p != '"')
        return HR_EINVAL;
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20)
            return HR_EINVAL;
        if (c == '\\') {
            if (j->p >= j->end)
                return HR_EINVAL;
            char e = *j->p++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                c = (unsigned char)e;
                break;
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                c = 0x80; /* control characters: never valid in a topic */
                break;
            case 'u': {
                unsigned v;
                if (j->end - j->p < 4 || hex4(j->p, &v) != HR_OK)
                    return HR_EINVAL;
                j->p += 4;
                c = v < 0x80 ? (unsigned char)v : 0x80;
                break;
            }
            default:
                return HR_EINVAL;
            }
        } else if (c >= 0x80) {
            c = 0x80;
        }
        if (out && n < cap)
            out[n] = (char)c;
        n++;
    }
    if (j->p >= j->end)
        return HR_EINVAL;
    j->p++;
    if (len)
        *len = n;
    return HR_OK;
}

/* The length of the digits at `p` (before `end`). */
static size_t digits(const char *p, const char *end)
{
    size_t n = 0;
    while (p + n < end && p[n] >= '0' && p[n] <= '9')
        n++;
    return n;
}

/*
 * RFC 8259's grammar, checked before strtod() sees the bytes: strtod alone
 * would also take hex, "inf", "nan", a leading '+' or whitespace, and it
 * needs a NUL-terminated copy anyway since the input is not terminated.
 */
int hr__json_number(hr_json_t *j, double *v)
{
    char buf[NUMBER_MAX + 1];
    const char *s;
    size_t n;
    ws(j);
    s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    n = digits(j->p, j->end);
    if (n == 0 || (n > 1 && *j->p == '0'))
        return HR_EINVAL;
    j->p += n;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if ((n = digits(j->p, j->end)) == 0)
            return HR_EINVAL;
        j->p += n;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if ((n = digits(j->p, j->end)) == 0)
            return HR_EINVAL;
        j->p += n;
    }
    n = (size_t)(j->p - s);
    if (n > NUMBER_MAX)
        return HR_EINVAL;
    memcpy(buf, s, n);
    buf[n] = 0;
    *v = strtod(buf, NULL);
    return HR_OK;
}

int hr__json_open(hr_json_t *j, char open)
{
    ws(j);
    if (j->p >= j->end || *j->p != open)
        return HR_EINVAL;
    j->p++;
    return HR_OK;
}

int hr__json_next(hr_json_t *j, char open, size_t *i)
{
    char close = open == '[' ? ']' : '}';
    ws(j);
    if (j->p >= j->end)
        return HR_EINVAL;
    if (*j->p == close) {
        j->p++;
        return 0;
    }
    if (*i > 0 && *j->p++ != ',')
        return HR_EINVAL;
    (*i)++;
    return 1;
}

int hr__json_key(hr_json_t *j, char *out, size_t cap, size_t *len)
{
    if (hr__json_str(j, out, cap, len) != HR_OK)
        return HR_EINVAL;
    ws(j);
    if (j->p >= j->end || *j->p++ != ':')
        return HR_EINVAL;
    return HR_OK;
}

static int skip(hr_json_t *j, int depth);

/* Walks an array or object, skipping each value (and reading keys). */
static int skip_container(hr_json_t *j, int depth)
{
    char open = *j->p++;
    size_t i = 0;
    int r;
    while ((r = hr__json_next(j, open, &i)) == 1) {
        if (open == '{' && hr__json_key(j, NULL, 0, NULL) != HR_OK)
            return HR_EINVAL;
        if (skip(j, depth + 1) != HR_OK)
            return HR_EINVAL;
    }
    return r;
}

/*
 * Numbers are skipped by their characters, not their grammar: a claim
 * Herald does not read need not be checked more strictly than that.
 */
static int skip(hr_json_t *j, int depth)
{
    static const char *const lits[] = {"true", "false", "null"};
    ws(j);
    if (j->p >= j->end || depth > DEPTH_MAX)
        return HR_EINVAL;
    char c = *j->p;
    if (c == '"')
        return hr__json_str(j, NULL, 0, NULL);
    if (c == '[' || c == '{')
        return skip_container(j, depth);
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(lits[i]);
        if ((size_t)(j->end - j->p) >= n && memcmp(j->p, lits[i], n) == 0) {
            j->p += n;
            return HR_OK;
        }
    }
    const char *start = j->p;
    while (j->p < j->end && *j->p && strchr("+-.0123456789eE", *j->p))
        j->p++;
    return j->p > start ? HR_OK : HR_EINVAL;
}

int hr__json_skip(hr_json_t *j)
{
    return skip(j, 1);
}

int hr__json_end(hr_json_t *j)
{
    ws(j);
    return j->p == j->end ? HR_OK : HR_EINVAL;
}
