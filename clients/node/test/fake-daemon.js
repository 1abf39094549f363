'use strict';
// A scripted stand-in for houndd on a real Unix socket, for tests of client behaviour that a
// real daemon cannot be made to show on demand (backpressure, a lost connection, unknown error
// codes, cancel races). Its encoders are written from docs/PROTOCOL.md Part 4 and the
// integrator's wire decisions (Submit.key, Cancel/CancelReply), not from the client.

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const KIND = { SUBMIT: 16, SUBMIT_REPLY: 17, OUTCOME: 18, STATS_REQUEST: 19, STATS: 20, ERROR: 21, CANCEL: 22, CANCEL_REPLY: 23 };
const JOB_KINDS = ['noop', 'encode', 'evacuate', 'restore', 'erase', 'decode'];
const SEVERITIES = ['low', 'medium', 'high', 'critical'];

function u8(v) { return Buffer.from([v]); }
function u16(v) { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; }
function u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; }
function u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; }
function bytes(buf) { return Buffer.concat([u64(buf.length), buf]); }
function str(s) { return bytes(Buffer.from(s, 'utf8')); }
function none() { return u8(0); }
function some(b) { return Buffer.concat([u8(1), b]); }

function frame(kind, body) {
  const h = Buffer.alloc(16);
  h.write('HPFR', 0, 'latin1');
  h.writeUInt16LE(1, 4);
  h.writeUInt16LE(kind, 6);
  h.writeUInt32LE(body.length, 8);
  return Buffer.concat([h, body]);
}

/** Parses one client frame body into an object (Submit with its trailing key, Cancel, Stats). */
function parse(kind, body) {
  let p = 0;
  const take = (n) => { const v = body.subarray(p, p + n); p += n; if (v.length !== n) throw new Error('short body'); return v; };
  const rd64 = () => take(8).readBigUInt64LE(0);
  const rd32 = () => take(4).readUInt32LE(0);
  const opt = (f) => (take(1)[0] === 1 ? f() : null);
  let m;
  if (kind === KIND.SUBMIT) {
    m = {
      type: 'submit',
      requestId: rd64(),
      kind: JOB_KINDS[rd32()],
      severity: SEVERITIES[rd32()],
      evidenceId: opt(() => take(16)),
      level: opt(() => take(1)[0]),
    };
    m.body = Buffer.from(take(Number(rd64())));
    m.key = opt(() => take(Number(rd64())).toString('utf8'));
  } else if (kind === KIND.CANCEL) {
    m = { type: 'cancel', requestId: rd64(), jobId: rd64() };
  } else if (kind === KIND.STATS_REQUEST) {
    m = { type: 'stats', requestId: rd64() };
  } else {
    throw new Error(`fake daemon: kind ${kind}`);
  }
  if (p !== body.length) throw new Error(`fake daemon: ${body.length - p} trailing bytes in kind ${kind}`);
  return m;
}

const enc = {
  accepted(requestId, jobId) {
    return frame(KIND.SUBMIT_REPLY, Buffer.concat([u64(requestId), u32(0), u64(jobId), Buffer.alloc(16, 1)]));
  },
  refused(requestId, reason, message = 'refused') {
    return frame(KIND.SUBMIT_REPLY, Buffer.concat([u64(requestId), u32(1), u32(reason), str(message)]));
  },
  /** result: { completed: {hound, key, payload} } | { failed: {kind, code, message} } | 'timed_out' | { dropped: reason } */
  outcome(requestId, jobId, result, job = { kind: 2, severity: 2 }) {
    const head = Buffer.concat([u64(requestId), u64(jobId), Buffer.alloc(16, 1), u32(job.kind), u32(job.severity), u8(1), u64(1234)]);
    let tail;
    if (result === 'timed_out') {
      tail = u32(2);
    } else if (result.completed) {
      const c = result.completed;
      tail = Buffer.concat([
        u32(0), u32(c.hound || 0), c.key ? some(str(c.key)) : none(), none(), none(), none(), none(), none(),
        u8(0), none(), c.payload ? some(bytes(c.payload)) : none(),
      ]);
    } else if (result.failed) {
      const f = result.failed;
      tail = Buffer.concat([u32(1), u32(f.kind), u16(f.code), str(f.message || 'failed')]);
    } else {
      tail = Buffer.concat([u32(3), u32(result.dropped), none()]);
    }
    return frame(KIND.OUTCOME, Buffer.concat([head, tail]));
  },
  cancelReply(requestId, result) {
    return frame(KIND.CANCEL_REPLY, Buffer.concat([u64(requestId), u32(result)]));
  },
  stats(requestId, houndsReady = 2) {
    const n = Array(15).fill(0).map(() => u64(0));
    return frame(KIND.STATS, Buffer.concat([u64(requestId), ...n, u32(houndsReady), u32(houndsReady), u8(0), u64(1), u64(0), u64(0)]));
  },
  error(code, message) {
    return frame(KIND.ERROR, Buffer.concat([u32(code), str(message)]));
  },
};

/**
 * Starts a fake daemon. `onMessage(msg, conn)` is called for each client frame; `conn.send(buf)`
 * writes, `conn.socket` is the raw socket. Returns { path, conns, messages, close() }.
 */
async function startFake(onMessage) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'houndpool-fake-'));
  const sockPath = path.join(dir, 'fake.sock');
  const state = { path: sockPath, conns: [], messages: [] };
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    const conn = { socket, send: (b) => socket.write(b), messages: [] };
    state.conns.push(conn);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 16) {
        const len = buf.readUInt32LE(8);
        if (buf.length < 16 + len) break;
        const m = parse(buf.readUInt16LE(6), buf.subarray(16, 16 + len));
        buf = buf.subarray(16 + len);
        conn.messages.push(m);
        state.messages.push(m);
        onMessage(m, conn);
      }
    });
    socket.on('end', () => { if (conn.onEnd) conn.onEnd(); else socket.end(); });
  });
  await new Promise((resolve) => server.listen(sockPath, resolve));
  state.close = () => new Promise((resolve) => {
    for (const c of state.conns) c.socket.destroy();
    server.close(() => { fs.rmSync(dir, { recursive: true, force: true }); resolve(); });
  });
  return state;
}

/** A daemon that accepts everything and completes each job at once (jobs numbered from 1). */
function completingDaemon() {
  let next = 1n;
  return (m, conn) => {
    if (m.type === 'submit') {
      const job = next++;
      conn.send(enc.accepted(m.requestId, job));
      conn.send(enc.outcome(m.requestId, job, { completed: { hound: 1, key: m.key ? `evidence/${m.key}.thcs` : null } }));
    } else if (m.type === 'stats') {
      conn.send(enc.stats(m.requestId));
    } else if (m.type === 'cancel') {
      conn.send(enc.cancelReply(m.requestId, 0));
    }
  };
}

module.exports = { startFake, enc, frame, KIND, completingDaemon };
