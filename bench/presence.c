/* SPDX-License-Identifier: MIT */
/* herald-bench `presence`: members join and leave one room; what each watcher receives. */
#include "hb.h"

#include <herald/protocol.h>
#include <herald/status.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Unlike the other scenarios this one publishes nothing: `members`
 * connections each send HELLO and a SUB with `presence` to one room, then
 * all close; `watchers` connections watch `$PRES.<room>`. A reader thread
 * records every frame a watcher receives (count, bytes, the smallest gap
 * between two changes, the largest body) while the main thread drives the
 * members: all join, then for a few intervals members leave and new ones
 * join in their place (churn), then all leave. What presence must keep bounded is the watcher's
 * side: frames and bytes per interval, whatever the churn, and the broker's CPU.
 */

#define ROOM "bench.presence.room"

typedef struct watcher_s {
    int fd;
    hb_buf_t in;
    uint64_t frames, bytes, max_body, count, last_ns, min_gap_ns;
} watcher_t;

typedef struct pres_s {
    watcher_t *w;
    int nw;
    volatile int stop;
} pres_t;

static int dial(const hb_target_t *t)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)t->port);
    if (inet_pton(AF_INET, t->host, &a.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* HELLO, then SUB `pattern` with member info `info` (NULL: a watcher). */
static int open_conn(const hb_target_t *t, const char *pattern, const char *info)
{
    hr_buf_t b;
    hr_buf_init(&b);
    size_t mark = hr_lp_begin(&b);
    hr_enc_hello(&b, "herald-bench", NULL, 1);
    hr_lp_end(&b, mark);
    hr_sub_fields_t o;
    memset(&o, 0, sizeof o);
    if (info)
        o.presence = (hr_slice_t){info, strlen(info)};
    mark = hr_lp_begin(&b);
    hr_enc_sub_ex(&b, 1, (hr_slice_t){pattern, strlen(pattern)}, &o);
    hr_lp_end(&b, mark);
    int fd = b.oom ? -1 : dial(t);
    if (fd >= 0 && send_all(fd, b.base, b.len) != 0) {
        close(fd);
        fd = -1;
    }
    hr_buf_destroy(&b);
    return fd;
}

/* The `count` of a presence body: the broker writes it first. */
static uint64_t body_count(hr_slice_t p)
{
    const uint8_t *s = (const uint8_t *)p.p;
    if (p.n < 8 || (s[0] & 0xf0) != 0x80 || s[1] != 0xa5 || memcmp(s + 2, "count", 5) != 0)
        return UINT64_MAX;
    s += 7;
    size_t left = p.n - 7, n = s[0] == 0xcc ? 1 : s[0] == 0xcd ? 2 : s[0] == 0xce ? 4 : 8;
    if (s[0] < 0x80)
        return s[0];
    if (left < 1 + n)
        return UINT64_MAX;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | s[1 + i];
    return v;
}

static void on_frames(watcher_t *w)
{
    hb_buf_t *in = &w->in;
    for (;;) {
        size_t have = hb_buf_pending(in);
        const uint8_t *p = in->p + in->off;
        if (have < 4)
            return;
        size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (have < 4 + n)
            return;
        hr_frame_t f;
        const char *why;
        if (hr_frame_decode(p + 4, n, (size_t)1 << 30, &f, &why) == HR_OK && f.op == HR_OP_MSG) {
            uint64_t now = hb_now_ns();
            if (!(f.flags & HR_F_REPLAY)) { /* the snapshot is not a change */
                if (w->frames && (!w->min_gap_ns || now - w->last_ns < w->min_gap_ns))
                    w->min_gap_ns = now - w->last_ns;
                w->last_ns = now;
                w->frames++;
                w->bytes += 4 + n;
                if (f.payload.n > w->max_body)
                    w->max_body = f.payload.n;
            }
            w->count = body_count(f.payload);
        }
        in->off += 4 + n;
    }
}

static void *reader(void *arg)
{
    pres_t *ps = arg;
    struct pollfd *pf = calloc((size_t)ps->nw, sizeof(*pf));
    if (!pf)
        return NULL;
    for (int i = 0; i < ps->nw; i++)
        pf[i] = (struct pollfd){ps->w[i].fd, POLLIN, 0};
    while (!ps->stop) {
        if (poll(pf, (nfds_t)ps->nw, 50) <= 0)
            continue;
        for (int i = 0; i < ps->nw; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            watcher_t *w = &ps->w[i];
            uint8_t *sp = hb_buf_space(&w->in, 65536);
            ssize_t k = read(w->fd, sp, 65536);
            if (k <= 0) {
                pf[i].fd = -1;
                continue;
            }
            w->in.len += (size_t)k;
            on_frames(w);
            if (w->in.off == w->in.len)
                w->in.off = w->in.len = 0;
        }
    }
    free(pf);
    return NULL;
}

/* Waits until every watcher has seen `count` (or `secs` pass); 0 or -1. */
static int wait_count(pres_t *ps, uint64_t count, double secs)
{
    uint64_t end = hb_now_ns() + (uint64_t)(secs * 1e9);
    while (hb_now_ns() < end) {
        int all = 1;
        for (int i = 0; i < ps->nw; i++)
            all &= ps->w[i].count == count;
        if (all)
            return 0;
        usleep(5000);
    }
    return -1;
}

static void report_phase(const char *phase, pres_t *ps, double secs, int64_t cpu_ns,
                         uint64_t members, uint64_t interval_ms)
{
    uint64_t frames = 0, bytes = 0, max_body = 0, min_gap = 0;
    for (int i = 0; i < ps->nw; i++) {
        watcher_t *w = &ps->w[i];
        frames += w->frames;
        bytes += w->bytes;
        if (w->max_body > max_body)
            max_body = w->max_body;
        if (w->min_gap_ns && (!min_gap || w->min_gap_ns < min_gap))
            min_gap = w->min_gap_ns;
        w->frames = w->bytes = w->max_body = w->min_gap_ns = 0;
    }
    double intervals = secs * 1000.0 / (double)interval_ms;
    double fw = (double)frames / ps->nw, bw = (double)bytes / ps->nw;
    printf("| %s | %llu | %.2f | %.1f | %.0f | %.2f | %.0f | %llu | %.0f | %.3f |\n", phase,
           (unsigned long long)members, secs, fw, bw, fw / (intervals > 1 ? intervals : 1),
           bw / (intervals > 1 ? intervals : 1), (unsigned long long)max_body,
           (double)min_gap / 1e6, cpu_ns >= 0 ? (double)cpu_ns / 1e9 : -1.0);
}

int hb_presence_run(const hb_target_t *t, int members, int watchers, int interval_ms, int smoke)
{
    if (strcmp(t->ad->name, "herald") != 0) {
        fprintf(stderr, "  %-7s presence   skipped: Herald only\n", t->ad->name);
        return 0;
    }
    members = members > 0 ? members : smoke ? 300 : 10000;
    watchers = watchers > 0 ? watchers : 3;
    interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pres_t ps = {calloc((size_t)watchers, sizeof(watcher_t)), watchers, 0};
    int *fds = calloc((size_t)members, sizeof(int));
    pthread_t th;
    int rc = -1;
    if (!ps.w || !fds)
        goto out;
    for (int i = 0; i < watchers; i++) {
        ps.w[i].count = UINT64_MAX;
        if ((ps.w[i].fd = open_conn(t, "$PRES." ROOM, NULL)) < 0) {
            fprintf(stderr, "herald-bench presence: cannot connect a watcher\n");
            goto out;
        }
    }
    if (pthread_create(&th, NULL, reader, &ps) != 0)
        goto out;
    if (wait_count(&ps, 0, 10) != 0)
        fprintf(stderr, "herald-bench presence: no snapshot (is the room busy already?)\n");
    for (int i = 0; i < watchers; i++)
        ps.w[i].frames = ps.w[i].bytes = 0;
    printf("\n### presence: %d members join, then leave, one room; %d watchers\n\n", members,
           watchers);
    printf("Per watcher; intervals of %d ms (the broker's presence-interval must match).\n\n",
           interval_ms);
    printf("| phase | members | secs | frames | bytes | frames/interval | bytes/interval | "
           "largest body | min gap ms | broker CPU s |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    int64_t cpu0 = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
    uint64_t t0 = hb_now_ns();
    char info[32];
    for (int i = 0; i < members; i++) {
        snprintf(info, sizeof info, "member-%d", i);
        if ((fds[i] = open_conn(t, ROOM, info)) < 0) {
            fprintf(stderr, "herald-bench presence: connect %d failed: %s\n", i, strerror(errno));
            for (int j = 0; j < i; j++)
                close(fds[j]);
            goto stop;
        }
    }
    int ok = wait_count(&ps, (uint64_t)members, 60) == 0;
    int64_t cpu1 = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
    uint64_t t1 = hb_now_ns();
    report_phase("join", &ps, (double)(t1 - t0) / 1e9, cpu0 >= 0 ? cpu1 - cpu0 : -1,
                 (uint64_t)members, (uint64_t)interval_ms);
    /* Churn: members leave and others join in their place, as fast as we can, for a few
     * intervals; the count hardly moves, so the watchers should hear next to nothing. */
    uint64_t churn_end = t1 + (uint64_t)(smoke ? 1e9 : 3e9), churned = 0;
    for (int i = 0; hb_now_ns() < churn_end && ok; i = (i + 1) % members, churned++) {
        close(fds[i]);
        snprintf(info, sizeof info, "member-%d-%llu", i, (unsigned long long)churned);
        if ((fds[i] = open_conn(t, ROOM, info)) < 0)
            ok = 0;
    }
    ok &= wait_count(&ps, (uint64_t)members, 60) == 0;
    int64_t cpu2 = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
    uint64_t t2 = hb_now_ns();
    char phase[64];
    snprintf(phase, sizeof phase, "churn (%llu leave+join)", (unsigned long long)churned);
    report_phase(phase, &ps, (double)(t2 - t1) / 1e9, cpu0 >= 0 ? cpu2 - cpu1 : -1,
                 (uint64_t)members, (uint64_t)interval_ms);
    for (int i = 0; i < members; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    ok &= wait_count(&ps, 0, 60) == 0;
    int64_t cpu3 = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
    report_phase("leave", &ps, (double)(hb_now_ns() - t2) / 1e9, cpu0 >= 0 ? cpu3 - cpu2 : -1,
                 (uint64_t)members, (uint64_t)interval_ms);
    if (!ok)
        fprintf(stderr, "herald-bench presence: the watchers never saw the final count\n");
    rc = ok ? 0 : -1;
stop:
    ps.stop = 1;
    pthread_join(th, NULL);
out:
    for (int i = 0; ps.w && i < watchers; i++) {
        if (ps.w[i].fd > 0)
            close(ps.w[i].fd);
        hb_buf_free(&ps.w[i].in);
    }
    free(ps.w);
    free(fds);
    return rc;
}
