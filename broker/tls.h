/* SPDX-License-Identifier: MIT */
/*
 * TLS on the broker's ports (tls.c): one OpenSSL context per worker, made
 * from tls-cert/tls-key (and tls-ca, tls-verify), and one TLS pump per
 * connection accepted on a port that speaks TLS. conn.c calls in at four
 * places: reading (ciphertext in, plaintext to the transport), flushing
 * (queued plaintext encrypted in full records, ciphertext written), the
 * sweep (handshake deadlines) and closing. A plain connection has c->tls
 * NULL and pays one test at each of them. Loop thread only.
 */
#ifndef HERALD_BROKER_TLS_H
#define HERALD_BROKER_TLS_H

#include <uv.h>

struct hr_server_s;
struct hr_conn_s;
struct hr_listener_s;

/**
 * Loads the context when tls-cert is set; checks the TLS settings.
 * Returns HR_OK (also when TLS is off), or a failure after printing the
 * reason to stderr.
 */
int hr__tls_init(struct hr_server_s *s);
void hr__tls_destroy(struct hr_server_s *s);

/** Whether the listener of transport kind `kind` speaks TLS. */
int hr__tls_port(const struct hr_server_s *s, int kind);

/**
 * SIGHUP: builds a new context from the current settings (files read
 * again). New connections get it; established ones keep theirs. A context
 * that cannot be built leaves the old one in use and logs why.
 */
void hr__tls_reload(struct hr_server_s *s);

/** Starts TLS on a connection just accepted on a TLS port. HR_OK or HR_ENOMEM. */
int hr__tls_accept(struct hr_conn_s *c);

/** Ciphertext `p`/`n` arrived (borrowed): decrypts and hands plaintext to the transport. */
void hr__tls_read(struct hr_conn_s *c, const char *p, size_t n);

/** Whether plaintext can be encrypted now (the handshake is over). */
int hr__tls_ready(const struct hr_conn_s *c);

/** Encrypts the iovecs (all consumed). HR_OK, or a failure: close the connection. */
int hr__tls_encrypt(struct hr_conn_s *c, const uv_buf_t *iov, int n);

/**
 * Writes the bytes waiting to go out (ciphertext, or a plaintext answer to a
 * peer that did not speak TLS): HR_OK when all went, HR_EAGAIN while a write
 * is in flight (`done` runs when it ends, status as uv_write's), or a
 * failure: close the connection.
 */
int hr__tls_send(struct hr_conn_s *c, void (*done)(struct hr_conn_s *c, int status));

/** A closing connection: queues close_notify once; 1 if it queued something to send. */
int hr__tls_goodbye(struct hr_conn_s *c);

/** Handshake deadline (hello-timeout-ms, ws-handshake-ms on the WebSocket port): 1 if closed. */
int hr__tls_sweep(struct hr_conn_s *c, uint64_t now);

/** The connection is being freed. */
void hr__tls_free(struct hr_conn_s *c);

#endif
