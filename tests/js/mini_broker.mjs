// SPDX-License-Identifier: MIT
// A scripted stand-in for the broker with the protocol additions the demo chat uses (`last`,
// `presence` and $PRES, `conflate` accepted and ignored), so the page's full behaviour is tested
// before the real broker has them. One process, no limits, no auth: tests only.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { msgpack, WebSocketServer } from './support.mjs';

const ROOT = new URL('../../', import.meta.url);
const FILES = {
  '/herald.js': ['client/js/herald.js', 'text/javascript; charset=utf-8'],
  '/demo/': ['examples/demo/index.html', 'text/html; charset=utf-8'],
  '/demo/app.js': ['examples/demo/app.js', 'text/javascript; charset=utf-8'],
  '/demo/style.css': ['examples/demo/style.css', 'text/css; charset=utf-8'],
};

function matches(pattern, topic) {
  const p = pattern.split('.'), t = topic.split('.');
  if (t[0].startsWith('$') && (p[0] === '*' || p[0] === '>')) return false;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return t.length > i;
    if (i >= t.length || (p[i] !== '*' && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}

export async function miniBroker() {
  const topics = new Map(); // topic -> {seq, hist: [[seq, payload, opts]]}
  const conns = new Set();
  let ids = 0;
  const send = (c, f) => c.ws.send(msgpack.encode(f));
  const topic = (name) => {
    if (!topics.has(name)) topics.set(name, { seq: 0, hist: [] });
    return topics.get(name);
  };
  const members = (name) => [...conns].flatMap((c) => [...c.subs.values()]
    .filter((s) => s.pattern === name && s.presence).map((s) => [c.id, s.presence]));
  // Presence changes go out at once (the real broker coalesces them).
  const presence = (name, change) => {
    const t = topic(`$PRES.${name}`);
    const count = new Set(members(name).map((m) => m[0])).size;
    for (const c of conns) {
      for (const [sid, s] of c.subs) {
        if (s.pattern === `$PRES.${name}`) {
          send(c, [17, sid, s.pattern, ++t.seq, msgpack.encode({ count, ...change })]);
        }
      }
    }
  };
  const drop = (c, sid) => {
    const s = c.subs.get(sid);
    c.subs.delete(sid);
    if (s?.presence) presence(s.pattern, { joined: [], left: [c.id] });
  };

  function handle(c, f) {
    switch (f[0]) {
      case 1:
        send(c, [16, { v: 1, server: 'mini', client_id: c.id, worker: 0, max_payload: 1 << 20,
          max_frame: (1 << 20) + 4096, heartbeat_ms: 30000 }]);
        break;
      case 2: {
        const [, name, payload, opts] = f;
        const t = topic(name);
        const seq = ++t.seq;
        const mo = opts?.reply || opts?.headers ? { reply: opts.reply, headers: opts.headers } : undefined;
        t.hist.push([seq, payload, mo]);
        for (const d of conns) {
          for (const [sid, s] of d.subs) if (matches(s.pattern, name)) send(d, [17, sid, name, seq, payload, mo]);
        }
        if (opts?.ack !== undefined) send(c, [18, opts.ack, seq]);
        break;
      }
      case 3: {
        const [, sid, pattern, opts = {}] = f;
        if (c.subs.has(sid)) drop(c, sid);
        if (pattern.startsWith('$PRES.')) {
          const name = pattern.slice(6);
          const m = members(name);
          c.subs.set(sid, { pattern });
          send(c, [17, sid, pattern, ++topic(pattern).seq,
            msgpack.encode({ count: new Set(m.map((x) => x[0])).size, members: m }), { replay: true }]);
          break;
        }
        for (const [name, t] of topics) {
          if (!matches(pattern, name) || (opts.since === undefined && opts.last === undefined)) continue;
          const from = Math.max(opts.since ?? 0, opts.last !== undefined ? t.seq - opts.last : 0);
          for (const [seq, payload, mo] of t.hist) {
            if (seq > from) send(c, [17, sid, name, seq, payload, { ...mo, replay: true }]);
          }
        }
        c.subs.set(sid, { pattern, presence: opts.presence });
        if (opts.presence) presence(pattern, { joined: [[c.id, opts.presence]], left: [] });
        break;
      }
      case 4:
        drop(c, f[1]);
        break;
      case 5:
        send(c, [6, f[1]]);
        break;
      default:
        break;
    }
  }

  const server = http.createServer((req, res) => {
    const f = FILES[new URL(req.url, 'http://x').pathname];
    if (!f) res.writeHead(404).end();
    else res.writeHead(200, { 'Content-Type': f[1] }).end(readFileSync(new URL(f[0], ROOT)));
  });
  const wss = new WebSocketServer({ server, handleProtocols: () => 'herald.v1' });
  wss.on('connection', (ws) => {
    const c = { id: ++ids, ws, subs: new Map() };
    conns.add(c);
    ws.on('message', (d) => handle(c, msgpack.decode(d)));
    ws.on('close', () => {
      conns.delete(c);
      for (const sid of [...c.subs.keys()]) drop(c, sid);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    ws: server.address().port,
    async stop() {
      for (const c of conns) c.ws.terminate();
      wss.close();
      await new Promise((r) => server.close(r));
      return 0;
    },
  };
}
