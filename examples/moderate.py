#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A chat moderation stage for Herald's publish pipeline.

Herald starts this program once per worker (the `pipeline` setting, e.g.
`pipeline = "chat.>=exec:/usr/share/herald/examples/moderate.py --banned /etc/herald/banned.txt"`)
and writes every PUB to a matching topic on its stdin; the answer on stdout
decides what is published:

- a message whose text contains a banned word is rejected: the publisher gets
  ERR 13 with the reason, nobody else sees it;
- links in the text are rewritten to go through a link checker
  (`--link-prefix`), so a click can be screened before the browser follows it;
- everything else passes unchanged.

Frames in both directions are a 4-byte big-endian length and one MessagePack
map. Requests: {id, topic, payload (bin), client, reply?, headers?}.
Answers: {id, action: "pass" | "reject", payload?, headers?, reason?}.
The text is the payload's `text` field when the payload is a MessagePack map,
or the payload itself when it is UTF-8 text.
"""
import argparse
import re
import struct
import sys
import urllib.parse

import msgpack

LINK = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)


def load_words(args):
    words = set(w.lower() for w in args.word)
    if args.banned:
        with open(args.banned, encoding="utf-8") as f:
            words.update(line.strip().lower() for line in f if line.strip() and not line.startswith("#"))
    return words


def judge(text, banned, prefix):
    """Returns (None, reason) to reject, or (new_text_or_None, None) to pass."""
    lowered = text.lower()
    for word in re.findall(r"[\w']+", lowered):
        if word in banned:
            return None, "message contains a banned word"
    if prefix and LINK.search(text):
        return LINK.sub(lambda m: prefix + urllib.parse.quote(m.group(0), safe=""), text), None
    return False, None  # unchanged


def answer(req, banned, prefix):
    payload = req.get("payload", b"")
    as_map = None
    try:
        as_map = msgpack.unpackb(payload, raw=False)
    except Exception:
        pass
    if isinstance(as_map, dict) and isinstance(as_map.get("text"), str):
        new, why = judge(as_map["text"], banned, prefix)
        if why:
            return {"id": req["id"], "action": "reject", "reason": why}
        if new:
            as_map["text"] = new
            return {"id": req["id"], "action": "pass", "payload": msgpack.packb(as_map)}
        return {"id": req["id"], "action": "pass"}
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"id": req["id"], "action": "pass"}  # not text: nothing to moderate
    new, why = judge(text, banned, prefix)
    if why:
        return {"id": req["id"], "action": "reject", "reason": why}
    if new:
        return {"id": req["id"], "action": "pass", "payload": new.encode("utf-8")}
    return {"id": req["id"], "action": "pass"}


def read_exact(f, n):
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--banned", help="file of banned words, one a line")
    ap.add_argument("--word", action="append", default=[], help="a banned word (repeatable)")
    ap.add_argument("--link-prefix", default="https://links.example.com/check?u=",
                    help="links are rewritten to this prefix plus the escaped URL ('' keeps them)")
    args = ap.parse_args()
    banned = load_words(args)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = read_exact(inp, 4)
        if head is None:
            return 0  # the broker closed our input: it is stopping
        body = read_exact(inp, struct.unpack(">I", head)[0])
        if body is None:
            return 0
        req = msgpack.unpackb(body, raw=False)
        ans = msgpack.packb(answer(req, banned, args.link_prefix))
        out.write(struct.pack(">I", len(ans)) + ans)
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
