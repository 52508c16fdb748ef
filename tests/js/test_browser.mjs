// SPDX-License-Identifier: MIT
// herald.js in headless Chromium: a page imports /herald.js straight from the broker, publishes
// and subscribes, and keeps its stream without duplicates through a broker killed and restarted.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { connect } from '../../client/js/herald.js';
import { CHROMIUM, CHROMIUM_FLAGS, onEnd, playwright, restartableBroker, servePage, sleep, until,
  WebSocket } from './support.mjs';

describe('herald.js in headless Chromium', { timeout: 180000 }, () => {
  let web, browser, broker;

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`FAIL: ${CHROMIUM} not found; install it with scripts/deps.sh browser`);
    web = await servePage(); // its own origin: the broker's CORS header lets it import /herald.js
    broker = await restartableBroker('--history-msgs', '1000');
    browser = await playwright().chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, timeout: 60000 });
  });

  after(async () => {
    if (browser) await browser.close();
    if (broker) await broker.stop();
  });

  it('publishes and subscribes, then keeps the stream through a broker restart', async () => {
    const page = await browser.newPage();
    page.on('console', (m) => console.log(`# page: ${m.text()}`));
    page.on('pageerror', (e) => console.log(`# page error: ${e}`));
    await page.goto(`http://127.0.0.1:${web.address().port}/?port=${broker.ws}`);
    await page.waitForFunction(() => window.t?.ready, null, { timeout: 20000 });

    const node = await connect(`ws://127.0.0.1:${broker.ws}/`, { WebSocket, reconnectWaitMs: 20, reconnectWaitMaxMs: 200 });
    onEnd(() => node.close());
    const nodeGot = [];
    await node.subscribe('b.>', (m) => nodeGot.push(m.text())).ready;
    for (let i = 1; i <= 5; i++) await node.publish('b.x', `node ${i}`);
    assert.equal(await page.evaluate(() => window.pub('b.x', 'from the page')), 6);
    await until(() => nodeGot.length === 6, 'the page\'s message at the node');
    await page.waitForFunction(() => window.t.got.length === 6, null, { timeout: 10000 });
    const rendered = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(rendered, [1, 2, 3, 4, 5].map((i) => `b.x #${i}: node ${i}`).concat('b.x #6: from the page'));

    // A stream from Node; the broker is SIGKILLed in the middle and started again.
    let n = 0, stop = false, down = false;
    const fresh = [];
    const stream = (async () => {
      while (!stop) {
        const k = ++n;
        node.publish('b.stream', String(k)).then(() => down && fresh.push(k), () => {});
        await sleep(4);
      }
    })();
    await page.waitForFunction(() => window.t.got.filter((g) => g.topic === 'b.stream').length >= 40, null, { timeout: 20000 });
    await broker.kill();
    await sleep(300);
    down = true; // acks from here on come from the new broker
    await broker.start();
    await until(() => fresh.length >= 40, 'acks from the new broker', 20000);
    stop = true;
    await stream;
    await page.waitForFunction((want) => {
      const have = new Set(window.t.got.map((g) => g.text));
      return want.every((k) => have.has(String(k)));
    }, fresh, { timeout: 20000 });
    const t = await page.evaluate(() => window.t);
    const texts = t.got.filter((g) => g.topic === 'b.stream').map((g) => g.text);
    assert.equal(new Set(texts).size, texts.length, 'no message shown twice');
    assert.ok(t.gaps.length >= 1 && t.gaps.every((r) => r === 'restart' || r === 'history'), JSON.stringify(t.gaps));
    assert.deepEqual(t.states.slice(0, 2), ['disconnected', 'reconnected']);
    node.close();
    await page.close();
  });
});
