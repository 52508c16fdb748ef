/* SPDX-License-Identifier: MIT */
/* A worker's side of the cluster: its place from the environment, the primary's control pipe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "link.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "stats.h"

#define CTL_FD 3

static uv_pipe_t ctl;
static int ctl_open;
static char ctl_line[128];
static size_t ctl_len;

static int env_int(const char *name, long long lo, long long hi, long long *out)
{
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return -1;
    long long x = strtoll(v, &end, 10);
    if (*end || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int hr__worker_setup(hr_config_t *cfg)
{
    long long id, n, gen, tcp, ws;
    if (!getenv("HERALD_WORKER_ID"))
        return 0;
    const char *key = getenv("HERALD_WORKER_KEY"), *epoch = getenv("HERALD_WORKER_EPOCH");
    uint8_t k[16];
    if (env_int("HERALD_WORKER_ID", 0, HR_CLUSTER_MAX - 1, &id) != 0 ||
        env_int("HERALD_WORKERS", 2, HR_CLUSTER_MAX, &n) != 0 || id >= n ||
        env_int("HERALD_WORKER_GEN", 0, 1 << 20, &gen) != 0 ||
        env_int("HERALD_WORKER_TCP", 1, 65535, &tcp) != 0 ||
        env_int("HERALD_WORKER_WS", 1, 65535, &ws) != 0 || !key || strlen(key) != 32 || !epoch ||
        strlen(epoch) >= sizeof(cfg->epoch)) {
        fprintf(stderr, "herald: HERALD_WORKER_* is set but incomplete: only the primary "
                        "process starts workers\n");
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        int hi = hexval(key[2 * i]), lo = hexval(key[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            fprintf(stderr, "herald: HERALD_WORKER_KEY is not hex\n");
            return -1;
        }
        k[i] = (uint8_t)(hi << 4 | lo);
    }
    hr__hash_set_key(k);
    cfg->worker_id = (int)id;
    cfg->nworkers = (int)n;
    cfg->reuseport = 1;
    cfg->port = tcp;
    cfg->ws_port = ws;
    /* Each incarnation of a worker gets its own range of client ids. */
    cfg->id_base = (uint64_t)gen << 32;
    snprintf(cfg->epoch, sizeof(cfg->epoch), "%s", epoch);
    cfg->ready_file[0] = 0; /* the primary writes it once every worker listens */
    return 1;
}

static void on_line(hr_server_t *s, const char *line)
{
    int peer;
    if (sscanf(line, "down %d", &peer) == 1) {
        HR_LOG(HR_LOG_INFO, 0, "worker %d is down", peer);
        hr__link_peer_down(s, peer);
    } else if (sscanf(line, "up %d", &peer) == 1) {
        hr__link_peer_up(s, peer);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(ctl_line + ctl_len, (unsigned)(sizeof(ctl_line) - 1 - ctl_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    hr_server_t *s = st->data;
    (void)buf;
    if (n < 0) {
        /* The primary is gone: a worker does not outlive it. */
        HR_LOG(HR_LOG_WARN, 0, "the primary process is gone: shutting down");
        hr__server_shutdown(s);
        return;
    }
    ctl_len += (size_t)n;
    char *nl;
    while ((nl = memchr(ctl_line, '\n', ctl_len)) != NULL) {
        *nl = 0;
        on_line(s, ctl_line);
        size_t used = (size_t)(nl - ctl_line) + 1;
        memmove(ctl_line, nl + 1, ctl_len - used);
        ctl_len -= used;
    }
    if (ctl_len == sizeof(ctl_line) - 1)
        ctl_len = 0;
}

/* The broker stops: the loop may end once the links' handles are closed. */
static void on_stop(hr_server_t *s)
{
    if (ctl_open) {
        uv_close((uv_handle_t *)&ctl, NULL);
        ctl_open = 0;
    }
    hr__link_stop(s);
}

int hr__worker_attach(hr_server_t *s)
{
    /* With a scale-out engine (Redis) each worker is a node of its own: topics, deliveries
     * and queue groups go through the engine, not the rings. */
    int r = s->engine->ops->fans_out ? HR_OK : hr__link_attach(s);
    s->on_stop = on_stop;
    if (r != HR_OK)
        return r;
    uv_pipe_init(s->loop, &ctl, 0);
    ctl.data = s;
    if (uv_pipe_open(&ctl, CTL_FD) != 0) {
        fprintf(stderr, "herald: worker %d: no control pipe from the primary\n", s->worker);
        return HR_EINVAL;
    }
    ctl_open = 1;
    uv_read_start((uv_stream_t *)&ctl, on_alloc, on_read);
    /* Without the stats area the worker still serves; /metrics then shows it alone. */
    if ((r = hr__stats_attach(s, HR_CLUSTER_FD_STATS(s->nworkers), hr__link_counters)) != HR_OK)
        HR_LOG(HR_LOG_WARN, 0, "worker %d: no shared stats area (%s): /metrics shows this worker",
               s->worker, hr_strerror(r));
    return HR_OK;
}

void hr__worker_ready(hr_server_t *s)
{
    uv_buf_t b = uv_buf_init("ready\n", 6);
    (void)s;
    if (ctl_open)
        uv_try_write((uv_stream_t *)&ctl, &b, 1);
}

void hr__worker_detach(hr_server_t *s)
{
    if (ctl_open) {
        uv_close((uv_handle_t *)&ctl, NULL);
        ctl_open = 0;
    }
    hr__stats_detach(s);
    hr__link_detach(s);
}
