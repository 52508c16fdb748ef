/* SPDX-License-Identifier: MIT */
/*
 * The interest index. Subscriptions without wildcards (chat rooms, user
 * inboxes: nearly all of them) sit in a hash keyed by the topic, so a
 * publish costs one lookup there. Patterns with `*` or `>` live in a token
 * trie whose children are kept in one shared hash keyed by (parent, token),
 * so a node costs no per-node table. A publish walks the trie along its
 * tokens, trying the literal child, the `*` child and the `>` child.
 */
#include <stdlib.h>
#include <string.h>

#include "herald/protocol.h"
#include "index.h"

struct hr_inode_s {
    hr_interest_t in;
    hr_inode_t *parent;
    hr_inode_t *star, *gt;
    uint32_t nchildren; /* literal children in ix->children */
    uint16_t tlen;
    char tok[]; /* this node's token (key in parent) or the exact topic */
};

static int interest_empty(const hr_interest_t *in)
{
    return in->n == 0 && in->ngroups == 0;
}

static int grow_ptrs(void *arrp, uint32_t *cap, uint32_t need)
{
    void ***arr = arrp;
    if (need <= *cap)
        return 0;
    uint32_t n = *cap ? *cap * 2 : 2;
    while (n < need)
        n *= 2;
    void **p = realloc(*arr, n * sizeof(void *));
    if (!p)
        return -1;
    *arr = p;
    *cap = n;
    return 0;
}

static hr_inode_t *node_new(const char *tok, size_t tlen, hr_inode_t *parent)
{
    hr_inode_t *n = calloc(1, sizeof(*n) + tlen);
    if (!n)
        return NULL;
    n->parent = parent;
    n->tlen = (uint16_t)tlen;
    memcpy(n->tok, tok, tlen);
    return n;
}

static void interest_free(hr_interest_t *in)
{
    free(in->subs);
    for (uint32_t i = 0; i < in->ngroups; i++) {
        free(in->groups[i]->members);
        free(in->groups[i]);
    }
    free(in->groups);
}

int hr__index_init(hr_index_t *ix)
{
    memset(ix, 0, sizeof(*ix));
    hr__map_init(&ix->exact);
    hr__map_init(&ix->children);
    ix->root = node_new("", 0, NULL);
    return ix->root ? 0 : -1;
}

static void free_exact(void *arg, const void *k, size_t kl, void *val)
{
    hr_inode_t *n = val;
    interest_free(&n->in);
    free(n);
}

/* Frees `n` and the wildcard children hanging off it; literal children are
 * in ix->children and freed from there (each node is freed exactly once). */
static void free_node_rec(hr_inode_t *n)
{
    if (!n)
        return;
    free_node_rec(n->star);
    free_node_rec(n->gt);
    interest_free(&n->in);
    free(n);
}

static void free_trie(void *arg, const void *k, size_t kl, void *val)
{
    free_node_rec(val);
}

void hr__index_destroy(hr_index_t *ix)
{
    hr__map_each(&ix->exact, free_exact, NULL);
    hr__map_each(&ix->children, free_trie, NULL);
    hr__map_destroy(&ix->exact);
    hr__map_destroy(&ix->children);
    free_node_rec(ix->root);
    ix->root = NULL;
}

hr_sub_t *hr__sub_new(struct hr_conn_s *conn, uint64_t cid, uint64_t sid, const char *pattern,
                      size_t plen, const char *queue, size_t qlen)
{
    hr_sub_t *s = calloc(1, sizeof(*s) + plen + qlen);
    if (!s)
        return NULL;
    s->conn = conn;
    s->cid = cid;
    s->sid = sid;
    s->plen = (uint16_t)plen;
    memcpy(s->pattern, pattern, plen);
    if (qlen) {
        s->qlen = (uint16_t)qlen;
        s->queue = s->pattern + plen;
        memcpy(s->queue, queue, qlen);
    }
    return s;
}

void hr__sub_free(hr_sub_t *s)
{
    free(s);
}

/* Child key: the parent's address, then the token. */
static size_t child_key(char *key, const hr_inode_t *parent, const char *tok, size_t tlen)
{
    memcpy(key, &parent, sizeof(parent));
    memcpy(key + sizeof(parent), tok, tlen);
    return sizeof(parent) + tlen;
}

static int has_wildcard(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((p[i] == '*' || p[i] == '>') && (i == 0 || p[i - 1] == '.') &&
            (i + 1 == n || p[i + 1] == '.'))
            return 1;
    return 0;
}

/* Finds or creates the node for `pattern`. */
static hr_inode_t *node_for(hr_index_t *ix, const char *p, size_t n, int create)
{
    if (!has_wildcard(p, n)) {
        hr_inode_t *node = hr__map_get(&ix->exact, p, n);
        if (node || !create)
            return node;
        node = node_new(p, n, NULL);
        if (!node || hr__map_put(&ix->exact, p, n, node) != 0) {
            free(node);
            return NULL;
        }
        return node;
    }
    hr_inode_t *cur = ix->root;
    size_t i = 0;
    char key[sizeof(void *) + HR_TOKEN_MAX];
    while (i < n) {
        size_t s = i;
        while (i < n && p[i] != '.')
            i++;
        size_t tl = i - s;
        i++;
        hr_inode_t **slot = NULL, *next;
        if (tl == 1 && p[s] == '*')
            slot = &cur->star;
        else if (tl == 1 && p[s] == '>')
            slot = &cur->gt;
        if (slot) {
            next = *slot;
            if (!next && create) {
                if (!(next = node_new(p + s, tl, cur)))
                    return NULL;
                *slot = next;
            }
        } else {
            size_t kl = child_key(key, cur, p + s, tl);
            next = hr__map_get(&ix->children, key, kl);
            if (!next && create) {
                if (!(next = node_new(p + s, tl, cur)))
                    return NULL;
                if (hr__map_put(&ix->children, key, kl, next) != 0) {
                    free(next);
                    return NULL;
                }
                cur->nchildren++;
            }
        }
        if (!next)
            return NULL;
        cur = next;
    }
    return cur;
}

static hr_inode_t *node_of(hr_interest_t *in)
{
    return (hr_inode_t *)((char *)in - offsetof(hr_inode_t, in));
}

int hr__index_add(hr_index_t *ix, hr_sub_t *s)
{
    hr_inode_t *node = node_for(ix, s->pattern, s->plen, 1);
    if (!node)
        return -1;
    hr_interest_t *in = &node->in;
    int was_empty = interest_empty(in);
    if (s->queue) {
        hr_qgroup_t *g = NULL;
        for (uint32_t i = 0; i < in->ngroups; i++)
            if (in->groups[i]->qlen == s->qlen && !memcmp(in->groups[i]->queue, s->queue, s->qlen))
                g = in->groups[i];
        if (!g) {
            if (grow_ptrs(&in->groups, &in->gcap, in->ngroups + 1) != 0 ||
                !(g = calloc(1, sizeof(*g) + s->qlen)))
                goto fail;
            g->qlen = s->qlen;
            memcpy(g->queue, s->queue, s->qlen);
            in->groups[in->ngroups++] = g;
        }
        if (grow_ptrs(&g->members, &g->cap, g->n + 1) != 0)
            goto fail;
        s->group = g;
        s->pos = g->n;
        g->members[g->n++] = s;
    } else {
        if (grow_ptrs(&in->subs, &in->cap, in->n + 1) != 0)
            goto fail;
        s->pos = in->n;
        in->subs[in->n++] = s;
    }
    s->in = in;
    ix->nsubs++;
    if (was_empty)
        ix->npatterns++;
    return 0;
fail:
    return -1; /* an empty node left behind is pruned by the next remove */
}

/* Frees empty nodes from `node` up towards the root. */
static void prune(hr_index_t *ix, hr_inode_t *node, int exact)
{
    char key[sizeof(void *) + HR_TOKEN_MAX];
    if (exact) {
        if (interest_empty(&node->in)) {
            hr__map_del(&ix->exact, node->tok, node->tlen);
            interest_free(&node->in);
            free(node);
        }
        return;
    }
    while (node != ix->root && interest_empty(&node->in) && !node->nchildren && !node->star &&
           !node->gt) {
        hr_inode_t *parent = node->parent;
        if (parent->star == node)
            parent->star = NULL;
        else if (parent->gt == node)
            parent->gt = NULL;
        else {
            hr__map_del(&ix->children, key, child_key(key, parent, node->tok, node->tlen));
            parent->nchildren--;
        }
        interest_free(&node->in);
        free(node);
        node = parent;
    }
}

void hr__index_remove(hr_index_t *ix, hr_sub_t *s)
{
    hr_interest_t *in = s->in;
    if (!in)
        return;
    if (s->group) {
        hr_qgroup_t *g = s->group;
        g->members[s->pos] = g->members[--g->n];
        g->members[s->pos]->pos = s->pos;
        if (g->n == 0) {
            for (uint32_t i = 0; i < in->ngroups; i++)
                if (in->groups[i] == g) {
                    in->groups[i] = in->groups[--in->ngroups];
                    break;
                }
            free(g->members);
            free(g);
        }
    } else {
        in->subs[s->pos] = in->subs[--in->n];
        in->subs[s->pos]->pos = s->pos;
    }
    s->in = NULL;
    s->group = NULL;
    ix->nsubs--;
    if (interest_empty(in)) {
        ix->npatterns--;
        prune(ix, node_of(in), !has_wildcard(s->pattern, s->plen));
    }
}

static void visit(const hr_interest_t *in, const hr_index_visitor_t *v)
{
    for (uint32_t i = 0; i < in->n; i++)
        v->sub(v->arg, in->subs[i]);
    for (uint32_t i = 0; i < in->ngroups; i++)
        v->group(v->arg, in->groups[i]);
}

typedef struct tokens_s {
    const char *p[HR_TOKENS_MAX];
    uint16_t n[HR_TOKENS_MAX];
    int count;
} tokens_t;

static void walk(const hr_index_t *ix, const hr_inode_t *node, const tokens_t *t, int i,
                 const hr_index_visitor_t *v)
{
    char key[sizeof(void *) + HR_TOKEN_MAX];
    if (i == t->count) {
        visit(&node->in, v);
        return;
    }
    /* Wildcards in the first token never match '$' topics. */
    int dollar = i == 0 && t->p[0][0] == '$';
    if (node->gt && !dollar)
        visit(&node->gt->in, v);
    if (node->star && !dollar)
        walk(ix, node->star, t, i + 1, v);
    if (node->nchildren) {
        const hr_inode_t *child =
            hr__map_get(&ix->children, key, child_key(key, node, t->p[i], t->n[i]));
        if (child)
            walk(ix, child, t, i + 1, v);
    }
}

void hr__index_match(const hr_index_t *ix, const char *topic, size_t tlen,
                     const hr_index_visitor_t *v)
{
    hr__index_match_hashed(ix, topic, tlen, hr__hash(topic, tlen), v);
}

void hr__index_match_hashed(const hr_index_t *ix, const char *topic, size_t tlen, uint64_t h,
                            const hr_index_visitor_t *v)
{
    const hr_inode_t *exact = hr__map_get_hashed(&ix->exact, topic, tlen, h);
    if (exact)
        visit(&exact->in, v);
    if (!ix->root->nchildren && !ix->root->star && !ix->root->gt)
        return;
    tokens_t t;
    t.count = 0;
    size_t i = 0;
    while (i < tlen && t.count < HR_TOKENS_MAX) {
        size_t s = i;
        while (i < tlen && topic[i] != '.')
            i++;
        t.p[t.count] = topic + s;
        t.n[t.count++] = (uint16_t)(i - s);
        i++;
    }
    walk(ix, ix->root, &t, 0, v);
}

hr_sub_t *hr__qgroup_pick(hr_qgroup_t *g, uint64_t skip_cid)
{
    for (uint32_t k = 0; k < g->n; k++) {
        hr_sub_t *s = g->members[(g->rr + k) % g->n];
        if (!skip_cid || s->cid != skip_cid) {
            g->rr = (g->rr + k + 1) % g->n;
            return s;
        }
    }
    return NULL;
}
