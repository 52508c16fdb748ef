// SPDX-License-Identifier: MIT
// The broker's WebSocket transport driven by Node's `ws` and `@msgpack/msgpack` (third-party
// clients): handshake, pub/sub, TCP <-> WebSocket with identical seq, close codes, metrics.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decode, encode } from '@msgpack/msgpack';
import WebSocket from 'ws';
import { startBroker, TcpClient } from './harness.mjs';

let broker;

/** Opens a WebSocket with a queue of decoded binary messages. */
function open(opts = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${broker.ws}/`, 'herald.v1', opts);
  ws.queue = [];
  ws.waiters = [];
  ws.on('message', (data, isBinary) => {
    assert.ok(isBinary, 'the broker sends binary messages only');
    ws.queue.push(decode(data));
    while (ws.waiters.length && ws.queue.length) ws.waiters.shift()(ws.queue.shift());
  });
  ws.recv = () => new Promise((resolve) => {
    ws.waiters.push(resolve);
    while (ws.waiters.length && ws.queue.length) ws.waiters.shift()(ws.queue.shift());
  });
  ws.sendf = (f) => ws.send(encode(f));
  ws.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

async function hello(ws, name = 'node') {
  ws.sendf([1, { v: 1, name }]);
  const w = await ws.recv();
  assert.equal(w[0], 16);
  return w[1];
}

async function sync(ws, id, sink) {
  ws.sendf([5, id]);
  for (;;) {
    const f = await ws.recv();
    if (f[0] === 6 && f[1] === id) return;
    if (sink) sink.push(f);
  }
}

describe('herald over WebSocket with node ws', { timeout: 60000 }, () => {
  before(async () => {
    broker = await startBroker();
  });
  after(async () => {
    assert.equal(await broker.stop(), 0, 'herald exit status');
  });

  it('negotiates herald.v1 and declines permessage-deflate', async () => {
    const ws = await open({ perMessageDeflate: true });
    assert.equal(ws.protocol, 'herald.v1');
    assert.equal(ws.extensions, '');
    const w = await hello(ws);
    assert.equal(w.max_frame, w.max_payload + 4096);
    ws.close(1000);
    assert.equal(await ws.closed, 1000);
  });

  it('subscribes, publishes with ack, receives MSG', async () => {
    const ws = await open();
    await hello(ws);
    ws.sendf([3, 1, 'room.*']);
    ws.sendf([2, 'room.a', new Uint8Array([1, 2, 3]), { ack: 9, headers: { k: 'v' } }]);
    const got = [await ws.recv(), await ws.recv()];
    const msg = got.find((f) => f[0] === 17);
    const ack = got.find((f) => f[0] === 18);
    assert.deepEqual([msg[1], msg[2], msg[3], [...msg[4]]], [1, 'room.a', 1, [1, 2, 3]]);
    assert.deepEqual(msg[5].headers, { k: 'v' });
    assert.deepEqual(ack, [18, 9, 1]);
    ws.close();
  });

  it('TCP and WebSocket subscribers see the same messages with the same seq', async () => {
    const ws = await open();
    await hello(ws);
    const tcp = new TcpClient(broker.tcp);
    await tcp.hello('tcp');
    ws.sendf([3, 5, 'mix.>']);
    await sync(ws, 1);
    tcp.send([3, 6, 'mix.>']);
    await tcp.sync(1);
    const wsGot = [];
    const tcpGot = [];
    const n = 100;
    for (let i = 0; i < n; i++) {
      if (i % 2) {
        ws.sendf([2, 'mix.t', new TextEncoder().encode(`ws${i}`)]);
        await sync(ws, 1000 + i, wsGot);
      } else {
        tcp.send([2, 'mix.t', new TextEncoder().encode(`tcp${i}`)]);
        await tcp.sync(1000 + i, tcpGot);
      }
    }
    while (wsGot.length < n) wsGot.push(await ws.recv());
    while (tcpGot.length < n) tcpGot.push(await tcp.recv());
    const view = (fs) => fs.filter((f) => f[0] === 17).map((f) => `${f[3]}:${new TextDecoder().decode(f[4])}`);
    assert.deepEqual(view(wsGot), view(tcpGot));
    assert.deepEqual(view(wsGot).map((s) => Number(s.split(':')[0])), [...Array(n).keys()].map((i) => i + 1));
    assert.equal(view(wsGot)[1], '2:ws1');
    tcp.close();
    ws.close();
  });

  it('reassembles a large message the client fragments', async () => {
    const ws = await open();
    await hello(ws);
    ws.sendf([3, 2, 'big.x']);
    const payload = new Uint8Array(300000).map((_, i) => i & 0xff);
    const body = encode([2, 'big.x', payload]);
    const step = 50000;
    for (let i = 0; i < body.length; i += step) {
      ws.send(body.subarray(i, i + step), { binary: true, fin: i + step >= body.length });
    }
    const m = await ws.recv();
    assert.equal(m[0], 17);
    assert.equal(m[4].length, payload.length);
    assert.equal(m[4][299999], 299999 & 0xff);
    ws.close();
  });

  it('answers pings with pongs', async () => {
    const ws = await open();
    const pong = new Promise((resolve) => ws.on('pong', (d) => resolve(d.toString())));
    ws.ping('hi');
    assert.equal(await pong, 'hi');
    ws.close();
  });

  it('closes with 1003 on a text message, after ERR 1', async () => {
    const ws = await open();
    await hello(ws);
    ws.send('hello as text');
    const err = await ws.recv();
    assert.deepEqual(err.slice(0, 2), [19, 1]);
    assert.equal(await ws.closed, 1003);
  });

  it('closes with 1002 when the first frame is not HELLO', async () => {
    const ws = await open();
    ws.sendf([3, 1, 'x']);
    const err = await ws.recv();
    assert.deepEqual(err.slice(0, 2), [19, 1]);
    assert.equal(await ws.closed, 1002);
  });

  it('serves /healthz and /metrics on the same port', async () => {
    const h = await fetch(`http://127.0.0.1:${broker.ws}/healthz`);
    assert.equal(h.status, 200);
    assert.equal(await h.text(), 'ok\n');
    const m = await fetch(`http://127.0.0.1:${broker.ws}/metrics`);
    assert.equal(m.status, 200);
    const text = await m.text();
    assert.match(text, /^herald_connections\{transport="ws"\} \d+$/m);
    assert.match(text, /^herald_messages_in_total \d+$/m);
    const r = await fetch(`http://127.0.0.1:${broker.ws}/nope`);
    assert.equal(r.status, 404);
  });
});
