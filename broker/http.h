/* SPDX-License-Identifier: MIT */
/* The HTTP surface of the WebSocket port: request heads, responses, /healthz and /metrics. */
#ifndef HERALD_BROKER_HTTP_H
#define HERALD_BROKER_HTTP_H

#include <stddef.h>

#include "herald/protocol.h"

struct hr_server_s;
struct hr_stats_s;

/*
 * A parsed request head. Every slice points into the bytes given to
 * hr__http_parse() and is valid as long as they are; an absent header is
 * an empty slice with p == NULL.
 */
typedef struct hr_http_req_s {
    unsigned method;       /* enum http_method */
    unsigned major, minor; /* HTTP version */
    hr_slice_t path;       /* the path of the target, without query */
    hr_slice_t upgrade;    /* Upgrade */
    hr_slice_t connection; /* Connection */
    hr_slice_t ws_key;     /* Sec-WebSocket-Key */
    hr_slice_t ws_version; /* Sec-WebSocket-Version */
    hr_slice_t origin;     /* Origin */
    unsigned dup_key;      /* Sec-WebSocket-Key appeared more than once */
    unsigned dup_origin;   /* Origin appeared more than once */
    unsigned protocols;    /* Sec-WebSocket-Protocol headers seen */
    unsigned herald_v1;    /* one of them offered herald.v1 */
} hr_http_req_t;

/**
 * Finds the end of a request head (the empty line) in `p[0..n)`. Returns
 * its length including the empty line, or 0 when the head is incomplete.
 */
size_t hr__http_head_end(const char *p, size_t n);

/**
 * Parses the complete request head `p[0..n)` (n from hr__http_head_end())
 * with http_parser. Returns HR_OK or HR_EPROTO for a malformed request.
 */
int hr__http_parse(hr_http_req_t *r, const char *p, size_t n);

/** True when the comma-separated list `list` contains `tok` (ASCII case-insensitive). */
int hr__http_list_has(hr_slice_t list, hr_slice_t tok);
/** hr__http_list_has() for a NUL-terminated token. */
int hr__http_has_token(hr_slice_t list, const char *tok);

/** Computes Sec-WebSocket-Accept for `key` into out (28 chars + NUL). HR_OK or HR_EPROTO. */
int hr__http_ws_accept(hr_slice_t key, char out[29]);

/**
 * Appends a complete response (status line, Content-Type, Content-Length,
 * Connection: close, `extra` header lines ending in CRLF or NULL, body) to `b`.
 */
int hr__http_response(hr_buf_t *b, int status, const char *extra, const char *ctype,
                      const char *body, size_t blen);

/** Counts one response with `status` in s->stats (for /metrics). */
void hr__http_count(struct hr_stats_s *st, int status);

/**
 * Appends the Prometheus text exposition of the broker's metrics to `b`: this worker's
 * alone, or in a cluster the whole broker's and each worker's (see docs/architecture.md).
 */
int hr__http_metrics(const struct hr_server_s *s, hr_buf_t *b);

/** A file served over HTTP, embedded at build time (broker/embed.cmake). */
typedef struct hr_http_asset_s {
    const char *path;          /* request path, e.g. "/herald.js" */
    const char *ctype;         /* Content-Type */
    const unsigned char *data; /* the bytes, static */
    size_t len;
    unsigned demo; /* served only with the `demo` setting */
} hr_http_asset_t;

/** The embedded files, ending with an entry whose path is NULL (generated assets.c). */
extern const hr_http_asset_t hr__http_assets[];

/**
 * The embedded file served at `path`, or NULL: the demo page only when
 * `demo` is set, herald.js always.
 */
const hr_http_asset_t *hr__http_asset(hr_slice_t path, int demo);

/**
 * Appends the body of a /healthz answer to `b` and returns its status: 503 while the broker
 * shuts down, else 200 ("ok", and in a cluster how many workers are up).
 */
int hr__http_health(const struct hr_server_s *s, hr_buf_t *b);

/** The reason phrase of an HTTP status this module sends. */
const char *hr__http_reason(int status);

#endif
