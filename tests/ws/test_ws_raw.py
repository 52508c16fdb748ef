# SPDX-License-Identifier: MIT
# RFC 6455 edge cases in raw bytes against the real broker: exact close codes and HTTP statuses,
# and a witness connection that must be unaffected by every misbehaving client.
import base64
import hashlib
import os
import socket
import struct
import sys
import time
import unittest
import warnings

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import Broker, TcpClient  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(path="/", key=KEY, version="13", extra=(), method="GET", upgrade=True):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(op, payload=b"", fin=True, mask=True, rsv=0, length=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload) if length is None else length
    if n < 126:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def binary(obj, **kw):
    return frame(2, msgpack.packb(obj, use_bin_type=True), **kw)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def http_response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def read_frame(self):
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                assert not (b1 & 0x80), "server frames must not be masked"
                n, off = b1 & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, off = struct.unpack(">H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
                if (b1 & 0x7F) < 126 or off > 2:
                    if len(self.buf) >= off + n:
                        p, self.buf = self.buf[off:off + n], self.buf[off + n:]
                        return bool(b0 & 0x80), b0 & 0x0F, p
            self._fill()

    def read_msg(self):
        fin, op, p = self.read_frame()
        assert fin and op == 2, (fin, op, p)
        return msgpack.unpackb(p, raw=False)

    def eof(self, timeout=5):
        """True when the broker closes the TCP connection (after discarding anything else)."""
        self.s.settimeout(timeout)
        try:
            while self.s.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


class WsRaw(unittest.TestCase):
    broker = None

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--max-payload", "1000", "--ws-origins",
                            "http://good.example, http://127.0.0.1:8000",
                            "--ws-handshake-ms", "400", "--ws-max-header", "2048")
        # A witness: a WebSocket subscriber every test checks is still served.
        cls.witness = cls.open(cls)
        cls.witness.send(binary([3, 1, "witness.x"]))
        cls.wseq = 0

    @classmethod
    def tearDownClass(cls):
        cls.witness.close()
        rc = cls.broker.stop()
        assert rc == 0, f"herald exited with {rc}"

    def tearDown(self):
        # Every misbehaving connection is gone and the witness still gets its messages.
        pub = TcpClient(self.broker.tcp, "witness-pub")
        pub.send([2, "witness.x", b"still here"])
        type(self).wseq += 1
        m = self.witness.read_msg()
        self.assertEqual(m[:5], [17, 1, "witness.x", self.wseq, b"still here"])
        pub.close()

    # -- helpers -------------------------------------------------------------------

    def open(self, hello=True, extra=()):
        c = Conn(self.broker.ws)
        c.send(request(extra=extra))
        status, headers, _ = c.http_response()
        assert status == 101, status
        if hello:
            c.send(binary([1, {"v": 1, "name": "raw"}]))
            w = c.read_msg()
            assert w[0] == 16, w
        return c

    def expect_close(self, c, code, err=None):
        """Reads until the close frame; checks the ERR frame before it and the TCP close after."""
        seen_err = None
        while True:
            fin, op, p = c.read_frame()
            if op == 2:
                m = msgpack.unpackb(p, raw=False)
                if m[0] == 19:
                    seen_err = m[1]
                continue
            if op in (9, 10):
                continue
            self.assertEqual(op, 8, "expected a close frame")
            self.assertGreaterEqual(len(p), 2, "close frame without a status code")
            self.assertEqual(struct.unpack(">H", p[:2])[0], code)
            break
        if err is not None:
            self.assertEqual(seen_err, err, "the ERR frame must precede the close frame")
        c.send(frame(8, struct.pack(">H", code)))
        self.assertTrue(c.eof(), "broker did not close the TCP connection")
        c.close()

    def expect_status(self, req, status, header=None):
        c = Conn(self.broker.ws)
        c.send(req)
        st, headers, body = c.http_response()
        self.assertEqual(st, status, body)
        if header:
            self.assertEqual(headers.get(header[0].lower()), header[1])
        self.assertTrue(c.eof())
        c.close()
        return headers, body

    # -- frames ----------------------------------------------------------------------

    def test_unmasked_frame(self):
        c = self.open()
        c.send(binary([5, 1], mask=False))
        self.expect_close(c, 1002, err=1)

    def test_reserved_bits(self):
        for rsv in (4, 2, 1):
            c = self.open()
            c.send(binary([5, 1], rsv=rsv))
            self.expect_close(c, 1002, err=1)

    def test_reserved_opcode(self):
        c = self.open()
        c.send(frame(3, b"x"))
        self.expect_close(c, 1002, err=1)

    def test_64bit_length_over_limit(self):
        c = self.open()
        # wslay reports a frame once some payload is there; the length alone decides.
        c.send(frame(2, b"", length=1 << 40)[:14] + b"\0" * 16)
        self.expect_close(c, 1009, err=2)

    def test_64bit_length_top_bit(self):
        c = self.open()
        c.send(bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 63) + b"\0\0\0\0")
        self.expect_close(c, 1002, err=1)

    def test_fragmented_control_frame(self):
        c = self.open()
        c.send(frame(9, b"ping", fin=False))
        self.expect_close(c, 1002, err=1)

    def test_control_frame_too_long(self):
        c = self.open()
        c.send(frame(9, b"p" * 126))
        self.expect_close(c, 1002, err=1)

    def test_continuation_without_start(self):
        c = self.open()
        c.send(frame(0, b"\x92\x05\x01"))
        self.expect_close(c, 1002, err=1)

    def test_new_message_inside_fragmented_one(self):
        c = self.open()
        c.send(frame(2, b"\x92", fin=False) + frame(2, b"\x05\x01"))
        self.expect_close(c, 1002, err=1)

    def test_text_message(self):
        c = self.open()
        c.send(frame(1, b"hello"))
        self.expect_close(c, 1003, err=1)

    def test_text_message_before_hello(self):
        c = self.open(hello=False)
        c.send(frame(1, b"{}"))
        self.expect_close(c, 1003, err=1)

    def test_bad_close_code(self):
        for code in (999, 1005, 1006, 5000):
            c = self.open()
            c.send(frame(8, struct.pack(">H", code)))
            self.expect_close(c, 1002, err=1)

    def test_one_byte_close(self):
        c = self.open()
        c.send(frame(8, b"\x03"))
        self.expect_close(c, 1002, err=1)

    def test_close_reason_invalid_utf8(self):
        c = self.open()
        c.send(frame(8, struct.pack(">H", 1000) + b"\xff\xfe"))
        self.expect_close(c, 1007, err=1)

    def test_client_close_is_echoed(self):
        c = self.open()
        c.send(frame(8, struct.pack(">H", 1000) + b"bye"))
        fin, op, p = c.read_frame()
        self.assertEqual((op, struct.unpack(">H", p[:2])[0]), (8, 1000))
        self.assertTrue(c.eof())
        c.close()

    def test_empty_close_is_echoed(self):
        c = self.open()
        c.send(frame(8))
        fin, op, p = c.read_frame()
        self.assertEqual(op, 8)
        self.assertTrue(c.eof())
        c.close()

    def test_eof_mid_frame(self):
        c = self.open()
        c.send(binary([2, "witness.x", b"never"])[:6])
        c.s.shutdown(socket.SHUT_WR)
        self.assertTrue(c.eof())
        c.close()

    def test_bad_herald_frame_is_err1_1002(self):
        c = self.open()
        c.send(frame(2, b"\xc1"))
        self.expect_close(c, 1002, err=1)

    def test_message_over_max_frame(self):
        # max-payload 1000: max_frame = 1000 + 4096
        c = self.open()
        c.send(binary([2, "a.b", b"x" * 6000]))
        self.expect_close(c, 1009, err=2)

    def test_fragmented_message_over_max_frame(self):
        c = self.open()
        part = b"\x00" * 2000
        c.send(frame(2, part, fin=False) + frame(0, part, fin=False) + frame(0, part, fin=False))
        self.expect_close(c, 1009, err=2)

    def test_payload_over_max_payload(self):
        c = self.open()
        c.send(binary([2, "a.b", b"x" * 2000]))  # within max_frame, over max_payload
        self.expect_close(c, 1009, err=2)

    def test_ping_pong(self):
        c = self.open()
        c.send(frame(9, b"are you there"))
        fin, op, p = c.read_frame()
        self.assertEqual((op, p), (10, b"are you there"))
        c.send(frame(10, b"unsolicited"))  # ignored
        c.send(binary([5, 42]))
        self.assertEqual(c.read_msg(), [6, 42])
        c.close()

    def test_fragments_with_interleaved_control_frames(self):
        c = self.open(hello=False)
        body = msgpack.packb([1, {"v": 1, "name": "fragmented"}])
        c.send(frame(2, body[:3], fin=False))
        c.send(frame(9, b"1"))
        c.send(frame(0, body[3:7], fin=False) + frame(10, b"x") + frame(9, b"2"))
        c.send(frame(0, body[7:], fin=True))
        self.assertEqual(c.read_frame()[1:], (10, b"1"))
        self.assertEqual(c.read_frame()[1:], (10, b"2"))
        self.assertEqual(c.read_msg()[0], 16)
        c.close()

    def test_large_fragmented_message(self):
        c = self.open()
        c.send(binary([3, 7, "big.one"]))
        body = msgpack.packb([2, "big.one", os.urandom(999)])
        pieces = [body[i:i + 100] for i in range(0, len(body), 100)]
        data = b"".join(frame(2 if i == 0 else 0, p, fin=i == len(pieces) - 1)
                        for i, p in enumerate(pieces))
        c.send(data)
        m = c.read_msg()
        self.assertEqual(m[:4], [17, 7, "big.one", 1])
        self.assertEqual(len(m[4]), 999)
        c.close()

    def test_frames_in_the_same_read_as_the_handshake(self):
        c = Conn(self.broker.ws)
        c.send(request() + binary([1, {"v": 1}]) + binary([5, 9]))
        self.assertEqual(c.http_response()[0], 101)
        self.assertEqual(c.read_msg()[0], 16)
        self.assertEqual(c.read_msg(), [6, 9])
        c.close()

    def test_every_split_point(self):
        data = request() + binary([1, {"v": 1}]) + frame(9, b"p") + binary([5, 3])
        for step in (1, 7, 13):
            c = Conn(self.broker.ws)
            for i in range(0, len(data), step):
                c.send(data[i:i + step])
                if step == 1 and i % 50 == 0:
                    time.sleep(0.001)
            self.assertEqual(c.http_response()[0], 101)
            self.assertEqual(c.read_msg()[0], 16)
            self.assertEqual(c.read_frame()[1:], (10, b"p"))
            self.assertEqual(c.read_msg(), [6, 3])
            c.close()

    def test_idle_connection_state_survives(self):
        # An idle connection gives its wslay context back after a second; one in the middle of
        # a frame or of a fragmented message must keep it.
        c = self.open()
        time.sleep(1.3)
        c.send(frame(9, b"after idle") + binary([5, 1]))
        self.assertEqual(c.read_frame()[1:], (10, b"after idle"))
        self.assertEqual(c.read_msg(), [6, 1])
        data = binary([5, 2])
        c.send(data[:5])  # half a frame
        time.sleep(1.3)
        c.send(data[5:])
        self.assertEqual(c.read_msg(), [6, 2])
        body = msgpack.packb([5, 3])
        c.send(frame(2, body[:1], fin=False))  # half a message
        time.sleep(1.3)
        c.send(frame(0, body[1:]))
        self.assertEqual(c.read_msg(), [6, 3])
        c.close()

    # -- handshake -------------------------------------------------------------------

    def test_accept_and_subprotocol(self):
        c = Conn(self.broker.ws)
        c.send(request(extra=["Sec-WebSocket-Protocol: chat, herald.v1",
                              "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]))
        st, h, _ = c.http_response()
        self.assertEqual(st, 101)
        want = base64.b64encode(hashlib.sha1(KEY.encode() + GUID).digest()).decode()
        self.assertEqual(want, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertEqual(h["sec-websocket-accept"], want)
        self.assertEqual(h["sec-websocket-protocol"], "herald.v1")
        self.assertNotIn("sec-websocket-extensions", h)  # permessage-deflate declined
        c.close()

    def test_no_subprotocol_offered(self):
        c = Conn(self.broker.ws)
        c.send(request())
        st, h, _ = c.http_response()
        self.assertEqual(st, 101)
        self.assertNotIn("sec-websocket-protocol", h)
        c.close()

    def test_handshake_without_key(self):
        self.expect_status(request(key=None), 400)

    def test_handshake_bad_key(self):
        self.expect_status(request(key="short=="), 400)

    def test_handshake_wrong_version(self):
        self.expect_status(request(version="8"), 426, ("Sec-WebSocket-Version", "13"))

    def test_handshake_no_version(self):
        self.expect_status(request(version=None), 426)

    def test_plain_get_on_ws_path(self):
        self.expect_status(request(upgrade=False, key=None, version=None), 426)

    def test_post(self):
        self.expect_status(request(method="POST"), 405, ("Allow", "GET"))

    def test_unknown_path(self):
        self.expect_status(request(path="/chat"), 404)

    def test_malformed_request(self):
        self.expect_status(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", 400)

    def test_origin_refused(self):
        self.expect_status(request(extra=["Origin: http://evil.example"]), 403)

    def test_origin_allowed(self):
        c = self.open(extra=["Origin: http://good.example"])
        c.close()

    def test_two_origins_refused(self):
        # Two Origin headers: neither is trusted, even when both are allowed.
        _, body = self.expect_status(
            request(extra=["Origin: http://good.example", "Origin: http://good.example"]), 400)
        self.assertIn(b"more than one Origin", body)
        _, body = self.expect_status(
            request(extra=["Origin: http://evil.example", "origin: http://good.example"]), 400)
        self.assertIn(b"more than one Origin", body)

    def test_length_prefixed_frame_on_ws_port(self):
        hello = msgpack.packb([1, {"v": 1}])
        _, body = self.expect_status(struct.pack(">I", len(hello)) + hello, 400)
        self.assertIn(b"this is Herald's WebSocket/HTTP port", body)
        self.assertIn(b"TCP protocol is on port %d" % self.broker.tcp, body)

    def test_unsupported_subprotocol(self):
        self.expect_status(request(extra=["Sec-WebSocket-Protocol: mqtt"]), 400)

    def test_header_too_large(self):
        self.expect_status(request(extra=["X-Pad: " + "a" * 3000]), 431)

    def test_header_too_large_without_end(self):
        c = Conn(self.broker.ws)
        c.send(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 4000)
        self.assertEqual(c.http_response()[0], 431)
        self.assertTrue(c.eof())
        c.close()

    def test_slow_handshake(self):
        c = Conn(self.broker.ws)
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        st, _, _ = c.http_response()
        self.assertEqual(st, 408)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertTrue(c.eof())
        c.close()

    def test_healthz_and_metrics(self):
        _, body = self.expect_status(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200)
        self.assertEqual(body, b"ok\n")
        h, body = self.expect_status(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
        text = body.decode()
        for name in ('herald_connections{transport="ws"}', 'herald_connections{transport="tcp"}',
                     "herald_subscriptions ", "herald_topics ", "herald_messages_in_total ",
                     "herald_bytes_in_total ", "herald_bytes_out_total ", "herald_deliveries_total ",
                     "herald_slow_consumers_total ", 'herald_errors_total{code="1"',
                     "herald_output_queue_bytes ", "herald_history_bytes ",
                     'herald_http_responses_total{status="101"}'):
            self.assertIn(name, text)
        for line in text.splitlines():
            if not line.startswith("#"):
                float(line.rsplit(" ", 1)[1])  # every sample is a number
        types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
        self.assertEqual(len(types), len(set(types)), "a metric family is declared twice")
        samples = [ln.rsplit(" ", 1)[0] for ln in text.splitlines() if not ln.startswith("#")]
        self.assertEqual(len(samples), len(set(samples)), "a sample appears twice")
        ws = [ln for ln in text.splitlines() if ln.startswith('herald_connections{transport="ws"}')]
        self.assertGreaterEqual(int(ws[0].split()[1]), 1)  # the witness (not this request)


def scrape(port):
    """/metrics as {sample: value}."""
    c = Conn(port)
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = c.http_response()
    assert status == 200, status
    c.close()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
            for ln in body.decode().splitlines() if ln and not ln.startswith("#")}


class WsMetrics(unittest.TestCase):
    """What scrapes themselves count as, and the process metrics."""

    def test_scrapes_are_http_requests(self):
        b = Broker("--log-level", "debug")
        try:
            m1 = scrape(b.ws)
            time.sleep(0.1)
            m2 = scrape(b.ws)
            # A scrape is an HTTP request, not a WebSocket connection, and its bytes are its own.
            self.assertEqual(m2['herald_connections{transport="ws"}'], 0)
            self.assertEqual(m2['herald_connections_total{transport="ws"}'], 0)
            self.assertEqual(m2["herald_bytes_in_total"], 0)
            self.assertEqual(m2["herald_bytes_out_total"], 0)
            self.assertEqual(m2["herald_http_requests_total"], m1["herald_http_requests_total"] + 1)
            self.assertGreater(m2["herald_http_bytes_in_total"], m1["herald_http_bytes_in_total"])
            self.assertGreater(m2["herald_http_bytes_out_total"], 0)
            self.assertEqual(m2['herald_build_info{version="%s"}' % next(
                k.split('"')[1] for k in m2 if k.startswith("herald_build_info"))], 1)
            self.assertGreater(m2["herald_uptime_seconds"], m1["herald_uptime_seconds"])
            self.assertLess(abs(m2["process_start_time_seconds"] + m2["herald_uptime_seconds"] -
                                time.time()), 5)
            self.assertGreater(m2["process_resident_memory_bytes"], 1 << 20)
            self.assertGreater(m2["process_open_fds"], 3)
            # A WebSocket client counts once upgraded, and leaves the count when it goes.
            c = Conn(b.ws)
            c.send(request())
            self.assertEqual(c.http_response()[0], 101)
            m3 = scrape(b.ws)
            self.assertEqual(m3['herald_connections{transport="ws"}'], 1)
            self.assertEqual(m3["herald_http_requests_total"], m2["herald_http_requests_total"] + 2)
            c.close()
            time.sleep(0.2)
            self.assertEqual(scrape(b.ws)['herald_connections{transport="ws"}'], 0)
            # A scrape is logged as an HTTP request, never as an ERR.
            log = b.logtext()
            self.assertIn("HTTP GET /metrics", log)
            self.assertNotIn("ERR 0", log)
        finally:
            self.assertEqual(b.stop(), 0)


class WsTimers(unittest.TestCase):
    """Timeouts and shutdown, each with its own broker."""

    def test_message_before_hello_over_64k(self):
        # As on TCP: before HELLO a message may not declare more than 64 KiB (max_frame is 1 MiB).
        b = Broker()
        try:
            c = Conn(b.ws)
            c.send(request())
            self.assertEqual(c.http_response()[0], 101)
            c.send(frame(2, b"x" * 100, length=100000))  # the header declares 100000 bytes
            err = None
            while True:
                _, op, p = c.read_frame()
                if op == 2:
                    err = msgpack.unpackb(p, raw=False)
                elif op == 8:
                    self.assertEqual(struct.unpack(">H", p[:2])[0], 1009)
                    break
            self.assertEqual(err[:2], [19, 2])
            self.assertIn("before HELLO", err[2])
            c.close()
        finally:
            self.assertEqual(b.stop(), 0)

    def test_hello_timeout(self):
        b = Broker("--hello-timeout-ms", "200")
        try:
            c = Conn(b.ws)
            c.send(request())
            self.assertEqual(c.http_response()[0], 101)
            # WebSocket pings every 100 ms do not stand in for HELLO: ERR 1 and 1002 still come.
            t0, err, code = time.monotonic(), None, None
            while code is None and time.monotonic() - t0 < 5:
                c.send(frame(9, b"still here"))
                c.s.settimeout(0.1)
                try:
                    while code is None:
                        fin, op, p = c.read_frame()
                        if op == 2:
                            err = msgpack.unpackb(p)[:2]
                        elif op == 8:
                            code = struct.unpack(">H", p[:2])[0]
                except socket.timeout:
                    pass
            c.s.settimeout(5)
            self.assertEqual((err, code), ([19, 1], 1002))
            self.assertLess(time.monotonic() - t0, 3)
        finally:
            self.assertEqual(b.stop(), 0)

    def test_idle_heartbeat_timeout(self):
        b = Broker("--heartbeat-ms", "150")
        try:
            c = Conn(b.ws)
            c.send(request() + binary([1, {"v": 1}]))
            self.assertEqual(c.http_response()[0], 101)
            self.assertEqual(c.read_msg()[0], 16)
            pings = 0
            while True:
                fin, op, p = c.read_frame()
                m = msgpack.unpackb(p, raw=False) if op == 2 else None
                if m and m[0] == 5:
                    pings += 1
                    continue
                self.assertEqual(m[:2], [19, 11])
                break
            self.assertEqual(pings, 2)
            fin, op, p = c.read_frame()
            self.assertEqual((op, struct.unpack(">H", p[:2])[0]), (8, 1001))
            self.assertTrue(c.eof())
        finally:
            self.assertEqual(b.stop(), 0)

    def test_shutdown_sends_1001(self):
        b = Broker("--ws-handshake-ms", "5000")
        try:
            c = Conn(b.ws)
            c.send(request() + binary([1, {"v": 1}]))
            self.assertEqual(c.http_response()[0], 101)
            self.assertEqual(c.read_msg()[0], 16)
            half = Conn(b.ws)  # mid-handshake: gets a 503
            half.send(b"GET / HTTP/1.1\r\n")
            time.sleep(1.3)  # idle long enough to have given its wslay context back
            b.signal()
            WsRaw.expect_close(self, c, 1001, err=9)
            self.assertEqual(half.http_response()[0], 503)
            self.assertEqual(b.proc.wait(10), 0)
        finally:
            b.stop()

    def test_connection_limit_503(self):
        b = Broker("--max-connections", "1")
        try:
            c = Conn(b.ws)
            c.send(request())
            self.assertEqual(c.http_response()[0], 101)
            d = Conn(b.ws)
            d.send(request())
            self.assertEqual(d.http_response()[0], 503)
            self.assertTrue(d.eof())
            c.send(binary([1, {"v": 1}]))
            self.assertEqual(c.read_msg()[0], 16)  # the first one is unaffected
        finally:
            self.assertEqual(b.stop(), 0)


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    unittest.main(verbosity=2)
