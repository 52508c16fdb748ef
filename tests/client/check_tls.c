/* SPDX-License-Identifier: MIT */
/* libherald over TLS: tls:// and wss:// against the broker's own TLS, certificate failures, client
 * certificates, reconnect and resume through TLS, and TLS/plaintext port mismatches. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../client/async.h"
#include "cfix.h"
#include "hr_certs.h"

/* ---- certificates and the TLS endpoint ------------------------------------ */

/* The test CA and certificates (tests/support/certs.py, made once before the tests fork). */
static const char *cert(const char *name)
{
    return hr_test_cert(name);
}

/* The real broker with TLS on the ports `ports` ("tcp,ws", "tcp" or "ws"). */
static cfix_t F;

/*
 * Starts the broker with certificate `name` on its TLS ports (`need_client_cert`:
 * clients must present one signed by the test CA).
 */
static void ep_start_on(const char *name, int need_client_cert, const char *ports,
                        const char *const *more)
{
    static char crt[160], key[160];
    snprintf(crt, sizeof(crt), "%s/%s.pem", hr_test_certs(), name);
    snprintf(key, sizeof(key), "%s/%s.key", hr_test_certs(), name);
    /* History long enough that a resume after a cut never meets a gap. */
    const char *args[16] = {"--history-msgs", "20000", "--tls-cert",  crt,
                            "--tls-key",      key,     "--tls-ports", ports};
    int n = 8;
    if (need_client_cert) {
        args[n++] = "--tls-ca";
        args[n++] = cert("ca.pem");
        args[n++] = "--tls-verify";
        args[n++] = "required";
    }
    for (int i = 0; more && more[i] && n < 15; i++)
        args[n++] = more[i];
    args[n] = NULL;
    ck_assert_int_eq(cfix_start(&F, args), 0);
}

static void ep_start(const char *name, int need_client_cert)
{
    ep_start_on(name, need_client_cert, "tcp,ws", NULL);
}

static void ep_stop(void)
{
    cfix_stop(&F);
}

static const char *url(const char *scheme, char *buf, size_t n)
{
    int ws = strcmp(scheme, "wss") == 0;
    snprintf(buf, n, "%s://127.0.0.1:%d%s", scheme, ws ? F.ws_port : F.port, ws ? "/" : "");
    return buf;
}

static void tls_opts(hr_client_opts_t *o, const char *u)
{
    hr_client_opts_init(o);
    o->url = u;
    o->tls_ca_file = cert("ca.pem");
    o->connect_timeout_ms = 3000;
}

/* ---- events ------------------------------------------------------------------ */

typedef struct ev_s {
    int connected, reconnected, disconnected, closed;
    int close_status;
    int errors, err_status;
    char detail[300];
} ev_t;

static void ev_cb(hr_client_t *c, int ev, int status, void *arg)
{
    ev_t *e = arg;
    e->connected += ev == HR_EVENT_CONNECTED;
    e->reconnected += ev == HR_EVENT_RECONNECTED;
    e->disconnected += ev == HR_EVENT_DISCONNECTED;
    if (ev == HR_EVENT_CLOSED) {
        e->closed++;
        e->close_status = status;
    }
}

static void err_cb(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    ev_t *e = arg;
    e->errors++;
    e->err_status = status;
    snprintf(e->detail, sizeof(e->detail), "%s", detail);
}

/*
 * One asynchronous connection attempt with `o`: returns HR_OK once it is
 * connected (then closes it), or the status it closed with. `e` keeps what
 * on_error said.
 */
static int attempt(hr_client_opts_t *o, ev_t *e)
{
    uv_loop_t loop;
    hr_client_t *c;
    memset(e, 0, sizeof(*e));
    o->on_state = ev_cb;
    o->on_error = err_cb;
    o->arg = e;
    uv_loop_init(&loop);
    int r = hr_client_new(&loop, o, &c);
    if (r == HR_OK) {
        uint64_t end = uv_hrtime() + 5000000000ull;
        while (!e->connected && !e->closed && uv_hrtime() < end)
            cfix_run_for(&loop, 10);
        ck_assert_msg(e->connected || e->closed, "%s: neither connected nor closed (%d: %s)",
                      o->url, e->err_status, e->detail);
        r = e->connected ? HR_OK : e->close_status;
        if (e->connected) {
            hr_client_close(c);
            ck_assert(cfix_run_until(&loop, &e->closed, 3000));
        }
    }
    cfix_loop_close(&loop);
    return r;
}

/* ---- publish and subscribe over tls:// and wss:// ------------------------------ */

static void setup_good(void)
{
    ep_start("server", 0);
}

static void teardown(void)
{
    ep_stop();
}

/*
 * The blocking API over TLS: a tls:// subscriber, a wss:// and a tls://
 * publisher; payloads around the 16 KiB record size and a burst of small
 * messages that leave in a few records.
 */
START_TEST(test_tls_pubsub)
{
    char u1[64], u2[64], u3[64];
    hr_client_opts_t o;
    hr_sync_t *sub_c, *wss_c, *tcp_c;
    hr_sync_sub_t *sub;
    hr_message_t *m;
    tls_opts(&o, url("tls", u1, sizeof(u1)));
    ck_assert_int_eq(hr_sync_connect(&o, &sub_c), HR_OK);
    tls_opts(&o, url("wss", u2, sizeof(u2)));
    ck_assert_int_eq(hr_sync_connect(&o, &wss_c), HR_OK);
    tls_opts(&o, url("tls", u3, sizeof(u3)));
    ck_assert_int_eq(hr_sync_connect(&o, &tcp_c), HR_OK);
    ck_assert_int_eq(hr_sync_subscribe(sub_c, "t.>", NULL, &sub), HR_OK);

    static char payload[300000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (char)('a' + i % 26);
    size_t sizes[] = {0, 1, 16383, 16384, 16385, 65536, 300000};
    uint64_t seq = 0;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        hr_sync_t *from = k % 2 ? wss_c : tcp_c;
        ck_assert_int_eq(hr_sync_publish_acked(from, "t.big", payload, sizes[k], 3000, &seq),
                         HR_OK);
        ck_assert_uint_eq(seq, k + 1);
        ck_assert_int_eq(hr_sync_next(sub, 3000, &m), HR_OK);
        size_t n;
        const char *d = hr_message_data(m, &n);
        ck_assert_uint_eq(n, sizes[k]);
        ck_assert(memcmp(d, payload, n) == 0);
        ck_assert_uint_eq(hr_message_seq(m), k + 1);
        hr_message_unref(&m);
    }
    /* A burst: many frames per write, both ways through TLS. */
    for (int i = 0; i < 5000; i++) {
        char b[32];
        int n = snprintf(b, sizeof(b), "m%d", i);
        ck_assert_int_eq(hr_sync_publish(wss_c, "t.small", b, (size_t)n, NULL), HR_OK);
    }
    ck_assert_int_eq(hr_sync_flush(wss_c, 5000), HR_OK);
    for (int i = 0; i < 5000; i++) {
        char b[32];
        int n = snprintf(b, sizeof(b), "m%d", i);
        ck_assert_int_eq(hr_sync_next(sub, 3000, &m), HR_OK);
        size_t len;
        const char *d = hr_message_data(m, &len);
        ck_assert_uint_eq(len, (size_t)n);
        ck_assert(memcmp(d, b, len) == 0);
        ck_assert_uint_eq(hr_message_seq(m), (uint64_t)i + 1);
        hr_message_unref(&m);
    }
    /* A request from the tls:// client answered through wss://. */
    hr_sync_sub_t *svc;
    ck_assert_int_eq(hr_sync_subscribe(wss_c, "svc.time", NULL, &svc), HR_OK);
    ck_assert_int_eq(
        hr_sync_publish(tcp_c, "svc.time", "now?", 4, &(hr_publish_opts_t){.reply = "t.reply"}),
        HR_OK);
    ck_assert_int_eq(hr_sync_next(svc, 3000, &m), HR_OK);
    ck_assert_int_eq(hr_sync_publish(wss_c, hr_message_reply(m), "noon", 4, NULL), HR_OK);
    hr_message_unref(&m);
    ck_assert_int_eq(hr_sync_next(sub, 3000, &m), HR_OK);
    ck_assert_str_eq(hr_message_topic(m), "t.reply");
    hr_message_unref(&m);
    ck_assert_uint_eq(hr_sync_dropped(sub), 0);
    hr_sync_close(&tcp_c, 0);
    hr_sync_close(&wss_c, 1);
    hr_sync_close(&sub_c, 1);
}
END_TEST

/* ---- reconnect and resume through TLS ------------------------------------------ */

typedef struct stream_s {
    ev_t e;
    uint64_t next; /* the seq expected next */
    int bad;
    uint64_t bad_got, bad_want; /* the first seq out of order */
} stream_t;

static void stream_state(hr_client_t *c, int ev, int status, void *arg)
{
    ev_cb(c, ev, status, &((stream_t *)arg)->e);
}

static void stream_msg(hr_client_t *c, hr_sub_t *s, hr_message_t *m, void *arg)
{
    stream_t *st = arg;
    if (hr_message_seq(m) != st->next && !st->bad++) {
        st->bad_got = hr_message_seq(m);
        st->bad_want = st->next;
    }
    st->next = hr_message_seq(m) + 1;
}

static void flush_cb(hr_client_t *c, int status, void *arg)
{
    *(int *)arg = status == HR_OK ? 1 : -1;
}

/*
 * A plain TCP proxy between the client and the TLS port is cut twice under
 * a steady stream: each time the client makes a new TLS handshake, sends
 * HELLO, restores its subscription from its last seq, and sees every seq
 * exactly once. Once over tls://, once over wss://.
 */
static void reconnect_through(const char *scheme)
{
    uv_loop_t loop;
    stream_t st;
    hr_client_opts_t o;
    hr_client_t *c, *pub;
    hr_sub_t *s;
    char u[64], pu[64];
    memset(&st, 0, sizeof(st));
    st.next = 1;
    uv_loop_init(&loop);
    int ws = strcmp(scheme, "wss") == 0;
    cfix_proxy_t *px = cfix_proxy_new(&loop, ws ? F.ws_port : F.port);
    snprintf(u, sizeof(u), "%s://127.0.0.1:%d%s", scheme, cfix_proxy_port(px), ws ? "/" : "");
    tls_opts(&o, u);
    o.tls_server_name = "localhost"; /* the certificate's DNS name, not the address dialled */
    o.on_state = stream_state;
    o.arg = &st;
    o.reconnect_wait_ms = 10;
    o.reconnect_jitter = 0;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    ck_assert_int_eq(hr_client_subscribe(c, "r.x", NULL, stream_msg, &st, &s), HR_OK);
    ck_assert(cfix_run_until(&loop, &st.e.connected, 3000));
    int flushed = 0;
    ck_assert_int_eq(hr_client_flush(c, flush_cb, &flushed), HR_OK); /* the SUB is in place */
    ck_assert(cfix_run_until(&loop, &flushed, 3000));
    tls_opts(&o, url("tls", pu, sizeof(pu)));
    ck_assert_int_eq(hr_client_new(&loop, &o, &pub), HR_OK);
    uint64_t sent = 0;
    for (int cut = 0; cut < 2; cut++) {
        for (int i = 0; i < 200; i++, sent++) {
            ck_assert_int_eq(hr_client_publish(pub, "r.x", "x", 1, NULL), HR_OK);
            cfix_run_for(&loop, i % 20 == 0 ? 5 : 0);
        }
        cfix_proxy_break(px);
        for (int i = 0; i < 100; i++, sent++)
            ck_assert_int_eq(hr_client_publish(pub, "r.x", "x", 1, NULL), HR_OK);
        cfix_run_for(&loop, 30);
        ck_assert_int_eq(cfix_proxy_resume(px), 0);
        int want = cut + 1;
        uint64_t end = uv_hrtime() + 5000000000ull;
        while (st.e.reconnected < want && uv_hrtime() < end)
            cfix_run_for(&loop, 10);
        ck_assert_int_eq(st.e.reconnected, want);
    }
    uint64_t end = uv_hrtime() + 5000000000ull;
    while (st.next <= sent && uv_hrtime() < end)
        cfix_run_for(&loop, 10);
    ck_assert_uint_eq(st.next, sent + 1);
    ck_assert_msg(st.bad == 0, "%d out of order, first seq %llu for %llu", st.bad,
                  (unsigned long long)st.bad_got, (unsigned long long)st.bad_want);
    ck_assert_int_ge(st.e.disconnected, 2);
    /* The reconnections resumed the TLS session of the first connection. */
    ck_assert(hr__tls_resumed(c));
    hr_client_close(c);
    hr_client_close(pub);
    ck_assert(cfix_run_until(&loop, &st.e.closed, 3000));
    cfix_proxy_free(px);
    cfix_loop_close(&loop);
}

START_TEST(test_tls_reconnect)
{
    reconnect_through("tls");
}
END_TEST

START_TEST(test_wss_reconnect)
{
    reconnect_through("wss");
}
END_TEST

/* ---- records and stalls ------------------------------------------------------- */

/* Counts the TLS records a client sends (their 5-byte headers, across chunk boundaries). */
typedef struct records_s {
    uint8_t hdr[5];
    size_t have;    /* header bytes seen of the current record */
    size_t skip;    /* body bytes still to pass */
    int app;        /* application data records */
    size_t app_len; /* their total length */
} records_t;

static void count_records(const char *p, size_t n, void *arg)
{
    records_t *r = arg;
    while (n) {
        if (r->skip) {
            size_t k = n < r->skip ? n : r->skip;
            r->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        r->hdr[r->have++] = (uint8_t)*p++;
        n--;
        if (r->have == 5) {
            r->have = 0;
            r->skip = (size_t)r->hdr[3] << 8 | r->hdr[4];
            if (r->hdr[0] == 23) {
                r->app++;
                r->app_len += r->skip;
            }
        }
    }
}

/*
 * 3000 small publishes made in one loop turn leave as one batch: a few
 * full records (16 KiB of plaintext each), not one record per frame.
 */
START_TEST(test_few_records)
{
    uv_loop_t loop;
    ev_t e;
    records_t rec;
    hr_client_opts_t o;
    hr_client_t *c;
    char u[64];
    memset(&e, 0, sizeof(e));
    memset(&rec, 0, sizeof(rec));
    uv_loop_init(&loop);
    cfix_proxy_t *px = cfix_proxy_new(&loop, F.port);
    cfix_proxy_tap(px, count_records, &rec);
    snprintf(u, sizeof(u), "tls://127.0.0.1:%d", cfix_proxy_port(px));
    tls_opts(&o, u);
    o.on_state = ev_cb;
    o.arg = &e;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    ck_assert(cfix_run_until(&loop, &e.connected, 3000));
    int flushed = 0;
    ck_assert_int_eq(hr_client_flush(c, flush_cb, &flushed), HR_OK);
    ck_assert(cfix_run_until(&loop, &flushed, 3000));
    int before = rec.app;
    size_t before_len = rec.app_len;
    for (int i = 0; i < 3000; i++)
        ck_assert_int_eq(hr_client_publish(c, "rec.x", "0123456789abcdef", 16, NULL), HR_OK);
    flushed = 0;
    ck_assert_int_eq(hr_client_flush(c, flush_cb, &flushed), HR_OK);
    ck_assert(cfix_run_until(&loop, &flushed, 3000));
    int n = rec.app - before;
    size_t len = rec.app_len - before_len;
    ck_assert_uint_gt(len, 3000 * 16);
    /* Each record carries up to 16 KiB plus ~22 bytes of AEAD overhead. */
    ck_assert_msg(n <= (int)(len / 16384) + 2, "%d records for %zu bytes", n, len);
    hr_client_close(c);
    ck_assert(cfix_run_until(&loop, &e.closed, 3000));
    cfix_proxy_free(px);
    cfix_loop_close(&loop);
}
END_TEST

/* A TLS server that accepts and then never answers: the connect timeout ends the handshake. */
START_TEST(test_stalled_handshake)
{
    uv_loop_t loop;
    ev_t e;
    hr_client_opts_t o;
    hr_client_t *c;
    char u[64];
    memset(&e, 0, sizeof(e));
    uv_loop_init(&loop);
    cfix_proxy_t *px = cfix_proxy_new(&loop, F.port);
    cfix_proxy_freeze(px);
    snprintf(u, sizeof(u), "tls://127.0.0.1:%d", cfix_proxy_port(px));
    tls_opts(&o, u);
    o.connect_timeout_ms = 300;
    o.on_state = ev_cb;
    o.arg = &e;
    uint64_t t0 = uv_hrtime();
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    ck_assert(cfix_run_until(&loop, &e.closed, 3000));
    ck_assert_int_eq(e.close_status, HR_ETIMEDOUT);
    ck_assert_uint_lt(uv_hrtime() - t0, 1500000000ull);
    cfix_proxy_free(px);
    cfix_loop_close(&loop);
}
END_TEST

/* ---- certificates the client must refuse ---------------------------------------- */

/* Each bad server certificate fails the first attempt with its own status, and says why. */
START_TEST(test_bad_server_certs)
{
    static const struct {
        const char *name;
        int status;
        const char *why;
    } cases[] = {
        {"wronghost", HR_ECERTNAME, "mismatch"},
        {"expired", HR_ECERTEXPIRED, "expired"},
        {"rogue", HR_ECERT, "local issuer"},
    };
    hr_client_opts_t o;
    ev_t e;
    char u[64];
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        ep_start(cases[k].name, 0);
        for (int wss = 0; wss < 2; wss++) {
            tls_opts(&o, url(wss ? "wss" : "tls", u, sizeof(u)));
            uint64_t t0 = uv_hrtime();
            ck_assert_int_eq(attempt(&o, &e), cases[k].status);
            ck_assert_uint_lt(uv_hrtime() - t0, 2000000000ull); /* at once, not a timeout */
            ck_assert_int_eq(e.err_status, cases[k].status);
            ck_assert_msg(strstr(e.detail, cases[k].why), "%s: %s", cases[k].name, e.detail);
        }
        /* The blocking API returns the same status. */
        hr_sync_t *s = NULL;
        tls_opts(&o, url("tls", u, sizeof(u)));
        ck_assert_int_eq(hr_sync_connect(&o, &s), cases[k].status);
        ck_assert_ptr_null(s);
        /* Verifying the chain only accepts a certificate for another name. */
        tls_opts(&o, url("tls", u, sizeof(u)));
        o.tls_verify = HR_TLS_VERIFY_CHAIN;
        ck_assert_int_eq(attempt(&o, &e), k == 0 ? HR_OK : cases[k].status);
        /* Verifying nothing accepts them all. */
        o.tls_verify = HR_TLS_VERIFY_NONE;
        ck_assert_int_eq(attempt(&o, &e), HR_OK);
        ep_stop();
    }
}
END_TEST

/* Names: the certificate's DNS name through tls_server_name, its address, and a name it lacks. */
START_TEST(test_server_names)
{
    hr_client_opts_t o;
    ev_t e;
    char u[64];
    ep_start("wronghost", 0);
    tls_opts(&o, url("tls", u, sizeof(u)));
    o.tls_server_name = "wrong.example";
    ck_assert_int_eq(attempt(&o, &e), HR_OK);
    o.tls_server_name = "other.example";
    ck_assert_int_eq(attempt(&o, &e), HR_ECERTNAME);
    ep_stop();
    ep_start("server", 0);
    tls_opts(&o, url("wss", u, sizeof(u)));
    ck_assert_int_eq(attempt(&o, &e), HR_OK); /* IP:127.0.0.1 */
    o.tls_server_name = "localhost";
    ck_assert_int_eq(attempt(&o, &e), HR_OK);
    o.tls_server_name = "127.0.0.2";
    ck_assert_int_eq(attempt(&o, &e), HR_ECERTNAME);
    /* No CA given: the system's store, which does not know the test CA. */
    tls_opts(&o, url("tls", u, sizeof(u)));
    o.tls_ca_file = NULL;
    ck_assert_int_eq(attempt(&o, &e), HR_ECERT);
    /* The CA as a hashed directory. */
    char cmd[600], dir[160];
    snprintf(dir, sizeof(dir), "%s/cadir", hr_test_certs());
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp %s %s/ && openssl rehash %s", dir, cert("ca.pem"),
             dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    o.tls_ca_dir = dir;
    ck_assert_int_eq(attempt(&o, &e), HR_OK);
    ep_stop();
}
END_TEST

/* Options that cannot work fail in hr_client_new(), before any connection. */
START_TEST(test_bad_options)
{
    hr_client_opts_t o;
    uv_loop_t loop;
    hr_client_t *c;
    uv_loop_init(&loop);
    tls_opts(&o, "tls://127.0.0.1:1");
    o.tls_ca_file = "/nonexistent/ca.pem";
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_ETLSCONF);
    tls_opts(&o, "wss://127.0.0.1:1/");
    o.tls_cert_file = cert("client.pem");
    o.tls_key_file = cert("server.key"); /* another certificate's key */
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_ETLSCONF);
    tls_opts(&o, "tls://127.0.0.1:1");
    o.tls_key_file = cert("client.key"); /* a key without a certificate */
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_EINVAL);
    tls_opts(&o, "tls://127.0.0.1:1");
    o.tls_verify = 7;
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_EINVAL);
    tls_opts(&o, "tls://127.0.0.1:1/path"); /* only wss:// has a path */
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_EURL);
    tls_opts(&o, "tlss://127.0.0.1:1");
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_EURL);
    /* The CA file is ignored by plaintext URLs. */
    tls_opts(&o, "tcp://127.0.0.1:1");
    o.tls_ca_file = "/nonexistent/ca.pem";
    ck_assert_int_eq(hr_client_new(&loop, &o, &c), HR_OK);
    hr_client_close(c);
    cfix_loop_close(&loop);
}
END_TEST

/* ---- client certificates ------------------------------------------------------- */

START_TEST(test_client_cert)
{
    hr_client_opts_t o;
    ev_t e;
    char u[64];
    ep_start("server", 1);
    for (int wss = 0; wss < 2; wss++) {
        tls_opts(&o, url(wss ? "wss" : "tls", u, sizeof(u)));
        ck_assert_int_eq(attempt(&o, &e), HR_ECLIENTCERT); /* none */
        ck_assert_msg(strstr(e.detail, "without"), "%s", e.detail);
        o.tls_cert_file = cert("rogue-client.pem");
        o.tls_key_file = cert("rogue-client.key");
        ck_assert_int_eq(attempt(&o, &e), HR_ECLIENTCERT); /* one the server does not trust */
        ck_assert_msg(strstr(e.detail, "client certificate"), "%s", e.detail);
        o.tls_cert_file = cert("client.pem");
        o.tls_key_file = cert("client.key");
        ck_assert_int_eq(attempt(&o, &e), HR_OK);
    }
    /* The blocking API with a client certificate, end to end. */
    hr_sync_t *s;
    hr_sync_sub_t *sub;
    hr_message_t *m;
    tls_opts(&o, url("tls", u, sizeof(u)));
    o.tls_cert_file = cert("client.pem");
    o.tls_key_file = cert("client.key");
    ck_assert_int_eq(hr_sync_connect(&o, &s), HR_OK);
    ck_assert_int_eq(hr_sync_subscribe(s, "cc.x", NULL, &sub), HR_OK);
    ck_assert_int_eq(hr_sync_publish(s, "cc.x", "hi", 2, NULL), HR_OK);
    ck_assert_int_eq(hr_sync_next(sub, 3000, &m), HR_OK);
    ck_assert_str_eq(hr_message_data(m, NULL), "hi");
    hr_message_unref(&m);
    hr_sync_close(&s, 1);
    ep_stop();
}
END_TEST

/* ---- the broker's last words before it closes ---------------------------------- */

/*
 * The ERR frame that precedes the broker's close arrives with its
 * close_notify, often in one read: the frame is still handled, so the
 * reason is the ERR's (HR_EAUTH, HR_ESHUTDOWN), not a bare end of stream.
 */
START_TEST(test_err_then_close)
{
    static const char *const jwt[] = {"--jwt-hs256-secret", "0123456789abcdef0123456789abcdef",
                                      "--auth-anonymous", "pub=open.> sub=open.>", NULL};
    hr_client_opts_t o;
    ev_t e;
    char u[64];
    ep_start_on("server", 0, "tcp,ws", jwt);
    for (int wss = 0; wss < 2; wss++) {
        tls_opts(&o, url(wss ? "wss" : "tls", u, sizeof(u)));
        o.token = "not-a-jwt";
        ck_assert_int_eq(attempt(&o, &e), HR_EAUTH);
    }
    /* SIGTERM: ERR 9, then the close; the client reconnects once the broker is back. */
    tls_opts(&o, url("tls", u, sizeof(u)));
    o.reconnect_wait_ms = 10;
    ck_assert_int_eq(cfix_shutdown_cycle(&F, &o), HR_ESHUTDOWN);
    ep_stop();
}
END_TEST

/* ---- the wrong scheme for a port ------------------------------------------------- */

/*
 * tls:// and wss:// to plaintext ports, tcp:// and ws:// to TLS ports: at
 * once, and never retried. The broker answers plaintext on a TLS port with
 * an ERR frame (TCP) or an HTTP 400 (WebSocket, whatever the plaintext) that says so.
 */
START_TEST(test_port_mismatch)
{
    hr_client_opts_t o;
    ev_t e;
    char u[64];
    for (int tcp_tls = 0; tcp_tls < 2; tcp_tls++) {
        ep_start_on("server", 0, tcp_tls ? "tcp" : "ws", NULL);
        int tls_port = tcp_tls ? F.port : F.ws_port, plain = tcp_tls ? F.ws_port : F.port;
        struct {
            const char *scheme;
            int port, status;
        } cases[] = {
            {"tls", plain, HR_EPLAINPORT},
            {"wss", plain, HR_EPLAINPORT},
            {"tcp", tls_port, HR_ETLSPORT},
            {"ws", tls_port, HR_ETLSPORT},
        };
        for (size_t k = 0; k < 4; k++) {
            snprintf(u, sizeof(u), "%s://127.0.0.1:%d", cases[k].scheme, cases[k].port);
            tls_opts(&o, u);
            o.retry_on_failed_connect = 1; /* not retried all the same */
            uint64_t t0 = uv_hrtime();
            int r = attempt(&o, &e);
            ck_assert_msg(r == cases[k].status, "%s (TLS on %s): %s", u, tcp_tls ? "tcp" : "ws",
                          hr_err_name(r));
            ck_assert_uint_lt(uv_hrtime() - t0, 2000000000ull);
        }
        ep_stop();
    }
}
END_TEST

Suite *tls_suite(void);

Suite *tls_suite(void)
{
    Suite *s = suite_create("client_tls");
    TCase *tc = tcase_create("pubsub");
    tcase_add_checked_fixture(tc, setup_good, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tls_pubsub);
    tcase_add_test(tc, test_tls_reconnect);
    tcase_add_test(tc, test_wss_reconnect);
    tcase_add_test(tc, test_few_records);
    tcase_add_test(tc, test_stalled_handshake);
    suite_add_tcase(s, tc);
    tc = tcase_create("certificates");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_bad_server_certs);
    tcase_add_test(tc, test_server_names);
    tcase_add_test(tc, test_bad_options);
    tcase_add_test(tc, test_client_cert);
    tcase_add_test(tc, test_port_mismatch);
    tcase_add_test(tc, test_err_then_close);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!hr_test_certs()) {
        fprintf(stderr, "cannot make the test certificates\n");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
