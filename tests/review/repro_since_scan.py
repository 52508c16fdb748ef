#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Manual reproduction (not a CTest suite) of a loop stall the review found: every SUB with
# `since` on a wildcard pattern scans every topic the engine knows (broker/engine.c
# hr__engine_each_match, called twice per SUB from broker/conn.c replay()), so one client
# that sends many such SUBs stalls the worker for everyone. Also measures the cost of UNSUBs
# of unknown sids on a connection with many subscriptions (find_sub() is a linear scan).
# Usage: /usr/bin/python3 repro_since_scan.py PATH/TO/herald [topics=100000]
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import msgpack


def frame(o):
    b = msgpack.packb(o, use_bin_type=True)
    return struct.pack(">I", len(b)) + b


def recv_frame(s):
    def rd(n):
        d = b""
        while len(d) < n:
            x = s.recv(n - len(d))
            if not x:
                raise EOFError
            d += x
        return d

    n = struct.unpack(">I", rd(4))[0]
    return msgpack.unpackb(rd(n), raw=False)


def main():
    ntopics = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    d = tempfile.mkdtemp()
    ready = os.path.join(d, "ready")
    p = subprocess.Popen([sys.argv[1], "--bind", "127.0.0.1", "--port", "0", "--ws-port", "0",
                          "--ready-file", ready, "--log-level", "error"])
    try:
        while not os.path.exists(ready):
            time.sleep(0.05)
        port = int(open(ready).read().split()[0].split("=")[1])

        def conn():
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(frame([1, {"v": 1}]))
            recv_frame(s)
            return s

        def rtt(s, i):
            t = time.monotonic()
            s.sendall(frame([5, i]))
            while True:
                f = recv_frame(s)
                if f[0] == 6 and f[1] == i:
                    return time.monotonic() - t

        victim = conn()
        victim.sendall(b"".join(frame([2, "t%d.x" % i, b""]) for i in range(ntopics)))
        print("%d topics created; victim PING round trip %.3f s" % (ntopics, rtt(victim, 1)))
        attacker = conn()
        attacker.sendall(b"".join(frame([3, 1, "nomatch.>", {"since": 0}]) for _ in range(200)))
        print("200 SUB since on a wildcard: victim PING round trip %.3f s" % rtt(victim, 2))
        attacker.sendall(b"".join(frame([3, i, "s%d" % i]) for i in range(10000)))
        rtt(attacker, 3)
        attacker.sendall(b"".join(frame([4, 99999999]) for _ in range(9000)))
        print("9000 UNSUB on 10000 subs: victim PING round trip %.3f s" % rtt(victim, 4))
    finally:
        p.terminate()
        p.wait()


main()
