/* SPDX-License-Identifier: MIT */
/* herald-bench internals: connections, threads, broker adapters, scenarios. */
#ifndef HB_H
#define HB_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "report.h"

/* ---- byte buffer ------------------------------------------------------- */

/* Pending bytes are [off, len) of p. */
typedef struct hb_buf_s {
    uint8_t *p;
    size_t off, len, cap;
} hb_buf_t;

/** Returns a pointer to `n` writable bytes at the end (call hb_buf_commit after). Aborts on OOM. */
uint8_t *hb_buf_space(hb_buf_t *b, size_t n);
void hb_buf_add(hb_buf_t *b, const void *p, size_t n);
void hb_buf_str(hb_buf_t *b, const char *s);
/** Appends a decimal number. */
void hb_buf_u64(hb_buf_t *b, uint64_t v);
void hb_buf_free(hb_buf_t *b);
static inline size_t hb_buf_pending(const hb_buf_t *b)
{
    return b->len - b->off;
}

/* ---- payload header --------------------------------------------------- */

/*
 * Every published payload starts with 16 bytes (little endian): publisher id
 * (u32), the publisher's sequence number on that topic (u32, from 1) and the
 * send timestamp (u64, CLOCK_MONOTONIC ns: the intended send time in
 * fixed-rate mode). The payload size of a scenario includes these 16 bytes.
 */
#define HB_HDR 16

/*
 * With --transform the payload is a MessagePack map that subscription
 * transforms can read, {h: bin(header), k: 1, text: "xx..."}, and the
 * 16-byte header sits at HB_MAP_HDR_OFF (after the map, key and bin
 * markers). A projection to `h` and `k` keeps it there.
 */
#define HB_MAP_HDR_OFF 5
#define HB_MAP_MIN (HB_MAP_HDR_OFF + HB_HDR + 3 + 6) /* "k": 1, "text": "" */

/** The bytes after `--transform NAME` in a Herald SUB's option map, or NULL if unknown. */
const char *hb_transform_opts(const char *name, uint32_t *nentries, size_t *len);

/* ---- connections ------------------------------------------------------- */

enum hb_role {
    HB_PUB = 1,   /* publishes on a schedule */
    HB_SUB = 2,   /* subscribes and checks what it receives */
    HB_STALL = 4, /* subscribes, then never reads again */
    HB_REQ = 8,   /* sends requests, one outstanding, waits for replies */
    HB_REP = 16,  /* answers requests */
};

enum hb_state { HB_C_UPGRADING, HB_C_OPEN, HB_C_READY, HB_C_PARKED, HB_C_CLOSED };

typedef struct hb_conn_s hb_conn_t;
typedef struct hb_thread_s hb_thread_t;
typedef struct hb_run_s hb_run_t;

/* Per-publisher state. */
typedef struct hb_pub_s {
    uint32_t id;
    uint32_t *seq;    /* next sequence number per topic */
    uint64_t sent;    /* messages sent */
    uint64_t quota;   /* 0 = until the phase ends */
    uint64_t next_ns; /* fixed rate: intended time of the next message */
    uint64_t interval_ns;
    uint64_t rng;
    int done;
    int waiting;    /* requester: a request is outstanding */
    char inbox[32]; /* requester: reply topic */
} hb_pub_t;

struct hb_conn_s {
    int fd;
    int idx;
    int role;
    int state;
    int ws;          /* WebSocket transport */
    int pings;       /* sync pings not yet answered */
    int dirty;       /* on the thread's flush list */
    uint32_t events; /* current epoll mask */
    hb_thread_t *th;
    const struct hb_adapter_s *ad;
    hb_buf_t out;           /* bytes to write */
    hb_buf_t held;          /* WebSocket: frames queued until the upgrade completes */
    hb_buf_t left;          /* an incomplete frame kept between reads */
    hb_buf_t wsin;          /* WebSocket carrying a byte stream (NATS): payloads not yet parsed */
    struct hr_tlsio_s *tls; /* TLS session (targets with ?tls=CA), else NULL */
    hb_buf_t tout;          /* TLS: ciphertext to write (out holds plaintext not yet encrypted) */
    uint32_t mask;          /* WebSocket masking key state */
    int nsubs;
    uint32_t *sub_topic; /* topic index of each subscription */
    uint32_t *last_seq;  /* [nsubs][npubs]: last sequence seen */
    hb_pub_t *pub;
};

/* ---- adapters ---------------------------------------------------------- */

/*
 * One adapter per broker protocol. Encoders append to hb_out(c); parse()
 * consumes complete protocol units from `p` and reports them with
 * hb_on_msg / hb_on_pong / hb_on_error, answering server pings itself.
 */
typedef struct hb_adapter_s {
    const char *name;
    /** Queues what a new connection sends first (HELLO, CONNECT, WebSocket upgrade). */
    void (*open)(hb_conn_t *c);
    void (*sub)(hb_conn_t *c, uint32_t sid, const char *topic, size_t tn);
    /** Queues a publish; `reply` may be NULL. */
    void (*pub)(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
                const char *reply, size_t rn);
    /** Queues a ping whose answer reaches hb_on_pong (after everything sent before it). */
    void (*ping)(hb_conn_t *c);
    /** Returns the bytes consumed (a partial unit is left), or -1 to close the connection. */
    long (*parse)(hb_conn_t *c, const uint8_t *p, size_t n);
    /** Whether reply topics travel in the protocol (else replies go to hb.inbox.<pub id>). */
    int native_reply;
    /** Whether the broker can be driven over WebSocket by this adapter. */
    int ws;
    /** Called by each generator thread as it ends (frees per-thread state); may be NULL. */
    void (*thread_exit)(void);
} hb_adapter_t;

extern const hb_adapter_t hb_adapter_nats;
extern const hb_adapter_t hb_adapter_redis;
#ifdef HB_HAVE_HERALD
extern const hb_adapter_t hb_adapter_herald;
#endif
const hb_adapter_t *hb_adapter_find(const char *name);

/* Engine services for adapters. */
hb_buf_t *hb_out(hb_conn_t *c);
/** What the scenario being run asks for. */
const hb_params_t *hb_conn_params(const hb_conn_t *c);
void hb_on_msg(hb_conn_t *c, const char *topic, size_t tn, const uint8_t *p, size_t n,
               const char *reply, size_t rn);
void hb_on_pong(hb_conn_t *c);
void hb_on_error(hb_conn_t *c, const char *fmt, ...);
/** WebSocket: the upgrade completed; frames held back are sent now. */
void hb_on_upgraded(hb_conn_t *c);
/** Appends a masked client WebSocket frame (binary, final) holding `p`. */
void hb_ws_frame(hb_conn_t *c, hb_buf_t *out, int opcode, const void *p, size_t n);
/** Queues the HTTP upgrade request for `subprotocol` and holds frames until it completes. */
void hb_ws_upgrade(hb_conn_t *c, const char *subprotocol);
/**
 * Parses one server WebSocket frame at `p`: returns its total length and sets
 * `*op`, `*body`, `*bn`; 0 if incomplete; -1 if malformed or fragmented.
 */
long hb_ws_parse(const uint8_t *p, size_t n, int *op, const uint8_t **body, size_t *bn);
/** WebSocket: consumes the HTTP 101 response; same return convention as parse(). */
long hb_ws_parse_upgrade(hb_conn_t *c, const uint8_t *p, size_t n);

/* ---- a target broker and a scenario run -------------------------------- */

typedef struct hb_target_s {
    const hb_adapter_t *ad;
    char host[64];
    int port;
    int ws_port;               /* 0: none */
    int sub_port, sub_ws_port; /* subscribers connect here instead (another node); 0: same */
    int pid;                   /* broker pid for CPU/RSS, 0: unknown */
    char version[64];
    char name[32];    /* the column's name in reports ("" : the adapter's, e.g. herald) */
    char tls_ca[256]; /* TLS to both ports, verifying the broker against this CA ("": plain) */
} hb_target_t;

/* How subscribers and publishers map to topics. */
typedef struct hb_plan_s {
    const char *name;
    hb_params_t p;
    int pub_random;  /* publishers pick a random topic per message (else topic id % topics) */
    int reqrep;      /* pubs are requesters, one responder */
    int idle;        /* nothing is published; memory per connection is measured */
    int sub_ws;      /* subscribers connect over WebSocket */
    double drain;    /* seconds to wait for in-flight deliveries at the end */
    double ramp;     /* connections per second during set-up, 0 = as fast as possible */
    double warmup;   /* seconds of load before the measured run (not with a count) */
    int quiet;       /* no progress line */
    double sample_s; /* sampling interval */
} hb_plan_t;

/** Fills `plan` with scenario `name`'s defaults (smoke: tiny counts). 0, or -1 if unknown. */
int hb_scenario_plan(const char *name, int smoke, hb_plan_t *plan);
/** The scenario names, NULL-terminated. */
extern const char *const hb_scenarios[];

/** Runs one plan against one target and fills `r` (r->lat and r->series are allocated). */
int hb_run(const hb_plan_t *plan, const hb_target_t *t, hb_result_t *r);

/* ---- /proc ------------------------------------------------------------- */

/** CPU time (user+system) of `pid` in ns, or -1. */
int64_t hb_proc_cpu_ns(int pid);
/** Resident set size of `pid` in bytes, or 0. */
uint64_t hb_proc_rss(int pid);
/** CPU time of this process in ns. */
int64_t hb_self_cpu_ns(void);
uint64_t hb_now_ns(void);

/**
 * The `presence` scenario (bench/presence.c): `members` join one room, then
 * leave, while `watchers` watch it; prints its table to stdout. 0 (<= 0
 * arguments take the defaults), or -1 when the watchers never saw the
 * final count.
 */
int hb_presence_run(const hb_target_t *t, int members, int watchers, int interval_ms, int smoke);

/** Draws the latency curve and the throughput over time with gnuplot; 0 or -1. */
int hb_plot(const char *dir, const char *fmt, hb_result_t *const *rs, int n);

#endif
