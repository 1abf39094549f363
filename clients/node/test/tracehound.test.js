'use strict';
// houndpool/tracehound against a scripted daemon (test/fake-daemon.js): the origin's IHoundPool
// contract (exactly one result per activation, the origin's error names, terminate, stats,
// shutdown) in the cases a real daemon cannot be made to show on demand.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const os = require('node:os');

const { createHoundPool, HOUND_PRESSURE_ERRORS, isHoundPressureError } = require('../tracehound.js');
const { startFake, enc, completingDaemon } = require('./fake-daemon.js');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what) {
  const deadline = Date.now() + 20000; // hang guard only
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** The origin's Evidence shape: getters, bytes an ArrayBuffer. */
class Evidence {
  constructor(signature, severity, text) {
    this._s = signature;
    this._v = severity;
    this._b = new TextEncoder().encode(text).buffer;
  }
  get signature() { return this._s; }
  get severity() { return this._v; }
  get bytes() { return this._b; }
}

function poolFor(fake, extra = {}) {
  const pool = createHoundPool({ socket: fake.path, poolSize: 2, timeout: 10000, rotationJitterMs: 10, ...extra });
  const results = [];
  pool.onResult((r) => results.push(r));
  return { pool, results };
}

test('activate: an evacuate keyed by the signature; one processed result each; stats', async () => {
  const fake = await startFake(completingDaemon());
  const { pool, results } = poolFor(fake);
  const ret = pool.activate(new Evidence('sqli:aa', 'critical', 'x'.repeat(100)));
  assert.equal(ret, undefined);
  pool.activate(new Evidence('xss:bb', 'low', 'y'));
  await until(() => results.length === 2, 'two results');
  const submits = fake.messages.filter((m) => m.type === 'submit');
  assert.deepEqual(submits.map((m) => [m.kind, m.severity, m.key, m.body.length]), [
    ['evacuate', 'critical', 'sqli:aa', 100], ['evacuate', 'low', 'xss:bb', 1]]);
  assert.deepEqual(results.map((r) => [r.signature, r.status, r.processId, r.error]), [
    ['sqli:aa', 'processed', 'hound-1', undefined], ['xss:bb', 'processed', 'hound-1', undefined]]);
  assert.ok(results.every((r) => typeof r.durationMs === 'number' && r.durationMs >= 0));
  const s = pool.stats;
  assert.ok(Object.isFrozen(s));
  assert.deepEqual([s.totalActivations, s.totalTimeouts, s.totalErrors, s.activeProcesses], [2, 0, 0, 0]);
  assert.equal(s.totalProcesses, 2);
  pool.shutdown();
  await pool.closed;
  await fake.close();
});

test('refusals get the origin\'s names per onPoolExhausted', async () => {
  const fake = await startFake((m, conn) => {
    if (m.type === 'stats') conn.send(enc.stats(m.requestId));
    if (m.type !== 'submit') return;
    const reason = { exhausted: 0, full: 1, busy: 6, big: 2, invalid: 4 }[m.key.split(':')[0]];
    conn.send(enc.refused(m.requestId, reason, 'no'));
  });
  const run = async (action, keys) => {
    const { pool, results } = poolFor(fake, { onPoolExhausted: action, deferQueueLimit: 0 });
    for (const k of keys) pool.activate(new Evidence(`${k}:1`, 'high', 'e'));
    await until(() => results.length === keys.length, `${action} results`);
    const stats = pool.stats;
    pool.shutdown();
    await pool.closed;
    return [results.map((r) => [r.status, r.processId, r.error]), stats.totalErrors];
  };
  assert.deepEqual(await run('drop', ['exhausted', 'busy', 'full', 'big', 'invalid']), [[
    ['error', 'pool', 'pool_exhausted'], ['error', 'pool', 'pool_exhausted'], ['error', 'pool', 'defer_queue_full'],
    ['error', 'pool', 'evidence_too_large'], ['error', 'pool', 'invalid_job']], 2]);
  assert.deepEqual(await run('escalate', ['exhausted']), [[['error', 'pool', 'pool_exhausted_escalated']], 1]);
  assert.deepEqual(await run('defer', ['exhausted']), [[['error', 'pool', 'defer_queue_full']], 0]);
  assert.equal(HOUND_PRESSURE_ERRORS.POOL_EXHAUSTED, 'pool_exhausted');
  assert.equal(isHoundPressureError('pool_exhausted_escalated'), true);
  assert.equal(isHoundPressureError('timeout'), false);
  await fake.close();
});

test('defer: refused activations wait in a bounded queue and are resubmitted when capacity shows', async () => {
  let room = 0;
  let job = 1n;
  const fake = await startFake((m, conn) => {
    if (m.type === 'stats') conn.send(enc.stats(m.requestId));
    if (m.type !== 'submit') return;
    if (room === 0) { conn.send(enc.refused(m.requestId, 6, 'busy')); return; }
    room--;
    const id = job++;
    conn.send(enc.accepted(m.requestId, id));
    setTimeout(() => { room++; conn.send(enc.outcome(m.requestId, id, { completed: { hound: 2 } })); }, 2);
  });
  const { pool, results } = poolFor(fake, { onPoolExhausted: 'defer', deferQueueLimit: 5 });
  for (let i = 0; i < 8; i++) pool.activate(new Evidence(`sig:${i}`, 'medium', `e${i}`));
  await until(() => results.length === 3, 'the three over the limit');
  assert.deepEqual(results.map((r) => r.error), ['defer_queue_full', 'defer_queue_full', 'defer_queue_full']);
  room = 2;
  await until(() => results.length === 8, 'all eight');
  assert.equal(results.filter((r) => r.status === 'processed').length, 5);
  assert.equal(new Set(results.map((r) => r.signature)).size, 8);
  pool.shutdown();
  await pool.closed;
  await fake.close();
});

test('outcomes map to processed / timeout / error; a client-side timeout cancels the job', async () => {
  let job = 1n;
  const fake = await startFake((m, conn) => {
    if (m.type === 'stats') conn.send(enc.stats(m.requestId));
    if (m.type === 'cancel') { conn.send(enc.cancelReply(m.requestId, 2)); conn.send(enc.outcome(0n, m.jobId, { dropped: 2 })); }
    if (m.type !== 'submit') return;
    const id = job++;
    conn.send(enc.accepted(m.requestId, id));
    const what = m.key.split(':')[0];
    if (what === 'hang') return; // the client's timeout must fire
    const result = {
      timeout: 'timed_out',
      cold: { failed: { kind: 0, code: 5, message: 'bucket down' } },
      oom: { failed: { kind: 2, code: 0 } },
      evicted: { dropped: 0 },
    }[what];
    conn.send(enc.outcome(m.requestId, id, result));
  });
  const { pool, results } = poolFor(fake, { timeout: 200 });
  for (const k of ['timeout', 'cold', 'oom', 'evicted', 'hang']) pool.activate(new Evidence(`${k}:1`, 'high', 'e'));
  await until(() => results.length === 5, 'five results');
  const by = Object.fromEntries(results.map((r) => [r.signature.split(':')[0], [r.status, r.error]]));
  assert.deepEqual(by, {
    timeout: ['timeout', 'timeout'],
    cold: ['error', 'cold_storage_unavailable'],
    oom: ['error', 'out_of_memory'],
    evicted: ['error', 'evicted'],
    hang: ['timeout', 'timeout'],
  });
  await until(() => fake.messages.some((m) => m.type === 'cancel'), 'the cancel of the hung job');
  await sleep(20); // the cancelled outcome arrives: no second result
  assert.equal(results.length, 5);
  const s = pool.stats;
  assert.deepEqual([s.totalTimeouts, s.totalErrors], [2, 2]);
  pool.shutdown();
  await pool.closed;
  await fake.close();
});

test('terminate(signature) cancels the job: one result, forced_terminate', async () => {
  const held = new Map();
  let job = 1n;
  const fake = await startFake((m, conn) => {
    if (m.type === 'stats') conn.send(enc.stats(m.requestId));
    if (m.type === 'submit') { const id = job++; held.set(id, m.requestId); conn.send(enc.accepted(m.requestId, id)); }
    if (m.type === 'cancel') {
      conn.send(enc.cancelReply(m.requestId, 2));
      conn.send(enc.outcome(held.get(m.jobId), m.jobId, { dropped: 2 }));
    }
  });
  const { pool, results } = poolFor(fake);
  pool.activate(new Evidence('rce:1', 'critical', 'e'));
  pool.terminate('rce:1'); // before the reply: cancelled once the job id is known
  pool.activate(new Evidence('rce:2', 'critical', 'e'));
  await until(() => pool.stats.activeProcesses === 1, 'rce:2 running');
  pool.terminate('rce:2');
  pool.terminate('nobody');
  await until(() => results.length === 2, 'two results');
  assert.deepEqual(results.map((r) => [r.signature, r.status, r.error]), [
    ['rce:1', 'error', 'forced_terminate'], ['rce:2', 'error', 'forced_terminate']]);
  assert.deepEqual(fake.messages.filter((m) => m.type === 'cancel').map((m) => m.jobId), [1n, 2n]);
  pool.shutdown();
  await pool.closed;
  await fake.close();
});

test('activate never throws nor returns a Promise, whatever the evidence', async () => {
  const fake = await startFake(completingDaemon());
  const { pool, results } = poolFor(fake);
  const hostile = {
    get signature() { throw new Error('disposed'); },
    get severity() { return 'high'; },
    get bytes() { throw new Error('disposed'); },
  };
  const inputs = [hostile, null, undefined, 42, { signature: 's', severity: 'extreme', bytes: new ArrayBuffer(1) },
    { signature: 's', severity: 'low', bytes: 'not bytes' }];
  for (const e of inputs) assert.equal(pool.activate(e), undefined);
  assert.equal(results.length, inputs.length);
  assert.ok(results.every((r) => r.status === 'error' && r.error === 'invalid_evidence' && r.processId === 'pool'));
  pool.onResult(() => { throw new Error('handler bug'); }); // counted, never propagated
  pool.activate(new Evidence('ok:1', 'low', 'e'));
  await until(() => results.length === inputs.length + 1, 'the good one');
  assert.equal(results[inputs.length].status, 'processed');
  assert.equal(pool.stats.totalErrors, inputs.length + 1);
  pool.shutdown();
  assert.equal(pool.activate(new Evidence('late:1', 'low', 'e')), undefined);
  assert.equal(results[results.length - 1].error, 'shutting_down');
  await pool.closed;
  await fake.close();
});

test('no daemon, or a lost connection: every activation still gets its one error result', async () => {
  const { pool, results } = poolFor({ path: path.join(os.tmpdir(), `houndpool-none-${process.pid}.sock`) });
  pool.activate(new Evidence('a:1', 'low', 'e'));
  pool.activate(new Evidence('a:2', 'low', 'e'));
  await until(() => results.length === 2, 'two results');
  assert.deepEqual(results.map((r) => r.error), ['connect_failed', 'connect_failed']);
  pool.shutdown();
  await pool.closed;

  const fake = await startFake((m, conn) => {
    if (m.type === 'submit') { conn.send(enc.accepted(m.requestId, 9n)); setTimeout(() => conn.socket.destroy(), 10); }
  });
  const p2 = poolFor(fake, { statsIntervalMs: 0 });
  p2.pool.activate(new Evidence('b:1', 'low', 'e'));
  await until(() => p2.results.length === 1, 'the lost one');
  assert.ok(['connection_lost', 'closed'].includes(p2.results[0].error), p2.results[0].error);
  // The next activation reconnects.
  p2.pool.activate(new Evidence('b:2', 'low', 'e'));
  await until(() => p2.results.length === 2, 'the second');
  assert.equal(fake.conns.length, 2);
  p2.pool.shutdown();
  await p2.pool.closed;
  await fake.close();
});

test('shutdown: in-flight activations still get their outcome, then closed resolves', async () => {
  const pending = [];
  let job = 1n;
  const fake = await startFake((m, conn) => {
    if (m.type === 'stats') conn.send(enc.stats(m.requestId));
    if (m.type === 'submit') { const id = job++; conn.send(enc.accepted(m.requestId, id)); pending.push([m.requestId, id, conn]); }
  });
  const { pool, results } = poolFor(fake);
  for (let i = 0; i < 3; i++) pool.activate(new Evidence(`s:${i}`, 'low', 'e'));
  await until(() => pending.length === 3, 'three accepted');
  let ended = false;
  fake.conns[0].onEnd = () => {
    ended = true;
    for (const [rid, id, conn] of pending) conn.send(enc.outcome(rid, id, { completed: { hound: 1 } }));
    conn0.socket.end();
  };
  const conn0 = fake.conns[0];
  pool.shutdown();
  await pool.closed;
  assert.ok(ended, 'the pool half-closed its connection');
  assert.deepEqual(results.map((r) => r.status), ['processed', 'processed', 'processed']);
  await fake.close();
});

test('an idle pool does not keep the process alive; a busy one does until its results', async () => {
  const { spawn } = require('node:child_process');
  let job = 1n;
  const fake = await startFake((m, conn) => {
    if (m.type === 'stats') conn.send(enc.stats(m.requestId));
    if (m.type !== 'submit') return;
    const id = job++;
    conn.send(enc.accepted(m.requestId, id));
    setTimeout(() => conn.send(enc.outcome(m.requestId, id, { completed: { hound: 1 } })), 300);
  });
  const script = `
    const { createHoundPool } = require(${JSON.stringify(path.join(__dirname, '..', 'tracehound.js'))});
    const pool = createHoundPool({ socket: process.argv[1], poolSize: 1, timeout: 10000, rotationJitterMs: 0 });
    pool.onResult((r) => console.log(r.status));
    pool.activate({ signature: 'idle:1', severity: 'low', bytes: new ArrayBuffer(3) });`;
  const child = spawn(process.execPath, ['-e', script, fake.path], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const guard = setTimeout(() => child.kill('SIGKILL'), 20000); // hang guard only
  const code = await new Promise((r) => child.once('exit', (c, sig) => r(sig || c)));
  clearTimeout(guard);
  assert.equal(code, 0, 'the process did not exit by itself');
  assert.equal(out.trim(), 'processed'); // it waited for the result, then exited
  await fake.close();
});
