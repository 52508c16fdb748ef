// SPDX-License-Identifier: MIT
// Headless Chromium (Debian's, driven by playwright-core) loads a page from http://127.0.0.1 that
// subscribes, publishes and renders over WebSocket; TCP clients on the other side check seq.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startBroker, TcpClient } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

// Chromium refuses pages on about: or file: from reaching loopback: serve the page over HTTP.
function serve() {
  const files = {
    '/': ['text/html', path.join(here, 'page.html')],
    '/msgpack.min.js': ['text/javascript',
      path.join(here, 'node_modules/@msgpack/msgpack/dist.umd/msgpack.min.js')],
  };
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) {
      res.writeHead(req.url === '/favicon.ico' ? 204 : 404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': f[0] }).end(readFileSync(f[1]));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('herald in headless Chromium', { timeout: 120000 }, () => {
  let web, origin, browser;

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`FAIL: ${CHROMIUM} not found; install it with scripts/deps.sh browser`);
    }
    web = await serve();
    origin = `http://127.0.0.1:${web.address().port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, timeout: 60000 });
  });

  after(async () => {
    if (browser) await browser.close();
    if (web) web.close();
  });

  it('subscribes, publishes and renders; TCP sees the same seq', async () => {
    const broker = await startBroker('--ws-origins', origin);
    const tcp = new TcpClient(broker.tcp);
    try {
      await tcp.hello('tcp-side');
      tcp.send([3, 7, 'chat.room']);
      await tcp.sync(1);
      const page = await browser.newPage();
      page.on('console', (m) => console.log(`# page: ${m.text()}`));
      page.on('pageerror', (e) => console.log(`# page error: ${e}`));
      page.on('requestfailed', (r) => console.log(`# request failed: ${r.url()}`));
      await page.goto(`${origin}/?port=${broker.ws}&topic=chat.room`);
      await page.waitForFunction(() => window.herald.status === 'ready', null, { timeout: 20000 });
      const st = await page.evaluate(() => window.herald);
      assert.equal(st.protocol, 'herald.v1');
      assert.equal(st.extensions, '', 'permessage-deflate must be declined');
      assert.equal(st.welcome.v, 1);

      for (let i = 1; i <= 5; i++) tcp.send([2, 'chat.room', new TextEncoder().encode(`tcp says ${i}`)]);
      const tcpGot = [];
      await tcp.sync(2, tcpGot);
      await page.evaluate(() => window.heraldPublish('chat.room', 'browser says hi', 42));
      await page.waitForFunction(() => window.herald.msgs.length === 6 && window.herald.acks.length === 1,
        null, { timeout: 20000 });

      const rendered = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
      const expect = [1, 2, 3, 4, 5].map((i) => `chat.room #${i}: tcp says ${i}`);
      expect.push('chat.room #6: browser says hi');
      assert.deepEqual(rendered, expect);
      assert.deepEqual((await page.evaluate(() => window.herald.acks))[0], [42, 6]);

      while (tcpGot.length < 6) tcpGot.push(await tcp.recv());
      assert.deepEqual(tcpGot.map((f) => [f[0], f[3], new TextDecoder().decode(f[4])]),
        expect.map((s, i) => [17, i + 1, s.split(': ')[1]]));
      await page.close();
    } finally {
      tcp.close();
      assert.equal(await broker.stop(), 0, 'herald exit status');
    }
  });

  it('is refused (403) from an Origin that is not allowed', async () => {
    const broker = await startBroker('--ws-origins', 'https://chat.example');
    try {
      const page = await browser.newPage();
      await page.goto(`${origin}/?port=${broker.ws}&topic=x`);
      await page.waitForFunction(() => window.herald.closeCode !== null, null, { timeout: 20000 });
      const st = await page.evaluate(() => window.herald);
      assert.equal(st.closeCode, 1006); // the browser saw the handshake fail
      assert.equal(st.welcome, null);
      const m = await (await fetch(`http://127.0.0.1:${broker.ws}/metrics`)).text();
      assert.match(m, /^herald_http_responses_total\{status="403"\} 1$/m);
      await page.close();
    } finally {
      assert.equal(await broker.stop(), 0, 'herald exit status');
    }
  });
});
