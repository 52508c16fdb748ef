# SPDX-License-Identifier: MIT
# A raw Herald v1 client and broker launcher for the conformance suite, from docs/protocol.md.
"""Minimal, deliberately independent implementation of the Herald wire protocol.

Nothing here uses the project's C code: frames are built with python3-msgpack
and sent over plain sockets, so the suite checks the broker against the
document, not against itself.
"""

import base64
import collections
import hashlib
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import msgpack

HELLO, PUB, SUB, UNSUB, PING, PONG = 1, 2, 3, 4, 5, 6
WELCOME, MSG, ACK, ERR, GAP, BATCH = 16, 17, 18, 19, 20, 21

E_PROTO, E_TOOBIG, E_AUTH, E_PERM, E_TOPIC, E_SLOW = 1, 2, 3, 4, 5, 6
E_LIMIT, E_SID, E_SHUTDOWN, E_GAP, E_HEARTBEAT, E_OPTION = 7, 8, 9, 10, 11, 12

OP_NAMES = {1: "HELLO", 2: "PUB", 3: "SUB", 4: "UNSUB", 5: "PING", 6: "PONG", 16: "WELCOME",
            17: "MSG", 18: "ACK", 19: "ERR", 20: "GAP", 21: "BATCH"}

MiB = 1024 * 1024

# Slow machines and sanitizer builds get more time (HERALD_TEST_SLOW=1 doubles everything).
SLOW = float(os.environ.get("HERALD_TEST_SLOW", "1") or 1)
TIMEOUT = 5.0 * SLOW


def pack(obj):
    """Encodes one frame body: str stays str, bytes become bin."""
    return msgpack.packb(obj, use_bin_type=True)


def lp(body):
    """Adds the TCP length prefix to a raw body."""
    return struct.pack(">I", len(body)) + body


def frame(obj):
    return lp(pack(obj))


class Closed(Exception):
    """The broker closed the connection (EOF or reset)."""


class Timeout(AssertionError):
    """Nothing (or not the expected thing) arrived in time."""


def describe(f):
    if isinstance(f, list) and f and f[0] in OP_NAMES:
        return "%s%r" % (OP_NAMES[f[0]], f[1:])
    return repr(f)


class Conn:
    """One raw TCP connection. recv() answers broker PINGs itself unless auto_pong is False."""

    _ids = itertools.count(1_000_000)

    def __init__(self, port, auto_pong=True, rcvbuf=None, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        try:
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending = collections.deque()  # frames read ahead and given back with unread()
        self.eof = False
        self.auto_pong = auto_pong
        self.server_pings = []
        self.welcome = None

    # ---- output ---------------------------------------------------------

    def send_raw(self, data):
        self.sock.settimeout(TIMEOUT * 4)
        self.sock.sendall(data)

    def send(self, obj):
        self.send_raw(frame(obj))

    def try_send_raw(self, data):
        """Sends, ignoring a broker that already closed (for frames that provoke a close)."""
        try:
            self.send_raw(data)
            return True
        except OSError:  # broken pipe, reset, timeout, or already closed after EOF
            return False

    def hello(self, **opts):
        self.send([HELLO, dict({"v": 1}, **opts)])
        f = self.recv()
        if f[0] != WELCOME:
            raise AssertionError("expected WELCOME, got %s" % describe(f))
        self.welcome = f[1]
        return f[1]

    def pub(self, topic, payload=b"", **opts):
        self.send([PUB, topic, payload, opts] if opts else [PUB, topic, payload])

    def sub(self, sid, pattern, **opts):
        self.send([SUB, sid, pattern, opts] if opts else [SUB, sid, pattern])

    def unsub(self, sid):
        self.send([UNSUB, sid])

    # ---- input ----------------------------------------------------------

    def _read_some(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("timed out waiting for a frame")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise Timeout("timed out waiting for a frame") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            # Like any well-behaved client, close our side once the broker closed its side
            # (the broker lingers until then so that its last ERR frame is not lost).
            self.eof = True
            self.close()
            raise Closed("connection closed by broker")
        self.buf += chunk

    def _take_body(self):
        """Cuts one complete frame body out of the input buffer, or returns None."""
        if len(self.buf) < 4:
            return None
        n = struct.unpack(">I", self.buf[:4])[0]
        if len(self.buf) < 4 + n:
            return None
        body = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return body

    def _take_frame(self):
        body = self._take_body()
        if body is None:
            return None
        f = msgpack.unpackb(body, raw=False, strict_map_key=False)
        if not isinstance(f, list) or not f or not isinstance(f[0], int):
            raise AssertionError("broker sent a body that is not an opcode array: %r" % body[:64])
        return f

    def recv(self, timeout=None):
        """Returns the next frame (a list). Raises Closed at EOF, Timeout when nothing comes."""
        if self.pending:
            return self.pending.popleft()
        deadline = time.monotonic() + (TIMEOUT if timeout is None else timeout)
        while True:
            f = self._take_frame()
            if f is None:
                if self.eof:
                    raise Closed("connection closed by broker")
                self._read_some(deadline)
                continue
            if f[0] == PING and self.auto_pong:
                self.server_pings.append(f[1])
                self.send([PONG, f[1]])
                continue
            return f

    def unread(self, frames):
        """Gives frames back so that the next recv() calls return them first, in order."""
        self.pending.extendleft(reversed(frames))

    def poll(self, timeout=0.2):
        """Returns the frames that arrive within `timeout` (no exception on silence)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                out.append(self.recv(max(0.0, deadline - time.monotonic()) or 0.001))
            except Timeout:
                return out

    def sync(self, timeout=None):
        """PING/PONG barrier: returns the frames that arrived before the matching PONG."""
        pid = next(Conn._ids)
        self.send([PING, pid])
        out = []
        deadline = time.monotonic() + (TIMEOUT if timeout is None else timeout)
        while True:
            f = self.recv(max(0.001, deadline - time.monotonic()))
            if f[0] == PONG and f[1] == pid:
                return out
            out.append(f)

    def expect(self, op, timeout=None):
        f = self.recv(timeout)
        if f[0] != op:
            raise AssertionError("expected %s, got %s" % (OP_NAMES.get(op, op), describe(f)))
        return f

    def wait_closed(self, timeout=None):
        """Reads until EOF; returns the frames read on the way. Timeout if it stays open."""
        out = []
        deadline = time.monotonic() + (TIMEOUT if timeout is None else timeout)
        while True:
            try:
                out.append(self.recv(max(0.001, deadline - time.monotonic())))
            except Closed:
                return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def msg_opts(f):
    """The opts map of a MSG frame ({} when absent or nil)."""
    return (f[5] or {}) if len(f) > 5 else {}


class Broker:
    """The real `herald` binary on ephemeral loopback ports, stopped by pid."""

    def __init__(self, *extra):
        self.bin = os.environ.get("HERALD_BIN")
        if not self.bin or not os.access(self.bin, os.X_OK):
            raise RuntimeError("HERALD_BIN must name the herald binary (got %r)" % self.bin)
        self.dir = tempfile.mkdtemp(prefix="herald-conformance-")
        self.ready = os.path.join(self.dir, "ready")
        self.log = open(os.path.join(self.dir, "broker.log"), "w+b")
        # HERALD_EXTRA_ARGS adds flags to every broker the suite starts (say --workers 4, to
        # run the whole suite against a cluster); flags given by a test come last and win.
        self.args = [self.bin, "--workers", "1", "--bind", "127.0.0.1", "--port", "0",
                     "--ws-port", "0", "--ready-file", self.ready]
        self.args += shlex.split(os.environ.get("HERALD_EXTRA_ARGS", "")) + list(extra)
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.port = None
        self.ws_port = None
        deadline = time.monotonic() + 15 * SLOW
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("herald exited with %s before it was ready:\n%s"
                                   % (self.proc.returncode, self.log_text()))
            try:
                with open(self.ready) as fh:
                    text = fh.read()
            except FileNotFoundError:
                text = ""
            m = re.search(r"^tcp=(\d+)$", text, re.M)
            if m and text.endswith("\n"):
                self.port = int(m.group(1))
                w = re.search(r"^ws=(\d+)$", text, re.M)
                self.ws_port = int(w.group(1)) if w else None
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("herald did not write its ready file in time:\n" + self.log_text())

    def alive(self):
        return self.proc.poll() is None

    def connect(self, hello=True, **kw):
        hello_opts = kw.pop("hello_opts", {})
        c = Conn(self.port, **kw)
        if hello:
            c.hello(**hello_opts)
        return c

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit status."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait(timeout * SLOW) is None:
                self.kill()
        return self.proc.returncode

    def kill(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_text(self):
        self.log.flush()
        with open(self.log.name, "rb") as fh:
            return fh.read().decode("utf-8", "replace")[-8000:]

    def cleanup(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)



class BrokerCase(unittest.TestCase):
    """One broker for a whole test class (started with ARGS), connections closed per test.

    Subclasses set ARGS (extra broker flags) and PREFIX (the first token of their topics).
    """

    ARGS = ()
    PREFIX = "t"
    _topics = itertools.count(1)

    @classmethod
    def setUpClass(cls):
        cls.b = Broker(*cls.ARGS)

    @classmethod
    def tearDownClass(cls):
        rc = cls.b.stop()
        log = cls.b.log_text()
        cls.b.cleanup()
        assert rc == 0, "broker exited with %s:\n%s" % (rc, log)

    def setUp(self):
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        self.assertTrue(self.b.alive(), self.b.log_text())

    def connect(self):
        c = self.b.connect()
        self.conns.append(c)
        return c

    def topic(self):
        """A topic no other test of this run uses."""
        return "%s.%d.%d.t" % (self.PREFIX, os.getpid(), next(BrokerCase._topics))


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsConn(Conn):
    """A raw RFC 6455 client: one binary message per frame body, masked client frames.

    Control frames are handled here: a ping is answered with a pong, a close frame
    records its code in .close_code and ends the stream (Closed)."""

    def __init__(self, port, protocols=("herald.v1",), auto_pong=True, path="/", rcvbuf=None):
        super().__init__(port, auto_pong=auto_pong, rcvbuf=rcvbuf)
        self.close_code = None
        self.text_messages = []
        self._frag = None
        key = base64.b64encode(os.urandom(16)).decode()
        req = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
               "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if protocols:
            req.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in self.buf:
            try:
                Conn._read_some(self, deadline)
            except Closed:
                raise AssertionError("connection closed during the WebSocket handshake: %r"
                                     % bytes(self.buf)) from None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            raise AssertionError("WebSocket upgrade refused: %s" % lines[0])
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if self.headers.get("sec-websocket-accept") != want:
            raise AssertionError("bad Sec-WebSocket-Accept %r"
                                 % self.headers.get("sec-websocket-accept"))
        self.protocol = self.headers.get("sec-websocket-protocol")

    def ws_send(self, opcode, payload, fin=True, mask=True):
        """Sends one WebSocket frame (client frames are masked)."""
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack(">BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack(">BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack(">BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            hdr += key
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload)) if n < 4096 else \
                _mask_fast(payload, key)
        self.send_raw(hdr + payload)

    def send(self, obj):
        self.ws_send(0x2, pack(obj))

    def _take_body(self):
        while True:
            b = self.buf
            if len(b) < 2:
                return None
            fin, op = b[0] & 0x80, b[0] & 0x0F
            masked, n = b[1] & 0x80, b[1] & 0x7F
            off = 2
            if n == 126:
                if len(b) < 4:
                    return None
                n = struct.unpack(">H", b[2:4])[0]
                off = 4
            elif n == 127:
                if len(b) < 10:
                    return None
                n = struct.unpack(">Q", b[2:10])[0]
                off = 10
            if masked:
                raise AssertionError("server frames must not be masked")
            if len(b) < off + n:
                return None
            payload = bytes(b[off:off + n])
            del b[:off + n]
            if op == 0x8:  # close
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.eof = True
                try:
                    self.ws_send(0x8, payload[:2])
                except OSError:
                    pass
                return None
            if op == 0x9:  # ping
                self.ws_send(0xA, payload)
                continue
            if op == 0xA:  # pong
                continue
            if op == 0x1:
                self.text_messages.append(payload)
                continue
            if op == 0x2:
                if fin:
                    return payload
                self._frag = bytearray(payload)
                continue
            if op == 0x0 and self._frag is not None:
                self._frag += payload
                if fin:
                    out, self._frag = bytes(self._frag), None
                    return out
                continue
            raise AssertionError("unexpected WebSocket opcode %d from the server" % op)


def _mask_fast(payload, key):
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def msgs(c, n, timeout=TIMEOUT, before=()):
    """Up to n MSG frames from `c`: those in `before` (what a sync() returned), then what
    comes within `timeout`; other frames are skipped."""
    out, deadline = [f for f in before if f[0] == MSG], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            f = c.recv(max(0.01, deadline - time.monotonic()))
        except Timeout:
            break
        if f[0] == MSG:
            out.append(f)
    return out


def http_get(port, path, timeout=TIMEOUT):
    """A plain HTTP/1.1 GET on the WebSocket port. Returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                   % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                hdrs = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                if "content-length" in hdrs and len(body) >= int(hdrs["content-length"]):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        body = body[:int(hdrs["content-length"])]
    return int(lines[0].split()[1]), hdrs, body
