//! Types and services used by both the supervisor and the hound: the cold-storage backends,
//! cgroup detection and per-hound cgroups, the daemon's configuration file
//! ([`config`]), and the crate's error type.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod alloc;
pub mod cgroup;
pub mod config;
mod error;

pub use error::SharedError;
pub use houndpool_protocol as protocol;
