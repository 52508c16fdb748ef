/* SPDX-License-Identifier: MIT */
/* The topics with state as a token tree: a pattern visits only the topics it can match. */
#include <stdlib.h>
#include <string.h>

#include "ttree.h"

/*
 * One node per distinct token path. A node's children are found two ways:
 * by (parent, token) in one hash shared by the whole tree, for literal
 * tokens (a publish creating a topic, a pattern's literal token), and in
 * the node's own array, for `*` and `>`, which visit every child. A wildcard
 * replay therefore costs the nodes on the paths it can match, not a walk of
 * every topic.
 */
struct hr_tnode_s {
    struct hr_tnode_s *parent;
    struct hr_tnode_s **kids;
    uint32_t nkids, capkids;
    uint32_t pos; /* index in parent->kids */
    void *val;    /* the topic ending here, or NULL */
    uint16_t tlen;
    char tok[];
};

#define KEY_MAX (sizeof(void *) + HR_TOKEN_MAX)

static size_t key(char *k, const hr_tnode_t *parent, const char *tok, size_t n)
{
    memcpy(k, &parent, sizeof(parent));
    memcpy(k + sizeof(parent), tok, n);
    return sizeof(parent) + n;
}

int hr__ttree_init(hr_ttree_t *t)
{
    memset(t, 0, sizeof(*t));
    hr__map_init(&t->kids);
    t->root = calloc(1, sizeof(hr_tnode_t));
    return t->root ? HR_OK : HR_ENOMEM;
}

static void free_rec(hr_tnode_t *n)
{
    for (uint32_t i = 0; i < n->nkids; i++)
        free_rec(n->kids[i]);
    free(n->kids);
    free(n);
}

void hr__ttree_destroy(hr_ttree_t *t)
{
    if (t->root)
        free_rec(t->root);
    hr__map_destroy(&t->kids);
    memset(t, 0, sizeof(*t));
}

static hr_tnode_t *child(const hr_ttree_t *t, const hr_tnode_t *p, const char *tok, size_t n)
{
    char k[KEY_MAX];
    return n > HR_TOKEN_MAX ? NULL : hr__map_get(&t->kids, k, key(k, p, tok, n));
}

static hr_tnode_t *add_child(hr_ttree_t *t, hr_tnode_t *p, const char *tok, size_t n)
{
    char k[KEY_MAX];
    if (n > HR_TOKEN_MAX)
        return NULL;
    if (p->nkids == p->capkids) {
        uint32_t cap = p->capkids ? p->capkids * 2 : 2;
        hr_tnode_t **v = realloc(p->kids, cap * sizeof(*v));
        if (!v)
            return NULL;
        p->kids = v;
        p->capkids = cap;
    }
    hr_tnode_t *c = calloc(1, sizeof(*c) + n);
    if (!c || hr__map_put(&t->kids, k, key(k, p, tok, n), c) != 0) {
        free(c);
        return NULL;
    }
    c->parent = p;
    c->tlen = (uint16_t)n;
    memcpy(c->tok, tok, n);
    c->pos = p->nkids;
    p->kids[p->nkids++] = c;
    t->nodes++;
    return c;
}

/* Removes empty nodes from `n` upwards. */
static void prune(hr_ttree_t *t, hr_tnode_t *n)
{
    while (n != t->root && !n->val && !n->nkids) {
        hr_tnode_t *p = n->parent;
        char k[KEY_MAX];
        hr__map_del(&t->kids, k, key(k, p, n->tok, n->tlen));
        p->kids[n->pos] = p->kids[--p->nkids];
        p->kids[n->pos]->pos = n->pos;
        if (!p->nkids) {
            free(p->kids);
            p->kids = NULL;
            p->capkids = 0;
        }
        free(n);
        t->nodes--;
        n = p;
    }
}

hr_tnode_t *hr__ttree_add(hr_ttree_t *t, const char *topic, size_t n, void *val)
{
    hr_tnode_t *node = t->root;
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && topic[i] != '.')
            i++;
        hr_tnode_t *c = child(t, node, topic + s, i - s);
        if (!c && !(c = add_child(t, node, topic + s, i - s))) {
            prune(t, node);
            return NULL;
        }
        node = c;
        i++;
    }
    node->val = val;
    return node;
}

void hr__ttree_del(hr_ttree_t *t, hr_tnode_t *node)
{
    if (!node)
        return;
    node->val = NULL;
    prune(t, node);
}

typedef struct walk_s {
    const hr_ttree_t *t;
    const char *tok[HR_TOKENS_MAX];
    uint16_t len[HR_TOKENS_MAX];
    int ntok;
    uint64_t visited, budget;
    void (*fn)(void *arg, void *val);
    void *arg;
} walk_t;

static int visit(walk_t *w)
{
    w->visited++;
    return !w->budget || w->visited <= w->budget;
}

/* Every topic below `n` (for `>`: at least one more token). */
static int all_below(walk_t *w, hr_tnode_t *n)
{
    for (uint32_t i = 0; i < n->nkids; i++) {
        hr_tnode_t *c = n->kids[i];
        if (!visit(w))
            return -1;
        if (c->val)
            w->fn(w->arg, c->val);
        if (all_below(w, c) < 0)
            return -1;
    }
    return 0;
}

static int walk(walk_t *w, hr_tnode_t *n, int depth)
{
    if (depth == w->ntok) {
        if (n->val)
            w->fn(w->arg, n->val);
        return 0;
    }
    const char *tok = w->tok[depth];
    size_t len = w->len[depth];
    /* A wildcard in the first token never matches a `$` topic. */
    if (len == 1 && tok[0] == '>') {
        for (uint32_t i = 0; i < n->nkids; i++) {
            hr_tnode_t *c = n->kids[i];
            if (depth == 0 && c->tlen && c->tok[0] == '$')
                continue;
            if (!visit(w))
                return -1;
            if (c->val)
                w->fn(w->arg, c->val);
            if (all_below(w, c) < 0)
                return -1;
        }
        return 0;
    }
    if (len == 1 && tok[0] == '*') {
        for (uint32_t i = 0; i < n->nkids; i++) {
            hr_tnode_t *c = n->kids[i];
            if (depth == 0 && c->tlen && c->tok[0] == '$')
                continue;
            if (!visit(w) || walk(w, c, depth + 1) < 0)
                return -1;
        }
        return 0;
    }
    hr_tnode_t *c = child(w->t, n, tok, len);
    if (!c)
        return 0;
    if (!visit(w))
        return -1;
    return walk(w, c, depth + 1);
}

int64_t hr__ttree_match(const hr_ttree_t *t, const char *pattern, size_t n, uint64_t budget,
                        void (*fn)(void *arg, void *val), void *arg)
{
    walk_t w = {.t = t, .budget = budget, .fn = fn, .arg = arg};
    size_t i = 0;
    while (i < n && w.ntok < HR_TOKENS_MAX) {
        size_t s = i;
        while (i < n && pattern[i] != '.')
            i++;
        w.tok[w.ntok] = pattern + s;
        w.len[w.ntok++] = (uint16_t)(i - s);
        i++;
    }
    if (walk(&w, t->root, 0) < 0)
        return -1;
    return (int64_t)w.visited;
}
