/* SPDX-License-Identifier: MIT */
/* libherald TLS (tls://, wss://): the protocol's TLS pump driven by the connection's libuv I/O. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "async.h"
#include "tlsio.h"

/*
 * OpenSSL never touches the socket: the pump (protocol/tlsio.c) is fed the
 * ciphertext the socket delivered and hands over the ciphertext to write,
 * so the handshake runs on the loop like any other input and the connect
 * timeout bounds it. The pump's output is taken after every step and
 * written in that order, which keeps the handshake's last flight ahead of
 * the first application bytes.
 */

/* ---- context: one per client, from the options ------------------------- */

/*
 * A new session from the server (with TLS 1.3, a ticket that arrives after
 * the handshake) is kept to resume the next connection: a reconnect then
 * skips the certificate exchange and its signatures, which matters when a
 * restarted broker takes back all its clients at once. The client keeps a
 * copy: OpenSSL marks the session its connection used as not resumable when
 * that connection ends without close_notify, which is how connections are
 * lost, and since TLS 1.1 that is no reason not to resume.
 */
static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    hr__conn_t *conn = SSL_get_app_data(ssl);
    hr_client_t *c = conn ? conn->c : NULL;
    SSL_SESSION *copy = c ? SSL_SESSION_dup(sess) : NULL;
    if (copy) {
        SSL_SESSION_free(c->tls_session);
        c->tls_session = copy;
    }
    return 0; /* OpenSSL keeps its own reference */
}

int hr__tls_ctx_new(const hr_client_opts_t *o, int wss, void **out)
{
    hr_tlsio_opts_t to = {0};
    SSL_CTX *ctx;
    if (o->tls_key_file && !o->tls_cert_file)
        return HR_EINVAL;
    to.ca_file = o->tls_ca_file;
    to.ca_dir = o->tls_ca_dir;
    to.cert_file = o->tls_cert_file;
    to.key_file = o->tls_cert_file && !o->tls_key_file ? o->tls_cert_file : o->tls_key_file;
    to.verify =
        o->tls_verify == HR_TLS_VERIFY_NONE ? HR_TLSIO_VERIFY_NONE : HR_TLSIO_VERIFY_REQUIRED;
    to.alpn = wss ? "http/1.1" : NULL;
    int r = hr_tlsio_ctx_new(0, &to, &ctx, NULL, 0);
    if (r == HR_ETLS)
        return HR_ETLSCONF; /* a file that does not load, or a key for another certificate */
    if (r != HR_OK)
        return r;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    *out = ctx;
    return HR_OK;
}

void hr__tls_client_free(hr_client_t *c)
{
    SSL_SESSION_free(c->tls_session);
    SSL_CTX_free(c->tls_ctx);
}

/* ---- one connection ---------------------------------------------------- */

static int is_ip(const char *host)
{
    unsigned char a[16];
    return uv_inet_pton(AF_INET, host, a) == 0 || uv_inet_pton(AF_INET6, host, a) == 0;
}

/* Notes a CertificateRequest from the server: a refusal may come as a bare reset later. */
static void watch_msgs(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                       void *arg)
{
    hr__conn_t *conn = arg;
    if (!write_p && type == SSL3_RT_HANDSHAKE && len > 0 &&
        ((const uint8_t *)buf)[0] == SSL3_MT_CERTIFICATE_REQUEST)
        conn->tls_asked = 1;
}

int hr__tls_new(hr_client_t *c, hr__conn_t *conn)
{
    const char *name = c->tls_name ? c->tls_name : c->host;
    int full = c->o.tls_verify == HR_TLS_VERIFY_FULL;
    /* With a name, the pump sends it as SNI and requires the certificate to match it. */
    int r = hr_tlsio_new(c->tls_ctx, 0, full ? name : NULL, &conn->tls);
    if (r != HR_OK)
        return r;
    conn->tls_first = -1;
    SSL *ssl = hr_tlsio_ssl(conn->tls);
    SSL_set_app_data(ssl, conn);
    if (c->tls_session && SSL_set_session(ssl, c->tls_session) != 1)
        return HR_ENOMEM;
    /* A wildcard stands for a whole label only ("*.example.com", never "w*.example.com"). */
    X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set_msg_callback(ssl, watch_msgs);
    SSL_set_msg_callback_arg(ssl, conn);
    if (!full && !is_ip(name) && SSL_set_tlsext_host_name(ssl, name) != 1)
        return HR_ENOMEM;
    return HR_OK;
}

int hr__tls_resumed(const hr_client_t *c)
{
    return c->conn && c->conn->tls && SSL_session_reused(hr_tlsio_ssl(c->conn->tls));
}

int hr__tls_ready(const hr__conn_t *conn)
{
    return hr_tlsio_established(conn->tls);
}

void hr__tls_free(hr__conn_t *conn)
{
    hr_tlsio_free(&conn->tls);
}

/* Appends the ciphertext the pump has produced to `out` (adopting it when `out` is empty). */
static int take(hr_tlsio_t *t, hr_buf_t *out)
{
    size_t n;
    uint8_t *p = hr_tlsio_take(t, &n);
    if (!p)
        return HR_OK;
    if (out->len == 0) {
        free(out->base);
        out->base = p;
        out->len = out->cap = n;
        return HR_OK;
    }
    int r = hr_buf_append(out, p, n);
    free(p);
    return r;
}

/*
 * Turns a pump failure into a status and a sentence for on_error. The
 * certificate check's own verdict is the most precise; then alerts in
 * which the server complains about our certificate.
 */
static int tls_error(hr_client_t *c, hr__conn_t *conn, int r)
{
    char d[HR__DETAIL_MAX];
    const char *why = hr_tlsio_error(conn->tls);
    long v = SSL_get_verify_result(hr_tlsio_ssl(conn->tls));
    int status = HR_ETLS;
    if (r != HR_ETLS)
        return r;
    if (!hr_tlsio_established(conn->tls) && v != X509_V_OK) {
        switch (v) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
            status = HR_ECERTEXPIRED;
            break;
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            status = HR_ECERTNAME;
            break;
        default:
            status = HR_ECERT;
            break;
        }
        snprintf(d, sizeof(d), "TLS: the certificate of %s: %s",
                 c->tls_name ? c->tls_name : c->host, X509_verify_cert_error_string(v));
    } else if (strstr(why, "alert") && (strstr(why, "certificate") || strstr(why, "unknown ca"))) {
        /* "tlsv13 alert certificate required", "sslv3 alert bad certificate", ... */
        status = HR_ECLIENTCERT;
        snprintf(d, sizeof(d), "TLS: the server refused %s (%s)",
                 SSL_get_certificate(hr_tlsio_ssl(conn->tls)) ? "our client certificate"
                                                              : "to go on without a certificate",
                 why);
    } else {
        snprintf(d, sizeof(d), "TLS: %s", why[0] ? why : "failure");
    }
    hr__report(c, status, NULL, d);
    return status;
}

/*
 * With TLS 1.3 the client finishes its handshake before the server has
 * checked the client's certificate, and sends HELLO at once; a server that
 * refuses the certificate then closes, and its alert is often lost to the
 * reset that the unread HELLO causes. A connection that ends that way,
 * before WELCOME and after the server asked for a certificate, is taken
 * for that refusal.
 */
int hr__tls_lost(hr_client_t *c, hr__conn_t *conn, int status)
{
    char d[HR__DETAIL_MAX];
    if (!conn->tls || !conn->tls_asked || !hr_tlsio_established(conn->tls) || c->welcomed ||
        (status != UV_ECONNRESET && status != UV_EOF))
        return status;
    snprintf(d, sizeof(d), "TLS: the server asked for a client certificate, then closed (%s)%s",
             uv_err_name(status),
             SSL_get_certificate(hr_tlsio_ssl(conn->tls)) ? ": it refused ours"
                                                          : ": it refuses to go on without one");
    hr__report(c, HR_ECLIENTCERT, NULL, d);
    return HR_ECLIENTCERT;
}

int hr__tls_input(hr_client_t *c, hr__conn_t *conn, const uint8_t *p, size_t n, hr_buf_t *plain,
                  hr_buf_t *wire, int (*on_up)(hr_client_t *c, void *arg), void *arg)
{
    hr_tlsio_t *t = conn->tls;
    int r;
    if (n && conn->tls_first < 0) {
        /* A TLS server's first record is a handshake (22) or an alert (21). */
        conn->tls_first = p[0];
        if (p[0] != 0x15 && p[0] != 0x16) {
            hr__report(c, HR_EPLAINPORT, NULL,
                       "TLS: the server answered in plaintext: a tcp:// or ws:// port?");
            return HR_EPLAINPORT;
        }
    }
    if ((r = hr_tlsio_feed(t, p, n)) != HR_OK)
        return r;
    if (!hr_tlsio_established(t)) {
        r = hr_tlsio_handshake(t);
        if (take(t, wire) != HR_OK)
            return HR_ENOMEM;
        if (r == HR_EAGAIN)
            return HR_OK;
        if (r != HR_OK)
            return tls_error(c, conn, r);
        if ((r = on_up(c, arg)) != HR_OK)
            return r;
    }
    for (;;) {
        size_t got = 0;
        if (hr_buf_reserve(plain, 16384) != HR_OK)
            return HR_ENOMEM;
        r = hr_tlsio_read(t, plain->base + plain->len, plain->cap - plain->len, &got);
        if (take(t, wire) != HR_OK)
            return HR_ENOMEM;
        if (r == HR_EAGAIN)
            return HR_OK;
        if (r == HR_ECLOSED)
            return UV_EOF; /* close_notify */
        if (r != HR_OK)
            return tls_error(c, conn, r);
        plain->len += got;
    }
}

int hr__tls_seal(hr_client_t *c, hr__conn_t *conn, hr_buf_t *b)
{
    hr_buf_t out;
    hr_buf_init(&out);
    int r = take(conn->tls, &out); /* anything the pump had pending goes first */
    if (r == HR_OK && b->len) {
        uv_buf_t iov = uv_buf_init((char *)b->base, (unsigned)b->len);
        r = hr_tlsio_write(conn->tls, &iov, 1);
        if (r == HR_OK)
            r = take(conn->tls, &out);
        else
            r = tls_error(c, conn, r);
    }
    if (r == HR_OK) {
        hr_buf_t tmp = *b;
        *b = out;
        out = tmp;
    }
    hr_buf_destroy(&out);
    return r;
}
