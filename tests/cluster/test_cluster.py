#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# herald --workers N: delivery, seq, queue groups and replays across workers; faults and signals.
"""Starts the real broker as a primary with workers and drives it over raw sockets.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/cluster/test_cluster.py -v
Only python3-msgpack and the standard library (the conformance suite's herald_wire.py).
"""

import os
import signal
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "conformance"))

from herald_wire import (  # noqa: E402
    ACK, E_GAP, E_SHUTDOWN, ERR, MSG, TIMEOUT, Broker, BrokerCase, Closed, Conn, WsConn,
    msg_opts, msgs)


def worker_pids(b):
    out = subprocess.run(["pgrep", "-P", str(b.proc.pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


class Cluster(BrokerCase):
    N = 2
    ARGS = ("--workers", "2")

    def topic(self, prefix="t"):
        return "%s.%d.%d" % (prefix, os.getpid(), next(BrokerCase._topics))

    def on_worker(self, k, ws=False, **hello):
        """A connection that landed on worker k (the kernel spreads them; try until one does)."""
        for _ in range(400):
            c = WsConn(self.b.ws_port) if ws else Conn(self.b.port)
            w = c.hello(**hello)
            if w["worker"] == k:
                self.conns.append(c)
                return c
            c.close()
        self.fail("no connection landed on worker %d in 400 tries" % k)

    def msgs(self, c, n, timeout=TIMEOUT):
        return msgs(c, n, timeout)

    def test_welcome_names_worker_and_unique_ids(self):
        seen, ids = set(), set()
        for _ in range(40):
            c = Conn(self.b.port)
            w = c.hello()
            seen.add(w["worker"])
            ids.add(w["client_id"])
            self.conns.append(c)
        self.assertEqual(seen, set(range(self.N)))  # the kernel spread 40 connections
        self.assertEqual(len(ids), 40)
        self.assertEqual(len({c.welcome["epoch"] for c in self.conns}), 1)

    def test_cross_worker_delivery_on_both_transports(self):
        base = self.topic("x")
        subs = [self.on_worker(0), self.on_worker(self.N - 1, ws=True)]
        for c in subs:
            c.sub(1, base + ".*")
            c.sub(2, base + ".3")
            c.sync()
        pub = self.on_worker(1 % self.N)
        for i in range(10):
            pub.pub("%s.%d" % (base, i), b"m%d" % i, ack=i)
        acks = pub.sync()
        self.assertEqual([f[0] for f in acks], [ACK] * 10)
        self.assertEqual({f[2] for f in acks}, {1})
        for c in subs:
            got = self.msgs(c, 11)
            self.assertEqual(sorted((f[1], f[2]) for f in got),
                             sorted([(1, "%s.%d" % (base, i)) for i in range(10)] +
                                    [(2, base + ".3")]))

    def test_seq_contiguous_with_publishers_on_every_worker(self):
        t = self.topic()
        sub = self.on_worker(0)
        sub.sub(1, t)
        sub.sync()
        pubs = [self.on_worker(k) for k in range(self.N)]
        for i in range(100):
            for p in pubs:
                p.pub(t, b"%d" % i, ack=i)
        seqs = []
        for p in pubs:
            seqs += [f[2] for f in p.sync() if f[0] == ACK]
        self.assertEqual(sorted(seqs), list(range(1, 100 * self.N + 1)))
        got = [f[3] for f in self.msgs(sub, 100 * self.N)]
        self.assertEqual(got, list(range(1, 100 * self.N + 1)))  # in order, no gap, no dup

    def test_queue_group_exactly_one_across_workers(self):
        base = self.topic("jobs")
        members = [self.on_worker(k % self.N) for k in range(self.N * 2)]
        for c in members:
            c.sub(9, base + ".*", queue="q")
            c.sync()
        pub = self.on_worker(0)
        n = 120
        for i in range(n):
            pub.pub("%s.%d" % (base, i % 12), b"%d" % i, ack=i)
        pub.sync()
        time.sleep(0.3)
        got = []
        for c in members:
            got.append([f[4] for f in c.poll(0.3) if f[0] == MSG])
        payloads = sorted(p for g in got for p in g)
        self.assertEqual(payloads, sorted(b"%d" % i for i in range(n)))  # exactly once each
        per_worker = [sum(len(got[i]) for i in range(len(members)) if i % self.N == k)
                      for k in range(self.N)]
        self.assertTrue(all(per_worker), per_worker)  # members on every worker took some

    def test_echo_false_across_workers(self):
        t = self.topic()
        me = self.on_worker(0, echo=False)
        me.sub(1, t)
        me.sub(2, t, queue="g")
        me.sync()
        other = self.on_worker(self.N - 1)
        other.sub(1, t, queue="g")
        other.sync()
        for i in range(6):
            me.pub(t, b"x", ack=i)
        me.sync()
        self.assertEqual([f for f in me.poll(0.3) if f[0] == MSG], [])
        self.assertEqual(len(self.msgs(other, 6)), 6)

    def test_since_and_last_from_every_worker(self):
        base = self.topic("r")
        pub = self.on_worker(0)
        for i in range(8):
            for k in range(5):
                pub.pub("%s.%d" % (base, k), b"%d" % i, ack=1)
        pub.sync()
        for w in range(self.N):
            c = self.on_worker(w)
            c.sub(1, base + ".*", since=5)
            frames = c.sync()
            self.assertEqual([f[0] for f in frames], [MSG] * 15)
            per_topic = {}
            for f in frames:
                self.assertIs(msg_opts(f).get("replay"), True)
                per_topic.setdefault(f[2], []).append(f[3])
            self.assertEqual(sorted(per_topic.values()), [[6, 7, 8]] * 5)
            for k in range(5):
                c.sub(2 + k, "%s.%d" % (base, k), last=2)
                self.assertEqual([f[3] for f in c.sync()], [7, 8])

    def test_full_ring_backpressure_loses_nothing(self):
        # Big messages published as fast as the socket takes them, to topics owned by every
        # worker, subscribed on every worker: the rings fill, publishers are paused, and
        # every acknowledged message still arrives once.
        base = self.topic("big")
        subs = [self.on_worker(k) for k in range(self.N)]
        for c in subs:
            c.sub(1, base + ".*")
            c.sync()
        pub = self.on_worker(0)
        payload = b"p" * 200000
        n = 60
        for i in range(n):
            pub.pub("%s.%d" % (base, i % 6), payload, ack=i)
        acks = [f for f in pub.sync(timeout=30) if f[0] == ACK]
        self.assertEqual(len(acks), n)
        for c in subs:
            got = self.msgs(c, n, timeout=30)
            self.assertEqual(len(got), n)
            self.assertTrue(all(len(f[4]) == len(payload) for f in got))


class Cluster3(Cluster):
    N = 3
    ARGS = ("--workers", "3")


class Faults(unittest.TestCase):
    """One broker per test: these kill and signal it."""

    def setUp(self):
        self.b = Broker("--workers", "2")
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        self.b.stop()
        self.b.cleanup()

    def on_worker(self, k):
        for _ in range(400):
            c = Conn(self.b.port)
            if c.hello()["worker"] == k:
                self.conns.append(c)
                return c
            c.close()
        self.fail("no connection landed on worker %d" % k)

    def test_kill9_worker_under_a_publish_stream(self):
        base = "stream.%d" % os.getpid()
        survivor = self.on_worker(0)
        survivor.sub(1, base + ".*")
        survivor.sync()
        victim_sub = self.on_worker(1)
        victim_sub.sub(1, base + ".*")
        victim_sub.sync()
        epoch = victim_sub.welcome["epoch"]
        pub = self.on_worker(0)
        pids = worker_pids(self.b)
        self.assertEqual(len(pids), 2)
        acked = {}
        stop = threading.Event()

        def publish():
            i = 0
            while not stop.is_set() and i < 4000:
                pub.pub("%s.%d" % (base, i % 8), b"%d" % i, ack=i)
                i += 1
                if i % 50 == 0:
                    for f in pub.sync(timeout=15):
                        if f[0] == ACK:
                            acked.setdefault(f[1] % 8, []).append(f[2])
                    time.sleep(0.01)

        th = threading.Thread(target=publish)
        th.start()
        time.sleep(0.3)
        victim_seen = {}
        for f in victim_sub.poll(0.05):
            if f[0] == MSG:
                victim_seen[f[2]] = f[3]
        # The victim is whichever worker is not the survivor's: its pid is the child that
        # is not serving the survivor; kill both candidates' worker 1 by its WELCOME.
        os.kill(self.victim_pid(pids), signal.SIGKILL)
        time.sleep(1.0)
        stop.set()
        th.join(30)
        self.assertFalse(th.is_alive())
        total = sum(len(v) for v in acked.values())
        self.assertGreater(total, 100)
        # The survivor lost nothing: every acknowledged seq of every topic arrived once,
        # in order, with no gap.
        got = {}
        deadline = time.monotonic() + 10
        while sum(len(v) for v in got.values()) < total and time.monotonic() < deadline:
            for f in survivor.poll(0.2):
                if f[0] == MSG:
                    got.setdefault(f[2], []).append(f[3])
        for k, seqs in acked.items():
            t = "%s.%d" % (base, k)
            self.assertEqual(got.get(t, [])[:len(seqs)], sorted(seqs), t)
            self.assertEqual(sorted(seqs), list(range(1, len(seqs) + 1)), t)  # seq never reset
        # The victim's client reconnects (to whichever worker) and resumes with its epoch:
        # everything after what it saw, or ERR 10 first when history went with the worker.
        c = Conn(self.b.port)
        c.hello()
        self.conns.append(c)
        for k in range(8):
            t = "%s.%d" % (base, k)
            c.sub(10 + k, t, since=victim_seen.get(t, 0), epoch=epoch)
        frames = c.sync(timeout=10)
        for k in range(8):
            t = "%s.%d" % (base, k)
            fs = [f for f in frames if (f[0] == MSG and f[1] == 10 + k) or
                  (f[0] == ERR and f[3] == 10 + k)]
            seqs = [f[3] for f in fs if f[0] == MSG]
            self.assertEqual(seqs, sorted(set(seqs)), t)  # no duplicate
            if fs and fs[0][0] == ERR:
                self.assertEqual(fs[0][1], E_GAP)
            elif seqs:
                self.assertEqual(seqs[0], victim_seen.get(t, 0) + 1, t)  # no gap
        self.assertIn("worker 1 exited", self.b.log_text())

    def victim_pid(self, pids):
        # Worker 1 is the one spawned second by the primary (children are listed by pid).
        return pids[1]

    def test_sigterm_drains_every_worker(self):
        a, b = self.on_worker(0), self.on_worker(1)
        t = "drain.%d" % os.getpid()
        a.sub(1, t)
        a.sync()
        b.pub(t, b"x", ack=1)
        b.sync()
        self.b.signal(signal.SIGTERM)
        for c in (a, b):
            frames = c.wait_closed(timeout=10)
            self.assertIn(E_SHUTDOWN, [f[1] for f in frames if f[0] == ERR])
        self.assertEqual(self.b.wait(10), 0)
        self.assertEqual(worker_pids(self.b), [])

    def test_sighup_reloads_what_can_change(self):
        cfgfile = os.path.join(self.b.dir, "herald.conf")
        self.b.stop()
        self.b.cleanup()
        self.b = None
        d = os.path.dirname(cfgfile)
        os.makedirs(d, exist_ok=True)
        with open(cfgfile, "w") as fh:
            fh.write("max-subs = 100\nmax-topics = 1000\n")
        self.b = Broker("--workers", "2", "--config", cfgfile)
        c = self.on_worker(0)
        for sid in range(1, 4):
            c.sub(sid, "a.%d" % sid)
        self.assertEqual(c.sync(), [])
        with open(cfgfile, "w") as fh:
            fh.write("max-subs = 3\nmax-topics = 5\n")
        self.b.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reload: 'max-subs' applied" not in self.b.log_text():
            self.assertLess(time.monotonic(), deadline, self.b.log_text())
            time.sleep(0.05)
        log = self.b.log_text()
        self.assertIn("'max-topics' changed but needs a restart", log)
        c.sub(4, "a.4")
        f = c.sync()
        self.assertEqual([(x[0], x[1]) for x in f], [(ERR, 7)])  # the new max-subs applies
        self.assertTrue(self.b.alive())
        self.assertEqual(len(worker_pids(self.b)), 2)  # nobody restarted


if __name__ == "__main__":
    unittest.main()
