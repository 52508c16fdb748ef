#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# A publish pipeline stage for the tests: what it does with a message depends on its payload.
"""Speaks the exec stage protocol (4-byte big-endian length + msgpack map, both ways).

payload prefix    what the stage does
reject:WHY        rejects with reason WHY
upper:TEXT        rewrites the payload to TEXT in upper case
hdr:V             passes with headers {"x-stage": V}
slow:MS           answers after MS milliseconds (later messages wait behind it)
crash             exits with status 3 without answering
garbage           writes a frame that is not msgpack
badmap            answers with a map that has no action
hold              stops answering until the file named by PIPE_STAGE_GATE exists
anything else     passes unchanged
Every run appends a line "start PID" to PIPE_STAGE_LOG when that is set.
"""
import os
import struct
import sys
import time

import msgpack


def main():
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    if os.environ.get("PIPE_STAGE_LOG"):
        with open(os.environ["PIPE_STAGE_LOG"], "a") as f:
            f.write("start %d\n" % os.getpid())
    gate = os.environ.get("PIPE_STAGE_GATE", "")

    def send(obj):
        body = msgpack.packb(obj, use_bin_type=True)
        out.write(struct.pack(">I", len(body)) + body)
        out.flush()

    while True:
        head = inp.read(4)
        if len(head) < 4:
            return 0
        (n,) = struct.unpack(">I", head)
        body = inp.read(n)
        req = msgpack.unpackb(body, raw=False)
        p, i = req["payload"], req["id"]
        if p.startswith(b"reject:"):
            send({"id": i, "action": "reject", "reason": p[7:].decode()})
        elif p.startswith(b"upper:"):
            send({"id": i, "action": "pass", "payload": p[6:].upper()})
        elif p.startswith(b"hdr:"):
            send({"id": i, "action": "pass", "headers": {"x-stage": p[4:].decode()}})
        elif p.startswith(b"slow:"):
            time.sleep(int(p[5:]) / 1000.0)
            send({"id": i, "action": "pass"})
        elif p == b"crash":
            sys.exit(3)
        elif p == b"garbage":
            out.write(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
            out.flush()
        elif p == b"badmap":
            send({"id": i})
        elif p.startswith(b"hold"):
            parent = os.getppid()
            while gate and not os.path.exists(gate):
                if os.getppid() != parent:
                    return 0  # the broker is gone
                time.sleep(0.01)
            send({"id": i, "action": "pass"})
        else:
            send({"id": i, "action": "pass"})


if __name__ == "__main__":
    sys.exit(main())
