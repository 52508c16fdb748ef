#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# PROXY protocol v1/v2 against the real broker on both ports: the balancer at 127.0.0.2 sends
# the header, clients at 127.0.0.1 connect directly; limits count the addresses headers name.
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import certs  # noqa: E402
from herald_test import (ERR, MSG, SLOW, WELCOME, Broker, Client, HttpRefused,  # noqa: E402
                         WsClient, herald_bin, http_raw, metrics, pack)

LB = "127.0.0.2"  # the load balancer: the only address in proxy-from
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport=51000, dst=None, dport=7400):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("::1" if fam == "TCP6" else "10.0.0.1")
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src=None, sport=51000, dst=None, dport=7400, local=False, tlvs=b""):
    if local:
        return V2_SIG + b"\x20\x00" + struct.pack(">H", len(tlvs)) + tlvs
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    dst = dst or ("::1" if fam == socket.AF_INET6 else "10.0.0.1")
    body = (socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) +
            struct.pack(">HH", sport, dport) + tlvs)
    return V2_SIG + bytes([0x21, 0x21 if fam == socket.AF_INET6 else 0x11]) + \
        struct.pack(">H", len(body)) + body


class Proxied:
    """A client that sends `header` first, from `source` (the balancer by default)."""

    def __init__(self, port, header=b"", source=LB, **kw):
        self.header = header
        super().__init__(port, source=source, **kw)

    def handshake(self):
        if self.header:
            self.s.sendall(self.header)
        super().handshake()


class PClient(Proxied, Client):
    pass


class PWsClient(Proxied, WsClient):
    pass


def kinds():
    return (("tcp", PClient), ("ws", PWsClient))


class ProxyCase(unittest.TestCase):
    """Helpers: brokers that must exit clean, raw sockets from the balancer, the log."""

    def start(self, *args, ports="both"):
        b = Broker("--proxy-protocol", ports, "--proxy-from", "10.9.9.0/24, %s, fd00::/8" % LB,
                   *args)
        self.addCleanup(self.finish, b)
        return b

    def finish(self, b):
        """Drains the broker: it exits 0 with no sanitizer report (leaks included)."""
        if b.alive():
            b.proc.send_signal(signal.SIGTERM)
            b.proc.wait(10 * SLOW)
        text = b.logtext()
        self.assertEqual(b.stop(), 0, text[-3000:])
        self.assertNotIn("Sanitizer", text)
        self.assertNotIn("runtime error", text)

    def port(self, b, kind):
        return b.tcp if kind == "tcp" else b.ws

    def welcomed(self, cls, port, header, **kw):
        c = cls(port, header, **kw)
        self.addCleanup(c.close)
        self.assertEqual(c.next()[0], WELCOME)
        return c

    def raw(self, port, data=b"", source=LB):
        s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW,
                                     source_address=(source, 0))
        self.addCleanup(s.close)
        if data:
            s.sendall(data)
        return s

    def closed_silently(self, s, timeout=5):
        """The broker closes `s` without sending anything."""
        s.settimeout(timeout * SLOW)
        try:
            got = s.recv(65536)
        except ConnectionResetError:
            got = b""
        self.assertEqual(got, b"")

    def log_has(self, b, text, timeout=3):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if text in b.logtext():
                return
            time.sleep(0.05)
        self.fail("log lacks %r:\n%s" % (text, b.logtext()))

    def roundtrip(self, pub, sub, topic):
        sub.sub(1, topic)
        sub.sync()
        pub.pub(topic, b"hi")
        self.assertEqual(sub.expect(MSG)[2], topic)


class ProxyProtocol(ProxyCase):
    # ---- headers on both ports --------------------------------------------------------

    def test_v1_and_v2_on_both_ports(self):
        b = self.start("--log-level", "debug")
        seen = []
        for kind, cls in kinds():
            port = self.port(b, kind)
            a = self.welcomed(cls, port, v1("203.0.113.7"))
            c = self.welcomed(cls, port, v2("2001:db8::7", 4444))
            d = self.welcomed(cls, port, v2("198.51.100.9", tlvs=b"\x01\x00\x02h2"))
            self.roundtrip(a, c, "t." + kind)
            self.roundtrip(d, a, "u." + kind)
            seen += [a, c, d]
        self.log_has(b, "accepted on the tcp port from 127.0.0.2:")
        self.log_has(b, "PROXY v1 from 127.0.0.2:")
        self.log_has(b, "client 203.0.113.7:51000")
        self.log_has(b, "client [2001:db8::7]:4444")
        self.log_has(b, "client 198.51.100.9:51000")
        m = metrics(b)  # a direct client: 127.0.0.1 is not in proxy-from
        self.log_has(b, "accepted on the ws port from 127.0.0.1:")
        self.assertEqual(m["herald_proxy_headers_total"], 6)
        self.assertEqual(m["herald_proxy_refused_total"], 0)

    def test_header_with_first_bytes_and_split(self):
        b = self.start()
        hello = Client.__new__(Client)
        body = __import__("msgpack").packb([1, {"v": 1}])
        frame = struct.pack(">I", len(body)) + body
        for header in (v1("203.0.113.7"), v2("203.0.113.8")):
            s = self.raw(b.tcp, header + frame)  # one segment: header and HELLO
            hello.s, hello.buf, hello.frames, hello.welcome = s, b"", [], None
            self.assertEqual(hello.next()[0], WELCOME)
            s = self.raw(b.tcp)  # one byte a write
            for i in range(len(header + frame)):
                s.sendall((header + frame)[i:i + 1])
                time.sleep(0.002)
            hello.s, hello.buf = s, b""
            self.assertEqual(hello.next()[0], WELCOME)

    def test_healthz_and_metrics_through_the_balancer(self):
        b = self.start()
        for header in (v1("203.0.113.7"), v2(local=True)):
            status, _ = http_raw(b.ws, header + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", LB)
            self.assertEqual(status, 200)
        status, body = http_raw(b.ws, v2("203.0.113.9") + b"GET /metrics HTTP/1.1\r\n\r\n", LB)
        self.assertEqual(status, 200)
        self.assertIn("herald_proxy_headers_total 3", body)

    # ---- LOCAL: the balancer's own connection --------------------------------------------

    def test_v2_local(self):
        b = self.start("--max-conns-per-ip", "1")
        for kind, cls in kinds():
            port = self.port(b, kind)
            hc = self.welcomed(cls, port, v2(local=True))  # counts as the balancer itself
            hc.close()
            time.sleep(0.2 * SLOW)
            held = self.welcomed(cls, port, v2(local=True, tlvs=b"\x04\x00\x00"))
            if kind == "tcp":
                refused = cls(port, v2(local=True))
                self.addCleanup(refused.close)
                self.assertEqual([f[:2] for f in refused.closed()], [[ERR, 7]])
            else:  # v1 UNKNOWN is the same: the balancer's address
                with self.assertRaises(HttpRefused) as e:
                    cls(port, b"PROXY UNKNOWN\r\n")
                self.assertEqual(e.exception.status, 503)
            held.close()
            time.sleep(0.3 * SLOW)
        self.assertEqual(metrics(b)["herald_proxy_headers_total"], 6)

    # ---- per-IP limits on the real address -----------------------------------------------

    def test_conns_per_ip_counts_real_addresses(self):
        b = self.start("--max-conns-per-ip", "1")
        for kind, cls in kinds():
            port = self.port(b, kind)
            a = self.welcomed(cls, port, v1("203.0.113.7"))
            other = self.welcomed(cls, port, v2("203.0.113.8"))  # another client: accepted
            v6 = self.welcomed(cls, port, v1("2001:db8:1:2::1"))
            if kind == "tcp":
                again = cls(port, v2("203.0.113.7", 6000))
                self.addCleanup(again.close)
                frames = again.closed()
                self.assertEqual([f[:2] for f in frames], [[ERR, 7]])
                self.assertIn("per IP", frames[0][2])
                same64 = cls(port, v2("2001:db8:1:2::99"))  # IPv6 counts per /64
                self.addCleanup(same64.close)
                self.assertEqual([f[:2] for f in same64.closed()], [[ERR, 7]])
            else:
                for header in (v2("203.0.113.7", 6000), v2("2001:db8:1:2::99")):
                    with self.assertRaises(HttpRefused) as e:
                        cls(port, header)
                    self.assertEqual(e.exception.status, 503)
            self.roundtrip(a, other, "still." + kind)  # the admitted ones are unaffected
            a.close()
            other.close()
            time.sleep(0.3 * SLOW)
            again = self.welcomed(cls, port, v1("203.0.113.7"))  # its slot is free again
            again.close()  # the next port's clients claim the same addresses
            v6.close()
            time.sleep(0.3 * SLOW)
        self.assertEqual(metrics(b)["herald_connections_refused_per_ip_total"], 4)

    # ---- refusals --------------------------------------------------------------------------

    def test_header_from_unlisted_address_refused(self):
        b = self.start()
        direct = Client(b.tcp, source="127.0.0.1")  # not listed: no header, its own address
        self.addCleanup(direct.close)
        self.assertEqual(direct.next()[0], WELCOME)
        for kind in ("tcp", "ws"):
            for header in (v1("203.0.113.7"), v2("203.0.113.7"), v2(local=True)):
                s = self.raw(self.port(b, kind), header, source="127.0.0.1")
                self.closed_silently(s)
            s = self.raw(self.port(b, kind), b"PROXY", source="127.0.0.3")
            time.sleep(0.1 * SLOW)
            s.sendall(b" TCP4 1.2.3.4 ")  # refused once "PROXY " is complete
            self.closed_silently(s)
        self.log_has(b, "refused on the tcp port: PROXY protocol from 127.0.0.1:")
        self.log_has(b, "refused on the ws port: PROXY protocol from 127.0.0.3:")
        self.log_has(b, "a header from an address not in proxy-from")
        ws = WsClient(b.ws, source="127.0.0.1")  # direct WebSocket clients still work
        self.addCleanup(ws.close)
        self.assertEqual(ws.next()[0], WELCOME)
        self.roundtrip(direct, ws, "direct")
        self.assertEqual(metrics(b)["herald_proxy_refused_total"], 8)

    def test_listed_address_without_header_refused(self):
        b = self.start()
        body = __import__("msgpack").packb([1, {"v": 1}])
        s = self.raw(b.tcp, struct.pack(">I", len(body)) + body)
        self.closed_silently(s)
        s = self.raw(b.ws, b"GET /healthz HTTP/1.1\r\n\r\n")
        self.closed_silently(s)
        self.log_has(b, "refused on the tcp port: PROXY protocol from 127.0.0.2:")
        self.log_has(b, "no header, and the address is in proxy-from, which requires one")
        self.log_has(b, "refused on the ws port: PROXY protocol from 127.0.0.2:")

    def test_malformed_headers_refused(self):
        b = self.start()
        keep = PClient(b.tcp, v1("203.0.113.50"))
        self.addCleanup(keep.close)
        self.assertEqual(keep.next()[0], WELCOME)
        cases = [
            (b"PROXY TCP4 203.0.113.7 10.0.0.1 051000 7400\r\n", "v1: bad port"),
            (b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\n", "v1: line ends with LF, not CRLF"),
            (b"PROXY TCP9 a b 1 2\r\n", "v1: protocol is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "with single spaces"),
            (b"PROXY UNKNOWN " + b"x" * 100, "v1: no CRLF within 107 bytes"),
            (v2("203.0.113.7")[:12] + b"\x31\x11\x00\x0c", "v2: version is not 2"),
            (V2_SIG + b"\x21\x12\x00\x0c" + bytes(12), "v2: address family or transport"),
            (V2_SIG + b"\x21\x11\x00\x08" + bytes(8), "v2: length too short"),
            (V2_SIG + b"\x21\x11\x40\x00", "v2: header longer than this broker accepts"),
            (v2("203.0.113.7", tlvs=b"\x01\x00\x05ab"), "v2: a TLV runs past the end"),
        ]
        for kind in ("tcp", "ws"):
            for data, why in cases:
                s = self.raw(self.port(b, kind), data)
                self.closed_silently(s)
                self.log_has(b, why)
                time.sleep(0.15)  # refusals are logged at most 10 a second
        self.assertEqual(metrics(b)["herald_proxy_refused_total"], 2 * len(cases))
        keep.sub(1, "alive")  # the established client never noticed
        keep.sync()
        keep.pub("alive", b"x")
        self.assertEqual(keep.expect(MSG)[2], "alive")
        self.assertTrue(b.alive())

    def test_incomplete_header_times_out(self):
        b = self.start("--hello-timeout-ms", "600", "--ws-handshake-ms", "600")
        for kind, partial, why in (("tcp", v1("203.0.113.7")[:20], "hello-timeout-ms"),
                                   ("ws", v2("203.0.113.7")[:20], "ws-handshake-ms"),
                                   ("tcp", b"", "hello-timeout-ms")):
            t0 = time.time()
            s = self.raw(self.port(b, kind), partial)
            self.closed_silently(s, timeout=5)
            took = time.time() - t0
            self.assertGreaterEqual(took, 0.5)
            self.assertLess(took, 3 * SLOW)
            self.log_has(b, "no complete header within " + why)
        # An unlisted client that sent a "P" and stopped is closed the same way.
        s = self.raw(b.tcp, b"P", source="127.0.0.1")
        self.closed_silently(s, timeout=5)

    def test_truncated_header_logged(self):
        b = self.start()
        for port, partial in ((b.tcp, v1("203.0.113.7")[:25]), (b.ws, v2("2001:db8::1")[:40])):
            s = self.raw(port, partial)
            time.sleep(0.1 * SLOW)
            s.close()  # the balancer gives up half-way
        s = self.raw(b.tcp)  # connected and closed without a byte: a health check, not logged
        s.close()
        self.log_has(b, "refused on the tcp port: PROXY protocol from 127.0.0.2:")
        self.log_has(b, "refused on the ws port: PROXY protocol from 127.0.0.2:")
        time.sleep(0.2 * SLOW)
        self.assertEqual(b.logtext().count("the connection closed in the middle of a header"), 2)
        self.assertEqual(metrics(b)["herald_proxy_refused_total"], 2)

    def test_only_the_configured_port(self):
        b = self.start(ports="tcp")
        self.welcomed(PClient, b.tcp, v1("203.0.113.7"))
        ws = WsClient(b.ws, source=LB)  # the WebSocket port takes no header, from anyone
        self.addCleanup(ws.close)
        self.assertEqual(ws.next()[0], WELCOME)
        with self.assertRaises(HttpRefused):
            PWsClient(b.ws, v1("203.0.113.7"))
        b = self.start(ports="ws")
        self.welcomed(PWsClient, b.ws, v2("203.0.113.7"))
        self.welcomed(Client, b.tcp, None, source=LB)

    def test_reload_keeps_the_settings(self):
        b = Broker(config="proxy-protocol = tcp\nproxy-from = %s\n" % LB)
        self.addCleanup(self.finish, b)
        with open(os.path.join(b.dir, "herald.conf"), "w") as f:
            f.write("proxy-protocol = off\nproxy-from = 10.0.0.0/8\n")
        os.kill(b.pid, signal.SIGHUP)
        self.log_has(b, "reload: 'proxy-protocol' changed but needs a restart")
        self.log_has(b, "reload: 'proxy-from' changed but needs a restart")
        self.welcomed(PClient, b.tcp, v1("203.0.113.7"))  # still on, still trusting 127.0.0.2

    # ---- start-up -----------------------------------------------------------------------

    def test_startup_validation(self):
        cases = [
            (["--proxy-protocol", "tcp"], "'proxy-protocol': 'tcp' needs 'proxy-from'"),
            (["--proxy-protocol", "yes"], "'proxy-protocol': 'yes' is not off, tcp, ws or both"),
            (["--proxy-from", "10.0.0.1/8"],
             "'proxy-from': '10.0.0.1/8' has address bits set past the /8 prefix"),
            (["--proxy-from", "lb.internal"], "'lb.internal' is not an IPv4 or IPv6 address"),
            (["--proxy-from", "::/129"], "the prefix length must be 0..128"),
            (["--proxy-protocol", "both", "--proxy-from", ","], "is not an IP address"),
        ]
        for args, text in cases:
            r = subprocess.run([herald_bin(), "--workers", "1", "--port", "0", "--ws-port", "0"] +
                               args, capture_output=True, text=True, timeout=10 * SLOW)
            self.assertEqual(r.returncode, 1, (args, r.stderr))
            self.assertIn(text, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)


class ProxyThenTls(ProxyCase):
    """The header comes first, in the clear, also on ports that speak TLS."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-proxy-certs-")
        cls.certs = certs.make(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start(self, *args):
        b = Broker("--proxy-protocol", "both", "--proxy-from", LB, "--tls-cert",
                   self.certs["server"], "--tls-key", self.certs["server_key"], *args)
        self.addCleanup(self.finish, b)
        return b

    def ctx(self):
        return ssl.create_default_context(cafile=self.certs["ca"])

    def tls_client(self, cls, port, header):
        outer = self

        class C(cls):
            def handshake(self):
                self.s.sendall(header)
                self.s = outer.ctx().wrap_socket(self.s, server_hostname="localhost")
                cls.handshake(self)  # WsClient's upgrade; nothing for Client

        c = C(port, source=LB)
        self.addCleanup(c.close)
        return c

    def test_header_then_tls_on_both_ports(self):
        b = self.start("--max-conns-per-ip", "1")
        a = self.tls_client(Client, b.tcp, v2("203.0.113.7"))
        self.assertEqual(a.next()[0], WELCOME)
        w = self.tls_client(WsClient, b.ws, v1("203.0.113.8"))
        self.assertEqual(w.next()[0], WELCOME)
        w.sub(1, "t")
        w.sync()
        a.pub("t", b"over tls")
        self.assertEqual(w.expect(MSG)[2], "t")
        # The limit counts the client the header names, before TLS begins: refused.
        with self.assertRaises((ssl.SSLError, OSError, EOFError)):
            self.tls_client(Client, b.tcp, v1("203.0.113.7")).next()
        m = self.https_metrics(b)  # a direct client (127.0.0.1 is not listed)
        self.assertEqual(m["herald_proxy_headers_total"], 3)
        self.assertEqual(m["herald_connections_refused_per_ip_total"], 1)

    def https_metrics(self, b):
        s = self.ctx().wrap_socket(socket.create_connection(("127.0.0.1", b.ws), timeout=5 * SLOW),
                                   server_hostname="localhost")
        self.addCleanup(s.close)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            try:
                d = s.recv(65536)
            except ssl.SSLError:
                break
            if not d:
                break
            data += d
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in body.decode().splitlines()
                                         if line and not line.startswith("#"))}

    def test_header_and_client_hello_in_one_segment(self):
        b = self.start()
        s = socket.create_connection(("127.0.0.1", b.tcp), timeout=5 * SLOW,
                                     source_address=(LB, 0))
        self.addCleanup(s.close)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        t = self.ctx().wrap_bio(inc, out, server_hostname="localhost")
        with self.assertRaises(ssl.SSLWantReadError):
            t.do_handshake()
        s.sendall(v1("203.0.113.7") + out.read())  # the header and the ClientHello together

        def pump():
            d = out.read()
            if d:
                s.sendall(d)
            r = s.recv(65536)
            self.assertTrue(r, "closed")
            inc.write(r)

        while True:
            try:
                t.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
        body = pack(1, {"v": 1})
        t.write(struct.pack(">I", len(body)) + body)
        got = b""
        while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
            try:
                got += t.read(65536)
            except ssl.SSLWantReadError:
                pump()
        self.assertEqual(msgpack.unpackb(got[4:], raw=False)[0], WELCOME)

    def test_bad_header_on_a_tls_port(self):
        b = self.start()
        s = self.raw(b.tcp, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")
        self.closed_silently(s)
        self.log_has(b, "v1: line ends with LF, not CRLF")


if __name__ == "__main__":
    unittest.main()
