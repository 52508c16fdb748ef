/* SPDX-License-Identifier: MIT */
/* Stream stages: order, high-water marks, holding behind a full stage, drain, end, error. */
#include <check.h>
#include <stdlib.h>

#include "hr_check.h"
#include "stage.h"

typedef struct item_s {
    hr_item_t link;
    int v;
} item_t;

/* A stage that keeps what it is written until release(), like an exec stage waiting for
 * its child; the sink records what reaches it and consumes only when told to. */
typedef struct test_stage_s {
    hr_stage_t st;
    item_t *kept[64];
    int nkept;
    int got[256];
    int ngot;
    int ended;
    int *freed;
} test_stage_t;

static void keep_write(hr_stage_t *st, hr_item_t *it)
{
    test_stage_t *t = (test_stage_t *)st;
    t->kept[t->nkept++] = (item_t *)it;
    st->fill++;
}

static void pass_write(hr_stage_t *st, hr_item_t *it)
{
    hr__stage_push(st, it);
}

static void sink_write(hr_stage_t *st, hr_item_t *it)
{
    test_stage_t *t = (test_stage_t *)st;
    t->got[t->ngot++] = ((item_t *)it)->v;
    st->fill++; /* consumed later, by consume() */
    free(it);
}

static void sink_end(hr_stage_t *st)
{
    ((test_stage_t *)st)->ended = 1;
}

static void drop(hr_stage_t *st, hr_item_t *it)
{
    (*((test_stage_t *)st)->freed)++;
    free(it);
}

static void destroy(hr_stage_t *st)
{
    test_stage_t *t = (test_stage_t *)st;
    for (int i = 0; i < t->nkept; i++)
        drop(st, &t->kept[i]->link);
    free(t);
}

static const hr_stage_ops_t keep_ops = {"keep", keep_write, NULL, destroy, drop};
static const hr_stage_ops_t pass_ops = {"pass", pass_write, NULL, destroy, drop};
static const hr_stage_ops_t sink_ops = {"sink", sink_write, sink_end, destroy, drop};

static test_stage_t *mk(const hr_stage_ops_t *ops, size_t hwm, int *freed)
{
    test_stage_t *t = calloc(1, sizeof(*t));
    ck_assert_ptr_nonnull(t);
    hr__stage_init(&t->st, ops, hwm);
    t->freed = freed;
    return t;
}

static hr_item_t *item(int v)
{
    item_t *it = calloc(1, sizeof(*it));
    ck_assert_ptr_nonnull(it);
    it->v = v;
    return &it->link;
}

/* The keeping stage hands on its oldest `n` items. */
static void release(test_stage_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        item_t *it = t->kept[0];
        for (int k = 1; k < t->nkept; k++)
            t->kept[k - 1] = t->kept[k];
        t->nkept--;
        hr__stage_push(&t->st, &it->link);
        hr__stage_fill(&t->st, -1);
    }
}

static int drains;
static void on_drain(void *arg, hr_stage_t *st)
{
    (void)arg;
    (void)st;
    drains++;
}

static int errors;
static void on_error(void *arg, hr_stage_t *st, int status, const char *why)
{
    (void)arg;
    (void)why;
    ck_assert_str_eq(st->ops->name, "pass");
    ck_assert_int_eq(status, -5);
    errors++;
}

START_TEST(marks_hold_and_drain)
{
    int freed = 0;
    test_stage_t *a = mk(&keep_ops, 4, &freed), *b = mk(&pass_ops, 2, &freed),
                 *z = mk(&sink_ops, 2, &freed);
    hr_stage_t *chain[3] = {&a->st, &b->st, &z->st};
    hr__stage_chain(chain, 3);
    a->st.on_drain = on_drain;
    a->st.on_error = on_error;
    drains = errors = 0;
    /* below the mark: go on; at it: wait (the item is taken either way) */
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(hr__stage_write(&a->st, item(i)), 1);
    ck_assert_int_eq(hr__stage_write(&a->st, item(4)), 0);
    ck_assert_int_eq(hr__stage_write(&a->st, item(5)), 0);
    ck_assert_uint_eq(a->st.fill, 5);
    /* two reach the sink, which is then full: b holds the next two, in order, and is then
     * full itself, so a's next push would be held by a */
    release(a, 4);
    ck_assert_int_eq(z->ngot, 2);
    ck_assert_int_eq(b->st.blocked, 1);
    ck_assert_uint_eq(b->st.fill, 2);
    ck_assert_int_eq(a->st.blocked, 1);
    ck_assert_int_eq(drains, 1); /* a itself holds one item: its writer may go on */
    release(a, 1);               /* held by a, behind the full b */
    ck_assert_uint_eq(a->st.fill, 1);
    ck_assert_int_eq(z->ngot, 2);
    /* the sink consumes: held items go on, in order, stage by stage */
    hr__stage_fill(&z->st, -2);
    ck_assert_int_eq(z->ngot, 4);
    hr__stage_fill(&z->st, -2);
    ck_assert_int_eq(z->ngot, 5);
    ck_assert_uint_eq(a->st.fill, 0);
    ck_assert_uint_eq(b->st.fill, 0);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(z->got[i], i + 1);
    hr__stage_end(&a->st);
    ck_assert_int_eq(z->ended, 1);
    hr__stage_error(&b->st, -5, "broken");
    ck_assert_int_eq(errors, 1);
    hr__stage_destroy_chain(&a->st);
    ck_assert_int_eq(freed, 0);
}
END_TEST

START_TEST(end_after_held_and_destroy_frees)
{
    int freed = 0;
    test_stage_t *b = mk(&pass_ops, 0, &freed), *z = mk(&sink_ops, 1, &freed);
    hr_stage_t *chain[2] = {&b->st, &z->st};
    hr__stage_chain(chain, 2);
    hr__stage_write(&b->st, item(1)); /* fills the sink */
    hr__stage_write(&b->st, item(2)); /* held by b */
    hr__stage_write(&b->st, item(3));
    hr__stage_end(&b->st);
    ck_assert_int_eq(z->ended, 0); /* two are still held */
    hr__stage_fill(&z->st, -1);    /* one goes on and fills it again */
    ck_assert_int_eq(z->ngot, 2);
    ck_assert_int_eq(z->ended, 0);
    hr__stage_destroy_chain(&b->st); /* the last held item is freed with the chain */
    ck_assert_int_eq(freed, 1);
}
END_TEST

static Suite *stage_suite(void)
{
    Suite *s = suite_create("stage");
    TCase *t = tcase_create("stage");
    tcase_add_test(t, marks_hold_and_drain);
    tcase_add_test(t, end_after_held_and_destroy_frees);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(stage_suite)
