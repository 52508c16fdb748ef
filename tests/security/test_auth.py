#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Authentication and authorization against the real broker: static tokens, HS256/RS256 JWTs,
# and proof that an unauthorised client can neither read nor write a protected topic.
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from herald_test import (ACK, ERR, MSG, SLOW, WELCOME, Broker, connect_any,  # noqa: E402
                         herald_bin, make_jwt, rsa_keypair)

HS_SECRET = b"an-hs256-secret-of-at-least-32-bytes!!"

TOKENS = """# name  secret  permissions
writer   writer-secret-1   pub=vault.>,_INBOX.writer.>  sub=_INBOX.writer.>
reader   sha256:%s  sub=vault.*
outsider outsider-secret-3 pub=public.>,_INBOX.outsider.> sub=public.>,_INBOX.outsider.>
worker   worker-secret-4   sub=jobs.>
admin    admin-secret-5    pub=> sub=>,$SYS.>
""" % hashlib.sha256(b"reader-secret-2").hexdigest()


def errs(frames):
    return [(f[1], f[3] if len(f) > 3 else None) for f in frames if f[0] == ERR]


class Base(unittest.TestCase):
    args = ()
    transport = "tcp"

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-auth-")
        cls.tokens = os.path.join(cls.dir, "tokens")
        with open(cls.tokens, "w") as f:
            f.write(TOKENS)
        cls.broker = Broker("--auth-tokens-file", cls.tokens, *cls.args)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def connect(self, token=None, **kw):
        c = connect_any(self.transport, self.broker, token=token, **kw)
        f = c.next()
        self.assertEqual(f[0], WELCOME, f)
        self.addCleanup(c.close)
        return c

    def refused(self, token, code=3):
        c = connect_any(self.transport, self.broker, token=token)
        self.addCleanup(c.close)
        frames = c.closed()
        self.assertEqual(len(frames), 1, frames)
        self.assertEqual(frames[0][:2], [ERR, code], frames)
        return frames[0][2]


class StaticTokens(Base):
    def test_valid_tokens_welcome(self):
        for t in ("writer-secret-1", "reader-secret-2", "admin-secret-5"):
            self.connect(t)

    def test_invalid_and_missing_tokens_get_err3_and_close(self):
        self.assertIn("invalid token", self.refused("nope-nope-nope"))
        self.assertIn("invalid token", self.refused("writer-secret-1x"))
        self.assertIn("required", self.refused(None))
        # The digest itself is not a credential.
        self.assertIn("invalid", self.refused(hashlib.sha256(b"reader-secret-2").hexdigest()))

    def test_unauthorised_cannot_read_protected_topic(self):
        w = self.connect("writer-secret-1")
        r = self.connect("reader-secret-2")
        o = self.connect("outsider-secret-3")
        # Every way of asking for vault.* is refused with ERR 4 naming the sid.
        for sid, pat, opts in [(1, "vault.gold", {}), (2, "vault.*", {}), (3, "vault.>", {}),
                               (4, ">", {}), (5, "*.gold", {}), (6, "*.*", {}),
                               (7, "vault.gold", {"queue": "q"}), (8, "vault.gold", {"since": 0})]:
            o.sub(sid, pat, **opts)
        self.assertEqual(errs(o.sync()), [(4, s) for s in range(1, 9)])
        r.sub(1, "vault.*")
        o.sub(9, "public.>")
        self.assertEqual(r.sync(), [])
        self.assertEqual(o.sync(), [])
        w.pub("vault.gold", b"secret", ack=1)
        self.assertEqual(w.expect(ACK)[1], 1)
        got = r.expect(MSG)
        self.assertEqual((got[2], got[4]), ("vault.gold", b"secret"))
        # The outsider saw nothing: no MSG before the PONG, nor any replay.
        self.assertEqual(o.sync(), [])
        o2 = self.connect("outsider-secret-3")
        o2.sub(1, "vault.gold", since=0)
        self.assertEqual(errs(o2.sync()), [(4, 1)])

    def test_unauthorised_cannot_write_protected_topic(self):
        r = self.connect("reader-secret-2")
        r.sub(1, "vault.*")
        r.sync()
        o = self.connect("outsider-secret-3")
        o.pub("vault.gold", b"forged", ack=7)
        o.pub("vault.gold", b"forged")
        o.pub("public.x", b"fine", reply="vault.gold", ack=8)  # a reply topic is a write, too
        self.assertEqual(errs(o.sync()), [(4, 7), (4, None), (4, 8)])
        # The reader, allowed to read, may not write either.
        r.pub("vault.gold", b"forged", ack=9)
        self.assertEqual(errs(r.sync()), [(4, 9)])
        self.assertEqual(r.sync(), [])  # no MSG reached the reader

    def test_queue_group_cannot_be_joined_without_permission(self):
        wk = self.connect("worker-secret-4")
        wk.sub(1, "jobs.>", queue="workers")
        wk.sync()
        o = self.connect("outsider-secret-3")
        o.sub(1, "jobs.>", queue="workers")
        o.sub(2, "jobs.a", queue="workers")
        self.assertEqual(errs(o.sync()), [(4, 1), (4, 2)])
        a = self.connect("admin-secret-5")
        for i in range(10):
            a.pub("jobs.a", b"%d" % i, ack=i)
        a.sync()
        self.assertEqual(len([f for f in wk.sync() if f[0] == MSG]), 10)

    def test_reply_topics(self):
        w = self.connect("writer-secret-1")
        w.pub("vault.q", b"?", reply="_INBOX.writer.1", ack=1)
        w.pub("vault.q", b"?", reply="_INBOX.outsider.1", ack=2)
        frames = w.sync()
        self.assertEqual(errs(frames), [(4, 2)])
        self.assertEqual([f[1] for f in frames if f[0] == ACK], [1])

    def test_dollar_topics_broker_only(self):
        a = self.connect("admin-secret-5")
        a.pub("$SYS.fake", b"x", ack=1)
        self.assertEqual(errs(a.sync()), [(4, 1)])
        a.sub(1, "$SYS.>")  # explicitly granted
        self.assertEqual(a.sync(), [])
        w = self.connect("writer-secret-1")
        w.sub(1, "$SYS.>")
        self.assertEqual(errs(w.sync()), [(4, 1)])
        o = self.connect("outsider-secret-3")
        o.sub(1, ">")  # '>' never covers $ topics, and outsider has only public.>
        self.assertEqual(errs(o.sync()), [(4, 1)])

    def test_hello_after_refusal_cannot_continue(self):
        c = connect_any(self.transport, self.broker, token="bad-token-value")
        self.addCleanup(c.close)
        try:
            c.sub(1, ">")
            c.pub("vault.gold", b"x")
        except OSError:
            pass
        frames = c.closed()
        self.assertEqual([f[:2] for f in frames], [[ERR, 3]])


class StaticTokensWs(StaticTokens):
    """Everything above again over WebSocket."""
    transport = "ws"

    def test_ws_close_code_after_err3(self):
        c = connect_any("ws", self.broker, token="nope-nope-nope")
        self.addCleanup(c.close)
        self.assertEqual([f[:2] for f in c.closed()], [[ERR, 3]])
        self.assertEqual(c.close_code, 1008)


class Anonymous(Base):
    args = ("--auth-anonymous", "sub=public.>")

    def test_anonymous_gets_configured_permissions(self):
        c = self.connect(None)
        c.sub(1, "public.>")
        c.sub(2, "vault.>")
        c.pub("public.x", b"x", ack=1)
        self.assertEqual(errs(c.sync()), [(4, 2), (4, 1)])
        self.assertIn("invalid", self.refused("wrong-token-here"))


class Jwt(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="herald-jwt-")
        cls.priv, cls.pub = rsa_keypair(cls.dir)
        with open(cls.pub, "rb") as f:
            cls.pub_pem = f.read()
        cls.broker = Broker("--jwt-hs256-secret", HS_SECRET.decode(), "--jwt-rs256-public-key",
                            cls.pub, "--jwt-issuer", "issuer.example",
                            "--jwt-audience", "herald", "--heartbeat-ms", "200")

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def claims(self, **kw):
        c = {"sub": "carol", "iss": "issuer.example", "aud": "herald",
             "exp": int(time.time()) + 300,
             "herald": {"pub": ["chat.>"], "sub": ["chat.*", "_INBOX.carol.>"]}}
        c.update(kw)
        return c

    transport = "tcp"

    def hello(self, token):
        c = connect_any(self.transport, self.broker, token=token)
        self.addCleanup(c.close)
        return c, c.next()

    def assert_refused(self, token, why):
        c, f = self.hello(token)
        self.assertEqual(f[:2], [ERR, 3], f)
        self.assertIn(why, f[2])
        self.assertEqual(c.closed(), [])

    def test_hs256_and_rs256_carry_permissions(self):
        for tok in (make_jwt(self.claims(), "HS256", HS_SECRET),
                    make_jwt(self.claims(), "RS256", self.priv)):
            c, f = self.hello(tok)
            self.assertEqual(f[0], WELCOME, f)
            c.sub(1, "chat.room")
            c.sub(2, "chat.>")   # not covered by chat.*
            c.sub(3, "vault.x")
            c.pub("chat.room", b"hi", ack=1)
            c.pub("vault.x", b"no", ack=2)
            frames = c.sync()
            self.assertEqual(errs(frames), [(4, 2), (4, 3), (4, 2)])
            self.assertEqual([f[1] for f in frames if f[0] == ACK], [1])
            self.assertEqual([f[4] for f in frames if f[0] == MSG], [b"hi"])

    def test_numeric_dates(self):
        # RFC 7519 NumericDates may have a fraction; iat is only type-checked.
        now = time.time()
        for cl in (self.claims(exp=now + 300.5, nbf=now - 10.25, iat=now - 10.25),
                   self.claims(iat=int(now) + 3600)):
            c, f = self.hello(make_jwt(cl, "HS256", HS_SECRET))
            self.assertEqual(f[0], WELCOME, f)
        self.assert_refused(make_jwt(self.claims(nbf=now + 5.5), "HS256", HS_SECRET),
                            "not valid yet")

    def test_aud_array(self):
        c, f = self.hello(make_jwt(self.claims(aud=["https://x.example/a b", "herald"]), "HS256",
                                   HS_SECRET))
        self.assertEqual(f[0], WELCOME, f)
        self.assert_refused(make_jwt(self.claims(aud=["x", "herald2", 7]), "HS256", HS_SECRET),
                            "audience")

    def test_no_herald_claim_means_no_permissions(self):
        cl = self.claims()
        del cl["herald"]
        c, f = self.hello(make_jwt(cl, "HS256", HS_SECRET))
        self.assertEqual(f[0], WELCOME, f)
        c.sub(1, "chat.x")
        c.pub("chat.x", b"x", ack=1)
        self.assertEqual(errs(c.sync()), [(4, 1), (4, 1)])

    def test_invalid_tokens_get_err3(self):
        now = int(time.time())
        cl = self.claims()
        no_exp = dict(cl)
        del no_exp["exp"]
        cases = [
            (make_jwt(self.claims(exp=now - 1), "HS256", HS_SECRET), "expired"),
            (make_jwt(no_exp, "HS256", HS_SECRET), "no exp"),
            (make_jwt(self.claims(nbf=now + 3600), "HS256", HS_SECRET), "not valid yet"),
            # Time claims of the wrong type refuse the token: a string nbf was once ignored.
            (make_jwt(self.claims(nbf=str(now + 3600)), "HS256", HS_SECRET),
             "nbf is not a number"),
            (make_jwt(self.claims(nbf=str(now - 60)), "HS256", HS_SECRET), "nbf is not a number"),
            (make_jwt(self.claims(exp=str(now + 300)), "HS256", HS_SECRET), "exp is not a number"),
            (make_jwt(self.claims(exp=None), "HS256", HS_SECRET), "exp is not a number"),
            (make_jwt(self.claims(iat=True), "HS256", HS_SECRET), "iat is not a number"),
            (make_jwt(self.claims(iat=[now]), "RS256", self.priv), "iat is not a number"),
            (make_jwt(self.claims(exp=1e300), "HS256", HS_SECRET), "exp out of range"),
            (make_jwt(cl, "HS256", b"another-secret-of-32-bytes-or-more!!"), "invalid"),
            (make_jwt(cl, "none"), "invalid"),
            (make_jwt(cl, "none", header={"alg": "none"})[:-1], "invalid"),
            # Algorithm confusion: HS256 keyed with the RSA public key (which is public).
            (make_jwt(cl, "HS256", self.pub_pem), "invalid"),
            (make_jwt(self.claims(iss="evil.example"), "HS256", HS_SECRET), "issuer"),
            (make_jwt(self.claims(aud="other"), "HS256", HS_SECRET), "audience"),
            (make_jwt(self.claims(herald={"pub": ["a..b"]}), "HS256", HS_SECRET), "claim"),
            (make_jwt(self.claims(herald={"pub": "chat.>"}), "HS256", HS_SECRET), "claim"),
            ("x.y.z", "invalid"),
            ("a" * 9000, "invalid"),
        ]
        for tok, why in cases:
            with self.subTest(why=why, tok=tok[:40]):
                self.assert_refused(tok, why)
        # A token altered after signing (permissions widened) fails its signature.
        good = make_jwt(cl, "HS256", HS_SECRET).split(".")
        import base64
        import json
        widened = dict(cl, herald={"pub": [">"], "sub": [">"]})
        good[1] = base64.urlsafe_b64encode(json.dumps(widened).encode()).rstrip(b"=").decode()
        self.assert_refused(".".join(good), "invalid")

    def test_expiry_closes_a_live_connection(self):
        c, f = self.hello(make_jwt(self.claims(exp=int(time.time()) + 2), "HS256", HS_SECRET))
        self.assertEqual(f[0], WELCOME, f)
        c.sub(1, "chat.x")
        self.assertEqual(c.sync(), [])
        frames = c.closed(timeout=6)
        self.assertEqual([f[:2] for f in frames if f[0] == ERR], [[ERR, 3]])
        self.assertIn("expired", frames[-1][2])


class JwtWs(Jwt):
    transport = "ws"


class ConfigErrors(unittest.TestCase):
    def run_broker(self, *args):
        p = subprocess.run([herald_bin(), "--workers", "1", "--bind", "127.0.0.1", "--port", "0",
                            "--ws-port", "0"]
                           + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10 * SLOW, text=True)
        self.assertNotEqual(p.returncode, 0)
        return p.stderr

    def test_bad_settings_refuse_to_start(self):
        d = tempfile.mkdtemp(prefix="herald-authcfg-")
        self.addCleanup(shutil.rmtree, d, True)
        bad = os.path.join(d, "tokens")
        with open(bad, "w") as f:
            f.write("ok ok-secret-1 pub=a.>\nbroken secret-22 pub=a..b\n")
        self.assertIn("tokens:2: invalid pattern 'a..b'", self.run_broker("--auth-tokens-file", bad))
        with open(bad, "w") as f:
            f.write("a same-secret-1\nb same-secret-1\n")
        self.assertIn("same secret", self.run_broker("--auth-tokens-file", bad))
        self.assertIn("cannot read", self.run_broker("--auth-tokens-file", os.path.join(d, "no")))
        self.assertIn("at least 32 bytes", self.run_broker("--jwt-hs256-secret", "short"))
        self.assertIn("not a PEM RSA public key", self.run_broker("--jwt-rs256-public-key", bad))
        self.assertIn("auth-anonymous", self.run_broker("--jwt-hs256-secret", "x" * 32,
                                                        "--auth-anonymous", "pub=a..b"))


if __name__ == "__main__":
    unittest.main()
