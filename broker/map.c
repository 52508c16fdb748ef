/* SPDX-License-Identifier: MIT */
/* Chained hash map: simple, and its memory is exactly entries + slots. */
#include <stdlib.h>
#include <string.h>

#include "map.h"

struct hr_map_ent_s {
    hr_map_ent_t *next;
    uint64_t hash;
    void *val;
    uint32_t klen;
    char key[];
};

/* FNV-1a: short keys (topics, tokens) dominate, and it is enough for them. */
uint64_t hr__hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

void hr__map_init(hr_map_t *m)
{
    memset(m, 0, sizeof(*m));
}

void hr__map_destroy(hr_map_t *m)
{
    for (size_t i = 0; i < m->nslots; i++) {
        hr_map_ent_t *e = m->slots[i];
        while (e) {
            hr_map_ent_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static hr_map_ent_t **find(const hr_map_t *m, const void *key, size_t klen, uint64_t h)
{
    if (!m->nslots)
        return NULL;
    hr_map_ent_t **pp = &m->slots[h & (m->nslots - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)
            return pp;
    return pp;
}

void *hr__map_get(const hr_map_t *m, const void *key, size_t klen)
{
    hr_map_ent_t **pp = find(m, key, klen, hr__hash(key, klen));
    return pp && *pp ? (*pp)->val : NULL;
}

static int grow(hr_map_t *m)
{
    size_t n = m->nslots ? m->nslots * 2 : 16;
    hr_map_ent_t **slots = calloc(n, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < m->nslots; i++) {
        hr_map_ent_t *e = m->slots[i];
        while (e) {
            hr_map_ent_t *next = e->next;
            e->next = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
    return 0;
}

int hr__map_put(hr_map_t *m, const void *key, size_t klen, void *val)
{
    uint64_t h = hr__hash(key, klen);
    hr_map_ent_t **pp = find(m, key, klen, h);
    if (pp && *pp) {
        (*pp)->val = val;
        return 0;
    }
    if (m->count >= m->nslots && grow(m) != 0)
        return -1;
    hr_map_ent_t *e = malloc(sizeof(*e) + klen);
    if (!e)
        return -1;
    e->hash = h;
    e->val = val;
    e->klen = (uint32_t)klen;
    memcpy(e->key, key, klen);
    e->next = m->slots[h & (m->nslots - 1)];
    m->slots[h & (m->nslots - 1)] = e;
    m->count++;
    return 0;
}

void *hr__map_del(hr_map_t *m, const void *key, size_t klen)
{
    hr_map_ent_t **pp = find(m, key, klen, hr__hash(key, klen));
    if (!pp || !*pp)
        return NULL;
    hr_map_ent_t *e = *pp;
    void *val = e->val;
    *pp = e->next;
    free(e);
    m->count--;
    return val;
}

void hr__map_each(const hr_map_t *m, void (*fn)(void *, const void *, size_t, void *), void *arg)
{
    for (size_t i = 0; i < m->nslots; i++)
        for (hr_map_ent_t *e = m->slots[i]; e; e = e->next)
            fn(arg, e->key, e->klen, e->val);
}
