/* SPDX-License-Identifier: MIT */
/* The WebSocket transport: HTTP upgrade, /healthz and /metrics, RFC 6455 frames through wslay. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <http_parser.h>
#include <wslay/wslay.h>

#include "http.h"
#include "log.h"
#include "server.h"
#include "ws.h"

enum ws_state { WS_HTTP = 0, WS_OPEN };

/* An open connection idle this long gives its wslay context (~8 KiB) back. */
#define WS_RELEASE_MS 1000
/* Contexts given back in one sweep that make it worth returning memory to the system. */
#define WS_TRIM_MIN 64
/* Reads a second past which a connection keeps its context between reads. */
#define WS_KEEP_READS 4
/* The largest message before HELLO (which is small), as on TCP. */
#define WS_FIRST_MAX (64 * 1024)

/*
 * Per-connection state (conn->tdata). Before the upgrade only `head` is
 * used; after it, wslay parses the input and produces the control frames,
 * which are staged in `ctl` during one receive and then either queued
 * as-is (pong, close echo) or replaced by Herald's own close (see pump()).
 * Data frames from the broker never pass through wslay: they are framed
 * once per message and shared (hr_msg_delivery_header()).
 */
typedef struct ws_s {
    wslay_event_context_ptr ctx; /* after the upgrade */
    hr_buf_t head;               /* request head bytes, until the upgrade */
    hr_buf_t msg;                /* a message reassembled from fragments or chunks */
    hr_buf_t ctl;                /* wslay's output during one pump() */
    const char *feed;            /* input wslay reads from, during one pump() */
    size_t nfeed;
    uint64_t frame_len;   /* payload length of the frame being received */
    uint64_t fed;         /* bytes given to the current wslay context */
    uint64_t framed;      /* bytes of the frames it has started (header + payload) */
    uint16_t fail_close;  /* close code decided in a callback (1002, 1003, 1009) */
    const char *fail_why; /* its reason when not the code's usual one (static) */
    uint16_t close_code;  /* close code for on_closing(); 0: from the ERR code */
    uint8_t state;        /* enum ws_state */
    uint8_t op;           /* opcode of the frame being received */
    uint8_t fin;          /* its fin bit */
    uint8_t in_msg;       /* a data message is being received */
    uint8_t dispatched;   /* the current message went out without a copy */
    uint8_t responded;    /* an HTTP response was queued (before the upgrade) */
    uint8_t close_sent;   /* a close frame was queued */
    uint8_t clean;        /* wslay holds no partial frame, open message or output */
    uint8_t reads;        /* reads given to wslay in the second from `reads_at` */
    uint64_t reads_at;    /* ms */
} ws_t;

static ws_t *ws_get(hr_conn_t *c)
{
    if (!c->tdata)
        c->tdata = calloc(1, sizeof(ws_t));
    return c->tdata;
}

/* ---- HTTP ----------------------------------------------------------------------- */

/* Queues a complete HTTP response; the connection closes once it is written. */
static void http_reply(hr_conn_t *c, ws_t *w, int status, const char *extra, const char *ctype,
                       const char *body, size_t blen)
{
    hr_buf_t b;
    hr_buf_init(&b);
    w->responded = 1;
    hr__http_count(&c->srv->stats, status);
    if (hr__http_response(&b, status, extra, ctype, body, blen) == HR_OK)
        hr__conn_send_raw(c, b.base, b.len);
    hr_buf_destroy(&b);
}

static void http_error(hr_conn_t *c, ws_t *w, int status, const char *extra, const char *why)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, hr__http_reason(status), why);
    HR_LOG(HR_LOG_DEBUG, c->id, "HTTP %d: %s", status, why);
    http_reply(c, w, status, extra, "text/plain; charset=utf-8", body, (size_t)n);
    hr__conn_fail(c, HR_OK, why);
}

static int origin_allowed(const hr_server_t *s, hr_slice_t origin)
{
    const char *list = s->cfg.ws_origins;
    if (!*list || !origin.p)
        return 1; /* no list, or not a browser (browsers always send Origin) */
    hr_slice_t l = {list, strlen(list)};
    return hr__http_has_token(l, "*") || hr__http_list_has(l, origin);
}

static void ws_open(hr_conn_t *c, ws_t *w, const hr_http_req_t *rq, const char *rest, size_t n);

/*
 * Answers one complete request head. WebSocket upgrades are checked in
 * the order a client can fix them: method (405), path (404), upgrade
 * headers (426), key (400), version (426), Origin (403), subprotocol (400).
 */
static void http_request(hr_conn_t *c, ws_t *w, const char *p, size_t hl, size_t n)
{
    hr_server_t *s = c->srv;
    hr_http_req_t rq;
    s->stats.http_requests++;
    if (hr__http_parse(&rq, p, hl) != HR_OK) {
        http_error(c, w, 400, NULL, "malformed HTTP request");
        return;
    }
    HR_LOG(HR_LOG_DEBUG, c->id, "HTTP %s %.*s", http_method_str(rq.method), (int)rq.path.n,
           rq.path.p);
    if (rq.method != HTTP_GET) {
        http_error(c, w, 405, "Allow: GET\r\n", "only GET is served here");
        return;
    }
    if (rq.path.n == 8 && !memcmp(rq.path.p, "/healthz", 8)) {
        hr_buf_t b;
        hr_buf_init(&b);
        int st = hr__http_health(s, &b);
        http_reply(c, w, st, st == 503 ? "Retry-After: 1\r\n" : NULL, "text/plain; charset=utf-8",
                   (const char *)b.base, b.len);
        hr_buf_destroy(&b);
        hr__conn_fail(c, HR_OK, "HTTP request served");
        return;
    }
    if (rq.path.n == 8 && !memcmp(rq.path.p, "/metrics", 8)) {
        hr_buf_t b;
        hr_buf_init(&b);
        if (hr__http_metrics(s, &b) == HR_OK)
            http_reply(c, w, 200, NULL, "text/plain; version=0.0.4; charset=utf-8",
                       (const char *)b.base, b.len);
        else
            http_reply(c, w, 500, NULL, "text/plain", "out of memory\n", 14);
        hr_buf_destroy(&b);
        hr__conn_fail(c, HR_OK, "HTTP request served");
        return;
    }
    const hr_http_asset_t *asset = hr__http_asset(rq.path, s->cfg.demo != 0);
    if (asset) { /* herald.js may be imported by pages of any origin */
        http_reply(c, w, 200, "Access-Control-Allow-Origin: *\r\n", asset->ctype,
                   (const char *)asset->data, asset->len);
        hr__conn_fail(c, HR_OK, "HTTP request served");
        return;
    }
    if (rq.path.n != 1 || rq.path.p[0] != '/') {
        http_error(c, w, 404, NULL, "the WebSocket endpoint is /");
        return;
    }
    if (!hr__http_has_token(rq.upgrade, "websocket") ||
        !hr__http_has_token(rq.connection, "upgrade") || rq.major != 1 || rq.minor < 1) {
        http_error(c, w, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                   "a WebSocket upgrade (HTTP/1.1, Upgrade: websocket) is required");
        return;
    }
    if (!rq.ws_key.p || rq.dup_key) {
        http_error(c, w, 400, NULL, "Sec-WebSocket-Key missing or repeated");
        return;
    }
    if (rq.ws_version.n != 2 || memcmp(rq.ws_version.p, "13", 2) != 0) {
        http_error(c, w, 426, "Sec-WebSocket-Version: 13\r\n",
                   "unsupported Sec-WebSocket-Version (13 is supported)");
        return;
    }
    if (rq.dup_origin) { /* which one would be the browser's? Refuse rather than guess. */
        http_error(c, w, 400, NULL, "more than one Origin header");
        return;
    }
    if (!origin_allowed(s, rq.origin)) {
        http_error(c, w, 403, NULL, "Origin not allowed");
        return;
    }
    if (rq.protocols && !rq.herald_v1) {
        http_error(c, w, 400, NULL, "unsupported subprotocol (herald.v1 is supported)");
        return;
    }
    ws_open(c, w, &rq, p + hl, n - hl);
}

/* ---- wslay callbacks ------------------------------------------------------------- */

static ssize_t cb_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    ws_t *w = ((hr_conn_t *)ud)->tdata;
    if (!w->nfeed) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->nfeed ? len : w->nfeed;
    memcpy(buf, w->feed, n);
    w->feed += n;
    w->nfeed -= n;
    return (ssize_t)n;
}

static ssize_t cb_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    ws_t *w = ((hr_conn_t *)ud)->tdata;
    if (hr_buf_append(&w->ctl, data, len) != HR_OK) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int cb_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    memset(buf, 0, len); /* a server never masks */
    return 0;
}

/* Stops wslay's receive loop after the current frame with a close code of our own. */
static void stop(ws_t *w, uint16_t code)
{
    if (!w->fail_close)
        w->fail_close = code;
    wslay_event_shutdown_read(w->ctx);
}

/*
 * Queues wslay's staged output (pongs, a close echo). A client that sends
 * pings without reading the pongs is paused like a slow subscriber: no
 * more input until its output drains (conn.c resumes it).
 */
static void queue_ctl(hr_conn_t *c, ws_t *w)
{
    if (!w->ctl.len)
        return;
    hr__conn_send_raw(c, w->ctl.base, w->ctl.len);
    hr_buf_reset(&w->ctl);
    if (hr__oq_charge(&c->out) > (size_t)c->srv->cfg.out_soft / 2 && !(c->flags & HR_C_PAUSED)) {
        c->flags |= HR_C_PAUSED;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/*
 * Queues what wslay produced so far (pongs) before a message is
 * dispatched, so the answers leave in the order the frames came.
 */
static void flush_ctl(hr_conn_t *c, ws_t *w)
{
    if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) == 0 &&
        !wslay_event_get_close_sent(w->ctx))
        queue_ctl(c, w);
}

static void cb_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a, void *ud)
{
    hr_conn_t *c = ud;
    ws_t *w = c->tdata;
    hr_server_t *s = c->srv;
    w->op = a->opcode;
    w->fin = a->fin;
    w->frame_len = a->payload_length;
    /* wslay refuses non-minimal lengths and (here) unmasked frames, so the
     * header size follows from the payload length. */
    w->framed += 2 + 4 +
                 (a->payload_length < 126     ? 0
                  : a->payload_length < 65536 ? 2
                                              : 8) +
                 a->payload_length;
    if (c->flags & HR_C_HELLO) { /* any frame answers the heartbeat (not the HELLO timeout) */
        c->idle_since = hr__now_ms(s);
        c->pings = 0;
    }
    switch (a->opcode) {
    case WSLAY_TEXT_FRAME:
        stop(w, 1003); /* Herald frames are binary messages only */
        return;
    case WSLAY_CONNECTION_CLOSE:
        if (a->payload_length == 1)
            stop(w, 1002); /* wslay would take a 1-byte close as "no status" */
        return;
    case WSLAY_BINARY_FRAME:
        hr_buf_reset(&w->msg);
        w->in_msg = 1;
        w->dispatched = 0;
        break;
    case WSLAY_CONTINUATION_FRAME:
        break;
    default:
        return; /* ping, pong: wslay buffers them and answers pings */
    }
    /* With no_buffering wslay checks max_recv_msg_length per frame only, so
     * the total of a fragmented message is checked here. */
    if (w->msg.len + a->payload_length > s->max_frame) {
        stop(w, 1009);
    } else if (!(c->flags & HR_C_HELLO) && w->msg.len + a->payload_length > WS_FIRST_MAX) {
        w->fail_why = "message before HELLO larger than 64 KiB: the first message must be HELLO";
        stop(w, 1009);
    }
}

static void cb_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *a, void *ud)
{
    hr_conn_t *c = ud;
    ws_t *w = c->tdata;
    if (w->fail_close || (c->flags & HR_C_CLOSING) || !w->in_msg ||
        (w->op != WSLAY_BINARY_FRAME && w->op != WSLAY_CONTINUATION_FRAME))
        return;
    if (w->op == WSLAY_BINARY_FRAME && w->fin && a->data_length == w->frame_len) {
        /* The whole message in one chunk: hand wslay's (unmasked) bytes over as they are. */
        w->dispatched = 1;
        flush_ctl(c, w);
        hr__dispatch_frame(c, (const char *)a->data, a->data_length);
        return;
    }
    if (hr_buf_append(&w->msg, a->data, a->data_length) != HR_OK)
        stop(w, 1009);
}

static void cb_frame_end(wslay_event_context_ptr ctx, void *ud)
{
    hr_conn_t *c = ud;
    ws_t *w = c->tdata;
    if (w->fail_close || !w->in_msg || !w->fin ||
        (w->op != WSLAY_BINARY_FRAME && w->op != WSLAY_CONTINUATION_FRAME))
        return;
    w->in_msg = 0;
    if (!w->dispatched && !(c->flags & HR_C_CLOSING)) {
        flush_ctl(c, w);
        hr__dispatch_frame(c, (const char *)w->msg.base, w->msg.len);
    }
    hr_buf_destroy(&w->msg); /* an idle connection keeps no message buffer */
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = cb_recv,
    .send_callback = cb_send,
    .genmask_callback = cb_genmask,
    .on_frame_recv_start_callback = cb_frame_start,
    .on_frame_recv_chunk_callback = cb_frame_chunk,
    .on_frame_recv_end_callback = cb_frame_end,
};

/* ---- frames ---------------------------------------------------------------------- */

/*
 * Creates the wslay context when bytes arrive on an open connection that
 * has none (none is made at the upgrade: most connections read a frame or
 * two and go quiet, see pump()). No buffering:
 * data frames reach the chunk callback straight from wslay's read buffer;
 * the size limit is max_frame (docs/protocol.md), and no extension is
 * negotiated, so every reserved bit must be 0.
 */
static int ws_ctx(hr_conn_t *c, ws_t *w)
{
    if (wslay_event_context_server_init(&w->ctx, &callbacks, c) != 0) {
        w->ctx = NULL;
        return HR_ENOMEM;
    }
    wslay_event_config_set_no_buffering(w->ctx, 1);
    wslay_event_config_set_max_recv_msg_length(w->ctx, c->srv->max_frame);
    wslay_event_config_set_allowed_rsv_bits(w->ctx, 0);
    w->fed = w->framed = 0;
    return HR_OK;
}

/*
 * Gives an idle connection's wslay context back (its buffers are most of
 * what an idle WebSocket connection costs). Only between frames: `clean`
 * says every byte fed so far belonged to complete frames, no fragmented
 * message is open and nothing waits to be sent.
 */
static void ws_release(ws_t *w)
{
    if (!w->ctx || !w->clean)
        return;
    wslay_event_context_free(w->ctx);
    w->ctx = NULL;
    hr_buf_destroy(&w->ctl);
}

static int close_to_err(uint16_t code)
{
    return code == 1009 ? HR_ETOOBIG : HR_EPROTO;
}

static const char *close_reason(uint16_t code)
{
    switch (code) {
    case 1003:
        return "text messages are not accepted: send binary messages";
    case 1007:
        return "invalid UTF-8 in a close reason";
    case 1009:
        return "WebSocket message larger than max_frame";
    default:
        return "WebSocket protocol error";
    }
}

/* Closes with ERR then a close frame with `code`, discarding wslay's staged output. */
static void ws_fail(hr_conn_t *c, ws_t *w, uint16_t code)
{
    hr_buf_reset(&w->ctl);
    w->close_code = code;
    hr__conn_fail(c, close_to_err(code), w->fail_why ? w->fail_why : close_reason(code));
}

/*
 * Runs wslay over `p[0..n)`: frames are dispatched from the callbacks,
 * then wslay's answers are sent. wslay 1.1.1 queues a close without a
 * status code on frame-level errors (a fragmented or oversized control
 * frame, a 64-bit length with the top bit set) and treats a 1-byte close
 * payload as "no status"; both are protocol errors (1002) here, and every
 * close Herald initiates carries the ERR frame before it, so wslay's own
 * close frames are only kept when they echo the peer's close.
 */
static void pump(hr_conn_t *c, ws_t *w, const char *p, size_t n)
{
    if (!w->ctx && ws_ctx(c, w) != HR_OK) {
        hr__conn_close_now(c);
        return;
    }
    w->clean = 0;
    w->fed += n;
    w->feed = p;
    w->nfeed = n;
    hr_buf_reset(&w->ctl);
    int r = wslay_event_recv(w->ctx);
    w->feed = NULL;
    w->nfeed = 0;
    if (c->flags & HR_C_CLOSING)
        return; /* a frame closed the connection; on_closing() said goodbye */
    if (w->fail_close) {
        ws_fail(c, w, w->fail_close);
        return;
    }
    if (r == WSLAY_ERR_NOMEM) {
        hr__conn_close_now(c);
        return;
    }
    if (r != 0) {
        ws_fail(c, w, 1002); /* wslay_frame_recv() refused a frame header */
        return;
    }
    if (wslay_event_send(w->ctx) != 0) {
        hr__conn_close_now(c);
        return;
    }
    if (wslay_event_get_close_sent(w->ctx)) {
        if (!wslay_event_get_close_received(w->ctx)) {
            ws_fail(c, w, wslay_event_get_status_code_sent(w->ctx));
            return;
        }
        queue_ctl(c, w); /* pongs, then the echo of their close */
        w->close_sent = 1;
        hr__conn_fail(c, HR_OK, "the client closed the WebSocket");
        return;
    }
    queue_ctl(c, w);
    if (w->ctl.cap > 256)
        hr_buf_destroy(&w->ctl);
    w->clean = w->fed == w->framed && !w->in_msg && !wslay_event_want_write(w->ctx);
    /* A connection that reads now and then (HELLO, SUB, then silence: most
     * WebSocket clients) gives its context back at once, so that a burst of
     * such clients reuses one context's memory instead of leaving thousands
     * of freed contexts between the allocations that stay. A busy one keeps
     * it until it has been idle for WS_RELEASE_MS (the sweep). */
    uint64_t now = hr__now_ms(c->srv);
    if (now - w->reads_at >= 1000) {
        w->reads_at = now;
        w->reads = 0;
    }
    if (w->reads < WS_KEEP_READS)
        w->reads++;
    if (w->reads < WS_KEEP_READS)
        ws_release(w);
}

/* Completes the upgrade: 101, then wslay takes the bytes that followed the head. */
static void ws_open(hr_conn_t *c, ws_t *w, const hr_http_req_t *rq, const char *rest, size_t n)
{
    hr_server_t *s = c->srv;
    char accept[29], hdr[256];
    if (hr__http_ws_accept(rq->ws_key, accept) != HR_OK) {
        http_error(c, w, 400, NULL, "Sec-WebSocket-Key is not 16 bytes in base64");
        return;
    }
    int k = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
                     accept, rq->herald_v1 ? "Sec-WebSocket-Protocol: herald.v1\r\n" : "");
    assert(k > 0 && (size_t)k < sizeof(hdr));
    hr__http_count(&s->stats, 101);
    hr__conn_send_raw(c, hdr, (size_t)k);
    w->state = WS_OPEN;
    hr__conn_protocol(c); /* HELLO timeout and heartbeats start now */
    c->idle_since = hr__now_ms(s);
    HR_LOG(HR_LOG_DEBUG, c->id, "WebSocket open%s", rq->herald_v1 ? " (herald.v1)" : "");
    if (n)
        pump(c, w, rest, n); /* frames that came in the same read as the head */
}

/* ---- the transport ----------------------------------------------------------------- */

/*
 * A Herald client speaking the length-prefixed TCP protocol reached this
 * port: its first byte is the top byte of a length, 0, which no HTTP
 * request starts with. It gets an answer naming the TCP port rather than
 * a generic parse error.
 */
static void wrong_port(hr_conn_t *c, ws_t *w)
{
    char why[160];
    int port = hr__server_port(c->srv, HR_T_TCP);
    if (port)
        snprintf(why, sizeof(why),
                 "this is Herald's WebSocket/HTTP port; the length-prefixed TCP protocol is on "
                 "port %d",
                 port);
    else
        snprintf(why, sizeof(why), "this is Herald's WebSocket/HTTP port, not its TCP port");
    http_error(c, w, 400, NULL, why);
}

static void ws_on_data(hr_conn_t *c, const char *p, size_t n)
{
    ws_t *w = ws_get(c);
    if (!w) {
        hr__conn_close_now(c);
        return;
    }
    if (w->state == WS_OPEN) {
        pump(c, w, p, n);
        return;
    }
    if (!w->head.len && n && p[0] == 0) {
        wrong_port(c, w);
        return;
    }
    size_t max = (size_t)c->srv->cfg.ws_max_header;
    size_t had = w->head.len;
    if (hr_buf_append(&w->head, p, n) != HR_OK) {
        hr__conn_close_now(c);
        return;
    }
    /* A request line starts with a method (upper-case letters). Anything else,
     * such as a Herald TCP frame's length prefix, is answered at once rather
     * than after ws-handshake-ms, so a TCP client dialled here fails fast. */
    if (had == 0 && w->head.len && (w->head.base[0] < 'A' || w->head.base[0] > 'Z')) {
        http_error(c, w, 400, NULL, "not an HTTP request: this is the WebSocket/HTTP port");
        return;
    }
    /* Rescan from just before the new bytes: the empty line may straddle reads. */
    size_t from = had > 3 ? had - 3 : 0;
    size_t hl = hr__http_head_end((const char *)w->head.base + from, w->head.len - from);
    if (hl)
        hl += from;
    if ((!hl && w->head.len > max) || hl > max) {
        http_error(c, w, 431, NULL, "request head larger than ws-max-header");
        return;
    }
    if (!hl)
        return;
    hr_buf_t head = w->head; /* pump() may run inside: keep the bytes until it returns */
    hr_buf_init(&w->head);
    http_request(c, w, (const char *)head.base, hl, head.len);
    hr_buf_destroy(&head);
}

static void put_close(hr_conn_t *c, ws_t *w, uint16_t code)
{
    uint8_t f[4];
    hr_ws_frame_header(f, WSLAY_CONNECTION_CLOSE, 2);
    f[2] = (uint8_t)(code >> 8);
    f[3] = (uint8_t)code;
    hr__conn_send_raw(c, f, sizeof(f));
    w->close_sent = 1;
}

/*
 * The broker closes the connection after ERR `code` (already queued as a
 * binary message once the upgrade is done). Before the upgrade the
 * goodbye is an HTTP error response; after it, a close frame whose code
 * follows the ERR (docs/protocol.md), unless a WebSocket-level error chose one.
 */
static void ws_on_closing(hr_conn_t *c, int status)
{
    ws_t *w = ws_get(c);
    if (!w)
        return;
    if (w->state == WS_HTTP) {
        if (!w->responded) {
            const char *why = status == HR_ELIMIT      ? "connection limit reached"
                              : status == HR_ESHUTDOWN ? "server shutting down"
                                                       : "closing";
            char body[80];
            int n = snprintf(body, sizeof(body), "503 Service Unavailable: %s\n", why);
            http_reply(c, w, 503, "Retry-After: 1\r\n", "text/plain; charset=utf-8", body,
                       (size_t)n);
        }
        return;
    }
    if (w->ctx)
        wslay_event_shutdown_read(w->ctx); /* we may be inside wslay_event_recv() */
    if (w->close_sent)
        return;
    uint16_t cc = w->close_code;
    if (!cc) {
        switch (status) {
        case HR_OK:
            cc = 1000;
            break;
        case HR_EPROTO:
            cc = 1002;
            break;
        case HR_ETOOBIG:
            cc = 1009;
            break;
        case HR_ESHUTDOWN:
        case HR_EHEARTBEAT:
            cc = 1001;
            break;
        default: /* HR_EAUTH, HR_ESLOW, HR_ELIMIT */
            cc = 1008;
            break;
        }
    }
    put_close(c, w, cc);
}

/*
 * Contexts given back since the last trim, and the sweep (its time) that
 * gave back the last of them. After a burst of upgrades thousands of
 * contexts are freed in one sweep; they lie between allocations that stay
 * (connections, subscriptions), so malloc keeps their pages and the burst
 * would cost ~10 KB per idle connection for good. Once such a sweep is over
 * (the next one starts), the free pages go back to the system.
 */
static size_t released;
static uint64_t released_at;

static void trim_after_release(uint64_t now)
{
    if (released < WS_TRIM_MIN || now == released_at)
        return;
    released = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static int ws_on_sweep(hr_conn_t *c, uint64_t now)
{
    ws_t *w = c->tdata;
    trim_after_release(now);
    if (w && w->state == WS_OPEN) {
        if (w->ctx && w->clean && now - c->idle_since >= WS_RELEASE_MS) {
            ws_release(w);
            released++;
            released_at = now;
        }
        return 0;
    }
    /* Before the upgrade idle_since is still the accept time. */
    if (now - c->idle_since < (uint64_t)c->srv->cfg.ws_handshake_ms)
        return 0;
    if (!(w = ws_get(c))) {
        hr__conn_close_now(c);
        return 1;
    }
    http_error(c, w, 408, NULL, "handshake not completed within ws-handshake-ms");
    return 1;
}

static void ws_on_free(hr_conn_t *c)
{
    ws_t *w = c->tdata;
    if (!w)
        return;
    if (w->ctx)
        wslay_event_context_free(w->ctx);
    hr_buf_destroy(&w->head);
    hr_buf_destroy(&w->msg);
    hr_buf_destroy(&w->ctl);
    free(w);
    c->tdata = NULL;
}

const hr_transport_t hr__websocket_transport = {
    .name = "ws",
    .kind = HR_T_WS,
    .framing = HR_FRAMING_WS,
    .on_data = ws_on_data,
    .on_closing = ws_on_closing,
    .on_free = ws_on_free,
    .on_sweep = ws_on_sweep,
};
