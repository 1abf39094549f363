// Types of houndpool/tracehound: the origin's (Tracehound's) IHoundPool over houndd.

/** Severity of a piece of evidence, as the origin names it. */
export type Severity = 'low' | 'medium' | 'high' | 'critical';

/**
 * What `activate` needs of the origin's `Evidence` (its getters). Any object with these
 * members works; `bytes` may also be any ArrayBufferView. The bytes are copied at activation.
 */
export interface EvidenceLike {
  /** The object key, e.g. `<category>:<sha256 hex>`; the daemon refuses an invalid one (`invalid_job`). */
  readonly signature: string;
  readonly severity: Severity;
  readonly bytes: ArrayBuffer | ArrayBufferView;
}

/** What happens to an activation for which there is no capacity. */
export type PoolExhaustedAction = 'drop' | 'escalate' | 'defer';

/** `createHoundPool`'s configuration: the origin's HoundPoolConfig plus `socket`. */
export interface HoundPoolConfig {
  /** Path of houndd's Unix socket (`daemon.socket`). */
  socket: string;
  /**
   * Decided by houndd (`pool.size`). Reported as `stats.totalProcesses` until the daemon's
   * own count (`hounds_ready`) arrives.
   */
  poolSize: number;
  /**
   * Milliseconds from `activate` to a result: after it the activation's result is `timeout`
   * and its job is cancelled. 0 leaves it to houndd (`pool.job_timeout_ms`).
   */
  timeout: number;
  /** Decided by houndd (its rotation settings); accepted and not used. */
  rotationJitterMs: number;
  /**
   * No capacity (houndd refused `pool_exhausted` or `connection_busy`, or more than
   * `maxQueuedBytes` wait to be written): `drop` → error `pool_exhausted`; `escalate` → error
   * `pool_exhausted_escalated` (counted in totalErrors); `defer` → wait in a local queue of
   * `deferQueueLimit` activations, resubmitted when capacity shows, else error
   * `defer_queue_full`. Default `drop`.
   */
  onPoolExhausted?: PoolExhaustedAction;
  /** Local defer queue size for `defer` (default 100). houndd's own queue is `pool.defer_limit`. */
  deferQueueLimit?: number;
  /** gzip level 0-9 of the evacuations; houndd's default when absent. */
  level?: number;
  /** Bytes that may wait to be written to houndd before activations count as exhausted (default 64 MiB). */
  maxQueuedBytes?: number;
  /** How often `stats.totalProcesses` is refreshed from houndd, ms (default 1000; 0: never). */
  statsIntervalMs?: number;
}

/**
 * The one result of an activation. `processId` is `hound-<n>` for a processed one, `houndd`
 * for the daemon's other outcomes, `pool` when the activation never became a job. `error`
 * names: `pool_exhausted`, `pool_exhausted_escalated`, `defer_queue_full`, `forced_terminate`,
 * `timeout`, `invalid_evidence`, `shutting_down`, `connect_failed`, `connection_lost`, `closed`,
 * houndd's refuse reasons (`evidence_too_large`, `empty_evidence`, `invalid_job`), fail codes
 * (`cold_storage_unavailable`, `integrity_violation`, …) and kinds (`hound_killed`,
 * `out_of_memory`, `protocol_violation`, `poison`), drop reasons (`evicted`, `shutdown`).
 */
export interface HoundResult {
  signature: string;
  status: 'processed' | 'timeout' | 'error';
  /** From `activate` to the result, ms. */
  durationMs: number;
  processId: string;
  error?: string;
}

/** A snapshot of the pool's counters (frozen). `activeProcesses <= totalProcesses`. */
export interface HoundPoolStats {
  /** Activations accepted by houndd and not finished, at most totalProcesses. */
  activeProcesses: number;
  /** houndd's ready hounds (`poolSize` until it answered). */
  totalProcesses: number;
  totalActivations: number;
  totalTimeouts: number;
  totalErrors: number;
  /** Mean durationMs of the last 100 processed activations (0 before the first). */
  avgProcessingMs: number;
}

/** The origin's IHoundPool contract. */
export interface IHoundPool {
  /** Starts processing; returns at once, never throws, never returns a Promise. */
  activate(evidence: EvidenceLike): void;
  /** Cancels the activations with this signature; each still gets its one result. */
  terminate(signature: string): void;
  /** A snapshot of the counters. */
  readonly stats: Readonly<HoundPoolStats>;
  /** Registers a handler of every result; a handler that throws is counted in totalErrors. */
  onResult(handler: (result: HoundResult) => void): void;
  /** Stops accepting; in-flight activations still get their result. */
  shutdown(): void;
}

/** createHoundPool's pool: IHoundPool plus `closed`. */
export interface HoundPool extends IHoundPool {
  /** Resolves after `shutdown()` once every activation has its result and the connection closed. */
  readonly closed: Promise<void>;
}

/** The origin's names of capacity errors. */
export const HOUND_PRESSURE_ERRORS: {
  readonly POOL_EXHAUSTED: 'pool_exhausted';
  readonly POOL_EXHAUSTED_ESCALATED: 'pool_exhausted_escalated';
  readonly DEFER_QUEUE_FULL: 'defer_queue_full';
};
/** One of HOUND_PRESSURE_ERRORS' values. */
export type HoundPressureErrorCode = (typeof HOUND_PRESSURE_ERRORS)[keyof typeof HOUND_PRESSURE_ERRORS];
/** True for the capacity error names. */
export function isHoundPressureError(error: string | undefined): error is HoundPressureErrorCode;

/**
 * A pool over houndd implementing the origin's IHoundPool: each activation is an Evacuate
 * keyed by the evidence's signature, on one connection opened lazily (and reopened after a
 * loss). Throws TypeError for a bad config; nothing else throws.
 */
export function createHoundPool(config: HoundPoolConfig): HoundPool;
