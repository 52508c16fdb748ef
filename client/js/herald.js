// SPDX-License-Identifier: MIT
// Herald's JavaScript client (browsers and Node): an ES module without dependencies that speaks
// protocol v1 over WebSocket, reconnects and resumes its subscriptions without duplicates.

// ---- MessagePack -------------------------------------------------------------------
// The subset the protocol uses: nil, bool, int (to 64 bits), float, str, bin, array, map.

const utf8enc = new TextEncoder();
const utf8dec = new TextDecoder();
const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const MAX_DEPTH = 512;

/**
 * Encodes a value as MessagePack. null and undefined become nil (an
 * undefined map value leaves its key out); integers become the shortest
 * int, other numbers float64; bigint becomes int (RangeError outside
 * -2^63 .. 2^64-1); strings str; Uint8Array, ArrayBuffer and other views
 * bin; arrays array; Map and plain objects map.
 */
export function encode(value) {
  const w = new Writer();
  w.value(value, 0);
  return w.bytes();
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.n = 0;
  }

  bytes() {
    return this.buf.slice(0, this.n);
  }

  need(k) {
    if (this.n + k <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.n + k) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.n));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }

  u8(x) {
    this.need(1);
    this.buf[this.n++] = x;
  }

  head(tag, len, width) {
    this.need(1 + width);
    this.buf[this.n++] = tag;
    if (width === 1) this.view.setUint8(this.n, len);
    else if (width === 2) this.view.setUint16(this.n, len);
    else this.view.setUint32(this.n, len);
    this.n += width;
  }

  // A length header: fix form under `fixMax` when there is one, then 8-, 16- and 32-bit forms.
  sized(len, fix, fixMax, t8, t16, t32) {
    if (len <= fixMax) this.u8(fix | len);
    else if (t8 && len < 0x100) this.head(t8, len, 1);
    else if (len < 0x10000) this.head(t16, len, 2);
    else if (len <= 0xffffffff) this.head(t32, len, 4);
    else throw new RangeError('msgpack: too long');
  }

  raw(b) {
    this.need(b.length);
    this.buf.set(b, this.n);
    this.n += b.length;
  }

  int(v) {
    // v is a bigint or a safe integer Number
    if (v >= 0) {
      if (v < 0x80) this.u8(Number(v));
      else if (v < 0x100) this.head(0xcc, Number(v), 1);
      else if (v < 0x10000) this.head(0xcd, Number(v), 2);
      else if (v <= 0xffffffff) this.head(0xce, Number(v), 4);
      else {
        const b = BigInt(v);
        if (b > U64_MAX) throw new RangeError('msgpack: integer above 2^64-1');
        this.need(9);
        this.buf[this.n++] = 0xcf;
        this.view.setBigUint64(this.n, b);
        this.n += 8;
      }
      return;
    }
    if (v >= -32) this.u8(Number(v) & 0xff);
    else if (v >= -0x80) {
      this.need(2);
      this.buf[this.n++] = 0xd0;
      this.view.setInt8(this.n++, Number(v));
    } else if (v >= -0x8000) {
      this.need(3);
      this.buf[this.n++] = 0xd1;
      this.view.setInt16(this.n, Number(v));
      this.n += 2;
    } else if (v >= -0x80000000) {
      this.need(5);
      this.buf[this.n++] = 0xd2;
      this.view.setInt32(this.n, Number(v));
      this.n += 4;
    } else {
      const b = BigInt(v);
      if (b < I64_MIN) throw new RangeError('msgpack: integer below -2^63');
      this.need(9);
      this.buf[this.n++] = 0xd3;
      this.view.setBigInt64(this.n, b);
      this.n += 8;
    }
  }

  value(v, depth) {
    if (depth > MAX_DEPTH) throw new RangeError('msgpack: nested too deeply');
    switch (typeof v) {
      case 'undefined':
        this.u8(0xc0);
        return;
      case 'boolean':
        this.u8(v ? 0xc3 : 0xc2);
        return;
      case 'bigint':
        this.int(v);
        return;
      case 'number':
        // Integers that fit 64 bits go as int (exact even above 2^53); the rest as float64.
        if (Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 64 && !Object.is(v, -0)) {
          this.int(Number.isSafeInteger(v) ? v : BigInt(v));
        } else {
          this.need(9);
          this.buf[this.n++] = 0xcb;
          this.view.setFloat64(this.n, v);
          this.n += 8;
        }
        return;
      case 'string': {
        const b = utf8enc.encode(v);
        this.sized(b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
        this.raw(b);
        return;
      }
      case 'object':
        break;
      default:
        throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
    }
    if (v === null) {
      this.u8(0xc0);
    } else if (v instanceof Uint8Array || ArrayBuffer.isView(v) || v instanceof ArrayBuffer) {
      const b = v instanceof Uint8Array ? v
        : v instanceof ArrayBuffer ? new Uint8Array(v)
          : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      this.sized(b.length, 0, -1, 0xc4, 0xc5, 0xc6);
      this.raw(b);
    } else if (Array.isArray(v)) {
      this.sized(v.length, 0x90, 15, 0, 0xdc, 0xdd);
      for (const x of v) this.value(x, depth + 1);
    } else {
      const entries = v instanceof Map ? [...v.entries()]
        : Object.entries(v).filter((e) => e[1] !== undefined);
      this.sized(entries.length, 0x80, 15, 0, 0xde, 0xdf);
      for (const [k, x] of entries) {
        this.value(k, depth + 1);
        this.value(x, depth + 1);
      }
    }
  }
}

/**
 * Decodes exactly one MessagePack value from `bytes` (Uint8Array or
 * ArrayBuffer); trailing bytes, truncation and ext types throw. Integers
 * come back as Number when they are safe integers, else as bigint; bin as
 * a Uint8Array view into `bytes`; maps with string keys as plain objects,
 * other maps as Map.
 */
export function decode(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const r = new Reader(b);
  const v = r.value(0);
  if (r.p !== b.length) throw new RangeError('msgpack: trailing bytes');
  return v;
}

class Reader {
  constructor(b) {
    this.b = b;
    this.v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.p = 0;
  }

  take(k) {
    if (this.p + k > this.b.length) throw new RangeError('msgpack: truncated');
    const p = this.p;
    this.p += k;
    return p;
  }

  u8() { return this.v.getUint8(this.take(1)); }
  u16() { return this.v.getUint16(this.take(2)); }
  u32() { return this.v.getUint32(this.take(4)); }

  big(x) {
    return x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
  }

  str(n) {
    const p = this.take(n);
    return utf8dec.decode(this.b.subarray(p, p + n));
  }

  bin(n) {
    const p = this.take(n);
    return this.b.subarray(p, p + n);
  }

  array(n, depth) {
    if (n > this.b.length - this.p) throw new RangeError('msgpack: truncated');
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = this.value(depth + 1);
    return a;
  }

  map(n, depth) {
    if (2 * n > this.b.length - this.p) throw new RangeError('msgpack: truncated');
    const keys = new Array(n), vals = new Array(n);
    let allStr = true;
    for (let i = 0; i < n; i++) {
      keys[i] = this.value(depth + 1);
      vals[i] = this.value(depth + 1);
      if (typeof keys[i] !== 'string') allStr = false;
    }
    if (!allStr) return new Map(keys.map((k, i) => [k, vals[i]]));
    const o = {};
    for (let i = 0; i < n; i++) {
      Object.defineProperty(o, keys[i], { value: vals[i], enumerable: true, writable: true, configurable: true });
    }
    return o;
  }

  value(depth) {
    if (depth > MAX_DEPTH) throw new RangeError('msgpack: nested too deeply');
    const t = this.u8();
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t < 0x90) return this.map(t & 0x0f, depth);
    if (t < 0xa0) return this.array(t & 0x0f, depth);
    if (t < 0xc0) return this.str(t & 0x1f);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xca: return this.v.getFloat32(this.take(4));
      case 0xcb: return this.v.getFloat64(this.take(8));
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.big(this.v.getBigUint64(this.take(8)));
      case 0xd0: return this.v.getInt8(this.take(1));
      case 0xd1: return this.v.getInt16(this.take(2));
      case 0xd2: return this.v.getInt32(this.take(4));
      case 0xd3: return this.big(this.v.getBigInt64(this.take(8)));
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      default:
        throw new RangeError(`msgpack: unsupported type 0x${t.toString(16)}`);
    }
  }
}

// ---- payload helpers ---------------------------------------------------------------

/** UTF-8 bytes of a string. */
export function encodeText(s) {
  return utf8enc.encode(s);
}

/** The string of UTF-8 bytes. */
export function decodeText(b) {
  return utf8dec.decode(b);
}

/** JSON text of a value, as UTF-8 bytes. */
export function encodeJSON(v) {
  return utf8enc.encode(JSON.stringify(v));
}

/** The value of UTF-8 JSON bytes. */
export function decodeJSON(b) {
  return JSON.parse(utf8dec.decode(b));
}

function toBytes(data) {
  if (data === undefined || data === null) return new Uint8Array(0);
  if (data instanceof Uint8Array) return data;
  if (typeof data === 'string') return utf8enc.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('herald: a payload is a Uint8Array, ArrayBuffer or string (see encodeJSON, encode)');
}

// ---- errors ------------------------------------------------------------------------

/** The broker's ERR codes. */
export const ERR = Object.freeze({
  PROTOCOL: 1, TOO_LARGE: 2, AUTH: 3, NOT_PERMITTED: 4, INVALID_TOPIC: 5, SLOW_CONSUMER: 6,
  LIMIT: 7, UNKNOWN_SID: 8, SHUTDOWN: 9, HISTORY_GAP: 10, HEARTBEAT: 11, INVALID_OPTION: 12,
  REJECTED: 13,
});

/**
 * An error from the broker (`code` is the ERR code, a number, and `ref`
 * the sid or ack id it names) or from the client (`code` is a string:
 * ETIMEDOUT, EDISCONNECTED, ECLOSED, ENOTCONN, EBUFFULL, ETOOBIG, ETOPIC,
 * EPROTO, ECONNECT, EAUTH).
 */
export class HeraldError extends Error {
  constructor(code, message, ref) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    if (ref !== undefined) this.ref = ref;
  }
}

const local = (code, message) => new HeraldError(code, message);

// ---- topics ------------------------------------------------------------------------

/** True when `s` is a valid topic, or with `pattern` a valid pattern (`*`, a final `>`). */
export function validTopic(s, pattern = false) {
  if (typeof s !== 'string' || s.length === 0 || utf8enc.encode(s).length > 255) return false;
  const toks = s.split('.');
  if (toks.length > 16) return false;
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i];
    if (pattern && (t === '*' || (t === '>' && i === toks.length - 1))) continue;
    if (t.length === 0 || t.length > 64 || !/^[\x21-\x7e]+$/.test(t) || /[.*>]/.test(t)) return false;
  }
  return true;
}

// A 32-bit FNV-1a of a payload (its first 64 KiB) and its length: what a resumed
// subscription compares to tell the same message from a restarted broker's one.
function digest(b) {
  let h = 0x811c9dc5;
  const n = Math.min(b.length, 65536);
  for (let i = 0; i < n; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return `${h >>> 0}:${b.length}`;
}

const randomId = (n) => {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const r = new Uint8Array(n);
  globalThis.crypto.getRandomValues(r);
  return Array.from(r, (x) => abc[x % abc.length]).join('');
};

// ---- messages ----------------------------------------------------------------------

/** One delivered message; `data` is a view into the received frame. */
export class Message {
  constructor(client, sub, topic, seq, data, opts) {
    this.client = client;
    this.subscription = sub;
    this.topic = topic;
    this.seq = seq;
    this.data = data;
    this.reply = opts?.reply ?? null;
    this.headers = opts?.headers ?? null;
    this.replay = opts?.replay === true;
  }

  text() { return utf8dec.decode(this.data); }
  json() { return decodeJSON(this.data); }
  unpack() { return decode(this.data); }

  /** Publishes `data` to this message's reply topic (no ack). */
  respond(data, opts = {}) {
    if (!this.reply) return Promise.reject(local('ETOPIC', 'the message has no reply topic'));
    return this.client.publish(this.reply, data, { ...opts, ack: false });
  }
}

// ---- subscriptions -----------------------------------------------------------------

const OWN_OPTS = new Set(['onGap', 'onError', 'resume']);

/**
 * A subscription: its messages go to the callback given to subscribe().
 * It lasts across reconnects (each connection gives it a new sid) until
 * unsubscribe().
 */
export class Subscription {
  constructor(client, pattern, opts, cb) {
    this.client = client;
    this.pattern = pattern;
    this.opts = opts;
    this.cb = cb;
    this.sid = 0;
    this.delivered = 0;
    this.closed = false;
    // Broker topics ($SYS, $PRES) and inboxes carry no history worth resuming.
    this.resume = opts.resume ?? !(pattern.startsWith('$') || pattern.startsWith('_INBOX.'));
    this.topics = new Map(); // topic -> {seq, digest}: the last seq delivered on each topic
    this.epoch = undefined; // the WELCOME epoch under which `topics` was filled
    this.probe = false; // this connection's replay re-sends each topic's last seq: compare it
    this.fromStart = false; // the broker restarted: resume from its first seq
    this.ready = null;
    this._settle = null;
  }

  /** The last seq delivered for `topic` (the pattern itself for an exact subscription). */
  lastSeq(topic = this.pattern) {
    return this.topics.get(topic)?.seq;
  }

  /** Stops the subscription; no callback runs for it after this returns. */
  unsubscribe() {
    this.client._unsubscribe(this);
  }

  // The SUB options for the next connection: the caller's, then resume state.
  _wireOpts(epoch) {
    const o = {};
    for (const [k, v] of Object.entries(this.opts)) {
      if (!OWN_OPTS.has(k) && v !== undefined) o[k] = v;
    }
    if (o.presence !== undefined && !(o.presence instanceof Uint8Array)) {
      o.presence = typeof o.presence === 'string' ? utf8enc.encode(o.presence) : encode(o.presence);
    }
    this.probe = false;
    if (!this.resume || o.queue !== undefined) return o;
    if (this.topics.size === 0) {
      if (this.fromStart) {
        o.since = 0;
        delete o.last;
        delete o.epoch;
      }
      return o;
    }
    let since;
    for (const t of this.topics.values()) if (since === undefined || t.seq < since) since = t.seq;
    delete o.last;
    if (this.epoch !== undefined) {
      // The broker compares the epochs: when they differ it answers ERR 10
      // and replays from the start, which is all new to this subscription.
      o.since = since;
      o.epoch = this.epoch;
      if (epoch !== this.epoch) this.topics.clear();
    } else if (since > 0) {
      // No epoch for what was delivered: ask for the last message again and
      // compare it (see _onMsg), whether or not this broker has an epoch.
      o.since = typeof since === 'bigint' ? since - 1n : since - 1;
      this.probe = true;
      delete o.epoch;
    } else {
      o.since = since;
      delete o.epoch;
    }
    return o;
  }

  // Forgets what was delivered: the broker's seqs started again, so the
  // next SUB asks for the new broker's whole history.
  _reset() {
    this.topics.clear();
    this.epoch = undefined;
    this.probe = false;
    this.fromStart = true;
  }

  _settled(err) {
    const s = this._settle;
    if (!s) return;
    this._settle = null;
    if (err) s.reject(err);
    else s.resolve(this);
  }
}

// ---- the client --------------------------------------------------------------------

const DEFAULTS = {
  name: undefined,
  token: undefined,
  tokenRefresh: undefined,
  echo: true,
  WebSocket: undefined,
  wsOptions: undefined,
  connectTimeoutMs: 5000,
  requestTimeoutMs: 5000,
  pingIntervalMs: 30000,
  maxPingsOut: 2,
  reconnect: true,
  maxReconnect: Infinity,
  reconnectWaitMs: 100,
  reconnectWaitMaxMs: 5000,
  reconnectJitter: 0.5,
  retryOnFailedConnect: false,
  reconnectBufBytes: 8 << 20,
  maxOutBytes: 64 << 20,
  inboxPrefix: undefined,
};

function defaultUrl() {
  try {
    const u = new URL('/', import.meta.url);
    if (u.protocol === 'http:' || u.protocol === 'https:') {
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      return u.href;
    }
  } catch {
    // not loaded over http
  }
  return 'ws://127.0.0.1:7401/';
}

/**
 * Connects to a broker and resolves with the Client once the first
 * WELCOME arrived (rejects with the reason if that first attempt fails,
 * unless `retryOnFailedConnect`). `url` defaults to the broker this module
 * was loaded from.
 */
export function connect(url, opts = {}) {
  const c = new Client(url, opts);
  return c.ready.then(() => c);
}

/** A connection to a Herald broker that reconnects and resumes by itself. */
export class Client {
  constructor(url, opts = {}) {
    if (typeof url === 'object' && url !== null) {
      opts = url;
      url = undefined;
    }
    this.url = url ?? defaultUrl();
    this.opts = { ...DEFAULTS, ...opts };
    this.WS = this.opts.WebSocket ?? globalThis.WebSocket;
    if (!this.WS) throw local('ECONNECT', 'no WebSocket: pass opts.WebSocket (e.g. the ws package)');
    this.state = 'connecting'; // connecting, connected, reconnecting, draining, closed
    this.welcome = null;
    this.epoch = undefined;
    this.clientId = undefined;
    this.stats = { msgsIn: 0, msgsOut: 0, reconnects: 0, duplicates: 0, restarts: 0 };
    this._ws = null;
    this._ids = 0; // sids, ack ids and ping ids share one counter, so an ERR's ref is unambiguous
    this._subs = new Map(); // sid -> Subscription (this connection's sids)
    this._allSubs = new Set();
    this._acks = new Map(); // ack id -> {resolve, reject, written}
    this._pings = new Map(); // ping id -> {resolve, reject, timer}
    this._requests = new Map(); // request id -> {resolve, reject, timer}
    this._outbox = []; // frames waiting for a connection: {bytes, ack}
    this._outboxBytes = 0;
    this._listeners = new Map();
    this._attempt = 0;
    this._timers = new Set();
    this._lastRx = 0;
    this._pingsOut = 0;
    this._connected = false; // a WELCOME arrived on the current socket
    this._everConnected = false;
    this._needToken = false; // the broker refused the token: ask tokenRefresh before retrying
    this._inbox = null;
    this._inboxPrefix = this.opts.inboxPrefix ?? `_INBOX.${randomId(22)}`;
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    this.ready.catch(() => {});
    this._open();
  }

  // ---- events ----

  /**
   * Listens to `event`: connected (welcome), disconnected (error),
   * reconnected (welcome), closed (error or undefined), error (HeraldError),
   * gap ({subscription, topic, first, last, reason: 'history' | 'dropped' |
   * 'restart'}). Returns a function that removes the listener.
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, arg) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) {
      if (event === 'error') console.warn('herald:', arg?.message ?? arg);
      return;
    }
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
        else console.error(e);
      }
    }
  }

  _timer(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _clearTimer(t) {
    if (t === undefined || t === null) return;
    clearTimeout(t);
    this._timers.delete(t);
  }

  // ---- the connection ----

  async _open() {
    const o = this.opts;
    let token = o.token;
    if (o.tokenRefresh && (this._attempt > 0 || token === undefined || this._needToken)) {
      try {
        token = await o.tokenRefresh();
        this.opts.token = token;
        this._needToken = false;
      } catch (e) {
        // Like a failed connection attempt: retried with backoff once connected before.
        this._lost(local('EAUTH', `tokenRefresh failed: ${e?.message ?? e}`));
        return;
      }
      if (this.state === 'closed') return;
    }
    let ws;
    try {
      // wsOptions reach constructors that take a third argument, such as Node's ws
      // ({ca, cert, key, servername, ...} for wss://); a browser's has none.
      ws = o.wsOptions === undefined ? new this.WS(this.url, 'herald.v1')
        : new this.WS(this.url, 'herald.v1', o.wsOptions);
    } catch (e) {
      this._failed(local('ECONNECT', `cannot connect to ${this.url}: ${e?.message ?? e}`));
      return;
    }
    this._ws = ws;
    this._connected = false;
    this._closeErr = null;
    ws.binaryType = 'arraybuffer';
    const timeout = this._timer(() => {
      if (ws === this._ws && !this._connected) {
        this._closeErr = local('ETIMEDOUT', 'no WELCOME within connectTimeoutMs');
        this._drop(ws);
      }
    }, o.connectTimeoutMs);
    ws.onopen = () => {
      if (ws !== this._ws) return;
      const hello = { v: 1, name: o.name, token, echo: o.echo === false ? false : undefined };
      ws.send(encode([1, hello]));
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      let f;
      try {
        if (typeof ev.data === 'string') throw new Error('a text message');
        f = decode(ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : toBytes(ev.data));
        if (!Array.isArray(f)) throw new Error('a frame that is not an array');
      } catch (e) {
        this._closeErr = local('EPROTO', `bad frame from the broker: ${e.message}`);
        this._drop(ws);
        return;
      }
      if (f[0] === 16) this._clearTimer(timeout);
      this._frame(f);
    };
    ws.onerror = (ev) => {
      // Node's ws says why a connection failed (a certificate it does not trust, a
      // plaintext port); a browser never does.
      const e = ev?.error;
      if (ws !== this._ws || this._connected || this._closeErr || !(e instanceof Error)) return;
      const tls = /CERT|SSL|TLS|SIGNATURE|ALTNAME/.test(String(e.code)) || e.code === 'EPROTO';
      this._closeErr = local(tls ? 'ETLS' : 'ECONNECT',
        `cannot connect to ${this.url}: ${e.message}${e.code ? ` (${e.code})` : ''}`);
    };
    ws.onclose = (ev) => {
      this._clearTimer(timeout);
      if (ws !== this._ws) return;
      this._lost(this._closeErr ?? local('EDISCONNECTED', `connection closed (${ev.code})`));
    };
  }

  // Closes a socket we gave up on; onclose (or this) reports the loss.
  _drop(ws) {
    try {
      ws.close();
    } catch {
      // closing
    }
    if (ws === this._ws) {
      this._ws = null;
      this._lost(this._closeErr ?? local('EDISCONNECTED', 'connection lost'));
    }
  }

  _send(bytes) {
    this._ws.send(bytes);
    return true;
  }

  _sendFrame(frame) {
    if (this._connected) this._send(encode(frame));
  }

  _frame(f) {
    this._lastRx = Date.now();
    this._pingsOut = 0;
    switch (f[0]) {
      case 16: return this._onWelcome(f[1] ?? {});
      case 17: return this._onMsg(f[1], f[2], f[3], f[4], f[5]);
      case 18: return this._onAck(f[1], f[2]);
      case 19: return this._onErr(f[1], f[2], f[3]);
      case 20: return this._onGap(f[1], f[2], f[3], f[4]);
      case 21:
        for (const m of f[2] ?? []) this._onMsg(f[1], m[0], m[1], m[2], m[3]);
        return undefined;
      case 5: return this._sendFrame([6, f[1]]);
      case 6: return this._onPong(f[1]);
      default: return undefined; // opcodes added later are ignored
    }
  }

  _onWelcome(w) {
    const first = !this._everConnected;
    const prevId = this.clientId, prevEpoch = this.epoch;
    this.welcome = w;
    this.clientId = w.client_id;
    this.epoch = typeof w.epoch === 'string' ? w.epoch : undefined;
    this._connected = true;
    this._everConnected = true;
    this._attempt = 0;
    this._lastRx = Date.now();
    this.state = 'connected';
    // Without an epoch, a broker that numbers this connection no higher than
    // the last one is a new process: its seqs started again (as libherald).
    if (!first && this.epoch === undefined && prevEpoch === undefined && prevId !== undefined &&
        this.clientId <= prevId) {
      this._restarted('the broker restarted (client_id went back)', false);
    }
    this._subs.clear();
    for (const sub of this._allSubs) this._sendSub(sub);
    const box = this._outbox;
    this._outbox = [];
    this._outboxBytes = 0;
    for (const e of box) {
      this._send(e.bytes);
      if (e.ack !== undefined && this._acks.has(e.ack)) this._acks.get(e.ack).written = true;
    }
    this._startKeepalive();
    if (first) {
      this._readyResolve(this);
      this._emit('connected', w);
    } else {
      this.stats.reconnects++;
      this._emit('reconnected', w);
    }
  }

  // Sends SUB for `sub` under a new sid, and a PING that settles sub.ready.
  _sendSub(sub) {
    const sid = ++this._ids;
    sub.sid = sid;
    this._subs.set(sid, sub);
    const o = sub._wireOpts(this.epoch);
    this._send(encode([3, sid, sub.pattern, o]));
    if (sub._settle) {
      this._ping(this.opts.requestTimeoutMs).then(() => {
        if (!sub.closed && sub.sid === sid) sub._settled(null);
      }, () => {}); // settled on a later connection
    }
  }

  // The broker's seqs started again: every resumable subscription forgets
  // what it delivered and starts from the new broker's history.
  _restarted(why, resend) {
    this.stats.restarts++;
    for (const sub of this._allSubs) {
      if (!sub.resume || sub.topics.size === 0) continue;
      const topics = [...sub.topics.keys()];
      sub._reset();
      const info = { subscription: sub, topic: sub.pattern, topics, reason: 'restart', message: why };
      this._gap(sub, info);
      if (resend && this._connected && !sub.closed) {
        // A new sid: what is still on its way for the old one is dropped.
        this._subs.delete(sub.sid);
        this._send(encode([4, sub.sid]));
        this._sendSub(sub);
      }
    }
  }

  _gap(sub, info) {
    try {
      sub.opts.onGap?.(info);
    } catch (e) {
      this._emit('error', e);
    }
    this._emit('gap', info);
  }

  _onMsg(sid, topic, seq, data, opts) {
    const sub = this._subs.get(sid);
    if (!sub || sub.closed) return; // unsubscribed, or replaced after a restart
    const replay = opts?.replay === true;
    if (sub.resume) {
      const last = sub.topics.get(topic);
      if (last !== undefined && seq <= last.seq) {
        if (sub.probe && replay && seq === last.seq && last.digest !== undefined &&
            last.digest !== digest(data)) {
          // The message we asked for again is not the one we had: a new broker.
          this._restarted('the broker restarted (the resumed message differs)', true);
          return;
        }
        if (!replay && this.epoch === undefined) {
          // Live seqs only go up within one broker's life.
          this._restarted('the broker restarted (seq went back)', true);
          return;
        }
        this.stats.duplicates++;
        return;
      }
      sub.topics.set(topic, { seq, digest: this.epoch === undefined ? digest(data) : undefined });
      sub.epoch = this.epoch;
      sub.fromStart = false;
    }
    sub.delivered++;
    this.stats.msgsIn++;
    try {
      sub.cb?.(new Message(this, sub, topic, seq, data, opts));
    } catch (e) {
      this._emit('error', e);
    }
  }

  _onAck(id, seq) {
    const a = this._acks.get(id);
    if (!a) return;
    this._acks.delete(id);
    a.resolve(seq);
  }

  _onErr(code, message, ref) {
    const err = new HeraldError(code, `ERR ${code}: ${message}`, ref ?? undefined);
    if (!this._connected || [1, 2, 3, 6, 9, 11].includes(code)) this._closeErr = err;
    if (ref !== undefined && ref !== null) {
      const a = this._acks.get(ref);
      if (a) {
        this._acks.delete(ref);
        a.reject(err); // the publish's Promise reports it
        return;
      }
      const sub = this._subs.get(ref);
      if (sub) {
        err.subscription = sub;
        if (code === ERR.HISTORY_GAP) {
          this._gap(sub, { subscription: sub, topic: sub.pattern, reason: 'history', message, error: err });
          return;
        }
        if ([4, 5, 7, 12].includes(code)) {
          // No subscription was made.
          this._subs.delete(ref);
          this._allSubs.delete(sub);
          sub.closed = true;
          sub._settled(err);
        }
        try {
          sub.opts.onError?.(err);
        } catch (e) {
          this._emit('error', e);
        }
      }
    }
    if (code === ERR.AUTH && this.opts.tokenRefresh) this._needToken = true;
    this._emit('error', err);
  }

  _onGap(sid, topic, first, last) {
    const sub = this._subs.get(sid);
    if (!sub || sub.closed) return;
    this._gap(sub, { subscription: sub, topic, first, last, reason: 'dropped' });
  }

  _onPong(id) {
    const p = this._pings.get(id);
    if (!p) return;
    this._pings.delete(id);
    this._clearTimer(p.timer);
    p.resolve();
  }

  _startKeepalive() {
    const ws = this._ws, every = this.opts.pingIntervalMs;
    if (!(every > 0)) return;
    const tick = () => {
      if (ws !== this._ws || !this._connected) return;
      if (Date.now() - this._lastRx >= every) {
        if (this._pingsOut >= this.opts.maxPingsOut) {
          this._closeErr = local('ETIMEDOUT', 'the broker stopped answering pings');
          this._drop(ws);
          return;
        }
        this._pingsOut++;
        this._send(encode([5, ++this._ids]));
      }
      this._timer(tick, every);
    };
    this._timer(tick, every);
  }

  // The connection is gone: fail what cannot survive it, then reconnect or close.
  _lost(err) {
    const was = this._connected;
    this._ws = null;
    this._connected = false;
    if (this.state === 'closed') return;
    for (const [id, a] of this._acks) {
      if (a.written) {
        this._acks.delete(id);
        a.reject(local('EDISCONNECTED', 'disconnected before the ACK: the broker may or may not have the message'));
      }
    }
    if (was) {
      // Requests made while disconnected wait for the next connection (or their timeout).
      for (const [id, r] of this._requests) {
        this._requests.delete(id);
        this._clearTimer(r.timer);
        r.reject(local('EDISCONNECTED', 'disconnected while waiting for the reply'));
      }
      this._failPings(local('EDISCONNECTED', 'disconnected'));
      this._emit('disconnected', err);
    }
    if (this.state === 'draining') {
      this._finish(err);
      return;
    }
    if (!this._everConnected && !this.opts.retryOnFailedConnect) {
      this._failed(err);
      return;
    }
    if (err.code === ERR.AUTH && !this.opts.tokenRefresh) {
      this._failed(err);
      return;
    }
    if (!this.opts.reconnect || this._attempt >= this.opts.maxReconnect) {
      this._failed(err);
      return;
    }
    this.state = 'reconnecting';
    const o = this.opts, n = this._attempt++;
    const base = Math.min(o.reconnectWaitMs * 2 ** Math.min(n, 30), o.reconnectWaitMaxMs);
    const wait = base * (1 + o.reconnectJitter * (2 * Math.random() - 1));
    this._timer(() => {
      if (this.state === 'reconnecting') this._open();
    }, Math.max(0, wait));
  }

  _failPings(err) {
    for (const [id, p] of this._pings) {
      this._pings.delete(id);
      this._clearTimer(p.timer);
      p.reject(err);
    }
  }

  _failed(err) {
    if (!this._everConnected) this._readyReject(err);
    this._finish(err);
  }

  _finish(err) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    const closed = local('ECLOSED', 'the client is closed');
    for (const a of this._acks.values()) a.reject(closed);
    this._acks.clear();
    for (const r of this._requests.values()) {
      clearTimeout(r.timer);
      r.reject(closed);
    }
    this._requests.clear();
    this._failPings(closed);
    this._outbox = [];
    this._outboxBytes = 0;
    for (const sub of this._allSubs) {
      sub.closed = true;
      sub._settled(closed);
    }
    this._allSubs.clear();
    this._subs.clear();
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    if (!this._everConnected) this._readyReject(err ?? closed);
    this._emit('closed', err);
  }

  // ---- the API ----

  /**
   * Publishes `data` (Uint8Array, ArrayBuffer or string) to `topic`.
   * opts: reply, headers ({str: str}), ack (default true). With an ack the
   * Promise resolves with the message's seq once the broker sequenced it;
   * without, once it is queued. Publishes made while disconnected are
   * buffered (reconnectBufBytes) and sent after the next WELCOME.
   */
  publish(topic, data, opts = {}) {
    if (this.state === 'closed' || this.state === 'draining') {
      return Promise.reject(local('ECLOSED', 'the client is closed'));
    }
    if (!validTopic(topic)) return Promise.reject(local('ETOPIC', `invalid topic '${topic}'`));
    if (topic.startsWith('$')) return Promise.reject(local('ETOPIC', 'topics beginning with $ are the broker\'s'));
    let payload;
    try {
      payload = toBytes(data);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.welcome && payload.length > this.welcome.max_payload) {
      return Promise.reject(local('ETOOBIG', `payload over max_payload (${this.welcome.max_payload})`));
    }
    const po = { reply: opts.reply, headers: opts.headers };
    const wantAck = opts.ack !== false;
    if (wantAck) po.ack = ++this._ids;
    const bytes = encode(po.reply || po.headers || wantAck ? [2, topic, payload, po] : [2, topic, payload]);
    const connected = this._connected;
    if (!connected && this._outboxBytes + bytes.length > this.opts.reconnectBufBytes) {
      return Promise.reject(local('EBUFFULL', 'the reconnect buffer is full'));
    }
    if (connected && this._ws.bufferedAmount > this.opts.maxOutBytes) {
      return Promise.reject(local('EBUFFULL', 'too much output is waiting (maxOutBytes)'));
    }
    const p = wantAck ? new Promise((resolve, reject) => {
      this._acks.set(po.ack, { resolve, reject, written: connected });
    }) : Promise.resolve();
    if (connected) this._send(bytes);
    else {
      this._outbox.push({ bytes, ack: po.ack });
      this._outboxBytes += bytes.length;
    }
    this.stats.msgsOut++;
    return p;
  }

  /** publish() of a value as JSON. */
  publishJSON(topic, value, opts) {
    return this.publish(topic, encodeJSON(value), opts);
  }

  /**
   * Subscribes to `pattern`; `cb(message)` gets every message. opts are
   * sent as given (queue, since, last, epoch, filter, fields, rate,
   * conflate, batch, presence), except onGap(info) and onError(err), which
   * are callbacks. Returns the Subscription at once; `sub.ready` resolves
   * once the broker has it in place, or rejects with the ERR that refused it.
   */
  subscribe(pattern, opts, cb) {
    if (typeof opts === 'function') {
      cb = opts;
      opts = {};
    }
    opts = opts ?? {};
    if (this.state === 'closed' || this.state === 'draining') throw local('ECLOSED', 'the client is closed');
    if (!validTopic(pattern, true)) throw local('ETOPIC', `invalid pattern '${pattern}'`);
    const sub = new Subscription(this, pattern, opts, cb);
    sub.ready = new Promise((resolve, reject) => {
      sub._settle = { resolve, reject };
    });
    sub.ready.catch(() => {});
    this._allSubs.add(sub);
    if (this._connected) this._sendSub(sub);
    return sub;
  }

  _unsubscribe(sub) {
    if (sub.closed) return;
    sub.closed = true;
    this._allSubs.delete(sub);
    if (this._subs.get(sub.sid) === sub) {
      this._subs.delete(sub.sid);
      this._sendFrame([4, sub.sid]);
    }
    sub._settled(local('ECLOSED', 'unsubscribed'));
  }

  /**
   * Follows the members of `topic` (subscribers with the `presence`
   * option): cb({count, members: Map<client_id, info>, joined, left}) on the
   * snapshot and on each change. Returns the Subscription of `$PRES.<topic>`.
   */
  presence(topic, cb, opts = {}) {
    const members = new Map();
    let count = 0;
    return this.subscribe(`$PRES.${topic}`, opts, (m) => {
      let v;
      try {
        v = m.unpack();
      } catch {
        return;
      }
      if (!v || typeof v !== 'object') return;
      if (Array.isArray(v.members) || m.replay) members.clear();
      for (const [id, info] of v.members ?? []) members.set(id, info);
      for (const [id, info] of v.joined ?? []) members.set(id, info);
      for (const id of v.left ?? []) members.delete(id);
      if (typeof v.count === 'number' || typeof v.count === 'bigint') count = v.count;
      cb({ count, members, joined: v.joined ?? [], left: v.left ?? [], snapshot: Array.isArray(v.members) });
    });
  }

  _ping(timeoutMs) {
    if (!this._connected) return Promise.reject(local('ENOTCONN', 'not connected'));
    const id = ++this._ids;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs > 0 ? this._timer(() => {
        this._pings.delete(id);
        reject(local('ETIMEDOUT', 'no PONG in time'));
      }, timeoutMs) : null;
      this._pings.set(id, { resolve, reject, timer });
      this._send(encode([5, id]));
    });
  }

  /**
   * Resolves once the broker has processed everything sent before (a
   * PING/PONG round trip) and the messages that arrived before its PONG
   * were delivered. Rejects with ENOTCONN when not connected.
   */
  flush(timeoutMs = this.opts.requestTimeoutMs) {
    return this._ping(timeoutMs);
  }

  /**
   * Publishes a request with a reply topic under this client's inbox and
   * resolves with the first reply (a Message), or rejects with ETIMEDOUT.
   */
  request(topic, data, opts = {}) {
    if (this.state === 'closed' || this.state === 'draining') {
      return Promise.reject(local('ECLOSED', 'the client is closed'));
    }
    if (!this._inbox) {
      this._inbox = this.subscribe(`${this._inboxPrefix}.>`, { resume: false }, (m) => {
        const id = m.topic.slice(this._inboxPrefix.length + 1);
        const r = this._requests.get(id);
        if (!r) return;
        this._requests.delete(id);
        this._clearTimer(r.timer);
        r.resolve(m);
      });
    }
    const id = String(++this._ids);
    const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = this._timer(() => {
        this._requests.delete(id);
        reject(local('ETIMEDOUT', `no reply to ${topic} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._requests.set(id, { resolve, reject, timer });
      this.publish(topic, data, { headers: opts.headers, reply: `${this._inboxPrefix}.${id}` })
        .catch((e) => {
          const r = this._requests.get(id);
          if (!r) return;
          this._requests.delete(id);
          this._clearTimer(r.timer);
          reject(e);
        });
    });
  }

  /**
   * Ends gracefully: refuses new work, unsubscribes everything, waits (at
   * most timeoutMs) for outstanding acks and requests and a PING round
   * trip, then closes.
   */
  async drain(timeoutMs = this.opts.requestTimeoutMs) {
    if (this.state === 'closed') return;
    const wasConnected = this._connected;
    for (const sub of [...this._allSubs]) if (sub !== this._inbox) this._unsubscribe(sub);
    this.state = 'draining';
    const waits = [...this._acks.values(), ...this._requests.values()].map((a) =>
      new Promise((r) => {
        const res = a.resolve, rej = a.reject;
        a.resolve = (v) => { res(v); r(); };
        a.reject = (e) => { rej(e); r(); };
      }));
    let timer;
    const deadline = new Promise((r) => { timer = setTimeout(r, timeoutMs); });
    try {
      await Promise.race([Promise.all(waits).then(() => wasConnected && this._connected && this._ping(timeoutMs)), deadline]);
    } catch {
      // closing anyway
    }
    clearTimeout(timer);
    this._finish(undefined);
  }

  /** Closes now: pending acks, requests and flushes reject with ECLOSED. */
  close() {
    this._finish(undefined);
  }
}
