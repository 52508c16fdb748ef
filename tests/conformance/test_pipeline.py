#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Publish pipelines over real sockets: exec stages pass, rewrite and reject PUBs before sequencing.
"""Starts herald with `--pipeline` stages that run tests/conformance/pipe_stage.py (whose
behaviour each payload chooses) and examples/moderate.py, and checks what publishers and
subscribers see: ACK after the pipeline, ERR 13 with the reason, rewrites, order, stage
timeouts, crashes and garbage answered without losing a message, and bounded buffering.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/conformance/test_pipeline.py -v
"""

import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_wire import (  # noqa: E402
    ACK, ERR, MSG, SLOW, TIMEOUT, Broker, BrokerCase, Conn, http_get)

HERE = os.path.dirname(os.path.abspath(__file__))
STAGE = os.path.join(HERE, "pipe_stage.py")
MODERATE = os.path.join(HERE, "..", "..", "examples", "moderate.py")
E_REJECTED = 13
LOGDIR = tempfile.mkdtemp(prefix="herald-pipe-")
os.environ["PIPE_STAGE_LOG"] = os.path.join(LOGDIR, "starts")


def metric(port, name, labels=""):
    """The unlabelled-by-worker value of one /metrics sample, 0 when absent."""
    status, _, body = http_get(port, "/metrics")
    assert status == 200
    m = re.search(r"^%s%s (\d+)$" % (re.escape(name), re.escape(labels)), body.decode(), re.M)
    return int(m.group(1)) if m else 0


class Pipeline(BrokerCase):
    ARGS = ("--pipeline-timeout-ms", str(int(1000 * SLOW)), "--pipeline",
            "pl.one.>=exec:%s,pl.two.>=exec:%s|exec:%s,pl.mod.>=exec:%s --word spam "
            "--link-prefix https://check.example/?u=" % (STAGE, STAGE, STAGE, MODERATE))
    PREFIX = "pl"

    def topic(self, kind="one"):
        return "pl.%s.%d.%d" % (kind, os.getpid(), time.monotonic_ns())

    def pair(self, kind="one"):
        t = self.topic(kind)
        sub = self.connect()
        sub.sub(1, t)
        sub.sync()
        return t, sub, self.connect()

    def test_pass_acks_after_the_stage(self):
        t, sub, pub = self.pair()
        pub.pub(t, b"hello", ack=1)
        self.assertEqual(pub.expect(ACK)[1:3], [1, 1])
        m = sub.expect(MSG)
        self.assertEqual((m[2], m[3], m[4]), (t, 1, b"hello"))

    def test_reject_gets_err13_and_is_not_sequenced(self):
        t, sub, pub = self.pair()
        pub.pub(t, b"reject:no links please", ack=7)
        e = pub.expect(ERR)
        self.assertEqual(e[1], E_REJECTED)
        self.assertIn("no links please", e[2])
        self.assertEqual(e[3], 7)
        pub.pub(t, b"fine", ack=8)  # the connection stays open, and seq 1 is still free
        self.assertEqual(pub.expect(ACK)[1:3], [8, 1])
        m = sub.expect(MSG)
        self.assertEqual((m[3], m[4]), (1, b"fine"))

    def test_reject_without_ack_still_answers(self):
        t, sub, pub = self.pair()
        pub.pub(t, b"reject:x")
        e = pub.expect(ERR)
        self.assertEqual(e[1], E_REJECTED)
        self.assertEqual(sub.sync(), [])

    def test_rewrite_payload_and_headers(self):
        t, sub, pub = self.pair()
        pub.pub(t, b"upper:shout", ack=1)
        pub.pub(t, b"hdr:v1", ack=2, headers={"a": "b"})
        pub.expect(ACK)
        pub.expect(ACK)
        m1, m2 = sub.expect(MSG), sub.expect(MSG)
        self.assertEqual(m1[4], b"SHOUT")
        self.assertEqual(m2[4], b"hdr:v1")
        self.assertEqual(m2[5]["headers"], {"x-stage": "v1"})

    def test_stage_sees_headers_reply_and_client(self):
        t, sub, pub = self.pair()
        pub.pub(t, b"upper:x", reply="pl.reply.here", headers={"k": "v"}, ack=3)
        pub.expect(ACK)
        m = sub.expect(MSG)
        self.assertEqual(m[4], b"X")
        self.assertEqual(m[5]["reply"], "pl.reply.here")
        self.assertEqual(m[5]["headers"], {"k": "v"})  # a payload rewrite keeps the headers

    def test_order_is_kept_with_rejects_between(self):
        t, sub, pub = self.pair()
        n = 300
        for i in range(n):
            pub.pub(t, (b"reject:%d" % i) if i % 7 == 3 else (b"m%d" % i), ack=i + 1)
        answers = [pub.recv(timeout=TIMEOUT * 2) for _ in range(n)]
        want_seq = 0
        for i, a in enumerate(answers):
            if i % 7 == 3:
                self.assertEqual((a[0], a[1], a[3]), (ERR, E_REJECTED, i + 1))
            else:
                want_seq += 1
                self.assertEqual((a[0], a[1], a[2]), (ACK, i + 1, want_seq))
        msgs = [sub.expect(MSG) for _ in range(want_seq)]
        self.assertEqual([m[3] for m in msgs], list(range(1, want_seq + 1)))
        self.assertEqual([m[4] for m in msgs],
                         [b"m%d" % i for i in range(n) if i % 7 != 3])

    def test_two_stages_both_run(self):
        before = metric(self.b.ws_port, "herald_pipeline_messages_total", '{outcome="passed"}')
        t, sub, pub = self.pair("two")
        pub.pub(t, b"plain", ack=1)
        pub.expect(ACK)
        self.assertEqual(sub.expect(MSG)[4], b"plain")
        after = metric(self.b.ws_port, "herald_pipeline_messages_total", '{outcome="passed"}')
        self.assertEqual(after - before, 2)
        pub.pub(t, b"upper:reject:late", ack=2)  # the first stage rewrites, the second passes
        pub.expect(ACK)
        self.assertEqual(sub.expect(MSG)[4], b"REJECT:LATE")

    def test_topics_outside_every_pattern_skip_the_pipeline(self):
        before = metric(self.b.ws_port, "herald_pipeline_messages_total", '{outcome="passed"}')
        pub = self.connect()
        pub.pub("pl.none.%d" % os.getpid(), b"reject:would be", ack=1)
        self.assertEqual(pub.expect(ACK)[1], 1)
        after = metric(self.b.ws_port, "herald_pipeline_messages_total", '{outcome="passed"}')
        self.assertEqual(after, before)

    def test_slow_stage_times_out_then_recovers(self):
        t, sub, pub = self.pair()
        late = metric(self.b.ws_port, "herald_pipeline_late_answers_total")
        pub.pub(t, b"slow:%d" % int(1500 * SLOW), ack=1)
        t0 = time.monotonic()
        e = pub.expect(ERR, timeout=TIMEOUT * 2)
        self.assertEqual((e[1], e[3]), (E_REJECTED, 1))
        self.assertIn("in time", e[2])
        self.assertLess(time.monotonic() - t0, 1.45 * SLOW)  # before the stage answers
        # sent ~1 s in: it waits behind the slow one in the child (0.5 s more), then passes
        pub.pub(t, b"after", ack=2)
        a = pub.expect(ACK, timeout=TIMEOUT * 2)
        self.assertEqual(a[1:3], [2, 1])
        self.assertEqual(sub.expect(MSG)[4], b"after")
        deadline = time.monotonic() + TIMEOUT
        while metric(self.b.ws_port, "herald_pipeline_late_answers_total") == late:
            self.assertLess(time.monotonic(), deadline, "the late answer was not counted")
            time.sleep(0.05)

    def check_restart(self, payload, why):
        t, sub, pub = self.pair()
        restarts = metric(self.b.ws_port, "herald_pipeline_restarts_total")
        pub.pub(t, b"first", ack=1)
        pub.pub(t, payload, ack=2)
        pub.pub(t, b"third", ack=3)
        self.assertEqual(pub.expect(ACK)[1:3], [1, 1])
        e = pub.expect(ERR, timeout=TIMEOUT * 2)
        self.assertEqual((e[1], e[3]), (E_REJECTED, 2))
        self.assertIn(why, e[2])
        # the third was sent to the dead child too (answered as the first two) or after the
        # restart (passed): either way it is answered, never lost
        a = pub.recv(timeout=TIMEOUT * 2)
        if a[0] == ACK:
            self.assertEqual(a[1:3], [3, 2])
        else:
            self.assertEqual((a[0], a[1], a[3]), (ERR, E_REJECTED, 3))
        pub.pub(t, b"fourth", ack=4)
        self.assertEqual(pub.expect(ACK, timeout=TIMEOUT * 2)[1], 4)
        self.assertGreater(metric(self.b.ws_port, "herald_pipeline_restarts_total"), restarts)
        self.assertIn(b"first", [m[4] for m in sub.sync()])
        self.assertTrue(self.b.alive())

    def test_stage_crash_is_answered_and_restarted(self):
        self.check_restart(b"crash", "exited")
        self.assertIn("pipeline stage", self.b.log_text())

    def test_stage_garbage_is_answered_and_restarted(self):
        self.check_restart(b"garbage", "exited")
        self.assertRegex(self.b.log_text(), r"bad answer \(not one well-formed msgpack value\)")

    def test_stage_answer_without_action(self):
        self.check_restart(b"badmap", "exited")
        self.assertIn("action missing", self.b.log_text())

    def test_moderation_example(self):
        t, sub, pub = self.pair("mod")
        pub.pub(t, b"see http://evil.example/x now", ack=1)
        pub.pub(t, b"buy SPAM today", ack=2)
        import msgpack
        pub.pub(t, msgpack.packb({"user": "ann", "text": "hi all"}), ack=3)
        pub.pub(t, msgpack.packb({"user": "bob", "text": "spam!"}), ack=4)
        self.assertEqual(pub.expect(ACK)[1], 1)
        e = pub.expect(ERR)
        self.assertEqual((e[1], e[3]), (E_REJECTED, 2))
        self.assertIn("banned word", e[2])
        self.assertEqual(pub.expect(ACK)[1], 3)
        self.assertEqual(pub.expect(ERR)[3], 4)
        m1, m2 = sub.expect(MSG), sub.expect(MSG)
        self.assertEqual(m1[4], b"see https://check.example/?u=http%3A%2F%2Fevil.example%2Fx now")
        self.assertEqual(msgpack.unpackb(m2[4]), {"user": "ann", "text": "hi all"})
        self.assertEqual(sub.sync(), [])


class PipelineWorkers(BrokerCase):
    """With two workers each runs its own stages, before the PUB goes to the topic's owner."""

    ARGS = ("--workers", "2", "--pipeline-timeout-ms", str(int(2000 * SLOW)),
            "--pipeline", "pw.>=exec:%s" % STAGE)
    PREFIX = "pw"

    def test_order_and_rejects_across_owners(self):
        topics = ["pw.%d.%d" % (os.getpid(), i) for i in range(8)]  # owned by both workers
        subs = []
        for t in topics:
            s = self.connect()
            s.sub(1, t)
            s.sync()
            subs.append(s)
        pubs = [self.connect() for _ in range(3)]  # spread over the workers
        for p in pubs:
            for i in range(40):
                t = topics[i % len(topics)]
                p.pub(t, b"reject:no" if i % 5 == 2 else b"upper:m%d" % i, ack=i + 1)
        for p in pubs:
            for i in range(40):
                a = p.recv(timeout=TIMEOUT * 2)
                if i % 5 == 2:
                    self.assertEqual((a[0], a[1], a[3]), (ERR, E_REJECTED, i + 1))
                else:
                    self.assertEqual((a[0], a[1]), (ACK, i + 1))
        for k, s in enumerate(subs):
            got = [f for f in s.sync() if f[0] == MSG]
            want = 3 * len([i for i in range(40) if i % len(topics) == k and i % 5 != 2])
            self.assertEqual(len(got), want)
            self.assertEqual([f[3] for f in got], list(range(1, want + 1)))
            self.assertTrue(all(f[4].startswith(b"M") for f in got))


class Backpressure(unittest.TestCase):
    """A stage that stops answering pauses its publishers instead of buffering their PUBs."""

    HWM = 8

    def setUp(self):
        self.gate = os.path.join(LOGDIR, "gate-%d" % time.monotonic_ns())
        os.environ["PIPE_STAGE_GATE"] = self.gate
        self.b = Broker("--pipeline", "bp.>=exec:%s" % STAGE, "--pipeline-inflight",
                        str(self.HWM), "--pipeline-timeout-ms", "60000")
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        rc = self.b.stop()
        log = self.b.log_text()
        self.b.cleanup()
        self.assertEqual(rc, 0, log)

    def test_stalled_stage_pauses_publisher_not_others(self):
        pub = Conn(self.b.port)
        self.conns.append(pub)
        pub.hello()
        sub = Conn(self.b.port)
        self.conns.append(sub)
        sub.hello()
        sub.sub(1, "bp.t")
        sub.sync()
        n, body = 3000, b"hold" + b"x" * 2000
        pub.sock.setblocking(False)
        sent, frames = 0, []
        from herald_wire import frame, PUB
        data = b"".join(frame([PUB, "bp.t", body, {"ack": i + 1}]) for i in range(n))
        deadline = time.monotonic() + 3 * SLOW
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += pub.sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        self.assertLess(sent, len(data), "the broker read every PUB while its stage was stalled")
        inflight = metric(self.b.ws_port, "herald_pipeline_inflight")
        # the stage holds its mark plus what one read of the socket had already taken
        self.assertGreaterEqual(inflight, self.HWM)
        self.assertLessEqual(inflight, self.HWM + 64 * 1024 // len(body) + 2)
        other = Conn(self.b.port)  # another publisher, another topic: unaffected
        self.conns.append(other)
        other.hello()
        other.pub("free.t", b"x", ack=1)
        self.assertEqual(other.expect(ACK)[1], 1)
        open(self.gate, "w").close()  # the stage answers again
        pub.sock.setblocking(True)
        pub.sock.sendall(data[sent:])
        acks = [pub.recv(timeout=TIMEOUT * 4) for _ in range(n)]
        self.assertEqual([(a[0], a[1], a[2]) for a in acks],
                         [(ACK, i + 1, i + 1) for i in range(n)])
        got = 0
        while got < n:
            m = sub.recv(timeout=TIMEOUT * 2)
            self.assertEqual((m[0], m[3]), (MSG, got + 1))
            got += 1


class Settings(unittest.TestCase):
    def run_bad(self, *args):
        p = subprocess.run([os.environ["HERALD_BIN"], "--workers", "1", "--port", "0",
                            "--ws-port", "0"] + list(args), capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        return p.stderr

    def test_bad_settings_name_the_problem(self):
        self.assertIn("is not pattern=exec:PROGRAM", self.run_bad("--pipeline", "nothing"))
        self.assertIn("is not exec:PROGRAM", self.run_bad("--pipeline", "a.>=sh:x"))
        self.assertIn("cannot run '/nonexistent/stage'",
                      self.run_bad("--pipeline", "a.>=exec:/nonexistent/stage"))
        self.assertIn("pipeline-on-error", self.run_bad("--pipeline-on-error", "maybe"))


if __name__ == "__main__":
    unittest.main()
