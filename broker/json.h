/* SPDX-License-Identifier: MIT */
/* A small bounds-checked JSON reader for JWT claims: a cursor, no allocation, no tree. */
#ifndef HERALD_BROKER_JSON_H
#define HERALD_BROKER_JSON_H

#include <stddef.h>

/*
 * A cursor over `n` bytes that need not be NUL-terminated. Each reader
 * skips the whitespace in front of what it reads. After a failure the
 * cursor is somewhere inside the bad value: give up on the document.
 */
typedef struct hr_json_s {
    const char *p;   /* private: next byte */
    const char *end; /* private: one past the last byte */
} hr_json_t;

void hr__json_init(hr_json_t *j, const char *p, size_t n);

/**
 * Reads a string. Its decoded bytes go to `out` (at most `cap` of them,
 * `out` may be NULL) and its full decoded length to `*len` (may be NULL),
 * so a caller sees a string longer than `cap` by `*len > cap`. Characters
 * outside ASCII and escaped control characters decode to byte 0x80, which
 * no topic accepts. HR_OK, or HR_EINVAL.
 */
int hr__json_str(hr_json_t *j, char *out, size_t cap, size_t *len);

/**
 * Reads a number in strict JSON syntax into `*v` (one too large for a
 * double reads as infinity). HR_OK, or HR_EINVAL when the next value is not
 * a number (a string "12" is not) or is written in more than 64 characters.
 */
int hr__json_number(hr_json_t *j, double *v);

/**
 * Skips one value of any type. HR_OK, or HR_EINVAL (also for a value nested
 * more than 16 levels deep: a scalar is one level, `[1]` two).
 */
int hr__json_skip(hr_json_t *j);

/** Enters an array (`open` '[') or object ('{'). HR_OK, or HR_EINVAL. */
int hr__json_open(hr_json_t *j, char open);

/**
 * Steps to the next member of the array or object entered with `open`.
 * `*i` counts the members seen: set it to 0 after hr__json_open(). Returns
 * 1 when a member follows (read its value, or for an object its key with
 * hr__json_key() and then its value), 0 after the closing bracket, or
 * HR_EINVAL (a missing comma, a trailing comma, the end of input).
 */
int hr__json_next(hr_json_t *j, char open, size_t *i);

/** Reads an object member's key and the colon after it, like hr__json_str(). */
int hr__json_key(hr_json_t *j, char *out, size_t cap, size_t *len);

/** HR_OK if nothing but whitespace is left, else HR_EINVAL. */
int hr__json_end(hr_json_t *j);

#endif
