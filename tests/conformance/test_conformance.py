#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Black-box conformance suite: drives the real herald broker over raw TCP per docs/protocol.md.
"""Every case of docs/protocol.md, over raw sockets, against $HERALD_BIN.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/conformance/test_conformance.py -v
      (one class or test: append TestReplay or TestReplay.test_since_replays_then_live)
Environment: HERALD_TEST_SLOW=2 doubles every wait (sanitizer builds; CMake sets it);
HERALD_EXTRA_ARGS="--flag value" is added to every broker the suite starts.
Only python3-msgpack and the standard library are used; see herald_wire.py.
"""

import base64
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_wire import (  # noqa: E402
    ACK, E_AUTH, E_GAP, E_HEARTBEAT, E_LIMIT, E_PERM, E_PROTO, E_SHUTDOWN, E_SID, E_SLOW,
    E_TOOBIG, E_TOPIC, ERR, HELLO, MSG, PING, PONG, PUB, SUB, TIMEOUT, UNSUB, WELCOME, Broker,
    Closed, Conn, MiB, Timeout, WsConn, describe, frame, http_get, lp, msg_opts, pack)

BROKER = None  # the shared broker with default settings


def _workers():
    m = re.search(r"--workers[ =](\d+)", os.environ.get("HERALD_EXTRA_ARGS", ""))
    return int(m.group(1)) if m else 1


# In a cluster these limits are counted by each worker (docs/architecture.md says so), so a
# test that fills one to its edge from a few connections would spread over several workers.
per_worker_limit = unittest.skipIf(_workers() > 1, "counted per worker in a cluster")


def setUpModule():
    global BROKER
    BROKER = Broker()


def tearDownModule():
    global BROKER
    if BROKER is not None:
        rc = BROKER.stop()
        log = BROKER.log_text()
        BROKER.cleanup()
        BROKER = None
        if rc != 0:
            raise AssertionError("shared broker exited with %s; log tail:\n%s" % (rc, log))


class Case(unittest.TestCase):
    """Connections opened through self.connect() are closed after the test; the broker must
    still be alive after every test."""

    broker = None  # subclasses with their own broker set this in setUpClass

    def setUp(self):
        self.conns = []
        self.t0 = time.monotonic()

    def tearDown(self):
        for c in self.conns:
            c.close()
        b = self.b
        self.assertTrue(b.alive(), "broker died during the test; log tail:\n" + b.log_text())

    @property
    def b(self):
        return self.broker or BROKER

    def connect(self, hello=True, **kw):
        c = self.b.connect(hello=False, **{k: v for k, v in kw.items() if k != "hello_opts"})
        self.conns.append(c)
        if hello:
            c.hello(**kw.get("hello_opts", {}))
        return c

    def topic(self, prefix="t"):
        """A fresh topic name, so tests on the shared broker never see each other's seqs."""
        Case._n = getattr(Case, "_n", 0) + 1
        return "%s.%s.%d.%d" % (prefix, self._testMethodName[:40], os.getpid(), Case._n)

    def wait_for_free_slots(self):
        """For tests of connection limits: waits until the broker has seen this test's
        connections go (a probe is welcomed again), then lets the probe go too."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            probe = Conn(self.b.port)
            try:
                probe.hello()
                break
            except (Closed, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                probe.close()
        time.sleep(0.1)

    # ---- assertions -------------------------------------------------------

    def assertErrClose(self, c, code, ref=None):
        """The next frame is ERR `code`, then the connection is closed with nothing after it."""
        try:
            f = c.recv()
        except Closed:
            self.fail("connection closed without ERR %d first" % code)
        self.assertEqual(f[0], ERR, "expected ERR %d, got %s" % (code, describe(f)))
        self.assertEqual(f[1], code, "expected ERR %d, got %s" % (code, describe(f)))
        self.assertIsInstance(f[2], str)
        if ref is not None:
            self.assertEqual(f[3] if len(f) > 3 else None, ref, describe(f))
        try:
            rest = c.wait_closed()
        except Timeout:
            self.fail("connection still open %.0fs after ERR %d" % (TIMEOUT, code))
        self.assertEqual(rest, [], "frames after a closing ERR")
        return f

    def assertErrOpen(self, c, code, ref=None, others=None):
        """Exactly one ERR `code` arrives before a PING/PONG barrier: the connection stayed open."""
        try:
            frames = c.sync()
        except Closed:
            self.fail("connection closed; expected ERR %d and the connection to stay open" % code)
        errs = [f for f in frames if f[0] == ERR]
        self.assertEqual(len(errs), 1,
                         "expected one ERR %d, got %s" % (code, [describe(f) for f in frames]))
        f = errs[0]
        self.assertEqual(f[1], code, describe(f))
        self.assertIsInstance(f[2], str)
        if ref is not None:
            self.assertEqual(f[3] if len(f) > 3 else None, ref, "ref of %s" % describe(f))
        if others is not None:
            others.extend(x for x in frames if x[0] != ERR)
        return f

    def assertQuiet(self, c):
        """Nothing but the PONG comes back: no error, no message."""
        frames = c.sync()
        self.assertEqual(frames, [], [describe(f) for f in frames])

    def collect(self, c, n, op=MSG, timeout=None):
        """Reads until `n` frames of kind `op` arrived; fails on anything else."""
        out = []
        deadline = time.monotonic() + (timeout or TIMEOUT * 2)
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("got %d of %d %s frames" % (len(out), n, op))
            f = c.recv(left)
            self.assertEqual(f[0], op, "unexpected %s" % describe(f))
            out.append(f)
        return out

    def pub_acked(self, c, topic, payload=b"", **opts):
        """Publishes with an ack and returns the seq (skips MSGs that arrive meanwhile)."""
        aid = next(Conn._ids)
        c.pub(topic, payload, ack=aid, **opts)
        deadline = time.monotonic() + TIMEOUT
        others = []
        while True:
            f = c.recv(max(0.001, deadline - time.monotonic()))
            if f[0] == ACK and f[1] == aid:
                c.unread(others)
                return f[2]
            if f[0] == ERR:
                self.fail("PUB %s: %s" % (topic, describe(f)))
            others.append(f)


# ==========================================================================================
class TestHandshake(Case):
    def test_welcome_fields(self):
        c = self.connect(hello=False)
        w = c.hello(name="conformance")
        for key in ("v", "server", "client_id", "worker", "max_payload", "max_frame",
                    "heartbeat_ms"):
            self.assertIn(key, w)
        self.assertEqual(w["v"], 1)
        self.assertIsInstance(w["server"], str)
        for key in ("client_id", "worker", "max_payload", "max_frame", "heartbeat_ms"):
            self.assertIsInstance(w[key], int, key)
            self.assertGreaterEqual(w[key], 0, key)
        self.assertEqual(w["max_payload"], 1 * MiB, "default max_payload")
        self.assertEqual(w["max_frame"], w["max_payload"] + 4096, "default max_frame")
        self.assertGreater(w["heartbeat_ms"], 0)

    def test_client_ids_distinct(self):
        ids = {self.connect().welcome["client_id"] for _ in range(5)}
        self.assertEqual(len(ids), 5)

    def test_hello_all_options_and_unknown_keys(self):
        c = self.connect(hello=False)
        c.hello(name="n", echo=True, future_option={"x": [1, 2]}, another=None)
        self.assertQuiet(c)

    def test_hello_pipelined_with_sub_and_pub(self):
        c = self.connect(hello=False)
        t = self.topic()
        c.send_raw(frame([HELLO, {"v": 1}]) + frame([SUB, 1, t]) + frame([PUB, t, b"x"]) +
                   frame([PING, 7]))
        self.assertEqual(c.recv()[0], WELCOME)
        m = c.expect(MSG)
        self.assertEqual(m[1:5], [1, t, 1, b"x"])
        self.assertEqual(c.expect(PONG), [PONG, 7])

    def test_first_frame_must_be_hello(self):
        for first in ([PING, 1], [PUB, "a", b"x"], [SUB, 1, "a"], [UNSUB, 1], [PONG, 1]):
            with self.subTest(first=first):
                c = self.connect(hello=False)
                c.send(first)
                self.assertErrClose(c, E_PROTO)

    def test_second_hello(self):
        c = self.connect()
        c.send([HELLO, {"v": 1}])
        self.assertErrClose(c, E_PROTO)

    def test_version_other_than_1(self):
        for v in (0, 2, 1000):
            with self.subTest(v=v):
                c = self.connect(hello=False)
                c.send([HELLO, {"v": v}])
                self.assertErrClose(c, E_PROTO)

    def test_hello_malformed(self):
        bad = {
            "missing v": [HELLO, {"name": "x"}],
            "v as str": [HELLO, {"v": "1"}],
            "echo not bool": [HELLO, {"v": 1, "echo": 0}],
            "name not str": [HELLO, {"v": 1, "name": 5}],
            "token not str": [HELLO, {"v": 1, "token": b"bin"}],
            "map is a list": [HELLO, [1]],
            "map is a str": [HELLO, "v1"],
            "extra field": [HELLO, {"v": 1}, 1],
        }
        for why, f in bad.items():
            with self.subTest(why=why):
                c = self.connect(hello=False)
                c.send(f)
                self.assertErrClose(c, E_PROTO)

    def test_silent_close_before_hello(self):
        for _ in range(5):
            c = Conn(self.b.port)
            c.close()
        c = Conn(self.b.port)
        c.send_raw(b"\x00\x00")  # half a prefix, then gone
        c.close()
        self.connect().sync()


# ==========================================================================================
class TestMalformed(Case):
    """Every protocol error closes the connection with ERR 1 and leaves the others alone."""

    def check_bodies(self, bodies):
        bystander = self.connect()
        t = self.topic()
        bystander.sub(1, t)
        bystander.sync()
        for why, body in bodies.items():
            with self.subTest(why=why):
                c = self.connect()
                c.send_raw(lp(body))
                self.assertErrClose(c, E_PROTO)
        bystander.pub(t, b"still here")
        m = bystander.expect(MSG)
        self.assertEqual(m[4], b"still here")

    def test_not_a_single_array(self):
        self.check_bodies({
            "empty body": b"",
            "map": pack({"op": 5}),
            "integer": pack(5),
            "string": pack("PING"),
            "nil": pack(None),
            "empty array": pack([]),
            "truncated array": pack([PING, 1])[:-1],
            "array claims 4G elements": b"\xdd\xff\xff\xff\xff",
            "map claims 4G entries": b"\xdf\xff\xff\xff\xff",
            "str claims 4G bytes": b"\x93\x02\xdb\xff\xff\xff\xff",
            "bin claims 4G bytes": b"\x93\x02\xa1a\xc6\xff\xff\xff\xff",
            "opts map claims 4G entries": b"\x94\x02\xa1a\xc4\x00\xdf\xff\xff\xff\xff",
            "reserved byte 0xc1": b"\x92\x05\xc1",
            "trailing byte": pack([PING, 1]) + b"\x00",
            "trailing nil": pack([PING, 1]) + b"\xc0",
            "two arrays": pack([PING, 1]) + pack([PING, 2]),
        })

    def test_unknown_or_bad_opcode(self):
        self.check_bodies({
            "op 0": pack([0, 1]),
            "op 7": pack([7, 1]),
            "op 15": pack([15]),
            "op 99": pack([99, 1]),
            "op 2^32": pack([1 << 32, 1]),
            "server op WELCOME": pack([WELCOME, {"v": 1}]),
            "server op MSG": pack([MSG, 1, "a", 1, b""]),
            "server op ACK": pack([ACK, 1, 1]),
            "server op ERR": pack([ERR, 1, "x"]),
            "server op GAP": pack([20, 1, "a", 1, 2]),
            "op as str": pack(["PING", 1]),
            "op negative": pack([-5, 1]),
            "op float": pack([5.0, 1]),
            "op bool": pack([True, 1]),
            "op nil": pack([None, 1]),
        })

    def test_missing_fields(self):
        self.check_bodies({
            "PUB no payload": pack([PUB, "a"]),
            "PUB nothing": pack([PUB]),
            "SUB no pattern": pack([SUB, 1]),
            "SUB nothing": pack([SUB]),
            "UNSUB no sid": pack([UNSUB]),
            "PING no id": pack([PING]),
            "PONG no id": pack([PONG]),
        })

    def test_extra_fields(self):
        self.check_bodies({
            "PUB 5 fields": pack([PUB, "a", b"x", {}, 1]),
            "PUB nil opts plus one": pack([PUB, "a", b"x", None, None]),
            "SUB 5 fields": pack([SUB, 1, "a", {}, 1]),
            "UNSUB 3 fields": pack([UNSUB, 1, 2]),
            "PING 3 fields": pack([PING, 1, 2]),
            "PONG 3 fields": pack([PONG, 1, None]),
        })

    def test_wrong_types(self):
        self.check_bodies({
            "PUB topic int": pack([PUB, 1, b"x"]),
            "PUB topic bin": pack([PUB, b"a", b"x"]),
            "PUB topic nil": pack([PUB, None, b"x"]),
            "PUB payload str": pack([PUB, "a", "x"]),
            "PUB payload int": pack([PUB, "a", 1]),
            "PUB payload nil": pack([PUB, "a", None]),
            "PUB opts list": pack([PUB, "a", b"x", []]),
            "PUB opts str": pack([PUB, "a", b"x", "ack"]),
            "PUB ack str": pack([PUB, "a", b"x", {"ack": "1"}]),
            "PUB ack negative": pack([PUB, "a", b"x", {"ack": -1}]),
            "PUB ack float": pack([PUB, "a", b"x", {"ack": 1.5}]),
            "PUB ack bool": pack([PUB, "a", b"x", {"ack": True}]),
            "PUB reply int": pack([PUB, "a", b"x", {"reply": 1}]),
            "PUB reply bin": pack([PUB, "a", b"x", {"reply": b"r"}]),
            "PUB headers list": pack([PUB, "a", b"x", {"headers": ["k", "v"]}]),
            "PUB headers value int": pack([PUB, "a", b"x", {"headers": {"k": 1}}]),
            "PUB headers value bin": pack([PUB, "a", b"x", {"headers": {"k": b"v"}}]),
            "PUB headers value nil": pack([PUB, "a", b"x", {"headers": {"k": None}}]),
            "PUB headers key int": pack([PUB, "a", b"x", {"headers": {1: "v"}}]),
            "SUB sid str": pack([SUB, "1", "a"]),
            "SUB sid negative": pack([SUB, -1, "a"]),
            "SUB sid float": pack([SUB, 1.0, "a"]),
            "SUB sid nil": pack([SUB, None, "a"]),
            "SUB pattern bin": pack([SUB, 1, b"a"]),
            "SUB pattern int": pack([SUB, 1, 1]),
            "SUB opts list": pack([SUB, 1, "a", [1]]),
            "SUB queue int": pack([SUB, 1, "a", {"queue": 1}]),
            "SUB queue bin": pack([SUB, 1, "a", {"queue": b"q"}]),
            "SUB since str": pack([SUB, 1, "a", {"since": "0"}]),
            "SUB since negative": pack([SUB, 1, "a", {"since": -1}]),
            "UNSUB sid str": pack([UNSUB, "1"]),
            "UNSUB sid negative": pack([UNSUB, -2]),
            "PING id str": pack([PING, "1"]),
            "PING id negative": pack([PING, -1]),
            "PING id bool": pack([PING, True]),
            "PING id float": pack([PING, 1.0]),
            "PONG id nil": pack([PONG, None]),
        })

    def test_garbage_closes_only_the_offender(self):
        # A fast subscriber, a publisher and several garbage-spewing connections at once.
        t = self.topic()
        sub = self.connect()
        sub.sub(1, t)
        sub.sync()
        pub = self.connect()
        garbage = [  # (bytes, the ERR code that must close the connection, or None)
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", E_TOOBIG),   # a prefix of ~1.2 GB
            (lp(bytes(range(256))), E_PROTO),                    # not an array
            (lp(b"\x95\x11\x01\xa1a\x01"), E_PROTO),             # half a MSG
            (b"\x00\x00\x00\x05\x92\x05", None),                  # incomplete frame
        ]
        rnd = random.Random(1234)
        for _ in range(40):
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
            garbage.append((lp(body), E_PROTO))
        n = 0
        for g, code in garbage:
            with self.subTest(garbage=g[:16]):
                c = self.connect()
                c.try_send_raw(g)
                seq = self.pub_acked(pub, t, b"%d" % n)
                n += 1
                self.assertEqual(seq, n)
                if code is None:
                    self.assertEqual(c.poll(0.2), [])
                else:
                    self.assertErrClose(c, code)
                c.close()
        got = self.collect(sub, n)
        self.assertEqual([m[3] for m in got], list(range(1, n + 1)))
        self.assertEqual([m[4] for m in got], [b"%d" % i for i in range(n)])

    def test_mutated_frames(self):
        # Valid frames with random bytes changed, inserted or cut (the length prefix kept
        # right): each either works, or gets a recoverable ERR, or gets ERR then close.
        rnd = random.Random(4321)
        base = self.topic("mut")
        seeds = [pack(f) for f in (
            [PUB, base + ".a", b"payload", {"ack": 1, "reply": "_INBOX.x", "headers": {"k": "v"}}],
            [SUB, 7, base + ".*", {"queue": "q", "since": 3}],
            [UNSUB, 7], [PING, 300], [PONG, 2], [PUB, base + ".b", b"x" * 40])]
        outcomes = {"ok": 0, "err-open": 0, "closed": 0}
        for i in range(300):
            body = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randrange(1, 4)):
                k = rnd.randrange(len(body))
                what = rnd.randrange(3)
                if what == 0:
                    body[k] = rnd.randrange(256)
                elif what == 1:
                    body.insert(k, rnd.randrange(256))
                elif len(body) > 1:
                    del body[k]
            c = self.connect()
            c.send_raw(lp(bytes(body)) + frame([PING, 424242]))
            frames = []
            try:
                while True:
                    f = c.recv()
                    if f == [PONG, 424242]:
                        break
                    frames.append(f)
            except Closed:
                self.assertTrue(frames and frames[-1][0] == ERR,
                                "closed without ERR after %r: %s" % (bytes(body), frames))
                outcomes["closed"] += 1
            else:
                errs = [f for f in frames if f[0] == ERR]
                for f in errs:
                    self.assertIn(f[1], (E_PERM, E_TOPIC, E_SID, E_GAP, 7), describe(f))
                outcomes["err-open" if errs else "ok"] += 1
            c.close()
        self.assertGreater(outcomes["closed"], 0, outcomes)

    def test_error_after_valid_frames_in_same_read(self):
        c = self.connect()
        t = self.topic()
        c.send_raw(frame([SUB, 1, t]) + frame([PUB, t, b"a"]) + frame([PING, 3]) +
                   lp(b"\xc1") + frame([PUB, t, b"never"]))
        m = c.expect(MSG)
        self.assertEqual(m[4], b"a")
        self.assertEqual(c.expect(PONG), [PONG, 3])
        self.assertErrClose(c, E_PROTO)


# ==========================================================================================
class TestOptions(Case):
    def test_opts_omitted_nil_empty_unknown(self):
        c = self.connect()
        t = self.topic()
        c.send([SUB, 1, t, None])
        c.send([SUB, 2, t, {}])
        c.send([SUB, 3, t, {"unknown": 1, "nested": {"a": [1, 2, None]}}])
        c.send([SUB, 4, t])
        self.assertQuiet(c)
        for opts in (None, {}, {"x-future": True}, "omit"):
            f = [PUB, t, b"p"] if opts == "omit" else [PUB, t, b"p", opts]
            c.send(f)
        msgs = c.sync()
        self.assertEqual(len(msgs), 16, [describe(f) for f in msgs])
        for m in msgs:
            self.assertEqual(m[0], MSG)
        self.assertEqual(sorted(m[1] for m in msgs), [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4)

    def test_non_minimal_encodings_accepted(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        c.sync()
        bodies = [
            b"\x92\x05\xd0\x05",                                   # PING id as int8
            b"\x92\x05\xcf" + (5).to_bytes(8, "big"),              # PING id as uint64
            b"\x92\xcc\x05\x05",                                   # opcode as uint8
            b"\xdc\x00\x02\x05\x05",                               # body as array16
            b"\x93\x02\xd9" + bytes([len(t)]) + t.encode() + b"\xc4\x01x",  # topic as str8
            b"\x94\x02" + pack(t) + b"\xc6\x00\x00\x00\x01y\xde\x00\x00",  # bin32, map16
        ]
        c.send_raw(b"".join(lp(b) for b in bodies))
        frames = c.sync()
        self.assertEqual([describe(f) for f in frames if f[0] == ERR], [])
        self.assertEqual([f[1] for f in frames if f[0] == PONG], [5, 5, 5, 5])
        self.assertEqual([f[4] for f in frames if f[0] == MSG], [b"x", b"y"])

    def test_integer_widths_accepted(self):
        # sids, ids and seq-like fields may use any msgpack unsigned width.
        c = self.connect()
        t = self.topic()
        big = (1 << 64) - 1
        c.send([SUB, big, t])
        c.send([SUB, 300, t])
        c.send([PING, big])
        self.assertEqual(c.expect(PONG), [PONG, big])
        c.send([PING, 0])
        self.assertEqual(c.expect(PONG), [PONG, 0])
        c.pub(t, b"x", ack=1 << 40)
        frames = c.sync()
        acks = [f for f in frames if f[0] == ACK]
        self.assertEqual(acks, [[ACK, 1 << 40, 1]])
        self.assertEqual(sorted(f[1] for f in frames if f[0] == MSG), [300, big])
        c.unsub(big)
        self.assertQuiet(c)


# ==========================================================================================
class TestLimits(Case):
    def test_prefix_over_max_frame_refused_from_prefix_alone(self):
        c0 = self.connect()
        max_frame = c0.welcome["max_frame"]
        for n in (max_frame + 1, 0xFFFFFFFF, 0x80000000):
            with self.subTest(n=n):
                c = self.connect()
                c.send_raw(struct.pack(">I", n))  # the body never comes
                self.assertErrClose(c, E_TOOBIG)

    def test_prefix_over_max_frame_with_body_following(self):
        # The broker must not lose its ERR frame to a reset caused by the unread body.
        c = self.connect()
        n = c.welcome["max_frame"] + 1
        c.try_send_raw(struct.pack(">I", n) + b"\x00" * (256 * 1024))
        self.assertErrClose(c, E_TOOBIG)

    def test_prefix_over_max_frame_before_hello(self):
        c = self.connect(hello=False)
        c.send_raw(struct.pack(">I", 0x7FFFFFFF))
        f = c.recv()
        self.assertEqual(f[0], ERR)
        self.assertIn(f[1], (E_TOOBIG, E_PROTO), describe(f))
        c.wait_closed()

    def test_payload_at_max_payload_delivered(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        payload = bytes(range(256)) * (c.welcome["max_payload"] // 256)
        self.assertEqual(len(payload), c.welcome["max_payload"])
        seq = self.pub_acked(c, t, payload)
        m = c.expect(MSG)
        self.assertEqual(m[3], seq)
        self.assertEqual(m[4], payload)

    def test_frame_of_exactly_max_frame_accepted(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        w = c.welcome
        payload = b"\x5a" * w["max_payload"]
        k = 0
        body = pack([PUB, t, payload, {"ack": 9, "headers": {"h": "x" * k}}])
        k = w["max_frame"] - len(body)
        body = pack([PUB, t, payload, {"ack": 9, "headers": {"h": "x" * k}}])
        if len(body) != w["max_frame"]:  # the str header grew a size byte: adjust once
            k -= len(body) - w["max_frame"]
            body = pack([PUB, t, payload, {"ack": 9, "headers": {"h": "x" * k}}])
        self.assertEqual(len(body), w["max_frame"])
        c.send_raw(lp(body))
        frames = c.sync()
        kinds = sorted(f[0] for f in frames)
        self.assertEqual(kinds, [MSG, ACK], [describe(f)[:80] for f in frames])
        m = [f for f in frames if f[0] == MSG][0]
        self.assertEqual(m[4], payload)
        self.assertEqual(msg_opts(m)["headers"], {"h": "x" * k})

    def test_connection_served_after_output_backpressure(self):
        # A client that receives more than a MiB at once (its own large messages) must still
        # have its later frames read and answered.
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        c.sub(2, t)
        big = b"b" * (900 * 1024)
        for _ in range(4):
            c.pub(t, big)
        frames = c.sync()
        self.assertEqual(len([f for f in frames if f[0] == MSG]), 8)
        c.send([PING, 5])
        self.assertEqual(c.expect(PONG), [PONG, 5])

    def test_payload_over_max_payload(self):
        c = self.connect()
        payload = b"\x01" * (c.welcome["max_payload"] + 1)
        body = pack([PUB, self.topic(), payload])
        self.assertLessEqual(len(body), c.welcome["max_frame"])
        c.try_send_raw(lp(body))
        self.assertErrClose(c, E_TOOBIG)


class TestConfiguredLimits(Case):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--max-payload", "1000")

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        assert rc == 0, rc

    def test_welcome_announces_configured_limits(self):
        w = self.connect().welcome
        self.assertEqual(w["max_payload"], 1000)
        self.assertEqual(w["max_frame"], 1000 + 4096)

    def test_configured_payload_limit(self):
        c = self.connect()
        t = self.topic()
        self.pub_acked(c, t, b"x" * 1000)
        c.pub(t, b"x" * 1001)
        self.assertErrClose(c, E_TOOBIG)

    def test_configured_frame_limit(self):
        c = self.connect()
        c.send_raw(struct.pack(">I", 5097))
        self.assertErrClose(c, E_TOOBIG)


# ==========================================================================================
class TestLimitReached(Case):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--max-subs", "3", "--max-connections", "4",
                            "--hello-timeout-ms", "500", "--max-topics", "3")

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        assert rc == 0, rc

    def test_subscription_limit_err7_stays_open(self):
        c = self.connect()
        t = self.topic()
        for sid in (1, 2, 3):
            c.sub(sid, t)
        self.assertQuiet(c)
        c.sub(4, t)
        self.assertErrOpen(c, E_LIMIT, ref=4)
        c.sub(2, t + ".x")  # replacing an active sid is not a new subscription
        self.assertQuiet(c)
        c.unsub(1)
        c.sub(4, t)
        self.assertQuiet(c)
        self.pub_acked(c, t)
        self.assertEqual(sorted(m[1] for m in c.sync()), [3, 4])

    def tearDown(self):
        super().tearDown()
        self.wait_for_free_slots()

    @per_worker_limit
    def test_topic_limit_err7_stays_open(self):
        # At max-topics a new topic takes the place of the least recently
        # published one that nothing subscribes to; ERR 7 only when every
        # topic with state has a subscriber.
        watcher = self.connect()
        c = self.connect()
        base = self.topic()
        watcher.sub(1, base + ".>")
        self.assertQuiet(watcher)
        accepted = []
        for i in range(4):
            t = "%s.%d" % (base, i)
            c.pub(t, b"x", ack=70 + i)
            f = c.recv()
            if f[0] == ERR:
                self.assertEqual((f[1], f[3] if len(f) > 3 else None), (E_LIMIT, 70 + i))
                break
            self.assertEqual(f, [ACK, 70 + i, 1])
            accepted.append(t)
        else:
            self.fail("4 subscribed topics accepted with --max-topics 3")
        self.assertEqual(len(accepted), 3)
        self.assertQuiet(c)
        for t in accepted:  # known topics still take messages
            self.assertEqual(self.pub_acked(c, t), 2)
        # Without interest the least recently published topic is reclaimed,
        # and its seq continues when it comes back (never backwards).
        watcher.unsub(1)
        watcher.sync()
        self.assertEqual(self.pub_acked(c, "%s.3" % base), 1)
        self.assertEqual(self.pub_acked(c, accepted[0]), 3)
        watcher.close()

    @per_worker_limit
    def test_connection_limit_err7_closed(self):
        others = [self.connect() for _ in range(4)]
        extra = self.connect(hello=False)
        frames = extra.wait_closed()
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_LIMIT)])
        extra.close()
        for c in others:
            self.assertEqual(c.sync(), [])
        others[0].close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the freed slot becomes available once the broker saw the closes
            c = Conn(self.b.port)
            try:
                c.hello()
                c.sync()
                break
            except (Closed, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                c.close()

    def test_hello_timeout(self):
        c = self.connect(hello=False, auto_pong=False)
        t0 = time.monotonic()
        frames = c.wait_closed()
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_PROTO)])
        self.assertLess(time.monotonic() - t0, 0.5 + 2 * TIMEOUT / 5)


class TestRateAndIpLimits(Case):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--max-pub-rate", "10", "--max-pub-burst", "5",
                            "--max-conns-per-ip", "3", "--max-replay-rate", "2",
                            "--max-replay-burst", "2", "--replay-scan-rate", "5")

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        assert rc == 0, rc

    def tearDown(self):
        super().tearDown()
        self.wait_for_free_slots()

    def test_publish_rate_err7_stays_open(self):
        c = self.connect()
        t = self.topic()
        t0 = time.monotonic()
        c.send_raw(b"".join(frame([PUB, t, b"", {"ack": i}]) for i in range(20)))
        frames = c.sync()
        elapsed = time.monotonic() - t0
        acked = [f[1] for f in frames if f[0] == ACK]
        refused = [(f[1], f[3]) for f in frames if f[0] == ERR]
        self.assertGreaterEqual(len(acked), 5)
        self.assertLessEqual(len(acked), 5 + 1 + int(elapsed * 10), "a burst of 5 at 10/s")
        self.assertEqual(sorted(acked + [r for _, r in refused]), list(range(20)))
        self.assertTrue(all(code == E_LIMIT for code, _ in refused), refused)
        time.sleep(0.6)  # the bucket refills: publishing works again
        self.assertEqual(self.pub_acked(c, t), len(acked) + 1)

    def test_wildcard_since_rate_err7(self):
        c = self.connect()
        base = self.topic()
        c.send_raw(b"".join(frame([SUB, sid, base + ".*", {"since": 0}]) for sid in (1, 2)) +
                   frame([SUB, 3, base + ".>", {"since": 0}]))
        self.assertErrOpen(c, E_LIMIT, ref=3)
        c.unsub(3)  # the refused SUB was not made
        self.assertErrOpen(c, E_SID, ref=3)
        for sid in range(10, 16):  # a single topic with since is not limited
            c.sub(sid, base + ".one", since=0)
        self.assertQuiet(c)
        c.sub(4, base + ".*")  # nor is a wildcard without since
        self.assertQuiet(c)

    @per_worker_limit
    def test_wildcard_since_scan_budget_err10_then_live(self):
        p = self.connect()
        base = self.topic()
        for i in range(6):  # more topics than the 5 a second this broker may scan
            time.sleep(0.15 if i >= 4 else 0)  # and stay within max-pub-rate (burst 5, 10/s)
            self.pub_acked(p, "%s.%d" % (base, i))
        c = self.connect()
        c.sub(1, base + ".*", since=0)
        frames = c.sync()
        self.assertEqual([(f[0], f[1], f[3] if len(f) > 3 else None) for f in frames],
                         [(ERR, E_GAP, 1)], "ERR 10 and no replay")
        time.sleep(0.15)
        self.pub_acked(p, base + ".0")
        self.assertEqual([(f[0], f[1], f[3]) for f in c.sync()], [(MSG, 1, 2)])

    @per_worker_limit
    def test_connections_per_ip_err7_closed(self):
        # Earlier tests' connections may still be going away: wait for a free slot first.
        deadline = time.monotonic() + TIMEOUT
        while True:
            conns = []
            try:
                for _ in range(3):
                    conns.append(self.connect())
                break
            except (Closed, AssertionError):
                for c in conns:
                    c.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        extra = self.connect(hello=False)
        self.assertEqual([(f[0], f[1]) for f in extra.wait_closed()], [(ERR, E_LIMIT)])
        for c in conns:
            self.assertEqual(c.sync(), [])


# ==========================================================================================
# ==========================================================================================
VALID_TOPICS = ["a", "chat.room1", "orders.eu-west.created", "a.$b", "_INBOX.x7Gq",
                "!#%&'()+,-/0123456789:;<=?@[\\]^_`{|}~", "A" * 64, "x." * 15 + "y",
                ".".join(["a" * 15] * 16)]  # 255 bytes, 16 tokens
INVALID_TOPICS = ["", ".", ".chat", "chat.", "chat..room", "chat room", "chat.ro\x01om",
                  "caf\u00e9", "chat\x7f", "tab\there", "chat.*", "chat.>", "*", ">",
                  "chat.room*", "ro>om", "A" * 65, "x." * 16 + "y",
                  ".".join(["a" * 15] * 16) + "b", "a" * 256]
VALID_PATTERNS = VALID_TOPICS + ["*", ">", "chat.*", "chat.>", "*.created", "chat.*.typing",
                                 "*.*.*", "$SYS.>", "$SYS.*", "*.>", "$SYS"]
INVALID_PATTERNS = ["", ".", "chat.", "..", "a..b", "chat room", "ro*m", "chat.>x", "a.>.b",
                    ">.a", "**", "*>", "a.b>", "caf\u00e9", "A" * 65, "*." * 16 + "*",
                    "a" * 256, "x\x00y"]


class TestTopics(Case):
    def test_lengths_in_tables_are_right(self):
        self.assertEqual(len(VALID_TOPICS[-1]), 255)
        self.assertEqual(VALID_TOPICS[-2].count(".") + 1, 16)

    def test_valid_topics_publish(self):
        c = self.connect()
        for t in VALID_TOPICS:
            with self.subTest(topic=t):
                self.assertGreaterEqual(self.pub_acked(c, t, b"v"), 1)
        self.assertQuiet(c)

    def test_invalid_topics_err5_stays_open(self):
        c = self.connect()
        for i, t in enumerate(INVALID_TOPICS):
            with self.subTest(topic=t):
                c.pub(t, b"x", ack=500 + i)
                others = []
                self.assertErrOpen(c, E_TOPIC, ref=500 + i, others=others)
                self.assertEqual(others, [], "a refused PUB gets no ACK")
        c.pub("fine", b"x")
        self.assertQuiet(c)

    def test_invalid_topic_without_ack(self):
        c = self.connect()
        c.pub("a..b", b"x")
        self.assertErrOpen(c, E_TOPIC)

    def test_invalid_reply_err5(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        for i, r in enumerate(["", "a..b", "_INBOX.*", "_INBOX.>", "sp ace", "A" * 65]):
            with self.subTest(reply=r):
                c.pub(t, b"x", reply=r, ack=i + 1)
                self.assertErrOpen(c, E_TOPIC, ref=i + 1)
        # nothing was delivered for the refused publications
        self.assertQuiet(c)

    def test_valid_patterns_subscribe(self):
        c = self.connect()
        for i, p in enumerate(VALID_PATTERNS):
            with self.subTest(pattern=p):
                c.sub(i + 1, p)
                frames = c.sync()
                self.assertEqual([f for f in frames if f[0] == ERR], [])
        for i in range(len(VALID_PATTERNS)):
            c.unsub(i + 1)
        frames = c.sync()
        self.assertEqual([f for f in frames if f[0] == ERR], [])

    def test_invalid_patterns_err5_with_sid(self):
        c = self.connect()
        for i, p in enumerate(INVALID_PATTERNS):
            with self.subTest(pattern=p):
                c.sub(100 + i, p)
                self.assertErrOpen(c, E_TOPIC, ref=100 + i)
        # nothing got subscribed
        c.unsub(100)
        self.assertErrOpen(c, E_SID, ref=100)

    def test_publish_to_dollar_topic_err4(self):
        c = self.connect()
        for i, t in enumerate(["$SYS.x", "$SYS", "$foo.bar", "$"]):
            with self.subTest(topic=t):
                c.pub(t, b"x", ack=40 + i)
                others = []
                self.assertErrOpen(c, E_PERM, ref=40 + i, others=others)
                self.assertEqual(others, [], "a refused PUB gets no ACK")
        c.pub("$SYS.y", b"x")
        self.assertErrOpen(c, E_PERM)
        self.pub_acked(c, self.topic(), b"ok")

    def test_subscribe_to_dollar_topics_allowed(self):
        c = self.connect()
        c.sub(1, "$SYS.>")
        c.sub(2, "$SYS.x")
        c.sub(3, "$SYS.*.open")
        self.assertEqual([f for f in c.sync() if f[0] == ERR], [])

    def test_wildcard_matching(self):
        base = self.topic("w")
        P = lambda s: s.replace("B", base)  # noqa: E731
        patterns = {1: "B.chat.room1", 2: "B.chat.*", 3: "B.*.created", 4: "B.chat.*.typing",
                    5: "B.chat.>", 6: "B.>", 7: "B.*", 8: "B.*.*.*", 9: "B.a.*"}
        topics = ["B.chat", "B.chat.room1", "B.chat.lobby", "B.chat.room1.typing",
                  "B.orders.created", "B.orders.eu.created", "B.chat.a.b.typing", "B.x",
                  "B.a.$b"]
        expect = {
            "B.chat": {6, 7},
            "B.chat.room1": {1, 2, 5, 6},
            "B.chat.lobby": {2, 5, 6},
            "B.chat.room1.typing": {4, 5, 6, 8},
            "B.orders.created": {3, 6},
            "B.orders.eu.created": {6, 8},
            "B.chat.a.b.typing": {5, 6},
            "B.x": {6, 7},
            "B.a.$b": {6, 9},
        }
        s = self.connect()
        for sid, p in patterns.items():
            s.sub(sid, P(p))
        self.assertQuiet(s)
        pub = self.connect()
        for t in topics:
            self.pub_acked(pub, P(t), t.encode())
        got = {}
        for f in s.sync():
            self.assertEqual(f[0], MSG, describe(f))
            got.setdefault(f[2], []).append(f[1])
            self.assertEqual(P(f[4].decode()), f[2])
        for t in topics:
            with self.subTest(topic=t):
                sids = got.get(P(t), [])
                self.assertEqual(sorted(sids), sorted(expect[t]), "sids matching %s" % t)

    def test_single_token_wildcards_at_top_level(self):
        # '*' alone matches every one-token topic, '>' every topic (both without '$').
        s = self.connect()
        s.sub(1, "*")
        s.sub(2, ">")
        s.sync()
        tok = "solo%d" % os.getpid()
        pub = self.connect()
        self.pub_acked(pub, tok)
        self.pub_acked(pub, tok + ".two")
        mine = [f for f in s.sync() if f[0] == MSG and f[2].startswith(tok)]
        self.assertEqual(sorted((f[1], f[2]) for f in mine),
                         [(1, tok), (2, tok), (2, tok + ".two")])
        for f in mine:
            self.assertFalse(f[2].startswith("$"))

    def test_dollar_rule(self):
        # Leading wildcards never match '$' topics. Only the broker publishes those, so
        # provoke whatever $SYS events it has (connections coming and going) and check that
        # '>' and '*.>' never receive any, while '$SYS.>' is a valid subscription.
        wild = self.connect()
        wild.sub(1, ">")
        wild.sub(2, "*.>")
        wild.sub(3, "*")
        sys_ = self.connect()
        sys_.sub(1, "$SYS.>")
        self.assertQuiet(sys_)
        wild.sync()
        for _ in range(3):
            self.connect().close()
        t = self.topic()
        self.pub_acked(sys_, t)
        for f in wild.sync():
            if f[0] == MSG:
                self.assertFalse(f[2].startswith("$"), "wildcard got %s" % describe(f))
        for f in sys_.sync():
            self.assertEqual(f[0], MSG)
            self.assertTrue(f[2].startswith("$SYS"), describe(f))


# ==========================================================================================
class TestDelivery(Case):
    def test_seq_per_topic_starts_at_1(self):
        c = self.connect()
        a, b = self.topic(), self.topic()
        c.sub(1, a)
        c.sub(2, b)
        seqs = [self.pub_acked(c, x) for x in (a, a, b, a, b)]
        self.assertEqual(seqs, [1, 2, 1, 3, 2])
        msgs = c.sync()
        self.assertEqual([(m[1], m[3]) for m in msgs], [(1, 1), (1, 2), (2, 1), (1, 3), (2, 2)])

    def test_ordering_and_contiguity(self):
        t = self.topic()
        s = self.connect()
        s.sub(1, t)
        s.sync()
        p = self.connect()
        n = 2000
        buf = b"".join(frame([PUB, t, struct.pack(">I", i)]) for i in range(n))
        p.send_raw(buf)
        msgs = self.collect(s, n)
        self.assertEqual([m[3] for m in msgs], list(range(1, n + 1)))
        self.assertEqual([struct.unpack(">I", m[4])[0] for m in msgs], list(range(n)))
        self.assertQuiet(p)

    def test_slow_steady_reader_gets_everything_intact(self):
        # A subscriber that reads slowly keeps the broker's writes pending while more
        # deliveries queue up behind them (6 MiB: beyond the socket buffers, below out-hard):
        # every frame must still arrive intact and in order.
        t = self.topic()
        s = self.connect(rcvbuf=4096)
        s.sub(0xABCDEF, t)
        s.sync()
        p = self.connect()
        n = 1500
        body = lambda i: (b"%08d" % i) * 512  # noqa: E731
        p.send_raw(b"".join(frame([PUB, t, body(i)]) for i in range(n)))
        got = []
        deadline = time.monotonic() + TIMEOUT * 6
        while len(got) < n and time.monotonic() < deadline:
            if len(got) % 4 == 0:
                time.sleep(0.001)
            f = s.recv()
            self.assertEqual(f[0], MSG, describe(f)[:80])
            got.append(f)
        self.assertEqual(len(got), n)
        for i, f in enumerate(got):
            if f[1:5] != [0xABCDEF, t, i + 1, body(i)]:
                self.fail("delivery %d corrupted: %s" % (i, describe(f)[:120]))
        self.assertQuiet(p)

    def test_msg_fields_and_binary_payload(self):
        c = self.connect()
        t = self.topic()
        c.sub(77, t)
        for payload in (b"", bytes(range(256)), b"\x00" * 1000, "h\u00e9llo".encode()):
            seq = self.pub_acked(c, t, payload)
            m = c.expect(MSG)
            self.assertIn(len(m), (5, 6))
            self.assertEqual(m[:5], [MSG, 77, t, seq, payload])
            self.assertIsInstance(m[4], bytes)
            self.assertFalse(msg_opts(m).get("replay", False))

    def test_each_subscription_gets_a_copy(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        c.sub(2, t.rsplit(".", 1)[0] + ".*")
        c.sub(3, t)
        other = self.connect()
        other.sub(1, t)
        self.assertQuiet(other)
        self.pub_acked(c, t, b"x")
        self.assertEqual(sorted(m[1] for m in c.sync()), [1, 2, 3])
        self.assertEqual([m[1:4] for m in other.sync()], [[1, t, 1]])

    def test_echo_default_true(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        c.pub(t, b"me")
        self.assertEqual([m[4] for m in c.sync()], [b"me"])

    def test_echo_false(self):
        t = self.topic()
        quiet = self.connect(hello_opts={"echo": False})
        other = self.connect()
        quiet.sub(1, t)
        other.sub(1, t)
        quiet.sync()
        other.sync()
        self.assertEqual(self.pub_acked(quiet, t, b"from quiet"), 1)
        self.assertEqual(self.pub_acked(other, t, b"from other"), 2)
        got_quiet = [m for m in quiet.sync() if m[0] == MSG]
        got_other = [m for m in other.sync() if m[0] == MSG]
        self.assertEqual([(m[3], m[4]) for m in got_quiet], [(2, b"from other")])
        self.assertEqual([(m[3], m[4]) for m in got_other],
                         [(1, b"from quiet"), (2, b"from other")])

    def test_ack_carries_seq_and_matches_msg(self):
        c = self.connect()
        t = self.topic()
        c.sub(1, t)
        c.sync()
        for i in range(1, 21):
            c.pub(t, b"%d" % i, ack=1000 - i)
        frames = c.sync()
        acks = [f for f in frames if f[0] == ACK]
        msgs = [f for f in frames if f[0] == MSG]
        self.assertEqual(acks, [[ACK, 1000 - i, i] for i in range(1, 21)])
        self.assertEqual([(m[3], m[4]) for m in msgs], [(i, b"%d" % i) for i in range(1, 21)])

    def test_ack_without_subscribers(self):
        c = self.connect()
        t = self.topic()
        self.assertEqual([self.pub_acked(c, t) for _ in range(3)], [1, 2, 3])

    def test_no_positive_answer_without_ack(self):
        c = self.connect()
        t = self.topic()
        c.pub(t, b"x")
        c.sub(1, self.topic())
        c.unsub(1)
        self.assertQuiet(c)

    def test_reply_and_headers_passed_through(self):
        t = self.topic()
        s = self.connect()
        s.sub(5, t)
        s.sync()
        p = self.connect()
        hdrs = {"content-type": "application/json", "trace": "abc-123", "empty": "",
                "unicode": "h\u00e9"}
        p.pub(t, b"{}", reply="_INBOX.r1", headers=hdrs)
        p.pub(t, b"r", reply="_INBOX.r2")
        p.pub(t, b"h", headers={"k": "v"})
        p.pub(t, b"n")
        m1, m2, m3, m4 = self.collect(s, 4)
        self.assertEqual(msg_opts(m1).get("reply"), "_INBOX.r1")
        self.assertEqual(msg_opts(m1).get("headers"), hdrs)
        self.assertEqual(msg_opts(m2).get("reply"), "_INBOX.r2")
        self.assertNotIn("headers", msg_opts(m2))
        self.assertEqual(msg_opts(m3).get("headers"), {"k": "v"})
        self.assertNotIn("reply", msg_opts(m3))
        self.assertNotIn("reply", msg_opts(m4))
        self.assertNotIn("headers", msg_opts(m4))
        for m in (m1, m2, m3, m4):
            self.assertFalse(msg_opts(m).get("replay", False))

    def test_request_reply(self):
        svc_topic = self.topic("svc")
        svc = self.connect()
        svc.sub(1, svc_topic, queue="svc")
        svc.sync()
        cli = self.connect()
        inbox = "_INBOX.%d.%d" % (os.getpid(), id(self))
        cli.sub(9, inbox)
        cli.sync()
        cli.pub(svc_topic, b"2+2", reply=inbox)
        req = svc.expect(MSG)
        svc.pub(msg_opts(req)["reply"], b"4")
        rep = cli.expect(MSG)
        self.assertEqual(rep[1:3], [9, inbox])
        self.assertEqual(rep[4], b"4")


# ==========================================================================================
class TestQueueGroups(Case):
    def test_exactly_one_member_per_message(self):
        t = self.topic()
        members = [self.connect() for _ in range(3)]
        for m in members:
            m.sub(1, t, queue="workers")
            m.sync()
        plain = self.connect()
        plain.sub(1, t)
        other_group = self.connect()
        other_group.sub(1, t, queue="auditors")
        plain.sync()
        other_group.sync()
        p = self.connect()
        n = 300
        for i in range(n):
            p.pub(t, b"%d" % i)
        self.pub_acked(p, t, b"last")
        n += 1
        self.assertEqual(len(self.collect(plain, n)), n)
        self.assertEqual(len(self.collect(other_group, n)), n)
        seen = []
        deadline = time.monotonic() + TIMEOUT * 2
        while len(seen) < n and time.monotonic() < deadline:
            for m in members:
                for f in m.poll(0.05):
                    self.assertEqual(f[0], MSG, describe(f))
                    seen.append(f[3])
        for m in members:
            seen.extend(f[3] for f in m.sync() if f[0] == MSG)
        self.assertEqual(sorted(seen), list(range(1, n + 1)), "each message exactly once")

    def test_same_queue_name_different_pattern_is_another_group(self):
        t = self.topic()
        a, b = self.connect(), self.connect()
        a.sub(1, t, queue="q")
        b.sub(1, t.rsplit(".", 1)[0] + ".>", queue="q")
        a.sync()
        b.sync()
        p = self.connect()
        for _ in range(10):
            p.pub(t, b"x")
        self.pub_acked(p, t)
        self.assertEqual(len(self.collect(a, 11)), 11)
        self.assertEqual(len(self.collect(b, 11)), 11)

    def test_echo_false_member_is_skipped(self):
        t = self.topic()
        me = self.connect(hello_opts={"echo": False})
        peer = self.connect()
        me.sub(1, t, queue="g")
        peer.sub(1, t, queue="g")
        me.sync()
        peer.sync()
        n = 50
        for i in range(n):
            me.pub(t, b"%d" % i)
        self.pub_acked(me, t)
        n += 1
        self.assertEqual([m[3] for m in self.collect(peer, n)], list(range(1, n + 1)))
        self.assertEqual([f for f in me.sync() if f[0] == MSG], [])

    def test_echo_false_sole_member_gets_nothing(self):
        t = self.topic()
        me = self.connect(hello_opts={"echo": False})
        me.sub(1, t, queue="solo")
        me.sync()
        self.pub_acked(me, t)
        self.assertQuiet(me)

    def test_member_leaving_group(self):
        t = self.topic()
        a, b = self.connect(), self.connect()
        a.sub(1, t, queue="q")
        b.sub(1, t, queue="q")
        a.sync()
        b.sync()
        a.unsub(1)
        a.sync()
        p = self.connect()
        for _ in range(20):
            p.pub(t, b"x")
        self.pub_acked(p, t)
        self.assertEqual(len(self.collect(b, 21)), 21)
        self.assertQuiet(a)
        b.close()
        time.sleep(0.1)
        # with every member gone, publishing still works and is still sequenced
        self.assertEqual(self.pub_acked(p, t), 22)


# ==========================================================================================
class TestSubscriptions(Case):
    def test_unsub_stops_delivery(self):
        t = self.topic()
        s = self.connect()
        s.sub(1, t)
        s.sub(2, t)
        p = self.connect()
        s.sync()
        self.pub_acked(p, t)
        self.assertEqual(sorted(m[1] for m in s.sync()), [1, 2])
        s.unsub(1)
        s.sync()
        self.pub_acked(p, t)
        self.assertEqual([(m[1], m[3]) for m in s.sync()], [(2, 2)])

    def test_unsub_unknown_sid_err8(self):
        c = self.connect()
        c.unsub(4242)
        self.assertErrOpen(c, E_SID, ref=4242)
        c.sub(1, self.topic())
        c.unsub(1)
        self.assertQuiet(c)
        c.unsub(1)
        self.assertErrOpen(c, E_SID, ref=1)

    def test_err_ref_full_width(self):
        c = self.connect()
        big = (1 << 64) - 1
        c.unsub(big)
        self.assertErrOpen(c, E_SID, ref=big)
        c.pub("$SYS.x", b"", ack=big)
        self.assertErrOpen(c, E_PERM, ref=big)

    def test_sids_are_per_connection(self):
        t = self.topic()
        a, b = self.connect(), self.connect()
        a.sub(1, t)
        a.sync()
        b.unsub(1)
        self.assertErrOpen(b, E_SID, ref=1)
        self.pub_acked(b, t)
        self.assertEqual(len(a.sync()), 1)

    def test_sub_replaces_active_sid(self):
        ta, tb = self.topic(), self.topic()
        s = self.connect()
        s.sub(1, ta)
        s.sync()
        s.sub(1, tb)
        self.assertQuiet(s)
        p = self.connect()
        self.pub_acked(p, ta, b"old")
        self.pub_acked(p, tb, b"new")
        msgs = s.sync()
        self.assertEqual([(m[1], m[2], m[4]) for m in msgs], [(1, tb, b"new")])
        s.unsub(1)
        self.assertQuiet(s)
        s.unsub(1)
        self.assertErrOpen(s, E_SID, ref=1)

    def test_sub_replace_changes_queue(self):
        t = self.topic()
        a, b = self.connect(), self.connect()
        a.sub(1, t, queue="q")
        b.sub(1, t, queue="q")
        a.sync()
        a.sub(1, t)  # a leaves the group, now receives everything
        a.sync()
        b.sync()
        p = self.connect()
        for _ in range(9):
            p.pub(t)
        self.pub_acked(p, t)
        self.assertEqual(len(self.collect(a, 10)), 10)
        self.assertEqual(len(self.collect(b, 10)), 10)

    def test_many_subscriptions(self):
        c = self.connect()
        base = self.topic()
        n = 500
        c.send_raw(b"".join(frame([SUB, i, "%s.%d" % (base, i)]) for i in range(1, n + 1)))
        self.assertQuiet(c)
        p = self.connect()
        p.send_raw(b"".join(frame([PUB, "%s.%d" % (base, i), b""]) for i in range(1, n + 1)))
        self.pub_acked(p, base + ".1")
        msgs = self.collect(c, n + 1)
        self.assertEqual(sorted(m[1] for m in msgs), sorted(list(range(1, n + 1)) + [1]))
        c.send_raw(b"".join(frame([UNSUB, i]) for i in range(1, n + 1)))
        self.assertQuiet(c)


# ==========================================================================================
class TestReplay(Case):
    def publish_n(self, c, t, n, size=0):
        seqs = []
        for i in range(n):
            c.pub(t, (b"%d." % i).ljust(size, b"p"))
        seqs.append(self.pub_acked(c, t, b"%d." % n))
        return seqs[-1]

    def replayed(self, frames):
        return [f for f in frames if f[0] == MSG and msg_opts(f).get("replay") is True]

    def test_since_replays_then_live(self):
        t = self.topic()
        p = self.connect()
        last = self.publish_n(p, t, 4)
        self.assertEqual(last, 5)
        s = self.connect()
        s.sub(3, t, since=2)
        frames = s.sync()
        self.assertEqual([(f[0], f[1], f[2], f[3]) for f in frames],
                         [(MSG, 3, t, 3), (MSG, 3, t, 4), (MSG, 3, t, 5)])
        for f in frames:
            self.assertIs(msg_opts(f).get("replay"), True, describe(f))
        self.pub_acked(p, t, b"live")
        m = s.expect(MSG)
        self.assertEqual(m[3], 6)
        self.assertEqual(m[4], b"live")
        self.assertFalse(msg_opts(m).get("replay", False))

    def test_last_replays_the_newest_then_live(self):
        t = self.topic()
        p = self.connect()
        self.assertEqual(self.publish_n(p, t, 9), 10)
        s = self.connect()
        s.sub(1, t, last=3)
        frames = s.sync()
        self.assertEqual([f[3] for f in self.replayed(frames)], [8, 9, 10])
        self.assertEqual(len(frames), 3)  # never an ERR 10 for last
        s.sub(2, t, last=50)
        self.assertEqual([f[3] for f in self.replayed(s.sync())], list(range(1, 11)))
        s.sub(3, t, last=5, since=8)  # the later start wins: since
        self.assertEqual([f[3] for f in self.replayed(s.sync())], [9, 10])
        s.sub(4, t, last=2, since=3)  # the later start wins: last
        self.assertEqual([f[3] for f in self.replayed(s.sync())], [9, 10])
        self.assertEqual(self.pub_acked(p, t, b"live"), 11)
        live = [f for f in s.sync() if f[0] == MSG]
        self.assertEqual(sorted(f[1] for f in live), [1, 2, 3, 4])

    def test_epoch_in_welcome_and_sub(self):
        t = self.topic()
        p = self.connect()
        epoch = p.welcome.get("epoch")
        self.assertIsInstance(epoch, str)
        self.assertTrue(0 < len(epoch.encode()) <= 64)
        self.assertEqual(self.connect().welcome["epoch"], epoch)  # one per broker
        self.publish_n(p, t, 4)
        s = self.connect()
        s.sub(1, t, since=3, epoch=epoch)  # the same epoch: a plain resume
        self.assertEqual([f[3] for f in s.sync()], [4, 5])
        s.sub(2, t, since=3, epoch="an-older-incarnation")
        frames = s.sync()
        self.assertEqual((frames[0][0], frames[0][1], frames[0][3]), (ERR, E_GAP, 2))
        self.assertEqual([f[3] for f in frames[1:]], [1, 2, 3, 4, 5])
        s.sub(3, t, since=3, epoch="x" * 65)  # too long: a protocol error
        self.assertEqual([f[:2] for f in s.wait_closed()], [[ERR, E_PROTO]])

    def test_since_zero_replays_everything(self):
        t = self.topic()
        p = self.connect()
        self.publish_n(p, t, 2)
        s = self.connect()
        s.sub(1, t, since=0)
        frames = s.sync()
        self.assertEqual([f[3] for f in self.replayed(frames)], [1, 2, 3])
        self.assertEqual(len(frames), 3)
        self.assertEqual([f[4] for f in frames], [b"0.", b"1.", b"2."])

    def test_since_current_replays_nothing(self):
        t = self.topic()
        p = self.connect()
        last = self.publish_n(p, t, 3)
        s = self.connect()
        s.sub(1, t, since=last)
        self.assertQuiet(s)
        s.sub(2, t, since=last + 100)
        self.assertQuiet(s)
        self.pub_acked(p, t)
        self.assertEqual(sorted((m[1], m[3]) for m in s.sync()), [(1, last + 1), (2, last + 1)])

    def test_since_on_queue_subscription_is_ignored(self):
        # Replaying to every member joining a group would deliver messages twice.
        t = self.topic()
        p = self.connect()
        self.publish_n(p, t, 2)
        s = self.connect()
        s.sub(1, t, queue="q", since=0)
        self.assertQuiet(s)
        self.pub_acked(p, t)
        self.assertEqual([(f[0], f[3]) for f in s.sync()], [(MSG, 4)])

    def test_since_on_unknown_topic(self):
        s = self.connect()
        s.sub(1, self.topic(), since=0)
        self.assertQuiet(s)

    def test_without_since_no_replay(self):
        t = self.topic()
        p = self.connect()
        self.publish_n(p, t, 3)
        s = self.connect()
        s.sub(1, t)
        self.assertQuiet(s)

    def test_replay_keeps_headers_and_reply(self):
        t = self.topic()
        p = self.connect()
        self.pub_acked(p, t, b"x", reply="_INBOX.q", headers={"a": "b"})
        s = self.connect()
        s.sub(1, t, since=0)
        (m,) = s.sync()
        o = msg_opts(m)
        self.assertEqual((o.get("reply"), o.get("headers"), o.get("replay")),
                         ("_INBOX.q", {"a": "b"}, True))

    def test_replay_wildcard_every_matching_topic(self):
        base = self.topic()
        p = self.connect()
        for leaf in ("a", "b", "c"):
            self.publish_n(p, base + "." + leaf, 1)
        self.publish_n(p, base + ".a.deep", 0)
        s = self.connect()
        s.sub(1, base + ".*", since=1)
        frames = s.sync()
        got = sorted((f[2].rsplit(".", 1)[1], f[3]) for f in self.replayed(frames))
        self.assertEqual(got, [("a", 2), ("b", 2), ("c", 2)])
        self.assertEqual(len(frames), 3)
        per_topic = {}
        for f in frames:
            per_topic.setdefault(f[2], []).append(f[3])
        for seqs in per_topic.values():
            self.assertEqual(seqs, sorted(seqs))

    def test_default_history_is_128_messages(self):
        t = self.topic()
        p = self.connect()
        last = self.publish_n(p, t, 129)
        self.assertEqual(last, 130)
        s = self.connect()
        s.sub(1, t, since=0)
        frames = s.sync()
        self.assertEqual(frames[0][0], ERR, describe(frames[0]))
        self.assertEqual(frames[0][1], E_GAP)
        self.assertEqual(frames[0][3] if len(frames[0]) > 3 else None, 1)
        self.assertEqual([f[3] for f in frames[1:]], list(range(3, 131)))
        self.assertEqual(len(self.replayed(frames)), 128)
        # since exactly at the edge of what is retained: no ERR 10
        s.sub(2, t, since=2)
        frames = s.sync()
        self.assertEqual([f[3] for f in frames], list(range(3, 131)))
        self.assertTrue(all(f[1] == 2 for f in frames))

    def test_default_history_is_1mib_per_topic(self):
        t = self.topic()
        p = self.connect()
        size = 300 * 1024
        for i in range(5):
            self.pub_acked(p, t, bytes([i]) * size)
        s = self.connect()
        s.sub(1, t, since=0)
        frames = s.sync()
        self.assertEqual(frames[0][0], ERR, describe(frames[0]))
        self.assertEqual(frames[0][1], E_GAP)
        self.assertEqual([f[3] for f in frames[1:]], [3, 4, 5])
        self.assertEqual([f[4] for f in frames[1:]], [bytes([i]) * size for i in (2, 3, 4)])

    def test_replay_then_live_no_gap_no_dup_under_load(self):
        t = self.topic()
        p = self.connect()
        self.publish_n(p, t, 19)  # seqs 1..20 retained; 108 more fit in the default history
        total = 600
        started = threading.Event()
        errors = []

        def publisher():
            try:
                q = Conn(self.b.port)
                q.hello()
                started.wait(TIMEOUT)
                for i in range(21, total + 1):
                    q.pub(t, b"%d" % i)
                    if i % 5 == 0:
                        time.sleep(0.001)
                q.sync(TIMEOUT * 4)
                q.close()
            except Exception as e:  # reported by the main thread
                errors.append(e)

        th = threading.Thread(target=publisher, daemon=True)
        th.start()
        s = self.connect()
        s.sub(1, t, since=0)
        started.set()
        frames = self.collect(s, total, timeout=TIMEOUT * 4)
        th.join(TIMEOUT * 4)
        self.assertEqual(errors, [])
        self.assertEqual([f[3] for f in frames], list(range(1, total + 1)), "gap or duplicate")
        flags = [bool(msg_opts(f).get("replay")) for f in frames]
        k = flags.index(False) if False in flags else len(flags)
        self.assertGreaterEqual(k, 20, "the 20 retained messages come as replay")
        self.assertEqual(flags, [True] * k + [False] * (total - k), "replay is a prefix")
        self.assertQuiet(s)


class TestHistoryLimits(Case):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--history-msgs", "4")

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        assert rc == 0, rc

    def test_since_older_than_history_err10_then_rest(self):
        t = self.topic()
        p = self.connect()
        for i in range(1, 11):
            self.assertEqual(self.pub_acked(p, t, b"%d" % i), i)
        s = self.connect()
        s.sub(7, t, since=2)
        frames = s.sync()
        self.assertEqual(frames[0][0], ERR, describe(frames[0]))
        self.assertEqual(frames[0][1], E_GAP)
        self.assertEqual(frames[0][3] if len(frames[0]) > 3 else None, 7)
        self.assertEqual([(f[0], f[1], f[3], f[4]) for f in frames[1:]],
                         [(MSG, 7, i, b"%d" % i) for i in (7, 8, 9, 10)])
        for f in frames[1:]:
            self.assertIs(msg_opts(f).get("replay"), True)
        self.pub_acked(p, t, b"11")
        m = s.expect(MSG)
        self.assertEqual((m[3], m[4]), (11, b"11"))
        self.assertFalse(msg_opts(m).get("replay", False))

    def test_since_within_history_no_err(self):
        t = self.topic()
        p = self.connect()
        for i in range(10):
            self.pub_acked(p, t)
        s = self.connect()
        s.sub(1, t, since=6)
        frames = s.sync()
        self.assertEqual([(f[0], f[3]) for f in frames], [(MSG, 7), (MSG, 8), (MSG, 9), (MSG, 10)])

    def test_err10_is_per_subscription_and_stays_open(self):
        t = self.topic()
        p = self.connect()
        for i in range(6):
            self.pub_acked(p, t)
        s = self.connect()
        s.sub(1, t, since=0)
        s.sub(2, t, since=5)
        frames = s.sync()
        errs = [f for f in frames if f[0] == ERR]
        self.assertEqual([(f[1], f[3] if len(f) > 3 else None) for f in errs], [(E_GAP, 1)])
        self.assertEqual([(f[1], f[3]) for f in frames if f[0] == MSG],
                         [(1, 3), (1, 4), (1, 5), (1, 6), (2, 6)])
        self.pub_acked(p, t)
        self.assertEqual(sorted(m[1] for m in s.sync()), [1, 2])


# ==========================================================================================
class TestPing(Case):
    def test_ping_pong_ids(self):
        c = self.connect()
        for i in (0, 1, 127, 128, 65535, 1 << 32, (1 << 64) - 1):
            c.send([PING, i])
            self.assertEqual(c.expect(PONG), [PONG, i])

    def test_pipelined_pings_in_order(self):
        c = self.connect()
        c.send_raw(b"".join(frame([PING, i]) for i in range(200)))
        self.assertEqual([f[1] for f in self.collect(c, 200, op=PONG)], list(range(200)))

    def test_unsolicited_pong_ignored(self):
        c = self.connect()
        c.send([PONG, 12345])
        self.assertQuiet(c)

    def test_frames_split_at_every_byte(self):
        c = self.connect()
        t = self.topic()
        data = frame([SUB, 1, t]) + frame([PUB, t, b"split", {"ack": 5}]) + frame([PING, 99])
        for i in range(len(data)):
            c.send_raw(data[i:i + 1])
            if i % 7 == 0:
                time.sleep(0.002)
        frames = [c.recv() for _ in range(3)]
        self.assertEqual(sorted(f[0] for f in frames), [PONG, MSG, ACK])
        self.assertEqual(frames[-1], [PONG, 99])


# ==========================================================================================
HB_MS = 200


class TestHeartbeat(Case):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--heartbeat-ms", str(HB_MS))

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        assert rc == 0, rc

    def test_welcome_heartbeat(self):
        self.assertEqual(self.connect().welcome["heartbeat_ms"], HB_MS)

    def test_idle_client_pinged_then_err11(self):
        c = self.connect(auto_pong=False)
        t0 = time.monotonic()
        pings = []
        while True:
            f = c.recv(HB_MS / 1000 * 10)
            if f[0] == PING:
                self.assertEqual(len(f), 2)
                self.assertIsInstance(f[1], int)
                pings.append(time.monotonic() - t0)
                continue
            break
        self.assertEqual(f[0], ERR, describe(f))
        self.assertEqual(f[1], E_HEARTBEAT)
        elapsed = time.monotonic() - t0
        self.assertEqual(c.wait_closed(), [])
        self.assertEqual(len(pings), 2, "two pings before ERR 11, got pings at %s" % pings)
        hb = HB_MS / 1000
        self.assertGreater(pings[0], hb * 0.5, "first ping too early")
        self.assertLess(pings[0], hb * 4 + 1)
        self.assertGreater(elapsed, hb * 2, "closed too early")
        self.assertLess(elapsed, hb * 8 + 2, "closed too late")

    def test_client_answering_pings_stays(self):
        c = self.connect(auto_pong=True)
        frames = c.poll(HB_MS / 1000 * 8)  # recv() answers each PING with a PONG
        self.assertEqual([describe(f) for f in frames if f[0] == ERR], [])
        self.assertEqual(c.sync(), [])
        self.assertGreaterEqual(len(c.server_pings), 2, "broker pinged the idle client")

    def test_any_frame_counts_as_answer(self):
        c = self.connect(auto_pong=False)
        t = self.topic()
        deadline = time.monotonic() + HB_MS / 1000 * 8
        pings = 0
        while time.monotonic() < deadline:
            f = c.recv(2)
            self.assertNotEqual(f[0], ERR, describe(f))
            if f[0] == PING:
                pings += 1
                c.pub(t, b"i am alive")  # not a PONG, but a frame
        self.assertGreaterEqual(pings, 2)
        self.assertEqual(c.sync(), [])

    def test_busy_client_not_pinged(self):
        # A client whose frames keep coming more often than heartbeat_ms is never pinged. If
        # this process itself stalls for longer than that, a ping is deserved: tolerate it.
        c = self.connect(auto_pong=False)
        hb = HB_MS / 1000
        deadline = time.monotonic() + hb * 6
        last = time.monotonic()
        max_gap = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            max_gap = max(max_gap, now - last)
            last = now
            c.send([PING, 1])
            while True:
                f = c.recv()
                if f == [PONG, 1]:
                    break
                self.assertEqual(f[0], PING, describe(f))
                self.assertGreater(max_gap, hb * 0.75, "broker pinged a client that keeps sending")
                c.send([PONG, f[1]])
            time.sleep(hb / 8)


# ==========================================================================================
class TestSlowConsumer(Case):
    def test_slow_consumer_cut_off_fast_one_gets_everything(self):
        """A subscriber that never reads is closed with ERR 6; one that keeps up on the same
        topic receives every message. The publisher waits for the fast reader now and then so
        that "fast" is true of a Python reader (4 MiB in flight at most, below out-hard)."""
        t = self.topic()
        slow = self.connect(rcvbuf=4096)
        slow.sub(1, t)
        slow.sync()
        fast = self.connect()
        fast.sub(1, t)
        fast.sync()
        fast_seqs = []
        fast_other = []
        cond = threading.Condition()

        def reader():
            try:
                while True:
                    f = fast.recv(TIMEOUT * 4)
                    with cond:
                        if f[0] == MSG:
                            fast_seqs.append(f[3])
                        else:
                            fast_other.append(f)
                        cond.notify_all()
                    if f[0] == MSG and f[4] == b"END":
                        return
            except Exception as e:
                with cond:
                    fast_other.append(e)
                    cond.notify_all()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        p = self.connect()
        chunk = b"s" * (256 * 1024)
        n = int(os.environ.get("HERALD_SLOW_CONSUMER_MB", "64")) * 4
        for i in range(n):
            p.pub(t, chunk)
            with cond:
                ok = cond.wait_for(lambda: len(fast_seqs) >= i - 16 or fast_other, TIMEOUT * 2)
            self.assertTrue(ok, "fast subscriber stalled at %d of %d" % (len(fast_seqs), i))
            self.assertEqual(fast_other, [])
        p.pub(t, b"END")
        th.join(TIMEOUT * 4)
        self.assertFalse(th.is_alive(), "fast subscriber did not finish")
        self.assertEqual(fast_other, [])
        self.assertEqual(fast_seqs, list(range(1, n + 2)), "fast subscriber lost messages")
        self.assertQuiet(p)
        # The slow subscriber: whatever it got is well-formed and in order, then ERR 6, EOF.
        got = []
        try:
            while True:
                got.append(slow.recv(TIMEOUT * 2))
        except Closed:
            pass
        except Timeout:
            self.fail("slow consumer never closed; it received %d frames" % len(got))
        self.assertTrue(got, "nothing at all for the slow consumer")
        self.assertEqual(got[-1][0], ERR, "last frame %s" % describe(got[-1])[:80])
        self.assertEqual(got[-1][1], E_SLOW, describe(got[-1]))
        mseqs = [f[3] for f in got if f[0] == MSG]
        self.assertEqual(mseqs, list(range(1, len(mseqs) + 1)))
        self.assertLess(len(mseqs), n)
        self.assertEqual(len(got), len(mseqs) + 1)
        for f in got[:-1]:
            self.assertEqual(f[4], chunk)


# ==========================================================================================
class TestWebSocket(Case):
    """The WebSocket transport of docs/protocol.md, with a raw RFC 6455 client."""

    def setUp(self):
        super().setUp()
        if not self.b.ws_port:
            self.skipTest("the broker announced no ws= port in its ready file")

    def ws(self, hello=True, **kw):
        c = WsConn(self.b.ws_port, **kw)
        self.conns.append(c)
        if hello:
            c.hello()
        return c

    def test_subprotocol_echoed(self):
        c = self.ws(hello=False)
        self.assertEqual(c.protocol, "herald.v1")
        w = c.hello()
        self.assertEqual(w["v"], 1)

    def test_no_subprotocol_accepted(self):
        c = self.ws(hello=False, protocols=())
        self.assertIsNone(c.protocol)
        c.hello()
        self.assertQuiet(c)

    def test_ws_and_tcp_interoperate(self):
        t = self.topic()
        w = self.ws()
        tcp = self.connect()
        w.sub(1, t)
        tcp.sub(2, t)
        w.sync()
        tcp.sync()
        self.pub_acked(w, t, b"from ws", headers={"h": "1"})
        self.pub_acked(tcp, t, b"from tcp")
        for c, sid in ((w, 1), (tcp, 2)):
            got = self.collect(c, 2)
            self.assertEqual([(m[1], m[3], m[4]) for m in got],
                             [(sid, 1, b"from ws"), (sid, 2, b"from tcp")])
            self.assertEqual(msg_opts(got[0]).get("headers"), {"h": "1"})

    def test_fragmented_message_is_one_frame(self):
        c = self.ws()
        body = pack([PING, 77])
        c.ws_send(0x2, body[:1], fin=False)
        c.ws_send(0x0, body[1:2], fin=False)
        c.ws_send(0x0, body[2:], fin=True)
        self.assertEqual(c.expect(PONG), [PONG, 77])

    def test_pipelined_pings_in_order(self):
        c = self.ws()
        for i in range(50):
            c.send([PING, i])
        self.assertEqual([f[1] for f in self.collect(c, 50, op=PONG)], list(range(50)))

    def test_text_message_refused_1003(self):
        c = self.ws()
        c.ws_send(0x1, b'[5, 1]')
        frames = c.wait_closed()
        self.assertEqual(c.close_code, 1003)
        self.assertTrue(all(f[0] == ERR for f in frames), [describe(f) for f in frames])

    def test_err1_then_close_1002(self):
        c = self.ws()
        c.ws_send(0x2, b"\xc1")
        frames = c.wait_closed()
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_PROTO)])
        self.assertEqual(c.close_code, 1002)

    def test_first_frame_not_hello_1002(self):
        c = self.ws(hello=False)
        c.send([PING, 1])
        frames = c.wait_closed()
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_PROTO)])
        self.assertEqual(c.close_code, 1002)

    def test_err2_then_close_1009(self):
        c = self.ws()
        body = pack([PUB, self.topic(), b"x" * c.welcome["max_frame"]])
        try:
            c.ws_send(0x2, body)
        except OSError:
            pass
        frames = c.wait_closed()
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_TOOBIG)])
        self.assertEqual(c.close_code, 1009)

    def test_recoverable_errors_keep_ws_open(self):
        c = self.ws()
        c.pub("$SYS.x", b"", ack=3)
        self.assertErrOpen(c, E_PERM, ref=3)
        c.sub(4, "a..b")
        self.assertErrOpen(c, E_TOPIC, ref=4)
        c.unsub(99)
        self.assertErrOpen(c, E_SID, ref=99)

    def test_http_healthz_and_metrics(self):
        status, _, _ = http_get(self.b.ws_port, "/healthz")
        self.assertEqual(status, 200)
        status, hdrs, body = http_get(self.b.ws_port, "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain", hdrs.get("content-type", ""))
        text = body.decode("utf-8")
        samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        self.assertTrue(samples, "no metric samples in /metrics")
        for ln in samples:
            self.assertRegex(ln, r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEInfa]+( \d+)?$")



# ==========================================================================================
class TestSoftOutputLimit(Case):
    """Pending output over the soft limit for longer than its grace period closes with ERR 6,
    even below the hard limit."""

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("--out-soft", "256K", "--out-soft-ms", "2000", "--out-hard", "64M")

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        assert rc == 0, rc

    def test_soft_limit_held_too_long(self):
        t = self.topic()
        slow = self.connect(rcvbuf=4096)
        slow.sub(1, t)
        slow.sync()
        p = self.connect()
        for _ in range(32):
            p.pub(t, b"s" * (128 * 1024))  # 4 MiB: over out-soft, far below out-hard
        self.pub_acked(p, t)
        time.sleep(3.5)  # the grace period (2 s) and a sweep or two
        got = []
        try:
            while True:
                got.append(slow.recv(TIMEOUT * 2))
        except Closed:
            pass
        self.assertEqual((got[-1][0], got[-1][1]), (ERR, E_SLOW), describe(got[-1])[:80])
        self.assertLess(len(got) - 1, 33)
        self.assertQuiet(p)

    def test_websocket_slow_consumer_1008(self):
        if not self.b.ws_port:
            self.skipTest("the broker announced no ws= port in its ready file")
        t = self.topic()
        slow = WsConn(self.b.ws_port, rcvbuf=4096)
        self.conns.append(slow)
        slow.hello()
        slow.sub(1, t)
        slow.sync()
        p = self.connect()
        for _ in range(32):
            p.pub(t, b"w" * (128 * 1024))
        self.pub_acked(p, t)
        time.sleep(3.5)
        frames = slow.wait_closed(TIMEOUT * 2)
        self.assertEqual((frames[-1][0], frames[-1][1]), (ERR, E_SLOW), describe(frames[-1])[:80])
        self.assertEqual(slow.close_code, 1008)

    def test_short_burst_over_soft_limit_is_tolerated(self):
        t = self.topic()
        s = self.connect()
        s.sub(1, t)
        s.sync()
        p = self.connect()
        for _ in range(8):
            p.pub(t, b"s" * (128 * 1024))  # 1 MiB at once, read right away
        self.pub_acked(p, t)
        self.assertEqual(len(self.collect(s, 9)), 9)
        time.sleep(2.5)
        self.assertQuiet(s)


# ==========================================================================================
class TestCommandLine(unittest.TestCase):
    """Bad settings name themselves and exit non-zero; the config file sets what flags set."""

    def run_herald(self, *args):
        return subprocess.run([os.environ["HERALD_BIN"], *args], capture_output=True, text=True,
                              timeout=TIMEOUT * 2, stdin=subprocess.DEVNULL)

    def test_help_and_version(self):
        r = self.run_herald("--help")
        self.assertEqual(r.returncode, 0)
        for flag in ("--port", "--ws-port", "--bind", "--config", "--log-level", "--max-payload",
                     "--heartbeat-ms"):
            self.assertIn(flag, r.stdout + r.stderr)
        r = self.run_herald("--version")
        self.assertEqual(r.returncode, 0)
        self.assertIn("herald", r.stdout + r.stderr)

    def test_bad_options_name_the_setting(self):
        for args, name in ((["--bogus", "1"], "bogus"), (["--max-payload", "abc"], "max-payload"),
                           (["--heartbeat-ms", "-5"], "heartbeat-ms"),
                           (["--port", "70000"], "port"), (["stray"], "stray")):
            with self.subTest(args=args):
                r = self.run_herald(*args)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(name, r.stderr)

    def test_config_file(self):
        d = tempfile.mkdtemp(prefix="herald-conformance-conf-")
        try:
            good = os.path.join(d, "good.conf")
            with open(good, "w") as fh:
                fh.write("# a comment\nheartbeat-ms = 250\nmax-payload = 2K\n")
            b = Broker("--config", good)
            try:
                c = b.connect()
                self.assertEqual(c.welcome["heartbeat_ms"], 250)
                self.assertEqual(c.welcome["max_payload"], 2048)
                self.assertEqual(c.welcome["max_frame"], 2048 + 4096)
                c.close()
            finally:
                self.assertEqual(b.stop(), 0)
                b.cleanup()
            bad = os.path.join(d, "bad.conf")
            with open(bad, "w") as fh:
                fh.write("heartbeat-ms = soon\n")
            r = self.run_herald("--config", bad)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("heartbeat-ms", r.stderr)
            r = self.run_herald("--config", os.path.join(d, "missing.conf"))
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("missing.conf", r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


# ==========================================================================================
JWT_SECRET = "conformance-suite-hs256-secret-0123456789abcdef"


def jwt_hs256(claims, secret=JWT_SECRET, alg="HS256"):
    """A compact JWS built with the standard library (RFC 7519), for the auth tests."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    if alg == "none":
        return (head + b"." + body + b".").decode()
    sig = hmac.new(secret.encode(), head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64(sig)).decode()


class TestAuth(Case):
    """HELLO tokens (ERR 3) and per-topic permissions (ERR 4) with static tokens and JWTs."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-conformance-auth-")
        cls.tokens = os.path.join(cls.dir, "tokens")
        with open(cls.tokens, "w") as fh:
            fh.write("alice alice-secret-1 pub=chat.> sub=chat.>\n"
                     "bob bob-secret-2 sub=news.*\n")
        cls.broker = Broker("--auth-tokens-file", cls.tokens, "--jwt-hs256-secret", JWT_SECRET)

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert rc == 0, rc

    def hello_refused(self, **hello):
        c = self.connect(hello=False)
        c.send([HELLO, dict({"v": 1}, **hello)])
        self.assertErrClose(c, E_AUTH)

    def test_missing_token_err3(self):
        self.hello_refused()

    def test_wrong_token_err3(self):
        for tok in ("nope", "alice", "alice alice-secret-1", "alice-secret-1 ", ""):
            with self.subTest(token=tok):
                self.hello_refused(token=tok)

    def test_static_token_permissions(self):
        a = self.connect(hello_opts={"token": "alice-secret-1"})
        t = "chat.%d" % os.getpid()
        a.sub(1, "chat.*")
        self.assertQuiet(a)
        self.assertEqual(self.pub_acked(a, t), 1)
        self.assertEqual([(f[1], f[2]) for f in a.sync()], [(1, t)])
        a.pub("news.x", b"", ack=2)
        self.assertErrOpen(a, E_PERM, ref=2)
        for sid, pat in ((3, "news.>"), (4, ">"), (5, "*.x"), (6, "$SYS.>")):
            with self.subTest(pattern=pat):
                a.sub(sid, pat)
                self.assertErrOpen(a, E_PERM, ref=sid)

    def test_unauthorised_client_can_neither_read_nor_write(self):
        a = self.connect(hello_opts={"token": "alice-secret-1"})
        b = self.connect(hello_opts={"token": "bob-secret-2"})
        t = "chat.secret%d" % os.getpid()
        a.sub(1, t)
        a.sync()
        b.sub(1, t)
        self.assertErrOpen(b, E_PERM, ref=1)
        b.sub(2, "chat.>")
        self.assertErrOpen(b, E_PERM, ref=2)
        b.pub(t, b"forged", ack=3)
        self.assertErrOpen(b, E_PERM, ref=3)
        self.pub_acked(a, t, b"for alice only")
        self.assertEqual([f[4] for f in a.sync()], [b"for alice only"])
        self.assertQuiet(b)
        b.sub(4, "news.*")  # what bob may read still works
        self.assertQuiet(b)

    def test_reply_topic_needs_permission(self):
        a = self.connect(hello_opts={"token": "alice-secret-1"})
        a.pub("chat.q", b"", reply="_INBOX.x", ack=1)
        self.assertErrOpen(a, E_PERM, ref=1)
        self.pub_acked(a, "chat.q", reply="chat.inbox.1")

    def test_jwt_hs256(self):
        now = int(time.time())
        good = jwt_hs256({"sub": "worker", "exp": now + 300,
                          "herald": {"pub": ["jobs.>"], "sub": ["jobs.*"]}})
        c = self.connect(hello_opts={"token": good})
        c.sub(1, "jobs.*")
        self.assertQuiet(c)
        self.pub_acked(c, "jobs.a%d" % os.getpid())
        self.assertEqual(len(c.sync()), 1)
        c.pub("chat.x", b"", ack=9)
        self.assertErrOpen(c, E_PERM, ref=9)
        c.sub(2, "jobs.>")
        self.assertErrOpen(c, E_PERM, ref=2)

    def test_jwt_refused(self):
        now = int(time.time())
        claims = {"sub": "w", "exp": now + 300, "herald": {"pub": [">"], "sub": [">"]}}
        bad = {
            "expired": jwt_hs256(dict(claims, exp=now - 10)),
            "no exp": jwt_hs256({k: v for k, v in claims.items() if k != "exp"}),
            "wrong secret": jwt_hs256(claims, secret="another-secret-of-at-least-32-bytes!!"),
            "alg none": jwt_hs256(claims, alg="none"),
            "tampered": jwt_hs256(claims)[:-2] + "AA",
            "not yet valid": jwt_hs256(dict(claims, nbf=now + 3600)),
        }
        for why, tok in bad.items():
            with self.subTest(why=why):
                self.hello_refused(token=tok)

    def test_jwt_expiry_closes_the_session(self):
        exp = int(time.time()) + 2
        c = self.connect(hello_opts={"token": jwt_hs256(
            {"sub": "short", "exp": exp, "herald": {"pub": ["x.>"], "sub": ["x.>"]}})})
        c.sub(1, "x.y")
        self.assertQuiet(c)
        frames = c.wait_closed(exp - time.time() + TIMEOUT)
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_AUTH)])
        self.assertGreaterEqual(time.time(), exp - 0.5)

    def test_websocket_err3_close_1008(self):
        if not self.b.ws_port:
            self.skipTest("the broker announced no ws= port in its ready file")
        w = WsConn(self.b.ws_port)
        self.conns.append(w)
        w.send([HELLO, {"v": 1, "token": "wrong"}])
        frames = w.wait_closed()
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_AUTH)])
        self.assertEqual(w.close_code, 1008)
        w = WsConn(self.b.ws_port)
        self.conns.append(w)
        w.hello(token="bob-secret-2")
        w.pub("news.x", b"", ack=1)
        self.assertErrOpen(w, E_PERM, ref=1)


class TestAuthAnonymous(Case):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-conformance-anon-")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as fh:
            fh.write("pubber pubber-secret-3 pub=public.>\n")
        cls.broker = Broker("--auth-tokens-file", tokens, "--auth-anonymous", "sub=public.>")

    @classmethod
    def tearDownClass(cls):
        rc = cls.broker.stop()
        cls.broker.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert rc == 0, rc

    def test_anonymous_permissions(self):
        anon = self.connect()
        anon.sub(1, "public.>")
        self.assertQuiet(anon)
        anon.pub("public.news", b"", ack=2)
        self.assertErrOpen(anon, E_PERM, ref=2)
        anon.sub(3, "private.>")
        self.assertErrOpen(anon, E_PERM, ref=3)
        p = self.connect(hello_opts={"token": "pubber-secret-3"})
        self.pub_acked(p, "public.news", b"hello all")
        self.assertEqual([f[4] for f in anon.sync()], [b"hello all"])

    def test_a_wrong_token_is_not_anonymous(self):
        c = self.connect(hello=False)
        c.send([HELLO, {"v": 1, "token": "wrong"}])
        self.assertErrClose(c, E_AUTH)


# ==========================================================================================
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "protocol.md")


class TestDocumentExamples(Case):
    """docs/protocol.md stays true: its walkthrough bytes and its example client work."""

    @classmethod
    def setUpClass(cls):
        with open(DOC, encoding="utf-8") as fh:
            cls.doc = fh.read()

    def setUp(self):
        super().setUp()
        self.broker = Broker()  # a fresh broker each time: the examples expect seq 1

    def tearDown(self):
        super().tearDown()
        self.assertEqual(self.broker.stop(), 0)
        self.broker.cleanup()

    def section(self, title):
        i = self.doc.index("\n## " + title)
        j = self.doc.find("\n## ", i + 1)
        return self.doc[i:j if j > 0 else None]

    def test_walkthrough_bytes(self):
        block = self.section("A session walkthrough").split("```")[1]
        steps = []  # ("C", bytes) to send, or ("S", bytes, exact) to receive
        for line in block.splitlines():
            m = re.match(r"^([CS]): ((?:[0-9a-f]{2} ?)+)(…)?\s*$", line)
            if m:
                steps.append((m.group(1), bytes.fromhex(m.group(2)), m.group(3) is None))
        self.assertGreaterEqual(len(steps), 8, "walkthrough not found")
        c = Conn(self.b.port)
        self.conns.append(c)
        k = 0
        while k < len(steps):
            if steps[k][0] == "C":
                c.send_raw(steps[k][1])
                k += 1
                continue
            group = []
            while k < len(steps) and steps[k][0] == "S":
                group.append(steps[k])
                k += 1
            got = []
            for _ in group:
                f = c.recv()
                got.append(frame(f))
            for _, want, exact in group:  # frames of one group may come in any order
                match = [g for g in got if (g == want if exact else g.startswith(want))]
                self.assertTrue(match, "expected %s among %s" % (want.hex(" "),
                                                                [g.hex(" ") for g in got]))
                got.remove(match[0])

    def test_python_example_client(self):
        src = self.section("A minimal Python client").split("```python")[1].split("```")[0]
        env = dict(os.environ, HERALD_PORT=str(self.b.port))
        r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                           timeout=TIMEOUT * 2, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("acked, seq 1", r.stdout)
        self.assertIn("msg 1 chat.room1 1 b'hello' {'lang': 'en'}", r.stdout)


# ==========================================================================================
class TestShutdown(Case):
    def setUp(self):
        super().setUp()
        self.broker = Broker()

    def tearDown(self):
        for c in self.conns:
            c.close()
        self.broker.cleanup()

    def test_sigterm_err9_and_exit_0(self):
        t = self.topic()
        subs = [self.connect() for _ in range(3)]
        for s in subs:
            s.sub(1, t)
            s.sync()
        p = self.connect()
        for i in range(100):
            p.pub(t, b"%d" % i)
        p.sync()
        idle = self.connect(hello=False)
        ws = None
        if self.broker.ws_port:
            ws = WsConn(self.broker.ws_port)
            self.conns.append(ws)
            ws.hello()
        self.broker.signal(signal.SIGTERM)
        for s in subs:
            frames = s.wait_closed(TIMEOUT * 2)
            self.assertEqual(frames[-1][0], ERR, describe(frames[-1]))
            self.assertEqual(frames[-1][1], E_SHUTDOWN)
            # everything published before the signal was drained first
            self.assertEqual([f[3] for f in frames if f[0] == MSG], list(range(1, 101)))
        frames = p.wait_closed(TIMEOUT * 2)
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_SHUTDOWN)])
        idle.wait_closed(TIMEOUT * 2)
        if ws is not None:
            frames = ws.wait_closed(TIMEOUT * 2)
            self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_SHUTDOWN)])
            self.assertEqual(ws.close_code, 1001)
        rc = self.broker.wait(TIMEOUT * 2)
        self.assertEqual(rc, 0, "exit status; log:\n" + self.broker.log_text())
        with self.assertRaises(OSError):
            Conn(self.broker.port).sync(1)

    def test_shutdown_with_a_client_that_never_reads(self):
        self.broker.stop()
        self.broker.cleanup()
        self.broker = Broker("--shutdown-timeout-ms", "500")
        t = self.topic()
        stuck = self.connect(rcvbuf=4096)
        stuck.sub(1, t)
        stuck.sync()
        p = self.connect()
        for _ in range(8):
            p.pub(t, b"z" * (256 * 1024))
        p.sync()
        t0 = time.monotonic()
        self.broker.signal(signal.SIGTERM)
        rc = self.broker.wait(TIMEOUT * 2)
        self.assertEqual(rc, 0, "exit status; log:\n" + self.broker.log_text())
        self.assertLess(time.monotonic() - t0, 0.5 + TIMEOUT)
        self.assertEqual([(f[0], f[1]) for f in p.wait_closed()], [(ERR, E_SHUTDOWN)])

    def test_sigint_exits_0(self):
        c = self.connect()
        self.broker.signal(signal.SIGINT)
        frames = c.wait_closed(TIMEOUT * 2)
        self.assertEqual([(f[0], f[1]) for f in frames], [(ERR, E_SHUTDOWN)])
        self.assertEqual(self.broker.wait(TIMEOUT * 2), 0)


if __name__ == "__main__":
    unittest.main()
