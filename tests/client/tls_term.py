# SPDX-License-Identifier: MIT
"""A TLS terminator for the client tests: Python's ssl module in front of a plaintext broker.

Usage: tls_term.py READY CERT KEY TCP_PORT WS_PORT [CA]
Listens on two ephemeral 127.0.0.1 ports, one forwarding to TCP_PORT and one to WS_PORT (so
tls:// and wss:// reach the broker's two ports), and writes "tls=P wss=Q" to READY once both
listen. With CA, clients must present a certificate signed by it. Runs until killed.
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


def forwarder(port):
    async def handle(reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
    return handle


async def main():
    ready, cert, key, tcp, ws = sys.argv[1:6]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if len(sys.argv) > 6:
        ctx.load_verify_locations(sys.argv[6])
        ctx.verify_mode = ssl.CERT_REQUIRED
    a = await asyncio.start_server(forwarder(int(tcp)), "127.0.0.1", 0, ssl=ctx,
                                   ssl_handshake_timeout=5)
    b = await asyncio.start_server(forwarder(int(ws)), "127.0.0.1", 0, ssl=ctx,
                                   ssl_handshake_timeout=5)
    ports = (a.sockets[0].getsockname()[1], b.sockets[0].getsockname()[1])
    with open(ready + ".tmp", "w") as f:
        f.write("tls=%d wss=%d\n" % ports)
    import os
    os.rename(ready + ".tmp", ready)
    await asyncio.Event().wait()


asyncio.run(main())
