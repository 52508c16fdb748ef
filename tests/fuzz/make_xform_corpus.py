#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Regenerates tests/fuzz/corpus/xform/ (checked in). Standalone: packs msgpack itself.
# A seed is: flags byte (bit 0: exact topic), 2-byte big-endian option length, options, payload.
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class Bin(bytes):
    pass


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True or v is False:
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, Bin):
        return b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, list):
        return b"\xdc" + struct.pack(">H", len(v)) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        return b"\xde" + struct.pack(">H", len(v)) + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


def seed(opts, payload, exact=True):
    o = pack(opts)
    p = payload if isinstance(payload, bytes) else pack(payload)
    return bytes([1 if exact else 0]) + struct.pack(">H", len(o)) + o + p


MSG = {"user": {"id": 42, "name": "ann"}, "kind": "chat", "unread": 3, "score": 2.5,
       "neg": -7, "big": 2**64 - 1, "ok": True, "none": None, "tags": ["a", "b"]}

SEEDS = {
    "eq": seed({"filter": ["==", "user.id", 42]}, MSG),
    "ops": seed({"filter": ["and", ["!=", "kind", "typing"], ["<", "unread", 10], ["<=", "neg", 0],
                            [">", "score", 1.5], [">=", "big", 0], ["in", "kind", ["chat", 1, None]],
                            ["or", ["exists", "ok"], ["not", ["exists", "none"]]]]}, MSG),
    "deep_filter": seed({"filter": ["not", ["not", ["not", ["not", ["not", ["not", ["not", [
        "exists", "a"]]]]]]]]}, {"a": 1}),
    "fields": seed({"fields": ["user.id", "kind", "user.name", "tags", "user"]}, MSG),
    "fields_nested": seed({"fields": ["a.b.c", "a.x", "z"]},
                          {"a": {"b": {"c": {"d": 1}, "e": 2}, "x": None}, "z": [1]}),
    "all": seed({"filter": ["exists", "kind"], "fields": ["kind"], "rate": {"n": 5, "ms": 1000},
                 "conflate": {"ms": 250, "key": "user.id"}, "batch": {"max": 10, "ms": 50},
                 "presence": Bin(b"alice"), "since": 3, "queue": "q"}, MSG),
    "presence_pattern": seed({"presence": Bin(b"bob")}, MSG, exact=False),
    "bad_op": seed({"filter": ["~", "a", 1]}, MSG),
    "not_map": seed({"filter": ["not", ["exists", "a"]], "fields": ["a"]}, [1, 2, 3]),
    "malformed": seed({"filter": ["==", "k", 1], "fields": ["k"]}, b"\x82\xa1k\x01\xa1j\xc1"),
    "deep_payload": seed({"filter": ["==", "k", 7], "fields": ["k", "d.x"]},
                         b"\x82\xa1d" + b"\x91" * 3000 + b"\xc0\xa1k\x07"),
    "numbers": seed({"filter": ["or", ["==", "x", 9007199254740992.0], ["<", "x", -1.5],
                                ["==", "x", -2**63]]}, {"x": 9007199254740993}),
    "dup_keys": seed({"fields": ["k"], "filter": ["==", "k", 1]},
                     b"\x83\x01\x02\xa1k\x01\xa1k\x02"),
    "nil_opts": seed(None, MSG),
}


def main():
    d = os.path.join(HERE, "corpus", "xform")
    os.makedirs(d, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    sys.exit(main())
