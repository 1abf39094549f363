'use strict';
// houndpool/tracehound: the origin's (Tracehound's) IHoundPool contract over houndd.
// Types: tracehound.d.ts. Behaviour: README.md, "Tracehound drop-in".

const net = require('node:net');
const { HoundClient, HoundError, SEVERITIES } = require('./houndpool.js');

/** The origin's error names for capacity pressure. */
const HOUND_PRESSURE_ERRORS = Object.freeze({
  POOL_EXHAUSTED: 'pool_exhausted',
  POOL_EXHAUSTED_ESCALATED: 'pool_exhausted_escalated',
  DEFER_QUEUE_FULL: 'defer_queue_full',
});
const PRESSURE = new Set(Object.values(HOUND_PRESSURE_ERRORS));

/** True for the error names that mean "no capacity" rather than "this job went wrong". */
function isHoundPressureError(error) {
  return PRESSURE.has(error);
}

const ACTIONS = ['drop', 'escalate', 'defer'];
const KEEP_DURATIONS = 100; // avgProcessingMs covers the last 100 processed activations
const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;
const RETRY_DEFERRED_MS = 20;

function positiveNumber(v, name, optional) {
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`createHoundPool: ${name} must be a non-negative number, got ${String(v)}`);
  }
  return v;
}

/** Copies an origin Evidence's bytes getter value (ArrayBuffer, or any ArrayBufferView). */
function evidenceBytes(b) {
  if (b instanceof ArrayBuffer) return Buffer.from(new Uint8Array(b));
  if (ArrayBuffer.isView(b)) return Buffer.from(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  return null;
}

/**
 * A pool of hounds as the origin sees it, served by houndd over one connection (opened lazily,
 * reopened after a loss). See tracehound.d.ts for the contract of each member.
 */
class HoundPool {
  constructor(config) {
    if (config === null || typeof config !== 'object') throw new TypeError('createHoundPool: config must be an object');
    if (typeof config.socket !== 'string' || config.socket === '') {
      throw new TypeError('createHoundPool: socket must be the path of houndd\'s Unix socket');
    }
    this.socketPath = config.socket;
    this.poolSize = positiveNumber(config.poolSize, 'poolSize');
    this.timeoutMs = positiveNumber(config.timeout, 'timeout');
    this.rotationJitterMs = positiveNumber(config.rotationJitterMs, 'rotationJitterMs');
    this.action = config.onPoolExhausted === undefined ? 'drop' : config.onPoolExhausted;
    if (!ACTIONS.includes(this.action)) {
      throw new TypeError(`createHoundPool: onPoolExhausted must be one of ${ACTIONS.join(', ')}, got ${String(config.onPoolExhausted)}`);
    }
    this.deferQueueLimit = config.deferQueueLimit === undefined ? 100 : positiveNumber(config.deferQueueLimit, 'deferQueueLimit');
    this.level = config.level;
    if (this.level !== undefined && !(Number.isInteger(this.level) && this.level >= 0 && this.level <= 9)) {
      throw new TypeError(`createHoundPool: level must be an integer 0-9, got ${String(config.level)}`);
    }
    this.maxQueuedBytes = config.maxQueuedBytes === undefined ? DEFAULT_MAX_QUEUED_BYTES : positiveNumber(config.maxQueuedBytes, 'maxQueuedBytes');
    this.statsIntervalMs = config.statsIntervalMs === undefined ? 1000 : positiveNumber(config.statsIntervalMs, 'statsIntervalMs');

    this.client = null;
    this.handlers = [];
    this.deferred = []; // activations waiting for capacity (onPoolExhausted 'defer')
    this.live = new Set(); // every activation without a result yet
    this.retryTimer = null;
    this.shut = false;
    this.houndsReady = null; // from the daemon's stats
    this.durations = [];
    this.totals = { activations: 0, timeouts: 0, errors: 0 };
    this.statsTimer = null;
    if (this.statsIntervalMs > 0) {
      this.statsTimer = setInterval(() => this.pollStats(), this.statsIntervalMs);
      this.statsTimer.unref();
    }
    let resolveClosed;
    this.closed = new Promise((r) => { resolveClosed = r; });
    this.resolveClosed = resolveClosed;
  }

  // ---- the origin's contract ---------------------------------------------------------------

  activate(evidence) {
    let act = null;
    const started = Date.now();
    try {
      this.totals.activations++;
      let signature;
      let severity;
      let bytes;
      try {
        signature = evidence.signature;
        severity = evidence.severity;
        bytes = evidenceBytes(evidence.bytes);
      } catch (e) {
        this.refuse({ signature: safeSignature(evidence), started }, 'invalid_evidence', true);
        return;
      }
      act = { signature, severity, bytes, started, timer: null, done: false, jobId: null, client: null, terminate: false };
      if (typeof signature !== 'string' || !SEVERITIES.includes(severity) || bytes === null) {
        act.signature = typeof signature === 'string' ? signature : '';
        this.refuse(act, 'invalid_evidence', true);
        return;
      }
      if (this.shut) {
        this.refuse(act, 'shutting_down', true);
        return;
      }
      this.live.add(act);
      if (this.timeoutMs > 0) {
        act.timer = setTimeout(() => this.onTimeout(act), this.timeoutMs);
        act.timer.unref();
      }
      const client = this.connection();
      if (client.pendingWriteBytes > this.maxQueuedBytes) {
        this.exhausted(act, 'pool_exhausted');
        return;
      }
      this.send(act);
    } catch (e) {
      // Not reached by design; the hot path must never throw, and the result must still come.
      try {
        if (act === null) this.refuse({ signature: safeSignature(evidence), started }, 'internal', true);
        else if (!act.done) this.finish(act, { status: 'error', processId: 'pool', error: 'internal' }, true);
      } catch (e2) {
        this.totals.errors++;
      }
    }
  }

  terminate(signature) {
    try {
      for (const act of this.live) {
        if (act.signature !== signature || act.done) continue;
        act.terminate = true;
        const i = this.deferred.indexOf(act);
        if (i >= 0) {
          this.deferred.splice(i, 1);
          this.finish(act, { status: 'error', processId: 'pool', error: 'forced_terminate' }, false);
        } else if (act.jobId !== null && act.client) {
          act.client.cancel(act.jobId).catch(() => {});
        }
        // Otherwise the reply has not arrived: onReply cancels once the job id is known.
      }
    } catch (e) {
      this.totals.errors++;
    }
  }

  get stats() {
    const total = this.houndsReady === null ? this.poolSize : this.houndsReady;
    let running = 0;
    for (const act of this.live) if (act.jobId !== null) running++;
    const n = this.durations.length;
    return Object.freeze({
      activeProcesses: Math.min(running, total),
      totalProcesses: total,
      totalActivations: this.totals.activations,
      totalTimeouts: this.totals.timeouts,
      totalErrors: this.totals.errors,
      avgProcessingMs: n ? this.durations.reduce((a, b) => a + b, 0) / n : 0,
    });
  }

  onResult(handler) {
    if (typeof handler === 'function') this.handlers.push(handler);
  }

  shutdown() {
    if (this.shut) return;
    this.shut = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
    for (const act of this.deferred.splice(0)) this.finish(act, { status: 'error', processId: 'pool', error: 'shutting_down' }, true);
    if (this.client) {
      this.client.socket.ref();
      // Half-close: the daemon writes the outcomes of what it accepted, then closes.
      this.client.close().then(() => this.maybeClosed());
    } else {
      this.maybeClosed();
    }
  }

  // ---- internals --------------------------------------------------------------------------

  connection() {
    if (this.client && !this.client.ended && !this.client.closing) return this.client;
    const socket = net.createConnection({ path: this.socketPath });
    const client = new HoundClient(socket);
    client.on('close', (why) => this.onClose(client, why));
    this.client = client;
    this.pollStats();
    return client;
  }

  send(act) {
    const client = this.connection();
    act.client = client;
    let submitted;
    try {
      submitted = client.submit({ kind: 'evacuate', severity: act.severity, body: act.bytes, key: act.signature, level: this.level });
    } catch (e) {
      submitted = Promise.reject(e);
    }
    this.updateRef();
    submitted.then((reply) => this.onReply(act, reply), (err) => this.onLost(act, err));
  }

  onReply(act, reply) {
    if (!reply.accepted) {
      if (act.done) return;
      const r = reply.reason;
      if (r === 'pool_exhausted' || r === 'connection_busy') this.exhausted(act, 'pool_exhausted');
      else if (r === 'defer_queue_full') this.exhausted(act, 'defer_queue_full');
      else this.finish(act, { status: 'error', processId: 'pool', error: r }, true);
      return;
    }
    act.jobId = reply.jobId;
    if (this.deferred.length) this.drainDeferred();
    if (act.done || act.terminate) {
      // Timed out or terminated before the job id was known: free the hound.
      act.client.cancel(reply.jobId).catch(() => {});
    }
    reply.outcome.then((o) => this.onOutcome(act, o), (err) => this.onLost(act, err));
  }

  onOutcome(act, o) {
    if (!act.done) {
      if (o.result === 'completed') {
        this.finish(act, { status: 'processed', processId: `hound-${o.receipt.hound}` }, false);
      } else if (o.result === 'timed_out') {
        this.totals.timeouts++;
        this.finish(act, { status: 'timeout', processId: 'houndd', error: 'timeout' }, false);
      } else if (o.result === 'failed') {
        const error = o.failure.kind === 'job' && o.failure.code ? o.failure.code : o.failure.kind;
        this.finish(act, { status: 'error', processId: 'houndd', error }, true);
      } else {
        const reason = o.drop.reason;
        const error = reason === 'cancelled' && act.terminate ? 'forced_terminate' : reason;
        this.finish(act, { status: 'error', processId: 'houndd', error }, reason !== 'evicted' && error !== 'forced_terminate');
      }
    }
    this.drainDeferred();
  }

  /** The submit or its outcome failed with the connection (or before it was sent). */
  onLost(act, err) {
    if (act.done) return;
    const code = err instanceof HoundError ? err.code : (err instanceof TypeError ? 'invalid_evidence' : 'internal');
    this.finish(act, { status: 'error', processId: 'pool', error: code }, true);
  }

  onClose(client, why) {
    if (this.client === client) this.client = null;
    void why; // each pending activation gets it through its rejected promise (onLost)
    if (this.deferred.length && !this.shut) this.scheduleRetry();
    this.maybeClosed();
  }

  onTimeout(act) {
    if (act.done) return;
    const i = this.deferred.indexOf(act);
    if (i >= 0) this.deferred.splice(i, 1);
    else if (act.jobId !== null && act.client) act.client.cancel(act.jobId).catch(() => {});
    this.totals.timeouts++;
    this.finish(act, { status: 'timeout', processId: 'pool', error: 'timeout' }, false);
  }

  /** No capacity for `act`: the configured onPoolExhausted action, with the origin's names. */
  exhausted(act, why) {
    if (why === 'pool_exhausted' && this.action === 'escalate') {
      this.finish(act, { status: 'error', processId: 'pool', error: 'pool_exhausted_escalated' }, true);
    } else if (this.action === 'defer' && !this.shut && this.deferred.length < this.deferQueueLimit) {
      this.deferred.push(act);
      act.jobId = null;
      this.scheduleRetry();
    } else {
      const error = this.action === 'defer' ? 'defer_queue_full' : why;
      this.finish(act, { status: 'error', processId: 'pool', error }, false);
    }
  }

  /**
   * Resubmits the oldest deferred activation. Called when capacity shows: an outcome arrived,
   * or a resubmitted one was accepted (which then pulls the next); with nothing in flight, a
   * timer probes every few milliseconds instead.
   */
  drainDeferred() {
    if (this.shut || !this.deferred.length) return;
    const client = this.connection();
    if (client.pendingWriteBytes <= this.maxQueuedBytes) this.send(this.deferred.shift());
    if (this.deferred.length) this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.retryTimer || this.shut) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.client || this.client.inFlight === 0) this.drainDeferred();
      else if (this.deferred.length) this.scheduleRetry();
    }, RETRY_DEFERRED_MS);
  }

  /** A result for an activation that never became a job (origin: processId 'pool'). */
  refuse(act, error, countError) {
    act.done = true;
    if (countError) this.totals.errors++;
    this.emit({ signature: act.signature, status: 'error', durationMs: Date.now() - act.started, processId: 'pool', error });
  }

  finish(act, r, countError) {
    if (act.done) return;
    act.done = true;
    if (act.timer) clearTimeout(act.timer);
    this.live.delete(act);
    act.bytes = null;
    const durationMs = Date.now() - act.started;
    if (countError) this.totals.errors++;
    if (r.status === 'processed') {
      this.durations.push(durationMs);
      if (this.durations.length > KEEP_DURATIONS) this.durations.shift();
    }
    const result = { signature: act.signature, status: r.status, durationMs, processId: r.processId };
    if (r.error !== undefined) result.error = r.error;
    this.emit(result);
    this.updateRef();
    this.maybeClosed();
  }

  emit(result) {
    for (const h of this.handlers) {
      try { h(result); } catch (e) { this.totals.errors++; }
    }
  }

  /** The idle connection must not keep the process alive; a busy one does. */
  updateRef() {
    const c = this.client;
    if (!c || this.shut) return;
    if (this.live.size) c.socket.ref();
    else c.socket.unref();
  }

  pollStats() {
    const c = this.client;
    if (!c || c.ended || c.closing) return;
    c.stats().then((s) => { this.houndsReady = s.hounds_ready; }, () => {});
    this.updateRef();
  }

  maybeClosed() {
    if (this.shut && this.live.size === 0 && (!this.client || this.client.ended)) this.resolveClosed();
  }
}

function safeSignature(evidence) {
  try {
    const s = evidence.signature;
    return typeof s === 'string' ? s : '';
  } catch (e) {
    return '';
  }
}

/** Creates a pool over houndd implementing the origin's IHoundPool (see tracehound.d.ts). */
function createHoundPool(config) {
  return new HoundPool(config);
}

module.exports = { createHoundPool, HOUND_PRESSURE_ERRORS, isHoundPressureError };
