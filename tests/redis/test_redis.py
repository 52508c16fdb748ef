#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Several herald nodes on one Redis or a Redis Cluster: delivery, seq, replay, faults.
"""Starts redis-server on a free loopback port (or a 3-master Redis Cluster) and two or
three herald nodes on it.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/redis/test_redis.py -v
Needs redis-server and redis-cli (scripts/deps.sh test); python3-msgpack and the
conformance suite's herald_wire.py. Every process is started here and stopped by pid.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "conformance"))

from herald_wire import (  # noqa: E402
    ACK, E_GAP, E_LIMIT, E_SHUTDOWN, ERR, GAP, MSG, SLOW, TIMEOUT, Broker, Closed, Conn, Timeout,
    WsConn, http_get, msg_opts, msgs)

REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port():
    """A free port P below 55536 whose bus port P + 10000 is free too (Redis Cluster)."""
    for _ in range(200):
        p = random.randint(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair for Redis Cluster")


class RedisServer:
    """redis-server on a free loopback port in a temporary directory, stopped by pid."""

    def __init__(self, *extra, port=None, dir=None):
        self.dir = dir or tempfile.mkdtemp(prefix="herald-redis-")
        self.extra = extra
        self.port = port or free_port()
        self.proc = None
        self.start()

    def start(self):
        args = [REDIS, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--logfile",
                os.path.join(self.dir, "redis.log")] + list(self.extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: " + self.log())
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer: " + self.log())

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                             capture_output=True, text=True, timeout=5 * SLOW)
        return out.stdout.strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as fh:
                return fh.read()[-3000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three redis-server masters with --cluster-enabled on free loopback ports, joined with
    redis-cli --cluster create; stopped by pid."""

    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="herald-rcluster-")
        self.servers = []
        try:
            for i in range(n):
                d = os.path.join(self.dir, str(i))
                os.mkdir(d)
                self.servers.append(RedisServer("--cluster-enabled", "yes",
                                                "--cluster-config-file", "nodes.conf", dir=d,
                                                port=free_cluster_port()))
            out = subprocess.run([REDIS_CLI, "--cluster", "create"] +
                                 ["127.0.0.1:%d" % r.port for r in self.servers] +
                                 ["--cluster-yes"], capture_output=True, text=True,
                                 timeout=30 * SLOW)
            if out.returncode != 0:
                raise RuntimeError("redis-cli --cluster create: " + out.stdout + out.stderr)
            wait_for(lambda: all("cluster_state:ok" in r.cli("CLUSTER", "INFO")
                                 for r in self.servers), timeout=20, what="the cluster")
        except Exception:
            self.cleanup()
            raise

    @property
    def url(self):
        return "redis+cluster://" + ",".join("127.0.0.1:%d" % r.port for r in self.servers[:2])

    def owner(self, key):
        """The server that owns `key`'s slot."""
        slot = int(self.servers[0].cli("CLUSTER", "KEYSLOT", key))
        nodes = self.servers[0].cli("CLUSTER", "NODES").splitlines()
        for line in nodes:
            f = line.split()
            port = int(f[1].split("@")[0].split(":")[1])
            for rng in f[8:]:
                lo, _, hi = rng.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return next(r for r in self.servers if r.port == port)
        raise AssertionError("no owner for slot %d" % slot)

    def cli(self, *args):
        return self.servers[0].cli(*args)

    def cleanup(self):
        for r in self.servers:
            r.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def metrics(node):
    status, _, body = http_get(node.ws_port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m and not m.group(2):
            out[m.group(1)] = float(m.group(3))
    return out


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def check_seen_or_gapped(test, sub, acked, timeout=10.0):
    """Reads `sub` until it saw the last acked seq: every acked seq arrived (in order, once) or
    a GAP named it. Returns the seqs seen."""
    seen, covered, deadline = [], set(), time.monotonic() + timeout * SLOW
    while (not seen or seen[-1] < acked[-1]) and time.monotonic() < deadline:
        try:
            f = sub.recv(0.5)
        except Timeout:
            continue
        if f[0] == MSG:
            seen.append(f[3])
        elif f[0] == GAP:
            covered.update(range(f[3], f[4] + 1))
    test.assertEqual(seen, sorted(set(seen)))  # in order, no duplicate
    covered.update(seen)
    test.assertEqual([q for q in acked if q not in covered], [])  # nothing lost silently
    return seen


class Nodes(unittest.TestCase):
    """A Redis and N herald nodes for the whole class; topics unique per test."""

    N = 3
    REDIS_ARGS = ()
    PREFIX = "ht"
    _n = 0

    @classmethod
    def make_redis(cls):
        return RedisServer(*cls.REDIS_ARGS)

    @classmethod
    def setUpClass(cls):
        if not REDIS or not REDIS_CLI:
            raise unittest.SkipTest("redis-server is not installed (scripts/deps.sh test)")
        cls.redis = cls.make_redis()
        cls.prefix = "%s%d:" % (cls.PREFIX, os.getpid())
        cls.nodes = []
        try:
            for _ in range(cls.N):
                cls.nodes.append(cls.node())
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def node(cls, url=None):
        return Broker("--engine", url or cls.redis.url, "--redis-prefix", cls.prefix)

    @classmethod
    def tearDownClass(cls):
        logs = []
        for b in cls.nodes:
            rc = b.stop()
            if rc != 0:
                logs.append("node exited with %s:\n%s" % (rc, b.log_text()))
            b.cleanup()
        cls.redis.cleanup()
        assert not logs, "\n".join(logs)

    def setUp(self):
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        for b in self.nodes:
            self.assertTrue(b.alive(), b.log_text())

    def conn(self, k, ws=False, **hello):
        b = self.nodes[k]
        c = WsConn(b.ws_port) if ws else Conn(b.port)
        c.hello(**hello)
        self.conns.append(c)
        return c

    def topic(self, prefix="t"):
        Nodes._n += 1
        return "%s.%d.%d" % (prefix, os.getpid(), Nodes._n)


class CrossNode(Nodes):
    def test_one_epoch_on_every_node(self):
        epochs = {self.conn(k).welcome["epoch"] for k in range(self.N)}
        self.assertEqual(len(epochs), 1)
        self.assertEqual(self.redis.cli("GET", self.prefix + "epoch"), epochs.pop())

    def test_delivery_across_nodes_on_both_transports(self):
        base = self.topic("room")
        tcp = self.conn(0)
        ws = self.conn(1, ws=True)
        tcp.sub(1, base + ".*")
        ws.sub(2, base + ".a")
        ws.sub(3, base + ".>")
        for c in (tcp, ws):
            self.assertEqual(c.sync(), [])
        p2, p0 = self.conn(2), self.conn(0)
        for i in range(10):
            p2.pub(base + ".a", b"two%d" % i)
            p0.pub(base + ".a", b"zero%d" % i)
        p2.sync()
        p0.sync()
        got = msgs(tcp, 20)
        self.assertEqual([f[3] for f in got], list(range(1, 21)))  # seq order across nodes
        self.assertEqual(sorted(f[4] for f in got),
                         sorted([b"two%d" % i for i in range(10)] + [b"zero%d" % i for i in range(10)]))
        got = msgs(ws, 40)
        self.assertEqual(sorted((f[1], f[3]) for f in got),
                         sorted([(2, s) for s in range(1, 21)] + [(3, s) for s in range(1, 21)]))
        for sid in (2, 3):
            self.assertEqual([f[3] for f in got if f[1] == sid], list(range(1, 21)))
        self.assertEqual(tcp.poll(0.2), [])  # no second copy of anything

    def test_own_message_comes_before_the_ack_and_pong(self):
        t = self.topic("own")
        c = self.conn(0)
        c.sub(1, t)
        c.sub(2, t.rsplit(".", 1)[0] + ".*")
        c.pub(t, b"x", ack=5)  # no PING between: SUB, SUB, PUB, PING in one go
        frames = c.sync()
        self.assertEqual([(f[0], f[1]) for f in frames], [(MSG, 1), (MSG, 2), (ACK, 5)])

    def test_seq_contiguous_with_publishers_on_every_node(self):
        t = self.topic()
        sub = self.conn(1)
        sub.sub(1, t)
        sub.sync()
        pubs = [self.conn(k) for k in range(self.N)]
        n = 150
        for i in range(n):
            for p in pubs:
                p.pub(t, b"%d" % i, ack=i)
        seqs = []
        for p in pubs:
            acks = [f for f in p.sync(timeout=TIMEOUT * 2) if f[0] == ACK]
            self.assertEqual([f[1] for f in acks], list(range(n)))  # acks in frame order
            mine = [f[2] for f in acks]
            self.assertEqual(mine, sorted(mine))  # one publisher's messages keep their order
            seqs += mine
        self.assertEqual(sorted(seqs), list(range(1, n * self.N + 1)))  # no hole, no duplicate
        got = msgs(sub, n * self.N, timeout=TIMEOUT * 2)
        self.assertEqual([f[3] for f in got], list(range(1, n * self.N + 1)))

    def test_since_last_and_epoch_on_another_node(self):
        t = self.topic()
        pub = self.conn(0)
        for i in range(1, 11):
            pub.pub(t, b"m%d" % i, ack=i)
        self.assertEqual([f[2] for f in pub.sync()], list(range(1, 11)))
        epoch = pub.welcome["epoch"]

        c = self.conn(1)
        c.sub(1, t, since=4, epoch=epoch)
        got = msgs(c, 6, before=c.sync())
        self.assertEqual([(f[3], f[4]) for f in got], [(s, b"m%d" % s) for s in range(5, 11)])
        self.assertTrue(all(msg_opts(f).get("replay") for f in got))
        self.conn(2).pub(t, b"m11")
        live = msgs(c, 1)
        self.assertEqual(live[0][3], 11)
        self.assertFalse(msg_opts(live[0]).get("replay"))

        d = self.conn(2)
        d.sub(1, t, last=3)
        self.assertEqual([f[3] for f in msgs(d, 3, before=d.sync())], [9, 10, 11])

        e = self.conn(1)
        e.sub(7, t, since=10, epoch="not-the-epoch")
        frames = e.sync()
        self.assertEqual(frames[0][:2], [ERR, E_GAP])
        self.assertEqual(frames[0][3], 7)
        self.assertEqual([f[3] for f in frames[1:] + msgs(e, 11 - len(frames[1:]), 1.0)],
                         list(range(1, 12)))

    def test_since_beyond_history_gets_err10(self):
        t = self.topic()
        p = self.conn(0)
        for i in range(140):  # history-msgs is 128
            p.pub(t, b"x")
        p.sync()
        c = self.conn(2)
        c.sub(3, t, since=2)
        frames = c.sync()
        self.assertEqual(frames[0][:2], [ERR, E_GAP])
        got = [f[3] for f in frames[1:]] + [f[3] for f in msgs(c, 200, 0.5)]
        self.assertEqual(got, list(range(13, 141)))

    def test_wildcard_replay_across_nodes(self):
        base = self.topic("w")
        p = self.conn(0)
        for k in ("a", "b", "c"):
            for i in range(3):
                p.pub("%s.%s.x" % (base, k), b"%s%d" % (k.encode(), i))
        p.pub(base + ".a.y", b"no")
        p.sync()
        c = self.conn(1)
        c.sub(1, base + ".*.x", since=1)
        got = msgs(c, 6, 2.0, before=c.sync())
        self.assertEqual(sorted((f[2], f[3]) for f in got),
                         sorted(("%s.%s.x" % (base, k), s) for k in "abc" for s in (2, 3)))
        self.assertEqual(msgs(c, 1, 0.3), [])

    def test_queue_groups_exactly_one_across_nodes(self):
        base = self.topic("jobs")
        members = [self.conn(k % self.N) for k in range(self.N * 2)]
        for c in members:
            c.sub(9, base + ".*", queue="q")  # a wildcard group
            c.sub(8, base + ".3", queue="q")  # an exact one
            c.sync()
        plain = self.conn(1)
        plain.sub(1, base + ".*")
        plain.sync()
        n = 120
        pubs = [self.conn(k) for k in range(self.N)]
        for i in range(n):
            pubs[i % self.N].pub("%s.%d" % (base, i % 12), b"%d" % i)
        for p in pubs:
            p.sync()
        self.assertEqual(len(msgs(plain, n)), n)
        got = [[(f[1], f[4]) for f in c.poll(0.5) if f[0] == MSG] for c in members]
        for sid, want in ((9, [b"%d" % i for i in range(n)]),
                          (8, [b"%d" % i for i in range(n) if i % 12 == 3])):
            payloads = sorted(p for g in got for s_, p in g if s_ == sid)
            self.assertEqual(payloads, sorted(want))  # each exactly once, across the nodes
        per_node = [sum(len([x for x in got[i] if x[0] == 9]) for i in range(len(members))
                        if i % self.N == k) for k in range(self.N)]
        self.assertTrue(all(per_node), per_node)  # every node's members took some
        # A node whose members all leave stops being chosen.
        for i, c in enumerate(members):
            if i % self.N == 0:
                c.unsub(9)
                c.sync()
        for i in range(30):
            pubs[1].pub("%s.%d" % (base, i % 12), b"late%d" % i)
        pubs[1].sync()
        late = [[f[4] for f in c.poll(0.5) if f[0] == MSG and f[1] == 9] for c in members]
        self.assertEqual(sorted(p for g in late for p in g), sorted(b"late%d" % i for i in range(30)))
        self.assertEqual([p for i, g in enumerate(late) if i % self.N == 0 for p in g], [])

    def test_echo_false_is_per_node(self):
        t = self.topic()
        me = self.conn(0, echo=False)
        me.sub(1, t)
        me.sync()
        # A client on another node with the same client id must still get the message.
        twin = None
        for _ in range(60):
            c = self.conn(1)
            if c.welcome["client_id"] == me.welcome["client_id"]:
                twin = c
                break
        other = twin or self.conn(1)
        other.sub(1, t)
        other.sync()
        me.pub(t, b"hello", ack=1)
        self.assertEqual(me.sync()[0][:3], [ACK, 1, 1])
        self.assertEqual([f[4] for f in msgs(other, 1)], [b"hello"])
        self.assertEqual(msgs(me, 1, 0.3), [])

    def test_history_survives_a_herald_restart(self):
        t = self.topic()
        a = self.node()
        try:
            c = Conn(a.port)
            epoch = c.hello()["epoch"]
            for i in range(5):
                c.pub(t, b"%d" % i)
            c.sync()
            c.close()
        finally:
            self.assertEqual(a.stop(), 0)
            a.cleanup()
        b = self.node()
        try:
            c = Conn(b.port)
            self.assertEqual(c.hello()["epoch"], epoch)
            c.sub(1, t, since=0, epoch=epoch)
            self.assertEqual([f[3] for f in msgs(c, 5, before=c.sync())], [1, 2, 3, 4, 5])
            c.pub(t, b"next", ack=9)
            self.assertEqual([f[2] for f in c.sync() if f[0] == ACK], [6])
            c.close()
        finally:
            self.assertEqual(b.stop(), 0)
            b.cleanup()

    def test_subscriptions_in_redis_follow_local_interest(self):
        t = self.topic()
        chan = "%s{%s}" % (self.prefix, t)
        c = self.conn(2)
        self.assertEqual(self.redis.cli("PUBSUB", "NUMSUB", chan).split()[-1], "0")
        c.sub(1, t)
        c.sub(2, t)
        c.sync()
        self.assertEqual(self.redis.cli("PUBSUB", "NUMSUB", chan).split()[-1], "1")
        c.unsub(1)
        c.sync()
        self.assertEqual(self.redis.cli("PUBSUB", "NUMSUB", chan).split()[-1], "1")
        c.unsub(2)
        c.sync()
        wait_for(lambda: self.redis.cli("PUBSUB", "NUMSUB", chan).split()[-1] == "0",
                 what="the node to unsubscribe")

    def test_metrics_show_the_engine(self):
        m = metrics(self.nodes[0])
        self.assertEqual(m["herald_engine_up"], 1)
        self.assertEqual(m["herald_engine_resets_total"], 0)
        self.assertIn("herald_engine_lag_seconds", m)


class ClusterCrossNode(CrossNode):
    """The same promises on a 3-master Redis Cluster: sharded pub/sub, per-shard epochs."""

    PREFIX = "hc"

    @classmethod
    def make_redis(cls):
        return RedisCluster()

    def test_one_epoch_on_every_node(self):
        epochs = {self.conn(k).welcome["epoch"] for k in range(self.N)}
        self.assertEqual(len(epochs), 1)
        # Every shard keeps an epoch of its own; the nodes' is made of them.
        shard_epochs = [r.cli("KEYS", self.prefix + "*epoch") for r in self.redis.servers]
        self.assertTrue(all(shard_epochs), shard_epochs)

    def test_subscriptions_in_redis_follow_local_interest(self):
        t = self.topic()
        chan = "%s{%s}" % (self.prefix, t)
        owner = self.redis.owner(chan)
        others = [r for r in self.redis.servers if r is not owner]
        c = self.conn(2)
        c.sub(1, t)
        c.sync()
        # Sharded pub/sub: the subscription is on the shard that owns the topic, nowhere else.
        self.assertEqual(owner.cli("PUBSUB", "SHARDNUMSUB", chan).split()[-1], "1")
        for r in others:
            self.assertEqual(r.cli("PUBSUB", "SHARDNUMSUB", chan).split()[-1], "0")
            self.assertEqual(r.cli("PUBSUB", "NUMSUB", chan).split()[-1], "0")
        p = self.conn(0)
        p.pub(t, b"x", ack=1)
        self.assertEqual(p.sync()[0][:3], [ACK, 1, 1])
        self.assertEqual([f[4] for f in msgs(c, 1)], [b"x"])
        self.assertEqual(owner.cli("GET", "%s{%s}:s" % (self.prefix, t)), "1")
        c.unsub(1)
        c.sync()
        wait_for(lambda: owner.cli("PUBSUB", "SHARDNUMSUB", chan).split()[-1] == "0",
                 what="the node to unsubscribe")

    def test_topics_spread_over_every_shard(self):
        base = self.topic("spread")
        topics = ["%s.%d" % (base, i) for i in range(24)]
        owners = {self.redis.owner("%s{%s}" % (self.prefix, t)).port for t in topics}
        self.assertEqual(len(owners), 3)  # the test covers all three shards
        sub = self.conn(1)
        for i, t in enumerate(topics):
            sub.sub(i + 1, t)
        sub.sync()
        p = self.conn(0)
        for t in topics:
            for _ in range(3):
                p.pub(t, b"m")
        p.sync()
        got = msgs(sub, 72)
        for t in topics:
            self.assertEqual([f[3] for f in got if f[2] == t], [1, 2, 3])


class ClusterFaults(unittest.TestCase):
    """A fresh 3-master Redis Cluster and two nodes per test; a subscriber on the first node
    and a publisher on the second that has published seqs 1..5 of `topic`."""

    def setUp(self):
        if not REDIS or not REDIS_CLI:
            self.skipTest("redis-server is not installed (scripts/deps.sh test)")
        self.rc = RedisCluster()
        self.nodes = []
        self.conns = []
        self.nodes = [Broker("--engine", self.rc.url, "--redis-prefix", "hx:") for _ in range(2)]
        self.topic = "fault.topic"
        self.key = "hx:{%s}" % self.topic
        self.sub = self.conn(0)
        self.epoch = self.sub.welcome["epoch"]
        self.sub.sub(1, self.topic)
        self.sub.sync()
        self.pub = self.conn(1)
        for i in range(5):
            self.pub.pub(self.topic, b"%d" % i, ack=i)
        self.assertEqual([f[2] for f in self.pub.sync()], [1, 2, 3, 4, 5])
        self.assertEqual([f[3] for f in msgs(self.sub, 5)], [1, 2, 3, 4, 5])

    def tearDown(self):
        for c in self.conns:
            c.close()
        logs = []
        for b in self.nodes:
            code = b.stop()
            if code != 0:
                logs.append(b.log_text())
            b.cleanup()
        self.rc.cleanup()
        self.assertEqual(logs, [])

    def conn(self, k):
        c = Conn(self.nodes[k].port)
        c.hello()
        self.conns.append(c)
        return c

    def test_shard_that_lost_its_data_changes_the_epoch(self):
        owner = self.rc.owner(self.key)
        owner.kill()
        owner.start()  # same port and directory: it rejoins with its slots, no data
        # The subscriber is told to reconnect; afterwards every node has a new epoch.
        frames = self.sub.wait_closed(timeout=20 * SLOW)
        self.assertEqual(frames[-1][:2], [ERR, E_SHUTDOWN])
        wait_for(lambda: all(metrics(b)["herald_engine_up"] == 1 for b in self.nodes),
                 timeout=20, what="the nodes to reconnect")
        epochs = {self.conn(k).welcome["epoch"] for k in range(2)}
        self.assertEqual(len(epochs), 1)
        self.assertNotIn(self.epoch, epochs)

    def test_nodes_follow_a_moved_slot(self):
        t, key, rc, pub, sub = self.topic, self.key, self.rc, self.pub, self.sub
        src = rc.owner(key)
        dst = next(r for r in rc.servers if r is not src)
        slot = rc.cli("CLUSTER", "KEYSLOT", key)
        src_id, dst_id = src.cli("CLUSTER", "MYID"), dst.cli("CLUSTER", "MYID")
        dst.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        keys = src.cli("CLUSTER", "GETKEYSINSLOT", slot, "100").split()
        self.assertIn(key + ":s", keys)
        src.cli("MIGRATE", "127.0.0.1", str(dst.port), "", "0", "5000", "KEYS", *keys)
        for r in rc.servers:
            r.cli("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        # Publishes that meet the move may fail (ERR 7); then the nodes follow the slot.
        acked, deadline = [], time.monotonic() + 20 * SLOW
        while len(acked) < 5 and time.monotonic() < deadline:
            pub.pub(t, b"after", ack=100)
            f = pub.sync(timeout=10 * SLOW)[0]
            if f[0] == ACK:
                acked.append(f[2])
            else:
                self.assertEqual(f[:2], [ERR, E_LIMIT])
                time.sleep(0.2)
        self.assertEqual(len(acked), 5)
        self.assertEqual(acked, list(range(acked[0], acked[0] + 5)))
        self.assertGreaterEqual(acked[0], 6)  # the seq moved with the slot
        self.assertEqual(dst.cli("GET", key + ":s"), str(acked[-1]))
        seen = check_seen_or_gapped(self, sub, acked)
        self.assertEqual(seen[-1], acked[-1])  # the subscriber follows the slot too
        for b in self.nodes:
            self.assertIn("reading the slot map again", b.log_text())


class Workers(Nodes):
    """--workers 2 with the Redis engine: every worker is a node of its own."""

    N = 2

    @classmethod
    def node(cls, url=None):
        return Broker("--engine", url or cls.redis.url, "--redis-prefix", cls.prefix,
                      "--workers", "2")

    def on_worker(self, k, w):
        for _ in range(200):
            c = Conn(self.nodes[k].port)
            if c.hello()["worker"] == w:
                self.conns.append(c)
                return c
            c.close()
        self.fail("no connection landed on worker %d" % w)

    def test_workers_and_nodes_share_one_topic_space(self):
        t = self.topic()
        subs = [self.on_worker(k, w) for k in range(2) for w in range(2)]
        for c in subs:
            c.sub(1, t)
            c.sync()
        self.assertEqual(len({c.welcome["epoch"] for c in subs}), 1)
        pubs = [self.on_worker(k, w) for k in range(2) for w in range(2)]
        for i in range(25):
            for p in pubs:
                p.pub(t, b"%d" % i, ack=i)
        seqs = sorted(f[2] for p in pubs for f in p.sync() if f[0] == ACK)
        self.assertEqual(seqs, list(range(1, 101)))
        for c in subs:
            self.assertEqual([f[3] for f in msgs(c, 100)], list(range(1, 101)))
        # Both workers are connected (another worker's numbers are up to 250 ms old).
        wait_for(lambda: metrics(self.nodes[0])["herald_engine_up"] == 2, what="engine_up 2")


class Faults(Nodes):
    """A node locked out of Redis misses messages: its subscribers get GAP frames."""

    N = 2

    @classmethod
    def setUpClass(cls):
        if not REDIS or not REDIS_CLI:
            raise unittest.SkipTest("redis-server is not installed (scripts/deps.sh test)")
        cls.redis = RedisServer()
        cls.redis.cli("ACL", "SETUSER", "nodea", "on", ">pw", "~*", "&*", "+@all")
        cls.prefix = "hf%d:" % os.getpid()
        cls.nodes = [cls.node("redis://nodea:pw@127.0.0.1:%d" % cls.redis.port), cls.node()]

    def lock_out_a(self):
        self.redis.cli("ACL", "SETUSER", "nodea", "off")
        self.redis.cli("CLIENT", "KILL", "USER", "nodea")
        wait_for(lambda: metrics(self.nodes[0])["herald_engine_up"] == 0, what="node a down")

    def let_in_a(self):
        self.redis.cli("ACL", "SETUSER", "nodea", "on")
        wait_for(lambda: metrics(self.nodes[0])["herald_engine_up"] == 1, what="node a up")

    def test_gap_for_messages_a_node_missed(self):
        t = self.topic()
        sub = self.conn(0)
        sub.sub(4, t)
        sub.sync()
        pub = self.conn(1)
        pub.pub(t, b"1")
        self.assertEqual([f[3] for f in msgs(sub, 1)], [1])
        before = metrics(self.nodes[0])
        self.lock_out_a()
        try:
            for i in range(2, 5):
                pub.pub(t, b"%d" % i, ack=i)
            self.assertEqual([f[2] for f in pub.sync()], [2, 3, 4])
            # Meanwhile a publish on the locked-out node waits for Redis, then is sequenced.
            pub_a = self.conn(0)
            pub_a.pub(t, b"from a", ack=77)
            self.assertEqual(pub_a.poll(0.3), [])
        finally:
            self.let_in_a()
        self.assertEqual(pub_a.sync(timeout=10 * SLOW)[0][:3], [ACK, 77, 5])
        pub.pub(t, b"6")
        frames = []
        while len([f for f in frames if f[0] == MSG]) < 2:
            frames.append(sub.recv())
        self.assertEqual(frames[0], [GAP, 4, t, 2, 4])
        self.assertEqual([f[3] for f in frames[1:]], [5, 6])
        after = metrics(self.nodes[0])
        self.assertGreater(after["herald_engine_reconnects_total"],
                           before["herald_engine_reconnects_total"])
        self.assertGreaterEqual(after["herald_engine_gaps_total"], 1)

    def test_resume_on_the_other_node_meanwhile(self):
        t = self.topic()
        pub = self.conn(0)
        pub.pub(t, b"1", ack=1)
        pub.sync()
        self.lock_out_a()
        try:
            b = self.conn(1)  # node b still serves history and live traffic
            b.sub(1, t, since=0)
            self.assertEqual([f[3] for f in msgs(b, 1, before=b.sync())], [1])
        finally:
            self.let_in_a()


class Restart(unittest.TestCase):
    """Redis restarts in the middle of a publish stream."""

    def setUp(self):
        if not REDIS or not REDIS_CLI:
            self.skipTest("redis-server is not installed (scripts/deps.sh test)")
        self.redis = None
        self.nodes = []
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        for b in self.nodes:
            rc = b.stop()
            log = b.log_text()
            b.cleanup()
            self.assertEqual(rc, 0, log)
        if self.redis:
            self.redis.cleanup()

    def start(self, *redis_args):
        self.redis = RedisServer(*redis_args)
        for _ in range(2):
            self.nodes.append(Broker("--engine", self.redis.url, "--redis-prefix", "hr:"))

    def conn(self, k):
        c = Conn(self.nodes[k].port)
        c.hello()
        self.conns.append(c)
        return c

    def stream(self, pub, t, stop, acks, errs):
        """Publishes with acks until `stop` is set; records acked seqs and ERRs."""
        i = 0
        while not stop.is_set():
            i += 1
            pub.pub(t, b"%d" % i, ack=i)
            try:
                for f in pub.sync(timeout=15 * SLOW):
                    if f[0] == ACK:
                        acks.append(f[2])
                    elif f[0] == ERR:
                        errs.append(f)
            except (Timeout, Closed):
                errs.append("no answer")
                return
            time.sleep(0.005)

    def stream_across_restart(self, sub, t):
        """`sub` subscribes to t; a publisher on the other node streams while Redis is killed
        and started again, until 20 more publishes were acked. Returns (acks, errs)."""
        sub.sub(1, t)
        sub.sync()
        pub = self.conn(1)
        stop, acks, errs = threading.Event(), [], []
        th = threading.Thread(target=self.stream, args=(pub, t, stop, acks, errs))
        th.start()
        try:
            wait_for(lambda: len(acks) > 20, what="a stream")
            self.redis.kill()
            time.sleep(0.3)
            self.redis.start()
            n = len(acks)
            wait_for(lambda: len(acks) > n + 20, timeout=15, what="the stream to resume")
        finally:
            stop.set()
            th.join(30)
        return acks, errs

    def test_restart_with_persistence_keeps_seq_and_reports_holes(self):
        self.start("--appendonly", "yes", "--appendfsync", "always")
        t = "stream.persist"
        sub = self.conn(0)
        epoch = sub.welcome["epoch"]
        acks, errs = self.stream_across_restart(sub, t)
        self.assertEqual(acks, sorted(acks))
        self.assertEqual(len(set(acks)), len(acks))
        self.assertTrue(all(e == "no answer" or e[1] == E_LIMIT for e in errs), errs)
        self.assertNotIn("no answer", errs)
        # The subscriber saw every acked seq, or a GAP naming it; never one out of order.
        check_seen_or_gapped(self, sub, acks, timeout=5)
        self.assertEqual(self.conn(1).welcome["epoch"], epoch)  # Redis kept its data

    def test_restart_without_persistence_changes_epoch(self):
        self.start("--appendonly", "no")
        t = "stream.volatile"
        sub = self.conn(0)
        old = sub.welcome["epoch"]
        acks, errs = self.stream_across_restart(sub, t)
        self.assertNotIn("no answer", errs)
        # The live subscriber is told to reconnect: its seq numbers would go back.
        frames = sub.wait_closed(timeout=10 * SLOW)
        last_seen = max(f[3] for f in frames if f[0] == MSG)
        self.assertEqual(frames[-1][:2], [ERR, E_SHUTDOWN])
        again = self.conn(0)
        self.assertNotEqual(again.welcome["epoch"], old)
        again.sub(1, t, since=last_seen, epoch=old)
        frames = again.sync()
        self.assertEqual(frames[0][:2], [ERR, E_GAP])
        replayed = [f[3] for f in frames[1:]] + [f[3] for f in msgs(again, 500, 0.5)]
        self.assertEqual(replayed[:1], [1])  # the new epoch's history, from its start
        self.assertEqual(replayed, sorted(replayed))


class Startup(unittest.TestCase):
    def test_bad_engine_settings_are_refused(self):
        for value, words in (("redis://", "no host"), ("redis://h:0", "bad port"),
                             ("mem", "neither"), ("redis://h:1/x", "database"),
                             ("redis+cluster://h:1", "IP:PORT"),
                             ("redis+cluster://127.0.0.1:1/3", "IP:PORT")):
            out = subprocess.run([os.environ["HERALD_BIN"], "--workers", "1", "--port", "0",
                                  "--ws-port", "0", "--engine", value],
                                 capture_output=True, text=True, timeout=10 * SLOW)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertIn("setting 'engine'", out.stderr)
            self.assertIn(words, out.stderr)
        out = subprocess.run([os.environ["HERALD_BIN"], "--workers", "1", "--port", "0",
                              "--ws-port", "0", "--engine", "redis://127.0.0.1:1",
                              "--redis-prefix", "a{b}:"],
                             capture_output=True, text=True, timeout=10 * SLOW)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("setting 'redis-prefix'", out.stderr)

    def test_a_node_that_stops_leaves_its_queue_groups(self):
        if not REDIS or not REDIS_CLI:
            self.skipTest("redis-server is not installed")
        r = RedisServer()
        a = b = None
        try:
            a, b = (Broker("--engine", r.url, "--redis-prefix", "hl:") for _ in range(2))
            ma, mb = Conn(a.port), Conn(b.port)
            for m in (ma, mb):
                m.hello()
                m.sub(1, "work.t", queue="q")
                m.sync()
            self.assertEqual(a.stop(), 0, a.log_text())  # graceful: ERR 9 to its clients
            p = Conn(b.port)
            p.hello()
            for i in range(20):
                p.pub("work.t", b"%d" % i)
            p.sync()
            self.assertEqual(len(msgs(mb, 20)), 20)  # none given to the node that left
            p.close()
            mb.close()
            ma.close()
        finally:
            for x in (a, b):
                if x:
                    self.assertEqual(x.stop(), 0, x.log_text())
                    x.cleanup()
            r.cleanup()

    def test_a_redis_that_stops_answering_is_left(self):
        if not REDIS or not REDIS_CLI:
            self.skipTest("redis-server is not installed")
        r = RedisServer()
        b = Broker("--engine", r.url, "--redis-prefix", "hw:")
        try:
            c = Conn(b.port)
            c.hello()
            c.pub("w.t", b"1", ack=1)
            self.assertEqual(c.sync()[0][:3], [ACK, 1, 1])
            r.proc.send_signal(signal.SIGSTOP)  # connections stay open, nothing answers
            try:
                c.pub("w.t", b"2", ack=2)
                t0 = time.monotonic()
                f = c.sync(timeout=30 * SLOW)[0]
                # The watchdog gives up on it (10 to 15 s) instead of waiting for ever.
                self.assertEqual(f[:2], [ERR, E_LIMIT])
                self.assertEqual(f[3], 2)
                self.assertLess(time.monotonic() - t0, 25 * SLOW)
            finally:
                r.proc.send_signal(signal.SIGCONT)
            wait_for(lambda: metrics(b)["herald_engine_up"] == 1, timeout=20, what="Redis again")
            c.pub("w.t", b"3", ack=3)
            f = c.sync(timeout=10 * SLOW)[0]
            self.assertEqual(f[:2], [ACK, 3])
            self.assertIn(f[2], (2, 3))  # the one that met the stall may have been sequenced
            c.close()
        finally:
            self.assertEqual(b.stop(), 0, b.log_text())
            b.cleanup()
            r.cleanup()

    def with_late_redis(self, body, *args):
        """Runs body(node, conn, start_redis) on a node whose Redis is not started yet."""
        if not REDIS or not REDIS_CLI:
            self.skipTest("redis-server is not installed")
        port = free_port()
        b = Broker("--engine", "redis://127.0.0.1:%d" % port, *args)
        servers = []

        def start_redis():
            servers.append(RedisServer(port=port))
            return servers[0]
        try:
            c = Conn(b.port)
            c.hello()
            body(b, c, start_redis)
            c.close()
        finally:
            self.assertEqual(b.stop(), 0, b.log_text())
            b.cleanup()
            for r in servers:
                r.cleanup()

    def test_what_waits_for_redis_is_bounded(self):
        def body(b, c, start_redis):
            for i in range(40):
                c.pub("q.t", b"x" * 200, ack=i)
            # Answers keep frame order: the refusals wait behind the publishes that wait.
            self.assertEqual(c.poll(0.5), [])
            start_redis()
            answers = c.sync(timeout=15 * SLOW)
            self.assertEqual([f[1] if f[0] == ACK else f[3] for f in answers], list(range(40)))
            kinds = [f[0] for f in answers]
            acked = kinds.count(ACK)
            self.assertEqual(kinds, [ACK] * acked + [ERR] * (40 - acked))
            self.assertGreater(40 - acked, 20)  # 4 KiB holds about a dozen such publishes
            self.assertTrue(all(f[1] == E_LIMIT and "redis-queue-max" in f[2]
                                for f in answers[acked:]))
            self.assertEqual([f[2] for f in answers[:acked]], list(range(1, acked + 1)))
        self.with_late_redis(body, "--redis-queue-max", "4K")

    def test_node_starts_before_redis_and_catches_up(self):
        def body(b, c, start_redis):
            c.pub("early", b"x", ack=1)
            self.assertEqual(c.poll(0.3), [])  # waits for Redis
            r = start_redis()
            f = c.sync(timeout=15 * SLOW)
            self.assertEqual(f[0][:3], [ACK, 1, 1])
            d = Conn(b.port)
            self.assertEqual(d.hello()["epoch"], r.cli("GET", "hs:epoch"))
            d.close()
        self.with_late_redis(body, "--redis-prefix", "hs:")

if __name__ == "__main__":
    unittest.main()
