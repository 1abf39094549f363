//! houndpool: run untrusted, heavy evidence work — encoding, cold evacuation, restoring — in a
//! pool of sandboxed child processes ("hounds"), so that the host's hot path never blocks and
//! never dies with them.
//!
//! ```no_run
//! use houndpool::{Job, OutcomeKind, Pool, Severity};
//! use std::time::Duration;
//!
//! let pool = Pool::builder()
//!     .configure(|c| c.cold = houndpool::ColdConfig::Filesystem {
//!         root: "./houndpool-data".into(),
//!         prefix: "evidence/".into(),
//!     })
//!     .build()?;
//! let outcomes = pool.outcomes().expect("outcome channel enabled by default");
//! let ticket = pool.submit(&Job::evacuate(b"GET /admin HTTP/1.1\r\n\r\n").with_severity(Severity::High))?;
//! let outcome = outcomes.recv_timeout(Duration::from_secs(5))?;
//! assert_eq!(outcome.job_id, ticket.job_id);
//! if let OutcomeKind::Completed(receipt) = outcome.result {
//!     println!("stored at {:?}", receipt.key);
//! }
//! pool.shutdown(Duration::from_secs(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// Unsafe code is denied everywhere but in two modules that each allow it for their system
// calls, every block argued with a SAFETY comment: `cgroup` (pidfd kill) and `daemon::alloc`
// (glibc allocator tuning).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod cancel;
pub mod cgroup;
mod circuit;
pub mod cold;
mod collector;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
mod defer;
mod direct;
mod error;
mod hound_process;
mod hound_text;
mod job;
pub mod keys;
mod latency;
#[cfg(feature = "metrics")]
pub mod metrics;
mod pool;
mod recycle;
mod spans;
mod spawn;
mod state;
mod stats;
pub mod synth;
mod tracked;
mod violation;

pub use circuit::CircuitState;
pub use config::{
    ColdConfig, HoundBinary, PoolConfig, PoolExhaustedAction, PoolSize, RestartIntensity, Rotation,
};
/// The receiver type of [`Pool::outcomes`] and [`Pool::escalations`].
pub use crossbeam_channel::Receiver;
pub use error::{PoolError, SubmitError};
pub use houndpool_protocol::control::{
    FsCommit, Layer, LayerMode, LayerReport, LayerStatus, S3Target, SandboxPolicy, SandboxReport,
};
pub use job::{
    CancelResult, DropReason, FailCode, FailReason, HoundDeath, Job, JobError, JobId, JobKind,
    Outcome, OutcomeKind, Receipt, Severity, Ticket,
};
pub use latency::LatencySnapshot;
pub use pool::{Pool, PoolBuilder};
pub use state::EscalationEvent;
pub use stats::{HoundStats, PoolStats, RefusedStats, SizeStats};
pub use tracked::Tracked;
/// Evidence ids ([`Ticket::evidence_id`], [`Job::restore`]) are `uuid::Uuid`s.
pub use uuid::Uuid;

/// Makes this executable usable as its own hound (multi-call mode). Call it first thing in
/// `main`: if the process was started as a hound it runs the hound and exits; otherwise it
/// returns at once and `HoundBinary::Auto` may fall back to the current executable.
pub fn run_hound_if_requested() {
    let mut args = std::env::args_os();
    let _exe = args.next();
    if args.next().is_some_and(|a| a == houndpool_hound::HOUND_ARG) {
        std::process::exit(houndpool_hound::main_from_env());
    }
    spawn::MULTICALL.store(true, std::sync::atomic::Ordering::Relaxed);
}
