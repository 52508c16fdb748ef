/* SPDX-License-Identifier: MIT */
/* Test certificates for C suites (hr_certs.h). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hr_certs.h"

static char dir[] = "/tmp/herald-certs-XXXXXX";
static pid_t owner; /* the process that made the directory (not a forked test) removes it */
static int made;

static void remove_dir(void)
{
    char cmd[300];
    if (owner == getpid()) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "hr_certs: could not remove %s\n", dir);
    }
}

const char *hr_test_certs(void)
{
    char cmd[512];
    if (made)
        return made > 0 ? dir : NULL;
    made = -1;
    if (!mkdtemp(dir)) {
        perror("hr_certs: mkdtemp");
        return NULL;
    }
    owner = getpid();
    atexit(remove_dir);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s >/dev/null", HR_CERTS_PY, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "hr_certs: '%s' failed (python3 and openssl are needed)\n", cmd);
        return NULL;
    }
    made = 1;
    return dir;
}

const char *hr_test_cert(const char *file)
{
    static char buf[8][300];
    static unsigned k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, file);
    return p;
}
