//! Errors of the supervisor crate.
//!
//! Two enums, deliberately: [`SubmitError`] is the hot path's refusal — `Copy`, allocation-free,
//! one variant per reason a job is not accepted — and [`PoolError`] covers everything else
//! (configuration, start-up, spawning). Keeping the submit refusal small keeps `submit` cheap.

use houndpool_protocol::job::JobKind;

/// Why `Pool::submit` did not accept a job. Every refusal is counted in the stats by variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No hound has ring space and the exhaustion action is `Drop` or `Escalate`.
    #[error("pool exhausted: no hound has ring space")]
    PoolExhausted,
    /// `Defer`: the defer queue is full and holds no job of strictly lower severity to evict.
    #[error("defer queue full ({limit} jobs) and no lower-severity job to evict")]
    DeferQueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// The body is larger than the configured maximum (or than a ring record can hold).
    #[error("evidence of {len} bytes exceeds the maximum of {max} bytes")]
    EvidenceTooLarge {
        /// Body length.
        len: usize,
        /// Maximum accepted.
        max: usize,
    },
    /// Encode, Evacuate and Decode need a non-empty body.
    #[error("{} job needs a non-empty body", .kind.name())]
    EmptyEvidence {
        /// The job's kind.
        kind: JobKind,
    },
    /// Restore and Erase name their object by evidence id and carry no body.
    #[error("{} job must name an evidence id and carry no body", .kind.name())]
    InvalidJob {
        /// The job's kind.
        kind: JobKind,
    },
    /// The job's evidence key is not acceptable (what is wrong is named), or a key was given
    /// for a kind that stores nothing.
    #[error("invalid evidence key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pool is draining or stopped.
    #[error("pool is shutting down")]
    ShutDown,
}

/// Errors building, starting or running the pool outside the submit path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A configuration value is not allowed.
    #[error("invalid pool configuration: {key} = {value}: {allowed}")]
    InvalidConfig {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The hound executable could not be found.
    #[error("hound binary not found: {0}")]
    HoundBinaryNotFound(String),
    /// A hound could not be started or did not complete its handshake.
    #[error("hound {slot} failed to start: {reason}")]
    SpawnFailed {
        /// Slot number.
        slot: u32,
        /// Why.
        reason: String,
    },
    /// A sandbox layer configured `required` is not enforced. The message names the layer,
    /// what the hound (the kernel) reported, and the setting that opts out.
    #[error(
        "hound {slot}: required sandbox layer {layer} not enforced: {detail} (to run without it, \
         make the layer best-effort: `[sandbox] {layer} = \"best_effort\"` or \
         HOUNDPOOL_SANDBOX_{env}=best_effort for houndd, `PoolConfig::sandbox` \
         `.with(Layer::..., LayerMode::BestEffort)` in the library)",
        env = layer.to_ascii_uppercase()
    )]
    SandboxRequirement {
        /// Slot number.
        slot: u32,
        /// Layer name.
        layer: &'static str,
        /// Why.
        detail: String,
    },
    /// An operating-system call failed.
    #[error("cold storage endpoint {host:?} does not resolve: {reason}")]
    ColdEndpoint {
        /// The host name the hounds would connect to.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Wire format or shared-memory error.
    #[error(transparent)]
    Protocol(#[from] houndpool_protocol::ProtocolError),
    /// Cold storage: an S3 endpoint or CA the hounds could not use.
    #[error(transparent)]
    Cold(#[from] houndpool_cold::ColdError),
    /// A cgroup file operation failed.
    #[error("cgroup {op} at {path}: {source}")]
    Cgroup {
        /// What was attempted.
        op: &'static str,
        /// The cgroupfs path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// cgroup information could not be parsed.
    #[error("cannot parse {what}: {detail}")]
    CgroupParse {
        /// File concerned.
        what: String,
        /// What was wrong.
        detail: String,
    },
}
