/* SPDX-License-Identifier: MIT */
/*
 * TLS pump: one OpenSSL session over memory, with no socket code. Ciphertext
 * that arrived goes in with hr_tlsio_feed(); plaintext comes out of
 * hr_tlsio_read(); plaintext to send goes in with hr_tlsio_write() (gathered
 * from iovecs into full-size records); the ciphertext to send is taken with
 * hr_tlsio_take(). The caller owns the socket and the event loop, so the
 * broker (server side) and libherald (client side) share this code.
 *
 * Memory: a pump keeps no buffer while idle. Input it was fed is held only
 * until it is decrypted; output is handed over whole to the caller; the
 * session's own record buffers are released between records
 * (SSL_MODE_RELEASE_BUFFERS, set by hr_tlsio_ctx_new()).
 *
 * Threading: a pump belongs to one thread. A context may be shared by pumps
 * on several threads (OpenSSL locks it).
 */
#ifndef HERALD_TLSIO_H
#define HERALD_TLSIO_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <uv.h>

#include "herald/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hr_tlsio_s hr_tlsio_t;

/** Peer certificate checking. The zero value is the safe default for each side. */
enum hr_tlsio_verify {
    HR_TLSIO_VERIFY_DEFAULT = 0,  /* client: REQUIRED; server: NONE */
    HR_TLSIO_VERIFY_NONE = 1,     /* no certificate asked for or checked */
    HR_TLSIO_VERIFY_OPTIONAL = 2, /* server: ask; a certificate sent must verify, none is fine */
    HR_TLSIO_VERIFY_REQUIRED = 3, /* a verified certificate is required */
};

/** What a context is built from. Every field may be NULL/0 unless stated. */
typedef struct {
    const char *cert_file; /* PEM certificate chain (server: required; client: its own cert) */
    const char *key_file;  /* PEM private key for cert_file (required with cert_file) */
    const char *ca_file;   /* PEM CA bundle to verify peers against */
    const char *ca_dir;    /* hashed CA directory (c_rehash) to verify peers against */
    int verify;            /* enum hr_tlsio_verify */
    const char *alpn;      /* one protocol name: a server selects it when the client offers
                              it, a client offers it; NULL: no ALPN */
} hr_tlsio_opts_t;

/**
 * Creates a context: TLS 1.2 minimum, forward-secret AEAD ciphers for
 * TLS 1.2 (OpenSSL's TLS 1.3 defaults), no renegotiation, no compression,
 * buffers released between records. A client context with no CA given
 * verifies against the system's default CA paths unless verify is NONE.
 * On failure returns HR_EINVAL (bad options), HR_ETLS (a file could not be
 * loaded, or key and certificate do not match) or HR_ENOMEM, and writes a
 * readable reason into err (errlen bytes, NUL-terminated, may be NULL).
 * Free the context with SSL_CTX_free().
 */
int hr_tlsio_ctx_new(int server, const hr_tlsio_opts_t *o, SSL_CTX **out, char *err, size_t errlen);

/**
 * Creates a pump on `ctx` (which it references; the caller may free its own
 * reference). server: 1 accepts, 0 connects. host (client only, may be NULL):
 * sent as SNI unless it is an IP address, and the name or address the
 * server's certificate must match when the context verifies peers.
 * Returns HR_OK, HR_ENOMEM or HR_EINVAL.
 */
int hr_tlsio_new(SSL_CTX *ctx, int server, const char *host, hr_tlsio_t **out);

/** Frees the pump and any bytes it holds; sets *t to NULL. NULL is fine. */
void hr_tlsio_free(hr_tlsio_t **t);

/**
 * Hands over `n` bytes of ciphertext that arrived; the pump copies what it
 * cannot consume right away, so `p` is the caller's again on return.
 * Call hr_tlsio_read() until it returns HR_EAGAIN to drain it.
 * Returns HR_OK or HR_ENOMEM.
 */
int hr_tlsio_feed(hr_tlsio_t *t, const void *p, size_t n);

/**
 * Advances the handshake with what was fed (and, for a client, starts it).
 * Returns HR_OK once established, HR_EAGAIN while it needs more input
 * (hr_tlsio_take() may have ciphertext to send), HR_ETLS on failure
 * (reason in hr_tlsio_error(); an alert may be waiting to be taken).
 */
int hr_tlsio_handshake(hr_tlsio_t *t);

/** Nonzero once the handshake has completed. */
int hr_tlsio_established(const hr_tlsio_t *t);

/**
 * Decrypts into buf (cap bytes), finishing the handshake first if needed.
 * Returns HR_OK with *got > 0; HR_EAGAIN when all input fed so far has been
 * used (feed more); HR_ECLOSED when the peer sent close_notify; HR_ETLS on
 * failure (reason in hr_tlsio_error()); HR_EINVAL if cap is 0. Answers the session needs to send
 * (handshake, alerts, key updates) may be left to take after any call.
 */
int hr_tlsio_read(hr_tlsio_t *t, void *buf, size_t cap, size_t *got);

/**
 * Encrypts the iovecs in order, coalescing them into records of up to 16 KiB
 * plaintext (so many small iovecs make one record, not one each). All of
 * it is consumed on success. Returns HR_OK; HR_EAGAIN before the handshake
 * completed (nothing consumed); HR_ETLS or HR_ENOMEM on failure.
 */
int hr_tlsio_write(hr_tlsio_t *t, const uv_buf_t *iov, size_t niov);

/** Queues close_notify (take it to send). Returns HR_OK or HR_ETLS. */
int hr_tlsio_shutdown(hr_tlsio_t *t);

/**
 * Input fed but not read out yet (ciphertext not yet decrypted, or a record's
 * plaintext not yet read): nonzero means hr_tlsio_read() may still give
 * bytes without more being fed. A caller that stops reading early (for
 * fairness) must come back while this is nonzero, since the socket will not
 * tell it to.
 */
size_t hr_tlsio_unread(const hr_tlsio_t *t);

/** Ciphertext bytes waiting to be taken. */
size_t hr_tlsio_pending(const hr_tlsio_t *t);

/**
 * Hands the waiting ciphertext to the caller: returns a malloc'd buffer of
 * *len bytes (release it with free()), or NULL with *len 0 when none waits.
 * Later output goes into a new buffer, so a taken buffer stays valid while
 * a write of it is in flight.
 */
void *hr_tlsio_take(hr_tlsio_t *t, size_t *len);

/** The reason of the last HR_ETLS ("certificate verify failed: certificate
 *  has expired", "plaintext HTTP request on a TLS port", ...). Valid until the next call on t;
 *  "" if none. */
const char *hr_tlsio_error(const hr_tlsio_t *t);

/** Negotiated protocol version ("TLSv1.3") and cipher name; static strings. */
const char *hr_tlsio_version(const hr_tlsio_t *t);
const char *hr_tlsio_cipher(const hr_tlsio_t *t);

/** Nonzero when ALPN selected `proto` ("http/1.1"). */
int hr_tlsio_alpn_is(const hr_tlsio_t *t, const char *proto);

/**
 * Server side: nonzero when the peer's first bytes were not TLS at all:
 * 'H' when they look like a plaintext HTTP request, 'P' otherwise. The
 * handshake then fails with HR_ETLS without answering; the caller may send
 * a plaintext answer of its own before closing.
 */
int hr_tlsio_plaintext(const hr_tlsio_t *t);

/** Nonzero when the peer presented a certificate that verified. */
int hr_tlsio_peer_verified(const hr_tlsio_t *t);

/** The session (for what the pump does not wrap; do not do I/O on it). */
SSL *hr_tlsio_ssl(hr_tlsio_t *t);

#ifdef __cplusplus
}
#endif
#endif
