# SPDX-License-Identifier: MIT
# The broker binary at start-up: a failure is one line on stderr and exit 1, nothing else;
# SIGHUP is logged and survived; an open broker beyond loopback is warned about; --help
# shows ranges, defaults and the file format; an unknown option gets the closest name.
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from herald_test import MSG, SLOW, SUB, Broker, Client, herald_bin

# An EC (not RSA) public key: a valid PEM that jwt-rs256-public-key must refuse.
EC_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESzqWaykVKBG4cfetnulfCkGRr1HK
ZA5+oKrdmfRrHb4RNqo9ccbQ++JQMACmKgwxLISEmijlQF0aRSIFxlZiVg==
-----END PUBLIC KEY-----
"""


def wait_log(broker, text, timeout=5):
    """The broker's log once it holds `text` (lines may follow the ready file by a moment)."""
    deadline = time.time() + timeout * SLOW
    log = broker.logtext()
    while text not in log and time.time() < deadline:
        time.sleep(0.02)
        log = broker.logtext()
    return log


def run_herald(*args, timeout=10):
    return subprocess.run([herald_bin(), "--workers", "1", *args], capture_output=True, text=True,
                          timeout=timeout * SLOW, stdin=subprocess.DEVNULL)


class StartupFailures(unittest.TestCase):
    """Each failure: exit 1, exactly one line on stderr that names the problem, no chatter."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="herald-startup-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def file(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def assert_fails(self, args, *needles):
        # The default log level (info), so that any extra line would show.
        r = run_herald("--bind", "127.0.0.1", "--port", "0", "--ws-port", "0", *args)
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("herald: "), r.stderr)
        for n in needles:
            self.assertIn(n, lines[0])
        self.assertEqual(r.stdout, "")
        return lines[0]

    def test_short_jwt_secret(self):
        self.assert_fails(["--jwt-hs256-secret", "short"], "jwt-hs256-secret", "32 bytes")

    def test_missing_tokens_file(self):
        missing = os.path.join(self.dir, "no-such-tokens")
        self.assert_fails(["--auth-tokens-file", missing], "auth-tokens-file", missing)

    def test_short_secret_in_token_line(self):
        tokens = self.file("tokens", "# name secret\nok 0123456789abcdef\nbad short\n")
        self.assert_fails(["--auth-tokens-file", tokens], tokens + ":3:", "8 bytes")

    def test_non_rsa_public_key(self):
        key = self.file("ec.pub.pem", EC_PUBLIC_KEY)
        self.assert_fails(["--jwt-rs256-public-key", key], "jwt-rs256-public-key", "RSA")

    def test_bad_anonymous_permissions(self):
        self.assert_fails(["--jwt-hs256-secret", "x" * 32, "--auth-anonymous", "read=all"],
                          "auth-anonymous")

    def test_port_in_use(self):
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        for flag, name in (("--port", "tcp"), ("--ws-port", "ws")):
            with self.subTest(flag=flag):
                self.assert_fails([flag, port], "cannot listen on %s port" % name, port,
                                  "address already in use")

    def test_lines_logged_before_the_failure_are_dropped(self):
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen()
        # The credentials load (an info line) before the port turns out to be taken.
        self.assert_fails(["--jwt-hs256-secret", "k" * 32, "--port", str(held.getsockname()[1])],
                          "address already in use")
        # A warning about the settings, then a ready file that cannot be written.
        self.assert_fails(["--auth-anonymous", "sub=x", "--ready-file",
                           os.path.join(self.dir, "no-such-dir", "ready")], "ready-file")

    def test_bad_bind_address(self):
        self.assert_fails(["--bind", "localhost"], "bind", "'localhost'")

    def test_unwritable_ready_file(self):
        ready = os.path.join(self.dir, "no-such-dir", "ready")
        self.assert_fails(["--ready-file", ready], "ready-file", ready)
        self.assertEqual(os.listdir(self.dir), [])

    def test_bad_settings(self):
        conf = self.file("herald.conf", "port = 7410\nws-port = seven\n")
        for args, needle in ((["--prot", "7410"], "unknown option '--prot' (did you mean --port?)"),
                             (["-port", "7410"], "'-port' (did you mean --port?)"),
                             (["--zzzz", "1"], "unknown option '--zzzz' (see --help)"),
                             (["--port", "70000"], "'port'"),
                             (["--port"], "--port"),
                             (["stray"], "stray"),
                             (["--config", conf], conf + ":2:"),
                             (["--config", os.path.join(self.dir, "nope.conf")], "nope.conf")):
            with self.subTest(args=args):
                self.assert_fails(args, needle)


class Help(unittest.TestCase):
    def test_help_shows_ranges_defaults_and_the_file_format(self):
        r = run_herald("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertRegex(out, r"--port N +TCP port.*\n +0\.\.65535, default 7400\n")
        self.assertRegex(out, r"--max-payload SIZE .*\n +1\.\.64M, default 1M\n")
        self.assertRegex(out, r"--bind STR .*\n +default 0\.0\.0\.0\n")
        self.assertRegex(out, r"--ready-file STR .*pid=PID")
        self.assertIn("Configuration file", out)
        self.assertIn('ws-origins = "https://app.example.com"', out)
        self.assertIn("SIGHUP", out)
        # Every setting (between --config and --help) has a line with its default.
        lines = out.splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith("  --config"))
        last = next(i for i, line in enumerate(lines) if line.startswith("  --help"))
        names = [line for line in lines[first + 1:last] if line.startswith("  --")]
        defaults = [line for line in lines[first + 1:last] if "default " in line]
        self.assertEqual(len(defaults), len(names))
        self.assertGreater(len(names), 30)


class StartupLog(unittest.TestCase):
    def test_lines_held_during_startup_are_written_in_order(self):
        with Broker("--log-level", "info", "--jwt-hs256-secret", "k" * 32) as b:
            log = wait_log(b, "ready (pid")
            auth, tcp, ready = (log.find(s) for s in ("auth: ", "listening: tcp", "ready (pid"))
            self.assertTrue(0 <= auth < tcp < ready, log)


class Signals(unittest.TestCase):
    def test_sighup_is_logged_and_survived(self):
        with Broker() as b:
            sub = Client(b.tcp)
            sub.sync()
            sub.send(SUB, 1, "news.>")
            sub.sync()
            for _ in range(3):
                os.kill(b.pid, signal.SIGHUP)
            deadline = time.time() + 5 * SLOW
            while "SIGHUP" not in b.logtext() and time.time() < deadline:
                time.sleep(0.02)
            self.assertIn("SIGHUP received: configuration reloaded (0 settings changed)", b.logtext())
            self.assertTrue(b.alive())
            # Both the old connection and a new one are served.
            pub = Client(b.tcp)
            pub.pub("news.today", b"still here")
            pub.sync()
            f = sub.expect(MSG)
            self.assertEqual((f[2], f[4]), ("news.today", b"still here"))
            pub.s.close()
            sub.s.close()
            self.assertEqual(b.stop(), 0)


def can_unshare():
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class OpenBrokerWarning(unittest.TestCase):
    """Listening beyond loopback without authentication is warned about at start-up."""

    WARNING = "is not loopback and authentication is off"

    def startup_log(self, *args, prefix=None):
        b = Broker("--log-level", "info", *args, prefix=prefix)
        try:
            return wait_log(b, "ready (pid")
        finally:
            self.assertEqual(b.stop(), 0)

    def test_loopback_is_quiet(self):
        self.assertNotIn(self.WARNING, self.startup_log())
        self.assertNotIn(self.WARNING, self.startup_log("--bind", "::ffff:127.0.0.1"))

    # 0.0.0.0 only inside a fresh network namespace, whose one interface is its own loopback:
    # the test never listens on a real network.
    @unittest.skipUnless(can_unshare(), "needs unshare -rn (user and network namespaces)")
    def test_any_address_without_auth_warns(self):
        ns = ["unshare", "-rn"]
        log = self.startup_log("--bind", "0.0.0.0", prefix=ns)
        self.assertIn("bind 0.0.0.0 " + self.WARNING, log)
        self.assertIn("docs/security.md", log)
        log = self.startup_log("--bind", "0.0.0.0", "--jwt-hs256-secret", "k" * 32, prefix=ns)
        self.assertNotIn(self.WARNING, log)


if __name__ == "__main__":
    unittest.main()
