/* SPDX-License-Identifier: MIT */
/* The HTTP surface of the WebSocket port: request heads (http_parser), responses, metrics. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "http.h"
#include "server.h"

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

static int metric(hr_buf_t *b, const char *name, const char *type, const char *help)
{
    return bprintf(b, "# HELP herald_%s %s\n# TYPE herald_%s %s\n", name, help, name, type);
}

/* One metric named `name` as is, without labels, after `r` (the chain's status so far) is HR_OK. */
static int simple_raw(hr_buf_t *b, int r, const char *name, const char *type, const char *help,
                      unsigned long long v)
{
    if (r == HR_OK)
        r = bprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, v);
    return r;
}

/* One herald_ metric without labels, after `r` (the chain's status so far) is HR_OK. */
static int simple(hr_buf_t *b, int r, const char *name, const char *type, const char *help,
                  uint64_t v)
{
    char full[96];
    snprintf(full, sizeof(full), "herald_%s", name);
    return simple_raw(b, r, full, type, help, (unsigned long long)v);
}

/*
 * The usual process metrics, read from /proc/self (Linux): resident and
 * virtual memory from statm (one short read), open descriptors by listing
 * fd/ (one entry per connection: cheap next to the scrape's own walk over
 * the connections). Absent where /proc is not mounted.
 */
static int process_metrics(const hr_server_t *s, hr_buf_t *b, int r)
{
    if (r == HR_OK)
        r = bprintf(b,
                    "# HELP herald_build_info Version of the broker.\n"
                    "# TYPE herald_build_info gauge\nherald_build_info{version=\"%s\"} 1\n",
                    HERALD_VERSION);
    if (r == HR_OK)
        r = bprintf(b,
                    "# HELP process_start_time_seconds Start time of the process since the epoch, "
                    "in seconds.\n# TYPE process_start_time_seconds gauge\n"
                    "process_start_time_seconds %.3f\n",
                    s->started_unix);
    if (r == HR_OK)
        r = bprintf(b,
                    "# HELP herald_uptime_seconds Seconds since the broker started.\n"
                    "# TYPE herald_uptime_seconds gauge\nherald_uptime_seconds %.3f\n",
                    (double)(hr__now_ms(s) - s->started_ms) / 1000);
    unsigned long long vm, rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%llu %llu", &vm, &rss) == 2 && r == HR_OK) {
        unsigned long long page = (unsigned long long)sysconf(_SC_PAGESIZE);
        r = bprintf(b,
                    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                    "# TYPE process_resident_memory_bytes gauge\n"
                    "process_resident_memory_bytes %llu\n"
                    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                    "# TYPE process_virtual_memory_bytes gauge\n"
                    "process_virtual_memory_bytes %llu\n",
                    rss * page, vm * page);
    }
    if (f)
        fclose(f);
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        unsigned long long n = 0;
        for (struct dirent *e; (e = readdir(d));)
            n += e->d_name[0] != '.';
        closedir(d);
        if (n) /* less the descriptor of the listing itself */
            n--;
        r = simple_raw(b, r, "process_open_fds", "gauge", "Number of open file descriptors.", n);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        r = simple_raw(b, r, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
                       (unsigned long long)rl.rlim_cur);
    return r;
}

/*
 * Renders the worker's state in the Prometheus text format (version 0.0.4).
 * Everything comes from counters the hot path already keeps, except the
 * output queue bytes, which are summed over the connections here: a scrape
 * costs O(connections), the hot path nothing.
 */
int hr__http_metrics(const hr_server_t *s, hr_buf_t *b)
{
    const hr_stats_t *st = &s->stats;
    static const char *const tnames[HR_T_COUNT] = {"tcp", "ws"};
    size_t outq = 0, inflight = 0;
    for (const hr_conn_t *c = s->conns; c; c = c->next) {
        outq += hr__oq_charge(&c->out);
        inflight += c->out.inflight;
    }
    int r = metric(b, "connections", "gauge",
                   "Open connections by transport (WebSocket: once upgraded).");
    for (int t = 0; t < HR_T_COUNT && r == HR_OK; t++)
        r = bprintf(b, "herald_connections{transport=\"%s\"} %llu\n", tnames[t],
                    (unsigned long long)st->conns[t]);
    if (r == HR_OK)
        r = metric(b, "connections_total", "counter", "Accepted connections by transport.");
    for (int t = 0; t < HR_T_COUNT && r == HR_OK; t++)
        r = bprintf(b, "herald_connections_total{transport=\"%s\"} %llu\n", tnames[t],
                    (unsigned long long)st->conns_total[t]);
    r = simple(b, r, "connections_refused_total", "counter",
               "Connections refused by max-connections.", st->refused_conns);
    /* Refusals by the limits and auth modules (limits.c, auth.c). */
    r = simple(b, r, "connections_refused_per_ip_total", "counter",
               "Connections refused by max-conns-per-ip.", st->refused_per_ip);
    r = simple(b, r, "handshakes_refused_total", "counter",
               "Connections refused by max-pending (handshakes in progress).", st->refused_pending);
    r = simple(b, r, "publish_rate_limited_total", "counter",
               "PUBs refused by max-pub-rate (ERR 7).", st->rate_limited);
    r = simple(b, r, "replay_rate_limited_total", "counter",
               "SUBs with since on a wildcard refused by max-replay-rate (ERR 7).",
               st->replay_limited);
    r = simple(b, r, "replay_scan_refused_total", "counter",
               "Wildcard replays not run: the scan budget of the address or worker was spent "
               "(ERR 10).",
               st->scan_refused);
    r = simple(b, r, "replay_scan_topics_total", "counter",
               "Topics examined by wildcard replays (replay-scan-rate, replay-scan-global).",
               st->scan_topics);
    r = simple(b, r, "auth_failures_total", "counter",
               "HELLOs refused by authentication (ERR 3), expired tokens included.",
               st->auth_failed);
    if (r == HR_OK)
        r = metric(b, "denied_total", "counter", "PUBs and SUBs not permitted (ERR 4).");
    if (r == HR_OK)
        r = bprintf(
            b,
            "herald_denied_total{action=\"pub\"} %llu\nherald_denied_total{action=\"sub\"} %llu\n",
            (unsigned long long)st->denied_pub, (unsigned long long)st->denied_sub);
    if (r == HR_OK)
        r = metric(b, "http_responses_total", "counter",
                   "HTTP responses on the WebSocket port by status (101: upgraded).");
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]) && r == HR_OK; i++)
        r = bprintf(b, "herald_http_responses_total{status=\"%d\"} %llu\n", statuses[i],
                    (unsigned long long)st->http_status[i]);
    r = simple(b, r, "http_requests_total", "counter",
               "HTTP requests on the WebSocket port (WebSocket upgrades and scrapes).",
               st->http_requests);
    r = simple(b, r, "http_bytes_in_total", "counter",
               "Bytes read from HTTP connections before an upgrade (not in bytes_in_total).",
               st->http_bytes_in);
    r = simple(b, r, "http_bytes_out_total", "counter",
               "Bytes written to HTTP connections that were not upgraded (not in bytes_out_total).",
               st->http_bytes_out);
    r = simple(b, r, "subscriptions", "gauge", "Active subscriptions.", s->index.nsubs);
    r = simple(b, r, "patterns", "gauge", "Distinct subscribed patterns.", s->index.npatterns);
    hr_engine_stats_t es = {0};
    s->engine->ops->stats(s->engine, &es);
    r = simple(b, r, "topics", "gauge", "Topics with state (sequence, history).", es.topics);
    r = simple(b, r, "topics_reclaimed_total", "counter",
               "Topics whose state was reclaimed (their seq remembered).", es.reclaimed);
    r = simple(b, r, "topic_tombstones", "gauge", "Reclaimed topics whose last seq is remembered.",
               es.tombstones);
    r = simple(b, r, "messages_in_total", "counter", "Messages published.", st->msgs_in);
    r = simple(b, r, "bytes_in_total", "counter", "Bytes read from clients.", st->bytes_in);
    r = simple(b, r, "deliveries_total", "counter", "Messages queued to subscribers.",
               st->deliveries);
    r = simple(b, r, "bytes_out_total", "counter", "Bytes written to clients.", st->bytes_out);
    r = simple(b, r, "slow_consumers_total", "counter", "Connections closed as slow consumers.",
               st->slow_consumers);
    if (r == HR_OK)
        r = metric(b, "errors_total", "counter", "ERR frames by code.");
    for (unsigned i = 1; i < sizeof(err_names) / sizeof(err_names[0]) && r == HR_OK; i++)
        r = bprintf(b, "herald_errors_total{code=\"%u\",name=\"%s\"} %llu\n", i, err_names[i],
                    (unsigned long long)st->errors[i]);
    r = simple(b, r, "output_queue_bytes", "gauge",
               "Memory held by output queued for clients: bytes not yet written and per-message "
               "overhead, as charged against out-soft and out-hard.",
               outq);
    r = simple(b, r, "output_inflight_bytes", "gauge", "Bytes handed to the kernel, in flight.",
               inflight);
    r = simple(b, r, "history_bytes", "gauge", "Bytes of retained history (rings included).",
               es.hist_bytes);
    r = simple(b, r, "history_messages", "gauge", "Retained history messages.", es.hist_msgs);
    return process_metrics(s, b, r);
}
