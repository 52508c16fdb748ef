/* SPDX-License-Identifier: MIT */
/* Topic index: exact and wildcard matching, queue groups, removal, many subscriptions. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "hr_check.h"
#include "index.h"

typedef struct hits_s {
    uint64_t sids[4096];
    int n;
    int groups;
} hits_t;

static void on_sub(void *arg, hr_sub_t *s)
{
    hits_t *h = arg;
    h->sids[h->n++] = s->sid;
}

static void on_group(void *arg, hr_qgroup_t *g)
{
    hits_t *h = arg;
    hr_sub_t *s = hr__qgroup_pick(g, 0);
    h->groups++;
    if (s)
        h->sids[h->n++] = s->sid;
}

static hits_t match(hr_index_t *ix, const char *topic)
{
    hits_t h;
    memset(&h, 0, sizeof(h));
    hr_index_visitor_t v = {on_sub, on_group, &h};
    hr__index_match(ix, topic, strlen(topic), &v);
    return h;
}

static int has(const hits_t *h, uint64_t sid)
{
    for (int i = 0; i < h->n; i++)
        if (h->sids[i] == sid)
            return 1;
    return 0;
}

static hr_sub_t *add(hr_index_t *ix, uint64_t sid, const char *pat, const char *queue)
{
    hr_sub_t *s =
        hr__sub_new((void *)0x1, 1, sid, pat, strlen(pat), queue, queue ? strlen(queue) : 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(hr__index_add(ix, s), 0);
    return s;
}

START_TEST(wildcards)
{
    hr_index_t ix;
    ck_assert_int_eq(hr__index_init(&ix), 0);
    hr_sub_t *s[8];
    s[0] = add(&ix, 1, "a.b.c", NULL);
    s[1] = add(&ix, 2, "a.*.c", NULL);
    s[2] = add(&ix, 3, "a.>", NULL);
    s[3] = add(&ix, 4, ">", NULL);
    s[4] = add(&ix, 5, "*.b.*", NULL);
    s[5] = add(&ix, 6, "$SYS.>", NULL);
    s[6] = add(&ix, 7, "*.*", NULL);
    s[7] = add(&ix, 8, "a.b", NULL);
    hits_t h = match(&ix, "a.b.c");
    ck_assert_int_eq(h.n, 5);
    ck_assert(has(&h, 1) && has(&h, 2) && has(&h, 3) && has(&h, 4) && has(&h, 5));
    h = match(&ix, "a.b");
    ck_assert_int_eq(h.n, 4);
    ck_assert(has(&h, 3) && has(&h, 4) && has(&h, 7) && has(&h, 8));
    h = match(&ix, "a");
    ck_assert_int_eq(h.n, 1);
    ck_assert(has(&h, 4));
    h = match(&ix, "$SYS.conn");
    ck_assert_int_eq(h.n, 1); /* only $SYS.>: wildcards in the first token skip '$' */
    ck_assert(has(&h, 6));
    h = match(&ix, "x.y.z.w");
    ck_assert_int_eq(h.n, 1);
    ck_assert_uint_eq(ix.nsubs, 8);
    for (int i = 0; i < 8; i++) {
        hr__index_remove(&ix, s[i]);
        hr__sub_free(s[i]);
    }
    ck_assert_uint_eq(ix.nsubs, 0);
    ck_assert_uint_eq(ix.npatterns, 0);
    ck_assert_int_eq(match(&ix, "a.b.c").n, 0);
    ck_assert_uint_eq(ix.exact.count, 0);
    ck_assert_uint_eq(ix.children.count, 0); /* the trie is pruned back to the root */
    hr__index_destroy(&ix);
}
END_TEST

START_TEST(queue_groups)
{
    hr_index_t ix;
    hr__index_init(&ix);
    hr_sub_t *a = add(&ix, 1, "jobs", "w");
    hr_sub_t *b = add(&ix, 2, "jobs", "w");
    hr_sub_t *c = add(&ix, 3, "jobs", "other");
    hr_sub_t *d = add(&ix, 4, "jobs", NULL);
    int count[5] = {0};
    for (int i = 0; i < 100; i++) {
        hits_t h = match(&ix, "jobs");
        ck_assert_int_eq(h.groups, 2);
        ck_assert_int_eq(h.n, 3); /* one of group w, the one of "other", the plain sub */
        for (int k = 0; k < h.n; k++)
            count[h.sids[k]]++;
    }
    ck_assert_int_eq(count[1] + count[2], 100);
    ck_assert_int_eq(count[1], 50); /* round robin */
    ck_assert_int_eq(count[3], 100);
    ck_assert_int_eq(count[4], 100);
    hr__index_remove(&ix, a);
    hits_t h = match(&ix, "jobs");
    ck_assert(has(&h, 2));
    hr_sub_t *subs[] = {b, c, d};
    for (int i = 0; i < 3; i++) {
        hr__index_remove(&ix, subs[i]);
        hr__sub_free(subs[i]);
    }
    hr__sub_free(a);
    ck_assert_uint_eq(ix.nsubs, 0);
    hr__index_destroy(&ix);
}
END_TEST

START_TEST(skip_in_group)
{
    hr_index_t ix;
    hr__index_init(&ix);
    hr_sub_t *a = hr__sub_new((void *)0x1, 1, 1, "q", 1, "g", 1);
    hr_sub_t *b = hr__sub_new((void *)0x2, 2, 2, "q", 1, "g", 1);
    hr__index_add(&ix, a);
    hr__index_add(&ix, b);
    for (int i = 0; i < 10; i++)
        ck_assert_ptr_eq(hr__qgroup_pick(a->group, 1), b);
    hr__index_remove(&ix, b);
    ck_assert_ptr_null(hr__qgroup_pick(a->group, 1));
    hr__sub_free(b);
    hr__index_destroy(&ix); /* frees the remaining index structures */
    hr__sub_free(a);
}
END_TEST

START_TEST(many)
{
    enum { N = 20000 };
    static hr_sub_t *subs[N];
    char t[64];
    hr_index_t ix;
    hr__index_init(&ix);
    for (int i = 0; i < N; i++) {
        snprintf(t, sizeof(t), i % 2 ? "room.%d" : "room.%d.*", i / 2);
        subs[i] = add(&ix, (uint64_t)i, t, NULL);
    }
    for (int i = 0; i < N / 2; i += 97) {
        snprintf(t, sizeof(t), "room.%d", i);
        hits_t h = match(&ix, t);
        ck_assert_int_eq(h.n, 1);
        ck_assert_uint_eq(h.sids[0], (uint64_t)(2 * i + 1));
        snprintf(t, sizeof(t), "room.%d.x", i);
        h = match(&ix, t);
        ck_assert_int_eq(h.n, 1);
        ck_assert_uint_eq(h.sids[0], (uint64_t)(2 * i));
    }
    for (int i = 0; i < N; i++) {
        hr__index_remove(&ix, subs[i]);
        hr__sub_free(subs[i]);
    }
    ck_assert_uint_eq(ix.children.count, 0);
    hr__index_destroy(&ix);
}
END_TEST

static Suite *index_suite(void)
{
    Suite *s = suite_create("index");
    TCase *t = tcase_create("index");
    tcase_add_test(t, wildcards);
    tcase_add_test(t, queue_groups);
    tcase_add_test(t, skip_in_group);
    tcase_add_test(t, many);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(index_suite)
