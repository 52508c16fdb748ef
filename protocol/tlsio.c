/* SPDX-License-Identifier: MIT */
/*
 * TLS pump (tlsio.h): OpenSSL over a BIO of our own instead of a socket.
 *
 * Why not BIO_s_mem or a BIO pair: a memory BIO never gives back the
 * buffer it grew to, and a BIO pair allocates two fixed 17 KiB buffers per
 * session, so either would make every idle TLS connection keep tens of KiB.
 * This BIO reads from the bytes fed (freed as soon as they are used up) and
 * writes into a buffer the caller takes away whole.
 */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/status.h"
#include "tlsio.h"

#define RECORD 16384 /* TLS maximum plaintext per record */
#define OUT_MIN 4096

struct hr_tlsio_s {
    SSL *ssl;
    uint8_t *in; /* fed, not yet read by the session: in[in_off .. in_len) */
    size_t in_off, in_len;
    uint8_t *out; /* ciphertext waiting to be taken */
    size_t out_len, out_cap;
    char *err; /* the last failure's reason, or NULL */
    int server;
    int sniffed; /* server: the first bytes were checked for plaintext */
    int plain;   /* server: the peer spoke plaintext (HTTP if 'H') */
};

/* ---- the BIO ---------------------------------------------------------------- */

/* Room for `n` more bytes of output. 0, or -1 when out of memory. */
static int out_reserve(hr_tlsio_t *t, size_t n)
{
    if (t->out_len + n <= t->out_cap)
        return 0;
    size_t cap = t->out_cap ? t->out_cap : OUT_MIN;
    while (cap < t->out_len + n)
        cap *= 2;
    uint8_t *q = realloc(t->out, cap);
    if (!q)
        return -1;
    t->out = q;
    t->out_cap = cap;
    return 0;
}

static int bio_write(BIO *b, const char *p, size_t n, size_t *written)
{
    hr_tlsio_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (out_reserve(t, n) != 0)
        return 0;
    memcpy(t->out + t->out_len, p, n);
    t->out_len += n;
    *written = n;
    return 1;
}

static int bio_read(BIO *b, char *p, size_t n, size_t *got)
{
    hr_tlsio_t *t = BIO_get_data(b);
    size_t have = t->in_len - t->in_off;
    BIO_clear_retry_flags(b);
    if (have == 0) {
        BIO_set_retry_read(b);
        *got = 0;
        return 0;
    }
    if (n > have)
        n = have;
    memcpy(p, t->in + t->in_off, n);
    t->in_off += n;
    if (t->in_off == t->in_len) { /* used up: an idle session holds no input */
        free(t->in);
        t->in = NULL;
        t->in_off = t->in_len = 0;
    }
    *got = n;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    hr_tlsio_t *t = BIO_get_data(b);
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(t->in_len - t->in_off);
    case BIO_CTRL_WPENDING:
        return 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "herald tlsio");
    if (m && BIO_meth_set_write_ex(m, bio_write) && BIO_meth_set_read_ex(m, bio_read) &&
        BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
        bio_method = m;
    else
        BIO_meth_free(m);
}

/* ---- errors ----------------------------------------------------------------- */

static void set_err(hr_tlsio_t *t, const char *msg)
{
    free(t->err);
    t->err = strdup(msg);
}

/* Describes OpenSSL's error queue (the oldest entry says what went wrong first). */
static void ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : e ? "unknown OpenSSL error" : "");
    ERR_clear_error();
}

/* The reason of a failed SSL call: verification, alerts, or OpenSSL's queue. */
static int fail(hr_tlsio_t *t, int sslerr)
{
    char why[200], msg[320];
    if (t->plain) {
        set_err(t, t->plain == 'H' ? "plaintext HTTP request on a TLS port (use https:// or wss://)"
                                   : "plaintext on a TLS port (the peer did not start TLS)");
        ERR_clear_error();
        return HR_ETLS;
    }
    ossl_reason(why, sizeof(why));
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK)
        snprintf(msg, sizeof(msg), "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
    else if (why[0])
        snprintf(msg, sizeof(msg), "%s", why);
    else
        snprintf(msg, sizeof(msg), "TLS failure (SSL error %d)", sslerr);
    set_err(t, msg);
    return HR_ETLS;
}

const char *hr_tlsio_error(const hr_tlsio_t *t)
{
    return t->err ? t->err : "";
}

/* ---- contexts ----------------------------------------------------------------- */

/* Mozilla's "intermediate" TLS 1.2 list: ECDHE key exchange, AEAD ciphers only. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    const char *want = arg;
    size_t wl = strlen(want);
    (void)ssl;
    for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
        if (in[i] == wl && i + 1u + wl <= inlen && memcmp(in + i + 1, want, wl) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)wl;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK; /* go on without ALPN rather than refuse */
}

static int ctx_fail(SSL_CTX *ctx, int status, const char *what, const char *file, char *err,
                    size_t errlen)
{
    char why[200];
    ossl_reason(why, sizeof(why));
    if (err && errlen)
        snprintf(err, errlen, "%s%s%s%s%s", what, file ? " " : "", file ? file : "",
                 why[0] ? ": " : "", why);
    SSL_CTX_free(ctx);
    return status;
}

int hr_tlsio_ctx_new(int server, const hr_tlsio_opts_t *o, SSL_CTX **out, char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "herald";
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    int verify = o->verify != HR_TLSIO_VERIFY_DEFAULT ? o->verify
                 : server                             ? HR_TLSIO_VERIFY_NONE
                                                      : HR_TLSIO_VERIFY_REQUIRED;
    if ((server && (!o->cert_file || !o->key_file)) || (!o->cert_file != !o->key_file) ||
        verify < HR_TLSIO_VERIFY_NONE || verify > HR_TLSIO_VERIFY_REQUIRED ||
        (o->alpn && (!o->alpn[0] || strlen(o->alpn) > 255))) {
        if (err && errlen)
            snprintf(err, errlen, "%s",
                     server && !o->cert_file ? "a TLS server needs a certificate and a key"
                                             : "certificate and key go together");
        return HR_EINVAL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx)
        return ctx_fail(NULL, HR_ENOMEM, "SSL_CTX_new failed", NULL, err, errlen);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS))
        return ctx_fail(ctx, HR_ETLS, "cipher list refused", NULL, err, errlen);
    if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
            return ctx_fail(ctx, HR_ETLS, "cannot load certificate", o->cert_file, err, errlen);
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
            return ctx_fail(ctx, HR_ETLS, "cannot load private key", o->key_file, err, errlen);
        if (SSL_CTX_check_private_key(ctx) != 1)
            return ctx_fail(ctx, HR_ETLS, "private key does not match certificate", o->key_file,
                            err, errlen);
    }
    if (o->ca_file || o->ca_dir) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca_file, o->ca_dir) != 1)
            return ctx_fail(ctx, HR_ETLS, "cannot load CA", o->ca_file ? o->ca_file : o->ca_dir,
                            err, errlen);
    } else if (!server && verify != HR_TLSIO_VERIFY_NONE) {
        SSL_CTX_set_default_verify_paths(ctx);
    }
    if (server) {
        if (verify != HR_TLSIO_VERIFY_NONE && !o->ca_file && !o->ca_dir) {
            if (err && errlen)
                snprintf(err, errlen, "verifying client certificates needs a CA");
            SSL_CTX_free(ctx);
            return HR_EINVAL;
        }
        if (verify != HR_TLSIO_VERIFY_NONE && o->ca_file) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
            if (names)
                SSL_CTX_set_client_CA_list(ctx, names);
        }
        /* No server-side session cache (stateless tickets resume instead),
         * so sessions cost no memory once their connection is gone. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
        SSL_CTX_set_num_tickets(ctx, 1);
        if (o->alpn)
            SSL_CTX_set_alpn_select_cb(ctx, alpn_select, (void *)o->alpn);
    } else if (o->alpn) {
        unsigned char wire[256];
        size_t n = strlen(o->alpn);
        wire[0] = (unsigned char)n;
        memcpy(wire + 1, o->alpn, n);
        if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)n + 1) != 0)
            return ctx_fail(ctx, HR_ENOMEM, "ALPN refused", NULL, err, errlen);
    }
    int mode = SSL_VERIFY_NONE;
    if (verify == HR_TLSIO_VERIFY_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    else if (verify == HR_TLSIO_VERIFY_REQUIRED)
        mode = SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    SSL_CTX_set_verify(ctx, mode, NULL);
    *out = ctx;
    return HR_OK;
}

/* ---- pumps -------------------------------------------------------------------- */

int hr_tlsio_new(SSL_CTX *ctx, int server, const char *host, hr_tlsio_t **out)
{
    static CRYPTO_ONCE once = CRYPTO_ONCE_STATIC_INIT;
    *out = NULL;
    if (!ctx)
        return HR_EINVAL;
    if (!CRYPTO_THREAD_run_once(&once, bio_method_init) || !bio_method)
        return HR_ENOMEM;
    hr_tlsio_t *t = calloc(1, sizeof(*t));
    if (!t)
        return HR_ENOMEM;
    t->server = server;
    t->ssl = SSL_new(ctx);
    BIO *b = t->ssl ? BIO_new(bio_method) : NULL;
    if (!b) {
        hr_tlsio_free(&t);
        ERR_clear_error();
        return HR_ENOMEM;
    }
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b); /* the session owns the BIO (one reference, both ways) */
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (host && host[0]) {
            unsigned char addr[16];
            int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
            int ok = 1;
            if (!is_ip)
                ok =
                    SSL_set_tlsext_host_name(t->ssl, host) == 1 && SSL_set1_host(t->ssl, host) == 1;
            else
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1;
            if (!ok) {
                hr_tlsio_free(&t);
                ERR_clear_error();
                return HR_EINVAL;
            }
        }
    }
    *out = t;
    return HR_OK;
}

void hr_tlsio_free(hr_tlsio_t **tp)
{
    hr_tlsio_t *t = *tp;
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t->in);
    free(t->out);
    free(t->err);
    free(t);
    *tp = NULL;
}

/*
 * A server's first bytes are checked for plaintext: a TLS connection opens
 * with a handshake record (0x16, then version 3.x). Anything else fails the
 * handshake anyway; knowing that it was plaintext makes the error clear.
 */
static void sniff(hr_tlsio_t *t, const uint8_t *p, size_t n)
{
    static const char *const methods[] = {"GET ", "POST", "HEAD", "PUT ",
                                          "OPTI", "DELE", "PATC", "CONN"};
    t->sniffed = 1;
    if (p[0] == 0x16 && (n < 2 || p[1] == 0x03))
        return;
    t->plain = 'P';
    for (size_t i = 0; n >= 4 && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (memcmp(p, methods[i], 4) == 0)
            t->plain = 'H';
}

int hr_tlsio_feed(hr_tlsio_t *t, const void *p, size_t n)
{
    if (n == 0)
        return HR_OK;
    if (t->server && !t->sniffed)
        sniff(t, p, n);
    if (t->in_off) { /* move the unread rest to the front */
        memmove(t->in, t->in + t->in_off, t->in_len - t->in_off);
        t->in_len -= t->in_off;
        t->in_off = 0;
    }
    uint8_t *q = realloc(t->in, t->in_len + n);
    if (!q)
        return HR_ENOMEM;
    memcpy(q + t->in_len, p, n);
    t->in = q;
    t->in_len += n;
    return HR_OK;
}

int hr_tlsio_plaintext(const hr_tlsio_t *t)
{
    return t->plain;
}

int hr_tlsio_handshake(hr_tlsio_t *t)
{
    if (t->plain)
        return fail(t, 0);
    if (SSL_is_init_finished(t->ssl))
        return HR_OK;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
        return HR_OK;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return HR_EAGAIN;
    return fail(t, e);
}

int hr_tlsio_established(const hr_tlsio_t *t)
{
    return SSL_is_init_finished(t->ssl);
}

int hr_tlsio_read(hr_tlsio_t *t, void *buf, size_t cap, size_t *got)
{
    size_t n = 0;
    *got = 0;
    if (cap == 0)
        return HR_EINVAL;
    if (t->plain)
        return fail(t, 0);
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, buf, cap, &n) == 1) {
        *got = n;
        return HR_OK;
    }
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return HR_EAGAIN;
    if (e == SSL_ERROR_ZERO_RETURN)
        return HR_ECLOSED;
    return fail(t, e);
}

static int write_some(hr_tlsio_t *t, const void *p, size_t n)
{
    size_t done = 0;
    if (SSL_write_ex(t->ssl, p, n, &done) == 1 && done == n)
        return HR_OK;
    int e = SSL_get_error(t->ssl, 0);
    if (t->out_len && e == SSL_ERROR_SYSCALL && !ERR_peek_error())
        return HR_ENOMEM; /* the BIO could not grow its buffer */
    return fail(t, e);
}

int hr_tlsio_write(hr_tlsio_t *t, const uv_buf_t *iov, size_t niov)
{
    uint8_t stage[RECORD]; /* small pieces are gathered into one full record */
    size_t sn = 0;
    int r;
    if (!SSL_is_init_finished(t->ssl))
        return HR_EAGAIN;
    ERR_clear_error();
    size_t total = 0;
    for (size_t i = 0; i < niov; i++)
        total += iov[i].len;
    /* The ciphertext in one allocation: each record adds at most 29 bytes (TLS 1.2 AEAD). */
    if (out_reserve(t, total + (total / RECORD + 1) * 29) != 0)
        return HR_ENOMEM;
    for (size_t i = 0; i < niov; i++) {
        const uint8_t *p = (const uint8_t *)iov[i].base;
        size_t n = iov[i].len;
        while (n) {
            if (sn == 0 && n >= RECORD) { /* whole records straight from the caller's bytes */
                size_t k = n - n % RECORD;
                if ((r = write_some(t, p, k)) != HR_OK)
                    return r;
                p += k;
                n -= k;
                continue;
            }
            size_t k = RECORD - sn < n ? RECORD - sn : n;
            memcpy(stage + sn, p, k);
            sn += k;
            p += k;
            n -= k;
            if (sn == RECORD) {
                if ((r = write_some(t, stage, sn)) != HR_OK)
                    return r;
                sn = 0;
            }
        }
    }
    return sn ? write_some(t, stage, sn) : HR_OK;
}

int hr_tlsio_shutdown(hr_tlsio_t *t)
{
    ERR_clear_error();
    if (!SSL_is_init_finished(t->ssl))
        return HR_OK; /* nothing to close politely */
    int r = SSL_shutdown(t->ssl);
    if (r >= 0)
        return HR_OK;
    return fail(t, SSL_get_error(t->ssl, r));
}

size_t hr_tlsio_unread(const hr_tlsio_t *t)
{
    return t->in_len - t->in_off + (size_t)SSL_pending(t->ssl);
}

size_t hr_tlsio_pending(const hr_tlsio_t *t)
{
    return t->out_len;
}

void *hr_tlsio_take(hr_tlsio_t *t, size_t *len)
{
    void *p = t->out;
    *len = t->out_len;
    if (!t->out_len) {
        *len = 0;
        return NULL;
    }
    t->out = NULL;
    t->out_len = t->out_cap = 0;
    return p;
}

const char *hr_tlsio_version(const hr_tlsio_t *t)
{
    return SSL_get_version(t->ssl);
}

const char *hr_tlsio_cipher(const hr_tlsio_t *t)
{
    const char *c = SSL_get_cipher_name(t->ssl);
    return c ? c : "";
}

int hr_tlsio_alpn_is(const hr_tlsio_t *t, const char *proto)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return p && n == strlen(proto) && memcmp(p, proto, n) == 0;
}

int hr_tlsio_peer_verified(const hr_tlsio_t *t)
{
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    return x && SSL_get_verify_result(t->ssl) == X509_V_OK;
}

SSL *hr_tlsio_ssl(hr_tlsio_t *t)
{
    return t->ssl;
}
