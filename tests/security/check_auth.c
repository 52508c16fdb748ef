/* SPDX-License-Identifier: MIT */
/* Unit suite for broker/auth.c: pattern cover, permission specs, claims, checks, JWT times. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>

#include "auth.h"
#include "hr_check.h"
#include "server.h"

static int covers(const char *p, const char *s)
{
    return hr_pattern_covers(p, strlen(p), s, strlen(s));
}

START_TEST(cover_rules)
{
    static const struct {
        const char *p, *s;
        int want;
    } cases[] = {
        {"a.b", "a.b", 1},     {"a.b", "a.c", 0},
        {"a.b", "a.b.c", 0},   {"a.b.c", "a.b", 0},
        {"a.*", "a.b", 1},     {"a.*", "a.*", 1},
        {"a.*", "a.>", 0},     {"a.*", "a.b.c", 0},
        {"a.>", "a.b", 1},     {"a.>", "a.*", 1},
        {"a.>", "a.>", 1},     {"a.>", "a.b.>", 1},
        {"a.>", "a", 0},       {"a.>", "b.c", 0},
        {"*.b", "a.b", 1},     {"*.b", "*.b", 1},
        {"*.b", "*.c", 0},     {"*.*", "a.*", 1},
        {"a.b", "a.*", 0},     {"a.b", "*.b", 0},
        {">", "a", 1},         {">", "a.b.c", 1},
        {">", "*", 1},         {">", ">", 1},
        {">", "$SYS.x", 0},    {"*.x", "$SYS.x", 0},
        {">", "$SYS.>", 0},    {"$SYS.>", "$SYS.conn.1", 1},
        {"$SYS.>", ">", 0},    {"$SYS.*", "$SYS.x", 1},
        {"*", "$x", 0},        {"*", "*", 1},
        {"a.*.c", "a.b.c", 1}, {"a.*.c", "a.*.d", 0},
        {"ab", "a", 0},        {"a", "ab", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(covers(cases[i].p, cases[i].s) == cases[i].want, "covers(%s, %s) != %d",
                      cases[i].p, cases[i].s, cases[i].want);
}
END_TEST

START_TEST(perm_specs)
{
    hr_perms_t p = {0};
    char err[256];
    ck_assert_int_eq(hr__auth_parse_perms(&p, "pub=a.>,b  sub=c.*;sub=$SYS.>", err, sizeof(err)),
                     HR_OK);
    ck_assert_uint_eq(p.pub.n, 2);
    ck_assert_uint_eq(p.sub.n, 2);
    ck_assert_str_eq(p.pub.v[0], "a.>");
    ck_assert_str_eq(p.sub.v[1], "$SYS.>");
    hr__auth_perms_clear(&p);
    ck_assert_int_eq(hr__auth_parse_perms(&p, "pub=", err, sizeof(err)), HR_OK);
    ck_assert_uint_eq(p.pub.n, 0);
    ck_assert_int_eq(hr__auth_parse_perms(&p, "pub=a..b", err, sizeof(err)), HR_ETOPIC);
    ck_assert_ptr_nonnull(strstr(err, "a..b"));
    ck_assert_int_eq(hr__auth_parse_perms(&p, "read=a", err, sizeof(err)), HR_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "'read=a'"));
    ck_assert_int_eq(hr__auth_parse_perms(&p, "pub=a.>.b", err, sizeof(err)), HR_ETOPIC);
    hr__auth_perms_clear(&p);
}
END_TEST

static int claim(hr_perms_t *p, const char *json)
{
    memset(p, 0, sizeof(*p));
    return hr__auth_parse_claim(p, json, strlen(json));
}

START_TEST(claims)
{
    hr_perms_t p;
    ck_assert_int_eq(claim(&p, "{\"pub\":[\"a.>\"],\"sub\":[\"b.*\",\"c\"]}"), HR_OK);
    ck_assert_uint_eq(p.pub.n, 1);
    ck_assert_uint_eq(p.sub.n, 2);
    hr__auth_perms_clear(&p);
    /* Whitespace, unknown keys of every JSON type, escapes. */
    ck_assert_int_eq(claim(&p,
                           " { \"x\" : [1, -2.5e3, true, null, {\"y\": [\"z\"]}] ,"
                           " \"pub\" : [ \"a.\\u0062\" , \"\\\"q\\/\" ] , \"longer-key\": {} } "),
                     0);
    ck_assert_uint_eq(p.pub.n, 2);
    ck_assert_str_eq(p.pub.v[0], "a.b");
    ck_assert_str_eq(p.pub.v[1], "\"q/");
    hr__auth_perms_clear(&p);
    ck_assert_int_eq(claim(&p, "{}"), HR_OK);
    ck_assert_uint_eq(p.pub.n + p.sub.n, 0);
    /* Malformed or invalid: refused whole. */
    static const struct {
        const char *json;
        int want;
    } bad[] = {
        {"", HR_EINVAL},
        {"[]", HR_EINVAL},
        {"{\"pub\":\"a\"}", HR_EINVAL},
        {"{\"pub\":[1]}", HR_EINVAL},
        {"{\"pub\":[\"a..b\"]}", HR_ETOPIC},
        {"{\"pub\":[\"a b\"]}", HR_ETOPIC},
        {"{\"pub\":[\"a\\u00e9\"]}", HR_ETOPIC},
        {"{\"pub\":[\"a\\n\"]}", HR_ETOPIC},
        {"{\"pub\":[\"a\"]", HR_EINVAL},
        {"{\"pub\":[\"a\"]} x", HR_EINVAL},
        {"{\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}", HR_EINVAL},
        {"{\"x\":tru}", HR_EINVAL},
        {"{\"pub\":[\"a\"],}", HR_EINVAL},
        {"{\"sub\":[\"a\",]}", HR_EINVAL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = claim(&p, bad[i].json);
        ck_assert_msg(r == bad[i].want, "%s: %s, want %s", bad[i].json, hr_err_name(r),
                      hr_err_name(bad[i].want));
        hr__auth_perms_clear(&p);
    }
}
END_TEST

START_TEST(allowed)
{
    static hr_server_t srv;
    hr_conn_t c;
    hr_perms_t p = {0};
    char err[256];
    memset(&c, 0, sizeof(c));
    c.srv = &srv;
    hr_slice_t t = {"x.y", 3};
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_PUB, t), 1); /* no auth: unrestricted */
    ck_assert_int_eq(
        hr__auth_parse_perms(&p, "pub=chat.>,_INBOX.me.> sub=chat.*,_INBOX.me.>", err, sizeof(err)),
        0);
    p.shared = 1;
    c.auth = &p;
    hr_slice_t chat = {"chat.a", 6}, news = {"news.a", 6}, inbox = {"_INBOX.me.1", 11},
               other = {"_INBOX.you.1", 12}, deep = {"chat.a.b", 8}, wild = {"chat.>", 6};
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_PUB, chat), 1);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_PUB, deep), 1);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_PUB, news), 0);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_SUB, chat), 1);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_SUB, deep), 0);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_SUB, wild), 0);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_REPLY, inbox), 1);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_REPLY, other), 0);
    ck_assert_int_eq(hr__auth_allowed(&c, HR_AUTH_REPLY, deep), 0); /* publishable only */
    ck_assert_uint_eq(srv.stats.denied_pub, 3);
    ck_assert_uint_eq(srv.stats.denied_sub, 2);
    ck_assert_int_eq(hr__auth_expired(&c), 0);
    p.exp = 1; /* 1970 */
    ck_assert_int_eq(hr__auth_expired(&c), 1);
    hr__auth_conn_free(&c); /* shared: not freed */
    ck_assert_ptr_null(c.auth);
    hr__auth_perms_clear(&p);
}
END_TEST

#define HS_SECRET "an-hs256-secret-of-at-least-32-bytes!!"

/* An HS256 JWT carrying the claims of the JSON object `json`. Free with free(). */
static char *hs256(const char *json)
{
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    ck_assert_msg(jwt_add_grants_json(j, json) == 0, "bad test claims: %s", json);
    ck_assert_int_eq(
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)HS_SECRET, (int)strlen(HS_SECRET)), 0);
    char *tok = jwt_encode_str(j);
    jwt_free(j);
    ck_assert_ptr_nonnull(tok);
    return tok;
}

/*
 * exp, nbf and iat are NumericDates: JSON numbers, maybe with a fraction.
 * Any other type refuses the token with a reason naming the claim; a string
 * nbf used to be ignored, admitting a token before its time.
 */
START_TEST(jwt_time_claims)
{
    static hr_server_t srv;
    /* Each number printed is now plus the next of a, b, c (extra arguments are ignored). */
    static const struct {
        const char *claims;
        double a, b, c;
        const char *why; /* NULL: accepted */
    } cases[] = {
        {"{\"exp\":%.0f}", 300, 0, 0, NULL},
        {"{\"exp\":%.1f,\"nbf\":%.1f,\"iat\":%.1f}", 300.5, -10.5, -10.5, NULL},
        {"{\"exp\":%.0f,\"iat\":%.0f}", 300, 3600, 0, NULL}, /* iat: only its type counts */
        {"{\"exp\":1e15}", 0, 0, 0, NULL},
        {"{\"sub\":\"x\"}", 0, 0, 0, "token has no exp"},
        {"{\"exp\":%.0f}", -1, 0, 0, "token expired"},
        {"{\"exp\":%.1f}", -0.5, 0, 0, "token expired"},
        {"{\"exp\":%.0f,\"nbf\":%.0f}", 300, 3600, 0, "token not valid yet"},
        {"{\"exp\":%.0f,\"nbf\":%.0f}", 300, -60, 0, NULL},
        {"{\"exp\":%.1f,\"nbf\":%.1f}", 300, 1.5, 0, "token not valid yet"},
        {"{\"exp\":\"%.0f\"}", 300, 0, 0, "exp is not a number"},
        {"{\"exp\":null}", 0, 0, 0, "exp is not a number"},
        {"{\"exp\":true}", 0, 0, 0, "exp is not a number"},
        {"{\"exp\":[%.1f]}", 300, 0, 0, "exp is not a number"},
        {"{\"exp\":%.1f,\"nbf\":\"%.0f\"}", 300, 3600, 0, "nbf is not a number"},
        {"{\"exp\":%.1f,\"nbf\":\"0\"}", 300, 0, 0, "nbf is not a number"},
        {"{\"exp\":%.1f,\"nbf\":{}}", 300, 0, 0, "nbf is not a number"},
        {"{\"exp\":%.1f,\"iat\":\"%.0f\"}", 300, 0, 0, "iat is not a number"},
        {"{\"exp\":%.1f,\"iat\":false}", 300, 0, 0, "iat is not a number"},
        {"{\"exp\":1e300}", 0, 0, 0, "exp out of range"},
        {"{\"exp\":%.1f,\"nbf\":-1e300}", 300, 0, 0, "nbf out of range"},
    };
    hr__config_defaults(&srv.cfg);
    snprintf(srv.cfg.jwt_hs256_secret, sizeof(srv.cfg.jwt_hs256_secret), "%s", HS_SECRET);
    ck_assert_int_eq(hr__auth_init(&srv), HR_OK);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        double now = (double)time(NULL);
        snprintf(body, sizeof(body), cases[i].claims, now + cases[i].a, now + cases[i].b,
                 now + cases[i].c);
        char *tok = hs256(body);
        hr_conn_t c;
        const char *why = NULL;
        memset(&c, 0, sizeof(c));
        c.srv = &srv;
        hr_slice_t t = {tok, strlen(tok)};
        int r = hr__auth_hello(&c, t, &why);
        if (cases[i].why) {
            ck_assert_msg(r == HR_EAUTH, "%s: accepted", body);
            ck_assert_msg(strstr(why, cases[i].why) &&
                              strncmp(why, "authentication failed: ", 23) == 0,
                          "%s: '%s', want '%s'", body, why, cases[i].why);
            ck_assert_ptr_null(c.auth);
        } else {
            ck_assert_msg(r == HR_OK, "%s: refused: %s", body, why);
            ck_assert_ptr_nonnull(c.auth);
        }
        hr__auth_conn_free(&c);
        free(tok);
    }
    hr__auth_destroy(&srv);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *t = tcase_create("rules");
    tcase_add_test(t, cover_rules);
    tcase_add_test(t, perm_specs);
    tcase_add_test(t, claims);
    tcase_add_test(t, allowed);
    suite_add_tcase(s, t);
    t = tcase_create("jwt");
    tcase_add_test(t, jwt_time_claims);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(auth_suite)
