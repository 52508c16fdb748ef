// SPDX-License-Identifier: MIT
// The JavaScript client against the real broker over WebSocket: connect, publish with acks,
// subscribe (exact, wildcards, queue, echo off), since replay, request/reply, flush, drain,
// ERR frames surfaced as errors, tokens and their refresh, /herald.js served by the broker.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import * as herald from '../../client/js/herald.js';
import { jwt, onEnd, proxy, sleep, startBroker, until, WebSocket } from './support.mjs';

const { Client, connect, HeraldError } = herald;
const url = (b) => `ws://127.0.0.1:${b.ws}/`;
const open = async (b, o = {}) => {
  const c = await connect(url(b), { WebSocket, reconnectWaitMs: 20, ...o });
  onEnd(() => c.close());
  return c;
};

describe('herald.js against the broker', { timeout: 120000 }, () => {
  let broker;
  const clients = [];
  const client = async (o) => {
    const c = await open(broker, o);
    clients.push(c);
    return c;
  };

  before(async () => {
    broker = await startBroker('--history-msgs', '20');
  });
  after(async () => {
    for (const c of clients) c.close();
    assert.equal(await broker.stop(), 0, 'herald exit status');
  });

  it('connects and reports the WELCOME', async () => {
    const c = await client({ name: 'js-test' });
    assert.equal(c.state, 'connected');
    assert.equal(c.welcome.v, 1);
    assert.ok(c.clientId >= 1);
    assert.ok(c.welcome.max_payload > 0);
    await c.flush();
  });

  it('publishes with acks and delivers in seq order with headers and replay flags', async () => {
    const c = await client();
    const got = [];
    const sub = c.subscribe('t.order', (m) => got.push(m));
    await sub.ready;
    const seqs = await Promise.all([1, 2, 3].map((i) => c.publish('t.order', `m${i}`, { headers: { i: String(i) } })));
    assert.deepEqual(seqs, [1, 2, 3]);
    await until(() => got.length === 3, 'three messages');
    assert.deepEqual(got.map((m) => [m.topic, m.seq, m.text(), m.headers.i, m.replay]),
      [['t.order', 1, 'm1', '1', false], ['t.order', 2, 'm2', '2', false], ['t.order', 3, 'm3', '3', false]]);
    assert.equal(sub.lastSeq(), 3);
    // JSON, MessagePack and binary payloads.
    await c.publishJSON('t.order', { a: [1, 'x'] });
    await c.publish('t.order', herald.encode({ big: 2n ** 63n }));
    await c.publish('t.order', new Uint8Array([0, 255, 7]), { ack: false });
    await c.flush();
    await until(() => got.length === 6, 'six messages');
    assert.deepEqual(got[3].json(), { a: [1, 'x'] });
    assert.equal(got[4].unpack().big, 2n ** 63n);
    assert.deepEqual([...got[5].data], [0, 255, 7]);
  });

  it('matches wildcards, skips echo when asked, shares queue groups', async () => {
    const a = await client({ echo: false });
    const b = await client();
    const star = [], gt = [], own = [], q1 = [], q2 = [];
    const subs = [
      b.subscribe('w.*.x', (m) => star.push(m.topic)),
      b.subscribe('w.>', (m) => gt.push(m.topic)),
      a.subscribe('w.>', (m) => own.push(m.topic)),
      a.subscribe('q.jobs', { queue: 'workers' }, (m) => q1.push(m.seq)),
      b.subscribe('q.jobs', { queue: 'workers' }, (m) => q2.push(m.seq)),
    ];
    await Promise.all(subs.map((s) => s.ready));
    for (const t of ['w.1.x', 'w.2.y', 'w.3.x', 'w.a.b.c']) await a.publish(t, 'p');
    for (let i = 0; i < 20; i++) await a.publish('q.jobs', `${i}`);
    await b.flush();
    await until(() => gt.length === 4 && q1.length + q2.length === 20, 'deliveries');
    assert.deepEqual(star, ['w.1.x', 'w.3.x']);
    assert.deepEqual(gt, ['w.1.x', 'w.2.y', 'w.3.x', 'w.a.b.c']);
    await a.flush();
    assert.deepEqual(own, [], 'echo: false');
    assert.deepEqual([...q1, ...q2].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('replays retained history with since, then goes live without a duplicate', async () => {
    const c = await client();
    for (let i = 1; i <= 5; i++) await c.publish('h.room', `h${i}`);
    const got = [];
    const sub = c.subscribe('h.room', { since: 2 }, (m) => got.push([m.seq, m.replay]));
    await sub.ready;
    await c.publish('h.room', 'h6');
    await until(() => got.length === 4, 'replay and live');
    assert.deepEqual(got, [[3, true], [4, true], [5, true], [6, false]]);
    // last (replayed by brokers that have it) with since: 0 as the fallback for those that do not.
    const all = [];
    await c.subscribe('h.room', { since: 0, last: 2 }, (m) => all.push(m.seq)).ready;
    await c.flush();
    assert.ok(all.length === 2 || all.length === 6, `last or all history, got ${all}`);
    assert.equal(all.at(-1), 6);
  });

  it('reports ERR 10 when since is older than the history', async () => {
    const c = await client();
    for (let i = 0; i < 25; i++) await c.publish('h.gap', `${i}`);
    const gaps = [], got = [];
    const sub = c.subscribe('h.gap', { since: 1, onGap: (g) => gaps.push(g) }, (m) => got.push(m.seq));
    await sub.ready;
    await until(() => got.length === 20, 'the retained history');
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].reason, 'history');
    assert.equal(gaps[0].error.code, 10);
    assert.equal(gaps[0].error.ref, sub.sid);
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i + 6));
  });

  it('answers requests over an inbox and times out without a responder', async () => {
    const server = await client();
    const c = await client();
    await server.subscribe('svc.upper', (m) => m.respond(m.text().toUpperCase())).ready;
    const replies = await Promise.all(['a', 'bc', 'def'].map((s) => c.request('svc.upper', s)));
    assert.deepEqual(replies.map((m) => m.text()), ['A', 'BC', 'DEF']);
    assert.ok(replies[0].topic.startsWith('_INBOX.'));
    await assert.rejects(c.request('svc.nobody', 'x', { timeoutMs: 200 }), { code: 'ETIMEDOUT' });
  });

  it('rejects what the client can judge by itself', async () => {
    const c = await client();
    await assert.rejects(c.publish('bad..topic', 'x'), { code: 'ETOPIC' });
    await assert.rejects(c.publish('$SYS.x', 'x'), { code: 'ETOPIC' });
    await assert.rejects(c.publish('a.b', new Uint8Array(c.welcome.max_payload + 1)), { code: 'ETOOBIG' });
    assert.throws(() => c.subscribe('a.>.b', () => {}), { code: 'ETOPIC' });
    await assert.rejects(c.publish('a', {}), TypeError);
  });

  it('buffers publishes and subscriptions made before the connection is up', async () => {
    const c = new Client(url(broker), { WebSocket });
    clients.push(c);
    const got = [];
    const sub = c.subscribe('early.x', (m) => got.push(m.text()));
    assert.equal(c.state, 'connecting');
    assert.equal(await c.publish('early.x', 'before the WELCOME'), 1);
    await sub.ready;
    await until(() => got.length === 1, 'the buffered message');
    assert.deepEqual(got, ['before the WELCOME']);
  });

  it('settles what waits for a connection when closed', async () => {
    const c = new Client('ws://127.0.0.1:1/', { WebSocket, retryOnFailedConnect: true, reconnectWaitMs: 5 });
    onEnd(() => c.close());
    const sub = c.subscribe('x.y', () => {});
    const p = c.publish('x.y', 'buffered');
    const r = c.request('x.y', 'q', { timeoutMs: 5000 });
    await sleep(100); // attempts fail meanwhile; none of these give up
    c.close();
    for (const w of [sub.ready, p, r, c.ready]) await assert.rejects(w, { code: 'ECLOSED' });
  });

  it('drains: outstanding acks complete, then the client closes', async () => {
    const c = await open(broker);
    const states = [];
    c.on('closed', (e) => states.push(e));
    const acks = [];
    for (let i = 0; i < 50; i++) acks.push(c.publish('d.x', `${i}`));
    await c.drain(5000);
    assert.equal((await Promise.all(acks)).at(-1), 50);
    assert.equal(c.state, 'closed');
    assert.deepEqual(states, [undefined]);
    await assert.rejects(c.publish('d.x', 'late'), { code: 'ECLOSED' });
  });

  it('serves itself: GET /herald.js is this file', async () => {
    const r = await fetch(`http://127.0.0.1:${broker.ws}/herald.js`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    assert.equal(await r.text(), readFileSync(new URL('../../client/js/herald.js', import.meta.url), 'utf8'));
    assert.equal((await fetch(`http://127.0.0.1:${broker.ws}/demo/`)).status, 404, 'no demo without --demo');
    const off = await startBroker('--demo=no');
    try {
      assert.equal((await fetch(`http://127.0.0.1:${off.ws}/demo/`)).status, 404, '--demo=no');
      assert.equal((await fetch(`http://127.0.0.1:${off.ws}/herald.js`)).status, 200);
    } finally {
      assert.equal(await off.stop(), 0);
    }
  });
});

describe('herald.js and ERR frames', { timeout: 60000 }, () => {
  const secret = 'a-secret-of-at-least-thirty-two-bytes!!';
  let broker;
  before(async () => {
    broker = await startBroker('--jwt-hs256-secret', secret, '--auth-anonymous', 'pub=pub.> sub=pub.>');
  });
  after(async () => assert.equal(await broker.stop(), 0, 'herald exit status'));

  it('turns ERR 4 into rejected publishes and subscriptions (code, ref)', async () => {
    const c = await open(broker);
    const errors = [];
    c.on('error', (e) => errors.push(e));
    await c.publish('pub.ok', 'fine');
    const e = await c.publish('other.topic', 'no').catch((x) => x);
    assert.ok(e instanceof HeraldError);
    assert.equal(e.code, 4);
    assert.equal(typeof e.ref, 'number');
    const subErrs = [];
    const sub = c.subscribe('other.>', { onError: (x) => subErrs.push(x) }, () => {});
    const se = await sub.ready.catch((x) => x);
    assert.equal(se.code, 4);
    assert.equal(se.ref, sub.sid);
    assert.equal(subErrs.length, 1);
    assert.equal(errors.length, 1, 'the subscription refusal is reported as an error event');
    assert.equal(c.state, 'connected', 'ERR 4 leaves the connection open');
    c.close();
  });

  it('fails the first connection on ERR 3 and gets a token from tokenRefresh', async () => {
    await assert.rejects(open(broker, { token: 'wrong' }), { code: 3 });
    let n = 0;
    const c = await open(broker, {
      tokenRefresh: async () => {
        n++;
        return jwt(secret, { herald: { pub: ['priv.>'], sub: ['priv.>'] } }, 2);
      },
    });
    const got = [];
    await c.subscribe('priv.x', (m) => got.push(m.seq)).ready;
    await c.publish('priv.x', 'one');
    // The token expires: the broker closes with ERR 3, the client refreshes it and resumes.
    const errs = [];
    c.on('error', (e) => errs.push(e.code));
    await until(() => n >= 2 && c.state === 'connected', 'a refreshed token', 10000);
    await c.publish('priv.x', 'two');
    await until(() => got.length === 2, 'both messages');
    assert.deepEqual(got, [1, 2]);
    assert.ok(errs.includes(3));
    c.close();
  });

  it('retries after tokenRefresh failed', async () => {
    let n = 0;
    const c = await open(broker, {
      retryOnFailedConnect: true,
      tokenRefresh: async () => {
        if (++n === 1) throw new Error('the token service is down');
        return jwt(secret, { herald: { pub: ['priv.>'], sub: ['priv.>'] } });
      },
    });
    assert.equal(n, 2);
    assert.equal(await c.publish('priv.y', 'ok'), 1);
    c.close();
  });
});

describe('herald.js on a cluster (--workers 2)', { timeout: 60000 }, () => {
  it('delivers across workers under one epoch, answers requests, resumes through a cut', async () => {
    const b = await startBroker('--workers', '2');
    const cs = [];
    for (let i = 0; i < 6; i++) cs.push(await open(b));
    assert.equal(new Set(cs.map((c) => c.epoch)).size, 1, 'one epoch for every worker');
    const got = cs.map(() => []);
    await Promise.all(cs.map((c, i) => c.subscribe('w.>', (m) => got[i].push(m.seq)).ready));
    await cs[0].subscribe('svc.x', (m) => m.respond('pong')).ready;
    for (let i = 0; i < 20; i++) await cs[i % 6].publish('w.t', `${i}`);
    await until(() => got.every((g) => g.length === 20), 'every delivery');
    for (const g of got) assert.deepEqual(g, Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal((await cs[5].request('svc.x', 'ping')).text(), 'pong');
    const px = await proxy(b.ws);
    const s = await open({ ws: px.port });
    const sg = [];
    await s.subscribe('w.t', { since: 0 }, (m) => sg.push(m.seq)).ready;
    px.cut();
    for (let i = 0; i < 10; i++) await cs[1].publish('w.t', 'more');
    await until(() => sg.length === 30, 'the resumed stream');
    assert.deepEqual(sg, Array.from({ length: 30 }, (_, i) => i + 1));
    assert.equal(await b.stop(), 0);
  });
});

describe('herald.js without a global WebSocket', () => {
  it('says so', () => {
    assert.throws(() => new Client('ws://127.0.0.1:1/', { WebSocket: null }), { code: 'ECONNECT' });
  });
});
