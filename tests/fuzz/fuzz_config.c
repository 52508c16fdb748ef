/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the configuration file parser and single settings (name = value). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void cleanup(void)
{
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hr_config_t c;
    char err[256];
    if (!*path) {
        snprintf(path, sizeof(path), "/tmp/herald-fuzz-config-%d", (int)getpid());
        atexit(cleanup);
    }

    /* The input as a whole configuration file. */
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    hr__config_defaults(&c);
    (void)hr__config_file(&c, path);
    /* Whatever was accepted stays within the table's bounds. */
    CHECK(c.port >= 0 && c.port <= 65535 && c.ws_port >= 0 && c.ws_port <= 65535);
    CHECK(c.max_payload >= 1 && c.max_connections >= 1 && c.heartbeat_ms >= 50);
    CHECK(memchr(c.bind, 0, sizeof(c.bind)) && memchr(c.ready_file, 0, sizeof(c.ready_file)));

    /* The input as one "name=value" setting. */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    char *eq = strchr(s, '=');
    if (eq) {
        *eq = 0;
        hr__config_defaults(&c);
        int r = hr__config_set(&c, s, eq + 1, err, sizeof(err));
        CHECK(r == 0 || r == -1);
        CHECK(r == 0 || memchr(err, 0, sizeof(err)));
    }
    free(s);
    return 0;
}
