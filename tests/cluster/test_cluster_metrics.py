#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# /metrics and /healthz of a cluster: the whole broker and each worker, whichever worker answers.
"""Starts `herald --workers 2` and scrapes it the way Prometheus would: every scrape may land on
either worker, and the unlabelled series (the whole broker) must agree whichever answers.
Kills a worker with SIGKILL and watches the primary's restart count and /healthz."""

import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conformance"))

from herald_wire import ACK, MSG, SLOW, Broker, http_get  # noqa: E402

N = 20  # messages published by each publisher


def scrape(port):
    """/metrics as {sample: value}."""
    status, hdrs, body = http_get(port, "/metrics")
    assert status == 200, status
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for ln in body.decode().splitlines():
        if ln and not ln.startswith("#"):
            k, v = ln.rsplit(" ", 1)
            assert k not in out, "sample %s twice" % k
            out[k] = float(v)
    return out


def retried(fn, *args):
    """fn(*args), retrying a connection the kernel queued at a worker that was being killed
    (the backlog of a listener that closes is reset)."""
    for _ in range(20):
        try:
            return fn(*args)
        except OSError:
            time.sleep(0.05)
    raise AssertionError("%s never answered" % fn.__name__)


def health(port):
    """(status, body) of /healthz."""
    status, _, body = retried(http_get, port, "/healthz")
    return status, body.decode()


def children(pid):
    """The worker processes of the primary `pid`."""
    kids = set()
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as fh:
                kids.update(int(x) for x in fh.read().split())
        except OSError:
            pass
    return sorted(kids)


def wait_for(cond, what, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


# Series that scrapes themselves do not change: equal in every scrape while nothing else happens.
STABLE = ("herald_messages_in_total", "herald_deliveries_total",
          'herald_connections{transport="tcp"}', 'herald_connections_total{transport="tcp"}',
          "herald_subscriptions", 'herald_messages_in_total{worker="0"}',
          'herald_messages_in_total{worker="1"}', "herald_topics", "herald_history_messages",
          "herald_workers", "herald_worker_up", "herald_worker_restarts_total")


class ClusterMetrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.b = Broker("--workers", "2", "--log-level", "info")

    @classmethod
    def tearDownClass(cls):
        for c in getattr(cls, "conns", []):
            c.close()
        rc = cls.b.stop()
        cls.b.cleanup()
        assert rc == 0, rc

    def connect_both(self):
        """Connections until each worker has at least two; returns {worker: [conn, ...]}."""
        by = {0: [], 1: []}
        self.__class__.conns = []
        for _ in range(200):
            c = self.b.connect()
            self.conns.append(c)
            by[c.welcome["worker"]].append(c)
            if len(by[0]) >= 2 and len(by[1]) >= 2:
                return by
        self.fail("the kernel never spread 200 connections over both workers")

    def test_cluster_metrics(self):
        b = self.b
        by = self.connect_both()
        ntcp = len(self.conns)
        subs = [by[0][0], by[1][0]]
        for c in subs:
            c.sub(1, "metrics.>")
            c.sync()
        # One publisher on each worker, to topics owned by either.
        for w in (0, 1):
            p = by[w][1]
            for i in range(N):
                p.pub("metrics.%d.%d" % (w, i % 5), b"x" * 10, ack=i + 1)
            acks = [f for f in p.sync() if f[0] == ACK]
            while len(acks) < N:
                f = p.recv()
                if f[0] == ACK:
                    acks.append(f)
        for c in subs:
            got = 0
            while got < 2 * N:
                if c.recv()[0] == MSG:
                    got += 1
        time.sleep(0.8)  # every worker has published its snapshot since

        first = None
        for _ in range(12):
            m = scrape(b.ws_port)
            self.assertEqual(m["herald_workers"], 2)
            self.assertEqual(m["herald_worker_up"], 2)
            for w in ("0", "1"):
                self.assertEqual(m['herald_worker_up{worker="%s"}' % w], 1)
                self.assertIn('herald_messages_in_total{worker="%s"}' % w, m)
                self.assertIn('herald_connections{transport="tcp",worker="%s"}' % w, m)
                self.assertIn('process_resident_memory_bytes{worker="%s"}' % w, m)
                self.assertGreater(m['herald_uptime_seconds{worker="%s"}' % w], 0)
            # The whole broker is the sum of its workers.
            for name in ("herald_messages_in_total", "herald_deliveries_total",
                         'herald_connections{transport="tcp"}', "herald_subscriptions",
                         "herald_http_requests_total", "herald_cluster_records_sent_total",
                         "process_resident_memory_bytes"):
                if name.endswith("}"):
                    per = [name[:-1] + ',worker="%d"}' % w for w in (0, 1)]
                else:
                    per = [name + '{worker="%d"}' % w for w in (0, 1)]
                self.assertEqual(m[name], m[per[0]] + m[per[1]], name)
            self.assertEqual(m["herald_messages_in_total"], 2 * N)
            self.assertEqual(m["herald_deliveries_total"], 2 * 2 * N)
            self.assertEqual(m['herald_connections{transport="tcp"}'], ntcp)
            self.assertEqual(m["herald_subscriptions"], 2)  # peers' registrations not counted
            self.assertGreater(m["herald_cluster_records_sent_total"], 0)
            self.assertEqual(m["herald_cluster_records_sent_total"],
                             m["herald_cluster_records_received_total"])
            if first is None:
                first = m
            for name in STABLE:
                self.assertEqual(m[name], first[name], name)
        status, text = health(b.ws_port)
        self.assertEqual(status, 200)
        self.assertEqual(text, "ok: 2 of 2 workers up\n")

        # A worker dies: the primary respawns it, the totals do not go backwards, and
        # /healthz keeps answering 200 from the worker that is left.
        kids = children(b.proc.pid)
        self.assertEqual(len(kids), 2, kids)
        os.kill(kids[0], signal.SIGKILL)

        def respawned():
            status, text = health(b.ws_port)
            self.assertEqual(status, 200, text)
            self.assertTrue(text.startswith("ok: "), text)
            m = retried(scrape, b.ws_port)
            self.assertGreaterEqual(m["herald_messages_in_total"], 2 * N)
            self.assertGreaterEqual(m["herald_deliveries_total"], 2 * 2 * N)
            return m if m["herald_worker_restarts_total"] == 1 and m["herald_worker_up"] == 2 \
                else None

        m = wait_for(respawned, "the respawn in /metrics")
        restarted = [w for w in (0, 1) if m['herald_worker_restarts_total{worker="%d"}' % w] == 1]
        self.assertEqual(len(restarted), 1, m)
        other = 1 - restarted[0]
        self.assertEqual(m['herald_worker_restarts_total{worker="%d"}' % other], 0)
        # The new incarnation goes on from its predecessor's counters.
        self.assertEqual(m["herald_messages_in_total"], 2 * N)
        for w in (0, 1):
            name = 'herald_messages_in_total{worker="%d"}' % w
            self.assertEqual(m[name], first[name], name)
        self.assertEqual(m['herald_connections{transport="tcp",worker="%d"}' % restarted[0]], 0)
        self.assertNotIn(kids[0], children(b.proc.pid))
        status, text = health(b.ws_port)
        self.assertEqual((status, text), (200, "ok: 2 of 2 workers up\n"))
        # The respawned worker serves: a connection that lands on it is welcomed.
        c = wait_for(lambda: next((x for x in (b.connect() for _ in range(20))
                                   if x.welcome["worker"] == restarted[0]), None),
                     "a connection on the respawned worker")
        c.close()


class SingleProcess(unittest.TestCase):
    """Without --workers, or with --workers 1, /metrics and /healthz are one worker's."""

    def check(self, *args):
        b = Broker(*args)
        try:
            m = scrape(b.ws_port)
            self.assertNotIn("herald_workers", m)
            self.assertFalse([k for k in m if 'worker="' in k], "labelled series when alone")
            self.assertIn("herald_messages_in_total", m)
            self.assertEqual(health(b.ws_port), (200, "ok\n"))
        finally:
            self.assertEqual(b.stop(), 0)
            b.cleanup()

    @unittest.skipIf("--workers" in os.environ.get("HERALD_EXTRA_ARGS", ""), "cluster forced")
    def test_default(self):
        self.check()

    def test_one_worker(self):
        self.check("--workers", "1")


if __name__ == "__main__":
    unittest.main(verbosity=2)
