/* SPDX-License-Identifier: MIT */
/* The in-memory engine through its operations: seq, history bounds, replay, gaps, reclamation. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "hr_check.h"
#include "map.h"

static hr_slice_t S(const char *s)
{
    hr_slice_t x = {s, strlen(s)};
    return x;
}

typedef struct pubres_s {
    int calls, status;
    uint64_t seq;
} pubres_t;

static void on_pub(void *arg, int status, hr_slice_t topic, uint64_t h, uint64_t seq,
                   hr_msg_t *body)
{
    (void)topic;
    (void)h;
    pubres_t *r = arg;
    r->calls++;
    r->status = status;
    r->seq = seq;
    ck_assert(status != HR_OK || body != NULL);
}

/* Publishes `plen` bytes to `topic`; returns the seq (0 when refused). */
static uint64_t publish(hr_engine_t *e, const char *topic, size_t plen)
{
    static char payload[4096];
    pubres_t r = {0, 0, 0};
    hr_epub_t p = {S(topic), hr__hash(topic, strlen(topic)), {payload, plen}, {0}, {0}, 0, 0};
    int st = hr__engine_publish(e, &p, on_pub, &r);
    if (st < 0) {
        ck_assert_int_eq(r.calls, 0); /* a refused call never calls back */
        return 0;
    }
    ck_assert_int_eq(r.calls, 1); /* synchronous engine: answered inside the call */
    return r.seq;
}

typedef struct seen_s {
    uint64_t seqs[256];
    int n;
    int done, status;
    uint64_t topics;
} seen_t;

static void on_msg(void *arg, hr_slice_t topic, uint64_t seq, hr_msg_t *m)
{
    seen_t *s = arg;
    hr_buf_t b;
    hr_frame_t f;
    uint8_t hdr[HR_DELIVERY_HDR_MAX];
    hr_buf_init(&b);
    size_t h = hr_msg_delivery_header(m, 1, HR_FRAMING_LP, hdr);
    hr_buf_append(&b, hdr + 4, h - 4);
    hr_buf_append(&b, hr_msg_bytes(m), m->len);
    ck_assert_int_eq(hr_frame_decode(b.base, b.len, 0, &f, NULL), HR_OK);
    ck_assert(f.flags & HR_F_REPLAY);
    ck_assert_uint_eq(f.seq, seq);
    ck_assert(f.topic.n == topic.n && memcmp(f.topic.p, topic.p, topic.n) == 0);
    if (s->n < (int)(sizeof(s->seqs) / sizeof(s->seqs[0])))
        s->seqs[s->n] = f.seq;
    s->n++;
    hr_buf_destroy(&b);
}

static void on_done(void *arg, int status, uint64_t topics)
{
    seen_t *s = arg;
    s->done++;
    s->status = status;
    s->topics = topics;
}

/* Replays `pattern` with the given options; returns the final status. */
static int replay(hr_engine_t *e, const char *pattern, int has_since, uint64_t since, int has_last,
                  uint64_t last, const char *epoch, seen_t *s)
{
    memset(s, 0, sizeof(*s));
    hr_erange_t r = {.pattern = S(pattern),
                     .wildcard = hr_topic_validate(pattern, strlen(pattern)) != HR_OK,
                     .has_since = has_since,
                     .since = since,
                     .has_last = has_last,
                     .last = last};
    r.hash = hr__hash(pattern, strlen(pattern));
    if (epoch) {
        r.has_epoch = 1;
        r.epoch = S(epoch);
    }
    ck_assert_int_eq(hr__engine_replay(e, &r, on_msg, on_done, s), HR_OK);
    ck_assert_int_eq(s->done, 1);
    return s->status;
}

static hr_engine_stats_t stats(hr_engine_t *e)
{
    hr_engine_stats_t st;
    e->ops->stats(e, &st);
    return st;
}

static hr_engine_t *mem(size_t topics, uint32_t msgs, size_t bytes, size_t total, size_t tombs)
{
    hr_mem_limits_t lim = {topics, msgs, bytes, total, tombs, "test-epoch", NULL, NULL, NULL, NULL};
    hr_engine_t *e = hr__engine_mem_new(&lim);
    ck_assert_ptr_nonnull(e);
    return e;
}

START_TEST(seq_and_replay)
{
    hr_engine_t *e = mem(100, 5, 1 << 20, 1 << 30, 16);
    seen_t s;
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(publish(e, "a", 10), (uint64_t)i + 1);
    ck_assert_uint_eq(publish(e, "b", 10), 1);
    ck_assert_str_eq(e->ops->epoch(e), "test-epoch");
    ck_assert_int_eq(replay(e, "a", 1, 5, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 3);
    ck_assert_uint_eq(s.seqs[0], 6);
    ck_assert_int_eq(replay(e, "a", 1, 1, 0, 0, NULL, &s), HR_EGAP); /* 2 and 3 are gone */
    ck_assert_int_eq(s.n, 5);
    ck_assert_uint_eq(s.seqs[0], 4);
    ck_assert_int_eq(replay(e, "a", 1, 100, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 0);
    /* last: the newest N, never a gap */
    ck_assert_int_eq(replay(e, "a", 0, 0, 1, 2, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert_uint_eq(s.seqs[0], 7);
    ck_assert_int_eq(replay(e, "a", 0, 0, 1, 50, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 5);
    /* since and last: the later start wins */
    ck_assert_int_eq(replay(e, "a", 1, 6, 1, 5, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert_uint_eq(s.seqs[0], 7);
    ck_assert_int_eq(replay(e, "a", 1, 1, 1, 5, NULL, &s), HR_OK); /* last 5 starts at 4 */
    ck_assert_int_eq(s.n, 5);
    /* another epoch: ERR 10, then everything retained as if since were 0 */
    ck_assert_int_eq(replay(e, "a", 1, 7, 0, 0, "other", &s), HR_EGAP);
    ck_assert_int_eq(s.n, 5);
    ck_assert_int_eq(replay(e, "a", 1, 7, 0, 0, "test-epoch", &s), HR_OK);
    ck_assert_int_eq(s.n, 1);
    /* wildcards: every matching topic, topics examined reported */
    ck_assert_int_eq(replay(e, "*", 1, 0, 0, 0, NULL, &s), HR_EGAP);
    ck_assert_int_eq(s.n, 6);
    ck_assert_uint_ge(s.topics, 2);
    hr_erange_t r = {.pattern = S(">"), .wildcard = 1, .has_since = 1, .scan_budget = 1};
    ck_assert_int_eq(hr__engine_replay(e, &r, on_msg, on_done, &s), HR_OK);
    ck_assert_int_eq(s.status, HR_ELIMIT); /* 2 topics, budget 1: nothing replayed */
    hr__engine_destroy(e);
}
END_TEST

START_TEST(byte_bounds)
{
    hr_engine_t *e = mem(100, 128, 4096, 3 * 4096, 16);
    seen_t s;
    for (int i = 0; i < 50; i++)
        publish(e, "a", 1000);
    replay(e, "a", 1, 0, 0, 0, NULL, &s);
    ck_assert_int_ge(s.n, 2);
    ck_assert_uint_le(stats(e).hist_bytes, 3 * 4096);
    for (int i = 0; i < 50; i++) {
        publish(e, "b", 1000);
        publish(e, "c", 1000);
        publish(e, "d", 1000);
    }
    ck_assert_uint_le(stats(e).hist_bytes, 3 * 4096); /* the total bound holds, rings included */
    /* the least recently published topic gave way first */
    seen_t d;
    replay(e, "d", 1, 0, 0, 0, NULL, &d);
    replay(e, "a", 1, 0, 0, 0, NULL, &s);
    ck_assert_int_lt(s.n, d.n);
    ck_assert_int_eq(s.status, HR_EGAP);
    /* a message larger than the per-topic bound is still kept as the newest */
    publish(e, "big", 4000);
    publish(e, "big", 4000);
    replay(e, "big", 1, 0, 0, 0, NULL, &s);
    ck_assert_int_eq(s.n, 1);
    hr__engine_destroy(e);
}
END_TEST

/*
 * Topics whose history was evicted leave the list the global trim walks:
 * after 20,000 topics each published once under a budget that holds a few
 * dozen messages, only those few are on it, so a publish costs the same
 * however many emptied topics exist.
 */
START_TEST(evicted_topics_not_walked)
{
    hr_engine_t *e = mem(1000000, 16, 1 << 20, 8192, 0);
    char name[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "t.%d", i);
        publish(e, name, 100);
    }
    hr_engine_stats_t st = stats(e);
    ck_assert_uint_eq(st.topics, 20000);
    ck_assert_uint_le(st.hist_bytes, 8192);
    ck_assert_uint_le(st.hist_topics, 8192 / 100);
    ck_assert_uint_eq(st.hist_topics, st.hist_msgs);
    hr__engine_destroy(e);
}
END_TEST

/* Replay copies are cached only within history-total. */
START_TEST(replay_cache_bounded)
{
    hr_engine_t *e = mem(100, 64, 1 << 20, 16 * 1024, 16);
    seen_t s;
    for (int i = 0; i < 64; i++)
        publish(e, "a", 200);
    for (int i = 0; i < 3; i++) {
        replay(e, "a", 1, 0, 0, 0, NULL, &s);
        ck_assert_int_ge(s.n, 1);
        ck_assert_uint_le(stats(e).hist_bytes, 16 * 1024);
    }
    ck_assert_uint_gt(stats(e).replay_uncached, 0);
    hr__engine_destroy(e);
}
END_TEST

static const char *interested;

static int has_interest(void *arg, const char *topic, size_t n, uint64_t h)
{
    (void)arg;
    (void)h;
    return interested && strlen(interested) == n && memcmp(interested, topic, n) == 0;
}

/*
 * At max-topics the least recently published topic without interest makes
 * room; its seq is remembered, so when it comes back its seq continues and
 * a client resuming it is told about the lost history, never handed a seq
 * that went backwards.
 */
START_TEST(reclaim_keeps_seq)
{
    hr_mem_limits_t lim = {2, 8, 1 << 20, 1 << 20, 16, "e", has_interest, NULL, NULL, NULL};
    hr_engine_t *e = hr__engine_mem_new(&lim);
    seen_t s;
    interested = NULL;
    for (int i = 0; i < 3; i++)
        publish(e, "a", 10);
    publish(e, "b", 10);
    ck_assert_uint_eq(publish(e, "c", 10), 1); /* "a" reclaimed */
    ck_assert_uint_eq(stats(e).reclaimed, 1);
    ck_assert_int_eq(replay(e, "a", 1, 2, 0, 0, NULL, &s), HR_EGAP); /* seq 3 is gone */
    ck_assert_int_eq(replay(e, "a", 1, 3, 0, 0, NULL, &s), HR_OK);   /* nothing missed */
    ck_assert_uint_eq(publish(e, "a", 10), 4);                       /* "b" reclaimed */
    /* a topic something subscribes to is skipped */
    interested = "c";
    ck_assert_uint_eq(publish(e, "d", 10), 1); /* reclaims "a", not "c" */
    ck_assert_uint_eq(publish(e, "c", 10), 2);
    interested = NULL;
    hr__engine_destroy(e);

    /* every topic has interest: the limit answers */
    lim.max_topics = 1;
    e = hr__engine_mem_new(&lim);
    interested = "x";
    publish(e, "x", 10);
    hr_epub_t p = {S("y"), hr__hash("y", 1), S("p"), {0}, {0}, 0, 0};
    pubres_t r = {0, 0, 0};
    ck_assert_int_eq(hr__engine_publish(e, &p, on_pub, &r), HR_ELIMIT);
    ck_assert_int_eq(r.calls, 0);
    interested = NULL;
    hr__engine_destroy(e);
}
END_TEST

/* Past the tombstone bound the oldest is forgotten and the floor rises above its seq. */
START_TEST(tombstone_floor)
{
    hr_engine_t *e = mem(1, 8, 1 << 20, 1 << 20, 1);
    for (int i = 0; i < 5; i++)
        publish(e, "a", 1);
    ck_assert_uint_eq(publish(e, "b", 1), 1); /* a (seq 5) tombstoned */
    ck_assert_uint_eq(publish(e, "c", 1), 6); /* b tombstoned, a forgotten: floor 5 */
    ck_assert_uint_eq(stats(e).seq_floor, 5);
    ck_assert_uint_eq(publish(e, "a", 1), 6); /* never backwards */
    ck_assert_uint_eq(publish(e, "z", 1), 7); /* c (6) forgotten: floor 6 */
    hr__engine_destroy(e);
}
END_TEST

/* Wildcard replays visit the topic tree: only the paths a pattern can match. */
START_TEST(wildcard_visits_only_matches)
{
    hr_engine_t *e = mem(1000000, 4, 1 << 20, 1 << 30, 16);
    seen_t s;
    char name[48];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "user.%d.inbox", i);
        publish(e, name, 1);
    }
    publish(e, "room.a", 1);
    publish(e, "room.b.c", 1);
    publish(e, "$SYS.x", 1);
    ck_assert_int_eq(replay(e, "room.*", 1, 0, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert_uint_lt(s.topics, 10); /* not 5003 */
    ck_assert_int_eq(replay(e, "room.>", 1, 0, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 2);
    ck_assert_int_eq(replay(e, "user.77.*", 1, 0, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert_uint_lt(s.topics, 10);
    ck_assert_int_eq(replay(e, ">", 1, 0, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 5002); /* never the $ topic */
    ck_assert_int_eq(replay(e, "$SYS.>", 1, 0, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert_int_eq(replay(e, "*.*.inbox", 1, 0, 0, 0, NULL, &s), HR_OK);
    ck_assert_int_eq(s.n, 5000);
    hr_erange_t r = {
        .pattern = S("user.*.inbox"), .wildcard = 1, .has_since = 1, .scan_budget = 100};
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(hr__engine_replay(e, &r, on_msg, on_done, &s), HR_OK);
    ck_assert_int_eq(s.status, HR_ELIMIT); /* 5000 matches, budget 100: nothing replayed */
    ck_assert_int_eq(s.n, 0);
    hr__engine_destroy(e);
}
END_TEST

static Suite *engine_suite(void)
{
    Suite *s = suite_create("engine");
    TCase *t = tcase_create("memory");
    tcase_add_test(t, seq_and_replay);
    tcase_add_test(t, byte_bounds);
    tcase_add_test(t, evicted_topics_not_walked);
    tcase_add_test(t, replay_cache_bounded);
    tcase_add_test(t, reclaim_keeps_seq);
    tcase_add_test(t, tombstone_floor);
    tcase_add_test(t, wildcard_visits_only_matches);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(engine_suite)
