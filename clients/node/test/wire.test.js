'use strict';
// Byte-exact tests of the encoding against docs/PROTOCOL.md Part 4 and the wire decisions
// (Submit.key, Cancel = 22, CancelReply = 23, DropKind cancelled = 2). No daemon needed.

const test = require('node:test');
const assert = require('node:assert/strict');

const { HoundError, _internal } = require('../houndpool.js');

const { FrameDecoder, Reader, KIND } = _internal;

/** "48 50 46 52  01 00 ..." (comments after '|' ignored) → Buffer. */
function hex(text) {
  const clean = text.split('\n').map((l) => l.split('|')[0]).join(' ');
  return Buffer.from(clean.replace(/\s+/g, ''), 'hex');
}

function decodeFrame(buf) {
  const d = new FrameDecoder(1 << 20);
  const frames = d.push(buf);
  assert.equal(frames.length, 1);
  return frames[0];
}

test('Submit: the PROTOCOL.md worked example gains the key tag byte (None)', () => {
  const f = _internal.encodeSubmit(5n, { kind: 'encode', severity: 'critical', body: 'ab', level: 3 });
  assert.deepEqual(f, hex(`
    48 50 46 52  01 00  10 00  1e 00 00 00  00 00 00 00 | header: kind 16, body_len 30
    05 00 00 00 00 00 00 00                             | request_id 5
    01 00 00 00                                         | kind 1 = encode
    03 00 00 00                                         | severity 3 = critical
    00                                                  | evidence_id: None
    01 03                                               | level: Some(3)
    02 00 00 00 00 00 00 00  61 62                      | body "ab"
    00                                                  | key: None
  `));
});

test('Submit with a key: Option<String> after the body', () => {
  const f = _internal.encodeSubmit(1n, { kind: 'evacuate', severity: 'high', body: new Uint8Array([0x78]).buffer, key: 'sql:ab' });
  assert.deepEqual(f, hex(`
    48 50 46 52  01 00  10 00  2a 00 00 00  00 00 00 00 | header: kind 16, body_len 42
    01 00 00 00 00 00 00 00                             | request_id 1
    02 00 00 00                                         | kind 2 = evacuate
    02 00 00 00                                         | severity 2 = high
    00                                                  | evidence_id: None
    00                                                  | level: None
    01 00 00 00 00 00 00 00  78                         | body "x" (from an ArrayBuffer)
    01  06 00 00 00 00 00 00 00  73 71 6c 3a 61 62      | key: Some("sql:ab")
  `));
  assert.throws(() => _internal.encodeSubmit(1n, { kind: 'evacuate', body: 'x', key: 42 }), TypeError);
  assert.throws(() => _internal.encodeSubmit(1n, { kind: 'teleport', body: 'x' }), /unknown job kind "teleport"/);
});

test('Cancel (kind 22) and CancelReply (kind 23)', () => {
  assert.deepEqual(_internal.encodeCancel(9n, 7n), hex(`
    48 50 46 52  01 00  16 00  10 00 00 00  00 00 00 00 | header: kind 22, body_len 16
    09 00 00 00 00 00 00 00                             | request_id 9
    07 00 00 00 00 00 00 00                             | job_id 7
  `));
  const names = [];
  for (const [tag, name] of [[0, 'not_found'], [1, 'dequeued'], [2, 'killed'], [7, 'unknown_7']]) {
    const f = decodeFrame(Buffer.concat([
      hex('48 50 46 52  01 00  17 00  0c 00 00 00  00 00 00 00  09 00 00 00 00 00 00 00'),
      Buffer.from([tag, 0, 0, 0]),
    ]));
    assert.equal(f.kind, KIND.CANCEL_REPLY);
    const r = new Reader(f.body);
    const reply = _internal.decodeCancelReply(r);
    r.end();
    assert.equal(reply.requestId, 9n);
    names.push(reply.result);
    assert.equal(name, reply.result);
  }
  assert.deepEqual(names, ['not_found', 'dequeued', 'killed', 'unknown_7']);
});

test('an outcome Dropped { cancelled } decodes; ids are BigInt, counters Number', () => {
  const body = hex(`
    03 00 00 00 00 00 00 00   | request_id 3
    07 00 00 00 00 00 00 00   | job_id 7
    01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 | evidence_id
    02 00 00 00  02 00 00 00  | evacuate, high
    01                        | attempts
    e8 03 00 00 00 00 00 00   | latency_us 1000
    03 00 00 00  02 00 00 00  00 | Dropped { cancelled, by: None }
  `);
  const r = new Reader(body);
  const o = _internal.decodeOutcome(r);
  r.end();
  assert.equal(o.requestId, 3n);
  assert.equal(o.jobId, 7n);
  assert.equal(typeof o.jobId, 'bigint');
  assert.equal(o.latencyUs, 1000);
  assert.deepEqual([o.result, o.drop.reason, o.drop.by], ['dropped', 'cancelled', null]);

  const reply = _internal.decodeReply(new Reader(hex('05 00 00 00 00 00 00 00  00 00 00 00  ff ff ff ff ff ff ff ff' + ' 01'.repeat(16))));
  assert.equal(reply.jobId, 18446744073709551615n); // u64::MAX survives exactly
});

test('error frames: known codes by name, unknown codes as a generic HoundError with the message kept', () => {
  const known = _internal.decodeError(new Reader(hex('04 00 00 00  03 00 00 00 00 00 00 00  62 79 65')));
  assert.ok(known instanceof HoundError);
  assert.deepEqual([known.code, known.wireCode], ['shutting_down', 4]);
  const unknown = _internal.decodeError(new Reader(hex('09 00 00 00  04 00 00 00 00 00 00 00  69 64 6c 65')));
  assert.ok(unknown instanceof HoundError);
  assert.deepEqual([unknown.code, unknown.wireCode], ['daemon_error', 9]);
  assert.match(unknown.message, /idle/);
});

test('frame reassembly: any split works, headers are checked before the body arrives', () => {
  const a = _internal.frame(KIND.STATS, Buffer.from('first'));
  const b = _internal.frame(KIND.OUTCOME, Buffer.alloc(1000, 7));
  const all = Buffer.concat([a, b, a]);
  for (const step of [1, 3, 16, 17, 999, all.length]) {
    const d = new FrameDecoder(1 << 20);
    const got = [];
    for (let i = 0; i < all.length; i += step) got.push(...d.push(all.subarray(i, i + step)));
    assert.deepEqual(got.map((f) => [f.kind, f.body.length]), [[KIND.STATS, 5], [KIND.OUTCOME, 1000], [KIND.STATS, 5]]);
    assert.equal(got[1].body.every((x) => x === 7), true);
  }
  const d = new FrameDecoder(100);
  assert.throws(() => d.push(_internal.frame(KIND.OUTCOME, Buffer.alloc(0)).fill(0, 0, 4)), /bad magic/);
  const big = Buffer.alloc(16);
  big.write('HPFR', 0, 'latin1');
  big.writeUInt16LE(1, 4);
  big.writeUInt16LE(KIND.OUTCOME, 6);
  big.writeUInt32LE(101, 8);
  assert.throws(() => new FrameDecoder(100).push(big), /exceeds 100/);
});

test('frame reassembly is linear: a 64 MiB body in 64 KiB chunks is copied once', () => {
  const size = 64 * 1024 * 1024;
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) body[i] = (i / 4096) & 0xff;
  const f = _internal.frame(KIND.OUTCOME, body);
  const d = new FrameDecoder(size);
  const got = [];
  // Count every byte copied by Buffer.concat or Buffer#copy while the chunks go in, whatever
  // the decoder's internals: quadratic reassembly (concatenating on every chunk) copies ~1000x.
  const { concat } = Buffer;
  const { copy } = Buffer.prototype;
  let copiedOutside = 0;
  Buffer.concat = function (list, total) { const out = concat.call(this, list, total); copiedOutside += out.length; return out; };
  Buffer.prototype.copy = function (...args) { const n = copy.apply(this, args); copiedOutside += n; return n; };
  try {
    for (let i = 0; i < f.length; i += 65536) got.push(...d.push(f.subarray(i, i + 65536)));
  } finally {
    Buffer.concat = concat;
    Buffer.prototype.copy = copy;
  }
  assert.ok(copiedOutside <= size + 16, `Buffer.concat/copy moved ${copiedOutside} bytes for a ${size}-byte body`);
  assert.equal(got.length, 1);
  assert.equal(got[0].body.length, size);
  assert.equal(Buffer.compare(got[0].body, body), 0);
  assert.ok(d.copied <= size + 16, `copied ${d.copied} bytes for a ${size}-byte body`);
});
