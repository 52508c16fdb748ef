/* SPDX-License-Identifier: MIT */
/* Test fixture: start, stop, kill and restart the broker binary. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hr_fixture.h"

static const char *bin(void)
{
    const char *b = getenv("HERALD_BIN");
    return b && *b ? b : "./broker/herald";
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int spawn(hr_fixture_t *fx)
{
    char ready[300];
    snprintf(ready, sizeof(ready), "%s/ready", fx->dir);
    unlink(ready);
    fx->pid = fork();
    if (fx->pid < 0)
        return -1;
    if (fx->pid == 0) {
        fx->args[fx->nargs] = NULL;
        execv(fx->args[0], fx->args);
        fprintf(stderr, "fixture: exec %s: %s\n", fx->args[0], strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) { /* up to 10 s (sanitizer builds start slowly) */
        FILE *f = fopen(ready, "r");
        if (f) {
            int ok = fscanf(f, "tcp=%d\nws=%d", &fx->tcp_port, &fx->ws_port) >= 1;
            fclose(f);
            if (ok)
                return 0;
        }
        int st;
        if (waitpid(fx->pid, &st, WNOHANG) == fx->pid) {
            fprintf(stderr, "fixture: herald exited during startup (status %d)\n", st);
            fx->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "fixture: herald did not become ready\n");
    hr_fixture_kill(fx);
    return -1;
}

static void add(hr_fixture_t *fx, const char *a)
{
    if (fx->nargs < 62)
        fx->args[fx->nargs++] = strdup(a);
}

int hr_fixture_start(hr_fixture_t *fx, const char *const *extra)
{
    char ready[300];
    memset(fx, 0, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/herald-test-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(ready, sizeof(ready), "%s/ready", fx->dir);
    /* One process (--workers 1): the tests read its memory and signal it by pid. */
    const char *base[] = {bin(), "--workers", "1", "--bind",      "127.0.0.1", "--port",
                          "0",   "--ws-port", "0", "--log-level", "warn",      "--ready-file",
                          ready};
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        add(fx, base[i]);
    for (int i = 0; extra && extra[i]; i++)
        add(fx, extra[i]);
    return spawn(fx);
}

int hr_fixture_restart(hr_fixture_t *fx)
{
    char p[16];
    /* Same ports as before so clients can reconnect to the same address. */
    for (int i = 0; i < fx->nargs; i++) {
        if (strcmp(fx->args[i], "--port") == 0 && i + 1 < fx->nargs) {
            snprintf(p, sizeof(p), "%d", fx->tcp_port);
            free(fx->args[i + 1]);
            fx->args[i + 1] = strdup(p);
        } else if (strcmp(fx->args[i], "--ws-port") == 0 && i + 1 < fx->nargs && fx->ws_port) {
            snprintf(p, sizeof(p), "%d", fx->ws_port);
            free(fx->args[i + 1]);
            fx->args[i + 1] = strdup(p);
        }
    }
    for (int i = 0; i < 200; i++) { /* the port may linger briefly */
        if (spawn(fx) == 0)
            return 0;
        sleep_ms(50);
    }
    return -1;
}

int hr_fixture_stop(hr_fixture_t *fx)
{
    int st;
    if (fx->pid <= 0)
        return -1;
    kill(fx->pid, SIGTERM);
    for (int i = 0; i < 1500; i++) {
        if (waitpid(fx->pid, &st, WNOHANG) == fx->pid) {
            fx->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        sleep_ms(10);
    }
    hr_fixture_kill(fx);
    return -1;
}

void hr_fixture_kill(hr_fixture_t *fx)
{
    if (fx->pid <= 0)
        return;
    kill(fx->pid, SIGKILL);
    waitpid(fx->pid, NULL, 0);
    fx->pid = 0;
}

void hr_fixture_destroy(hr_fixture_t *fx)
{
    char p[300];
    hr_fixture_kill(fx);
    for (int i = 0; i < fx->nargs; i++)
        free(fx->args[i]);
    fx->nargs = 0;
    snprintf(p, sizeof(p), "%s/ready", fx->dir);
    unlink(p);
    rmdir(fx->dir);
}
