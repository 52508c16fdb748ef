#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Slow-consumer policies over real sockets: a backlogged subscriber loses messages, never silently.
"""Runs herald with --slow-policy and a subscriber that does not read while a publisher
floods its topic. Whatever the policy drops must be named by GAP frames: the MSG seqs and
GAP ranges the subscriber reads, in order, cover every published seq exactly once.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/conformance/test_policies.py -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_wire import (  # noqa: E402
    ERR, GAP, MSG, SLOW, BrokerCase, Closed, Conn, Timeout)

N = 5000
PAYLOAD = 2000


class Policies(BrokerCase):
    ARGS = ("--heartbeat-ms", "3600000", "--out-soft", "65536", "--out-soft-ms", "60000",
            "--out-hard", "1048576",
            "--slow-policy", "pn.>=drop-newest,po.>=drop-oldest,pc.>=conflate,pd.>=disconnect")
    PREFIX = "p"

    def flood(self, prefix, subscribe_to=None, **sub_opts):
        """A subscriber that reads nothing while N messages arrive, then reads them all."""
        t = "%s.%d.%d" % (prefix, os.getpid(), time.monotonic_ns())
        sub = Conn(self.b.port, rcvbuf=4096)
        self.conns.append(sub)
        sub.hello()
        sub.sub(1, subscribe_to or t, **sub_opts)
        sub.sync()
        pub = self.connect()
        for i in range(N):
            pub.pub(t, b"%08d" % (i + 1) + b"x" * PAYLOAD)
        pub.sync(timeout=30 * SLOW)
        time.sleep(0.2 * SLOW)
        frames = []
        while True:
            try:
                frames.append(sub.recv(timeout=1.0 * SLOW))
            except (Timeout, Closed):
                break
        return frames

    def check_coverage(self, frames):
        """Every seq 1..N exactly once, as a MSG or inside a GAP, in increasing order."""
        self.assertEqual([f for f in frames if f[0] not in (MSG, GAP)], [])
        end = 0
        gaps = 0
        for f in frames:
            if f[0] == MSG:
                self.assertEqual(f[3], end + 1, "MSG out of order or lost silently")
                self.assertEqual(f[4][:8], b"%08d" % f[3])
                end = f[3]
            else:
                self.assertEqual(f[1], 1)
                self.assertEqual(f[3], end + 1, "GAP does not start where delivery stopped")
                self.assertGreaterEqual(f[4], f[3])
                end = f[4]
                gaps += 1
        self.assertEqual(end, N)
        self.assertGreater(gaps, 0, "the subscriber was never backlogged")
        return [f[3] for f in frames if f[0] == MSG]

    def test_drop_newest(self):
        seqs = self.check_coverage(self.flood("pn"))
        self.assertEqual(seqs[:10], list(range(1, 11)))

    def test_drop_oldest(self):
        seqs = self.check_coverage(self.flood("po"))
        self.assertEqual(seqs[-1], N)  # the newest are kept

    def test_conflate(self):
        seqs = self.check_coverage(self.flood("pc"))
        self.assertEqual(seqs[-1], N)  # the latest is always delivered

    def test_policy_with_a_wildcard_subscription(self):
        frames = self.flood("pc", subscribe_to="pc.>")
        self.check_coverage(frames)

    def test_disconnect_is_the_default(self):
        # a slow consumer of a topic without a policy is closed with ERR 6, as before
        frames = self.flood("pd")
        self.assertEqual([f[:2] for f in frames if f[0] != MSG], [[ERR, 6]])


if __name__ == "__main__":
    unittest.main()
