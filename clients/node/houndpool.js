'use strict';
// Dependency-free Node.js client of houndd (the houndpool daemon). Types: houndpool.d.ts.
//
// The wire format is specified in docs/PROTOCOL.md (Part 1 for frames and the body encoding,
// Part 4 for the daemon): 16-byte frame headers (magic "HPFR", version, kind, body length,
// reserved), bodies in the protocol's bincode encoding (fixed-width little-endian integers;
// strings and byte strings as a u64 length then the bytes; Option as a u8 tag 0/1 then the
// value; enums as a u32 variant index then the fields). This file follows that document; it
// does not read Rust code.
//
// 64-bit ids (request ids, job ids) are always BigInt. Every other u64 (counters, sizes,
// microseconds) is a Number: exact up to 2^53 - 1, which no counter or size reaches.

const net = require('node:net');
const { EventEmitter } = require('node:events');

const FRAME_MAGIC = 0x52465048; // "HPFR" read as a little-endian u32
const PROTOCOL_VERSION = 1;
const FRAME_HEADER_LEN = 16;
// The largest body this client accepts: the largest a daemon can be configured to send.
const DEFAULT_MAX_FRAME = 256 * 1024 * 1024 + 1024 * 1024;

const KIND = {
  SUBMIT: 16,
  SUBMIT_REPLY: 17,
  OUTCOME: 18,
  STATS_REQUEST: 19,
  STATS: 20,
  ERROR: 21,
  CANCEL: 22,
  CANCEL_REPLY: 23,
};
const JOB_KINDS = ['noop', 'encode', 'evacuate', 'restore', 'erase', 'decode'];
const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const REFUSE_REASONS = [
  'pool_exhausted', 'defer_queue_full', 'evidence_too_large', 'empty_evidence',
  'invalid_job', 'shutting_down', 'connection_busy',
];
const FAILURE_KINDS = ['job', 'hound_killed', 'out_of_memory', 'protocol_violation', 'poison'];
const DROP_KINDS = ['evicted', 'shutdown', 'cancelled'];
const CANCEL_RESULTS = ['not_found', 'dequeued', 'killed'];
const ERROR_CODES = [
  'malformed_frame', 'unexpected_message', 'permission_denied', 'too_many_connections',
  'shutting_down',
];
const FAIL_CODES = [
  null, 'invalid_request', 'evidence_too_large', 'integrity_violation', 'decompression_limit',
  'cold_storage_unavailable', 'not_found', 'cold_storage_rejected', 'internal',
];
const STATS_FIELDS = [
  ['submitted', 'num'], ['accepted', 'num'], ['refused_exhausted', 'num'],
  ['refused_defer_full', 'num'], ['refused_too_large', 'num'], ['refused_invalid', 'num'],
  ['refused_shutdown', 'num'], ['completed', 'num'], ['failed', 'num'], ['timed_out', 'num'],
  ['dropped', 'num'], ['in_flight', 'num'], ['in_rings', 'num'], ['deferred', 'num'],
  ['retrying', 'num'], ['hounds_target', 'u32'], ['hounds_ready', 'u32'], ['draining', 'bool'],
  ['connections_open', 'num'], ['undelivered', 'num'], ['connection_in_flight', 'num'],
];
const U64_MAX = (1n << 64n) - 1n;

/**
 * Every error this package reports: the daemon's error frames (`code` from the protocol, or
 * `daemon_error` for a code this client does not know, with `wireCode` the number), and the
 * client's own (`connect_failed`, `connection_lost`, `closed`, `malformed_frame`, `aborted`,
 * `timeout`). `cause` holds the underlying error where there is one.
 */
class HoundError extends Error {
  constructor(code, message, options = {}) {
    super(`${code}: ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HoundError';
    this.code = code;
    if (options.wireCode !== undefined) this.wireCode = options.wireCode;
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
  /** The frame of kind `kind` with what was written as its body: one allocation, one copy. */
  frame(kind) {
    const out = Buffer.allocUnsafe(FRAME_HEADER_LEN + this.length);
    writeHeader(out, kind, this.length);
    let at = FRAME_HEADER_LEN;
    for (const p of this.parts) { p.copy(out, at); at += p.length; }
    return out;
  }
}

function writeHeader(out, kind, bodyLen) {
  out.writeUInt32LE(FRAME_MAGIC, 0);
  out.writeUInt16LE(PROTOCOL_VERSION, 4);
  out.writeUInt16LE(kind, 6);
  out.writeUInt32LE(bodyLen, 8);
  out.writeUInt32LE(0, 12);
}

/** One frame: the 16-byte header, then `body`, in one buffer. */
function frame(kind, body) {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN + body.length);
  writeHeader(out, kind, body.length);
  body.copy(out, FRAME_HEADER_LEN);
  return out;
}

function indexOf(list, name, what) {
  const i = list.indexOf(name);
  if (i < 0) throw new TypeError(`unknown ${what} ${JSON.stringify(name)}; one of ${list.join(', ')}`);
  return i;
}

/** A UUID string or 16 bytes → a 16-byte Buffer. */
function uuidBytes(id) {
  if (id instanceof Uint8Array && id.length === 16) return Buffer.from(id);
  if (typeof id === 'string' && /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(id)) {
    return Buffer.from(id.replace(/-/g, ''), 'hex');
  }
  throw new TypeError('evidenceId must be a UUID string or 16 bytes');
}

function uuidString(buf) {
  const h = buf.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Body bytes without copying: Buffer, any ArrayBufferView, ArrayBuffer or string. */
function bodyBytes(body) {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError('body must be a Buffer, a Uint8Array (any ArrayBufferView), an ArrayBuffer or a string');
}

/** A 64-bit id as BigInt: a bigint in 0..2^64-1 (or a non-negative safe integer Number). */
function u64Id(v, what) {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'bigint' && v >= 0n && v <= U64_MAX) return v;
  throw new TypeError(`${what} must be a bigint in 0..2^64-1`);
}

function encodeSubmit(requestId, job) {
  if (job === null || typeof job !== 'object') throw new TypeError('job must be an object');
  const w = new Writer();
  w.u64(requestId);
  w.u32(indexOf(JOB_KINDS, job.kind === undefined ? 'evacuate' : job.kind, 'job kind'));
  w.u32(indexOf(SEVERITIES, job.severity === undefined ? 'medium' : job.severity, 'severity'));
  w.option(job.evidenceId, (id) => w.push(uuidBytes(id)));
  w.option(job.level, (l) => {
    if (!Number.isInteger(l) || l < 0 || l > 255) throw new TypeError('level must be an integer (0-9)');
    w.u8(l);
  });
  w.bytes(bodyBytes(job.body));
  w.option(job.key, (k) => {
    if (typeof k !== 'string') throw new TypeError('key must be a string');
    w.bytes(Buffer.from(k, 'utf8'));
  });
  return w.frame(KIND.SUBMIT);
}

function encodeStatsRequest(requestId) {
  const w = new Writer();
  w.u64(requestId);
  return w.frame(KIND.STATS_REQUEST);
}

function encodeCancel(requestId, jobId) {
  const w = new Writer();
  w.u64(requestId);
  w.u64(jobId);
  return w.frame(KIND.CANCEL);
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
  /** A u64 id: always a BigInt. */
  id() { this.need(8); const v = this.buf.readBigUInt64LE(this.pos); this.pos += 8; return v; }
  /** A u64 count, size or duration: a Number (exact below 2^53). */
  num() { return Number(this.id()); }
  bool() {
    const b = this.u8();
    if (b > 1) throw new HoundError('malformed_frame', `bool byte ${b}`);
    return b === 1;
  }
  fixed(n) { this.need(n); const v = this.buf.subarray(this.pos, this.pos + n); this.pos += n; return v; }
  bytes() {
    const n = this.id();
    if (n > BigInt(this.buf.length - this.pos)) throw new HoundError('malformed_frame', `byte string of ${n} bytes at byte ${this.pos} runs past the body`);
    return this.fixed(Number(n));
  }
  string() { return this.bytes().toString('utf8'); }
  option(read) {
    const tag = this.u8();
    if (tag > 1) throw new HoundError('malformed_frame', `option tag ${tag}`);
    return tag === 1 ? read() : null;
  }
  /** A unit enum this client must know (it echoes the client's own values). */
  name(list, what) {
    const i = this.u32();
    if (i >= list.length) throw new HoundError('malformed_frame', `unknown ${what} ${i}`);
    return list[i];
  }
  /** A unit enum the daemon may extend: an unknown variant is named `unknown_<n>`. */
  open(list) {
    const i = this.u32();
    return i < list.length ? list[i] : `unknown_${i}`;
  }
  end() {
    if (this.pos !== this.buf.length) throw new HoundError('malformed_frame', `${this.buf.length - this.pos} trailing bytes`);
  }
}

function decodeReply(r) {
  const requestId = r.id();
  const tag = r.u32();
  if (tag === 0) {
    const jobId = r.id();
    return { requestId, accepted: true, jobId, evidenceId: uuidString(r.fixed(16)) };
  }
  if (tag === 1) {
    return { requestId, accepted: false, reason: r.open(REFUSE_REASONS), message: r.string() };
  }
  throw new HoundError('malformed_frame', `submit result ${tag}`);
}

function decodeOutcome(r) {
  const o = {
    requestId: r.id(),
    jobId: r.id(),
    evidenceId: uuidString(r.fixed(16)),
    kind: r.name(JOB_KINDS, 'job kind'),
    severity: r.name(SEVERITIES, 'severity'),
    attempts: r.u8(),
    latencyUs: r.num(),
  };
  const tag = r.u32();
  if (tag === 0) {
    o.result = 'completed';
    o.receipt = {
      hound: r.u32(),
      key: r.option(() => r.string()),
      originalSize: r.option(() => r.num()),
      compressedSize: r.option(() => r.num()),
      sha256: r.option(() => r.fixed(32).toString('hex')),
      encodeUs: r.option(() => r.num()),
      storeUs: r.option(() => r.num()),
      spooled: r.bool(),
      existed: r.option(() => r.bool()),
      payload: r.option(() => r.bytes()), // a view of the frame body: not copied again
    };
  } else if (tag === 1) {
    const kind = r.open(FAILURE_KINDS);
    const code = r.u16();
    const name = code < FAIL_CODES.length ? FAIL_CODES[code] : `unknown_${code}`;
    o.result = 'failed';
    o.failure = { kind, code: name, message: r.string() };
  } else if (tag === 2) {
    o.result = 'timed_out';
  } else if (tag === 3) {
    o.result = 'dropped';
    o.drop = { reason: r.open(DROP_KINDS), by: r.option(() => r.name(SEVERITIES, 'severity')) };
  } else {
    throw new HoundError('malformed_frame', `outcome result ${tag}`);
  }
  return o;
}

function decodeStats(r) {
  const s = { requestId: r.id() };
  for (const [name, type] of STATS_FIELDS) s[name] = r[type]();
  return s;
}

function decodeCancelReply(r) {
  return { requestId: r.id(), result: r.open(CANCEL_RESULTS) };
}

function decodeError(r) {
  const wireCode = r.u32();
  const message = r.string();
  if (wireCode < ERROR_CODES.length) return new HoundError(ERROR_CODES[wireCode], message, { wireCode });
  return new HoundError('daemon_error', `(code ${wireCode}) ${message}`, { wireCode });
}

/**
 * Stream frame reassembly in linear time: chunks are kept as they arrive and each body is
 * copied at most once (not at all when it lies within one chunk). The header is validated as
 * soon as its 16 bytes are there, before any body byte is buffered.
 */
class FrameDecoder {
  constructor(maxBody) {
    this.maxBody = maxBody;
    this.chunks = [];
    this.buffered = 0;
    this.header = null; // { kind, len } of the frame whose body is awaited
    this.copied = 0; // bytes copied while reassembling (each byte at most once: linear)
  }

  /** Adds bytes; returns the complete frames `{ kind, body }` now available. Throws HoundError. */
  push(chunk) {
    if (chunk.length) { this.chunks.push(chunk); this.buffered += chunk.length; }
    const frames = [];
    for (;;) {
      if (this.header === null) {
        if (this.buffered < FRAME_HEADER_LEN) return frames;
        const h = this.take(FRAME_HEADER_LEN);
        const magic = h.readUInt32LE(0);
        const version = h.readUInt16LE(4);
        const kind = h.readUInt16LE(6);
        const len = h.readUInt32LE(8);
        const reserved = h.readUInt32LE(12);
        if (magic !== FRAME_MAGIC) throw new HoundError('malformed_frame', `bad magic 0x${magic.toString(16)}`);
        if (version !== PROTOCOL_VERSION) throw new HoundError('malformed_frame', `protocol version ${version}`);
        if (reserved !== 0) throw new HoundError('malformed_frame', 'reserved header field is not 0');
        if (len > this.maxBody) throw new HoundError('malformed_frame', `frame of ${len} bytes exceeds ${this.maxBody}`);
        this.header = { kind, len };
      }
      if (this.buffered < this.header.len) return frames;
      frames.push({ kind: this.header.kind, body: this.take(this.header.len) });
      this.header = null;
    }
  }

  /** Removes and returns the first `n` buffered bytes (n <= buffered). */
  take(n) {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    this.copied += n;
    let filled = 0;
    let used = 0;
    while (filled < n) {
      const c = this.chunks[used];
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) used++;
      else this.chunks[used] = c.subarray(k);
    }
    this.chunks.splice(0, used);
    return out;
  }
}

// ---- the client -------------------------------------------------------------------------------

function abortError(signal) {
  const reason = signal.reason;
  if (reason instanceof HoundError) return reason;
  return new HoundError('aborted', 'the operation was aborted', { cause: reason });
}

/**
 * A connection to houndd. Events: 'outcome' (every outcome, also those awaited through
 * `submit`), 'close' (with the HoundError that ended the connection). Methods return promises;
 * after the connection ends, pending ones reject with a HoundError saying why.
 */
class HoundClient extends EventEmitter {
  /**
   * Wraps a stream socket to houndd. It may still be connecting: frames written meanwhile wait
   * in the socket, and a failed connect rejects everything pending with `connect_failed`.
   */
  constructor(socket, options = {}) {
    super();
    this.socket = socket;
    this.maxFrame = options.maxFrame || DEFAULT_MAX_FRAME;
    this.nextRequest = 1n;
    this.decoder = new FrameDecoder(this.maxFrame);
    this.replies = new Map(); // requestId -> request record (submit)
    this.outcomes = new Map(); // jobId -> { resolve, reject, done }
    this.small = new Map(); // requestId -> { resolve, reject } (stats, cancel)
    this.outq = []; // frames waiting for 'drain' (write backpressure)
    this.queuedBytes = 0;
    this.blocked = false;
    this.remoteError = null; // the daemon's error frame, if it sent one
    this.localError = null; // a socket or decoding error
    this.connected = !socket.connecting && !socket.destroyed;
    this.closing = false; // close() called: no new requests
    this.ended = false; // the socket closed
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        const why = this.failure();
        this.outq = [];
        this.queuedBytes = 0;
        this.fail(why);
        this.emit('close', why);
        resolve();
      });
    });
    socket.on('connect', () => { this.connected = true; });
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('drain', () => this.flush());
    socket.on('error', (e) => { this.localError = this.localError || e; });
  }

  /** Connects to the daemon's Unix socket; rejects with HoundError `connect_failed`. */
  static connect(path, options = {}) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path });
      const onError = (e) => reject(new HoundError('connect_failed', `cannot connect to ${path}: ${e.message}`, { cause: e }));
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.removeListener('error', onError);
        resolve(new HoundClient(socket, options));
      });
    });
  }

  /** Why the connection ended: the daemon's error frame first (it explains a broken pipe). */
  failure() {
    if (this.remoteError) return this.remoteError;
    const e = this.localError;
    if (e instanceof HoundError) return e;
    if (e && !this.connected) return new HoundError('connect_failed', `cannot connect: ${e.message}`, { cause: e });
    if (e) return new HoundError('connection_lost', e.message, { cause: e });
    return new HoundError('closed', 'connection closed');
  }

  /** Bytes accepted by `submit` and not yet handed to the kernel (queued here or in the socket). */
  get pendingWriteBytes() {
    return this.queuedBytes + this.socket.writableLength;
  }

  /** Jobs accepted by the daemon on this connection whose outcome has not arrived. */
  get inFlight() {
    return this.outcomes.size;
  }

  fail(err) {
    for (const rec of this.replies.values()) rec.reject(err);
    this.replies.clear();
    for (const p of this.outcomes.values()) p.reject(err);
    this.outcomes.clear();
    for (const p of this.small.values()) p.reject(err);
    this.small.clear();
  }

  onData(chunk) {
    try {
      for (const f of this.decoder.push(chunk)) this.onFrame(f.kind, new Reader(f.body));
    } catch (e) {
      this.localError = e instanceof HoundError ? e : new HoundError('malformed_frame', String(e && e.message), { cause: e });
      this.socket.destroy();
    }
  }

  onFrame(kind, r) {
    if (kind === KIND.SUBMIT_REPLY) {
      const reply = decodeReply(r);
      r.end();
      const rec = this.replies.get(reply.requestId);
      if (!rec) return;
      this.replies.delete(reply.requestId);
      rec.onReply(reply);
    } else if (kind === KIND.OUTCOME) {
      const o = decodeOutcome(r);
      r.end();
      const p = this.outcomes.get(o.jobId);
      if (p) { this.outcomes.delete(o.jobId); p.resolve(o); }
      this.emit('outcome', o);
    } else if (kind === KIND.STATS) {
      const s = decodeStats(r);
      r.end();
      this.settleSmall(s.requestId, s);
    } else if (kind === KIND.CANCEL_REPLY) {
      const c = decodeCancelReply(r);
      r.end();
      this.settleSmall(c.requestId, c.result);
    } else if (kind === KIND.ERROR) {
      this.remoteError = decodeError(r);
    } else {
      throw new HoundError('unexpected_message', `frame kind ${kind}`);
    }
  }

  settleSmall(requestId, value) {
    const p = this.small.get(requestId);
    if (p) { this.small.delete(requestId); p.resolve(value); }
  }

  /** Writes a frame, honouring backpressure: once the socket asks to wait, frames queue here
   *  until 'drain'. Returns the queue entry (so a not-yet-written frame can be withdrawn). */
  write(buf) {
    const entry = { buf, written: false };
    if (this.blocked) {
      this.outq.push(entry);
      this.queuedBytes += buf.length;
    } else {
      entry.written = true;
      if (!this.socket.write(buf)) this.blocked = true;
    }
    return entry;
  }

  /** Withdraws a frame still waiting for 'drain'; false if it was already written. */
  withdraw(entry) {
    if (entry.written) return false;
    const i = this.outq.indexOf(entry);
    if (i >= 0) { this.outq.splice(i, 1); this.queuedBytes -= entry.buf.length; }
    entry.written = true; // never write it later
    return true;
  }

  flush() {
    this.blocked = false;
    while (this.outq.length && !this.blocked) {
      const entry = this.outq.shift();
      this.queuedBytes -= entry.buf.length;
      entry.written = true;
      if (!this.socket.write(entry.buf)) this.blocked = true;
    }
    if (!this.outq.length && this.closing && !this.socket.writableEnded) this.socket.end();
  }

  /** The error a new request gets, or null if requests are possible. */
  refusal() {
    if (this.ended) return this.failure();
    if (this.closing) return new HoundError('closed', 'the client is closing');
    return null;
  }

  /**
   * Submits one job. `job`: { kind = 'evacuate', severity = 'medium', body, evidenceId, level,
   * key }. `options`: { signal, timeoutMs }, which cover the whole job: aborting before the
   * reply rejects this promise; aborting after acceptance rejects `outcome`; either way an
   * accepted job is then cancelled (Cancel to the daemon). Resolves to
   * { accepted: true, requestId, jobId, evidenceId, outcome } or
   * { accepted: false, requestId, reason, message }.
   */
  submit(job, options = {}) {
    let bytes;
    const requestId = this.nextRequest++;
    try { bytes = encodeSubmit(requestId, job); } catch (e) { return Promise.reject(e); }
    const no = this.refusal();
    if (no) return Promise.reject(no);
    const { signal, timeoutMs } = options;
    if (signal && signal.aborted) return Promise.reject(abortError(signal));

    return new Promise((resolve, reject) => {
      let timer = null;
      let abandoned = null; // the HoundError of an abort/timeout
      let outcomeRec = null;
      let jobId = null;
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        if (signal) signal.removeEventListener('abort', onAbort);
      };
      const giveUp = (err) => {
        if (abandoned) return;
        abandoned = err;
        if (this.replies.get(requestId) === rec) {
          // No reply yet: take the frame back if it is still ours, else cancel on acceptance.
          if (this.withdraw(entry)) this.replies.delete(requestId);
          cleanup();
          reject(err);
        } else if (outcomeRec && !outcomeRec.done) {
          this.outcomes.delete(jobId);
          cleanup();
          this.cancel(jobId).catch(() => {});
          outcomeRec.reject(err);
        }
      };
      const onAbort = () => giveUp(abortError(signal));
      const rec = {
        reject: (e) => { cleanup(); reject(e); },
        onReply: (reply) => {
          reply.requestId = requestId;
          if (!reply.accepted) { cleanup(); resolve(reply); return; }
          jobId = reply.jobId;
          if (abandoned) { cleanup(); this.cancel(jobId).catch(() => {}); return; }
          // The reply always precedes the outcome on the stream: register the outcome here.
          reply.outcome = new Promise((res, rej) => {
            outcomeRec = {
              done: false,
              resolve: (o) => { outcomeRec.done = true; cleanup(); res(o); },
              reject: (e) => { outcomeRec.done = true; cleanup(); rej(e); },
            };
            this.outcomes.set(jobId, outcomeRec);
          });
          reply.outcome.catch(() => {}); // a caller that ignores the outcome must not crash the process
          resolve(reply);
        },
      };
      this.replies.set(requestId, rec);
      const entry = this.write(bytes);
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined && timeoutMs !== null) {
        timer = setTimeout(() => giveUp(new HoundError('timeout', `no outcome within ${timeoutMs} ms`)), timeoutMs);
      }
    });
  }

  request(requestId, bytes) {
    const no = this.refusal();
    if (no) return Promise.reject(no);
    const p = new Promise((resolve, reject) => this.small.set(requestId, { resolve, reject }));
    this.write(bytes);
    return p;
  }

  /** The daemon's counters (pool and daemon), see docs/PROTOCOL.md. */
  stats() {
    const requestId = this.nextRequest++;
    return this.request(requestId, encodeStatsRequest(requestId));
  }

  /**
   * Cancels a job accepted on this connection (`jobId`: BigInt). Resolves to 'dequeued' or
   * 'killed' (its outcome `dropped` / `cancelled` follows), or 'not_found' (unknown id, or its
   * outcome was already produced).
   */
  cancel(jobId) {
    let id;
    try { id = u64Id(jobId, 'jobId'); } catch (e) { return Promise.reject(e); }
    const requestId = this.nextRequest++;
    return this.request(requestId, encodeCancel(requestId, id));
  }

  /**
   * Stops submitting (half-close, after frames still waiting for 'drain' are written): the
   * daemon writes the outcomes of the jobs it accepted, then closes. Resolves when the
   * connection is closed.
   */
  close() {
    this.closing = true;
    if (!this.outq.length && !this.socket.writableEnded) this.socket.end();
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
  DROP_KINDS,
  CANCEL_RESULTS,
  ERROR_CODES,
  // Exposed for tests and other clients' reference; not part of the supported API.
  _internal: {
    frame, encodeSubmit, encodeCancel, encodeStatsRequest, decodeOutcome, decodeReply,
    decodeCancelReply, decodeError, Reader, FrameDecoder, KIND, FRAME_HEADER_LEN,
  },
};
