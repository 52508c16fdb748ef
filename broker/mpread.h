/* SPDX-License-Identifier: MIT */
/* A bounds-checked msgpack reader for untrusted bytes: one value at a time, no allocation. */
#ifndef HERALD_BROKER_MPREAD_H
#define HERALD_BROKER_MPREAD_H

#include <stddef.h>
#include <stdint.h>

#include "herald/protocol.h"

/*
 * Subscription transforms read two kinds of untrusted msgpack: the SUB option
 * map and every payload they filter or project. Neither may allocate, and a
 * payload may nest as deeply as its bytes allow, so this reader decodes one
 * header at a time and skips values iteratively (a counter, not recursion).
 * Every declared count is checked against the bytes actually left, so no
 * count can promise more than the input holds.
 */

/* Kinds of hr_mp_val_t. */
enum hr_mp_kind {
    HR_MP_NIL,
    HR_MP_BOOL,
    HR_MP_POS,   /* integer >= 0, in .u */
    HR_MP_NEG,   /* integer < 0, in .i */
    HR_MP_FLOAT, /* float 32 or 64, in .f */
    HR_MP_STR,   /* body in .s */
    HR_MP_BIN,   /* body in .s */
    HR_MP_EXT,   /* type byte and data in .s */
    HR_MP_ARRAY, /* .n elements follow */
    HR_MP_MAP    /* .n key/value pairs follow */
};

/* A read cursor over [p, end). */
typedef struct hr_mp_s {
    const uint8_t *p;
    const uint8_t *end;
} hr_mp_t;

/* One decoded header: a whole scalar, or the count of a container. */
typedef struct hr_mp_val_s {
    int kind; /* HR_MP_* */
    union {
        uint64_t u; /* HR_MP_POS */
        int64_t i;  /* HR_MP_NEG */
        double f;   /* HR_MP_FLOAT */
        int b;      /* HR_MP_BOOL */
        uint32_t n; /* HR_MP_ARRAY, HR_MP_MAP */
    };
    hr_slice_t s; /* HR_MP_STR, HR_MP_BIN, HR_MP_EXT */
} hr_mp_val_t;

/** Starts a cursor over `n` bytes at `p` (NULL allowed when `n` is 0). */
void hr__mp_init(hr_mp_t *r, const void *p, size_t n);

/**
 * Reads one header: a complete scalar, or a container's count (its elements
 * follow). Returns 1, or 0 on malformed or truncated input (cursor unchanged).
 */
int hr__mp_read(hr_mp_t *r, hr_mp_val_t *v);

/** Skips one complete value of any nesting depth. 1, or 0 on malformed input. */
int hr__mp_skip(hr_mp_t *r);

/** 1 if [p, p+n) is exactly one well-formed msgpack value, else 0. */
int hr__mp_check(const void *p, size_t n);

/** 1 if the string key `k` equals the `n` bytes at `s`. */
int hr__mp_key_is(const hr_mp_val_t *k, const char *s, size_t n);

/**
 * Finds the first entry whose key is the string `key` in the map whose
 * header has just been read (`pairs` entries left at `r`). On 1 the cursor
 * is at that entry's value; on 0 (absent or malformed) it is past the map
 * or at the malformation.
 */
int hr__mp_map_find(hr_mp_t *r, uint32_t pairs, const char *key, size_t n);

/**
 * Looks up a `.`-separated path of string keys into nested maps, starting
 * from the value at `r`. On 1 `*out` is the raw bytes of the value found;
 * 0 when the value is not a map, a key is missing or the bytes are malformed.
 * The path's segments must be non-empty.
 */
int hr__mp_path(hr_mp_t r, hr_slice_t path, hr_slice_t *out);

/* Header writers (smallest encoding); each returns the bytes written, at most 5. */
size_t hr__mp_put_str(uint8_t *out, size_t n);
size_t hr__mp_put_map(uint8_t *out, uint32_t n);
size_t hr__mp_put_array(uint8_t *out, uint32_t n);
/* Writes an unsigned integer whole (at most 9 bytes), or a bin header (at most 5). */
size_t hr__mp_put_uint(uint8_t *out, uint64_t v);
size_t hr__mp_put_bin(uint8_t *out, size_t n);

#endif
