'use strict';
// Dependency-free Node.js client of houndd (the houndpool daemon).
//
// The wire format is specified in docs/PROTOCOL.md (Part 1 for frames and the body encoding, Part 4 for the daemon): 16-byte frame
// headers (magic "HPFR", version, kind, body length, reserved), bodies in the protocol's
// bincode encoding (fixed-width little-endian integers; strings and byte strings as a u64
// length then the bytes; Option as a u8 tag 0/1 then the value; enums as a u32 variant index
// then the fields). This file follows that document; it does not read Rust code.
//
//   const { HoundClient } = require('./houndpool');
//   const client = await HoundClient.connect('/run/houndpool/houndd.sock');
//   const r = await client.submit({ kind: 'evacuate', severity: 'high', body: evidenceBuffer });
//   if (r.accepted) console.log(await r.outcome);   // { result: 'completed', receipt: {...}, ... }
//   else console.log('refused', r.reason, r.message);
//   await client.close();

const net = require('node:net');
const { EventEmitter } = require('node:events');

const FRAME_MAGIC = 0x52465048; // "HPFR" read as a little-endian u32
const PROTOCOL_VERSION = 1;
const FRAME_HEADER_LEN = 16;
// The largest body this client accepts: the largest a daemon can be configured to send.
const DEFAULT_MAX_FRAME = 256 * 1024 * 1024 + 1024 * 1024;

const KIND = { SUBMIT: 16, SUBMIT_REPLY: 17, OUTCOME: 18, STATS_REQUEST: 19, STATS: 20, ERROR: 21 };
const JOB_KINDS = ['noop', 'encode', 'evacuate', 'restore', 'erase', 'decode'];
const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const REFUSE_REASONS = [
  'pool_exhausted', 'defer_queue_full', 'evidence_too_large', 'empty_evidence',
  'invalid_job', 'shutting_down', 'connection_busy',
];
const FAILURE_KINDS = ['job', 'hound_killed', 'out_of_memory', 'protocol_violation', 'poison'];
const DROP_KINDS = ['evicted', 'shutdown'];
const ERROR_CODES = [
  'malformed_frame', 'unexpected_message', 'permission_denied', 'too_many_connections',
  'shutting_down',
];
const FAIL_CODES = [
  null, 'invalid_request', 'evidence_too_large', 'integrity_violation', 'decompression_limit',
  'cold_storage_unavailable', 'not_found', 'cold_storage_rejected', 'internal',
];
const STATS_FIELDS = [
  ['submitted', 'u64'], ['accepted', 'u64'], ['refused_exhausted', 'u64'],
  ['refused_defer_full', 'u64'], ['refused_too_large', 'u64'], ['refused_invalid', 'u64'],
  ['refused_shutdown', 'u64'], ['completed', 'u64'], ['failed', 'u64'], ['timed_out', 'u64'],
  ['dropped', 'u64'], ['in_flight', 'u64'], ['in_rings', 'u64'], ['deferred', 'u64'],
  ['retrying', 'u64'], ['hounds_target', 'u32'], ['hounds_ready', 'u32'], ['draining', 'bool'],
  ['connections_open', 'u64'], ['undelivered', 'u64'], ['connection_in_flight', 'u64'],
];

/** An error reported by the daemon (error frame) or by this client's decoder. */
class HoundError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'HoundError';
    this.code = code;
  }
}

// ---- encoding ---------------------------------------------------------------------------------

class Writer {
  constructor() { this.parts = []; this.length = 0; }
  push(buf) { this.parts.push(buf); this.length += buf.length; }
  u8(v) { const b = Buffer.alloc(1); b.writeUInt8(v); this.push(b); }
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.push(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  bytes(buf) { this.u64(buf.length); this.push(buf); }
  option(v, write) { if (v === undefined || v === null) { this.u8(0); } else { this.u8(1); write(v); } }
  finish() { return Buffer.concat(this.parts, this.length); }
}

function frame(kind, body) {
  const h = Buffer.alloc(FRAME_HEADER_LEN);
  h.writeUInt32LE(FRAME_MAGIC, 0);
  h.writeUInt16LE(PROTOCOL_VERSION, 4);
  h.writeUInt16LE(kind, 6);
  h.writeUInt32LE(body.length, 8);
  h.writeUInt32LE(0, 12);
  return Buffer.concat([h, body]);
}

function indexOf(list, name, what) {
  const i = list.indexOf(name);
  if (i < 0) throw new TypeError(`unknown ${what} ${JSON.stringify(name)}; one of ${list.join(', ')}`);
  return i;
}

/** A UUID string or a 16-byte buffer → 16-byte buffer. */
function uuidBytes(id) {
  if (Buffer.isBuffer(id) && id.length === 16) return id;
  if (typeof id === 'string' && /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(id)) {
    return Buffer.from(id.replace(/-/g, ''), 'hex');
  }
  throw new TypeError('evidenceId must be a UUID string or a 16-byte Buffer');
}

function uuidString(buf) {
  const h = buf.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function encodeSubmit(requestId, job) {
  const w = new Writer();
  w.u64(requestId);
  w.u32(indexOf(JOB_KINDS, job.kind || 'evacuate', 'job kind'));
  w.u32(indexOf(SEVERITIES, job.severity || 'medium', 'severity'));
  w.option(job.evidenceId, (id) => w.push(uuidBytes(id)));
  w.option(job.level, (l) => w.u8(l));
  const body = job.body === undefined ? Buffer.alloc(0) : Buffer.from(job.body);
  w.bytes(body);
  return frame(KIND.SUBMIT, w.finish());
}

// ---- decoding ---------------------------------------------------------------------------------

class Reader {
  constructor(buf) { this.buf = buf; this.pos = 0; }
  need(n) {
    if (this.pos + n > this.buf.length) throw new HoundError('malformed_frame', `body truncated at byte ${this.pos}`);
  }
  u8() { this.need(1); return this.buf.readUInt8(this.pos++); }
  u16() { this.need(2); const v = this.buf.readUInt16LE(this.pos); this.pos += 2; return v; }
  u32() { this.need(4); const v = this.buf.readUInt32LE(this.pos); this.pos += 4; return v; }
  u64() {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  bool() {
    const b = this.u8();
    if (b > 1) throw new HoundError('malformed_frame', `bool byte ${b}`);
    return b === 1;
  }
  fixed(n) { this.need(n); const v = this.buf.subarray(this.pos, this.pos + n); this.pos += n; return Buffer.from(v); }
  bytes() {
    const n = this.u64();
    if (typeof n !== 'number') throw new HoundError('malformed_frame', 'length too large');
    return this.fixed(n);
  }
  string() { return this.bytes().toString('utf8'); }
  option(read) {
    const tag = this.u8();
    if (tag > 1) throw new HoundError('malformed_frame', `option tag ${tag}`);
    return tag === 1 ? read() : null;
  }
  name(list, what) {
    const i = this.u32();
    if (i >= list.length) throw new HoundError('malformed_frame', `unknown ${what} ${i}`);
    return list[i];
  }
  end() {
    if (this.pos !== this.buf.length) throw new HoundError('malformed_frame', `${this.buf.length - this.pos} trailing bytes`);
  }
}

function decodeReply(r) {
  const requestId = r.u64();
  const tag = r.u32();
  if (tag === 0) {
    const jobId = r.u64();
    return { requestId, accepted: true, jobId, evidenceId: uuidString(r.fixed(16)) };
  }
  if (tag === 1) {
    return { requestId, accepted: false, reason: r.name(REFUSE_REASONS, 'refuse reason'), message: r.string() };
  }
  throw new HoundError('malformed_frame', `submit result ${tag}`);
}

function decodeOutcome(r) {
  const o = {
    requestId: r.u64(),
    jobId: r.u64(),
    evidenceId: uuidString(r.fixed(16)),
    kind: r.name(JOB_KINDS, 'job kind'),
    severity: r.name(SEVERITIES, 'severity'),
    attempts: r.u8(),
    latencyUs: r.u64(),
  };
  const tag = r.u32();
  if (tag === 0) {
    o.result = 'completed';
    o.receipt = {
      hound: r.u32(),
      key: r.option(() => r.string()),
      originalSize: r.option(() => r.u64()),
      compressedSize: r.option(() => r.u64()),
      sha256: r.option(() => r.fixed(32).toString('hex')),
      encodeUs: r.option(() => r.u64()),
      storeUs: r.option(() => r.u64()),
      spooled: r.bool(),
      existed: r.option(() => r.bool()),
      payload: r.option(() => r.bytes()),
    };
  } else if (tag === 1) {
    o.result = 'failed';
    o.failure = { kind: r.name(FAILURE_KINDS, 'failure kind') };
    const code = r.u16();
    o.failure.code = FAIL_CODES[code] || (code === 0 ? null : `code_${code}`);
    o.failure.message = r.string();
  } else if (tag === 2) {
    o.result = 'timed_out';
  } else if (tag === 3) {
    o.result = 'dropped';
    o.drop = { reason: r.name(DROP_KINDS, 'drop reason'), by: r.option(() => r.name(SEVERITIES, 'severity')) };
  } else {
    throw new HoundError('malformed_frame', `outcome result ${tag}`);
  }
  return o;
}

function decodeStats(r) {
  const s = { requestId: r.u64() };
  for (const [name, type] of STATS_FIELDS) s[name] = r[type]();
  return s;
}

// ---- the client -------------------------------------------------------------------------------

/**
 * A connection to houndd. Events: 'outcome' (every outcome, also those awaited through
 * `submit`), 'close'. Methods return promises; after the connection ends, pending ones reject
 * with the reason (a HoundError from the daemon's error frame, or 'closed').
 */
class HoundClient extends EventEmitter {
  constructor(socket, options = {}) {
    super();
    this.socket = socket;
    this.maxFrame = options.maxFrame || DEFAULT_MAX_FRAME;
    this.nextRequest = 1;
    this.buffer = Buffer.alloc(0);
    this.replies = new Map(); // requestId -> {resolve, reject}
    this.outcomes = new Map(); // jobId -> {resolve, reject}
    this.stats_ = new Map(); // requestId -> {resolve, reject}
    this.remoteError = null; // the daemon's error frame, if it sent one
    this.localError = null; // a socket or decoding error
    this.ended = false;
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        this.fail(this.failure());
        this.emit('close');
        resolve();
      });
    });
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (e) => { this.localError = this.localError || e; });
  }

  /** Why the connection ended: the daemon's error frame first (it explains a broken pipe). */
  failure() {
    return this.remoteError || this.localError || new HoundError('closed', 'connection closed by the daemon');
  }

  /** Connects to the daemon's Unix socket. */
  static connect(path, options = {}) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path });
      socket.once('connect', () => { socket.removeListener('error', reject); resolve(new HoundClient(socket, options)); });
      socket.once('error', reject);
    });
  }

  fail(err) {
    for (const map of [this.replies, this.outcomes, this.stats_]) {
      for (const p of map.values()) p.reject(err);
      map.clear();
    }
  }

  onData(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    try {
      while (this.buffer.length >= FRAME_HEADER_LEN) {
        const magic = this.buffer.readUInt32LE(0);
        const version = this.buffer.readUInt16LE(4);
        const kind = this.buffer.readUInt16LE(6);
        const len = this.buffer.readUInt32LE(8);
        const reserved = this.buffer.readUInt32LE(12);
        if (magic !== FRAME_MAGIC) throw new HoundError('malformed_frame', `bad magic 0x${magic.toString(16)}`);
        if (version !== PROTOCOL_VERSION) throw new HoundError('malformed_frame', `protocol version ${version}`);
        if (reserved !== 0) throw new HoundError('malformed_frame', 'reserved header field is not 0');
        if (len > this.maxFrame) throw new HoundError('malformed_frame', `frame of ${len} bytes exceeds ${this.maxFrame}`);
        if (this.buffer.length < FRAME_HEADER_LEN + len) return;
        const body = this.buffer.subarray(FRAME_HEADER_LEN, FRAME_HEADER_LEN + len);
        this.buffer = this.buffer.subarray(FRAME_HEADER_LEN + len);
        this.onFrame(kind, new Reader(body));
      }
    } catch (e) {
      this.localError = e;
      this.socket.destroy();
    }
  }

  onFrame(kind, r) {
    if (kind === KIND.SUBMIT_REPLY) {
      const reply = decodeReply(r);
      r.end();
      const p = this.replies.get(reply.requestId);
      if (!p) return;
      this.replies.delete(reply.requestId);
      if (reply.accepted) {
        // The reply always precedes the outcome on the stream: register the outcome here.
        reply.outcome = new Promise((resolve, reject) => this.outcomes.set(reply.jobId, { resolve, reject }));
        reply.outcome.catch(() => {}); // a caller that ignores the outcome must not crash the process
      }
      p.resolve(reply);
    } else if (kind === KIND.OUTCOME) {
      const o = decodeOutcome(r);
      r.end();
      const p = this.outcomes.get(o.jobId);
      if (p) { this.outcomes.delete(o.jobId); p.resolve(o); }
      this.emit('outcome', o);
    } else if (kind === KIND.STATS) {
      const s = decodeStats(r);
      r.end();
      const p = this.stats_.get(s.requestId);
      if (p) { this.stats_.delete(s.requestId); p.resolve(s); }
    } else if (kind === KIND.ERROR) {
      const code = r.name(ERROR_CODES, 'error code');
      const message = r.string();
      this.remoteError = new HoundError(code, message);
    } else {
      throw new HoundError('unexpected_message', `frame kind ${kind}`);
    }
  }

  /** Writes a frame. A failed write is not reported here: the socket then closes, and every
   *  pending promise is rejected with the reason (the daemon's error frame, if it sent one). */
  write(buf) {
    if (this.ended) return Promise.reject(this.failure());
    this.socket.write(buf, (err) => { if (err) this.localError = this.localError || err; });
    return Promise.resolve();
  }

  /**
   * Submits one job: { kind = 'evacuate', severity = 'medium', body (Buffer/Uint8Array/string),
   * evidenceId (UUID string or 16-byte Buffer; required for restore and erase), level (0-9) }.
   * Resolves to { accepted: true, jobId, evidenceId, outcome: Promise } or
   * { accepted: false, reason, message }.
   */
  submit(job) {
    const requestId = this.nextRequest++;
    let bytes;
    try { bytes = encodeSubmit(requestId, job); } catch (e) { return Promise.reject(e); }
    if (this.ended) return Promise.reject(this.failure());
    const reply = new Promise((resolve, reject) => this.replies.set(requestId, { resolve, reject }));
    this.write(bytes);
    return reply;
  }

  /** The daemon's counters (pool and daemon), see docs/PROTOCOL.md. */
  stats() {
    const requestId = this.nextRequest++;
    const w = new Writer();
    w.u64(requestId);
    if (this.ended) return Promise.reject(this.failure());
    const reply = new Promise((resolve, reject) => this.stats_.set(requestId, { resolve, reject }));
    this.write(frame(KIND.STATS_REQUEST, w.finish()));
    return reply;
  }

  /**
   * Stops submitting (half-close): the daemon writes the outcomes of the jobs it accepted, then
   * closes. Resolves when the connection is closed.
   */
  close() {
    this.socket.end();
    return this.closed;
  }

  /** Closes at once; outcomes not yet received are lost (the daemon counts them undelivered). */
  destroy() {
    this.socket.destroy();
    return this.closed;
  }
}

module.exports = {
  HoundClient,
  HoundError,
  JOB_KINDS,
  SEVERITIES,
  REFUSE_REASONS,
  // Exposed for tests and other clients' reference.
  _internal: { frame, encodeSubmit, decodeOutcome, decodeReply, Reader, KIND, FRAME_HEADER_LEN },
};
