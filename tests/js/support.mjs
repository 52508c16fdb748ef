// SPDX-License-Identifier: MIT
// Helpers of the JavaScript client's tests: the npm packages tests/ws installs, brokers that can be
// killed and restarted on the same ports, a TCP proxy that can be cut, waiting for conditions.
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { startBroker as start } from '../ws/harness.mjs';

// tests/ws/run_node.sh installs ws, playwright-core and @msgpack/msgpack into tests/ws/node_modules.
const require = createRequire(new URL('../ws/package.json', import.meta.url));
export const WebSocket = require('ws');
export const { WebSocketServer } = require('ws');
export const msgpack = require('@msgpack/msgpack');
export const playwright = () => require('playwright-core');

// What must stop when the test file ends, passed or not: a client left reconnecting, a broker
// or a server would keep Node running until the CTest timeout.
const enders = [];
/** Runs `fn` once the file's tests are over; returns `fn`. */
export function onEnd(fn) {
  enders.push(fn);
  return fn;
}
after(async () => {
  for (const fn of enders.reverse()) {
    try {
      await fn();
    } catch {
      // stopping anyway
    }
  }
});

/** tests/ws/harness.mjs's startBroker, stopped at the end of the file at the latest. */
export async function startBroker(...args) {
  const b = await start(...args);
  onEnd(() => b.stop());
  return b;
}

export const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-quic'];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms until it is truthy; throws `what` after `ms`. */
export async function until(cond, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * A broker that can be killed (SIGKILL) or stopped (SIGTERM) and started
 * again on the same TCP and WebSocket ports with the same arguments.
 */
export async function restartableBroker(...args) {
  let b = await startBroker(...args);
  const ports = { tcp: b.tcp, ws: b.ws };
  return {
    ...ports,
    get pid() { return b.pid; },
    async kill() {
      process.kill(b.pid, 'SIGKILL');
      return b.stop();
    },
    stop: () => b.stop(),
    async start() {
      b = await startBroker(...args, '--port', String(ports.tcp), '--ws-port', String(ports.ws));
    },
  };
}

/**
 * A loopback TCP proxy to `port`: cut() drops every connection, freeze() stops forwarding on
 * the open ones (a dead link that stays open), down refuses new connections.
 */
export async function proxy(port) {
  const socks = new Set();
  const pairs = [];
  const p = { down: false, port: 0 };
  const server = net.createServer((c) => {
    if (p.down) {
      c.destroy();
      return;
    }
    const u = net.connect(port, '127.0.0.1');
    socks.add(c);
    socks.add(u);
    pairs.push([c, u]);
    c.pipe(u);
    u.pipe(c);
    const end = () => {
      c.destroy();
      u.destroy();
      socks.delete(c);
      socks.delete(u);
    };
    c.on('error', end).on('close', end);
    u.on('error', end).on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  p.port = server.address().port;
  onEnd(() => p.close());
  p.cut = () => {
    for (const s of socks) s.destroy();
    socks.clear();
  };
  p.freeze = () => {
    for (const [c, u] of pairs.splice(0)) {
      c.unpipe(u);
      u.unpipe(c);
    }
  };
  p.close = () => {
    p.cut();
    server.close();
  };
  return p;
}

/** An HS256 JWT for `claims` (exp in seconds from now). */
export function jwt(secret, claims, expIn = 60) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + expIn, ...claims })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * A test CA and certificates made by tests/support/certs.py in a temporary directory (removed at
 * the end of the file): file(name) is its path ("ca.pem", "server.key", ...), read(name) its
 * contents.
 */
export function testCerts() {
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-js-certs-'));
  onEnd(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('python3', [new URL('../support/certs.py', import.meta.url).pathname, dir],
    { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60000 });
  const file = (name) => path.join(dir, name);
  return { dir, file, read: (name) => readFileSync(file(name)) };
}

/** Serves tests/js/page.html at / of an ephemeral loopback port (its own origin); closed at the end. */
export function servePage() {
  const page = readFileSync(new URL('./page.html', import.meta.url));
  const server = http.createServer((req, res) => {
    if (new URL(req.url, 'http://x').pathname !== '/') res.writeHead(404).end();
    else res.writeHead(200, { 'Content-Type': 'text/html' }).end(page);
  });
  onEnd(() => server.close());
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
