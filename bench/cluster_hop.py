#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# The cost of crossing workers, and how evenly the kernel spreads connections over them.
"""Usage: bench/cluster_hop.py HERALD_BIN [--workers 2] [--count 3000] [--conns 1000]

Starts `herald --workers N` on loopback ports, then:

1. opens --conns connections and counts on which worker each landed (WELCOME.worker);
2. measures publish-to-delivery latency, one message at a time (about 1,000 msg/s), with
   the publisher on worker 0 and the subscriber on worker 0, then on worker 1, over 32
   topics. A topic's owner is not visible (the hash key is secret), so it is inferred: the
   publisher whose ACK comes back faster is on the owner. Each sample is filed by the
   number of ring hops it took (publisher's worker to owner, owner to subscriber's worker).

Prints Markdown tables. Only python3-msgpack and the standard library.
"""

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import msgpack

HELLO, PUB, SUB, PING, PONG, MSG, ACK, WELCOME = 1, 2, 3, 5, 6, 17, 18, 16


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.send([HELLO, {"v": 1}])
        self.welcome = self.recv()[1]

    def send(self, obj):
        b = msgpack.packb(obj, use_bin_type=True)
        self.s.sendall(struct.pack(">I", len(b)) + b)

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    f = msgpack.unpackb(body, raw=False)
                    if f[0] == PING:
                        self.send([PONG, f[1]])
                        continue
                    return f
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d

    def sync(self):
        self.send([PING, 99])
        while self.recv()[0] != PONG:
            pass


def on_worker(port, k):
    for _ in range(500):
        c = Conn(port)
        if c.welcome["worker"] == k:
            return c
        c.s.close()
    raise RuntimeError("no connection on worker %d" % k)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("herald")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--conns", type=int, default=1000)
    a = ap.parse_args()
    d = tempfile.mkdtemp()
    ready = os.path.join(d, "ready")
    p = subprocess.Popen([a.herald, "--workers", str(a.workers), "--bind", "127.0.0.1",
                          "--port", "0", "--ws-port", "0", "--ready-file", ready,
                          "--log-level", "warn"])
    try:
        for _ in range(200):
            if os.path.exists(ready) and "workers=" in open(ready).read():
                break
            time.sleep(0.05)
        port = int([ln for ln in open(ready) if ln.startswith("tcp=")][0][4:])
        # 1. spread
        counts = [0] * a.workers
        cs = []
        for _ in range(a.conns):
            c = Conn(port)
            counts[c.welcome["worker"]] += 1
            cs.append(c)
        for c in cs:
            c.s.close()
        print("| workers | connections | per worker | largest / smallest |")
        print("|---|---:|---|---:|")
        print("| %d | %d | %s | %.2f |" % (a.workers, a.conns, " / ".join(map(str, counts)),
                                          max(counts) / max(1, min(counts))))
        print()
        # 2. latency by number of ring hops: publisher on worker 0, subscriber on 0 or 1
        pub0, pub1 = on_worker(port, 0), on_worker(port, 1)
        sub0, sub1 = on_worker(port, 0), on_worker(port, 1)
        # owner of each topic: the publisher whose ACK is faster (no hop) is on the owner
        owner = {}
        for i in range(32):
            t = "hop.%d" % i
            lat = []
            for pc in (pub0, pub1):
                best = 1e9
                for _ in range(20):
                    t0 = time.perf_counter()
                    pc.send([PUB, t, b"x", {"ack": 1}])
                    while pc.recv()[0] != ACK:
                        pass
                    best = min(best, time.perf_counter() - t0)
                lat.append(best)
            owner[t] = 0 if lat[0] < lat[1] else 1
        results = {}
        for sub, sw in ((sub0, 0), (sub1, 1)):
            for i, t in enumerate(owner):
                sub.send([SUB, 100 + i, t])
            sub.sync()
            samples = {}
            n = 0
            while n < a.count:
                for t, ow in owner.items():
                    if n >= a.count:
                        break
                    t0 = time.perf_counter()
                    pub0.send([PUB, t, b"x"])
                    while True:
                        f = sub.recv()
                        if f[0] == MSG:
                            break
                    dt = time.perf_counter() - t0
                    hops = (ow != 0) + (ow != sw)  # publisher's worker -> owner -> subscriber's
                    samples.setdefault(hops, []).append(dt)
                    n += 1
                    time.sleep(0.001)
            for i in range(len(owner)):
                sub.send([4, 100 + i])
            sub.sync()
            for h, v in samples.items():
                results.setdefault(h, []).extend(v)
        print("| ring hops (publisher's worker → owner → subscriber's worker) | messages | p50 | p99 |")
        print("|---|---:|---:|---:|")
        for h in sorted(results):
            v = results[h]
            print("| %d | %d | %.0f µs | %.0f µs |" % (h, len(v), pct(v, 50) * 1e6,
                                                   pct(v, 99) * 1e6))
    finally:
        p.terminate()
        p.wait(10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
