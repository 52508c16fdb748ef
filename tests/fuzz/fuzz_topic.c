/* SPDX-License-Identifier: MIT */
/* libFuzzer target: topic and pattern syntax, the matcher, and the broker's interest index. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "herald/protocol.h"
#include "auth.h"
#include "index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A deliberately naive reference matcher: split both into tokens, then walk.
 * `*` matches one token, `>` one or more; a wildcard in the first token
 * never matches a `$` topic.
 */
static size_t split(const char *s, size_t n, const char **tok, size_t *len, size_t max)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n && k < max; i++) {
        if (i == n || s[i] == '.') {
            tok[k] = s + start;
            len[k++] = i - start;
            start = i + 1;
        }
    }
    return k;
}

static int ref_match(const char *p, size_t pn, const char *t, size_t tn)
{
    const char *pt[HR_TOKENS_MAX + 1], *tt[HR_TOKENS_MAX + 1];
    size_t pl[HR_TOKENS_MAX + 1], tl[HR_TOKENS_MAX + 1];
    size_t np = split(p, pn, pt, pl, HR_TOKENS_MAX + 1),
           nt = split(t, tn, tt, tl, HR_TOKENS_MAX + 1);
    for (size_t i = 0; i < np; i++) {
        int star = pl[i] == 1 && pt[i][0] == '*', gt = pl[i] == 1 && pt[i][0] == '>';
        if ((star || gt) && i == 0 && t[0] == '$')
            return 0;
        if (gt)
            return nt > i;
        if (i >= nt)
            return 0;
        if (!star && (pl[i] != tl[i] || memcmp(pt[i], tt[i], pl[i]) != 0))
            return 0;
    }
    return np == nt;
}

static void count_sub(void *arg, hr_sub_t *s)
{
    (*(int *)arg)++;
}

static void count_group(void *arg, hr_qgroup_t *g)
{
    (*(int *)arg) += 100;
}

/* Input: pattern NUL topic [NUL pattern2]. Missing parts reuse the pattern. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nul = memchr(data, 0, size);
    size_t pn = nul ? (size_t)(nul - p) : size;
    const char *t = nul ? nul + 1 : p;
    size_t tn = nul ? size - pn - 1 : size;
    const char *nul2 = memchr(t, 0, tn);
    const char *p2 = p;
    size_t p2n = pn;
    if (nul2) {
        p2 = nul2 + 1;
        p2n = tn - (size_t)(nul2 - t) - 1;
        tn = (size_t)(nul2 - t);
    }

    /* Heap copies of the exact lengths so ASan catches over-reads. */
    char *P = malloc(pn + 1), *T = malloc(tn + 1), *P2 = malloc(p2n + 1);
    memcpy(P, p, pn);
    memcpy(T, t, tn);
    memcpy(P2, p2, p2n);

    int pv = hr_pattern_validate(P, pn) == HR_OK;
    int tv = hr_topic_validate(T, tn) == HR_OK;
    int p2v = hr_pattern_validate(P2, p2n) == HR_OK;
    if (hr_topic_validate(P, pn) == HR_OK) {
        CHECK(pv); /* every topic is a pattern */
        CHECK(hr_topic_match(P, pn, P, pn) == 1);
    }
    if (tv)
        CHECK(hr_pattern_validate(T, tn) == HR_OK);

    /* Subscribe permissions: a pattern covers itself, and whatever a covered
     * pattern matches, the covering one matches too. */
    if (pv) {
        CHECK(hr_pattern_covers(P, pn, P, pn) == 1);
        if (p2v && hr_pattern_covers(P2, p2n, P, pn)) {
            if (tv && hr_topic_match(P, pn, T, tn))
                CHECK(hr_topic_match(P2, p2n, T, tn));
            if (hr_topic_validate(P, pn) == HR_OK)
                CHECK(hr_topic_match(P2, p2n, P, pn));
        }
    }

    if (pv && tv) {
        int m = hr_topic_match(P, pn, T, tn);
        CHECK(m == ref_match(P, pn, T, tn));

        /* The broker's index must agree with the matcher: one plain
         * subscription and one queue group on the pattern. */
        hr_index_t ix;
        CHECK(hr__index_init(&ix) == 0);
        hr_sub_t *a = hr__sub_new(NULL, 1, 1, P, pn, NULL, 0);
        hr_sub_t *b = hr__sub_new(NULL, 2, 2, P, pn, "q", 1);
        hr_sub_t *c = p2v ? hr__sub_new(NULL, 3, 3, P2, p2n, NULL, 0) : NULL;
        CHECK(a && b && hr__index_add(&ix, a) == 0 && hr__index_add(&ix, b) == 0);
        if (c)
            CHECK(hr__index_add(&ix, c) == 0);
        int hits = 0;
        hr_index_visitor_t v = {count_sub, count_group, &hits};
        hr__index_match(&ix, T, tn, &v);
        int want = m ? 101 : 0;
        if (c && hr_topic_match(P2, p2n, T, tn))
            want += 1;
        CHECK(hits == want);
        hr__index_remove(&ix, a);
        hr__index_remove(&ix, b);
        hits = 0;
        hr__index_match(&ix, T, tn, &v);
        CHECK(hits == want - (m ? 101 : 0));
        if (c)
            hr__index_remove(&ix, c);
        hr__sub_free(a);
        hr__sub_free(b);
        hr__sub_free(c);
        hr__index_destroy(&ix);
    }
    free(P);
    free(T);
    free(P2);
    return 0;
}
