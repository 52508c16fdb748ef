#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Presence over real sockets: SUB `presence`, `$PRES.<topic>` snapshots and coalesced changes.
"""Checks presence as docs/protocol.md describes it, with a raw client:

- a SUB with `presence: bin` on an exact topic makes the connection a member until UNSUB,
  replacement of the sid or close; one membership per connection and topic;
- `$PRES.<topic>` first delivers a snapshot marked replay, then changes coalesced over
  presence-interval (a join and a leave within one interval cancel out);
- above presence-list-max only the count travels;
- permission to watch is permission to subscribe to the topic; presence on a pattern, on a
  `$` topic, or larger than 1 KiB is ERR 12; publishing to `$PRES.` is ERR 4.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/conformance/test_presence.py -v
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_wire import (  # noqa: E402
    ERR, MSG, SLOW, Broker, Conn, WsConn, msg_opts)

E_PERM, E_TOPIC, E_OPTION = 4, 5, 12

# The suite's single-broker classes assume one worker; Cluster below runs several.
CLUSTER = re.search(r"--workers[= ]+(0|[2-9]|\d\d)", os.environ.get("HERALD_EXTRA_ARGS", ""))
INTERVAL_MS = 150
LIST_MAX = 5


def payload(f):
    return msgpack.unpackb(f[4], raw=False, strict_map_key=False)


@unittest.skipIf(CLUSTER, "these tests count frames of one worker")
class Base(unittest.TestCase):
    args = ()

    @classmethod
    def setUpClass(cls):
        cls.b = Broker("--presence-interval", str(INTERVAL_MS), *cls.args)
        cls.rooms = 0

    @classmethod
    def tearDownClass(cls):
        rc = cls.b.stop()
        cls.b.cleanup()
        assert rc == 0, "broker exited with %s" % rc

    def room(self):
        type(self).rooms += 1
        return "room%d.%s" % (type(self).rooms, self._testMethodName)

    def conn(self, **hello):
        c = self.b.connect(hello_opts=hello)
        self.addCleanup(c.close)
        return c

    def member(self, topic, info, sid=1, c=None):
        c = c or self.conn()
        c.sub(sid, topic, presence=info)
        self.assertEqual(c.sync(), [])
        return c

    def watch(self, topic, sid=9, c=None):
        """Subscribes to $PRES.<topic>; returns (conn, snapshot frame, decoded snapshot)."""
        c = c or self.conn()
        c.sub(sid, "$PRES." + topic)
        f = c.expect(MSG)
        self.assertEqual(f[1], sid)
        self.assertEqual(f[2], "$PRES." + topic)
        self.assertIs(msg_opts(f).get("replay"), True, f)
        return c, f, payload(f)

    def change(self, w, timeout=None):
        f = w.expect(MSG, timeout or 10 * INTERVAL_MS / 1000 * SLOW)
        self.assertNotIn("replay", msg_opts(f))
        return f, payload(f)

    def quiet(self, w, intervals=3):
        frames = w.poll(intervals * INTERVAL_MS / 1000 * SLOW)
        self.assertEqual(frames, [])


class Presence(Base):
    args = ("--presence-list-max", str(LIST_MAX))

    def test_join_leave_unsub_close(self):
        t = self.room()
        w, _, snap = self.watch(t)
        self.assertEqual(snap, {"count": 0, "members": []})
        a = self.member(t, b"alice")
        _, ch = self.change(w)
        self.assertEqual(ch, {"count": 1, "joined": [[a.welcome["client_id"], b"alice"]],
                              "left": []})
        b = self.member(t, b"bob")
        _, ch = self.change(w)
        self.assertEqual(ch["joined"], [[b.welcome["client_id"], b"bob"]])
        self.assertEqual(ch["count"], 2)
        b.unsub(1)
        b.sync()
        _, ch = self.change(w)
        self.assertEqual(ch, {"count": 1, "joined": [], "left": [b.welcome["client_id"]]})
        a.close()
        _, ch = self.change(w)
        self.assertEqual(ch, {"count": 0, "joined": [], "left": [a.welcome["client_id"]]})
        self.quiet(w)

    def test_replacing_the_sid_ends_membership(self):
        t = self.room()
        w, _, _ = self.watch(t)
        a = self.member(t, b"a")
        self.change(w)
        a.sub(1, t)  # the same sid, no presence
        a.sync()
        _, ch = self.change(w)
        self.assertEqual(ch["left"], [a.welcome["client_id"]])
        self.assertEqual(ch["count"], 0)

    def test_one_membership_per_connection_latest_info(self):
        t = self.room()
        w, _, _ = self.watch(t)
        a = self.member(t, b"first", sid=1)
        cid = a.welcome["client_id"]
        self.change(w)
        self.member(t, b"second", sid=2, c=a)
        _, ch = self.change(w)  # the info changed: the member is listed again, not counted twice
        self.assertEqual(ch, {"count": 1, "joined": [[cid, b"second"]], "left": []})
        _, _, snap = self.watch(t)
        self.assertEqual(snap, {"count": 1, "members": [[cid, b"second"]]})
        a.unsub(1)
        a.sync()
        self.quiet(w)  # still a member through sid 2
        a.unsub(2)
        a.sync()
        _, ch = self.change(w)
        self.assertEqual(ch["left"], [cid])

    def test_snapshot_then_changes_in_seq_order(self):
        t = self.room()
        a = self.member(t, b"a")
        b = self.member(t, b"b")
        w, snapf, snap = self.watch(t)
        self.assertEqual(snap["count"], 2)
        self.assertEqual(sorted(snap["members"]), sorted(
            [[a.welcome["client_id"], b"a"], [b.welcome["client_id"], b"b"]]))
        seqs = [snapf[3]]
        c = self.member(t, b"c")
        f, ch = self.change(w)
        seqs.append(f[3])
        self.assertEqual(ch["joined"], [[c.welcome["client_id"], b"c"]])
        a.close()
        f, ch = self.change(w)
        seqs.append(f[3])
        self.assertEqual(ch["left"], [a.welcome["client_id"]])
        self.assertEqual(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2])
        # A second watcher's snapshot carries the seq of the last change.
        _, f2, snap2 = self.watch(t)
        self.assertEqual(f2[3], seqs[-1])
        self.assertEqual(snap2["count"], 2)

    def test_join_then_leave_within_an_interval_cancels(self):
        t = self.room()
        w, _, _ = self.watch(t)
        stay = self.member(t, b"stay")
        self.change(w)
        x = self.conn()
        x.sub(1, t, presence=b"transient")
        x.unsub(1)
        y = self.conn()
        y.sub(1, t, presence=b"joiner")
        x.sync()
        y.sync()
        _, ch = self.change(w)
        self.assertEqual(ch, {"count": 2, "joined": [[y.welcome["client_id"], b"joiner"]],
                              "left": []})
        # Leave then rejoin within an interval: nothing to tell at all.
        stay.unsub(1)
        stay.sub(1, t, presence=b"stay")
        stay.sync()
        self.quiet(w)

    def test_changes_are_paced_by_the_interval(self):
        t = self.room()
        w, _, _ = self.watch(t)
        members = []
        stamps = []
        deadline = time.monotonic() + 6 * INTERVAL_MS / 1000
        while time.monotonic() < deadline:
            members.append(self.member(t, b"m%d" % len(members)))
            time.sleep(INTERVAL_MS / 1000 / 5)
            for f in w.poll(0):
                stamps.append(time.monotonic())
        while True:
            got = w.poll(3 * INTERVAL_MS / 1000 * SLOW)
            if not got:
                break
            stamps += [time.monotonic()] * len(got)
        self.assertGreaterEqual(len(stamps), 2)
        # About 30 joins went out in at most one frame per interval (plus the one in flight).
        self.assertLessEqual(len(stamps), 6 + 2)

    def test_count_only_above_list_max(self):
        t = self.room()
        w, _, _ = self.watch(t)
        ms = [self.member(t, b"u%d" % i) for i in range(LIST_MAX + 2)]
        _, ch = self.change(w)
        self.assertEqual(ch, {"count": LIST_MAX + 2})  # count only: no joined, no left
        _, _, snap = self.watch(t)
        self.assertEqual(snap, {"count": LIST_MAX + 2})
        for m in ms[:3]:
            m.close()
        _, ch = self.change(w)
        # Back at the maximum: the watchers get the whole list again, as joined.
        self.assertEqual(ch["count"], LIST_MAX - 1)
        self.assertEqual(sorted(ch["joined"]), sorted(
            [[m.welcome["client_id"], b"u%d" % (i + 3)] for i, m in enumerate(ms[3:])]))
        self.assertEqual(ch["left"], [])
        ms[3].close()
        _, ch = self.change(w)
        self.assertEqual(ch["left"], [ms[3].welcome["client_id"]])

    def test_websocket_member_and_watcher(self):
        t = self.room()
        w = WsConn(self.b.ws_port)
        self.addCleanup(w.close)
        w.hello()
        w.sub(3, "$PRES." + t)
        f = w.expect(MSG)
        self.assertIs(msg_opts(f).get("replay"), True)
        self.assertEqual(payload(f), {"count": 0, "members": []})
        m = WsConn(self.b.ws_port)
        self.addCleanup(m.close)
        m.hello()
        m.sub(1, t, presence=b"ws")
        m.sync()
        _, ch = self.change(w)
        self.assertEqual(ch["joined"], [[m.welcome["client_id"], b"ws"]])

    def test_presence_on_a_pattern_is_err12(self):
        c = self.conn()
        for pattern in ("room.*", "room.>"):
            c.sub(5, pattern, presence=b"x")
            f = c.expect(ERR)
            self.assertEqual((f[1], f[3]), (E_OPTION, 5), f)
        c.pub("room.a", b"hello")
        self.assertEqual(c.sync(), [])  # no subscription was made

    def test_presence_info_limits(self):
        t = self.room()
        c = self.conn()
        c.sub(1, t, presence=b"x" * 1025)
        f = c.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_OPTION, 1), f)
        c.sub(2, t, presence="a string")
        f = c.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_OPTION, 2), f)
        c.sub(3, "$SYS.x", presence=b"x")
        f = c.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_OPTION, 3), f)
        w, _, snap = self.watch(t)
        self.assertEqual(snap["count"], 0)
        c.sub(4, t, presence=b"y" * 1024)
        self.assertEqual(c.sync(), [])
        _, ch = self.change(w)
        self.assertEqual(ch["joined"], [[c.welcome["client_id"], b"y" * 1024]])

    def test_pres_needs_one_exact_topic_and_refuses_publish(self):
        c = self.conn()
        for pattern in ("$PRES.*", "$PRES.>", "$PRES.room.*"):
            c.sub(7, pattern)
            f = c.expect(ERR)
            self.assertEqual((f[1], f[3]), (E_TOPIC, 7), f)
        c.pub("$PRES.room", b"x", ack=3)
        f = c.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_PERM, 3), f)


class PresenceAsyncEngine(Presence):
    """The same with an engine that sequences 40 ms late: changes are still paced and in order,
    and a snapshot still carries the seq of the last change."""
    args = Presence.args + ("--engine-delay-ms", "40")


class ManyMembers(Base):
    """300 connections join, then leave, one room: each watcher gets a bounded frame stream."""
    args = ("--presence-list-max", "1000")
    N = 300

    def until(self, w, count):
        """Reads the changes of watcher `w` until one says `count`; returns them all."""
        out = []
        while not out or payload(out[-1])["count"] != count:
            out.append(self.change(w))
            out[-1] = out[-1][0]
        return out

    def run_room(self, listed):
        t = self.room()
        ws = [self.watch(t)[0] for _ in range(3)]
        start = time.monotonic()
        conns = []
        for i in range(self.N):
            c = Conn(self.b.port)
            c.hello()
            c.sub(1, t, presence=(b"user-%d" % i) if listed else b"")
            conns.append(c)
        for c in conns:
            c.sync()
        frames = [self.until(w, self.N) for w in ws]
        for c in conns:
            c.close()
        for i, w in enumerate(ws):
            frames[i] += self.until(w, 0)
        intervals = (time.monotonic() - start) * 1000 / INTERVAL_MS
        for i, w in enumerate(ws):
            self.quiet(w, 2)
            self.assertLessEqual(len(frames[i]), intervals + 2)
            self.assertEqual([payload(f) for f in frames[i]], [payload(f) for f in frames[0]])
        return frames[0]

    def test_many_members_listed(self):
        frames = self.run_room(True)
        joined, left = set(), set()
        for f in frames:
            ch = payload(f)
            for cid, _ in ch["joined"]:
                joined.add(cid)
            left.update(ch["left"])
        self.assertEqual(len(joined), self.N)
        self.assertEqual(joined, left)  # whoever was told joined was told left


class ManyMembersCountOnly(ManyMembers):
    args = ("--presence-list-max", "10")

    def test_many_members_listed(self):
        pass

    def test_many_members_count_only(self):
        frames = self.run_room(False)
        for f in frames:
            ch = payload(f)
            if ch["count"] > 10:
                self.assertEqual(list(ch), ["count"])
            self.assertLess(len(f[4]), 64 + 10 * 20)


class Cluster(unittest.TestCase):
    """With several workers the worker that owns `$PRES.<room>` keeps the room: members and
    watchers on every worker see one membership; a crashed worker's members leave."""

    def on_worker(self, b, k):
        for _ in range(400):
            c = Conn(b.port)
            if c.hello()["worker"] == k:
                self.addCleanup(c.close)
                return c
            c.close()
        self.fail("no connection on worker %d" % k)

    def snapshot(self, c, sid, room):
        c.sub(sid, "$PRES." + room)
        f = c.expect(MSG)
        self.assertEqual((f[1], f[2]), (sid, "$PRES." + room))
        self.assertIs(msg_opts(f).get("replay"), True)
        return payload(f)

    def test_rooms_span_workers_and_a_crash_takes_its_members(self):
        b = Broker("--workers", "2", "--presence-interval", str(INTERVAL_MS))
        self.addCleanup(b.cleanup)
        m0, m1 = self.on_worker(b, 0), self.on_worker(b, 1)
        w0, w1 = self.on_worker(b, 0), self.on_worker(b, 1)
        rooms = ["xroom.%d" % i for i in range(6)]  # kept by either worker
        for i, r in enumerate(rooms):
            m0.sub(10 + i, r, presence=b"zero")
            m1.sub(10 + i, r, presence=b"one")
        self.assertEqual(m0.sync(), [])
        self.assertEqual(m1.sync(), [])
        ids = {m0.welcome["client_id"]: b"zero", m1.welcome["client_id"]: b"one"}
        for i, r in enumerate(rooms):
            for w in (w0, w1):
                snap = self.snapshot(w, 20 + i, r)
                self.assertEqual(snap["count"], 2, (r, snap))
                self.assertEqual({m[0]: m[1] for m in snap["members"]}, ids)
        # A member on worker 1 leaves: watchers on both workers see it.
        m1.unsub(10)
        for w in (w0, w1):
            f = w.expect(MSG, 10 * INTERVAL_MS / 1000 * SLOW)
            ch = payload(f)
            self.assertEqual((f[2], ch["count"], ch["left"]), ("$PRES." + rooms[0], 1,
                                                              [m1.welcome["client_id"]]))
        # Worker 1 crashes: its members leave every room, wherever the room is kept.
        pids = subprocess.run(["pgrep", "-P", str(b.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        os.kill(sorted(int(x) for x in pids)[1], signal.SIGKILL)
        w0.sub(99, "probe")  # w0 survives
        deadline = time.monotonic() + 10 * SLOW
        left = {}
        # (rooms kept by the survivor report the leave; rooms the crashed worker kept
        # start again with a fresh snapshot once it is back: either way count 1)
        while len(left) < len(rooms) - 1 and time.monotonic() < deadline:
            for f in w0.poll(0.2):
                if f[0] == MSG and f[1] >= 21:
                    left[f[2]] = payload(f)["count"]
        self.assertEqual(sorted(left), sorted("$PRES." + r for r in rooms[1:]))
        self.assertEqual(set(left.values()), {1})
        # After the respawn the rooms it keeps again know the survivor's member.
        time.sleep(0.5 * SLOW)
        w = self.on_worker(b, 1)
        for i, r in enumerate(rooms):
            snap = self.snapshot(w, 40 + i, r)
            self.assertEqual([m[0] for m in snap["members"]], [m0.welcome["client_id"]], r)
        self.assertEqual(b.stop(), 0)


TOKENS = """# name  secret  permissions
alice  alice-secret  pub=chat.> sub=chat.*
bob    bob-secret    pub=other.> sub=other.>
"""


@unittest.skipIf(CLUSTER, "these tests count frames of one worker")
class Permission(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-presence-")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as fh:
            fh.write(TOKENS)
        cls.b = Broker("--auth-tokens-file", tokens, "--presence-interval", str(INTERVAL_MS))

    @classmethod
    def tearDownClass(cls):
        cls.b.stop()
        cls.b.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def conn(self, token):
        c = self.b.connect(hello_opts={"token": token})
        self.addCleanup(c.close)
        return c

    def test_watching_needs_subscribe_permission_on_the_topic(self):
        a = self.conn("alice-secret")
        a.sub(1, "chat.lobby", presence=b"alice")
        a.sub(2, "$PRES.chat.lobby")
        f = a.expect(MSG)
        self.assertEqual(payload(f), {"count": 1, "members": [[a.welcome["client_id"], b"alice"]]})
        b = self.conn("bob-secret")
        b.sub(3, "$PRES.chat.lobby")
        f = b.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_PERM, 3), f)
        # Members need the same permission as any subscriber.
        b.sub(4, "chat.lobby", presence=b"bob")
        f = b.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_PERM, 4), f)
        a.pub("$PRES.chat.lobby", b"x", ack=5)
        f = a.expect(ERR)
        self.assertEqual((f[1], f[3]), (E_PERM, 5), f)


if __name__ == "__main__":
    unittest.main()
