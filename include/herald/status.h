/* SPDX-License-Identifier: MIT */
/* Herald status codes: 0 is success, negative is failure. */
#ifndef HERALD_STATUS_H
#define HERALD_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/*
 * One table generates the enum and hr_strerror(). Codes 1..13 are the wire
 * ERR codes of docs/protocol.md (HR_EPROTO is ERR 1, ...); the rest are local.
 * Herald's codes live at -30000 and below so libuv's UV_E* values (small
 * negative errno numbers) pass through the same `int status` unchanged.
 */
#define HR_STATUS_MAP(XX)                                                                          \
    XX(EPROTO, 1, "protocol error")                                                                \
    XX(ETOOBIG, 2, "frame or payload too large")                                                   \
    XX(EAUTH, 3, "authentication failed")                                                          \
    XX(EPERM, 4, "not permitted")                                                                  \
    XX(ETOPIC, 5, "invalid topic or pattern")                                                      \
    XX(ESLOW, 6, "slow consumer")                                                                  \
    XX(ELIMIT, 7, "limit reached")                                                                 \
    XX(ESID, 8, "unknown sid")                                                                     \
    XX(ESHUTDOWN, 9, "server shutting down")                                                       \
    XX(EGAP, 10, "history gap")                                                                    \
    XX(EHEARTBEAT, 11, "heartbeat timeout")                                                        \
    XX(EOPTION, 12, "invalid subscription option")                                                 \
    XX(EREJECTED, 13, "rejected by a publish transform")                                           \
    XX(EAGAIN, 100, "incomplete input, need more bytes")                                           \
    XX(ENOMEM, 101, "out of memory")                                                               \
    XX(EINVAL, 102, "invalid argument")                                                            \
    XX(ETIMEDOUT, 103, "timed out")                                                                \
    XX(ECLOSED, 104, "connection closed")                                                          \
    XX(ENOTCONN, 105, "not connected")                                                             \
    XX(ENORESPONDERS, 106, "no responders")                                                        \
    XX(EBUFFULL, 107, "buffer full")                                                               \
    XX(ECANCELED, 108, "operation canceled")                                                       \
    XX(EDISCONNECTED, 109, "disconnected before completion")                                       \
    XX(EURL, 110, "invalid URL")                                                                   \
    XX(EHTTPPORT, 111, "tcp:// URL names a WebSocket/HTTP port: use ws:// or the TCP port")        \
    XX(ETCPPORT, 112, "ws:// URL names a Herald TCP port: use tcp:// or the WebSocket port")       \
    XX(ECERT, 113, "server certificate not trusted")                                               \
    XX(ECERTNAME, 114, "server certificate does not match the host name")                          \
    XX(ECERTEXPIRED, 115, "server certificate expired or not yet valid")                           \
    XX(ECLIENTCERT, 116, "server refused the client certificate (or its absence)")                 \
    XX(ETLSCONF, 117, "cannot load the TLS CA, certificate or key")                                \
    XX(ETLSPORT, 118, "plaintext URL names a TLS port: use tls:// or wss://")                      \
    XX(EPLAINPORT, 119, "tls:// or wss:// URL names a plaintext port: use tcp:// or ws://")        \
    XX(ETLS, 120, "TLS handshake or record failure")

#define HR__STATUS_BASE 30000

typedef enum {
    HR_OK = 0,
#define HR__XX(name, code, msg) HR_##name = -(HR__STATUS_BASE + (code)),
    HR_STATUS_MAP(HR__XX)
#undef HR__XX
} hr_status_t;

/** Returns a static, human-readable description of `status` (Herald or libuv code). */
const char *hr_strerror(int status);

/** Returns the name of `status` ("HR_EPROTO", "UV_ECONNREFUSED", ...). Static storage. */
const char *hr_err_name(int status);

/** Maps a status to its wire ERR code (1..13), or 0 if it has none. */
unsigned hr_status_to_wire(int status);

/** Maps a wire ERR code to a status; unknown codes map to HR_EPROTO. */
int hr_status_from_wire(unsigned code);

#ifdef __cplusplus
}
#endif
#endif
