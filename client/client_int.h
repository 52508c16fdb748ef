/* SPDX-License-Identifier: MIT */
/* libherald internals shared by the async client, messages and the blocking API. */
#ifndef HERALD_CLIENT_INT_H
#define HERALD_CLIENT_INT_H

#include <stdatomic.h>

#include "herald/client.h"

/*
 * A received message: one allocation holding this header, the header
 * array, then the topic, reply, payload and header strings, each
 * NUL-terminated. Immutable after creation; the refcount is atomic so the
 * blocking API can hand a message to an application thread.
 */
struct hr_message_s {
    atomic_uint refs;
    int replay;
    uint64_t seq;
    uint64_t sid;
    const char *topic;
    const char *reply; /* NULL if none */
    const uint8_t *data;
    size_t len;
    hr_header_t *headers; /* NULL if none */
    size_t nheaders;
    /* Loop thread only: the delivery queue of the client or of a blocking
     * subscription, and the subscription it is queued for. */
    struct hr_message_s *qnext;
    hr_sub_t *qsub;
};

/** Copies a decoded MSG frame into a new message (refcount 1). NULL on OOM. */
__attribute__((visibility("hidden"))) hr_message_t *hr__message_new(const hr_frame_t *f);

/**
 * Counts one message dropped by a blocking subscription's own queue and, if
 * `notify`, reports HR_ESLOW for `sub` through the client's error callback.
 */
__attribute__((visibility("hidden"))) void hr__sub_dropped(hr_sub_t *sub, int notify);

/**
 * The checks a publish passes before it is encoded (see hr_client_publish()):
 * HR_OK with `*est` a bound of the frame's size, or HR_ETOPIC, HR_EPERM,
 * HR_EINVAL, HR_ETOOBIG (`max_payload` 0: unknown yet). Thread-safe.
 */
__attribute__((visibility("hidden"))) int
hr__publish_check(const char *topic, const void *data, size_t len, const char *reply,
                  const hr_header_t *headers, size_t nheaders, uint64_t max_payload, size_t *est);

/* ---- WebSocket client layer (ws.c) ---- */

#define HR__HIDDEN __attribute__((visibility("hidden")))

/* One parsed WebSocket frame; `data` points into the input (unmasked in place). */
typedef struct hr__ws_frame_s {
    int fin, opcode;
    uint8_t *data;
    size_t len;
} hr__ws_frame_t;

/** Computes the Sec-WebSocket-Accept value for `key` (base64, NUL-terminated). */
HR__HIDDEN void hr__ws_accept(const char *key, char accept[29]);

/**
 * Appends the HTTP upgrade request for `path` on host:port, offering
 * herald.v1, with the key made from `nonce`; `accept` receives the
 * Sec-WebSocket-Accept value the server must answer. HR_OK, HR_EINVAL, HR_ENOMEM.
 */
HR__HIDDEN int hr__ws_request(hr_buf_t *out, const char *host, int port, const char *path,
                              const uint8_t nonce[16], char accept[29]);

/**
 * Checks the server's handshake response at the start of `p`: HR_OK (101,
 * Upgrade: websocket, the right accept, herald.v1 or no subprotocol) with
 * `*used` the bytes of the head; HR_EAGAIN until the head is complete;
 * HR_EPROTO otherwise.
 */
HR__HIDDEN int hr__ws_response(const uint8_t *p, size_t n, const char *accept, size_t *used);

/** Appends one final, masked frame with `opcode`. HR_OK or HR_ENOMEM. */
HR__HIDDEN int hr__ws_encode(hr_buf_t *out, int opcode, const void *data, size_t n, uint32_t mask);

/**
 * Parses the frame at the start of `p`: HR_OK with `*f` and `*used`,
 * HR_EAGAIN if incomplete, HR_ETOOBIG over `max` bytes, HR_EPROTO for
 * reserved bits or a malformed control frame.
 */
HR__HIDDEN int hr__ws_frame_next(uint8_t *p, size_t n, uint64_t max, hr__ws_frame_t *f,
                                 size_t *used);

#endif
