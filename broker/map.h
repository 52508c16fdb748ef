/* SPDX-License-Identifier: MIT */
/* A chained hash map from byte-string keys to pointers (keys copied, values borrowed). */
#ifndef HERALD_BROKER_MAP_H
#define HERALD_BROKER_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hr_map_ent_s hr_map_ent_t;

typedef struct hr_map_s {
    hr_map_ent_t **slots; /* private */
    size_t nslots;        /* private */
    size_t count;         /* read-only */
} hr_map_t;

void hr__map_init(hr_map_t *m);
/** Frees the table and its keys; values stay with their owners. */
void hr__map_destroy(hr_map_t *m);
void *hr__map_get(const hr_map_t *m, const void *key, size_t klen);
/** hr__map_get() with `h` = hr__hash(key, klen) computed by the caller (once for several maps). */
void *hr__map_get_hashed(const hr_map_t *m, const void *key, size_t klen, uint64_t h);
/** Inserts or replaces; returns 0 or -1 on OOM. */
int hr__map_put(hr_map_t *m, const void *key, size_t klen, void *val);
/** Removes and returns the value, or NULL. */
void *hr__map_del(hr_map_t *m, const void *key, size_t klen);
/** Calls fn for each entry; fn must not modify the map. */
void hr__map_each(const hr_map_t *m, void (*fn)(void *arg, const void *key, size_t klen, void *val),
                  void *arg);
uint64_t hr__hash(const void *p, size_t n);
/** Sets the hash key (before any hashing): every process of one broker uses the same. */
void hr__hash_set_key(const uint8_t key[16]);

#endif
