# SPDX-License-Identifier: MIT
"""Test certificates, made fresh by the openssl command line (no private key is ever committed).

From Python:   import certs; c = certs.make(some_temp_dir); c["server"], c["server_key"], ...
From anything: python3 tests/support/certs.py DIR   (writes DIR/*.pem, prints name=path lines)

Files written into DIR (EC P-256 keys, certificates valid for a day unless said otherwise):
  ca.pem                          the test CA (ca.key signs; trust ca.pem)
  server.pem     server.key       CN herald-test-server, SAN localhost, 127.0.0.1, ::1
  server2.pem    server2.key      the same names, CN herald-test-server-2 (reload tests)
  expired.pem    expired.key      the same names, expired a day ago
  wronghost.pem  wronghost.key    SAN wrong.example only
  client.pem     client.key       CN herald-test-client, clientAuth, signed by the test CA
  rogue-ca.pem                    a second CA nobody trusts (rogue-ca.key signs)
  rogue.pem      rogue.key        server names like server.pem, signed by the rogue CA
  rogue-client.pem rogue-client.key  a client certificate signed by the rogue CA
"""
import os
import subprocess
import sys

NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


def _run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30)


def _key(d, name):
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".key", cwd=d)
    os.chmod(os.path.join(d, name + ".key"), 0o600)


def _ca(d, name, cn):
    _key(d, name)
    _run("req", "-x509", "-new", "-key", name + ".key", "-subj", "/CN=" + cn, "-days", "2",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash", "-out", name + ".pem", cwd=d)


def _leaf(d, name, cn, ca, san=None, client=False, days="1"):
    _key(d, name)
    _run("req", "-new", "-key", name + ".key", "-subj", "/CN=" + cn, "-out", name + ".csr", cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
        f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        if san:
            f.write("subjectAltName=%s\n" % san)
    _run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
         "-CAcreateserial", "-days", days, "-extfile", ext, "-out", name + ".pem", cwd=d)
    os.unlink(ext)
    os.unlink(os.path.join(d, name + ".csr"))


def make(d):
    """Writes the files above into directory d (created if needed); returns {name: path}.

    Keys are "<name>_key" ("server_key"), certificates "<name>" ("server", "ca")."""
    os.makedirs(d, exist_ok=True)
    _ca(d, "ca", "Herald Test CA")
    _ca(d, "rogue-ca", "Rogue Test CA")
    _leaf(d, "server", "herald-test-server", "ca", NAMES)
    _leaf(d, "server2", "herald-test-server-2", "ca", NAMES)
    _leaf(d, "expired", "herald-test-expired", "ca", NAMES, days="-1")  # notAfter before now
    _leaf(d, "wronghost", "wrong.example", "ca", "DNS:wrong.example")
    _leaf(d, "client", "herald-test-client", "ca", client=True)
    _leaf(d, "rogue", "herald-test-server", "rogue-ca", NAMES)
    _leaf(d, "rogue-client", "rogue-client", "rogue-ca", client=True)
    out = {}
    for f in sorted(os.listdir(d)):
        base, ext = os.path.splitext(f)
        if ext == ".pem":
            out[base] = os.path.join(d, f)
        elif ext == ".key":
            out[base + "_key"] = os.path.join(d, f)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: certs.py DIR")
    for k, v in make(sys.argv[1]).items():
        print("%s=%s" % (k, v))
