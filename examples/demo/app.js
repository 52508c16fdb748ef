// SPDX-License-Identifier: MIT
// Herald's demo chat, on /herald.js alone: rooms with their history on join (`last`, or `since`
// on brokers without it), presence ($PRES), typing indicators (`conflate`), unread counters.
import { Client, decode, encode } from '/herald.js';

const ROOMS = ['general', 'random', 'herald-dev'];
const HISTORY = 50; // messages shown on join
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const me = params.get('name') || localStorage.getItem('herald-demo-name') ||
  `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
$('name').value = me;
$('name').addEventListener('change', () => {
  localStorage.setItem('herald-demo-name', $('name').value.trim() || me);
  location.reload();
});

// What the browser test reads.
const state = {
  ready: false, room: null, status: 'connecting', unread: {}, gaps: [], replayed: 0,
  presence: { supported: null, count: 0, names: [] },
};
window.demo = state;

const client = new Client({ name: `demo:${me}` });
let room = null; // {name, sub, typing, presence, seqs}
const unread = Object.fromEntries(ROOMS.map((r) => [r, 0]));

// ---- status ------------------------------------------------------------------------

function setStatus(text, cls) {
  state.status = text;
  $('status').textContent = text;
  $('status').className = `pill ${cls ?? ''}`;
  $('text').disabled = $('send').disabled = cls !== 'ok';
}

client.on('connected', () => setStatus('connected', 'ok'));
client.on('reconnected', () => setStatus('connected', 'ok'));
client.on('disconnected', () => setStatus('reconnecting…', 'warn'));
client.on('closed', (e) => setStatus(`closed${e ? `: ${e.message}` : ''}`));
client.on('gap', (g) => {
  state.gaps.push(g.reason);
  if (room && g.subscription === room.sub) {
    if (g.reason !== 'dropped') room.seqs.clear(); // seqs may have started again
    system(g.reason === 'restart' || g.reason === 'history'
      ? 'The server restarted or its history ran out: some messages may be missing.'
      : 'Some messages were skipped.');
  }
});

// ---- rooms and unread counters -----------------------------------------------------

function renderRooms() {
  const ul = $('rooms');
  ul.replaceChildren(...ROOMS.map((r) => {
    const li = document.createElement('li');
    li.dataset.room = r;
    li.className = room?.name === r ? 'active' : '';
    const name = document.createElement('span');
    name.textContent = `# ${r}`;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = unread[r] ? String(unread[r]) : '';
    li.append(name, badge);
    li.onclick = () => join(r);
    return li;
  }));
  state.unread = { ...unread };
}

// Every room's new messages, to count what arrives outside the room on screen.
client.subscribe('chat.*', (m) => {
  const r = m.topic.slice(5);
  if (r in unread && r !== room?.name) {
    unread[r]++;
    renderRooms();
  }
});

// ---- messages ----------------------------------------------------------------------

function system(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.textContent = text;
  $('messages').append(li);
}

function show(m) {
  let v;
  try {
    v = m.unpack();
  } catch {
    v = { from: '?', text: m.text() };
  }
  if (room.seqs.has(m.seq)) return; // the client drops duplicates; the page never shows one twice
  room.seqs.add(m.seq);
  if (m.replay) state.replayed++;
  const list = $('messages');
  const li = document.createElement('li');
  li.dataset.seq = String(m.seq);
  if (v.from === me) li.className = 'mine';
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = String(v.from ?? '?');
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = String(v.text ?? '');
  const time = document.createElement('span');
  time.className = 'time';
  time.textContent = typeof v.ts === 'number' ? new Date(v.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
  li.append(from, text, time);
  // Brokers without `last` replay the whole history (since: 0): show its end only.
  const shown = list.querySelectorAll('li[data-seq]');
  if (m.replay && shown.length >= HISTORY) shown[0].remove();
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

// ---- typing ------------------------------------------------------------------------

const typists = new Map(); // name -> timer
function renderTyping() {
  const names = [...typists.keys()];
  $('typing').textContent = names.length === 0 ? ''
    : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`;
}

function onTyping(m) {
  let v;
  try {
    v = m.unpack();
  } catch {
    return;
  }
  if (!v || v.from === me || typeof v.from !== 'string') return;
  clearTimeout(typists.get(v.from));
  typists.set(v.from, setTimeout(() => {
    typists.delete(v.from);
    renderTyping();
  }, 3000));
  renderTyping();
}

let lastTyping = 0;
$('text').addEventListener('input', () => {
  if (!room || Date.now() - lastTyping < 1000) return;
  lastTyping = Date.now();
  client.publish(`typing.${room.name}`, encode({ from: me }), { ack: false }).catch(() => {});
});

// ---- presence ----------------------------------------------------------------------

function renderPresence(p) {
  const names = [...p.members.values()].map((info) => {
    try {
      return String(decode(info).name);
    } catch {
      return '?';
    }
  }).sort();
  state.presence = { supported: true, count: Number(p.count), names };
  $('count').textContent = String(p.count);
  $('members').replaceChildren(...names.map((n) => {
    const li = document.createElement('li');
    li.textContent = n === me ? `${n} (you)` : n;
    return li;
  }));
  $('presence').classList.remove('unavailable');
  $('presence-note').textContent = names.length < Number(p.count) ? `and ${Number(p.count) - names.length} more` : '';
}

function noPresence(why) {
  state.presence = { supported: false, count: 0, names: [] };
  $('presence').classList.add('unavailable');
  $('presence-note').textContent = why;
}

// ---- joining a room ----------------------------------------------------------------

async function join(name) {
  if (room?.name === name) return;
  if (room) {
    for (const s of [room.sub, room.typing, room.presence]) s?.unsubscribe();
  }
  state.ready = false;
  state.replayed = 0;
  state.room = name;
  room = { name, seqs: new Set() };
  const r = room;
  unread[name] = 0;
  renderRooms();
  history.replaceState(null, '', `?${new URLSearchParams({ ...Object.fromEntries(params), room: name })}`);
  $('room-title').textContent = `# ${name}`;
  $('messages').replaceChildren();
  typists.clear();
  renderTyping();

  // History on join: `last` where the broker has it; `since: 0` (the whole retained
  // history) is the fallback, and the later start of the two wins where both work.
  // `presence` makes this connection a member of the room while it is subscribed.
  const opts = { last: HISTORY, since: 0, presence: encode({ name: me }) };
  r.sub = client.subscribe(`chat.${name}`, opts, show);
  r.typing = client.subscribe(`typing.${name}`, { conflate: { ms: 1000, key: 'from' } }, onTyping);
  let snapshot = false;
  r.presence = client.presence(`chat.${name}`, (p) => {
    snapshot = true;
    if (r === room) renderPresence(p);
  });
  const refused = (e) => e.code === 12 || e.code === 4 || e.code === 5;
  try {
    await r.sub.ready;
  } catch (e) {
    if (r !== room || !refused(e)) throw e;
    // A broker that refuses the member info: join without it.
    delete opts.presence;
    r.sub = client.subscribe(`chat.${name}`, opts, show);
    await r.sub.ready;
  }
  await r.typing.ready.catch(() => {
    if (r === room) r.typing = client.subscribe(`typing.${name}`, onTyping);
  });
  const presenceOk = await r.presence.ready.then(() => true, () => false);
  await client.flush().catch(() => {});
  if (r !== room) return;
  // The snapshot comes before the PONG of that flush: none means no presence on this broker.
  if (!presenceOk || !snapshot) noPresence('Presence is not available on this server.');
  state.ready = true;
}

// ---- sending -----------------------------------------------------------------------

$('composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text || !room) return;
  $('text').value = '';
  try {
    await client.publish(`chat.${room.name}`, encode({ from: me, text, ts: Date.now() }));
  } catch (e) {
    system(`Not sent: ${e.message}`);
  }
});

renderRooms();
client.ready.then(() => join(ROOMS.includes(params.get('room')) ? params.get('room') : ROOMS[0]),
  (e) => setStatus(`cannot connect: ${e.message}`));
