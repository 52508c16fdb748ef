# SPDX-License-Identifier: MIT
# The broker's WebSocket transport driven by Python's `websockets` and `msgpack` (third-party
# clients), including TCP <-> WebSocket delivery with identical seq numbers.
import asyncio
import os
import re
import socket
import sys
import threading
import time
import urllib.request
import unittest
import warnings

import msgpack
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_proc import Broker, TcpClient  # noqa: E402
from test_ws_raw import Conn, binary, frame, request  # noqa: E402


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data):
    assert isinstance(data, bytes), f"expected a binary message, got {data!r}"
    return msgpack.unpackb(data, raw=False)


async def hello(ws, name="py", echo=True):
    await ws.send(pack([1, {"v": 1, "name": name, "echo": echo}]))
    w = unpack(await ws.recv())
    assert w[0] == 16, w
    return w[1]


async def sync(ws, pid=77, sink=None):
    """PING/PONG: every earlier frame has been processed. Frames seen meanwhile go to sink."""
    await ws.send(pack([5, pid]))
    while True:
        m = unpack(await ws.recv())
        if m[0] == 6 and m[1] == pid:
            return
        if sink is not None:
            sink.append(m)


def slow_consumers(broker):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.ws}/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(re.search(r"^herald_slow_consumers_total (\d+)$", text, re.M)[1])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class WsPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker()
        cls.url = f"ws://127.0.0.1:{cls.broker.ws}/"

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        assert rc == 0, f"herald exited with {rc}"

    def connect(self, **kw):
        return websockets.connect(self.url, subprotocols=["herald.v1"], max_size=None,
                                  compression=None if kw.pop("plain", True) else "deflate", **kw)

    def test_hello_sub_pub_ack(self):
        async def main():
            async with self.connect() as ws:
                self.assertEqual(ws.subprotocol, "herald.v1")
                w = await hello(ws)
                self.assertEqual(w["v"], 1)
                self.assertEqual(w["max_frame"], w["max_payload"] + 4096)
                await ws.send(pack([3, 1, "chat.*"]))
                await ws.send(pack([2, "chat.room1", b"hi", {"ack": 5}]))
                got = [unpack(await ws.recv()), unpack(await ws.recv())]
                self.assertIn([17, 1, "chat.room1", 1, b"hi"], got)
                self.assertIn([18, 5, 1], got)
        run(main())

    def test_offers_deflate_and_gets_plain(self):
        async def main():
            async with self.connect(plain=False) as ws:
                self.assertIsNone(ws.response_headers.get("Sec-WebSocket-Extensions"))
                await hello(ws)
                await ws.send(pack([3, 1, "z.z"]))
                await ws.send(pack([2, "z.z", b"x" * 5000]))
                m = unpack(await ws.recv())
                self.assertEqual(m[4], b"x" * 5000)
        run(main())

    def test_fragmented_send_and_ping(self):
        async def main():
            async with self.connect() as ws:
                await hello(ws)
                await ws.send(pack([3, 2, "frag.x"]))
                body = pack([2, "frag.x", os.urandom(200000)])
                parts = [body[i:i + 7000] for i in range(0, len(body), 7000)]
                await ws.send(parts)  # an iterable is sent as a fragmented message
                pong = await ws.ping(b"hello")
                await asyncio.wait_for(pong, 5)
                m = unpack(await ws.recv())
                self.assertEqual(m[:4], [17, 2, "frag.x", 1])
                self.assertEqual(pack([2, "frag.x", m[4]]), body)
        run(main())

    def test_close_handshake(self):
        async def main():
            ws = await self.connect()
            await hello(ws)
            await ws.close(1000, "done")
            self.assertEqual(ws.close_code, 1000)
        run(main())

    def test_text_is_1003(self):
        async def main():
            async with self.connect() as ws:
                await hello(ws)
                await ws.send('{"op": "hello"}')
                err = unpack(await ws.recv())
                self.assertEqual(err[:2], [19, 1])
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await ws.recv()
                self.assertEqual(cm.exception.rcvd.code, 1003)
        run(main())

    def test_payload_too_large_is_1009(self):
        async def main():
            async with self.connect() as ws:
                w = await hello(ws)
                await ws.send(pack([2, "big.x", b"x" * (w["max_frame"] + 1)]))
                err = unpack(await ws.recv())
                self.assertEqual(err[:2], [19, 2])
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await ws.recv()
                self.assertEqual(cm.exception.rcvd.code, 1009)
        run(main())

    def test_tcp_and_ws_see_identical_seqs(self):
        tcp = TcpClient(self.broker.tcp, "tcp-side")

        async def main():
            async with self.connect() as ws:
                await hello(ws)
                await ws.send(pack([3, 9, "mix.>"]))
                await sync(ws)
                tcp.send([3, 4, "mix.>"])
                tcp.sync()
                n = 200
                ws_got, tcp_got = [], []
                for i in range(n):  # each publish is processed before the next one is sent
                    if i % 2:
                        await ws.send(pack([2, "mix.a", b"ws%d" % i]))
                        await sync(ws, 1000 + i, ws_got)
                    else:
                        tcp.send([2, "mix.a", b"tcp%d" % i])
                        tcp.sync(1000 + i, tcp_got)
                while len(ws_got) < n:
                    ws_got.append(unpack(await ws.recv()))
                while len(tcp_got) < n:
                    tcp_got.append(tcp.recv())
                ws_seen = [(m[3], m[4]) for m in ws_got if m[0] == 17]
                tcp_seen = [(m[3], m[4]) for m in tcp_got if m[0] == 17]
                self.assertEqual(ws_seen, tcp_seen)
                self.assertEqual([s for s, _ in ws_seen], list(range(1, n + 1)))
                self.assertEqual([p for _, p in ws_seen],
                                 [(b"ws%d" if i % 2 else b"tcp%d") % i for i in range(n)])
        try:
            run(main())
        finally:
            tcp.close()

    def test_fan_out_to_many_ws_subscribers(self):
        async def main():
            subs = [await self.connect() for _ in range(25)]
            try:
                for i, ws in enumerate(subs):
                    await hello(ws, f"sub{i}")
                    await ws.send(pack([3, 1, "fan.out"]))
                    await sync(ws)
                pub = TcpClient(self.broker.tcp, "fan-pub")
                for i in range(100):
                    pub.send([2, "fan.out", b"m%03d" % i])
                pub.sync()
                for ws in subs:
                    got = [unpack(await ws.recv()) for _ in range(100)]
                    self.assertEqual([m[3] for m in got], list(range(1, 101)))
                    self.assertEqual(got[99][4], b"m099")
                pub.close()
            finally:
                for ws in subs:
                    await ws.close()
        run(main())

    def test_history_replay_over_ws(self):
        async def main():
            pub = TcpClient(self.broker.tcp, "hist-pub")
            for i in range(5):
                pub.send([2, "hist.t", b"h%d" % i])
            pub.sync()
            async with self.connect() as ws:
                await hello(ws)
                await ws.send(pack([3, 3, "hist.t", {"since": 2}]))
                got = [unpack(await ws.recv()) for _ in range(3)]
                self.assertEqual([m[3] for m in got], [3, 4, 5])
                self.assertTrue(all(m[5].get("replay") for m in got))
            pub.close()
        run(main())


class WsSlowConsumer(unittest.TestCase):
    def test_slow_ws_consumer_gets_err6_and_1008(self):
        # The soft limit (held for out-soft-ms) closes it from the sweep timer.
        b = Broker("--out-hard", "1G", "--out-soft", "64K", "--out-soft-ms", "300")
        try:
            c = Conn(b.ws)
            c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            c.send(request() + binary([1, {"v": 1}]) + binary([3, 1, "slow.x"]) + binary([5, 1]))
            self.assertEqual(c.http_response()[0], 101)
            self.assertEqual(c.read_msg()[0], 16)
            self.assertEqual(c.read_msg(), [6, 1])
            other = TcpClient(b.tcp, "bystander")
            other.send([3, 1, "slow.*"])
            other.sync()
            got = []
            reader = threading.Thread(target=lambda: got.extend(other.recv() for _ in range(400)))
            reader.start()
            pub = TcpClient(b.tcp, "pub")
            for i in range(400):
                pub.send([2, "slow.x", b"y" * 30000])
            pub.sync()
            reader.join(20)
            self.assertEqual([m[3] for m in got], list(range(1, 401)))  # the bystander got all
            # Over out-soft for out-soft-ms: the sweep closes it (wait for that before reading,
            # since reading would bring it back under the limit).
            deadline = time.monotonic() + 20
            while slow_consumers(b) < 1:
                self.assertLess(time.monotonic(), deadline, "no slow consumer was closed")
                time.sleep(0.1)
            err, code = None, None
            while code is None:
                fin, op, p = c.read_frame()
                if op == 2 and unpack(p)[0] == 19:
                    err = unpack(p)[1]
                elif op == 8:
                    code = int.from_bytes(p[:2], "big")
            self.assertEqual((err, code), (6, 1008))
            self.assertTrue(c.eof())
            pub.close()
            other.close()
        finally:
            self.assertEqual(b.stop(), 0)

    def test_hard_limit_during_fan_out(self):
        # Closing slow consumers in the middle of a fan-out must not disturb the walk over the
        # subscriptions (two of them, on an exact topic and a wildcard, are dropped mid-walk).
        b = Broker("--out-hard", "128K", "--out-soft", "64K")
        try:
            slow = []
            for pattern in ("hard.x", "hard.*"):
                c = Conn(b.ws)
                c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                c.send(request() + binary([1, {"v": 1}]) + binary([3, 1, pattern]) +
                       binary([5, 1]))
                self.assertEqual(c.http_response()[0], 101)
                self.assertEqual(c.read_msg()[0], 16)
                self.assertEqual(c.read_msg(), [6, 1])
                slow.append(c)
            pub = TcpClient(b.tcp, "pub")
            for i in range(300):
                pub.send([2, "hard.x", b"z" * 30000])
            pub.sync()
            late = TcpClient(b.tcp, "late")  # the broker still serves everyone else
            late.send([3, 1, "hard.>"])
            late.sync()
            pub.send([2, "hard.x", b"after"])
            self.assertEqual(late.recv()[:5], [17, 1, "hard.x", 301, b"after"])
            late.close()
            for c in slow:
                err = code = None
                while code is None:
                    fin, op, p = c.read_frame()
                    if op == 2 and unpack(p)[0] == 19:
                        err = unpack(p)[1]
                    elif op == 8:
                        code = int.from_bytes(p[:2], "big")
                self.assertEqual((err, code), (6, 1008))
            pub.close()
        finally:
            self.assertEqual(b.stop(), 0)

    def test_ping_flood_without_reading_is_paused(self):
        # Pongs for a client that never reads are bounded like any output: the broker stops
        # reading from it, so its pings back up in TCP instead of in the broker's memory.
        b = Broker("--out-soft", "64K")
        try:
            c = Conn(b.ws)
            c.send(request() + binary([1, {"v": 1}]))
            self.assertEqual(c.http_response()[0], 101)
            self.assertEqual(c.read_msg()[0], 16)
            c.s.settimeout(1)
            pings = frame(9) * 20000  # 120 KB of pings, 40 KB of pongs
            sent = 0
            try:
                while sent < 64 << 20:
                    c.s.sendall(pings)
                    sent += len(pings)
            except socket.timeout:
                pass
            self.assertLess(sent, 64 << 20, "the broker never pushed back")
            time.sleep(0.3)
            with urllib.request.urlopen(f"http://127.0.0.1:{b.ws}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            queued = int(re.search(r"^herald_output_queue_bytes (\d+)$", metrics, re.M)[1])
            self.assertLess(queued, 1 << 20)
            # Reading again lets it go on.
            c.s.settimeout(5)
            c.s.setblocking(True)
        finally:
            self.assertEqual(b.stop(), 0)


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    unittest.main(verbosity=2)
