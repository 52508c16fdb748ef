# SPDX-License-Identifier: MIT
# TLS on both ports against the real broker: Python's ssl module speaking raw Herald frames
# over tls://, python3-websockets over wss://, https for /healthz and /metrics, openssl s_client.
# Certificates come fresh from tests/support/certs.py for each run.
import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import warnings

import msgpack
import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import certs  # noqa: E402
from herald_test import (ERR, HELLO, MSG, PING, PONG, SLOW, WELCOME, Broker, Client,  # noqa: E402
                         WsClient, pack)

CERTS = {}


def setUpModule():
    warnings.simplefilter("ignore", ResourceWarning)  # clients left to the broker's close
    d = tempfile.mkdtemp(prefix="herald-tls-certs-")
    CERTS.update(certs.make(d))
    CERTS["dir"] = d


def tearDownModule():
    shutil.rmtree(CERTS["dir"], ignore_errors=True)


def client_ctx(ca="ca", cert=None, verify=True, alpn=None):
    ctx = ssl.create_default_context(cafile=CERTS[ca])
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(CERTS[cert], CERTS[cert + "_key"])
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class CleanBroker(Broker):
    """A broker that must exit 0 when stopped (under ASan: no leak, no error at exit)."""

    def __exit__(self, exc, *rest):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10 * SLOW)
            except subprocess.TimeoutExpired:
                pass  # stop() kills it
        log = self.logtext()
        rc = self.stop()
        if exc is None and rc != 0:
            raise AssertionError("herald exited %r:\n%s" % (rc, log[-4000:]))


def cert_in(d, name="server"):
    """Copies certificate `name` and its key to d/cert.pem and d/key.pem (what a broker
    started on those paths reloads on SIGHUP); returns both paths."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    shutil.copy(CERTS[name], cert)
    shutil.copy(CERTS[name + "_key"], key)
    return cert, key


def tls_broker(*args, cert="server"):
    return CleanBroker("--tls-cert", CERTS[cert], "--tls-key", CERTS[cert + "_key"], "--log-level",
                  "info", *args)


class TlsClient(Client):
    """The blocking wire client (length-prefixed frames) over tls://."""

    ctx = None
    host = "localhost"

    def handshake(self):
        self.s = (self.ctx or client_ctx()).wrap_socket(self.s, server_hostname=self.host)


def tls_client(port, ctx=None, host="localhost", **kw):
    cls = type("C", (TlsClient,), {"ctx": ctx, "host": host})
    return cls(port, **kw)


class TlsWsClient(WsClient):
    """The raw WebSocket client over wss://."""

    def __init__(self, port, ctx=None, **kw):
        self.ctx = ctx or client_ctx()
        super().__init__(port, **kw)

    def handshake(self):
        self.s = self.ctx.wrap_socket(self.s, server_hostname="localhost")
        super().handshake()


def wait_log(broker, text, timeout=5):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if text in broker.logtext():
            return True
        time.sleep(0.02)
    raise AssertionError("log has no %r:\n%s" % (text, broker.logtext()))


def https_get(port, path, ctx=None):
    with urllib.request.urlopen("https://localhost:%d%s" % (port, path), timeout=5 * SLOW,
                                context=ctx or client_ctx()) as r:
        return r.status, r.read().decode()


def peer_cn(sock):
    return dict(x[0] for x in sock.getpeercert()["subject"])["commonName"]


def connect_fails(port, ctx, host="localhost"):
    """A TLS client that must fail: returns the SSL error's text (handshake or first read)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    try:
        t = ctx.wrap_socket(s, server_hostname=host)
        body = pack(HELLO, {"v": 1})
        t.sendall(len(body).to_bytes(4, "big") + body)
        d = t.recv(100)  # TLS 1.3: a refused client certificate shows here
        raise AssertionError("connected and read %r" % d)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        return str(e)
    finally:
        s.close()


class Tls(unittest.TestCase):
    def test_tcp_frames_over_tls(self):
        with tls_broker() as b:
            self.assertIn("listening: tcp on 127.0.0.1:%d (TLS)" % b.tcp, b.logtext())
            sub = tls_client(b.tcp)
            w = sub.expect(WELCOME)[1]
            self.assertEqual(w["v"], 1)
            self.assertEqual(sub.s.version(), "TLSv1.3")
            self.assertEqual(peer_cn(sub.s), "herald-test-server")
            sub.sub(1, "t.>")
            sub.sync()
            pub = tls_client(b.tcp, host="127.0.0.1")  # verified by IP address too
            pub.expect(WELCOME)
            # many small deliveries (gathered into records) and one large payload, in order
            for i in range(2000):
                pub.pub("t.small", b"m%d" % i)
            big = os.urandom(700 * 1024)
            pub.pub("t.big", big)
            pub.sync()
            got = [sub.expect(MSG, timeout=10) for _ in range(2001)]
            self.assertEqual([f[4] for f in got[:2000]], [b"m%d" % i for i in range(2000)])
            self.assertEqual(got[2000][4], big)
            # a plain client on the same port is refused with an ERR it can read
            plain = Client(b.tcp, hello=False)
            plain.send(HELLO, {"v": 1})
            e = plain.expect(ERR)
            self.assertIn("speaks TLS", e[2])
            self.assertEqual(plain.closed(), [])
            wait_log(b, "plaintext on a TLS port")
            sub.send(PING, 9)
            self.assertEqual(sub.expect(PONG)[1], 9)  # the others never noticed
            sub.close()
            pub.close()

    def test_wss_with_websockets(self):
        async def session(port):
            async with websockets.connect("wss://localhost:%d/" % port, ssl=client_ctx(),
                                          subprotocols=["herald.v1"]) as ws:
                await ws.send(pack(HELLO, {"v": 1}))
                w = msgpack.unpackb(await ws.recv(), raw=False)
                self.assertEqual(w[0], WELCOME)
                await ws.send(pack(3, 1, "a.b"))
                await ws.send(pack(2, "a.b", b"x" * 100000))
                while True:
                    m = msgpack.unpackb(await ws.recv(), raw=False)
                    if m[0] == MSG:
                        self.assertEqual(m[4], b"x" * 100000)
                        return

        with tls_broker() as b:
            asyncio.run(asyncio.wait_for(session(b.ws), 20 * SLOW))
            # the raw client too, and a TCP subscriber sees the WebSocket publish
            tcp = tls_client(b.tcp)
            tcp.expect(WELCOME)
            tcp.sub(1, "x")
            tcp.sync()
            ws = TlsWsClient(b.ws)
            ws.expect(WELCOME)
            ws.pub("x", b"hello")
            self.assertEqual(tcp.expect(MSG)[4], b"hello")

    def test_https_endpoints(self):
        with tls_broker() as b:
            status, text = https_get(b.ws, "/healthz")
            self.assertEqual(status, 200)
            self.assertIn("ok", text)
            status, text = https_get(b.ws, "/metrics")
            self.assertIn("herald_tls_handshakes_total", text)
            status, js = https_get(b.ws, "/herald.js")
            self.assertIn("herald", js.lower())
            # ALPN: the WebSocket/HTTP port picks http/1.1
            s = client_ctx(alpn=["h2", "http/1.1"]).wrap_socket(
                socket.create_connection(("127.0.0.1", b.ws), timeout=5), server_hostname="localhost")
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
            s.close()
            # plain HTTP to the TLS port: a 400 that says what to use, and a log line
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen("http://127.0.0.1:%d/healthz" % b.ws, timeout=5)
            self.assertEqual(e.exception.code, 400)
            self.assertIn("https://", e.exception.read().decode())
            wait_log(b, "plaintext HTTP request on a TLS port")
            metrics = https_get(b.ws, "/metrics")[1]
            self.assertRegex(metrics, r"\nherald_tls_failures_total [1-9]")
            self.assertRegex(metrics, r"\nherald_tls_handshakes_total [1-9]")
            self.assertIn('herald_http_responses_total{status="503"} 0', metrics)  # no goodbye

    def test_openssl_s_client(self):
        with tls_broker() as b:
            req = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % b.ws,
                                "-servername", "localhost", "-verify_hostname", "localhost",
                                "-CAfile", CERTS["ca"], "-verify_return_error", "-alpn",
                                "http/1.1", "-ign_eof"], input=req, capture_output=True,
                               timeout=20 * SLOW)
            out = p.stdout.decode(errors="replace")
            self.assertEqual(p.returncode, 0, out + p.stderr.decode(errors="replace"))
            self.assertIn("Verify return code: 0 (ok)", out)
            self.assertIn("ALPN protocol: http/1.1", out)
            self.assertIn("HTTP/1.1 200", out)
            # TLS 1.2 with a forward-secret AEAD cipher, and nothing older than 1.2
            p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % b.tcp,
                                "-tls1_2", "-CAfile", CERTS["ca"]], input=b"",
                               capture_output=True, timeout=20 * SLOW)
            out = p.stdout.decode(errors="replace")
            self.assertIn("Protocol  : TLSv1.2", out)
            self.assertRegex(out, r"Cipher    : ECDHE-[A-Z]+-(AES\d+-GCM|CHACHA20)")
            p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % b.tcp,
                                "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], input=b"",
                               capture_output=True, timeout=20 * SLOW)
            self.assertNotEqual(p.returncode, 0)
            wait_log(b, "unsupported protocol")
            # renegotiation is refused: R asks for it once the session is up (stdin stays
            # open: at its end s_client would quit first)
            p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % b.tcp,
                                  "-tls1_2", "-CAfile", CERTS["ca"]],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
            killer = threading.Timer(20 * SLOW, p.kill)
            killer.start()
            try:
                for line in p.stdout:
                    if line.startswith(b"    Verify return code"):
                        break
                p.stdin.write(b"R\n")
                p.stdin.flush()
                out = p.stdout.read().decode(errors="replace")  # the broker closes
            finally:
                killer.cancel()
                p.kill()
                p.wait()
            self.assertIn("RENEGOTIATING", out)
            self.assertIn("no renegotiation", out)
            self.assertTrue(b.alive())

    def test_bad_server_certificates(self):
        cases = [("expired", "localhost", "certificate has expired"),
                 ("wronghost", "localhost", "Hostname mismatch"),
                 ("server", "127.0.0.2", "IP address mismatch"),
                 ("rogue", "localhost", "unable to get local issuer certificate")]
        for cert, host, why in cases:
            with self.subTest(cert=cert), tls_broker(cert=cert) as b:
                err = connect_fails(b.tcp, client_ctx(), host=host)
                self.assertIn(why, err)
                wait_log(b, "TLS handshake failed on the tcp port")
                # the broker serves a client that does not check, and anyone else, as before
                c = tls_client(b.tcp, ctx=client_ctx(verify=False))
                c.expect(WELCOME)
                self.assertTrue(b.alive())

    def test_stalled_handshakes(self):
        with tls_broker("--hello-timeout-ms", "300", "--ws-handshake-ms", "400") as b:
            stalled = []
            for port in (b.tcp, b.ws):
                s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
                s.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, no more
                stalled.append(s)
                stalled.append(socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW))
            ok = tls_client(b.tcp)
            ok.expect(WELCOME)
            t0 = time.time()
            for s in stalled:
                self.assertEqual(s.recv(100), b"")  # closed, no answer
            self.assertLess(time.time() - t0, 3 * SLOW)
            wait_log(b, "TLS handshake not completed within hello-timeout-ms")
            wait_log(b, "TLS handshake not completed within ws-handshake-ms")
            time.sleep(0.5)  # past the timeouts: the established connection stays
            ok.send(PING, 3)
            self.assertEqual(ok.expect(PONG)[1], 3)
            self.assertEqual(https_get(b.ws, "/healthz")[0], 200)

    def test_client_certificates(self):
        with tls_broker("--tls-ca", CERTS["ca"], "--tls-verify", "required", "--log-level",
                        "debug") as b:
            err = connect_fails(b.tcp, client_ctx())
            self.assertIn("CERTIFICATE_REQUIRED", err.upper().replace(" ", "_"))
            wait_log(b, "peer did not return a certificate")
            err = connect_fails(b.tcp, client_ctx(cert="rogue-client"))
            wait_log(b, "certificate verify failed")
            c = tls_client(b.tcp, ctx=client_ctx(cert="client"))
            c.expect(WELCOME)
            wait_log(b, "client certificate /CN=herald-test-client")
            ws = TlsWsClient(b.ws, ctx=client_ctx(cert="client"))
            ws.expect(WELCOME)
        with tls_broker("--tls-ca", CERTS["ca"], "--tls-verify", "optional") as b:
            tls_client(b.tcp).expect(WELCOME)
            tls_client(b.tcp, ctx=client_ctx(cert="client")).expect(WELCOME)
            connect_fails(b.tcp, client_ctx(cert="rogue-client"))
            wait_log(b, "certificate verify failed")

    def test_sighup_reload(self):
        d = tempfile.mkdtemp(prefix="herald-tls-reload-")
        try:
            cert, key = cert_in(d)
            with CleanBroker("--tls-cert", cert, "--tls-key", key, "--log-level", "info") as b:
                old = tls_client(b.tcp)
                old.expect(WELCOME)
                self.assertEqual(peer_cn(old.s), "herald-test-server")
                old.sub(1, "r")
                old.sync()
                cert_in(d, "server2")
                os.kill(b.pid, signal.SIGHUP)
                wait_log(b, "TLS certificate loaded for new connections: /CN=herald-test-server-2")
                new = tls_client(b.tcp)
                new.expect(WELCOME)
                self.assertEqual(peer_cn(new.s), "herald-test-server-2")
                new.pub("r", b"after reload")
                self.assertEqual(old.expect(MSG)[4], b"after reload")  # the old one keeps going
                self.assertEqual(peer_cn(old.s), "herald-test-server")
                # a broken certificate keeps the current one, and says why
                with open(cert, "w") as f:
                    f.write("not a certificate\n")
                os.kill(b.pid, signal.SIGHUP)
                wait_log(b, "keeping the current certificate")
                self.assertIn("cannot load certificate " + cert, b.logtext())
                again = tls_client(b.tcp)
                again.expect(WELCOME)
                self.assertEqual(peer_cn(again.s), "herald-test-server-2")
                # a key that does not match its certificate: the same
                shutil.copy(CERTS["server"], cert)
                os.kill(b.pid, signal.SIGHUP)
                wait_log(b, "key values mismatch")
                self.assertEqual(peer_cn(tls_client(b.tcp).s), "herald-test-server-2")
                old.send(PING, 5)
                self.assertEqual(old.expect(PONG)[1], 5)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_tls_on_one_port(self):
        with tls_broker("--tls-ports", "tcp") as b:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % b.ws, timeout=5) as r:
                self.assertEqual(r.status, 200)
            tls_client(b.tcp).expect(WELCOME)
        with tls_broker("--tls-ports", "ws") as b:
            Client(b.tcp).expect(WELCOME)
            self.assertEqual(https_get(b.ws, "/healthz")[0], 200)

    def test_workers(self):
        # every worker loads the certificate itself, and reloads it on the primary's SIGHUP
        d = tempfile.mkdtemp(prefix="herald-tls-workers-")
        try:
            cert, key = cert_in(d)
            with CleanBroker("--tls-cert", cert, "--tls-key", key, "--log-level", "info",
                             "--workers", "2") as b:
                clients = [tls_client(b.tcp) for _ in range(16)]  # both workers get some
                for c in clients:
                    c.expect(WELCOME)
                self.assertEqual({c.welcome["worker"] for c in clients}, {0, 1})
                cert_in(d, "server2")
                os.kill(b.pid, signal.SIGHUP)
                deadline = time.time() + 5 * SLOW
                while b.logtext().count("TLS certificate loaded") < 2 and time.time() < deadline:
                    time.sleep(0.05)
                self.assertEqual(b.logtext().count("TLS certificate loaded"), 2, b.logtext())
                for _ in range(4):
                    c = tls_client(b.tcp)
                    c.expect(WELCOME)
                    self.assertEqual(peer_cn(c.s), "herald-test-server-2")
                sub = TlsWsClient(b.ws)
                sub.expect(WELCOME)
                sub.sub(1, "w")
                sub.sync()
                clients[0].pub("w", b"across workers")
                self.assertEqual(sub.expect(MSG)[4], b"across workers")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_idle_memory(self):
        # idle TLS connections keep no record buffers: about 15 KiB of broker RSS each here
        # (OpenSSL's session state), about 24 KiB when OpenSSL keeps them (no
        # SSL_MODE_RELEASE_BUFFERS)
        n = 400
        with tls_broker("--max-pending", "1000") as b:
            warm = [tls_client(b.tcp) for _ in range(20)]  # the allocator's first growth
            for c in warm:
                c.expect(WELCOME)
            time.sleep(0.5)
            before = b.rss_kb()
            idle = []
            for i in range(n):
                c = tls_client(b.tcp)
                c.expect(WELCOME)
                c.sub(1, "idle.%d" % i)
                idle.append(c)
            for c in idle[-10:]:
                c.sync()
            time.sleep(0.6)  # past a sweep with no handshake: the broker trims
            per_conn = (b.rss_kb() - before) * 1024 / n
            print("idle TLS connection: %.0f bytes of broker RSS" % per_conn, file=sys.stderr)
            if SLOW == 1:  # sanitizers change every allocation's size
                self.assertLess(per_conn, 20 * 1024)
            idle[0].send(PING, 1)
            self.assertEqual(idle[0].expect(PONG)[1], 1)

    def test_startup_errors(self):
        def fails(*args):
            with self.assertRaises(RuntimeError) as e:
                Broker(*args)
            return str(e.exception)

        self.assertIn("needs 'tls-key'", fails("--tls-cert", CERTS["server"]))
        self.assertIn("cannot load private key", fails("--tls-cert", CERTS["server"], "--tls-key",
                                                       CERTS["client_key"]))
        self.assertIn("/nonexistent.pem", fails("--tls-cert", "/nonexistent.pem", "--tls-key",
                                                CERTS["server_key"]))
        self.assertIn("needs a CA", fails("--tls-cert", CERTS["server"], "--tls-key",
                                          CERTS["server_key"], "--tls-verify", "required"))
        self.assertIn("'tls-verify': 'maybe'", fails("--tls-cert", CERTS["server"], "--tls-key",
                                                     CERTS["server_key"], "--tls-verify", "maybe"))
        self.assertIn("'tls-ports'", fails("--tls-ports", "udp"))
        self.assertIn("'tls-ports'", fails("--tls-ports", ""))


if __name__ == "__main__":
    unittest.main()
