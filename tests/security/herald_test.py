# SPDX-License-Identifier: MIT
# Test helpers for the security, fault and soak suites: run the real broker, speak the wire protocol.
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import msgpack

HELLO, PUB, SUB, UNSUB, PING, PONG = 1, 2, 3, 4, 5, 6
WELCOME, MSG, ACK, ERR, GAP = 16, 17, 18, 19, 20
SLOW = float(os.environ.get("HERALD_TEST_SLOW", "1"))


def herald_bin():
    b = os.environ.get("HERALD_BIN")
    if not b:
        here = os.path.dirname(os.path.abspath(__file__))
        b = os.path.join(here, "..", "..", "build", "broker", "herald")
    return b


class Broker:
    """The real herald binary on ephemeral loopback ports; stop() kills it by pid."""

    def __init__(self, *args, config=None, prefix=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="herald-sec-")
        ready = os.path.join(self.dir, "ready")
        cmd = [herald_bin(), "--workers", "1", "--bind", "127.0.0.1", "--port", "0", "--ws-port", "0",
               "--ready-file", ready, "--log-level", "warn"]
        if config is not None:
            path = os.path.join(self.dir, "herald.conf")
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        cmd += list(args)
        if prefix:
            cmd = list(prefix) + cmd
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, **(env or {})), start_new_session=True)
        deadline = time.time() + 10 * SLOW
        self.tcp = self.ws = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("herald exited %d: %s" % (self.proc.returncode, self.logtext()))
            try:
                with open(ready) as f:
                    kv = dict(line.strip().split("=", 1) for line in f if "=" in line)
                self.tcp = int(kv["tcp"])
                self.ws = int(kv.get("ws", 0))
                self.pid = int(kv.get("pid", self.proc.pid))
                break
            except (OSError, KeyError, ValueError):
                time.sleep(0.02)
        if self.tcp is None:
            self.stop()
            raise RuntimeError("herald did not become ready")

    def logtext(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def status_kb(self, field):
        """A field of /proc/PID/status in KiB (VmRSS, VmSize, ...)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def rss_kb(self):
        return self.status_kb("VmRSS")

    def vm_kb(self):
        return self.status_kb("VmSize")

    def stop(self, timeout=10):
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def pack(*a):
    return msgpack.packb(list(a), use_bin_type=True)


class Client:
    """A blocking wire-protocol client over TCP (length-prefixed frames); `source` is the local
    address to connect from (another 127.x.y.z stands for another host)."""

    def __init__(self, port, token=None, name=None, echo=True, hello=True, timeout=5, source=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW,
                                          source_address=(source, 0) if source else None)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.frames = []
        self.welcome = None
        self.handshake()
        if hello:
            opts = {"v": 1, "echo": echo}
            if token is not None:
                opts["token"] = token
            if name is not None:
                opts["name"] = name
            self.send(HELLO, opts)

    def handshake(self):
        pass

    def send_raw(self, b):
        self.s.sendall(b)

    def send_body(self, body):
        self.s.sendall(struct.pack(">I", len(body)) + body)

    def send(self, *a):
        self.send_body(pack(*a))

    def _recv(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no frame")
        self.s.settimeout(left)
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def pub(self, topic, payload, **opts):
        if opts:
            self.send(PUB, topic, payload, opts)
        else:
            self.send(PUB, topic, payload)

    def sub(self, sid, pattern, **opts):
        if opts:
            self.send(SUB, sid, pattern, opts)
        else:
            self.send(SUB, sid, pattern)

    def _read_frame(self, deadline):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return msgpack.unpackb(body, raw=False, strict_map_key=False)
            self._recv(deadline)

    def next(self, timeout=5, skip_ping=True):
        """The next frame (a list), answering server PINGs."""
        deadline = time.time() + timeout * SLOW
        while True:
            f = self._read_frame(deadline)
            if f[0] == PING:
                self.send(PONG, f[1])
                if skip_ping:
                    continue
            if f[0] == WELCOME and self.welcome is None:
                self.welcome = f[1]
            return f

    def expect(self, op, timeout=5):
        f = self.next(timeout)
        if f[0] != op:
            raise AssertionError("expected op %d, got %r" % (op, f))
        return f

    def sync(self, timeout=5):
        """PING and collect every frame before the PONG."""
        self.send(PING, 4242)
        out = []
        while True:
            f = self.next(timeout)
            if f[0] == PONG and f[1] == 4242:
                return out
            out.append(f)

    def closed(self, timeout=5):
        """Reads until EOF; returns the frames seen. Raises TimeoutError if still open."""
        out = []
        try:
            while True:
                out.append(self.next(timeout))
        except (EOFError, ConnectionResetError):
            return out

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class WsClient(Client):
    """The same client over WebSocket (RFC 6455, subprotocol herald.v1): one binary message a frame.
    `self.close_code` is the code of the server's close frame, once one arrived."""

    def handshake(self):
        import base64
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n"
                        % key).encode())
        deadline = time.time() + 5 * SLOW
        while b"\r\n\r\n" not in self.buf:
            self._recv(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])
        self.close_code = None
        if self.status != 101:
            raise HttpRefused(self.status, head.decode(errors="replace") + self.buf.decode(
                errors="replace"))

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.s.sendall(hdr + mask + masked)

    def send_body(self, body):
        self.send_frame(2, body)

    def _read_frame(self, deadline):
        while True:
            b = self.buf
            if len(b) >= 2:
                op, n = b[0] & 0x0F, b[1] & 0x7F
                off = 2
                if n == 126 and len(b) >= 4:
                    n, off = struct.unpack("!H", b[2:4])[0], 4
                elif n == 127 and len(b) >= 10:
                    n, off = struct.unpack("!Q", b[2:10])[0], 10
                if (b[1] & 0x7F) < 126 or off > 2:
                    if len(b) >= off + n:
                        payload, self.buf = b[off:off + n], b[off + n:]
                        if op == 2:
                            return msgpack.unpackb(payload, raw=False, strict_map_key=False)
                        if op == 8:
                            self.close_code = struct.unpack("!H", payload[:2])[0] if n >= 2 else 0
                            raise EOFError("close frame %s" % self.close_code)
                        if op == 9:
                            self.send_frame(10, payload)
                        continue
            self._recv(deadline)


class HttpRefused(Exception):
    def __init__(self, status, text):
        super().__init__("HTTP %d: %s" % (status, text))
        self.status = status


def http_raw(port, request, source=None):
    """(status, body) of the HTTP response to the bytes `request`, read until the broker closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW,
                                 source_address=(source, 0) if source else None)
    s.sendall(request)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data
    return int(head.split(b" ", 2)[1]), body.decode()


def http_get(port, path):
    """(status, body) of a plain GET on the WebSocket port."""
    return http_raw(port, ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())


def metrics(broker):
    """The broker's /metrics as {name-with-labels: value}."""
    status, body = http_get(broker.ws, "/metrics")
    assert status == 200, status
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def connect_any(transport, broker, **kw):
    """A Client over "tcp" or "ws"."""
    return Client(broker.tcp, **kw) if transport == "tcp" else WsClient(broker.ws, **kw)


# ---- JWTs ------------------------------------------------------------------------


def b64url(b):
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(claims, alg="HS256", key=b"", header=None):
    """A compact JWT. HS256: key is the secret; RS256: key is a PEM private key file path."""
    import hashlib
    import hmac
    import json
    h = header or {"alg": alg, "typ": "JWT"}
    signing = (b64url(json.dumps(h, separators=(",", ":")).encode()) + "." +
               b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if alg == "HS256":
        sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    elif alg == "RS256":
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                             stdout=subprocess.PIPE, check=True).stdout
    else:
        sig = b""
    return signing + "." + b64url(sig)


def rsa_keypair(directory):
    """Generates an RSA key pair with the openssl CLI; returns (private_pem, public_pem) paths."""
    priv = os.path.join(directory, "rsa.pem")
    pub = os.path.join(directory, "rsa.pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", priv, "2048"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "rsa", "-in", priv, "-pubout", "-out", pub], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return priv, pub
