//! What callers submit and what they get back (re-exported from `crate::job`).

use std::fmt;
use std::time::Duration;

pub use houndpool_protocol::job::{FailCode, JobKind, Severity};
use uuid::Uuid;

/// Pool-unique job number, assigned by `submit` (starts at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// A job to submit. Borrows its body: `submit` copies it straight into a hound's ring.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// What to do.
    pub kind: JobKind,
    /// Lane in the defer queue (and reported in the outcome).
    pub severity: Severity,
    /// Evidence bytes (Noop, Encode, Evacuate), an envelope (Decode), or empty (Restore, Erase).
    pub body: &'a [u8],
    /// The evidence id. Required for Restore and Erase; for the other kinds a UUIDv7 is
    /// assigned at submit when absent.
    pub evidence_id: Option<Uuid>,
    /// gzip level for Encode / Evacuate (0..=9); the pool's default when absent.
    pub level: Option<u8>,
    /// A caller-chosen evidence key naming the object `<prefix><key>.thcs` instead of the
    /// evidence id (Evacuate, Restore, Erase only; e.g. the origin's `<category>:<sha256 hex>`
    /// signature). Checked at submit (`houndpool_protocol::job::check_evidence_key`).
    pub key: Option<&'a str>,
}

impl<'a> Job<'a> {
    fn new(kind: JobKind, body: &'a [u8]) -> Self {
        Job {
            kind,
            severity: Severity::Medium,
            body,
            evidence_id: None,
            level: None,
            key: None,
        }
    }
    /// Echo `body` (transport measurement).
    pub fn noop(body: &'a [u8]) -> Self {
        Self::new(JobKind::Noop, body)
    }
    /// Encode `evidence` into an envelope returned in the outcome.
    pub fn encode(evidence: &'a [u8]) -> Self {
        Self::new(JobKind::Encode, evidence)
    }
    /// Encode `evidence` and write the envelope to cold storage.
    pub fn evacuate(evidence: &'a [u8]) -> Self {
        Self::new(JobKind::Evacuate, evidence)
    }
    /// Verify and decode `envelope` inside a hound.
    pub fn decode(envelope: &'a [u8]) -> Self {
        Self::new(JobKind::Decode, envelope)
    }
    /// Read evidence `id` back from cold storage, verified and decoded.
    pub fn restore(id: Uuid) -> Self {
        Job {
            evidence_id: Some(id),
            ..Self::new(JobKind::Restore, &[])
        }
    }
    /// Delete evidence `id` from cold storage.
    pub fn erase(id: Uuid) -> Self {
        Job {
            evidence_id: Some(id),
            ..Self::new(JobKind::Erase, &[])
        }
    }
    /// Read the evidence stored under the caller-chosen `key` back from cold storage.
    pub fn restore_key(key: &'a str) -> Self {
        Self::new(JobKind::Restore, &[]).with_key(key)
    }
    /// Delete the evidence stored under the caller-chosen `key`.
    pub fn erase_key(key: &'a str) -> Self {
        Self::new(JobKind::Erase, &[]).with_key(key)
    }
    /// Names the object by a caller-chosen evidence key (Evacuate, Restore, Erase).
    pub fn with_key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }
    /// Sets the severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
    /// Sets the evidence id.
    pub fn with_evidence_id(mut self, id: Uuid) -> Self {
        self.evidence_id = Some(id);
        self
    }
    /// Sets the gzip level (clamped to 9).
    pub fn with_level(mut self, level: u8) -> Self {
        self.level = Some(level.min(9));
        self
    }
}

/// What `submit` returns for an accepted job: exactly one [`Outcome`] with this id will follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The job's id.
    pub job_id: JobId,
    /// The evidence id (assigned or given).
    pub evidence_id: Uuid,
}

/// The single final result of an accepted job.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The job.
    pub job_id: JobId,
    /// Its evidence id.
    pub evidence_id: Uuid,
    /// Its kind.
    pub kind: JobKind,
    /// Its severity.
    pub severity: Severity,
    /// Hounds that started it (1 normally, 2 after a retry).
    pub attempts: u8,
    /// Time from `submit` to this outcome.
    pub latency: Duration,
    /// What happened.
    pub result: OutcomeKind,
}

/// The four kinds of outcome.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The hound did the job.
    Completed(Receipt),
    /// The job failed; the reason is typed.
    Failed(FailReason),
    /// The hound working on it made no progress before the deadline and was killed.
    TimedOut,
    /// The job was accepted but never run.
    Dropped(DropReason),
}

impl Outcome {
    /// The receipt of a completed job, or why it did not complete. Consumes the outcome, so
    /// a payload moves out without a copy.
    pub fn into_result(self) -> Result<Receipt, JobError> {
        self.result.into_result()
    }
}

impl OutcomeKind {
    /// The receipt of `Completed`, or why the job did not complete.
    pub fn into_result(self) -> Result<Receipt, JobError> {
        match self {
            OutcomeKind::Completed(r) => Ok(r),
            OutcomeKind::Failed(f) => Err(JobError::Failed(f)),
            OutcomeKind::TimedOut => Err(JobError::TimedOut),
            OutcomeKind::Dropped(d) => Err(JobError::Dropped(d)),
        }
    }

    /// "completed" / "failed" / "timed_out" / "dropped".
    pub fn name(&self) -> &'static str {
        match self {
            OutcomeKind::Completed(_) => "completed",
            OutcomeKind::Failed(_) => "failed",
            OutcomeKind::TimedOut => "timed_out",
            OutcomeKind::Dropped(_) => "dropped",
        }
    }
}

/// What a completed job produced. Fields not meaningful for a kind are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Receipt {
    /// Slot of the hound that did it.
    pub hound: u32,
    /// Object key (Evacuate, Restore, Erase).
    pub key: Option<String>,
    /// Original evidence size (Encode, Evacuate, Restore, Decode).
    pub original_size: Option<u64>,
    /// gzip stream size (Encode, Evacuate).
    pub compressed_size: Option<u64>,
    /// SHA-256 of the gzip stream (Encode, Evacuate).
    pub sha256: Option<[u8; 32]>,
    /// Hound-measured encode time (Evacuate).
    pub encode_time: Option<Duration>,
    /// Hound-measured storage time (Evacuate).
    pub store_time: Option<Duration>,
    /// Evacuate: the envelope is in the local spool, awaiting upload.
    pub spooled: bool,
    /// Erase: whether the object existed.
    pub existed: Option<bool>,
    /// The envelope (Encode), the original bytes (Restore, Decode), or the echo (Noop).
    pub payload: Option<Vec<u8>>,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FailReason {
    /// The hound ran the job and reported this failure (integrity violation, cold storage
    /// unavailable or rejected, not found, decompression limit, …).
    Job {
        /// The hound's code.
        code: FailCode,
        /// The hound's message (untrusted text, at most 512 bytes).
        message: String,
    },
    /// The hound was killed by a signal that the job itself caused (SIGSYS: a forbidden
    /// system call). Not retried.
    HoundKilled {
        /// The signal.
        signal: i32,
    },
    /// The hound exceeded its memory budget or its cgroup's limit. Not retried.
    OutOfMemory,
    /// The hound broke the protocol (corrupt ring, impossible completion) and was killed.
    ProtocolViolation {
        /// What it did.
        detail: String,
    },
    /// The job was in flight in two hounds that both died; it is not tried a third time.
    Poison {
        /// How the last hound died.
        last_death: HoundDeath,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Job { code, message } => write!(f, "{}: {message}", code.name()),
            FailReason::HoundKilled { signal } => write!(f, "hound killed by signal {signal}"),
            FailReason::OutOfMemory => write!(f, "hound ran out of memory"),
            FailReason::ProtocolViolation { detail } => write!(f, "protocol violation: {detail}"),
            FailReason::Poison { last_death } => {
                write!(f, "poison job: killed two hounds (last: {last_death})")
            }
        }
    }
}

impl std::error::Error for FailReason {}

/// How a hound ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoundDeath {
    /// Exited with this status code.
    Exited(i32),
    /// Terminated by this signal.
    Signaled(i32),
}

impl fmt::Display for HoundDeath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoundDeath::Exited(c) => write!(f, "exit code {c}"),
            HoundDeath::Signaled(s) => write!(f, "signal {s}"),
        }
    }
}

/// Why an accepted job was never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Evicted from the defer queue by a job of higher severity.
    Evicted {
        /// Severity of the job that took its place.
        by: Severity,
    },
    /// The pool shut down before the job could run (grace period over).
    Shutdown,
    /// `Pool::cancel` withdrew it (or killed the hound running it).
    Cancelled,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Evicted { by } => {
                write!(f, "evicted from the defer queue by a {} job", by.name())
            }
            DropReason::Shutdown => f.write_str("pool shut down before the job ran"),
            DropReason::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// Why a job did not complete: the error side of [`Outcome::into_result`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job failed.
    #[error("job failed: {0}")]
    Failed(#[source] FailReason),
    /// Its hound made no progress before the deadline and was killed.
    #[error("job timed out: its hound made no progress before the deadline")]
    TimedOut,
    /// It was accepted but never run (or its run was cancelled).
    #[error("job dropped: {0}")]
    Dropped(DropReason),
}

/// What [`Pool::cancel`](crate::Pool::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelResult {
    /// No such job, or its outcome was already produced: nothing changed.
    NotFound,
    /// It was withdrawn before a hound started it (defer queue, retry queue, or queued in a
    /// ring behind another job); its outcome `Dropped(Cancelled)` has been delivered.
    Dequeued,
    /// It was at the head of a hound's ring (running or about to run): that hound was
    /// SIGKILLed like the watchdog does; its outcome `Dropped(Cancelled)` has been delivered,
    /// and the other jobs of that hound are retried elsewhere.
    Killed,
}

impl CancelResult {
    /// "not_found" / "dequeued" / "killed".
    pub fn name(self) -> &'static str {
        match self {
            CancelResult::NotFound => "not_found",
            CancelResult::Dequeued => "dequeued",
            CancelResult::Killed => "killed",
        }
    }
}
