/* SPDX-License-Identifier: MIT */
/* Chained hash map: simple, and its memory is exactly entries + slots. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "map.h"

struct hr_map_ent_s {
    hr_map_ent_t *next;
    uint64_t hash;
    void *val;
    uint32_t klen;
    char key[];
};

/*
 * SipHash-1-3 under a key drawn at random once per broker: each process
 * draws its own, except the workers of a cluster, which take the primary's
 * (hr__hash_set_key()) so that all of them agree on a topic's owner. Topics and
 * tokens are chosen by clients, and with an unkeyed hash (FNV-1a before)
 * a client can compute keys that all fall into one bucket and turn every
 * lookup into a walk of that chain, stalling the loop for everyone.
 */
static uint64_t sip_key[2];
static int sip_keyed;

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static void sip_seed(void)
{
    if (uv_random(NULL, NULL, sip_key, sizeof(sip_key), 0, NULL) != 0) {
        /* No entropy source: still differ per process and run. */
        uv_timeval64_t tv;
        uv_gettimeofday(&tv);
        sip_key[0] = (uint64_t)tv.tv_sec * 1000003u ^ (uint64_t)tv.tv_usec;
        sip_key[1] = (uint64_t)uv_os_getpid() ^ (uint64_t)(uintptr_t)&tv;
    }
    sip_keyed = 1;
}

void hr__hash_set_key(const uint8_t key[16])
{
    memcpy(&sip_key[0], key, 8);
    memcpy(&sip_key[1], key + 8, 8);
    sip_keyed = 1;
}

uint64_t hr__hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    if (!sip_keyed)
        sip_seed();
    uint64_t k0 = sip_key[0], k1 = sip_key[1];
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    uint64_t b = (uint64_t)n << 56, m;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        m = 0;
        for (int j = 0; j < 8; j++)
            m |= (uint64_t)s[i + j] << (8 * j);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (int j = 0; i + (size_t)j < n; j++)
        b |= (uint64_t)s[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
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
    return hr__map_get_hashed(m, key, klen, hr__hash(key, klen));
}

void *hr__map_get_hashed(const hr_map_t *m, const void *key, size_t klen, uint64_t h)
{
    hr_map_ent_t **pp = find(m, key, klen, h);
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
