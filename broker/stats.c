/* SPDX-License-Identifier: MIT */
/* A worker's numbers for /metrics and /healthz, and the shared area a cluster publishes them in. */
#define _GNU_SOURCE /* memfd_create, F_ADD_SEALS */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline.h"
#include "stats.h"

/* "HRLDSTA1": the first word of an area. */
#define AREA_MAGIC UINT64_C(0x31415453444c5248)
#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define FDS_PERIOD_MS 5000 /* the sweep lists /proc/self/fd at most this often */

_Static_assert(sizeof(hr_stats_t) % sizeof(uint64_t) == 0, "hr_stats_t holds uint64_t only");
_Static_assert(sizeof(hr_wstats_t) % sizeof(uint64_t) == 0, "hr_wstats_t holds uint64_t only");

/*
 * The area: a header, then one slot per worker, each on its own cache lines. Its size and
 * geometry depend on the build (sizeof hr_wstats_t), so a worker checks them before it
 * trusts the area: a respawned worker of another version publishes nothing rather than
 * garbage.
 */
struct hr_stats_area_s {
    uint64_t magic;
    uint32_t nworkers;
    uint32_t slot_size;
    uint64_t bytes;
    _Alignas(64) hr_stats_slot_t slot[];
};

/* What a worker in a cluster keeps about the area. */
struct hr_cstats_s {
    hr_stats_area_t *area;
    size_t bytes;
    hr_link_counters_cb lc;
    hr_wstats_t base; /* counters the previous incarnations of this worker reached */
    uint64_t last_ms; /* loop time of the last publish */
    uint64_t fds_ms;  /* loop time of the last descriptor count */
    uint64_t fds;     /* that count, HR_WS_HAVE_FDS in fds_have */
    uint64_t fds_have;
};

static size_t area_bytes(unsigned n)
{
    return sizeof(hr_stats_area_t) + (size_t)n * sizeof(hr_stats_slot_t);
}

/* ---- primary ------------------------------------------------------------------------------ */

int hr__stats_area_create(unsigned n, hr_stats_area_t **area)
{
    size_t bytes = area_bytes(n);
    *area = NULL;
    /* No MFD_CLOEXEC: workers are exec'd with this fd number. */
    int fd = memfd_create("herald-stats", MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)bytes) != 0 || fcntl(fd, F_ADD_SEALS, SEALS) != 0)
        goto fail;
    hr_stats_area_t *a = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED)
        goto fail;
    a->magic = AREA_MAGIC;
    a->nworkers = n;
    a->slot_size = (uint32_t)sizeof(hr_stats_slot_t);
    a->bytes = bytes;
    *area = a;
    return fd;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

void hr__stats_area_free(hr_stats_area_t *area, int fd)
{
    if (area)
        munmap(area, (size_t)area->bytes);
    if (fd >= 0)
        close(fd);
}

void hr__stats_area_spawned(hr_stats_area_t *area, unsigned id, int pid)
{
    if (!area || id >= area->nworkers)
        return;
    hr_stats_slot_t *sl = &area->slot[id];
    if (atomic_fetch_add(&sl->gen, 1) > 0)
        atomic_fetch_add(&sl->restarts, 1);
    atomic_store(&sl->pid, (uint32_t)pid);
    atomic_store(&sl->up, 0);
}

void hr__stats_area_set_up(hr_stats_area_t *area, unsigned id, int up)
{
    if (area && id < area->nworkers)
        atomic_store(&area->slot[id].up, up ? 1u : 0u);
}

hr_stats_slot_t *hr__stats_area_slot(hr_stats_area_t *area, unsigned id)
{
    return area && id < area->nworkers ? &area->slot[id] : NULL;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

static void add_range(hr_wstats_t *to, const hr_wstats_t *from, size_t begin, size_t end)
{
    uint64_t *d = (uint64_t *)((char *)to + begin);
    const uint64_t *s = (const uint64_t *)((const char *)from + begin);
    for (size_t i = 0; i < (end - begin) / sizeof(uint64_t); i++)
        d[i] += s[i];
}

static uint64_t count_fds(uint64_t *have)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    uint64_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    *have |= HR_WS_HAVE_FDS;
    return n ? n - 1 : 0; /* less the descriptor of the listing itself */
}

/*
 * Everything comes from counters the hot path already keeps, except the output queue bytes,
 * which are summed over the connections here (a snapshot costs O(connections), the hot path
 * nothing), and the process numbers from /proc/self (Linux): resident and virtual memory from
 * statm (one short read) and, when `fds`, the open descriptors by listing fd/.
 */
void hr__stats_collect(const hr_server_t *s, hr_wstats_t *w, int fds)
{
    memset(w, 0, sizeof(*w));
    w->st = s->stats;
    for (const hr_conn_t *c = s->conns; c; c = c->next) {
        w->outq += hr__oq_charge(&c->out);
        w->inflight += c->out.inflight;
    }
    w->subs = s->index.nsubs;
    w->patterns = s->index.npatterns;
    hr_engine_stats_t es = {0};
    s->engine->ops->stats(s->engine, &es);
    w->topics = es.topics;
    w->reclaimed = es.reclaimed;
    w->tombstones = es.tombstones;
    w->hist_bytes = es.hist_bytes;
    w->hist_msgs = es.hist_msgs;
    hr_pipe_stats_t ps;
    hr__pipeline_stats((hr_server_t *)s, &ps);
    w->pipe_passed = ps.passed;
    w->pipe_rewritten = ps.rewritten;
    w->pipe_rejected = ps.rejected;
    w->pipe_failed = ps.failed;
    w->pipe_timeouts = ps.timeouts;
    w->pipe_restarts = ps.restarts;
    w->pipe_late = ps.late;
    w->pipe_inflight = ps.inflight;
    w->engine_up = es.remote ? es.remote_up : 1;
    w->engine_queued = es.queued_bytes;
    w->engine_lag_ms = es.lag_ms;
    w->engine_reconnects = es.reconnects;
    w->engine_gaps = es.gaps;
    w->engine_resets = es.resets;
    if (s->cstats && s->cstats->lc) {
        hr_link_counters_t lc = {0};
        s->cstats->lc(s, &lc);
        w->ring_out = lc.ring_out;
        w->ring_in = lc.ring_in;
        w->ring_full = lc.ring_full;
        w->ring_backlog = lc.ring_backlog;
        /* The index also holds the interest other workers registered: not clients'. */
        w->subs = w->subs > lc.remote_subs ? w->subs - lc.remote_subs : 0;
    }
    w->start_unix_ms = (uint64_t)(s->started_unix * 1000 + 0.5);
    w->start_mono_ms = s->started_ms;
    w->uptime_ms = hr__now_ms(s) - s->started_ms;
    unsigned long long vm, rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%llu %llu", &vm, &rss) == 2) {
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        w->rss = rss * page;
        w->vm = vm * page;
        w->have |= HR_WS_HAVE_STATM;
    }
    if (f)
        fclose(f);
    if (fds)
        w->open_fds = count_fds(&w->have);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        w->max_fds = (uint64_t)rl.rlim_cur;
        w->have |= HR_WS_HAVE_MAXFDS;
    }
    w->up = 1;
}

/*
 * A slot is a latch (the Linux kernel's seqcount latch): two copies of the snapshot and a
 * count whose low bit says which copy readers take. The writer moves readers to w[1] (odd),
 * rewrites w[0], moves them back to w[0] (even) and rewrites w[1]; so readers always have a
 * complete copy, even when the writer stalls or dies in the middle of a write. The release
 * fences keep each copy's stores on their side of the count's change.
 */
static void latch_bump(hr_stats_slot_t *sl)
{
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&sl->seq, atomic_load_explicit(&sl->seq, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

void hr__stats_slot_write(hr_stats_slot_t *sl, const hr_wstats_t *w)
{
    latch_bump(sl);
    memcpy(&sl->w[0], w, sizeof(*w));
    latch_bump(sl);
    memcpy(&sl->w[1], w, sizeof(*w));
}

/*
 * A copy that the count did not change across was not written meanwhile. A retry needs a
 * write during the copy, and a worker writes a few times a second: the loop ends.
 */
int hr__stats_slot_read(const hr_stats_slot_t *sl, hr_wstats_t *w)
{
    for (;;) {
        uint32_t a = atomic_load_explicit(&sl->seq, memory_order_acquire);
        if (a < 2)
            return -1; /* the first write has not finished */
        memcpy(w, (const void *)&sl->w[a & 1], sizeof(*w));
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sl->seq, memory_order_relaxed) == a)
            return 0;
    }
}

/*
 * A new incarnation takes over its slot: a predecessor that died between the two halves of
 * a write (count odd) left w[0] possibly torn and w[1] whole, so w[1] is copied back and the
 * count made even. Afterwards w[0] is the slot's last complete snapshot (or the count is 0).
 */
void hr__stats_slot_adopt(hr_stats_slot_t *sl)
{
    uint32_t q = atomic_load(&sl->seq);
    if (q == 1) {
        atomic_store(&sl->seq, 0);
    } else if (q & 1) {
        memcpy(&sl->w[0], &sl->w[1], sizeof(sl->w[0]));
        latch_bump(sl);
    }
}

/* Publishes this worker's numbers (with the carried counters) and returns them in `w`. */
static void publish(const hr_server_t *s, hr_wstats_t *w, int fresh_fds)
{
    struct hr_cstats_s *cs = s->cstats;
    uint64_t now = hr__now_ms(s);
    int fds = fresh_fds || now - cs->fds_ms >= FDS_PERIOD_MS || !cs->fds_ms;
    hr__stats_collect(s, w, fds);
    if (fds) {
        cs->fds = w->open_fds;
        cs->fds_have = w->have & HR_WS_HAVE_FDS;
        cs->fds_ms = now ? now : 1;
    } else {
        w->open_fds = cs->fds;
        w->have |= cs->fds_have;
    }
    add_range(w, &cs->base, 0, HR_WS_COUNTERS_END);
    cs->last_ms = now;
    hr__stats_slot_write(&cs->area->slot[s->worker], w);
}

/* ---- a worker ------------------------------------------------------------------------------ */

int hr__stats_attach(hr_server_t *s, int fd, hr_link_counters_cb lc)
{
    size_t bytes = area_bytes(s->nworkers);
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size != bytes)
        return HR_EPROTO;
    hr_stats_area_t *a = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED)
        return -errno;
    if (a->magic != AREA_MAGIC || a->nworkers != s->nworkers ||
        a->slot_size != sizeof(hr_stats_slot_t) || a->bytes != bytes || s->worker >= s->nworkers) {
        munmap(a, bytes);
        return HR_EPROTO;
    }
    struct hr_cstats_s *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        munmap(a, bytes);
        return HR_ENOMEM;
    }
    cs->area = a;
    cs->bytes = bytes;
    cs->lc = lc;
    /*
     * A respawned worker goes on from the counters its predecessor published, so the
     * broker's totals never go backwards when a worker dies (what the predecessor counted
     * after its last snapshot, at most HR_STATS_PERIOD_MS of it, is lost). Its gauges die
     * with it. The predecessor is gone: this process is now the slot's only writer.
     */
    hr_stats_slot_t *sl = &a->slot[s->worker];
    hr__stats_slot_adopt(sl);
    if (atomic_load(&sl->seq)) {
        memcpy(&cs->base, &sl->w[0], HR_WS_COUNTERS_END);
        memset(cs->base.st.conns, 0, sizeof(cs->base.st.conns));
    }
    s->cstats = cs;
    hr_wstats_t w;
    publish(s, &w, 1);
    return HR_OK;
}

void hr__stats_detach(hr_server_t *s)
{
    struct hr_cstats_s *cs = s->cstats;
    if (!cs)
        return;
    munmap(cs->area, cs->bytes);
    free(cs);
    s->cstats = NULL;
}

void hr__stats_tick(hr_server_t *s, uint64_t now_ms)
{
    struct hr_cstats_s *cs = s->cstats;
    /* The sweep runs every 250 ms at most, often more often: publish about every period. */
    if (!cs || now_ms - cs->last_ms < HR_STATS_PERIOD_MS * 3 / 4)
        return;
    hr_wstats_t w;
    publish(s, &w, 0);
}

/* ---- a scrape ------------------------------------------------------------------------------ */

#define GAUGES_BEGIN offsetof(hr_wstats_t, subs)
#define GAUGES_END offsetof(hr_wstats_t, start_unix_ms)

int hr__stats_view(const hr_server_t *s, hr_stats_view_t *v)
{
    struct hr_cstats_s *cs = s->cstats;
    memset(v, 0, sizeof(*v));
    if (!cs) {
        hr__stats_collect(s, &v->total, 1);
        v->up = 1;
        return HR_OK;
    }
    unsigned n = s->nworkers;
    v->w = calloc(n, sizeof(*v->w));
    v->state = calloc(n, 1);
    if (!v->w || !v->state) {
        hr__stats_view_free(v);
        return HR_ENOMEM;
    }
    v->n = n;
    uint64_t now = hr__now_ms(s);
    hr_wstats_t *t = &v->total;
    for (unsigned k = 0; k < n; k++) {
        hr_stats_slot_t *sl = &cs->area->slot[k];
        hr_wstats_t *w = &v->w[k];
        int up;
        if (k == s->worker) {
            publish(s, w, 1); /* this worker's own numbers are exact */
            up = 1;
        } else {
            up = atomic_load(&sl->up) != 0;
            if (hr__stats_slot_read(sl, w) != 0) {
                memset(w, 0, sizeof(*w));
                up = 0;
                v->state[k] = HR_WS_NONE;
            } else {
                v->state[k] = up ? HR_WS_UP : HR_WS_DOWN;
            }
        }
        if (k == s->worker)
            v->state[k] = HR_WS_UP;
        w->up = (uint64_t)up;
        w->restarts = atomic_load(&sl->restarts);
        t->up += w->up;
        t->restarts += w->restarts;
        if (v->state[k] == HR_WS_NONE)
            continue;
        if (v->state[k] == HR_WS_DOWN) { /* its connections closed with it */
            memset(w->st.conns, 0, sizeof(w->st.conns));
            add_range(t, w, 0, HR_WS_COUNTERS_END);
            continue;
        }
        w->uptime_ms = now > w->start_mono_ms ? now - w->start_mono_ms : 0;
        add_range(t, w, 0, HR_WS_COUNTERS_END);
        add_range(t, w, GAUGES_BEGIN, GAUGES_END);
        if (!t->start_unix_ms || w->start_unix_ms < t->start_unix_ms)
            t->start_unix_ms = w->start_unix_ms;
        if (w->uptime_ms > t->uptime_ms)
            t->uptime_ms = w->uptime_ms;
        t->have |= w->have;
    }
    v->up = (unsigned)t->up;
    return HR_OK;
}

void hr__stats_view_free(hr_stats_view_t *v)
{
    free(v->w);
    free(v->state);
    v->w = NULL;
    v->state = NULL;
}

unsigned hr__stats_workers_up(const hr_server_t *s)
{
    struct hr_cstats_s *cs = s->cstats;
    unsigned up = 0;
    if (!cs)
        return 1;
    for (unsigned k = 0; k < s->nworkers; k++)
        up += k == s->worker || atomic_load(&cs->area->slot[k].up) != 0;
    return up;
}
