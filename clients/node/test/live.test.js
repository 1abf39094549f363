'use strict';
// Runs the Node client and houndpool/tracehound against a real `houndd run` (node test/run.js).
// houndd is taken from $HOUNDD_BIN, else target/{debug,release}/houndd of this repository,
// built with cargo if neither exists.
//
// Every Submit carries the trailing `key` field (docs/PROTOCOL.md Part 4). A houndd from before
// that field refuses every submit as a malformed frame: the tests that submit then fail with a
// message saying so (needsSubmitKey), instead of passing vacuously.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const http = require('node:http');
const { spawn, execFileSync } = require('node:child_process');

const crypto = require('node:crypto');

const { HoundClient, HoundError } = require('../houndpool.js');
const { createHoundPool } = require('../tracehound.js');

const repo = path.resolve(__dirname, '..', '..', '..');

function houndd() {
  if (process.env.HOUNDD_BIN) return process.env.HOUNDD_BIN;
  for (const profile of ['debug', 'release']) {
    const p = path.join(repo, 'target', profile, 'houndd');
    if (fs.existsSync(p)) return p;
  }
  execFileSync('cargo', ['build', '--quiet', '-p', 'houndpool-supervisor', '--bin', 'houndd'], {
    cwd: repo,
    stdio: 'inherit',
  });
  return path.join(repo, 'target', 'debug', 'houndd');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function get(port, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let daemon;
let dir;
let socketPath;
let opsPort;
let log = '';
let submitKeyError = null; // set when this houndd refuses Submit with the key field

/** Fails the calling test with a clear reason when houndd predates Submit.key. */
function needsSubmitKey() {
  if (submitKeyError) {
    throw new Error(`this houndd refuses Submit with the trailing key field (docs/PROTOCOL.md Part 4), so it predates Submit.key: ${submitKeyError.message}`);
  }
}

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'houndpool-node-'));
  socketPath = path.join(dir, 'houndd.sock');
  opsPort = await freePort();
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('HOUNDPOOL_') && k !== 'HOUNDPOOL_HOUND_BIN') delete env[k];
  Object.assign(env, {
    HOUNDPOOL_POOL_SIZE: '2',
    HOUNDPOOL_POOL_MAX_EVIDENCE_BYTES: '65536',
    HOUNDPOOL_POOL_MAX_OUTPUT_BYTES: '65536',
    HOUNDPOOL_COLD_PATH: path.join(dir, 'cold'),
    HOUNDPOOL_DAEMON_SOCKET: socketPath,
    HOUNDPOOL_DAEMON_DRAIN_GRACE_MS: '5000',
    HOUNDPOOL_OPS_ADDR: `127.0.0.1:${opsPort}`,
  });
  daemon = spawn(houndd(), ['run'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  daemon.stderr.on('data', (d) => { log += d; });
  const deadline = Date.now() + 30000;
  for (;;) {
    if (daemon.exitCode !== null) throw new Error(`houndd exited ${daemon.exitCode}:\n${log}`);
    try {
      const r = await get(opsPort, '/readyz');
      if (r.status === 200) break;
    } catch (_) { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`houndd not ready:\n${log}`);
    await sleep(50);
  }
  const probe = await HoundClient.connect(socketPath);
  try {
    await (await probe.submit({ kind: 'noop', body: 'probe' })).outcome;
  } catch (e) {
    if (!(e instanceof HoundError && e.code === 'malformed_frame')) throw e;
    submitKeyError = e;
  }
  await probe.destroy();
});

test.after(async () => {
  if (daemon && daemon.exitCode === null) {
    daemon.kill('SIGKILL');
    await new Promise((r) => daemon.once('exit', r));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('evacuate stores a verifiable envelope and the outcome names its key', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  const evidence = Buffer.from('POST /login HTTP/1.1\r\n\r\nuser=admin\'--'.repeat(30));
  const r = await c.submit({ kind: 'evacuate', severity: 'high', body: evidence });
  assert.equal(r.accepted, true);
  assert.match(r.evidenceId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  const o = await r.outcome;
  assert.equal(o.result, 'completed');
  assert.equal(o.jobId, r.jobId);
  assert.equal(o.kind, 'evacuate');
  assert.equal(o.severity, 'high');
  assert.equal(o.receipt.key, `evidence/${r.evidenceId}.thcs`);
  assert.equal(o.receipt.originalSize, evidence.length);
  // Completed means durable in the hound's commit journal (the default). The key file
  // appears once the idle hound has sealed its journal (after 200 ms) and the supervisor has
  // materialised it (every 500 ms): wait for it, as an operator looking at the store would.
  const keyPath = path.join(dir, 'cold', o.receipt.key);
  const until = Date.now() + 15000;
  while (!fs.existsSync(keyPath) && Date.now() < until) await sleep(50);
  const stored = fs.readFileSync(keyPath);
  assert.equal(stored.subarray(0, 4).toString(), 'THCS');
  assert.equal(stored.readUInt32BE(6), evidence.length);
  assert.equal(stored.subarray(14, 78).toString(), o.receipt.sha256);

  // Restore it by id, then erase it.
  const back = await (await c.submit({ kind: 'restore', evidenceId: r.evidenceId })).outcome;
  assert.equal(back.result, 'completed');
  assert.deepEqual(back.receipt.payload, evidence);
  const gone = await (await c.submit({ kind: 'erase', evidenceId: r.evidenceId })).outcome;
  assert.equal(gone.receipt.existed, true);
  assert.equal(fs.existsSync(path.join(dir, 'cold', o.receipt.key)), false);
  await c.close();
});

test('encode then decode round-trips inside hounds; noop echoes', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  const evidence = Buffer.from('GET /../../etc/passwd HTTP/1.1\r\n\r\n'.repeat(20));
  const enc = await (await c.submit({ kind: 'encode', body: evidence, level: 9 })).outcome;
  assert.equal(enc.result, 'completed');
  const envelope = enc.receipt.payload;
  assert.equal(envelope.subarray(0, 4).toString(), 'THCS');
  const dec = await (await c.submit({ kind: 'decode', body: envelope })).outcome;
  assert.deepEqual(dec.receipt.payload, evidence);
  const echo = await (await c.submit({ kind: 'noop', body: 'ping' })).outcome;
  assert.equal(echo.receipt.payload.toString(), 'ping');
  await c.close();
});

test('refusals are typed', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  let r = await c.submit({ kind: 'encode', body: Buffer.alloc(0) });
  assert.deepEqual([r.accepted, r.reason], [false, 'empty_evidence']);
  r = await c.submit({ kind: 'evacuate', body: Buffer.alloc(65537, 1) });
  assert.deepEqual([r.accepted, r.reason], [false, 'evidence_too_large']);
  r = await c.submit({ kind: 'restore' });
  assert.deepEqual([r.accepted, r.reason], [false, 'invalid_job']);
  await assert.rejects(() => c.submit({ kind: 'teleport', body: 'x' }), TypeError);
  await c.close();
});

test('many pipelined submits: one reply and one outcome each; stats add up', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  const seen = new Set();
  c.on('outcome', (o) => { assert.equal(seen.has(o.jobId), false); seen.add(o.jobId); });
  const replies = await Promise.all(
    Array.from({ length: 200 }, (_, i) => c.submit({ kind: 'encode', body: `evidence ${i} `.repeat(40) })),
  );
  assert.ok(replies.every((r) => r.accepted));
  const outcomes = await Promise.all(replies.map((r) => r.outcome));
  assert.ok(outcomes.every((o) => o.result === 'completed'));
  assert.equal(seen.size, 200);
  const s = await c.stats();
  assert.equal(s.accepted, s.completed + s.failed + s.timed_out + s.dropped + s.in_flight);
  assert.equal(s.hounds_target, 2);
  assert.equal(s.hounds_ready, 2);
  assert.equal(s.connection_in_flight, 0);
  await c.close();
});

test('a malformed frame gets an error frame and only that connection closes', async () => {
  const bad = await HoundClient.connect(socketPath);
  bad.socket.write(Buffer.alloc(16, 0xab));
  const pending = bad.stats(); // sent after the garbage: never answered
  await assert.rejects(pending, (e) => e instanceof HoundError && e.code === 'malformed_frame');
  const good = await HoundClient.connect(socketPath);
  const s = await good.stats();
  assert.equal(typeof s.requestId, 'bigint');
  assert.equal(s.hounds_target, 2);
  await good.close();
});

test('the ops endpoint serves metrics and readiness', async () => {
  const m = await get(opsPort, '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.body, /^houndpool_daemon_submits_total \d+$/m);
  assert.match(m.body, /^houndpool_pool_outcomes_total\{kind="completed"\} \d+$/m);
  assert.match(m.body, /^houndpool_pool_size_ready 2$/m);
  assert.equal((await get(opsPort, '/healthz')).status, 200);
  assert.equal((await get(opsPort, '/readyz')).status, 200);
});

test('tracehound: 200 activations, 200 processed results, stored under their signatures', async () => {
  needsSubmitKey();
  const pool = createHoundPool({ socket: socketPath, poolSize: 2, timeout: 60000, rotationJitterMs: 0 });
  const results = [];
  pool.onResult((r) => results.push(r));
  const signatures = [];
  for (let i = 0; i < 200; i++) {
    const bytes = new TextEncoder().encode(`POST /search?q=' OR 1=1 -- #${i}`.repeat(10));
    const signature = `injection:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
    signatures.push(signature);
    const severity = ['low', 'medium', 'high', 'critical'][i % 4];
    // The origin's Evidence: getters; bytes an ArrayBuffer.
    const evidence = { get signature() { return signature; }, get severity() { return severity; }, get bytes() { return bytes.buffer; } };
    assert.equal(pool.activate(evidence), undefined);
  }
  const deadline = Date.now() + 60000; // hang guard only
  while (results.length < 200 && Date.now() < deadline) await sleep(10);
  assert.equal(results.length, 200);
  assert.deepEqual(results.filter((r) => r.status !== 'processed'), []);
  assert.deepEqual(new Set(results.map((r) => r.signature)), new Set(signatures));
  assert.ok(results.every((r) => /^hound-\d+$/.test(r.processId)));
  assert.equal(pool.stats.totalActivations, 200);
  assert.equal(pool.stats.totalErrors, 0);
  const stored = fs.readFileSync(path.join(dir, 'cold', 'evidence', `${signatures[7]}.thcs`));
  assert.equal(stored.subarray(0, 4).toString(), 'THCS');
  pool.shutdown();
  await pool.closed;
  await sleep(20);
  assert.equal(results.length, 200); // exactly one result each
});

test('Submit.key: an evacuate stored under a caller key; a bad key is refused invalid_job', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  const key = `xss:${'ab'.repeat(32)}`;
  const o = await (await c.submit({ kind: 'evacuate', body: '<script>alert(1)</script>', key })).outcome;
  assert.equal(o.result, 'completed');
  assert.equal(o.receipt.key, `evidence/${key}.thcs`);
  for (const bad of ['', '../etc', 'a/b', '-x', 'k'.repeat(201)]) {
    const r = await c.submit({ kind: 'evacuate', body: 'x', key: bad });
    assert.deepEqual([r.accepted, r.reason], [false, 'invalid_job'], `key ${JSON.stringify(bad)}`);
  }
  const r = await c.submit({ kind: 'encode', body: 'x', key: 'fine' });
  assert.deepEqual([r.accepted, r.reason], [false, 'invalid_job']);
  await c.close();
});

test('cancel: the answer and the outcome agree (needs Cancel in houndd)', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => c.submit({ kind: 'encode', level: 9, body: crypto.randomBytes(60000 + i) })));
  const answers = await Promise.all(replies.map((r) => c.cancel(r.jobId)));
  const outcomes = await Promise.all(replies.map((r) => r.outcome));
  for (let i = 0; i < answers.length; i++) {
    const a = answers[i];
    const o = outcomes[i];
    assert.ok(['not_found', 'dequeued', 'killed'].includes(a), a);
    if (a === 'not_found') assert.equal(o.result, 'completed');
    else assert.deepEqual([o.result, o.drop.reason], ['dropped', 'cancelled']);
  }
  assert.equal(await c.cancel(987654321n), 'not_found');
  const s = await c.stats();
  assert.equal(s.accepted, s.completed + s.failed + s.timed_out + s.dropped + s.in_flight);
  await c.close();
});

test('SIGTERM drains and houndd exits 0', async () => {
  needsSubmitKey();
  const c = await HoundClient.connect(socketPath);
  const replies = await Promise.all(
    Array.from({ length: 50 }, () => c.submit({ kind: 'evacuate', body: 'GET / HTTP/1.1\r\n\r\n' })),
  );
  daemon.kill('SIGTERM');
  const outcomes = await Promise.all(replies.filter((r) => r.accepted).map((r) => r.outcome));
  assert.ok(outcomes.every((o) => o.result === 'completed' || o.result === 'dropped'));
  const code = await new Promise((r) => (daemon.exitCode !== null ? r(daemon.exitCode) : daemon.once('exit', r)));
  assert.equal(code, 0, log);
  assert.equal(fs.existsSync(socketPath), false);
  await c.closed;
});
