// SPDX-License-Identifier: MIT
// herald.js reconnecting: resume through a cut connection without gap or duplicate, the gap when
// history is gone, a broker killed (and one stopped) and restarted under a publish stream, and
// against a scripted broker the frames the real one does not send yet: epochs, BATCH, GAP.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { connect } from '../../client/js/herald.js';
import { msgpack, onEnd, proxy, restartableBroker, sleep, startBroker, until, WebSocket,
  WebSocketServer } from './support.mjs';

const open = async (port, o = {}) => {
  const c = await connect(`ws://127.0.0.1:${port}/`, { WebSocket, reconnectWaitMs: 20, reconnectWaitMaxMs: 200, ...o });
  onEnd(() => c.close());
  return c;
};

describe('resuming through a cut connection', { timeout: 120000 }, () => {
  let broker;
  after(async () => {
    if (broker) assert.equal(await broker.stop(), 0, 'herald exit status');
  });

  it('delivers every seq exactly once to exact and wildcard subscriptions', async () => {
    broker = await startBroker('--history-msgs', '1000');
    const px = await proxy(broker.ws);
    const pub = await open(broker.ws);
    const sub = await open(px.port);
    const exact = [], wild = new Map(), gaps = [];
    sub.on('gap', (g) => gaps.push(g));
    await sub.subscribe('r.a', (m) => exact.push(m.seq)).ready;
    await sub.subscribe('r.*', (m) => {
      if (!wild.has(m.topic)) wild.set(m.topic, []);
      wild.get(m.topic).push(m.seq);
    }).ready;
    let reconnects = 0;
    sub.on('reconnected', () => reconnects++);
    for (let i = 1; i <= 300; i++) {
      await pub.publish(i % 3 ? 'r.a' : 'r.b', `${i}`);
      if (i % 50 === 0 && i < 300) {
        // Cut, publish ten more while the subscriber is away, wait for it to be back.
        const was = reconnects;
        px.cut();
        for (let k = 0; k < 10; k++) await pub.publish(++i % 3 ? 'r.a' : 'r.b', `${i}`);
        await until(() => reconnects > was, 'the reconnection');
      }
    }
    await until(() => exact.length >= 200 && wild.get('r.b')?.length >= 100, 'all messages', 20000);
    await sub.flush();
    const range = (n) => Array.from({ length: n }, (_, i) => i + 1);
    assert.deepEqual(exact, range(200));
    assert.deepEqual(wild.get('r.a'), range(200));
    assert.deepEqual(wild.get('r.b'), range(100));
    assert.equal(reconnects, 5);
    assert.deepEqual(gaps, []);
    assert.ok(sub.stats.duplicates > 0, 'the wildcard resume replayed (and dropped) some messages');
    pub.close();
    sub.close();
    px.close();
  });

  it('reports a gap when the history no longer reaches back', async () => {
    const b = await startBroker('--history-msgs', '10');
    const px = await proxy(b.ws);
    const pub = await open(b.ws);
    const sub = await open(px.port);
    const got = [], gaps = [];
    await sub.subscribe('g.x', { onGap: (g) => gaps.push(g) }, (m) => got.push(m.seq)).ready;
    for (let i = 0; i < 5; i++) await pub.publish('g.x', 'a');
    await until(() => got.length === 5, 'five messages');
    px.down = true;
    px.cut();
    for (let i = 0; i < 30; i++) await pub.publish('g.x', `b${i}`);
    px.down = false;
    await until(() => got.at(-1) === 35, 'the last message');
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].reason, 'history');
    assert.equal(gaps[0].error.code, 10);
    assert.deepEqual(got, [1, 2, 3, 4, 5, ...Array.from({ length: 10 }, (_, i) => i + 26)]);
    pub.close();
    sub.close();
    px.close();
    assert.equal(await b.stop(), 0);
  });
});

describe('a link that goes silent', { timeout: 60000 }, () => {
  it('is declared dead after maxPingsOut unanswered pings, then the client reconnects', async () => {
    const b = await startBroker();
    const px = await proxy(b.ws);
    const c = await open(px.port, { pingIntervalMs: 100, maxPingsOut: 2 });
    const events = [];
    c.on('disconnected', (e) => events.push(e.code));
    c.on('reconnected', () => events.push('reconnected'));
    const got = [];
    await c.subscribe('k.x', (m) => got.push(m.seq)).ready;
    px.freeze();
    await until(() => events.includes('reconnected'), 'the reconnection', 5000);
    assert.deepEqual(events, ['ETIMEDOUT', 'reconnected']);
    const pub = await open(b.ws);
    await pub.publish('k.x', 'after');
    await until(() => got.length === 1, 'a message on the new connection');
  });
});

// Publishes a numbered stream while the broker goes away and comes back; returns what happened.
async function streamThroughRestart(broker, how) {
  const sub = await open(broker.ws);
  const pub = await open(broker.ws);
  const got = [], gaps = [];
  const order = []; // 'gap' markers and payloads in delivery order
  sub.on('gap', (g) => {
    gaps.push(g);
    order.push('gap');
  });
  await sub.subscribe('s.stream', (m) => {
    got.push({ seq: m.seq, n: Number(m.text()) });
    order.push(m.seq);
  }).ready;
  let down = false, i = 0, stop = false;
  const acked = new Map(), failed = [];
  const publisher = (async () => {
    while (!stop) {
      const n = ++i;
      pub.publish('s.stream', String(n)).then((seq) => acked.set(n, { seq, fresh: down }),
        (e) => failed.push([n, e.code]));
      await sleep(3);
    }
  })();
  await until(() => got.length >= 60, 'messages before the restart');
  if (how === 'kill') await broker.kill();
  else await broker.stop();
  await sleep(300);
  down = true; // every ack resolved from here on comes from the new broker
  await broker.start();
  await until(() => [...acked.values()].filter((a) => a.fresh).length >= 60, 'acks from the new broker', 20000);
  stop = true;
  await publisher;
  await until(() => pub.state === 'connected', 'publisher connected');
  await pub.flush();
  const fresh = [...acked].filter(([, a]) => a.fresh).map(([n]) => n);
  const seen = () => new Set(got.map((g) => g.n));
  await until(() => fresh.every((n) => seen().has(n)), 'every message the new broker acked', 20000)
    .catch((e) => {
      console.log(`# missing ${fresh.filter((n) => !seen().has(n))} order ${order.join(' ')}`);
      console.log(`# stats ${JSON.stringify(sub.stats)} gaps ${gaps.map((g) => g.message)} sub ${sub.state}`);
      throw e;
    });
  await sub.flush();
  pub.close();
  sub.close();
  return { got, gaps, order, fresh, failed };
}

function checkRestart({ got, gaps, order, fresh }) {
  const ns = got.map((g) => g.n);
  assert.equal(new Set(ns).size, ns.length, 'no message delivered twice');
  assert.ok(gaps.length >= 1, 'the restart was reported');
  assert.ok(gaps.every((g) => g.reason === 'restart' || g.reason === 'history'), JSON.stringify(gaps.map((g) => g.reason)));
  // Before the report the old broker's seqs, after it the new one's: each strictly increasing.
  const cut = order.indexOf('gap');
  for (const part of [order.slice(0, cut), order.slice(cut).filter((x) => x !== 'gap')]) {
    for (let k = 1; k < part.length; k++) assert.ok(part[k] > part[k - 1], `seq order ${part}`);
  }
  assert.equal(order.slice(cut).find((x) => x !== 'gap'), 1, 'the new broker\'s history from its seq 1');
  const seen = new Set(ns);
  assert.ok(fresh.every((n) => seen.has(n)));
}

describe('a broker restarted under a publish stream', { timeout: 120000 }, () => {
  it('SIGKILL: no duplicate, the restart reported, everything the new broker took delivered', async () => {
    // History enough for all the publishes buffered during the outage.
    const broker = await restartableBroker('--history-msgs', '1000');
    try {
      const r = await streamThroughRestart(broker, 'kill');
      checkRestart(r);
      assert.ok(r.failed.every(([, code]) => code === 'EDISCONNECTED'), JSON.stringify(r.failed));
    } finally {
      await broker.stop();
    }
  });

  it('SIGTERM (ERR 9): the same', async () => {
    const broker = await restartableBroker('--history-msgs', '1000', '--shutdown-timeout-ms', '200');
    try {
      checkRestart(await streamThroughRestart(broker, 'term'));
    } finally {
      assert.equal(await broker.stop(), 0);
    }
  });
});

// ---- a scripted broker --------------------------------------------------------------

class Fake {
  constructor() {
    this.conns = [];
    this.waiting = [];
  }

  static async start() {
    const f = new Fake();
    f.wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'herald.v1' });
    await new Promise((r) => f.wss.on('listening', r));
    f.port = f.wss.address().port;
    onEnd(() => f.close());
    f.wss.on('connection', (ws) => {
      const c = { ws, frames: [], waiters: [] };
      c.send = (frame) => ws.send(msgpack.encode(frame));
      c.recv = (op) => new Promise((resolve) => {
        c.waiters.push({ op, resolve });
        c.wake();
      });
      c.wake = () => {
        for (const w of [...c.waiters]) {
          const k = c.frames.findIndex((fr) => fr[0] === w.op);
          if (k < 0) continue;
          c.waiters.splice(c.waiters.indexOf(w), 1);
          w.resolve(c.frames.splice(k, 1)[0]);
        }
      };
      ws.on('message', (d) => {
        c.frames.push(msgpack.decode(d));
        c.wake();
      });
      f.conns.push(c);
      for (const w of f.waiting.splice(0)) w(c);
    });
    return f;
  }

  // The next connection's HELLO answered with a WELCOME holding `welcome`.
  async accept(welcome) {
    const c = await new Promise((resolve) => {
      const fresh = this.conns.find((x) => !x.taken);
      if (fresh) resolve(fresh);
      else this.waiting.push(resolve);
    });
    c.taken = true;
    c.hello = await c.recv(1);
    c.send([16, { v: 1, server: 'fake', client_id: 1, worker: 0, max_payload: 1024, max_frame: 5120,
      heartbeat_ms: 30000, ...welcome }]);
    return c;
  }

  close() {
    for (const c of this.conns) c.ws.terminate();
    this.wss.close();
  }
}

const bin = (s) => new TextEncoder().encode(s);

describe('against a scripted broker', { timeout: 60000 }, () => {
  it('decodes BATCH, reports GAP, answers PING, ignores unknown opcodes', async () => {
    const f = await Fake.start();
    const cp = open(f.port, { name: 'n' });
    const c1 = await f.accept({});
    const c = await cp;
    assert.equal(c1.hello[1].name, 'n');
    const got = [], gaps = [];
    const sub = c.subscribe('b.x', { batch: { max: 10, ms: 5 }, onGap: (g) => gaps.push(g) }, (m) => got.push([m.seq, m.text(), m.replay]));
    const s = await c1.recv(3);
    assert.deepEqual(s[3], { batch: { max: 10, ms: 5 } });
    c1.send([6, (await c1.recv(5))[1]]);
    await sub.ready;
    c1.send([21, s[1], [['b.x', 1, bin('one')], ['b.x', 2, bin('two'), { replay: true }], ['b.x', 2, bin('dup'), { replay: true }]]]);
    c1.send([20, s[1], 'b.x', 3, 7]);
    c1.send([99, 'from the future']);
    c1.send([17, s[1], 'b.x', 8, bin('eight')]);
    c1.send([5, 77]);
    assert.deepEqual(await c1.recv(6), [6, 77]);
    await until(() => got.length === 3, 'messages');
    assert.deepEqual(got, [[1, 'one', false], [2, 'two', true], [8, 'eight', false]]);
    assert.deepEqual(gaps.map((g) => [g.reason, g.topic, g.first, g.last]), [['dropped', 'b.x', 3, 7]]);
    c.close();
    f.close();
  });

  it('resumes with the epoch it saw its seq under; a new epoch is not mistaken for duplicates', async () => {
    const f = await Fake.start();
    const cp = open(f.port);
    let k = await f.accept({ epoch: 'A', client_id: 7 });
    const c = await cp;
    assert.equal(c.epoch, 'A');
    const got = [], gaps = [];
    c.subscribe('e.x', { last: 5, onGap: (g) => gaps.push(g) }, (m) => got.push(m.seq));
    let s = await k.recv(3);
    assert.deepEqual(s[3], { last: 5 });
    for (const seq of [1, 2, 3]) k.send([17, s[1], 'e.x', seq, bin(`A${seq}`)]);
    await until(() => got.length === 3, 'three');
    k.send([19, 9, 'shutting down']);
    k.ws.close(1001);
    // Same epoch: resume after seq 3 with epoch A; `last` is dropped in favour of since.
    k = await f.accept({ epoch: 'A', client_id: 1 });
    s = await k.recv(3);
    assert.deepEqual(s[3], { since: 3, epoch: 'A' });
    k.send([17, s[1], 'e.x', 3, bin('A3'), { replay: true }]); // a duplicate: dropped
    k.send([17, s[1], 'e.x', 4, bin('A4')]);
    await until(() => got.length === 4, 'four');
    k.ws.terminate();
    // A new epoch: the client still sends A; the broker answers ERR 10 and replays from 1.
    k = await f.accept({ epoch: 'B', client_id: 9 });
    s = await k.recv(3);
    assert.deepEqual(s[3], { since: 4, epoch: 'A' });
    k.send([19, 10, 'history gap: epoch', s[1]]);
    for (const seq of [1, 2]) k.send([17, s[1], 'e.x', seq, bin(`B${seq}`), { replay: true }]);
    k.send([17, s[1], 'e.x', 3, bin('B3')]);
    await until(() => got.length === 7, 'seven');
    assert.deepEqual(got, [1, 2, 3, 4, 1, 2, 3]);
    assert.deepEqual(gaps.map((g) => [g.reason, g.error.code]), [['history', 10]]);
    k.ws.terminate();
    // Under epoch B it resumes with B.
    k = await f.accept({ epoch: 'B', client_id: 10 });
    s = await k.recv(3);
    assert.deepEqual(s[3], { since: 3, epoch: 'B' });
    c.close();
    f.close();
  });

  it('without an epoch: client_id going back, or a resumed message that differs, means a restart', async () => {
    const f = await Fake.start();
    const cp = open(f.port);
    let k = await f.accept({ client_id: 5 });
    const c = await cp;
    const got = [], gaps = [];
    c.on('gap', (g) => gaps.push(g.reason));
    c.subscribe('p.x', (m) => got.push(m.text()));
    let s = await k.recv(3);
    assert.equal(s[3].epoch, undefined);
    for (const seq of [1, 2, 3]) k.send([17, s[1], 'p.x', seq, bin(`old${seq}`)]);
    await until(() => got.length === 3, 'three');
    k.ws.terminate();
    // Higher client_id: the client asks for its last message again to compare it.
    k = await f.accept({ client_id: 9 });
    s = await k.recv(3);
    assert.deepEqual(s[3], { since: 2 });
    k.send([17, s[1], 'p.x', 3, bin('old3'), { replay: true }]); // the same: no restart
    k.send([17, s[1], 'p.x', 4, bin('old4')]);
    await until(() => got.length === 4, 'four');
    k.ws.terminate();
    k = await f.accept({ client_id: 12 });
    s = await k.recv(3);
    assert.deepEqual(s[3], { since: 3 });
    k.send([17, s[1], 'p.x', 4, bin('new4'), { replay: true }]); // differs: a new broker
    const un = await k.recv(4);
    assert.equal(un[1], s[1]);
    const s2 = await k.recv(3);
    assert.notEqual(s2[1], s[1]);
    assert.deepEqual(s2[3], { since: 0 });
    k.send([17, s[1], 'p.x', 5, bin('stale sid')]);
    for (const seq of [1, 2, 3, 4]) k.send([17, s2[1], 'p.x', seq, bin(`new${seq}`), { replay: true }]);
    await until(() => got.length === 8, 'eight');
    assert.deepEqual(got, ['old1', 'old2', 'old3', 'old4', 'new1', 'new2', 'new3', 'new4']);
    k.ws.terminate();
    // client_id going back: since 0 straight away.
    k = await f.accept({ client_id: 1 });
    s = await k.recv(3);
    assert.deepEqual(s[3], { since: 0 });
    k.send([17, s[1], 'p.x', 1, bin('newer1'), { replay: true }]);
    await until(() => got.length === 9, 'nine');
    // A live seq that goes back: the same.
    k.send([17, s[1], 'p.x', 1, bin('live1')]);
    const s3 = await k.recv(3);
    assert.deepEqual(s3[3], { since: 0 });
    assert.deepEqual(gaps, ['restart', 'restart', 'restart']);
    c.close();
    f.close();
  });
});
