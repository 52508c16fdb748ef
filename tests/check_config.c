/* SPDX-License-Identifier: MIT */
/* Configuration: defaults, command line, file, and errors that name the bad setting. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "hr_check.h"

START_TEST(defaults_and_set)
{
    hr_config_t c;
    char err[256];
    hr__config_defaults(&c);
    ck_assert_int_eq(c.port, 7400);
    ck_assert_int_eq(c.ws_port, 7401);
    ck_assert_int_eq(c.max_payload, 1 << 20);
    ck_assert_int_eq(c.history_msgs, 128);
    ck_assert_int_eq(c.history_bytes, 1 << 20);
    ck_assert_int_eq(hr__config_set(&c, "max-payload", "64K", err, sizeof(err)), 0);
    ck_assert_int_eq(c.max_payload, 65536);
    ck_assert_int_eq(hr__config_set(&c, "port", "70000", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "'port'"));
    ck_assert_int_eq(hr__config_set(&c, "port", "12x", err, sizeof(err)), -1);
    ck_assert_int_eq(hr__config_set(&c, "max-payload", "1T", err, sizeof(err)), -1);
    ck_assert_int_eq(hr__config_set(&c, "nope", "1", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown setting 'nope'"));
    ck_assert_ptr_null(strstr(err, "did you mean"));
    ck_assert_int_eq(hr__config_set(&c, "prot", "1", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "unknown setting 'prot' (did you mean 'port'?)");
    ck_assert_int_eq(hr__config_set(&c, "max_payload", "1", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "(did you mean 'max-payload'?)"));
    ck_assert_int_eq(hr__config_set(&c, "heartbeat", "1", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "(did you mean 'heartbeat-ms'?)"));
    ck_assert_int_eq(hr__config_set(&c, "max", "1", err, sizeof(err)), -1);
    ck_assert_ptr_null(strstr(err, "did you mean")); /* the start of many names */
    ck_assert_int_eq(hr__config_set(&c, "help", "1", err, sizeof(err)), -1);
    ck_assert_ptr_null(strstr(err, "did you mean")); /* not a file setting */
    ck_assert_int_eq(hr__config_set(&c, "log-level", "loud", err, sizeof(err)), -1);
    ck_assert_int_eq(hr__config_set(&c, "log-level", "debug", err, sizeof(err)), 0);
}
END_TEST

START_TEST(args_and_file)
{
    hr_config_t c;
    char path[] = "/tmp/herald-cfg-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("# comment\n\nport = 9000\nhistory-msgs=7\n", f);
    fclose(f);
    char *argv[] = {"herald", "--config", path, "--port=9100", "--bind", "127.0.0.1", NULL};
    hr__config_defaults(&c);
    ck_assert_int_eq(hr__config_args(&c, 6, argv), 0);
    ck_assert_int_eq(c.port, 9100); /* later options win */
    ck_assert_int_eq(c.history_msgs, 7);
    ck_assert_str_eq(c.bind, "127.0.0.1");
    f = fopen(path, "w");
    fputs("port = 1\nbogus line\n", f);
    fclose(f);
    ck_assert_int_eq(hr__config_file(&c, path), -1);
    f = fopen(path, "w");
    fputs("heartbeat-ms = 1\n", f);
    fclose(f);
    ck_assert_int_eq(hr__config_file(&c, path), -1);
    unlink(path);
    ck_assert_int_eq(hr__config_file(&c, path), -1); /* missing file */
    char *bad[] = {"herald", "--port", NULL};
    ck_assert_int_eq(hr__config_args(&c, 2, bad), -1);
    char *pos[] = {"herald", "stray", NULL};
    ck_assert_int_eq(hr__config_args(&c, 2, pos), -1);
}
END_TEST

/*
 * Applies `text` as a configuration file. Returns hr__config_file()'s result
 * and leaves what it printed to stderr in `msg`.
 */
static int apply_file(hr_config_t *c, const char *text, char *msg, size_t msglen)
{
    char path[] = "/tmp/herald-cfg-XXXXXX", out[] = "/tmp/herald-cfg-err-XXXXXX";
    int fd = mkstemp(path), efd = mkstemp(out), saved = dup(2);
    ck_assert(fd >= 0 && efd >= 0 && saved >= 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    fflush(stderr);
    dup2(efd, 2);
    int r = hr__config_file(c, path);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(efd, msg, msglen - 1, 0);
    msg[n > 0 ? n : 0] = 0;
    close(efd);
    unlink(out);
    unlink(path);
    return r;
}

START_TEST(file_comments_and_quotes)
{
    hr_config_t c;
    char msg[512];
    hr__config_defaults(&c);
    ck_assert_int_eq(apply_file(&c,
                                "port = 7410   # tcp\n"
                                "ws-port = 7411\t# ws\n"
                                "ws-origins = \"http://a\"\n"
                                "jwt-issuer = \"  iss # not a comment \"  # a comment\n"
                                "jwt-audience = http://b#frag\n"
                                "auth-anonymous = \"\"\n"
                                "bind=\"127.0.0.1\"# comment\n"
                                "log-level = debug #\n"
                                "history-msgs = 5#\n",
                                msg, sizeof(msg)),
                     -1);
    /* `5#`: a `#` right after the value is part of it. */
    ck_assert_ptr_nonnull(strstr(msg, ":9: setting 'history-msgs': '5#'"));
    ck_assert_int_eq(c.port, 7410);
    ck_assert_int_eq(c.ws_port, 7411);
    ck_assert_str_eq(c.ws_origins, "http://a");
    ck_assert_str_eq(c.jwt_issuer, "  iss # not a comment ");
    ck_assert_str_eq(c.jwt_audience, "http://b#frag");
    ck_assert_str_eq(c.auth_anonymous, "");
    ck_assert_str_eq(c.bind, "127.0.0.1");
    ck_assert_str_eq(c.log_level, "debug");
    ck_assert_int_eq(
        apply_file(&c, "ws-origins = http://x # \"quoted\" comment\n", msg, sizeof(msg)), 0);
    ck_assert_str_eq(c.ws_origins, "http://x");
    ck_assert_str_eq(msg, "");
}
END_TEST

START_TEST(file_errors_name_the_line)
{
    hr_config_t c;
    char msg[512];
    hr__config_defaults(&c);
    ck_assert_int_eq(apply_file(&c, "port = 1\n\nws-origins = \"http://a\n", msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ":3: unterminated quote"));
    ck_assert_int_eq(apply_file(&c, "ws-origins = \"a\" b\n", msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ":1: unexpected text after the closing quote"));
    ck_assert_int_eq(apply_file(&c, "# ok\n= 5\n", msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ":2: expected 'name = value'"));
    ck_assert_int_eq(apply_file(&c, "port\n", msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ":1: expected 'name = value'"));
    ck_assert_int_eq(apply_file(&c, "ws-orgins = *\n", msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(
        strstr(msg, ":1: unknown setting 'ws-orgins' (did you mean 'ws-origins'?)"));
    ck_assert_int_eq(apply_file(&c, "config = other.conf\n", msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ":1: 'config' is not allowed"));
    /* A line longer than the buffer is an error, not two lines. */
    static char lng[4096];
    memset(lng, 'x', sizeof(lng) - 2);
    memcpy(lng, "jwt-issuer = ", 13);
    lng[sizeof(lng) - 2] = '\n';
    ck_assert_int_eq(apply_file(&c, lng, msg, sizeof(msg)), -1);
    ck_assert_ptr_nonnull(strstr(msg, ":1: line longer than"));
    ck_assert_int_eq(c.port, 1); /* lines before the bad one were applied */
}
END_TEST

/* A negative size with a suffix must not wrap around into a valid value. */
START_TEST(negative_size_does_not_wrap)
{
    hr_config_t c;
    char err[256];
    hr__config_defaults(&c);
    /* -(2^54 - 1) * 1024 = -(2^64) + 1024: wraps to 1024 when multiplied unchecked. */
    ck_assert_int_eq(hr__config_set(&c, "out-hard", "-18014398509481983K", err, sizeof(err)), -1);
    ck_assert_int_eq(c.out_hard, 8 << 20);
    ck_assert_int_eq(hr__config_set(&c, "out-hard", "-9223372036854775807G", err, sizeof(err)), -1);
    ck_assert_int_eq(hr__config_set(&c, "out-hard", "-1K", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "'out-hard'"));
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *t = tcase_create("config");
    tcase_add_test(t, defaults_and_set);
    tcase_add_test(t, args_and_file);
    tcase_add_test(t, negative_size_does_not_wrap);
    suite_add_tcase(s, t);
    t = tcase_create("file syntax");
    tcase_add_test(t, file_comments_and_quotes);
    tcase_add_test(t, file_errors_name_the_line);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(config_suite)
