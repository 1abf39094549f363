'use strict';
// HoundClient behaviour over a real Unix socket against a scripted daemon (test/fake-daemon.js):
// backpressure, abort/timeout, cancel, connection errors, large outcomes.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const os = require('node:os');

const { HoundClient, HoundError } = require('../houndpool.js');
const { startFake, enc, completingDaemon } = require('./fake-daemon.js');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what) {
  const deadline = Date.now() + 20000; // hang guard only
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

test('connect to a missing socket: HoundError connect_failed with the cause', async () => {
  const missing = path.join(os.tmpdir(), `houndpool-missing-${process.pid}.sock`);
  await assert.rejects(HoundClient.connect(missing), (e) => e instanceof HoundError && e.code === 'connect_failed' && e.cause.code === 'ENOENT');
});

test('a lost connection rejects pending requests with HoundError connection_lost/closed', async () => {
  const fake = await startFake((m, conn) => { if (m.type === 'submit') conn.socket.destroy(); });
  const c = await HoundClient.connect(fake.path);
  await assert.rejects(c.submit({ kind: 'noop', body: 'x' }), (e) => e instanceof HoundError && ['connection_lost', 'closed'].includes(e.code));
  await c.closed;
  await assert.rejects(c.stats(), HoundError);
  await fake.close();
});

test('an error frame with a code this client does not know rejects as daemon_error', async () => {
  const fake = await startFake((m, conn) => { conn.send(enc.error(42, 'idle too long')); conn.socket.end(); });
  const c = await HoundClient.connect(fake.path);
  await assert.rejects(c.stats(), (e) => e instanceof HoundError && e.code === 'daemon_error' && e.wireCode === 42 && /idle too long/.test(e.message));
  await fake.close();
});

test('write honours backpressure: frames wait for drain, in order, none lost', async () => {
  let paused = true;
  const fake = await startFake(completingDaemon());
  const c = await HoundClient.connect(fake.path);
  await until(() => fake.conns.length === 1, 'the connection');
  fake.conns[0].socket.pause();
  const frameSize = 1024 * 1024;
  const replies = [];
  for (let i = 0; i < 64; i++) replies.push(c.submit({ kind: 'noop', body: Buffer.alloc(frameSize, i) }));
  // The kernel and the socket take some; the rest waits in the client's own queue, and the
  // socket's buffer holds at most the frame that filled it.
  assert.ok(c.queuedBytes > 0, 'nothing queued: the socket never asked to wait');
  assert.ok(c.socket.writableLength <= frameSize + 16 + c.socket.writableHighWaterMark, `socket buffer ${c.socket.writableLength}`);
  assert.equal(c.pendingWriteBytes, c.queuedBytes + c.socket.writableLength);
  paused = false;
  fake.conns[0].socket.resume();
  const got = await Promise.all(replies);
  assert.ok(!paused);
  assert.ok(got.every((r) => r.accepted));
  assert.deepEqual(fake.messages.map((m) => m.body[0]), Array.from({ length: 64 }, (_, i) => i));
  await Promise.all(got.map((r) => r.outcome));
  assert.equal(c.queuedBytes, 0);
  await c.close();
  await fake.close();
});

test('abort before the frame is written: it is withdrawn and never reaches the daemon', async () => {
  const fake = await startFake(completingDaemon());
  const c = await HoundClient.connect(fake.path);
  await until(() => fake.conns.length === 1, 'the connection');
  fake.conns[0].socket.pause();
  const big = [];
  for (let i = 0; i < 32; i++) big.push(c.submit({ kind: 'noop', body: Buffer.alloc(1 << 20) }));
  assert.ok(c.queuedBytes > 0);
  const ac = new AbortController();
  const late = c.submit({ kind: 'noop', body: 'withdrawn' }, { signal: ac.signal });
  ac.abort();
  await assert.rejects(late, (e) => e instanceof HoundError && e.code === 'aborted');
  fake.conns[0].socket.resume();
  await Promise.all(big);
  const last = await c.submit({ kind: 'noop', body: 'after' });
  await last.outcome;
  assert.equal(fake.messages.some((m) => m.type === 'submit' && m.body.toString() === 'withdrawn'), false);
  await c.close();
  await fake.close();
});

test('abort after acceptance rejects the outcome and cancels the job; timeoutMs does the same', async () => {
  let job = 100n;
  const fake = await startFake((m, conn) => {
    if (m.type === 'submit') conn.send(enc.accepted(m.requestId, job++)); // never completes
    if (m.type === 'cancel') {
      conn.send(enc.cancelReply(m.requestId, 2));
      conn.send(enc.outcome(0n, m.jobId, { dropped: 2 }));
    }
  });
  const c = await HoundClient.connect(fake.path);
  const dropped = [];
  c.on('outcome', (o) => dropped.push([o.jobId, o.drop.reason]));
  const ac = new AbortController();
  const r = await c.submit({ kind: 'evacuate', body: 'x' }, { signal: ac.signal });
  assert.equal(r.jobId, 100n);
  ac.abort(new Error('caller gave up'));
  await assert.rejects(r.outcome, (e) => e instanceof HoundError && e.code === 'aborted' && e.cause.message === 'caller gave up');
  const t = await c.submit({ kind: 'evacuate', body: 'y' }, { timeoutMs: 50 });
  await assert.rejects(t.outcome, (e) => e instanceof HoundError && e.code === 'timeout');
  await until(() => dropped.length === 2, 'both cancelled outcomes');
  assert.deepEqual(fake.messages.filter((m) => m.type === 'cancel').map((m) => m.jobId), [100n, 101n]);
  assert.deepEqual(dropped, [[100n, 'cancelled'], [101n, 'cancelled']]);
  await c.destroy();
  await fake.close();
});

test('cancel(jobId) sends Cancel and resolves to the daemon\'s answer; ids must be BigInt', async () => {
  const fake = await startFake((m, conn) => { if (m.type === 'cancel') conn.send(enc.cancelReply(m.requestId, m.jobId === 5n ? 1 : 0)); });
  const c = await HoundClient.connect(fake.path);
  assert.equal(await c.cancel(5n), 'dequeued');
  assert.equal(await c.cancel(6n), 'not_found');
  await assert.rejects(c.cancel('5'), TypeError);
  await assert.rejects(c.cancel(-1n), TypeError);
  await c.destroy();
  await fake.close();
});

test('a 64 MiB outcome arrives whole over the socket', async () => {
  const size = 64 * 1024 * 1024;
  const payload = Buffer.alloc(size);
  for (let i = 0; i < size; i += 997) payload[i] = i & 0xff;
  const fake = await startFake((m, conn) => {
    conn.send(enc.accepted(m.requestId, 1n));
    conn.send(enc.outcome(m.requestId, 1n, { completed: { hound: 3, payload } }, { kind: 3, severity: 1 }));
  });
  const c = await HoundClient.connect(fake.path);
  const o = await (await c.submit({ kind: 'restore', evidenceId: '0190a0b0-0000-7000-8000-000000000001' })).outcome;
  assert.equal(o.receipt.payload.length, size);
  assert.equal(Buffer.compare(o.receipt.payload, payload), 0);
  assert.ok(c.decoder.copied <= size + 1024, `copied ${c.decoder.copied}`);
  await c.destroy();
  await fake.close();
});
