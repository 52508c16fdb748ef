# SPDX-License-Identifier: MIT
# Test helper: starts the real herald binary on ephemeral loopback ports and stops it by pid.
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time

import msgpack


class Broker:
    """One herald process: --port 0 --ws-port 0, ports read from its ready file."""

    def __init__(self, *args):
        self.bin = os.environ.get("HERALD_BIN")
        if not self.bin or not os.access(self.bin, os.X_OK):
            raise RuntimeError("HERALD_BIN must name the herald binary")
        self.dir = tempfile.TemporaryDirectory(prefix="herald-ws-")
        ready = os.path.join(self.dir.name, "ready")
        self.log = open(os.path.join(self.dir.name, "log"), "w+")
        self.proc = subprocess.Popen(
            [self.bin, "--workers", "1", "--bind", "127.0.0.1", "--port", "0", "--ws-port", "0",
             "--ready-file", ready, *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("herald did not start:\n" + self.logtext())
            time.sleep(0.02)
        with open(ready) as f:
            kv = dict(line.split("=", 1) for line in f.read().split())
        self.tcp = int(kv["tcp"])
        self.ws = int(kv["ws"])

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        if rc != 0:
            print(f"herald exited with {rc}; its log:\n{self.logtext()}", flush=True)
        self.log.close()
        self.dir.cleanup()
        return rc


class TcpClient:
    """A minimal Herald client over TCP (4-byte length prefix), for cross-transport checks."""

    def __init__(self, port, name="tcp"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.send([1, {"v": 1, "name": name}])
        w = self.recv()
        assert w[0] == 16, w

    def send(self, frame):
        body = msgpack.packb(frame, use_bin_type=True)
        self.s.sendall(struct.pack(">I", len(body)) + body)

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return msgpack.unpackb(body, raw=False)
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("broker closed the TCP connection")
            self.buf += chunk

    def sync(self, pid=99, sink=None):
        """PING/PONG: every earlier frame has been processed. Frames seen meanwhile go to sink."""
        self.send([5, pid])
        while True:
            f = self.recv()
            if f[0] == 6 and f[1] == pid:
                return
            if sink is not None:
                sink.append(f)

    def close(self):
        self.s.close()
