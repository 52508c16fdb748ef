#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Admission and usage limits against the real broker: each refusal is a clear ERR and the
# refused client is the only one affected.
import os
import socket
import struct
import sys
import time
import unittest

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_test import (ACK, ERR, HELLO, MSG, PUB, SLOW, SUB, WELCOME, Broker, Client,  # noqa: E402
                         HttpRefused, WsClient, http_raw, metrics, pack)


def frame(*a):
    body = pack(*a)
    return struct.pack(">I", len(body)) + body


def errs(frames):
    return [(f[1], f[3] if len(f) > 3 else None) for f in frames if f[0] == ERR]


class Limits(unittest.TestCase):
    def start(self, *args):
        b = Broker(*args)
        self.addCleanup(b.stop)
        return b

    def connect(self, b, **kw):
        c = Client(b.tcp, **kw)
        self.addCleanup(c.close)
        self.assertEqual(c.next()[0], WELCOME)
        return c

    def refused_with(self, b, code, text, hello=True):
        c = Client(b.tcp, hello=hello)
        self.addCleanup(c.close)
        frames = c.closed()
        self.assertEqual([f[:2] for f in frames], [[ERR, code]], frames)
        self.assertIn(text, frames[0][2])

    def roundtrip(self, pub, sub, topic):
        pub.pub(topic, b"ping", ack=99)
        self.assertEqual(pub.expect(ACK)[1], 99)
        self.assertEqual(sub.expect(MSG)[2], topic)

    def test_conns_per_ip(self):
        b = self.start("--max-conns-per-ip", "3")
        a = self.connect(b)
        a.sub(1, "t")
        a.sync()
        others = [self.connect(b) for _ in range(2)]
        self.refused_with(b, 7, "per IP")
        self.roundtrip(others[0], a, "t")  # the existing clients are unaffected
        others[1].close()
        time.sleep(0.2 * SLOW)
        c = self.connect(b)  # a slot freed: accepted again
        self.roundtrip(c, a, "t")

    def test_pending_handshakes(self):
        b = self.start("--max-pending", "2", "--hello-timeout-ms", "1500")
        quiet = [Client(b.tcp, hello=False) for _ in range(2)]
        for q in quiet:
            self.addCleanup(q.close)
        time.sleep(0.2 * SLOW)
        self.refused_with(b, 7, "pending handshakes", hello=False)
        quiet[0].send(1, {"v": 1})
        self.assertEqual(quiet[0].next()[0], WELCOME)
        time.sleep(0.1 * SLOW)
        self.connect(b)  # the HELLO freed a slot
        # The silent one is closed by the HELLO timeout and frees its slot too.
        self.assertEqual([f[:2] for f in quiet[1].closed(timeout=5)], [[ERR, 1]])

    def test_pub_rate(self):
        b = self.start("--max-pub-rate", "20", "--max-pub-burst", "5")
        c = self.connect(b)
        for i in range(1, 16):
            c.pub("t.rate", b"x", ack=i)
        frames = c.sync()
        acked = [f[1] for f in frames if f[0] == ACK]
        limited = errs(frames)
        self.assertGreaterEqual(len(acked), 5)
        self.assertLessEqual(len(acked), 7)  # the burst, plus what refilled meanwhile
        self.assertEqual(len(acked) + len(limited), 15)
        self.assertTrue(all(code == 7 for code, _ in limited))
        time.sleep(0.5 * SLOW)  # refills ~10
        for i in range(100, 105):
            c.pub("t.rate", b"x", ack=i)
        self.assertEqual([f[1] for f in c.sync() if f[0] == ACK], list(range(100, 105)))

    def test_replay_rate(self):
        # A SUB with since on a wildcard walks every topic: limited per connection. Exact
        # topics (a single lookup) are not.
        b = self.start("--max-replay-rate", "2", "--max-replay-burst", "3")
        c = self.connect(b)
        c.pub("h.a", b"1", ack=1)
        c.sync()
        for sid in range(1, 7):
            c.sub(sid, "h.*", since=0)
        for sid in range(7, 17):
            c.sub(sid, "h.a", since=0)
        frames = c.sync()
        self.assertEqual(errs(frames), [(7, 4), (7, 5), (7, 6)])
        replayed = sorted(f[1] for f in frames if f[0] == MSG)
        self.assertEqual(replayed, [1, 2, 3] + list(range(7, 17)))
        c.sub(20, "h.*")  # without since: not limited
        self.assertEqual(errs(c.sync()), [])
        time.sleep(0.6 * SLOW)  # refills one
        c.sub(21, "h.>", since=0)
        self.assertEqual(errs(c.sync()), [])
        self.assertEqual(metrics(b)["herald_replay_rate_limited_total"], 3)

    def test_max_connections(self):
        b = self.start("--max-connections", "4")
        live = [self.connect(b) for _ in range(4)]
        live[0].sub(1, "t")
        live[0].sync()
        for _ in range(3):
            self.refused_with(b, 7, "connection limit")
        self.roundtrip(live[1], live[0], "t")

    def test_subs_topics_payload(self):
        b = self.start("--max-subs", "2", "--max-topics", "3", "--max-payload", "1K")
        c = self.connect(b)
        for sid in (1, 2, 3):
            c.sub(sid, "s.%d" % sid)
        self.assertEqual(errs(c.sync()), [(7, 3)])
        # max-topics: topics something subscribes to are kept, so past the
        # cap new topics are refused; topics without interest make room.
        w = self.connect(b)
        w.sub(1, "topic.*")
        w.sync()
        for i in range(5):
            c.pub("topic.%d" % i, b"x", ack=i)
        frames = c.sync()
        self.assertEqual([f[1] for f in frames if f[0] == ACK], [0, 1, 2])
        self.assertEqual(errs(frames), [(7, 3), (7, 4)])
        w.send(4, 1)  # UNSUB
        w.sync()
        c.pub("topic.3", b"x", ack=3)
        frames = c.sync()
        self.assertEqual([f[1] for f in frames if f[0] == ACK], [3])
        c.pub("topic.0", b"x" * 2048)
        self.assertEqual([f[:2] for f in c.closed()], [[ERR, 2]])

    def test_frame_length_alone_refused(self):
        b = self.start("--max-payload", "1K")
        s = socket.create_connection(("127.0.0.1", b.tcp))
        self.addCleanup(s.close)
        s.sendall(b"\x7f\xff\xff\xff")  # declares 2 GiB; nothing else needs to arrive
        c = Client.__new__(Client)
        c.s, c.buf, c.frames, c.welcome = s, b"", [], None
        self.assertEqual([f[:2] for f in c.closed()], [[ERR, 2]])

    def raw(self, b, source="127.0.0.1"):
        s = socket.create_connection(("127.0.0.1", b.tcp), source_address=(source, 0))
        self.addCleanup(s.close)
        c = Client.__new__(Client)
        c.s, c.buf, c.frames, c.welcome = s, b"", [], None
        return c

    def test_first_frame_over_64k_refused(self):
        b = self.start()
        c = self.raw(b)
        c.send_raw(struct.pack(">I", 1 << 20))  # 1 MiB is under max_frame, but not before HELLO
        frames = c.closed()
        self.assertEqual([f[:2] for f in frames], [[ERR, 2]])
        self.assertIn("before HELLO", frames[0][2])
        c = self.raw(b)  # up to 64 KiB is fine: a HELLO with padding in its options
        hello = msgpack.packb([1, {"v": 1, "name": "x" * 60000}])
        c.send_raw(struct.pack(">I", len(hello)) + hello)
        self.assertEqual(c.next()[0], WELCOME)

    def test_declared_length_reserves_nothing(self):
        # Connections that send a length prefix and a few bytes, before and after HELLO, cost
        # what they sent: the broker grows a frame's buffer with the bytes that arrive.
        b = self.start()
        n = 300
        base, base_rss = b.vm_kb(), b.rss_kb()
        conns = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", b.tcp))
            self.addCleanup(s.close)
            if i % 2:
                s.sendall(struct.pack(">I", 60000) + b"\x91")  # before HELLO: at most 64 KiB
            else:
                hello = msgpack.packb([1, {"v": 1}])
                s.sendall(struct.pack(">I", len(hello)) + hello +
                          struct.pack(">I", 1 << 20) + b"\x93\x02")  # a PUB of 1 MiB declared
            conns.append(s)
        time.sleep(0.5 * SLOW)
        m = metrics(b)
        self.assertEqual(m['herald_connections{transport="tcp"}'], n)
        grown = b.vm_kb() - base
        # Reserving the declared sizes would be about 2 MiB (VmSize) each for the PUBs.
        self.assertLess(grown, n * 32, "VmSize grew %d KiB for %d connections" % (grown, n))
        self.assertLess(b.rss_kb() - base_rss, n * 32)

    def test_http_request_on_tcp_port(self):
        b = self.start()
        for method in (b"GET", b"POST", b"HEAD", b"OPTIONS"):
            status, body = http_raw(b.tcp, method + b" /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status, 400)
            self.assertEqual(body, "this is Herald's TCP port; WebSocket and HTTP are on port %d\n"
                             % b.ws)
        c = self.connect(b)  # the port still serves Herald clients
        c.sync()

    def scan_topics(self, b, n):
        p = self.connect(b)
        p.send_raw(b"".join(frame(PUB, "st.%d" % i, b"x") for i in range(n)))
        p.sync()
        return p

    def wildcard_since(self, b, source="127.0.0.1"):
        """A fresh connection's two wildcard SUBs with since over the scan_topics() topics; how
        many ran out of budget."""
        c = self.raw(b, source)
        c.send(HELLO, {"v": 1})
        self.assertEqual(c.next()[0], WELCOME)
        # The topic tree makes a replay cost the topics its pattern reaches: all 400 here.
        c.send_raw(frame(SUB, 1, "st.*", {"since": 0}) +
                   frame(SUB, 2, "st.*", {"since": 0}))
        refused = [f for f in c.sync() if f[0] == ERR]
        c.close()
        for f in refused:
            self.assertEqual(f[1], 10, f)
            self.assertIn("budget exhausted", f[2])
        return len(refused)

    def test_replay_scan_budget_per_address(self):
        # 400 topics, 1000 topics a second per address: reconnecting does not renew the budget.
        b = self.start("--replay-scan-rate", "1000", "--replay-scan-global", "0")
        self.scan_topics(b, 400)
        t0 = time.monotonic()
        refused = sum(self.wildcard_since(b) for _ in range(10))
        elapsed = time.monotonic() - t0
        ran = 20 - refused
        self.assertLessEqual(ran, 2 + 1 + int(elapsed * 1000 / 400), "%d scans ran" % ran)
        self.assertGreaterEqual(refused, 10)
        # Another address has a budget of its own.
        self.assertEqual(self.wildcard_since(b, "127.0.0.2"), 0)
        m = metrics(b)
        self.assertEqual(m["herald_replay_scan_refused_total"], refused)
        self.assertEqual(m['herald_errors_total{code="10",name="history_gap"}'], refused)
        self.assertGreaterEqual(m["herald_replay_scan_topics_total"], (ran + 2) * 400)

    def test_replay_scan_budget_global(self):
        b = self.start("--replay-scan-rate", "1000", "--replay-scan-global", "1000")
        self.scan_topics(b, 400)
        self.assertEqual(self.wildcard_since(b), 0)  # the worker's 1000 are spent
        self.assertEqual(self.wildcard_since(b, "127.0.0.2"), 2)  # so none for another address
        time.sleep(1.1)  # refilled: scans run again
        self.assertEqual(self.wildcard_since(b, "127.0.0.2"), 0)

    def test_websocket_refusals_are_http_503_and_counted(self):
        b = self.start("--max-conns-per-ip", "2", "--max-pub-rate", "1", "--max-pub-burst", "1")
        w = WsClient(b.ws)
        self.addCleanup(w.close)
        self.assertEqual(w.next()[0], WELCOME)
        t = self.connect(b)  # TCP and WebSocket count against the same address
        with self.assertRaises(HttpRefused) as cm:
            WsClient(b.ws)
        self.assertEqual(cm.exception.status, 503)
        self.refused_with(b, 7, "per IP")
        for i in range(3):
            w.pub("r", b"x", ack=i)
        self.assertEqual([f[1] for f in w.sync() if f[0] == ERR], [7, 7])
        t.close()
        time.sleep(0.2 * SLOW)
        m = metrics(b)  # the scrape itself is a connection: one slot was freed for it
        self.assertEqual(m["herald_connections_refused_per_ip_total"], 2)
        self.assertEqual(m["herald_publish_rate_limited_total"], 2)
        self.assertEqual(m['herald_errors_total{code="7",name="limit"}'], 4)  # 2 conns, 2 PUBs

    def test_pending_handshakes_websocket(self):
        b = self.start("--max-pending", "1", "--ws-handshake-ms", "1000")
        idle = socket.create_connection(("127.0.0.1", b.ws))  # never sends its request
        self.addCleanup(idle.close)
        time.sleep(0.2 * SLOW)
        with self.assertRaises(HttpRefused) as cm:
            WsClient(b.ws)
        self.assertEqual(cm.exception.status, 503)
        # The handshake timeout answers the idle one 408; once it is gone the slot is free.
        idle.settimeout(5 * SLOW)
        self.assertTrue(idle.recv(4096).startswith(b"HTTP/1.1 408 "))
        idle.close()
        time.sleep(0.2 * SLOW)
        w = WsClient(b.ws)
        self.addCleanup(w.close)
        self.assertEqual(w.next()[0], WELCOME)
        self.assertEqual(metrics(b)["herald_handshakes_refused_total"], 1)


if __name__ == "__main__":
    unittest.main()
