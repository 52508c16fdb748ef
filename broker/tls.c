/* SPDX-License-Identifier: MIT */
/*
 * TLS on the broker's ports: the worker's OpenSSL context (tls-* settings,
 * reloaded on SIGHUP) and each TLS connection's pump (protocol/tlsio.c).
 * Everything runs on the loop: ciphertext read from the socket is fed to
 * the pump and the plaintext handed to the transport as if it had been
 * read; queued output is encrypted a batch at a time and the ciphertext
 * written with one write in flight. Nothing blocks, and a connection's
 * handshake failure is that connection's alone.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "tls.h"
#include "tlsio.h"

/* Handshakes completed since the last malloc_trim, and the loop time of the last one. */
static unsigned handshakes;
static uint64_t handshake_turn;

struct hr_tls_srv_s {
    SSL_CTX *ctx;   /* what new connections get; each pump holds its own reference */
    unsigned ports; /* bit (1 << kind) set: that port speaks TLS */
};

struct hr_tls_s {
    hr_tlsio_t *io;
    char *wbuf; /* bytes being written (owned until written) */
    size_t wlen, woff;
    char *raw; /* a plaintext answer to a peer that did not start TLS, sent instead */
    size_t rawlen;
    void (*done)(hr_conn_t *c, int status); /* the write in flight ended */
    int said_goodbye;                       /* close_notify queued */
};

static int verify_mode(const char *v)
{
    return !strcmp(v, "none")       ? HR_TLSIO_VERIFY_NONE
           : !strcmp(v, "optional") ? HR_TLSIO_VERIFY_OPTIONAL
           : !strcmp(v, "required") ? HR_TLSIO_VERIFY_REQUIRED
                                    : -1;
}

/* tls-ports: a comma-separated list of tcp and ws. Returns the bit set, or -1. */
static int parse_ports(const char *v)
{
    int bits = 0;
    while (*v) {
        size_t n = strcspn(v, ",");
        if (n == 3 && !strncmp(v, "tcp", 3))
            bits |= 1 << HR_T_TCP;
        else if (n == 2 && !strncmp(v, "ws", 2))
            bits |= 1 << HR_T_WS;
        else if (n != 0)
            return -1;
        v += n + (v[n] == ',');
    }
    return bits;
}

/* A context from the current settings; NULL with `err` set when it cannot be made. */
static SSL_CTX *make_ctx(const hr_config_t *cfg, char *err, size_t errlen)
{
    int verify = verify_mode(cfg->tls_verify);
    if (verify < 0) {
        snprintf(err, errlen, "setting 'tls-verify': '%s' is not none|optional|required",
                 cfg->tls_verify);
        return NULL;
    }
    if (!cfg->tls_key[0]) {
        snprintf(err, errlen, "setting 'tls-cert' needs 'tls-key' (the certificate's private key)");
        return NULL;
    }
    hr_tlsio_opts_t o = {
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .ca_file = cfg->tls_ca[0] ? cfg->tls_ca : NULL,
        .verify = verify,
        .alpn = "http/1.1", /* what the WebSocket/HTTP port speaks; a TCP client offers none */
    };
    SSL_CTX *ctx;
    char why[400];
    if (hr_tlsio_ctx_new(1, &o, &ctx, why, sizeof(why)) != HR_OK) {
        snprintf(err, errlen, "TLS: %s", why);
        return NULL;
    }
    return ctx;
}

int hr__tls_init(hr_server_t *s)
{
    char err[512];
    int ports = parse_ports(s->cfg.tls_ports);
    if (ports <= 0) {
        fprintf(stderr, "herald: setting 'tls-ports': '%s' is not a list of tcp and ws\n",
                s->cfg.tls_ports);
        return HR_EINVAL;
    }
    if (!s->cfg.tls_cert[0]) {
        if (s->cfg.tls_key[0] || s->cfg.tls_ca[0]) {
            fprintf(stderr, "herald: setting '%s' needs 'tls-cert'\n",
                    s->cfg.tls_key[0] ? "tls-key" : "tls-ca");
            return HR_EINVAL;
        }
        return HR_OK; /* TLS off */
    }
    SSL_CTX *ctx = make_ctx(&s->cfg, err, sizeof(err));
    if (!ctx) {
        fprintf(stderr, "herald: %s\n", err);
        return HR_EINVAL;
    }
    if (!(s->tls = calloc(1, sizeof(*s->tls)))) {
        SSL_CTX_free(ctx);
        return HR_ENOMEM;
    }
    s->tls->ctx = ctx;
    s->tls->ports = (unsigned)ports;
    return HR_OK;
}

void hr__tls_destroy(hr_server_t *s)
{
    if (!s->tls)
        return;
    SSL_CTX_free(s->tls->ctx);
    free(s->tls);
    s->tls = NULL;
}

int hr__tls_port(const hr_server_t *s, int kind)
{
    return s->tls && (s->tls->ports & (1u << kind));
}

/* The certificate's subject and expiry, for the log. */
static void describe_cert(SSL_CTX *ctx, char *buf, size_t len)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char subj[256] = "?";
    if (!x) {
        snprintf(buf, len, "no certificate");
        return;
    }
    X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
    BIO *b = BIO_new(BIO_s_mem());
    char until[64] = "?";
    if (b && ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
        int n = BIO_read(b, until, sizeof(until) - 1);
        until[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    snprintf(buf, len, "%s, valid until %s", subj, until);
}

void hr__tls_reload(hr_server_t *s)
{
    char err[512], what[400];
    if (!s->tls) {
        if (s->cfg.tls_cert[0])
            HR_LOG(HR_LOG_WARN, 0, "reload: TLS was off at start: turning it on needs a restart");
        return;
    }
    if (!s->cfg.tls_cert[0]) {
        HR_LOG(HR_LOG_WARN, 0,
               "reload: tls-cert is empty: turning TLS off needs a restart; keeping the "
               "current certificate");
        return;
    }
    SSL_CTX *ctx = make_ctx(&s->cfg, err, sizeof(err));
    if (!ctx) {
        HR_LOG(HR_LOG_ERROR, 0, "reload: %s; keeping the current certificate", err);
        return;
    }
    SSL_CTX_free(s->tls->ctx); /* established connections hold their own references */
    s->tls->ctx = ctx;
    describe_cert(ctx, what, sizeof(what));
    HR_LOG(HR_LOG_WARN, 0, "reload: TLS certificate loaded for new connections: %s", what);
}

/* ---- connections ------------------------------------------------------------- */

int hr__tls_accept(hr_conn_t *c)
{
    struct hr_tls_s *t = calloc(1, sizeof(*t));
    if (!t)
        return HR_ENOMEM;
    if (hr_tlsio_new(c->srv->tls->ctx, 1, NULL, &t->io) != HR_OK) {
        free(t);
        return HR_ENOMEM;
    }
    c->tls = t;
    return HR_OK;
}

void hr__tls_free(hr_conn_t *c)
{
    struct hr_tls_s *t = c->tls;
    if (!t)
        return;
    hr_tlsio_free(&t->io);
    free(t->wbuf);
    free(t->raw);
    free(t);
    c->tls = NULL;
}

int hr__tls_ready(const hr_conn_t *c)
{
    return hr_tlsio_established(c->tls->io);
}

/* Keeps `p` to be written as it is, in place of any ciphertext (the peer speaks no TLS). */
static void send_plain(hr_conn_t *c, const void *p, size_t n)
{
    struct hr_tls_s *t = c->tls;
    free(t->raw);
    t->rawlen = 0;
    if ((t->raw = malloc(n))) {
        memcpy(t->raw, p, n);
        t->rawlen = n;
    }
}

/*
 * Plaintext sent to a TLS port gets an answer it can show: a Herald client
 * an ERR frame, an HTTP client a 400 naming the scheme to use.
 */
static void answer_plaintext(hr_conn_t *c, int kind)
{
    hr_server_t *s = c->srv;
    if (kind == 'H' || c->tp->kind == HR_T_WS) { /* any plaintext on the HTTP port: a 400 */
        char resp[384];
        const char *body = c->tp->kind == HR_T_WS
                               ? "this port speaks TLS: use https:// or wss://\n"
                               : "this is Herald's TCP port and it speaks TLS: use tls://\n";
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         strlen(body), body);
        if (n > 0 && (size_t)n < sizeof(resp))
            send_plain(c, resp, (size_t)n);
        return;
    }
    hr_buf_t *b = &s->scratch;
    if (hr_enc_err(b, hr_status_to_wire(HR_EPROTO), "this port speaks TLS: connect with tls://", 0,
                   0) == HR_OK) {
        uint8_t frame[HR_LP_PREFIX + 128];
        if (b->len <= sizeof(frame) - HR_LP_PREFIX) {
            hr_lp_put(frame, (uint32_t)b->len);
            memcpy(frame + HR_LP_PREFIX, b->base, b->len);
            send_plain(c, frame, HR_LP_PREFIX + b->len);
        }
    }
    hr_buf_reset(b);
}

static void tls_failed(hr_conn_t *c, const char *what)
{
    hr_server_t *s = c->srv;
    int plain = hr_tlsio_plaintext(c->tls->io);
    s->stats.tls_failed++;
    if (hr__limits_log_budget(s))
        HR_LOG(HR_LOG_INFO, c->id, "closing: TLS %s on the %s port: %s", what, c->tp->name,
               hr_tlsio_error(c->tls->io));
    if (plain)
        answer_plaintext(c, plain);
    hr__conn_fail(c, HR_OK, "TLS failure"); /* what is sent now is the alert (or answer) */
}

void hr__tls_read(hr_conn_t *c, const char *p, size_t n)
{
    struct hr_tls_s *t = c->tls;
    hr_server_t *s = c->srv;
    int r;
    if (hr_tlsio_feed(t->io, p, n) != HR_OK) {
        hr__conn_close_now(c);
        return;
    }
    if (!hr_tlsio_established(t->io)) {
        r = hr_tlsio_handshake(t->io);
        if (r == HR_EAGAIN) {
            hr__conn_kick(c); /* the handshake's next flight */
            return;
        }
        if (r != HR_OK) {
            tls_failed(c, "handshake failed");
            return;
        }
        s->stats.tls_handshakes++;
        handshakes++;
        handshake_turn = hr__now_ms(s);
        char who[256] = "";
        X509 *peer = SSL_get0_peer_certificate(hr_tlsio_ssl(t->io));
        if (peer && hr_tlsio_peer_verified(t->io))
            X509_NAME_oneline(X509_get_subject_name(peer), who, sizeof(who));
        HR_LOG(HR_LOG_DEBUG, c->id, "TLS: %s %s%s%s", hr_tlsio_version(t->io),
               hr_tlsio_cipher(t->io), who[0] ? ", client certificate " : "", who);
    }
    /* The plaintext goes where the transport wants it: its own buffer (a
     * large frame's) or the loop-wide one (the ciphertext was copied out). */
    for (;;) {
        uv_buf_t b;
        size_t got;
        int own = c->tp->read_buf && c->tp->read_buf(c, &b);
        if (!own)
            b = uv_buf_init(s->rbuf, sizeof(s->rbuf));
        if ((r = hr_tlsio_read(t->io, b.base, b.len, &got)) != HR_OK)
            break;
        if (own)
            c->tp->read_done(c, got);
        else
            c->tp->on_data(c, b.base, got);
        if (c->flags & (HR_C_CLOSING | HR_C_FAILING | HR_C_CLOSED))
            return;
    }
    if (r == HR_ECLOSED) { /* close_notify: the peer is done, as at EOF */
        hr__conn_close_now(c);
        return;
    }
    if (r == HR_ETLS) {
        tls_failed(c, "error");
        return;
    }
    if (hr_tlsio_pending(t->io))
        hr__conn_kick(c); /* a session ticket, a key update */
}

int hr__tls_encrypt(hr_conn_t *c, const uv_buf_t *iov, int n)
{
    return hr_tlsio_write(c->tls->io, iov, (size_t)n);
}

int hr__tls_goodbye(hr_conn_t *c)
{
    struct hr_tls_s *t = c->tls;
    if (t->said_goodbye || !hr_tlsio_established(t->io))
        return 0;
    t->said_goodbye = 1;
    return hr_tlsio_shutdown(t->io) == HR_OK && hr_tlsio_pending(t->io) > 0;
}

static void on_write(uv_write_t *req, int status)
{
    hr_conn_t *c = req->data;
    struct hr_tls_s *t = c->tls;
    free(req);
    c->wreq = NULL;
    free(t->wbuf);
    t->wbuf = NULL;
    t->done(c, status);
}

int hr__tls_send(hr_conn_t *c, void (*done)(hr_conn_t *c, int status))
{
    struct hr_tls_s *t = c->tls;
    if (c->wreq)
        return HR_EAGAIN;
    for (;;) {
        if (!t->wbuf) {
            if (t->raw) { /* the answer to plaintext replaces anything TLS would say */
                t->wbuf = t->raw;
                t->wlen = t->rawlen;
                t->raw = NULL;
                size_t dropped;
                free(hr_tlsio_take(t->io, &dropped));
            } else if (!(t->wbuf = hr_tlsio_take(t->io, &t->wlen))) {
                return HR_OK;
            }
            t->woff = 0;
        }
        uv_buf_t b = uv_buf_init(t->wbuf + t->woff, (unsigned)(t->wlen - t->woff));
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r == UV_EAGAIN)
            r = 0;
        if (r < 0)
            return r;
        t->woff += (size_t)r;
        if (t->woff == t->wlen) {
            free(t->wbuf);
            t->wbuf = NULL;
            continue;
        }
        b = uv_buf_init(t->wbuf + t->woff, (unsigned)(t->wlen - t->woff));
        uv_write_t *req = malloc(sizeof(*req));
        if (!req)
            return HR_ENOMEM;
        req->data = c;
        if ((r = uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, on_write)) != 0) {
            free(req);
            return r;
        }
        c->wreq = req;
        t->done = done;
        return HR_EAGAIN;
    }
}

/*
 * A handshake allocates some 30 KiB of temporaries (record buffers, the
 * handshake transcript, key exchange) that it frees once done, while the
 * session it leaves (about 14 KiB with OpenSSL 3) lives on between them.
 * After a burst of handshakes the freed pages stay in the heap, scattered
 * between live sessions, and would count against every idle connection
 * for good. Once handshakes have paused, or after many, they go back to
 * the system (the WebSocket transport does the same after releasing its
 * buffers); the sweep checks, so that is one call per sweep at most.
 */
#define TRIM_MIN 64       /* handshakes worth a trim, */
#define TRIM_QUIET_MS 100 /* once none has completed for this long */
#define TRIM_FORCE 4096   /* trim even while handshakes go on */

static void trim_after_handshakes(uint64_t now)
{
    if (handshakes < TRIM_MIN || (now - handshake_turn < TRIM_QUIET_MS && handshakes < TRIM_FORCE))
        return;
    handshakes = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

int hr__tls_sweep(hr_conn_t *c, uint64_t now)
{
    hr_server_t *s = c->srv;
    if (!c->tls)
        return 0;
    trim_after_handshakes(now);
    if (hr_tlsio_established(c->tls->io))
        return 0;
    int ws = c->tp->kind == HR_T_WS;
    uint64_t limit = (uint64_t)(ws ? s->cfg.ws_handshake_ms : s->cfg.hello_timeout_ms);
    if (now - c->idle_since < limit)
        return 0;
    s->stats.tls_failed++;
    if (hr__limits_log_budget(s))
        HR_LOG(HR_LOG_INFO, c->id, "closing: TLS handshake not completed within %s (%llu ms)",
               ws ? "ws-handshake-ms" : "hello-timeout-ms", (unsigned long long)limit);
    hr__conn_close_now(c);
    return 1;
}
