// SPDX-License-Identifier: MIT
// herald.js in headless Chromium over wss://: the page imports /herald.js from the broker over
// https and connects with wss:// to the broker's own TLS, trusted through an NSS database holding
// the test CA (certutil, in a temporary HOME). The same page in a Chromium without that CA fails.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect } from '../../client/js/herald.js';
import { CHROMIUM, CHROMIUM_FLAGS, onEnd, playwright, servePage, startBroker, testCerts, until,
  WebSocket } from './support.mjs';

/** A HOME whose NSS database (the one Chromium reads on Linux) trusts `ca` as a CA, if given. */
function browserHome(ca) {
  const home = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
  onEnd(() => rmSync(home, { recursive: true, force: true }));
  if (ca) {
    const db = path.join(home, '.pki', 'nssdb');
    mkdirSync(db, { recursive: true });
    execFileSync('certutil', ['-d', `sql:${db}`, '-N', '--empty-password'], { timeout: 30000 });
    execFileSync('certutil', ['-d', `sql:${db}`, '-A', '-t', 'C,,', '-n', 'Herald Test CA', '-i', ca],
      { timeout: 30000 });
  }
  return home;
}

/** What a raw WebSocket to `url` does in `page`: 'open', or 'closed <code>'. */
const tryWss = (page, url) => page.evaluate((u) => new Promise((resolve) => {
  const w = new WebSocket(u, 'herald.v1');
  w.onopen = () => {
    w.close();
    resolve('open');
  };
  w.onclose = (ev) => resolve(`closed ${ev.code}`);
}), url);

describe('herald.js in headless Chromium over wss://', { timeout: 180000 }, () => {
  let web, broker, certs, trusted, untrusted;

  before(async () => {
    for (const tool of [CHROMIUM, '/usr/bin/certutil']) {
      if (!existsSync(tool)) throw new Error(`FAIL: ${tool} not found; install it with scripts/deps.sh browser`);
    }
    certs = testCerts();
    web = await servePage();
    broker = await startBroker('--tls-cert', certs.file('server.pem'), '--tls-key', certs.file('server.key'));
    const launch = (home) => playwright().chromium.launch({
      executablePath: CHROMIUM, args: CHROMIUM_FLAGS, timeout: 60000, env: { ...process.env, HOME: home },
    });
    trusted = await launch(browserHome(certs.file('ca.pem')));
    untrusted = await launch(browserHome(null));
  });

  after(async () => {
    if (trusted) await trusted.close();
    if (untrusted) await untrusted.close();
    if (broker) assert.equal(await broker.stop(), 0, 'herald exit status');
  });

  it('talks to Node through the broker with wss:// and https:// for /herald.js', async () => {
    const page = await trusted.newPage();
    page.on('console', (m) => console.log(`# page: ${m.text()}`));
    page.on('pageerror', (e) => console.log(`# page error: ${e}`));
    await page.goto(`http://127.0.0.1:${web.address().port}/?scheme=https&port=${broker.ws}`);
    await page.waitForFunction(() => window.t?.ready, null, { timeout: 20000 });
    assert.equal(await page.evaluate(() => window.client.url), `wss://127.0.0.1:${broker.ws}/`);

    const node = await connect(`wss://127.0.0.1:${broker.ws}/`, { WebSocket, wsOptions: { ca: certs.read('ca.pem') } });
    onEnd(() => node.close());
    const nodeGot = [];
    await node.subscribe('b.>', (m) => nodeGot.push(m.text())).ready;
    await node.publish('b.x', 'from node');
    assert.equal(await page.evaluate(() => window.pub('b.x', 'from the page')), 2);
    await until(() => nodeGot.length === 2, 'both messages at the node');
    assert.deepEqual(nodeGot, ['from node', 'from the page']);
    await page.waitForFunction(() => window.t.got.length === 2, null, { timeout: 10000 });
    const rendered = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(rendered, ['b.x #1: from node', 'b.x #2: from the page']);
    assert.equal(await tryWss(page, `wss://127.0.0.1:${broker.ws}/`), 'open');
    node.close();
    await page.close();
  });

  it('fails without the test CA, so the trust above is what made it work', async () => {
    const page = await untrusted.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${web.address().port}/?scheme=https&port=${broker.ws}`);
    await until(() => errors.length > 0, 'the import of /herald.js over https to fail');
    assert.equal(await page.evaluate(() => window.t), undefined);
    assert.equal(await tryWss(page, `wss://127.0.0.1:${broker.ws}/`), 'closed 1006');
    await page.close();
  });
});
