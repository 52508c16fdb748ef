/* SPDX-License-Identifier: MIT */
/* herald-bench engine: epoll threads driving publishers and subscribers, sampling, results. */
#include "hb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifdef HB_HAVE_HERALD
#include "tlsio.h"
#endif

/*
 * Phases: set-up, an optional warm-up (published and delivered like the run,
 * then thrown away), a quiet pause in which the warm-up drains and the
 * threads clear their histograms, the measured run, the drain, the stop.
 */
enum { PH_SETUP, PH_WARM, PH_QUIET, PH_RUN, PH_DRAIN, PH_STOP };

/*
 * Counters are written by one thread only and read by the sampler, so a
 * relaxed load + store is enough (no locked instruction on the hot path).
 */
typedef _Atomic uint64_t ctr_t;
static inline void cadd(ctr_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}
static inline uint64_t cget(ctr_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

typedef struct ctrs_s {
    ctr_t sent, sent_bytes, expected, delivered, del_bytes, ready, errors, disc;
    ctr_t dups, reord, gaps, last_del_ns, pubs_done, pubs_pending, pub_end_ns;
} ctrs_t;

struct hb_thread_s {
    hb_run_t *run;
    int id;
    pthread_t tid;
    int ep, tfd, wfd;
    hb_conn_t **conns;
    int nconns;
    hb_conn_t **pubs;
    int npubs;
    hb_conn_t **dirty;
    int ndirty;
    uint8_t *rbuf;
    size_t rcap;
    uint8_t *payload;
    uint64_t now;
    uint64_t timer_at;
    int started;       /* the phase the publishers were initialised for (0: none) */
    _Atomic int reset; /* histogram cleared for the measured run (acknowledges run->reset) */
    hb_hist_t hist;
    ctrs_t c;
};

struct hb_run_s {
    const hb_plan_t *plan;
    const hb_target_t *t;
    const hb_adapter_t *ad;
    struct sockaddr_in addr, ws_addr;
    struct sockaddr_in sub_addr, sub_ws_addr; /* where subscribers connect (another node) */
    int nthreads;
    hb_thread_t *th;
    hb_conn_t *conns;
    int nconns, npubs, ntopics;
    uint32_t *fan;     /* expected deliveries per message, per topic */
    char (*topic)[24]; /* topic names */
    uint8_t *tlen;
    _Atomic int phase;
    uint64_t window;
    uint64_t t0;
    _Atomic int reset; /* set in PH_QUIET: threads clear their histograms */
    struct {
        uint64_t sent, sent_bytes, expected, delivered, del_bytes, dups, reord, gaps;
    } base; /* counters when the measured run started (after any warm-up) */
    pthread_mutex_t lock;
    void *tls_ctx; /* SSL_CTX for every connection of a TLS target, else NULL */
    char error[256];
};

static char dummy_timer; /* epoll tag of a thread's timerfd */
static char dummy_wake;  /* epoll tag of a thread's wake-up eventfd */

uint64_t hb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Reads an eventfd or timerfd that polled readable. Failure (EAGAIN) only
 * means another wake-up consumed it first: nothing to do.
 */
static void consume_fd(int fd)
{
    uint64_t x;
    ssize_t n = read(fd, &x, sizeof x);
    (void)n;
}

/* Changes the phase and wakes every thread so none sleeps through it. */
static void set_phase(hb_run_t *run, int phase)
{
    atomic_store(&run->phase, phase);
    for (int i = 0; i < run->nthreads; i++) {
        /* EAGAIN would mean the counter is full: a wake-up is pending anyway. */
        uint64_t one = 1;
        ssize_t n = write(run->th[i].wfd, &one, sizeof one);
        (void)n;
    }
}

static void set_error(hb_run_t *run, const char *msg)
{
    pthread_mutex_lock(&run->lock);
    if (!run->error[0])
        snprintf(run->error, sizeof run->error, "%s", msg);
    pthread_mutex_unlock(&run->lock);
}

/* ---- buffers ----------------------------------------------------------- */

uint8_t *hb_buf_space(hb_buf_t *b, size_t n)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->cap) {
        if (b->off > b->cap / 2) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 256;
            while (cap < b->len + n)
                cap *= 2;
            uint8_t *p = realloc(b->p, cap);
            if (!p) {
                fprintf(stderr, "herald-bench: out of memory\n");
                exit(3);
            }
            b->p = p;
            b->cap = cap;
        }
    }
    return b->p + b->len;
}

void hb_buf_add(hb_buf_t *b, const void *p, size_t n)
{
    memcpy(hb_buf_space(b, n), p, n);
    b->len += n;
}

void hb_buf_str(hb_buf_t *b, const char *s)
{
    hb_buf_add(b, s, strlen(s));
}

void hb_buf_u64(hb_buf_t *b, uint64_t v)
{
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    hb_buf_add(b, tmp + i, sizeof tmp - (size_t)i);
}

void hb_buf_free(hb_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- connection I/O ---------------------------------------------------- */

hb_buf_t *hb_out(hb_conn_t *c)
{
    return c->state == HB_C_UPGRADING ? &c->held : &c->out;
}

/*
 * TLS (targets with ?tls=CA; Herald's protocol library has the pump): what
 * the adapter queued in `out` is plaintext, encrypted into `tout` once the
 * handshake is over, and `tout` is what goes to the socket.
 */
static hb_buf_t *wire(hb_conn_t *c)
{
    return c->tls ? &c->tout : &c->out;
}

/* Bytes waiting to be written, plaintext not yet encrypted included. */
static size_t out_pending(const hb_conn_t *c)
{
    size_t n = hb_buf_pending(&c->out);
#ifdef HB_HAVE_HERALD
    if (c->tls)
        n += hb_buf_pending(&c->tout) + hr_tlsio_pending(c->tls);
#endif
    return n;
}

static void mark_dirty(hb_conn_t *c);

/* TLS: plaintext the session can still give without the socket saying so. */
static size_t tls_unread(const hb_conn_t *c)
{
#ifdef HB_HAVE_HERALD
    return c->tls ? hr_tlsio_unread(c->tls) : 0;
#else
    (void)c;
    return 0;
#endif
}

#ifdef HB_HAVE_HERALD
/* Encrypts what can be and moves the session's ciphertext to `tout`. 0, or -1 on failure. */
static int tls_out(hb_conn_t *c)
{
    if (hb_buf_pending(&c->out) && hr_tlsio_established(c->tls)) {
        uv_buf_t b = uv_buf_init((char *)c->out.p + c->out.off, (unsigned)hb_buf_pending(&c->out));
        if (hr_tlsio_write(c->tls, &b, 1) != HR_OK)
            return -1;
        c->out.off = c->out.len = 0;
    }
    size_t n;
    uint8_t *p = hr_tlsio_take(c->tls, &n);
    if (p && !hb_buf_pending(&c->tout)) { /* adopt the buffer rather than copy it */
        free(c->tout.p);
        c->tout = (hb_buf_t){.p = p, .len = n, .cap = n};
    } else if (p) {
        hb_buf_add(&c->tout, p, n);
        free(p);
    }
    return 0;
}

/*
 * Reads plaintext into buf: first what the session still holds, then what
 * the socket has. Returns bytes like read(2): > 0, 0 at the end (EOF or
 * close_notify), -1 with errno (EAGAIN: nothing now; EPROTO: TLS failed).
 */
static ssize_t tls_read(hb_conn_t *c, uint8_t *buf, size_t cap)
{
    uint8_t ct[16384];
    for (;;) {
        size_t got;
        int r = hr_tlsio_read(c->tls, buf, cap, &got);
        if (r == HR_OK)
            return (ssize_t)got;
        if (r == HR_ECLOSED)
            return 0;
        if (r != HR_EAGAIN) {
            fprintf(stderr, "herald-bench: connection %d: TLS: %s\n", c->idx,
                    hr_tlsio_error(c->tls));
            errno = EPROTO;
            return -1;
        }
        mark_dirty(c); /* handshake flights, answers the session owes */
        ssize_t n = read(c->fd, ct, sizeof ct);
        if (n <= 0)
            return n;
        if (hr_tlsio_feed(c->tls, ct, (size_t)n) != HR_OK) {
            errno = ENOMEM;
            return -1;
        }
    }
}
#endif

static void mark_dirty(hb_conn_t *c)
{
    if (!c->dirty && out_pending(c)) {
        c->dirty = 1;
        c->th->dirty[c->th->ndirty++] = c;
    }
}

static void set_events(hb_conn_t *c, uint32_t ev)
{
    if (c->events == ev || c->state == HB_C_CLOSED || c->state == HB_C_PARKED)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->th->ep, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static uint32_t want_events(hb_conn_t *c)
{
    uint32_t ev = EPOLLIN;
    if (hb_buf_pending(wire(c)))
        ev |= EPOLLOUT;
    return ev;
}

static void conn_close(hb_conn_t *c, const char *why)
{
    if (c->state == HB_C_CLOSED)
        return;
    hb_thread_t *th = c->th;
    epoll_ctl(th->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = HB_C_CLOSED;
    if (c->role & HB_STALL)
        return;
    cadd(&th->c.disc, 1);
    if (c->pub && !c->pub->done) {
        c->pub->done = 1;
        cadd(&th->c.pubs_done, 1);
    }
    if (atomic_load(&th->run->phase) < PH_STOP) {
        char msg[160];
        snprintf(msg, sizeof msg, "connection %d (%s) closed: %s", c->idx,
                 c->role & (HB_PUB | HB_REQ) ? "publisher" : "subscriber", why);
        set_error(th->run, msg);
    }
}

/* Writes what is pending; returns 0, or -1 if the connection was closed. */
static int conn_flush(hb_conn_t *c)
{
    hb_buf_t *w = wire(c);
#ifdef HB_HAVE_HERALD
    if (c->tls && tls_out(c) != 0) {
        conn_close(c, "TLS failure");
        return -1;
    }
#endif
    while (hb_buf_pending(w)) {
        ssize_t n = write(c->fd, w->p + w->off, hb_buf_pending(w));
        if (n > 0) {
            w->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(c, n < 0 ? strerror(errno) : "write returned 0");
        return -1;
    }
    if (!hb_buf_pending(w))
        w->off = w->len = 0;
    set_events(c, want_events(c));
    return 0;
}

static void conn_read(hb_thread_t *th, hb_conn_t *c)
{
    for (int iter = 0; iter < 8 && c->state != HB_C_CLOSED; iter++) {
        size_t have = hb_buf_pending(&c->left);
        if (have + 65536 > th->rcap) {
            th->rcap = (have + 65536) * 2;
            th->rbuf = realloc(th->rbuf, th->rcap);
            if (!th->rbuf) {
                fprintf(stderr, "herald-bench: out of memory\n");
                exit(3);
            }
        }
        if (have)
            memcpy(th->rbuf, c->left.p + c->left.off, have);
        c->left.off = c->left.len = 0;
        ssize_t n;
#ifdef HB_HAVE_HERALD
        if (c->tls) {
            n = tls_read(c, th->rbuf + have, th->rcap - have);
            if (n > 0 && iter == 7 && tls_unread(c))
                iter--; /* the socket will not say there is more: read it out now */
        } else
#endif
            n = read(c->fd, th->rbuf + have, th->rcap - have);
        if (n <= 0) {
            if (have)
                hb_buf_add(&c->left, th->rbuf, have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            conn_close(c, n == 0 ? "closed by the broker" : strerror(errno));
            return;
        }
        th->now = hb_now_ns();
        size_t total = have + (size_t)n;
        long used = c->ad->parse(c, th->rbuf, total);
        if (used < 0) {
            conn_close(c, "protocol error");
            return;
        }
        if ((size_t)used < total)
            hb_buf_add(&c->left, th->rbuf + used, total - (size_t)used);
        if ((size_t)n < th->rcap - have && !tls_unread(c))
            break;
    }
    if (c->state == HB_C_READY && (c->role & HB_STALL)) {
        /* Stalled from now on: never read again; checked once the run ends. */
        epoll_ctl(th->ep, EPOLL_CTL_DEL, c->fd, NULL);
        c->state = HB_C_PARKED;
        return;
    }
    if (c->state != HB_C_CLOSED)
        mark_dirty(c);
}

/* ---- adapter callbacks --------------------------------------------------- */

void hb_on_error(hb_conn_t *c, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cadd(&c->th->c.errors, 1);
    char full[200];
    snprintf(full, sizeof full, "connection %d: %s", c->idx, msg);
    set_error(c->th->run, full);
}

void hb_on_pong(hb_conn_t *c)
{
    if (c->pings > 0 && --c->pings == 0 && c->state == HB_C_OPEN) {
        c->state = HB_C_READY;
        cadd(&c->th->c.ready, 1);
    }
}

void hb_on_upgraded(hb_conn_t *c)
{
    c->state = HB_C_OPEN;
    if (hb_buf_pending(&c->held))
        hb_buf_add(&c->out, c->held.p + c->held.off, hb_buf_pending(&c->held));
    hb_buf_free(&c->held);
}

/* Lays out the payload as the map hb.h describes, `size` bytes in all (>= HB_MAP_MIN). */
static void map_payload(uint8_t *p, size_t size)
{
    static const uint8_t head[] = {0x83, 0xa1, 'h', 0xc4, HB_HDR};
    static const uint8_t mid[] = {0xa1, 'k', 0x01, 0xa4, 't', 'e', 'x', 't'};
    memcpy(p, head, sizeof head);
    memcpy(p + HB_MAP_HDR_OFF + HB_HDR, mid, sizeof mid);
    size_t at = HB_MAP_HDR_OFF + HB_HDR + sizeof mid, left = size - at, n;
    uint8_t *s = p + at;
    if (left - 1 < 32) {
        n = left - 1;
        s[0] = (uint8_t)(0xa0 | n);
        s += 1;
    } else if (left - 2 < 256) {
        n = left - 2;
        s[0] = 0xd9;
        s[1] = (uint8_t)n;
        s += 2;
    } else {
        n = left - 3; /* payloads are far below 64 KiB */
        s[0] = 0xda;
        s[1] = (uint8_t)(n >> 8);
        s[2] = (uint8_t)n;
        s += 3;
    }
    memset(s, 'x', n);
}

/* Where the 16-byte header sits in a payload of this run. */
static size_t hdr_off(const hb_run_t *run)
{
    return run->plan->p.transform ? HB_MAP_HDR_OFF : 0;
}

const hb_params_t *hb_conn_params(const hb_conn_t *c)
{
    return &c->th->run->plan->p;
}

static void put_hdr(uint8_t *p, uint32_t id, uint32_t seq, uint64_t ts)
{
    memcpy(p, &id, 4);
    memcpy(p + 4, &seq, 4);
    memcpy(p + 8, &ts, 8);
}

/* Topic index from "hb.<n>"; -1 for anything else. */
static long topic_index(const char *t, size_t n)
{
    if (n < 4 || memcmp(t, "hb.", 3))
        return -1;
    long v = 0;
    for (size_t i = 3; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -1;
        v = v * 10 + (t[i] - '0');
    }
    return v;
}

static void req_send(hb_conn_t *c);

void hb_on_msg(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
               const char *reply, size_t rn)
{
    hb_thread_t *th = c->th;
    size_t off = hdr_off(th->run);
    if (n < off + HB_HDR) {
        hb_on_error(c, "payload of %zu bytes is shorter than the 16-byte header", n);
        return;
    }
    uint32_t id, seq;
    uint64_t ts;
    memcpy(&id, p + off, 4);
    memcpy(&seq, p + off + 4, 4);
    memcpy(&ts, p + off + 8, 8);

    if (c->role & HB_REP) {
        char inbox[32];
        if (!reply || !rn) {
            rn = (size_t)snprintf(inbox, sizeof inbox, "hb.inbox.%u", id);
            reply = inbox;
        }
        c->ad->pub(c, reply, rn, p, n, NULL, 0);
        return;
    }
    uint64_t now = th->now;
    hb_hist_record(&th->hist, now > ts ? now - ts : 0);
    cadd(&th->c.delivered, 1);
    cadd(&th->c.del_bytes, n);
    atomic_store_explicit(&th->c.last_del_ns, now, memory_order_relaxed);

    if (c->role & HB_REQ) {
        c->pub->waiting = 0;
        int phase = atomic_load_explicit(&th->run->phase, memory_order_relaxed);
        if (phase == PH_RUN || phase == PH_WARM)
            req_send(c);
        return;
    }
    long t = topic_index(topic, tn);
    int slot = -1;
    for (int i = 0; i < c->nsubs; i++)
        if ((long)c->sub_topic[i] == t) {
            slot = i;
            break;
        }
    if (slot < 0 || id >= (uint32_t)th->run->npubs) {
        hb_on_error(c, "message on unexpected topic %.*s from publisher %u", (int)tn, topic, id);
        return;
    }
    uint32_t *last = &c->last_seq[(size_t)slot * (size_t)th->run->npubs + id];
    if (seq == *last + 1) {
        *last = seq;
    } else if (seq > *last + 1) {
        cadd(&th->c.gaps, seq - *last - 1);
        *last = seq;
    } else if (seq == *last) {
        cadd(&th->c.dups, 1);
    } else {
        cadd(&th->c.reord, 1);
    }
}

/* ---- publishers ----------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void req_send(hb_conn_t *c)
{
    hb_thread_t *th = c->th;
    hb_run_t *run = th->run;
    hb_pub_t *pb = c->pub;
    if (pb->done || pb->waiting)
        return;
    if (pb->quota && pb->sent >= pb->quota) {
        pb->done = 1;
        cadd(&th->c.pubs_done, 1);
        atomic_store(&th->c.pub_end_ns, hb_now_ns());
        return;
    }
    size_t size = (size_t)run->plan->p.size;
    put_hdr(th->payload + hdr_off(run), pb->id, (uint32_t)pb->sent + 1, hb_now_ns());
    c->ad->pub(c, run->topic[0], run->tlen[0], th->payload, size,
               run->ad->native_reply ? pb->inbox : NULL, strlen(pb->inbox));
    pb->sent++;
    pb->waiting = 1;
    cadd(&th->c.sent, 1);
    cadd(&th->c.sent_bytes, size);
    cadd(&th->c.expected, 1);
    mark_dirty(c);
}

static uint64_t in_flight(hb_run_t *run)
{
    uint64_t e = 0, d = 0;
    for (int i = 0; i < run->nthreads; i++) {
        e += cget(&run->th[i].c.expected);
        d += cget(&run->th[i].c.delivered);
    }
    return e > d ? e - d : 0;
}

/*
 * Produces what publisher `c` may send now. Returns 1 if it could send more
 * right away, 2 if the in-flight window holds it back, 0 if it waits for a
 * deadline or for its socket.
 */
static int pub_run(hb_thread_t *th, hb_conn_t *c, int64_t *budget)
{
    hb_run_t *run = th->run;
    hb_pub_t *pb = c->pub;
    if (pb->done || c->state == HB_C_CLOSED)
        return 0;
    if (c->role & HB_REQ) {
        req_send(c);
        return 0;
    }
    size_t size = (size_t)run->plan->p.size;
    size_t hwm = pb->interval_ns ? (1u << 20) : (64u << 10);
    uint64_t now = th->now, sent = 0, expected = 0;
    int more = 0;
    while (hb_buf_pending(&c->out) < hwm) {
        if (pb->quota && pb->sent >= pb->quota) {
            pb->done = 1;
            cadd(&th->c.pubs_done, 1);
            atomic_store(&th->c.pub_end_ns, now);
            break;
        }
        uint64_t ts;
        uint32_t t = run->plan->pub_random ? (uint32_t)(xorshift(&pb->rng) % run->ntopics)
                                           : pb->id % (uint32_t)run->ntopics;
        if (pb->interval_ns) {
            if (pb->next_ns > now)
                break;
            ts = pb->next_ns;
            pb->next_ns += pb->interval_ns;
        } else {
            if (*budget <= 0)
                break;
            *budget -= run->fan[t];
            ts = now;
        }
        put_hdr(th->payload + hdr_off(run), pb->id, ++pb->seq[t], ts);
        c->ad->pub(c, run->topic[t], run->tlen[t], th->payload, size, NULL, 0);
        pb->sent++;
        sent++;
        expected += run->fan[t];
        if (sent >= 4096) {
            more = 1;
            break;
        }
    }
    if (!pb->interval_ns && !pb->done && hb_buf_pending(&c->out) < hwm)
        more = *budget > 0 ? 1 : 2;
    cadd(&th->c.sent, sent);
    cadd(&th->c.sent_bytes, sent * size);
    cadd(&th->c.expected, expected);
    mark_dirty(c);
    return more;
}

static void pubs_start(hb_thread_t *th, int phase)
{
    hb_run_t *run = th->run;
    double rate = run->plan->p.rate;
    for (int i = 0; i < th->npubs; i++) {
        hb_pub_t *pb = th->pubs[i]->pub;
        if (rate > 0) {
            pb->interval_ns = (uint64_t)(1e9 * run->npubs / rate);
            if (!pb->interval_ns)
                pb->interval_ns = 1;
            /* Stagger the publishers evenly over one interval. */
            pb->next_ns = run->t0 + pb->interval_ns * pb->id / (uint64_t)run->npubs;
        }
    }
    th->started = phase;
}

static void pubs_stop(hb_thread_t *th)
{
    for (int i = 0; i < th->npubs; i++) {
        hb_pub_t *pb = th->pubs[i]->pub;
        if (!pb->done) {
            pb->done = 1;
            cadd(&th->c.pubs_done, 1);
        }
    }
}

/* Arms the thread's timerfd for the earliest fixed-rate deadline; returns the epoll timeout. */
static int plan_wait(hb_thread_t *th, int phase, int busy)
{
    if (busy & 1)
        return 0;
    if (busy & 2)
        return 1;
    uint64_t next = UINT64_MAX;
    if (phase == PH_RUN || phase == PH_WARM)
        for (int i = 0; i < th->npubs; i++) {
            hb_pub_t *pb = th->pubs[i]->pub;
            if (!pb->done && pb->interval_ns && pb->next_ns < next &&
                hb_buf_pending(&th->pubs[i]->out) < (1u << 20))
                next = pb->next_ns;
        }
    if (next == UINT64_MAX)
        return 20;
    if (next <= hb_now_ns())
        return 0;
    if (next != th->timer_at) {
        struct itimerspec its = {0};
        its.it_value.tv_sec = (time_t)(next / 1000000000ull);
        its.it_value.tv_nsec = (long)(next % 1000000000ull);
        timerfd_settime(th->tfd, TFD_TIMER_ABSTIME, &its, NULL);
        th->timer_at = next;
    }
    return 20;
}

static void *thread_main(void *arg)
{
    hb_thread_t *th = arg;
    hb_run_t *run = th->run;
    struct epoll_event ev[256];
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    int busy = 0;
    for (;;) {
        int phase = atomic_load(&run->phase);
        if (phase == PH_STOP)
            break;
        int n = epoll_wait(th->ep, ev, 256, plan_wait(th, phase, busy));
        th->now = hb_now_ns();
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == &dummy_wake) {
                consume_fd(th->wfd);
                continue;
            }
            if (ev[i].data.ptr == &dummy_timer) {
                consume_fd(th->tfd);
                th->timer_at = 0;
                continue;
            }
            hb_conn_t *c = ev[i].data.ptr;
            if (c->state == HB_C_CLOSED || c->state == HB_C_PARKED)
                continue;
            if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_read(th, c);
            if ((ev[i].events & EPOLLOUT) && c->state != HB_C_CLOSED)
                conn_flush(c);
        }
        busy = 0;
        phase = atomic_load(&run->phase);
        int64_t budget = 0;
        int publishing = phase == PH_RUN || phase == PH_WARM;
        if (publishing) {
            if (th->started != phase)
                pubs_start(th, phase);
            th->now = hb_now_ns();
            budget = (int64_t)run->window - (int64_t)in_flight(run);
            for (int i = 0; i < th->npubs; i++)
                busy |= pub_run(th, th->pubs[i], &budget);
        } else if (phase == PH_QUIET) {
            th->started = 0;
            if (atomic_load(&run->reset) && !atomic_load(&th->reset)) {
                hb_hist_init(&th->hist);
                atomic_store(&th->reset, 1);
            }
        } else if (phase >= PH_DRAIN && th->started) {
            pubs_stop(th);
        }
        for (int i = 0; i < th->ndirty; i++) {
            hb_conn_t *c = th->dirty[i];
            c->dirty = 0;
            if (c->state != HB_C_CLOSED)
                conn_flush(c);
        }
        th->ndirty = 0;
        if (phase == PH_SETUP)
            continue;
        /* A max-rate publisher whose socket took everything can go on at once. */
        for (int i = 0; i < th->npubs && publishing; i++) {
            hb_conn_t *c = th->pubs[i];
            if (!c->pub->done && !c->pub->interval_ns && !(c->role & HB_REQ) &&
                c->state != HB_C_CLOSED && out_pending(c) < (64u << 10))
                busy |= budget > 0 ? 1 : 2;
        }
        uint64_t pending = 0;
        for (int i = 0; i < th->npubs; i++)
            if (th->pubs[i]->state != HB_C_CLOSED)
                pending += out_pending(th->pubs[i]);
        atomic_store_explicit(&th->c.pubs_pending, pending, memory_order_relaxed);
    }
    if (run->ad->thread_exit)
        run->ad->thread_exit();
    return NULL;
}

/* ---- set-up ------------------------------------------------------------------- */

static int resolve(const char *host, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) == 1)
        return 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    if (getaddrinfo(host, NULL, &hints, &res) || !res)
        return -1;
    sa->sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return 0;
}

/* `rcvbuf` > 0 shrinks the receive buffer (a stalled client then stalls the broker sooner). */
static int dial(const struct sockaddr_in *sa, int rcvbuf, char *err, size_t en)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(err, en, "socket: %s", strerror(errno));
            return -1;
        }
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (rcvbuf > 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            return fd;
        }
        int e = errno;
        close(fd);
        snprintf(err, en, "connect to port %d: %s", ntohs(sa->sin_port), strerror(e));
        if (e != EAGAIN && e != EINPROGRESS && e != ETIMEDOUT && e != EADDRNOTAVAIL)
            return -1;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

static uint64_t sum(hb_run_t *run, size_t off)
{
    uint64_t v = 0;
    for (int i = 0; i < run->nthreads; i++)
        v += cget((ctr_t *)((char *)&run->th[i].c + off));
    return v;
}
#define SUM(run, field) sum(run, offsetof(ctrs_t, field))

static uint64_t max_of(hb_run_t *run, size_t off)
{
    uint64_t v = 0;
    for (int i = 0; i < run->nthreads; i++) {
        uint64_t x = cget((ctr_t *)((char *)&run->th[i].c + off));
        if (x > v)
            v = x;
    }
    return v;
}

/* Builds the connections of the plan and assigns them round robin to threads. */
static void build_conns(hb_run_t *run)
{
    const hb_plan_t *pl = run->plan;
    int npubs = pl->idle ? 0 : pl->p.pubs;
    int nsubs = pl->idle ? pl->p.conns : pl->p.subs;
    int nrep = pl->reqrep ? 1 : 0;
    if (pl->reqrep)
        nsubs = 0;
    run->npubs = npubs;
    run->ntopics = pl->idle ? nsubs : pl->reqrep ? 1 : (pl->p.topics > 0 ? pl->p.topics : 1);
    run->nconns = npubs + nsubs + nrep;
    run->conns = calloc((size_t)run->nconns, sizeof(hb_conn_t));
    run->fan = calloc((size_t)run->ntopics, sizeof(uint32_t));
    run->topic = calloc((size_t)run->ntopics, sizeof(*run->topic));
    run->tlen = calloc((size_t)run->ntopics, 1);
    for (int t = 0; t < run->ntopics; t++) {
        if (pl->reqrep)
            snprintf(run->topic[t], sizeof run->topic[t], "hb.svc");
        else
            snprintf(run->topic[t], sizeof run->topic[t], "hb.%d", t);
        run->tlen[t] = (uint8_t)strlen(run->topic[t]);
    }
    for (int i = 0; i < run->nconns; i++) {
        hb_conn_t *c = &run->conns[i];
        c->idx = i;
        c->fd = -1;
        c->ad = run->ad;
        c->th = &run->th[i % run->nthreads];
        if (i < npubs) {
            c->role = pl->reqrep ? HB_REQ : HB_PUB;
            c->pub = calloc(1, sizeof(hb_pub_t));
            c->pub->id = (uint32_t)i;
            c->pub->seq = calloc((size_t)run->ntopics, sizeof(uint32_t));
            c->pub->quota = pl->p.count;
            c->pub->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
            snprintf(c->pub->inbox, sizeof c->pub->inbox, "hb.inbox.%d", i);
        } else if (i < npubs + nsubs) {
            int k = i - npubs;
            c->role = k >= nsubs - pl->p.stalled ? HB_STALL : HB_SUB;
            c->ws = pl->sub_ws;
            c->nsubs = 1;
            c->sub_topic = calloc(1, sizeof(uint32_t));
            c->sub_topic[0] = (uint32_t)(k % run->ntopics);
            c->last_seq = calloc((size_t)(npubs ? npubs : 1), sizeof(uint32_t));
            if (c->role == HB_SUB)
                run->fan[c->sub_topic[0]]++;
        } else {
            c->role = HB_REP;
        }
        hb_thread_t *th = c->th;
        th->conns[th->nconns++] = c;
        if (c->pub)
            th->pubs[th->npubs++] = c;
    }
}

/* Connects connection `c`, queues its opening, subscriptions and sync ping, and hands it over. */
static int conn_start(hb_run_t *run, hb_conn_t *c)
{
    char err[128];
    int sub_only = (c->role & (HB_SUB | HB_STALL)) && !(c->role & HB_PUB);
    const struct sockaddr_in *to = c->ws ? (sub_only ? &run->sub_ws_addr : &run->ws_addr)
                                         : (sub_only ? &run->sub_addr : &run->addr);
    c->fd = dial(to, (c->role & HB_STALL) ? 16384 : 0, err, sizeof err);
    if (c->fd < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "connection %d: %s", c->idx, err);
        set_error(run, msg);
        return -1;
    }
    c->state = HB_C_OPEN;
    c->mask = 0x2545F491u * (uint32_t)(c->idx + 1) | 1;
#ifdef HB_HAVE_HERALD
    if (run->tls_ctx && (hr_tlsio_new(run->tls_ctx, 0, run->t->host, &c->tls) != HR_OK ||
                         hr_tlsio_handshake(c->tls) == HR_ETLS || tls_out(c) != 0)) {
        set_error(run, "TLS: cannot start a session");
        return -1;
    }
#endif
    c->ad->open(c);
    if (c->role & (HB_SUB | HB_STALL))
        c->ad->sub(c, 1, run->topic[c->sub_topic[0]], run->tlen[c->sub_topic[0]]);
    if (c->role & HB_REQ)
        c->ad->sub(c, 1, c->pub->inbox, strlen(c->pub->inbox));
    if (c->role & HB_REP)
        c->ad->sub(c, 1, run->topic[0], run->tlen[0]);
    c->ad->ping(c);
    c->pings = 1;
    /* A fresh socket takes the few opening bytes at once (with TLS: the ClientHello); the
     * rest waits for EPOLLOUT. */
    hb_buf_t *w = wire(c);
    ssize_t n = write(c->fd, w->p + w->off, hb_buf_pending(w));
    if (n > 0)
        w->off += (size_t)n;
    c->events = EPOLLIN | (hb_buf_pending(w) ? EPOLLOUT : 0);
    struct epoll_event e = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(c->th->ep, EPOLL_CTL_ADD, c->fd, &e) < 0) {
        set_error(run, "epoll_ctl failed");
        return -1;
    }
    return 0;
}

/* ---- the run -------------------------------------------------------------- */

/*
 * Publishes for the warm-up time exactly as the run will, then pauses until
 * everything is delivered and every thread has cleared its histogram, so the
 * run starts with warm caches, connections and broker memory and nothing of
 * the warm-up in its figures (hb_run subtracts the counters afterwards).
 */
static void warm_up(hb_run_t *run, const hb_plan_t *pl)
{
    run->t0 = hb_now_ns();
    set_phase(run, PH_WARM);
    sleep_s(pl->warmup);
    set_phase(run, PH_QUIET);
    uint64_t until = hb_now_ns() + (uint64_t)(pl->drain * 1e9);
    while (hb_now_ns() < until) {
        uint64_t e = SUM(run, expected), d = SUM(run, delivered);
        if (SUM(run, pubs_pending) == 0 && d >= e)
            break;
        sleep_s(0.002);
    }
    atomic_store(&run->reset, 1);
    set_phase(run, PH_QUIET); /* wakes the threads */
    for (int i = 0; i < run->nthreads; i++)
        while (!atomic_load(&run->th[i].reset) && hb_now_ns() < until + 2000000000ull)
            sleep_s(0.001);
}

static void progress(const hb_plan_t *pl, const hb_target_t *t, double el, double pr, double dr,
                     uint64_t inflight, double bcpu, double kcpu, uint64_t rss, int final)
{
    if (pl->quiet || (!final && !isatty(2)))
        return;
    char a[16], b[16], c[16], d[24];
    fprintf(stderr, "\r  %-7s %-10s %5.1fs  pub %7s/s  del %7s/s  in flight %6s  cpu bench %3.0f%%",
            t->ad->name, pl->name, el, hb_fmt_si(a, sizeof a, pr), hb_fmt_si(b, sizeof b, dr),
            hb_fmt_si(c, sizeof c, (double)inflight), bcpu);
    if (kcpu >= 0)
        fprintf(stderr, " broker %3.0f%% rss %s", kcpu, hb_fmt_bytes(d, sizeof d, (double)rss));
    fputs(final ? "\n" : "   ", stderr);
    fflush(stderr);
}

/* Creates the threads' epoll sets, timers and buffers, and the plan's connections. */
static void run_open(hb_run_t *run)
{
    const hb_plan_t *pl = run->plan;
    run->nthreads = pl->p.threads > 0 ? pl->p.threads : 2;
    run->th = calloc((size_t)run->nthreads, sizeof(hb_thread_t));
    int maxconns = (pl->idle ? pl->p.conns : pl->p.pubs + pl->p.subs) + 2;
    for (int i = 0; i < run->nthreads; i++) {
        hb_thread_t *th = &run->th[i];
        th->run = run;
        th->id = i;
        th->ep = epoll_create1(EPOLL_CLOEXEC);
        th->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &dummy_timer};
        epoll_ctl(th->ep, EPOLL_CTL_ADD, th->tfd, &e);
        th->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        e.data.ptr = &dummy_wake;
        epoll_ctl(th->ep, EPOLL_CTL_ADD, th->wfd, &e);
        th->conns = calloc((size_t)maxconns, sizeof(hb_conn_t *));
        th->pubs = calloc((size_t)maxconns, sizeof(hb_conn_t *));
        th->dirty = calloc((size_t)maxconns, sizeof(hb_conn_t *));
        th->rcap = 256 << 10;
        th->rbuf = malloc(th->rcap);
        th->payload = calloc(1, (size_t)pl->p.size + HB_HDR);
        memset(th->payload + HB_HDR, 'x',
               (size_t)pl->p.size > HB_HDR ? (size_t)pl->p.size - HB_HDR : 0);
        if (pl->p.transform)
            map_payload(th->payload, (size_t)pl->p.size);
        hb_hist_init(&th->hist);
    }
    build_conns(run);
    run->window = pl->p.window;
}

/* Connects every connection (at the ramp rate) and waits until all are subscribed and synced. */
static int run_setup(hb_run_t *run)
{
    const hb_plan_t *pl = run->plan;
    uint64_t setup0 = hb_now_ns();
    for (int i = 0; i < run->nconns; i++) {
        if (conn_start(run, &run->conns[i]) < 0)
            return -1;
        if (pl->ramp > 0) {
            double due = (double)(i + 1) / pl->ramp;
            double el = (double)(hb_now_ns() - setup0) / 1e9;
            sleep_s(due - el);
        }
    }
    double limit = 15 + run->nconns / 500.0;
    while (SUM(run, ready) < (uint64_t)run->nconns) {
        if (SUM(run, disc) || SUM(run, errors))
            return -1;
        if ((double)(hb_now_ns() - setup0) / 1e9 > limit) {
            char msg[160];
            snprintf(msg, sizeof msg, "set-up timed out: %llu of %d connections ready",
                     (unsigned long long)SUM(run, ready), run->nconns);
            set_error(run, msg);
            return -1;
        }
        sleep_s(0.005);
    }
    return 0;
}

/* idle: lets the broker settle, then charges it the growth of its RSS per connection. */
static int run_idle(hb_run_t *run, hb_result_t *r)
{
    const hb_plan_t *pl = run->plan;
    const hb_target_t *t = run->t;
    sleep_s(pl->p.duration > 0 ? pl->p.duration : 1);
    uint64_t rss = hb_proc_rss(t->pid);
    r->broker_rss = r->broker_rss_peak = rss;
    if (t->pid && rss > r->broker_rss_base)
        r->mem_per_conn = (double)(rss - r->broker_rss_base) / run->nconns;
    if (!pl->quiet) {
        char a[24], b[24];
        fprintf(stderr, "  %-7s %-10s %d connections: broker rss %s, %s per connection\n",
                t->ad->name, pl->name, run->nconns, hb_fmt_bytes(a, sizeof a, (double)rss),
                hb_fmt_bytes(b, sizeof b, r->mem_per_conn));
    }
    return SUM(run, disc) ? -1 : 0;
}

/* Takes the counters at the start of the measured run; results are differences from them. */
static void take_base(hb_run_t *run)
{
    run->base.sent = SUM(run, sent);
    run->base.sent_bytes = SUM(run, sent_bytes);
    run->base.expected = SUM(run, expected);
    run->base.delivered = SUM(run, delivered);
    run->base.del_bytes = SUM(run, del_bytes);
    run->base.dups = SUM(run, dups);
    run->base.reord = SUM(run, reord);
    run->base.gaps = SUM(run, gaps);
}

/*
 * The measured run: publishes until the duration or the count is reached,
 * then drains until every expected delivery arrived (or the drain time is
 * up). The main thread samples rates, CPU and RSS every plan->sample_s for
 * the progress line and the time series, and measures CPU over the whole run.
 */
static void run_load(hb_run_t *run, hb_result_t *r)
{
    const hb_plan_t *pl = run->plan;
    const hb_target_t *t = run->t;
    double sample = pl->sample_s > 0 ? pl->sample_s : 0.25;
    int cap = (int)((pl->p.duration + pl->drain + 2) / sample) + 16;
    r->series = calloc((size_t)cap, sizeof(hb_sample_t));

    if (pl->warmup > 0 && pl->p.count == 0)
        warm_up(run, pl);
    take_base(run);
    int64_t self0 = hb_self_cpu_ns();
    int64_t brk0 = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
    run->t0 = hb_now_ns();
    set_phase(run, PH_RUN);
    uint64_t last_t = run->t0, last_sent = run->base.sent, last_del = run->base.delivered;
    int64_t last_self = self0, last_brk = brk0;
    uint64_t pub_end = 0, end = 0;
    for (;;) {
        sleep_s(sample);
        uint64_t now = hb_now_ns();
        double el = (double)(now - run->t0) / 1e9;
        uint64_t s = SUM(run, sent), d = SUM(run, delivered), e = SUM(run, expected);
        double dt = (double)(now - last_t) / 1e9;
        int64_t self = hb_self_cpu_ns();
        int64_t brk = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
        uint64_t rss = t->pid ? hb_proc_rss(t->pid) : 0;
        if (rss > r->broker_rss_peak)
            r->broker_rss_peak = rss;
        double bcpu = (double)(self - last_self) / 1e7 / dt;
        double kcpu = brk >= 0 && last_brk >= 0 ? (double)(brk - last_brk) / 1e7 / dt : -1;
        if (r->nseries < cap)
            r->series[r->nseries++] = (hb_sample_t){el, (double)(s - last_sent) / dt,
                                                    (double)(d - last_del) / dt, kcpu, rss};
        progress(pl, t, el, (double)(s - last_sent) / dt, (double)(d - last_del) / dt,
                 e > d ? e - d : 0, bcpu, kcpu, rss, 0);
        last_t = now;
        last_sent = s;
        last_del = d;
        last_self = self;
        last_brk = brk;
        if (atomic_load(&run->phase) == PH_RUN) {
            int pubs_all_done = SUM(run, pubs_done) >= (uint64_t)run->npubs;
            if ((pl->p.count == 0 && el >= pl->p.duration) || (pl->p.count && pubs_all_done) ||
                el >= pl->p.duration + 60 || (pubs_all_done && run->npubs)) {
                pub_end = pl->p.count ? max_of(run, offsetof(ctrs_t, pub_end_ns)) : now;
                if (!pub_end)
                    pub_end = now;
                set_phase(run, PH_DRAIN);
            }
            continue;
        }
        /* Drain: everything written, then everything expected delivered, or time out. */
        int flushed = SUM(run, pubs_pending) == 0;
        if ((flushed && d >= e) || (double)(now - pub_end) / 1e9 > pl->drain) {
            end = now;
            break;
        }
    }
    set_phase(run, PH_STOP);
    int64_t self1 = hb_self_cpu_ns();
    int64_t brk1 = t->pid ? hb_proc_cpu_ns(t->pid) : -1;
    double wall = (double)(end - run->t0) / 1e9;
    r->bench_cpu = (double)(self1 - self0) / 1e7 / wall;
    if (brk0 >= 0 && brk1 >= 0)
        r->broker_cpu = (double)(brk1 - brk0) / 1e7 / wall;
    r->broker_rss = t->pid ? hb_proc_rss(t->pid) : 0;
    r->pub_secs = (double)(pub_end - run->t0) / 1e9;
    uint64_t last = max_of(run, offsetof(ctrs_t, last_del_ns));
    r->del_secs = last > run->t0 ? (double)(last - run->t0) / 1e9 : 0;
    uint64_t e = SUM(run, expected), d = SUM(run, delivered);
    progress(pl, t, wall,
             r->pub_secs > 0 ? (double)(SUM(run, sent) - run->base.sent) / r->pub_secs : 0,
             r->del_secs > 0 ? (double)(d - run->base.delivered) / r->del_secs : 0,
             e > d ? e - d : 0, r->bench_cpu, r->broker_cpu, r->broker_rss, 1);
}

/*
 * Counts the stalled subscribers the broker cut off: such a connection reads
 * as end-of-file once drained. What the broker had in its socket buffer
 * trickles in as we read, so only a quiet period (or 3 s in all) means the
 * connection is still open.
 */
static uint64_t count_stalled_closed(hb_run_t *run)
{
    static uint8_t sink[1 << 16];
    uint64_t closed = 0;
    for (int i = 0; i < run->nconns; i++) {
        hb_conn_t *c = &run->conns[i];
        if (!(c->role & HB_STALL) || c->fd < 0)
            continue;
        uint64_t until = hb_now_ns() + 3000000000ull;
        while (hb_now_ns() < until) {
            ssize_t n = read(c->fd, sink, sizeof sink);
            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
                if (poll(&pfd, 1, 200) > 0)
                    continue;
                break;
            }
            closed++;
            break;
        }
    }
    return closed;
}

/* Fills the result's counts (relative to the run's start) and latency; threads have ended. */
static void run_collect(hb_run_t *run, hb_result_t *r)
{
    r->published = SUM(run, sent) - run->base.sent;
    r->pub_bytes = SUM(run, sent_bytes) - run->base.sent_bytes;
    r->expected = SUM(run, expected) - run->base.expected;
    r->delivered = SUM(run, delivered) - run->base.delivered;
    r->del_bytes = SUM(run, del_bytes) - run->base.del_bytes;
    r->duplicates = SUM(run, dups) - run->base.dups;
    r->reordered = SUM(run, reord) - run->base.reord;
    r->gaps = SUM(run, gaps) - run->base.gaps;
    r->errors = SUM(run, errors);
    r->disconnects = SUM(run, disc);
    for (int i = 0; i < run->nthreads; i++)
        hb_hist_merge(r->lat, &run->th[i].hist);
    r->stalled_closed = count_stalled_closed(run);
}

static void run_free(hb_run_t *run)
{
    for (int i = 0; i < run->nconns; i++) {
        hb_conn_t *c = &run->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        hb_buf_free(&c->out);
        hb_buf_free(&c->held);
        hb_buf_free(&c->left);
        hb_buf_free(&c->wsin);
        hb_buf_free(&c->tout);
#ifdef HB_HAVE_HERALD
        hr_tlsio_free(&c->tls);
#endif
        free(c->sub_topic);
        free(c->last_seq);
        if (c->pub)
            free(c->pub->seq);
        free(c->pub);
    }
    for (int i = 0; i < run->nthreads; i++) {
        hb_thread_t *th = &run->th[i];
        close(th->ep);
        close(th->tfd);
        close(th->wfd);
        free(th->conns);
        free(th->pubs);
        free(th->dirty);
        free(th->rbuf);
        free(th->payload);
    }
    free(run->th);
    free(run->conns);
    free(run->fan);
    free(run->topic);
    free(run->tlen);
    pthread_mutex_destroy(&run->lock);
}

int hb_run(const hb_plan_t *pl, const hb_target_t *t, hb_result_t *r)
{
    hb_run_t run_s, *run = &run_s;
    memset(run, 0, sizeof(*run));
    memset(r, 0, sizeof(*r));
    snprintf(r->scenario, sizeof r->scenario, "%s", pl->name);
    snprintf(r->broker, sizeof r->broker, "%s", t->name[0] ? t->name : t->ad->name);
    snprintf(r->version, sizeof r->version, "%s", t->version);
    r->params = pl->p;
    r->broker_cpu = -1;
    if (pl->sub_ws && (!t->ad->ws || !t->ws_port)) {
        snprintf(r->error, sizeof r->error, "%s cannot be driven over WebSocket here", t->ad->name);
        return -1;
    }
    run->plan = pl;
    run->t = t;
    run->ad = t->ad;
    if (resolve(t->host, t->port, &run->addr) || resolve(t->host, t->ws_port, &run->ws_addr) ||
        resolve(t->host, t->sub_port ? t->sub_port : t->port, &run->sub_addr) ||
        resolve(t->host, t->sub_ws_port ? t->sub_ws_port : t->ws_port, &run->sub_ws_addr)) {
        snprintf(r->error, sizeof r->error, "cannot resolve %s", t->host);
        return -1;
    }
#ifdef HB_HAVE_HERALD
    if (t->tls_ca[0]) {
        hr_tlsio_opts_t o = {.ca_file = t->tls_ca, .verify = HR_TLSIO_VERIFY_REQUIRED};
        SSL_CTX *ctx;
        char err[200];
        if (hr_tlsio_ctx_new(0, &o, &ctx, err, sizeof err) != HR_OK) {
            snprintf(r->error, sizeof r->error, "TLS: %s", err);
            return -1;
        }
        run->tls_ctx = ctx;
    }
#endif
    pthread_mutex_init(&run->lock, NULL);
    run_open(run);
    r->params.threads = run->nthreads;
    r->lat = calloc(1, sizeof(hb_hist_t));
    hb_hist_init(r->lat);
    for (int i = 0; i < run->nthreads; i++)
        pthread_create(&run->th[i].tid, NULL, thread_main, &run->th[i]);

    r->broker_rss_base = t->pid ? hb_proc_rss(t->pid) : 0;
    int rc = run_setup(run);
    if (rc == 0 && pl->idle)
        rc = run_idle(run, r);
    else if (rc == 0)
        run_load(run, r);
    set_phase(run, PH_STOP);
    for (int i = 0; i < run->nthreads; i++)
        pthread_join(run->th[i].tid, NULL);

    run_collect(run, r);
    hb_result_finish(r);
    if (run->error[0])
        snprintf(r->error, sizeof r->error, "%s", run->error);
    r->ok = rc == 0 && !r->disconnects;
    run_free(run);
#ifdef HB_HAVE_HERALD
    SSL_CTX_free(run->tls_ctx);
#endif
    return r->ok ? 0 : -1;
}
