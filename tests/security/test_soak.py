#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Soak: many clients connect, subscribe, publish with acks and disconnect at random, in rounds.
# Checks that every acknowledged message reaches every live matching subscriber once and in seq
# order, that nothing is duplicated or corrupted, that the broker survives, and that its RSS
# comes back to where it was after the first round (no leak).
# Environment: HERALD_SOAK_SECONDS (total, default 20), HERALD_SOAK_CLIENTS (default 16).
import bisect
import os
import random
import sys
import threading
import time
import unittest

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_test import (ACK, ERR, MSG, PING, PONG, SLOW, SUB, UNSUB, WELCOME,  # noqa: E402
                         Broker, Client, connect_any)

SECONDS = float(os.environ.get("HERALD_SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("HERALD_SOAK_CLIENTS", "16"))
ROUND = min(SECONDS / 2, 10.0)  # each round's ledger is checked, then dropped
ROUNDS = max(2, int(SECONDS / ROUND))
TOPICS = ["soak.t%d" % i for i in range(8)]
PATTERNS = TOPICS[:4] + ["soak.*", "soak.>", "*.t5", ">"]
now = time.monotonic


def matches(pattern, topic):
    p, t = pattern.split("."), topic.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(t) > i
        if i >= len(t) or (tok != "*" and tok != t[i]):
            return False
    return len(p) == len(t)


class Sub:
    def __init__(self, owner, sid, pattern, queue, echo):
        self.owner, self.sid, self.pattern, self.queue = owner, sid, pattern, queue
        self.echo = echo   # False: its own connection's messages are not delivered to it
        self.start = None  # after the PONG that followed the SUB
        self.end = None    # before the PING that preceded UNSUB / close; None: abrupt
        self.got = []      # (topic, seq, hash(payload)): hashes keep long soaks small


class Ledger:
    """Everything the clients did, for the invariant checks at the end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.subs = []
        self.acked = {}    # (topic, seq) -> (hash(payload), t_send, t_ack, publisher)
        self.sent = {}     # hash(payload) -> topic
        self.errors = []


class SoakClient(threading.Thread):
    def __init__(self, n, broker, ledger, deadline, seed):
        super().__init__(daemon=True)
        self.n, self.broker, self.ledger, self.deadline = n, broker, ledger, deadline
        self.rnd = random.Random(seed)
        self.c = None
        self.subs = {}
        self.next_sid = 1
        self.counter = 0
        self.pending_acks = {}
        self.failure = None
        self.stats = {"tcp": 0, "ws": 0, "pubs": 0, "subs": 0, "unsubs": 0, "abrupt": 0}

    # -- frame handling ---------------------------------------------------------------------
    def handle(self, f):
        if f[0] == MSG:
            s = self.subs.get(f[1])
            if s is None:
                raise AssertionError("MSG for unknown sid %r" % (f,))
            s.got.append((f[2], f[3], hash(f[4])))
        elif f[0] == ACK:
            t_send, topic, payload = self.pending_acks.pop(f[1])
            with self.ledger.lock:
                self.ledger.acked[(topic, f[2])] = (hash(payload), t_send, now(), self.n)
        elif f[0] == ERR:
            raise AssertionError("unexpected ERR %r" % (f,))

    def sync(self):
        self.c.send(PING, 777)
        while True:
            f = self.c.next(timeout=20)
            if f[0] == PONG and f[1] == 777:
                return
            self.handle(f)

    # -- actions ------------------------------------------------------------------------------
    def connect(self):
        self.echo = self.rnd.random() < 0.8
        transport = self.rnd.choice(("tcp", "ws"))  # every transport, mixed on the same topics
        self.c = connect_any(transport, self.broker, name="soak%d" % self.n, echo=self.echo)
        if self.c.next(timeout=10)[0] != WELCOME:
            raise AssertionError("no WELCOME")
        self.subs = {}
        self.stats[transport] += 1

    def subscribe(self):
        pattern = self.rnd.choice(PATTERNS)
        queue = "qg" if self.rnd.random() < 0.15 else None
        s = Sub(self.n, self.next_sid, pattern, queue, self.echo)
        self.next_sid += 1
        self.subs[s.sid] = s
        if queue:
            self.c.send(SUB, s.sid, pattern, {"queue": queue})
        else:
            self.c.send(SUB, s.sid, pattern)
        self.sync()
        s.start = now()
        with self.ledger.lock:
            self.ledger.subs.append(s)
        self.stats["subs"] += 1

    def unsubscribe(self):
        if not self.subs:
            return
        s = self.subs[self.rnd.choice(list(self.subs))]
        s.end = now()
        self.sync()
        self.c.send(UNSUB, s.sid)
        self.sync()
        del self.subs[s.sid]
        self.stats["unsubs"] += 1

    def publish(self):
        for _ in range(self.rnd.randint(1, 20)):
            topic = self.rnd.choice(TOPICS)
            self.counter += 1
            payload = msgpack.packb([self.n, self.counter]) + b"x" * self.rnd.randint(0, 600)
            with self.ledger.lock:
                self.ledger.sent[hash(payload)] = topic
            self.pending_acks[self.counter] = (now(), topic, payload)
            self.c.pub(topic, payload, ack=self.counter)
            self.stats["pubs"] += 1
        while self.pending_acks:
            self.handle(self.c.next(timeout=20))

    def disconnect(self, abrupt):
        if abrupt:
            # Mid-stream: publish without waiting and vanish. Nothing is promised for these.
            for _ in range(self.rnd.randint(0, 5)):
                self.counter += 1
                payload = msgpack.packb([self.n, self.counter])
                with self.ledger.lock:
                    self.ledger.sent[hash(payload)] = "soak.t0"
                self.c.pub("soak.t0", payload)
            self.stats["abrupt"] += 1
        else:
            t = now()
            for s in self.subs.values():
                s.end = t
            self.sync()
        self.pending_acks.clear()
        self.c.close()
        self.c = None

    def run(self):
        try:
            while now() < self.deadline:
                if self.c is None:
                    self.connect()
                r = self.rnd.random()
                if r < 0.30:
                    self.subscribe()
                elif r < 0.42:
                    self.unsubscribe()
                elif r < 0.90:
                    self.publish()
                elif r < 0.97:
                    self.disconnect(abrupt=False)
                else:
                    self.disconnect(abrupt=True)
                if self.c is not None:
                    self.sync()
                time.sleep(self.rnd.random() * 0.02)
            if self.c is not None:
                self.disconnect(abrupt=False)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.failure = "client %d: %s: %s" % (self.n, type(e).__name__, e)


def run_round(broker, seconds, clients, seed):
    ledger = Ledger()
    deadline = now() + seconds
    threads = [SoakClient(i, broker, ledger, deadline, seed * 1000 + i) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60 * SLOW)
    return ledger, threads


def check(ledger):
    """Returns a list of invariant violations (empty: all good) and the number of checks."""
    bad = []
    checked = 0
    groups = {}
    by_topic = {}  # topic -> [(t_send, seq, t_ack, publisher)] sorted by t_send
    for (topic, seq), (_, t_send, t_ack, publisher) in ledger.acked.items():
        by_topic.setdefault(topic, []).append((t_send, seq, t_ack, publisher))
    for v in by_topic.values():
        v.sort()
    for s in ledger.subs:
        last = {}
        for topic, seq, payload in s.got:
            if not matches(s.pattern, topic):
                bad.append("sid %d %s got non-matching %s" % (s.sid, s.pattern, topic))
            if seq <= last.get(topic, 0):
                bad.append("sub %d/%d %s: %s seq %d after %d (order/dup)" %
                           (s.owner, s.sid, s.pattern, topic, seq, last.get(topic, 0)))
            last[topic] = seq
            if ledger.sent.get(payload) != topic:
                bad.append("corrupt or unknown payload on %s seq %d" % (topic, seq))
            a = ledger.acked.get((topic, seq))
            if a and a[0] != payload:
                bad.append("%s seq %d: payload differs from the acked one" % (topic, seq))
        if s.queue:
            g = groups.setdefault((s.pattern, s.queue), set())
            for topic, seq, _ in s.got:
                if (topic, seq) in g:
                    bad.append("queue group %s/%s: %s seq %d delivered twice" %
                               (s.pattern, s.queue, topic, seq))
                g.add((topic, seq))
            continue
        if s.start is None or s.end is None:
            continue  # abrupt end: only order/integrity are promised
        got = {(t, q) for t, q, _ in s.got}
        for topic in TOPICS:
            if not matches(s.pattern, topic):
                continue
            entries = by_topic.get(topic, [])
            i = bisect.bisect_right(entries, (s.start, float("inf")))
            j = bisect.bisect_left(entries, (s.end,))  # t_ack >= t_send: later ones cannot count
            for t_send, seq, t_ack, publisher in entries[i:j]:
                if t_ack >= s.end:
                    continue
                if publisher == s.owner and not s.echo:
                    continue
                checked += 1
                if (topic, seq) not in got:
                    bad.append("sub %d/%d %s missed acked %s seq %d" %
                               (s.owner, s.sid, s.pattern, topic, seq))
    return bad, checked


class Soak(unittest.TestCase):
    def test_soak(self):
        # A small ASan quarantine, returned to the OS quickly, so RSS means something there too.
        asan = "quarantine_size_mb=4:allocator_release_to_os_interval_ms=200:detect_leaks=1"
        b = Broker("--history-msgs", "16", "--out-hard", "64M", "--out-soft", "32M",
                   "--heartbeat-ms", "5000", env={"ASAN_OPTIONS": asan})
        self.addCleanup(b.stop)
        probe = Client(b.tcp)
        probe.next()
        probe.close()
        time.sleep(0.3)
        base = b.rss_kb()
        rss = []
        totals = {}
        for rnd in range(1, ROUNDS + 1):
            t0 = now()
            ledger, threads = run_round(b, ROUND, CLIENTS, rnd)
            t1 = now()
            failures = [t.failure for t in threads if t.failure]
            self.assertEqual(failures, [])
            self.assertFalse(any(t.is_alive() for t in threads), "a client hung")
            self.assertTrue(b.alive(), "the broker died")
            bad, checked = check(ledger)
            self.assertEqual(bad[:20], [], "%d violations" % len(bad))
            for t in threads:
                for k, v in t.stats.items():
                    totals[k] = totals.get(k, 0) + v
            totals["acked"] = totals.get("acked", 0) + len(ledger.acked)
            totals["delivery checks"] = totals.get("delivery checks", 0) + checked
            totals["deliveries"] = totals.get("deliveries", 0) + sum(len(s.got)
                                                                    for s in ledger.subs)
            del ledger, threads
            time.sleep(1.5)  # closes finish; the allocator settles
            rss.append(b.rss_kb())
            print("soak round %d: load %.1f s, check %.1f s, rss %d KiB" %
                  (rnd, t1 - t0, now() - t1, rss[-1]), file=sys.stderr)
        print("soak: %s; rss KiB: base %d, after each round %s" % (totals, base, rss),
              file=sys.stderr)
        self.assertGreater(totals["delivery checks"], 1000)
        # No growth from one round to the next: nothing leaks per connection, subscription or
        # message. (The first round warms up caches and fills the retained history.)
        self.assertLess(rss[-1] - rss[0], max(8 * 1024, rss[0] // 10))
        # And it came back near its idle baseline once the load stopped (retained history and
        # allocator caches are all that may remain).
        self.assertLess(rss[-1] - base, 32 * 1024)
        self.assertEqual(b.stop(), 0)


if __name__ == "__main__":
    unittest.main()
