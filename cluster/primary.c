/* SPDX-License-Identifier: MIT */
/* The primary: reserves the ports, spawns and supervises the workers, forwards signals. */
#define _GNU_SOURCE /* SO_REUSEPORT, SOCK_CLOEXEC */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include "cluster.h"
#include "link.h"
#include "log.h"
#include "stats.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LOOP_WINDOW_MS 60000 /* exits within this window count towards a crash loop */
#define LOOP_EXITS 5

extern char **environ;

typedef struct worker_s {
    struct primary_s *p;
    int id;
    uv_process_t proc;
    uv_pipe_t ctl;
    uv_timer_t respawn;
    int running, ready, ctl_open;
    uint32_t gen;               /* incarnation: respawns so far */
    uint64_t exits[LOOP_EXITS]; /* times of the recent exits, a ring */
    uint32_t nexits;
    char line[128];
    size_t linelen;
} worker_t;

typedef struct primary_s {
    uv_loop_t *loop;
    const hr_config_t *cfg;
    int argc;
    char **argv;
    char exe[4096];
    int n;
    worker_t w[HR_CLUSTER_MAX];
    int port_fd[2]; /* reserved (bound, not listening) ports: tcp, ws */
    int port[2];
    char key_hex[33], epoch[65];
    hr_cluster_shm_t *shm;
    uv_signal_t sigint, sigterm, sighup;
    int stopping, announced, finished, exit_code;
} primary_t;

static void spawn(worker_t *w);

/* ---- ports -------------------------------------------------------------------- */

/*
 * Every worker binds the same ports with SO_REUSEPORT and the kernel spreads
 * new connections across their accept queues. The primary binds each port
 * first (without listening: such a socket takes no connections), which
 * turns port 0 into one concrete port that all workers then share.
 */
static int reserve_port(primary_t *p, int i, const char *what, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int on = 1, r;
    memset(&ss, 0, sizeof(ss));
    if (strchr(p->cfg->bind, ':'))
        r = uv_ip6_addr(p->cfg->bind, port, (struct sockaddr_in6 *)&ss);
    else
        r = uv_ip4_addr(p->cfg->bind, port, (struct sockaddr_in *)&ss);
    if (r != 0) {
        fprintf(stderr, "herald: setting 'bind': '%s' is not an IP address\n", p->cfg->bind);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) !=
            0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        fprintf(stderr, "herald: cannot listen on %s port %s:%d: %s\n", what, p->cfg->bind, port,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    p->port_fd[i] = fd;
    p->port[i] = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

static int write_ready_file(primary_t *p)
{
    char tmp[600];
    if (!*p->cfg->ready_file)
        return 0;
    snprintf(tmp, sizeof(tmp), "%s.tmp", p->cfg->ready_file);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "tcp=%d\nws=%d\npid=%d\nworkers=%d\n", p->port[0], p->port[1], (int)uv_os_getpid(),
            p->n);
    if (fclose(f) != 0 || rename(tmp, p->cfg->ready_file) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- the control pipe ------------------------------------------------------------ */

static void ctl_write(worker_t *w, const char *text)
{
    if (!w->ctl_open)
        return;
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
    uv_try_write((uv_stream_t *)&w->ctl, &b, 1); /* short lines into an empty pipe */
}

static void broadcast(primary_t *p, const worker_t *except, const char *text)
{
    for (int i = 0; i < p->n; i++)
        if (&p->w[i] != except && p->w[i].ready)
            ctl_write(&p->w[i], text);
}

static void on_line(worker_t *w, const char *line)
{
    primary_t *p = w->p;
    if (strcmp(line, "ready") != 0)
        return;
    w->ready = 1;
    hr__stats_area_set_up(hr__cluster_shm_stats(p->shm), (unsigned)w->id, 1);
    char msg[32];
    snprintf(msg, sizeof(msg), "up %d\n", w->id);
    broadcast(p, w, msg);
    if (p->announced) {
        HR_LOG(HR_LOG_INFO, 0, "worker %d is back (pid %d, incarnation %u)", w->id,
               (int)w->proc.pid, w->gen);
        return;
    }
    for (int i = 0; i < p->n; i++)
        if (!p->w[i].ready)
            return;
    p->announced = 1;
    if (write_ready_file(p) != 0)
        HR_LOG(HR_LOG_ERROR, 0, "setting 'ready-file': cannot write '%s': %s", p->cfg->ready_file,
               strerror(errno));
    HR_LOG(HR_LOG_INFO, 0, "herald %s ready: %d workers on tcp %d and ws %d (primary pid %d)",
           HERALD_VERSION, p->n, p->port[0], p->port[1], (int)uv_os_getpid());
}

static void on_ctl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    worker_t *w = h->data;
    (void)hint;
    *buf = uv_buf_init(w->line + w->linelen, (unsigned)(sizeof(w->line) - 1 - w->linelen));
}

static void maybe_finish(primary_t *p);

static void on_ctl_closed(uv_handle_t *h)
{
    worker_t *w = h->data;
    w->ctl_open = 0;
    if (w->p->stopping)
        maybe_finish(w->p);
}

static void on_ctl_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    worker_t *w = st->data;
    (void)buf;
    if (n < 0) {
        uv_close((uv_handle_t *)&w->ctl, on_ctl_closed);
        return;
    }
    w->linelen += (size_t)n;
    char *nl;
    while ((nl = memchr(w->line, '\n', w->linelen)) != NULL) {
        *nl = 0;
        on_line(w, w->line);
        size_t used = (size_t)(nl - w->line) + 1;
        memmove(w->line, nl + 1, w->linelen - used);
        w->linelen -= used;
    }
    if (w->linelen == sizeof(w->line) - 1)
        w->linelen = 0; /* a line that long is not ours */
}

/* ---- supervision ------------------------------------------------------------------ */

static void maybe_finish(primary_t *p)
{
    if (p->finished)
        return;
    for (int i = 0; i < p->n; i++)
        if (p->w[i].running || p->w[i].ctl_open)
            return;
    p->finished = 1;
    uv_close((uv_handle_t *)&p->sigint, NULL);
    uv_close((uv_handle_t *)&p->sigterm, NULL);
    uv_close((uv_handle_t *)&p->sighup, NULL);
    for (int i = 0; i < p->n; i++)
        uv_close((uv_handle_t *)&p->w[i].respawn, NULL);
}

static void on_respawn(uv_timer_t *t)
{
    worker_t *w = t->data;
    if (!w->p->stopping)
        spawn(w);
}

static void on_proc_closed(uv_handle_t *h)
{
    worker_t *w = h->data;
    w->running = 0;
    if (w->p->stopping)
        maybe_finish(w->p);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    worker_t *w = proc->data;
    primary_t *p = w->p;
    uint64_t now = uv_now(p->loop);
    w->ready = 0;
    hr__stats_area_set_up(hr__cluster_shm_stats(p->shm), (unsigned)w->id, 0);
    uv_close((uv_handle_t *)proc, on_proc_closed);
    if (p->stopping) {
        if (status != 0 || sig != 0) {
            HR_LOG(HR_LOG_WARN, 0, "worker %d exited with status %lld, signal %d while stopping",
                   w->id, (long long)status, sig);
            p->exit_code = 1;
        }
        return;
    }
    char msg[32];
    snprintf(msg, sizeof(msg), "down %d\n", w->id);
    broadcast(p, w, msg);
    w->exits[w->nexits++ % LOOP_EXITS] = now ? now : 1;
    uint32_t recent = 0;
    for (int i = 0; i < LOOP_EXITS; i++)
        if (w->exits[i] && now - w->exits[i] < LOOP_WINDOW_MS)
            recent++;
    uint64_t delay = BACKOFF_MIN_MS;
    for (uint32_t i = 1; i < recent && delay < BACKOFF_MAX_MS; i++)
        delay *= 2;
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    if (recent >= LOOP_EXITS)
        HR_LOG(HR_LOG_ERROR, 0,
               "worker %d is crash-looping: %u exits within %d s (last: status %lld, signal %d); "
               "respawning every %llu ms",
               w->id, recent, LOOP_WINDOW_MS / 1000, (long long)status, sig,
               (unsigned long long)delay);
    else
        HR_LOG(HR_LOG_WARN, 0, "worker %d exited (status %lld, signal %d): respawning in %llu ms",
               w->id, (long long)status, sig, (unsigned long long)delay);
    uv_timer_start(&w->respawn, on_respawn, delay, 0);
}

static void setenv_fmt(const char *name, const char *fmt, long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), fmt, v);
    setenv(name, buf, 1);
}

static void spawn(worker_t *w)
{
    primary_t *p = w->p;
    uv_process_options_t o;
    uv_stdio_container_t io[4 + HR_CLUSTER_FDS_MAX];
    int nio = 4;
    memset(&o, 0, sizeof(o));
    memset(io, 0, sizeof(io));
    /* The environment is the primary's own plus the worker's place; set just
     * before the spawn, which copies it. */
    setenv_fmt("HERALD_WORKER_ID", "%lld", w->id);
    setenv_fmt("HERALD_WORKERS", "%lld", p->n);
    setenv_fmt("HERALD_WORKER_GEN", "%lld", (long long)w->gen);
    setenv_fmt("HERALD_WORKER_TCP", "%lld", p->port[0]);
    setenv_fmt("HERALD_WORKER_WS", "%lld", p->port[1]);
    setenv("HERALD_WORKER_KEY", p->key_hex, 1);
    setenv("HERALD_WORKER_EPOCH", p->epoch, 1);
    io[0].flags = UV_IGNORE;
    io[1].flags = UV_INHERIT_FD;
    io[1].data.fd = 1;
    io[2].flags = UV_INHERIT_FD;
    io[2].data.fd = 2;
    uv_pipe_init(p->loop, &w->ctl, 0);
    w->ctl.data = w;
    io[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
    io[3].data.stream = (uv_stream_t *)&w->ctl;
    nio += hr__cluster_shm_stdio(p->shm, io + 4, HR_CLUSTER_FDS_MAX);
    o.file = p->exe;
    o.args = p->argv;
    o.env = environ;
    o.stdio = io;
    o.stdio_count = nio;
    o.exit_cb = on_exit_cb;
    w->proc.data = w;
    w->linelen = 0;
    int r = uv_spawn(p->loop, &w->proc, &o);
    w->gen++;
    if (r != 0) {
        HR_LOG(HR_LOG_ERROR, 0, "cannot start worker %d: %s; retrying in %d ms", w->id,
               uv_strerror(r), BACKOFF_MAX_MS);
        uv_close((uv_handle_t *)&w->ctl, NULL);
        uv_timer_start(&w->respawn, on_respawn, BACKOFF_MAX_MS, 0);
        return;
    }
    w->running = 1;
    w->ctl_open = 1;
    hr__stats_area_spawned(hr__cluster_shm_stats(p->shm), (unsigned)w->id, w->proc.pid);
    uv_read_start((uv_stream_t *)&w->ctl, on_ctl_alloc, on_ctl_read);
}

/* ---- signals ------------------------------------------------------------------------ */

static void on_signal(uv_signal_t *h, int signum)
{
    primary_t *p = h->data;
    if (signum == SIGHUP) {
        HR_LOG(HR_LOG_INFO, 0, "SIGHUP received: every worker reloads the configuration");
        for (int i = 0; i < p->n; i++)
            if (p->w[i].running)
                uv_process_kill(&p->w[i].proc, SIGHUP);
        return;
    }
    HR_LOG(HR_LOG_INFO, 0, "%s received: %s", signum == SIGINT ? "SIGINT" : "SIGTERM",
           p->stopping ? "workers close every connection now" : "draining every worker");
    p->stopping = 1;
    for (int i = 0; i < p->n; i++) {
        uv_timer_stop(&p->w[i].respawn);
        if (p->w[i].running)
            uv_process_kill(&p->w[i].proc, SIGTERM);
    }
    maybe_finish(p);
}

static void random_hex(char *out, size_t nbytes)
{
    uint8_t b[32];
    if (uv_random(NULL, NULL, b, nbytes, 0, NULL) != 0) {
        uv_timeval64_t tv;
        uv_gettimeofday(&tv);
        for (size_t i = 0; i < nbytes; i++)
            b[i] = (uint8_t)((uint64_t)tv.tv_usec * 2654435761u >> (i % 8) * 8) ^ (uint8_t)i;
    }
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int hr__primary_run(const hr_config_t *cfg, int argc, char **argv)
{
    static primary_t p; /* large: not on the stack */
    size_t len = sizeof(p.exe);
    memset(&p, 0, sizeof(p));
    p.loop = uv_default_loop();
    p.cfg = cfg;
    p.argc = argc;
    p.argv = argv;
    p.n = (int)cfg->workers;
    p.port_fd[0] = p.port_fd[1] = -1;
    if (uv_exepath(p.exe, &len) != 0) {
        fprintf(stderr, "herald: cannot find the herald executable to start workers\n");
        return 1;
    }
    if (reserve_port(&p, 0, "tcp", (int)cfg->port) != 0 ||
        reserve_port(&p, 1, "ws", (int)cfg->ws_port) != 0)
        return 1;
    random_hex(p.key_hex, 16);
    random_hex(p.epoch, 8);
    if (!(p.shm = hr__cluster_shm_create(p.n, cfg))) {
        fprintf(stderr, "herald: cannot set up shared memory for %d workers: %s\n", p.n,
                strerror(errno));
        return 1;
    }
    uv_signal_init(p.loop, &p.sigint);
    uv_signal_init(p.loop, &p.sigterm);
    uv_signal_init(p.loop, &p.sighup);
    p.sigint.data = p.sigterm.data = p.sighup.data = &p;
    uv_signal_start(&p.sigint, on_signal, SIGINT);
    uv_signal_start(&p.sigterm, on_signal, SIGTERM);
    uv_signal_start(&p.sighup, on_signal, SIGHUP);
    for (int i = 0; i < p.n; i++) {
        worker_t *w = &p.w[i];
        w->p = &p;
        w->id = i;
        uv_timer_init(p.loop, &w->respawn);
        w->respawn.data = w;
        spawn(w);
    }
    uv_run(p.loop, UV_RUN_DEFAULT);
    uv_loop_close(p.loop);
    hr__cluster_shm_free(p.shm);
    for (int i = 0; i < 2; i++)
        if (p.port_fd[i] >= 0)
            close(p.port_fd[i]);
    HR_LOG(HR_LOG_INFO, 0, "every worker drained; bye");
    return p.exit_code;
}
