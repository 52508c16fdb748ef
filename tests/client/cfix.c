/* SPDX-License-Identifier: MIT */
/* Test helpers for libherald suites: broker child process, loop runners, a breakable TCP proxy. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfix.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads tcp=PORT from the ready file once the broker wrote it. */
static int wait_ready(cfix_t *f, const char *path)
{
    for (int i = 0; i < 1000; i++) {
        FILE *fp = fopen(path, "r");
        if (fp) {
            int port = 0, ws = 0;
            int n = fscanf(fp, "tcp=%d ws=%d", &port, &ws);
            fclose(fp);
            if (n == 2 && port > 0 && ws > 0) {
                f->port = port;
                f->ws_port = ws;
                return 0;
            }
        }
        int st;
        if (waitpid(f->pid, &st, WNOHANG) == f->pid) {
            f->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    return -1;
}

static int spawn(cfix_t *f, int port, int ws_port)
{
    const char *bin = getenv("HERALD_BIN");
    char ready[128], portstr[16], wsstr[16];
    const char *argv[40];
    int n = 0;
    if (!bin)
        return -1;
    snprintf(ready, sizeof(ready), "%s/ready", f->dir);
    unlink(ready);
    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(wsstr, sizeof(wsstr), "%d", ws_port);
    argv[n++] = bin;
    argv[n++] = "--workers"; /* one process: the tests kill and restart it by pid */
    argv[n++] = "1";
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = portstr;
    argv[n++] = "--ws-port";
    argv[n++] = wsstr;
    argv[n++] = "--log-level";
    argv[n++] = "error";
    argv[n++] = "--ready-file";
    argv[n++] = ready;
    for (int i = 0; f->extra[i] && n < 39; i++)
        argv[n++] = f->extra[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Die with the test process, even if it crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    f->pid = pid;
    return wait_ready(f, ready);
}

/*
 * A failing Check test ends its forked child with exit() before teardown
 * runs: the broker then dies with it (PR_SET_PDEATHSIG) and this removes
 * the temporary directory.
 */
static cfix_t *live;

static void cleanup_at_exit(void)
{
    if (live) {
        cfix_kill(live);
        cfix_stop(live);
    }
}

int cfix_start(cfix_t *f, const char *const *extra)
{
    static int registered;
    if (!registered++)
        atexit(cleanup_at_exit);
    live = f;
    memset(f, 0, sizeof(*f));
    for (int i = 0; extra && extra[i] && i < 15; i++)
        f->extra[i] = extra[i];
    snprintf(f->dir, sizeof(f->dir), "/tmp/herald-ctest-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    return spawn(f, 0, 0);
}

int cfix_restart(cfix_t *f)
{
    /* The old socket may linger briefly; the broker binds with SO_REUSEADDR. */
    for (int i = 0; i < 50; i++) {
        if (spawn(f, f->port, f->ws_port) == 0)
            return 0;
        sleep_ms(20);
    }
    return -1;
}

static void reap(cfix_t *f, int sig)
{
    if (f->pid <= 0)
        return;
    kill(f->pid, sig);
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(f->pid, &st, WNOHANG) == f->pid) {
            f->pid = 0;
            return;
        }
        sleep_ms(10);
    }
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

void cfix_stop(cfix_t *f)
{
    char ready[128];
    reap(f, SIGTERM);
    snprintf(ready, sizeof(ready), "%s/ready", f->dir);
    unlink(ready);
    rmdir(f->dir);
    if (live == f)
        live = NULL;
}

void cfix_kill(cfix_t *f)
{
    reap(f, SIGKILL);
}

const char *cfix_url(const cfix_t *f, char *buf, size_t n)
{
    snprintf(buf, n, "tcp://127.0.0.1:%d", f->port);
    return buf;
}

const char *cfix_ws_url(const cfix_t *f, char *buf, size_t n)
{
    snprintf(buf, n, "ws://127.0.0.1:%d/", f->ws_port);
    return buf;
}

static void tick_cb(uv_timer_t *t)
{
}

int cfix_run_until(uv_loop_t *loop, const volatile int *flag, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    uint64_t end = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    while ((!flag || !*flag) && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return flag && *flag;
}

void cfix_run_for(uv_loop_t *loop, int ms)
{
    cfix_run_until(loop, NULL, ms);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void cfix_loop_close(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_NOWAIT);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

int cfix_listen(uv_loop_t *loop, uv_tcp_t *lis, uv_connection_cb cb)
{
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_init(loop, lis);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_bind(lis, (struct sockaddr *)&sa, 0) != 0 || uv_listen((uv_stream_t *)lis, 8, cb))
        abort();
    uv_tcp_getsockname(lis, (struct sockaddr *)&ss, &len);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- a broker's shutdown seen by a client ------------------------------ */

typedef struct cycle_s {
    int connected, disconnected, reconnected, closed;
    int disc_status;
} cycle_t;

static void cycle_state(hr_client_t *c, int ev, int status, void *arg)
{
    cycle_t *e = arg;
    e->connected |= ev == HR_EVENT_CONNECTED;
    e->reconnected |= ev == HR_EVENT_RECONNECTED;
    e->closed |= ev == HR_EVENT_CLOSED;
    if (ev == HR_EVENT_DISCONNECTED && !e->disconnected++)
        e->disc_status = status;
}

static int cycle_steps(cfix_t *f, uv_loop_t *loop, cycle_t *e)
{
    if (!cfix_run_until(loop, &e->connected, 3000))
        return 1;
    kill(f->pid, SIGTERM);
    if (!cfix_run_until(loop, &e->disconnected, 5000))
        return 2;
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
    if (cfix_restart(f) != 0)
        return 3;
    return cfix_run_until(loop, &e->reconnected, 5000) ? 0 : 4;
}

int cfix_shutdown_cycle(cfix_t *f, hr_client_opts_t *o)
{
    uv_loop_t loop;
    cycle_t e;
    hr_client_t *c;
    memset(&e, 0, sizeof(e));
    o->on_state = cycle_state;
    o->arg = &e;
    uv_loop_init(&loop);
    int r = hr_client_new(&loop, o, &c) == HR_OK ? cycle_steps(f, &loop, &e) : 1;
    if (r != 1) {
        hr_client_close(c);
        if (!cfix_run_until(&loop, &e.closed, 3000) && r == 0)
            r = 5;
    }
    cfix_loop_close(&loop);
    return r ? r : e.disc_status;
}

/* ---- proxy -------------------------------------------------------------- */

typedef struct pair_s {
    struct pair_s *next;
    cfix_proxy_t *p;
    uv_tcp_t down, up;
    uv_connect_t creq;
    int closed, open_handles;
} pair_t;

struct cfix_proxy_s {
    uv_loop_t *loop;
    uv_tcp_t *lis;
    int port, target;
    int frozen;
    pair_t *pairs;
    cfix_tap_cb tap;
    void *tap_arg;
};

static void pair_handle_closed(uv_handle_t *h)
{
    pair_t *pr = h->data;
    if (--pr->open_handles == 0)
        free(pr);
}

static void pair_close(pair_t *pr)
{
    if (pr->closed)
        return;
    pr->closed = 1;
    cfix_proxy_t *p = pr->p;
    for (pair_t **pp = &p->pairs; *pp; pp = &(*pp)->next)
        if (*pp == pr) {
            *pp = pr->next;
            break;
        }
    uv_close((uv_handle_t *)&pr->down, pair_handle_closed);
    uv_close((uv_handle_t *)&pr->up, pair_handle_closed);
}

typedef struct {
    uv_write_t req;
    char data[];
} pwrite_t;

static void pw_cb(uv_write_t *req, int status)
{
    free(req->data);
}

static void p_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    b->base = malloc(65536);
    b->len = b->base ? 65536 : 0;
}

static void p_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    pair_t *pr = s->data;
    if (n < 0 || pr->closed) {
        free(b->base);
        pair_close(pr);
        return;
    }
    if (n == 0) {
        free(b->base);
        return;
    }
    if (s == (uv_stream_t *)&pr->down && pr->p->tap)
        pr->p->tap(b->base, (size_t)n, pr->p->tap_arg);
    pwrite_t *w = malloc(sizeof(*w) + (size_t)n);
    memcpy(w->data, b->base, (size_t)n);
    free(b->base);
    w->req.data = w;
    uv_buf_t wb = uv_buf_init(w->data, (unsigned)n);
    uv_stream_t *other =
        s == (uv_stream_t *)&pr->down ? (uv_stream_t *)&pr->up : (uv_stream_t *)&pr->down;
    if (uv_write(&w->req, other, &wb, 1, pw_cb) < 0) {
        free(w);
        pair_close(pr);
    }
}

static void p_connected(uv_connect_t *req, int status)
{
    pair_t *pr = req->data;
    if (pr->closed)
        return;
    if (status < 0) {
        pair_close(pr);
        return;
    }
    if (pr->p->frozen)
        return;
    uv_read_start((uv_stream_t *)&pr->down, p_alloc, p_read);
    uv_read_start((uv_stream_t *)&pr->up, p_alloc, p_read);
}

static void p_accept(uv_stream_t *lis, int status)
{
    cfix_proxy_t *p = lis->data;
    if (status < 0)
        return;
    pair_t *pr = calloc(1, sizeof(*pr));
    pr->p = p;
    uv_tcp_init(p->loop, &pr->down);
    uv_tcp_init(p->loop, &pr->up);
    pr->down.data = pr->up.data = pr->creq.data = pr;
    pr->open_handles = 2;
    pr->next = p->pairs;
    p->pairs = pr;
    if (uv_accept(lis, (uv_stream_t *)&pr->down) < 0) {
        pair_close(pr);
        return;
    }
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", p->target, &sa);
    if (uv_tcp_connect(&pr->creq, &pr->up, (struct sockaddr *)&sa, p_connected) < 0)
        pair_close(pr);
}

static void free_cb(uv_handle_t *h)
{
    free(h);
}

static int p_listen(cfix_proxy_t *p)
{
    struct sockaddr_in sa;
    p->lis = malloc(sizeof(*p->lis));
    uv_tcp_init(p->loop, p->lis);
    p->lis->data = p;
    uv_ip4_addr("127.0.0.1", p->port, &sa);
    int r = uv_tcp_bind(p->lis, (struct sockaddr *)&sa, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)p->lis, 64, p_accept);
    if (r < 0) {
        uv_close((uv_handle_t *)p->lis, free_cb);
        p->lis = NULL;
        return r;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(p->lis, (struct sockaddr *)&ss, &len);
    p->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

cfix_proxy_t *cfix_proxy_new(uv_loop_t *loop, int target_port)
{
    cfix_proxy_t *p = calloc(1, sizeof(*p));
    p->loop = loop;
    p->target = target_port;
    if (p_listen(p) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

int cfix_proxy_port(const cfix_proxy_t *p)
{
    return p->port;
}

void cfix_proxy_tap(cfix_proxy_t *p, cfix_tap_cb cb, void *arg)
{
    p->tap = cb;
    p->tap_arg = arg;
}

void cfix_proxy_freeze(cfix_proxy_t *p)
{
    p->frozen = 1;
    for (pair_t *pr = p->pairs; pr; pr = pr->next) {
        uv_read_stop((uv_stream_t *)&pr->down);
        uv_read_stop((uv_stream_t *)&pr->up);
    }
}

void cfix_proxy_break(cfix_proxy_t *p)
{
    p->frozen = 0;
    while (p->pairs)
        pair_close(p->pairs);
    if (p->lis) {
        uv_close((uv_handle_t *)p->lis, free_cb);
        p->lis = NULL;
    }
}

int cfix_proxy_resume(cfix_proxy_t *p)
{
    return p->lis ? 0 : p_listen(p);
}

void cfix_proxy_free(cfix_proxy_t *p)
{
    cfix_proxy_break(p);
    free(p);
}
