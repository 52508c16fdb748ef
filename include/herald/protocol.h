/* SPDX-License-Identifier: MIT */
/* Herald wire protocol v1: frame codec, topics, shared message buffers. No I/O. */
#ifndef HERALD_PROTOCOL_H
#define HERALD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HR_PROTOCOL_VERSION 1
#define HR_DEFAULT_PORT 7400
#define HR_DEFAULT_WS_PORT 7401
#define HR_WS_SUBPROTOCOL "herald.v1"
#define HR_TOPIC_MAX 255        /* bytes in a topic or pattern */
#define HR_TOKEN_MAX 64         /* bytes in one token */
#define HR_TOKENS_MAX 16        /* tokens in a topic or pattern */
#define HR_LP_PREFIX 4          /* TCP framing: 4-byte big-endian body length */
#define HR_WS_HDR_MAX 10        /* largest unmasked server WebSocket frame header */
#define HR_WS_HDR_MAX_MASKED 14 /* largest WebSocket frame header (with a mask key) */
#define HR_FRAME_SLACK 4096     /* default max_frame = max_payload + HR_FRAME_SLACK */
#define HR_EPOCH_MAX 64         /* bytes in a WELCOME / SUB epoch */

/* Opcodes (first element of every frame body). */
enum hr_op {
    HR_OP_HELLO = 1,
    HR_OP_PUB = 2,
    HR_OP_SUB = 3,
    HR_OP_UNSUB = 4,
    HR_OP_PING = 5,
    HR_OP_PONG = 6,
    HR_OP_WELCOME = 16,
    HR_OP_MSG = 17,
    HR_OP_ACK = 18,
    HR_OP_ERR = 19,
    HR_OP_GAP = 20,
    HR_OP_BATCH = 21
};

/* A borrowed byte range. Never owns memory; valid as long as what it points into. */
typedef struct hr_slice_s {
    const char *p;
    size_t n;
} hr_slice_t;

/* Bits of hr_frame_t.flags: which optional fields were present. */
enum hr_frame_flag {
    HR_F_ACK = 1u << 0,       /* PUB opts.ack present (id in .id) */
    HR_F_SINCE = 1u << 1,     /* SUB opts.since present */
    HR_F_REF = 1u << 2,       /* ERR ref present (in .sid) */
    HR_F_NO_ECHO = 1u << 3,   /* HELLO echo: false */
    HR_F_REPLAY = 1u << 4,    /* MSG opts.replay: true */
    HR_F_REPLY = 1u << 5,     /* PUB/MSG opts.reply present */
    HR_F_HEADERS = 1u << 6,   /* PUB/MSG opts.headers present */
    HR_F_QUEUE = 1u << 7,     /* SUB opts.queue present */
    HR_F_NAME = 1u << 8,      /* HELLO name present */
    HR_F_TOKEN = 1u << 9,     /* HELLO token present */
    HR_F_HAS_OPTS = 1u << 10, /* the frame carried an option map (may be empty) */
    HR_F_EPOCH = 1u << 11,    /* WELCOME epoch / SUB opts.epoch present (in .epoch) */
    HR_F_LAST = 1u << 12      /* SUB opts.last present */
};

/*
 * One decoded frame. Which fields are meaningful depends on `op` (see
 * docs/protocol.md); every hr_slice_t points into the input passed to
 * hr_frame_decode() and is valid only as long as that input is.
 */
typedef struct hr_frame_s {
    int op;
    uint32_t flags;        /* HR_F_* */
    uint64_t sid;          /* SUB, UNSUB, MSG, GAP; ERR ref */
    uint64_t id;           /* PING, PONG id; PUB opts.ack; ACK ack */
    uint64_t seq;          /* MSG, ACK */
    hr_slice_t topic;      /* PUB, MSG, GAP topic; SUB pattern */
    hr_slice_t payload;    /* PUB, MSG */
    hr_slice_t reply;      /* PUB, MSG opts.reply */
    hr_slice_t headers;    /* PUB, MSG opts.headers: the raw msgpack map, checked map<str,str> */
    hr_slice_t queue;      /* SUB opts.queue */
    uint64_t since;        /* SUB opts.since */
    uint64_t last;         /* SUB opts.last */
    hr_slice_t epoch;      /* WELCOME epoch; SUB opts.epoch (at most HR_EPOCH_MAX bytes) */
    hr_slice_t opts;       /* the raw option map when HR_F_HAS_OPTS (transforms, presence) */
    uint64_t version;      /* HELLO, WELCOME v */
    hr_slice_t name;       /* HELLO name */
    hr_slice_t token;      /* HELLO token */
    hr_slice_t server;     /* WELCOME server */
    uint64_t client_id;    /* WELCOME */
    uint64_t worker;       /* WELCOME */
    uint64_t max_payload;  /* WELCOME */
    uint64_t max_frame;    /* WELCOME */
    uint64_t heartbeat_ms; /* WELCOME */
    uint64_t code;         /* ERR */
    hr_slice_t message;    /* ERR */
    uint64_t first_seq;    /* GAP */
    uint64_t last_seq;     /* GAP */
    hr_slice_t batch;      /* BATCH: the raw array of messages, each checked (hr_batch_iter_*) */
    uint64_t nbatch;       /* BATCH: messages in it */
} hr_frame_t;

/* ---- decoding ---------------------------------------------------------- */

/**
 * Finds the next length-prefixed (TCP) frame at the start of `buf`.
 * On HR_OK `*body` is the frame body (a slice of `buf`) and `*consumed` the
 * bytes to skip (prefix + body). Returns HR_EAGAIN when `buf` holds only part
 * of the frame (`*consumed` then says how many bytes the whole frame needs,
 * or 0 while the prefix itself is incomplete), and HR_ETOOBIG when the
 * declared length exceeds `max_frame` (judged from the prefix alone).
 */
int hr_lp_next(const void *buf, size_t len, size_t max_frame, hr_slice_t *body, size_t *consumed);

/**
 * Decodes one frame body (no length prefix) strictly: a single msgpack array
 * with a known opcode, the right number and types of fields, no trailing
 * bytes. Never allocates; slices point into `body`.
 * Returns HR_OK; HR_EPROTO for any malformation; HR_ETOOBIG when a payload
 * exceeds `max_payload` (0: no limit); HR_ETOPIC when the frame is well
 * formed but its topic, pattern or reply topic is invalid (then `*f` is
 * fully filled so the caller can name the sid). `*why`, if not NULL, gets a
 * static description of the failure.
 */
int hr_frame_decode(const void *body, size_t len, size_t max_payload, hr_frame_t *f,
                    const char **why);

/** Returns the opcode's name ("PUB") or "?" for an unknown one. */
const char *hr_op_name(int op);

/* Iterates the entries of a headers map from hr_frame_t.headers. */
typedef struct hr_headers_iter_s {
    const char *p, *end; /* private */
    uint32_t left;       /* private */
} hr_headers_iter_t;

/** Starts iterating `raw` (a map validated by hr_frame_decode()). */
void hr_headers_iter_init(hr_headers_iter_t *it, hr_slice_t raw);
/** Sets `*key`/`*val` to the next entry and returns 1, or returns 0 at the end. */
int hr_headers_iter_next(hr_headers_iter_t *it, hr_slice_t *key, hr_slice_t *val);

/* Iterates the messages of a BATCH frame (op 21) from hr_frame_decode(). */
typedef struct hr_batch_iter_s {
    const char *p, *end; /* private */
    uint64_t left;       /* private */
    uint64_t sid;        /* private */
} hr_batch_iter_t;

/** Starts iterating the messages of `f`, a decoded BATCH frame. */
void hr_batch_iter_init(hr_batch_iter_t *it, const hr_frame_t *f);
/**
 * Sets `*msg` to the next message as the MSG frame it stands for (op
 * HR_OP_MSG, the BATCH's sid, topic, seq, payload, reply, headers, replay
 * flag; slices point into the BATCH body) and returns 1, or returns 0 at the
 * end.
 */
int hr_batch_iter_next(hr_batch_iter_t *it, hr_frame_t *msg);

/* ---- framing (frame.c) -------------------------------------------------- */

/** Writes the TCP length prefix for a body of `n` bytes. */
void hr_lp_put(uint8_t out[HR_LP_PREFIX], uint32_t n);
/** Reads a TCP length prefix. */
uint32_t hr_lp_get(const uint8_t p[HR_LP_PREFIX]);

/* A WebSocket frame header (RFC 6455 section 5.2). */
typedef struct hr_ws_header_s {
    int fin;         /* final fragment */
    int rsv;         /* RSV1..RSV3 as bits 0x4, 0x2, 0x1 (0 unless an extension was agreed) */
    int opcode;      /* 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong */
    int masked;      /* a mask key follows the length */
    uint8_t mask[4]; /* the mask key, or zeroes */
    uint64_t len;    /* payload length */
    size_t hdr_len;  /* bytes of header before the payload: 2 .. HR_WS_HDR_MAX_MASKED */
} hr_ws_header_t;

/**
 * Parses the frame header at the start of `p` (the payload need not be
 * there yet). Returns HR_OK with `*h` filled; HR_EAGAIN while `n` bytes do
 * not hold the whole header; HR_ETOOBIG when the payload length exceeds
 * `max` (judged before the mask key arrives); HR_EPROTO for a 64-bit
 * length with its most significant bit set. Reserved bits, opcodes and
 * control-frame rules are left to the caller.
 */
int hr_ws_header_parse(const void *p, size_t n, uint64_t max, hr_ws_header_t *h);

/**
 * Writes a frame header for a payload of `len` bytes, with the mask key
 * `mask` (4 bytes) or unmasked if NULL. Returns its length (at most
 * HR_WS_HDR_MAX_MASKED; HR_WS_HDR_MAX unmasked).
 */
size_t hr_ws_header_build(uint8_t *out, int fin, int opcode, uint64_t len, const uint8_t *mask);

/** XORs `n` payload bytes in place with `mask`; `off` is their offset in the payload. */
void hr_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t off);

/* ---- topics ------------------------------------------------------------ */

/** HR_OK if `t` is a valid topic (no wildcards), else HR_ETOPIC. */
int hr_topic_validate(const char *t, size_t n);
/** HR_OK if `p` is a valid pattern (`*` any token, `>` last token), else HR_ETOPIC. */
int hr_pattern_validate(const char *p, size_t n);
/** 1 if valid pattern `pat` matches valid topic `t` (with the `$` rule), else 0. */
int hr_topic_match(const char *pat, size_t pn, const char *t, size_t tn);
/**
 * 1 if every topic that valid pattern `s` matches is also matched by valid
 * pattern `p` (with the `$` rule), else 0. A subscribe permission `p`
 * allows a SUB to `s` exactly when it covers `s`.
 */
int hr_pattern_covers(const char *p, size_t pn, const char *s, size_t sn);

/* ---- encoding ---------------------------------------------------------- */

/* A growable byte buffer; owns `base`. */
typedef struct hr_buf_s {
    uint8_t *base; /* read-only */
    size_t len;    /* read-only */
    size_t cap;    /* read-only */
    int oom;       /* read-only: an append failed for lack of memory */
} hr_buf_t;

void hr_buf_init(hr_buf_t *b);
void hr_buf_destroy(hr_buf_t *b);
/** Makes room for `n` more bytes. HR_OK or HR_ENOMEM (also sets b->oom). */
int hr_buf_reserve(hr_buf_t *b, size_t n);
int hr_buf_append(hr_buf_t *b, const void *p, size_t n);
/** Drops the first `n` bytes. */
void hr_buf_consume(hr_buf_t *b, size_t n);
void hr_buf_reset(hr_buf_t *b);

/** Reserves a 4-byte length prefix; returns the mark to pass to hr_lp_end(). */
size_t hr_lp_begin(hr_buf_t *b);
/** Writes the length of everything appended since `mark` into its prefix. */
void hr_lp_end(hr_buf_t *b, size_t mark);

/** Called with each complete frame body; return nonzero to stop feeding. */
typedef int (*hr_frame_cb)(void *arg, const char *body, size_t n);

/**
 * Incremental TCP framing: splits `p` into frame bodies, calling `cb` for
 * each. Complete frames inside `p` are passed in place (zero-copy); a frame
 * cut by the end of `p` is kept in `partial`, which is freed again as soon
 * as that frame completes, so an idle stream holds no buffer. `partial`
 * grows with the bytes that arrive, never with the length a prefix
 * declares: a peer that declares a large frame and sends nothing more
 * costs only the bytes it sent.
 * Returns HR_OK, HR_ETOOBIG (a prefix over `max_frame`), HR_ENOMEM, or
 * HR_ECANCELED when `cb` asked to stop.
 */
int hr_lp_feed(hr_buf_t *partial, const char *p, size_t n, size_t max_frame, hr_frame_cb cb,
               void *arg);

/* One header of a PUB. */
typedef struct hr_header_s {
    const char *key;
    const char *value;
} hr_header_t;

typedef struct hr_pub_opts_s {
    hr_slice_t reply; /* empty: none */
    int has_ack;      /* ask for an ACK carrying `ack` */
    uint64_t ack;
    const hr_header_t *headers; /* `nheaders` NUL-terminated pairs, or NULL */
    size_t nheaders;
    hr_slice_t headers_raw; /* or: an already encoded map<str,str> */
} hr_pub_opts_t;

typedef struct hr_welcome_s {
    const char *server;
    uint64_t client_id, worker, max_payload, max_frame, heartbeat_ms;
    const char *epoch; /* NULL: no epoch key; else at most HR_EPOCH_MAX bytes */
} hr_welcome_t;

/* The options of a SUB, for hr_enc_sub_ex(). Zero-initialise, then set what applies. */
typedef struct hr_sub_fields_s {
    hr_slice_t queue; /* empty: none */
    int has_since;
    uint64_t since;
    int has_last;
    uint64_t last;
    hr_slice_t epoch; /* NULL `p`: none; else at most HR_EPOCH_MAX bytes (may be empty) */
    hr_slice_t extra; /* more option entries, already encoded (key, value, ...): transforms */
    uint32_t nextra;  /* entries (key-value pairs) in `extra` */

    /* NULL `p`: none; else member info, sent as `presence` (bin; may be empty). */
    hr_slice_t presence;
} hr_sub_fields_t;

/*
 * Encoders append one frame body to `b` (wrap in hr_lp_begin/hr_lp_end for
 * TCP). They return HR_OK or HR_ENOMEM; hr_enc_sub_ex() and hr_enc_welcome()
 * also HR_EINVAL for an epoch longer than HR_EPOCH_MAX (nothing appended).
 */
int hr_enc_hello(hr_buf_t *b, const char *name, const char *token, int echo);
int hr_enc_pub(hr_buf_t *b, hr_slice_t topic, hr_slice_t payload, const hr_pub_opts_t *opts);
/** SUB with only `queue` (empty: none) and `since`; see hr_enc_sub_ex() for every option. */
int hr_enc_sub(hr_buf_t *b, uint64_t sid, hr_slice_t pattern, hr_slice_t queue, int has_since,
               uint64_t since);
/** SUB with the options in `o` (NULL: none). */
int hr_enc_sub_ex(hr_buf_t *b, uint64_t sid, hr_slice_t pattern, const hr_sub_fields_t *o);
int hr_enc_unsub(hr_buf_t *b, uint64_t sid);
int hr_enc_ping(hr_buf_t *b, uint64_t id);
int hr_enc_pong(hr_buf_t *b, uint64_t id);
int hr_enc_welcome(hr_buf_t *b, const hr_welcome_t *w);
int hr_enc_ack(hr_buf_t *b, uint64_t ack, uint64_t seq);
int hr_enc_err(hr_buf_t *b, unsigned code, const char *message, int has_ref, uint64_t ref);
int hr_enc_gap(hr_buf_t *b, uint64_t sid, hr_slice_t topic, uint64_t first_seq, uint64_t last_seq);
int hr_enc_msg(hr_buf_t *b, uint64_t sid, hr_slice_t topic, uint64_t seq, hr_slice_t payload,
               hr_slice_t reply, hr_slice_t headers_raw, int replay);

/* ---- shared message buffers ------------------------------------------- */

/*
 * A refcounted, immutable-once-sealed byte buffer: one allocation holding the
 * header fields below and the bytes. Plain integer refcount: one loop thread
 * owns it. For a delivery (MSG) it holds the body *after* the sid
 * (topic, seq, payload[, opts]) so that every subscriber shares it and only
 * a tiny per-delivery header differs (hr_msg_delivery_header()).
 */
typedef struct hr_msg_s {
    uint32_t refs;  /* private */
    uint32_t off;   /* read-only: start of the bytes (headroom before it) */
    uint32_t len;   /* read-only: bytes in use from `off` */
    uint32_t cap;   /* read-only: bytes allocated after the header */
    uint8_t arr;    /* read-only: for deliveries, the MSG array marker (0x95 / 0x96) */
    uint8_t data[]; /* private */
} hr_msg_t;

/* Framing kinds for hr_msg_delivery_header() and hr_msg_frame(). */
enum hr_framing { HR_FRAMING_LP = 0, HR_FRAMING_WS = 1 };

/** Largest per-delivery header: WS header + array + opcode + uint64 sid. */
#define HR_DELIVERY_HDR_MAX (HR_WS_HDR_MAX + 2 + 9)

static inline const uint8_t *hr_msg_bytes(const hr_msg_t *m)
{
    return m->data + m->off;
}

/** New buffer with `headroom` bytes reserved in front and `len` bytes of `p` (or zeroes). NULL on
 * OOM. */
hr_msg_t *hr_msg_new(size_t headroom, const void *p, size_t len);
/** Adds a reference; returns `m`. */
hr_msg_t *hr_msg_ref(hr_msg_t *m);
/** Drops a reference (freeing at zero) and sets `*m` to NULL. NULL-safe. */
void hr_msg_unref(hr_msg_t **m);

/**
 * Encodes the shared part of a MSG (topic, seq, payload and, if any of reply,
 * headers or replay is set, the opts map) into a new buffer; one copy of the
 * payload, nothing else. NULL on OOM.
 */
hr_msg_t *hr_msg_new_delivery(hr_slice_t topic, uint64_t seq, hr_slice_t payload, hr_slice_t reply,
                              hr_slice_t headers_raw, int replay);

/**
 * Makes the replay variant of a delivery body from hr_msg_new_delivery():
 * the same message with `replay: true` added to its opts. NULL on OOM.
 */
hr_msg_t *hr_msg_new_replay(const hr_msg_t *live);

/**
 * Finds the parts of a delivery body from hr_msg_new_delivery() (or
 * hr_msg_new_replay()): `topic`, `seq`, `payload` and `opts`, the raw option
 * map (n == 0: none). Slices point into `m`. HR_OK, or HR_EINVAL for bytes
 * that are not such a body.
 */
int hr_msg_delivery_parts(const hr_msg_t *m, hr_slice_t *topic, uint64_t *seq, hr_slice_t *payload,
                          hr_slice_t *opts);

/**
 * A delivery body like `body` (topic, seq and options unchanged) carrying
 * `payload` instead of its own: the body of a projected delivery. NULL on
 * OOM or when `body` is not a delivery body.
 */
hr_msg_t *hr_msg_new_with_payload(const hr_msg_t *body, hr_slice_t payload);

/**
 * Writes the per-delivery bytes that precede a shared delivery body for
 * subscription `sid`: the TCP length prefix or the WebSocket frame header,
 * then the array marker, opcode 17 and `sid`. Returns their length
 * (at most HR_DELIVERY_HDR_MAX).
 */
size_t hr_msg_delivery_header(const hr_msg_t *m, uint64_t sid, int framing, uint8_t *out);

/**
 * Frames a complete body held in `m` for `framing`, in place, using its
 * headroom (which must be >= HR_WS_HDR_MAX). HR_OK or HR_EINVAL.
 */
int hr_msg_frame(hr_msg_t *m, int framing);

/** Writes an unmasked, final server WebSocket frame header; returns its length. */
size_t hr_ws_frame_header(uint8_t *out, int opcode, uint64_t payload_len);

#ifdef __cplusplus
}
#endif
#endif
