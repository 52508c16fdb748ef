/* SPDX-License-Identifier: MIT */
/* Raw-socket helpers for integration tests: blocking loopback sockets, frames in and out. */
#ifndef HERALD_TEST_RAW_H
#define HERALD_TEST_RAW_H

#include "herald/protocol.h"

typedef struct hr_raw_s {
    int fd;
    hr_buf_t in;   /* bytes received, not yet consumed */
    hr_buf_t body; /* body of the last frame returned */
    hr_frame_t f;  /* the last frame returned (slices into body) */
} hr_raw_t;

/** Connects to 127.0.0.1:port. 0 or -1. */
int hr_raw_connect(hr_raw_t *r, int port);
void hr_raw_close(hr_raw_t *r);
/** Sends raw bytes. 0 or -1. */
int hr_raw_send(hr_raw_t *r, const void *p, size_t n);
/** Sends the body in `b` with a length prefix, then resets `b`. */
int hr_raw_send_body(hr_raw_t *r, hr_buf_t *b);
/** HELLO + WELCOME. 0 or -1. */
int hr_raw_hello(hr_raw_t *r, int echo);
/** Waits up to timeout_ms for the next frame (decoded into r->f). 0, or -1 on EOF/timeout/bad
 * frame. */
int hr_raw_next(hr_raw_t *r, int timeout_ms);
/** Like hr_raw_next but skips server PINGs (answering none). */
int hr_raw_next_nonping(hr_raw_t *r, int timeout_ms);
/** 1 if the peer closed the connection within timeout_ms (input is discarded), else 0. */
int hr_raw_eof(hr_raw_t *r, int timeout_ms);
/** Round trip: PING id, wait for PONG id (skipping other frames into nothing). 0 or -1. */
int hr_raw_sync(hr_raw_t *r, uint64_t id);

#endif
