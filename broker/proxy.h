/* SPDX-License-Identifier: MIT */
/* PROXY protocol v1/v2: the header parser, the proxy-from list, and the connection hook. */
#ifndef HERALD_BROKER_PROXY_H
#define HERALD_BROKER_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct hr_conn_s;
struct hr_server_s;
struct sockaddr_storage;

/* ---- the header parser (pure: bytes in, a result out; no sockets) ----------------------- */

#define HR_PROXY_V1_MAX 107 /* the longest v1 line, CRLF included */
#define HR_PROXY_V2_HDR 16  /* signature, version/command, family, length */

/* What a complete header said. */
typedef struct hr_proxy_hdr_s {
    int version; /* 1 or 2 once the signature is recognized (also with HR_EAGAIN), else 0 */
    int local;   /* 1: no client address to use (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC or UNIX) */
    int family;  /* AF_INET or AF_INET6 when !local, else AF_UNSPEC */
    uint8_t src[16], dst[16]; /* network order: 4 bytes for AF_INET, 16 for AF_INET6 */
    uint16_t sport, dport;    /* host order */
    size_t len;               /* HR_OK: bytes the header took (what follows is the stream) */
    const char *why;          /* HR_EPROTO: static reason */
} hr_proxy_hdr_t;

/**
 * Parses the PROXY protocol header (v1 text or v2 binary) at the start of
 * `p` (`n` bytes: everything received so far; the caller keeps them and
 * calls again with more). Strict: a v1 line of at most 107 bytes with
 * single spaces, dotted-quad or RFC 4291 addresses and decimal ports
 * without leading zeros; a v2 header of version 2 whose address block fits
 * its family and whose TLVs (skipped) tile the rest exactly, at most
 * `v2_max` bytes in all. Returns
 * - HR_OK: `h` is filled and `h->len` bytes were the header;
 * - HR_EAGAIN: a valid beginning, more bytes needed (`h->version` is set
 *   once the signature is complete);
 * - HR_EINVAL: `p` does not start with a PROXY signature at all (it is
 *   some other protocol);
 * - HR_EPROTO: a malformed header, `h->why` says how.
 * Never reads past `p + n`.
 */
int hr__proxy_parse(const uint8_t *p, size_t n, size_t v2_max, hr_proxy_hdr_t *h);

/* ---- the proxy-from list ---------------------------------------------------------------- */

#define HR_PROXY_NETS_MAX 64

typedef struct hr_proxy_net_s {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;   /* prefix length */
    uint8_t addr[16];
} hr_proxy_net_t;

/**
 * Parses a comma-separated list of IPv4 and IPv6 addresses and CIDR
 * blocks ("10.0.0.0/8, 192.168.1.7, fd00::/8") into `nets` (room for
 * HR_PROXY_NETS_MAX). Returns how many, or -1 with the reason in `err`
 * (the entry named: a bad address, a prefix out of range, host bits set
 * past the prefix, too many entries).
 */
int hr__proxy_nets_parse(const char *list, hr_proxy_net_t *nets, char *err, size_t errlen);

/**
 * 1 if the address `addr` of `family` (AF_INET: 4 bytes, AF_INET6: 16) is
 * in one of the `n` nets. An IPv4-mapped IPv6 address is matched as IPv4.
 */
int hr__proxy_nets_match(const hr_proxy_net_t *nets, int n, int family, const uint8_t *addr);

/* Ports, as bits 1 << enum hr_tkind (server.h; proxy_conn.c checks they agree). */
#define HR_PROXY_TCP 1
#define HR_PROXY_WS 2

/** Which ports take the header, from the `proxy-protocol` value: HR_PROXY_* bits, -1 if bad. */
int hr__proxy_ports(const char *value);

/**
 * Checks the value of setting `name` if it is `proxy-protocol` or
 * `proxy-from`: 0 (also for other settings), or -1 with the reason in `err`.
 */
int hr__proxy_setting_check(const char *name, const char *value, char *err, size_t errlen);

/* ---- the connection hook (proxy_conn.c; loop thread only) -------------------------------- */

/**
 * Start-up: reads `proxy-protocol` and `proxy-from` from s->cfg. HR_OK, or
 * HR_EINVAL after printing why to stderr (the header enabled without a
 * proxy-from list), or HR_ENOMEM.
 */
int hr__proxy_init(struct hr_server_s *s);
void hr__proxy_destroy(struct hr_server_s *s);

/**
 * A connection was just accepted (its socket is open): logs its address at
 * debug level and, on a port that takes the header, decides from the peer address whether the
 * header is required (a listed balancer) or refused (anyone else), and marks `c` so that its first
 * bytes go to hr__proxy_data(). May close `c` (out of memory).
 */
void hr__proxy_accept(struct hr_conn_s *c);

/**
 * 1 while `c` waits for a PROXY header it must send: the per-IP limit is
 * applied once the header names the client (hr__limits_peer()).
 */
int hr__proxy_waiting(const struct hr_conn_s *c);

/** 1 while the first bytes of `c` go to hr__proxy_data() (the header is not settled yet). */
int hr__proxy_in_header(const struct hr_conn_s *c);

/**
 * Raw bytes read from a marked connection (borrowed for the call): consumes
 * the header, then hands what follows to hr__conn_input(). Refuses the
 * connection (one log line with the reason) on a malformed header, a
 * missing one from a listed address or one from an unlisted address.
 */
void hr__proxy_data(struct hr_conn_s *c, const char *p, size_t n);

/**
 * The peer closed `c` (or the read failed): if it was in the middle of a
 * header, that is logged and counted as a refusal. The caller closes `c`.
 */
void hr__proxy_cut(struct hr_conn_s *c);

/** Sweep: closes a connection whose header is not complete in time. 1 if it did. */
int hr__proxy_sweep(struct hr_conn_s *c, uint64_t now);

/**
 * The address of the client at the other end of `c`: the one a PROXY
 * header named, else the socket's peer. 0 or a libuv error.
 */
int hr__proxy_peer(const struct hr_conn_s *c, struct sockaddr_storage *ss);

/** `c` is being freed: releases its PROXY state. */
void hr__proxy_conn_free(struct hr_conn_s *c);

#endif
