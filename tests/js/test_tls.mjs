// SPDX-License-Identifier: MIT
// herald.js in Node over wss:// against the broker's own TLS: the test CA through wsOptions and
// through NODE_EXTRA_CA_CERTS, certificates refused with ETLS, a client certificate, and resume
// after a cut connection.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { connect } from '../../client/js/herald.js';
import { onEnd, proxy, startBroker, testCerts, until, WebSocket } from './support.mjs';

describe('herald.js over wss://', { timeout: 120000 }, () => {
  let certs, broker, strict;
  const open = async (port, wsOptions, o = {}) => {
    const c = await connect(`wss://127.0.0.1:${port}/`, { WebSocket, wsOptions, reconnectWaitMs: 20, reconnectWaitMaxMs: 200, ...o });
    onEnd(() => c.close());
    return c;
  };

  before(async () => {
    certs = testCerts();
    const tls = ['--tls-cert', certs.file('server.pem'), '--tls-key', certs.file('server.key')];
    broker = await startBroker('--history-msgs', '10000', ...tls);
    // A second broker that requires client certificates signed by the test CA.
    strict = await startBroker(...tls, '--tls-ca', certs.file('ca.pem'), '--tls-verify', 'required');
  });
  after(async () => {
    assert.equal(await broker.stop(), 0, 'herald exit status');
    assert.equal(await strict.stop(), 0, 'herald exit status');
  });

  it('publishes, subscribes and answers requests with the test CA in wsOptions', async () => {
    const ca = certs.read('ca.pem');
    const a = await open(broker.ws, { ca });
    const b = await open(broker.ws, { ca, servername: 'localhost' });
    const got = [];
    await a.subscribe('tls.>', (m) => got.push(m.text())).ready;
    b.subscribe('svc.echo', (m) => m.respond(`echo ${m.text()}`));
    await b.flush();
    const big = 'x'.repeat(100000); // several TLS records
    assert.equal(await b.publish('tls.a', 'hello'), 1);
    assert.equal(await b.publish('tls.a', big), 2);
    await until(() => got.length === 2, 'two messages');
    assert.deepEqual(got, ['hello', big]);
    const reply = await a.request('svc.echo', 'ping', { timeoutMs: 3000 });
    assert.equal(reply.text(), 'echo ping');
  });

  it('refuses a server it cannot verify with ETLS and the reason', async () => {
    const cases = [
      [{}, /verify|issuer|self[- ]signed/i], // the system's CAs only
      [{ ca: certs.read('rogue-ca.pem') }, /issuer|verify|self[- ]signed/i],
      [{ ca: certs.read('ca.pem'), servername: 'wrong.example' }, /wrong\.example|altname|Hostname/i],
    ];
    for (const [wsOptions, why] of cases) {
      const err = await connect(`wss://127.0.0.1:${broker.ws}/`, { WebSocket, wsOptions }).then(
        () => assert.fail('connected'), (e) => e);
      assert.equal(err.code, 'ETLS', err.message);
      assert.match(err.message, why);
    }
    // wss:// to a plaintext port is a TLS failure too, and ws:// to a TLS port fails.
    const plain = await startBroker();
    const err = await connect(`wss://127.0.0.1:${plain.ws}/`, { WebSocket }).then(() => assert.fail('connected'), (e) => e);
    assert.equal(err.code, 'ETLS', err.message);
    await assert.rejects(connect(`ws://127.0.0.1:${broker.ws}/`, { WebSocket }));
    assert.equal(await plain.stop(), 0);
  });

  it('presents a client certificate to a broker that requires one', async () => {
    const ca = certs.read('ca.pem');
    const c = await open(strict.ws, { ca, cert: certs.read('client.pem'), key: certs.read('client.key') });
    assert.equal(await c.publish('cc.x', 'hi'), 1);
    await assert.rejects(connect(`wss://127.0.0.1:${strict.ws}/`, { WebSocket, wsOptions: { ca } }));
    await assert.rejects(connect(`wss://127.0.0.1:${strict.ws}/`, {
      WebSocket, wsOptions: { ca, cert: certs.read('rogue-client.pem'), key: certs.read('rogue-client.key') },
    }));
  });

  it('resumes without a gap or a duplicate after the TLS connection is cut', async () => {
    const px = await proxy(broker.ws);
    const ca = certs.read('ca.pem');
    const sub = await open(px.port, { ca, servername: 'localhost' });
    const pub = await open(broker.ws, { ca });
    const seqs = [];
    await sub.subscribe('tls.stream', (m) => seqs.push(m.seq)).ready;
    let states = 0;
    sub.on('reconnected', () => states++);
    for (let i = 0; i < 300; i++) {
      if (i === 100 || i === 200) px.cut();
      await pub.publish('tls.stream', String(i));
    }
    await until(() => seqs.length >= 300, 'every message', 15000);
    assert.deepEqual(seqs, Array.from({ length: 300 }, (_, i) => i + 1));
    assert.ok(states >= 1, 'reconnected');
  });

  it('trusts the test CA through NODE_EXTRA_CA_CERTS without wsOptions', async () => {
    // A separate Node process: the variable is read when Node starts.
    const script = `
      import { createRequire } from 'node:module';
      const require = createRequire(${JSON.stringify(new URL('../ws/package.json', import.meta.url).pathname)});
      const { connect } = await import(${JSON.stringify(new URL('../../client/js/herald.js', import.meta.url).href)});
      const c = await connect('wss://127.0.0.1:${broker.ws}/', { WebSocket: require('ws') });
      console.log('seq', await c.publish('extra.ca', 'x'));
      c.close();`;
    const run = (env) => new Promise((resolve) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, timeout: 20000 },
        (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }));
    });
    const ok = await run({ NODE_EXTRA_CA_CERTS: certs.file('ca.pem') });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), 'seq 1');
    const refused = await run({ NODE_EXTRA_CA_CERTS: '' });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /ETLS|certificate/);
  });
});
