/* SPDX-License-Identifier: MIT */
/* The TLS pump (protocol/tlsio.c): a client and a server pump talking to each other in memory. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/status.h"
#include "hr_certs.h"
#include "hr_check.h"
#include "tlsio.h"

static void make_certs(void)
{
    ck_assert_msg(hr_test_certs() != NULL, "no test certificates");
}

static SSL_CTX *server_ctx(const char *cert, int verify)
{
    char c[64], k[64];
    snprintf(c, sizeof(c), "%s.pem", cert);
    snprintf(k, sizeof(k), "%s.key", cert);
    hr_tlsio_opts_t o = {.cert_file = hr_test_cert(c),
                         .key_file = hr_test_cert(k),
                         .verify = verify,
                         .alpn = "http/1.1"};
    if (verify)
        o.ca_file = hr_test_cert("ca.pem");
    SSL_CTX *ctx;
    char err[256];
    ck_assert_msg(hr_tlsio_ctx_new(1, &o, &ctx, err, sizeof(err)) == HR_OK, "%s", err);
    return ctx;
}

static SSL_CTX *client_ctx(const char *ca, const char *cert, int max12)
{
    char c[64], k[64];
    hr_tlsio_opts_t o = {.ca_file = ca ? hr_test_cert(ca) : NULL,
                         .verify = ca ? HR_TLSIO_VERIFY_REQUIRED : HR_TLSIO_VERIFY_NONE,
                         .alpn = "http/1.1"};
    if (cert) {
        snprintf(c, sizeof(c), "%s.pem", cert);
        snprintf(k, sizeof(k), "%s.key", cert);
        o.cert_file = hr_test_cert(c);
        o.key_file = hr_test_cert(k);
    }
    SSL_CTX *ctx;
    char err[256];
    ck_assert_msg(hr_tlsio_ctx_new(0, &o, &ctx, err, sizeof(err)) == HR_OK, "%s", err);
    if (max12)
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    return ctx;
}

/* Moves what `from` has to send into `to`; returns the number of bytes moved. */
static size_t shuttle(hr_tlsio_t *from, hr_tlsio_t *to)
{
    size_t n;
    void *p = hr_tlsio_take(from, &n);
    if (p) {
        ck_assert_int_eq(hr_tlsio_pending(from), 0);
        ck_assert_int_eq(hr_tlsio_feed(to, p, n), HR_OK);
        free(p);
    }
    return n;
}

/* Runs both handshakes to their end; returns the client's and server's final statuses. */
static void handshake(hr_tlsio_t *c, hr_tlsio_t *s, int *rc, int *rs)
{
    *rc = *rs = HR_EAGAIN;
    for (int i = 0; i < 20; i++) {
        if (*rc == HR_EAGAIN)
            *rc = hr_tlsio_handshake(c);
        shuttle(c, s);
        if (*rs == HR_EAGAIN)
            *rs = hr_tlsio_handshake(s);
        shuttle(s, c);
        if (*rc != HR_EAGAIN && *rs != HR_EAGAIN)
            break;
        if (*rc != HR_EAGAIN && *rs == HR_EAGAIN && hr_tlsio_pending(c) == 0) {
            *rs = hr_tlsio_handshake(s); /* the client failed: its alert is in */
            break;
        }
    }
}

/* Reads everything the pump can give into out (cap bytes); returns the count. */
static size_t drain(hr_tlsio_t *t, uint8_t *out, size_t cap)
{
    size_t total = 0, got;
    int r;
    while ((r = hr_tlsio_read(t, out + total, cap - total, &got)) == HR_OK)
        total += got;
    ck_assert_msg(r == HR_EAGAIN, "read: %d %s (%s)", r, hr_tlsio_error(t),
                  SSL_state_string_long(hr_tlsio_ssl(t)));
    return total;
}

struct pair {
    SSL_CTX *cctx, *sctx;
    hr_tlsio_t *c, *s;
};

static void pair_open(struct pair *p, SSL_CTX *cctx, SSL_CTX *sctx, const char *host)
{
    p->cctx = cctx;
    p->sctx = sctx;
    ck_assert_int_eq(hr_tlsio_new(sctx, 1, NULL, &p->s), HR_OK);
    ck_assert_int_eq(hr_tlsio_new(cctx, 0, host, &p->c), HR_OK);
}

/* A pair whose handshake completed on both sides. */
static void pair_established(struct pair *p, SSL_CTX *cctx, SSL_CTX *sctx, const char *host)
{
    int rc, rs;
    pair_open(p, cctx, sctx, host);
    handshake(p->c, p->s, &rc, &rs);
    ck_assert_msg(rc == HR_OK && rs == HR_OK, "%s / %s", hr_tlsio_error(p->c),
                  hr_tlsio_error(p->s));
}

static void pair_close(struct pair *p)
{
    hr_tlsio_free(&p->c);
    hr_tlsio_free(&p->s);
    ck_assert_ptr_null(p->c);
    SSL_CTX_free(p->cctx);
    SSL_CTX_free(p->sctx);
}

START_TEST(handshake_and_data)
{
    make_certs();
    struct pair p;
    pair_established(&p, client_ctx("ca.pem", NULL, 0), server_ctx("server", 0), "localhost");
    ck_assert(hr_tlsio_established(p.c) && hr_tlsio_established(p.s));
    ck_assert_str_eq(hr_tlsio_version(p.s), "TLSv1.3");
    ck_assert(hr_tlsio_alpn_is(p.s, "http/1.1") && hr_tlsio_alpn_is(p.c, "http/1.1"));
    ck_assert(!hr_tlsio_alpn_is(p.s, "h2"));
    ck_assert(!hr_tlsio_peer_verified(p.s)); /* no client certificate */
    ck_assert(hr_tlsio_peer_verified(p.c));
    ck_assert(strlen(hr_tlsio_cipher(p.s)) > 0);

    /* both ways, byte for byte */
    uv_buf_t iov[] = {{.base = "hello ", .len = 6}, {.base = "world", .len = 5}};
    ck_assert_int_eq(hr_tlsio_write(p.c, iov, 2), HR_OK);
    shuttle(p.c, p.s);
    uint8_t got[64];
    ck_assert_int_eq(drain(p.s, got, sizeof(got)), 11);
    ck_assert(memcmp(got, "hello world", 11) == 0);
    ck_assert_int_eq(hr_tlsio_write(p.s, iov + 1, 1), HR_OK);
    shuttle(p.s, p.c);
    ck_assert_int_eq(drain(p.c, got, sizeof(got)), 5);
    ck_assert(memcmp(got, "world", 5) == 0);

    /* unread: what was fed and not yet read out */
    ck_assert_int_eq(hr_tlsio_write(p.c, iov, 2), HR_OK);
    shuttle(p.c, p.s);
    ck_assert_int_gt(hr_tlsio_unread(p.s), 11);
    size_t got1;
    ck_assert_int_eq(hr_tlsio_read(p.s, got, 4, &got1), HR_OK);
    ck_assert_int_eq(got1, 4);
    ck_assert_int_eq(hr_tlsio_unread(p.s), 7); /* the rest of the record */
    ck_assert_int_eq(drain(p.s, got, sizeof(got)), 7);
    ck_assert_int_eq(hr_tlsio_unread(p.s), 0);

    /* input arriving a byte at a time */
    ck_assert_int_eq(hr_tlsio_write(p.c, iov, 1), HR_OK);
    size_t n;
    uint8_t *ct = hr_tlsio_take(p.c, &n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(hr_tlsio_feed(p.s, ct + i, 1), HR_OK);
        total += drain(p.s, got + total, sizeof(got) - total);
    }
    free(ct);
    ck_assert_int_eq(total, 6);
    ck_assert(hr_tlsio_take(p.c, &n) == NULL && n == 0);

    /* close_notify */
    ck_assert_int_eq(hr_tlsio_shutdown(p.c), HR_OK);
    shuttle(p.c, p.s);
    size_t g;
    ck_assert_int_eq(hr_tlsio_read(p.s, got, sizeof(got), &g), HR_ECLOSED);
    pair_close(&p);
}
END_TEST

/* Many tiny iovecs become full records, not one record each; large ones pass straight through. */
START_TEST(coalesced_records)
{
    make_certs();
    struct pair p;
    pair_established(&p, client_ctx("ca.pem", NULL, 0), server_ctx("server", 0), "127.0.0.1");
    shuttle(p.s, p.c); /* the session ticket */
    uint8_t got[64];
    drain(p.c, got, sizeof(got));

    enum { N = 1000, BIG = 40000 };
    static uv_buf_t iov[N + 2];
    static char small[N][7];
    static uint8_t big[BIG], want[N * 7 + BIG], seen[2 * (N * 7 + BIG)];
    size_t wn = 0;
    for (int i = 0; i < N; i++) {
        snprintf(small[i], sizeof(small[i]), "%06d", i);
        iov[i] = uv_buf_init(small[i], 7);
        memcpy(want + wn, small[i], 7);
        wn += 7;
    }
    for (size_t i = 0; i < BIG; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    iov[N] = uv_buf_init((char *)big, BIG);
    memcpy(want + wn, big, BIG);
    wn += BIG;
    ck_assert_int_eq(hr_tlsio_write(p.s, iov, N), HR_OK);
    size_t ct = hr_tlsio_pending(p.s);
    /* 7000 bytes in one record: one header and tag (22 bytes in TLS 1.3), not a thousand */
    ck_assert_msg(ct < 7000 + 2 * 30, "%zu bytes of ciphertext for 7000", ct);
    ck_assert_int_eq(hr_tlsio_write(p.s, iov + N, 1), HR_OK);
    ck_assert_msg(hr_tlsio_pending(p.s) - ct < BIG + 3 * 30, "big: %zu",
                  hr_tlsio_pending(p.s) - ct);
    /* the same data in one call with the big one in the middle of small ones */
    uv_buf_t mix[3] = {iov[0], iov[N], iov[1]};
    ck_assert_int_eq(hr_tlsio_write(p.s, mix, 3), HR_OK);
    shuttle(p.s, p.c);
    size_t n = drain(p.c, seen, sizeof(seen));
    ck_assert_int_eq(n, wn + 7 + BIG + 7);
    ck_assert(memcmp(seen, want, wn) == 0);
    ck_assert(memcmp(seen + wn, small[0], 7) == 0);
    ck_assert(memcmp(seen + wn + 7, big, BIG) == 0);
    ck_assert(memcmp(seen + wn + 7 + BIG, small[1], 7) == 0);
    pair_close(&p);
}
END_TEST

/* Writing before the handshake is refused softly, consuming nothing. */
START_TEST(write_before_handshake)
{
    make_certs();
    struct pair p;
    pair_open(&p, client_ctx("ca.pem", NULL, 0), server_ctx("server", 0), "localhost");
    ck_assert(!hr_tlsio_established(p.c));
    uv_buf_t b = uv_buf_init("x", 1);
    ck_assert_int_eq(hr_tlsio_write(p.c, &b, 1), HR_EAGAIN);
    ck_assert_int_eq(hr_tlsio_pending(p.c), 0);
    ck_assert_int_eq(hr_tlsio_handshake(p.c), HR_EAGAIN);
    ck_assert_int_gt(hr_tlsio_pending(p.c), 0); /* the ClientHello */
    pair_close(&p);
}
END_TEST

/* A client that checks the server: each bad certificate fails with its reason, on both sides. */
static void expect_client_fails(const char *cert, const char *host, const char *why)
{
    struct pair p;
    int rc, rs;
    pair_open(&p, client_ctx("ca.pem", NULL, 0), server_ctx(cert, 0), host);
    handshake(p.c, p.s, &rc, &rs);
    ck_assert_int_eq(rc, HR_ETLS);
    ck_assert_msg(strstr(hr_tlsio_error(p.c), why), "client: %s", hr_tlsio_error(p.c));
    ck_assert_int_eq(rs, HR_ETLS); /* the client's alert reached the server */
    ck_assert_msg(strstr(hr_tlsio_error(p.s), "alert"), "server: %s", hr_tlsio_error(p.s));
    pair_close(&p);
}

START_TEST(bad_server_certificates)
{
    make_certs();
    expect_client_fails("expired", "localhost", "certificate has expired");
    expect_client_fails("wronghost", "localhost", "hostname mismatch");
    expect_client_fails("server", "127.0.0.2", "IP address mismatch");
    expect_client_fails("rogue", "localhost", "unable to get local issuer certificate");
    /* a client context left at the default verifies too */
    hr_tlsio_opts_t o = {.ca_file = hr_test_cert("ca.pem")};
    SSL_CTX *cctx;
    ck_assert_int_eq(hr_tlsio_ctx_new(0, &o, &cctx, NULL, 0), HR_OK);
    struct pair p;
    int rc, rs;
    pair_open(&p, cctx, server_ctx("rogue", 0), "localhost");
    handshake(p.c, p.s, &rc, &rs);
    ck_assert_int_eq(rc, HR_ETLS);
    pair_close(&p);
}
END_TEST

START_TEST(client_certificates)
{
    make_certs();
    struct pair p;
    int rc, rs;
    /* required, none given */
    pair_open(&p, client_ctx("ca.pem", NULL, 0), server_ctx("server", HR_TLSIO_VERIFY_REQUIRED),
              "localhost");
    handshake(p.c, p.s, &rc, &rs);
    ck_assert_int_eq(rs, HR_ETLS);
    ck_assert_msg(strstr(hr_tlsio_error(p.s), "certificate"), "%s", hr_tlsio_error(p.s));
    pair_close(&p);
    /* required, a good one */
    pair_open(&p, client_ctx("ca.pem", "client", 0), server_ctx("server", HR_TLSIO_VERIFY_REQUIRED),
              "localhost");
    handshake(p.c, p.s, &rc, &rs);
    ck_assert_msg(rc == HR_OK && rs == HR_OK, "%s", hr_tlsio_error(p.s));
    ck_assert(hr_tlsio_peer_verified(p.s));
    pair_close(&p);
    /* required, signed by a CA the server does not trust */
    pair_open(&p, client_ctx("ca.pem", "rogue-client", 0),
              server_ctx("server", HR_TLSIO_VERIFY_REQUIRED), "localhost");
    handshake(p.c, p.s, &rc, &rs);
    ck_assert_int_eq(rs, HR_ETLS);
    ck_assert_msg(strstr(hr_tlsio_error(p.s), "certificate verify failed"), "%s",
                  hr_tlsio_error(p.s));
    pair_close(&p);
    /* optional, none given */
    pair_open(&p, client_ctx("ca.pem", NULL, 0), server_ctx("server", HR_TLSIO_VERIFY_OPTIONAL),
              "localhost");
    handshake(p.c, p.s, &rc, &rs);
    ck_assert_msg(rc == HR_OK && rs == HR_OK, "%s", hr_tlsio_error(p.s));
    ck_assert(!hr_tlsio_peer_verified(p.s));
    pair_close(&p);
}
END_TEST

START_TEST(plaintext_is_named)
{
    make_certs();
    hr_tlsio_t *s;
    SSL_CTX *ctx = server_ctx("server", 0);
    ck_assert_int_eq(hr_tlsio_new(ctx, 1, NULL, &s), HR_OK);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(hr_tlsio_feed(s, req, sizeof(req) - 1), HR_OK);
    ck_assert_int_eq(hr_tlsio_handshake(s), HR_ETLS);
    ck_assert_int_eq(hr_tlsio_plaintext(s), 'H');
    ck_assert_msg(strstr(hr_tlsio_error(s), "plaintext HTTP"), "%s", hr_tlsio_error(s));
    hr_tlsio_free(&s);
    ck_assert_int_eq(hr_tlsio_new(ctx, 1, NULL, &s), HR_OK);
    ck_assert_int_eq(hr_tlsio_feed(s, "\0\0\0\x05\x92\x01", 6), HR_OK); /* a Herald TCP frame */
    size_t got;
    char buf[16];
    ck_assert_int_eq(hr_tlsio_read(s, buf, sizeof(buf), &got), HR_ETLS);
    ck_assert_int_eq(hr_tlsio_plaintext(s), 'P');
    hr_tlsio_free(&s);
    SSL_CTX_free(ctx);
}
END_TEST

/* A TLS 1.2 client asking to renegotiate gets no new handshake. */
START_TEST(renegotiation_refused)
{
    make_certs();
    struct pair p;
    pair_established(&p, client_ctx("ca.pem", NULL, 1), server_ctx("server", 0), "localhost");
    ck_assert_str_eq(hr_tlsio_version(p.c), "TLSv1.2");
    SSL_clear_options(hr_tlsio_ssl(p.c), SSL_OP_NO_RENEGOTIATION); /* the client would ask */
    ck_assert_int_eq(SSL_renegotiate(hr_tlsio_ssl(p.c)), 1);
    SSL_do_handshake(hr_tlsio_ssl(p.c));
    ck_assert_int_gt(shuttle(p.c, p.s), 0); /* the new ClientHello */
    uint8_t buf[64];
    size_t got;
    int r = hr_tlsio_read(p.s, buf, sizeof(buf), &got);
    ck_assert(r == HR_EAGAIN || r == HR_ETLS);
    shuttle(p.s, p.c); /* the server's no_renegotiation alert, if any */
    SSL_do_handshake(hr_tlsio_ssl(p.c));
    ck_assert(SSL_renegotiate_pending(hr_tlsio_ssl(p.c)) || r == HR_ETLS);
    ck_assert_int_eq(SSL_num_renegotiations(hr_tlsio_ssl(p.s)), 0);
    pair_close(&p);
}
END_TEST

START_TEST(context_errors)
{
    make_certs();
    SSL_CTX *ctx;
    char err[256];
    hr_tlsio_opts_t o = {.cert_file = hr_test_cert("server.pem"),
                         .key_file = hr_test_cert("client.key")};
    ck_assert_int_eq(hr_tlsio_ctx_new(1, &o, &ctx, err, sizeof(err)), HR_ETLS);
    ck_assert_msg(strstr(err, "mismatch") && strstr(err, "client.key"), "%s", err);
    ck_assert_ptr_null(ctx);
    o.cert_file = hr_test_cert("missing.pem");
    ck_assert_int_eq(hr_tlsio_ctx_new(1, &o, &ctx, err, sizeof(err)), HR_ETLS);
    ck_assert_msg(strstr(err, "missing.pem"), "%s", err);
    o.cert_file = NULL;
    ck_assert_int_eq(hr_tlsio_ctx_new(1, &o, &ctx, err, sizeof(err)), HR_EINVAL);
    hr_tlsio_opts_t v = {.cert_file = hr_test_cert("server.pem"),
                         .key_file = hr_test_cert("server.key"),
                         .verify = HR_TLSIO_VERIFY_REQUIRED};
    ck_assert_int_eq(hr_tlsio_ctx_new(1, &v, &ctx, err, sizeof(err)), HR_EINVAL);
    ck_assert_msg(strstr(err, "CA"), "%s", err);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tlsio");
    TCase *t = tcase_create("pump");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, handshake_and_data);
    tcase_add_test(t, coalesced_records);
    tcase_add_test(t, write_before_handshake);
    tcase_add_test(t, bad_server_certificates);
    tcase_add_test(t, client_certificates);
    tcase_add_test(t, plaintext_is_named);
    tcase_add_test(t, renegotiation_refused);
    tcase_add_test(t, context_errors);
    suite_add_tcase(s, t);
    hr_test_certs(); /* before the runner forks: every test shares them */
    return s;
}

HR_CHECK_MAIN(suite)
