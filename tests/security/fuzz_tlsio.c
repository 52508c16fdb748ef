/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: a client and a server TLS pump (protocol/tlsio.c) in memory.
 * The input is a script: it cuts the bytes between the two into pieces of
 * its choosing, corrupts some of them, and says what the client sends.
 * Whatever happens, nothing crashes or leaks, every failure is reported as
 * HR_ETLS with a reason, and what the server reads is always a prefix of
 * what the client wrote: corrupted bytes are refused, never delivered.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tlsio.h"

static SSL_CTX *sctx, *cctx;

/* Test certificates made once by tests/support/certs.py. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char dir[] = "/tmp/herald-fuzz-tls-XXXXXX";
    char cmd[512], cert[300], key[300], ca[300], err[256];
    (void)argc;
    (void)argv;
    if (!mkdtemp(dir))
        abort();
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s >/dev/null", HR_CERTS_PY, dir);
    if (system(cmd) != 0)
        abort();
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    hr_tlsio_opts_t so = {.cert_file = cert, .key_file = key, .alpn = "http/1.1"};
    hr_tlsio_opts_t co = {.ca_file = ca, .alpn = "http/1.1"};
    if (hr_tlsio_ctx_new(1, &so, &sctx, err, sizeof(err)) != HR_OK ||
        hr_tlsio_ctx_new(0, &co, &cctx, err, sizeof(err)) != HR_OK) {
        fprintf(stderr, "fuzz_tlsio: %s\n", err);
        abort();
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir); /* the contexts hold what they loaded */
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_tlsio: could not remove %s\n", dir);
    return 0;
}

/* Bytes on their way from one pump to the other. */
typedef struct {
    uint8_t *p;
    size_t n;
} wire_t;

static void collect(hr_tlsio_t *from, wire_t *w)
{
    size_t n;
    uint8_t *p = hr_tlsio_take(from, &n);
    if (!p)
        return;
    uint8_t *q = realloc(w->p, w->n + n);
    if (!q)
        abort();
    memcpy(q + w->n, p, n);
    w->p = q;
    w->n += n;
    free(p);
}

/* Feeds the first `cut` bytes of the wire to `to` (all of them when cut is 0). */
static void deliver(wire_t *w, hr_tlsio_t *to, size_t cut)
{
    if (w->n == 0)
        return;
    if (cut == 0 || cut > w->n)
        cut = w->n;
    if (cut && hr_tlsio_feed(to, w->p, cut) != HR_OK)
        abort();
    memmove(w->p, w->p + cut, w->n - cut);
    w->n -= cut;
}

static void check_failure(const hr_tlsio_t *t, int r)
{
    if (r != HR_OK && r != HR_EAGAIN && r != HR_ECLOSED && r != HR_ETLS)
        abort();
    if (r == HR_ETLS && !hr_tlsio_error(t)[0])
        abort(); /* a failure always says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hr_tlsio_t *c, *s;
    wire_t up = {0}, down = {0};
    uint8_t sent[4096], got[4096];
    size_t nsent = 0, ngot = 0, i = 0;
    int failed = 0;
    if (hr_tlsio_new(sctx, 1, NULL, &s) != HR_OK || hr_tlsio_new(cctx, 0, "localhost", &c) != HR_OK)
        abort();
    check_failure(c, hr_tlsio_handshake(c));
    for (int step = 0; step < 256 && i < size && !failed; step++) {
        uint8_t op = data[i++];
        uint8_t arg = i < size ? data[i++] : 0;
        switch (op & 3) {
        case 0:   /* client to server, cut at arg; bit 2: corrupt the byte at arg first */
        case 1: { /* server to client, likewise */
            wire_t *w = (op & 3) == 0 ? &up : &down;
            collect((op & 3) == 0 ? c : s, w);
            if ((op & 4) && w->n)
                w->p[arg % w->n] ^= (uint8_t)(op | 1);
            deliver(w, (op & 3) == 0 ? s : c, arg);
            break;
        }
        case 2: { /* the client writes arg bytes of the input, in up to 3 iovecs */
            size_t n = arg;
            if (n > size - i)
                n = size - i;
            if (n > sizeof(sent) - nsent)
                n = sizeof(sent) - nsent;
            uv_buf_t iov[3];
            size_t a = n / 3, b = n / 2;
            iov[0] = uv_buf_init((char *)data + i, (unsigned)a);
            iov[1] = uv_buf_init((char *)data + i + a, (unsigned)(b - a));
            iov[2] = uv_buf_init((char *)data + i + b, (unsigned)(n - b));
            int r = hr_tlsio_write(c, iov, 3);
            check_failure(c, r);
            if (r == HR_OK) {
                memcpy(sent + nsent, data + i, n);
                nsent += n;
            }
            i += n;
            break;
        }
        case 3: { /* both sides take in what they were fed */
            size_t n;
            int r;
            while ((r = hr_tlsio_read(s, got + ngot, sizeof(got) - ngot, &n)) == HR_OK) {
                ngot += n;
                if (ngot > nsent || memcmp(got, sent, ngot) != 0)
                    abort(); /* delivered what was never sent */
                if (ngot == sizeof(got))
                    break;
            }
            check_failure(s, r);
            failed |= r == HR_ETLS;
            uint8_t sink[512];
            while ((r = hr_tlsio_read(c, sink, sizeof(sink), &n)) == HR_OK)
                ;
            check_failure(c, r);
            failed |= r == HR_ETLS;
            if (op & 4)
                check_failure(c, hr_tlsio_shutdown(c));
            break;
        }
        }
    }
    free(up.p);
    free(down.p);
    hr_tlsio_free(&c);
    hr_tlsio_free(&s);
    return 0;
}
