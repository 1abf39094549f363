/// <reference types="node" />
// Types of houndpool.js, the Node.js client of houndd (docs/PROTOCOL.md, Part 4).
//
// 64-bit ids (request ids, job ids) are always `bigint`. Every other u64 on the wire (counters,
// sizes, microseconds) is a `number`: exact up to 2^53 - 1, which none of them reaches.

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';

/** What a job does (docs/PROTOCOL.md Part 1 §4). */
export type JobKind = 'noop' | 'encode' | 'evacuate' | 'restore' | 'erase' | 'decode';
/** Defer-queue lane of a job. */
export type Severity = 'low' | 'medium' | 'high' | 'critical';
/**
 * Why the daemon refused a submit. A reason this client does not know yet arrives as
 * `unknown_<n>`.
 */
export type RefuseReason =
  | 'pool_exhausted'
  | 'defer_queue_full'
  | 'evidence_too_large'
  | 'empty_evidence'
  | 'invalid_job'
  | 'shutting_down'
  | 'connection_busy'
  | `unknown_${number}`;
/** Who killed a failed job (`job`: the hound's own verdict, see `Failure.code`). */
export type FailureKind = 'job' | 'hound_killed' | 'out_of_memory' | 'protocol_violation' | 'poison' | `unknown_${number}`;
/** The hound's fail code for `FailureKind` `job`; null otherwise. */
export type FailCode =
  | 'invalid_request'
  | 'evidence_too_large'
  | 'integrity_violation'
  | 'decompression_limit'
  | 'cold_storage_unavailable'
  | 'not_found'
  | 'cold_storage_rejected'
  | 'internal'
  | `unknown_${number}`;
/** Why an accepted job was dropped. */
export type DropReason = 'evicted' | 'shutdown' | 'cancelled' | `unknown_${number}`;
/**
 * The daemon's answer to `cancel`: `dequeued` (removed before a hound started it) or `killed`
 * (its hound was killed), and then its outcome is `dropped` / `cancelled`; `not_found` (unknown
 * id, or its outcome was already produced).
 */
export type CancelResult = 'not_found' | 'dequeued' | 'killed' | `unknown_${number}`;
/** The codes of the daemon's error frames this client knows. */
export type DaemonErrorCode =
  | 'malformed_frame'
  | 'unexpected_message'
  | 'permission_denied'
  | 'too_many_connections'
  | 'shutting_down';
/**
 * Every `HoundError.code`: the daemon's (`daemon_error` for a code this client does not know),
 * and the client's own: `connect_failed` (the socket could not be reached), `connection_lost`
 * (a socket error after connecting), `closed` (the connection ended, or `close()` was called),
 * `malformed_frame` (the daemon sent bytes this client cannot decode), `unexpected_message`,
 * `aborted` (the caller's AbortSignal), `timeout` (`timeoutMs` ran out).
 */
export type HoundErrorCode =
  | DaemonErrorCode
  | 'daemon_error'
  | 'connect_failed'
  | 'connection_lost'
  | 'closed'
  | 'aborted'
  | 'timeout';

/** Every error this package reports (wrong argument types are `TypeError`s instead). */
export class HoundError extends Error {
  constructor(code: HoundErrorCode, message: string, options?: { cause?: unknown; wireCode?: number });
  readonly name: 'HoundError';
  /** What went wrong; see `HoundErrorCode`. */
  readonly code: HoundErrorCode;
  /** For the daemon's error frames: the code number on the wire. */
  readonly wireCode?: number;
  /** The underlying error (a socket error, the AbortSignal's reason), where there is one. */
  readonly cause?: unknown;
}

/** One job for `HoundClient.submit`. */
export interface Job {
  /** Default `evacuate`. */
  kind?: JobKind;
  /** Default `medium`. */
  severity?: Severity;
  /** Evidence (noop, encode, evacuate), an envelope (decode), nothing (restore, erase). Not copied until sent. */
  body?: Uint8Array | ArrayBufferView | ArrayBuffer | string;
  /** UUID string or 16 bytes: required for restore and erase; assigned (UUIDv7) otherwise. */
  evidenceId?: string | Uint8Array;
  /** gzip level 0-9 for encode / evacuate; the daemon's default when absent. */
  level?: number;
  /**
   * A caller-chosen object key (evacuate, restore, erase only; then without `evidenceId`): the
   * object is `<prefix><key>.thcs`. 1-200 ASCII bytes of `A-Z a-z 0-9 - _ . :`, first
   * alphanumeric, no `..`; the daemon refuses anything else as `invalid_job`, naming why.
   */
  key?: string;
}

/** Options of `HoundClient.submit`; both cover the whole job (reply and outcome). */
export interface SubmitOptions {
  /**
   * Aborting before the reply rejects `submit` (a frame not yet written is withdrawn);
   * aborting after acceptance rejects `outcome`. An accepted job is then cancelled.
   * Rejects with `HoundError` `aborted`, the signal's reason as `cause`.
   */
  signal?: AbortSignal;
  /** Like `signal`, after this many milliseconds, with `HoundError` `timeout`. */
  timeoutMs?: number;
}

/** The daemon accepted the job: exactly one outcome follows on this connection. */
export interface Accepted {
  accepted: true;
  requestId: bigint;
  jobId: bigint;
  /** UUID, lowercase and hyphenated: the daemon's id of the job. */
  evidenceId: string;
  /** Resolves with the job's outcome; rejects with a HoundError if the connection ends first. */
  outcome: Promise<Outcome>;
}

/** The daemon refused the job; nothing more comes about it. */
export interface Refused {
  accepted: false;
  requestId: bigint;
  reason: RefuseReason;
  /** The daemon's explanation, naming what was wrong. */
  message: string;
}

/** The daemon's answer to a submit. */
export type SubmitReply = Accepted | Refused;

/** What a completed job produced (fields by job kind: docs/PROTOCOL.md Part 4 §2). */
export interface Receipt {
  /** Index of the hound that ran it. */
  hound: number;
  /** Object key (evacuate, restore, erase). */
  key: string | null;
  originalSize: number | null;
  compressedSize: number | null;
  /** SHA-256 of the compressed bytes, lowercase hex. */
  sha256: string | null;
  encodeUs: number | null;
  storeUs: number | null;
  /** Stored in the local spool, to be uploaded later. */
  spooled: boolean;
  /** Erase: whether the object existed. */
  existed: boolean | null;
  /** Encode: the envelope; restore / decode: the evidence; noop: the echo. */
  payload: Buffer | null;
}

/** Why a job failed. */
export interface Failure {
  kind: FailureKind;
  code: FailCode | null;
  message: string;
}

/** What every outcome carries. */
export interface OutcomeBase {
  requestId: bigint;
  jobId: bigint;
  evidenceId: string;
  kind: JobKind;
  severity: Severity;
  /** Hounds that started the job (2 after a retry, 0 if never run). */
  attempts: number;
  /** Acceptance to outcome, microseconds. */
  latencyUs: number;
}

/** The one outcome of an accepted job; `result` says which fields it has. */
export type Outcome = OutcomeBase &
  (
    | { result: 'completed'; receipt: Receipt }
    | { result: 'failed'; failure: Failure }
    | { result: 'timed_out' }
    /** `by` is the evicting job's severity (evicted). */
    | { result: 'dropped'; drop: { reason: DropReason; by: Severity | null } }
  );

/** The daemon's counters (docs/PROTOCOL.md Part 4 §2, StatsReply). */
export interface Stats {
  requestId: bigint;
  submitted: number;
  accepted: number;
  refused_exhausted: number;
  refused_defer_full: number;
  refused_too_large: number;
  refused_invalid: number;
  refused_shutdown: number;
  completed: number;
  failed: number;
  timed_out: number;
  dropped: number;
  in_flight: number;
  in_rings: number;
  deferred: number;
  retrying: number;
  hounds_target: number;
  hounds_ready: number;
  draining: boolean;
  connections_open: number;
  undelivered: number;
  connection_in_flight: number;
}

/** Options of a connection. */
export interface ClientOptions {
  /** Largest frame body accepted from the daemon, bytes (default 257 MiB). */
  maxFrame?: number;
}

/**
 * A connection to houndd. Requests may be pipelined; replies are matched by request id.
 * Writes honour backpressure: once the socket asks to wait, frames queue in the client until
 * 'drain' (see `pendingWriteBytes`). Events: `outcome` (every outcome, also those awaited
 * through `submit`), `close` (with the HoundError that ended the connection).
 */
export class HoundClient extends EventEmitter {
  /** Wraps a stream socket to houndd; it may still be connecting (writes wait for it). */
  constructor(socket: Socket, options?: ClientOptions);
  /** Connects to houndd's Unix socket; rejects with HoundError `connect_failed`. */
  static connect(path: string, options?: ClientOptions): Promise<HoundClient>;
  /** The underlying socket. */
  readonly socket: Socket;
  /** Resolves when the connection has closed (every pending promise settled by then). */
  readonly closed: Promise<void>;
  /** Bytes submitted and not yet handed to the kernel (queued here or in the socket). */
  readonly pendingWriteBytes: number;
  /** Jobs accepted on this connection whose outcome has not arrived. */
  readonly inFlight: number;
  /** Submits one job; resolves with the daemon's reply (rejects with HoundError or TypeError). */
  submit(job: Job, options?: SubmitOptions): Promise<SubmitReply>;
  /** The daemon's counters. */
  stats(): Promise<Stats>;
  /** Cancels a job accepted on this connection. */
  cancel(jobId: bigint): Promise<CancelResult>;
  /** Half-close: no more requests; resolves once the daemon wrote every outcome and closed. */
  close(): Promise<void>;
  /** Closes at once; outcomes not yet received are lost (the daemon counts them undelivered). */
  destroy(): Promise<void>;

  on(event: 'outcome', listener: (outcome: Outcome) => void): this;
  on(event: 'close', listener: (reason: HoundError) => void): this;
  once(event: 'outcome', listener: (outcome: Outcome) => void): this;
  once(event: 'close', listener: (reason: HoundError) => void): this;
  off(event: 'outcome', listener: (outcome: Outcome) => void): this;
  off(event: 'close', listener: (reason: HoundError) => void): this;
}

/** The job kinds in wire order. */
export const JOB_KINDS: readonly JobKind[];
/** The severities in wire order. */
export const SEVERITIES: readonly Severity[];
/** The refuse reasons in wire order. */
export const REFUSE_REASONS: readonly RefuseReason[];
/** The drop reasons in wire order. */
export const DROP_KINDS: readonly DropReason[];
/** The cancel results in wire order. */
export const CANCEL_RESULTS: readonly CancelResult[];
/** The daemon's error codes in wire order. */
export const ERROR_CODES: readonly DaemonErrorCode[];
/** Encoders and decoders, exposed for tests; not part of the supported API. */
export const _internal: unknown;
