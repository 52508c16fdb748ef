#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Regenerates the seed corpora in tests/fuzz/corpus/ (checked in; run after protocol changes).
import os
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def pk(*a):
    return msgpack.packb(list(a), use_bin_type=True)


def lp(body):
    return struct.pack(">I", len(body)) + body


FRAMES = {
    "hello": pk(1, {"v": 1}),
    "hello_full": pk(1, {"v": 1, "name": "fuzz", "token": "secret", "echo": False}),
    "hello_v2": pk(1, {"v": 2}),
    "pub": pk(2, "a.b.c", b"hello"),
    "pub_opts": pk(2, "chat.room1", b"x" * 40,
                   {"reply": "_INBOX.1", "ack": 7, "headers": {"k": "v", "ct": "json"}}),
    "pub_nil_opts": pk(2, "t", b"", None),
    "pub_bad_topic": pk(2, "a..b", b"p"),
    "pub_dollar": pk(2, "$SYS.x", b"p"),
    "sub": pk(3, 1, "a.*.c"),
    "sub_gt": pk(3, 2, "chat.>", {"queue": "workers", "since": 0}),
    "sub_bad": pk(3, 3, "a.>.b"),
    "unsub": pk(4, 1),
    "ping": pk(5, 99),
    "pong": pk(6, 1),
    "welcome": pk(16, {"v": 1, "server": "herald", "client_id": 1, "worker": 0,
                       "max_payload": 1048576, "max_frame": 1052672, "heartbeat_ms": 30000}),
    "msg": pk(17, 1, "a.b", 3, b"data", {"reply": "r.x", "replay": True}),
    "ack": pk(18, 7, 1),
    "err": pk(19, 4, "not permitted", 3),
    "gap": pk(20, 1, "a.b", 3, 9),
    "unknown_op": pk(99),
    "map32_count": bytes([0x92, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff]),
    "nested": pk(2, "t", b"p", {"x": [[[[[[1]]]]]], "y": {"z": {"w": None}}}),
}


def write(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    base = os.path.join(HERE, "corpus")
    fr = os.path.join(base, "frame")
    for n, b in FRAMES.items():
        write(fr, n, lp(b))
    write(fr, "stream", b"".join(lp(FRAMES[k]) for k in ("hello", "sub", "pub", "ping")))
    write(fr, "too_big", struct.pack(">I", 0x7fffffff) + b"\x92\x05\x01")
    write(fr, "raw_pub", FRAMES["pub_opts"])

    tp = os.path.join(base, "topic")
    pairs = [("a.b.c", "a.b.c"), ("a.*.c", "a.b.c"), ("a.>", "a.b.c"), (">", "$SYS.x"),
             ("$SYS.>", "$SYS.conn.1"), ("*", "a"), ("*.*", "a"), ("a.b", "a.b.c"),
             ("a.>.b", "a.x.b"), ("a..b", "a.b"), ("." , "."), ("x" * 65, "x" * 65),
             (".".join("t" * 17), ".".join("t" * 17)), ("*.>", "$x.y"),
             ("chat.*.msgs", "chat.r1.msgs")]
    for i, (p, t) in enumerate(pairs):
        write(tp, "pair%02d" % i, p.encode() + b"\0" + t.encode() + b"\0" + b"chat.>")
    # Auth coverage seeds: pattern, topic, permitted pattern.
    write(tp, "cover0", b"chat.*\0chat.a\0chat.>")
    write(tp, "cover1", b"*.b\0a.b\0a.*")

    cf = os.path.join(base, "config")
    write(cf, "full", b"""# herald.conf
bind = 127.0.0.1
port = 7400
ws-port = 0
log-level = debug
max-payload = 64K
max-connections = 1000
max-subs = 10
max-topics = 5000
history-msgs = 0
out-hard = 8M
out-soft = 2M
heartbeat-ms = 5000
ws-origins = https://a.example,https://b.example
""")
    write(cf, "bad_size", b"max-payload = 12Q\n")
    write(cf, "no_eq", b"port 7400\n")
    write(cf, "config_in_file", b"config = /etc/passwd\n")
    write(cf, "unknown", b"nonsense = 1\n")
    write(cf, "set", b"max-payload=1G")
    write(cf, "long", b"ready-file = " + b"x" * 600 + b"\n")
    write(cf, "auth", b"""auth-tokens-file = /nonexistent\nauth-anonymous = pub=a.> sub=b.*
jwt-hs256-secret = 0123456789abcdef0123456789abcdef
max-conns-per-ip = 100
max-pub-rate = 1000
""")
    write(cf, "auth_real", b"max-conns-per-ip = 10\nmax-pending = 5\nmax-pub-burst = 3\n"
          b"jwt-issuer = me\njwt-audience = you\nauth-anonymous = sub=public.>\n")

    cn = os.path.join(base, "conn")

    def chunks(conn, data, step=200):
        out = b""
        for i in range(0, len(data), step):
            part = data[i:i + step]
            out += bytes([conn, len(part)]) + part
        return out

    def act(a, arg=0):
        return bytes([3 | (a << 2), arg])

    hello = lp(FRAMES["hello"])
    hello_noecho = lp(pk(1, {"v": 1, "echo": False}))
    s1 = chunks(0, hello + lp(pk(3, 1, "chat.>")) + lp(pk(3, 2, "chat.*", {"queue": "q"})))
    s1 += chunks(1, hello_noecho + lp(pk(2, "chat.a", b"hi", {"ack": 1}))
                 + lp(pk(2, "chat.a", b"x" * 300, {"ack": 2, "reply": "_INBOX.1"})))
    s1 += chunks(2, hello + lp(pk(3, 5, "chat.a", {"since": 0})) + lp(pk(4, 5)) + lp(pk(5, 1)))
    s1 += act(0, 1) + act(3)
    write(cn, "basic", s1)
    write(cn, "bad_first", chunks(0, lp(FRAMES["pub"])))
    write(cn, "second_hello", chunks(0, hello + hello))
    write(cn, "too_big", chunks(0, struct.pack(">I", 100000) + b"\x92"))
    write(cn, "slow", chunks(0, hello + lp(pk(3, 1, ">"))) + chunks(1, hello + b"".join(
        lp(pk(2, "t.%d" % i, b"y" * 1500)) for i in range(12))) + act(0, 20) + act(0, 20))
    write(cn, "timeouts", chunks(0, hello) + act(0, 5) + act(0, 5) + act(0, 5) + act(1, 1) + act(2, 2))
    write(cn, "token", chunks(0, lp(pk(1, {"v": 1, "token": "alice-secret-1"}))
                              + lp(pk(2, "chat.x", b"p", {"reply": "_INBOX.alice.1"}))
                              + lp(pk(2, "other", b"p")) + lp(pk(3, 1, ">")) + lp(pk(3, 2, "chat.*")))
          + chunks(1, lp(pk(1, {"v": 1, "token": "svc-secret-22"})) + lp(pk(2, "chat.y", b"q")))
          + chunks(2, lp(pk(1, {"v": 1})) + lp(pk(3, 1, "public.>")) + lp(pk(2, "public.a", b"z"))))
    # A JWT the harness accepts (its HS256 secret; exp in 2100) so the fuzzer starts from the
    # JWT permission path.
    import base64, hashlib, hmac, json
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    signing = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"." + b64(json.dumps(
        {"sub": "fz", "exp": 4102444800, "herald": {"pub": ["chat.>"], "sub": ["chat.*"]}}).encode()))
    jwt = signing + b"." + b64(hmac.new(b"0123456789abcdef0123456789abcdef", signing,
                                        hashlib.sha256).digest())
    write(cn, "jwt", chunks(0, lp(pk(1, {"v": 1, "token": jwt.decode()})) + lp(pk(3, 1, "chat.x"))
                            + lp(pk(3, 2, "chat.>")) + lp(pk(2, "chat.x", b"p", {"ack": 1}))))
    write(cn, "bad_token", chunks(0, lp(pk(1, {"v": 1, "token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}))))
    write(cn, "split", b"".join(bytes([0, 1, b]) for b in hello + lp(FRAMES["sub"])))
    # The harness's peers are not in proxy-from: a PROXY header is refused, the others go on.
    write(cn, "proxy_refused", chunks(0, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + hello)
          + chunks(1, b"PRO") + chunks(1, b"XY ") + chunks(2, hello + lp(FRAMES["ping"])))

    # WebSocket (fuzz_wsconn: fuzz_conn.c over the WebSocket transport). Byte 0 odd: the harness
    # sends a valid upgrade on every connection first; even: the input carries the HTTP itself.
    def wsf(body, op=2, fin=True, mask=b"\x11\x22\x33\x44"):
        n = len(body)
        h = bytes([(0x80 if fin else 0) | op])
        if n < 126:
            h += bytes([0x80 | n])
        elif n < 65536:
            h += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            h += bytes([0x80 | 127]) + struct.pack(">Q", n)
        return h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body))

    upgrade = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Protocol: herald.v1\r\n\r\n")
    ws = os.path.join(base, "wsconn")
    w1 = (chunks(0, wsf(pk(1, {"v": 1})) + wsf(pk(3, 1, "chat.>")))
          + chunks(1, wsf(pk(1, {"v": 1, "token": "alice-secret-1"}))
                   + wsf(pk(2, "chat.a", b"hi", {"ack": 1})) + wsf(b"", op=9)
                   + wsf(pk(2, "chat.b", b"x" * 300)))
          + chunks(2, wsf(pk(1, {"v": 1}))[:3]) + chunks(2, wsf(pk(1, {"v": 1}))[3:])
          + act(0, 1) + act(3))
    write(ws, "basic", b"\x01" + w1)
    body = pk(2, "chat.frag", b"f" * 100)
    write(ws, "fragments", b"\x01" + chunks(0, wsf(pk(1, {"v": 1})) + wsf(body[:10], fin=False)
                                           + wsf(b"", op=9) + wsf(body[10:], op=0)))
    # Regression (found by tests/ws/fuzz_ws): an empty message reassembled from empty fragments
    # reached hr_frame_decode() as (NULL, 0), and NULL + 0 is undefined behaviour.
    write(ws, "empty_fragments", b"\x01" + chunks(0, wsf(b"", fin=False) + wsf(b"", op=0)))
    write(ws, "text", b"\x01" + chunks(0, wsf(b"hello", op=1)))
    write(ws, "close", b"\x01" + chunks(0, wsf(struct.pack(">H", 1000) + b"bye", op=8)))
    write(ws, "close1", b"\x01" + chunks(0, wsf(b"\x03", op=8)))
    write(ws, "unmasked", b"\x01" + chunks(0, b"\x82\x05hello"))
    write(ws, "big_len", b"\x01" + chunks(0, b"\x82\xff" + b"\x7f" + b"\xff" * 7 + b"mask"))
    write(ws, "raw_upgrade", b"\x00" + chunks(0, upgrade + wsf(pk(1, {"v": 1}))))
    write(ws, "healthz", b"\x00" + chunks(0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
          + chunks(1, b"GET /metrics HTTP/1.1\r\n\r\n") + chunks(2, b"POST / HTTP/1.1\r\n\r\n"))
    write(ws, "bad_http", b"\x00" + chunks(0, b"GARBAGE\r\n\r\n") + chunks(1, b"GET / HTTP/1.0\r\n\r\n"))

    ht = os.path.join(base, "http")
    write(ht, "upgrade", upgrade)
    write(ht, "origin", upgrade.replace(b"\r\n\r\n", b"\r\nOrigin: https://a.example\r\n"
                                        b"Sec-WebSocket-Key: again\r\n\r\n"))
    write(ht, "healthz", b"GET /healthz?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    write(ht, "folded", b"GET / HTTP/1.1\r\nConnection: keep-alive,\r\n Upgrade\r\n\r\n")
    write(ht, "list", b"a, b ,UPGRADE,websocket")

    # PROXY protocol headers (fuzz_proxy), most followed by the client's first bytes.
    px = os.path.join(base, "proxy")
    sig = b"\r\n\r\n\x00\r\nQUIT\n"

    def v2(cmd, fam, body):
        return sig + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body

    def tlv(t, v):
        return bytes([t]) + struct.pack(">H", len(v)) + v

    a4 = bytes([203, 0, 113, 7, 10, 0, 0, 1]) + struct.pack(">HH", 51000, 7400)
    a6 = (bytes.fromhex("20010db8000000000000000000000007") + bytes(15) + b"\x01"
          + struct.pack(">HH", 443, 7401))
    write(px, "v1_tcp4", b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 7400\r\n" + hello)
    write(px, "v1_tcp6", b"PROXY TCP6 2001:db8::7 ::1 443 7401\r\nGET / HTTP/1.1\r\n\r\n")
    write(px, "v1_unknown", b"PROXY UNKNOWN\r\n")
    write(px, "v1_long", b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n")
    write(px, "v1_bad_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n")
    write(px, "v1_lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")
    write(px, "v2_tcp4", v2(1, 0x11, a4) + hello)
    write(px, "v2_tcp4_tlvs", v2(1, 0x11, a4 + tlv(1, b"h2") + tlv(2, b"example.com") + tlv(4, b""))
          + hello)
    write(px, "v2_tcp6", v2(1, 0x21, a6) + upgrade)
    write(px, "v2_local", v2(0, 0x00, b"") + hello)
    write(px, "v2_unspec", v2(1, 0x00, b""))
    write(px, "v2_unix", v2(1, 0x31, bytes(216)))
    write(px, "v2_udp", v2(1, 0x12, a4))
    write(px, "v2_tlv_overrun", v2(1, 0x11, a4 + b"\x01\x00\x09ab"))
    write(px, "v2_truncated", v2(1, 0x21, a6)[:30])
    write(px, "direct", hello)
    write(px, "nets", b"10.0.0.0/8, 192.168.1.7,fd00::/8,::1,172.16.0.0/12")
    # Regression: an IPv4-mapped entry never matched, not even its own address.
    write(px, "nets_mapped", b"::ffff:192.168.1.7, ::ffff:10.1.2.0/120,10.0.0.0/8")


if __name__ == "__main__":
    sys.exit(main())
