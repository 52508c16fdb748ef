/* SPDX-License-Identifier: MIT */
/* Publish pipelines: stages every PUB to a matching topic goes through before it is sequenced. */
#ifndef HERALD_BROKER_PIPELINE_H
#define HERALD_BROKER_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/protocol.h"
#include "router.h"

struct hr_server_s;
struct hr_conn_s;

/*
 * The `pipeline` setting maps topic patterns to chains of stages
 * ("chat.>=exec:/usr/bin/moderate --strict|exec:/usr/bin/enrich"; first
 * match wins). Each chain is a stream (stage.h): the PUB is copied once into
 * an item, flows through the `exec` stages, and ends in the sequencer, which
 * hands it to the router as an ordinary publish. Its ACK (or ERR 13 when a
 * stage rejected it) goes out only then, in the connection's answer order.
 *
 * An `exec` stage is a long-running child process speaking length-prefixed
 * msgpack on its stdin and stdout (docs/transforms.md). Each worker runs its
 * own children. A stage holds at most `pipeline-inflight` messages; a
 * publisher writing into a full one has its socket paused until it drains.
 */

/* ---- the exec stage's wire (pipe_wire.c: pure, fuzzed) ---------------------------- */

enum hr_pipe_action { HR_PIPE_PASS, HR_PIPE_REJECT };

#define HR_PIPE_REASON_MAX 256  /* bytes of a rejection reason kept */
#define HR_PIPE_HEADERS_MAX 64  /* entries in a rewritten headers map */
#define HR_PIPE_HEADER_MAX 4096 /* bytes of one header key or value */

/* A child's answer about one message; slices point into the frame. */
typedef struct hr_pipe_answer_s {
    uint64_t id;
    int action; /* HR_PIPE_* */
    int has_payload, has_headers;
    hr_slice_t payload; /* the rewritten payload */
    hr_slice_t headers; /* the rewritten headers, a raw msgpack map<str,str>; n == 0: none */
    hr_slice_t reason;  /* reject: why, shown to the publisher (may be empty) */
} hr_pipe_answer_t;

/**
 * Decodes one answer frame body (without its length prefix): a msgpack map
 * {id: uint, action: "pass" | "reject", payload?: bin, headers?: map<str,str>
 * | nil, reason?: str}; other keys are ignored. Strict: HR_OK, or HR_EPROTO
 * with `*why` naming the problem. Never allocates.
 */
int hr__pipe_answer_decode(const void *p, size_t n, hr_pipe_answer_t *a, const char **why);

/**
 * Appends one request frame, length prefix included: {id, topic, payload,
 * client, reply?, headers?}. HR_OK or HR_ENOMEM (`b` unchanged).
 */
int hr__pipe_request_encode(hr_buf_t *b, uint64_t id, const hr_pub_cmd_t *p, uint64_t client);

/* ---- the pipelines of a worker (pipeline.c) ---------------------------------------- */

typedef struct hr_pipeline_s hr_pipeline_t;

/** A pipelined publish finished: like hr_router_done_cb, with the reason of a rejection. */
typedef void (*hr_pipe_done_cb)(void *arg, int status, uint64_t seq, const char *why);

/** Reads the pipeline settings and starts the children. HR_OK or HR_EINVAL (printed). */
int hr__pipeline_init(struct hr_server_s *s);
/** Starts the children (failures are logged and retried); after the loop's handles are set up. */
void hr__pipeline_start(struct hr_server_s *s);
/** Stops the children and answers what is in flight (the loop is stopping). */
void hr__pipeline_close(struct hr_server_s *s);
/** Frees what is left once the loop has closed every handle. */
void hr__pipeline_destroy(struct hr_server_s *s);

/** The pipeline for `topic`, or NULL (most topics: the PUB goes straight to the router). */
hr_pipeline_t *hr__pipeline_find(struct hr_server_s *s, hr_slice_t topic);

/**
 * Sends a PUB through `pl`: copies it, and calls `done` exactly once, after
 * the router sequenced it (or with HR_EREJECTED and a reason). `c` is the
 * publishing connection, paused while the pipeline is full. Returns HR_OK,
 * or HR_ENOMEM (no callback).
 */
int hr__pipeline_publish(hr_pipeline_t *pl, struct hr_conn_s *c, const hr_pub_cmd_t *p, int no_echo,
                         hr_pipe_done_cb done, void *arg);

/** Counters for /metrics, summed over the worker's exec stages. */
typedef struct hr_pipe_stats_s {
    uint64_t passed, rewritten, rejected, failed, timeouts, restarts, late, inflight;
} hr_pipe_stats_t;
void hr__pipeline_stats(struct hr_server_s *s, hr_pipe_stats_t *st);

#endif
