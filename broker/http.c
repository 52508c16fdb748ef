/* SPDX-License-Identifier: MIT */
/* The HTTP surface of the WebSocket port: request heads (http_parser), responses, metrics. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "http.h"
#include "server.h"
#include "stats.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- request heads ------------------------------------------------------------ */

size_t hr__http_head_end(const char *p, size_t n)
{
    /* The head ends at the first empty line; http_parser accepts bare LF too. */
    for (size_t i = 1; i < n; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i - 1] == '\n')
            return i + 1;
        if (i >= 2 && p[i - 1] == '\r' && p[i - 2] == '\n')
            return i + 1;
    }
    return 0;
}

typedef struct parse_s {
    hr_http_req_t *r;
    hr_slice_t url;
    hr_slice_t field;
    hr_slice_t *value;      /* where the current header's value goes, NULL: ignored */
    hr_slice_t proto_value; /* the current Sec-WebSocket-Protocol value */
    int proto;              /* the current header is Sec-WebSocket-Protocol */
    int done;
} parse_t;

static int slice_ieq(hr_slice_t s, hr_slice_t t)
{
    if (s.n != t.n)
        return 0;
    for (size_t i = 0; i < s.n; i++) {
        char a = s.p[i], b = t.p[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (char)(b - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

#define IEQ(s, lit) slice_ieq((s), (hr_slice_t){(lit), sizeof(lit) - 1})

static int on_url(http_parser *hp, const char *at, size_t len)
{
    parse_t *ps = hp->data;
    if (!ps->url.p)
        ps->url.p = at;
    ps->url.n = (size_t)(at + len - ps->url.p);
    return 0;
}

static void end_value(parse_t *ps)
{
    if (ps->proto && ps->value) {
        ps->r->protocols++;
        if (hr__http_has_token(*ps->value, "herald.v1"))
            ps->r->herald_v1 = 1;
    }
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    parse_t *ps = hp->data;
    hr_http_req_t *r = ps->r;
    if (ps->field.p && ps->field.p + ps->field.n == at) { /* the same name, continued */
        ps->field.n += len;
    } else {
        end_value(ps);
        ps->field = (hr_slice_t){at, len};
    }
    ps->value = NULL;
    ps->proto = 0;
    if (IEQ(ps->field, "upgrade"))
        ps->value = &r->upgrade;
    else if (IEQ(ps->field, "connection"))
        ps->value = &r->connection;
    else if (IEQ(ps->field, "sec-websocket-key"))
        ps->value = &r->ws_key;
    else if (IEQ(ps->field, "sec-websocket-version"))
        ps->value = &r->ws_version;
    else if (IEQ(ps->field, "origin"))
        ps->value = &r->origin;
    else if (IEQ(ps->field, "sec-websocket-protocol")) {
        ps->value = &ps->proto_value;
        ps->proto = 1;
    }
    if (ps->value == &r->ws_key && r->ws_key.p)
        r->dup_key = 1;
    if (ps->value == &r->origin && r->origin.p)
        r->dup_origin = 1;
    if (ps->value)
        *ps->value = (hr_slice_t){NULL, 0};
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    parse_t *ps = hp->data;
    ps->field = (hr_slice_t){NULL, 0}; /* a following name starts a new header */
    if (!ps->value)
        return 0;
    if (!ps->value->p)
        ps->value->p = at;
    ps->value->n = (size_t)(at + len - ps->value->p);
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    parse_t *ps = hp->data;
    end_value(ps);
    ps->value = NULL;
    ps->done = 1;
    return 1; /* no body is read on this port */
}

int hr__http_parse(hr_http_req_t *r, const char *p, size_t n)
{
    http_parser hp;
    http_parser_settings st;
    parse_t ps;
    memset(r, 0, sizeof(*r));
    memset(&ps, 0, sizeof(ps));
    ps.r = r;
    http_parser_settings_init(&st);
    st.on_url = on_url;
    st.on_header_field = on_header_field;
    st.on_header_value = on_header_value;
    st.on_headers_complete = on_headers_complete;
    http_parser_init(&hp, HTTP_REQUEST);
    hp.data = &ps;
    http_parser_execute(&hp, &st, p, n);
    if (HTTP_PARSER_ERRNO(&hp) != HPE_OK || !ps.done || !ps.url.p)
        return HR_EPROTO;
    r->method = hp.method;
    r->major = hp.http_major;
    r->minor = hp.http_minor;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(ps.url.p, ps.url.n, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
        return HR_EPROTO;
    r->path = (hr_slice_t){ps.url.p + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len};
    return HR_OK;
}

int hr__http_list_has(hr_slice_t list, hr_slice_t tok)
{
    size_t i = 0;
    while (i < list.n) {
        while (i < list.n && (list.p[i] == ' ' || list.p[i] == '\t' || list.p[i] == ','))
            i++;
        size_t b = i;
        while (i < list.n && list.p[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (list.p[e - 1] == ' ' || list.p[e - 1] == '\t'))
            e--;
        if (e > b && slice_ieq((hr_slice_t){list.p + b, e - b}, tok))
            return 1;
    }
    return 0;
}

int hr__http_has_token(hr_slice_t list, const char *tok)
{
    return hr__http_list_has(list, (hr_slice_t){tok, strlen(tok)});
}

static int b64_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

int hr__http_ws_accept(hr_slice_t key, char out[29])
{
    /* RFC 6455 4.1: the key is 16 random bytes, base64: 22 characters and "==". */
    if (key.n != 24 || key.p[22] != '=' || key.p[23] != '=')
        return HR_EPROTO;
    for (size_t i = 0; i < 22; i++)
        if (!b64_char(key.p[i]))
            return HR_EPROTO;
    unsigned char in[24 + sizeof(WS_GUID) - 1], md[SHA_DIGEST_LENGTH];
    memcpy(in, key.p, 24);
    memcpy(in + 24, WS_GUID, sizeof(WS_GUID) - 1);
    SHA1(in, sizeof(in), md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH); /* 28 chars + NUL */
    return HR_OK;
}

/* ---- responses ---------------------------------------------------------------- */

const char *hr__http_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static int bprintf(hr_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bprintf(hr_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[512];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return HR_EINVAL;
    return hr_buf_append(b, tmp, (size_t)n);
}

int hr__http_response(hr_buf_t *b, int status, const char *extra, const char *ctype,
                      const char *body, size_t blen)
{
    int r = bprintf(b,
                    "HTTP/1.1 %d %s\r\nServer: herald/" HERALD_VERSION
                    "\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Cache-Control: no-store\r\nConnection: close\r\n",
                    status, hr__http_reason(status), ctype, blen);
    if (r == HR_OK && extra)
        r = hr_buf_append(b, extra, strlen(extra));
    if (r == HR_OK)
        r = hr_buf_append(b, "\r\n", 2);
    if (r == HR_OK && blen)
        r = hr_buf_append(b, body, blen);
    return r;
}

/* ---- embedded files ----------------------------------------------------------- */

const hr_http_asset_t *hr__http_asset(hr_slice_t path, int demo)
{
    for (const hr_http_asset_t *a = hr__http_assets; a->path; a++)
        if ((!a->demo || demo) && strlen(a->path) == path.n && !memcmp(a->path, path.p, path.n))
            return a;
    return NULL;
}

/* ---- metrics ------------------------------------------------------------------ */

/* The statuses counted in hr_stats_t.http_status, by index; the last slot is "other". */
static const int statuses[] = {101, 200, 400, 403, 404, 405, 408, 426, 431, 503, 500};

void hr__http_count(hr_stats_t *st, int status)
{
    size_t n = sizeof(statuses) / sizeof(statuses[0]), i = 0;
    while (i < n - 1 && statuses[i] != status)
        i++;
    _Static_assert(sizeof(statuses) / sizeof(statuses[0]) <=
                       sizeof(st->http_status) / sizeof(st->http_status[0]),
                   "hr_stats_t.http_status too small");
    st->http_status[i]++;
}

static const char *const err_names[] = {
    "",
    "protocol",
    "too_large",
    "auth",
    "not_permitted",
    "invalid_topic",
    "slow",
    "limit",
    "unknown_sid",
    "shutdown",
    "history_gap",
    "heartbeat",
    "invalid_option",
    "rejected",
};

/*
 * The metric families, in the order /metrics prints them. Each value is a uint64_t of
 * hr_wstats_t at `off` (then `off + 8`, ... for families with several label sets).
 */
enum labels { L_NONE, L_TRANSPORT, L_ACTION, L_STATUS, L_ERROR, L_OUTCOME };

enum fam_flags {
    M_GAUGE = 1u << 0,   /* per worker only while it serves (a counter stays when it is down) */
    M_SECONDS = 1u << 1, /* kept in ms, printed in seconds */
    M_ALWAYS = 1u << 2,  /* per worker for every worker, up or not */
};

typedef struct fam_s {
    const char *name, *type, *help;
    size_t off;
    unsigned n;      /* label sets (1 when labels is L_NONE) */
    unsigned labels; /* enum labels */
    unsigned flags;  /* enum fam_flags */
    unsigned have;   /* HR_WS_HAVE_* the value needs, 0: always there */
} fam_t;

#define W(f) offsetof(hr_wstats_t, f)
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))
#define NERR (sizeof(err_names) / sizeof(err_names[0]) - 1)

static const fam_t families[] = {
    {"herald_connections", "gauge", "Open connections by transport (WebSocket: once upgraded).",
     W(st.conns), HR_T_COUNT, L_TRANSPORT, M_GAUGE, 0},
    {"herald_connections_total", "counter", "Accepted connections by transport.", W(st.conns_total),
     HR_T_COUNT, L_TRANSPORT, 0, 0},
    {"herald_connections_refused_total", "counter", "Connections refused by max-connections.",
     W(st.refused_conns), 1, L_NONE, 0, 0},
    {"herald_connections_refused_per_ip_total", "counter",
     "Connections refused by max-conns-per-ip.", W(st.refused_per_ip), 1, L_NONE, 0, 0},
    {"herald_proxy_headers_total", "counter", "PROXY protocol headers accepted.",
     W(st.proxy_headers), 1, L_NONE, 0, 0},
    {"herald_proxy_refused_total", "counter",
     "Connections refused for their PROXY header: malformed, missing, late, cut short, or from "
     "an address not in proxy-from.",
     W(st.proxy_refused), 1, L_NONE, 0, 0},
    {"herald_handshakes_refused_total", "counter",
     "Connections refused by max-pending (handshakes in progress).", W(st.refused_pending), 1,
     L_NONE, 0, 0},
    {"herald_publish_rate_limited_total", "counter", "PUBs refused by max-pub-rate (ERR 7).",
     W(st.rate_limited), 1, L_NONE, 0, 0},
    {"herald_replay_rate_limited_total", "counter",
     "SUBs with since on a wildcard refused by max-replay-rate (ERR 7).", W(st.replay_limited), 1,
     L_NONE, 0, 0},
    {"herald_replay_scan_refused_total", "counter",
     "Wildcard replays not run: the scan budget of the address or worker was spent (ERR 10).",
     W(st.scan_refused), 1, L_NONE, 0, 0},
    {"herald_replay_scan_topics_total", "counter",
     "Topics examined by wildcard replays (replay-scan-rate, replay-scan-global).",
     W(st.scan_topics), 1, L_NONE, 0, 0},
    {"herald_auth_failures_total", "counter",
     "HELLOs refused by authentication (ERR 3), expired tokens included.", W(st.auth_failed), 1,
     L_NONE, 0, 0},
    {"herald_denied_total", "counter", "PUBs and SUBs not permitted (ERR 4).", W(st.denied_pub), 2,
     L_ACTION, 0, 0},
    {"herald_http_responses_total", "counter",
     "HTTP responses on the WebSocket port by status (101: upgraded).", W(st.http_status), NSTATUS,
     L_STATUS, 0, 0},
    {"herald_http_requests_total", "counter",
     "HTTP requests on the WebSocket port (WebSocket upgrades and scrapes).", W(st.http_requests),
     1, L_NONE, 0, 0},
    {"herald_http_bytes_in_total", "counter",
     "Bytes read from HTTP connections before an upgrade (not in bytes_in_total).",
     W(st.http_bytes_in), 1, L_NONE, 0, 0},
    {"herald_http_bytes_out_total", "counter",
     "Bytes written to HTTP connections that were not upgraded (not in bytes_out_total).",
     W(st.http_bytes_out), 1, L_NONE, 0, 0},
    {"herald_pipeline_messages_total", "counter",
     "PUBs through publish pipeline stages by outcome (failed: timed out, crashed or garbled).",
     W(pipe_passed), 4, L_OUTCOME, 0, 0},
    {"herald_pipeline_timeouts_total", "counter",
     "Messages a pipeline stage did not answer in time.", W(pipe_timeouts), 1, L_NONE, 0, 0},
    {"herald_pipeline_restarts_total", "counter", "Pipeline stage child processes restarted.",
     W(pipe_restarts), 1, L_NONE, 0, 0},
    {"herald_pipeline_late_answers_total", "counter",
     "Answers from a pipeline stage for messages already timed out.", W(pipe_late), 1, L_NONE, 0,
     0},
    {"herald_pipeline_inflight", "gauge", "Messages inside publish pipeline stages.",
     W(pipe_inflight), 1, L_NONE, M_GAUGE, 0},
    {"herald_tls_handshakes_total", "counter", "TLS handshakes completed.", W(st.tls_handshakes), 1,
     L_NONE, 0, 0},
    {"herald_tls_failures_total", "counter",
     "TLS connections closed by a failed, refused or stalled handshake.", W(st.tls_failed), 1,
     L_NONE, 0, 0},
    {"herald_subscriptions", "gauge", "Active subscriptions.", W(subs), 1, L_NONE, M_GAUGE, 0},
    {"herald_patterns", "gauge", "Distinct subscribed patterns.", W(patterns), 1, L_NONE, M_GAUGE,
     0},
    {"herald_topics", "gauge", "Topics with state (sequence, history).", W(topics), 1, L_NONE,
     M_GAUGE, 0},
    {"herald_topics_reclaimed_total", "counter",
     "Topics whose state was reclaimed (their seq remembered).", W(reclaimed), 1, L_NONE, 0, 0},
    {"herald_topic_tombstones", "gauge", "Reclaimed topics whose last seq is remembered.",
     W(tombstones), 1, L_NONE, M_GAUGE, 0},
    {"herald_messages_in_total", "counter", "Messages published.", W(st.msgs_in), 1, L_NONE, 0, 0},
    {"herald_bytes_in_total", "counter", "Bytes read from clients.", W(st.bytes_in), 1, L_NONE, 0,
     0},
    {"herald_deliveries_total", "counter", "Messages queued to subscribers.", W(st.deliveries), 1,
     L_NONE, 0, 0},
    {"herald_bytes_out_total", "counter", "Bytes written to clients.", W(st.bytes_out), 1, L_NONE,
     0, 0},
    {"herald_slow_consumers_total", "counter", "Connections closed as slow consumers.",
     W(st.slow_consumers), 1, L_NONE, 0, 0},
    {"herald_errors_total", "counter", "ERR frames by code.", W(st.errors[1]), NERR, L_ERROR, 0, 0},
    {"herald_output_queue_bytes", "gauge",
     "Memory held by output queued for clients: bytes not yet written and per-message "
     "overhead, as charged against out-soft and out-hard.",
     W(outq), 1, L_NONE, M_GAUGE, 0},
    {"herald_output_inflight_bytes", "gauge", "Bytes handed to the kernel, in flight.", W(inflight),
     1, L_NONE, M_GAUGE, 0},
    {"herald_history_bytes", "gauge", "Bytes of retained history (rings included).", W(hist_bytes),
     1, L_NONE, M_GAUGE, 0},
    {"herald_history_messages", "gauge", "Retained history messages.", W(hist_msgs), 1, L_NONE,
     M_GAUGE, 0},
    {"herald_engine_up", "gauge",
     "1 while the engine serves (a Redis engine: connected to Redis and subscribed).", W(engine_up),
     1, L_NONE, M_GAUGE, 0},
    {"herald_engine_queued_bytes", "gauge",
     "Bytes of publishes and replays waiting for the engine's store (Redis).", W(engine_queued), 1,
     L_NONE, M_GAUGE, 0},
    {"herald_engine_lag_seconds", "gauge",
     "Age of the oldest command the engine's store (Redis) has not answered.", W(engine_lag_ms), 1,
     L_NONE, M_GAUGE | M_SECONDS, 0},
    {"herald_engine_reconnects_total", "counter", "Connections to the engine's store made again.",
     W(engine_reconnects), 1, L_NONE, 0, 0},
    {"herald_engine_gaps_total", "counter",
     "Seq holes live subscriptions saw while the engine's store was out of reach (sent as GAP).",
     W(engine_gaps), 1, L_NONE, 0, 0},
    {"herald_engine_resets_total", "counter",
     "Times the engine's store lost its data (a new epoch).", W(engine_resets), 1, L_NONE, 0, 0},
};

/* The process: after herald_build_info. The usual names, read from /proc/self (Linux). */
static const fam_t process_families[] = {
    {"process_start_time_seconds", "gauge",
     "Start time of the process since the epoch, in seconds.", W(start_unix_ms), 1, L_NONE,
     M_GAUGE | M_SECONDS, 0},
    {"herald_uptime_seconds", "gauge", "Seconds since the broker started.", W(uptime_ms), 1, L_NONE,
     M_GAUGE | M_SECONDS, 0},
    {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", W(rss), 1, L_NONE,
     M_GAUGE, HR_WS_HAVE_STATM},
    {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", W(vm), 1, L_NONE,
     M_GAUGE, HR_WS_HAVE_STATM},
    {"process_open_fds", "gauge", "Number of open file descriptors.", W(open_fds), 1, L_NONE,
     M_GAUGE, HR_WS_HAVE_FDS},
    {"process_max_fds", "gauge", "Maximum number of open file descriptors.", W(max_fds), 1, L_NONE,
     M_GAUGE, HR_WS_HAVE_MAXFDS},
};

/* Only in a cluster, after everything else (herald_workers comes first, printed apart). */
static const fam_t cluster_families[] = {
    {"herald_worker_up", "gauge", "1 while the worker serves (unlabelled: workers serving).", W(up),
     1, L_NONE, M_ALWAYS, 0},
    {"herald_worker_restarts_total", "counter", "Times the worker was started again after it died.",
     W(restarts), 1, L_NONE, M_ALWAYS, 0},
    {"herald_cluster_records_sent_total", "counter",
     "Records written into the rings to other workers.", W(ring_out), 1, L_NONE, 0, 0},
    {"herald_cluster_records_received_total", "counter",
     "Records read from the rings of other workers.", W(ring_in), 1, L_NONE, 0, 0},
    {"herald_cluster_ring_full_total", "counter",
     "Records that found the ring to another worker full and waited in memory.", W(ring_full), 1,
     L_NONE, 0, 0},
    {"herald_cluster_backlog_bytes", "gauge",
     "Bytes of records waiting for room in the rings to other workers.", W(ring_backlog), 1, L_NONE,
     M_GAUGE, 0},
};

static void label_set(const fam_t *f, unsigned i, char *out, size_t cap)
{
    static const char *const tnames[HR_T_COUNT] = {"tcp", "ws"};
    switch (f->labels) {
    case L_TRANSPORT:
        snprintf(out, cap, "transport=\"%s\"", tnames[i]);
        break;
    case L_ACTION:
        snprintf(out, cap, "action=\"%s\"", i ? "sub" : "pub");
        break;
    case L_OUTCOME: {
        static const char *const outcomes[4] = {"passed", "rewritten", "rejected", "failed"};
        snprintf(out, cap, "outcome=\"%s\"", outcomes[i]);
        break;
    }
    case L_STATUS:
        snprintf(out, cap, "status=\"%d\"", statuses[i]);
        break;
    case L_ERROR:
        snprintf(out, cap, "code=\"%u\",name=\"%s\"", i + 1, err_names[i + 1]);
        break;
    default:
        *out = 0;
    }
}

_Static_assert(offsetof(hr_stats_t, denied_sub) == offsetof(hr_stats_t, denied_pub) + 8,
               "herald_denied_total reads denied_pub and denied_sub as one array");

_Static_assert(offsetof(hr_wstats_t, pipe_failed) == offsetof(hr_wstats_t, pipe_passed) + 24,
               "herald_pipeline_messages_total reads four outcomes as one array");

/* One sample: `worker` < 0 is the unlabelled (whole broker) one. */
static int sample(hr_buf_t *b, const fam_t *f, const char *labels, int worker, const hr_wstats_t *w,
                  unsigned i)
{
    uint64_t v;
    memcpy(&v, (const char *)w + f->off + i * sizeof(uint64_t), sizeof(v));
    char lab[160];
    if (worker >= 0)
        snprintf(lab, sizeof(lab), "{%s%sworker=\"%d\"}", labels, *labels ? "," : "", worker);
    else if (*labels)
        snprintf(lab, sizeof(lab), "{%s}", labels);
    else
        lab[0] = 0;
    if (f->flags & M_SECONDS)
        return bprintf(b, "%s%s %.3f\n", f->name, lab, (double)v / 1000);
    return bprintf(b, "%s%s %llu\n", f->name, lab, (unsigned long long)v);
}

/*
 * A family: HELP and TYPE, then for each label set the broker's sample and, in a cluster,
 * one per worker. A worker that is down keeps its counters (what it had published) but has
 * no gauges; one that never published has neither.
 */
static int family(hr_buf_t *b, int r, const fam_t *f, const hr_stats_view_t *v)
{
    if (r != HR_OK || (f->have && !(v->total.have & f->have)))
        return r;
    r = bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    for (unsigned i = 0; i < f->n && r == HR_OK; i++) {
        char labels[96];
        label_set(f, i, labels, sizeof(labels));
        r = sample(b, f, labels, -1, &v->total, i);
        for (unsigned k = 0; k < v->n && r == HR_OK; k++) {
            const hr_wstats_t *w = &v->w[k];
            if (!(f->flags & M_ALWAYS) &&
                (v->state[k] == HR_WS_NONE || ((f->flags & M_GAUGE) && v->state[k] != HR_WS_UP) ||
                 (f->have && !(w->have & f->have))))
                continue;
            r = sample(b, f, labels, (int)k, w, i);
        }
    }
    return r;
}

static int families_of(hr_buf_t *b, int r, const fam_t *f, size_t n, const hr_stats_view_t *v)
{
    for (size_t i = 0; i < n; i++)
        r = family(b, r, &f[i], v);
    return r;
}

/*
 * Renders the broker in the Prometheus text format (version 0.0.4). Alone, every series is
 * this worker's. In a cluster every series is the whole broker without a `worker` label, and
 * again per worker with `worker="K"` (stats.c gathers them from the shared area): whichever
 * worker answers, the unlabelled series agree.
 */
int hr__http_metrics(const hr_server_t *s, hr_buf_t *b)
{
    hr_stats_view_t v;
    int r = hr__stats_view(s, &v);
    r = families_of(b, r, families, sizeof(families) / sizeof(families[0]), &v);
    if (r == HR_OK)
        r = bprintf(b,
                    "# HELP herald_build_info Version of the broker.\n"
                    "# TYPE herald_build_info gauge\nherald_build_info{version=\"%s\"} 1\n",
                    HERALD_VERSION);
    r = families_of(b, r, process_families, sizeof(process_families) / sizeof(process_families[0]),
                    &v);
    if (v.n && r == HR_OK)
        r = bprintf(b,
                    "# HELP herald_workers Worker processes the broker runs.\n"
                    "# TYPE herald_workers gauge\nherald_workers %u\n",
                    v.n);
    if (v.n)
        r = families_of(b, r, cluster_families,
                        sizeof(cluster_families) / sizeof(cluster_families[0]), &v);
    hr__stats_view_free(&v);
    return r;
}

int hr__http_health(const hr_server_t *s, hr_buf_t *b)
{
    if (s->shutting_down) {
        hr_buf_append(b, "shutting down\n", 14);
        return 503;
    }
    if (s->nworkers <= 1 || !s->cstats) {
        hr_buf_append(b, "ok\n", 3);
        return 200;
    }
    bprintf(b, "ok: %u of %u workers up\n", hr__stats_workers_up(s), (unsigned)s->nworkers);
    return 200;
}
