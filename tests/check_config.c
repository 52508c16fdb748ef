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

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *t = tcase_create("config");
    tcase_add_test(t, defaults_and_set);
    tcase_add_test(t, args_and_file);
    suite_add_tcase(s, t);
    return s;
}

HR_CHECK_MAIN(config_suite)
