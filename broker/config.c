/* SPDX-License-Identifier: MIT */
/* Settings table, command line and configuration file parsing. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "proxy.h"

enum kind { K_INT, K_SIZE, K_STR, K_BOOL };

typedef struct opt_s {
    const char *name;
    enum kind kind;
    size_t off;
    size_t cap; /* K_STR: buffer size */
    int64_t min, max;
    const char *def;
    const char *help;
} opt_t;

#define I(n, f, lo, hi, d, h)                                                                      \
    {                                                                                              \
        n, K_INT, offsetof(hr_config_t, f), 0, lo, hi, d, h                                        \
    }
#define Z(n, f, lo, hi, d, h)                                                                      \
    {                                                                                              \
        n, K_SIZE, offsetof(hr_config_t, f), 0, lo, hi, d, h                                       \
    }
/* A switch: `--name` alone turns it on; values true/false, yes/no, on/off, 1/0. */
#define B(n, f, d, h)                                                                              \
    {                                                                                              \
        n, K_BOOL, offsetof(hr_config_t, f), 0, 0, 1, d, h                                         \
    }
#define S(n, f, d, h)                                                                              \
    {                                                                                              \
        n, K_STR, offsetof(hr_config_t, f), sizeof(((hr_config_t *)0)->f), 0, 0, d, h              \
    }

static const opt_t opts[] = {
    S("bind", bind, "0.0.0.0", "address to listen on"),
    I("port", port, 0, 65535, "7400", "TCP port (0: any free port)"),
    I("ws-port", ws_port, 0, 65535, "7401", "WebSocket/HTTP port (0: any free port)"),
    S("log-level", log_level, "info", "error, warn, info, debug or trace"),
    S("ready-file", ready_file, "",
      "once listening, write lines 'tcp=PORT', 'ws=PORT' and 'pid=PID' here"),
    Z("max-payload", max_payload, 1, 64 << 20, "1M", "largest PUB payload (bytes)"),
    I("max-connections", max_connections, 1, 10000000, "100000", "connections in total"),
    I("max-subs", max_subs, 1, 10000000, "10000", "subscriptions per connection"),
    I("max-topics", max_topics, 1, 100000000, "1000000", "topics with state (seq, history)"),
    I("history-msgs", history_msgs, 0, 1000000, "128", "messages retained per topic (0: none)"),
    Z("history-bytes", history_bytes, 0, INT64_C(1) << 40, "1M", "bytes retained per topic"),
    I("replay-scan-rate", replay_scan_rate, 1, INT64_C(1) << 40, "1000000",
      "topics the wildcard `since` replays of one client address may examine a second"),
    I("replay-scan-global", replay_scan_global, 0, INT64_C(1) << 40, "4000000",
      "topics all wildcard `since` replays of the worker may examine a second (0: no limit)"),
    Z("history-total", history_total, 0, INT64_C(1) << 40, "256M",
      "bytes retained, all topics (history rings included)"),
    I("topic-tombstones", topic_tombstones, 0, 100000000, "262144",
      "reclaimed topics whose last seq is remembered (about 56 bytes each)"),
    I("engine-delay-ms", engine_delay_ms, 0, 60000, "0",
      "testing only: delay every engine answer this long (0: off)"),
    S("engine", engine, "memory",
      "where topic state lives: 'memory', redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or "
      "redis+cluster://IP:PORT,IP:PORT,... (shared by several nodes)"),
    S("redis-prefix", redis_prefix, "herald:", "prefix of every Redis key and channel"),
    I("redis-history-ttl", redis_history_ttl, 0, INT64_C(1) << 31, "86400",
      "seconds a topic's history stays in Redis after its last publish (0: no expiry)"),
    Z("redis-queue-max", redis_queue_max, 1024, INT64_C(1) << 40, "8M",
      "bytes of publishes and replays that may wait while Redis is unreachable"),
    I("presence-interval", presence_interval_ms, 10, 3600000, "1000",
      "ms between two presence changes of one room on $PRES.<topic>"),
    I("presence-list-max", presence_list_max, 0, 1000000, "100",
      "members above which presence carries a count only (at most what fits max-payload)"),
    I("workers", workers, 0, 64, "0",
      "worker processes sharing the ports, topics sharded across them (0: one per CPU core)"),
    Z("out-hard", out_hard, 1024, INT64_C(1) << 40, "8M",
      "pending output per connection that closes it at once (ERR 6)"),
    Z("out-soft", out_soft, 1024, INT64_C(1) << 40, "2M",
      "pending output per connection tolerated for out-soft-ms"),
    I("out-soft-ms", out_soft_ms, 0, 3600000, "10000", "how long out-soft may be exceeded"),
    S("slow-policy", slow_policy, "",
      "comma-separated pattern=policy for backlogged connections: drop-oldest, drop-newest, "
      "conflate or disconnect (the default); first match wins"),
    S("pipeline", pipeline, "",
      "comma-separated pattern=exec:PROGRAM ARGS[|exec:...] publish pipelines run on each PUB "
      "before it is sequenced; first match wins"),
    I("pipeline-timeout-ms", pipeline_timeout_ms, 1, 600000, "2000",
      "time a pipeline stage has to answer for one message"),
    I("pipeline-inflight", pipeline_inflight, 1, 1000000, "1024",
      "messages one pipeline stage holds before its publishers are paused"),
    S("pipeline-on-error", pipeline_on_error, "reject",
      "what a message gets when its stage timed out, crashed or answered garbage: reject "
      "(ERR 13) or pass"),
    I("heartbeat-ms", heartbeat_ms, 50, 3600000, "30000",
      "ping clients silent this long; close after two unanswered pings"),
    I("hello-timeout-ms", hello_timeout_ms, 50, 3600000, "10000",
      "time a new connection has to send HELLO"),
    I("shutdown-timeout-ms", shutdown_timeout_ms, 0, 600000, "5000",
      "time to drain clients on SIGINT/SIGTERM"),
    S("ws-origins", ws_origins, "", "comma-separated allowed Origins for WebSocket ('': any)"),
    Z("ws-max-header", ws_max_header, 256, 1 << 20, "8K", "largest HTTP request head"),
    I("ws-handshake-ms", ws_handshake_ms, 50, 600000, "5000", "time to complete the handshake"),
    S("auth-tokens-file", auth_tokens_file, "",
      "static tokens, one 'NAME SECRET [pub=P,..] [sub=P,..]' a line ('': none)"),
    S("auth-anonymous", auth_anonymous, "",
      "with auth on, 'pub=P,.. sub=P,..' for clients without a token ('': refused)"),
    S("jwt-hs256-secret", jwt_hs256_secret, "", "accept HS256 JWTs signed with this secret"),
    S("jwt-rs256-public-key", jwt_rs256_public_key, "",
      "accept RS256 JWTs verified by this PEM public key file"),
    S("jwt-issuer", jwt_issuer, "", "required JWT iss ('': any)"),
    S("jwt-audience", jwt_audience, "", "required JWT aud ('': any)"),
    I("max-conns-per-ip", max_conns_per_ip, 0, 10000000, "0",
      "connections per client IP (IPv6: per /64; 0: no limit)"),
    I("max-pending", max_pending, 0, 10000000, "8192",
      "connections still in their handshake (before HELLO; 0: no limit)"),
    I("max-pub-rate", max_pub_rate, 0, 100000000, "0",
      "PUBs a second per connection (0: no limit)"),
    I("max-pub-burst", max_pub_burst, 0, 100000000, "0",
      "PUBs a connection may send at once above the rate (0: one second's worth)"),
    I("max-replay-rate", max_replay_rate, 0, 1000000, "0",
      "SUBs with since on a wildcard pattern a second per connection (0: no limit)"),
    I("max-replay-burst", max_replay_burst, 0, 1000000, "0",
      "such SUBs a connection may send at once (0: one second's worth)"),
    S("tls-cert", tls_cert, "",
      "PEM certificate chain: with tls-key, the ports in tls-ports speak TLS ('': plain)"),
    S("tls-key", tls_key, "", "PEM private key of tls-cert"),
    S("tls-ca", tls_ca, "", "PEM CA bundle that client certificates must chain to"),
    S("tls-verify", tls_verify, "none",
      "client certificates: none, optional (checked when sent) or required (needs tls-ca)"),
    S("tls-ports", tls_ports, "tcp,ws",
      "which ports speak TLS when tls-cert is set: tcp, ws or tcp,ws"),
    S("proxy-protocol", proxy_protocol, "off",
      "ports whose connections from proxy-from start with a PROXY protocol v1/v2 header: off, "
      "tcp, ws or both"),
    S("proxy-from", proxy_from, "",
      "comma-separated addresses and CIDR blocks (IPv4, IPv6) of the load balancers that send "
      "the PROXY header"),
    B("demo", demo, "false", "serve the demo chat page under /demo/ on the WebSocket port"),
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

/*
 * Settings a running broker takes from a SIGHUP (each new value applies to
 * what happens next: a new connection, the next publish, the next sweep).
 * The others size or shape state built at start-up and need a restart.
 */
static const char *const reloadable[] = {
    "log-level",       "max-connections",  "max-subs",
    "out-hard",        "out-soft",         "out-soft-ms",
    "heartbeat-ms",    "hello-timeout-ms", "shutdown-timeout-ms",
    "ws-origins",      "ws-handshake-ms",  "max-conns-per-ip",
    "max-pending",     "max-pub-rate",     "max-pub-burst",
    "max-replay-rate", "max-replay-burst", "replay-scan-rate",
    "tls-cert",        "tls-key",          "tls-ca",
    "tls-verify"};

static int is_reloadable(const char *name)
{
    for (size_t i = 0; i < sizeof(reloadable) / sizeof(reloadable[0]); i++)
        if (strcmp(reloadable[i], name) == 0)
            return 1;
    return 0;
}

int hr__config_reload(hr_config_t *old, const hr_config_t *fresh)
{
    int applied = 0;
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        char *a = (char *)old + o->off;
        const char *b = (const char *)fresh + o->off;
        size_t n = o->kind == K_STR ? o->cap : sizeof(int64_t);
        if (memcmp(a, b, n) == 0)
            continue;
        if (!is_reloadable(o->name)) {
            HR_LOG(HR_LOG_WARN, 0,
                   "reload: '%s' changed but needs a restart: keeping the old value", o->name);
            continue;
        }
        memcpy(a, b, n);
        applied++;
        HR_LOG(HR_LOG_INFO, 0, "reload: '%s' applied", o->name);
    }
    return applied;
}

static const opt_t *find(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

/*
 * Edit distance counting a swap of two neighbours as one edit (optimal
 * string alignment), so that `prot` is one edit from `port`.
 */
static size_t distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b), d[64][64];
    if (n >= 64 || m >= 64)
        return SIZE_MAX;
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

/*
 * The name closest to `name` among the settings (and, on the command line,
 * the other options), or NULL when none is close enough to be a slip: at
 * most one edit in three characters, or `name` the start of only it.
 */
static const char *closest(const char *name, int cmdline)
{
    static const char *const extra[] = {"config", "help", "version"};
    const char *names[NOPTS + 3], *best = NULL;
    size_t n = 0, starts = 0, bestd = SIZE_MAX, len = strlen(name);
    for (size_t i = 0; i < NOPTS; i++)
        names[n++] = opts[i].name;
    for (size_t i = 0; cmdline && i < 3; i++)
        names[n++] = extra[i];
    for (size_t i = 0; i < n; i++)
        starts += strncmp(names[i], name, len) == 0;
    for (size_t i = 0; i < n; i++) {
        int start = len >= 3 && starts == 1 && strncmp(names[i], name, len) == 0;
        size_t d = start ? 1 : distance(name, names[i]);
        if (d < bestd) {
            bestd = d;
            best = names[i];
        }
    }
    return bestd <= (len / 3 > 1 ? len / 3 : 1) ? best : NULL;
}

/* Integers with an optional K/M/G suffix (powers of 1024) for sizes. */
static int parse_int(const char *v, int size, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v)
        return -1;
    if (size && *end) {
        int64_t mul = *end == 'K' || *end == 'k'   ? 1024
                      : *end == 'M' || *end == 'm' ? 1024 * 1024
                      : *end == 'G' || *end == 'g' ? 1024 * 1024 * 1024
                                                   : 0;
        if (!mul || end[1] || n > INT64_MAX / mul || n < INT64_MIN / mul)
            return -1;
        n *= mul;
        end++;
    }
    if (*end)
        return -1;
    *out = n;
    return 0;
}

int hr__config_set(hr_config_t *c, const char *name, const char *value, char *err, size_t errlen)
{
    const opt_t *o = find(name);
    char *base = (char *)c;
    if (!o) {
        const char *near = closest(name, 0);
        snprintf(err, errlen, "unknown setting '%s'%s%s%s", name, near ? " (did you mean '" : "",
                 near ? near : "", near ? "'?)" : "");
        return -1;
    }
    if (o->kind == K_STR) {
        if (strlen(value) >= o->cap) {
            snprintf(err, errlen, "setting '%s': value too long (max %zu bytes)", name, o->cap - 1);
            return -1;
        }
        if (strcmp(name, "log-level") == 0 && hr__log_parse_level(value) < 0) {
            snprintf(err, errlen, "setting 'log-level': '%s' is not error|warn|info|debug|trace",
                     value);
            return -1;
        }
        if (hr__proxy_setting_check(name, value, err, errlen) != 0)
            return -1;
        strcpy(base + o->off, value);
        return 0;
    }
    int64_t n;
    if (o->kind == K_BOOL) {
        static const char *const words[] = {"false", "true", "no", "yes", "off", "on", "0", "1"};
        size_t i = 0;
        while (i < 8 && strcmp(value, words[i]) != 0)
            i++;
        if (i == 8) {
            snprintf(err, errlen, "setting '%s': '%s' is not true or false", name, value);
            return -1;
        }
        n = (int64_t)(i % 2);
        memcpy(base + o->off, &n, sizeof(n));
        return 0;
    }
    if (parse_int(value, o->kind == K_SIZE, &n) != 0 || n < o->min || n > o->max) {
        snprintf(err, errlen, "setting '%s': '%s' is not %s in %" PRId64 "..%" PRId64, name, value,
                 o->kind == K_SIZE ? "a size" : "an integer", o->min, o->max);
        return -1;
    }
    memcpy(base + o->off, &n, sizeof(n));
    return 0;
}

void hr__config_defaults(hr_config_t *c)
{
    char err[256];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NOPTS; i++)
        if (hr__config_set(c, opts[i].name, opts[i].def, err, sizeof(err)) != 0)
            fprintf(stderr, "herald: bad default: %s\n", err);
}

/* A size the way the help writes it: 1M rather than 1048576. */
static void fmt_size(char *buf, size_t len, int64_t v)
{
    static const char *const units[] = {"", "K", "M", "G"};
    int u = 0;
    while (u < 3 && v != 0 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, "%" PRId64 "%s", v, units[u]);
}

static void usage(void)
{
    printf("Usage: herald [options]\n\nHerald pub/sub broker.\n\nOptions (also 'name = value' "
           "lines in a --config FILE):\n");
    printf("  %-22s %s\n", "--config FILE", "read settings from FILE here (later settings win)");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        char left[64], lo[32], hi[32];
        snprintf(left, sizeof(left), "--%s %s", o->name,
                 o->kind == K_STR    ? "STR"
                 : o->kind == K_SIZE ? "SIZE"
                 : o->kind == K_BOOL ? "[BOOL]"
                                     : "N");
        if (strlen(left) > 22) /* the help on a line of its own, aligned */
            printf("  %s\n  %-22s %s\n", left, "", o->help);
        else
            printf("  %-22s %s\n", left, o->help);
        if (o->kind == K_STR || o->kind == K_BOOL) {
            printf("  %-22s default %s\n", "", *o->def ? o->def : "''");
            continue;
        }
        if (o->kind == K_SIZE) {
            fmt_size(lo, sizeof(lo), o->min);
            fmt_size(hi, sizeof(hi), o->max);
        } else {
            snprintf(lo, sizeof(lo), "%" PRId64, o->min);
            snprintf(hi, sizeof(hi), "%" PRId64, o->max);
        }
        printf("  %-22s %s..%s, default %s\n", "", lo, hi, o->def);
    }
    printf("  %-22s %s\n  %-22s %s\n", "--help", "show this help", "--version", "show the version");
    printf("\nSIZE accepts K, M and G suffixes (powers of 1024).\n"
           "\n"
           "Configuration file: one setting a line, named as above without the dashes:\n"
           "    port = 7400               # '#' after a space starts a comment\n"
           "    ws-origins = \"https://app.example.com\"\n"
           "A '#' at the start of a line or after a space or tab starts a comment. Double\n"
           "quotes keep a value as written ('#', spaces, \"\" for empty). Settings apply in\n"
           "order, so a later line or option overrides an earlier one; a bad line stops the\n"
           "broker with FILE:LINE and the reason.\n"
           "\n"
           "SIGINT or SIGTERM drains clients and exits 0 (a second one closes them at once);\n"
           "SIGHUP reloads the settings that can change while running (and the TLS\n"
           "certificate files). Exit status 1: the broker could not start (the\n"
           "reason is on stderr). More in docs/configuration.md.\n");
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = 0;
    return s;
}

/*
 * Splits one line of a configuration file in place. The value is either
 * bare text, where a `#` after a space or tab starts a comment (so a `#`
 * inside a URL stays), or a double-quoted string taken literally between
 * its quotes (it may hold `#`, leading spaces or nothing at all; there are
 * no escapes). Returns 1 with `name` and `value` set, 0 for a blank or
 * comment line, -1 with `why` set.
 */
static int split_line(char *line, char **name, char **value, const char **why)
{
    char *s = trim(line), *v, *p;
    if (!*s || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq || eq == s) {
        *why = "expected 'name = value'";
        return -1;
    }
    *eq = 0;
    *name = trim(s);
    for (v = eq + 1; *v == ' ' || *v == '\t'; v++)
        ;
    if (*v == '"') {
        char *close = strchr(v + 1, '"');
        if (!close) {
            *why = "unterminated quote: the value needs its closing '\"'";
            return -1;
        }
        *close = 0;
        for (p = close + 1; *p == ' ' || *p == '\t'; p++)
            ;
        if (*p && *p != '#') {
            *why = "unexpected text after the closing quote (a comment starts with '#')";
            return -1;
        }
        *value = v + 1;
        return 1;
    }
    for (p = v; *p; p++)
        if (*p == '#' && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = 0;
            break;
        }
    *value = trim(v);
    return 1;
}

int hr__config_file(hr_config_t *c, const char *path)
{
    char line[2048], err[256];
    int lineno = 0, rc = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "herald: cannot read config file '%s': %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *name, *value;
        const char *why = err;
        size_t n = strlen(line);
        int r = -1;
        lineno++;
        if (n == sizeof(line) - 1 && line[n - 1] != '\n' && !feof(f))
            snprintf(err, sizeof(err), "line longer than %zu bytes", sizeof(line) - 2);
        else if ((r = split_line(line, &name, &value, &why)) == 0)
            continue;
        else if (r > 0 && strcmp(name, "config") == 0)
            why = "'config' is not allowed in a file";
        else if (r > 0 && hr__config_set(c, name, value, err, sizeof(err)) == 0)
            continue;
        fprintf(stderr, "herald: %s:%d: %s\n", path, lineno, why);
        rc = -1;
        break;
    }
    fclose(f);
    return rc;
}

int hr__config_args(hr_config_t *c, int argc, char **argv)
{
    char err[256], name[64];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *value = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("herald %s\n", HERALD_VERSION);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            const char *near = a[0] == '-' ? closest(a + 1, 1) : NULL;
            fprintf(stderr, "herald: unexpected argument '%s' (%s%s%s)\n", a,
                    near ? "did you mean --" : "see --help", near ? near : "", near ? "?" : "");
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        if (n >= sizeof(name)) {
            fprintf(stderr, "herald: unknown option '--%s'\n", a);
            return -1;
        }
        memcpy(name, a, n);
        name[n] = 0;
        if (strcmp(name, "config") != 0 && !find(name)) {
            const char *near = closest(name, 1);
            fprintf(stderr, "herald: unknown option '--%s' (%s%s%s)\n", name,
                    near ? "did you mean --" : "see --help", near ? near : "", near ? "?" : "");
            return -1;
        }
        const opt_t *o = find(name);
        if (eq)
            value = eq + 1;
        else if (o && o->kind == K_BOOL)
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "herald: option '--%s' needs a value\n", name);
            return -1;
        }
        if (strcmp(name, "config") == 0) {
            if (hr__config_file(c, value) != 0)
                return -1;
            continue;
        }
        if (hr__config_set(c, name, value, err, sizeof(err)) != 0) {
            fprintf(stderr, "herald: %s\n", err);
            return -1;
        }
    }
    return 0;
}
