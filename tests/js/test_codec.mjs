// SPDX-License-Identifier: MIT
// The JavaScript client's MessagePack codec: round trips, the exact encoding at every size
// boundary (str8/16/32, bin8/16/32, array16/32, map16/32, 64-bit ints), interop, malformed input.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decode, encode } from '../../client/js/herald.js';
import { msgpack } from './support.mjs';

const hex = (b) => Buffer.from(b).toString('hex');
const rt = (v) => decode(encode(v));

describe('msgpack codec', () => {
  it('encodes scalars in their shortest form', () => {
    const cases = [
      [null, 'c0'], [undefined, 'c0'], [false, 'c2'], [true, 'c3'],
      [0, '00'], [127, '7f'], [128, 'cc80'], [255, 'ccff'], [256, 'cd0100'], [65535, 'cdffff'],
      [65536, 'ce00010000'], [2 ** 32 - 1, 'ceffffffff'], [2 ** 32, 'cf0000000100000000'],
      [-1, 'ff'], [-32, 'e0'], [-33, 'd0df'], [-128, 'd080'], [-129, 'd1ff7f'],
      [-32768, 'd18000'], [-32769, 'd2ffff7fff'], [-(2 ** 31), 'd280000000'],
      [-(2 ** 31) - 1, 'd3ffffffff7fffffff'],
      [1.5, 'cb3ff8000000000000'], [-0, 'cb8000000000000000'],
      [2n ** 64n - 1n, 'cfffffffffffffffff'], [-(2n ** 63n), 'd38000000000000000'],
      [2 ** 53 + 2, 'cf0020000000000002'], ['', 'a0'], ['a', 'a161'],
    ];
    for (const [v, h] of cases) assert.equal(hex(encode(v)), h, `encode(${String(v)})`);
  });

  it('decodes 64-bit integers safely: Number when exact, BigInt beyond 2^53', () => {
    assert.equal(decode(Buffer.from('cf001fffffffffffff', 'hex')), Number.MAX_SAFE_INTEGER);
    assert.equal(decode(Buffer.from('cf0020000000000000', 'hex')), 2n ** 53n);
    assert.equal(decode(Buffer.from('cfffffffffffffffff', 'hex')), 2n ** 64n - 1n);
    assert.equal(decode(Buffer.from('d38000000000000000', 'hex')), -(2n ** 63n));
    assert.equal(decode(Buffer.from('d3ffffffffffffffff', 'hex')), -1);
    assert.equal(decode(Buffer.from('cf0000000000000007', 'hex')), 7); // a long form is accepted
    assert.equal(decode(Buffer.from('ca3fc00000', 'hex')), 1.5); // float32
    for (const v of [2n ** 64n - 1n, 2n ** 63n, -(2n ** 63n), 2n ** 53n + 1n]) assert.equal(rt(v), v);
    assert.throws(() => encode(2n ** 64n), RangeError);
    assert.throws(() => encode(-(2n ** 63n) - 1n), RangeError);
    assert.equal(hex(encode(2 ** 64)), 'cb43f0000000000000'); // not an int64 any more
  });

  it('uses str8/16/32, bin8/16/32, array16/32 and map16/32 at their boundaries', () => {
    const str = [[31, 'bf'], [32, 'd920'], [255, 'd9ff'], [256, 'da0100'], [65535, 'daffff'],
      [65536, 'db00010000']];
    for (const [n, h] of str) {
      const s = 'x'.repeat(n);
      const e = encode(s);
      assert.equal(hex(e.subarray(0, h.length / 2)), h, `str of ${n}`);
      assert.equal(e.length, n + h.length / 2);
      assert.equal(decode(e), s);
    }
    const bin = [[0, 'c400'], [255, 'c4ff'], [256, 'c50100'], [65535, 'c5ffff'], [65536, 'c600010000']];
    for (const [n, h] of bin) {
      const b = new Uint8Array(n).map((_, i) => i * 7);
      const e = encode(b);
      assert.equal(hex(e.subarray(0, h.length / 2)), h, `bin of ${n}`);
      assert.deepEqual(decode(e), b);
    }
    const arr = [[15, '9f'], [16, 'dc0010'], [65535, 'dcffff'], [65536, 'dd00010000']];
    for (const [n, h] of arr) {
      const a = Array.from({ length: n }, (_, i) => i % 100);
      const e = encode(a);
      assert.equal(hex(e.subarray(0, h.length / 2)), h, `array of ${n}`);
      assert.deepEqual(decode(e), a);
    }
    const map = [[15, '8f'], [16, 'de0010'], [65535, 'deffff'], [65536, 'df00010000']];
    for (const [n, h] of map) {
      const o = {};
      for (let i = 0; i < n; i++) o[`k${i}`] = i;
      const e = encode(o);
      assert.equal(hex(e.subarray(0, h.length / 2)), h, `map of ${n}`);
      assert.deepEqual(decode(e), o);
    }
  });

  it('round-trips nested values, UTF-8 and Map keys; leaves undefined map values out', () => {
    const v = { topic: 'chat.é☃', n: [1, -2, 3.25, null, true, { deep: [new Uint8Array([1, 2])] }] };
    assert.deepEqual(rt(v), v);
    assert.deepEqual(rt({ a: 1, b: undefined }), { a: 1 });
    const m = rt(new Map([[1, 'one'], ['two', 2]]));
    assert.ok(m instanceof Map);
    assert.equal(m.get(1), 'one');
    assert.deepEqual(rt({ __proto__: null, ['__proto__']: 1 }), JSON.parse('{"__proto__": 1}'));
    assert.deepEqual(rt(new Uint16Array([1, 2]).buffer), new Uint8Array([1, 0, 2, 0]));
  });

  it('agrees with @msgpack/msgpack both ways', () => {
    const v = [17, 3, 'chat.room', 2 ** 40, new Uint8Array(300), { replay: true, headers: { a: 'b' } },
      'y'.repeat(70000), Array(20).fill(-5), -1.25];
    assert.deepEqual(decode(msgpack.encode(v)), v);
    assert.deepEqual(msgpack.decode(encode(v)), v);
    assert.equal(hex(encode(v)), hex(msgpack.encode(v)));
    const big = msgpack.decode(encode(2n ** 63n), { useBigInt64: true });
    assert.equal(big, 2n ** 63n);
  });

  it('refuses truncated input, trailing bytes, ext types and absurd lengths', () => {
    const bad = ['', '92', '9201', 'a3616263ff', 'c0c0', 'd9', 'c40461', 'cf00', 'd40100',
      'ddffffffff', 'dfffffffff', 'dbffffffff61', 'c1'];
    for (const h of bad) assert.throws(() => decode(Buffer.from(h, 'hex')), RangeError, h);
    const deep = new Uint8Array(100000).fill(0x91);
    assert.throws(() => decode(deep), RangeError);
    assert.throws(() => encode(() => 1), TypeError);
  });
});
