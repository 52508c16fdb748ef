// SPDX-License-Identifier: MIT
// The demo chat (/demo/ with --demo) in headless Chromium: two people in a room exchange
// messages, see each other typing and their unread counters, and a reload shows the history
// without duplicates. Presence and `last` need broker features that HERALD_DEMO_FULL=1 turns on;
// HERALD_DEMO_SCRIPTED=1 runs it all against tests/js/mini_broker.mjs, which has them.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { connect, encode } from '../../client/js/herald.js';
import { miniBroker } from './mini_broker.mjs';
import { CHROMIUM, CHROMIUM_FLAGS, playwright, startBroker, WebSocket } from './support.mjs';

const SCRIPTED = process.env.HERALD_DEMO_SCRIPTED === '1';
const FULL = process.env.HERALD_DEMO_FULL === '1' || SCRIPTED;
const NEEDS_FULL = !FULL && 'needs presence and last in the broker: set HERALD_DEMO_FULL=1';

describe('the demo chat', { timeout: 180000 }, () => {
  let broker, browser, alice, bob, node;
  const base = () => `http://127.0.0.1:${broker.ws}/demo/`;

  async function person(name, room = 'general') {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 640 } });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => console.log(`# ${name}: page error: ${e}`));
    await page.goto(`${base()}?name=${name}&room=${room}`);
    await page.waitForFunction(() => window.demo?.ready && window.demo.status === 'connected', null, { timeout: 20000 });
    return page;
  }
  const say = async (page, text) => {
    await page.fill('#text', text);
    await page.press('#text', 'Enter');
  };
  const lines = (page) => page.$$eval('#messages li[data-seq]', (lis) => lis.map((li) => ({
    seq: Number(li.dataset.seq), from: li.querySelector('.from').textContent, text: li.querySelector('.text').textContent,
  })));
  const waitLines = (page, n) => page.waitForFunction((k) => document.querySelectorAll('#messages li[data-seq]').length >= k, n, { timeout: 15000 });

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`FAIL: ${CHROMIUM} not found; install it with scripts/deps.sh browser`);
    broker = SCRIPTED ? await miniBroker() : await startBroker('--demo');
    browser = await playwright().chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, timeout: 60000 });
    node = await connect(`ws://127.0.0.1:${broker.ws}/`, { WebSocket });
  });

  after(async () => {
    node?.close();
    if (browser) await browser.close();
    if (broker) assert.equal(await broker.stop(), 0, 'herald exit status');
  });

  it('is served under /demo/ and loads /herald.js', async () => {
    for (const p of ['/demo/', '/demo/app.js', '/demo/style.css', '/herald.js']) {
      assert.equal((await fetch(`http://127.0.0.1:${broker.ws}${p}`)).status, 200, p);
    }
    alice = await person('alice');
    bob = await person('bob');
    assert.equal(await alice.textContent('#room-title'), '# general');
  });

  it('exchanges messages between two people', async () => {
    await say(alice, 'hello from alice');
    await waitLines(bob, 1);
    await say(bob, 'hi alice, bob here');
    await waitLines(alice, 2);
    for (const page of [alice, bob]) {
      const l = await lines(page);
      assert.deepEqual(l.map((x) => [x.seq, x.from, x.text]), [[1, 'alice', 'hello from alice'], [2, 'bob', 'hi alice, bob here']]);
    }
    assert.equal(await alice.getAttribute('#messages li[data-seq="1"]', 'class'), 'mine');
  });

  it('shows who is typing and counts unread messages in other rooms', async () => {
    await alice.type('#text', 'typing…');
    await bob.waitForFunction(() => document.getElementById('typing').textContent === 'alice is typing…', null, { timeout: 10000 });
    await alice.fill('#text', '');
    await node.publish('chat.random', encode({ from: 'carol', text: 'anyone in random?' }));
    await node.publish('chat.random', encode({ from: 'carol', text: 'hello?' }));
    await bob.waitForFunction(() => window.demo.unread.random === 2, null, { timeout: 10000 });
    assert.equal(await bob.textContent('#rooms li[data-room="random"] .badge'), '2');
    await bob.click('#rooms li[data-room="random"]');
    await bob.waitForFunction(() => window.demo.ready && window.demo.room === 'random', null, { timeout: 10000 });
    await waitLines(bob, 2);
    assert.equal(await bob.textContent('#rooms li[data-room="random"] .badge'), '');
    assert.deepEqual((await lines(bob)).map((x) => x.text), ['anyone in random?', 'hello?']);
    await bob.click('#rooms li[data-room="general"]');
    await bob.waitForFunction(() => window.demo.ready && window.demo.room === 'general', null, { timeout: 10000 });
  });

  it('shows the history once after a reload', async () => {
    for (let i = 3; i <= 8; i++) await say(bob, `message ${i}`);
    await waitLines(alice, 8);
    if (process.env.HERALD_DEMO_SCREENSHOT) {
      await alice.fill('#text', 'see you');
      await alice.screenshot({ path: process.env.HERALD_DEMO_SCREENSHOT });
      await alice.fill('#text', '');
    }
    await alice.reload();
    await alice.waitForFunction(() => window.demo?.ready, null, { timeout: 20000 });
    await waitLines(alice, 8);
    await say(bob, 'after the reload');
    await waitLines(alice, 9);
    const l = await lines(alice);
    assert.deepEqual(l.map((x) => x.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(l[0].text, 'hello from alice');
    assert.equal(l[8].text, 'after the reload');
    assert.equal(await alice.evaluate(() => window.demo.replayed), 8);
  });

  it('lists who is here, with counts (presence)', { skip: NEEDS_FULL }, async () => {
    for (const page of [alice, bob]) {
      await page.waitForFunction(() => window.demo.presence.supported && window.demo.presence.count === 2, null, { timeout: 10000 });
      assert.deepEqual(await page.evaluate(() => window.demo.presence.names), ['alice', 'bob']);
      assert.equal(await page.textContent('#count'), '2');
    }
    await bob.click('#rooms li[data-room="random"]');
    await alice.waitForFunction(() => window.demo.presence.count === 1, null, { timeout: 10000 });
    assert.deepEqual(await alice.evaluate(() => window.demo.presence.names), ['alice']);
    await bob.click('#rooms li[data-room="general"]');
    await alice.waitForFunction(() => window.demo.presence.count === 2, null, { timeout: 10000 });
  });

  it('hides presence where the broker has none', { skip: FULL && 'the broker has presence' }, async () => {
    assert.equal(await alice.evaluate(() => window.demo.presence.supported), false);
    assert.ok(await alice.$eval('#presence', (el) => el.classList.contains('unavailable')));
  });

  it('joins with the last 50 messages only (last)', { skip: NEEDS_FULL }, async () => {
    for (let i = 0; i < 60; i++) await node.publish('chat.herald-dev', encode({ from: 'bot', text: `n${i}` }));
    await alice.click('#rooms li[data-room="herald-dev"]');
    await alice.waitForFunction(() => window.demo.ready && window.demo.room === 'herald-dev', null, { timeout: 10000 });
    await waitLines(alice, 50);
    assert.equal(await alice.evaluate(() => window.demo.replayed), 50, 'the broker replayed exactly `last`');
    const l = await lines(alice);
    assert.deepEqual([l.length, l[0].seq, l.at(-1).seq], [50, 11, 60]);
  });
});
