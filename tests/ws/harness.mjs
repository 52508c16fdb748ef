// SPDX-License-Identifier: MIT
// Node test helper: starts the real herald binary on ephemeral loopback ports, stops it by pid.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decode, encode } from '@msgpack/msgpack';

// Brokers still running when the test process exits (a test timed out) are killed by pid.
const live = new Set();
process.on('exit', () => {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

export async function startBroker(...args) {
  const bin = process.env.HERALD_BIN;
  if (!bin || !existsSync(bin)) throw new Error('HERALD_BIN must name the herald binary');
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-node-'));
  const ready = path.join(dir, 'ready');
  const proc = spawn(bin, ['--workers', '1', '--bind', '127.0.0.1', '--port', '0', '--ws-port', '0',
    '--ready-file', ready, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  live.add(proc.pid);
  proc.on('exit', () => live.delete(proc.pid));
  const deadline = Date.now() + 10000;
  while (!existsSync(ready)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error('herald did not start');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const kv = Object.fromEntries(readFileSync(ready, 'utf8').trim().split('\n').map((l) => l.split('=')));
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve(sig ? 128 : code)));
  return {
    tcp: Number(kv.tcp),
    ws: Number(kv.ws),
    pid: proc.pid,
    async stop() {
      if (proc.exitCode === null) process.kill(proc.pid, 'SIGTERM');
      const t = setTimeout(() => proc.exitCode === null && process.kill(proc.pid, 'SIGKILL'), 10000);
      const code = await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

/** A minimal Herald client over TCP (4-byte big-endian length prefix). */
export class TcpClient {
  constructor(port) {
    this.sock = net.connect(port, '127.0.0.1');
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.waiters = [];
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const n = this.buf.readUInt32BE(0);
        this.frames.push(decode(this.buf.subarray(4, 4 + n)));
        this.buf = this.buf.subarray(4 + n);
      }
      this.wake();
    });
  }
  wake() {
    while (this.waiters.length && this.frames.length) this.waiters.shift()(this.frames.shift());
  }
  send(frame) {
    const body = encode(frame);
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(body.length);
    this.sock.write(Buffer.concat([hdr, body]));
  }
  recv() {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.wake();
    });
  }
  async hello(name) {
    this.send([1, { v: 1, name }]);
    const w = await this.recv();
    if (w[0] !== 16) throw new Error(`expected WELCOME, got ${JSON.stringify(w)}`);
  }
  /** PING/PONG; frames seen meanwhile are appended to sink. */
  async sync(id, sink) {
    this.send([5, id]);
    for (;;) {
      const f = await this.recv();
      if (f[0] === 6 && f[1] === id) return;
      if (sink) sink.push(f);
    }
  }
  close() {
    this.sock.destroy();
  }
}
